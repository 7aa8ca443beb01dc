"""Evaluation of a folder of labelled series with the KPI protocol (``aiops eval labelled``).

Input: every ``*.csv`` and ``*.csv.gz`` file of a folder, sorted by name, with columns
``timestamp,value,label`` (timestamps in unix seconds or ISO 8601, labels 0 or 1; a header
naming the columns is optional). Each series is scored by the daemon's own rule engine
(:func:`aiops.pipeline.scoring.score_series`: detector, hit window, alert state machine), its
points fed in file order, gaps kept. The protocol is the one that results on the web-service
KPIs of the AIOps Challenge 2018 are usually reported with
(``shared/datasets/kpi/SOURCE.md``):

1. **Re-grid.** A series' interval is the most common positive difference between
   consecutive sorted timestamps (the smallest among equally common ones). A point at time
   ``t`` falls in slot ``round((t - t_first) / interval)`` (ties to even), with ``t_first``
   the series' earliest time. When several points fall in one slot, the first in file
   order counts: its label, score and alert; the others are ignored. A slot without a
   point is normal (label 0) and never alarms.
2. **Segments.** A labelled segment is a maximal run of consecutive label-1 slots. It is
   detected, all of its slots true positives, when an alarm lies in its first ``k + 1``
   slots (delay ``k`` = :data:`DELAY` = 7: slots ``start .. start + 7``, and only inside
   the segment); otherwise all of its slots are false negatives. Each alarm on a label-0
   slot is one false positive.
3. **Pooling.** Precision, recall and F1 are computed from TP, FP and FN summed over all
   series (not averaged per series).
4. **Two views.** *Best F1*: an alarm is a slot whose score is at or above one threshold,
   the same for all series, chosen to maximize the pooled F1 (tuned on the labels, as the
   literature reports; among equal F1 the highest threshold). *Own alerts*: an alarm is a
   slot where the daemon's alert started firing (no tuning).
5. **Warm-up.** With ``warmup = F`` (``0 <= F < 1``), the first ``floor(F * slots)`` slots
   of each series are streamed through the detector as usual but not evaluated: their
   labels, alarms and scores are ignored. A segment cut by that boundary counts from the
   boundary on, and its first ``k + 1`` slots are counted from there.

A series with nothing to find and no alarm has no F1 (``nan``, shown as ``n/a``).

>>> labels = np.array([0, 1, 1, 1, 0, 0, 1, 1, 0], dtype=bool)
>>> alarms = np.array([0, 0, 0, 1, 0, 1, 0, 0, 0], dtype=bool)
>>> c = count_alarms(labels, alarms)  # first segment found (3 TP), second missed (2 FN)
>>> c.tp, c.fp, c.fn, c.detected, c.segments, round(c.f1, 3)
(3, 1, 2, 1, 2, 0.667)
"""

from __future__ import annotations

import csv
import functools
import gzip
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from aiops.pipeline.detector import DEFAULT_THRESHOLD
from aiops.pipeline.scoring import DEFAULT_DETECTOR, score_series
from aiops.timeutil import parse_timestamps
from aiops.types import BoolArray, FloatArray, IntArray

if TYPE_CHECKING:
    from aiops.config.models import Retrain

__all__ = [
    "DELAY",
    "Counts",
    "Grid",
    "LabelledReport",
    "LabelledSeries",
    "ScoredFile",
    "ScoredFolder",
    "SeriesResult",
    "count_alarms",
    "evaluate",
    "files_in",
    "plot_series",
    "read_labelled_csv",
    "regrid",
    "score_file",
    "score_folder",
    "segments",
    "sweep_f1",
    "warmup_slots",
]

#: Alarm delay ``k`` of the KPI protocol: a segment counts as detected when an alarm lies in
#: its first ``k + 1`` slots (AIOps Challenge 2018, ``shared/datasets/kpi/SOURCE.md``).
DELAY = 7
#: A file whose timestamps span more slots than this many per point is refused: one stray
#: timestamp (a year off) would otherwise make a grid of millions of empty slots.
MAX_SLOTS_PER_POINT = 1000
_COLUMNS = ("timestamp", "value", "label")


