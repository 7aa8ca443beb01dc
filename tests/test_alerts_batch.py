"""The post-rules take a whole batch in one call: exactly what one point at a time gives.

Three ways of running the same points through a rule's hit window and alert state
machine are compared on random streams (several series interleaved, NaN values,
duplicate and backward timestamps, min_hits/hits_window, ``for``, ``suppress``):

- the engine with random batch boundaries and a checkpoint round trip in the middle;
- the engine fed one point per batch;
- ``RoundOracle``: the round-by-round numpy code that the compiled loops replaced (one
  numpy step per round of distinct series, over ``split_rounds``), kept here only as
  the reference.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aiops.pipeline.alerts import FIRING, INACTIVE, PENDING, AlertStateMachine
from aiops.pipeline.detector import Detector, split_rounds
from aiops.pipeline.engine import RuleRuntime, RuleSpec
from aiops.pipeline.postrule import HitWindow
from aiops.state.envelope import dumps, loads
from aiops.types import Batch, SeriesKey

KEYS = [SeriesKey.of("m", {"s": str(i)}) for i in range(4)]


class Passthrough(Detector):
    """The value is the score (NaN scores 0): the test chooses every point's score."""

    name = "passthrough"

    def score(self, idx, timestamps, values):
        return np.where(np.isfinite(values), values, 0.0)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    @property
    def n_series(self) -> int:
        return 0


def runtime(params: dict[str, Any]) -> RuleRuntime:
    spec = RuleSpec(group="g", alert="A", source="s", matches=lambda k: True, **params)
    rt = RuleRuntime(spec)
    rt.detector = Passthrough()
    return rt


class RoundOracle:
    """The pre-batch post-rules: numpy over one round of distinct series at a time."""

    def __init__(self, threshold, min_hits, window, for_seconds, suppress_seconds, n):
        self.threshold, self.min_hits, self.for_s, self.supp_s = (
            threshold,
            min_hits,
            for_seconds,
            suppress_seconds,
        )
        self.mask = np.uint64((1 << window) - 1)
        self.history = np.zeros(n, dtype=np.uint64)
        self.state = np.zeros(n, dtype=np.int8)
        self.active_at = np.zeros(n)
        self.fired_at = np.zeros(n)
        self.suppress_until = np.full(n, -np.inf)

    def hits(self, idx, scores):
        hits = (scores >= self.threshold).astype(np.uint64)
        h = ((self.history[idx] << np.uint64(1)) | hits) & self.mask
        self.history[idx] = h
        if self.min_hits == 1:
            return hits.astype(bool)
        return np.bitwise_count(h).astype(np.int64) >= self.min_hits

    def alerts(self, idx, t, cond):
        st_ = self.state[idx]
        inactive, pending, firing = st_ == INACTIVE, st_ == PENDING, st_ == FIRING
        start = inactive & cond & (t >= self.suppress_until[idx])
        self.active_at[idx[start]] = t[start]
        active_at = self.active_at[idx]
        fire = (start | pending) & cond & (t - active_at >= self.for_s)
        to_pending = start & ~fire
        cancel = pending & ~cond
        resolve = firing & ~cond
        new = st_.copy()
        new[to_pending] = PENDING
        new[fire] = FIRING
        new[cancel | resolve] = INACTIVE
        self.state[idx] = new
        self.fired_at[idx[fire]] = t[fire]
        self.suppress_until[idx[resolve]] = t[resolve] + self.supp_s
        resolved = np.flatnonzero(resolve)
        return np.flatnonzero(fire), resolved, self.fired_at[idx[resolved]]

    def process(self, series, t, v, offset):
        """Transitions of one batch as (global position, status, series, start, end)."""
        out = []
        finite = np.isfinite(v)
        for sel in split_rounds(series):
            sel = sel[finite[sel]]
            if len(sel) == 0:
                continue
            i, tt = series[sel], t[sel]
            fired, resolved, starts = self.alerts(i, tt, self.hits(i, v[sel]))
            for j in fired:
                out.append((offset + int(sel[j]), "firing", int(i[j]), float(tt[j]), None))
            for j, s0 in zip(resolved, starts, strict=True):
                out.append((offset + int(sel[j]), "resolved", int(i[j]), float(s0), float(tt[j])))
        return out


def feed(params, series, t, v, cuts, restore_at=None):
    """Run the points in batches split at ``cuts``, restoring from a checkpoint before
    batch ``restore_at``; return the runtime, the alerts and the fired flags."""
    rt = runtime(params)
    alerts, fired = [], np.zeros(len(v), dtype=bool)
    bounds = [0, *cuts, len(v)]
    for b, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        if b == restore_at:
            state = loads(dumps(rt.state_dict()))
            rt = runtime(params)
            rt.load_state_dict(state)
        batch = Batch(keys=KEYS, series=series[lo:hi], timestamps=t[lo:hi], values=v[lo:hi])
        res = rt.process(batch)
        fired[lo + res.positions] = res.fired
        for a in res.alerts:
            alerts.append((a.status, a.labels["s"], a.starts_at, a.ends_at, a.value, a.score))
    return rt, alerts, fired


SCORES = [0.0, 0.3, 0.9, 0.95, 1.0, float("nan")]
DELTAS = [-120.0, -60.0, 0.0, 15.0, 30.0, 60.0, 60.0, 60.0, 300.0]


