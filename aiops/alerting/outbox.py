"""The durable outbox: notifications wait here until their receiver has accepted them.

The data loop only *appends* (:meth:`Outbox.append`, :meth:`Outbox.submit`): it hands
the notifications to an appender thread, which keys and encodes them and writes what has
accumulated in one SQLite transaction, committed with ``synchronous=FULL``, so the loop
never waits for the database (nor for a lock a worker holds). Before each checkpoint
the daemon calls :meth:`Outbox.flush`, which waits until those rows are on disk: whatever
a checkpoint covers is durable, and what follows it is replayed after a crash. Delivery
happens elsewhere: one worker thread per receiver integration (a ``<type>_configs`` entry
of a receiver) takes the due rows of its integration in order and calls the notifier. A
slow or dead receiver holds up only its own worker, never the data loop and never
another receiver.

Exactly once in effect, across crashes and restarts:

- a row is unique on (receiver, integration, idempotency key), so the notifications a
  restarted daemon replays from its last checkpoint are not queued twice (a key already
  delivered, pending or dead-lettered is ignored);
- a row is marked delivered only after the notifier returned
  :class:`~aiops.alerting.notify.Delivered`. A crash between the two sends the row again
  after the restart, with the same idempotency key, which each notifier passes to its
  remote end (PagerDuty ``dedup_key``, Opsgenie ``alias``, a webhook's
  ``Idempotency-Key`` header) so the second copy pages nobody.

Retries (:class:`DeliveryPolicy`): after a failure worth retrying the row waits
``uniform(0, min(max_delay, base_delay * 2 ** (attempts - 1)))`` seconds ("full jitter",
so receivers coming back are not hit by every daemon at once), or at least what the
remote end asked for (:attr:`RetryAfter.seconds <aiops.alerting.notify.RetryAfter>`, from
``Retry-After``), which then also holds back the integration's other rows. The delay is
computed here rather than by tenacity or backoff: those libraries own an in-process
retry loop, while here the retry state (attempts, next attempt time) lives in the
database and survives restarts; what remains of them is this one formula.

A :class:`CircuitBreaker` per integration opens after ``breaker_failures`` consecutive
failures; while open nothing is attempted (rows keep their attempt counts), and after
``breaker_cooldown`` one attempt probes (half open): success closes it, failure opens it
again. Each attempt is bounded by ``attempt_timeout``: a notifier that has not answered
by then counts as a failure (its late answer is ignored; the row is sent again later).

A :class:`~aiops.alerting.notify.PermanentFailure`, or a row past ``max_attempts`` or
``max_age``, moves to the ``dead_letter`` table with its reason. ``aiops alerts failed``
lists them and ``aiops alerts retry`` puts them back. Delivered rows are kept for
``retention`` (the history of ``aiops alerts history``, and the memory that
de-duplicates a replay), then deleted.

The schema is versioned (:data:`SCHEMA_VERSION` in table ``meta``). An older file is
migrated in place; a newer one, or a file that is not an outbox, is refused with
:class:`OutboxSchemaError` and left untouched.

Threads: every thread uses its own SQLite connection (WAL: readers never wait for the
writer; writers wait up to ``busy_timeout``). No transaction is held across a send.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import operator
import queue
import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import orjson

from aiops.alerting.notify import (
    Alert,
    AlertWindow,
    Delivered,
    DeliveryResult,
    Notification,
    Notifier,
    PermanentFailure,
    RetryAfter,
)

__all__ = [
    "OUTBOX_FILE",
    "SCHEMA_VERSION",
    "CircuitBreaker",
    "DeadLetter",
    "DeliveryPolicy",
    "Entry",
    "Integration",
    "Outbox",
    "OutboxSchemaError",
    "ReceiverStats",
    "backoff_delay",
    "decode_notification",
    "encode_notification",
]

log = logging.getLogger(__name__)

#: The outbox's file name inside the state directory.
OUTBOX_FILE = "outbox.sqlite"
#: Rows kept in memory while the database refuses appends (then the oldest are dropped).
MAX_BACKLOG = 100_000
#: How long the appender gathers notifications into one transaction after the first
#: arrives (a flush before a checkpoint does not wait for it); the delivery latency this
#: adds is small beside any ``group_wait``. Each transaction costs the appender about
#: 0.8 ms of CPU (its commit, the index pages written again): for bench/dead_receiver.py's
#: 1,221 rows, 47 ms of CPU in 18 transactions, 35 ms in 5.
APPEND_GATHER_SECONDS = 0.2
#: While gathering, the appender encodes what was handed over every this many seconds,
#: so the notifications do not stay alive that long: each one alive counts towards the
#: cyclic garbage collector's next young-generation pass, which the data loop then runs
#: (12 passes a run of that bench instead of 8 when they waited the whole 0.2 s).
APPEND_ENCODE_SECONDS = 0.05
#: Version of the tables below; bump it and add a step to ``_MIGRATIONS`` to change them.
SCHEMA_VERSION = 1

_SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    receiver TEXT NOT NULL,
    integration TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered')),
    status TEXT NOT NULL,
    payload TEXT NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    delivered_at REAL,
    detail TEXT NOT NULL DEFAULT '',
    UNIQUE (receiver, integration, idempotency_key)
);
CREATE INDEX outbox_due ON outbox (state, receiver, integration, next_attempt, id);
CREATE INDEX outbox_delivered ON outbox (state, delivered_at);
CREATE TABLE dead_letter (
    id INTEGER PRIMARY KEY,
    receiver TEXT NOT NULL,
    integration TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    status TEXT NOT NULL,
    payload TEXT NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL,
    failed_at REAL NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    UNIQUE (receiver, integration, idempotency_key)
);
"""

#: ``version -> SQL`` that upgrades a file of ``version - 1``; version 1 creates it.
_MIGRATIONS: dict[int, str] = {1: _SCHEMA_V1}

DeadKind = Literal["permanent", "max_attempts", "max_age"]


