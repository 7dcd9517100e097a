"""Alarms in a sensor's pipeline and in their book: evaluated on every reading before
``deadband`` and ``batch``, published retained through the queue ahead of the telemetry of
the reading that raised them, kept across a config change that leaves them equal and
across a restart, cleared when changed, deleted (an empty retained payload) when removed."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from gateway.config import stages as cfg
from gateway.config.models import Config, QueueConfig
from gateway.pipeline.alarms import ALARMS_FILE, AlarmBook
from gateway.pipeline.core import Pipeline, build_steps
from gateway.pipeline.pool import Pool, Record
from gateway.pipeline.seq import SeqStore
from gateway.uplink.queue import Message, MessageQueue

PREFIX = "gw/pi-1"
OVERHEAT = {"name": "overheat", "quantity": "temperature_c", "above": 40.0,
            "hysteresis": 2.0, "severity": "critical"}
DAMP = {"name": "damp", "quantity": "humidity_rh", "above": 80.0, "on_delay_s": 20.0}
STAGES = [{"stage": "deadband", "delta": {"temperature_c": 5.0}, "max_silence_s": 3600},
          {"stage": "batch", "max_readings": 10, "max_delay_s": 3600}]


async def offload(fn: Callable[[], None]) -> None:
    fn()


def config(*alarms: dict[str, Any], sensors: int = 1) -> Config:
    return Config.model_validate({
        "device_id": "pi-1", "mqtt": {"brokers": ["mqtt://h"], "topic_prefix": "gw"},
        "sensors": [{"name": name, "driver": "sht3x", "bus": "sim", "interval_s": 1,
                     "pipeline": STAGES, "alarms": list(alarms)}
                    for name in ("cabinet", "attic")[:sensors]],
    })


class Rig:
    """A book, a queue and the cabinet sensor's pipeline as the daemon composes them."""

    def __init__(self, state_dir: Path) -> None:
        self.queue = MessageQueue(QueueConfig())
        self.book = AlarmBook(state_dir, self.queue, offload)
        self.book.load()
        self.seqs = SeqStore(state_dir / "seq.json", offload)
        self.seqs.load()

    def pipeline(self, sensor: str = "cabinet") -> Pipeline:
        stages = TypeAdapter(cfg.Stages).validate_python(STAGES)
        return Pipeline("pi-1", sensor, build_steps(stages), f"{PREFIX}/telemetry/{sensor}",
                        1, self.seqs, self.queue, alarms=self.book.sensor(sensor))

    async def sent(self) -> list[Message]:
        out = []
        while self.queue.depth:
            message = await self.queue.take()
            self.queue.ack(message)
            out.append(message)
        return out


def alarm_documents(messages: list[Message]) -> list[tuple[str, Any]]:
    return [(m.topic.removeprefix(f"{PREFIX}/alarm/"), json.loads(m.payload) if m.payload
             else None) for m in messages if "/alarm/" in m.topic]


def test_a_raise_goes_out_at_once_retained_ahead_of_its_telemetry(tmp_path: Path) -> None:
    async def scenario() -> list[Message]:
        rig = Rig(tmp_path)
        await rig.book.sync(config(OVERHEAT))
        pipeline = rig.pipeline()
        for ts, temperature in [(1.0, 30.0), (2.0, 31.0), (3.0, 41.5), (4.0, 39.0),
                                (5.0, 38.0)]:
            await pipeline.push(ts, {"temperature_c": temperature, "humidity_rh": 50.0})
        await pipeline.flush()
        return await rig.sent()

    sent = asyncio.run(scenario())
    # The batch (10 readings) and the deadband (5 degrees) hold the telemetry back until
    # the flush; the alarm documents went out as they happened.
    assert [m.topic.rsplit("/", 2)[-2] for m in sent] == ["cabinet", "cabinet", "telemetry"]
    raised, cleared = sent[0], sent[1]
    assert (raised.topic, raised.qos, raised.retain) == (f"{PREFIX}/alarm/cabinet/overheat",
                                                         1, True)
    assert json.loads(raised.payload) == {
        "sensor": "cabinet", "alarm": "overheat", "state": "active",
        "quantity": "temperature_c", "value": 41.5, "threshold": 40.0,
        "severity": "critical", "since": 3.0, "ts": 3.0}
    assert json.loads(cleared.payload)["state"] == "cleared"
    assert json.loads(cleared.payload)["ts"] == 5.0
    assert not sent[2].retain
    # The deadband passed 3 of the 5 readings; the alarm saw all of them.
    assert len(json.loads(sent[2].payload)["readings"]) == 3


