"""aiops.models.kswin: river's KSWIN with a cheaper test, decision for decision the same."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from river import drift

from aiops.models.drift import make_detector
from aiops.models.kswin import KSWIN, ks_2samp


def _streams() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    n = 1200
    shifted = rng.normal(0, 1, n)
    shifted[600:] += 1.5
    return {
        "stationary": rng.normal(0, 1, n),
        "level shift": shifted,
        "ties": np.round(rng.normal(0, 1, n)),  # few distinct values: KS ties
        "alert rates": (rng.uniform(size=n) < 0.02).astype(float),  # mostly zeros
    }


@pytest.mark.parametrize("stream", list(_streams()))
@pytest.mark.parametrize(
    "params",
    [{"seed": 0, "alpha": 0.0001}, {"seed": 3, "alpha": 0.005, "window_size": 50, "stat_size": 20}],
    ids=["defaults", "small window"],
)
def test_the_same_decisions_and_p_values_as_rivers_kswin(stream: str, params: dict) -> None:
    ours, theirs = KSWIN(**params), drift.KSWIN(**params)
    drifts = 0
    for x in _streams()[stream].tolist():
        ours.update(x)
        theirs.update(x)
        assert ours.drift_detected == theirs.drift_detected
        assert ours.p_value == theirs.p_value
        drifts += theirs.drift_detected
    assert list(ours.window) == list(theirs.window)
    if stream == "level shift":
        assert drifts >= 1  # the comparison covered a detection and the reset after it


def test_the_test_is_scipys_for_unequal_sizes_and_repeated_answers() -> None:
    from scipy import stats

    rng = np.random.default_rng(2)
    for _ in range(200):
        a = rng.normal(0, 1, 30).tolist()
        b = rng.normal(rng.uniform(0, 1), 1, 17).tolist()
        st, p = stats.ks_2samp(a, b, method="auto")
        assert ks_2samp(a, b) == (float(st), float(p))


def test_make_detector_gives_it_and_it_pickles() -> None:
    det = make_detector("kswin", {})
    assert type(det) is KSWIN
    assert (det.seed, det.alpha) == (0, 0.0001)
    for x in np.random.default_rng(1).normal(0, 1, 150).tolist():
        det.update(x)
    twin = pickle.loads(pickle.dumps(det))
    for x in np.random.default_rng(2).normal(0, 1, 150).tolist():
        det.update(x)
        twin.update(x)
        assert (det.drift_detected, det.p_value) == (twin.drift_detected, twin.p_value)
