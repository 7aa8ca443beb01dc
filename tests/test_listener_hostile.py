"""The listener against hostile and broken clients: a real server on port 0, real sockets.

Each test attacks what an exposed daemon meets: no credentials, huge declared bodies,
chunked floods, compression bombs, slowloris headers and bodies, piles of half-open
connections, and checks the answer, the refusal counter, and that health stays up.
"""

from __future__ import annotations

import base64
import gzip
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import requests
from servers import require_binary
from test_http import metric_values, start_daemon, wait_until, write_config

from aiops.config import load_config
from aiops.connectors.sources.remote_write import encode_write_request
from aiops.service.http import HttpRequest, HttpResponse, HttpServer, ListenerLimits, ListenError
from aiops.service.http_auth import Authenticator
from aiops.service.metrics import PrometheusMetrics
from aiops.testing import MemorySource


class View:
    def __init__(self) -> None:
        self.health_report: dict[str, Any] = {
            "prom": {"state": "failing", "last_error": "cannot reach http://10.1.2.3:9090"}
        }
        self.ready = True
        self.last_step = time.monotonic()


class Receiver(MemorySource):
    def __init__(self, path: str = "/push", limit: int = 1000, decoded: int = 5000) -> None:
        super().__init__([])
        self.http_path = path
        self.max_body_bytes = limit
        self.max_decoded_bytes = decoded
        self.bodies: list[bytes] = []
        self.encodings: list[str] = []

    def handle_http(self, request: HttpRequest) -> HttpResponse:
        self.bodies.append(request.body)
        self.encodings.append(request.headers.get("content-encoding", ""))
        return HttpResponse(204)

    def stop_receiving(self) -> None:
        pass


class SelfSigned(Receiver):
    """Verifies its own requests (as Slack's handler does): http.auth does not apply."""

    http_authenticates = True


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[HttpServer] = []

    def start(**kwargs: Any) -> tuple[HttpServer, Receiver]:
        recv = Receiver()
        kwargs.setdefault("metrics", PrometheusMetrics())
        server = HttpServer("127.0.0.1:0", View(), **kwargs)
        server.mount(SelfSigned("/signed"))
        server.start()
        server.attach({"push": recv})
        servers.append(server)
        return server, recv

    yield start
    for s in servers:
        s.stop()


def refusals(server: HttpServer) -> dict[str, float]:
    registry = server.metrics.registry
    assert registry is not None
    out: dict[str, float] = {}
    for fam in registry.collect():
        if fam.name == "aiops_http_refusals":
            for s in fam.samples:
                if s.name.endswith("_total"):
                    out[s.labels["reason"]] = s.value
    return out


