"""Operator feedback on alerts: what people answered, kept per series, applied by the loop.

Receivers with buttons (Slack) let people answer an alert. Four answers exist
(:data:`ACTIONS`):

- ``acknowledge``: recorded (who, when), and the incident tools that were sent the
  alert (PagerDuty, Opsgenie) are told it is acknowledged; detection does not change;
- ``silence``: a silence of the alert's labels (every label, ``=``) for
  :data:`SILENCE_SECONDS`, applied by the router like a configured silence;
- ``false_positive``: the series' alert threshold is raised so that the same score no
  longer alerts: to ``1 - (1 - score) / FALSE_POSITIVE_FACTOR`` (ten times rarer, in
  the score's tail-rate meaning), never lowered;
- ``expected_change``: the series is re-baselined: its detector state starts afresh
  and relearns the new normal.

Everything lives in one SQLite file in the state directory (:class:`FeedbackStore`,
WAL, schema version in ``PRAGMA user_version``): the alerts receivers showed (so that a
button needs to carry only the alert's fingerprint), every answer, the runtime
silences, the raised thresholds and the re-baselines not yet covered by a checkpoint.
The HTTP handler only records; the data loop applies (:class:`FeedbackApplier`), so
engine state is never touched from another thread. On start the applier applies the
silences and thresholds again, and the re-baselines the last checkpoint does not
cover.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from aiops.alerting.notify import Alert

__all__ = [
    "ACTIONS",
    "FALSE_POSITIVE_FACTOR",
    "FEEDBACK_FILE",
    "SILENCE_SECONDS",
    "Feedback",
    "FeedbackApplier",
    "FeedbackStore",
    "KnownAlert",
    "NullFeedback",
    "SlackInteractions",
    "action_id",
    "parse_action_id",
    "raised_threshold",
]

log = logging.getLogger(__name__)

#: The answers a person can give to an alert.
ACTIONS = ("acknowledge", "silence", "false_positive", "expected_change")
Action = Literal["acknowledge", "silence", "false_positive", "expected_change"]
#: File name of the store inside the state directory.
FEEDBACK_FILE = "feedback.sqlite"
#: Length of the silence the "Silence 1 h" button creates.
SILENCE_SECONDS = 3600.0
#: A false positive makes its score this many times rarer than needed to alert.
FALSE_POSITIVE_FACTOR = 10.0
#: Alerts unseen for this long are forgotten by the store (their buttons stop working).
KNOWN_ALERT_RETENTION = 30 * 86400.0
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    fingerprint TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    series TEXT NOT NULL,
    labels TEXT NOT NULL,
    score REAL,
    seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    action TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    rule TEXT NOT NULL,
    series TEXT NOT NULL,
    user TEXT NOT NULL,
    detail TEXT NOT NULL,
    applied REAL,
    checkpointed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS silences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    matchers TEXT NOT NULL,
    starts_at REAL NOT NULL,
    ends_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS thresholds (
    rule TEXT NOT NULL,
    series TEXT NOT NULL,
    threshold REAL NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (rule, series)
);
"""


def raised_threshold(score: float, current: float) -> float:
    """The threshold after a false positive at ``score``: ten times rarer, never lower.

    >>> raised_threshold(0.999, 0.99)
    0.9999
    >>> raised_threshold(0.5, 0.99)
    0.99
    """
    if not math.isfinite(score):
        return current
    wanted = 1.0 - (1.0 - min(max(score, 0.0), 1.0)) / FALSE_POSITIVE_FACTOR
    return max(current, round(wanted, 12))


@dataclass(frozen=True)
class KnownAlert:
    """An alert a receiver showed, as a button needs it back."""

    fingerprint: str
    rule: str
    series: str
    labels: Mapping[str, str]
    score: float


@dataclass(frozen=True)
class Feedback:
    """One recorded answer."""

    id: int
    at: float
    action: str
    fingerprint: str
    rule: str
    series: str
    user: str
    detail: Mapping[str, Any]
    applied: float | None


