"""Seeded malformed inputs for the reliability fuzz suite (tests/test_reliability_fuzz*.py).

:class:`Mutator` turns valid payloads into malformed ones, reproducibly from a seed: bit
flips, truncation, inserted or deleted bytes, duplicated slices, huge fields, deep
nesting, bytes that are not UTF-8, JSON escapes of lone surrogates, control characters,
special numbers (inf, NaN, 1e999, integers past int64, digits Python's ``float`` takes
and the formats do not) and times outside years 1-9999. :meth:`Mutator.json_value`
gives hostile JSON values for structure-aware mutation (one item of an array replaced,
its neighbours left good).

Each case is cheap (a few microseconds), so a test can afford 10,000 per decoder; the
rare huge or deep cases are what a real payload limit would let through.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from typing import Any

from aiops.types import SeriesKey

__all__ = ["BAD_NUMBERS", "BAD_TIMES", "Mutator", "assert_utf8", "check_key", "nest"]

#: Numbers a decoder must refuse or read without raising.
BAD_NUMBERS: tuple[bytes, ...] = (
    b"inf", b"-inf", b"+Inf", b"NaN", b"nan", b"Infinity", b"-Infinity", b"1e309",
    b"-1e309", b"1e999999", b"99999999999999999999999", b"9223372036854775808",
    b"-9223372036854775809", b"18446744073709551616", b"0x1F", b"1_000", b"\xd9\xa3",
    b"\xc2\xb2", b"1e", b"--1", b".", b"-", b"+", b"1.2.3", b"", b" ", b"1" * 5000,
    b"0." + b"0" * 400 + b"1", b"1e-400", b"-0", b"00012",
)  # fmt: skip
#: Times no alert can carry (outside years 1-9999), impossible dates, odd units.
BAD_TIMES: tuple[bytes, ...] = (
    b"0000-01-01T00:00:00Z", b"10000-01-01T00:00:00Z", b"9999-12-31T23:59:60Z",
    b"0001-01-01T00:00:00+01:00", b"9999-12-31T23:30:00-01:00", b"2024-02-30T00:00:00Z",
    b"2024-13-01T00:00:00Z", b"2024-01-01T24:00:00Z", b"2024-01-01T00:61:00Z",
    b"2024-01-01T00:00:00+24:00", b"2024-01-01T00:00:00+99:99", b"-62135596801",
    b"253402300800", b"253402300800000", b"1e20", b"-1e20", b"1e308", b"-9223372036854775808",
    b"9223372036854775807", b"99999999999999999999999999", b"1" * 4400,
    b"1" * 50_000 + b"x",
)  # fmt: skip
_SPECIAL_BYTES = b' ,=\\"#\n\r\t{}[]:.-+eEiutTfFN0123456789\x00\x1b\x7f\xff\xc3\x80'
_NOT_UTF8 = (
    b"\xff", b"\xfe", b"\xc3", b"\x80", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
    b"\xe2\x82", b"\xf0\x9f\x98",
)  # fmt: skip
_IN_STRINGS = (b"\\ud800", b"\\udfff", b"\\ud83d", b"\\u0000", b"\\", b"\\x", b"\\u12")
_NUMBER = re.compile(rb"-?\d[\d.eE+-]*")
_TIME = re.compile(rb"\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-]\d\d:\d\d)?|\b\d{9,19}\b")
# About one case in this many is a huge field or a deep nesting (costly to decode).
_RARE = 150


class Mutator:
    """Malformed variants of valid payloads, reproducible from ``seed``.

    >>> Mutator(7).mutate(b'{"v": 1}') == Mutator(7).mutate(b'{"v": 1}')
    True
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self._ops: list[Callable[[bytearray], None]] = [
            self._flip,
            self._flip,
            self._truncate,
            self._insert,
            self._delete,
            self._replace,
            self._duplicate,
            self._not_utf8,
            self._escape,
            self._number,
            self._number,
            self._time,
            self._time,
            self._control,
        ]

    def mutate(self, payload: bytes, n_ops: int | None = None) -> bytes:
        """``payload`` after 1-4 random mutations (or ``n_ops``), sometimes a rare one."""
        data = bytearray(payload)
        rng = self.rng
        if rng.randrange(_RARE) == 0:
            rng.choice((self._huge, self._deep))(data)
        for _ in range(n_ops if n_ops is not None else rng.randint(1, 4)):
            rng.choice(self._ops)(data)
        return bytes(data)

    def json_value(self) -> Any:
        """A hostile JSON value (a type, size or number a decoder does not expect)."""
        rng = self.rng
        pick = rng.randrange(16)
        if pick == 0:
            return None
        if pick == 1:
            return rng.choice((True, False))
        if pick == 2:
            return rng.choice((float("inf"), float("-inf"), float("nan")))
        if pick == 3:
            return rng.choice((10**400, -(10**30), 2**63, 2**64, -(2**63) - 1))
        if pick == 4:
            return rng.choice(BAD_NUMBERS).decode("utf-8", "replace")
        if pick == 5:
            return rng.choice(BAD_TIMES).decode()
        if pick == 6:
            return "\ud800" + rng.choice(("", "x", "\udfff"))  # written as an escape
        if pick == 7:
            return "x" * rng.choice((0, 1, 200, 5000, 200_000 if rng.randrange(20) == 0 else 9))
        if pick == 8:
            return [rng.choice((1, "a", None))] * rng.randrange(5)
        if pick == 9:
            return {"k": rng.choice((1, "v", [1], {"x": None}))}
        if pick == 10:
            return {"": "", "__name__": rng.choice(("", "up", 3))}
        if pick == 11:
            return rng.uniform(-1e300, 1e300)
        if pick == 12:
            return rng.randint(-(2**70), 2**70)
        if pick == 13:
            return "\x00\x1b[31m\u202e" + chr(rng.randrange(0x20, 0x2FFFF))
        if pick == 14:
            return nest(rng.choice((10, 100, 500)))
        return rng.choice((-1, 0, 1.5, "1.5", "NaN", "+Inf", "2024-05-01T12:00:00Z"))

    def mutate_item(self, item: Any) -> Any:
        """``item`` (a JSON value) with one member, or itself, replaced by a hostile value."""
        rng = self.rng
        if not isinstance(item, dict) or not item or rng.randrange(6) == 0:
            return self.json_value()
        out = json.loads(json.dumps(item))
        node = out
        while True:
            key = rng.choice(sorted(node))
            child = node[key]
            if isinstance(child, dict) and child and rng.randrange(2):
                node = child
                continue
            if rng.randrange(8) == 0:
                del node[key]
            else:
                node[key] = self.json_value()
            return out

    # -- byte-level operators ------------------------------------------------------------

    def _pos(self, data: bytearray) -> int:
        return self.rng.randrange(len(data) + 1)

    def _flip(self, data: bytearray) -> None:
        if data:
            for _ in range(self.rng.randint(1, 8)):
                data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)

    def _truncate(self, data: bytearray) -> None:
        del data[self._pos(data) :]

    def _insert(self, data: bytearray) -> None:
        at = self._pos(data)
        data[at:at] = bytes(self.rng.choices(_SPECIAL_BYTES, k=self.rng.randint(1, 4)))

    def _delete(self, data: bytearray) -> None:
        at = self._pos(data)
        del data[at : at + self.rng.randint(1, 8)]

    def _replace(self, data: bytearray) -> None:
        if data:
            data[self.rng.randrange(len(data))] = self.rng.choice(_SPECIAL_BYTES)

    def _duplicate(self, data: bytearray) -> None:
        if data:
            a = self.rng.randrange(len(data))
            b = min(len(data), a + self.rng.randint(1, 64))
            at = self._pos(data)
            data[at:at] = data[a:b] * self.rng.randint(1, 3)

    def _not_utf8(self, data: bytearray) -> None:
        at = self._pos(data)
        data[at:at] = self.rng.choice(_NOT_UTF8)

    def _escape(self, data: bytearray) -> None:
        quotes = [i for i, c in enumerate(data) if c == 0x22]  # inside a JSON string
        at = self.rng.choice(quotes) + 1 if quotes else self._pos(data)
        data[at:at] = self.rng.choice(_IN_STRINGS)

    def _control(self, data: bytearray) -> None:
        at = self._pos(data)
        data[at:at] = bytes([self.rng.choice((0, 1, 8, 0x0B, 0x0C, 0x1B, 0x7F, 0x0D))])

    def _number(self, data: bytearray) -> None:
        self._sub(data, _NUMBER, BAD_NUMBERS)

    def _time(self, data: bytearray) -> None:
        self._sub(data, _TIME, BAD_TIMES)

    def _sub(self, data: bytearray, pattern: re.Pattern[bytes], pool: Sequence[bytes]) -> None:
        spans = [m.span() for m in pattern.finditer(data)]
        if not spans:
            self._insert(data)
            return
        a, b = self.rng.choice(spans)
        data[a:b] = self.rng.choice(pool)

    def _huge(self, data: bytearray) -> None:
        at = self._pos(data)
        size = self.rng.choice((130 << 10, 300 << 10))
        data[at:at] = self.rng.choice((b"a", b"9", b"\\", b" ", b",")) * size

    def _deep(self, data: bytearray) -> None:
        at = self._pos(data)
        depth = self.rng.choice((500, 5_000, 100_000))
        opener = self.rng.choice((b"[", b'{"a":', b"[{", b"{"))
        data[at:at] = opener * depth


def nest(depth: int) -> Any:
    """A list nested ``depth`` deep (built without recursion)."""
    node: Any = []
    for _ in range(depth):
        node = [node]
    return node


def assert_utf8(text: str, what: str) -> None:
    """Fail unless ``text`` can be written as UTF-8 (alerts, rejects file, logs)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise AssertionError(f"{what} cannot be written as UTF-8: {text!r}") from exc


def check_key(key: SeriesKey) -> None:
    """A decoded series key: a :class:`SeriesKey` whose text is valid UTF-8."""
    assert isinstance(key, SeriesKey)
    assert_utf8(str(key), "series key")
