"""NAB v1.1 scoring: the Numenta Anomaly Benchmark's window-weighted score, vectorized.

This re-implements the scoring of NAB v1.1 (``nab/sweeper.py``, ``nab/optimizer.py`` and
the normalization in ``nab/runner.py`` of numenta/NAB) so that a detector's numbers here are
the numbers NAB would publish for it. The rules, per data file of ``n`` rows:

- The first ``min(floor(0.15 * n), 0.15 * 5000)`` rows are the probation period: nothing
  in it is scored (at most 750 rows).
- Each labelled window ``[a, b]`` (inclusive rows, width ``w = b - a + 1``) is worth
  ``tpWeight`` times the weight of its *earliest* detection at row ``i``:
  ``S(-(b - i + 1) / w) / S(-1)``, where ``S(x) = 2 / (1 + exp(5 x)) - 1`` is NAB's scaled
  sigmoid. A detection at the window's first row earns exactly ``tpWeight``; later ones
  less; further detections in the same window add nothing. A window without a detection
  costs ``fnWeight``.
- A detection outside every window costs ``fpWeight`` times ``S((i - b) / (w - 1))``,
  measured from the end ``b`` of the closest preceding window (``S`` is taken as ``-1``
  beyond 3 window widths), or a full ``-fpWeight`` when no window precedes it.
- A detection is ``score >= threshold``. One threshold serves the whole corpus; NAB picks
  it per profile by sweeping every distinct score value (plus "nothing detected") and
  keeping the best total, the highest threshold among equal totals.
- The corpus total is normalized: ``100 * (raw - null) / (perfect - null)``, where the
  null detector (never detects) scores ``-fnWeight`` per window and the perfect detector
  ``tpWeight`` per window.

The profiles (``config/profiles.json``) weigh these terms: ``standard`` (FP 0.11),
``reward_low_FP_rate`` (FP 0.22) and ``reward_low_FN_rate`` (FN 2.0).

Upstream behaviours kept on purpose, because the published scoreboard depends on them:

- The row counts ``tp``/``fp``/``tn``/``fn`` are NAB's: they count scored *rows* (a window
  of 400 rows with one detection is 1 TP row and 399 FN rows). Window-level counts are
  :attr:`NabResult.detected` and :attr:`NabResult.missed`.
- A window that lies wholly inside the probation period is not scored at all (neither TP
  nor FN), but still counts towards the perfect score. NAB v1.1 has no such window.

Not upstream: a NaN score is never a detection (NAB would sort it arbitrarily), and a
one-row window, for which NAB divides by zero, charges full ``-fpWeight`` to the
detections after it.

>>> f = NabFile.from_arrays("toy.csv", np.arange(100.0), np.zeros(100), [(40, 49)])
>>> corpus = NabCorpus((f,))
>>> f.probation
15
>>> det = np.zeros(100, dtype=bool)
>>> det[[45, 47, 90]] = True
>>> r = score_detections(corpus, {"toy.csv": det}, "standard")
>>> round(r.raw, 4), r.detected, r.missed, r.fp  # row 45: 0.8598; row 90: -0.11
(0.7498, 1, 0, 1)
>>> round(r.score, 2)  # null -1, perfect 1
87.49
"""

from __future__ import annotations

import csv
import json
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aiops.timeutil import parse_timestamp
from aiops.types import BoolArray, FloatArray, IntArray

__all__ = [
    "NAB_PROFILES",
    "NOTHING_DETECTED",
    "PROBATION_PERCENT",
    "EvaluationReport",
    "FileResult",
    "NabCorpus",
    "NabFile",
    "NabResult",
    "Profile",
    "ProfileScores",
    "ScoreFile",
    "evaluate",
    "load_corpus",
    "load_detector_results",
    "load_profiles",
    "load_published_thresholds",
    "load_result_scores",
    "probation_length",
    "scaled_sigmoid",
    "score_at_threshold",
    "score_detections",
    "score_profiles",
    "sweep",
    "sweep_curve",
    "sweep_profiles",
]

#: Share of each file that is probation (``probationaryPercent`` in NAB's runner).
PROBATION_PERCENT = 0.15
#: NAB caps probation at ``PROBATION_PERCENT * PROBATION_CAP_ROWS`` rows (750).
PROBATION_CAP_ROWS = 5000
#: Slope of NAB's scaled sigmoid, ``2 / (1 + exp(SIGMOID_SLOPE * x)) - 1``.
SIGMOID_SLOPE = 5.0
#: Beyond this many window widths after a window, a false positive costs the full weight.
FAR_AFTER_WINDOW = 3.0
#: The threshold reported when detecting nothing scores best (NAB writes 1.1 there).
NOTHING_DETECTED = math.inf


