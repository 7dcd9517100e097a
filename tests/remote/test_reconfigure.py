"""The reconfigurer, the one owner of the running config, in process: real files, real
keys, the real layer store and inbox, a fixed clock, and the daemon's parts stood in for by
a recorder (what they do with a config is the subprocess tests' business)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import device_config, write_config
from nacl.signing import SigningKey
from signing import envelope, kid, public_hex

from gateway.config import file as configfile
from gateway.config.models import Config
from gateway.daemon.reconfigure import Reconfigurer
from gateway.remote import startup
from gateway.remote.layers import DEVICE, Applied, Layer
from gateway.remote.report import Outcome
from gateway.remote.store import LayerStore, path_in, read
from gateway.statefile import write_atomic
from gateway.trust.keys import Keyring
from gateway.uplink.inbox import Inbound, Inbox

NOW = 1_000_000.0
TOPIC = "gw/dev/config/set"


class Parts:
    """Records the config the parts run; ``fail`` names what did not work after a change
    that is waited for."""

    def __init__(self) -> None:
        self.running: Config | None = None
        self.keyring: Keyring | None = None
        self.fail: str | None = None

    async def start(self, config: Config, keyring: Keyring) -> None:
        self.running, self.keyring = config, keyring

    async def change(self, old: Config, new: Config, keyring: Keyring,
                     timeout_s: float | None) -> str | None:
        assert old == self.running
        self.running, self.keyring = new, keyring
        return self.fail if timeout_s is not None else None


class Reports:
    def __init__(self) -> None:
        self.states: list[dict[str, Any]] = []

    def publish_retained(self, topic: str, payload: bytes) -> None:
        assert topic == "gw/dev/config/state"
        self.states.append(json.loads(payload))


class Device:
    def __init__(self, tmp_path: Path, key: SigningKey, **settings: Any) -> None:
        self.key = key
        self.path = tmp_path / "dev.yaml"
        self.state_dir = tmp_path / "state"
        self.settings = device_config(9, self.state_dir, device_id="dev",
                                      remote_config={"trusted_keys": [public_hex(key)]},
                                      **settings)
        write_config(self.path, self.settings)
        self.now = NOW
        self.parts = Parts()
        self.reports = Reports()
        self.inbox = Inbox(4, 65536)

    def store(self) -> LayerStore:
        async def offload(fn: Callable[[], None]) -> None:
            fn()

        return LayerStore(path_in(self.state_dir), offload)

    def start(self) -> Reconfigurer:
        document = configfile.load_document(self.path)
        start = startup.settle(self.path, document, self.store())
        remote = Reconfigurer(self.path, start, self.store(), self.inbox, self.reports,
                              clock=lambda: self.now)
        asyncio.run(remote.start(self.parts))
        return remote

    def envelope(self, version: int, config: dict[str, Any], key: SigningKey | None = None,
                 ttl_s: float = 3600) -> bytes:
        payload = {"kind": "config", "device": "dev", "version": version, "issued_at": NOW,
                   "expires_at": NOW + ttl_s, "config": config}
        return envelope(key or self.key, json.dumps(payload).encode())

    def send(self, remote: Reconfigurer, data: bytes) -> Outcome | None:
        return asyncio.run(remote.handle(Inbound(TOPIC, data, len(data)), self.parts))


@pytest.fixture
def device(tmp_path: Path) -> Device:
    return Device(tmp_path, SigningKey.generate())


def test_apply_then_the_same_envelope_after_it_expired_says_nothing(device: Device) -> None:
    remote = device.start()
    update = device.envelope(1, {"heartbeat": {"interval_s": 5}})
    assert device.send(remote, update) == Outcome(DEVICE, 1, "applied", None, kid(device.key))
    assert remote.config.heartbeat.interval_s == 5
    assert device.parts.running == remote.config
    assert read(path_in(device.state_dir)).versions() == {DEVICE: 1}
    device.now += 3 * 86_400  # the retained envelope, delivered again days later
    assert device.send(remote, update) is None
    assert device.start().versions() == {DEVICE: 1}  # a restart: the same
    assert device.reports.states == []


def test_rollback_restores_the_config_and_skips_the_version(device: Device) -> None:
    remote = device.start()
    before = remote.config
    device.parts.fail = "sensor extra did not initialise within 30 s"
    update = device.envelope(1, {"heartbeat": {"interval_s": 5}})
    outcome = device.send(remote, update)
    assert outcome == Outcome(DEVICE, 1, "rolled_back", device.parts.fail, kid(device.key))
    assert remote.config == before == device.parts.running
    assert remote.versions() == {}
    assert device.send(remote, update) is None
    device.parts.fail = None
    assert device.send(remote, device.envelope(2, {"heartbeat": {"interval_s": 5}})) == (
        Outcome(DEVICE, 2, "applied", None, kid(device.key)))


def test_a_rejected_sighup_is_not_the_base_of_the_next_update(device: Device) -> None:
    remote = device.start()
    write_config(device.path, {**device.settings, "device_id": "renamed"})
    assert not asyncio.run(remote.reload(device.parts))
    write_config(device.path, {**device.settings, "heartbeat": {"interval_s": 9}})
    # Put back without a SIGHUP: the running file is still the one of the start.
    assert device.send(remote, device.envelope(1, {"logging": {"level": "error"}})) == (
        Outcome(DEVICE, 1, "applied", None, kid(device.key)))
    assert (remote.config.device_id, remote.config.heartbeat.interval_s) == ("dev", 60)
    assert asyncio.run(remote.reload(device.parts))
    assert (remote.config.heartbeat.interval_s, remote.config.logging.level) == (9, "error")


def test_stored_layers_that_no_longer_validate_are_set_aside(device: Device) -> None:
    store = path_in(device.state_dir)
    write_atomic(store, json.dumps({"layers": {
        "device": {"version": 3, "config": {"heartbeat": {"interval_s": 0}}},
        "group:a": {"version": 2, "config": {"logging": {"level": "error"}}},
    }, "failed": {}}).encode())
    device.settings["groups"] = ["a"]
    write_config(device.path, device.settings)
    remote = device.start()
    assert remote.config.heartbeat.interval_s == 60
    assert remote.config.logging.level == "error"  # the group layer holds
    assert remote.versions() == {"group:a": 2}
    [state] = device.reports.states
    assert (state["scope"], state["version"], state["status"], state["reason"]) == (
        DEVICE, 3, "rejected",
        "invalid config: heartbeat.interval_s: Input should be greater than or equal to 1")
    group = Layer("group:a", 2, {"logging": {"level": "error"}})
    assert read(store) == Applied({"group:a": group}, {DEVICE: 3})
    [copy] = store.parent.glob("layers.json.invalid-*")
    assert "interval_s" in copy.read_text()
    # The retained envelope that brought the layer, at connect: nothing to do or say.
    assert device.send(remote, device.envelope(3, {"heartbeat": {"interval_s": 0}})) is None


def test_a_stored_layer_may_not_keep_a_local_only_key(device: Device) -> None:
    write_atomic(path_in(device.state_dir), json.dumps({"layers": {"device": {
        "version": 1, "config": {"firmware": {"installer": ["/bin/sh", "-c", "id"]}}}},
        "failed": {}}).encode())
    remote = device.start()
    assert remote.config.firmware.installer is None
    assert device.reports.states[0]["reason"] == (
        "invalid config: firmware.installer: cannot be set remotely")


def test_a_bad_local_file_is_still_an_error(device: Device, tmp_path: Path) -> None:
    keys = {"trusted_keys": [str(tmp_path / "missing.pub")]}
    write_config(device.path, {**device.settings, "remote_config": keys})
    with pytest.raises(configfile.ConfigError):
        device.start()


def test_key_rotation_and_junk_counted_not_reported(device: Device) -> None:
    new = SigningKey.generate()
    remote = device.start()
    both = {"trusted_keys": [public_hex(device.key), public_hex(new)]}
    assert device.send(remote, device.envelope(1, {"remote_config": both})) == Outcome(
        DEVICE, 1, "applied", None, kid(device.key))
    only_new = {"remote_config": {"trusted_keys": [public_hex(new)]}}
    assert device.send(remote, device.envelope(2, only_new, new)) == Outcome(
        DEVICE, 2, "applied", None, kid(new))
    assert device.parts.keyring is not None and kid(device.key) not in device.parts.keyring
    # The old key is no longer trusted: what it signs is junk now.
    assert device.send(remote, device.envelope(3, {}, device.key)) is None
    assert device.send(remote, b"junk") is None
    assert remote.junk.counts == {"unknown key": 1, "not json": 1}
    emptied = device.send(remote, device.envelope(4, {"remote_config": {"trusted_keys": []}},
                                                  new))
    assert emptied == Outcome(DEVICE, 4, "rejected",
                              "invalid config: remote_config.trusted_keys: cannot be emptied",
                              kid(new))
    assert remote.versions() == {DEVICE: 2}


def test_the_inbox_bound_follows_the_config(device: Device) -> None:
    remote = device.start()
    big = b"x" * 100_000
    device.inbox.offer(TOPIC, big)
    assert asyncio.run(device.inbox.get()).payload is None
    bigger = {"remote_config": {"trusted_keys": [public_hex(device.key)],
                                "max_envelope_bytes": 200_000, "inbox_size": 64}}
    assert device.send(remote, device.envelope(1, bigger)) == Outcome(
        DEVICE, 1, "applied", None, kid(device.key))
    device.inbox.offer(TOPIC, big)
    assert asyncio.run(device.inbox.get()).payload == big
