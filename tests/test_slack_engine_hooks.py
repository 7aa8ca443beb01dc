"""The engine side of Slack feedback: the alert's recent window, raised thresholds, resets."""

from __future__ import annotations

import numpy as np
import pytest

from aiops.pipeline.engine import WINDOW_POINTS, RuleRuntime, RuleSpec
from aiops.registry import DETECTORS
from aiops.types import Batch, SeriesKey

A = SeriesKey.of("latency", {"host": "a"})
B = SeriesKey.of("latency", {"host": "b"})


def _spec(**kw: object) -> RuleSpec:
    base: dict[str, object] = {
        "group": "g",
        "alert": "Latency",
        "source": "s",
        "matches": lambda k: True,
        "threshold": 0.99,
        # These tests read the level and variance of ewma_z's state.
        "detector_type": "ewma_z",
    }
    base.update(kw)
    return RuleSpec(**base)  # type: ignore[arg-type]


def _noise(n: int, seed: int = 1) -> np.ndarray:
    return 10.0 + np.random.default_rng(seed).normal(0.0, 1.0, n)


def _batch(keys: list[SeriesKey], series: list[int], ts: list[float], vs: list[float]) -> Batch:
    return Batch(
        keys=keys,
        series=np.asarray(series, dtype=np.int64),
        timestamps=np.asarray(ts, dtype=np.float64),
        values=np.asarray(vs, dtype=np.float64),
    )


def _feed(rt: RuleRuntime, values: np.ndarray, t0: float = 0.0, key: SeriesKey = A) -> list:
    alerts = []
    for k, v in enumerate(values):
        alerts += rt.process(_batch([key], [0], [t0 + 60.0 * k], [float(v)])).alerts
    return alerts


@pytest.mark.parametrize("per_batch", [1, 7, 500], ids=["point", "batch7", "one-batch"])
def test_alert_carries_the_recent_window_ending_at_its_point(per_batch: int) -> None:
    values = _noise(400)
    values[300] = 40.0
    rt = RuleRuntime(_spec())
    alerts = []
    for lo in range(0, len(values), per_batch):
        chunk = values[lo : lo + per_batch]
        ts = [60.0 * (lo + k) for k in range(len(chunk))]
        alerts += rt.process(_batch([A], [0] * len(chunk), ts, chunk.tolist())).alerts
    firing = [a for a in alerts if a.status == "firing" and a.starts_at == 300 * 60.0]
    assert len(firing) == 1
    w = firing[0].window
    assert w is not None
    assert len(w) == WINDOW_POINTS
    # the last WINDOW_POINTS points up to and including the alert's, whatever the batches
    assert w.timestamps == tuple(60.0 * k for k in range(301 - WINDOW_POINTS, 301))
    # older points as the ring's float16 codes keep them (to a 1/1000 of the window's
    # range: pixels of a chart); the alert's own point is the batch's, exact
    want = values[301 - WINDOW_POINTS : 301]
    np.testing.assert_allclose(w.values, want, rtol=0, atol=np.ptp(want) / 1000)
    assert w.values[-1] == 40.0
    assert w.anomalous[-1] is True
    assert w.threshold == 0.99
    # the band at the spike comes from the earlier normal points and excludes it
    assert w.lo[-1] < 10.0 < w.hi[-1] < 40.0
    assert firing[0].rule == "g/Latency"
    assert firing[0].detector == "ewma_z"  # the spec's, see _spec
    assert firing[0].model_version == rt.spec.model_hash()


def test_window_survives_a_state_round_trip() -> None:
    rt = RuleRuntime(_spec())
    _feed(rt, _noise(100))
    other = RuleRuntime(_spec())
    other.load_state_dict(rt.state_dict())
    values = _noise(30, seed=2)
    values[-1] = 50.0
    a1 = [a for a in _feed(rt, values, 6000.0) if a.status == "firing"]
    a2 = [a for a in _feed(other, values, 6000.0) if a.status == "firing"]
    assert a1
    assert a2
    w1, w2 = a1[-1].window, a2[-1].window
    assert w1 is not None
    assert w2 is not None
    for name in ("timestamps", "values", "lo", "hi", "anomalous"):
        np.testing.assert_array_equal(getattr(w1, name), getattr(w2, name))


