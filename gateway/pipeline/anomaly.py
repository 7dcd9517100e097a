"""A machine's own normal, learned from its vibration windows, and each window's distance
from it; with numpy, imported only with a vibration stage fed samples.

Each window is described by a few features, all as natural logarithms, so that a change
by a factor counts alike at any level: the RMS acceleration of each axis, the peak, the
crest factor, the dominant frequency, and the energy of ``bands`` log-spaced bands of
the spectrum summed over the axes (a new bearing tone raises its band long before it
moves the RMS). The baseline is their mean and covariance over the learning windows
(Welford's streaming update: no history is kept). Once learned, a window's score is its
Mahalanobis distance from the mean over the feature count, the root mean square of its
deviations in units of the baseline's spread, so normal windows score about 1:

- the covariance is shrunk towards the identity (in correlation form, by the Oracle
  Approximating Shrinkage of Chen et al. 2010), so that features that moved together
  while learning (a crest factor is the peak over an RMS) still give an invertible
  matrix;
- no feature is taken to vary by less than ``MIN_SPREAD`` (1 % in logarithms): a feature
  that did not move at all while learning (the dominant frequency of an emulated motor)
  would otherwise turn the faintest change into an alarm.

Every array is allocated when the baseline is made; learning and scoring write into
them (``out=``), so a window allocates nothing but its score.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.floating[Any]]

MIN_SPREAD = 0.01
# Below this a feature is taken as this (an empty band, a window without motion).
FLOOR = 1e-12
SCALARS = ("accel_rms_g_x", "accel_rms_g_y", "accel_rms_g_z", "accel_peak_g", "crest_factor",
           "dominant_hz")


def band_matrix(freqs: Floats, low_hz: float, high_hz: float, bands: int) -> Floats:
    """(bins x bands) of 0 and 1: which spectrum bin belongs to which band, the bands
    log-spaced from ``low_hz`` to ``high_hz`` (or the last bin, if lower)."""
    top = min(high_hz, float(freqs[-1]))
    edges = np.geomspace(low_hz, max(top, low_hz * 1.01), bands + 1)
    matrix = np.zeros((len(freqs), bands))
    for band in range(bands):
        upper = freqs <= edges[band + 1] if band == bands - 1 else freqs < edges[band + 1]
        matrix[(freqs >= edges[band]) & upper, band] = 1.0
    return matrix


class Features:
    """A window's feature vector, written into one array."""

    def __init__(self, freqs: Floats, low_hz: float, high_hz: float, bands: int) -> None:
        self.size = len(SCALARS) + bands
        self.vector: Floats = np.empty(self.size)
        self._bands = band_matrix(freqs, low_hz, high_hz, bands)
        self._energies = self.vector[len(SCALARS):]

    def extract(self, values: dict[str, float], power: Floats) -> Floats:
        """From a window's reading and its power spectrum summed over the axes (bins)."""
        vector = self.vector
        for index, name in enumerate(SCALARS):
            vector[index] = values.get(name, 0.0)
        np.matmul(power, self._bands, out=self._energies)
        np.maximum(vector, FLOOR, out=vector)
        np.log(vector, out=vector)
        return vector


class Baseline:
    """Mean and covariance of the features over ``learn`` windows, then the score."""

    def __init__(self, size: int, learn: int) -> None:
        self.size = size
        self.learn = learn
        self.count = 0
        self.mean: Floats = np.zeros(size)
        self._m2: Floats = np.zeros((size, size))
        self._delta: Floats = np.empty(size)
        self._after: Floats = np.empty(size)
        self._outer: Floats = np.empty((size, size))
        self._precision: Floats | None = None

    @property
    def learned(self) -> bool:
        return self._precision is not None

    def add(self, x: Floats) -> None:
        """One learning window; the last one computes the baseline."""
        self.count += 1
        delta = self._delta
        np.subtract(x, self.mean, out=delta)
        np.multiply(delta, 1.0 / self.count, out=self._after)
        np.add(self.mean, self._after, out=self.mean)
        np.subtract(x, self.mean, out=self._after)
        np.multiply.outer(delta, self._after, out=self._outer)
        np.add(self._m2, self._outer, out=self._m2)
        if self.count >= self.learn:
            self._precision = precision(self._m2 / (self.count - 1), self.count)

    def score(self, x: Floats) -> float:
        """The window's distance from the baseline: about 1 for a window like those
        learned, in units of their spread."""
        assert self._precision is not None
        deviation = self._delta
        np.subtract(x, self.mean, out=deviation)
        np.matmul(self._precision, deviation, out=self._after)
        squared = float(np.dot(deviation, self._after))
        return math.sqrt(max(squared, 0.0) / self.size)

    def covariance(self) -> Floats:
        return self._m2 / max(self.count - 1, 1)

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean.tolist(),
                "covariance": self.covariance().tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any], size: int) -> Baseline:
        """A learned baseline as ``to_json`` wrote it; ValueError if it is not one."""
        count = int(data["count"])
        mean = np.array(data["mean"], dtype=np.float64)
        covariance = np.array(data["covariance"], dtype=np.float64)
        if (count < 2 or mean.shape != (size,) or covariance.shape != (size, size)
                or not (np.isfinite(mean).all() and np.isfinite(covariance).all())):
            raise ValueError("not a baseline of this stage's features")
        baseline = cls(size, count)
        baseline.count = count
        baseline.mean[:] = mean
        baseline._m2[:] = covariance * (count - 1)
        baseline._precision = precision(covariance, count)
        return baseline


def precision(covariance: Floats, count: int) -> Floats:
    """The inverse of the covariance, each variance at least ``MIN_SPREAD`` squared,
    shrunk towards the identity in correlation form (OAS)."""
    size = len(covariance)
    variances = np.maximum(np.diag(covariance), MIN_SPREAD**2)
    spread = np.sqrt(variances)
    correlation = covariance / np.outer(spread, spread)
    np.fill_diagonal(correlation, 1.0)
    mu = float(np.trace(correlation)) / size
    alpha = float(np.mean(correlation**2))
    denominator = (count + 1) * (alpha - mu**2 / size)
    shrinkage = 1.0 if denominator <= 0 else min((alpha + mu**2) / denominator, 1.0)
    shrunk = (1.0 - shrinkage) * correlation
    shrunk[np.diag_indices(size)] += shrinkage * mu
    inverse: Floats = np.linalg.inv(shrunk) / np.outer(spread, spread)
    return inverse