class OutboxSchemaError(RuntimeError):
    """The outbox file has a schema this version cannot use (newer, or not an outbox)."""


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How an integration's worker retries.

    ``base_delay`` and ``max_delay`` shape the back-off (:func:`backoff_delay`);
    a row moves to the dead letters after ``max_attempts`` attempts or once it is
    ``max_age`` seconds old; ``attempt_timeout`` bounds one send; the circuit breaker
    opens after ``breaker_failures`` consecutive failures for ``breaker_cooldown``;
    delivered rows are kept ``retention`` seconds; an idle worker looks for due rows
    every ``poll_interval`` (an append wakes it at once).
    """

    base_delay: float = 1.0
    max_delay: float = 300.0
    max_attempts: int = 50
    max_age: float = 86_400.0
    attempt_timeout: float = 30.0
    breaker_failures: int = 5
    breaker_cooldown: float = 60.0
    retention: float = 7 * 86_400.0
    poll_interval: float = 1.0

    def __post_init__(self) -> None:
        for name in ("base_delay", "max_delay", "max_age", "attempt_timeout", "poll_interval"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("breaker_cooldown", "retention"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.max_attempts < 1 or self.breaker_failures < 1:
            raise ValueError("max_attempts and breaker_failures must be >= 1")


def backoff_delay(attempts: int, policy: DeliveryPolicy, rng: random.Random) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: full jitter.

    A uniform draw from ``[0, min(max_delay, base_delay * 2 ** (attempts - 1))]``.

    >>> p = DeliveryPolicy(base_delay=1.0, max_delay=8.0)
    >>> rng = random.Random(0)
    >>> [round(backoff_delay(n, p, rng), 3) for n in (1, 2, 3, 4, 10)]
    [0.844, 1.516, 1.682, 2.071, 4.09]
    """
    ceiling = min(policy.max_delay, policy.base_delay * 2.0 ** min(attempts - 1, 60))
    return rng.uniform(0.0, ceiling)


class CircuitBreaker:
    """Closed, open after ``failures`` consecutive failures, half open after ``cooldown``.

    Time comes from the caller (``now``), so a fake clock drives it in tests.

    >>> b = CircuitBreaker(failures=2, cooldown=10.0)
    >>> b.failure(0.0); b.failure(1.0); b.state(1.0), b.allows(5.0)
    ('open', False)
    >>> b.state(11.0), b.allows(11.0)
    ('half_open', True)
    >>> b.failure(11.0); b.state(12.0)
    'open'
    >>> b.success(); b.state(12.0)
    'closed'
    """

    def __init__(self, failures: int, cooldown: float) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self.consecutive = 0
        self.opened_at: float | None = None
        #: Nothing is attempted before this time (a ``Retry-After`` or the open period).
        self.hold_until = 0.0

    def state(self, now: float) -> str:
        """``closed``, ``open`` or ``half_open`` (the next attempt is a probe)."""
        if self.opened_at is None:
            return "closed"
        return "half_open" if now >= self.opened_at + self.cooldown else "open"

    def allows(self, now: float) -> bool:
        """True if an attempt may start now."""
        return now >= self.hold_until and self.state(now) != "open"

    def resume_at(self) -> float:
        """When :meth:`allows` may next be true."""
        opened = self.opened_at + self.cooldown if self.opened_at is not None else 0.0
        return max(self.hold_until, opened)

    def success(self) -> None:
        """The remote end answered: close."""
        self.consecutive = 0
        self.opened_at = None

    def failure(self, now: float) -> None:
        """One more failure in a row; open (again) at the threshold or after a probe."""
        self.consecutive += 1
        if self.consecutive >= self.failures or self.opened_at is not None:
            self.opened_at = now

    def hold(self, until: float) -> None:
        """Attempt nothing before ``until`` (the remote end asked to wait)."""
        self.hold_until = max(self.hold_until, until)


@dataclass(frozen=True, slots=True)
class Integration:
    """One notifier of one receiver: ``name`` is like ``pagerduty[0]``."""

    receiver: str
    name: str
    notifier: Notifier


@dataclass(frozen=True, slots=True)
class Entry:
    """One outbox row, as ``aiops alerts history`` shows it."""

    id: int
    receiver: str
    integration: str
    idempotency_key: str
    state: str
    status: str
    alertnames: str
    created: float
    attempts: int
    next_attempt: float
    last_error: str
    delivered_at: float | None
    detail: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-lettered row, as ``aiops alerts failed`` shows it."""

    id: int
    receiver: str
    integration: str
    idempotency_key: str
    status: str
    alertnames: str
    created: float
    attempts: int
    failed_at: float
    kind: str
    reason: str


_Listed = TypeVar("_Listed", Entry, DeadLetter)


@dataclass(frozen=True, slots=True)
class ReceiverStats:
    """Pending rows of one receiver, the creation time of the oldest, dead letters."""

    pending: int
    oldest_created: float | None
    dead: int


def encode_notification(notification: Notification, *, windows: bool = True) -> str:
    """The notification as JSON text, every field kept (floats exactly; NaN as ``null``).

    ``windows=False`` leaves out each alert's chart window (``window`` reads back as
    None): most of a row's size, and of no use to a notifier that draws no chart
    (:attr:`~aiops.alerting.notify.Notifier.uses_window`).

    The text is a JSON array (:data:`PAYLOAD_FORMAT` first, then the fields in the order
    of :data:`NOTIFICATION_FIELDS`, each alert an array in the order of
    :data:`ALERT_FIELDS`, its window one of :data:`WINDOW_FIELDS`), written by orjson
    in C: every notification of an alert storm is encoded on the data loop, and field
    names, or a dict built per alert to leave its window out, cost it more than the
    encoding (6.5 us a notification against 2.5 us). Rows of earlier versions (one
    object per notification) still read.

    >>> a = Alert("f1", "firing", {"alertname": "X"}, {}, starts_at=1.5, value=2.0, score=0.9)
    >>> n = Notification("ops", [a], group_labels={"alertname": "X"})
    >>> decode_notification(encode_notification(n)) == n
    True
    """
    doc = notification if windows else _Bare(notification)
    return orjson.dumps(doc, default=_as_array, option=_ENCODE_OPTIONS).decode("utf-8")


#: First item of a payload array; a payload that is a JSON object is the older format.
PAYLOAD_FORMAT = 2
#: Positions in a payload array. New fields go at the end (older rows, shorter, read
#: with their defaults); a test checks these name every field of the dataclasses.
NOTIFICATION_FIELDS = ("receiver", "alerts", "group_labels", "repeat", "action", "actor")
ALERT_FIELDS = (
    "fingerprint",
    "status",
    "labels",
    "annotations",
    "starts_at",
    "ends_at",
    "value",
    "score",
    "series",
    "rule",
    "detector",
    "model_version",
    "window",
)
WINDOW_FIELDS = ("timestamps", "values", "lo", "hi", "anomalous", "threshold")

_ENCODE_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_SERIALIZE_NUMPY
_NOTIFICATION_GET = operator.attrgetter(*NOTIFICATION_FIELDS)
_NOTIFICATION_REST = operator.attrgetter(*NOTIFICATION_FIELDS[2:])  # after the alerts
_ALERT_GET = operator.attrgetter(*ALERT_FIELDS)
_ALERT_GET_BARE = operator.attrgetter(*ALERT_FIELDS[:-1])  # all but the window
_WINDOW_GET = operator.attrgetter(*WINDOW_FIELDS)


class _Bare:
    """A notification to encode without its alerts' windows."""

    __slots__ = ("notification",)

    def __init__(self, notification: Notification) -> None:
        self.notification = notification


