"""BME280: compensation against the data sheet, driver against the register-level emulator."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.bme280 import (
    BME280,
    Calibration,
    compensate_humidity,
    compensate_pressure,
    compensate_temperature,
    parse_calibration,
)
from drivers.errors import BusError, ChipIdError, SensorTimeout
from drivers.sim.adxl345 import ADXL345Sim
from drivers.sim.bme280 import TYPICAL_CALIBRATION, BME280Sim, pack_calibration
from drivers.sim.faults import Faults
from drivers.sim.i2c import SimI2CBus
from drivers.sim.signal import Climate

ADDRESS = 0x76
CAL = TYPICAL_CALIBRATION
# One ADC step at the coarsest output (oversampling x1, filter off: 16 bits), from the
# data sheet's resolution figures; the emulator rounds to the nearest code, so a correct
# decode is within half of this.
T_STEP_C = 0.0050
P_STEP_HPA = 0.0262
H_STEP_RH = 0.008


class FakeClock:
    """Emulated time: the driver's sleeps advance what the emulator's clock reads."""

    def __init__(self) -> None:
        self.now = 100.0
        self.frozen = False

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        if not self.frozen:
            self.now += seconds


class RecordingBus(SimI2CBus):
    """Notes each register transfer the driver makes."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, int, Any]] = []

    def read_i2c_block_data(
        self, i2c_addr: int, register: int, length: int, force: bool | None = None
    ) -> list[int]:
        self.log.append(("read", register, length))
        return super().read_i2c_block_data(i2c_addr, register, length)

    def write_i2c_block_data(
        self, i2c_addr: int, register: int, data: list[int], force: bool | None = None
    ) -> None:
        self.log.append(("write", register, data))
        super().write_i2c_block_data(i2c_addr, register, data)


def steady(temperature: float = 22.0, humidity: float = 45.0, pressure: float = 1013.25) -> Climate:
    return Climate(
        temperature_c=temperature,
        humidity_rh=humidity,
        pressure_hpa=pressure,
        temperature_swing_c=0.0,
        humidity_swing_rh=0.0,
        pressure_swing_hpa=0.0,
        noise=0.0,
    )


def rig(
    climate: Climate | None = None,
    faults: Faults | None = None,
    chip_id: int = 0x60,
    bus: SimI2CBus | None = None,
    **driver: Any,
) -> tuple[BME280, BME280Sim, FakeClock]:
    clock = FakeClock()
    sim = BME280Sim(
        climate=climate or steady(), clock=clock, faults=faults or Faults(), chip_id=chip_id
    )
    bus = bus or SimI2CBus()
    bus.attach(ADDRESS, sim)
    return BME280(bus, ADDRESS, sleep=clock.sleep, **driver), sim, clock


# --- compensation -------------------------------------------------------------------


def test_compensation_reproduces_the_data_sheet_example() -> None:
    temperature, t_fine = compensate_temperature(519888, CAL)
    assert round(temperature, 2) == 25.08
    assert t_fine == 128422
    assert round(compensate_pressure(415148, t_fine, CAL) / 100.0, 2) == 1006.53


def _cdiv(a: int, b: int) -> int:
    """C's integer division, which truncates toward zero."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def integer_reference(adc_t: int, adc_p: int, adc_h: int, c: Calibration) -> tuple[float, ...]:
    """The data sheet's fixed-point compensation (int32 T and H, int64 P), transcribed
    independently of the driver's floating-point version."""
    var1 = (((adc_t >> 3) - (c.t1 << 1)) * c.t2) >> 11
    var2 = (((((adc_t >> 4) - c.t1) * ((adc_t >> 4) - c.t1)) >> 12) * c.t3) >> 14
    t_fine = var1 + var2
    temperature = ((t_fine * 5 + 128) >> 8) / 100.0

    v1 = t_fine - 128000
    v2 = v1 * v1 * c.p6
    v2 = v2 + ((v1 * c.p5) << 17)
    v2 = v2 + (c.p4 << 35)
    v1 = ((v1 * v1 * c.p3) >> 8) + ((v1 * c.p2) << 12)
    v1 = (((1 << 47) + v1) * c.p1) >> 33
    p = 1048576 - adc_p
    p = _cdiv(((p << 31) - v2) * 3125, v1)
    v1 = (c.p9 * (p >> 13) * (p >> 13)) >> 25
    v2 = (c.p8 * p) >> 19
    pressure = (((p + v1 + v2) >> 8) + (c.p7 << 4)) / 256.0

    x = t_fine - 76800
    scale = (((((x * c.h6) >> 10) * (((x * c.h3) >> 11) + 32768)) >> 10) + 2097152) * c.h2
    x = (((adc_h << 14) - (c.h4 << 20) - (c.h5 * x) + 16384) >> 15) * ((scale + 8192) >> 14)
    x = x - (((((x >> 15) * (x >> 15)) >> 7) * c.h1) >> 4)
    x = min(max(x, 0), 419430400)
    return temperature, pressure, (x >> 12) / 1024.0


