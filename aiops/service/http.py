"""The daemon's HTTP listener: health, readiness, ``/metrics``, and push receivers.

Served when ``http.listen`` is set, by waitress (a production WSGI server in pure
Python, no dependencies; the ``server`` extra) in threads of its own.

Endpoints:

- ``GET /healthz``: 200 when the daemon runs and every source is healthy, else 503.
  The JSON body always lists each source: ``state`` (``ok``; ``failing``: polling it
  raises, the daemon backs off; ``degraded``: it works but some of its parts fail,
  such as one bad query of a pull source), ``last_error``, ``failures`` (failed polls
  in a row), ``retry_in`` (seconds), ``problems`` (failing part -> error), and counts.
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
  (:meth:`HttpServer.mount`), with the same contract as a push receiver.

Threads: the data path is single-threaded and never waits for HTTP. Handlers only read
what the daemon published (``health_report``, ``ready``, ``last_step``: replaced as
whole objects, so a reader sees one consistent version) or hand a request to a
receiver, which must only decode and enqueue.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

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
    "NullListener",
]

log = logging.getLogger(__name__)

#: ``/readyz`` fails when the daemon loop has not completed an iteration for this long.
STALL_SECONDS = 300.0
#: Worker threads answering requests (waitress' default).
HTTP_THREADS = 4
#: Waitress refuses (413) larger request bodies before any handler sees them.
MAX_REQUEST_BYTES = 256 << 20
#: Seconds ``stop()`` waits for the server loop and for requests in flight.
STOP_TIMEOUT = 5.0

_REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

StartResponse = Callable[..., Any]
WsgiEnviron = dict[str, Any]


class ListenError(RuntimeError):
    """The listener cannot start: the address is taken, or a dependency is missing."""


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
    """What a receiver answers."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


