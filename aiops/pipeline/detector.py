"""The detector contract: per-series state, vectorized over a batch.

A detector scores points of many series at once. Series are identified by dense
indices ``0..n-1`` handed out by the rule's series registry; a detector grows its state
arrays when it meets a new index.

Contract:

- ``score(idx, timestamps, values)`` returns one score per point, in ``[0, 1]``, higher
  meaning more anomalous (NAB's convention), and learns from the points. The score of a
  point uses only that point and the points before it (strictly streaming).
- A batch may hold several points of one series. The scores must equal those of feeding
  the same points one at a time in order, whatever the batch boundaries. Subclasses of
  :class:`RoundDetector` get this for free: the batch is split into rounds holding at
  most one point per series, and each round is one vectorized step.
- A NaN value is a missing point: it scores 0 and leaves the state unchanged.
- Deterministic for a given ``seed``; randomness only from it.
- ``state_dict()`` returns plain numpy arrays, numbers, strings, lists and dicts (no
  pickles), and ``load_state_dict()`` restores it exactly: scores after a round trip
  equal the scores without one.
- Constructor arguments are stored under the same names; learned state lives in other
  attributes.
- ``learn_below``: points whose score is at or above it are not learned from, so that a
  confirmed anomaly does not become the new normal. ``inf`` (the default) learns from
  every point.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from aiops.types import BoolArray, FloatArray, IntArray, SeriesKey

__all__ = [
    "DEFAULT_THRESHOLD",
    "Detector",
    "grown",
    "RoundDetector",
    "checked_batch",
    "keyword_params",
    "split_rounds",
]

#: The threshold of a rule that sets none, and of ``aiops score`` / ``aiops eval``. On a
#: detector whose score is a tail rate (``1 - s`` of a series' normal points score ``s`` or
#: more: ``ewma_z`` and the default ``ensemble``), 0.998 is "about one normal point in
#: 500": sensitive, as operators' incident labels ask (own-alert F1 on the KPI
#: development data 0.692 at 0.998, 0.631 at 0.9985, 0.458 at 0.9995). A rule that pages
#: should ask for several hits or set a higher threshold (``rules/fleet.yaml``: 0.9999 and
#: 3 hits in 5; ``bench/quality/README.md``).
DEFAULT_THRESHOLD = 0.998

#: Per-series arrays grow by this factor (not doubling): at most a quarter of the rows
#: are spare, and a growth step holds 2.25x the rows at once rather than 3x.
GROWTH = 1.25


def grown(capacity: int, need: int, limit: int | None = None) -> int:
    """The rows to grow per-series arrays of ``capacity`` rows to, to hold ``need``.

    ``limit`` (the rule's series cap): no more rows than that while ``need`` fits in it,
    so a rule at its cap holds no spare rows.

    >>> grown(0, 10), grown(100, 101), grown(100, 300), grown(100, 101, 110), grown(100, 111, 110)
    (10, 125, 300, 110, 125)
    """
    rows = max(need, int(capacity * GROWTH))
    return min(rows, limit) if limit is not None and need <= limit else rows


class Detector(ABC):
    """Base class of every detector; see the module docstring for the contract."""

    #: The ``type:`` name under which the detector is registered.
    name: ClassVar[str] = ""
    #: The most rows its state arrays grow to while the series fit (:meth:`limit_rows`).
    max_rows: int | None = None

    def __init__(self, *, learn_below: float = math.inf, seed: int = 0) -> None:
        self.learn_below = learn_below
        self.seed = seed

    @abstractmethod
    def score(self, idx: IntArray, timestamps: FloatArray, values: FloatArray) -> FloatArray:
        """Score the points (series index, timestamp, value) in order and learn from them."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The learned state as plain arrays and JSON values."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    @property
    @abstractmethod
    def n_series(self) -> int:
        """How many series indices the detector holds state for."""

    def bind_series(self, keys: Sequence[SeriesKey]) -> None:
        """The keys of series indices ``0..len(keys)-1``; a no-op unless overridden.

        The engine calls it whenever the rule's series registry grew and after a state
        restore, always before the new indices are scored. Detectors that group series
        (multivariate models over all metrics of a host) use it; others ignore it. A
        detector must score a series it was never told the key of as well (the check
        suite and ``aiops score`` bind nothing or a single key). ``keys`` is the live
        registry: read it during the call, do not keep it.
        """
        del keys  # per-series detectors need no keys

    def limit_rows(self, rows: int | None) -> None:
        """Grow state arrays to at most ``rows`` while the series fit (the rule's cap).

        An allocation hint (:func:`grown`'s ``limit``): scores do not depend on it.
        """
        self.max_rows = rows

    def params(self) -> dict[str, Any]:
        """The constructor arguments, read back from the attributes of the same names."""
        return {n: getattr(self, n) for n in keyword_params(type(self)) or ()}


def checked_batch(
    idx: npt.ArrayLike, timestamps: npt.ArrayLike, values: npt.ArrayLike
) -> tuple[IntArray, FloatArray, FloatArray]:
    """A batch's arrays as contiguous int64 / float64, checked for what every kernel needs.

    Raises ``ValueError`` when the lengths differ or an index is negative.

    >>> i, t, v = checked_batch([0, 1], [0, 60], [1, 2])
    >>> i.dtype, t.dtype, v.dtype
    (dtype('int64'), dtype('float64'), dtype('float64'))
    >>> checked_batch([0, -1], [0, 60], [1, 2])
    Traceback (most recent call last):
    ...
    ValueError: series indices must not be negative
    """
    i = np.ascontiguousarray(idx, dtype=np.int64)
    t = np.ascontiguousarray(timestamps, dtype=np.float64)
    v = np.ascontiguousarray(values, dtype=np.float64)
    if not len(i) == len(t) == len(v):
        raise ValueError(
            f"idx, timestamps and values differ in length: {len(i)}, {len(t)}, {len(v)}"
        )
    if len(i) and int(i.min()) < 0:
        raise ValueError("series indices must not be negative")
    return i, t, v


def keyword_params(cls: type[Any]) -> list[str] | None:
    """The keyword-only constructor parameters of ``cls`` and its bases, sorted.

    None when they cannot be listed: the constructor takes ``**kwargs`` or has no
    readable signature.

    >>> keyword_params(RoundDetector)
    ['learn_below', 'seed']
    """
    names: set[str] = set()
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if klass is object or init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (ValueError, TypeError):
            return None
        for p in params:
            if p.kind is p.VAR_KEYWORD and klass is cls:
                return None
            if p.kind is p.KEYWORD_ONLY:
                names.add(p.name)
    return sorted(names)


def split_rounds(idx: IntArray) -> list[IntArray]:
    """Split point positions into rounds holding at most one point per series.

    Round ``k`` holds the ``k``-th point of every series that has one, so applying the
    rounds in order applies each series' points in their original order.

    >>> [r.tolist() for r in split_rounds(np.array([3, 1, 3, 3, 1]))]
    [[0, 1], [2, 4], [3]]
    """
    n = len(idx)
    if n == 0:
        return []
    order = np.argsort(idx, kind="stable")
    sorted_idx = idx[order]
    starts = np.flatnonzero(np.r_[True, sorted_idx[1:] != sorted_idx[:-1]])
    if len(starts) == n:
        return [np.arange(n)]
    group_len = np.diff(np.r_[starts, n])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - np.repeat(starts, group_len)
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(1, int(rank.max()) + 1))
    return np.split(by_rank, bounds)