@settings(max_examples=50, deadline=None)
@given(
    adc_t=st.integers(330_000, 700_000),
    adc_p=st.integers(300_000, 800_000),
    adc_h=st.integers(0, 65_535),
)
def test_floating_point_compensation_agrees_with_the_fixed_point_one(
    adc_t: int, adc_p: int, adc_h: int
) -> None:
    temperature, t_fine = compensate_temperature(adc_t, CAL)
    pressure = compensate_pressure(adc_p, t_fine, CAL)
    humidity = compensate_humidity(adc_h, t_fine, CAL)
    ref_t, ref_p, ref_h = integer_reference(adc_t, adc_p, adc_h, CAL)
    # Fixed point rounds to 0.01 C and truncates intermediates; across the ADC ranges the
    # two versions stay within 0.008 C, 0.47 Pa and 0.008 %RH of each other.
    assert temperature == pytest.approx(ref_t, abs=0.01)
    assert pressure == pytest.approx(ref_p, abs=1.0)
    assert humidity == pytest.approx(ref_h, abs=0.02)


def test_calibration_nibbles_of_h4_and_h5_are_unpacked_as_the_chip_packs_them() -> None:
    tp = bytes(25) + bytes([75])
    typical = parse_calibration(tp, bytes([0x6A, 0x01, 0x00, 0x14, 0x24, 0x03, 0x1E]))
    assert (typical.h1, typical.h2, typical.h3) == (75, 362, 0)
    assert (typical.h4, typical.h5, typical.h6) == (324, 50, 30)
    negative = parse_calibration(tp, bytes([0xFE, 0xFF, 0x00, 0xFF, 0x8E, 0x80, 0xF6]))
    assert (negative.h2, negative.h4, negative.h5, negative.h6) == (-2, -2, -2040, -10)
    assert parse_calibration(*pack_calibration(CAL)) == CAL


# --- driver against the emulator -----------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    temperature=st.floats(-40.0, 85.0),
    humidity=st.floats(0.0, 100.0),
    pressure=st.floats(300.0, 1100.0),
    oversampling=st.sampled_from([1, 2, 4, 8, 16]),
    iir_filter=st.sampled_from([0, 4]),
)
def test_driver_decodes_what_the_emulator_sampled(
    temperature: float, humidity: float, pressure: float, oversampling: int, iir_filter: int
) -> None:
    driver, sim, _ = rig(
        steady(temperature, humidity, pressure),
        temperature_oversampling=oversampling,
        pressure_oversampling=oversampling,
        humidity_oversampling=oversampling,
        iir_filter=iir_filter,
    )
    reading = driver.read()
    assert sim.truth == (temperature, humidity, pressure)
    assert reading["temperature_c"] == pytest.approx(temperature, abs=T_STEP_C)
    assert reading["humidity_rh"] == pytest.approx(humidity, abs=H_STEP_RH)
    assert reading["pressure_hpa"] == pytest.approx(pressure, abs=P_STEP_HPA)


def test_read_is_one_paired_control_write_a_status_poll_and_one_burst() -> None:
    bus = RecordingBus()
    driver, _, _ = rig(bus=bus, temperature_oversampling=2, humidity_oversampling=4)
    driver.init()
    bus.log.clear()
    driver.read()
    # ctrl_hum (x4) then ctrl_meas (T x2, P x1, forced) in one transfer.
    assert bus.log == [
        ("write", 0xF2, [0x03, 0xF4, (0x02 << 5) | (0x01 << 2) | 0x01]),
        ("read", 0xF3, 1),
        ("read", 0xF7, 8),
    ]


def test_each_read_is_a_new_conversion() -> None:
    climate = Climate(drift_period_s=60.0, temperature_swing_c=5.0, noise=0.0)
    driver, sim, clock = rig(climate)
    readings = []
    for _ in range(3):
        readings.append(driver.read()["temperature_c"])
        assert sim.truth is not None
        assert readings[-1] == pytest.approx(sim.truth[0], abs=T_STEP_C)
        clock.now += 5.0
    assert len(set(readings)) == 3


