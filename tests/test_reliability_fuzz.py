"""Reliability: 10,000 malformed inputs per decoder, none raises, each is accounted for.

Every format in :mod:`aiops.connectors.formats` and the file source's CSV and JSONL get
10,000 seeded cases each (:class:`tests.fuzz_inputs.Mutator`: bit flips, truncation,
huge fields, deep nesting, bytes that are not UTF-8, lone surrogates, inf/NaN, numbers
past int64, times outside years 1-9999), in-process. For each case:

- ``decode()`` returns (never raises) a well formed result: columns of one length,
  every reject with a reason of :data:`~aiops.pipeline.decoder.REJECT_REASONS` and a
  detail, every string writable as UTF-8 (labels, messages, details: they end up in
  alerts, the rejects file and logs), every time within years 1-9999 once batched;
- nothing is lost and nothing good is dropped with the bad: a line-based record decodes
  as its lines do one by one (each non-blank line gives points, a record, a reject or
  a documented skip); a JSON record that does not parse is one reject, one that does
  gives one point/record or one reject per item, and the good items around a hostile
  one are kept as they decode alone;
- no case takes long (a hang guard: the regexes and parsers stay linear);
- rejects are counted by reason, and the run reaches every reason the format can give.

After the run the decoder still decodes the valid seeds as a fresh one does (its caches
were not poisoned). The remote-write endpoint has its own file
(``test_reliability_fuzz_remote_write.py``).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from aiops.connectors.formats import (
    GenericJsonDecoder,
    InfluxLineDecoder,
    JournaldDecoder,
    LogJsonDecoder,
    LogLinesDecoder,
    PrometheusJsonDecoder,
)
from aiops.pipeline.decoder import (
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    REJECT_REASONS,
    Decoded,
    Decoder,
)
from aiops.types import Batch, SeriesKey
from tests.fuzz_inputs import Mutator, assert_utf8, check_key

CASES = 10_000
#: Any one decode slower than this is a hang (the slowest case here takes milliseconds).
HANG_SECONDS = 2.0
RECORD_TIME = 1_700_000_000.0


@dataclass(frozen=True)
class Format:
    """A decoder under test, its valid seeds and how its items are counted."""

    make: Callable[[], Decoder]
    seeds: tuple[bytes, ...]
    #: "lines": each line decodes alone; "json": one document of items.
    kind: str
    #: The reasons the run must reach (proof that the cases get everywhere).
    reasons: frozenset[str]
    #: For "json": the list of items in a parsed document, or None if it is one item.
    items: Callable[[Any], list[Any] | None] = lambda doc: doc if isinstance(doc, list) else None
    #: For "json": wraps a list of items into a document.
    wrap: Callable[[list[Any]], Any] = lambda items: items
    #: For "json": each item is exactly one point/record or one reject.
    one_per_item: bool = True
    #: For "lines": each line is a JSON document (hostile entries are made as JSON too).
    json_lines: bool = False


ADAPTER = {
    "timestamp": "2024-05-01T12:00:00Z",
    "value": "0.25",
    "name": "up",
    "labels": {"__name__": "up", "instance": "web-1:9100", "job": "node"},
}
READING = {"sensor": "temp", "v": 21.5, "ts": 1700000000000, "site": "lab", "meta": {"rack": "r1"}}
FILEBEAT = {
    "@timestamp": "2024-05-01T12:00:00.123Z",
    "message": "GET /api 500 upstream timed out",
    "host": {"name": "web-1"},
    "log": {"file": {"path": "/var/log/nginx/error.log"}},
}
JOURNAL = {
    "MESSAGE": "Started Session 5 of user root.",
    "PRIORITY": "6",
    "_SYSTEMD_UNIT": "session-5.scope",
    "_HOSTNAME": "web-1",
    "__REALTIME_TIMESTAMP": "1700000000123456",
    "SYSLOG_IDENTIFIER": "systemd",
}


def _j(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _readings(doc: Any) -> list[Any] | None:
    items = doc.get("readings") if isinstance(doc, dict) else None
    return items if isinstance(items, list) else None


FORMATS: dict[str, Format] = {
    "prometheus_json": Format(
        make=PrometheusJsonDecoder,
        seeds=(
            _j(ADAPTER),
            _j([ADAPTER, {**ADAPTER, "value": 3, "timestamp": 1714564800123}]),
            _j({"name": "node_load1", "value": "+Inf", "labels": {"host": "h"}}),
        ),
        kind="json",
        reasons=frozenset(
            {"bad_utf8", "bad_json", "bad_shape", "missing_field", "bad_value", "bad_timestamp"}
            | {"bad_labels"}
        ),
    ),
    "generic_json": Format(
        make=lambda: GenericJsonDecoder(
            items_path="readings",
            name_path="sensor",
            value_path="v",
            timestamp_path="ts",
            labels_path="meta",
            label_paths=["site"],
        ),
        seeds=(
            _j({"readings": [READING, {**READING, "sensor": "rh", "v": "55"}]}),
            _j({"readings": [{**READING, "ts": "2024-05-01T12:00:00.5+02:00"}]}),
        ),
        kind="json",
        reasons=frozenset(
            {"bad_utf8", "bad_json", "bad_shape", "missing_field", "bad_value", "bad_timestamp"}
            | {"bad_labels"}
        ),
        items=_readings,
        wrap=lambda items: {"readings": items},
    ),
    "generic_json_multi": Format(
        make=lambda: GenericJsonDecoder(
            value_paths={"cpu": "m.cpu", "mem": "m.mem"}, timestamp_path="t", label_paths=["h"]
        ),
        seeds=(_j({"m": {"cpu": 0.5, "mem": "12"}, "t": 1700000000, "h": "web-1"}),),
        kind="json",
        reasons=frozenset({"bad_json", "bad_shape", "missing_field", "bad_value", "bad_timestamp"}),
        one_per_item=False,
    ),
    "influx_line": Format(
        make=InfluxLineDecoder,
        seeds=(
            b"cpu,cpu=cpu0,host=web-1 usage_user=12.5,usage_system=3.1 1700000000000000000",
            b'mem,host=a used=1i,free=25u,ok=true,note="x \\"y\\"" 1700000000000000000',
            rb"weather\ report,location=us\,midwest temp=82,ok=T 1465839830100400200",
            b"# comment\nswap,host=b in=0i,out=3i",
        ),
        kind="lines",
        reasons=frozenset({"bad_utf8", "bad_line", "bad_value", "bad_timestamp"}),
    ),
    "influx_line_s": Format(
        make=lambda: InfluxLineDecoder(precision="s", booleans="skip"),
        seeds=(b"disk,path=/ used_percent=71.5,ro=false 1700000000",),
        kind="lines",
        reasons=frozenset({"bad_utf8", "bad_line", "bad_value", "bad_timestamp"}),
    ),
    "log_lines": Format(
        make=lambda: LogLinesDecoder(utf8_errors="reject", labels={"app": "api"}),
        seeds=(b"GET /a 200 12ms\r\nGET /b 500 upstream timed out\n", b"panic: oh no"),
        kind="lines",
        reasons=frozenset({"bad_utf8"}),
    ),
    "log_json": Format(
        make=lambda: LogJsonDecoder(preset="filebeat"),
        seeds=(_j(FILEBEAT), _j([FILEBEAT, {**FILEBEAT, "@timestamp": 1700000000.5}])),
        kind="json",
        reasons=frozenset({"bad_utf8", "bad_json", "bad_shape", "missing_field", "bad_timestamp"}),
    ),
    "journald": Format(
        make=JournaldDecoder,
        seeds=(
            _j(JOURNAL),
            _j({**JOURNAL, "MESSAGE": [104, 105, 255], "PRIORITY": 3}) + b"\n" + _j(JOURNAL),
        ),
        kind="lines",
        reasons=frozenset(
            {"bad_utf8", "bad_json", "bad_shape", "missing_field", "bad_value", "bad_timestamp"}
        ),
        json_lines=True,
    ),
}


# --------------------------------------------------------------------------- checks


def well_formed(out: Decoded, origin: str) -> Batch:
    """The checks every decode result passes, whatever the input; its batch."""
    assert isinstance(out, Decoded)
    assert len(out.keys) == len(out.timestamps) == len(out.values)
    for key in set(out.keys):
        check_key(key)
    assert all(isinstance(v, float) for v in out.values)
    for rec in out.logs:
        assert isinstance(rec.message, str)
        assert isinstance(rec.timestamp, float)
        assert_utf8(rec.message, "log message")
        for k, v in rec.labels:
            assert_utf8(k + v, "log label")
    for r in out.rejects:
        assert r.reason in REJECT_REASONS, r
        assert isinstance(r.detail, str)
        assert r.detail, r
        assert_utf8(r.detail, "reject detail")
        assert isinstance(r.raw, bytes)
        assert r.origin == origin
    assert all(isinstance(n, int) and n > 0 for n in out.skipped.values())
    batch = out.to_batch()
    ts = batch.timestamps
    assert ((ts >= MIN_TIMESTAMP) & (ts < MAX_TIMESTAMP)).all()
    assert all(r.timestamp >= MIN_TIMESTAMP and r.timestamp < MAX_TIMESTAMP for r in batch.logs)
    return batch


def _points(out: Decoded) -> list[tuple[SeriesKey, float, int]]:
    # Values compared by their bits: NaN equals NaN.
    return [(k, t, hash(v) if not math.isnan(v) else -1) for k, t, v in out.points()]


def _summary(out: Decoded) -> tuple[Any, ...]:
    return (_points(out), out.logs, [r.reason for r in out.rejects], dict(out.skipped))


def _line_is_blank(name: str, line: bytes) -> bool:
    if name.startswith("influx"):
        return not line.removesuffix(b"\r").lstrip(b" ")
    if name == "log_lines":
        try:
            return not line.decode("utf-8").strip()
        except UnicodeDecodeError:
            return False
    return not line.strip()


def check_lines(name: str, dec: Decoder, payload: bytes, whole: Decoded) -> None:
    """A record of lines decodes as its lines one by one; no non-blank line vanishes."""
    merged = Decoded(origin="fuzz")
    for line in payload.split(b"\n"):
        one = dec.decode(line, origin="fuzz", timestamp=RECORD_TIME)
        if not _line_is_blank(name, line):
            if name == "influx_line" or name == "influx_line_s":
                assert one.n_points or one.rejects or one.skipped, line
            else:  # one log record or one reject per line
                assert len(one.logs) + len(one.rejects) == 1, (line, one)
        merged.extend(one)
    assert _summary(whole) == _summary(merged)


def check_json(fmt: Format, payload: bytes, out: Decoded) -> None:
    """One reject for a record that is not JSON, else one outcome per item."""
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError):
        assert (out.n_points, out.logs, out.skipped) == (0, [], {}), out
        assert [r.reason for r in out.rejects] in (["bad_utf8"], ["bad_json"]), out.rejects
        return
    items = fmt.items(doc)
    outcomes = out.n_points + len(out.logs) + len(out.rejects)
    if items is None and fmt.wrap([]) != []:  # items_path absent or not an array
        assert outcomes == 1, out
    elif fmt.one_per_item:
        assert outcomes == (1 if items is None else len(items)), (doc, out)


# --------------------------------------------------------------------------- the runs


def _case(fmt: Format, m: Mutator, dec: Decoder, i: int) -> bytes:
    """Case ``i``: a mutated seed, or (every third) good items around a hostile one."""
    rng = m.rng
    seed = fmt.seeds[i % len(fmt.seeds)]
    if i % 3 or (fmt.kind == "lines" and rng.randrange(2)):
        return m.mutate(seed)
    if fmt.kind == "lines":
        good = seed.split(b"\n")[0]
        if fmt.json_lines and rng.randrange(2):  # a hostile entry that is still JSON
            bad = json.dumps(m.mutate_item(json.loads(good)), allow_nan=True).encode()
        else:
            bad = m.mutate(seed)
        return good + b"\n" + bad + b"\n" + good
    doc = json.loads(seed)
    items = fmt.items(doc)
    item = items[0] if items else doc
    return json.dumps(fmt.wrap([item, m.mutate_item(item), item]), allow_nan=True).encode()


def _good_items_kept(fmt: Format, dec: Decoder, payload: bytes, out: Decoded) -> None:
    """For a ``[good, hostile, good]`` record: the good items decode as they do alone."""
    doc = json.loads(payload)
    items = fmt.items(doc)
    if items is None or len(items) != 3:
        return
    alone = dec.decode(json.dumps(fmt.wrap([items[0]])).encode(), timestamp=RECORD_TIME)
    n = alone.n_points
    if n:
        assert _points(out)[:n] == _points(alone)
        assert _points(out)[-n:] == _points(alone)
    if alone.logs:
        assert out.logs[0] == alone.logs[0]
        assert out.logs[-1] == alone.logs[0]


@dataclass
class Run:
    """What :func:`fuzz` saw: rejects by reason, cases with a reject, the slowest decode."""

    reasons: Counter[str]
    with_rejects: int
    slowest: float
    items: int
    decoder: Decoder


def fuzz(name: str, n: int = CASES) -> Run:
    """Decode ``n`` cases of format ``name``, checking each (AssertionError names the case)."""
    fmt = FORMATS[name]
    dec = fmt.make()
    m = Mutator(seed=sum(map(ord, name)))
    run = Run(Counter(), 0, 0.0, 0, dec)
    for i in range(n):
        payload = _case(fmt, m, dec, i)
        start = time.perf_counter()
        try:
            out = dec.decode(payload, origin="fuzz", timestamp=RECORD_TIME)
        except Exception as exc:  # the contract: never raises because of the payload
            raise AssertionError(f"case {i}: {payload[:300]!r} raised {exc!r}") from exc
        run.slowest = max(run.slowest, time.perf_counter() - start)
        try:
            well_formed(out, "fuzz")
            if fmt.kind == "lines":
                check_lines(name, dec, payload, out)
            else:
                check_json(fmt, payload, out)
                if i % 3 == 0:
                    _good_items_kept(fmt, dec, payload, out)
        except AssertionError as exc:
            raise AssertionError(f"case {i}: {payload[:300]!r}: {exc}") from exc
        run.reasons.update(r.reason for r in out.rejects)
        run.with_rejects += bool(out.rejects)
        run.items += out.n_points + len(out.logs)
    return run


@pytest.mark.parametrize("name", FORMATS)
def test_ten_thousand_malformed_records_never_raise_and_are_each_accounted_for(name):
    fmt = FORMATS[name]
    run = fuzz(name)
    reasons, dec = run.reasons, run.decoder
    assert run.slowest < HANG_SECONDS, f"one decode took {run.slowest:.2f} s"
    missing = fmt.reasons - set(reasons)
    assert not missing, f"no case reached {sorted(missing)}; counts {dict(reasons)}"
    # Most cases are really malformed (log_lines accepts any UTF-8 text).
    assert run.with_rejects > (0.1 if name == "log_lines" else 0.4) * CASES, reasons
    fresh = fmt.make()
    for seed in fmt.seeds:
        got = dec.decode(seed, origin="x", timestamp=RECORD_TIME)
        assert _summary(got) == _summary(fresh.decode(seed, origin="x", timestamp=RECORD_TIME))
        assert not got.rejects


@pytest.mark.parametrize("name", ["prometheus_json", "generic_json", "log_json"])
def test_a_time_of_200000_digits_and_a_letter_is_refused_at_once(name):
    """Found by the fuzz run: the number pattern backtracked quadratically (11 s at 20,000)."""
    fmt = FORMATS[name]
    doc = json.loads(fmt.seeds[0])
    item = fmt.items(doc)[0] if fmt.items(doc) else doc
    for key in ("timestamp", "ts", "@timestamp"):
        if key in item:
            item[key] = "1" * 200_000 + "x"
    start = time.perf_counter()
    out = fmt.make().decode(json.dumps(fmt.wrap([item])).encode(), timestamp=RECORD_TIME)
    took = time.perf_counter() - start
    assert [r.reason for r in out.rejects] == ["bad_timestamp"]
    assert took < HANG_SECONDS, f"{took:.1f} s"
