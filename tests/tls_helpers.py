"""Certificates made with the openssl CLI, and a Mosquitto that requires client certs.

``make_pki(dir)`` writes a test CA, a server certificate for localhost/127.0.0.1 and a
client certificate signed by it, plus a second, untrusted ("rogue") CA with a client
certificate of its own. Keys are P-256 (fast to make); every certificate carries the
extensions a strict verifier wants (key identifiers, key usage, extended key usage).
"""

from __future__ import annotations

import getpass
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from helpers import Broker, free_port, wait_for_port

DAYS = "2"


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Cert
    server: Cert
    client: Cert
    rogue_ca: Cert
    rogue_client: Cert


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _key(path: Path) -> Path:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
    path.chmod(0o600)
    return path


def make_ca(directory: Path, name: str) -> Cert:
    key = _key(directory / f"{name}.key")
    cert = directory / f"{name}.crt"
    _openssl(
        "req", "-x509", "-new", "-key", key, "-out", cert, "-days", DAYS,
        "-subj", f"/O=edge-gateway tests/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
    )  # fmt: skip
    return Cert(cert, key)


def make_leaf(directory: Path, name: str, ca: Cert, *, server: bool) -> Cert:
    key = _key(directory / f"{name}.key")
    csr = directory / f"{name}.csr"
    cert = directory / f"{name}.crt"
    ext = directory / f"{name}.ext"
    usage = "serverAuth" if server else "clientAuth"
    lines = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature",
        f"extendedKeyUsage={usage}",
        "subjectKeyIdentifier=hash",
        "authorityKeyIdentifier=keyid,issuer",
    ]
    if server:
        lines.append("subjectAltName=DNS:localhost,IP:127.0.0.1")
    ext.write_text("\n".join(lines) + "\n")
    _openssl("req", "-new", "-key", key, "-out", csr, "-subj", f"/O=edge-gateway tests/CN={name}")
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-out", cert,
        "-days", DAYS, "-set_serial", str(secrets.randbits(63)), "-extfile", ext,
    )  # fmt: skip
    return Cert(cert, key)


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca(directory, "ca")
    rogue_ca = make_ca(directory, "rogue-ca")
    return Pki(
        ca=ca,
        server=make_leaf(directory, "server", ca, server=True),
        client=make_leaf(directory, "dev-1", ca, server=False),
        rogue_ca=rogue_ca,
        rogue_client=make_leaf(directory, "rogue-dev-1", rogue_ca, server=False),
    )


class TlsBroker(Broker):
    """Mosquitto with a plain listener (``port``, for the test's own clients) and a
    mutual-TLS listener (``tls_port``) that requires a client certificate from our CA."""

    def __init__(self, workdir: Path, pki: Pki) -> None:
        super().__init__(workdir)
        self.tls_port = free_port()
        self.conf.write_text(
            # Mosquitto started as root drops to another user before it reads the
            # certificates; stay ourselves so it can read them in the test's directory.
            f"user {getpass.getuser()}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            f"listener {self.port} 127.0.0.1\n"
            f"listener {self.tls_port} 127.0.0.1\n"
            f"cafile {pki.ca.cert}\n"
            f"certfile {pki.server.cert}\n"
            f"keyfile {pki.server.key}\n"
            "require_certificate true\n"
        )

    @property
    def tls_url(self) -> str:
        return f"mqtts://localhost:{self.tls_port}"

    def start(self) -> None:
        super().start()
        wait_for_port(self.tls_port)

    def log(self) -> str:
        return (self.workdir / "mosquitto.log").read_text(errors="replace")
