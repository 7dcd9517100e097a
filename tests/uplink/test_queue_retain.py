"""A queued message keeps its retain flag (an alarm's document) through the disk tier and
a restart; a queue file written before the flag existed is read, its rows not retained."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from gateway.config.models import QueueConfig
from gateway.uplink.queue import Message, MessageQueue

CONFIG = QueueConfig(disk_max_bytes=1_000_000, spill_after_s=0.05)


async def through_disk(state_dir: Path, messages: list[Message]) -> list[tuple[str, bool]]:
    first = MessageQueue(CONFIG, state_dir)
    await first.open()
    for message in messages:
        first.put(message)
    await first.close()  # everything unsent goes to disk
    second = MessageQueue(CONFIG, state_dir)
    await second.open()
    out = []
    while second.depth:
        message = await second.take()
        second.ack(message)
        out.append((message.topic, message.retain))
    await second.close()
    return out


def test_the_retain_flag_survives_the_disk_tier_and_a_restart(tmp_path: Path) -> None:
    messages = [Message("gw/d/telemetry/t", b"{}", 1, "t"),
                Message("gw/d/alarm/t/hot", b'{"state":"active"}', 1, "t", retain=True),
                Message("gw/d/telemetry/t", b"{}", 1, "t")]
    assert asyncio.run(through_disk(tmp_path, messages)) == [
        ("gw/d/telemetry/t", False), ("gw/d/alarm/t/hot", True), ("gw/d/telemetry/t", False)]


def test_a_queue_file_from_before_the_flag_is_read(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "queue.db")
    db.execute("CREATE TABLE messages (key INTEGER PRIMARY KEY, sensor TEXT NOT NULL, "
               "topic TEXT NOT NULL, qos INTEGER NOT NULL, payload BLOB NOT NULL, "
               "size INTEGER NOT NULL)")
    db.execute("INSERT INTO messages VALUES (1, 't', 'gw/d/telemetry/t', 1, x'7b7d', 66)")
    db.commit()
    db.close()
    new = [Message("gw/d/alarm/t/hot", b"{}", 1, "t", retain=True)]
    assert asyncio.run(through_disk(tmp_path, new)) == [
        ("gw/d/telemetry/t", False), ("gw/d/alarm/t/hot", True)]
