"""The operator's commands against a production-like broker: Mosquitto's TLS listener
refuses anonymous clients, wants a password and a client certificate from our CA. The
login comes from options or the operator's file; a wrong one is one line and exit 1.

A daemon (the device) and the test's own clients use the broker's plain listener, so the
commands are judged by what they do: a config the device applies, a manifest retained, a
rollout step, the fleet listed."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    Broker,
    DaemonProcess,
    Subscriber,
    device_config,
    free_port,
    retained,
    wait_for_port,
    write_config,
)
from tls_helpers import Cert, Pki, make_pki

from gateway.cli import main
from gateway.trust.envelope import verify
from gateway.trust.keys import Keyring, read_public_key
from gateway.trust.payload import parse_firmware

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = "gw/firmware/stable/manifest"


class AuthBroker(Broker):
    """A plain, anonymous listener for the test's side, and a TLS one for the operator that
    requires the password of ``ops`` and a client certificate."""

    def __init__(self, workdir: Path, pki: Pki) -> None:
        super().__init__(workdir)
        self.tls_port = free_port()
        passwords = workdir / "passwords"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "ops", "s3cret"],
                       check=True, capture_output=True)
        self.conf.write_text(
            f"user {getpass.getuser()}\nper_listener_settings true\npersistence false\n"
            "log_dest stderr\nlog_type error\nlog_type warning\n"
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"listener {self.tls_port} 127.0.0.1\nallow_anonymous false\n"
            f"password_file {passwords}\n"
            f"cafile {pki.ca.cert}\ncertfile {pki.server.cert}\nkeyfile {pki.server.key}\n"
            "require_certificate true\n")

    @property
    def tls_url(self) -> str:
        return f"mqtts://localhost:{self.tls_port}"

    def start(self) -> None:
        super().start()
        wait_for_port(self.tls_port)


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The operator's directory: a signing key, the password, the PKI and operator.yaml."""
    folder = tmp_path_factory.mktemp("ops")
    pki = make_pki(folder / "pki")
    assert cli("keygen", "--out", "ops", cwd=folder).returncode == 0
    (folder / "password").write_text("s3cret\n")
    (folder / "wrong-password").write_text("guess\n")
    (folder / "bundle.tar.gz").write_bytes(b"wheels" * 1000)
    (folder / "operator.yaml").write_text(
        "username: ops\npassword_file: password\n"
        f"tls: {{ca_file: {pki.ca.cert}, cert_file: pki/dev-1.crt, key_file: pki/dev-1.key}}\n")
    return folder


@pytest.fixture(scope="module")
def broker(ops: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthBroker]:
    # make_pki's files, in the operator's directory.
    pki = Pki(*(Cert(ops / "pki" / f"{n}.crt", ops / "pki" / f"{n}.key")
                for n in ("ca", "server", "dev-1", "rogue-ca", "rogue-dev-1")))
    broker = AuthBroker(tmp_path_factory.mktemp("broker"), pki)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, check=False,
        cwd=cwd, timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160", **(env or {})})


def by_file(ops: Path) -> dict[str, str]:
    return {"EDGE_GATEWAY_OPERATOR_CONFIG": str(ops / "operator.yaml")}


def test_every_operator_command_logs_in(broker: AuthBroker, ops: Path, tmp_path: Path) -> None:
    device = write_config(tmp_path / "dev.yaml", device_config(
        broker.port, tmp_path / "state", device_id="auth-dev",
        remote_config={"trusted_keys": [str(ops / "ops.pub")]},
        logging={"level": "info", "format": "json"}))
    status = Subscriber(broker.port, "gw/auth-dev/status")
    daemon = DaemonProcess(device)
    try:
        status.until(lambda m: m.json()["state"] == "online")
        (tmp_path / "update.yaml").write_text("heartbeat:\n  interval_s: 7\n")
        # Everything on the command line...
        pushed = cli("push-config", "--broker", broker.tls_url, "--username", "ops",
                     "--password-file", "password", "--ca-file", "pki/ca.crt",
                     "--cert-file", "pki/dev-1.crt", "--key-file", "pki/dev-1.key",
                     "--key", "ops.key", "--device", "auth-dev", "--version", "1",
                     "--timeout", "20", str(tmp_path / "update.yaml"), cwd=ops)
        assert (pushed.returncode, pushed.stderr) == (0, ""), pushed.stdout
        assert "applied" in pushed.stdout
        # ... or the login from the operator's file, the broker given.
        released = cli("release", "--broker", broker.tls_url, "--key", "ops.key",
                       "--channel", "stable", "--version", "1.0.0", "--artifact",
                       "bundle.tar.gz", "--url", "http://updates.example.net/b.tar.gz",
                       "--percent", "10", cwd=ops, env=by_file(ops))
        assert (released.returncode, released.stderr) == (0, "")
        rolled = cli("rollout", "--broker", broker.tls_url, "--key", "ops.key", "--channel",
                     "stable", "--version", "1.0.0", "--steps", "50", "--soak", "0.2",
                     "--settle", "0.2", "--max-failure-rate", "0.1", cwd=ops, env=by_file(ops))
        assert (rolled.returncode, rolled.stderr) == (0, ""), rolled.stdout
        keyring = Keyring([read_public_key(ops / "ops.pub")])
        manifest = parse_firmware(verify(retained(broker.port, MANIFEST).payload,
                                         keyring).payload)
        assert (str(manifest.version), manifest.rollout.percent) == ("1.0.0", 50)
        fleet = cli("fleet", "status", "--broker", broker.tls_url, "--settle", "1",
                    "--json", "--operator-config", str(ops / "operator.yaml"), cwd=tmp_path)
        assert (fleet.returncode, fleet.stderr) == (0, "")
        assert json.loads(fleet.stdout)["devices"]["auth-dev"]["online"] is True
        assert daemon.stop() == 0
    finally:
        daemon.kill()
        status.close()


