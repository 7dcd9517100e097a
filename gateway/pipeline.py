"""Per-sensor preprocessing between the sampler and the queue.

A sensor's stages run in configured order over each reading; what survives is encoded
as one telemetry message with the sensor's next ``seq`` and handed to the queue.
"""

from __future__ import annotations

import math
from typing import Protocol

import structlog

from gateway import codec
from gateway.queue import Message, MessageQueue
from gateway.seq import SeqStore
from gateway.stage_config import Calibrate, Stage

log = structlog.get_logger(__name__)

Values = dict[str, float]


class Step(Protocol):
    def process(self, values: Values) -> Values | None:
        """The transformed reading, or None to drop it."""


class CalibrateStep:
    def __init__(self, config: Calibrate) -> None:
        self._offset = config.offset
        self._scale = config.scale

    def process(self, values: Values) -> Values:
        for quantity, value in values.items():
            values[quantity] = value * self._scale.get(quantity, 1.0) + self._offset.get(
                quantity, 0.0
            )
        return values


STEPS: dict[str, type[CalibrateStep]] = {"calibrate": CalibrateStep}


def build_steps(stages: list[Stage]) -> list[Step]:
    return [STEPS[stage.stage](stage) for stage in stages]


class Pipeline:
    def __init__(
        self,
        device: str,
        sensor: str,
        steps: list[Step],
        topic: str,
        qos: int,
        seqs: SeqStore,
        queue: MessageQueue,
    ) -> None:
        self.device = device
        self.sensor = sensor
        self._steps = steps
        self._topic = topic
        self._qos = qos
        self._seqs = seqs
        self._queue = queue

    async def push(self, ts: float, values: Values) -> None:
        result = values
        for step in self._steps:
            processed = step.process(result)
            if processed is None:
                return
            result = processed
        # JSON has no NaN or infinity; a quantity that a stage made non-finite is dropped
        # rather than failing the whole reading.
        reading = {"ts": ts, **{q: v for q, v in result.items() if math.isfinite(v)}}
        seq = await self._seqs.next(self.sensor)
        payload = codec.telemetry(self.device, self.sensor, seq, [reading])
        self._queue.put(Message(self._topic, payload, self._qos, self.sensor))
