"""The alarms of every sensor: their states, kept for the daemon's life and across restarts.

A sensor's pipeline is rebuilt when its stages change and its unit restarted when its
bus settings change, but an alarm whose own settings did not change must keep its state:
no re-raise, no spurious clear. So the states have one owner above the pipelines, the
``AlarmBook``, keyed by sensor and alarm name; a pipeline evaluates them through the
sensor's ``SensorAlarms``, the step the book hands it, which stays the same object while
the sensor exists. ``sync`` brings the book to a new config: an alarm with equal settings
keeps its state, a changed one starts anew (cleared first, published, if it was raised),
a removed one gets an empty retained payload, which deletes its document on the broker.

Transitions go into the telemetry queue at once, QoS 1 and retained, so an alarm raised
while the broker is away is delivered in order after the outage. The raised alarms are
written to ``state_dir/alarms.json`` (off the event loop), so after a restart an alarm
that still holds is not raised again as new, and one that cleared meanwhile is cleared.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from gateway import wire
from gateway.config.alarms import SEVERITIES, Alarm
from gateway.config.models import Config
from gateway.pipeline.alarm import AlarmState, Phase, Rule, Transition, step
from gateway.pipeline.pool import Pool, Record
from gateway.statefile import Offload, read_json, set_aside, write_atomic
from gateway.uplink.queue import Message, MessageQueue

log = structlog.get_logger(__name__)

ALARMS_FILE = "alarms.json"


@dataclass(slots=True)
class Watched:
    """One configured alarm of a sensor, as its pipeline evaluates it."""

    config: Alarm
    rule: Rule
    state: AlarmState
    # The latest value it saw: the value published when a config change clears it.
    value: float | None = None


class SensorAlarms:
    """The pipeline step evaluating one sensor's alarms on every reading that reaches it
    (before ``deadband`` and ``batch``, so neither can delay or hide an alarm). It passes
    every reading on unchanged; a transition goes to the queue at once."""

    name = "alarms"
    holds = 0

    def __init__(self, book: AlarmBook, sensor: str) -> None:
        self._book = book
        self.sensor = sensor
        self.watched: list[Watched] = []

    def process(self, record: Record, pool: Pool[Record]) -> Record:
        values = record.values
        for watched in self.watched:
            value = values.get(watched.config.quantity)
            if value is None:
                continue
            watched.value = value
            transition = step(watched.rule, watched.state, value, record.ts)
            if transition is not None:
                self._book.publish(self.sensor, watched.config, transition, value,
                                   watched.state.since, record.ts)
        return record

    def flush(self, pool: Pool[Record]) -> None:
        return None

    @property
    def unsaved(self) -> bool:
        return self._book.unsaved

    async def save(self) -> None:
        await self._book.save()


def payload(sensor: str, alarm: Alarm, transition: Transition, value: float | None,
            since: float, ts: float) -> bytes:
    return json.dumps({
        "sensor": sensor, "alarm": alarm.name, "state": transition.value,
        "quantity": alarm.quantity, "value": value, "threshold": alarm.threshold,
        "severity": alarm.severity, "since": since, "ts": ts,
    }, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Raised:
    """A raised alarm as the last process left it on disk."""

    alarm: Alarm
    since: float


class AlarmBook:
    def __init__(self, state_dir: Path, queue: MessageQueue, offload: Offload) -> None:
        self._path = state_dir / ALARMS_FILE
        self._queue = queue
        self._offload = offload
        # The topic prefix and the device id of the config synced last.
        self._where = ("", "")
        self._sensors: dict[str, SensorAlarms] = {}
        # Read at start, consumed by the first ``sync``: (sensor, alarm) -> its state.
        self._restored: dict[tuple[str, str], Raised | None] = {}
        self._unsaved = False
        self._saving = asyncio.Lock()

    def load(self) -> None:
        """The alarms the last process knew, and which of them were raised; a corrupt
        file is set aside (the alarms start clear)."""
        try:
            data = read_json(self._path)
            entries = [] if data is None else data["alarms"]
            self._restored = {
                (str(e["sensor"]), str(e["alarm"])):
                    Raised(Alarm.model_validate(e["settings"]), float(e["since"]))
                    if e["raised"] else None
                for e in entries
            }
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
            aside = set_aside(self._path)
            log.error("alarms.corrupt", file=str(self._path), moved_to=str(aside),
                      error=repr(exc))
            self._restored = {}

    def sensor(self, name: str) -> SensorAlarms:
        """The step evaluating sensor ``name``'s alarms, the same object while it exists."""
        alarms = self._sensors.get(name)
        if alarms is None:
            alarms = self._sensors[name] = SensorAlarms(self, name)
        return alarms

    async def sync(self, config: Config) -> None:
        """Bring the alarms to ``config``, before its pipelines start evaluating them."""
        self._where = (config.mqtt.topic_prefix, config.device_id)
        wanted = {sensor.name: sensor.alarms for sensor in config.sensors}
        now = time.time()
        for name in [n for n in self._sensors if n not in wanted]:
            for watched in self._sensors.pop(name).watched:
                self._remove(name, watched.config.name)
            self._unsaved = True
        restored, self._restored = self._restored, {}
        for name, configs in wanted.items():
            alarms = self.sensor(name)
            before = {w.config.name: w for w in alarms.watched}
            kept: list[Watched] = []
            for alarm in configs:
                old = before.pop(alarm.name, None)
                if old is not None and old.config == alarm:
                    kept.append(old)
                    continue
                if old is not None and old.state.raised:
                    self.publish(name, old.config, Transition.CLEARED, old.value, now, now)
                kept.append(Watched(alarm, Rule.of(alarm),
                                    self._restore(name, alarm, restored, now)))
                self._unsaved = True
            for gone in before:
                self._remove(name, gone)
                self._unsaved = True
            alarms.watched = kept
        for sensor, name in restored:
            # Known to the last process, configured no more.
            self._remove(sensor, name)
            self._unsaved = True
        await self.save()

    def _restore(self, sensor: str, alarm: Alarm,
                 restored: dict[tuple[str, str], Raised | None], now: float) -> AlarmState:
        key = (sensor, alarm.name)
        if key not in restored:
            return AlarmState()
        raised = restored.pop(key)
        if raised is None:
            return AlarmState()
        if raised.alarm == alarm:
            # Raised when the last process stopped: its document says so already.
            return AlarmState(Phase.ACTIVE, since=raised.since)
        # Its settings changed while the daemon was stopped: the old alarm is cleared.
        self.publish(sensor, raised.alarm, Transition.CLEARED, None, now, now)
        return AlarmState()

    def _remove(self, sensor: str, alarm: str) -> None:
        self._queue.put(Message(wire.alarm_topic(*self._where, sensor, alarm), b"", 1, sensor,
                                retain=True))
        log.info("alarm.removed", sensor=sensor, alarm=alarm)

    def publish(self, sensor: str, alarm: Alarm, transition: Transition,
                value: float | None, since: float, ts: float) -> None:
        """Queue the document of a transition, retained."""
        self._queue.put(Message(wire.alarm_topic(*self._where, sensor, alarm.name),
                                payload(sensor, alarm, transition, value, since, ts),
                                1, sensor, retain=True))
        self._unsaved = True
        log.info("alarm." + ("raised" if transition is Transition.RAISED else "cleared"),
                 sensor=sensor, alarm=alarm.name, value=value, severity=alarm.severity)

    def active(self) -> dict[str, int]:
        """How many alarms are raised, per severity."""
        counts: dict[str, int] = dict.fromkeys(SEVERITIES, 0)
        for alarms in self._sensors.values():
            for watched in alarms.watched:
                if watched.state.raised:
                    counts[watched.config.severity] += 1
        return counts

    @property
    def unsaved(self) -> bool:
        return self._unsaved

    async def save(self) -> None:
        """Write the alarms and which are raised, if that changed, off the event loop."""
        async with self._saving:
            if not self._unsaved:
                return
            self._unsaved = False
            data = json.dumps({"alarms": [
                {"sensor": name, "alarm": w.config.name, "raised": w.state.raised,
                 "since": w.state.since, "settings": w.config.model_dump()}
                for name, alarms in self._sensors.items() for w in alarms.watched
            ]}, separators=(",", ":")).encode()
            try:
                await self._offload(lambda: write_atomic(self._path, data))
            except OSError as exc:
                self._unsaved = True
                log.error("alarms.save_failed", file=str(self._path), error=str(exc))
