"""Offline scoring of one series through the daemon's own rule engine.

``aiops score``, ``aiops eval nab`` and the benchmarks call :func:`score_series`, which
feeds points through exactly the :class:`~aiops.engine.RuleRuntime` the daemon uses
(detector, hit window, alert state machine), so offline numbers are what the daemon
would have done live.
"""

from __future__ import annotations

import contextlib
import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiops.detector import DEFAULT_THRESHOLD
from aiops.engine import RuleRuntime, RuleSpec
from aiops.registry import DEFAULT_DETECTOR
from aiops.timeutil import parse_timestamp
from aiops.types import Batch, BoolArray, FloatArray, SeriesKey

__all__ = ["DEFAULT_DETECTOR", "ScoredSeries", "read_series_csv", "score_series"]

_KEY = SeriesKey.of("value")


@dataclass(frozen=True)
class ScoredSeries:
    """Scores and alert flags, one per input point, in input order."""

    scores: FloatArray
    alerts: BoolArray


def score_series(
    timestamps: FloatArray,
    values: FloatArray,
    *,
    detector: str = DEFAULT_DETECTOR,
    params: Mapping[str, Any] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    for_seconds: float = 0.0,
    min_hits: int = 1,
    hits_window: int | None = None,
    suppress_seconds: float = 0.0,
    chunk: int = 4096,
) -> ScoredSeries:
    """Score one series; ``alerts[i]`` is True where the daemon's alert would fire.

    Points are fed in chunks of ``chunk`` (batch boundaries do not change scores).
    A NaN value scores 0 and never fires.

    >>> t = np.arange(200.0) * 600  # ten-minute points: the spike is 25 hours in
    >>> v = np.sin(np.arange(200) / 5.0)
    >>> v[150] = 25.0
    >>> out = score_series(t, v)
    >>> np.flatnonzero(out.alerts).tolist()
    [150]
    """
    spec = RuleSpec(
        group="score",
        alert="score",
        source="score",
        matches=lambda key: True,
        detector_type=detector,
        detector_params=dict(params or {}),
        threshold=threshold,
        for_seconds=for_seconds,
        min_hits=min_hits,
        hits_window=hits_window,
        suppress_seconds=suppress_seconds,
        max_series=1,
    )
    rt = RuleRuntime(spec)
    n = len(values)
    scores = np.zeros(n)
    alerts = np.zeros(n, dtype=bool)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        batch = Batch(
            keys=[_KEY],
            series=np.zeros(hi - lo, dtype=np.int64),
            timestamps=np.asarray(timestamps[lo:hi], dtype=np.float64),
            values=np.asarray(values[lo:hi], dtype=np.float64),
        )
        res = rt.process(batch)
        scores[lo + res.positions] = res.scores
        alerts[lo + res.positions] = res.fired
    return ScoredSeries(scores, alerts)


def read_series_csv(path: Path) -> tuple[list[list[str]], FloatArray, FloatArray]:
    """Read a ``timestamp,value`` CSV leniently: one output row per input row.

    Returns the raw rows (for echoing) and the parsed timestamps and values. An empty
    or unparseable value becomes NaN; an unparseable timestamp takes the previous row's
    timestamp (so the row is still scored, as missing); the header is optional.
    """
    with path.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r]
    if rows and not _is_number(rows[0][1] if len(rows[0]) > 1 else "") and not _is_time(rows[0][0]):
        rows = rows[1:]
    ts = np.empty(len(rows))
    vs = np.empty(len(rows))
    last_t = 0.0
    for i, row in enumerate(rows):
        with contextlib.suppress(ValueError, IndexError):
            last_t = parse_timestamp(row[0])
        ts[i] = last_t
        try:
            v = float(row[1])
            vs[i] = v if math.isfinite(v) else math.nan
        except (ValueError, IndexError):
            vs[i] = math.nan
    return rows, ts, vs


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_time(text: str) -> bool:
    try:
        parse_timestamp(text)
    except ValueError:
        return False
    return True
