"""One task per sensor: read it every ``interval_s`` and feed its pipeline.

The driver blocks (I2C transfers, serial timeouts, conversion waits), so each sensor
has one worker thread of its own: a slow sensor delays only itself, and a read and
the final close never run at the same time.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog

from drivers.errors import DriverError
from gateway.config import Sensor
from gateway.pipeline import Pipeline
from gateway.sensors import OpenSensor, open_sensor

log = structlog.get_logger(__name__)

T = TypeVar("T")


class Sampler:
    def __init__(self, config: Sensor, pipeline: Pipeline) -> None:
        self.config = config
        self._pipeline = pipeline
        self.errors = 0
        self.last_ok_ts: float | None = None

    async def run(self) -> None:
        executor = ThreadPoolExecutor(1, thread_name_prefix=f"sensor-{self.config.name}")
        loop = asyncio.get_running_loop()
        sensor: OpenSensor | None = None

        async def blocking(fn: Any, *args: Any) -> Any:
            return await loop.run_in_executor(executor, fn, *args)

        try:
            deadline = loop.time()
            while True:
                if sensor is None:
                    sensor = await self._open(blocking)
                if sensor is not None:
                    await self._sample(sensor, blocking)
                deadline += self.config.interval_s
                # After a stall (a suspended Pi, a slow bus) skip the missed slots
                # rather than reading in a burst to catch up.
                deadline = max(deadline, loop.time())
                await asyncio.sleep(deadline - loop.time())
        finally:
            if sensor is not None:
                # Queued behind any read still running, so the bus is closed after it.
                close = loop.run_in_executor(executor, sensor.close)
                await asyncio.shield(close)
            executor.shutdown(wait=True)

    async def _open(self, blocking: Any) -> OpenSensor | None:
        try:
            sensor: OpenSensor = await blocking(open_sensor, self.config)
        except DriverError as exc:
            self.errors += 1
            log.warning("sensor.open_failed", sensor=self.config.name, error=str(exc))
            return None
        log.info("sensor.opened", sensor=self.config.name, driver=self.config.driver)
        return sensor

    async def _sample(self, sensor: OpenSensor, blocking: Any) -> None:
        try:
            values: dict[str, float] = await blocking(sensor.read)
        except DriverError as exc:
            self.errors += 1
            log.warning("sensor.read_failed", sensor=self.config.name, error=str(exc))
            return
        except Exception:
            # A driver bug must cost one sensor a reading, not the daemon its life.
            self.errors += 1
            log.exception("sensor.read_crashed", sensor=self.config.name)
            return
        self.last_ok_ts = time.time()
        await self._pipeline.push(self.last_ok_ts, values)
