"""Reliability: 10,000 malformed remote-write requests in-process, 300 through the listener.

Requests are built field by field (:func:`write_request`), so the test knows what each
must decode to: series without ``__name__``, labels that are not UTF-8, native
histograms, staleness markers, NaN and infinite values, times outside years 1-9999,
fields in any order, unknown fields, proto3's omitted zeros. Half are then damaged
(:class:`tests.fuzz_inputs.Mutator` on the protobuf bytes or on the snappy block), and
some are over the receiver's bounds. For each one:

- the answer is 204, 400 or 413, never an exception (a 500 through the listener);
- a 400 or 413 is exactly one reject of the source, by reason; a 204 queues every
  sample of every good series (staleness markers aside) and one reject per bad series,
  the good series of the same request kept, as protobuf's own parser reads them when
  it can read the damaged bytes at all;
- the daemon's drop of times outside years 1-9999 leaves nothing undeliverable.

Through the real listener (:class:`~aiops.service.http.HttpServer`) the same cases keep
``/readyz`` answering and every 4xx counted.
"""

from __future__ import annotations

import math
import random
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import cramjam
import pytest
import requests
from google.protobuf.message import DecodeError

from aiops.connectors.sources.remote_write import (
    STALE_NAN_BITS,
    RemoteWriteSource,
    message_classes,
)
from aiops.pipeline.decoder import MAX_TIMESTAMP, MIN_TIMESTAMP, drop_bad_times
from aiops.service.http import HttpRequest, HttpServer
from aiops.testing import StaticView
from aiops.types import Batch, SeriesKey
from tests.fuzz_inputs import Mutator, check_key

PATH = "/api/v1/write"
CASES = 10_000
HTTP_CASES = 300
CONFIG = RemoteWriteSource.Config(max_decoded_bytes=48 << 10, max_samples_per_request=30)
#: The reasons of a whole request refused, with their status.
REFUSALS = {"bad_snappy": 400, "bad_protobuf": 400, "too_large": 413, "too_many_samples": 413}
#: The reasons of one series of an accepted request.
SERIES_REASONS = {"missing_field", "bad_labels", "unsupported"}
STALE = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]
_VALUES = (0.0, -0.0, 1.0, 0.25, -3.5e9, 1e308, 5e-324, math.inf, -math.inf, math.nan, STALE)
_TIMES_MS = (
    0, -1, 1_700_000_000_000, 1_700_000_000_123, 2**62, 2**63 - 1, -(2**63),
    253_402_300_800_000, 253_402_300_799_999, -62_135_596_800_000, -62_135_596_800_001,
)  # fmt: skip


# --------------------------------------------------------------------------- protobuf by hand


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 as protobuf writes it: two's complement, 10 bytes if negative
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


@dataclass
class Expected:
    """What a request built by :func:`write_request` decodes to."""

    points: list[tuple[SeriesKey, float, int]] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    samples: int = 0


def _label_text(rng: random.Random) -> bytes:
    pick = rng.randrange(12)
    if pick == 0:
        return b""
    if pick == 1:
        return rng.choice((b"\xff", b"ok\xc3", b"\xed\xa0\x80", b"\xc0\x80"))  # not UTF-8
    if pick == 2:
        return "é\u202e\x00☃".encode()
    if pick == 3:
        return b"x" * rng.choice((300, 5000, 40_000))
    return rng.choice((b"job", b"instance", b"web-1:9100", b"node", b"le", b"0.5", b"a b"))


def _sample(rng: random.Random) -> tuple[bytes, float, int]:
    value = rng.choice(_VALUES) if rng.randrange(3) else rng.uniform(-1e6, 1e6)
    ms = (
        rng.choice(_TIMES_MS) if rng.randrange(4) == 0 else 1_700_000_000_000 + rng.randrange(10**9)
    )
    parts = []
    if value != 0.0 or math.copysign(1, value) < 0 or rng.randrange(2):  # proto3 omits zero
        parts.append(b"\x09" + struct.pack("<d", value))
    if ms or rng.randrange(2):
        parts.append(b"\x10" + _varint(ms))
    if rng.randrange(10) == 0:
        parts.reverse()
    if rng.randrange(20) == 0:
        parts.append(b"\x18" + _varint(rng.randrange(1000)))  # an unknown field
    return b"".join(parts), value, ms


