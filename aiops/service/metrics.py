"""The daemon's own metrics, exposed on ``/metrics`` by :mod:`aiops.service.http`.

:class:`Metrics` is the null object: every hook is a no-op, so the data path calls its
hooks unconditionally and costs nothing when no listener is configured.
:class:`PrometheusMetrics` records them with prometheus-client (the ``metrics`` extra)
in a registry of its own, so several daemons in one process (tests) never share
counters.

Threads: the hooks are called from the daemon's data-path thread (and
:meth:`Metrics.http_request` from the listener's threads); prometheus-client metrics
are thread-safe, and ``/metrics`` only reads them. The few values computed at scrape
time (checkpoint age, queued samples) read a float or an int that the data path
replaces atomically.

Families (every name starts with ``aiops_``):

==============================================  =========  ================================
name                                            type       labels
==============================================  =========  ================================
``source_points_total``                         counter    source
``source_logs_total``                           counter    source
``source_rejects_total``                        counter    source, reason
``source_failures_total``                       counter    source (failed polls)
``source_healthy``                              gauge      source (1 ok, 0 failing/degraded)
``source_problems``                             gauge      source (failing parts: queries)
``source_queued_samples``                       gauge      source (push receivers' queues)
``alerts_total``                                counter    alertname, status
``log_lines_mined_total``                       counter    source (log rules; see
                                                           :mod:`aiops.logs.metrics`)
``log_templates``                               gauge      source
``log_new_templates_total``                     counter    rule (after learning)
``log_new_templates_held_total``                counter    rule (rate-limited: no alert)
``notifications_total``                         counter    receiver, result
``outbox_outcomes_total``                       counter    receiver, outcome (delivered,
                                                           retry, permanent, dead)
``outbox_pending``                              gauge      receiver (at scrape time)
``outbox_oldest_pending_age_seconds``           gauge      receiver (at scrape time)
``outbox_dead_letters``                         gauge      receiver (at scrape time)
``checkpoint_duration_seconds``                 histogram
``checkpoint_size_bytes``                       gauge
``checkpoint_last_success_timestamp_seconds``   gauge
``checkpoint_age_seconds``                      gauge      (at scrape time)
``checkpoint_failures_total``                   counter    (writes that failed: disk full...)
``rule_series``                                 gauge      rule (series the rule tracks)
``rule_dropped_series``                         gauge      rule (over the cap, cumulative)
``rule_state_refused``                          gauge      rule (checkpointed states refused
                                                           at start: the rule started fresh)
``rule_degraded``                               gauge      rule (1: its last batch failed)
``rule_failed_batches_total``                   counter    rule
``rule_failed_points_total``                    counter    rule (kept aside in rejects.jsonl)
``rule_series_dropped_total``                   counter    rule (new series over the cap)
``rule_series_evicted_total``                   counter    rule (stale series forgotten)
``rule_unmatched_series``                       gauge      rule (keys remembered as not
                                                           selected; bounded)
``memory_budget_bytes``                         gauge      (limits.max_memory; 0: none)
``memory_budget_exceeded``                      gauge      (1: new series are dropped)
``drift_detected_total``                        counter    rule, signal (input, score,
                                                           alert_rate; every detection)
``model_retrains_total``                        counter    rule, trigger, outcome (promoted,
                                                           rejected, skipped, failed,
                                                           rolled_back)
``model_version``                               gauge      rule (the registry version it runs)
``model_promotions_total``                      counter    rule, automatic (another version
                                                           made the one it runs)
``model_rollbacks_total``                       counter    rule, automatic
``model_state_refused_total``                   counter    rule (a stored version's state
                                                           refused: signature, format, fit)
``http_requests_total``                         counter    handler, code
``http_request_duration_seconds``               histogram  handler
``build_info``                                  gauge      version
==============================================  =========  ================================

plus prometheus-client's ``process_*``, ``python_gc_*`` and ``python_info``.

The configuration reload gauges use Prometheus' own names:
``aiops_config_last_reload_successful`` (1: the last reload, or the start, applied the
files; 0: refused, the previous configuration runs) and
``aiops_config_last_reload_success_timestamp_seconds``.
"""

