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
