"""The daemon's HTTP listener: /healthz, /readyz, /metrics, receivers, lifecycle.

``start_daemon`` and ``RunningDaemon`` are shared with the Prometheus and remote-write
tests: they write a config (JSON is YAML), build the daemon as ``aiops run`` does and
run its loop in a thread, with the listener on a free port.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from aiops.alerting.routing import Dispatcher, RouteNode, Router
from aiops.config import load_config
from aiops.pipeline.engine import Engine, RuleSpec
from aiops.pipeline.source import Source, SourceError
from aiops.service.app import build_daemon
from aiops.service.daemon import Daemon
from aiops.service.http import HttpRequest, HttpResponse, HttpServer, NullListener
from aiops.service.metrics import PrometheusMetrics
from aiops.state.checkpoint import Checkpointer
from aiops.state.envelope import FileStateStore
from aiops.testing import ListNotifier, MemorySource
from aiops.types import Batch, Reject, SeriesKey

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- helpers


def wait_until(probe: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` from exposition text."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@dataclass
class RunningDaemon:
    daemon: Daemon
    thread: threading.Thread
    stop_event: threading.Event
    state_dir: Path
    errors: list[BaseException]

    @property
    def url(self) -> str:
        return self.daemon.listener.url  # type: ignore[attr-defined]

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=10)

    def healthz(self) -> tuple[int, dict[str, Any]]:
        r = self.get("/healthz")
        return r.status_code, r.json()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return metric_values(self.get("/metrics").text)

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def alerts(self) -> list[dict[str, Any]]:
        path = self.state_dir / "alerts.jsonl"
        if not path.exists():
            return []
        return [a for line in path.read_text().splitlines() for a in json.loads(line)["alerts"]]

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "daemon did not stop"
        if self.errors:
            raise self.errors[0]


def write_config(
    directory: Path,
    sources: dict[str, Any],
    rules: list[dict[str, Any]],
    *,
    interval: str = "1s",
    listen: str = "127.0.0.1:0",
    checkpoint_interval: str = "1h",
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rules.yaml").write_text(
        json.dumps({"groups": [{"name": "g", "interval": interval, "rules": rules}]})
    )
    (directory / "alerting.yaml").write_text(
        json.dumps(
            {
                # One group per alert, sent at once: these tests wait for transitions.
                "route": {
                    "receiver": "file",
                    "group_by": ["..."],
                    "group_wait": "0s",
                    "group_interval": "1s",
                },
                "receivers": [{"name": "file", "jsonl_configs": [{"path": "alerts.jsonl"}]}],
            }
        )
    )
    config = {
        "sources": sources,
        "state": {"dir": "state", "checkpoint_interval": checkpoint_interval},
        "http": {"listen": listen},
        "rule_files": ["rules.yaml"],
        "alerting_file": "alerting.yaml",
    }
    path = directory / "aiops.yaml"
    path.write_text(json.dumps(config))
    return path


def start_daemon(config: Path, *, wait_ready: bool = True) -> RunningDaemon:
    loaded = load_config(config)
    state_dir = loaded.daemon.state.dir
    daemon = build_daemon(loaded, state_dir=state_dir)
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            daemon.run(stop, until_exhausted=False)
        except BaseException as e:  # surfaced by stop()
            errors.append(e)

    thread = threading.Thread(target=run, name="daemon", daemon=True)
    thread.start()
    running = RunningDaemon(daemon, thread, stop, state_dir, errors)
    if wait_ready:
        wait_until(lambda: daemon.ready or errors, what="daemon ready")
        if errors:
            raise errors[0]
    return running


# --------------------------------------------------------------------------- fixtures


KEYS = [SeriesKey.of("latency", {"host": f"h{i}"}) for i in range(3)]


def latency_batches(n_batches: int = 10, steps: int = 20) -> list[Batch]:
    rng = np.random.default_rng(7)
    out = []
    for b in range(n_batches):
        step = np.arange(b * steps, (b + 1) * steps)
        t = np.repeat(step * 60.0, 3)
        series = np.tile(np.arange(3), len(step))
        v = 50 + rng.normal(0, 1, len(t))
        v[(series == 1) & (t == 150 * 60.0)] += 40  # one spike on h1
        out.append(Batch(keys=KEYS, series=series, timestamps=t, values=v))
    out.append(Batch(rejects=[Reject("bad_json", "x", b"{", "f:1"), Reject("bad_value", "y")]))
    return out


class Failing(Source):
    def next_batch(self) -> Batch:
        raise SourceError("broker unreachable")

    def snapshot(self) -> dict[str, Any]:
        return {}


class Degraded(Source):
    """Works (empty batches) while one of its parts fails."""

    def next_batch(self) -> Batch:
        return Batch()

    def snapshot(self) -> dict[str, Any]:
        return {}

    def problems(self) -> dict[str, str]:
        return {"g/Bad": "HTTP 400 bad_data: parse error"}


class Receiver(MemorySource):
    """A minimal HttpReceiver: records bodies, answers 204."""

    def __init__(self, path: str = "/push") -> None:
        super().__init__([])
        self.http_path = path
        self.max_body_bytes = 100
        self.bodies: list[bytes] = []
        self.receiving = True

    def handle_http(self, request: HttpRequest) -> HttpResponse:
        if not self.receiving:
            return HttpResponse(503)
        self.bodies.append(request.body)
        return HttpResponse(204)

    def stop_receiving(self) -> None:
        self.receiving = False


def make_daemon(tmp_path: Path, sources: dict[str, Source], *, max_series: int = 2) -> Daemon:
    spec = RuleSpec(
        group="g",
        alert="Lat",
        source="mem",
        matches=lambda k: True,
        detector_type="robust_ewma",
        threshold=0.9999,
        detector_params={"warmup": 20},
        max_series=max_series,
    )
    metrics = PrometheusMetrics()
    notifier = ListNotifier()
    daemon = Daemon(
        sources=sources,
        engine=Engine([spec]),
        router=Router(RouteNode("r")),
        dispatcher=Dispatcher({"r": [metrics.wrap_notifier("r", notifier)]}),
        checkpointer=Checkpointer(FileStateStore(tmp_path / "state")),
        checkpoint_interval=0.0,
        metrics=metrics,
        poll_interval=0.05,
    )
    daemon.listener = HttpServer("127.0.0.1:0", daemon, metrics)
    return daemon


def run_in_thread(daemon: Daemon) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,), kwargs={"until_exhausted": False})
    thread.start()
    wait_until(lambda: daemon.ready, what="daemon ready")
    return stop, thread


# --------------------------------------------------------------------------- tests


def test_healthz_lists_each_source_state_and_metrics_count_everything(tmp_path):
    daemon = make_daemon(
        tmp_path,
        {"mem": MemorySource(latency_batches()), "broker": Failing(), "prom": Degraded()},
    )
    stop, thread = run_in_thread(daemon)
    url = daemon.listener.url
    try:
        # the last batch holds the rejects: once they are counted, everything is
        wait_until(lambda: daemon.health_report["mem"]["rejects"], what="memory source read")
        r = requests.get(url + "/healthz", timeout=5)
        assert r.status_code == 503
        assert r.headers["Content-Type"] == "application/json"
        doc = r.json()
        assert doc["status"] == "unhealthy"
        broker = doc["sources"]["broker"]
        assert broker["state"] == "failing"
        assert broker["last_error"] == "SourceError: broker unreachable"
        assert broker["failures"] >= 1
        assert 0 < broker["retry_in"] <= 60
        prom = doc["sources"]["prom"]
        assert prom["state"] == "degraded"
        assert prom["problems"] == {"g/Bad": "HTTP 400 bad_data: parse error"}
        mem = doc["sources"]["mem"]
        assert mem["state"] == "ok"
        assert mem["points"] == 600
        assert mem["rejects"] == {"bad_json": 1, "bad_value": 1}

        assert requests.get(url + "/readyz", timeout=5).json()["status"] == "ready"

        text = requests.get(url + "/metrics", timeout=5).text
        m = metric_values(text)
        assert m[("aiops_source_points_total", (("source", "mem"),))] == 600
        assert m[("aiops_source_rejects_total", (("reason", "bad_json"), ("source", "mem")))] == 1
        assert m[("aiops_source_failures_total", (("source", "broker"),))] >= 1
        assert m[("aiops_source_healthy", (("source", "mem"),))] == 1
        assert m[("aiops_source_healthy", (("source", "broker"),))] == 0
        assert m[("aiops_source_problems", (("source", "prom"),))] == 1
        fired = m[("aiops_alerts_total", (("alertname", "Lat"), ("status", "firing")))]
        assert fired >= 1
        delivered = m[("aiops_notifications_total", (("receiver", "r"), ("result", "delivered")))]
        assert delivered == fired + m.get(
            ("aiops_alerts_total", (("alertname", "Lat"), ("status", "resolved"))), 0
        )
        # max_series=2: the third host is dropped, and counted.
        assert m[("aiops_rule_series", (("rule", "g/Lat"),))] == 2
        assert m[("aiops_rule_dropped_series", (("rule", "g/Lat"),))] == 1
        assert m[("aiops_checkpoint_duration_seconds_count", ())] >= 1
        assert m[("aiops_checkpoint_size_bytes", ())] > 0
        assert 0 <= m[("aiops_checkpoint_age_seconds", ())] < 60
        assert m[("aiops_build_info", (("version", __import__("aiops").__version__),))] == 1
        assert ("process_resident_memory_bytes", ()) in m
        code = m[("aiops_http_requests_total", (("code", "503"), ("handler", "healthz")))]
        assert code == 1

        # Content negotiation comes from prometheus-client.
        om = requests.get(
            url + "/metrics", headers={"Accept": "application/openmetrics-text"}, timeout=5
        )
        assert om.headers["Content-Type"].startswith("application/openmetrics-text")
        assert om.text.rstrip().endswith("# EOF")
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/healthz", timeout=2)


def test_healthz_is_200_when_every_source_is_ok_and_503_before_start(tmp_path):
    daemon = make_daemon(tmp_path, {"mem": MemorySource(latency_batches(2))})
    daemon.listener.start()
    try:
        url = daemon.listener.url
        r = requests.get(url + "/readyz", timeout=5)
        assert r.status_code == 503
        assert r.json() == {"status": "not running", "loop_age_seconds": None}
        r = requests.get(url + "/healthz", timeout=5)
        assert r.status_code == 503
        assert r.json()["status"] == "not running"
    finally:
        daemon.listener.stop()
    stop, thread = run_in_thread(daemon)
    try:
        url = daemon.listener.url
        r = requests.get(url + "/healthz", timeout=5)
        assert r.status_code == 200, r.text
        assert r.json()["sources"]["mem"]["state"] == "ok"
        r = requests.get(url + "/readyz", timeout=5)
        assert r.status_code == 200
        assert r.json()["loop_age_seconds"] < 5
        # HEAD, 404, 405, the index
        assert requests.head(url + "/healthz", timeout=5).status_code == 200
        assert requests.get(url + "/nope", timeout=5).status_code == 404
        r = requests.post(url + "/healthz", timeout=5)
        assert r.status_code == 405
        assert r.headers["Allow"] == "GET, HEAD"
        assert "/metrics" in requests.get(url + "/", timeout=5).text
    finally:
        stop.set()
        thread.join(30)


def test_receivers_are_mounted_bounded_and_stopped_before_the_final_drain(tmp_path):
    recv = Receiver()
    daemon = make_daemon(tmp_path, {"mem": MemorySource([]), "push": recv})
    stop, thread = run_in_thread(daemon)
    url = daemon.listener.url
    try:
        assert requests.post(url + "/push", data=b"abc", timeout=5).status_code == 204
        assert requests.get(url + "/push", timeout=5).status_code == 405
        r = requests.post(url + "/push", data=b"x" * 101, timeout=5)
        assert r.status_code == 413
        # A chunked body (no Content-Length) is bounded too.
        r = requests.post(url + "/push", data=iter([b"x" * 60, b"y" * 60]), timeout=5)
        assert r.status_code == 413
        assert recv.bodies == [b"abc"]
        assert "/push" in requests.get(url + "/", timeout=5).text
    finally:
        stop.set()
        thread.join(30)
    assert recv.receiving is False  # told before the drain and the final checkpoint


def test_two_receivers_on_one_path_are_a_configuration_error(tmp_path):
    daemon = make_daemon(tmp_path, {"a": Receiver("/w"), "b": Receiver("/w")})
    with pytest.raises(ValueError, match="sources a and b both receive on /w"):
        daemon.run(threading.Event())
    daemon = make_daemon(tmp_path, {"a": Receiver("/metrics")})
    with pytest.raises(ValueError, match="path /metrics is the listener's own endpoint"):
        daemon.run(threading.Event())


def test_without_listen_nothing_is_bound_and_receivers_are_warned_about(tmp_path, caplog):
    config = write_config(
        tmp_path,
        {"rw": {"type": "remote_write"}},
        [{"alert": "A", "source": "rw", "selector": "up"}],
        listen="",
    )
    loaded = load_config(config)
    daemon = build_daemon(loaded, state_dir=tmp_path / "state")
    assert isinstance(daemon.listener, NullListener)
    assert daemon.metrics.registry is None
    with caplog.at_level("WARNING"):
        daemon.start()
    assert "source rw receives on HTTP /api/v1/write but http.listen is off" in caplog.text
    daemon.shutdown()


def test_aiops_run_serves_healthz_and_stops_on_sigterm_and_refuses_a_taken_port(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = tmp_path / "in.csv"
        data.write_text("timestamp,value\n" + "".join(f"{i},{i % 5}\n" for i in range(100)))
        sources = {"f": {"type": "file", "path": str(data), "follow": True}}
        rules = [{"alert": "A", "source": "f", "selector": "value"}]
        config = write_config(tmp_path / "a", sources, rules, listen=f"127.0.0.1:{port}")
        out = subprocess.run(
            [sys.executable, "-m", "aiops.cli", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
        assert "Traceback" not in out.stderr

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = write_config(tmp_path / "b", sources, rules, listen=f"127.0.0.1:{port}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiops.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:

        def healthy() -> bool:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            except requests.ConnectionError:
                return False
            return r.status_code == 200 and r.json()["sources"]["f"]["points"] == 100

        wait_until(healthy, timeout=30, what="aiops run to serve /healthz")
        m = metric_values(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
        assert m[("aiops_source_points_total", (("source", "f"),))] == 100
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "HTTP listener on 127.0.0.1" in err
    assert "stopped" in err
