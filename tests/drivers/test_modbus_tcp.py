"""Modbus RTU through a TCP serial server: the same drivers, over socat (``socket://``)
or an RFC 2217 server (``rfc2217://``) bridged to the emulator's pty, with timeouts,
exception codes and a vanished server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from serial_server import Rfc2217Server, TcpSerialServer

from drivers.errors import BusError, ModbusExceptionError, SensorTimeout
from drivers.sim.faults import Faults
from drivers.sim.modbus import ModbusSimServer, respond
from drivers.sim.signal import Climate
from drivers.sim.wtvb01 import Machine, WTVB01Sim
from drivers.sim.xymd02 import XYMD02Sim
from drivers.wtvb01 import WTVB01
from drivers.xymd02 import XYMD02

TIMEOUT = 0.2
AXES = "xyz"


def bridged(server: ModbusSimServer, tmp_path: Path) -> TcpSerialServer:
    return TcpSerialServer(server.port, tmp_path)


def test_xymd02_through_a_serial_server(tmp_path: Path) -> None:
    sim = XYMD02Sim(Climate(21.7, 48.3, noise=0.0), clock=lambda: 0.0)
    with (
        sim.server() as server,
        bridged(server, tmp_path) as tcp,
        XYMD02(tcp.url, timeout=TIMEOUT) as driver,
    ):
        for _ in range(3):
            assert driver.read() == {"temperature_c": 21.7, "humidity_rh": 48.3}
        assert server.requests == 3


def test_wtvb01_through_a_serial_server(tmp_path: Path) -> None:
    machine = Machine((4.0, 2.5, 6.0), (24.8, 24.8, 49.6), 35.0, noise=0.0)
    sim = WTVB01Sim(machine, clock=lambda: 12.5)
    with (
        sim.server() as server,
        bridged(server, tmp_path) as tcp,
        WTVB01(tcp.url, timeout=TIMEOUT) as driver,
    ):
        reading = driver.read()
    truth = sim.truth
    assert truth is not None
    for i, axis in enumerate(AXES):
        assert reading[f"velocity_{axis}_mm_s"] == pytest.approx(truth.velocity_mm_s[i], abs=0.5)
        assert reading[f"frequency_{axis}_hz"] == pytest.approx(truth.frequency_hz[i], abs=0.05)
        assert reading[f"accel_{axis}_g"] == pytest.approx(truth.accel_g[i], abs=0.5 / 2048)
    assert reading["temperature_c"] == pytest.approx(truth.temperature_c, abs=0.005)


def test_silent_device_times_out_after_bounded_retries(tmp_path: Path) -> None:
    faults = Faults(unplugged=True)
    with (
        XYMD02Sim(faults=faults).server() as server,
        bridged(server, tmp_path) as tcp,
        XYMD02(tcp.url, timeout=TIMEOUT) as driver,
    ):
        with pytest.raises(SensorTimeout):
            driver.read()
        assert server.requests == 3  # three attempts, as on a tty
        faults.unplugged = False
        assert set(driver.read()) == {"temperature_c", "humidity_rh"}


def test_rfc2217_sets_the_line_and_reads(modbus_no_leaks: None) -> None:
    sim = XYMD02Sim(Climate(-3.5, 88.0, noise=0.0), clock=lambda: 0.0)
    with (
        sim.server(baudrate=19200) as server,
        Rfc2217Server(server.port) as rfc,
        XYMD02(rfc.url, baudrate=19200, timeout=TIMEOUT) as driver,
    ):
        assert rfc.line.baudrate == 19200  # set by the driver, through the protocol
        assert driver.read() == {"temperature_c": -3.5, "humidity_rh": 88.0}


def test_rfc2217_silent_device_times_out() -> None:
    with (
        XYMD02Sim(faults=Faults(unplugged=True)).server() as server,
        Rfc2217Server(server.port) as rfc,
        XYMD02(rfc.url, timeout=TIMEOUT) as driver,
    ):
        with pytest.raises(SensorTimeout):
            driver.read()
        assert server.requests == 3


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A serial server that accepts the connection and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield f"socket://127.0.0.1:{listener.getsockname()[1]}"


def test_silent_serial_server_is_a_timeout(silent_server: str) -> None:
    with XYMD02(silent_server, timeout=TIMEOUT) as driver, pytest.raises(SensorTimeout):
        driver.read()


def test_exception_code_through_a_serial_server(tmp_path: Path) -> None:
    with (
        XYMD02Sim(faults=Faults(nack_rate=1.0)).server() as server,
        bridged(server, tmp_path) as tcp,
        XYMD02(tcp.url, timeout=TIMEOUT) as driver,
    ):
        with pytest.raises(ModbusExceptionError) as err:
            driver.read()
        assert err.value.code == 6


class LateResponder:
    """Answers the first request after ``delay``, the later ones at once: a late answer."""

    def __init__(self, sim: XYMD02Sim, delay: float) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.url = f"socket://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sim, self.delay = sim, delay
        self.late_answer_sent = threading.Event()
        self.thread = threading.Thread(target=self._serve)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            first = True
            while request := connection.recv(8):
                if first:
                    self.late_answer_sent.wait(self.delay)
                connection.sendall(respond(request, self.sim.registers))
                if first:
                    self.late_answer_sent.set()
                    first = False

    def close(self) -> None:
        self.thread.join(10)
        self.listener.close()


def test_late_answer_is_not_taken_for_the_next_request() -> None:
    sim = XYMD02Sim(Climate(10.0, 40.0, noise=0.0), clock=lambda: 0.0)
    responder = LateResponder(sim, delay=3 * TIMEOUT)
    try:
        with XYMD02(responder.url, timeout=TIMEOUT, retries=0) as driver:
            with pytest.raises(SensorTimeout):
                driver.read()
            assert responder.late_answer_sent.wait(10)
            sim.climate = Climate(30.0, 60.0, noise=0.0)
            assert driver.read() == {"temperature_c": 30.0, "humidity_rh": 60.0}
    finally:
        responder.close()


def test_serial_server_gone_is_a_bus_error(tmp_path: Path) -> None:
    with (
        XYMD02Sim().server() as server,
        bridged(server, tmp_path) as tcp,
        XYMD02(tcp.url, timeout=TIMEOUT) as driver,
    ):
        driver.read()
        tcp.close()
        with pytest.raises(BusError):
            driver.read()


def test_nothing_listening_is_a_bus_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        url = f"socket://127.0.0.1:{closed.getsockname()[1]}"
    with pytest.raises(BusError, match="cannot open"):
        XYMD02(url, timeout=TIMEOUT)


def test_unknown_url_scheme_is_a_bus_error() -> None:
    with pytest.raises(BusError, match="cannot open"):
        XYMD02("nosuch://127.0.0.1:1", timeout=TIMEOUT)


def test_open_close_cycles_leak_nothing(tmp_path: Path, modbus_no_leaks: None) -> None:
    with XYMD02Sim().server() as server:
        for _ in range(3):
            with bridged(server, tmp_path) as tcp, XYMD02(tcp.url, timeout=TIMEOUT) as driver:
                driver.read()
