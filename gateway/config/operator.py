"""How an operator's command reaches the broker: its URL and the login, as a device's
``mqtt`` section gives them (``username``, ``password_file``, ``tls``), written once in
the operator's own file or given per command.

A production broker refuses anonymous clients and speaks TLS, often with client
certificates; the control plane must log in as the devices do. A password is only ever
read from a file: one given on a command line would sit in the shell's history and in
every process listing. The operator's file (``~/.config/edge-gateway/operator.yaml``)
holds the same keys as a device's ``mqtt`` section, ``broker`` for ``brokers``::

    broker: mqtts://broker.example.com:8883
    username: ops
    password_file: ops.password      # relative to this file
    tls: {ca_file: ca.crt, cert_file: ops.crt, key_file: ops.key}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gateway.config.fields import FilePath
from gateway.config.file import load_settings, validate_as
from gateway.config.mqtt import Broker, BrokerUrl, TlsConfig
from gateway.config.section import Section


class OperatorConfig(Section):
    broker: Broker | None = None
    username: str | None = None
    password_file: FilePath | None = None
    tls: TlsConfig = TlsConfig()


@dataclass(frozen=True)
class BrokerAccess:
    """A broker and the login to it, as an operator's session takes them. Shown as its URL:
    the login has no place in a message."""

    url: BrokerUrl
    username: str | None = None
    password_file: Path | None = None
    tls: TlsConfig = field(default_factory=TlsConfig)

    def __str__(self) -> str:
        return str(self.url)

    def problems(self) -> list[str]:
        """What cannot work together, as the device's ``mqtt`` section refuses it."""
        found = []
        if (self.tls.cert_file is None) != (self.tls.key_file is None):
            found.append("a client certificate and its key go together")
        if self.password_file is not None and self.username is None:
            found.append("a password file needs a username")
        if not self.url.tls and (self.tls.cert_file or self.tls.ca_file):
            found.append(f"certificates are for an mqtts:// broker, not {self.url}")
        return found


def _anchored(path: Path | None, base_dir: Path) -> Path | None:
    return None if path is None else base_dir / path


def load_operator_config(path: Path) -> OperatorConfig:
    """The operator's file, its relative paths anchored at its directory."""
    config = validate_as(OperatorConfig, load_settings(path), str(path))
    base = path.resolve().parent
    tls = config.tls.model_copy(update={
        "ca_file": _anchored(config.tls.ca_file, base),
        "cert_file": _anchored(config.tls.cert_file, base),
        "key_file": _anchored(config.tls.key_file, base),
    })
    return config.model_copy(update={"password_file": _anchored(config.password_file, base),
                                     "tls": tls})
