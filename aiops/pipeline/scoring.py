"""Offline scoring of one series through the daemon's own rule engine.

``aiops score``, ``aiops eval nab`` and the benchmarks call :func:`score_series`, which
feeds points through exactly the :class:`~aiops.pipeline.engine.RuleRuntime` the daemon uses
(detector, hit window, alert state machine), so offline numbers are what the daemon
would have done live.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from aiops.pipeline import csvscan
from aiops.pipeline.detector import DEFAULT_THRESHOLD
from aiops.pipeline.engine import RuleRuntime, RuleSpec
from aiops.registry import DEFAULT_DETECTOR
from aiops.timeutil import parse_timestamp, parse_timestamps, times_ok
from aiops.types import Batch, BoolArray, FloatArray, IntArray, SeriesKey

__all__ = [
    "DEFAULT_DETECTOR",
    "CsvRows",
    "ScoredSeries",
    "read_series_csv",
    "score_series",
    "skip_numba_blas_probe",
    "write_scored_csv",
]

_KEY = SeriesKey.of("value")
#: Characters that make csv.writer quote a field (or fail on it); without any, joining
#: the fields with commas writes the same bytes.
_CSV_SPECIAL = (",", '"', "\r", "\n", "\x00")
_HEADER = b"timestamp,value,anomaly_score,alert\n"


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
    setup: Callable[[RuleRuntime], object] | None = None,
) -> ScoredSeries:
    """Score one series; ``alerts[i]`` is True where the daemon's alert would fire.

    Points are fed in chunks of ``chunk`` (batch boundaries do not change scores).
    A NaN value scores 0 and never fires. ``setup`` is called with the rule's runtime
    before the first point (``aiops eval labelled --retrain-every`` attaches retraining).

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
        windows=False,  # no receiver: no alert windows to keep or draw
    )
    rt = RuleRuntime(spec)
    if setup is not None:
        setup(rt)
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


#: Unix times at least this far from 1970 (year ~5138) are taken as unparseable, as the
#: wire-format decoders do: they come from a wrong unit, and alert times beyond year 9999
#: cannot be written in RFC 3339.
MAX_ABS_TIMESTAMP = 1e11
#: Longest CSV field read (the csv module's default is 128 KiB; one long garbage field
#: must not fail a file of good rows).
_FIELD_LIMIT = 2**31 - 1


class CsvRows(Sequence[list[str]]):
    """The rows of a plain CSV file, kept as the file's bytes and each row's byte ranges.

    What :func:`read_series_csv` returns for a file that ``csv.reader`` would split on
    commas alone (see :mod:`aiops.pipeline.csvscan`): ``rows[i]`` is the list of strings
    ``csv.reader`` gives for the row, made when asked for; :func:`write_scored_csv`
    echoes the fields' bytes without making any.
    """

    def __init__(self, buf: npt.NDArray[np.uint8], spans: tuple[IntArray, ...]) -> None:
        self.buf = buf
        self.s0, self.e0, self.s1, self.e1, self.end = spans

    def __len__(self) -> int:
        return len(self.s0)

    @overload
    def __getitem__(self, i: int) -> list[str]: ...

    @overload
    def __getitem__(self, i: slice) -> list[list[str]]: ...

    def __getitem__(self, i: int | slice) -> list[str] | list[list[str]]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        line = self.buf[self.s0[i] : self.end[i]].tobytes()
        return line.decode("ascii").split(",")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CsvRows | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def field(self, row: int, col: int) -> str:
        """Field ``col`` (0 or 1) of row ``row``; ``""`` where the row has no such field."""
        s, e = (self.s0[row], self.e0[row]) if col == 0 else (self.s1[row], self.e1[row])
        return self.buf[s:e].tobytes().decode("ascii") if s >= 0 else ""

    def drop_first(self) -> CsvRows:
        """The rows after the first (a header)."""
        return CsvRows(self.buf, (self.s0[1:], self.e0[1:], self.s1[1:], self.e1[1:], self.end[1:]))