@dataclass(frozen=True)
class Profile:
    """One NAB application profile: the weights of the cost matrix.

    ``tn_weight`` is part of NAB's file format but unused by its score.
    """

    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float
    tn_weight: float = 1.0


#: The three profiles of NAB v1.1 (``config/profiles.json``), in NAB's reporting order.
NAB_PROFILES: Mapping[str, Profile] = {
    p.name: p
    for p in (
        Profile("standard", tp_weight=1.0, fp_weight=0.11, fn_weight=1.0),
        Profile("reward_low_FP_rate", tp_weight=1.0, fp_weight=0.22, fn_weight=1.0),
        Profile("reward_low_FN_rate", tp_weight=1.0, fp_weight=0.11, fn_weight=2.0),
    )
}


def scaled_sigmoid(position: npt.ArrayLike) -> FloatArray:
    """NAB's reward for a detection at a relative ``position`` to a window's right end.

    ``-1`` is the window's left edge (0.98661), ``0`` its right edge (0), positive values lie
    after it (negative rewards), and anything beyond ``3`` is ``-1``.

    >>> scaled_sigmoid([-1.0, -0.5, 0.0, 1.0, 3.5]).round(5).tolist()
    [0.98661, 0.84828, 0.0, -0.98661, -1.0]
    """
    x = np.asarray(position, dtype=np.float64)
    # Clip before exp: positions past the cut-off (inf for one-row windows) would overflow.
    value = 2.0 / (1.0 + np.exp(SIGMOID_SLOPE * np.minimum(x, FAR_AFTER_WINDOW))) - 1.0
    return np.where(x > FAR_AFTER_WINDOW, -1.0, value)


#: The reward of a detection at a window's first row; TP rewards are divided by it.
_MAX_TP = float(scaled_sigmoid(-1.0))


def probation_length(n_rows: int, percent: float = PROBATION_PERCENT) -> int:
    """How many leading rows of an ``n_rows`` file are probation, exactly as NAB rounds.

    NAB skips row ``i`` while ``i < min(floor(percent * n), percent * 5000)``.

    >>> probation_length(4032), probation_length(22695), probation_length(100)
    (604, 750, 15)
    """
    limit = min(math.floor(percent * n_rows), percent * PROBATION_CAP_ROWS)
    return max(0, min(n_rows, math.ceil(limit)))


