"""River's KSWIN drift detector with its Kolmogorov-Smirnov test's p-value looked up.

``river.drift.KSWIN`` runs ``scipy.stats.ks_2samp`` on every update: 0.5-0.9 ms, nearly
all of it scipy's per-call machinery (argument and NaN-policy handling around two
samples of ``stat_size`` numbers), so a drift check with ``detector: kswin`` cost a
one-series replay about 1,000 times its scoring (``bench/drift_overhead.py``).

:class:`KSWIN` is river's class with one change: the two-sample statistic is computed
here, as scipy computes it, and the p-value is looked up by what it depends on. For the
sample sizes KSWIN uses, scipy's ``method="auto"`` takes its exact distribution, whose
p-value is a function of the two sizes and of ``h = round(D * lcm(n1, n2))`` alone; so
the first test of each ``(n1, n2, h)`` asks scipy (statistic and p-value both), and the
later ones reuse its answer. Decisions, p-values and the use of the seeded random
sample are river's, update for update (``tests/test_drift_kswin.py`` runs both side by
side); what changes is the cost, about 30 times less per update.
"""

from __future__ import annotations

import collections
import itertools
import math
import warnings
from typing import Any

import numba
import numpy as np
from river import drift
from scipy import stats

from aiops.types import FloatArray

__all__ = ["KSWIN", "ks_2samp"]

#: ``(n1, n2, h) -> (statistic, p-value)`` as scipy answered. At most ``n1 * n2 + 1``
#: values of ``h`` per pair of sizes, and a rule's sizes are fixed: the bound is there
#: against a process that builds many differently sized detectors.
_ANSWERS: dict[tuple[int, int, int], tuple[float, float]] = {}
_MAX_ANSWERS = 65_536


@numba.njit(cache=True, nogil=True)
def _statistic(a: FloatArray, b: FloatArray) -> float:
    """The two-sided KS statistic of two samples, as scipy's ``ks_2samp`` computes it.

    scipy takes, at every value of both samples, the difference of the two empirical
    CDFs (``searchsorted(..., side="right") / n``); this walks the sorted samples once
    and takes the same differences at the same points, so ``D`` rounds to scipy's ``h``.
    """
    a = np.sort(a)
    b = np.sort(b)
    n1, n2 = len(a), len(b)
    lo, hi = 0.0, 0.0
    i = j = 0
    while i < n1 or j < n2:
        x = a[i] if j >= n2 or (i < n1 and a[i] <= b[j]) else b[j]  # the next value
        while i < n1 and a[i] <= x:
            i += 1
        while j < n2 and b[j] <= x:
            j += 1
        diff = i / n1 - j / n2
        lo = min(lo, diff)
        hi = max(hi, diff)
    return max(min(-lo, 1.0), hi)


def ks_2samp(sample1: list[float], sample2: list[float]) -> tuple[float, float]:
    """``scipy.stats.ks_2samp(sample1, sample2, method="auto")``'s statistic and p-value.

    The statistic is the one scipy's exact method returns (``h / lcm``); samples are
    finite numbers, as KSWIN's buckets are.
    """
    n1, n2 = len(sample1), len(sample2)
    d = _statistic(np.array(sample1, dtype=np.float64), np.array(sample2, dtype=np.float64))
    lcm = (n1 // math.gcd(n1, n2)) * n2
    key = (n1, n2, round(d * lcm))
    answer = _ANSWERS.get(key)
    if answer is None:
        with warnings.catch_warnings():  # as river does: "auto" may warn
            warnings.simplefilter("ignore", category=RuntimeWarning)
            st, p = stats.ks_2samp(sample1, sample2, method="auto")
        if len(_ANSWERS) >= _MAX_ANSWERS:
            _ANSWERS.clear()
        answer = _ANSWERS[key] = (float(st), float(p))
    return answer


class KSWIN(drift.KSWIN):
    """``river.drift.KSWIN`` whose test is :func:`ks_2samp`; see the module docstring.

    Same parameters, state and pickles' contents as river's class; ``update`` is
    river's (0.26) with the scipy call replaced.
    """

    def update(self, x: Any) -> None:
        """Add ``x`` to the window; once it is full, test its newest part against the rest."""
        if self.drift_detected:
            self._reset()  # type: ignore[no-untyped-call]
        self.n += 1
        self.window.append(x)
        if len(self.window) < self.window_size:
            self._drift_detected = False
            return
        older = self._rng.sample(range(self.window_size - self.stat_size), self.stat_size)
        rnd_window = [self.window[r] for r in older]
        most_recent = list(
            itertools.islice(self.window, self.window_size - self.stat_size, self.window_size)
        )
        st, p = ks_2samp(rnd_window, most_recent)
        self.p_value = p  # type: ignore[assignment]  # river starts it at int 0
        if p <= self.alpha and st > 0.1:
            self._drift_detected = True
            self.window = collections.deque(most_recent, maxlen=self.window_size)
        else:
            self._drift_detected = False
