"""Hostile and broken configuration files: an alias bomb, deep nesting, values YAML
cannot construct, random and mutated text. Each costs one line per issue and exit 2,
in bounded memory, from ``check-config`` and from a running daemon's SIGHUP alike."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import Broker, DaemonProcess, Subscriber, device_config, write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cli import main
from gateway.config.file import MAX_CHARS, MAX_DEPTH, MAX_VALUES

ROOT = Path(__file__).resolve().parents[2]
DEMO = (ROOT / "config" / "demo.yaml").read_text()
MEMORY_BOUND = 100 * 1024 * 1024


def alias_bomb(levels: int = 9, fan: int = 9) -> str:
    lines = [f"a0: &a0 [{', '.join(['lol'] * fan)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fan)}]" for i in range(1, levels)]
    return "\n".join([*lines, f"device_id: *a{levels - 1}", ""])


HOSTILE = {
    "alias bomb": alias_bomb(),
    "5000 nested brackets": "device_id: " + "[" * 5000 + "]" * 5000 + "\n",
    "5000 nested mappings": "device_id: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
    "block nesting": "".join(f"{'  ' * i}k{i}:\n" for i in range(MAX_DEPTH + 10)),
    "alias inside itself": "a: &a [1, *a]\ndevice_id: *a\n",
    "flat list past the bound": "device_id: [" + ",".join(["1"] * (MAX_VALUES + 10)) + "]\n",
    "huge file": "device_id: x\nmqtt: {brokers: [mqtt://h]}\n" + "#" * MAX_CHARS + "\n",
    "impossible date": "device_id: 2024-13-45\n",
    "integer of 5000 digits": "device_id: " + "9" * 5000 + "\n",
    "control character": "device_id: a\x01b\n",
}


class Measured:
    def __init__(self, code: int, stderr: str, max_rss: int) -> None:
        self.code, self.stderr, self.max_rss = code, stderr, max_rss


# check-config runs as a grandchild, forked from a fresh interpreter: the peak RSS the
# kernel counts for a process includes that of the one it was forked from, and this one
# (pytest, after hundreds of tests) may be past the bound already. The grandchild caps
# its own address space, so that a regression fails the test with a MemoryError instead
# of taking the machine down; the launcher prints its peak RSS and exits with its code.
LAUNCH = """
import os, resource, sys
pid = os.fork()
if pid == 0:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.execv(sys.executable, [sys.executable, "-m", "gateway", *sys.argv[1:]])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def check_config_measured(path: Path | str, timeout: float = 60.0) -> Measured:
    """``edge-gateway check-config`` as a process, with the peak RSS the kernel counted."""
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "check-config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"check-config {path} still running after {timeout} s") from None
    return Measured(proc.returncode, err.decode(), int(out) * 1024)


@pytest.mark.parametrize("name", ["alias bomb", "5000 nested brackets"])
def test_bomb_and_deep_nesting_are_one_line_exit_2_in_bounded_memory(
    tmp_path: Path, name: str
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(HOSTILE[name])
    result = check_config_measured(path)
    assert result.code == 2, result.stderr
    [line] = result.stderr.splitlines()
    expected = {
        "alias bomb": f"{path}:5: refused: more than {MAX_VALUES} values with aliases expanded",
        "5000 nested brackets": f"{path}:1: refused: nested deeper than {MAX_DEPTH} levels",
    }
    assert line == expected[name]
    assert result.max_rss < MEMORY_BOUND


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_files_each_give_one_line(tmp_path: Path, name: str) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(HOSTILE[name])
    result = check_config_measured(path)
    assert result.code == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"{path}:"), line
    assert result.max_rss < MEMORY_BOUND


def test_an_endless_file_is_refused_at_the_bound() -> None:
    result = check_config_measured("/dev/zero")
    assert result.code == 2
    assert result.stderr == f"/dev/zero:1: refused: longer than {MAX_CHARS} characters\n"
    assert result.max_rss < MEMORY_BOUND


def test_shipped_config_is_far_inside_the_bounds() -> None:
    loader = yaml.SafeLoader(DEMO)
    try:
        root = loader.get_single_node()
    finally:
        loader.dispose()
    assert root is not None

    def count(node: yaml.Node, depth: int) -> tuple[int, int]:
        if isinstance(node, yaml.ScalarNode):
            return 1, depth
        children = [c for pair in node.value for c in pair] if isinstance(
            node, yaml.MappingNode) else node.value
        found = [count(c, depth + 1) for c in children]
        return 1 + sum(n for n, _ in found), max([depth, *(d for _, d in found)])

    values, depth = count(root, 1)
    assert values * 20 < MAX_VALUES and depth * 4 < MAX_DEPTH and len(DEMO) * 50 < MAX_CHARS


# In-process, for volume: check-config on many generated files.

TOKENS = [
    "&a ", "*a", "&b ", "*b", "[", "]", "{", "}", ": ", "- ", ",", "\n", "  ", "? ",
    "<<: *a\n", "!!str ", "!!binary ", "!!python/object/apply:os.system ['true'] ", "!!set ",
    "!!omap ", "|\n", ">-\n", '"', "'", "#", "%YAML 1.1\n", "---\n", "...\n", "\t", "\\",
    "0x", "0o", "1e400", "-.inf", ".nan", "2024-13-45", "2024-02-30 25:61:00", "9" * 5000,
    "190:20:30", "~", "null", "yes", "@", "`", "\x00", "\ufeff", "\u2028", "é",
]

