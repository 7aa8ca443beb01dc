"""Retraining: a candidate model from recent history, shadowed, promoted only if it passes.

A rule with ``retrain:`` (README "Retraining") or ``drift:`` gets a :class:`Retrainer`,
the engine's point observer of that rule (:attr:`aiops.pipeline.engine.RuleRuntime.observer`):
it sees every batch the rule scores, after the live detector scored it. Its life:

1. **History.** The rule's recent points (series index, time, value) go into a bounded
   ring (:class:`History`: ``window`` of data time and at most ``max_points`` points).
   A rule reading a source that can evaluate its query over a time range (the
   Prometheus source's ``fetch_history``) trains on that instead.
2. **Trigger.** On the schedule (``every``: multiples of it since the epoch; ``cron``:
   APScheduler's :class:`~apscheduler.triggers.cron.CronTrigger`, UTC), both in *data*
   time, so a replay or a fake clock retrains exactly when the live run would; or on a
   drift event of the rule's ``drift:`` check with ``on_drift: true``. A rule pinned to a
   version (``aiops models pin``) is not retrained; a retrain already under way absorbs
   the trigger.
3. **Training** (a worker thread in the daemon, inline in replays): a fresh detector of
   the rule's type and parameters learns the history of the last ``window`` through its
   vectorized ``score`` (the same kernel as live scoring, a chunk of points per call).
   Points in a silence, or in a time interval that mutes every route the rule's alerts
   take (maintenance windows), are left out.
4. **Shadow.** For ``shadow`` of data time the candidate scores every live point beside
   the current model: its scores are counted, no alert is sent from them.
5. **Promotion check.** The candidate is promoted when ``(candidate hits + 1) <=
   max_alert_rate_ratio * (current hits + 1)`` over the shadow period, a hit being a
   point scored at or above the rule's threshold (the +1 keeps two quiet models from
   dividing zero by zero). A promotion is a new registry version (trigger ``scheduled`` or
   ``drift``, the training window, the points seen, and the shadow figures of both
   models as its evaluation) made the running one through the daemon's
   :class:`~aiops.models.lifecycle.ModelLifecycle` (which keeps what the outgoing version
   learned). A failed check is recorded in the model's history, with both rates.
6. **Watch.** For ``watch`` after a promotion the previous model keeps scoring in
   shadow. When the new model's hits over that period pass ``rollback_alert_rate_ratio``
   times the previous model's (same +1), the rule rolls back to the previous version
   (with what it learned meanwhile), logs and notifies "rolled back because ...".

Events an operator should hear of (a drift, an automatic rollback) become info alerts
(``severity: info``, alertname ``ModelDrift`` / ``ModelRolledBack``, the rule's labels)
that go through the normal router and outbox; each resolves after :data:`EVENT_HOLD`
of data time. Counters: ``aiops_drift_detected_total`` and ``aiops_model_retrains_total``.

Across a restart (:mod:`aiops.models.carry`): a clean stop keeps each rule's history
ring and a watch under way for the next start. Not kept: a training or shadow under way
(dropped: the rule runs its promoted version; the next trigger retrains), the drift
checks' river state (they learn a reference afresh), and after a crash the ring and the
watch too (the ring fills again; a Prometheus rule reads its history from Prometheus).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from aiops.alerting.notify import Alert
from aiops.models import carry
from aiops.models.drift import DriftEvent, DriftMonitor
from aiops.registry import DETECTORS
from aiops.types import Batch, FloatArray, IntArray, SeriesKey

if TYPE_CHECKING:
    from aiops.config.models import Drift, Retrain
    from aiops.pipeline.detector import Detector
    from aiops.pipeline.engine import Engine, RuleRuntime

__all__ = [
    "EVENT_HOLD",
    "History",
    "InlineExecutor",
    "Maintenance",
    "NoRetraining",
    "NullObserver",
    "Retrainer",
    "Retraining",
    "Schedule",
    "cron_trigger",
    "replay_retrained",
    "retraining_rules",
    "train_candidate",
    "wire_retraining",
]

log = logging.getLogger(__name__)

#: An info alert (drift, rollback) resolves this long (data time) after it fired.
EVENT_HOLD = 3600.0
#: Points per ``score`` call while training (one vectorized call each; bounded memory).
TRAIN_CHUNK = 65_536
#: Events a retrainer keeps in memory (:attr:`_Outcome.events`); the registry has them all.
_EVENTS_KEPT = 100
#: Info alerts waiting for the daemon to take them; beyond, the oldest are dropped (logged).
_ALERTS_KEPT = 10_000
#: Resolution of the maintenance-window check: time intervals are minute-based.
_MINUTE = 60.0
#: A :class:`History` place whose point was dropped (its series forgotten).
_FORGOTTEN = -1


def cron_trigger(expr: str, timezone: str = "UTC") -> Any:
    """APScheduler's trigger for a 5-field crontab line; ``ValueError`` says what is wrong.

    Day-of-week numbers follow APScheduler (0 is Monday); names (``mon-fri``) are clearer.

    >>> cron_trigger("0 3 * * *").get_next_fire_time(
    ...     None, datetime(2026, 1, 1, 4, tzinfo=UTC)).isoformat()
    '2026-01-02T03:00:00+00:00'
    """
    from apscheduler.triggers.cron import CronTrigger

    return CronTrigger.from_crontab(expr.strip(), timezone=timezone)


class Schedule:
    """When the next scheduled retrain is due, in data time (unix seconds).

    ``every``: at each multiple of it since the epoch (``1d``: 00:00 UTC); ``cron``: at
    the cron trigger's fire times. :meth:`due` is true once per fire time reached; fire
    times skipped by a jump of the data (a backfill) coalesce into one, as APScheduler's
    ``coalesce`` does. No schedule: never due.
    """

    def __init__(self, every: float | None = None, cron: str | None = None) -> None:
        self.every = every
        self.cron = cron
        self._trigger = cron_trigger(cron) if cron else None
        #: The next fire time; set from the first data time seen.
        self.next_at = math.inf if every is None and cron is None else math.nan

    def due(self, now: float) -> bool:
        """True when data time ``now`` reached the next fire time (which then moves on)."""
        if math.isnan(self.next_at):
            self.next_at = self._after(now)
            return False
        if now < self.next_at:
            return False
        self.next_at = self._after(now)
        return True

    def _after(self, now: float) -> float:
        if self.every is not None:
            return (math.floor(now / self.every) + 1) * self.every
        if self._trigger is None:
            return math.inf
        at = datetime.fromtimestamp(now, UTC)
        nxt = self._trigger.get_next_fire_time(None, at)
        if nxt is not None and nxt.timestamp() <= now:  # "at or after": strictly after
            nxt = self._trigger.get_next_fire_time(nxt, datetime.fromtimestamp(now + 1, UTC))
        return math.inf if nxt is None else float(nxt.timestamp())


class History:
    """The recent points of one rule: a ring of at most ``capacity`` points.

    Points are kept in arrival order with a running count (:attr:`count`), so a caller
    can ask for what came after a mark (:meth:`since_mark`) as well as for a time range.
    Cost: 20 bytes a point (int64 index, float64 time, float32 value is not enough for
    replays to match, so float64: 24 bytes).

    The points of a forgotten series are dropped (:meth:`forget`): its row goes to the
    next new series, whose training must not see them.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._idx = np.zeros(capacity, dtype=np.int64)
        self._t = np.zeros(capacity)
        self._v = np.zeros(capacity)
        #: Points ever appended.
        self.count = 0

    def __len__(self) -> int:
        return min(self.count, self.capacity)

    def append(self, idx: IntArray, ts: FloatArray, vs: FloatArray) -> None:
        """Append points (in order); only the last ``capacity`` are kept."""
        n = len(idx)
        if n == 0:
            return
        if n > self.capacity:
            self.count += n - self.capacity
            idx, ts, vs = idx[-self.capacity :], ts[-self.capacity :], vs[-self.capacity :]
            n = self.capacity
        start = self.count % self.capacity
        first = min(n, self.capacity - start)
        self._idx[start : start + first] = idx[:first]
        self._t[start : start + first] = ts[:first]
        self._v[start : start + first] = vs[:first]
        if first < n:
            rest = n - first
            self._idx[:rest] = idx[first:]
            self._t[:rest] = ts[first:]
            self._v[:rest] = vs[first:]
        self.count += n

    def since_mark(self, mark: int) -> tuple[IntArray, FloatArray, FloatArray]:
        """Copies of the points appended after the first ``mark`` ones that are still kept."""
        first = max(mark, self.count - self.capacity)
        n = self.count - first
        if n <= 0:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
        pos = (first + np.arange(n)) % self.capacity
        idx = self._idx[pos]
        kept = idx >= 0
        if not kept.all():
            pos = pos[kept]
            idx = idx[kept]
        return idx, self._t[pos], self._v[pos]

    def forget(self, rows: IntArray) -> None:
        """Drop the kept points of series ``rows`` (their places stay: marks still hold)."""
        if len(rows) and self.count:
            held = self._idx[: len(self)]
            held[np.isin(held, rows)] = _FORGOTTEN

    def between(self, start: float, end: float) -> tuple[IntArray, FloatArray, FloatArray]:
        """Copies of the kept points with ``start <= t <= end``, in arrival order."""
        idx, t, v = self.since_mark(0)
        keep = (t >= start) & (t <= end)
        return idx[keep], t[keep], v[keep]


