"""Every check of the shared suite on every registered detector, ids "{detector}:{check}"."""

from __future__ import annotations

import collections
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# --import-mode=importlib keeps tests/ off sys.path; the check suite lives next to this file.
if os.fspath(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, os.fspath(Path(__file__).parent))

from detector_checks import (
    CHECKS,
    StateEncodingError,
    decode_state,
    encode_state,
    factory_for,
    roc_auc,
)

from aiops.detectors.calibration import TailCalibrator, gaussian_score, tail_score
from aiops.pipeline.detector import Detector, RoundDetector
from aiops.registry import DETECTORS

CASES = [(name, check) for name in DETECTORS.names() for check in CHECKS]


@pytest.mark.parametrize(("detector", "check"), CASES, ids=[f"{d}:{c}" for d, c in CASES])
def test_detector_check(detector: str, check: str) -> None:
    CHECKS[check](factory_for(DETECTORS.get(detector)))


# --- The checks themselves: each one must catch the fault it is about. -----------------


class _Mean(RoundDetector):
    """A small correct detector: running mean and mean absolute deviation per series.

    The deviation in sigmas is scored by its tail probability among the series' own
    deviations (the shared :class:`TailCalibrator`).
    """

    name = "_mean"

    def __init__(self, *, warmup: int = 10, learn_below: float = math.inf, seed: int = 0) -> None:
        super().__init__(learn_below=learn_below, seed=seed)
        self.warmup = warmup
        self._mu = np.zeros(0)
        self._dev = np.zeros(0)
        self._n = np.zeros(0, dtype=np.int64)
        self._tail = TailCalibrator()

    @property
    def n_series(self) -> int:
        return len(self._mu)

    def _grow(self, n: int) -> None:
        extra = n - len(self._mu)
        self._mu = np.r_[self._mu, np.zeros(extra)]
        self._dev = np.r_[self._dev, np.zeros(extra)]
        self._n = np.r_[self._n, np.zeros(extra, dtype=np.int64)]
        self._tail.grow(n)

    def _z(self, idx: Any, values: Any) -> Any:
        return np.abs(values - self._mu[idx]) / np.maximum(self._dev[idx] * 1.25, 1e-9)

    def _score_round(self, idx: Any, timestamps: Any, values: Any) -> Any:
        s = tail_score(self._tail.surprise(idx, self._z(idx, values)))
        return np.where(self._n[idx] >= self.warmup, s, 0.0)

    def _learn_round(self, idx: Any, timestamps: Any, values: Any, mask: Any) -> None:
        if mask is not None:
            idx, values = idx[mask], values[mask]
        warm = self._n[idx] >= self.warmup
        self._tail.update(idx[warm], self._z(idx[warm], values[warm]))
        n = self._n[idx] + 1
        r = values - self._mu[idx]
        self._mu[idx] += r / n
        self._dev[idx] += (np.abs(r) - self._dev[idx]) / n
        self._n[idx] = n

    def state_dict(self) -> dict[str, Any]:
        return {
            "mu": self._mu.copy(),
            "dev": self._dev.copy(),
            "n": self._n.copy(),
            "tail": self._tail.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._mu = np.array(state["mu"], dtype=np.float64)
        self._dev = np.array(state["dev"], dtype=np.float64)
        self._n = np.array(state["n"], dtype=np.int64)
        self._tail.load_state_dict(state["tail"])


class _PickleState(_Mean):
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "extra": collections.deque([1.0])}


class _AliasedState(_Mean):
    def state_dict(self) -> dict[str, Any]:
        return {"mu": self._mu, "dev": self._dev, "n": self._n}


class _BatchDependent(_Mean):
    def score(self, idx: Any, timestamps: Any, values: Any) -> Any:
        out = super().score(idx, timestamps, values)
        return out * (len(out) > 1)  # single points score 0


