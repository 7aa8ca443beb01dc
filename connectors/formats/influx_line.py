"""InfluxDB line protocol, as Telegraf's Kafka output writes it (``data_format = "influx"``)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal

from aiops.pipeline.decoder import MAX_TIMESTAMP, MIN_TIMESTAMP, Decoded, Decoder, DecoderConfig
from aiops.types import SeriesKey

__all__ = ["InfluxLineDecoder"]

# Grammar: github.com/influxdata/line-protocol line-protocol.ebnf, with the escaping of
# its v2 decoder: in a measurement "\," and "\ " are escapes; in tag keys, tag values and
# field keys also "\="; any other backslash is a literal backslash. Non-printable
# characters are not allowed outside string fields.
_NP = r"\x00-\x1f\x7f"
# Possessive quantifiers (Python 3.11+): tokens end at characters they cannot contain,
# so giving characters back never helps a match, and forbidding it keeps the regex
# linear on garbage and about 3x faster on good lines.
_MEAS = rf"(?:[^\\ ,#{_NP}]|\\[ ,]|\\(?![ ,]))(?:[^\\ ,{_NP}]++|\\[ ,]|\\(?![ ,]))*+"
_KEY = rf"(?:[^\\ ,={_NP}]++|\\[ ,=]|\\(?![ ,=]))++"
_STR = r'"(?:[^"\\]++|\\.)*+"'
_FVAL = rf'(?:{_STR}|[^ ,"{_NP}][^ ,{_NP}]*+)'
_LINE = re.compile(
    rf"(?P<key>{_MEAS}(?:,{_KEY}={_KEY})*+) ++"
    rf"(?P<fields>{_KEY}={_FVAL}(?:,{_KEY}={_FVAL})*+)"
    rf"(?: ++(?P<ts>[^ ]++))? *+",
    re.DOTALL,
)
_MEAS_RE = re.compile(_MEAS)
_TAG_RE = re.compile(rf",({_KEY})=({_KEY})")
_TAG_KEY_RE = re.compile(rf",({_KEY})=")
_FIELD_RE = re.compile(rf"({_KEY})=({_FVAL}),?", re.DOTALL)
_FIELD_KEY_RE = re.compile(rf"({_KEY})=")
_ONE_FIELD_RE = re.compile(rf"({_KEY})=({_FVAL})", re.DOTALL)
_STR_RE = re.compile(_STR, re.DOTALL)
_FLOAT = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INT = re.compile(r"-?\d+")
_UINT = re.compile(r"\d+")
_TIME = re.compile(r"-?\d+")
_TRUE = frozenset({"t", "T", "true", "True", "TRUE"})
_FALSE = frozenset({"f", "F", "false", "False", "FALSE"})
_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
_MAX_DIGITS = 25
_DIVISOR = {"ns": 10**9, "us": 10**6, "ms": 10**3, "s": 1}
# Parsed keys are cached per measurement+tags text; the cap bounds memory under a
# cardinality explosion (the cache is dropped, not evicted piecemeal).
_CACHE_MAX = 100_000
_NUM_START = frozenset("-.0123456789")
_NUM_END = frozenset(".0123456789")
_INFINITIES = (math.inf, -math.inf)


class InfluxLineDecoder(Decoder):
    r"""Decode InfluxDB line protocol: one or many lines per record.

    ``cpu,cpu=cpu0,host=web-1 usage_user=12.5,usage_system=3.1 1700000000000000000``
    becomes the series ``cpu_usage_user{cpu="cpu0",host="web-1"}`` and
    ``cpu_usage_system{...}``: tags become labels, each numeric field one series named
    ``<measurement><separator><field>``. Floats (``1``, ``-1.5e3``), integers (``3i``),
    unsigned integers (``3u``) and booleans (``t``/``false``..., as 1/0 unless
    ``booleans: skip``) are numeric. Integers beyond 2**53 lose precision as floats.

    Documented skips (counted in ``Decoded.skipped``, never rejects): ``comment`` for
    ``#`` lines, ``string_field`` for each string field (no numeric value; a line of only
    string fields yields no point and only this count), ``bool_field`` with
    ``booleans: skip``. Blank lines are ignored.

    Rejects, ``raw`` = the offending line: ``bad_utf8`` (that line only), ``bad_line``
    (grammar; ``detail`` gives line and column), ``bad_timestamp`` (the whole line),
    ``bad_value`` (that field only: the line's other fields are kept). A line without
    a timestamp takes the record's time.

    Not supported: raw newlines inside string fields (the line protocol docs rule them
    out and Telegraf escapes them as ``\n``); such a line splits into rejected halves.

    Cost: one regex match per line; fields are split with string methods unless a line
    has quotes or backslashes; parsed keys and series keys are cached per measurement
    and tag set. About 2 us per point for Telegraf cpu/mem lines (bench/decode_bench.py).

    >>> d = InfluxLineDecoder()
    >>> out = d.decode(b'mem,host=a used=1i,free=2.5,ok=true,note="x" 1000000000')
    >>> for k, t, v in out.points():
    ...     print(k, t, v)
    mem_used{host="a"} 1.0 1.0
    mem_free{host="a"} 1.0 2.5
    mem_ok{host="a"} 1.0 1.0
    >>> out.skipped
    {'string_field': 1}
    """

    type = "influx_line"

    class Config(DecoderConfig):
        """Settings of :class:`InfluxLineDecoder`."""

        #: Unit of the timestamps (Telegraf's ``precision``; ns unless configured).
        precision: Literal["ns", "us", "ms", "s"] = "ns"
        #: Joins measurement and field key into the series name.
        separator: str = "_"
        #: Booleans as 1/0 (``number``) or left out and counted (``skip``).
        booleans: Literal["number", "skip"] = "number"

    config: Config

    def __init__(
        self, config: DecoderConfig | Mapping[str, Any] | None = None, /, **settings: Any
    ) -> None:
        super().__init__(config, **settings)
        self._divisor = _DIVISOR[self.config.precision]
        self._skip_bools = self.config.booleans == "skip"
        # key section text -> (measurement, tags, {field key: series key})
        self._keys: dict[str, tuple[str, dict[str, str], dict[str, SeriesKey]]] = {}

    def decode(
        self, payload: bytes, *, origin: str = "", timestamp: float | None = None
    ) -> Decoded:
        """Decode one record; see the class docstring."""
        out = Decoded(origin=origin)
        default_ts = self.default_time(timestamp)
        try:
            lines: list[str] | list[bytes] = payload.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            lines = payload.split(b"\n")
        for lineno, line in enumerate(lines, 1):
            if isinstance(line, bytes):
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as e:
                    out.reject("bad_utf8", f"line {lineno}: invalid UTF-8 at byte {e.start}", line)
                    continue
            else:
                text = line
            self._line(text, lineno, out, default_ts)
        return out

    def _line(self, line: str, lineno: int, out: Decoded, default_ts: float) -> None:
        if line.endswith("\r"):
            line = line[:-1]
        stripped = line.lstrip(" ")
        if not stripped:
            return
        if stripped[0] == "#":
            out.skip("comment")
            return
        m = _LINE.fullmatch(stripped)
        if m is None:
            col, why = _diagnose(stripped)
            col += len(line) - len(stripped)
            out.reject("bad_line", f"line {lineno}, column {col}: {why}", line.encode())
            return
        key_text, fields_text, ts_text = m.group("key", "fields", "ts")
        if ts_text is None:
            ts = default_ts
        else:
            ts_or_err = self._timestamp(ts_text)
            if isinstance(ts_or_err, str):
                col = m.start("ts") + 1 + len(line) - len(stripped)
                detail = f"line {lineno}, column {col}: {ts_or_err}"
                out.reject("bad_timestamp", detail, line.encode())
                return
            ts = ts_or_err
        measurement, tags, series_of = self._key(key_text)
        if '"' in fields_text or "\\" in fields_text:
            fields = [(_unescape_key(k), v) for k, v in _FIELD_RE.findall(fields_text)]
        else:
            fields = [f.split("=", 1) for f in fields_text.split(",")]
        keys, stamps, values = out.keys, out.timestamps, out.values
        for fkey, raw in fields:
            first = raw[0]
            # Fast path for plain decimals: float() accepts more than line protocol
            # ("nan", "inf", "1_0", non-ASCII digits), which these checks rule out.
            if first in _NUM_START and raw[-1] in _NUM_END and raw.isascii() and "_" not in raw:
                try:
                    value = float(raw)
                except ValueError:
                    self._bad_value(out, line, lineno, fkey, raw, "is not a number")
                    continue
                if value in _INFINITIES:
                    self._bad_value(out, line, lineno, fkey, raw, "is out of the float64 range")
                    continue
            elif first == '"':
                out.skip("string_field")
                continue
            elif first in "tTfF":
                if raw in _TRUE:
                    value = 1.0
                elif raw in _FALSE:
                    value = 0.0
                else:
                    self._bad_value(out, line, lineno, fkey, raw, "is not a number or boolean")
                    continue
                if self._skip_bools:
                    out.skip("bool_field")
                    continue
            else:
                value_or_err = _number(raw)
                if isinstance(value_or_err, str):
                    self._bad_value(out, line, lineno, fkey, raw, value_or_err)
                    continue
                value = value_or_err
            series = series_of.get(fkey)
            if series is None:
                series = SeriesKey.of(measurement + self.config.separator + fkey, tags)
                series_of[fkey] = series
            keys.append(series)
            stamps.append(ts)
            values.append(value)

    def _key(self, key_text: str) -> tuple[str, dict[str, str], dict[str, SeriesKey]]:
        """Measurement, tags and the series-per-field cache of a line's key section."""
        hit = self._keys.get(key_text)
        if hit is not None:
            return hit
        if "\\" not in key_text:
            measurement, *pairs = key_text.split(",")
            tags = dict(p.split("=", 1) for p in pairs)
        else:
            m = _MEAS_RE.match(key_text)
            assert m is not None  # the line regex matched
            measurement = m.group().replace("\\,", ",").replace("\\ ", " ")
            tags = {
                _unescape_key(k): _unescape_key(v) for k, v in _TAG_RE.findall(key_text, m.end())
            }
        if len(self._keys) >= _CACHE_MAX:
            self._keys.clear()
        entry: tuple[str, dict[str, str], dict[str, SeriesKey]] = (measurement, tags, {})
        self._keys[key_text] = entry
        return entry

    def _timestamp(self, text: str) -> float | str:
        if not _TIME.fullmatch(text):
            return f"timestamp {_clip(text)} is not an integer"
        # int() refuses over 4300 digits; 21 already overflows int64.
        n = int(text) if len(text) <= _MAX_DIGITS else _INT64_MAX + 1
        if not _INT64_MIN <= n <= _INT64_MAX:
            return f"timestamp {_clip(text)} is out of the int64 range"
        seconds = n / self._divisor
        if not MIN_TIMESTAMP <= seconds < MAX_TIMESTAMP:  # precision s or ms reaches past them
            return f"timestamp {_clip(text)} is outside years 1-9999"
        return seconds

    @staticmethod
    def _bad_value(out: Decoded, line: str, lineno: int, fkey: str, raw: str, why: str) -> None:
        detail = f"line {lineno}: field {_clip(fkey)}: {_clip(raw)} {why}"
        out.reject("bad_value", detail, line.encode())


def _clip(text: str, limit: int = 40) -> str:
    """``repr`` of ``text``, shortened for a reject's detail."""
    return repr(text) if len(text) <= limit else repr(text[: limit - 3]) + "..."


def _unescape_key(text: str) -> str:
    if "\\" not in text:
        return text
    return text.replace("\\,", ",").replace("\\=", "=").replace("\\ ", " ")


def _number(raw: str) -> float | str:
    last = raw[-1]
    if last == "i":
        if not _INT.fullmatch(raw, 0, len(raw) - 1):
            return "is not an integer"
        n = int(raw[:-1]) if len(raw) <= _MAX_DIGITS else _INT64_MAX + 1
        if not _INT64_MIN <= n <= _INT64_MAX:
            return "is out of the int64 range"
        return float(n)
    if last == "u":
        if not _UINT.fullmatch(raw, 0, len(raw) - 1):
            return "is not an unsigned integer"
        n = int(raw[:-1]) if len(raw) <= _MAX_DIGITS else _UINT64_MAX + 1
        if n > _UINT64_MAX:
            return "is out of the uint64 range"
        return float(n)
    if not _FLOAT.fullmatch(raw):
        return "is not a number"
    v = float(raw)
    if math.isinf(v):
        return "is out of the float64 range"
    return v


# Used only for error messages, once the fast full-line match has failed.
def _diagnose(line: str) -> tuple[int, str]:
    """(1-based column, reason) of the first grammar error in ``line``."""
    m = _MEAS_RE.match(line)
    if m is None:
        return 1, f"invalid character {line[0]!r} at start of measurement"
    pos = m.end()
    while pos < len(line) and line[pos] == ",":
        t = _TAG_RE.match(line, pos)
        if t is None:
            k = _TAG_KEY_RE.match(line, pos)
            if k is None:
                return pos + 2, "expected tag key=value after ','"
            return k.end() + 1, f"expected a value for tag {k.group(1)!r}"
        pos = t.end()
    if pos >= len(line):
        return pos + 1, "no fields (a point needs at least one field)"
    if line[pos] != " ":
        return pos + 1, f"unexpected character {line[pos]!r} (escape it with '\\')"
    while pos < len(line) and line[pos] == " ":
        pos += 1
    if pos >= len(line):
        return pos + 1, "no fields (a point needs at least one field)"
    while True:
        k = _FIELD_KEY_RE.match(line, pos)
        if k is None:
            return pos + 1, "expected field key=value"
        vpos = k.end()
        if vpos < len(line) and line[vpos] == '"' and _STR_RE.match(line, vpos) is None:
            return vpos + 1, "unterminated string field"
        f = _ONE_FIELD_RE.match(line, pos)
        if f is None:
            return vpos + 1, f"expected a value for field {k.group(1)!r}"
        pos = f.end()
        if pos < len(line) and line[pos] == ",":
            pos += 1
            continue
        break
    if pos < len(line) and line[pos] != " ":
        return pos + 1, f"unexpected character {line[pos]!r} after field value"
    while pos < len(line) and line[pos] == " ":
        pos += 1
    while pos < len(line) and line[pos] != " ":
        pos += 1
    while pos < len(line) and line[pos] == " ":
        pos += 1
    return pos + 1, "unexpected text after timestamp"
