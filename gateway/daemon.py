"""The daemon's lifecycle: build everything from a config, run it, reload it, stop it.

One TaskGroup per configuration generation holds every task (uplink supervisor and one
sampler per sensor). SIGHUP re-reads the file: an invalid file is logged and the running
generation keeps going; a valid one replaces the generation. The queue and the sequence
numbers outlive generations, so a reload loses nothing. SIGTERM/SIGINT stop the
samplers, let the uplink flush for ``mqtt.shutdown_flush_s``, publish the ``shutdown``
status and return.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import structlog

from gateway import __version__, configfile
from gateway import log as logsetup
from gateway.config import Config
from gateway.pipeline import Pipeline, build_steps
from gateway.queue import MessageQueue
from gateway.sampler import Sampler
from gateway.seq import SeqStore
from gateway.uplink import Identity, Uplink

log = structlog.get_logger(__name__)


class Event(Enum):
    STOP = "stop"
    RELOAD = "reload"


class Signals:
    """Turns process signals into events the main coroutine waits for, one at a time."""

    def __init__(self) -> None:
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._installed: list[int] = []

    def __enter__(self) -> Signals:
        for signum, event in (
            (signal.SIGTERM, Event.STOP),
            (signal.SIGINT, Event.STOP),
            (signal.SIGHUP, Event.RELOAD),
        ):
            self._loop.add_signal_handler(signum, self._events.put_nowait, event)
            self._installed.append(signum)
        return self

    def __exit__(self, *_: object) -> None:
        for signum in self._installed:
            self._loop.remove_signal_handler(signum)

    async def next(self) -> Event:
        return await self._events.get()


@dataclass
class Shared:
    """What outlives a configuration generation."""

    queue: MessageQueue
    seqs: SeqStore
    identity: Identity


class Daemon:
    def __init__(self, path: Path, config: Config) -> None:
        self.path = path
        self.config = config
        # Small state files (seq counters) are written off the event loop, in order.
        self._io = ThreadPoolExecutor(1, thread_name_prefix="state-io")

    async def _offload(self, fn: Callable[[], None]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._io, fn)

    async def run(self) -> int:
        config = self.config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        seqs = SeqStore(config.state_dir / "seq.json", self._offload)
        seqs.load()
        queue = MessageQueue(config.queue, config.state_dir)
        shared = Shared(
            queue=queue,
            seqs=seqs,
            identity=Identity(config.device_id, __version__, uuid.uuid4().hex),
        )
        log.info("daemon.started", version=__version__, config=str(self.path),
                 device=config.device_id)
        try:
            await queue.open()
            with Signals() as signals:
                async with asyncio.TaskGroup() as tg:
                    spiller = tg.create_task(queue.run(), name="queue")
                    while await self._generation(config, shared, signals) is Event.RELOAD:
                        config = self._reload(config)
                    spiller.cancel()
        finally:
            await queue.close()
            self._io.shutdown(wait=True)
        log.info("daemon.stopped")
        return 0

    def _reload(self, running: Config) -> Config:
        try:
            config = configfile.load(self.path)
        except configfile.ConfigError as exc:
            for issue in exc.issues:
                log.error("config.reload_rejected", error=str(issue))
            return running
        fixed = ("device_id", "state_dir", "queue")
        if any(getattr(config, key) != getattr(running, key) for key in fixed):
            # Identity, state location and the queue live as long as the process: changing
            # them under a running queue and seq store would mix or lose data.
            log.error("config.reload_rejected", error=f"{', '.join(fixed)} need a restart")
            return running
        logsetup.configure(config.logging.level, config.logging.format)
        log.info("config.reloaded", sensors=len(config.sensors))
        return config

    async def _generation(self, config: Config, shared: Shared, signals: Signals) -> Event:
        uplink = Uplink(config.mqtt, shared.identity, shared.queue)
        prefix = f"{config.mqtt.topic_prefix}/{config.device_id}"
        samplers = [
            Sampler(
                sensor,
                Pipeline(
                    config.device_id,
                    sensor.name,
                    build_steps(sensor.pipeline),
                    f"{prefix}/telemetry/{sensor.name}",
                    config.mqtt.qos,
                    shared.seqs,
                    shared.queue,
                ),
            )
            for sensor in config.sensors
        ]
        async with asyncio.TaskGroup() as tg:
            uplink_task = tg.create_task(uplink.run(), name="uplink")
            sampler_tasks = [
                tg.create_task(s.run(), name=f"sampler:{s.config.name}") for s in samplers
            ]
            event = await signals.next()
            log.info("daemon.signal", action=event.value)
            for task in sampler_tasks:
                task.cancel()
            await asyncio.gather(*sampler_tasks, return_exceptions=True)
            if event is Event.STOP:
                await uplink.shutdown(config.mqtt.shutdown_flush_s)
            uplink_task.cancel()
        return event


def run(path: Path) -> int:
    """``edge-gateway run``: 0 after a clean stop, 2 for an invalid file."""
    config = configfile.load(path)
    logsetup.configure(config.logging.level, config.logging.format)
    return asyncio.run(Daemon(path, config).run())