def read_series_csv(
    path: Path, *, counts: dict[str, int] | None = None
) -> tuple[Sequence[Sequence[str]], FloatArray, FloatArray]:
    """Read a ``timestamp,value`` CSV leniently: one output row per input row.

    Returns the raw rows (for echoing) and the parsed timestamps and values. An empty
    or unparseable value becomes NaN, as do infinite ones; an unparseable timestamp takes
    the previous row's timestamp and its value becomes NaN (so the row is still written,
    scored as missing), 0 before the first parseable one (infinite and NaN ones, those
    past ``MAX_ABS_TIMESTAMP`` and those outside years 1-9999 count as unparseable; an
    alert could not carry them); ``counts["bad_timestamp"]`` (if given) is how many such
    rows there were. Timestamps are ISO 8601 or unix seconds (see
    :func:`~aiops.timeutil.parse_timestamp`); blank lines are skipped; the header is
    optional. Columns after the second are kept in the rows and otherwise ignored.
    Bytes that are not UTF-8 become U+FFFD (the row stays, its field unparseable), and a
    field of any length is read (the csv module's 128 KiB limit would fail the file).

    A file that ``csv.reader`` would split on commas alone (no quote, NUL, lone carriage
    return or non-ASCII byte: nearly all) is read by compiled loops over its bytes
    (:mod:`aiops.pipeline.csvscan`) and its rows are a :class:`CsvRows`; the others go
    through ``csv.reader``. Both give the same rows, times and values.
    """
    buf = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    *spans, plain = csvscan.scan(buf)
    if not plain:
        return _read_with_csv_module(path, counts)
    rows = CsvRows(buf, tuple(spans))
    if len(rows) and not _is_number(rows.field(0, 1)) and not _is_time(rows.field(0, 0)):
        rows = rows.drop_first()
    ts, t_status, vs, v_status = csvscan.parse(buf, rows.s0, rows.e0, rows.s1, rows.e1)
    parsed = t_status == csvscan.READ
    for k in np.flatnonzero(t_status == csvscan.PYTHON).tolist():
        try:
            ts[k] = parse_timestamp(rows.field(k, 0))
        except ValueError:
            continue
        parsed[k] = True
    for k in np.flatnonzero(v_status == csvscan.PYTHON).tolist():
        vs[k] = _float_or_nan(rows.field(k, 1))
    return rows, *_finish(ts, parsed, vs, counts)


def _read_with_csv_module(
    path: Path, counts: dict[str, int] | None
) -> tuple[list[list[str]], FloatArray, FloatArray]:
    """:func:`read_series_csv` of any file, through ``csv.reader``."""
    limit = csv.field_size_limit()
    csv.field_size_limit(_FIELD_LIMIT)
    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as f:
            rows = [r for r in csv.reader(f) if r]
    finally:
        csv.field_size_limit(limit)
    if rows and not _is_number(rows[0][1] if len(rows[0]) > 1 else "") and not _is_time(rows[0][0]):
        rows = rows[1:]
    n = len(rows)
    ts, parsed = parse_timestamps([r[0] for r in rows])
    # "" is the usual unparseable value; as "nan" it keeps the whole column on the fast path.
    texts = [(r[1] or "nan") if len(r) > 1 else "nan" for r in rows]
    try:
        vs = np.fromiter(map(float, texts), np.float64, n)
    except ValueError:
        vs = np.fromiter(map(_float_or_nan, texts), np.float64, n)
    return rows, *_finish(ts, parsed, vs, counts)


def _finish(
    ts: FloatArray, parsed: BoolArray, vs: FloatArray, counts: dict[str, int] | None
) -> tuple[FloatArray, FloatArray]:
    """Unusable times dropped and forward filled, and their values and unusable ones NaN."""
    n = len(ts)
    # inf, NaN and times past year ~5000 (a wrong unit) are as unparseable as "x".
    parsed &= times_ok(ts) & (np.abs(ts) < MAX_ABS_TIMESTAMP)
    if counts is not None:
        counts["bad_timestamp"] = counts.get("bad_timestamp", 0) + int(n - parsed.sum())
    # Forward fill: each unparseable timestamp takes the last parsed one before it.
    last = np.maximum.accumulate(np.where(parsed, np.arange(n), -1))
    ts = np.where(last >= 0, ts[np.maximum(last, 0)], 0.0)
    vs[~np.isfinite(vs) | ~parsed] = np.nan
    return ts, vs