edits = st.lists(
    st.tuples(
        st.floats(0, 1),
        st.integers(0, 40),
        st.one_of(st.sampled_from(TOKENS), st.text(max_size=12)),
    ),
    max_size=10,
)


def mutate(text: str, changes: list[tuple[float, int, str]]) -> str:
    for where, cut, insert in changes:
        at = int(where * len(text))
        text = text[:at] + insert + text[at + cut:]
    return text


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=20), st.sampled_from(["sim", "/dev/ttyUSB0", "socket://h:1", "mqtt://h"]),
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
DEMO_DATA = yaml.safe_load(DEMO)
DEMO_PATHS: list[tuple[Any, ...]] = [
    (), ("mqtt",), ("queue",), ("heartbeat",), ("sensors",),
    *(("sensors", i) for i in range(len(DEMO_DATA["sensors"]))),
    ("sensors", 2, "pipeline", 0), ("sensors", 2, "sim"),
]


@st.composite
def demo_with_a_value_replaced(draw: st.DrawFn) -> str:
    data: Any = yaml.safe_load(DEMO)
    where = draw(st.sampled_from(DEMO_PATHS))
    target = data
    for part in where:
        target = target[part]
    if isinstance(target, dict):
        key = draw(st.sampled_from([*target, "extra", "port", "driver", "pipeline"]))
        target[key] = draw(values)
    else:
        target[draw(st.integers(0, len(target) - 1))] = draw(values)
    return yaml.safe_dump(data, sort_keys=False)


@st.composite
def deep_structures(draw: st.DrawFn) -> str:
    depth = draw(st.integers(1, 3 * MAX_DEPTH))
    shape = draw(st.sampled_from(["list", "map", "block", "mixed"]))
    if shape == "list":
        return "device_id: " + "[" * depth + "]" * depth + "\n"
    if shape == "map":
        return "device_id: " + "{a: " * depth + "1" + "}" * depth + "\n"
    if shape == "block":
        return "".join(f"{'  ' * i}k:\n" for i in range(depth)) + "  " * depth + "1\n"
    opens = draw(st.lists(st.sampled_from(["[", "{a: "]), min_size=depth, max_size=depth))
    closes = "".join("]" if o == "[" else "}" for o in reversed(opens))
    return "device_id: " + "".join(opens) + "1" + closes + "\n"


@st.composite
def alias_webs(draw: st.DrawFn) -> str:
    levels, fan = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    text = alias_bomb(levels, fan)
    if draw(st.booleans()):
        text = DEMO + text.replace("device_id:", "groups:")
    return text


documents = st.one_of(
    edits.map(lambda changes: mutate(DEMO, changes)),
    st.text(alphabet=st.sampled_from(list("[]{}:,-&*!|>'\"#?% \n\tab1.~")), max_size=300),
    st.text(max_size=300),
    demo_with_a_value_replaced(),
    deep_structures(),
    alias_webs(),
)


def check_in_process(path: Path) -> tuple[int, list[str]]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(["check-config", str(path)])
    return code, err.getvalue().splitlines()


def assert_clean_verdict(path: Path) -> None:
    code, lines = check_in_process(path)
    assert code in (0, 2)
    if code == 2:
        assert lines and all(line.startswith(f"{path}") for line in lines), lines
    else:
        assert lines == []


# About 30 documents of each of the six families; the targeted cases are HOSTILE's, above.
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_random_and_mutated_text_gets_a_clean_verdict(document: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "gw.yaml"
        path.write_text(document, encoding="utf-8", errors="surrogatepass")
        assert_clean_verdict(path)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2000) | edits.map(lambda c: mutate(DEMO, c).encode("utf-8", "replace")))
def test_random_bytes_get_a_clean_verdict(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "gw.yaml"
        path.write_bytes(data)
        assert_clean_verdict(path)


# The daemon: a hostile file arriving with SIGHUP is rejected, and the daemon goes on.

def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_daemon_rejects_hostile_files_on_sighup_and_keeps_running(
    broker: Broker, tmp_path: Path
) -> None:
    settings_ = device_config(broker.port, tmp_path / "state")
    config = write_config(tmp_path / "gw.yaml", settings_)
    sub = Subscriber(broker.port, "gw/dev-1/telemetry/#")
    daemon = DaemonProcess(config)
    try:
        sub.get()
        before = peak_rss(daemon.proc.pid)
        hostile = ["alias bomb", "5000 nested brackets", "alias inside itself",
                   "impossible date", "huge file"]
        for count, name in enumerate(hostile, start=1):
            config.write_text(HOSTILE[name])
            daemon.signal(signal.SIGHUP)

            def rejected(count: int = count) -> bool:
                return sum(e.get("event") == "config.reload_rejected"
                           for e in daemon.events()) >= count

            wait_until(rejected)
            assert daemon.proc.poll() is None, name
        errors = [e["error"] for e in daemon.events() if e.get("event") == "config.reload_rejected"]
        assert len(errors) == len(hostile)
        assert all(error.startswith(f"{config}:") for error in errors), errors
        assert peak_rss(daemon.proc.pid) - before < 30 * 1024 * 1024
        sub.get()  # still publishing on the running configuration

        settings_["sensors"].append(
            {"name": "rack", "driver": "sht3x", "bus": "sim", "address": 0x45, "interval_s": 0.05}
        )
        write_config(config, settings_)
        daemon.signal(signal.SIGHUP)
        sub.until(lambda m: m.topic.endswith("/telemetry/rack"))
        assert daemon.stop() == 0
    finally:
        daemon.kill()
        sub.close()
