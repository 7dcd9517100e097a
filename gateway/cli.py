"""The ``edge-gateway`` command line: one function per command.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or invalid input. Errors are one
line each on stderr.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import __version__
from gateway.config import file as configfile
from gateway.config.models import NAME_PATTERN, BrokerUrl, parse_broker_url

if TYPE_CHECKING:
    from packaging.version import Version

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
        code = daemon.run(args.config)
    except configfile.ConfigError as exc:
        return report(exc)
    except _unusable_state() as exc:
        # State directory not writable, queue file unusable: nothing can run.
        print(f"edge-gateway: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILURE
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


def cmd_launch(args: argparse.Namespace) -> int:
    """The unit's entry: the stable launcher picks the slot (and counts trial starts), then
    the slot's daemon replaces this process, or this install's own ``run`` goes on."""
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


def needs_rich(command: str) -> bool:
    try:
        import rich  # noqa: F401  (the command's tables)
    except ImportError:
        print(f"edge-gateway: {command} needs rich: pip install 'edge-gateway[operator]'",
              file=sys.stderr)
        return False
    return True


def cmd_release(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.operator import release
    from gateway.operator.mqtt import BrokerError
    from gateway.trust.keys import KeyLoadError, read_private_key
    from gateway.trust.rejection import Rejected

    try:
        key = read_private_key(args.key)
    except KeyLoadError as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return EXIT_INVALID
    try:
        artifact = release.digest(args.artifact)
    except OSError as exc:
        print(f"edge-gateway: cannot read {args.artifact}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_INVALID
    manifest = release.Manifest.of(args.channel, args.version, args.url, artifact,
                                   args.percent, args.salt, args.halt, args.ttl)
    try:
        manifest.check()
    except Rejected as exc:
        print(f"edge-gateway: the manifest would be refused: {exc.reason}", file=sys.stderr)
        return EXIT_INVALID
    try:
        topic = asyncio.run(release.publish(args.broker, args.prefix, manifest, key))
    except BrokerError as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"released {manifest.channel} {manifest.version} to {manifest.percent:g} % "
          f"{'(halted) ' if manifest.halt else ''}on {topic} (kid {key.public.kid})")
    print(f"sha256 {artifact.sha256}, {artifact.size} bytes, salt {manifest.salt}")
    return EXIT_OK


def cmd_rollout(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.operator import rollout
    from gateway.operator.mqtt import BrokerError
    from gateway.trust.keys import KeyLoadError, read_private_key

    if not needs_rich("rollout"):
        return EXIT_FAILURE
    from gateway.operator.rolloutview import RolloutView

    try:
        key = read_private_key(args.key)
    except KeyLoadError as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return EXIT_INVALID
    plan = rollout.Plan(args.prefix, args.channel, args.version, args.steps, args.soak,
                        args.max_failure_rate, args.min_reports, args.report_timeout,
                        args.settle)
    with RolloutView(sys.stdout) as view:
        driver = rollout.Rollout(plan, key, view)
        try:
            code = asyncio.run(driver.run(args.broker))
        except rollout.Refused as exc:
            print(f"edge-gateway: {exc}", file=sys.stderr)
            return EXIT_INVALID
        except BrokerError as exc:
            print(f"edge-gateway: {exc}; the manifest on {plan.topic} stays as last published",
                  file=sys.stderr)
            return EXIT_FAILURE
        except KeyboardInterrupt:
            print(f"edge-gateway: interrupted; the manifest on {plan.topic} stays as last "
                  "published", file=sys.stderr)
            return EXIT_FAILURE
    if driver.reason is not None:
        print(f"edge-gateway: rollout {driver.reason}", file=sys.stderr)
    return code


def cmd_fleet_status(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import time

    from gateway.operator import fleetstatus
    from gateway.operator.mqtt import BrokerError

    if not args.json and not needs_rich("fleet status"):
        return EXIT_FAILURE
    try:
        fleet = asyncio.run(fleetstatus.collect(args.broker, args.prefix, args.settle))
    except BrokerError as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    summary = fleetstatus.summary(fleet, time.time())
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    from gateway.operator import fleetview

    fleetview.render(summary, sys.stdout)
    return EXIT_OK


def cmd_push_config(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.operator import fragment, pushconfig
    from gateway.operator.mqtt import BrokerError
    from gateway.trust.envelope import DEFAULT_MAX_BYTES
    from gateway.trust.keys import KeyLoadError, read_private_key

    target = pushconfig.Target(args.prefix, device=args.device, group=args.group)
    try:
        config = fragment.read(args.file, target.scope)
    except configfile.ConfigError as exc:
        return report(exc)
    try:
        key = read_private_key(args.key)
    except KeyLoadError as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.group is not None:
        try:
            import rich  # noqa: F401  (the group's table)
        except ImportError:
            print("edge-gateway: push-config --group needs rich: "
                  "pip install 'edge-gateway[operator]'", file=sys.stderr)
            return EXIT_FAILURE
    update = pushconfig.Update(target, args.version, config, key, args.ttl)
    size = len(update.envelope(0.0))
    if size > DEFAULT_MAX_BYTES:
        print(f"edge-gateway: warning: the envelope is {size} bytes; devices refuse more than "
              f"remote_config.max_envelope_bytes ({DEFAULT_MAX_BYTES} by default)",
              file=sys.stderr)
    push = pushconfig.push_device if args.group is None else pushconfig.push_group
    try:
        return asyncio.run(push(args.broker, update, args.timeout, sys.stdout))
    except BrokerError as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def broker_url(value: str) -> BrokerUrl:
    try:
        return parse_broker_url(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def topic_name(value: str) -> str:
    if len(value) > 64 or not re.fullmatch(NAME_PATTERN, value):
        raise argparse.ArgumentTypeError(
            "letters, digits, '_', '.' and '-', starting with a letter or digit (64 at most)")
    return value


def version_number(value: str) -> int:
    number = positive(value)
    if number > 2**63 - 1:
        raise argparse.ArgumentTypeError("at most 2**63 - 1")
    return number


def seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError("a number of seconds above 0")
    return number


def pep440(value: str) -> Version:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(value)
    except InvalidVersion:
        raise argparse.ArgumentTypeError("not a PEP 440 version") from None


def percentage(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number <= 100:
        raise argparse.ArgumentTypeError("a percentage from 0 to 100")
    return number


def fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number < 1:
        raise argparse.ArgumentTypeError("a fraction from 0 up to (not including) 1, e.g. 0.1")
    return number


def steps(value: str) -> tuple[float, ...]:
    from gateway.operator.rollout import parse_steps

    try:
        return parse_steps(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None



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

    push = commands.add_parser(
        "push-config", help="sign a config update, publish it and wait for the answers",
        description="Checks FILE.yaml (top-level keys of the device file to replace) with "
        "the device's models, signs it and publishes it retained on P/D/config/set or "
        "P/group/G/config/set, then waits for each device's config/state. Exit 0 only if "
        "every device applied it.")
    push.add_argument("--broker", type=broker_url, required=True, metavar="URL",
                      help="mqtt://host:port or mqtts://host:port")
    push.add_argument("--key", type=Path, required=True, metavar="KEYFILE",
                      help="a private key from keygen, trusted by the devices")
    to = push.add_mutually_exclusive_group(required=True)
    to.add_argument("--device", type=topic_name, metavar="ID", help="one device")
    to.add_argument("--group", type=topic_name, metavar="G",
                    help="the group's devices that are online (from their status)")
    push.add_argument("--version", type=version_number, required=True, metavar="N",
                      help="above the last one pushed to this device or group")
    push.add_argument("--prefix", type=topic_name, default="gw", metavar="P",
                      help="the devices' mqtt.topic_prefix (gw)")
    push.add_argument("--timeout", type=seconds, default=30.0, metavar="S",
                      help="how long to wait for the answers (30)")
    push.add_argument("--ttl", type=seconds, default=86400.0, metavar="S",
                      help="seconds until the update expires unapplied (86400, a day)")
    push.add_argument("file", type=Path, metavar="FILE.yaml")
    push.set_defaults(handler=cmd_push_config)
    release = commands.add_parser(
        "release", help="sign and publish a release's firmware manifest (retained)",
        description="Hashes the release bundle FILE (size and sha256), signs a firmware "
        "manifest for channel C and publishes it retained on P/firmware/C/manifest. Devices "
        "of the channel whose bucket falls under --percent install it.")
    release.add_argument("--broker", type=broker_url, required=True, metavar="URL",
                         help="mqtt://host:port or mqtts://host:port")
    release.add_argument("--key", type=Path, required=True, metavar="KEYFILE",
                         help="a private key from keygen, trusted by the devices")
    release.add_argument("--channel", type=topic_name, required=True, metavar="C")
    release.add_argument("--version", type=lambda v: str(pep440(v)), required=True,
                         metavar="V", help="the release's PEP 440 version")
    release.add_argument("--artifact", type=Path, required=True, metavar="FILE",
                         help="the release bundle (.tar.gz of wheels)")
    release.add_argument("--url", required=True, metavar="URL",
                         help="where devices download FILE (http:// or https://)")
    release.add_argument("--percent", type=percentage, required=True, metavar="P",
                         help="share of the channel's devices that may install it (0-100)")
    release.add_argument("--salt", metavar="S",
                         help="draws the cohort (default CHANNEL:VERSION, a fresh one each "
                         "release)")
    release.add_argument("--halt", action="store_true",
                         help="devices that have not started installing stop")
    release.add_argument("--ttl", type=seconds, default=30 * 86400.0, metavar="S",
                         help="seconds until the manifest expires (2592000, 30 days)")
    release.add_argument("--prefix", type=topic_name, default="gw", metavar="P",
                         help="the devices' mqtt.topic_prefix (gw)")
    release.set_defaults(handler=cmd_release)

    rollout = commands.add_parser(
        "rollout", help="raise a release's percentage step by step, halting on failures",
        description="Re-signs the retained manifest of channel C (it must release V, signed "
        "with KEYFILE) at each step's percentage and watches the channel's devices' "
        "firmware/state. Halts (manifest halt: true, exit 1) when the failure rate of the "
        "devices eligible at the current step, silent ones counted as failed, exceeds "
        "--max-failure-rate once --min-reports have reported. Exit 0 when the last step "
        "has soaked.")
    rollout.add_argument("--broker", type=broker_url, required=True, metavar="URL",
                         help="mqtt://host:port or mqtts://host:port")
    rollout.add_argument("--key", type=Path, required=True, metavar="KEYFILE",
                         help="the private key the release was signed with")
    rollout.add_argument("--channel", type=topic_name, required=True, metavar="C")
    rollout.add_argument("--version", type=pep440, required=True, metavar="V")
    rollout.add_argument("--steps", type=steps, required=True, metavar="1,10,50,100",
                         help="rising percentages")
    rollout.add_argument("--soak", type=seconds, required=True, metavar="S",
                         help="how long a step runs on after every eligible device reported")
    rollout.add_argument("--max-failure-rate", type=fraction, required=True, metavar="F",
                         help="halt above this share of failed, rolled back or silent devices")
    rollout.add_argument("--min-reports", type=positive, default=5, metavar="N",
                         help="judge the failure rate only once N eligible devices reported (5)")
    rollout.add_argument("--report-timeout", type=seconds, default=1800.0, metavar="T",
                         help="an eligible device with no outcome after T seconds counts as "
                         "failed (1800)")
    rollout.add_argument("--settle", type=seconds, default=60.0, metavar="S",
                         help="how long devices are listened for before the first step; at "
                         "least the devices' heartbeat.interval_s (60)")
    rollout.add_argument("--prefix", type=topic_name, default="gw", metavar="P",
                         help="the devices' mqtt.topic_prefix (gw)")
    rollout.set_defaults(handler=cmd_rollout)

    fleet = commands.add_parser("fleet", help="what the broker knows of the devices")
    fleet_actions = fleet.add_subparsers(dest="action", required=True, metavar="ACTION")
    fleet_status = fleet_actions.add_parser(
        "status", help="every device, and per channel who runs which release",
        description="Listens to the devices' retained status, config/state and "
        "firmware/state and their heartbeats for --settle seconds, then prints a table "
        "per device and per channel and release.")
    fleet_status.add_argument("--broker", type=broker_url, required=True, metavar="URL",
                              help="mqtt://host:port or mqtts://host:port")
    fleet_status.add_argument("--prefix", type=topic_name, default="gw", metavar="P",
                              help="the devices' mqtt.topic_prefix (gw)")
    fleet_status.add_argument("--settle", type=seconds, default=5.0, metavar="S",
                              help="how long to listen (5); heartbeats come every "
                              "heartbeat.interval_s")
    fleet_status.add_argument("--json", action="store_true", help="the summary as JSON")
    fleet_status.set_defaults(handler=cmd_fleet_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return EXIT_FAILURE
