"""The firmware task as the daemon carries it: on with trusted keys (nothing could verify a
manifest without), its channel's manifest routed into its own inbox, following every change
of config; and what the task asks of the daemon (``gateway.firmware.updater.Host``): report,
judge health, restart. The update machinery is imported only once it is on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gateway import __version__
from gateway.config.models import Config
from gateway.daemon.signals import Signals
from gateway.daemon.tasks import Tasks
from gateway.daemon.vitals import Vitals
from gateway.firmware import slots as firmware_slots
from gateway.statefile import Offload
from gateway.trust.keys import Keyring
from gateway.uplink.inbox import Inbox
from gateway.uplink.supervisor import Uplink

if TYPE_CHECKING:
    from gateway.firmware.install import Installer
    from gateway.firmware.updater import Updater

log = structlog.get_logger(__name__)


def place_problem(config: Config) -> str | None:
    """Updates need the launcher and the daemon to agree on the state directory: under
    systemd the launcher takes the unit's, the daemon its file's."""
    unit = os.environ.get("STATE_DIRECTORY", "").split(":", 1)[0]
    if unit and Path(unit).resolve() != config.state_dir.resolve():
        return (f"state_dir {config.state_dir} is not the unit's StateDirectory {unit}: "
                "firmware updates are off")
    return None


async def _run(firmware: Updater, inbox: Inbox) -> None:
    """A fault in the updater is logged and ends updates until the next start; it does not
    take the sensors and the uplink down with it."""
    try:
        await firmware.run(inbox.get)
    except Exception:
        log.exception("firmware.crashed")


class FirmwareHost:
    def __init__(self, path: Path, config: Config, tasks: Tasks, uplink: Uplink,
                 vitals: Vitals, signals: Signals, offload: Offload) -> None:
        self._path = path
        self._tasks = tasks
        self._uplink = uplink
        self._vitals = vitals
        self._signals = signals
        self._offload = offload
        self.running_slot = firmware_slots.running_slot(config.state_dir)
        self._place = place_problem(config)
        if self._place is not None:
            log.error("firmware.off", reason=self._place)
        self._updater: Updater | None = None
        self._installer: Installer | None = None
        self._inbox: Inbox | None = None
        self._topic: str | None = None

    @property
    def channel(self) -> str | None:
        """The channel followed, None while updates are off."""
        return None if self._updater is None else self._updater.settings.channel

    async def sync(self, config: Config, keyring: Keyring) -> None:
        wanted = bool(config.remote_config.trusted_keys) and self._place is None
        if not wanted:
            if self._updater is not None:
                await self._tasks.stop("firmware")
                self._updater = self._installer = self._inbox = None
                self._reroute(None)
            return
        # Only now: the download, the installer and their imports cost memory.
        from gateway.firmware import install, updater

        settings = updater.Settings.of(config)
        template = config.firmware.installer or install.DEFAULT_INSTALLER
        if self._updater is None or self._installer is None:
            self._installer = install.Installer(
                config.state_dir, self._path.resolve(), config.firmware.install_timeout_s,
                template, max_unpacked_bytes=config.firmware.max_unpacked_bytes)
            self._updater = updater.Updater(
                config.state_dir, settings, keyring,
                updater.Running(__version__, self.running_slot, firmware_slots.launched()),
                self, self._installer, offload=self._offload)
            self._inbox = Inbox(updater.INBOX_SIZE, updater.MANIFEST_MAX_BYTES)
            self._tasks.start("firmware", _run(self._updater, self._inbox))
        else:
            self._installer.template = template
            self._installer.timeout_s = config.firmware.install_timeout_s
            self._installer.max_unpacked_bytes = config.firmware.max_unpacked_bytes
            await self._updater.configured(settings, keyring)
        self._reroute(settings.manifest_topic)

    def _reroute(self, topic: str | None) -> None:
        if topic == self._topic:
            return
        if self._topic is not None:
            self._uplink.unroute(self._topic)
        if topic is not None and self._inbox is not None:
            self._uplink.route(topic, self._inbox)
        self._topic = topic

    def figures(self) -> dict[str, Any] | None:
        if self._updater is None or self._inbox is None:
            return None
        return {"state": self._updater.record.state, "version": self._updater.record.version,
                "inbox": {"depth": len(self._inbox), "dropped": self._inbox.dropped}}

    # -- gateway.firmware.updater.Host -----------------------------------------------------

    def report(self, topic: str, payload: bytes) -> None:
        self._uplink.publish_retained(topic, payload)

    def health(self, excused: frozenset[str]) -> str | None:
        return self._vitals.trial_problem(excused)

    def unwell(self) -> frozenset[str]:
        return self._vitals.unwell()

    def restart(self) -> None:
        from gateway.firmware.updater import RESTART_EXIT

        self._signals.restart(RESTART_EXIT)
