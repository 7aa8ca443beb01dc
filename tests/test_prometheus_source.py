"""The Prometheus pull source against a real Prometheus 2.42 with backfilled history."""

from __future__ import annotations

import base64
import json
import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from servers import HistorySeries
from test_http import start_daemon, wait_until, write_config

from aiops.connectors.sources.prometheus import PrometheusSource, QueryError
from aiops.pipeline.source import QuerySpec, SourceError
from aiops.state.checkpoint import Checkpointer
from aiops.state.envelope import FileStateStore
from aiops.timeutil import to_rfc3339


def series(
    name: str,
    hosts: dict[str, float],
    start: float,
    end: float,
    step: float,
    incident: tuple[str, float, float, float] | None = None,
    seed: int = 1,
) -> list[HistorySeries]:
    """One gauge per host around its level; ``incident`` = (host, from, to, added)."""
    rng = np.random.default_rng(seed)
    times = np.arange(start, end + step / 2, step)
    out = []
    for host, level in hosts.items():
        v = level + rng.normal(0, 1, len(times))
        if incident is not None and incident[0] == host:
            v[(times >= incident[1]) & (times < incident[2])] += incident[3]
        out.append(
            HistorySeries(name, {"host": host}, list(zip(times.tolist(), v.tolist(), strict=True)))
        )
    return out


def rule(alert: str, query: str, **extra: Any) -> dict[str, Any]:
    return {
        "alert": alert,
        "source": "prom",
        "query": query,
        "detector": {"type": "robust_ewma", "params": {"warmup": 30}},
        "threshold": 0.99999,
        **extra,
    }


def firing(alerts: list[dict[str, Any]], alertname: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["status"] == "firing" and a["labels"]["alertname"] == alertname]


def positions(state_dir) -> dict[str, float]:
    ckpt = Checkpointer(FileStateStore(state_dir)).load()
    assert ckpt is not None
    return ckpt.sources["prom"]["rules"]


# --------------------------------------------------------------------------- catch-up


@pytest.mark.servers
def test_history_backfill_finds_an_incident_hours_back(prometheus_server, tmp_path):
    step = 15.0
    now = math.floor(time.time() / step) * step
    incident = ("b", now - 3 * 3600, now - 3 * 3600 + 300, 25.0)
    prom = prometheus_server(
        history=series(
            "latency_ms", {"a": 100, "b": 80, "c": 120}, now - 6 * 3600, now, step, incident
        )
    )
    sources = {"prom": {"type": "prometheus", "url": prom.url, "history": "6h", "step": "15s"}}
    d = start_daemon(write_config(tmp_path, sources, [rule("LatencyHigh", "latency_ms")]))
    try:
        got = wait_until(
            lambda: firing(d.alerts(), "LatencyHigh"), timeout=30, what="the incident's alert"
        )
    finally:
        d.stop()
    assert [a["labels"]["host"] for a in got] == ["b"]
    assert got[0]["startsAt"] == to_rfc3339(incident[1])
    assert got[0]["labels"]["metric"] == "latency_ms"
    # the checkpoint holds the last evaluation time handed to the engine
    assert positions(d.state_dir)["g/LatencyHigh"] >= now


@pytest.mark.servers
def test_restart_after_an_outage_catches_up_and_finds_what_happened_meanwhile(
    prometheus_server, tmp_path
):
    # Samples every second up to a minute ahead: Prometheus answers for times that have
    # passed, as if they were being scraped. The incident starts while the daemon is down.
    now0 = math.floor(time.time()) + 1.0
    incident = ("a", now0 + 4, now0 + 7, 30.0)
    prom = prometheus_server(
        history=series("queue_depth", {"a": 50, "b": 60}, now0 - 600, now0 + 60, 1.0, incident)
    )
    sources = {"prom": {"type": "prometheus", "url": prom.url, "history": "10m", "step": "1s"}}
    config = write_config(tmp_path, sources, [rule("QueueDepth", "queue_depth")])

    first = start_daemon(config)
    wait_until(
        lambda: first.daemon.health_report["prom"]["points"] >= 2 * 600, what="history scored"
    )
    first.stop()
    stopped_at = positions(first.state_dir)["g/QueueDepth"]
    assert stopped_at < incident[1], "the daemon was too slow to stop before the incident"
    assert firing(first.alerts(), "QueueDepth") == []

    time.sleep(max(0.0, incident[2] + 1 - time.time()))  # the outage
    second = start_daemon(config)
    try:
        got = wait_until(
            lambda: firing(second.alerts(), "QueueDepth"), timeout=20, what="caught-up alert"
        )
    finally:
        second.stop()
    assert [a["labels"]["host"] for a in got] == ["a"]
    assert got[0]["startsAt"] == to_rfc3339(incident[1])
    # The catch-up started right after the stored position: every evaluation time
    # once, for both hosts, none twice and none skipped.
    scored = second.daemon.health["prom"].points
    assert scored == 2 * (positions(second.state_dir)["g/QueueDepth"] - stopped_at)


