"""`aiops score` of one long series: end to end, and stage by stage in process.

Usage (from the repository root)::

    .venv/bin/python bench/score_long.py [--points 240000] [--detector NAME]
        [--baseline robust_ewma] [--time-format iso|unix] [--threshold T] [--repeat 3]
        [--code-before DIR]

Writes a seeded ``timestamp,value`` CSV (1-minute steps, a daily cycle, Gaussian noise,
a spike every few days, one empty value in a thousand) to a temporary folder, then:

- end to end, as a user runs it (interpreter start, imports and numba's cached kernels
  included): ``aiops score CSV --out OUT`` for ``--detector`` (default: the project's
  default detector) and for the baseline (``robust_ewma``); ``aiops backtest`` of a
  config whose file source replays the same CSV into one rule on ``--detector``; and
  for reference, the interpreter's own start (``python -c pass``), ``import numpy``,
  ``import numba``, numba's first compiled call (loading a cached kernel readies numba's
  compiler: the floor of any command that runs one) and the bare start-up
  (``python -c "import aiops.cli, aiops.pipeline.scoring"``); with ``--code-before DIR``
  (a checkout of an earlier commit, e.g. ``git worktree add /tmp/before <commit>``) the
  same ``aiops score`` of that code (run in DIR with ``PYTHONPATH=DIR``; the detectors
  still come from this checkout's editable install), each run alternating with this
  code's, so that both see the same load;
- in process: reading the CSV (``read_series_csv``), scoring (``score_series``) and
  writing the output (``write_scored_csv``), each timed on its own. Scoring is timed for
  the detector, the baseline and ``Trivial``, a detector defined only here whose score is
  one numpy expression: its time is the engine around a detector (series registry, hit
  window, alert state machine, alert objects), so that part can be judged apart from
  any detector's own cost. ``detector alone`` is the detector's ``score`` over the same
  chunks without the engine.

Every run uses one threshold (``--threshold``, default: the project's default), for the
subprocesses too.

Every stage is run ``--repeat`` times and the best time is printed, in seconds; for the
subprocesses also their CPU time (user + system), which moves less than the wall time
when other work shares the cores: the best and the median wall and CPU time, and each
run's ``wall/CPU``. The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from aiops.pipeline.detector import DEFAULT_THRESHOLD, Detector
from aiops.pipeline.engine import RuleRuntime, RuleSpec
from aiops.pipeline.scoring import DEFAULT_DETECTOR, read_series_csv, score_series, write_scored_csv
from aiops.registry import DETECTORS
from aiops.types import Batch, FloatArray, IntArray, SeriesKey

START = 1_700_000_000  # 2023-11-14T22:13:20Z
STEP = 60.0
DAY = 86_400.0
CHUNK = 4096  # score_series' default chunk


def write_csv(path: Path, n: int, *, seed: int = 0, time_format: str = "iso") -> None:
    """The benchmark series: level 50, daily amplitude 10, noise 1, spikes of +40."""
    rng = np.random.default_rng(seed)
    t = START + STEP * np.arange(n)
    v = 50.0 + 10.0 * np.sin(2 * np.pi * t / DAY) + rng.normal(0.0, 1.0, n)
    v[rng.choice(n, size=max(1, n // 5000), replace=False)] += 40.0
    text_v = np.char.mod("%.4f", v)
    text_v[rng.random(n) < 1e-3] = ""
    if time_format == "iso":
        text_t = np.datetime_as_string(t.astype("datetime64[s]"), unit="s")
        text_t = np.char.add(text_t, "Z")
    else:
        text_t = t.astype(np.int64).astype(str)
    lines = np.char.add(np.char.add(text_t, ","), text_v)
    path.write_text("timestamp,value\n" + "\n".join(lines.tolist()) + "\n", encoding="utf-8")


class Trivial(Detector):
    """Distance from the benchmark's known daily cycle in units of 30, clipped to [0, 1].

    No state. Only the spikes (+40) reach 1.0, so alerts fire and resolve a few dozen
    times: the engine's transition path runs, not only its quiet path.
    """

    name = "trivial"

    def score(self, idx: IntArray, timestamps: FloatArray, values: FloatArray) -> FloatArray:
        """One numpy expression over the batch."""
        cycle = 50.0 + 10.0 * np.sin(2 * np.pi * timestamps / DAY)
        s = np.clip(np.abs(values - cycle) / 30.0, 0.0, 1.0)
        out: FloatArray = np.where(np.isfinite(s), s, 0.0)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Nothing is learned."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""

    @property
    def n_series(self) -> int:
        """Any series."""
        return 0


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """The best wall time of ``repeat`` calls, and the last call's result."""
    times, out = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return min(times), out


