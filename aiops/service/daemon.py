"""The daemon's main loop: poll sources, run the engine, route alerts, checkpoint.

One thread does the data path, so the order of points, scores, alerts and checkpoints is
simple to reason about: a checkpoint is taken between batches and covers exactly the
batches processed before it, together with the source positions after them. The loop
only takes the checkpoint's snapshot (cheap: copy-on-write of the rules' arrays,
:mod:`aiops.state.rulestate`); with ``background_checkpoints`` a writer thread writes
it, and a later turn of the loop commits the positions once it is durable.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from aiops.alerting.feedback import FeedbackApplier, NullFeedback
from aiops.alerting.notify import Alert, Notification
from aiops.models.lifecycle import ModelLifecycle, NoModels
from aiops.models.retrain import NoRetraining, Retraining
from aiops.pipeline.decoder import drop_bad_times
from aiops.pipeline.engine import Engine
from aiops.pipeline.faults import RuleFailure
from aiops.pipeline.source import Source
from aiops.service.http import HttpReceiver, Listener, NullListener
from aiops.service.memory import MemoryGuard
from aiops.service.metrics import NULL_METRICS, Metrics
from aiops.state.checkpoint import Checkpointer, CheckpointSnapshot
from aiops.types import Batch, LogRecord, Reject

__all__ = [
    "AlertRouter",
    "Daemon",
    "DeadLetterFile",
    "Delivery",
    "SourceHealth",
    "source_problems",
]

log = logging.getLogger(__name__)


class AlertRouter(Protocol):
    """What turns alert transitions into notifications.

    :class:`aiops.alerting.groups.Groups` (aggregation groups, flushed when due) or the
    immediate :class:`aiops.alerting.routing.Router`. ``route`` takes transitions and
    returns what is due at once; ``flush`` (every loop turn) what has come due since.
    ``silences`` may grow while running (answers from Slack buttons).
    """

    silences: list[Any]

    def route(self, alerts: Sequence[Alert]) -> list[Notification]:
        """Take alert transitions; return the notifications due now."""
        ...

    def flush(self) -> list[Notification]:
        """Notifications that came due since the last call (cheap when none did)."""
        ...

    def observe(self, data_time: float) -> None:
        """The data has reached ``data_time`` (a router on the data's clock moves on)."""
        ...

    def drain(self) -> list[Notification]:
        """Everything still waiting, at the end of a finite replay."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON for the checkpoint."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        ...


class Delivery(Protocol):
    """Where the data loop hands notifications.

    The durable outbox (:class:`aiops.alerting.outbox.Outbox`, whose workers deliver)
    or, in tests, the in-memory :class:`aiops.alerting.routing.Dispatcher`.

    ``submit`` must not wait for any receiver; ``pump`` is called once per loop turn;
    ``start`` after the checkpoint is loaded; ``close`` at shutdown.
    """

    results: Counter[str]

    def start(self) -> None:
        """Begin delivering (workers)."""

    def submit(self, notifications: Sequence[Notification]) -> object:
        """Take these notifications; return without waiting for a receiver."""

    def pump(self) -> None:
        """Called once per loop turn."""

    def flush(self, timeout: float = 10.0) -> bool:
        """Make what ``submit`` took durable; called before each checkpoint."""
        ...

    def close(self) -> None:
        """Stop delivering; keep what is pending."""


#: Size at which ``rejects.jsonl`` is rotated (``state.rejects_max_size``).
REJECTS_MAX_BYTES = 64 << 20
#: Rotated rejects files kept besides the current one (``state.rejects_keep``).
REJECTS_KEEP = 4
#: Raw bytes kept of one rejected item; the rest is cut and its full length noted.
REJECT_RAW_BYTES = 64 << 10
#: Rejects held in memory while the file cannot be written (disk full); beyond, counted.
REJECTS_PENDING = 100_000


class DeadLetterFile:
    """Keeps rejected input aside as JSON lines: reason, detail, origin, raw bytes.

    Bounded on disk: when the file passes ``max_bytes`` it is renamed ``rejects.jsonl.1``
    (older ones shift to ``.2`` ... ``.{keep}``, the oldest is deleted), so the rejects
    take at most about ``(keep + 1) * max_bytes``. Each item's raw bytes are cut at
    ``raw_bytes`` (``raw_truncated`` then holds the full length). When a write fails
    (disk full) the lines wait in memory (up to :data:`REJECTS_PENDING`, beyond that
    they are counted in :attr:`lost`) and are written by the next write or
    :meth:`sync`; the daemon writes no checkpoint while :meth:`sync` fails, so a
    checkpoint never covers a reject that is not on disk.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = REJECTS_MAX_BYTES,
        keep: int = REJECTS_KEEP,
        raw_bytes: int = REJECT_RAW_BYTES,
    ) -> None:
        if max_bytes < 1 or keep < 0 or raw_bytes < 0:
            raise ValueError(
                f"need max_bytes >= 1, keep >= 0, raw_bytes >= 0; got {max_bytes}, {keep}, "
                f"{raw_bytes}"
            )
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.raw_bytes = raw_bytes
        #: Lines dropped because the file could not be written and the buffer was full.
        self.lost = 0
        #: Files rotated away since the start.
        self.rotations = 0
        self._file: IO[str] | None = None
        self._size = 0
        self._pending: list[str] = []
        self._unsynced = False

    def write(self, source_id: str, rejects: Sequence[Reject]) -> None:
        """Append the rejects; never raises (a full disk is logged, not fatal)."""
        for r in rejects:
            self._pending.append(self._line(source_id, r))
        if len(self._pending) > REJECTS_PENDING:
            extra = len(self._pending) - REJECTS_PENDING
            del self._pending[:extra]
            self.lost += extra
            log.error("rejects: %d lines could not be kept (the file cannot be written)", extra)
        self._write_pending()

    def _line(self, source_id: str, r: Reject) -> str:
        raw: dict[str, Any]
        data = r.raw[: self.raw_bytes]
        try:
            raw = {"raw": data.decode("utf-8")}
        except UnicodeDecodeError:
            raw = {"raw_base64": base64.b64encode(data).decode()}
        if len(r.raw) > len(data):
            raw["raw_truncated"] = len(r.raw)
        doc = {"source": source_id, "reason": r.reason, "detail": r.detail, "origin": r.origin}
        return json.dumps({**doc, **raw}) + "\n"

    def _write_pending(self) -> bool:
        if not self._pending:
            return True
        done = 0  # lines of _pending written and flushed (or in a rotated, synced file)
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")
                self._size = self._file.tell()
            for k, line in enumerate(self._pending):
                if self._size >= self.max_bytes:
                    self._rotate()
                    done = k
                self._file.write(line)
                self._size += len(line.encode("utf-8"))
            self._file.flush()
            done = len(self._pending)
            self._unsynced = True
            return True
        except OSError as exc:
            # What was not flushed is written again next time (a line may then repeat:
            # better twice than lost).
            log.error("cannot write rejected records to %s: %s", self.path, exc)
            self._close_quietly()
            return False
        finally:
            del self._pending[:done]

    def _rotate(self) -> None:
        """``rejects.jsonl`` -> ``.1`` -> ... -> ``.{keep}``; the oldest goes."""
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        self._unsynced = False
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            Path(f"{self.path}.{self.keep}").unlink(missing_ok=True)
            for k in range(self.keep - 1, 0, -1):
                older = Path(f"{self.path}.{k}")
                if older.exists():
                    older.rename(f"{self.path}.{k + 1}")
            self.path.rename(f"{self.path}.1")
        self.rotations += 1
        self._file = self.path.open("a", encoding="utf-8")
        self._size = 0

    def _close_quietly(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):  # closing a file on a full disk: it is gone
                self._file.close()
            self._file = None

    def sync(self) -> bool:
        """Write what waits and fsync; True when every reject so far is on disk."""
        if not self._write_pending():
            return False
        if self._unsynced and self._file is not None:
            try:
                os.fsync(self._file.fileno())
            except OSError as exc:
                log.error("cannot sync rejected records to %s: %s", self.path, exc)
                self._close_quietly()
                return False
            self._unsynced = False
        return True

    def close(self) -> None:
        """Write what waits (if the disk allows), then close the file."""
        self.sync()
        self._close_quietly()


