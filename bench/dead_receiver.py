"""Scoring throughput with a receiver that never answers, against one that delivers nowhere.

Usage (from the repository root)::

    .venv/bin/python bench/dead_receiver.py [--pairs 40] [--lockstep 20] [--live]
        [--series 20] [--points 1500] [--every 50] [--switch-interval MS]

One daemon config (a file source replaying a seeded CSV of ``--series`` series x
``--points`` points with a spike every ``--every`` points, one rule, so about 1,200
notifications a run) is run in process, two ways (three with ``--live``):

- ``none``: the receiver has no ``*_configs``: nothing is queued or delivered - the
  baseline;
- ``dead``: a ``webhook_configs`` entry pointing at a TCP port that accepts connections
  and never answers: each attempt waits for its 250 ms time-out, and after 5 in a row
  the circuit breaker opens (60 s). A run's loop takes about as long as those 5
  attempts (0.5-3 s of wall time on a loaded 2-core machine), so it sees a receiver
  that has just died, the dearest phase: the worker attempts every 250 ms and every
  notification is written to the outbox. With the breaker open the worker does
  nothing until the half-open probe, and only the writes remain
  (``tests/test_outbox.py`` checks that);
- ``live`` (``--live``): a webhook to a local HTTP server, in a process of its own as a
  real receiver would be, that answers 200 at once.

The runs come in ``--pairs`` pairs, none then dead, then dead then none (ABBA...: a
drift of the machine's load over a pair cancels out over two), a garbage collection
before each run, and the next run waits until the previous one's threads have ended.
Each pair gives its own ratio ``dead / none`` of points per second, of runs seconds
apart. Timed: the data loop from the first poll until the source is exhausted
(``Daemon.step`` until ``exhausted``), not the shutdown. Measures of the loop's time:

- ``loop CPU`` (the primary figure): the CPU time of the data loop's own thread
  (``time.thread_time`` in it). What delivery adds to the loop's own work: the
  hand-over (``Delivery.submit``), the interpreter lock's hand-overs between threads,
  caches the other threads disturb. Not the other threads' CPU, printed on its own;
- ``wall - run queue``: wall time less the time the OS kept the loop's thread waiting,
  runnable, for a CPU (``/proc/self/task/<tid>/schedstat``), that is the loop's CPU
  plus the time it was *blocked*: on reads (from the page cache: about nothing) and on
  the interpreter lock while the outbox's threads held it. Equal to wall time on an
  idle machine;
- ``wall``: what a user sees, and on a shared machine mostly the other load (the
  outbox's threads' CPU competes for the cores too).

Then ``--lockstep`` rounds of a finer alternation, for the loop's CPU alone: a none
and a dead daemon, each in a process of its own (its own interpreter lock), take
*steps* in turn (the parent tells one to run ``Daemon.step`` once, waits for its
answer, then the other; who goes first alternates by round), so both loops meet the
machine's load of the same moments, milliseconds apart, and each round's ratio of the
two loops' CPU is free of most of the noise between runs. What it cannot see: the
dead daemon's threads mostly run while its loop waits for its turn, so the lock's
contention, which the pairs' ``wall - run queue`` and blocked time show, is left out.

Printed: points per second of each way (median and interquartile range over the runs)
by each measure; the pairs' ratios (median, interquartile range, range, a 95%
confidence interval of the median from the order statistics, how many pairs reach
0.95); the ratio of the per-batch minima (each of the loop's batches' least CPU
time over the runs of a way, summed: the other load only ever slows a batch down, so
this is the closest to the code's own cost); within each run, without the noise
between runs, the time the loop was blocked, its CPU in the hand-over (timed around
each call; with no receiver, the timing itself), the times it gave up its CPU to wait
(voluntary context switches: for the interpreter lock, each a few microseconds of its
CPU in the kernel and colder caches after), the cyclic garbage collector's passes on
its thread and their CPU time (a notification handed over stays alive until the
appender has encoded it, so the young generation fills sooner) and the CPU of the outbox's threads
(appender: keys, encoding, SQLite; worker; sender: the HTTP attempts). The shutdown
does not wait for the workers (no drain).
``--switch-interval`` sets ``sys.setswitchinterval`` (ms; Python's default 5) to see
how the lock's hand-overs weigh. Target: ``dead / none >= 0.95`` by the loop's CPU,
the median of the rounds' ratios, printed for the pairs and for the lockstep rounds;
shown with a margin when the median's confidence interval lies above 0.95 (one run's
CPU time swings by tens of percent on a loaded machine, so the interquartile range of
single pairs is wider than any margin; that of the lockstep rounds is not).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from aiops.alerting.notify import Notification
from aiops.config import load_config
from aiops.service.app import build_daemon


def write_data(root: Path, series: int, points: int, every: int) -> None:
    rng = np.random.default_rng(5)
    rows = ["timestamp,value,host"]
    for t in range(points):
        for s in range(series):
            v = 50.0 + rng.normal(0, 1) + (40.0 if t >= 60 and (t + 3 * s) % every == 0 else 0.0)
            rows.append(f"{1_700_000_000 + 60 * t},{v:.4f},h{s}")
    (root / "data.csv").write_text("\n".join(rows) + "\n")
    (root / "rules.yaml").write_text(
        """groups:
  - name: bench
    rules:
      - alert: Spike
        source: data
        selector: load
        detector: {type: robust_ewma, params: {warmup: 30, refractory: 0}}
        threshold: 0.999
