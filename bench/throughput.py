"""Default detector throughput across many series, against river in the same run.

Usage (from the repository root)::

    .venv/bin/python bench/throughput.py [--series 100000] [--batches 100]

Each batch holds one point of every series (a scrape of the whole fleet), so a batch is
one vectorized round. river is scored point by point (its only mode) on a subset of
series and extrapolated per point; the ratio is printed for both river models.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from aiops.pipeline.scoring import DEFAULT_DETECTOR
from aiops.registry import DETECTORS


def bench_default(n_series: int, n_batches: int, seed: int = 0, warm_batches: int = 200) -> float:
    """Points per second of the default detector, one point per series per batch.

    ``warm_batches`` untimed batches first take every series past its warm-up, so the
    timed batches run the full scoring path: one point every three hours for 200
    batches is 25 days, past the three weeks after which the weekly seasonal feature
    counts.
    """
    rng = np.random.default_rng(seed)
    det = DETECTORS.create(DEFAULT_DETECTOR)
    idx = np.arange(n_series, dtype=np.int64)
    level = rng.uniform(0, 100, n_series)
    batches = [level + rng.normal(0, 1, n_series) for _ in range(10)]
    step = 3 * 3600.0
    for b in range(warm_batches):
        det.score(idx, np.full(n_series, step * b), batches[b % len(batches)])
    started = time.perf_counter()
    for b in range(warm_batches, warm_batches + n_batches):
        det.score(idx, np.full(n_series, step * b), batches[b % len(batches)])
    return n_series * n_batches / (time.perf_counter() - started)


def bench_river(model: str, n_points: int, seed: int = 0) -> float:
    """Points per second of a river anomaly model, learn_one + score_one per point."""
    from river import anomaly, preprocessing

    rng = np.random.default_rng(seed)
    xs = rng.normal(50, 1, n_points).tolist()
    if model == "HalfSpaceTrees":
        m = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=seed)
    else:
        m = anomaly.GaussianScorer(grace_period=30)
    started = time.perf_counter()
    for x in xs:
        if model == "HalfSpaceTrees":
            m.score_one({"x": x})
            m.learn_one({"x": x})
        else:
            m.score_one(None, x)
            m.learn_one(None, x)
    return n_points / (time.perf_counter() - started)


def main() -> None:
    """Run both and print the ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=100_000)
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--warm-batches", type=int, default=200)
    ap.add_argument("--river-points", type=int, default=20_000)
    args = ap.parse_args()
    ours = bench_default(args.series, args.batches, warm_batches=args.warm_batches)
    shape = f"{args.series:,} warm series x {args.batches} batches"
    print(f"{DEFAULT_DETECTOR}: {ours:,.0f} points/s ({shape})")
    for model in ("GaussianScorer", "HalfSpaceTrees"):
        try:
            theirs = bench_river(model, args.river_points)
        except Exception as exc:
            print(f"river {model}: not run ({exc})")
            continue
        print(f"river {model}: {theirs:,.0f} points/s per point -> ours is {ours / theirs:,.0f}x")


if __name__ == "__main__":
    main()