@dataclass
class SourceHealth:
    """What the daemon knows about one source's recent behaviour.

    ``problems`` comes from sources with a ``problems()`` method (see
    :func:`source_problems`): the parts of the source, such as one query of a pull
    source, whose last attempt failed, with the error. The source still works.
    """

    ok: bool = True
    last_error: str = ""
    failures: int = 0
    retry_at: float = 0.0
    points: int = 0
    logs: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    problems: dict[str, str] = field(default_factory=dict)
    #: Rules reading this source that ever failed a batch: their fault record.
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def state(self) -> str:
        """``failing`` (polls raise), ``degraded`` (some parts or rules fail) or ``ok``."""
        if not self.ok:
            return "failing"
        rules_failing = any(r["state"] != "ok" for r in self.rules.values())
        return "degraded" if self.problems or rules_failing else "ok"

    def as_json(self, now: float) -> dict[str, Any]:
        """A JSON-ready copy; ``now`` is the daemon clock, for ``retry_in``."""
        return {
            "state": self.state,
            "last_error": self.last_error,
            "failures": self.failures,
            "retry_in": round(max(0.0, self.retry_at - now), 3) if not self.ok else 0.0,
            "points": self.points,
            "logs": self.logs,
            "rejects": dict(self.rejects),
            "problems": dict(self.problems),
            "rules": {k: dict(v) for k, v in self.rules.items()},
        }


