"""Lines per second of the whole log path vs bare Drain3, same lines, same process.

The log path: a file read by the ``log_file`` source (``lines``: one message a line; and
``log_json``: one JSON event a line, decoded by the log_json decoder), each record
masked, mined and run through three log rules (new_template, template_rate,
error_burst) by the engine. The baseline: ``drain3.TemplateMiner().add_log_message`` on
the same messages, already in memory (Drain3's default config: no masking). Each runs
``--repeat`` times, alternating; the best run of each is reported, with its ratio and the
median of each round's ratio.
Times are CPU times of this process, so other work on a shared machine does not skew
the ratio; the heap is collected before each run. With ``--lockstep`` each round also
runs each format and Drain3 in turn, batch by batch (:func:`run_lockstep`): on a loaded
machine, whose load changes within a round's seconds, that ratio varies less.

    .venv/bin/python bench/log_path.py [--lines 200000] [--repeat 3] [--lockstep]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from drain3 import TemplateMiner

from aiops.config.models import RuleFile
from aiops.connectors.sources.logfile import LogFileSource
from aiops.logs.rules import LogEngine, log_rule_specs
from aiops.pipeline.engine import Engine

TEMPLATES = [
    "GET /api/v1/orders/{n} 200 in {ms}ms from {ip}",
    "POST /api/v1/payments {n} 201 in {ms}ms from {ip}",
    "user {u} logged in from {ip} session {hex}",
    "user {u} logged out after {s}s",
    "cache miss for key order:{n} took {ms}ms",
    "connection to db-{d}.internal:{port} established in {ms}ms",
    "worker {d} picked job {uuid} from queue payments",
    "job {uuid} finished in {s}.{d}s with {n} rows",
    "WARN slow query {ms}ms: SELECT * FROM orders WHERE id = {n}",
    "ERROR db connection reset by peer {ip}:{port} after {n} bytes",
    "ERROR payment gateway timeout after {ms}ms for order {n}",
    "INFO heartbeat ok seq={n} lag={ms}ms",
    "opened file /var/lib/app/segments/{n}.seg size {n} bytes",
    "GC pause {ms}ms heap {n}MB -> {n}MB",
    "request {hex} retry {d} of 5 to http://svc-{d}.local/api/{n}",
]


def make_lines(n: int, seed: int = 1) -> list[bytes]:
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(len(TEMPLATES)))
    choice = rng.choice(len(TEMPLATES), size=n, p=weights)
    out = []
    t0 = 1_700_000_000.0
    for i, k in enumerate(choice.tolist()):
        msg = TEMPLATES[k].format(
            n=int(rng.integers(1e6)),
            ms=int(rng.integers(1, 2000)),
            ip=f"10.{rng.integers(256)}.{rng.integers(256)}.{rng.integers(256)}",
            u=f"u{rng.integers(5000)}",
            hex=f"{int(rng.integers(2**62)):016x}",
            s=int(rng.integers(1, 9000)),
            d=int(rng.integers(10)),
            port=int(rng.integers(1024, 65535)),
            uuid="-".join(f"{int(rng.integers(16**w)):0{w}x}" for w in (8, 4, 4, 4, 12)),
        )
        ts = t0 + i * 0.01
        service = ("api", "payments", "worker")[i % 3]
        out.append(json.dumps({"message": msg, "timestamp": ts, "service": service}).encode())
    return out


RULES = {
    "groups": [
        {
            "name": "bench",
            "rules": [
                {"alert": "NewTemplate", "source": "logs", "log": {"type": "new_template"}},
                {"alert": "TemplateRate", "source": "logs", "log": {"type": "template_rate"}},
                {"alert": "ErrorBurst", "source": "logs", "log": {"type": "error_burst"}},
            ],
        }
    ]
}


def run_path(path: Path, fmt: str, n: int) -> float:
    settings = {"format_settings": {"label_fields": {"service": "service"}}}
    cfg = LogFileSource.Config(path=str(path), format=fmt, **(settings if fmt != "lines" else {}))
    source = LogFileSource("logs", cfg)
    engine = Engine([], logs=LogEngine(log_rule_specs(RuleFile.model_validate(RULES).groups)))
    started = time.process_time()
    done = 0
    while done < n:
        batch = source.next_batch()
        done += len(batch.logs) + len(batch.rejects)
        engine.process("logs", batch)
    elapsed = time.process_time() - started
    source.close()
    return n / elapsed


def run_lockstep(path: Path, fmt: str, messages: list[str]) -> tuple[float, float]:
    """The log path and bare Drain3 in turn, batch by batch: lines/s of each.

    After each batch of the source (5,000 lines), Drain3 takes the same messages; each
    side's CPU time is summed over its turns, so both meet the same moments' load on a
    shared machine (turns of a few tens of milliseconds, not runs of seconds).
    """
    settings = {"format_settings": {"label_fields": {"service": "service"}}}
    cfg = LogFileSource.Config(path=str(path), format=fmt, **(settings if fmt != "lines" else {}))
    source = LogFileSource("logs", cfg)
    engine = Engine([], logs=LogEngine(log_rule_specs(RuleFile.model_validate(RULES).groups)))
    miner = TemplateMiner()
    add = miner.add_log_message
    ours = theirs = 0.0
    done = 0
    n = len(messages)
    while done < n:
        started = time.process_time()
        batch = source.next_batch()
        engine.process("logs", batch)
        middle = time.process_time()
        k = len(batch.logs) + len(batch.rejects)
        for m in messages[done : done + k]:
            add(m)
        ours += middle - started
        theirs += time.process_time() - middle
        done += k
    source.close()
    return n / ours, n / theirs


def run_drain3(messages: list[str]) -> float:
    miner = TemplateMiner()
    started = time.process_time()
    for m in messages:
        miner.add_log_message(m)
    return len(messages) / (time.process_time() - started)


def main() -> None:
    logging.getLogger("drain3").setLevel(logging.ERROR)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--lockstep",
        action="store_true",
        help="also run each format and Drain3 in turn, batch by batch (see run_lockstep)",
    )
    args = ap.parse_args()
    lines = make_lines(args.lines)
    messages = [json.loads(x)["message"] for x in lines]
    folder = Path(tempfile.mkdtemp())
    text = folder / "app.log"
    text.write_text("".join(m + "\n" for m in messages))
    js = folder / "app.jsonl"
    js.write_bytes(b"".join(x + b"\n" for x in lines))
    runs: dict[str, list[float]] = {"drain3": [], "lines": [], "log_json": []}
    steps: dict[str, list[tuple[float, float]]] = {"lines": [], "log_json": []}
    for _ in range(args.repeat):
        # Each run starts from a collected heap: the garbage of the one before must not
        # cost the next (Python's cyclic collector runs when allocations pass a count).
        gc.collect()
        runs["drain3"].append(run_drain3(messages))
        gc.collect()
        runs["lines"].append(run_path(text, "lines", len(lines)))
        gc.collect()
        runs["log_json"].append(run_path(js, "log_json", len(lines)))
        if args.lockstep:
            for fmt, p in (("lines", text), ("log_json", js)):
                gc.collect()
                steps[fmt].append(run_lockstep(p, fmt, messages))
    shutil.rmtree(folder)
    best = {k: max(v) for k, v in runs.items()}
    b = best["drain3"]
    print(f"lines: {len(lines)}, templates: {len(TEMPLATES)}, best of {args.repeat}")
    print(f"bare Drain3 TemplateMiner.add_log_message (in memory): {b:,.0f} lines/s")
    for fmt in ("lines", "log_json"):
        o = best[fmt]
        rounds = [x / d for x, d in zip(runs[fmt], runs["drain3"], strict=True)]
        print(
            f"aiops log path, log_file source format {fmt} (read, decode, mask, mine, 3 rules): "
            f"{o:,.0f} lines/s = {o / b:.2f}x (median of the rounds' ratios "
            f"{statistics.median(rounds):.2f}x)"
        )
    for fmt in ("lines", "log_json") if args.lockstep else ():
        ratios = sorted(o / d for o, d in steps[fmt])
        ours = statistics.median(o for o, _ in steps[fmt])
        theirs = statistics.median(d for _, d in steps[fmt])
        print(
            f"in lockstep, format {fmt}: the log path {ours:,.0f}"
            f" lines/s, bare Drain3 {theirs:,.0f} lines/s"
            f" (medians); rounds' ratios {', '.join(f'{r:.2f}' for r in ratios)}x,"
            f" median {statistics.median(ratios):.2f}x"
        )


if __name__ == "__main__":
    main()