class Maintenance:
    """Which points fell in a silence or a maintenance window of the rule's alerts.

    A point of a series is left out of training when a silence active at its time
    matches the labels that series' alert would carry, or when every route those labels
    take mutes at that time (``mute_time_intervals`` / ``active_time_intervals``): the
    operator said the data of that period is not normal. The router's silences are read
    when asked (they grow with Slack answers).
    """

    def __init__(self, router: Any = None) -> None:
        self.router = router
        self.root = getattr(router, "root", None)
        self._timed = self.root is not None and _has_time_intervals(self.root)

    def keep(
        self, rt: RuleRuntime, idx: IntArray, t: FloatArray, *, n_series: int | None = None
    ) -> np.ndarray[Any, Any]:
        """A mask over the points: True for those a training may learn.

        Only series below ``n_series`` (default: all the rule has) are looked at.
        """
        keep = np.ones(len(idx), dtype=bool)
        silences = list(getattr(self.router, "silences", ()) or ())
        if not len(idx) or not (silences or self._timed):
            return keep
        lo, hi = float(t.min()), float(t.max())
        live = [s for s in silences if s.starts_at <= hi and s.ends_at > lo]
        series = np.unique(idx)
        routes: dict[tuple[int, ...], list[int]] = {}
        limit = len(rt.registry) if n_series is None else n_series
        for i in series.tolist():
            if i >= limit:
                continue
            labels = rt.alert_labels(i)
            mine = idx == i
            for s in live:
                if all(m.matches(labels) for m in s.matchers):
                    keep[mine & (t >= s.starts_at) & (t < s.ends_at)] = False
            if self._timed and self.root is not None:
                nodes = tuple(id(n) for n in self.root.match(labels))
                routes.setdefault(nodes, []).append(i)
        if routes and self.root is not None:
            keep &= self._delivering(rt, idx, t, routes)
        return keep

    def _delivering(
        self,
        rt: RuleRuntime,
        idx: IntArray,
        t: FloatArray,
        routes: dict[tuple[int, ...], list[int]],
    ) -> np.ndarray[Any, Any]:
        """False where every route of the point's series mutes at its minute."""
        assert self.root is not None
        minute = np.floor(t / _MINUTE).astype(np.int64)
        out = np.ones(len(idx), dtype=bool)
        for members in routes.values():
            labels = rt.alert_labels(members[0])
            nodes = self.root.match(labels)
            mine = np.isin(idx, np.asarray(members))
            minutes, inverse = np.unique(minute[mine], return_inverse=True)
            ok = np.array(
                [any(n.delivers_at(float(m) * _MINUTE) for n in nodes) for m in minutes.tolist()],
                dtype=bool,
            )
            out[np.flatnonzero(mine)] = ok[inverse]
        return out


def _has_time_intervals(node: Any) -> bool:
    if getattr(node, "mute_during", ()) or getattr(node, "active_during", ()):
        return True
    return any(_has_time_intervals(c) for c in getattr(node, "routes", ()))


