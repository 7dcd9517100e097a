"""The ``anomaly`` stage: each vibration window's distance from the machine's own normal.

It comes right after the ``vibration`` stage and reads the spectrum of the window that
stage has just analysed (still in its workspace), with the window's features from the
reading. For ``learn_windows`` windows (by default an hour of them) it learns the
baseline and marks each reading ``anomaly_state: learning``; then it adds
``anomaly_score`` (see ``gateway.pipeline.anomaly``) with ``anomaly_state: ok``.

The learned baseline is kept in ``state_dir/anomaly/SENSOR.json`` with the settings it
was learned under (the stage's, the vibration stage's but its machine class, the sample
rate): a restart, or a rebuilt pipeline, with the same settings goes on scoring; other
settings, or a raised ``relearn`` counter, learn anew. The file is read and written by
the pipeline, off the event loop; the stage itself does no I/O. Learning in progress is
not kept: a restart during the first hour starts it again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gateway import wire
from gateway.config import stages as cfg
from gateway.config.quantities import ANOMALY_SCORE
from gateway.pipeline.pool import Pool, Record
from gateway.pipeline.vibration_stage import Vibration
from gateway.statefile import read_json

if TYPE_CHECKING:
    from gateway.pipeline.anomaly import Baseline, Features
    from gateway.pipeline.vibration import SampleWindows

log = structlog.get_logger(__name__)

DEFAULT_LEARN_S = 3600.0


@dataclass
class _Model:
    fingerprint: dict[str, Any]
    windows: SampleWindows
    features: Features
    baseline: Baseline


class Anomaly:
    name = "anomaly"
    holds = 0

    def __init__(self, config: cfg.Anomaly, vibration: Vibration) -> None:
        self.config = config
        self._vibration = vibration
        self._path: Path | None = None
        # What the baseline file held, once read.
        self._stored: dict[str, Any] | None = None
        self._loaded = False
        self._model: _Model | None = None
        # A learned baseline's file, waiting to be written by the pipeline.
        self._unsaved: bytes | None = None
        # Whether the pipeline has a file to read or write for it (checked every burst).
        self.io_due = False

    def bind(self, path: Path) -> None:
        """Keep the baseline in ``path``."""
        self._path = path
        self.io_due = not self._loaded or self._unsaved is not None

    def take_unsaved(self) -> bytes | None:
        unsaved, self._unsaved = self._unsaved, None
        self.io_due = False
        return unsaved

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def needs_load(self) -> bool:
        return self._path is not None and not self._loaded

    def load(self) -> None:
        """Read the baseline file (blocking: from a worker thread, before the first window)."""
        assert self._path is not None
        try:
            data = read_json(self._path)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            log.error("anomaly.unreadable", file=str(self._path), error=repr(exc))
            data = None
        self._stored = data if isinstance(data, dict) else None
        self._loaded = True
        self.io_due = self._unsaved is not None

    def adopt(self, old: Anomaly) -> None:
        """Go on with what ``old`` (the stage this one replaces) learned or read, if its
        settings are the same: a rebuilt pipeline does not learn again."""
        if old.config == self.config:
            self._model, self._stored, self._loaded = old._model, old._stored, old._loaded
            self.io_due = self._path is not None and not self._loaded

    def process(self, record: Record, pool: Pool[Record]) -> Record:
        windows = self._vibration.windows
        if windows is None:
            return record
        model = self._model
        if model is None or model.windows is not windows:
            model = self._model = self._open(windows, model)
        vector = model.features.extract(record.values, windows.power)
        baseline = model.baseline
        if baseline.learned:
            record.values[ANOMALY_SCORE] = baseline.score(vector)
            record.anomaly_state = wire.AnomalyState.OK
            return record
        record.anomaly_state = wire.AnomalyState.LEARNING
        baseline.add(vector)
        if baseline.learned:
            log.info("anomaly.learned", windows=baseline.count)
            self._unsaved = json.dumps({"fingerprint": model.fingerprint,
                                        "baseline": baseline.to_json()}).encode()
            self.io_due = self._path is not None
        return record

    def flush(self, pool: Pool[Record]) -> None:
        return None

    def _open(self, windows: SampleWindows, previous: _Model | None) -> _Model:
        from gateway.pipeline.anomaly import Baseline, Features

        vibration = self._vibration.config
        fingerprint = {
            "stage": self.config.model_dump(),
            "vibration": vibration.model_dump(exclude={"machine_class"}),
            "rate_hz": windows.rate_hz,
        }
        if previous is not None and previous.fingerprint == fingerprint:
            previous.windows = windows
            return previous
        features = Features(windows.freqs, vibration.band_low_hz, vibration.band_high_hz,
                            self.config.bands)
        learn = self.config.learn_windows or math.ceil(
            DEFAULT_LEARN_S * windows.rate_hz / windows.hop)
        stored = self._stored
        if stored is not None and stored.get("fingerprint") == fingerprint:
            try:
                baseline = Baseline.from_json(stored["baseline"], features.size)
            except (ValueError, TypeError, KeyError) as exc:
                log.error("anomaly.bad_baseline", file=str(self._path), error=repr(exc))
            else:
                log.info("anomaly.baseline_loaded", windows=baseline.count)
                return _Model(fingerprint, windows, features, baseline)
        elif stored is not None:
            log.info("anomaly.relearn", reason="settings changed")
        return _Model(fingerprint, windows, features, Baseline(features.size, learn))
