"""The alert state machine: inactive -> pending -> firing -> resolved, per series.

Time is the data's own (the points' timestamps), never the wall clock, so a replay
gives the same alerts as the live run and a restart from a checkpoint continues exactly
where it stopped.

- A point whose condition holds moves an inactive series to *pending* (unless the
  series is suppressed); ``for`` seconds of data later, with the condition still
  holding, it fires. With ``for: 0`` it fires at once.
- A pending series whose condition fails goes back to inactive, silently.
- A firing series whose condition fails resolves; it may not fire again for
  ``suppress`` seconds after that.
- A firing series that stops reporting resolves when the rule's data has moved
  ``stale`` seconds past its last point (:meth:`AlertStateMachine.resolve_stale`); the
  resolution is dated at that moment, last point + ``stale``, whenever it is noticed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from aiops.pipeline.detector import grown
from aiops.state.rulestate import Live, adopt
from aiops.types import BoolArray, FloatArray, IntArray

__all__ = ["FIRING", "INACTIVE", "PENDING", "AlertStateMachine", "Transitions"]

INACTIVE, PENDING, FIRING = 0, 1, 2
_FIELDS = ("state", "active_at", "fired_at", "suppress_until", "last_seen")
_DTYPES = {
    "state": np.int8,
    "active_at": np.float64,
    "fired_at": np.float64,
    "suppress_until": np.float64,
    "last_seen": np.float64,
}


@dataclass(frozen=True, slots=True)
class Transitions:
    """Positions (into the arrays of the call) that started firing or resolved."""

    fired: IntArray
    resolved: IntArray
    starts_at: FloatArray  # per resolved position: when that alert fired
    ends_at: FloatArray | None = None  # per resolved: when (set by resolve_stale only)


@numba.njit(cache=True, nogil=True)
def _step_points(
    idx: IntArray,
    t: FloatArray,
    cond: BoolArray,
    fired: BoolArray,
    resolved: BoolArray,
    starts_at: FloatArray,
    state: np.ndarray[Any, np.dtype[np.int8]],
    active_at: FloatArray,
    fired_at: FloatArray,
    suppress_until: FloatArray,
    last_seen: FloatArray,
    for_seconds: float,
    suppress_seconds: float,
) -> None:
    """Apply every point in order; flag where an alert fired or resolved."""
    for k in range(len(idx)):
        i = idx[k]
        tk = t[k]
        if tk > last_seen[i]:
            last_seen[i] = tk
        st = state[i]
        if not cond[k]:
            if st == FIRING:
                resolved[k] = True
                starts_at[k] = fired_at[i]
                suppress_until[i] = tk + suppress_seconds
            if st in (PENDING, FIRING):
                state[i] = INACTIVE
            continue
        if st == INACTIVE:
            # A NaN time compares false here and below, as it would in numpy.
            if not tk >= suppress_until[i]:
                continue
            active_at[i] = tk
            state[i] = PENDING
            st = PENDING
        if st == PENDING and tk - active_at[i] >= for_seconds:
            state[i] = FIRING
            fired_at[i] = tk
            fired[k] = True


_NO_TRANSITIONS = Transitions(
    np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
)


class AlertStateMachine:
    """Per-series alert states for one rule.

    A call takes any number of points of any series; they are applied in order, so one
    call over a batch gives exactly what feeding its points one at a time gives.

    >>> sm = AlertStateMachine(for_seconds=30.0)
    >>> i = np.array([0])
    >>> for t, cond in [(0, True), (15, True), (30, True), (45, False)]:
    ...     tr = sm.step(i, np.array([float(t)]), np.array([cond]))
    ...     print(t, len(tr.fired), len(tr.resolved))
    0 0 0
    15 0 0
    30 1 0
    45 0 1
    """

    def __init__(self, *, for_seconds: float = 0.0, suppress_seconds: float = 0.0) -> None:
        if for_seconds < 0 or suppress_seconds < 0:
            raise ValueError("for and suppress must not be negative")
        self.for_seconds = for_seconds
        self.suppress_seconds = suppress_seconds
        self.state = np.zeros(0, dtype=np.int8)
        self.active_at = np.zeros(0)
        self.fired_at = np.zeros(0)
        self.suppress_until = np.zeros(0)
        self.last_seen = np.zeros(0)

    def reserve(self, n: int, limit: int | None = None) -> None:
        """Hold state for series ``0..n-1`` at least (new series start inactive, no hits).

        ``limit``: no more rows than that while ``n`` fits (:func:`grown`).
        """
        if n <= len(self.state):
            return
        extra = grown(len(self.state), n, limit) - len(self.state)
        self.state = np.concatenate([self.state, np.zeros(extra, dtype=np.int8)])
        self.active_at = np.concatenate([self.active_at, np.zeros(extra)])
        self.fired_at = np.concatenate([self.fired_at, np.zeros(extra)])
        self.suppress_until = np.concatenate([self.suppress_until, np.full(extra, -np.inf)])
        self.last_seen = np.concatenate([self.last_seen, np.full(extra, -np.inf)])

    def step(self, idx: IntArray, t: FloatArray, cond: BoolArray) -> Transitions:
        """Apply the points in order (``idx`` may repeat; each series in time order)."""
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        t = np.ascontiguousarray(t, dtype=np.float64)
        cond = np.ascontiguousarray(cond, dtype=bool)
        n = len(idx)
        fired = np.zeros(n, dtype=bool)
        resolved = np.zeros(n, dtype=bool)
        starts_at = np.zeros(n)
        if n:
            self.reserve(int(idx.max()) + 1)
            _step_points(
                idx,
                t,
                cond,
                fired,
                resolved,
                starts_at,
                self.state,
                self.active_at,
                self.fired_at,
                self.suppress_until,
                self.last_seen,
                float(self.for_seconds),
                float(self.suppress_seconds),
            )
        where = np.flatnonzero(resolved)
        return Transitions(fired=np.flatnonzero(fired), resolved=where, starts_at=starts_at[where])

    def firing(self) -> IntArray:
        """Indices of the series firing now."""
        return np.flatnonzero(self.state == FIRING)

    def resolve_stale(
        self,
        now: float,
        stale_seconds: float,
        before: Callable[[IntArray], object] | None = None,
    ) -> Transitions:
        """Resolve firing series whose last point is ``stale_seconds`` or more before ``now``.

        ``now`` is a data time (the latest point of the rule, say); a ``stale_seconds``
        of 0 or less resolves nothing. ``Transitions.resolved`` holds the series indices
        here (not point positions), ``starts_at`` when each fired, and ``ends_at`` when it
        went stale (its last point + ``stale_seconds``). Suppression starts then, as for
        any resolution. ``before`` is told the rows first (copy-on-write of a snapshot).

        >>> sm = AlertStateMachine()
        >>> _ = sm.step(np.array([0, 1]), np.array([0.0, 0.0]), np.array([True, True]))
        >>> _ = sm.step(np.array([1]), np.array([500.0]), np.array([True]))
        >>> tr = sm.resolve_stale(900.0, 900.0)
        >>> tr.resolved.tolist(), tr.ends_at.tolist(), sm.firing().tolist()
        ([0], [900.0], [1])
        """
        if stale_seconds <= 0 or not len(self.state):
            return _NO_TRANSITIONS
        stale = np.flatnonzero((self.state == FIRING) & (self.last_seen <= now - stale_seconds))
        if len(stale) == 0:
            return _NO_TRANSITIONS
        if before is not None:
            before(stale)
        ends = self.last_seen[stale] + stale_seconds
        starts = self.fired_at[stale].copy()
        self.state[stale] = INACTIVE
        self.suppress_until[stale] = ends + self.suppress_seconds
        return Transitions(
            fired=np.zeros(0, np.int64), resolved=stale, starts_at=starts, ends_at=ends
        )

    def forget(self, rows: IntArray) -> None:
        """Start these series afresh (inactive, unsuppressed) and mark them unused.

        A forgotten row is never stale (its last point counts as +inf) until
        :meth:`reuse` hands it to a new series.
        """
        rows = rows[rows < len(self.state)]
        self.state[rows] = INACTIVE
        self.active_at[rows] = 0.0
        self.fired_at[rows] = 0.0
        self.suppress_until[rows] = -np.inf
        self.last_seen[rows] = np.inf

    def reuse(self, rows: IntArray) -> None:
        """Rows that :meth:`forget` marked now hold a new series (seen at no time yet)."""
        rows = rows[rows < len(self.state)]
        self.last_seen[rows] = -np.inf

    def state_dict(self) -> dict[str, Any]:
        """All per-series arrays."""
        return {f: getattr(self, f).copy() for f in _FIELDS}

    def state_views(self) -> dict[str, Any]:
        """:meth:`state_dict` without copies: live arrays (see :mod:`aiops.state.rulestate`).

        :meth:`step`, :meth:`forget` and :meth:`reuse` write only the rows they are
        given, :meth:`resolve_stale` the rows it tells ``before`` of.
        """
        return {f: Live(getattr(self, f)) for f in _FIELDS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the per-series arrays.

        A state from before staleness was tracked counts each series as last seen when
        it fired (the latest time known for it).
        """
        if "last_seen" not in state:
            state = {**state, "last_seen": state["fired_at"]}
        for f in _FIELDS:
            setattr(self, f, adopt(state[f], _DTYPES[f]))
