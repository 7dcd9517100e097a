"""The operator's firmware commands: ``release`` signs and publishes a release's manifest,
``rollout`` raises its percentage step by step (``gateway.operator.rollout``) and hands it
the progress view it draws on (``rolloutview``, rich).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.cli.checks import over_broker, private_key, require_rich
from gateway.cli.common import EXIT_INVALID, EXIT_OK, Command, Failed
from gateway.cli.converters import (
    fraction,
    pep440,
    pep440_text,
    percentage,
    positive,
    seconds,
    steps,
    topic_name,
)
from gateway.cli.options import broker, broker_args, signing_key, topic_prefix


class Release(Command):
    description = (
        "Hashes the release bundle FILE (size and sha256), signs a firmware manifest for "
        "channel C and publishes it retained on P/firmware/C/manifest. Devices of the channel "
        "whose bucket falls under --percent install it.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        broker_args(parser)
        signing_key(parser)
        parser.add_argument("--channel", type=topic_name, required=True, metavar="C")
        parser.add_argument("--version", type=pep440_text, required=True, metavar="V",
                            help="the release's PEP 440 version")
        parser.add_argument("--artifact", type=Path, required=True, metavar="FILE",
                            help="the release bundle (.tar.gz of wheels)")
        parser.add_argument("--url", required=True, metavar="URL",
                            help="where devices download FILE (http:// or https://)")
        parser.add_argument("--percent", type=percentage, required=True, metavar="P",
                            help="share of the channel's devices that may install it (0-100)")
        parser.add_argument("--salt", metavar="S",
                            help="draws the cohort (default CHANNEL:VERSION, a fresh one each "
                            "release)")
        parser.add_argument("--halt", action="store_true",
                            help="devices that have not started installing stop")
        parser.add_argument("--ttl", type=seconds, default=30 * 86400.0, metavar="S",
                            help="seconds until the manifest expires (2592000, 30 days)")
        topic_prefix(parser)

    def run(self, args: argparse.Namespace) -> int:
        from gateway.operator import release
        from gateway.trust.rejection import Rejected

        key = private_key(args.key)
        try:
            artifact = release.digest(args.artifact)
        except OSError as exc:
            raise Failed(f"edge-gateway: cannot read {args.artifact}: {exc.strerror or exc}",
                         EXIT_INVALID) from None
        manifest = release.Manifest.of(args.channel, args.version, args.url, artifact,
                                       args.percent, args.salt, args.halt, args.ttl)
        try:
            manifest.check()
        except Rejected as exc:
            raise Failed(f"edge-gateway: the manifest would be refused: {exc.reason}",
                         EXIT_INVALID) from None
        topic = over_broker(release.publish(broker(args), args.prefix, manifest, key))
        print(f"released {manifest.channel} {manifest.version} to {manifest.percent:g} % "
              f"{'(halted) ' if manifest.halt else ''}on {topic} (kid {key.public.kid})")
        print(f"sha256 {artifact.sha256}, {artifact.size} bytes, salt {manifest.salt}")
        return EXIT_OK


class Rollout(Command):
    description = (
        "Re-signs the retained manifest of channel C (it must release V, signed with KEYFILE) "
        "at each step's percentage and watches the channel's devices' firmware/state. Halts "
        "(manifest halt: true, exit 1) when the failure rate of the devices eligible at the "
        "current step, silent ones counted as failed, exceeds --max-failure-rate once "
        "--min-reports have reported. Exit 0 when the last step has soaked.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        broker_args(parser)
        signing_key(parser, help="the private key the release was signed with")
        parser.add_argument("--channel", type=topic_name, required=True, metavar="C")
        parser.add_argument("--version", type=pep440, required=True, metavar="V")
        parser.add_argument("--steps", type=steps, required=True, metavar="1,10,50,100",
                            help="rising percentages")
        parser.add_argument("--soak", type=seconds, required=True, metavar="S",
                            help="how long a step runs on after every eligible device "
                            "reported")
        parser.add_argument("--max-failure-rate", type=fraction, required=True, metavar="F",
                            help="halt above this share of failed, rolled back or silent "
                            "devices")
        parser.add_argument("--min-reports", type=positive, default=5, metavar="N",
                            help="judge the failure rate only once N eligible devices "
                            "reported (5)")
        parser.add_argument("--report-timeout", type=seconds, default=1800.0, metavar="T",
                            help="an eligible device with no outcome after T seconds counts "
                            "as failed (1800)")
        parser.add_argument("--settle", type=seconds, default=60.0, metavar="S",
                            help="how long devices are listened for before the first step; "
                            "at least the devices' heartbeat.interval_s (60)")
        topic_prefix(parser)

    def run(self, args: argparse.Namespace) -> int:
        import asyncio

        from gateway.operator import rollout
        from gateway.operator.mqtt import BrokerError

        require_rich("rollout")
        from gateway.operator.rolloutview import RolloutView

        key = private_key(args.key)
        plan = rollout.Plan(args.prefix, args.channel, args.version, args.steps, args.soak,
                            args.max_failure_rate, args.min_reports, args.report_timeout,
                            args.settle)
        stays = f"the manifest on {plan.topic} stays as last published"
        with RolloutView(sys.stdout) as view:
            driver = rollout.Rollout(plan, key, view)
            try:
                code = asyncio.run(driver.run(broker(args)))
            except rollout.Refused as exc:
                raise Failed(f"edge-gateway: {exc}", EXIT_INVALID) from None
            except BrokerError as exc:
                raise Failed(f"edge-gateway: {exc}; {stays}") from None
            except KeyboardInterrupt:
                raise Failed(f"edge-gateway: interrupted; {stays}") from None
        if driver.reason is not None:
            print(f"edge-gateway: rollout {driver.reason}", file=sys.stderr)
        return code
