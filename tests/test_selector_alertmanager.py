"""Alertmanager's matcher grammar: its own parsing cases, re-expressed, and RE2 regexes.

``CASES`` holds the inputs and outcomes of Alertmanager's matcher-parsing table
(``pkg/labels``, the parser its configuration files use); each is checked against our
parser and, in one run, against the real ``amtool check-config`` of the Debian
Alertmanager, so the table itself is confirmed by the reference implementation.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from aiops.alerting.selector import Matcher, compile_anchored, parse_matcher, parse_matchers
from tests.servers import require_binary

Want = list[tuple[str, str, str]] | str  # the matchers, or the error message

CASES: list[tuple[str, Want]] = [
    ("{}", []),
    (",", "bad matcher format: "),
    ("{,}", "bad matcher format: "),
    ("{foo='}", [("foo", "=", "'")]),
    ("{foo=`}", [("foo", "=", "`")]),
    ('{foo=\\"}', [("foo", "=", '"')]),
    ("{foo=bar}", [("foo", "=", "bar")]),
    ('{foo="bar"}', [("foo", "=", "bar")]),
    ("{foo=~bar.*}", [("foo", "=~", "bar.*")]),
    ('{foo=~"bar.*"}', [("foo", "=~", "bar.*")]),
    ("{foo!=bar}", [("foo", "!=", "bar")]),
    ('{foo!="bar"}', [("foo", "!=", "bar")]),
    ("{foo!~bar.*}", [("foo", "!~", "bar.*")]),
    ('{foo!~"bar.*"}', [("foo", "!~", "bar.*")]),
    ('{foo="bar", baz!="quux"}', [("foo", "=", "bar"), ("baz", "!=", "quux")]),
    ('{foo="bar", baz!~"quux.*"}', [("foo", "=", "bar"), ("baz", "!~", "quux.*")]),
    (
        '{foo="bar",baz!~".*quux", derp="wat"}',
        [("foo", "=", "bar"), ("baz", "!~", ".*quux"), ("derp", "=", "wat")],
    ),
    (
        '{foo="bar", baz!="quux", derp="wat"}',
        [("foo", "=", "bar"), ("baz", "!=", "quux"), ("derp", "=", "wat")],
    ),
    (
        '{foo="bar", baz!~".*quux.*", derp="wat"}',
        [("foo", "=", "bar"), ("baz", "!~", ".*quux.*"), ("derp", "=", "wat")],
    ),
    (
        '{foo="bar", instance=~"some-api.*"}',
        [("foo", "=", "bar"), ("instance", "=~", "some-api.*")],
    ),
    ('{foo=""}', [("foo", "=", "")]),
    ('{foo="bar,quux", job="job1"}', [("foo", "=", "bar,quux"), ("job", "=", "job1")]),
    ('{foo = "bar", dings != "bums", }', [("foo", "=", "bar"), ("dings", "!=", "bums")]),
    ("foo=bar,dings!=bums", [("foo", "=", "bar"), ("dings", "!=", "bums")]),
    (
        '{quote="She said: \\"Hi, ladies! That\'s gender-neutral…\\""}',
        [("quote", "=", 'She said: "Hi, ladies! That\'s gender-neutral…"')],
    ),
    ('statuscode=~"5.."', [("statuscode", "=~", "5..")]),
    ("tricky=~~~", [("tricky", "=~", "~~")]),
    ('trickier==\\\\=\\=\\"', [("trickier", "=", '=\\=\\="')]),
    (
        'contains_quote != "\\"" , contains_comma !~ "foo,bar" , ',
        [("contains_quote", "!=", '"'), ("contains_comma", "!~", "foo,bar")],
    ),
    ("{foo=bar}}", [("foo", "=", "bar}")]),
    ("{foo=bar}},}", [("foo", "=", "bar}}")]),
    ("{foo=,bar=}}", [("foo", "=", ""), ("bar", "=", "}")]),
    ("{foo=bar\\t}", [("foo", "=", "bar\\t")]),
    ("{foo=bar\\n}", [("foo", "=", "bar\n")]),
    ("{foo=bar\\}", [("foo", "=", "bar\\")]),
    ("{foo=bar\\\\}", [("foo", "=", "bar\\")]),
    ('{foo=bar\\"}', [("foo", "=", 'bar"')]),
    ("job=", [("job", "=", "")]),
    ('job="value', 'matcher value contains unescaped double quote: "value'),
    ('job=value"', 'matcher value contains unescaped double quote: value"'),
    ('trickier==\\\\=\\=\\""', 'matcher value contains unescaped double quote: =\\\\=\\=\\""'),
    (
        'contains_unescaped_quote = foo"bar',
        'matcher value contains unescaped double quote: foo"bar',
    ),
    ('{invalid-name = "valid label"}', 'bad matcher format: invalid-name = "valid label"'),
    ('{foo=~"invalid[regexp"}', "[regexp)$"),  # RE2 and Go word it apart; both quote this
    # Double-escaped strings (a matcher quoted twice in YAML) are rejected.
    ('"{foo=\\"bar"}', 'bad matcher format: "{foo=\\"bar"'),
    ('"foo=\\"bar"', 'bad matcher format: "foo=\\"bar"'),
    ('"foo=\\"bar\\""', 'bad matcher format: "foo=\\"bar\\""'),
    ('"foo=\\"bar\\"', 'bad matcher format: "foo=\\"bar\\"'),
    ('"{foo=\\"bar\\"}"', 'bad matcher format: "{foo=\\"bar\\"}"'),
    ('"foo="bar""', 'bad matcher format: "foo="bar""'),
    ("{{foo=", "bad matcher format: {foo="),
    ("{foo=", [("foo", "=", "")]),
    ("{foo=}b", [("foo", "=", "}b")]),
]


def outcome(text: str) -> Want:
    try:
        return [(m.name, m.op, m.value) for m in parse_matchers(text)]
    except ValueError as exc:
        return str(exc)


def agrees(text: str, want: Want) -> bool:
    got = outcome(text)
    if isinstance(want, str):
        return isinstance(got, str) and want in got
    return got == want


def test_the_table_has_alertmanagers_53_cases() -> None:
    assert len(CASES) == 53
    assert len({text for text, _ in CASES}) == 53


@pytest.mark.parametrize(("text", "want"), CASES, ids=[t for t, _ in CASES])
def test_alertmanager_matcher_case(text: str, want: Want) -> None:
    got = outcome(text)
    if isinstance(want, str):
        assert isinstance(got, str), f"accepted as {got}; Alertmanager rejects it"
        assert want in got
    else:
        assert got == want


def test_every_case_agrees_with_the_real_alertmanager(tmp_path: Path) -> None:
    """One ``amtool check-config`` over one file per case: accepted or the same error."""
    amtool = require_binary("amtool")
    files = []
    for i, (text, _) in enumerate(CASES):
        config = {
            "route": {"receiver": "r", "routes": [{"receiver": "r", "matchers": [text]}]},
            "receivers": [{"name": "r"}],
        }
        f = tmp_path / f"case{i:02d}.yml"
        f.write_text(json.dumps(config))  # JSON is YAML: no quoting to get wrong
        files.append(f)
    run = subprocess.run(
        [amtool, "check-config", *map(str, files)], capture_output=True, text=True, timeout=60
    )
    report = run.stdout + run.stderr
    verdicts = {}
    for line in report.splitlines():
        if line.startswith("Checking '"):
            name = Path(line.split("'")[1]).name
            verdicts[name] = line.split("  ", 1)[1].strip() if "  " in line else line
    assert len(verdicts) == 53, report
    for f, (text, want) in zip(files, CASES, strict=True):
        verdict = verdicts[f.name]
        if isinstance(want, str):
            assert verdict.startswith("FAILED: "), (text, verdict)
            assert want.strip() in verdict, (text, verdict)
        else:
            assert verdict == "SUCCESS", (text, verdict)
        assert agrees(text, want), (text, outcome(text))


def test_utf8_label_names_are_double_quoted() -> None:
    (m,) = parse_matchers('{"service.name"=~"api|web"}')
    assert (m.name, m.op, m.value) == ("service.name", "=~", "api|web")
    assert m.matches({"service.name": "web"})
    assert str(m) == '"service.name"=~"api|web"'
    (m2,) = parse_matchers('"région"="Île-de-France"')
    assert (m2.name, m2.value) == ("région", "Île-de-France")
    with pytest.raises(ValueError, match="bad matcher format"):
        parse_matchers('"unterminated=x')


@pytest.mark.parametrize(
    "m",
    [
        Matcher("a", "=", 'quote " backslash \\ newline \n comma , brace }'),
        Matcher("a", "!~", "x|y,z"),
        Matcher("with space", "=", "v"),
        Matcher("a", "=", ""),
        Matcher("a", "=", " padded "),
    ],
)
def test_str_round_trips(m: Matcher) -> None:
    assert parse_matcher(str(m)) == m
    assert parse_matchers("{" + str(m) + ", b=c}") == [m, Matcher("b", "=", "c")]


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("(?i)disk.*", "DiskFull", True),  # a flag group: Python's re rejects it mid-pattern
        ("[[:alpha:]]+", "abc", True),  # POSIX classes
        ("[[:alpha:]]+", "ab1", False),
        ("a.b", "a\nb", False),  # `.` does not match a newline
        ("a.b", "axb", True),
        ("api", "api-2", False),  # anchored
        ("api|web", "web", True),  # the alternation is anchored as a whole
        ("\\d+", "123", True),  # Perl classes
        ("é.", "éa", True),  # UTF-8
        ("", "", True),
        (".*", "", True),
    ],
)
def test_regexes_run_on_re2_fully_anchored(pattern: str, value: str, matches: bool) -> None:
    assert bool(compile_anchored(pattern).fullmatch(value)) is matches
    assert Matcher("l", "=~", pattern).matches({"l": value}) is matches
    assert Matcher("l", "!~", pattern).matches({"l": value}) is not matches


@pytest.mark.parametrize("pattern", ["(a", "[x", "a**", "a{2,1}", "\\"])
def test_bad_regexes_fail_at_construction(pattern: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid regex "):
        Matcher("l", "=~", pattern)


def test_re2_rejects_what_python_re_alone_would_accept() -> None:
    # Backreferences and look-arounds are not RE2 (nor Alertmanager): an error at load.
    for pattern in ("(a)\\1", "a(?=b)"):
        with pytest.raises(ValueError, match="invalid regex"):
            compile_anchored(pattern)
