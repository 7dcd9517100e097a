"""How the daemon carries the firmware task: the channel it follows changes with SIGHUP and
remote config (re-routed at once), a daemon the launcher did not start never activates a
release, the state directory must be the unit's, and without trusted keys none of the
update machinery is even imported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from device_kit import Device, FileServer, unit_env
from helpers import Broker, DaemonProcess, Subscriber, device_config, write_config
from nacl.signing import SigningKey
from releases import manifest
from signing import config_payload, envelope, public_hex, publish


def offer_old_release(device: Device, channel: str, version: str = "0.0.1") -> None:
    """A manifest the device refuses out loud (older than what runs), if it listens."""
    publish(device.broker.port, f"gw/firmware/{channel}/manifest",
            manifest(device.key, channel, version, "http://127.0.0.1:9/x", b"x"))


def test_the_channel_follows_sighup_and_remote_config(
        make_device: Callable[..., Device]) -> None:
    device = make_device()
    device.start()
    assert device.heartbeat()["firmware"]["channel"] == "stable"

    device.settings["firmware"] = {**device.settings["firmware"], "channel": "beta"}
    write_config(device.path, device.settings)
    os.kill(device.unit.pid, signal.SIGHUP)
    device.heartbeat(lambda h: h["firmware"]["channel"] == "beta")
    offer_old_release(device, "beta")
    assert device.state("failed")["reason"].startswith("not newer than the running ")
    # The old channel is no longer heard: its manifest, sent first, gets no answer before
    # the one on the channel followed (the broker and the daemon's inbox keep their order).
    offer_old_release(device, "stable")
    offer_old_release(device, "beta", "0.0.2")
    assert device.state("failed")["version"] == "0.0.2"

    layer = {"firmware": {**device.settings["firmware"], "channel": "edge"}}
    publish(device.broker.port, f"gw/{device.id}/config/set",
            envelope(device.key, config_payload(1, layer, device=device.id)))
    applied = device.wait_for(lambda m: m.topic.endswith("/config/state"), 30).json()
    assert applied["status"] == "applied", applied
    device.heartbeat(lambda h: h["firmware"]["channel"] == "edge")
    offer_old_release(device, "edge")
    report = device.state("failed")
    assert report["version"] == "0.0.1"
    assert device.unit.exits == []


def test_a_daemon_not_started_by_the_launcher_does_not_activate(
        broker: Broker, tmp_path: Path, server: FileServer) -> None:
    key = SigningKey.generate()
    config = write_config(tmp_path / "plain.yaml", device_config(
        broker.port, tmp_path / "state", device_id="plain-run",
        remote_config={"trusted_keys": [public_hex(key)]}))
    sub = Subscriber(broker.port, "gw/plain-run/firmware/state")
    daemon = DaemonProcess(config, env=unit_env())
    try:
        assert json.loads(sub.get(30).payload)["state"] == "idle"
        data = os.urandom(1000)
        url = server.add("plain.tar.gz", data)
        publish(broker.port, "gw/firmware/stable/manifest",
                manifest(key, "stable", "90.0.0", url, data))
        report = json.loads(sub.get(30).payload)
        assert (report["state"], report["version"]) == ("failed", "90.0.0")
        assert report["reason"] == ("cannot activate: the daemon was not started by "
                                    "`edge-gateway launch` (the unit's ExecStart)")
        assert not server.requests_for("plain.tar.gz")
    finally:
        daemon.kill()
        sub.close()


def test_firmware_is_off_when_the_state_directory_is_not_the_units(
        broker: Broker, tmp_path: Path) -> None:
    key = SigningKey.generate()
    config = write_config(tmp_path / "elsewhere.yaml", device_config(
        broker.port, tmp_path / "state", device_id="elsewhere",
        remote_config={"trusted_keys": [public_hex(key)]}))
    daemon = DaemonProcess(config, env={**unit_env(), "STATE_DIRECTORY": str(tmp_path / "x")})
    try:
        deadline = time.monotonic() + 30
        while not any(e.get("event") == "daemon.ready" for e in daemon.events()):
            assert time.monotonic() < deadline, daemon.log()
            time.sleep(0.1)
        off = [e for e in daemon.events() if e.get("event") == "firmware.off"]
        assert off and off[0]["reason"].endswith(
            f"is not the unit's StateDirectory {tmp_path / 'x'}: firmware updates are off")
        assert not (tmp_path / "state" / "firmware").exists()
    finally:
        assert daemon.stop() == 0


PROBE = textwrap.dedent("""
    import asyncio, os, signal, socket, sys, tempfile
    from pathlib import Path
    from gateway import daemon
    from gateway.config import file

    async def main():
        path = Path(sys.argv[1])
        # READY=1 comes once the daemon's parts are configured, the firmware task among them.
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(os.path.join(tempfile.mkdtemp(), "notify"))
        notify.setblocking(False)
        os.environ["NOTIFY_SOCKET"] = notify.getsockname()
        task = asyncio.create_task(daemon.serve(path, file.load_document(path)))
        loop = asyncio.get_running_loop()
        while b"READY=1" not in await loop.sock_recv(notify, 4096):
            pass
        print("probe:", sorted(m for m in sys.modules if m.startswith("gateway.firmware")))
        print("probe:", "urllib.request" in sys.modules, "tarfile" in sys.modules)
        os.kill(os.getpid(), signal.SIGTERM)
        await task

    asyncio.run(main())
""")


def test_the_update_machinery_is_imported_only_with_trusted_keys(tmp_path: Path) -> None:
    imported = {}
    for name, keys in (("off", []), ("on", [public_hex(SigningKey.generate())])):
        config = write_config(tmp_path / f"{name}.yaml", device_config(
            9, tmp_path / name, remote_config={"trusted_keys": keys},
            logging={"level": "error", "format": "json"}))
        out = subprocess.run([sys.executable, "-c", PROBE, str(config)], capture_output=True,
                             text=True, timeout=60, check=True).stdout.splitlines()
        probed = [line.removeprefix("probe: ") for line in out if line.startswith("probe: ")]
        imported[name] = (probed[0], probed[1])
    # The heartbeat's slot needs the launcher's small, standard-library modules only.
    assert imported["off"] == (
        "['gateway.firmware', 'gateway.firmware.slots', 'gateway.firmware.state']",
        "False False")
    assert "'gateway.firmware.download'" in imported["on"][0]
    assert "'gateway.firmware.updater'" in imported["on"][0]
    assert imported["on"][1] == "True True"
