"""The ``edge-gateway`` command line: one function per command.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or invalid input. Errors are one
line each on stderr.
"""

from __future__ import annotations

import argparse
import sqlite3
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
    except (OSError, sqlite3.Error) as exc:
        # State directory not writable, queue file unusable: nothing can run.
        print(f"edge-gateway: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def cmd_launch(args: argparse.Namespace) -> int:
    """The unit's entry: the stable launcher picks the slot (and counts trial starts), then
    the slot's daemon replaces this process, or this install's own ``run`` goes on."""
    import os

    from gateway.firmware import launcher, slots

    def say(line: str) -> None:
        print(f"edge-gateway launch: {line}", file=sys.stderr, flush=True)

    state_dir = launcher.state_directory(os.environ)
    if state_dir is None:
        try:
            state_dir = configfile.state_dir_of(args.config)
        except configfile.ConfigError:
            state_dir = None  # `run` says what is wrong with the file
    slot = None if state_dir is None else launcher.prepare(state_dir, say)
    if state_dir is not None and slot is not None:
        command = launcher.argv(state_dir, slot, args.config)
        try:
            os.execve(command[0], command, {**os.environ, slots.SLOT_ENV: slot})
        except OSError as exc:
            say(f"cannot start {command[0]}: {exc}; running the base install")
    os.environ[slots.SLOT_ENV] = ""
    return cmd_run(args)


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


def cmd_keygen(args: argparse.Namespace) -> int:
    from gateway.operator import keygen

    try:
        pair = keygen.write_key_pair(args.out)
    except FileExistsError as exc:
        print(f"edge-gateway: {exc.filename} exists; keygen never overwrites a key",
              file=sys.stderr)
        return EXIT_INVALID
    except OSError as exc:
        print(f"edge-gateway: cannot write {exc.filename or args.out}: {exc.strerror or exc}",
              file=sys.stderr)
        # A directory that is not there is a wrong --out; anything else failed at run time.
        wrong_path = isinstance(exc, FileNotFoundError | NotADirectoryError)
        return EXIT_INVALID if wrong_path else EXIT_FAILURE
    print(f"kid: {pair.key.public.kid}")
    print(f"public key: {pair.public_path} (list it in the devices' remote_config.trusted_keys)")
    print(f"private key: {pair.private_path} (mode 0600; keep it off the devices)")
    return EXIT_OK


def cmd_sign(args: argparse.Namespace) -> int:
    from gateway.operator import sign
    from gateway.trust.envelope import DEFAULT_MAX_BYTES
    from gateway.trust.keys import KeyLoadError

    try:
        envelope = sign.sign_file(args.payload, args.key)
    except KeyLoadError as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except OSError as exc:
        print(f"edge-gateway: cannot read {args.payload}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_INVALID
    if len(envelope) > DEFAULT_MAX_BYTES:
        print(f"edge-gateway: warning: the envelope is {len(envelope)} bytes; devices refuse "
              f"more than remote_config.max_envelope_bytes ({DEFAULT_MAX_BYTES} by default)",
              file=sys.stderr)
    sys.stdout.write(envelope.decode("ascii") + "\n")
    return EXIT_OK


def i2c_bus(value: str) -> int | str:
    if value == "sim" or value.startswith("/dev/"):
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("a bus number, a /dev/i2c-N path, or sim") from None


def cmd_config_show(args: argparse.Namespace) -> int:
    import json

    import yaml

    from gateway.remote import effective

    try:
        result = effective.load(args.config)
    except configfile.ConfigError as exc:
        return report(exc)
    except ValueError as exc:
        print(f"{args.config}: applied remote layers unreadable: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps({"config": result.data, "origins": result.origins}, indent=2))
        return EXIT_OK
    width = max(map(len, result.origins.values()), default=0)
    for key, value in result.data.items():
        text = yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=False)
        lines = text.rstrip("\n").split("\n")
        print(f"{result.origins[key]:<{width}}  {lines[0]}")
        for line in lines[1:]:
            print(f"{'':<{width}}  {line}")
    return EXIT_OK


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

    launch = commands.add_parser(
        "launch", help="start the daemon of the active firmware slot (the unit's command)")
    launch.add_argument("-c", "--config", type=Path, required=True, metavar="FILE")
    launch.set_defaults(handler=cmd_launch)

    check = commands.add_parser("check-config", help="validate a device file")
    check.add_argument("file", type=Path, metavar="FILE")
    check.set_defaults(handler=cmd_check_config)

    read = commands.add_parser("read", help="read sensors once (or N times) and print")
    read.add_argument("-c", "--config", type=Path, required=True, metavar="FILE")
    read.add_argument("--sensor", metavar="NAME", help="only this sensor")
    read.add_argument("--count", type=positive, default=1, metavar="N")
    read.add_argument("--json", action="store_true", help="telemetry payloads, one per line")
    read.set_defaults(handler=cmd_read)

    config = commands.add_parser("config", help="the effective config").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    show = config.add_parser("show", help="the file with the applied remote layers on top, "
                             "and where each top-level key comes from")
    show.add_argument("-c", "--config", type=Path, required=True, metavar="FILE")
    show.add_argument("--json", action="store_true", help="as JSON: config and origins")
    show.set_defaults(handler=cmd_config_show)

    scan = commands.add_parser("scan", help="probe an I2C bus for the supported chips")
    scan.add_argument("--bus", type=i2c_bus, default=1, help="bus number, path or sim (1)")
    scan.set_defaults(handler=cmd_scan)

    keygen = commands.add_parser("keygen", help="write a new Ed25519 key pair for signing")
    keygen.add_argument("--out", type=Path, required=True, metavar="PREFIX",
                        help="writes PREFIX.key (private, mode 0600) and PREFIX.pub")
    keygen.set_defaults(handler=cmd_keygen)

    sign = commands.add_parser("sign", help="wrap a payload file in a signed envelope")
    sign.add_argument("--key", type=Path, required=True, metavar="KEYFILE",
                      help="a private key from keygen")
    sign.add_argument("payload", type=Path, metavar="PAYLOAD.json")
    sign.set_defaults(handler=cmd_sign)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return EXIT_FAILURE
