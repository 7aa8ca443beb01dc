"""Series selectors (PromQL) and label matchers (Alertmanager).

A :class:`Selector` is what a rule's ``selector:`` says: which series the rule sees.
It follows PromQL's instant-vector selector syntax, ``name{label="v", l2!="v",
l3=~"re", l4!~"re"}``: the metric name is optional when a matcher is given, and
``{__name__=~"..."}`` selects by name pattern. A :class:`Matcher` is one
``label op value`` condition; the alerting file's ``matchers:`` lists (routes, inhibit
rules, silences) use it in Alertmanager's syntax (:func:`parse_matchers`): one entry
may hold several matchers (``foo=bar,dings!=bums``, ``{a="b", c="d"}``), and values
may be unquoted.

Regular expressions run on RE2 (the engine of Prometheus and Alertmanager), fully
anchored: ``job=~"api"`` matches ``api`` but not ``api-2``; ``(?i)`` flags and POSIX
classes such as ``[[:alpha:]]`` work, and ``.`` does not match a newline. A missing
label has the empty value, so ``env=""`` matches series without an ``env`` label.
Compiled patterns are cached.

>>> from aiops.types import SeriesKey
>>> sel = parse_selector('http_request_duration_seconds{service=~"api|web"}')
>>> sel.matches(SeriesKey.of("http_request_duration_seconds", {"service": "web"}))
True
>>> sel.matches(SeriesKey.of("http_request_duration_seconds", {"service": "db"}))
False
>>> Matcher.parse("severity=page").matches({"severity": "page"})
True
>>> [str(m) for m in parse_matchers('{team=~"db|infra", severity!=info}')]
['team=~"db|infra"', 'severity!="info"']
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import re2

from aiops.types import METRIC_NAME_LABEL, SeriesKey

__all__ = [
    "LABEL_NAME_RE",
    "METRIC_NAME_RE",
    "MatchOp",
    "Matcher",
    "Selector",
    "compile_anchored",
    "parse_matcher",
    "parse_matchers",
    "parse_selector",
]

MatchOp = Literal["=", "!=", "=~", "!~"]

LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
"""A valid label name (Prometheus' classic charset)."""
METRIC_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
"""A valid metric name (Prometheus' classic charset)."""
_AM_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
"""A label name Alertmanager's matcher syntax takes unquoted; others are double-quoted."""

# Alertmanager's matcher: name, operator, value; Go's \s is [\t\n\f\r ], not Unicode's.
_WS = "[\t\n\f\r ]"
_AM_MATCHER_RE = re.compile(
    rf"^{_WS}*(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*){_WS}*(?P<op>=~|=|!=|!~){_WS}*"
    rf"(?P<value>.*?){_WS}*$",
    re.DOTALL,
)
_AM_REST_RE = re.compile(rf"^{_WS}*(?P<op>=~|=|!=|!~){_WS}*(?P<value>.*?){_WS}*$", re.DOTALL)

_OPS: tuple[MatchOp, ...] = ("=~", "!~", "!=", "=")  # longest first
_VERDICTS_KEPT = 4096  # per regex matcher; cleared when full, so memory stays bounded
_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
}


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error comes back as an exception; no stderr noise