def _as_array(value: Any) -> Any:
    """The fallback orjson calls: the dataclasses as arrays (attrgetter, in C)."""
    kind = type(value)
    if kind is Alert:
        return _ALERT_GET(value)
    if kind is Notification:
        return (PAYLOAD_FORMAT, *_NOTIFICATION_GET(value))
    if kind is AlertWindow:
        return _WINDOW_GET(value)
    if kind is _Bare:
        n = value.notification
        alerts = [_ALERT_GET_BARE(a) for a in n.alerts]
        return (PAYLOAD_FORMAT, n.receiver, alerts, *_NOTIFICATION_REST(n))
    if isinstance(value, Alert):  # a subclass: rare, slower
        return _ALERT_GET(value)
    if isinstance(value, Notification):
        return (PAYLOAD_FORMAT, *_NOTIFICATION_GET(value))
    if isinstance(value, AlertWindow):
        return _WINDOW_GET(value)
    return _plain(value)


def _plain(value: Any) -> Any:
    """What orjson cannot write itself: other mappings and sequences, numpy scalars."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Sequence) and not isinstance(value, bytes):  # tuples, lists: native
        return list(value)
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    raise TypeError(f"cannot encode {type(value).__name__}")


#: Rows ``(receiver, integration, key, status, payload, created, next_attempt)`` from
#: one JSON array, in order; a key already dead-lettered is not queued again. The
#: payload is a JSON array inside it, stored as its JSON text (SQLite keeps the numbers'
#: digits as written). The first ``NOT EXISTS``, of no row, is evaluated once per
#: statement: while there are no dead letters (the usual case) no row pays for the
#: look-up of its key in them (three ``json_extract`` calls and an index probe: a
#: quarter of the statement's CPU, 42 ms to 32 ms for 1,221 rows of
#: bench/dead_receiver.py, on the appender's thread).
_INSERT_ROWS = """
INSERT OR IGNORE INTO outbox (receiver, integration, idempotency_key, state, status, payload,
                              created, next_attempt)
SELECT json_extract(r.value, '$[0]'), json_extract(r.value, '$[1]'),
       json_extract(r.value, '$[2]'), 'pending', json_extract(r.value, '$[3]'),
       json_extract(r.value, '$[4]'), json_extract(r.value, '$[5]'),
       json_extract(r.value, '$[6]')
