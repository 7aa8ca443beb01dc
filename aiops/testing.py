"""Test doubles that ship with the package: tests and plugin authors use the same ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from aiops.alerting.notify import Delivered, DeliveryResult, Notification, Notifier
from aiops.pipeline.detector import Detector
from aiops.pipeline.source import Source
from aiops.types import Batch, FloatArray, IntArray

__all__ = ["FakeClock", "ListNotifier", "MemorySource", "StaticView", "ValueIsScore"]


class ValueIsScore(Detector):
    """A detector whose score is the point's value (0 where there is none).

    A test decides which points are anomalous by the values it sends. No state.

    >>> ValueIsScore().score(np.zeros(2, np.int64), np.zeros(2), np.array([0.5, np.nan]))
    array([0.5, 0. ])
    """

    name = "value_is_score"

    def score(self, idx: IntArray, timestamps: FloatArray, values: FloatArray) -> FloatArray:
        """The values, NaN as 0."""
        return np.where(np.isfinite(values), values, 0.0)

    def state_dict(self) -> dict[str, Any]:
        """Nothing to keep."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""

    @property
    def n_series(self) -> int:
        """No per-series rows."""
        return 0


class MemorySource(Source):
    """Emits a fixed list of batches, one per poll; its position is the batch count.

    >>> src = MemorySource([Batch(), Batch()], resume={"next": 1})
    >>> src.exhausted, src.snapshot()
    (False, {'next': 1})
    >>> _ = src.next_batch(); src.exhausted, src.snapshot()
    (True, {'next': 2})
    """

    def __init__(
        self,
        batches: Sequence[Batch],
        *,
        resume: dict[str, Any] | None = None,
        source_id: str = "mem",
    ) -> None:
        self.batches = list(batches)
        self.source_id = source_id
        self._next = int((resume or {}).get("next", 0))
        self.committed: list[dict[str, Any]] = []
        self.closed = False

    def next_batch(self) -> Batch:
        """The next batch, or an empty one once all are emitted."""
        if self._next >= len(self.batches):
            return Batch()
        batch = self.batches[self._next]
        self._next += 1
        return batch

    def snapshot(self) -> dict[str, Any]:
        """The index of the next batch to emit."""
        return {"next": self._next}

    def commit(self, position: dict[str, Any]) -> None:
        """Record committed positions, for assertions."""
        self.committed.append(position)

    @property
    def exhausted(self) -> bool:
        """True once every batch was emitted."""
        return self._next >= len(self.batches)

    def close(self) -> None:
        """Mark closed."""
        self.closed = True


class ListNotifier(Notifier):
    """Keeps every notification it is sent; answers with ``results`` in turn, then Delivered."""

    def __init__(self, results: Sequence[DeliveryResult] = ()) -> None:
        self.sent: list[Notification] = []
        self._results = list(results)

    def send(self, notification: Notification) -> DeliveryResult:
        """Record the notification."""
        self.sent.append(notification)
        return self._results.pop(0) if self._results else Delivered()


class FakeClock:
    """A monotonic clock that moves only when told to.

    >>> c = FakeClock(); c.advance(2.5); c()
    2.5
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        """The current fake time."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds


class StaticView:
    """What the HTTP listener reads of a daemon (``DaemonView``), for a listener alone.

    Ready, no source, its loop just turned: health and readiness answer 200.
    """

    def __init__(self) -> None:
        self.health_report: dict[str, Any] = {}
        self.ready = True
        self.last_step = 0.0