# --- counting ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """Slot counts of one or more series: the protocol's TP, FP, FN and segments.

    ``tp`` and ``fn`` count the slots of detected and missed segments; ``fp`` the alarms on
    label-0 slots; ``segments`` the labelled segments and ``detected`` those found.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    segments: int = 0
    detected: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
            self.segments + other.segments,
            self.detected + other.detected,
        )

    @property
    def precision(self) -> float:
        """``tp / (tp + fp)``; ``nan`` without any alarm."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else math.nan

    @property
    def recall(self) -> float:
        """``tp / (tp + fn)``; ``nan`` without any labelled slot."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else math.nan

    @property
    def f1(self) -> float:
        """``2 tp / (2 tp + fp + fn)``; ``nan`` with nothing to find and no alarm."""
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else math.nan


def segments(labels: BoolArray) -> tuple[IntArray, IntArray]:
    """Starts and ends (exclusive) of the maximal runs of ``True`` in ``labels``.

    >>> starts, ends = segments(np.array([1, 1, 0, 0, 1, 0, 1], dtype=bool))
    >>> starts.tolist(), ends.tolist()
    ([0, 4, 6], [2, 5, 7])
    """
    edges = np.diff(np.r_[np.int8(0), np.asarray(labels, dtype=np.int8), np.int8(0)])
    starts = np.flatnonzero(edges == 1).astype(np.int64)
    ends = np.flatnonzero(edges == -1).astype(np.int64)
    return starts, ends


def _early_stops(starts: IntArray, ends: IntArray, delay: int) -> IntArray:
    stops: IntArray = np.minimum(ends, starts + delay + 1)
    return stops


def _bounds(starts: IntArray, stops: IntArray) -> IntArray:
    # reduceat over [start_0, stop_0, start_1, stop_1, ...]: the even results reduce exactly
    # each segment's early slots, because segments are separated by at least one slot.
    idx = np.empty(2 * len(starts), dtype=np.int64)
    idx[0::2] = starts
    idx[1::2] = stops
    return idx


def _early_any(alarms: BoolArray, starts: IntArray, stops: IntArray) -> BoolArray:
    if len(starts) == 0:
        return np.zeros(0, dtype=bool)
    padded = np.r_[np.asarray(alarms, dtype=bool), False]
    hit: BoolArray = np.logical_or.reduceat(padded, _bounds(starts, stops))[0::2]
    return hit


def _early_max(scores: FloatArray, starts: IntArray, stops: IntArray) -> FloatArray:
    if len(starts) == 0:
        return np.zeros(0)
    padded = np.r_[np.asarray(scores, dtype=np.float64), math.nan]
    # fmax skips NaN (a slot without a score) unless every early slot lacks one.
    best: FloatArray = np.fmax.reduceat(padded, _bounds(starts, stops))[0::2]
    return best


def count_alarms(labels: BoolArray, alarms: BoolArray, *, delay: int = DELAY) -> Counts:
    """The protocol's counts of one series' slots, given an alarm flag per slot.

    >>> labels = np.r_[np.zeros(2), np.ones(10), np.zeros(2)].astype(bool)
    >>> late = np.zeros(14, dtype=bool)
    >>> late[2 + 8] = True  # the segment's 9th slot: too late, and not a false positive
    >>> c = count_alarms(labels, late)
    >>> c.tp, c.fp, c.fn
    (0, 0, 10)
    """
    labels = np.asarray(labels, dtype=bool)
    alarms = np.asarray(alarms, dtype=bool)
    if labels.shape != alarms.shape:
        raise ValueError(f"labels and alarms differ in shape: {labels.shape}, {alarms.shape}")
    starts, ends = segments(labels)
    hit = _early_any(alarms, starts, _early_stops(starts, ends, delay))
    lengths = ends - starts
    return Counts(
        tp=int(lengths[hit].sum()),
        fp=int((alarms & ~labels).sum()),
        fn=int(lengths[~hit].sum()),
        segments=len(starts),
        detected=int(hit.sum()),
    )


