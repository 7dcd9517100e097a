"""The running sensors, changed one by one when the configuration changes.

Each sensor is a unit: its pipeline, its sampler and their two tasks (the sampler, the
pipeline's batch timer), children of the daemon's TaskGroup and owned here: ``stop`` cancels
and awaits them, then flushes the pipeline, so nothing a sensor read is lost. ``reconcile``
compares the new sensor list with the running one: a sensor that is unchanged keeps running
(and its ``seq``), one whose only change is its alarms keeps running too (their states are
the alarm book's), one whose only change is its pipeline gets the new stages from its next
reading, and any other change stops the old unit and starts a new one. Health records and
the emulated hardware outlive units, so a restarted sensor keeps its history.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from gateway.config.models import Sensor
from gateway.pipeline.core import Pipeline, build_steps
from gateway.sampling.health import SensorHealth
from gateway.sampling.sampler import Sampler, policy
from gateway.sampling.sensors import SerialPorts
from gateway.sampling.simbench import SimBench

log = structlog.get_logger(__name__)

PipelineFactory = Callable[[Sensor], Pipeline]


@dataclass
class Unit:
    config: Sensor
    pipeline: Pipeline
    sampler: Sampler
    tasks: tuple[asyncio.Task[None], asyncio.Task[None]]


def _same_but(a: Sensor, b: Sensor, ignored: set[str]) -> bool:
    return a.model_dump(exclude=ignored) == b.model_dump(exclude=ignored)


class RunningSensors:
    def __init__(
        self,
        group: asyncio.TaskGroup,
        bench: SimBench,
        health: dict[str, SensorHealth],
    ) -> None:
        self._group = group
        self._bench = bench
        self._health = health
        self._ports = SerialPorts()
        self.units: dict[str, Unit] = {}

    def tasks(self) -> list[asyncio.Task[None]]:
        return [unit.tasks[0] for unit in self.units.values()]

    def samplers(self) -> list[Sampler]:
        return [unit.sampler for unit in self.units.values()]

    def pipelines(self) -> list[Pipeline]:
        return [unit.pipeline for unit in self.units.values()]

    async def reconcile(
        self, sensors: list[Sensor], make_pipeline: PipelineFactory, restart_all: bool = False
    ) -> list[Sampler]:
        """Bring the running units to ``sensors``; returns the samplers started anew.
        ``restart_all``: something every pipeline depends on changed (topic, QoS)."""
        wanted = {sensor.name: sensor for sensor in sensors}
        for name in [n for n in self.units if n not in wanted]:
            await self.stop(name)
            del self._health[name]
            log.info("sensor.removed", sensor=name)
        self._bench.update(sensors)
        started = []
        for sensor in sensors:
            unit = self.units.get(sensor.name)
            if unit is not None and not restart_all:
                if unit.config == sensor:
                    continue
                if _same_but(unit.config, sensor, {"alarms"}):
                    # The alarm book has them already (``AlarmBook.sync``): the pipeline
                    # evaluates the new ones from its next reading.
                    unit.config = sensor
                    continue
                if _same_but(unit.config, sensor, {"pipeline", "sim"}):
                    steps = build_steps(sensor.pipeline)
                    if steps.takes_samples == unit.pipeline.takes_samples:
                        await unit.pipeline.retune(steps)
                        unit.config = sensor
                        log.info("sensor.pipeline_changed", sensor=sensor.name)
                        continue
            if unit is not None:
                await self.stop(sensor.name)
            started.append(self._start(sensor, make_pipeline(sensor)))
        # Keep the configured order: figures and the status line list sensors as written.
        self.units = {name: self.units[name] for name in wanted}
        return started

    def _start(self, sensor: Sensor, pipeline: Pipeline) -> Sampler:
        health = self._health.get(sensor.name)
        if health is None or health.policy != policy(sensor):
            health = self._health[sensor.name] = SensorHealth(policy(sensor),
                                                              started_at=time.time())
        sampler = Sampler(sensor, pipeline, self._ports, self._bench, health)
        tasks = (
            self._group.create_task(sampler.run(), name=f"sampler:{sensor.name}"),
            self._group.create_task(pipeline.run(), name=f"pipeline:{sensor.name}"),
        )
        self.units[sensor.name] = Unit(sensor, pipeline, sampler, tasks)
        return sampler

    async def stop(self, name: str) -> None:
        unit = self.units.pop(name)
        sampling, timer = unit.tasks
        sampling.cancel()
        await asyncio.wait([sampling])
        await unit.pipeline.flush()
        timer.cancel()
        await asyncio.wait([timer])

    async def stop_all(self) -> None:
        for name in list(self.units):
            await self.stop(name)
