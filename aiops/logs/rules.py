"""Log rules: log records in, alerts out (new templates, template rates, error bursts).

For each source, every log record goes once through a template miner per *partition*:
the source, the rule's ``partition_by`` labels (default ``service``) and its mining
settings, so rules with the same settings share miners. Then each rule that selects the
record's stream sees ``(time, partition, template id, created?, message)``:

- ``new_template``: a template created after the partition's learning period
  (``learn_for``, counted in log time from the first record the rule saw of that
  partition) fires an alert labelled with its ``template_id``; at most ``max_alerts`` per
  ``per`` and partition (the others are counted, and the next alert says how many were
  held back), so one deploy does not page fifty times. The alert resolves
  ``resolve_after`` later.
- ``template_rate``: each template's count per ``interval`` becomes a point of the series
  ``log_template_count{<partition labels>, template_id="N"}``; ``error_burst``: the count
  of error lines per interval becomes ``log_error_count{<partition labels>}``. Both run
  through the rule's detector and post-rules (:class:`aiops.pipeline.engine.RuleRuntime`),
  so bursts and silences score like any metric. A series seen once gets a point every
  interval (0 when silent) until it has been silent for ``FORGET_INTERVALS`` intervals.
  An interval closes when a record of a later interval arrives on the source; records
  older than the open interval count in it.

Log alerts carry the annotations ``template`` and ``examples`` (a few lines). The engine
also keeps the recent new and bursting templates so that a metric alert of the same
``service``, ``host`` or ``instance`` gets them as its ``log_templates`` annotation
(:meth:`LogEngine.annotate`); logs that arrive after the metric alert are not in it.

State (:meth:`LogEngine.state_dict`) is plain data: miners as
:meth:`aiops.logs.mining.LogMiner.state_dict`, each rule's clocks, counts and examples,
and the scoring rules' :meth:`~aiops.pipeline.engine.RuleRuntime.state_dict`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import math
import operator
import re
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from aiops.alerting.notify import Alert
from aiops.config.models import RuleGroup
from aiops.logs.mining import (
    DEFAULT_MASKS,
    LogMiner,
    Mask,
    Masker,
    MineResult,
    MinerSettings,
)
from aiops.logs.mining import STATE_VERSION as MINER_STATE_VERSION
from aiops.pipeline.engine import RuleRuntime, RuleSpec, alert_fingerprint
from aiops.types import Batch, FloatArray, IntArray, LogRecord, SeriesKey, collector_paused

__all__ = [
    "CONTEXT_LABELS",
    "DEFAULT_ERROR_LEVELS",
    "FORGET_INTERVALS",
    "LOG_RULE_TYPES",
    "LogEngine",
    "LogRuleSpec",
    "log_rule_specs",
]

log = logging.getLogger(__name__)

LOG_RULE_TYPES = ("new_template", "template_rate", "error_burst")
#: Values of a record's ``level`` label (any case) that make it an error line.
DEFAULT_ERROR_LEVELS = ("emerg", "alert", "crit", "critical", "err", "error", "fatal", "panic")
#: Without a ``level`` label, a message with one of these words (upper case, as loggers
#: write levels) is an error line.
_ERROR_WORDS = re.compile(r"\b(?:EMERG|ALERT|CRIT|CRITICAL|ERR|ERROR|FATAL|PANIC|SEVERE)\b")
#: A count series silent for this many intervals is forgotten (no more zero points).
FORGET_INTERVALS = 1440
#: At most this many intervals of zeros are scored after a gap in the records.
_MAX_GAP_INTERVALS = 60
#: At most this many miners per engine; records of further partitions share one miner.
MAX_MINERS = 1000
#: Labels that tie a metric alert to log streams (:meth:`LogEngine.annotate`).
CONTEXT_LABELS = ("service", "host", "instance")
#: How far before a metric alert's start its log context reaches (seconds).
CONTEXT_WINDOW = 900.0
_NOTABLE_MAX = 1000
_STATE_VERSION = 1
#: Version of a log rule's model state (:meth:`_Rule.model_state`).
MODEL_STATE_VERSION = 1
_DEFAULT_MASKS_DIGEST = hashlib.sha256(
    json.dumps([[m.regex, m.mask] for m in DEFAULT_MASKS]).encode()
).hexdigest()[:12]

_LABELS = operator.attrgetter("labels")
_MESSAGE = operator.attrgetter("message")
_TIMESTAMP = operator.attrgetter("timestamp")

Renderer = Callable[[str, Mapping[str, Any]], str]
Partition = tuple[tuple[str, str], ...]
Labels = tuple[tuple[str, str], ...]


def _plain(template: str, context: Mapping[str, Any]) -> str:
    return template


def _match_all(key: SeriesKey) -> bool:
    return True


@dataclass(frozen=True)
class LogRuleSpec:
    """What the log engine needs of one log rule; built from a validated rule file entry.

    ``scoring`` (``template_rate``, ``error_burst``) holds the detector and post-rule
    settings of the count series; its ``matches`` is ignored (the rule makes the series).
    """

    group: str
    alert: str
    source: str
    kind: str
    matches: Callable[[SeriesKey], bool] = _match_all
    partition_by: tuple[str, ...] = ("service",)
    mining: MinerSettings = field(default_factory=MinerSettings)
    interval: float = 60.0
    learn_for: float = 3600.0
    max_alerts: int = 3
    per: float = 600.0
    resolve_after: float = 600.0
    levels: tuple[str, ...] = DEFAULT_ERROR_LEVELS
    pattern: str | None = None
    examples: int = 3
    scoring: RuleSpec | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    #: The rule's series selector as written (part of its model hash).
    selector_text: str = ""

    def __post_init__(self) -> None:
        if self.kind not in LOG_RULE_TYPES:
            raise ValueError(f"unknown log rule type {self.kind!r}; valid: {LOG_RULE_TYPES}")
        if self.kind != "new_template" and self.scoring is None:
            raise ValueError(f"log rule {self.key}: {self.kind} needs scoring settings")

    @property
    def key(self) -> str:
        """``group/alert``, as for metric rules."""
        return f"{self.group}/{self.alert}"

    def model_hash(self) -> str:
        """A hash of what shapes the rule's model; a saved model is loaded only if equal.

        The model is the miners (source, partitioning, mining settings and, when the
        default masks are on, those masks' text, so a release that changes them counts
        as a change) and what the rule learned on their templates: for the count rules,
        their detector (its :meth:`RuleSpec.model_hash`), interval and what counts as an
        error line. Alerting settings (``learn_for``, ``max_alerts``, annotations) are
        not part of it.
        """
        cached: str | None = self.__dict__.get("_model_hash")
        if cached is not None:
            return cached
        doc: dict[str, Any] = {
            "kind": self.kind,
            "source": self.source,
            "selector": self.selector_text,
            "partition_by": list(self.partition_by),
            "mining": self.mining.as_json(),
            "miner_state": MINER_STATE_VERSION,
            "default_masks": _DEFAULT_MASKS_DIGEST if self.mining.default_masks else "",
        }
        if self.scoring is not None:
            doc.update(
                scoring=self.scoring.model_hash(), interval=self.interval, pattern=self.pattern
            )
            if self.kind == "error_burst":
                doc["levels"] = sorted(lv.lower() for lv in self.levels)
        value = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]
        self.__dict__["_model_hash"] = value  # frozen: memoized past __setattr__
        return value

    def model_params(self) -> dict[str, Any]:
        """The rule's effective settings, as a model version records them."""
        out: dict[str, Any] = {
            "log_rule": self.kind,
            "source": self.source,
            "selector": self.selector_text,
            "partition_by": list(self.partition_by),
            "mining": self.mining.as_json(),
            "default_masks_digest": _DEFAULT_MASKS_DIGEST if self.mining.default_masks else "",
        }
        if self.scoring is None:
            out.update(
                detector="new_template",
                detector_params={
                    "learn_for": self.learn_for,
                    "max_alerts": self.max_alerts,
                    "per": self.per,
                    "resolve_after": self.resolve_after,
                },
            )
            return out
        from aiops.pipeline.engine import effective_params

        sc = self.scoring
        out.update(
            detector=sc.detector_type,
            detector_params=effective_params(sc.detector_type, sc.detector_params),
            threshold=sc.threshold,
            min_hits=sc.min_hits,
            interval=self.interval,
        )
        out["for"] = sc.for_seconds
        if self.kind == "error_burst":
            out["levels"] = list(self.levels)
            out["pattern"] = self.pattern
        return out


