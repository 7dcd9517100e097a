"""Vibration features of three-axis accelerometer windows, with numpy.

Imported only once a sensor streams samples into a vibration stage: numpy costs about
12 MB of a small Pi's memory, which scalar sensors should not pay.

Each axis first loses its window mean: gravity and the chip's zero-g offset are DC, and
left in they would dominate the RMS and the peak of the vibration itself. Then, per
window:

- ``accel_rms_g_x|y|z``: RMS acceleration of each axis, in the time domain.
- ``accel_peak_g``: the largest absolute acceleration on any axis.
- ``crest_factor``: that peak over the RMS of the axis it occurred on.
- ``dominant_hz``: the strongest frequency (DC excluded) of the Hann-windowed power
  spectrum summed over the axes, to within one bin (``1 / window_s``).
- ``velocity_rms_mm_s``: each axis's spectrum divided by ``j*2*pi*f`` (integration)
  within the band (ISO 10816 and 20816 use 10-1000 Hz; the band ends at half the sample
  rate), the largest of the three axes, as ISO 10816 judges a machine by the largest
  reading of any direction.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

STANDARD_GRAVITY = 9.80665
AXES = 3
MIN_WINDOW = 16

Floats = NDArray[np.floating[Any]]


@dataclass(frozen=True, slots=True)
class Features:
    rms_g: tuple[float, float, float]
    peak_g: float
    # None for a window with no motion at all, where a crest factor has no meaning.
    crest_factor: float | None
    dominant_hz: float
    velocity_rms_mm_s: float


def velocity_weights(freqs: Floats, taper: Floats, band_low_hz: float, band_high_hz: float
                     ) -> Floats:
    """Per-bin factors that turn the squared magnitudes of a tapered acceleration spectrum
    (g) into the mean square velocity (mm/s) over the band.

    Parseval with the taper's energy ``sum(w**2)`` gives the mean square from a one-sided
    spectrum (every bin counted twice but DC and Nyquist); integration divides each bin
    by ``(2*pi*f)**2``.
    """
    size = len(taper)
    one_sided = np.full(len(freqs), 2.0)
    one_sided[0] = 1.0
    if size % 2 == 0:
        one_sided[-1] = 1.0
    in_band = (freqs >= band_low_hz) & (freqs <= band_high_hz)
    weights = np.zeros(len(freqs))
    scale = (STANDARD_GRAVITY * 1000.0) ** 2 / (size * float(np.dot(taper, taper)))
    weights[in_band] = one_sided[in_band] * scale / (2.0 * math.pi * freqs[in_band]) ** 2
    return weights


class Workspace:
    """Every array the analysis of one window needs, allocated once for a window length
    and rate and overwritten by each window."""

    __slots__ = ("centred", "freqs", "power", "scratch", "spectrum", "summed", "taper",
                 "velocity_weight")

    def __init__(self, size: int, rate_hz: float, band_low_hz: float, band_high_hz: float
                 ) -> None:
        bins = size // 2 + 1
        self.centred: Floats = np.empty((AXES, size))
        self.scratch: Floats = np.empty((AXES, size))
        self.spectrum = np.empty((AXES, bins), dtype=np.complex128)
        self.power: Floats = np.empty((AXES, bins))
        # The power summed over the axes: the dominant frequency's spectrum.
        self.summed: Floats = np.empty(bins)
        self.taper: Floats = np.hanning(size)
        self.freqs: Floats = np.fft.rfftfreq(size, 1.0 / rate_hz)
        self.velocity_weight = velocity_weights(self.freqs, self.taper, band_low_hz,
                                                band_high_hz)


def analyse(window: Floats, ws: Workspace) -> Features:
    """Features of ``window`` (axes x samples, in g); ``window`` itself is not changed."""
    centred = ws.centred
    np.subtract(window, window.mean(axis=1, keepdims=True), out=centred)
    size = centred.shape[1]
    rms = np.sqrt(np.einsum("ij,ij->i", centred, centred) / size)
    peaks = np.abs(centred, out=ws.scratch).max(axis=1)
    axis = int(np.argmax(peaks))
    peak = float(peaks[axis])
    axis_rms = float(rms[axis])

    np.multiply(centred, ws.taper, out=ws.scratch)
    np.fft.rfft(ws.scratch, axis=1, out=ws.spectrum)
    power = np.abs(ws.spectrum, out=ws.power)
    np.square(power, out=power)
    velocity = np.sqrt(power @ ws.velocity_weight)
    summed = np.sum(power, axis=0, out=ws.summed)
    dominant = 1 + int(np.argmax(summed[1:]))
    return Features(
        rms_g=(float(rms[0]), float(rms[1]), float(rms[2])),
        peak_g=peak,
        crest_factor=peak / axis_rms if axis_rms > 0.0 else None,
        dominant_hz=float(ws.freqs[dominant]),
        velocity_rms_mm_s=float(velocity.max()),
    )


def as_xyz(samples: ArrayLike) -> Floats:
    """Samples as rows of x, y, z: a flat buffer interleaving x, y, z (the ADXL345
    driver's ``array('f')``, shared, not copied) or a sequence of triples."""
    xyz: Floats = np.asarray(samples)
    if xyz.ndim == 1 and xyz.size % AXES == 0:
        return xyz.reshape(-1, AXES)
    if xyz.ndim == 2 and xyz.shape[1] == AXES:
        return xyz
    raise ValueError(f"expected interleaved x, y, z samples, got shape {xyz.shape}")


class SampleWindows:
    """Windows of ``window_s`` over a stream of samples at one rate, each starting
    ``1 - overlap`` of a window after the previous one, analysed as each fills."""

    def __init__(self, rate_hz: float, window_s: float, overlap: float,
                 band_low_hz: float, band_high_hz: float) -> None:
        size = round(window_s * rate_hz)
        if size < MIN_WINDOW:
            raise ValueError(
                f"a {window_s} s window at {rate_hz} Hz holds {size} samples; "
                f"a spectrum needs at least {MIN_WINDOW}"
            )
        self.rate_hz = rate_hz
        self.size = size
        self.hop = max(1, size - round(size * overlap))
        self.filled = 0
        self._ring: Floats = np.zeros((AXES, size))
        self._ws = Workspace(size, rate_hz, band_low_hz, band_high_hz)

    @property
    def power(self) -> Floats:
        """The power spectrum summed over the axes (bins) of the window analysed last."""
        return self._ws.summed

    @property
    def freqs(self) -> Floats:
        return self._ws.freqs

    def restart(self) -> None:
        """Forget the samples of the window in progress (after a gap in the stream)."""
        self.filled = 0

    def feed(self, ts_end: float, samples: ArrayLike,
             on_window: Callable[[Features, float], None]) -> None:
        """Add samples (the last one taken at ``ts_end``); ``on_window`` receives the
        features and the time of the last sample of each window that fills."""
        xyz = as_xyz(samples)
        count = len(xyz)
        ring = self._ring
        start = 0
        while start < count:
            take = min(self.size - self.filled, count - start)
            ring[:, self.filled : self.filled + take] = xyz[start : start + take].T
            self.filled += take
            start += take
            if self.filled < self.size:
                continue
            features = analyse(ring, self._ws)
            keep = self.size - self.hop
            # Through scratch: an overlapping copy within one array makes numpy
            # allocate a temporary.
            scratch = self._ws.scratch[:, :keep]
            np.copyto(scratch, ring[:, self.hop :])
            np.copyto(ring[:, :keep], scratch)
            self.filled = keep
            on_window(features, ts_end - (count - start) / self.rate_hz)