def source_problems(source: Source) -> dict[str, str]:
    """The failing parts a source reports through an optional ``problems()`` method.

    A source made of independent parts (a pull source's queries) keeps working while
    one part fails; it reports ``{part: error}`` so health shows it (``degraded``).
    """
    problems = getattr(source, "problems", None)
    if problems is None:
        return {}
    try:
        return dict(problems())
    except Exception as exc:  # a health probe must not take the daemon down
        return {"problems()": f"{type(exc).__name__}: {exc}"}


def _point_json(batch: Batch, position: int) -> bytes:
    key = batch.keys[int(batch.series[position])]
    point = {
        "series": str(key),
        "timestamp": float(batch.timestamps[position]),
        "value": float(batch.values[position]),
    }
    return json.dumps(point).encode()


def _record_json(record: LogRecord) -> bytes:
    doc = {"timestamp": record.timestamp, "labels": dict(record.labels), "message": record.message}
    return json.dumps(doc).encode()


#: After a failed checkpoint write, the next attempt comes this soon (or at the interval).
CHECKPOINT_RETRY_SECONDS = 10.0


class CheckpointJob:
    """One checkpoint between its snapshot (on the data loop) and its commit."""

    def __init__(
        self, snapshot: CheckpointSnapshot, positions: dict[str, Any], covers: float
    ) -> None:
        self.snapshot = snapshot
        self.positions = positions
        self.covers = covers  # feedback applied before this time is in the snapshot
        self.started = time.perf_counter()
        self.stall = 0.0  # seconds the data loop spent taking the snapshot
        self.seconds = 0.0  # seconds the write took
        self.size = 0
        self.error: Exception | None = None
        self.done = threading.Event()

    def run(self, checkpointer: Checkpointer) -> None:
        """Write the snapshot (on whichever thread calls this); never raises."""
        try:
            self.size = checkpointer.write(self.snapshot)
        except Exception as exc:  # disk full, read-only, gone, or a bug: the loop decides
            self.error = exc
        finally:
            self.seconds = time.perf_counter() - self.started
            self.done.set()