def sweep_f1(
    series: Sequence[tuple[BoolArray, FloatArray]], *, delay: int = DELAY
) -> tuple[float, Counts]:
    """The one threshold over all series that maximizes the pooled F1, and its counts.

    ``series`` holds ``(labels, scores)`` per series (one of each per slot; a NaN score never
    alarms). An alarm is ``score >= threshold``. A segment is detected exactly when the
    threshold is at most the highest score of its first ``delay + 1`` slots, and a label-0
    slot is a false positive when its score reaches the threshold, so one sort of these
    candidates and cumulative sums give TP and FP at every distinct candidate value:
    ``O(n log n)``, no loop over thresholds. Among equal F1 the highest threshold wins; when
    nothing scores better than alarming nowhere, the threshold is ``inf``.

    >>> labels = np.array([0, 1, 1, 0, 0, 0], dtype=bool)
    >>> scores = np.array([0.2, 0.9, 0.1, 0.95, 0.5, 0.3])
    >>> thr, c = sweep_f1([(labels, scores)])
    >>> thr, c.tp, c.fp, c.fn  # 0.9 finds the segment, with one false alarm at 0.95
    (0.9, 2, 1, 0)
    """
    seg_max, seg_len, normal = [], [], []
    for labels, scores in series:
        labels = np.asarray(labels, dtype=bool)
        scores = np.asarray(scores, dtype=np.float64)
        starts, ends = segments(labels)
        seg_max.append(_early_max(scores, starts, _early_stops(starts, ends, delay)))
        seg_len.append(ends - starts)
        s = scores[~labels]
        normal.append(s[~np.isnan(s)])
    maxima = np.concatenate(seg_max) if seg_max else np.zeros(0)
    lengths = np.concatenate(seg_len) if seg_len else np.zeros(0, dtype=np.int64)
    positives = int(lengths.sum())
    findable = ~np.isnan(maxima)
    fp_scores = np.concatenate(normal) if normal else np.zeros(0)

    values = np.r_[maxima[findable], fp_scores]
    n_seg = int(findable.sum())
    tp_step = np.r_[lengths[findable], np.zeros(len(fp_scores), dtype=np.int64)]
    fp_step = np.r_[np.zeros(n_seg, dtype=np.int64), np.ones(len(fp_scores), dtype=np.int64)]
    order = np.argsort(-values, kind="stable")
    ranked = values[order]
    # A threshold equal to a value alarms on every candidate holding it: the tie run's end.
    ends = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True]) if len(ranked) else order

    def cumulative(step: IntArray) -> IntArray:
        out: IntArray = np.r_[0, np.cumsum(step[order])[ends]].astype(np.int64)
        return out

    thresholds = np.r_[math.inf, ranked[ends]]
    tp, fp = cumulative(tp_step), cumulative(fp_step)
    detected = cumulative((tp_step > 0).astype(np.int64))
    denominator = tp + fp + positives  # 2 tp + fp + fn
    f1 = np.divide(2.0 * tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)
    k = int(np.argmax(f1))  # the first maximum: the highest threshold among equal F1
    counts = Counts(
        tp=int(tp[k]),
        fp=int(fp[k]),
        fn=positives - int(tp[k]),
        segments=len(lengths),
        detected=int(detected[k]),
    )
    return float(thresholds[k]), counts


# --- reading and re-gridding -------------------------------------------------------------


@dataclass(frozen=True)
class LabelledSeries:
    """One file's valid points, in file order, and what was wrong with the rest.

    ``bad_rows``: rows dropped (too few columns, a timestamp that does not parse, a label
    other than 0 or 1). ``missing_values``: kept rows whose value is empty, not a number or
    infinite; they are fed as missing points (NaN), as the daemon sees a scrape gap.
    ``error``: why the whole file could not be read (then it has no points).
    """

    name: str
    timestamps: FloatArray
    values: FloatArray
    labels: BoolArray
    bad_rows: int = 0
    missing_values: int = 0
    error: str = ""

    def __len__(self) -> int:
        return len(self.timestamps)