def raw(server: HttpServer, data: bytes, *, timeout: float = 10.0) -> tuple[bytes, float]:
    """Send ``data`` on a fresh connection; the bytes answered until close, and when."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                got = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not got:
                break
            chunks.append(got)
    return b"".join(chunks), time.monotonic() - t0


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


# --------------------------------------------------------------------------- address


def test_no_host_binds_loopback_and_every_interface_is_written_out(tmp_path):
    server = HttpServer(":0", View())
    assert server.host == "127.0.0.1"
    server.start()
    try:
        assert server.url.startswith("http://127.0.0.1:")
        assert requests.get(server.url + "/readyz", timeout=5).status_code == 200
    finally:
        server.stop()
    assert HttpServer("0.0.0.0:0", View()).host == "0.0.0.0"
    assert HttpServer("[::]:0", View()).host == "::"


# --------------------------------------------------------------------------- auth


def test_every_endpoint_but_healthz_needs_credentials_and_healthz_hides_upstreams(serve):
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    auth = Authenticator(bearer_token="tok-123", basic_users={"prom": hashed})
    server, recv = serve(auth=auth)
    url = server.url
    for method, path in [("GET", "/metrics"), ("GET", "/readyz"), ("GET", "/"), ("POST", "/push")]:
        r = requests.request(method, url + path, data=b"x", timeout=5)
        assert r.status_code == 401, path
        assert r.headers["WWW-Authenticate"] == 'Basic realm="aiopsd"'
    bad = [
        {"Authorization": "Bearer tok-12"},
        {"Authorization": "Bearer tok-1234"},
        {"Authorization": "Basic " + base64.b64encode(b"prom:wrong").decode()},
        {"Authorization": "Basic " + base64.b64encode(b"nobody:pw").decode()},
        {"Authorization": "Basic !!!"},
        {"Authorization": "Digest x"},
    ]
    for headers in bad:
        assert requests.get(url + "/metrics", headers=headers, timeout=5).status_code == 401
    assert recv.bodies == []

    # /healthz answers without credentials, but says nothing of upstream addresses.
    r = requests.get(url + "/healthz", timeout=5)
    assert r.status_code == 503
    assert r.json() == {"status": "unhealthy", "sources": {"prom": {"state": "failing"}}}
    assert "10.1.2.3" not in r.text

    good = [
        {"Authorization": "Bearer tok-123"},
        {"Authorization": "Basic " + base64.b64encode(b"prom:pw").decode()},
    ]
    for headers in good:
        assert requests.get(url + "/metrics", headers=headers, timeout=5).status_code == 200
        r = requests.get(url + "/healthz", headers=headers, timeout=5)
        assert "10.1.2.3" in r.json()["sources"]["prom"]["last_error"]
        r = requests.post(url + "/push", data=b"a", headers=headers, timeout=5)
        assert r.status_code == 204
    # A handler that verifies its own requests is not asked for ours.
    assert requests.post(url + "/signed", data=b"s", timeout=5).status_code == 204
    assert refusals(server)["unauthorized"] == 4 + len(bad)


def test_auth_config_reads_secrets_from_files_and_refuses_inline_passwords(tmp_path):
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "token").write_text("file-token\n")
    (tmp_path / "rules.yaml").write_text("groups: []\n")
    cfg = tmp_path / "aiops.yaml"
    cfg.write_text(
        "sources: {sim: {type: simulator}}\n"
        "rule_files: [rules.yaml]\n"
        "http:\n"
        "  listen: :0\n"
        "  auth:\n"
        "    bearer_token_file: token\n"
        f"    basic_auth_users: {{prom: '{hashed}'}}\n"
        "  limits: {max_connections: 64, read_header_timeout: 2s}\n"
    )
    loaded = load_config(cfg)
    server = HttpServer.from_settings(loaded.daemon.http, View(), base_dir=tmp_path)
    assert server.limits.max_connections == 64
    assert server.limits.read_header_timeout == 2.0
    server.start()
    try:
        assert server.host == "127.0.0.1"
        r = requests.get(server.url + "/readyz", headers={"Authorization": "Bearer file-token"})
        assert r.status_code == 200
        assert requests.get(server.url + "/readyz", timeout=5).status_code == 401
    finally:
        server.stop()
    # A token that cannot be read stops the start: never serve open by accident.
    (tmp_path / "token").unlink()
    server = HttpServer.from_settings(loaded.daemon.http, View(), base_dir=tmp_path)
    with pytest.raises(ListenError, match=r"http\.auth: bearer token: cannot read"):
        server.start()


# --------------------------------------------------------------------------- TLS


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([require_binary("openssl"), *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=test-ca", cwd=d)  # fmt: skip
    for name in ("server", "client"):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        (d / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                 "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
    return d


def test_tls_from_files_with_client_certificates(serve, pki):
    limits = ListenerLimits(read_header_timeout=1.0)
    tls = (str(pki / "server.pem"), str(pki / "server.key"), None)
    server, recv = serve(tls=tls, limits=limits)
    assert server.url.startswith("https://127.0.0.1:")
    r = requests.get(server.url + "/readyz", verify=str(pki / "ca.pem"), timeout=5)
    assert r.status_code == 200
    r = requests.post(server.url + "/push", data=b"over tls", verify=str(pki / "ca.pem"))
    assert r.status_code == 204
    assert recv.bodies == [b"over tls"]
    # Plain HTTP on the TLS port gets no answer; a client that never says hello is cut
    # after read_header_timeout, and neither stops anyone else.
    answer, _ = raw(server, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status(answer) == 0
    with socket.create_connection(("127.0.0.1", server.port)) as silent:
        assert requests.get(server.url + "/healthz", verify=str(pki / "ca.pem")).ok is False
        silent.settimeout(5)
        t0 = time.monotonic()
        assert silent.recv(10) == b""
        assert time.monotonic() - t0 < 3
    # The handshake's abort closes the socket before the handler counts it.
    deadline = time.monotonic() + 5
    while refusals(server).get("tls_handshake", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert refusals(server)["tls_handshake"] >= 2

    mtls = (str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem"))
    server, _ = serve(tls=mtls)
    # No client certificate: the handshake fails (TLS 1.3 reports it after the client's
    # side is done, so the client sees a closed connection rather than an SSL error).
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/readyz", verify=str(pki / "ca.pem"), timeout=5)
    r = requests.get(
        server.url + "/readyz",
        verify=str(pki / "ca.pem"),
        cert=(str(pki / "client.pem"), str(pki / "client.key")),
        timeout=5,
    )
    assert r.status_code == 200


def test_unusable_certificate_files_fail_the_start(tmp_path):
    (tmp_path / "bad.pem").write_text("not a certificate")
    server = HttpServer("127.0.0.1:0", View(), tls=(str(tmp_path / "bad.pem"), "nope.key", None))
    with pytest.raises(ListenError, match=r"http\.tls: cannot use the certificate files"):
        server.start()


# --------------------------------------------------------------------------- bodies


def test_a_huge_declared_body_is_refused_before_a_byte_of_it_is_sent(serve):
    server, recv = serve()
    head = b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: 268435456\r\n\r\n"
    answer, took = raw(server, head)  # the body is never sent: the answer comes anyway
    assert status(answer) == 413
    assert b"over the limit of 1000" in answer
    assert took < 2
    # With Expect: 100-continue, a client learns it without sending the body either.
    answer, _ = raw(server, head.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"))
    assert status(answer) == 413
    # A chunked body is cut as soon as it passes the limit.
    chunks = b"".join(b"%x\r\n%s\r\n" % (300, b"x" * 300) for _ in range(4))
    chunked = b"POST /push HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
    answer, _ = raw(server, chunked)
    assert status(answer) == 413
    # Within the limit, chunked or not, 100-continue or not, the receiver gets it.
    ok = chunked.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert status(raw(server, ok)[0]) == 204
    r = requests.post(server.url + "/push", data=b"y" * 1000, headers={"Expect": "100-continue"})
    assert r.status_code == 204
    assert recv.bodies == [b"abc", b"y" * 1000]
    assert refusals(server)["body_too_large"] == 3


def test_compression_bombs_inflate_only_up_to_the_receivers_bound(serve):
    server, recv = serve()
    bomb = gzip.compress(b"\0" * 10_000_000)  # 10 MB of zeros in ~10 KB
    assert len(bomb) < 20_000
    recv.max_body_bytes = len(bomb) + 1
    r = requests.post(server.url + "/push", data=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413
    assert "inflates past the limit of 5000" in r.text
    gz = {"Content-Encoding": "gzip"}
    r = requests.post(server.url + "/push", data=b"\x1f\x8bnope", headers=gz)
    assert r.status_code == 400
    r = requests.post(
        server.url + "/push", data=gzip.compress(b"hello"), headers={"Content-Encoding": "gzip"}
    )
    assert r.status_code == 204
    assert recv.bodies == [b"hello"]
    assert recv.encodings == [""]
    # Other encodings (Prometheus' snappy) reach the receiver as they are.
    requests.post(server.url + "/push", data=b"raw", headers={"Content-Encoding": "snappy"})
    assert recv.bodies[-1] == b"raw"
    assert recv.encodings[-1] == "snappy"
    got = refusals(server)
    assert got["decoded_too_large"] == 1
    assert got["bad_encoding"] == 1


def test_bodies_in_flight_are_bounded_over_all_connections(serve):
    server, recv = serve(limits=ListenerLimits(max_inflight_bytes=1500))
    recv.max_body_bytes = 1000
    gate = threading.Event()
    entered = threading.Event()
    original = recv.handle_http

    def slow(request: HttpRequest) -> HttpResponse:
        if request.body.startswith(b"a"):
            entered.set()
            gate.wait(10)
        return original(request)

    recv.handle_http = slow  # type: ignore[method-assign]
    first: list[int] = []

    def post_first() -> None:
        first.append(requests.post(server.url + "/push", data=b"a" * 1000).status_code)

    t = threading.Thread(target=post_first)
    t.start()
    assert entered.wait(5)
    r = requests.post(server.url + "/push", data=b"b" * 800, timeout=5)
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "1"
    assert requests.post(server.url + "/push", data=b"c" * 400, timeout=5).status_code != 503
    gate.set()
    t.join(10)
    assert first == [204]
    assert requests.post(server.url + "/push", data=b"d" * 800, timeout=5).status_code == 204
    assert refusals(server)["busy"] == 1


# --------------------------------------------------------------------------- slow clients


def test_slow_headers_and_slow_bodies_time_out_with_408(serve):
    limits = ListenerLimits(read_header_timeout=0.5, read_timeout=1.0, idle_timeout=0.5)
    server, recv = serve(limits=limits)
    answer, took = raw(server, b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert status(answer) == 408
    assert 0.4 < took < 3
    answer, took = raw(server, b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
    assert status(answer) == 408
    assert 0.9 < took < 3
    # A connection that sends nothing is closed without an answer; so is an idle one.
    answer, took = raw(server, b"")
    assert answer == b""
    assert took < 3
    answer, took = raw(server, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status(answer) == 200
    assert 0.4 < took < 3
    assert recv.bodies == []
    got = refusals(server)
    assert got["header_timeout"] == 2
    assert got["body_timeout"] == 1


def test_malformed_and_oversized_requests_get_4xx(serve):
    server, _ = serve(limits=ListenerLimits(max_header_bytes=2048))
    answer, _ = raw(server, b"GET /readyz HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 4000 + b"\r\n\r\n")
    assert status(answer) == 431
    answer, _ = raw(server, b"BLAH\x00\r\n\r\n")
    assert status(answer) == 400
    answer, _ = raw(server, b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
    assert status(answer) == 400
    got = refusals(server)
    assert got["headers_too_large"] == 1
    assert got["bad_request"] == 2
    assert requests.get(server.url + "/readyz", timeout=5).status_code == 200


def _half_open(server: HttpServer, n: int, partial: bool) -> list[socket.socket]:
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        if partial and i % 2:
            s.sendall(b"POST /push HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    return socks


def test_health_answers_with_150_half_open_connections(serve):
    server, _ = serve()  # the default limits
    socks = _half_open(server, 150, partial=True)
    try:
        wait_until(lambda: server.open_connections >= 150, what="150 connections open")
        session = requests.Session()
        worst = 0.0
        for _ in range(20):
            t0 = time.perf_counter()
            assert session.get(server.url + "/healthz", timeout=5).status_code == 503
            assert session.get(server.url + "/readyz", timeout=5).status_code == 200
            worst = max(worst, time.perf_counter() - t0)
        assert worst < 1.0, worst
    finally:
        for s in socks:
            s.close()


def test_over_the_connection_budget_the_longest_waiting_connection_makes_room(serve):
    server, _ = serve(limits=ListenerLimits(max_connections=20))
    socks = _half_open(server, 150, partial=True)
    try:
        for _ in range(10):
            r = requests.get(server.url + "/healthz", timeout=5)
            assert r.status_code == 503
            assert r.json()["status"] == "unhealthy"
        assert server.open_connections <= 20
        assert refusals(server)["evicted"] >= 130
    finally:
        for s in socks:
            s.close()


def test_stop_closes_every_connection_and_refuses_further_ones(serve):
    server, _recv = serve()
    socks = _half_open(server, 30, partial=False)
    wait_until(lambda: server.open_connections >= 30, what="connections open")
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 3
    for s in socks:
        s.settimeout(5)
        assert s.recv(10) == b""
        s.close()
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/healthz", timeout=2)


# --------------------------------------------------------------------------- /metrics


def test_promtool_check_metrics_finds_nothing_to_fix(tmp_path):
    """The whole daemon's /metrics, after data, an alert, rejects and refusals."""
    config = write_config(
        tmp_path,
        {"rw": {"type": "remote_write", "max_samples_per_request": 50}},
        [{"alert": "Any", "source": "rw", "selector": "m", "threshold": 0.5}],
    )
    d = start_daemon(config)
    try:
        url = d.url + "/api/v1/write"
        points = [(float(t), 1.0 + (t == 30) * 100) for t in range(1, 41)]
        assert requests.post(url, data=encode_write_request([({"__name__": "m"}, points)])).ok
        big = encode_write_request([({"__name__": "m"}, [(float(t), 1.0) for t in range(60)])])
        assert requests.post(url, data=big, timeout=5).status_code == 413
        assert requests.post(url, data=b"junk", timeout=5).status_code == 400
        raw_status = status(raw(d.daemon.listener, b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000)[0])
        assert raw_status == 431
        wait_until(lambda: d.daemon.health["rw"].points == 40, what="samples processed")
        text = requests.get(d.url + "/metrics", timeout=5).text
    finally:
        d.stop()
    m = metric_values(text)
    for reason in ("too_many_samples", "bad_snappy", "headers_too_large"):
        assert m[("aiops_http_refusals_total", (("reason", reason),))] == 1, reason
    out = subprocess.run(
        [require_binary("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout + out.stderr == ""


def test_tls_context_refuses_old_protocols(pki):
    from aiops.service.http_auth import server_tls_context

    ctx = server_tls_context(str(pki / "server.pem"), str(pki / "server.key"), None)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