from __future__ import annotations

import time
from collections import Counter as _Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aiops.alerting.notify import (
    Alert,
    Delivered,
    DeliveryResult,
    Notification,
    Notifier,
    PermanentFailure,
)
from aiops.logs.metrics import LogStatsCollector
from aiops.types import Batch

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from aiops.pipeline.engine import RuleRuntime

__all__ = ["NULL_METRICS", "CountingNotifier", "Metrics", "PrometheusMetrics"]

#: Buckets of the checkpoint duration histogram (seconds): from a small state on a
#: local disk (milliseconds) to a large one on a slow volume.
CHECKPOINT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Buckets of the HTTP request duration histogram (seconds).
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The null object: every hook does nothing. Subclasses record."""

    #: The prometheus-client registry that ``/metrics`` exposes (None: nothing to expose).
    registry: CollectorRegistry | None = None

    def batch(self, source_id: str, batch: Batch) -> None:
        """A batch from ``source_id`` was processed."""

    def alerts(self, alerts: Sequence[Alert]) -> None:
        """The engine emitted these alert transitions."""

    def source_failed(self, source_id: str) -> None:
        """Polling ``source_id`` raised (the source failed, not its data)."""

    def source_health(self, source_id: str, healthy: bool, problems: int) -> None:
        """The state of ``source_id`` after a poll: healthy, and how many parts fail."""

    def checkpoint(self, seconds: float, size: int) -> None:
        """A checkpoint of ``size`` bytes was written in ``seconds``."""

    def checkpoint_failed(self) -> None:
        """A checkpoint could not be written (it is retried)."""

    def rules(self, runtimes: Iterable[RuleRuntime]) -> None:
        """Series counts of rules that just processed a batch."""

    def rule_failed(self, rule: str, points: int) -> None:
        """One failed batch of a rule, whose ``points`` were kept aside."""

    def memory(self, rss: int, budget: int, exceeded: bool) -> None:
        """The memory guard's last reading (:mod:`aiops.service.memory`)."""

    def state_refused(self, refused: Mapping[str, int]) -> None:
        """Rules whose checkpointed state was refused at start, and how often."""

    def notification(self, receiver: str, result: str) -> None:
        """One delivery attempt to a notifier of ``receiver`` ended with ``result``."""

    def http_request(self, handler: str, code: int, seconds: float) -> None:
        """The listener answered one request (called from the listener's threads)."""

    def watch_sources(self, sources: Mapping[str, object]) -> None:
        """Remember the sources, to report push receivers' queue depths at scrape time."""

    def wrap_notifier(self, receiver: str, notifier: Notifier) -> Notifier:
        """The notifier to use for ``receiver``: itself, or one that counts results."""
        return notifier

    def outbox_outcome(self, receiver: str, outcome: str) -> None:
        """An outbox attempt for ``receiver`` ended: delivered, retry, permanent or dead."""

    def watch_outbox(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        """Read the outbox's per-receiver ``pending``/``oldest_created``/``dead`` at scrape."""

    def watch_logs(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        """Read the log rules' :meth:`~aiops.logs.rules.LogEngine.stats` at scrape."""

    def feedback(self, action: str, outcome: str) -> None:
        """The data loop applied one answer to an alert (see :mod:`aiops.alerting.feedback`)."""

    def slack_interaction(self, outcome: str) -> None:
        """``POST /slack/interactions`` handled one request or action (listener threads)."""

    def drift_detected(self, rule: str, signal: str) -> None:
        """A rule's drift check detected a drift (:mod:`aiops.models.drift`)."""

    def model_retrain(self, rule: str, trigger: str, outcome: str) -> None:
        """A retrain of a rule's model ended so (:mod:`aiops.models.retrain`)."""

    def model_running(self, running: Mapping[str, int | None]) -> None:
        """The registry version each configured rule runs (:mod:`aiops.models.lifecycle`)."""

    def model_changed(self, rule: str, event: str, automatic: bool) -> None:
        """A rule runs another version: ``event`` is ``promoted`` or ``rolled back``."""

    def model_state_refused(self, rule: str) -> None:
        """A stored version's state of ``rule`` was refused when the daemon tried to run it."""

    def config_reload(self, success: bool) -> None:
        """A configuration load (the start, then each reload) succeeded or was refused."""


#: The shared null object.
NULL_METRICS = Metrics()


class CountingNotifier(Notifier):
    """Forwards to another notifier and counts each result by receiver.

    Results: ``delivered``, ``retry`` (worth retrying), ``failed`` (permanent) and
    ``error`` (the notifier raised, which the dispatcher treats as a retry).
    """

    def __init__(self, inner: Notifier, receiver: str, metrics: Metrics) -> None:
        self.inner = inner
        self.receiver = receiver
        self.metrics = metrics

    def send(self, notification: Notification) -> DeliveryResult:
        """Send through the wrapped notifier and count the outcome."""
        try:
            result = self.inner.send(notification)
        except Exception:
            self.metrics.notification(self.receiver, "error")
            raise
        if isinstance(result, Delivered):
            outcome = "delivered"
        elif isinstance(result, PermanentFailure):
            outcome = "failed"
        else:
            outcome = "retry"
        self.metrics.notification(self.receiver, outcome)
        return result

    def close(self) -> None:
        """Close the wrapped notifier."""
        self.inner.close()

    def __repr__(self) -> str:
        return f"CountingNotifier({self.inner!r})"


class PrometheusMetrics(Metrics):
    """Records the hooks with prometheus-client; see the module docstring for names.

    Raises :class:`ImportError` naming the extra to install when prometheus-client is
    missing.
    """

    def __init__(self, version: str = "") -> None:
        try:
            import prometheus_client as pc
        except ImportError as exc:
            raise ImportError(
                "the daemon's /metrics needs prometheus-client: pip install 'aiopsd[server]'"
            ) from exc
        from aiops import __version__

        reg = pc.CollectorRegistry(auto_describe=True)
        self.registry = reg
        pc.ProcessCollector(registry=reg)
        pc.PlatformCollector(registry=reg)
        pc.GCCollector(registry=reg)
        self._points = pc.Counter(
            "aiops_source_points_total", "Points read, by source.", ["source"], registry=reg
        )
        self._logs = pc.Counter(
            "aiops_source_logs_total", "Log records read, by source.", ["source"], registry=reg
        )
        self._rejects = pc.Counter(
            "aiops_source_rejects_total",
            "Input items that could not be decoded, by source and reason.",
            ["source", "reason"],
            registry=reg,
        )
        self._failures = pc.Counter(
            "aiops_source_failures_total",
            "Polls of a source that failed (the source, not its data); the daemon backs off.",
            ["source"],
            registry=reg,
        )
        self._healthy = pc.Gauge(
            "aiops_source_healthy",
            "1 when the source's last poll worked and none of its parts fail, else 0.",
            ["source"],
            registry=reg,
        )
        self._problems = pc.Gauge(
            "aiops_source_problems",
            "Parts of the source (a pull source's queries) whose last attempt failed.",
            ["source"],
            registry=reg,
        )
        self._alerts = pc.Counter(
            "aiops_alerts_total",
            "Alert transitions emitted by the rules, by alert name and status.",
            ["alertname", "status"],
            registry=reg,
        )
        self._notifications = pc.Counter(
            "aiops_notifications_total",
            "Delivery attempts, by receiver and result (delivered, retry, failed, error).",
            ["receiver", "result"],
            registry=reg,
        )
        self._ckpt_duration = pc.Histogram(
            "aiops_checkpoint_duration_seconds",
            "Time to write one checkpoint.",
            buckets=CHECKPOINT_BUCKETS,
            registry=reg,
        )
        self._ckpt_size = pc.Gauge(
            "aiops_checkpoint_size_bytes", "Size of the last checkpoint written.", registry=reg
        )
        self._ckpt_failures = pc.Counter(
            "aiops_checkpoint_failures",
            "Checkpoint writes that failed (disk full, read-only); each is retried.",
            registry=reg,
        )
        self._ckpt_time = pc.Gauge(
            "aiops_checkpoint_last_success_timestamp_seconds",
            "Unix time of the last checkpoint written.",
            registry=reg,
        )
        self._last_checkpoint = 0.0
        age = pc.Gauge(
            "aiops_checkpoint_age_seconds",
            "Seconds since the last checkpoint written by this process (NaN before the first).",
            registry=reg,
        )
        age.set_function(self._checkpoint_age)
        self._series = pc.Gauge(
            "aiops_rule_series",
            "Series a rule tracks now (forgotten series' rows not counted).",
            ["rule"],
            registry=reg,
        )
        self._dropped = pc.Gauge(
            "aiops_rule_dropped_series",
            "Series a rule dropped because it reached max_series_per_rule (cumulative, "
            "kept across restarts in the checkpoint).",
            ["rule"],
            registry=reg,
        )
        self._degraded = pc.Gauge(
            "aiops_rule_degraded",
            "1 while the rule's last batch failed (its points kept aside), else 0.",
            ["rule"],
            registry=reg,
        )
        self._failed_batches = pc.Counter(
            "aiops_rule_failed_batches",
            "Batches a rule failed on (an exception in its detector, post-rules, ...).",
            ["rule"],
            registry=reg,
        )
        self._failed_points = pc.Counter(
            "aiops_rule_failed_points",
            "Points (or log records) of failed batches, kept aside in rejects.jsonl.",
            ["rule"],
            registry=reg,
        )
        self._series_dropped = pc.Counter(
            "aiops_rule_series_dropped",
            "New series a rule could not take because it had max_series series (each "
            "counted once while it stays over the cap).",
            ["rule"],
            registry=reg,
        )
        self._memory_budget = pc.Gauge(
            "aiops_memory_budget_bytes",
            "The daemon's memory budget (limits.max_memory); 0 when there is none.",
            registry=reg,
        )
        self._memory_exceeded = pc.Gauge(
            "aiops_memory_budget_exceeded",
            "1 while the resident set size is over the budget: new series are dropped.",
            registry=reg,
        )
        self._series_evicted = pc.Counter(
            "aiops_rule_series_evicted",
            "Series a rule forgot after no point for its series staleness period.",
            ["rule"],
            registry=reg,
        )
        self._unmatched = pc.Gauge(
            "aiops_rule_unmatched_series",
            "Series keys a rule remembers as not selected by it (a bounded cache).",
            ["rule"],
            registry=reg,
        )
        self._rule_counts: dict[str, tuple[int, int]] = {}
        self._state_refused = pc.Gauge(
            "aiops_rule_state_refused",
            "Checkpointed rule states refused at start (bad signature, unknown format, "
            "content that does not fit): the rule started fresh.",
            ["rule"],
            registry=reg,
        )
        self._http = pc.Counter(
            "aiops_http_requests_total",
            "Requests answered by the daemon's listener, by handler and status code.",
            ["handler", "code"],
            registry=reg,
        )
        self._http_seconds = pc.Histogram(
            "aiops_http_request_duration_seconds",
            "Time to answer one request, by handler.",
            ["handler"],
            buckets=HTTP_BUCKETS,
            registry=reg,
        )
        pc.Gauge(
            "aiops_build_info", "Always 1; the version in a label.", ["version"], registry=reg
        ).labels(version or __version__).set(1)
        self._sources: Mapping[str, object] = {}
        reg.register(_QueuedSamples(lambda: self._sources))
        self._outbox_outcomes = pc.Counter(
            "aiops_outbox_outcomes_total",
            "Outbox delivery attempts, by receiver and outcome (delivered, retry, permanent "
            "failure, dead: moved to the dead letters after max attempts or age).",
            ["receiver", "outcome"],
            registry=reg,
        )
        self._outbox_stats: Callable[[], Mapping[str, Any]] = dict
        reg.register(_OutboxGauges(lambda: self._outbox_stats()))
        self._log_stats: Callable[[], Mapping[str, Any]] = dict
        reg.register(LogStatsCollector(lambda: self._log_stats()))
        self._feedback = pc.Counter(
            "aiops_feedback_total",
            "Answers to alerts applied by the data loop, by action (acknowledge, silence, "
            "false_positive, expected_change) and outcome (applied, unknown series, ...).",
            ["action", "outcome"],
            registry=reg,
        )
        self._slack_interactions = pc.Counter(
            "aiops_slack_interactions_total",
            "Slack button requests by outcome: the action recorded, or why it was refused "
            "(unsigned, bad_signature, stale_timestamp, bad_payload, unknown_alert, ignored).",
            ["outcome"],
            registry=reg,
        )
        self._drift = pc.Counter(
            "aiops_drift_detected_total",
            "Drift detected by a rule's drift check, by signal (input, score, alert_rate); "
            "every detection, also those within the check's cooldown.",
            ["rule", "signal"],
            registry=reg,
        )
        self._retrains = pc.Counter(
            "aiops_model_retrains_total",
            "Retrains of a rule's model by trigger (scheduled, drift, rollback) and outcome "
            "(promoted, rejected, skipped, failed, rolled_back).",
            ["rule", "trigger", "outcome"],
            registry=reg,
        )
        self._model_version = pc.Gauge(
            "aiops_model_version",
            "The model registry version each rule runs (aiops models list).",
            ["rule"],
            registry=reg,
        )
        self._model_rules: set[str] = set()
        self._promotions = pc.Counter(
            "aiops_model_promotions_total",
            "Times a rule was made to run another model version (a retrain's promotion, "
            "a pin or a configuration change), by whether it was automatic.",
            ["rule", "automatic"],
            registry=reg,
        )
        self._rollbacks = pc.Counter(
            "aiops_model_rollbacks_total",
            "Rollbacks of a rule's model: by an operator (automatic=false) or after the "
            "alert rate of a promoted version exploded (automatic=true).",
            ["rule", "automatic"],
            registry=reg,
        )
        self._model_refused = pc.Counter(
            "aiops_model_state_refused_total",
            "Stored model versions whose state was refused when the daemon tried to run "
            "them (bad signature, unknown format, does not fit the detector).",
            ["rule"],
            registry=reg,
        )
        # Prometheus' names: alert on aiops_config_last_reload_successful == 0.
        self._reload_ok = pc.Gauge(
            "aiops_config_last_reload_successful",
            "1 when the last configuration reload (or the start) applied the files, 0 when "
            "it was refused and the previous configuration runs.",
            registry=reg,
        )
        self._reload_time = pc.Gauge(
            "aiops_config_last_reload_success_timestamp_seconds",
            "Unix time of the last configuration load that was applied.",
            registry=reg,
        )

    def _checkpoint_age(self) -> float:
        last = self._last_checkpoint
        return time.time() - last if last else float("nan")

    def batch(self, source_id: str, batch: Batch) -> None:
        """Count points, logs and rejects (by reason)."""
        if batch.n_points:
            self._points.labels(source_id).inc(batch.n_points)
        if batch.logs:
            self._logs.labels(source_id).inc(len(batch.logs))
        if batch.rejects:
            for reason, n in _Counter(r.reason for r in batch.rejects).items():
                self._rejects.labels(source_id, reason).inc(n)

    def alerts(self, alerts: Sequence[Alert]) -> None:
        """Count alert transitions by alert name and status."""
        for (name, status), n in _Counter((a.alertname, a.status) for a in alerts).items():
            self._alerts.labels(name, status).inc(n)

    def source_failed(self, source_id: str) -> None:
        """Count one failed poll."""
        self._failures.labels(source_id).inc()

    def source_health(self, source_id: str, healthy: bool, problems: int) -> None:
        """Set the health gauges of one source."""
        self._healthy.labels(source_id).set(1.0 if healthy else 0.0)
        self._problems.labels(source_id).set(problems)

    def checkpoint(self, seconds: float, size: int) -> None:
        """Observe the duration, set size and time."""
        self._ckpt_duration.observe(seconds)
        self._ckpt_size.set(size)
        self._last_checkpoint = time.time()
        self._ckpt_time.set(self._last_checkpoint)

    def checkpoint_failed(self) -> None:
        """Count one failed checkpoint write."""
        self._ckpt_failures.inc()

    def rules(self, runtimes: Iterable[RuleRuntime]) -> None:
        """Set the series gauges of each rule."""
        for rt in runtimes:
            key = rt.spec.key
            reg = rt.registry
            self._series.labels(key).set(reg.live)
            self._dropped.labels(key).set(reg.dropped)
            self._degraded.labels(key).set(1.0 if rt.health.degraded else 0.0)
            self._unmatched.labels(key).set(reg.unmatched)
            # Counters from the registry's cumulative counts (kept across restarts).
            dropped, evicted = self._rule_counts.get(key, (0, 0))
            if reg.dropped > dropped:
                self._series_dropped.labels(key).inc(reg.dropped - dropped)
            if reg.evicted > evicted:
                self._series_evicted.labels(key).inc(reg.evicted - evicted)
            self._rule_counts[key] = (max(dropped, reg.dropped), max(evicted, reg.evicted))

    def rule_failed(self, rule: str, points: int) -> None:
        """Count one failed batch and its kept-aside points; the rule is degraded."""
        self._failed_batches.labels(rule).inc()
        self._failed_points.labels(rule).inc(points)

    def memory(self, rss: int, budget: int, exceeded: bool) -> None:
        """The budget and whether RSS is over it (RSS itself: process_resident_memory_bytes)."""
        self._memory_budget.set(budget)
        self._memory_exceeded.set(1 if exceeded else 0)

    def state_refused(self, refused: Mapping[str, int]) -> None:
        """Set the refused-state gauge of each rule that had one."""
        for key, count in refused.items():
            self._state_refused.labels(key).set(count)

    def notification(self, receiver: str, result: str) -> None:
        """Count one delivery attempt."""
        self._notifications.labels(receiver, result).inc()

    def http_request(self, handler: str, code: int, seconds: float) -> None:
        """Count one answered request and observe its duration."""
        self._http.labels(handler, str(code)).inc()
        self._http_seconds.labels(handler).observe(seconds)

    def watch_sources(self, sources: Mapping[str, object]) -> None:
        """Report the queue depth of sources that have ``queued_samples``."""
        self._sources = sources

    def wrap_notifier(self, receiver: str, notifier: Notifier) -> Notifier:
        """A :class:`CountingNotifier` around ``notifier``."""
        return CountingNotifier(notifier, receiver, self)

    def outbox_outcome(self, receiver: str, outcome: str) -> None:
        """Count one outbox outcome (called from the outbox's worker threads)."""
        self._outbox_outcomes.labels(receiver, outcome).inc()

    def watch_outbox(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        """Report outbox depth, oldest pending age and dead letters at scrape time."""
        self._outbox_stats = stats

    def watch_logs(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        """Report lines mined, templates and new templates of the log rules at scrape."""
        self._log_stats = stats

    def feedback(self, action: str, outcome: str) -> None:
        """Count one applied answer."""
        self._feedback.labels(action, outcome).inc()

    def slack_interaction(self, outcome: str) -> None:
        """Count one Slack interactivity outcome."""
        self._slack_interactions.labels(outcome).inc()

    def drift_detected(self, rule: str, signal: str) -> None:
        """Count one drift detection."""
        self._drift.labels(rule, signal).inc()

    def model_retrain(self, rule: str, trigger: str, outcome: str) -> None:
        """Count one retrain outcome."""
        self._retrains.labels(rule, trigger, outcome).inc()

    def model_running(self, running: Mapping[str, int | None]) -> None:
        """Set the version gauge of each rule; rules gone (a reload) lose theirs."""
        now = {rule for rule, v in running.items() if v is not None}
        for rule in self._model_rules - now:
            self._model_version.remove(rule)
        for rule, version in running.items():
            if version is not None:
                self._model_version.labels(rule).set(version)
        self._model_rules = now

    def model_changed(self, rule: str, event: str, automatic: bool) -> None:
        """Count a promotion or a rollback."""
        counter = self._rollbacks if event == "rolled back" else self._promotions
        counter.labels(rule, "true" if automatic else "false").inc()

    def model_state_refused(self, rule: str) -> None:
        """Count a refused version state."""
        self._model_refused.labels(rule).inc()

    def config_reload(self, success: bool) -> None:
        """Set the reload gauges (the timestamp only moves on success)."""
        self._reload_ok.set(1.0 if success else 0.0)
        if success:
            self._reload_time.set(time.time())


class _OutboxGauges:
    """Outbox depth, age of the oldest pending row and dead letters, read at scrape time."""

    def __init__(self, stats: Callable[[], Mapping[str, Any]]) -> None:
        self._stats = stats

    def describe(self) -> list[Metric]:
        return list(self._families({}))

    def collect(self) -> Iterator[Metric]:
        try:
            stats = self._stats()
        except Exception:  # a locked or broken file must not break /metrics
            stats = {}
        return self._families(stats)

    @staticmethod
    def _families(stats: Mapping[str, Any]) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        pending = GaugeMetricFamily(
            "aiops_outbox_pending",
            "Notifications waiting in the outbox for a receiver.",
            labels=["receiver"],
        )
        age = GaugeMetricFamily(
            "aiops_outbox_oldest_pending_age_seconds",
            "Age of the oldest notification waiting for a receiver (0 when none waits).",
            labels=["receiver"],
        )
        dead = GaugeMetricFamily(
            "aiops_outbox_dead_letters",
            "Notifications in the dead-letter table (aiops alerts failed), by receiver.",
            labels=["receiver"],
        )
        now = time.time()
        for receiver, s in stats.items():
            pending.add_metric([receiver], float(s.pending))
            oldest = s.oldest_created
            age.add_metric([receiver], max(0.0, now - oldest) if oldest is not None else 0.0)
            dead.add_metric([receiver], float(s.dead))
        yield pending
        yield age
        yield dead


class _QueuedSamples:
    """Reads ``queued_samples`` (an int) of push receivers at scrape time."""

    def __init__(self, sources: Callable[[], Mapping[str, object]]) -> None:
        self._sources = sources

    def describe(self) -> list[Metric]:
        return list(self._family())

    def collect(self) -> Iterator[Metric]:
        return self._family(self._sources())

    @staticmethod
    def _family(sources: Mapping[str, Any] | None = None) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        fam = GaugeMetricFamily(
            "aiops_source_queued_samples",
            "Samples a push receiver accepted that the daemon has not processed yet.",
            labels=["source"],
        )
        for sid, src in (sources or {}).items():
            queued = getattr(src, "queued_samples", None)
            if isinstance(queued, int):
                fam.add_metric([sid], float(queued))
        yield fam
