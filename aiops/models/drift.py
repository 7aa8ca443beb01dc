"""Drift checks: river's ADWIN, KSWIN or PageHinkley on a rule's input, score and alert rate.

A rule with ``drift:`` (README "Drift checks") gets a :class:`DriftMonitor`. It sees
every batch the rule scores (the engine's point observer) and reduces it, in one
compiled pass, to one value per *bucket* of ``every`` seconds of data time:

- ``input``: per followed series, the mean of its values in the bucket, less the mean of
  the same bucket one ``season`` earlier (``1d`` by default: a daily cycle is not a
  drift; ``season: 0`` checks the means themselves). A series' first season only fills
  its baseline, and so does the season after a drift of its input (the new level
  becomes the baseline: a level shift is reported once, not again when the shifted
  values come round a season later; measured quieter on real KPIs than counting that
  echo and holding it back: ``bench/drift_seasonal.py``). A rule over many
  series follows a fixed sample of ``sample`` of them: those whose stable series id
  (:attr:`aiops.types.SeriesKey.series_id`) hashes lowest among the series seen (a
  bottom-k sketch: the same series on every instance and after every restart, spread
  over hosts, not the first ones to arrive);
- ``score``: the mean calibrated score of all the rule's points in the bucket;
- ``alert_rate``: the share of the rule's points in the bucket that scored at or above
  the rule's threshold (the points that count as hits).

Each closed bucket is one ``update`` of a river drift detector (one per followed series
for ``input``, one each for ``score`` and ``alert_rate``), so the cost in river is a few
microseconds per bucket, not per point: on a fleet batch (one point of every series)
the checks cost a fraction of a percent of scoring (``bench/drift_overhead.py``).

A detection is a :class:`DriftEvent`. Every detection is counted; events of one signal
closer than ``cooldown`` to the previous one of that signal are counted but not
reported again (no log line, notification or retrain). What a reported event does (a
metric, a log line, an info notification, a retrain) is the lifecycle's business
(:mod:`aiops.models.retrain`).

The monitors are not in the checkpoint: a clean stop carries them over to the next start
(:mod:`aiops.models.carry`, river's detectors signed); after a crash, or without a
signing key, the checks learn their reference afresh (river's grace period, and a season
of baseline for the input check) before they can report.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numba
import numpy as np

from aiops.types import FloatArray, IntArray, SeriesKey

if TYPE_CHECKING:
    from aiops.config.models import Drift

__all__ = ["DETECTOR_DEFAULTS", "SIGNALS", "DriftEvent", "DriftMonitor", "make_detector"]

log = logging.getLogger(__name__)

#: The signals a drift check can watch.
SIGNALS = ("input", "score", "alert_rate")

_CLASSES = {"adwin": "ADWIN", "kswin": "KSWIN", "page_hinkley": "PageHinkley"}
#: Parameters given to the river class unless the rule sets them. ADWIN tests for a cut
#: every ``clock`` updates (river's default 32, meant for raw streams); here each update is
#: already a whole bucket, and 32 buckets of 5 minutes would delay a detection by hours.
#: KSWIN samples its reference window at random: seeded, so a replay finds the same drifts;
#: its test level is per update (river's 0.005 made four false reports in 2.5 days of
#: stationary 5-minute buckets, and missed a level shift among them; 0.0001 none, and
#: found the shift in 85 minutes: tests/test_retrain.py).
DETECTOR_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "adwin": {"clock": 1},
    "kswin": {"seed": 0, "alpha": 0.0001},
    "page_hinkley": {},
}
#: What the signature of a monitor's pickled river detectors is for.
_SIGNED_PURPOSE = "drift.detectors"
#: Series named in one input event's message (the rest are counted).
_NAMED_SERIES = 5


def make_detector(kind: str, params: Mapping[str, Any]) -> Any:
    """A fresh river drift detector ``kind`` (``adwin``, ``kswin``, ``page_hinkley``).

    ``params`` go over :data:`DETECTOR_DEFAULTS`. Raises ``ImportError`` without river,
    ``ValueError`` for an unknown kind, ``TypeError`` / ``ValueError`` for parameters
    river refuses.

    >>> make_detector("adwin", {"delta": 0.01}).delta
    0.01
    """
    if kind not in _CLASSES:
        raise ValueError(f"unknown drift detector {kind!r}; one of {', '.join(_CLASSES)}")
    import inspect

    from river import drift

    cls = getattr(drift, _CLASSES[kind])
    if kind == "kswin":  # river's, with its per-update scipy test made cheap
        from aiops.models.kswin import KSWIN

        cls = KSWIN
    valid = [n for n in inspect.signature(cls).parameters if n != "self"]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise TypeError(f"unknown parameter {unknown[0]!r}; valid: {', '.join(valid)}")
    return cls(**{**DETECTOR_DEFAULTS[kind], **params})


@dataclass(frozen=True)
class DriftEvent:
    """A drift reported on one signal of one rule, at the end of the bucket that showed it.

    ``series`` names the followed series whose input drifted (input events only);
    ``value`` is the bucket value that tipped the detector (for several series, the
    first one's).
    """

    rule: str
    signal: str
    at: float
    value: float
    series: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for a log or a notification."""
        what = {
            "input": "input values",
            "score": "mean score",
            "alert_rate": "alert rate (share of points at or above the threshold)",
        }[self.signal]
        text = f"rule {self.rule}: drift in its {what}"
        if self.series:
            named = ", ".join(self.series[:_NAMED_SERIES])
            more = len(self.series) - _NAMED_SERIES
            text += f" of {named}" + (f" and {more} more series" if more > 0 else "")
        return f"{text} (bucket value {self.value:.6g})"


@numba.njit(cache=True, nogil=True)
def _buckets(
    idx: IntArray,
    t: FloatArray,
    v: FloatArray,
    s: FloatArray,
    every: float,
    threshold: float,
    slot_of: IntArray,
    cur: IntArray,
    sum_v: FloatArray,
    n_v: IntArray,
    rule_state: FloatArray,
    out_slot: IntArray,
    out_bucket: FloatArray,
    out_value: FloatArray,
    out_rbucket: FloatArray,
    out_score: FloatArray,
    out_rate: FloatArray,
) -> tuple[int, int]:
    """Accumulate points into buckets; write each bucket closed by a later one.

    Per followed series (``slot_of[i] >= 0``): bucket id ``cur``, value sum and count.
    Rule-wide ``rule_state``: bucket id, score sum, points, hits. A point of an older
    bucket than the current one (late data) counts in the current one. Returns how many
    series buckets and rule buckets were closed (the head of the ``out_*`` arrays).
    """
    n_series_out = 0
    n_rule_out = 0
    for k in range(len(idx)):
        x = v[k]
        if not math.isfinite(x):
            continue
        b = math.floor(t[k] / every)
        if b > rule_state[0]:
            if rule_state[2] > 0:
                out_rbucket[n_rule_out] = rule_state[0]
                out_score[n_rule_out] = rule_state[1] / rule_state[2]
                out_rate[n_rule_out] = rule_state[3] / rule_state[2]
                n_rule_out += 1
            rule_state[0] = b
            rule_state[1] = 0.0
            rule_state[2] = 0.0
            rule_state[3] = 0.0
        rule_state[1] += s[k]
        rule_state[2] += 1.0
        if s[k] >= threshold:
            rule_state[3] += 1.0
        i = idx[k]
        if i >= len(slot_of):
            continue
        j = slot_of[i]
        if j < 0:
            continue
        if b > cur[j]:
            if n_v[j] > 0:
                out_slot[n_series_out] = j
                out_bucket[n_series_out] = cur[j]
                out_value[n_series_out] = sum_v[j] / n_v[j]
                n_series_out += 1
            cur[j] = b
            sum_v[j] = 0.0
            n_v[j] = 0
        sum_v[j] += x
        n_v[j] += 1
    return n_series_out, n_rule_out


@numba.njit(cache=True, nogil=True)
def _seasonal(
    slots: IntArray,
    buckets: FloatArray,
    values: FloatArray,
    baseline: FloatArray,
    season: int,
    start: int,
    only: int,
    change: FloatArray,
    valid: Any,
) -> None:
    """Each closed bucket's value less the same bucket one season earlier, from ``start``.

    Writes ``change`` and ``valid`` (False: no value a season earlier yet) and puts each
    value into ``baseline``; ``only >= 0`` takes that slot's buckets alone (the rest of a
    batch after a drift emptied that slot's baseline).
    """
    for p in range(start, len(slots)):
        j = slots[p]
        if only >= 0 and j != only:
            continue
        k = int(buckets[p]) % season
        before = baseline[j, k]
        baseline[j, k] = values[p]
        if math.isfinite(before):
            change[p] = values[p] - before
            valid[p] = True
        else:
            valid[p] = False


class DriftMonitor:
    """One rule's drift checks; see the module docstring.

    :meth:`observe` takes the points the rule scored (series index, time, value, score)
    and returns the events to report. ``keys`` is the rule's live series list (the
    registry's), read when new indices appear.
    """

    def __init__(
        self, rule: str, config: Drift, *, threshold: float, keys: Sequence[SeriesKey]
    ) -> None:
        self.rule = rule
        self.config = config
        self.threshold = threshold
        self.keys = keys
        self.signals = frozenset(config.on)
        #: Every detection by signal, reported or held back by the cooldown.
        self.detections: dict[str, int] = dict.fromkeys(config.on, 0)
        self._last_event: dict[str, float] = {}
        cap = config.sample if "input" in self.signals else 0
        self._cap = cap
        self._slot_of = np.full(0, -1, dtype=np.int64)
        self._seen = 0  # series indices considered for the sample so far
        self._heap: list[tuple[int, int]] = []  # (-hash, series index) of the followed ones
        self._slot_series = np.full(cap, -1, dtype=np.int64)
        self._free = list(range(cap - 1, -1, -1))
        # Rows of forgotten series (forget): the series a row holds next is a candidate.
        self._recheck: set[int] = set()
        self._cur = np.full(cap, np.iinfo(np.int64).min, dtype=np.int64)
        self._sum = np.zeros(cap)
        self._n = np.zeros(cap, dtype=np.int64)
        self._input: list[Any] = [None] * cap
        # The input check's seasonal baseline: each followed series' last value of each
        # bucket of the season (NaN: not seen yet); the check sees the difference.
        slots = round(config.season / config.every) if config.season else 0
        self._season_slots = slots
        self._baseline = np.full((cap if slots else 0, slots), np.nan)
        self._rule_state = np.array([-np.inf, 0.0, 0.0, 0.0])
        self._score = make_detector(config.detector, config.params)
        self._rate = make_detector(config.detector, config.params)

    @property
    def followed(self) -> list[int]:
        """Indices of the series the input check follows, sorted."""
        return sorted(i for _, i in self._heap)

    def observe(
        self, idx: IntArray, ts: FloatArray, vs: FloatArray, scores: FloatArray
    ) -> list[DriftEvent]:
        """Take one batch's scored points (in order); the events to report."""
        if len(idx) == 0:
            return []
        need = int(idx.max()) + 1
        if need > self._seen:
            self._follow(need)
        if self._recheck:
            back = np.unique(idx[np.isin(idx, np.fromiter(self._recheck, np.int64))])
            for i in back.tolist():
                self._recheck.discard(i)
                self._consider(i)
        n = len(idx)
        out_slot = np.empty(n, dtype=np.int64)
        out_bucket = np.empty(n)
        out_value = np.empty(n)
        out_rbucket = np.empty(n)
        out_score = np.empty(n)
        out_rate = np.empty(n)
        n_series, n_rule = _buckets(
            idx,
            ts,
            vs,
            scores,
            self.config.every,
            self.threshold,
            self._slot_of,
            self._cur,
            self._sum,
            self._n,
            self._rule_state,
            out_slot,
            out_bucket,
            out_value,
            out_rbucket,
            out_score,
            out_rate,
        )
        if not (n_series or n_rule):
            return []
        every = self.config.every
        events: list[DriftEvent] = []
        if n_series and "input" in self.signals:
            events += self._input_step(
                out_slot[:n_series], out_bucket[:n_series], out_value[:n_series]
            )
        if n_rule:
            ends = ((out_rbucket[:n_rule] + 1.0) * every).tolist()
            for signal, det, values in (
                ("score", self._score, out_score[:n_rule]),
                ("alert_rate", self._rate, out_rate[:n_rule]),
            ):
                if signal not in self.signals:
                    continue
                update = det.update
                for end, x in zip(ends, values.tolist(), strict=True):
                    update(x)
                    if det.drift_detected:
                        self.detections[signal] += 1
                        events += self._report(signal, end, x)
        return sorted(events, key=lambda e: e.at)

    def _input_step(
        self, slots: IntArray, buckets: FloatArray, values: FloatArray
    ) -> list[DriftEvent]:
        """The input check on closed series buckets (in order): one river update each.

        The seasonal differences are taken in one compiled pass (:func:`_seasonal`); only
        the river updates run per bucket in Python. A drift of a series empties its
        baseline, so its later buckets of this batch are taken again from there.
        """
        n = len(slots)
        season = self._season_slots
        change = values.copy()
        valid = np.ones(n, dtype=np.bool_)
        if season:
            _seasonal(slots, buckets, values, self._baseline, season, 0, -1, change, valid)
        todo = np.flatnonzero(valid).tolist()
        changes = change.tolist()
        slot_list = slots.tolist()
        dets = self._input
        drifted: list[str] = []
        first, first_at = math.nan, math.nan
        i = 0
        while i < len(todo):
            p = todo[i]
            i += 1
            j = slot_list[p]
            det = dets[j]
            det.update(changes[p])
            if not det.drift_detected:
                continue
            self.detections["input"] += 1
            if not drifted:
                first, first_at = float(values[p]), (float(buckets[p]) + 1.0) * self.config.every
            drifted.append(str(self.keys[int(self._slot_series[j])]))
            if season:  # the new level becomes the baseline: one report, not two
                self._baseline[j].fill(np.nan)
                _seasonal(slots, buckets, values, self._baseline, season, p + 1, j, change, valid)
                changes = change.tolist()
                todo = (np.flatnonzero(valid[p + 1 :]) + (p + 1)).tolist()
                i = 0
        if not drifted:
            return []
        return self._report("input", first_at, first, tuple(dict.fromkeys(drifted)))

    # -- state (carried over a clean restart: aiops.models.carry) ------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything the checks learned: arrays, JSON and the river detectors, signed.

        River's detectors only serialize through pickle: they are signed
        (:mod:`aiops.state.signing`) and :meth:`load_state_dict` unpickles nothing whose
        signature does not verify. Raises :class:`~aiops.state.signing.SigningKeyMissing`
        without a signing key.
        """
        import pickle

        from aiops.state.signing import sign_blobs

        blobs = [None if d is None else pickle.dumps(d) for d in self._input]
        blobs += [pickle.dumps(self._score), pickle.dumps(self._rate)]
        return {
            "seen": self._seen,
            "heap": [[int(h), int(i)] for h, i in self._heap],
            "slot_of": self._slot_of.copy(),
            "slot_series": self._slot_series.copy(),
            "free": list(self._free),
            "recheck": sorted(self._recheck),
            "cur": self._cur.copy(),
            "sum": self._sum.copy(),
            "n": self._n.copy(),
            "baseline": self._baseline.copy(),
            "rule_state": self._rule_state.copy(),
            "last_event": dict(self._last_event),
            "detections": dict(self.detections),
            "detectors": blobs,
            "detectors_hmac": sign_blobs(blobs, purpose=_SIGNED_PURPOSE),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` of a monitor with the same settings and series list.

        The signature is checked before anything is unpickled
        (:class:`~aiops.state.envelope.SnapshotRefused`); arrays of another shape than
        these settings make are refused (``ValueError``), and nothing is changed then.
        """
        import pickle

        from aiops.state.signing import verify_blobs

        blobs = [None if b is None else bytes(b) for b in state["detectors"]]
        verify_blobs(blobs, state.get("detectors_hmac"), purpose=_SIGNED_PURPOSE)
        cap = self._cap
        arrays = {
            "slot_series": (np.int64, (cap,)),
            "cur": (np.int64, (cap,)),
            "sum": (np.float64, (cap,)),
            "n": (np.int64, (cap,)),
            "baseline": (np.float64, self._baseline.shape),
            "rule_state": (np.float64, (4,)),
        }
        got = {k: np.asarray(state[k], dtype=t) for k, (t, _) in arrays.items()}
        for k, (_, shape) in arrays.items():
            if got[k].shape != shape:
                raise ValueError(f"drift state: {k} has shape {got[k].shape}, not {shape}")
        if len(blobs) != cap + 2:
            raise ValueError(f"drift state: {len(blobs)} detectors, not {cap + 2}")
        models = [None if b is None else pickle.loads(b) for b in blobs]
        self._seen = int(state["seen"])
        self._heap = [(int(h), int(i)) for h, i in state["heap"]]
        heapq.heapify(self._heap)
        self._slot_of = np.asarray(state["slot_of"], dtype=np.int64).copy()
        self._free = [int(j) for j in state["free"]]
        self._recheck = {int(i) for i in state.get("recheck", ())}
        self._slot_series = np.array(got["slot_series"], dtype=np.int64)
        self._cur = np.array(got["cur"], dtype=np.int64)
        self._sum = np.array(got["sum"], dtype=np.float64)
        self._n = np.array(got["n"], dtype=np.int64)
        self._baseline = np.array(got["baseline"], dtype=np.float64)
        self._rule_state = np.array(got["rule_state"], dtype=np.float64)
        self._last_event = {str(k): float(v) for k, v in state["last_event"].items()}
        saved = {str(k): int(v) for k, v in state["detections"].items()}
        self.detections = {k: saved.get(k, 0) for k in self.detections}
        self._input = models[:cap]
        self._score, self._rate = models[cap], models[cap + 1]

    def _report(
        self, signal: str, at: float, value: float, series: tuple[str, ...] = ()
    ) -> list[DriftEvent]:
        last = self._last_event.get(signal)
        if last is not None and at - last < self.config.cooldown:
            return []
        self._last_event[signal] = at
        return [DriftEvent(self.rule, signal, at, value, series)]

    def forget(self, rows: IntArray) -> None:
        """Series ``rows`` were forgotten: their rows go to new series.

        A followed one leaves the sample: its slot (river detector, bucket sums,
        seasonal baseline) is freed, to start afresh for the next series it takes, and
        the series that next holds each row is considered for the sample when it is
        first seen (the bottom-``sample`` hashes, with room for it now).
        """
        gone = {int(i) for i in rows if 0 <= i < self._seen}
        if not gone:
            return
        if self._cap:
            followed = [(h, i) for h, i in self._heap if i in gone]
            if followed:
                for _, i in followed:
                    j = int(self._slot_of[i])
                    self._slot_of[i] = -1
                    self._slot_series[j] = -1
                    self._input[j] = None
                    self._free.append(j)
                self._heap = [(h, i) for h, i in self._heap if i not in gone]
                heapq.heapify(self._heap)
        self._recheck |= gone

    def _follow(self, need: int) -> None:
        """Consider series ``_seen .. need-1`` for the sample (bottom-``sample`` hashes)."""
        if need > len(self._slot_of):
            grown = np.full(max(need, 2 * len(self._slot_of)), -1, dtype=np.int64)
            grown[: len(self._slot_of)] = self._slot_of
            self._slot_of = grown
        for i in range(self._seen, min(need, len(self.keys))):
            self._consider(i)
        self._seen = need

    def _consider(self, i: int) -> None:
        """Follow series ``i`` if its hash is among the ``sample`` lowest seen."""
        if not self._cap or i >= len(self.keys):
            return
        h = int(self.keys[i].series_id, 16)
        if len(self._heap) < self._cap:
            heapq.heappush(self._heap, (-h, i))
            self._take_slot(i)
        elif -self._heap[0][0] > h:
            _, out = heapq.heapreplace(self._heap, (-h, i))
            j = int(self._slot_of[out])
            self._slot_of[out] = -1
            self._free.append(j)
            self._take_slot(i)

    def _take_slot(self, i: int) -> None:
        j = self._free.pop()
        self._slot_of[i] = j
        self._slot_series[j] = i
        self._cur[j] = np.iinfo(np.int64).min
        self._sum[j] = 0.0
        self._n[j] = 0
        self._input[j] = make_detector(self.config.detector, self.config.params)
        if self._season_slots:
            self._baseline[j].fill(np.nan)