FROM json_each(?) AS r
WHERE NOT EXISTS (SELECT 1 FROM dead_letter) OR NOT EXISTS (
    SELECT 1 FROM dead_letter d
    WHERE d.receiver = json_extract(r.value, '$[0]')
      AND d.integration = json_extract(r.value, '$[1]')
      AND d.idempotency_key = json_extract(r.value, '$[2]')
)
ORDER BY r.key
"""


#: Alert fields written as ``null`` when NaN (orjson has no NaN), read back as NaN.
_NAN_FIELDS = ("value", "score")


def _alert(doc: Any) -> Alert:
    if isinstance(doc, list):  # PAYLOAD_FORMAT 2
        doc = dict(zip(ALERT_FIELDS, doc, strict=False))
    window = doc.get("window")
    if isinstance(window, list):
        doc["window"] = AlertWindow.from_json(dict(zip(WINDOW_FIELDS, window, strict=False)))
    elif window is not None:
        doc["window"] = AlertWindow.from_json(window)
    for name in _NAN_FIELDS:
        if doc.get(name, 0.0) is None:
            doc[name] = float("nan")
    if doc.get("labels") is None:
        doc["labels"] = {}
    return Alert(**doc)


def decode_notification(text: str | bytes) -> Notification:
    """The :class:`Notification` that :func:`encode_notification` wrote.

    Rows of earlier versions (one JSON object per notification, from orjson or the
    standard library's encoder with ``NaN`` literals) read too. Raises ValueError,
    TypeError or KeyError for a row that is none of these.
    """
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        doc = json.loads(text)
    if isinstance(doc, list):
        if not doc or doc[0] != PAYLOAD_FORMAT:
            raise ValueError(f"unknown payload format {doc[:1]!r}")
        doc = dict(zip(NOTIFICATION_FIELDS, doc[1:], strict=False))
    doc["alerts"] = [_alert(a) for a in doc["alerts"]]
    return Notification(**doc)


def _key(n: Notification) -> str:
    """``n.idempotency_key``, for the usual one alert without the two property calls."""
    alerts = n.alerts
    if len(alerts) != 1 or n.repeat or n.action != "notify":
        return n.idempotency_key
    a = alerts[0]
    inner = sha256(f"{a.fingerprint}:{a.status}:{a.starts_at:.3f}".encode()).hexdigest()[:32]
    return sha256((n.receiver + "|" + inner).encode()).hexdigest()[:32]


def _payload(n: Notification, alert_fields: Callable[[Alert], tuple[Any, ...]]) -> tuple[Any, ...]:
    """The payload array of ``n`` (see :func:`encode_notification`), built here.

    The same array :func:`_as_array` gives orjson, without orjson calling back into
    Python for the notification (``alert_fields``: with or without the window). Only
    an alert of a subclass, a window, a mapping other than a dict, a numpy scalar are
    still left to the callback.
    """
    if type(n) is not Notification:
        doc = _Bare(n) if alert_fields is _ALERT_GET_BARE else n
        return tuple(_as_array(doc))
    return (PAYLOAD_FORMAT, n.receiver, [alert_fields(a) for a in n.alerts], *_NOTIFICATION_REST(n))


@dataclass(frozen=True, slots=True)
class _Plan:
    """One receiver's integrations as :meth:`Outbox.submit` uses them.

    ``integrations``: ``(name, uses_window, acknowledges)`` of each; ``wake``: the
    workers to wake once its rows are written.
    """

    integrations: tuple[tuple[str, bool, bool], ...]
    wake: frozenset[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class _Rows:
    """Rows encoded by :meth:`Outbox._encode` (what one or more submits handed over).

    ``blob`` is a JSON array of ``count`` rows (see ``_INSERT_ROWS``); ``wake`` the
    integrations whose workers to wake once they are written.
    """

    blob: bytes
    count: int
    wake: set[tuple[str, str]]


def _join(batches: Sequence[_Rows]) -> bytes:
    """One JSON array of the rows of every batch, in order."""
    if len(batches) == 1:
        return batches[0].blob
    return b"[" + b",".join(b.blob[1:-1] for b in batches if b.count) + b"]"


def _count(batches: Sequence[_Rows]) -> int:
    return sum(b.count for b in batches)


def _bounded(batches: list[_Rows]) -> list[_Rows]:
    """The newest batches holding at most :data:`MAX_BACKLOG` rows (at least the last)."""
    kept = 0
    for i in range(len(batches) - 1, -1, -1):
        kept += batches[i].count
        if kept > MAX_BACKLOG:
            return batches[i + 1 :] or batches[-1:]
    return batches


def _call(notifier: Notifier, notification: Notification) -> DeliveryResult:
    try:
        return notifier.send(notification)
    except Exception as exc:  # a notifier bug must not stop delivery
        log.exception("notifier %s raised", type(notifier).__name__)
        return RetryAfter(f"notifier raised {type(exc).__name__}: {exc}")


class _Sender:
    """The thread that runs one integration's sends, so an attempt can be timed out.

    A notifier stuck past its own time-outs holds up neither the worker (which stops
    waiting after ``attempt_timeout``) nor the process' exit (a daemon thread). One
    long-lived thread per integration, started at its first attempt and again after
    :meth:`stop`: a thread started per attempt cost about 0.2 ms of CPU each, and
    hand-overs of the interpreter lock that the data loop waited for. ``busy`` stays
    true until the notifier answered, so an attempt is never sent beside one that
    has not.
    """

    def __init__(self, name: str, integ: Integration) -> None:
        self.name = name
        self.notifier = integ.notifier
        self._jobs: queue.SimpleQueue[
            tuple[Notification, list[DeliveryResult], threading.Event] | None
        ] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = False
        #: True from handing over an attempt until the notifier answered it.
        self.busy = False

    def send(self, notification: Notification, timeout: float) -> DeliveryResult | None:
        """The notifier's answer, or None if it gave none within ``timeout`` seconds."""
        box: list[DeliveryResult] = []
        done = threading.Event()
        with self._lock:  # the thread cannot end between this check and the job
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name=self.name, daemon=True).start()
            self.busy = True
            self._jobs.put((notification, box, done))
        done.wait(timeout)
        return box[0] if box else None

    def stop(self) -> None:
        """End the thread once it is done with what it was handed."""
        self._jobs.put(None)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                with self._lock:
                    if self._jobs.empty():
                        self._running = False
                        return
                continue
            notification, box, done = job
            box.append(_call(self.notifier, notification))
            self.busy = False
            done.set()


def _alertnames(notification: Notification) -> str:
    return ",".join(sorted({a.alertname for a in notification.alerts}))


