"""Record decoders: exact output on realistic payloads, rejects, and fuzzing."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiops.connectors.formats import (
    FORMATS,
    GenericJsonDecoder,
    InfluxLineDecoder,
    LogJsonDecoder,
    LogLinesDecoder,
    PrometheusJsonDecoder,
    create_decoder,
)
from aiops.pipeline.decoder import REJECT_REASONS, Decoded, Decoder
from aiops.types import LogRecord, SeriesKey


def K(metric: str, /, **labels: str) -> SeriesKey:
    return SeriesKey.of(metric, labels)


def pts(out: Decoded) -> list[tuple[SeriesKey, float, float]]:
    return list(out.points())


def reasons(out: Decoded) -> list[str]:
    return [r.reason for r in out.rejects]


def same_points(a: list[tuple[SeriesKey, float, float]], b: list[tuple[SeriesKey, float, float]]):
    """Equality that treats NaN == NaN."""
    assert len(a) == len(b), (a, b)
    for (ka, ta, va), (kb, tb, vb) in zip(a, b, strict=True):
        assert (ka, ta) == (kb, tb)
        assert va == vb or (math.isnan(va) and math.isnan(vb)), (va, vb)


# --------------------------------------------------------------------------- contract


def test_registry_lists_every_format():
    assert set(FORMATS) == {
        "prometheus_json",
        "influx_line",
        "generic_json",
        "log_lines",
        "log_json",
        "journald",
    }
    for name, cls in FORMATS.items():
        assert cls.type == name
        assert issubclass(cls, Decoder)
    with pytest.raises(ValueError, match='unknown format "csv"; valid formats: generic_json'):
        create_decoder("csv")


def test_config_is_strict_frozen_and_merges():
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        InfluxLineDecoder(precison="ms")
    with pytest.raises(ValueError, match="precision"):
        InfluxLineDecoder(precision="minutes")
    d = InfluxLineDecoder({"precision": "ms"}, separator=".")
    assert (d.config.precision, d.config.separator) == ("ms", ".")
    with pytest.raises(ValueError, match="frozen"):
        d.config.precision = "s"  # type: ignore[misc]
    same = InfluxLineDecoder(d.config)
    assert same.config is d.config


def test_decoded_to_batch_is_columnar():
    d = InfluxLineDecoder()
    out = d.decode(b"m,h=a v=1 1000000000\nm,h=b v=2 1000000000\nm,h=a v=3 2000000000\nbad")
    b = out.to_batch()
    assert [str(k) for k in b.keys] == ['m_v{h="a"}', 'm_v{h="b"}']
    assert b.series.tolist() == [0, 1, 0]
    assert b.timestamps.tolist() == [1.0, 1.0, 2.0]
    assert b.values.tolist() == [1.0, 2.0, 3.0]
    assert [r.reason for r in b.rejects] == ["bad_line"]


def test_origin_is_copied_into_rejects():
    out = PrometheusJsonDecoder().decode(b"{", origin="metrics/2@17")
    assert out.rejects[0].origin == "metrics/2@17"
    assert out.rejects[0].raw == b"{"


# --------------------------------------------------------------------------- prometheus_json

ADAPTER_README = (
    b'{"timestamp": "1970-01-01T00:00:00Z", "value": "9876543210", "name": "up",'
    b' "labels": {"__name__": "up", "label1": "value1", "label2": "value2"}}'
)


def test_prometheus_json_readme_sample():
    out = PrometheusJsonDecoder().decode(ADAPTER_README)
    assert pts(out) == [(K("up", label1="value1", label2="value2"), 0.0, 9876543210.0)]
    assert (out.rejects, out.skipped) == ([], {})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("NaN", math.nan), ("+Inf", math.inf), ("-Inf", -math.inf), ("0.25", 0.25), (3, 3.0)],
)
def test_prometheus_json_values(raw, expected):
    doc = {
        "timestamp": "2024-05-01T12:00:00Z",
        "value": raw,
        "name": "node_load1",
        "labels": {"__name__": "node_load1", "instance": "web-1:9100", "job": "node"},
    }
    out = PrometheusJsonDecoder().decode(json.dumps(doc).encode())
    same_points(
        pts(out), [(K("node_load1", instance="web-1:9100", job="node"), 1714564800.0, expected)]
    )


def test_prometheus_json_name_from_labels_and_record_time():
    doc = b'{"value": "1", "labels": {"__name__": "up", "job": "a"}}'
    out = PrometheusJsonDecoder().decode(doc, timestamp=42.5)
    assert pts(out) == [(K("up", job="a"), 42.5, 1.0)]
    before = time.time()
    out = PrometheusJsonDecoder().decode(doc)
    assert before <= out.timestamps[0] <= time.time()


def test_prometheus_json_array_is_partly_good():
    doc = json.dumps(
        [
            {"timestamp": 1714564800000, "value": "1", "name": "up", "labels": {"job": "a"}},
            {"timestamp": "yesterday", "value": "1", "name": "up"},
            {"value": "x", "name": "up"},
            {"name": "up"},
            {"value": "1", "labels": {"job": "b"}},
            {"value": "1", "name": "up", "labels": {"job": ["a"]}},
            "up 1",
            {"timestamp": "2024-05-01T12:00:00.250+02:00", "value": "2", "name": "up"},
        ]
    ).encode()
    out = PrometheusJsonDecoder().decode(doc, timestamp=0.0)
    assert pts(out) == [(K("up", job="a"), 1714564800.0, 1.0), (K("up"), 1714557600.25, 2.0)]
    assert [(r.reason, r.detail) for r in out.rejects] == [
        ("bad_timestamp", "item 1: timestamp 'yesterday' is not RFC 3339"),
        ("bad_value", "item 2: value 'x' is not a number"),
        ("missing_field", "item 3: no value"),
        ("missing_field", "item 4: no metric name (name or labels.__name__)"),
        ("bad_labels", "item 5: labels.job is list, not a string"),
        ("bad_shape", "item 6: sample is str, not an object"),
    ]


@pytest.mark.parametrize(
    ("payload", "reason", "detail"),
    [
        (b'{"value": ', "bad_json", "Expecting value: line 1 column 11 (char 10)"),
        (b'{"name": "\xff"}', "bad_utf8", "invalid UTF-8 at byte 10: invalid start byte"),
        (b"[" * 100_000, "bad_json", "nested too deeply"),
        (b"12", "bad_shape", "sample is int, not an object"),
        (b"", "bad_json", "Expecting value: line 1 column 1 (char 0)"),
    ],
)
def test_prometheus_json_whole_record_rejects(payload, reason, detail):
    out = PrometheusJsonDecoder().decode(payload)
    assert [(r.reason, r.detail, r.raw) for r in out.rejects] == [(reason, detail, payload)]


# --------------------------------------------------------------------------- influx_line

# Shaped like `telegraf --test` output of the cpu, mem, system and disk inputs.
TELEGRAF = (
    b"cpu,cpu=cpu0,host=web-01 usage_guest=0,usage_idle=97.48743718592965,"
    b"usage_iowait=0.5025125628140703,usage_system=1.0050251256281406,"
    b"usage_user=1.0050251256281406 1714564800000000000\n"
    b"cpu,cpu=cpu-total,host=web-01 usage_idle=98.12,usage_user=1.25,usage_system=0.63"
    b" 1714564800000000000\n"
    b"mem,host=web-01 active=3785732096i,available=12542812160i,"
    b"available_percent=73.21534156799316,total=17131315200i,used_percent=26.78465843200684"
    b" 1714564800000000000\n"
    b"system,host=web-01 load1=0.38,load15=0.54,load5=0.5,n_cpus=8i,n_users=2i"
    b" 1714564800000000000\n"
    b'system,host=web-01 uptime=508374u,uptime_format="5 days, 21:12" 1714564800000000000\n'
    b"disk,device=nvme0n1p2,fstype=ext4,host=web-01,mode=rw,path=/ free=201326592000i,"
    b"inodes_used=1234567i,used_percent=42.5 1714564800000000000\n"
)


def test_influx_telegraf_sample():
    out = InfluxLineDecoder().decode(TELEGRAF)
    t = 1714564800.0
    cpu0 = {"cpu": "cpu0", "host": "web-01"}
    total = {"cpu": "cpu-total", "host": "web-01"}
    disk = {"device": "nvme0n1p2", "fstype": "ext4", "host": "web-01", "mode": "rw", "path": "/"}
    assert pts(out) == [
        (K("cpu_usage_guest", **cpu0), t, 0.0),
        (K("cpu_usage_idle", **cpu0), t, 97.48743718592965),
        (K("cpu_usage_iowait", **cpu0), t, 0.5025125628140703),
        (K("cpu_usage_system", **cpu0), t, 1.0050251256281406),
        (K("cpu_usage_user", **cpu0), t, 1.0050251256281406),
        (K("cpu_usage_idle", **total), t, 98.12),
        (K("cpu_usage_user", **total), t, 1.25),
        (K("cpu_usage_system", **total), t, 0.63),
        (K("mem_active", host="web-01"), t, 3785732096.0),
        (K("mem_available", host="web-01"), t, 12542812160.0),
        (K("mem_available_percent", host="web-01"), t, 73.21534156799316),
        (K("mem_total", host="web-01"), t, 17131315200.0),
        (K("mem_used_percent", host="web-01"), t, 26.78465843200684),
        (K("system_load1", host="web-01"), t, 0.38),
        (K("system_load15", host="web-01"), t, 0.54),
        (K("system_load5", host="web-01"), t, 0.5),
        (K("system_n_cpus", host="web-01"), t, 8.0),
        (K("system_n_users", host="web-01"), t, 2.0),
        (K("system_uptime", host="web-01"), t, 508374.0),
        (K("disk_free", **disk), t, 201326592000.0),
        (K("disk_inodes_used", **disk), t, 1234567.0),
        (K("disk_used_percent", **disk), t, 42.5),
    ]
    assert out.rejects == []
    assert out.skipped == {"string_field": 1}


@pytest.mark.parametrize(
    ("line", "name", "labels", "value"),
    [
        # Measurement escapes: "\," and "\ " (an "=" needs none).
        (rb"cpu\,01\ x=y,host=a value=1", "cpu,01 x=y_value", {"host": "a"}, 1.0),
        # Tag keys and values escape ",", "=" and " ".
        (rb"m,tag\ key=us\,west\=1 v=2", "m_v", {"tag key": "us,west=1"}, 2.0),
        # Field keys too.
        (rb"m field\ k\,e\=y=3i", "m_field k,e=y", {}, 3.0),
        # Any other backslash is literal.
        (rb"m,path=C:\Windows\System32 v=1", "m_v", {"path": "C:\\Windows\\System32"}, 1.0),
        # "\\," is a literal backslash, then an escaped comma (influxdata/line-protocol v2).
        (rb"m,t=a\\,b v=1", "m_v", {"t": "a\\,b"}, 1.0),
        # Unicode in names, values.
        ("température,lieu=café v=-1.5e3".encode(), "température_v", {"lieu": "café"}, -1500.0),
        # Number spellings.
        (b"m v=.5", "m_v", {}, 0.5),
        (b"m v=5.", "m_v", {}, 5.0),
        (b"m v=-12i", "m_v", {}, -12.0),
        (b"m v=18446744073709551615u", "m_v", {}, 18446744073709551615.0),
        (b"m v=1E+3", "m_v", {}, 1000.0),
        (b"m v=FALSE", "m_v", {}, 0.0),
        (b"m v=t", "m_v", {}, 1.0),
        # Leading and trailing spaces, several spaces between sections, CRLF.
        (b"   m,h=a    v=1    \r\n", "m_v", {"h": "a"}, 1.0),
    ],
)
def test_influx_escaping_and_values(line, name, labels, value):
    out = InfluxLineDecoder().decode(line, timestamp=7.0)
    assert pts(out) == [(SeriesKey.of(name, labels), 7.0, value)], out.rejects


def test_influx_string_fields_are_skipped_not_rejected():
    line = (
        b'syslog,host=a message="GET /a, 200 \\"ok\\" x=1",severity_code=6i,note="\\\\" 1000000000'
    )
    out = InfluxLineDecoder().decode(line)
    assert pts(out) == [(K("syslog_severity_code", host="a"), 1.0, 6.0)]
    assert out.skipped == {"string_field": 2}
    only_strings = InfluxLineDecoder().decode(b'syslog,host=a message="x"')
    assert (pts(only_strings), only_strings.rejects, only_strings.skipped) == (
        [],
        [],
        {"string_field": 1},
    )


@pytest.mark.parametrize(
    ("precision", "ts", "expected"),
    [
        ("ns", b"1465839830100400200", 1465839830.1004002),
        ("us", b"1465839830100400", 1465839830.1004),
        ("ms", b"1465839830100", 1465839830.1),
        ("s", b"1465839830", 1465839830.0),
        ("s", b"-5", -5.0),
    ],
)
def test_influx_precision(precision, ts, expected):
    out = InfluxLineDecoder(precision=precision).decode(b"m v=1 " + ts)
    assert out.timestamps == [expected]


def test_influx_options_and_comments():
    d = InfluxLineDecoder(separator=".", booleans="skip")
    out = d.decode(b"# written by telegraf\n\nm a=1,b=true 1000000000\n\n", timestamp=3.0)
    assert pts(out) == [(K("m.a"), 1.0, 1.0)]
    assert out.skipped == {"comment": 1, "bool_field": 1}


def test_influx_partly_good_record():
    payload = b"\n".join(
        [
            b"cpu,host=a usage_user=1.5,usage_system=abc,usage_idle=98 1000000000",
            b"cpu,host=a usage_user=1 17x",
            b"cpu,host=a usage_user=1 99999999999999999999",
            b"cpu,host= usage_user=1",
            b"cpu,host=a",
            b'cpu,host=a usage_user="open',
            b"cpu,host=a usage_user=9223372036854775808i,n=-1u,big=1e999,x=1.2.3,y=True1",
            b"cpu,host=a usage_user=\xff\xfe 1000000000",
            b"  cpu usage_user=2 2000000000 trailing",
            b",host=a v=1",
            b"mem,host=a used=5i 3000000000",
        ]
    )
    out = InfluxLineDecoder().decode(payload, timestamp=0.0)
    assert pts(out) == [
        (K("cpu_usage_user", host="a"), 1.0, 1.5),
        (K("cpu_usage_idle", host="a"), 1.0, 98.0),
        (K("mem_used", host="a"), 3.0, 5.0),
    ]
    assert [(r.reason, r.detail) for r in out.rejects] == [
        ("bad_value", "line 1: field 'usage_system': 'abc' is not a number"),
        ("bad_timestamp", "line 2, column 25: timestamp '17x' is not an integer"),
        (
            "bad_timestamp",
            "line 3, column 25: timestamp '99999999999999999999' is out of the int64 range",
        ),
        ("bad_line", "line 4, column 10: expected a value for tag 'host'"),
        ("bad_line", "line 5, column 11: no fields (a point needs at least one field)"),
        ("bad_line", "line 6, column 23: unterminated string field"),
        (
            "bad_value",
            "line 7: field 'usage_user': '9223372036854775808i' is out of the int64 range",
        ),
        ("bad_value", "line 7: field 'n': '-1u' is not an unsigned integer"),
        ("bad_value", "line 7: field 'big': '1e999' is out of the float64 range"),
        ("bad_value", "line 7: field 'x': '1.2.3' is not a number"),
        ("bad_value", "line 7: field 'y': 'True1' is not a number or boolean"),
        ("bad_utf8", "line 8: invalid UTF-8 at byte 22"),
        ("bad_line", "line 9, column 31: unexpected text after timestamp"),
        ("bad_line", "line 10, column 1: invalid character ',' at start of measurement"),
    ]
    assert out.rejects[0].raw == payload.split(b"\n")[0]  # raw is the line, not the record
    assert out.rejects[11].raw == b"cpu,host=a usage_user=\xff\xfe 1000000000"


def test_influx_huge_numbers_are_rejected_with_short_details():
    digits = b"9" * 5000  # past int()'s 4300-digit limit
    out = InfluxLineDecoder().decode(b"m v=" + digits + b"i,w=" + digits + b"u,x=1 " + digits)
    assert [(r.reason, r.detail) for r in out.rejects] == [
        (
            "bad_timestamp",
            f"line 1, column 10015: timestamp {'9' * 37!r}... is out of the int64 range",
        )
    ]
    out = InfluxLineDecoder().decode(b"m v=" + digits + b"i,w=" + digits + b"u,x=1")
    assert [(r.reason, r.detail) for r in out.rejects] == [
        ("bad_value", f"line 1: field 'v': {'9' * 37!r}... is out of the int64 range"),
        ("bad_value", f"line 1: field 'w': {'9' * 37!r}... is out of the uint64 range"),
    ]
    assert out.n_points == 1


# --------------------------------------------------------------------------- generic_json


def test_generic_json_nested_paths_and_constant_name():
    d = GenericJsonDecoder(
        name="host_cpu",
        value_path="data.metrics.cpu",
        timestamp_path="data.time",
        timestamp_format="rfc3339",
        labels_path="data.tags",
        label_paths={"dc": "meta.datacenter"},
        const_labels={"source": "collector"},
    )
    doc = {
        "data": {
            "time": "2024-05-01T12:00:00.5Z",
            "metrics": {"cpu": 0.93, "mem": 0.4},
            "tags": {"host": "web-1", "rack": 7, "ssd": True, "nested": {"x": 1}},
        },
        "meta": {"datacenter": "fra1"},
    }
    out = d.decode(json.dumps(doc).encode())
    labels = {"host": "web-1", "rack": "7", "ssd": "true", "dc": "fra1", "source": "collector"}
    assert pts(out) == [(SeriesKey.of("host_cpu", labels), 1714564800.5, 0.93)]


def test_generic_json_items_several_metrics_and_partial():
    d = GenericJsonDecoder(
        items_path="hosts",
        value_paths={"cpu_usage": "stats.cpu", "mem_used": "stats.mem"},
        label_paths=["name", "region.code"],
        timestamp_path="ts",
    )
    doc = {
        "hosts": [
            {
                "name": "a",
                "region": {"code": "eu"},
                "ts": 1714564800,
                "stats": {"cpu": 1, "mem": "2.5"},
            },
            {"name": "b", "ts": 1714564800123, "stats": {"cpu": None}},
            {"name": "c", "ts": "soon", "stats": {"cpu": 1}},
            ["not", "an", "object"],
        ]
    }
    out = d.decode(json.dumps(doc).encode())
    same_points(
        pts(out),
        [
            (K("cpu_usage", name="a", code="eu"), 1714564800.0, 1.0),
            (K("mem_used", name="a", code="eu"), 1714564800.0, 2.5),
            (K("cpu_usage", name="b"), 1714564800.123, math.nan),
        ],
    )
    assert [(r.reason, r.detail) for r in out.rejects] == [
        ("missing_field", "item 1: no value at stats.mem"),
        ("bad_timestamp", "item 2: ts 'soon' is not RFC 3339"),
        ("bad_shape", "item 3: item is list, not an object"),
    ]


@pytest.mark.parametrize(
    ("fmt", "raw", "expected"),
    [
        ("auto", 1714564800, 1714564800.0),
        ("auto", 1714564800123, 1714564800.123),
        ("auto", 1714564800123456, 1714564800.123456),
        ("auto", 1714564800123456789, 1714564800.1234567),
        ("auto", "1714564800.5", 1714564800.5),
        ("auto", "2024-05-01T14:00:00+02:00", 1714564800.0),
        ("auto", "2024-05-01 12:00:00", 1714564800.0),
        ("auto", "2024-05-01T12:00:00.123456789Z", 1714564800.1234567),
        ("unix_ms", 1714564800, 1714564.8),
        ("unix_s", "1714564800", 1714564800.0),
        ("unix_ns", 1714564800000000000, 1714564800.0),
    ],
)
def test_generic_json_timestamp_formats(fmt, raw, expected):
    d = GenericJsonDecoder(name="m", value_path="v", timestamp_path="t", timestamp_format=fmt)
    out = d.decode(json.dumps({"v": 1, "t": raw}).encode())
    assert out.timestamps == [pytest.approx(expected, abs=1e-6)], out.rejects


@pytest.mark.parametrize(
    ("fmt", "raw"),
    [
        ("rfc3339", 1714564800),
        ("unix_s", "2024-05-01T12:00:00Z"),
        ("auto", "2024-13-01T00:00:00Z"),
        ("auto", 1e300),
        ("auto", True),
        ("auto", "2024-05-01T12:00:00+25:00"),
    ],
)
def test_generic_json_bad_timestamps(fmt, raw):
    d = GenericJsonDecoder(name="m", value_path="v", timestamp_path="t", timestamp_format=fmt)
    out = d.decode(json.dumps({"v": 1, "t": raw}).encode())
    assert (reasons(out), out.n_points) == (["bad_timestamp"], 0)


def test_generic_json_top_level_array_flat_dotted_keys_and_index():
    d = GenericJsonDecoder(
        name_path="metric.name", value_path="values.1", label_paths=["host.name"]
    )
    payload = json.dumps(
        [
            {"metric.name": "rps", "values": [1, 2], "host": {"name": "a"}},
            {"metric": {"name": "rps"}, "values": [3], "host.name": "b"},
            {"values": [1, 2]},
        ]
    ).encode()
    out = d.decode(payload, timestamp=1.0)
    assert pts(out) == [(K("rps", name="a"), 1.0, 2.0)]
    assert [(r.reason, r.detail) for r in out.rejects] == [
        ("missing_field", "item 1: no value at values.1"),
        ("missing_field", "item 2: no metric name at metric.name"),
    ]


def test_generic_json_items_path_errors():
    d = GenericJsonDecoder(items_path="rows", name="m", value_path="v")
    assert reasons(d.decode(b'{"rows": {"v": 1}}')) == ["bad_shape"]
    assert reasons(d.decode(b'{"data": []}')) == ["missing_field"]
    assert not d.decode(b'{"rows": []}')  # nothing in, nothing out


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "set exactly one of value_path and value_paths"),
        ({"value_path": "v"}, "with value_path, set exactly one of name and name_path"),
        ({"value_paths": {"a": "x"}, "name": "n"}, "value_paths names its metrics"),
        ({"name": "n", "value_path": "a..b"}, 'invalid path "a..b": empty segment'),
        ({"name": "n", "value_path": "v", "timestamp_format": "unix_days"}, "timestamp_format"),
    ],
)
def test_generic_json_config_errors(settings, message):
    with pytest.raises(ValueError, match=message):
        GenericJsonDecoder(settings)


# --------------------------------------------------------------------------- log_lines


def test_log_lines_split_and_labels():
    out = LogLinesDecoder(labels={"app": "nginx"}).decode(
        b'10.0.0.1 - - "GET / HTTP/1.1" 200 612\r\n\n   \n10.0.0.2 - - "GET /x HTTP/1.1" 404 0',
        timestamp=12.0,
    )
    lab = (("app", "nginx"),)
    assert out.logs == [
        LogRecord(12.0, '10.0.0.1 - - "GET / HTTP/1.1" 200 612', lab),
        LogRecord(12.0, '10.0.0.2 - - "GET /x HTTP/1.1" 404 0', lab),
    ]


def test_log_lines_bad_utf8():
    payload = b"ok line\nbad \xff byte\n"
    assert [r.message for r in LogLinesDecoder().decode(payload).logs] == [
        "ok line",
        "bad \ufffd byte",
    ]
    out = LogLinesDecoder(utf8_errors="reject").decode(payload, timestamp=1.0)
    assert [r.message for r in out.logs] == ["ok line"]
    assert [(r.reason, r.detail, r.raw) for r in out.rejects] == [
        ("bad_utf8", "line 2: invalid UTF-8 at byte 4", b"bad \xff byte")
    ]


def test_log_lines_default_time_is_now():
    before = time.time()
    (rec,) = LogLinesDecoder().decode(b"x").logs
    assert before <= rec.timestamp <= time.time()


# --------------------------------------------------------------------------- log_json

FILEBEAT = {
    "@timestamp": "2024-05-01T12:00:00.123Z",
    "@metadata": {"beat": "filebeat", "type": "_doc", "version": "8.13.2"},
    "message": "Started Session 42 of user root.",
    "log": {"offset": 48213, "file": {"path": "/var/log/syslog"}},
    "input": {"type": "filestream"},
    "host": {"name": "web-01", "hostname": "web-01", "os": {"family": "debian"}},
    "agent": {"type": "filebeat", "version": "8.13.2"},
    "ecs": {"version": "8.0.0"},
}
FLUENTBIT = {
    "@timestamp": 1714564800.25,
    "log": "2024-05-01T12:00:00.250Z stderr F panic: runtime error",
    "stream": "stderr",
    "kubernetes": {
        "pod_name": "api-7d4b9c-x2x4k",
        "namespace_name": "prod",
        "container_name": "api",
        "labels": {"app": "api"},
    },
}
VECTOR = {
    "message": "connection reset by peer",
    "timestamp": "2024-05-01T12:00:00.123456789Z",
    "host": "web-02",
    "source_type": "file",
    "file": "/var/log/app/app.log",
}


@pytest.mark.parametrize(
    ("preset", "event", "expected"),
    [
        (
            "filebeat",
            FILEBEAT,
            LogRecord(
                1714564800.123,
                "Started Session 42 of user root.",
                (("filename", "/var/log/syslog"), ("host", "web-01")),
            ),
        ),
        (
            "fluentbit",
            FLUENTBIT,
            LogRecord(
                1714564800.25,
                "2024-05-01T12:00:00.250Z stderr F panic: runtime error",
                (("container", "api"), ("namespace", "prod"), ("pod", "api-7d4b9c-x2x4k")),
            ),
        ),
        (
            "vector",
            VECTOR,
            LogRecord(
                pytest.approx(1714564800.123456789),  # type: ignore[arg-type]
                "connection reset by peer",
                (("filename", "/var/log/app/app.log"), ("host", "web-02"), ("source_type", "file")),
            ),
        ),
    ],
)
def test_log_json_presets(preset, event, expected):
    out = LogJsonDecoder(preset=preset).decode(json.dumps(event).encode(), timestamp=0.0)
    assert out.logs == [expected]
    assert out.rejects == []


def test_log_json_overrides_and_fallbacks():
    d = LogJsonDecoder(
        preset="fluentbit",
        message_field="msg",
        label_fields=["level", "kubernetes.labels.app"],
        labels={"cluster": "c1"},
    )
    event = {
        "date": "2024-05-01T12:00:00Z",
        "msg": {"text": "hi", "n": 1},
        "level": "warn",
        "kubernetes": {"labels": {"app": "api"}},
    }
    (rec,) = d.decode(json.dumps(event).encode()).logs
    assert rec == LogRecord(
        1714564800.0, '{"text":"hi","n":1}', (("app", "api"), ("cluster", "c1"), ("level", "warn"))
    )


def test_log_json_rejects_and_partial_array():
    events = [
        {"message": "ok", "@timestamp": "2024-05-01T12:00:00Z"},
        {"msg": "no message field"},
        {"message": "bad time", "@timestamp": "noon"},
        "a string",
        {"message": "record time"},
    ]
    out = LogJsonDecoder().decode(json.dumps(events).encode(), timestamp=9.0)
    assert out.logs == [LogRecord(1714564800.0, "ok"), LogRecord(9.0, "record time")]
    assert [(r.reason, r.detail) for r in out.rejects] == [
        ("missing_field", "item 1: no message (message)"),
        ("bad_timestamp", "item 2: @timestamp 'noon' is not RFC 3339"),
        ("bad_shape", "item 3: event is str, not an object"),
    ]
    raw = LogJsonDecoder(missing_message="raw_json").decode(b'{"msg": "x"}', timestamp=1.0)
    assert raw.logs == [LogRecord(1.0, '{"msg":"x"}')]


# --------------------------------------------------------------------------- fuzzing

FUZZ_DECODERS: dict[str, Decoder] = {
    "prometheus_json": PrometheusJsonDecoder(),
    "influx_line": InfluxLineDecoder(),
    "influx_line_skip_bools": InfluxLineDecoder(precision="ms", booleans="skip"),
    "generic_json": GenericJsonDecoder(
        items_path="items", name_path="n", value_path="v", timestamp_path="t", labels_path="l"
    ),
    "generic_json_multi": GenericJsonDecoder(
        value_paths={"a": "x.a", "b": "x.1"}, label_paths=["h"]
    ),
    "log_lines": LogLinesDecoder(),
    "log_lines_reject": LogLinesDecoder(utf8_errors="reject"),
    "log_json": LogJsonDecoder(preset="filebeat"),
}
VALID: list[bytes] = [
    ADAPTER_README,
    TELEGRAF,
    rb'weather\ report,location=us\,midwest temp=82,msg="a \"b\" c",ok=T 1465839830100400200',
    b'{"items": [{"n": "cpu", "v": "1.5", "t": "2024-05-01T12:00:00Z", "l": {"h": "a"}}]}',
    b'{"x": {"a": 1, "1": 2}, "h": "web"}',
    json.dumps(FILEBEAT).encode(),
    json.dumps([VECTOR, FLUENTBIT]).encode(),
    b"plain log line\r\nanother one\n",
]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_outcome(out: Decoded) -> None:
    """Every decode result is well formed, whatever the input."""
    assert isinstance(out, Decoded)
    assert len(out.keys) == len(out.timestamps) == len(out.values)
    assert all(isinstance(k, SeriesKey) for k in out.keys)
    assert all(math.isfinite(t) for t in out.timestamps)
    assert all(isinstance(r, LogRecord) and isinstance(r.message, str) for r in out.logs)
    for r in out.rejects:
        assert r.reason in REJECT_REASONS
        assert r.detail
        assert r.origin == "fuzz"
    out.to_batch()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid payload with a few bytes inserted, deleted or replaced."""
    data = bytearray(draw(st.sampled_from(VALID)))
    special = st.sampled_from([*b' ,=\\"#\n\r\t{}[]:.-+eEiutTfFN0123456789', 0xFF, 0xC3, 0])
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        if op == "insert":
            data[pos:pos] = bytes([draw(special)])
        elif data:
            i = min(pos, len(data) - 1)
            if op == "delete":
                del data[i]
            else:
                data[i] = draw(special)
    return bytes(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "n",
                    "v",
                    "t",
                    "l",
                    "x",
                    "a",
                    "1",
                    "h",
                    "items",
                    "value",
                    "name",
                    "labels",
                    "timestamp",
                    "message",
                    "@timestamp",
                    "host",
                    "log",
                ]
            ),
            kids,
            max_size=5,
        )
    ),
    max_leaves=20,
)
influx_text = st.text(alphabet=' ,=\\"#\n\r\ttTfFiuaAbcemN0123456789.-+é', max_size=120)


