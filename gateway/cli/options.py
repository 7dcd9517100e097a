"""The arguments several commands take, each declared once: the device file, the broker an
operator command talks to, the key it signs with, and the devices' topic prefix.

``broker_args`` declares everything about reaching the broker and ``broker`` reads it back
for the command's session, so that a way to authenticate to the broker is added to every
operator command here, in one place.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.cli.converters import broker_url, topic_name
from gateway.config.models import BrokerUrl


def config_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path, required=True, metavar="FILE")


def broker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", type=broker_url, required=True, metavar="URL",
                        help="mqtt://host:port or mqtts://host:port")


def broker(args: argparse.Namespace) -> BrokerUrl:
    """The broker ``broker_args`` declared, as the operator's session takes it."""
    url: BrokerUrl = args.broker
    return url


def signing_key(parser: argparse.ArgumentParser,
                help: str = "a private key from keygen, trusted by the devices") -> None:
    parser.add_argument("--key", type=Path, required=True, metavar="KEYFILE", help=help)


def topic_prefix(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", type=topic_name, default="gw", metavar="P",
                        help="the devices' mqtt.topic_prefix (gw)")
