"""The daemon: compose everything from a config (``compose``), run it, change it, stop it
(``lifecycle``).

The running config has one owner, the reconfigurer (``reconfigure``): start-up, SIGHUP and
remote updates all change it there, and it hands each change to the running parts
(``parts``), which change part by part. The firmware task is carried by ``firmware_host``;
``status`` and ``vitals`` say how the daemon is doing; ``signals`` and ``tasks`` are the
process's signals and the one TaskGroup of the daemon's life.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.config import file as configfile
from gateway.daemon.compose import compose
from gateway.service import log as logsetup


async def serve(path: Path, document: configfile.Document) -> int:
    daemon = await compose(path, document)
    return await daemon.run()


def run(path: Path) -> int:
    """``edge-gateway run``: 0 after a clean stop, 2 for an invalid file."""
    document = configfile.load_document(path)
    config = document.config
    logsetup.configure(config.logging.level, config.logging.format)
    return asyncio.run(serve(path, document))
