"""The per-rule series registry: which series a rule sees, and their dense indices."""

from __future__ import annotations

import heapq
import itertools
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from aiops.state.rulestate import KeysRef
from aiops.types import IntArray, KeyTexts, SeriesKey, key_fields

__all__ = ["DROPPED", "NOT_SELECTED", "SeriesRegistry"]

#: Index given to a series the rule's selector does not match.
NOT_SELECTED = -1
#: Index given to a matching series beyond the rule's cap: counted, not stored.
DROPPED = -2
#: Keys a registry remembers as not selected (or dropped) before it forgets them all:
#: a million keys no rule takes cost about 100 MiB per rule without a bound.
MAX_UNMATCHED = 100_000

_text = operator.attrgetter("_text")  # SeriesKey.text, without the property's frame


class SeriesRegistry:
    """Maps series keys to dense row indices ``0..n-1`` for one rule, up to a cap.

    Detectors keep one row of state per index. Rows are handed out in order of first
    appearance; a row freed by :meth:`free` (its series stopped reporting and was
    evicted) goes to the next new series, lowest row first, after the rule has reset
    the row's state (or, ``reuse=False``, the row is retired and never handed out
    again). At most ``max_series`` series hold a row at once: beyond that, new
    matching series get :data:`DROPPED`, are counted in :attr:`dropped` (once while
    remembered, see below) and cost no state; when rows are freed, new series get in.

    Verdicts for keys that hold no row (not selected, or over the cap) are remembered
    in caches of at most ``max_unmatched`` keys each, emptied whole when full (the
    verdict is then computed again): series that no rule takes cost bounded memory.

    A series is held as its key's text (:attr:`SeriesKey.text`, one string), not as
    the key: a key, its label tuples and strings were about 300 bytes a series; the
    text is one string, and its key is made again when asked for (:meth:`key`,
    :attr:`keys`). Lookups are by text (compared and hashed in C).

    >>> reg = SeriesRegistry(lambda k: k.name == "cpu", max_series=1)
    >>> cpu_a, cpu_b = SeriesKey.of("cpu", {"h": "a"}), SeriesKey.of("cpu", {"h": "b"})
    >>> keys = [cpu_a, SeriesKey.of("mem"), cpu_b]
    >>> reg.resolve(keys).tolist(), len(reg), reg.dropped
    ([0, -1, -2], 1, 1)
    >>> reg.free([0])
    1
    >>> reg.resolve([cpu_b]).tolist(), reg.key(0) == cpu_b, reg.live, reg.evicted
    ([0], True, 1, 1)
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
        #: False while the daemon is over its memory budget (``limits.max_memory``): new
        #: series are then dropped as over the cap, existing ones still scored.
        self.admitting = True
        self.dropped = 0
        #: Series forgotten after their staleness period (:meth:`free`).
        self.evicted = 0
        #: Changes whenever a row gets another key (a detector that groups series by key
        #: is told again).
        self.generation = 0
        # Row -> key text; a freed row keeps its old text until reused (not in _index then).
        self._keys: list[str] = []
        self._index: dict[str, int] = {}
        self._free: list[int] = []  # a heap of freed rows
        self._retired: set[int] = set()  # freed rows never handed out again
        self._reused: list[int] = []  # freed rows handed out since take_reused()
        self._unmatched: dict[str, int] = {}
        self._over_cap: dict[str, int] = {}

    def __len__(self) -> int:
        """Rows (live series plus freed rows waiting for a new series)."""
        return len(self._keys)

    @property
    def live(self) -> int:
        """Series that hold a row now."""
        return len(self._index)

    @property
    def unmatched(self) -> int:
        """Keys remembered as not selected or over the cap (each cache bounded)."""
        return len(self._unmatched) + len(self._over_cap)

    def key(self, index: int) -> SeriesKey:
        """The key registered at ``index`` (a freed row: its last key), made anew."""
        return SeriesKey.from_text(self._keys[index])

    @property
    def keys(self) -> KeyTexts:
        """The key of every row, by index (a freed row: its last key).

        A view: each key is made when read; ``keys.texts`` is the registry's own list of
        texts (read it, do not change it).
        """
        return KeyTexts(self._keys)

    def is_live(self, index: int) -> bool:
        """True if row ``index`` holds a series now (not freed)."""
        return 0 <= index < len(self._keys) and self._index.get(self._keys[index]) == index

    def lookup(self, keys: Sequence[SeriesKey]) -> IntArray:
        """Indices of keys that hold a row, -1 for the others; registers nothing."""
        got = map(self._index.get, map(_text, keys), itertools.repeat(-1))
        return np.fromiter(got, dtype=np.int64, count=len(keys))

    def resolve(self, keys: Sequence[SeriesKey]) -> IntArray:
        """Indices for a batch's keys: row index, NOT_SELECTED, or DROPPED."""
        texts = list(map(_text, keys))
        # Every key's row in one C-level pass; only the keys without one go on below.
        got = list(map(self._index.get, texts))
        if None not in got:
            return np.array(got, dtype=np.int64)
        index = self._index
        unmatched = self._unmatched
        over_cap = self._over_cap
        for i in [i for i, j in enumerate(got) if j is None]:
            text = texts[i]
            j = index.get(text)  # registered by an earlier point of this batch
            if j is None:
                j = unmatched.get(text)
                if j is None:
                    j = over_cap.get(text)
                    if j is None:
                        j = self._register(keys[i], text)
                    elif len(index) < self.max_series:  # room was made: in, not recounted
                        del over_cap[text]
                        j = self._register(keys[i], text)
            got[i] = j
        return np.array(got, dtype=np.int64)

    def _register(self, key: SeriesKey, text: str) -> int:
        if not self.matches(key):
            self._remember(self._unmatched, text, NOT_SELECTED)
            return NOT_SELECTED
        if len(self._index) >= self.max_series or not self.admitting:
            self.dropped += 1
            self._remember(self._over_cap, text, DROPPED)
            return DROPPED
        if self._free:
            j = heapq.heappop(self._free)
            self._keys[j] = text
            self._reused.append(j)
        else:
            j = len(self._keys)
            self._keys.append(text)
        self._index[text] = j
        self.generation += 1
        return j

    def _remember(self, cache: dict[str, int], text: str, verdict: int) -> None:
        if len(cache) >= self.max_unmatched:
            # Emptied whole (cheaper than an LRU per lookup): the verdicts are recomputed,
            # and a key over the cap is counted again once.
            cache.clear()
        if self.max_unmatched:
            cache[text] = verdict

    def admit(self, on: bool) -> None:
        """Take new series (``True``) or drop them as over the cap; see :attr:`admitting`.

        When admission resumes, keys dropped meanwhile are asked again.
        """
        if on and not self.admitting:
            self._over_cap.clear()
        self.admitting = on

    def free(self, rows: Sequence[int], *, reuse: bool = True) -> int:
        """Forget the series of these rows; returns how many were live.

        With ``reuse`` the rows go to the next new series (the caller resets their state
        first); without it (a detector whose rows cannot be reset) they are retired: never
        handed out again, a new series gets a new row. Either way the keys no longer
        count against the cap; keys dropped over the cap get the rows when next seen
        (not counted again).
        """
        n = 0
        for r in rows:
            r = int(r)
            if self.is_live(r):
                del self._index[self._keys[r]]
                if reuse:
                    heapq.heappush(self._free, r)
                else:
                    self._retired.add(r)
                n += 1
        if n:
            self.evicted += n
            self.generation += 1
        return n

    def take_reused(self) -> list[int]:
        """Freed rows handed to a new series since the last call (their owner marks them)."""
        out, self._reused = self._reused, []
        return out

    def state_dict(self) -> dict[str, Any]:
        """Every row's key in index order and the freed rows, as plain JSON."""
        fields = map(key_fields, self._keys)
        return {
            "keys": [[name, [list(kv) for kv in labels]] for name, labels in fields],
            **self.state_dict_without_keys(),
        }

    def snapshot_state(self) -> dict[str, Any]:
        """:meth:`state_dict` with the keys as a :class:`~aiops.state.rulestate.KeysRef`.

        A shallow copy of the list of key texts: cheap on the data loop, encoded by the
        writer.
        """
        return {**self.state_dict_without_keys(), "keys": KeysRef(KeyTexts(self._keys))}

    def state_dict_without_keys(self) -> dict[str, Any]:
        """The freed rows and the counts (everything but the keys)."""
        return {
            "free": sorted(self._free),
            "retired": sorted(self._retired),
            "dropped": self.dropped,
            "evicted": self.evicted,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the keys, their indices and the freed rows; verdicts are recomputed.

        The keys are ``[name, [[label, value], ...]]`` lists, keys, or
        :class:`~aiops.types.KeyTexts` (a state file's: its texts taken as they are).
        """
        keys = state["keys"]
        made: dict[str, int] | None = None
        if isinstance(keys, KeyTexts):
            self._keys = list(keys.texts)  # one C-level copy
            made, keys.rows = keys.rows, None  # a restore's index: the first taker's
        elif isinstance(keys, list) and set(map(type, keys)) <= {SeriesKey}:
            self._keys = list(map(_text, keys))
        else:
            self._keys = [
                k.text
                if isinstance(k, SeriesKey)
                else SeriesKey(k[0], tuple((a, b) for a, b in k[1])).text
                for k in keys
            ]
        n = len(self._keys)
        free = sorted({int(r) for r in state.get("free", ()) if 0 <= int(r) < n})
        retired = {int(r) for r in state.get("retired", ()) if 0 <= int(r) < n} - set(free)
        freed = set(free) | retired
        if freed:
            self._index = {k: i for i, k in enumerate(self._keys) if i not in freed}
        elif made is not None and len(made) == n:
            self._index = made
        else:
            self._index = dict(zip(self._keys, range(n), strict=True))
        if len(self._index) + len(freed) != n:
            raise ValueError("series registry state lists a key twice")
        self._free = free  # a sorted list is a heap
        self._retired = retired
        self._reused = []
        self._unmatched = {}
        self._over_cap = {}
        self.dropped = int(state.get("dropped", 0))
        self.evicted = int(state.get("evicted", 0))
        self.generation += 1
