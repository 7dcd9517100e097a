"""The ``edge-gateway`` command line: the parser built from the command table
(``table.py``), and ``main``, which runs the chosen command and turns its failure into one
line on stderr and an exit code.

A command's arguments are declared beside its handler, in the module the table names, and
that module is imported only when argparse reaches its command: the daemon's ``run`` is the
command line's most frequent use and loads nothing of the operator's side. Exit codes: 0
success, 1 runtime failure, 2 bad usage or invalid input. Errors are one line each on
stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from gateway import __version__
from gateway.cli.common import EXIT_FAILURE, EXIT_INVALID, Failed
from gateway.cli.table import COMMANDS, GROUPS, CommandInfo
from gateway.config.file import ConfigError

__all__ = ["build_parser", "main"]

DESCRIPTION = """\
A sensor gateway for a Raspberry Pi: reads temperature, humidity and vibration sensors on I2C
and Modbus RTU (or their emulators, with `bus: sim` / `port: sim`), preprocesses the readings
and publishes them over one supervised MQTT connection.

Start with `edge-gateway check-config FILE`, then `edge-gateway read -c FILE` to see what the
sensors say, then `edge-gateway run -c FILE` (normally run by systemd as edge-gateway.service).
"""

EPILOG = "exit status: 0 success, 1 runtime failure, 2 bad usage or invalid input"


if TYPE_CHECKING:  # generic in typeshed only
    _SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    _SubParsers = argparse._SubParsersAction


class _Commands(_SubParsers):
    """Commands known by name and summary; the one argparse reaches gets its arguments,
    from its module, just before its part of the command line is parsed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unloaded: dict[str, CommandInfo] = {}

    def add(self, name: str, info: CommandInfo) -> None:
        self.add_parser(name, help=info.summary)
        self._unloaded[name] = info

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        name = str(values[0]) if isinstance(values, list) and values else ""
        info = self._unloaded.pop(name, None)
        if info is not None:
            command = info.load()
            chosen = self.choices[name]
            chosen.description = command.description
            command.add_arguments(chosen)
            chosen.set_defaults(handler=command.run)
        super().__call__(parser, namespace, values, option_string)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-gateway",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = _commands(parser, "command", "COMMAND")
    groups: dict[str, _Commands] = {}
    for name, info in COMMANDS.items():
        group, _, action = name.rpartition(" ")
        if group and group not in groups:
            groups[group] = _commands(commands.add_parser(group, help=GROUPS[group]),
                                      "action", "ACTION")
        (groups[group] if group else commands).add(action, info)
    return parser


def _commands(parser: argparse.ArgumentParser, dest: str, metavar: str) -> _Commands:
    return cast(_Commands, parser.add_subparsers(dest=dest, required=True, metavar=metavar,
                                                 action=_Commands))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return EXIT_INVALID
    except Failed as exc:
        print(exc.line, file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return EXIT_FAILURE
