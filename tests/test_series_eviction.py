"""Series eviction: series that stop reporting are forgotten and their rows reused.

Pod churn under a cap: old pods are forgotten ``forget_after_stale`` after their last
point (their firing alerts resolved first), new pods are dropped and counted while the
cap is full and admitted once rows are freed, and a checkpoint taken in between gives
what an uninterrupted run gives. A series that comes back after being forgotten scores
exactly as a brand-new one.
"""

from __future__ import annotations

import numpy as np
import pytest

from aiops.config.models import DEFAULT_FORGET_AFTER_STALE, LimitsSettings, Rule, RuleGroup
from aiops.pipeline.engine import FORGET_CHECKS, RuleRuntime, RuleSpec
from aiops.pipeline.series import DROPPED, SeriesRegistry
from aiops.state.envelope import dumps, loads
from aiops.testing import ValueIsScore
from aiops.types import Batch, SeriesKey

PODS = [SeriesKey.of("latency", {"pod": f"p{i}"}) for i in range(6)]


def spec(**kw):
    base = dict(
        group="g",
        alert="A",
        source="s",
        matches=lambda k: True,
        threshold=0.9,
        stale_seconds=0.0,  # resolutions here come from forgetting alone
        forget_seconds=300.0,
        max_series=3,
    )
    base.update(kw)
    return RuleSpec(**base)


def runtime(**kw):
    rt = RuleRuntime(spec(**kw))
    rt.detector = ValueIsScore()
    return rt


def batch(points):
    """``points``: (pod, time, value) triples; the batch's keys are the pods in it."""
    s, t, v = zip(*points, strict=True)
    used = sorted(set(s))
    series = np.searchsorted(used, s)
    keys = [PODS[p] for p in used]
    return Batch(keys=keys, series=series, timestamps=np.array(t, float), values=np.array(v))


def churn():
    """p0-p2 report every minute until t=600 (p1 firing from t=540); then p3-p5 take over."""
    out = []
    for t in range(0, 660, 60):
        out.append(batch([(p, t, 1.0 if p == 1 and t >= 540 else 0.0) for p in range(3)]))
    for t in range(660, 1500, 60):
        out.append(batch([(p, t, 1.0 if p == 4 and t >= 1200 else 0.0) for p in range(3, 6)]))
    return out


def transitions(alerts):
    return [(a.labels["pod"], a.status, a.starts_at, a.ends_at) for a in alerts]


def run(rt, batches):
    return [tr for b in batches for tr in transitions(rt.process(b).alerts)]


def test_pod_churn_under_the_cap_forgets_old_pods_and_admits_new_ones():
    rt = runtime()
    data = churn()
    got = run(rt, data[:11])  # up to t=600: the old pods fill the cap
    assert got == [("p1", "firing", 540.0, None)]
    assert (rt.registry.live, rt.registry.dropped) == (3, 0)
    got = run(rt, data[11:15])  # t=660..840: the new pods are over the cap, counted once
    assert got == []
    assert rt.registry.dropped == 3
    assert rt.registry.live == 3
    # The old pods' last point was t=600: forgotten once the data reaches 900.
    got = run(rt, data[15:])
    assert got[0] == ("p1", "resolved", 540.0, 900.0)
    assert rt.registry.evicted == 3
    assert sorted(str(k) for k in rt.registry.keys) == [str(k) for k in PODS[3:]]
    assert len(rt.registry) == 3  # rows reused, not grown
    # p4 was admitted late but scored from then on: its incident fires.
    assert got[1:] == [("p4", "firing", 1200.0, None)]


def test_a_checkpoint_in_the_middle_of_churn_gives_the_uninterrupted_run():
    data = churn()
    uninterrupted = runtime()
    whole = run(uninterrupted, data)
    for cut in (11, 15, 16, 17, 20):
        first = runtime()
        before = run(first, data[:cut])
        again = runtime()
        again.load_state_dict(loads(dumps(first.state_dict())))
        assert before + run(again, data[cut:]) == whole, cut
        assert again.registry.keys == uninterrupted.registry.keys
        assert again.registry.evicted == uninterrupted.registry.evicted == 3