def run_engine(detector: Detector, ts: FloatArray, vs: FloatArray, threshold: float) -> int:
    """``score_series``' loop with a given detector instance; returns the alert count."""
    spec = RuleSpec(group="b", alert="b", source="b", matches=lambda k: True, threshold=threshold)
    rt = RuleRuntime(spec)
    rt.detector = detector
    key = [SeriesKey.of("value")]
    fired = 0
    for lo in range(0, len(vs), CHUNK):
        hi = min(len(vs), lo + CHUNK)
        batch = Batch(
            keys=key,
            series=np.zeros(hi - lo, dtype=np.int64),
            timestamps=ts[lo:hi],
            values=vs[lo:hi],
        )
        fired += int(rt.process(batch).fired.sum())
    return fired


def detector_alone(name: str, ts: FloatArray, vs: FloatArray, threshold: float) -> None:
    """The detector's own ``score`` over the same chunks, without the engine."""
    det = DETECTORS.create(name, learn_below=threshold)
    idx = np.zeros(CHUNK, dtype=np.int64)
    for lo in range(0, len(vs), CHUNK):
        hi = min(len(vs), lo + CHUNK)
        det.score(idx[: hi - lo], ts[lo:hi], vs[lo:hi])


Runs = list[tuple[float, float]]  # (wall, CPU) seconds of each run of a child