@dataclass(frozen=True, eq=False)
class NabFile:
    """One labelled series of the corpus.

    ``windows`` is an ``(k, 2)`` array of inclusive ``[first, last]`` row indices, sorted
    and disjoint; ``probation`` is the number of leading rows that are not scored.
    """

    name: str
    timestamps: FloatArray
    values: FloatArray
    windows: IntArray
    probation: int

    def __post_init__(self) -> None:
        n = len(self.timestamps)
        problems: list[str] = []
        if len(self.values) != n:
            problems.append(f"{len(self.values)} values for {n} timestamps")
        w = self.windows
        if w.ndim != 2 or w.shape[1] != 2:
            problems.append(f"windows must have shape (k, 2), not {w.shape}")
        elif len(w):
            if (w[:, 0] > w[:, 1]).any() or w.min() < 0 or w.max() >= n:
                problems.append(f"window rows out of order or outside 0..{n - 1}: {w.tolist()}")
            elif (w[1:, 0] <= w[:-1, 1]).any():
                problems.append(f"windows overlap or are not sorted: {w.tolist()}")
        if not 0 <= self.probation <= n:
            problems.append(f"probation {self.probation} outside 0..{n}")
        if problems:
            msg = f"NAB file {self.name!r}: " + "; ".join(problems)
            raise ValueError(msg)
        # Read-only views: the cached weights must not go stale, and a detector that
        # writes into its input fails loudly instead of corrupting the corpus.
        for attr in ("timestamps", "values", "windows"):
            view = getattr(self, attr).view()
            view.flags.writeable = False
            object.__setattr__(self, attr, view)

    @classmethod
    def from_arrays(
        cls,
        name: str,
        timestamps: npt.ArrayLike,
        values: npt.ArrayLike,
        windows: Iterable[tuple[int, int]] | IntArray = (),
        *,
        probation: int | None = None,
        probation_percent: float = PROBATION_PERCENT,
    ) -> NabFile:
        """Build a file from arrays; ``probation`` defaults to NAB's rule.

        >>> NabFile.from_arrays("a.csv", [0.0, 60.0], [1.0, 2.0]).n_windows
        0
        """
        ts = np.asarray(timestamps, dtype=np.float64)
        vs = np.asarray(values, dtype=np.float64)
        win = np.asarray(list(windows) if not isinstance(windows, np.ndarray) else windows)
        win = win.astype(np.int64).reshape(-1, 2)
        if probation is None:
            probation = probation_length(len(ts), probation_percent)
        return cls(name, ts, vs, win, probation)

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def n_windows(self) -> int:
        """How many labelled windows the file has."""
        return len(self.windows)

    @property
    def scored_windows(self) -> IntArray:
        """The windows that reach past the probation period (the ones NAB scores)."""
        return self.windows[self.windows[:, 1] >= self.probation]

    @cached_property
    def window_of_row(self) -> IntArray:
        """Per row, the index of the window holding it, or ``-1`` outside every window."""
        out = np.full(len(self), -1, dtype=np.int64)
        for k, (a, b) in enumerate(self.windows.tolist()):
            out[a : b + 1] = k
        return out

    @cached_property
    def unit_weights(self) -> FloatArray:
        """Per row, the reward of a detection there before the profile's weights.

        Inside a window: the TP reward (1 at the window's first row, falling towards 0 at
        its last). Outside: the FP penalty (negative), relative to the preceding window.
        """
        n = len(self)
        out = np.full(n, -1.0)
        rows = np.arange(n, dtype=np.float64)
        bounds = self.windows.tolist()
        for k, (a, b) in enumerate(bounds):
            width = b - a + 1
            out[a : b + 1] = scaled_sigmoid(-(b - rows[a : b + 1] + 1) / width) / _MAX_TP
            stop = bounds[k + 1][0] if k + 1 < len(bounds) else n
            after = rows[b + 1 : stop] - b
            out[b + 1 : stop] = scaled_sigmoid(after / (width - 1) if width > 1 else np.inf)
        return out


@dataclass(frozen=True, eq=False)
class NabCorpus:
    """The labelled files, keyed by relative name (``"realKnownCause/nyc_taxi.csv"``).

    ``profiles`` maps a profile name to its weights; ``root`` is the directory the corpus
    was loaded from, if any.
    """

    files: tuple[NabFile, ...]
    profiles: Mapping[str, Profile] = field(default_factory=lambda: dict(NAB_PROFILES))
    root: Path | None = None

    def __post_init__(self) -> None:
        dupes = sorted(n for n, k in Counter(f.name for f in self.files).items() if k > 1)
        if dupes:
            raise ValueError(f"NAB corpus holds duplicate file names: {', '.join(dupes)}")

    @cached_property
    def _by_name(self) -> dict[str, NabFile]:
        return {f.name: f for f in self.files}

    def __getitem__(self, name: str) -> NabFile:
        return self._by_name[name]

    def __iter__(self) -> Iterator[NabFile]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def names(self) -> list[str]:
        """The relative file names, in corpus order."""
        return [f.name for f in self.files]

    @property
    def n_rows(self) -> int:
        """Rows over all files."""
        return sum(len(f) for f in self.files)

    @property
    def n_windows(self) -> int:
        """Labelled windows over all files (NAB's ``tpCount`` for the perfect score)."""
        return sum(f.n_windows for f in self.files)

    def subset(self, names: Iterable[str]) -> NabCorpus:
        """A corpus of only the named files (in the given order), same profiles."""
        return NabCorpus(tuple(self[n] for n in names), self.profiles, self.root)

    def profile(self, profile: Profile | str) -> Profile:
        """Resolve a profile name; an unknown name is an error listing the valid ones."""
        if isinstance(profile, Profile):
            return profile
        try:
            return self.profiles[profile]
        except KeyError:
            valid = ", ".join(self.profiles)
            raise ValueError(f'unknown NAB profile "{profile}"; valid profiles: {valid}') from None

    @cached_property
    def _flat(self) -> _Flat:
        return _Flat.build(self)


@dataclass(frozen=True)
class FileResult:
    """The score of one file at one threshold (NAB's per-file ``*_scores.csv`` row)."""

    name: str
    raw: float
    tp: int
    fp: int
    tn: int
    fn: int
    windows: int
    detected: int
    rows: int


