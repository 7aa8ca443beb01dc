"""The daemon's memory budget (``limits.max_memory``): new series wait while RSS is over it.

Series are the daemon's memory: every series a rule takes costs a row of detector state,
its key in the rule's registry and its alert state. Caps per rule
(``limits.max_series_per_rule``) bound each rule; the budget bounds the process as a
whole, whatever the number of rules and whatever else grows (queues, caches, a burst of
remote-write requests in flight).

:class:`MemoryGuard` reads the process' resident set size at most once a second (one
read of ``/proc/self/statm``) from the data loop. At or above the budget, every rule
stops taking new series: they are counted as dropped (``aiops_rule_series_dropped_total``,
as over the cap) while the series already taken are still scored, and the transition is
logged and shown in ``aiops_memory_budget_exceeded``. Admission resumes once RSS is back
under :data:`RESUME_FRACTION` of the budget (forgotten stale series free their rows for
new ones; Python's allocator gives memory back to the system only in part, so the
hysteresis keeps the guard from flapping).

>>> from aiops.pipeline.series import SeriesRegistry
>>> guard = MemoryGuard(1000, rss=lambda: 1200, clock=lambda: 0.0)
>>> class Rule:
...     def __init__(self): self.registry = SeriesRegistry(lambda k: True, max_series=9)
>>> class Engine:
...     rules = {"g/a": Rule()}
>>> guard.check(Engine()), Engine.rules["g/a"].registry.admitting
(True, False)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

__all__ = ["RESUME_FRACTION", "MemoryGuard", "resident_bytes"]

log = logging.getLogger(__name__)

#: Admission resumes below this share of the budget.
RESUME_FRACTION = 0.9
#: Seconds between two reads of the resident set size.
CHECK_INTERVAL = 1.0

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """The process' resident set size now (``/proc/self/statm``); 0 where there is none."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class _Engine(Protocol):
    @property
    def rules(self) -> Mapping[str, Any]: ...


class MemoryGuard:
    """Stops and resumes new series for every rule by the process' RSS against ``budget``.

    ``budget`` is in bytes; 0 turns the guard off (:meth:`check` then does nothing).
    """

    def __init__(
        self,
        budget: int,
        *,
        rss: Callable[[], int] = resident_bytes,
        clock: Callable[[], float] = time.monotonic,
        metrics: Any = None,
    ) -> None:
        self.budget = int(budget)
        self.rss = rss
        self.clock = clock
        self.metrics = metrics
        #: True while RSS is over the budget (new series are dropped).
        self.exceeded = False
        self.last_rss = 0
        self._next = 0.0

    def set_budget(self, budget: int, engine: _Engine) -> None:
        """A new budget (a reload): judged again at the next :meth:`check`."""
        self.budget = int(budget)
        self.exceeded = False
        self._next = 0.0
        for rt in engine.rules.values():
            rt.registry.admit(True)

    def check(self, engine: _Engine) -> bool:
        """Read RSS if due and apply the verdict to every rule; returns :attr:`exceeded`.

        Rules added by a reload while over budget are told at the next check.
        """
        if self.budget <= 0:
            return False
        now = self.clock()
        if now < self._next:
            return self.exceeded
        self._next = now + CHECK_INTERVAL
        self.last_rss = rss = self.rss()
        if not self.exceeded and rss >= self.budget:
            self.exceeded = True
            log.error(
                "memory budget reached: RSS %d MiB >= limits.max_memory %d MiB; new series "
                "are dropped (counted per rule) until RSS is under %d MiB",
                rss >> 20,
                self.budget >> 20,
                int(self.budget * RESUME_FRACTION) >> 20,
            )
        elif self.exceeded and rss < self.budget * RESUME_FRACTION:
            self.exceeded = False
            log.warning(
                "memory back under budget (RSS %d MiB): new series are taken again", rss >> 20
            )
        for rt in engine.rules.values():
            if rt.registry.admitting == self.exceeded:
                rt.registry.admit(not self.exceeded)
        if self.metrics is not None:
            self.metrics.memory(rss, self.budget, self.exceeded)
        return self.exceeded
