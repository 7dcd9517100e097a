"""DS18B20 probes read from a fake sysfs tree, with the faults a 1-Wire line shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.ds18b20 import DS18B20, Found, parse, resolve, scan
from drivers.errors import BusError, CrcError, InvalidReading
from drivers.sim.ds18b20 import DS18B20Sim, W1Tree, crc8_maxim, render
from drivers.sim.faults import Faults
from drivers.sim.signal import Climate

# A probe's w1_slave file as w1-therm prints it (the scratchpad of a real probe at
# 23.125 C; its CRC byte 0x57 is the check of the other eight).
GENUINE = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
PROBE_A = "28-0316a2794cff"
PROBE_B = "28-3c01d607d1a4"


def still(celsius: float, probe_id: str = PROBE_A, faults: Faults | None = None) -> DS18B20Sim:
    return DS18B20Sim(
        probe_id, Climate(celsius, noise=0.0), clock=lambda: 0.0, faults=faults or Faults()
    )


def tree(tmp_path: Path, *probes: DS18B20Sim) -> W1Tree:
    w1 = W1Tree(tmp_path / "devices")
    for probe in probes:
        w1.attach(probe)
    return w1


def test_the_crc_of_a_genuine_scratchpad() -> None:
    assert crc8_maxim(bytes.fromhex("72014b467fff0e10")) == 0x57


def test_parse_a_genuine_file() -> None:
    assert parse(GENUINE) == 23.125


def test_emulator_writes_what_the_kernel_prints() -> None:
    assert render(0x0172).splitlines()[1].endswith("t=23125")
    # -10.125 C is 0xFF5E; the kernel truncates toward zero.
    assert render(0xFF5E).splitlines()[1].endswith("t=-10125")
    assert render(0xFFFF).splitlines()[1].endswith("t=-62")


def test_reads_two_probes(tmp_path: Path) -> None:
    a, b = still(21.5), still(-10.125, PROBE_B)
    w1 = tree(tmp_path, a, b)
    assert DS18B20(PROBE_A, w1.root).read() == {"temperature_c": 21.5}
    assert DS18B20(PROBE_B, w1.root).read() == {"temperature_c": -10.125}


@settings(max_examples=30, deadline=None)
@given(celsius=st.floats(-55.0, 125.0), t=st.floats(0.0, 1e6), seed=st.integers(0, 2**32 - 1))
def test_reads_the_truth(
    tmp_path_factory: pytest.TempPathFactory, celsius: float, t: float, seed: int
) -> None:
    probe = DS18B20Sim(PROBE_A, Climate(celsius, seed=seed), clock=lambda: t)
    w1 = tree(tmp_path_factory.mktemp("w1"), probe)
    reading = DS18B20(PROBE_A, w1.root).read()["temperature_c"]
    assert probe.truth is not None
    # One step of 1/16 C, clamped to the probe's range as the chip does.
    assert reading == pytest.approx(min(125.0, max(-55.0, probe.truth)), abs=1 / 32 + 1e-3)


@pytest.mark.parametrize(
    ("faults", "error", "message"),
    [
        (Faults(corrupt_crc_rate=1.0), CrcError, "CRC mismatch"),
        (Faults(nack_rate=1.0), InvalidReading, "85.000 C, the power-on value"),
        (Faults(no_answer_rate=1.0), BusError, "-127 C"),
        (Faults(unplugged=True), BusError, "not on the bus"),
    ],
    ids=["crc NO", "85.000", "-127", "missing device"],
)
def test_faults(tmp_path: Path, faults: Faults, error: type[Exception], message: str) -> None:
    w1 = tree(tmp_path, still(20.0, faults=faults))
    with pytest.raises(error, match=message):
        DS18B20(PROBE_A, w1.root).read()


def test_crc_no_line_is_written_as_the_kernel_does(tmp_path: Path) -> None:
    w1 = tree(tmp_path, still(20.0, faults=Faults(corrupt_crc_rate=1.0)))
    first = (w1.root / PROBE_A / "w1_slave").read_text().splitlines()[0]
    assert first.endswith(" NO")


def test_plugged_back_reads_again(tmp_path: Path) -> None:
    probe = still(19.0, faults=Faults(unplugged=True))
    w1 = tree(tmp_path, probe)
    driver = DS18B20(PROBE_A, w1.root)
    with pytest.raises(BusError):
        driver.read()
    probe.faults.unplugged = False
    w1.refresh()
    assert driver.read() == {"temperature_c": 19.0}


def test_stuck_repeats_the_last_value(tmp_path: Path) -> None:
    now = [0.0]
    probe = DS18B20Sim(PROBE_A, Climate(seed=4), clock=lambda: now[0])
    w1 = tree(tmp_path, probe)
    driver = DS18B20(PROBE_A, w1.root)
    first = driver.read()
    probe.faults.stuck = True
    for _ in range(3):
        now[0] += 150.0
        w1.refresh()
        assert driver.read() == first
    probe.faults.stuck = False
    w1.refresh()
    assert driver.read() != first


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", BusError),
        ("72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n", BusError),
        ("72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 t=abc\n", BusError),
        ("ff ff ff ff ff ff ff ff ff : crc=c9 NO\nff ff ff ff ff ff ff ff ff t=-62\n", CrcError),
        ("00 00 00 00 00 00 00 00 00 : crc=00 YES\n00 00 00 00 00 00 00 00 00 t=0\n", BusError),
        ("72 01 4b : crc=57 YES\n72 01 4b t=23125\n", BusError),
        ("zz : crc=57 YES\nzz t=23125\n", BusError),
        (render(0x0820), InvalidReading),
    ],
    ids=["empty", "one line", "no number", "all ones", "all zeros", "short", "not hex", "130 C"],
)
def test_malformed_files(text: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse(text)


def test_auto_finds_the_one_probe(tmp_path: Path) -> None:
    w1 = tree(tmp_path, still(20.0))
    (w1.root / "10-000802b5c1d3").mkdir()  # a DS18S20: listed by scan, not taken by auto
    assert resolve("auto", w1.root) == PROBE_A
    assert DS18B20("auto", w1.root).id == PROBE_A


def test_auto_with_no_probe(tmp_path: Path) -> None:
    w1 = tree(tmp_path)
    with pytest.raises(BusError, match=r"no DS18B20 \(28-\*\) under .*dtoverlay=w1-gpio"):
        DS18B20("auto", w1.root)


def test_auto_with_several_probes_names_them(tmp_path: Path) -> None:
    w1 = tree(tmp_path, still(20.0, PROBE_B), still(20.0))
    with pytest.raises(BusError, match=f"2 DS18B20 probes .*\\({PROBE_A}, {PROBE_B}\\)"):
        DS18B20("auto", w1.root)


def test_scan_lists_the_probes(tmp_path: Path) -> None:
    w1 = tree(tmp_path, still(20.0, PROBE_B), still(20.0))
    (w1.root / "10-000802b5c1d3").mkdir()
    (w1.root / "3b-0000001a2b3c").mkdir()
    assert scan(w1.root) == [
        Found("10-000802b5c1d3", "ds18s20 (unsupported)"),
        Found(PROBE_A, "ds18b20"),
        Found(PROBE_B, "ds18b20"),
        Found("3b-0000001a2b3c", "max31850 (unsupported)"),
    ]


def test_scan_without_the_bus_says_how_to_enable_it(tmp_path: Path) -> None:
    with pytest.raises(BusError, match="dtoverlay=w1-gpio"):
        scan(tmp_path / "nothing")


def test_detach_removes_the_probe(tmp_path: Path) -> None:
    w1 = tree(tmp_path, still(20.0), still(21.0, PROBE_B))
    w1.detach(PROBE_B)
    assert [f.id for f in scan(w1.root)] == [PROBE_A]
