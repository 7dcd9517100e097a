"""State files set aside: renamed beside themselves with their companions, or copied."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.statefile import set_aside


def test_a_file_is_moved_beside_itself_under_its_label(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    path.write_bytes(b"{nope")
    aside = set_aside(path)
    assert not path.exists()
    assert aside.parent == tmp_path
    assert re.fullmatch(r"seq\.json\.corrupt-\d+", aside.name)
    assert aside.read_bytes() == b"{nope"


def test_companions_go_with_it_and_missing_ones_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    path.write_bytes(b"db")
    path.with_name("queue.db-wal").write_bytes(b"wal")
    aside = set_aside(path, "corrupt", companions=("-wal", "-shm"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [aside.name, aside.name + "-wal"]
    assert aside.with_name(aside.name + "-wal").read_bytes() == b"wal"