def test_a_series_that_comes_back_after_being_forgotten_starts_fresh():
    rng = np.random.default_rng(3)
    kw = dict(detector_type="ewma_z", detector_params={"warmup": 20}, max_series=10)
    rt = RuleRuntime(spec(**kw))
    ts = np.arange(200) * 60.0
    # p0 learns a level of 100 for 200 minutes, then stops; p1 goes on.
    rt.process(batch([(0, t, 100 + rng.normal()) for t in ts] + [(1, t, 5.0) for t in ts]))
    later = np.arange(200, 220) * 60.0
    rt.process(batch([(1, t, 5.0 + rng.normal()) for t in later]))
    assert rt.registry.evicted == 1
    assert rt.registry.lookup([PODS[0]]).tolist() == [-1]
    # It returns at another level: scored exactly as a series never seen before.
    back_t = np.arange(230, 260) * 60.0
    back_v = 20 + rng.normal(size=len(back_t))
    got = rt.process(batch(list(zip([0] * len(back_t), back_t, back_v, strict=True)))).scores
    fresh = RuleRuntime(spec(**kw))
    want = fresh.process(batch(list(zip([0] * len(back_t), back_t, back_v, strict=True)))).scores
    np.testing.assert_allclose(got, want)
    assert rt.registry.lookup([PODS[0]]).tolist() == [0]  # its old row, reset


def test_forgotten_rows_get_fresh_post_rule_state_and_windows():
    rt = runtime(min_hits=2, hits_window=3, max_series=1)
    run(rt, [batch([(0, 0.0, 0.95)])])  # one hit of p0
    rt.raise_threshold(0, 0.99)
    run(rt, [batch([(0, 60.0, 0.0)])])
    assert run(rt, [batch([(1, 400.0, 0.95)])]) == []  # over the cap; p0 forgotten
    assert (rt.registry.live, rt.registry.dropped, rt.registry.evicted) == (0, 1, 1)
    # p1 takes row 0: no hit history, no raised threshold, an empty window.
    assert run(rt, [batch([(1, 2000.0, 0.95)])]) == []
    assert rt.registry.lookup([PODS[1]]).tolist() == [0]
    assert rt.threshold_of(0) == 0.9
    assert rt._win_n[0] == 1
    assert run(rt, [batch([(1, 2060.0, 0.95)])]) == [("p1", "firing", 2060.0, None)]


def test_zero_turns_forgetting_off_and_the_check_is_periodic():
    rt = runtime(forget_seconds=0.0)
    run(rt, [batch([(0, 0.0, 0.0)]), batch([(1, 1e6, 0.0)])])
    assert rt.registry.evicted == 0
    rt = runtime()
    run(rt, [batch([(0, 0.0, 0.0), (1, 0.0, 0.0)])])  # a look at t=0 finds nothing
    run(rt, [batch([(1, 300.0, 0.0)])])  # the next look is due at 300 / FORGET_CHECKS
    assert rt.registry.evicted == 1
    run(rt, [batch([(1, 301.0, 0.0)])])  # not due again before 300 + 300 / FORGET_CHECKS
    assert rt._forget_check == 300.0 + 300.0 / FORGET_CHECKS


def test_a_detector_that_groups_series_by_key_retires_rows_instead():
    class Grouping(ValueIsScore):
        n = 0

        def score(self, idx, timestamps, values):
            self.n = max(self.n, int(np.max(idx, initial=-1)) + 1)
            return super().score(idx, timestamps, values)

        def bind_series(self, keys):
            self.n = max(self.n, len(keys))

        @property
        def n_series(self):
            return self.n

    rt = runtime(max_series=1)
    rt.detector = Grouping()
    run(rt, [batch([(0, 0.0, 0.0)]), batch([(1, 300.0, 0.0)])])
    assert rt.registry.dropped == 1
    assert rt.registry.evicted == 1
    run(rt, [batch([(1, 360.0, 0.0)])])
    assert rt.registry.lookup([PODS[1]]).tolist() == [1]  # a new row: row 0 is retired
    again = runtime(max_series=1)
    again.load_state_dict(loads(dumps(rt.state_dict())))
    assert again.registry.lookup([PODS[0], PODS[1]]).tolist() == [-1, 1]
    assert again.registry.resolve([PODS[2]]).tolist() == [DROPPED]