@pytest.mark.servers
def test_resume_older_than_max_catch_up_fills_only_the_recent_part(prometheus_server, caplog):
    step = 60.0
    now = math.floor(time.time() / step) * step
    prom = prometheus_server(history=series("m", {"a": 1.0}, now - 4 * 3600, now, step))
    src = PrometheusSource(
        "prom",
        PrometheusSource.Config(url=prom.url, max_catch_up="1h", step="1m"),
        queries=[QuerySpec("g/M", "m", 60.0)],
        resume={"rules": {"g/M": now - 3 * 3600}},
        clock=lambda: now + 30,  # a fixed "now": evaluation times do not depend on timing
    )
    try:
        with caplog.at_level("WARNING"):
            batch = wait_until(src.next_batch, what="the catch-up batch")
        assert batch.rule == "g/M"
        assert batch.timestamps[0] == now - 3600
        assert batch.timestamps[-1] == now
        assert batch.n_points == 61
        assert "119 evaluation times from" in caplog.text
        assert "skipped (max_catch_up=1h)" in caplog.text
        assert src.snapshot()["rules"] == {"g/M": now}
    finally:
        src.close()
    # A changed query starts afresh from `history`, an unchanged one resumes.
    position = {"rules": {"g/M": now - 120}, "queries": src.snapshot()["queries"]}
    for query, first in (("m", now - 60), ("m * 2", now - 600)):
        src = PrometheusSource(
            "prom",
            PrometheusSource.Config(url=prom.url, history="10m", step="1m"),
            queries=[QuerySpec("g/M", query, 60.0)],
            resume=position,
            clock=lambda: now + 30,
        )
        try:
            batch = wait_until(src.next_batch, what="the first batch")
            assert batch.timestamps[0] == first
        finally:
            src.close()


@pytest.mark.servers
def test_fetch_history_chunks_range_queries_and_names_nameless_series(prometheus_server):
    step = 60.0
    now = math.floor(time.time() / step) * step
    start = now - 2 * 3600
    hist = series("requests", {"a": 10, "b": 20}, start, now, step)
    prom = prometheus_server(history=hist)
    src = PrometheusSource("prom", PrometheusSource.Config(url=prom.url, max_points_per_query=7))
    batch = src.fetch_history('requests{host="b"}', start, now, step)
    assert batch.n_points == 121
    assert np.all(np.diff(batch.timestamps) == step)
    assert [str(k) for k in batch.keys] == ['requests{host="b"}']
    expected = [v for _, v in hist[1].samples]
    np.testing.assert_allclose(batch.values, expected)
    summed = src.fetch_history("sum(requests)", start, start + 600, step, name="total")
    assert [str(k) for k in summed.keys] == ["total{}"]
    with pytest.raises(QueryError, match="HTTP 400 bad_data"):
        src.fetch_history("sum(", start, now, step)


# --------------------------------------------------------------------------- failures


