"""An ensemble of registered detectors, combining their calibrated scores point by point."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aiops.detectors.calibration import combine_min_p
from aiops.pipeline.detector import Detector
from aiops.types import FloatArray, IntArray, SeriesKey

__all__ = ["Ensemble"]

METHODS = ("min_p", "max", "mean", "noisy_or")
MEMBER_KEYS = frozenset({"type", "params", "weight"})
#: ``min_p`` trusts the tail probability of a member whose calibration is only a bound
#: (``"at_most"``: ``envelope_novelty``, whose score beyond 0.999 grows with a record's
#: margin, not with its rarity) down to this and no further: such a member cannot make a
#: point rarer than one in a million, so the ensemble's deep tail (what a single-point
#: rule at 0.99999999 sees) is its calibrated members'. The default ensemble's scores
#: above 0.99999 come from ewma_z alone. On the simulated fleet (``bench/fleet.py``,
#: three seeds), single hits at 0.99999999 on memory, request rate and CPU: 86 false
#: alerts without the floor, 3 with it.
AT_MOST_P_FLOOR = 1e-6
#: ``detector: {type: ensemble}`` without members, the project's default detector:
#: ``ewma_z`` (deviations from the recent level that are rare for the series, inside the
#: range seen too: what operators label on web-service KPIs) with 0.7 of the false-alarm
#: budget, half of it on its level-shift channel (``shift_weight`` 0.5: a short mean of
#: clipped deviations with its own tail, so a sustained shift or a drop to zero alerts
#: while a lone spike needs twice the rarity), and ``envelope_novelty`` (values, levels
#: and volatility beyond all seen: NAB's anomalies) with 0.3. Measured at the default
#: threshold (KPI best / own F1, whole and 2nd half; NAB standard swept / own; fleet
#: found, false): weights 0.9 / 0.1 without the shift channel (the default until
#: 2026-12-07) 0.720 / 0.711, 0.836 / 0.827, 60.7 / 55.8, 46/58, 0; the default 0.719 /
#: 0.705, 0.837 / 0.822, 65.9 / 64.9, 46/58, 0; 0.8 / 0.2 with the channel 0.719 / 0.707,
#: 0.837 / 0.824, 64.6 / 63.8, 46/58, 0; 0.65 / 0.35 0.719 / 0.704, 0.837 / 0.821, 65.8 /
#: 66.3; 0.6 / 0.4 0.720 / 0.704, 0.838 / 0.821, NAB own 67.1 (shift_weight 0.4). Without
#: the channel, moving budget to envelope_novelty costs the KPIs: 0.8 / 0.2 0.716 / 0.640,
#: 0.832 / 0.734, 62.4 / 56.5 (three drops to zero in one incident, a quarter of the KPIs'
#: labelled points, scored p = 1.4e-3 to 1.8e-3 by the point channel: just inside the
#: 0.9 share of the default threshold, outside a smaller one; the shift channel scores
#: them 1e-4 or less). Earlier: equal weights 0.715 / 0.556, 46.7 / 56.8;
#: envelope_novelty without its seasonal profiles 0.716 / 0.711, 0.832 / 0.826, 60.0 /
#: 53.4; the former default members (envelope_novelty + robust_ewma, equal weights): 0.505
#: / 0.503 and 63.5 / 38.6. The fleet figures are with ``rules/fleet.yaml`` before its
#: one-point spike rules; with them (and ``AT_MOST_P_FLOOR``) the default finds 55/58 with
#: 3 false alerts in 12 simulated days. Since 2026-12-08 ewma_z also rechecks the first
#: point after a scrape gap in an open incident against the normal before it
#: (``gap_recheck``, on by default): the default 0.754 / 0.741, 0.868 / 0.856, 65.9 /
#: 64.85, 55/58 with 3 false alerts (the figures above are without it). Since then
#: ewma_z's slow-drift channel (``drift_weight`` 0.05, taken from the shift channel's
#: 0.5: how far the level has left the long-run mean, in long-run swings, with its own
#: tail) finds the two slow db-latency ramps the level followed: 0.753 / 0.741, 0.868 /
#: 0.856, 66.19 / 64.97, 57/58 with 3 false alerts (seeds 1 2 3: 51/58, 0 false; 50/58,
#: 0 without it). A tuple, so that the default is immutable.
DEFAULT_MEMBERS: tuple[Mapping[str, Any], ...] = (
    {"type": "ewma_z", "weight": 0.7, "params": {"shift_weight": 0.45, "drift_weight": 0.05}},
    {"type": "envelope_novelty", "weight": 0.3},
)


class Ensemble(Detector):
    """Several detectors on the same points; their ``[0, 1]`` scores combined per point.

    Each member is ``{"type": name, "params": {...}}`` as in a rule file's ``detector:``
    (any registered type, ensembles included), with an optional ``"weight"`` (a positive
    number; the weights are normalized to sum to 1, equal by default) for ``min_p``.
    Every member scores and learns from every point on its own, so batch boundaries,
    missing values and new series behave as they do for the members. ``method``
    combines the members' calibrated scores:

    - ``"min_p"`` (the default): the members' smallest tail probability ``1 - s_i``
      divided by its weight ``w_i`` (Bonferroni, ``k`` times the smallest with equal
      weights; :func:`~aiops.detectors.calibration.combine_min_p`). A member whose
      calibration is only a bound (``"at_most"``, not an ensemble) counts down to a tail
      probability of ``AT_MOST_P_FLOOR`` (1e-6), no further. The combination keeps
      the members' meaning of a score: on normal points it reaches ``s`` at most about as
      often as ``1 - s`` (that often if the members never agree on a rare point,
      ``max_i w_i (1 - s)`` if they always do), so a threshold carries over. A member of
      small weight adds only its rarest points and costs the others little power.
    - ``"max"``: alert when any member would; the false-alarm rates roughly add up.
    - ``"mean"``: members must agree; a lone member's spike is damped.
    - ``"noisy_or"``: ``1 - prod(1 - s_i)``, the probability that at least one member is
      right if each score were an independent probability (Pearl, 1988). Above ``max``,
      so two members at 0.9 give 0.99: use a higher threshold than for one detector.

    A member without a ``seed`` gets one derived from the ensemble's ``seed`` and its
    position; a finite ``learn_below`` is passed to members that do not set their own
    (each member then gates its own learning on its own score).

    Without ``members``, the ensemble is ``DEFAULT_MEMBERS``, the project's default
    detector: ``ewma_z`` (with its level-shift channel on, ``shift_weight`` 0.45, and
    its slow-drift channel, ``drift_weight`` 0.05) with weight 0.7 and
    ``envelope_novelty`` with 0.3, combined with ``min_p``. It keeps about ewma_z's
    figures on the web-service KPIs and adds envelope_novelty's record-breaking points,
    which NAB's anomalies mostly are (``bench/quality/RESULTS.md``).

    Works well on: metrics where different failure shapes matter (a seasonal model for
    shape, a robust level model for spikes). Fails on: nothing beyond its members, but
    it costs their sum, and ``max``/``noisy_or`` inherit every member's false alarms (and
    lose the calibration: two calibrated members under ``max`` reach ``s`` up to twice
    as often as ``1 - s``).

    Cost: the sum of the members' costs plus one combination pass per batch.

    Parameters
    ----------
    members
        The members, ``[{"type": ..., "params": {...}, "weight": w}, ...]``; at least
        one; ``params`` and ``weight`` optional. Default: ``DEFAULT_MEMBERS``.
    method
        ``"min_p"`` (default), ``"max"``, ``"mean"`` or ``"noisy_or"``.

    >>> det = Ensemble(members=[
    ...     {"type": "robust_ewma", "params": {"warmup": 5}},
    ...     {"type": "robust_ewma", "params": {"warmup": 5, "alpha": 0.5}},
    ... ], method="mean")
    >>> x = np.array([10.0, 10.5, 9.5, 10.2, 9.8, 10.1, 9.9, 30.0, 10.0])
    >>> np.round(det.score(np.zeros(9, dtype=np.int64), np.arange(9.0), x), 2).tolist()
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.02, 0.02, 1.0, 0.0]
    """

    name = "ensemble"

    def __init__(
        self,
        *,
        members: Sequence[Mapping[str, Any]] = DEFAULT_MEMBERS,
        method: str = "min_p",
        learn_below: float = math.inf,
        seed: int = 0,
    ) -> None:
        super().__init__(learn_below=learn_below, seed=seed)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if isinstance(members, str | bytes | Mapping) or not members:
            raise ValueError("members must be a non-empty list of {type, params} entries")
        self.members = copy.deepcopy(list(members))
        self.method = method
        self._members = [self._build(i, m) for i, m in enumerate(self.members)]
        # A nested ensemble is "at_most" by its Bonferroni factor, a bound in the safe
        # direction: it is not floored.
        self._bounded = [
            i
            for i, m in enumerate(self._members)
            if getattr(m, "calibration", "tail") == "at_most" and not isinstance(m, Ensemble)
        ]
        raw = [m.get("weight", 1.0) for m in self.members]
        for i, w in enumerate(raw):
            if isinstance(w, bool) or not isinstance(w, int | float) or not 0 < w < math.inf:
                raise ValueError(f"members[{i}]: weight must be a positive number, got {w!r}")
        if method != "min_p" and any("weight" in m for m in self.members):
            raise ValueError(f'member weights need method "min_p", got {method!r}')
        total = float(sum(raw))
        self._weights = np.array([w / total for w in raw])

    @classmethod
    def check_params(cls) -> dict[str, Any]:
        """Small parameters for the shared detector check suite."""
        from aiops.registry import DETECTORS

        members: list[dict[str, Any]] = []
        for name in ("robust_ewma", "stl"):
            member_cls = DETECTORS.get(name)
            params = member_cls.check_params() if hasattr(member_cls, "check_params") else {}
            members.append({"type": name, "params": params})
        members[1]["params"]["robust"] = False  # the stl check already covers robust fits
        return {"members": members}

    def _build(self, i: int, spec: Mapping[str, Any]) -> Detector:
        from aiops.registry import DETECTORS

        if not isinstance(spec, Mapping) or "type" not in spec:
            raise ValueError(f"members[{i}] must be a mapping with a type, got {spec!r}")
        unknown = sorted(set(spec) - MEMBER_KEYS)
        valid = ", ".join(sorted(MEMBER_KEYS))
        if unknown:
            raise ValueError(f"members[{i}]: unknown keys {unknown}; valid keys: {valid}")
        name = spec["type"]
        params = dict(spec.get("params") or {})
        params.setdefault("seed", int(np.random.SeedSequence([self.seed, i]).generate_state(1)[0]))
        if math.isfinite(self.learn_below):
            params.setdefault("learn_below", self.learn_below)
        try:
            member: Detector = DETECTORS.create(name, **params)
        except (TypeError, ValueError) as exc:
            raise ValueError(f'members[{i}] (type "{name}"): {exc}') from None
        return member

    @property
    def calibration(self) -> str:
        """What a score means (the check suite's ``calibration`` check).

        ``"tail"`` (about a fraction ``1 - s`` of normal points score ``s`` or more) for
        ``min_p`` whose members are ``"tail"`` or ``"at_most"``, one at least ``"tail"``,
        and whose Bonferroni factor (the product of the member counts down to a
        detector, for nested ensembles) is at most 3: the rate lies between ``1 / factor``
        and 1 times the members' own. ``"at_most"`` for other ``min_p`` ensembles:
        Bonferroni bounds the rate from above only. ``"none"`` for ``max``, ``mean`` and
        ``noisy_or``, which do not keep the meaning (the class docstring says how), and
        fail the check.
        """
        if self.method != "min_p":
            return "none"
        kinds = [getattr(m, "calibration", "tail") for m in self._members]
        if "none" in kinds:
            return "none"
        return "tail" if self.bonferroni_factor <= 3 and "tail" in kinds else "at_most"

    @property
    def bonferroni_factor(self) -> float:
        """How far below the members' own the combined rate can fall (nested too).

        ``1 / max_i w_i`` times the members' largest: ``k`` with equal weights.
        """
        inner = [getattr(m, "bonferroni_factor", 1) for m in self._members]
        return float(max(inner)) / float(self._weights.max())

    @property
    def pickled_models(self) -> bool:
        """Whether a member's state holds pickled third-party models (to be signed)."""
        return any(getattr(m, "pickled_models", False) for m in self._members)

    @property
    def n_series(self) -> int:
        """How many series indices the members hold state for (the largest)."""
        return max(m.n_series for m in self._members)

    def bind_series(self, keys: Sequence[SeriesKey]) -> None:
        """Pass the series keys on to every member (grouping members need them)."""
        for member in self._members:
            member.bind_series(keys)

    def limit_rows(self, rows: int | None) -> None:
        """Pass the rows hint on to every member (see :meth:`Detector.limit_rows`)."""
        super().limit_rows(rows)
        for member in self._members:
            member.limit_rows(rows)

    def score(self, idx: IntArray, timestamps: FloatArray, values: FloatArray) -> FloatArray:
        """Score with every member and combine; see the class docstring."""
        scores = np.stack([np.asarray(m.score(idx, timestamps, values)) for m in self._members])
        if self.method == "min_p":
            if self._bounded:
                scores[self._bounded] = np.minimum(scores[self._bounded], 1.0 - AT_MOST_P_FLOOR)
            out: FloatArray = combine_min_p(scores, self._weights)
        elif self.method == "max":
            out = scores.max(axis=0)
        elif self.method == "mean":
            out = scores.mean(axis=0)
        else:
            out = 1.0 - np.prod(1.0 - scores, axis=0)
        return np.clip(out, 0.0, 1.0)

    def state_dict(self) -> dict[str, Any]:
        """The members' states, in order."""
        return {"members": [m.state_dict() for m in self._members]}

    def state_views(self) -> dict[str, Any]:
        """:meth:`state_dict` for a checkpoint: each member's ``state_views()`` if it has one.

        A member without it is copied (its ``state_dict()``).
        """
        views = [getattr(m, "state_views", None) for m in self._members]
        return {
            "members": [
                v() if callable(v) else m.state_dict()
                for m, v in zip(self._members, views, strict=True)
            ]
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        states = state["members"]
        if len(states) != len(self._members):
            raise ValueError(
                f"ensemble state has {len(states)} members, the ensemble has {len(self._members)}"
            )
        for member, member_state in zip(self._members, states, strict=True):
            member.load_state_dict(member_state)
