"""Isolation forest over multivariate vectors: all metrics of one entity (a host) at once.

See :class:`IsolationForestDetector`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

# A calibrated score is ``1 - p`` for a tail probability ``p``, the scale every detector
# shares: 0.999 means "one ordinary vector in 1,000 is this rare".
from aiops.detectors.calibration import TailCalibrator, surprise_to_z, tail_score
from aiops.pipeline.detector import Detector
from aiops.types import BoolArray, FloatArray, IntArray, SeriesKey

__all__ = ["IsolationForestDetector"]

#: Liu, Ting and Zhou (2008), "Isolation Forest", section 5: path lengths converge by
#: about 100 trees, and sub-samples of 256 points suffice across their benchmarks.
DEFAULT_TREES = 100
DEFAULT_SAMPLES = 256
#: The interquartile range of a standard normal variable, 2 * Phi^-1(3/4): IQR / this
#: is a standard-deviation-like scale.
IQR_TO_SIGMA = 1.3489795003921634
#: Scale floor of a feature: a share of its median's magnitude, plus an absolute epsilon
#: (a feature constant over the window still gets a finite, huge z for its first move).
REL_MIN_SCALE = 1e-9
ABS_MIN_SCALE = 1e-30
#: Standardized features are clipped to this many scales. scikit-learn's trees work in
#: float32 (an unclipped 1e300 overflows to inf and fails the fit), and an isolation
#: tree only compares a value with split points drawn inside the training range, so
#: anything beyond it scores the same however far out it is.
CLIP_Z = 1e6
#: The per-axis tail scale never counts as less than this (in the forest's input units,
#: about sigmas): an axis that was constant over the window, up to float rounding, must
#: not turn rounding into a record.
MIN_AXIS_TAIL_SCALE = 1e-3
#: Whitening: the second moments are taken of z winsorized at this many scales, so an
#: outlier left in the window does not tilt the axes (Huber's clipping, as elsewhere).
WINSOR_Z = 5.0
#: Whitening: an axis's variance counts as at least this share of the largest one (and
#: at least ABS_MIN_VARIANCE): two copies of one metric make a zero-variance axis,
#: which would turn float rounding into huge z.
MIN_EIGEN_SHARE = 1e-6
ABS_MIN_VARIANCE = 1e-12
#: Conditional-mean completion: ridge added to the reported features' second moments,
#: as a share of their mean variance, so two copies of one metric still solve.
RIDGE = 1e-6
#: Per-vector forgetting of each entity's tail calibrator (memory about 1,000 vectors).
TAIL_ALPHA = 1e-3
# In the series-to-entity map: a series forgotten for good (retire).
_RETIRED = -2
#: The Euler-Mascheroni constant, in c(n) (Liu et al., 2008, eq. 1).
EULER_GAMMA = 0.5772156649015329


def _entity_random_state(seed: int, ident: list[Any]) -> int:
    """A 32-bit random state from the detector's seed and an entity's identity.

    The identity (group label values, or the index of an unbound series) rather than
    the entity's position makes the forest of an entity independent of which other
    entities exist and in which order they appeared.
    """
    digest = hashlib.blake2b(json.dumps(ident).encode(), digest_size=8).digest()
    words = [seed % 2**64, int.from_bytes(digest, "little")]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def _average_path_length(n: int) -> float:
    """``c(n)``, the mean depth of a failed search in a binary search tree of ``n`` points.

    It normalizes isolation depths (Liu et al., 2008, eq. 1).
    """
    if n <= 1:
        return 0.0
    if n == 2:
        return 1.0
    return 2.0 * (math.log(n - 1.0) + EULER_GAMMA) - 2.0 * (n - 1.0) / n


def _matmul_rows(a: FloatArray, b: FloatArray) -> FloatArray:
    """``a @ b`` computed row by row in a fixed order.

    BLAS may sum in a different order for one row than for many, which would make a
    vector's score depend on the batch it came in; numpy's reduction over the last
    axis does not.
    """
    out: FloatArray = (a[:, None, :] * b.T[None, :, :]).sum(axis=2)
    return out


class _Features:
    """The map from an entity's raw vector to the forest's inputs, fixed at a fit.

    Robust standardization (median, IQR / 1.349) per feature; a feature with no value
    yet (NaN) takes the median, z = 0, and one with no value in the fitting window is
    held at 0. Features not reported in the open bucket are replaced by their
    conditional mean given the reported ones (:meth:`__call__`). Then, optionally, the
    whitened principal axes.
    """

    __slots__ = ("_completion", "center", "moments", "rotation", "scale", "seen")

    def __init__(self, x: FloatArray, whiten: bool) -> None:
        width = x.shape[1]
        self.center = np.zeros(width)
        self.scale = np.ones(width)
        self.seen = np.isfinite(x).any(axis=0)
        if self.seen.any():
            xs = x[:, self.seen]
            med = np.nanmedian(xs, axis=0)
            q1, q3 = np.nanpercentile(xs, [25.0, 75.0], axis=0)
            self.center[self.seen] = med
            floor = REL_MIN_SCALE * np.abs(med) + ABS_MIN_SCALE
            self.scale[self.seen] = np.maximum((q3 - q1) / IQR_TO_SIGMA, floor)
        # Second moments of the winsorized z about the medians: a robust covariance.
        z = np.clip(self._z(x), -WINSOR_Z, WINSOR_Z)
        self.moments: FloatArray = z.T @ z / len(z)
        self.rotation: FloatArray | None = None
        if whiten and width > 1:
            # Principal axes, each scaled to unit spread: z @ rotation is uncorrelated.
            eigval, eigvec = np.linalg.eigh(self.moments)
            floor_var = max(float(eigval.max()) * MIN_EIGEN_SHARE, ABS_MIN_VARIANCE)
            self.rotation = eigvec / np.sqrt(np.maximum(eigval, floor_var))
        self._completion: dict[bytes, FloatArray] = {}

    def _z(self, x: FloatArray) -> FloatArray:
        z = (x - self.center) / self.scale
        z[np.isnan(z)] = 0.0
        z[:, ~self.seen] = 0.0
        out: FloatArray = np.clip(z, -CLIP_Z, CLIP_Z)
        return out

    def _complete(self, present: BoolArray) -> FloatArray:
        """``B`` with ``z_missing = z_present @ B.T``: the Gaussian conditional mean."""
        key = present.tobytes()
        cached = self._completion.get(key)
        if cached is not None:
            return cached
        m = self.moments
        m_pp = m[np.ix_(present, present)]
        ridge = RIDGE * (float(np.trace(m_pp)) / max(len(m_pp), 1) + ABS_MIN_VARIANCE)
        m_pp = m_pp + ridge * np.eye(len(m_pp))
        b = np.asarray(np.linalg.solve(m_pp, m[np.ix_(present, ~present)]).T, dtype=np.float64)
        self._completion[key] = b
        return b

    def __call__(self, x: FloatArray, present: BoolArray | None = None) -> FloatArray:
        """The forest's inputs for rows ``x``; ``present[i, j]``: feature j is fresh."""
        z = self._z(x)
        if present is not None and not present.all():
            patterns, inverse = np.unique(present, axis=0, return_inverse=True)
            for k, pattern in enumerate(patterns):
                if pattern.all():
                    continue
                rows = np.flatnonzero(inverse.ravel() == k)
                fill = _matmul_rows(z[np.ix_(rows, pattern)], self._complete(pattern).T)
                z[np.ix_(rows, ~pattern)] = fill
        if self.rotation is not None:
            z = np.clip(_matmul_rows(z, self.rotation), -CLIP_Z, CLIP_Z)
        return z