def test_emulator_latches_ctrl_hum_only_on_a_ctrl_meas_write() -> None:
    bus = SimI2CBus()
    _, _, clock = rig(bus=bus)
    forced_x1 = 0x25

    def humidity_after(pairs: list[int]) -> list[int]:
        bus.write_i2c_block_data(ADDRESS, pairs[0], pairs[1:])
        clock.now += 0.1
        return bus.read_i2c_block_data(ADDRESS, 0xF7, 8)[6:]

    # Written after ctrl_meas, ctrl_hum waits for the next conversion: skipped (0x8000).
    assert humidity_after([0xF4, forced_x1, 0xF2, 0x01]) == [0x80, 0x00]
    assert humidity_after([0xF4, forced_x1]) != [0x80, 0x00]
    assert humidity_after([0xF2, 0x00, 0xF4, forced_x1]) == [0x80, 0x00]


@pytest.mark.parametrize(
    ("oversampling", "iir_filter", "xlsb_bits"), [(1, 0, 0), (2, 0, 1), (16, 0, 4), (1, 2, 4)]
)
def test_emulated_resolution_is_16_bits_plus_one_per_doubling_or_20_with_the_filter(
    oversampling: int, iir_filter: int, xlsb_bits: int
) -> None:
    bus = SimI2CBus()
    driver, _, _ = rig(
        steady(23.4567, 45.0, 987.654),
        bus=bus,
        temperature_oversampling=oversampling,
        pressure_oversampling=oversampling,
        iir_filter=iir_filter,
    )
    driver.read()
    data = bus.read_i2c_block_data(ADDRESS, 0xF7, 8)
    xlsbs = (data[2] >> 4, data[5] >> 4)  # pressure, temperature
    unused = (1 << (4 - xlsb_bits)) - 1
    assert all(xlsb & unused == 0 for xlsb in xlsbs)
    if xlsb_bits == 4:
        assert all(xlsbs)


def test_conversion_that_never_finishes_is_a_timeout() -> None:
    driver, _, clock = rig()
    driver.init()
    clock.frozen = True
    with pytest.raises(SensorTimeout, match="conversion"):
        driver.read()


def test_nvm_copy_that_never_finishes_is_a_timeout() -> None:
    driver, _, clock = rig()
    clock.frozen = True
    with pytest.raises(SensorTimeout, match="NVM"):
        driver.init()


# --- faults and identity ------------------------------------------------------------


def test_unplugged_sensor_is_a_bus_error() -> None:
    driver, _, _ = rig(faults=Faults(unplugged=True))
    with pytest.raises(BusError, match="EREMOTEIO"):
        driver.read()


def test_sensor_that_never_acknowledges_is_a_bus_error() -> None:
    driver, sim, _ = rig()
    driver.init()
    sim.faults.nack_rate = 1.0
    with pytest.raises(BusError, match="no acknowledge"):
        driver.read()


def test_bus_timeout_is_a_bus_error_naming_etimedout() -> None:
    driver, sim, _ = rig()
    driver.init()
    sim.faults.no_answer_rate = 1.0
    with pytest.raises(BusError, match="ETIMEDOUT"):
        driver.read()


def test_retries_carry_most_reads_through_a_flaky_bus() -> None:
    driver, sim, _ = rig(faults=Faults(nack_rate=0.3, seed=7))
    good, failed = 0, 0
    for _ in range(40):
        try:
            reading = driver.read()
        except BusError:
            failed += 1
            continue
        good += 1
        assert sim.truth is not None
        assert reading["temperature_c"] == pytest.approx(sim.truth[0], abs=T_STEP_C)
    # 30 % of transfers fail; a register read (two transfers) gets through in three tries
    # 87 % of the time, a whole read() about 73 % of the time.
    assert good >= 20
    assert failed > 0


def test_stuck_sensor_repeats_its_last_values() -> None:
    driver, sim, clock = rig(Climate(drift_period_s=60.0, noise=0.0))
    first = driver.read()
    sim.faults.stuck = True
    for _ in range(3):
        clock.now += 7.0
        assert driver.read() == first
    sim.faults.stuck = False
    assert driver.read() != first


def test_bmp280_is_named_in_the_chip_id_error() -> None:
    driver, _, _ = rig(chip_id=0x58)
    with pytest.raises(ChipIdError, match=r"0x58.*BMP280"):
        driver.read()


def test_another_chip_at_the_address_is_a_chip_id_error() -> None:
    bus = SimI2CBus()
    bus.attach(ADDRESS, ADXL345Sim())
    with pytest.raises(ChipIdError, match="0x00"):
        BME280(bus, ADDRESS).read()


@pytest.mark.parametrize(
    "options", [{"temperature_oversampling": 3}, {"humidity_oversampling": 0}, {"iir_filter": 1}]
)
def test_settings_the_chip_does_not_have_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BME280(SimI2CBus(), **options)
