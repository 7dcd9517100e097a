"""Payloads: typed config and firmware models, and one-line reasons for everything else."""

from __future__ import annotations

import json
from typing import Any

import pytest
from packaging.version import Version

from gateway.trust.payload import ConfigPayload, parse_config, parse_firmware
from gateway.trust.rejection import Rejected

CONFIG: dict[str, Any] = {
    "kind": "config", "device": "dev-1", "version": 7, "issued_at": 1_700_000_000,
    "expires_at": 1_700_086_400.5, "config": {"heartbeat": {"interval_s": 30}},
}
FIRMWARE: dict[str, Any] = {
    "kind": "firmware", "channel": "stable", "version": "1.10.0rc1",
    "url": "https://releases.example/edge-gateway-1.10.0rc1.tar.gz", "sha256": "ab" * 32,
    "size": 123456, "rollout": {"percent": 12.5}, "issued_at": 1_700_000_000,
    "expires_at": 1_800_000_000,
}


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()


def changed(document: dict[str, Any], **changes: Any) -> bytes:
    updated = {**document, **changes}
    return encode({k: v for k, v in updated.items() if v is not None})


def config_reason(data: bytes) -> str:
    with pytest.raises(Rejected) as caught:
        parse_config(data)
    return caught.value.reason


def firmware_reason(data: bytes) -> str:
    with pytest.raises(Rejected) as caught:
        parse_firmware(data)
    return caught.value.reason


def test_config_payload_for_a_device_and_for_a_group() -> None:
    payload = parse_config(encode(CONFIG))
    assert payload == ConfigPayload(
        kind="config", device="dev-1", group=None, version=7, issued_at=1_700_000_000.0,
        expires_at=1_700_086_400.5, config={"heartbeat": {"interval_s": 30}},
    )
    assert payload.scope == "device"
    group = parse_config(changed(CONFIG, device=None, group="hall-b"))
    assert (group.group, group.device, group.scope) == ("hall-b", None, "group:hall-b")


def test_firmware_payload_with_pep440_version_and_defaults() -> None:
    payload = parse_firmware(encode(FIRMWARE))
    assert payload.version == Version("1.10.0rc1")
    assert payload.version > Version("1.9.0")
    assert payload.version < Version("1.10.0")
    assert (payload.halt, payload.rollout.salt, payload.rollout.percent) == (False, None, 12.5)
    halted = parse_firmware(changed(FIRMWARE, halt=True, rollout={"percent": 100, "salt": "s"}))
    assert (halted.halt, halted.rollout.salt) == (True, "s")
    assert payload.model_dump(mode="json")["version"] == "1.10.0rc1"


@pytest.mark.parametrize(
    "data", [b"", b"\xff", b"{", b'{"kind": NaN}', b'{"kind": "config", "x": "\\udc00"}']
)
def test_not_json(data: bytes) -> None:
    assert config_reason(data) == "not json"
    assert firmware_reason(data) == "not json"


def test_wrong_kind_is_decided_by_the_caller() -> None:
    assert config_reason(encode(FIRMWARE)) == "wrong kind"
    assert firmware_reason(encode(CONFIG)) == "wrong kind"
    assert config_reason(changed(CONFIG, kind="Config")) == "wrong kind"
    assert config_reason(changed(CONFIG, kind=1)) == "wrong kind"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (encode([CONFIG]), "(top level): expected an object"),
        (changed(CONFIG, kind=None), "kind: required key is missing"),
        (changed(CONFIG, version=None), "version: required key is missing"),
        (changed(CONFIG, version=0), "version: Input should be greater than or equal to 1"),
        (changed(CONFIG, version=True), "version: Input should be a valid integer"),
        (changed(CONFIG, version=7.0), "version: Input should be a valid integer"),
        (changed(CONFIG, version="7"), "version: Input should be a valid integer"),
        (changed(CONFIG, group="g"), "(top level): needs exactly one of device and group"),
        (changed(CONFIG, device=None), "(top level): needs exactly one of device and group"),
        (changed(CONFIG, device=""), "device: String should have at least 1 character"),
        (changed(CONFIG, config=[]), "config: Input should be a valid dictionary"),
        (changed(CONFIG, colour="blue"), "colour: unknown key"),
        (changed(CONFIG, expires_at=CONFIG["issued_at"]),
         "(top level): expires_at must be after issued_at"),
        (changed(CONFIG, issued_at="yesterday"), "issued_at: Input should be a valid number"),
        (b'{"kind": "config", "version": 1, "version": 2}', "version: duplicate key"),
        (b'{"kind": "config", "config": ' + b"[" * 40 + b"]" * 40 + b"}",
         "(top level): nested deeper than 32 levels"),
        (b'{"kind": "config", "config": ' + b"[" * 5000 + b"]" * 5000 + b"}",
         "(top level): nested deeper than 32 levels"),
        (changed(CONFIG, **{"bad\nkey": 1}), "bad\\nkey: unknown key"),
    ],
)
def test_malformed_config_names_the_field(data: bytes, reason: str) -> None:
    assert config_reason(data) == f"malformed payload: {reason}"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"version": "banana"}, "version: not a PEP 440 version: 'banana'"),
        ({"version": 2}, "version: expected a PEP 440 version string"),
        ({"url": "file:///etc/shadow"}, "url: expected an http:// or https:// URL"),
        ({"url": "https://"}, "url: expected an http:// or https:// URL"),
        ({"sha256": "AB" * 32}, "sha256: String should match pattern '^[0-9a-f]{64}$'"),
        ({"size": 0}, "size: Input should be greater than or equal to 1"),
        ({"rollout": {"percent": 101}}, "rollout.percent: Input should be less than or equal "
                                        "to 100"),
        ({"rollout": {}}, "rollout.percent: required key is missing"),
        ({"rollout": {"percent": 5, "seed": 1}}, "rollout.seed: unknown key"),
        ({"halt": "yes"}, "halt: Input should be a valid boolean"),
        ({"channel": "c" * 65}, "channel: String should have at most 64 characters"),
    ],
)
def test_malformed_firmware_names_the_field(changes: dict[str, Any], reason: str) -> None:
    assert firmware_reason(changed(FIRMWARE, **changes)) == f"malformed payload: {reason}"


def test_expiry_is_checked_against_the_given_time_up_to_but_excluding_expires_at() -> None:
    payload = parse_config(encode(CONFIG))
    payload.check_expiry(CONFIG["expires_at"] - 0.001)
    for now in (CONFIG["expires_at"], CONFIG["expires_at"] + 86400):
        with pytest.raises(Rejected) as caught:
            payload.check_expiry(now)
        assert caught.value.reason == "expired"
    firmware = parse_firmware(encode(FIRMWARE))
    with pytest.raises(Rejected, match="expired"):
        firmware.check_expiry(FIRMWARE["expires_at"])