@pytest.mark.parametrize("name", FUZZ_DECODERS)
@FUZZ
@given(
    payload=st.binary(max_size=300)
    | mutated()
    | json_values.map(lambda v: json.dumps(v).encode())
    | influx_text.map(str.encode)
)
def test_fuzz_never_raises(name, payload):
    check_outcome(FUZZ_DECODERS[name].decode(payload, origin="fuzz", timestamp=1.0))


@FUZZ
@given(payload=st.binary(max_size=300) | mutated() | influx_text.map(str.encode))
def test_fuzz_influx_loses_no_line(payload):
    """Each non-blank line is points, a reject or a documented skip; lines are independent."""
    d = InfluxLineDecoder()
    whole = d.decode(payload, origin="fuzz", timestamp=1.0)
    merged = Decoded(origin="fuzz")
    for line in payload.split(b"\n"):
        one = d.decode(line, origin="fuzz", timestamp=1.0)
        if line.strip(b" \r"):
            assert one.n_points or one.rejects or one.skipped, line
        merged.extend(one)
    same_points(pts(whole), pts(merged))
    # Details differ only in line numbers.
    assert [(r.reason, r.raw) for r in whole.rejects] == [(r.reason, r.raw) for r in merged.rejects]
    assert whole.skipped == merged.skipped