def test_registry_free_reuse_and_state_round_trip():
    reg = SeriesRegistry(lambda k: True, max_series=2)
    assert reg.resolve(PODS[:3]).tolist() == [0, 1, DROPPED]
    assert reg.free([1, 1, 5]) == 1
    assert reg.live == 1
    assert reg.resolve([PODS[2], PODS[1]]).tolist() == [1, DROPPED]  # p2 asked again
    assert reg.dropped == 2  # p2 once (not again when it got in), p1 now
    assert reg.take_reused() == [1]
    assert reg.take_reused() == []
    assert reg.free([0], reuse=False) == 1
    state = loads(dumps(reg.state_dict()))
    again = SeriesRegistry(lambda k: True, max_series=2)
    again.load_state_dict(state)
    assert again.lookup(PODS[:3]).tolist() == [-1, -1, 1]
    assert again.resolve([PODS[3]]).tolist() == [2]  # row 0 retired: a new row
    with pytest.raises(ValueError, match="twice"):
        again.load_state_dict({"keys": [["m", []], ["m", []]]})


def test_the_config_keys_and_their_defaults():
    assert LimitsSettings().forget_after_stale == DEFAULT_FORGET_AFTER_STALE == 900.0
    base = {"alert": "A", "source": "s", "selector": "up"}
    assert Rule.model_validate(base).forget_after_stale is None
    assert Rule.model_validate({**base, "forget_after_stale": "1h"}).forget_after_stale == 3600


def test_a_slow_query_group_forgets_after_three_evaluations_by_default():
    push = Rule.model_validate({"alert": "A", "source": "s", "selector": "up"})
    pull = Rule.model_validate({"alert": "B", "source": "p", "query": "up"})
    own = Rule.model_validate(
        {"alert": "C", "source": "p", "query": "up", "forget_after_stale": "1h"}
    )
    group = RuleGroup(name="g", interval=600.0, rules=(push, pull, own))
    assert group.forget_seconds(push, 900.0) == 900.0
    assert group.forget_seconds(pull, 900.0) == 1800.0  # 3 x 10m, not 15m
    assert group.forget_seconds(pull, 0.0) == 0.0
    assert group.forget_seconds(own, 900.0) == 3600.0
    assert RuleGroup(name="g", rules=(pull,)).forget_seconds(pull, 900.0) == 900.0


@pytest.mark.parametrize(
    ("source", "limits", "forget"),
    [
        ("{type: remote_write}", "", 900.0),
        (
            "{type: kafka, bootstrap_servers: 'k:9092', topics: [t], group_id: g,"
            " format: influx_line}",
            "",
            0.0,
        ),
        ("{type: file, path: x.csv}", "", 0.0),
        ("{type: file, path: x.csv}", "limits: {forget_after_stale: 15m}\n", 900.0),
    ],
)
def test_the_default_forgets_only_where_series_share_a_clock(tmp_path, source, limits, forget):
    """Kafka partitions read at different paces: a lagging one is behind, not gone."""
    from aiops.config import load_config
    from aiops.service.app import rule_specs

    (tmp_path / "rules.yaml").write_text(
        "groups:\n  - name: g\n    rules:\n      - {alert: A, source: s, selector: up}\n"
    )
    (tmp_path / "aiops.yaml").write_text(
        f"sources:\n  s: {source}\nrule_files: [rules.yaml]\n{limits}"
        + ("http: {listen: '127.0.0.1:0'}\n" if "remote_write" in source else "")
    )
    [spec] = rule_specs(load_config(tmp_path / "aiops.yaml"))
    assert spec.forget_seconds == forget


def pod_fleet():
    """Pods p0-p2 for 4 hours, then p3-p5 (a rollout), one point a minute; each
    generation has one incident (p1 at 2h, p4 at 6h), and a cap of 3 series."""
    rng = np.random.default_rng(11)
    out = []
    for minute in range(8 * 60):
        pods = range(3) if minute < 4 * 60 else range(3, 6)
        pts = []
        for p in pods:
            v = 100 + rng.normal()
            if (p == 1 and 120 <= minute < 125) or (p == 4 and 360 <= minute < 365):
                v += 30
            pts.append((p, minute * 60.0, v))
        out.append(batch(pts))
    return out


def churn_daemon(path, data, notifier):
    from aiops.alerting.routing import Dispatcher, RouteNode, Router
    from aiops.pipeline.engine import Engine
    from aiops.service.daemon import Daemon
    from aiops.state.checkpoint import Checkpointer
    from aiops.state.envelope import FileStateStore
    from aiops.testing import FakeClock, MemorySource

    rule = spec(
        source="mem",
        detector_type="ewma_z",
        detector_params={"warmup": 30},
        threshold=0.9999,
        stale_seconds=600.0,
        forget_seconds=900.0,
    )
    return Daemon(
        sources=lambda positions: {"mem": MemorySource(data, resume=positions.get("mem"))},
        engine=Engine([rule]),
        router=Router(RouteNode("r")),
        dispatcher=Dispatcher({"r": [notifier]}),
        checkpointer=Checkpointer(FileStateStore(path)),
        checkpoint_interval=1e9,
        clock=FakeClock(),
    )


