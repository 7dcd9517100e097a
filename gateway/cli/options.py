"""The arguments several commands take, each declared once: the device file, the broker an
operator command talks to, the key it signs with, and the devices' topic prefix.

``broker_args`` declares everything about reaching the broker and ``broker`` reads it back
for the command's session: the URL and the login, from the command line or, for what it
does not give, the operator's file (``gateway.config.operator``), found by
``--operator-config``, else ``$EDGE_GATEWAY_OPERATOR_CONFIG``, else
``~/.config/edge-gateway/operator.yaml`` if there is one. No option takes a password.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from gateway.cli.common import EXIT_INVALID, Failed
from gateway.cli.converters import broker_url, topic_name
from gateway.config.operator import BrokerAccess, OperatorConfig, load_operator_config

OPERATOR_CONFIG_ENV = "EDGE_GATEWAY_OPERATOR_CONFIG"


def config_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path, required=True, metavar="FILE")


def broker_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "broker", "what is not given here comes from the operator's file "
                  f"(--operator-config, ${OPERATOR_CONFIG_ENV}, "
                  "~/.config/edge-gateway/operator.yaml)")
    group.add_argument("--broker", type=broker_url, metavar="URL",
                       help="mqtt://host:port or mqtts://host:port")
    group.add_argument("--username", metavar="NAME")
    group.add_argument("--password-file", type=Path, metavar="FILE",
                       help="the password on its first line")
    group.add_argument("--ca-file", type=Path, metavar="FILE",
                       help="the CA that signed the broker's certificate (default: the system's)")
    group.add_argument("--cert-file", type=Path, metavar="FILE", help="client certificate")
    group.add_argument("--key-file", type=Path, metavar="FILE", help="its private key")
    group.add_argument("--operator-config", type=Path, metavar="FILE",
                       help="the operator's broker settings (YAML)")


def _operator_config(args: argparse.Namespace) -> OperatorConfig:
    """The operator's file: one named must be there, the default one may be missing."""
    named: Path | None = args.operator_config
    if named is None and os.environ.get(OPERATOR_CONFIG_ENV):
        named = Path(os.environ[OPERATOR_CONFIG_ENV])
    if named is not None:
        return load_operator_config(named)
    home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    default = home / "edge-gateway" / "operator.yaml"
    return load_operator_config(default) if default.exists() else OperatorConfig()


def broker(args: argparse.Namespace) -> BrokerAccess:
    """The broker and login ``broker_args`` declared, as the operator's session takes them:
    each from the command line, or else from the operator's file."""
    file = _operator_config(args)
    url = args.broker or file.broker
    if url is None:
        raise Failed("edge-gateway: which broker? give --broker URL, or broker: in the "
                     "operator's file", EXIT_INVALID)
    tls = file.tls.model_copy(update={
        name: getattr(args, name) for name in ("ca_file", "cert_file", "key_file")
        if getattr(args, name) is not None
    })
    access = BrokerAccess(url, args.username or file.username,
                          args.password_file or file.password_file, tls)
    wrong = access.problems()
    if wrong:
        raise Failed(f"edge-gateway: {'; '.join(wrong)}", EXIT_INVALID)
    return access


def signing_key(parser: argparse.ArgumentParser,
                help: str = "a private key from keygen, trusted by the devices") -> None:
    parser.add_argument("--key", type=Path, required=True, metavar="KEYFILE", help=help)


def topic_prefix(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", type=topic_name, default="gw", metavar="P",
                        help="the devices' mqtt.topic_prefix (gw)")
