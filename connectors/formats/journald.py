"""journald's JSON export (``journalctl -o json``): one JSON object a line."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from aiops.pipeline.decoder import MAX_TIMESTAMP, MIN_TIMESTAMP, Decoded, Decoder, DecoderConfig
from aiops.types import LogRecord

from ._common import ItemError, load_json

__all__ = ["PRIORITY_LEVELS", "JournaldDecoder"]

#: syslog priorities (journald ``PRIORITY``) as level names (RFC 5424 keywords).
PRIORITY_LEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")


class JournaldDecoder(Decoder):
    r"""Decode ``journalctl -o json`` output: every line is one journal entry.

    The message is ``MESSAGE``: a string, or an array of byte values (journald writes
    that for messages that are not valid UTF-8 or hold control characters), decoded as
    UTF-8 with bad bytes replaced. The time is ``__REALTIME_TIMESTAMP`` (microseconds
    since the epoch, a decimal string), else the record's time. Labels: ``host``
    (``_HOSTNAME``), ``unit`` (``_SYSTEMD_UNIT``), ``service`` (the unit without its
    ``.service`` suffix, else ``SYSLOG_IDENTIFIER``), ``level`` (``PRIORITY`` 0-7 as
    ``emerg`` ... ``debug``), plus the constant ``labels``. Rejects (``raw`` = the line):
    ``bad_utf8``, ``bad_json``, ``bad_shape`` (not an object), ``missing_field`` (no or null
    ``MESSAGE``), ``bad_value`` (a ``MESSAGE`` array that is not bytes),
    ``bad_timestamp``. Blank lines are skipped.

    >>> d = JournaldDecoder()
    >>> out = d.decode(b'{"MESSAGE": [104, 105, 255], "PRIORITY": "3", '
    ...                b'"_SYSTEMD_UNIT": "nginx.service", "_HOSTNAME": "web-1", '
    ...                b'"__REALTIME_TIMESTAMP": "1700000000123456"}\nnot json\n')
    >>> r = out.logs[0]
    >>> r.timestamp, r.message, r.labels
    (1700000000.123456, 'hi\ufffd', (('host', 'web-1'), ('level', 'err'), ('service', 'nginx'), ('unit', 'nginx.service')))
    >>> [x.reason for x in out.rejects]
    ['bad_json']
    """  # noqa: E501

    type = "journald"

    class Config(DecoderConfig):
        """Settings of :class:`JournaldDecoder`."""

        #: Constant labels of every entry.
        labels: dict[str, str] = Field(default_factory=dict)

    config: Config

    def decode(
        self, payload: bytes, *, origin: str = "", timestamp: float | None = None
    ) -> Decoded:
        """Decode one or more lines; see the class docstring."""
        out = Decoded(origin=origin)
        default_ts = self.default_time(timestamp)
        for n, raw in enumerate(payload.split(b"\n"), 1):
            if not raw.strip():
                continue
            where = f"line {n}: " if b"\n" in payload.strip() else ""
            try:
                entry = load_json(raw)
            except ItemError as e:
                out.reject(e.reason, f"{where}{e.detail}"[:200], raw)
                continue
            if not isinstance(entry, dict):
                out.reject("bad_shape", f"{where}a JSON {type(entry).__name__}, not an object", raw)
                continue
            record = self._entry(entry, default_ts)
            if isinstance(record, tuple):
                out.reject(record[0], where + record[1], raw)
            else:
                out.logs.append(record)
        return out

    def _entry(self, entry: dict[str, Any], default_ts: float) -> LogRecord | tuple[str, str]:
        message = entry.get("MESSAGE")
        if message is None:
            return ("missing_field", "no MESSAGE")
        if isinstance(message, list):
            if not all(
                isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 256 for b in message
            ):
                return ("bad_value", "MESSAGE array is not a list of byte values")
            message = bytes(message).decode("utf-8", "replace")
        elif not isinstance(message, str):
            message = json.dumps(message, separators=(",", ":"))
        ts = default_ts
        raw_ts = entry.get("__REALTIME_TIMESTAMP")
        if raw_ts is not None:
            try:
                ts = int(str(raw_ts)) / 1e6
            except (ValueError, OverflowError):
                return ("bad_timestamp", f"__REALTIME_TIMESTAMP {str(raw_ts)[:40]!r}")
            if not MIN_TIMESTAMP <= ts < MAX_TIMESTAMP:
                return (
                    "bad_timestamp",
                    f"__REALTIME_TIMESTAMP {str(raw_ts)[:40]!r} is outside years 1-9999",
                )
        labels = dict(self.config.labels)
        host = entry.get("_HOSTNAME")
        if isinstance(host, str):
            labels["host"] = host
        unit = entry.get("_SYSTEMD_UNIT")
        ident = entry.get("SYSLOG_IDENTIFIER")
        if isinstance(unit, str):
            labels["unit"] = unit
            labels["service"] = unit.removesuffix(".service")
        elif isinstance(ident, str):
            labels["service"] = ident
        prio = entry.get("PRIORITY")
        digits = str(prio) if isinstance(prio, str | int) else ""
        # isdigit() alone also takes "²", which int() refuses, and 5,000 digits, which
        # int() refuses past 4,300.
        if digits.isascii() and digits.isdigit() and len(digits) < 4 and int(digits) < 8:
            labels["level"] = PRIORITY_LEVELS[int(digits)]
        return LogRecord(ts, message, tuple(sorted(labels.items())))
