"""Drift checks and retraining: detection, candidate, shadow, promotion, rollback, pins."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aiops.alerting.notify import Alert
from aiops.alerting.routing import RouteNode, SilenceWindow
from aiops.alerting.selector import Matcher
from aiops.config.models import Drift, Retrain, TimeInterval
from aiops.models.drift import DriftMonitor
from aiops.models.lifecycle import ModelLifecycle
from aiops.models.registry import ModelRegistry
from aiops.models.retrain import History, InlineExecutor, Retrainer, Retraining, Schedule
from aiops.pipeline.engine import Engine, RuleRuntime, RuleSpec
from aiops.types import Batch, SeriesKey

RULE = "g/A"
KEY = SeriesKey.of("latency", {"host": "a"})
#: 2026-01-05 00:00:00 UTC, a Monday.
T0 = datetime(2026, 1, 5, tzinfo=UTC).timestamp()
MIN = 60.0
DAY = 86400.0


def spec() -> RuleSpec:
    return RuleSpec(
        group="g",
        alert="A",
        source="s",
        matches=lambda k: True,
        detector_type="ewma_z",
        labels={"team": "db", "severity": "page"},
    )


def series(minutes: int, *, shift_at: int | None = None, seed: int = 7) -> tuple[Any, Any]:
    """One point a minute from T0: level 10, sd 1; +8 from ``shift_at`` on."""
    rng = np.random.default_rng(seed)
    t = T0 + np.arange(minutes) * MIN
    v = 10 + rng.normal(0, 1, minutes)
    if shift_at is not None:
        v[shift_at:] += 8
    return t, v


class Harness:
    """An engine of one rule with a real registry and lifecycle, and retraining inline."""

    def __init__(
        self,
        tmp_path: Path,
        retrain: Retrain | None,
        drift: Drift | None = None,
        router: Any = None,
        executor: Any = None,
    ) -> None:
        self.engine = Engine([spec()])
        self.models = ModelLifecycle(ModelRegistry(tmp_path / "models"), lock_timeout=0.0)
        self.models.start(self.engine)
        self.retraining = Retraining(
            {RULE: (retrain, drift)},
            models=self.models,
            router=router,
            executor=executor or InlineExecutor(),
        )
        self.retraining.start(self.engine)
        self.info: list[Alert] = []

    @property
    def rt(self) -> RuleRuntime:
        return self.engine.rules[RULE]

    @property
    def retrainer(self) -> Retrainer:
        return self.retraining.retrainers[RULE]

    @property
    def registry(self) -> ModelRegistry:
        return self.models.registry

    def feed(self, t: Any, v: Any, *, per_batch: int = 5) -> None:
        for lo in range(0, len(t), per_batch):
            hi = min(len(t), lo + per_batch)
            b = Batch(
                keys=[KEY],
                series=np.zeros(hi - lo, dtype=np.int64),
                timestamps=t[lo:hi],
                values=v[lo:hi],
            )
            self.engine.process("s", b)
            self.info += self.retraining.after_batch(self.engine, float(t[hi - 1]))


def test_level_shift_drift_retrain_shadow_promote(tmp_path: Path) -> None:
    shift = 2 * 1440  # two quiet days, then the level moves up by 8 sd
    t, v = series(3 * 1440, shift_at=shift)
    h = Harness(
        tmp_path,
        Retrain(window=DAY, on_drift=True, shadow=3600.0, watch=3600.0),
        Drift(on=("input",)),
    )
    h.feed(t, v)
    out = h.retrainer.outcome
    drift_alerts = [a for a in h.info if a.labels["alertname"] == "ModelDrift"]
    assert drift_alerts, "no drift reported"
    first = drift_alerts[0]
    shifted = T0 + shift * MIN
    # Bounded delay: 5-minute buckets, ADWIN at clock 1; measured 20 minutes on this seed.
    assert shifted < first.starts_at <= shifted + 30 * MIN
    assert first.status == "firing"
    assert first.labels["severity"] == "info"  # the rule's "page" is not inherited
    assert first.labels["team"] == "db"  # but its routing labels are
    assert first.labels["rule"] == RULE
    assert "drift in its input values" in first.annotations["description"]
    # Resolved an hour of data later, with the same fingerprint.
    resolved = [a for a in h.info if a.fingerprint == first.fingerprint and a.status == "resolved"]
    assert resolved
    assert resolved[0].ends_at == first.starts_at + 3600.0

    assert out.trainings >= 1
    assert out.promoted >= 1
    versions = h.registry.versions(RULE)
    assert [v.trigger for v in versions][:2] == ["initial", "drift"]
    v2 = versions[1]
    assert v2.parent == 1
    assert v2.rule_hash == h.rt.spec.model_hash()
    assert v2.training_window is not None
    lo, hi = v2.training_window
    assert lo == hi - DAY
    assert hi <= first.starts_at
    assert lo >= first.starts_at - DAY
    assert v2.points_seen == int(((t >= first.starts_at - DAY) & (t <= hi)).sum())
    shadow = v2.evaluation["shadow"]
    assert shadow["to"] - shadow["from"] >= 3600.0
    assert shadow["points"] >= 60
    assert set(shadow) >= {"current_alert_rate", "candidate_alert_rate"}
    assert v2.evaluation["check"]["passed"] is True
    assert v2.params["detector"] == "ewma_z"
    assert "drift in its input values" in v2.note
    promoted = [e for e in h.registry.history(RULE) if e["event"] == "promoted"]
    assert promoted[1]["version"] == 2
    assert promoted[1]["automatic"] is True
    assert h.rt.model_version == h.registry.promoted(RULE)


def test_shadow_scores_the_candidate_and_the_promoted_model_is_it(tmp_path: Path) -> None:
    """The promoted state is the candidate's after training and shadow, not the live one's."""
    t, v = series(2 * 1440 + 180)
    h = Harness(tmp_path, Retrain(every=DAY, window=DAY, shadow=3600.0))
    h.feed(t[: 2 * 1440 + 30], v[: 2 * 1440 + 30])
    assert h.retrainer.phase == "shadow"
    candidate = h.retrainer._shadow.candidate  # type: ignore[union-attr]
    live_before = h.rt.detector
    k = 2 * 1440 + 30
    while h.retrainer.outcome.promoted < 2:  # up to the batch that ends the shadow
        h.feed(t[k : k + 5], v[k : k + 5])
        k += 5
    assert h.retrainer.outcome.promoted == 2  # day 1 and day 2
    # Triggered by the batch that crossed midnight (its last point, minute 2884), trained
    # inline and shadowed from there for an hour: decided by the batch ending at 2944.
    assert k == 2945
    assert h.rt.detector is not live_before
    # The rule now runs the candidate's state: both score the next points alike.
    probe_t = np.array([t[-1] + MIN])
    probe_v = np.array([14.0])
    idx = np.zeros(1, dtype=np.int64)
    assert h.rt.detector.score(idx, probe_t, probe_v) == pytest.approx(
        candidate.score(idx, probe_t, probe_v)
    )


def test_cron_schedule_fires_on_its_data_time_clock() -> None:
    s = Schedule(cron="30 3 * * *")
    assert not s.due(T0)  # the first look sets the next fire time
    assert s.next_at == T0 + 3.5 * 3600
    assert not s.due(T0 + 3.5 * 3600 - 1)
    assert s.due(T0 + 3.5 * 3600)
    assert not s.due(T0 + 3.5 * 3600 + 60)
    assert s.next_at == T0 + DAY + 3.5 * 3600
    # A jump of three days (a backfill) fires once, then waits for the next 03:30.
    assert s.due(T0 + 4 * DAY)
    assert not s.due(T0 + 4 * DAY + 1)
    assert s.next_at == T0 + 4 * DAY + 3.5 * 3600
    weekly = Schedule(cron="0 6 * * sat")
    weekly.due(T0)
    assert datetime.fromtimestamp(weekly.next_at, UTC) == datetime(2026, 1, 10, 6, tzinfo=UTC)
    every = Schedule(every=6 * 3600)
    every.due(T0 + 100)
    assert every.next_at == T0 + 6 * 3600  # multiples since the epoch
    never = Schedule()
    assert not never.due(T0)
    assert not never.due(T0 + 10 * DAY)


def test_scheduled_retrain_fires_on_its_cron(tmp_path: Path) -> None:
    t, v = series(6 * 60)  # 00:00 to 06:00
    h = Harness(tmp_path, Retrain(cron="30 3 * * *", window=DAY, shadow=1800.0))
    h.feed(t[: 3 * 60 + 29], v[: 3 * 60 + 29], per_batch=1)
    assert h.retrainer.outcome.trainings == 0
    h.feed(t[3 * 60 + 29 :], v[3 * 60 + 29 :], per_batch=1)
    out = h.retrainer.outcome
    assert out.trainings == 1
    assert out.promoted == 1
    v2 = h.registry.versions(RULE)[-1]
    assert v2.trigger == "scheduled"
    assert v2.training_window == (T0, T0 + 3.5 * 3600)
    assert v2.points_seen == 3 * 60 + 31
    assert v2.evaluation["shadow"]["from"] == T0 + 3.5 * 3600


def test_exploding_alert_rate_after_promotion_rolls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    t, v = series(1440 + 3 * 60)
    h = Harness(tmp_path, Retrain(every=DAY, window=DAY, shadow=1800.0, watch=3600.0))
    h.feed(t[: 1440 + 40], v[: 1440 + 40])  # retrain at midnight, 30 minutes of shadow
    assert h.registry.promoted(RULE) == 2
    assert h.retrainer.phase == "watch"
    # A deliberately broken promoted model: every point scores at the top.
    broken = h.rt.detector
    real_score = broken.score
    broken.score = lambda i, ts, vs: np.maximum(real_score(i, ts, vs), 0.99999)  # type: ignore[method-assign]
    previous = h.retrainer._watch.previous  # type: ignore[union-attr]
    k = 1440 + 40
    with caplog.at_level(logging.WARNING, logger="aiops.models"):
        while h.retrainer.outcome.rolled_back == 0 and k < len(t):
            h.feed(t[k : k + 5], v[k : k + 5])
            k += 5
    out = h.retrainer.outcome
    assert out.rolled_back == 1
    assert "rule g/A: version 2 rolled back because its alert rate over" in caplog.text
    assert h.registry.promoted(RULE) == 1
    assert h.rt.model_version == 1
    last = [e for e in h.registry.history(RULE) if e["event"] == "rolled back"][-1]
    assert last["version"] == 1
    assert last["reason"].startswith("rolled back because its alert rate over 1h")
    assert last["automatic"] is True
    notes = [a for a in h.info if a.labels["alertname"] == "ModelRolledBack"]
    assert notes[0].status == "firing"
    assert "version 2 rolled back because" in notes[0].annotations["description"]
    # The rule runs the previous model as it learned on during the watch.
    assert h.rt.detector is not broken
    probe = (np.zeros(1, dtype=np.int64), np.array([t[k - 1] + MIN]), np.array([13.0]))
    assert h.rt.detector.score(*probe) == pytest.approx(previous.score(*probe))


def test_pinned_version_is_never_replaced(tmp_path: Path) -> None:
    t, v = series(2 * 1440 + 60)
    h = Harness(tmp_path, Retrain(every=DAY, window=DAY, shadow=1800.0))
    h.registry.pin(RULE, 1, reason="test")
    h.feed(t, v)
    out = h.retrainer.outcome
    assert out.trainings == 0
    assert out.skipped == 2
    assert [mv.version for mv in h.registry.versions(RULE)] == [1]
    assert h.registry.promoted(RULE) == 1


def test_pin_during_shadow_blocks_the_promotion(tmp_path: Path) -> None:
    t, v = series(1440 + 60)
    h = Harness(tmp_path, Retrain(every=DAY, window=DAY, shadow=1800.0))
    h.feed(t[: 1440 + 5], v[: 1440 + 5])
    assert h.retrainer.phase == "shadow"
    h.registry.pin(RULE, 1, reason="freeze")
    h.feed(t[1440 + 5 :], v[1440 + 5 :])
    assert h.retrainer.outcome.promoted == 0
    assert h.registry.promoted(RULE) == 1


def test_candidate_failing_the_promotion_check_is_recorded_not_promoted(tmp_path: Path) -> None:
    t, v = series(1440 + 60)
    # At most half the current model's hits (+1 each): two quiet models cannot pass.
    h = Harness(tmp_path, Retrain(every=DAY, window=DAY, shadow=1800.0, max_alert_rate_ratio=0.5))
    h.feed(t, v)
    assert h.retrainer.outcome.rejected == 1
    assert h.registry.promoted(RULE) == 1
    event = next(e for e in h.registry.history(RULE) if e["event"] == "candidate rejected")
    assert "more than 0.5 x the current model's" in event["reason"]
    assert event["shadow"]["points"] >= 30


def test_silences_and_maintenance_windows_stay_out_of_training(tmp_path: Path) -> None:
    t, v = series(1440 + 60)
    silence = SilenceWindow((Matcher("host", "=", "a"),), T0 + 3600, T0 + 3 * 3600)
    other = SilenceWindow((Matcher("host", "=", "b"),), T0, T0 + DAY)
    nightly = {"times": [{"start_time": "20:00", "end_time": "21:00"}]}
    maintenance = TimeInterval.model_validate({"name": "nightly", "time_intervals": [nightly]})

    class Router:  # what the retrainer reads of the daemon's router (Groups)
        def __init__(self) -> None:
            self.silences = [silence, other]
            self.root = RouteNode("default", mute_during=(maintenance,))

    h = Harness(tmp_path, Retrain(every=DAY, window=DAY, shadow=1800.0), router=Router())
    h.feed(t, v)
    v2 = h.registry.versions(RULE)[1]
    # A day and one point (00:00 to 24:00), less 2 h silenced and 1 h of maintenance.
    assert v2.points_seen == 1441 - 120 - 60
    event = [e for e in h.registry.history(RULE) if e["event"] == "promoted"][-1]
    assert event["version"] == 2


def test_drift_sample_follows_the_lowest_hashes_whatever_the_order() -> None:
    keys = [SeriesKey.of("cpu", {"host": f"h{i}"}) for i in range(300)]
    lowest = sorted(keys, key=lambda k: int(k.series_id, 16))[:8]
    for order in (keys, keys[::-1]):
        m = DriftMonitor(RULE, Drift(sample=8, on=("input",)), threshold=0.998, keys=order)
        n = len(order)
        m.observe(np.arange(n), np.full(n, T0), np.ones(n), np.zeros(n))
        assert {order[i] for i in m.followed} == set(lowest)


def test_drift_on_score_and_alert_rate_and_cooldown() -> None:
    rng = np.random.default_rng(3)
    n = 2000
    t = T0 + np.arange(n) * MIN
    scores = rng.uniform(0, 0.9, n)
    scores[1000:] = 0.9995  # every point a hit from minute 1000 on
    m = DriftMonitor(
        RULE, Drift(on=("score", "alert_rate"), cooldown=DAY), threshold=0.998, keys=[KEY]
    )
    events = []
    for lo in range(0, n, 50):
        sl = slice(lo, lo + 50)
        events += m.observe(np.zeros(50, dtype=np.int64), t[sl], np.ones(50), scores[sl])
    assert {e.signal for e in events} == {"score", "alert_rate"}
    # On a signal in [0, 1] ADWIN needs 10-25 buckets after a change (the 1/n term of its
    # bound): with 5-minute buckets, 1-2 hours; measured 65 min (alert rate), 110 (score).
    for e in events:
        assert T0 + 1000 * MIN < e.at <= T0 + 1150 * MIN
    # One event per signal within the cooldown, however often river fires.
    assert len(events) == 2


def test_history_ring_keeps_the_last_points() -> None:
    hist = History(5)
    hist.append(np.arange(3), np.arange(3.0), np.arange(3.0))
    hist.append(np.arange(4), np.arange(3.0, 7.0), np.arange(3.0, 7.0))
    _, ts, _ = hist.since_mark(0)
    assert ts.tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert hist.since_mark(5)[1].tolist() == [5.0, 6.0]
    assert hist.between(3.0, 5.0)[1].tolist() == [3.0, 4.0, 5.0]
    hist.append(np.arange(12), np.arange(10.0, 22.0), np.arange(12.0))
    assert hist.since_mark(0)[1].tolist() == [17.0, 18.0, 19.0, 20.0, 21.0]
    assert hist.count == 19


def test_daemon_drift_notifies_info_through_the_outbox_and_retrains(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A whole daemon: CSV with a level shift -> drift -> metric, log line, info alert
    delivered, retrain, new version whose meta.json on disk says what it is."""
    import hashlib
    import json
    import logging
    import threading

    from prometheus_client import generate_latest

    from aiops.config import load_config
    from aiops.service.app import build_daemon
    from aiops.service.metrics import PrometheusMetrics

    t, v = series(3 * 1440, shift_at=2 * 1440)  # a day of baseline for the input check
    data = tmp_path / "in.csv"
    data.write_text(
        "timestamp,value\n" + "".join(f"{a:.0f},{b:.4f}\n" for a, b in zip(t, v, strict=True))
    )
    rule = {
        "alert": "Latency",
        "source": "f",
        "selector": "value",
        "labels": {"team": "db"},
        "drift": {"on": ["input"]},
        "retrain": {"window": "1d", "on_drift": True, "shadow": "30m", "watch": "1h"},
    }
    (tmp_path / "rules.yaml").write_text(json.dumps({"groups": [{"name": "g", "rules": [rule]}]}))
    route = {"receiver": "file", "group_wait": "0s", "group_by": ["alertname", "rule"]}
    receivers = [{"name": "file", "jsonl_configs": [{"path": "notified.jsonl"}]}]
    (tmp_path / "alerting.yaml").write_text(json.dumps({"route": route, "receivers": receivers}))
    config = {
        "sources": {"f": {"type": "file", "path": str(data), "batch_size": 10}},
        "state": {"dir": "state", "checkpoint_interval": "1h"},
        "http": {"listen": "127.0.0.1:0"},
        "rule_files": ["rules.yaml"],
        "alerting_file": "alerting.yaml",
    }
    (tmp_path / "aiops.yaml").write_text(json.dumps(config))
    loaded = load_config(tmp_path / "aiops.yaml")
    state = loaded.daemon.state.dir
    daemon = build_daemon(loaded, state_dir=state)
    assert isinstance(daemon.retraining, Retraining)
    # Trainings inline: a replay this fast would end before a worker thread's result.
    daemon.retraining.executor = InlineExecutor()
    with caplog.at_level(logging.WARNING, logger="aiops.models"):
        daemon.run(threading.Event(), until_exhausted=True)
    logged = [r for r in caplog.records if "drift in its input values" in r.getMessage()]
    assert logged
    assert logged[0].levelno == logging.WARNING
    assert logged[0].getMessage().startswith("rule g/Latency: drift in its input values of")
    lines = [json.loads(x) for x in (state / "notified.jsonl").read_text().splitlines()]
    drift = [
        a
        for n in lines
        for a in n["alerts"]
        if a["labels"].get("alertname") == "ModelDrift" and a["status"] == "firing"
    ]
    assert drift, "no ModelDrift notification delivered"
    assert drift[0]["labels"]["severity"] == "info"
    assert drift[0]["labels"]["rule"] == "g/Latency"
    assert drift[0]["labels"]["team"] == "db"
    registry = ModelRegistry(state / "models")
    triggers = [mv.trigger for mv in registry.versions("g/Latency")]
    assert triggers[:2] == ["initial", "drift"]
    assert registry.promoted("g/Latency") == len(triggers)
    assert isinstance(daemon.metrics, PrometheusMetrics)
    text = generate_latest(daemon.metrics.registry).decode()
    assert 'aiops_drift_detected_total{rule="g/Latency",signal="input"}' in text
    assert 'aiops_model_retrains_total{outcome="promoted",rule="g/Latency",trigger="drift"}' in text
    # The drift-retrained version as written on disk.
    v2 = registry.versions("g/Latency")[1]
    meta = json.loads((Path(v2.path) / "meta.json").read_text())
    assert (meta["version"], meta["parent"], meta["trigger"]) == (2, 1, "drift")
    assert meta["created"] > 0
    lo, hi = meta["training_window"]
    assert hi - lo <= DAY
    assert lo >= T0
    assert hi < T0 + 2 * DAY + 60 * MIN  # before the drift report, an hour after the shift
    assert meta["points_seen"] == int(((t >= lo) & (t <= hi)).sum())
    rules_file = tmp_path / "rules.yaml"
    assert meta["rule_file"] == str(rules_file)
    assert meta["rule_file_hash"] == hashlib.sha256(rules_file.read_bytes()).hexdigest()
    assert meta["rule_hash"] == daemon.engine.rules["g/Latency"].spec.model_hash()
    assert meta["params"]["detector"] == "ensemble"  # the default, with its defaults
    assert meta["params"]["detector_params"]
    assert {"aiopsd", "numpy", "river"} <= set(meta["versions"])
    assert meta["evaluation"]["check"]["passed"] is True
    assert meta["evaluation"]["shadow"]["points"] >= 30


