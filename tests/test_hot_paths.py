"""Hot paths made fast stay exact: the alert window's band, series keys' cached hash."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np

from aiops.pipeline.engine import BAND_MIN_POINTS, BAND_SIGMAS, expected_band
from aiops.types import SeriesKey


def _band_by_definition(values, anomalous):
    n = len(values)
    lo, hi = np.full(n, np.nan), np.full(n, np.nan)
    for k in range(n):
        prior = values[:k][~anomalous[:k] & np.isfinite(values[:k])]
        if len(prior) < BAND_MIN_POINTS:
            continue
        mid = float(np.median(prior))
        sd = 1.4826 * float(np.median(np.abs(prior - mid))) or float(np.std(prior))
        lo[k], hi[k] = mid - BAND_SIGMAS * sd, mid + BAND_SIGMAS * sd
    return lo, hi


def test_the_compiled_band_is_the_band_by_definition() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        v = rng.normal(0, 1, 60).round(int(rng.integers(0, 3)))  # quantized too: MAD 0
        v[rng.random(60) < 0.1] = np.nan
        anomalous = rng.random(60) < 0.1
        got = expected_band(v.astype(np.float32), anomalous)
        want = _band_by_definition(v.astype(np.float32).astype(np.float64), anomalous)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def test_a_series_key_from_another_process_finds_its_entry() -> None:
    # The hash is cached per key; string hashes differ between processes, so a key
    # that crossed a process boundary must rebuild it.
    code = (
        "import pickle, sys\n"
        "from aiops.types import SeriesKey\n"
        "sys.stdout.buffer.write(pickle.dumps(SeriesKey.of('cpu', {'host': 'a'})))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    blob = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    key = pickle.loads(blob.stdout)
    assert {SeriesKey.of("cpu", {"host": "a"}): 1}.get(key) == 1
