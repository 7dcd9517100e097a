"""The command table: each command's name, where it is written (module and class) and its
one-line summary, which is all the parser knows of a command until it is chosen.

Modelled on pip's ``commands_dict``: ``edge-gateway --help`` lists the commands from here
without importing any of them, and running one imports its module alone, so ``run`` on a
device never loads the operator's commands. A name of two words is an action of a command
group (``config show``), the group's summary is in ``GROUPS``; the order is the order of
``--help``.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple, cast

from gateway.cli.common import Command


class CommandInfo(NamedTuple):
    module: str
    name: str
    summary: str

    def load(self) -> Command:
        """The command, its module imported now."""
        return cast(type[Command], getattr(importlib.import_module(self.module), self.name))()


DEVICE, KEYS, FIRMWARE = "gateway.cli.device", "gateway.cli.keys", "gateway.cli.firmware"

COMMANDS: dict[str, CommandInfo] = {
    "run": CommandInfo(DEVICE, "Run", "run the daemon until SIGTERM/SIGINT"),
    "launch": CommandInfo(DEVICE, "Launch",
                          "start the daemon of the active firmware slot (the unit's command)"),
    "check-config": CommandInfo(DEVICE, "CheckConfig", "validate a device file"),
    "read": CommandInfo(DEVICE, "Read", "read sensors once (or N times) and print"),
    "config show": CommandInfo(DEVICE, "ConfigShow",
                               "the file with the applied remote layers on top, and where "
                               "each top-level key comes from"),
    "scan": CommandInfo(DEVICE, "Scan", "list the chips on an I2C bus and the 1-Wire probes"),
    "keygen": CommandInfo(KEYS, "Keygen", "write a new Ed25519 key pair for signing"),
    "sign": CommandInfo(KEYS, "Sign", "wrap a payload file in a signed envelope"),
    "push-config": CommandInfo("gateway.cli.push", "PushConfig",
                               "sign a config update, publish it and wait for the answers"),
    "release": CommandInfo(FIRMWARE, "Release",
                           "sign and publish a release's firmware manifest (retained)"),
    "rollout": CommandInfo(FIRMWARE, "Rollout",
                           "raise a release's percentage step by step, halting on failures"),
    "fleet status": CommandInfo("gateway.cli.fleet", "FleetStatus",
                                "every device, and per channel who runs which release"),
}

GROUPS = {
    "config": "the effective config",
    "fleet": "what the broker knows of the devices",
}