class _Unseeded(_Mean):
    def _score_round(self, idx: Any, timestamps: Any, values: Any) -> Any:
        return super()._score_round(idx, timestamps, values) * np.random.default_rng().random()


class _Mutating(_Mean):
    def score(self, idx: Any, timestamps: Any, values: Any) -> Any:
        if values.flags.writeable:
            values += 1.0
        return super().score(idx, timestamps, values)


class _LearnsNaN(_Mean):
    def score(self, idx: Any, timestamps: Any, values: Any) -> Any:
        out = super().score(idx, timestamps, values)
        self._n[np.asarray(idx)[np.isnan(values)]] += 1  # a NaN counts as a point
        return out


class _SharedAcrossSeries(_Mean):
    def _score_round(self, idx: Any, timestamps: Any, values: Any) -> Any:
        return super()._score_round(idx, timestamps, values) * (len(self._mu) < 4)


class _Unbounded(_Mean):
    def _score_round(self, idx: Any, timestamps: Any, values: Any) -> Any:
        return np.abs(values - self._mu[idx])


class _Random(_Mean):
    def _score_round(self, idx: Any, timestamps: Any, values: Any) -> Any:
        return np.random.default_rng(int(self._n.sum()) + self.seed).random(len(idx))


class _Gaussian(_Mean):
    """Scores the deviation by a Gaussian model: far too many high scores on heavy tails."""

    def _score_round(self, idx: Any, timestamps: Any, values: Any) -> Any:
        s = gaussian_score(self._z(idx, values))
        return np.where(self._n[idx] >= self.warmup, s, 0.0)


class _Squashed(_Mean):
    """A monotone map of a calibrated score (``s ** 50``): ranks right, means nothing."""

    def _score_round(self, idx: Any, timestamps: Any, values: Any) -> Any:
        return super()._score_round(idx, timestamps, values) ** 50


class _RenamedParam(_Mean):
    def __init__(self, *, window: int = 5, learn_below: float = math.inf, seed: int = 0) -> None:
        super().__init__(learn_below=learn_below, seed=seed)
        self._window = window


BROKEN = [
    ("state_round_trip", _PickleState),
    ("state_round_trip", _AliasedState),
    ("batch_boundaries", _BatchDependent),
    ("seed_determinism", _Unseeded),
    ("input_not_mutated", _Mutating),
    ("missing_values", _LearnsNaN),
    ("new_series", _SharedAcrossSeries),
    ("score_range", _Unbounded),
    ("ranking", _Random),
    ("params", _RenamedParam),
    ("calibration", _Gaussian),
    ("calibration", _Squashed),
]


def test_reference_detector_passes_every_check() -> None:
    for check in CHECKS.values():
        check(factory_for(_Mean))


@pytest.mark.parametrize(("check", "cls"), BROKEN, ids=[f"{c}:{cls.__name__}" for c, cls in BROKEN])
def test_check_catches_its_fault(check: str, cls: type[Detector]) -> None:
    with pytest.raises((AssertionError, StateEncodingError, AttributeError)):
        CHECKS[check](factory_for(cls))


def test_strict_encoder_allows_bytes_only_for_pickled_models() -> None:
    state = {"models": [b"\x80\x05", None], "n": np.arange(2), "x": 1.5, "ok": True}
    with pytest.raises(StateEncodingError, match=r"state\.models\[0\]: bytes"):
        encode_state(state)
    out = decode_state(encode_state(state, allow_bytes=True))
    assert out["models"] == [b"\x80\x05", None]
    assert out["n"].tolist() == [0, 1]
    for bad in ({"t": (1, 2)}, {1: 2}, {"a": np.array(["x"], dtype=object)}, {"s": {1}}):
        with pytest.raises(StateEncodingError):
            encode_state(bad)


def test_roc_auc_matches_sklearn() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    scores = np.round(rng.random(500), 2)  # with ties
    labels = rng.random(500) < 0.1
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
