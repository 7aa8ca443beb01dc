"""Detectors: per-series scoring models, vectorized over batches.

Contract (:mod:`aiops.pipeline.detector`): ``score()`` returns one score per point in ``[0, 1]``,
higher meaning more anomalous; a score uses only its point and the points before it;
batch boundaries do not change scores; ``state_dict()`` round-trips exactly.

The names below are imported on first use (PEP 562), so that a rule on one detector (the
registry imports ``aiops.detectors.<module>``) does not import every other detector.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiops.detectors.calibration import EmpiricalCalibrator, gaussian_score
    from aiops.detectors.ensemble import Ensemble
    from aiops.detectors.envelope_novelty import EnvelopeNovelty
    from aiops.detectors.ewma_z import EwmaZ
    from aiops.detectors.isolation_forest import IsolationForestDetector
    from aiops.detectors.river_adapter import RiverAdapter
    from aiops.detectors.robust_ewma import RobustEWMA
    from aiops.detectors.stl_seasonal import STLSeasonal

#: Each exported name's module.
_MODULES = {
    "EnvelopeNovelty": "envelope_novelty",
    "EwmaZ": "ewma_z",
    "RobustEWMA": "robust_ewma",
    "EmpiricalCalibrator": "calibration",
    "Ensemble": "ensemble",
    "RiverAdapter": "river_adapter",
    "STLSeasonal": "stl_seasonal",
    "gaussian_score": "calibration",
    "IsolationForestDetector": "isolation_forest",
}

__all__ = [
    "EmpiricalCalibrator",
    "Ensemble",
    "EnvelopeNovelty",
    "EwmaZ",
    "IsolationForestDetector",
    "RiverAdapter",
    "RobustEWMA",
    "STLSeasonal",
    "gaussian_score",
]


def __getattr__(name: str) -> Any:
    """Import an exported name's module when the name is first asked for."""
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
