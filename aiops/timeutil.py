"""Durations and timestamps: Prometheus-style durations, RFC 3339, unix seconds (UTC)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from aiops.types import BoolArray, FloatArray, IntArray

__all__ = [
    "MAX_TIMESTAMP",
    "MIN_TIMESTAMP",
    "format_duration",
    "parse_duration",
    "parse_timestamp",
    "parse_timestamps",
    "times_ok",
    "to_rfc3339",
]

#: 0001-01-01T00:00:00Z in unix seconds: the first time an alert can carry.
MIN_TIMESTAMP = -62_135_596_800.0
#: 10000-01-01T00:00:00Z in unix seconds: every time an alert carries is before it.
MAX_TIMESTAMP = 253_402_300_800.0

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


def times_ok(timestamps: FloatArray) -> BoolArray:
    """True where a unix time is within years 1-9999 (False for inf and NaN).

    >>> times_ok(np.array([0.0, -7e10, 2.6e11, np.inf, np.nan])).tolist()
    [True, False, False, False, False]
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    return (ts >= MIN_TIMESTAMP) & (ts < MAX_TIMESTAMP)


def parse_timestamps(texts: Sequence[str]) -> tuple[FloatArray, BoolArray]:
    """:func:`parse_timestamp` of many strings at once: (seconds, parsed).

    ``seconds[k]`` is exactly ``parse_timestamp(texts[k])`` where ``parsed[k]``, and 0
    where it raises ``ValueError``. Unix seconds and the usual ISO 8601 layout
    (``YYYY-MM-DD`` ``T`` or space ``HH:MM:SS``, up to six decimals, ``Z`` or ``+HH:MM``)
    are parsed in bulk; any other string goes through :func:`parse_timestamp` itself.

    >>> s, ok = parse_timestamps(["1396310700", "2014-04-01 00:05:00", "2014-04-01T02:05:00+02:00",
    ...                           "2014-04-01T00:05:00.25Z", "2014-04-01T00:05:00+0200", "x"])
    >>> s.tolist(), ok.tolist()
    ([1396310700.0, 1396310700.0, 1396310700.0, 1396310700.25, 1396303500.0, 0.0], \
[True, True, True, True, True, False])
    """
    n = len(texts)
    try:
        # float() accepts whatever parse_timestamp's strip() removes around a number.
        return np.fromiter(map(float, texts), np.float64, n), np.ones(n, dtype=bool)
    except ValueError:
        pass
    seconds, parsed = _parse_iso_layout(texts)
    for k in np.flatnonzero(~parsed).tolist():
        try:
            seconds[k] = parse_timestamp(texts[k])
        except ValueError:
            continue
        parsed[k] = True
    return seconds, parsed


_ISO_MAX = len("YYYY-MM-DDTHH:MM:SS.ffffff+HH:MM")
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
#: Below this many microseconds a count and its quotient by 1e6 are exact float64
#: operations, as Python's integer true division in ``timedelta.total_seconds`` is.
_EXACT_MICROS = 2**53


