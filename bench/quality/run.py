"""Evaluate every registered detector, at its defaults, on NAB v1.1; write RESULTS.md.

Usage (from the repository root)::

    .venv/bin/python bench/quality/run.py --data ../shared/datasets/nab --jobs 2

For each detector: the three NAB profiles with the threshold swept on the labels, the
same three at the daemon's own alerts (the engine's default threshold and post-rules, no
tuning), and the replay speed in points per second. A detector that fails to build or
run is listed with its error instead of stopping the run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from aiops.evaluation.nab import load_corpus
from aiops.evaluation.run import score_nab
from aiops.registry import DETECTORS
from aiops.scoring import DEFAULT_DETECTOR

PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = Path(os.environ.get("AIOPS_NAB_DIR", "../shared/datasets/nab"))
    ap.add_argument("--data", type=Path, default=default_data)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    ap.add_argument("--detector", action="append", help="Only these (repeatable).")
    args = ap.parse_args(argv)

    n_points = load_corpus(args.data).n_rows
    names = args.detector or DETECTORS.names()
    rows = []
    for name in names:
        started = time.perf_counter()
        try:
            rep = score_nab(args.data, detector=name, jobs=args.jobs, progress=False)
        except Exception as exc:
            rows.append(f"| {name} | error: {type(exc).__name__}: {str(exc)[:80]} |" + " |" * 6)
            print(f"{name}: {exc}", file=sys.stderr)
            continue
        wall = time.perf_counter() - started
        swept = [rep.swept[p].score for p in PROFILES]
        own = [rep.alerts[p].score for p in PROFILES] if rep.alerts else [float("nan")] * 3
        pps = n_points / rep.seconds * max(1, args.jobs) if rep.seconds else float("nan")
        mark = " (default)" if name == DEFAULT_DETECTOR else ""
        cells = " | ".join(f"{v:.2f}" for v in (*swept, *own))
        rows.append(f"| {name}{mark} | {cells} | {pps:,.0f} |")
        print(f"{name}: swept {swept} own alerts {own} ({wall:.0f} s)", file=sys.stderr)

    text = "\n".join(
        [
            "# NAB v1.1 quality of the registered detectors (defaults)",
            "",
            f"`bench/quality/run.py --jobs {args.jobs}`; {n_points:,} points in 58 files. "
            "Swept: threshold tuned on labels per profile (NAB's optimizer). Own alerts: "
            "the daemon's alert state machine at the default rule (threshold 0.99, no "
            "`for`, `min_hits` 1, no suppression), no tuning. Points/s: replay through the "
            "rule engine, per worker process (engine overhead included).",
            "",
            "| detector | standard | low FP | low FN | standard (alerts) | low FP (alerts) "
            "| low FN (alerts) | points/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            "Published (NAB scoreboard, swept): ARTime 74.9 / 65.1 / 80.4, Numenta HTM "
            "70.1 / 63.1 / 74.3, CAD OSE 69.9 / 67.0 / 73.2, Skyline 58.2, "
            "windowedGaussian 39.6 / 20.9 / 47.4.",
            "",
        ]
    )
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
