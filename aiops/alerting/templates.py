"""Alert annotation templates: the small part of Go templates that Prometheus rules use.

A template is text with actions in double braces. An action is a pipeline of one
operand or function call, optionally piped (``|``) into more function calls, where the
piped value becomes the last argument::

    {{ $labels.host }}                     a label of the alert's series ("" if absent)
    {{ $value }}  {{ $score }}             the point's value and its anomaly score
    {{ $series }}  {{ $externalURL }}      the series text, the daemon's external URL
    {{ $value | humanize }}                1234 -> 1.234k, 0.0025 -> 2.5m
    {{ $value | humanizePercentage }}      0.123 -> 12.3%
    {{ printf "%.2f" $value }}             Go printf verbs: %v %s %d %f %e %g %x %q %%
    {{ $labels.service | toUpper }}        toUpper, toLower
    {{ $series | urlquery }}               escaped for a URL query (Go's urlquery)
    {{- ... -}}  {{/* comment */}}         whitespace trimming and comments, as in Go

:class:`Template` parses eagerly, so a rule file with a broken template fails to load
instead of producing broken alerts; rendering never raises.

>>> t = Template("p99 latency on {{ $labels.host }} is {{ $value | humanize }}s")
>>> t.render({"labels": {"host": "web-1"}, "value": 0.0123})
'p99 latency on web-1 is 12.3ms'
"""

from __future__ import annotations

import difflib
import json
import math
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = ["VARIABLES", "FUNCTIONS", "Template", "go_format_float", "humanize"]

VARIABLES = ("$labels", "$value", "$score", "$series", "$externalURL")
"""The variables a template may use; ``$labels`` only as ``$labels.NAME``."""

#: Go's strconv switches a shortest-form %g/%v float to exponent notation from 1e+06 on
#: ("if shortest { eprec = 6 }" in strconv/ftoa.go).
_SHORTEST_EPREC = 6
_SI_BIG = ("", "k", "M", "G", "T", "P", "E", "Z", "Y")
_SI_SMALL = ("", "m", "u", "n", "p", "f", "a", "z", "y")


def go_format_float(x: float) -> str:
    """Format a float the way Go's ``%v`` does (shortest form; exponent when large).

    >>> [go_format_float(v) for v in (0.5, 3.0, 123456.0, 1e6, 1.5e-5, math.nan, -math.inf)]
    ['0.5', '3', '123456', '1e+06', '1.5e-05', 'NaN', '-Inf']
    """
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    sign, digits, exp = Decimal(repr(x)).normalize().as_tuple()
    assert isinstance(exp, int)
    ds = "".join(map(str, digits))
    point = len(ds) + exp  # decimal point position relative to the digits
    e10 = point - 1
    neg = "-" if sign else ""
    if e10 < -4 or e10 >= _SHORTEST_EPREC:
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{neg}{mant}e{'-' if e10 < 0 else '+'}{abs(e10):02d}"
    if point <= 0:
        return f"{neg}0.{'0' * -point}{ds}"
    if point >= len(ds):
        return f"{neg}{ds}{'0' * (point - len(ds))}"
    return f"{neg}{ds[:point]}.{ds[point:]}"


def humanize(x: float) -> str:
    """Scale with SI prefixes and 4 significant digits, like Prometheus' ``humanize``.

    >>> humanize(1234.0), humanize(3_400_000.0), humanize(0.0025), humanize(0.0), humanize(12.0)
    ('1.234k', '3.4M', '2.5m', '0', '12')
    """
    if x == 0 or math.isnan(x) or math.isinf(x):
        return _go_g(x, 4)
    prefixes = _SI_BIG if abs(x) >= 1 else _SI_SMALL
    i = 0
    if abs(x) >= 1:
        while abs(x) >= 1000 and i < len(prefixes) - 1:
            x /= 1000
            i += 1
    else:
        while abs(x) < 1 and i < len(prefixes) - 1:
            x *= 1000
            i += 1
    return _go_g(x, 4) + prefixes[i]