def run_once(cmd: list[str], tree: Path | None = None) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run of ``cmd``.

    With ``tree``, in that folder and with it first on ``PYTHONPATH``, so that ``python -m
    aiops.cli`` runs that checkout's ``aiops`` (``-m`` puts the working folder first).
    CPU time counts only the child's own work, so it moves less than the wall time when
    other jobs share the machine's cores.
    """
    env = None
    if tree is not None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=tree)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def run_child(cmd: list[str], repeat: int) -> Runs:
    """``(wall, CPU)`` of each of ``repeat`` runs of ``cmd``."""
    return [run_once(cmd) for _ in range(repeat)]


def aiops_cmd(args: list[str]) -> list[str]:
    """``aiops ARGS`` as a subprocess command."""
    return [sys.executable, "-m", "aiops.cli", *args]


def subprocess_time(args: list[str], repeat: int) -> Runs:
    """``(wall, CPU)`` of each run of ``aiops ARGS`` in a subprocess."""
    return run_child(aiops_cmd(args), repeat)


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def backtest_config(folder: Path, csv_path: Path, detector: str, threshold: float) -> Path:
    """A config replaying ``csv_path`` through one rule; JSON is YAML."""
    rule = {"alert": "Long", "source": "rec", "selector": "value", "threshold": threshold}
    rule["detector"] = {"type": detector}
    (folder / "rules.yaml").write_text(json.dumps({"groups": [{"name": "g", "rules": [rule]}]}))
    config = {
        "sources": {"rec": {"type": "file", "path": str(csv_path), "metric": "value"}},
        "state": {"dir": str(folder / "state")},
        "rule_files": ["rules.yaml"],
    }
    path = folder / "aiops.yaml"
    path.write_text(json.dumps(config))
    return path


def main() -> None:
    """Generate the series, run every stage, print seconds per stage."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=240_000)
    ap.add_argument("--detector", default=DEFAULT_DETECTOR)
    ap.add_argument("--baseline", default="robust_ewma")
    ap.add_argument("--time-format", choices=["iso", "unix"], default="iso")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--code-before",
        type=Path,
        default=None,
        metavar="DIR",
        help="a checkout of earlier code: its aiops score is run beside this code's",
    )
    args = ap.parse_args()
    names = list(dict.fromkeys([args.detector, args.baseline]))

    rows: list[tuple[Any, ...]] = []  # label, wall seconds and, for a child, its runs
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "series.csv", Path(tmp) / "scored.csv"
        write_csv(src, args.points, seed=args.seed, time_format=args.time_format)
        size = src.stat().st_size / 1e6
        print(f"{args.points:,} points, {args.time_format} timestamps, {size:.1f} MB")
        print(f"threshold {args.threshold}, {args.repeat} runs each, seconds; load {load()}")

        def score_args(name: str) -> list[str]:
            out = ["--out", str(dst), "--threshold", str(args.threshold)]
            return ["score", str(src), *out, "--detector", name]

        config = backtest_config(Path(tmp), src, args.detector, args.threshold)
        backtest = ["backtest", "--config", str(config), "--no-progress"]
        # Warm-up: numba compiles (or loads its cache) and the page cache holds the file.
        for name in names:
            subprocess_time(score_args(name), 1)
        subprocess_time(backtest, 1)
        before = args.code_before.resolve() if args.code_before else None
        if before is not None:
            run_once(aiops_cmd(score_args(args.detector)), before)

        py = sys.executable
        first_call = (
            "import numpy as np; from aiops.pipeline import csvscan; "
            "csvscan.scan(np.zeros(1, np.uint8))"
        )
        references = [
            ("start: python -c pass", [py, "-c", "pass"]),
            ("start: python -c 'import numpy'", [py, "-c", "import numpy"]),
            ("start: python -c 'import numba'", [py, "-c", "import numba"]),
            ("start: numba's first compiled call (a cached kernel)", [py, "-c", first_call]),
            (
                "start: python -c 'import aiops.cli, aiops.pipeline.scoring'",
                [py, "-c", "import aiops.cli, aiops.pipeline.scoring"],
            ),
        ]
        for label, cmd in references:
            rows.append((label, None, run_child(cmd, args.repeat)))
        for name in names:
            label = f"end to end: aiops score --detector {name}"
            if before is None or name != args.detector:
                rows.append((label, None, subprocess_time(score_args(name), args.repeat)))
                continue
            now: Runs = []
            then: Runs = []
            for _ in range(args.repeat):  # alternating: both see the same load
                now.append(run_once(aiops_cmd(score_args(name))))
                then.append(run_once(aiops_cmd(score_args(name)), before))
            rows.append((label, None, now))
            rows.append((f"{label}, code before ({args.code_before})", None, then))
        label = f"end to end: aiops backtest, one file rule on {args.detector}"
        rows.append((label, None, subprocess_time(backtest, args.repeat)))

        t, (raw, ts, vs) = best(lambda: read_series_csv(src), args.repeat)
        rows.append(("in process: read_series_csv", t))
        for name in names:  # numba loads its kernels once per process
            score_series(ts[:500], vs[:500], detector=name)
        run_engine(Trivial(), ts[:500], vs[:500], args.threshold)
        scored = None
        for name in names:
            t_det = best(lambda name=name: detector_alone(name, ts, vs, args.threshold), 1)[0]
            t, out = best(
                lambda name=name: score_series(ts, vs, detector=name, threshold=args.threshold),
                args.repeat,
            )
            scored = out if scored is None else scored
            rows.append((f"in process: score_series {name} ({int(out.alerts.sum())} alerts)", t))
            rows.append((f"in process:   {name} detector alone", t_det))
        t, fired = best(lambda: run_engine(Trivial(), ts, vs, args.threshold), args.repeat)
        rows.append((f"in process: score_series' loop, Trivial detector ({fired} alerts)", t))
        assert scored is not None
        t = best(lambda: write_scored_csv(dst, raw, scored), args.repeat)[0]
        rows.append(("in process: write_scored_csv", t))

    width = max(len(row[0]) for row in rows)
    head = f"{'':<{width}}  {'wall':>7}  {'median':>7}  {'CPU':>7}  {'median':>7}  runs wall/CPU"
    print(head)
    for label, seconds, *runs in rows:
        if not runs:
            print(f"{label:<{width}}  {seconds:7.3f}")
            continue
        walls, cpus = zip(*runs[0], strict=True)
        each = " ".join(f"{w:.2f}/{c:.2f}" for w, c in runs[0])
        print(
            f"{label:<{width}}  {min(walls):7.3f}  {statistics.median(walls):7.3f}"
            f"  {min(cpus):7.3f}  {statistics.median(cpus):7.3f}  {each}"
        )
    print(f"load {load()}")


if __name__ == "__main__":
    main()
