"""The rule engine: batches in, scores and alert transitions out.

For each rule that reads a source, a batch goes through: the series registry (which
series the rule sees; dense indices; the cap), the detector (calibrated scores, state
per series), the hit window (threshold, min hits) and the alert state machine (``for``,
suppression, resolution). Each layer takes the whole batch in one call, whatever the
number of points per series: numpy over the points, or a compiled loop over them in order
(hit window, alert state machine), so a batch gives what feeding its points one at a time
gives. Python objects are made only for the rare alert transitions.

Each series also keeps its last :data:`WINDOW_POINTS` points (time, value, score) so
that an alert carries the recent window (:class:`aiops.alerting.notify.AlertWindow`) for
receivers that draw it; with no such receiver (``RuleSpec.windows`` false) it keeps
none. A window's earlier points are kept as two-byte codes (:mod:`.ringcodec`): to the
pixels of a chart, not to the bit, and a grid made at another batch boundary can code
them a little differently. Operator feedback reaches a rule through two hooks:
:meth:`RuleRuntime.raise_threshold` (a false positive: that series needs a higher score
to alert) and :meth:`RuleRuntime.reset_series` (an expected change: the series'
detector state starts afresh and relearns).
"""

from __future__ import annotations

import ctypes
import hashlib
import inspect
import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numba
import numpy as np

from aiops.alerting.notify import Alert, AlertWindow
from aiops.pipeline import ringcodec
from aiops.pipeline.alerts import AlertStateMachine
from aiops.pipeline.detector import DEFAULT_THRESHOLD, Detector, grown
from aiops.pipeline.faults import NAMED_SERIES, RuleFailure, RuleHealth, render_or_error
from aiops.pipeline.postrule import HitWindow
from aiops.pipeline.series import DROPPED, SeriesRegistry
from aiops.registry import DEFAULT_DETECTOR, DETECTORS
from aiops.state.rulestate import Live, StateSnapshot, adopt
from aiops.types import Batch, BoolArray, FloatArray, IntArray, SeriesKey

if TYPE_CHECKING:
    from aiops.config.models import Rule
    from aiops.logs.rules import LogEngine

__all__ = [
    "WINDOW_POINTS",
    "Engine",
    "RuleResult",
    "RuleRuntime",
    "RuleSpec",
    "alert_fingerprint",
    "expected_band",
]

log = logging.getLogger(__name__)

Float32Array = np.ndarray[Any, np.dtype[np.float32]]

#: The checkpoint key of the log rules' state (no rule key lacks a "/").
LOG_STATE_KEY = "_logs"

#: Points of each series kept for the window an alert carries (an hour at one point a
#: minute): 508 bytes per series (each point's time as a float32 offset from the series'
#: float64 base time, its value and score as float16 codes (:mod:`.ringcodec`); the
#: base, the values' grid and a count).
WINDOW_POINTS = 60
#: Every this many points of a series its window ring's values get a grid made for
#: what the ring holds (:func:`aiops.pipeline.ringcodec.regrid`), besides when a value
#: leaves the grid: a grid made wide by a spike narrows again once the spike is gone.
REGRID_TURN = WINDOW_POINTS
#: A series' window base time moves to its newest point once a point lies this far
#: from it (4.5 hours): offsets below it keep a float32's 24 bits to 1 ms or better,
#: and a window of 60 points an hour apart still to a fraction of a second.
WINDOW_REBASE_SECONDS = float(2**14)
#: The expected band of a window point: median +- this many robust standard deviations
#: (1.4826 MAD) of the earlier points of the window that scored below the threshold.
BAND_SIGMAS = 3.0
#: ... once at least this many such points exist (NaN before).
BAND_MIN_POINTS = 5
#: Looks for series to forget per ``forget_seconds`` of data time: a look is one
#: vectorized pass over every series' last point time, so it is not made every batch.
FORGET_CHECKS = 8

Renderer = Callable[[str, Mapping[str, Any]], str]


class PointObserver(Protocol):
    """Sees each batch's points of a rule as its detector scored them (series indices)."""

    def observe(
        self, rt: RuleRuntime, idx: IntArray, ts: FloatArray, vs: FloatArray, scores: FloatArray
    ) -> None:
        """Called after scoring, before the post-rules; must not raise."""

    def forget(self, rt: RuleRuntime, rows: IntArray) -> None:
        """Series ``rows`` were forgotten, their rows go to new series; must not raise."""


class _NoObserver:
    def observe(
        self, rt: RuleRuntime, idx: IntArray, ts: FloatArray, vs: FloatArray, scores: FloatArray
    ) -> None:
        pass

    def forget(self, rt: RuleRuntime, rows: IntArray) -> None:
        pass


NO_OBSERVER: PointObserver = _NoObserver()


def _plain_render(template: str, context: Mapping[str, Any]) -> str:
    return template


@dataclass(frozen=True)
class RuleSpec:
    """What the engine needs of one rule; built from a validated rule file entry."""

    group: str
    alert: str
    source: str
    matches: Callable[[SeriesKey], bool]
    detector_type: str = DEFAULT_DETECTOR
    detector_params: Mapping[str, Any] = field(default_factory=dict)
    threshold: float = DEFAULT_THRESHOLD
    for_seconds: float = 0.0
    min_hits: int = 1
    hits_window: int | None = None
    suppress_seconds: float = 0.0
    protect_baseline: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    max_series: int = 100_000
    selector_text: str = ""
    #: A firing series with no point for this long (data time) resolves; 0: never.
    stale_seconds: float = 0.0
    #: A series with no point for this long (data time) is forgotten (its row freed for a
    #: new series, its firing alert resolved first); 0: never.
    forget_seconds: float = 0.0
    #: False when no receiver draws charts (no notifier's ``uses_window``): the rule's
    #: alerts then carry no window and it keeps no window ring (508 bytes a series).
    windows: bool = True

    @classmethod
    def from_rule(
        cls,
        group: str,
        rule: Rule,
        *,
        matches: Callable[[SeriesKey], bool],
        max_series: int,
        selector_text: str,
        stale_seconds: float = 0.0,
        forget_seconds: float = 0.0,
        windows: bool = True,
    ) -> RuleSpec:
        """The spec of a validated rule-file rule; what selects its series is the caller's."""
        return cls(
            group=group,
            alert=rule.alert,
            source=rule.source,
            matches=matches,
            detector_type=rule.detector.type,
            detector_params=dict(rule.detector.params),
            threshold=rule.threshold,
            for_seconds=rule.for_,
            min_hits=rule.min_hits,
            hits_window=rule.hits_window,
            suppress_seconds=rule.suppress,
            protect_baseline=rule.protect_baseline,
            stale_seconds=stale_seconds,
            forget_seconds=forget_seconds,
            labels=dict(rule.labels),
            annotations={k: str(v) for k, v in rule.annotations.items()},
            max_series=max_series,
            selector_text=selector_text,
            windows=windows,
        )

    @property
    def key(self) -> str:
        """``group/alert``: the rule's name in checkpoints and metrics."""
        return f"{self.group}/{self.alert}"

    def model_hash(self) -> str:
        """A hash of everything that shapes the detector state; state is reused only if equal.

        It covers the *effective* parameters (the rule's, over the detector's defaults, so
        a default changed by a new release counts as a change) and the detector's state
        format version.
        """
        cached: str | None = self.__dict__.get("_model_hash")
        if cached is not None:
            return cached
        doc = {
            "detector": self.detector_type,
            "params": effective_params(self.detector_type, self.detector_params),
            "state_format": getattr(DETECTORS.get(self.detector_type), "state_format", 1),
            "selector": self.selector_text,
        }
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode())
        # A frozen dataclass: memoized past __setattr__ (it is a pure function of fields).
        value = digest.hexdigest()[:16]
        self.__dict__["_model_hash"] = value
        return value


