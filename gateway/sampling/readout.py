"""``edge-gateway read``: sensors read on demand through the daemon's own drivers and
pipelines, printed instead of published. Nothing touches the device's state: sequence
numbers come from a throwaway store, the broker is not contacted.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from drivers.errors import DriverError
from gateway.config.models import Config, QueueConfig, Sensor
from gateway.pipeline.core import Pipeline, build_steps
from gateway.pipeline.seq import SeqStore
from gateway.sampling.sensors import OpenSensor, SerialPorts, open_sensor
from gateway.sampling.simbench import SimBench
from gateway.uplink.queue import MessageQueue

# A streaming sensor's first message waits for a full vibration window; give up after this
# many windows' worth of time.
STREAM_PATIENCE = 3


async def _inline(fn: Callable[[], None]) -> None:
    fn()


def _format(payload: bytes) -> list[str]:
    message = json.loads(payload)
    lines = []
    for reading in message["readings"]:
        stamp = time.strftime("%H:%M:%S", time.localtime(reading.pop("ts")))
        values = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in reading.items()
        )
        lines.append(f"{message['sensor']:<12} {stamp}  {values}")
    return lines


async def _read_one(sensor: Sensor, pipeline: Pipeline, opened: OpenSensor, count: int) -> None:
    if pipeline.takes_samples and opened.read_fifo is not None:
        read_fifo = opened.read_fifo
        windows = sum(getattr(s, "window_s", 0.0) for s in sensor.pipeline) or 1.0
        deadline = time.monotonic() + count * windows * STREAM_PATIENCE + sensor.interval_s
        while pipeline.messages < count and time.monotonic() < deadline:
            batch = await asyncio.to_thread(read_fifo)
            await pipeline.push_samples(time.time(), batch.samples, batch.rate_hz,
                                        batch.overflow)
            await asyncio.sleep(sensor.interval_s)
        return
    for index in range(count):
        if index:
            await asyncio.sleep(sensor.interval_s)
        values = await asyncio.to_thread(opened.read)
        await pipeline.push(time.time(), values)


async def read(config: Config, names: list[str], count: int, as_json: bool,
               out: TextIO, err: TextIO) -> bool:
    """Read each named sensor ``count`` times; False if any of them failed."""
    queue = MessageQueue(QueueConfig(memory_max_messages=1_000_000,
                                     memory_max_bytes=1 << 30))
    bench, ports = SimBench(), SerialPorts()
    with tempfile.TemporaryDirectory(prefix="edge-gateway-read-") as scratch:
        seqs = SeqStore(Path(scratch) / "seq.json", _inline)
        seqs.load()

        async def read_sensor(sensor: Sensor) -> bool:
            pipeline = Pipeline(config.device_id, sensor.name, build_steps(sensor.pipeline),
                                sensor.name, 0, seqs, queue)
            try:
                opened = await asyncio.to_thread(open_sensor, sensor, ports, bench)
                try:
                    await _read_one(sensor, pipeline, opened, count)
                finally:
                    await asyncio.to_thread(opened.close)
            except DriverError as exc:
                print(f"{sensor.name}: {exc}", file=err)
                return False
            finally:
                await pipeline.flush()
            return True

        try:
            # Sensors are read side by side, as the daemon reads them.
            results = await asyncio.gather(
                *(read_sensor(s) for s in config.sensors if s.name in names)
            )
        finally:
            await asyncio.to_thread(bench.close)
    ok = all(results)
    by_sensor: dict[str, list[str]] = {name: [] for name in names}
    while queue.depth:
        message = await queue.take()
        queue.ack(message)
        lines = [message.payload.decode()] if as_json else _format(message.payload)
        by_sensor[message.sensor] += lines
    for lines in by_sensor.values():
        for line in lines:
            print(line, file=out)
    return ok