def write_scored_csv(path: Path, rows: Sequence[Sequence[str]], scored: ScoredSeries) -> None:
    """Write ``timestamp,value,anomaly_score,alert``: one row per row of ``rows``.

    The timestamp and value are echoed as read (``""`` where a row has none); the score
    has six decimals, the alert is ``0`` or ``1``; lines end in LF.
    """
    if not len(rows) == len(scored.scores) == len(scored.alerts):
        raise ValueError(
            f"rows, scores and alerts differ in length: "
            f"{len(rows)}, {len(scored.scores)}, {len(scored.alerts)}"
        )
    scores = scored.scores
    # -0.0 is written "-0.000000": not SCORE_WIDTH characters.
    in_range = bool(((scores >= 0) & (scores <= 1) & ~np.signbit(scores)).all())
    if isinstance(rows, CsvRows) and in_range:
        _write_plain(path, rows, scored)
        return
    times = [r[0] if r else "" for r in rows]
    values = [r[1] if len(r) > 1 else "" for r in rows]
    texts = [f"{s:.6f}" for s in scores.tolist()]
    alerts = np.where(scored.alerts, "1", "0").tolist()
    lines = zip(times, values, texts, alerts, strict=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        f.write(_HEADER.decode("ascii"))
        echoed = "".join(times) + "".join(values)
        if any(c in echoed for c in _CSV_SPECIAL):
            csv.writer(f, lineterminator="\n").writerows(lines)
        else:  # nothing to quote: the bytes csv.writer would write, several times faster
            f.writelines(f"{line}\n" for line in map(",".join, lines))


def _write_plain(path: Path, rows: CsvRows, scored: ScoredSeries) -> None:
    """:func:`write_scored_csv` of a plain file's rows: their bytes echoed, in one loop."""
    out, todo_rows, todo_at = csvscan.render(
        rows.buf,
        rows.s0,
        rows.e0,
        rows.s1,
        rows.e1,
        np.ascontiguousarray(scored.scores, dtype=np.float64),
        np.ascontiguousarray(scored.alerts, dtype=np.bool_),
        np.frombuffer(_HEADER, dtype=np.uint8),
    )
    for r, at in zip(todo_rows.tolist(), todo_at.tolist(), strict=True):  # near ties
        out[at : at + csvscan.SCORE_WIDTH] = np.frombuffer(
            f"{scored.scores[r]:.6f}".encode("ascii"), dtype=np.uint8
        )
    path.write_bytes(out.tobytes())


def skip_numba_blas_probe() -> None:
    """Load numba's NumPy support without the SciPy import it makes only to probe for BLAS.

    numba's first compiled call imports ``numba.np.arraymath``, which imports
    ``scipy.linalg`` (where SciPy is installed) only to learn whether ``np.correlate`` and
    ``np.convolve`` in compiled code may call BLAS; with SciPy 1.17 that import takes
    about 0.27 s of CPU, a fifth of ``aiops score`` of a long series. Here that module is
    loaded while ``scipy.linalg`` is hidden, so compiled correlations use numba's own
    loop (no compiled code of this project makes one); ``scipy.linalg`` imports as usual
    afterwards, and numba's linear algebra imports it when it is first compiled. For
    single-threaded command starts (``aiops score``): another thread importing
    ``scipy.linalg`` meanwhile would fail. Nothing is done once numba's NumPy support or
    ``scipy.linalg`` is loaded.
    """
    if "numba.np.arraymath" in sys.modules or "scipy.linalg" in sys.modules:
        return
    sys.modules["scipy.linalg"] = None  # type: ignore[assignment]  # import fails: no BLAS
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        del sys.modules["scipy.linalg"]


def _float_or_nan(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


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
