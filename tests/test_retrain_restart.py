"""A clean restart keeps each rule's retraining history ring and a watch under way.

The restart is done in process as the daemon does it: the engine's state goes through
a checkpoint document, a new engine loads it, the model lifecycle and retraining start
on it (``aiops.models.carry`` reads what ``Retraining.close`` wrote).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aiops.config.models import Retrain
from aiops.models.carry import CARRY_FILE, CARRY_KIND
from aiops.models.lifecycle import ModelLifecycle
from aiops.models.registry import ModelRegistry, rule_dirname
from aiops.models.retrain import InlineExecutor, Retrainer, Retraining
from aiops.pipeline.engine import Engine
from aiops.state.envelope import dumps, loads, seal, unseal
from tests.test_retrain import DAY, KEY, MIN, RULE, T0, Harness, series, spec

RETRAIN = Retrain(every=DAY, window=DAY, shadow=1800.0, watch=3600.0)


class Restarted(Harness):
    """A harness whose engine starts from another one's checkpointed state."""

    def __init__(
        self, tmp_path: Path, state: Any, retrain: Retrain = RETRAIN, drift: Any = None
    ) -> None:
        self.engine = Engine([spec()])
        self.engine.load_state_dict(loads(dumps(state)))  # through bytes, as a checkpoint
        self.models = ModelLifecycle(ModelRegistry(tmp_path / "models"), lock_timeout=0.0)
        self.models.start(self.engine)
        self.retraining = Retraining(
            {RULE: (retrain, drift)}, models=self.models, executor=InlineExecutor()
        )
        self.retraining.start(self.engine)
        self.info = []


def stop(h: Harness) -> Any:
    state = h.engine.state_dict()  # the final checkpoint
    h.retraining.close()
    h.models.close()
    return state


def ring(r: Retrainer) -> tuple[np.ndarray, ...]:
    assert r.history is not None
    return r.history.since_mark(0)


def test_a_clean_restart_keeps_the_ring_and_the_watch_which_still_rolls_back(
    tmp_path: Path,
) -> None:
    t, v = series(1440 + 3 * 60)
    h = Harness(tmp_path, RETRAIN)
    h.feed(t[: 1440 + 40], v[: 1440 + 40])  # retrain at midnight, 30 min of shadow, watching
    assert h.registry.promoted(RULE) == 2
    assert h.retrainer.phase == "watch"
    before_ring = ring(h.retrainer)
    watch = h.retrainer._watch
    assert watch is not None
    previous_state = repr(watch.previous.state_dict())
    counts = watch.counts
    state = stop(h)
    carried = tmp_path / "models" / rule_dirname(RULE) / CARRY_FILE
    assert carried.is_file()

    again = Restarted(tmp_path, state)
    assert not carried.exists()  # read once
    assert again.rt.model_version == 2
    for a, b in zip(ring(again.retrainer), before_ring, strict=True):
        np.testing.assert_array_equal(a, b)
    assert again.retrainer.phase == "watch"
    resumed = again.retrainer._watch
    assert resumed is not None
    assert (resumed.previous_version, resumed.version) == (1, 2)
    assert resumed.counts == counts
    assert repr(resumed.previous.state_dict()) == previous_state
    # The safety net holds after the restart: a broken promoted model is rolled back.
    broken = again.rt.detector
    real_score = broken.score
    broken.score = lambda i, ts, vs: np.maximum(real_score(i, ts, vs), 0.99999)  # type: ignore[method-assign]
    k = 1440 + 40
    while again.retrainer.outcome.rolled_back == 0 and k < len(t):
        again.feed(t[k : k + 5], v[k : k + 5])
        k += 5
    assert again.retrainer.outcome.rolled_back == 1
    assert again.rt.model_version == 1
    # When the watch began before the stop ends: an hour after the promotion at 00:30.
    assert k == 1440 + 30 + 60 + 5


def test_ring_points_newer_than_the_checkpoint_are_left_to_the_replay(tmp_path: Path) -> None:
    t, v = series(600)
    h = Harness(tmp_path, RETRAIN)
    h.feed(t[:400], v[:400])
    state = h.engine.state_dict()  # a checkpoint at point 400; the rule goes on to 600
    h.feed(t[400:], v[400:])
    h.retraining.close()
    h.models.close()
    again = Restarted(tmp_path, state)
    idx, ts, _ = ring(again.retrainer)
    assert len(ts) == 400
    assert ts.max() == t[399]
    assert set(idx.tolist()) == {0}
    assert again.retrainer.phase == "idle"