@dataclass(frozen=True)
class NabResult:
    """A detector's corpus score under one profile.

    ``score`` is the normalized NAB score (null detector 0, perfect detector 100); ``raw``
    the sum of the per-file scores; ``tp``/``fp``/``tn``/``fn`` NAB's row counts over the
    scored rows; ``detected``/``missed`` count windows. ``threshold`` is ``None`` when the
    result was scored from detections rather than from scores.
    """

    profile: Profile
    threshold: float | None
    score: float
    raw: float
    null: float
    perfect: float
    tp: int
    fp: int
    tn: int
    fn: int
    windows: int
    detected: int
    files: tuple[FileResult, ...] = field(repr=False)

    @property
    def missed(self) -> int:
        """Scored windows without a detection."""
        return self.windows - self.detected

    def file(self, name: str) -> FileResult:
        """The breakdown of one file."""
        for f in self.files:
            if f.name == name:
                return f
        raise KeyError(name)


@dataclass(frozen=True)
class ProfileScores:
    """One result per profile, in the corpus' profile order."""

    results: Mapping[str, NabResult]

    def __getitem__(self, profile: str) -> NabResult:
        return self.results[profile]

    def __iter__(self) -> Iterator[NabResult]:
        return iter(self.results.values())

    def scores(self) -> dict[str, float]:
        """The normalized score per profile name."""
        return {name: r.score for name, r in self.results.items()}

    def to_markdown(self) -> str:
        """A Markdown table: one row per profile."""
        lines = [
            "| profile | threshold | score | raw | windows detected | FP rows |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, r in self.results.items():
            thr = "alerts" if r.threshold is None else f"{r.threshold:.10g}"
            lines.append(
                f"| {name} | {thr} | {r.score:.2f} | {r.raw:.3f} "
                f"| {r.detected}/{r.windows} | {r.fp} |"
            )
        return "\n".join(lines)


# --- loading -----------------------------------------------------------------------------


def _read_columns(path: Path, wanted: Sequence[str]) -> list[list[str]]:
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path}: empty file, expected a header row") from None
        missing = [c for c in wanted if c not in header]
        if missing:
            msg = f"{path}: missing column(s) {', '.join(missing)}; header is {','.join(header)}"
            raise ValueError(msg)
        idx = [header.index(c) for c in wanted]
        rows = list(reader)
    short = next((n for n, row in enumerate(rows, start=2) if len(row) < len(header)), None)
    if short is not None:
        raise ValueError(f"{path}:{short}: fewer fields than the header's {len(header)}")
    return [[row[i] for row in rows] for i in idx]


def _parse_times(texts: list[str]) -> FloatArray:
    """Timestamps to unix seconds; naive ones are UTC. Vectorized for the common case."""
    if not texts:
        return np.zeros(0)
    try:
        float(texts[0])
    except ValueError:
        pass
    else:
        return np.asarray(texts, dtype=np.float64)
    try:
        with warnings.catch_warnings():
            # numpy warns (and some versions refuse) on zone offsets; parse those one by one.
            warnings.simplefilter("error")
            micros = np.asarray(texts, dtype="datetime64[us]").astype(np.int64)
        return micros / 1e6
    except (ValueError, DeprecationWarning, UserWarning):
        return np.asarray([parse_timestamp(t) for t in texts], dtype=np.float64)


