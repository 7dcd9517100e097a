"""One task per sensor: read it every ``interval_s``, keep its health, feed its pipeline.

The driver blocks (I2C transfers, serial timeouts, conversion waits), so each sensor
has one worker thread of its own: a slow sensor delays only itself, and a read and
the close never run at the same time. A sensor that has failed is closed and opened
again with exponential backoff until it answers; nothing it does reaches the others.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from drivers.errors import DriverError
from gateway.config.models import Sensor
from gateway.logthrottle import LogThrottle
from gateway.pipeline.core import Pipeline
from gateway.sampling.health import HealthPolicy, SensorHealth, State
from gateway.sampling.sensors import OpenSensor, SerialPorts, open_sensor
from gateway.sampling.simbench import SimBench

if TYPE_CHECKING:
    from drivers.adxl345 import FifoBatch

log = structlog.get_logger(__name__)

T = TypeVar("T")


def policy(config: Sensor) -> HealthPolicy:
    health = config.health
    return HealthPolicy(
        degrade_after=health.degrade_after_errors,
        fail_after=health.fail_after_errors,
        stale_after_s=health.stale_after_intervals * config.interval_s,
        retry_initial_s=config.interval_s,
        retry_max_s=health.retry_max_s,
    )


class Sampler:
    def __init__(
        self,
        config: Sensor,
        pipeline: Pipeline,
        ports: SerialPorts,
        bench: SimBench,
        health: SensorHealth,
    ) -> None:
        self.config = config
        self.health = health
        self._pipeline = pipeline
        self._ports = ports
        self._bench = bench
        # An accelerometer feeding a vibration stage is drained in FIFO bursts; without
        # one it is read like any other sensor, one sample per interval.
        self._streams = pipeline.takes_samples
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"sensor-{config.name}")
        self.overruns = 0
        self._overrun_log = LogThrottle()
        # Set once the sensor has been opened, or has failed to open, for the first time;
        # and once it has given its first good reading.
        self.first_attempt = asyncio.Event()
        self.first_reading = asyncio.Event()

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        sensor: OpenSensor | None = None
        try:
            deadline = loop.time()
            while True:
                if sensor is None:
                    sensor = await self._open()
                    self.first_attempt.set()
                if sensor is not None:
                    await self._sample(sensor)
                if self.health.state(time.time()) is State.FAILED:
                    if sensor is not None:
                        await self._blocking(sensor.close)
                        sensor = None
                    delay = self.health.reopen_delay()
                    log.warning("sensor.failed", sensor=self.config.name,
                                error=self.health.last_error, retry_in_s=round(delay, 3))
                    await asyncio.sleep(delay)
                    deadline = loop.time()
                    continue
                deadline += self.config.interval_s
                # After a stall (a suspended Pi, a slow bus) skip the missed slots
                # rather than reading in a burst to catch up.
                deadline = max(deadline, loop.time())
                await asyncio.sleep(deadline - loop.time())
        finally:
            if sensor is not None:
                # Queued behind any read still running, so the bus is closed after it.
                await asyncio.shield(self._blocking(sensor.close))
            self._executor.shutdown(wait=True)

    async def _open(self) -> OpenSensor | None:
        try:
            sensor = await self._blocking(open_sensor, self.config, self._ports, self._bench)
        except DriverError as exc:
            self.health.failed(str(exc))
            log.warning("sensor.open_failed", sensor=self.config.name, error=str(exc))
            return None
        log.info("sensor.opened", sensor=self.config.name, driver=self.config.driver)
        return sensor

    async def _sample(self, sensor: OpenSensor) -> None:
        fifo = sensor.read_fifo if self._streams else None
        try:
            if fifo is not None:
                batch = await self._blocking(fifo)
            else:
                values = await self._blocking(sensor.read)
        except DriverError as exc:
            self._failed(str(exc))
            return
        except Exception as exc:
            # A driver bug must cost one sensor a reading, not the daemon its life.
            log.exception("sensor.read_crashed", sensor=self.config.name)
            self._failed(f"{type(exc).__name__}: {exc}")
            return
        ts = time.time()
        recovered = self.health.consecutive_errors > 0
        self.health.succeeded(ts)
        self.first_reading.set()
        if recovered:
            log.info("sensor.recovered", sensor=self.config.name)
        if fifo is not None:
            await self._push_batch(ts, batch)
        else:
            await self._pipeline.push(ts, values)

    def _failed(self, error: str) -> None:
        self.health.failed(error)
        log.warning("sensor.read_failed", sensor=self.config.name, error=error,
                    consecutive=self.health.consecutive_errors)

    async def _push_batch(self, ts: float, batch: FifoBatch) -> None:
        if batch.overflow:
            # Samples may have been lost between two drains: the interval is too long
            # for the output data rate, or the Pi stalled. A line a minute at most: at
            # 3200 Hz this can happen many times a second.
            self.overruns += 1
            extra = self._overrun_log.admit("fifo_overrun")
            if extra is not None:
                log.warning("sensor.fifo_overrun", sensor=self.config.name,
                            overruns=self.overruns, **extra)
        await self._pipeline.push_samples(ts, batch.samples, batch.rate_hz, batch.overflow)
