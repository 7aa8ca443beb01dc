"""The decoder contract: bytes of one record (a Kafka message, a file chunk) in, data out.

A source hands each record's payload to a :class:`Decoder` and gets a :class:`Decoded`:
points in columns (``keys[i]``, ``timestamps[i]``, ``values[i]``), log records, rejects,
and counts of items skipped on purpose. The source concatenates the results of one poll
into a :class:`~aiops.types.Batch`.

Contract, pitfalls included:

- ``decode()`` never raises because of the payload. Every malformed item becomes a
  :class:`~aiops.types.Reject` whose ``reason`` is a short, stable word from
  :data:`REJECT_REASONS` (a metric label) and whose ``detail`` says what is wrong and
  where (``line 3, column 17``, ``item 2``, ``char 40``). Exceptions from ``decode()``
  mean a bug in the decoder.
- A record may hold many items (lines of line protocol, elements of a JSON array, fields
  of a line). Items are independent: the good ones are kept, the bad ones rejected.
- Nothing is lost silently. Each item ends up as points, log records, a reject, or a
  count in :attr:`Decoded.skipped` under a documented reason (a comment line, a string
  field that has no numeric value).
- ``timestamp`` is the record's own time (the Kafka record timestamp, in unix seconds);
  a decoder uses it for items that carry no time, and the current time if it is None.
- A time outside years 1-9999 (:data:`MIN_TIMESTAMP`, :data:`MAX_TIMESTAMP`), infinite
  or NaN is a ``bad_timestamp`` reject: an alert dated then could not be written (RFC
  3339, every receiver) and would never be delivered. :meth:`Decoded.to_batch` and the
  daemon (:func:`drop_bad_times`) enforce it for every decoder and source.
- Decoders are configured by a nested pydantic ``Config`` (unknown keys are errors,
  frozen) and are registered under their ``type`` name. They keep no state between
  records except caches, so one instance may decode records of many partitions.
"""

from __future__ import annotations

import builtins
import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from aiops.timeutil import MAX_TIMESTAMP, MIN_TIMESTAMP, times_ok
from aiops.types import Batch, LogRecord, Reject, SeriesKey

__all__ = [
    "MAX_TIMESTAMP",
    "MIN_TIMESTAMP",
    "REJECT_REASONS",
    "Decoded",
    "Decoder",
    "DecoderConfig",
    "drop_bad_times",
    "times_ok",
]

#: The reasons a decoder may give, each a metric-label-safe word.
REJECT_REASONS: frozenset[str] = frozenset(
    {
        "bad_utf8",  # the bytes are not UTF-8
        "bad_json",  # not JSON at all (syntax error, too deeply nested)
        "bad_shape",  # JSON, but not the shape the format expects (an array, not an object)
        "bad_line",  # a text line that does not follow the format's grammar
        "missing_field",  # a required field is absent
        "bad_value",  # a value that is not a number, or out of range
        "bad_timestamp",  # a time that does not parse or is out of range
        "bad_labels",  # labels that are not a mapping of strings
    }
)


class DecoderConfig(BaseModel):
    """Base of every decoder's nested ``Config``: strict (unknown keys fail) and frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(slots=True)
class Decoded:
    """What one or more records decoded into.

    Points are columnar: ``keys[i]``, ``timestamps[i]`` (unix seconds) and ``values[i]``
    (NaN for an empty value) describe point ``i``, in payload order. ``skipped`` counts
    items left out on purpose, by reason (documented by each decoder).

    >>> d = Decoded()
    >>> d.add_point(SeriesKey.of("up", {"job": "a"}), 10.0, 1.0)
    >>> d.reject("bad_value", "item 1: 'x' is not a number", b"x")
    >>> d.n_points, d.rejects[0].reason, bool(d)
    (1, 'bad_value', True)
    >>> b = d.to_batch()
    >>> b.n_points, [str(k) for k in b.keys]
    (1, ['up{job="a"}'])
    """

    keys: list[SeriesKey] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    logs: list[LogRecord] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    #: Origin copied into rejects made with :meth:`reject`.
    origin: str = ""

    @property
    def n_points(self) -> int:
        """How many points were decoded."""
        return len(self.keys)

    def __bool__(self) -> bool:
        return bool(self.keys or self.logs or self.rejects or self.skipped)

    def add_point(self, key: SeriesKey, timestamp: float, value: float) -> None:
        """Append one point."""
        self.keys.append(key)
        self.timestamps.append(timestamp)
        self.values.append(value)

    def reject(self, reason: str, detail: str, raw: bytes = b"") -> None:
        """Record a reject with this result's origin."""
        self.rejects.append(Reject(reason, detail, raw, self.origin))

    def skip(self, reason: str, n: int = 1) -> None:
        """Count ``n`` items left out on purpose under ``reason``."""
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def points(self) -> Iterator[tuple[SeriesKey, float, float]]:
        """Yield ``(key, timestamp, value)`` per point, in order."""
        return zip(self.keys, self.timestamps, self.values, strict=True)

    def extend(self, other: Decoded) -> None:
        """Append everything ``other`` holds, keeping order."""
        self.keys.extend(other.keys)
        self.timestamps.extend(other.timestamps)
        self.values.extend(other.values)
        self.logs.extend(other.logs)
        self.rejects.extend(other.rejects)
        for reason, n in other.skipped.items():
            self.skip(reason, n)

    def to_batch(self) -> Batch:
        """The points, logs and rejects as a columnar :class:`~aiops.types.Batch`.

        Points and log records whose time is outside years 1-9999 (or not finite)
        become ``bad_timestamp`` rejects (:func:`drop_bad_times`).
        """
        index: dict[SeriesKey, int] = {}
        series = [index.setdefault(k, len(index)) for k in self.keys]
        batch = Batch(
            keys=list(index),
            series=np.asarray(series, dtype=np.int64),
            timestamps=np.asarray(self.timestamps, dtype=np.float64),
            values=np.asarray(self.values, dtype=np.float64),
            logs=list(self.logs),
            rejects=list(self.rejects),
        )
        return drop_bad_times(batch, self.origin)


