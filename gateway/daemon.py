"""The daemon's lifecycle: compose everything from a config, run it, change it, stop it.

One TaskGroup owns every task for the daemon's life: the queue's disk worker, the uplink
supervisor, the remote-config task, the heartbeat, the watchdog, Home Assistant's birth
listener once discovery is on, with trusted keys the firmware task (``gateway.firmware``,
imported only then) and, through ``RunningSensors``, a sampler and a pipeline timer per
sensor. The config changes part by part, never all at once: SIGHUP re-reads the file and
puts the applied remote layers back on top; a verified remote update does the same with its
new layer. Either way ``_apply`` changes only what differs: sensors added, removed or
changed are started and stopped one by one (the others keep sampling), a pipeline change
takes effect on the next reading, an ``mqtt`` change reconnects the uplink, queue bounds
resize, the log level changes live, Home Assistant's discovery messages follow the sensors.
A remote update whose new sensor does not initialise, or whose broker settings do not
connect, within ``remote_config.apply_timeout_s`` is rolled back to the previous config.
SIGTERM/SIGINT stop the samplers, flush the pipelines, let the uplink drain for
``mqtt.shutdown_flush_s``, publish the ``shutdown`` status and return; a firmware update asks
for the same stop with exit status 75 (but no ``STOPPING=1``: the launcher starts again in
this process, ``launcher.relaunch``; or the unit restarts it). SIGUSR1 writes a diagnostics report.
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
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gateway import __version__
from gateway.config import file as configfile
from gateway.config.models import Config, Sensor
from gateway.firmware import slots as firmware_slots
from gateway.pipeline.core import Pipeline, build_steps
from gateway.pipeline.seq import SeqStore
from gateway.remote import effective
from gateway.remote import store as layer_store
from gateway.remote.store import LayerStore
from gateway.remote.updates import Outcome, RemoteConfig, state_payload, state_topic
from gateway.remote.updates import config_topics as remote_topics
from gateway.sampling.health import SensorHealth, State
from gateway.sampling.running import RunningSensors
from gateway.sampling.simbench import SimBench
from gateway.service import heartbeat
from gateway.service import log as logsetup
from gateway.service.diagnostics import Diagnostics
from gateway.service.notify import Notifier
from gateway.statefile import write_atomic
from gateway.trust.keys import KeyLoadError, Keyring
from gateway.uplink.inbox import Inbox
from gateway.uplink.queue import MessageQueue
from gateway.uplink.supervisor import Identity, Link, LinkState, Uplink

if TYPE_CHECKING:
    from gateway.firmware.install import Installer
    from gateway.firmware.updater import Updater
    from gateway.service.home_assistant import HomeAssistant

log = structlog.get_logger(__name__)

READY_TIMEOUT_S = 10.0
# Under state_dir: the Home Assistant discovery topics published, to clear after a restart.
HOME_ASSISTANT_STATE = "home_assistant.json"
# Set to 1 by tests only: SIGUSR2 then blocks the event loop, as a wedged daemon would, and
# EDGE_GATEWAY_FIRMWARE_HOLD=STATE stops a firmware update on entering STATE.
DEBUG_HOOKS = "EDGE_GATEWAY_DEBUG_HOOKS"


class Event(Enum):
    STOP = "stop"
    RELOAD = "reload"
    DIAGNOSE = "diagnose"
    WEDGE = "wedge"
    RESTART = "restart"


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

    def post(self, event: Event) -> None:
        self._events.put_nowait(event)


def _fixed_changed(new: Config, running: Config) -> list[str]:
    """Settings that live as long as the process: the identity and the state location
    (changing them under a running queue and seq store would mix or lose data), and
    whether the queue has a disk tier at all (its bounds resize live)."""
    changed = [key for key in ("device_id", "state_dir") if getattr(new, key) !=
               getattr(running, key)]
    if (new.queue.disk_max_bytes == 0) != (running.queue.disk_max_bytes == 0):
        changed.append("queue.disk_max_bytes (turning the disk tier on or off)")
    return changed


def _largest_incoming(config: Config) -> int:
    """The largest payload any inbox keeps: a config envelope or, with trusted keys (the
    firmware task runs only with them), a firmware manifest. Home Assistant's birth is far
    smaller than either; the broker drops anything larger (MQTT 5)."""
    largest = config.remote_config.max_envelope_bytes
    if not config.remote_config.trusted_keys:
        return largest
    from gateway.firmware.updater import MANIFEST_MAX_BYTES  # loaded with firmware on anyway

    return max(largest, MANIFEST_MAX_BYTES)


class Daemon:
    def __init__(self, path: Path, document: configfile.Document) -> None:
        self.path = path
        self.document = document
        self.config = document.config
        self.notifier = Notifier()
        # Small state files (seq counters, reports) are written off the event loop, in order.
        self._io = ThreadPoolExecutor(1, thread_name_prefix="state-io")
        self.diagnostics = Diagnostics(self.config.diagnostics.tracemalloc, self.figures)
        self._started = time.monotonic()
        self._bench = SimBench()
        self._health: dict[str, SensorHealth] = {}
        self._applying = asyncio.Lock()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._home_assistant: HomeAssistant | None = None
        self._exit_code = 0
        self._config_problem: str | None = None
        self._firmware: Updater | None = None
        self._firmware_installer: Installer | None = None
        self._firmware_inbox: Inbox | None = None
        self._firmware_topic: str | None = None

    async def _offload(self, fn: Callable[[], None]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._io, fn)

    async def run(self) -> int:
        self.diagnostics.ages.install(asyncio.get_running_loop())
        file_config = self.config
        file_config.state_dir.mkdir(parents=True, exist_ok=True)
        base_dir = self.path.resolve().parent
        store = LayerStore(layer_store.path_in(file_config.state_dir), self._offload)
        applied = store.load()
        try:
            config = effective.build(self.document, applied.layers, base_dir).config
        except configfile.ConfigError as exc:
            # The file changed under layers that were valid when applied: run on the file
            # and say why, rather than not at all.
            self._config_problem = effective.first_problem(exc)
            log.error("config.remote_layers_invalid", error=self._config_problem)
            config = file_config
        self.config = config
        keyring = self._keyring = Keyring.load(config.remote_config.trusted_keys)
        self._seqs = SeqStore(config.state_dir / "seq.json", self._offload)
        self._seqs.load()
        self._queue = MessageQueue(config.queue, config.state_dir)
        self._uplink = Uplink(
            config.mqtt,
            Identity(config.device_id, __version__, uuid.uuid4().hex, tuple(config.groups)),
            self._queue,
            on_link=self._link_changed,
        )
        self._inbox = Inbox(config.remote_config.inbox_size,
                            config.remote_config.max_envelope_bytes)
        self._remote = RemoteConfig(self.document, base_dir, store, applied, keyring,
                                    self._apply_remote, self._report_config)
        self._routes: dict[str, str] = {}
        self._route(config)
        self._running_slot = firmware_slots.running_slot(config.state_dir)
        self._firmware_place = _firmware_place_problem(config)
        if self._firmware_place is not None:
            log.error("firmware.off", reason=self._firmware_place)
        log.info("daemon.started", version=__version__, config=str(self.path),
                 device=config.device_id, remote_versions=applied.versions())
        try:
            await self._queue.open()
            with Signals() as signals:
                self._signals = signals
                async with asyncio.TaskGroup() as tg:
                    await self._serve(tg, signals)
        finally:
            await self._queue.close()
            self._bench.close()
            self._io.shutdown(wait=True)
        log.info("daemon.stopped", exit_code=self._exit_code)
        return self._exit_code

    async def _serve(self, tg: asyncio.TaskGroup, signals: Signals) -> None:
        config = self.config
        self._group = tg
        self._sensors = RunningSensors(tg, self._bench, self._health)
        tasks = self._tasks
        tasks["queue-disk"] = tg.create_task(self._queue.run(), name="queue-disk")
        tasks["uplink"] = tg.create_task(self._uplink.run(), name="uplink")
        tasks["remote-config"] = tg.create_task(self._remote.run(self._inbox.get),
                                                name="remote-config")
        await self._discover(config)
        await self._sync_firmware(config, self._keyring)
        self._start_heartbeat(config)
        await self._sensors.reconcile(config.sensors, self._pipeline_factory(config))
        await self._ready()
        if self.notifier.watchdog_s:
            tasks["watchdog"] = tg.create_task(self._watchdog(), name="watchdog")
        while (event := await signals.next()) not in (Event.STOP, Event.RESTART):
            log.info("daemon.signal", action=event.value)
            if event is Event.DIAGNOSE:
                await self._diagnose()
            elif event is Event.WEDGE:
                time.sleep(3600)  # noqa: ASYNC251 - wedges the loop on purpose: see DEBUG_HOOKS
            else:
                await self._reload()
        log.info("daemon.signal", action=event.value)
        await self._sensors.stop_all()
        await self._seqs.close()
        if event is Event.STOP:  # a restart goes on in this process (launcher.relaunch)
            self.notifier.stopping()
        await self._uplink.shutdown(self.config.mqtt.shutdown_flush_s)
        for task in tasks.values():
            task.cancel()

    def _start_heartbeat(self, config: Config) -> None:
        self._tasks["heartbeat"] = self._group.create_task(
            heartbeat.beat(config.heartbeat.interval_s, self._heartbeat), name="heartbeat"
        )

    def _pipeline_factory(self, config: Config) -> Callable[[Sensor], Pipeline]:
        prefix = f"{config.mqtt.topic_prefix}/{config.device_id}"

        def make(sensor: Sensor) -> Pipeline:
            return Pipeline(config.device_id, sensor.name, build_steps(sensor.pipeline),
                            f"{prefix}/telemetry/{sensor.name}", config.mqtt.qos,
                            self._seqs, self._queue)

        return make

    async def _reload(self) -> None:
        """SIGHUP: the file again, with the remote layers on top; an invalid result is
        logged and the running config goes on."""
        try:
            document = await asyncio.to_thread(configfile.load_document, self.path)
            config = self._remote.current(document).config
        except configfile.ConfigError as exc:
            for issue in exc.issues:
                log.error("config.reload_rejected", error=str(issue))
            return
        fixed = _fixed_changed(config, self.config)
        if fixed:
            log.error("config.reload_rejected", error=f"{', '.join(fixed)}: needs a restart")
            return
        try:
            keyring = Keyring.load(config.remote_config.trusted_keys)
        except KeyLoadError as exc:
            log.error("config.reload_rejected", error=f"remote_config.trusted_keys: {exc}")
            return
        self.document = document
        async with self._applying:
            await self._apply(config, keyring, timeout_s=None)
        log.info("config.reloaded", sensors=len(config.sensors))

    async def _apply_remote(self, config: Config, keyring: Keyring) -> str | None:
        """A verified, valid remote update: applied, or rolled back with the reason."""
        fixed = _fixed_changed(config, self.config)
        if fixed:
            return f"{', '.join(fixed)}: needs a restart"
        async with self._applying:
            previous, previous_keys = self.config, self._keyring
            problem = await self._apply(config, keyring,
                                        timeout_s=config.remote_config.apply_timeout_s)
            if problem is not None:
                await self._apply(previous, previous_keys, timeout_s=None)
            return problem

    async def _apply(
        self, config: Config, keyring: Keyring, timeout_s: float | None
    ) -> str | None:
        """Change what differs, part by part; with ``timeout_s``, wait that long for new
        sensors to give a first good reading and new broker settings to connect, and name
        what did not."""
        old, self.config, self._keyring = self.config, config, keyring
        if config.logging != old.logging:
            logsetup.configure(config.logging.level, config.logging.format)
        if config.queue != old.queue:
            self._queue.resize(config.queue)
        mqtt_changed = config.mqtt != old.mqtt
        if mqtt_changed:
            self._uplink.reconfigure(config.mqtt)
        if config.groups != old.groups:
            self._uplink.regroup(tuple(config.groups))
        restart_all = (config.mqtt.topic_prefix, config.mqtt.qos) != (old.mqtt.topic_prefix,
                                                                      old.mqtt.qos)
        started = await self._sensors.reconcile(config.sensors, self._pipeline_factory(config),
                                                restart_all)
        if config.heartbeat != old.heartbeat:
            task = self._tasks.pop("heartbeat")
            task.cancel()
            await asyncio.wait([task])
            self._start_heartbeat(config)
        self._remote.configured(config, keyring)
        self._route(config)
        await self._discover(config)
        await self._sync_firmware(config, keyring)
        if timeout_s is None:
            return None
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(s.first_reading.wait() for s in started))
                if mqtt_changed:
                    await self._uplink.up.wait()
        except TimeoutError:
            pass
        failed = [s.config.name for s in started if not s.first_reading.is_set()]
        if failed:
            return f"sensor {failed[0]} did not initialise within {timeout_s:g} s"
        if mqtt_changed and not self._uplink.up.is_set():
            return f"no broker connection within {timeout_s:g} s ({self._uplink.last_error})"
        return None

    def _route(self, config: Config) -> None:
        """Subscribe to the config topics of the running config (none without trusted
        keys: nothing could be verified)."""
        wanted = remote_topics(config) if config.remote_config.trusted_keys else {}
        for topic in set(self._routes) - set(wanted):
            self._uplink.unroute(topic)
        for topic in set(wanted) - set(self._routes):
            self._uplink.route(topic, self._inbox)
        self._routes = wanted
        self._uplink.limit_incoming(_largest_incoming(config))

    async def _discover(self, config: Config) -> None:
        """Home Assistant discovery follows the config. It is set up the first time it is
        enabled, or at start when an earlier run left discovery messages to clear."""
        if self._home_assistant is None:
            state_file = config.state_dir / HOME_ASSISTANT_STATE
            if not (config.home_assistant.enabled or await asyncio.to_thread(state_file.exists)):
                return
            # Imported only where it is used, like every optional feature.
            from gateway.service.home_assistant import HomeAssistant

            self._home_assistant = HomeAssistant(self._uplink, state_file, __version__,
                                                 self._offload)
            await asyncio.to_thread(self._home_assistant.load)
            self._tasks["home-assistant"] = self._group.create_task(
                self._home_assistant.run(), name="home-assistant")
        await self._home_assistant.configure(config)
    async def _sync_firmware(self, config: Config, keyring: Keyring) -> None:
        """The firmware task follows the config: on with trusted keys (nothing could verify
        a manifest without), its channel's manifest routed into its own inbox."""
        wanted = bool(config.remote_config.trusted_keys) and self._firmware_place is None
        if not wanted:
            if self._firmware is not None:
                task = self._tasks.pop("firmware")
                task.cancel()
                await asyncio.wait([task])
                self._firmware = self._firmware_installer = self._firmware_inbox = None
                self._reroute_firmware(None)
            return
        # Only now: the download, the installer and their imports cost memory.
        from gateway.firmware import install, updater

        settings = updater.Settings.of(config)
        template = config.firmware.installer or install.DEFAULT_INSTALLER
        if self._firmware is None or self._firmware_installer is None:
            self._firmware_installer = install.Installer(
                config.state_dir, self.path.resolve(), config.firmware.install_timeout_s,
                template, max_unpacked_bytes=config.firmware.max_unpacked_bytes)
            self._firmware = updater.Updater(
                config.state_dir, settings, keyring,
                updater.Running(__version__, self._running_slot, firmware_slots.launched()),
                _FirmwareHost(self, self._uplink), self._firmware_installer,
                offload=self._offload,
                hold=os.environ.get(updater.HOLD_ENV) if os.environ.get(DEBUG_HOOKS) == "1"
                else None)
            self._firmware_inbox = Inbox(updater.INBOX_SIZE, updater.MANIFEST_MAX_BYTES)
            self._tasks["firmware"] = self._group.create_task(
                _run_firmware(self._firmware, self._firmware_inbox), name="firmware")
        else:
            self._firmware_installer.template = template
            self._firmware_installer.timeout_s = config.firmware.install_timeout_s
            self._firmware_installer.max_unpacked_bytes = config.firmware.max_unpacked_bytes
            await self._firmware.configured(settings, keyring)
        self._reroute_firmware(settings.manifest_topic)

    def _reroute_firmware(self, topic: str | None) -> None:
        if topic == self._firmware_topic:
            return
        if self._firmware_topic is not None:
            self._uplink.unroute(self._firmware_topic)
        if topic is not None and self._firmware_inbox is not None:
            self._uplink.route(topic, self._firmware_inbox)
        self._firmware_topic = topic

    def firmware_health(self, excused: frozenset[str]) -> str | None:
        """Why this process would fail a firmware trial now, or None: the uplink connected,
        every sensor ok since a good reading (but those not ok before the update), the
        config valid."""
        if not self._uplink.up.is_set():
            return f"uplink not connected ({self._uplink.last_error or 'connecting'})"
        if self._config_problem is not None:
            return f"remote config layers invalid: {self._config_problem}"
        now = time.time()
        for name, health in sorted(self._health.items()):
            if name in excused:
                continue
            if health.last_ok_ts is None:
                return f"sensor {name}: no good reading yet"
            if (state := health.state(now)) is not State.OK:
                return f"sensor {name}: {state.value}"
        return None

    def unwell_sensors(self) -> frozenset[str]:
        now = time.time()
        return frozenset(name for name, health in self._health.items()
                         if health.last_ok_ts is None or health.state(now) is not State.OK)

    def restart(self, exit_code: int) -> None:
        """Stop as SIGTERM does, then exit with ``exit_code``."""
        self._exit_code = exit_code
        self._signals.post(Event.RESTART)

    def _report_config(self, outcome: Outcome) -> None:
        self._uplink.publish_retained(state_topic(self.config),
                                      state_payload(outcome, time.time()))

    async def _ready(self) -> None:
        """READY=1 once every sensor has been initialised (or has failed to), without
        waiting for the broker: a device must be manageable while its network is down."""
        waits = [s.first_attempt.wait() for s in self._sensors.samplers()]
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await asyncio.gather(*waits)
        except TimeoutError:
            log.warning("daemon.slow_sensors", waited_s=READY_TIMEOUT_S)
        self.notifier.ready(self.status_line())
        log.info("daemon.ready")

    async def _watchdog(self) -> None:
        """WATCHDOG=1 only while the loop runs this task and every vital task (the uplink,
        each sampler) is alive, so systemd restarts a daemon that is wedged or lost one."""
        assert self.notifier.watchdog_s
        while True:
            vital = [self._tasks["uplink"], *self._sensors.tasks()]
            dead = [t.get_name() for t in vital if t.done()]
            if dead:
                log.error("daemon.unhealthy", dead=dead)
            else:
                self.notifier.watchdog()
                self.notifier.status(self.status_line())
            await asyncio.sleep(self.notifier.watchdog_s)

    def _link_changed(self, link: Link) -> None:
        """STATUS= follows the uplink at once, not only with the next watchdog ping; Home
        Assistant's discovery messages go out again on every CONNACK."""
        self.notifier.status(self.status_line())
        if link.state is LinkState.CONNECTED and self._home_assistant is not None:
            self._home_assistant.republish()

    def status_line(self) -> str:
        if not hasattr(self, "_sensors"):
            return "starting"
        now = time.time()
        states = [h.state(now) for h in self._health.values()]
        ok = sum(1 for s in states if s is State.OK)
        link = self._uplink.link.describe()
        return f"{link}; sensors {ok}/{len(states)} ok; queue {self._queue.depth}"

    def _heartbeat(self) -> None:
        body = heartbeat.payload(
            self._started,
            self._queue.stats(),
            self._uplink.stats(),
            self._health,
            config_version=dict(self._remote.versions()),
            firmware=heartbeat.FirmwareInfo(
                __version__, self._running_slot,
                self.config.firmware.channel if self._firmware is not None else None),
        )
        config = self.config
        topic = f"{config.mqtt.topic_prefix}/{config.device_id}/heartbeat"
        self._uplink.publish_live(topic, json.dumps(body, separators=(",", ":")).encode())

    def figures(self) -> dict[str, Any]:
        if not hasattr(self, "_sensors"):
            return {}
        return {
            "status": self.status_line(),
            "queue": dataclasses.asdict(self._queue.stats()),
            "uplink": dataclasses.asdict(self._uplink.stats()),
            "inbox": {"depth": len(self._inbox), "dropped": self._inbox.dropped},
            "firmware": None if self._firmware is None or self._firmware_inbox is None else {
                "state": self._firmware.record.state, "version": self._firmware.record.version,
                "inbox": {"depth": len(self._firmware_inbox),
                          "dropped": self._firmware_inbox.dropped}},
            "pipelines": {p.sensor: dataclasses.asdict(p.stats())
                          for p in self._sensors.pipelines()},
            "sensors": {
                name: {**dataclasses.asdict(h), "state": h.state(time.time()).value}
                for name, h in self._health.items()
            },
        }

    async def _diagnose(self) -> None:
        report = self.diagnostics.report()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = self.config.state_dir / f"diag-{stamp}.json"
        data = json.dumps(report, indent=1, default=str).encode()
        await self._offload(lambda: write_atomic(path, data))
        log.info("diag.report", file=str(path), tasks=len(report["tasks"]),
                 threads=len(report["threads"]), fds=report["fds"]["count"])


