import numpy as np
import pytest

from aiops.pipeline.engine import Engine, RuleSpec
from aiops.state.envelope import dumps, loads
from aiops.types import Batch, SeriesKey

KEYS = [SeriesKey.of("latency", {"host": f"h{i}"}) for i in range(3)]


def fleet(n_steps=600, seed=7, spike_at=400, shift_at=None):
    """3 series, 60 s apart; host h1 gets a spike of 4 points at spike_at."""
    rng = np.random.default_rng(seed)
    t = np.repeat(np.arange(n_steps) * 60.0, 3)
    series = np.tile(np.arange(3), n_steps)
    values = 100 + rng.normal(0, 1, size=n_steps * 3)
    hit = (series == 1) & (t >= spike_at * 60) & (t < (spike_at + 4) * 60)
    values[hit] += 20
    if shift_at is not None:
        values[(series == 2) & (t >= shift_at * 60)] += 15
    return Batch(keys=KEYS, series=series, timestamps=t, values=values)


def spec(**kw):
    base = dict(
        group="g",
        alert="LatencyAnomaly",
        source="s",
        matches=lambda k: k.name == "latency",
        detector_type="robust_ewma",
        threshold=0.999,
        # Every point of an incident scores high (no refractory memory), so that `for`,
        # min_hits and a protected baseline have several hits to work on.
        detector_params={"warmup": 30, "refractory": 0.0},
    )
    base.update(kw)
    return RuleSpec(**base)


def split(batch, size):
    for lo in range(0, batch.n_points, size):
        yield Batch(
            keys=batch.keys,
            series=batch.series[lo : lo + size],
            timestamps=batch.timestamps[lo : lo + size],
            values=batch.values[lo : lo + size],
        )


def run(engine, batch, size=10_000):
    return [
        (a.status, a.labels["host"], a.starts_at, a.ends_at)
        for b in split(batch, size)
        for a in engine.process("s", b)
    ]


def test_spike_fires_once_and_resolves():
    alerts = run(Engine([spec()]), fleet())
    assert alerts == [
        ("firing", "h1", 400 * 60.0, None),
        ("resolved", "h1", 400 * 60.0, 404 * 60.0),
    ]


def test_for_delays_firing_and_short_blips_never_fire():
    alerts = run(Engine([spec(for_seconds=120.0)]), fleet())
    assert alerts == [
        ("firing", "h1", 402 * 60.0, None),
        ("resolved", "h1", 402 * 60.0, 404 * 60.0),
    ]
    assert run(Engine([spec(for_seconds=600.0)]), fleet()) == []


def test_min_hits_needs_enough_hits_in_window():
    alerts = run(Engine([spec(min_hits=3, hits_window=3)]), fleet())
    assert alerts[0] == ("firing", "h1", 402 * 60.0, None)


def test_level_shift_is_learned_unless_baseline_protected():
    b = fleet(n_steps=900, shift_at=500)
    learned = run(Engine([spec(protect_baseline=False)]), b)
    shift = [a for a in learned if a[1] == "h2"]
    # Without protection the baseline adapts and the alert resolves.
    assert shift[0][:2] == ("firing", "h2")
    assert shift[1][0] == "resolved"
    protected = [a for a in run(Engine([spec()]), b) if a[1] == "h2"]
    # With protection the shifted points are not learned: the alert keeps firing.
    assert protected == [("firing", "h2", 500 * 60.0, None)]


def test_suppress_blocks_refiring_after_resolve():
    b = fleet(n_steps=700)
    b.values[(b.series == 1) & (b.timestamps == 410 * 60.0)] += 25
    assert [a[0] for a in run(Engine([spec()]), b)] == ["firing", "resolved", "firing", "resolved"]
    assert [a[0] for a in run(Engine([spec(suppress_seconds=3600.0)]), b)] == ["firing", "resolved"]


@pytest.mark.parametrize("size", [1, 7, 300, 10_000])
def test_batch_boundaries_do_not_change_alerts(size):
    assert run(Engine([spec()]), fleet(), size) == run(Engine([spec()]), fleet())