@runtime_checkable
class HttpReceiver(Protocol):
    """A push source that takes its data from HTTP requests on the daemon's listener.

    ``handle_http`` is called from the listener's threads, concurrently: it may only
    decode the request and enqueue the result for ``next_batch()`` (under a lock of
    its own), and it answers at once (a full queue is a 503, never a wait).
    After ``stop_receiving()`` returns, it accepts nothing more (it answers 503), so
    the daemon can drain what it accepted before its final checkpoint.
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


class HttpServer:
    """The listener: a WSGI app served by waitress on ``listen`` (``host:port``).

    ``start()`` binds (port 0 picks a free port; see :attr:`port`) and serves from a
    background thread; ``stop()`` makes receivers refuse new data, closes every
    connection and joins the threads. Unknown paths get 404, wrong methods 405.
    """

    def __init__(
        self,
        listen: str,
        view: DaemonView,
        metrics: Metrics = NULL_METRICS,
        *,
        threads: int = HTTP_THREADS,
    ) -> None:
        host, sep, port = listen.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f'listen address must be "host:port", got "{listen}"')
        self.listen = listen
        self.host = host.strip("[]") or "0.0.0.0"
        self.port = int(port)
        self.view = view
        self.metrics = metrics
        self.threads = threads
        self._routes: dict[str, HttpReceiver] = {}
        self._mounted: dict[str, HttpReceiver] = {}
        self._server: Any = None
        self._map: dict[int, Any] = {}
        self._thread: threading.Thread | None = None
        self._metrics_app: Callable[[WsgiEnviron, StartResponse], Iterable[bytes]] | None = None
        if metrics.registry is not None:
            from prometheus_client import make_wsgi_app

            self._metrics_app = make_wsgi_app(metrics.registry)

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Bind the address and serve in a background thread."""
        if self._server is not None:
            return
        if importlib.util.find_spec("waitress") is None:
            raise ListenError(
                f"http.listen is {self.listen!r} but waitress is not installed: "
                "pip install 'aiopsd[server]'"
            )
        waitress_server = importlib.import_module("waitress.server")
        # Waitress warns each time a request waits for a free worker thread; during a
        # remote-write burst (Prometheus sends from parallel shards) that is a line per
        # request. aiops_http_request_duration_seconds shows the waiting instead.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self._map = {}
        try:
            server = waitress_server.create_server(
                self,
                map=self._map,
                host=self.host,
                port=self.port,
                threads=self.threads,
                ident="aiopsd",
                # Receivers bound their bodies (max_body_bytes, checked before reading);
                # this keeps waitress from buffering absurd bodies in the first place.
                max_request_body_size=MAX_REQUEST_BYTES,
                channel_timeout=60,
                asyncore_loop_timeout=1,
            )
        except OSError as exc:
            raise ListenError(f"cannot listen on {self.listen}: {exc}") from exc
        self._server = server
        if hasattr(server, "effective_port"):
            self.port = int(server.effective_port)
        else:  # several addresses (a name resolving to IPv4 and IPv6)
            self.port = int(server.effective_listen[0][1])
        self._thread = threading.Thread(target=self._serve, name="aiops-http", daemon=True)
        self._thread.start()
        log.info("HTTP listener on %s:%d (/healthz, /readyz, /metrics)", self.host, self.port)

    def _serve(self) -> None:
        try:
            self._server.run()
        except Exception:  # the loop dying must be visible; the daemon keeps running
            log.exception("HTTP listener stopped with an error")

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
        """Make receivers refuse new data, close all connections, join the threads.

        Order matters with waitress: the listening sockets close first (no new
        connections), then the worker threads finish the requests they hold (the loop
        still flushes their answers), and only then the loop closes every connection
        and its wake-up pipe; a worker that finished after that would write to a closed
        pipe.
        """
        for receiver in [*self._routes.values(), *self._mounted.values()]:
            receiver.stop_receiving()
        server, self._server = self._server, None
        if server is None:
            return
        wasyncore = importlib.import_module("waitress.wasyncore")
        waitress_server = importlib.import_module("waitress.server")
        trigger_class = importlib.import_module("waitress.trigger").trigger
        dispatchers = list(self._map.values())
        listeners = [d for d in dispatchers if isinstance(d, waitress_server.BaseWSGIServer)]
        triggers = [d for d in dispatchers if isinstance(d, trigger_class)]

        def close_listeners() -> None:
            for d in listeners:
                wasyncore.dispatcher.close(d)  # the socket only, not the shared trigger

        def close_all() -> None:
            wasyncore.close_all(self._map, ignore_all=True)

        # Both closes run in the loop thread, through its wake-up pipe.
        self._in_loop(triggers, close_listeners)
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=STOP_TIMEOUT)
        self._in_loop(triggers, close_all)
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
            if self._thread.is_alive():
                log.warning("HTTP listener thread did not stop within %.0fs", STOP_TIMEOUT)
            self._thread = None
        log.info("HTTP listener on %s:%d stopped", self.host, self.port)

    def _in_loop(self, triggers: list[Any], thunk: Callable[[], None]) -> None:
        """Run ``thunk`` in the server loop's thread (or here, if the loop is gone)."""
        done = threading.Event()

        def run() -> None:
            try:
                thunk()
            finally:
                done.set()

        alive = self._thread is not None and self._thread.is_alive()
        if alive and triggers:
            try:
                triggers[0].pull_trigger(run)
            except OSError:  # the pipe is closed: the loop has ended
                alive = False
        if not (alive and triggers):
            run()
        done.wait(STOP_TIMEOUT)

    @property
    def url(self) -> str:
        """``http://host:port`` (the bound port once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- WSGI -------------------------------------------------------------------------

    def __call__(self, environ: WsgiEnviron, start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI application."""
        t0 = time.perf_counter()
        path = str(environ.get("PATH_INFO") or "/")
        method = str(environ.get("REQUEST_METHOD") or "GET").upper()
        handler = path
        try:
            if path == "/metrics" and method in ("GET", "HEAD"):
                return self._metrics(environ, start_response, t0)
            if path in ("/healthz", "/readyz", "/"):
                handler = path.lstrip("/") or "index"
                if method not in ("GET", "HEAD"):
                    resp = _text(405, "use GET\n", (("Allow", "GET, HEAD"),))
                elif path == "/healthz":
                    resp = self._healthz()
                elif path == "/readyz":
                    resp = self._readyz()
                else:
                    resp = self._index()
            elif path in self._routes:
                resp = self._receive(self._routes[path], method, path, environ)
            elif path in self._mounted:
                resp = self._receive(self._mounted[path], method, path, environ)
            else:
                handler = "other"
                resp = _text(404, f"not found: {path}\n")
        except Exception:
            log.exception("HTTP %s %s failed", method, path)
            resp = _text(500, "internal error; see the daemon log\n")
        headers = [("Content-Type", resp.content_type), ("Content-Length", str(len(resp.body)))]
        headers.extend(resp.headers)
        start_response(f"{resp.status} {_REASONS.get(resp.status, '')}".rstrip(), headers)
        self.metrics.http_request(handler, resp.status, time.perf_counter() - t0)
        return [b"" if method == "HEAD" else resp.body]

    def _metrics(
        self, environ: WsgiEnviron, start_response: StartResponse, t0: float
    ) -> Iterable[bytes]:
        if self._metrics_app is None:
            body = b"metrics are off (prometheus-client missing)\n"
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            self.metrics.http_request("metrics", 404, time.perf_counter() - t0)
            return [body]
        code = [0]

        def capture(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            code[0] = int(status.split(" ", 1)[0])
            return start_response(status, headers, *exc)

        out = list(self._metrics_app(environ, capture))
        self.metrics.http_request("metrics", code[0], time.perf_counter() - t0)
        return out

    def _healthz(self) -> HttpResponse:
        report = self.view.health_report
        ready = self.view.ready
        healthy = ready and all(h.get("state") == "ok" for h in report.values())
        status = "ok" if healthy else ("unhealthy" if ready else "not running")
        doc = {"status": status, "sources": {sid: dict(h) for sid, h in report.items()}}
        return _json(200 if healthy else 503, doc)

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

    def _receive(
        self, receiver: HttpReceiver, method: str, path: str, environ: WsgiEnviron
    ) -> HttpResponse:
        if method != "POST":
            return _text(405, "use POST\n", (("Allow", "POST"),))
        limit = receiver.max_body_bytes
        length_text = str(environ.get("CONTENT_LENGTH") or "").strip()
        if length_text:
            try:
                length = int(length_text)
            except ValueError:
                return _text(400, "bad Content-Length\n")
            if length > limit:
                return _text(413, f"body of {length} bytes is over the limit of {limit}\n")
        else:
            length = limit + 1
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        if len(body) > limit:
            return _text(413, f"body is over the limit of {limit} bytes\n")
        headers = {
            k[5:].replace("_", "-").lower(): str(v)
            for k, v in environ.items()
            if k.startswith("HTTP_")
        }
        if "CONTENT_TYPE" in environ:
            headers["content-type"] = str(environ["CONTENT_TYPE"])
        remote = str(environ.get("REMOTE_ADDR") or "")
        return receiver.handle_http(HttpRequest(method, path, headers, body, remote))


_BUILTIN_PATHS = frozenset({"/", "/healthz", "/readyz", "/metrics"})


def _text(status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    return HttpResponse(status, text.encode(), headers=headers)


def _json(status: int, doc: Any) -> HttpResponse:
    body = (json.dumps(doc, indent=2, sort_keys=True, allow_nan=False, default=str) + "\n").encode()
    return HttpResponse(status, body, "application/json")
