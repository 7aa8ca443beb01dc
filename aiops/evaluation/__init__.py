"""Offline evaluation of detectors against labelled benchmarks.

:mod:`aiops.evaluation.nab` scores detectors on the Numenta Anomaly Benchmark (NAB v1.1)
exactly as NAB does: anomaly scores are in ``[0, 1]``, higher meaning more anomalous, and
a point is a detection when its score is at or above the threshold. Results are NAB's
normalized scores (null detector 0, perfect detector 100) for the three NAB profiles,
both at the threshold NAB's sweep would tune on the labels and at the detector's own
alerts.

:mod:`aiops.evaluation.labelled` scores any folder of ``timestamp,value,label`` files with
the protocol of the web-service KPI benchmarks (segments found within a delay, pooled
F1); import it from there (its ``evaluate`` is not NAB's).
"""

from aiops.evaluation.nab import (
    NAB_PROFILES,
    NOTHING_DETECTED,
    PROBATION_PERCENT,
    EvaluationReport,
    FileResult,
    NabCorpus,
    NabFile,
    NabResult,
    Profile,
    ProfileScores,
    ScoreFile,
    evaluate,
    load_corpus,
    load_detector_results,
    load_profiles,
    load_published_thresholds,
    load_result_scores,
    probation_length,
    scaled_sigmoid,
    score_at_threshold,
    score_detections,
    score_profiles,
    sweep,
    sweep_curve,
    sweep_profiles,
)

__all__ = [
    "NAB_PROFILES",
    "NOTHING_DETECTED",
    "PROBATION_PERCENT",
    "EvaluationReport",
    "FileResult",
    "NabCorpus",
    "NabFile",
    "NabResult",
    "Profile",
    "ProfileScores",
    "ScoreFile",
    "evaluate",
    "load_corpus",
    "load_detector_results",
    "load_profiles",
    "load_published_thresholds",
    "load_result_scores",
    "probation_length",
    "scaled_sigmoid",
    "score_at_threshold",
    "score_detections",
    "score_profiles",
    "sweep",
    "sweep_curve",
    "sweep_profiles",
]