def test_state_round_trip_mid_stream_equals_uninterrupted():
    b = fleet()
    whole = run(Engine([spec()]), b)
    first = Batch(
        keys=b.keys, series=b.series[:1100], timestamps=b.timestamps[:1100], values=b.values[:1100]
    )
    rest = Batch(
        keys=b.keys, series=b.series[1100:], timestamps=b.timestamps[1100:], values=b.values[1100:]
    )
    e1 = Engine([spec()])
    before = run(e1, first)
    e2 = Engine([spec()])
    e2.load_state_dict(loads(dumps(e1.state_dict())))
    assert before + run(e2, rest) == whole


def test_series_cap_drops_and_counts_new_series():
    e = Engine([spec(max_series=2)])
    run(e, fleet())
    rt = e.rules["g/LatencyAnomaly"]
    assert len(rt.registry) == 2
    assert rt.registry.dropped == 1


@pytest.mark.parametrize("detector", ["ensemble", "ewma_z", "envelope_novelty"])
def test_a_rule_at_its_cap_holds_no_spare_rows(detector):
    # Growth by 1.25x stops at the cap: from 10 rows on, 10 new series a batch, a cap of
    # 117 gives 117 rows in every per-series array, not the 120 of the next 1.25x step.
    e = Engine([spec(max_series=117, detector_type=detector, detector_params={})])
    rt = e.rules["g/LatencyAnomaly"]
    keys = [SeriesKey.of("latency", {"host": f"h{j}"}) for j in range(130)]
    for lo in range(0, 130, 10):
        ts, vs = np.full(10, 60.0), np.ones(10)
        e.process(
            "s", Batch(keys=keys[lo : lo + 10], series=np.arange(10), timestamps=ts, values=vs)
        )
    assert len(rt.registry) == 117
    assert rt.registry.dropped == 13
    rows = [len(rt._last_value), len(rt._win_n), len(rt.hits.state_dict()["history"])]
    rows += [len(rt.alerts.state), rt.detector.n_series]
    members = getattr(rt.detector, "_members", [rt.detector])
    rows += [m.n_series for m in members]
    assert rows == [117] * len(rows)


def test_changed_detector_config_starts_model_fresh_but_keeps_series(caplog):
    e1 = Engine([spec()])
    run(e1, fleet())
    e2 = Engine([spec(detector_params={"warmup": 31})])
    e2.load_state_dict(e1.state_dict())
    assert "detector configuration changed" in caplog.text
    assert len(e2.rules["g/LatencyAnomaly"].registry) == 3


def test_alert_labels_annotations_and_fingerprint():
    rendered = []

    def render(text, ctx):
        rendered.append(ctx)
        return text.replace("{{ $labels.host }}", ctx["labels"]["host"])

    e = Engine(
        [spec(labels={"severity": "page"}, annotations={"summary": "slow {{ $labels.host }}"})],
        render=render,
    )
    fired = next(a for b in split(fleet(), 10_000) for a in e.process("s", b))
    assert dict(fired.labels) == {
        "alertname": "LatencyAnomaly",
        "host": "h1",
        "metric": "latency",
        "severity": "page",
    }
    assert fired.annotations == {"summary": "slow h1"}
    assert fired.score >= 0.999
    assert fired.value > 110
    assert len(fired.fingerprint) == 16
    assert rendered[0]["series"] == 'latency{host="h1"}'


def test_other_sources_and_unselected_series_are_ignored():
    e = Engine([spec()])
    assert e.process("other", fleet()) == []
    mem = Batch.from_points([(SeriesKey.of("mem"), 0.0, 1.0)])
    assert e.process("s", mem) == []
    assert len(e.rules["g/LatencyAnomaly"].registry) == 0


def test_duplicate_rules_are_refused():
    with pytest.raises(ValueError, match="duplicate rules: g/LatencyAnomaly"):
        Engine([spec(), spec()])


def test_a_batch_answering_one_rules_query_goes_to_that_rule_only():
    a = spec(alert="A", matches=lambda k: True)
    b = spec(alert="B", matches=lambda k: True)
    e = Engine([a, b])
    batch = fleet(n_steps=50)
    answer = Batch(
        keys=batch.keys,
        series=batch.series,
        timestamps=batch.timestamps,
        values=batch.values,
        rule="g/A",
    )
    e.process("s", answer)
    assert len(e.rules["g/A"].registry) == 3
    assert len(e.rules["g/B"].registry) == 0