def _parse_floats(texts: list[str], path: Path, column: str) -> FloatArray:
    try:
        return np.asarray(texts, dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: column {column!r} is not numeric: {exc}") from None


def load_profiles(path: Path) -> dict[str, Profile]:
    """Read NAB's ``config/profiles.json`` (``{name: {"CostMatrix": {...}}}``)."""
    raw = json.loads(path.read_text())
    out: dict[str, Profile] = {}
    for name, spec in raw.items():
        try:
            cm = spec["CostMatrix"]
            out[name] = Profile(
                name,
                tp_weight=float(cm["tpWeight"]),
                fp_weight=float(cm["fpWeight"]),
                fn_weight=float(cm["fnWeight"]),
                tn_weight=float(cm.get("tnWeight", 1.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f'{path}: profile "{name}": bad cost matrix ({exc!r})') from None
    return out


def _window_rows(name: str, ts: FloatArray, limits: list[list[str]]) -> IntArray:
    """Map window limit timestamps to inclusive row ranges, as NAB's sweeper walks them.

    The sweeper enters a window at the first row whose timestamp equals its start and
    leaves it at the next row whose timestamp equals its end.
    """
    rows: list[tuple[int, int]] = []
    after = 0
    for start, end in limits:
        t0, t1 = _parse_times([start, end]).tolist()
        hits0 = np.flatnonzero(ts[after:] == t0)
        if len(hits0) == 0:
            raise ValueError(f"{name}: window start {start} is not a row timestamp")
        a = after + int(hits0[0])
        hits1 = np.flatnonzero(ts[a:] == t1)
        if len(hits1) == 0:
            raise ValueError(f"{name}: window end {end} is not a row at or after {start}")
        b = a + int(hits1[0])
        rows.append((a, b))
        after = b + 1
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


def load_corpus(
    data_dir: Path,
    *,
    labels: str = "labels/combined_windows.json",
    probation_percent: float = PROBATION_PERCENT,
) -> NabCorpus:
    """Load the NAB corpus from its root directory (holding ``data/``, ``labels/``, ``config/``).

    Every labelled file of ``labels`` is read from ``data/<name>``: timestamps become unix
    seconds (naive timestamps are UTC), values float64, windows inclusive row ranges.
    Profiles come from ``config/profiles.json`` when present, else :data:`NAB_PROFILES`.
    A labelled file that is missing, or a window timestamp that matches no row, is an error.
    """
    root = Path(data_dir)
    label_path = root / labels
    if not label_path.is_file():
        raise FileNotFoundError(f"NAB labels not found: {label_path} (is {root} the NAB root?)")
    windows: dict[str, list[list[str]]] = json.loads(label_path.read_text())
    files: list[NabFile] = []
    for name in sorted(windows):
        path = root / "data" / name
        if not path.is_file():
            raise FileNotFoundError(f"NAB data file {path} is labelled but missing")
        t_text, v_text = _read_columns(path, ("timestamp", "value"))
        ts = _parse_times(t_text)
        files.append(
            NabFile(
                name=name,
                timestamps=ts,
                values=_parse_floats(v_text, path, "value"),
                windows=_window_rows(name, ts, windows[name]),
                probation=probation_length(len(ts), probation_percent),
            )
        )
    profiles_path = root / "config" / "profiles.json"
    profiles = load_profiles(profiles_path) if profiles_path.is_file() else dict(NAB_PROFILES)
    return NabCorpus(tuple(files), profiles, root)


def load_result_scores(path: Path, column: str = "anomaly_score") -> FloatArray:
    """Read one column (by default the anomaly score) of a NAB result file."""
    path = Path(path)
    (text,) = _read_columns(path, (column,))
    return _parse_floats(text, path, column)


def load_detector_results(
    results_dir: Path, detector: str, corpus: NabCorpus, column: str = "anomaly_score"
) -> dict[str, FloatArray]:
    """Read a detector's published scores for every corpus file.

    NAB stores the scores of ``<category>/<name>.csv`` in
    ``<results_dir>/<detector>/<category>/<detector>_<name>.csv``. Row counts must match
    the corpus.
    """
    out: dict[str, FloatArray] = {}
    for f in corpus:
        category, _, base = f.name.rpartition("/")
        path = Path(results_dir) / detector / category / f"{detector}_{base}"
        scores = load_result_scores(path, column)
        if len(scores) != len(f):
            raise ValueError(f"{path}: {len(scores)} rows, but {f.name} has {len(f)}")
        out[f.name] = scores
    return out


def load_published_thresholds(results_dir: Path, detector: str) -> dict[str, float]:
    """The threshold per profile stored in ``<detector>_<profile>_scores.csv`` (4th column)."""
    out: dict[str, float] = {}
    prefix = f"{detector}_"
    for path in sorted((Path(results_dir) / detector).glob(f"{detector}_*_scores.csv")):
        profile = path.name[len(prefix) : -len("_scores.csv")]
        (text,) = _read_columns(path, ("Threshold",))
        values = {float(t) for t in text if t.strip()}
        if len(values) != 1:
            raise ValueError(f"{path}: expected one threshold, found {sorted(values)}")
        out[profile] = values.pop()
    return out


# --- scoring -----------------------------------------------------------------------------


def _check_names(corpus: NabCorpus, given: Mapping[str, Any], what: str) -> None:
    missing = [n for n in corpus.names if n not in given]
    extra = [n for n in given if n not in corpus._by_name]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} file(s): {', '.join(missing[:5])}")
        if extra:
            parts.append(f"unknown file(s): {', '.join(extra[:5])}")
        raise ValueError(f"{what} do not match the corpus: " + "; ".join(parts))


def _as_column(values: npt.ArrayLike, f: NabFile, dtype: type[Any], what: str) -> npt.NDArray[Any]:
    arr = np.asarray(values, dtype=dtype)
    if arr.shape != (len(f),):
        raise ValueError(f"{what} for {f.name}: shape {arr.shape}, expected ({len(f)},)")
    return arr


def _score_file(f: NabFile, det: BoolArray, p: Profile) -> FileResult:
    start = f.probation
    scored = det[start:]
    inside = f.window_of_row[start:] >= 0
    unit = f.unit_weights
    fp_mask = scored & ~inside
    raw = p.fp_weight * float(unit[start:][fp_mask].sum())
    windows = f.scored_windows
    detected = 0
    for a, b in windows.tolist():
        first = max(a, start)
        hits = np.flatnonzero(det[first : b + 1])
        if len(hits):
            # The earliest detection has the largest reward; later ones add nothing.
            raw += p.tp_weight * float(unit[first + hits[0]])
            detected += 1
        else:
            raw -= p.fn_weight
    n_in = int(inside.sum())
    tp = int((scored & inside).sum())
    fp = int(fp_mask.sum())
    return FileResult(
        name=f.name,
        raw=raw,
        tp=tp,
        fp=fp,
        tn=len(scored) - n_in - fp,
        fn=n_in - tp,
        windows=len(windows),
        detected=detected,
        rows=len(f),
    )


def _normalizers(corpus: NabCorpus, p: Profile) -> tuple[float, float]:
    scored = sum(len(f.scored_windows) for f in corpus)
    return -p.fn_weight * scored, p.tp_weight * corpus.n_windows


def _normalize(raw: float, null: float, perfect: float) -> float:
    if perfect == null:
        return math.nan
    return 100.0 * (raw - null) / (perfect - null)


def score_detections(
    corpus: NabCorpus,
    detections: Mapping[str, npt.ArrayLike],
    profile: Profile | str,
    *,
    threshold: float | None = None,
) -> NabResult:
    """Score boolean detections (one array per file, ``True`` = alert) under one profile.

    ``threshold`` is only recorded in the result (use :func:`score_at_threshold` to turn
    scores into detections).
    """
    p = corpus.profile(profile)
    _check_names(corpus, detections, "detections")
    files = tuple(
        _score_file(f, _as_column(detections[f.name], f, np.bool_, "detections"), p) for f in corpus
    )
    null, perfect = _normalizers(corpus, p)
    raw = math.fsum(r.raw for r in files)
    return NabResult(
        profile=p,
        threshold=threshold,
        score=_normalize(raw, null, perfect),
        raw=raw,
        null=null,
        perfect=perfect,
        tp=sum(r.tp for r in files),
        fp=sum(r.fp for r in files),
        tn=sum(r.tn for r in files),
        fn=sum(r.fn for r in files),
        windows=sum(r.windows for r in files),
        detected=sum(r.detected for r in files),
        files=files,
    )


def score_at_threshold(
    corpus: NabCorpus,
    scores: Mapping[str, npt.ArrayLike],
    profile: Profile | str,
    threshold: float,
) -> NabResult:
    """Score anomaly scores at a fixed threshold: a detection is ``score >= threshold``."""
    _check_names(corpus, scores, "scores")
    detections = {
        f.name: _as_column(scores[f.name], f, np.float64, "scores") >= threshold for f in corpus
    }
    return score_detections(corpus, detections, profile, threshold=threshold)


def score_profiles(corpus: NabCorpus, detections: Mapping[str, npt.ArrayLike]) -> ProfileScores:
    """Score boolean detections under every profile of the corpus."""
    return ProfileScores({n: score_detections(corpus, detections, n) for n in corpus.profiles})


# --- threshold sweep ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Flat:
    """The scored rows of the whole corpus, concatenated (profile-independent)."""

    unit: FloatArray  # reward per row before profile weights
    window: IntArray  # corpus-wide window id per row, -1 outside
    n_scored_windows: int

    @classmethod
    def build(cls, corpus: NabCorpus) -> _Flat:
        units, wins = [], []
        offset = 0
        for f in corpus:
            w = f.window_of_row[f.probation :]
            units.append(f.unit_weights[f.probation :])
            wins.append(np.where(w >= 0, w + offset, -1))
            offset += f.n_windows
        unit = np.concatenate(units) if units else np.zeros(0)
        window = np.concatenate(wins) if wins else np.zeros(0, dtype=np.int64)
        return cls(unit, window, sum(len(f.scored_windows) for f in corpus))


@dataclass(frozen=True)
class _Curve:
    """Cumulative terms of the raw score at every candidate threshold, highest first.

    Entry 0 is "nothing detected". For a profile the raw score is
    ``-fn * windows + fp * fp_sum + tp * tp_sum + fn * detected``.
    """

    thresholds: FloatArray
    fp_sum: FloatArray
    tp_sum: FloatArray
    detected: FloatArray
    n_windows: int

    def raw(self, p: Profile) -> FloatArray:
        base = -p.fn_weight * self.n_windows
        return (
            base
            + p.fp_weight * self.fp_sum
            + p.tp_weight * self.tp_sum
            + (p.fn_weight * self.detected)
        )


def _curve(corpus: NabCorpus, scores: Mapping[str, npt.ArrayLike]) -> _Curve:
    """Every candidate threshold's score terms, from one sort of all scored rows.

    Lowering the threshold past a score value detects every row holding it. An FP row adds
    its penalty. A window row changes its window's reward only if it is earlier than the
    window's earliest detection so far, so the window's reward at each step is the reward
    of the running minimum row, tracked per window with one cumulative max over keys that
    keep windows apart.
    """
    _check_names(corpus, scores, "scores")
    flat = corpus._flat
    s = np.concatenate(
        [_as_column(scores[f.name], f, np.float64, "scores")[f.probation :] for f in corpus]
        or [np.zeros(0)]
    )
    keep = np.flatnonzero(~np.isnan(s))
    order = keep[np.argsort(-s[keep], kind="stable")]
    s_sorted = s[order]
    unit = flat.unit[order]
    win = flat.window[order]
    n = len(order)

    in_win = win >= 0
    fp_step = np.where(in_win, 0.0, unit)
    tp_step = np.zeros(n)
    first_step = np.zeros(n)
    pos = np.flatnonzero(in_win)
    if len(pos):
        # Group window rows by window, keeping detection order inside each group.
        by_win = pos[np.argsort(win[pos], kind="stable")]
        w = win[by_win]
        row = order[by_win]  # flat row index: increasing with time inside a file
        span = int(order.max()) + 1 if n else 1
        key = w * span + (span - 1 - row)
        earliest = (span - 1) - (np.maximum.accumulate(key) - w * span)
        reward = flat.unit[earliest]
        is_first = np.r_[True, w[1:] != w[:-1]]
        prev = np.where(is_first, 0.0, np.r_[0.0, reward[:-1]])
        tp_step[by_win] = reward - prev
        first_step[by_win] = is_first

    # A threshold's score includes every row scoring at or above it: the end of each tie run.
    ends = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True]) if n else np.zeros(0, int)

    def cum(step: FloatArray) -> FloatArray:
        return np.concatenate(([0.0], np.cumsum(step)[ends]))

    return _Curve(
        thresholds=np.r_[NOTHING_DETECTED, s_sorted[ends]],
        fp_sum=cum(fp_step),
        tp_sum=cum(tp_step),
        detected=cum(first_step),
        n_windows=flat.n_scored_windows,
    )


