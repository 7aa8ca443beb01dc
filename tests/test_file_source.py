"""FileSource: CSV and JSONL replay, rejects, resume at every batch boundary, follow mode."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from aiops.connectors.sources.files import FileSource, parse_timestamps, parse_values
from aiops.pipeline.source import SourceError
from aiops.registry import SOURCES
from aiops.timeutil import parse_timestamp
from aiops.types import Batch, Reject

Point = tuple[str, float, float]


def make(path: Path, resume: dict[str, Any] | None = None, **settings: Any) -> FileSource:
    return FileSource("f", FileSource.Config(path=str(path), **settings), resume=resume)


def points(batch: Batch) -> list[Point]:
    return [(str(k), t, v) for k, t, v in batch.points()]


def drain(src: FileSource, limit: int = 10_000) -> tuple[list[Point], list[Reject]]:
    pts: list[Point] = []
    rejects: list[Reject] = []
    for _ in range(limit):
        if src.exhausted:
            break
        batch = src.next_batch()
        pts += points(batch)
        rejects += batch.rejects
    else:
        raise AssertionError("source never exhausted")
    return pts, rejects


def same(a: list[Point], b: list[Point]) -> bool:
    """Equal point lists, NaN equal to NaN."""
    return len(a) == len(b) and all(
        x[0] == y[0] and x[1] == y[1] and (x[2] == y[2] or (math.isnan(x[2]) and math.isnan(y[2])))
        for x, y in zip(a, b, strict=True)
    )


def test_registered_as_file() -> None:
    assert SOURCES.get("file") is FileSource


def test_csv_iso_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "nab.csv"
    path.write_text(
        "timestamp,value\n"
        "2014-04-01 00:00:00,20.5\n"
        "2014-04-01T00:05:00,21\n"
        "2014-04-01T00:10:00Z,22.25\n"
        "2014-04-01T02:15:00+02:00,23\n"
        "2014-04-01T00:20:00.5,24\n"
    )
    src = make(path, metric="cpu", labels={"host": "a"})
    pts, rejects = drain(src)
    assert rejects == []
    t0 = 1396310400.0
    assert pts == [
        ('cpu{host="a"}', t0, 20.5),
        ('cpu{host="a"}', t0 + 300, 21.0),
        ('cpu{host="a"}', t0 + 600, 22.25),
        ('cpu{host="a"}', t0 + 900, 23.0),
        ('cpu{host="a"}', t0 + 1200.5, 24.0),
    ]


def test_csv_unix_timestamps_and_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_text("value,timestamp,comment\n1.5,1700000000,x\n2.5,1700000015.25,y\n")
    pts, rejects = drain(make(path))
    assert rejects == []
    assert pts == [("value{}", 1700000000.0, 1.5), ("value{}", 1700000015.25, 2.5)]


def test_empty_value_is_a_missing_point_not_a_reject(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("timestamp,value\n1,\n2, \n3,NaN\n4,4\n")
    pts, rejects = drain(make(path))
    assert rejects == []
    assert [t for _, t, _ in pts] == [1.0, 2.0, 3.0, 4.0]
    assert [math.isnan(v) for _, _, v in pts] == [True, True, True, False]


def test_bad_csv_rows_are_rejects_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(
        b"timestamp,value\n"  # line 1
        b"1,1\n"
        b"yesterday,2\n"  # 3: bad timestamp
        b"3,three\n"  # 4: bad value
        b"\n"  # 5: blank, skipped
        b"4\n"  # 6: too few fields
        b"5,\xff\xfe\n"  # 7: not UTF-8
        b"6,6\n"
        b"nan,7\n"  # 9: a non-finite time is not a time
    )
    src = make(path, batch_size=100)
    pts, rejects = drain(src)
    assert pts == [("value{}", 1.0, 1.0), ("value{}", 6.0, 6.0)]
    assert [(r.reason, r.origin) for r in rejects] == [
        ("bad_timestamp", f"{path}:3"),
        ("bad_value", f"{path}:4"),
        ("missing_field", f"{path}:6"),
        ("bad_utf8", f"{path}:7"),
        ("bad_timestamp", f"{path}:9"),
    ]
    assert rejects[0].raw == b"yesterday,2"
    assert "yesterday" in rejects[0].detail
    assert src.snapshot() == {"offset": path.stat().st_size, "line": 9}


def test_long_format_csv_with_labels_and_quotes(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text(
        "time,metric,host,dc,v\n"
        "10,cpu,a,x,1\n"
        '11,cpu,"b",x,2\n'
        "12,mem,a,,3\n"  # an empty label value is no label
        '13,"",a,x,4\n'  # an empty name is a reject
        '14,"cpu","a,b",x,5\n'
    )
    src = make(
        path,
        timestamp_column="time",
        value_column="v",
        name_column="metric",
        label_columns=["host", "dc"],
        labels={"env": "prod"},
    )
    pts, rejects = drain(src)
    assert pts == [
        ('cpu{dc="x",env="prod",host="a"}', 10.0, 1.0),
        ('cpu{dc="x",env="prod",host="b"}', 11.0, 2.0),
        ('mem{env="prod",host="a"}', 12.0, 3.0),
        ('cpu{dc="x",env="prod",host="a,b"}', 14.0, 5.0),
    ]
    assert [(r.reason, r.origin.rsplit(":", 1)[1]) for r in rejects] == [("missing_field", "5")]


def test_batch_keys_are_only_those_of_emitted_points(tmp_path: Path) -> None:
    path = tmp_path / "k.csv"
    path.write_text("t,n,v\n1,a,1\nx,b,2\n2,c,3\n")
    batch = make(path, timestamp_column="t", value_column="v", name_column="n").next_batch()
    assert [str(k) for k in batch.keys] == ["a{}", "c{}"]
    assert batch.series.tolist() == [0, 1]


def test_header_with_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "win.csv"
    path.write_bytes(b"\xef\xbb\xbftimestamp,value\r\n1,1\r\n2,2\r\n")
    pts, rejects = drain(make(path))
    assert rejects == []
    assert pts == [("value{}", 1.0, 1.0), ("value{}", 2.0, 2.0)]


def test_last_line_without_newline_is_read_when_not_following(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_text("timestamp,value\n1,1\n2,2")
    src = make(path)
    pts, _ = drain(src)
    assert [t for _, t, _ in pts] == [1.0, 2.0]
    assert src.snapshot() == {"offset": path.stat().st_size, "line": 3}


def test_jsonl_prometheus_kafka_adapter(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    records = [
        {
            "timestamp": "2024-05-01T12:00:00Z",
            "value": "0.25",
            "name": "up",
            "labels": {"__name__": "up", "instance": "web-1:9100", "job": "node"},
        },
        {"timestamp": 1714564815, "value": 1, "name": "up", "labels": {"job": "node"}},
        {"timestamp": "1714564830.5", "value": "NaN", "labels": {"__name__": "load"}},
        {"timestamp": "2024-05-01T14:00:45+02:00", "value": "", "name": "load"},
        {"timestamp": "2024-05-01T12:01:00Z", "value": None, "name": "load"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    pts, rejects = drain(make(path))
    assert rejects == []
    t0 = 1714564800.0
    assert [(k, t) for k, t, _ in pts] == [
        ('up{instance="web-1:9100",job="node"}', t0),
        ('up{job="node"}', t0 + 15),
        ("load{}", t0 + 30.5),
        ("load{}", t0 + 45),
        ("load{}", t0 + 60),
    ]
    assert pts[0][2] == 0.25
    assert pts[1][2] == 1.0
    assert all(math.isnan(v) for _, _, v in pts[2:])


def test_bad_jsonl_lines_are_rejects(tmp_path: Path) -> None:
    path = tmp_path / "bad.ndjson"
    good = '{"name": "up", "timestamp": 10, "value": "1"}'
    lines = [
        good,  # 1
        "{not json",  # 2
        "[1, 2]",  # 3
        '{"timestamp": 10, "value": 1}',  # 4: no name
        '{"name": "up", "value": 1}',  # 5: no timestamp
        '{"name": "up", "timestamp": 10}',  # 6: no value
        '{"name": "up", "timestamp": "soon", "value": 1}',  # 7
        '{"name": "up", "timestamp": 10, "value": "lots"}',  # 8
        '{"name": "up", "timestamp": 10, "value": true}',  # 9
        '{"name": "up", "labels": {"a": 1}, "timestamp": 10, "value": 1}',  # 10
        '{"name": "up", "labels": [], "timestamp": 10, "value": 1}',  # 11
        "",  # 12: blank
        '{"name": "up", "timestamp": 1e999, "value": 1}',  # 13: inf is not a time
        '{"name": "up", "timestamp": 10, "value": 1e999999999999}',  # 14: inf is a value
        "[" * 100_000,  # 15: too deep for the JSON parser
        good,  # 16
    ]
    path.write_text("\n".join(lines) + "\n")
    pts, rejects = drain(make(path, batch_size=7))
    assert len(pts) == 3
    assert pts[1][2] == math.inf
    assert [(r.reason, int(r.origin.rsplit(":", 1)[1])) for r in rejects] == [
        ("bad_json", 2),
        ("bad_shape", 3),
        ("missing_field", 4),
        ("missing_field", 5),
        ("missing_field", 6),
        ("bad_timestamp", 7),
        ("bad_value", 8),
        ("bad_value", 9),
        ("bad_labels", 10),
        ("bad_labels", 11),
        ("bad_timestamp", 13),
        ("bad_json", 15),
    ]


def test_batch_size_bounds_lines_per_batch(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_text("timestamp,value\n" + "".join(f"{i},{i}\n" for i in range(10)))
    src = make(path, batch_size=4)
    sizes = [src.next_batch().n_points for _ in range(3)]
    assert sizes == [4, 4, 2]
    assert src.exhausted
    assert src.next_batch().n_points == 0


def _messy_csv() -> bytes:
    rows = [b"timestamp,value"]
    for i in range(23):
        if i % 7 == 3:
            rows.append(b"oops,%d" % i)
        elif i % 5 == 4:
            rows.append(b"")
        elif i % 6 == 5:
            rows.append(b'"%d","%d.5"' % (1000 + i, i))
        elif i % 4 == 1:
            rows.append(b"2024-01-01T00:00:%02dZ,%d\r" % (i, i))
        else:
            rows.append(b"%d,%d" % (1000 + i, i))
    return b"\n".join(rows) + b"\n"


def _messy_jsonl() -> bytes:
    rows = []
    for i in range(23):
        if i % 7 == 3:
            rows.append(b"{broken")
        elif i % 5 == 4:
            rows.append(b"")
        else:
            ts = f'"2024-01-01T00:00:{i:02d}Z"' if i % 2 else str(1000 + i)
            labels = json.dumps({"host": f"h{i % 3}"})
            rows.append(
                f'{{"name": "m", "labels": {labels}, "timestamp": {ts}, "value": {i}}}'.encode()
            )
    return b"\n".join(rows) + b"\n"


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5])
@pytest.mark.parametrize(
    ("name", "content"), [("m.csv", _messy_csv()), ("m.jsonl", _messy_jsonl())]
)
def test_resume_from_every_batch_boundary(
    tmp_path: Path, name: str, content: bytes, batch_size: int
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    ref_points, ref_rejects = drain(make(path, batch_size=10_000))
    assert ref_points
    assert ref_rejects

    n_batches = 0
    src = make(path, batch_size=batch_size)
    while not src.exhausted:
        src.next_batch()
        n_batches += 1
    for stop in range(n_batches + 1):
        first = make(path, batch_size=batch_size)
        head: list[Point] = []
        head_rejects: list[Reject] = []
        for _ in range(stop):
            batch = first.next_batch()
            head += points(batch)
            head_rejects += batch.rejects
        state = json.loads(json.dumps(first.snapshot()))
        first.close()
        tail, tail_rejects = drain(make(path, resume=state, batch_size=batch_size))
        assert same(head + tail, ref_points), f"stop after {stop} batches"
        assert head_rejects + tail_rejects == ref_rejects


def test_truncated_file_on_resume_is_reported_and_replayed(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("timestamp,value\n1,1\n2,2\n3,3\n")
    src = make(path, batch_size=2)
    src.next_batch()
    state = src.snapshot()
    path.write_text("timestamp,value\n9,9\n")
    pts, rejects = drain(make(path, resume=state))
    assert [r.reason for r in rejects] == ["file_truncated"]
    assert pts == [("value{}", 9.0, 9.0)]


def test_missing_file_raises_source_error_until_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "later.csv"
    src = make(path, follow=True)  # the constructor does not touch the file
    with pytest.raises(SourceError, match="cannot open"):
        src.next_batch()
    path.write_text("timestamp,value\n1,1\n")
    assert points(src.next_batch()) == [("value{}", 1.0, 1.0)]


def test_a_replay_of_a_missing_file_is_done_after_the_error(tmp_path: Path) -> None:
    src = make(tmp_path / "never.csv")  # not followed: nothing will come to replay
    assert not src.exhausted
    with pytest.raises(SourceError, match="cannot open"):
        src.next_batch()
    assert src.exhausted  # so aiops run --once ends (exit 1) instead of retrying for ever
    assert src.next_batch().n_points == 0


def test_missing_column_is_a_source_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("time,val\n1,1\n")
    with pytest.raises(SourceError, match="no column 'timestamp', 'value'"):
        make(path).next_batch()


def test_follow_mode_reads_appended_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "grow.csv"
    path.write_bytes(b"timest")
    src = make(path, follow=True)
    assert src.next_batch().n_points == 0  # the header is not complete yet
    with path.open("ab") as f:
        f.write(b"amp,value\n1,1\n2,")
    assert points(src.next_batch()) == [("value{}", 1.0, 1.0)]
    assert src.snapshot() == {"offset": len(b"timestamp,value\n1,1\n"), "line": 2}
    assert src.next_batch().n_points == 0  # "2," has no newline yet
    assert not src.exhausted
    with path.open("ab") as f:
        f.write(b"2\n3,3\n")
    assert points(src.next_batch()) == [("value{}", 2.0, 2.0), ("value{}", 3.0, 3.0)]

    # A resumed follower picks up where the first one stopped.
    state = src.snapshot()
    with path.open("ab") as f:
        f.write(b"4,4\n")
    assert points(make(path, resume=state, follow=True).next_batch()) == [("value{}", 4.0, 4.0)]

    # copytruncate-style rotation: the file shrinks, the follower starts over.
    path.write_text("timestamp,value\n5,5\n")
    batch = src.next_batch()
    assert [r.reason for r in batch.rejects] == ["file_truncated"]
    assert points(batch) == [("value{}", 5.0, 5.0)]
    src.close()


def test_config_validation() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        FileSource.Config(path="a.csv", typo=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="used twice"):
        FileSource.Config(path="a.csv", value_column="timestamp")
    with pytest.raises(ValidationError, match="invalid metric name"):
        FileSource.Config(path="a.csv", metric="cpu usage")
    with pytest.raises(ValueError, match="cannot tell the format"):
        make(Path("data.txt"))
    with pytest.raises(ValueError, match="only apply to CSV"):
        make(Path("data.jsonl"), value_column="v")
    assert make(Path("data.txt"), format="csv").format == "csv"
    with pytest.raises(ValueError, match="invalid file resume state"):
        make(Path("a.csv"), resume={"offset": -1, "line": 0})


def test_snapshot_before_any_batch_is_the_start(tmp_path: Path) -> None:
    assert make(tmp_path / "x.csv").snapshot() == {"offset": 0, "line": 0}


# -- the vectorized parsers agree with the reference, string by string -----------------

_iso_like = st.builds(
    lambda y, mo, d, sep, h, mi, s, frac, z: (
        f"{y:04d}-{mo:02d}-{d:02d}"
        + (f"{sep}{h:02d}:{mi:02d}" if sep else "")
        + (f":{s:02d}" if sep and s is not None else "")
        + (f".{frac}" if sep and s is not None and frac else "")
        + (z if sep else "")
    ),
    st.integers(0, 9999),
    st.integers(0, 13),
    st.integers(0, 32),
    st.sampled_from(["", "T", " ", "t"]),
    st.integers(0, 25),
    st.integers(0, 61),
    st.one_of(st.none(), st.integers(0, 61)),
    st.text("0123456789", max_size=11),
    st.sampled_from(["", "Z", "z", "+02:00", "-05:30"]),
)
_timestamp_text = st.one_of(
    _iso_like,
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=30),
)


def _reference(text: str) -> float | None:
    try:
        value = parse_timestamp(text)
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


@settings(max_examples=300, deadline=None)
@given(st.lists(_timestamp_text, max_size=40))
@example(["0882-01-01T00:00:00.00015"])  # beyond 2**53 microseconds: the reference path
@example(["2024-02-29T23:59:59.9999999Z", "2023-02-29", "2024-01-01t00:00", "0000-01-01"])
@example(["2024-01-01 00:00:00", "1704067200", "2024-01-01T00:00:00.5+01:00", "now", ""])
def test_parse_timestamps_matches_parse_timestamp_string_by_string(texts: list[str]) -> None:
    times, ok = parse_timestamps(texts)
    for text, t, good in zip(texts, times.tolist(), ok.tolist(), strict=True):
        expected = _reference(text)
        assert good == (expected is not None), text
        if good:
            assert t == expected, text
    # And a string's result does not depend on its neighbours (batch boundaries).
    alone = [parse_timestamps([x]) for x in texts]
    assert [bool(a[1][0]) for a in alone] == ok.tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.floats().map(repr), st.text(max_size=12), st.just("")), max_size=40))
def test_parse_values_is_float_or_blank(texts: list[str]) -> None:
    values, ok = parse_values(texts)
    for text, v, good in zip(texts, values.tolist(), ok.tolist(), strict=True):
        try:
            expected = float(text)
        except ValueError:
            expected = math.nan if not text.strip() else None
        assert good == (expected is not None), text
        if good:
            assert v == expected or (math.isnan(v) and math.isnan(expected)), text


# -- garbage in, never an exception -------------------------------------------------------


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(
        st.one_of(
            st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
            st.sampled_from(
                [b"1,2", b"2024-01-01,3", b'"a,b",1', b'{"name":"x","timestamp":1,"value":2}']
            ),
        ),
        max_size=30,
    ),
    batch_size=st.integers(1, 8),
    fmt=st.sampled_from(["csv", "jsonl"]),
    trailing_newline=st.booleans(),
)
def test_random_bytes_never_raise(
    tmp_path: Path, lines: list[bytes], batch_size: int, fmt: str, trailing_newline: bool
) -> None:
    header = [b"timestamp,value"] if fmt == "csv" else []
    data = b"\n".join(header + lines) + (b"\n" if trailing_newline else b"")
    path = tmp_path / f"random.{fmt}"
    path.write_bytes(data)
    src = make(path, batch_size=batch_size)
    pts, rejects = drain(src)
    # Every data line is a point, a reject, or blank.
    blank = sum(1 for line in lines if not line.decode("utf-8", "replace").strip())
    assert len(pts) + len(rejects) <= len(lines)
    assert len(pts) + len(rejects) >= len(lines) - blank
    assert src.snapshot()["offset"] == len(data)
    src.close()


def test_parse_throughput_sanity(tmp_path: Path) -> None:
    """Not a benchmark: catches an accidental per-row slow path (e.g. exceptions per row)."""
    import time

    path = tmp_path / "big.csv"
    n = 100_000
    start = 1_700_000_000
    iso = np.datetime64(start, "s") + np.arange(n) * np.timedelta64(15, "s")
    text = "\n".join(f"{t},{i % 97}.5" for i, t in enumerate(np.datetime_as_string(iso)))
    path.write_text("timestamp,value\n" + text + "\n")
    src = make(path)
    began = time.perf_counter()
    pts = 0
    while not src.exhausted:
        pts += src.next_batch().n_points
    elapsed = time.perf_counter() - began
    assert pts == n
    assert elapsed < 5.0, f"{n / elapsed:.0f} points/s"


def test_label_columns_split_series_without_a_name_column(tmp_path: Path) -> None:
    # A regression: label columns used to be ignored unless a name column was set,
    # which merged every host into one series.
    path = tmp_path / "wide.csv"
    path.write_text("timestamp,host,value\n1,a,1\n1,b,2\n2,a,3\n2,,4\n")
    pts, rejects = drain(make(path, metric="latency", label_columns=["host"], labels={"dc": "x"}))
    assert rejects == []
    assert pts == [
        ('latency{dc="x",host="a"}', 1.0, 1.0),
        ('latency{dc="x",host="b"}', 1.0, 2.0),
        ('latency{dc="x",host="a"}', 2.0, 3.0),
        ('latency{dc="x"}', 2.0, 4.0),
    ]
