"""The fleet test: ``edge-gateway rollout`` steering 60 devices (``fleet.py``: each with its own
connection to one Mosquitto, verifying, deciding eligibility and downloading as a device
does) through 10, 50 and 100 %. It completes when the release is good, halts when an
injected share of devices rolls back, and halts when eligible devices go silent."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from fleet import Behaviour, BundleServer, Fleet
from helpers import Broker, retained
from packaging.version import Version

from gateway.firmware.rollout import bucket, default_salt, eligible
from gateway.operator.keygen import write_key_pair
from gateway.trust.envelope import verify
from gateway.trust.keys import Keyring, PrivateKey
from gateway.trust.payload import FirmwarePayload, parse_firmware

ROOT = Path(__file__).resolve().parents[2]
DEVICES = [f"fleet-{n:03d}" for n in range(60)]
OLD, NEW = Version("0.9.0"), Version("1.0.0")
SALT = default_salt("stable", str(NEW))
TOPIC = "gw/firmware/stable/manifest"


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    fleet: Fleet
    manifest: FirmwarePayload


def injected(share: float, behaviour: Behaviour) -> list[tuple[str, Behaviour]]:
    """``share`` of the devices, drawn independently of the release's cohort, behave so."""
    return [(name, behaviour if bucket("injected", name) < share * 10_000 else Behaviour.GOOD)
            for name in DEVICES]


async def cli(*args: str, cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(120):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def roll_out(broker: Broker, workdir: Path, behaviours: list[tuple[str, Behaviour]],
             report_timeout: float = 20) -> Run:
    key: PrivateKey = write_key_pair(workdir / "ops").key
    server = BundleServer(os.urandom(64 * 1024))
    bundle = workdir / "bundle.tar.gz"
    bundle.write_bytes(server.body)

    async def scenario() -> Run:
        code, out, err = await cli(
            "release", "--broker", broker.url, "--key", "ops.key", "--channel", "stable",
            "--version", str(NEW), "--artifact", str(bundle), "--url", server.url,
            "--percent", "0", cwd=workdir)
        assert code == 0, err
        async with Fleet(broker.port, Keyring([key.public]), OLD, behaviours) as fleet:
            code, out, err = await cli(
                "rollout", "--broker", broker.url, "--key", "ops.key", "--channel", "stable",
                "--version", str(NEW), "--steps", "10,50,100", "--soak", "0.5",
                "--max-failure-rate", "0.2", "--min-reports", "3",
                "--report-timeout", str(report_timeout), "--settle", "1", cwd=workdir)
        got = retained(broker.port, TOPIC).payload
        manifest = parse_firmware(verify(got, Keyring([key.public])).payload)
        return Run(code, out, err, fleet, manifest)

    try:
        return asyncio.run(scenario())
    finally:
        server.close()


def test_a_good_release_goes_to_every_device_step_by_step(broker: Broker,
                                                          tmp_path: Path) -> None:
    run = roll_out(broker, tmp_path, injected(0, Behaviour.GOOD))
    assert (run.code, run.stderr) == (0, ""), run.stdout
    assert all(device.running == NEW for device in run.fleet.devices)
    assert (run.manifest.rollout.percent, run.manifest.halt) == (100, False)
    first = sum(eligible(10, SALT, name) for name in DEVICES)
    second = sum(eligible(50, SALT, name) for name in DEVICES)
    assert 0 < first < second < len(DEVICES)
    assert f"10 %: done: eligible {first}, committed {first}, failed 0, silent 0" in run.stdout
    assert f"50 %: done: eligible {second}, committed {second}, failed 0, silent 0" in (
        run.stdout)
    assert "100 %: done: eligible 60, committed 60, failed 0, silent 0" in run.stdout
    assert "stable 1.0.0: rollout complete at 100 %" in run.stdout
    # Staged: every device of a step began before any device that only a later step admits.
    started = {device.id: device.started_at for device in run.fleet.devices}
    for percent, later in ((10, 50), (50, 100)):
        now = [t for name, t in started.items() if eligible(percent, SALT, name)]
        then = [t for name, t in started.items()
                if eligible(later, SALT, name) and not eligible(percent, SALT, name)]
        assert max(now) < min(then)  # type: ignore[type-var]


def halted_percent(run: Run) -> float:
    assert run.manifest.halt
    return run.manifest.rollout.percent


def test_an_injected_rollback_rate_halts_the_rollout(broker: Broker, tmp_path: Path) -> None:
    behaviours = injected(0.3, Behaviour.ROLLS_BACK)
    run = roll_out(broker, tmp_path, behaviours)
    assert run.code == 1, run.stdout
    percent = halted_percent(run)
    assert percent < 100
    assert run.stderr.startswith(f"edge-gateway: rollout halted at {percent:g} %: ")
    assert "failure rate" in run.stderr and len(run.stderr.splitlines()) == 1
    # Those that counted against the step are named (others that had begun installing
    # may roll back after the halt).
    named = {line.split(":")[0].strip() for line in run.stdout.splitlines()
             if line.endswith(": rolled_back: health check failed (injected)")}
    assert named
    assert named <= {name for name, behaviour in behaviours
                     if behaviour is Behaviour.ROLLS_BACK}
    # Devices the halted step does not admit never started: the halt kept them safe.
    for device in run.fleet.devices:
        if not eligible(percent, SALT, device.id):
            assert device.started_at is None and device.running == OLD


def test_eligible_devices_going_silent_halt_the_rollout(broker: Broker,
                                                        tmp_path: Path) -> None:
    behaviours = injected(0.3, Behaviour.SILENT)
    run = roll_out(broker, tmp_path, behaviours, report_timeout=2)
    assert run.code == 1, run.stdout
    percent = halted_percent(run)
    assert percent < 100
    assert run.stderr.startswith(f"edge-gateway: rollout halted at {percent:g} %: 0 failed and ")
    named = {line.split(":")[0].strip() for line in run.stdout.splitlines()
             if ": silent for " in line}
    assert named
    assert named <= {d.id for d in run.fleet.devices if d.silent}
    for device in run.fleet.devices:
        if not eligible(percent, SALT, device.id):
            assert device.started_at is None and device.running == OLD
