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
from gateway.config.models import Config, QueueConfig
from gateway.daemon.reconfigure import Reconfigurer
from gateway.daemon.vitals import Vitals
from gateway.remote import effective, startup
from gateway.remote.layers import DEVICE, Applied, Layer
from gateway.remote.report import Outcome
from gateway.remote.store import LayerStore, path_in, read
from gateway.statefile import write_atomic
from gateway.trust.keys import Keyring
from gateway.uplink.inbox import Inbound, Inbox
from gateway.uplink.queue import MessageQueue
from gateway.uplink.supervisor import Identity, Uplink

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


STRICT = {"heartbeat": {"interval_s": 0}}
TOO_STRICT = ("invalid config: heartbeat.interval_s: Input should be greater than or equal "
              "to 1")


def store_layers(device: Device, layers: dict[str, Layer]) -> bytes:
    """Layers as a device stored them when it applied them; the bytes written."""
    data = json.dumps({"layers": {scope: {"version": layer.version, "config": layer.config}
                                  for scope, layer in layers.items()}, "failed": {}}).encode()
    write_atomic(path_in(device.state_dir), data)
    return data


def states(device: Device) -> list[tuple[object, ...]]:
    """What ``config/state`` said, without the time, and forget it."""
    said = [(s["scope"], s["version"], s["status"], s["reason"]) for s in device.reports.states]
    device.reports.states.clear()
    return said


def test_stored_layers_that_no_longer_validate_are_set_aside_and_stay_stored(
        device: Device) -> None:
    group = Layer("group:a", 2, {"logging": {"level": "error"}})
    stored = store_layers(device, {DEVICE: Layer(DEVICE, 3, STRICT), "group:a": group})
    device.settings["groups"] = ["a"]
    write_config(device.path, device.settings)
    remote = device.start()
    assert remote.config.heartbeat.interval_s == 60
    assert remote.config.logging.level == "error"  # the group layer holds
    assert remote.versions() == {"group:a": 2}
    assert remote.problem() == f"device v3: {TOO_STRICT}"
    assert states(device) == [(DEVICE, 3, "rejected", TOO_STRICT)]
    assert path_in(device.state_dir).read_bytes() == stored  # start-up never rewrites it
    assert list(path_in(device.state_dir).parent.iterdir()) == [path_in(device.state_dir)]
    # `config show`: what runs, by the same rule.
    shown = effective.load(device.path)
    assert (shown.config, shown.origins["logging"]) == (remote.config, "group a v2")
    assert "heartbeat" not in shown.origins
    # The retained envelope that brought the layer, at connect: nothing to do or say.
    assert device.send(remote, device.envelope(3, STRICT)) is None
    assert states(device) == []


# A layer that validates on a file or not: Home Assistant takes "a.b" and "a_b" as one name.
HOME_ASSISTANT = {"home_assistant": {"enabled": True}}
CLASHING = [{"name": name, "driver": "sht3x", "bus": "sim", "interval_s": 1}
            for name in ("a.b", "a_b")]
CLASH = ("invalid config: sensors.1.name: 'a_b' and 'a.b' are the same sensor to Home "
         "Assistant ('a_b'): rename one")


def test_a_rollback_to_the_release_that_accepted_the_layer_runs_it_again(
        device: Device) -> None:
    stored = store_layers(device, {DEVICE: Layer(DEVICE, 3, HOME_ASSISTANT)})
    accepting = dict(device.settings)
    # The new release does not accept the layer (here: a file it does not validate on).
    write_config(device.path, {**device.settings, "sensors": CLASHING})
    stricter = device.start()
    assert (stricter.versions(), stricter.config.home_assistant.enabled) == ({}, False)
    assert stricter.problem() == f"device v3: {CLASH}"
    assert states(device) == [(DEVICE, 3, "rejected", CLASH)]
    # Its trial fails and the release before it starts, over the same store: the layer
    # the operator chose runs again, and there is nothing to report.
    write_config(device.path, accepting)
    older = device.start()
    assert (older.versions(), older.config.home_assistant.enabled) == ({DEVICE: 3}, True)
    assert (older.problem(), states(device)) == (None, [])
    assert path_in(device.state_dir).read_bytes() == stored