@st.composite
def streams(draw):
    n = draw(st.integers(1, 150))
    n_series = draw(st.integers(1, 4))
    series = np.array(draw(st.lists(st.integers(0, n_series - 1), min_size=n, max_size=n)))
    # Runs of high scores, so that min_hits, `for` and resolutions all happen.
    v = np.array(draw(st.lists(st.sampled_from(SCORES), min_size=n, max_size=n)))
    t = 1_000.0 + np.cumsum(draw(st.lists(st.sampled_from(DELTAS), min_size=n, max_size=n)))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, n - 1)), max_size=6))) - {n})
    min_hits = draw(st.integers(1, 3))
    params = {
        "threshold": 0.9,
        "min_hits": min_hits,
        "hits_window": draw(st.integers(min_hits, 5)),
        "for_seconds": draw(st.sampled_from([0.0, 30.0, 60.0, 120.0])),
        "suppress_seconds": draw(st.sampled_from([0.0, 60.0, 600.0])),
    }
    restore_at = draw(st.one_of(st.none(), st.integers(1, max(1, len(cuts)))))
    return series.astype(np.int64), t, v, cuts, params, restore_at


def post_rule_state(rt, n):
    """Hit histories, then the alert arrays, of series ``0..n-1``."""
    hist = rt.hits.state_dict()["history"][:n]
    alerts = rt.alerts.state_dict()
    fields = ("state", "active_at", "fired_at", "suppress_until")  # the oracle's (no staleness)
    return [hist.tolist()] + [alerts[f][:n].tolist() for f in fields]


NO_RULES = {
    "threshold": 0.9,
    "min_hits": 1,
    "hits_window": 1,
    "for_seconds": 0.0,
    "suppress_seconds": 0.0,
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
# A series whose only point is missing, alone in its batch or next to another series.
@example((np.array([0]), np.array([0.0]), np.array([np.nan]), [], NO_RULES, None))
@example((np.array([0, 1]), np.array([0.0, 60.0]), np.array([0.5, np.nan]), [], NO_RULES, None))
def test_batches_give_the_transitions_of_one_point_at_a_time(stream):
    series, t, v, cuts, params, restore_at = stream
    n = int(series.max()) + 1

    rt, batched, fired = feed(params, series, t, v, cuts, restore_at)
    one, single, fired_one = feed(params, series, t, v, list(range(1, len(v))))
    assert batched == single
    assert fired.tolist() == fired_one.tolist()
    assert post_rule_state(rt, n) == post_rule_state(one, n)
    for k in ("last_value", "last_score"):
        assert np.array_equal(rt.state_dict()[k][:n], one.state_dict()[k][:n], equal_nan=True)

    oracle = RoundOracle(
        params["threshold"],
        params["min_hits"],
        params["hits_window"],
        params["for_seconds"],
        params["suppress_seconds"],
        n,
    )
    expected = []
    bounds = [0, *cuts, len(v)]
    for lo, hi in itertools.pairwise(bounds):
        expected += oracle.process(series[lo:hi], t[lo:hi], v[lo:hi], lo)
    # Within a batch the rounds gave firings before resolutions; points come in order now.
    expected.sort()
    assert [(s, str(i), a, b) for _, s, i, a, b in expected] == [x[:4] for x in batched]
    assert [p for p, s, *_ in expected if s == "firing"] == np.flatnonzero(fired).tolist()
    assert post_rule_state(rt, n) == [
        oracle.history.tolist(),
        oracle.state.tolist(),
        oracle.active_at.tolist(),
        oracle.fired_at.tolist(),
        oracle.suppress_until.tolist(),
    ]


def test_hit_window_counts_hits_across_the_whole_64_point_history():
    rng = np.random.default_rng(3)
    scores = rng.random(5000)
    idx = rng.integers(0, 7, 5000)
    for min_hits, window in [(1, 1), (3, 5), (20, 64), (64, 64)]:
        batch = HitWindow(threshold=0.4, min_hits=min_hits, window=window)
        got = batch.step(idx, scores)
        one = HitWindow(threshold=0.4, min_hits=min_hits, window=window)
        want = [bool(one.step(idx[k : k + 1], scores[k : k + 1])[0]) for k in range(len(idx))]
        assert got.tolist() == want
        # The condition is the count of hits among the series' last `window` points.
        for k in range(0, 5000, 97):
            mine = scores[: k + 1][idx[: k + 1] == idx[k]][-window:]
            assert got[k] == (np.sum(mine >= 0.4) >= min_hits)
        assert (
            batch.state_dict()["history"][:7].tolist() == one.state_dict()["history"][:7].tolist()
        )


def test_state_machine_accepts_checkpoint_arrays_of_other_dtypes():
    sm = AlertStateMachine(for_seconds=0.0)
    sm.step(np.array([0, 1]), np.array([0.0, 0.0]), np.array([True, False]))
    state = {k: np.asarray(a).tolist() for k, a in sm.state_dict().items()}  # as from JSON
    again = AlertStateMachine(for_seconds=0.0)
    again.load_state_dict(state)
    tr = again.step(np.array([0, 0]), np.array([60.0, 120.0]), np.array([False, True]))
    assert tr.resolved.tolist() == [0]
    assert tr.starts_at.tolist() == [0.0]
    assert tr.fired.tolist() == [1]