@dataclass
class RuleResult:
    """What one batch did to one rule: per selected point, its position and score."""

    positions: IntArray  # indices into the batch's points
    scores: FloatArray
    fired: BoolArray  # per selected point: the alert started firing at this point
    alerts: list[Alert]


def effective_params(detector_type: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` over the keyword defaults of the detector's constructor.

    >>> p = effective_params("ewma_z", {"alpha": 0.1})
    >>> p["alpha"], p["warmup"]
    (0.1, 100)
    """
    cls = DETECTORS.get(detector_type)
    out = {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty and name != "learn_below"
    }
    out.update(params)
    return out


def alert_fingerprint(labels: Mapping[str, str]) -> str:
    """A stable 64-bit hex fingerprint of an alert's label set.

    >>> a = alert_fingerprint({"alertname": "A", "host": "x"})
    >>> a == alert_fingerprint({"host": "x", "alertname": "A"})
    True
    """
    text = "\xff".join(f"{k}\xfe{v}" for k, v in sorted(labels.items()))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class RuleRuntime:
    """One rule's live state: registry, detector, hit window, alert states."""

    def __init__(self, spec: RuleSpec, *, render: Renderer = _plain_render) -> None:
        self.spec = spec
        self.render = render
        self.registry = SeriesRegistry(spec.matches, max_series=spec.max_series)
        self.detector: Detector = DETECTORS.create(spec.detector_type, **self._detector_params())
        self.hits = HitWindow(
            threshold=spec.threshold, min_hits=spec.min_hits, window=spec.hits_window
        )
        self.alerts = AlertStateMachine(
            for_seconds=spec.for_seconds, suppress_seconds=spec.suppress_seconds
        )
        self._last_value = np.zeros(0)
        self._last_score = np.zeros(0)
        self._bound = -1  # registry generation last told to the detector (bind_series)
        # Data time of the next look for series to forget (:meth:`forget_stale`).
        self._forget_check = -np.inf
        # Recent window: a ring of WINDOW_POINTS per series (none without ``windows``);
        # _win_n counts points ever. A point's time is _win_t0 (its series' base) +
        # _win_dt (float32 offset); a NaN offset is a slot with no point. Its value is
        # a float16 code on the series' grid (offset _win_vo, factor _win_vf), its
        # score the float16 code of 1 - score (see ringcodec).
        self._win_w = WINDOW_POINTS if spec.windows else 0
        self._win_t0 = np.zeros(0)
        self._win_dt = np.zeros((0, self._win_w), dtype=np.float32)
        self._win_v = np.zeros((0, self._win_w), dtype=np.float16)
        self._win_s = np.zeros((0, self._win_w), dtype=np.float16)
        self._win_vo = np.zeros(0)
        self._win_vf = np.zeros(0, dtype=np.float32)
        self._win_n = np.zeros(0, dtype=np.int64)
        # Per-series threshold raised by feedback (0: the rule's threshold).
        self._min_threshold = np.zeros(0)
        self._raised = 0  # how many series have a raised threshold
        #: The latest point time this rule has seen (staleness is measured against it).
        self.data_time = -np.inf
        #: The earliest point time this rule has seen (its model's training window starts there).
        self.first_time = np.inf
        #: The model registry's version the detector state descends from (None: unknown).
        self.model_version: int | None = None
        #: Failed batches and template errors (:mod:`aiops.pipeline.faults`).
        self.health = RuleHealth()
        #: Drift checks and retraining (:mod:`aiops.models.retrain`) see the scored points.
        self.observer: PointObserver = NO_OBSERVER
        # Snapshots (:meth:`snapshot`) whose live arrays a checkpoint writer still reads.
        self._snapshots: list[StateSnapshot] = []

    def process(self, batch: Batch) -> RuleResult:
        """Score the batch's points of this rule's series and advance their alerts."""
        if batch.n_points == 0:
            return RuleResult(np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool), [])
        key_idx = self.registry.resolve(batch.keys)
        reused = self.registry.take_reused()
        if reused:  # rows of forgotten series, reset then, now hold new series
            rows = np.asarray(reused, dtype=np.int64)
            self._cow(rows)
            self.alerts.reuse(rows)
        if self.registry.generation != self._bound:
            self._bound = self.registry.generation
            self.detector.bind_series(self.registry.keys)
        point_idx = key_idx[batch.series]
        positions = np.flatnonzero(point_idx >= 0)
        if len(positions) == 0:
            # Points of series over the cap still move the rule's data time, so that
            # quiet series are forgotten and make room for them.
            over = self._over_cap_time(batch, key_idx, point_idx)
            return RuleResult(positions, np.zeros(0), np.zeros(0, bool), over)
        idx = point_idx[positions]
        ts = batch.timestamps[positions]
        vs = batch.values[positions]
        self._cow(idx)
        if self.detector.max_rows != self.spec.max_series:  # a new or swapped detector
            self.detector.limit_rows(self.spec.max_series)  # at its cap: no spare rows
        capacity = (self.detector.n_series, len(self._last_value))
        scores = self.detector.score(idx, ts, vs)
        self.observer.observe(self, idx, ts, vs, scores)
        fired = np.zeros(len(positions), dtype=bool)
        # Post-rule state for every series seen, whether its values in this batch are
        # missing or not, so that the state does not depend on the batch boundaries.
        need = int(idx.max()) + 1
        self._ensure(need)
        self.hits.reserve(need, self.spec.max_series)
        self.alerts.reserve(need, self.spec.max_series)
        if (self.detector.n_series, len(self._last_value)) != capacity:
            trim_heap()  # the arrays grew: the old ones' pages go back
        # A missing value is no point for the post-rules: no hit, no miss, no transition.
        sel = np.flatnonzero(np.isfinite(vs))
        if len(sel) == 0:
            return RuleResult(positions, scores, fired, [])
        i, t, v, s = idx[sel], ts[sel], vs[sel], scores[sel]
        hit_scores = s
        if self._raised:
            # A point below its series' raised threshold cannot be a hit.
            floor = self._min_threshold[i]
            below = np.nextafter(self.hits.threshold, 0.0)
            hit_scores = np.where(s < floor, np.minimum(s, below), s)
        tr = self.alerts.step(i, t, self.hits.step(i, hit_scores))
        fired[sel[tr.fired]] = True
        alerts: list[Alert] = []
        n_fired = len(tr.fired)
        at = np.concatenate([tr.fired, tr.resolved])
        by_series: tuple[IntArray, IntArray] | None = None
        for k in np.argsort(at).tolist():  # in point order, as one point at a time gives
            j = int(at[k])
            index, value, score, now = int(i[j]), float(v[j]), float(s[j]), float(t[j])
            window = None
            if self._win_w:
                if by_series is None:  # each series' points together, in order
                    order = np.argsort(i, kind="stable")
                    by_series = (i[order], order)
                window = self._window(index, j, by_series, t, v, s)
            if k < n_fired:
                alerts.append(self._alert(index, "firing", now, None, value, score, window))
            else:
                start = float(tr.starts_at[k - n_fired])
                alerts.append(self._alert(index, "resolved", start, now, value, score, window))
        self._record(i, t, v, s)
        last = len(i) - 1 - np.unique(i[::-1], return_index=True)[1]  # each series' last point
        self._last_value[i[last]] = v[last]
        self._last_score[i[last]] = s[last]
        self.data_time = max(self.data_time, float(np.max(t)))
        self.first_time = min(self.first_time, float(np.min(t)))
        alerts.extend(self.resolve_stale(self.data_time))
        return RuleResult(positions, scores, fired, alerts)

    def _over_cap_time(self, batch: Batch, key_idx: IntArray, point_idx: IntArray) -> list[Alert]:
        if self.spec.forget_seconds <= 0 or not (key_idx == DROPPED).any():
            return []
        t = batch.timestamps[(point_idx == DROPPED) & np.isfinite(batch.values)]
        latest = float(np.max(t, initial=-np.inf))
        if not latest > self.data_time:
            return []
        self.data_time = latest
        return self.resolve_stale(latest)

    def resolve_stale(self, now: float) -> list[Alert]:
        """Resolutions of firing series silent for ``stale_seconds`` of data time by ``now``.

        Dated at the moment each went stale (its last point + ``stale_seconds``), with
        its last value and score. Called after every batch with the rule's latest point
        time, and by :meth:`Engine.resolve_stale` with the latest time of all the data.
        Series silent for ``forget_seconds`` by the rule's own latest point are then
        forgotten (:meth:`forget_stale`): not by ``now``, since a source that lags behind
        the others (a backlog being read) would lose every learned state.
        """
        out = self._resolutions(
            self.alerts.resolve_stale(now, self.spec.stale_seconds, before=self._cow)
        )
        if out:
            log.debug("rule %s: %d firing series went stale", self.spec.key, len(out))
        if self.spec.forget_seconds > 0 and self.data_time >= self._forget_check:
            out.extend(self.forget_stale(self.data_time))
        return out

    def _resolutions(self, tr: Any) -> list[Alert]:
        """The resolved alerts of stale transitions, in the order they went stale."""
        if not len(tr.resolved) or tr.ends_at is None:
            return []
        out = []
        for k in np.argsort(tr.ends_at, kind="stable").tolist():
            index = int(tr.resolved[k])
            value, score = float(self._last_value[index]), float(self._last_score[index])
            start, end = float(tr.starts_at[k]), float(tr.ends_at[k])
            out.append(self._alert(index, "resolved", start, end, value, score))
        return out

    def resolve_all(self) -> list[Alert]:
        """Resolutions of every firing alert, dated at the rule's last data time.

        For a rule that stops (removed or changed by a reload): its alerts must not fire
        on for ever at the receivers.
        """
        out = []
        for index in self.alerts.firing().tolist():
            start = float(self.alerts.fired_at[index])
            end = max(start, float(self.data_time))
            value = float(self._last_value[index]) if index < len(self._last_value) else math.nan
            score = float(self._last_score[index]) if index < len(self._last_score) else math.nan
            out.append(self._alert(index, "resolved", start, end, value, score))
        return out

    def forget_stale(self, now: float) -> list[Alert]:
        """Forget the series with no point for ``forget_seconds`` of data time by ``now``.

        Their firing alerts resolve first (dated last point + ``forget_seconds``), then
        every per-series state of their rows starts afresh and the registry frees the
        rows for new series: a series that comes back later starts as a new one. One
        vectorized pass over the last-seen times; :meth:`resolve_stale` calls it at most
        once per :data:`FORGET_CHECKS` th of the period of data time, so a series is
        forgotten between ``forget_seconds`` and ``1 + 1/FORGET_CHECKS`` times that after
        its last point. A point without a value (NaN) does not count as a point.
        """
        forget = self.spec.forget_seconds
        self._forget_check = now + forget / FORGET_CHECKS
        n = len(self.registry)
        if forget <= 0 or n == 0:
            return []
        seen = np.full(n, -np.inf)
        m = min(n, len(self.alerts.last_seen))
        seen[:m] = self.alerts.last_seen[:m]
        rows = np.flatnonzero(seen <= now - forget)  # forgotten rows hold +inf
        if len(rows) == 0:
            return []
        # Exactly the firing series among ``rows`` (the same test on the same times).
        out = self._resolutions(self.alerts.resolve_stale(now, forget, before=self._cow))
        reusable = self._reset_rows(rows)
        freed = self.registry.free(rows.tolist(), reuse=reusable)
        log.info(
            "rule %s: forgot %d series with no point for %gs of data time%s",
            self.spec.key,
            freed,
            forget,
            "" if reusable else " (its detector cannot reset a row: the rows are retired)",
        )
        return out

    def _reset_rows(self, rows: IntArray) -> bool:
        """Every per-series state of ``rows`` as a new series has it.

        False if the detector's rows could not be reset: they must then not be handed
        out again.
        """
        self._cow(rows)
        self.alerts.forget(rows)
        hist = self.hits.state_dict()["history"]
        hist[rows[rows < len(hist)]] = 0
        self.hits.load_state_dict({"history": hist})
        ok = rows[rows < len(self._last_value)]
        self._last_value[ok] = np.nan
        self._last_score[ok] = 0.0
        ok = rows[rows < len(self._win_n)]
        self._win_n[ok] = 0
        ok = rows[rows < len(self._min_threshold)]
        self._raised -= int(np.count_nonzero(self._min_threshold[ok]))
        self._min_threshold[ok] = 0.0
        self.observer.forget(self, rows)  # retraining history, drift slots
        mine = rows[rows < self.detector.n_series]
        if not len(mine):
            return True
        if _groups_by_key(self.detector):
            # Its rows are tied to keys (bind_series): a reset row is not fresh. They are
            # retired: what the detector kept for them alone goes (``retire``).
            _retire(self.detector, mine.tolist())
            return False
        return self.reset_series(mine.tolist())

    def _ensure(self, n: int) -> None:
        if n > len(self._last_value):
            extra = grown(len(self._last_value), n, self.spec.max_series) - len(self._last_value)
            self._last_value = np.concatenate([self._last_value, np.full(extra, np.nan)])
            self._last_score = np.concatenate([self._last_score, np.zeros(extra)])
        self._grow_extras(len(self._last_value))

    def _grow_extras(self, n: int) -> None:
        """Grow the window rings and raised thresholds to ``n`` series."""
        extra = n - len(self._win_n)
        if extra > 0:
            w = self._win_w
            self._win_t0 = np.concatenate([self._win_t0, np.zeros(extra)])
            self._win_dt = np.concatenate([self._win_dt, np.zeros((extra, w), np.float32)])
            self._win_v = np.concatenate([self._win_v, np.zeros((extra, w), np.float16)])
            self._win_s = np.concatenate([self._win_s, np.zeros((extra, w), np.float16)])
            self._win_vo = np.concatenate([self._win_vo, np.zeros(extra)])
            empty = np.full(extra, ringcodec.EMPTY_FACTOR, np.float32)
            self._win_vf = np.concatenate([self._win_vf, empty])
            self._win_n = np.concatenate([self._win_n, np.zeros(extra, np.int64)])
        extra = n - len(self._min_threshold)
        if extra > 0:
            self._min_threshold = np.concatenate([self._min_threshold, np.zeros(extra)])

    def _record(self, i: IntArray, t: FloatArray, v: FloatArray, s: FloatArray) -> None:
        """Append the points (in order) to their series' rings."""
        w = self._win_w
        if not w:  # no rings: the counts alone
            rows, counts = np.unique(i, return_counts=True)
            self._win_n[rows] += counts
            return
        if np.bincount(i).max() == 1:  # one point per series: the usual live batch
            ever = self._win_n[i]
            slot = ever % w
            self._rebase(i, t)
            self._win_dt[i, slot] = t - self._win_t0[i]
            self._win_s[i, slot] = ringcodec.encode_scores(s)
            self._put_values(i, slot, ever, v, unique=True)
            self._win_n[i] += 1
            return
        order = np.argsort(i, kind="stable")
        si = i[order]
        starts = np.flatnonzero(np.r_[True, si[1:] != si[:-1]])
        counts = np.diff(np.r_[starts, len(si)])
        rank = np.arange(len(si)) - np.repeat(starts, counts)  # position within its series
        keep = rank >= np.repeat(counts, counts) - w  # only the last w of each series count
        pos, series, r = order[keep], si[keep], rank[keep]
        ever = self._win_n[series] + r
        slot = ever % w
        self._rebase(si[starts], t[order[starts + counts - 1]])  # by each one's last point
        self._win_dt[series, slot] = t[pos] - self._win_t0[series]
        self._win_s[series, slot] = ringcodec.encode_scores(s[pos])
        self._put_values(series, slot, ever, v[pos], unique=False)
        self._win_n[si[starts]] += counts

    def _put_values(
        self, series: IntArray, slot: IntArray, ever: IntArray, v: FloatArray, *, unique: bool
    ) -> None:
        """Write values into the rings (``(series, slot)`` pairs unique, times written).

        ``ever``: each point's count of its series' points before it; ``unique``: no two
        points of one series. A value is coded on its series' grid, unless the code
        would be too large, the ring is empty, or it is the series' turn (once every
        :data:`REGRID_TURN` points, at a phase set by the row, so that series that
        started together do not all take their turn in the same batch): then the
        series' ring is decoded, the new values put in and a grid made for them all
        (:func:`ringcodec.regrid`).
        """
        code, ok = ringcodec.code_values(v, self._win_vo[series], self._win_vf[series])
        with np.errstate(over="ignore", invalid="ignore"):  # those coded again: overwritten
            self._win_v[series, slot] = code.astype(np.float16)
        again = ~ok | (ever == 0) | ((ever + series) % REGRID_TURN == 0)
        if not again.any():
            return
        w = self._win_w
        if unique:
            pts = np.flatnonzero(again)
            rows = series[pts]
            at = np.arange(len(pts))
            n_after = ever[pts] + 1
        else:
            rows = np.unique(series[again])
            pts = np.flatnonzero(np.isin(series, rows))
            at = np.searchsorted(rows, series[pts])
            n_after = np.zeros(len(rows), dtype=np.int64)
            np.maximum.at(n_after, at, ever[pts] + 1)
        vals = ringcodec.decode_values(self._win_v[rows], self._win_vo[rows], self._win_vf[rows])
        vals[at, slot[pts]] = v[pts]
        valid = (np.arange(w) < np.minimum(n_after, w)[:, None]) & np.isfinite(self._win_dt[rows])
        codes, self._win_vo[rows], self._win_vf[rows] = ringcodec.regrid(vals, valid)
        self._win_v[rows] = codes

    def use_windows(self, on: bool) -> None:
        """Keep window rings (``on``) or drop them, as a new spec's ``windows`` says.

        For a reload that adds the first or removes the last receiver drawing charts:
        rings started now hold the points from now on, so the first windows are short.
        """
        self._set_window_width(WINDOW_POINTS if on else 0)

    def _set_window_width(self, w: int) -> None:
        self._win_w = w
        if self._win_dt.shape[1] == w:
            return
        # New arrays: a pending snapshot still writes the old ones (see rulestate.Live).
        n = len(self._win_n)
        self._win_dt = np.full((n, w), np.nan, dtype=np.float32)  # no point yet
        self._win_v = np.zeros((n, w), dtype=np.float16)
        self._win_s = np.zeros((n, w), dtype=np.float16)
        self._win_vo = np.zeros(n)
        self._win_vf = np.full(n, ringcodec.EMPTY_FACTOR, np.float32)

    def _rebase(self, rows: IntArray, t: FloatArray) -> None:
        """Rebase the rings of ``rows`` (unique) that are empty or far from times ``t``.

        Far: :data:`WINDOW_REBASE_SECONDS` or more. Their base becomes ``t`` and their
        slots' offsets are shifted to it.
        """
        with np.errstate(invalid="ignore", over="ignore"):
            far = (self._win_n[rows] == 0) | ~(
                np.abs(t - self._win_t0[rows]) < WINDOW_REBASE_SECONDS
            )
            if not far.any():
                return
            rows, t = rows[far], t[far]
            shift = (self._win_t0[rows] - t)[:, None]
            self._win_dt[rows] = (self._win_dt[rows].astype(np.float64) + shift).astype(np.float32)
        self._win_t0[rows] = t

    def _window(
        self,
        index: int,
        j: int,
        by_series: tuple[IntArray, IntArray],
        t: FloatArray,
        v: FloatArray,
        s: FloatArray,
    ) -> AlertWindow:
        """The last WINDOW_POINTS points of series ``index`` up to batch point ``j``."""
        w = self._win_w
        sorted_idx, order = by_series
        a, b = np.searchsorted(sorted_idx, [index, index + 1])
        mine = order[a:b]
        mine = mine[mine <= j][-w:]
        total = int(self._win_n[index])
        older = min(total, w - len(mine))
        slots = (total - older + np.arange(older)) % w
        slots = slots[np.isfinite(self._win_dt[index, slots])]  # rings started late: no point
        older_ts = self._win_t0[index] + self._win_dt[index, slots].astype(np.float64)
        ts = np.concatenate([older_ts, t[mine]])
        older_vs = ringcodec.decode_values(
            self._win_v[index, slots], self._win_vo[index], self._win_vf[index]
        )
        vs = np.concatenate([older_vs, v[mine]])
        threshold = self.threshold_of(index)
        older_hit = ringcodec.reached(self._win_s[index, slots], threshold)
        anomalous = np.concatenate([older_hit, s[mine] >= threshold])
        lo, hi = expected_band(vs, anomalous)
        return AlertWindow(
            tuple(ts.tolist()),
            tuple(vs.tolist()),
            tuple(lo.tolist()),
            tuple(hi.tolist()),
            tuple(anomalous.tolist()),
            threshold,
        )

    # -- feedback hooks ---------------------------------------------------------------

    def threshold_of(self, index: int) -> float:
        """The score series ``index`` needs to hit: the rule's, or higher after feedback."""
        raised = float(self._min_threshold[index]) if index < len(self._min_threshold) else 0.0
        return max(self.hits.threshold, raised)

    def series_index(self, series: str) -> int | None:
        """The index of the series whose text form (``str(SeriesKey)``) is ``series``."""
        for k, key in enumerate(self.registry.keys):
            if str(key) == series and self.registry.is_live(k):
                return k
        return None

    def raise_threshold(self, index: int, threshold: float) -> float:
        """Make series ``index`` need at least ``threshold`` to hit; returns the new one.

        A threshold is only ever raised (the larger of the old and the new one), so a
        repeated or replayed request changes nothing.
        """
        self._cow(np.array([index], dtype=np.int64))
        self._ensure(index + 1)
        if self._min_threshold[index] == 0.0 and threshold > 0.0:
            self._raised += 1
        self._min_threshold[index] = max(float(self._min_threshold[index]), float(threshold))
        return self.threshold_of(index)

    def reset_series(self, indices: Sequence[int]) -> bool:
        """Start the detector state and hit history of these series afresh.

        The detector's rows are replaced by those of a new detector of the same type
        and parameters (every state array with one row per series); the other series
        keep theirs. Returns False (and changes nothing) when the detector keeps no
        per-series rows that can be told apart.
        """
        idx = np.asarray(sorted({int(k) for k in indices}), dtype=np.int64)
        self._cow(idx)
        if not self._reset_detector_rows(idx):
            return False
        n = self.detector.n_series
        if len(idx) == 0 or n == 0:
            return True
        idx = idx[idx < n]
        hits = self.hits.state_dict()["history"]
        hits[idx[idx < len(hits)]] = 0
        self.hits.load_state_dict({"history": hits})
        return True

    def _reset_detector_rows(self, idx: IntArray, detector: Detector | None = None) -> bool:
        """The detector's rows ``idx`` (sorted, unique) as a new detector's; see reset_series.

        ``detector``: another detector of this rule's (a retraining candidate) instead.
        """
        target = self.detector if detector is None else detector
        n = target.n_series
        if len(idx) == 0 or n == 0:
            return len(idx) == 0
        idx = idx[idx < n]
        fresh: Detector = DETECTORS.create(self.spec.detector_type, **self._detector_params())
        fresh.score(np.array([n - 1]), np.array([0.0]), np.array([np.nan]))  # grows, learns nothing
        fresh.bind_series(self.registry.keys)
        if fresh.n_series != n:
            return False
        copied = [0]
        state = _copy_rows(target.state_dict(), fresh.state_dict(), idx, n, copied)
        if not copied[0]:
            return False
        target.load_state_dict(state)
        return True

    # -- model versions (aiops.models) ---------------------------------------------------

    @property
    def points_seen(self) -> int:
        """Points (with a value) this rule has scored since its state started."""
        return int(self._win_n.sum())

    def model_state(self) -> dict[str, Any]:
        """The model alone (series list and detector state), as a registry version holds it."""
        return {
            "model_hash": self.spec.model_hash(),
            "registry": self.registry.state_dict(),
            "detector": self.detector.state_dict(),
        }

    def load_model_state(self, state: dict[str, Any]) -> None:
        """Swap the detector to a :meth:`model_state`; alert states and windows stay.

        The model's series list and the rule's must be one a prefix of the other (they
        grow by appending, so a model saved from this rule's lineage is): the longer one
        is kept, and series the model never saw start fresh when next scored. Rows whose
        series differ (a series forgotten and its row reused by another since the model
        was saved, :meth:`forget_stale`) take a new detector's state, so a swap after pod
        churn still works: each series keeps only what the model learned of it.
        :class:`ValueError` (nothing changed) for another configuration, or for rows that
        differ when the detector cannot reset a row.
        """
        if state.get("model_hash") != self.spec.model_hash():
            raise ValueError(
                f"the model was trained with another detector configuration "
                f"({state.get('model_hash')}; the rule's is {self.spec.model_hash()})"
            )
        saved = SeriesRegistry(self.spec.matches, max_series=self.spec.max_series)
        saved.load_state_dict(state["registry"])
        mine, theirs = self.registry.keys.texts, saved.keys.texts
        reg = self.registry
        shared = min(len(mine), len(theirs))
        differ = [
            r for r in range(shared) if mine[r] != theirs[r] or reg.is_live(r) != saved.is_live(r)
        ]
        detector: Detector = DETECTORS.create(self.spec.detector_type, **self._detector_params())
        detector.load_state_dict(state["detector"])
        if not differ:
            if len(theirs) > len(mine):
                self.registry.load_state_dict(state["registry"])
        else:
            # Rows the model holds beyond this rule's would go to new series: fresh too.
            differ.extend(range(len(mine), len(theirs)))
            previous = self.detector
            self.detector = detector
            if not self._reset_detector_rows(np.asarray(differ, dtype=np.int64)):
                self.detector = previous
                raise ValueError(
                    f"the model's series list is not this rule's ({len(differ)} rows hold "
                    "other series) and its detector cannot reset a row"
                )
        self.detector = detector
        self._bound = self.registry.generation
        self.detector.bind_series(self.registry.keys)

    def _detector_params(self) -> dict[str, Any]:
        params = dict(self.spec.detector_params)
        if self.spec.protect_baseline:
            params.setdefault("learn_below", self.spec.threshold)
        return params

    def alert_labels(self, index: int) -> dict[str, str]:
        """The labels of the alert of series ``index``: series labels, rule labels, name."""
        key = self.registry.key(index)
        labels = dict(key.labels)
        labels.setdefault("metric", key.name)
        labels.update(self.spec.labels)
        labels["alertname"] = self.spec.alert
        return labels

    def _alert(
        self,
        index: int,
        status: str,
        starts_at: float,
        ends_at: float | None,
        value: float,
        score: float,
        window: AlertWindow | None = None,
    ) -> Alert:
        labels = self.alert_labels(index)
        key = self.registry.key(index)
        context = {"labels": labels, "value": value, "score": score, "series": str(key)}
        annotations = {
            k: render_or_error(self.render, v, context, self._template_failed)
            for k, v in self.spec.annotations.items()
        }
        return Alert(
            fingerprint=alert_fingerprint(labels),
            status="firing" if status == "firing" else "resolved",
            labels=labels,
            annotations=annotations,
            starts_at=starts_at,
            ends_at=ends_at,
            value=value,
            score=score,
            series=str(key),
            rule=self.spec.key,
            detector=self.spec.detector_type,
            model_version=self.spec.model_hash(),
            window=window,
        )

    def _template_failed(self, error: str) -> None:
        self.health.template_errors += 1
        log.warning(
            "rule %s: an annotation template failed (%s); sent with the error", self.spec.key, error
        )

    def state_dict(self) -> dict[str, Any]:
        """Everything learned, as plain arrays and JSON."""
        n = len(self.registry)
        return {
            "model_hash": self.spec.model_hash(),
            "registry": self.registry.state_dict(),
            "detector": self.detector.state_dict(),
            "hits": self.hits.state_dict(),
            "alerts": self.alerts.state_dict(),
            "last_value": self._last_value[:n].copy(),
            "last_score": self._last_score[:n].copy(),
            "window": {
                "t0": self._win_t0[:n].copy(),
                "dt": self._win_dt[:n].copy(),
                "value16": self._win_v[:n].copy(),
                "offset": self._win_vo[:n].copy(),
                "factor": self._win_vf[:n].copy(),
                "rest16": self._win_s[:n].copy(),
                "count": self._win_n[:n].copy(),
            },
            "min_threshold": self._min_threshold[:n].copy(),
            "data_time": self.data_time,
            "first_time": self.first_time,
            "forget_check": self._forget_check,
            "model_version": self.model_version,
        }

    def snapshot(self) -> StateSnapshot:
        """What :meth:`state_dict` returns, as a snapshot a checkpoint writer can take.

        Cheap on the data loop: the series keys are a shallow copy, and the arrays of
        this runtime, of its hit windows and alert states, and of a detector that has
        ``state_views()`` are not copied but written from where they are, with
        copy-on-write: before this runtime writes rows of them, the snapshot copies
        those rows if the writer has not written them yet (:meth:`_cow`). A detector
        without ``state_views()`` is copied now (its ``state_dict()``).
        """
        n = len(self.registry)
        views = getattr(self.detector, "state_views", None)
        detector = views() if callable(views) else self.detector.state_dict()
        state = {
            "model_hash": self.spec.model_hash(),
            "registry": self.registry.snapshot_state(),
            "detector": detector,
            "hits": self.hits.state_views(),
            "alerts": self.alerts.state_views(),
            "last_value": Live(self._last_value[:n]),
            "last_score": Live(self._last_score[:n]),
            "window": {
                "t0": Live(self._win_t0[:n]),
                "dt": Live(self._win_dt[:n]),
                "value16": Live(self._win_v[:n]),
                "offset": Live(self._win_vo[:n]),
                "factor": Live(self._win_vf[:n]),
                "rest16": Live(self._win_s[:n]),
                "count": Live(self._win_n[:n]),
            },
            "min_threshold": Live(self._min_threshold[:n]),
            "data_time": self.data_time,
            "first_time": self.first_time,
            "forget_check": self._forget_check,
            "model_version": self.model_version,
        }
        snap = StateSnapshot(state)
        self._snapshots = [s for s in self._snapshots if s.pending]
        if snap.pending:
            self._snapshots.append(snap)
        return snap

    def _cow(self, rows: IntArray) -> None:
        """Before rows of the live arrays are written: pending snapshots copy them first."""
        if not self._snapshots:
            return
        self._snapshots = [s for s in self._snapshots if s.pending]
        for snap in self._snapshots:
            snap.capture(rows)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore; a detector state from a different model configuration is not loaded."""
        self.registry.load_state_dict(state["registry"])
        self.model_version = None
        if state.get("model_hash") == self.spec.model_hash():
            self.detector.load_state_dict(state["detector"])
            version = state.get("model_version")
            self.model_version = int(version) if version is not None else None
        else:
            log.warning(
                "rule %s: detector configuration changed since the checkpoint; "
                "its model starts fresh (series, alert states kept)",
                self.spec.key,
            )
        self._bound = self.registry.generation
        self.detector.bind_series(self.registry.keys)
        self.hits.load_state_dict(state["hits"])
        self.alerts.load_state_dict(state["alerts"])
        self._last_value = adopt(state["last_value"], np.float64)
        self._last_score = adopt(state["last_score"], np.float64)
        n = len(self._last_value)
        win = state.get("window")  # absent in checkpoints from before the window
        widths = ((WINDOW_POINTS,), (0,))
        if isinstance(win, dict) and np.shape(win.get("dt", ()))[1:] in widths:
            self._win_t0 = adopt(win["t0"], np.float64)
            self._win_dt = adopt(win["dt"], np.float32)
            self._win_n = adopt(win["count"], np.int64)
            self._load_ring_points(win)
        elif isinstance(win, dict) and np.shape(win.get("ts", ()))[1:] == (WINDOW_POINTS,):
            # Before the offsets: times as float64 (the base is each ring's newest point).
            self._win_n = adopt(win["count"], np.int64)
            self._win_t0, self._win_dt = _window_offsets(
                np.asarray(win["ts"], dtype=np.float64), self._win_n
            )
            self._load_ring_points(win)
        else:
            self._win_t0 = np.zeros(0)
            self._win_dt = np.zeros((0, self._win_w), dtype=np.float32)
            self._win_v = np.zeros((0, self._win_w), dtype=np.float16)
            self._win_s = np.zeros((0, self._win_w), dtype=np.float16)
            self._win_vo = np.zeros(0)
            self._win_vf = np.zeros(0, dtype=np.float32)
            self._win_n = np.zeros(0, dtype=np.int64)
        self._set_window_width(self._win_w)
        self._min_threshold = adopt(state.get("min_threshold", ()), np.float64)
        self._raised = int(np.count_nonzero(self._min_threshold))
        self.data_time = float(state.get("data_time", -np.inf))
        self.first_time = float(state.get("first_time", np.inf))
        self._forget_check = float(state.get("forget_check", -np.inf))
        # The rings and thresholds may be shorter than the value arrays: grow to match.
        self._grow_extras(n)

    def _load_ring_points(self, win: Mapping[str, Any]) -> None:
        """The rings' values and scores of a state (coded, or float32 before the codes)."""
        if "value16" in win:
            self._win_v = adopt(win["value16"], np.float16)
            self._win_vo = adopt(win["offset"], np.float64)
            self._win_vf = adopt(win["factor"], np.float32)
            self._win_s = adopt(win["rest16"], np.float16)
            return
        # Before the codes (float32 values and scores): coded once, every ring its grid.
        values = np.asarray(win["value"], dtype=np.float64)
        n, w = values.shape
        valid = (np.arange(w) < np.minimum(self._win_n[:n], w)[:, None]) & np.isfinite(
            self._win_dt[:n]
        )
        self._win_v, self._win_vo, self._win_vf = ringcodec.regrid(values, valid)
        self._win_s = ringcodec.encode_scores(win["score"])

    def ring_score_codes(self) -> tuple[np.ndarray[Any, Any], IntArray]:
        """The window rings' score codes (:mod:`.ringcodec`, a row a series), each ring's count."""
        n = len(self.registry)
        return self._win_s[:n], np.minimum(self._win_n[:n], self._win_s.shape[1])


def _window_offsets(ts: FloatArray, count: IntArray) -> tuple[FloatArray, Float32Array]:
    """Rings of float64 times (a checkpoint from before the offsets) as base + offsets."""
    k = len(ts)
    if len(count) != k:
        raise ValueError(f"window: {k} rows of times for {len(count)} counts")
    newest = (np.maximum(count, 1) - 1) % WINDOW_POINTS
    t0: FloatArray = np.where(count > 0, ts[np.arange(k), newest], 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        dt = (ts - t0[:, None]).astype(np.float32)
    return t0, dt


def trim_heap() -> None:
    """Give the free pages of the C heap back to the system (glibc's ``malloc_trim``).

    glibc allocates blocks below its mmap threshold (which rises up to 32 MiB as large
    blocks are freed) on the heap and keeps them when freed: the state arrays a growth
    step replaced (9 MiB per float64 array at a million series) stayed resident, about
    65 bytes a series at 1,000,000 series of the default detector. Called after a
    growth (rare: 1.25x each); a no-op where ``malloc_trim`` does not exist.
    """
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


def expected_band(values: FloatArray, anomalous: BoolArray) -> tuple[FloatArray, FloatArray]:
    """The expected band at each point of a window, from the points before it.

    Median +- :data:`BAND_SIGMAS` robust standard deviations (1.4826 MAD, or the
    standard deviation where the MAD is 0) of the earlier points that were not
    anomalous; NaN until :data:`BAND_MIN_POINTS` of them exist. It pictures the recent
    normal for a reader; the alert decision is the detector's score, not this band.

    >>> values = np.array([1.0, 2, 1, 2, 1, 2, 9])
    >>> lo, hi = expected_band(values, values > 5)
    >>> lo[:5].tolist(), round(float(lo[6]), 3), round(float(hi[6]), 3)
    ([nan, nan, nan, nan, nan], -0.724, 3.724)
    """
    v = np.ascontiguousarray(values, dtype=np.float64)
    lo = np.full(len(v), np.nan)
    hi = np.full(len(v), np.nan)
    _band(v, np.ascontiguousarray(anomalous, dtype=np.bool_), lo, hi, BAND_MIN_POINTS, BAND_SIGMAS)
    return lo, hi


@numba.njit(cache=True, nogil=True)
def _band(
    values: FloatArray,
    anomalous: BoolArray,
    lo: FloatArray,
    hi: FloatArray,
    min_points: int,
    sigmas: float,
) -> None:
    """:func:`expected_band`'s loop, compiled: it runs for every alert's window.

    The earlier normal points are kept sorted (one insertion each), so each point's
    median is a look-up and its median absolute deviation a walk outwards from the
    median over the sorted values, O(points) instead of two sorts per point.
    """
    n = len(values)
    prior = np.empty(n)  # in arrival order (the standard deviation's fallback)
    srt = np.empty(n)  # the same values, sorted
    c = 0
    for k in range(n):
        if c >= min_points:
            mid = (srt[(c - 1) // 2] + srt[c // 2]) / 2
            p = np.searchsorted(srt[:c], mid)
            d1 = _kth_deviation(srt, c, mid, p, (c - 1) // 2)
            d2 = d1 if c % 2 else _kth_deviation(srt, c, mid, p, c // 2)
            sd = 1.4826 * ((d1 + d2) / 2)
            if sd == 0.0:
                sd = float(np.std(prior[:c]))
            lo[k] = mid - sigmas * sd
            hi[k] = mid + sigmas * sd
        x = values[k]
        if not anomalous[k] and math.isfinite(x):
            prior[c] = x
            q = np.searchsorted(srt[:c], x)
            for m in range(c, q, -1):  # shift the larger ones up (no allocation)
                srt[m] = srt[m - 1]
            srt[q] = x
            c += 1


@numba.njit(cache=True, nogil=True)
def _kth_deviation(srt: FloatArray, c: int, mid: float, p: int, k: int) -> float:
    """The ``k``-th smallest ``|srt[i] - mid|`` of the first ``c`` sorted values.

    ``p`` is the first index whose value is at least ``mid``: the deviations grow from
    there to the right and from ``p - 1`` to the left, so two pointers find it.
    """
    i, j = p - 1, p
    d = 0.0
    for _ in range(k + 1):
        if i >= 0 and (j >= c or mid - srt[i] <= srt[j] - mid):
            d = mid - srt[i]
            i -= 1
        else:
            d = srt[j] - mid
            j += 1
    return d


def _groups_by_key(detector: Any) -> bool:
    """True if the detector (or an ensemble member, ``_members``) uses :meth:`bind_series`."""
    members = getattr(detector, "_members", None)
    if isinstance(members, list | tuple):
        return any(_groups_by_key(m) for m in members)
    return type(detector).bind_series is not Detector.bind_series


def _retire(detector: Any, rows: list[int]) -> None:
    """Call the detector's (and its ensemble members') optional ``retire(rows)``."""
    retire = getattr(detector, "retire", None)
    if callable(retire):
        retire(rows)
    for member in getattr(detector, "_members", None) or ():
        _retire(member, rows)


def _copy_rows(current: Any, fresh: Any, idx: IntArray, n: int, copied: list[int]) -> Any:
    """``current`` with rows ``idx`` of every per-series array (first axis ``n``) from ``fresh``."""
    if isinstance(current, dict) and isinstance(fresh, dict):
        return {
            k: _copy_rows(v, fresh[k], idx, n, copied) if k in fresh else v
            for k, v in current.items()
        }
    if isinstance(current, list | tuple) and isinstance(fresh, list | tuple):
        if len(current) != len(fresh):
            return current
        out = [_copy_rows(a, b, idx, n, copied) for a, b in zip(current, fresh, strict=True)]
        return type(current)(out) if isinstance(current, tuple) else out
    if (
        isinstance(current, np.ndarray)
        and isinstance(fresh, np.ndarray)
        and current.ndim >= 1
        and current.shape[0] == n
        and fresh.shape == current.shape
    ):
        arr = current.copy()
        arr[idx] = fresh[idx]
        copied[0] += 1
        return arr
    return current


class Engine:
    """All rules, grouped by the source they read."""

    def __init__(
        self,
        specs: Sequence[RuleSpec],
        *,
        render: Renderer = _plain_render,
        logs: LogEngine | None = None,
    ) -> None:
        from aiops.logs.rules import LogEngine  # here: aiops.logs imports this module

        #: The log rules (:mod:`aiops.logs.rules`); without any, log records are ignored.
        self.logs = logs if logs is not None else LogEngine(render=render)
        #: Failed batches of the log rules.
        self.logs_health = RuleHealth()
        keys = [s.key for s in specs] + list(self.logs.rules)
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"duplicate rules: {', '.join(dupes)}")
        self.rules = {s.key: RuleRuntime(s, render=render) for s in specs}
        self.by_source: dict[str, list[RuleRuntime]] = {}
        self._index_sources()
        #: Rules whose checkpointed state could not be loaded, and how often (a metric).
        self.refused_states: dict[str, int] = {}
        #: Failed batches of rules since :meth:`take_failures` last emptied it.
        self.failures: list[RuleFailure] = []

    def _index_sources(self) -> None:
        self.by_source = {}
        for rt in self.rules.values():
            self.by_source.setdefault(rt.spec.source, []).append(rt)

    def adopt(self, kept: Mapping[str, RuleRuntime], refused: Mapping[str, int]) -> None:
        """Take over running rules in place of the fresh ones of the same keys (a reload).

        ``kept`` are runtimes of another engine whose rules did not change: they go on
        with their state. ``refused`` are that engine's refused-state counts, kept for
        the rules this engine has.
        """
        for key, rt in kept.items():
            self.rules[key] = rt
        self._index_sources()
        self.refused_states = {k: v for k, v in refused.items() if k in self.rules}

    def _replace(self, old: RuleRuntime) -> RuleRuntime:
        """Put a fresh runtime of ``old``'s rule in its place (a half-loaded state is gone)."""
        new = RuleRuntime(old.spec, render=old.render)
        self.rules[old.spec.key] = new
        peers = self.by_source[old.spec.source]
        peers[peers.index(old)] = new
        return new

    def process(self, source_id: str, batch: Batch) -> list[Alert]:
        """Run a batch from ``source_id`` through every rule reading that source.

        Log records go to the log rules first, so that the metric alerts of the same
        batch already carry the templates they made notable (``log_templates``).
        """
        log_alerts: list[Alert] = []
        if batch.logs:
            try:
                log_alerts = self.logs.process(source_id, batch)
            except Exception as exc:  # the log rules failed: the metric rules go on
                error = f"{type(exc).__name__}: {exc}"
                self.logs_health.failed(error, len(batch.logs), ())
                self.failures.append(
                    RuleFailure(
                        LOG_STATE_KEY, source_id, error, np.zeros(0, np.int64), (), batch.logs
                    )
                )
                log.error(
                    "log rules failed on a batch of %d records from %s (%s: %s); the records "
                    "are kept aside, the metric rules go on, the log rules retry with the "
                    "next batch",
                    len(batch.logs),
                    source_id,
                    type(exc).__name__,
                    exc,
                )
            else:
                self.logs_health.succeeded()
        alerts = [a for _, alerts in self.process_by_rule(source_id, batch) for a in alerts]
        return [*self.logs.annotate(alerts), *log_alerts]

    def process_by_rule(
        self, source_id: str, batch: Batch
    ) -> Iterator[tuple[RuleRuntime, list[Alert]]]:
        """Like :meth:`process`, keeping which rule raised which alerts.

        A rule that raises yields no alerts, is marked degraded and its points of the
        batch are recorded in :attr:`failures` (:mod:`aiops.pipeline.faults`); the
        other rules go on.
        """
        for rt in self.by_source.get(source_id, ()):
            if batch.rule and batch.rule != rt.spec.key:
                continue
            try:
                result = rt.process(batch)
            except Exception as exc:  # one rule's fault stops no other rule
                self._rule_failed(rt, source_id, batch, exc)
                continue
            failed = rt.health.succeeded()
            if failed:
                log.warning(
                    "rule %s recovered: a batch went through after %d failed", rt.spec.key, failed
                )
            yield rt, result.alerts

    def _rule_failed(self, rt: RuleRuntime, source_id: str, batch: Batch, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        try:  # the points of the series the rule registered (lookup registers nothing)
            positions = np.flatnonzero(rt.registry.lookup(batch.keys)[batch.series] >= 0)
        except Exception:
            positions = np.arange(batch.n_points)
        used = np.unique(batch.series[positions])
        series = tuple(str(batch.keys[int(k)]) for k in used[:NAMED_SERIES])
        rt.health.failed(error, len(positions), series)
        self.failures.append(RuleFailure(rt.spec.key, source_id, error, positions, series))
        more = len(used) - len(series)
        log.error(
            "rule %s failed on a batch from %s: %s; its %d points of %d series (%s%s) are "
            "kept aside, the other rules go on, it retries with the next batch",
            rt.spec.key,
            source_id,
            error,
            len(positions),
            len(used),
            ", ".join(series),
            f" and {more} more" if more > 0 else "",
            exc_info=exc if rt.health.consecutive == 1 else None,
        )

    def take_failures(self) -> list[RuleFailure]:
        """The rules' failed batches since the last call (the daemon keeps them aside)."""
        out, self.failures = self.failures, []
        return out

    def resolve_stale(self, now: float, source: str | None = None) -> list[Alert]:
        """Stale resolutions by data time ``now`` (:meth:`RuleRuntime.resolve_stale`).

        Of the rules reading ``source`` (every rule if None). The daemon calls it after
        each batch with the latest point time of that batch's source, so a rule whose
        every series stopped still resolves while its source's other series go on;
        never by another source's time (which may be ahead, or behind while a backlog
        is read). For a source that is up and sends nothing, the daemon calls it with that
        source's clock run on by its own (:meth:`Daemon._resolve_quiet`).
        """
        return [
            a
            for rt in self.rules.values()
            if source is None or rt.spec.source == source
            for a in rt.resolve_stale(now)
        ]

    def rule(self, key: str) -> RuleRuntime | None:
        """The rule called ``key`` (``group/alert``), if configured."""
        return self.rules.get(key)

    def state_dict(self) -> dict[str, Any]:
        """Every rule's state, by rule key; the log rules' under :data:`LOG_STATE_KEY`."""
        state = {k: rt.state_dict() for k, rt in self.rules.items()}
        if self.logs.rules:
            state[LOG_STATE_KEY] = self.logs.state_dict()
        return state

    def snapshot(self) -> dict[str, StateSnapshot]:
        """Every rule's :meth:`RuleRuntime.snapshot`; the log rules' state copied now."""
        out = {k: rt.snapshot() for k, rt in self.rules.items()}
        if self.logs.rules:
            out[LOG_STATE_KEY] = StateSnapshot(self.logs.state_dict())
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore rules present in both; rules new since the checkpoint start fresh."""
        for k, rt in list(self.rules.items()):
            if k not in state:
                log.info("rule %s: not in the checkpoint, starts fresh", k)
                continue
            try:
                rt.load_state_dict(state[k])
            except Exception as exc:  # one rule's bad state stops nothing else
                self.refused_states[k] = self.refused_states.get(k, 0) + 1
                log.error(
                    "rule %s: its checkpointed state was refused and it starts fresh "
                    "(the other rules keep theirs): %s: %s",
                    k,
                    type(exc).__name__,
                    exc,
                )
                self._replace(rt)
        if LOG_STATE_KEY in state:
            try:
                self.logs.load_state_dict(state[LOG_STATE_KEY])
            except Exception as exc:  # bad log state: the log rules relearn, nothing else
                log.error("log rules: checkpointed state refused, they start fresh: %s", exc)
                self.logs = self.logs.fresh()
        gone = sorted(set(state) - set(self.rules) - {LOG_STATE_KEY})
        if gone:
            log.info("checkpoint rules no longer configured, dropped: %s", ", ".join(gone))
