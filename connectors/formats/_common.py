"""Helpers shared by the decoders: JSON loading, dot paths, times and numbers.

Each helper either returns a value or raises :class:`ItemError` carrying a reject
reason, so a decoder turns any problem into a reject with one ``except``.
"""

from __future__ import annotations

import json
import math
import re
from abc import abstractmethod
from collections.abc import Mapping
from datetime import date
from typing import Any, Literal

from aiops.pipeline.decoder import MAX_TIMESTAMP, MIN_TIMESTAMP, Decoded, Decoder
from aiops.types import SeriesKey

__all__ = [
    "MISSING",
    "ItemError",
    "KeyCache",
    "JsonDoc",
    "TimeFormat",
    "compile_path",
    "get_path",
    "labels_from",
    "load_json",
    "parse_number",
    "parse_time",
    "replace_lone_surrogates",
    "scalar_text",
]

TimeFormat = Literal["auto", "rfc3339", "unix_s", "unix_ms", "unix_us", "unix_ns"]

MISSING: Any = object()

# Unix times this far from 1970 are nonsense (year ~5138); they come from a wrong unit.
_MAX_ABS_SECONDS = 1e11
_UNIT_DIVISOR = {"unix_s": 1, "unix_ms": 1000, "unix_us": 10**6, "unix_ns": 10**9}

_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:[.,](\d+))?\s*([Zz]|[+-]\d\d:?\d\d)?"
)
# JSON numbers in strings ("3.5", "-1e3") and Prometheus' spellings of special values.
# Possessive: "\d+\.?\d*" split a run of digits every way before failing on the
# character after it (20,000 digits and a letter as a time: 11 s of the data loop).
_NUMBER = re.compile(r"[+-]?(?:\d++(?:\.\d*+)?|\.\d++)(?:[eE][+-]?\d++)?")
_INTEGER = re.compile(r"[+-]?\d+")
_DIGITS_DOT = frozenset("0123456789.")
_NUMBER_START = frozenset("+-.0123456789")
_SPECIAL = {
    "nan": math.nan,
    "+inf": math.inf,
    "inf": math.inf,
    "-inf": -math.inf,
    "+infinity": math.inf,
    "infinity": math.inf,
    "-infinity": -math.inf,
}


class ItemError(Exception):
    """One item cannot be decoded: ``reason`` is the reject reason, the message the detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


JsonDoc = Any


def load_json(payload: bytes) -> JsonDoc:
    """Parse UTF-8 JSON; raise :class:`ItemError` (``bad_utf8`` / ``bad_json``).

    The bytes are decoded as UTF-8 explicitly: ``json.loads(bytes)`` would guess UTF-16
    or UTF-32 for some binary garbage.
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ItemError("bad_utf8", f"invalid UTF-8 at byte {e.start}: {e.reason}") from None
    try:
        return replace_lone_surrogates(json.loads(text), text)
    except json.JSONDecodeError as e:
        detail = f"{e.msg}: line {e.lineno} column {e.colno} (char {e.pos})"
        raise ItemError("bad_json", detail) from None
    except RecursionError:
        raise ItemError("bad_json", "nested too deeply") from None
    except ValueError as e:  # e.g. an integer literal longer than Python's digit limit
        raise ItemError("bad_json", str(e)) from None


# A \uD800-\uDFFF escape: json.loads turns one without its pair into a lone surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def replace_lone_surrogates(doc: JsonDoc, text: str) -> JsonDoc:
    """``doc`` (parsed from ``text``) with each lone surrogate replaced by U+FFFD.

    JSON may escape half of a UTF-16 pair alone (``"\\ud800"``); Python keeps it as a
    lone surrogate, which no UTF-8 writer accepts: a label holding one made the rule
    fail at its first alert (the fingerprint), a log message at its first write.
    Replaced like an invalid byte elsewhere (``log_lines``), so nothing is lost. The
    walk runs only when ``text`` holds such an escape.

    >>> replace_lone_surrogates({"a": ["\\ud800x"]}, r'{"a": ["\\ud800x"]}')
    {'a': ['\ufffdx']}
    """
    if _SURROGATE_ESCAPE.search(text) is None:
        return doc
    return _scrub(doc)


def _scrub(node: Any) -> Any:
    if isinstance(node, str):
        return _SURROGATE.sub("\ufffd", node)
    if isinstance(node, list):
        return [_scrub(v) for v in node]
    if isinstance(node, dict):
        return {_scrub(k): _scrub(v) for k, v in node.items()}
    return node


def compile_path(path: str) -> tuple[str, ...]:
    """Split a dot path (``data.metrics.cpu``, ``items.0.value``) into its segments.

    An empty path or ``"."`` addresses the document itself.
    """
    if path in ("", "."):
        return ()
    segments = tuple(path.split("."))
    if any(s == "" for s in segments):
        raise ValueError(f'invalid path "{path}": empty segment')
    return segments


