"""A cardinality flood through the engine, RSS measured as it goes (a child process).

Run: ``.venv/bin/python tests/reliability_flood.py KEYS [--cap N] [--batch N]``

Feeds ``KEYS`` distinct series, ``--batch`` new ones per batch, to an engine with one
rule (``max_series_per_rule`` = ``--cap``): half of the keys match the rule (past the
cap they are dropped and counted), half match no rule (``--all-match``: all match, to
measure the RSS per series of a rule). Every key is new, as in a pod
churn gone wrong or a label holding a request id. Prints one JSON object: the resident
set size (``/proc/self/statm``) after each tenth of the keys, the rule's live series,
dropped count and remembered unmatched keys, and the seconds taken.

Used by ``tests/test_reliability_flood.py`` (1,000,000 keys) and
``bench/cardinality_flood.py`` (10,000,000).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from aiops.pipeline.engine import Engine, RuleSpec
from aiops.types import Batch, SeriesKey


def rss_bytes() -> int:
    """This process' resident set size."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def flood(
    keys: int,
    cap: int,
    per_batch: int,
    all_match: bool = False,
    detector: str = "ewma_z",
    windows: bool = True,
) -> dict[str, object]:
    """Run the flood (``all_match``: every key matches the rule); what it measured.

    ``windows=False``: the rule keeps no alert window rings, as when no receiver draws
    charts.
    """
    spec = RuleSpec(
        group="flood",
        alert="Pods",
        source="s",
        matches=lambda k: k.name == "m",
        max_series=cap,
        detector_type=detector,
        windows=windows,
    )
    engine = Engine([spec])
    rt = engine.rules[spec.key]
    series = np.arange(per_batch, dtype=np.int64)
    values = np.ones(per_batch)
    marks: list[tuple[int, int]] = [(0, rss_bytes())]
    step = max(keys // 10, per_batch)
    start = time.perf_counter()
    done = 0
    while done < keys:
        # Built as SeriesKey.of would (labels sorted), without its sorting cost.
        batch_keys = [
            SeriesKey("m" if all_match or j % 2 else "x", (("pod", f"p{done + j}"),))
            for j in range(per_batch)
        ]
        stamps = np.full(per_batch, 60.0 * (1 + done // per_batch))
        engine.process("s", Batch(keys=batch_keys, series=series, timestamps=stamps, values=values))
        done += per_batch
        if done % step == 0:
            marks.append((done, rss_bytes()))
    registry = rt.registry
    return {
        "keys": done,
        "cap": cap,
        "detector": detector,
        "windows": windows,
        "rss": marks,
        "live": registry.live,
        "dropped": registry.dropped,
        "remembered": registry.unmatched,
        "seconds": round(time.perf_counter() - start, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("keys", type=int)
    parser.add_argument("--cap", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument(
        "--all-match", action="store_true", help="every key matches the rule (RSS per series)"
    )
    parser.add_argument("--detector", default="ewma_z")
    parser.add_argument("--no-windows", action="store_true", help="no alert window rings")
    args = parser.parse_args()
    doc = flood(args.keys, args.cap, args.batch, args.all_match, args.detector, not args.no_windows)
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
