"""Remote write into the daemon: decoding, backpressure, fuzzing, a real Prometheus."""

from __future__ import annotations

import math
import struct
import threading
import time
from typing import Any

import cramjam
import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from servers import free_port
from test_http import start_daemon, wait_until, write_config

from aiops.connectors.sources.remote_write import (
    STALE_NAN_BITS,
    RemoteWriteSource,
    decode_write_request,
    encode_write_request,
    message_classes,
)
from aiops.service.http import HttpRequest, HttpServer
from aiops.testing import StaticView
from aiops.types import SeriesKey

PATH = "/api/v1/write"
STALE = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]


def post(src: RemoteWriteSource, body: bytes) -> int:
    return src.handle_http(HttpRequest("POST", PATH, {}, body)).status


def reference_decode(body: bytes) -> list[tuple[SeriesKey, float, float]]:
    """Decode with protobuf's own classes (the slow, obviously right way)."""
    req = message_classes()["WriteRequest"]()
    req.ParseFromString(bytes(cramjam.snappy.decompress_raw(body)))
    out = []
    for ts in req.timeseries:
        labels = {lb.name: lb.value for lb in ts.labels}
        key = SeriesKey.of(labels["__name__"], labels)
        for s in ts.samples:
            if struct.pack("<d", s.value) == struct.pack("<Q", STALE_NAN_BITS):
                continue
            out.append((key, s.timestamp / 1000.0, s.value))
    return out


def same(a: list[tuple[SeriesKey, float, float]], b: list[tuple[SeriesKey, float, float]]):
    assert len(a) == len(b)
    for (ka, ta, va), (kb, tb, vb) in zip(a, b, strict=True):
        assert ka == kb
        assert ta == tb
        assert va == vb or (math.isnan(va) and math.isnan(vb))


# --------------------------------------------------------------------------- decoding

label_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
sample_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, STALE]),
)
sample_times = st.one_of(
    st.integers(1_600_000_000_000, 1_900_000_000_000),  # the vectorized layout
    st.integers(-(2**62), 2**62),  # anything else
    st.just(0),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.dictionaries(st.sampled_from(["job", "instance", "le", "x" * 200]), label_text),
            st.text(min_size=1, max_size=30),
            st.lists(st.tuples(sample_times, sample_values), max_size=5),
        ),
        max_size=20,
    )
)
def test_decoding_matches_protobuf_for_any_series(series):
    req = message_classes()["WriteRequest"]()
    for labels, name, samples in series:
        ts = req.timeseries.add()
        for k, v in sorted({**labels, "__name__": name}.items()):
            ts.labels.add(name=k, value=v)
        for t, v in samples:
            ts.samples.add(timestamp=t, value=v)
    body = cramjam.snappy.compress_raw(req.SerializeToString()).read()
    batch, rejects = decode_write_request(body)
    assert rejects == []
    same(list(batch.points()), reference_decode(body))


def test_fields_in_any_order_and_unknown_fields_decode_like_protobuf():
    classes = message_classes()
    label = classes["TimeSeries"]()
    label.labels.add(name="__name__", value="up")
    sample = classes["TimeSeries"]()
    sample.samples.add(timestamp=1_700_000_000_000, value=2.5)
    other = classes["TimeSeries"]()
    other.labels.add(name="job", value="j")
    # samples before and between labels, plus an unknown varint field 9 (tag 0x48)
    ts = sample.SerializeToString() + label.SerializeToString() + b"\x48\x05"
    ts += sample.SerializeToString() + other.SerializeToString()
    raw = b"\x0a" + bytes([len(ts)]) + ts
    body = cramjam.snappy.compress_raw(raw).read()
    batch, rejects = decode_write_request(body)
    assert rejects == []
    assert [(str(k), t, v) for k, t, v in batch.points()] == [
        ('up{job="j"}', 1_700_000_000.0, 2.5),
        ('up{job="j"}', 1_700_000_000.0, 2.5),
    ]


def test_stale_markers_are_dropped_and_bad_series_rejected_one_by_one():
    src = RemoteWriteSource("rw", RemoteWriteSource.Config())
    body = encode_write_request(
        [
            ({"__name__": "up", "job": "a"}, [(10, 1.0), (25, STALE), (40, 0.0)]),
            ({"job": "nameless"}, [(10, 1.0)]),
            ({"__name__": "up", "job": "b"}, [(10, 7.0)]),
        ]
    )
    assert post(src, body) == 204
    batch = src.next_batch()
    assert [(str(k), t, v) for k, t, v in batch.points()] == [
        ('up{job="a"}', 10.0, 1.0),
        ('up{job="a"}', 40.0, 0.0),
        ('up{job="b"}', 10.0, 7.0),
    ]
    assert [r.reason for r in batch.rejects] == ["missing_field"]
    assert src.stale_dropped == 1


