"""How often drift checks report on normal daily cycles: drifts per series-day, by signal.

Usage (from the repository root)::

    .venv/bin/python bench/drift_seasonal.py [--kpi DIR] [--detector NAME] [--drift JSON ...]

Each series is scored by a rule of ``--detector`` (default: the default detector; the
score and alert-rate checks depend on it, the input check does not) with a drift
check attached the way the daemon attaches one (:class:`aiops.models.retrain.Retraining`,
no retraining), and the reported drifts (those past the cooldown: each is a log line and
an info notification) are counted per signal and divided by the series-days replayed.

Data: the KPI development series (``--kpi``, default ``../shared/datasets/kpi/train``;
real web-service KPIs, most with a daily cycle, their labelled incidents included), and
synthetic normal series with no incident at all: 14 days of one-minute points, a daily
cycle of amplitude 10 around 50 plus Gaussian noise (sd 1), or a square-ish business
hours cycle, or no cycle. On the synthetic series every report is a false alarm.

``--drift`` settings are JSON objects of the rule's ``drift:`` (several: one row each);
default: the defaults (input against the day before, score, alert rate), then
``{"season": 0}`` (input checked on the raw bucket means).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from aiops.config.models import Drift
from aiops.evaluation.labelled import read_labelled_csv
from aiops.models.drift import SIGNALS
from aiops.models.retrain import InlineExecutor, Retraining
from aiops.pipeline.engine import RuleRuntime
from aiops.pipeline.scoring import score_series
from aiops.registry import DEFAULT_DETECTOR

DAY = 86400.0


class _One:
    def __init__(self, rt: RuleRuntime) -> None:
        self.rules = {rt.spec.key: rt}


def reported(t: np.ndarray, v: np.ndarray, drift: Drift, detector: str) -> dict[str, int]:
    """Drifts reported per signal when the default rule replays one series."""
    holder: dict[str, Retraining] = {}

    def setup(rt: RuleRuntime) -> None:
        r = Retraining({rt.spec.key: (None, drift)}, executor=InlineExecutor())
        r.start(_One(rt))  # type: ignore[arg-type]
        holder["r"] = r

    score_series(t, v, detector=detector, setup=setup, chunk=60)
    out = dict.fromkeys(SIGNALS, 0)
    for a in holder["r"]._alerts:  # the info alerts raised, one per reported drift
        out[a.labels["signal"]] += 1
    return out


def synthetic(kind: str, seed: int, days: int = 14) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = days * 1440
    t = 1.7e9 + 60.0 * np.arange(n)
    phase = (np.arange(n) % 1440) / 1440
    if kind == "sine":
        cycle = 10 * np.sin(2 * np.pi * phase)
    elif kind == "business hours":
        cycle = 20 / (1 + np.exp(-40 * (phase - 0.375))) - 20 / (1 + np.exp(-40 * (phase - 0.75)))
    else:
        cycle = np.zeros(n)
    return t, 50 + cycle + rng.normal(0, 1, n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kpi", type=Path, default=Path("../shared/datasets/kpi/train"))
    ap.add_argument("--detector", default=DEFAULT_DETECTOR)
    ap.add_argument("--drift", action="append", default=None)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    settings: list[dict[str, Any]] = (
        [json.loads(d) for d in args.drift] if args.drift else [{}, {"season": 0}]
    )
    print(f"detector {args.detector}; reported drifts per series-day")
    corpora: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    files = sorted(args.kpi.glob("*.csv*")) if args.kpi.is_dir() else []
    if files:
        series = [read_labelled_csv(p) for p in files]
        corpora[f"KPI development ({len(files)} series)"] = [
            (s.timestamps, s.values) for s in series if len(s.timestamps)
        ]
    for kind in ("sine", "business hours", "flat"):
        corpora[f"synthetic normal, {kind} (4 x 14 days)"] = [
            synthetic(kind, seed) for seed in range(4)
        ]
    for name, data in corpora.items():
        days = sum((t[-1] - t[0]) / DAY for t, _ in data)
        print(f"{name}: {days:,.0f} series-days")
        for s in settings:
            drift = Drift(**s)
            total = dict.fromkeys(SIGNALS, 0)
            for t, v in data:
                for k, n in reported(t, v, drift, args.detector).items():
                    total[k] += n
            per_day = ", ".join(f"{k} {total[k] / days:.2f}" for k in SIGNALS if k in drift.on)
            print(f"  drift: {json.dumps(s):40s} {per_day}")


if __name__ == "__main__":
    main()
