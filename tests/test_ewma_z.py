"""ewma_z: exact alerts on seeded series, the held (clipped) learning, calibration."""

from __future__ import annotations

import numpy as np
import pytest

from aiops.detectors.ewma_z import EwmaZ
from aiops.registry import DEFAULT_DETECTOR, DETECTORS
from aiops.scoring import score_series


def _fleet_like(seed: int = 7, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n) * 60.0
    x = 50 + 5 * np.sin(2 * np.pi * np.arange(n) / 1440) + rng.normal(0, 1, n)
    return t, x


def test_is_the_default_detector() -> None:
    assert DEFAULT_DETECTOR == "ewma_z"
    assert isinstance(DETECTORS.create(DEFAULT_DETECTOR), EwmaZ)


def test_alerts_on_a_spike_a_dip_and_a_level_shift_inside_the_range_seen() -> None:
    t, x = _fleet_like()
    x[1000] += 12  # inside the daily range (40..60 plus noise), but 12 sigmas off the level
    x[1500:1504] = 40
    x[2000:] -= 8
    out = score_series(t, x, detector="ewma_z", threshold=0.9999)
    assert np.flatnonzero(out.alerts).tolist() == [1000, 1500, 2000]


def test_a_level_shift_is_absorbed_not_alerted_for_ever() -> None:
    t, x = _fleet_like()
    x[2000:] -= 8
    det = EwmaZ()
    s = det.score(np.zeros(len(x), dtype=np.int64), t, x)
    assert s[2000] > 0.9999
    # Held points move the level by at most HELD_CLIP sigmas, so it gets there.
    assert (s[2200:] < 0.999).mean() > 0.99


def test_held_points_are_learned_clipped() -> None:
    t, x = _fleet_like()
    x[1000] += 1e6
    held = EwmaZ(learn_below=0.9999)
    free = EwmaZ()
    idx = np.zeros(len(x), dtype=np.int64)
    s_held, s_free = held.score(idx, t, x), free.score(idx, t, x)
    assert s_held[1000] == s_free[1000] > 0.9999
    # The free detector's variance swallowed the spike: it is blind for a while.
    assert (s_free[1001:1100] < 0.5).all()
    assert (s_held[1001:1100] >= 0.5).any()


@pytest.mark.parametrize(
    ("kind", "draw"),
    [
        ("gaussian", lambda rng, size: rng.normal(0.0, 1.0, size)),
        ("student_t3", lambda rng, size: rng.standard_t(3, size)),
        ("poisson5", lambda rng, size: rng.poisson(5.0, size).astype(float)),
        ("quantized", lambda rng, size: np.round(rng.normal(0.0, 1.0, size) * 2) / 2),
    ],
)
def test_a_score_s_is_reached_by_about_1_minus_s_of_normal_points(kind: str, draw) -> None:
    rng = np.random.default_rng(3)
    n_series, n = 20, 5000
    x = draw(rng, (n, n_series)).ravel()  # time-major: one point of every series per row
    idx = np.tile(np.arange(n_series), n)
    t = np.repeat(np.arange(n) * 60.0, n_series)
    s = EwmaZ().score(idx, t, x)[500 * n_series :]
    for level in (0.99, 0.999):
        ratio = float(np.mean(s >= level)) / (1.0 - level)
        assert 1 / 3 <= ratio <= 3, (kind, level, ratio)


def test_state_round_trip_mid_series_and_bad_state() -> None:
    t, x = _fleet_like()
    idx = np.zeros(len(x), dtype=np.int64)
    whole = EwmaZ().score(idx, t, x)
    first = EwmaZ()
    first.score(idx[:1234], t[:1234], x[:1234])
    second = EwmaZ()
    second.load_state_dict(first.state_dict())
    np.testing.assert_array_equal(second.score(idx[1234:], t[1234:], x[1234:]), whole[1234:])
    state = first.state_dict()
    state["mu"] = state["mu"][:0]
    with pytest.raises(ValueError, match="differ in length"):
        EwmaZ().load_state_dict(state)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"alpha": 0.0}, "alpha must be in"),
        ({"variance_alpha": 1.5}, "variance_alpha must be in"),
        ({"tail_alpha": 1.0}, "tail_alpha must be in"),
        ({"tail_start": 0.0}, "tail_start must be positive"),
        ({"warmup": 1}, "warmup must be at least 2"),
    ],
)
def test_bad_parameters_are_refused(params: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EwmaZ(**params)
