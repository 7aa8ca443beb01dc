"""The chart window's expected band against its definition, written plainly."""

from __future__ import annotations

import numpy as np
import pytest

from aiops.pipeline.engine import BAND_MIN_POINTS, BAND_SIGMAS, expected_band


def reference(values: np.ndarray, anomalous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median +- 3 x 1.4826 MAD (std where the MAD is 0) of the earlier normal points."""
    lo, hi = np.full(len(values), np.nan), np.full(len(values), np.nan)
    for k in range(len(values)):
        prior = values[:k][~anomalous[:k] & np.isfinite(values[:k])]
        if len(prior) < BAND_MIN_POINTS:
            continue
        mid = np.median(prior)
        sd = 1.4826 * np.median(np.abs(prior - mid)) or np.std(prior)
        lo[k], hi[k] = mid - BAND_SIGMAS * sd, mid + BAND_SIGMAS * sd
    return lo, hi


@pytest.mark.parametrize("kind", ["normal", "ties", "mostly_constant", "gaps"])
def test_band_matches_its_definition(kind: str) -> None:
    rng = np.random.default_rng(len(kind))
    for _ in range(200):
        n = int(rng.integers(1, 90))
        if kind == "normal":
            v = rng.normal(size=n)
        elif kind == "ties":
            v = np.round(2 * rng.normal(size=n))
        elif kind == "mostly_constant":
            v = np.where(rng.random(n) < 0.7, 1.0, rng.normal(size=n))
        else:
            v = rng.exponential(size=n)
            v[rng.random(n) < 0.15] = np.nan
        anomalous = rng.random(n) < 0.1
        got, want = expected_band(v, anomalous), reference(v, anomalous)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12, equal_nan=True)