def _parse_iso_layout(texts: Sequence[str]) -> tuple[FloatArray, BoolArray]:
    """Seconds of the strings in the usual layout; ``parsed`` False for every other one.

    Strictly the layout (ASCII digits, valid fields), so whatever is accepted here is
    what ``datetime.fromisoformat`` gives; the rest is left to :func:`parse_timestamp`.
    """
    n = len(texts)
    seconds = np.zeros(n)
    lens = np.fromiter(map(len, texts), np.int64, n)
    rows = np.flatnonzero((lens >= 19) & (lens <= _ISO_MAX))
    if len(rows) == 0:
        return seconds, np.zeros(n, dtype=bool)
    sub = texts if len(rows) == n else [texts[k] for k in rows.tolist()]
    try:  # one byte per character when the strings are ASCII, as they nearly always are
        codes = np.array(sub, dtype=f"S{_ISO_MAX}").view(np.uint8)
    except UnicodeEncodeError:
        codes = np.array(sub, dtype=f"U{_ISO_MAX}").view(np.uint32)
    codes = codes.reshape(len(rows), _ISO_MAX)
    length = lens[rows]
    at = np.arange(len(rows))

    def char(pos: IntArray | int) -> IntArray:
        """The code at ``pos`` (per row, or one column); 0 beyond the string."""
        if isinstance(pos, int):  # one column: numpy pads each string with zeros
            column: IntArray = codes[:, pos].astype(np.int64)
            return column
        out: IntArray = codes[at, np.minimum(pos, _ISO_MAX - 1)].astype(np.int64)
        return np.where(pos < length, out, 0)

    def digits(pos: IntArray | int, width: int) -> tuple[IntArray, BoolArray]:
        """The number written at ``pos``, and whether it is ``width`` ASCII digits."""
        num = np.zeros(len(rows), dtype=np.int64)
        good = np.ones(len(rows), dtype=bool)
        for j in range(width):
            d = char(pos + j) - ord("0")
            good &= (d >= 0) & (d <= 9)
            num = num * 10 + d
        return num, good

    year, ok = digits(0, 4)
    month, good = digits(5, 2)
    ok &= good
    day, good = digits(8, 2)
    ok &= good
    hour, good = digits(11, 2)
    ok &= good
    minute, good = digits(14, 2)
    ok &= good
    second, good = digits(17, 2)
    ok &= good
    ok &= (char(4) == ord("-")) & (char(7) == ord("-")) & np.isin(char(10), [ord("T"), ord(" ")])
    ok &= (char(13) == ord(":")) & (char(16) == ord(":"))
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_ok = (month >= 1) & (month <= 12)
    days_in = _DAYS_IN_MONTH[np.where(month_ok, month, 0)] + (leap & (month == 2))
    ok &= (year >= 1) & month_ok & (day >= 1) & (day <= days_in)
    ok &= (hour <= 23) & (minute <= 59) & (second <= 59)

    # Optional decimals: "." and one to six digits.
    frac = char(19) == ord(".")
    n_frac = np.zeros(len(rows), dtype=np.int64)
    micros = np.zeros(len(rows), dtype=np.int64)
    going = frac.copy()
    for j in range(20, 26):
        d = char(j) - ord("0")
        going &= (d >= 0) & (d <= 9)
        n_frac += going
        micros = np.where(going, micros * 10 + d, micros)
    ok &= ~frac | (n_frac >= 1)
    micros *= 10 ** (6 - n_frac)

    # Optional zone, "Z" or "z" or a sign and HH:MM, then the end of the string.
    z = np.where(frac, 20 + n_frac, 19)
    rest = length - z
    zc = char(z)
    off_h, good_h = digits(z + 1, 2)
    off_m, good_m = digits(z + 4, 2)
    is_off = (rest == 6) & np.isin(zc, [ord("+"), ord("-")]) & (char(z + 3) == ord(":"))
    is_off &= good_h & good_m & (off_h <= 23) & (off_m <= 59)
    is_z = (rest == 1) & np.isin(zc, [ord("Z"), ord("z")])
    ok &= (rest == 0) | is_z | is_off
    offset = np.where(is_off, np.where(zc == ord("-"), -1, 1) * (off_h * 3600 + off_m * 60), 0)

    # Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's days_from_civil).
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * np.where(month > 2, month - 3, month + 9) + 2) // 5 + day - 1
    days = era * 146_097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719_468
    whole = days * 86_400 + hour * 3600 + minute * 60 + second - offset
    total = whole * 1_000_000 + micros
    ok &= (micros == 0) | (np.abs(total) < _EXACT_MICROS)
    exact = np.where(micros == 0, whole.astype(np.float64), total.astype(np.float64) / 1e6)
    parsed = np.zeros(n, dtype=bool)
    parsed[rows] = ok
    seconds[rows[ok]] = exact[ok]
    return seconds, parsed