@pytest.mark.parametrize("per_batch", [1, 7, 500], ids=["point", "batch7", "one-batch"])
@pytest.mark.parametrize("step", [15.0, 60.123, 3601.37, 86400.5])
def test_window_times_of_epoch_timestamps_hold_to_a_millisecond_or_a_millionth_of_the_window(
    per_batch: int, step: float
) -> None:
    # The rings keep each time as a float32 offset from a float64 base per series.
    values = _noise(1000)
    values[900] = 40.0
    ts = 1.7e9 + 0.0013 + step * np.arange(1000)
    rt = RuleRuntime(_spec())
    alerts = []
    for lo in range(0, len(values), per_batch):
        chunk = slice(lo, lo + per_batch)
        series = [0] * len(values[chunk])
        alerts += rt.process(_batch([A], series, ts[chunk].tolist(), values[chunk].tolist())).alerts
    [firing] = [a for a in alerts if a.status == "firing" and a.starts_at == ts[900]]
    w = firing.window
    assert w is not None
    want = ts[901 - WINDOW_POINTS : 901]
    assert np.all(np.diff(w.timestamps) > 0)
    np.testing.assert_allclose(w.timestamps, want, rtol=0, atol=max(1e-3, 1e-6 * 59 * step))
    assert w.timestamps[-1] == ts[900]  # the alert's own point is the batch's, exact


def test_ring_bytes_per_series() -> None:
    rt = RuleRuntime(_spec())
    _feed(rt, _noise(3))
    ring = (rt._win_t0, rt._win_dt, rt._win_v, rt._win_s, rt._win_vo, rt._win_vf, rt._win_n)
    # base time, count, the values' offset and factor; a point's time, value, score
    per_series = 8 + 8 + 8 + 4 + (4 + 2 + 2) * WINDOW_POINTS
    assert sum(a.nbytes for a in ring) // len(rt._win_n) == per_series


def test_a_window_checkpointed_with_float64_times_still_loads() -> None:
    # Checkpoints written before the offsets hold "ts": every ring slot's float64 time.
    values = _noise(200)
    values[-1] = 50.0
    t0 = 1.7e9 + 0.25
    rt = RuleRuntime(_spec())
    _feed(rt, values[:150], t0)
    state = rt.state_dict()
    win = state["window"]
    ts = win.pop("t0")[:, None] + win.pop("dt").astype(np.float64)
    win["ts"] = ts
    old = RuleRuntime(_spec())
    old.load_state_dict(state)
    a1 = [a for a in _feed(rt, values[150:], t0 + 150 * 60.0) if a.status == "firing"]
    a2 = [a for a in _feed(old, values[150:], t0 + 150 * 60.0) if a.status == "firing"]
    assert a1
    w1, w2 = a1[-1].window, a2[-1].window
    assert w1 is not None
    assert w2 is not None
    np.testing.assert_allclose(w2.timestamps, w1.timestamps, rtol=0, atol=1e-3)
    np.testing.assert_allclose(w2.timestamps, t0 + 60.0 * np.arange(140, 200), rtol=0, atol=1e-3)
    for name in ("values", "lo", "hi", "anomalous"):
        np.testing.assert_array_equal(getattr(w1, name), getattr(w2, name))


def _spike_windows(rt: RuleRuntime, values: np.ndarray, t0: float) -> list:
    return [a.window for a in _feed(rt, values, t0) if a.status == "firing"]


def test_without_windows_a_rule_keeps_no_ring_and_alerts_the_same_without_one() -> None:
    values = _noise(300)
    values[250] = 40.0
    with_rings, without = RuleRuntime(_spec()), RuleRuntime(_spec(windows=False))
    a1, a2 = _feed(with_rings, values), _feed(without, values)
    assert [a.window is None for a in a1] == [False] * len(a1)
    assert a1
    assert [a.window for a in a2] == [None] * len(a2)
    key = ("status", "starts_at", "ends_at", "value", "score", "fingerprint")
    assert [[getattr(a, k) for k in key] for a in a1] == [[getattr(a, k) for k in key] for a in a2]
    assert without._win_dt.shape == without._win_v.shape == without._win_s.shape == (1, 0)
    assert without.points_seen == with_rings.points_seen == 300  # counted all the same


def test_rings_dropped_or_started_by_a_state_or_a_reload_hold_only_real_points() -> None:
    values = _noise(200)
    values[-1] = 50.0
    rt = RuleRuntime(_spec())
    _feed(rt, values[:100])
    # A checkpoint with rings into a rule without: dropped, counts kept.
    bare = RuleRuntime(_spec(windows=False))
    bare.load_state_dict(rt.state_dict())
    assert bare._win_dt.shape == (1, 0)
    assert bare.points_seen == 100
    # ... and back: rings start empty (no point of before), then fill with new points.
    back = RuleRuntime(_spec())
    back.load_state_dict(bare.state_dict())
    toggled = RuleRuntime(_spec())
    toggled.load_state_dict(rt.state_dict())
    toggled.use_windows(False)
    toggled.use_windows(True)
    full = RuleRuntime(_spec())
    full.load_state_dict(rt.state_dict())
    for again in (back, toggled):
        assert again.points_seen == 100
        w = _spike_windows(again, values[100:], 100 * 60.0)[-1]
        assert w.timestamps == tuple(60.0 * k for k in range(140, 200))  # full again
    # Before the ring is full again: a short window, only the points since it started.
    short = values[100:130].copy()
    short[-1] = 50.0
    late = RuleRuntime(_spec())
    late.load_state_dict(bare.state_dict())
    w, wf = _spike_windows(late, short, 100 * 60.0)[-1], _spike_windows(full, short, 6000.0)[-1]
    assert w.timestamps == tuple(60.0 * k for k in range(100, 130))
    assert wf.timestamps == tuple(60.0 * k for k in range(70, 130))


