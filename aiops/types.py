"""Core data types that flow between sources, the rule engine and detectors.

A :class:`Batch` is columnar: one poll of a source (a Kafka fetch, a PromQL answer, a few
hundred lines of a file) becomes one batch, and everything downstream works on whole
arrays rather than on single points.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import gc
import hashlib
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np
import numpy.typing as npt

__all__ = [
    "Batch",
    "BoolArray",
    "FloatArray",
    "IntArray",
    "KeyTexts",
    "LogRecord",
    "Reject",
    "SeriesKey",
    "collector_paused",
    "key_fields",
    "key_text",
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


#: Separator of a key's strings in its text (:attr:`SeriesKey.text`).
KEY_SEP = "\x00"


def key_text(name: str, labels: tuple[tuple[str, str], ...]) -> str:
    """The text of a key: ``name``, then each label name and value, joined by NUL.

    One string, compared and hashed in C, that the series registry keeps in place of the
    key (:class:`KeyTexts`). A key that text cannot tell apart from another (a string
    holding a NUL, a label not a pair of strings) gets ``NUL + repr((name, labels))``
    instead: the only texts with exactly one NUL (the plain ones hold two per label),
    so every key has a text of its own.
    """
    if labels.__class__ is tuple and name.__class__ is str:
        if not labels:
            if KEY_SEP not in name:
                return name
        else:
            try:  # tuple.__len__ refuses a label that is not a tuple
                if min(map(tuple.__len__, labels)) >= 2:
                    text = KEY_SEP.join((name, *itertools.chain.from_iterable(labels)))
                    # Each pair at least two strings and no string holding a NUL: every
                    # pair exactly two, and the text splits back into them.
                    if text.count(KEY_SEP) == 2 * len(labels):
                        return text
            except TypeError:  # a label not a tuple, a value not a string
                pass
    return KEY_SEP + repr((name, labels))


def key_fields(text: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The name and labels of a key's text (:func:`key_text`)."""
    if text.count(KEY_SEP) == 1 and text.startswith(KEY_SEP):
        name, labels = ast.literal_eval(text[1:])
        return name, labels
    parts = text.split(KEY_SEP)
    return parts[0], tuple(zip(parts[1::2], parts[2::2], strict=True))


@dataclass(frozen=True, slots=True)
class SeriesKey:
    r"""The identity of one time series: a metric name and its sorted labels.

    Two keys built from the same name and labels in any order are equal and have the
    same :attr:`series_id`, which is stable across processes and releases.

    >>> a = SeriesKey.of("cpu", {"host": "a", "dc": "x"})
    >>> b = SeriesKey.of("cpu", {"dc": "x", "host": "a"})
    >>> a == b, str(a)
    (True, 'cpu{dc="x",host="a"}')
    >>> a.series_id
    'a883fed11b651695'
    >>> a.text, SeriesKey.from_text(a.text) == a
    ('cpu\x00dc\x00x\x00host\x00a', True)
    """

    name: str
    labels: tuple[tuple[str, str], ...] = ()
    # The key's text (key_text), made once: keys compare and hash as their texts (C-level
    # string compares; the string caches its hash), and the series registry keeps the
    # text alone, one string a series instead of a key, its tuples and its strings.
    _text: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _SET_TEXT(self, key_text(self.name, self.labels))

    def __hash__(self) -> int:
        return hash(self._text)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is SeriesKey:
            return self._text == other._text
        return NotImplemented

    def __reduce__(self) -> tuple[type[SeriesKey], tuple[str, tuple[tuple[str, str], ...]]]:
        # Rebuilt, never copied: string hashes differ between processes.
        return (SeriesKey, (self.name, self.labels))

    @property
    def text(self) -> str:
        """The key as one string (:func:`key_text`); :meth:`from_text` makes it a key again."""
        return self._text

    @classmethod
    def from_text(cls, text: str) -> SeriesKey:
        """The key whose :attr:`text` is ``text``."""
        name, labels = key_fields(text)
        return cls(name, labels)

    @classmethod
    def of(cls, name: str, labels: Mapping[str, str] | None = None) -> SeriesKey:
        """Build a key, sorting the labels and dropping a ``__name__`` label."""
        items = tuple(
            sorted((str(k), str(v)) for k, v in (labels or {}).items() if k != METRIC_NAME_LABEL)
        )
        if cls is not SeriesKey or name.__class__ is not str:
            return cls(name, items)
        # Pairs of strings already: the text without key_text's checks, the slots set
        # without the dataclass __init__ (every decoder makes its keys here).
        key = object.__new__(SeriesKey)
        _SET_KEY_NAME(key, name)
        _SET_KEY_LABELS(key, items)
        text = KEY_SEP.join((name, *itertools.chain.from_iterable(items))) if items else name
        if text.count(KEY_SEP) != 2 * len(items):
            text = KEY_SEP + repr((name, items))
        _SET_TEXT(key, text)
        return key

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


_SET_KEY_NAME = vars(SeriesKey)["name"].__set__
_SET_KEY_LABELS = vars(SeriesKey)["labels"].__set__
_SET_TEXT = vars(SeriesKey)["_text"].__set__


class KeyTexts(Sequence[SeriesKey]):
    """A sequence of series keys held as their texts (:attr:`SeriesKey.text`).

    Each key is made when it is read (``keys[i]``, iteration); :attr:`texts` is the list
    of texts itself, not a copy. The series registry's keys, and a restore's: a restore
    also gives :attr:`rows`, each text's position, made while the arrays are still
    being read, which the first registry that loads these keys takes as its own.

    >>> keys = KeyTexts([SeriesKey.of("up", {"job": "a"}).text, "mem"])
    >>> len(keys), keys[1], keys == [SeriesKey.of("up", {"job": "a"}), SeriesKey("mem")]
    (2, SeriesKey(name='mem', labels=()), True)
    """

    __slots__ = ("rows", "texts")

    def __init__(self, texts: list[str], rows: dict[str, int] | None = None) -> None:
        self.texts = texts
        #: ``{text: position}`` of :attr:`texts` (no text twice), or None.
        self.rows = rows

    def __len__(self) -> int:
        return len(self.texts)

    @overload
    def __getitem__(self, i: int) -> SeriesKey: ...
    @overload
    def __getitem__(self, i: slice) -> list[SeriesKey]: ...
    def __getitem__(self, i: int | slice) -> SeriesKey | list[SeriesKey]:
        if isinstance(i, slice):
            return list(map(SeriesKey.from_text, self.texts[i]))
        return SeriesKey.from_text(self.texts[i])

    def __iter__(self) -> Iterator[SeriesKey]:
        return map(SeriesKey.from_text, self.texts)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, KeyTexts):
            return self.texts == other.texts
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(other) == len(self.texts) and all(
                isinstance(k, SeriesKey) and k.text == t
                for k, t in zip(other, self.texts, strict=True)
            )
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"KeyTexts({len(self.texts)} keys)"


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
