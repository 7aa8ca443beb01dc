"""Series selectors (PromQL syntax) and label matchers (Alertmanager syntax)."""

from __future__ import annotations

import re

import pytest

from aiops.alerting.selector import (
    Matcher,
    Selector,
    compile_anchored,
    parse_matcher,
    parse_selector,
)
from aiops.types import SeriesKey

CPU_WEB = SeriesKey.of("cpu_usage_ratio", {"host": "web-1", "service": "web"})
CPU_DB = SeriesKey.of("cpu_usage_ratio", {"host": "db-1", "service": "db"})
LAT_API = SeriesKey.of("http_request_duration_seconds", {"host": "api-1", "service": "api"})


@pytest.mark.parametrize(
    ("text", "selected"),
    [
        ("cpu_usage_ratio", [CPU_WEB, CPU_DB]),
        ('cpu_usage_ratio{service="web"}', [CPU_WEB]),
        ('cpu_usage_ratio{service!="web"}', [CPU_DB]),
        ('cpu_usage_ratio{host=~"web-.*"}', [CPU_WEB]),
        ('cpu_usage_ratio{host=~"web"}', []),  # anchored: no partial match
        ('cpu_usage_ratio{host!~"db-.*|api-.*"}', [CPU_WEB]),
        ('{service=~"api|web"}', [CPU_WEB, LAT_API]),
        ('{__name__=~"cpu_.*"}', [CPU_WEB, CPU_DB]),
        ('{__name__="http_request_duration_seconds"}', [LAT_API]),
        ('{__name__!="cpu_usage_ratio", service!=""}', [LAT_API]),
        ('cpu_usage_ratio{env=""}', [CPU_WEB, CPU_DB]),  # absent label == ""
        ('cpu_usage_ratio{env!=""}', []),
        ("cpu_usage_ratio{host='db-1'}", [CPU_DB]),
        ("cpu_usage_ratio{host=`db-1`}", [CPU_DB]),
        ('  cpu_usage_ratio { host = "db-1" , service = "db" , }  ', [CPU_DB]),
        ("cpu_usage_ratio{}", [CPU_WEB, CPU_DB]),
        ("up", []),
    ],
)
def test_selector_matches(text: str, selected: list[SeriesKey]) -> None:
    sel = parse_selector(text)
    assert [k for k in (CPU_WEB, CPU_DB, LAT_API) if sel.matches(k)] == selected


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("up", "up"),
        ("up{}", "up"),
        ('up{ job = "a" }', 'up{job="a"}'),
        ("{a=~'x|y', b!~\"z\"}", '{a=~"x|y", b!~"z"}'),
        (
            'm{a="quote \\" backslash \\\\ newline \\n"}',
            'm{a="quote \\" backslash \\\\ newline \\n"}',
        ),
        ("ns:metric:rate5m", "ns:metric:rate5m"),
    ],
)
def test_selector_str_is_canonical_and_round_trips(text: str, canonical: str) -> None:
    sel = parse_selector(text)
    assert str(sel) == canonical
    assert parse_selector(str(sel)) == sel


