"""Manifests a device refuses, releases it is not (yet) in, and a halt: the real daemon and
a real Mosquitto, artifacts served over HTTP. None of these gets as far as an install."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from importlib import metadata

from device_kit import CHANNEL, Device, FileServer, wait_until
from nacl.signing import SigningKey
from releases import firmware_payload, manifest, sha256
from signing import envelope, kid, public_hex, publish

from gateway.firmware import decisions, state
from gateway.firmware.download import Limits
from gateway.firmware.manifest import Known, decide
from gateway.firmware.rollout import bucket, default_salt
from gateway.firmware.updater import MANIFEST_MAX_BYTES, Running, Settings
from gateway.trust.keys import Keyring

BASE = metadata.version("edge-gateway")


def download_dir(device: Device) -> list[str]:
    folder = device.state_dir / "firmware" / "download"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_refused_manifests_are_reported_and_change_nothing(
        make_device: Callable[..., Device], server: FileServer, key: SigningKey) -> None:
    device = make_device()
    device.start()
    artifact = os.urandom(300_000)
    url = server.add("artifact.tar.gz", artifact)

    forged = envelope(SigningKey.generate(), firmware_payload(
        CHANNEL, "91.0.0", url, sha256(artifact), len(artifact)), key_id=kid(key))
    publish(device.broker.port, device.manifest_topic, forged)
    report = device.state("failed")
    assert (report["version"], report["reason"]) == (None, "bad signature")
    device.release("91.0.0", url, artifact, key=SigningKey.generate())
    assert device.state("failed")["reason"] == "unknown key"
    device.release("91.0.0", url, artifact, channel="beta")
    report = device.state("failed")
    assert (report["version"], report["reason"]) == (
        "91.0.0", "wrong channel: beta (this device follows stable)")
    device.release("0.0.1", url, artifact)
    report = device.state("failed")
    assert (report["version"], report["reason"]) == ("0.0.1", f"not newer than the running "
                                                              f"{BASE}")
    device.release("91.0.0", url, artifact, ttl_s=60, age_s=120)
    assert device.state("failed")["reason"] == "expired"
    # None of these was recorded, downloaded or remembered.
    assert not (device.state_dir / "firmware" / "state.json").exists()
    assert not server.requests_for("artifact.tar.gz")

    # The right size, another digest: fetched, refused on verifying, the file removed.
    device.release("92.0.0", url, artifact, digest=sha256(b"another bundle"))
    report = device.state("failed")
    assert (report["version"], report["reason"]) == ("92.0.0", "sha256 mismatch")
    assert device.states_seen()[-3:] == ["downloading", "verifying", "failed"]
    assert download_dir(device) == []

    # One byte less in the manifest than the server has: its Content-Length is refused.
    device.release("93.0.0", url, artifact, size=len(artifact) - 1)
    report = device.state("failed")
    assert (report["version"], report["reason"]) == (
        "93.0.0", f"larger than the manifest's {len(artifact) - 1} bytes")

    # No Content-Length: the body itself is cut at the first byte too many.
    streamed = server.add("streamed.tar.gz", artifact, no_length=True)
    device.release("94.0.0", streamed, artifact, size=len(artifact) - 1000)
    report = device.state("failed")
    assert (report["version"], report["reason"]) == (
        "94.0.0", f"larger than the manifest's {len(artifact) - 1000} bytes")
    assert download_dir(device) == []
    assert server.requests_for("streamed.tar.gz")[0].status == 200

    record = device.record()
    assert (record["state"], record["refused"], record["active"]) == ("failed", "94.0.0", None)
    # Refused versions are not tried again: the same manifest once more (a reconnect, a
    # restart) is, on the record the device keeps, a release it knows: nothing to do.
    again = manifest(device.key, CHANNEL, "94.0.0", streamed, artifact,
                     size=len(artifact) - 1000)
    on_disk = state.load(device.state_dir)
    assert on_disk is not None
    settings = Settings(device.id, "gw", CHANNEL, 8, 2, 0.2, Limits(), 0)
    verdict = decide(again, Keyring.load([public_hex(device.key)]),
                     decisions.device(on_disk, settings, Running(BASE, None, launched=True)),
                     time.time(), MANIFEST_MAX_BYTES)
    assert isinstance(verdict, Known), verdict
    assert device.heartbeat()["firmware"] == {"version": BASE, "slot": None,
                                              "channel": CHANNEL}
    assert device.unit.exits == []


def test_not_eligible_until_the_percentage_rises_and_a_halt_stops_the_download(
        make_device: Callable[..., Device], server: FileServer) -> None:
    device = make_device()
    device.start()
    version = "95.0.0"
    artifact = os.urandom(2_000_000)
    url = server.add("paced.tar.gz", artifact, rate=200_000)  # ten seconds of download
    mine = bucket(default_salt(CHANNEL, version), device.id)
    below, above = max(mine - 0.5, 0) / 100, (mine + 0.5) / 100

    device.release(version, url, artifact, percent=below)
    assert device.state("not_eligible")["version"] == version
    assert device.record()["state"] == "not_eligible"
    # The same manifest again (a reconnect, a restart) says nothing new.
    device.unit.kill()
    device.next_boot()
    device.heartbeat()
    assert device.states_seen()[-1] == "not_eligible"
    assert not server.requests_for("paced.tar.gz")

    device.release(version, url, artifact, percent=above)
    device.state(lambda s: s["state"] == "downloading" and (s["progress"] or 0) > 0)
    device.release(version, url, artifact, percent=above, halt=True)
    report = device.state("idle")
    assert (report["version"], report["reason"]) == (version, "halted")
    # The transfer broke off half way, and nothing was kept of it.
    request = server.requests_for("paced.tar.gz")[0]
    wait_until(lambda: request.over, "the end of the server's response")
    assert 0 < request.sent < len(artifact)
    assert len(server.requests_for("paced.tar.gz")) == 1
    assert download_dir(device) == []
    assert device.record()["state"] == "idle"

    # Progress came at most every progress_interval_s (0.2 s), growing.
    progress = [(m.json()["ts"], m.json()["progress"]) for m in device.seen
                if m.topic.endswith("/firmware/state") and m.json()["state"] == "downloading"]
    assert len(progress) >= 2
    assert all(b[0] - a[0] >= 0.19 and b[1] >= a[1] for a, b in itertools.pairwise(progress))
