"""SHT3x: the data sheet's CRC and conversions, driver against the emulator, faults."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.crc import crc8_sensirion
from drivers.errors import BusError, CrcError, DriverError, SensorTimeout
from drivers.scan import Found, scan
from drivers.sht3x import SHT3x, decode_humidity, decode_temperature, split_words
from drivers.sim.faults import Faults
from drivers.sim.i2c import SimI2CBus
from drivers.sim.sht3x import STATUS_HEATER, SHT3xSim
from drivers.sim.signal import Climate

# One raw step of the 16-bit outputs; the emulator rounds to the nearest code.
T_STEP_C = 175 / 65535
RH_STEP = 100 / 65535


class FakeClock:
    """Emulated time: the driver's sleeps advance what the emulator's clock reads."""

    def __init__(self) -> None:
        self.now = 50.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def rig(
    climate: Climate | None = None, faults: Faults | None = None, repeatability: str = "high"
) -> tuple[SHT3x, SHT3xSim, FakeClock]:
    clock = FakeClock()
    chip = SHT3xSim(climate=climate or Climate(noise=0), clock=clock, faults=faults or Faults())
    bus = SimI2CBus()
    bus.attach(0x44, chip)
    return SHT3x(bus, 0x44, repeatability, sleep=clock.sleep), chip, clock  # type: ignore[arg-type]


def test_crc_vector_from_the_data_sheet() -> None:
    assert crc8_sensirion(b"\xbe\xef") == 0x92


def test_conversion_formulas() -> None:
    assert decode_temperature(0) == -45.0
    assert decode_temperature(65535) == 130.0
    assert decode_humidity(65535) == 100.0
    assert split_words(b"\xbe\xef\x92\x00\x00\x81") == [0xBEEF, 0]
    with pytest.raises(CrcError):
        split_words(b"\xbe\xef\x93")


@settings(max_examples=60, deadline=None)
@given(
    temperature=st.floats(-40, 125),
    humidity=st.floats(0, 100),
    repeatability=st.sampled_from(["high", "medium", "low"]),
)
def test_driver_decodes_what_the_chip_measured(
    temperature: float, humidity: float, repeatability: str
) -> None:
    climate = Climate(
        temperature_c=temperature, humidity_rh=humidity, temperature_swing_c=0,
        humidity_swing_rh=0, noise=0,
    )
    driver, chip, _ = rig(climate, repeatability=repeatability)
    values = driver.read()
    assert chip.truth is not None
    assert abs(values["temperature_c"] - chip.truth[0]) <= T_STEP_C / 2 + 1e-9
    assert abs(values["humidity_rh"] - chip.truth[1]) <= RH_STEP / 2 + 1e-9


def test_reading_waits_the_conversion_time_of_the_repeatability() -> None:
    for repeatability, wait in (("high", 0.0155), ("medium", 0.0065), ("low", 0.0045)):
        driver, _, clock = rig(repeatability=repeatability)
        driver.read()
        assert clock.sleeps == [wait]


def test_read_before_the_conversion_is_done_is_nacked_then_retried() -> None:
    clock = FakeClock()
    chip = SHT3xSim(climate=Climate(noise=0), clock=clock)
    bus = SimI2CBus()
    bus.attach(0x44, chip)
    # A driver whose first wait falls short: the chip NACKs until the conversion is done,
    # and the read retries get it.
    driver = SHT3x(bus, 0x44, sleep=lambda s: clock.sleep(min(s, 0.010)))
    assert set(driver.read()) == {"temperature_c", "humidity_rh"}
    assert clock.now > 50.015
    with pytest.raises(SensorTimeout, match="not ready"):
        SHT3x(bus, 0x44, sleep=lambda s: None).read()


def test_status_heater_and_reset() -> None:
    driver, chip, _ = rig()
    driver.set_heater(True)
    assert driver.status() & STATUS_HEATER
    driver.set_heater(False)
    assert not driver.status() & STATUS_HEATER
    driver.reset()
    assert chip.status & (1 << 4)


def test_unknown_command_is_not_acknowledged() -> None:
    driver, _, _ = rig()
    with pytest.raises(BusError, match="no acknowledge"):
        driver._command(0x1234)


def test_unplugged_then_plugged_back() -> None:
    driver, chip, _ = rig()
    chip.faults.unplugged = True
    with pytest.raises(BusError, match="EREMOTEIO"):
        driver.read()
    chip.faults.unplugged = False
    assert driver.read()["humidity_rh"] > 0


def test_corrupted_crc_is_detected() -> None:
    driver, _, _ = rig(faults=Faults(corrupt_crc_rate=1.0))
    with pytest.raises(CrcError):
        driver.read()


def test_no_answer_is_a_timeout_named_by_errno() -> None:
    driver, _, _ = rig(faults=Faults(no_answer_rate=1.0))
    with pytest.raises(BusError, match=errno.errorcode[errno.ETIMEDOUT]):
        driver.read()


def test_intermittent_nacks_are_ridden_out_by_the_read_retries() -> None:
    driver, _, _ = rig(faults=Faults(nack_rate=0.3, seed=7))
    outcomes = []
    for _ in range(200):
        try:
            driver.read()
            outcomes.append("ok")
        except DriverError:
            outcomes.append("error")
    # The command write is not retried, the read is: most reads succeed, some fail.
    assert 100 < outcomes.count("ok") < 200
    assert outcomes.count("error") > 0


def test_stuck_chip_repeats_its_last_value() -> None:
    driver, chip, clock = rig(climate=Climate(noise=0.5))
    first = driver.read()
    chip.faults.stuck = True
    clock.now += 300
    assert driver.read() == driver.read() == first


def test_scan_names_every_supported_chip() -> None:
    from drivers.sim.adxl345 import ADXL345Sim
    from drivers.sim.bme280 import BME280Sim

    bus = SimI2CBus()
    bus.attach(0x45, SHT3xSim())
    bus.attach(0x76, BME280Sim())
    bus.attach(0x1D, ADXL345Sim())
    bus.attach(0x77, BME280Sim(chip_id=0x58))
    assert scan(bus) == [
        Found(0x1D, "adxl345"), Found(0x45, "sht3x"), Found(0x76, "bme280"),
        Found(0x77, "bmp280 (unsupported)"),
    ]
