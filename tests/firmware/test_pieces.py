"""The device side's parts on their own: the bundle's unpacking, the download against a
real HTTP server, the launcher's decisions on real files, the record, the manifest rules."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from device_kit import FileServer
from nacl.signing import SigningKey
from packaging.version import Version
from releases import manifest as signed_manifest
from signing import public_hex
from tls_helpers import make_pki

from gateway.firmware import launcher, manifest, slots, space, state
from gateway.firmware.bundle import BundleError, unpack
from gateway.firmware.download import Download, DownloadError, Stopped
from gateway.firmware.install import Installer, InstallError
from gateway.firmware.recorder import Recorder
from gateway.firmware.state import Release
from gateway.trust.keys import Keyring
from gateway.wire import FirmwareState

# -- the bundle ------------------------------------------------------------------------


def tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return path


def test_a_bundle_gives_its_wheels_and_nothing_else(tmp_path: Path) -> None:
    top = tarfile.TarInfo(".")
    top.type = tarfile.DIRTYPE
    archive = tar(tmp_path / "b.tar.gz", [top, ("./a-1-py3-none-any.whl", b"A"),
                                          ("b-2-py3-none-any.whl", b"BB")])
    wheels = unpack(archive, tmp_path / "out")
    assert sorted(w.name for w in wheels) == ["a-1-py3-none-any.whl", "b-2-py3-none-any.whl"]
    assert (tmp_path / "out" / "b-2-py3-none-any.whl").read_bytes() == b"BB"


@pytest.mark.parametrize(("member", "reason"), [
    (("/etc/evil.whl", b""), "'/etc/evil.whl': only wheels at the top level"),
    (("../evil.whl", b""), "'../evil.whl': only wheels at the top level"),
    (("sub/x.whl", b""), "'sub/x.whl': only wheels at the top level"),
    (("setup.py", b""), "'setup.py': not a wheel"),
    ("symlink", "'link.whl': not a regular file"),
    ("directory", "'d.whl': not a regular file"),
])
def test_a_bundle_with_anything_but_top_level_wheels_is_refused(
        tmp_path: Path, member: tuple[str, bytes] | str, reason: str) -> None:
    if member == "symlink":
        entry: tarfile.TarInfo | tuple[str, bytes] = tarfile.TarInfo("link.whl")
        assert isinstance(entry, tarfile.TarInfo)
        entry.type, entry.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif member == "directory":
        entry = tarfile.TarInfo("d.whl")
        entry.type = tarfile.DIRTYPE
    else:
        assert isinstance(member, tuple)
        entry = member
    archive = tar(tmp_path / "b.tar.gz", [("ok-1-py3-none-any.whl", b"x"), entry])
    with pytest.raises(BundleError) as refused:
        unpack(archive, tmp_path / "out")
    assert str(refused.value) == f"bad bundle: {reason}"
    assert not (tmp_path / "evil.whl").exists()
    assert not Path("/etc/evil.whl").exists()


def test_a_bundle_that_is_not_a_tar_gz_or_holds_no_wheel_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.tar.gz").write_bytes(os.urandom(1000))
    with pytest.raises(BundleError, match=r"^bad bundle: "):
        unpack(tmp_path / "junk.tar.gz", tmp_path / "out")
    with pytest.raises(BundleError, match=r"^bad bundle: no wheels in it$"):
        unpack(tar(tmp_path / "empty.tar.gz", []), tmp_path / "out2")
    twice = tar(tmp_path / "twice.tar.gz", [("a.whl", b"1"), ("./a.whl", b"2")])
    with pytest.raises(BundleError, match=r"^bad bundle: 'a\.whl' twice$"):
        unpack(twice, tmp_path / "out3")


# -- the download ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> FileServer:
    served = FileServer()
    yield served  # type: ignore[misc]
    served.close()


def test_a_server_without_ranges_sends_everything_again(tmp_path: Path,
                                                        server: FileServer) -> None:
    data = os.urandom(1_000_000)
    url = server.add("no-ranges", data, cut_at=300_000, ranges=False)
    download = Download(url, tmp_path / "file", len(data))
    download.run()
    assert (tmp_path / "file").read_bytes() == data
    assert [(r.range, r.status) for r in server.requests_for("no-ranges")] == [
        (None, 200), ("bytes=300000-", 200)]


def test_a_partial_file_on_disk_is_resumed(tmp_path: Path, server: FileServer) -> None:
    data = os.urandom(200_000)
    url = server.add("resume", data)
    (tmp_path / "file").write_bytes(data[:123_456])
    download = Download(url, tmp_path / "file", len(data))
    assert download.received == 123_456
    download.run()
    assert (tmp_path / "file").read_bytes() == data
    assert [r.range for r in server.requests_for("resume")] == ["bytes=123456-"]


def test_a_server_with_fewer_bytes_is_refused_for_good(tmp_path: Path,
                                                       server: FileServer) -> None:
    data = os.urandom(10_000)
    url = server.add("short", data)
    with pytest.raises(DownloadError) as refused:
        Download(url, tmp_path / "file", len(data) + 1).run()
    assert refused.value.permanent
    assert refused.value.reason == "the server has 10000 bytes, the manifest says 10001"
    # A partial file already as long as the server's: the range cannot be satisfied.
    (tmp_path / "file").write_bytes(data)
    with pytest.raises(DownloadError) as refused:
        Download(url, tmp_path / "file", len(data) + 1).run()
    assert (refused.value.permanent, refused.value.reason) == (
        True, "the server has fewer than 10001 bytes")


def test_a_missing_file_is_retried_then_reported(tmp_path: Path, server: FileServer) -> None:
    download = Download(server.url("nowhere"), tmp_path / "file", 10, attempts=2)
    with pytest.raises(DownloadError) as failed:
        download.run()
    assert not failed.value.permanent
    assert failed.value.reason == "download failed: HTTP 404 Not Found"
    assert len(server.requests_for("nowhere")) == 2


def test_stop_ends_the_download_keeping_what_came(tmp_path: Path, server: FileServer) -> None:
    data = os.urandom(2_000_000)
    url = server.add("slow", data, rate=500_000)
    download = Download(url, tmp_path / "file", len(data))
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            download.run()
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    while download.received < 100_000:
        time.sleep(0.01)
    download.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(outcome[0], Stopped)
    kept = (tmp_path / "file").read_bytes()
    assert 100_000 <= len(kept) < len(data) and data.startswith(kept)


def test_https_with_the_system_s_trust_store(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    pki = make_pki(tmp_path / "pki")
    tls = FileServer(tls=(pki.server.cert, pki.server.key))
    try:
        data = os.urandom(300_000)
        url = tls.add("bundle", data, cut_at=100_000)
        assert url.startswith("https://127.0.0.1:")
        # A CA the device does not trust: refused, and only retried (a network failure).
        monkeypatch.setenv("SSL_CERT_FILE", str(pki.rogue_ca.cert))
        with pytest.raises(DownloadError) as failed:
            Download(url, tmp_path / "file", len(data), attempts=1).run()
        assert "CERTIFICATE_VERIFY_FAILED" in failed.value.reason
        assert not failed.value.permanent
        monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca.cert))
        Download(url, tmp_path / "file", len(data)).run()
        assert (tmp_path / "file").read_bytes() == data
        assert [r.range for r in tls.requests_for("bundle")] == [None, "bytes=100000-"]
    finally:
        tls.close()


# -- the installer ---------------------------------------------------------------------


def test_an_installer_gets_its_placeholders_and_says_why_it_failed(tmp_path: Path,
                                                                   venv_python: str) -> None:
    archive = tar(tmp_path / "b.tar.gz", [("x-2.0-py3-none-any.whl", b"wheel")])
    config = tmp_path / "gw.yaml"
    release = Release("2.0", "https://example.net/b.tar.gz", "0" * 64, 1)
    venv = slots.venv_of(tmp_path, "b")

    def installer(script: str, cli: str = "") -> Installer:
        """``script`` after a package ``gateway`` whose ``cli`` module is ``cli``."""
        package = ('P=$({venv}/bin/python -c "import sysconfig; '
                   'print(sysconfig.get_path(\'purelib\'))")/gateway && mkdir -p $P && '
                   f'touch $P/__init__.py && echo \'{cli}\' >$P/cli.py && ')
        return Installer(tmp_path, config, 120, ["/bin/sh", "-c", package + script],
                         python=venv_python)  # the installers here are shell scripts

    # A release whose `edge-gateway` records how it was called.
    good = ('cp {bundle}/*.whl {venv}/ && echo {version} >{venv}/version && '
            'printf "#!/bin/sh\\necho \\"\\$@\\" >>{venv}/calls\\n" >{venv}/bin/edge-gateway && '
            'chmod +x {venv}/bin/edge-gateway')
    asyncio.run(installer(good).install(release, archive, "b"))
    assert (venv / "version").read_text() == "2.0\n"
    assert (venv / "x-2.0-py3-none-any.whl").read_bytes() == b"wheel"
    assert (venv / "calls").read_text() == f"check-config {config}\n"
    assert (venv / "pyvenv.cfg").exists()  # python -m venv made it
    assert not (slots.slot_dir(tmp_path, "b") / "bundle").exists()  # unpacked, installed, gone

    failing = 'echo "Looking in links: {bundle}"; echo "ERROR: no edge-gateway=={version}"; exit 3'
    with pytest.raises(InstallError) as failed:
        asyncio.run(installer(failing).install(release, archive, "b"))
    assert (failed.value.reason, failed.value.permanent) == (
        "the installer exited 3: ERROR: no edge-gateway==2.0", True)

    refusing = ('printf "#!/bin/sh\\necho gw.yaml:3: firmware.x: unknown key >&2; exit 2\\n" '
                '>{venv}/bin/edge-gateway && chmod +x {venv}/bin/edge-gateway')
    with pytest.raises(InstallError) as failed:
        asyncio.run(installer(refusing).install(release, archive, "b"))
    assert failed.value.reason == ("2.0 refuses this device: check-config exited 2: "
                                   "gw.yaml:3: firmware.x: unknown key")
    assert failed.value.permanent

    # A release whose package raises at import: check-config could not even start.
    with pytest.raises(InstallError) as failed:
        asyncio.run(installer(good, cli='raise RuntimeError("boom")').install(
            release, archive, "b"))
    assert (failed.value.reason, failed.value.permanent) == (
        "release does not import: RuntimeError: boom", True)

    # What the device decides is tried again: an installer killed, the disk full.
    with pytest.raises(InstallError) as failed:
        asyncio.run(installer("kill -9 $$").install(release, archive, "b"))
    assert (failed.value.reason, failed.value.permanent) == (
        "the installer was killed by SIGKILL", False)
    with pytest.raises(space.NoSpace) as full:
        asyncio.run(installer('echo "OSError: [Errno 28] No space left on device"; exit 1')
                    .install(release, archive, "b"))
    assert full.value.reason.startswith(
        "not enough space: the disk filled while running the installer, have "), full.value
    assert not full.value.permanent


# -- the launcher ----------------------------------------------------------------------


def make_slot(state_dir: Path, slot: str) -> None:
    command = slots.command_of(state_dir, slot)
    command.parent.mkdir(parents=True)
    command.write_text("#!/bin/sh\n")
    command.chmod(0o755)


def trial(boots: int, previous: str | None = None) -> state.Record:
    return state.Record(FirmwareState.AWAITING_HEALTH, version="2.0", active="b",
                        trial=state.Trial("b", previous, boots, 3))


def test_the_launcher_counts_trial_starts_then_goes_back(tmp_path: Path) -> None:
    said: list[str] = []
    make_slot(tmp_path, "a")
    make_slot(tmp_path, "b")
    state.save(tmp_path, trial(0, previous="a"))
    for boots in (1, 2, 3):
        assert launcher.prepare(tmp_path, said.append) == "b"
        record = state.load(tmp_path)
        assert record is not None and record.trial is not None
        assert record.trial.boots == boots
        assert slots.pointed(tmp_path) == "b"
    assert launcher.prepare(tmp_path, said.append) == "a"
    record = state.load(tmp_path)
    assert record is not None
    assert (record.state, record.reason, record.active, record.refused, record.trial) == (
        FirmwareState.ROLLED_BACK, "did not come up 3 times", "a", "2.0", None)
    assert slots.pointed(tmp_path) == "a"
    assert said[-1] == "2.0 in slot b did not come up 3 times: back to slot a"
    # Rolled back, it stays so.
    assert launcher.prepare(tmp_path, said.append) == "a"


def test_the_launcher_goes_back_to_the_base_install(tmp_path: Path) -> None:
    said: list[str] = []
    state.save(tmp_path, trial(0))
    slots.point(tmp_path, "b")
    # The slot on trial has no command at all: back at once.
    assert launcher.prepare(tmp_path, said.append) is None
    record = state.load(tmp_path)
    assert record is not None
    assert (record.state, record.reason) == (FirmwareState.ROLLED_BACK,
                                             "slot b has no edge-gateway")
    assert slots.pointed(tmp_path) is None
    assert not slots.current_link(tmp_path).is_symlink()


def test_an_unreadable_record_or_none_runs_the_base_install(tmp_path: Path) -> None:
    said: list[str] = []
    make_slot(tmp_path, "a")
    slots.point(tmp_path, "a")
    assert launcher.prepare(tmp_path, said.append) is None  # no record: nothing vouches for a
    assert slots.pointed(tmp_path) is None
    state.path_in(tmp_path).parent.mkdir()
    state.path_in(tmp_path).write_text("{not json")
    assert launcher.prepare(tmp_path, said.append) is None
    assert said[-1].startswith("unreadable firmware state: ")
    state.save(tmp_path, state.Record(FirmwareState.COMMITTED, version="2.0", active="b"))
    assert launcher.prepare(tmp_path, said.append) is None  # b is not there
    assert said[-1] == "slot b has no edge-gateway: running the base install"


def test_a_firmware_restart_execs_the_launcher_as_it_was_started() -> None:
    """``relaunch`` replaces the process (same PID) with the command ``child_env`` recorded;
    without one it returns, and the daemon exits 75 for the unit."""
    env = launcher.child_env({"PATH": "/usr/bin:/bin"}, "a")
    assert env[slots.SLOT_ENV] == "a"
    assert json.loads(env[launcher.LAUNCH_ENV])[0] == sys.executable
    script = ("import os, sys; from gateway.firmware import launcher; print(os.getpid(), "
              "flush=True); launcher.relaunch(os.environ, print); sys.exit(75)")
    again = [sys.executable, "-c", "import os; print(os.getpid(), 'again')"]
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, launcher.LAUNCH_ENV: json.dumps(again)},
                         timeout=60, check=False)
    before, after = out.stdout.splitlines()
    assert (out.returncode, after) == (0, f"{before} again")
    alone = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items()
                                if k != launcher.LAUNCH_ENV}, timeout=60, check=False)
    assert alone.returncode == 75


def test_the_state_directory_comes_from_systemd_first() -> None:
    assert launcher.state_directory({"STATE_DIRECTORY": "/var/lib/x:/var/lib/y"}) == Path(
        "/var/lib/x")
    assert launcher.state_directory({}) is None


# -- the record ------------------------------------------------------------------------


def test_the_record_reads_what_a_newer_release_adds_and_refuses_garbage() -> None:
    record = trial(2, previous="a").saw("stable", state.Seen(1.5e9, "2.0", halted=True))
    raw = json.loads(record.encode())
    assert state.decode(json.dumps({**raw, "added_later": [1, 2]}).encode()) == record
    # A record of a release from before the seen manifests were kept.
    older = {k: v for k, v in raw.items() if k != "seen"}
    assert state.decode(json.dumps(older).encode()).seen == {}
    assert json.loads(record.report()) == {"version": "2.0", "state": "awaiting_health",
                                           "reason": None, "progress": None, "ts": 0.0}
    for bad in ({**raw, "state": "exploded"}, {**raw, "active": "c"},
                {**raw, "trial": {"slot": None, "boots": 1, "max_boots": 3}},
                {**raw, "seen": [1]}, {**raw, "seen": {"stable": {"version": "2.0"}}}, [raw]):
        with pytest.raises(ValueError, match=r"^unreadable firmware state: "):
            state.decode(json.dumps(bad).encode())


# A record as releases before the state words came from gateway.wire wrote it.
WRITTEN_BEFORE = (
    b'{\n "format": 1,\n "state": "awaiting_health",\n "version": "2.0",\n "reason": null,\n'
    b' "progress": null,\n "ts": 1700000000.0,\n "active": "b",\n "release": null,\n'
    b' "trial": {\n  "slot": "b",\n  "previous": "a",\n  "boots": 1,\n  "max_boots": 3,\n'
    b'  "excused": [\n   "x"\n  ]\n },\n "refused": "1.5",\n "seen": {\n  "stable": {\n'
    b'   "issued_at": 1600000000.0,\n   "version": "2.0",\n   "halted": true\n  }\n }\n}')


def test_a_record_written_before_reads_and_writes_back_the_same_bytes() -> None:
    record = state.decode(WRITTEN_BEFORE)
    assert record.state is FirmwareState.AWAITING_HEALTH
    assert record.encode() == WRITTEN_BEFORE
    assert record.report() == (b'{"version":"2.0","state":"awaiting_health","reason":null,'
                               b'"progress":null,"ts":1700000000.0}')


def test_an_unreadable_record_is_set_aside_and_the_task_starts_afresh(tmp_path: Path) -> None:
    path = state.path_in(tmp_path)
    path.parent.mkdir()
    path.write_text('{"state": "exploded"}')

    async def offload(fn: Callable[[], None]) -> None:
        fn()

    fresh = state.Record(active="a")
    recorder = Recorder(tmp_path, fresh, lambda record: None, offload, time.time, None)
    asyncio.run(recorder.load())
    assert recorder.record == fresh
    [aside] = path.parent.iterdir()
    assert aside.name.startswith("state.json.unreadable-")
    assert aside.read_text() == '{"state": "exploded"}'


# -- the manifest rules ----------------------------------------------------------------


def test_the_manifest_rules_in_their_order() -> None:
    key = SigningKey.generate()
    keyring = Keyring.load([public_hex(key)])
    device = manifest.Device("dev-1", "stable", Version("1.0"), refused=Version("1.2"))

    def decide(version: str, **options: object) -> manifest.Decision:
        data = signed_manifest(key, "stable", version, "https://example.net/b.tar.gz", b"x",
                               **options)
        return manifest.decide(data, keyring, device, time.time(), 8192)

    # The running release and a refused one are not even expiry-checked: a retained
    # manifest comes back at every reconnect, long after it expired.
    assert isinstance(decide("1.0", ttl_s=1, age_s=10), manifest.Known)
    assert isinstance(decide("1.2", ttl_s=1, age_s=10), manifest.Known)
    assert isinstance(decide("1.1"), manifest.Known)
    assert decide("1.3", ttl_s=1, age_s=10) == manifest.Refuse("expired", "1.3")
    assert decide("0.9") == manifest.Refuse("not newer than the running 1.0", "0.9")
    halt = decide("1.3", halt=True, percent=0)
    assert isinstance(halt, manifest.Halt) and halt.version == "1.3" and halt.seen.halted
    not_eligible = decide("1.3", percent=0)
    assert isinstance(not_eligible, manifest.NotEligible) and not_eligible.version == "1.3"
    act = decide("v1.3.0", percent=100)
    assert isinstance(act, manifest.Act) and act.release.version == "1.3.0"
    assert manifest.decide(None, keyring, device, 0, 8192) == manifest.Refuse("too large")


def test_a_slot_is_cleared_of_install_steps_a_killed_daemon_left_running(tmp_path: Path) -> None:
    """Outside systemd a SIGKILLed daemon's install step (in a session of its own) lives on;
    the next install into that slot must not race it."""
    from gateway.firmware.install import _clear

    root = tmp_path / "slots" / "a"
    (root / "venv").mkdir(parents=True)
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                              str(root / "venv")], start_new_session=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                                  str(tmp_path / "slots" / "b")])
    # Its daemon is gone: whoever adopted it reaps it as soon as it dies (here, a thread of
    # the test, which started it), so no zombie keeps its /proc entry for _clear to wait on.
    reaper = threading.Thread(target=stray.wait)
    reaper.start()
    try:
        _clear(root)
        reaper.join(5)
        assert stray.returncode == -9
        assert not root.exists()
        assert bystander.poll() is None
    finally:
        for proc in (stray, bystander):
            proc.kill()
            proc.wait()