def sweep_curve(
    corpus: NabCorpus, scores: Mapping[str, npt.ArrayLike], profile: Profile | str
) -> tuple[FloatArray, FloatArray]:
    """The normalized score at every candidate threshold (highest first, ``inf`` = none).

    Candidates are all distinct score values of the scored rows; one sort of the corpus
    serves all of them, so this costs ``O(n log n)`` for ``n`` rows.
    """
    p = corpus.profile(profile)
    curve = _curve(corpus, scores)
    null, perfect = _normalizers(corpus, p)
    return curve.thresholds, 100.0 * (curve.raw(p) - null) / (perfect - null)


def _best(
    corpus: NabCorpus, curve: _Curve, scores: Mapping[str, npt.ArrayLike], p: Profile
) -> tuple[float, NabResult]:
    # argmax keeps the first of equal totals: the highest threshold, as NAB's stable sort.
    k = int(np.argmax(curve.raw(p)))
    threshold = float(curve.thresholds[k])
    return threshold, score_at_threshold(corpus, scores, p, threshold)


def sweep(
    corpus: NabCorpus, scores: Mapping[str, npt.ArrayLike], profile: Profile | str
) -> tuple[float, NabResult]:
    """Find the corpus-wide threshold that maximizes the NAB score, as NAB's optimizer.

    Every distinct score value is a candidate, plus "nothing detected"
    (:data:`NOTHING_DETECTED`); among equal totals the highest threshold wins. Returns the
    threshold and the result of scoring at it.
    """
    p = corpus.profile(profile)
    return _best(corpus, _curve(corpus, scores), scores, p)