def test_pod_churn_in_a_daemon_restarted_halfway_equals_an_uninterrupted_run(tmp_path):
    import threading

    from aiops.testing import ListNotifier

    def sent(notifier):
        return [(a.status, a.labels["pod"], a.starts_at) for n in notifier.sent for a in n.alerts]

    data = pod_fleet()
    whole = ListNotifier()
    d = churn_daemon(tmp_path / "a", data, whole)
    d.run(threading.Event())
    rt = d.engine.rules["g/A"]
    # The new pods got in once the old ones were forgotten, and their incident fired.
    assert sorted(p for _, p, _ in sent(whole)) == ["p1", "p1", "p4", "p4"]
    assert (rt.registry.evicted, rt.registry.live, len(rt.registry)) == (3, 3, 3)
    assert rt.registry.dropped == 3
    for cut in (4 * 60 + 5, 4 * 60 + 16):  # over the cap; just after the forgetting
        first, second = ListNotifier(), ListNotifier()
        d1 = churn_daemon(tmp_path / str(cut), data, first)
        d1.start()
        for _ in range(cut):
            d1.step()
        d1.shutdown()  # final checkpoint, as on SIGTERM
        churn_daemon(tmp_path / str(cut), data, second).run(threading.Event())
        assert sent(first) + sent(second) == sent(whole), cut


def test_a_model_saved_before_a_row_was_reused_loads_with_that_row_fresh():
    kw = dict(detector_type="ewma_z", detector_params={"warmup": 5}, max_series=2)
    rt = RuleRuntime(spec(**kw))
    ts = np.arange(50) * 60.0
    rt.process(batch([(p, t, 10.0 * (p + 1) + np.sin(t)) for t in ts for p in (0, 1)]))
    saved = loads(dumps(rt.model_state()))  # a model version, as the registry keeps it
    # p0 stops; p2 takes its row after it is forgotten; p1 goes on.
    later = np.arange(50, 80) * 60.0
    rt.process(batch([(1, t, 20.0) for t in later]))
    rt.process(batch([(2, 80 * 60.0, 7.0)]))
    assert rt.registry.lookup([PODS[0], PODS[1], PODS[2]]).tolist() == [-1, 1, 0]
    rt.load_model_state(saved)  # a rollback to that version
    n = np.asarray(rt.detector.state_dict()["n"])
    assert n[1] == np.asarray(saved["detector"]["n"])[1] == 50  # p1: what the model learned
    assert n[0] == 0  # row 0 is p2's now: nothing of p0's
    assert rt.registry.lookup([PODS[2]]).tolist() == [0]  # the rule's series list stays


def test_series_are_forgotten_by_their_rules_own_time_not_by_a_source_ahead():
    from aiops.pipeline.engine import Engine

    rt = runtime()
    engine = Engine([])
    engine.rules = {rt.spec.key: rt}
    run(rt, [batch([(0, 0.0, 0.0)])])
    # Another source is an hour ahead (this one reads a backlog): nothing is forgotten.
    assert engine.resolve_stale(3600.0) == []
    assert rt.registry.evicted == 0
    run(rt, [batch([(1, 300.0, 0.0)])])  # the rule's own data moves on: p0 goes
    assert rt.registry.evicted == 1


