"""The daemon's memory, measured: RSS through start-up and at steady state, per config.

    python bench/memory.py [--minutes 10] [--python PATH] [--env KEY=VALUE ...]

Three configurations, each in a fresh process (``bench/memory_probe.py``, which runs
what ``edge-gateway run`` runs): one SHT3x; the demo device without its vibration
sensor; the full demo (``config/demo.yaml``). Sampling is fast (intervals cut to a
twentieth, at least 20 ms; a heartbeat a second) and the uplink is connected to a
Mosquitto the bench starts on a free loopback port, as on a device. For each: VmRSS
after the imports, after loading the configuration, once the sensors are open (READY),
once connected, after half of ``--minutes`` and at the end (steady state); the growth
over the last half; and, from a second process of the same configuration run beside it
with tracemalloc on, the allocation sites that grew most over that half.

The floors, measured in the same run: a bare ``python -c pass``, and for each
configuration the dependencies its features use, imported alone (pydantic with one
model built: its schema machinery loads with the first). What each configuration holds
above its floor is then broken down by the marks. Budgets (issue 11): the full demo at
most 48 MiB, one SHT3x at most 38 MiB, growth over the last half under 256 KiB.

By default the daemon runs in ``.bench-venv``, made on first use with the package and
its dependencies only, as ``systemd/install.sh`` makes a device's (the package is
reinstalled from the source at every run): the development venv also holds the test
tools and the operator's extra. The daemon gets the
``Environment=`` of ``systemd/edge-gateway.service``, as under systemd, and so do the
floors; ``--env`` adds to it or overrides it (``--env MALLOC_ARENA_MAX=`` unsets one).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
# The broker starter the tests use too (standard library only, no pytest).
sys.path.insert(0, str(ROOT / "tests"))
import mosquitto  # noqa: E402

PROBE = ROOT / "bench" / "memory_probe.py"
UNIT = ROOT / "systemd" / "edge-gateway.service"
VENV = ROOT / ".bench-venv"
MIB = 1024 * 1024
BUDGET_MIB = {"sht3x": 38.0, "demo": 48.0}
GROWTH_BUDGET = 256 * 1024
FAST = 1 / 20
FASTEST_S = 0.02

RSS = (
    "for line in open('/proc/self/status'):\n"
    "    if line.startswith('VmRSS:'): print(int(line.split()[1]) * 1024)"
)
# What each part imports of the dependencies, alone: the command line and the daemon
# are what every configuration imports at start-up, the rest what a feature needs.
FEATURES = {
    "cli": "import yaml\nimport pydantic\nclass Model(pydantic.BaseModel):\n    x: int = 0",
    "daemon": "import asyncio, gmqtt, structlog, systemd.daemon",
    "i2c": "import smbus2",
    "modbus": "import serial, minimalmodbus",
    "spill": "import sqlite3",
    "vibration": "import numpy, numpy.fft",
}
USES = {
    "sht3x": ["i2c"],
    "demo without vibration": ["i2c", "modbus", "spill"],
    "demo": ["i2c", "modbus", "spill", "vibration"],
}
MARKS = ["imports", "config", "open", "connected", "half", "steady"]


def device_python(python: str | None) -> str:
    """The interpreter of a venv like a device's: the package installed from a wheel
    (an editable install's import hook alone costs 1 MiB), dependencies, nothing else."""
    if python:
        return python
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    stamp = VENV / "installed-from"
    wanted = (ROOT / "pyproject.toml").read_text()
    if not stamp.exists() or stamp.read_text() != wanted:
        print(f"memory: making {VENV.name}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([*pip, str(ROOT)], check=True)
        stamp.write_text(wanted)
    # The source as it is now, every run.
    subprocess.run([*pip, "--no-deps", "--force-reinstall", str(ROOT)], check=True)
    return str(VENV / "bin" / "python")


def unit_environment() -> dict[str, str]:
    """The ``Environment=`` assignments of the service unit."""
    env = {}
    for line in UNIT.read_text().splitlines():
        if line.startswith("Environment="):
            for assignment in shlex.split(line.removeprefix("Environment=")):
                key, _, value = assignment.partition("=")
                env[key] = value
    return env


def daemon_environment(overrides: list[str]) -> dict[str, str]:
    env = {**os.environ, **unit_environment()}
    for assignment in overrides:
        key, _, value = assignment.partition("=")
        if value:
            env[key] = value
        else:
            env.pop(key, None)
    return env


def configs(port: int) -> dict[str, dict[str, Any]]:
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    demo["mqtt"]["brokers"] = [f"mqtt://127.0.0.1:{port}"]
    demo["heartbeat"] = {"interval_s": 1}
    demo["logging"] = {"level": "info", "format": "json"}
    for sensor in demo["sensors"]:
        sensor["interval_s"] = max(FASTEST_S, sensor["interval_s"] * FAST)
    sht3x = {
        "mqtt": demo["mqtt"],
        "heartbeat": demo["heartbeat"],
        "logging": demo["logging"],
        "sensors": [{"name": "cabinet", "driver": "sht3x", "bus": "sim",
                     "interval_s": 2 * FAST}],
    }
    quiet = {**demo, "sensors": [s for s in demo["sensors"] if s["driver"] != "adxl345"]}
    return {"sht3x": sht3x, "demo without vibration": quiet, "demo": demo}


def write_config(workdir: Path, name: str, config: dict[str, Any], trace: bool) -> Path:
    """Each process its own device id (one MQTT client id each) and state directory."""
    slug = name.replace(" ", "-") + ("-traced" if trace else "")
    config = {**config, "device_id": f"bench-{slug}", "state_dir": str(workdir / slug)}
    path = workdir / f"{slug}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def floor(python: str, features: list[str], env: dict[str, str]) -> int:
    code = "\n".join([*(FEATURES[f] for f in features), RSS])
    return int(subprocess.run([python, "-c", code], check=True, capture_output=True,
                              text=True, env=env).stdout)  # fmt: skip


def start_probe(python: str, config: Path, minutes: float, trace: bool,
                env: dict[str, str]) -> subprocess.Popen[str]:
    log = config.with_suffix(".log").open("w")
    args = [python, str(PROBE), str(config), str(minutes), *(["--trace"] if trace else [])]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT,
                            env=env)  # fmt: skip
    log.close()
    return proc


def collect(proc: subprocess.Popen[str], minutes: float, name: str) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=minutes * 60 + 120)
    marks = {m["mark"]: m for m in map(json.loads, out.splitlines())}
    if proc.returncode != 0 or "steady" not in marks:
        raise RuntimeError(f"{name}: the probe failed (exit {proc.returncode}); see its log")
    return marks


