"""Per-sensor processing between the sampler and the queue.

Readings enter as dicts (``push``) or, for a vibration stage, as bursts of raw samples
(``push_samples``); they are copied into pooled records, run through the configured
stages in order and leave as encoded telemetry messages, one ``seq`` per message, to the
queue. ``Steps`` is the synchronous core; ``Pipeline`` adds the sequence numbers, the
queue and the timer that sends a batch when no reading comes to close it.

A stage that raises costs the reading it was processing, which goes back to the pool;
the failure is counted and logged and the pipeline carries on.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gateway.config import stages as cfg
from gateway.logthrottle import LogThrottle
from gateway.pipeline import codec, stages
from gateway.pipeline.alarms import SensorAlarms
from gateway.pipeline.anomaly_stage import Anomaly
from gateway.pipeline.batch import Batch
from gateway.pipeline.pool import Pool, PoolStats, Record
from gateway.pipeline.seq import SeqStore
from gateway.pipeline.vibration_stage import Vibration
from gateway.statefile import write_atomic
from gateway.uplink.queue import Message, MessageQueue

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

log = structlog.get_logger(__name__)

STAGES: dict[str, Callable[[Any], stages.Step]] = {
    "calibrate": stages.Calibrate,
    "range": stages.Range,
    "median": stages.Median,
    "ema": stages.Ema,
    "deadband": stages.Deadband,
    "average": stages.Average,
    "downsample": stages.Downsample,
    "vibration": Vibration,
}
"""Every configurable stage but ``batch``, which ends the chain (``gateway.batch``), and
``anomaly``, which is built on the vibration stage before it."""

# Records in flight besides those stages and the batch keep: the one being processed,
# and one more for a flush that builds a record (``average``).
IN_FLIGHT = 2

# Under state_dir: each anomaly stage's learned baseline, by sensor.
ANOMALY_DIR = "anomaly"


class Steps:
    """A sensor's stages, the pool of their records and the encoded messages they made."""

    def __init__(self, chain: list[stages.Step], batch: cfg.Batch | None) -> None:
        self._stages = chain
        self._vibration = chain[0] if chain and isinstance(chain[0], Vibration) else None
        self.anomaly = next((s for s in chain if isinstance(s, Anomaly)), None)
        self._after_vibration = chain[1:]
        max_readings = batch.max_readings if batch else 1
        self.pool = Pool(Record, max_readings + IN_FLIGHT + sum(s.holds for s in chain))
        # Without a batch stage every reading is its own message, sent at once.
        self.batch = Batch(max_readings, batch.max_delay_s if batch else math.inf, self.pool,
                           self._encode)
        self._encoder = codec.ReadingsEncoder()
        self.outbox: deque[bytes] = deque()
        # (stage, exception) per failure since the owner last looked.
        self.failures: list[tuple[str, Exception]] = []
        # Readings that entered the stages: pushed ones and those made from sample windows.
        self.readings = 0
        self.failed = 0

    @property
    def takes_samples(self) -> bool:
        return self._vibration is not None

    def watch(self, alarms: stages.Step) -> None:
        """Evaluate ``alarms`` on every reading as it leaves the stages that clean values:
        before the first ``deadband`` (and the batch), which must not delay or hide one."""
        chain = self._stages
        at = next((i for i, s in enumerate(chain) if isinstance(s, stages.Deadband)),
                  len(chain))
        chain.insert(at, alarms)
        self._after_vibration = chain[1:]

    @property
    def windows_discarded(self) -> int:
        return self._vibration.discarded if self._vibration else 0

    def push(self, ts: float, values: Mapping[str, float]) -> None:
        self.readings += 1
        record = self.pool.acquire()
        record.ts = ts
        target = record.values
        isfinite = math.isfinite
        try:
            for quantity, value in values.items():
                number = float(value)
                # JSON has no NaN or infinity: a driver's non-finite value is no value.
                if isfinite(number):
                    target[quantity] = number
        except (TypeError, ValueError) as exc:
            self._failed("input", exc)
            self.pool.release(record)
            return
        if not target:
            self.pool.release(record)
            return
        self._run(record, self._stages)

    def push_samples(self, ts_end: float, samples: ArrayLike, rate_hz: float,
                     overflow: bool) -> None:
        vibration = self._vibration
        if vibration is None:
            raise TypeError("raw samples need a vibration stage first in the pipeline")
        if overflow:
            vibration.restart()
        try:
            vibration.feed(ts_end, samples, rate_hz, self.pool,
                           self._continue_after_vibration)
        except Exception as exc:
            self._failed(vibration.name, exc)
            vibration.restart()

    def _continue_after_vibration(self, record: Record) -> None:
        self.readings += 1
        self._run(record, self._after_vibration)

    def _run(self, record: Record, chain: list[stages.Step]) -> None:
        pool = self.pool
        for stage in chain:
            try:
                passed = stage.process(record, pool)
            except Exception as exc:
                self._failed(stage.name, exc)
                pool.release(record)
                return
            if passed is None:
                return
            record = passed
        self.batch.add(record)

    def flush(self) -> None:
        """Send what the stages and the batch hold back."""
        for index, stage in enumerate(self._stages):
            record = stage.flush(self.pool)
            if record is not None:
                self._run(record, self._stages[index + 1 :])
        self.batch.flush()

    def _encode(self, records: list[Record]) -> None:
        try:
            self.outbox.append(self._encoder.encode(records))
        except Exception as exc:
            self._failed("encode", exc)

    def _failed(self, stage: str, exc: Exception) -> None:
        self.failed += 1
        self.failures.append((stage, exc))


