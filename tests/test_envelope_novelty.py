"""EnvelopeNovelty: pinned alerts on seeded series, the scalar replay path, NAB floor."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from aiops.detectors.envelope_novelty import EnvelopeNovelty
from aiops.pipeline.scoring import score_series

#: Measured 70.61 (swept) and 70.37 (own alerts) on NAB v1.1 standard; see
#: bench/quality/README.md. The floor leaves room for harmless numeric changes only.
NAB_STANDARD_FLOOR = 69.0


def _incidents(seed: int = 7, n: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n) * 300.0
    x = 50 + 5 * np.sin(2 * np.pi * np.arange(n) / 288) + rng.normal(0, 1, n)
    x[600] += 25  # spike
    x[900:] += 12  # level shift
    x[1200:1230] += rng.normal(0, 6, 30)  # volatility burst
    return t, x


PINNED = [342, 495, 600, 902, 1201]


def test_pinned_alerts_at_defaults() -> None:
    t, x = _incidents()
    out = score_series(t, x, detector="envelope_novelty")
    # The first 18 hours score nothing, a few records follow on day two, then one alert per
    # incident: the spike, the level shift (once, not on every shifted point), the burst.
    assert np.flatnonzero(out.alerts).tolist() == PINNED


def test_missing_values_change_nothing() -> None:
    t, x = _incidents()
    gappy = x.copy()
    gappy[700:710] = np.nan
    out = score_series(t, gappy, detector="envelope_novelty")
    assert np.flatnonzero(out.alerts).tolist() == PINNED
    assert (out.scores[700:710] == 0).all()


def test_constant_series_is_quiet_then_first_move_scores_one() -> None:
    det = EnvelopeNovelty(warmup=10, warmup_seconds=0)
    x = np.r_[np.full(50, 3.0), 3.5]
    s = det.score(np.zeros(len(x), dtype=np.int64), np.arange(len(x), dtype=float), x)
    assert (s[:50] == 0).all()
    assert s[50] == 1.0


@pytest.mark.parametrize("learn_below", [np.inf, 0.99])
def test_scalar_replay_equals_rounds(learn_below: float) -> None:
    t, x = _incidents(seed=3)
    x[50:53] = np.nan
    one = EnvelopeNovelty(learn_below=learn_below)
    fast = one.score(np.zeros(len(x), dtype=np.int64), t, x)
    two = EnvelopeNovelty(learn_below=learn_below)  # two series: the vectorized rounds
    idx = np.r_[np.zeros(len(x), dtype=np.int64), np.ones(len(x), dtype=np.int64)]
    rounds = two.score(idx, np.r_[t, t], np.r_[x, x])
    np.testing.assert_array_equal(fast, rounds[: len(x)])
    np.testing.assert_array_equal(fast, rounds[len(x) :])
    for key, value in one.state_dict().items():
        np.testing.assert_array_equal(value[:1], two.state_dict()[key][:1])


def test_parameters_are_validated() -> None:
    bads: list[dict[str, object]] = [
        {"refractory": 1.0},
        {"tolerance": 0.0},
        {"alert_novelty": 1.0},
        {"warmup": 1},
        {"alert_hold": 1.5},
        {"sample_margin": -1.0},
        {"seasonal_tolerance": 0.0},
        {"profile_alpha": 0.0},
        {"seasonal_warmup": 0.5},
        {"seasonal_periods": [5400.0]},  # not a multiple of the hourly bin
    ]
    for bad in bads:
        with pytest.raises(ValueError, match=next(iter(bad))):
            EnvelopeNovelty(**bad)  # type: ignore[arg-type]


def test_lengths_must_match() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        EnvelopeNovelty().score(np.zeros(3, dtype=np.int64), np.zeros(4), np.zeros(3))


def _daily(days: int = 14, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Five-minute points of a daily square cycle (busy days, quiet nights) with noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * 288) * 300.0
    busy = ((t % 86400) >= 8 * 3600) & ((t % 86400) < 20 * 3600)
    return t, np.where(busy, 80.0, 20.0) + rng.normal(0, 2, len(t))


def test_a_missing_daily_peak_is_found_only_with_the_seasonal_feature() -> None:
    t, x = _daily()
    day = 10 * 288
    x[day : day + 288] = 20.0 + np.random.default_rng(2).normal(0, 2, 288)  # no busy hours
    idx = np.zeros(len(x), dtype=np.int64)
    with_season = EnvelopeNovelty(learn_below=0.99).score(idx, t, x)
    without = EnvelopeNovelty(learn_below=0.99, seasonal_periods=[]).score(idx, t, x)
    # Every value of the quiet day lies inside the range of quiet nights: only the
    # residual against the time-of-day profile leaves its envelope.
    busy = slice(day + 8 * 12, day + 20 * 12)
    assert with_season[busy].max() >= 0.99
    assert without[day : day + 288].max() < 0.99
    # Normal days after the warm-up: at most a rare record of the residual's noise
    # (records are the detector's false alarms, about 1/n per feature).
    assert (with_season[4 * 288 : day] >= 0.99).sum() <= 1


def test_a_large_quiet_metric_keeps_its_seasonal_residual() -> None:
    t, x = _daily()
    x = 1e9 + x / 10  # a daily cycle of 6 and noise of 0.2 on a level of 1e9
    day = 10 * 288
    x[day : day + 288] = 1e9 + 2.0 + np.random.default_rng(2).normal(0, 0.2, 288)
    idx = np.zeros(len(x), dtype=np.int64)
    det = EnvelopeNovelty(learn_below=0.99)
    s = det.score(idx, t, x)
    # The profiles are codes on a grid of the series' own range (float32 bins were 64
    # apart at 1e9, ten times the cycle): the quiet day is found as at any level.
    assert s[day + 8 * 12 : day + 20 * 12].max() >= 0.99
    assert (s[4 * 288 : day] >= 0.99).sum() <= 1
    busy, night = det.profiles()[0, 12], det.profiles()[0, 2]
    assert abs(busy - (1e9 + 8.0)) < 0.2
    assert abs(night - (1e9 + 2.0)) < 0.2


def test_profiles_follow_growth_and_survive_extreme_values() -> None:
    det = EnvelopeNovelty(warmup=10, warmup_seconds=0)
    t = np.arange(4000) * 600.0
    x = np.r_[np.zeros(10), np.geomspace(1e-6, 1e12, 3990)]  # every bin's range grows
    det.score(np.zeros(len(x), dtype=np.int64), t, x)
    ref = np.full(24 + 168, np.nan)  # each bin's EWMA in float64
    for tk, xk in zip(t, x, strict=True):
        for col in (int(tk % 86400) // 3600, 24 + int(tk % 604800) // 3600):
            p = ref[col]
            ref[col] = xk if np.isnan(p) else p + 0.1 * (xk - p)
    prof = det.profiles()[0]
    assert np.isfinite(prof).all()
    # The grid was widened dozens of times on the way (1e-6 to 1e12): its step is a few
    # 65,534ths of the range, and every bin is within two steps of its EWMA.
    step = det.state_dict()["profile_grid"][0, 1]
    assert step <= 4.0 * ref.max() / 65534
    assert np.abs(prof - ref).max() <= 2.0 * step
    extreme = np.array([1e308, -1e308, 1e308, np.inf, np.nan, 5.0])
    s = det.score(np.zeros(6, dtype=np.int64), 4e6 + np.arange(6) * 600.0, extreme)
    assert np.isfinite(s).all()
    assert ((s >= 0) & (s <= 1)).all()
    assert not np.isnan(det.profiles()[0]).all()


#: A state of the layout before uint16 profiles, with the scores that code gave the next
#: three days; ``testdata/envelope_novelty_float32_profiles.py`` wrote it.
FLOAT32_STATE = Path(__file__).parent / "testdata" / "envelope_novelty_float32_profiles.npz"


def test_a_state_of_float32_profiles_loads_and_scores_as_before() -> None:
    with np.load(FLOAT32_STATE, allow_pickle=False) as z:
        state = {name[len("state_") :]: z[name] for name in z.files if name.startswith("state_")}
        t, values, before = z["timestamps"], z["values"], z["scores"]
    assert state["profiles"].dtype == np.float32
    assert state["count"].dtype == np.float64
    det = EnvelopeNovelty()
    det.load_state_dict(state)
    old = state["profiles"].astype(np.float64)
    prof = det.profiles()
    np.testing.assert_array_equal(np.isnan(prof), np.isnan(old))
    step = det.state_dict()["profile_grid"][:, 1:]
    assert (np.abs(np.nan_to_num(prof - old)) <= 0.5 * step * (1 + 1e-9)).all()
    k = values.shape[0]
    after = det.score(np.repeat(np.arange(k), len(t)), np.tile(t, k), values.ravel())
    # The same alerts (one: the day without its busy hours), the scores within rounding.
    assert np.flatnonzero(after >= 0.998).tolist() == np.flatnonzero(before >= 0.998).tolist()
    assert np.flatnonzero(after >= 0.998).size == 1
    np.testing.assert_allclose(after, before, atol=0.01)


def test_alert_hold_keeps_one_incident_to_one_alert() -> None:
    rng = np.random.default_rng(5)
    x = 50 + rng.normal(0, 1, 1200)
    x[1000] = x[:1000].max() + 0.3  # just past the range: a modest novelty
    x[1003] = 75.0  # a far bigger spike right after: the same incident
    idx, t = np.zeros(len(x), dtype=np.int64), np.arange(len(x)) * 60.0
    held = EnvelopeNovelty(seasonal_periods=[], warmup_seconds=0).score(idx, t, x)
    free = EnvelopeNovelty(seasonal_periods=[], alert_hold=0.0, warmup_seconds=0).score(idx, t, x)
    assert held[1000] >= 0.99
    assert free[1000] >= 0.99
    assert held[1003] < 0.99 <= free[1003]


def test_sample_margin_quiets_young_series() -> None:
    def alerts(margin: float) -> int:
        total = 0
        for seed in range(20):
            x = np.random.default_rng(seed).standard_t(3, 2000)
            s = EnvelopeNovelty(sample_margin=margin, seasonal_periods=[], warmup_seconds=0).score(
                np.zeros(len(x), dtype=np.int64), np.arange(len(x)) * 60.0, x
            )
            total += int((s >= 0.99).sum())
        return total

    # Heavy-tailed noise has records; a young envelope has many more of them.
    assert alerts(40.0) < alerts(0.0)


@pytest.mark.slow
def test_nab_standard_floor_at_defaults() -> None:
    env = os.environ.get("AIOPS_NAB_DIR")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared/datasets/nab"
    if not (root / "labels" / "combined_windows.json").is_file():
        pytest.fail(f"NAB corpus not found at {root}: set AIOPS_NAB_DIR to the NAB v1.1 root")
    from aiops.evaluation.run import score_nab

    report = score_nab(root, detector="envelope_novelty", jobs=2, progress=False)
    assert report.swept["standard"].score >= NAB_STANDARD_FLOOR
    assert report.alerts is not None
    assert report.alerts["standard"].score >= NAB_STANDARD_FLOOR
