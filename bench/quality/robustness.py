"""NAB v1.1 under the damage real operations data has: empty values, scrape gaps, clock jitter.

Usage (from the repository root)::

    .venv/bin/python bench/quality/robustness.py --data ../shared/datasets/nab --jobs 2

Scores one detector (the default unless ``--detector``) through the daemon's own
scoring path on the corpus as published and on damaged copies of it, with the same
labels and row counts, so the figures compare directly:

- ``empty``: 5% of the values emptied at random, plus three scrape gaps per file, each
  1% of the file long (every point of a gap empty);
- ``jitter``: every timestamp moved by a normal error of 60 s, so some go backwards or
  repeat;
- ``both``: the two together.

The damage is seeded, so a run is reproducible. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from aiops.evaluation.nab import evaluate, load_corpus
from aiops.pipeline.scoring import DEFAULT_DETECTOR, score_series
from aiops.types import BoolArray, FloatArray

PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
Series = tuple[FloatArray, FloatArray]
Damage = Callable[[FloatArray, FloatArray, np.random.Generator], Series]


def _empty(t: FloatArray, v: FloatArray, rng: np.random.Generator) -> Series:
    v = v.copy()
    v[rng.random(len(v)) < 0.05] = np.nan
    for _ in range(3):
        start = int(rng.integers(0, len(v)))
        v[start : start + len(v) // 100] = np.nan
    return t, v


def _jitter(t: FloatArray, v: FloatArray, rng: np.random.Generator) -> Series:
    return t + rng.normal(0.0, 60.0, len(t)), v


def _both(t: FloatArray, v: FloatArray, rng: np.random.Generator) -> Series:
    return _jitter(*_empty(t, v, rng), rng)


DAMAGES: dict[str, Damage | None] = {
    "none": None,
    "empty": _empty,
    "jitter": _jitter,
    "both": _both,
}


def _score_file(
    timestamps: FloatArray, values: FloatArray, *, detector: str, damage: str
) -> tuple[FloatArray, BoolArray]:
    fn = DAMAGES[damage]
    if fn is not None:
        # One stream per file, from its content, so jobs and file order do not matter.
        seed = int(abs(np.nansum(values)) * 1000) % (2**32) + len(values)
        timestamps, values = fn(timestamps, values, np.random.default_rng(seed))
    out = score_series(timestamps, values, detector=detector)
    return out.scores, out.alerts


def main(argv: list[str] | None = None) -> int:
    """Score each damage and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = Path(os.environ.get("AIOPS_NAB_DIR", "../shared/datasets/nab"))
    ap.add_argument("--data", type=Path, default=default_data)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--detector", default=DEFAULT_DETECTOR)
    args = ap.parse_args(argv)

    corpus = load_corpus(args.data)
    print(f"NAB v1.1 under damage, {args.detector} at its defaults (standard / low FP / low FN)")
    print()
    print("| damage | swept | own alerts | windows (own alerts) |")
    print("|---|---|---|---:|")
    for damage in DAMAGES:
        fn = functools.partial(_score_file, detector=args.detector, damage=damage)
        rep = evaluate(corpus, fn, progress=False, jobs=args.jobs)
        swept = " / ".join(f"{rep.swept[p].score:.2f}" for p in PROFILES)
        assert rep.alerts is not None
        own = " / ".join(f"{rep.alerts[p].score:.2f}" for p in PROFILES)
        std = rep.alerts["standard"]
        print(f"| {damage} | {swept} | {own} | {std.detected}/{std.windows} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
