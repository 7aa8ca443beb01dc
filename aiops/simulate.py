"""``aiops simulate``: the simulated fleet as records of a wire format, to Kafka or a file.

The simulator source (``type: simulator``: hosts x services, five metrics each, seeded
incidents, optional log lines) is encoded record by record in the format a real
producer would write, so a Kafka source configured with the same ``format`` reads back
exactly the simulator's points and logs:

==================  =========================================================  ===========
format              one record is                                              carries
==================  =========================================================  ===========
``prometheus_json`` one sample as prometheus-kafka-adapter writes it           points
``influx_line``     one line of line protocol, as Telegraf's Kafka output      points
                    (measurement = the metric name up to its first ``_``,
                    fields = the rest: ``http request_duration_seconds=...``)
``log_lines``       one log line (its time is the record's Kafka timestamp)    logs
``log_json``        ``{"@timestamp", "message", "host", "service"}``             logs
==================  =========================================================  ===========

Records are keyed ``host/service``, so every series of one (host, service) pair lands
in one partition and stays in order. Each record's Kafka timestamp is its data time.
Points the format cannot carry (NaN or infinite values in line protocol) are skipped and
counted. Timestamps are rounded to the millisecond.

Pacing: ``rate`` records per second of wall-clock time (0: as fast as possible); the
simulated time of the records is whatever the simulator says (``start``, 15 s steps),
so ``rate`` sets how fast simulated time runs. ``duration`` (simulated) makes the run
finite; without it the run goes on until SIGINT or SIGTERM, then flushes and stops.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

from pydantic import ValidationError

from aiops.registry import SOURCES
from aiops.timeutil import parse_duration
from aiops.types import Batch, LogRecord, SeriesKey

__all__ = [
    "FORMATS",
    "LOG_FORMATS",
    "METRIC_FORMATS",
    "FileSink",
    "KafkaSink",
    "Record",
    "SimulateSummary",
    "Sink",
    "encode_batch",
    "encode_influx_lines",
    "encode_log_json",
    "encode_log_lines",
    "encode_prometheus_json",
    "influx_name_split",
    "run_simulate",
]

log = logging.getLogger(__name__)

METRIC_FORMATS = ("prometheus_json", "influx_line")
LOG_FORMATS = ("log_lines", "log_json")
FORMATS = METRIC_FORMATS + LOG_FORMATS

# Sleep only when this far ahead of the schedule: per-record sleeps would cost more
# than the records at high rates.
_PACE_SLACK = 0.002


@dataclass(frozen=True, slots=True)
class Record:
    """One encoded record: key, value, its time (unix seconds) and what it carries."""

    key: bytes | None
    value: bytes
    timestamp: float
    points: int = 0
    logs: int = 0

    @property
    def timestamp_ms(self) -> int:
        """The Kafka record timestamp (milliseconds)."""
        return round(self.timestamp * 1000)


@dataclass
class SimulateSummary:
    """What a run produced; ``failed`` records were not acknowledged by Kafka."""

    records: int = 0
    points: int = 0
    logs: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    interrupted: bool = False

    def line(self, target: str) -> str:
        """The final one-line summary."""
        rate = self.records / self.seconds if self.seconds > 0 else 0.0
        parts = [
            f"{self.records} records ({self.points} points, {self.logs} logs) to {target} "
            f"in {self.seconds:.1f}s ({rate:,.0f} records/s)"
        ]
        if self.skipped:
            parts.append(f"{self.skipped} points skipped (not representable)")
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.interrupted:
            parts.append("interrupted")
        return "simulate: " + "; ".join(parts)


# -- encoders -------------------------------------------------------------------------


def _labels_key(labels: tuple[tuple[str, str], ...]) -> bytes | None:
    d = dict(labels)
    if "host" in d and "service" in d:
        return f"{d['host']}/{d['service']}".encode()
    return None


def _rfc3339_ms(ts: float) -> str:
    """RFC 3339 UTC, rounded (not truncated) to the millisecond."""
    whole_ms = round(ts * 1000)
    dt = datetime.fromtimestamp(whole_ms // 1000, tz=UTC)
    frac = whole_ms % 1000
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{frac:03d}Z" if frac else f"{text}Z"


def _go_float(v: float) -> str:
    """A value as prometheus-kafka-adapter writes it (Go spellings of NaN and Inf)."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