class RoundDetector(Detector):
    """A detector whose state is one row per series, updated one round at a time.

    Subclasses implement :meth:`_grow`, :meth:`_score_round` (no state change) and
    :meth:`_learn_round`; this class handles rounds, missing values and ``learn_below``.
    """

    def score(self, idx: IntArray, timestamps: FloatArray, values: FloatArray) -> FloatArray:
        """Score and learn from the points; see the module docstring."""
        idx = np.asarray(idx, dtype=np.int64)
        timestamps = np.asarray(timestamps, dtype=np.float64)
        values = np.asarray(values, dtype=np.float64)
        out = np.zeros(len(idx), dtype=np.float64)
        if len(idx) == 0:
            return out
        need = int(idx.max()) + 1
        if need > self.n_series:
            self._grow(need)
        for sel in split_rounds(idx):
            i, t, v = idx[sel], timestamps[sel], values[sel]
            ok = np.isfinite(v)
            if not ok.all():
                sel, i, t, v = sel[ok], i[ok], t[ok], v[ok]
                if len(sel) == 0:
                    continue
            s = self._score_round(i, t, v)
            out[sel] = s
            learn = s < self.learn_below
            if learn.all():
                self._learn_round(i, t, v, None)
            else:
                self._learn_round(i, t, v, learn)
        return out

    @abstractmethod
    def _grow(self, n: int) -> None:
        """Extend the per-series state to hold at least ``n`` series."""

    @abstractmethod
    def _score_round(self, idx: IntArray, timestamps: FloatArray, values: FloatArray) -> FloatArray:
        """Score one round (distinct series, finite values) without changing state."""

    @abstractmethod
    def _learn_round(
        self, idx: IntArray, timestamps: FloatArray, values: FloatArray, mask: BoolArray | None
    ) -> None:
        """Update the state of one round; ``mask`` (if given) selects the points to learn."""
