"""What drift checks (and retraining's history ring) cost the data loop, as a ratio.

Usage (from the repository root)::

    .venv/bin/python bench/drift_overhead.py [--series 100000] [--batches 30]
        [--shape fleet|replay|both] [--detector adwin|kswin|page_hinkley] [--runs 1]

Two shapes of batch, each timed three ways in the same process (CPU time, after warm-up,
the variants interleaved batch by batch so machine load hits them alike):

- *fleet*: one point of each of ``--series`` series per batch (a scrape of the fleet);
- *replay*: one series, 4,096 points per batch (``aiops score``, a backfill).

Variants: the rule alone; with ``drift: {}`` (the defaults: ADWIN on input, score and
alert rate, 64 series followed, 5-minute buckets); with ``drift: {on: [score,
alert_rate]}``; the defaults with 1-hour buckets; with ``drift: {}`` and ``retrain: {}``
(drift plus the history ring; no schedule, so no retrain fires); ``--detector`` picks
the river detector of every variant. Prints points/s and the ratio of each variant's
time to the rule alone; with ``--runs N`` the whole measure is repeated (fresh rules
each time) and the lowest and highest ratio are printed too. Log lines of drifts (the
replay's daily cycle is one) are silenced.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import numpy as np

from aiops.config.models import Drift, Retrain
from aiops.models.retrain import InlineExecutor, Retraining
from aiops.pipeline.engine import RuleRuntime, RuleSpec
from aiops.types import Batch, SeriesKey

RULE_WIDE = ("score", "alert_rate")


class _One:
    def __init__(self, rt: RuleRuntime) -> None:
        self.rules = {rt.spec.key: rt}


def _runtime(drift: Drift | None, retrain: Retrain | None, n_series: int) -> RuleRuntime:
    spec = RuleSpec("bench", "A", "s", lambda k: True, max_series=2 * n_series)
    rt = RuleRuntime(spec)
    if drift is not None or retrain is not None:
        r = Retraining({spec.key: (retrain, drift)}, executor=InlineExecutor())
        r.start(_One(rt))  # type: ignore[arg-type]
    return rt


def run(batches: list[Batch], warm: int, n_series: int, detector: str) -> dict[str, float]:
    """CPU seconds per variant over ``batches[warm:]``."""
    d = {"detector": detector}
    variants: dict[str, Any] = {
        "rule alone": _runtime(None, None, n_series),
        "drift": _runtime(Drift(**d), None, n_series),
        "drift without input": _runtime(Drift(on=RULE_WIDE, **d), None, n_series),
        "drift, 1h buckets": _runtime(Drift(every=3600.0, **d), None, n_series),
        # No schedule: the ring fills, no retrain fires (that is a daily cost, not a batch's).
        "drift + retrain ring": _runtime(Drift(**d), Retrain(), n_series),
    }
    for b in batches[:warm]:
        for rt in variants.values():
            rt.process(b)
    spent = dict.fromkeys(variants, 0.0)
    for b in batches[warm:]:
        for name, rt in variants.items():
            started = time.process_time()
            rt.process(b)
            spent[name] += time.process_time() - started
    return spent


def fleet(n_series: int, n_batches: int, warm: int = 110) -> tuple[list[Batch], int]:
    rng = np.random.default_rng(0)
    keys = [SeriesKey.of("latency", {"instance": f"i-{i}"}) for i in range(n_series)]
    idx = np.arange(n_series, dtype=np.int64)
    level = rng.uniform(10, 100, n_series)
    out = [
        Batch(
            keys=keys,
            series=idx,
            timestamps=np.full(n_series, 1.7e9 + 60.0 * b),
            values=level + rng.normal(0, 1, n_series),
        )
        for b in range(warm + n_batches)
    ]
    return out, warm


def replay(n_batches: int, chunk: int = 4096, warm: int = 3) -> tuple[list[Batch], int]:
    rng = np.random.default_rng(1)
    key = [SeriesKey.of("latency")]
    n = (warm + n_batches) * chunk
    t = 1.7e9 + 60.0 * np.arange(n)
    v = 50 + 10 * np.sin(np.arange(n) * 2 * np.pi / 1440) + rng.normal(0, 1, n)
    out = [
        Batch(
            keys=key,
            series=np.zeros(chunk, dtype=np.int64),
            timestamps=t[lo : lo + chunk],
            values=v[lo : lo + chunk],
        )
        for lo in range(0, n, chunk)
    ]
    return out, warm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", type=int, default=100_000)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--shape", choices=("both", "fleet", "replay"), default="both")
    ap.add_argument("--detector", choices=("adwin", "kswin", "page_hinkley"), default="adwin")
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    shapes = []
    if args.shape in ("both", "fleet"):
        name = f"fleet: {args.series:,} series x 1 point"
        shapes.append((name, fleet(args.series, args.batches)))
    if args.shape in ("both", "replay"):
        shapes.append(("replay: 1 series x 4,096 points", replay(4 * args.batches)))
    print(f"drift detector: {args.detector}")
    for name, (batches, warm) in shapes:
        points = sum(b.n_points for b in batches[warm:])
        runs = [run(batches, warm, args.series, args.detector) for _ in range(args.runs)]
        print(f"{name} ({len(batches) - warm} timed batches, {args.runs} run(s)):")
        for variant in runs[0]:
            ratios = [r[variant] / r["rule alone"] for r in runs]
            rate = points / min(r[variant] for r in runs)
            median = sorted(ratios)[len(ratios) // 2]
            spread = f" (runs {min(ratios):.3f}-{max(ratios):.3f})" if len(runs) > 1 else ""
            print(f"  {variant:21s} {rate:>12,.0f} points/s  ratio {median:.3f}{spread}")


if __name__ == "__main__":
    main()
