"""DS18B20 emulator: a fake ``/sys/bus/w1/devices`` tree, as the kernel's w1-therm
driver lays it out, with probes whose ``w1_slave`` files an emulator rewrites.

The kernel converts when ``w1_slave`` is read; a plain file cannot, so ``W1Tree.refresh``
samples every probe and rewrites its file, and whoever reads (a test, the gateway's
emulated sensor) refreshes first. Each file carries a genuine scratchpad: the raw
temperature in 1/16 °C, the alarm and configuration bytes and the Maxim CRC-8.

``Faults`` per refresh:

* ``unplugged``: the probe's directory is gone, as when the kernel drops a probe;
* ``corrupt_crc_rate``: a bit of the scratchpad flipped, so the CRC line says ``NO``;
* ``nack_rate``: the probe was reset and holds its power-on value, 85.000 °C;
* ``no_answer_rate``: -127 °C, the "disconnected" value of the Dallas libraries, which
  some setups pass on with a good CRC;
* ``stuck``: the last temperature again.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from drivers.sim.faults import Faults
from drivers.sim.signal import Climate

# Scratchpad bytes 2..7 after power-on with the factory settings: TH, TL, 12-bit
# configuration, and the reserved bytes.
FACTORY_TAIL = bytes([0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10])
POWER_ON_RAW = 0x0550  # 85.000 C
DISCONNECTED_RAW = 0xF810  # -127.000 C


def crc8_maxim(data: bytes) -> int:
    """Dallas/Maxim 1-Wire CRC-8: polynomial x^8 + x^5 + x^4 + 1, reflected (0x8C)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8C if crc & 1 else crc >> 1
    return crc


def raw_temperature(celsius: float) -> int:
    """The 12-bit reading in 1/16 °C as the chip stores it, two's complement."""
    return max(-55 * 16, min(125 * 16, round(celsius * 16))) & 0xFFFF


def w1_slave(scratchpad: bytes, millidegrees: int) -> str:
    """The two lines w1-therm prints for a scratchpad it read."""
    data = " ".join(f"{b:02x}" for b in scratchpad)
    verdict = "YES" if crc8_maxim(scratchpad[:8]) == scratchpad[8] else "NO"
    return f"{data} : crc={scratchpad[8]:02x} {verdict}\n{data} t={millidegrees}\n"


def render(raw: int, corrupt: bool = False) -> str:
    body = raw.to_bytes(2, "little") + FACTORY_TAIL
    scratchpad = bytearray(body + bytes([crc8_maxim(body)]))
    if corrupt:
        scratchpad[0] ^= 0x01
    signed = raw - 0x10000 if raw & 0x8000 else raw
    # The kernel's arithmetic: integer, truncated toward zero.
    return w1_slave(bytes(scratchpad), int(signed * 1000 / 16))


@dataclass
class DS18B20Sim:
    """One probe: its id and what it measures."""

    id: str
    climate: Climate = field(default_factory=Climate)
    clock: Callable[[], float] = time.monotonic
    faults: Faults = field(default_factory=Faults)
    # What the last refresh sampled (C), for tests comparing decoded values.
    truth: float | None = None

    def contents(self) -> str | None:
        """The ``w1_slave`` text of a read now, or None when the probe is unplugged."""
        faults = self.faults
        if faults.unplugged:
            return None
        if faults.roll(faults.no_answer_rate):
            return render(DISCONNECTED_RAW)
        if faults.roll(faults.nack_rate):
            return render(POWER_ON_RAW)
        if not (faults.stuck and self.truth is not None):
            self.truth = self.climate.sample(self.clock())[0]
        return render(raw_temperature(self.truth), faults.roll(faults.corrupt_crc_rate))


class W1Tree:
    """The devices directory under ``root``: a bus master and the attached probes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.probes: dict[str, DS18B20Sim] = {}
        (root / "w1_bus_master1").mkdir(parents=True, exist_ok=True)

    def attach(self, probe: DS18B20Sim) -> None:
        self.probes[probe.id] = probe
        self.refresh()

    def detach(self, probe_id: str) -> None:
        self.probes.pop(probe_id)
        shutil.rmtree(self.root / probe_id, ignore_errors=True)

    def refresh(self) -> None:
        for probe_id, probe in self.probes.items():
            directory = self.root / probe_id
            text = probe.contents()
            if text is None:
                shutil.rmtree(directory, ignore_errors=True)
                continue
            directory.mkdir(exist_ok=True)
            # Written aside and renamed, so a reader never sees half a file.
            staging = directory / "w1_slave.new"
            staging.write_text(text, encoding="ascii")
            staging.replace(directory / "w1_slave")
