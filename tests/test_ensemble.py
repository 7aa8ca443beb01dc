"""Ensemble: pinned alerts, combination methods, nested state, validation."""

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

from detector_checks import CHECKS, decode_state, encode_state, factory_for, run_all

from aiops.detectors.ensemble import Ensemble
from aiops.registry import DETECTORS

HOUR = 3600.0
STL = {"type": "stl", "params": {"period": 24, "buffer_size": 24 * 7, "refit_every": 24, "seed": 1}}
PAD = {"type": "river", "params": {"model": "PredictiveAnomalyDetection", "seed": 2}}


def series(seed: int = 5, n: int = 24 * 14) -> tuple[np.ndarray, np.ndarray]:
    """Hourly, a daily cycle of 10 sigma, two spikes and a dip."""
    rng = np.random.default_rng(seed)
    k = np.arange(n)
    x = 50 + 10 * np.sin(2 * np.pi * k / 24) + rng.normal(0, 1, n)
    for p, d in ((150, 8.0), (230, -7.0), (290, 12.0)):
        if p < n:
            x[p] += d
    return 1_700_000_000.0 + k * HOUR, x


def _score(det: Any, ts: np.ndarray, x: np.ndarray) -> np.ndarray:
    out: np.ndarray = det.score(np.zeros(len(x), dtype=np.int64), ts, x)
    return out


def test_pinned_alerts() -> None:
    ts, x = series()
    det = Ensemble(members=[STL, PAD])
    scores = _score(det, ts, x)
    # min_p: the members' smallest tail probability, doubled. All three incidents reach
    # the default threshold; the -7 sigma dip at 230 is the least rare (0.9989).
    assert np.flatnonzero(scores >= 0.998).tolist() == [150, 230, 290]
    assert np.flatnonzero(scores >= 0.999).tolist() == [150, 290]
    assert not scores[:50].any()  # both warm up: PAD for 50 points, stl for 72


@pytest.mark.parametrize("method", ["min_p", "max", "mean", "noisy_or"])
def test_combination_of_the_members_scores(method: str) -> None:
    ts, x = series()
    a = _score(DETECTORS.create("stl", **STL["params"]), ts, x)
    b = _score(DETECTORS.create("river", **PAD["params"]), ts, x)
    expected = {
        "min_p": np.clip(1 - 2 * np.minimum(1 - a, 1 - b), 0, 1),
        "max": np.maximum(a, b),
        "mean": (a + b) / 2,
        "noisy_or": 1 - (1 - a) * (1 - b),
    }[method]
    got = _score(Ensemble(members=[STL, PAD], method=method), ts, x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)


def test_state_nests_the_members_and_signals_pickles() -> None:
    ts, x = series(n=200)
    det = Ensemble(members=[STL, PAD])
    assert det.pickled_models
    assert not Ensemble(members=[STL]).pickled_models
    _score(det, ts, x)
    state = det.state_dict()
    assert len(state["members"]) == 2
    assert set(state["members"][0]) >= {"buf_v", "profile"}
    assert isinstance(state["members"][1]["models"][0], bytes)
    other = Ensemble(members=[STL, PAD])
    other.load_state_dict(decode_state(encode_state(state, allow_bytes=True)))
    with pytest.raises(ValueError, match="ensemble state has 2 members, the ensemble has 1"):
        Ensemble(members=[STL]).load_state_dict(state)


def test_members_get_derived_seeds_and_learn_below() -> None:
    det = Ensemble(
        members=[{"type": "river"}, {"type": "river", "params": {"seed": 9}}],
        learn_below=0.999,
        seed=4,
    )
    seeds = [m.seed for m in det._members]
    assert seeds[1] == 9
    assert seeds[0] != 9
    assert seeds[0] == Ensemble(members=[{"type": "river"}], seed=4)._members[0].seed
    assert seeds[0] != Ensemble(members=[{"type": "river"}], seed=5)._members[0].seed
    assert [m.learn_below for m in det._members] == [0.999, 0.999]
    assert Ensemble(members=[{"type": "river"}])._members[0].learn_below == math.inf
    assert det.params() == {
        "members": [{"type": "river"}, {"type": "river", "params": {"seed": 9}}],
        "method": "min_p",
        "learn_below": 0.999,
        "seed": 4,
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"members": []}, r"members must be a non-empty list"),
        ({"members": {"type": "stl"}}, r"members must be a non-empty list"),
        ({"members": [STL], "method": "median"}, r"method must be one of"),
        ({"members": [{"params": {}}]}, r"members\[0\] must be a mapping with a type"),
        ({"members": [{"type": "stl", "param": {}}]}, r"members\[0\]: unknown keys \['param'\]"),
        (
            {"members": [STL, {"type": "arima"}]},
            r'unknown detector type "arima"; valid types: .*stl',
        ),
        (
            {"members": [STL, {"type": "stl", "params": {"period": 1}}]},
            r'members\[1\] \(type "stl"\): period must be',
        ),
        ({"members": [{"type": "stl", "params": {"alpah": 1}}]}, r"members\[0\].*alpah"),
    ],
)
def test_constructor_validates(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Ensemble(**params)


@pytest.mark.parametrize("check", CHECKS)
def test_shared_checks_with_a_river_member_nested(check: str) -> None:
    from aiops.detectors.river_adapter import RiverAdapter

    # One river member (the slow, per-point tier: two of them took 200-300 s of this
    # test on a loaded machine), an ensemble nested beside it; a check a test, so that
    # the suite's workers share them.
    inner = {
        "type": "ensemble",
        "params": {"members": [{"type": "ewma_z"}, {"type": "robust_ewma"}]},
    }
    hst = {"type": "river", "params": RiverAdapter.check_params()}
    CHECKS[check](factory_for(Ensemble, members=[inner, hst]))


def test_member_weights_split_the_false_alarm_budget() -> None:
    ts, x = series()
    a = _score(DETECTORS.create("stl", **STL["params"]), ts, x)
    b = _score(DETECTORS.create("river", **PAD["params"]), ts, x)
    weighted = [{**STL, "weight": 9}, {**PAD, "weight": 1}]  # normalized: 0.9 and 0.1
    got = _score(Ensemble(members=weighted), ts, x)
    expected = np.clip(1 - np.minimum((1 - a) / 0.9, (1 - b) / 0.1), 0, 1)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)
    det = Ensemble(members=weighted)
    assert det.bonferroni_factor == pytest.approx(1 / 0.9)
    assert Ensemble(members=[STL, PAD]).bonferroni_factor == 2