def test_a_model_saved_after_a_row_was_reused_gives_each_series_its_own_state():
    """Evict, reuse, save, churn again, load: a row's state goes only to its own series."""
    kw = dict(detector_type="ewma_z", detector_params={"warmup": 5}, max_series=2)
    rt = RuleRuntime(spec(**kw))
    ts = np.arange(50) * 60.0
    rt.process(batch([(p, t, 10.0 * (p + 1)) for t in ts for p in (0, 1)]))
    # p0 stops and is forgotten; p2 takes row 0 and learns 20 points of its own.
    rt.process(batch([(1, t, 20.0) for t in np.arange(50, 60) * 60.0]))
    rt.process(
        batch([(p, t, 7.0 if p == 2 else 20.0) for t in np.arange(60, 80) * 60.0 for p in (1, 2)])
    )
    assert rt.registry.lookup([PODS[0], PODS[1], PODS[2]]).tolist() == [-1, 1, 0]
    saved = loads(dumps(rt.model_state()))  # saved after the reuse: row 0 is p2's
    n_saved = np.asarray(saved["detector"]["n"])
    assert n_saved[0] == 20
    # Unchanged since: the model loads whole, p2 keeps what it learned.
    rt.load_model_state(saved)
    assert np.asarray(rt.detector.state_dict()["n"]).tolist()[:2] == n_saved.tolist()[:2]
    # p2 stops too; p3 takes row 0. The saved model's row 0 (p2's) must not go to p3.
    rt.process(batch([(1, t, 20.0) for t in np.arange(80, 90) * 60.0]))
    rt.process(batch([(3, 90 * 60.0, 5.0), (1, 90 * 60.0, 20.0)]))
    assert rt.registry.lookup([PODS[2], PODS[3]]).tolist() == [-1, 0]
    rt.load_model_state(saved)
    n = np.asarray(rt.detector.state_dict()["n"])
    assert n[0] == 0  # p3's row: fresh, nothing of p2's
    assert n[1] == n_saved[1]  # p1: what the model learned of it


def test_a_forgotten_pods_isolation_forest_entity_is_emptied_and_a_new_one_starts_fresh():
    """group_by [pod]: each gone pod kept a training window and a forest for ever."""
    kw = dict(
        detector_type="isolation_forest",
        detector_params={"group_by": ["pod"], "warmup": 20, "window": 40, "n_estimators": 10},
        max_series=10,
    )
    rt = RuleRuntime(spec(**kw))
    rng = np.random.default_rng(2)
    ts = np.arange(60) * 60.0
    rt.process(batch([(p, t, float(rng.normal())) for t in ts for p in (0, 1)]))
    det = rt.detector
    ents = {det._series_entity[i] for i in (0, 1)}
    assert all(det._entities[e].n_fits >= 1 for e in ents)
    assert det._entities[0].n_rows > 50  # p0's training rows, one a scrape
    # p0 stops and is forgotten (its row retired: the forest groups series by key).
    rt.process(batch([(1, t, float(rng.normal())) for t in np.arange(60, 70) * 60.0]))
    assert rt.registry.lookup([PODS[0]]).tolist() == [-1]
    gone = det._entities[0]
    assert (gone.n_rows, gone.n_fits, gone.n_learned, gone.model) == (0, 0, 0, None)
    assert gone.buf.size == 0
    assert det._series_entity[0] == -2
    kept = det._entities[det._series_entity[1]]
    assert kept.n_fits >= 1  # p1 untouched
    assert len(det.state_dict()["rows"]) == kept.n_rows  # p0's training rows are gone
    # The state round-trips; p0 coming back is a new series of a fresh entity.
    again = RuleRuntime(spec(**kw))
    again.load_state_dict(loads(dumps(rt.state_dict())))
    assert again.detector._series_entity[0] == -2
    again.process(batch([(0, 70 * 60.0, 1.0), (1, 70 * 60.0, 0.0)]))
    back = again.registry.lookup([PODS[0]]).tolist()[0]
    e = again.detector._series_entity[back]
    assert e == 0  # its group's entity, emptied: it learns from nothing
    assert again.detector._entities[e].n_learned == 0
    assert again.detector._entities[e].n_features == 1


def test_an_ensembles_isolation_forest_member_is_told_of_retired_rows_too():
    forest = {"type": "isolation_forest", "params": {"group_by": ["pod"], "warmup": 20}}
    kw = dict(
        detector_type="ensemble",
        detector_params={"members": [{"type": "ewma_z"}, forest]},
        max_series=10,
    )
    rt = RuleRuntime(spec(**kw))
    rng = np.random.default_rng(3)
    rt.process(batch([(p, t, float(rng.normal())) for t in np.arange(40) * 60.0 for p in (0, 1)]))
    member = rt.detector._members[1]
    assert member._entities[0].n_rows > 20
    rt.process(batch([(1, t, float(rng.normal())) for t in np.arange(40, 50) * 60.0]))
    assert rt.registry.lookup([PODS[0]]).tolist() == [-1]  # forgotten, its row retired
    assert member._entities[0].n_rows == 0
    assert member._entities[1].n_rows > 20
