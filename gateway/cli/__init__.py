"""The ``edge-gateway`` command line (being split into a package; see ``device.py``)."""

from gateway.cli.device import main

__all__ = ["main"]