def write_request(rng: random.Random) -> tuple[bytes, Expected]:
    """A WriteRequest's protobuf bytes (uncompressed) and what it must decode to."""
    expected = Expected()
    series = []
    for _ in range(rng.randrange(8)):
        labels: list[tuple[bytes, bytes]] = []
        if rng.randrange(8):
            labels.append((b"__name__", rng.choice((b"up", b"node_load1", b"", b"\xff"))))
        labels += [(_label_text(rng), _label_text(rng)) for _ in range(rng.randrange(4))]
        rng.shuffle(labels)
        label_fields = [_len_field(1, _len_field(1, k) + _len_field(2, v)) for k, v in labels]
        samples = [_sample(rng) for _ in range(rng.randrange(12))]
        sample_fields = [_len_field(2, s) for s, _, _ in samples]
        hist = [_len_field(4, rng.randbytes(rng.randrange(20)))] if rng.randrange(12) == 0 else []
        extra = [_len_field(3, b"\x0a\x00")] if rng.randrange(15) == 0 else []  # an exemplar
        fields = label_fields + sample_fields + hist + extra
        if rng.randrange(6) == 0:  # interleaved, each repeated field in its order:
            fields = _interleave(rng, label_fields, sample_fields + hist + extra)
        series.append(_len_field(1, b"".join(fields)))
        expected.samples += len(samples)
        try:
            pairs = {k.decode(): v.decode() for k, v in labels}  # the last of a name wins
        except UnicodeDecodeError:
            expected.reasons["bad_labels"] += 1
            continue
        name = pairs.get("__name__", "")
        if not name:
            expected.reasons["missing_field"] += 1
            continue
        if hist:
            expected.reasons["unsupported"] += 1
        key = SeriesKey.of(name, pairs)
        for _, value, ms in samples:
            if struct.pack("<d", value) != struct.pack("<d", STALE):
                expected.points.append((key, ms / 1000.0, _bits(value)))
    return b"".join(series), expected


def _interleave(rng: random.Random, a: list[bytes], b: list[bytes]) -> list[bytes]:
    """``a`` and ``b`` merged at random, each keeping its own order."""
    a, b, out = a[::-1], b[::-1], []
    while a or b:
        out.append((a if a and (not b or rng.randrange(2)) else b).pop())
    return out


