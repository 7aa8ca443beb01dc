"""log_json's column path (orjson, field by field) against the standard library's path.

``LogJsonDecoder.decode`` reads a JSON array of events of the common shape with orjson,
one field at a time; anything else goes through ``JsonRecordDecoder.decode`` (the
standard library's parser and the event loop). Both must give the same records and
rejects for every payload, including those where orjson and the standard library parse
differently (integers past 64 bits, NaN, numbers past a double, lone surrogates).
"""

from __future__ import annotations

import json
import math

import pytest

from aiops.connectors.formats._common import JsonRecordDecoder
from aiops.connectors.formats.log_json import LogJsonDecoder
from aiops.types import LogRecord


def _both(decoder: LogJsonDecoder, payload: bytes) -> tuple[list[LogRecord], list[tuple[str, str]]]:
    fast = decoder.decode(payload, origin="o", timestamp=7.0)
    ref = JsonRecordDecoder.decode(decoder, payload, origin="o", timestamp=7.0)
    got = (list(fast.logs), [(r.reason, r.detail) for r in fast.rejects])
    want = (list(ref.logs), [(r.reason, r.detail) for r in ref.rejects])
    assert got == want
    assert fast.origin == ref.origin
    return got


def _array(*events: str) -> bytes:
    return ("[" + ",".join(events) + "]").encode()


COMMON = [
    '{"message": "a 1", "timestamp": 1700000000.5, "service": "api"}',
    '{"message": "b", "timestamp": 1700000001, "service": "db"}',
    '{"message": "c", "service": "api"}',  # no time: the record's
    '{"msg": 3, "message": "d", "@timestamp": null, "timestamp": 5, "host": {"x": 1}}',
    '{"message": "e", "timestamp": 0, "service": null, "extra": [1, 2, {"y": null}]}',
]

ODD = {
    "not an object": "[1, 2]",
    "message not a string": '{"message": 12, "timestamp": 1}',
    "message an object": '{"message": {"k": "v"}, "timestamp": 1}',
    "no message": '{"msg": "x", "timestamp": 1}',
    "time a string": '{"message": "x", "timestamp": "2024-05-01T12:00:00Z"}',
    "time in ms": '{"message": "x", "timestamp": 1700000000000}',
    "time negative": '{"message": "x", "timestamp": -1}',
    "time a bool": '{"message": "x", "timestamp": true}',
    "label a number": '{"message": "x", "timestamp": 1, "service": 5}',
    "label an object": '{"message": "x", "timestamp": 1, "service": {"a": 1}}',
    "label a list": '{"message": "x", "timestamp": 1, "service": ["a"]}',
    # orjson parses these differently from the standard library, or not at all:
    "label an integer past 64 bits": (
        '{"message": "x", "timestamp": 1, "service": 123456789012345678901234567890}'
    ),
    "message an integer past 64 bits": '{"message": 123456789012345678901234567890}',
    "NaN in another field": '{"message": "x", "timestamp": 1, "other": NaN}',
    "a number past a double": '{"message": "x", "timestamp": 1, "other": 1e400}',
    "a lone surrogate in the message": '{"message": "x\\ud800y", "timestamp": 1}',
    "time past a double": '{"message": "x", "timestamp": 1e400}',
}


@pytest.mark.parametrize("fields", [{"service": "service"}, {}])
def test_common_events_take_the_column_path_with_the_same_records(fields):
    d = LogJsonDecoder(label_fields=fields, labels={"env": "prod"})
    logs, rejects = _both(d, _array(*COMMON))
    assert rejects == []
    assert [r.message for r in logs] == ["a 1", "b", "c", "d", "e"]
    assert [r.timestamp for r in logs] == [1700000000.5, 1700000001.0, 7.0, 5.0, 0.0]
    assert all(type(r.timestamp) is float for r in logs)
    if fields:
        assert logs[0].labels == (("env", "prod"), ("service", "api"))
        assert logs[4].labels == (("env", "prod"),)
    # The column path was taken: the standard library's loop was not called.
    calls = []
    d._decode_items = lambda *a: calls.append(a)  # type: ignore[method-assign]
    assert len(d.decode(_array(*COMMON), timestamp=7.0).logs) == 5
    assert calls == []