def _pkey(partition: Partition) -> str:
    return json.dumps(partition)


@dataclass
class _Mined:
    """One batch's selected records of one miner group, with their mining results."""

    recs: list[LogRecord] = field(default_factory=list)
    parts: list[Partition] = field(default_factory=list)
    miners: list[LogMiner] = field(default_factory=list)
    cids: list[int] = field(default_factory=list)
    created: list[bool] = field(default_factory=list)
    #: Set when every record is of one stream: its partition and labels.
    stream: tuple[Partition, Labels] | None = None
    #: Set when the records are of several streams, each its own partition's only one:
    #: each record's stream (an index) and each stream's partition and labels.
    streams: tuple[IntArray, list[tuple[Partition, Labels]]] | None = None
    _ts: FloatArray | None = None
    _cids: IntArray | None = None

    def cid_array(self) -> IntArray:
        """The records' template ids as one array (computed once, shared by the rules)."""
        if self._cids is None:
            self._cids = np.array(self.cids, dtype=np.int64)
        return self._cids

    def timestamps(self) -> FloatArray:
        """The records' times as one array (computed once, shared by the rules)."""
        if self._ts is None:
            self._ts = np.fromiter(map(_TIMESTAMP, self.recs), np.float64, len(self.recs))
        return self._ts


