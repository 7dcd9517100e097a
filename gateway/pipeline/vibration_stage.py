"""The ``vibration`` stage: features and ISO 10816 severity per window of samples.

Two kinds of sensor meet here. An ADXL345 streams raw samples (``feed``): windows of
them become one feature reading each (see ``gateway.vibration``). A WTVB01 computes
velocity RMS per axis itself and arrives as ordinary readings (``process``): they pass
through with ``velocity_rms_mm_s``, the largest axis, and its zone added. Only the
first kind needs numpy, so it is imported on the first burst of samples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.config import stages as cfg
from gateway.config.quantities import VELOCITY_AXES
from gateway.pipeline import severity
from gateway.pipeline.pool import Pool, Record

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from gateway.pipeline.vibration import Features, SampleWindows



class Vibration:
    name = "vibration"
    holds = 0

    def __init__(self, config: cfg.Vibration) -> None:
        self.config = config
        self._windows: SampleWindows | None = None
        self.discarded = 0

    @property
    def windows(self) -> SampleWindows | None:
        """The sample stream, whose workspace holds the last window's spectrum (read by an
        anomaly stage while that window's reading passes it)."""
        return self._windows

    def process(self, record: Record, pool: Pool[Record]) -> Record:
        values = record.values
        velocity = 0.0
        for quantity in VELOCITY_AXES:
            value = values.get(quantity)
            if value is None:
                return record
            velocity = max(velocity, abs(value))
        values["velocity_rms_mm_s"] = velocity
        record.zone = severity.zone(velocity, self.config.machine_class)
        return record

    def flush(self, pool: Pool[Record]) -> None:
        # A window cut short is not analysed: its features would not compare with
        # those of full windows (coarser spectrum, fewer cycles in the RMS).
        return None

    def restart(self) -> None:
        """Drop the window in progress: the samples in it precede a gap in the stream."""
        if self._windows is not None:
            if self._windows.filled:
                self.discarded += 1
            self._windows.restart()

    def feed(self, ts_end: float, samples: ArrayLike, rate_hz: float, pool: Pool[Record],
             emit: Callable[[Record], None]) -> None:
        windows = self._windows
        if windows is None or windows.rate_hz != rate_hz:
            self.restart()
            windows = self._windows = self._open(rate_hz)

        def on_window(features: Features, ts: float) -> None:
            emit(self._record(features, ts, pool))

        windows.feed(ts_end, samples, on_window)

    def _open(self, rate_hz: float) -> SampleWindows:
        # Here rather than at the top: numpy is paid for only by a sensor that streams.
        from gateway.pipeline.vibration import SampleWindows

        c = self.config
        return SampleWindows(rate_hz, c.window_s, c.overlap, c.band_low_hz, c.band_high_hz)

    def _record(self, features: Features, ts: float, pool: Pool[Record]) -> Record:
        record = pool.acquire()
        record.ts = ts
        values = record.values
        values["accel_rms_g_x"], values["accel_rms_g_y"], values["accel_rms_g_z"] = (
            features.rms_g
        )
        values["accel_peak_g"] = features.peak_g
        if features.crest_factor is not None:
            values["crest_factor"] = features.crest_factor
        values["dominant_hz"] = features.dominant_hz
        values["velocity_rms_mm_s"] = features.velocity_rms_mm_s
        record.zone = severity.zone(features.velocity_rms_mm_s, self.config.machine_class)
        return record
