"""``aiops simulate``: encoders that round-trip through the decoders, file and Kafka output."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from servers import free_port, unique

from aiops.connectors.formats import create_decoder
from aiops.connectors.sources.simulator import SimulatorSource
from aiops.pipeline.decoder import Decoded
from aiops.simulate import (
    FORMATS,
    FileSink,
    KafkaSink,
    Record,
    Sink,
    encode_batch,
    encode_influx_lines,
    encode_prometheus_json,
    run_simulate,
)
from aiops.types import Batch, LogRecord, SeriesKey

REPO = Path(__file__).resolve().parents[1]
AIOPS = [sys.executable, "-m", "aiops.cli"]

READ_BACK: dict[str, dict[str, Any]] = {
    "prometheus_json": {},
    "influx_line": {},
    "log_lines": {"labels": {"app": "sim"}},
    "log_json": {"label_fields": ["host", "service"]},
}


def simulator_batches(**settings: Any) -> list[Batch]:
    src = SimulatorSource(
        "sim", SimulatorSource.Config(**{"hosts": 2, "duration": "1h", **settings})
    )
    out = []
    while not src.exhausted:
        out.append(src.next_batch())
    return out


def decode_all(fmt: str, records: list[Record]) -> Decoded:
    decoder = create_decoder(fmt, READ_BACK[fmt])
    out = Decoded()
    for r in records:
        out.extend(decoder.decode(r.value, timestamp=r.timestamp_ms / 1000))
    return out


def points(batches: list[Batch]) -> list[tuple[str, float, float]]:
    return [(str(k), t, v) for b in batches for k, t, v in b.points()]


@pytest.mark.parametrize("fmt", FORMATS)
def test_simulator_output_reads_back_exactly(fmt):
    batches = simulator_batches(logs=fmt.startswith("log"))
    records = [r for b in batches for r in encode_batch(b, fmt)]
    got = decode_all(fmt, records)
    assert not got.rejects
    assert not got.skipped
    assert all(r.key in {f"host-{h}/{s}".encode() for h in (1, 2) for s in ("api", "web", "db")}
               for r in records)  # fmt: skip
    if fmt == "prometheus_json":
        assert len(records) == got.n_points
        assert [(str(k), t, v) for k, t, v in got.points()] == points(batches)
    elif fmt == "influx_line":
        assert len(records) == got.n_points * 3 // 5  # cpu, memory, http (3 fields)
        assert [(str(k), t, v) for k, t, v in got.points()] == points(batches)
    else:
        logs = [r for b in batches for r in b.logs]
        assert len(records) == len(got.logs) == len(logs) > 0
        for sent, back in zip(logs, got.logs, strict=True):
            assert (round(back.timestamp * 1000), back.message) == (
                round(sent.timestamp * 1000),
                sent.message,
            )
            assert back.labels == (sent.labels if fmt == "log_json" else (("app", "sim"),))


names = st.from_regex(r"[a-z][a-z0-9]{0,6}_[a-z0-9_]{1,8}", fullmatch=True)
label_names = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
# Line protocol: no control characters, no backslashes (a trailing one would escape the
# separator after it), and tag values may not be empty.
label_values = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\\"),
    min_size=1,
    max_size=8,
)
series = st.builds(SeriesKey.of, names, st.dictionaries(label_names, label_values, max_size=3))
millis = st.integers(min_value=0, max_value=4_102_444_800_000)  # 1970 .. 2100


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(series, millis, st.floats(allow_nan=True, allow_infinity=True)),
        min_size=1,
        max_size=20,
    )
)
def test_prometheus_json_round_trips_any_series(pts):
    batch = Batch.from_points([(k, ms / 1000, v) for k, ms, v in pts])
    got = decode_all("prometheus_json", list(encode_prometheus_json(batch)))
    assert not got.rejects
    # To the millisecond: the decoder adds the fraction to the whole seconds, which can
    # be one ulp off ms / 1000 (1.9100000000000001 for 1910 ms).
    assert [(k, round(t * 1000)) for k, t, _ in got.points()] == [(k, ms) for k, ms, _ in pts]
    for (_, _, a), (_, _, b) in zip(got.points(), pts, strict=True):
        assert a == b or (math.isnan(a) and math.isnan(b))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(series, millis, st.floats(allow_nan=True, allow_infinity=True)),
        min_size=1,
        max_size=20,
    )
)
def test_influx_lines_round_trip_every_finite_point(pts):
    batch = Batch.from_points([(k, ms / 1000, v) for k, ms, v in pts])
    skipped = [0]
    got = decode_all("influx_line", list(encode_influx_lines(batch, skipped)))
    assert not got.rejects
    finite = [(k, ms / 1000, v) for k, ms, v in pts if math.isfinite(v)]
    assert skipped[0] == len(pts) - len(finite)
    assert list(got.points()) == finite


def test_log_encoders_keep_awkward_messages():
    logs = [
        LogRecord(1.5, 'quote " and \\ backslash, tab\there', (("host", "h"), ("service", "s"))),
        LogRecord(2.25, "ünïcödé ✓", (("host", "h"), ("service", "s"))),
    ]
    batch = Batch(logs=logs)
    for fmt in ("log_lines", "log_json"):
        got = decode_all(fmt, list(encode_batch(batch, fmt)))
        assert [(r.timestamp, r.message) for r in got.logs] == [
            (1.5, logs[0].message),
            (2.25, logs[1].message),
        ]


class ListSink(Sink):
    def __init__(self) -> None:
        self.records: list[Record] = []
        self.closed = False

    @property
    def target(self) -> str:
        return "a list"

    def send(self, record: Record) -> None:
        self.records.append(record)

    def close(self) -> None:
        self.closed = True


def test_rate_paces_records_and_stop_interrupts():
    sink = ListSink()
    t0 = time.monotonic()
    summary = run_simulate(
        sink, fmt="prometheus_json", rate=2000, hosts=1, duration="5m", progress=False
    )
    elapsed = time.monotonic() - t0
    assert summary.records == len(sink.records) == 20 * 15  # 20 steps x 15 series
    assert elapsed >= 300 / 2000 * 0.9
    assert sink.closed
    assert not summary.interrupted
    assert "300 records (300 points, 0 logs) to a list" in summary.line(sink.target)

    stop = threading.Event()
    endless = ListSink()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    summary = run_simulate(endless, fmt="log_json", rate=500, progress=False, stop=stop)
    assert summary.interrupted
    assert endless.closed
    assert 0 < summary.records == summary.logs == len(endless.records) < 500


def test_bad_settings_close_the_sink():
    sink = ListSink()
    with pytest.raises(ValueError, match='duration: invalid duration "10x"'):
        run_simulate(sink, fmt="influx_line", rate=0, duration="10x", progress=False)
    assert sink.closed


def test_cli_writes_a_file_the_decoders_read(tmp_path):
    out = tmp_path / "fleet.influx"
    run = subprocess.run(
        [*AIOPS, "simulate", "--out", str(out), "--format", "influx_line", "--rate", "0",
         "--duration", "30m", "--hosts", "1", "--seed", "7", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stderr.strip().startswith("simulate: 1080 records (1800 points, 0 logs) to ")
    decoder = create_decoder("influx_line")
    got = Decoded()
    for line in out.read_bytes().splitlines():
        got.extend(decoder.decode(line))
    assert [(str(k), t, v) for k, t, v in got.points()] == points(
        simulator_batches(hosts=1, duration="30m", seed=7)
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "influx_line"], "give exactly one of --kafka and --out"),
        (["--format", "influx_line", "--out", "-", "--kafka", "k:1"], "give exactly one"),
        (["--format", "influx_line", "--kafka", "k:1"], "--kafka needs --topic"),
        (["--format", "csv", "--out", "-"], "Invalid value for '--format'"),
        (["--format", "log_json", "--out", "-", "--hosts", "0"], "Invalid value for '--hosts'"),
    ],
)
def test_cli_usage_errors(args, message):
    run = subprocess.run(
        [*AIOPS, "simulate", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2
    assert message in run.stderr


def test_unreachable_kafka_is_a_clear_error():
    with pytest.raises(ConnectionError, match=r"cannot connect to Kafka at 127\.0\.0\.1:"):
        KafkaSink(f"127.0.0.1:{free_port()}", "t", timeout=1.0)


def test_file_sink_to_stdout_is_not_closed(capsysbinary):
    sink = FileSink("-")
    sink.send(Record(None, b"x", 0.0))
    sink.close()
    assert capsysbinary.readouterr().out == b"x\n"


@pytest.mark.servers
def test_cli_produces_to_kafka_at_a_rate(kafka_broker):
    topic = unique("sim")
    kafka_broker.create_topic(topic, 3)
    t0 = time.monotonic()
    run = subprocess.run(
        [*AIOPS, "simulate", "--kafka", kafka_broker.bootstrap, "--topic", topic,
         "--format", "prometheus_json", "--rate", "1500", "--duration", "10m", "--hosts", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    assert run.returncode == 0, run.stderr
    summary = run.stderr.strip().splitlines()[-1]
    target = f"kafka {kafka_broker.bootstrap} topic {topic}"
    assert summary.startswith(f"simulate: 600 records (600 points, 0 logs) to {target} in ")
    assert "rec/s" in run.stderr  # the progress bar
    assert elapsed >= 600 / 1500
    records = kafka_broker.consume_all(topic)
    assert len(records) == 600
    decoder = create_decoder("prometheus_json")
    by_key: dict[bytes, set[int]] = defaultdict(set)
    got = []
    for r in records:
        by_key[r.key].add(r.partition)
        ((k, t, v),) = decoder.decode(r.value).points()
        assert r.timestamp == round(t * 1000)
        got.append((str(k), t, v))
    assert all(len(parts) == 1 for parts in by_key.values())
    want = points(simulator_batches(hosts=1, duration="10m"))
    assert sorted(got) == sorted(want)
    assert (
        json.loads(records[0].value)["labels"]["__name__"] == json.loads(records[0].value)["name"]
    )
