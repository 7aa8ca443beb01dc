"""Scoring throughput with a receiver that never answers, against one that delivers nowhere.

Usage (from the repository root)::

    .venv/bin/python bench/dead_receiver.py [--series 20] [--points 4000] [--every 50]
        [--rounds 3]

One daemon config (a file source replaying a seeded CSV of ``--series`` series x
``--points`` points with a spike every ``--every`` points, one rule, so thousands of
notifications) is run in process, three ways, alternating, ``--rounds`` times:

- ``none``: the receiver has no ``*_configs``: nothing is queued or delivered - the
  baseline;
- ``dead``: a ``webhook_configs`` entry pointing at a TCP port that accepts connections
  and never answers (each attempt waits for its 2 s time-out, then the circuit breaker
  opens);
- ``live``: a webhook to a local HTTP server that answers 200 at once.

Timed: the data loop from the first poll until the source is exhausted (``Daemon.step``
until ``exhausted``): wall time, and the CPU time of the data loop's own thread; not the
shutdown (which gives the workers time to send what is due). Printed: points per second
of each way by wall time (median over rounds) and the ratios ``dead / none`` and
``live / none`` from the same run. Target: ``dead / none >= 0.95``. The same ratios by
the CPU time of the whole process (data loop, outbox appender and workers) follow: on a
shared machine wall time swings with the other load, the CPU spent on the same points
does not.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

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


def run_once(config: Path, state: Path) -> tuple[float, float, float, int, dict[str, int]]:
    """Wall, data-loop CPU and process CPU seconds of the loop, points, outbox outcomes."""
    import shutil

    shutil.rmtree(state, ignore_errors=True)
    daemon = build_daemon(load_config(config), state_dir=state)
    daemon.start()
    wall0, cpu0, proc0 = time.perf_counter(), time.thread_time(), time.process_time()
    while not daemon.exhausted:
        daemon.step()
    wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
    proc = time.process_time() - proc0
    points = sum(h.points for h in daemon.health.values())
    daemon.shutdown()
    return wall, cpu, proc, points, dict(daemon.dispatcher.results)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", type=int, default=20)
    ap.add_argument("--points", type=int, default=4000)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    # A port that accepts (the kernel completes the handshake) and never answers.
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(1024)
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}/hook"
    live = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    live.daemon_threads = True
    threading.Thread(target=live.serve_forever, daemon=True).start()
    live_url = f"http://127.0.0.1:{live.server_address[1]}/hook"

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        write_data(root, args.series, args.points, args.every)
        configs = {
            "none": write_config(root, "none", ""),
            "dead": write_config(
                root, "dead", f"    webhook_configs: [{{url: '{dead_url}', timeout: 2s}}]\n"
            ),
            "live": write_config(root, "live", f"    webhook_configs: [{{url: '{live_url}'}}]\n"),
        }
        rates: dict[str, list[float]] = {k: [] for k in configs}
        proc_rates: dict[str, list[float]] = {k: [] for k in configs}
        run_once(configs["none"], root / "warm")  # numba caches, imports
        for r in range(args.rounds):
            for name, config in configs.items():
                wall, cpu, proc, points, results = run_once(config, root / f"state-{name}")
                rates[name].append(points / wall)
                proc_rates[name].append(points / proc)
                print(
                    f"round {r + 1} {name:5s}: {points} points in {wall:.2f}s wall "
                    f"({points / wall:,.0f}/s), {cpu:.2f}s data-loop CPU, {proc:.2f}s process "
                    f"CPU; outbox {results}",
                    file=sys.stderr,
                )
    dead.close()
    live.shutdown()
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(
        f"points/s (median of {args.rounds}, wall): "
        + ", ".join(f"{k} {v:,.0f}" for k, v in med.items())
    )
    print(
        f"dead / none = {med['dead'] / med['none']:.3f}  live / none = "
        f"{med['live'] / med['none']:.3f}  (target dead / none >= 0.95)"
    )
    # Wall time on a shared machine swings with its other load; the CPU the whole process
    # spends (data loop, appender, workers) for the same points does not.
    cpu_med = {k: statistics.median(v) for k, v in proc_rates.items()}
    print(
        "by process CPU: "
        + ", ".join(f"{k} {v:,.0f}/s" for k, v in cpu_med.items())
        + f"; dead / none = {cpu_med['dead'] / cpu_med['none']:.3f}  live / none = "
        f"{cpu_med['live'] / cpu_med['none']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
