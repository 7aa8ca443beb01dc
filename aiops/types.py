"""Core data types that flow between sources, the rule engine and detectors.

A :class:`Batch` is columnar: one poll of a source (a Kafka fetch, a PromQL answer, a few
hundred lines of a file) becomes one batch, and everything downstream works on whole
arrays rather than on single points.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import hashlib
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "Batch",
    "BoolArray",
    "FloatArray",
    "IntArray",
    "LogRecord",
    "Reject",
    "SeriesKey",
    "collector_paused",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

METRIC_NAME_LABEL = "__name__"


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for one bounded piece of work, then restore it.

    For code that makes very many tracked objects none of which can be garbage yet (the
    rows of a long CSV, a restore's series keys, a batch of log records): each few
    hundred new objects would otherwise start a collection, and the older generations'
    passes walk the whole heap, again and again, to find no cycle; one pass after is
    enough. A collector already paused stays paused.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """The identity of one time series: a metric name and its sorted labels.

    Two keys built from the same name and labels in any order are equal and have the
    same :attr:`series_id`, which is stable across processes and releases.

    >>> a = SeriesKey.of("cpu", {"host": "a", "dc": "x"})
    >>> b = SeriesKey.of("cpu", {"dc": "x", "host": "a"})
    >>> a == b, str(a)
    (True, 'cpu{dc="x",host="a"}')
    >>> a.series_id
    'a883fed11b651695'
    """

    name: str
    labels: tuple[tuple[str, str], ...] = ()
    # Every point of every batch looks its key up in a registry: the hash of the label
    # tuple is computed once per key, not once per lookup.
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.name, self.labels)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[SeriesKey], tuple[str, tuple[tuple[str, str], ...]]]:
        # Rebuilt, never copied: string hashes differ between processes.
        return (SeriesKey, (self.name, self.labels))

    @classmethod
    def of(cls, name: str, labels: Mapping[str, str] | None = None) -> SeriesKey:
        """Build a key, sorting the labels and dropping a ``__name__`` label."""
        items = tuple(
            sorted((str(k), str(v)) for k, v in (labels or {}).items() if k != METRIC_NAME_LABEL)
        )
        return cls(name, items)

    @property
    def label_dict(self) -> dict[str, str]:
        """The labels as a new dict, including ``__name__``."""
        return {METRIC_NAME_LABEL: self.name, **dict(self.labels)}

    @property
    def series_id(self) -> str:
        """A 64-bit hex digest of the canonical text form; stable across runs."""
        return hashlib.blake2b(str(self).encode(), digest_size=8).hexdigest()

    def __str__(self) -> str:
        inner = ",".join(f'{k}="{_escape(v)}"' for k, v in self.labels)
        return f"{self.name}{{{inner}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One log event: when, from which stream (labels), and the message text."""

    timestamp: float
    message: str
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def many(
        cls, timestamp: float, messages: Sequence[str], labels: tuple[tuple[str, str], ...] = ()
    ) -> list[LogRecord]:
        """``[LogRecord(timestamp, m, labels) for m in messages]``, several times faster.

        The fields are set through their slot descriptors in C-level loops (what the
        frozen dataclass's ``__init__`` does one record at a time in Python), and the
        cyclic garbage collector is paused meanwhile: thousands of new tracked objects
        would start several collections of the whole heap in the middle of making them
        (none can be garbage yet), where one after is enough.
        """
        with collector_paused():
            out = list(map(object.__new__, itertools.repeat(cls, len(messages))))
            collections.deque(map(_SET_TS, out, itertools.repeat(timestamp)), 0)
            collections.deque(map(_SET_MESSAGE, out, messages), 0)
            collections.deque(map(_SET_LABELS, out, itertools.repeat(labels)), 0)
        return out

    @classmethod
    def columns(
        cls,
        timestamps: Sequence[float],
        messages: Sequence[str],
        labels: Sequence[tuple[tuple[str, str], ...]],
    ) -> list[LogRecord]:
        """``[LogRecord(t, m, l) for t, m, l in zip(...)]``, made as :meth:`many` makes them."""
        if not len(timestamps) == len(messages) == len(labels):
            raise ValueError("timestamps, messages and labels must have one length")
        with collector_paused():
            out = list(map(object.__new__, itertools.repeat(cls, len(messages))))
            collections.deque(map(_SET_TS, out, timestamps), 0)
            collections.deque(map(_SET_MESSAGE, out, messages), 0)
            collections.deque(map(_SET_LABELS, out, labels), 0)
        return out


