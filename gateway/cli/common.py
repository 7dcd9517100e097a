"""What every command is written on: the exit codes, ``Command`` (a command's arguments and
what it does, side by side), and ``Failed``, the one line that ends a command.

A command that cannot go on raises ``Failed`` (or lets a config file's ``ConfigError``
through); ``main`` prints it on stderr and returns its exit code, so no command spells that
twice. Exit codes: 0 success, 1 runtime failure, 2 bad usage or invalid input.
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod

EXIT_OK, EXIT_FAILURE, EXIT_INVALID = 0, 1, 2


class Failed(Exception):
    """A command ends: ``line`` on stderr, exit ``code``."""

    def __init__(self, line: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(line)
        self.line = line
        self.code = code


class Command(ABC):
    """One command. Its module is imported when the command is chosen, and only then."""

    description: str | None = None
    """The paragraph of the command's own help, under its usage (none when None)."""

    @abstractmethod
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declares the command's arguments on its parser."""

    @abstractmethod
    def run(self, args: argparse.Namespace) -> int:
        """Does the command; its exit code, or ``Failed``."""