@pytest.mark.servers
def test_a_prometheus_rule_trains_on_the_range_queries_of_its_source(
    prometheus_server: Any, tmp_path: Path
) -> None:
    """The history ring holds a few points; the candidate learns a day from Prometheus."""
    import math
    import time

    from servers import HistorySeries

    from aiops.connectors.sources.prometheus import PrometheusSource

    step = 60.0
    now = math.floor(time.time() / step) * step
    start = now - DAY
    rng = np.random.default_rng(5)
    times = np.arange(start, now + step / 2, step)
    hist = [
        HistorySeries(
            "lat",
            {"host": h},
            list(zip(times.tolist(), (lvl + rng.normal(0, 1, len(times))).tolist(), strict=True)),
        )
        for h, lvl in (("a", 10.0), ("b", 20.0))
    ]
    prom = prometheus_server(history=hist)
    src = PrometheusSource("prom", PrometheusSource.Config(url=prom.url))
    query = "lat"
    s = RuleSpec("g", "A", "prom", lambda k: True, selector_text=query)
    engine = Engine([s])
    models = ModelLifecycle(ModelRegistry(tmp_path / "models"), lock_timeout=0.0)
    models.start(engine)
    r = Retraining(
        {RULE: (Retrain(window=DAY, shadow=600.0), None)},
        models=models,
        sources={"prom": src},
        steps={RULE: step},
        executor=InlineExecutor(),
    )
    r.start(engine)
    rt = engine.rules[RULE]
    live = src.fetch_history(query, now - 10 * step, now, step)  # the last ten minutes, live
    engine.process("prom", live)
    retrainer = r.retrainers[RULE]
    assert retrainer.history is not None
    assert len(retrainer.history) == 22  # what the ring holds: ten minutes, two series
    assert retrainer.trigger(rt, "manual", now)
    expected = 2 * len(times)  # a day and one point of both series, from Prometheus
    # Shadow on ten more (synthetic) minutes of both series, then promotion.
    for k in range(1, 12):
        b = Batch(
            keys=live.keys,
            series=np.arange(2, dtype=np.int64),
            timestamps=np.full(2, now + k * step),
            values=np.array([10.0, 20.0]) + rng.normal(0, 1, 2),
        )
        engine.process("prom", b)
    mv = models.registry.versions(RULE)[-1]
    assert mv.trigger == "manual"
    assert mv.points_seen == expected
    assert mv.training_window == (start, now)
    src.close()


