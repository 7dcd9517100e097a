"""``push-config``: a fragment of the device file checked, signed and published to a device
or a group, and the answers awaited (``gateway.operator.pushconfig``); for a group, the
command hands the push its table (``groupview``, drawn with rich).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.cli.checks import over_broker, private_key, require_rich, warn_of_size
from gateway.cli.common import Command
from gateway.cli.converters import seconds, topic_name, version_number
from gateway.cli.options import broker, broker_args, signing_key, topic_prefix


class PushConfig(Command):
    description = (
        "Checks FILE.yaml (top-level keys of the device file to replace) with the device's "
        "models, signs it and publishes it retained on P/D/config/set or P/group/G/config/set, "
        "then waits for each device's config/state. Exit 0 only if every device applied it.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        broker_args(parser)
        signing_key(parser)
        to = parser.add_mutually_exclusive_group(required=True)
        to.add_argument("--device", type=topic_name, metavar="ID", help="one device")
        to.add_argument("--group", type=topic_name, metavar="G",
                        help="the group's devices that are online (from their status)")
        parser.add_argument("--version", type=version_number, required=True, metavar="N",
                            help="above the last one pushed to this device or group")
        topic_prefix(parser)
        parser.add_argument("--timeout", type=seconds, default=30.0, metavar="S",
                            help="how long to wait for the answers (30)")
        parser.add_argument("--ttl", type=seconds, default=86400.0, metavar="S",
                            help="seconds until the update expires unapplied (86400, a day)")
        parser.add_argument("file", type=Path, metavar="FILE.yaml")

    def run(self, args: argparse.Namespace) -> int:
        from gateway.operator import fragment, pushconfig

        target = pushconfig.Target(args.prefix, device=args.device, group=args.group)
        config = fragment.read(args.file, target.scope)
        key = private_key(args.key)
        if args.group is not None:
            require_rich("push-config --group")
        update = pushconfig.Update(target, args.version, config, key, args.ttl)
        warn_of_size(len(update.envelope(0.0)))
        if args.group is None:
            return over_broker(pushconfig.push_device(broker(args), update, args.timeout,
                                                      sys.stdout))
        from gateway.operator.groupview import GroupView

        return over_broker(pushconfig.push_group(broker(args), update, args.timeout, sys.stdout,
                                                 GroupView(sys.stdout)))