def test_bad_payloads_are_400_or_413_and_rejects_with_their_first_bytes():
    src = RemoteWriteSource("rw", RemoteWriteSource.Config(max_decoded_bytes=1000))
    bomb = cramjam.snappy.compress_raw(b"\x00" * 5000).read()
    not_proto = cramjam.snappy.compress_raw(b"\x0a\xff\xff\xff\x0f").read()
    statuses = [post(src, b"not snappy at all"), post(src, bomb), post(src, not_proto)]
    assert statuses == [400, 413, 400]
    rejects = src.next_batch().rejects
    assert [r.reason for r in rejects] == ["bad_snappy", "too_large", "bad_protobuf"]
    assert rejects[0].raw == b"not snappy at all"
    assert "max_decoded_bytes=1000" in rejects[1].detail
    assert src.next_batch().rejects == ()


def test_a_full_queue_answers_503_until_the_daemon_takes_batches():
    src = RemoteWriteSource("rw", RemoteWriteSource.Config(max_queued_samples=5))
    three = encode_write_request([({"__name__": "m"}, [(1, 1.0), (2, 2.0), (3, 3.0)])])
    assert post(src, three) == 204
    assert post(src, three) == 503  # 3 + 3 > 5
    resp = src.handle_http(HttpRequest("POST", PATH, {}, three))
    assert resp.status == 503
    assert ("Retry-After", "1") in resp.headers
    assert src.refused == 2
    assert src.queued_samples == 3
    assert src.next_batch().n_points == 3
    assert post(src, three) == 204
    big = encode_write_request([({"__name__": "m"}, [(i, 1.0) for i in range(10)])])
    # Larger than the whole queue: it can never be kept, so 413 (not retried), never 204.
    assert post(src, big) == 413
    src.next_batch()
    resp = src.handle_http(HttpRequest("POST", PATH, {}, big))
    assert (resp.status, resp.refusal) == (413, "too_many_samples")
    assert src.queued_samples == 0
    assert [r.reason for r in src.next_batch().rejects] == ["too_many_samples"]
    assert post(src, three) == 204
    src.stop_receiving()
    assert post(src, three) == 503
    assert src.next_batch().n_points == 3


def test_config_checks_the_path():
    with pytest.raises(ValueError, match="must be a URL path"):
        RemoteWriteSource.Config(path="api/v1/write")
    with pytest.raises(ValueError, match="resume state must be"):
        RemoteWriteSource("rw", RemoteWriteSource.Config(), resume={"x": 1})


