"""``fleet status``: what the broker holds of every device (``gateway.operator.fleetstatus``),
as rich tables (``fleetview``) or, with ``--json``, as a summary for other tools.
"""

from __future__ import annotations

import argparse
import sys

from gateway.cli.checks import over_broker, require_rich
from gateway.cli.common import EXIT_OK, Command
from gateway.cli.converters import seconds
from gateway.cli.options import broker, broker_args, topic_prefix


class FleetStatus(Command):
    description = (
        "Listens to the devices' retained status, config/state and firmware/state and their "
        "heartbeats for --settle seconds, then prints a table per device and per channel and "
        "release.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        broker_args(parser)
        topic_prefix(parser)
        parser.add_argument("--settle", type=seconds, default=5.0, metavar="S",
                            help="how long to listen (5); heartbeats come every "
                            "heartbeat.interval_s")
        parser.add_argument("--json", action="store_true", help="the summary as JSON")

    def run(self, args: argparse.Namespace) -> int:
        import json
        import time

        from gateway.operator import fleetstatus

        if not args.json:
            require_rich("fleet status")
        fleet = over_broker(fleetstatus.collect(broker(args), args.prefix, args.settle))
        summary = fleetstatus.summary(fleet, time.time())
        if args.json:
            print(json.dumps(summary, indent=2))
            return EXIT_OK
        from gateway.operator import fleetview

        fleetview.render(summary, sys.stdout)
        return EXIT_OK
