"""Compiled reading and writing of ``aiops score``'s plain CSV files.

A ``timestamp,value`` file without any quote, NUL, lone carriage return or non-ASCII byte
is, for Python's ``csv`` module, lines split on commas. Such files (nearly all) are read
here by three loops over the file's bytes instead of one Python list per row:
:func:`scan` finds each row's first two fields, :func:`parse` reads them as numbers or as
ISO 8601 times, and :func:`render` writes the scored file, echoing the fields' bytes.

Every number read here is exactly what Python's ``float()`` gives, and every time what
:func:`aiops.timeutil.parse_timestamps` gives; whatever these loops cannot read exactly is
marked and left to the caller's Python code (``float()``, ``parse_timestamp``,
``f"{score:.6f}"``):

- a number is read here when it is ``[+-]digits[.digits][(e|E)[+-]digits]`` with at most
  2**53 as its digits and a power of ten of at most 22 either way: one correctly rounded
  multiplication or division of two exact doubles (Clinger's fast path), as ``float()``;
- a time is read here in the layout :func:`aiops.timeutil._parse_iso_layout` reads, with
  the same integer arithmetic and the same one division by 1e6;
- a score is written here when it is in ``[0, 1]`` and not within 1e-6 of a tie at six
  decimals (the product by 1e6 is off by at most 2**-34, far less, so the rounding is the
  one ``"%.6f"`` makes); the others are marked for ``"%.6f"`` itself.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["SCORE_WIDTH", "parse", "render", "scan"]

#: Characters of a score in [0, 1] written with six decimals ("0.123456", "1.000000").
SCORE_WIDTH = 8

_POW10 = np.array([10.0**k for k in range(23)])  # exact doubles
_MAX_EXACT = 2**53
_ISO_MAX = len("YYYY-MM-DDTHH:MM:SS.ffffff+HH:MM")
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)

#: Statuses of a parsed field.
MISSING, READ, PYTHON = 0, 1, 2


@numba.njit(cache=True, nogil=True)
def scan(
    buf: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Rows of a plain CSV: each row's line end and first two fields' byte ranges.

    Returns ``(s0, e0, s1, e1, end, plain)``; ``s1 = e1 = -1`` where a row has one field.
    Blank lines are not rows (as ``csv.reader`` yields them empty). ``plain`` is False,
    and the arrays empty, when the bytes hold a quote, a NUL, a carriage return not
    followed by a line feed or a byte past ASCII: then only ``csv`` reads them right.
    """
    n = len(buf)
    cap = 1
    for i in range(n):
        if buf[i] == 10:
            cap += 1
    s0 = np.empty(cap, np.int64)
    e0 = np.empty(cap, np.int64)
    s1 = np.empty(cap, np.int64)
    e1 = np.empty(cap, np.int64)
    end = np.empty(cap, np.int64)
    rows = 0
    i = 0
    while i < n:
        start = i
        j = i
        while j < n:
            c = buf[j]
            if c == 10:
                break
            if c == 34 or c == 0 or c >= 128 or (c == 13 and (j + 1 >= n or buf[j + 1] != 10)):
                return s0[:0], e0[:0], s1[:0], e1[:0], end[:0], False
            j += 1
        stop = j
        if stop > start and buf[stop - 1] == 13:
            stop -= 1
        i = j + 1
        if stop == start:
            continue
        k = start
        while k < stop and buf[k] != 44:
            k += 1
        s0[rows] = start
        e0[rows] = k
        if k < stop:
            m = k + 1
            while m < stop and buf[m] != 44:
                m += 1
            s1[rows] = k + 1
            e1[rows] = m
        else:
            s1[rows] = -1
            e1[rows] = -1
        end[rows] = stop
        rows += 1
    return s0[:rows], e0[:rows], s1[:rows], e1[:rows], end[:rows], True


