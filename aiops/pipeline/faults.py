"""One rule's faults: what the engine does when a rule raises on a batch.

A rule that raises (its detector, its post-rules, a template, a bug) must not stop the
other rules or the sources. The engine catches the exception, marks the rule
*degraded* (:class:`RuleHealth`), and hands the daemon a :class:`RuleFailure`: the
batch's points that rule selected, which the daemon keeps aside in ``rejects.jsonl``
(reason ``rule_error``) before any later checkpoint is written. The next batch is the
retry: a batch that goes through marks the rule healthy again.

What a failed batch leaves behind, so that a checkpoint taken after it is true:

- The rule's own state (hit window, alert states, recent window, last values) is not
  advanced: the detector scores before any of it is touched, and nothing after the
  detector may raise for a reason of the data (a template that fails to render gives
  its error as the annotation text, see :func:`render_or_error`).
- Its points are not lost: they are kept aside (counted per rule, and written to the
  rejects file, which the daemon syncs before each checkpoint), so the checkpoint's
  source positions cover them as "processed as rejects".
- A detector that raised part way through a batch may have learned from the points
  before the failing one (a detector's state cannot be copied per batch at fleet
  scale: a full copy costs more than scoring the batch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiops.types import IntArray, LogRecord

__all__ = ["RuleFailure", "RuleHealth", "render_or_error"]

log = logging.getLogger(__name__)

#: Series named in the log line and health of a failed batch (the rest are counted).
NAMED_SERIES = 5


@dataclass
class RuleHealth:
    """A rule's fault record: whether its last batch failed, and counts since start.

    ``degraded`` is True from a failed batch until the next batch that goes through.
    ``consecutive`` counts failed batches in a row; ``failed_batches`` and
    ``failed_points`` count since the start; ``template_errors`` counts annotations
    that failed to render (the alert was still sent, with the error as the text).
    """

    degraded: bool = False
    consecutive: int = 0
    failed_batches: int = 0
    failed_points: int = 0
    template_errors: int = 0
    last_error: str = ""
    last_series: tuple[str, ...] = ()

    def failed(self, error: str, points: int, series: Sequence[str]) -> None:
        """Record one failed batch of ``points`` points."""
        self.degraded = True
        self.consecutive += 1
        self.failed_batches += 1
        self.failed_points += points
        self.last_error = error
        self.last_series = tuple(series[:NAMED_SERIES])

    def succeeded(self) -> int:
        """Record a batch that went through; returns how many had failed in a row before."""
        was = self.consecutive
        self.degraded = False
        self.consecutive = 0
        return was

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready copy for the health report."""
        return {
            "state": "degraded" if self.degraded else "ok",
            "last_error": self.last_error,
            "failed_batches_in_a_row": self.consecutive,
            "failed_batches": self.failed_batches,
            "failed_points": self.failed_points,
            "template_errors": self.template_errors,
            "series": list(self.last_series),
        }


@dataclass(frozen=True)
class RuleFailure:
    """One rule's failed batch: which points of the batch it lost, and why.

    ``positions`` index the batch's points (those of the series the rule had
    registered, or all of them when it could not tell); ``series`` names some of their
    series; ``records`` are the batch's log records when the log rules failed.
    """

    rule: str
    source: str
    error: str
    positions: IntArray
    series: tuple[str, ...]
    records: Sequence[LogRecord] = ()


def render_or_error(
    render: Callable[[str, Mapping[str, Any]], str],
    template: str,
    context: Mapping[str, Any],
    on_error: Callable[[str], None],
) -> str:
    """``render(template, context)``, or the error as text when rendering raises.

    Like Prometheus, which sends an alert whose template failed with the error in
    place of the text: the alert matters more than its annotation.
    """
    try:
        return render(template, context)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        on_error(message)
        return f"<error expanding template: {message}>"
