"""Where a restore's CPU goes: the loading thread, the series keys, the rest, by phase.

Usage (from the repository root)::

    .venv/bin/python bench/restore_profile.py [--series 1000000] [--no-windows] [--runs 2]
        [--points 2]

Builds the state of ``bench/checkpoint_stall.py`` (one rule of the default ``ensemble``
detector, every series seen ``--points`` times: 2 by default; 60 fills every alert window
ring, as an hour of one-minute scrapes would, so that the rings' noise is compressed and
restored as in a running daemon), writes one generation, then restores it ``--runs``
times into a fresh engine, printing the whole restore's wall and CPU time (every
thread), ``Checkpointer.load``'s CPU, of it the loading thread's and the series keys'
(``decode_keys_text``), and ``Engine.load_state_dict``'s; the CPU the loading thread
did not spend is the threads that read and decompress the arrays. With ``--profile``,
cProfile's top functions on the loading thread for the last run.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import checkpoint_stall as cs

from aiops.state import rulestate
from aiops.state.checkpoint import Checkpointer, CheckpointSnapshot
from aiops.state.envelope import FileStateStore
from aiops.types import Batch, SeriesKey


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--no-windows", action="store_true", help="no alert window rings")
    ap.add_argument("--profile", action="store_true", help="cProfile the loading thread")
    ap.add_argument("--points", type=int, default=2, help="points each series sees first")
    args = ap.parse_args()
    n = args.series
    cs.WINDOWS = not args.no_windows
    engine = cs._engine("ensemble", n)
    keys = [SeriesKey("m", (("pod", f"p{i}"),)) for i in range(n)]
    idx = np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(0)
    for t in 60.0 * np.arange(max(args.points, 1)):
        batch = Batch(keys=keys, series=idx, timestamps=np.full(n, t), values=rng.normal(50, 1, n))
        engine.process("s", batch)
    del keys
    with tempfile.TemporaryDirectory(prefix="restore-profile-") as tmp:
        store = FileStateStore(Path(tmp))
        snap = CheckpointSnapshot(rules=engine.snapshot(), sources={"s": {"next": 1}})
        Checkpointer(store).write(snap)
        size = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
        print(
            f"{n:,} series x {args.points} points: checkpoint {size / 2**20:,.0f} MiB", flush=True
        )
        del engine, snap
        gc.collect()
        decode = rulestate.decode_keys_text
        spent = [0.0]

        def timed(data: bytes) -> Any:
            c = time.thread_time()
            out = decode(data)
            spent[0] += time.thread_time() - c
            return out

        rulestate.decode_keys_text = timed  # type: ignore[assignment]
        for run in range(args.runs):
            spent[0] = 0.0
            prof = cProfile.Profile() if args.profile and run == args.runs - 1 else None
            wall, cpu, thread = time.perf_counter(), time.process_time(), time.thread_time()
            if prof:
                prof.enable()
            loaded = Checkpointer(store).load()
            assert loaded is not None
            c_load, t_load = time.process_time(), time.thread_time()
            fresh = cs._engine("ensemble", n)
            fresh.load_state_dict(loaded.rules)
            if prof:
                prof.disable()
            assert not fresh.refused_states
            end = time.process_time()
            print(
                f"{n:,} series, run {run}: restore {time.perf_counter() - wall:.2f} s wall, "
                f"{end - cpu:.2f} s CPU; Checkpointer.load {c_load - cpu:.2f} s CPU (the "
                f"loading thread {t_load - thread:.2f} s, of it the keys {spent[0]:.2f} s), "
                f"Engine.load_state_dict {end - c_load:.2f} s",
                flush=True,
            )
            if prof:
                out = io.StringIO()
                pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
                print(out.getvalue())
            del loaded, fresh
            gc.collect()


if __name__ == "__main__":
    main()
