"""The per-rule series registry: which series a rule sees, and their dense indices."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from aiops.types import IntArray, SeriesKey

__all__ = ["DROPPED", "NOT_SELECTED", "SeriesRegistry"]

#: Index given to a series the rule's selector does not match.
NOT_SELECTED = -1
#: Index given to a matching series beyond the rule's cap: counted, not stored.
DROPPED = -2
#: Keys a registry remembers as not selected (or dropped) before it forgets them all:
#: a million keys no rule takes cost about 100 MiB per rule without a bound.
MAX_UNMATCHED = 100_000


class SeriesRegistry:
    """Maps series keys to dense indices ``0..n-1`` for one rule, up to a cap.

    Detectors keep one row of state per index, so indices are handed out in order of
    first appearance and never reused. Once ``max_series`` series are registered, new
    matching series are dropped: they get :data:`DROPPED`, are counted in
    :attr:`dropped`, and cost no state.

    >>> reg = SeriesRegistry(lambda k: k.name == "cpu", max_series=1)
    >>> cpu_a, cpu_b = SeriesKey.of("cpu", {"h": "a"}), SeriesKey.of("cpu", {"h": "b"})
    >>> keys = [cpu_a, SeriesKey.of("mem"), cpu_b]
    >>> reg.resolve(keys).tolist(), len(reg), reg.dropped
    ([0, -1, -2], 1, 1)
    """

    def __init__(
        self,
        matches: Callable[[SeriesKey], bool],
        *,
        max_series: int,
        max_unmatched: int = MAX_UNMATCHED,
    ) -> None:
        if max_series < 1:
            raise ValueError(f"max_series must be at least 1, got {max_series}")
        if max_unmatched < 0:
            raise ValueError(f"max_unmatched must not be negative, got {max_unmatched}")
        self.matches = matches
        self.max_series = max_series
        self.max_unmatched = max_unmatched
        self.dropped = 0
        #: Series forgotten after their staleness period (:meth:`evict`).
        self.evicted = 0
        self._keys: list[SeriesKey] = []
        self._index: dict[SeriesKey, int] = {}
        # Keys the selector said no to (and keys over the cap, counted once each): a
        # cache, emptied when full, so that series no rule takes cost bounded memory.
        self._unmatched: dict[SeriesKey, int] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def key(self, index: int) -> SeriesKey:
        """The key registered at ``index``."""
        return self._keys[index]

    @property
    def keys(self) -> Sequence[SeriesKey]:
        """All registered keys, by index."""
        return self._keys

    @property
    def unmatched(self) -> int:
        """Keys remembered as not selected (or over the cap): at most ``max_unmatched``."""
        return len(self._unmatched)

    def lookup(self, keys: Sequence[SeriesKey]) -> IntArray:
        """Indices of keys already registered, -1 for the others; registers nothing."""
        index = self._index
        return np.fromiter((index.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))

    def resolve(self, keys: Sequence[SeriesKey]) -> IntArray:
        """Indices for a batch's keys: dense index, NOT_SELECTED, or DROPPED."""
        out = np.empty(len(keys), dtype=np.int64)
        index = self._index
        unmatched = self._unmatched
        for i, key in enumerate(keys):
            j = index.get(key)
            if j is None:
                j = unmatched.get(key)
                if j is None:
                    j = self._register(key)
            out[i] = j
        return out

    def _register(self, key: SeriesKey) -> int:
        if not self.matches(key):
            self._remember(key, NOT_SELECTED)
            return NOT_SELECTED
        if len(self._keys) >= self.max_series:
            self.dropped += 1
            self._remember(key, DROPPED)
            return DROPPED
        j = len(self._keys)
        self._keys.append(key)
        self._index[key] = j
        return j

    def _remember(self, key: SeriesKey, verdict: int) -> None:
        if len(self._unmatched) >= self.max_unmatched:
            # Emptied whole (cheaper than an LRU per lookup): the verdicts are recomputed,
            # and a key over the cap is counted again once.
            self._unmatched.clear()
        if self.max_unmatched:
            self._unmatched[key] = verdict

    def state_dict(self) -> dict[str, Any]:
        """Registered keys in index order, as plain JSON."""
        return {
            "keys": [[k.name, [list(kv) for kv in k.labels]] for k in self._keys],
            "dropped": self.dropped,
            "evicted": self.evicted,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the keys and their indices; selector verdicts are recomputed lazily."""
        self._keys = [
            SeriesKey(name, tuple((k, v) for k, v in labels)) for name, labels in state["keys"]
        ]
        self._index = {k: i for i, k in enumerate(self._keys)}
        self._unmatched = {}
        self.dropped = int(state.get("dropped", 0))
        self.evicted = int(state.get("evicted", 0))
