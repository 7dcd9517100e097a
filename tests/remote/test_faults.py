"""What a device under remote configuration holds through over days and faults, end to end:
a stored layer that no longer validates, a retained envelope that expired after it was
applied, a SIGHUP that was refused, bounds that a remote update changed."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import Device
from helpers import Received, retained, write_config
from signing import config_payload, envelope, public_hex, publish


def events(device: Device, name: str, timeout: float = 15.0) -> list[dict[str, object]]:
    """The daemon's log events called ``name``, once there is one."""
    assert device.daemon is not None
    deadline = time.monotonic() + timeout
    while not (found := [e for e in device.daemon.events() if e.get("event") == name]):
        assert time.monotonic() < deadline, f"no {name} in the log"
        time.sleep(0.1)
    return found


def test_a_stored_layer_that_no_longer_validates_does_not_keep_the_device_down(
        device: Device) -> None:
    store = Path(device.settings["state_dir"]) / "remote" / "layers.json"
    store.parent.mkdir(parents=True)
    stored = json.dumps({"layers": {"device": {
        "version": 3, "config": {"heartbeat": {"interval_s": 0}}}}, "failed": {}})
    store.write_text(stored)
    device.start()
    if not device.states:
        device.wait_for(lambda m: m.topic.endswith("/config/state"))
    state = device.states[-1].json()
    assert (state["scope"], state["version"], state["status"], state["reason"]) == (
        "device", 3, "rejected",
        "invalid config: heartbeat.interval_s: Input should be greater than or equal to 1")
    device.wait_for(lambda m: m.topic.endswith("/telemetry/room"))
    assert device.heartbeat()["config_version"] == {}
    # Set aside for the run, not taken out: the store is as it was accepted.
    assert store.read_text() == stored
    assert [p.name for p in store.parent.iterdir()] == ["layers.json"]
    # A newer, valid update applies as on any device, and replaces it.
    device.push(4, {"heartbeat": {"interval_s": 2}})
    assert device.next_state()["status"] == "applied"
    assert json.loads(store.read_text())["layers"]["device"]["version"] == 4


def test_an_applied_envelope_that_expired_reports_nothing_at_restarts(device: Device) -> None:
    device.start()
    device.push(1, {"heartbeat": {"interval_s": 1}}, ttl_s=1.5)
    assert device.next_state()["status"] == "applied"
    time.sleep(1.5)  # the retained envelope expires
    for restart in range(3):
        device.stop()
        reported = len(device.states)
        device.start()
        # Junk after the retained envelope: once it is counted, the envelope was judged.
        # Published again at each heartbeat until counted: one sent before the device
        # subscribed never reaches it.
        junk = b"junk %d" % restart

        def judged(message: Received, junk: bytes = junk) -> bool:
            if not message.topic.endswith("/heartbeat"):
                return False
            if message.json()["config_rejected"].get("not json"):
                return True
            publish(device.broker.port, device.device_topic, junk, retain=False)
            return False

        publish(device.broker.port, device.device_topic, junk, retain=False)
        device.wait_for(judged)
        assert device.states[reported:] == []
        assert device.heartbeat()["config_version"] == {"device": 1}
    state = retained(device.broker.port, f"gw/{device.id}/config/state").json()
    assert (state["version"], state["status"]) == (1, "applied")


def test_a_refused_sighup_is_not_the_base_of_the_next_update(device: Device) -> None:
    device.start()
    device.reload(device_id="renamed")
    [refused] = events(device, "config.reload_rejected")
    assert refused["error"] == "device_id: needs a restart"
    device.settings["device_id"] = device.id
    write_config(device.path, device.settings)  # put back, without a SIGHUP
    device.push(1, {"heartbeat": {"interval_s": 2}})
    state = device.next_state()
    assert (state["version"], state["status"], state["reason"]) == (1, "applied", None)


def test_the_inbox_bound_follows_the_config(device: Device) -> None:
    device.start()
    bigger = {"trusted_keys": [public_hex(device.key)], "apply_timeout_s": 3,
              "max_envelope_bytes": 262_144}
    device.push(1, {"remote_config": bigger})
    assert device.next_state()["status"] == "applied"
    # 100 kB of JSON whitespace, signed: above the 64 KiB the device started with.
    padded = config_payload(2, {"heartbeat": {"interval_s": 2}}, device=device.id)
    publish(device.broker.port, device.device_topic,
            envelope(device.key, padded + b" " * 100_000))
    state = device.next_state()
    assert (state["version"], state["status"]) == (2, "applied")
