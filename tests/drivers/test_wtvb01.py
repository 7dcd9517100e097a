"""WTVB01-485 driver against its emulator over a real pty."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import ModbusExceptionError, SensorTimeout
from drivers.sim.faults import Faults
from drivers.sim.modbus import with_crc
from drivers.sim.wtvb01 import Machine, WTVB01Sim
from drivers.wtvb01 import WTVB01

TIMEOUT = 0.2
AXES = "xyz"

# Unit 0x50, function 0x03, 19 registers from 0x34.
REQUEST = with_crc(bytes.fromhex("50 03 00 34 00 13"))
BLOCK = [
    *(0x0800, 0xF800, 0x0000),  # accel: 1 g, -1 g, 0 g
    *(0, 0, 0),  # not read
    *(12, 0xFFFD, 7),  # velocity mm/s
    *(0, 0, 0),  # not read
    2534,  # 25.34 C
    *(150, 80, 1),  # displacement um
    *(248, 496, 0),  # frequency: 24.8 Hz, 49.6 Hz, 0
]


def test_driver_reads_the_block_in_one_request(modbus_raw_device: Any) -> None:
    answer = with_crc(bytes([0x50, 0x03, 2 * len(BLOCK)]) + struct.pack(">19H", *BLOCK))
    modbus_raw_device.answer_once(answer)
    with WTVB01(modbus_raw_device.port, timeout=TIMEOUT) as driver:
        reading = driver.read()
    assert modbus_raw_device.request == REQUEST
    assert reading == {
        "accel_x_g": 1.0,
        "accel_y_g": -1.0,
        "accel_z_g": 0.0,
        "velocity_x_mm_s": 12.0,
        "velocity_y_mm_s": -3.0,
        "velocity_z_mm_s": 7.0,
        "temperature_c": 25.34,
        "displacement_x_um": 150.0,
        "displacement_y_um": 80.0,
        "displacement_z_um": 1.0,
        "frequency_x_hz": 24.8,
        "frequency_y_hz": 49.6,
        "frequency_z_hz": 0.0,
    }


axes = st.tuples(*[st.floats(0.0, 40.0)] * 3)


@settings(max_examples=25, deadline=None)
@given(
    velocity=axes,
    frequency=st.tuples(*[st.floats(1.0, 200.0)] * 3),
    temperature=st.floats(-40.0, 85.0),
    t=st.floats(0.0, 1e5),
    seed=st.integers(0, 2**32 - 1),
)
def test_reads_the_truth(
    velocity: tuple[float, float, float],
    frequency: tuple[float, float, float],
    temperature: float,
    t: float,
    seed: int,
) -> None:
    machine = Machine(velocity, frequency, temperature, seed=seed)
    sim = WTVB01Sim(machine, clock=lambda: t)
    with sim.server() as server, WTVB01(server.port, timeout=TIMEOUT) as driver:
        reading = driver.read()
        assert server.requests == 1
    truth = sim.truth
    assert truth is not None
    for i, axis in enumerate(AXES):
        assert reading[f"accel_{axis}_g"] == pytest.approx(truth.accel_g[i], abs=0.5 / 2048)
        assert reading[f"velocity_{axis}_mm_s"] == pytest.approx(truth.velocity_mm_s[i], abs=0.5)
        assert reading[f"displacement_{axis}_um"] == pytest.approx(
            truth.displacement_um[i], abs=0.5
        )
        assert reading[f"frequency_{axis}_hz"] == pytest.approx(truth.frequency_hz[i], abs=0.05)
    assert reading["temperature_c"] == pytest.approx(truth.temperature_c, abs=0.005)


def test_vibration_is_physical() -> None:
    sample = Machine((10.0, 10.0, 10.0), (50.0, 50.0, 50.0), noise=0.0).sample(0.0)
    # A 50 Hz sine of 10 mm/s peak moves 10 / (2 pi 50) mm.
    assert sample.displacement_um[0] == pytest.approx(31.83, abs=0.01)
    assert sample.accel_g[2] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("address", "count", "function", "code"),
    [(0x47, 1, 0x03, 2), (0x30, 5, 0x03, 2), (0x34, 1, 0x04, 1)],
    ids=["past the map", "straddling the map", "input registers"],
)
def test_exception_codes(address: int, count: int, function: int, code: int) -> None:
    with WTVB01Sim().server() as server, WTVB01(server.port, timeout=TIMEOUT) as driver:
        with pytest.raises(ModbusExceptionError) as err:
            driver.read_registers(address, count, function)
        assert err.value.code == code


def test_no_answer_times_out() -> None:
    sim = WTVB01Sim(faults=Faults(no_answer_rate=1.0))
    with sim.server() as server, WTVB01(server.port, timeout=TIMEOUT) as driver:
        with pytest.raises(SensorTimeout):
            driver.read()
        assert server.requests == 3


def test_wrong_unit_times_out() -> None:
    with (
        WTVB01Sim().server(unit=0x51) as server,
        WTVB01(server.port, timeout=TIMEOUT) as driver,
        pytest.raises(SensorTimeout),
    ):
        driver.read()


def test_stuck_repeats_the_last_values() -> None:
    now = [0.0]
    sim = WTVB01Sim(clock=lambda: now[0])
    with sim.server() as server, WTVB01(server.port, timeout=TIMEOUT) as driver:
        first = driver.read()
        sim.faults.stuck = True
        now[0] = 100.0
        assert driver.read() == first
        sim.faults.stuck = False
        assert driver.read() != first
