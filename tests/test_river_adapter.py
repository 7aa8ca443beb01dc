"""RiverAdapter and EmpiricalCalibrator: pinned alerts, supported models, validation."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

if os.fspath(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, os.fspath(Path(__file__).parent))

from detector_checks import CHECKS, decode_state, encode_state, factory_for

from aiops.detectors.calibration import EmpiricalCalibrator, gaussian_score
from aiops.detectors.river_adapter import RiverAdapter, _fix_additive_season


def spiky_series(seed: int = 7, n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    """Minute points around 50 (sigma 1), spikes at 320, 410 and 505, a shift at 540."""
    rng = np.random.default_rng(seed)
    x = 50 + rng.normal(0, 1, n)
    for p, d in ((320, 9.0), (410, -8.0), (505, 12.0)):
        if p < n:
            x[p] += d
    x[540:550] += 6.0
    return np.arange(n) * 60.0, x


def _score(det: RiverAdapter, ts: np.ndarray, x: np.ndarray) -> np.ndarray:
    return det.score(np.zeros(len(x), dtype=np.int64), ts, x)


def test_pinned_alerts_half_space_trees() -> None:
    ts, x = spiky_series()
    det = RiverAdapter(model_params={"n_trees": 25}, seed=1)
    scores = _score(det, ts, x)
    # Warm-up: the first window (250 points), 30 more, and 20 for the calibrator.
    assert not scores[:300].any()
    # The four incidents rank first, and the two largest reach 0.99. HalfSpaceTrees' raw
    # score saturates, so the spikes are no rarer for it than the top of the calibration
    # window: 320 and 410 stay at 0.94 and 0.96.
    assert sorted(np.argsort(-scores)[:4].tolist()) == [320, 410, 505, 540]
    assert np.flatnonzero(scores >= 0.99).tolist() == [505, 540]
    assert scores[[320, 410]].min() > 0.9


def test_pinned_alerts_predictive_snarimax() -> None:
    ts, x = spiky_series()
    det = RiverAdapter(model="PredictiveAnomalyDetection", seed=1)
    scores = _score(det, ts, x)
    # 250 is noise of -3.25 sigma (about one point in 900 for a Gaussian). Every incident
    # reaches 0.99; the dip at 410 and the shift at 540 are less rare than the spike at
    # 320 was, so the refractory memory holds them below the default threshold (0.998).
    assert np.flatnonzero(scores >= 0.99).tolist() == [250, 320, 410, 505, 540, 541, 542]
    assert np.flatnonzero(scores >= 0.998).tolist() == [250, 320, 505]
    # Without it the dip reaches the default threshold too.
    det = RiverAdapter(model="PredictiveAnomalyDetection", refractory=0.0, seed=1)
    no_memory = _score(det, ts, x)
    assert np.flatnonzero(no_memory >= 0.998).tolist() == [250, 320, 410, 505]


MODELS: dict[str, dict[str, Any]] = {
    "OneClassSVM": {"model": "OneClassSVM", "model_params": {}},
    "LocalOutlierFactor": {"model": "LocalOutlierFactor", "model_params": {"window_size": 100}},
    "LODA": {"model": "LODA", "model_params": {}},
    "PAD-SNARIMAX": {
        "model": "PredictiveAnomalyDetection",
        "model_params": {"forecaster": "SNARIMAX", "forecaster_params": {"p": 3, "d": 1, "q": 1}},
    },
    "PAD-HoltWinters": {
        "model": "PredictiveAnomalyDetection",
        "model_params": {
            "forecaster": "HoltWinters",
            "forecaster_params": {"alpha": 0.3, "beta": 0.05, "gamma": 0.2, "seasonality": 24},
        },
    },
    # Its raw score saturates at 1, so all incidents tie and the refractory memory would
    # keep all but the first below the others' onsets: it ranks with the memory off.
    "GaussianScorer": {"model": "GaussianScorer", "model_params": {}, "refractory": 0.0},
    "HalfSpaceTrees-minmax": {"scaler": "minmax", "features": ["value"]},
}
#: The shared checks on every supported model (the registry's run uses HalfSpaceTrees).
MODEL_CHECKS = ["batch_boundaries", "state_round_trip", "missing_values", "score_range", "ranking"]
CASES = [(m, c) for m in MODELS for c in MODEL_CHECKS]


@pytest.mark.parametrize(("model", "check"), CASES, ids=[f"{m}:{c}" for m, c in CASES])
def test_shared_checks_on_each_model(model: str, check: str) -> None:
    CHECKS[check](factory_for(RiverAdapter, **MODELS[model]))


def test_state_holds_pickled_models_and_plain_arrays() -> None:
    ts, x = spiky_series(n=120)
    det = RiverAdapter(model="PredictiveAnomalyDetection")
    det.score(np.array([0, 2] * 60), np.repeat(ts[:60], 2), x[:120])
    state = det.state_dict()
    assert RiverAdapter.pickled_models
    assert [type(m).__name__ for m in state["models"]] == ["bytes", "NoneType", "bytes"]
    with pytest.raises(TypeError, match=r"state\.models\[0\]: bytes is not plain data"):
        encode_state(state)
    blob = encode_state(state, allow_bytes=True)
    other = RiverAdapter(model="PredictiveAnomalyDetection")
    other.load_state_dict(decode_state(blob))
    assert other.n_series == 3


def test_holt_winters_on_a_zero_series_and_its_additive_start() -> None:
    det = RiverAdapter(
        model="PredictiveAnomalyDetection",
        model_params={
            "forecaster": "HoltWinters",
            "forecaster_params": {"alpha": 0.3, "beta": 0.1, "gamma": 0.2, "seasonality": 4},
        },
    )
    scores = _score(det, np.arange(100.0), np.zeros(100))  # river alone divides by zero here
    assert scores.max() < 0.5  # all raw scores tie: mid-rank, below one half

    from river import time_series

    hw = time_series.HoltWinters(alpha=0.3, beta=0.1, gamma=0.2, seasonality=4)
    for y in (2.0, 4.0, 2.0, 0.0):
        hw.learn_one(y)
    _fix_additive_season(hw)
    assert list(hw.season) == [0.0, 2.0, 0.0, -2.0]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"model": "IsolationForest"},
            r'unknown river anomaly model "IsolationForest"; valid models: .*HalfSpaceTrees',
        ),
        ({"model": "QuantileFilter"}, r'unknown river anomaly model "QuantileFilter"'),
        ({"model_params": {"trees": 3}}, r"bad model_params for river HalfSpaceTrees: .*trees"),
        ({"model_params": {"seed": 3}}, r"set the detector's seed, not model_params.seed"),
        ({"features": ["value", "lag"]}, r"features must be a non-empty list of"),
        ({"features": []}, r"features must be a non-empty list of"),
        ({"scaler": "robust"}, r"scaler must be one of"),
        ({"warmup": 10}, r"warmup 10 is shorter than the 250 points HalfSpaceTrees needs"),
        (
            {"model": "PredictiveAnomalyDetection", "model_params": {"forecaster": "ARIMA"}},
            r"forecaster must be one of \('SNARIMAX', 'HoltWinters'\), got 'ARIMA'",
        ),
        (
            {
                "model": "PredictiveAnomalyDetection",
                "model_params": {"forecaster": "HoltWinters"},
                "scaler": "standard",
            },
            r'HoltWinters needs scaler "auto" or "minmax"',
        ),
        ({"calibration_min": 0}, r"min_count must be in \[1, window=256\]"),
    ],
)
def test_constructor_validates(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RiverAdapter(**params)


def test_one_class_svm_is_negated_so_outliers_score_high() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 600)
    x[500] = 8.0
    x[550] = -8.0
    for seed in (3, 4):
        scores = _score(RiverAdapter(model="OneClassSVM", seed=seed), np.arange(600.0), x)
        # Un-negated, the outliers would rank lowest. (They tie with the top of the
        # calibration window, so they rank high without reaching 0.99.)
        top = np.quantile(scores, 0.99)
        assert scores[500] >= top, seed
        assert scores[550] >= top, seed


# --- EmpiricalCalibrator ----------------------------------------------------------------


def _feed(cal: EmpiricalCalibrator, raw: np.ndarray) -> np.ndarray:
    out = np.empty(len(raw))
    i0 = np.zeros(1, dtype=np.int64)
    for j, r in enumerate(raw):
        out[j] = cal.transform(i0, np.array([r]))[0]
        cal.update(i0, np.array([r]))
    return out


def test_calibrator_is_uniform_on_its_own_distribution() -> None:
    raw = np.random.default_rng(1).gamma(2.0, size=5000)  # skewed, any scale
    out = _feed(EmpiricalCalibrator(), raw)[300:]
    assert abs(np.mean(out >= 0.99) - 0.01) < 0.006
    assert abs(np.mean(out >= 0.9) - 0.1) < 0.02
    assert np.all(
        np.diff(
            EmpiricalCalibrator().transform(np.zeros(3, dtype=np.int64), np.array([1.0, 2.0, 3.0]))
        )
        >= 0
    )


def test_calibrator_recovers_after_an_incident_and_learns_a_lasting_rise() -> None:
    rng = np.random.default_rng(2)
    raw = rng.normal(0, 1, 900)
    raw[300:303] = 50.0  # a short incident: three extreme raw scores
    raw[450] = 5.0  # a moderate one afterwards
    out = _feed(EmpiricalCalibrator(), raw)
    assert out[300] > 0.999
    assert out[450] > 0.99  # the incident did not blunt the calibration
    rise = np.r_[rng.normal(0, 1, 300), rng.normal(10, 1, 600)]
    out = _feed(EmpiricalCalibrator(), rise)
    assert np.mean(out[400:] >= 0.99) < 0.03  # the new normal is learned


def test_calibrator_state_round_trip_and_validation() -> None:
    cal = EmpiricalCalibrator(window=8, min_count=2)
    cal.update(np.array([0, 3]), np.array([1.0, 2.0]))
    other = EmpiricalCalibrator(window=8, min_count=2)
    other.load_state_dict(decode_state(encode_state(cal.state_dict())))
    probe = np.array([0, 3, 5]), np.array([1.5, 2.5, 1.0])
    np.testing.assert_array_equal(other.transform(*probe), cal.transform(*probe))
    with pytest.raises(ValueError, match=r"expected \(n, 16\)"):
        EmpiricalCalibrator(window=16, min_count=2).load_state_dict(cal.state_dict())
    with pytest.raises(ValueError, match="window must be at least 2"):
        EmpiricalCalibrator(window=1)


def test_gaussian_score_matches_erf() -> None:
    import math

    z = np.linspace(0, 8, 81)
    expected = np.array([math.erf(v / math.sqrt(2)) for v in z])
    np.testing.assert_allclose(gaussian_score(z), expected, atol=2e-7)
