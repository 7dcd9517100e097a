"""The daemon's running parts, changed to a config part by part, never all at once.

``change`` changes only what differs: sensors added, removed or changed are started and
stopped one by one (the others keep sampling), a pipeline change takes effect on the next
reading, an ``mqtt`` change reconnects the uplink, queue bounds resize, the log level
changes live, the heartbeat follows its interval, the config topics and the firmware
channel are routed anew, Home Assistant's discovery messages follow the sensors. With a
timeout it waits that long for new sensors to give a first good reading and new broker
settings to connect, and names what did not: the reconfigurer then puts the previous config
back. The parts hold no config: the reconfigurer owns it and hands it in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway import __version__, wire
from gateway.config.models import Config, Sensor
from gateway.daemon.firmware_host import FirmwareHost
from gateway.daemon.status import Status
from gateway.daemon.tasks import Tasks
from gateway.pipeline.alarms import AlarmBook
from gateway.pipeline.core import Pipeline, build_steps
from gateway.pipeline.seq import SeqStore
from gateway.remote.decide import config_topics
from gateway.sampling.running import RunningSensors
from gateway.service import heartbeat
from gateway.service import log as logsetup
from gateway.statefile import Offload
from gateway.trust.keys import Keyring
from gateway.uplink.inbox import Inbox
from gateway.uplink.queue import MessageQueue
from gateway.uplink.supervisor import Uplink

if TYPE_CHECKING:
    from gateway.service.home_assistant import HomeAssistant

# Under state_dir: the Home Assistant discovery topics published, to clear after a restart.
HOME_ASSISTANT_STATE = "home_assistant.json"


def _largest_incoming(config: Config) -> int:
    """The largest payload any inbox keeps: a config envelope or, with trusted keys (the
    firmware task runs only with them), a firmware manifest. Home Assistant's birth is far
    smaller than either; the broker drops anything larger (MQTT 5)."""
    largest = config.remote_config.max_envelope_bytes
    if not config.remote_config.trusted_keys:
        return largest
    from gateway.firmware.updater import MANIFEST_MAX_BYTES  # loaded with firmware on anyway

    return max(largest, MANIFEST_MAX_BYTES)


class Parts:
    def __init__(self, tasks: Tasks, queue: MessageQueue, uplink: Uplink, inbox: Inbox,
                 seqs: SeqStore, alarms: AlarmBook, sensors: RunningSensors, firmware: FirmwareHost,
                 status: Status, offload: Offload) -> None:
        self._tasks = tasks
        self._queue = queue
        self._uplink = uplink
        self._inbox = inbox
        self._seqs = seqs
        self._alarms = alarms
        self.sensors = sensors
        self._firmware = firmware
        self._status = status
        self._offload = offload
        self._routes: dict[str, str] = {}
        # Set up the first time discovery is on, or at start to clear an earlier run's.
        self.home_assistant: HomeAssistant | None = None

    async def stop_sampling(self) -> None:
        """Every sensor stopped and its pipeline flushed, then each sensor's next seq
        recorded: the next start continues with +1."""
        await self.sensors.stop_all()
        await self._seqs.close()

    async def start(self, config: Config, keyring: Keyring) -> None:
        self._route(config)
        await self._discover(config)
        await self._firmware.sync(config, keyring)
        self._start_heartbeat(config)
        await self._alarms.sync(config)
        await self.sensors.reconcile(config.sensors, self._pipeline_factory(config))

    async def change(self, old: Config, new: Config, keyring: Keyring,
                     timeout_s: float | None) -> str | None:
        if new.logging != old.logging:
            logsetup.configure(new.logging.level, new.logging.format)
        if new.queue != old.queue:
            self._queue.resize(new.queue)
        mqtt_changed = new.mqtt != old.mqtt
        if mqtt_changed:
            self._uplink.reconfigure(new.mqtt)
        if new.groups != old.groups:
            self._uplink.regroup(tuple(new.groups))
        restart_all = (new.mqtt.topic_prefix, new.mqtt.qos) != (old.mqtt.topic_prefix,
                                                                old.mqtt.qos)
        # Before the sensors: a rebuilt pipeline takes its alarms from the book as changed.
        await self._alarms.sync(new)
        started = await self.sensors.reconcile(new.sensors, self._pipeline_factory(new),
                                               restart_all)
        if new.heartbeat != old.heartbeat:
            await self._tasks.stop("heartbeat")
            self._start_heartbeat(new)
        self._route(new)
        await self._discover(new)
        await self._firmware.sync(new, keyring)
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

    def _start_heartbeat(self, config: Config) -> None:
        self._tasks.start("heartbeat", heartbeat.beat(config.heartbeat.interval_s,
                                                      self._status.send_heartbeat))

    def _pipeline_factory(self, config: Config) -> Callable[[Sensor], Pipeline]:
        prefix = config.mqtt.topic_prefix

        def make(sensor: Sensor) -> Pipeline:
            topic = wire.telemetry_topic(prefix, config.device_id, sensor.name)
            return Pipeline(config.device_id, sensor.name, build_steps(sensor.pipeline),
                            topic, config.mqtt.qos,
                            self._seqs, self._queue, alarms=self._alarms.sensor(sensor.name),
                            state_dir=config.state_dir)

        return make

    def _route(self, config: Config) -> None:
        """Subscribe to the config topics of the running config (none without trusted
        keys: nothing could be verified)."""
        wanted = config_topics(config) if config.remote_config.trusted_keys else {}
        for topic in set(self._routes) - set(wanted):
            self._uplink.unroute(topic)
        for topic in set(wanted) - set(self._routes):
            self._uplink.route(topic, self._inbox)
        self._routes = wanted
        self._uplink.limit_incoming(_largest_incoming(config))

    async def _discover(self, config: Config) -> None:
        """Home Assistant discovery follows the config."""
        if self.home_assistant is None:
            state_file = config.state_dir / HOME_ASSISTANT_STATE
            if not (config.home_assistant.enabled or await asyncio.to_thread(state_file.exists)):
                return
            # Imported only where it is used, like every optional feature.
            from gateway.service.home_assistant import HomeAssistant

            self.home_assistant = HomeAssistant(self._uplink, state_file, __version__,
                                                self._offload)
            await asyncio.to_thread(self.home_assistant.load)
            self._tasks.start("home-assistant", self.home_assistant.run())
        await self.home_assistant.configure(config)
