"""Signed remote configuration against a running daemon: applied part by part without a
restart, the same edit by SIGHUP, layers in either order, rollback, key rotation."""

from __future__ import annotations

import copy
import shutil
from typing import Any

from conftest import SENSORS, Device, gaps
from helpers import Broker, write_config
from nacl.signing import SigningKey
from signing import clear_retained, public_hex

EXTRA = {"name": "extra", "driver": "sht3x", "bus": "sim", "address": 0x45, "interval_s": 0.05}


def slower_room_and_extra() -> list[dict[str, Any]]:
    sensors = copy.deepcopy(SENSORS)
    sensors[0]["interval_s"] = 0.5
    return [*sensors, EXTRA]


def rate(device: Device, sensor: str, seconds: float) -> int:
    before = len(device.seqs[sensor])
    device.drain(seconds)
    return len(device.seqs[sensor]) - before


def check_part_by_part(device: Device, pid: int, reconnects: int) -> None:
    """After the change: the new sensor publishes, the slowed one slowed, the untouched
    one never paused, nothing restarted or reconnected."""
    device.wait_for(lambda m: m.topic.endswith("/telemetry/extra"))
    assert rate(device, "room", 1.0) <= 4  # was 20/s at 0.05 s
    assert rate(device, "hall", 1.0) >= 10
    assert gaps(device.seqs["room"]) == []
    assert gaps(device.seqs["hall"]) == []
    beat = device.heartbeat()
    assert set(beat["sensors"]) == {"room", "hall", "extra"}
    assert beat["uplink"]["reconnects"] == reconnects
    assert device.pid == pid


def test_remote_update_applies_part_by_part(device: Device) -> None:
    device.start()
    device.wait_for(lambda m: m.topic.endswith("/telemetry/hall"))
    before = device.heartbeat()
    assert before["config_version"] == {}
    device.push(1, {"sensors": slower_room_and_extra()})
    state = device.next_state()
    assert (state["scope"], state["version"], state["status"]) == ("device", 1, "applied")
    check_part_by_part(device, device.pid, before["uplink"]["reconnects"])
    assert device.heartbeat()["config_version"] == {"device": 1}
    assert device.show()["origins"]["sensors"] == "device v1"


def test_the_same_edit_by_sighup(device: Device) -> None:
    device.start()
    device.wait_for(lambda m: m.topic.endswith("/telemetry/hall"))
    before = device.heartbeat()
    device.reload(sensors=slower_room_and_extra())
    check_part_by_part(device, device.pid, before["uplink"]["reconnects"])


def test_sighup_keeps_remote_layers_on_top(device: Device) -> None:
    device.start()
    device.push(1, {"heartbeat": {"interval_s": 2}})
    assert device.next_state()["status"] == "applied"
    device.reload(sensors=[SENSORS[0]])
    device.wait_for(lambda m: m.topic.endswith("/heartbeat")
                    and set(m.json()["sensors"]) == {"room"})
    shown = device.show()
    assert shown["origins"]["heartbeat"] == "device v1"
    assert [s["name"] for s in shown["config"]["sensors"]] == ["room"]
    beat = device.heartbeat()
    assert set(beat["sensors"]) == {"room"}
    assert beat["config_version"] == {"device": 1}


def test_offline_device_applies_on_reconnect(device: Device) -> None:
    device.push(3, {"heartbeat": {"interval_s": 2}})
    device.start()
    state = device.next_state()
    assert (state["version"], state["status"]) == (3, "applied")


def test_restart_keeps_layers_refuses_older_and_ignores_the_same(device: Device) -> None:
    device.start()
    device.push(5, {"sensors": [SENSORS[0]]})
    assert device.next_state()["status"] == "applied"
    device.stop()
    reported = len(device.states)
    device.start()  # the retained v5 arrives again at connect: no new state
    device.drain(2.0)
    assert device.states[reported:] == []
    assert set(device.heartbeat()["sensors"]) == {"room"}
    device.push(4, {"sensors": SENSORS})  # older: a replay, counted and not reported
    device.wait_for(lambda m: m.topic.endswith("/heartbeat")
                    and m.json()["config_rejected"] == {"stale version": 1})
    assert device.states[reported:] == []
    assert set(device.heartbeat()["sensors"]) == {"room"}


