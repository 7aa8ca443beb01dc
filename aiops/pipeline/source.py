"""The source contract: where batches come from.

A source turns bytes from somewhere (a Kafka topic, a PromQL endpoint, a file, a
simulator) into :class:`~aiops.types.Batch` objects.

Contract, pitfalls included:

- ``next_batch()`` never blocks for long. It returns an empty batch when nothing is ready
  now; the daemon decides how long to sleep.
- ``snapshot()`` returns the position *after the last item emitted* by ``next_batch()``
  (Kafka offsets per partition, the last evaluated timestamp per query, a byte offset in
  a file). It must be JSON-serializable: it is stored in the daemon's checkpoint next to
  the detector states computed from exactly those items.
- A source builds all of its position from the ``resume`` argument of its constructor,
  never from anything else (not from Kafka's committed offsets, not from a file of its
  own): the checkpoint is the source of truth.
- Decoding errors are data: return them as :class:`~aiops.types.Reject` items in the
  batch. Raising from ``next_batch()`` is reserved for the source itself failing (broker
  unreachable); the daemon then backs off and reports it in health.
- ``commit(position)`` is called after a checkpoint covering ``position`` is durable;
  a source may use it to publish its position (Kafka offsets, for lag monitoring).
- ``exhausted`` is true once a finite source (a file replay) has emitted everything.
- Pull sources (``accepts_queries = True``, e.g. Prometheus) evaluate the queries of the
  rules that name them: the daemon passes ``queries=[QuerySpec, ...]`` to their
  constructor, and each batch they emit sets ``Batch.rule`` to the rule it answers.
  Push sources (Kafka, files, remote write, the simulator) emit series that rules pick
  with selectors.
- Pull sources can also replay the past: ``history(start, end)`` returns a *finite*
  source of the same answers, at the same evaluation times, that live evaluation would
  have produced over ``[start, end)``. Backtests use it; push sources have no history.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple

from aiops.types import Batch

__all__ = ["QuerySpec", "Source", "SourceError"]


class QuerySpec(NamedTuple):
    """One rule's query, as handed to a pull source."""

    rule: str  # the rule key, group/alert; goes into Batch.rule
    query: str  # e.g. PromQL
    interval: float  # seconds between evaluations


class SourceError(RuntimeError):
    """The source itself failed (not the data): worth a retry after a back-off."""


class Source(ABC):
    """Base class of every source; see the module docstring for the contract."""

    #: The id of this source in the daemon config (``sources:`` key).
    source_id: str = ""
    #: True for pull sources, which take ``queries=`` in their constructor.
    accepts_queries: ClassVar[bool] = False

    @abstractmethod
    def next_batch(self) -> Batch:
        """Return what is ready now, or an empty batch; never block for long."""

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """The JSON-serializable position after the last item emitted."""

    def commit(self, position: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Called once a checkpoint holding ``position`` is durable."""

    @property
    def exhausted(self) -> bool:
        """True once a finite source has emitted everything it will ever emit."""
        return False

    @property
    def progress(self) -> float | None:
        """How much of a finite source has been emitted, in [0, 1]; None when unknown."""
        return None

    def history(self, start: float, end: float) -> Source:
        """Pull sources: a finite source of the rules' answers over ``[start, end)``.

        The returned source evaluates the same queries at the same evaluation times as
        live evaluation would have, synchronously in ``next_batch()`` (one query per
        call), is ``exhausted`` once ``end`` is covered, and raises
        :class:`SourceError` naming the rule on the first failed query (a backtest
        must not silently skip data). Its ``progress`` is the share of the time range
        covered. Closing it closes this source. Push sources raise
        :class:`NotImplementedError`: what they will receive is not theirs to replay.
        """
        raise NotImplementedError(f"{type(self).__name__} has no history to replay")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files; the source is not used afterwards."""
