"""ADXL345: FIFO draining by the driver against the register-level emulator."""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.adxl345 import ADXL345, RANGES_G, RATES_HZ, FifoBatch
from drivers.errors import BusError, ChipIdError
from drivers.sim.adxl345 import TRUTH_DEPTH, ADXL345Sim
from drivers.sim.bme280 import BME280Sim
from drivers.sim.faults import Faults
from drivers.sim.i2c import SimI2CBus
from drivers.sim.vibration import Tone, Vibration

ADDRESS = 0x53
# Full resolution: 256 LSB/g in every range. The emulator rounds to the nearest count,
# so a correct decode is within half of this.
LSB_G = 1.0 / 256.0
DRAIN_EVERY_S = 0.005


class FakeClock:
    """Emulated time in whole microseconds, so sample periods add up exactly."""

    def __init__(self) -> None:
        self.us = 0

    def __call__(self) -> float:
        return self.us / 1e6

    def sleep(self, seconds: float) -> None:
        self.us += round(seconds * 1e6)


def rig(
    rate_hz: float = 3200.0,
    range_g: int = 16,
    vibration: Vibration | None = None,
    faults: Faults | None = None,
    truth_depth: int = TRUTH_DEPTH,
) -> tuple[ADXL345, ADXL345Sim, FakeClock, SimI2CBus]:
    clock = FakeClock()
    sim = ADXL345Sim(vibration=vibration or Vibration(), clock=clock, faults=faults or Faults(),
                     truth_depth=truth_depth)
    bus = SimI2CBus()
    bus.attach(ADDRESS, sim)
    return ADXL345(bus, ADDRESS, rate_hz, range_g, sleep=clock.sleep), sim, clock, bus


def flat(samples: Iterable[Sequence[float]]) -> list[float]:
    return [v for sample in samples for v in sample]


def assert_within_one_lsb(decoded: Sequence[float], truth: Sequence[float]) -> None:
    assert len(decoded) == len(truth)
    worst = max((abs(d - t) for d, t in zip(decoded, truth, strict=True)), default=0.0)
    assert worst <= LSB_G


def drain_for(driver: ADXL345, clock: FakeClock, seconds: float) -> list[FifoBatch]:
    batches = []
    for _ in range(round(seconds / DRAIN_EVERY_S)):
        clock.sleep(DRAIN_EVERY_S)
        batches.append(driver.read_fifo())
    return batches


def test_3200_hz_drained_in_bursts_for_10_s_loses_nothing() -> None:
    driver, sim, clock, _ = rig(truth_depth=32000)
    driver.init()
    batches = drain_for(driver, clock, 10.0)
    samples = array("f")
    for batch in batches:
        samples.extend(batch.samples)
    assert len(samples) // 3 == 32000 == len(sim.truth)
    assert not any(batch.overflow for batch in batches)
    assert {batch.rate_hz for batch in batches} == {3200.0}
    assert_within_one_lsb(samples, flat(sim.truth))


def test_the_emulator_keeps_only_the_latest_truth_unless_asked() -> None:
    driver, sim, clock, _ = rig()
    driver.init()
    batches = drain_for(driver, clock, 1.0)
    assert sum(len(batch) for batch in batches) == 3200
    assert len(sim.truth) == TRUTH_DEPTH < 3200
    assert_within_one_lsb(batches[-1].samples, flat(list(sim.truth)[-len(batches[-1]):]))


def test_overflow_is_reported_when_draining_is_held_back() -> None:
    driver, _, clock, _ = rig(vibration=Vibration(noise_g=0.0))
    driver.init()
    assert not drain_for(driver, clock, DRAIN_EVERY_S)[0].overflow
    clock.sleep(0.050)  # 160 samples into 32 FIFO levels plus the output registers
    late = driver.read_fifo()
    assert late.overflow
    # Stream mode kept the newest: samples 144..176 of the 3200 Hz grid.
    model = Vibration(noise_g=0.0)
    assert_within_one_lsb(late.samples, flat(model.sample(k / 3200) for k in range(144, 177)))
    assert not drain_for(driver, clock, DRAIN_EVERY_S)[0].overflow


