"""SIGKILL in every state of the update: the next start, by the unit's stand-in through the
launcher, ends on a working slot and says so consistently (record, link, retained report,
heartbeat). Each state is caught as it is reported: ``downloading`` by a paced server,
``installing`` while pip works, ``verifying`` and ``awaiting_health`` by the debug hook that
holds the update there, ``committed`` as it stays."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from device_kit import GOOD, Bundles, Device, FileServer
from helpers import retained

HOLD = {"EDGE_GATEWAY_DEBUG_HOOKS": "1", "EDGE_GATEWAY_FIRMWARE_HOLD": ""}


@pytest.mark.parametrize("state", ["downloading", "verifying", "installing",
                                   "awaiting_health", "committed"])
def test_killed_in_any_state_the_next_start_ends_on_a_working_slot(
        state: str, make_device: Callable[..., Device], server: FileServer,
        bundles: Bundles) -> None:
    data = bundles.paths[GOOD]
    size = data.stat().st_size
    held = state in ("verifying", "awaiting_health")
    path = f"kill-{state}.tar.gz"
    # Paced, the first download takes about eight seconds; the resumed one is not.
    url = server.add(path, data, rate=size / 8 if state == "downloading" else None)
    device = make_device(env={**HOLD, "EDGE_GATEWAY_FIRMWARE_HOLD": state} if held else {})
    device.start()
    device.release(GOOD, url, data)

    if state == "downloading":
        device.state(lambda s: s["state"] == state and 0.1 < (s["progress"] or 0) < 0.6)
    else:
        device.state(state, timeout=240)
    if state == "installing":
        time.sleep(2)  # pip at work in the slot
    if held:
        device.unit.env.pop("EDGE_GATEWAY_FIRMWARE_HOLD")  # the next start goes on
    killed = device.unit.kill()

    device.next_boot()
    device.state("committed", timeout=240)
    beat = device.heartbeat(lambda h: h["firmware"]["version"] == GOOD)
    assert beat["firmware"] == {"version": GOOD, "slot": "a", "channel": "stable"}
    assert not Path(f"/proc/{killed}").exists()
    assert device.unit.running()
    record = device.record()
    assert (record["state"], record["version"], record["active"]) == ("committed", GOOD, "a")
    assert device.current() == "a"
    report = retained(device.broker.port, f"gw/{device.id}/firmware/state").json()
    assert (report["state"], report["version"]) == ("committed", GOOD)

    exits = device.unit.exits
    if state == "downloading":
        requests = server.requests_for(path)
        assert len(requests) == 2 and requests[1].status == 206, requests
        resumed_at = requests[1].range or ""
        assert resumed_at.startswith("bytes=") and resumed_at.endswith("-")
        assert int(resumed_at[6:-1]) > size // 10  # where the killed process stopped
    # The firmware's own restarts happen in the process (launcher.relaunch): the unit saw
    # only the kill.
    assert exits == [-9]
    if state == "awaiting_health":
        # Killed after the record was written, before the link was switched: the launcher
        # switched it, and counted the start.
        assert "trial start 1 of 2 of 90.0.0 in slot a" in device.log()
