"""Scoring throughput with a receiver that never answers, against one that delivers nowhere.

Usage (from the repository root)::

    .venv/bin/python bench/dead_receiver.py [--series 20] [--points 1500] [--every 50]
        [--rounds 21]

One daemon config (a file source replaying a seeded CSV of ``--series`` series x
``--points`` points with a spike every ``--every`` points, one rule, so thousands of
notifications) is run in process, three ways, ``--rounds`` times:

- ``none``: the receiver has no ``*_configs``: nothing is queued or delivered - the
  baseline;
- ``dead``: a ``webhook_configs`` entry pointing at a TCP port that accepts connections
  and never answers (each attempt waits for its 250 ms time-out and is retried with
  back-off until the circuit breaker opens, after 5 in a row);
- ``live``: a webhook to a local HTTP server, in a process of its own as a real
  receiver would be, that answers 200 at once.

Timed: the data loop from the first poll until the source is exhausted (``Daemon.step``
until ``exhausted``), not the shutdown (which gives the workers time to send what is
due). Three measures of the loop's time:

- ``wall``: what a user sees, and on a shared machine mostly the other load: one run's
  speed swings by tens of percent;
- ``wall - run queue``: wall time less the time the OS kept the loop's thread waiting,
  runnable, for a CPU (``/proc/self/task/<tid>/schedstat``), that is the loop's CPU
  time plus the time it was blocked: on reads, and on the interpreter lock while the
  outbox's appender or a worker held it (also while the OS had that thread, lock held,
  off the CPU: that is what a receiver costs the loop beyond its own CPU). Equal to
  wall time on an idle machine, and the least swayed by the other load;
- ``data-loop CPU``: the CPU time of the loop's own thread.

Within each run, without the noise between runs: the time the loop was *blocked*
(``wall - run queue - CPU``: about nothing with no receiver, reads coming from the page
cache; with one, mostly the outbox's threads holding the interpreter lock while the loop
wanted it), the loop's CPU time in the hand-over (``Delivery.submit``, timed around each
call; with no receiver the timing itself), and the two as a share of ``wall - run
queue``: what delivery costs the loop, of which the ratios are a noisier measure.

The ways are interleaved (each round runs all three, in an order that rotates, after a
garbage collection) and each round gives its own ratios ``dead / none`` and
``live / none``, of runs a few seconds apart. Printed: points per second of each way
(median and range over the rounds) by each measure, and the ratios (median and range
of the rounds' ratios), the ratios of each way's fastest round (the other load only
ever slows a run down, so the fastest is the closest to the code's own speed), and the
blocked time. Target: ``dead / none >= 0.95`` (the median of the rounds).
"""

from __future__ import annotations

import argparse
import gc
import socket
import statistics
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


def run_once(config: Path, state: Path) -> tuple[dict[str, float], float, int, dict[str, int]]:
    """The loop's seconds by each measure, process CPU seconds, points, outbox outcomes."""
    import shutil

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
    wall0, cpu0, proc0 = time.perf_counter(), time.thread_time(), time.process_time()
    queued0 = _run_queue_wait()
    while not daemon.exhausted:
        daemon.step()
    wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
    queued = _run_queue_wait() - queued0
    proc = time.process_time() - proc0
    points = sum(h.points for h in daemon.health.values())
    daemon.shutdown()
    seconds = {
        "wall": wall,
        "wall - run queue": wall - queued,
        "data-loop CPU": cpu,
        "blocked": max(0.0, wall - queued - cpu),
        "hand-over": handover[0],
    }
    return seconds, proc, points, dict(daemon.dispatcher.results)


def _range(values: list[float], fmt: str = ",.0f") -> str:
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"


def _ways(values: dict[str, list[float]], fmt: str) -> str:
    return ", ".join(f"{k} {_range(v, fmt)}" for k, v in values.items())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", type=int, default=20)
    ap.add_argument("--points", type=int, default=1500)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve()
        return 0

    # A port that accepts (the kernel completes the handshake) and never answers.
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(1024)
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}/hook"
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    live_url = f"http://127.0.0.1:{int(server.stdout.readline())}/hook"

    ways = ("none", "dead", "live")
    measures = ("wall", "wall - run queue", "data-loop CPU")
    rates: dict[str, dict[str, list[float]]] = {m: {k: [] for k in ways} for m in measures}
    blocked: dict[str, list[float]] = {k: [] for k in ways}
    handed: dict[str, list[float]] = {k: [] for k in ways}
    share: dict[str, list[float]] = {k: [] for k in ways}
    try:
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            write_data(root, args.series, args.points, args.every)
            configs = {
                "none": write_config(root, "none", ""),
                "dead": write_config(
                    root, "dead", f"    webhook_configs: [{{url: '{dead_url}', timeout: 250ms}}]\n"
                ),
                "live": write_config(
                    root, "live", f"    webhook_configs: [{{url: '{live_url}'}}]\n"
                ),
            }
            run_once(configs["none"], root / "warm")  # numba caches, imports
            for r in range(args.rounds):
                order = ways[r % 3 :] + ways[: r % 3]
                for name in order:
                    gc.collect()
                    seconds, proc, points, results = run_once(configs[name], root / f"state-{name}")
                    for m in measures:
                        rates[m][name].append(points / seconds[m])
                    blocked[name].append(seconds["blocked"] * 1000.0)
                    handed[name].append(seconds["hand-over"] * 1000.0)
                    share[name].append(
                        100.0
                        * (seconds["blocked"] + seconds["hand-over"])
                        / seconds["wall - run queue"]
                    )
                    print(
                        f"round {r + 1} {name:5s}: {points} points, "
                        + ", ".join(f"{seconds[m]:.2f}s {m}" for m in measures)
                        + f", {proc:.2f}s process CPU; outbox {results}",
                        file=sys.stderr,
                    )
    finally:
        dead.close()
        assert server.stdin is not None
        server.stdin.close()
        server.wait(10)
    print(f"{args.rounds} rounds, median [range] of points/s:")
    for m in measures:
        print(f"  by {m}: " + ", ".join(f"{k} {_range(v)}" for k, v in rates[m].items()))
    print("ratios to none (median [range] of the rounds' own):")
    for m in measures:
        ratios = {
            k: [a / b for a, b in zip(rates[m][k], rates[m]["none"], strict=True)]
            for k in ("dead", "live")
        }
        print(
            f"  by {m}: dead / none {_range(ratios['dead'], '.3f')}"
            f", live / none {_range(ratios['live'], '.3f')}"
        )
    print("ratios of each way's fastest round to none's:")
    for m in measures:
        best = {k: max(v) for k, v in rates[m].items()}
        print(
            f"  by {m}: dead / none {best['dead'] / best['none']:.3f}"
            f", live / none {best['live'] / best['none']:.3f}"
        )
    print("the data loop's time (median [range] of the runs):")
    print("  blocked (the interpreter lock, reads), ms: " + _ways(blocked, ".1f"))
    print("  CPU in the hand-over to the delivery (submit), ms: " + _ways(handed, ".1f"))
    print("  the two, % of wall - run queue: " + _ways(share, ".1f"))
    print("target: dead / none >= 0.95 (median of the rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
