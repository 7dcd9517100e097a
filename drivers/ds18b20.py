"""DS18B20 temperature probes on 1-Wire, through the Linux kernel's w1-therm driver.

With ``dtoverlay=w1-gpio`` a Raspberry Pi's kernel runs the bus: each probe appears as
``<w1_root>/28-<serial>/``, and reading its ``w1_slave`` file starts a conversion
(up to 750 ms at 12 bits) and returns the scratchpad twice::

    72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
    72 01 4b 46 7f ff 0e 10 57 t=23125

The first line ends in ``YES`` when the scratchpad's CRC matched; ``t=`` is the
temperature in thousandths of a degree. 85.000 °C is the value a probe holds after a
reset (a power glitch on the line) until it converts, and -127 °C is the Dallas
libraries' "disconnected": neither is a measurement. A line held low (no pull-up, a
short) reads as all zeros, whose CRC is zero too, so the scratchpad's configuration
byte, whose low five bits the chip always reads as ones, is checked as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from drivers.errors import BusError, CrcError, InvalidReading

DEFAULT_W1_ROOT = Path("/sys/bus/w1/devices")
FAMILY = "28"
AUTO = "auto"
POWER_ON_MILLIDEGREES = 85000
NOT_ANSWERING_MILLIDEGREES = -127000
# The data sheet's measuring range; anything else is a corrupted read.
RANGE_C = (-55.0, 125.0)
# Configuration register: bit 7 reads 0 and bits 4..0 read 1, whatever the resolution.
CONFIG_MASK, CONFIG_FIXED = 0x9F, 0x1F
# Other 1-Wire families the kernel exposes, named by ``scan`` but not read here.
FAMILIES = {
    "10": "ds18s20 (unsupported)",
    "22": "ds1822 (unsupported)",
    "28": "ds18b20",
    "3b": "max31850 (unsupported)",
    "42": "ds28ea00 (unsupported)",
}
ENABLE_HINT = (
    "is the 1-Wire bus enabled? (dtoverlay=w1-gpio in /boot/firmware/config.txt, then reboot)"
)


@dataclass(frozen=True)
class Found:
    id: str
    chip: str


def scan(w1_root: Path = DEFAULT_W1_ROOT) -> list[Found]:
    """The 1-Wire devices under ``w1_root`` (not the bus masters), sorted by id."""
    try:
        entries = sorted(p.name for p in w1_root.iterdir())
    except FileNotFoundError as exc:
        raise BusError(f"{w1_root} does not exist: {ENABLE_HINT}") from exc
    except OSError as exc:
        raise BusError(f"cannot list {w1_root}: {exc}") from exc
    found = []
    for name in entries:
        family, dash, serial = name.partition("-")
        if dash and serial and not name.startswith("w1_bus_master"):
            found.append(Found(name, FAMILIES.get(family, f"family {family} (unsupported)")))
    return found


def resolve(probe_id: str, w1_root: Path = DEFAULT_W1_ROOT) -> str:
    """``probe_id`` itself, or for ``auto`` the one DS18B20 attached."""
    if probe_id != AUTO:
        return probe_id
    probes = [f.id for f in scan(w1_root) if f.id.startswith(f"{FAMILY}-")]
    if len(probes) == 1:
        return probes[0]
    if not probes:
        raise BusError(f"id auto: no DS18B20 (28-*) under {w1_root}; {ENABLE_HINT}")
    raise BusError(
        f"id auto: {len(probes)} DS18B20 probes under {w1_root} ({', '.join(probes)}); "
        f"name one as id"
    )


def parse(text: str, what: str = "DS18B20") -> float:
    """The temperature (C) in a ``w1_slave`` file's ``text``."""
    lines = text.splitlines()
    if len(lines) < 2 or "t=" not in lines[1]:
        raise BusError(f"{what}: unexpected w1_slave contents {text!r}")
    if not lines[0].rstrip().endswith("YES"):
        raise CrcError(f"{what}: scratchpad CRC mismatch ({lines[0].strip()})")
    try:
        scratchpad = bytes.fromhex(lines[0].partition(":")[0])
    except ValueError as exc:
        raise BusError(f"{what}: unexpected scratchpad {lines[0]!r}") from exc
    if len(scratchpad) != 9 or scratchpad[4] & CONFIG_MASK != CONFIG_FIXED:
        raise BusError(
            f"{what}: not a DS18B20 scratchpad ({lines[0].strip()}): "
            f"is the 4.7 kOhm pull-up fitted and the line free of shorts?"
        )
    try:
        millidegrees = int(lines[1].rpartition("t=")[2])
    except ValueError as exc:
        raise BusError(f"{what}: unexpected temperature in {lines[1]!r}") from exc
    if millidegrees == POWER_ON_MILLIDEGREES:
        raise InvalidReading(f"{what}: 85.000 C, the power-on value: the probe was reset")
    if millidegrees == NOT_ANSWERING_MILLIDEGREES:
        raise BusError(f"{what}: -127 C, the probe stopped answering")
    celsius = millidegrees / 1000.0
    if not RANGE_C[0] <= celsius <= RANGE_C[1]:
        raise InvalidReading(f"{what}: {celsius} C is outside the probe's range")
    return celsius


class DS18B20:
    """One probe, by its id (``28-...``) or ``auto``: the single one attached, looked up
    once, here. Holds nothing open; ``close`` is for symmetry with the other drivers."""

    def __init__(self, probe_id: str = AUTO, w1_root: Path = DEFAULT_W1_ROOT) -> None:
        self.w1_root = w1_root
        self.id = resolve(probe_id, w1_root)

    def __str__(self) -> str:
        return f"DS18B20 {self.id}"

    def read(self) -> dict[str, float]:
        path = self.w1_root / self.id / "w1_slave"
        try:
            text = path.read_text(encoding="ascii", errors="replace")
        except FileNotFoundError as exc:
            raise BusError(f"{self}: not on the bus ({path} is missing)") from exc
        except OSError as exc:
            # The kernel answers EIO (or, with some versions, ENODEV) when the read fails.
            raise BusError(f"{self}: {exc}") from exc
        return {"temperature_c": parse(text, str(self))}

    def close(self) -> None:
        """Nothing to release: each read opens and closes the file."""