def encode_prometheus_json(batch: Batch) -> Iterator[Record]:
    """One record per point, as prometheus-kafka-adapter writes samples.

    >>> b = Batch.from_points([(SeriesKey.of("up", {"job": "a"}), 60.0, 1.0)])
    >>> print(next(encode_prometheus_json(b)).value.decode())  # doctest: +NORMALIZE_WHITESPACE
    {"timestamp": "1970-01-01T00:01:00Z", "value": "1.0", "name": "up",
     "labels": {"__name__": "up", "job": "a"}}
    """
    heads = [
        (
            json.dumps(k.name),
            json.dumps({"__name__": k.name, **dict(k.labels)}),
            _labels_key(k.labels),
        )
        for k in batch.keys
    ]
    for s, t, v in zip(
        batch.series.tolist(), batch.timestamps.tolist(), batch.values.tolist(), strict=True
    ):
        name, labels, key = heads[s]
        value = (
            f'{{"timestamp": "{_rfc3339_ms(t)}", "value": "{_go_float(v)}", '
            f'"name": {name}, "labels": {labels}}}'
        )
        yield Record(key, value.encode(), t, points=1)


def influx_name_split(name: str, separator: str = "_") -> tuple[str, str]:
    """Measurement and field key whose join by ``separator`` is ``name``.

    The decoder names a series ``<measurement><separator><field>``; splitting at the
    first separator inverts that. A name without one becomes field ``value`` (and reads
    back as ``<name>_value``).

    >>> influx_name_split("http_request_duration_seconds")
    ('http', 'request_duration_seconds')
    """
    measurement, sep, field = name.partition(separator)
    if not sep or not measurement or not field:
        return name, "value"
    return measurement, field


