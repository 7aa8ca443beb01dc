"""JSON log events as log shippers write them to Kafka (Filebeat, Fluent Bit, Vector)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import Field, field_validator

from aiops.pipeline.decoder import Decoded, DecoderConfig
from aiops.types import LogRecord, collector_paused

from ._common import (
    MISSING,
    ItemError,
    JsonRecordDecoder,
    TimeFormat,
    compile_path,
    get_path,
    parse_time,
    scalar_text,
)

__all__ = ["PRESETS", "LogJsonDecoder"]

#: Field paths of each shipper's events. Paths are tried in order; absent label fields
#: add no label.
PRESETS: dict[str, dict[str, Any]] = {
    # Filebeat Kafka output, codec json: ECS fields.
    # {"@timestamp": "2024-05-01T12:00:00.123Z", "message": "...",
    #  "host": {"name": "web-1"}, "log": {"file": {"path": "/var/log/app.log"}}, ...}
    "filebeat": {
        "message_field": ["message"],
        "timestamp_field": ["@timestamp"],
        "label_fields": {"host": "host.name", "filename": "log.file.path"},
    },
    # Fluent Bit Kafka output, format json: the record plus timestamp_key (default
    # "@timestamp", a double unless timestamp_format iso8601); tail puts text in "log";
    # the kubernetes filter adds "kubernetes.*". "date" is json_date_key of other outputs.
    "fluentbit": {
        "message_field": ["log", "message"],
        "timestamp_field": ["@timestamp", "date", "time"],
        "label_fields": {
            "namespace": "kubernetes.namespace_name",
            "pod": "kubernetes.pod_name",
            "container": "kubernetes.container_name",
        },
    },
    # Vector kafka sink, encoding.codec json, log events:
    # {"message": "...", "timestamp": "2024-05-01T12:00:00.123456789Z", "host": "web-1",
    #  "source_type": "file", "file": "/var/log/app.log"}
    "vector": {
        "message_field": ["message"],
        "timestamp_field": ["timestamp"],
        "label_fields": {"host": "host", "source_type": "source_type", "filename": "file"},
    },
}
_DEFAULTS: dict[str, Any] = {
    "message_field": ["message"],
    "timestamp_field": ["@timestamp", "timestamp"],
    "label_fields": {},
}


class LogJsonDecoder(JsonRecordDecoder):
    """Decode JSON log events: a message, a time and stream labels per event.

    ``preset`` (``filebeat``, ``fluentbit``, ``vector``; see :data:`PRESETS`) fills in
    ``message_field``, ``timestamp_field`` and ``label_fields``; anything set explicitly
    wins. Fields are dot paths (``log.file.path``); ``message_field`` and
    ``timestamp_field`` may list several, tried in order. ``label_fields`` is a
    ``{label: path}`` mapping or a list of paths (labels named after the last segment);
    constant ``labels`` are added to every stream. A label field that is absent, null or
    not a scalar adds no label. Keep labels low-cardinality: they define streams.

    A record is one event, or a JSON array of events (each kept or rejected alone). An
    event without a time takes the record's. A message that is not a string is kept as
    its compact JSON text. Rejects (``raw`` = the record): ``bad_utf8``, ``bad_json``,
    ``bad_shape`` (an event that is not an object), ``missing_field`` (no message;
    ``missing_message: raw_json`` keeps the whole event as the message instead),
    ``bad_timestamp``.

    >>> d = LogJsonDecoder(preset="vector")
    >>> out = d.decode(b'{"message": "disk full", "timestamp": "1970-01-01T00:00:01.5Z",'
    ...                b' "host": "web-1", "source_type": "file", "file": "/var/log/syslog"}')
    >>> r = out.logs[0]
    >>> r.timestamp, r.message
    (1.5, 'disk full')
    >>> r.labels
    (('filename', '/var/log/syslog'), ('host', 'web-1'), ('source_type', 'file'))
    """

    type = "log_json"

    class Config(DecoderConfig):
        """Settings of :class:`LogJsonDecoder`."""

        preset: Literal["filebeat", "fluentbit", "vector"] | None = None
        message_field: list[str] | None = None
        timestamp_field: list[str] | None = None
        timestamp_format: TimeFormat = "auto"
        label_fields: dict[str, str] | None = None
        #: Constant stream labels.
        labels: dict[str, str] = Field(default_factory=dict)
        #: Without a message: ``reject`` the event, or keep it whole as ``raw_json``.
        missing_message: Literal["reject", "raw_json"] = "reject"

        @field_validator("message_field", "timestamp_field", mode="before")
        @classmethod
        def _one_or_many(cls, v: Any) -> Any:
            return [v] if isinstance(v, str) else v

        @field_validator("label_fields", mode="before")
        @classmethod
        def _label_list(cls, v: Any) -> Any:
            if isinstance(v, list | tuple):
                return {str(p).rsplit(".", 1)[-1]: p for p in v}
            return v

        @field_validator("message_field", "timestamp_field")
        @classmethod
        def _paths(cls, v: list[str] | None) -> list[str] | None:
            for p in v or ():
                compile_path(p)
            return v

    config: Config

    def __init__(
        self, config: DecoderConfig | Mapping[str, Any] | None = None, /, **settings: Any
    ) -> None:
        super().__init__(config, **settings)
        c = self.config
        base = PRESETS[c.preset] if c.preset else _DEFAULTS
        message = c.message_field if c.message_field is not None else base["message_field"]
        stamp = c.timestamp_field if c.timestamp_field is not None else base["timestamp_field"]
        fields = c.label_fields if c.label_fields is not None else base["label_fields"]
        self.message_paths = [(p, compile_path(p)) for p in message]
        self.timestamp_paths = [(p, compile_path(p)) for p in stamp]
        self.label_paths = [(k, compile_path(p)) for k, p in fields.items()]
        # Every path one key: the events of an array go through :meth:`_decode_items`' loop.
        paths = [segs for _, segs in (*self.message_paths, *self.timestamp_paths)]
        paths += [segs for _, segs in self.label_paths]
        self._flat = all(len(segs) == 1 for segs in paths)
        self._stream_cache: dict[tuple[Any, ...], tuple[tuple[str, str], ...]] = {}
        #: The same by the one label field's value (:meth:`_columns`, one label field).
        self._one_label_cache: dict[Any, tuple[tuple[str, str], ...]] = {}
        #: Arrays of events go through :meth:`_columns` first.
        self._fast = self._flat and c.timestamp_format == "auto"
        self._mkeys = [segs[0] for _, segs in self.message_paths]
        self._tkeys = [segs[0] for _, segs in self.timestamp_paths]
        self._lkeys = [segs[0] for _, segs in self.label_paths]

    def decode(
        self, payload: bytes, *, origin: str = "", timestamp: float | None = None
    ) -> Decoded:
        """Decode one record; see the class docstring.

        A JSON array of events of the common shape (see :meth:`_columns`) is parsed by
        orjson and made field by field; any other record (and any array that holds one
        event of another shape, or that orjson refuses) is decoded as before, by the
        standard library's parser and :meth:`_decode_items`, with the same results.
        orjson differs from it only where such an array cannot be (NaN, numbers that
        overflow a double, integers past 64 bits that it makes floats of, lone
        surrogates, which it refuses): those fields are absent from the common shape
        or take an event out of it, and only the fields read here are kept.
        """
        if self._fast:
            out = Decoded(origin=origin)
            # The parsed events are garbage once read, freed by their reference counts:
            # with the collector paused until then, no collection walks them (or the
            # heap, to find no cycle) while they are many and alive.
            with collector_paused():
                done = self._parse_columns(payload, out, self.default_time(timestamp))
            if done:
                return out
        return super().decode(payload, origin=origin, timestamp=timestamp)

    def _parse_columns(self, payload: bytes, out: Decoded, default_ts: float) -> bool:
        """Parse ``payload`` with orjson, then :meth:`_columns`; False if not such an array."""
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return False
        return type(doc) is list and self._columns(doc, out, default_ts)

    def _columns(self, items: list[Any], out: Decoded, default_ts: float) -> bool:
        """The records :meth:`_decode_items` makes of ``items``, made one field at a time.

        Only when every event is of the common shape (an object; its message a string;
        no time, or a time in unix seconds; its label values strings or absent): each
        field is read from all events in one C-level loop and checked as a column.
        Otherwise False, with ``out`` and the stream cache untouched.
        """
        n = len(items)
        if not n:
            return True
        if set(map(type, items)) != {dict}:
            return False
        get = dict.get
        messages = _column(items, self._mkeys, get)
        if set(map(type, messages)) != {str}:
            return False
        if self._tkeys:
            stamps: list[Any] = _column(items, self._tkeys, get)
            if None in stamps:
                stamps = [default_ts if t is None else t for t in stamps]
        else:
            stamps = [default_ts] * n
        kinds = set(map(type, stamps))
        if not kinds <= {float, int}:  # not bool, not a string
            return False
        if not (min(stamps) >= 0 and max(stamps) < _SECONDS_BELOW):
            return False
        lkeys = self._lkeys
        if len(lkeys) == 1:  # the values themselves, not 1-tuples, are the cache's keys
            values: list[Any] = list(map(get, items, itertools.repeat(lkeys[0])))
            cache = self._one_label_cache
        else:
            if lkeys:
                cols = [list(map(get, items, itertools.repeat(k))) for k in lkeys]
                values = list(zip(*cols, strict=True))
            else:
                values = [()] * n
            cache = self._stream_cache
        try:
            found = list(map(cache.get, values))
        except TypeError:  # an object or array value: not a label, _item says so
            return False
        new: dict[tuple[Any, ...], tuple[tuple[str, str], ...]] = {}
        if None in found:
            const = dict(self.config.labels)
            names = [label for label, _ in self.label_paths]
            missing = (v for v, f in zip(values, found, strict=True) if f is None)
            for v in dict.fromkeys(missing):
                vs = (v,) if cache is self._one_label_cache else v
                if not _plain_values(vs):
                    return False
                labels = dict(const)
                labels.update((k, x) for k, x in zip(names, vs, strict=True) if x is not None)
                new[v] = tuple(sorted(labels.items()))
            for v, made in new.items():  # as _decode_items adds them, in order
                if len(cache) >= _STREAM_CACHE_MAX:
                    cache.clear()
                cache[v] = made
            found = [new[v] if f is None else f for f, v in zip(found, values, strict=True)]
        if kinds != {float}:
            stamps = list(map(float, stamps))
        out.logs.extend(LogRecord.columns(stamps, messages, found))
        return True

    def _decode_items(self, items: list[Any], out: Decoded, raw: bytes, default_ts: float) -> None:
        """The events of an array; what :meth:`_item` gives, faster for the common event.

        With one-key paths, an event with a string message, no time or a time in unix
        seconds, and label values that are strings is made here, its labels looked up
        in a cache by value; any other event goes through :meth:`_item`.
        """
        if not self._flat or self.config.timestamp_format != "auto":
            super()._decode_items(items, out, raw, default_ts)
            return
        mkeys = [segs[0] for _, segs in self.message_paths]
        tkeys = [segs[0] for _, segs in self.timestamp_paths]
        lkeys = [segs[0] for _, segs in self.label_paths]
        names = [label for label, _ in self.label_paths]
        const = dict(self.config.labels)
        cache = self._stream_cache
        logs = out.logs
        item = self._item
        # Records are made column by column (LogRecord.columns); an event for _item
        # first flushes the columns, so the records keep the events' order.
        stamps: list[float] = []
        texts: list[str] = []
        streams: list[tuple[tuple[str, str], ...]] = []
        for i, ev in enumerate(items):
            if type(ev) is dict:
                message = None
                for k in mkeys:
                    message = ev.get(k)
                    if message is not None:
                        break
                ts: Any = default_ts
                for k in tkeys:
                    value = ev.get(k)
                    if value is not None:
                        ts = value
                        break
                values = tuple([ev.get(k) for k in lkeys])
                try:
                    labels = cache.get(values)
                except TypeError:  # an object or array value: not a label, _item says so
                    labels = None
                if (
                    type(message) is str
                    and (type(ts) is float or type(ts) is int)
                    and 0 <= ts < _SECONDS_BELOW
                    and (labels is not None or _plain_values(values))
                ):
                    if labels is None:
                        found = dict(const)
                        found.update(
                            (n, v) for n, v in zip(names, values, strict=True) if v is not None
                        )
                        labels = tuple(sorted(found.items()))
                        if len(cache) >= _STREAM_CACHE_MAX:
                            cache.clear()
                        cache[values] = labels
                    stamps.append(float(ts))
                    texts.append(message)
                    streams.append(labels)
                    continue
            if texts:
                logs.extend(LogRecord.columns(stamps, texts, streams))
                stamps, texts, streams = [], [], []
            item(ev, out, raw, default_ts, f"item {i}: ")
        if texts:
            logs.extend(LogRecord.columns(stamps, texts, streams))

    def _item(self, event: Any, out: Decoded, raw: bytes, default_ts: float, where: str) -> None:
        try:
            if not isinstance(event, dict):
                raise ItemError("bad_shape", f"event is {type(event).__name__}, not an object")
            message = _first(event, self.message_paths)
            if message is MISSING:
                if self.config.missing_message == "reject":
                    names = ", ".join(p for p, _ in self.message_paths)
                    raise ItemError("missing_field", f"no message ({names})")
                message = event
            if not isinstance(message, str):
                message = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
            ts = default_ts
            for path, segs in self.timestamp_paths:
                ts_raw = get_path(event, segs)
                if ts_raw is not MISSING and ts_raw is not None:
                    ts = parse_time(ts_raw, self.config.timestamp_format, path)
                    break
        except ItemError as e:
            out.reject(e.reason, where + e.detail, raw)
            return
        labels = dict(self.config.labels)
        for label, segs in self.label_paths:
            text = scalar_text(get_path(event, segs))
            if text is not None:
                labels[label] = text
        out.logs.append(LogRecord(ts, message, tuple(sorted(labels.items()))))


#: Unix times below this are seconds (``parse_time``'s ``auto``: larger ones are ms, us, ns).
_SECONDS_BELOW = 1e11
#: Label sets remembered by the values of an event's label fields.
_STREAM_CACHE_MAX = 10_000


def _column(items: list[dict[str, Any]], keys: list[str], get: Any) -> list[Any]:
    """Each event's value of the first of ``keys`` it has (not null), or None."""
    col = list(map(get, items, itertools.repeat(keys[0]))) if keys else [None] * len(items)
    for k in keys[1:]:
        absent = col.count(None)
        if not absent:
            break
        if absent == len(col):  # no event had the keys before: this one's column
            col = list(map(get, items, itertools.repeat(k)))
        else:
            col = [get(e, k) if v is None else v for v, e in zip(col, items, strict=True)]
    return col


def _plain_values(values: tuple[Any, ...]) -> bool:
    """Whether label field values are all strings or absent (taken as they are)."""
    return all(v is None or type(v) is str for v in values)


def _first(event: dict[str, Any], paths: list[tuple[str, tuple[str, ...]]]) -> Any:
    for _, segs in paths:
        value = get_path(event, segs)
        if value is not MISSING and value is not None:
            return value
    return MISSING