@numba.njit(cache=True, nogil=True)
def _number(buf: np.ndarray, s: int, e: int) -> tuple[float, bool]:
    """``float(buf[s:e])`` where the fast path reads it exactly, else ``(0.0, False)``."""
    i = s
    neg = False
    if i < e and (buf[i] == 43 or buf[i] == 45):
        neg = buf[i] == 45
        i += 1
    m = 0
    digits = 0  # digits of the mantissa
    scale = 0  # power of ten the digits after the point take off
    big = False  # more significant digits than an exact double holds
    while i < e and 48 <= buf[i] <= 57:
        if m <= _MAX_EXACT:
            m = m * 10 + (buf[i] - 48)
        else:
            big = True
        digits += 1
        i += 1
    if i < e and buf[i] == 46:
        i += 1
        while i < e and 48 <= buf[i] <= 57:
            if m <= _MAX_EXACT:
                m = m * 10 + (buf[i] - 48)
                scale += 1
            else:
                big = True
            digits += 1
            i += 1
    if digits == 0:
        return 0.0, False
    exp = 0
    if i < e and (buf[i] == 101 or buf[i] == 69):
        i += 1
        eneg = False
        if i < e and (buf[i] == 43 or buf[i] == 45):
            eneg = buf[i] == 45
            i += 1
        ed = 0
        while i < e and 48 <= buf[i] <= 57:
            exp = exp * 10 + (buf[i] - 48)
            ed += 1
            i += 1
            if ed > 6:
                return 0.0, False
        if ed == 0:
            return 0.0, False
        if eneg:
            exp = -exp
    if i != e or big or m > _MAX_EXACT:
        return 0.0, False
    p = exp - scale
    if m == 0:
        v = 0.0
    elif 0 <= p <= 22:
        v = float(m) * _POW10[p]
    elif -22 <= p < 0:
        v = float(m) / _POW10[-p]
    else:
        return 0.0, False
    return (-v if neg else v), True


@numba.njit(cache=True, nogil=True)
def _digits(buf: np.ndarray, pos: int, width: int, stop: int) -> int:
    """The number of ``width`` ASCII digits at ``pos`` (before ``stop``), or -1."""
    num = 0
    for j in range(pos, pos + width):
        if j >= stop:
            return -1
        d = buf[j] - 48
        if d < 0 or d > 9:
            return -1
        num = num * 10 + d
    return num


@numba.njit(cache=True, nogil=True)
def _iso(buf: np.ndarray, s: int, e: int) -> tuple[float, bool]:
    """Unix seconds of an ISO 8601 time in ``_parse_iso_layout``'s layout, else False."""
    length = e - s
    if length < 19 or length > _ISO_MAX:
        return 0.0, False
    year = _digits(buf, s, 4, e)
    month = _digits(buf, s + 5, 2, e)
    day = _digits(buf, s + 8, 2, e)
    hour = _digits(buf, s + 11, 2, e)
    minute = _digits(buf, s + 14, 2, e)
    second = _digits(buf, s + 17, 2, e)
    if year < 0 or month < 0 or day < 0 or hour < 0 or minute < 0 or second < 0:
        return 0.0, False
    sep = buf[s + 10]
    if buf[s + 4] != 45 or buf[s + 7] != 45 or not (sep == 84 or sep == 32):
        return 0.0, False
    if buf[s + 13] != 58 or buf[s + 16] != 58:
        return 0.0, False
    if year < 1 or month < 1 or month > 12 or hour > 23 or minute > 59 or second > 59:
        return 0.0, False
    leap = (year % 4 == 0 and year % 100 != 0) or year % 400 == 0
    days_in = _DAYS_IN_MONTH[month] + (1 if leap and month == 2 else 0)
    if day < 1 or day > days_in:
        return 0.0, False
    z = s + 19
    micros = 0
    if z < e and buf[z] == 46:
        n_frac = 0
        j = z + 1
        while n_frac < 6 and j < e and 48 <= buf[j] <= 57:
            micros = micros * 10 + (buf[j] - 48)
            n_frac += 1
            j += 1
        if n_frac == 0:
            return 0.0, False
        for _ in range(6 - n_frac):
            micros *= 10
        z = j
    rest = e - z
    offset = 0
    if rest == 0 or (rest == 1 and (buf[z] == 90 or buf[z] == 122)):
        pass  # no zone, or "Z"
    elif rest == 6 and (buf[z] == 43 or buf[z] == 45) and buf[z + 3] == 58:
        off_h = _digits(buf, z + 1, 2, e)
        off_m = _digits(buf, z + 4, 2, e)
        if off_h < 0 or off_m < 0 or off_h > 23 or off_m > 59:
            return 0.0, False
        offset = off_h * 3600 + off_m * 60
        if buf[z] == 45:
            offset = -offset
    else:
        return 0.0, False
    # Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's days_from_civil).
    y = year - (1 if month <= 2 else 0)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    days = era * 146_097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719_468
    whole = days * 86_400 + hour * 3600 + minute * 60 + second - offset
    if micros == 0:
        return float(whole), True
    total = whole * 1_000_000 + micros
    if abs(total) >= _MAX_EXACT:
        return 0.0, False
    return float(total) / 1e6, True