def sweep_profiles(corpus: NabCorpus, scores: Mapping[str, npt.ArrayLike]) -> ProfileScores:
    """Sweep the threshold for every profile of the corpus (one sort shared by all)."""
    curve = _curve(corpus, scores)
    return ProfileScores(
        {n: _best(corpus, curve, scores, corpus.profile(n))[1] for n in corpus.profiles}
    )


# --- running a detector over the corpus --------------------------------------------------

#: A detector run over one whole series: ``(timestamps, values) -> (scores, alerts)``.
#: ``alerts`` is the detector's own decision per point, or ``None`` if it has none.
ScoreFile = Callable[[FloatArray, FloatArray], tuple[FloatArray, BoolArray | None]]


@dataclass(frozen=True)
class EvaluationReport:
    """What :func:`evaluate` found.

    ``swept``: every profile at its best threshold (tuned on the labels, NAB's way).
    ``alerts``: every profile at the detector's own alerts (no tuning on labels), or
    ``None`` when the detector gives no alerts. ``seconds`` is the wall time of running
    the detector over the corpus.
    """

    swept: ProfileScores
    alerts: ProfileScores | None
    seconds: float
    scores: Mapping[str, FloatArray] = field(repr=False)
    alert_flags: Mapping[str, BoolArray] | None = field(default=None, repr=False)

    def to_markdown(self, title: str = "NAB v1.1") -> str:
        """Markdown tables of both views, ready for a README or a PR comment."""
        parts = [
            f"### {title}: threshold swept per profile (tuned on labels)",
            "",
            self.swept.to_markdown(),
        ]
        if self.alerts is not None:
            parts += [
                "",
                f"### {title}: the detector's own alerts (fixed threshold, no tuning)",
                "",
                self.alerts.to_markdown(),
            ]
        parts += ["", f"Detector time: {self.seconds:.1f} s over {len(self.scores)} files."]
        return "\n".join(parts)


