"""What anyone who can publish on the broker, but holds no trusted key, can do to a device:
nothing but earn a count in its heartbeat (never a word on the retained config/state); and a
flood of it costs neither telemetry nor memory."""

from __future__ import annotations

import json
import subprocess
import time

from conftest import SENSORS, Device, gaps, rss_kib
from nacl.signing import SigningKey
from signing import b64, config_payload, envelope, kid, publish


def test_each_forgery_is_counted_and_each_mistake_reported(device: Device) -> None:
    device.start()
    stranger = SigningKey.generate()
    me = device.id
    good = config_payload(2, {"sensors": [SENSORS[0]]}, device=me)
    tampered = json.loads(envelope(device.key, good))
    tampered["payload"] = b64(good.replace(b'"room"', b'"moor"'))
    # Anyone on the broker can send these: counted per reason, never reported.
    forgeries = [
        ("bad signature", envelope(stranger, good, key_id=json.loads(
            envelope(device.key, good))["kid"])),
        ("unknown key", envelope(stranger, good)),
        ("bad signature", json.dumps(tampered).encode()),
        ("not json", b"this is not an envelope"),
        # Just over max_envelope_bytes (64 KiB), within the packet size the device gives
        # the broker: a larger one the broker drops unsent (MQTT 5).
        ("too large", envelope(device.key, config_payload(
            2, {"sensors": [{**SENSORS[0], "name": "x" * 49_100}]}, device=me))),
        ("unsupported alg", envelope(device.key, good, alg="HS256")),
        ("malformed envelope", b'{"alg": "Ed25519"}'),
    ]
    for _, data in forgeries:
        publish(device.broker.port, device.device_topic, data, retain=False)
    counted: dict[str, int] = {}
    for reason, _ in forgeries:
        counted[reason] = counted.get(reason, 0) + 1
    device.wait_for(lambda m: m.topic.endswith("/heartbeat")
                    and m.json()["config_rejected"] == counted)
    assert device.states == []

    # Signed by a trusted key but copied from elsewhere on the broker, where such envelopes
    # are retained: one for another device or group, a document of another kind. Anyone
    # who can publish could send these: counted, never reported.
    copies = [
        (device.device_topic, "not addressed",
         envelope(device.key, config_payload(2, {}, device="someone-else"))),
        (device.device_topic, "wrong kind",
         envelope(device.key, config_payload(2, {}, device=me, kind="firmware"))),
        (device.group_topic(), "not addressed",
         envelope(device.key, config_payload(2, {}, group="line-b"))),
    ]
    for topic, reason, data in copies:
        publish(device.broker.port, topic, data, retain=False)
        counted[reason] = counted.get(reason, 0) + 1
    device.wait_for(lambda m: m.topic.endswith("/heartbeat")
                    and m.json()["config_rejected"] == counted)
    assert device.states == []

    # Signed by a trusted key for this device, newer than what it has, but wrong: the
    # answer to a push, reported with the key that signed it.
    publish(device.broker.port, device.device_topic,
            envelope(device.key, config_payload(2, {}, device=me, age_s=7200)))
    state = device.next_state()
    assert (state["status"], state["reason"], state["kid"]) == ("rejected", "expired",
                                                                kid(device.key))
    # A valid signature over a config that does not validate.
    device.push(2, {"sensors": [{"name": "x", "driver": "nope"}]})
    state = device.next_state()
    assert state["status"] == "rejected"
    assert state["reason"].startswith("invalid config: sensors.0")

    beat = device.heartbeat()
    assert set(beat["sensors"]) == {"room", "hall"}
    assert beat["config_version"] == {}
    assert device.show()["origins"]["sensors"] == "file"


def test_flood_leaves_telemetry_and_memory_alone(device: Device) -> None:
    device.start()
    device.drain(3.0)  # past start-up allocations
    rss_before = rss_kib(device.pid)
    stranger = SigningKey.generate()
    forged = envelope(stranger, config_payload(9, {}, device=device.id))
    lines = b"\n".join(forged if n % 2 else b"junk %d" % n for n in range(10_000)) + b"\n"
    started = time.monotonic()
    for topic in (device.device_topic, device.group_topic()):
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(device.broker.port),
                        "-t", topic, "-q", "1", "-l"], input=lines[: len(lines) // 2],
                       check=True, timeout=30)
    assert time.monotonic() - started < 10
    # Done with the flood once two heartbeats in a row count the same refusals, some.
    counted = 0
    while True:
        total = sum(device.heartbeat()["config_rejected"].values())
        if total and total == counted:
            break
        counted = total
    assert gaps(device.seqs["room"]) == []
    assert gaps(device.seqs["hall"]) == []
    assert rss_kib(device.pid) - rss_before < 5 * 1024
    assert device.daemon is not None
    rejections = [e for e in device.daemon.events() if e.get("event") == "config.rejected"]
    assert 1 <= len(rejections) <= 6
    device.wait_for(lambda m: m.topic.endswith("/telemetry/room"))  # and goes on publishing