def test_initialising_discards_samples_an_earlier_run_left_queued() -> None:
    driver, sim, clock, bus = rig()
    driver.init()
    clock.sleep(DRAIN_EVERY_S)
    restarted = ADXL345(bus, ADDRESS, 3200.0, sleep=clock.sleep)
    restarted.init()
    clock.sleep(DRAIN_EVERY_S)
    batch = restarted.read_fifo()
    assert len(batch) == 16
    assert_within_one_lsb(batch.samples, flat(list(sim.truth)[-16:]))


def test_overrun_is_flagged_once_the_fifo_is_full_even_before_a_loss() -> None:
    driver, sim, clock, _ = rig(rate_hz=100.0)
    driver.init()
    clock.sleep(0.33)
    batch = driver.read_fifo()
    assert batch.overflow
    assert len(batch) == len(sim.truth) == 33


@settings(max_examples=50, deadline=None)
@given(
    rate_hz=st.sampled_from(sorted(RATES_HZ)),
    range_g=st.sampled_from(sorted(RANGES_G)),
    tones=st.lists(
        st.builds(
            Tone,
            axis=st.sampled_from(["x", "y", "z"]),
            freq_hz=st.floats(0.1, 1000.0),
            amplitude_g=st.floats(0.0, 0.3),
            phase=st.floats(0.0, 6.28),
        ),
        max_size=3,
    ),
    seed=st.integers(0, 1000),
)
def test_driver_decodes_what_the_emulator_sampled(
    rate_hz: float, range_g: int, tones: list[Tone], seed: int
) -> None:
    # At most 0.9 g of tones plus noise on top of 1 g stays inside even the 2 g range.
    vibration = Vibration(tones=tones, noise_g=0.01, seed=seed)
    driver, sim, clock, _ = rig(rate_hz, range_g, vibration)
    driver.init()
    samples = array("f")
    for _ in range(4):
        clock.sleep(16 / rate_hz)
        samples.extend(driver.read_fifo().samples)
    assert len(samples) // 3 == len(sim.truth) == 64
    assert_within_one_lsb(samples, flat(sim.truth))


@pytest.mark.parametrize(
    ("range_g", "gravity_g", "counts"),
    [(2, -1.5, -384), (4, -3.5, -896), (8, 7.5, 1920), (16, -15.5, -3968), (2, -3.0, -512)],
)
def test_full_resolution_is_256_counts_per_g_clipped_to_the_range(
    range_g: int, gravity_g: float, counts: int
) -> None:
    vibration = Vibration(tones=[], gravity_g=gravity_g, noise_g=0.0)
    driver, _, clock, bus = rig(100.0, range_g, vibration)
    driver.init()
    clock.sleep(0.01)
    raw = bytes(bus.read_i2c_block_data(ADDRESS, 0x32, 6))
    assert struct.unpack("<3h", raw) == (0, 0, counts)
    clock.sleep(0.01)
    assert driver.read() == {"accel_x_g": 0.0, "accel_y_g": 0.0, "accel_z_g": counts / 256}


def test_read_returns_the_newest_sample() -> None:
    driver, sim, clock, _ = rig(rate_hz=800.0)
    driver.init()
    clock.sleep(0.02)
    reading = driver.read()
    decoded = [reading["accel_x_g"], reading["accel_y_g"], reading["accel_z_g"]]
    assert len(sim.truth) == 16
    assert_within_one_lsb(decoded, sim.truth[-1])


def test_trigger_bit_in_fifo_status_is_not_counted_as_entries() -> None:
    driver, sim, clock, bus = rig()
    driver.init()
    bus.write_byte_data(ADDRESS, 0x38, 0xC0 | 10)  # trigger mode, keep 10 before the event
    clock.sleep(DRAIN_EVERY_S)
    sim.trigger()
    clock.sleep(DRAIN_EVERY_S)
    assert bus.read_byte_data(ADDRESS, 0x39) == 0x80 | 26
    batch = driver.read_fifo()
    assert len(batch) == 26
    assert_within_one_lsb(batch.samples, flat(list(sim.truth)[6:]))