def train_candidate(
    detector_type: str,
    params: Mapping[str, Any],
    keys: Sequence[SeriesKey],
    idx: IntArray,
    ts: FloatArray,
    vs: FloatArray,
) -> Detector:
    """A fresh detector that learned the points (in order) through vectorized ``score``.

    It holds a row for each of ``keys`` (the rule's series list when the retrain
    started), so its state lines up with the live model's.
    """
    det: Detector = DETECTORS.create(detector_type, **dict(params))
    n = len(keys)
    if n:
        # Grow to every series the rule knows (a NaN point is no point: nothing learned).
        det.score(np.array([n - 1], dtype=np.int64), np.array([0.0]), np.array([np.nan]))
        det.bind_series(keys)
    for lo in range(0, len(idx), TRAIN_CHUNK):
        hi = lo + TRAIN_CHUNK
        det.score(idx[lo:hi], ts[lo:hi], vs[lo:hi])
    return det


def _check_warm(rt: RuleRuntime, idx: IntArray, ring_points: int) -> None:
    """Refuse a history too thin for the detector to get past its warm-up.

    A candidate that learned fewer than ``warmup`` points of a typical series would
    score (almost) nothing in its shadow, pass the alert-rate check and go blind once
    promoted: the median series of the history must have at least ``warmup`` points
    (for detectors that have a ``warmup`` parameter).
    """
    from aiops.pipeline.engine import effective_params

    warmup = effective_params(rt.spec.detector_type, rt.spec.detector_params).get("warmup")
    if not isinstance(warmup, int | float) or warmup <= 0:
        return
    counts = np.bincount(idx)
    median = float(np.median(counts[counts > 0]))
    if median < warmup:
        cap = (
            f"; the ring keeps the last {ring_points:,} points (raise retrain.max_points)"
            if ring_points
            else ""
        )
        raise _NoHistory(
            f"the history holds {median:.0f} points of the median series and the detector "
            f"needs warmup={warmup:g} to score{cap}"
        )


class InlineExecutor(Executor):
    """Runs each task at once in the caller's thread: replays and tests are deterministic."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn`` now; the returned future is already done."""
        fut: Future[Any] = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            fut.set_exception(exc)
        return fut


@dataclass
class _Counts:
    """Points and hits of two models over one period (shadow or watch)."""

    start: float
    points: int = 0
    hits_current: int = 0
    hits_other: int = 0

    def rates(self) -> tuple[float, float]:
        n = max(self.points, 1)
        return self.hits_current / n, self.hits_other / n


@dataclass
class _Training:
    trigger: str
    at: float  # data time of the trigger
    mark: int  # History.count when the training's points were taken
    future: Future[Any]  # of a _Trained
    detail: str = ""
    # Rows of series forgotten meanwhile (Retrainer.forget): the candidate resets them.
    forgotten: list[int] = field(default_factory=list)
    # Known once the worker is done:
    window: tuple[float, float] = (math.nan, math.nan)
    points: int = 0
    excluded: int = 0


@dataclass
class _Trained:
    detector: Detector
    window: tuple[float, float]
    points: int
    excluded: int


class _NoHistory(Exception):
    """Nothing left to train on (no history, or all of it in maintenance)."""


@dataclass
class _Shadow:
    candidate: Detector
    training: _Training
    counts: _Counts
    bound: int = 0


@dataclass
class _Watch:
    previous: Detector
    previous_version: int | None
    version: int | None
    counts: _Counts
    bound: int = 0


@dataclass
class _Pending:
    due: float
    alert: Alert


class _Models(Protocol):
    """What a retrainer needs of the daemon's model lifecycle (ModelLifecycle)."""

    registry: Any

    def activate(
        self,
        engine: Any,
        rule: str,
        version: int,
        *,
        reason: str,
        automatic: bool = False,
        event: str = "promoted",
    ) -> None: ...


@dataclass
class _Outcome:
    """Counters of what retraining did (tests and ``aiops eval`` read them)."""

    drifts: int = 0
    trainings: int = 0
    promoted: int = 0
    rejected: int = 0
    skipped: int = 0
    failed: int = 0
    rolled_back: int = 0
    #: The latest promotions, rejections and rollbacks (a bounded log, newest last).
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_EVENTS_KEPT))


