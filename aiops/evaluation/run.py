"""``aiops eval nab``: run a detector through the daemon's scoring path over NAB."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from aiops.evaluation.nab import EvaluationReport, evaluate, load_corpus
from aiops.pipeline.detector import DEFAULT_THRESHOLD
from aiops.pipeline.scoring import DEFAULT_DETECTOR, score_series
from aiops.types import BoolArray, FloatArray

__all__ = ["run_nab", "score_nab"]


def _score_file(
    timestamps: FloatArray,
    values: FloatArray,
    *,
    detector: str,
    params: Mapping[str, Any],
    threshold: float,
) -> tuple[FloatArray, BoolArray]:
    out = score_series(timestamps, values, detector=detector, params=params, threshold=threshold)
    return out.scores, out.alerts


def score_nab(
    data_dir: Path,
    *,
    detector: str | None = None,
    params: Mapping[str, Any] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    jobs: int = 1,
    progress: bool = True,
) -> EvaluationReport:
    """Evaluate one detector configuration on the NAB corpus at ``data_dir``."""
    corpus = load_corpus(data_dir)
    fn = functools.partial(
        _score_file,
        detector=detector or DEFAULT_DETECTOR,
        params=dict(params or {}),
        threshold=threshold,
    )
    return evaluate(corpus, fn, progress=progress, jobs=jobs)


def run_nab(
    data_dir: Path,
    *,
    detector: str | None,
    params: Mapping[str, Any],
    threshold: float,
    jobs: int,
) -> None:
    """Print the NAB report of one detector configuration (the CLI command)."""
    name = detector or DEFAULT_DETECTOR
    report = score_nab(data_dir, detector=name, params=params, threshold=threshold, jobs=jobs)
    title = f"NAB v1.1, {name} {dict(params) or ''}".rstrip()
    click.echo(report.to_markdown(title=title))
