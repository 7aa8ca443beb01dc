"""Writes ``envelope_novelty_float32_profiles.npz``: an ``envelope_novelty`` state of the
layout before uint16 profiles (float32 profile bins, float64 counts), for
``tests/test_envelope_novelty.py``.

It was run with the code of commit 80db290 (``git worktree add /tmp/old 80db290``, then
this script with that tree's detectors importable): two series of five-minute points, a
square daily cycle and Poisson counts, 21 days learned; the state, the next three days (a
day without its busy hours among them) and the scores the old code gave them.
"""

from __future__ import annotations

import sys

import numpy as np

from aiops.detectors.envelope_novelty import EnvelopeNovelty

CUT = 21 * 288


def series() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(12)
    t = 1_700_000_000.0 + np.arange(24 * 288) * 300.0  # 24 days of five-minute points
    tod = (t % 86400) / 3600
    busy = (tod >= 8) & (tod < 20)
    a = np.where(busy, 80.0, 20.0) + rng.normal(0, 2, len(t))  # a square daily cycle
    c = rng.poisson(3.0, len(t)).astype(float)  # low counts
    a[CUT + 288 + 96 : CUT + 288 + 240] = 20.0 + rng.normal(0, 2, 144)  # no busy hours
    return t, np.stack([a, c])


def main() -> None:
    t, xs = series()
    det = EnvelopeNovelty()
    k = xs.shape[0]

    def batch(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = np.repeat(np.arange(k), hi - lo)
        return idx, np.tile(t[lo:hi], k), xs[:, lo:hi].ravel()

    det.score(*batch(0, CUT))
    state = det.state_dict()
    after = det.score(*batch(CUT, len(t)))
    out = {f"state_{name}": v for name, v in state.items()}
    out.update(timestamps=t[CUT:], values=xs[:, CUT:], scores=after)
    np.savez_compressed(sys.argv[1], **out)


if __name__ == "__main__":
    main()
