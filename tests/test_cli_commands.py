"""The command table: every entry names a command that exists, and a command's module is
imported only when that command is chosen, so ``edge-gateway run`` on a device loads
nothing of the operator's side (rich, signing, their MQTT session)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.cli.common import Command
from gateway.cli.table import COMMANDS

ROOT = Path(__file__).resolve().parents[1]


def loaded_after(statement: str) -> list[str]:
    """The operator's modules, rich and the command modules loaded by ``statement`` in a
    fresh interpreter."""
    probe = (
        "import json, sys\nfrom gateway.cli import build_parser\n"
        f"{statement}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'rich' or "
        "m.startswith(('gateway.operator', 'gateway.cli.')))))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, cwd=ROOT)
    names: list[str] = json.loads(result.stdout.splitlines()[-1])
    return names


def test_resolving_run_loads_nothing_of_the_operator() -> None:
    loaded = loaded_after(
        "args = build_parser().parse_args(['run', '-c', 'gw.yaml'])\n"
        "assert args.handler.__qualname__ == 'Run.run', args.handler")
    assert loaded == ["gateway.cli.common", "gateway.cli.converters", "gateway.cli.device",
                      "gateway.cli.options", "gateway.cli.table"]


def test_the_parser_imports_no_command_until_one_is_chosen() -> None:
    loaded = loaded_after("build_parser()")
    assert loaded == ["gateway.cli.common", "gateway.cli.table"]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_of_the_table_exists_and_has_its_help(
        name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert isinstance(COMMANDS[name].load(), Command)
    with pytest.raises(SystemExit) as exited:
        main([*name.split(), "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: edge-gateway {name} [-h]")


def test_the_program_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: edge-gateway [-h] [--version] COMMAND ...\n\nA sensor gateway")
    for name in COMMANDS:
        assert f"    {name.split()[0]}" in out