@functools.lru_cache(maxsize=4096)
def compile_anchored(pattern: str) -> Any:
    r"""Compile ``pattern`` with RE2 as ``^(?:pattern)$`` (whole-value matching), cached.

    Returns an RE2 pattern object (``fullmatch``, ``search`` as in :mod:`re`). Raises
    :class:`ValueError` naming the pattern when it does not compile; RE2's message
    quotes the pattern with the anchors, as Alertmanager's does.

    >>> bool(compile_anchored("(?i)disk.*").fullmatch("DiskFull"))
    True
    >>> bool(compile_anchored("[[:alpha:]]+").fullmatch("abc"))
    True
    >>> bool(compile_anchored("a.b").fullmatch("a\nb"))
    False
    >>> compile_anchored("(api")
    Traceback (most recent call last):
    ...
    ValueError: invalid regex "(api": missing ): ^(?:(api)$
    """
    try:
        return re2.compile(f"^(?:{pattern})$", options=_RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else ""
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise ValueError(f"invalid regex {_quote(pattern)}: {detail}") from None


@dataclass(frozen=True, slots=True)
class Matcher:
    r"""One condition on one label: ``name op value``.

    ``op`` is ``=`` (equal), ``!=`` (not equal), ``=~`` (regex matches the whole value)
    or ``!~`` (regex does not match). A label that is absent has the value ``""``.
    Building a regex matcher compiles its pattern (RE2), so a bad pattern fails early
    with :class:`ValueError`. The name may be any non-empty text; ``str()`` quotes it
    when it is outside ``[a-zA-Z_:][a-zA-Z0-9_:]*``.

    >>> m = Matcher("team", "=~", "db|infra")
    >>> m.matches({"team": "db"}), m.matches({"team": "dbx"}), m.matches({})
    (True, False, False)
    >>> str(m)
    'team=~"db|infra"'
    >>> Matcher("env", "=", "").matches({})
    True
    >>> str(Matcher("service.name", "=", 'say "hi"'))
    '"service.name"="say \\"hi\\""'
    """

    name: str
    op: MatchOp
    value: str
    _regex: Any = field(default=None, init=False, repr=False, compare=False)
    # Label values repeat (severities, services): a regex verdict per value is kept.
    _seen: dict[str, bool] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a label name must not be empty")
        if self.op not in _OPS:
            raise ValueError(f"invalid match operator {_quote(self.op)}; use =, !=, =~ or !~")
        if self.op in ("=~", "!~"):
            object.__setattr__(self, "_regex", compile_anchored(self.value))

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Parse exactly one matcher in Alertmanager's syntax (see :func:`parse_matchers`).

        >>> Matcher.parse('severity="page"') == Matcher.parse("severity = page")
        True
        >>> Matcher.parse("severity")
        Traceback (most recent call last):
        ...
        ValueError: bad matcher format: severity
        """
        return parse_matcher(text)

    def matches_value(self, value: str) -> bool:
        """True if ``value`` (a label's value, ``""`` if absent) satisfies the matcher."""
        if self._regex is not None:
            hit = self._seen.get(value)
            if hit is None:
                if len(self._seen) >= _VERDICTS_KEPT:
                    self._seen.clear()
                hit = self._seen[value] = self._regex.fullmatch(value) is not None
            return hit == (self.op == "=~")
        return (value == self.value) == (self.op == "=")

    def matches(self, labels: Mapping[str, str]) -> bool:
        """True if the label set satisfies the matcher."""
        return self.matches_value(labels.get(self.name, ""))

    def __str__(self) -> str:
        name = self.name if _AM_NAME_RE.fullmatch(self.name) else _am_quote(self.name)
        return f"{name}{self.op}{_am_quote(self.value)}"


@dataclass(frozen=True, slots=True)
class Selector:
    """A PromQL series selector: an optional metric name and label matchers.

    Build one with :func:`parse_selector`. ``matchers`` never holds the metric name
    given before the braces (that is ``metric``), but may hold ``__name__`` matchers.

    >>> from aiops.types import SeriesKey
    >>> s = parse_selector('{__name__=~"cpu_.*", host!="db-1"}')
    >>> s.matches(SeriesKey.of("cpu_usage_ratio", {"host": "web-1"}))
    True
    >>> s.matches(SeriesKey.of("cpu_usage_ratio", {"host": "db-1"}))
    False
    >>> str(parse_selector("up"))
    'up'
    """

    metric: str | None
    matchers: tuple[Matcher, ...] = ()

    def matches(self, key: SeriesKey) -> bool:
        """True if the series ``key`` is selected."""
        if self.metric is not None and key.name != self.metric:
            return False
        if not self.matchers:
            return True
        labels = dict(key.labels)
        for m in self.matchers:
            value = key.name if m.name == METRIC_NAME_LABEL else labels.get(m.name, "")
            if not m.matches_value(value):
                return False
        return True

    def __str__(self) -> str:
        inner = ", ".join(str(m) for m in self.matchers)
        if self.metric is not None and not inner:
            return self.metric
        return f"{self.metric or ''}{{{inner}}}"


def parse_selector(text: str) -> Selector:
    """Parse a PromQL series selector such as ``name{label=~"re"}``.

    Raises :class:`ValueError` with the (1-based) column of the problem.

    >>> parse_selector('http_errors_ratio{service="api",}')
    Selector(metric='http_errors_ratio', matchers=(Matcher(name='service', op='=', value='api'),))
    >>> parse_selector('rate(x[5m])')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unexpected "(" at column 5; a selector is a metric name and {label matchers}; ...
    >>> parse_selector('{env=""}')
    Traceback (most recent call last):
    ...
    ValueError: a selector needs a metric name or a matcher that does not match the empty string
    """
    if not text.strip():
        raise ValueError("must not be empty")
    p = _Parser(text)
    p.skip_ws()
    metric: str | None = None
    if p.peek() != "{":
        metric = p.take(METRIC_NAME_RE, "a metric name or {")
        p.skip_ws()
    matchers: list[Matcher] = []
    if p.peek() == "{":
        p.pos += 1
        p.skip_ws()
        while p.peek() != "}":
            matchers.append(p.matcher())
            p.skip_ws()
            if p.peek() == ",":
                p.pos += 1
                p.skip_ws()
            elif p.peek() != "}":
                p.fail('"," or "}"')
        p.pos += 1
        p.skip_ws()
    if not p.at_end():
        raise ValueError(
            f"unexpected {_quote(p.text[p.pos])} at column {p.pos + 1}; a selector is a "
            "metric name and {label matchers}; use query: for PromQL expressions"
        )
    if metric is not None and any(m.name == METRIC_NAME_LABEL for m in matchers):
        raise ValueError(f'metric name "{metric}" is given twice (also as __name__)')
    if metric is None and all(m.matches_value("") for m in matchers):
        raise ValueError(
            "a selector needs a metric name or a matcher that does not match the empty string"
        )
    return Selector(metric, tuple(matchers))


def parse_matchers(text: str) -> list[Matcher]:
    r"""Parse one entry of a ``matchers:`` list in Alertmanager's syntax: zero or more matchers.

    The grammar is Alertmanager's (``pkg/labels``, the one its config files use):

    - optional braces: one leading ``{`` and one trailing ``}`` are removed;
    - matchers are separated by commas outside double quotes (a trailing comma is fine);
    - a matcher is ``name op value`` with ``op`` one of ``=``, ``!=``, ``=~``, ``!~``
      and spaces allowed around the operator;
    - the value is double-quoted or unquoted. In both, ``\"`` is a quote, ``\\`` a
      backslash and ``\n`` a newline; any other backslash is kept as written. An
      unquoted value may not contain an unescaped ``"``;
    - a name is ``[a-zA-Z_:][a-zA-Z0-9_:]*``, or any UTF-8 text in double quotes
      (``{"service.name"="api"}``, as Alertmanager 0.27+ takes it).

    >>> [str(m) for m in parse_matchers("foo=bar,dings!=bums")]
    ['foo="bar"', 'dings!="bums"']
    >>> parse_matchers("{}")
    []
    >>> parse_matchers('job=value"')
    Traceback (most recent call last):
    ...
    ValueError: matcher value contains unescaped double quote: value"
    """
    if text.startswith("{"):
        text = text[1:]
    if text.endswith("}"):
        text = text[:-1]
    tokens: list[str] = []
    token: list[str] = []
    in_quotes = escaped = False
    for c in text:
        if c == "," and not in_quotes:
            tokens.append("".join(token))
            token = []
            continue
        if c == '"':
            if escaped:
                escaped = False
            else:
                in_quotes = not in_quotes
        elif c == "\\":
            escaped = not escaped
        else:
            escaped = False
        token.append(c)
    last = "".join(token).strip(" \t\n\f\r")
    if last:
        tokens.append(last)
    return [_am_matcher(t) for t in tokens]


def parse_matcher(text: str) -> Matcher:
    """Parse exactly one Alertmanager matcher such as ``severity="page"`` or ``team=~db|infra``.

    >>> parse_matcher('alertname!~"Watchdog|InfoInhibitor"')
    Matcher(name='alertname', op='!~', value='Watchdog|InfoInhibitor')
    >>> parse_matcher("a=b,c=d")
    Traceback (most recent call last):
    ...
    ValueError: expected one matcher, got 2 in "a=b,c=d"
    """
    found = parse_matchers(text)
    if len(found) != 1:
        raise ValueError(f"expected one matcher, got {len(found)} in {_quote(text)}")
    return found[0]


def _am_matcher(token: str) -> Matcher:
    stripped = token.lstrip(" \t\n\f\r")
    if stripped.startswith('"'):
        end = _closing_quote(stripped)
        rest = _AM_REST_RE.match(stripped[end + 1 :]) if end > 0 else None
        if rest is None:
            raise ValueError(f"bad matcher format: {token}")
        name, op, raw = _am_unescape(stripped[1:end]), rest["op"], rest["value"]
    else:
        m = _AM_MATCHER_RE.match(token)
        if m is None:
            raise ValueError(f"bad matcher format: {token}")
        name, op, raw = m["name"], m["op"], m["value"]
    quoted = raw.startswith('"')
    body = raw[1:] if quoted else raw
    out: list[str] = []
    escaped = False
    for i, c in enumerate(body):
        if escaped:
            escaped = False
            out.append(c if c in ('"', "\\") else "\n" if c == "n" else "\\" + c)
        elif c == "\\":
            if i < len(body) - 1:
                escaped = True
            else:
                out.append(c)  # a backslash at the very end stands for itself
        elif c == '"':
            if not quoted or i < len(body) - 1:
                raise ValueError(f"matcher value contains unescaped double quote: {raw}")
            quoted = False
        else:
            out.append(c)
    if quoted:
        raise ValueError(f"matcher value contains unescaped double quote: {raw}")
    op_: MatchOp = op  # type: ignore[assignment]  # the pattern only admits the four
    return Matcher(name, op_, "".join(out))


def _closing_quote(text: str) -> int:
    """Index of the unescaped ``"`` closing the one at ``text[0]``, or -1."""
    escaped = False
    for i in range(1, len(text)):
        c = text[i]
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            return i
    return -1


def _am_unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append(nxt if nxt in ('"', "\\") else "\n" if nxt == "n" else c + nxt)
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _am_quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class _Parser:
    """A cursor over the text with the few token readers both grammars need."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def skip_ws(self) -> None:
        while self.peek() in (" ", "\t", "\n", "\r") and not self.at_end():
            self.pos += 1

    def fail(self, expected: str) -> None:
        found = "the end" if self.at_end() else _quote(self.text[self.pos])
        raise ValueError(f"expected {expected} but found {found} at column {self.pos + 1}")

    def take(self, pattern: re.Pattern[str], what: str) -> str:
        m = pattern.match(self.text, self.pos)
        if m is None:
            self.fail(what)
            raise AssertionError  # pragma: no cover - fail() raises
        self.pos = m.end()
        return m.group()

    def matcher(self) -> Matcher:
        start = self.pos
        name = self.take(LABEL_NAME_RE, "a label name")
        self.skip_ws()
        op = next((o for o in _OPS if self.text.startswith(o, self.pos)), None)
        if op is None:
            raise ValueError(
                f"expected an operator (=, !=, =~, !~) after {_quote(name)} "
                f"at column {self.pos + 1}"
            )
        self.pos += len(op)
        self.skip_ws()
        if self.peek() not in ('"', "'", "`"):
            self.fail("a quoted string")
        value = self.string()
        try:
            return Matcher(name, op, value)
        except ValueError as exc:
            raise ValueError(f"{exc} (matcher at column {start + 1})") from None

    def string(self) -> str:
        quote = self.text[self.pos]
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while True:
            if self.at_end():
                raise ValueError(f"unterminated string starting at column {start + 1}")
            c = self.text[self.pos]
            if c == quote:
                self.pos += 1
                return "".join(out)
            if c == "\\" and quote != "`":
                out.append(self._escape())
                continue
            if c == "\n" and quote != "`":
                raise ValueError(f"newline in string starting at column {start + 1}")
            out.append(c)
            self.pos += 1

    def _escape(self) -> str:
        at = self.pos
        self.pos += 1
        c = self.peek()
        if c in _ESCAPES:
            self.pos += 1
            return _ESCAPES[c]
        digits = {"x": 2, "u": 4, "U": 8}.get(c)
        if digits is not None:
            hexa = self.text[self.pos + 1 : self.pos + 1 + digits]
            if len(hexa) == digits and all(h in "0123456789abcdefABCDEF" for h in hexa):
                self.pos += 1 + digits
                return chr(int(hexa, 16))
        elif c in "01234567":
            octal = self.text[self.pos : self.pos + 3]
            if len(octal) == 3 and all(o in "01234567" for o in octal):
                self.pos += 3
                return chr(int(octal, 8))
        raise ValueError(f"invalid escape sequence at column {at + 1}")


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