def mib(value: float) -> str:
    return f"{value / MIB:6.1f}"


def breakdown(marks: dict[str, Any], floors: dict[str, int], own: int
              ) -> list[tuple[str, int]]:
    """Where the RSS above the configuration's floor ``own`` went. The dependencies of a
    feature load when it first works (numpy with the first vibration window), so the
    phases after the configuration are taken together, less those dependencies."""
    rss = {name: mark["rss"] for name, mark in marks.items()}
    cli, base = floors["deps: command line"], floors["deps: command line, daemon"]
    return [
        ("the command line and the config models (gateway.cli, gateway.config)",
         rss["cli"] - cli),
        ("the daemon's modules (gateway.daemon and what it imports of the gateway)",
         rss["imports"] - rss["cli"] - (base - cli)),
        ("the configuration (config - imports)", rss["config"] - rss["imports"]),
        ("at work: drivers, emulators, threads, pipelines, uplink, buffers, fragmentation "
         "(steady - config - the features' dependencies)",
         rss["steady"] - rss["config"] - (own - base)),
    ]


def report(floors: dict[str, int], env: dict[str, str],
           runs: dict[str, tuple[dict[str, Any], dict[str, Any]]], minutes: float) -> bool:
    ok = True
    shown = " ".join(f"{k}={v}" for k, v in env.items())
    print(f"\nVmRSS in MiB; sampling for {minutes:g} min; growth is steady - half, in KiB; "
          f"environment: {shown or 'nothing set'}\n")
    print(f"{'floor':<40}{'RSS':>8}")
    for name, rss in floors.items():
        print(f"{name:<40}{mib(rss):>8}")
    print(f"\n{'config':<24}" + "".join(f"{m:>10}" for m in MARKS)
          + f"{'growth':>8}{'floor':>8}{'budget':>8}")
    for name, (clean, _) in runs.items():
        steady = clean["steady"]["rss"]
        growth = steady - clean["half"]["rss"]
        budget = BUDGET_MIB.get(name)
        verdict = ""
        if budget is not None:
            verdict = "ok" if steady <= budget * MIB else f">{budget:g}"
        if growth >= GROWTH_BUDGET:
            verdict += " growth"
        ok &= verdict in ("", "ok")
        print(f"{name:<24}" + "".join(f"{mib(clean[m]['rss']):>10}" for m in MARKS)
              + f"{growth / 1024:8.0f}{mib(floors[f'deps of {name}']):>8}{verdict:>8}")
    base = floors["deps: command line, daemon"]
    for name, (clean, _) in runs.items():
        own = floors[f"deps of {name}"]
        steady = clean["steady"]["rss"]
        print(f"\n{name}: {mib(steady).strip()} MiB = floor {mib(own).strip()} "
              f"(python {mib(floors['python -c pass']).strip()}, its dependencies "
              f"{mib(own - floors['python -c pass']).strip()}) + {mib(steady - own).strip()}:")
        for what, size in breakdown(clean, floors, own):
            print(f"  {mib(size)}  {what}")
        rss = {name: mark["rss"] for name, mark in clean.items()}
        print(f"          (by phase: open {(rss['open'] - rss['config']) / MIB:+.1f}, "
              f"connected {(rss['connected'] - rss['open']) / MIB:+.1f}, "
              f"to the end {(rss['steady'] - rss['connected']) / MIB:+.1f}; "
              f"the features' dependencies {(own - base) / MIB:.1f})")
    print("\nat steady state")
    for name, (clean, _) in runs.items():
        s = clean["steady"]
        print(f"  {name:<24} connected={s['connected']} reconnects={s['reconnects']} "
              f"messages={s['messages']} queue={s['queue']} threads={s['threads']} "
              f"tasks={s['tasks']} modules={s['modules']} heavy={','.join(s['heavy']) or '-'}")
    print("\ntracemalloc: top growth over the last half (a twin of each config, traced)")
    for name, (_, traced) in runs.items():
        steady = traced["steady"]
        print(f"  {name} (tracemalloc's own memory {steady['tracemalloc_bytes'] / 1024:.0f} KiB)")
        for site in steady["growth"]:
            print(f"    {site['bytes'] / 1024:+8.1f} KiB {site['blocks']:+6d} blocks  "
                  f"{site['at']}  (from {site['from'] or '-'})")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="sampling time to steady state (10; fractions for a quick run)")
    parser.add_argument("--python", help="the interpreter to run the daemon with "
                        f"(default: {VENV.name}/bin/python, made on first use)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="for the daemon, over the unit's Environment= (KEY= unsets)")
    args = parser.parse_args()
    python = device_python(args.python)
    env = daemon_environment(args.env)
    named = unit_environment().keys() | {a.partition("=")[0] for a in args.env}
    floors = {
        "python -c pass": floor(python, [], env),
        "deps: command line": floor(python, ["cli"], env),
        "deps: command line, daemon": floor(python, ["cli", "daemon"], env),
    }
    for name, features in USES.items():
        floors[f"deps of {name}"] = floor(python, ["cli", "daemon", *features], env)
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp:
        workdir = Path(tmp)
        with mosquitto.running(workdir) as broker:
            procs = {}
            for name, config in configs(broker.port).items():
                procs[name] = tuple(
                    start_probe(python, write_config(workdir, name, config, trace),
                                args.minutes, trace, env)
                    for trace in (False, True)
                )
            try:
                runs = {
                    name: (collect(clean, args.minutes, name),
                           collect(traced, args.minutes, f"{name} (traced)"))
                    for name, (clean, traced) in procs.items()
                }
            except RuntimeError:
                for log in sorted(workdir.glob("*.log")):
                    print(f"--- {log.name}\n{log.read_text()[-3000:]}", file=sys.stderr)
                raise
            finally:
                for pair in procs.values():
                    for proc in pair:
                        if proc.poll() is None:
                            proc.kill()
                            proc.wait()
    shown = {key: env[key] for key in sorted(named) if key in env}
    return 0 if report(floors, shown, runs, args.minutes) else 1


if __name__ == "__main__":
    sys.exit(main())
