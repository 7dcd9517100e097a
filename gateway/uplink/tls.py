"""The TLS context and the broker password, built from the files the settings name.

Both are blocking work: reading the password file, and reading and parsing the CA bundle
and the client certificate and key. They are built once per settings, in a thread, never on
the event loop and never again at each reconnect, so a slow card or a strange path cannot
stall telemetry or the watchdog. A path that is a FIFO would block whoever opens it until a
writer comes, and a device or a directory is never a key or a password: every file named
must be a regular file (``gateway.regularfile``: checked before it is opened, the password
file opened without blocking and checked again), refused with its setting and path otherwise.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from gateway.config.mqtt import MqttConfig, TlsConfig
from gateway.regularfile import read_regular, require_regular

# Far above any password; a password file larger than this is not one.
PASSWORD_MAX_BYTES = 64 * 1024


class CredentialsError(Exception):
    """A file the MQTT settings name cannot serve: the message names the setting and path."""


@dataclass(frozen=True)
class Credentials:
    """What a connection attempt needs from the settings' files, ready to use."""

    # None without ``username`` (or without ``password_file``: a user without a password).
    password: str | None
    # None when no broker of the settings speaks TLS.
    tls: ssl.SSLContext | None


def load(config: MqttConfig) -> Credentials:
    """Read the password and build the TLS context the settings call for. Blocking: call it
    in a thread. Raises ``CredentialsError`` for a file that is missing, unreadable, not a
    regular file, or not what its setting says it is."""
    password = None
    if config.username is not None and config.password_file is not None:
        password = read_password(config.password_file)
    context = tls_context(config.tls) if any(broker.tls for broker in config.brokers) else None
    return Credentials(password, context)


def read_password(path: Path, setting: str = "mqtt.password_file") -> str:
    """The password in the file at ``path``; ``CredentialsError`` names ``setting`` and
    says why not. Blocking."""
    try:
        data = read_regular(path, PASSWORD_MAX_BYTES + 1)
    except OSError as exc:
        raise CredentialsError(f"{setting} {path}: {exc.strerror}") from exc
    if len(data) > PASSWORD_MAX_BYTES:
        raise CredentialsError(f"{setting} {path}: larger than {PASSWORD_MAX_BYTES} bytes")
    try:
        return data.decode().rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise CredentialsError(f"{setting} {path}: not UTF-8 text") from exc


def tls_context(tls: TlsConfig, section: str = "mqtt.tls.") -> ssl.SSLContext:
    """A client context verifying against ``tls.ca_file`` (else the system's CAs), with the
    client certificate when one is named; ``CredentialsError`` says why not. Blocking."""
    for setting, path in (("ca_file", tls.ca_file), ("cert_file", tls.cert_file),
                          ("key_file", tls.key_file)):
        if path is not None:
            _check_regular(f"{section}{setting}", path)
    try:
        context = ssl.create_default_context(cafile=tls.ca_file)
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"{section}ca_file {tls.ca_file}: {_reason(exc)}") from exc
    context.check_hostname = tls.verify_hostname
    if tls.cert_file is not None:
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ValueError) as exc:
            named = f"{tls.cert_file}" + (f" with key_file {tls.key_file}" if tls.key_file else "")
            raise CredentialsError(f"{section}cert_file {named}: {_reason(exc)}") from exc
    return context


def _check_regular(setting: str, path: Path) -> None:
    try:
        require_regular(path)
    except OSError as exc:
        raise CredentialsError(f"{setting} {path}: {exc.strerror}") from exc


def _reason(exc: BaseException) -> str:
    # ssl.SSLError keeps the library's words in ``reason`` and its str() is a tuple.
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None)
    return str(reason) if reason else str(exc) or type(exc).__name__