@pytest.mark.servers
def test_a_bad_query_does_not_stop_the_good_one_and_shows_in_healthz(prometheus_server, tmp_path):
    now = math.floor(time.time())
    prom = prometheus_server(history=series("load", {"a": 5}, now - 300, now + 120, 1.0))
    sources = {"prom": {"type": "prometheus", "url": prom.url, "history": "1m", "step": "1s"}}
    rules = [rule("Good", "load"), rule("Bad", "sum(load")]
    d = start_daemon(write_config(tmp_path, sources, rules))
    try:
        wait_until(lambda: d.healthz()[0] == 503 and d.healthz()[1]["sources"]["prom"]["problems"])
        _, doc = d.healthz()
        prom_health = doc["sources"]["prom"]
        assert prom_health["state"] == "degraded"
        assert list(prom_health["problems"]) == ["g/Bad"]
        assert "HTTP 400 bad_data" in prom_health["problems"]["g/Bad"]
        assert "unclosed left parenthesis" in prom_health["problems"]["g/Bad"]
        # the good rule keeps scoring, a point a second
        before = d.metric("aiops_source_points_total", source="prom")
        wait_until(lambda: d.metric("aiops_source_points_total", source="prom") >= before + 2)
        assert d.metric("aiops_rule_series", rule="g/Good") == 1
        assert d.metric("aiops_source_problems", source="prom") == 1
        assert d.metric("aiops_source_healthy", source="prom") == 0
    finally:
        d.stop()
    assert list(positions(d.state_dir)) == ["g/Good"]


def outage_source(url: str) -> dict[str, str]:
    """A Prometheus source that evaluates every second and notices an outage at once."""
    return {
        "type": "prometheus",
        "url": url,
        "history": "1m",
        "step": "1s",
        "max_backoff": "1s",
        "timeout": "2s",
    }


@pytest.mark.servers
def test_prometheus_down_at_start_then_killed_then_back_the_daemon_rides_it_out(
    prometheus_server, tmp_path
):
    now = math.floor(time.time())
    prom = prometheus_server(history=series("temp", {"a": 20}, now - 300, now + 300, 1.0))
    prom.stop()
    sources = {"prom": outage_source(prom.url)}
    d = start_daemon(write_config(tmp_path, sources, [rule("Temp", "temp")]))
    try:
        status, doc = wait_until(
            lambda: (h := d.healthz())[1]["sources"]["prom"]["state"] == "failing" and h,
            what="the source to be reported failing",
        )
        assert status == 503
        assert "all 1 queries failing" in doc["sources"]["prom"]["last_error"]
        assert "cannot reach http://127.0.0.1" in doc["sources"]["prom"]["last_error"]

        prom.start()
        wait_until(lambda: d.healthz()[0] == 200, timeout=30, what="recovery after start")
        wait_until(lambda: d.metric("aiops_source_points_total", source="prom") >= 60)

        prom.kill()
        wait_until(lambda: d.healthz()[0] == 503, timeout=30, what="the kill to be noticed")
        assert d.thread.is_alive()
        assert d.metric("aiops_source_failures_total", source="prom") >= 1

        prom.start()
        wait_until(lambda: d.healthz()[0] == 200, timeout=30, what="recovery after restart")
        before = d.metric("aiops_source_points_total", source="prom")
        wait_until(lambda: d.metric("aiops_source_points_total", source="prom") > before)
    finally:
        d.stop()


# --------------------------------------------------------------------------- auth, config


class _FakePrometheus(BaseHTTPRequestHandler):
    """Answers range queries with two points, or as ``script`` says; records requests."""

    seen: list[dict[str, Any]] = []  # noqa: RUF012 - replaced per test
    script: list[str] = []  # noqa: RUF012 - "fail" (HTTP 503), "slow" (0.8 s), then "ok"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length).decode()
        self.seen.append({"path": self.path, "auth": self.headers.get("Authorization"),
                          "body": body})  # fmt: skip
        action = self.script.pop(0) if self.script else "ok"
        if action == "slow":
            time.sleep(0.8)
        if action == "fail":
            self.send_error(503, "overloaded")
            return
        doc = {
            "status": "success",
            "data": {
                "resultType": "matrix",
                "result": [{"metric": {"job": "x"}, "values": [[1000, "1"], [1060, "NaN"]]}],
            },
        }
        data = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_prometheus() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    _FakePrometheus.seen = []
    _FakePrometheus.script = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakePrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/prefix", _FakePrometheus.seen
    server.shutdown()
    server.server_close()