def test_a_tampered_or_foreign_carry_file_is_refused_and_the_ring_starts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    t, v = series(300)
    h = Harness(tmp_path, RETRAIN)
    h.feed(t, v)
    state = stop(h)
    carried = tmp_path / "models" / rule_dirname(RULE) / CARRY_FILE
    blob = carried.read_bytes()
    carried.write_bytes(blob[:-3] + b"xyz")
    with caplog.at_level(logging.ERROR, logger="aiops.models"):
        again = Restarted(tmp_path, state)
    assert len(again.retrainer.history or ()) == 0
    assert "retraining state in" in caplog.text
    assert "refused" in caplog.text
    assert not carried.exists()
    # Saved under other retrain: settings: not used either.
    again.feed(t[-5:] + 5 * MIN, v[-5:])
    state = stop(again)
    other = Restarted(tmp_path, state, Retrain(every=DAY, window=2 * DAY))
    assert len(other.retrainer.history or ()) == 0
    assert other.engine.rules[RULE].registry.keys == [KEY]


def test_a_whole_daemon_stopped_and_started_again_keeps_its_ring(tmp_path: Path) -> None:
    """``aiops run`` twice on one state directory: the second run starts with the ring."""
    import json
    import threading

    from aiops.config import load_config
    from aiops.service.app import build_daemon

    t, v = series(600)
    data = tmp_path / "in.csv"
    data.write_text(
        "timestamp,value\n" + "".join(f"{a:.0f},{b:.4f}\n" for a, b in zip(t, v, strict=True))
    )
    rule = {"alert": "A", "source": "f", "selector": "value", "retrain": {"every": "1d"}}
    (tmp_path / "rules.yaml").write_text(json.dumps({"groups": [{"name": "g", "rules": [rule]}]}))
    receivers = [{"name": "file", "jsonl_configs": [{"path": "notified.jsonl"}]}]
    (tmp_path / "alerting.yaml").write_text(
        json.dumps({"route": {"receiver": "file"}, "receivers": receivers})
    )
    config = {
        "sources": {"f": {"type": "file", "path": str(data), "batch_size": 50}},
        "state": {"dir": "state", "checkpoint_interval": "1h"},
        "rule_files": ["rules.yaml"],
        "alerting_file": "alerting.yaml",
    }
    (tmp_path / "aiops.yaml").write_text(json.dumps(config))
    loaded = load_config(tmp_path / "aiops.yaml")
    state = loaded.daemon.state.dir
    first = build_daemon(loaded, state_dir=state)
    first.run(threading.Event(), until_exhausted=True)
    assert (state / "models" / rule_dirname(RULE) / CARRY_FILE).is_file()
    second = build_daemon(loaded, state_dir=state)
    second.start()
    try:
        r = second.retraining.retrainers[RULE]  # type: ignore[union-attr]
        _, ts, vs = ring(r)
        np.testing.assert_array_equal(ts, t)
        np.testing.assert_allclose(vs, v, atol=1e-4)  # the CSV's 4 decimals
    finally:
        second.shutdown()


def test_the_drift_checks_are_carried_over_signed_and_detect_right_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiops.config.models import Drift
    from aiops.state.envelope import HMAC_KEY_ENV

    drift = Drift(on=("input",))
    shift = 2 * 1440
    t, v = series(3 * 1440, shift_at=shift)

    def harness(state: Any = None) -> Harness:
        if state is None:
            return Harness(tmp_path, RETRAIN, drift)
        return Restarted(tmp_path, state, RETRAIN, drift)

    h = harness()
    h.feed(t[:shift], v[:shift])  # two quiet days: the input check has its baseline
    before = h.retrainer.drift
    assert before is not None
    saved = repr({k: x for k, x in before.state_dict().items() if k != "detectors_hmac"})
    again = harness(stop(h))
    monitor = again.retrainer.drift
    assert monitor is not None
    assert repr({k: x for k, x in monitor.state_dict().items() if k != "detectors_hmac"}) == saved
    again.feed(t[shift:], v[shift:])  # the level shift right after the restart is reported
    first = next(a for a in again.info if a.labels["alertname"] == "ModelDrift")
    assert T0 + shift * MIN < first.starts_at <= T0 + (shift + 30) * MIN

    # A tampered signature: the checks start afresh (nothing unpickled), the ring is kept.
    state = stop(again)
    carried = tmp_path / "models" / rule_dirname(RULE) / CARRY_FILE
    doc = loads(unseal(carried.read_bytes(), kind=CARRY_KIND)[1])
    doc["drift"]["detectors_hmac"] = "0" * 64
    carried.write_bytes(seal(dumps(doc), kind=CARRY_KIND))
    third = harness(state)
    assert third.retrainer.drift is None
    assert len(third.retrainer.history or ()) > 0
    # Without a signing key the drift checks are not carried (the ring still is).
    monkeypatch.delenv(HMAC_KEY_ENV)
    third.feed(t[-5:] + 5 * MIN, v[-5:])
    fourth = harness(stop(third))
    assert fourth.retrainer.drift is None
    assert len(fourth.retrainer.history or ()) > 0
