"""The systemd unit and ``systemd/install.sh``.

The script only ever runs here with ``--root`` into a temporary directory: it then
touches nothing outside it and prints the machine-wide steps (user, groups, ownership,
apt-get, systemctl) as ``would: ...`` lines. The unit goes through ``systemd-analyze
verify`` (inside such a root, so the very file the script installed is checked, with its
real ExecStart) and ``systemd-analyze security --offline=yes``.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "systemd" / "install.sh"
UNIT = REPO / "systemd" / "edge-gateway.service"
EXAMPLE = REPO / "config" / "example.yaml"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze missing (.ci/setup installs Debian's systemd)"
)

INSTALLED_UNIT = "etc/systemd/system/edge-gateway.service"
CONFIG = "etc/edge-gateway/gateway.yaml"
LINK = "usr/local/bin/edge-gateway"
STATE = "var/lib/edge-gateway"
EXPECTED_TREE = {
    "etc": "drwxr-xr-x",
    "etc/edge-gateway": "drwxr-x---",
    CONFIG: "-rw-r-----",
    "etc/systemd": "drwxr-xr-x",
    "etc/systemd/system": "drwxr-xr-x",
    INSTALLED_UNIT: "-rw-r--r--",
    "opt": "drwxr-xr-x",
    "opt/edge-gateway": "drwxr-xr-x",
    "opt/edge-gateway/venv": "drwxr-xr-x",
    "opt/edge-gateway/venv/bin": "drwxr-xr-x",
    "opt/edge-gateway/venv/bin/edge-gateway": "-rwxr-xr-x",
    "usr": "drwxr-xr-x",
    "usr/local": "drwxr-xr-x",
    "usr/local/bin": "drwxr-xr-x",
    LINK: "lrwxrwxrwx",
    "var": "drwxr-xr-x",
    "var/lib": "drwxr-xr-x",
    STATE: "drwxr-x---",
}


def install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def installed(root: Path, *args: str) -> str:
    result = install(root, *args)
    assert (result.returncode, result.stderr) == (0, ""), result.stdout
    return result.stdout


def tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): stat.filemode(p.lstat().st_mode) for p in root.rglob("*")
    }


def snapshot(root: Path) -> dict[str, tuple[str, int, bytes | str | None]]:
    """Every path with its mode, mtime and content (a link's target): equal snapshots mean
    nothing changed."""
    snap: dict[str, tuple[str, int, bytes | str | None]] = {}
    for p in root.rglob("*"):
        st = p.lstat()
        content: bytes | str | None = None
        if stat.S_ISREG(st.st_mode):
            content = p.read_bytes()
        elif stat.S_ISLNK(st.st_mode):
            content = str(p.readlink())
        snap[p.relative_to(root).as_posix()] = (stat.filemode(st.st_mode), st.st_mtime_ns, content)
    return snap


def changes(stdout: str) -> list[str]:
    """The lines reporting a change to the tree."""
    verbs = ("created ", "updated ", "removed ", "mode ", "owner ")
    return [line for line in stdout.splitlines() if line.startswith(verbs)]


def test_script_is_executable() -> None:
    # The documented command is `sudo systemd/install.sh`.
    assert os.access(SCRIPT, os.X_OK)


def test_dry_run_builds_the_tree(tmp_path: Path) -> None:
    out = installed(tmp_path)
    assert tree(tmp_path) == EXPECTED_TREE
    assert (tmp_path / INSTALLED_UNIT).read_bytes() == UNIT.read_bytes()
    assert (tmp_path / CONFIG).read_bytes() == EXAMPLE.read_bytes()
    placeholder = (tmp_path / "opt/edge-gateway/venv/bin/edge-gateway").read_text()
    assert placeholder.startswith("#!/bin/sh\n")
    assert (tmp_path / LINK).readlink() == Path("/opt/edge-gateway/venv/bin/edge-gateway")
    lines = out.splitlines()
    # Nothing was run on the machine; the steps that would have been are listed.
    assert not [line for line in lines if line.startswith("run:")]
    for step in (
        "would: groupadd --system i2c",
        "would: groupadd --system dialout",
        "would: usermod --append --groups i2c,dialout edge-gateway",
        f"would: chown root:edge-gateway {tmp_path}/{CONFIG}",
        f"would: chown edge-gateway:edge-gateway {tmp_path}/{STATE}",
        "would: systemctl daemon-reload",
        "would: systemctl enable --now edge-gateway",
    ):
        assert step in lines
    assert any(line.startswith("would: useradd --system") for line in lines)
    assert f"created {tmp_path}/{INSTALLED_UNIT}" in lines
    assert lines[-1] == f"install.sh: done, {len(changes(out))} change(s)"


def test_existing_config_is_kept_byte_for_byte(tmp_path: Path) -> None:
    config = tmp_path / CONFIG
    config.parent.mkdir(parents=True)
    config.write_bytes(b"device_id: mine   \r\n# hand-edited, not the example\n")
    config.chmod(0o600)
    os.utime(config, ns=(1_000_000_000, 1_000_000_000))
    before = snapshot(tmp_path)[CONFIG]
    out = installed(tmp_path)
    assert snapshot(tmp_path)[CONFIG] == before
    assert f"kept {config} (an existing configuration is never overwritten)" in out.splitlines()


def test_second_run_changes_nothing(tmp_path: Path) -> None:
    installed(tmp_path)
    first = snapshot(tmp_path)
    out = installed(tmp_path)
    assert snapshot(tmp_path) == first
    assert changes(out) == []
    assert out.endswith("install.sh: done, nothing changed\n")


def test_rerun_repairs_the_unit_and_modes_but_not_the_config(tmp_path: Path) -> None:
    installed(tmp_path)
    unit, config, state = tmp_path / INSTALLED_UNIT, tmp_path / CONFIG, tmp_path / STATE
    unit.write_text(unit.read_text() + "# stale\n")
    config.write_text("device_id: edited\n")
    state.chmod(0o755)
    out = installed(tmp_path)
    assert changes(out) == [f"mode 0750 {state}", f"updated {unit}"]
    assert unit.read_bytes() == UNIT.read_bytes()
    assert config.read_text() == "device_id: edited\n"
    assert tree(tmp_path) == EXPECTED_TREE


def test_uninstall_keeps_config_and_state(tmp_path: Path) -> None:
    installed(tmp_path)
    (tmp_path / STATE / "seq.json").write_text('{"cabinet": 41}\n')
    kept = {k: v for k, v in snapshot(tmp_path).items() if k.startswith((CONFIG, STATE))}
    out = installed(tmp_path, "--uninstall")
    assert "would: systemctl disable --now edge-gateway" in out.splitlines()
    assert changes(out) == [
        f"removed {tmp_path}/{INSTALLED_UNIT}",
        f"removed {tmp_path}/opt/edge-gateway",
        f"removed {tmp_path}/{LINK}",
    ]
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k.startswith((CONFIG, STATE))} == kept
    assert INSTALLED_UNIT not in after
    assert "opt/edge-gateway" not in after
    # Uninstalling again changes nothing.
    out = installed(tmp_path, "--uninstall")
    assert snapshot(tmp_path) == after
    assert out.endswith("install.sh: done, nothing changed\n")


def test_uninstall_purge_removes_config_and_state(tmp_path: Path) -> None:
    installed(tmp_path)
    (tmp_path / STATE / "seq.json").write_text("{}\n")
    out = installed(tmp_path, "--uninstall", "--purge")
    assert f"removed {tmp_path}/etc/edge-gateway" in out.splitlines()
    assert f"removed {tmp_path}/{STATE}" in out.splitlines()
    left = set(tree(tmp_path))
    assert not {p for p in left if "edge-gateway" in p}
    assert left == {
        *("etc", "etc/systemd", "etc/systemd/system", "opt", "var", "var/lib"),
        *("usr", "usr/local", "usr/local/bin"),
    }


def test_a_foreign_command_in_usr_local_bin_is_left_alone(tmp_path: Path) -> None:
    mine = tmp_path / LINK
    mine.parent.mkdir(parents=True)
    mine.write_text("#!/bin/sh\necho mine\n")
    out = installed(tmp_path)
    assert f"kept {mine} (not ours: call /opt/edge-gateway/venv/bin/edge-gateway instead)" in out
    installed(tmp_path, "--uninstall", "--purge")
    assert mine.read_text() == "#!/bin/sh\necho mine\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "install.sh: unknown argument: --bogus"),
        (["--purge"], "install.sh: --purge only goes with --uninstall"),
        (["--with-venv", "--uninstall"], "install.sh: --with-venv does not go with --uninstall"),
        (["--source", "/nonexistent"], "install.sh: --source /nonexistent: no such directory"),
        (["--source", "/"], "install.sh: / is not an edge-gateway source tree"),
        (["--root"], "install.sh: --root needs a directory"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = install(tmp_path, *args)
    assert result.returncode == 2
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_missing_root_is_bad_usage(tmp_path: Path) -> None:
    result = install(tmp_path / "missing")
    assert result.returncode == 2
    assert result.stderr.startswith(f"install.sh: --root {tmp_path}/missing: no such directory")


def test_root_of_the_machine_is_refused() -> None:
    # The missing --source is a second safety net: even if the --root check failed, the
    # script would stop at it, before writing anything.
    result = subprocess.run(
        [str(SCRIPT), "--root", "/", "--source", "/nonexistent"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("install.sh: --root / is the machine itself")


def unit_settings(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment; keys may repeat (DeviceAllow=)."""
    section, settings = "", []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.append((section, key, value))
    return settings


def test_unit_has_the_contracted_settings() -> None:
    settings = unit_settings(UNIT.read_text())
    service = {(k, v) for s, k, v in settings if s == "Service"}
    for expected in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        (
            "ExecStart",
            "/opt/edge-gateway/venv/bin/edge-gateway launch -c /etc/edge-gateway/gateway.yaml",
        ),
        ("RestartForceExitStatus", "75"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("WatchdogSec", "30"),
        ("Restart", "on-failure"),
        ("User", "edge-gateway"),
        ("SupplementaryGroups", "i2c dialout"),
        ("StateDirectory", "edge-gateway"),
        ("ConfigurationDirectory", "edge-gateway"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("DevicePolicy", "closed"),
        ("DeviceAllow", "char-i2c rw"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("CapabilityBoundingSet", ""),
        ("MemoryMax", "256M"),
    ]:
        assert expected in service
    assert ("Install", "WantedBy", "multi-user.target") in settings


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, *args],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=120,
        check=False,
    )


def verify_root(root: Path) -> Path:
    """A root holding the installed unit and what `verify` resolves besides: the targets
    its default dependencies name (stubs) and /bin/kill of ExecReload= (a placeholder;
    verify checks that each command exists and is executable)."""
    installed(root)
    targets = root / "usr/lib/systemd/system"
    targets.mkdir(parents=True)
    for name in ("sysinit", "basic", "shutdown", "network-online", "multi-user"):
        (targets / f"{name}.target").write_text(f"[Unit]\nDescription=stub {name}\n")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/kill").write_text("#!/bin/sh\n")
    (root / "usr/bin/kill").chmod(0o755)
    (root / "bin").symlink_to("usr/bin")
    return root


@needs_analyze
def test_unit_verifies_clean(tmp_path: Path) -> None:
    root = verify_root(tmp_path)
    assert (root / INSTALLED_UNIT).read_bytes() == UNIT.read_bytes()
    result = analyze("verify", f"--root={root}", "edge-gateway.service")
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    # The same check does see a broken unit: the clean result above means something.
    broken = root / "etc/systemd/system/edge-gateway-broken.service"
    broken.write_text(UNIT.read_text().replace("[Install]", "NoSuchKey=1\n\n[Install]"))
    result = analyze("verify", f"--root={root}", "edge-gateway-broken.service")
    assert "Unknown key 'NoSuchKey'" in result.stdout + result.stderr


@needs_analyze
def test_unit_exposure_is_at_most_2_5() -> None:
    result = analyze("security", "--offline=yes", "--threshold=25", "--no-pager", str(UNIT))
    found = re.search(
        r"Overall exposure level for edge-gateway\.service: (\d+\.\d+)", result.stdout
    )
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.5
    assert result.returncode == 0, result.stderr


def test_script_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed")
    result = subprocess.run(
        [shellcheck, str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout) == (0, "")
