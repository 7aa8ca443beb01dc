"""KafkaSource: config, positions, and against a real (Tansu) broker: every format, dead
letters, the whole daemon with restarts, broker outages, and group rebalances.

Tansu limits these tests live with (see tests/servers.py): memory storage only, so a
broker restart loses topics and committed offsets; a fetch beyond the end of a
partition returns no records instead of OFFSET_OUT_OF_RANGE (so the reset of a stale
position by ``start_from`` cannot be shown against it); ListOffsets(latest) answers the
base offset of the last record batch + 1, so ``start_from: latest`` is only exact when
the last batch held one record.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from servers import KafkaBroker, unique

from aiops.alerting.routing import Dispatcher, RouteNode, Router
from aiops.connectors.kafka_common import (
    KafkaClientConfig,
    SecretError,
    client_options,
)
from aiops.connectors.sources.kafka import OUTAGE_GRACE, KafkaSource
from aiops.connectors.sources.simulator import SimulatorSource
from aiops.pipeline.engine import Engine
from aiops.pipeline.source import SourceError
from aiops.registry import NOTIFIERS, SOURCES
from aiops.service.daemon import Daemon
from aiops.simulate import Record, encode_batch
from aiops.state.checkpoint import Checkpointer
from aiops.state.envelope import FileStateStore, MemoryStateStore
from aiops.types import Batch

REPO = Path(__file__).resolve().parents[1]
AIOPS = [sys.executable, "-m", "aiops.cli"]

# Group settings from DESIGN.md 9: with the library defaults a join takes ~20 s.
FAST = {
    "session_timeout": "6s",
    "max_poll_interval": "10s",
    "request_timeout": "8s",
    "reconnect_backoff_max": "1s",
    "connect_timeout": "5s",
}


def config(broker: KafkaBroker | str, topics: list[str], fmt: str, **kw: Any) -> Any:
    bootstrap = broker if isinstance(broker, str) else broker.bootstrap
    settings = {
        "bootstrap_servers": bootstrap,
        "topics": topics,
        "format": fmt,
        "group_id": unique("g"),
        "start_from": "earliest",
        **FAST,
        **kw,
    }
    return KafkaSource.Config(**settings)


def produce(broker: KafkaBroker, topic: str, records: Iterable[Record | tuple[Any, ...]]) -> int:
    """Send records with their keys and timestamps; return how many."""
    producer = broker.producer(linger_ms=5)
    futures = []
    try:
        for r in records:
            if isinstance(r, Record):
                futures.append(
                    producer.send(topic, value=r.value, key=r.key, timestamp_ms=r.timestamp_ms)
                )
            else:
                value, key, headers = (*r, None, None)[:3]
                futures.append(producer.send(topic, value=value, key=key, headers=headers))
        producer.flush(timeout=30)
        for f in futures:
            f.get(timeout=30)
    finally:
        producer.close(timeout=5)
    return len(futures)


def simulated(fmt: str, **settings: Any) -> tuple[list[Record], list[Batch]]:
    """Records of a finite simulator run in ``fmt``, and the simulator's own batches."""
    cfg = SimulatorSource.Config(
        **{"hosts": 1, "duration": "30m", "logs": fmt.startswith("log"), **settings}
    )
    src = SimulatorSource("sim", cfg)
    batches: list[Batch] = []
    while not src.exhausted:
        batches.append(src.next_batch())
    records = [r for b in batches for r in encode_batch(b, fmt)]
    return records, batches


def busy_seconds() -> float:
    """Seconds this process's threads have run or waited for a CPU, summed (Linux; else 0).

    From ``/proc/self/task/*/schedstat``. Over an interval, wall time minus this is
    time the whole process spent waiting on something outside it (a broker, a timer).
    """
    total = 0.0
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return 0.0
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                run, wait, _ = f.read().split()
        except (OSError, ValueError):  # the thread ended
            continue
        total += (int(run) + int(wait)) / 1e9
    return total


def timed_next_batch(src: KafkaSource) -> Batch:
    """``src.next_batch()``, failing the test if it waited on anything for 1 s.

    A call over 1 s of wall time fails unless the process was busy (running, or
    runnable waiting for a CPU on a loaded machine) for all but 0.5 s of it: a wait on
    the broker or the producer leaves the process idle and fails; decoding a batch
    while other agents hold the CPUs does not.
    """
    b0, t0 = busy_seconds(), time.monotonic()
    batch = src.next_batch()
    wall = time.monotonic() - t0
    if wall >= 1.0:
        idle = wall - (busy_seconds() - b0)
        assert idle < 0.5, f"next_batch blocked: {wall:.2f}s, {idle:.2f}s of it idle"
    return batch