_SET_TS = vars(LogRecord)["timestamp"].__set__
_SET_MESSAGE = vars(LogRecord)["message"].__set__
_SET_LABELS = vars(LogRecord)["labels"].__set__


@dataclass(frozen=True, slots=True)
class Reject:
    """An input item that could not be decoded.

    Rejects are data, not errors: they are counted by ``reason`` (a short, stable,
    metric-label-safe word such as ``"bad_json"``), and kept with the raw bytes and a
    human-readable ``detail`` so an operator can look at them later.
    """

    reason: str
    detail: str
    raw: bytes = b""
    origin: str = ""


@dataclass(frozen=True, slots=True)
class Batch:
    """Points, log records and rejects from one poll of one source.

    Points are columnar: ``series[i]`` indexes into ``keys`` and gives the series of
    point ``i``, taken at ``timestamps[i]`` (unix seconds, UTC) with ``values[i]``
    (NaN for an empty value). A batch may hold several points of one series; they are
    in the order the source produced them.
    """

    keys: Sequence[SeriesKey] = ()
    series: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    timestamps: FloatArray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    values: FloatArray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    logs: Sequence[LogRecord] = ()
    rejects: Sequence[Reject] = ()
    #: Set by pull sources: the key (``group/alert``) of the rule whose query produced
    #: these points. Such a batch goes to that rule only; "" means every rule of the source.
    rule: str = ""

    def __post_init__(self) -> None:
        n = len(self.series)
        if len(self.timestamps) != n or len(self.values) != n:
            msg = (
                f"batch columns differ in length: series={n}, "
                f"timestamps={len(self.timestamps)}, values={len(self.values)}"
            )
            raise ValueError(msg)

    @property
    def n_points(self) -> int:
        """How many points the batch holds."""
        return len(self.series)

    def __bool__(self) -> bool:
        return bool(self.n_points or self.logs or self.rejects)

    @classmethod
    def from_points(
        cls,
        points: Iterable[tuple[SeriesKey, float, float]],
        *,
        logs: Sequence[LogRecord] = (),
        rejects: Sequence[Reject] = (),
    ) -> Batch:
        """Build a batch from ``(key, timestamp, value)`` triples, keeping their order.

        >>> k = SeriesKey.of("up")
        >>> b = Batch.from_points([(k, 0.0, 1.0), (k, 15.0, 0.0)])
        >>> b.n_points, b.series.tolist(), b.values.tolist()
        (2, [0, 0], [1.0, 0.0])
        """
        index: dict[SeriesKey, int] = {}
        series: list[int] = []
        ts: list[float] = []
        vs: list[float] = []
        for key, t, v in points:
            series.append(index.setdefault(key, len(index)))
            ts.append(t)
            vs.append(v)
        return cls(
            keys=list(index),
            series=np.asarray(series, dtype=np.int64),
            timestamps=np.asarray(ts, dtype=np.float64),
            values=np.asarray(vs, dtype=np.float64),
            logs=logs,
            rejects=rejects,
        )

    def points(self) -> Iterable[tuple[SeriesKey, float, float]]:
        """Yield ``(key, timestamp, value)`` per point, in order (slow; for tests)."""
        for s, t, v in zip(
            self.series.tolist(), self.timestamps.tolist(), self.values.tolist(), strict=False
        ):
            yield self.keys[s], t, v


JsonDict = dict[str, Any]