class Retrainer:
    """One rule's drift checks and retraining; see the module docstring.

    Built by :class:`Retraining`; it is the rule's engine observer, so :meth:`observe`
    runs on the data loop after the live detector scored a batch.
    """

    def __init__(
        self,
        rule: str,
        *,
        retrain: Retrain | None,
        drift: Drift | None,
        threshold: float,
        owner: Retraining,
    ) -> None:
        self.rule = rule
        self.retrain = retrain
        self.drift_config = drift
        self.threshold = threshold
        self.owner = owner
        #: The rule runtime it observes (set by :meth:`Retraining.attach`).
        self.runtime: RuleRuntime | None = None
        self.schedule = Schedule(
            retrain.every if retrain else None, retrain.cron if retrain else None
        )
        self.history = History(retrain.max_points) if retrain else None
        #: The times of the batch being observed, while its drift checks run.
        self._batch_ts: FloatArray | None = None
        self.drift: DriftMonitor | None = None
        self.outcome = _Outcome()
        self._training: _Training | None = None
        self._shadow: _Shadow | None = None
        self._watch: _Watch | None = None
        self._lock = threading.Lock()

    @property
    def phase(self) -> str:
        """``idle``, ``training``, ``shadow`` or ``watch``."""
        if self._training is not None:
            return "training"
        if self._shadow is not None:
            return "shadow"
        if self._watch is not None:
            return "watch"
        return "idle"

    # -- the engine's observer ---------------------------------------------------------

    def observe(
        self, rt: RuleRuntime, idx: IntArray, ts: FloatArray, vs: FloatArray, scores: FloatArray
    ) -> None:
        """One batch's points as the live detector scored them (``idx`` in the registry).

        Never raises: a fault in retraining is logged and the rule scores on.
        """
        try:
            self._observe(rt, idx, ts, vs, scores)
        except Exception:
            self.outcome.failed += 1
            log.exception("rule %s: drift check or retraining failed on a batch", self.rule)

    def forget(self, rt: RuleRuntime, rows: IntArray) -> None:
        """Series ``rows`` were forgotten; each row goes to the next new series.

        What was kept of them goes: their history points, their drift slots, and their
        rows of a candidate in shadow and of a previous model under watch (so neither a
        promotion nor a rollback hands a new series the old one's state). A training
        under way, which read the history before, resets those rows of its candidate
        when it ends. Never raises.
        """
        try:
            if self.history is not None:
                self.history.forget(rows)
            if self.drift is not None:
                self.drift.forget(rows)
            if self._training is not None:
                self._training.forgotten.extend(int(r) for r in rows)
            if self._shadow is not None and not rt._reset_detector_rows(
                np.unique(rows), self._shadow.candidate
            ):
                log.info("rule %s: series forgotten; the candidate in shadow is dropped", self.rule)
                self._shadow = None
            if self._watch is not None and not rt._reset_detector_rows(
                np.unique(rows), self._watch.previous
            ):
                log.info("rule %s: series forgotten; the watch of the promotion ends", self.rule)
                self._watch = None
        except Exception:
            self.outcome.failed += 1
            log.exception("rule %s: forgetting series in the retrainer failed", self.rule)

    def _observe(
        self, rt: RuleRuntime, idx: IntArray, ts: FloatArray, vs: FloatArray, scores: FloatArray
    ) -> None:
        ok = np.isfinite(vs)
        if not ok.all():
            idx, ts, vs, scores = idx[ok], ts[ok], vs[ok], scores[ok]
        if not len(idx):
            return
        now = float(ts.max())
        if self.history is not None:
            # History before the drift checks: a retrain a drift starts learns the batch up
            # to the drift (in a replay, one batch may hold days: all there is to learn).
            self.history.append(idx, ts, vs)
            self._batch_ts = ts
        try:
            if self.drift_config is not None:
                if self.drift is None:
                    self.drift = DriftMonitor(
                        self.rule,
                        self.drift_config,
                        threshold=self.threshold,
                        keys=rt.registry.keys,
                    )
                for event in self.drift.observe(idx, ts, vs, scores):
                    self._drifted(rt, event)
        finally:
            self._batch_ts = None
        if self.retrain is None or self.history is None:
            return
        if self._shadow is not None:
            self._shadow_step(rt, idx, ts, vs, scores, now)
        elif self._watch is not None:
            self._watch_step(rt, idx, ts, vs, scores, now)
        if self.schedule.due(now):
            self.trigger(rt, "scheduled", now)
        if self._training is not None and self._training.future.done():
            self._trained(rt, now)  # inline training: the shadow starts at the trigger

    # -- triggers ----------------------------------------------------------------------

    def _drifted(self, rt: RuleRuntime, event: DriftEvent) -> None:
        self.outcome.drifts += 1
        self.owner.metrics_drift(self.rule, event.signal)
        text = event.describe()
        log.warning("%s", text)
        self.owner.notify(
            rt,
            "ModelDrift",
            event.at,
            summary=f"Drift detected on the {event.signal} of rule {self.rule}",
            description=text,
            extra={"signal": event.signal},
        )
        if self.retrain is not None and self.retrain.on_drift:
            self.trigger(rt, "drift", event.at, detail=text)

    def trigger(self, rt: RuleRuntime, trigger: str, now: float, *, detail: str = "") -> bool:
        """Start a retrain of the rule (``scheduled``, ``drift``, ``manual``) at data time ``now``.

        False (and nothing starts) when one is under way or the rule is pinned. The
        worker finds the history; with none left to train on, the retrain counts as
        skipped.
        """
        if self.retrain is None or self.history is None:
            return False
        if self.phase in ("training", "shadow"):
            log.info("rule %s: %s retrain skipped: one is under way", self.rule, trigger)
            return False
        pinned = self.owner.pinned(self.rule)
        if pinned is not None:
            self._skip(rt, trigger, f"the model is pinned to version {pinned}")
            return False
        start = now - self.retrain.window
        # Copies, taken on the data loop (the ring moves on); the worker may fetch instead.
        ring = self.history.between(start, now)
        mark = self._mark_at(now)
        keys = list(rt.registry.keys)
        future = self.owner.executor.submit(self.owner.build_candidate, rt, keys, ring, start, now)
        self._training = _Training(trigger, now, mark, future, detail)
        self.outcome.trainings += 1
        log.info(
            "rule %s: %s retrain started on the history since %s", self.rule, trigger, _iso(start)
        )
        return True

    def _mark_at(self, now: float) -> int:
        """The history's count up to data time ``now``, the mark a training starts from.

        The current batch's trailing points after ``now`` (a drift inside the batch) are
        left for the candidate's catch-up, as if they came after the trigger.
        """
        assert self.history is not None
        ts = self._batch_ts
        if ts is None:
            return self.history.count
        upto = np.flatnonzero(ts <= now)
        later = len(ts) - (int(upto[-1]) + 1 if len(upto) else 0)
        return self.history.count - later

    def _skip(self, rt: RuleRuntime, trigger: str, why: str) -> None:
        self.outcome.skipped += 1
        self.owner.metrics_retrain(self.rule, trigger, "skipped")
        log.info("rule %s: %s retrain skipped: %s", self.rule, trigger, why)

    # -- training done: shadow -----------------------------------------------------------

    def _trained(self, rt: RuleRuntime, now: float) -> None:
        training = self._training
        assert training is not None
        self._training = None
        try:
            trained: _Trained = training.future.result()
        except _NoHistory as exc:
            self._skip(rt, training.trigger, str(exc))
            return
        except Exception as exc:  # a failed training changes nothing; the rule runs on
            self.outcome.failed += 1
            self.owner.metrics_retrain(self.rule, training.trigger, "failed")
            log.error("rule %s: retrain failed: %s: %s", self.rule, type(exc).__name__, exc)
            return
        assert self.history is not None
        candidate = trained.detector
        if training.forgotten and not rt._reset_detector_rows(
            np.unique(np.asarray(training.forgotten, dtype=np.int64)), candidate
        ):
            self._skip(rt, training.trigger, "series were forgotten while it trained")
            return
        training.window, training.points = trained.window, trained.points
        training.excluded = trained.excluded
        log.info(
            "rule %s: candidate trained on %d points from %s to %s (%d left out: silences, "
            "maintenance windows)",
            self.rule,
            trained.points,
            _iso(trained.window[0]),
            _iso(trained.window[1]),
            trained.excluded,
        )
        # Catch up with what the rule scored while the candidate trained (a worker thread).
        idx, ts, vs = self.history.since_mark(training.mark)
        if len(idx):
            candidate.bind_series(rt.registry.keys)
            candidate.score(idx, ts, vs)
        if self._watch is not None:  # a new candidate ends the watch of the last promotion
            self._watch = None
        self._shadow = _Shadow(candidate, training, _Counts(start=now), bound=len(rt.registry))
        log.info("rule %s: candidate trained; shadow for %s", self.rule, _dur(self.retrain))

    def _shadow_step(
        self,
        rt: RuleRuntime,
        idx: IntArray,
        ts: FloatArray,
        vs: FloatArray,
        scores: FloatArray,
        now: float,
    ) -> None:
        sh = self._shadow
        assert sh is not None
        assert self.retrain is not None
        c = self._count_beside(rt, sh, sh.candidate, idx, ts, vs, scores)
        if now - c.start >= self.retrain.shadow:
            self._shadow = None
            self._decide(rt, sh, now)

    def _count_beside(
        self,
        rt: RuleRuntime,
        side: _Shadow | _Watch,
        model: Detector,
        idx: IntArray,
        ts: FloatArray,
        vs: FloatArray,
        scores: FloatArray,
    ) -> _Counts:
        """Score ``model`` on the batch beside the rule's own; count both sides' hits.

        The shadowed candidate and the watched previous version alike: ``model`` learns
        from the same points, bound to the rule's series as they grow.
        """
        if len(rt.registry) != side.bound:
            side.bound = len(rt.registry)
            model.bind_series(rt.registry.keys)
        other = model.score(idx, ts, vs)
        c = side.counts
        c.points += len(idx)
        c.hits_current += int(np.count_nonzero(scores >= self.threshold))
        c.hits_other += int(np.count_nonzero(other >= self.threshold))
        return c

    def _decide(self, rt: RuleRuntime, sh: _Shadow, now: float) -> None:
        assert self.retrain is not None
        tr, c = sh.training, sh.counts
        ratio = self.retrain.max_alert_rate_ratio
        current_rate, candidate_rate = c.rates()
        evaluation = {
            "shadow": {
                "from": c.start,
                "to": now,
                "points": c.points,
                "current_hits": c.hits_current,
                "candidate_hits": c.hits_other,
                "current_alert_rate": round(current_rate, 8),
                "candidate_alert_rate": round(candidate_rate, 8),
            },
            "check": {
                "max_alert_rate_ratio": ratio,
                "passed": c.hits_other + 1 <= ratio * (c.hits_current + 1),
            },
        }
        event = {
            "trigger": tr.trigger,
            "training_window": list(tr.window),
            "points": tr.points,
            "excluded": tr.excluded,
            **evaluation,
        }
        if not evaluation["check"]["passed"]:
            self.outcome.rejected += 1
            self.owner.metrics_retrain(self.rule, tr.trigger, "rejected")
            why = (
                f"candidate alert rate {candidate_rate:.3g} over the shadow period is more "
                f"than {ratio:g} x the current model's {current_rate:.3g} "
                f"({c.hits_other} vs {c.hits_current} hits in {c.points} points)"
            )
            log.warning("rule %s: candidate not promoted: %s", self.rule, why)
            self.owner.record(self.rule, {"event": "candidate rejected", "reason": why, **event})
            self.outcome.events.append({"event": "rejected", "at": now, **event})
            return
        pinned = self.owner.pinned(self.rule)
        if pinned is not None:
            self._skip(rt, tr.trigger, f"the model was pinned to version {pinned} meanwhile")
            return
        previous_detector = rt.detector
        previous_version = rt.model_version
        try:
            version = self.owner.promote(rt, sh.candidate, tr, evaluation, now)
        except Exception as exc:  # the registry refused (pinned, disk): the rule runs on
            self.outcome.failed += 1
            self.owner.metrics_retrain(self.rule, tr.trigger, "failed")
            log.error("rule %s: candidate not promoted: %s: %s", self.rule, type(exc).__name__, exc)
            return
        self.outcome.promoted += 1
        self.owner.metrics_retrain(self.rule, tr.trigger, "promoted")
        self.outcome.events.append({"event": "promoted", "at": now, "version": version, **event})
        log.info(
            "rule %s: version %s promoted (%s retrain; shadow alert rate %.3g vs %.3g)",
            self.rule,
            version,
            tr.trigger,
            candidate_rate,
            current_rate,
        )
        self._watch = _Watch(
            previous_detector, previous_version, version, _Counts(start=now), len(rt.registry)
        )

    # -- watch: automatic rollback --------------------------------------------------------

    def _watch_step(
        self,
        rt: RuleRuntime,
        idx: IntArray,
        ts: FloatArray,
        vs: FloatArray,
        scores: FloatArray,
        now: float,
    ) -> None:
        w = self._watch
        assert w is not None
        assert self.retrain is not None
        if rt.model_version != w.version:  # an operator swapped it meanwhile
            self._watch = None
            return
        c = self._count_beside(rt, w, w.previous, idx, ts, vs, scores)
        if now - c.start < self.retrain.watch:
            return
        self._watch = None
        limit = self.retrain.rollback_alert_rate_ratio
        if c.hits_current + 1 <= limit * (c.hits_other + 1):
            return
        new_rate, old_rate = c.rates()
        why = (
            f"its alert rate over {_dur_s(now - c.start)} after promotion, {new_rate:.3g} "
            f"({c.hits_current} hits in {c.points} points), was more than {limit:g} x the "
            f"previous version's {old_rate:.3g} ({c.hits_other} hits)"
        )
        try:
            self.owner.roll_back(rt, w, why)
        except Exception as exc:
            log.error(
                "rule %s: version %s should be rolled back (%s) but was not: %s: %s",
                self.rule,
                w.version,
                why,
                type(exc).__name__,
                exc,
            )
            return
        self.outcome.rolled_back += 1
        self.owner.metrics_retrain(self.rule, "rollback", "rolled_back")
        self.outcome.events.append({"event": "rolled back", "at": now, "version": w.version})
        text = f"rule {self.rule}: version {w.version} rolled back because {why}"
        log.warning("%s", text)
        self.owner.notify(
            rt,
            "ModelRolledBack",
            now,
            summary=f"Model of rule {self.rule} rolled back to version {w.previous_version}",
            description=text,
        )


