"""The model registry on disk: versions, promotion, pins, history, and damage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aiops.models.registry import (
    ModelError,
    ModelPinned,
    ModelRegistry,
    UnknownModel,
    VersionUnreadable,
    rule_dirname,
)

RULE = "fleet/High CPU: ../etc"


def _state(k: float) -> dict[str, object]:
    return {"mu": np.array([k, k + 1.0]), "n": 3, "keys": ["a", "b"]}


def test_versions_and_meta_round_trip(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "models")
    assert reg.rules() == []
    assert not (tmp_path / "models").exists()
    v1 = reg.add(
        RULE,
        _state(1.0),
        trigger="initial",
        parent=None,
        training_window=(100.0, 200.0),
        points_seen=42,
        rule_hash="abc",
        params={"detector": "ewma_z", "alpha": 0.1},
        evaluation={"hit_rate": 0.01},
        note="first",
    )
    v2 = reg.add(RULE, _state(2.0), trigger="manual", parent=1, rule_hash="abc")
    assert (v1.version, v2.version) == (1, 2)
    assert reg.rules() == [RULE]
    # The rule's directory is one safe name inside the registry.
    dirs = [p.name for p in (tmp_path / "models").iterdir()]
    assert dirs == [rule_dirname(RULE)]
    assert "/" not in dirs[0]
    assert not dirs[0].startswith(".")
    got = reg.get(RULE, 1)
    assert got == v1
    assert got.training_window == (100.0, 200.0)
    assert got.points_seen == 42
    assert got.params == {"detector": "ewma_z", "alpha": 0.1}
    assert got.note == "first"
    assert "numpy" in got.versions
    assert "aiopsd" in got.versions
    assert [v.version for v in reg.versions(RULE)] == [1, 2]
    state = reg.load_state(RULE, 2)
    assert state["mu"].tolist() == [2.0, 3.0]
    assert state["keys"] == ["a", "b"]
    # Nothing is promoted until asked.
    assert reg.promoted(RULE) is None
    with pytest.raises(UnknownModel, match="no promoted version"):
        reg.get(RULE)
    reg.promote(RULE, 2, reason="test")
    assert reg.get(RULE).version == 2
    with pytest.raises(UnknownModel, match=r"no version 7 \(versions: 1, 2\)"):
        reg.get(RULE, 7)
    events = [e["event"] for e in reg.history(RULE)]
    assert events == ["added", "added", "promoted"]
    # A second registry on the same directory sees the same (nothing is cached).
    assert ModelRegistry(tmp_path / "models").promoted(RULE) == 2


def test_meta_and_add_are_checked(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    with pytest.raises(ModelError, match="unknown trigger"):
        reg.add("r", {}, trigger="whim", parent=None)
    with pytest.raises(TypeError, match="unknown meta fields: colour"):
        reg.add("r", {}, trigger="manual", parent=None, colour="red")
    with pytest.raises(TypeError, match="cannot store"):
        reg.add("r", {"x": object()}, trigger="manual", parent=None)


def test_pin_blocks_automatic_promotion(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    for k in range(3):
        reg.add("r", _state(k), trigger="manual", parent=k or None)
    reg.promote("r", 1, reason="start")
    reg.pin("r", 2, reason="known good")
    assert (reg.promoted("r"), reg.pinned("r")) == (2, 2)  # pinning runs the version
    with pytest.raises(ModelPinned, match="pinned to version 2"):
        reg.promote("r", 3, reason="retrained", automatic=True)
    assert reg.promoted("r") == 2
    reg.promote("r", 3, reason="operator says so")  # an operator's promotion is not blocked
    assert reg.promoted("r") == 3
    reg.pin("r", None)
    assert reg.pinned("r") is None
    reg.promote("r", 1, reason="retrained", automatic=True)
    assert reg.promoted("r") == 1
    history = reg.history("r")
    assert [e["event"] for e in history[3:]] == [
        "promoted",
        "promoted",
        "pinned",
        "promoted",
        "unpinned",
        "promoted",
    ]
    assert history[-1]["automatic"] is True
    assert history[-1]["from"] == 3
    with pytest.raises(UnknownModel):
        reg.pin("other", None)


def test_corrupt_versions_are_skipped_with_a_reason(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    for k in range(4):
        reg.add("r", _state(k), trigger="manual", parent=None)
    d = tmp_path / rule_dirname("r")
    (d / "2" / "meta.json").write_text("{not json")
    blob = (d / "3" / "state").read_bytes()
    (d / "3" / "state").write_bytes(blob[:-5] + b"XXXXX")
    (d / "4" / "meta.json").unlink()  # an interrupted write
    (d / "history.jsonl").open("a").write("garbage\n")
    versions = reg.versions("r")
    assert [v.version for v in versions] == [1, 3]  # 3's meta is fine; its state is not
    problems = reg.problems("r")
    assert len(problems) == 2
    assert "version 2: meta.json unreadable" in problems[0]
    assert "version 4: incomplete (no meta.json" in problems[1]
    with pytest.raises(VersionUnreadable, match=r"version 2: meta\.json unreadable"):
        reg.get("r", 2)
    with pytest.raises(VersionUnreadable, match=r"version 3: state refused: .*content hash"):
        reg.load_state("r", 3)
    assert reg.load_state("r", 1)["mu"].tolist() == [0.0, 1.0]
    assert len(reg.history("r")) == 4  # the bad line is skipped
    # A new version never reuses a number, even a broken one's.
    assert reg.add("r", {}, trigger="manual", parent=1).version == 5
    (d / "index.json").write_text("[]")
    assert reg.promoted("r") is None
    assert reg.rules() == ["r"]


def test_continued_state_and_record(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    reg.add("r", _state(1.0), trigger="initial", parent=None)
    assert reg.load_continued("r", 1) is None
    reg.save_continued("r", 1, _state(5.0))
    assert reg.load_continued("r", 1)["mu"].tolist() == [5.0, 6.0]
    assert reg.load_state("r", 1)["mu"].tolist() == [1.0, 2.0]  # the version is unchanged
    reg.record("r", {"event": "feedback", "action": "false_positive", "series": "cpu"})
    assert reg.history("r")[-1]["action"] == "false_positive"
    with pytest.raises(ValueError, match="needs an"):
        reg.record("r", {"action": "x"})
    line = (tmp_path / rule_dirname("r") / "history.jsonl").read_text().splitlines()[-1]
    assert json.loads(line)["event"] == "feedback"
