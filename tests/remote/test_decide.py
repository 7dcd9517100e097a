"""``remote.decide``: each rule, and their order, on real signed envelopes and a fixed clock."""

from __future__ import annotations

import json
from typing import Any

import pytest
from nacl.signing import SigningKey
from signing import config_payload, envelope, kid

from gateway.remote.decide import Accept, Decision, Ignore, Reason, Refuse, TrustState, decide
from gateway.remote.layers import DEVICE, Applied, Layer
from gateway.trust.keys import Keyring, PublicKey
from gateway.trust.rejection import Rejected
from gateway.uplink.inbox import Inbound

KEY = SigningKey.generate()
STRANGER = SigningKey.generate()
DEVICE_TOPIC = "gw/dev/config/set"
GROUP_TOPIC = "gw/group/a/config/set"
NOW = 1_000_000.0


def trust(applied: Applied | None = None) -> TrustState:
    return TrustState(Keyring([PublicKey(bytes(KEY.verify_key))]), "dev", ("a",),
                      {DEVICE_TOPIC: DEVICE, GROUP_TOPIC: "group:a"}, applied or Applied(), 4096)


def signed(version: int, config: dict[str, Any] | None = None, key: SigningKey = KEY,
           age_s: float = 0, **kw: Any) -> bytes:
    address = kw if kw else {"device": "dev"}
    payload = json.loads(config_payload(version, config or {}, **address))
    payload["issued_at"] = NOW - age_s
    payload["expires_at"] = NOW - age_s + 3600
    return envelope(key, json.dumps(payload).encode())


def message(data: bytes | None, topic: str = DEVICE_TOPIC) -> Inbound:
    return Inbound(topic, data, len(data or b""))


def reason_of(decision: Decision) -> Reason:
    assert isinstance(decision, Refuse)
    return decision.reason


def test_accepts_a_signed_update_above_the_applied_version() -> None:
    decision = decide(message(signed(2, {"heartbeat": {"interval_s": 5}})),
                      trust(Applied({DEVICE: Layer(DEVICE, 1, {})})), NOW)
    assert decision == Accept(Layer(DEVICE, 2, {"heartbeat": {"interval_s": 5}}), kid(KEY))


def test_junk_is_refused_unverified() -> None:
    good = signed(2)
    tampered = json.loads(good)
    tampered["sig"] = json.loads(signed(3))["sig"]
    cases = [
        (message(good, "gw/other/config/set"), Reason.NOT_ADDRESSED),
        (message(None), Reason.TOO_LARGE),
        (message(good + b" " * 5000), Reason.TOO_LARGE),  # the live bound, not the inbox's
        (message(b"\xff"), Reason.NOT_JSON),
        (message(b'{"alg": "Ed25519"}'), Reason.MALFORMED_ENVELOPE),
        (message(envelope(KEY, b"{}", alg="HS256")), Reason.UNSUPPORTED_ALG),
        (message(signed(2, key=STRANGER)), Reason.UNKNOWN_KEY),
        (message(json.dumps(tampered).encode()), Reason.BAD_SIGNATURE),
    ]
    for msg, reason in cases:
        decision = decide(msg, trust(), NOW)
        assert isinstance(decision, Refuse), reason
        assert (decision.reason, decision.verified) == (reason, False)


def test_verified_refusals_name_their_key_scope_and_version() -> None:
    assert decide(message(envelope(KEY, b"[]")), trust(), NOW) == Refuse(
        Reason.MALFORMED_PAYLOAD, "(top level): expected an object", DEVICE, None, kid(KEY))
    firmware = json.loads(config_payload(2, {}, device="dev", kind="firmware"))
    wrong_kind = decide(message(envelope(KEY, json.dumps(firmware).encode())), trust(), NOW)
    assert wrong_kind == Refuse(Reason.WRONG_KIND, None, DEVICE, None, kid(KEY))
    assert decide(message(signed(2, device="someone")), trust(), NOW) == Refuse(
        Reason.NOT_ADDRESSED, None, DEVICE, 2, kid(KEY))
    # A group the device is not in, on the topic of one it is in.
    assert decide(message(signed(2, group="b"), GROUP_TOPIC), trust(), NOW) == Refuse(
        Reason.NOT_ADDRESSED, None, "group:a", 2, kid(KEY))
    assert reason_of(decide(message(signed(2), GROUP_TOPIC), trust(), NOW)) is (
        Reason.NOT_ADDRESSED)
    refusal = decide(message(signed(2)), trust(), NOW + 7200)
    assert refusal == Refuse(Reason.EXPIRED, None, DEVICE, 2, kid(KEY))
    assert str(refusal) == "expired"


def test_the_applied_or_rolled_back_version_is_ignored_even_once_expired() -> None:
    applied = Applied({DEVICE: Layer(DEVICE, 5, {})}, {"group:a": 7})
    later = NOW + 86_400 * 3
    assert decide(message(signed(5)), trust(applied), later) == Ignore()
    assert decide(message(signed(7, group="a"), GROUP_TOPIC), trust(applied), later) == Ignore()
    # Expiry is judged before the version: an old, expired envelope says expired.
    assert reason_of(decide(message(signed(4)), trust(applied), later)) is Reason.EXPIRED
    assert decide(message(signed(4)), trust(applied), NOW) == Refuse(
        Reason.STALE_VERSION, None, DEVICE, 4, kid(KEY))


@pytest.mark.parametrize(("config", "key"), [
    ({"device_id": "x"}, "device_id"),
    ({"state_dir": "/tmp"}, "state_dir"),
    ({"firmware": {"installer": ["/bin/sh", "-c", "id"]}}, "firmware.installer"),
    ({"mqtt": {"brokers": ["mqtt://h"], "password_file": "/etc/shadow"}},
     "mqtt.password_file"),
    ({"mqtt": {"brokers": ["mqtt://h"], "tls": {"ca_file": "/x"}}}, "mqtt.tls.ca_file"),
    ({"mqtt": {"brokers": ["mqtt://h"], "tls": {"cert_file": "/x"}}}, "mqtt.tls.cert_file"),
    ({"mqtt": {"brokers": ["mqtt://h"], "tls": {"key_file": "/x"}}}, "mqtt.tls.key_file"),
    ({"remote_config": {"trusted_keys": ["ab" * 32, "/dev/tty"]}},
     "remote_config.trusted_keys.1"),
])
def test_local_only_keys_cannot_be_set_remotely(config: dict[str, Any], key: str) -> None:
    decision = decide(message(signed(2, config)), trust(), NOW)
    assert isinstance(decision, Refuse) and decision.verified
    assert str(decision) == f"invalid config: {key}: cannot be set remotely"


def test_what_may_be_set_remotely() -> None:
    fine = {"remote_config": {"trusted_keys": ["ab" * 32]},
            "mqtt": {"brokers": ["mqtt://h"], "password_file": None, "tls": {"ca_file": None}},
            "firmware": {"channel": "beta"}}
    assert isinstance(decide(message(signed(2, fine)), trust(), NOW), Accept)
    group = decide(message(signed(2, {"groups": ["b"]}, group="a"), GROUP_TOPIC), trust(), NOW)
    assert str(group) == "invalid config: groups: cannot be set remotely"
    assert isinstance(decide(message(signed(2, {"groups": ["b"]})), trust(), NOW), Accept)


def test_every_trust_rejection_has_a_reason() -> None:
    for text in ("too large", "not json", "malformed envelope", "unsupported alg",
                 "unknown key", "bad signature", "wrong kind", "expired"):
        assert Reason.of(Rejected(text)) == (Reason(text), None)