@pytest.mark.parametrize("case", sorted(ODD))
def test_an_odd_event_gives_what_the_standard_library_path_gives(case):
    d = LogJsonDecoder(label_fields={"service": "service"})
    odd = ODD[case]
    _both(d, _array(COMMON[0], odd, COMMON[1]))  # among common ones
    _both(d, odd.encode())  # alone: a record that is one event (or an array)


def test_an_integer_past_64_bits_is_kept_exactly():
    """orjson makes a float of it: such an event must not take the column path."""
    d = LogJsonDecoder(label_fields={"service": "service"})
    logs, _ = _both(d, _array(ODD["label an integer past 64 bits"], COMMON[0]))
    assert logs[0].labels == (("service", "123456789012345678901234567890"),)
    logs, _ = _both(d, _array(ODD["message an integer past 64 bits"]))
    assert logs[0].message == "123456789012345678901234567890"


def test_a_lone_surrogate_is_replaced_as_before():
    logs, _ = _both(LogJsonDecoder(), _array(ODD["a lone surrogate in the message"]))
    assert logs[0].message == "x\ufffdy"


@pytest.mark.parametrize(
    "payload",
    [b"[", b"[1,]", b'[{"message": "x"},]', b"\xff[]", b"[]", b"{}", b"null", b'"x"', b"[[]]"],
)
def test_bad_or_empty_records(payload):
    _both(LogJsonDecoder(), payload)


def test_fallback_fields_and_presets():
    d = LogJsonDecoder(preset="fluentbit")  # message: log, then message; time: 3 keys
    events = [
        '{"log": "a", "@timestamp": 1.5, "kubernetes": {"pod_name": "p"}}',
        '{"message": "b", "date": 2}',
        '{"log": null, "message": "c", "time": 3, "date": null}',
    ]
    logs, _ = _both(d, _array(*events))
    assert [(r.message, r.timestamp) for r in logs] == [("a", 1.5), ("b", 2.0), ("c", 3.0)]


@pytest.mark.parametrize("fields", [["service", "host"], ["service"]])
def test_many_streams_and_a_full_stream_cache(monkeypatch, fields):
    monkeypatch.setattr("aiops.connectors.formats.log_json._STREAM_CACHE_MAX", 3)
    d = LogJsonDecoder(label_fields={f: f for f in fields})  # one field: cached by value
    events = [
        json.dumps({"message": f"m{i}", "timestamp": i, "service": f"s{i % 5}", "host": "h"})
        for i in range(50)
    ]
    events.insert(7, json.dumps({"message": "no service", "timestamp": 1}))
    for _ in range(2):  # a second time through the cache it left
        logs, _ = _both(d, _array(*events))
        host = [("host", "h")] if "host" in fields else []
        assert [r.labels for r in logs[:2]] == [
            (*host, ("service", "s0")),
            (*host, ("service", "s1")),
        ]
        assert logs[7].labels == ()
    assert len(d._stream_cache) <= 3
    assert len(d._one_label_cache) <= 3
    assert d._one_label_cache if len(fields) == 1 else d._stream_cache  # the column path


def test_float_times_parse_as_the_standard_library_parses_them():
    values = [0.1, 1.0 / 3, 1700000000.123456, 2.0**-1074, 99999999999.99998, math.pi * 1e9]
    texts = [repr(v) for v in values] + ["1.7e9", "1E3", "12345678901234567e-7"]
    events = [f'{{"message": "x", "timestamp": {t}}}' for t in texts]
    logs, _ = _both(LogJsonDecoder(), _array(*events))
    assert [r.timestamp for r in logs] == [float(json.loads(t)) for t in texts]
