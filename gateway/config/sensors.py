"""Sensor models, one per driver, with the rules that hold for a sensor as a whole.

A sensor is told apart by its ``driver`` key (a tagged union), and its bus settings are
those of its chip: an I2C bus and address, a serial port and Modbus unit, a generic
Modbus device's port or host and register map (``registers``), or a 1-Wire probe's id. Each model
says in ``problems`` what its fields get wrong together; an ADXL345's FIFO limits come
from its driver, the one place that knows the chip.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, PlainValidator

from gateway.config.alarms import Alarm
from gateway.config.fields import Interval, Problem, TopicName
from gateway.config.registers import ModbusRegister, register_problems
from gateway.config.section import Section
from gateway.config.stages import Anomaly, Stages, Vibration


class SimFaults(Section):
    """Fault injection for emulated sensors (``bus: sim`` / ``port: sim`` only)."""

    nack_rate: float = Field(0.0, ge=0, le=1)
    corrupt_crc_rate: float = Field(0.0, ge=0, le=1)
    no_answer_rate: float = Field(0.0, ge=0, le=1)
    unplugged: bool = False
    stuck: bool = False
    seed: int = 0


I2C_BUS_PATTERN = re.compile(r"^/dev/i2c-\d+$")


def check_i2c_bus(value: object) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and (value == "sim" or I2C_BUS_PATTERN.match(value)):
        return value
    raise ValueError("bus must be a bus number, a /dev/i2c-N path, or sim")


I2CBusName = Annotated[int | str, PlainValidator(check_i2c_bus)]


class VibrationTone(Section):
    axis: Literal["x", "y", "z"]
    freq_hz: float = Field(gt=0)
    amplitude_g: float = Field(ge=0)


class SimConfig(SimFaults):
    """An emulated chip: its faults and, for the ADXL345, what shakes it."""

    tones: list[VibrationTone] | None = None


class HealthConfig(Section):
    """When a sensor counts as degraded or failed, and how a failed one is retried."""

    degrade_after_errors: int = Field(3, ge=1)
    fail_after_errors: int = Field(10, ge=1)
    # No good reading for this many intervals degrades the sensor.
    stale_after_intervals: float = Field(3.0, gt=1)
    retry_max_s: Interval = 300.0


class SensorBase(Section):
    # The key that makes a sensor an emulator, named in the error when it does not.
    SIM_KEY: ClassVar[str]
    # Whether its emulator takes ``sim.tones`` (what shakes an accelerometer).
    SHAKES: ClassVar[bool] = False
    # Whether it streams raw samples into a vibration stage (what an anomaly stage needs).
    STREAMS: ClassVar[bool] = False

    name: TopicName
    interval_s: Interval
    pipeline: Stages = []
    health: HealthConfig = HealthConfig()
    sim: SimConfig | None = None
    alarms: list[Alarm] = []

    @property
    @abstractmethod
    def simulated(self) -> bool:
        """Whether the sensor is an emulator (``bus: sim`` / ``port: sim``)."""

    def problems(self) -> list[Problem]:
        """Rules that span its fields, located inside the sensor."""
        found: list[Problem] = []
        if self.sim is not None and not self.simulated:
            found.append((("sim",), f"emulator settings need {self.SIM_KEY}: sim"))
        if self.health.fail_after_errors < self.health.degrade_after_errors:
            found.append((("health", "fail_after_errors"),
                           "must be at least degrade_after_errors"))
        found += self.chip_problems()
        if self.sim and self.sim.tones is not None and not self.SHAKES:
            found.append((("sim", "tones"), "only an adxl345 has tones"))
        for index, stage in enumerate(self.pipeline):
            if isinstance(stage, Anomaly) and not self.STREAMS:
                found.append((("pipeline", index, "stage"),
                              "an anomaly stage needs the raw samples of an adxl345"))
        return found

    def chip_problems(self) -> list[Problem]:
        """What its chip cannot do with these settings."""
        return []


class I2CSensor(SensorBase):
    SIM_KEY = "bus"

    bus: I2CBusName
    address: int

    @property
    def simulated(self) -> bool:
        return self.bus == "sim"


class SHT3xSensor(I2CSensor):
    driver: Literal["sht3x"]
    address: Literal[0x44, 0x45] = 0x44
    repeatability: Literal["high", "medium", "low"] = "high"


Oversampling = Literal[1, 2, 4, 8, 16]


class BME280Sensor(I2CSensor):
    driver: Literal["bme280"]
    address: Literal[0x76, 0x77] = 0x76
    temperature_oversampling: Oversampling = 1
    pressure_oversampling: Oversampling = 1
    humidity_oversampling: Oversampling = 1
    iir_filter: Literal[0, 2, 4, 8, 16] = 0


# Fewer samples than this make a spectrum too coarse for the vibration features.
MIN_WINDOW_SAMPLES = 16


class ADXL345Sensor(I2CSensor):
    SHAKES = True
    STREAMS = True

    driver: Literal["adxl345"]
    address: Literal[0x53, 0x1D] = 0x53
    rate_hz: Literal[100, 200, 400, 800, 1600, 3200] = 100
    range_g: Literal[2, 4, 8, 16] = 16

    def chip_problems(self) -> list[Problem]:
        """With a vibration stage, samples come in FIFO bursts: enough for a window, and
        drained before the FIFO fills."""
        vibration = next((s for s in self.pipeline if isinstance(s, Vibration)), None)
        if vibration is None:
            return []
        # The driver's module loads smbus2: imported only for a file that has an ADXL345.
        from drivers.adxl345 import drain_problem

        found: list[Problem] = []
        samples = vibration.window_s * self.rate_hz
        if samples < MIN_WINDOW_SAMPLES:
            found.append((("pipeline", 0, "window_s"),
                          f"{samples:g} samples per window at {self.rate_hz} Hz; "
                          f"at least {MIN_WINDOW_SAMPLES} are needed"))
        problem = drain_problem(self.rate_hz, self.interval_s)
        if problem is not None:
            found.append((("interval_s",), problem))
        return found


# pyserial's URL handlers (serial.urlhandler.protocol_NAME) that need no extra package,
# named here so that validating a file does not import pyserial.
SERIAL_URL_SCHEMES = ("socket", "rfc2217", "loop", "spy", "alt", "hwgrep")
_NETWORK_SCHEMES = ("socket", "rfc2217")
PORT_FORMS = (
    "sim, an absolute path such as /dev/ttyUSB0, or a pyserial URL "
    "(socket://HOST:PORT, rfc2217://HOST:PORT, loop://)"
)


def _has_host_and_port(url: str) -> bool:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return False
    return bool(parts.hostname) and port is not None and parts.path in ("", "/")


def check_serial_port(value: object) -> str:
    """A device path anywhere (udev links, socat ptys, containers) or a pyserial URL, which
    reaches an RS-485 line through a TCP serial server; or ``sim``."""
    if isinstance(value, str):
        if value == "sim" or (value.startswith("/") and "\0" not in value):
            return value
        scheme, separator, rest = value.partition("://")
        scheme = scheme.lower()
        if separator and scheme in _NETWORK_SCHEMES:
            if _has_host_and_port(value):
                return value
            raise ValueError(f"expected {scheme}://HOST:PORT, not {value!r}")
        if separator and scheme in SERIAL_URL_SCHEMES and (rest or scheme == "loop"):
            return value
    raise ValueError(f"port must be {PORT_FORMS}, not {value!r}")


SerialPortName = Annotated[str, PlainValidator(check_serial_port)]
Baudrate = Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200]


class SerialSensor(SensorBase):
    SIM_KEY = "port"

    port: SerialPortName
    unit: int
    baudrate: Baudrate = 9600
    timeout_s: float = Field(0.5, gt=0, le=10)

    @property
    def simulated(self) -> bool:
        return self.port == "sim"


class XYMD02Sensor(SerialSensor):
    driver: Literal["xymd02"]
    unit: int = Field(1, ge=1, le=247)


class WTVB01Sensor(SerialSensor):
    driver: Literal["wtvb01"]
    unit: int = Field(0x50, ge=1, le=247)


HOST_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,253}")


def check_host(value: object) -> str:
    if isinstance(value, str) and HOST_PATTERN.fullmatch(value):
        return value
    raise ValueError(f"host must be a host name, an IP address or sim, not {value!r}")


# The settings only a serial line has, refused beside ``host``.
RTU_ONLY = ("baudrate", "parity", "stopbits")


class ModbusSensor(SensorBase):
    """Any Modbus device, by its register map: RTU on ``port`` or TCP at ``host``."""

    SIM_KEY = "port or host"

    driver: Literal["modbus"]
    port: SerialPortName | None = None
    host: Annotated[str, PlainValidator(check_host)] | None = None
    tcp_port: int = Field(502, ge=1, le=65535)
    # 1..247 on a serial line; a TCP device may answer as 0 or 255 as well.
    unit: int = Field(1, ge=0, le=255)
    baudrate: Baudrate = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    timeout_s: float = Field(0.5, gt=0, le=10)
    # The protocol's limit; some devices answer fewer registers per request.
    max_registers_per_request: int = Field(125, ge=1, le=125)
    registers: list[ModbusRegister] = Field(min_length=1)

    @property
    def simulated(self) -> bool:
        return "sim" in (self.port, self.host)

    def chip_problems(self) -> list[Problem]:
        found: list[Problem] = []
        if (self.port is None) == (self.host is None):
            found.append(((), "give port (Modbus RTU) or host (Modbus TCP), one of them"))
        elif self.host is not None:
            found += [((name,), "a serial line's setting: Modbus TCP has none")
                      for name in RTU_ONLY if name in self.model_fields_set]
        else:
            if "tcp_port" in self.model_fields_set:
                found.append((("tcp_port",), "Modbus TCP only: give host, not port"))
            if not 1 <= self.unit <= 247:
                found.append((("unit",), "a unit on a serial line is 1 to 247"))
        return found + register_problems(self.registers, self.max_registers_per_request)


def check_w1_root(value: object) -> str:
    if isinstance(value, str) and (value == "sim" or value.startswith("/")) and "\0" not in value:
        return value
    raise ValueError(f"w1_root must be an absolute path or sim, not {value!r}")


W1_ID_PATTERN = re.compile(r"28-[0-9a-f]{12}")


def check_w1_id(value: object) -> str:
    if isinstance(value, str) and (value == "auto" or W1_ID_PATTERN.fullmatch(value)):
        return value
    raise ValueError(f"id must be auto or a DS18B20's 1-Wire id (28- and 12 hex digits, "
                     f"as scan lists it), not {value!r}")


class DS18B20Sensor(SensorBase):
    """A DS18B20 probe on 1-Wire, read through the kernel's w1-therm driver."""

    SIM_KEY = "w1_root"

    driver: Literal["ds18b20"]
    # auto: the one DS18B20 attached; with several, each sensor names its own.
    id: Annotated[str, PlainValidator(check_w1_id)] = "auto"
    w1_root: Annotated[str, PlainValidator(check_w1_root)] = "/sys/bus/w1/devices"

    @property
    def simulated(self) -> bool:
        return self.w1_root == "sim"


Sensor = Annotated[
    SHT3xSensor | BME280Sensor | ADXL345Sensor | XYMD02Sensor | WTVB01Sensor | ModbusSensor
    | DS18B20Sensor,
    Field(discriminator="driver"),
]
