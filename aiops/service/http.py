"""The daemon's HTTP listener: health, readiness, ``/metrics``, and push receivers.

Served when ``http.listen`` is set, from one thread running an asyncio loop (every
connection, TLS handshakes included, is a coroutine: a client that connects and says
nothing costs a socket, not a thread), with HTTP/1.1 parsed by h11 and handlers run
in a small thread pool. Why not waitress (the listener until now): it has no TLS, and
it reads (and spools to disk) a whole request body before the application can look at
its size, whereas here a body over its receiver's limit is refused from its headers.

Endpoints:

- ``GET /healthz``: 200 when the daemon runs and every source is healthy, else 503.
  Never asks for credentials. With valid credentials (or when ``http.auth`` is off)
  the JSON body lists each source: ``state`` (``ok``; ``failing``: polling it raises,
  the daemon backs off; ``degraded``: it works but some of its parts fail, such as
  one bad query of a pull source), ``last_error``, ``failures`` (failed polls in a
  row), ``retry_in`` (seconds), ``problems`` (failing part -> error), and counts.
  Without them, only each source's ``state``: errors name upstream addresses.
  A broken upstream makes this 503, so do not use it as a Kubernetes liveness probe
  (a restart cannot fix Prometheus); use ``/readyz``.
- ``GET /readyz``: 200 once the daemon has loaded its checkpoint, opened its sources
  and its loop is turning; 503 while starting, stopping, or when the loop has not
  completed an iteration for :data:`STALL_SECONDS`.
- ``GET /metrics``: the daemon's metrics (:mod:`aiops.service.metrics`) in the Prometheus or
  OpenMetrics text format (content negotiation and gzip by prometheus-client).
- Push receivers (sources implementing :class:`HttpReceiver`, such as the remote-write
  source on ``POST /api/v1/write``) are mounted at their ``http_path`` when the
  daemon opens its sources (:meth:`HttpServer.attach`).
- Other handlers of the daemon's own (``POST /slack/interactions``, the Slack buttons:
  :class:`aiops.alerting.feedback.SlackInteractions`) are mounted once by the app
  (:meth:`HttpServer.mount`), with the same contract as a push receiver. A mounted
  handler may set ``http_methods`` (default ``("POST",)``; ``GET`` allows ``HEAD``) and
  ``http_subpaths = True`` to be served every path under ``http_path + "/"`` too (the
  models API: ``GET /api/v1/models/<rule>``).

Security and limits (``http.auth``, ``http.tls``, ``http.limits``; see
:class:`ListenerLimits`): every endpoint but ``/healthz`` needs the bearer token or a
basic-auth user when ``http.auth`` is set (401 otherwise); a handler that verifies its
own requests (Slack's signatures: ``http_authenticates = True``) is exempt. Each
refusal is counted in ``aiops_http_refusals_total{reason}``:

====================  ======  =========================================================
reason                status  what
====================  ======  =========================================================
``unauthorized``      401     missing or wrong credentials
``body_too_large``    413     Content-Length, or a chunked body so far, over the
                              receiver's ``max_body_bytes`` (refused before reading)
``decoded_too_large`` 413     a ``Content-Encoding: gzip``/``deflate`` body inflating
                              past the receiver's ``max_decoded_bytes``
``bad_encoding``      400     such a body that does not inflate
``bad_request``       400     not HTTP/1.1 (h11 refuses it)
``headers_too_large`` 431     request line and headers over ``max_header_bytes``
``header_timeout``    408     headers not complete ``read_header_timeout`` after the
                              connection (or, kept alive, its next request) began
``body_timeout``      408     body not complete ``read_timeout`` after its request began
``busy``              503     bodies read and not yet handled would pass
                              ``max_inflight_bytes`` (with ``Retry-After``)
``connections``       503     ``max_connections`` open and none waiting for a request
``evicted``           --      closed, when ``max_connections`` are open, to admit a
                              new one: the connection that has waited longest for its
                              request's headers (how health stays reachable while
                              half-open connections pile up)
``tls_handshake``     --      a TLS handshake that failed or did not finish in time
others                        the receiver's own (``queue_full``, ``stopping``,
                              ``too_many_samples``...: :attr:`HttpResponse.refusal`)
====================  ======  =========================================================

Threads: the data path is single-threaded and never waits for HTTP. Handlers only read
what the daemon published (``health_report``, ``ready``, ``last_step``: replaced as
whole objects, so a reader sees one consistent version) or hand a request to a
receiver, which must only decode and enqueue. ``/healthz`` and ``/readyz`` are
answered on the loop itself, so busy handler threads never delay them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import io
import json
import logging
import re
import socket
import ssl
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

from aiops.service.http_auth import NO_AUTH, Authenticator
from aiops.service.metrics import NULL_METRICS, Metrics

__all__ = [
    "MAX_REQUEST_BYTES",
    "STALL_SECONDS",
    "DaemonView",
    "HttpReceiver",
    "HttpRequest",
    "HttpResponse",
    "HttpServer",
    "ListenError",
    "Listener",
    "ListenerLimits",
    "NullListener",
]

log = logging.getLogger(__name__)

#: ``/readyz`` fails when the daemon loop has not completed an iteration for this long.
STALL_SECONDS = 300.0
#: Worker threads running receivers (decoding pushed data).
HTTP_THREADS = 4
#: Largest body any receiver may declare (a receiver's own ``max_body_bytes`` is lower).
MAX_REQUEST_BYTES = 256 << 20
#: Seconds ``stop()`` waits for requests in flight, and for the loop thread.
STOP_TIMEOUT = 5.0
#: Bytes read from a socket at a time.
READ_CHUNK = 64 << 10

_REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

StartResponse = Callable[..., Any]
WsgiEnviron = dict[str, Any]


class ListenError(RuntimeError):
    """The listener cannot start: the address is taken, a file or a dependency is missing."""


@dataclass(frozen=True)
class HttpRequest:
    """One request as a receiver sees it (header names in lower case)."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    remote_addr: str = ""