def test_changing_one_alarm_leaves_the_others_state_untouched(tmp_path: Path) -> None:
    """What SIGHUP and a remote update do to the alarms (``AlarmBook.sync``), while the
    pipeline is rebuilt (``retune``) as for a pipeline change."""

    async def scenario() -> tuple[list[Any], list[Any], list[Any]]:
        rig = Rig(tmp_path)
        await rig.book.sync(config(OVERHEAT, DAMP))
        pipeline = rig.pipeline()
        for ts in range(0, 30, 5):
            await pipeline.push(float(ts), {"temperature_c": 45.0, "humidity_rh": 85.0})
        first = alarm_documents(await rig.sent())
        # The damp threshold changes; overheat's does not. The stages are rebuilt too.
        await rig.book.sync(config(OVERHEAT, {**DAMP, "above": 90.0}))
        stages = TypeAdapter(cfg.Stages).validate_python(STAGES)
        await pipeline.retune(build_steps(stages))
        for ts in range(30, 60, 5):
            await pipeline.push(float(ts), {"temperature_c": 45.0, "humidity_rh": 95.0})
        second = alarm_documents(await rig.sent())
        # Damp removed: its document is deleted; overheat goes on.
        await rig.book.sync(config(OVERHEAT))
        await pipeline.push(60.0, {"temperature_c": 37.0, "humidity_rh": 95.0})
        third = alarm_documents(await rig.sent())
        return first, second, third

    first, second, third = asyncio.run(scenario())
    assert [(t, d["state"], d["since"], d["ts"]) for t, d in first] == [
        ("cabinet/overheat", "active", 0.0, 0.0), ("cabinet/damp", "active", 0.0, 20.0)]
    # The changed alarm is cleared at the change and raised anew by its new threshold
    # once it held 20 s; overheat is neither raised again nor cleared.
    assert [(t, d["state"], d["threshold"]) for t, d in second] == [
        ("cabinet/damp", "cleared", 80.0), ("cabinet/damp", "active", 90.0)]
    assert second[1][1]["since"] == 30.0 and second[1][1]["ts"] == 50.0
    assert third == [("cabinet/damp", None), ("cabinet/overheat", {**third[1][1],
                                                                    "state": "cleared"})]


def test_a_removed_sensor_deletes_its_alarm_documents(tmp_path: Path) -> None:
    async def scenario() -> list[Message]:
        rig = Rig(tmp_path)
        await rig.book.sync(config(OVERHEAT, sensors=2))
        await rig.book.sync(config(OVERHEAT, sensors=1))
        return await rig.sent()

    [deleted] = asyncio.run(scenario())
    assert (deleted.topic, deleted.payload, deleted.retain) == (
        f"{PREFIX}/alarm/attic/overheat", b"", True)


def test_after_a_restart_a_raised_alarm_that_still_holds_is_not_raised_again(
        tmp_path: Path) -> None:
    async def run_once(changes: list[tuple[float, float]], *alarms: dict[str, Any]
                       ) -> tuple[list[Any], dict[str, int]]:
        rig = Rig(tmp_path)
        await rig.book.sync(config(*alarms))
        pipeline = rig.pipeline()
        for ts, temperature in changes:
            await pipeline.push(ts, {"temperature_c": temperature, "humidity_rh": 50.0})
        await pipeline.flush()
        return alarm_documents(await rig.sent()), rig.book.active()

    first, _ = asyncio.run(run_once([(1.0, 45.0)], OVERHEAT))
    assert [d["state"] for _, d in first] == ["active"]
    # The next process: still hot, nothing is published; then it cools down.
    again, active = asyncio.run(run_once([(100.0, 44.0), (101.0, 43.0)], OVERHEAT))
    assert (again, active) == ([], {"info": 0, "warning": 0, "critical": 1})
    cooled, active = asyncio.run(run_once([(200.0, 44.0), (201.0, 30.0)], OVERHEAT))
    assert [(d["state"], d["ts"]) for _, d in cooled] == [("cleared", 201.0)]
    assert active["critical"] == 0
    # Raised again, then the daemon restarts with its threshold changed: the old alarm
    # is cleared at once, and the new one raised only if its own condition holds.
    asyncio.run(run_once([(300.0, 45.0)], OVERHEAT))
    changed, _ = asyncio.run(run_once([(400.0, 45.0)], {**OVERHEAT, "above": 50.0}))
    assert [(d["state"], d["threshold"]) for _, d in changed] == [("cleared", 40.0)]


def test_a_corrupt_alarms_file_is_set_aside(tmp_path: Path) -> None:
    (tmp_path / ALARMS_FILE).write_text("{not json")
    rig = Rig(tmp_path)
    assert not (tmp_path / ALARMS_FILE).exists()
    assert len(list(tmp_path.glob(f"{ALARMS_FILE}.corrupt-*"))) == 1
    asyncio.run(rig.book.sync(config(OVERHEAT)))
    assert json.loads((tmp_path / ALARMS_FILE).read_text())["alarms"][0]["raised"] is False


def test_the_steady_state_allocates_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    asyncio.run(rig.book.sync(config(OVERHEAT, DAMP)))
    alarms = rig.book.sensor("cabinet")
    pool: Pool[Record] = Pool(Record, 1)
    record = pool.acquire()
    record.values.update(temperature_c=45.0, humidity_rh=50.0)
    alarms.process(record, pool)  # raised: its document is made
    times = [float(ts) for ts in range(10_000)]
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for ts in times:
            record.ts = ts
            alarms.process(record, pool)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A float or two in flight, or parked on CPython's float free list: nothing that
    # grows with the readings.
    assert current - start <= 64
    assert peak - start <= 256
