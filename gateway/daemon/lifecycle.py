"""The daemon's life once its parts are composed (``gateway.daemon.compose``): run them,
answer signals, stop.

One TaskGroup (``Tasks``) owns every task for the daemon's life: the queue's disk worker,
the uplink supervisor, the remote-config task, the link follower, the heartbeat, the
watchdog, Home Assistant's birth listener once discovery is on, with trusted keys the
firmware task and, through ``RunningSensors``, a sampler and a pipeline timer per sensor.
SIGHUP goes to the reconfigurer, as remote updates do. SIGTERM/SIGINT stop the samplers,
flush the pipelines, let the uplink drain for ``mqtt.shutdown_flush_s``, publish the
``shutdown`` status and return; a firmware update asks for the same stop with exit status 75
(but no ``STOPPING=1``: the launcher starts again in this process, ``launcher.relaunch``, or
the unit restarts it). SIGUSR1 writes a diagnostics report.
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import structlog

from gateway import __version__
from gateway.daemon.parts import Parts
from gateway.daemon.reconfigure import Reconfigurer
from gateway.daemon.signals import Event, Signals
from gateway.daemon.status import LinkWatch, Status
from gateway.daemon.tasks import Tasks
from gateway.sampling.simbench import SimBench
from gateway.service.diagnostics import Diagnostics
from gateway.service.notify import Notifier
from gateway.statefile import write_atomic
from gateway.uplink.inbox import Inbox
from gateway.uplink.queue import MessageQueue
from gateway.uplink.supervisor import LinkState, Uplink

log = structlog.get_logger(__name__)

READY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Daemon:
    """Every part, composed before the daemon exists; none is set later."""

    reconfigurer: Reconfigurer
    parts: Parts
    status: Status
    tasks: Tasks
    queue: MessageQueue
    uplink: Uplink
    inbox: Inbox
    links: LinkWatch
    signals: Signals
    notifier: Notifier
    diagnostics: Diagnostics
    bench: SimBench
    io: ThreadPoolExecutor

    def figures(self) -> dict[str, object]:
        return self.status.figures()

    async def run(self) -> int:
        self.diagnostics.ages.install(asyncio.get_running_loop())
        try:
            await self.queue.open()
            with self.signals:
                async with self.tasks:
                    await self._serve()
        finally:
            await self.queue.close()
            self.bench.close()
            self.io.shutdown(wait=True)
        log.info("daemon.stopped", exit_code=self.signals.exit_code)
        return self.signals.exit_code

    async def _serve(self) -> None:
        tasks, remote = self.tasks, self.reconfigurer
        tasks.start("queue-disk", self.queue.run())
        tasks.start("uplink", self.uplink.run())
        tasks.start("links", self._follow_links())
        tasks.start("remote-config", remote.run(self.inbox.get, self.parts))
        await remote.start(self.parts)
        await self._ready()
        if self.notifier.watchdog_s:
            tasks.start("watchdog", self._watchdog())
        while (event := await self.signals.next()) not in (Event.STOP, Event.RESTART):
            log.info("daemon.signal", action=event.value)
            if event is Event.DIAGNOSE:
                await self._diagnose()
            elif event is Event.WEDGE:
                time.sleep(3600)  # noqa: ASYNC251 - wedges the loop on purpose: see DEBUG_HOOKS
            else:
                await remote.reload(self.parts)
        log.info("daemon.signal", action=event.value)
        await self.parts.stop_sampling()
        if event is Event.STOP:  # a restart goes on in this process (launcher.relaunch)
            self.notifier.stopping()
        await self.uplink.shutdown(remote.config.mqtt.shutdown_flush_s)
        tasks.cancel_all()

    async def _ready(self) -> None:
        """READY=1 once every sensor has been initialised (or has failed to), without
        waiting for the broker: a device must be manageable while its network is down."""
        waits = [s.first_attempt.wait() for s in self.parts.sensors.samplers()]
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await asyncio.gather(*waits)
        except TimeoutError:
            log.warning("daemon.slow_sensors", waited_s=READY_TIMEOUT_S)
        self.notifier.ready(self.status.line())
        log.info("daemon.ready", version=__version__)

    async def _watchdog(self) -> None:
        """WATCHDOG=1 only while the loop runs this task and every vital task (the uplink,
        each sampler) is alive, so systemd restarts a daemon that is wedged or lost one."""
        assert self.notifier.watchdog_s
        while True:
            uplink = self.tasks.get("uplink")
            vital = [*([uplink] if uplink is not None else []), *self.parts.sensors.tasks()]
            dead = [t.get_name() for t in vital if t.done()]
            if dead:
                log.error("daemon.unhealthy", dead=dead)
            else:
                self.notifier.watchdog()
                self.notifier.status(self.status.line())
            await asyncio.sleep(self.notifier.watchdog_s)

    async def _follow_links(self) -> None:
        """STATUS= follows the uplink at once, not only with the next watchdog ping; Home
        Assistant's discovery messages go out again on every CONNACK."""
        while True:
            link = await self.links.next()
            self.notifier.status(self.status.line())
            home_assistant = self.parts.home_assistant
            if link.state is LinkState.CONNECTED and home_assistant is not None:
                home_assistant.republish()

    async def _diagnose(self) -> None:
        report = self.diagnostics.report()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = self.reconfigurer.config.state_dir / f"diag-{stamp}.json"
        data = json.dumps(report, indent=1, default=str).encode()
        await asyncio.get_running_loop().run_in_executor(self.io, lambda: write_atomic(path,
                                                                                      data))
        log.info("diag.report", file=str(path), tasks=len(report["tasks"]),
                 threads=len(report["threads"]), fds=report["fds"]["count"])