def _go_g(x: float, precision: int) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return f"{x:.{precision}g}"


def _to_float(x: Any) -> float:
    if isinstance(x, bool):
        raise ValueError(f"cannot convert {x!r} to a number")
    if isinstance(x, int | float):
        return float(x)
    try:
        return float(str(x))
    except ValueError:
        raise ValueError(f"cannot convert {_show(x)} to a number") from None


def _to_str(x: Any) -> str:
    if isinstance(x, float):
        return go_format_float(x)
    if isinstance(x, bool):
        return "true" if x else "false"
    return str(x)


def _show(x: Any) -> str:
    return json.dumps(x) if isinstance(x, str) else _to_str(x)


_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d+))?(.)", re.DOTALL)
_VERBS = set("vsdfFeEgGxXqt")


def _printf_verbs(fmt: str) -> list[str]:
    verbs = []
    for m in _VERB.finditer(fmt):
        verb = m.group(4)
        if verb == "%":
            continue
        if verb not in _VERBS:
            raise ValueError(f'printf: unsupported verb "%{verb}"')
        verbs.append(verb)
    return verbs


def _printf(fmt: str, *args: Any) -> str:
    out: list[str] = []
    pos = 0
    it = iter(args)
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width, prec, verb = m.group(1), m.group(2) or "", m.group(3), m.group(4)
        if verb == "%":
            out.append("%")
            continue
        arg = next(it)
        spec = flags + width + (f".{prec}" if prec is not None else "")
        if verb in "vst":
            text = _to_str(arg)
            if prec is not None:
                text = text[: int(prec)]
            out.append(("%" + flags + width + "s") % text)
        elif verb == "q":
            out.append(("%" + flags + width + "s") % json.dumps(_to_str(arg)))
        elif verb in "dxX":
            out.append(("%" + spec + verb) % int(_to_float(arg)))
        else:
            out.append(("%" + spec + verb) % _to_float(arg))
    out.append(fmt[pos:])
    return "".join(out)


@dataclass(frozen=True, slots=True)
class _Function:
    call: Callable[..., str]
    min_args: int
    max_args: int | None


FUNCTIONS: Mapping[str, _Function] = {
    "humanize": _Function(lambda x: humanize(_to_float(x)), 1, 1),
    "humanizePercentage": _Function(lambda x: _go_g(_to_float(x) * 100, 4) + "%", 1, 1),
    "printf": _Function(_printf, 1, None),
    "toUpper": _Function(lambda s: _to_str(s).upper(), 1, 1),
    "toLower": _Function(lambda s: _to_str(s).lower(), 1, 1),
    "urlquery": _Function(lambda s: urllib.parse.quote_plus(_to_str(s)), 1, 1),
}
"""The functions a template may call, by name."""


@dataclass(frozen=True, slots=True)
class _Var:
    name: str  # without the "$"
    label: str | None = None


@dataclass(frozen=True, slots=True)
class _Const:
    value: str | float


_Operand = _Var | _Const


@dataclass(frozen=True, slots=True)
class _Call:
    name: str
    args: tuple[_Operand, ...]