def test_group_and_device_layers_in_either_order(mqtt: Broker, tmp_path: Any,
                                                  key: SigningKey) -> None:
    group_layer = {"heartbeat": {"interval_s": 3}, "sensors": SENSORS}
    device_layer = {"sensors": [SENSORS[1]]}
    shown = []
    for order in ("group first", "device first"):
        workdir = tmp_path / order.replace(" ", "-")
        workdir.mkdir()
        device = Device(mqtt, workdir, key)
        try:
            device.start()
            steps = [("group", group_layer), ("device", device_layer)]
            for scope, layer in steps if order == "group first" else reversed(steps):
                if scope == "group":
                    device.push(1, layer, group="line-a")
                else:
                    device.push(1, layer)
                assert device.next_state()["status"] == "applied"
            result = device.show()
            for volatile in ("device_id", "state_dir"):
                result["config"].pop(volatile)
            shown.append(result)
            assert result["origins"]["heartbeat"] == "group line-a v1"
            assert result["origins"]["sensors"] == "device v1"
            assert set(device.heartbeat()["sensors"]) == {"hall"}
        finally:
            device.close()
            clear_retained(mqtt.port, device.group_topic())
            shutil.rmtree(workdir)
    assert shown[0] == shown[1]


def test_sensor_that_cannot_initialise_is_rolled_back(device: Device) -> None:
    # The rollback comes at the apply timeout: 1 s, not 3.
    device.settings["remote_config"]["apply_timeout_s"] = 1
    write_config(device.path, device.settings)
    device.start()
    dead = {**EXTRA, "name": "dead", "sim": {"unplugged": True}}
    device.push(1, {"sensors": [*SENSORS, dead]})
    state = device.next_state()
    assert state["status"] == "rolled_back"
    assert "dead" in state["reason"]
    device.heartbeat()  # one begun before the rollback may still name the dead sensor
    beat = device.heartbeat()
    assert set(beat["sensors"]) == {"room", "hall"}
    assert beat["config_version"] == {}
    device.wait_for(lambda m: m.topic.endswith("/telemetry/room"))  # and goes on publishing


def test_dead_broker_is_rolled_back(device: Device) -> None:
    # The rollback comes at the apply timeout: 1 s, not 3.
    device.settings["remote_config"]["apply_timeout_s"] = 1
    write_config(device.path, device.settings)
    device.start()
    mqtt = {**device.settings["mqtt"], "brokers": ["mqtt://127.0.0.1:9"]}
    device.push(1, {"mqtt": mqtt})
    state = device.next_state(timeout=30)
    assert state["status"] == "rolled_back"
    assert "broker" in state["reason"]
    count = len(device.seqs["room"])
    device.wait_for(lambda m: m.topic.endswith("/telemetry/room")
                    and len(device.seqs["room"]) >= count + 5)
    assert gaps(device.seqs["room"]) == []


def test_key_rotation_and_no_empty_trust(device: Device) -> None:
    new = SigningKey.generate()
    device.start()
    both = {"trusted_keys": [public_hex(device.key), public_hex(new)], "apply_timeout_s": 3}
    device.push(1, {"remote_config": both})
    assert device.next_state()["status"] == "applied"
    only_new = {"trusted_keys": [public_hex(new)], "apply_timeout_s": 3}
    device.push(2, {"remote_config": only_new}, key=new)
    assert device.next_state()["status"] == "applied"
    device.push(3, {"heartbeat": {"interval_s": 2}})  # the old key: no longer trusted
    device.wait_for(lambda m: m.topic.endswith("/heartbeat")
                    and m.json()["config_rejected"] == {"unknown key": 1})
    device.push(4, {"remote_config": {"trusted_keys": []}}, key=new)
    state = device.next_state()
    assert state["status"] == "rejected"
    assert state["reason"].startswith("invalid config: remote_config.trusted_keys")
    assert device.heartbeat()["config_version"] == {"device": 2}
