"""The tables of ``fleet status``: one row per device (docs/PROTOCOL.md section 7.3), then one per
channel and release with how many devices are online and in which firmware state. Only the
operator's commands import this (and so ``rich``).
"""

from __future__ import annotations

from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gateway import wire

STATE_STYLES = {wire.FirmwareState.COMMITTED: "green", wire.FirmwareState.FAILED: "red",
                wire.FirmwareState.ROLLED_BACK: "yellow", wire.FirmwareState.NOT_ELIGIBLE: "dim"}


def _online(record: dict[str, Any]) -> Text:
    if record["online"] is None:
        return Text("?", style="dim")
    if record["online"]:
        return Text("online", style="green")
    reason = record["status_reason"]
    return Text("offline" + (f" ({reason})" if reason else ""), style="red")


def _release(record: dict[str, Any]) -> str:
    version = record["version"] or "?"
    return version + (f" ({record['slot']})" if record["slot"] else "")


def _firmware(record: dict[str, Any]) -> Text:
    state = record["firmware_state"]
    if state is None:
        return Text("-", style="dim")
    text = state["state"] + (f" {state['version']}" if state["version"] else "")
    if state["progress"] is not None and state["state"] == wire.FirmwareState.DOWNLOADING:
        text += f" {state['progress']:.0%}"  # the share of the bundle received
    if state["reason"]:
        text += f": {state['reason']}"
    return Text(text, style=STATE_STYLES.get(state["state"], ""))


def _config(record: dict[str, Any]) -> str:
    versions = record["config_version"]
    text = ", ".join(f"{scope} v{n}" for scope, n in sorted(versions.items())) if versions else ""
    state = record["config_state"]
    if state is not None and state["status"] != wire.ConfigStatus.APPLIED:
        text += ("; " if text else "") + f"{state['status']} v{state['version']}"
    return text or "-"


def _heartbeat(record: dict[str, Any]) -> str:
    age = record["heartbeat_age_s"]
    return "-" if age is None else f"{age:.0f} s ago"


def render(summary: dict[str, Any], out: TextIO) -> None:
    console = Console(file=out, highlight=False)
    devices = Table(title=f"devices ({len(summary['devices'])})")
    for column in ("device", "status", "channel", "release", "firmware", "config", "queue",
                   "heartbeat"):
        devices.add_column(column, justify="right" if column == "queue" else "left")
    for device, record in summary["devices"].items():
        queue = record["queue_depth"]
        devices.add_row(device, _online(record), record["channel"] or "?", _release(record),
                        _firmware(record), _config(record), "-" if queue is None else str(queue),
                        _heartbeat(record))
    channels = Table(title="channels")
    for column in ("channel", "release", "devices", "online", "firmware states"):
        channels.add_column(column, justify="right" if column in ("devices", "online")
                            else "left")
    for channel, releases in summary["channels"].items():
        for version, row in releases.items():
            states = ", ".join(f"{state} {n}" for state, n in row["states"].items())
            channels.add_row(channel, version, str(row["devices"]), str(row["online"]), states)
    console.print(devices)
    console.print(channels)