@numba.njit(cache=True, nogil=True)
def parse(
    buf: np.ndarray, s0: np.ndarray, e0: np.ndarray, s1: np.ndarray, e1: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Times and values of the rows :func:`scan` found, with their statuses.

    Returns ``(ts, t_status, vs, v_status)``: ``READ`` where the number was read here,
    ``PYTHON`` where the caller must read the field itself; a value is NaN and
    ``MISSING`` where its field is empty or absent.
    """
    n = len(s0)
    ts = np.zeros(n)
    vs = np.full(n, np.nan)
    t_status = np.zeros(n, np.uint8)
    v_status = np.zeros(n, np.uint8)
    for r in range(n):
        t, ok = _number(buf, s0[r], e0[r])
        if not ok:
            t, ok = _iso(buf, s0[r], e0[r])
        if ok:
            ts[r] = t
            t_status[r] = READ
        else:
            t_status[r] = PYTHON
        if s1[r] >= 0 and e1[r] > s1[r]:
            v, ok = _number(buf, s1[r], e1[r])
            if ok:
                vs[r] = v
                v_status[r] = READ
            else:
                v_status[r] = PYTHON
    return ts, t_status, vs, v_status


@numba.njit(cache=True, nogil=True)
def render(
    buf: np.ndarray,
    s0: np.ndarray,
    e0: np.ndarray,
    s1: np.ndarray,
    e1: np.ndarray,
    scores: np.ndarray,
    alerts: np.ndarray,
    header: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``header``, then ``time,value,score,alert`` a line for each row, as bytes.

    The fields are the rows' bytes; each score, in ``[0, 1]``, takes ``SCORE_WIDTH``
    bytes. Returns the bytes and, for each score left to the caller (a near tie), its row
    and the offset of its bytes.
    """
    n = len(s0)
    size = len(header)
    for r in range(n):
        size += e0[r] - s0[r] + 4 + SCORE_WIDTH + 1
        if s1[r] >= 0:
            size += e1[r] - s1[r]
    out = np.empty(size, np.uint8)
    todo_rows = np.empty(n, np.int64)
    todo_at = np.empty(n, np.int64)
    todo = 0
    w = 0
    for j in range(len(header)):
        out[w] = header[j]
        w += 1
    for r in range(n):
        for j in range(s0[r], e0[r]):
            out[w] = buf[j]
            w += 1
        out[w] = 44
        w += 1
        if s1[r] >= 0:
            for j in range(s1[r], e1[r]):
                out[w] = buf[j]
                w += 1
        out[w] = 44
        w += 1
        q = scores[r] * 1e6
        k = np.floor(q)
        f = q - k
        if abs(f - 0.5) < 1e-6:
            todo_rows[todo] = r
            todo_at[todo] = w
            todo += 1
            k = 0.0
        elif f > 0.5:
            k += 1.0
        units = int(k)
        out[w] = 48 + units // 1_000_000
        out[w + 1] = 46
        frac = units % 1_000_000
        for j in range(6):
            out[w + 7 - j] = 48 + frac % 10
            frac //= 10
        w += SCORE_WIDTH
        out[w] = 44
        out[w + 1] = 49 if alerts[r] else 48
        out[w + 2] = 10
        w += 3
    return out, todo_rows[:todo], todo_at[:todo]