async def _run_firmware(firmware: Updater, inbox: Inbox) -> None:
    """A fault in the updater is logged and ends updates until the next start; it does not
    take the sensors and the uplink down with it."""
    try:
        await firmware.run(inbox.get)
    except Exception:
        log.exception("firmware.crashed")


class _FirmwareHost:
    """What the firmware task asks of the daemon (``gateway.firmware.updater.Host``)."""

    def __init__(self, daemon: Daemon, uplink: Uplink) -> None:
        self._daemon, self._uplink = daemon, uplink

    def report(self, topic: str, payload: bytes) -> None:
        self._uplink.publish_retained(topic, payload)

    def health(self, excused: frozenset[str]) -> str | None:
        return self._daemon.firmware_health(excused)

    def unwell(self) -> frozenset[str]:
        return self._daemon.unwell_sensors()

    def restart(self) -> None:
        from gateway.firmware.updater import RESTART_EXIT

        self._daemon.restart(RESTART_EXIT)


def _firmware_place_problem(config: Config) -> str | None:
    """Updates need the launcher and the daemon to agree on the state directory: under
    systemd the launcher takes the unit's, the daemon its file's."""
    unit = os.environ.get("STATE_DIRECTORY", "").split(":", 1)[0]
    if unit and Path(unit).resolve() != config.state_dir.resolve():
        return (f"state_dir {config.state_dir} is not the unit's StateDirectory {unit}: "
                "firmware updates are off")
    return None


def run(path: Path) -> int:
    """``edge-gateway run``: 0 after a clean stop, 2 for an invalid file."""
    document = configfile.load_document(path)
    config = document.config
    logsetup.configure(config.logging.level, config.logging.format)
    return asyncio.run(Daemon(path, document).run())
