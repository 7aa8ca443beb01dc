"""EnvelopeNovelty: pinned alerts on seeded series, the scalar replay path, NAB floor."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from aiops.detectors.envelope_novelty import EnvelopeNovelty
from aiops.scoring import DEFAULT_DETECTOR, score_series

#: Measured 65.93 (swept) and 65.77 (own alerts) on NAB v1.1 standard; see
#: bench/quality/README.md. The floor leaves room for harmless numeric changes only.
NAB_STANDARD_FLOOR = 64.0


def _incidents(seed: int = 7, n: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n) * 300.0
    x = 50 + 5 * np.sin(2 * np.pi * np.arange(n) / 288) + rng.normal(0, 1, n)
    x[600] += 25  # spike
    x[900:] += 12  # level shift
    x[1200:1230] += rng.normal(0, 6, 30)  # volatility burst
    return t, x


PINNED = [104, 126, 145, 156, 190, 361, 495, 600, 904, 1201]


def test_is_the_default() -> None:
    assert DEFAULT_DETECTOR == "envelope_novelty"


def test_pinned_alerts_at_defaults() -> None:
    t, x = _incidents()
    out = score_series(t, x)
    # The first day builds the envelopes (a few early records), then one alert per
    # incident: the spike, the level shift (once, not on every shifted point), the burst.
    assert np.flatnonzero(out.alerts).tolist() == PINNED


def test_missing_values_change_nothing() -> None:
    t, x = _incidents()
    gappy = x.copy()
    gappy[700:710] = np.nan
    out = score_series(t, gappy)
    assert np.flatnonzero(out.alerts).tolist() == PINNED
    assert (out.scores[700:710] == 0).all()


def test_constant_series_is_quiet_then_first_move_scores_one() -> None:
    det = EnvelopeNovelty(warmup=10)
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
    for bad in ({"refractory": 1.0}, {"tolerance": 0.0}, {"alert_novelty": 1.0}, {"warmup": 1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            EnvelopeNovelty(**bad)


@pytest.mark.slow
def test_nab_standard_floor_at_defaults() -> None:
    env = os.environ.get("AIOPS_NAB_DIR")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared/datasets/nab"
    if not (root / "labels" / "combined_windows.json").is_file():
        pytest.fail(f"NAB corpus not found at {root}: set AIOPS_NAB_DIR to the NAB v1.1 root")
    from aiops.evaluation.run import score_nab

    report = score_nab(root, jobs=2, progress=False)
    assert report.swept["standard"].score >= NAB_STANDARD_FLOOR
    assert report.alerts is not None
    assert report.alerts["standard"].score >= NAB_STANDARD_FLOOR