"""
    )


def write_config(root: Path, name: str, receiver: str) -> Path:
    (root / f"alerting-{name}.yaml").write_text(
        f"""route:
  receiver: r
  group_by: [alertname, host]
  group_wait: 0s
  group_interval: 1m
receivers:
  - name: r
{receiver}"""
    )
    config = root / f"aiops-{name}.yaml"
    config.write_text(
        f"""sources:
  data: {{type: file, path: data.csv, metric: load, label_columns: [host], batch_size: 200}}
state: {{dir: state-{name}, checkpoint_interval: 1h}}
rule_files: [rules.yaml]
alerting_file: alerting-{name}.yaml
"""
    )
    return config


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def serve() -> None:
    """The live receiver (``--serve``): print the port, answer until stdin closes."""
    live = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    live.daemon_threads = True
    threading.Thread(target=live.serve_forever, daemon=True).start()
    print(live.server_address[1], flush=True)
    sys.stdin.read()


def _run_queue_wait() -> float:
    """Seconds this thread has waited, runnable, for a CPU (Linux schedstat; 0 elsewhere)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


#: The outbox's threads by the start of their names, as the report groups them.
THREADS = {"appender": "outbox-appender", "sender": "send-", "worker": "outbox-"}


def _threads_cpu() -> dict[int, tuple[str, float]]:
    """``native id -> (name, CPU seconds)`` of this process' threads (Linux; else empty)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[int, tuple[str, float]] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                out[int(tid)] = (names.get(int(tid), "?"), int(f.read().split()[0]) / 1e9)
        except (OSError, IndexError, ValueError):
            continue
    return out


def _switches() -> int:
    """Times this thread gave up its CPU waiting (for the interpreter lock, mostly)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class _LoopCollections:
    """The cyclic garbage collector's passes run on one thread, and their CPU seconds."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.count = 0
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if threading.get_ident() != self.thread:
            return
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.count += 1
            self.seconds += time.thread_time() - self._started


def _group(name: str) -> str | None:
    for group, prefix in THREADS.items():
        if name.startswith(prefix):
            return group
    return None


def run_once(config: Path, state: Path) -> tuple[dict[str, float], list[float], int, dict]:
    """The loop's seconds by each measure, its CPU seconds per batch, points, outcomes."""
    shutil.rmtree(state, ignore_errors=True)
    daemon = build_daemon(load_config(config), state_dir=state)
    daemon.start()
    handover = [0.0]
    submit = daemon.dispatcher.submit

    def timed(notifications: Sequence[Notification]) -> object:
        t = time.thread_time()
        try:
            return submit(notifications)
        finally:
            handover[0] += time.thread_time() - t

    daemon.dispatcher.submit = timed  # type: ignore[method-assign]
    steps: list[float] = []
    collections = _LoopCollections()
    gc.callbacks.append(collections)
    threads0 = _threads_cpu()
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    queued0, switches0 = _run_queue_wait(), _switches()
    while not daemon.exhausted:
        t = time.thread_time()
        daemon.step()
        steps.append(time.thread_time() - t)
    wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
    queued, switches = _run_queue_wait() - queued0, _switches() - switches0
    gc.callbacks.remove(collections)
    threads1 = _threads_cpu()
    points = sum(h.points for h in daemon.health.values())
    if hasattr(daemon.dispatcher, "drain_timeout"):
        daemon.dispatcher.drain_timeout = 0.0  # what is pending stays: nothing waits for it
    daemon.shutdown()
    seconds = {
        "loop CPU": cpu,
        "wall - run queue": wall - queued,
        "wall": wall,
        "blocked": max(0.0, wall - queued - cpu),
        "hand-over": handover[0],
        "switches": float(switches),
        "collections": float(collections.count),
        "collecting": collections.seconds,
    }
    seconds.update({g: 0.0 for g in THREADS})
    for tid, (name, run) in threads1.items():
        group = _group(name)
        if group is not None:
            seconds[group] += run - threads0.get(tid, (name, 0.0))[1]
    return seconds, steps, points, dict(daemon.dispatcher.results)


