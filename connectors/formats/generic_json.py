"""Metrics from any JSON shape, located by configurable dot paths."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator, model_validator

from aiops.pipeline.decoder import Decoded, DecoderConfig

from ._common import (
    MISSING,
    ItemError,
    JsonRecordDecoder,
    KeyCache,
    TimeFormat,
    compile_path,
    get_path,
    labels_from,
    parse_number,
    parse_time,
    scalar_text,
)

__all__ = ["GenericJsonDecoder"]


class GenericJsonDecoder(JsonRecordDecoder):
    """Decode metrics from JSON of any shape, by dot paths.

    A path is keys joined by dots (``data.metrics.cpu``); an integer segment indexes an
    array (``readings.0.value``); a flat key with dots in it (``{"cpu.user": 1}``)
    matches too. Each record is one JSON document; the *items* of a record are the
    objects in the array at ``items_path`` (or the top-level array), else the document.
    Per item:

    - one metric: ``value_path`` with a constant ``name`` or a ``name_path``;
    - or several: ``value_paths`` maps metric names to paths
      (``{"cpu_usage": "metrics.cpu", "mem_used": "metrics.mem"}``);
    - ``timestamp_path`` (absent in an item: the record's time) read per
      ``timestamp_format``: ``auto`` takes RFC 3339 strings and unix numbers by magnitude
      (s, ms, us, ns), or force ``rfc3339`` / ``unix_s`` / ``unix_ms`` / ``unix_us`` /
      ``unix_ns``;
    - labels: every scalar of the object at ``labels_path`` (nested values left out),
      ``label_paths`` (a list, naming each label after its last segment, or a
      ``{label: path}`` mapping; an absent path adds no label) and ``const_labels``.

    Values may be numbers, numeric strings, ``"NaN"``/``"+Inf"``, booleans (1/0);
    ``null`` is an empty value (NaN). Rejects (``raw`` = the record): ``bad_utf8``,
    ``bad_json``, ``bad_shape`` (an item or ``items_path`` of the wrong type),
    ``missing_field`` (a value or name path absent; per metric, so an item's other
    metrics are kept), ``bad_value``, ``bad_timestamp``, ``bad_labels``. ``detail``
    names the item index and path.

    >>> d = GenericJsonDecoder(items_path="readings", name_path="sensor",
    ...                        value_path="v", timestamp_path="ts",
    ...                        label_paths=["site"])
    >>> out = d.decode(b'{"site": "x", "readings": [{"sensor": "temp", "v": 21.5, '
    ...                b'"ts": 1700000000000, "site": "lab"}, {"sensor": "rh", "v": "n/a"}]}')
    >>> [(str(k), t, v) for k, t, v in out.points()]
    [('temp{site="lab"}', 1700000000.0, 21.5)]
    >>> [(r.reason, r.detail) for r in out.rejects]
    [('bad_value', "item 1: v: value 'n/a' is not a number")]
    """

    type = "generic_json"

    class Config(DecoderConfig):
        """Settings of :class:`GenericJsonDecoder`."""

        #: Path of an array of item objects; None: the document (or top-level array).
        items_path: str | None = None
        #: A constant metric name (with ``value_path``).
        name: str | None = None
        #: Path of the metric name in each item (with ``value_path``).
        name_path: str | None = None
        #: Path of the one value in each item.
        value_path: str | None = None
        #: Several metrics per item: ``{metric name: value path}``.
        value_paths: dict[str, str] = Field(default_factory=dict)
        #: Path of the item's time; None: the record's time.
        timestamp_path: str | None = None
        timestamp_format: TimeFormat = "auto"
        #: Path of an object whose scalar members become labels.
        labels_path: str | None = None
        #: Label paths: a list (label named after the last segment) or ``{label: path}``.
        label_paths: dict[str, str] = Field(default_factory=dict)
        #: Labels added to every series.
        const_labels: dict[str, str] = Field(default_factory=dict)

        @field_validator("label_paths", mode="before")
        @classmethod
        def _label_list(cls, v: Any) -> Any:
            if isinstance(v, list | tuple):
                return {str(p).rsplit(".", 1)[-1]: p for p in v}
            return v

        @field_validator("items_path", "name_path", "value_path", "timestamp_path", "labels_path")
        @classmethod
        def _path(cls, v: str | None) -> str | None:
            if v is not None:
                compile_path(v)
            return v

        @model_validator(mode="after")
        def _one_way_to_name_values(self) -> GenericJsonDecoder.Config:
            if (self.value_path is None) == (not self.value_paths):
                raise ValueError("set exactly one of value_path and value_paths")
            if self.value_path is not None and (self.name is None) == (self.name_path is None):
                raise ValueError("with value_path, set exactly one of name and name_path")
            if self.value_paths and (self.name is not None or self.name_path is not None):
                raise ValueError("value_paths names its metrics; drop name and name_path")
            for p in [*self.value_paths.values(), *self.label_paths.values()]:
                compile_path(p)
            return self

    config: Config

    def __init__(
        self, config: DecoderConfig | Mapping[str, Any] | None = None, /, **settings: Any
    ) -> None:
        super().__init__(config, **settings)
        c = self.config
        self._items = None if c.items_path is None else compile_path(c.items_path)
        self._name = None if c.name_path is None else compile_path(c.name_path)
        self._ts = None if c.timestamp_path is None else compile_path(c.timestamp_path)
        self._labels = None if c.labels_path is None else compile_path(c.labels_path)
        self._label_paths = [(k, p, compile_path(p)) for k, p in c.label_paths.items()]
        if c.value_path is not None:
            self._values = [(None, c.value_path, compile_path(c.value_path))]
        else:
            self._values = [(n, p, compile_path(p)) for n, p in c.value_paths.items()]
        self._keys = KeyCache()

    def _items_of(self, doc: Any, out: Decoded, raw: bytes) -> list[Any] | None:
        """The array at ``items_path`` (none after a reject), else the base's rule."""
        if self._items is None:
            return super()._items_of(doc, out, raw)
        items = get_path(doc, self._items)
        if items is MISSING:
            out.reject("missing_field", f"no {self.config.items_path}", raw)
            return []
        if not isinstance(items, list):
            what = type(items).__name__
            out.reject("bad_shape", f"{self.config.items_path} is {what}, not an array", raw)
            return []
        return items

    def _item(self, item: Any, out: Decoded, raw: bytes, default_ts: float, where: str) -> None:
        c = self.config
        try:
            if not isinstance(item, dict):
                raise ItemError("bad_shape", f"item is {type(item).__name__}, not an object")
            ts = default_ts
            if self._ts is not None:
                ts_raw = get_path(item, self._ts)
                if ts_raw is not MISSING and ts_raw is not None:
                    ts = parse_time(ts_raw, c.timestamp_format, str(c.timestamp_path))
            labels = dict(c.const_labels)
            if self._labels is not None:
                obj = get_path(item, self._labels)
                if obj is not MISSING and obj is not None:
                    if not isinstance(obj, dict):
                        what = type(obj).__name__
                        raise ItemError("bad_labels", f"{c.labels_path} is {what}, not an object")
                    labels.update(
                        labels_from(
                            {k: v for k, v in obj.items() if not isinstance(v, dict | list)}
                        )
                    )
            for label, path, segs in self._label_paths:
                v = get_path(item, segs)
                if v is MISSING or v is None:
                    continue
                text = scalar_text(v)
                if text is None:
                    raise ItemError("bad_labels", f"{path} is {type(v).__name__}, not a scalar")
                labels[label] = text
            name = c.name
            if self._name is not None:
                name_raw = get_path(item, self._name)
                if name_raw is MISSING or name_raw in (None, ""):
                    raise ItemError("missing_field", f"no metric name at {c.name_path}")
                name = scalar_text(name_raw)
                if name is None:
                    raise ItemError("bad_value", f"{c.name_path} is {type(name_raw).__name__}")
        except ItemError as e:
            out.reject(e.reason, where + e.detail, raw)
            return
        for metric, path, segs in self._values:
            v = get_path(item, segs)
            if v is MISSING:
                out.reject("missing_field", f"{where}no value at {path}", raw)
                continue
            try:
                value = parse_number(v, f"{path}: value")
            except ItemError as e:
                out.reject(e.reason, where + e.detail, raw)
                continue
            out.add_point(self._keys.get(metric or name or "", labels), ts, value)
