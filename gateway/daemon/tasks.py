"""One owner for every task of the daemon's life: a TaskGroup, made with the other parts
before the daemon runs and entered when it does, and the long-lived tasks in it by name,
so that a part that changes (the heartbeat's interval, Home Assistant, firmware updates) is
stopped, awaited and started again by name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import TracebackType
from typing import Any


class Tasks:
    def __init__(self) -> None:
        # Given to ``RunningSensors`` for the sensors' tasks: the same group, not named here.
        self.group = asyncio.TaskGroup()
        self._named: dict[str, asyncio.Task[None]] = {}

    async def __aenter__(self) -> Tasks:
        await self.group.__aenter__()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.group.__aexit__(kind, exc, tb)

    def start(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        self._named[name] = self.group.create_task(coro, name=name)

    def get(self, name: str) -> asyncio.Task[None] | None:
        return self._named.get(name)

    async def stop(self, name: str) -> None:
        task = self._named.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    def cancel_all(self) -> None:
        for task in self._named.values():
            task.cancel()
