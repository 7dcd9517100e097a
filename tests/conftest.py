from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()
