"""The daemon's lifecycle: build everything from a config, run it, reload it, stop it.

One TaskGroup owns the daemon's lifetime tasks (the queue's disk worker); inside it, one
TaskGroup per configuration generation owns the uplink supervisor, a sampler and a
pipeline timer per sensor, the heartbeat and the watchdog. SIGHUP re-reads the file: an
invalid file is logged and the running generation goes on; a change of emulator
settings only is applied to the live emulators; any other change replaces the
generation. The queue, the sequence numbers, sensor health and the emulated hardware
outlive generations, so a reload loses nothing. SIGTERM/SIGINT stop the samplers, flush
the pipelines, let the uplink drain for ``mqtt.shutdown_flush_s``, publish the
``shutdown`` status and return. SIGUSR1 writes a diagnostics report.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import structlog

from gateway import __version__
from gateway.config import file as configfile
from gateway.config.models import Config
from gateway.pipeline.core import Pipeline, build_steps
from gateway.pipeline.seq import SeqStore
from gateway.sampling.health import SensorHealth, State
from gateway.sampling.sampler import Sampler, policy
from gateway.sampling.sensors import SerialPorts
from gateway.sampling.simbench import SimBench
from gateway.service import heartbeat
from gateway.service import log as logsetup
from gateway.service.diagnostics import Diagnostics
from gateway.service.notify import Notifier
from gateway.statefile import write_atomic
from gateway.uplink.queue import MessageQueue
from gateway.uplink.supervisor import Identity, Link, Uplink

log = structlog.get_logger(__name__)

READY_TIMEOUT_S = 10.0
# Set to 1 by tests only: SIGUSR2 then blocks the event loop, as a wedged daemon would.
DEBUG_HOOKS = "EDGE_GATEWAY_DEBUG_HOOKS"


class Event(Enum):
    STOP = "stop"
    RELOAD = "reload"
    DIAGNOSE = "diagnose"
    WEDGE = "wedge"


class Signals:
    """Turns process signals into events the main coroutine waits for, one at a time."""

    def __init__(self) -> None:
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._installed: list[int] = []

    def __enter__(self) -> Signals:
        handlers = [
            (signal.SIGTERM, Event.STOP),
            (signal.SIGINT, Event.STOP),
            (signal.SIGHUP, Event.RELOAD),
            (signal.SIGUSR1, Event.DIAGNOSE),
        ]
        if os.environ.get(DEBUG_HOOKS) == "1":
            handlers.append((signal.SIGUSR2, Event.WEDGE))
        for signum, event in handlers:
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
    bench: SimBench = field(default_factory=SimBench)
    health: dict[str, SensorHealth] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)


@dataclass
class Generation:
    config: Config
    uplink: Uplink
    pipelines: list[Pipeline]
    samplers: list[Sampler]


def _without_emulation(config: Config) -> dict[str, Any]:
    data = config.model_dump()
    for sensor in data["sensors"]:
        sensor.pop("sim", None)
    return data


class Daemon:
    def __init__(self, path: Path, config: Config) -> None:
        self.path = path
        self.config = config
        self.notifier = Notifier()
        # Small state files (seq counters, reports) are written off the event loop, in order.
        self._io = ThreadPoolExecutor(1, thread_name_prefix="state-io")
        self._current: Generation | None = None
        self._shared: Shared | None = None
        self.diagnostics = Diagnostics(config.diagnostics.tracemalloc, self.figures)

    async def _offload(self, fn: Callable[[], None]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._io, fn)

    async def run(self) -> int:
        self.diagnostics.ages.install(asyncio.get_running_loop())
        config = self.config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        seqs = SeqStore(config.state_dir / "seq.json", self._offload)
        seqs.load()
        queue = MessageQueue(config.queue, config.state_dir)
        shared = self._shared = Shared(
            queue, seqs, Identity(config.device_id, __version__, uuid.uuid4().hex)
        )
        log.info("daemon.started", version=__version__, config=str(self.path),
                 device=config.device_id)
        try:
            await queue.open()
            with Signals() as signals:
                async with asyncio.TaskGroup() as tg:
                    disk = tg.create_task(queue.run(), name="queue-disk")
                    generation: Config | None = config
                    first = True
                    while generation is not None:
                        generation = await self._generation(generation, shared, signals, first)
                        first = False
                    disk.cancel()
        finally:
            await queue.close()
            shared.bench.close()
            self._io.shutdown(wait=True)
        log.info("daemon.stopped")
        return 0

    async def _generation(
        self, config: Config, shared: Shared, signals: Signals, first: bool
    ) -> Config | None:
        """Run one configuration until it is replaced (its successor) or stopped (None)."""
        current = self._current = self._build(config, shared)
        async with asyncio.TaskGroup() as tg:
            uplink_task = tg.create_task(current.uplink.run(), name="uplink")
            sampler_tasks = [
                tg.create_task(s.run(), name=f"sampler:{s.config.name}") for s in current.samplers
            ]
            timers = [
                tg.create_task(p.run(), name=f"pipeline:{p.sensor}") for p in current.pipelines
            ]
            services = [
                tg.create_task(heartbeat.beat(config.heartbeat.interval_s, self._heartbeat),
                               name="heartbeat"),
            ]
            if first:
                await self._ready(current)
            if self.notifier.watchdog_s:
                vital = [uplink_task, *sampler_tasks]
                services.append(tg.create_task(self._watchdog(vital), name="watchdog"))
            successor = await self._serve(config, shared, signals)

            for task in sampler_tasks:
                task.cancel()
            await asyncio.gather(*sampler_tasks, return_exceptions=True)
            for pipeline in current.pipelines:
                await pipeline.flush()
            if successor is None:
                self.notifier.stopping()
                await current.uplink.shutdown(config.mqtt.shutdown_flush_s)
            for task in (*timers, *services, uplink_task):
                task.cancel()
        return successor

    def _build(self, config: Config, shared: Shared) -> Generation:
        prefix = f"{config.mqtt.topic_prefix}/{config.device_id}"
        ports = SerialPorts()
        pipelines = []
        samplers = []
        for sensor in config.sensors:
            pipeline = Pipeline(
                config.device_id,
                sensor.name,
                build_steps(sensor.pipeline),
                f"{prefix}/telemetry/{sensor.name}",
                config.mqtt.qos,
                shared.seqs,
                shared.queue,
            )
            health = shared.health.get(sensor.name)
            if health is None or health.policy != policy(sensor):
                health = SensorHealth(policy(sensor), started_at=time.time())
            shared.health[sensor.name] = health
            pipelines.append(pipeline)
            samplers.append(Sampler(sensor, pipeline, ports, shared.bench, health))
        for gone in set(shared.health) - {s.name for s in config.sensors}:
            del shared.health[gone]
        shared.bench.update(config.sensors)
        uplink = Uplink(config.mqtt, shared.identity, shared.queue, on_link=self._link_changed)
        return Generation(config, uplink, pipelines, samplers)

    async def _serve(self, config: Config, shared: Shared, signals: Signals) -> Config | None:
        """Handle signals until one ends the generation."""
        while True:
            event = await signals.next()
            log.info("daemon.signal", action=event.value)
            if event is Event.STOP:
                return None
            if event is Event.DIAGNOSE:
                await self._diagnose(config)
            elif event is Event.WEDGE:
                time.sleep(3600)  # noqa: ASYNC251 - wedges the loop on purpose: see DEBUG_HOOKS
            else:
                successor = self._reload(config)
                if successor is None:
                    continue
                if _without_emulation(successor) != _without_emulation(config):
                    return successor
                shared.bench.update(successor.sensors)
                log.info("config.reloaded", scope="emulators")
                config = successor

    def _reload(self, running: Config) -> Config | None:
        try:
            config = configfile.load(self.path)
        except configfile.ConfigError as exc:
            for issue in exc.issues:
                log.error("config.reload_rejected", error=str(issue))
            return None
        fixed = ("device_id", "state_dir", "queue")
        if any(getattr(config, key) != getattr(running, key) for key in fixed):
            # Identity, state location and the queue live as long as the process: changing
            # them under a running queue and seq store would mix or lose data.
            log.error("config.reload_rejected", error=f"{', '.join(fixed)} need a restart")
            return None
        logsetup.configure(config.logging.level, config.logging.format)
        log.info("config.reloaded", sensors=len(config.sensors))
        return config

    async def _ready(self, current: Generation) -> None:
        """READY=1 once every sensor has been initialised (or has failed to), without
        waiting for the broker: a device must be manageable while its network is down."""
        waits = [s.first_attempt.wait() for s in current.samplers]
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await asyncio.gather(*waits)
        except TimeoutError:
            log.warning("daemon.slow_sensors", waited_s=READY_TIMEOUT_S)
        self.notifier.ready(self.status_line())
        log.info("daemon.ready")

    async def _watchdog(self, vital: list[asyncio.Task[None]]) -> None:
        """WATCHDOG=1 only while the loop runs this task and every vital task is alive,
        so systemd restarts a daemon that is wedged or lost its uplink or a sampler."""
        assert self.notifier.watchdog_s
        while True:
            dead = [t.get_name() for t in vital if t.done()]
            if dead:
                log.error("daemon.unhealthy", dead=dead)
            else:
                self.notifier.watchdog()
                self.notifier.status(self.status_line())
            await asyncio.sleep(self.notifier.watchdog_s)

    def _link_changed(self, _: Link) -> None:
        """STATUS= follows the uplink at once, not only with the next watchdog ping."""
        self.notifier.status(self.status_line())

    def status_line(self) -> str:
        current, shared = self._current, self._shared
        if current is None or shared is None:
            return "starting"
        now = time.time()
        states = [h.state(now) for h in shared.health.values()]
        ok = sum(1 for s in states if s is State.OK)
        link = current.uplink.link.describe()
        return f"{link}; sensors {ok}/{len(states)} ok; queue {shared.queue.depth}"

    def _heartbeat(self) -> None:
        current, shared = self._current, self._shared
        assert current is not None and shared is not None
        body = heartbeat.payload(
            shared.started,
            shared.queue.stats(),
            current.uplink.stats(),
            shared.health,
            config_version=0,
            firmware=heartbeat.FirmwareInfo(__version__),
        )
        config = current.config
        topic = f"{config.mqtt.topic_prefix}/{config.device_id}/heartbeat"
        current.uplink.publish_live(topic, json.dumps(body, separators=(",", ":")).encode())

    def figures(self) -> dict[str, Any]:
        current, shared = self._current, self._shared
        if current is None or shared is None:
            return {}
        return {
            "status": self.status_line(),
            "queue": dataclasses.asdict(shared.queue.stats()),
            "uplink": dataclasses.asdict(current.uplink.stats()),
            "pipelines": {p.sensor: dataclasses.asdict(p.stats()) for p in current.pipelines},
            "sensors": {
                name: {**dataclasses.asdict(h), "state": h.state(time.time()).value}
                for name, h in shared.health.items()
            },
        }

    async def _diagnose(self, config: Config) -> None:
        report = self.diagnostics.report()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = config.state_dir / f"diag-{stamp}.json"
        data = json.dumps(report, indent=1, default=str).encode()
        await self._offload(lambda: write_atomic(path, data))
        log.info("diag.report", file=str(path), tasks=len(report["tasks"]),
                 threads=len(report["threads"]), fds=report["fds"]["count"])


def run(path: Path) -> int:
    """``edge-gateway run``: 0 after a clean stop, 2 for an invalid file."""
    config = configfile.load(path)
    logsetup.configure(config.logging.level, config.logging.format)
    return asyncio.run(Daemon(path, config).run())
