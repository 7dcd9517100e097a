"""The operator's key commands: ``keygen`` writes a signing key pair, ``sign`` wraps a
payload file in a signed envelope (for publishing by other means than ``push-config``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.cli.checks import warn_of_size
from gateway.cli.common import EXIT_FAILURE, EXIT_INVALID, EXIT_OK, Command, Failed
from gateway.cli.options import signing_key


class Keygen(Command):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", type=Path, required=True, metavar="PREFIX",
                            help="writes PREFIX.key (private, mode 0600) and PREFIX.pub")

    def run(self, args: argparse.Namespace) -> int:
        from gateway.operator import keygen

        try:
            pair = keygen.write_key_pair(args.out)
        except FileExistsError as exc:
            raise Failed(f"edge-gateway: {exc.filename} exists; keygen never overwrites a key",
                         EXIT_INVALID) from None
        except OSError as exc:
            # A directory that is not there is a wrong --out; anything else failed at run time.
            wrong_path = isinstance(exc, FileNotFoundError | NotADirectoryError)
            raise Failed(f"edge-gateway: cannot write {exc.filename or args.out}: "
                         f"{exc.strerror or exc}",
                         EXIT_INVALID if wrong_path else EXIT_FAILURE) from None
        print(f"kid: {pair.key.public.kid}")
        print(f"public key: {pair.public_path} (list it in the devices' "
              "remote_config.trusted_keys)")
        print(f"private key: {pair.private_path} (mode 0600; keep it off the devices)")
        return EXIT_OK


class Sign(Command):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        signing_key(parser, help="a private key from keygen")
        parser.add_argument("payload", type=Path, metavar="PAYLOAD.json")

    def run(self, args: argparse.Namespace) -> int:
        from gateway.operator import sign
        from gateway.trust.keys import KeyLoadError

        try:
            envelope = sign.sign_file(args.payload, args.key)
        except KeyLoadError as exc:
            raise Failed(f"edge-gateway: {exc}", EXIT_INVALID) from None
        except OSError as exc:
            raise Failed(f"edge-gateway: cannot read {args.payload}: {exc.strerror or exc}",
                         EXIT_INVALID) from None
        warn_of_size(len(envelope))
        sys.stdout.write(envelope.decode("ascii") + "\n")
        return EXIT_OK
