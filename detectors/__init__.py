"""Detectors: per-series scoring models, vectorized over batches.

Contract (:mod:`aiops.pipeline.detector`): ``score()`` returns one score per point in ``[0, 1]``,
higher meaning more anomalous; a score uses only its point and the points before it;
batch boundaries do not change scores; ``state_dict()`` round-trips exactly.
"""

from aiops.detectors.calibration import EmpiricalCalibrator, gaussian_score
from aiops.detectors.ensemble import Ensemble
from aiops.detectors.envelope_novelty import EnvelopeNovelty
from aiops.detectors.ewma_z import EwmaZ
from aiops.detectors.isolation_forest import IsolationForestDetector
from aiops.detectors.river_adapter import RiverAdapter
from aiops.detectors.robust_ewma import RobustEWMA
from aiops.detectors.stl_seasonal import STLSeasonal

__all__ = ["EnvelopeNovelty", "EwmaZ", "RobustEWMA"]
__all__ += ["EmpiricalCalibrator", "Ensemble", "RiverAdapter", "STLSeasonal", "gaussian_score"]
__all__ += ["IsolationForestDetector"]