@dataclass(frozen=True)
class HttpResponse:
    """What a receiver answers.

    ``refusal`` names why a request was refused (``queue_full``...), for
    ``aiops_http_refusals_total{reason}``; empty for an answer that is not a refusal.
    """

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    refusal: str = ""


#: Deepest nesting :func:`request_json` takes (Slack's block payloads nest about ten).
MAX_JSON_DEPTH = 64
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def request_json(body: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A request body's JSON document; ``ValueError`` (with the reason) for anything else.

    Refused: invalid UTF-8, invalid JSON, an integer over Python's digit limit, and
    nesting deeper than ``max_depth`` (``json.loads`` itself recurses once per level:
    thousands of ``[`` were a ``RecursionError``, and whatever later walks the document
    would recurse as deep). A lone surrogate (the JSON escape of half a UTF-16 pair)
    becomes U+FFFD: SQLite, log files and every UTF-8 writer refuse one.

    >>> request_json('{"a": [1, {"b": null}]}')
    {'a': [1, {'b': None}]}
    >>> request_json("[" * 65 + "]" * 65)
    Traceback (most recent call last):
    ...
    ValueError: nested deeper than 64 levels
    """
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    try:
        doc = json.loads(text)
    except RecursionError:
        raise ValueError(f"nested deeper than {max_depth} levels") from None
    return _checked(doc, max_depth, max_depth)


def _checked(node: Any, left: int, max_depth: int) -> Any:
    if isinstance(node, str):
        return _LONE_SURROGATE.sub("\ufffd", node)
    if isinstance(node, list | dict):
        if left == 0:
            raise ValueError(f"nested deeper than {max_depth} levels")
        if isinstance(node, list):
            return [_checked(v, left - 1, max_depth) for v in node]
        return {
            _LONE_SURROGATE.sub("\ufffd", k): _checked(v, left - 1, max_depth)
            for k, v in node.items()
        }
    return node


@runtime_checkable
class HttpReceiver(Protocol):
    """A push source that takes its data from HTTP requests on the daemon's listener.

    ``handle_http`` is called from the listener's threads, concurrently: it may only
    decode the request and enqueue the result for ``next_batch()`` (under a lock of
    its own), and it answers at once (a full queue is a 503, never a wait).
    After ``stop_receiving()`` returns, it accepts nothing more (it answers 503), so
    the daemon can drain what it accepted before its final checkpoint.

    Optional attributes the listener reads: ``max_decoded_bytes`` (bound of a body
    sent with ``Content-Encoding: gzip`` or ``deflate``, which the listener inflates;
    default ``max_body_bytes``) and ``http_authenticates`` (True: the handler verifies
    each request itself, such as Slack's signatures, so ``http.auth`` does not apply).
    """

    #: The path it is mounted at, e.g. ``/api/v1/write``.
    http_path: str
    #: Larger request bodies are refused (413) before they are read.
    max_body_bytes: int

    def handle_http(self, request: HttpRequest) -> HttpResponse:
        """Decode and enqueue one request; answer without blocking."""
        ...

    def stop_receiving(self) -> None:
        """Refuse every later request (503); requests being handled may still finish."""
        ...


class DaemonView(Protocol):
    """What the listener reads of the daemon (each attribute replaced whole, atomically)."""

    @property
    def health_report(self) -> Mapping[str, Mapping[str, Any]]:
        """Per source id, its JSON-ready health (see :class:`aiops.service.daemon.SourceHealth`)."""
        ...

    @property
    def ready(self) -> bool:
        """True between the end of start-up and the beginning of shutdown."""
        ...

    @property
    def last_step(self) -> float:
        """``time.monotonic()`` at the end of the last loop iteration (0: none yet)."""
        ...


class Listener(Protocol):
    """The daemon's view of its listener: start, mount sources, stop."""

    def start(self) -> None:
        """Bind and serve; raise :class:`ListenError` when that is impossible."""
        ...

    def attach(self, sources: Mapping[str, object]) -> None:
        """Mount the sources that are :class:`HttpReceiver` at their paths."""
        ...

    def stop(self) -> None:
        """Stop receivers, then the server; idempotent."""
        ...


class NullListener:
    """No listener (``http.listen: ""``): push receivers get nothing, and say so."""

    def start(self) -> None:
        """Nothing to start."""

    def attach(self, sources: Mapping[str, object]) -> None:
        """Warn about receivers that nothing will ever call."""
        for sid, src in sources.items():
            if isinstance(src, HttpReceiver):
                log.warning(
                    "source %s receives on HTTP %s but http.listen is off: it will get no data",
                    sid,
                    src.http_path,
                )

    def stop(self) -> None:
        """Nothing to stop."""


@dataclass(frozen=True)
class ListenerLimits:
    """Bounds that keep hostile or broken clients from exhausting the listener.

    ``max_connections``: open connections; at the bound a new one evicts the connection
    waiting longest for its request headers, or gets 503. ``read_header_timeout``:
    seconds from a connection's start (or, kept alive, its next request's first byte)
    to the end of its headers (TLS handshake included). ``read_timeout``: seconds from
    a request's start to the end of its body, and to write its answer.
    ``idle_timeout``: a kept-alive connection with no new request is closed after it.
    ``max_header_bytes``: request line plus headers. ``max_inflight_bytes``: bodies read
    and not yet handled, over every connection (503 ``busy`` beyond).
    """

    max_connections: int = 512
    read_header_timeout: float = 10.0
    read_timeout: float = 60.0
    idle_timeout: float = 60.0
    max_header_bytes: int = 16 << 10
    max_inflight_bytes: int = 128 << 20


class _Refused(Exception):
    def __init__(self, status: int, reason: str, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.reason = reason


class _Conn:
    """One connection's bookkeeping (only touched from the loop thread)."""

    __slots__ = ("peer", "task", "writer")

    def __init__(self, writer: asyncio.StreamWriter, peer: str) -> None:
        self.writer = writer
        self.peer = peer
        self.task: asyncio.Task[None] | None = None


class _TlsFirst(asyncio.StreamReaderProtocol):
    """Reads nothing before ``start_tls``: a ClientHello read as plain data would be lost.

    Connections are counted (and can be evicted) from the moment they are accepted,
    TLS handshake included, which a server-level ``ssl=`` context would hide.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Pause reading until the handshake takes the transport over."""
        transport.pause_reading()  # type: ignore[attr-defined]
        super().connection_made(transport)


class HttpServer:
    """The listener: serves ``listen`` (``host:port``; no host is 127.0.0.1).

    ``start()`` binds (port 0 picks a free port; see :attr:`port`) and serves from a
    background thread; ``stop()`` makes receivers refuse new data, stops accepting,
    lets requests in flight finish, closes every connection and joins the thread.
    Unknown paths get 404, wrong methods 405. ``tls`` is ``(cert_file, key_file,
    client_ca_file or None)``.
    """

    def __init__(
        self,
        listen: str,
        view: DaemonView,
        metrics: Metrics = NULL_METRICS,
        *,
        threads: int = HTTP_THREADS,
        auth: Authenticator | Callable[[], Authenticator] = NO_AUTH,
        tls: tuple[str, str, str | None] | None = None,
        limits: ListenerLimits = ListenerLimits(),
    ) -> None:
        host, sep, port = listen.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f'listen address must be "host:port", got "{listen}"')
        self.listen = listen
        # Binding every interface is a choice written out (0.0.0.0, [::]), never a default.
        self.host = host.strip("[]") or "127.0.0.1"
        self.port = int(port)
        self.view = view
        self.metrics = metrics
        self.threads = threads
        self.limits = limits
        self.tls = tls
        self._auth_source = auth
        self.auth: Authenticator = auth if isinstance(auth, Authenticator) else NO_AUTH
        self._ssl: ssl.SSLContext | None = None
        self._routes: dict[str, HttpReceiver] = {}
        self._mounted: dict[str, HttpReceiver] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._workers: ThreadPoolExecutor | None = None
        self._aux: ThreadPoolExecutor | None = None
        self._conns: dict[_Conn, None] = {}
        self._waiting: dict[_Conn, None] = {}  # in insertion order: oldest first
        self._inflight = 0
        self._busy: set[asyncio.Future[Any]] = set()
        self._metrics_app: Callable[[WsgiEnviron, StartResponse], Iterable[bytes]] | None = None
        self._refusals: Any = None
        if metrics.registry is not None:
            from prometheus_client import make_wsgi_app

            self._metrics_app = make_wsgi_app(metrics.registry)
            self._refusals = _refusal_counter(metrics.registry)

    @classmethod
    def from_settings(
        cls, http: Any, view: DaemonView, metrics: Metrics = NULL_METRICS, *, base_dir: Any = None
    ) -> HttpServer:
        """The listener of the ``http:`` section (:class:`aiops.config.models.HttpSettings`).

        Relative file names are relative to ``base_dir`` (the config file's folder).
        The bearer token is read by :meth:`start`, which fails (:class:`ListenError`)
        rather than serve without the authentication it was told to require.
        """
        from pathlib import Path

        def at(name: str | None) -> str | None:
            if name is None or base_dir is None or Path(name).is_absolute():
                return name
            return str(Path(base_dir) / name)

        auth: Authenticator | Callable[[], Authenticator] = NO_AUTH
        if http.auth is not None:
            spec = http.auth

            def make_auth() -> Authenticator:
                from aiops.secrets import read_secret

                token = read_secret(
                    spec.bearer_token_env, at(spec.bearer_token_file), "bearer token"
                )
                return Authenticator(bearer_token=token, basic_users=spec.basic_auth_users)

            auth = make_auth
        tls = None
        if http.tls is not None:
            t = http.tls
            tls = (str(at(t.cert_file)), str(at(t.key_file)), at(t.client_ca_file))
        # http.limits has the same fields (durations already in seconds).
        limits = ListenerLimits(
            **{f.name: getattr(http.limits, f.name) for f in fields(ListenerLimits)}
        )
        return cls(http.listen, view, metrics, auth=auth, tls=tls, limits=limits)

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Bind the address and serve in a background thread."""
        if self._loop is not None:
            return
        if importlib.util.find_spec("h11") is None:
            raise ListenError(
                f"http.listen is {self.listen!r} but h11 is not installed: "
                "pip install 'aiopsd[server]'"
            )
        if not isinstance(self._auth_source, Authenticator):
            try:
                self.auth = self._auth_source()
            except ValueError as exc:
                raise ListenError(f"http.auth: {exc}") from None
        if self.tls is not None:
            from aiops.service.http_auth import server_tls_context

            try:
                self._ssl = server_tls_context(*self.tls)
            except (OSError, ssl.SSLError) as exc:
                raise ListenError(f"http.tls: cannot use the certificate files: {exc}") from None
        try:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.create_server((self.host, self.port), family=family, backlog=1024)
        except (OSError, OverflowError) as exc:
            raise ListenError(f"cannot listen on {self.listen}: {exc}") from exc
        sock.setblocking(False)
        self.port = int(sock.getsockname()[1])
        self._workers = ThreadPoolExecutor(self.threads, thread_name_prefix="aiops-http")
        # /metrics and bcrypt checks: never queued behind receivers decoding big bodies.
        self._aux = ThreadPoolExecutor(2, thread_name_prefix="aiops-http-aux")
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(self._protocol, sock=sock)
                )
            except BaseException as exc:  # surfaced by start()
                failure.append(exc)
                started.set()
                return
            started.set()
            try:
                loop.run_forever()
            except Exception:  # the loop dying must be visible; the daemon keeps running
                log.exception("HTTP listener stopped with an error")
            finally:
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name="aiops-http", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._loop = None
            sock.close()
            raise ListenError(f"cannot listen on {self.listen}: {failure[0]}")
        scheme = "https" if self._ssl else "http"
        log.info(
            "HTTP listener on %s:%d (%s%s; /healthz, /readyz, /metrics)",
            self.host,
            self.port,
            scheme,
            ", auth" if self.auth.enabled else "",
        )

    def attach(self, sources: Mapping[str, object]) -> None:
        """Mount every :class:`HttpReceiver` among ``sources`` at its ``http_path``.

        Two receivers on one path, or a receiver on a built-in path, is a
        configuration error (:class:`ValueError` naming both).
        """
        routes: dict[str, HttpReceiver] = {}
        owners: dict[str, str] = {}
        for sid, src in sources.items():
            if not isinstance(src, HttpReceiver):
                continue
            path = src.http_path
            if path in _BUILTIN_PATHS or path in self._mounted:
                raise ValueError(f"source {sid}: path {path} is the listener's own endpoint")
            if path in routes:
                raise ValueError(f"sources {owners[path]} and {sid} both receive on {path}")
            routes[path] = src
            owners[path] = sid
            log.info("source %s receives on %s%s", sid, self.url, path)
        self._routes = routes  # replaced whole: request threads see old or new

    def mount(self, handler: HttpReceiver) -> None:
        """Serve ``handler`` at its ``http_path`` (before :meth:`start`; not a source)."""
        path = handler.http_path
        if path in _BUILTIN_PATHS or path in self._mounted:
            raise ValueError(f"path {path} is already served")
        self._mounted = {**self._mounted, path: handler}

    def stop(self) -> None:
        """Make receivers refuse new data, stop accepting, finish requests, close.

        Receivers refuse first (503), so nothing is acknowledged after this returns;
        requests being handled finish (up to :data:`STOP_TIMEOUT`) and get their
        answer; then every connection closes.
        """
        for receiver in [*self._routes.values(), *self._mounted.values()]:
            receiver.stop_receiving()
        loop, self._loop = self._loop, None
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has ended already
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(STOP_TIMEOUT * 2)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
            if self._thread.is_alive():
                log.warning("HTTP listener thread did not stop within %.0fs", STOP_TIMEOUT)
            self._thread = None
        for pool in (self._workers, self._aux):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._workers = self._aux = None
        log.info("HTTP listener on %s:%d stopped", self.host, self.port)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()  # no new connections
        deadline = time.monotonic() + STOP_TIMEOUT
        while self._busy and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)  # let finished handlers write their answers
        for conn in list(self._conns):
            conn.writer.transport.abort()
            if conn.task is not None:
                conn.task.cancel()
        tasks = [c.task for c in self._conns if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT)

    @property
    def url(self) -> str:
        """``http(s)://host:port`` (the bound port once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def open_connections(self) -> int:
        """Connections open now (for tests and benchmarks)."""
        return len(self._conns)

    # -- connections --------------------------------------------------------------------

    def _protocol(self) -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=READ_CHUNK)
        if self._ssl is None:
            return asyncio.StreamReaderProtocol(reader, self._accept)
        return _TlsFirst(reader, self._accept)

    def _refused(self, reason: str) -> None:
        if self._refusals is not None:
            self._refusals.labels(reason).inc()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        conn = _Conn(writer, str(peer[0]) if isinstance(peer, tuple) else "")
        if len(self._conns) >= self.limits.max_connections:
            if self._waiting:
                oldest = next(iter(self._waiting))
                self._drop(oldest)
                oldest.writer.transport.abort()
                self._refused("evicted")
            else:
                self._refused("connections")
                with contextlib.suppress(Exception):
                    writer.write(_raw_busy(b"too many connections\n"))
                    writer.transport.close()
                return
        conn.task = asyncio.current_task()
        self._conns[conn] = None
        self._waiting[conn] = None
        try:
            await self._serve(conn, reader)
        except (ConnectionError, asyncio.CancelledError, OSError, ssl.SSLError):
            pass
        except Exception:
            log.exception("HTTP connection from %s failed", conn.peer or "?")
        finally:
            self._drop(conn)
            with contextlib.suppress(Exception):
                writer.close()

    def _drop(self, conn: _Conn) -> None:
        self._conns.pop(conn, None)
        self._waiting.pop(conn, None)

    async def _serve(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        import h11

        loop = asyncio.get_running_loop()
        limits = self.limits
        deadline = loop.time() + limits.read_header_timeout
        if self._ssl is not None:
            try:
                await conn.writer.start_tls(
                    self._ssl, ssl_handshake_timeout=max(deadline - loop.time(), 0.1)
                )
            except (TimeoutError, ssl.SSLError, OSError, ConnectionError):
                self._refused("tls_handshake")
                return
        h = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        first = True
        while True:
            self._waiting[conn] = None
            if not first and not h.trailing_data[0]:
                # Kept alive: wait idle_timeout for the next request, then its headers.
                try:
                    data = await asyncio.wait_for(reader.read(READ_CHUNK), limits.idle_timeout)
                except TimeoutError:
                    return
                if not data:
                    return
                h.receive_data(data)
                deadline = loop.time() + limits.read_header_timeout
            first = False
            try:
                event = await self._next_event(h, reader, deadline)
            except TimeoutError:
                self._refused("header_timeout")
                if h.trailing_data[0]:  # it began a request: say why it ends
                    await self._send_raw(conn, 408, "headers not received in time\n")
                return
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                reason = "headers_too_large" if status == 431 else "bad_request"
                self._refused(reason)
                if h.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._send_raw(conn, status, f"bad request: {exc}\n")
                return
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed
            # h11 bounds only headers still incomplete; a request read whole is checked here.
            size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
            if size > limits.max_header_bytes:
                self._refused("headers_too_large")
                await self._send_raw(conn, 431, "request headers too large\n")
                return
            self._waiting.pop(conn, None)
            started = loop.time()
            keep = await self._request(conn, h, reader, event, started)
            if not keep or h.our_state is not h11.DONE or h.their_state is not h11.DONE:
                return
            try:
                h.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _next_event(self, h: Any, reader: asyncio.StreamReader, deadline: float) -> Any:
        import h11

        loop = asyncio.get_running_loop()
        while True:
            event = h.next_event()
            if event is not h11.NEED_DATA:
                return event
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            data = await asyncio.wait_for(reader.read(READ_CHUNK), remaining)
            h.receive_data(data)  # b"" is the end of the stream: h11 says ConnectionClosed

    async def _send_raw(self, conn: _Conn, status: int, text: str) -> None:
        with contextlib.suppress(Exception):
            conn.writer.write(_raw_response(status, text.encode()))
            await asyncio.wait_for(conn.writer.drain(), 1.0)

    async def _request(
        self, conn: _Conn, h: Any, reader: asyncio.StreamReader, req: Any, started: float
    ) -> bool:
        """Answer one request; False when the connection must close."""
        import h11

        t0 = time.perf_counter()
        method = req.method.decode("ascii", "replace").upper()
        target = req.target.decode("latin-1")
        path, _, query = target.partition("?")
        headers: dict[str, str] = {}
        for name, value in req.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        handler = "other"
        receiver: HttpReceiver | None = None
        if path in ("/healthz", "/readyz", "/metrics", "/"):
            handler = path.strip("/") or "index"
        elif path in self._routes:
            receiver, handler = self._routes[path], path
        elif path in self._mounted:
            receiver, handler = self._mounted[path], path
        else:
            receiver = _under(self._mounted, path)
            if receiver is not None:
                handler = receiver.http_path  # bounded label values
        try:
            resp = await self._respond(
                conn, h, reader, req, method, path, query, headers, receiver, started
            )
        except _Refused as exc:
            self._refused(exc.reason)
            extra: tuple[tuple[str, str], ...] = ()
            if exc.status == 503:
                extra = (("Retry-After", "1"),)
            elif exc.status == 401:
                extra = (("WWW-Authenticate", self.auth.challenge),)
            resp = _text(exc.status, f"{exc}\n", extra)
        except Exception:
            log.exception("HTTP %s %s failed", method, path)
            resp = _text(500, "internal error; see the daemon log\n")
        if resp.refusal:
            self._refused(resp.refusal)
        if h.their_state is h11.SEND_BODY:  # a request without a body still has its end
            with contextlib.suppress(h11.RemoteProtocolError):
                h.next_event()
        # A body left unread (refused from its headers) cannot be skipped: close.
        keep = h.their_state is h11.DONE
        out_headers = [("Content-Type", resp.content_type), ("Content-Length", str(len(resp.body)))]
        out_headers.extend(resp.headers)
        if not keep:
            out_headers.append(("Connection", "close"))
        try:
            data = h.send(
                h11.Response(
                    status_code=resp.status,
                    headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in out_headers],
                    reason=_REASONS.get(resp.status, "").encode(),
                )
            )
            if method != "HEAD" and resp.body:
                data += h.send(h11.Data(data=resp.body))
            data += h.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            log.exception("HTTP %s %s: cannot send the answer", method, path)
            return False
        self.metrics.http_request(handler, resp.status, time.perf_counter() - t0)
        conn.writer.write(data)
        remaining = started + self.limits.read_timeout - asyncio.get_running_loop().time()
        try:
            await asyncio.wait_for(conn.writer.drain(), max(remaining, 1.0))
        except TimeoutError:  # the client does not read its answer
            return False
        return keep

    async def _respond(
        self,
        conn: _Conn,
        h: Any,
        reader: asyncio.StreamReader,
        req: Any,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        receiver: HttpReceiver | None,
        started: float,
    ) -> HttpResponse:
        loop = asyncio.get_running_loop()
        builtin = path in _BUILTIN_PATHS
        if receiver is None and not builtin:
            return _text(404, f"not found: {path}\n")
        authorized = True
        exempt = receiver is not None and getattr(receiver, "http_authenticates", False)
        if self.auth.enabled and not exempt:
            value = headers.get("authorization", "")
            quick = self.auth.quick(value)
            if quick is None:
                assert self._aux is not None
                quick = await loop.run_in_executor(self._aux, self.auth.check, value)
            authorized = quick
            if not authorized and path != "/healthz":
                raise _Refused(401, "unauthorized", "authentication required")
        if builtin:
            if method not in ("GET", "HEAD"):
                return _text(405, "use GET\n", (("Allow", "GET, HEAD"),))
            if path == "/healthz":
                return self._healthz(detailed=authorized)
            if path == "/readyz":
                return self._readyz()
            if path == "/metrics":
                assert self._aux is not None
                return await loop.run_in_executor(self._aux, self._metrics, headers, query)
            return self._index()
        assert receiver is not None
        methods = tuple(getattr(receiver, "http_methods", ("POST",)))
        if "GET" in methods:
            methods = (*methods, "HEAD")
        if method not in methods:
            allow = ", ".join(methods)
            return _text(405, f"use {allow}\n", (("Allow", allow),))
        body = await self._read_body(conn, h, reader, receiver, headers, started)
        encoding = headers.get("content-encoding", "").strip().lower()
        assert self._workers is not None
        fut = loop.run_in_executor(
            self._workers, self._handle, receiver, method, path, headers, body, encoding, conn.peer
        )
        self._busy.add(fut)
        try:
            return await fut
        finally:
            self._busy.discard(fut)
            self._inflight -= len(body)

    async def _read_body(
        self,
        conn: _Conn,
        h: Any,
        reader: asyncio.StreamReader,
        receiver: HttpReceiver,
        headers: Mapping[str, str],
        started: float,
    ) -> bytes:
        """The body, bounded by the receiver's limit and the in-flight budget.

        A declared length over either is refused before a byte is read; a chunked body
        as soon as it passes. The caller releases ``len(body)`` of the budget.
        """
        import h11

        limit = min(receiver.max_body_bytes, MAX_REQUEST_BYTES)
        length_text = headers.get("content-length", "").strip()
        declared = int(length_text) if length_text.isdigit() else None  # h11 checked it
        if declared is not None and declared > limit:
            raise _Refused(
                413, "body_too_large", f"body of {declared} bytes is over the limit of {limit}"
            )
        reserved = declared or 0
        if self._inflight + reserved > self.limits.max_inflight_bytes:
            raise _Refused(503, "busy", "too many request bodies in flight; retry later")
        self._inflight += reserved
        parts: list[bytes] = []
        size = 0
        ok = False
        try:
            if h.they_are_waiting_for_100_continue:
                conn.writer.write(h.send(h11.InformationalResponse(status_code=100, headers=[])))
            deadline = started + self.limits.read_timeout
            while True:
                try:
                    event = await self._next_event(h, reader, deadline)
                except TimeoutError:
                    raise _Refused(408, "body_timeout", "body not received in time") from None
                except h11.RemoteProtocolError as exc:  # a bad chunk, an end before the body's
                    raise _Refused(400, "bad_request", f"bad request body: {exc}") from None
                if isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > limit:
                        raise _Refused(
                            413, "body_too_large", f"body is over the limit of {limit} bytes"
                        )
                    if size > reserved:
                        if self._inflight + size - reserved > self.limits.max_inflight_bytes:
                            raise _Refused(503, "busy", "too many request bodies in flight")
                        self._inflight += size - reserved
                        reserved = size
                    parts.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:  # ConnectionClosed mid-body
                    raise _Refused(400, "bad_request", "connection closed during the body")
            ok = True
        finally:
            # Keep exactly len(body) reserved for the caller to release.
            self._inflight -= reserved - (size if ok else 0)
        return b"".join(parts)

    # -- handlers (worker threads) --------------------------------------------------------

    def _handle(
        self,
        receiver: HttpReceiver,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        encoding: str,
        peer: str,
    ) -> HttpResponse:
        if encoding in ("gzip", "x-gzip", "deflate"):
            bound = int(getattr(receiver, "max_decoded_bytes", receiver.max_body_bytes))
            try:
                body = _inflate(body, encoding, bound)
            except _Refused as exc:
                return _text(exc.status, f"{exc}\n", refusal=exc.reason)
            headers = {k: v for k, v in headers.items() if k != "content-encoding"}
        return receiver.handle_http(HttpRequest(method, path, headers, body, peer))

    def _metrics(self, headers: Mapping[str, str], query: str) -> HttpResponse:
        if self._metrics_app is None:
            return _text(404, "metrics are off (prometheus-client missing)\n")
        environ: WsgiEnviron = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/metrics",
            "QUERY_STRING": query,
            "SERVER_NAME": self.host,
            "SERVER_PORT": str(self.port),
            "wsgi.input": io.BytesIO(),
            "wsgi.url_scheme": "http",
        }
        for name in ("accept", "accept-encoding"):
            if name in headers:
                environ["HTTP_" + name.upper().replace("-", "_")] = headers[name]
        got: dict[str, Any] = {}

        def start_response(status: str, hdrs: list[tuple[str, str]], *exc: Any) -> Any:
            got["status"], got["headers"] = status, hdrs

        body = b"".join(self._metrics_app(environ, start_response))
        hdrs = [(k, v) for k, v in got["headers"] if k.lower() not in ("content-length",)]
        ctype = next((v for k, v in hdrs if k.lower() == "content-type"), "text/plain")
        rest = tuple((k, v) for k, v in hdrs if k.lower() != "content-type")
        return HttpResponse(int(got["status"].split(" ", 1)[0]), body, ctype, rest)

    def _healthz(self, *, detailed: bool) -> HttpResponse:
        report = self.view.health_report
        ready = self.view.ready
        healthy = ready and all(h.get("state") == "ok" for h in report.values())
        status = "ok" if healthy else ("unhealthy" if ready else "not running")
        if detailed:
            sources = {sid: dict(h) for sid, h in report.items()}
        else:  # errors and problems name upstream hosts: only with credentials
            sources = {sid: {"state": h.get("state")} for sid, h in report.items()}
        return _json(200 if healthy else 503, {"status": status, "sources": sources})

    def _readyz(self) -> HttpResponse:
        ready = self.view.ready
        last = self.view.last_step
        age = time.monotonic() - last if last else None
        stalled = age is not None and age > STALL_SECONDS
        ok = ready and not stalled
        doc = {
            "status": "ready" if ok else ("stalled" if ready else "not running"),
            "loop_age_seconds": None if age is None else round(age, 3),
        }
        return _json(200 if ok else 503, doc)

    def _index(self) -> HttpResponse:
        paths = ["/healthz", "/readyz", "/metrics", *sorted({*self._routes, *self._mounted})]
        return _text(200, "aiopsd\n" + "".join(f"  {p}\n" for p in paths))


def _under(mounted: Mapping[str, HttpReceiver], path: str) -> HttpReceiver | None:
    """The mounted handler with ``http_subpaths`` whose path is the longest prefix of ``path``."""
    best: HttpReceiver | None = None
    for prefix, receiver in mounted.items():
        if not getattr(receiver, "http_subpaths", False) or not path.startswith(prefix + "/"):
            continue
        if best is None or len(prefix) > len(best.http_path):
            best = receiver
    return best


_BUILTIN_PATHS = frozenset({"/", "/healthz", "/readyz", "/metrics"})

_COUNTERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_COUNTERS_LOCK = threading.Lock()


def _refusal_counter(registry: Any) -> Any:
    """``aiops_http_refusals_total``, once per registry (several servers may share one)."""
    from prometheus_client import Counter

    with _COUNTERS_LOCK:
        counter = _COUNTERS.get(registry)
        if counter is None:
            counter = Counter(
                "aiops_http_refusals",
                "Requests and connections the listener (or a receiver) refused, by reason.",
                ["reason"],
                registry=registry,
            )
            _COUNTERS[registry] = counter
        return counter


def _inflate(body: bytes, encoding: str, bound: int) -> bytes:
    """``body`` decompressed, never more than ``bound`` bytes of it (a bomb is refused)."""
    wbits = 31 if "gzip" in encoding else 15
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(body, bound + 1)
    except zlib.error as exc:
        raise _Refused(400, "bad_encoding", f"body is not {encoding} data: {exc}") from None
    if len(out) > bound or d.unconsumed_tail:
        raise _Refused(413, "decoded_too_large", f"body inflates past the limit of {bound} bytes")
    if not d.eof:
        raise _Refused(400, "bad_encoding", f"body is truncated {encoding} data")
    return out


def _raw_response(status: int, body: bytes, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    )
    return head.encode() + body


def _raw_busy(body: bytes) -> bytes:
    return _raw_response(503, body, "Retry-After: 1\r\n")


def _text(
    status: int, text: str, headers: tuple[tuple[str, str], ...] = (), refusal: str = ""
) -> HttpResponse:
    return HttpResponse(status, text.encode(), headers=headers, refusal=refusal)


def _json(status: int, doc: Any) -> HttpResponse:
    body = (json.dumps(doc, indent=2, sort_keys=True, allow_nan=False, default=str) + "\n").encode()
    return HttpResponse(status, body, "application/json")