@FUZZ
@given(payload=st.binary(max_size=300) | mutated())
def test_fuzz_log_lines_lose_no_line(payload):
    """Each non-blank line is a log record, or a reject when bad bytes are rejected."""
    text_lines = payload.decode("utf-8", "replace").split("\n")
    replaced = LogLinesDecoder().decode(payload, origin="fuzz", timestamp=1.0)
    assert len(replaced.logs) == sum(1 for line in text_lines if line.strip())
    strict = LogLinesDecoder(utf8_errors="reject").decode(payload, origin="fuzz", timestamp=1.0)
    non_blank = [line for line in payload.split(b"\n") if line.decode("utf-8", "replace").strip()]
    assert len(strict.logs) + len(strict.rejects) == len(non_blank)


@FUZZ
@given(doc=json_values)
def test_fuzz_json_items_are_accounted_for(doc: Any):
    """Each sample, item or event becomes exactly one point/log or one reject."""
    payload = json.dumps(doc).encode()
    n_items = len(doc) if isinstance(doc, list) else 1
    prom = PrometheusJsonDecoder().decode(payload, origin="fuzz", timestamp=1.0)
    assert prom.n_points + len(prom.rejects) == n_items
    logs = LogJsonDecoder().decode(payload, origin="fuzz", timestamp=1.0)
    assert len(logs.logs) + len(logs.rejects) == n_items
    gen = GenericJsonDecoder(name_path="n", value_path="v").decode(payload, origin="fuzz")
    assert gen.n_points + len(gen.rejects) == n_items