class Outbox:
    """The durable queue between the data loop and the receivers; see the module doc.

    ``integrations`` are the notifiers to deliver to (none for a read-only use such as
    the ``aiops alerts`` commands); ``clock`` is wall-clock unix time (rows outlive the
    process); ``on_outcome(receiver, outcome)`` is told ``delivered``, ``retry``,
    ``permanent`` or ``dead`` after each attempt; :meth:`close` first waits up to
    ``drain_timeout`` seconds for the workers to send what is due.
    """

    def __init__(
        self,
        path: Path,
        integrations: Sequence[Integration] = (),
        *,
        policy: DeliveryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_outcome: Callable[[str, str], None] | None = None,
        busy_timeout: float = 10.0,
        drain_timeout: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self.integrations = list(integrations)
        self.policy = policy or DeliveryPolicy()
        self.clock = clock
        self.rng = rng or random.Random()
        self.on_outcome = on_outcome or (lambda receiver, outcome: None)
        self.busy_timeout = busy_timeout
        self.drain_timeout = drain_timeout
        #: Outcomes since start, summed over receivers.
        self.results: Counter[str] = Counter()
        self._by_receiver: dict[str, list[Integration]] = {}
        for integ in self.integrations:
            self._by_receiver.setdefault(integ.receiver, []).append(integ)
        #: What :meth:`submit` needs of each receiver's integrations, looked up once.
        self._plans = {
            receiver: _Plan(
                tuple((i.name, i.notifier.uses_window, i.notifier.acknowledges) for i in integs),
                frozenset((receiver, i.name) for i in integs),
            )
            for receiver, integs in self._by_receiver.items()
        }
        self._breakers = {
            (i.receiver, i.name): CircuitBreaker(
                self.policy.breaker_failures, self.policy.breaker_cooldown
            )
            for i in self.integrations
        }
        self._senders: dict[tuple[str, str], _Sender] = {}
        self._wake = {key: threading.Event() for key in self._breakers}
        self._local = threading.local()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._backlog: list[_Rows] = []
        #: Notifications handed over by submit() (with the time), for the appender.
        self._queued: list[tuple[float, Sequence[Notification]]] = []
        self._nowhere: set[str] = set()
        self._writing = False
        self._gathering = False  # the appender takes what comes: submit need not wake it
        self._flushers = 0  # threads waiting in flush(): the appender writes at once
        self._append_cv = threading.Condition()
        self._appender: threading.Thread | None = None
        self._appender_stop = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open_schema()

    # -- connections and schema ------------------------------------------------------

    def _connect(self, *, durable: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL where rows are appended (the appender; the caller's thread before start):
        # a row is on disk, power loss included, before the checkpoint that covers its
        # alert. NORMAL for the workers' updates (marked delivered, retry times, dead
        # letters) and read-only uses: in WAL mode a commit still survives a crash of the
        # process, and a power loss can only undo the last ones: a row sent again with
        # its idempotency key, or retried once more. FULL there cost an fsync per
        # delivered row on the threads that share the interpreter with the data loop.
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        return conn

    def _conn(self) -> sqlite3.Connection:
        """The calling thread's connection: FULL unless it is a worker's (see _connect)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(durable=not getattr(self._local, "worker", False))
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _open_schema(self) -> None:
        conn = self._conn()
        with self._tx(conn):
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if not tables:
                version = 0
            elif "meta" not in tables:
                raise OutboxSchemaError(
                    f"{self.path} is not an aiopsd outbox (no meta table); "
                    "move it aside to start a new one"
                )
            else:
                row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                try:
                    version = int(row[0])
                except (TypeError, ValueError):
                    raise OutboxSchemaError(
                        f"{self.path}: no readable schema_version in its meta table; "
                        "move it aside to start a new one"
                    ) from None
            if version > SCHEMA_VERSION:
                raise OutboxSchemaError(
                    f"{self.path} has outbox schema version {version}, newer than this "
                    f"aiopsd's {SCHEMA_VERSION}; refusing to touch it (run the newer "
                    "version, or move the file aside and lose its pending notifications)"
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(step),),
                )
                if version:
                    log.info("outbox %s migrated to schema version %d", self.path, step)

    # -- the data loop's side --------------------------------------------------------

    def append(self, notification: Notification) -> int:
        """Queue one notification for every integration of its receiver; never blocks on one.

        See :meth:`submit`; a notification whose idempotency key an integration already
        has (a replay after a restart) is not queued again.
        """
        return self.submit([notification])

    def submit(self, notifications: Iterable[Notification]) -> int:
        """Queue several notifications; never waits for a receiver or for the database.

        Once :meth:`start` ran, the notifications themselves (frozen dataclasses) go to
        the appender thread, with the time: the data loop appends one list per call.
        The appender computes their idempotency keys, encodes all it has gathered in one
        orjson call (:meth:`_encode`) and writes them in one transaction (so the data
        loop never waits for a lock a worker holds); :meth:`flush` waits until they are
        on disk. Keys and encoding cost the same interpreter time on either thread, but
        done here, interleaved with scoring, they cost about twice what they cost done
        in bulk (bench/dead_receiver.py). Before :meth:`start` they are written at once.
        Returns the rows written (duplicates are not), or, once started, the
        notifications handed over.
        """
        now = self.clock()
        plans = self._plans
        taken: list[Notification] = []
        for n in notifications:
            if n.receiver in plans:
                taken.append(n)
            elif n.receiver not in self._nowhere:
                # A receiver without *_configs delivers nowhere; say so once per name.
                self._nowhere.add(n.receiver)
                log.info("outbox: receiver %r has no integrations; not queued", n.receiver)
        if not taken:
            return 0
        if self._appender is None:  # not started (tests, one-shot use): write now
            batch = self._encode([(now, taken)])
            return self._insert([batch] if batch.count else [])
        with self._append_cv:
            # Wake the appender only when it is idle: while it gathers it takes what
            # comes every APPEND_ENCODE_SECONDS by itself, and a wake-up per call would
            # take the interpreter from the data loop each time.
            first = not self._queued and not self._gathering
            self._queued.append((now, taken))
            if first:
                self._append_cv.notify()
        return len(taken)

    def _encode(self, handed: Sequence[tuple[float, Sequence[Notification]]]) -> _Rows:
        """The rows of notifications handed to :meth:`submit` at their times, encoded.

        One row per integration of each notification's receiver (an acknowledgement only
        for the integrations that take one), all encoded in one orjson call (in C; see
        :func:`encode_notification`). A notification that cannot be encoded (a field of
        a type JSON has no form for: a bug upstream) is logged and left out, so it holds
        up neither the others nor the checkpoints that wait for them.
        """
        plans = self._plans
        rows: list[tuple[Any, ...]] = []
        wake: set[tuple[str, str]] = set()
        for now, notifications in handed:
            for n in notifications:
                try:
                    plan = plans[n.receiver]
                    key = _key(n)
                    action = n.action
                    # What `aiops alerts history` shows: firing / resolved, or the action.
                    status = n.status if action == "notify" else action
                    full: tuple[Any, ...] | None = None
                    bare: tuple[Any, ...] | None = None
                    for name, uses_window, acknowledges in plan.integrations:
                        if action == "notify" or acknowledges:
                            if uses_window:
                                doc = full = full or _payload(n, _ALERT_GET)
                            else:
                                doc = bare = bare or _payload(n, _ALERT_GET_BARE)
                            rows.append((n.receiver, name, key, status, doc, now, now))
                except Exception as exc:
                    log.error(
                        "outbox: a notification for %s cannot be encoded, not queued: %r",
                        getattr(n, "receiver", "?"),
                        exc,
                    )
                    continue
                wake |= plan.wake
        try:
            blob = orjson.dumps(rows, default=_as_array, option=_ENCODE_OPTIONS)
        except TypeError:  # orjson.JSONEncodeError too: find the rows at fault
            good = []
            for row in rows:
                try:
                    orjson.dumps(row, default=_as_array, option=_ENCODE_OPTIONS)
                except TypeError as exc:
                    log.error(
                        "outbox: notification %s for %s/%s cannot be encoded, not queued: %s",
                        row[2],
                        row[0],
                        row[1],
                        exc,
                    )
                    continue
                good.append(row)
            rows = good
            blob = orjson.dumps(rows, default=_as_array, option=_ENCODE_OPTIONS)
        return _Rows(blob, len(rows), wake)

    def _insert(self, batches: list[_Rows]) -> int:
        """Insert encoded rows (after any backlog); on a database error keep them for later."""
        batches = self._backlog + batches
        self._backlog = []
        if not batches:
            return 0
        conn = self._conn()
        added = 0
        try:
            # One statement for all rows, passed as one JSON array, and its own
            # transaction (autocommit: no BEGIN and COMMIT statements around it). The
            # sqlite3 module lets go of the interpreter lock around each statement, and
            # each time this thread takes it back it can hold up the data loop (on a
            # loaded machine, for as long as the OS leaves this thread off the CPU with
            # the lock held), so one statement per row (executemany) cost the loop more
            # CPU than the inserts did.
            cur = conn.execute(_INSERT_ROWS, (_join(batches),))
            added = max(0, cur.rowcount)
        except sqlite3.Error as exc:
            # A full disk or a broken file must not stop scoring: keep the rows in
            # memory (bounded) and try again on the next loop turn.
            self._backlog = _bounded(batches)
            kept = _count(self._backlog)
            lost = _count(batches) - kept
            log.error(
                "outbox: cannot append to %s (%s); %d notifications kept in memory%s",
                self.path,
                exc,
                kept,
                f", {lost} oldest dropped" if lost else "",
            )
            return 0
        # Wake the workers that can send now; one whose breaker is open, or that waits
        # out a Retry-After, wakes by itself when that ends (see _idle_delay).
        now = self.clock()
        for key in set().union(*(b.wake for b in batches)):
            wake = self._wake.get(key)
            if wake is not None and self._breakers[key].allows(now):
                wake.set()
        return added

    @property
    def backlog(self) -> int:
        """Rows that could not be appended yet (a database error), waiting in memory."""
        return _count(self._backlog)

    def pump(self) -> None:
        """Before :meth:`start`: append what a database error held back (once per turn)."""
        if self._backlog and self._appender is None:
            self._insert([])

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row handed to :meth:`submit` is committed (before a checkpoint).

        True when nothing is left in memory; False after ``timeout`` (a database error
        keeps rows back; they are retried and a later flush may succeed).
        """
        deadline = time.monotonic() + timeout
        with self._append_cv:
            self._flushers += 1
            self._append_cv.notify_all()
            try:
                while self._appender is not None and (
                    self._queued or self._writing or self._backlog
                ):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._append_cv.wait(min(left, 0.5))
            finally:
                self._flushers -= 1
            left_over = sum(len(q[1]) for q in self._queued) + _count(self._backlog)
        if left_over:
            log.error("outbox: %d notifications not yet written to %s", left_over, self.path)
        return not left_over

    def _append_loop(self) -> None:
        cv = self._append_cv
        while True:
            with cv:
                while not (self._queued or self._backlog or self._appender_stop):
                    cv.wait()
                if self._appender_stop and not (self._queued or self._backlog):
                    break
                # Gather what else comes in the next moment into the same transaction:
                # in an alert storm that is one commit (and fsync) for dozens of batches
                # instead of one each, on a thread that shares the interpreter with the
                # data loop. A flush() (before a checkpoint) or stop() cuts it short.
                # What came in is encoded every APPEND_ENCODE_SECONDS meanwhile; until
                # it is written, _writing keeps flush() waiting.
                gather_until = time.monotonic() + APPEND_GATHER_SECONDS
                self._writing = self._gathering = True
            rows: list[_Rows] = []
            try:
                while True:
                    with cv:
                        last = bool(self._flushers or self._appender_stop)
                        left = gather_until - time.monotonic()
                        if not last and left > 0:
                            cv.wait(min(left, APPEND_ENCODE_SECONDS))
                            last = bool(self._flushers or self._appender_stop)
                        last = last or time.monotonic() >= gather_until
                        if last:
                            self._gathering = False
                        handed, self._queued = self._queued, []
                    batch = self._encode(handed) if handed else None
                    if batch is not None and batch.count:  # an acknowledgement may make none
                        rows.append(batch)
                    if last:
                        break
                self._insert(rows)  # on a database error the rows wait in the backlog
            except Exception:
                log.exception("outbox appender")
                self._backlog = _bounded(self._backlog + rows)
            with cv:
                self._writing = self._gathering = False
                cv.notify_all()
                if self._backlog:
                    if self._appender_stop:
                        break
                    cv.wait(1.0)  # the database refused: try again in a second
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- delivery ----------------------------------------------------------------------

    def start(self) -> None:
        """Start one worker thread per integration (they deliver what is already queued)."""
        self._gc()
        self._warn_orphans()
        self._stop.clear()
        self._appender_stop = False
        self._appender = threading.Thread(
            target=self._append_loop, name="outbox-appender", daemon=True
        )
        self._appender.start()
        for integ in self.integrations:
            t = threading.Thread(
                target=self._worker,
                args=(integ,),
                name=f"outbox-{integ.receiver}-{integ.name}",
                daemon=True,
            )
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float | None = None) -> None:
        """Write what is queued, stop the workers after their current attempt.

        Pending rows stay in the file for the next start.
        """
        appender = self._appender
        if appender is not None:
            with self._append_cv:
                self._appender_stop = True
                self._append_cv.notify_all()
            appender.join(30.0)
            self._appender = None
        self._stop.set()
        for e in self._wake.values():
            e.set()
        limit = self.policy.attempt_timeout + 2.0 if timeout is None else timeout
        deadline = time.monotonic() + limit
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                log.warning("outbox: worker %s still busy at shutdown", t.name)
        self._threads = []
        for sender in self._senders.values():
            sender.stop()

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until no row can be attempted now.

        Rows waiting for a back-off, a ``Retry-After`` or an open breaker do not count:
        they stay queued. True if nothing was left to attempt.
        """
        deadline = time.monotonic() + timeout
        while True:
            if not self._threads or self._due_now() == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            for e in self._wake.values():
                e.set()
            time.sleep(0.02)

    def _due_now(self) -> int:
        now = self.clock()
        conn = self._conn()
        due = 0
        for (receiver, name), breaker in self._breakers.items():
            if not breaker.allows(now):
                continue
            row = conn.execute(
                "SELECT COUNT(*) FROM outbox WHERE state='pending' AND receiver=? AND "
                "integration=? AND next_attempt<=?",
                (receiver, name, now),
            ).fetchone()
            due += int(row[0])
        return due

    def close(self) -> None:
        """Give the workers ``drain_timeout`` to send what is due, stop them, close notifiers."""
        if self._threads and self.drain_timeout > 0:
            self.flush()
            self.drain(self.drain_timeout)
        self.stop()
        for integ in self.integrations:
            try:
                integ.notifier.close()
            except Exception:
                log.exception("closing notifier %s/%s failed", integ.receiver, integ.name)
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def deliver_due(self, receiver: str | None = None) -> int:
        """Attempt every due row now, in this thread (tests and one-shot use).

        Returns the number of attempts made. Honours back-off, holds and breakers at
        the outbox clock.
        """
        attempts = 0
        for integ in self.integrations:
            if receiver is not None and integ.receiver != receiver:
                continue
            while self._attempt_next(integ):
                attempts += 1
        return attempts

    def _worker(self, integ: Integration) -> None:
        self._local.worker = True  # its connection commits with synchronous=NORMAL
        wake = self._wake[(integ.receiver, integ.name)]
        last_gc = time.monotonic()
        while not self._stop.is_set():
            try:
                if self._attempt_next(integ):
                    continue
                delay = self._idle_delay(integ)
            except Exception:  # a database problem: log, wait, try again
                log.exception("outbox worker %s/%s", integ.receiver, integ.name)
                delay = self.policy.poll_interval
            wake.wait(delay)
            wake.clear()
            if time.monotonic() - last_gc > 600.0:
                last_gc = time.monotonic()
                self._gc()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _idle_delay(self, integ: Integration) -> float:
        now = self.clock()
        breaker = self._breakers[(integ.receiver, integ.name)]
        if not breaker.allows(now):
            return max(0.01, min(self.policy.poll_interval * 60, breaker.resume_at() - now))
        row = (
            self._conn()
            .execute(
                "SELECT MIN(next_attempt) FROM outbox WHERE state='pending' AND receiver=? "
                "AND integration=?",
                (integ.receiver, integ.name),
            )
            .fetchone()
        )
        if row[0] is None:
            return self.policy.poll_interval
        return max(0.01, min(self.policy.poll_interval, float(row[0]) - now))

    def _attempt_next(self, integ: Integration) -> bool:
        """Attempt the first due row of ``integ``; False if there is none or it must wait."""
        key = (integ.receiver, integ.name)
        breaker = self._breakers[key]
        now = self.clock()
        if not breaker.allows(now):
            return False
        conn = self._conn()
        row = conn.execute(
            "SELECT id, payload, attempts, created FROM outbox WHERE state='pending' AND "
            "receiver=? AND integration=? AND next_attempt<=? ORDER BY next_attempt, id LIMIT 1",
            (integ.receiver, integ.name, now),
        ).fetchone()
        if row is None:
            return False
        try:
            notification = decode_notification(row["payload"])
        except (ValueError, TypeError, KeyError) as exc:
            self._dead(conn, row["id"], row["attempts"], "permanent", f"unreadable row: {exc}")
            self._outcome(integ.receiver, "dead")
            return True
        result = self._send(integ, notification)
        self._record(conn, integ, breaker, row, result)
        return True

    def _send(self, integ: Integration, notification: Notification) -> DeliveryResult:
        key = (integ.receiver, integ.name)
        sender = self._senders.get(key)
        if sender is None:
            sender = self._senders[key] = _Sender(f"send-{integ.receiver}-{integ.name}", integ)
        if sender.busy:
            return RetryAfter("the previous attempt has not answered yet")
        timeout = self.policy.attempt_timeout
        result = sender.send(notification, timeout)
        if result is None:
            return RetryAfter(f"no answer within {timeout:g}s")
        return result

    def _record(
        self,
        conn: sqlite3.Connection,
        integ: Integration,
        breaker: CircuitBreaker,
        row: sqlite3.Row,
        result: DeliveryResult,
    ) -> None:
        now = self.clock()
        attempts = int(row["attempts"]) + 1
        rid = int(row["id"])
        where = f"{integ.receiver}/{integ.name}"
        if isinstance(result, Delivered):
            breaker.success()
            conn.execute(
                "UPDATE outbox SET state='delivered', delivered_at=?, attempts=?, detail=?, "
                "last_error='' WHERE id=?",
                (now, attempts, result.detail[:1000], rid),
            )
            self._outcome(integ.receiver, "delivered")
            return
        if isinstance(result, PermanentFailure):
            breaker.success()  # the remote end answered; it refused this one
            log.error("receiver %s: permanent failure: %s", where, result.reason)
            self._dead(conn, rid, attempts, "permanent", result.reason)
            self._outcome(integ.receiver, "permanent")
            return
        breaker.failure(now)
        if result.seconds is not None and result.seconds > 0:
            breaker.hold(now + result.seconds)
        kind: DeadKind | None = None
        if attempts >= self.policy.max_attempts:
            kind = "max_attempts"
        elif now - float(row["created"]) >= self.policy.max_age:
            kind = "max_age"
        if kind is not None:
            log.error(
                "receiver %s: giving up after %d attempts (%s): %s",
                where,
                attempts,
                kind,
                result.reason,
            )
            self._dead(conn, rid, attempts, kind, result.reason)
            self._outcome(integ.receiver, "dead")
            return
        delay = backoff_delay(attempts, self.policy, self.rng)
        if result.seconds is not None:
            delay = max(delay, result.seconds)
        conn.execute(
            "UPDATE outbox SET attempts=?, next_attempt=?, last_error=? WHERE id=?",
            (attempts, now + delay, result.reason[:1000], rid),
        )
        log.warning(
            "receiver %s: %s; attempt %d, next in %.1fs", where, result.reason, attempts, delay
        )
        self._outcome(integ.receiver, "retry")

    def _dead(
        self, conn: sqlite3.Connection, rid: int, attempts: int, kind: str, reason: str
    ) -> None:
        with self._tx(conn):
            conn.execute(
                "INSERT OR REPLACE INTO dead_letter (id, receiver, integration, idempotency_key, "
                "status, payload, created, attempts, failed_at, kind, reason) SELECT id, "
                "receiver, integration, idempotency_key, status, payload, created, ?, ?, ?, ? "
                "FROM outbox WHERE id=?",
                (attempts, self.clock(), kind, reason[:1000], rid),
            )
            conn.execute("DELETE FROM outbox WHERE id=?", (rid,))

    def _outcome(self, receiver: str, outcome: str) -> None:
        self.results[outcome] += 1
        try:
            self.on_outcome(receiver, outcome)
        except Exception:
            log.exception("outbox outcome hook failed")

    def _gc(self) -> None:
        cutoff = self.clock() - self.policy.retention
        try:
            cur = self._conn().execute(
                "DELETE FROM outbox WHERE state='delivered' AND delivered_at < ?", (cutoff,)
            )
        except sqlite3.Error as exc:
            log.warning("outbox: removing old delivered rows failed: %s", exc)
            return
        if cur.rowcount:
            log.info("outbox: removed %d delivered rows older than retention", cur.rowcount)

    def _warn_orphans(self) -> None:
        known = {(i.receiver, i.name) for i in self.integrations}
        for r in self._conn().execute(
            "SELECT receiver, integration, COUNT(*) FROM outbox WHERE state='pending' "
            "GROUP BY receiver, integration"
        ):
            if (r[0], r[1]) not in known:
                log.warning(
                    "outbox: %d pending notifications for %s/%s, which is no longer "
                    "configured; they stay queued",
                    r[2],
                    r[0],
                    r[1],
                )

    # -- inspection (CLI, metrics) -----------------------------------------------------

    def stats(self) -> dict[str, ReceiverStats]:
        """Per receiver: pending rows, creation time of the oldest, dead letters."""
        conn = self._connect()
        try:
            pending = {
                r[0]: (int(r[1]), r[2])
                for r in conn.execute(
                    "SELECT receiver, COUNT(*), MIN(created) FROM outbox WHERE state='pending' "
                    "GROUP BY receiver"
                )
            }
            dead = {
                r[0]: int(r[1])
                for r in conn.execute(
                    "SELECT receiver, COUNT(*) FROM dead_letter GROUP BY receiver"
                )
            }
        finally:
            conn.close()
        names = set(pending) | set(dead) | set(self._by_receiver)
        return {
            name: ReceiverStats(
                pending.get(name, (0, None))[0], pending.get(name, (0, None))[1], dead.get(name, 0)
            )
            for name in sorted(names)
        }

    def history(self, receiver: str | None = None, limit: int = 50) -> list[Entry]:
        """The newest rows (pending and delivered), newest first."""
        return self._listing(Entry, "outbox", receiver, "id DESC LIMIT ?", (limit,))

    def dead_letters(self, receiver: str | None = None) -> list[DeadLetter]:
        """Every dead-lettered row, oldest failure first."""
        return self._listing(DeadLetter, "dead_letter", receiver, "failed_at, id", ())

    def _listing(
        self,
        cls: type[_Listed],
        table: Literal["outbox", "dead_letter"],
        receiver: str | None,
        order: str,
        args: tuple[Any, ...],
    ) -> list[_Listed]:
        """Rows of ``table`` (of one receiver, or all) as ``cls``, in ``order``.

        Each field of ``cls`` is the column of its name, but ``alertnames``: the
        alert names read from the payload (``?`` for a payload that cannot be read).
        """
        where = " WHERE receiver=?" if receiver is not None else ""
        rows = self._conn().execute(
            f"SELECT * FROM {table}{where} ORDER BY {order}",
            ((receiver,) if receiver is not None else ()) + args,
        )
        names = [f.name for f in dataclasses.fields(cls) if f.name != "alertnames"]
        return [
            cls(**{n: r[n] for n in names}, alertnames=_safe_alertnames(r["payload"])) for r in rows
        ]

    def retry(self, ids: Sequence[int] | None = None) -> int:
        """Move dead letters back to the queue (all when ``ids`` is None), due now.

        Their attempt count and age start again from zero. Returns how many moved.
        """
        conn = self._conn()
        now = self.clock()
        with self._tx(conn):
            if ids is None:
                chosen = [int(r[0]) for r in conn.execute("SELECT id FROM dead_letter")]
            else:
                chosen = [
                    int(r[0])
                    for i in ids
                    for r in conn.execute("SELECT id FROM dead_letter WHERE id=?", (i,))
                ]
            for rid in chosen:
                conn.execute(
                    "INSERT INTO outbox (id, receiver, integration, idempotency_key, state, "
                    "status, payload, created, attempts, next_attempt, last_error) SELECT id, "
                    "receiver, integration, idempotency_key, 'pending', status, payload, ?, 0, "
                    "?, 'retried by operator: ' || reason FROM dead_letter WHERE id=?",
                    (now, now, rid),
                )
                conn.execute("DELETE FROM dead_letter WHERE id=?", (rid,))
        for e in self._wake.values():
            e.set()
        return len(chosen)

    def breaker_state(self, receiver: str, integration: str) -> str:
        """The circuit breaker state of one integration at the outbox clock."""
        return self._breakers[(receiver, integration)].state(self.clock())


def _safe_alertnames(payload: str) -> str:
    try:
        return _alertnames(decode_notification(payload))
    except (ValueError, TypeError, KeyError):
        return "?"
