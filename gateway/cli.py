"""The ``edge-gateway`` command line: one function per command.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or invalid input. Errors are one
line each on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from gateway import __version__
from gateway.config import file as configfile

EXIT_OK, EXIT_FAILURE, EXIT_INVALID = 0, 1, 2

DESCRIPTION = """\
A sensor gateway for a Raspberry Pi: reads temperature, humidity and vibration sensors on I2C
and Modbus RTU (or their emulators, with `bus: sim` / `port: sim`), preprocesses the readings
and publishes them over one supervised MQTT connection.

Start with `edge-gateway check-config FILE`, then `edge-gateway read -c FILE` to see what the
sensors say, then `edge-gateway run -c FILE` (normally run by systemd as edge-gateway.service).
"""

EPILOG = "exit status: 0 success, 1 runtime failure, 2 bad usage or invalid input"


def report(error: configfile.ConfigError) -> int:
    """One line per issue on stderr; the exit code of invalid input."""
    for issue in error.issues:
        print(issue, file=sys.stderr)
    return EXIT_INVALID


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        configfile.load(args.file)
    except configfile.ConfigError as exc:
        return report(exc)
    print(f"{args.file}: ok")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from gateway import daemon  # the daemon's imports (gmqtt, asyncio machinery) only here

    try:
        return daemon.run(args.config)
    except configfile.ConfigError as exc:
        return report(exc)
    except _unusable_state() as exc:
        # State directory not writable, queue file unusable: nothing can run.
        print(f"edge-gateway: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _unusable_state() -> tuple[type[Exception], ...]:
    """What unusable state raises. Evaluated when an exception is being matched: by then
    sqlite3 is loaded if the queue has a disk tier, and only then (it costs 1 MiB)."""
    sqlite3 = sys.modules.get("sqlite3")
    return (OSError,) if sqlite3 is None else (OSError, sqlite3.Error)


def cmd_read(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.sampling import readout

    try:
        config = configfile.load(args.config)
    except configfile.ConfigError as exc:
        return report(exc)
    names = [s.name for s in config.sensors]
    if args.sensor is not None and args.sensor not in names:
        print(f"edge-gateway: no sensor {args.sensor!r} in {args.config} "
              f"(it has: {', '.join(names) or 'none'})", file=sys.stderr)
        return EXIT_INVALID
    wanted = [args.sensor] if args.sensor else names
    ok = asyncio.run(readout.read(config, wanted, args.count, args.json, sys.stdout, sys.stderr))
    return EXIT_OK if ok else EXIT_FAILURE


def positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError("a whole number of at least 1")
    return number


def cmd_scan(args: argparse.Namespace) -> int:
    from drivers.errors import BusError
    from drivers.i2c import I2CBus, open_i2c
    from drivers.scan import scan
    from drivers.sim.board import populated_bus

    bus: I2CBus
    try:
        bus = populated_bus() if args.bus == "sim" else open_i2c(args.bus)
    except BusError as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        found = scan(bus)
    finally:
        bus.close()
    for chip in found:
        print(f"0x{chip.address:02x}  {chip.chip}")
    if not found:
        print(f"no supported chip answers on bus {args.bus}", file=sys.stderr)
    return EXIT_OK


def i2c_bus(value: str) -> int | str:
    if value == "sim" or value.startswith("/dev/"):
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("a bus number, a /dev/i2c-N path, or sim") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-gateway",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon until SIGTERM/SIGINT")
    run.add_argument("-c", "--config", type=Path, required=True, metavar="FILE")
    run.set_defaults(handler=cmd_run)

    check = commands.add_parser("check-config", help="validate a device file")
    check.add_argument("file", type=Path, metavar="FILE")
    check.set_defaults(handler=cmd_check_config)

    read = commands.add_parser("read", help="read sensors once (or N times) and print")
    read.add_argument("-c", "--config", type=Path, required=True, metavar="FILE")
    read.add_argument("--sensor", metavar="NAME", help="only this sensor")
    read.add_argument("--count", type=positive, default=1, metavar="N")
    read.add_argument("--json", action="store_true", help="telemetry payloads, one per line")
    read.set_defaults(handler=cmd_read)

    scan = commands.add_parser("scan", help="probe an I2C bus for the supported chips")
    scan.add_argument("--bus", type=i2c_bus, default=1, help="bus number, path or sim (1)")
    scan.set_defaults(handler=cmd_scan)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return EXIT_FAILURE
