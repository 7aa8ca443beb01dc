"""Durations and timestamps: Prometheus-style durations, RFC 3339, unix seconds (UTC)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = ["format_duration", "parse_duration", "parse_timestamp", "to_rfc3339"]

_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "y": 31536000.0,
}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")


def parse_duration(text: str | int | float) -> float:
    """Parse a Prometheus duration such as ``1h30m`` or ``15s`` into seconds.

    A bare number is taken as seconds.

    >>> parse_duration("1h30m"), parse_duration("250ms"), parse_duration(0)
    (5400.0, 0.25, 0.0)
    >>> parse_duration("5 minutes")
    Traceback (most recent call last):
    ...
    ValueError: invalid duration "5 minutes": use a number and a unit (ms, s, m, h, d, w, y)
    """
    if isinstance(text, bool):
        raise ValueError(f"invalid duration {text!r}")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"invalid duration {text}: must not be negative")
        return float(text)
    s = text.strip()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        msg = f'invalid duration "{text}": use a number and a unit (ms, s, m, h, d, w, y)'
        raise ValueError(msg)
    return total


def format_duration(seconds: float) -> str:
    """Format seconds as a short Prometheus duration.

    >>> format_duration(5400), format_duration(0.25), format_duration(0)
    ('1h30m', '250ms', '0s')
    """
    if seconds <= 0:
        return "0s"
    out = []
    rest = round(seconds * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        q, rest = divmod(rest, size)
        if q:
            out.append(f"{q}{unit}")
    return "".join(out)


def to_rfc3339(ts: float) -> str:
    """Unix seconds to an RFC 3339 UTC string.

    >>> to_rfc3339(0.0)
    '1970-01-01T00:00:00Z'
    >>> to_rfc3339(1.5)
    '1970-01-01T00:00:01.500Z'
    """
    dt = datetime.fromtimestamp(ts, tz=UTC)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str | float | int) -> float:
    """Parse unix seconds (number or numeric string) or ISO 8601 into unix seconds.

    A timestamp without a zone is taken as UTC.

    >>> parse_timestamp("2014-04-01 00:05:00"), parse_timestamp("1396310700")
    (1396310700.0, 1396310700.0)
    >>> parse_timestamp("2014-04-01T02:05:00+02:00")
    1396310700.0
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    s = str(text).strip()
    try:
        return float(s)
    except ValueError:
        pass
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