@pytest.mark.parametrize(
    ("members", "method", "message"),
    [
        ([{**STL, "weight": 0}], "min_p", r"members\[0\]: weight must be a positive number"),
        ([{**STL, "weight": "1"}], "min_p", r"members\[0\]: weight must be a positive number"),
        ([STL, {**PAD, "weight": 2.0}], "max", r'member weights need method "min_p"'),
    ],
)
def test_bad_weights_are_refused(members: list[dict[str, Any]], method: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Ensemble(members=members, method=method)


def test_shared_checks_with_weighted_ewma_z_and_envelope_novelty() -> None:
    from aiops.detectors.envelope_novelty import EnvelopeNovelty
    from aiops.detectors.ewma_z import EwmaZ

    members = [
        {"type": "ewma_z", "params": EwmaZ.check_params(), "weight": 0.9},
        {"type": "envelope_novelty", "params": EnvelopeNovelty.check_params(), "weight": 0.1},
    ]
    run_all(factory_for(Ensemble, members=members))


def test_a_bounded_member_counts_down_to_the_floor_only() -> None:
    from aiops.detectors.ensemble import AT_MOST_P_FLOOR
    from aiops.detectors.envelope_novelty import EnvelopeNovelty
    from aiops.detectors.ewma_z import EwmaZ

    rng = np.random.default_rng(3)
    x = 10.0 + rng.normal(0.0, 1.0, 300)
    x[250] = 60.0  # a record far beyond the envelope, and 50 sigmas
    ts = np.arange(300.0) * 60.0
    env = {"type": "envelope_novelty", "params": EnvelopeNovelty.check_params()}
    ewma = {"type": "ewma_z", "params": EwmaZ.check_params()}
    assert _score(DETECTORS.create("envelope_novelty", **env["params"]), ts, x)[250] == 1.0
    # envelope_novelty's calibration is a bound: alone in an ensemble it reaches the floor.
    alone = _score(Ensemble(members=[env]), ts, x)
    assert alone[250] == pytest.approx(1.0 - AT_MOST_P_FLOOR, abs=1e-12)
    assert alone.max() <= 1.0 - AT_MOST_P_FLOOR
    # A tail-calibrated member is not floored: the spike is far rarer than 1e-6.
    both = _score(Ensemble(members=[{**ewma, "weight": 0.9}, {**env, "weight": 0.1}]), ts, x)
    assert 1.0 - both[250] < 1e-9
    # Nor is a nested ensemble (its own members are).
    nested = _score(Ensemble(members=[{"type": "ensemble", "params": {"members": [env]}}]), ts, x)
    np.testing.assert_array_equal(nested, alone)


def test_shared_checks_with_the_default_members() -> None:
    from aiops.detectors.ensemble import DEFAULT_MEMBERS
    from aiops.detectors.envelope_novelty import EnvelopeNovelty
    from aiops.detectors.ewma_z import EwmaZ

    small = {"ewma_z": EwmaZ.check_params(), "envelope_novelty": EnvelopeNovelty.check_params()}
    members = [
        {**m, "params": {**small[m["type"]], **m.get("params", {})}} for m in DEFAULT_MEMBERS
    ]
    assert members[0]["params"]["shift_weight"] == 0.45  # the level-shift channel is checked
    assert members[0]["params"]["drift_weight"] == 0.05  # and the slow-drift channel
    run_all(factory_for(Ensemble, members=members))
