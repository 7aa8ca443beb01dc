"""Score detectors on labelled KPI CSVs with the protocol of shared/datasets/kpi/SOURCE.md.

Usage (from the repository root)::

    .venv/bin/python bench/quality/kpi.py --data ../shared/datasets/kpi/train --jobs 2 \
        [--detector ewma_z] [--params JSON] [--threshold T]

Each ``timestamp,value,label`` file (plain or .gz) goes through the daemon's own scoring
path (:func:`aiops.scoring.score_series`: detector, ``learn_below`` from the threshold,
hit window, alert state machine). Protocol: re-grid each series to its most common
interval (missing slots are normal, with no alarm; the first point of a slot counts); a
labelled segment is detected, all its slots true positives, when an alarm lies in its
first 8 slots (delay 7), else all false negatives; alarms on normal slots are false
positives; precision, recall and F1 are pooled over all series. "best" sweeps one
threshold over every series' scores (tuned on the labels, as the literature reports);
"own" takes the daemon's own alerts (firing transitions). "2nd half" evaluates each
series' second half only, after the detector streamed its first half.

This is the bench's own copy of the protocol until ``aiops eval`` gets a labelled-folder
mode (issue [D]); it is not part of the package.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from aiops.detector import DEFAULT_THRESHOLD
from aiops.scoring import DEFAULT_DETECTOR, score_series

DELAY = 7


def read(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Timestamps, values and labels, sorted by time."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        data = np.genfromtxt(f, delimiter=",", names=True)
    t, v, lab = (np.asarray(data[c], dtype=float) for c in data.dtype.names[:3])
    order = np.argsort(t, kind="stable")
    return t[order], v[order], (lab[order] > 0).astype(np.int8)


def regrid(t: np.ndarray, x: np.ndarray, fill: float) -> np.ndarray:
    """``x`` placed on the series' grid of its most common interval."""
    dt = np.diff(t)
    steps, counts = np.unique(dt[dt > 0], return_counts=True)
    slot = np.round((t - t[0]) / steps[np.argmax(counts)]).astype(np.int64)
    first = np.r_[True, slot[1:] != slot[:-1]]
    out = np.full(int(slot[-1]) + 1, fill)
    out[slot[first]] = x[first]
    return out


def parts(lab: np.ndarray, score: np.ndarray, alarm: np.ndarray) -> dict[str, np.ndarray | int]:
    """Per series: each segment's length and best early score; own-alert TP, FN, FP."""
    edges = np.diff(np.r_[0, lab, 0])
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    early = [slice(a, min(b, a + DELAY + 1)) for a, b in zip(starts, ends, strict=True)]
    seg_max = np.array([score[e].max() for e in early])
    seg_len = ends - starts
    found = np.array([alarm[e].any() for e in early], dtype=bool)
    return {
        "seg_max": seg_max,
        "seg_len": seg_len,
        "normal": score[(lab == 0) & (score >= 0)],
        "tp": int(seg_len[found].sum()),
        "fn": int(seg_len[~found].sum()),
        "fp": int((alarm & (lab == 0)).sum()),
    }


def f1(tp: float, fp: float, fn: float) -> float:
    """Pooled F1."""
    return 2 * tp / max(2 * tp + fp + fn, 1)


def pooled(series: list[dict[str, np.ndarray | int]]) -> tuple[float, float, float]:
    """(best F1 over one threshold, that threshold, own-alert F1)."""
    seg_max = np.concatenate([s["seg_max"] for s in series])
    seg_len = np.concatenate([s["seg_len"] for s in series])
    normal = np.sort(np.concatenate([s["normal"] for s in series]))
    order = np.argsort(-seg_max)
    cand = seg_max[order]
    tp = np.cumsum(seg_len[order])  # detected mass when the threshold is cand[k]
    fp = len(normal) - np.searchsorted(normal, cand, side="left")
    scores = 2 * tp / (2 * tp + fp + (seg_len.sum() - tp))
    k = int(np.argmax(scores)) if len(scores) else 0
    own = f1(*(sum(int(s[c]) for s in series) for c in ("tp", "fp", "fn")))
    return float(scores[k]) if len(scores) else 0.0, float(cand[k]) if len(cand) else 1.0, own


def one(path: Path, detector: str, params: dict, threshold: float) -> tuple[dict, dict, int]:
    t, v, lab = read(path)
    out = score_series(t, v, detector=detector, params=params, threshold=threshold)
    lab_g = regrid(t, lab.astype(float), 0.0).astype(np.int8)
    score_g = regrid(t, out.scores, -1.0)
    alarm_g = regrid(t, out.alerts.astype(float), 0.0) > 0
    half = len(lab_g) // 2
    whole = parts(lab_g, score_g, alarm_g)
    second = parts(lab_g[half:], score_g[half:], alarm_g[half:])
    return whole, second, len(t)


def main(argv: list[str] | None = None) -> int:
    """Print the pooled figures of one detector configuration."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("AIOPS_KPI_DIR", "../shared/datasets/kpi/train")),
    )
    ap.add_argument("--detector", default=DEFAULT_DETECTOR)
    ap.add_argument("--params", default="{}")
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    files = sorted([*args.data.glob("*.csv"), *args.data.glob("*.csv.gz")])
    if not files:
        print(f"no *.csv or *.csv.gz files in {args.data}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    params = json.loads(args.params)
    with ProcessPoolExecutor(args.jobs) as ex:
        futures = [ex.submit(one, f, args.detector, params, args.threshold) for f in files]
        results = [fu.result() for fu in futures]
    wall = time.perf_counter() - started
    n_points = sum(r[2] for r in results)
    bw, thr_w, ow = pooled([r[0] for r in results])
    bs, thr_s, os_ = pooled([r[1] for r in results])
    print(
        f"{args.detector} {params} threshold {args.threshold}: "
        f"{len(files)} files, {n_points:,} points, {wall:.0f} s"
    )
    print(f"whole series: best F1 {bw:.3f} (at {thr_w:.6f}), own-alert F1 {ow:.3f}")
    print(f"second half:  best F1 {bs:.3f} (at {thr_s:.6f}), own-alert F1 {os_:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
