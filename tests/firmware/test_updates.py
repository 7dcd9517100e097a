"""Releases through a running device: the real daemon started by ``edge-gateway launch``
under the unit's stand-in, a real Mosquitto, bundles of this very source served over HTTP
and installed by pip into the slots. A good one commits and runs, and runs again from its
slot after a ``kill -9``; a bad one comes back by itself, whether it fails its health check
or cannot even import. A kill at each step of an update is test_kill.py's, in process."""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from device_kit import GOOD, NO_IMPORT, UNHEALTHY, Bundles, Device, FileServer

BASE = metadata.version("edge-gateway")
STEPS = ["downloading", "verifying", "installing", "awaiting_health"]


def test_a_good_release_is_installed_committed_and_run(
        make_device: Callable[..., Device], server: FileServer, bundles: Bundles) -> None:
    data = bundles.paths[GOOD]
    cut = data.stat().st_size // 3
    url = server.add("good.tar.gz", data, cut_at=cut)
    device = make_device()
    assert device.start()["state"] == "idle"
    assert device.heartbeat()["firmware"] == {"version": BASE, "slot": None,
                                              "channel": "stable"}

    device.release(GOOD, url, data)
    committed = device.state("committed", timeout=240)
    assert committed["version"] == GOOD
    assert device.states_seen()[-5:] == [*STEPS, "committed"]
    # Cut a third of the way: resumed with one Range request from there.
    requests = server.requests_for("good.tar.gz")
    assert [(r.range, r.status) for r in requests] == [(None, 200), (f"bytes={cut}-", 206)]

    beat = device.heartbeat(lambda h: h["firmware"]["version"] == GOOD)
    assert beat["firmware"] == {"version": GOOD, "slot": "a", "channel": "stable"}
    assert device.current() == "a"
    record = device.record()
    assert (record["state"], record["active"], record["trial"]) == ("committed", "a", None)
    # One restart, asked for by the activation: in the process, through the launcher.
    assert (device.unit.exits, len(device.unit.pids)) == ([], 1)
    assert [e["exit_code"] for e in device.events("daemon.stopped")] == [75]
    assert not list((device.state_dir / "firmware" / "download").iterdir())

    # Killed once committed: the unit's next start runs the release from its slot, with no
    # trial to count, and says so again.
    mark = len(device.seen)
    killed = device.unit.kill()
    device.next_boot()
    assert device.state_since(mark)["state"] == "committed"
    assert device.heartbeat()["firmware"] == {"version": GOOD, "slot": "a", "channel": "stable"}
    assert (device.unit.exits, device.current(), device.record()["state"]) == (
        [-9], "a", "committed")
    assert not Path(f"/proc/{killed}").exists()
    assert device.log().count("trial start ") == 1


def test_a_release_that_fails_its_health_check_rolls_back(
        make_device: Callable[..., Device], server: FileServer, bundles: Bundles) -> None:
    data = bundles.paths[UNHEALTHY]
    url = server.add("unhealthy.tar.gz", data)
    # Time enough for the uplink to connect: then only the sensor is to blame.
    device = make_device(firmware={"health_timeout_s": 4})
    device.start()
    device.release(UNHEALTHY, url, data)
    report = device.state("rolled_back", timeout=240)
    assert report["version"] == UNHEALTHY
    assert report["reason"].startswith("not healthy within 4 s: sensor room"), report
    assert device.states_seen()[-5:] == [*STEPS, "rolled_back"]

    beat = device.heartbeat(lambda h: h["firmware"]["version"] == BASE)
    assert beat["firmware"]["slot"] is None
    assert device.current() is None
    record = device.record()
    assert (record["active"], record["refused"]) == (None, UNHEALTHY)
    # The trial ran once and restarted into the previous slot: two restarts in the process.
    assert (device.unit.exits, len(device.unit.pids)) == ([], 1)
    assert [e["exit_code"] for e in device.events("daemon.stopped")] == [75, 75]

    # Not tried again: the retained manifest comes back with every start, and is ignored.
    device.unit.kill()
    device.heartbeat(lambda h: h["uptime_s"] < 5 and h["firmware"]["version"] == BASE)
    assert device.record()["state"] == "rolled_back"
    assert device.states_seen()[-1] == "rolled_back"


def test_a_release_that_cannot_import_is_rolled_back_by_the_launcher(
        make_device: Callable[..., Device], server: FileServer, bundles: Bundles) -> None:
    data = bundles.paths[NO_IMPORT]
    url = server.add("no-import.tar.gz", data)
    device = make_device()
    device.start()
    device.release(NO_IMPORT, url, data)
    report = device.state("rolled_back", timeout=240)
    assert (report["version"], report["reason"]) == (NO_IMPORT, "did not come up 2 times")

    beat = device.heartbeat(lambda h: h["firmware"]["version"] == BASE)
    assert beat["firmware"]["slot"] is None
    assert device.current() is None
    # Activation (in the process), then the new slot died at import twice (1, 1); the
    # launcher's third start went back to the base install.
    assert device.unit.exits == [1, 1]
    log = device.log()
    assert "a release that cannot import its daemon" in log
    assert "did not come up 2 times: back to the base install" in log
