"""Log rules as models of the registry: versions, meta, restart, config change, rollback."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aiops.cli import cli
from aiops.config.models import RuleFile
from aiops.logs.rules import LogEngine, log_rule_specs
from aiops.models.lifecycle import ModelLifecycle
from aiops.models.registry import ModelRegistry
from aiops.pipeline.engine import Engine
from aiops.state.envelope import loads, unseal
from aiops.types import Batch
from tests.test_logs import BURST_AT, NEW_AT, RULES, stream

NEW, BURST, RATE = "logs/NewLogTemplate", "logs/ErrorBurst", "logs/TemplateRate"
RULES_RATE = copy.deepcopy(RULES)
RULES_RATE["groups"][0]["rules"].append(
    {
        "alert": "TemplateRate",
        "source": "logs",
        "log": {"type": "template_rate", "interval": "1m"},
        "detector": {"type": "ewma_z", "params": {"warmup": 30}},
        "threshold": 0.999,
    }
)
KEYS = [NEW, BURST, RATE]


def engine_of(rules: dict = RULES_RATE) -> Engine:
    return Engine([], logs=LogEngine(log_rule_specs(RuleFile.model_validate(rules).groups)))


def start(tmp_path: Path, engine: Engine) -> ModelLifecycle:
    life = ModelLifecycle(ModelRegistry(tmp_path / "models"))
    life.start(engine)
    return life


def feed(engine: Engine, minutes) -> list[tuple[str, str, float]]:
    out = []
    for recs in minutes:
        out += [
            (a.alertname, a.status, a.starts_at) for a in engine.process("logs", Batch(logs=recs))
        ]
    return out


def test_every_log_rule_gets_a_version_with_its_settings_and_libraries(tmp_path: Path) -> None:
    engine = engine_of()
    life = start(tmp_path, engine)
    reg = life.registry
    assert reg.rules() == sorted(KEYS)
    assert life.running == {NEW: 1, BURST: 1, RATE: 1}
    v = reg.get(NEW, 1)
    assert (v.trigger, v.parent, v.points_seen, v.training_window) == ("initial", None, 0, None)
    assert v.rule_hash == engine.logs.rules[NEW].spec.model_hash()
    assert v.params["log_rule"] == "new_template"
    assert v.params["mining"]["sim_th"] == 0.7
    assert v.params["mining"]["default_masks"] is True
    assert v.params["detector_params"]["learn_for"] == 3600.0
    assert "drain3" in v.versions
    assert "aiopsd" in v.versions
    burst = reg.get(BURST, 1)
    assert burst.params["detector"] == "ewma_z"
    assert burst.params["detector_params"]["warmup"] == 30  # effective: defaults filled in
    assert "alpha" in burst.params["detector_params"]
    life.close()


def test_a_version_holds_the_miners_as_json_in_the_unsigned_envelope(tmp_path: Path) -> None:
    engine = engine_of()
    life = start(tmp_path, engine)
    feed(engine, stream()[:NEW_AT])
    rule = engine.logs.rules[NEW]
    mv = life.snapshot(rule, trigger="manual", parent=1)
    assert mv.points_seen == rule.lines > 0
    assert mv.training_window is not None
    assert mv.training_window[0] < mv.training_window[1]
    assert mv.evaluation["templates"] == len(engine.logs.group_miners(rule.spec)[0]) > 0
    header, payload = unseal(Path(mv.path, "state").read_bytes(), kind="model")
    assert not header.get("signed")  # nothing pickled to sign
    state = loads(payload)  # np.load(allow_pickle=False) inside
    assert json.loads(json.dumps(state["miners"])) == state["miners"]  # plain JSON data
    ((part, miner),) = state["miners"]
    assert part == [["service", "payments"]]
    assert miner["clusters"]
    life.close()


def test_a_restart_without_checkpoint_runs_the_promoted_version_and_alerts_as_before(
    tmp_path: Path,
) -> None:
    minutes = stream()
    cut = NEW_AT + 5
    whole = engine_of()
    expected = [a for a in feed(whole, minutes) if a[2] >= minutes[cut][0].timestamp]

    engine = engine_of()
    life = start(tmp_path, engine)
    feed(engine, minutes[:cut])
    for key in KEYS:  # what each rule learned, as versions 2 (manual), promoted
        rule = engine.logs.rules[key]
        life.snapshot(rule, trigger="manual", parent=1)
        life.activate(engine, key, 2, reason="test")
    life.close()

    # The checkpoint is lost: the rules start from their promoted versions.
    again = engine_of()
    life2 = start(tmp_path, again)
    assert life2.running == {k: 2 for k in KEYS}
    assert [v.version for v in life2.registry.versions(NEW)] == [1, 2]
    assert len(again.logs.miners) == len(engine.logs.miners) == 1
    (m0,), (m1,) = engine.logs.miners.values(), again.logs.miners.values()
    assert m1.state_dict() == m0.state_dict()
    rest = feed(again, minutes[cut:])
    # The templates known before are not new again; the burst is scored as before.
    assert [a for a in rest if a[1] == "firing"] == [
        a for a in expected if a[1] == "firing" and a[0] != "NewLogTemplate"
    ]
    assert ("ErrorBurst", "firing", minutes[BURST_AT + 1][0].timestamp // 60 * 60) in rest
    # A cold start learns again: the burst comes inside its detector's warm-up.
    cold = feed(engine_of(), minutes[cut:])
    assert "ErrorBurst" not in [a for a, s, _ in cold if s == "firing"]
    life2.close()


def test_the_checkpoint_carries_the_running_version(tmp_path: Path) -> None:
    engine = engine_of()
    life = start(tmp_path, engine)
    feed(engine, stream()[:30])
    life.snapshot(engine.logs.rules[NEW], trigger="manual", parent=1)
    life.activate(engine, NEW, 2, reason="test")
    state = engine.state_dict()
    life.close()
    again = engine_of()
    again.load_state_dict(state)
    life2 = start(tmp_path, again)
    assert life2.running == {NEW: 2, BURST: 1, RATE: 1}
    assert [v.version for v in life2.registry.versions(NEW)] == [1, 2]  # none added
    assert again.logs.rules[NEW].lines == engine.logs.rules[NEW].lines
    life2.close()


def test_changed_mining_settings_make_a_config_change_version(tmp_path: Path) -> None:
    engine = engine_of()
    life = start(tmp_path, engine)
    feed(engine, stream()[:30])
    state = engine.state_dict()
    life.close()
    changed = copy.deepcopy(RULES_RATE)
    for r in changed["groups"][0]["rules"]:
        r["log"]["mining"] = {"sim_th": 0.5}
    again = engine_of(changed)
    again.load_state_dict(state)
    life2 = start(tmp_path, again)
    assert life2.running == {k: 2 for k in KEYS}
    v2 = life2.registry.get(NEW, 2)
    assert (v2.trigger, v2.parent, v2.params["mining"]["sim_th"]) == ("config-change", 1, 0.5)
    assert v2.rule_hash != life2.registry.get(NEW, 1).rule_hash
    life2.close()


def test_alerting_settings_are_not_a_model_change(tmp_path: Path) -> None:
    engine = engine_of()
    life = start(tmp_path, engine)
    state = engine.state_dict()
    life.close()
    changed = copy.deepcopy(RULES_RATE)
    changed["groups"][0]["rules"][0]["log"]["max_alerts"] = 5
    again = engine_of(changed)
    again.load_state_dict(state)
    life2 = start(tmp_path, again)
    assert life2.running == {k: 1 for k in KEYS}
    life2.close()


def test_a_rollback_keeps_the_shared_miners_and_their_template_ids(tmp_path: Path) -> None:
    engine = engine_of()
    life = start(tmp_path, engine)
    minutes = stream()
    feed(engine, minutes[:40])
    life.snapshot(engine.logs.rules[BURST], trigger="manual", parent=1)
    life.activate(engine, BURST, 2, reason="test")
    feed(engine, minutes[40:60])
    (miner,) = engine.logs.miners.values()
    before = miner.state_dict()
    assert life.rollback(engine, BURST) == 1
    assert life.running[BURST] == 1
    (after,) = engine.logs.miners.values()
    assert after.state_dict() == before  # older miners: no template taken back
    # The rule's detector is version 1's again, as it last ran (to minute 40).
    v1 = life.registry.load_continued(BURST, 1)["rule"]["runtime"]["detector"]["n"]
    n = engine.logs.rules[BURST].runtime.detector.state_dict()["n"]
    assert v1.sum() > 0
    assert n[: len(v1)].tolist() == v1.tolist()
    life.close()


def test_a_version_of_another_rule_shape_is_refused_without_change(tmp_path: Path) -> None:
    engine = engine_of()
    life = start(tmp_path, engine)
    rule = engine.logs.rules[NEW]
    state = rule.model_state()
    with pytest.raises(ValueError, match="other log rule settings"):
        rule.load_model_state({**state, "model_hash": "0" * 16})
    with pytest.raises(ValueError, match="saved miners not loaded"):
        rule.load_model_state({**state, "miners": [[[], {"version": 99}]]})
    assert rule.model_state() == state
    life.close()


def test_models_list_and_show_name_the_log_rules(tmp_path: Path) -> None:
    engine = engine_of()
    life = start(tmp_path, engine)
    feed(engine, stream()[:20])
    life.snapshot(engine.logs.rules[BURST], trigger="manual", parent=1)
    life.close()
    runner = CliRunner()
    out = runner.invoke(cli, ["models", "list", "--state-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    for key in KEYS:
        assert key in out.output
    out = runner.invoke(cli, ["models", "show", BURST, "2", "--state-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    for text in ("log rule:", "error_burst on source logs, by service", "sim_th=0.7", "drain3"):
        assert text in out.output
    assert "manual" in out.output


def test_a_reload_that_changes_the_mining_settings_makes_new_versions(tmp_path: Path) -> None:
    engine = engine_of()
    life = start(tmp_path, engine)
    feed(engine, stream()[:30])
    changed = copy.deepcopy(RULES_RATE)
    changed["groups"][0]["rules"][0]["log"]["mining"] = {"depth": 4}  # NewLogTemplate only
    new = engine_of(changed)
    new.logs.load_state_dict(engine.logs.state_dict())  # as a reload carries the state
    life.reloaded(new, ())
    assert life.running == {NEW: 2, BURST: 1, RATE: 1}
    v2 = life.registry.get(NEW, 2)
    assert (v2.trigger, v2.parent, v2.params["mining"]["depth"]) == ("config-change", 1, 4)
    assert [v.version for v in life.registry.versions(BURST)] == [1]
    life.close()