def _escape_measurement(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ")


def _escape_key(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def encode_influx_lines(batch: Batch, skipped: list[int] | None = None) -> Iterator[Record]:
    """One line-protocol record per (measurement, tags, time), fields in point order.

    Points of one line must be adjacent in the batch (the simulator's are); NaN and
    infinite values cannot be written and are left out, counted in ``skipped[0]``.

    >>> k1 = SeriesKey.of("http_errors_ratio", {"host": "h"})
    >>> k2 = SeriesKey.of("http_requests_per_second", {"host": "h"})
    >>> b = Batch.from_points([(k1, 1.0, 0.5), (k2, 1.0, 12.0)])
    >>> [r.value.decode() for r in encode_influx_lines(b)]
    ['http,host=h errors_ratio=0.5,requests_per_second=12.0 1000000000']
    """
    heads = []
    for k in batch.keys:
        measurement, field = influx_name_split(k.name)
        tags = "".join(f",{_escape_key(a)}={_escape_key(b)}" for a, b in k.labels)
        heads.append((_escape_measurement(measurement) + tags, _escape_key(field), k.labels))
    line_head: str | None = None
    line_ts = 0.0
    line_key: bytes | None = None
    fields: list[str] = []

    def flush() -> Record:
        ns = round(line_ts * 1000) * 1_000_000
        text = f"{line_head} {','.join(fields)} {ns}"
        return Record(line_key, text.encode(), line_ts, points=len(fields))

    for s, t, v in zip(
        batch.series.tolist(), batch.timestamps.tolist(), batch.values.tolist(), strict=True
    ):
        if not math.isfinite(v):
            if skipped is not None:
                skipped[0] += 1
            continue
        head, field, labels = heads[s]
        if head != line_head or t != line_ts:
            if fields:
                yield flush()
            line_head, line_ts, line_key, fields = head, t, _labels_key(labels), []
        fields.append(f"{field}={v!r}")
    if fields:
        yield flush()


def encode_log_lines(logs: Sequence[LogRecord]) -> Iterator[Record]:
    """One record per log line: the message; its time goes in the record timestamp."""
    for r in logs:
        yield Record(_labels_key(r.labels), r.message.encode(), r.timestamp, logs=1)


def encode_log_json(logs: Sequence[LogRecord]) -> Iterator[Record]:
    """One JSON event per log line: ``@timestamp``, ``message`` and the stream labels.

    Read back with ``format: log_json`` and ``label_fields: [host, service]``.

    >>> rec = LogRecord(1.5, "disk full", (("host", "h1"), ("service", "db")))
    >>> print(next(encode_log_json([rec])).value.decode())  # doctest: +NORMALIZE_WHITESPACE
    {"@timestamp": "1970-01-01T00:00:01.500Z", "message": "disk full",
     "host": "h1", "service": "db"}
    """
    for r in logs:
        doc = {"@timestamp": _rfc3339_ms(r.timestamp), "message": r.message, **dict(r.labels)}
        yield Record(_labels_key(r.labels), json.dumps(doc).encode(), r.timestamp, logs=1)


def encode_batch(batch: Batch, fmt: str, skipped: list[int] | None = None) -> Iterator[Record]:
    """The records of one simulator batch in format ``fmt`` (points or logs)."""
    if fmt == "prometheus_json":
        return encode_prometheus_json(batch)
    if fmt == "influx_line":
        return encode_influx_lines(batch, skipped)
    if fmt == "log_lines":
        return encode_log_lines(batch.logs)
    if fmt == "log_json":
        return encode_log_json(batch.logs)
    raise ValueError(f'unknown format "{fmt}"; valid formats: {", ".join(FORMATS)}')


# -- sinks ----------------------------------------------------------------------------


class Sink(ABC):
    """Where records go: a Kafka topic or a file."""

    #: Records that could not be delivered (counted as they fail).
    failed: int = 0

    @abstractmethod
    def send(self, record: Record) -> None:
        """Hand one record over (may buffer)."""

    @abstractmethod
    def close(self) -> None:
        """Deliver what is buffered and release resources."""

    @property
    @abstractmethod
    def target(self) -> str:
        """A human-readable destination, for the summary line."""


class KafkaSink(Sink):
    """Produces records to a topic; failures are counted, not raised."""

    def __init__(self, bootstrap: str, topic: str, *, timeout: float = 10.0) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        self.topic = topic
        self.bootstrap = bootstrap
        self.timeout = timeout
        self.failed = 0
        self._lock = threading.Lock()
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap.split(","),
                client_id="aiops-simulate",
                linger_ms=10,
                bootstrap_timeout_ms=round(timeout * 1000),
            )
        except KafkaError as exc:
            raise ConnectionError(f"cannot connect to Kafka at {bootstrap}: {exc}") from None

    @property
    def target(self) -> str:
        """``kafka BOOTSTRAP topic T``."""
        return f"kafka {self.bootstrap} topic {self.topic}"

    def send(self, record: Record) -> None:
        """Produce asynchronously; a failure is counted when the broker reports it."""
        from kafka.errors import KafkaError

        try:
            future = self._producer.send(
                self.topic, value=record.value, key=record.key, timestamp_ms=record.timestamp_ms
            )
        except KafkaError as exc:
            self._fail(exc)
            return
        future.add_errback(self._fail)

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            self.failed += 1
            first = self.failed == 1
        if first:
            log.error("simulate: producing to %s failed: %s", self.topic, exc)

    def close(self) -> None:
        """Flush (up to the time-out) and close the producer."""
        from kafka.errors import KafkaError

        try:
            self._producer.flush(timeout=self.timeout)
        except KafkaError as exc:
            log.error("simulate: records not flushed in %.0fs: %s", self.timeout, exc)
        self._producer.close(timeout=self.timeout)


class FileSink(Sink):
    """Writes one record value per line (``-``: standard output)."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self.failed = 0
        self._file: IO[bytes] = (
            sys.stdout.buffer if self.path == "-" else Path(path).open("wb")  # noqa: SIM115
        )

    @property
    def target(self) -> str:
        """The file name."""
        return "stdout" if self.path == "-" else self.path

    def send(self, record: Record) -> None:
        """Append the value and a newline."""
        self._file.write(record.value + b"\n")

    def close(self) -> None:
        """Flush, and close unless it is standard output."""
        self._file.flush()
        if self.path != "-":
            self._file.close()


# -- the run --------------------------------------------------------------------------


class _Pacer:
    """Holds a producer to ``rate`` records per second (0: no limit)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self.t0 = clock()
        self.n = 0

    def wait(self, stop: threading.Event) -> None:
        self.n += 1
        if self.rate <= 0:
            return
        ahead = self.t0 + self.n / self.rate - self.clock()
        if ahead > _PACE_SLACK:
            stop.wait(ahead)


def simulator_config(
    *,
    seed: int,
    hosts: int,
    duration: str | None,
    start: str | None,
    logs: bool,
    services: Sequence[str] | None = None,
) -> Any:
    """The settings of the simulator source for a run (validated; ``ValueError``)."""
    cls = SOURCES.get("simulator")
    settings: dict[str, Any] = {
        "seed": seed,
        "hosts": hosts,
        "duration": duration,
        "logs": logs,
    }
    if start is not None:
        settings["start"] = None if start == "now" else start
    if services is not None:
        settings["services"] = list(services)
    try:
        return cls.Config(**settings)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'simulator'}: "
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ValueError(problems) from None