def _run_one(
    score_file: ScoreFile, timestamps: FloatArray, values: FloatArray
) -> tuple[FloatArray, BoolArray | None]:
    scores, alerts = score_file(timestamps, values)
    return (
        np.asarray(scores, dtype=np.float64),
        None if alerts is None else np.asarray(alerts, dtype=np.bool_),
    )


def evaluate(
    corpus: NabCorpus,
    score_file: ScoreFile,
    *,
    progress: bool = True,
    jobs: int = 1,
) -> EvaluationReport:
    """Run ``score_file`` over every file of the corpus and score it under every profile.

    ``score_file`` gets one whole series (timestamps in unix seconds, values) and returns
    one score per point and, optionally, the detector's own alert per point. With
    ``jobs > 1`` files run in that many worker processes, so ``score_file`` must be
    picklable (a module-level function or a :func:`functools.partial` of one).

    Alerts are used only if every file returns them.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    from tqdm import tqdm

    started = time.perf_counter()
    files = list(corpus)
    outputs: list[tuple[FloatArray, BoolArray | None]] = []
    if jobs == 1:
        with tqdm(total=len(files), desc="NAB", unit="file", disable=not progress) as bar:
            for f in files:
                outputs.append(_run_one(score_file, f.timestamps, f.values))
                bar.update()
    else:
        with ProcessPoolExecutor(max_workers=max(1, min(jobs, len(files)))) as ex:
            # Submit (and so fork the workers) before tqdm starts its monitor thread.
            futures = [ex.submit(_run_one, score_file, f.timestamps, f.values) for f in files]
            with tqdm(total=len(files), desc="NAB", unit="file", disable=not progress) as bar:
                for fut in futures:
                    outputs.append(fut.result())
                    bar.update()
    seconds = time.perf_counter() - started

    scores: dict[str, FloatArray] = {}
    alerts: dict[str, BoolArray] = {}
    no_alerts: list[str] = []
    for f, (s, a) in zip(files, outputs, strict=True):
        scores[f.name] = _as_column(s, f, np.float64, "scores")
        if a is None:
            no_alerts.append(f.name)
        else:
            alerts[f.name] = _as_column(a, f, np.bool_, "alerts")
    if no_alerts and alerts:
        msg = f"score_file returned alerts for some files only; none for {no_alerts[:5]}"
        raise ValueError(msg)
    alert_flags = alerts if alerts else None
    return EvaluationReport(
        swept=sweep_profiles(corpus, scores),
        alerts=None if alert_flags is None else score_profiles(corpus, alert_flags),
        seconds=seconds,
        scores=scores,
        alert_flags=alert_flags,
    )