class Daemon:
    """Wires sources, the engine, the router and the checkpointer into one loop."""

    def __init__(
        self,
        *,
        sources: Mapping[str, Source] | Callable[[Mapping[str, Any]], Mapping[str, Source]],
        engine: Engine,
        router: AlertRouter,
        dispatcher: Delivery,
        checkpointer: Checkpointer,
        checkpoint_interval: float = 30.0,
        background_checkpoints: bool = False,
        dead_letters: DeadLetterFile | None = None,
        poll_interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics = NULL_METRICS,
    ) -> None:
        self._source_factory = sources
        self.sources: Mapping[str, Source] = {}
        self.engine = engine
        self.router = router
        self.dispatcher = dispatcher
        self.checkpointer = checkpointer
        self.checkpoint_interval = checkpoint_interval
        #: Write checkpoints on a writer thread (the service does); else on the loop.
        self.background_checkpoints = background_checkpoints
        #: The checkpoint being written, until a turn of the loop commits it.
        self.writing: CheckpointJob | None = None
        self.dead_letters = dead_letters
        self.poll_interval = poll_interval
        self.clock = clock
        self.health: dict[str, SourceHealth] = {}
        self.alerts_sent = 0
        self._sequence = 0
        self._data_time = -np.inf  # the latest point time of any source
        self._data_time_at = 0.0  # the loop clock when _data_time last moved
        self._source_time: dict[str, float] = {}  # the latest point time of each source
        self._source_time_at: dict[str, float] = {}  # the loop clock when it last moved
        self._quiet_checked: dict[str, float] = {}  # the loop clock of the last quiet look
        self._last_checkpoint = clock()
        # --- HTTP listener and metrics (aiops.service.http, aiops.service.metrics) ---
        self.metrics = metrics
        #: Serves /healthz, /readyz, /metrics and push receivers; set by the app.
        self.listener: Listener = NullListener()
        #: Answers to alerts (Slack buttons) applied to the engine and router; set by the app.
        self.feedback: FeedbackApplier | NullFeedback = NullFeedback()
        #: limits.max_memory (off unless the app sets a budget).
        self.memory = MemoryGuard(0)
        #: Model versions (aiops.models.lifecycle): rollbacks and pins; set by the app.
        self.models: ModelLifecycle | NoModels = NoModels()
        #: Drift checks and retraining (aiops.models.retrain); set by the app.
        self.retraining: Retraining | NoRetraining = NoRetraining()
        # Read by the listener's threads; each is replaced whole, never mutated.
        self.ready = False
        self.last_step = 0.0
        self.health_report: Mapping[str, Mapping[str, Any]] = {}
        # --- service hooks (aiops.service.lifecycle: reloads, systemd, signals) ---
        #: Told ``started(daemon)``, ``turned(daemon)`` between two loop steps (on this
        #: loop's thread) and ``stopping(daemon)``; an observer that raises is logged.
        self.observers: list[Any] = []
        #: Set to stop faster (a second SIGTERM, or the stop deadline): draining ends,
        #: the final checkpoint is still written.
        self.hurry = threading.Event()
        #: True once the final checkpoint of :meth:`shutdown` was attempted.
        self.final_checkpoint_done = False

    def start(self) -> None:
        """Load the last checkpoint and open the sources at its positions."""
        ckpt = self.checkpointer.load()
        positions: Mapping[str, Any] = {}
        if ckpt is not None:
            self.engine.load_state_dict(ckpt.rules)
            self.metrics.state_refused(self.engine.refused_states)
            try:
                self.router.load_state_dict(ckpt.router)
            except Exception as exc:  # bad router state loses no rule and stops nothing
                log.error("router state in the checkpoint refused; it starts fresh: %s", exc)
            positions = ckpt.sources
            self._sequence = ckpt.sequence
            log.info("resumed from checkpoint %d", ckpt.sequence)
        else:
            log.info("no checkpoint: starting fresh")
        factory = self._source_factory
        self.sources = factory(positions) if callable(factory) else factory
        self.health = {sid: SourceHealth() for sid in self.sources}
        self._last_checkpoint = self.clock()
        self.models.start(self.engine)
        self.retraining.start(self.engine, router=self.router, sources=self.sources)
        self.feedback.start(self.engine, self.router)
        self.dispatcher.start()
        self.listener.attach(self.sources)
        self.metrics.watch_sources(self.sources)
        self.metrics.watch_logs(lambda: self.engine.logs.stats())
        self._publish_health()

    def step(self) -> bool:
        """Poll each source once and process what came; True if anything did."""
        got = False
        now = self.clock()
        self.memory.check(self.engine)
        for sid, src in self.sources.items():
            h = self.health[sid]
            if now < h.retry_at or src.exhausted:
                continue
            try:
                batch = src.next_batch()
            except Exception as exc:  # the source failed, not the data: back off
                h.failures += 1
                h.ok = False
                h.last_error = f"{type(exc).__name__}: {exc}"
                h.retry_at = now + min(60.0, 0.5 * 2 ** min(h.failures, 7))
                h.problems = source_problems(src)
                self.metrics.source_failed(sid)
                log.warning(
                    "source %s failed (%s); retry in %.1fs", sid, h.last_error, h.retry_at - now
                )
                continue
            if h.failures:
                log.info("source %s recovered after %d failures", sid, h.failures)
            h.ok, h.failures, h.last_error = True, 0, ""
            h.problems = source_problems(src)
            if batch:
                got = True
                self.handle(sid, batch)
            else:
                self._resolve_quiet(sid)
        self.feedback.apply(self.engine, self.router)
        self.models.apply(self.engine)
        if not got and math.isfinite(self._data_time):
            # No data this turn: groups' time goes on with the loop's clock from the last
            # point, so a group waiting for group_wait (or a resolution) is sent although
            # the sources went quiet, as Alertmanager's wall clock would send it. While
            # data flows, or in a fast replay, this adds nothing to the data's own time.
            self.router.observe(self._data_time + (self.clock() - self._data_time_at))
        self._deliver(self.router.flush())
        self.dispatcher.pump()
        if self.writing is not None and self.writing.done.is_set():
            self._finish_checkpoint(self.writing)
        if (
            self.writing is None
            and self.clock() - self._last_checkpoint >= self.checkpoint_interval
        ):
            self.checkpoint()
        self._publish_health()
        return got

    def _publish_health(self) -> None:
        """Replace the health report and gauges the listener reads (a fresh object)."""
        now = self.clock()
        for sid, h in self.health.items():
            h.rules = {
                rt.spec.key: rt.health.as_json()
                for rt in self.engine.by_source.get(sid, ())
                if rt.health.failed_batches
            }
        report = {sid: h.as_json(now) for sid, h in self.health.items()}
        for sid, h in self.health.items():
            self.metrics.source_health(sid, h.state == "ok", len(h.problems))
        self.health_report = report
        self.last_step = time.monotonic()

    def handle(self, source_id: str, batch: Batch) -> None:
        """Run one batch through the engine and route the alerts it caused."""
        batch = drop_bad_times(batch, source_id)  # times no alert could carry: rejects
        h = self.health[source_id]
        h.points += batch.n_points
        h.logs += len(batch.logs)
        if batch.rejects:
            h.rejects.update(r.reason for r in batch.rejects)
            if self.dead_letters is not None:
                self.dead_letters.write(source_id, batch.rejects)
        alerts = self.engine.process(source_id, batch)
        failures = self.engine.take_failures()
        if failures:
            self._keep_aside(source_id, batch, failures)
        if batch.n_points:
            latest = float(np.nanmax(batch.timestamps, initial=-np.inf))
            if latest > self._data_time:
                self._data_time, self._data_time_at = latest, self.clock()
            # Rules whose every series went quiet resolve by the time of their source's
            # other data, never by another source's (which may be ahead, or quiet).
            source_time = max(self._source_time.get(source_id, -np.inf), latest)
            if source_time > self._source_time.get(source_id, -np.inf):
                self._source_time[source_id] = source_time
                self._source_time_at[source_id] = self.clock()
            alerts = [*alerts, *self.engine.resolve_stale(source_time, source_id)]
        # Info alerts of drift checks and automatic rollbacks, through the same router.
        alerts = [*alerts, *self.retraining.after_batch(self.engine, self._data_time)]
        self.metrics.batch(source_id, batch)
        self.metrics.rules(self.engine.by_source.get(source_id, ()))
        if alerts:
            self.metrics.alerts(alerts)
            self.alerts_sent += len(alerts)
            self._deliver(self.router.route(alerts))
        self.router.observe(self._data_time)

    def _resolve_quiet(self, source_id: str) -> None:
        """Stale resolutions of a healthy source that sent nothing this turn.

        Its clock goes on with the loop's from its latest point, as the groups' does, so
        the alerts of a source whose every series stopped (a topic gone silent, a file no
        longer written) resolve ``resolve_after_stale`` after its last point instead of
        firing until it sends again. A failing source is not polled here, so its alerts
        keep firing while its health shows the outage (nothing is known of its series).
        In a replay, data comes every turn: this never runs ahead of the data there.
        Looked at once a second at most, as each look is a pass over the rules' rows.
        """
        last = self._source_time.get(source_id)
        now = self.clock()
        if last is None or now - self._quiet_checked.get(source_id, -np.inf) < 1.0:
            return
        self._quiet_checked[source_id] = now
        alerts = self.engine.resolve_stale(
            last + (now - self._source_time_at[source_id]), source_id
        )
        if alerts:
            self.metrics.alerts(alerts)
            self.alerts_sent += len(alerts)
            self._deliver(self.router.route(alerts))

    def _keep_aside(self, source_id: str, batch: Batch, failures: Sequence[RuleFailure]) -> None:
        """The points (or log records) of a failed rule, to the rejects file and counted.

        They count as processed (as rejects of reason ``rule_error``): the checkpoint
        that follows may cover them, once the rejects file is synced.
        """
        for f in failures:
            detail = f"rule {f.rule}: {f.error}"
            rejects = [
                Reject("rule_error", detail, _point_json(batch, int(p)), f.rule)
                for p in f.positions.tolist()
            ]
            rejects.extend(Reject("rule_error", detail, _record_json(r), f.rule) for r in f.records)
            self.metrics.rule_failed(f.rule, len(rejects))
            if self.dead_letters is not None:
                self.dead_letters.write(source_id, rejects)

    def _deliver(self, notifications: Sequence[Notification]) -> None:
        """The one place notifications leave the data loop: handed to the delivery."""
        if notifications:
            self.dispatcher.submit(notifications)

    @property
    def exhausted(self) -> bool:
        """True once every source is finite and done."""
        return bool(self.sources) and all(s.exhausted for s in self.sources.values())

    def checkpoint(self) -> None:
        """Take a checkpoint of every rule and every source position; commit once durable.

        The snapshot is taken here. With :attr:`background_checkpoints` a writer thread
        writes it and a later :meth:`step` commits it (a checkpoint still being written
        is waited for first); otherwise it is written and committed before this returns.
        """
        if self.writing is not None:  # one at a time: the one in flight ends first
            self.writing.done.wait()
            self._finish_checkpoint(self.writing)
        # The notifications of the batches this checkpoint covers must be durable first:
        # after a crash, only what follows the checkpoint is replayed.
        if not self.dispatcher.flush():
            # Some are still in memory (the outbox cannot be written, or is locked past
            # the flush's time-out): a checkpoint now would lose them in a crash.
            self._retry_checkpoint()
            log.error(
                "checkpoint held back: notifications not yet written to the outbox "
                "(retried in %.0f s)",
                self._retry_delay,
            )
            return
        if self.dead_letters is not None and not self.dead_letters.sync():
            # Kept-aside points (a failed rule's) are not on disk: a checkpoint now would
            # cover data that is nowhere. Held back, retried like a failed write.
            self._retry_checkpoint()
            log.error(
                "checkpoint held back: the rejects file cannot be written (retried in %.0f s)",
                self._retry_delay,
            )
            return
        started = time.perf_counter()
        positions = {sid: src.snapshot() for sid, src in self.sources.items()}
        covers = time.time()  # feedback applied before this is in the engine state below
        job = CheckpointJob(
            CheckpointSnapshot(
                rules=self.engine.snapshot(),
                sources=positions,
                router=self.router.state_dict(),
                sequence=self._sequence + 1,
            ),
            positions,
            covers,
        )
        job.stall = time.perf_counter() - started
        self.writing = job
        if self.background_checkpoints:
            threading.Thread(
                target=job.run, args=(self.checkpointer,), name="aiops-checkpoint", daemon=True
            ).start()
        else:
            job.run(self.checkpointer)
            self._finish_checkpoint(job)

    def wait_checkpoint(self) -> None:
        """Wait for the checkpoint being written, and commit it (or schedule its retry)."""
        if self.writing is not None:
            self.writing.done.wait()
            self._finish_checkpoint(self.writing)

    @property
    def _retry_delay(self) -> float:
        return min(self.checkpoint_interval, CHECKPOINT_RETRY_SECONDS)

    def _retry_checkpoint(self) -> None:
        self._last_checkpoint = self.clock() - self.checkpoint_interval + self._retry_delay
        self.metrics.checkpoint_failed()

    def _finish_checkpoint(self, job: CheckpointJob) -> None:
        """On the data loop, once ``job`` is written: commit its positions, or retry later."""
        self.writing = None
        if job.error is not None:  # scoring goes on, nothing commits
            self._retry_checkpoint()
            log.error(
                "checkpoint %d could not be written (retried in %.0f s; sources keep their "
                "last committed positions): %s",
                job.snapshot.sequence,
                self._retry_delay,
                job.error,
                exc_info=None if isinstance(job.error, OSError) else job.error,
            )
            return
        self._sequence = job.snapshot.sequence
        self._last_checkpoint = self.clock()
        self.feedback.checkpointed(job.covers)
        self.metrics.checkpoint(job.seconds, job.size)
        log.debug(
            "checkpoint %d written (%d bytes, %.3f s; the loop spent %.3f s on its snapshot)",
            self._sequence,
            job.size,
            job.seconds,
            job.stall,
        )
        for sid, src in self.sources.items():
            if sid not in job.positions:
                continue
            try:
                src.commit(job.positions[sid])
            except Exception as exc:
                log.warning("source %s: commit of checkpointed position failed: %s", sid, exc)

    def run(self, stop: threading.Event, *, until_exhausted: bool = True) -> None:
        """Loop until ``stop`` is set (or every finite source is done); checkpoint on exit.

        The listener serves from before the checkpoint is loaded (``/readyz`` says 503
        until the loop turns) until after the loop ends; then what push receivers
        accepted is processed, so the final checkpoint covers it.
        """
        self.listener.start()
        try:
            self.start()
            self.ready = True
            self._tell("started")
            while not stop.is_set():
                got = self.step()
                self._tell("turned")
                if until_exhausted and self.exhausted:
                    # The data has ended: what waits in its groups is notified now.
                    self._deliver(self.router.drain())
                    break
                if not got:
                    stop.wait(self.poll_interval)
        finally:
            self.ready = False
            self._tell("stopping")
            self.listener.stop()
            self._drain_receivers()
            self.shutdown()

    def _tell(self, event: str) -> None:
        """Call ``event`` on every observer; one that raises stops nothing."""
        for observer in self.observers:
            try:
                getattr(observer, event)(self)
            except Exception:
                log.exception("daemon observer %r failed on %s", observer, event)

    def _drain_receivers(self) -> None:
        """Process everything HTTP receivers acknowledged before the listener stopped.

        No deadline of its own: an acknowledged sample is never dropped for time. The
        receivers bound what they acknowledge so that this ends in time (remote write:
        ``max_queue_seconds``); only ``hurry`` cuts it short, and that is logged.
        """
        for sid, src in self.sources.items():
            if not isinstance(src, HttpReceiver):
                continue
            while not self.hurry.is_set():
                try:
                    batch = src.next_batch()
                except Exception as exc:
                    log.warning("source %s: draining failed: %s", sid, exc)
                    break
                if not batch:
                    break
                self.handle(sid, batch)
            left = getattr(src, "queued_samples", 0)
            if left:
                log.error(
                    "source %s: %d acknowledged samples not processed (stop hurried)", sid, left
                )

    def shutdown(self) -> None:
        """Final checkpoint, then close sources, notifiers and files."""
        try:
            if self.sources:
                self.checkpoint()
                self.wait_checkpoint()
            self.final_checkpoint_done = True
        finally:
            for src in self.sources.values():
                try:
                    src.close()
                except Exception:
                    log.exception("closing source failed")
            self.dispatcher.close()
            self.retraining.close()  # writes under the registry's lock: before models
            self.models.close()
            if self.dead_letters is not None:
                self.dead_letters.close()
