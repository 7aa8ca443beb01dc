"""Smoke tests proving that the server fixtures start real, working servers."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from servers import (
    AlertmanagerServer,
    HistorySeries,
    MissingBinaryError,
    PrometheusServer,
    ServerError,
    free_port,
    openmetrics_text,
    unique,
    wait_for_http,
)

STEP = 60.0
HOURS = 6


@pytest.fixture
def history_start() -> float:
    # Three days back, on a minute boundary: old enough to sit in backfilled blocks only,
    # recent enough for the default-retention case.
    return math.floor((time.time() - 3 * 86400) / STEP) * STEP


def _history(start: float) -> list[HistorySeries]:
    n = int(HOURS * 3600 / STEP)
    return [
        HistorySeries(
            "node_load1",
            {"instance": host, "job": "node"},
            [(start + i * STEP, float(i % 50) + (0.5 if host == "b" else 0.0)) for i in range(n)],
        )
        for host in ("a", "b")
    ] + [
        HistorySeries(
            "http_requests_total",
            {"code": "200", "path": '/q"uoted\\'},
            [(start + i * STEP, float(10 * i)) for i in range(n)],
            type="counter",
        )
    ]


@pytest.mark.servers
def test_prometheus_serves_backfilled_history(prometheus_server, history_start):
    prom = prometheus_server(history=_history(history_start))
    assert "BLOCK ULID" in prom.backfill_report

    t = history_start + 90 * STEP  # sample index 90 -> 90 % 50 = 40
    result = prom.query('node_load1{instance="a"}', time=t)
    assert [(r["metric"]["instance"], r["value"]) for r in result] == [("a", [t, "40"])]

    end = history_start + (HOURS * 3600 - STEP)
    series = prom.query_range("node_load1", history_start, end, STEP)
    assert sorted(s["metric"]["instance"] for s in series) == ["a", "b"]
    for s in series:
        assert len(s["values"]) == HOURS * 60
        assert (s["values"][0][0], s["values"][-1][0]) == (history_start, end)

    # The counter kept its escaped label and rates correctly across block boundaries.
    rate = prom.query("rate(http_requests_total[5m])", time=end)
    assert rate[0]["metric"]["path"] == '/q"uoted\\'
    assert float(rate[0]["value"][1]) == pytest.approx(10 / STEP)

    # Data lives in the TSDB directory: a restart on the same port still serves it.
    port = prom.port
    prom.restart()
    assert prom.port == port
    assert prom.query('node_load1{instance="b"}', time=t)[0]["value"] == [t, "40.5"]


class _Receiver(BaseHTTPRequestHandler):
    """Serves a gauge for Prometheus to scrape and records remote-write POSTs."""

    posts: list[tuple[dict[str, str], bytes]]

    def do_GET(self) -> None:
        body = b"# TYPE demo_gauge gauge\ndemo_gauge 42\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.posts.append((dict(self.headers.items()), data))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    posts: list[tuple[dict[str, str], bytes]] = []
    handler = type("Handler", (_Receiver,), {"posts": posts})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", posts
    server.shutdown()
    server.server_close()


@pytest.mark.servers
def test_prometheus_remote_write_reaches_receiver(prometheus_server, receiver):
    address, posts = receiver
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "demo", "static_configs": [{"targets": [address]}]}],
        "remote_write": [
            {
                "url": f"http://{address}/receive",
                "queue_config": {"batch_send_deadline": "1s", "min_backoff": "100ms"},
            }
        ],
    }
    prom = prometheus_server(config)
    deadline = time.monotonic() + 30
    while not posts and time.monotonic() < deadline:
        time.sleep(0.1)
    assert posts, "no remote-write POST within 30 s\n" + prom.log_tail()
    headers, body = posts[0]
    headers = {k.lower(): v for k, v in headers.items()}
    assert headers["content-encoding"] == "snappy"
    assert headers["content-type"] == "application/x-protobuf"
    assert headers["x-prometheus-remote-write-version"].startswith("0.1")
    import cramjam

    payload = bytes(cramjam.snappy.decompress_raw(body))
    assert b"__name__" in payload  # a WriteRequest with labelled series


@pytest.mark.servers
def test_alertmanager_accepts_and_lists_alerts(alertmanager_server):
    am = alertmanager_server()
    wait_for_http(f"{am.url}/api/v2/status")
    am.post_alerts(
        [
            {
                "labels": {"alertname": "HighLatency", "service": "api", "severity": "page"},
                "annotations": {"summary": "p99 above 2s"},
                "generatorURL": "http://aiops.example/rules/latency",
            }
        ]
    )
    alerts = am.alerts()
    assert len(alerts) == 1
    (alert,) = alerts
    assert alert["labels"] == {"alertname": "HighLatency", "service": "api", "severity": "page"}
    assert alert["annotations"] == {"summary": "p99 above 2s"}
    assert alert["status"]["state"] in {"active", "unprocessed"}
    assert am.alerts(filter='service="db"') == []


@pytest.mark.servers
def test_kafka_topic_produce_consume_commit(kafka_broker):
    topic, group = unique("smoke"), unique("group")
    kafka_broker.create_topic(topic, partitions=3)
    keys = [f"host-{i % 10}" for i in range(100)]
    values = [f"value-{i}" for i in range(100)]
    meta = kafka_broker.produce(topic, values, keys=keys, headers=[[("origin", b"test")]] * 100)
    assert {m.partition for m in meta} == {0, 1, 2}

    records = kafka_broker.consume_all(topic, group_id=group, commit=True)
    assert sorted(r.value.decode() for r in records) == sorted(values)
    assert all(r.headers == [("origin", b"test")] for r in records)
    partition_of: dict[bytes, set[int]] = {}
    for r in records:
        partition_of.setdefault(r.key, set()).add(r.partition)
    assert all(len(p) == 1 for p in partition_of.values()), "a key spread over partitions"

    ends = {p: 0 for p in range(3)}
    for m in meta:
        ends[m.partition] = max(ends[m.partition], m.offset + 1)
    assert kafka_broker.committed_offsets(group, topic) == ends
    # The group resumes from its commit: nothing left to read.
    assert kafka_broker.consume_all(topic, group_id=group) == []


@pytest.mark.servers
def test_kafka_restart_keeps_address_but_not_data(kafka_broker_factory):
    broker = kafka_broker_factory()
    bootstrap = broker.bootstrap
    broker.create_topic("before", 1)
    broker.produce("before", [b"x"])
    broker.restart()
    assert broker.bootstrap == bootstrap
    admin = broker.admin()
    try:
        assert "before" not in admin.list_topics()  # memory storage: data is gone
    finally:
        admin.close()
    broker.create_topic("after", 1)
    broker.produce("after", [b"y"])
    assert [r.value for r in broker.consume_all("after")] == [b"y"]


@pytest.mark.servers
def test_start_failure_reports_log_tail(tmp_path: Path):
    prom = PrometheusServer(tmp_path, "scrape_configs: [{job_name: 1, nonsense: true}]")
    with pytest.raises(ServerError, match=r"(?s)exited.*last \d+ lines.*nonsense"):
        prom.start()
    assert not prom.running


@pytest.mark.servers
def test_restart_reuses_port(alertmanager_server):
    am = alertmanager_server(port=free_port())
    port = am.port
    am.restart()
    assert am.port == port
    assert am.alerts() == []


def test_missing_binary_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingBinaryError, match="apt-get install -y prometheus prometheus-"):
        PrometheusServer(tmp_path)
    with pytest.raises(MissingBinaryError, match="apt-get install -y prometheus prometheus-"):
        AlertmanagerServer(tmp_path)


def test_openmetrics_text_groups_families_and_escapes():
    text = openmetrics_text(
        [
            HistorySeries("x", {"a": "1"}, [(2.5, 1.0)]),
            HistorySeries("y_total", {}, [(1, math.inf)], type="counter"),
            HistorySeries("x", {"a": 'q"\n'}, [(1, math.nan)]),
        ]
    )
    assert text == (
        "# TYPE x gauge\n"
        'x{a="1"} 1.0 2.5\n'
        'x{a="q\\"\\n"} NaN 1\n'
        "# TYPE y counter\n"
        "y_total +Inf 1\n"
        "# EOF\n"
    )
    with pytest.raises(ValueError, match="_total"):
        openmetrics_text([HistorySeries("y", type="counter")])