def test_raised_threshold_stops_alerts_at_the_same_score_only_for_that_series() -> None:
    values = _noise(300)
    values[250] = 14.0
    rt = RuleRuntime(_spec())
    first = [a for a in _feed(rt, values) if a.status == "firing"]
    spike = [a for a in first if a.starts_at == 250 * 60.0]
    assert len(spike) == 1
    score = spike[0].score
    new = rt.raise_threshold(0, 1.0 - (1.0 - score) / 10.0)
    assert new > score
    # the same history replayed with the raised threshold: nothing at or below that score
    again = RuleRuntime(_spec())
    again.raise_threshold(0, new)
    replayed = [a for a in _feed(again, values) if a.status == "firing"]
    assert all(a.score >= new for a in replayed)
    assert not [a for a in replayed if a.starts_at == 250 * 60.0]
    # another series of the same rule still alerts at that score
    two = RuleRuntime(_spec())
    two.process(_batch([A, B], [0, 1], [-60.0, -60.0], [10.0, 10.0]))
    index = two.series_index(str(A))
    assert index == 0
    two.raise_threshold(index, new)
    fired = [a for a in _feed(two, values, key=B) if a.starts_at == 250 * 60.0]
    assert [a.status for a in fired] == ["firing", "resolved"]
    assert fired[0].series == str(B)
    # raising is monotone: a lower request changes nothing
    assert rt.raise_threshold(0, 0.5) == new
    assert rt.threshold_of(0) == new


def test_raised_threshold_is_checkpointed() -> None:
    rt = RuleRuntime(_spec())
    _feed(rt, _noise(10))
    rt.raise_threshold(0, 0.9999)
    other = RuleRuntime(_spec())
    other.load_state_dict(rt.state_dict())
    assert other.threshold_of(0) == 0.9999


def test_series_index_finds_registered_series_only() -> None:
    rt = RuleRuntime(_spec())
    rt.process(_batch([A, B], [0, 1], [0.0, 0.0], [1.0, 2.0]))
    assert rt.series_index(str(B)) == 1
    assert rt.series_index('latency{host="zzz"}') is None


@pytest.mark.parametrize("detector", ["ewma_z", "robust_ewma", "envelope_novelty"])
def test_reset_series_makes_that_series_fresh_and_leaves_the_others(detector: str) -> None:
    assert detector in DETECTORS
    rt = RuleRuntime(_spec(detector_type=detector))
    values = _noise(200)
    n = len(values)
    both = _batch([A, B], [0, 1] * n, [60.0 * (k // 2) for k in range(2 * n)], [0.0] * (2 * n))
    vals = np.empty(2 * n)
    vals[0::2] = values
    vals[1::2] = values * 3.0
    rt.process(Batch(keys=both.keys, series=both.series, timestamps=both.timestamps, values=vals))
    before_b = RuleRuntime(_spec(detector_type=detector))
    before_b.load_state_dict(rt.state_dict())
    assert rt.reset_series([0]) is True
    # series A now scores exactly like a brand-new detector fed the same points
    later = 20.0 + _noise(50, seed=3)
    ts = [60.0 * (n + k) for k in range(50)]
    fresh = RuleRuntime(_spec(detector_type=detector))
    got = rt.process(_batch([A], [0] * 50, ts, later.tolist())).scores
    want = fresh.process(_batch([A], [0] * 50, ts, later.tolist())).scores
    np.testing.assert_allclose(got, want)
    # series B kept what it learned
    later_b = (values[:50] * 3.0).tolist()
    got_b = rt.process(_batch([A, B], [1] * 50, ts, later_b)).scores
    want_b = before_b.process(_batch([A, B], [1] * 50, ts, later_b)).scores
    np.testing.assert_allclose(got_b, want_b)


def test_reset_of_nothing_and_of_unknown_series() -> None:
    rt = RuleRuntime(_spec())
    assert rt.reset_series([]) is True
    _feed(rt, _noise(5))
    state = rt.state_dict()
    assert rt.reset_series([7]) is True  # beyond the registry: nothing to reset
    np.testing.assert_array_equal(rt.state_dict()["detector"]["mu"], state["detector"]["mu"])
