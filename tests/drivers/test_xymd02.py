"""XY-MD02 driver against its emulator over a real pty, and the Modbus error handling."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import BusError, CrcError, ModbusExceptionError, SensorTimeout
from drivers.sim.faults import Faults
from drivers.sim.modbus import ModbusSimServer, respond, with_crc
from drivers.sim.signal import Climate
from drivers.sim.xymd02 import XYMD02Sim
from drivers.xymd02 import XYMD02

REQUEST = bytes.fromhex("01 04 00 01 00 02 20 0B")
RESPONSE = bytes.fromhex("01 04 04 01 31 02 22 2A CE")
TIMEOUT = 0.2


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def still_sim(temperature: float = 30.5, humidity: float = 54.6) -> XYMD02Sim:
    return XYMD02Sim(Climate(temperature, humidity, noise=0.0), clock=lambda: 0.0)


def test_emulator_answers_the_vector() -> None:
    assert respond(REQUEST, still_sim().registers) == RESPONSE


def test_driver_speaks_the_vector(modbus_raw_device: Any) -> None:
    modbus_raw_device.answer_once(RESPONSE)
    with XYMD02(modbus_raw_device.port, timeout=TIMEOUT) as driver:
        assert driver.read() == {"temperature_c": 30.5, "humidity_rh": 54.6}
    assert modbus_raw_device.request == REQUEST


def test_negative_temperature(modbus_raw_device: Any) -> None:
    # -12.3 C is 0xFF85 in the register.
    body = bytes.fromhex("01 04 04 FF 85 01 F4")
    modbus_raw_device.answer_once(with_crc(body))
    with XYMD02(modbus_raw_device.port, timeout=TIMEOUT) as driver:
        assert driver.read() == {"temperature_c": -12.3, "humidity_rh": 50.0}


@settings(max_examples=25, deadline=None)
@given(
    temperature=st.floats(-40.0, 80.0),
    humidity=st.floats(0.0, 100.0),
    t=st.floats(0.0, 1e6),
    seed=st.integers(0, 2**32 - 1),
)
def test_reads_the_truth(temperature: float, humidity: float, t: float, seed: int) -> None:
    sim = XYMD02Sim(Climate(temperature, humidity, seed=seed), clock=lambda: t)
    with sim.server() as server, XYMD02(server.port, timeout=TIMEOUT) as driver:
        reading = driver.read()
    assert sim.truth is not None
    assert reading["temperature_c"] == pytest.approx(sim.truth[0], abs=0.05 + 1e-9)
    assert reading["humidity_rh"] == pytest.approx(sim.truth[1], abs=0.05 + 1e-9)


def faulty(faults: Faults, unit: int = 1) -> tuple[XYMD02Sim, ModbusSimServer]:
    sim = XYMD02Sim(faults=faults)
    return sim, sim.server(unit=unit)


def test_no_answer_times_out_after_bounded_retries() -> None:
    _, server = faulty(Faults(no_answer_rate=1.0))
    with server, XYMD02(server.port, timeout=TIMEOUT) as driver:
        start = time.monotonic()
        with pytest.raises(SensorTimeout):
            driver.read()
        # Three attempts of TIMEOUT each; generous, only to catch a hang.
        assert time.monotonic() - start < 10 * TIMEOUT * 3
        assert server.requests == 3


def test_corrupt_crc() -> None:
    _, server = faulty(Faults(corrupt_crc_rate=1.0))
    with server, XYMD02(server.port, timeout=TIMEOUT) as driver:
        with pytest.raises(CrcError):
            driver.read()
        assert server.requests == 3


def seed_corrupting_first_only(rate: float) -> int:
    """A seed whose first roll corrupts and second does not, as ``Faults.roll`` draws."""
    for seed in range(1000):
        rng = random.Random(seed)
        if rng.random() < rate <= rng.random():
            return seed
    raise AssertionError("no such seed")


def test_intermittent_corruption_is_retried() -> None:
    sim, server = faulty(Faults(corrupt_crc_rate=0.5, seed=seed_corrupting_first_only(0.5)))
    with server, XYMD02(server.port, timeout=TIMEOUT) as driver:
        reading = driver.read()
        assert server.requests == 2
    assert sim.truth is not None
    assert reading["temperature_c"] == pytest.approx(sim.truth[0], abs=0.051)


def test_busy_is_an_exception_response_and_not_retried() -> None:
    _, server = faulty(Faults(nack_rate=1.0))
    with server, XYMD02(server.port, timeout=TIMEOUT) as driver:
        with pytest.raises(ModbusExceptionError) as err:
            driver.read()
        assert err.value.code == 6
        assert server.requests == 1


@pytest.mark.parametrize(
    ("address", "function", "code"),
    [(0x0003, 0x04, 2), (0x0000, 0x04, 2), (0x0001, 0x03, 1)],
    ids=["past the map", "before the map", "holding registers"],
)
def test_exception_codes(address: int, function: int, code: int) -> None:
    _, server = faulty(Faults())
    with server, XYMD02(server.port, timeout=TIMEOUT) as driver:
        with pytest.raises(ModbusExceptionError) as err:
            driver.read_registers(address, 1, function)
        assert err.value.code == code


def test_unplugged_then_plugged_back() -> None:
    faults = Faults(unplugged=True)
    _, server = faulty(faults)
    with server, XYMD02(server.port, timeout=TIMEOUT) as driver:
        with pytest.raises(SensorTimeout):
            driver.read()
        faults.unplugged = False
        assert set(driver.read()) == {"temperature_c", "humidity_rh"}


def test_stuck_repeats_the_last_values() -> None:
    clock = Clock()
    sim = XYMD02Sim(Climate(seed=3), clock=clock)
    with sim.server() as server, XYMD02(server.port, timeout=TIMEOUT) as driver:
        first = driver.read()
        sim.faults.stuck = True
        for _ in range(3):
            clock.now += 150.0
            assert driver.read() == first
        sim.faults.stuck = False
        assert driver.read() != first


def test_wrong_unit_times_out() -> None:
    _, server = faulty(Faults(), unit=2)
    with server, XYMD02(server.port, unit=1, timeout=TIMEOUT) as driver:
        with pytest.raises(SensorTimeout):
            driver.read()
        assert server.requests == 0


def test_other_unit_and_baudrate() -> None:
    sim = still_sim(-5.0, 20.0)
    with (
        sim.server(unit=7, baudrate=19200) as server,
        XYMD02(server.port, baudrate=19200, unit=7, timeout=TIMEOUT) as driver,
    ):
        assert driver.read() == {"temperature_c": -5.0, "humidity_rh": 20.0}


def test_open_close_cycles_leak_nothing(modbus_no_leaks: None) -> None:
    sim = still_sim()
    for _ in range(5):
        with sim.server() as server:
            for _ in range(3):
                with XYMD02(server.port, timeout=TIMEOUT) as driver:
                    driver.read()


def test_read_after_close_does_not_reopen(modbus_no_leaks: None) -> None:
    with still_sim().server() as server:
        driver = XYMD02(server.port, timeout=TIMEOUT)
        driver.close()
        with pytest.raises(BusError):
            driver.read()
        driver.close()


def test_adapter_gone_is_a_bus_error() -> None:
    server = still_sim().server()
    server.start()
    with XYMD02(server.port, timeout=TIMEOUT) as driver:
        server.close()
        with pytest.raises(BusError):
            driver.read()


def test_missing_port_is_a_bus_error() -> None:
    with pytest.raises(BusError):
        XYMD02("/dev/does-not-exist", timeout=TIMEOUT)
