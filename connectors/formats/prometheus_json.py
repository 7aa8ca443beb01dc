"""Samples as prometheus-kafka-adapter writes them: one JSON object per sample."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiops.pipeline.decoder import Decoded, DecoderConfig

from ._common import (
    MISSING,
    ItemError,
    JsonRecordDecoder,
    KeyCache,
    TimeFormat,
    labels_from,
    parse_number,
    parse_time,
)

__all__ = ["PrometheusJsonDecoder"]


class PrometheusJsonDecoder(JsonRecordDecoder):
    """Decode prometheus-kafka-adapter JSON (Telefonica), one sample per object.

    The adapter receives Prometheus ``remote_write`` and produces, per sample::

        {"timestamp": "2024-05-01T12:00:00Z", "value": "0.25", "name": "up",
         "labels": {"__name__": "up", "instance": "web-1:9100", "job": "node"}}

    ``value`` is a string (Go's ``FormatFloat``: ``"NaN"``, ``"+Inf"``, ``"-Inf"``
    included) or a number; ``timestamp`` is RFC 3339 (the adapter drops milliseconds) or
    a unix number. The metric name is ``name``, else ``labels.__name__``. A payload that
    is a JSON array is taken as several samples, each kept or rejected on its own.

    Rejects: ``bad_utf8``, ``bad_json``, ``bad_shape`` (not an object), ``missing_field``
    (no value or no name), ``bad_value``, ``bad_timestamp``, ``bad_labels``. A sample
    without ``timestamp`` takes the record's time. Cost: one ``json.loads`` per record.

    >>> d = PrometheusJsonDecoder()
    >>> out = d.decode(b'{"timestamp": "1970-01-01T00:01:00Z", "value": "NaN", '
    ...                b'"name": "up", "labels": {"__name__": "up", "job": "node"}}')
    >>> [(str(k), t, v) for k, t, v in out.points()]
    [('up{job="node"}', 60.0, nan)]
    """

    type = "prometheus_json"

    class Config(DecoderConfig):
        """Settings of :class:`PrometheusJsonDecoder`."""

        #: How ``timestamp`` is written; ``auto`` accepts RFC 3339 and unix numbers.
        timestamp_format: TimeFormat = "auto"

    config: Config

    def __init__(
        self, config: DecoderConfig | Mapping[str, Any] | None = None, /, **settings: Any
    ) -> None:
        super().__init__(config, **settings)
        self._keys = KeyCache()

    def _item(self, doc: Any, out: Decoded, raw: bytes, default_ts: float, where: str) -> None:
        try:
            if not isinstance(doc, dict):
                raise ItemError("bad_shape", f"sample is {type(doc).__name__}, not an object")
            raw_labels = doc.get("labels", {})
            labels = labels_from(raw_labels) if raw_labels is not None else {}
            name = doc.get("name", MISSING)
            if name is MISSING or name in (None, ""):
                name = labels.get("__name__", "")
            if not isinstance(name, str) or not name:
                raise ItemError("missing_field", "no metric name (name or labels.__name__)")
            if "value" not in doc:
                raise ItemError("missing_field", "no value")
            value = parse_number(doc["value"])
            ts_raw = doc.get("timestamp")
            ts = default_ts if ts_raw is None else parse_time(ts_raw, self.config.timestamp_format)
        except ItemError as e:
            out.reject(e.reason, where + e.detail, raw)
            return
        out.add_point(self._keys.get(name, labels), ts, value)