_name_chars = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), min_size=1, max_size=10
).filter(lambda s: not s.endswith("\\"))


def _esc(s: str, chars: str) -> str:
    # Telegraf's serializer (plugins/serializers/influx/escape.go) for printable text.
    for c in chars:
        s = s.replace(c, "\\" + c)
    return s


@FUZZ
@given(
    measurement=_name_chars.filter(lambda s: not s.startswith("#")),
    tags=st.dictionaries(_name_chars, _name_chars, max_size=4),
    fields=st.dictionaries(
        _name_chars,
        st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53),
        min_size=1,
        max_size=4,
    ),
    ts=st.integers(-(2**62), 2**62),
)
def test_influx_round_trips_telegraf_escaping(measurement, tags, fields, ts):
    line = _esc(measurement, ", ")
    line += "".join(f",{_esc(k, ', =')}={_esc(v, ', =')}" for k, v in tags.items())
    line += " " + ",".join(
        f"{_esc(k, ', =')}={v}i" if isinstance(v, int) else f"{_esc(k, ', =')}={v!r}"
        for k, v in fields.items()
    )
    line += f" {ts}"
    out = InfluxLineDecoder().decode(line.encode())
    assert out.rejects == []
    assert pts(out) == [
        (SeriesKey.of(f"{measurement}_{k}", tags), ts / 10**9, float(v)) for k, v in fields.items()
    ]
