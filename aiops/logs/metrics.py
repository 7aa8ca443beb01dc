"""Prometheus families of the log rules, read from :meth:`LogEngine.stats` at scrape time.

==============================================  =========  ================================
name                                            type       labels
==============================================  =========  ================================
``aiops_log_lines_mined_total``                 counter    source (since start or reload)
``aiops_log_templates``                         gauge      source (templates its miners hold)
``aiops_log_new_templates_total``               counter    rule (new templates after the
                                                           learning period)
``aiops_log_new_templates_held_total``          counter    rule (of those, held back by the
                                                           rate limit: no alert)
==============================================  =========  ================================

New-template alerts themselves are in ``aiops_alerts_total{alertname}`` like any alert.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["LogStatsCollector"]


class LogStatsCollector:
    """A prometheus-client collector over a callable returning :meth:`LogEngine.stats`.

    The callable is looked up at each scrape, so an engine replaced by a reload is the
    one reported. A failing callable reports empty families (``/metrics`` still works).
    """

    def __init__(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        self._stats = stats

    def describe(self) -> list[Any]:
        """The families, empty (prometheus-client registers their names)."""
        return list(self._families({}))

    def collect(self) -> Iterator[Any]:
        """The families with the engine's current counts."""
        try:
            stats = self._stats()
        except Exception:  # the data path's state must never break /metrics
            stats = {}
        return self._families(stats)

    @staticmethod
    def _families(stats: Mapping[str, Any]) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        mined = CounterMetricFamily(
            "aiops_log_lines_mined",
            "Log records mined into templates, by source (since start or reload).",
            labels=["source"],
        )
        templates = GaugeMetricFamily(
            "aiops_log_templates",
            "Templates the source's miners hold (all partitions).",
            labels=["source"],
        )
        found = CounterMetricFamily(
            "aiops_log_new_templates",
            "New templates seen after a new_template rule's learning period.",
            labels=["rule"],
        )
        held = CounterMetricFamily(
            "aiops_log_new_templates_held",
            "New templates a new_template rule held back (rate limit): no alert.",
            labels=["rule"],
        )
        for source, n in sorted(stats.get("mined", {}).items()):
            mined.add_metric([source], float(n))
        for source, n in sorted(stats.get("templates", {}).items()):
            templates.add_metric([source], float(n))
        for rule, n in sorted(stats.get("found", {}).items()):
            found.add_metric([rule], float(n))
        for rule, n in sorted(stats.get("held", {}).items()):
            held.add_metric([rule], float(n))
        yield mined
        yield templates
        yield found
        yield held
