"""Prometheus pull source: each rule's PromQL, evaluated on the rule group's interval.

A rule that names this source sets ``query:`` instead of ``selector:``; the daemon
hands every such rule to the source as a :class:`~aiops.pipeline.source.QuerySpec`. Each answer
becomes a :class:`~aiops.types.Batch` for that rule only (``Batch.rule``), one point per
series per evaluation time; a series is named by its ``__name__`` label or, when the
query drops it (``rate(...)``, ``sum by``), by the rule's alert name.

Evaluation times are multiples of ``step`` (the rule's interval unless set), shifted
back by ``offset``. Every evaluation is a range query over the times not fetched yet
(after a normal interval: one time; after an outage: all the missed ones, in chunks of
at most ``max_points_per_query`` times), so a catch-up sees exactly what live
evaluation would have seen, at the same times.

Scheduling: APScheduler's BackgroundScheduler runs one job per rule (never two at once
for a rule, missed runs coalesced) in a pool of ``max_workers`` threads. Jobs run the
queries and queue their answers; ``next_batch()`` only takes from that queue and never
waits. A rule with answers waiting (:data:`MAX_PENDING_PER_RULE`) fetches nothing more
until the daemon has taken them, which bounds memory when the daemon is slow.

Position: ``snapshot()`` is ``{"rules": {rule key: last evaluation time handed out by
next_batch()}, "queries": {rule key: hash of its query}}``, in unix seconds. Answers
fetched but not handed out are not in it, so a restart fetches them again. A rule
whose query changed since the checkpoint starts afresh, as a new rule does. On a
resume, each rule continues after its stored time; when that is older than
``max_catch_up``, the older part is skipped (logged). A rule without a stored time
(first start, or a rule added since) starts ``history`` back, so its detector learns
from the past before it scores the present.

Failures are per rule: an unreachable or slow Prometheus (``timeout``), an HTTP error,
or a PromQL error (HTTP 400 ``bad_data``) marks that rule failing; it is retried after
a back-off (1 s, doubling, at most ``max_backoff``; in between its interval runs are
skipped) and continues from where it stopped, so nothing is skipped. Other rules are
not affected. ``problems()`` lists the failing rules (the daemon shows them in
``/healthz`` as ``degraded``); ``next_batch()`` raises
:class:`~aiops.pipeline.source.SourceError` only when every rule is failing and nothing is
queued (Prometheus is down), so the daemon reports the source as ``failing``.

History (backtests): ``history(start, end)`` returns a :class:`PrometheusHistory`, a
finite source that evaluates every rule at the evaluation times live evaluation would
have used in ``[start, end)`` (never later than now minus ``offset``), chunked like a
catch-up, one range query per ``next_batch()``; the first failed query raises
:class:`QueryError` naming the rule. No scheduler runs.

Secrets: ``password_env`` / ``password_file`` and ``token_env`` / ``token_file`` are
read at each request (a file is re-read when it changes, so rotated Kubernetes tokens
work); a missing one fails the queries with a message saying which.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import requests
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aiops import __version__
from aiops.config.models import Duration, PositiveDuration
from aiops.pipeline.source import QuerySpec, Source, SourceError
from aiops.secrets import Secret, SecretError
from aiops.timeutil import format_duration, to_rfc3339
from aiops.types import Batch, SeriesKey

__all__ = [
    "MAX_PENDING_PER_RULE",
    "RETRY_BASE",
    "PrometheusHistory",
    "PrometheusSource",
    "QueryError",
]

log = logging.getLogger(__name__)

#: Answers of one rule waiting for ``next_batch()`` before the rule stops fetching.
MAX_PENDING_PER_RULE = 4
#: First retry of a failed evaluation after this many seconds, then doubling.
RETRY_BASE = 1.0
#: Prometheus refuses range queries of more than 11,000 points per series.
PROMETHEUS_MAX_POINTS = 11_000
_CONNECT_TIMEOUT = 5.0

# APScheduler logs every job run at INFO ("Running job ...", "executed successfully");
# one line per rule per interval drowns the daemon's own log.
logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)


class QueryError(SourceError):
    """A query failed: Prometheus unreachable, slow, or the PromQL refused."""


class PrometheusSource(Source):
    """Evaluates the rules' PromQL on their intervals; see the module docstring.

    Cost: one HTTP request per rule per interval (more while catching up); answers are
    parsed from JSON (about 1 µs per point) in the scheduler's threads.
    """

    accepts_queries = True

    class Config(BaseModel):
        """Settings of a ``type: prometheus`` source."""

        model_config = ConfigDict(extra="forbid", frozen=True)

        url: str = Field(description="Base URL, e.g. http://prometheus:9090 (a path prefix ok).")
        timeout: PositiveDuration = Field(
            default=30.0, description="Per query; also sent to Prometheus as its timeout."
        )
        username: str | None = Field(default=None, description="Basic auth user.")
        password_env: str | None = Field(
            default=None, description="Basic auth: environment variable holding the password."
        )
        password_file: str | None = Field(
            default=None, description="Basic auth: file holding the password."
        )
        token_env: str | None = Field(
            default=None, description="Bearer token: environment variable holding it."
        )
        token_file: str | None = Field(default=None, description="Bearer token: file holding it.")
        ca_file: str | None = Field(default=None, description="CA bundle to verify the server.")
        cert_file: str | None = Field(default=None, description="Client certificate (mTLS).")
        key_file: str | None = Field(default=None, description="Key of the client certificate.")
        insecure_skip_verify: bool = Field(
            default=False, description="Do not verify the server certificate (tests only)."
        )
        step: PositiveDuration | None = Field(
            default=None,
            description="Spacing of evaluation times; default: the rule group's interval.",
        )
        offset: Duration = Field(
            default=0.0,
            description="Evaluate this far in the past, for data that arrives late "
            "(remote-written or federated); like Prometheus' query_offset.",
        )
        history: Duration = Field(
            default=0.0,
            description="On a rule's first start, evaluate this much history first (backfill, "
            "so its detector is trained when live scoring begins).",
        )
        max_catch_up: PositiveDuration = Field(
            default=6 * 3600.0,
            description="After downtime, fill at most this much of the gap (the rest is "
            "skipped, with a warning).",
        )
        max_points_per_query: int = Field(
            default=10_000,
            ge=1,
            le=PROMETHEUS_MAX_POINTS,
            description="Evaluation times per range query while catching up and in backtests.",
        )
        max_backoff: PositiveDuration = Field(
            default=120.0, description="Longest wait before retrying a failing rule."
        )
        max_workers: int = Field(default=4, ge=1, le=64, description="Concurrent queries.")

        @field_validator("url")
        @classmethod
        def _check_url(cls, value: str) -> str:
            if not value.startswith(("http://", "https://")) or len(value.split("://", 1)[1]) < 1:
                raise ValueError(f'must be an http:// or https:// URL, got "{value}"')
            return value.rstrip("/")

        @model_validator(mode="after")
        def check_auth(self) -> PrometheusSource.Config:
            """Check that the auth and TLS settings are complete and not contradictory."""
            problems = []
            if self.password_env and self.password_file:
                problems.append("give password_env or password_file, not both")
            if self.token_env and self.token_file:
                problems.append("give token_env or token_file, not both")
            has_password = bool(self.password_env or self.password_file)
            if has_password and not self.username:
                problems.append("password_env/password_file need username")
            if self.username and not has_password:
                problems.append("username needs password_env or password_file")
            if self.username and (self.token_env or self.token_file):
                problems.append("use basic auth (username) or a bearer token, not both")
            if bool(self.cert_file) != bool(self.key_file):
                problems.append("cert_file and key_file go together")
            if problems:
                raise ValueError("; ".join(problems))
            return self

    def __init__(
        self,
        source_id: str,
        config: Config,
        *,
        queries: Sequence[QuerySpec] = (),
        resume: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source_id = source_id
        self.config = config
        self.clock = clock
        positions, hashes = _parse_resume(source_id, resume)
        self._rules: dict[str, _RuleState] = {}
        for spec in queries:
            if spec.rule in self._rules:
                raise ValueError(f"prometheus source {source_id!r}: rule {spec.rule} given twice")
            start = positions.get(spec.rule)
            changed = spec.rule in hashes and hashes[spec.rule] != _query_hash(spec.query)
            if start is not None and changed:
                log.info(
                    "source %s, rule %s: query changed since the checkpoint; it starts "
                    "afresh (history=%s)",
                    source_id,
                    spec.rule,
                    format_duration(config.history),
                )
                start = None
            self._rules[spec.rule] = _RuleState(
                spec=spec,
                name=spec.rule.rsplit("/", 1)[-1],
                step=config.step or spec.interval,
                fetched=start,
                emitted=start,
            )
        dropped = sorted(set(positions) - set(self._rules))
        if dropped:
            log.info("source %s: positions of rules no longer configured: %s", source_id, dropped)
        self._client = _Client(config)
        self._lock = threading.Lock()
        self._queue: deque[_Answer] = deque()
        self._scheduler: Any = None
        self._closed = False

    # -- the contract -----------------------------------------------------------------

    def next_batch(self) -> Batch:
        """The next queued answer (one rule's points), or an empty batch; never waits.

        Raises :class:`~aiops.pipeline.source.SourceError` when every rule is failing and
        nothing is queued.
        """
        if self._scheduler is None and not self._closed:
            self._start()
        with self._lock:
            while self._queue:
                answer = self._queue.popleft()
                st = self._rules[answer.rule]
                st.pending -= 1
                st.emitted = answer.end
                if answer.batch:
                    return answer.batch
            if self._rules and all(st.failures for st in self._rules.values()):
                last = max(self._rules.values(), key=lambda s: s.failed_at)
                raise SourceError(
                    f"all {len(self._rules)} queries failing; last error ({last.spec.rule}): "
                    f"{last.last_error}"
                )
        return Batch()

    def snapshot(self) -> dict[str, Any]:
        """``{"rules": {rule: last evaluation time emitted}, "queries": {rule: hash}}``.

        Times are unix seconds. The hash of each rule's query lets a resume tell a
        changed query (which starts afresh, with ``history``) from an unchanged one.
        """
        with self._lock:
            emitted = {k: st.emitted for k, st in self._rules.items() if st.emitted is not None}
        return {
            "rules": emitted,
            "queries": {k: _query_hash(self._rules[k].spec.query) for k in emitted},
        }

    def problems(self) -> dict[str, str]:
        """The rules whose last evaluation failed, with the error (for health)."""
        with self._lock:
            return {
                k: f"{st.failures} failed evaluation(s) in a row: {st.last_error}"
                for k, st in self._rules.items()
                if st.failures
            }

    def close(self) -> None:
        """Stop the scheduler (queries in flight finish in the background) and the session."""
        with self._lock:
            self._closed = True
            scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        self._client.close()

    # -- history ------------------------------------------------------------------------

    def fetch_history(
        self, query: str, start: float, end: float, step: float, *, name: str = "value"
    ) -> Batch:
        """Evaluate ``query`` at ``start, start + step, ... <= end`` (unix seconds), now.

        For training batch models and for backtests: one synchronous range query per
        ``max_points_per_query`` times; points come in time order. Series without a
        ``__name__`` are called ``name``. Raises :class:`QueryError` on any failure.
        """
        if step <= 0 or end < start:
            raise ValueError(f"need step > 0 and start <= end, got {start}, {end}, {step}")
        parts = [
            _to_batch(self._client.query_range(query, t, c_end, step), name)
            for t, c_end in _chunks(start, end, step, self.config.max_points_per_query)
        ]
        return _concat(parts)

    def history(self, start: float, end: float) -> PrometheusHistory:
        """The rules' answers over ``[start, end)``, as a finite source (backtests).

        See :class:`PrometheusHistory`. The live scheduler is not started; closing the
        history closes this source.
        """
        if not end > start:
            raise ValueError(f"need start < end, got {start}, {end}")
        return PrometheusHistory(self, start, end)

    # -- scheduling (scheduler threads below) -------------------------------------------

    def _start(self) -> None:
        if not self._rules:
            log.info("source %s: no rule queries it; nothing to evaluate", self.source_id)
            self._scheduler = _NoScheduler()
            return
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(self.config.max_workers)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        now = datetime.now(UTC)
        for key, st in self._rules.items():
            scheduler.add_job(
                self._evaluate,
                IntervalTrigger(seconds=st.spec.interval, timezone=UTC),
                args=[key],
                id=key,
                name=f"{self.source_id}:{key}",
                next_run_time=now,
            )
        scheduler.start()
        self._scheduler = scheduler
        log.info(
            "source %s: evaluating %d rule(s) against %s",
            self.source_id,
            len(self._rules),
            self.config.url,
        )

    def _evaluate(self, key: str) -> None:
        """One run of a rule's job: fetch every evaluation time due, in order."""
        with self._lock:
            st = self._rules[key]
            now = time.monotonic()
            if self._closed or st.busy or st.pending >= MAX_PENDING_PER_RULE or now < st.retry_at:
                return
            st.busy = True  # the retry job and the interval job never overlap
            since = st.fetched
        try:
            self._fetch_due(st, since)
        finally:
            with self._lock:
                st.busy = False

    def _fetch_due(self, st: _RuleState, since: float | None) -> None:
        cfg, key, step = self.config, st.spec.rule, st.step
        end = _align_down(self.clock() - cfg.offset, step)
        if since is None:
            start = _align_down(end - cfg.history, step)
        else:
            # The first evaluation time after the stored one (which sits on the grid of
            # `step` unless the step changed since).
            start = _align_up(since + 0.001, step)
            oldest = _align_up(end - cfg.max_catch_up, step)
            if start < oldest:
                log.warning(
                    "source %s, rule %s: %d evaluation times from %s to %s skipped "
                    "(max_catch_up=%s)",
                    self.source_id,
                    key,
                    round((oldest - start) / step),
                    to_rfc3339(start),
                    to_rfc3339(oldest - step),
                    format_duration(cfg.max_catch_up),
                )
                start = oldest
        for t, c_end in _chunks(start, end, step, cfg.max_points_per_query):
            try:
                result = self._client.query_range(st.spec.query, t, c_end, step)
                batch = _to_batch(result, st.name, rule=key)
            except QueryError as exc:
                self._failed(st, str(exc))
                return
            with self._lock:
                if self._closed:
                    return
                self._queue.append(_Answer(key, batch, c_end))
                st.fetched = c_end
                st.pending += 1
                if st.failures:
                    log.info(
                        "source %s, rule %s: works again after %d failures",
                        self.source_id,
                        key,
                        st.failures,
                    )
                    st.failures, st.last_error, st.retry_at = 0, "", 0.0
                if st.pending >= MAX_PENDING_PER_RULE:
                    return

    def _failed(self, st: _RuleState, error: str) -> None:
        """Record a failure and schedule the retry: 1 s, doubling, at most max_backoff.

        Interval runs before the retry time are skipped; the retry is a one-off job,
        so a rule evaluated hourly is not left failing for an hour by one timeout.
        """
        with self._lock:
            st.failures += 1
            st.last_error = error
            st.failed_at = time.monotonic()
            delay = min(self.config.max_backoff, RETRY_BASE * 2 ** min(st.failures - 1, 30))
            st.retry_at = st.failed_at + delay
            failures = st.failures
            scheduler = self._scheduler
        if scheduler is not None and not self._closed:
            try:
                scheduler.add_job(
                    self._evaluate,
                    "date",
                    run_date=datetime.now(UTC) + timedelta(seconds=delay),
                    args=[st.spec.rule],
                    id=f"{st.spec.rule}#retry",
                    name=f"{self.source_id}:{st.spec.rule} (retry)",
                    replace_existing=True,
                )
            except Exception as exc:  # shut down meanwhile: the source is closing
                log.debug("no retry scheduled for %s: %s", st.spec.rule, exc)
        if failures == 1 or failures % 10 == 0:
            log.warning(
                "source %s, rule %s: evaluation failed (%d in a row; next try in %.0fs): %s",
                self.source_id,
                st.spec.rule,
                failures,
                delay,
                error,
            )


class PrometheusHistory(Source):
    """The rules of a :class:`PrometheusSource` evaluated over ``[start, end)``; finite.

    Made by :meth:`PrometheusSource.history`, for backtests. Each rule is evaluated at
    the multiples of its step (the source's ``step``, else the group's interval) from
    ``start`` to before ``end``, and never after now minus ``offset``: the times, and so
    the series and points, live evaluation would have used. One range query per
    ``next_batch()`` call, of at most ``max_points_per_query`` times (Prometheus
    refuses more than 11,000 points per series); the rule least far along goes next,
    so rules advance through time together. A failed query raises :class:`QueryError`
    naming the rule and its query; nothing is retried or skipped.

    ``snapshot()`` has the live source's shape (last time emitted per rule);
    ``progress`` is the share of the evaluation times fetched.
    """

    def __init__(self, parent: PrometheusSource, start: float, end: float) -> None:
        self.source_id = parent.source_id
        self._parent = parent
        self._client = parent._client
        self.start, self.end = start, end
        now = parent.clock() - parent.config.offset
        self._rules: list[_HistoryRule] = []
        for st in parent._rules.values():
            first = _align_up(start, st.step)
            # the last evaluation time before `end` that live evaluation has reached
            last = min(_round(_align_up(end, st.step) - st.step), _align_down(now, st.step))
            chunks = _chunks(first, last, st.step, parent.config.max_points_per_query)
            self._rules.append(
                _HistoryRule(st.spec, st.name, st.step, first, last, chunks, next(chunks, None))
            )

    def next_batch(self) -> Batch:
        """The next chunk of the rule least far along; empty once exhausted."""
        todo = [r for r in self._rules if r.chunk is not None]
        if not todo:
            return Batch()
        r = min(todo, key=lambda x: x.chunk[0] if x.chunk else math.inf)
        assert r.chunk is not None
        t, c_end = r.chunk
        try:
            result = self._client.query_range(r.spec.query, t, c_end, r.step)
            batch = _to_batch(result, r.name, rule=r.spec.rule)
        except QueryError as exc:
            raise QueryError(f"rule {r.spec.rule} (query {r.spec.query!r}): {exc}") from None
        r.emitted = c_end
        r.chunk = next(r.chunks, None)
        return batch

    def snapshot(self) -> dict[str, Any]:
        """``{"rules": {rule: last evaluation time emitted}, "queries": {rule: hash}}``."""
        return {
            "rules": {r.spec.rule: r.emitted for r in self._rules if r.emitted is not None},
            "queries": {
                r.spec.rule: _query_hash(r.spec.query) for r in self._rules if r.emitted is not None
            },
        }

    @property
    def exhausted(self) -> bool:
        """True once every rule is evaluated up to the end of the range."""
        return all(r.chunk is None for r in self._rules)

    @property
    def progress(self) -> float:
        """The share of all rules' evaluation times fetched so far."""
        total = sum(_count(r.first, r.last, r.step) for r in self._rules)
        left = sum(_count(r.chunk[0], r.last, r.step) for r in self._rules if r.chunk)
        return 1.0 - left / total if total else 1.0

    def close(self) -> None:
        """Close the source this history came from."""
        self._parent.close()


@dataclass
class _HistoryRule:
    spec: QuerySpec
    name: str
    step: float
    first: float
    last: float
    chunks: Iterator[tuple[float, float]]
    chunk: tuple[float, float] | None  # the next range query, None when done
    emitted: float | None = None


@dataclass
class _RuleState:
    spec: QuerySpec
    name: str
    step: float
    fetched: float | None
    emitted: float | None
    failures: int = 0
    last_error: str = ""
    failed_at: float = 0.0
    retry_at: float = 0.0
    pending: int = 0
    busy: bool = False


@dataclass(frozen=True)
class _Answer:
    rule: str
    batch: Batch
    end: float


class _NoScheduler:
    def shutdown(self, wait: bool = False) -> None:
        pass


# -- HTTP ---------------------------------------------------------------------------------


class _Client:
    """Range queries over HTTP with the configured auth and TLS (thread-safe)."""

    def __init__(self, config: PrometheusSource.Config) -> None:
        self.config = config
        self.url = f"{config.url}/api/v1/query_range"
        self._session = requests.Session()
        self._session.headers["User-Agent"] = f"aiopsd/{__version__}"
        if config.insecure_skip_verify:
            self._session.verify = False
        elif config.ca_file:
            self._session.verify = config.ca_file
        if config.cert_file and config.key_file:
            self._session.cert = (config.cert_file, config.key_file)
        self._password = (
            Secret("password", config.password_env, config.password_file)
            if config.username
            else None
        )
        self._token = (
            Secret("token", config.token_env, config.token_file)
            if config.token_env or config.token_file
            else None
        )

    def close(self) -> None:
        self._session.close()

    def query_range(self, query: str, start: float, end: float, step: float) -> list[Any]:
        """The ``result`` of a range query (a matrix), or :class:`QueryError`."""
        timeout = self.config.timeout
        form = {
            "query": query,
            "start": _fmt(start),
            "end": _fmt(end),
            "step": _fmt(step),
            "timeout": _fmt(timeout),
        }
        headers = {}
        auth = None
        try:
            if self._token is not None:
                headers["Authorization"] = f"Bearer {self._token.value()}"
            if self._password is not None and self.config.username:
                auth = (self.config.username, self._password.value())
        except SecretError as exc:
            raise QueryError(str(exc)) from None
        try:
            # POST keeps long PromQL out of URLs (and out of proxies' access logs).
            resp = self._session.post(
                self.url,
                data=form,
                headers=headers,
                auth=auth,
                timeout=(min(_CONNECT_TIMEOUT, timeout), timeout),
            )
        except requests.Timeout:
            raise QueryError(f"no answer from {self.config.url} within {timeout:g}s") from None
        except requests.RequestException as exc:
            raise QueryError(f"cannot reach {self.config.url}: {_short(exc)}") from None
        try:
            doc = resp.json()
        except ValueError:
            doc = None
        if resp.status_code != 200 or not isinstance(doc, dict) or doc.get("status") != "success":
            if isinstance(doc, dict) and doc.get("error"):
                detail = f"{doc.get('errorType', 'error')}: {doc['error']}"
            elif "html" in resp.headers.get("Content-Type", ""):  # a proxy's error page
                detail = resp.reason or "error"
            else:
                detail = " ".join(resp.text.split())[:200] or resp.reason or "error"
            raise QueryError(f"HTTP {resp.status_code} {detail}")
        data = doc.get("data") or {}
        if data.get("resultType") not in ("matrix", None):
            raise QueryError(f"unexpected result type {data.get('resultType')!r}")
        result = data.get("result") or []
        if not isinstance(result, list):
            raise QueryError("malformed answer: result is not a list")
        return result


def _short(exc: Exception) -> str:
    text = str(exc)
    # urllib3 nests the reason deep in its message; the last part says what happened.
    for marker in ("Failed to establish a new connection: ", "Caused by "):
        if marker in text:
            text = text.rsplit(marker, 1)[-1]
    return text.strip("()'\" ")[:300]


# -- conversion ---------------------------------------------------------------------------


def _to_batch(result: list[Any], default_name: str, rule: str = "") -> Batch:
    """A matrix as one batch, in time order (series order within one time)."""
    keys: list[SeriesKey] = []
    stamps: list[np.ndarray[Any, Any]] = []
    values: list[np.ndarray[Any, Any]] = []
    counts: list[int] = []
    try:
        for item in result:
            metric = item.get("metric") or {}
            pairs = item.get("values") or []
            if not pairs:  # native histograms ("histograms") are not scored
                continue
            keys.append(SeriesKey.of(metric.get("__name__") or default_name, metric))
            stamps.append(np.fromiter((p[0] for p in pairs), dtype=np.float64, count=len(pairs)))
            values.append(np.array([p[1] for p in pairs], dtype=np.float64))
            counts.append(len(pairs))
    except (AttributeError, TypeError, ValueError, IndexError) as exc:
        raise QueryError(f"malformed answer: {exc}") from None
    if not keys:
        return Batch(rule=rule)
    series = np.repeat(np.arange(len(keys), dtype=np.int64), counts)
    ts = np.concatenate(stamps)
    vs = np.concatenate(values)
    order = np.argsort(ts, kind="stable")
    return Batch(keys=keys, series=series[order], timestamps=ts[order], values=vs[order], rule=rule)


def _concat(parts: list[Batch]) -> Batch:
    parts = [p for p in parts if p.n_points]
    if len(parts) <= 1:
        return parts[0] if parts else Batch()
    index: dict[SeriesKey, int] = {}
    series = []
    for p in parts:
        remap = np.array([index.setdefault(k, len(index)) for k in p.keys], dtype=np.int64)
        series.append(remap[p.series])
    return Batch(
        keys=list(index),
        series=np.concatenate(series),
        timestamps=np.concatenate([p.timestamps for p in parts]),
        values=np.concatenate([p.values for p in parts]),
    )


# -- times --------------------------------------------------------------------------------


def _chunks(
    start: float, end: float, step: float, max_points: int
) -> Iterator[tuple[float, float]]:
    """``(first, last)`` evaluation times of each range query covering ``start..end``.

    Every time ``start + k * step <= end`` falls in exactly one chunk of at most
    ``max_points`` times (Prometheus refuses more than 11,000 points per series).
    """
    chunk = step * (max_points - 1)
    t = start
    while t <= end:
        c_end = _round(min(end, t + chunk))
        yield t, c_end
        t = _round(c_end + step)


def _count(first: float, last: float, step: float) -> int:
    """How many evaluation times ``first, first + step, ... <= last``."""
    return max(0, round((last - first) / step) + 1) if first <= last else 0


def _round(t: float) -> float:
    """Milliseconds are Prometheus' resolution; rounding keeps float steps exact."""
    return round(t, 3)


def _align_down(t: float, step: float) -> float:
    return _round(math.floor(round(t / step, 6)) * step)


def _align_up(t: float, step: float) -> float:
    return _round(math.ceil(round(t / step, 6)) * step)


def _fmt(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".")


def _query_hash(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()[:16]


def _parse_resume(
    source_id: str, resume: dict[str, Any] | None
) -> tuple[dict[str, float], dict[str, str]]:
    if resume is None:
        return {}, {}
    rules = resume.get("rules") if isinstance(resume, dict) else None
    hashes = resume.get("queries", {}) if isinstance(resume, dict) else None
    if (
        not isinstance(rules, dict)
        or not isinstance(hashes, dict)
        or not set(resume) <= {"rules", "queries"}
    ):
        raise ValueError(
            f"prometheus source {source_id!r}: resume state must be "
            f'{{"rules": {{rule: unix seconds}}, "queries": {{rule: hash}}}}, got {resume!r}'
        )
    out: dict[str, float] = {}
    for key, value in rules.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(
                f"prometheus source {source_id!r}: resume time of rule {key} must be "
                f"unix seconds, got {value!r}"
            )
        out[str(key)] = float(value)
    return out, {str(k): str(v) for k, v in hashes.items()}