def test_every_acknowledged_sample_is_scored_before_the_final_checkpoint(tmp_path):
    config = write_config(
        tmp_path,
        {"rw": {"type": "remote_write"}},
        [{"alert": "Any", "source": "rw", "selector": "m"}],
    )
    d = start_daemon(config)
    bodies = [
        encode_write_request([({"__name__": "m", "i": str(i)}, [(k, 1.0)]) for i in range(500)])
        for k in range(1, 41)
    ]
    accepted = []

    def send(part: list[bytes]) -> None:
        session = requests.Session()
        for body in part:
            try:
                r = session.post(d.url + PATH, data=body, timeout=10)
            except requests.ConnectionError:
                return
            accepted.append(r.status_code == 204)

    threads = [threading.Thread(target=send, args=(bodies[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: len(accepted) >= 5, what="some requests answered")
    d.stop()  # while requests are still coming in
    for t in threads:
        t.join()
    assert 5 <= sum(accepted) <= 40
    assert d.daemon.health["rw"].points == 500 * sum(accepted)


# --------------------------------------------------------------------------- fuzzing


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_random_bytes_never_raise_and_every_400_is_one_reject(body, compress):
    src = RemoteWriteSource("rw", RemoteWriteSource.Config())
    if compress:  # past snappy, into the protobuf layer
        body = cramjam.snappy.compress_raw(body).read()
    status = post(src, body)
    assert status in (204, 400, 413)
    batch = src.next_batch()
    bad = [r for r in batch.rejects if r.reason in ("bad_snappy", "bad_protobuf", "too_large")]
    assert len(bad) == (status != 204)


@pytest.fixture(scope="module")
def fuzz_server():
    src = RemoteWriteSource("rw", RemoteWriteSource.Config())
    server = HttpServer("127.0.0.1:0", StaticView())
    server.start()
    server.attach({"rw": src})
    session = requests.Session()
    counts = {"400": 0}
    yield server, src, session, counts
    session.close()
    server.stop()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.binary(max_size=2000), compress=st.booleans())
def test_random_bytes_over_http_never_crash_the_server_and_are_counted(fuzz_server, body, compress):
    server, src, session, counts = fuzz_server
    if compress:
        body = cramjam.snappy.compress_raw(body).read()
    r = session.post(server.url + PATH, data=body, timeout=10)
    assert r.status_code in (204, 400, 413), r.text
    counts["400"] += r.status_code == 400
    batch = src.next_batch()
    bad = [x for x in batch.rejects if x.reason in ("bad_snappy", "bad_protobuf", "too_large")]
    assert len(bad) == (r.status_code != 204)
    assert session.get(server.url + "/readyz", timeout=10).status_code == 200


# --------------------------------------------------------------------------- real Prometheus


@pytest.mark.servers
def test_a_real_prometheus_remote_writes_to_the_daemon_and_anomalies_alert(
    prometheus_server, tmp_path
):
    # A tiny exporter whose latency we control; Prometheus scrapes it four times a second
    # and remote-writes everything to the daemon.
    registry = CollectorRegistry()
    latency = Gauge("test_latency_seconds", "latency", ["host"], registry=registry)
    exporter_port = free_port()
    exporter, _ = start_http_server(exporter_port, "127.0.0.1", registry=registry)
    spike = threading.Event()
    stop = threading.Event()

    def wiggle() -> None:
        rng = np.random.default_rng(3)
        while not stop.is_set():
            for host in ("a", "b"):
                base = 0.2 + 0.01 * rng.normal()
                latency.labels(host).set(base + (2.0 if spike.is_set() and host == "b" else 0.0))
            time.sleep(0.1)

    wiggler = threading.Thread(target=wiggle, daemon=True)
    wiggler.start()

    config = write_config(
        tmp_path,
        {"rw": {"type": "remote_write"}},
        [
            {
                "alert": "LatencyAnomaly",
                "source": "rw",
                "selector": "test_latency_seconds",
                "detector": {"type": "robust_ewma", "params": {"warmup": 8, "alpha": 0.2}},
                "threshold": 0.9999,
            },
            {"alert": "Up", "source": "rw", "selector": "up"},
        ],
    )
    d = start_daemon(config)
    try:
        prom = prometheus_server(
            {
                "global": {"scrape_interval": "250ms", "scrape_timeout": "200ms"},
                "scrape_configs": [
                    {
                        "job_name": "exporter",
                        "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}],
                    }
                ],
                "remote_write": [
                    {
                        "url": d.url + PATH,
                        "queue_config": {
                            "batch_send_deadline": "100ms",
                            "min_backoff": "50ms",
                            "max_backoff": "500ms",
                        },
                        "metadata_config": {"send": False},
                    }
                ],
            }
        )

        def learned(n: int) -> bool:  # both hosts past the detector's warm-up
            rt = d.daemon.engine.rules["g/LatencyAnomaly"]
            seen = rt.detector.state_dict()["n"]
            return len(rt.registry) == 2 and min(seen) >= n

        wait_until(lambda: learned(16), timeout=30, what="remote-written samples scored")
        spike.set()

        def fired() -> list[dict[str, Any]]:
            return [
                a
                for a in d.alerts()
                if a["status"] == "firing" and a["labels"]["alertname"] == "LatencyAnomaly"
            ]

        alerts = wait_until(fired, timeout=30, what="the latency spike to alert")
        assert {a["labels"]["host"] for a in alerts} == {"b"}
        assert alerts[0]["labels"]["job"] == "exporter"
        m = d.metrics()
        assert m[("aiops_source_points_total", (("source", "rw"),))] > 40
        assert m[("aiops_http_requests_total", (("code", "204"), ("handler", PATH)))] >= 2
        assert not any(k[0] == "aiops_source_rejects_total" for k in m)
        assert "non-recoverable" not in prom.log_tail(200)
        # Stop Prometheus first: stopping, it flushes its queue to the daemon.
        prom.stop()
    finally:
        stop.set()
        exporter.shutdown()
        d.stop()