class _Rule:
    """Base of the per-rule state machines; each is also a model of the model registry.

    As a model (:class:`aiops.models.lifecycle.ModelLifecycle` versions it like a metric
    rule's detector) a log rule is its miners (those of its source and mining settings,
    shared with the rules of the same settings) and what it learned on their templates:
    the learning clocks of ``new_template``, the count series and detector of the count
    rules. Its alert states are not part of it (they are in the checkpoint).
    """

    def __init__(self, spec: LogRuleSpec, engine: LogEngine) -> None:
        self.spec = spec
        self.engine = engine
        #: The model registry's version this rule's model descends from (None: unknown).
        self.model_version: int | None = None
        #: Log time of the first and the last line the rule took (its training window).
        self.first_time = math.inf
        self.data_time = -math.inf
        #: Lines the rule took since its state started.
        self.lines = 0

    @property
    def points_seen(self) -> int:
        """Lines the rule took since its state started (a version's ``points_seen``)."""
        return self.lines

    def _took(self, first: float, last: float, n: int) -> None:
        self.first_time = min(self.first_time, first)
        self.data_time = max(self.data_time, last)
        self.lines += n

    def model_state(self) -> dict[str, Any]:
        """The rule's model as plain data (a registry version's state): no pickle."""
        return {
            "format": MODEL_STATE_VERSION,
            "model_hash": self.spec.model_hash(),
            "miners": self.engine.miner_states(self.spec),
            "rule": self._model_part(),
        }

    def load_model_state(self, state: dict[str, Any]) -> None:
        """Run a :meth:`model_state`; ``ValueError`` (nothing changed) if it does not fit.

        The rule's own part is replaced. A saved miner takes the place of its
        partition's miner only when it has made more templates: the miners are shared
        by the rules of the same settings and their template ids must keep their
        meaning, so a rollback never takes templates back; a restart without a
        checkpoint (its miners empty) gets the version's.
        """
        if not isinstance(state, dict) or state.get("format") != MODEL_STATE_VERSION:
            raise ValueError("not a log rule's model state (or of another format)")
        if state.get("model_hash") != self.spec.model_hash():
            raise ValueError(
                f"the model was made with other log rule settings ({state.get('model_hash')}; "
                f"the rule's are {self.spec.model_hash()})"
            )
        miners = self.engine.parse_miners(self.spec, state["miners"])
        self._load_model_part(state["rule"])
        self.engine.adopt_miners(self.spec, miners)

    def model_params(self) -> dict[str, Any]:
        """The rule's effective settings (a version's ``params``)."""
        return self.spec.model_params()

    def model_evaluation(self) -> dict[str, Any]:
        """What the model holds now (a version's ``evaluation``): templates, lines."""
        miners = self.engine.group_miners(self.spec)
        out: dict[str, Any] = {
            "lines": self.lines,
            "partitions": len(miners),
            "templates": sum(len(m) for m in miners),
        }
        if math.isfinite(self.data_time):
            out["data_until"] = self.data_time
        return out

    def _model_part(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load_model_part(self, part: dict[str, Any]) -> None:
        raise NotImplementedError

    def model_info(self) -> dict[str, Any]:
        """What the checkpoint keeps of the rule as a model: version, hash, clocks."""
        return {
            "model_hash": self.spec.model_hash(),
            "model_version": self.model_version,
            "lines": self.lines,
            "first_time": self.first_time,
            "data_time": self.data_time,
        }

    def load_model_info(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`model_info`; the version only if the rule's settings are the same."""
        version = state.get("model_version")
        same = state.get("model_hash") == self.spec.model_hash()
        self.model_version = int(version) if same and version is not None else None
        self.lines = int(state.get("lines", 0))
        self.first_time = float(state.get("first_time", math.inf))
        self.data_time = float(state.get("data_time", -math.inf))

    def observe(
        self,
        rec: LogRecord,
        part: Partition,
        miner: LogMiner,
        cid: int,
        created: bool,
        out: list[Alert],
    ) -> None:
        """Take one mined record; append the alerts it causes to ``out``."""
        raise NotImplementedError

    def observe_batch(self, m: _Mined, idx: list[int] | None, out: list[Alert]) -> None:
        """Take the mined records ``idx`` (all if None) of one batch, in order."""
        for i in range(len(m.recs)) if idx is None else idx:
            self.observe(m.recs[i], m.parts[i], m.miners[i], m.cids[i], m.created[i], out)

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _labels(self, part: Partition, **extra: str) -> dict[str, str]:
        labels = dict(part)
        labels.update(extra)
        labels.update(self.spec.labels)
        labels["alertname"] = self.spec.alert
        return labels


class _NewTemplate(_Rule):
    def __init__(self, spec: LogRuleSpec, engine: LogEngine) -> None:
        super().__init__(spec, engine)
        self.started: dict[str, float] = {}  # partition -> first record time
        self.sent: dict[str, list[float]] = {}  # partition -> recent alert times
        self.held: dict[str, int] = {}  # partition -> new templates held back since last
        self.pending: list[dict[str, Any]] = []  # firing alerts waiting to resolve
        self.suppressed = 0
        self.found = 0  # new templates after the learning period (alerted or held back)
        self._seen: set[Partition] = set()  # partitions whose start is recorded

    def observe(
        self,
        rec: LogRecord,
        part: Partition,
        miner: LogMiner,
        cid: int,
        created: bool,
        out: list[Alert],
    ) -> None:
        if self.pending and rec.timestamp >= self.pending[0]["starts_at"] + self.spec.resolve_after:
            out += self._resolve(rec.timestamp)
        if not created and part in self._seen:
            return  # only a new template, or a partition's first record, does anything
        self._seen.add(part)
        pk = _pkey(part)
        start = self.started.setdefault(pk, rec.timestamp)
        if not created or rec.timestamp < start + self.spec.learn_for:
            return
        template = miner.template(cid)
        self.found += 1
        self.engine.note(rec.timestamp, part, "new template", template, [rec.message])
        sent = [t for t in self.sent.get(pk, ()) if t > rec.timestamp - self.spec.per]
        if len(sent) >= self.spec.max_alerts:
            self.sent[pk] = sent
            self.held[pk] = self.held.get(pk, 0) + 1
            self.suppressed += 1
            log.info("rule %s: new template held back (rate limit): %s", self.spec.key, template)
            return
        sent.append(rec.timestamp)
        self.sent[pk] = sent
        labels = self._labels(part, template_id=str(cid))
        annotations = self.engine.render_annotations(
            self.spec, labels, 1.0, template, [rec.message]
        )
        held = self.held.pop(pk, 0)
        if held:
            annotations["held_back"] = f"{held} more new templates in the last {self.spec.per:g}s"
        alert = Alert(
            fingerprint=alert_fingerprint(labels),
            status="firing",
            labels=labels,
            annotations=annotations,
            starts_at=rec.timestamp,
            value=1.0,
            score=1.0,
            series=template,
        )
        self.pending.append(
            {
                "labels": labels,
                "annotations": annotations,
                "starts_at": rec.timestamp,
                "template": template,
            }
        )
        out.append(alert)

    def observe_batch(self, m: _Mined, idx: list[int] | None, out: list[Alert]) -> None:
        seen, parts, created = self._seen, m.parts, m.created
        rng = range(len(m.recs)) if idx is None else idx
        # Only a new template or a partition's first record does anything.
        if idx is None and (
            (m.stream is not None and m.stream[0] in seen)
            or (m.streams is not None and all(p in seen for p, _ in m.streams[1]))
        ):
            todo: list[int] = list(itertools.compress(rng, created))  # streams all seen
        else:
            todo = [i for i in rng if created[i] or parts[i] not in seen]
        for i in todo:
            self.observe(m.recs[i], parts[i], m.miners[i], m.cids[i], created[i], out)
        last = m.recs[rng[-1]].timestamp if len(rng) else -math.inf
        if len(rng):
            self._took(m.recs[rng[0]].timestamp, last, len(rng))
        if self.pending and last >= self.pending[0]["starts_at"] + self.spec.resolve_after:
            out += self._resolve(last)

    def _resolve(self, now: float) -> list[Alert]:
        out, keep = [], []
        for p in self.pending:
            end = p["starts_at"] + self.spec.resolve_after
            if now < end:
                keep.append(p)
                continue
            out.append(
                Alert(
                    fingerprint=alert_fingerprint(p["labels"]),
                    status="resolved",
                    labels=p["labels"],
                    annotations=p["annotations"],
                    starts_at=p["starts_at"],
                    ends_at=end,
                    value=1.0,
                    score=1.0,
                    series=p["template"],
                )
            )
        self.pending = keep
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "started": dict(self.started),
            "sent": {k: list(v) for k, v in self.sent.items()},
            "held": dict(self.held),
            "pending": list(self.pending),
            "suppressed": self.suppressed,
            "found": self.found,
        }

    def _model_part(self) -> dict[str, Any]:
        return {"started": dict(self.started)}

    def _load_model_part(self, part: dict[str, Any]) -> None:
        try:
            started = {str(k): float(v) for k, v in part["started"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"invalid new_template model: {exc}") from None
        self.started = started
        self._seen.clear()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.started = {str(k): float(v) for k, v in state["started"].items()}
        self.sent = {str(k): [float(t) for t in v] for k, v in state["sent"].items()}
        self.held = {str(k): int(v) for k, v in state["held"].items()}
        self.pending = list(state["pending"])
        self.suppressed = int(state["suppressed"])
        self.found = int(state.get("found", 0))


class _Series:
    """One count series of a count rule: its identity, open count and example lines."""

    __slots__ = ("count", "fresh", "labels", "last", "part", "shown", "tid")

    def __init__(self, labels: dict[str, str], part: Partition, tid: int) -> None:
        self.labels = labels
        self.part = part
        self.tid = tid  # template id, -1 for error counts
        self.last = -math.inf  # start of the last interval with a line
        self.count = 0  # lines in the open interval
        self.fresh: list[str] = []  # first lines of the open interval
        self.shown: list[str] = []  # example lines of the last interval that had any

    def as_json(self) -> list[Any]:
        part = [list(p) for p in self.part]
        return [self.labels, part, self.tid, self.last, self.count, self.fresh, self.shown]

    @classmethod
    def from_json(cls, doc: list[Any]) -> _Series:
        labels, part, tid, last, count, fresh, shown = doc
        s = cls(
            {str(k): str(v) for k, v in labels.items()},
            tuple((str(k), str(v)) for k, v in part),
            int(tid),
        )
        s.last, s.count = float(last), int(count)
        s.fresh, s.shown = [str(x) for x in fresh], [str(x) for x in shown]
        return s


_UNSET = object()


class _Counts(_Rule):
    """template_rate and error_burst: counts per interval scored by a RuleRuntime.

    Without a ``pattern``, a line is an error line when its ``level`` label is one of
    ``levels``, or, without that label, when its template has an error word (the check
    is made once per template, when the template is first counted).
    """

    def __init__(self, spec: LogRuleSpec, engine: LogEngine) -> None:
        super().__init__(spec, engine)
        assert spec.scoring is not None
        self.runtime = RuleRuntime(spec.scoring, render=engine.render)
        self.metric = "log_template_count" if spec.kind == "template_rate" else "log_error_count"
        self.pattern = re.compile(spec.pattern) if spec.pattern else None
        self.levels = frozenset(lv.lower() for lv in spec.levels)
        self.bucket: float | None = None  # start of the open interval
        self.series: dict[str, _Series] = {}  # by series text
        self._lookup: dict[tuple[Partition, int], _Series] = {}
        self._level: dict[tuple[tuple[str, str], ...], str | None] = {}
        self._error_template: dict[tuple[int, int], bool] = {}
        self._error_of: dict[tuple[tuple[tuple[str, str], ...], int], bool] = {}
        self._error_by_labels: dict[tuple[tuple[str, str], ...], dict[int, bool]] = {}
        self._errors_only = spec.kind == "error_burst"
        self._n_examples = spec.examples

    def is_error(self, rec: LogRecord, miner: LogMiner, cid: int) -> bool:
        if self.pattern is not None:
            return self.pattern.search(rec.message) is not None
        level = self._level.get(rec.labels, _UNSET)
        if level is _UNSET:
            level = dict(rec.labels).get("level")
            if len(self._level) >= 10_000:
                self._level.clear()
            self._level[rec.labels] = level
        if level is not None:
            return str(level).lower() in self.levels
        key = (id(miner), cid)
        known = self._error_template.get(key)
        if known is None:
            known = _ERROR_WORDS.search(miner.template(cid) or rec.message) is not None
            if len(self._error_template) >= 100_000:
                self._error_template.clear()
            self._error_template[key] = known
        return known

    def observe_batch(self, m: _Mined, idx: list[int] | None, out: list[Alert]) -> None:
        ts = m.timestamps() if idx is None else m.timestamps()[idx]
        if not len(ts):
            return
        self._took(float(ts.min()), float(ts.max()), len(ts))
        step = self.spec.interval
        start = np.floor(ts / step) * step
        if self.bucket is None:
            self.bucket = float(start[0])
        # A record of a later interval closes the open one; older records count in it.
        eff = np.maximum.accumulate(np.maximum(start, self.bucket))
        cuts = np.flatnonzero(np.diff(eff)) + 1
        bounds = [0, *cuts.tolist(), len(eff)]
        for a, b in itertools.pairwise(bounds):
            if eff[a] > self.bucket:
                out += self.roll(float(eff[a]))
            self._count(range(a, b) if idx is None else idx[a:b], m)

    def _count(self, seg: range | list[int], m: _Mined) -> None:
        if m.stream is not None and isinstance(seg, range):
            self._count_stream(seg, m.cids[seg.start : seg.stop], m, m.stream)
            return
        if m.streams is not None and isinstance(seg, range) and self._count_streams(seg, m):
            return
        recs = m.recs
        if isinstance(seg, range):  # every record of the batch: slices, counted in C
            parts, cids = m.parts[seg.start : seg.stop], m.cids[seg.start : seg.stop]
            pos: Sequence[int] = seg
        else:
            parts, cids, pos = [m.parts[i] for i in seg], [m.cids[i] for i in seg], seg
        if self._errors_only:
            # Every partition gets its series from its first line, error or not, so a
            # burst is scored against the quiet minutes before it.
            for part in set(parts):
                if (part, -1) not in self._lookup:
                    self._add_series(part, -1)
            # A line's error-ness follows from its stream and template (the miner is the
            # stream's): looked up per (labels, template id), computed once for each.
            known = self._error_of
            if isinstance(seg, range):
                streams = list(map(_LABELS, recs[seg.start : seg.stop]))
            else:
                streams = [recs[i].labels for i in pos]
            pairs = list(zip(streams, cids, strict=True))
            flags = list(map(known.get, pairs))
            if None in flags:
                for j, flag in enumerate(flags):
                    if flag is None:
                        i = pos[j]
                        error = self.is_error(recs[i], m.miners[i], m.cids[i])
                        flags[j] = error
                        if self.pattern is None:
                            if len(known) >= 100_000:
                                known.clear()
                            known[pairs[j]] = error
            pos = list(itertools.compress(pos, flags))
            keys = list(zip(itertools.compress(parts, flags), itertools.repeat(-1)))
        else:
            keys = list(zip(parts, cids, strict=True))
        if not keys:
            return
        first = dict(zip(reversed(keys), reversed(pos), strict=True))
        last = dict(zip(keys, pos, strict=True)) if self._n_examples > 1 else first
        lookup = self._lookup
        for key, n in Counter(keys).items():
            s = lookup.get(key)
            if s is None:
                s = self._add_series(*key)
            s.count += n
            if len(s.fresh) < self._n_examples:
                s.fresh.append(recs[first[key]].message)
                j = last[key]
                if j != first[key] and len(s.fresh) < self._n_examples:
                    s.fresh.append(recs[j].message)

    def _count_streams(self, seg: range, m: _Mined) -> bool:
        """:meth:`_count` stream by stream, when every series it counts in exists already.

        Each stream is its partition's only one in the batch, so its records are what
        :meth:`_count` keys by partition: the same counts and example lines. False (and
        nothing done) when a series would be new: :meth:`_count` makes new series in
        the order of their first lines.
        """
        assert m.streams is not None
        codes, streams = m.streams
        sub = codes[seg.start : seg.stop]
        order = np.argsort(sub, kind="stable") + seg.start
        ends = np.cumsum(np.bincount(sub, minlength=len(streams))).tolist()
        cids = m.cid_array()
        lookup = self._lookup
        todo = []
        start = 0
        for k, end in enumerate(ends):
            if end == start:
                continue
            pos = order[start:end]
            start = end
            part = streams[k][0]
            tids: list[int] = cids[pos].tolist()
            counts: Counter[int] | None = None
            if self._errors_only:
                if (part, -1) not in lookup:
                    return False
            else:
                counts = Counter(tids)
                if any((part, tid) not in lookup for tid in counts):
                    return False
            todo.append((pos.tolist(), tids, streams[k], counts))
        for pos_k, tids, stream, counts in todo:
            self._count_stream(pos_k, tids, m, stream, counts)
        return True

    def _count_stream(
        self,
        pos: Sequence[int],
        cids: list[int],
        m: _Mined,
        stream: tuple[Partition, Labels],
        counted: Counter[int] | None = None,
    ) -> None:
        """:meth:`_count` for records of one stream (at ``pos``, of template ``cids``).

        Keyed by template id alone; ``counted``: ``Counter(cids)``, when known.
        """
        part, labels = stream
        recs = m.recs
        if self._errors_only:
            if (part, -1) not in self._lookup:
                self._add_series(part, -1)
            known = self._error_by_labels.get(labels)
            if known is None or len(known) >= 100_000:
                if len(self._error_by_labels) >= 10_000:
                    self._error_by_labels.clear()
                known = self._error_by_labels[labels] = {}
            flags = list(map(known.get, cids))
            if None in flags:
                for j, flag in enumerate(flags):
                    if flag is None:
                        i = pos[j]
                        error = self.is_error(recs[i], m.miners[i], cids[j])
                        flags[j] = error
                        if self.pattern is None:
                            known[cids[j]] = error
            kept = list(itertools.compress(pos, flags))
            if not kept:
                return
            counts: Mapping[int, int] = {-1: len(kept)}
            tids: list[int] | None = None
        else:
            counts = Counter(cids) if counted is None else counted
            tids, kept = cids, list(pos)
        lookup, n_examples = self._lookup, self._n_examples
        backwards: list[int] | None = None
        for tid, n in counts.items():
            s = lookup.get((part, tid))
            if s is None:
                s = self._add_series(part, tid)
            s.count += n
            if len(s.fresh) < n_examples:  # the first and the last line of the segment
                if tids is None:
                    a, b = kept[0], kept[-1]
                else:
                    if backwards is None:
                        backwards = tids[::-1]
                    a = kept[tids.index(tid)]
                    b = kept[len(tids) - 1 - backwards.index(tid)]
                s.fresh.append(recs[a].message)
                if b != a and len(s.fresh) < n_examples:
                    s.fresh.append(recs[b].message)

    def _add_series(self, part: Partition, tid: int) -> _Series:
        labels = dict(part)
        if tid >= 0:
            labels["template_id"] = str(tid)
        name = str(SeriesKey.of(self.metric, labels))
        s = self.series.get(name)
        if s is None:
            s = self.series[name] = _Series(labels, part, tid)
        if len(self._lookup) >= 100_000:
            self._lookup.clear()
        self._lookup[(part, tid)] = s
        return s

    def roll(self, now: float) -> list[Alert]:
        """Close every interval that ended before ``now``; score their counts."""
        assert self.bucket is not None
        step = self.spec.interval
        n = int((now - self.bucket) // step)
        alerts: list[Alert] = []
        for k in range(min(n, _MAX_GAP_INTERVALS)):  # after a long gap, skip the rest
            alerts += self._score(self.bucket + step * (k + 1), first=k == 0)
            if k == 0:
                for s in self.series.values():
                    if s.count:
                        s.last = self.bucket
                        s.count = 0
                    if s.fresh:
                        s.shown, s.fresh = s.fresh, []
        self.bucket = self.bucket + step * n
        forget = self.bucket - FORGET_INTERVALS * step
        gone = [name for name, s in self.series.items() if s.last < forget and not s.count]
        for name in gone:
            s = self.series.pop(name)
            self._lookup.pop((s.part, s.tid), None)
        return alerts

    def _score(self, end: float, *, first: bool) -> list[Alert]:
        if not self.series:
            return []
        names = list(self.series)
        values = [float(self.series[n].count) if first else 0.0 for n in names]
        batch = Batch(
            keys=[SeriesKey.of(self.metric, self.series[n].labels) for n in names],
            series=np.arange(len(names), dtype=np.int64),
            timestamps=np.full(len(names), end),
            values=np.asarray(values),
        )
        return [self._enrich(a, first) for a in self.runtime.process(batch).alerts]

    def _enrich(self, alert: Alert, first: bool) -> Alert:
        s = self.series.get(alert.series)
        template, examples = "", []
        if s is not None:
            examples = (s.fresh or s.shown) if first else s.shown
            miner = self.engine.miner_for(self.spec, s.part)
            if miner is None:
                pass
            elif s.tid >= 0:
                template = miner.template(s.tid)
            elif examples:  # an error count: the template of its first example line
                template = miner.template_of(examples[0])
        annotations = dict(alert.annotations)
        if template:
            annotations["template"] = template
        if examples:
            annotations["examples"] = "\n".join(examples)
        if alert.status == "firing":
            what = "template" if self.spec.kind == "template_rate" else "error"
            what += " silence" if alert.value == 0 else " burst"
            part = s.part if s is not None else ()
            self.engine.note(alert.starts_at, part, what, template or alert.series, examples)
        return dataclasses.replace(alert, annotations=annotations)

    def state_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "series": {k: s.as_json() for k, s in self.series.items()},
            "runtime": self.runtime.state_dict(),
        }

    def _model_part(self) -> dict[str, Any]:
        series = [
            [s.labels, [list(p) for p in s.part], s.tid, s.last] for s in self.series.values()
        ]
        return {"runtime": self.runtime.model_state(), "series": series}

    def _load_model_part(self, part: dict[str, Any]) -> None:
        try:
            known = []
            for labels, spart, tid, last in part["series"]:
                s = _Series(
                    {str(k): str(v) for k, v in labels.items()},
                    tuple((str(k), str(v)) for k, v in spart),
                    int(tid),
                )
                s.last = float(last)
                known.append(s)
            runtime = part["runtime"]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"invalid {self.spec.kind} model: {exc}") from None
        self.runtime.load_model_state(runtime)  # ValueError: nothing changed
        # The model's series get their zero points again; open counts stay.
        for s in known:
            name = str(SeriesKey.of(self.metric, s.labels))
            if name not in self.series:
                self.series[name] = s
                self._lookup[(s.part, s.tid)] = s

    def model_evaluation(self) -> dict[str, Any]:
        from aiops.models.lifecycle import evaluate

        return {**evaluate(self.runtime), **super().model_evaluation()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bucket = None if state["bucket"] is None else float(state["bucket"])
        self.series = {str(k): _Series.from_json(v) for k, v in state["series"].items()}
        self._lookup = {(s.part, s.tid): s for s in self.series.values()}
        self.runtime.load_state_dict(state["runtime"])


#: How a stream reaches its rules: (rules that select it, partition, miner, miner.add,
#: whether every rule of the group selects it).
_Route = tuple[list[_Rule], Partition, LogMiner, Callable[[str], MineResult], bool]


class LogEngine:
    """Every log rule, grouped by source; the miners they share; recent notable templates.

    An engine with no rules is the null object: it ignores log records and annotates
    nothing.
    """

    def __init__(self, specs: Sequence[LogRuleSpec] = (), *, render: Renderer = _plain) -> None:
        self.specs = tuple(specs)
        self.render = render
        self.rules: dict[str, _Rule] = {}
        for s in specs:
            if s.key in self.rules:
                raise ValueError(f"duplicate log rule {s.key}")
            self.rules[s.key] = (
                _NewTemplate(s, self) if s.kind == "new_template" else _Counts(s, self)
            )
        # source -> [(settings digest, partition_by, [rules])]: records are mined once per
        # group, whatever the number of rules in it.
        self.by_source: dict[str, list[tuple[MinerSettings, tuple[str, ...], list[_Rule]]]] = {}
        for rule in self.rules.values():
            groups = self.by_source.setdefault(rule.spec.source, [])
            for settings, part_by, members in groups:
                if settings == rule.spec.mining and part_by == rule.spec.partition_by:
                    members.append(rule)
                    break
            else:
                groups.append((rule.spec.mining, rule.spec.partition_by, [rule]))
        self.miners: dict[tuple[str, str, Partition], LogMiner] = {}
        self._maskers: dict[tuple[tuple[Mask, ...], bool], Masker] = {}
        self.notable: deque[dict[str, Any]] = deque(maxlen=_NOTABLE_MAX)
        self._route: dict[int, dict[tuple[tuple[str, str], ...], _Route]] = {}
        self.records = 0
        #: Log records mined, by source (since start or reload).
        self.mined: Counter[str] = Counter()
        self._overflow_warned = False

    def stats(self) -> dict[str, Any]:
        """What ``/metrics`` reports (read from another thread: copies, no iteration).

        ``mined``: records mined per source; ``templates``: templates the source's
        miners hold; ``found``/``held``: per ``new_template`` rule, new templates after
        its learning period and those of them held back by its rate limit.
        """
        templates: Counter[str] = Counter()
        for (source, _, _), miner in list(self.miners.items()):
            templates[source] += len(miner)
        rules = [r for r in list(self.rules.values()) if isinstance(r, _NewTemplate)]
        return {
            "mined": dict(self.mined),
            "templates": dict(templates),
            "found": {r.spec.key: r.found for r in rules},
            "held": {r.spec.key: r.suppressed for r in rules},
        }

    def fresh(self) -> LogEngine:
        """A new engine of the same rules, with nothing learned."""
        return LogEngine(self.specs, render=self.render)

    # -- the data path ----------------------------------------------------------------

    def process(self, source_id: str, batch: Batch) -> list[Alert]:
        """Mine the batch's log records and run them through the source's log rules.

        The cyclic garbage collector is paused meanwhile: a batch makes tuples, lists and
        dicts by the thousand (keys of counts, routes, examples), garbage by the end and
        freed by their reference counts, and collections in the middle walked them (and
        promoted them, to be walked again by the older generations' passes).
        """
        groups = self.by_source.get(source_id)
        if not groups or not batch.logs:
            return []
        with collector_paused():
            return self._process(source_id, batch, groups)

    def _process(
        self,
        source_id: str,
        batch: Batch,
        groups: list[tuple[MinerSettings, tuple[str, ...], list[_Rule]]],
    ) -> list[Alert]:
        alerts: list[Alert] = []
        self.records += len(batch.logs)
        self.mined[source_id] += len(batch.logs)
        logs = batch.logs
        first = logs[0].labels
        # A file source gives every record of a batch one stream: mined in one pass.
        labels = list(map(_LABELS, logs))
        one_stream = labels.count(first) == len(labels)  # identity first: one C pass
        for gi, (settings, part_by, members) in enumerate(groups):
            digest = settings.digest()
            if one_stream:
                one, chosen = self._mine_one_stream(gi, logs, members, part_by, source_id, settings)
                for rule in chosen:
                    rule.observe_batch(one, None, alerts)
                continue
            route = self._route.setdefault(gi, {})
            found = list(map(route.get, labels))
            if None in found:
                for i, hit in enumerate(found):
                    if hit is None:
                        found[i] = route.get(labels[i]) or self._route_of(
                            gi, labels[i], members, part_by, source_id, digest, settings
                        )
            hits = cast(list[_Route], found)
            hit_ids = list(map(id, hits))
            distinct = dict(zip(hit_ids, hits, strict=True)).values()  # one hit a stream
            subsets: dict[_Rule, list[int]] | None = None
            if all(h[0] and h[4] for h in distinct):  # every rule selects every stream
                mined = _Mined(
                    recs=list(logs), parts=list(map(_PART, hits)), miners=list(map(_MINER, hits))
                )
                by_stream = _streams(labels, hits, hit_ids)
                if by_stream is not None:
                    codes, streams = by_stream
                    mined.cids, mined.created = _mine_by_stream(logs, codes, streams)
                    # Rules count stream by stream when each is its partition's only one.
                    owners = [p for p, _, _ in streams]
                    if len(set(owners)) == len(owners):
                        mined.streams = (codes, [(p, lab) for p, lab, _ in streams])
                    for rule in members:
                        rule.observe_batch(mined, None, alerts)
                    continue
            else:
                mined = _Mined()
                recs, parts, miners = mined.recs, mined.parts, mined.miners
                for rec, hit in zip(logs, hits, strict=True):
                    chosen, part, miner, _, every = hit
                    if not chosen:
                        continue
                    if not every:  # some rules do not select this stream
                        if subsets is None:
                            subsets = {r: list(range(len(recs))) for r in members}
                        for r in chosen:
                            subsets[r].append(len(recs))
                    elif subsets is not None:
                        for r in members:
                            subsets[r].append(len(recs))
                    recs.append(rec)
                    parts.append(part)
                    miners.append(miner)
                if not recs:
                    continue
            mined.cids, mined.created = _mine_by_miner(mined.recs, mined.miners)
            for rule in members:
                rule.observe_batch(mined, None if subsets is None else subsets[rule], alerts)
        return alerts

    def _mine_one_stream(
        self,
        gi: int,
        logs: Sequence[LogRecord],
        members: list[_Rule],
        part_by: tuple[str, ...],
        source_id: str,
        settings: MinerSettings,
    ) -> tuple[_Mined, list[_Rule]]:
        """Mine records of one stream; the rules of the group that select it."""
        labels = logs[0].labels
        hit = self._route.setdefault(gi, {}).get(labels)
        if hit is None:
            digest = settings.digest()
            hit = self._route_of(gi, labels, members, part_by, source_id, digest, settings)
        chosen, part, miner, _, _ = hit
        if not chosen:
            return _Mined(), chosen
        cids, created = miner.add_batch(list(map(_MESSAGE, logs)))
        n = len(cids)
        mined = _Mined(
            recs=list(logs),
            parts=[part] * n,
            miners=[miner] * n,
            cids=cids,
            created=created,
            stream=(part, labels),
        )
        return mined, chosen

    def _route_of(
        self,
        gi: int,
        labels: tuple[tuple[str, str], ...],
        members: list[_Rule],
        part_by: tuple[str, ...],
        source_id: str,
        digest: str,
        settings: MinerSettings,
    ) -> _Route:
        """Which rules of a group select a stream, its partition and its miner (cached)."""
        key = SeriesKey.of("log", dict(labels))
        chosen = [r for r in members if r.spec.matches(key)]
        part = _partition(labels, part_by)
        miner = self._miner(source_id, digest, part, settings)
        hit = (chosen, part, miner, miner.add, len(chosen) == len(members))
        route = self._route.setdefault(gi, {})
        if len(route) >= 10_000:
            route.clear()
        route[labels] = hit
        return hit

    def _miner(
        self, source: str, digest: str, part: Partition, settings: MinerSettings
    ) -> LogMiner:
        key = (source, digest, part)
        miner = self.miners.get(key)
        if miner is None:
            if len(self.miners) >= MAX_MINERS:
                if not self._overflow_warned:
                    log.warning("more than %d log partitions: the rest share one miner", MAX_MINERS)
                    self._overflow_warned = True
                key = (source, digest, (("partition", "overflow"),))
                miner = self.miners.get(key)
            if miner is None:
                miner = self.miners[key] = LogMiner(settings, self._masker(settings))
        return miner

    def _masker(self, settings: MinerSettings) -> Masker:
        """One masker (and token cache) for all miners with the same masks."""
        key = (settings.masks, settings.default_masks)
        masker = self._maskers.get(key)
        if masker is None:
            masker = self._maskers[key] = Masker(settings.masks, defaults=settings.default_masks)
        return masker

    def miner_for(self, spec: LogRuleSpec, part: Partition) -> LogMiner | None:
        """The miner of a rule's partition, if it exists."""
        return self.miners.get((spec.source, spec.mining.digest(), part))

    def group_miners(self, spec: LogRuleSpec) -> list[LogMiner]:
        """The miners of a rule's source and mining settings (every partition)."""
        want = (spec.source, spec.mining.digest())
        return [m for (src, dg, _), m in list(self.miners.items()) if (src, dg) == want]

    def miner_states(self, spec: LogRuleSpec) -> list[list[Any]]:
        """``[partition, miner state]`` of each miner of the rule's source and settings."""
        want = (spec.source, spec.mining.digest())
        return [
            [[list(p) for p in part], m.state_dict()]
            for (src, dg, part), m in self.miners.items()
            if (src, dg) == want
        ]

    def parse_miners(self, spec: LogRuleSpec, docs: Any) -> list[tuple[Partition, LogMiner]]:
        """Miners from :meth:`miner_states` data; ``ValueError`` if any is not one of ``spec``."""
        out = []
        try:
            for part, mstate in docs:
                settings = MinerSettings.from_json(mstate["settings"])
                if settings != spec.mining:
                    raise ValueError("a miner of other mining settings")
                miner = LogMiner.from_state(mstate, self._masker(settings))
                out.append((tuple((str(k), str(v)) for k, v in part), miner))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"log rule {spec.key}: saved miners not loaded: {exc}") from None
        return out

    def adopt_miners(self, spec: LogRuleSpec, miners: Sequence[tuple[Partition, LogMiner]]) -> int:
        """Take saved miners where they made more templates than the running ones.

        Drain numbers templates in order and never renumbers, so of two miners of one
        lineage the one with the higher count holds the other's ids with their meaning.
        Returns how many were taken.
        """
        taken = 0
        digest = spec.mining.digest()
        for part, miner in miners:
            key = (spec.source, digest, part)
            current = self.miners.get(key)
            if current is None or miner.drain.clusters_counter > current.drain.clusters_counter:
                self.miners[key] = miner
                taken += 1
        if taken:
            self._route.clear()  # routes hold the miners they lead to
        return taken

    def render_annotations(
        self,
        spec: LogRuleSpec,
        labels: Mapping[str, str],
        value: float,
        template: str,
        examples: Sequence[str],
    ) -> dict[str, str]:
        """The rule's annotations rendered, plus ``template`` and ``examples``."""
        context = {
            "labels": labels,
            "value": value,
            "score": 1.0,
            "series": template,
            "template": template,
            "examples": list(examples),
        }
        out = {k: self.render(v, context) for k, v in spec.annotations.items()}
        out["template"] = template
        if examples:
            out["examples"] = "\n".join(examples)
        return out

    # -- context for metric alerts ------------------------------------------------------

    def note(
        self, ts: float, part: Partition, what: str, template: str, examples: Sequence[str]
    ) -> None:
        """Remember a new or bursting template for the context of metric alerts."""
        self.notable.append(
            {
                "ts": ts,
                "labels": dict(part),
                "what": what,
                "template": template,
                "examples": list(examples)[:3],
            }
        )

    def context(self, labels: Mapping[str, str], start: float) -> list[dict[str, Any]]:
        """The notable templates of the alert's service/host/instance near ``start``."""
        wanted = {(k, labels[k]) for k in CONTEXT_LABELS if k in labels}
        if not wanted:
            return []
        out = []
        for ev in self.notable:
            if not start - CONTEXT_WINDOW <= ev["ts"] <= start + 60.0:
                continue
            if any((k, v) in wanted for k, v in ev["labels"].items()):
                out.append(ev)
        return out[-5:]

    def annotate(self, alerts: list[Alert]) -> list[Alert]:
        """Firing metric alerts get their ``log_templates`` annotation (when any match)."""
        if not self.notable:
            return alerts
        out = []
        for a in alerts:
            events = self.context(a.labels, a.starts_at) if a.status == "firing" else []
            if events:
                lines = []
                for ev in events:
                    text = f"{ev['what']}: {ev['template']}"
                    if ev["examples"]:
                        text += f" (e.g. {ev['examples'][0]})"
                    lines.append(text)
                a = dataclasses.replace(
                    a, annotations={**a.annotations, "log_templates": "\n".join(lines)}
                )
            out.append(a)
        return out

    # -- state ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Miners, rule states and notable templates, as plain data."""
        return {
            "version": _STATE_VERSION,
            "miners": [
                [src, digest, [list(p) for p in part], m.state_dict()]
                for (src, digest, part), m in self.miners.items()
            ],
            "rules": {k: {**r.state_dict(), **r.model_info()} for k, r in self.rules.items()},
            "notable": list(self.notable),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore; miners whose settings changed and rules new since then start fresh."""
        if state.get("version") != _STATE_VERSION:
            log.warning("log state version %r unknown; log rules start fresh", state.get("version"))
            return
        self._route.clear()
        digests = {g[0].digest() for groups in self.by_source.values() for g in groups}
        saved: set[tuple[str, str]] = set()  # (source, digest) of the miners in the state
        restored: set[tuple[str, str]] = set()
        for src, digest, part, mstate in state["miners"]:
            saved.add((str(src), str(digest)))
            if digest not in digests:
                continue
            try:
                settings = MinerSettings.from_json(mstate["settings"])
                miner = LogMiner.from_state(mstate, self._masker(settings))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("log miner of %s not restored: %s", src, exc)
                continue
            self.miners[(src, digest, tuple((str(k), str(v)) for k, v in part))] = miner
            restored.add((str(src), str(digest)))
        for key, rule in self.rules.items():
            if key not in state["rules"]:
                continue
            mined = (rule.spec.source, rule.spec.mining.digest())
            if mined not in restored and any(src == mined[0] for src, _ in saved):
                # Its miners were not restored (other settings, a newer default): their
                # template ids and "new" mean nothing now, so the rule learns again
                # rather than calling every template new after the restart.
                log.info("log rule %s: its miners start fresh, so does it (learns again)", key)
                continue
            rule.load_state_dict(state["rules"][key])
            rule.load_model_info(state["rules"][key])
        self.notable.extend(state.get("notable", ()))


_PART = operator.itemgetter(1)
_MINER = operator.itemgetter(2)


def _streams(
    labels: list[Labels], hits: list[_Route], ids: list[int]
) -> tuple[IntArray, list[tuple[Partition, Labels, LogMiner]]] | None:
    """Each record's stream (an index) and each stream's partition, labels and miner.

    None if two streams share a miner (they are mined together).

    A stream is a route: the routes of one batch are one object per labels (a route
    table cleared in the middle of the batch makes two of one labels: two streams).
    ``ids`` are the routes' ``id``.
    """
    index = {i: k for k, i in enumerate(dict.fromkeys(ids))}
    if len(index) <= 32:  # one C-level scan a stream, to its first record
        firsts = [ids.index(i) for i in index]
    else:
        first = dict(zip(reversed(ids), range(len(ids) - 1, -1, -1), strict=True))
        firsts = [first[i] for i in index]
    streams = [(hits[j][1], labels[j], hits[j][2]) for j in firsts]
    if len({id(m) for _, _, m in streams}) != len(streams):
        return None
    codes = np.fromiter(map(index.__getitem__, ids), np.int64, len(ids))
    return codes, streams


def _mine_by_stream(
    recs: Sequence[LogRecord], codes: IntArray, streams: list[tuple[Partition, Labels, LogMiner]]
) -> tuple[list[int], list[bool]]:
    """:func:`_mine_by_miner` with each record's miner given as its stream's index."""
    return _mine_in_groups(recs, codes, [miner for _, _, miner in streams])


def _mine_by_miner(
    recs: Sequence[LogRecord], miners: Sequence[LogMiner]
) -> tuple[list[int], list[bool]]:
    """Each record's template id and whether it made a new one, mined by its miner.

    Each miner takes its records in order in one :meth:`LogMiner.add_batch`: the same
    results as record by record (miners share nothing that changes a result).
    """
    one = miners[0]
    if all(m is one for m in miners):  # identity: equal miners (a dataclass) may be two
        return one.add_batch(list(map(_MESSAGE, recs)))
    # By identity (a miner is a dataclass: not hashable), in order of first record.
    of_id = dict(zip(map(id, miners), miners, strict=True))
    index = {i: j for j, i in enumerate(of_id)}
    codes = np.fromiter(map(index.__getitem__, map(id, miners)), np.int64, len(miners))
    return _mine_in_groups(recs, codes, list(of_id.values()))


def _mine_in_groups(
    recs: Sequence[LogRecord], codes: IntArray, owners: list[LogMiner]
) -> tuple[list[int], list[bool]]:
    """Each record mined by ``owners[codes[i]]``, each owner's records in order in one batch."""
    order = np.argsort(codes, kind="stable")  # stable: each miner's in order
    ends = np.cumsum(np.bincount(codes, minlength=len(owners))).tolist()
    messages = list(map(_MESSAGE, recs))
    ordered = list(map(messages.__getitem__, order.tolist()))
    got_ids: list[int] = []
    got_new: list[bool] = []
    start = 0
    for miner, end in zip(owners, ends, strict=True):
        c, n = miner.add_batch(ordered[start:end])
        got_ids += c
        got_new += n
        start = end
    cids = np.empty(len(messages), np.int64)
    cids[order] = got_ids
    created = np.empty(len(messages), bool)
    created[order] = got_new
    return cids.tolist(), created.tolist()


def _partition(labels: tuple[tuple[str, str], ...], part_by: tuple[str, ...]) -> Partition:
    if not part_by:
        return ()
    return tuple((k, v) for k, v in labels if k in part_by)


def log_rule_specs(groups: Sequence[RuleGroup], max_series: int = 100_000) -> list[LogRuleSpec]:
    """The log rules (rules with ``log:``) of validated rule groups, as engine specs."""
    specs = []
    for group in groups:
        for rule in group.rules:
            lr = rule.log
            if lr is None:
                continue
            matches = _match_all if rule.selector is None else rule.selector.matches
            annotations = {k: str(v) for k, v in rule.annotations.items()}
            scoring = None
            if lr.type != "new_template":
                scoring = RuleSpec.from_rule(
                    group.name,
                    rule,
                    matches=_match_all,
                    max_series=max_series,
                    selector_text=f"log:{lr.type}:{rule.selector or ''}",
                )
            mining = MinerSettings(
                depth=lr.mining.depth,
                sim_th=lr.mining.sim_th,
                max_clusters=lr.mining.max_clusters,
                masks=tuple(Mask(m.regex, m.mask) for m in lr.mining.masks),
                default_masks=lr.mining.default_masks,
            )
            specs.append(
                LogRuleSpec(
                    group=group.name,
                    alert=rule.alert,
                    source=rule.source,
                    kind=lr.type,
                    matches=matches,
                    partition_by=tuple(lr.partition_by),
                    mining=mining,
                    interval=lr.interval,
                    learn_for=lr.learn_for,
                    max_alerts=lr.max_alerts,
                    per=lr.per,
                    resolve_after=lr.resolve_after,
                    levels=tuple(lr.levels) or DEFAULT_ERROR_LEVELS,
                    pattern=lr.pattern,
                    examples=lr.examples,
                    scoring=scoring,
                    labels=dict(rule.labels),
                    annotations=annotations,
                    selector_text=str(rule.selector or ""),
                )
            )
    return specs
