"""STLSeasonal: pinned alerts, period detection, gaps, learning and validation."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

if os.fspath(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, os.fspath(Path(__file__).parent))

from detector_checks import decode_state, encode_state, factory_for, run_all

from aiops.detectors.stl_seasonal import STLSeasonal

HOUR = 3600.0
T0 = 1_700_000_000.0


def seasonal_series(seed: int = 42, n: int = 24 * 14) -> tuple[np.ndarray, np.ndarray]:
    """Hourly: a daily cycle of 20, a weekly one of 8, noise of 2, and three incidents."""
    rng = np.random.default_rng(seed)
    k = np.arange(n)
    x = 100 + 20 * np.sin(2 * np.pi * k / 24) + 8 * np.sin(2 * np.pi * k / 168)
    x = x + rng.normal(0, 2, n)
    x[200] += 15  # a spike well inside the daily range
    x[250] -= 14  # a dip
    x[300:306] += 10  # a six-hour plateau
    return T0 + k * HOUR, x


def _score(det: STLSeasonal, ts: np.ndarray, x: np.ndarray, idx: int = 0) -> np.ndarray:
    return det.score(np.full(len(x), idx, dtype=np.int64), ts, x)


def test_pinned_alerts_on_daily_season() -> None:
    ts, x = seasonal_series()
    det = STLSeasonal(period="auto", buffer_size=24 * 7, refit_every=24)
    scores = _score(det, ts, x)
    # The three incidents' onsets reach 0.99 (one normal point in 100: 162 is one), the
    # spike and the plateau (which scores once: refractory) the default threshold, the
    # 7.5-sigma spike 0.9999. The dip, 50 points after the spike, is held back a little
    # by the refractory memory of the spike.
    assert np.flatnonzero(scores >= 0.99).tolist() == [162, 200, 250, 300]
    assert np.flatnonzero(scores >= 0.998).tolist() == [200, 300]
    assert np.flatnonzero(scores >= 0.9999).tolist() == [200]
    assert det.state_dict()["season"].tolist() == [24]
    # Warm-up: nothing before three daily cycles are buffered.
    assert not scores[: 3 * 24].any()


def test_auto_period_follows_the_sampling_step() -> None:
    rng = np.random.default_rng(1)
    for step, expect in ((HOUR, 24), (300.0, 288)):
        per_day = round(86_400 / step)
        k = np.arange(4 * per_day)
        x = 5 * np.sin(2 * np.pi * k / per_day) + rng.normal(0, 1, len(k))
        det = STLSeasonal(period="auto", buffer_size=len(k), refit_every=per_day)
        _score(det, T0 + k * step, x)
        assert det.state_dict()["season"].tolist() == [expect], step


def test_auto_period_finds_a_weekly_cycle() -> None:
    rng = np.random.default_rng(2)
    k = np.arange(24 * 7 * 4)
    weekend = ((k // 24) % 7 >= 5).astype(float)  # quiet weekends
    x = 50 - 20 * weekend + rng.normal(0, 1, len(k))
    det = STLSeasonal(period="auto", buffer_size=len(k), refit_every=24)
    _score(det, T0 + k * HOUR, x)
    assert det.state_dict()["season"].tolist() == [168]


def test_auto_without_a_season_waits_for_a_full_buffer_then_models_a_level() -> None:
    rng = np.random.default_rng(3)
    x = 10 + rng.normal(0, 1, 200)
    x[150] = 20.0
    det = STLSeasonal(period="auto", buffer_size=100, refit_every=10)
    scores = _score(det, T0 + np.arange(200) * HOUR, x)
    assert not scores[:100].any()
    assert det.state_dict()["season"].tolist() == [0]
    assert np.flatnonzero(scores >= 0.999).tolist() == [150]


def test_fixed_period_and_count_based_phase_without_timestamps() -> None:
    ts, x = seasonal_series()
    det = STLSeasonal(period=24, buffer_size=24 * 7, refit_every=24)
    by_time = _score(det, ts, x)
    det = STLSeasonal(period=24, buffer_size=24 * 7, refit_every=24)
    by_count = _score(det, np.zeros(len(x)), x)  # no usable step: phases count points
    np.testing.assert_allclose(by_count, by_time, rtol=0, atol=1e-9)


def test_a_gap_keeps_the_phase() -> None:
    ts, x = seasonal_series()
    keep = np.ones(len(x), dtype=bool)
    keep[180:190] = False  # ten hours without data, after the first fit
    det = STLSeasonal(period=24, buffer_size=24 * 7, refit_every=24)
    scores = dict(zip(np.flatnonzero(keep).tolist(), _score(det, ts[keep], x[keep]), strict=True))
    after = np.array([scores[j] for j in range(190, 200)])  # up to the spike at 200
    # A phase off by ten hours on a cycle of 10 sigma would score about 1 throughout.
    assert after.mean() < 0.8
    assert after.max() < 0.999
    later = np.array([scores[j] for j in range(210, 250)])  # after the next refits
    assert (later >= 0.99).sum() <= 1


def test_a_spike_does_not_echo_one_period_later() -> None:
    rng = np.random.default_rng(4)
    k = np.arange(24 * 12)
    x = 10 * np.sin(2 * np.pi * k / 24) + rng.normal(0, 1, len(k))
    x[200] += 30
    det = STLSeasonal(period=24, buffer_size=24 * 6, refit_every=6)
    scores = _score(det, T0 + k * HOUR, x)
    assert scores[200] >= 0.999
    assert scores[224] < 0.99
    assert scores[248] < 0.99


def test_learn_below_stores_the_expected_value() -> None:
    ts, x = seasonal_series()
    det = STLSeasonal(period=24, buffer_size=24 * 7, refit_every=24, learn_below=0.95)
    _score(det, ts[:201], x[:201])
    state = det.state_dict()
    last = (state["head"][0] - 1) % det.buffer_size
    assert abs(state["buf_v"][0, last] - x[200]) > 10  # the spike did not go in
    assert abs(state["buf_v"][0, last] - (x[200] - 15)) < 6


def test_round_trip_keeps_fitted_profiles() -> None:
    ts, x = seasonal_series()
    det = STLSeasonal(period="auto", buffer_size=24 * 7, refit_every=24)
    _score(det, ts[:150], x[:150])
    other = STLSeasonal(period="auto", buffer_size=24 * 7, refit_every=24)
    other.load_state_dict(decode_state(encode_state(det.state_dict())))
    np.testing.assert_array_equal(_score(other, ts[150:], x[150:]), _score(det, ts[150:], x[150:]))
    with pytest.raises(ValueError, match=r"'buf_v' has shape \(1, 168\), expected \(1, 200\)"):
        STLSeasonal(buffer_size=200, refit_every=24).load_state_dict(det.state_dict())


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"period": 1}, r'period must be "auto" or an integer >= 2, got 1'),
        ({"period": "daily"}, r"got 'daily'"),
        ({"period": 100, "buffer_size": 200}, r"holds fewer than 3 cycles of period 100"),
        ({"seasonal": 8}, r"seasonal must be an odd integer >= 3, got 8"),
        ({"refit_every": 0}, r"refit_every must be at least 1"),
        ({"alpha": 0.0}, r"alpha must be in \(0, 1\]"),
        ({"buffer_size": 5}, r"buffer_size must be at least 6"),
    ],
)
def test_constructor_validates(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        STLSeasonal(**params)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "params",
    [{"period": "auto"}, {"robust": False, "seasonal": 11}],
    ids=["auto", "non-robust"],
)
def test_shared_checks_on_other_parameters(params: dict[str, object]) -> None:
    run_all(factory_for(STLSeasonal, **params))
