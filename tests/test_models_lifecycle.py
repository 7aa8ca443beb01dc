"""Model versions in a running engine: start, rollback, pin, restart, config change, damage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tamper import TAMPERINGS, tamper_river_models

from aiops.models.lifecycle import ModelLifecycle
from aiops.models.registry import ModelError, ModelPinned, ModelRegistry, rule_dirname
from aiops.pipeline.engine import Engine, RuleRuntime, RuleSpec
from aiops.state.checkpoint import Checkpoint, Checkpointer
from aiops.state.envelope import FileStateStore
from aiops.types import Batch, SeriesKey

KEYS = [SeriesKey.of("latency", {"host": f"h{i}"}) for i in range(3)]
RULE = "g/A"


def spec(**params: float) -> RuleSpec:
    return RuleSpec(
        group="g",
        alert="A",
        source="s",
        matches=lambda k: True,
        detector_type="ewma_z",
        detector_params={"warmup": 20, **params},
    )


def batch(seed: int, n: int = 200, level: float = 50.0, start: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    step = np.arange(start, start + n)
    t = np.repeat(step * 60.0, len(KEYS))
    series = np.tile(np.arange(len(KEYS)), n)
    v = level + rng.normal(0, 1 + series, len(t))
    return Batch(keys=KEYS, series=series, timestamps=t, values=v)


def scores(rt: RuleRuntime, b: Batch) -> np.ndarray:
    return rt.process(b).scores


def clone(rt: RuleRuntime) -> RuleRuntime:
    twin = RuleRuntime(rt.spec)
    twin.load_state_dict(rt.state_dict())
    return twin


def started(tmp_path: Path, s: RuleSpec | None = None) -> tuple[Engine, ModelLifecycle]:
    engine = Engine([s or spec()])
    life = ModelLifecycle(ModelRegistry(tmp_path / "models"))
    life.start(engine)
    return engine, life


def test_first_start_makes_version_one_with_its_meta(tmp_path: Path) -> None:
    engine, life = started(tmp_path)
    reg = life.registry
    rt = engine.rules[RULE]
    assert rt.model_version == 1
    assert reg.promoted(RULE) == 1
    v1 = reg.get(RULE, 1)
    assert v1.trigger == "initial"
    assert v1.parent is None
    assert v1.training_window is None  # nothing seen yet
    assert v1.rule_hash == rt.spec.model_hash()
    assert v1.params["detector"] == "ewma_z"
    assert v1.params["detector_params"]["warmup"] == 20
    assert v1.params["detector_params"]["alpha"] > 0  # effective parameters, defaults included
    rt.process(batch(1))
    v2 = life.snapshot(rt, trigger="manual", parent=1)
    assert v2.training_window == (0.0, 199 * 60.0)
    assert v2.points_seen == 600
    assert v2.evaluation["series"] == 3
    assert v2.evaluation["window_points"] == 180  # each series keeps its last 60 points
    assert 0.0 <= v2.evaluation["hit_rate"] <= 1.0
    life.close()


def test_rollback_restores_the_previous_version_and_its_scores(tmp_path: Path) -> None:
    engine, life = started(tmp_path)
    rt = engine.rules[RULE]
    rt.process(batch(1))  # version 1 learns online
    probe = batch(9, n=50, start=400)
    before = scores(clone(rt), probe)  # what version 1 gives on the probe, as it is now
    # A retrained candidate (learned on other data) becomes version 2 and runs.
    other = RuleRuntime(rt.spec)
    other.process(batch(2, level=80.0))
    v2 = life.registry.add(
        RULE, other.model_state(), trigger="manual", parent=1, rule_hash=rt.spec.model_hash()
    )
    life.activate(engine, RULE, v2.version, reason="test retrain")
    assert rt.model_version == 2
    after_v2 = scores(rt, probe)
    assert not np.allclose(after_v2, before)  # a different model: the check can fail
    assert life.rollback(engine, RULE, by="test") == 1
    assert engine.rules[RULE].model_version == 1
    np.testing.assert_array_equal(scores(rt, probe), before)
    assert life.registry.promoted(RULE) == 1
    last = life.registry.history(RULE)[-1]
    assert last["event"] == "rolled back"
    assert last["from"] == 2
    assert last["version"] == 1
    assert "by test" in last["reason"]
    # Version 2's state is untouched (immutable): rolling forward gives its scores again.
    fresh = RuleRuntime(rt.spec)
    fresh.load_model_state(life.registry.load_state(RULE, 2))
    twin = RuleRuntime(rt.spec)
    twin.load_model_state(other.model_state())
    np.testing.assert_array_equal(scores(fresh, probe), scores(twin, probe))
    with pytest.raises(ModelError, match="version 1 has no earlier version"):
        life.rollback(engine, RULE)
    with pytest.raises(ModelError, match="already runs version 1"):
        life.rollback(engine, RULE, to=1)


def test_pin_swaps_and_blocks_automatic_promotion(tmp_path: Path) -> None:
    engine, life = started(tmp_path)
    rt = engine.rules[RULE]
    rt.process(batch(1))
    v2 = life.snapshot(rt, trigger="manual", parent=1)
    life.pin(engine, RULE, 1, by="ops")
    assert (life.registry.pinned(RULE), rt.model_version) == (1, 1)
    with pytest.raises(ModelPinned, match="pinned to version 1"):
        life.activate(engine, RULE, v2.version, reason="retrain", automatic=True)
    with pytest.raises(ModelPinned, match="unpin it"):
        life.rollback(engine, RULE, to=v2.version)
    assert rt.model_version == 1
    life.pin(engine, RULE, v2.version)  # pinning another version swaps to it
    assert (life.registry.pinned(RULE), rt.model_version, life.running[RULE]) == (2, 2, 2)
    life.pin(engine, RULE, None)
    life.activate(engine, RULE, 1, reason="retrain", automatic=True)
    assert rt.model_version == 1


def test_restart_restores_the_promoted_version_and_the_version_list(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path)
    engine, life = started(tmp_path)
    rt = engine.rules[RULE]
    rt.process(batch(1))
    life.snapshot(rt, trigger="manual", parent=1)
    life.activate(engine, RULE, 2, reason="test")
    rt.process(batch(3, start=200))  # version 2 keeps learning after its snapshot
    probe = batch(9, n=50, start=500)
    expected = scores(clone(rt), probe)
    Checkpointer(store).save(Checkpoint(rules=engine.state_dict(), sources={}))
    life.close()

    # Restart: the checkpoint continues version 2; no version is added.
    engine2 = Engine([spec()])
    engine2.load_state_dict(Checkpointer(store).load().rules)  # type: ignore[union-attr]
    life2 = ModelLifecycle(ModelRegistry(tmp_path / "models"))
    life2.start(engine2)
    rt2 = engine2.rules[RULE]
    assert rt2.model_version == 2
    assert [v.version for v in life2.registry.versions(RULE)] == [1, 2]
    np.testing.assert_array_equal(scores(clone(rt2), probe), expected)
    # An offline rollback while stopped: the next start runs version 1 as it last ran,
    # and keeps what version 2 had learned (its continued state) for later.
    life2.registry.promote(RULE, 1, reason="offline", event="rolled back")
    v1_scores = scores(clone_from(life2.registry.load_continued(RULE, 1)), probe)
    life2.close()
    engine3 = Engine([spec()])
    engine3.load_state_dict(Checkpointer(store).load().rules)  # type: ignore[union-attr]
    life3 = ModelLifecycle(ModelRegistry(tmp_path / "models"))
    life3.start(engine3)
    assert engine3.rules[RULE].model_version == 1
    np.testing.assert_array_equal(scores(clone(engine3.rules[RULE]), probe), v1_scores)
    np.testing.assert_array_equal(
        scores(clone_from(life3.registry.load_continued(RULE, 2)), probe), expected
    )
    life3.close()


def clone_from(state: object) -> RuleRuntime:
    rt = RuleRuntime(spec())
    rt.load_model_state(state)  # type: ignore[arg-type]
    return rt


def test_config_change_makes_a_new_version_and_rollback_does_not_cross_it(tmp_path: Path) -> None:
    engine, life = started(tmp_path)
    engine.rules[RULE].process(batch(1))
    life.close()
    engine2, life2 = started(tmp_path, spec(alpha=0.2))
    rt = engine2.rules[RULE]
    assert rt.model_version == 2
    v2 = life2.registry.get(RULE, 2)
    assert v2.trigger == "config-change"
    assert v2.points_seen == 0  # a fresh detector: what the rule saw before is not in it
    assert v2.training_window is None
    assert v2.parent == 1
    assert "detector configuration changed" in v2.note
    with pytest.raises(ModelError, match="parent 1 has another detector configuration"):
        life2.rollback(engine2, RULE)
    with pytest.raises(ModelError, match="another detector configuration"):
        life2.rollback(engine2, RULE, to=1)
    assert rt.model_version == 2


def test_unreadable_promoted_version_falls_back_to_its_parent(tmp_path: Path) -> None:
    engine, life = started(tmp_path)
    rt = engine.rules[RULE]
    rt.process(batch(1))
    life.snapshot(rt, trigger="manual", parent=1)
    life.activate(engine, RULE, 2, reason="test")
    life.close()
    d = tmp_path / "models" / rule_dirname(RULE)
    blob = (d / "2" / "state").read_bytes()
    (d / "2" / "state").write_bytes(blob[:-3] + b"xyz")
    # No checkpoint: the rule must load a stored version.
    engine2, life2 = started(tmp_path)
    assert engine2.rules[RULE].model_version == 1
    assert life2.registry.promoted(RULE) == 1
    life2.close()


def test_feedback_from_slack_buttons_is_in_the_model_history(tmp_path: Path) -> None:
    from aiops.alerting.feedback import FeedbackApplier, FeedbackStore, KnownAlert

    engine, life = started(tmp_path)
    rt = engine.rules[RULE]
    rt.process(batch(1))
    store = FeedbackStore(tmp_path / "feedback.db")
    applier = FeedbackApplier(store)
    applier.on_applied = life.feedback_applied
    alert = KnownAlert("f1", RULE, str(KEYS[1]), {"alertname": "A"}, 0.9995)
    store.record("false_positive", alert, "U123", {"threshold": 0.9999})
    store.record("acknowledge", alert, "U456")

    class Router:
        def __init__(self) -> None:
            self.silences: list[object] = []

    assert applier.apply(engine, Router(), force=True) == 2
    events = [e for e in life.registry.history(RULE) if e["event"] == "feedback"]
    assert [(e["action"], e["user"], e["outcome"], e["version"]) for e in events] == [
        ("false_positive", "U123", "ok", 1),
        ("acknowledge", "U456", "ok", 1),
    ]
    assert events[0]["series"] == str(KEYS[1])
    store.close()


def test_metrics_of_the_running_version_promotions_rollbacks_and_refused_states(
    tmp_path: Path,
) -> None:
    from aiops.service.metrics import PrometheusMetrics

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    metrics = PrometheusMetrics()
    engine = Engine([spec()])
    life = ModelLifecycle(ModelRegistry(tmp_path / "models"), metrics=metrics)
    life.start(engine)
    rt = engine.rules[RULE]
    assert value("aiops_model_version", rule=RULE) == 1.0
    assert value("aiops_model_promotions_total", rule=RULE, automatic="true") is None
    rt.process(batch(1))
    life.snapshot(rt, trigger="manual", parent=1)
    life.activate(engine, RULE, 2, reason="retrain", automatic=True)
    assert value("aiops_model_version", rule=RULE) == 2.0
    assert value("aiops_model_promotions_total", rule=RULE, automatic="true") == 1.0
    life.rollback(engine, RULE, by="ops")
    assert value("aiops_model_version", rule=RULE) == 1.0
    assert value("aiops_model_rollbacks_total", rule=RULE, automatic="false") == 1.0
    life.pin(engine, RULE, 2, by="ops")
    assert value("aiops_model_promotions_total", rule=RULE, automatic="false") == 1.0
    life.pin(engine, RULE, None)
    # A version whose stored state was tampered with is refused, counted, and not run.
    life.snapshot(rt, trigger="manual", parent=2)
    state = tmp_path / "models" / rule_dirname(RULE) / "3" / "state"
    blob = state.read_bytes()
    state.write_bytes(blob[:-3] + b"xyz")
    with pytest.raises(ModelError):
        life.activate(engine, RULE, 3, reason="retrain", automatic=True)
    assert value("aiops_model_state_refused_total", rule=RULE) == 1.0
    assert value("aiops_model_version", rule=RULE) == 2.0
    # A rule gone after a reload loses its gauge.
    life.reloaded(Engine([]), retired=[rt])
    assert value("aiops_model_version", rule=RULE) is None
    life.close()


def test_a_refused_checkpoint_state_falls_back_to_the_promoted_version_not_a_cold_start(
    tmp_path: Path,
) -> None:
    engine, life = started(tmp_path)
    rt = engine.rules[RULE]
    rt.process(batch(1))
    life.snapshot(rt, trigger="manual", parent=1)
    life.activate(engine, RULE, 2, reason="test")
    probe = batch(9, n=50, start=500)
    expected = scores(clone_from(life.registry.load_state(RULE, 2)), probe)
    state = engine.state_dict()
    life.close()
    det = state[RULE]["detector"]
    det["mu"] = det["mu"][:1]  # damaged: the arrays no longer fit the detector
    engine2 = Engine([spec()])
    engine2.load_state_dict(state)
    assert engine2.refused_states == {RULE: 1}
    assert engine2.rules[RULE].model_version is None  # the engine started the rule cold
    life2 = ModelLifecycle(ModelRegistry(tmp_path / "models"))
    life2.start(engine2)
    rt2 = engine2.rules[RULE]
    assert rt2.model_version == 2  # the registry's promoted version, not a new cold one
    assert [v.version for v in life2.registry.versions(RULE)] == [1, 2]
    np.testing.assert_array_equal(scores(clone(rt2), probe), expected)
    life2.close()


def test_a_new_state_format_of_the_detector_is_a_configuration_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiops.registry import DETECTORS

    engine, life = started(tmp_path)
    engine.rules[RULE].process(batch(1))
    state = engine.state_dict()
    life.close()
    cls = type(engine.rules[RULE].detector)
    assert DETECTORS.get("ewma_z") is cls
    # A release whose detector writes its state another way (state_format bumped).
    monkeypatch.setattr(cls, "state_format", getattr(cls, "state_format", 1) + 1, raising=False)
    engine2 = Engine([spec()])
    engine2.load_state_dict(state)
    rt = engine2.rules[RULE]
    assert rt.spec.model_hash() != state[RULE]["model_hash"]
    assert rt.points_seen == 600  # the windows and series are kept ...
    assert not rt.detector.state_dict()["n"].any()  # ... but the detector starts fresh
    life2 = ModelLifecycle(ModelRegistry(tmp_path / "models"))
    life2.start(engine2)
    v2 = life2.registry.get(RULE, 2)
    assert (v2.trigger, v2.parent, rt.model_version) == ("config-change", 1, 2)
    life2.close()


def test_versions_skipped_at_start_are_counted_as_refused(tmp_path: Path) -> None:
    from aiops.service.metrics import PrometheusMetrics

    engine, life = started(tmp_path)
    engine.rules[RULE].process(batch(1))
    life.snapshot(engine.rules[RULE], trigger="manual", parent=1)
    life.close()
    (tmp_path / "models" / rule_dirname(RULE) / "2" / "meta.json").write_text("{not json")
    metrics = PrometheusMetrics()
    life2 = ModelLifecycle(ModelRegistry(tmp_path / "models"), metrics=metrics)
    life2.start(Engine([spec()]))
    refused = metrics.registry.get_sample_value("aiops_model_state_refused_total", {"rule": RULE})
    assert refused == 1.0
    assert life2.running[RULE] == 1
    life2.close()


@pytest.mark.parametrize("tamper", TAMPERINGS)
def test_a_tampered_river_version_on_disk_runs_no_code_and_its_parent_runs(
    tamper: str, tmp_path: Path
) -> None:
    """Edited on disk with its envelope's hash made to match again: the pickle's signature
    (or the envelope's format) still refuses it before anything is unpickled."""
    from aiops.models.registry import MODEL_KIND
    from aiops.service.metrics import PrometheusMetrics
    from aiops.state.envelope import ENVELOPE_FORMAT, dumps, loads, seal, unseal

    river = RuleSpec(
        group="g",
        alert="A",
        source="s",
        matches=lambda k: True,
        detector_type="river",
        detector_params={"model": "HalfSpaceTrees"},
    )
    engine, life = started(tmp_path, river)
    rt = engine.rules[RULE]
    rt.process(batch(1))
    life.snapshot(rt, trigger="manual", parent=1)
    life.activate(engine, RULE, 2, reason="test")
    life.close()
    path = tmp_path / "models" / rule_dirname(RULE) / "2" / "state"
    _, payload = unseal(path.read_bytes(), kind=MODEL_KIND)
    state = loads(payload)
    marker = tmp_path / "pwned"
    tamper_river_models(state["detector"], tamper, marker)
    blob = seal(dumps(state), kind=MODEL_KIND)  # a fresh, matching content hash
    if tamper == "format":
        old = f'"format": {ENVELOPE_FORMAT}'.encode()
        assert old in blob
        blob = blob.replace(old, b'"format": 99', 1)
    path.write_bytes(blob)
    metrics = PrometheusMetrics()
    engine2 = Engine([river])  # no checkpoint: the rule must load a stored version
    life2 = ModelLifecycle(ModelRegistry(tmp_path / "models"), metrics=metrics)
    life2.start(engine2)
    assert not marker.exists()
    assert engine2.rules[RULE].model_version == 1
    assert life2.registry.promoted(RULE) == 1
    refused = metrics.registry.get_sample_value("aiops_model_state_refused_total", {"rule": RULE})
    assert refused == 1.0
    engine2.process("s", batch(2, n=20, start=300))  # and it scores on
    life2.close()