def _expected_records(source: Any, fmt: str, duration: str | None) -> int | None:
    """Records of a finite metrics run (for the progress bar); None if unknown."""
    if duration is None or fmt in LOG_FORMATS:
        return None
    # The simulator's own step count for a duration.
    steps = math.ceil(parse_duration(duration) / float(source.interval) - 1e-9)
    keys: Sequence[SeriesKey] = source.keys
    if fmt == "prometheus_json":
        return steps * len(keys)
    return steps * len({(influx_name_split(k.name)[0], k.labels) for k in keys})


def run_simulate(
    sink: Sink,
    *,
    fmt: str,
    rate: float,
    seed: int = 42,
    hosts: int = 4,
    duration: str | None = None,
    start: str | None = None,
    progress: bool = True,
    stop: threading.Event | None = None,
    handle_signals: bool = False,
) -> SimulateSummary:
    """Encode the simulator's output in ``fmt`` and send it to ``sink`` at ``rate``/s.

    Runs until the simulated ``duration`` is done, or ``stop`` is set (SIGINT and
    SIGTERM set it when ``handle_signals``); always closes the sink (flushing it).
    """
    from tqdm import tqdm

    try:
        if fmt not in FORMATS:
            raise ValueError(f'unknown format "{fmt}"; valid formats: {", ".join(FORMATS)}')
        config = simulator_config(
            seed=seed, hosts=hosts, duration=duration, start=start, logs=fmt in LOG_FORMATS
        )
    except ValueError:
        sink.close()
        raise
    source = SOURCES.get("simulator")("simulate", config)
    stop = stop or threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if handle_signals:

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    summary = SimulateSummary()
    skipped = [0]
    pacer = _Pacer(rate)
    started = time.monotonic()
    bar = tqdm(
        total=_expected_records(source, fmt, duration),
        unit="rec",
        unit_scale=True,
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    try:
        while not stop.is_set() and not source.exhausted:
            batch = source.next_batch()
            done = 0
            for record in encode_batch(batch, fmt, skipped):
                pacer.wait(stop)
                if stop.is_set():
                    break
                sink.send(record)
                summary.records += 1
                summary.points += record.points
                summary.logs += record.logs
                done += 1
                if done >= 1000:
                    bar.update(done)
                    done = 0
            bar.update(done)
    finally:
        summary.interrupted = stop.is_set()
        bar.close()
        sink.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    summary.seconds = time.monotonic() - started
    summary.skipped = skipped[0]
    summary.failed = sink.failed
    return summary
