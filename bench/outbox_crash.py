"""SIGKILL the daemon at 20 random moments while it delivers hundreds of notifications.

Usage (from the repository root)::

    .venv/bin/python bench/outbox_crash.py [--kills 20] [--seed 0] [--series 4]
        [--spikes 120] [--min-delay 1.5] [--max-delay 4]

A reference run (no kills) of ``aiops run --once`` replays a seeded CSV (``--series``
series, ``--spikes`` spikes each: a firing and a resolved notification per spike) to a
webhook receiver served by this process, and records the idempotency keys it got. Then
the same replay, from an empty state directory, is killed with SIGKILL ``--kills`` times
at random moments (uniform in ``[min-delay, max-delay]`` seconds after each start) and
restarted each time, until a run ends by itself. The webhook answers after 5 ms, so
kills land while requests are in flight too.

Printed: notifications expected, keys received, keys missing and unexpected (both must
be 0), re-deliveries (requests beyond the first per key: sent again after a kill between
sending and recording, each with the same key and the same document), and keys whose
re-delivery differed (must be 0). Exit status 1 if anything was lost or invented.

The harness is ``tests/crash_harness.py`` (``tests/test_outbox_crash.py`` runs it with
5 kills).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from crash_harness import SlowWebhook, crash_run, run_to_end, write_workdir


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--series", type=int, default=4)
    ap.add_argument("--spikes", type=int, default=120)
    ap.add_argument("--min-delay", type=float, default=1.5)
    ap.add_argument("--max-delay", type=float, default=4.0)
    args = ap.parse_args()
    shape = {"series": args.series, "spikes": args.spikes}
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        with SlowWebhook() as reference:
            t0 = time.monotonic()
            ref = run_to_end(write_workdir(root / "ref", reference.url + "/hook", **shape))
            ref_seconds = time.monotonic() - t0
            if ref.returncode != 0:
                print(ref.stderr[-3000:], file=sys.stderr)
                return 1
        expected = set(reference.keys)
        with SlowWebhook() as hook:
            config = write_workdir(root / "crash", hook.url + "/hook", **shape)
            t0 = time.monotonic()
            report = crash_run(
                config,
                args.kills,
                seed=args.seed,
                min_delay=args.min_delay,
                max_delay=args.max_delay,
            )
            crash_seconds = time.monotonic() - t0
        got = set(hook.keys)
        missing = expected - got
        extra = got - expected
        redelivered = sum(n - 1 for n in hook.keys.values())
        print(f"reference run: {len(expected)} notifications in {ref_seconds:.1f}s")
        print(
            f"crash run: {report.kills} SIGKILLs at {report.kill_times} s after each start, "
            f"{report.runs} starts, {crash_seconds:.1f}s; last run exit {report.final_rc}"
        )
        print(f"keys received {len(got)}, missing {len(missing)}, unexpected {len(extra)}")
        print(
            f"requests {len(hook.requests)}, re-deliveries {redelivered} "
            f"(keys sent more than once: {sum(n > 1 for n in hook.keys.values())}), "
            f"re-deliveries with a different document {len(hook.mismatched)}, "
            f"rejected requests {len(hook.errors)}"
        )
        if report.final_rc != 0:
            print(report.final_stderr[-3000:], file=sys.stderr)
        ok = not missing and not extra and not hook.mismatched and report.final_rc == 0
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
