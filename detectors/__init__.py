"""Detectors: per-series scoring models, vectorized over batches.

Contract (:mod:`aiops.detector`): ``score()`` returns one score per point in ``[0, 1]``,
higher meaning more anomalous; a score uses only its point and the points before it;
batch boundaries do not change scores; ``state_dict()`` round-trips exactly.
"""

from aiops.detectors.robust_ewma import RobustEWMA

__all__ = ["RobustEWMA"]