def get_path(doc: JsonDoc, segments: tuple[str, ...]) -> Any:
    """The value at ``segments`` in ``doc``, or :data:`MISSING`.

    A segment indexes a list when it is an integer. When a key is absent, longer keys
    made of the following segments joined by dots are tried too, so flat dotted keys as
    ECS loggers write them (``{"log.level": "info"}``) match the path ``log.level``.
    """
    node = doc
    i, n = 0, len(segments)
    while i < n:
        seg = segments[i]
        if isinstance(node, dict):
            if seg in node:
                node = node[seg]
                i += 1
                continue
            for j in range(i + 2, n + 1):
                key = ".".join(segments[i:j])
                if key in node:
                    node = node[key]
                    i = j
                    break
            else:
                return MISSING
        elif isinstance(node, list):
            try:
                node = node[int(seg)]
            except (ValueError, IndexError):
                return MISSING
            i += 1
        else:
            return MISSING
    return node


def parse_number(value: Any, what: str = "value") -> float:
    """A float from a JSON number, bool (1/0), numeric string, or NaN/±Inf spelling.

    JSON ``null`` is an empty value: NaN. Raises :class:`ItemError` (``bad_value``).
    """
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:
            raise ItemError("bad_value", f"{what} {value!r} is out of range") from None
    if isinstance(value, str):
        s = value.strip()
        # float() also takes "1_000", "inf" and non-ASCII digits; these checks leave
        # exactly the decimal numbers (sign, digits, point, exponent).
        if s and s[-1] in _DIGITS_DOT and s[0] in _NUMBER_START and s.isascii() and "_" not in s:
            try:
                v = float(s)
            except ValueError:
                raise ItemError("bad_value", f"{what} {_short(value)} is not a number") from None
            if math.isinf(v):
                raise ItemError("bad_value", f"{what} {_short(value)} is out of range")
            return v
        special = _SPECIAL.get(s.lower())
        if special is not None:
            return special
    raise ItemError("bad_value", f"{what} {_short(value)} is not a number")


def parse_time(value: Any, fmt: TimeFormat = "auto", what: str = "timestamp") -> float:
    """Unix seconds from an RFC 3339 string or a unix number (string or JSON number).

    ``auto`` takes strings that look like dates as RFC 3339 and numbers by magnitude:
    below 1e11 seconds, below 1e14 milliseconds, below 1e17 microseconds, else
    nanoseconds (so ``auto`` cannot express seconds after the year 5138 or
    milliseconds before 1973). A time without a zone is taken as UTC. Raises
    :class:`ItemError` (``bad_timestamp``).
    """
    number: int | float
    if isinstance(value, str):
        s = value.strip()
        if fmt in ("auto", "rfc3339"):
            hit = _RFC3339_MEMO.get(s)
            if hit is not None:
                return hit
            m = _RFC3339.fullmatch(s)
            if m is not None:
                return _rfc3339_seconds(m, value, what)
            if fmt == "rfc3339" or not _NUMBER.fullmatch(s):
                raise ItemError("bad_timestamp", f"{what} {_short(value)} is not RFC 3339")
        elif not _NUMBER.fullmatch(s):
            raise ItemError("bad_timestamp", f"{what} {_short(value)} is not a number")
        # int() refuses over 4300 digits; such a time is out of range anyway.
        number = int(s) if len(s) < 40 and _INTEGER.fullmatch(s) else float(s)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if fmt == "rfc3339":
            raise ItemError("bad_timestamp", f"{what} {value!r} is a number, not RFC 3339")
        number = value
    else:
        raise ItemError("bad_timestamp", f"{what} {_short(value)} is not a time")
    if fmt in ("auto", "rfc3339"):
        a = abs(number)
        divisor = 1 if a < 1e11 else 1000 if a < 1e14 else 10**6 if a < 1e17 else 10**9
    else:
        divisor = _UNIT_DIVISOR[fmt]
    # Integer / integer is correctly rounded: 1714564800123 ms is exactly ...800.123.
    try:
        seconds = number / divisor
    except OverflowError:
        raise ItemError("bad_timestamp", f"{what} {_short(value)} is out of range") from None
    if not math.isfinite(seconds) or abs(seconds) >= _MAX_ABS_SECONDS or seconds < MIN_TIMESTAMP:
        raise ItemError("bad_timestamp", f"{what} {_short(value)} is out of range")
    return float(seconds)


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# Producers stamp many records with the same time (one scrape, one flush): remember the
# last few thousand strings. Dropped whole when full.
_RFC3339_MEMO: dict[str, float] = {}
_RFC3339_MEMO_MAX = 4096


