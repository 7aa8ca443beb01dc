"""KafkaNotifier: the record it writes, delivery results, and a real (Tansu) broker."""

from __future__ import annotations

import json
import time

import pytest
from kafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotEnoughReplicasError,
    SaslAuthenticationFailedError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from pydantic import ValidationError
from servers import free_port, unique

from aiops.alerting.notify import Alert, Delivered, Notification, PermanentFailure, RetryAfter
from aiops.config import load_alerting
from aiops.connectors.notifiers.jsonl import JsonlNotifier
from aiops.connectors.notifiers.kafka import KafkaNotifier, classify_error, record_key
from aiops.registry import NOTIFIERS

FAST = {"request_timeout": "5s", "reconnect_backoff_max": "1s", "connect_timeout": "2s"}


def alert(fp: str = "a1b2c3", status: str = "firing", **annotations: str) -> Alert:
    return Alert(
        fingerprint=fp,
        status=status,  # type: ignore[arg-type]
        labels={"alertname": "CpuAnomaly", "host": "h1", "severity": "page"},
        annotations={"summary": "cpu on h1", **annotations},
        starts_at=1_767_571_200.0,
        ends_at=None if status == "firing" else 1_767_571_800.0,
        value=0.93,
        score=0.9995,
        series='cpu_usage_ratio{host="h1"}',
    )


def notifier(bootstrap: str, topic: str, **kw: object) -> KafkaNotifier:
    return KafkaNotifier(
        KafkaNotifier.Config(bootstrap_servers=bootstrap, topic=topic, **{**FAST, **kw})
    )


# --- no broker ---------------------------------------------------------------------------


def test_registered_and_configured_like_other_receivers(tmp_path):
    assert NOTIFIERS.get("kafka") is KafkaNotifier
    path = tmp_path / "alerting.yaml"
    path.write_text(
        "route: {receiver: bus}\n"
        "receivers:\n"
        "  - name: bus\n"
        "    kafka_configs:\n"
        "      - bootstrap_servers: k1:9093,k2:9093\n"
        "        topic: aiops-alerts\n"
        "        security_protocol: SASL_SSL\n"
        "        sasl_mechanism: SCRAM-SHA-512\n"
        "        sasl_username: aiops\n"
        "        sasl_password_file: /run/secrets/kafka\n"
        "        timeout: 5s\n"
    )
    (spec,) = load_alerting(path).receivers[0].notifiers
    assert spec.type == "kafka"
    assert spec.config.topic == "aiops-alerts"
    assert spec.config.timeout == 5.0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"topic": "bad topic"}, "invalid topic name"),
        ({"ssl_password": "x"}, 'secret "ssl_password" must not be written in YAML'),
        ({"timeout": "0s"}, "must be a duration greater than 0s"),
        ({"max_request_size": 10}, "greater than or equal to 1024"),
    ],
)
def test_config_errors(settings, message):
    with pytest.raises(ValidationError, match=message):
        KafkaNotifier.Config(**{"bootstrap_servers": "k:9092", "topic": "t", **settings})


def test_record_key_keeps_one_alerts_transitions_together():
    assert record_key(Notification("ops", [alert("f1")])) == "f1"
    assert record_key(Notification("ops", [alert("f1", "resolved")])) == "f1"
    grouped = Notification("ops", [alert("f1"), alert("f2")], group_labels={"host": "h1"})
    again = Notification("ops", [alert("f2"), alert("f3")], group_labels={"host": "h1"})
    assert (
        record_key(grouped)
        == record_key(again)
        != record_key(Notification("ops", [alert("f1"), alert("f2")], group_labels={"host": "h2"}))
    )


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (MessageSizeTooLargeError("big"), PermanentFailure),
        (TopicAuthorizationFailedError({"t"}), PermanentFailure),
        (SaslAuthenticationFailedError("bad password"), PermanentFailure),
        (KafkaTimeoutError("no ack"), RetryAfter),
        (KafkaConnectionError("refused"), RetryAfter),
        (NotEnoughReplicasError(), RetryAfter),
        (UnknownTopicOrPartitionError(), RetryAfter),
    ],
    ids=lambda x: type(x).__name__ if isinstance(x, Exception) else x.__name__,
)
def test_errors_are_classified(exc, kind):
    assert isinstance(classify_error(exc, "topic t"), kind)