def drain(
    sources: dict[str, KafkaSource],
    done: Callable[[str, list[Batch]], bool],
    timeout: float = 30.0,
) -> dict[str, list[Batch]]:
    """Poll the sources round-robin (their group joins overlap) until each is done."""
    got: dict[str, list[Batch]] = {name: [] for name in sources}
    deadline = time.monotonic() + timeout
    pending = set(sources)
    while pending:
        assert time.monotonic() < deadline, str({n: n_items(got[n]) for n in got})
        for name in list(pending):
            batch = timed_next_batch(sources[name])
            if batch:
                got[name].append(batch)
            if done(name, got[name]):
                pending.discard(name)
    return got


def n_items(batches: list[Batch]) -> int:
    return sum(b.n_points + len(b.logs) + len(b.rejects) for b in batches)


def per_series(batches: Iterable[Batch]) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for b in batches:
        for k, t, v in b.points():
            out[str(k)].append((t, v))
    return dict(out)


def per_stream(batches: Iterable[Batch]) -> dict[tuple[tuple[str, str], ...], list[Any]]:
    out: dict[tuple[tuple[str, str], ...], list[Any]] = defaultdict(list)
    for b in batches:
        for r in b.logs:
            out[r.labels].append((round(r.timestamp * 1000), r.message))
    return dict(out)


# --- config and positions, no broker ---------------------------------------------------