class FeedbackStore:
    """The SQLite file of answers, silences, raised thresholds and known alerts.

    Safe to use from several threads (one connection per thread, WAL, busy time-out).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._conn()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"{self.path}: feedback store schema {version} is newer than "
                f"this release's {SCHEMA_VERSION}; not opened"
            )
        with conn:
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            # Collect what no one needs any more: ended silences, old settled answers.
            now = time.time()
            conn.execute("DELETE FROM silences WHERE ends_at < ?", (now - 86400.0,))
            conn.execute(
                "DELETE FROM feedback WHERE at < ? AND applied IS NOT NULL "
                "AND (action != 'expected_change' OR checkpointed = 1)",
                (now - KNOWN_ALERT_RETENTION,),
            )

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- alerts shown --------------------------------------------------------------------

    def remember(self, alerts: Iterable[Alert], now: float | None = None) -> None:
        """Keep what a button on these alerts will need (and forget very old ones).

        The score kept is the firing one: a resolution's score (of the point that ended
        the alert) does not replace it.
        """
        now = time.time() if now is None else now
        rows = [
            (
                a.fingerprint,
                a.rule,
                a.series,
                json.dumps(dict(a.labels), sort_keys=True),
                a.score if a.status == "firing" and math.isfinite(a.score) else None,
                now,
            )
            for a in alerts
        ]
        conn = self._conn()
        with conn:
            conn.executemany(
                "INSERT INTO alerts (fingerprint, rule, series, labels, score, seen) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (fingerprint) DO UPDATE SET "
                "rule = excluded.rule, series = excluded.series, labels = excluded.labels, "
                "score = COALESCE(excluded.score, alerts.score), seen = excluded.seen",
                rows,
            )
            conn.execute("DELETE FROM alerts WHERE seen < ?", (now - KNOWN_ALERT_RETENTION,))

    def known(self, fingerprint: str) -> KnownAlert | None:
        """The alert with this fingerprint, if a receiver showed it recently."""
        row = (
            self._conn()
            .execute(
                "SELECT fingerprint, rule, series, labels, score FROM alerts WHERE fingerprint = ?",
                (fingerprint,),
            )
            .fetchone()
        )
        if row is None:
            return None
        score = float("nan") if row[4] is None else float(row[4])
        return KnownAlert(row[0], row[1], row[2], json.loads(row[3]), score)

    # -- answers -------------------------------------------------------------------------

    def record(
        self,
        action: Action,
        alert: KnownAlert,
        user: str,
        detail: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> int:
        """Record one answer (and its silence, for ``silence``); returns its id."""
        now = time.time() if now is None else now
        conn = self._conn()
        with conn:
            cur = conn.execute(
                "INSERT INTO feedback (at, action, fingerprint, rule, series, user, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    now,
                    action,
                    alert.fingerprint,
                    alert.rule,
                    alert.series,
                    user,
                    json.dumps(dict(detail or {}), sort_keys=True),
                ),
            )
            if action == "silence":
                matchers = sorted(alert.labels.items())
                conn.execute(
                    "INSERT INTO silences (matchers, starts_at, ends_at, created_by, comment) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        json.dumps(matchers),
                        now,
                        now + SILENCE_SECONDS,
                        user,
                        f"Slack: silence 1 h of alert {alert.fingerprint}",
                    ),
                )
        return int(cur.lastrowid or 0)

    def answers(self, fingerprint: str | None = None) -> list[Feedback]:
        """Recorded answers, oldest first (of one alert, if given)."""
        sql = (
            "SELECT id, at, action, fingerprint, rule, series, user, detail, applied FROM feedback"
        )
        args: tuple[Any, ...] = ()
        if fingerprint is not None:
            sql += " WHERE fingerprint = ?"
            args = (fingerprint,)
        rows = self._conn().execute(sql + " ORDER BY id", args).fetchall()
        return [
            Feedback(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]), r[8]) for r in rows
        ]

    def unapplied(self) -> list[Feedback]:
        """Answers the data loop has not applied yet, oldest first."""
        rows = (
            self._conn()
            .execute(
                "SELECT id, at, action, fingerprint, rule, series, user, detail, applied "
                "FROM feedback WHERE applied IS NULL ORDER BY id"
            )
            .fetchall()
        )
        return [
            Feedback(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]), r[8]) for r in rows
        ]

    def mark_applied(self, ids: Sequence[int], now: float | None = None) -> None:
        """Record that the loop applied these answers."""
        now = time.time() if now is None else now
        conn = self._conn()
        with conn:
            conn.executemany(
                "UPDATE feedback SET applied = ? WHERE id = ?", [(now, i) for i in ids]
            )

    def mark_checkpointed(self, before: float) -> None:
        """Re-baselines applied before ``before`` are in a checkpoint now."""
        conn = self._conn()
        with conn:
            conn.execute(
                "UPDATE feedback SET checkpointed = 1 WHERE action = 'expected_change' "
                "AND applied IS NOT NULL AND applied <= ?",
                (before,),
            )

    def rebaselines_not_checkpointed(self) -> list[Feedback]:
        """Applied re-baselines that no checkpoint covers yet (a restart applies them again)."""
        rows = (
            self._conn()
            .execute(
                "SELECT id FROM feedback WHERE action = 'expected_change' "
                "AND applied IS NOT NULL AND checkpointed = 0"
            )
            .fetchall()
        )
        ids = {r[0] for r in rows}
        return [f for f in self.answers() if f.id in ids]

    # -- what the router and the engine apply --------------------------------------------

    def silences(
        self, now: float | None = None
    ) -> list[tuple[list[tuple[str, str]], float, float]]:
        """Runtime silences not yet over: (label pairs, starts_at, ends_at)."""
        now = time.time() if now is None else now
        rows = (
            self._conn()
            .execute(
                "SELECT matchers, starts_at, ends_at FROM silences WHERE ends_at > ? ORDER BY id",
                (now,),
            )
            .fetchall()
        )
        return [([(k, v) for k, v in json.loads(r[0])], r[1], r[2]) for r in rows]

    def set_threshold(
        self, rule: str, series: str, threshold: float, now: float | None = None
    ) -> None:
        """Keep a raised threshold (the larger one wins)."""
        now = time.time() if now is None else now
        conn = self._conn()
        with conn:
            conn.execute(
                "INSERT INTO thresholds (rule, series, threshold, at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (rule, series) DO UPDATE SET "
                "threshold = MAX(thresholds.threshold, excluded.threshold), at = excluded.at",
                (rule, series, threshold, now),
            )

    def thresholds(self) -> dict[tuple[str, str], float]:
        """Every raised threshold, by (rule, series)."""
        rows = self._conn().execute("SELECT rule, series, threshold FROM thresholds").fetchall()
        return {(r[0], r[1]): float(r[2]) for r in rows}


class _Rule(Protocol):
    def series_index(self, series: str) -> int | None: ...
    def raise_threshold(self, index: int, threshold: float) -> float: ...
    def reset_series(self, indices: Sequence[int]) -> bool: ...
    def threshold_of(self, index: int) -> float: ...


class _Engine(Protocol):
    def rule(self, key: str) -> Any: ...


class _Router(Protocol):
    silences: list[Any]


class _Metrics(Protocol):
    def feedback(self, action: str, outcome: str) -> None: ...


class NullFeedback:
    """No feedback source (no interactivity endpoint configured): nothing to apply."""

    def start(self, engine: Any, router: Any) -> None:
        """Nothing to restore."""

    def apply(self, engine: Any, router: Any, *, force: bool = False) -> int:
        """Nothing to apply."""
        return 0

    def checkpointed(self, at: float) -> None:
        """Nothing to mark."""


class FeedbackApplier:
    """The data loop's side: applies recorded answers to the engine and the router.

    ``apply`` is cheap when nothing is new (one indexed query at most every
    ``poll_interval`` seconds). Every applied answer is logged on the ``aiops`` logger
    tree and counted (``aiops_feedback_total{action, outcome}``).
    """

    def __init__(
        self, store: FeedbackStore, *, metrics: Any = None, poll_interval: float = 1.0
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.poll_interval = poll_interval
        self._next_poll = 0.0
        self._silences: dict[tuple[Any, ...], Any] = {}  # what this applier added
        self._wake = threading.Event()
        #: Told ``(feedback, outcome)`` of each applied answer (the model history records it).
        self.on_applied: Callable[[Feedback, str], None] | None = None

    def wake(self) -> None:
        """Ask the next ``apply`` to look at once (the HTTP handler calls it)."""
        self._wake.set()

    def start(self, engine: _Engine, router: _Router) -> None:
        """After the checkpoint is loaded: silences, thresholds, re-baselines it lacks."""
        for (rule_key, series), threshold in self.store.thresholds().items():
            self._raise(engine, rule_key, series, threshold)
        for fb in self.store.rebaselines_not_checkpointed():
            self._reset(engine, fb.rule, fb.series)
            log.info(
                "feedback: re-baseline of %s %s applied again (after the checkpoint)",
                fb.rule,
                fb.series,
            )
        self._sync_silences(router)
        self.apply(engine, router, force=True)

    def apply(self, engine: _Engine, router: _Router, *, force: bool = False) -> int:
        """Apply new answers; returns how many."""
        now = time.monotonic()
        if not (force or self._wake.is_set() or now >= self._next_poll):
            return 0
        self._wake.clear()
        self._next_poll = now + self.poll_interval
        try:
            pending = self.store.unapplied()
            done: list[int] = []
            for fb in pending:
                try:
                    outcome = self._apply_one(engine, router, fb)
                except (ValueError, TypeError, KeyError, IndexError) as exc:
                    # One bad answer must neither stop the loop nor come back forever.
                    outcome = f"error: {type(exc).__name__}"
                log.info(
                    "feedback: %s on %s %s by %s: %s",
                    fb.action,
                    fb.rule,
                    fb.series,
                    fb.user,
                    outcome,
                )
                if self.metrics is not None:
                    self.metrics.feedback(fb.action, "applied" if outcome == "ok" else outcome)
                if self.on_applied is not None:
                    try:
                        self.on_applied(fb, outcome)
                    except Exception:  # a history that cannot be written loses no answer
                        log.exception("feedback %d: its observer failed", fb.id)
                done.append(fb.id)
            if pending:
                self.store.mark_applied(done)
            self._sync_silences(router)
        except sqlite3.Error as exc:
            log.error("feedback store %s: %s; answers wait", self.store.path, exc)
            return 0
        return len(done)

    def checkpointed(self, at: float) -> None:
        """The daemon wrote a checkpoint at ``at`` (wall clock): re-baselines are in it."""
        try:
            self.store.mark_checkpointed(at)
        except sqlite3.Error as exc:
            log.error("feedback store %s: %s", self.store.path, exc)

    def _apply_one(self, engine: _Engine, router: _Router, fb: Feedback) -> str:
        if fb.action == "false_positive":
            threshold = float(fb.detail.get("threshold", float("nan")))
            if not math.isfinite(threshold):
                return "no threshold"
            self.store.set_threshold(fb.rule, fb.series, threshold)
            return self._raise(engine, fb.rule, fb.series, threshold)
        if fb.action == "expected_change":
            return self._reset(engine, fb.rule, fb.series)
        if fb.action == "acknowledge":
            # A router that keeps no record of what it sent (the immediate one) has none.
            acknowledge = getattr(router, "acknowledge", None)
            if acknowledge is not None:
                acknowledge(fb.fingerprint, fb.user)
        return "ok"  # silence: synced below

    def _raise(self, engine: _Engine, rule_key: str, series: str, threshold: float) -> str:
        rt = engine.rule(rule_key)
        index = rt.series_index(series) if rt is not None else None
        if rt is None or index is None:
            return "unknown series"
        rt.raise_threshold(index, threshold)
        return "ok"

    def _reset(self, engine: _Engine, rule_key: str, series: str) -> str:
        rt = engine.rule(rule_key)
        index = rt.series_index(series) if rt is not None else None
        if rt is None or index is None:
            return "unknown series"
        return "ok" if rt.reset_series([index]) else "detector cannot reset one series"

    def _sync_silences(self, router: _Router) -> None:
        from aiops.alerting.routing import SilenceWindow
        from aiops.alerting.selector import Matcher

        now = time.time()
        ended = [k for k, w in self._silences.items() if w.ends_at <= now]
        for key in ended:  # the router's list must not only grow
            window = self._silences.pop(key)
            if window in router.silences:
                router.silences.remove(window)
        for pairs, starts, ends in self.store.silences(now):
            key = (tuple(pairs), starts, ends)
            if key in self._silences:
                continue
            try:
                matchers = tuple(Matcher(k, "=", v) for k, v in pairs)
            except ValueError as exc:  # a label name no matcher can hold
                log.warning("feedback: silence of %s not applied: %s", dict(pairs), exc)
                continue
            window = SilenceWindow(matchers, starts, ends)
            self._silences[key] = window
            router.silences.append(window)


#: Where a verified interaction's ``response_url`` may point (Slack's own host).
RESPONSE_URL_PREFIXES = ("https://hooks.slack.com/",)
#: Slack interaction payloads are small; anything larger is refused before reading.
MAX_INTERACTION_BYTES = 1 << 20
#: Slack's replay window: requests signed longer ago than this are refused.
MAX_REQUEST_AGE = 300.0
_ACTION_PREFIX = "aiops_"
_ANSWERED = {
    "acknowledge": "acknowledged",
    "silence": "silenced for 1 h",
    "false_positive": "marked as a false positive (the series' threshold is raised)",
    "expected_change": "marked as an expected change (the series is re-baselined)",
}


def action_id(action: str, n: int) -> str:
    """The Block Kit ``action_id`` of an answer button for the ``n``-th alert of a message.

    >>> action_id("silence", 2)
    'aiops_silence_2'
    >>> parse_action_id("aiops_false_positive_0")
    'false_positive'
    """
    return f"{_ACTION_PREFIX}{action}_{n}"


def parse_action_id(value: str) -> str | None:
    """The answer of an ``action_id`` made by :func:`action_id` (None for others)."""
    if not value.startswith(_ACTION_PREFIX):
        return None
    name, _, n = value[len(_ACTION_PREFIX) :].rpartition("_")
    return name if name in ACTIONS and n.isdigit() else None


class SlackInteractions:
    """``POST /slack/interactions``: Slack's interactivity requests for the alert buttons.

    Each request is verified first (``X-Slack-Signature``: HMAC-SHA256 of
    ``v0:{timestamp}:{body}`` with the app's signing secret, checked by slack-sdk's
    ``SignatureVerifier``; a ``X-Slack-Request-Timestamp`` more than
    :data:`MAX_REQUEST_AGE` away from now is refused), answered 401 when that fails and
    400 when the payload is not a ``block_actions`` one. A verified click is recorded in
    the :class:`FeedbackStore`, the data loop is woken to apply it, and the message is
    updated through the interaction's ``response_url`` (in a thread of its own, so the
    answer to Slack is immediate, as Slack wants it within 3 seconds).
    """

    http_path = "/slack/interactions"
    max_body_bytes = MAX_INTERACTION_BYTES
    #: Slack cannot send the listener's credentials; its signature is the check.
    http_authenticates = True

    def __init__(
        self,
        store: FeedbackStore,
        signing_secrets: Sequence[str],
        *,
        applier: FeedbackApplier | None = None,
        metrics: Any = None,
        response_url_prefixes: Sequence[str] = RESPONSE_URL_PREFIXES,
        clock: Any = time.time,
    ) -> None:
        try:
            from slack_sdk.signature import Clock, SignatureVerifier
        except ImportError as exc:
            raise ImportError("http.slack needs slack-sdk: pip install 'aiopsd[slack]'") from exc

        if not signing_secrets:
            raise ValueError("SlackInteractions needs at least one signing secret")
        self.store = store
        self.applier = applier
        self.metrics = metrics
        self.response_url_prefixes = tuple(response_url_prefixes)
        self.clock = clock

        class _Clock(Clock):
            def now(self) -> float:
                return float(clock())

        self._verifiers = [SignatureVerifier(s, clock=_Clock()) for s in signing_secrets]
        self._stopped = False
        self._threads: list[threading.Thread] = []

    def stop_receiving(self) -> None:
        """Refuse later requests (503)."""
        self._stopped = True

    def join(self, timeout: float = 5.0) -> None:
        """Wait for message updates in flight (tests, shutdown)."""
        for t in list(self._threads):
            t.join(timeout)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.slack_interaction(outcome)

    def handle_http(self, request: Any) -> Any:
        """Verify, record, answer; never raises for a bad request."""
        from aiops.service.http import HttpResponse, request_json

        if self._stopped:
            return HttpResponse(503, b"stopping\n")
        ts = request.headers.get("x-slack-request-timestamp", "")
        sig = request.headers.get("x-slack-signature", "")
        why = self._verify(request.body, ts, sig)
        if why == "bad payload":
            self._count("bad_payload")
            return HttpResponse(400, b"bad payload\n")
        if why:
            self._count(why.replace(" ", "_"))
            log.warning("slack interaction from %s refused: %s", request.remote_addr or "?", why)
            return HttpResponse(401, f"{why}\n".encode())
        try:
            form = dict(urllib.parse.parse_qsl(request.body.decode("utf-8"), strict_parsing=True))
            if form.get("ssl_check") == "1":
                return HttpResponse(200)
            payload = request_json(form["payload"])
            if not isinstance(payload, dict):
                raise ValueError("payload is not an object")
        except (UnicodeDecodeError, ValueError, KeyError) as exc:
            self._count("bad_payload")
            log.warning("slack interaction: unreadable payload: %s", type(exc).__name__)
            return HttpResponse(400, b"bad payload\n")
        if payload.get("type") != "block_actions":
            self._count("ignored")
            return HttpResponse(200)
        answers = []
        actions = payload.get("actions")
        for act in actions if isinstance(actions, list) else ():
            if isinstance(act, dict):
                answer = self._act(payload, act)
                if answer:
                    answers.append(answer)
        if answers:
            self._update_message(payload, answers)
        return HttpResponse(200)

    def _verify(self, body: bytes, ts: str, sig: str) -> str:
        if not ts or not sig:
            return "unsigned"
        try:
            age = abs(float(self.clock()) - int(ts))
        except ValueError:
            return "bad timestamp"
        if age > MAX_REQUEST_AGE:
            return "stale timestamp"
        try:
            body.decode("utf-8")  # slack-sdk's verifier decodes it and would raise
        except UnicodeDecodeError:
            return "bad payload"
        if not any(v.is_valid(body, ts, sig) for v in self._verifiers):
            return "bad signature"
        return ""

    def _act(self, payload: Mapping[str, Any], act: Mapping[str, Any]) -> str:
        action = parse_action_id(str(act.get("action_id", "")))
        if action is None:
            self._count("ignored")  # link buttons also call in; nothing to do
            return ""
        from aiops.service.http import request_json

        try:
            value = request_json(str(act.get("value", "")))
            fingerprint = str(value["fingerprint"])
        except (ValueError, KeyError, TypeError):
            self._count("bad_payload")
            return ""
        user_doc = payload.get("user")
        if not isinstance(user_doc, dict):
            user_doc = {}
        user = str(user_doc.get("username") or user_doc.get("name") or user_doc.get("id") or "?")
        alert = self.store.known(fingerprint)
        if alert is None:
            self._count("unknown_alert")
            log.warning(
                "slack interaction: %s on unknown alert %s by %s", action, fingerprint, user
            )
            return f"{action.replace('_', ' ')} by {user}: this alert is no longer known"
        detail: dict[str, Any] = {"via": "slack", "user_id": str(user_doc.get("id", ""))}
        if action == "false_positive":
            detail["score"] = alert.score
            detail["threshold"] = raised_threshold(alert.score, 0.0)
        self.store.record(action, alert, user, detail)  # type: ignore[arg-type]
        self._count(action)
        log.info("feedback: %s on %s %s by %s (recorded)", action, alert.rule, alert.series, user)
        if self.applier is not None:
            self.applier.wake()
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float(self.clock())))
        return f"{_ANSWERED[action].capitalize()} by {user} at {when}"

    def _update_message(self, payload: Mapping[str, Any], answers: Sequence[str]) -> None:
        url = str(payload.get("response_url") or "")
        if not url.startswith(self.response_url_prefixes):
            log.warning(
                "slack interaction: response_url outside %s; message not updated",
                ", ".join(self.response_url_prefixes),
            )
            return
        message = payload.get("message")
        if not isinstance(message, dict):
            message = {}
        given = message.get("blocks")
        blocks = [b for b in given if isinstance(b, dict)] if isinstance(given, list) else []
        n = sum(1 for b in blocks if str(b.get("block_id", "")).startswith("aiops_feedback_"))
        for k, text in enumerate(answers):
            blocks.append(
                {
                    "type": "context",
                    "block_id": f"aiops_feedback_{n + k}",
                    "elements": [{"type": "mrkdwn", "text": text[:3000]}],
                }
            )
        while len(blocks) > 50:  # Slack's limit: drop the oldest answers first
            old = [
                i
                for i, b in enumerate(blocks)
                if str(b.get("block_id", "")).startswith("aiops_feedback_")
            ]
            blocks.pop(old[0] if old else -1)
        doc = {
            "replace_original": True,
            "text": str(message.get("text") or "aiops alert")[:3000],
            "blocks": blocks,
        }

        def post() -> None:
            from slack_sdk.webhook import WebhookClient

            try:
                resp = WebhookClient(url, timeout=10, logger=_QUIET).send_dict(doc)
                if resp.status_code != 200:
                    log.warning("slack interaction: message update answered %d", resp.status_code)
            except Exception as exc:  # a failed update must not surface anywhere else
                log.warning("slack interaction: message update failed: %s", type(exc).__name__)

        t = threading.Thread(target=post, name="aiops-slack-response", daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()


# slack-sdk logs URLs (response_url holds a secret) at debug level: give it a logger of
# its own that never says anything below WARNING.
_QUIET = logging.getLogger("aiops.slack_sdk")
_QUIET.setLevel(logging.WARNING)