@pytest.mark.parametrize("login", [
    ["--username", "ops", "--password-file", "wrong-password"],
    ["--username", "nobody", "--password-file", "password"],
    [],  # anonymous
])
def test_a_wrong_login_is_one_line_and_exit_1(broker: AuthBroker, ops: Path,
                                              login: list[str]) -> None:
    result = cli("fleet", "status", "--broker", broker.tls_url, "--settle", "0.2",
                 "--ca-file", "pki/ca.crt", "--cert-file", "pki/dev-1.crt",
                 "--key-file", "pki/dev-1.key", *login, cwd=ops)
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", f"edge-gateway: {broker.tls_url} refused the connection: code 135 "
               "(Connection Refused: Not authorized)\n")


def test_without_a_client_certificate_the_broker_hangs_up(broker: AuthBroker, ops: Path) -> None:
    result = cli("fleet", "status", "--broker", broker.tls_url, "--settle", "0.2",
                 "--username", "ops", "--password-file", "password", "--ca-file", "pki/ca.crt",
                 cwd=ops)
    assert (result.returncode, result.stdout, result.stderr.count("\n")) == (1, "", 1)
    # At once, not at the CONNACK timeout.
    assert result.stderr.startswith(
        f"edge-gateway: {broker.tls_url} closed the connection before answering"), result.stderr


@pytest.mark.parametrize(("args", "file", "message"), [
    (["--broker", "mqtt://h:1", "--cert-file", "c.crt"], None,
     "edge-gateway: a client certificate and its key go together; certificates are for an "
     "mqtts:// broker, not mqtt://h:1"),
    (["--broker", "mqtts://h:1", "--password-file", "p"], None,
     "edge-gateway: a password file needs a username"),
    ([], None, "edge-gateway: which broker? give --broker URL, or broker: in the operator's "
               "file"),
    ([], "broker: mqtts://h\npasword_file: p\n", "{file}:2: pasword_file: unknown key"),
])
def test_a_login_that_cannot_work_is_a_usage_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        args: list[str], file: str | None, message: str) -> None:
    # The default operator file, under a config home of the test's own.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("EDGE_GATEWAY_OPERATOR_CONFIG", raising=False)
    path = tmp_path / "edge-gateway" / "operator.yaml"
    if file is not None:
        path.parent.mkdir()
        path.write_text(file)
    assert main(["fleet", "status", *args]) == 2
    assert capsys.readouterr().err == message.format(file=path) + "\n"


def test_the_operator_file_names_the_broker_and_the_options_win(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.cli import build_parser
    from gateway.cli.options import broker

    path = tmp_path / "ops" / "operator.yaml"
    path.parent.mkdir()
    path.write_text("broker: mqtts://broker.example.com\nusername: ops\n"
                    "password_file: pw\ntls: {ca_file: ca.crt, verify_hostname: false}\n")
    monkeypatch.setenv("EDGE_GATEWAY_OPERATOR_CONFIG", str(path))
    parser = build_parser()
    access = broker(parser.parse_args(["fleet", "status"]))
    assert (str(access), access.username, access.password_file, access.tls.ca_file,
            access.tls.verify_hostname) == ("mqtts://broker.example.com:8883", "ops",
                                            path.parent / "pw", path.parent / "ca.crt", False)
    access = broker(parser.parse_args(["fleet", "status", "--username", "other",
                                       "--ca-file", "mine.crt"]))
    assert (access.username, access.tls.ca_file) == ("other", Path("mine.crt"))


def test_a_password_file_that_is_a_fifo_is_refused_unopened(broker: AuthBroker, ops: Path,
                                                            tmp_path: Path) -> None:
    fifo = tmp_path / "password"
    os.mkfifo(fifo)
    result = cli("fleet", "status", "--broker", broker.tls_url, "--settle", "0.2",
                 "--username", "ops", "--password-file", str(fifo), cwd=ops, timeout=30)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith(f"edge-gateway: cannot log in: password file {fifo}: ")
    assert result.stderr.count("\n") == 1
