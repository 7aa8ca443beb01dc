"""What forgetting stale series costs the data loop: per-batch time, as ratios.

Usage (from the repository root)::

    .venv/bin/python bench/series_eviction.py [--series 100000] [--minutes 60]
        [--churn 0.01] [--detector ewma_z]

One rule of ``--series`` series, one point per series per minute (one batch per minute,
as a scrape gives). Three runs in this process, each timed over every batch:

- ``off``: ``forget_after_stale: 0s`` on a steady fleet (the baseline);
- ``on, steady``: ``15m`` on the same fleet: the periodic look finds nothing to forget;
- ``off, churn``: ``0s`` while ``--churn`` of the series are replaced by new ones every
  minute (pods redeployed), with the cap at ``--series``: the new series are dropped
  for good (what churn costs the registry without forgetting);
- ``on, churn``: ``15m`` on that churn: old series are forgotten, their rows reset and
  reused by the new ones.

Prints seconds per batch (mean, and the slowest batch) and each run's mean against the
baseline's; the ``churn`` run also prints the rows it freed and how many series the
registry holds (it must not grow past the cap).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from aiops.pipeline.engine import RuleRuntime, RuleSpec
from aiops.types import Batch, SeriesKey


def run(n: int, minutes: int, churn: float, forget: float, detector: str) -> dict[str, float]:
    spec = RuleSpec(
        group="bench",
        alert="A",
        source="s",
        matches=lambda k: True,
        detector_type=detector,
        max_series=n,
        forget_seconds=forget,
        stale_seconds=600.0,
    )
    rt = RuleRuntime(spec)
    rng = np.random.default_rng(0)
    ids = np.arange(n)  # the pod id behind each slot; a churned slot gets a new id
    next_id = n
    per_minute = int(churn * n)
    times = []
    for minute in range(minutes):
        if per_minute:
            slots = rng.choice(n, per_minute, replace=False)
            ids[slots] = np.arange(next_id, next_id + per_minute)
            next_id += per_minute
        keys = [SeriesKey.of("latency", {"pod": str(i)}) for i in ids.tolist()]
        batch = Batch(
            keys=keys,
            series=np.arange(n, dtype=np.int64),
            timestamps=np.full(n, minute * 60.0),
            values=100 + rng.normal(size=n),
        )
        t0 = time.perf_counter()
        rt.process(batch)
        times.append(time.perf_counter() - t0)
    warm = np.array(times[5:])  # compilation and first growth left out
    return {
        "mean": float(warm.mean()),
        "max": float(warm.max()),
        "evicted": rt.registry.evicted,
        "rows": len(rt.registry),
        "live": rt.registry.live,
        "dropped": rt.registry.dropped,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", type=int, default=100_000)
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("--churn", type=float, default=0.01)
    ap.add_argument("--detector", default="ewma_z")
    args = ap.parse_args()
    n, m = args.series, args.minutes
    base = run(n, m, 0.0, 0.0, args.detector)
    steady = run(n, m, 0.0, 900.0, args.detector)
    churn_off = run(n, m, args.churn, 0.0, args.detector)
    churn = run(n, m, args.churn, 900.0, args.detector)
    print(f"{n} series, {m} one-minute batches, detector {args.detector}")
    print("| run | s/batch mean | slowest | ratio to off |")
    print("|---|---|---|---|")
    runs = (
        ("off", base),
        ("on, steady", steady),
        (f"off, churn {args.churn:g}", churn_off),
        (f"on, churn {args.churn:g}", churn),
    )
    for name, r in runs:
        print(f"| {name} | {r['mean']:.4f} | {r['max']:.4f} | {r['mean'] / base['mean']:.2f}x |")
    print(
        f"churn run: {churn['evicted']} series forgotten, {churn['dropped']} dropped over the "
        f"cap while waiting, registry {churn['rows']} rows ({churn['live']} live, cap {n})"
    )


if __name__ == "__main__":
    main()