class _PackedForest:
    """A fitted sklearn IsolationForest as flat node arrays, scored without sklearn.

    sklearn's ``score_samples`` walks its trees one at a time from Python, about 30 us
    per tree whatever the number of rows: 3 ms for one vector with 100 trees. Here
    every (row, tree) pair steps down one level per numpy operation, a dozen levels
    at most, which is 50 times faster for the few vectors an entity has per batch and
    as fast for a window. Leaves loop to themselves and hold their depth plus
    ``c(n_samples)``, sklearn's adjustment for the points left unisolated, and rows
    are rounded to float32 as sklearn's trees see them, so the mean depth equals
    sklearn's (to the rounding of a sum; a test checks it).
    """

    __slots__ = ("feature", "left", "levels", "right", "roots", "threshold", "value")

    def __init__(self, forest: Any) -> None:
        feature, threshold, left, right, value, roots = [], [], [], [], [], []
        offset = levels = 0
        for tree in (est.tree_ for est in forest.estimators_):
            n = int(tree.node_count)
            lchild = np.asarray(tree.children_left, dtype=np.int64)
            rchild = np.asarray(tree.children_right, dtype=np.int64)
            leaf = lchild < 0
            depth = np.zeros(n)
            level, d = np.zeros(1, dtype=np.int64), 0
            while len(level):
                depth[level] = d
                inner = level[~leaf[level]]
                level, d = np.concatenate([lchild[inner], rchild[inner]]), d + 1
            levels = max(levels, d - 1)
            own = np.arange(n)
            feature.append(np.where(leaf, 0, tree.feature))
            threshold.append(np.where(leaf, np.inf, tree.threshold))
            left.append(np.where(leaf, own, lchild) + offset)
            right.append(np.where(leaf, own, rchild) + offset)
            adjust = [_average_path_length(int(k)) for k in tree.n_node_samples]
            value.append(np.where(leaf, depth + np.asarray(adjust), 0.0))
            roots.append(offset)
            offset += n
        self.feature = np.concatenate(feature).astype(np.int64)
        self.threshold = np.concatenate(threshold).astype(np.float64)
        self.left = np.concatenate(left)
        self.right = np.concatenate(right)
        self.value = np.concatenate(value)
        self.roots = np.asarray(roots, dtype=np.int64)
        self.levels = levels

    def mean_depth(self, z: FloatArray) -> FloatArray:
        """The mean over trees of each row's path length ``h(x)``."""
        x = z.astype(np.float32).astype(np.float64)
        rows = np.arange(len(x))[:, None]
        node = np.repeat(self.roots[None, :], len(x), axis=0)
        for _ in range(self.levels):
            go_left = x[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(go_left, self.left[node], self.right[node])
        out: FloatArray = self.value[node].sum(axis=1) / len(self.roots)
        return out


def _exponential_tail_scale(top: FloatArray, median: FloatArray, n: int) -> FloatArray:
    """Scale of an exponential tail from the gap between the median and the maximum.

    The maximum of ``n`` exponential draws lies about ``ln(n / 2)`` scales above their
    median (as in :class:`aiops.detectors.calibration.EmpiricalCalibrator`).
    """
    out: FloatArray = (top - median) / math.log(max(n / 2.0, 2.0))
    return out


class _Model:
    """One fitted forest with its input features and its calibration.

    The tail probability ``p`` of a vector (the share of ordinary vectors at least as
    anomalous) is the smaller of two estimates; :meth:`deviation` puts it on a Gaussian
    deviation's scale for the entity's tail calibrator:

    - the isolation score ``s(x) = 2 ** (-E[h(x)] / c(psi))`` (sklearn's
      ``-score_samples``) ranked among the training vectors' own: ``1 - (#below +
      #equal / 2) / (n + 1)`` within their range, and beyond their maximum an
      exponential tail, ``exp(-(s - max) / scale) / (n + 1)``. Ranks alone cannot go
      below ``1 / (n + 1)``, so only a vector more isolated than every training vector
      can reach the alert threshold;
    - per axis of the forest's inputs, the same exponential tail beyond the training
      maximum (and below the minimum), times the number of sides (Bonferroni). The
      trees cannot do this part: their cuts fall inside the training range, so a vector
      beyond it follows the most extreme training vector down every tree and scores no
      higher than that one, however far out it is.
    """

    __slots__ = (
        "axis_bottom",
        "axis_down",
        "axis_top",
        "axis_up",
        "c_psi",
        "features",
        "forest",
        "n",
        "ref",
        "ref_scale",
        "width",
    )

    def __init__(self, forest: Any, features: _Features, z: FloatArray, psi: int) -> None:
        self.forest = _PackedForest(forest)
        self.features = features
        self.width = len(features.center)
        self.c_psi = _average_path_length(psi)
        self.n = n = len(z)
        self.ref = np.sort(self._raw_z(z))  # the training vectors' own isolation scores
        top, median = self.ref[-1:], np.median(self.ref, keepdims=True)
        self.ref_scale = float(_exponential_tail_scale(top, median, n)[0])
        median = np.median(z, axis=0)
        self.axis_top, self.axis_bottom = z.max(axis=0), z.min(axis=0)
        floor = MIN_AXIS_TAIL_SCALE
        self.axis_up = np.maximum(_exponential_tail_scale(self.axis_top, median, n), floor)
        self.axis_down = np.maximum(_exponential_tail_scale(-self.axis_bottom, -median, n), floor)

    def _raw_z(self, z: FloatArray) -> FloatArray:
        """The isolation score ``s(x)`` of the forest's inputs ``z``."""
        if self.c_psi <= 0:
            return np.full(len(z), 0.5)
        out: FloatArray = np.exp2(-self.forest.mean_depth(z) / self.c_psi)
        return out

    def _forest_tail(self, raw: FloatArray) -> FloatArray:
        ref, n = self.ref, self.n
        below = np.searchsorted(ref, raw, side="left")
        upto = np.searchsorted(ref, raw, side="right")
        p = 1.0 - (below + 0.5 * (upto - below)) / (n + 1.0)
        beyond = raw > ref[-1]
        if beyond.any():
            gap = raw[beyond] - ref[-1]
            scale = self.ref_scale
            decay = np.exp(-gap / scale) if scale > 0 else np.ones(len(gap))
            p[beyond] = decay / (n + 1.0)
        return p

    def _axis_tail(self, z: FloatArray) -> FloatArray:
        up = (z - self.axis_top) / self.axis_up
        down = (self.axis_bottom - z) / self.axis_down
        excess = np.maximum(np.maximum(up, down).max(axis=1), 0.0)
        sides = 2.0 * z.shape[1]
        p: FloatArray = np.where(excess > 0, sides * np.exp(-excess) / (self.n + 1.0), 1.0)
        return p

    def tail_probability(self, x: FloatArray) -> FloatArray:
        """``p`` of raw vectors, NaN where a feature was not reported (see the class)."""
        present = np.isfinite(x) & self.features.seen
        z = self.features(x, present)
        p = np.minimum(self._forest_tail(self._raw_z(z)), self._axis_tail(z))
        out: FloatArray = np.clip(p, 0.0, 1.0)
        return out

    def deviation(self, rows: list[list[float]]) -> FloatArray:
        """The rows' ``p`` as two-sided Gaussian deviations, for the entity's tail.

        Each row is at least ``width`` long; NaN is a missing feature.
        """
        x = np.array([r[: self.width] for r in rows], dtype=np.float64)
        p = self.tail_probability(x)
        return surprise_to_z(-np.log(np.maximum(p, 1e-300)))


class _Entity:
    """The learned and pending state of one entity (one vector of features)."""

    __slots__ = (
        "bucket_t",
        "buf",
        "commits",
        "current",
        "fit_width",
        "fresh",
        "group",
        "index",
        "model",
        "n_fits",
        "n_learned",
        "n_rows",
        "open_lo",
        "open_max",
        "random_state",
        "rejected_run",
        "req_pos",
        "req_rows",
        "since_fit",
        "single",
    )

    def __init__(
        self, group: tuple[str, ...] | None, single: int, random_state: int, index: int
    ) -> None:
        self.index = index  # position in the detector's entity list (its tail's row)
        self.group = group  # label values of group_by; None for an unbound series
        self.single = single  # the series index of an unbound series, else -1
        self.random_state = random_state
        self.current: list[float] = []  # latest value per feature, NaN before the first
        self.fresh: list[float] = []  # values reported in the open bucket, else NaN
        self.bucket_t = math.nan  # start of the open bucket; NaN before the first point
        self.open_max = 0.0  # highest known score of the open bucket's points
        # Learned vectors, oldest first, in buf[:n_rows]; when buf is full, the newest
        # `window + retrain_every` (what a snapshot keeps) move to its front.
        self.buf = np.zeros((0, 0))
        self.n_rows = 0
        self.n_learned = 0
        self.since_fit = 0  # vectors learned since the last fit (or since the start)
        self.n_fits = 0
        self.fit_width = 0  # features at the last fit
        self.rejected_run = 0  # leaky count of buckets refused by learn_below
        self.model: _Model | None = None  # built at a fit, or lazily after a load
        # Within one score() call: vectors waiting to be scored (and where their score
        # goes), buckets waiting for their learn decision, and where the open bucket's
        # requests start.
        self.req_rows: list[list[float]] = []
        self.req_pos: list[int] = []
        self.commits: list[tuple[list[float], int, int, float]] = []
        self.open_lo = 0

    @property
    def n_features(self) -> int:
        return len(self.current)


class IsolationForestDetector(Detector):
    """scikit-learn's IsolationForest on the vector of all metrics of an entity.

    Series that share the values of the ``group_by`` labels form one *entity* (a host,
    with ``group_by: [instance]``); its *features* are its member series, one per
    metric name and remaining label set, in the order the engine registered them
    (:meth:`bind_series`). A label a series lacks counts as the empty string, as in
    PromQL's ``by (...)``. A series whose key was never bound (the check suite, a
    detector used outside the engine) is an entity of its own with one feature.

    Buckets: each entity cuts time into buckets, one per scrape. A bucket opens at the
    entity's first point more than ``step`` seconds after the open bucket's start; a
    point at or before that joins the open bucket (late points included). When a
    bucket closes, the entity's vector, each feature's latest value carried forward,
    is one training vector: a host with ten metrics adds one row per scrape, not ten.
    It is learned (appended to the training window) unless a point of the bucket
    scored at or above ``learn_below``. Such refusals count up a leaky counter (+1 per
    refused bucket, -1 per learned one, never below 0); above ``retrain_every`` the
    buckets are learned anyway: a lasting change (a level shift) becomes the new
    normal instead of alerting for ever. A NaN or infinite value is a missing point:
    it scores 0 and changes nothing.

    Scores: a point scores the entity's vector as known right after it, under the
    entity's current forest. Features already reported in the open bucket take their
    new values; the others (their metric comes later in the same scrape) take their
    conditional mean given those, from the window's robust covariance (Gaussian
    completion). Carrying the previous scrape's values forward instead would pair
    values of two scrapes, a broken relation the forest rightly finds rare: the first
    metrics of every scrape would score high whenever the metrics move between
    scrapes (ten times as often as the last one, measured on three correlated
    metrics). So the point that completes an unusual combination is the one that
    scores high (CPU high while requests are low, each inside its own normal range),
    and the last point of a scrape scores the whole vector.

    Fitting: after ``warmup`` learned vectors, and then after every ``retrain_every``
    more, the entity's forest is refitted on its last ``window`` learned vectors;
    until the first fit its points score 0. Features are standardized robustly over
    the window (median, and IQR / 1.349 as the scale); in training vectors a feature
    with no value yet takes the median (z = 0); a feature with no value anywhere in the
    window is held at 0, a constant column that isolation trees never split on, and
    features that appear after a fit are ignored until the next one. With ``whiten``
    (the default) the trees grow on the principal axes of the window's z (winsorized
    at ``WINSOR_Z`` for the second moments), each scaled to unit spread: an isolation
    tree cuts along one axis at a time, so on raw features a point off the diagonal of
    two correlated metrics needs many cuts (Hariri et al., 2021, "Extended Isolation
    Forest"), while on the whitened axes the broken relation is a large value on the
    minor axis. A forest's random state comes from ``seed`` and the entity's
    identity, so refits repeat.

    Calibration: a vector's tail probability ``p``, the share of ordinary vectors at
    least as anomalous, is the smaller of the rank of its isolation score among the
    training vectors' own (with an exponential tail beyond their maximum) and a per-axis
    exponential tail beyond the training range (times the number of sides); the second
    covers what trees cannot see, since their cuts fall inside the range and a vector
    beyond it scores like the most extreme training vector however far out (see
    ``_Model``). That ``p`` is rough beyond ``1 / window`` (its exponential tails are
    too long for Gaussian vectors and too short for Student-t ones), so it is put on a
    Gaussian deviation's scale (:func:`~aiops.detectors.calibration.surprise_to_z`) and
    a per-entity :class:`~aiops.detectors.calibration.TailCalibrator` (memory about
    ``1 / TAIL_ALPHA`` vectors, learning each scored point below ``learn_below`` in
    order) learns how often each deviation really occurs: the score is ``1 - p`` for that
    tail probability, so 0.999 means "one ordinary vector in 1,000 is this rare", as for
    every detector (the check suite's ``calibration`` check: 0.9x to 1.4x at 0.999 on
    its noise kinds, against 0.0x on Gaussian and 0.9x on Student-t(3) noise before,
    and 0.0x and 5.8x at 0.9999). Points scored on partly completed vectors reach high
    scores less often than complete ones.

    Snapshots hold no pickle: ``state_dict()`` keeps the training rows (the last
    ``window + retrain_every``, which include the rows of the last fit), the counters,
    the open buckets and the entity map; after a load each fitted entity refits its
    forest on the rows of its last fit with the same random state, on first use, so
    scores continue exactly (with the same scikit-learn version; the state envelope
    records it). Scoring is batched: an entity's vectors are collected and scored in
    one call per entity and batch, or per refit, on the forest's node arrays
    (``_PackedForest``: sklearn grows the trees, numpy walks them); a bucket's learn
    decision waits for its scores until it could change when the next refit happens.

    Works well on: hosts, pods or services whose metrics move together (load, CPU,
    latency, memory), where an incident breaks their usual relation while each metric
    stays inside its own range, which per-series detectors cannot see; groups of up to a
    few dozen features; normal clouds of any shape (several clusters, skewed features).
    Fails on: seasonality (a daily peak alerts unless the window holds several days of
    vectors); slow drifts and level shifts, which each refit learns; temporal anomalies
    within the normal joint range (no sequence model); features constant over the window
    (never split on; their first move counts only through the per-axis tail); tails
    heavier than exponential (see the calibration); many entities (see the cost);
    unbound univariate series, where it is a slower cousin of ``robust_ewma``. A series
    that stops reporting keeps its last value in its entity's training vectors.

    Cost: per entity, up to ``2 * (window + retrain_every) * features`` floats of
    training rows and a forest of about 5 kB per tree as node arrays (0.5 MB at the
    defaults). A fit grows ``n_estimators`` trees on ``max_samples`` rows and scores
    the window: about 0.1 s at the defaults, amortized over ``retrain_every`` scrapes.
    Scoring an entity's vectors of one batch takes about 0.1 ms plus a Python step per
    point. 20 hosts of 5 metrics, one batch per scrape, run at 5,000 to 6,000 points/s on
    one core with the defaults, fits (most of the time) included. Hundreds of
    entities, not hundreds of thousands.

    Parameters
    ----------
    group_by
        Label names whose values identify an entity; ``[]`` makes all series of the rule
        one entity.
    step
        Seconds a bucket spans from its first point: more than the spread of timestamps
        within one scrape of an entity, less than the scrape interval.
    window
        Learned vectors per entity a forest is fitted on.
    retrain_every
        Learned vectors between refits of an entity.
    warmup
        Learned vectors before an entity's first fit (at most ``window``).
    n_estimators
        Trees per forest (Liu et al., 2008: path lengths converge by 100).
    max_samples
        Rows each tree is grown on, at most the window's (256 in Liu et al., 2008).
    whiten
        Grow the trees on the whitened principal axes of the standardized features
        instead of on the features themselves.

    Two hosts (``group_by: [host]``) whose CPU follows their requests; at scrape 140
    host a's requests fall to 45 and its CPU rises to 55, both inside their usual
    range. Only the point completing that combination scores 0.999 or more:

    >>> det = IsolationForestDetector(group_by=["host"], warmup=100, window=200, n_estimators=50)
    >>> det.bind_series([SeriesKey.of(m, {"host": h}) for h in "ab" for m in ("req", "cpu")])
    >>> rng = np.random.default_rng(0)
    >>> req = 50 + 10 * np.sin(np.arange(150) / 8) + rng.normal(0, 1, (2, 150))
    >>> cpu = req + rng.normal(0, 1, (2, 150))
    >>> req[0, 140], cpu[0, 140] = 45.0, 55.0
    >>> idx = np.tile([0, 1, 2, 3], 150)  # a/req, a/cpu, b/req, b/cpu
    >>> ts = np.repeat(np.arange(150) * 15.0, 4)
    >>> values = np.stack([req[0], cpu[0], req[1], cpu[1]]).T.ravel()
    >>> scores = det.score(idx, ts, values).reshape(150, 4)
    >>> np.round(scores[139:142], 2).tolist()
    [[0.21, 0.09, 0.17, 0.35], [0.21, 1.0, 0.34, 0.53], [0.23, 0.63, 0.34, 0.33]]
    >>> np.argwhere(scores >= 0.999).tolist()
    [[140, 1]]
    """

    name = "isolation_forest"

    def __init__(
        self,
        *,
        group_by: Sequence[str] = ("instance",),
        step: float = 5.0,
        window: int = 1000,
        retrain_every: int = 100,
        warmup: int = 100,
        n_estimators: int = DEFAULT_TREES,
        max_samples: int = DEFAULT_SAMPLES,
        whiten: bool = True,
        learn_below: float = math.inf,
        seed: int = 0,
    ) -> None:
        super().__init__(learn_below=learn_below, seed=seed)
        if isinstance(group_by, str) or not all(isinstance(g, str) for g in group_by):
            raise ValueError(f"group_by must be a list of label names, got {group_by!r}")
        if not step > 0:
            raise ValueError(f"step must be positive (seconds), got {step}")
        for label, n in (
            ("window", window),
            ("retrain_every", retrain_every),
            ("warmup", warmup),
            ("n_estimators", n_estimators),
        ):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"{label} must be a positive integer, got {n!r}")
        if warmup < 2 or warmup > window:
            raise ValueError(f"warmup must be in [2, window={window}], got {warmup}")
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 2:
            raise ValueError(f"max_samples must be an integer >= 2, got {max_samples!r}")
        if not isinstance(whiten, bool):
            raise ValueError(f"whiten must be true or false, got {whiten!r}")
        self.group_by = tuple(group_by)
        self.step = step
        self.window = window
        self.retrain_every = retrain_every
        self.warmup = warmup
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.whiten = whiten
        self._keep = window + retrain_every  # training rows a snapshot must hold
        self._reset()

    @classmethod
    def check_params(cls) -> dict[str, Any]:
        """Small parameters for the shared detector check suite (hourly points)."""
        return {"warmup": 40, "window": 150, "retrain_every": 20, "n_estimators": 30}

    @classmethod
    def calibration_check_params(cls) -> dict[str, Any]:
        """Cheaper parameters for the calibration check: refits every 500 vectors.

        Its 160,000 points take minutes with a refit every 20; how often the forest
        refits does not change what a score means.
        """
        return {"retrain_every": 500}

    def _reset(self) -> None:
        self._series_entity: list[int] = []  # per series index; -1: not assigned yet
        self._series_col: list[int] = []
        self._entities: list[_Entity] = []
        self._by_group: dict[tuple[str, ...], int] = {}
        self._n_bound = 0
        self._out = np.zeros(0)
        self._tail = TailCalibrator(alpha=TAIL_ALPHA)  # one row per entity

    @property
    def n_series(self) -> int:
        """How many series indices the detector holds state for."""
        return len(self._series_entity)

    # -- entities ----------------------------------------------------------------------

    def _grow(self, n: int) -> None:
        extra = n - len(self._series_entity)
        if extra > 0:
            self._series_entity.extend([-1] * extra)
            self._series_col.extend([-1] * extra)

    def _new_entity(self, group: tuple[str, ...] | None, single: int) -> int:
        ident: list[Any] = ["group", *group] if group is not None else ["series", single]
        state = _entity_random_state(self.seed, ident)
        self._entities.append(_Entity(group, single, state, len(self._entities)))
        self._tail.grow(len(self._entities))
        if group is not None:
            self._by_group[group] = len(self._entities) - 1
        return len(self._entities) - 1

    def _add_feature(self, i: int, e: int) -> None:
        ent = self._entities[e]
        self._series_entity[i] = e
        self._series_col[i] = ent.n_features
        ent.current.append(math.nan)
        ent.fresh.append(math.nan)

    def retire(self, rows: Sequence[int]) -> None:
        """Series ``rows`` were forgotten for good (the engine retires, not reuses, them).

        An entity none of whose series is left is emptied: its training rows, forest,
        counters, open bucket and tail calibration go, so it holds what a new entity
        holds, and a later series of its ``group_by`` values starts it afresh. (Under
        pod churn with ``group_by: [pod]`` every gone pod was a training window and a
        forest kept for ever.) An entity with series left keeps the retired ones'
        features: its vector keeps its width until it is emptied.
        """
        touched: set[int] = set()
        for i in rows:
            if 0 <= i < len(self._series_entity) and self._series_entity[i] >= 0:
                touched.add(self._series_entity[i])
                self._series_entity[i] = _RETIRED
                self._series_col[i] = -1
        if not touched:
            return
        live = set(self._series_entity)
        for e in sorted(touched - live):
            ent = self._entities[e]
            fresh = _Entity(ent.group, ent.single, ent.random_state, ent.index)
            self._entities[e] = fresh
            tail = self._tail.state_dict()
            new = TailCalibrator(alpha=TAIL_ALPHA)
            new.grow(1)
            for k, v in new.state_dict().items():
                tail[k][e] = v[0]
            self._tail.load_state_dict(tail)

    def bind_series(self, keys: Sequence[SeriesKey]) -> None:
        """Assign series to entities by their ``group_by`` label values.

        A series keeps the entity and feature it got first: binding never moves one.
        """
        self._grow(len(keys))
        for i in range(self._n_bound, len(keys)):
            if self._series_entity[i] != -1:  # bound, or retired (after a load)
                continue
            labels = dict(keys[i].labels)
            group = tuple(labels.get(g, "") for g in self.group_by)
            e = self._by_group.get(group)
            if e is None:
                e = self._new_entity(group, -1)
            self._add_feature(i, e)
        self._n_bound = max(self._n_bound, len(keys))

    # -- scoring -----------------------------------------------------------------------

    def score(self, idx: IntArray, timestamps: FloatArray, values: FloatArray) -> FloatArray:
        """Score and learn from the points; see the class docstring."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.zeros(len(idx), dtype=np.float64)
        if len(idx) == 0:
            return out
        self._grow(int(idx.max()) + 1)
        self._out = out
        touched: set[int] = set()
        step = self.step
        series_entity, series_col, entities = self._series_entity, self._series_col, self._entities
        points = zip(
            idx.tolist(),
            np.asarray(timestamps, dtype=np.float64).tolist(),
            np.asarray(values, dtype=np.float64).tolist(),
            strict=True,
        )
        for j, (i, t, v) in enumerate(points):
            if not math.isfinite(v):
                continue
            e = series_entity[i]
            if e < 0:
                e = self._new_entity(None, i)
                self._add_feature(i, e)
            ent = entities[e]
            if math.isnan(ent.bucket_t):
                ent.bucket_t = t
            elif t >= ent.bucket_t + step:
                self._close_bucket(ent, t)
                touched.add(e)
            col = series_col[i]
            ent.current[col] = v
            ent.fresh[col] = v
            if ent.n_fits:
                ent.req_rows.append(list(ent.fresh))
                ent.req_pos.append(j)
                touched.add(e)
        for e in sorted(touched):
            self._flush(entities[e])
        self._out = np.zeros(0)
        return out

    def _due(self, ent: _Entity, pending: int) -> bool:
        """Whether ``pending`` more learned vectors would trigger a fit."""
        need = self.retrain_every if ent.n_fits else self.warmup
        return ent.since_fit + pending >= need

    def _close_bucket(self, ent: _Entity, t: float) -> None:
        ent.commits.append((list(ent.current), ent.open_lo, len(ent.req_rows), ent.open_max))
        ent.open_lo = len(ent.req_rows)
        ent.open_max = 0.0
        ent.bucket_t = t
        ent.fresh = [math.nan] * ent.n_features
        # The learn decisions wait for the scores until they could trigger a fit: only
        # then must the vectors be scored, under the forest they were seen with.
        if self._due(ent, len(ent.commits)):
            self._flush(ent)
            if self._due(ent, 0):
                self._fit(ent)

    def _flush(self, ent: _Entity) -> None:
        """Score the entity's waiting vectors (one call) and decide its closed buckets."""
        scores = np.zeros(0)
        if ent.req_rows:
            scores = self._calibrate(ent.index, self._model(ent).deviation(ent.req_rows))
            self._out[ent.req_pos] = scores
        for vec, lo, hi, known in ent.commits:
            worst = max(known, float(scores[lo:hi].max())) if hi > lo else known
            if worst < self.learn_below:
                ent.rejected_run = max(0, ent.rejected_run - 1)
                self._learn(ent, vec)
            else:
                # A change that outlasts a retrain period is the new normal: learn it
                # rather than alert on it for ever.
                ent.rejected_run += 1
                if ent.rejected_run > self.retrain_every:
                    self._learn(ent, vec)
        if len(scores) > ent.open_lo:
            ent.open_max = max(ent.open_max, float(scores[ent.open_lo :].max()))
        ent.req_rows, ent.req_pos, ent.commits, ent.open_lo = [], [], [], 0

    def _calibrate(self, e: int, z: FloatArray) -> FloatArray:
        """Scores of entity ``e``'s deviations ``z`` in order, its tail learning each one.

        A point scoring at or above ``learn_below`` stays out of the tail.
        """
        out = np.zeros(len(z))
        row = np.array([e], dtype=np.int64)
        tail = self._tail
        for k in range(len(z)):
            zk = z[k : k + 1]
            out[k] = float(tail_score(tail.surprise(row, zk))[0])
            if out[k] < self.learn_below:
                tail.update(row, zk)
        return out

    # -- training ----------------------------------------------------------------------

    def _learn(self, ent: _Entity, vec: list[float]) -> None:
        width = ent.n_features
        if ent.buf.shape[1] < width:
            pad = np.full((len(ent.buf), width - ent.buf.shape[1]), np.nan)
            ent.buf = np.hstack([ent.buf, pad])
        if ent.n_rows == len(ent.buf):
            cap = 2 * self._keep
            if len(ent.buf) < cap:
                grown = np.full((min(cap, max(16, 2 * len(ent.buf))), width), np.nan)
                grown[: ent.n_rows] = ent.buf[: ent.n_rows]
                ent.buf = grown
            else:  # compact: keep the newest rows a snapshot needs, minus the one to come
                keep = self._keep - 1
                ent.buf[:keep] = ent.buf[ent.n_rows - keep : ent.n_rows]
                ent.n_rows = keep
        row = ent.buf[ent.n_rows]
        row[:] = np.nan
        row[: len(vec)] = vec
        ent.n_rows += 1
        ent.n_learned += 1
        ent.since_fit += 1

    def _fit_rows(self, ent: _Entity) -> FloatArray:
        """The training rows of the entity's last fit (as of ``since_fit`` rows ago)."""
        end = ent.n_rows - ent.since_fit
        start = max(0, end - self.window)
        rows: FloatArray = ent.buf[start:end, : ent.fit_width]
        return rows

    def _fit(self, ent: _Entity) -> None:
        ent.since_fit = 0
        ent.n_fits += 1
        ent.fit_width = ent.n_features
        ent.model = self._build(ent, self._fit_rows(ent))

    def _model(self, ent: _Entity) -> _Model:
        if ent.model is None:  # restored from a snapshot: refit exactly as before
            ent.model = self._build(ent, self._fit_rows(ent))
        return ent.model

    def _build(self, ent: _Entity, x: FloatArray) -> _Model:
        from sklearn.ensemble import IsolationForest

        features = _Features(x, self.whiten)
        z = features(x)
        psi = min(self.max_samples, len(z))
        forest = IsolationForest(
            n_estimators=self.n_estimators, max_samples=psi, random_state=ent.random_state
        )
        forest.fit(z)
        return _Model(forest, features, z, psi)

    # -- state -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The entity map, counters, open buckets and training rows, as plain arrays.

        Fitted forests are not stored: a load refits them from the rows of their last
        fit, with the same random state.
        """
        ents = self._entities
        rows = []
        for ent in ents:
            held = min(ent.n_rows, self._keep)
            rows.append(ent.buf[ent.n_rows - held : ent.n_rows, : ent.n_features].ravel())
        return {
            "series_entity": np.array(self._series_entity, dtype=np.int64),
            "series_col": np.array(self._series_col, dtype=np.int64),
            "groups": [list(ent.group) if ent.group is not None else None for ent in ents],
            "single": np.array([ent.single for ent in ents], dtype=np.int64),
            "n_features": np.array([ent.n_features for ent in ents], dtype=np.int64),
            "current": np.array([v for ent in ents for v in ent.current], dtype=np.float64),
            "fresh": np.array([v for ent in ents for v in ent.fresh], dtype=np.float64),
            "bucket_t": np.array([ent.bucket_t for ent in ents], dtype=np.float64),
            "open_max": np.array([ent.open_max for ent in ents], dtype=np.float64),
            "n_rows": np.array([min(ent.n_rows, self._keep) for ent in ents], dtype=np.int64),
            "rows": np.concatenate(rows) if rows else np.zeros(0),
            "n_learned": np.array([ent.n_learned for ent in ents], dtype=np.int64),
            "since_fit": np.array([ent.since_fit for ent in ents], dtype=np.int64),
            "rejected_run": np.array([ent.rejected_run for ent in ents], dtype=np.int64),
            "n_fits": np.array([ent.n_fits for ent in ents], dtype=np.int64),
            "fit_width": np.array([ent.fit_width for ent in ents], dtype=np.int64),
            "tail": self._tail.state_dict(len(ents)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; forests are refitted on first use."""
        self._reset()
        self._series_entity = np.asarray(state["series_entity"], dtype=np.int64).tolist()
        self._series_col = np.asarray(state["series_col"], dtype=np.int64).tolist()
        n_features = np.asarray(state["n_features"], dtype=np.int64).tolist()
        n_rows = np.asarray(state["n_rows"], dtype=np.int64).tolist()
        current = np.asarray(state["current"], dtype=np.float64)
        fresh = np.asarray(state["fresh"], dtype=np.float64)
        flat = np.asarray(state["rows"], dtype=np.float64)
        if (
            len(current) != sum(n_features)
            or len(fresh) != len(current)
            or len(flat) != sum(r * f for r, f in zip(n_rows, n_features, strict=True))
        ):
            raise ValueError("isolation_forest state: vector sizes do not match n_features")
        c_off = r_off = 0
        for e, group in enumerate(state["groups"]):
            self._new_entity(tuple(group) if group is not None else None, int(state["single"][e]))
            ent = self._entities[e]
            width, held = n_features[e], n_rows[e]
            ent.current = current[c_off : c_off + width].tolist()
            ent.fresh = fresh[c_off : c_off + width].tolist()
            c_off += width
            ent.buf = flat[r_off : r_off + held * width].reshape(held, width).copy()
            r_off += held * width
            ent.n_rows = held
            ent.bucket_t = float(state["bucket_t"][e])
            ent.open_max = float(state["open_max"][e])
            ent.n_learned = int(state["n_learned"][e])
            ent.since_fit = int(state["since_fit"][e])
            ent.rejected_run = int(state["rejected_run"][e])
            ent.n_fits = int(state["n_fits"][e])
            ent.fit_width = int(state["fit_width"][e])
        if "tail" in state:  # states written before the tail calibrator start from its prior
            self._tail.load_state_dict(state["tail"])
        self._tail.grow(len(self._entities))