def test_training_on_a_worker_thread_catches_up_before_its_shadow(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    t, v = series(1440 + 120)
    with ThreadPoolExecutor(max_workers=1) as pool:
        h = Harness(tmp_path, Retrain(every=DAY, window=DAY, shadow=1800.0), executor=pool)
        h.feed(t[: 1440 + 5], v[: 1440 + 5])  # the retrain starts at midnight
        training = h.retrainer._training
        if training is not None:  # still running on the worker: the rule scores on
            assert h.retrainer.phase == "training"
            training.future.result(timeout=30)
        h.feed(t[1440 + 5 : 1440 + 20], v[1440 + 5 : 1440 + 20])
        assert h.retrainer.phase == "shadow"
        h.feed(t[1440 + 20 :], v[1440 + 20 :])
    assert h.retrainer.outcome.promoted == 1
    mv = h.registry.versions(RULE)[-1]
    assert mv.trigger == "scheduled"
    assert mv.points_seen == 1441


def test_eval_labelled_replays_with_the_retrain_policy(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from aiops.cli import cli

    data = tmp_path / "kpi"
    data.mkdir()
    for seed in (1, 2):
        t, v = series(3 * 1440, seed=seed)
        labels = np.zeros(len(t), dtype=int)
        v[2000:2005] += 12
        labels[2000:2005] = 1
        rows = "".join(f"{a:.0f},{b:.4f},{c}\n" for a, b, c in zip(t, v, labels, strict=True))
        (data / f"s{seed}.csv").write_text("timestamp,value,label\n" + rows)
    run = CliRunner().invoke(
        cli,
        [
            "eval",
            "labelled",
            "--data",
            str(data),
            "--no-progress",
            "--retrain-every",
            "1d",
            "--retrain-window",
            "1d",
            "--retrain-option",
            "shadow=30m",
        ],
        catch_exceptions=False,
    )
    assert run.exit_code == 0, run.output
    line = next(x for x in run.output.splitlines() if x.startswith("Retraining:"))
    assert line.startswith(
        "Retraining: every 1d on the last 1d (shadow 30m, max alert rate ratio 2)"
    )
    assert "4 trainings, 4 promoted" in line  # two midnights in each of two series
    bad = CliRunner().invoke(
        cli, ["eval", "labelled", "--data", str(data), "--retrain-cron", "61 * * * *"]
    )
    assert bad.exit_code == 2
    assert "invalid cron expression" in bad.output


def test_a_reload_reconfigures_keeps_unchanged_retrainers_and_detaches_removed(
    tmp_path: Path,
) -> None:
    from aiops.pipeline.engine import NO_OBSERVER

    t, v = series(120)
    h = Harness(tmp_path, Retrain(every=DAY))
    h.feed(t[:60], v[:60])
    first = h.retrainer
    assert first.history is not None
    assert len(first.history) == 60
    h.retraining.reconfigure({RULE: (Retrain(every=DAY), None)})  # the same settings
    h.feed(t[60:90], v[60:90])
    assert h.retrainer is first
    assert len(first.history) == 90
    h.retraining.reconfigure({RULE: (Retrain(every=DAY, window=DAY), Drift())})  # changed
    h.feed(t[90:100], v[90:100])
    assert h.retrainer is not first
    assert h.rt.observer is h.retrainer
    h.retraining.reconfigure({})  # retrain: and drift: removed from the rule
    h.feed(t[100:], v[100:])
    assert h.retraining.retrainers == {}
    assert h.rt.observer is NO_OBSERVER


def test_a_history_too_short_for_the_warm_up_is_not_trained_on(tmp_path: Path) -> None:
    """100 series in a 1,000-point ring: 10 points each, below ewma_z's warm-up of 100."""
    keys = [SeriesKey.of("latency", {"host": f"h{i}"}) for i in range(100)]
    h = Harness(tmp_path, Retrain(every=DAY, window=DAY, max_points=1000))
    rng = np.random.default_rng(1)
    for m in range(1440 + 5):
        b = Batch(
            keys=keys,
            series=np.arange(100, dtype=np.int64),
            timestamps=np.full(100, T0 + m * MIN),
            values=10 + rng.normal(0, 1, 100),
        )
        h.engine.process("s", b)
    out = h.retrainer.outcome
    assert out.trainings == 1
    assert out.skipped == 1
    assert out.promoted == 0
    assert h.registry.promoted(RULE) == 1


def test_a_replay_with_on_drift_checks_with_the_default_drift_settings() -> None:
    from aiops.models.retrain import replay_retrained

    t, v = series(3 * 1440, shift_at=2 * 1440)  # a day of baseline for the input check
    scored, outcome = replay_retrained(t, v, retrain=Retrain(window=DAY, on_drift=True))
    assert len(scored.scores) == len(t)
    assert outcome.drifts >= 1
    assert outcome.trainings >= 1


def test_the_input_check_compares_with_the_day_before_so_a_daily_cycle_is_no_drift() -> None:
    rng = np.random.default_rng(5)
    n = 6 * 1440
    t = T0 + np.arange(n) * MIN
    cycle = 50 + 10 * np.sin(2 * np.pi * np.arange(n) / 1440) + rng.normal(0, 1, n)
    shifted = cycle.copy()
    shifted[4 * 1440 + 600 :] += 8  # day 5, 10:00: the level moves up by 8 sd

    def reports(v: np.ndarray, **settings: Any) -> list[float]:
        m = DriftMonitor(
            RULE, Drift(on=("input",), cooldown=0, **settings), threshold=0.998, keys=[KEY]
        )
        out = []
        for lo in range(0, n, 60):
            hi = lo + 60
            zeros = np.zeros(hi - lo, dtype=np.int64)
            out += [e.at for e in m.observe(zeros, t[lo:hi], v[lo:hi], np.zeros(hi - lo))]
        return out

    assert reports(cycle) == []
    assert len(reports(cycle, season=0)) >= 5  # raw values: the cycle itself drifts
    (at,) = reports(shifted)  # one report, none when the shifted hours come round again
    assert T0 + (4 * 1440 + 600) * MIN < at <= T0 + (4 * 1440 + 630) * MIN


@pytest.mark.parametrize("kind", ["adwin", "kswin", "page_hinkley"])
def test_each_river_detector_reports_a_level_shift_of_the_input_and_not_before(
    kind: str,
) -> None:
    shift = 1440 + 720  # a day of baseline, then half a day of the same level
    t, v = series(3 * 1440, shift_at=shift)
    m = DriftMonitor(
        RULE, Drift(detector=kind, on=("input",), cooldown=0), threshold=0.998, keys=[KEY]
    )
    reports: list[float] = []
    for lo in range(0, len(t), 60):
        hi = lo + 60
        zeros = np.zeros(hi - lo, dtype=np.int64)
        reports += [e.at for e in m.observe(zeros, t[lo:hi], v[lo:hi], np.zeros(hi - lo))]
    shifted = T0 + shift * MIN
    assert reports, f"{kind}: the level shift was not reported"
    assert all(at > shifted for at in reports), f"{kind}: reported before the shift"
    assert reports[0] <= shifted + 2 * 3600.0


def test_the_input_check_finds_the_same_drifts_whatever_the_batch_size() -> None:
    """One batch of six days (two shifts, and the hours of each a day later, inside it) or
    hour-long batches: the same detections, and the same baseline left behind."""
    rng = np.random.default_rng(5)
    n = 6 * 1440
    t = T0 + np.arange(n) * MIN
    v = 50 + 10 * np.sin(2 * np.pi * np.arange(n) / 1440) + rng.normal(0, 1, n)
    v[2 * 1440 + 600 :] += 8
    v[4 * 1440 + 300 :] -= 16  # a second shift, two days after the first

    def run(per_batch: int) -> tuple[list[float], int, np.ndarray]:
        m = DriftMonitor(RULE, Drift(on=("input",), cooldown=0), threshold=0.998, keys=[KEY])
        out = []
        for lo in range(0, n, per_batch):
            hi = min(n, lo + per_batch)
            zeros = np.zeros(hi - lo, dtype=np.int64)
            out += [e.at for e in m.observe(zeros, t[lo:hi], v[lo:hi], zeros * 0.0)]
        return out, m.detections["input"], m.state_dict()["baseline"]

    whole, found_whole, base_whole = run(n)
    hourly, found_hourly, base_hourly = run(60)
    # Each shift once, not again when its hours come round a day later.
    assert found_whole == found_hourly == 2
    assert len(hourly) == 2
    assert T0 + (2 * 1440 + 600) * MIN < hourly[0] <= T0 + (2 * 1440 + 630) * MIN
    assert T0 + (4 * 1440 + 300) * MIN < hourly[1] <= T0 + (4 * 1440 + 330) * MIN
    # One batch is one report of the series that drifted in it, at the first drift.
    assert whole == hourly[:1]
    np.testing.assert_array_equal(base_whole, base_hourly)


def test_a_drift_retrains_only_a_rule_that_asks_for_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    shift = 2 * 1440
    t, v = series(3 * 1440, shift_at=shift)
    h = Harness(tmp_path, Retrain(window=DAY, on_drift=False, shadow=3600.0), Drift(on=("input",)))
    with caplog.at_level(logging.WARNING, logger="aiops.models"):
        h.feed(t, v)
    out = h.retrainer.outcome
    assert out.drifts >= 1  # reported: counted, logged and notified ...
    assert "rule g/A: drift in its input values" in caplog.text
    assert [a for a in h.info if a.labels["alertname"] == "ModelDrift"]
    assert out.trainings == 0  # ... but not retrained on
    assert [mv.trigger for mv in h.registry.versions(RULE)] == ["initial"]


def test_history_forget_drops_a_series_points_and_marks_still_hold() -> None:
    hist = History(6)
    hist.append(np.array([0, 1, 0, 1]), np.arange(4.0), np.arange(4.0))
    mark = hist.count
    hist.append(np.array([0, 1]), np.array([4.0, 5.0]), np.array([4.0, 5.0]))
    hist.forget(np.array([0]))
    assert hist.since_mark(0)[0].tolist() == [1, 1, 1]
    assert hist.since_mark(0)[1].tolist() == [1.0, 3.0, 5.0]
    assert hist.since_mark(mark)[1].tolist() == [5.0]
    hist.append(np.array([0, 0]), np.array([6.0, 7.0]), np.array([6.0, 7.0]))  # a new series
    assert hist.since_mark(0)[1].tolist() == [3.0, 5.0, 6.0, 7.0]
    assert hist.between(5.0, 7.0)[0].tolist() == [1, 0, 0]


def test_a_reused_row_gets_no_history_nor_drift_state_of_the_forgotten_series() -> None:
    """Pod churn: p0 is forgotten and p2 takes its row; retraining and drift see p2 alone."""
    pods = [SeriesKey.of("latency", {"pod": f"p{i}"}) for i in range(3)]
    rule = RuleSpec(
        group="g",
        alert="A",
        source="s",
        matches=lambda k: True,
        detector_type="ewma_z",
        forget_seconds=600.0,
        max_series=2,
    )
    engine = Engine([rule])
    drift = Drift(on=("input",), sample=2, every=300.0, season=3600.0)
    retraining = Retraining(
        {RULE: (Retrain(every=DAY, max_points=1000), drift)}, executor=InlineExecutor()
    )
    retraining.start(engine)
    level = {0: 100.0, 1: 20.0, 2: 7.0}

    def feed(t: float, live: list[int]) -> None:
        b = Batch(
            keys=[pods[p] for p in live],
            series=np.arange(len(live)),
            timestamps=np.full(len(live), t),
            values=np.array([level[p] for p in live]),
        )
        engine.process("s", b)
        retraining.after_batch(engine, t)

    for m in range(120):  # two hours of p0 and p1: the drift baseline fills
        feed(T0 + m * MIN, [0, 1])
    for m in range(120, 140):  # p0 stops; forgotten 10 minutes after its last point
        feed(T0 + m * MIN, [1])
    for m in range(140, 200):  # p2 arrives and takes p0's row
        feed(T0 + m * MIN, [1, 2])
    rt = engine.rules[RULE]
    assert rt.registry.lookup(pods).tolist() == [-1, 1, 0]
    r = retraining.retrainers[RULE]
    assert r.history is not None
    idx, ts, vs = r.history.since_mark(0)
    assert vs[idx == 0].tolist() == [7.0] * 60  # p2's points only, none of p0's
    assert ts[idx == 0].min() == T0 + 140 * MIN
    assert set(vs[idx == 1].tolist()) == {20.0}
    m = r.drift
    assert m is not None
    assert sorted(m.followed) == [0, 1]  # p2 follows in p0's place, as a new series
    slot = int(m._slot_of[0])
    seen = m._baseline[slot][~np.isnan(m._baseline[slot])]
    assert set(seen.tolist()) == {7.0}  # a baseline of p2's, afresh
    assert 100.0 not in m._baseline


def test_a_drift_inside_one_long_batch_retrains_on_that_batch_up_to_the_drift(
    tmp_path: Path,
) -> None:
    """A replay's batch may hold days (a file source reads 5,000 lines at a time): the
    drift found inside it retrains on its points up to the drift, not on an empty ring."""
    n = 3 * 1440
    t, v = series(n + 120, shift_at=2 * 1440)
    h = Harness(tmp_path, Retrain(window=DAY, on_drift=True, shadow=3600.0), Drift(on=("input",)))
    h.feed(t[:n], v[:n], per_batch=n)  # three days in one batch
    out = h.retrainer.outcome
    assert (out.drifts, out.trainings, out.skipped) == (1, 1, 0)
    assert h.retrainer.phase == "shadow"
    h.feed(t[n:], v[n:])  # the shadow hour, then the promotion
    assert out.promoted == 1
    v2 = h.registry.versions(RULE)[-1]
    assert (v2.version, v2.trigger) == (2, "drift")
    assert v2.training_window is not None
    lo, hi = v2.training_window
    assert lo == hi - DAY
    shifted = T0 + 2 * DAY
    assert shifted < hi <= shifted + 30 * MIN  # up to the drift, not the batch's end
    assert v2.points_seen == int(((t >= hi - DAY) & (t <= hi)).sum())


def test_a_forgotten_row_of_a_candidate_in_shadow_is_reset_before_it_can_be_promoted(
    tmp_path: Path,
) -> None:
    t, v = series(2 * 1440 + 180)
    h = Harness(tmp_path, Retrain(every=DAY, window=DAY, shadow=3600.0))
    h.feed(t[: 2 * 1440 + 30], v[: 2 * 1440 + 30])
    assert h.retrainer.phase == "shadow"
    candidate = h.retrainer._shadow.candidate  # type: ignore[union-attr]
    assert np.asarray(candidate.state_dict()["n"])[0] > 0  # it learned KEY's history
    h.retrainer.forget(h.rt, np.array([0]))  # as the engine does when KEY is forgotten
    assert h.retrainer.phase == "shadow"
    assert np.asarray(candidate.state_dict()["n"])[0] == 0  # row 0 fresh for its next series
    assert len(h.retrainer.history) > 0
    assert len(h.retrainer.history.since_mark(0)[0]) == 0  # and its history points gone