class NullObserver:
    """The engine's default point observer: a rule without drift checks or retraining."""

    def observe(
        self, rt: RuleRuntime, idx: IntArray, ts: FloatArray, vs: FloatArray, scores: FloatArray
    ) -> None:
        """Nothing to do."""

    def forget(self, rt: RuleRuntime, rows: IntArray) -> None:
        """Nothing kept."""


class NoRetraining:
    """The null object: a daemon none of whose rules has ``retrain:`` or ``drift:``."""

    def start(
        self, engine: Any, *, router: Any = None, sources: Any = None, restore: bool = True
    ) -> None:
        """Nothing to do."""

    def after_batch(self, engine: Any, data_time: float) -> list[Alert]:
        """No alerts."""
        return []

    def close(self) -> None:
        """Nothing to do."""


class Retraining:
    """Every rule's :class:`Retrainer`, and what they share: registry, executor, router.

    The daemon calls :meth:`start` after the checkpoint and the registry are loaded,
    :meth:`after_batch` after each batch (it attaches retrainers to rules that lost
    theirs, on a reload, and returns the info alerts due) and :meth:`close` at the end.
    """

    def __init__(
        self,
        rules: Mapping[str, tuple[Retrain | None, Drift | None]],
        *,
        models: _Models | None = None,
        router: Any = None,
        sources: Mapping[str, Any] | None = None,
        metrics: Any = None,
        executor: Executor | None = None,
        steps: Mapping[str, float] | None = None,
        daemon: Any = None,
    ) -> None:
        self.config: dict[str, tuple[Retrain | None, Drift | None]] = {}
        #: Evaluation step of each query rule (its history comes from its source at it).
        self.steps: Mapping[str, float] = {}
        self.reconfigure(rules, steps)
        self.models = models
        self._maintenance = Maintenance(router)
        self._sources: Mapping[str, Any] = sources or {}
        #: When set, its current ``router`` and ``sources`` are used (a reload replaces them).
        self.daemon = daemon
        self.metrics = metrics
        self.executor: Executor = executor or ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="aiops-retrain"
        )
        self.retrainers: dict[str, Retrainer] = {}
        self._engine: Any = None
        self._pending: list[_Pending] = []
        self._alerts: list[Alert] = []
        self._restoring = False

    # -- daemon hooks ------------------------------------------------------------------

    def start(
        self, engine: Engine, *, router: Any = None, sources: Any = None, restore: bool = True
    ) -> None:
        """Attach a retrainer to every configured rule of ``engine``.

        ``restore``: new retrainers read what the last clean stop carried over
        (:mod:`aiops.models.carry`); a reload attaches without.
        """
        self._engine = engine
        if router is not None:
            self._maintenance = Maintenance(router)
        if sources is not None:
            self._sources = sources
        self._restoring = restore
        try:
            self.attach(engine)
        finally:
            self._restoring = False

    def reconfigure(
        self,
        rules: Mapping[str, tuple[Retrain | None, Drift | None]],
        steps: Mapping[str, float] | None = None,
    ) -> None:
        """New settings (a reload): the next :meth:`after_batch` attaches them.

        A rule whose ``retrain:`` and ``drift:`` did not change, and whose runtime the
        reload kept, keeps its retrainer (its history, and a retrain under way); a
        changed one, or a rule the reload started afresh, gets a new retrainer.
        """
        self.config = {k: v for k, v in rules.items() if v[0] is not None or v[1] is not None}
        self.steps = dict(steps or {})
        self._engine = None  # re-attach at the next batch

    @property
    def maintenance(self) -> Maintenance:
        """Silences and muted intervals of the daemon's current router."""
        router = getattr(self.daemon, "router", None)
        if router is not None and router is not self._maintenance.router:
            self._maintenance = Maintenance(router)
        return self._maintenance

    @property
    def sources(self) -> Mapping[str, Any]:
        """The daemon's current sources (for range queries)."""
        sources = getattr(self.daemon, "sources", None)
        return sources if sources is not None else self._sources

    def attach(self, engine: Any) -> None:
        """Make each configured rule's observer its retrainer (new runtimes after a reload).

        A rule no longer configured for it loses its retrainer (and its observer).
        """
        from aiops.pipeline.engine import NO_OBSERVER

        self._engine = engine
        for key in [k for k in self.retrainers if k not in self.config]:
            gone = self.retrainers.pop(key)
            old_rt = engine.rules.get(key)
            if old_rt is not None and old_rt.observer is gone:
                old_rt.observer = NO_OBSERVER
        for key, (retrain, drift) in self.config.items():
            rt = engine.rules.get(key)
            if rt is None:
                continue
            r = self.retrainers.get(key)
            # A new runtime (a reload changed the rule) gets a new retrainer: the old
            # one's history, drift reference and shadow are of the old runtime's series.
            if (
                r is None
                or r.retrain != retrain
                or r.drift_config != drift
                or r.threshold != rt.spec.threshold
                or r.runtime is not rt
            ):
                r = Retrainer(
                    key, retrain=retrain, drift=drift, threshold=rt.spec.threshold, owner=self
                )
                r.runtime = rt
                self.retrainers[key] = r
                if self._restoring:
                    self._restore(r, rt)
            if rt.observer is not r:
                rt.observer = r

    def after_batch(self, engine: Any, data_time: float) -> list[Alert]:
        """The info alerts raised since the last call, and resolutions due by ``data_time``."""
        if engine is not self._engine or any(
            engine.rules.get(k) is not None and engine.rules[k].observer is not r
            for k, r in self.retrainers.items()
        ):
            self.attach(engine)
        out, self._alerts = self._alerts, []
        if self._pending and math.isfinite(data_time):
            due = [p for p in self._pending if p.due <= data_time]
            if due:
                self._pending = [p for p in self._pending if p.due > data_time]
                out += [p.alert for p in due]
        return out

    def close(self) -> None:
        """Stop the worker (a training under way is dropped); carry rings and watches over.

        Called at a clean stop, after the final checkpoint: each rule's history ring and
        a watch under way are written to its registry folder for the next start
        (:mod:`aiops.models.carry`).
        """
        self.executor.shutdown(wait=False, cancel_futures=True)
        for key, r in self.retrainers.items():
            path = self._carry_path(key)
            rt = r.runtime
            if path is None or rt is None:
                continue
            try:
                if carry.save(path, r, rt):
                    log.info("rule %s: retraining history and watch kept for the next start", key)
            except Exception as exc:  # the next start begins with an empty ring
                log.error(
                    "rule %s: retraining state not kept: %s: %s", key, type(exc).__name__, exc
                )

    def _carry_path(self, rule: str) -> Path | None:
        registry = getattr(self.models, "registry", None)
        root = getattr(registry, "root", None)
        if root is None:
            return None
        from aiops.models.registry import rule_dirname

        return Path(root) / rule_dirname(rule) / carry.CARRY_FILE

    def _restore(self, r: Retrainer, rt: RuleRuntime) -> None:
        path = self._carry_path(r.rule)
        if path is None:
            return
        try:
            restored = carry.restore(path, r, rt)
        except Exception as exc:  # the rule starts with an empty ring
            log.error(
                "rule %s: retraining state not restored: %s: %s", r.rule, type(exc).__name__, exc
            )
            return
        if restored:
            log.info("rule %s: restored %s from the last stop", r.rule, restored)

    # -- what retrainers share ---------------------------------------------------------

    def pinned(self, rule: str) -> int | None:
        """The version the rule is pinned to, if a registry is there."""
        registry = getattr(self.models, "registry", None)
        return None if registry is None else registry.pinned(rule)

    def record(self, rule: str, event: dict[str, Any]) -> None:
        """An event in the model's history (no registry: only the log has it)."""
        registry = getattr(self.models, "registry", None)
        if registry is not None:
            try:
                registry.record(rule, event)
            except OSError as exc:
                log.error("model %s: event not recorded in its history: %s", rule, exc)

    def build_candidate(
        self,
        rt: RuleRuntime,
        keys: Sequence[SeriesKey],
        ring: tuple[IntArray, FloatArray, FloatArray],
        start: float,
        end: float,
    ) -> _Trained:
        """The worker's part of a retrain: history (source or ring), maintenance, training.

        Runs on the retrain worker thread (inline in replays): range queries and the
        training never hold up the data loop. It reads only immutable parts of ``rt``
        (its spec, the labels of series ``keys`` already holds) and the router's silences.
        """
        fetched = self.fetch_history(rt, start, end)
        idx, ts, vs = fetched if fetched is not None else ring
        keep = self.maintenance.keep(rt, idx, ts, n_series=len(keys))
        excluded = int(len(keep) - keep.sum())
        if excluded:
            idx, ts, vs = idx[keep], ts[keep], vs[keep]
        if not len(idx):
            why = "no history to train on" if not excluded else "all its history is in maintenance"
            raise _NoHistory(why)
        _check_warm(rt, idx, len(ring[0]) if fetched is None else 0)
        detector = train_candidate(rt.spec.detector_type, rt._detector_params(), keys, idx, ts, vs)
        return _Trained(detector, (float(ts.min()), float(ts.max())), len(idx), excluded)

    def fetch_history(
        self, rt: RuleRuntime, start: float, end: float
    ) -> tuple[IntArray, FloatArray, FloatArray] | None:
        """The rule's points over ``[start, end]`` from its source's range queries.

        Only for a rule whose source has ``fetch_history`` (Prometheus) and that has a
        query; None otherwise, or when the query fails (then the ring is used). Series
        the rule does not know yet are left out (they start fresh when they come).
        """
        source = self.sources.get(rt.spec.source)
        fetch = getattr(source, "fetch_history", None)
        step = self.steps.get(rt.spec.key)
        query = rt.spec.selector_text  # a query rule's PromQL
        if fetch is None or step is None or not query:
            return None
        try:
            batch: Batch = fetch(query, start, end, step, name=rt.spec.alert)
        except Exception as exc:
            log.warning(
                "rule %s: history from source %s failed (%s); training on the kept points",
                rt.spec.key,
                rt.spec.source,
                exc,
            )
            return None
        index = {k: i for i, k in enumerate(rt.registry.keys)}
        local = np.array([index.get(k, -1) for k in batch.keys], dtype=np.int64)
        if not len(local):
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
        idx = local[batch.series]
        ok = (idx >= 0) & np.isfinite(batch.values)
        return idx[ok], batch.timestamps[ok], batch.values[ok]

    def promote(
        self,
        rt: RuleRuntime,
        candidate: Detector,
        training: _Training,
        evaluation: dict[str, Any],
        now: float,
    ) -> int | None:
        """Store the candidate as a new version and make the rule run it; its number."""
        registry = getattr(self.models, "registry", None)
        if self.models is None or registry is None:  # no registry: run it, unversioned
            rt.detector = candidate
            return None
        from aiops.models.lifecycle import describe

        key = rt.spec.key
        state = {
            "model_hash": rt.spec.model_hash(),
            "registry": rt.registry.state_dict(),
            "detector": candidate.state_dict(),
        }
        mv = registry.add(
            key,
            state,
            trigger=training.trigger,
            parent=rt.model_version,
            training_window=training.window,
            points_seen=training.points,
            rule_hash=rt.spec.model_hash(),
            params=describe(rt),
            evaluation=evaluation,
            note=training.detail,
            **getattr(self.models, "provenance", lambda rule: {})(key),
        )
        reason = (
            f"{training.trigger} retrain: shadow alert rate "
            f"{evaluation['shadow']['candidate_alert_rate']:.3g} vs "
            f"{evaluation['shadow']['current_alert_rate']:.3g}"
        )
        self.models.activate(self._engine_of(rt), key, mv.version, reason=reason, automatic=True)
        return int(mv.version)

    def roll_back(self, rt: RuleRuntime, watch: _Watch, why: str) -> None:
        """Make the rule run the previous model again, with what it learned in the watch."""
        registry = getattr(self.models, "registry", None)
        if self.models is None or registry is None or watch.previous_version is None:
            rt.detector = watch.previous
            return
        key = rt.spec.key
        registry.save_continued(
            key,
            watch.previous_version,
            {
                "model_hash": rt.spec.model_hash(),
                "registry": rt.registry.state_dict(),
                "detector": watch.previous.state_dict(),
            },
        )
        self.models.activate(
            self._engine_of(rt),
            key,
            watch.previous_version,
            reason=f"rolled back because {why}",
            automatic=True,
            event="rolled back",
        )

    def _engine_of(self, rt: RuleRuntime) -> Any:
        engine = self._engine
        if engine is None or engine.rules.get(rt.spec.key) is not rt:
            return _OneRule(rt)
        return engine

    def notify(
        self,
        rt: RuleRuntime,
        alertname: str,
        at: float,
        *,
        summary: str,
        description: str,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        """Raise an info alert now (returned by :meth:`after_batch`); it resolves later."""
        from aiops.pipeline.engine import alert_fingerprint

        labels = {**rt.spec.labels, **(extra or {})}
        labels.update(alertname=alertname, rule=rt.spec.key, severity="info")
        fp = alert_fingerprint(labels)
        common: dict[str, Any] = {
            "fingerprint": fp,
            "labels": labels,
            "annotations": {"summary": summary, "description": description},
            "rule": rt.spec.key,
            "detector": rt.spec.detector_type,
            "model_version": "" if rt.model_version is None else str(rt.model_version),
        }
        # One alert per name and rule at a time: a new event replaces a pending resolution.
        self._pending = [p for p in self._pending if p.alert.fingerprint != fp]
        self._alerts.append(Alert(status="firing", starts_at=at, **common))
        if len(self._alerts) > _ALERTS_KEPT:  # nobody takes them (a replay): keep the newest
            del self._alerts[: len(self._alerts) - _ALERTS_KEPT]
            log.warning("info alerts not taken by the daemon: the oldest were dropped")
        end = at + EVENT_HOLD
        self._pending.append(
            _Pending(end, Alert(status="resolved", starts_at=at, ends_at=end, **common))
        )

    def metrics_drift(self, rule: str, signal: str) -> None:
        """Count a reported drift."""
        hook = getattr(self.metrics, "drift_detected", None)
        if hook is not None:
            hook(rule, signal)

    def metrics_retrain(self, rule: str, trigger: str, outcome: str) -> None:
        """Count a retrain's outcome."""
        hook = getattr(self.metrics, "model_retrain", None)
        if hook is not None:
            hook(rule, trigger, outcome)


class _OneRule:
    """An engine of one rule, for :class:`~aiops.models.lifecycle.ModelLifecycle` in replays."""

    def __init__(self, rt: RuleRuntime) -> None:
        self.rules = {rt.spec.key: rt}

    def rule(self, key: str) -> RuleRuntime | None:
        return self.rules.get(key)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _dur(retrain: Retrain | None) -> str:
    return _dur_s(retrain.shadow) if retrain is not None else "0s"


def _dur_s(seconds: float) -> str:
    from aiops.timeutil import format_duration

    return format_duration(max(0.0, seconds))


#: Points per batch of a replay with retraining: an hour of one-minute data, so a shadow
#: or a watch ends within an hour of data time of when it would end live.
REPLAY_CHUNK = 60


def replay_retrained(
    timestamps: FloatArray,
    values: FloatArray,
    *,
    retrain: Retrain,
    drift: Drift | None = None,
    chunk: int = REPLAY_CHUNK,
    **score_args: Any,
) -> tuple[Any, _Outcome]:
    """Score one series as :func:`~aiops.pipeline.scoring.score_series` does, retraining.

    The rule runs with the daemon's own :class:`Retraining` (inline training) and model
    lifecycle over a registry in a temporary directory, so ``aiops eval labelled
    --retrain-every`` measures exactly what the daemon would do. Returns the scored
    series and what retraining did.
    """
    import tempfile

    from aiops.models.lifecycle import ModelLifecycle
    from aiops.models.registry import ModelRegistry
    from aiops.pipeline.scoring import score_series

    if drift is None and retrain.on_drift:  # as the daemon does (retraining_rules)
        from aiops.config.models import Drift

        drift = Drift()
    holder: dict[str, Retraining] = {}
    with tempfile.TemporaryDirectory(prefix="aiops-replay-") as tmp:
        models = ModelLifecycle(ModelRegistry(Path(tmp) / "models"), lock_timeout=0.0)

        def setup(rt: RuleRuntime) -> None:
            engine = _OneRule(rt)
            models.start(engine)  # type: ignore[arg-type]
            r = Retraining(
                {rt.spec.key: (retrain, drift)}, models=models, executor=InlineExecutor()
            )
            r.start(engine)  # type: ignore[arg-type]
            holder["r"] = r

        # A replay retrains hundreds of times: what the daemon logs per event is noise here.
        quiet = logging.getLogger("aiops.models")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            scored = score_series(timestamps, values, chunk=chunk, setup=setup, **score_args)
        finally:
            quiet.setLevel(level)
            models.close()
    retrainers = list(holder["r"].retrainers.values()) if "r" in holder else []
    return scored, retrainers[0].outcome if retrainers else _Outcome()


def retraining_rules(
    loaded: Any,
) -> tuple[dict[str, tuple[Retrain | None, Drift | None]], dict[str, float]]:
    """Each rule's ``retrain:`` and ``drift:`` settings, and the step of query rules.

    ``on_drift: true`` without a ``drift:`` section checks with the default ``drift:``
    settings.
    """
    from aiops.config.models import Drift

    rules: dict[str, tuple[Retrain | None, Drift | None]] = {}
    steps: dict[str, float] = {}
    for group in loaded.groups:
        for rule in group.rules:
            if rule.log is not None or (rule.retrain is None and rule.drift is None):
                continue
            key = f"{group.name}/{rule.alert}"
            drift = rule.drift
            if drift is None and rule.retrain is not None and rule.retrain.on_drift:
                drift = Drift()
            rules[key] = (rule.retrain, drift)
            if rule.query is not None:
                spec = loaded.daemon.sources.get(rule.source)
                step = getattr(getattr(spec, "config", None), "step", None)
                steps[key] = float(step or group.interval or 60.0)
    return rules, steps


def wire_retraining(daemon: Any, loaded: Any, *, metrics: Any = None) -> None:
    """Give the daemon retraining when any of its rules has ``retrain:`` or ``drift:``.

    Query rules learn their history from their source at their step. A reload that
    keeps the daemon calls ``daemon.retraining.reconfigure(*retraining_rules(loaded))``
    (or this again when the daemon had none).
    """
    rules, steps = retraining_rules(loaded)
    current = getattr(daemon, "retraining", None)
    if isinstance(current, Retraining):
        current.reconfigure(rules, steps)
        return
    if not rules:
        return
    daemon.retraining = Retraining(
        rules, models=daemon.models, metrics=metrics, steps=steps, daemon=daemon
    )
