"""Every part of the daemon, made from the device file and the stored remote layers before
the daemon exists, each handed what it needs, so that none is set up later nor found
missing.

What reads files (the layer store, trusted keys, the seq counters, the Home Assistant state)
runs off the event loop. The config the parts are made with is the one ``remote.startup``
settled: the file with the stored layers that still hold on top; from then on the
reconfigurer owns it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog

from gateway import __version__
from gateway.config import file as configfile
from gateway.daemon.firmware_host import FirmwareHost
from gateway.daemon.lifecycle import Daemon
from gateway.daemon.parts import Parts
from gateway.daemon.reconfigure import Reconfigurer
from gateway.daemon.signals import Signals
from gateway.daemon.status import LinkWatch, Status
from gateway.daemon.tasks import Tasks
from gateway.daemon.vitals import Vitals
from gateway.pipeline.alarms import AlarmBook
from gateway.pipeline.seq import SeqStore
from gateway.remote import startup
from gateway.remote import store as layer_store
from gateway.remote.store import LayerStore
from gateway.sampling.health import SensorHealth
from gateway.sampling.running import RunningSensors
from gateway.sampling.simbench import SimBench
from gateway.service.diagnostics import Diagnostics
from gateway.service.notify import Notifier
from gateway.uplink.inbox import Inbox
from gateway.uplink.queue import MessageQueue
from gateway.uplink.supervisor import Identity, Uplink

log = structlog.get_logger(__name__)


async def compose(path: Path, document: configfile.Document) -> Daemon:
    """Raises ``ConfigError`` for a bad local file only; stored layers that no longer
    validate are set aside and reported instead."""
    await asyncio.to_thread(document.config.state_dir.mkdir, parents=True, exist_ok=True)
    # Small state files (seq counters, reports) are written off the event loop, in order.
    io = ThreadPoolExecutor(1, thread_name_prefix="state-io")

    async def offload(fn: Callable[[], None]) -> None:
        await asyncio.get_running_loop().run_in_executor(io, fn)

    store = LayerStore(layer_store.path_in(document.config.state_dir), offload)
    start = await asyncio.to_thread(startup.settle, path, document, store)
    config = start.config
    seqs = SeqStore(config.state_dir / "seq.json", offload)
    await asyncio.to_thread(seqs.load)
    queue = MessageQueue(config.queue, config.state_dir)
    alarms = AlarmBook(config.state_dir, queue, offload)
    await asyncio.to_thread(alarms.load)
    links = LinkWatch()
    uplink = Uplink(config.mqtt,
                    Identity(config.device_id, __version__, uuid.uuid4().hex,
                             tuple(config.groups)),
                    queue, on_link=links.changed)
    inbox = Inbox(config.remote_config.inbox_size, config.remote_config.max_envelope_bytes)
    tasks = Tasks()
    bench = SimBench()
    health: dict[str, SensorHealth] = {}
    sensors = RunningSensors(tasks.group, bench, health)
    signals = Signals()
    reconfigurer = Reconfigurer(path, start, store, inbox, uplink)
    firmware = FirmwareHost(path, config, tasks, uplink, Vitals(uplink, health, start.problem),
                            signals, offload)
    status = Status(queue, uplink, inbox, health, sensors, firmware, reconfigurer, alarms)
    parts = Parts(tasks, queue, uplink, inbox, seqs, alarms, sensors, firmware, status,
                  offload)
    log.info("daemon.started", version=__version__, config=str(path),
             device=config.device_id, remote_versions=reconfigurer.versions())
    return Daemon(reconfigurer, parts, status, tasks, queue, uplink, inbox, links, signals,
                  Notifier(), Diagnostics(config.diagnostics.tracemalloc, status.figures),
                  bench, io)