def drop_bad_times(batch: Batch, origin: str = "") -> Batch:
    """``batch`` without the points and log records dated outside years 1-9999.

    Each one left out becomes a ``bad_timestamp`` reject (its series, time and value in
    the detail and the raw bytes); keys left without a point are dropped too, so a
    series with only bad times costs no rule a row. The batch itself when all is well
    (one vectorized test over the times).

    >>> b = Batch.from_points([(SeriesKey.of("up"), 1e20, 1.0), (SeriesKey.of("up"), 60.0, 2.0)])
    >>> out = drop_bad_times(b)
    >>> out.timestamps.tolist(), [r.reason for r in out.rejects], out.rejects[0].detail
    ([60.0], ['bad_timestamp'], 'point of up{}: timestamp 1e+20 is outside years 1-9999')
    """
    ok = times_ok(batch.timestamps)
    bad_logs = [r for r in batch.logs if not MIN_TIMESTAMP <= r.timestamp < MAX_TIMESTAMP]
    all_ok = bool(ok.all())
    if all_ok and not bad_logs:
        return batch
    rejects = list(batch.rejects)
    keys, series = batch.keys, batch.series
    ts, vs = batch.timestamps, batch.values
    if not all_ok:
        for j in np.flatnonzero(~ok).tolist():
            key = batch.keys[int(series[j])]
            detail = f"point of {key}: timestamp {float(ts[j])!r} is outside years 1-9999"
            raw = f"{key} {float(vs[j])!r} {float(ts[j])!r}".encode()
            rejects.append(Reject("bad_timestamp", detail, raw, origin))
        used, series = np.unique(series[ok], return_inverse=True)
        keys = [batch.keys[int(k)] for k in used.tolist()]
        series = series.astype(np.int64, copy=False)
        ts, vs = ts[ok], vs[ok]
    for r in bad_logs:
        where = f"log record of {dict(r.labels)}"
        detail = f"{where}: timestamp {r.timestamp!r} is outside years 1-9999"
        rejects.append(Reject("bad_timestamp", detail, r.message.encode()[:4096], origin))
    logs = [r for r in batch.logs if MIN_TIMESTAMP <= r.timestamp < MAX_TIMESTAMP]
    return dataclasses.replace(
        batch, keys=keys, series=series, timestamps=ts, values=vs, logs=logs, rejects=rejects
    )


class Decoder(ABC):
    """Base class of every decoder; see the module docstring for the contract.

    Subclasses set :attr:`type` and a nested ``Config`` (a :class:`DecoderConfig`) and
    implement :meth:`decode`. The constructor takes a ``Config``, a mapping, or keyword
    settings, and raises :class:`ValueError` (pydantic's ``ValidationError``) on bad ones.
    """

    #: The name of the format in config files (``format: influx_line``).
    type: ClassVar[str] = ""
    #: The settings model; subclasses replace it. (``builtins.type``: the class body's
    #: ``type`` is the name above.)
    Config: ClassVar[builtins.type[DecoderConfig]] = DecoderConfig

    def __init__(
        self, config: DecoderConfig | Mapping[str, Any] | None = None, /, **settings: Any
    ) -> None:
        model = self.__class__.Config
        self.config: DecoderConfig
        if isinstance(config, DecoderConfig):
            if isinstance(config, model) and not settings:
                self.config = config
                return
            base = config.model_dump()
        else:
            base = dict(config or {})
        self.config = model.model_validate({**base, **settings})

    @abstractmethod
    def decode(
        self, payload: bytes, *, origin: str = "", timestamp: float | None = None
    ) -> Decoded:
        """Decode one record's payload; never raise because of its content.

        ``origin`` (e.g. ``"metrics/3@1207"``: topic, partition, offset) is copied into
        rejects; ``timestamp`` is used for items without a time of their own.
        """

    @staticmethod
    def default_time(timestamp: float | None) -> float:
        """``timestamp``, or the current time if it is None."""
        return time.time() if timestamp is None else float(timestamp)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
