"""Log rules over Kafka, against the real Kafka-protocol broker (tests/servers.py)."""

from __future__ import annotations

import json
import time

import pytest
from servers import unique
from test_logs import BURST_AT, NEW_AT, log_engine, stream

from aiops.alerting.routing import Dispatcher, RouteNode, Router
from aiops.connectors.sources.kafka import KafkaSource
from aiops.pipeline.engine import Engine
from aiops.service.daemon import Daemon
from aiops.state.checkpoint import Checkpointer
from aiops.state.envelope import FileStateStore
from aiops.testing import FakeClock, ListNotifier

FAST = {
    "session_timeout": "6s",
    "max_poll_interval": "10s",
    "request_timeout": "8s",
    "reconnect_backoff_max": "1s",
    "connect_timeout": "5s",
}


@pytest.mark.servers
@pytest.mark.parametrize("fmt", ["log_json", "journald"])
def test_log_rules_alert_on_records_consumed_from_kafka(kafka_broker, tmp_path, fmt):
    topic = unique(f"logs-{fmt.replace('_', '-')}")
    kafka_broker.create_topic(topic, 1)
    records = [r for minute in stream() for r in minute]
    producer = kafka_broker.producer(linger_ms=5)
    try:
        for r in records:
            if fmt == "log_json":
                doc = {"message": r.message, "timestamp": r.timestamp, "service": "payments"}
            else:  # journalctl -o json, messages as byte arrays half of the time
                message = list(r.message.encode()) if len(r.message) % 2 else r.message
                doc = {
                    "MESSAGE": message,
                    "SYSLOG_IDENTIFIER": "payments",
                    "__REALTIME_TIMESTAMP": str(round(r.timestamp * 1e6)),
                }
            producer.send(topic, value=json.dumps(doc).encode())
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)
    options = {"label_fields": {"service": "service"}} if fmt == "log_json" else {}
    cfg = KafkaSource.Config(
        bootstrap_servers=kafka_broker.bootstrap,
        topics=[topic],
        format=fmt,
        format_options=options,
        group_id=unique("g"),
        start_from="earliest",
        max_poll_records=5000,
        **FAST,
    )
    daemon = Daemon(
        sources=lambda pos: {"logs": KafkaSource("logs", cfg, resume=pos.get("logs"))},
        engine=Engine([], logs=log_engine()),
        router=Router(RouteNode("r")),
        dispatcher=Dispatcher({"r": [ListNotifier()]}),
        checkpointer=Checkpointer(FileStateStore(tmp_path / "state")),
        checkpoint_interval=1e9,
        clock=FakeClock(),
    )
    seen = []
    process = daemon.engine.process

    def recording(sid, batch):
        out = process(sid, batch)
        seen.extend(a for a in out if a.status == "firing")
        return out

    daemon.engine.process = recording
    daemon.start()
    deadline = time.monotonic() + 60
    try:
        while daemon.health["logs"].logs < len(records):
            assert time.monotonic() < deadline, daemon.health["logs"].as_json(0.0)
            daemon.step()
    finally:
        daemon.shutdown()
    assert not daemon.health["logs"].rejects
    assert [a.alertname for a in seen] == ["NewLogTemplate", "ErrorBurst"]
    new, burst = seen
    assert new.labels["service"] == "payments"
    assert new.annotations["template"].startswith("ERROR payment gateway timeout")
    assert new.starts_at // 60 == (stream_start() // 60) + NEW_AT
    assert burst.starts_at == stream_start() + (BURST_AT + 1) * 60


def stream_start() -> float:
    return stream()[0][0].timestamp // 60 * 60
