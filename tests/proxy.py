"""A loopback TCP proxy for tests: forwards to a real broker and breaks the path on demand.

It runs its own event loop in a thread, so it costs the code under test no asyncio
tasks, and it can be driven from sync tests and from coroutines alike. Three faults:

- ``cut()``: abort both sides of every open connection (RST), as when a NAT or the
  broker's host drops state: the client sees the loss at once.
- ``blackhole()``: stop forwarding in both directions but keep the client's socket
  open, as when a link dies silently: only the client's own liveness check can notice.
  Upstream sockets are let go when the broker closes them, the client side never.
- ``refuse = True``: accept new connections and drop them at once, as a broker that
  is down behind a load balancer; existing connections are untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

CHUNK = 65536


@dataclass(eq=False)
class _Pair:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    blackholed: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()


class Proxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port  # 0: any free port, known after start()
        self.refuse = False
        self.accepted = 0  # connections forwarded to the target
        self.refused = 0
        self._pairs: set[_Pair] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="proxy", daemon=True)
        self._server: asyncio.Server | None = None

    # -- lifecycle (call from any thread but the proxy's) -------------------------------

    def start(self) -> Proxy:
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            if not self._thread.ident and not self._loop.is_closed():
                self._loop.close()  # never started
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- faults -------------------------------------------------------------------------

    def cut(self) -> int:
        """Abort every open connection, both sides; returns how many."""
        return self._call(self._cut())

    def blackhole(self) -> int:
        """Stop forwarding on every open connection, keep them open; returns how many."""
        return self._call(self._blackhole())

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    def wait_accepted(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.accepted < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"proxy accepted {self.accepted} connections, not {count}")
            time.sleep(0.005)

    # -- inside the proxy's loop -------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._cut()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _cut(self) -> int:
        pairs = list(self._pairs)
        for pair in pairs:
            pair.abort()
        for pair in pairs:
            for task in pair.tasks:
                task.cancel()
            await asyncio.gather(*pair.tasks, return_exceptions=True)
        return len(pairs)

    async def _blackhole(self) -> int:
        for pair in self._pairs:
            pair.blackholed = True
        return len(self._pairs)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        if self.refuse:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = _Pair(writer, up_writer)
        self._pairs.add(pair)
        self.accepted += 1
        pair.tasks = [
            asyncio.create_task(self._pump(pair, reader, up_writer, from_client=True)),
            asyncio.create_task(self._pump(pair, up_reader, writer, from_client=False)),
        ]
        try:
            await asyncio.gather(*pair.tasks, return_exceptions=True)
        finally:
            pair.abort()
            self._pairs.discard(pair)

    async def _pump(
        self,
        pair: _Pair,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        from_client: bool,
    ) -> None:
        try:
            while data := await reader.read(CHUNK):
                if pair.blackholed:
                    continue  # swallowed: the link is dead but nobody says so
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        if pair.blackholed and not from_client:
            # The broker gave up on a dead link; the client must find out by itself.
            pair.upstream.transport.abort()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()  # until the client goes away or we are cut
        for task in pair.tasks:
            if task is not asyncio.current_task():
                task.cancel()