def _open(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _floats(texts: list[str]) -> FloatArray:
    try:
        return np.fromiter(map(float, texts), np.float64, len(texts))
    except ValueError:
        return np.fromiter(map(_float_or_nan, texts), np.float64, len(texts))


def _float_or_nan(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _column_positions(first: list[str]) -> tuple[tuple[int, int, int], bool]:
    """Column positions and whether ``first`` is a header row."""
    names = [c.strip().lower() for c in first]
    if all(c in names for c in _COLUMNS):
        t, v, lab = (names.index(c) for c in _COLUMNS)
        return (t, v, lab), True
    _, parsed = parse_timestamps(first[:1])
    return (0, 1, 2), not bool(parsed[0])


def read_labelled_csv(path: Path) -> LabelledSeries:
    """Read one ``timestamp,value,label`` file (``.gz`` is decompressed); never raises.

    A header is recognised by its column names (any order) or by a first field that is
    not a timestamp; without one the columns are taken in that order. Bad rows are dropped
    and counted; empty values kept as missing (see :class:`LabelledSeries`). A file that
    cannot be read at all (unreadable, not gzip, not UTF-8) comes back empty with its
    ``error``.
    """
    name = path.name
    try:
        with _open(path) as f:
            rows = [r for r in csv.reader(f) if r]
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        empty = np.zeros(0)
        return LabelledSeries(name, empty, empty, np.zeros(0, bool), error=str(exc))
    if not rows:
        return LabelledSeries(name, np.zeros(0), np.zeros(0), np.zeros(0, bool))
    (it, iv, il), header = _column_positions(rows[0])
    if header:
        rows = rows[1:]
    width = max(it, iv, il) + 1
    complete = np.fromiter((len(r) >= width for r in rows), bool, len(rows))
    ts, parsed = parse_timestamps([r[it] if len(r) > it else "" for r in rows])
    labels = _floats([r[il] if len(r) > il else "" for r in rows])
    values = _floats([(r[iv] or "nan") if len(r) > iv else "nan" for r in rows])
    good = complete & parsed & np.isfinite(ts) & ((labels == 0) | (labels == 1))
    values = values[good]
    values[~np.isfinite(values)] = np.nan
    return LabelledSeries(
        name=name,
        timestamps=ts[good],
        values=values,
        labels=labels[good] == 1,
        bad_rows=int(len(rows) - good.sum()),
        missing_values=int(np.isnan(values).sum()),
    )


@dataclass(frozen=True)
class Grid:
    """One series on its slot grid: slot ``i`` is time ``start + i * interval``.

    Per slot: the label, whether a point landed there, and that point's value, score and
    alert flag (NaN, NaN and False in slots without a point).
    """

    start: float
    interval: float
    labels: BoolArray
    present: BoolArray
    values: FloatArray
    scores: FloatArray
    alerts: BoolArray

    @classmethod
    def empty(cls) -> Grid:
        """A grid of no slots."""
        f, b = np.zeros(0), np.zeros(0, dtype=bool)
        return cls(0.0, 1.0, b, b, f, f, b)

    def __len__(self) -> int:
        return len(self.labels)

    def tail(self, first: int) -> Grid:
        """The slots from ``first`` on (the evaluated part after a warm-up)."""
        return Grid(
            self.start + first * self.interval,
            self.interval,
            self.labels[first:],
            self.present[first:],
            self.values[first:],
            self.scores[first:],
            self.alerts[first:],
        )

    def times(self) -> FloatArray:
        """Each slot's time in unix seconds."""
        out: FloatArray = self.start + np.arange(len(self), dtype=np.float64) * self.interval
        return out


def regrid(
    timestamps: FloatArray,
    labels: BoolArray,
    values: FloatArray,
    scores: FloatArray,
    alerts: BoolArray,
) -> Grid:
    """Place one series' points (in file order) on the grid of its most common interval.

    >>> t = np.array([0.0, 60, 60, 180, 240])  # a duplicate at 60, a missing slot at 120
    >>> g = regrid(t, np.array([0, 1, 0, 1, 0], bool), np.arange(5.0), np.arange(5.0) / 10,
    ...            np.zeros(5, bool))
    >>> g.interval, g.labels.astype(int).tolist(), g.scores.tolist()
    (60.0, [0, 1, 0, 1, 0], [0.0, 0.1, nan, 0.3, 0.4])
    """
    t = np.asarray(timestamps, dtype=np.float64)
    if len(t) == 0:
        return Grid.empty()
    start = float(t.min())
    steps = np.diff(np.sort(t))
    steps = steps[steps > 0]
    interval = 1.0
    if len(steps):
        distinct, counts = np.unique(steps, return_counts=True)
        interval = float(distinct[np.argmax(counts)])
    slot = np.rint((t - start) / interval).astype(np.int64)
    n_slots = int(slot.max()) + 1
    if n_slots > MAX_SLOTS_PER_POINT * len(t):
        msg = (
            f"timestamps span {n_slots:,} slots of {interval:g} s for {len(t):,} points "
            f"(from {start:.0f} to {float(t.max()):.0f})"
        )
        raise ValueError(msg)
    used, first = np.unique(slot, return_index=True)  # first point in file order per slot

    def floats(column: FloatArray) -> FloatArray:
        out = np.full(n_slots, math.nan)
        out[used] = np.asarray(column, dtype=np.float64)[first]
        return out

    def flags(column: BoolArray) -> BoolArray:
        out = np.zeros(n_slots, dtype=bool)
        out[used] = np.asarray(column, dtype=bool)[first]
        return out

    present = np.zeros(n_slots, dtype=bool)
    present[used] = True
    return Grid(
        start=start,
        interval=interval,
        labels=flags(labels),
        present=present,
        values=floats(values),
        scores=floats(scores),
        alerts=flags(alerts),
    )


def warmup_slots(warmup: float, n_slots: int) -> int:
    """``floor(warmup * n_slots)``: the slots streamed but not evaluated.

    >>> warmup_slots(0.5, 7), warmup_slots(0.29, 100), warmup_slots(0.0, 10)
    (3, 29, 0)
    """
    if not 0 <= warmup < 1:
        raise ValueError(f"warmup must be in [0, 1), not {warmup}")
    # Rounded first so that 0.29 * 100 (28.999999999999996 in binary) floors to 29.
    return math.floor(round(warmup * n_slots, 6))


# --- scoring a folder --------------------------------------------------------------------


@dataclass(frozen=True)
class ScoredFile:
    """One file read and scored: its grid, what its input held, and the scoring time.

    ``seconds`` is the CPU time of the process in :func:`~aiops.pipeline.scoring.score_series`
    (detector and post-rules), so other load on the machine does not inflate it.
    """

    name: str
    points: int
    bad_rows: int
    missing_values: int
    seconds: float
    grid: Grid = field(repr=False)
    error: str = ""
    #: With a retrain policy: what retraining did (trainings, promoted, rejected, ...).
    retrain: Mapping[str, int] = field(default_factory=dict)


def files_in(data_dir: Path) -> list[Path]:
    """The ``*.csv`` and ``*.csv.gz`` files of ``data_dir`` (not recursive), sorted by name."""
    found = [*data_dir.glob("*.csv"), *data_dir.glob("*.csv.gz")]
    return sorted((p for p in found if p.is_file()), key=lambda p: p.name)


def score_file(
    path: Path,
    *,
    detector: str = DEFAULT_DETECTOR,
    params: Mapping[str, Any] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    retrain: Retrain | None = None,
) -> ScoredFile:
    """Read one file, score its points in file order and re-grid it.

    With ``retrain``, the rule retrains as the daemon would
    (:func:`aiops.models.retrain.replay_retrained`). Input problems are reported in the
    result, never raised; a detector's own error (bad parameters) is raised.
    """
    series = read_labelled_csv(path)
    grid, seconds, error = Grid.empty(), 0.0, series.error
    counts: dict[str, int] = {}
    if len(series):
        started = time.process_time()
        if retrain is None:
            out = score_series(
                series.timestamps,
                series.values,
                detector=detector,
                params=params,
                threshold=threshold,
            )
        else:
            from aiops.models.retrain import replay_retrained

            out, outcome = replay_retrained(
                series.timestamps,
                series.values,
                retrain=retrain,
                detector=detector,
                params=params,
                threshold=threshold,
            )
            counts = {
                k: int(getattr(outcome, k))
                for k in ("trainings", "promoted", "rejected", "skipped", "failed", "rolled_back")
            }
        seconds = time.process_time() - started
        try:
            grid = regrid(series.timestamps, series.labels, series.values, out.scores, out.alerts)
        except ValueError as exc:
            error = str(exc)
    return ScoredFile(
        name=series.name,
        points=len(series),
        bad_rows=series.bad_rows,
        missing_values=series.missing_values,
        seconds=seconds,
        grid=grid,
        error=error,
        retrain=counts,
    )


@dataclass(frozen=True)
class ScoredFolder:
    """Every file of a folder scored with one detector setting (evaluate it any way)."""

    data_dir: Path
    detector: str
    params: Mapping[str, Any]
    threshold: float
    files: tuple[ScoredFile, ...]
    wall_seconds: float
    jobs: int = 1
    retrain: Retrain | None = None

    @property
    def points(self) -> int:
        """Valid points read over all files."""
        return sum(f.points for f in self.files)

    @property
    def detector_seconds(self) -> float:
        """CPU time spent in :func:`~aiops.pipeline.scoring.score_series`, summed over files."""
        return sum(f.seconds for f in self.files)

    def file(self, name: str) -> ScoredFile:
        """The scored file called ``name``."""
        for f in self.files:
            if f.name == name:
                return f
        raise KeyError(name)


def score_folder(
    data_dir: Path,
    *,
    detector: str | None = None,
    params: Mapping[str, Any] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    jobs: int = 1,
    progress: bool = True,
    retrain: Retrain | None = None,
) -> ScoredFolder:
    """Score every file of ``data_dir`` (see :func:`files_in`), in ``jobs`` processes.

    Raises ``ValueError`` when the folder holds no such file or ``jobs < 1``; a progress
    bar goes to stderr unless ``progress`` is false.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    paths = files_in(data_dir)
    if not paths:
        raise ValueError(f"no *.csv or *.csv.gz files in {data_dir}")
    from tqdm import tqdm

    name = detector or DEFAULT_DETECTOR
    fn = functools.partial(
        score_file, detector=name, params=dict(params or {}), threshold=threshold, retrain=retrain
    )
    started = time.perf_counter()
    results: list[ScoredFile | None] = [None] * len(paths)
    bar_args: dict[str, Any] = {"total": len(paths), "desc": "labelled", "unit": "file"}
    if jobs == 1:
        with tqdm(disable=not progress, **bar_args) as bar:
            for i, path in enumerate(paths):
                results[i] = fn(path)
                bar.update()
    else:
        with ProcessPoolExecutor(max_workers=min(jobs, len(paths))) as ex:
            # Submit (and so fork the workers) before tqdm starts its monitor thread.
            futures = {ex.submit(fn, path): i for i, path in enumerate(paths)}
            with tqdm(disable=not progress, **bar_args) as bar:
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.update()
    files = tuple(r for r in results if r is not None)
    return ScoredFolder(
        data_dir=data_dir,
        detector=name,
        params=dict(params or {}),
        threshold=threshold,
        files=files,
        wall_seconds=time.perf_counter() - started,
        jobs=jobs,
        retrain=retrain,
    )


# --- the report --------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesResult:
    """One file's figures: its own alerts, and alarms at the pooled best threshold."""

    name: str
    points: int
    bad_rows: int
    missing_values: int
    slots: int
    evaluated_slots: int
    own: Counts
    best: Counts
    error: str = ""


def _worst_first(r: SeriesResult) -> tuple[float, float, str]:
    def key(f1: float) -> float:
        return math.inf if math.isnan(f1) else f1  # nothing to find, nothing raised: last

    return key(r.own.f1), key(r.best.f1), r.name


@dataclass(frozen=True)
class LabelledReport:
    """The pooled figures of both views and one row per file, worst first.

    ``best_threshold`` is the pooled best threshold (``inf``: alarming nowhere is best);
    ``best`` and ``own`` the pooled counts at it and at the daemon's own alerts.
    """

    data_dir: Path
    detector: str
    params: Mapping[str, Any]
    threshold: float
    warmup: float
    delay: int
    best_threshold: float
    best: Counts
    own: Counts
    series: tuple[SeriesResult, ...]
    detector_seconds: float
    wall_seconds: float
    jobs: int
    #: The retrain policy replayed (None: models learned online only) and its totals.
    retrain: Retrain | None = None
    retrain_counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def points(self) -> int:
        """Valid points read over all files."""
        return sum(s.points for s in self.series)

    @property
    def points_per_second(self) -> float:
        """Replay speed through the rule engine, per process, by CPU time (``nan``: none)."""
        return self.points / self.detector_seconds if self.detector_seconds else math.nan

    def to_text(self) -> str:
        """The report as printed by ``aiops eval labelled`` (Markdown tables)."""
        warm = (
            f"the first {self.warmup:.0%} of each series' slots streamed, not evaluated"
            if self.warmup
            else "none"
        )
        params = f" {dict(self.params)}" if self.params else ""
        lines = [
            f"Labelled evaluation of {self.data_dir}: {len(self.series)} series, "
            f"{self.points:,} points; detector {self.detector}{params}, "
            f"alert threshold {self.threshold:g}",
            f"Protocol: re-gridded; delay {self.delay} (an alarm in a segment's first "
            f"{self.delay + 1} slots finds it); pooled over series; warm-up: {warm}",
        ]
        lines += self._input_notes()
        lines += self._retrain_notes()
        lines += [
            "",
            "| view | threshold | precision | recall | F1 | TP | FP | FN | segments detected |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            self._view_row(
                "best F1 (one threshold tuned on labels)", self.best_threshold, self.best
            ),
            self._view_row("own alerts (no tuning)", self.threshold, self.own),
            "",
            "Per series, worst first (detected, FP, own F1: the daemon's own alerts; "
            "best F1: at the pooled best threshold):",
            "",
            "| series | points | segments | detected | FP | own F1 | best F1 |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for s in self.series:
            lines.append(
                f"| {s.name} | {s.points:,} | {s.own.segments} | {s.own.detected} | "
                f"{s.own.fp:,} | {_fmt(s.own.f1)} | {_fmt(s.best.f1)} |"
            )
        lines += [
            "",
            f"Scoring: {self.detector_seconds:.1f} s of CPU ({self.points_per_second:,.0f} "
            f"points/s per process); wall {self.wall_seconds:.1f} s with {self.jobs} job(s).",
        ]
        return "\n".join(lines)

    def _retrain_notes(self) -> list[str]:
        r = self.retrain
        if r is None:
            return []
        from aiops.timeutil import format_duration

        when = (
            f"cron {r.cron!r}"
            if r.cron
            else (f"every {format_duration(r.every)}" if r.every else "no schedule")
        )
        drift = ", and on drift" if r.on_drift else ""
        c = self.retrain_counts
        done = ", ".join(
            f"{c.get(k, 0)} {k.replace('_', ' ')}"
            for k in ("trainings", "promoted", "rejected", "skipped", "failed", "rolled_back")
        )
        return [
            f"Retraining: {when}{drift} on the last {format_duration(r.window)} "
            f"(shadow {format_duration(r.shadow)}, max alert rate ratio "
            f"{r.max_alert_rate_ratio:g}); over all series: {done}"
        ]

    def _input_notes(self) -> list[str]:
        notes = []
        bad = [s for s in self.series if s.bad_rows]
        if bad:
            where = ", ".join(f"{s.name}: {s.bad_rows:,}" for s in bad[:5])
            more = f", and {len(bad) - 5} more files" if len(bad) > 5 else ""
            total = sum(s.bad_rows for s in bad)
            notes.append(f"Input: {total:,} bad rows skipped ({where}{more})")
        missing = sum(s.missing_values for s in self.series)
        if missing:
            notes.append(f"Input: {missing:,} empty or non-numeric values fed as missing points")
        notes += [f"Input: {s.name} not evaluated: {s.error}" for s in self.series if s.error]
        return notes

    @staticmethod
    def _view_row(view: str, threshold: float, c: Counts) -> str:
        thr = "none" if math.isinf(threshold) else f"{threshold:.8g}"
        return (
            f"| {view} | {thr} | {_fmt(c.precision)} | {_fmt(c.recall)} | {_fmt(c.f1)} | "
            f"{c.tp:,} | {c.fp:,} | {c.fn:,} | {c.detected}/{c.segments} |"
        )

    def write_csv(self, path: Path) -> None:
        """Write the per-series table, worst first (an F1 without a value is empty)."""
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(
                ["series", "points", "bad_rows", "segments", "detected", "fp", "own_f1", "best_f1"]
            )
            for s in self.series:
                w.writerow(
                    [
                        s.name,
                        s.points,
                        s.bad_rows,
                        s.own.segments,
                        s.own.detected,
                        s.own.fp,
                        _csv_float(s.own.f1),
                        _csv_float(s.best.f1),
                    ]
                )


def _fmt(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f}"


def _csv_float(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.6f}"


def _evaluated(files: Sequence[ScoredFile], warmup: float) -> Iterator[tuple[ScoredFile, Grid]]:
    for f in files:
        yield f, f.grid.tail(warmup_slots(warmup, len(f.grid)))


def evaluate(scored: ScoredFolder, *, warmup: float = 0.0, delay: int = DELAY) -> LabelledReport:
    """Apply the protocol (module docstring) to a scored folder; both views, pooled."""
    parts = list(_evaluated(scored.files, warmup))
    threshold, best = sweep_f1([(g.labels, g.scores) for _, g in parts], delay=delay)
    rows = []
    for f, g in parts:
        rows.append(
            SeriesResult(
                name=f.name,
                points=f.points,
                bad_rows=f.bad_rows,
                missing_values=f.missing_values,
                slots=len(f.grid),
                evaluated_slots=len(g),
                own=count_alarms(g.labels, g.alerts, delay=delay),
                best=count_alarms(g.labels, g.scores >= threshold, delay=delay),
                error=f.error,
            )
        )
    return LabelledReport(
        data_dir=scored.data_dir,
        detector=scored.detector,
        params=scored.params,
        threshold=scored.threshold,
        warmup=warmup,
        delay=delay,
        best_threshold=threshold,
        best=best,
        own=sum((r.own for r in rows), Counts()),
        series=tuple(sorted(rows, key=_worst_first)),
        detector_seconds=scored.detector_seconds,
        wall_seconds=scored.wall_seconds,
        jobs=scored.jobs,
        retrain=scored.retrain,
        retrain_counts={
            k: sum(f.retrain.get(k, 0) for f in scored.files)
            for k in {k for f in scored.files for k in f.retrain}
        },
    )


# --- plot --------------------------------------------------------------------------------


def plot_series(scored: ScoredFolder, report: LabelledReport, path: Path, name: str) -> None:
    """Draw one series to a PNG: values with labelled segments, score with thresholds.

    The top panel shows the values with labelled segments shaded (at least a few pixels
    wide, so one-slot segments show) and their points in orange, and the daemon's alerts
    marked; the bottom panel the score on a logit axis (so 0.99 and 0.9999 stand apart)
    with the alert threshold and the pooled best threshold. A warm-up is shaded grey.
    Needs matplotlib (the ``plot`` extra); raises ``ImportError`` without it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    f = scored.file(name)
    row = next(r for r in report.series if r.name == name)
    g = f.grid
    seconds = g.times()

    def when(t: FloatArray) -> npt.NDArray[np.datetime64]:
        return np.rint(t).astype(np.int64).astype("datetime64[s]")

    times = when(seconds)
    first = len(g) - row.evaluated_slots
    labelled = g.labels.copy()
    labelled[:first] = False
    starts, ends = segments(labelled)
    alerts = np.flatnonzero(g.alerts)

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(14, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    top.plot(times, g.values, lw=0.6, color="tab:blue", label="value")
    top.scatter(
        times[labelled],
        g.values[labelled],
        s=4,
        color="tab:orange",
        zorder=2,
        label="labelled anomaly",
    )
    min_width = 0.002 * max(float(seconds[-1] - seconds[0]), g.interval) if len(g) else 0.0
    for a, b in zip(
        seconds[starts].tolist(), (seconds[ends - 1] + g.interval).tolist(), strict=True
    ):
        pad = max(0.0, (min_width - (b - a)) / 2)
        for ax in (top, bottom):
            ax.axvspan(
                when(np.array([a - pad]))[0],
                when(np.array([b + pad]))[0],
                color="tab:orange",
                alpha=0.25,
                lw=0,
            )
    if first:
        for ax in (top, bottom):
            ax.axvspan(times[0], times[first - 1], color="0.85", alpha=0.6, lw=0, zorder=0)
    top.scatter(
        times[alerts], g.values[alerts], s=30, marker="v", color="tab:red", zorder=3, label="alert"
    )
    top.set_ylabel("value")
    top.legend(loc="upper left", fontsize=8, ncols=3)

    eps = 1e-5
    bottom.plot(times, np.clip(g.scores, eps, 1 - eps), lw=0.6, color="tab:gray", label="score")
    bottom.set_yscale("logit")
    ticks = [1e-4, 0.01, 0.5, 0.99, 0.9999]
    bottom.set_yticks(ticks, labels=[f"{t:g}" for t in ticks])
    bottom.minorticks_off()
    bottom.set_ylim(eps / 2, 1 - eps / 2)
    bottom.axhline(report.threshold, color="tab:red", lw=1, label=f"alert {report.threshold:g}")
    if math.isfinite(report.best_threshold):
        best = min(max(report.best_threshold, eps), 1 - eps)
        bottom.axhline(
            best, color="tab:green", lw=1, ls="--", label=f"best {report.best_threshold:.6g}"
        )
    bottom.scatter(
        times[alerts],
        np.clip(g.scores[alerts], eps, 1 - eps),
        s=30,
        marker="v",
        color="tab:red",
        zorder=3,
    )
    bottom.set_ylabel("score (logit axis)")
    bottom.legend(loc="lower left", fontsize=8, ncols=3)
    locator = mdates.AutoDateLocator(maxticks=12)  # type: ignore[no-untyped-call]
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    warm = f"; grey: first {report.warmup:.0%}, not evaluated" if first else ""
    top.set_title(
        f"{name}: own-alert F1 {_fmt(row.own.f1)}, best-threshold F1 {_fmt(row.best.f1)} "
        f"({row.own.detected}/{row.own.segments} segments found, {row.own.fp} false alerts; "
        f"{report.detector}{warm})",
        fontsize=10,
    )
    try:
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
