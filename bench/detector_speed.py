"""Detector alone: points/s over many series, and one long series, per detector.

Usage (from the repository root)::

    .venv/bin/python bench/detector_speed.py [--detector NAME ...] [--series 100000]
        [--long 240000]

Two figures per detector, in CPU seconds of this process (a busy machine does not
halve them):

- many series: ``--series`` series, one point each per batch (a scrape of the fleet),
  200 untimed batches to take them past their warm-up, then 30 timed batches;
- one long series: ``bench/score_long.py``'s series (``--long`` 1-minute points, a daily
  cycle, spikes, one empty value in 1,000) in its chunks of 4,096 points, as ``aiops
  score`` hands them to the detector.

End to end (``aiops score`` with the CSV, the engine and the alert state machine) is
``bench/score_long.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import score_long as sl

from aiops.pipeline.detector import DEFAULT_THRESHOLD
from aiops.registry import DETECTORS


def many_series(name: str, n_series: int, warm: int = 200, timed: int = 30) -> float:
    """Points per CPU second, one point of every series per batch."""
    rng = np.random.default_rng(0)
    det = DETECTORS.create(name)
    idx = np.arange(n_series, dtype=np.int64)
    level = rng.uniform(0, 100, n_series)
    batches = [level + rng.normal(0, 1, n_series) for _ in range(10)]
    step = 3 * 3600.0
    for b in range(warm):
        det.score(idx, np.full(n_series, step * b), batches[b % len(batches)])
    started = time.process_time()
    for b in range(warm, warm + timed):
        det.score(idx, np.full(n_series, step * b), batches[b % len(batches)])
    return n_series * timed / (time.process_time() - started)


def long_series(name: str, n: int) -> float:
    """CPU seconds to score one ``n``-point series in ``aiops score``'s chunks."""
    rng = np.random.default_rng(0)
    t = sl.START + sl.STEP * np.arange(n)
    v = 50.0 + 10.0 * np.sin(2 * np.pi * t / sl.DAY) + rng.normal(0.0, 1.0, n)
    v[rng.choice(n, size=max(1, n // 5000), replace=False)] += 40.0
    v[rng.random(n) < 1e-3] = np.nan
    idx = np.zeros(sl.CHUNK, dtype=np.int64)
    DETECTORS.create(name).score(idx[:10], t[:10], v[:10])  # compile or load kernels
    det = DETECTORS.create(name, learn_below=DEFAULT_THRESHOLD)
    started = time.process_time()
    for lo in range(0, n, sl.CHUNK):
        hi = min(n, lo + sl.CHUNK)
        det.score(idx[: hi - lo], t[lo:hi], v[lo:hi])
    return time.process_time() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--detector", nargs="*", default=["ewma_z", "envelope_novelty", "robust_ewma"])
    ap.add_argument("--series", type=int, default=100_000)
    ap.add_argument("--long", type=int, default=240_000)
    args = ap.parse_args()
    print(f"| detector | points/s over {args.series:,} series | one {args.long:,}-point series |")
    print("|---|---|---|")
    for name in args.detector:
        rate = many_series(name, args.series) if args.series else float("nan")
        seconds = long_series(name, args.long) if args.long else float("nan")
        print(f"| {name} | {rate:,.0f} | {seconds:.2f} s |", flush=True)


if __name__ == "__main__":
    main()
