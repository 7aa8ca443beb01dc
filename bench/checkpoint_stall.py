"""How long a checkpoint holds the data loop, by series count (today's whole-state save).

Run: ``.venv/bin/python bench/checkpoint_stall.py [--series 100000 300000] [--detector ewma_z]``

For each count, builds one rule with that many series (one point each, then a second
batch so every series has state), then times what ``Daemon.checkpoint`` does on the data
loop: ``Engine.state_dict()`` (collect), ``Checkpointer.save`` (serialize, seal, write
and fsync into a temporary state directory), and ``Checkpointer.load`` plus
``Engine.load_state_dict`` into a fresh engine (a restart's restore). Prints the
seconds of each step, the checkpoint's size, the RSS before it and the process' peak
RSS (the peak of every count so far: give the counts in increasing order).
Issue [H] asks for a stall of at most 100 ms and a restore of at most 3 s at 1,000,000
series.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from aiops.pipeline.engine import Engine, RuleSpec
from aiops.state.checkpoint import Checkpoint, Checkpointer
from aiops.state.envelope import FileStateStore
from aiops.types import Batch, SeriesKey


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def _engine(detector: str, n: int) -> Engine:
    spec = RuleSpec(
        group="g",
        alert="A",
        source="s",
        matches=lambda k: True,
        max_series=n,
        detector_type=detector,
    )
    return Engine([spec])


def measure(n: int, detector: str) -> None:
    engine = _engine(detector, n)
    keys = [SeriesKey("m", (("pod", f"p{i}"),)) for i in range(n)]
    series = np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(0)
    for t in (60.0, 120.0):
        batch = Batch(
            keys=keys, series=series, timestamps=np.full(n, t), values=rng.normal(50, 1, n)
        )
        engine.process("s", batch)
    rss0 = _rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        checkpointer = Checkpointer(FileStateStore(Path(tmp)))
        t0 = time.perf_counter()
        rules = engine.state_dict()
        t1 = time.perf_counter()
        size = checkpointer.save(Checkpoint(rules=rules, sources={}))
        t2 = time.perf_counter()
        del rules
        loaded = checkpointer.load()
        assert loaded is not None
        fresh = _engine(detector, n)
        fresh.load_state_dict(loaded.rules)
        t3 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{n:>9,} series ({detector}): collect {t1 - t0:.2f} s, save {t2 - t1:.2f} s "
        f"(stall {t2 - t0:.2f} s), {size / 2**20:.0f} MiB; restore {t3 - t2:.2f} s; "
        f"RSS {rss0:.0f} MiB before, process peak {peak:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, nargs="+", default=[100_000, 300_000])
    parser.add_argument("--detector", default="ewma_z")
    args = parser.parse_args()
    for n in args.series:
        measure(n, args.detector)


if __name__ == "__main__":
    main()
