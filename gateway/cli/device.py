"""The device's commands: ``run`` (the daemon), ``launch`` (the unit's entry, which picks
the firmware slot), ``check-config``, ``read``, ``config show`` and ``scan``.

They run on the device, so this module imports nothing of the operator's side (no rich, no
signing): ``edge-gateway run`` loads the daemon and what it needs, and no more. What a
command needs beyond the config loader it imports when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gateway.cli.common import EXIT_FAILURE, EXIT_INVALID, EXIT_OK, Command, Failed
from gateway.cli.converters import i2c_bus, positive
from gateway.cli.options import config_file
from gateway.config import file as configfile


class Run(Command):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        config_file(parser)

    def run(self, args: argparse.Namespace) -> int:
        from gateway import daemon  # the daemon's imports (gmqtt, asyncio machinery) only here

        try:
            code = daemon.run(args.config)
        except _unusable_state() as exc:
            # State directory not writable, queue file unusable: nothing can run.
            raise Failed(f"edge-gateway: cannot start: {exc}") from None
        from gateway.firmware import launcher

        if code == launcher.RESTART_EXIT:  # a firmware slot switched: the launcher again, at once
            launcher.relaunch(os.environ, lambda line: print(f"edge-gateway: {line}",
                                                             file=sys.stderr, flush=True))
        return code


def _unusable_state() -> tuple[type[Exception], ...]:
    """What unusable state raises. Evaluated when an exception is being matched: by then
    sqlite3 is loaded if the queue has a disk tier, and only then (it costs 1 MiB)."""
    sqlite3 = sys.modules.get("sqlite3")
    return (OSError,) if sqlite3 is None else (OSError, sqlite3.Error)


class Launch(Command):
    """The unit's entry: the stable launcher picks the slot (and counts trial starts), then
    the slot's daemon replaces this process, or this install's own ``run`` goes on."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        config_file(parser)

    def run(self, args: argparse.Namespace) -> int:
        from gateway.firmware import launcher

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
                os.execve(command[0], command, launcher.child_env(os.environ, slot))
            except OSError as exc:
                say(f"cannot start {command[0]}: {exc}; running the base install")
        os.environ.update(launcher.child_env(os.environ, None))
        return Run().run(args)


class CheckConfig(Command):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("file", type=Path, metavar="FILE")

    def run(self, args: argparse.Namespace) -> int:
        configfile.load(args.file)
        print(f"{args.file}: ok")
        return EXIT_OK


class Read(Command):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        config_file(parser)
        parser.add_argument("--sensor", metavar="NAME", help="only this sensor")
        parser.add_argument("--count", type=positive, default=1, metavar="N")
        parser.add_argument("--json", action="store_true",
                            help="telemetry payloads, one per line")

    def run(self, args: argparse.Namespace) -> int:
        import asyncio

        from gateway.sampling import readout

        config = configfile.load(args.config)
        names = [s.name for s in config.sensors]
        if args.sensor is not None and args.sensor not in names:
            raise Failed(f"edge-gateway: no sensor {args.sensor!r} in {args.config} "
                         f"(it has: {', '.join(names) or 'none'})", EXIT_INVALID)
        wanted = [args.sensor] if args.sensor else names
        ok = asyncio.run(readout.read(config, wanted, args.count, args.json, sys.stdout,
                                      sys.stderr))
        return EXIT_OK if ok else EXIT_FAILURE


class ConfigShow(Command):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        config_file(parser)
        parser.add_argument("--json", action="store_true", help="as JSON: config and origins")

    def run(self, args: argparse.Namespace) -> int:
        import json

        import yaml

        from gateway.remote import effective

        try:
            result = effective.load(args.config)
        except ValueError as exc:
            raise Failed(f"{args.config}: applied remote layers unreadable: {exc}") from None
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


class Scan(Command):
    """Lists what answers on an I2C bus and what is on the 1-Wire bus. A bus that is not
    there is a line saying how to turn it on; only when neither is there does it fail."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--bus", type=i2c_bus, default=1, help="bus number, path or sim (1)")
        parser.add_argument("--w1-root", type=Path, default=Path("/sys/bus/w1/devices"),
                            metavar="DIR", help="the 1-Wire devices (/sys/bus/w1/devices)")

    def run(self, args: argparse.Namespace) -> int:
        from drivers import ds18b20
        from drivers.errors import BusError
        from drivers.i2c import I2CBus, open_i2c
        from drivers.scan import scan
        from drivers.sim.board import populated_bus

        missing = []
        bus: I2CBus | None = None
        try:
            bus = populated_bus() if args.bus == "sim" else open_i2c(args.bus)
        except BusError as exc:
            missing.append(str(exc))
        if bus is not None:
            try:
                found = scan(bus)
            finally:
                bus.close()
            for chip in found:
                print(f"0x{chip.address:02x}  {chip.chip}")
            if not found:
                print(f"no supported chip answers on bus {args.bus}", file=sys.stderr)
        try:
            probes = ds18b20.scan(args.w1_root)
        except BusError as exc:
            missing.append(f"1-Wire: {exc}")
        else:
            for probe in probes:
                print(f"{probe.id}  {probe.chip}")
            if not probes:
                print(f"no 1-Wire device under {args.w1_root}", file=sys.stderr)
        for line in missing:
            print(f"edge-gateway: {line}", file=sys.stderr)
        return EXIT_FAILURE if len(missing) == 2 else EXIT_OK
