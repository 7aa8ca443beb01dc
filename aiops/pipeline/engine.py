"""The rule engine: batches in, scores and alert transitions out.

For each rule that reads a source, a batch goes through: the series registry (which
series the rule sees; dense indices; the cap), the detector (calibrated scores, state
per series), the hit window (threshold, min hits) and the alert state machine (``for``,
suppression, resolution). Each layer takes the whole batch in one call, whatever the
number of points per series: numpy over the points, or a compiled loop over them in order
(hit window, alert state machine), so a batch gives what feeding its points one at a time
gives. Python objects are made only for the rare alert transitions.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aiops.alerting.notify import Alert
from aiops.pipeline.alerts import AlertStateMachine
from aiops.pipeline.detector import DEFAULT_THRESHOLD, Detector
from aiops.pipeline.postrule import HitWindow
from aiops.pipeline.series import SeriesRegistry
from aiops.registry import DEFAULT_DETECTOR, DETECTORS
from aiops.types import Batch, BoolArray, FloatArray, IntArray, SeriesKey

__all__ = ["Engine", "RuleResult", "RuleRuntime", "RuleSpec", "alert_fingerprint"]

log = logging.getLogger(__name__)

Renderer = Callable[[str, Mapping[str, Any]], str]


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

    @property
    def key(self) -> str:
        """``group/alert``: the rule's name in checkpoints and metrics."""
        return f"{self.group}/{self.alert}"

    def model_hash(self) -> str:
        """A hash of everything that shapes the detector state; state is reused only if equal."""
        doc = {
            "detector": self.detector_type,
            "params": dict(self.detector_params),
            "selector": self.selector_text,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[
            :16
        ]


@dataclass
class RuleResult:
    """What one batch did to one rule: per selected point, its position and score."""

    positions: IntArray  # indices into the batch's points
    scores: FloatArray
    fired: BoolArray  # per selected point: the alert started firing at this point
    alerts: list[Alert]


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
        params = dict(spec.detector_params)
        if spec.protect_baseline:
            params.setdefault("learn_below", spec.threshold)
        self.detector: Detector = DETECTORS.create(spec.detector_type, **params)
        self.hits = HitWindow(
            threshold=spec.threshold, min_hits=spec.min_hits, window=spec.hits_window
        )
        self.alerts = AlertStateMachine(
            for_seconds=spec.for_seconds, suppress_seconds=spec.suppress_seconds
        )
        self._last_value = np.zeros(0)
        self._last_score = np.zeros(0)
        self._bound = 0  # registry size last told to the detector (bind_series)

    def process(self, batch: Batch) -> RuleResult:
        """Score the batch's points of this rule's series and advance their alerts."""
        if batch.n_points == 0:
            return RuleResult(np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool), [])
        key_idx = self.registry.resolve(batch.keys)
        if len(self.registry) != self._bound:
            self._bound = len(self.registry)
            self.detector.bind_series(self.registry.keys)
        point_idx = key_idx[batch.series]
        positions = np.flatnonzero(point_idx >= 0)
        if len(positions) == 0:
            return RuleResult(positions, np.zeros(0), np.zeros(0, bool), [])
        idx = point_idx[positions]
        ts = batch.timestamps[positions]
        vs = batch.values[positions]
        scores = self.detector.score(idx, ts, vs)
        fired = np.zeros(len(positions), dtype=bool)
        # Post-rule state for every series seen, whether its values in this batch are
        # missing or not, so that the state does not depend on the batch boundaries.
        need = int(idx.max()) + 1
        self._ensure(need)
        self.hits.reserve(need)
        self.alerts.reserve(need)
        # A missing value is no point for the post-rules: no hit, no miss, no transition.
        sel = np.flatnonzero(np.isfinite(vs))
        if len(sel) == 0:
            return RuleResult(positions, scores, fired, [])
        i, t, v, s = idx[sel], ts[sel], vs[sel], scores[sel]
        tr = self.alerts.step(i, t, self.hits.step(i, s))
        fired[sel[tr.fired]] = True
        alerts: list[Alert] = []
        n_fired = len(tr.fired)
        at = np.concatenate([tr.fired, tr.resolved])
        for k in np.argsort(at).tolist():  # in point order, as one point at a time gives
            j = int(at[k])
            index, value, score, now = int(i[j]), float(v[j]), float(s[j]), float(t[j])
            if k < n_fired:
                alerts.append(self._alert(index, "firing", now, None, value, score))
            else:
                start = float(tr.starts_at[k - n_fired])
                alerts.append(self._alert(index, "resolved", start, now, value, score))
        last = len(i) - 1 - np.unique(i[::-1], return_index=True)[1]  # each series' last point
        self._last_value[i[last]] = v[last]
        self._last_score[i[last]] = s[last]
        return RuleResult(positions, scores, fired, alerts)

    def _ensure(self, n: int) -> None:
        if n > len(self._last_value):
            extra = max(n, 2 * len(self._last_value)) - len(self._last_value)
            self._last_value = np.concatenate([self._last_value, np.full(extra, np.nan)])
            self._last_score = np.concatenate([self._last_score, np.zeros(extra)])

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
    ) -> Alert:
        labels = self.alert_labels(index)
        key = self.registry.key(index)
        context = {"labels": labels, "value": value, "score": score, "series": str(key)}
        annotations = {k: self.render(v, context) for k, v in self.spec.annotations.items()}
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
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore; a detector state from a different model configuration is not loaded."""
        self.registry.load_state_dict(state["registry"])
        if state.get("model_hash") == self.spec.model_hash():
            self.detector.load_state_dict(state["detector"])
        else:
            log.warning(
                "rule %s: detector configuration changed since the checkpoint; "
                "its model starts fresh (series, alert states kept)",
                self.spec.key,
            )
        self._bound = len(self.registry)
        self.detector.bind_series(self.registry.keys)
        self.hits.load_state_dict(state["hits"])
        self.alerts.load_state_dict(state["alerts"])
        self._last_value = np.asarray(state["last_value"], dtype=np.float64).copy()
        self._last_score = np.asarray(state["last_score"], dtype=np.float64).copy()


class Engine:
    """All rules, grouped by the source they read."""

    def __init__(self, specs: Sequence[RuleSpec], *, render: Renderer = _plain_render) -> None:
        keys = [s.key for s in specs]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"duplicate rules: {', '.join(dupes)}")
        self.rules = {s.key: RuleRuntime(s, render=render) for s in specs}
        self.by_source: dict[str, list[RuleRuntime]] = {}
        for rt in self.rules.values():
            self.by_source.setdefault(rt.spec.source, []).append(rt)

    def process(self, source_id: str, batch: Batch) -> list[Alert]:
        """Run a batch from ``source_id`` through every rule reading that source."""
        return [a for _, alerts in self.process_by_rule(source_id, batch) for a in alerts]

    def process_by_rule(
        self, source_id: str, batch: Batch
    ) -> Iterator[tuple[RuleRuntime, list[Alert]]]:
        """Like :meth:`process`, keeping which rule raised which alerts."""
        for rt in self.by_source.get(source_id, ()):
            if batch.rule and batch.rule != rt.spec.key:
                continue
            yield rt, rt.process(batch).alerts

    def state_dict(self) -> dict[str, Any]:
        """Every rule's state, by rule key."""
        return {k: rt.state_dict() for k, rt in self.rules.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore rules present in both; rules new since the checkpoint start fresh."""
        for k, rt in self.rules.items():
            if k in state:
                rt.load_state_dict(state[k])
            else:
                log.info("rule %s: not in the checkpoint, starts fresh", k)
        gone = sorted(set(state) - set(self.rules))
        if gone:
            log.info("checkpoint rules no longer configured, dropped: %s", ", ".join(gone))