def test_registered_under_kafka():
    assert SOURCES.get("kafka") is KafkaSource
    assert NOTIFIERS.get("kafka").__name__ == "KafkaNotifier"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"format": "csv"}, 'unknown format "csv"; valid formats: generic_json, influx_line'),
        (
            {"format": "influx_line", "format_options": {"precision": "sec"}},
            "invalid options for format influx_line: precision: Input should be",
        ),
        (
            {"format": "generic_json", "format_options": {}},
            "invalid options for format generic_json: generic_json: Value error, set "
            "exactly one of value_path and value_paths",
        ),
        ({"topics": ["a b"]}, "invalid topic name 'a b'"),
        ({"topics": []}, "List should have at least 1 item"),
        ({"bootstrap_servers": "kafka"}, "bootstrap servers must be host:port, got 'kafka'"),
        ({"poll_timeout": "10s"}, "less than or equal to 5"),
        ({"poll_timeout": "0s"}, "must be a duration greater than 0s"),
        ({"sasl_password": "hunter2"}, 'secret "sasl_password" must not be written in YAML'),
        ({"sasl_mechanism": "PLAIN"}, "sasl_mechanism needs security_protocol SASL_PLAINTEXT"),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256"},
            "SASL needs sasl_username; SASL needs exactly one of sasl_password_env",
        ),
        ({"ssl_cafile": "/ca.pem"}, "ssl_cafile need security_protocol SSL or SASL_SSL"),
        ({"start_from": "beginning"}, "Input should be 'earliest' or 'latest'"),
        ({"group": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_config_errors_name_the_problem(settings, message):
    base = {"bootstrap_servers": "k:9092", "topics": ["m"], "format": "prometheus_json"}
    with pytest.raises(ValidationError) as info:
        KafkaSource.Config(**{**base, **settings})
    assert message in str(info.value)


def test_config_accepts_strings_for_lists_and_durations():
    c = KafkaSource.Config(
        bootstrap_servers="k1:9092, [::1]:9093",
        topics="metrics",
        format="log_json",
        format_options={"preset": "vector"},
        poll_timeout="250ms",
        session_timeout=10,
    )
    assert c.bootstrap_servers == ["k1:9092", "[::1]:9093"]
    assert c.topics == ["metrics"]
    assert (c.poll_timeout, c.session_timeout, c.max_poll_interval) == (0.25, 10.0, 300.0)


def test_client_options_resolve_secrets_only_when_connecting(tmp_path, monkeypatch):
    key_pass = tmp_path / "pass"
    key_pass.write_text("  s3cret\n")
    c = KafkaClientConfig(
        bootstrap_servers="k:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="aiops",
        sasl_password_env="AIOPS_TEST_KAFKA_PW",
        ssl_cafile="/etc/ca.pem",
        ssl_certfile="/etc/cert.pem",
        ssl_keyfile="/etc/key.pem",
        ssl_password_file=str(key_pass),
        ssl_check_hostname=False,
    )
    monkeypatch.delenv("AIOPS_TEST_KAFKA_PW", raising=False)
    with pytest.raises(SecretError, match="AIOPS_TEST_KAFKA_PW is not set"):
        client_options(c)
    monkeypatch.setenv("AIOPS_TEST_KAFKA_PW", "pw")
    opts = client_options(c)
    assert opts["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (opts["sasl_plain_username"], opts["sasl_plain_password"]) == ("aiops", "pw")
    assert (opts["ssl_cafile"], opts["ssl_certfile"], opts["ssl_keyfile"]) == (
        "/etc/ca.pem",
        "/etc/cert.pem",
        "/etc/key.pem",
    )
    assert opts["ssl_password"] == "s3cret"
    assert opts["ssl_check_hostname"] is False
    assert opts["security_protocol"] == "SASL_SSL"
    key_pass.unlink()
    with pytest.raises(SecretError, match="cannot read"):
        client_options(c)


def test_resume_positions_are_validated_and_unconfigured_topics_dropped():
    cfg = config("k:9092", ["a", "b.c"], "prometheus_json")
    src = KafkaSource("k", cfg, resume={"a:0": 5, "b.c:2": 0, "gone:1": 9})
    assert src.snapshot() == {"a:0": 5, "b.c:2": 0}
    for bad in ({"a": 1}, {"a:x": 1}, {"a:0": -1}, {"a:0": "5"}, {"a:0": True}, ["a:0"]):
        with pytest.raises(ValueError, match="invalid kafka resume state"):
            KafkaSource("k", cfg, resume=bad)  # type: ignore[arg-type]


def test_unreachable_broker_is_a_source_error_not_a_hang():
    from servers import free_port

    cfg = config(f"127.0.0.1:{free_port()}", ["m"], "prometheus_json", connect_timeout="1s")
    src = KafkaSource("k", cfg)
    deadline = time.monotonic() + 10
    with pytest.raises(SourceError, match="cannot connect to Kafka"):  # noqa: PT012
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            assert src.next_batch().n_points == 0
            assert time.monotonic() - t0 < 0.5
            time.sleep(0.05)
    src.close()


# --- against the broker ------------------------------------------------------------------


GENERIC = [
    {"readings": [{"sensor": "temp", "v": 21.5 + i, "ts": 1_700_000_000 + i, "site": "lab"}]}
    for i in range(50)
]


@pytest.mark.servers
def test_every_format_reads_back_what_was_produced(kafka_broker):
    formats = ["prometheus_json", "influx_line", "log_lines", "log_json"]
    sent: dict[str, list[Batch]] = {}
    sources: dict[str, KafkaSource] = {}
    want: dict[str, int] = {}
    options = {
        "log_lines": {"labels": {"app": "sim"}},
        "log_json": {"label_fields": ["host", "service"]},
    }
    for fmt in formats:
        records, batches = simulated(fmt)
        topic = unique(fmt.replace("_", "-"))
        kafka_broker.create_topic(topic, 3)
        produce(kafka_broker, topic, records)
        sent[fmt] = batches
        # The log formats carry the logs of a run with logs on; the metric ones its points.
        want[fmt] = sum(len(b.logs) if fmt.startswith("log") else b.n_points for b in batches)
        sources[fmt] = KafkaSource(
            fmt, config(kafka_broker, [topic], fmt, format_options=options.get(fmt, {}))
        )
    topic = unique("generic")
    kafka_broker.create_topic(topic, 1)
    produce(kafka_broker, topic, [(json.dumps(doc).encode(),) for doc in GENERIC])
    want["generic_json"] = len(GENERIC)
    sources["generic_json"] = KafkaSource(
        "generic",
        config(
            kafka_broker,
            [topic],
            "generic_json",
            format_options={
                "items_path": "readings",
                "name_path": "sensor",
                "value_path": "v",
                "timestamp_path": "ts",
                "label_paths": ["site"],
            },
        ),
    )
    try:
        got = drain(sources, lambda name, bs: n_items(bs) >= want[name])
    finally:
        for s in sources.values():
            s.close()
    for fmt in formats:
        assert n_items(got[fmt]) == want[fmt], fmt
        assert not any(b.rejects for b in got[fmt]), fmt
    # Metrics: every series in its order (a series lives in one partition), exact values.
    for fmt in ("prometheus_json", "influx_line"):
        assert per_series(got[fmt]) == per_series(sent[fmt]), fmt
    # Logs: every stream in order; log_lines takes its labels from the config and its
    # time from the record timestamp.
    assert per_stream(got["log_json"]) == per_stream(sent["log_json"])
    lines = sorted(x for stream in per_stream(sent["log_lines"]).values() for x in stream)
    streams = per_stream(got["log_lines"])
    assert list(streams) == [(("app", "sim"),)]
    assert sorted(streams[(("app", "sim"),)]) == lines
    generic = per_series(got["generic_json"])
    assert generic == {'temp{site="lab"}': [(1_700_000_000.0 + i, 21.5 + i) for i in range(50)]}
    stats = sources["prometheus_json"].stats
    assert stats["records"] == stats["points"] == want["prometheus_json"]
    # Every partition, an empty one too (its start offset, once resolved).
    topic = sources["prometheus_json"].config.topics[0]
    ends = _ends(kafka_broker, topic, 3)
    assert sources["prometheus_json"].snapshot() == {f"{topic}:{p}": n for p, n in ends.items()}


def _ends(broker: KafkaBroker, topic: str, partitions: int) -> dict[int, int]:
    records = broker.consume_all(topic)
    ends = dict.fromkeys(range(partitions), 0)
    for r in records:
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
    return ends


@pytest.mark.servers
def test_malformed_records_go_to_the_dead_letter_topic_and_the_stream_goes_on(kafka_broker):
    topic, dlq = unique("in"), unique("dlq")
    kafka_broker.create_topic(topic, 1)
    kafka_broker.create_topic(dlq, 1)
    records = [
        (b"cpu,host=a usage=1 1000000000", b"a"),
        (b"cpu,host=a usage=abc 2000000000", b"a", [("trace", b"t-1")]),
        (b"cpu,host=a usage=3 3000000000\nnot line protocol", b"a"),
        (b"\xff\xfe", None),
        (None, b"tombstone"),
        (b"cpu,host=a usage=5 5000000000", b"a"),
    ]
    produce(kafka_broker, topic, records)
    src = KafkaSource("k", config(kafka_broker, [topic], "influx_line", dead_letter_topic=dlq))
    try:
        got = drain({"k": src}, lambda _, bs: sum(b.n_points for b in bs) >= 3)["k"]
        src.commit(src.snapshot())  # flushes the dead letters
    finally:
        src.close()
    assert [v for b in got for _, _, v in b.points()] == [1.0, 3.0, 5.0]
    rejects = [r for b in got for r in b.rejects]
    assert [(r.reason, r.origin) for r in rejects] == [
        ("bad_value", f"{topic}/0@1"),
        ("bad_line", f"{topic}/0@2"),
        ("bad_utf8", f"{topic}/0@3"),
    ]
    assert src.stats["tombstones"] == 1
    assert src.snapshot() == {f"{topic}:0": 6}
    letters = kafka_broker.consume_all(dlq)
    assert [(r.value, r.key) for r in letters] == [
        (records[1][0], b"a"),
        (records[2][0], b"a"),
        (records[3][0], None),
    ]
    headers = [dict(r.headers) for r in letters]
    assert [h["aiops-reason"] for h in headers] == [b"bad_value", b"bad_line", b"bad_utf8"]
    assert [h["aiops-origin"] for h in headers] == [f"{topic}/0@{i}".encode() for i in (1, 2, 3)]
    assert headers[0]["trace"] == b"t-1"  # the record's own headers are kept
    assert b"'abc' is not a number" in headers[0]["aiops-detail"]
    assert headers[1]["aiops-detail"].startswith(b"line 2, column")
    assert all(h["aiops-rejects"] == b"1" and h["aiops-source"] == b"k" for h in headers)
    assert src.stats["dead_letter_sent"] == 3


@pytest.mark.servers
def test_a_slow_dead_letter_producer_does_not_hold_up_next_batch(kafka_broker):
    # A producer's send() waits up to max_block_ms for metadata or buffer space: the
    # poller sends the dead letters, next_batch() only hands them over.
    topic, dlq = unique("in"), unique("dlq")
    kafka_broker.create_topic(topic, 1)
    kafka_broker.create_topic(dlq, 1)
    bad = [b"cpu,host=a usage=x%d 1000000000" % i for i in range(4)]
    produce(kafka_broker, topic, [(v, b"a") for v in [*bad, b"cpu,host=a usage=1 2000000000"]])
    src = KafkaSource("k", config(kafka_broker, [topic], "influx_line", dead_letter_topic=dlq))
    senders: list[threading.Thread] = []
    try:
        # The poller makes the producer before it joins the group, so before any record.
        while src._producer is None:
            assert not timed_next_batch(src)
        real = src._producer.send

        def slow_send(*args: Any, **kwargs: Any) -> Any:
            senders.append(threading.current_thread())
            time.sleep(0.5)
            return real(*args, **kwargs)

        src._producer.send = slow_send
        got = drain({"k": src}, lambda _, bs: sum(b.n_points for b in bs) == 1)["k"]
        in_loop = [t for t in senders if t is threading.current_thread()]
        src.commit(src.snapshot())  # sends what still waits, and flushes
    finally:
        src.close()
    assert len([r for b in got for r in b.rejects]) == 4
    assert in_loop == []
    assert [r.value for r in kafka_broker.consume_all(dlq)] == bad
    assert src.stats["dead_letter_sent"] == 4


# --- the whole daemon: alerts, restarts, commits -----------------------------------------

RULES = """\
groups:
  - name: kafka
    rules:
      - alert: CpuAnomaly
        source: kafka
        selector: cpu_usage_ratio
        detector: {type: robust_ewma, params: {alpha: 0.02, warmup: 20}}
        threshold: 0.99999
        labels: {severity: page}
      - alert: LatencyAnomaly
        source: kafka
        selector: http_request_duration_seconds
        detector: {type: robust_ewma, params: {alpha: 0.05, warmup: 20}}
        threshold: 0.99999
"""

INCIDENTS = [
    {
        "kind": "level_shift",
        "start": "3h",
        "length": "40m",
        "host": "host-1",
        "service": "api",
        "metric": "cpu_usage_ratio",
        "magnitude": 4,
    },
    {
        "kind": "spike",
        "start": "4h",
        "length": "1m",
        "host": "host-2",
        "service": "web",
        "metric": "http_request_duration_seconds",
        "magnitude": 6,
    },
]

_STREAM: dict[str, Any] = {}


def stream(broker: KafkaBroker) -> dict[str, Any]:
    """One simulated stream (5 h of 2 hosts x 3 services, influx lines) per module."""
    if _STREAM.get("broker") is not broker:
        records, batches = simulated(
            "influx_line", hosts=2, duration="5h", incidents=INCIDENTS, warmup="1h"
        )
        topic = unique("fleet")
        broker.create_topic(topic, 3)
        produce(broker, topic, records)
        _STREAM.update(broker=broker, topic=topic, records=records, batches=batches)
    return _STREAM


def write_config(tmp_path: Path, broker: KafkaBroker, topic: str, name: str) -> Path:
    """A daemon config: the kafka source, the rules, alerts to a JSONL file and a topic."""
    d = tmp_path / name
    d.mkdir()
    (d / "rules.yaml").write_text(RULES)
    alerts_topic = unique("alerts")
    broker.create_topic(alerts_topic, 3)
    (d / "alerting.yaml").write_text(
        # One group per alert, sent at once: these tests count alert transitions.
        "route: {receiver: out, group_by: ['...'], group_wait: 0s, group_interval: 1s}\n"
        "receivers:\n"
        "  - name: out\n"
        "    jsonl_configs: [{path: alerts.jsonl}]\n"
        f"    kafka_configs: [{{bootstrap_servers: '{broker.bootstrap}', topic: {alerts_topic}}}]\n"
    )
    settings = {
        "type": "kafka",
        "bootstrap_servers": broker.bootstrap,
        "topics": [topic],
        "group_id": unique("daemon"),
        "format": "influx_line",
        "start_from": "earliest",
        "max_poll_records": 500,
        **FAST,
    }
    (d / "aiops.yaml").write_text(
        json.dumps(
            {
                "sources": {"kafka": settings},
                "state": {"dir": "state", "checkpoint_interval": "1s"},
                "rule_files": ["rules.yaml"],
                "alerting_file": "alerting.yaml",
            }
        )
    )
    (d / "alerts_topic").write_text(alerts_topic)
    return d / "aiops.yaml"


def _transition(a: dict[str, Any]) -> tuple[str, str, str, str | None]:
    return (a["status"], a["fingerprint"], a["startsAt"], a["endsAt"])


def alerts_of(cfg: Path) -> list[tuple[str, str, str, str | None]]:
    path = cfg.parent / "state" / "alerts.jsonl"
    if not path.exists():
        return []
    return sorted(
        _transition(a) for line in path.read_text().splitlines() for a in json.loads(line)["alerts"]
    )


def check_notified(cfg: Path, expected: list[tuple[str, str, str, str | None]]) -> None:
    """Every alert of the reference reached the receiver, and no transition came twice.

    Aggregation groups run on the data's clock, and the partitions of a topic are read
    at different paces, so transitions of one group that the clock sees together are
    sent as one state (as Alertmanager does with alerts that arrive together): the
    receiver gets every alert that fired, not each of its transitions. Each transition
    the engine made is checked by the scoring tests (:func:`engine_transitions`).
    """
    got = alerts_of(cfg)
    assert len(got) == len(set(got)), "a notification was delivered twice"
    fired = {fp for status, fp, _, _ in got if status == "firing"}
    assert fired == {fp for status, fp, _, _ in expected if status == "firing"}


def group_of(cfg: Path) -> str:
    return str(json.loads(cfg.read_text())["sources"]["kafka"]["group_id"])


def checkpoint_positions(cfg: Path) -> dict[str, int]:
    ckpt = Checkpointer(FileStateStore(cfg.parent / "state")).load()
    return {} if ckpt is None else dict(ckpt.sources.get("kafka", {}))


_REFERENCE: dict[str, Any] = {}


def reference_alerts(batches: list[Batch]) -> list[tuple[str, str, str, str | None]]:
    """The alerts of the same rules over the simulator's batches, without Kafka.

    Scores do not depend on batch boundaries (DESIGN.md 3), so this is what one
    uninterrupted run over the topic must give.
    """
    if "alerts" not in _REFERENCE:
        from aiops.config import load_config
        from aiops.service.app import build_receivers, build_router, render_template, rule_specs
        from aiops.testing import MemorySource

        d = Path(tempfile.mkdtemp(prefix="kafka-ref-"))
        (d / "rules.yaml").write_text(RULES)
        (d / "alerting.yaml").write_text(
            "route: {receiver: out}\n"
            "receivers:\n"
            "  - name: out\n"
            "    jsonl_configs: [{path: alerts.jsonl}]\n"
        )
        (d / "aiops.yaml").write_text(
            "sources: {kafka: {type: simulator}}\n"
            "state: {dir: state}\n"
            "rule_files: [rules.yaml]\n"
            "alerting_file: alerting.yaml\n"
        )
        loaded = load_config(d / "aiops.yaml")
        daemon = Daemon(
            sources={"kafka": MemorySource(batches, source_id="kafka")},
            engine=Engine(rule_specs(loaded), render=render_template),
            router=build_router(loaded.alerting),
            dispatcher=Dispatcher(build_receivers(loaded.alerting, base_dir=d / "state")),
            checkpointer=Checkpointer(MemoryStateStore()),
        )
        daemon.run(threading.Event(), until_exhausted=True)
        _REFERENCE["alerts"] = alerts_of(d / "aiops.yaml")
    return list(_REFERENCE["alerts"])


def run_in_process(
    cfg: Path,
    stop_after: int | None,
    total: int,
    transitions: list[tuple[str, str, str, str | None]],
) -> list[tuple[str, float]]:
    """Run the daemon until ``stop_after`` points (or ``total``) are scored; return them.

    The alert transitions the engine made are appended to ``transitions``.
    """
    from aiops.config import load_config
    from aiops.service.app import build_daemon

    loaded = load_config(cfg)
    daemon = build_daemon(loaded, state_dir=loaded.daemon.state.dir)
    scored: list[tuple[str, float]] = []
    stop = threading.Event()
    process = daemon.engine.process

    def recording(source_id: str, batch: Batch) -> Any:
        keys = [str(k) for k in batch.keys]
        names = [keys[s] for s in batch.series.tolist()]
        scored.extend(zip(names, batch.timestamps.tolist(), strict=True))
        if stop_after is not None and len(scored) >= stop_after:
            stop.set()  # the daemon finishes this batch, then checkpoints and stops
        alerts = process(source_id, batch)
        transitions.extend(_transition(a.to_json()) for a in alerts)
        return alerts

    daemon.engine.process = recording  # type: ignore[method-assign]
    runner = threading.Thread(target=daemon.run, args=(stop,), kwargs={"until_exhausted": False})
    runner.start()
    deadline = time.monotonic() + 60
    while not stop.is_set() and len(scored) < total and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    runner.join(30)
    assert not runner.is_alive()
    return scored


def _sequences(scored: Iterable[tuple[str, float]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for key, t in scored:
        out[key].append(t)
    return dict(out)


@pytest.mark.servers
def test_daemon_stopped_mid_stream_scores_every_point_exactly_once(kafka_broker, tmp_path):
    s = stream(kafka_broker)
    expected = [(str(k), t) for b in s["batches"] for k, t, _ in b.points()]
    total = len(expected)
    expected_alerts = reference_alerts(s["batches"])
    assert len(expected_alerts) >= 2
    cfg = write_config(tmp_path, kafka_broker, s["topic"], "halves")
    transitions: list[tuple[str, str, str, str | None]] = []
    first = run_in_process(cfg, total // 2, total, transitions)
    assert total // 2 <= len(first) < total
    assert 0 < sum(checkpoint_positions(cfg).values()) < len(s["records"])
    second = run_in_process(cfg, None, total - len(first), transitions)
    both = first + second
    # Nothing skipped, nothing scored twice, every series in its order.
    assert len(both) == len(set(both)) == total
    assert _sequences(both) == _sequences(expected)
    assert sorted(transitions) == expected_alerts
    check_notified(cfg, expected_alerts)
    # The final checkpoint's positions went to the broker when the source closed.
    positions = checkpoint_positions(cfg)
    assert sum(positions.values()) == len(s["records"])
    committed = kafka_broker.committed_offsets(group_of(cfg), s["topic"])
    assert {f"{s['topic']}:{p}": o for p, o in committed.items()} == positions
    # The kafka notifier wrote the same notifications as the jsonl one.
    lines = (cfg.parent / "state" / "alerts.jsonl").read_text().splitlines()
    on_topic = kafka_broker.consume_all((cfg.parent / "alerts_topic").read_text())
    assert sorted(r.value for r in on_topic) == sorted(x.encode() for x in lines)


@pytest.mark.servers
def test_sigterm_restart_of_aiops_run_gives_the_alerts_of_an_uninterrupted_run(
    kafka_broker, tmp_path
):
    s = stream(kafka_broker)
    expected_alerts = reference_alerts(s["batches"])
    # The stream arrives while the daemon runs, and goes on while it restarts.
    topic = unique("live")
    kafka_broker.create_topic(topic, 3)
    cfg = write_config(tmp_path, kafka_broker, topic, "live")
    records = s["records"]

    def live() -> None:
        for i in range(0, len(records), 2000):
            produce(kafka_broker, topic, records[i : i + 2000])
            time.sleep(0.1)

    producer = threading.Thread(target=live)
    producer.start()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*AIOPS, "run", "--config", str(cfg)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def wait_for(pred: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < deadline
            time.sleep(0.1)

    def committed() -> dict[str, int]:
        got = kafka_broker.committed_offsets(group_of(cfg), topic)
        return {f"{topic}:{p}": o for p, o in got.items()}

    proc = start()
    try:
        wait_for(lambda: sum(checkpoint_positions(cfg).values()) >= 2000)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "received SIGTERM: final checkpoint, then exit" in err
        assert sum(checkpoint_positions(cfg).values()) < len(records), "not stopped mid-stream"
        proc = start()
        producer.join(60)
        wait_for(lambda: sum(checkpoint_positions(cfg).values()) == len(records))
        # A periodic checkpoint's positions reach the broker (asynchronous commit).
        wait_for(lambda: committed() == checkpoint_positions(cfg), timeout=10)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "resumed from checkpoint" in err
    finally:
        if proc.poll() is None:
            proc.kill()
        producer.join(60)
    check_notified(cfg, expected_alerts)
    assert committed() == checkpoint_positions(cfg)


# --- outages and rebalances ------------------------------------------------------------


def one_source_daemon(src: KafkaSource) -> Daemon:
    """A started daemon reading ``src`` as source ``"k"``, with no rules, stepped by hand."""
    daemon = Daemon(
        sources={"k": src},
        engine=Engine([]),
        router=Router(RouteNode("r")),
        dispatcher=Dispatcher({}),
        checkpointer=Checkpointer(MemoryStateStore()),
        poll_interval=0.05,
    )
    daemon.start()
    return daemon


def step_until(
    daemon: Daemon, pred: Callable[[], bool], timeout: float, *, longest: float, pause: float
) -> float:
    """Step ``daemon`` until ``pred()``; fail past ``timeout`` or on a step over ``longest``."""
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < timeout, (daemon.health, daemon.sources["k"].stats)
        s0 = time.monotonic()
        daemon.step()
        assert time.monotonic() - s0 < longest, "a daemon step blocked"
        time.sleep(pause)
    return time.monotonic() - t0


@pytest.mark.servers
def test_broker_outage_is_reported_in_health_and_the_source_recovers(kafka_broker_factory):
    broker = kafka_broker_factory()
    topic = unique("o")
    broker.create_topic(topic, 1)
    line = "m,host=a v={} {}000000000"
    produce(broker, topic, [(line.format(i, 100 + i).encode(),) for i in range(5)])
    src = KafkaSource("k", config(broker, [topic], "influx_line"))
    daemon = one_source_daemon(src)
    health = daemon.health["k"]

    def steps(pred: Callable[[], bool], timeout: float) -> float:
        return step_until(daemon, pred, timeout, longest=1.0, pause=0.05)

    steps(lambda: health.points == 5, 20)
    assert health.ok
    broker.stop()
    took = steps(lambda: not health.ok, OUTAGE_GRACE + 5)
    assert "no connection to any Kafka broker" in health.last_error
    assert took < OUTAGE_GRACE + 3
    # Memory storage: the restarted broker is empty; the test re-creates the topic (unless
    # the reconnecting source's metadata request had it created first, as CI saw once).
    # Tansu serves the old position 5 of the new topic once records reach it.
    broker.start()
    broker.create_topic(topic, 1, exist_ok=True)
    produce(broker, topic, [(line.format(i, 200 + i).encode(),) for i in range(8)])
    # 5 points before the outage + offsets 5..7 of the new topic.
    steps(lambda: health.ok and health.points == 8, 45)
    assert src.snapshot() == {f"{topic}:0": 8}
    daemon.shutdown()


@pytest.mark.servers
def test_two_members_of_one_group_split_the_partitions(kafka_broker):
    topic = unique("r")
    kafka_broker.create_topic(topic, 4)
    line = "m,host={} v={} {}000000000"
    first = [(line.format(f"h{i}", i, 100 + i).encode(), f"h{i}".encode()) for i in range(40)]
    produce(kafka_broker, topic, first)
    cfg = config(kafka_broker, [topic], "influx_line")
    a = KafkaSource("a", cfg)
    b = KafkaSource("b", cfg)
    everything = {f"{topic}:{p}" for p in range(4)}
    try:
        drain({"a": a}, lambda _, bs: sum(x.n_points for x in bs) >= 40)
        assert set(a.snapshot()) == everything
        # b joins: the group splits the partitions between the two members.
        drain(
            {"a": a, "b": b},
            lambda name, _: len({"a": a, "b": b}[name].assignment) == 2,
        )
        owned_a, owned_b = set(a.assignment), set(b.assignment)
        assert owned_a.isdisjoint(owned_b)
        assert owned_a | owned_b == everything
        # a keeps the positions of the partitions it gave up.
        assert set(a.snapshot()) == everything
        second = [(line.format(f"h{i}", i, 200 + i).encode(), f"h{i}".encode()) for i in range(40)]
        meta = produce_with_partitions(kafka_broker, topic, second)
        new_in = {
            name: {p for p in meta if f"{topic}:{p}" in owned}
            for name, owned in (("a", owned_a), ("b", owned_b))
        }
        want = {name: sum(1 for p in meta if p in parts) for name, parts in new_in.items()}
        got = drain(
            {"a": a, "b": b},
            lambda name, bs: sum(1 for x in bs for _, t, _ in x.points() if t >= 200) >= want[name],
        )
        for name in ("a", "b"):
            times = [t for x in got[name] for _, t, _ in x.points() if t >= 200]
            assert len(times) == want[name]
        # Each member's snapshot covers its partitions at their ends.
        ends = _ends(kafka_broker, topic, 4)
        for src, owned in ((a, owned_a), (b, owned_b)):
            snap = src.snapshot()
            assert {k: snap[k] for k in owned} == {k: ends[int(k.rsplit(":", 1)[1])] for k in owned}
    finally:
        a.close()
        b.close()


def produce_with_partitions(
    broker: KafkaBroker, topic: str, records: list[tuple[bytes, bytes]]
) -> list[int]:
    """Produce and return the partition each record went to."""
    values, keys = zip(*records, strict=True)
    return [m.partition for m in broker.produce(topic, values, keys=keys)]


@pytest.mark.servers
def test_start_from_latest_skips_old_records_and_checkpoints_its_start(kafka_broker):
    topic = unique("l")
    kafka_broker.create_topic(topic, 1)
    line = "m,host=a v={} {}000000000"
    # One record per batch: Tansu's ListOffsets(latest) is exact only then.
    for i in range(3):
        kafka_broker.produce(topic, [line.format(i, 100 + i)])
    src = KafkaSource("k", config(kafka_broker, [topic], "influx_line", start_from="latest"))
    try:
        drain({"k": src}, lambda _, bs: bool(src.assignment))
        deadline = time.monotonic() + 10
        while src.snapshot() != {f"{topic}:0": 3}:
            assert time.monotonic() < deadline, src.snapshot()
            src.next_batch()
        kafka_broker.produce(topic, [line.format(9, 109)])
        got = drain({"k": src}, lambda _, bs: sum(x.n_points for x in bs) >= 1)["k"]
        assert [v for x in got for _, _, v in x.points()] == [9.0]
        assert src.snapshot() == {f"{topic}:0": 4}
    finally:
        src.close()
