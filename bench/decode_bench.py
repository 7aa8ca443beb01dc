"""Micro-benchmark of the record decoders on synthetic payloads.

Run: ``.venv/bin/python bench/decode_bench.py [--seconds 2] [--only influx_line ...]``

Each case decodes a fixed set of distinct records several times (within about
``--seconds``) and reports, for the fastest pass, records/s, items/s (points, or log
records for log formats) and the mean time per record, in CPU time of one core (one
Python thread). Payloads mimic what the producers write: one sample per record for
prometheus-kafka-adapter, one metric per record for Telegraf's Kafka output (and a
batched variant), one event per record for log shippers. Series repeat across records,
as in production, so key caches are warm after the first pass.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiops.connectors.formats import create_decoder
from aiops.pipeline.decoder import Decoder

T0 = 1_714_564_800
N_RECORDS = 2000
HOSTS = [f"web-{i:02d}" for i in range(50)]


@dataclass
class Case:
    name: str
    decoder: Decoder
    records: list[bytes]


def prometheus_json(rng: random.Random) -> list[bytes]:
    out = []
    for i in range(N_RECORDS):
        host = rng.choice(HOSTS)
        doc = {
            "timestamp": f"2024-05-01T12:{i % 60:02d}:{i % 60:02d}Z",
            "value": repr(rng.random() * 100),
            "name": "node_cpu_seconds_total",
            "labels": {
                "__name__": "node_cpu_seconds_total",
                "cpu": str(i % 8),
                "instance": f"{host}:9100",
                "job": "node",
                "mode": rng.choice(["user", "system", "idle", "iowait"]),
            },
        }
        out.append(json.dumps(doc).encode())
    return out


def _telegraf_line(rng: random.Random, i: int) -> str:
    host = rng.choice(HOSTS)
    ts = (T0 + i) * 10**9
    if i % 2:
        fields = ",".join(
            f"usage_{f}={rng.random() * 100!r}"
            for f in ("user", "system", "idle", "iowait", "irq", "softirq", "steal", "guest")
        )
        return f"cpu,cpu=cpu{i % 8},host={host} {fields} {ts}"
    return (
        f"mem,host={host} active={rng.randrange(10**10)}i,available={rng.randrange(10**10)}i,"
        f"available_percent={rng.random() * 100!r},used_percent={rng.random() * 100!r} {ts}"
    )


def influx_line(rng: random.Random) -> list[bytes]:
    return [(_telegraf_line(rng, i) + "\n").encode() for i in range(N_RECORDS)]


def influx_batched(rng: random.Random) -> list[bytes]:
    return [
        "".join(_telegraf_line(rng, i * 100 + j) + "\n" for j in range(100)).encode()
        for i in range(N_RECORDS // 20)
    ]


def influx_escaped(rng: random.Random) -> list[bytes]:
    return [
        (
            rf"http\ requests,path=/api/v1/q\,x,host={rng.choice(HOSTS)} "
            rf'count={i}i,latency_ms={rng.random()!r},msg="ok \"fine\"" {(T0 + i) * 10**9}'
            "\n"
        ).encode()
        for i in range(N_RECORDS)
    ]


def generic_json(rng: random.Random) -> list[bytes]:
    out = []
    for i in range(N_RECORDS // 10):
        items = [
            {
                "host": rng.choice(HOSTS),
                "ts": (T0 + i) * 1000 + j,
                "metrics": {"cpu": rng.random(), "mem": rng.random() * 1e9},
                "tags": {"dc": "fra1", "role": "web"},
            }
            for j in range(50)
        ]
        out.append(json.dumps({"batch": i, "items": items}).encode())
    return out


def log_lines(rng: random.Random) -> list[bytes]:
    return [
        "".join(
            f"10.0.{rng.randrange(256)}.{rng.randrange(256)} - - [01/May/2024:12:00:{j:02d} +0000] "
            f'"GET /api/items/{rng.randrange(10**6)} HTTP/1.1" {rng.choice([200, 200, 404, 500])} '
            f"{rng.randrange(10**5)}\n"
            for j in range(20)
        ).encode()
        for _ in range(N_RECORDS // 4)
    ]


def log_json_filebeat(rng: random.Random) -> list[bytes]:
    out = []
    for i in range(N_RECORDS):
        host = rng.choice(HOSTS)
        event = {
            "@timestamp": f"2024-05-01T12:00:{i % 60:02d}.{i % 1000:03d}Z",
            "@metadata": {"beat": "filebeat", "type": "_doc", "version": "8.13.2"},
            "message": f"Accepted publickey for deploy from 10.0.0.{i % 256} port {40000 + i}",
            "log": {"offset": i * 120, "file": {"path": "/var/log/auth.log"}},
            "input": {"type": "filestream"},
            "host": {"name": host, "hostname": host},
            "agent": {"type": "filebeat", "version": "8.13.2"},
            "ecs": {"version": "8.0.0"},
        }
        out.append(json.dumps(event).encode())
    return out


CASES: dict[str, tuple[str, dict[str, object], Callable[[random.Random], list[bytes]]]] = {
    "prometheus_json": ("prometheus_json", {}, prometheus_json),
    "influx_line": ("influx_line", {}, influx_line),
    "influx_line x100": ("influx_line", {}, influx_batched),
    "influx_line escaped": ("influx_line", {}, influx_escaped),
    "generic_json x50": (
        "generic_json",
        {
            "items_path": "items",
            "value_paths": {"host_cpu": "metrics.cpu", "host_mem": "metrics.mem"},
            "timestamp_path": "ts",
            "labels_path": "tags",
            "label_paths": ["host"],
        },
        generic_json,
    ),
    "log_lines x20": ("log_lines", {"labels": {"app": "nginx"}}, log_lines),
    "log_json filebeat": ("log_json", {"preset": "filebeat"}, log_json_filebeat),
}


def run(case: Case, seconds: float, repeats: int = 5) -> tuple[float, float, float]:
    """Best of ``repeats`` passes over the records (the least disturbed by other load)."""
    decode = case.decoder.decode
    for payload in case.records:  # warm caches; check the payloads are all good
        out = decode(payload, origin="bench", timestamp=float(T0))
        if out.rejects:
            raise AssertionError(f"{case.name}: unexpected reject {out.rejects[0]}")
    best = math.inf
    items = sum(
        (o.n_points + len(o.logs))
        for o in (decode(p, origin="bench", timestamp=float(T0)) for p in case.records)
    )
    budget = time.process_time() + seconds
    for _ in range(repeats):
        # CPU time of this process: steadier than wall time on a shared machine, and
        # the decoders do no I/O.
        start = time.process_time()
        for payload in case.records:
            decode(payload, origin="bench", timestamp=float(T0))
        best = min(best, time.process_time() - start)
        if time.process_time() > budget:
            break
    n = len(case.records)
    return n / best, items / best, best / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per case")
    parser.add_argument("--only", nargs="*", choices=list(CASES), help="cases to run")
    args = parser.parse_args()
    rng = random.Random(42)
    print(
        f"{'case':<22}{'bytes/rec':>10}{'items/rec':>10}{'records/s':>12}{'items/s':>12}"
        f"{'us/rec':>9}"
    )
    for name in args.only or CASES:
        fmt, config, make = CASES[name]
        case = Case(name, create_decoder(fmt, config), make(rng))
        per_rec = sum(map(len, case.records)) / len(case.records)
        rps, ips, us = run(case, args.seconds)
        print(f"{name:<22}{per_rec:>10.0f}{ips / rps:>10.1f}{rps:>12,.0f}{ips:>12,.0f}{us:>9.1f}")


if __name__ == "__main__":
    main()
