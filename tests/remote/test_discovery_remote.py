"""Home Assistant's entities follow signed remote updates, their rollbacks included."""

from __future__ import annotations

from pathlib import Path

from conftest import SENSORS, Device
from helpers import Broker, Subscriber, collect, retained_snapshot
from nacl.signing import SigningKey
from signing import public_hex


def test_remote_updates_and_rollbacks_keep_the_entities_in_step(
    mqtt: Broker, tmp_path: Path, key: SigningKey
) -> None:
    # The rollback below comes at the apply timeout: 1 s, not 3.
    device = Device(mqtt, tmp_path, key, home_assistant={"enabled": True},
                    remote_config={"trusted_keys": [public_hex(key)], "apply_timeout_s": 1})
    prefix = f"homeassistant/sensor/{device.id}"

    def entities(sensor: str, *quantities: str) -> set[str]:
        return {f"{prefix}/{sensor}_{q}/config" for q in (*quantities, "health")}

    room = entities("room", "temperature_c", "humidity_rh")
    hall = entities("hall", "temperature_c", "humidity_rh", "pressure_hpa")
    dead = entities("dead", "temperature_c", "humidity_rh")
    ha = Subscriber(mqtt.port, f"{prefix}/#")
    try:
        device.start()
        collect(ha, lambda m: m.payload != b"", room | hall)

        # A sensor that never gives a reading: its entities come, and go with the rollback.
        unplugged = {"name": "dead", "driver": "sht3x", "bus": "sim", "address": 0x45,
                     "interval_s": 0.05, "sim": {"unplugged": True}}
        device.push(1, {"sensors": [*SENSORS, unplugged]})
        assert device.next_state()["status"] == "rolled_back"
        collect(ha, lambda m: m.payload != b"", dead)
        assert collect(ha, lambda m: m.payload == b"", dead) == dict.fromkeys(dead, b"")

        # A sensor removed by an update: its entities are deleted.
        device.push(2, {"sensors": [SENSORS[0]]})
        assert device.next_state()["status"] == "applied"
        assert collect(ha, lambda m: m.payload == b"", hall) == dict.fromkeys(hall, b"")
        assert set(retained_snapshot(mqtt.port, f"{prefix}/#")) == room
    finally:
        ha.close()
        device.close()
