"""Reliability: 400 malformed HTTP requests on raw sockets never break the listener.

Valid requests (a remote-write POST with ``Content-Length``, one with a chunked body,
one gzip-encoded, pipelined GETs of the health endpoints and of ``/metrics``) are
damaged by :class:`tests.fuzz_inputs.Mutator` (bit flips, truncation, inserted bytes,
bytes that are not ASCII, duplicated headers, huge fields) and written to a fresh
connection of the real listener, which the client then half-closes. Every answer is a
well formed HTTP/1.1 response and never a 500 (501 for a transfer coding other than
chunked and 503 for busy are the listener's answers), or the connection is closed
without one; ``/readyz`` keeps answering, every
connection is closed in the end, and the remote-write source counted each refused
request as a reject.
"""

from __future__ import annotations

import gzip
import re
import socket
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import requests

from aiops.connectors.sources.remote_write import RemoteWriteSource, encode_write_request
from aiops.service.http import HttpServer, ListenerLimits
from aiops.testing import StaticView
from tests.fuzz_inputs import Mutator

CASES = 400
BODY = encode_write_request([({"__name__": "up", "job": "a"}, [(1_700_000_000, 1.0)])])
_STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")
# The body of a refusal by the source (not by the listener): "reason: detail".
_REFUSAL = re.compile(rb"\r\n\r\n(bad_snappy|bad_protobuf|too_large|too_many_samples): ")


def _post(body: bytes, *headers: str) -> bytes:
    head = [
        "POST /api/v1/write HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/x-protobuf",
        "Content-Encoding: snappy",
        "X-Prometheus-Remote-Write-Version: 0.1.0",
        *headers,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def _chunked(body: bytes) -> bytes:
    mid = len(body) // 2
    parts = [body[:mid], body[mid:]]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


SEEDS = (
    _post(BODY, f"Content-Length: {len(BODY)}"),
    _post(_chunked(BODY), "Transfer-Encoding: chunked"),
    _post(gzip.compress(BODY), f"Content-Length: {len(gzip.compress(BODY))}").replace(
        b"Content-Encoding: snappy", b"Content-Encoding: gzip"
    ),
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /metrics?name[]=aiops_up HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n",
)


@pytest.fixture
def listener() -> Iterator[tuple[HttpServer, RemoteWriteSource]]:
    src = RemoteWriteSource("rw", RemoteWriteSource.Config())
    limits = ListenerLimits(read_header_timeout=1.0, read_timeout=1.0, idle_timeout=0.5)
    server = HttpServer("127.0.0.1:0", StaticView(), limits=limits)
    server.start()
    server.attach({"rw": src})
    yield server, src
    server.stop()


def _exchange(port: int, data: bytes) -> bytes:
    """Write ``data``, half-close, and read until the listener closes (or 5 s pass)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the listener answered and closed while we were writing
            pass
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
    return b"".join(chunks)


def test_four_hundred_malformed_requests_are_answered_or_closed_never_a_500(listener, caplog):
    server, src = listener
    m = Mutator(21)
    statuses: Counter[int] = Counter()
    closed_silently = 0
    told: Counter[str] = Counter()
    with requests.Session() as session:
        for i in range(CASES):
            data = m.mutate(SEEDS[i % len(SEEDS)])
            answer = _exchange(server.port, data)
            codes = [int(c) for c in _STATUS.findall(answer)]
            told.update(r.decode() for r in _REFUSAL.findall(answer))
            if not codes:
                assert answer == b"", (data[:200], answer[:200])
                closed_silently += 1
            for code in codes:
                # 501: a Transfer-Encoding other than chunked; 503: busy. 500 is our bug.
                assert code < 500 or code in (501, 503), (data[:300], answer[:300])
                statuses[code] += 1
            if i % 25 == 0:
                assert session.get(server.url + "/readyz", timeout=5).status_code == 200
        assert session.get(server.url + "/readyz", timeout=5).status_code == 200
    deadline = time.monotonic() + 5
    while server.open_connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.open_connections == 0
    assert statuses[204], statuses
    assert statuses[200], statuses
    assert statuses[400], statuses
    # Nothing the clients did is a traceback in the log.
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    # Each request the remote-write source refused is one of its rejects, by reason. A
    # damaged label set can also cost one series of a request that is still answered 204
    # (its other series kept): those are rejects the answer does not name.
    refused = Counter(r.reason for r in src.next_batch().rejects)
    per_series = {"missing_field", "bad_labels"}
    assert Counter({k: n for k, n in refused.items() if k not in per_series}) == told, (
        refused,
        told,
    )
    print(f"answers {dict(sorted(statuses.items()))}, closed without one {closed_silently}")