def test_basic_auth_from_a_file_and_bearer_from_the_environment(
    fake_prometheus, tmp_path, monkeypatch
):
    url, seen = fake_prometheus
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    cfg = PrometheusSource.Config(url=url, username="aiops", password_file=str(secret))
    batch = PrometheusSource("p", cfg).fetch_history("up", 1000, 1060, 60, name="up")
    assert [(str(k), t) for k, t, _ in batch.points()] == [
        ('up{job="x"}', 1000.0),
        ('up{job="x"}', 1060.0),
    ]
    assert math.isnan(batch.values[1])
    assert seen[0]["path"] == "/prefix/api/v1/query_range"
    assert seen[0]["auth"] == "Basic " + base64.b64encode(b"aiops:s3cret").decode()
    assert "query=up" in seen[0]["body"]
    assert "step=60" in seen[0]["body"]
    secret.write_text("rotated")  # files are re-read when they change
    PrometheusSource("p", cfg).fetch_history("up", 1000, 1000, 60)
    assert seen[1]["auth"] == "Basic " + base64.b64encode(b"aiops:rotated").decode()

    monkeypatch.setenv("PROM_TOKEN", "tok")
    cfg = PrometheusSource.Config(url=url, token_env="PROM_TOKEN")
    PrometheusSource("p", cfg).fetch_history("up", 1000, 1000, 60)
    assert seen[2]["auth"] == "Bearer tok"
    monkeypatch.delenv("PROM_TOKEN")
    with pytest.raises(QueryError, match="environment variable PROM_TOKEN is not set"):
        PrometheusSource("p", cfg).fetch_history("up", 1000, 1000, 60)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"url": "prometheus:9090"}, "must be an http:// or https:// URL"),
        ({"password_env": "P"}, "password_env/password_file need username"),
        ({"username": "u"}, "username needs password_env or password_file"),
        ({"username": "u", "password_env": "P", "token_env": "T"}, "not both"),
        ({"token_env": "T", "token_file": "f"}, "give token_env or token_file, not both"),
        ({"cert_file": "c"}, "cert_file and key_file go together"),
        ({"max_points_per_query": 20_000}, "less than or equal to 11000"),
        ({"step": "0s"}, "must be greater than 0s"),
        ({"password": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_config_errors(settings, message):
    with pytest.raises(ValueError, match=message):
        PrometheusSource.Config.model_validate({"url": "http://p:9090", **settings})


def test_resume_state_is_checked_and_unreachable_prometheus_is_a_source_error():
    cfg = PrometheusSource.Config(url="http://127.0.0.1:1", timeout="1s")
    with pytest.raises(ValueError, match="resume state must be"):
        PrometheusSource("p", cfg, resume={"offsets": {}})
    with pytest.raises(ValueError, match="must be unix seconds"):
        PrometheusSource("p", cfg, resume={"rules": {"g/a": "yesterday"}})
    src = PrometheusSource("p", cfg, queries=[QuerySpec("g/A", "up", 0.2)])
    try:
        assert not _poll(src)  # starts the scheduler (the first query may have failed)
        err = wait_until(lambda: _raises(src.next_batch), timeout=10, what="a SourceError")
        assert err.startswith("all 1 queries failing; last error (g/A): cannot reach")
        assert list(src.problems()) == ["g/A"]
        assert src.snapshot() == {"rules": {}, "queries": {}}
    finally:
        src.close()


def _raises(fn: Any) -> str:
    try:
        fn()
    except SourceError as e:
        return str(e)
    return ""


def test_a_failed_evaluation_is_retried_soon_even_for_an_hourly_rule(fake_prometheus):
    url, seen = fake_prometheus
    _FakePrometheus.script = ["fail", "slow"]
    cfg = PrometheusSource.Config(url=url, timeout="500ms")
    src = PrometheusSource("p", cfg, queries=[QuerySpec("g/Hourly", "up", 3600.0)])
    try:
        assert not _poll(src)
        problem = wait_until(lambda: src.problems().get("g/Hourly", ""), timeout=5)
        assert problem == "1 failed evaluation(s) in a row: HTTP 503 overloaded"
        with pytest.raises(SourceError, match="all 1 queries failing"):
            src.next_batch()
        # the first retry comes after 1 s (and times out), the second 2 s later: well
        # before the next hourly run
        batch = wait_until(lambda: _poll(src), timeout=10, what="the answer after the retries")
        assert batch.rule == "g/Hourly"
        assert [str(k) for k in batch.keys] == ['Hourly{job="x"}']
        assert src.problems() == {}
        assert len(seen) == 3
    finally:
        src.close()


def _poll(src: PrometheusSource) -> Any:
    try:
        return src.next_batch()
    except SourceError:
        return None
