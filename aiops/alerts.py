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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from aiops.types import BoolArray, FloatArray, IntArray

__all__ = ["FIRING", "INACTIVE", "PENDING", "AlertStateMachine", "Transitions"]

INACTIVE, PENDING, FIRING = 0, 1, 2
_FIELDS = ("state", "active_at", "fired_at", "suppress_until")


@dataclass(frozen=True, slots=True)
class Transitions:
    """Positions (into the round's arrays) that started firing or resolved."""

    fired: IntArray
    resolved: IntArray
    starts_at: FloatArray  # per resolved position: when that alert fired


class AlertStateMachine:
    """Per-series alert states for one rule, updated one round at a time.

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

    def _grow(self, n: int) -> None:
        if n <= len(self.state):
            return
        extra = max(n, 2 * len(self.state)) - len(self.state)
        self.state = np.concatenate([self.state, np.zeros(extra, dtype=np.int8)])
        self.active_at = np.concatenate([self.active_at, np.zeros(extra)])
        self.fired_at = np.concatenate([self.fired_at, np.zeros(extra)])
        self.suppress_until = np.concatenate([self.suppress_until, np.full(extra, -np.inf)])

    def step(self, idx: IntArray, t: FloatArray, cond: BoolArray) -> Transitions:
        """Apply one round (distinct series, in time order per series)."""
        if len(idx) and int(idx.max()) >= len(self.state):
            self._grow(int(idx.max()) + 1)
        st = self.state[idx]
        inactive, pending, firing = st == INACTIVE, st == PENDING, st == FIRING

        start = inactive & cond & (t >= self.suppress_until[idx])
        self.active_at[idx[start]] = t[start]
        active_at = self.active_at[idx]
        fire = (start | pending) & cond & (t - active_at >= self.for_seconds)
        to_pending = start & ~fire
        cancel = pending & ~cond
        resolve = firing & ~cond

        new = st.copy()
        new[to_pending] = PENDING
        new[fire] = FIRING
        new[cancel | resolve] = INACTIVE
        self.state[idx] = new
        self.fired_at[idx[fire]] = t[fire]
        self.suppress_until[idx[resolve]] = t[resolve] + self.suppress_seconds

        resolved = np.flatnonzero(resolve)
        return Transitions(
            fired=np.flatnonzero(fire),
            resolved=resolved,
            starts_at=self.fired_at[idx[resolved]],
        )

    def firing(self) -> IntArray:
        """Indices of the series firing now."""
        return np.flatnonzero(self.state == FIRING)

    def state_dict(self) -> dict[str, Any]:
        """All per-series arrays."""
        return {f: getattr(self, f).copy() for f in _FIELDS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the per-series arrays."""
        for f in _FIELDS:
            setattr(self, f, np.asarray(state[f]).copy())