def test_emulated_fifo_mode_keeps_the_first_samples_and_stops() -> None:
    driver, sim, clock, bus = rig()
    driver.init()
    bus.write_byte_data(ADDRESS, 0x38, 0x00)
    bus.write_byte_data(ADDRESS, 0x38, 0x40)
    clock.sleep(0.050)
    batch = driver.read_fifo()
    assert batch.overflow
    assert len(sim.truth) == len(batch) == 33
    assert_within_one_lsb(batch.samples, flat(sim.truth))


def test_emulated_bypass_mode_holds_the_latest_sample() -> None:
    driver, sim, clock, bus = rig()
    driver.init()
    bus.write_byte_data(ADDRESS, 0x38, 0x00)
    clock.sleep(0.0004)  # one sample period at 3200 Hz
    assert bus.read_byte_data(ADDRESS, 0x30) & 0x81 == 0x80  # DATA_READY
    clock.sleep(0.0003)  # a second sample replaces the first unread
    assert bus.read_byte_data(ADDRESS, 0x39) == 0
    assert bus.read_byte_data(ADDRESS, 0x30) & 0x81 == 0x81  # and OVERRUN
    raw = struct.unpack("<3h", bytes(bus.read_i2c_block_data(ADDRESS, 0x32, 6)))
    assert_within_one_lsb([v * LSB_G for v in raw], sim.truth[-1])
    assert bus.read_byte_data(ADDRESS, 0x30) & 0x81 == 0


# --- faults and identity ------------------------------------------------------------


def test_unplugged_sensor_is_a_bus_error() -> None:
    driver, _, _, _ = rig(faults=Faults(unplugged=True))
    with pytest.raises(BusError, match="EREMOTEIO"):
        driver.read_fifo()


def test_sensor_that_never_acknowledges_is_a_bus_error() -> None:
    driver, sim, clock, _ = rig()
    driver.init()
    sim.faults.nack_rate = 1.0
    clock.sleep(DRAIN_EVERY_S)
    with pytest.raises(BusError, match="no acknowledge"):
        driver.read_fifo()


def test_bus_timeout_is_a_bus_error_naming_etimedout() -> None:
    driver, sim, _, _ = rig()
    driver.init()
    sim.faults.no_answer_rate = 1.0
    with pytest.raises(BusError, match="ETIMEDOUT"):
        driver.read()


def test_flaky_bus_costs_drains_but_no_samples() -> None:
    driver, sim, clock, _ = rig(rate_hz=400.0, faults=Faults(nack_rate=0.3, seed=3),
                                truth_depth=400)
    driver.init()
    samples, failed = array("f"), 0
    for _ in range(200):
        clock.sleep(DRAIN_EVERY_S)
        try:
            batch = driver.read_fifo()
        except BusError:
            failed += 1
            continue
        assert not batch.overflow
        samples.extend(batch.samples)
    # Whatever a failed drain left in the FIFO comes out with the next one.
    samples.extend(driver.read_fifo().samples)
    assert failed > 0
    assert len(samples) // 3 == len(sim.truth) == 400
    assert_within_one_lsb(samples, flat(sim.truth))


def test_stuck_sensor_repeats_its_last_sample() -> None:
    driver, sim, clock, _ = rig(rate_hz=100.0)
    driver.init()
    clock.sleep(0.02)
    first = driver.read()
    sim.faults.stuck = True
    for _ in range(3):
        clock.sleep(0.05)
        assert driver.read() == first
    sim.faults.stuck = False
    clock.sleep(0.05)
    assert driver.read() != first


def test_another_chip_at_the_address_is_a_chip_id_error() -> None:
    bus = SimI2CBus()
    bus.attach(ADDRESS, BME280Sim())
    with pytest.raises(ChipIdError, match="0x00"):
        ADXL345(bus, ADDRESS).read()


@pytest.mark.parametrize("options", [{"rate_hz": 300.0}, {"range_g": 3}])
def test_settings_the_chip_does_not_have_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ADXL345(SimI2CBus(), **options)