def test_unreachable_broker_is_retried_not_raised():
    n = notifier(f"127.0.0.1:{free_port()}", "t", connect_timeout="1s", timeout="1s")
    t0 = time.monotonic()
    result = n.send(Notification("ops", [alert()]))
    assert isinstance(result, RetryAfter), result
    assert "cannot connect to Kafka at 127.0.0.1:" in result.reason
    assert time.monotonic() - t0 < 3
    n.close()


# --- against the broker ------------------------------------------------------------------


@pytest.mark.servers
def test_records_are_the_jsonl_documents_keyed_by_fingerprint(kafka_broker, tmp_path):
    topic = unique("alerts")
    kafka_broker.create_topic(topic, 3)
    n = notifier(kafka_broker.bootstrap, topic)
    jsonl = JsonlNotifier(JsonlNotifier.Config(path=str(tmp_path / "a.jsonl")))
    sent = []
    for i in range(6):
        fp = f"fp{i % 3}"
        note = Notification("ops", [alert(fp, "firing" if i < 3 else "resolved")])
        result = n.send(note)
        assert isinstance(result, Delivered), result
        assert result.detail.startswith(f"{topic}/")
        jsonl.send(note)
        sent.append(note)
    n.close()
    jsonl.close()
    records = sorted(kafka_broker.consume_all(topic), key=lambda r: r.timestamp)
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    assert sorted(r.value for r in records) == sorted(line.encode() for line in lines)
    by_key: dict[bytes, list[tuple[int, str]]] = {}
    for r in records:
        doc = json.loads(r.value)
        by_key.setdefault(r.key, []).append((r.partition, doc["status"]))
        headers = dict(r.headers)
        assert headers["aiops-idempotency-key"] == doc["idempotency_key"].encode()
        assert headers["aiops-receiver"] == b"ops"
        assert headers["aiops-status"] == doc["status"].encode()
        assert headers["content-type"] == b"application/json"
    # One partition per alert, transitions in order.
    assert sorted(by_key) == [b"fp0", b"fp1", b"fp2"]
    for transitions in by_key.values():
        assert len({p for p, _ in transitions}) == 1
        assert [s for _, s in transitions] == ["firing", "resolved"]
    assert sent[0].idempotency_key != sent[3].idempotency_key


@pytest.mark.servers
def test_too_large_is_permanent_and_later_records_still_go(kafka_broker):
    topic = unique("alerts")
    kafka_broker.create_topic(topic, 1)
    n = notifier(kafka_broker.bootstrap, topic, max_request_size=2048)
    big = n.send(Notification("ops", [alert(description="x" * 5000)]))
    assert isinstance(big, PermanentFailure), big
    assert "MessageSizeTooLargeError" in big.reason
    assert isinstance(n.send(Notification("ops", [alert()])), Delivered)
    n.close()
    assert len(kafka_broker.consume_all(topic)) == 1


@pytest.mark.servers
def test_broker_outage_is_retry_after_and_delivery_resumes(kafka_broker_factory):
    broker = kafka_broker_factory()
    topic = unique("alerts")
    broker.create_topic(topic, 1)
    n = notifier(broker.bootstrap, topic, timeout="2s")
    assert isinstance(n.send(Notification("ops", [alert("f1")])), Delivered)
    broker.stop()
    t0 = time.monotonic()
    down = n.send(Notification("ops", [alert("f2")]))
    assert isinstance(down, RetryAfter), down
    assert time.monotonic() - t0 < 4
    # Memory storage: the restarted broker lost the topic; the test re-creates it.
    broker.start()
    broker.create_topic(topic, 1)
    deadline = time.monotonic() + 20
    result = n.send(Notification("ops", [alert("f3")]))
    while not isinstance(result, Delivered):
        assert isinstance(result, RetryAfter), result
        assert time.monotonic() < deadline, result
        time.sleep(0.2)
        result = n.send(Notification("ops", [alert("f3")]))
    n.close()
    keys = [r.key for r in broker.consume_all(topic)]
    assert b"f3" in keys
