"""Mutual TLS against a real Mosquitto that requires client certificates.

The test makes its own PKI with the openssl CLI (``tls_helpers``): a CA, a server
certificate for localhost/127.0.0.1, a client certificate, and an untrusted CA with a
client certificate of its own. The daemon runs as a process with ``mqtts://localhost``;
a subscriber watches through the broker's plain listener.

A good setup publishes telemetry. A wrong CA, an untrusted client certificate and a
missing one are refused, each with an ``uplink.disconnected`` log line that says what
went wrong, at once rather than after ``connect_timeout_s``, and nothing is published.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import DaemonProcess, Subscriber, device_config, write_config
from tls_helpers import Cert, Pki, TlsBroker, make_pki

TELEMETRY = "gw/dev-1/telemetry/room"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[TlsBroker]:
    broker = TlsBroker(tmp_path, pki)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


def tls_config(broker: TlsBroker, tmp_path: Path, ca: Path, client: Cert | None) -> Path:
    settings = device_config(broker.tls_port, tmp_path / "state")
    tls: dict[str, Any] = {"ca_file": str(ca)}
    if client is not None:
        tls |= {"cert_file": str(client.cert), "key_file": str(client.key)}
    # A long connect timeout: a refusal must be reported without waiting for it.
    settings["mqtt"] |= {"brokers": [broker.tls_url], "tls": tls, "connect_timeout_s": 30}
    return write_config(tmp_path / "gw.yaml", settings)


def events(daemon: DaemonProcess, name: str) -> list[dict[str, Any]]:
    return [e for e in daemon.events() if e.get("event") == name]


def test_mutual_tls_connects_and_publishes(tls_broker: TlsBroker, pki: Pki, tmp_path: Path) -> None:
    sub = Subscriber(tls_broker.port, TELEMETRY)
    daemon = DaemonProcess(tls_config(tls_broker, tmp_path, pki.ca.cert, pki.client))
    try:
        seqs = [sub.until(lambda m: m.topic == TELEMETRY).json()["seq"] for _ in range(5)]
        assert seqs == list(range(seqs[0], seqs[0] + 5))
        [connected, *_] = events(daemon, "uplink.connected")
        assert connected["broker"] == tls_broker.tls_url
        assert daemon.stop() == 0
    finally:
        daemon.kill()
        sub.close()
    # The only disconnection is the clean one at the stop.
    assert [e["error"] for e in events(daemon, "uplink.disconnected")] in (
        [],
        ["connection closed"],
    ), daemon.log()


# A TLS broker that closes before CONNACK: a refused certificate, or MQTT 5 to a 3.1.1 broker.
CLOSED_HINT = ("refuses the client certificate, or when it speaks only MQTT 3.1.1 "
               "(set mqtt.protocol: 3.1.1)")  # fmt: skip


@pytest.mark.parametrize(
    ("case", "daemon_says", "broker_says"),
    [
        ("wrong CA", "CERTIFICATE_VERIFY_FAILED", "unexpected eof"),
        ("untrusted client certificate", CLOSED_HINT, "certificate verify failed"),
        ("no client certificate", CLOSED_HINT, "peer did not return a certificate"),
    ],
)  # fmt: skip
def test_bad_certificates_are_refused_with_a_clear_log_line(
    case: str,
    daemon_says: str,
    broker_says: str,
    tls_broker: TlsBroker,
    pki: Pki,
    tmp_path: Path,
) -> None:
    ca, client = {
        "wrong CA": (pki.rogue_ca.cert, pki.client),
        "untrusted client certificate": (pki.ca.cert, pki.rogue_client),
        "no client certificate": (pki.ca.cert, None),
    }[case]
    sub = Subscriber(tls_broker.port, "gw/#")
    daemon = DaemonProcess(tls_config(tls_broker, tmp_path, ca, client))
    try:
        deadline = time.monotonic() + 15
        while len(events(daemon, "uplink.disconnected")) < 3:  # refused, and retried
            assert daemon.proc.poll() is None, daemon.log()
            assert time.monotonic() < deadline, daemon.log()
            time.sleep(0.05)
        # Nothing got through (no connection was ever made: see the log, below).
        with pytest.raises(queue.Empty):
            sub.get(timeout=0.01)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
        sub.close()
    refusals = events(daemon, "uplink.disconnected")
    assert not events(daemon, "uplink.connected"), daemon.log()
    for refusal in refusals:
        assert refusal["level"] == "warning"
        assert refusal["broker"] == tls_broker.tls_url
        assert daemon_says in refusal["error"], refusal
        assert "TimeoutError" not in refusal["error"], refusal
    assert broker_says in tls_broker.log(), tls_broker.log()
    print(f"\n{case}: {refusals[0]['error']}")