def _wait_for_threads(baseline: int, timeout: float = 5.0) -> None:
    """Until the previous run's threads (a sender in its time-out) have ended."""
    deadline = time.monotonic() + timeout
    while threading.active_count() > baseline and time.monotonic() < deadline:
        time.sleep(0.02)


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def _median_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval of the median: two order statistics.

    The ``k``-th smallest and largest of ``n`` values, ``k`` the largest such that
    ``P(Binomial(n, 1/2) < k) <= (1 - level) / 2``; NaN for fewer than 6 values (even
    the extremes would not reach 95%).

    >>> _median_ci([float(i) for i in range(1, 21)])
    (6.0, 15.0)
    >>> _median_ci([1.0, 2.0, 3.0])
    (nan, nan)
    """
    ordered = sorted(values)
    n = len(ordered)
    tail, k = 0.0, 0
    while True:
        nxt = tail + math.comb(n, k) / 2.0**n
        if nxt > (1.0 - level) / 2.0:
            break
        tail, k = nxt, k + 1
    if k == 0:
        return math.nan, math.nan
    return ordered[k - 1], ordered[n - k]


def _iqr(values: Sequence[float], fmt: str = ",.0f") -> str:
    """``median [q1-q3]``."""
    q1, q2, q3 = _quartiles(values)
    return f"{q2:{fmt}} [{q1:{fmt}}-{q3:{fmt}}]"


def child(config: Path, state: Path) -> None:
    """A lockstep daemon (``--child``): one run per ``r``, one ``Daemon.step`` per ``s``.

    Replies ``k`` once its daemon is started, to each ``s`` the step's loop CPU, wall
    and run-queue seconds and whether the source is exhausted, and after the last step
    the run's points. Before the first run, one untimed run (numba's caches, imports).
    """
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    run_once(config, state.with_name(state.name + "-warm"))
    while inp.read(1) == b"r":
        shutil.rmtree(state, ignore_errors=True)
        daemon = build_daemon(load_config(config), state_dir=state)
        daemon.start()
        gc.collect()
        out.write(b"k")
        out.flush()
        exhausted = False
        while not exhausted and inp.read(1) == b"s":
            t, w, q = time.thread_time(), time.perf_counter(), _run_queue_wait()
            daemon.step()
            t, w, q = time.thread_time() - t, time.perf_counter() - w, _run_queue_wait() - q
            exhausted = daemon.exhausted
            out.write(_STEP.pack(t, w, q, exhausted))
            out.flush()
        points = sum(h.points for h in daemon.health.values())
        if hasattr(daemon.dispatcher, "drain_timeout"):
            daemon.dispatcher.drain_timeout = 0.0
        daemon.shutdown()
        out.write(_POINTS.pack(points))
        out.flush()


#: A lockstep child's answer to a step: loop CPU, wall, run queue (s), exhausted.
_STEP = struct.Struct("<ddd?")
_POINTS = struct.Struct("<q")


def lockstep(configs: dict[str, Path], root: Path, rounds: int) -> list[dict[str, list[float]]]:
    """Per round, each way's loop CPU seconds per step, the two daemons stepping in turn.

    Each daemon runs in a process of its own (its own interpreter lock); the parent
    tells one to take a step, waits for its answer, then the other, so the two loops
    take turns on the same machine at the same moments, a few milliseconds apart, and
    the load of the moment weighs on both alike. Who goes first alternates by round.
    """
    names = ("none", "dead")
    procs = {
        name: subprocess.Popen(
            [sys.executable, __file__, "--child", str(configs[name]), str(root / f"lock-{name}")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for name in names
    }

    def send(name: str, cmd: bytes) -> None:
        stdin = procs[name].stdin
        assert stdin is not None
        stdin.write(cmd)
        stdin.flush()

    def read(name: str, size: int) -> bytes:
        stdout = procs[name].stdout
        assert stdout is not None
        data = stdout.read(size)
        if len(data) != size:
            raise RuntimeError(f"lockstep child {name} ended")
        return data

    results: list[dict[str, list[float]]] = []
    try:
        for r in range(rounds):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                send(name, b"r")
            for name in order:
                read(name, 1)
            cpu: dict[str, list[float]] = {name: [] for name in names}
            done: set[str] = set()
            while len(done) < len(names):
                for name in order:
                    if name in done:
                        continue
                    send(name, b"s")
                    t, _w, _q, exhausted = _STEP.unpack(read(name, _STEP.size))
                    cpu[name].append(t)
                    if exhausted:
                        done.add(name)
            for name in order:
                read(name, _POINTS.size)
            print(
                f"lockstep {r + 1}: loop CPU "
                + ", ".join(f"{name} {sum(cpu[name]):.3f}s" for name in names),
                file=sys.stderr,
            )
            results.append(cpu)
    finally:
        for proc in procs.values():
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in procs.values():
            proc.wait(30)
    return results


def _ratio_line(label: str, ratios: Sequence[float]) -> str:
    q1, q2, q3 = _quartiles(ratios)
    lo, hi = _median_ci(ratios)
    reach = sum(r >= 0.95 for r in ratios)
    return (
        f"  {label}: {q2:.3f} [{q1:.3f}-{q3:.3f}] ({min(ratios):.3f}-{max(ratios):.3f}),"
        f" median's 95% interval {lo:.3f}-{hi:.3f}, {reach} of {len(ratios)} >= 0.95"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--live", action="store_true", help="a healthy webhook in each pair too")
    ap.add_argument("--series", type=int, default=20)
    ap.add_argument("--points", type=int, default=1500)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--switch-interval", type=float, help="sys.setswitchinterval, in ms")
    ap.add_argument(
        "--lockstep", type=int, default=20, help="rounds of the two daemons stepping in turn"
    )
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve()
        return 0
    if args.child:
        child(*args.child)
        return 0
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval / 1000.0)

    # A port that accepts (the kernel completes the handshake) and never answers.
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(1024)
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}/hook"
    server = None
    ways: tuple[str, ...] = ("none", "dead")
    if args.live:
        ways += ("live",)
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        live_url = f"http://127.0.0.1:{int(server.stdout.readline())}/hook"

    measures = ("loop CPU", "wall - run queue", "wall")
    within = ("blocked", "hand-over", "switches", "collections", "collecting", *THREADS)
    seconds: dict[str, list[dict[str, float]]] = {k: [] for k in ways}
    steps: dict[str, list[list[float]]] = {k: [] for k in ways}
    points_run = 0
    try:
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            write_data(root, args.series, args.points, args.every)
            configs = {
                "none": write_config(root, "none", ""),
                "dead": write_config(
                    root, "dead", f"    webhook_configs: [{{url: '{dead_url}', timeout: 250ms}}]\n"
                ),
            }
            if args.live:
                configs["live"] = write_config(
                    root, "live", f"    webhook_configs: [{{url: '{live_url}'}}]\n"
                )
            run_once(configs["none"], root / "warm")  # numba caches, imports
            baseline = threading.active_count()
            for p in range(args.pairs):
                order = ways if p % 2 == 0 else ways[::-1]
                for name in order:
                    _wait_for_threads(baseline)
                    gc.collect()
                    s, st, points_run, results = run_once(configs[name], root / f"state-{name}")
                    seconds[name].append(s)
                    steps[name].append(st)
                    print(
                        f"pair {p + 1} {name:4s}: {points_run} points, "
                        + ", ".join(f"{s[m]:.3f}s {m}" for m in measures)
                        + ", outbox threads "
                        + " ".join(f"{g} {1000 * s[g]:.1f}ms" for g in THREADS)
                        + f"; outbox {results}",
                        file=sys.stderr,
                    )
            locked = lockstep(configs, root, args.lockstep) if args.lockstep else []
    finally:
        dead.close()
        if server is not None:
            assert server.stdin is not None
            server.stdin.close()
            server.wait(10)

    n = args.pairs
    switch = sys.getswitchinterval() * 1000
    print(
        f"{n} pairs ({' / '.join(ways)}, order alternating), {points_run:,} points a run, "
        f"switch interval {switch:g} ms"
    )
    print("points/s, median [interquartile range] of the runs:")
    for m in measures:
        print(
            f"  by {m}: "
            + ", ".join(f"{k} {_iqr([points_run / s[m] for s in seconds[k]])}" for k in ways)
        )
    target: dict[str, tuple[float, float]] = {}
    for other in ways[1:]:
        print(
            f"{other} / none, each pair's own ratio: median [interquartile range] (range),"
            " a 95% confidence interval of the median:"
        )
        for m in measures:
            ratios = [b[m] / a[m] for a, b in zip(seconds[other], seconds["none"], strict=True)]
            if other == "dead" and m == "loop CPU":
                target["pairs"] = (statistics.median(ratios), _median_ci(ratios)[0])
            print(_ratio_line(f"by {m}", ratios))
        if len({len(s) for k in ("none", other) for s in steps[k]}) == 1:
            least = {
                k: sum(min(batch) for batch in zip(*steps[k], strict=True)) for k in ("none", other)
            }
            print(
                f"  by the per-batch minima of the loop's CPU ({len(steps['none'][0])} batches):"
                f" {least['none'] / least[other]:.3f}"
            )
    if locked:
        print(
            f"lockstep, {len(locked)} rounds of the two daemons stepping in turn (processes of"
            " their own): dead / none by the loop's CPU, each round's own ratio:"
        )
        ratios = [sum(r["none"]) / sum(r["dead"]) for r in locked]
        target["lockstep"] = (statistics.median(ratios), _median_ci(ratios)[0])
        print(_ratio_line("by loop CPU", ratios))
        if len({len(r[k]) for r in locked for k in r}) == 1:
            least = {
                k: sum(min(batch) for batch in zip(*(r[k] for r in locked), strict=True))
                for k in ("none", "dead")
            }
            print(f"  by the per-batch minima: {least['none'] / least['dead']:.3f}")
    print("within each run, median [interquartile range] of the runs:")
    labels = {
        "blocked": "ms the loop was blocked (wall - run queue - CPU: the interpreter lock)",
        "hand-over": "ms of the loop's CPU in the hand-over (submit; none: the timing alone)",
        "switches": "times the loop gave up its CPU to wait (voluntary context switches)",
        "collections": "passes of the cyclic garbage collector on the loop's thread",
        "collecting": "ms of the loop's CPU in them",
        "appender": "ms of CPU of the outbox's appender thread (keys, encoding, SQLite)",
        "worker": "ms of CPU of its worker thread",
        "sender": "ms of CPU of its sender thread (the HTTP attempts)",
    }
    for w in within:
        scale = 1.0 if w in ("switches", "collections") else 1000.0
        print(
            f"  {labels[w]}: "
            + ", ".join(f"{k} {_iqr([scale * s[w] for s in seconds[k]], '.1f')}" for k in ways)
        )
    shares = {
        k: [100 * (s["blocked"] + s["hand-over"]) / s["wall - run queue"] for s in seconds[k]]
        for k in ways
    }
    print(
        "  blocked + hand-over, % of wall - run queue: "
        + ", ".join(f"{k} {_iqr(v, '.1f')}" for k, v in shares.items())
    )
    for how, (median, lo) in target.items():
        print(
            f"target: dead / none >= 0.95 by the loop's CPU, {how}: median {median:.3f} "
            f"({'met' if median >= 0.95 else 'missed'}), its 95% interval from {lo:.3f} "
            f"({'above 0.95: with a margin' if lo >= 0.95 else 'not shown with a margin'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