def build_steps(configs: Sequence[cfg.Stage]) -> Steps:
    """The stages of ``sensors[].pipeline``, in order; ``batch`` ends the chain."""
    cfg.check_order(list(configs))
    chain: list[stages.Step] = []
    for c in configs:
        if isinstance(c, cfg.Anomaly):
            # Right after the vibration stage (check_order), whose spectra it reads.
            vibration = chain[0]
            assert isinstance(vibration, Vibration)
            chain.append(Anomaly(c, vibration))
        elif not isinstance(c, cfg.Batch):
            chain.append(STAGES[c.stage](c))
    batch = next((c for c in configs if isinstance(c, cfg.Batch)), None)
    return Steps(chain, batch)


@dataclass(frozen=True, slots=True)
class PipelineStats:
    readings: int
    messages: int
    # Failures of a stage, the encoder or the sequence store, each costing a reading or
    # (encoder, sequence store) a message.
    failed: int
    # Vibration windows abandoned after a gap in the sample stream.
    windows_discarded: int
    queue_dropped: int
    pool: PoolStats


class Pipeline:
    def __init__(
        self,
        device: str,
        sensor: str,
        steps: Steps,
        topic: str,
        qos: int,
        seqs: SeqStore,
        queue: MessageQueue,
        clock: Callable[[], float] = time.time,
        alarms: SensorAlarms | None = None,
        state_dir: Path | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sensor = sensor
        # Where stages keep what must outlive the process (an anomaly baseline).
        self._state_dir = state_dir
        self._alarms = alarms
        if alarms is not None:
            steps.watch(alarms)
        self._bind(steps)
        self._steps = steps
        self._topic = topic
        self._qos = qos
        self._seqs = seqs
        self._queue = queue
        self._clock = clock
        self._head = codec.telemetry_head(device, sensor)
        self._sending = asyncio.Lock()
        # Set when a batch opens, for ``run`` to wait on its deadline.
        self._batch_open = asyncio.Event()
        self._timer_armed = False
        self._failure_log = LogThrottle(clock=monotonic)
        self.messages = 0

    @property
    def takes_samples(self) -> bool:
        """Whether the sampler should stream raw samples (``push_samples``)."""
        return self._steps.takes_samples

    async def push(self, ts: float, values: Mapping[str, float]) -> None:
        """One reading of scalar quantities taken at ``ts`` (Unix seconds)."""
        steps = self._steps
        steps.push(ts, values)
        if steps.outbox or steps.failures or (self._alarms and self._alarms.unsaved):
            await self._send()
        if steps.batch.records and not self._timer_armed:
            self._arm_timer()

    async def push_samples(self, ts_end: float, samples: ArrayLike, rate_hz: float,
                           overflow: bool = False) -> None:
        """A burst of accelerometer samples in g, oldest first, ``1 / rate_hz`` apart, the
        last taken at ``ts_end``: a flat buffer interleaving x, y, z (the ADXL345 driver's
        ``FifoBatch.samples``) or a sequence of (x, y, z). ``overflow``: samples were lost
        before this burst, so the window in progress is abandoned."""
        steps = self._steps
        anomaly = steps.anomaly
        if anomaly is not None and anomaly.io_due:
            await self._anomaly_io(anomaly)
            steps = self._steps
        steps.push_samples(ts_end, samples, rate_hz, overflow)
        if anomaly is not None and anomaly.io_due:
            await self._anomaly_io(anomaly)
        await self._send()
        if steps.batch.records and not self._timer_armed:
            self._arm_timer()

    async def flush(self) -> None:
        """Send what the stages hold back: before a shutdown or a reload. On return every
        message made so far is in the queue."""
        self._steps.flush()
        await self._send()

    async def retune(self, steps: Steps) -> None:
        """New stages from the next reading on (a config change). What the old stages hold
        back goes out first, and no reading can slip into them meanwhile: the swap is done
        before the first await."""
        old = self._steps
        old.flush()
        if self._alarms is not None:
            steps.watch(self._alarms)
        self._bind(steps)
        if steps.anomaly is not None and old.anomaly is not None:
            steps.anomaly.adopt(old.anomaly)
        steps.outbox.extend(old.outbox)
        steps.failures.extend(old.failures)
        steps.readings += old.readings
        steps.failed += old.failed
        self._steps = steps
        await self._send()

    async def run(self) -> None:
        """Send a batch whose ``max_delay_s`` has passed while no reading came: a task
        beside the sampler, cancelled with it."""
        while True:
            batch = self._steps.batch  # ``retune`` may have replaced it
            deadline = batch.deadline()
            if deadline is None:
                self._timer_armed = False
                self._batch_open.clear()
                await self._batch_open.wait()
                continue
            # At most one delay at a time, so a wall clock stepped back cannot hold a
            # batch for as long as the step.
            await asyncio.sleep(max(0.0, min(deadline - self._clock(), batch.max_delay_s)))
            batch.expire(self._clock())
            await self._send()

    def stats(self) -> PipelineStats:
        steps = self._steps
        return PipelineStats(
            readings=steps.readings,
            messages=self.messages,
            failed=steps.failed,
            windows_discarded=steps.windows_discarded,
            queue_dropped=self._queue.dropped[self.sensor],
            pool=steps.pool.stats(),
        )

    async def _send(self) -> None:
        steps = self._steps
        if steps.failures:
            self._log_failures()
        if self._alarms is not None and self._alarms.unsaved:
            await self._alarms.save()
        outbox = steps.outbox
        if outbox:
            # Messages take their seq in the order they were made, also when the sampler
            # and the timer both have some to send.
            async with self._sending:
                while outbox:
                    readings = outbox.popleft()
                    try:
                        seq = await self._seqs.next(self.sensor)
                    except OSError as exc:
                        # Without a persisted seq a restart could repeat the number.
                        steps.failed += 1
                        log.error("pipeline.seq_failed", sensor=self.sensor, error=str(exc))
                        continue
                    except asyncio.CancelledError:
                        # Kept for the flush that follows a cancelled sampler.
                        outbox.appendleft(readings)
                        raise
                    payload = codec.telemetry_message(self._head, seq, readings)
                    self._queue.put(Message(self._topic, payload, self._qos, self.sensor))
                    self.messages += 1

    def _log_failures(self) -> None:
        # A stage that fails on every reading of a fast sensor would flood the journal
        # (and wear the SD card): one line per stage per interval, with the count of
        # failures left unlogged since the last line.
        for stage, exc in self._steps.failures:
            extra = self._failure_log.admit(stage)
            if extra is None:
                continue
            log.warning("pipeline.stage_failed", sensor=self.sensor, stage=stage,
                        error=repr(exc), **extra)
        self._steps.failures.clear()

    async def _anomaly_io(self, anomaly: Anomaly) -> None:
        """Read the anomaly stage's baseline before its first window, write it once
        learned: in a worker thread."""
        if anomaly.needs_load:
            await asyncio.to_thread(anomaly.load)
        unsaved, path = anomaly.take_unsaved(), anomaly.path
        if unsaved is not None and path is not None:
            try:
                await asyncio.to_thread(write_atomic, path, unsaved)
            except OSError as exc:
                log.error("anomaly.save_failed", sensor=self.sensor, error=str(exc))

    def _bind(self, steps: Steps) -> None:
        if steps.anomaly is not None and self._state_dir is not None:
            steps.anomaly.bind(self._state_dir / ANOMALY_DIR / f"{self.sensor}.json")

    def _arm_timer(self) -> None:
        self._timer_armed = True
        self._batch_open.set()