def _rfc3339_seconds(m: re.Match[str], raw: str, what: str) -> float:
    year, month, day, hour, minute, second, frac, zone = m.groups()
    h, mi, sec = int(hour), int(minute), int(second)
    try:
        days = date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL
    except ValueError as e:
        raise ItemError("bad_timestamp", f"{what} {_short(raw)}: {e}") from None
    if h > 23 or mi > 59 or sec > 60:  # RFC 3339 allows a leap second, 60
        raise ItemError("bad_timestamp", f"{what} {_short(raw)}: time of day out of range")
    seconds = float(days * 86400 + h * 3600 + mi * 60 + sec)
    if frac:
        seconds += int(frac[:9]) / 10 ** len(frac[:9])
    if zone and zone not in "Zz":
        sign = -1 if zone[0] == "-" else 1
        hh, mm = int(zone[1:3]), int(zone[-2:])
        if hh > 23 or mm > 59:
            raise ItemError("bad_timestamp", f"{what} {_short(raw)}: bad zone offset")
        seconds -= sign * (hh * 3600 + mm * 60)
    if not MIN_TIMESTAMP <= seconds < MAX_TIMESTAMP:  # a zone moved it past year 1 or 9999
        raise ItemError("bad_timestamp", f"{what} {_short(raw)} is outside years 1-9999")
    if len(_RFC3339_MEMO) >= _RFC3339_MEMO_MAX:
        _RFC3339_MEMO.clear()
    _RFC3339_MEMO[m.group()] = seconds
    return seconds


def scalar_text(value: Any) -> str | None:
    """A label value from a JSON scalar (``true`` -> ``"true"``); None for objects/arrays."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    return None


def labels_from(value: Any, what: str = "labels") -> dict[str, str]:
    """String labels from a JSON object of scalars; raise ``bad_labels`` otherwise."""
    if not isinstance(value, Mapping):
        raise ItemError("bad_labels", f"{what} is {type(value).__name__}, not an object")
    out: dict[str, str] = dict(value)
    if all(type(v) is str for v in out.values()):  # the common case: JSON strings
        return out
    for k, v in value.items():
        text = scalar_text(v)
        if text is None:
            raise ItemError("bad_labels", f"{what}.{k} is {type(v).__name__}, not a string")
        out[str(k)] = text
    return out


class KeyCache:
    """Series keys by name and labels in the order the payload gave them.

    Producers write labels in a stable order, so a hit skips the sort and string
    conversions of :meth:`SeriesKey.of`. Dropped whole when full (bounded memory under
    a cardinality explosion).
    """

    def __init__(self, max_size: int = 100_000) -> None:
        self.max_size = max_size
        self._keys: dict[tuple[str, tuple[tuple[str, str], ...]], SeriesKey] = {}

    def get(self, name: str, labels: Mapping[str, str]) -> SeriesKey:
        """The key of ``name`` with ``labels``."""
        cache_key = (name, tuple(labels.items()))
        key = self._keys.get(cache_key)
        if key is None:
            if len(self._keys) >= self.max_size:
                self._keys.clear()
            key = self._keys[cache_key] = SeriesKey.of(name, labels)
        return key


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class JsonRecordDecoder(Decoder):
    """A decoder of JSON records made of items that decode on their own.

    A record is one JSON document: one item, or an array of items (or, for decoders
    that override :meth:`_items_of`, an array somewhere inside it). Undecodable JSON
    rejects the whole record; each item is decoded by :meth:`_item`, which rejects only
    that item, so a record can be partly good.
    """

    def decode(
        self, payload: bytes, *, origin: str = "", timestamp: float | None = None
    ) -> Decoded:
        """Decode one record; see the class docstring."""
        out = Decoded(origin=origin)
        try:
            doc = load_json(payload)
        except ItemError as e:
            out.reject(e.reason, e.detail, payload)
            return out
        default_ts = self.default_time(timestamp)
        items = self._items_of(doc, out, payload)
        if items is None:
            self._item(doc, out, payload, default_ts, "")
        else:
            self._decode_items(items, out, payload, default_ts)
        return out

    def _decode_items(self, items: list[Any], out: Decoded, raw: bytes, default_ts: float) -> None:
        """Decode the items of an array in order (a decoder may do it faster in one go)."""
        for i, item in enumerate(items):
            self._item(item, out, raw, default_ts, f"item {i}: ")

    def _items_of(self, doc: Any, out: Decoded, raw: bytes) -> list[Any] | None:
        """The items of a document, or None when the document itself is the one item."""
        return doc if isinstance(doc, list) else None

    @abstractmethod
    def _item(self, item: Any, out: Decoded, raw: bytes, default_ts: float, where: str) -> None:
        """Decode one item into ``out``; ``where`` prefixes reject details."""