def test_a_sighup_that_fixes_the_file_runs_the_layer_again(device: Device) -> None:
    store_layers(device, {DEVICE: Layer(DEVICE, 3, HOME_ASSISTANT)})
    write_config(device.path, {**device.settings, "sensors": CLASHING})
    remote = device.start()
    assert states(device) == [(DEVICE, 3, "rejected", CLASH)]
    # A SIGHUP that leaves the clash: not refused, the layer set aside again, nothing new.
    write_config(device.path, {**device.settings, "sensors": CLASHING,
                               "heartbeat": {"interval_s": 9}})
    assert asyncio.run(remote.reload(device.parts))
    assert remote.config.heartbeat.interval_s == 9 == device.parts.running.heartbeat.interval_s
    assert (remote.versions(), states(device)) == ({}, [])
    assert remote.problem() == f"device v3: {CLASH}"
    # The file fixed: the layer runs again, and config/state says so.
    write_config(device.path, device.settings)
    assert asyncio.run(remote.reload(device.parts))
    assert (remote.versions(), remote.config.home_assistant.enabled) == ({DEVICE: 3}, True)
    assert device.parts.running == remote.config
    assert (remote.problem(), states(device)) == (None, [(DEVICE, 3, "applied", None)])
    # A file edited under the running layer: set aside by the same rule, reported.
    write_config(device.path, {**device.settings, "sensors": CLASHING})
    assert asyncio.run(remote.reload(device.parts))
    assert (remote.versions(), states(device)) == ({}, [(DEVICE, 3, "rejected", CLASH)])


def test_a_newer_version_replaces_the_layer_set_aside(device: Device) -> None:
    group = Layer("group:a", 2, {"logging": {"level": "error"}})
    store_layers(device, {DEVICE: Layer(DEVICE, 3, STRICT), "group:a": group})
    device.settings["groups"] = ["a"]
    write_config(device.path, device.settings)
    remote = device.start()
    # Older than the stored layer, set aside or not: a replay, counted and not reported.
    assert device.send(remote, device.envelope(2, {"heartbeat": {"interval_s": 5}})) is None
    assert remote.junk.counts == {"stale version": 1}
    update = {"heartbeat": {"interval_s": 5}}
    assert device.send(remote, device.envelope(4, update)) == Outcome(
        DEVICE, 4, "applied", None, kid(device.key))
    assert remote.versions() == {DEVICE: 4, "group:a": 2}
    assert (remote.config.heartbeat.interval_s, remote.config.logging.level) == (5, "error")
    assert remote.problem() is None
    assert read(path_in(device.state_dir)) == Applied(
        {DEVICE: Layer(DEVICE, 4, update), "group:a": group})


def test_an_update_in_another_scope_composes_without_the_layer_set_aside(
        device: Device) -> None:
    strict = Layer(DEVICE, 3, STRICT)
    store_layers(device, {DEVICE: strict})
    device.settings["groups"] = ["a"]
    write_config(device.path, device.settings)
    remote = device.start()
    group = {"kind": "config", "group": "a", "version": 1, "issued_at": NOW,
             "expires_at": NOW + 60, "config": {"logging": {"level": "error"}}}
    data = envelope(device.key, json.dumps(group).encode())
    outcome = asyncio.run(remote.handle(Inbound("gw/group/a/config/set", data, len(data)),
                                        device.parts))
    assert outcome == Outcome("group:a", 1, "applied", None, kid(device.key))
    assert remote.versions() == {"group:a": 1}
    assert (remote.config.heartbeat.interval_s, remote.config.logging.level) == (60, "error")
    assert remote.problem() == f"device v3: {TOO_STRICT}"
    # Stored beside the layer set aside, which stays as it was accepted.
    assert read(path_in(device.state_dir)).layers == {
        DEVICE: strict, "group:a": Layer("group:a", 1, {"logging": {"level": "error"}})}


def test_the_firmware_trial_follows_the_layer_set_aside(device: Device) -> None:
    store_layers(device, {DEVICE: Layer(DEVICE, 3, STRICT)})
    remote = device.start()
    uplink = Uplink(remote.config.mqtt, Identity("dev", "test", "boot"),
                    MessageQueue(QueueConfig()))
    uplink.up.set()
    vitals = Vitals(uplink, {}, remote.problem)
    assert vitals.trial_problem(frozenset()) == (
        f"remote config layers invalid: device v3: {TOO_STRICT}")
    assert device.send(remote, device.envelope(4, {"heartbeat": {"interval_s": 5}}))
    assert vitals.trial_problem(frozenset()) is None


def test_an_expired_applied_envelope_reports_nothing_over_ten_restarts(
        device: Device) -> None:
    update = device.envelope(1, {"heartbeat": {"interval_s": 5}}, ttl_s=60)
    assert device.send(device.start(), update) == Outcome(DEVICE, 1, "applied", None,
                                                          kid(device.key))
    states(device)
    for _ in range(10):
        device.now += 86_400
        remote = device.start()
        assert device.send(remote, update) is None  # the retained envelope, at connect
        assert (remote.versions(), remote.config.heartbeat.interval_s) == ({DEVICE: 1}, 5)
    assert states(device) == []


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