_Command = _Call | _Operand
_Node = str | tuple[_Command, ...]  # literal text, or an action's pipeline

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<var>\$[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)
  | (?P<dot>\.[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|`[^`]*`)
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<pipe>\|)
    """,
    re.VERBOSE,
)


class Template:
    """A parsed annotation template; see the module docstring for the language.

    Parsing raises :class:`ValueError` naming the column of the problem (and the line,
    for multi-line templates). :meth:`render` takes a mapping with the keys ``labels``
    (a mapping), ``value``, ``score`` (floats), ``series`` and ``externalURL``
    (strings); missing keys render as empty strings (``value`` and ``score`` as
    ``NaN``).

    >>> Template('{{ printf "%.1f%%" $score }} on {{ $labels.host | toUpper }}').render(
    ...     {"labels": {"host": "db-1"}, "score": 99.25})
    '99.2% on DB-1'
    >>> Template("{{ $lables.host }}")
    Traceback (most recent call last):
    ...
    ValueError: unknown variable "$lables" at column 4; did you mean "$labels"?
    >>> Template("{{ $value | humanise }}")
    Traceback (most recent call last):
    ...
    ValueError: unknown function "humanise" at column 13; did you mean "humanize"?
    >>> Template("{{ $value ")
    Traceback (most recent call last):
    ...
    ValueError: unclosed action "{{" at column 1
    """

    __slots__ = ("_nodes", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._nodes: tuple[_Node, ...] = tuple(_parse(text))

    @property
    def label_names(self) -> frozenset[str]:
        """The label names the template reads through ``$labels.NAME``."""
        names: set[str] = set()
        for node in self._nodes:
            if isinstance(node, str):
                continue
            for cmd in node:
                operands = cmd.args if isinstance(cmd, _Call) else (cmd,)
                names.update(o.label for o in operands if isinstance(o, _Var) and o.label)
        return frozenset(names)

    def render(self, context: Mapping[str, Any]) -> str:
        """Expand the template; an error while expanding becomes the result text.

        As in Prometheus, a failure (say, ``humanize`` of a label that is not a number)
        yields ``<error expanding template: ...>`` rather than an exception, so one bad
        annotation never stops an alert.
        """
        out: list[str] = []
        try:
            for node in self._nodes:
                out.append(node if isinstance(node, str) else _to_str(_run(node, context)))
        except (ValueError, TypeError, OverflowError) as exc:
            return f"<error expanding template: {exc}>"
        return "".join(out)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Template) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Template({self.text!r})"

    def __str__(self) -> str:
        return self.text


def _run(pipeline: Sequence[_Command], context: Mapping[str, Any]) -> Any:
    value: Any = None
    for i, cmd in enumerate(pipeline):
        if isinstance(cmd, _Call):
            args = [_operand(a, context) for a in cmd.args]
            if i > 0:
                args.append(value)
            value = FUNCTIONS[cmd.name].call(*args)
        else:
            value = _operand(cmd, context)
    return value


def _operand(op: _Operand, context: Mapping[str, Any]) -> Any:
    if isinstance(op, _Const):
        return op.value
    if op.label is not None:
        labels = context.get("labels") or {}
        return labels.get(op.label, "")
    if op.name in ("value", "score"):
        v = context.get(op.name, math.nan)
        return math.nan if v is None else v
    return context.get(op.name, "")


def _parse(text: str) -> list[_Node]:
    nodes: list[_Node] = []
    pos = 0
    trim_next = False
    while True:
        start = text.find("{{", pos)
        literal = text[pos:] if start < 0 else text[pos:start]
        if trim_next:
            literal = literal.lstrip()
        if start < 0:
            if literal:
                nodes.append(literal)
            return nodes
        inner_start = start + 2
        if text.startswith("-", inner_start) and text[inner_start + 1 : inner_start + 2].isspace():
            literal = literal.rstrip()
            inner_start += 1
        if literal:
            nodes.append(literal)
        end = _find_close(text, inner_start)
        if end < 0:
            raise ValueError(f'unclosed action "{{{{" {_where(text, start)}')
        inner_end = end
        trim_next = False
        if text[inner_end - 1 : inner_end] == "-" and text[inner_end - 2 : inner_end - 1].isspace():
            inner_end -= 1
            trim_next = True
        pos = end + 2
        body = text[inner_start:inner_end]
        if body.strip().startswith("/*"):
            if not body.strip().endswith("*/"):
                raise ValueError(f"unclosed comment {_where(text, start)}")
            continue
        nodes.append(_parse_action(text, inner_start, inner_end))


def _find_close(text: str, pos: int) -> int:
    """The index of the ``}}`` closing the action at ``pos``, skipping strings."""
    i = pos
    while i < len(text):
        c = text[i]
        if c in ('"', "`"):
            j = i + 1
            while j < len(text) and text[j] != c:
                j += 2 if c == '"' and text[j] == "\\" else 1
            i = j + 1
            continue
        if text.startswith("}}", i):
            return i
        i += 1
    return -1


def _parse_action(text: str, start: int, end: int) -> tuple[_Command, ...]:
    tokens: list[tuple[str, str, int]] = []
    pos = start
    while pos < end:
        m = _TOKEN.match(text, pos, end)
        if m is None:
            raise ValueError(f"unexpected {json.dumps(text[pos])} {_where(text, pos)}")
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append((kind, m.group(), pos))
        pos = m.end()
    if not tokens:
        raise ValueError(f"empty action {_where(text, start - 2)}")
    commands: list[_Command] = []
    segment: list[tuple[str, str, int]] = []
    for tok in [*tokens, ("pipe", "|", end)]:
        if tok[0] != "pipe":
            segment.append(tok)
            continue
        if not segment:
            raise ValueError(f'missing command before or after "|" {_where(text, tok[2])}')
        commands.append(_parse_command(text, segment, piped=bool(commands)))
        segment = []
    return tuple(commands)


def _parse_command(text: str, tokens: list[tuple[str, str, int]], *, piped: bool) -> _Command:
    kind, value, pos = tokens[0]
    if kind != "ident":
        if piped:
            raise ValueError(f'expected a function name after "|" {_where(text, pos)}')
        if len(tokens) > 1:
            raise ValueError(
                f"unexpected {json.dumps(tokens[1][1])} {_where(text, tokens[1][2])}; "
                "only a function takes arguments"
            )
        return _parse_operand(text, tokens[0])
    fn = FUNCTIONS.get(value)
    if fn is None:
        raise ValueError(
            f"unknown function {json.dumps(value)} {_where(text, pos)}" + _hint(value, FUNCTIONS)
        )
    args = tuple(_parse_operand(text, t) for t in tokens[1:])
    n = len(args) + (1 if piped else 0)
    if n < fn.min_args or (fn.max_args is not None and n > fn.max_args):
        want = str(fn.min_args) if fn.max_args == fn.min_args else f"at least {fn.min_args}"
        raise ValueError(f'"{value}" takes {want} argument(s), got {n} {_where(text, pos)}')
    if value == "printf":
        if not isinstance(args[0], _Const) or not isinstance(args[0].value, str):
            raise ValueError(f"printf needs a format string first {_where(text, pos)}")
        try:
            verbs = _printf_verbs(args[0].value)
        except ValueError as exc:
            raise ValueError(f"{exc} {_where(text, tokens[1][2])}") from None
        if len(verbs) != n - 1:
            raise ValueError(
                f"printf format has {len(verbs)} verb(s) but {n - 1} value(s) "
                f"{_where(text, tokens[1][2])}"
            )
    return _Call(value, args)


def _parse_operand(text: str, token: tuple[str, str, int]) -> _Operand:
    kind, value, pos = token
    if kind == "string":
        if value[0] == "`":
            return _Const(value[1:-1])
        try:
            return _Const(json.loads(value))
        except ValueError:
            raise ValueError(f"invalid escape in string {_where(text, pos)}") from None
    if kind == "number":
        return _Const(float(value))
    if kind == "var":
        name, _, label = value.partition(".")
        if name not in VARIABLES:
            raise ValueError(
                f"unknown variable {json.dumps(name)} {_where(text, pos)}" + _hint(name, VARIABLES)
            )
        if name == "$labels":
            if not label:
                raise ValueError(f"use $labels.NAME to read a label {_where(text, pos)}")
            return _Var("labels", label)
        if label:
            raise ValueError(f"{name} has no fields {_where(text, pos)}")
        return _Var(name[1:])
    if kind == "dot":
        raise ValueError(
            f"unsupported field {json.dumps(value)} {_where(text, pos)}; "
            "use $labels.NAME, $value, $score, $series or $externalURL"
        )
    raise ValueError(f"unexpected {json.dumps(value)} {_where(text, pos)}")


def _where(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos)
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"at line {line + 1}, column {col}" if "\n" in text else f"at column {col}"


def _hint(name: str, choices: Sequence[str] | Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"; did you mean {json.dumps(close[0])}?" if close else ""
