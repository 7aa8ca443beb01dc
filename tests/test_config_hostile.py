"""Hostile configuration files: refused with one located line, before they cost anything."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from aiops.config import run_check
from aiops.config.yamlpos import load_yaml


def _never_composed(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: YAML, stream: str) -> None:
        raise AssertionError("the composer ran on a document the pre-check should refuse")

    monkeypatch.setattr(YAML, "compose", refuse)


def test_deep_nesting_is_refused_before_the_composer_recurses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _never_composed(monkeypatch)
    doc = load_yaml("deep.yaml", "groups: " + "[" * 5000 + "]" * 5000 + "\n")
    assert doc.syntax_error is not None
    assert doc.syntax_error.message == "nested deeper than 200 levels"
    block = "".join("  " * i + f"k{i}:\n" for i in range(300)) + "  " * 300 + "x: 1\n"
    assert load_yaml("deep.yaml", block).syntax_error is not None


def test_an_alias_bomb_is_refused_before_anything_is_expanded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _never_composed(monkeypatch)
    lines = ["a0: &a0 {x0: 1, x1: 2, x2: 3, x3: 4, x4: 5, x5: 6, x6: 7, x7: 8, x8: 9, x9: 10}"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    # The same bomb through merge keys: each level merges the previous one ten times.
    merges = ["m0: &m0 {x: 1}"]
    merges += [
        f"m{i}: &m{i} {{<<: [" + ", ".join([f"*m{i - 1}"] * 10) + f"], y{i}: 1}}"
        for i in range(1, 9)
    ]
    for text in ("\n".join(lines) + "\ngroups: *a8\n", "\n".join(merges) + "\n"):
        doc = load_yaml("bomb.yaml", text)
        assert doc.syntax_error is not None
        assert "nodes after aliases" in doc.syntax_error.message


def test_ordinary_anchors_still_load() -> None:
    text = "base: &b {x: 1, y: [1, 2]}\nother: {<<: *b, z: 3}\nlist: [*b, *b]\n"
    doc = load_yaml("ok.yaml", text)
    assert doc.syntax_error is None
    assert doc.data["other"] == {"x": 1, "y": [1, 2], "z": 3}


def test_a_hits_window_the_post_rule_cannot_hold_is_a_check_error(tmp_path: Path) -> None:
    from aiops.pipeline.postrule import MAX_WINDOW

    path = tmp_path / "r.yaml"
    path.write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        source: s\n"
        f"        selector: cpu\n        min_hits: 3\n        hits_window: {MAX_WINDOW + 1}\n"
    )
    out = io.StringIO()
    assert run_check([path], out) == 1
    assert f'"hits_window" must be at most {MAX_WINDOW}, got {MAX_WINDOW + 1}' in out.getvalue()
    path.write_text(path.read_text().replace(str(MAX_WINDOW + 1), str(MAX_WINDOW)))
    assert run_check([path], io.StringIO()) == 0


_DAEMON = 'sources:\n  sim:\n    type: simulator\nrule_files: ["r.yaml"]\n'
_RULES = "groups:\n  - name: g\n    rules:\n      - alert: A\n        source: sim\n"
_SILENCE = (
    "route: {receiver: c}\nreceivers:\n  - name: c\n    console_configs: [{}]\n"
    "silences:\n  - matchers: ['alertname=\"A\"']\n    starts_at: {at}\n"
    "    ends_at: 2026-01-02T00:00:00Z\n    created_by: me\n    comment: x\n"
)


@pytest.mark.parametrize(
    ("daemon", "rules", "alerting", "expected"),
    [
        pytest.param(
            "",
            "        selector: cpu\n        min_hits: " + "9" * 5000 + "\n",
            None,
            'r.yaml:7:19: group "g", rule "A": integer out of the 64-bit range: '
            "99999999999999999999... (5000 characters)",
            id="int-over-4300-digits",
        ),
        pytest.param(
            f"limits: {{max_series_per_rule: {2**63}}}\n",
            "        selector: cpu\n",
            None,
            f"d.yaml:5:31: limits: integer out of the 64-bit range: {2**63}",
            id="int-over-64-bits",
        ),
        pytest.param(
            "",
            "        selector: cpu\n        detector: {params: {seed: 0x" + "f" * 17 + "}}\n",
            None,
            'r.yaml:7:35: group "g", rule "A": integer out of the 64-bit range: 0x' + "f" * 17,
            id="hex-int-in-detector-params",
        ),
        pytest.param(
            "",
            '        selector: cpu\n        retrain: {cron: "0 3 * * \\udfff"}\n',
            None,
            'r.yaml:7:25: group "g", rule "A": lone surrogate U+DFFF in a string: not allowed',
            id="lone-surrogate-in-cron",
        ),
        pytest.param(
            "",
            '        selector: cpu\n        labels: {"t\\ud800": x}\n',
            None,
            'r.yaml:7:18: group "g", rule "A": lone surrogate U+D800 in a string: not allowed',
            id="lone-surrogate-in-a-key",
        ),
        pytest.param(
            "alerting_file: a.yaml\n",
            "        selector: cpu\n",
            _SILENCE.replace("{at}", "0001-01-01T00:00:00+01:00"),
            'a.yaml:7:16: silences[0]: "starts_at" must be a time within years 1-9999 in UTC, '
            'got "0001-01-01T00:00:00+01:00"',
            id="year-1-with-an-offset",
        ),
        pytest.param(
            'rule_files: ["r.yaml", "rules\\0/*.yaml"]\n',
            "        selector: cpu\n",
            None,
            "d.yaml:4:24: NUL character in a string: not allowed",
            id="nul-in-a-glob",
        ),
        pytest.param(
            'state: {dir: "st\\0ate"}\n',
            "        selector: cpu\n",
            None,
            "d.yaml:5:14: state: NUL character in a string: not allowed",
            id="nul-in-a-path",
        ),
    ],
)
def test_values_python_cannot_hold_are_one_located_error(
    tmp_path: Path, daemon: str, rules: str, alerting: str | None, expected: str
) -> None:
    """Each is one line at its place (no traceback, no echo of the replaced value)."""
    text = _DAEMON + daemon
    if 'rule_files: ["r.yaml", ' in daemon:
        text = text.replace('rule_files: ["r.yaml"]\n', "")
    (tmp_path / "d.yaml").write_text(text)
    (tmp_path / "r.yaml").write_text(_RULES + rules)
    if alerting is not None:
        (tmp_path / "a.yaml").write_text(alerting)
    out = io.StringIO()
    assert run_check([tmp_path / "d.yaml"], out) == 1
    lines = out.getvalue().splitlines()
    assert [line.replace(f"{tmp_path}/", "") for line in lines[:-1]] == [expected]


def test_the_largest_64_bit_integer_still_reads() -> None:
    doc = load_yaml("ok.yaml", f"a: {2**63 - 1}\nb: {-(2**63)}\nc: 0x7fffffffffffffff\n")
    assert doc.problems == []
    assert doc.data == {"a": 2**63 - 1, "b": -(2**63), "c": 2**63 - 1}