def _bits(value: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", value))[0]


def reference(raw: bytes) -> Expected | None:
    """What protobuf's own parser reads from ``raw`` (None if it cannot parse it)."""
    req = message_classes()["WriteRequest"]()
    try:
        req.ParseFromString(raw)
    except (DecodeError, RecursionError, ValueError):
        return None
    expected = Expected()
    for ts in req.timeseries:
        pairs = {lb.name: lb.value for lb in ts.labels}
        name = pairs.get("__name__", "")
        if not name:
            expected.reasons["missing_field"] += 1
            continue
        if len(ts.histograms):
            expected.reasons["unsupported"] += 1
        key = SeriesKey.of(name, pairs)
        for s in ts.samples:
            if _bits(s.value) != STALE_NAN_BITS:
                expected.points.append((key, s.timestamp / 1000.0, _bits(s.value)))
    return expected


def cases(seed: int, n: int) -> Iterator[tuple[bytes, Expected | None]]:
    """``n`` request bodies and what each must decode to (None: damaged bytes)."""
    rng = random.Random(seed)
    m = Mutator(seed)
    for i in range(n):
        raw, expected = write_request(rng)
        kind = i % 4
        if kind == 1:  # damaged protobuf: as protobuf reads it, when it can
            raw = m.mutate(raw)
            body = bytes(cramjam.snappy.compress_raw(raw))
            yield body, reference(raw) or None
            continue
        body = bytes(cramjam.snappy.compress_raw(raw))
        if kind == 2 and rng.randrange(2):  # damaged snappy block
            yield m.mutate(body), None
            continue
        yield body, expected


# --------------------------------------------------------------------------- checks


def _outcome(status: int, batch: Batch, expected: Expected | None) -> Counter[str]:
    """Check one answer and the batch it queued; the reject reasons it gave."""
    reasons = Counter(r.reason for r in batch.rejects)
    for key in batch.keys:
        check_key(key)
    assert status in (204, 400, 413), status
    if status != 204:
        assert batch.n_points == 0
        assert sum(reasons.values()) == 1, batch.rejects
        (reason,) = reasons
        assert REFUSALS[reason] == status, batch.rejects
        if expected is not None:  # it was a well formed request: refused only for its size
            assert reason in ("too_large", "too_many_samples"), batch.rejects
        return reasons
    assert set(reasons) <= SERIES_REASONS, batch.rejects
    if expected is not None:
        got = [(k, t, _bits(v)) for k, t, v in batch.points()]
        assert got == expected.points
        assert reasons == expected.reasons, (reasons, expected.reasons)
    # What the daemon then does with it: no time outside years 1-9999 reaches a rule.
    kept = drop_bad_times(batch, "rw")
    assert ((kept.timestamps >= MIN_TIMESTAMP) & (kept.timestamps < MAX_TIMESTAMP)).all()
    bad_times = sum(r.reason == "bad_timestamp" for r in kept.rejects)
    assert kept.n_points + bad_times == batch.n_points
    reasons["bad_timestamp"] += bad_times
    return reasons


def fuzz(seed: int = 1, n: int = CASES) -> tuple[Counter[str], Counter[int]]:
    """Post ``n`` cases to a source in-process, checking each; reasons and statuses."""
    src = RemoteWriteSource("rw", CONFIG)
    reasons: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    for i, (body, expected) in enumerate(cases(seed=seed, n=n)):
        try:
            resp = src.handle_http(HttpRequest("POST", PATH, {}, body))
        except Exception as exc:  # became a 500 and an uncounted loss before
            raise AssertionError(f"case {i}: {body[:200]!r} raised {exc!r}") from exc
        batch = src.next_batch()
        try:
            reasons += _outcome(resp.status, batch, expected)
        except AssertionError as exc:
            raise AssertionError(f"case {i} ({resp.status} {resp.body[:200]!r}): {exc}") from exc
        statuses[resp.status] += 1
        assert src.queued_samples == 0
    return reasons, statuses


def test_ten_thousand_malformed_requests_are_answered_and_each_counted():
    reasons, statuses = fuzz()
    need = set(REFUSALS) | SERIES_REASONS | {"bad_timestamp"}
    assert need <= set(reasons), dict(reasons)
    assert min(statuses[204], statuses[400], statuses[413]) > CASES // 50, statuses


@pytest.fixture
def listener() -> Iterator[tuple[HttpServer, RemoteWriteSource]]:
    src = RemoteWriteSource("rw", CONFIG)
    server = HttpServer("127.0.0.1:0", StaticView())
    server.start()
    server.attach({"rw": src})
    yield server, src
    server.stop()


def test_three_hundred_malformed_requests_through_the_listener(listener):
    server, src = listener
    reasons: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    with requests.Session() as session:
        for i, (body, expected) in enumerate(cases(seed=2, n=HTTP_CASES)):
            r = session.post(server.url + PATH, data=body, timeout=10)
            reasons += _outcome(r.status_code, src.next_batch(), expected)
            statuses[r.status_code] += 1
            if i % 20 == 0:
                assert session.get(server.url + "/readyz", timeout=10).status_code == 200
        # A body over max_body_bytes is refused from its Content-Length, unread, uncounted
        # by the source (the listener counts it); the connection stays usable.
        big = session.post(server.url + PATH, data=b"\0" * (CONFIG.max_body_bytes + 1))
        assert big.status_code == 413
        assert session.get(server.url + "/healthz", timeout=10).status_code == 200
    assert statuses[204], statuses
    assert statuses[400], statuses
    assert statuses[413], statuses
    assert {"bad_protobuf", "bad_snappy", "missing_field"} <= set(reasons), dict(reasons)
