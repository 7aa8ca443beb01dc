"""The reliability fuzz runs of the test suite, with what they saw printed.

Run: ``.venv/bin/python bench/reliability_fuzz.py [--cases 10000]``

Runs the same seeded cases as ``tests/test_reliability_fuzz.py`` (every record format)
and ``tests/test_reliability_fuzz_remote_write.py`` (remote-write requests, in-process),
with the same checks (an AssertionError names the failing case), and prints per format
the cases, those with at least one reject, the rejects by reason, the points and log
records kept, the slowest single decode and the run's mean time per case. RELIABILITY.md
quotes its output.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import test_reliability_fuzz as formats
from tests import test_reliability_fuzz_remote_write as remote_write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    args = parser.parse_args()
    print(f"{'format':<20} {'cases':>6} {'rejected':>8} {'kept':>6} {'slowest':>8} {'mean':>7}")
    for name in formats.FORMATS:
        t0 = time.perf_counter()
        run = formats.fuzz(name, args.cases)
        mean = (time.perf_counter() - t0) / args.cases
        print(
            f"{name:<20} {args.cases:>6} {run.with_rejects:>8} {run.items:>6} "
            f"{run.slowest * 1e3:>6.1f}ms {mean * 1e6:>5.0f}us  "
            + ", ".join(f"{r} {n}" for r, n in sorted(run.reasons.items()))
        )
    t0 = time.perf_counter()
    reasons, statuses = remote_write.fuzz(1, args.cases)
    mean = (time.perf_counter() - t0) / args.cases
    print(
        f"{'remote_write':<20} {args.cases:>6} answers "
        + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))
        + f"; {mean * 1e6:.0f}us a case; rejects "
        + ", ".join(f"{r} {n}" for r, n in sorted(reasons.items()))
    )


if __name__ == "__main__":
    main()
