"""The rule engine's throughput over many series, against its detector alone, one run.

Usage (from the repository root)::

    .venv/bin/python bench/engine_throughput.py [--series 100000] [--batches 50]

Each batch holds one point of every series (a scrape of the whole fleet). The engine
path is a default rule's :class:`~aiops.pipeline.engine.RuleRuntime`: series registry
lookups, the default detector, the hit window, the alert state machine, the recent
window kept for charts, and an alert (with its window and expected band) for every
transition. The baseline is the bare detector on the same points in the same process.
CPU time, after warm-up batches that take every series past its warm-up.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from aiops.pipeline.engine import RuleRuntime, RuleSpec
from aiops.registry import DEFAULT_DETECTOR, DETECTORS
from aiops.types import Batch, SeriesKey


def run(n_series: int, n_batches: int, warm: int = 110, seed: int = 0) -> tuple[float, float, int]:
    """(engine points/s, detector-alone points/s, alerts) by CPU time."""
    rng = np.random.default_rng(seed)
    keys = [SeriesKey.of("latency", {"instance": f"i-{i}"}) for i in range(n_series)]
    idx = np.arange(n_series, dtype=np.int64)
    level = rng.uniform(10, 100, n_series)
    values = [level + rng.normal(0, 1, n_series) for _ in range(warm + n_batches)]
    spec = RuleSpec("bench", "A", "s", lambda k: True, max_series=2 * n_series)
    rt = RuleRuntime(spec)
    det = DETECTORS.create(DEFAULT_DETECTOR)

    def batch(b: int) -> Batch:
        return Batch(
            keys=list(keys), series=idx, timestamps=np.full(n_series, 60.0 * b), values=values[b]
        )

    alerts = 0
    timed = [batch(b) for b in range(warm, warm + n_batches)]
    for b in range(warm):
        rt.process(batch(b))
        det.score(idx, np.full(n_series, 60.0 * b), values[b])
    started = time.process_time()
    for bt in timed:
        alerts += len(rt.process(bt).alerts)
    engine = time.process_time() - started
    started = time.process_time()
    for bt in timed:
        det.score(bt.series, bt.timestamps, bt.values)
    alone = time.process_time() - started
    points = n_series * n_batches
    return points / engine, points / alone, alerts


def main() -> None:
    """Print both rates and their ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=100_000)
    ap.add_argument("--batches", type=int, default=50)
    a = ap.parse_args()
    engine, alone, alerts = run(a.series, a.batches)
    print(f"engine ({DEFAULT_DETECTOR} rule): {engine:,.0f} points/s ({alerts} alert transitions)")
    print(f"{DEFAULT_DETECTOR} alone:        {alone:,.0f} points/s")
    print(f"engine / detector alone: {engine / alone:.3f}")


if __name__ == "__main__":
    main()