def test_selector_string_escapes() -> None:
    sel = parse_selector(r'm{a="\x41\u00e9\101\t", b=`raw\n`}')
    assert [m.value for m in sel.matchers] == ["A\u00e9A\t", "raw\\n"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must not be empty"),
        ("cpu{", "expected a label name but found the end at column 5"),
        ('cpu{host="a"', 'expected "," or "}" but found the end at column 13'),
        ('cpu{host="a" service="b"}', 'expected "," or "}" but found "s" at column 14'),
        ("cpu{host=a}", 'expected a quoted string but found "a" at column 10'),
        ('cpu{host~"a"}', 'expected an operator (=, !=, =~, !~) after "host" at column 9'),
        ('cpu{host="a}', "unterminated string starting at column 10"),
        ('cpu{host="a\nb"}', "newline in string starting at column 10"),
        ('cpu{host="\\q"}', "invalid escape sequence at column 11"),
        ("rate(cpu[5m])", 'unexpected "(" at column 5'),
        ("cpu[5m]", 'unexpected "[" at column 4'),
        ('cpu{host="a"} > 0', 'unexpected ">" at column 15'),
        ('{env=""}', "a selector needs a metric name or a matcher that does not match"),
        ('{env=~".*"}', "a selector needs a metric name"),
        ('cpu{__name__="mem"}', 'metric name "cpu" is given twice'),
        (
            'cpu{host=~"("}',
            'invalid regex "(": missing ): ^(?:()$ (matcher at column 5)',
        ),
        ('cpu{1host="a"}', 'expected a label name but found "1" at column 5'),
        ("9cpu", 'expected a metric name or { but found "9" at column 1'),
    ],
)
def test_selector_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        parse_selector(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('severity="page"', Matcher("severity", "=", "page")),
        ("severity=page", Matcher("severity", "=", "page")),
        ("  severity  =  page  ", Matcher("severity", "=", "page")),
        ("team=~db|infra", Matcher("team", "=~", "db|infra")),
        ('team!~"db|infra"', Matcher("team", "!~", "db|infra")),
        ("host!=", Matcher("host", "!=", "")),
        ('msg="a \\"quoted\\" word"', Matcher("msg", "=", 'a "quoted" word')),
        ("path=/var/log/x y", Matcher("path", "=", "/var/log/x y")),
    ],
)
def test_parse_matcher(text: str, expected: Matcher) -> None:
    assert parse_matcher(text) == expected
    assert Matcher.parse(text) == expected
    assert parse_matcher(str(expected)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("severity", "bad matcher format: severity"),
        ("=page", "bad matcher format: =page"),
        ('a="b" c', 'matcher value contains unescaped double quote: "b" c'),
        ('a="b', 'matcher value contains unescaped double quote: "b'),
        ("a=~(b", 'invalid regex "(b": missing ): ^(?:(b)$'),
        ("a=b,c=d", 'expected one matcher, got 2 in "a=b,c=d"'),
        ("", 'expected one matcher, got 0 in ""'),
    ],
)
def test_parse_matcher_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        parse_matcher(text)


def test_matcher_semantics() -> None:
    labels = {"severity": "page", "team": "db"}
    assert Matcher("severity", "=", "page").matches(labels)
    assert not Matcher("severity", "!=", "page").matches(labels)
    assert Matcher("team", "=~", "db|infra").matches(labels)
    assert not Matcher("team", "=~", "d").matches(labels)  # anchored
    assert Matcher("team", "!~", "infra").matches(labels)
    assert Matcher("missing", "=", "").matches(labels)
    assert Matcher("missing", "!~", ".+").matches(labels)
    assert not Matcher("team", "=~", "a.b").matches({"team": "a\nb"})  # RE2: . is not \n


def test_matcher_validates_on_construction() -> None:
    with pytest.raises(ValueError, match="a label name must not be empty"):
        Matcher("", "=", "x")
    assert str(Matcher("bad-name", "=", "x")) == '"bad-name"="x"'  # any UTF-8, quoted
    with pytest.raises(ValueError, match="invalid match operator"):
        Matcher("a", "==", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid regex"):
        Matcher("a", "=~", "[")


def test_matchers_and_selectors_are_immutable_and_hashable() -> None:
    m = Matcher("a", "=~", "x")
    with pytest.raises(AttributeError):
        m.value = "y"  # type: ignore[misc]
    assert len({m, Matcher("a", "=~", "x"), Matcher("a", "=", "x")}) == 2
    sel = parse_selector('up{a=~"x"}')
    assert hash(sel) == hash(parse_selector('up{ a =~ "x" }'))
    assert isinstance(sel, Selector)
    assert sel.metric == "up"


def test_regexes_are_compiled_once() -> None:
    compile_anchored.cache_clear()
    for _ in range(3):
        parse_selector('cpu{host=~"web-[0-9]+"}')
        parse_matcher("host=~web-[0-9]+")
    info = compile_anchored.cache_info()
    assert (info.misses, info.hits) == (1, 5)
