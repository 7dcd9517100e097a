"""The argument converters: a command-line word to the value a command works with, or one
``argparse.ArgumentTypeError`` line that argparse turns into a usage error (exit 2).

They live together so that a rule (what a topic name may be, what counts as a number of
seconds) is written once for every command that takes it. Those that need a heavier
module (``packaging``, the rollout's step rule) import it when they are called, which is
only when their command's arguments are parsed.
"""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

from gateway.config.models import NAME_PATTERN, BrokerUrl, parse_broker_url

if TYPE_CHECKING:
    from packaging.version import Version


def positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError("a whole number of at least 1")
    return number


def version_number(value: str) -> int:
    number = positive(value)
    if number > 2**63 - 1:
        raise argparse.ArgumentTypeError("at most 2**63 - 1")
    return number


def seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError("a number of seconds above 0")
    return number


def percentage(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number <= 100:
        raise argparse.ArgumentTypeError("a percentage from 0 to 100")
    return number


def fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number < 1:
        raise argparse.ArgumentTypeError("a fraction from 0 up to (not including) 1, e.g. 0.1")
    return number


def broker_url(value: str) -> BrokerUrl:
    try:
        return parse_broker_url(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def topic_name(value: str) -> str:
    if len(value) > 64 or not re.fullmatch(NAME_PATTERN, value):
        raise argparse.ArgumentTypeError(
            "letters, digits, '_', '.' and '-', starting with a letter or digit (64 at most)")
    return value


def pep440(value: str) -> Version:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(value)
    except InvalidVersion:
        raise argparse.ArgumentTypeError("not a PEP 440 version") from None


def pep440_text(value: str) -> str:
    """A PEP 440 version in its normal form, as a manifest carries it."""
    return str(pep440(value))


def steps(value: str) -> tuple[float, ...]:
    from gateway.operator.rollout import parse_steps  # the rollout's own rule

    try:
        return parse_steps(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def i2c_bus(value: str) -> int | str:
    if value == "sim" or value.startswith("/dev/"):
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("a bus number, a /dev/i2c-N path, or sim") from None
