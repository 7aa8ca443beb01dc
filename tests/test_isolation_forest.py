"""isolation_forest: multivariate vectors per entity, through the detector and the engine.

The shared check suite runs on it from test_detector_checks.py (it is registered), where
every series is unbound and so a one-feature entity; these tests cover what only bound,
grouped series show.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

if os.fspath(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, os.fspath(Path(__file__).parent))

from detector_checks import assert_same_scores, encode_state

from aiops.config import load_rule_files
from aiops.detectors.isolation_forest import IsolationForestDetector, _PackedForest
from aiops.pipeline.engine import Engine, RuleSpec
from aiops.state.envelope import dumps, loads
from aiops.types import Batch, SeriesKey

HOSTS = ("h1", "h2")
METRICS = ("requests", "cpu", "latency")
KEYS = [SeriesKey.of(m, {"host": h, "job": "node"}) for h in HOSTS for m in METRICS]
SCRAPE = 15.0
#: Scrapes where h1's requests are low and its CPU high: each value is one sigma of
#: the load from its mean, ordinary on its own; together they break the relation.
ANOMALY = range(500, 505)
N_SCRAPES = 600
SMALL = {"group_by": ["host"], "warmup": 200, "window": 400, "retrain_every": 50}
SMALL_FOREST = {**SMALL, "n_estimators": 50}


def fleet(n_scrapes: int = N_SCRAPES, seed: int = 3) -> Batch:
    """Two hosts whose requests, CPU and latency follow one random load per scrape.

    Within a scrape the three metrics arrive 0.4 s and 0.9 s apart (less than the
    detector's ``step``), h1 before h2.
    """
    rng = np.random.default_rng(seed)
    load = rng.normal(100.0, 20.0, size=(n_scrapes, len(HOSTS)))
    cols = []
    for h in range(len(HOSTS)):
        req = load[:, h] + rng.normal(0.0, 2.0, n_scrapes)
        cpu = 0.5 * load[:, h] + rng.normal(0.0, 1.0, n_scrapes)
        lat = 20.0 + 0.1 * load[:, h] + rng.normal(0.0, 1.0, n_scrapes)
        if h == 0 and n_scrapes > ANOMALY[-1]:
            req[list(ANOMALY)] = 80.0
            cpu[list(ANOMALY)] = 60.0
        cols += [req, cpu, lat]
    values = np.stack(cols, axis=1)
    ts = np.arange(n_scrapes)[:, None] * SCRAPE + np.tile([0.0, 0.4, 0.9], len(HOSTS))
    series = np.tile(np.arange(len(KEYS)), n_scrapes)
    return Batch(keys=KEYS, series=series, timestamps=ts.ravel(), values=values.ravel())


def part(batch: Batch, lo: int, hi: int) -> Batch:
    return Batch(
        keys=batch.keys,
        series=batch.series[lo:hi],
        timestamps=batch.timestamps[lo:hi],
        values=batch.values[lo:hi],
    )


def rule(alert: str, detector: str, params: dict[str, Any], **kw: Any) -> RuleSpec:
    return RuleSpec(
        group="g",
        alert=alert,
        source="s",
        matches=lambda k: True,
        detector_type=detector,
        detector_params=params,
        **kw,
    )


def run_rules(
    engine: Engine, batch: Batch, size: int | None = None
) -> tuple[list[tuple[str, ...]], dict[str, np.ndarray]]:
    """Alerts that fired, as (rule, host, metric, scrape), and each rule's point scores."""
    size = size or batch.n_points
    fired = []
    scores = {name.split("/")[1]: np.full(batch.n_points, np.nan) for name in engine.rules}
    for lo in range(0, batch.n_points, size):
        for rt in engine.rules.values():
            res = rt.process(part(batch, lo, lo + size))
            scores[rt.spec.alert][lo + res.positions] = res.scores
            fired += [
                (rt.spec.alert, a.labels["host"], a.labels["metric"], int(a.starts_at // SCRAPE))
                for a in res.alerts
                if a.status == "firing"
            ]
    return fired, scores


def firing(engine: Engine, batch: Batch, size: int | None = None) -> list[tuple[str, ...]]:
    return run_rules(engine, batch, size)[0]


def scores_of(engine: Engine, batch: Batch, size: int) -> np.ndarray:
    (scores,) = run_rules(engine, batch, size)[1].values()
    return scores


def test_a_joint_anomaly_fires_on_its_host_only_and_per_series_detectors_miss_it() -> None:
    # At the default threshold (0.998) about one normal point in 500 fires, by design:
    # these rules page, so one in 10,000.
    engine = Engine(
        [
            rule("Joint", "isolation_forest", SMALL_FOREST, threshold=0.9999),
            rule("Ewma", "robust_ewma", {}, threshold=0.9999),
            rule("Envelope", "envelope_novelty", {}, threshold=0.9999),
        ]
    )
    batch = fleet()
    alerts, scores = run_rules(engine, batch, size=60)
    joint = [a for a in alerts if a[0] == "Joint"]
    # The CPU point completes the combination; latency, last of the scrape, sees it too.
    assert joint == [("Joint", "h1", "cpu", 500), ("Joint", "h1", "latency", 500)]
    assert [a for a in alerts if a[0] != "Joint" and a[3] in ANOMALY] == []
    h1_cpu = np.flatnonzero(batch.series == METRICS.index("cpu"))[list(ANOMALY)]
    assert np.all(scores["Joint"][h1_cpu] >= 0.999)
    # Each value alone is one sigma out: per-series detectors see nothing unusual.
    assert scores["Ewma"][h1_cpu].max() < 0.9
    assert scores["Envelope"][h1_cpu].max() < 0.9


def test_an_ensemble_passes_the_series_keys_to_its_members() -> None:
    members = [{"type": "isolation_forest", "params": SMALL_FOREST}, {"type": "robust_ewma"}]
    engine = Engine([rule("Joint", "ensemble", {"members": members, "method": "max"})])
    alerts = firing(engine, fleet(), size=60)
    assert ("Joint", "h1", "cpu", 500) in alerts


def test_scores_do_not_depend_on_batch_boundaries_through_the_engine() -> None:
    batch = fleet(n_scrapes=330)
    whole = scores_of(Engine([rule("Joint", "isolation_forest", SMALL_FOREST)]), batch, 10**9)
    assert np.count_nonzero(whole) > 100  # fitted: scores after the warm-up
    for size in (5, 13, 6 * 7):
        engine = Engine([rule("Joint", "isolation_forest", SMALL_FOREST)])
        assert_same_scores(scores_of(engine, batch, size), whole, f"batches of {size}")


def test_state_round_trip_through_aiops_state_continues_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch = fleet()
    cut = 6 * 473 + 2  # inside a scrape of h1: an open bucket is restored
    whole = Engine([rule("Joint", "isolation_forest", SMALL_FOREST)])
    expected = scores_of(whole, batch, 97)

    first = Engine([rule("Joint", "isolation_forest", SMALL_FOREST)])
    scores_of(first, part(batch, 0, cut), 97)
    state = first.state_dict()
    detector_state = state["g/Joint"]["detector"]
    encode_state(detector_state)  # strict plain data: no bytes, no pickles
    assert detector_state["n_fits"].tolist() == [6, 6]
    assert np.all(detector_state["since_fit"] > 0)  # the last fit's rows are not the newest

    builds = []
    real = IsolationForestDetector._build

    def counting(self: IsolationForestDetector, ent: Any, x: np.ndarray) -> Any:
        builds.append(x.shape)
        return real(self, ent, x)

    monkeypatch.setattr(IsolationForestDetector, "_build", counting)
    second = Engine([rule("Joint", "isolation_forest", SMALL_FOREST)])
    second.load_state_dict(loads(dumps(state)))
    assert builds == []  # forests are rebuilt on first use, not on load
    rest = scores_of(second, part(batch, cut, batch.n_points), 97)
    assert_same_scores(rest, expected[cut:], "scores after a round trip")
    # One rebuild per host on the rows of its last fit (window rows, 3 features), then
    # the scheduled refits.
    assert builds[:2] == [(400, 3), (400, 3)]


def test_retrain_schedule_one_training_row_per_scrape(monkeypatch: pytest.MonkeyPatch) -> None:
    fits = []
    real = IsolationForestDetector._fit

    def counting(self: IsolationForestDetector, ent: Any) -> None:
        fits.append((ent.group, ent.n_learned))
        real(self, ent)

    monkeypatch.setattr(IsolationForestDetector, "_fit", counting)
    det = IsolationForestDetector(**SMALL_FOREST)
    det.bind_series(KEYS)
    batch = fleet(n_scrapes=360)
    det.score(batch.series, batch.timestamps, batch.values)
    state = det.state_dict()
    # 359 closed scrapes per host (the last stays open): one row each, not three.
    assert state["n_learned"].tolist() == [359, 359]
    # First fit at warmup=200 rows, then every 50: 200, 250, 300, 350.
    assert fits == [(g, n) for n in (200, 250, 300, 350) for g in (("h1",), ("h2",))]
    assert state["n_fits"].tolist() == [4, 4]
    assert state["since_fit"].tolist() == [9, 9]


def test_learn_below_keeps_scrapes_with_a_high_score_out_of_training() -> None:
    det = IsolationForestDetector(**SMALL_FOREST, learn_below=0.999)
    det.bind_series(KEYS)
    batch = fleet()
    scores = det.score(batch.series, batch.timestamps, batch.values).reshape(N_SCRAPES, 6)
    state = det.state_dict()
    for h in range(len(HOSTS)):
        worst = scores[: N_SCRAPES - 1, 3 * h : 3 * h + 3].max(axis=1)
        assert state["n_learned"][h] == np.count_nonzero(worst < 0.999)
    h1_worst = scores[:, :3].max(axis=1)
    assert np.all(h1_worst[list(ANOMALY)] >= 0.999)


def test_points_completing_a_scrape_score_the_whole_vector_not_stale_values() -> None:
    """The first metric of a scrape is not paired with the previous scrape's others."""
    det = IsolationForestDetector(**SMALL_FOREST)
    det.bind_series(KEYS)
    batch = fleet(seed=11)
    scores = det.score(batch.series, batch.timestamps, batch.values).reshape(N_SCRAPES, 6)
    normal = np.r_[300:500, 505:N_SCRAPES]
    hits = (scores[normal] >= 0.99).mean(axis=0)
    assert np.all(hits <= 0.03), hits


def test_entities_follow_group_by_and_unbound_series_stand_alone() -> None:
    det = IsolationForestDetector(group_by=["instance"])
    keys = [
        SeriesKey.of("cpu", {"instance": "a"}),
        SeriesKey.of("mem", {"instance": "a"}),
        SeriesKey.of("cpu", {"instance": "b"}),
        SeriesKey.of("cpu", {}),  # no instance label: the entity of ""
        SeriesKey.of("mem", {"other": "x"}),
    ]
    det.bind_series(keys[:3])
    det.bind_series(keys)  # growing: earlier assignments stay
    det.score(np.array([6]), np.array([0.0]), np.array([1.0]))  # index 6: never bound
    state = det.state_dict()
    assert state["groups"] == [["a"], ["b"], [""], None]
    assert state["series_entity"].tolist() == [0, 0, 1, 2, 2, -1, 3]
    assert state["series_col"].tolist() == [0, 1, 0, 0, 1, -1, 0]
    assert state["single"].tolist() == [-1, -1, -1, 6]
    one = IsolationForestDetector(group_by=[])
    one.bind_series(keys)
    assert one.state_dict()["series_entity"].tolist() == [0] * 5
    restored = IsolationForestDetector(group_by=["instance"])
    restored.load_state_dict(state)
    restored.bind_series([*keys, SeriesKey.of("disk", {"instance": "b"})])
    assert restored.state_dict()["series_entity"].tolist() == [0, 0, 1, 2, 2, 1, 3]


def test_packed_forest_scores_as_sklearn() -> None:
    from sklearn.ensemble import IsolationForest

    rng = np.random.default_rng(5)
    x = rng.normal(size=(500, 4))
    forest = IsolationForest(n_estimators=60, max_samples=128, random_state=1).fit(x)
    new = np.r_[rng.normal(size=(300, 4)) * 3, x[:20]]
    depth = _PackedForest(forest).mean_depth(new)
    c_psi = 2.0 * (math.log(127.0) + np.euler_gamma) - 2.0 * 127.0 / 128.0
    np.testing.assert_allclose(np.exp2(-depth / c_psi), -forest.score_samples(new), rtol=1e-12)


def test_the_readme_rule_loads_and_bad_params_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        """
groups:
  - name: hosts
    rules:
      - alert: HostBehaviour
        source: prom
        query: 'rate(node_cpu_seconds_total{mode!="idle"}[5m])'
        detector:
          type: isolation_forest
          params: {group_by: [instance], step: 10, window: 2000, retrain_every: 200}
        threshold: 0.999
"""
    )
    (group,) = load_rule_files([path])
    params = dict(group.rules[0].detector.params)
    det = IsolationForestDetector(**params)
    assert det.group_by == ("instance",)
    with pytest.raises(ValueError, match="group_by must be a list"):
        IsolationForestDetector(group_by="instance")
    with pytest.raises(ValueError, match="warmup must be in"):
        IsolationForestDetector(warmup=500, window=200)
