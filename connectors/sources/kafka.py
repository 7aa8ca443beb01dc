"""Kafka source: records of one or more topics, decoded by a record format, in a group.

Data: each record's value is decoded by the configured format (:mod:`aiops.connectors.
formats`: ``prometheus_json``, ``influx_line``, ``generic_json``, ``log_lines``,
``log_json``, with ``format_options`` validated by that decoder's settings model). Items
without a time of their own take the record's Kafka timestamp. A batch holds up to
``max_poll_records`` records, decoded into columns. Tombstones (null values) are skipped
and counted in :attr:`KafkaSource.stats`; decoders' documented skips are counted in
:attr:`KafkaSource.skipped`.

Threads: a poller thread owns the kafka-python consumer. It polls all the time (group
heartbeats, rebalances and joins progress whatever the daemon does) and queues what it
fetches; ``next_batch()`` takes from that queue, waiting at most ``poll_timeout``. When
about two batches are queued, the poller pauses the partitions (it keeps polling, so
the member stays in the group) until the daemon catches up. If the daemon takes no
batch for ``max_poll_interval``, the poller stops polling too, so the group moves the
partitions to a member that works, as Kafka expects. A consumer polled only
from ``next_batch()`` would join its group unreliably: kafka-python 3.0.12 drops a
JoinGroup answer that arrives while no ``poll()`` is waiting, and joins again.

Positions, and why the checkpoint owns them: ``snapshot()`` is
``{"topic:partition": next offset}`` for every partition this source emitted from (or
resumed with), i.e. the offset after the last record emitted. On (re)assignment, a
partition with a known position is seeked to it; one without takes ``start_from``
(``earliest`` or ``latest``), and its start offset enters the snapshot once the client
has resolved it. Offsets committed in Kafka are never read: ``commit()`` (called after a
checkpoint is durable) publishes the checkpointed offsets of the partitions this member
is assigned, asynchronously, for consumer-lag dashboards; ``close()`` commits the last
ones synchronously. Auto-commit is off. A position that is no longer valid (the topic was
recreated, retention deleted the records) is reset by ``start_from``, and logged when the
partition moves back.

Rebalances: the consumer joins ``group_id`` and the group coordinator spreads the
partitions over the members. On revocation a partition's position stays in the
snapshot (nothing emitted is forgotten) and its queued, not yet emitted records are
dropped; on assignment the partition is seeked as above. Taking records from the queue
and advancing positions happen together, under the lock the rebalance callbacks take,
so a partition is always sought to exactly the offset after what was emitted.

Scale-out (follow-up, not done here): several daemons in one group split the
partitions, but each keeps its detector state and positions in its own checkpoint.
When a partition moves from instance A to B, B starts it at B's own stale position
(or ``start_from``) with B's state for those series, and if it moves back A replays
from A's old position. DESIGN.md section 8 asks for a shared state store: on revoke,
save the state of the series of the revoked partitions together with their positions;
on assignment, load both before seeking. Until then, run one instance per group (or
accept cold-started series after a rebalance).

Failures: the constructor never connects (``aiops check`` builds no clients). The
poller starts with the first ``next_batch()``; while it cannot bootstrap (within
``connect_timeout`` per attempt, retried with back-off) or cannot read a secret,
``next_batch()`` raises :class:`~aiops.pipeline.source.SourceError`. Later, when no broker
connection has existed for :data:`OUTAGE_GRACE` seconds, ``next_batch()`` raises
``SourceError`` (the daemon backs off and shows it in health) while the client keeps
reconnecting on its own; errors the client raises while polling (authorization, a
failing rebalance) are raised the same way, once each. A hung broker (its connections
open, no answer) is the ``broker`` problem in :meth:`KafkaSource.problems` (health
``degraded``) after :data:`HUNG_AFTER` seconds, until it answers again.
``next_batch()`` never waits longer than ``poll_timeout``; ``commit()`` waits up to
:data:`FLUSH_TIMEOUT` for dead letters in flight; ``close()`` up to about twice
``min(request_timeout, 5s)``.

Dead letters: with ``dead_letter_topic`` set, each record with rejects is copied there
(value, key, timestamp and headers as read) with the headers ``aiops-reason`` (the
first reject's reason), ``aiops-detail`` (every reject's detail), ``aiops-origin``
(``topic/partition@offset``), ``aiops-rejects`` (how many) and ``aiops-source``.
``next_batch()`` only hands them to the poller, which sends them: a producer's
``send()`` can wait for the topic's metadata or for buffer space (up to 2 s) and
contends with the producer's own thread; sent from ``next_batch()``, the dead letters
of one batch of 1,000 records took 0.8-1.7 s of it on a loaded 2-core machine. At most
``_MAX_PENDING_LETTERS`` wait; more are dropped and counted
(``stats["dead_letter_dropped"]``). Sends are asynchronous and flushed in ``commit()``
and ``close()``, which first send what still waits; a failed send is logged and
counted (``stats["dead_letter_failed"]``), never fatal, and the rejects still reach the
daemon's own reject file. A record copied there may have had good items too (a
multi-line record); they were processed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any, Literal

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.structs import OffsetAndMetadata
from pydantic import Field, ValidationError, ValidationInfo, field_validator

from aiops.pipeline.decoder import Decoded, Decoder
from aiops.pipeline.source import Source, SourceError
from aiops.types import Batch, LogRecord, Reject, SeriesKey

from ..formats import FORMATS, create_decoder
from ..kafka_common import KafkaClientConfig, Seconds, client_options, ms, topic_name

__all__ = ["FLUSH_TIMEOUT", "HUNG_AFTER", "OUTAGE_GRACE", "KafkaSource"]

log = logging.getLogger(__name__)

#: Seconds without any broker connection after which ``next_batch()`` reports the
#: outage. A reconnect normally takes milliseconds (the client's first back-off is
#: 50 ms), so this only fires on a real outage.
OUTAGE_GRACE = 3.0
#: Longest wait for dead letters in flight, in ``commit()`` and ``close()``.
FLUSH_TIMEOUT = 5.0
# The poller's own poll time-out: short, so that stopping and commits are prompt.
_POLL_MS = 100
_JOIN_POLL_MS = 500
# Connection state is read from the client's metrics at most this often.
_HEALTH_EVERY = 0.5
# A broker that answers nothing for this long while requests wait is reported (hung). A
# live one answers a fetch within fetch_max_wait (500 ms) and a heartbeat at once.
HUNG_AFTER = 5.0
# The poller pauses fetching while this many batches (of max_poll_records) are queued.
_QUEUED_BATCHES = 2
# After a dead-letter send fails without reaching the broker, stop trying for a while.
_DLQ_PAUSE = 30.0
# Dead letters decoded but not yet sent by the poller; beyond this they are dropped.
_MAX_PENDING_LETTERS = 10_000
_MAX_DETAIL = 2000
_NO_ASSIGNMENT_WARNING = 30.0


class KafkaSource(Source):
    """Records of Kafka topics, in a consumer group, decoded by a record format.

    See the module docstring for positions, rebalances, failures and dead letters.

    >>> cfg = KafkaSource.Config(bootstrap_servers="localhost:9092", topics=["metrics"],
    ...                          format="influx_line", format_options={"precision": "s"})
    >>> src = KafkaSource("kafka", cfg, resume={"metrics:0": 1207, "metrics:1": 98})
    >>> src.snapshot()
    {'metrics:0': 1207, 'metrics:1': 98}
    >>> src.close()
    """

    class Config(KafkaClientConfig):
        """Settings of a ``type: kafka`` source (plus the shared client settings)."""

        topics: list[str] = Field(min_length=1, description="Topics to consume.")
        group_id: str = Field(default="aiopsd", min_length=1, description="Consumer group to join.")
        format: str = Field(description="Record format: a name from the formats registry.")
        format_options: dict[str, Any] = Field(
            default_factory=dict, description="Settings of the format's decoder."
        )
        start_from: Literal["earliest", "latest"] = Field(
            default="latest",
            description="Where a partition without a checkpointed position starts.",
        )
        max_poll_records: int = Field(
            default=1000, ge=1, description="At most this many records per batch."
        )
        poll_timeout: Seconds = Field(
            default=0.1, le=5.0, description="Longest wait for records in one next_batch()."
        )
        session_timeout: Seconds = Field(
            default=45.0,
            description="Group session time-out: a member silent this long is dropped.",
        )
        max_poll_interval: Seconds = Field(
            default=300.0,
            description="Longest gap between polls before the member leaves the group.",
        )
        dead_letter_topic: str | None = Field(
            default=None, description="Copy records with rejects to this topic."
        )

        @field_validator("topics", mode="before")
        @classmethod
        def _one_topic(cls, value: Any) -> Any:
            return [value] if isinstance(value, str) else value

        @field_validator("topics")
        @classmethod
        def _topic_names(cls, value: list[str]) -> list[str]:
            for name in value:
                topic_name(name)
            if len(set(value)) != len(value):
                raise ValueError(f"topics are not unique: {value}")
            return value

        @field_validator("dead_letter_topic")
        @classmethod
        def _dlq_name(cls, value: str | None) -> str | None:
            return None if value is None else topic_name(value)

        @field_validator("format")
        @classmethod
        def _known_format(cls, value: str) -> str:
            if value not in FORMATS:
                valid = ", ".join(sorted(FORMATS))
                raise ValueError(f'unknown format "{value}"; valid formats: {valid}')
            return value

        @field_validator("format_options")
        @classmethod
        def _format_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
            name = info.data.get("format")
            if name is None:  # the format itself is invalid; reported there
                return value
            try:
                FORMATS[name].Config.model_validate(value)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or name}: {e['msg']}"
                    for e in exc.errors()
                )
                raise ValueError(f"invalid options for format {name}: {problems}") from None
            return value

    def __init__(
        self, source_id: str, config: Config, *, resume: dict[str, Any] | None = None
    ) -> None:
        self.source_id = source_id
        self.config = config
        self._decoder: Decoder = create_decoder(config.format, config.format_options)
        # Guards everything the poller, the rebalance callbacks and next_batch() share.
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._positions = _parse_resume(resume, config.topics, source_id)
        self._assigned: set[TopicPartition] = set()
        self._pending_start: set[TopicPartition] = set()
        self._sought: dict[TopicPartition, int] = {}
        self._queue: deque[tuple[TopicPartition, list[Any]]] = deque()
        self._queued = 0
        self._error: str | None = None
        self._no_broker_since: float | None = None
        self._commit_request: dict[str, int] | None = None
        self._last_request: dict[str, int] | None = None
        self._producer: Any = None
        self._poller: _Poller | None = None
        self._dlq_paused_until = 0.0
        # Dead letters from next_batch() that the poller (or commit/close) sends, in order.
        self._letters: deque[tuple[Any, str, list[Reject]]] = deque()
        self._send_lock = threading.Lock()
        self._drop_logged_at = -_DLQ_PAUSE
        self._commit_problem = ""
        self._unassigned_problem = ""
        self._hung_problem = ""
        self._last_call = time.monotonic()
        self._closed = False
        #: Counters: records, points, logs, rejects, tombstones, rebalances, commits,
        #: commit_failed, dead_letter_sent, dead_letter_failed, dead_letter_dropped.
        self.stats: Counter[str] = Counter()
        #: Items the decoder left out on purpose, by its documented reason.
        self.skipped: Counter[str] = Counter()
        #: The offsets of the last commit the broker acknowledged.
        self.committed: dict[str, int] = {}

    # -- the contract -----------------------------------------------------------------

    def next_batch(self) -> Batch:
        """Up to ``max_poll_records`` fetched records as one batch; empty if none came."""
        if self._closed:
            raise SourceError(f"kafka source {self.source_id!r} is closed")
        self._last_call = time.monotonic()
        if self._poller is None:
            self._poller = _Poller(self)
            self._poller.start()
        with self._arrived:
            if not self._queue and self._error is None:
                self._arrived.wait(self.config.poll_timeout)
            items = self._take()
            error = None if items else self._error
            self._error = None if error is not None else self._error
            down = self._no_broker_since
        if items:
            return self._decode(items)
        if error is not None:
            raise SourceError(error)
        if down is not None and time.monotonic() - down >= OUTAGE_GRACE:
            raise SourceError(
                f"no connection to any Kafka broker of {self._servers} for "
                f"{time.monotonic() - down:.0f}s (the client keeps reconnecting)"
            )
        return Batch()

    def snapshot(self) -> dict[str, Any]:
        """``{"topic:partition": offset after the last record emitted}``."""
        with self._lock:
            return {
                f"{tp.topic}:{tp.partition}": off for tp, off in sorted(self._positions.items())
            }

    def commit(self, position: dict[str, Any]) -> None:
        """Send and flush dead letters; the poller then commits the offsets (asynchronously)."""
        self._send_dead_letters()
        self._flush_dead_letters()
        with self._lock:
            self._commit_request = self._last_request = dict(position)

    def close(self) -> None:
        """Stop the poller (final synchronous commit, leave the group), flush, close."""
        if self._closed:
            return
        self._closed = True
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.stop.set()
            poller.join(2 * self._close_timeout + 1.0)
            if poller.is_alive():
                log.warning("kafka source %s: the poller did not stop in time", self.source_id)
        self._send_dead_letters()
        producer, self._producer = self._producer, None
        if producer is not None:
            _close_producer(producer, self._close_timeout, self.source_id)

    @property
    def assignment(self) -> list[str]:
        """The partitions this group member owns now, as sorted ``"topic:partition"``."""
        with self._lock:
            return [f"{tp.topic}:{tp.partition}" for tp in sorted(self._assigned)]

    def problems(self) -> dict[str, str]:
        """What fails while the source still runs: dead letters, commits, a hung broker.

        Also no assignment; a hung broker holds its connections but answers nothing
        (see :class:`_Health`). The daemon shows these in health as ``degraded``.
        """
        out: dict[str, str] = {}
        if time.monotonic() < self._dlq_paused_until:
            out["dead_letter_topic"] = (
                f"sending to {self.config.dead_letter_topic} failed; paused, dropping copies"
            )
        with self._lock:
            if self._commit_problem:
                out["commit"] = self._commit_problem
            if self._unassigned_problem and not self._assigned:
                out["assignment"] = self._unassigned_problem
            if self._hung_problem:
                out["broker"] = self._hung_problem
        return out

    # -- the queue (under the lock) ---------------------------------------------------

    def _take(self) -> list[tuple[TopicPartition, list[Any]]]:
        """Take up to a batch of queued records and advance their positions (emitted)."""
        items: list[tuple[TopicPartition, list[Any]]] = []
        n = 0
        while self._queue and n < self.config.max_poll_records:
            tp, records = self._queue.popleft()
            items.append((tp, records))
            n += len(records)
            self._positions[tp] = records[-1].offset + 1
            self._pending_start.discard(tp)
        self._queued -= n
        return items

    def _enqueue(self, polled: dict[TopicPartition, list[Any]]) -> None:
        with self._arrived:
            for tp, records in polled.items():
                if records and tp in self._assigned:
                    self._queue.append((tp, records))
                    self._queued += len(records)
            self._no_broker_since = None
            self._arrived.notify_all()

    @property
    def _full(self) -> bool:
        return self._queued >= _QUEUED_BATCHES * self.config.max_poll_records

    # -- rebalance callbacks (client I/O thread, while the poller waits in poll()) -----

    def _on_assigned(self, consumer: Any, assigned: Iterable[TopicPartition]) -> None:
        fresh: list[TopicPartition] = []
        with self._lock:
            self._assigned = set(assigned)
            for tp in self._assigned:
                pos = self._positions.get(tp)
                if pos is None:
                    fresh.append(tp)
                    self._pending_start.add(tp)
                else:
                    consumer.seek(tp, pos)
                    self._sought[tp] = pos
        if fresh:
            if self.config.start_from == "earliest":
                consumer.seek_to_beginning(*fresh)
            else:
                consumer.seek_to_end(*fresh)
        self.stats["rebalances"] += 1
        log.info(
            "kafka source %s: assigned %s (%d from checkpointed positions, %d from %s)",
            self.source_id,
            _tp_list(self._assigned),
            len(self._assigned) - len(fresh),
            len(fresh),
            self.config.start_from,
        )

    def _on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        gone = set(revoked)
        with self._lock:
            self._assigned -= gone
            self._pending_start -= gone
            for tp in gone:
                self._sought.pop(tp, None)
            # Fetched but not emitted: whoever owns the partition next reads them again.
            kept = [(tp, recs) for tp, recs in self._queue if tp not in gone]
            self._queued = sum(len(recs) for _, recs in kept)
            self._queue = deque(kept)
        if gone:
            log.info("kafka source %s: revoked %s (positions kept)", self.source_id, _tp_list(gone))

    # -- decoding (the daemon's thread) -----------------------------------------------

    def _decode(self, items: list[tuple[TopicPartition, list[Any]]]) -> Batch:
        decode = self._decoder.decode
        keys: list[SeriesKey] = []
        stamps: list[float] = []
        values: list[float] = []
        logs: list[LogRecord] = []
        rejects: list[Reject] = []
        letters: list[tuple[Any, str, list[Reject]]] | None = (
            None if self.config.dead_letter_topic is None else []
        )
        skipped = self.skipped
        n_records = tombstones = 0
        for tp, records in items:
            self._check_jump(tp, records[0].offset)
            for rec in records:
                value = rec.value
                if value is None:
                    tombstones += 1
                    continue
                ts = rec.timestamp
                origin = f"{rec.topic}/{rec.partition}@{rec.offset}"
                d = decode(
                    value,
                    origin=origin,
                    timestamp=ts / 1000.0 if ts is not None and ts >= 0 else None,
                )
                if d.keys:
                    keys.extend(d.keys)
                    stamps.extend(d.timestamps)
                    values.extend(d.values)
                if d.logs:
                    logs.extend(d.logs)
                if d.rejects:
                    rejects.extend(d.rejects)
                    if letters is not None:
                        letters.append((rec, origin, d.rejects))
                if d.skipped:
                    skipped.update(d.skipped)
            n_records += len(records)
        stats = self.stats
        stats["records"] += n_records
        stats["tombstones"] += tombstones
        stats["points"] += len(keys)
        stats["logs"] += len(logs)
        stats["rejects"] += len(rejects)
        if letters:
            self._hand_off(letters)
        return Decoded(keys, stamps, values, logs, rejects).to_batch()

    def _check_jump(self, tp: TopicPartition, first: int) -> None:
        """Log a partition that went back from where it was sought (reset by start_from)."""
        with self._lock:
            sought = self._sought.pop(tp, None)
        if sought is not None and first < sought:
            log.warning(
                "kafka source %s: %s:%d restarted at offset %d, before the checkpointed %d "
                "(topic recreated or log truncated?); reset by start_from=%s",
                self.source_id,
                tp.topic,
                tp.partition,
                first,
                sought,
                self.config.start_from,
            )

    # -- the poller's side ------------------------------------------------------------

    @property
    def _servers(self) -> str:
        return ",".join(self.config.bootstrap_servers)

    @property
    def _close_timeout(self) -> float:
        return min(self.config.request_timeout, FLUSH_TIMEOUT)

    def _report(self, error: str) -> None:
        with self._arrived:
            self._error = error
            self._arrived.notify_all()

    def _build_clients(self) -> Any:
        """Bootstrap the consumer, subscribe, and make the dead-letter producer."""
        cfg = self.config
        opts = client_options(cfg)
        heartbeat = min(3.0, cfg.session_timeout / 3)
        consumer = KafkaConsumer(
            group_id=cfg.group_id,
            enable_auto_commit=False,
            auto_offset_reset=cfg.start_from,
            allow_auto_create_topics=False,
            max_poll_records=cfg.max_poll_records,
            session_timeout_ms=ms(cfg.session_timeout),
            heartbeat_interval_ms=ms(heartbeat),
            max_poll_interval_ms=ms(cfg.max_poll_interval),
            **opts,
        )
        try:
            consumer.subscribe(cfg.topics, listener=_Rebalance(self, consumer))
            if cfg.dead_letter_topic is not None and self._producer is None and not self._closed:
                # Not idempotent: duplicates are harmless here, and an idempotent
                # producer can be left unusable by a broker that forgot its producer id.
                self._producer = KafkaProducer(
                    acks="all", enable_idempotence=False, linger_ms=20, max_block_ms=2000, **opts
                )
        except BaseException:
            consumer.close(autocommit=False, timeout_ms=1000)
            raise
        return consumer

    def _poll_once(self, consumer: Any, health: _Health) -> None:
        """One round of the poller: commit, start positions, flow control, poll."""
        with self._lock:
            request, self._commit_request = self._commit_request, None
            full = self._full
            assigned = set(self._assigned)
        if request is not None:
            self._commit(consumer, request, assigned, sync=False)
        self._send_dead_letters()
        self._resolve_start_positions(consumer)
        # Flow control: keep polling (group membership) but stop fetching while full.
        paused = consumer.paused()
        if full:
            unpaused = consumer.assignment() - paused
            if unpaused:
                consumer.pause(*unpaused)
        elif paused:
            consumer.resume(*paused)
        # While joining, poll longer: kafka-python 3.0.12 drops a join answer that comes
        # back between two polls, and the join starts over.
        timeout = _POLL_MS if assigned else _JOIN_POLL_MS
        polled = consumer.poll(timeout_ms=timeout, max_records=self.config.max_poll_records)
        if polled:
            self._enqueue(polled)
        else:
            health.update(self, consumer)

    def _commit(
        self, consumer: Any, position: dict[str, int], assigned: set[TopicPartition], *, sync: bool
    ) -> None:
        """Commit the checkpointed offsets of the partitions this member owns.

        Another member owns the rest; committing our older offsets for them would
        overwrite its commits.
        """
        offsets: dict[TopicPartition, Any] = {}
        for key, offset in position.items():
            topic, _, part = key.rpartition(":")
            tp = TopicPartition(topic, int(part))
            if tp in assigned:
                offsets[tp] = OffsetAndMetadata(int(offset), "", -1)
        if not offsets:
            return
        try:
            if sync:
                consumer.commit(offsets, timeout_ms=ms(self._close_timeout))
                self._record_commit(offsets)
            else:
                consumer.commit_async(offsets, callback=self._on_commit)
        except KafkaError as exc:
            self._commit_failed(exc)

    def _on_commit(self, offsets: dict[TopicPartition, Any], response: Any) -> None:
        if isinstance(response, BaseException):
            self._commit_failed(response)
        else:
            self._record_commit(offsets)

    def _commit_failed(self, exc: BaseException) -> None:
        self.stats["commit_failed"] += 1
        log.warning("kafka source %s: offset commit failed: %s", self.source_id, exc)
        with self._lock:
            self._commit_problem = f"offset commit failed: {type(exc).__name__}: {exc}"

    def _record_commit(self, offsets: dict[TopicPartition, Any]) -> None:
        with self._lock:
            self._commit_problem = ""
        self.stats["commits"] += 1
        for tp, om in offsets.items():
            self.committed[f"{tp.topic}:{tp.partition}"] = om.offset

    def _resolve_start_positions(self, consumer: Any) -> None:
        """Put the start offset of partitions started by ``start_from`` in the snapshot.

        Without this, a checkpoint taken before such a partition emitted anything would
        not hold it, and a restart with ``latest`` could skip records produced between.
        Only the poller adds to the queue, so a pending partition with nothing queued
        has returned no record yet: its position is its start.
        """
        with self._lock:
            pending = list(self._pending_start)
        if not pending:
            return
        found: dict[TopicPartition, int] = {}
        for tp in pending:
            try:
                pos = consumer.position(tp, timeout_ms=0)
            except (KafkaError, ValueError):
                continue
            if pos is not None:
                found[tp] = pos
        with self._lock:
            queued = {tp for tp, _ in self._queue}
            for tp, pos in found.items():
                if tp in self._pending_start and tp not in queued:
                    self._pending_start.discard(tp)
                    self._positions[tp] = pos

    def _finish(self, consumer: Any) -> None:
        """Runs on the poller when stopping: last commit, leave the group."""
        with self._lock:
            request = self._last_request
            assigned = set(self._assigned)
        if request is not None:
            self._commit(consumer, request, assigned, sync=True)
        try:
            consumer.close(autocommit=False, timeout_ms=ms(self._close_timeout))
        except Exception as exc:  # closing must not fail the daemon's shutdown
            log.warning("kafka source %s: closing the consumer: %s", self.source_id, exc)

    def _hand_off(self, letters: list[tuple[Any, str, list[Reject]]]) -> None:
        """Queue dead letters for the poller (the data loop never waits on the producer)."""
        with self._lock:
            room = _MAX_PENDING_LETTERS - len(self._letters)
            self._letters.extend(letters[: max(room, 0)])
            dropped = len(letters) - max(room, 0)
            if dropped > 0:
                self.stats["dead_letter_dropped"] += dropped
        if dropped > 0:
            now = time.monotonic()
            if now - self._drop_logged_at >= _DLQ_PAUSE:
                self._drop_logged_at = now
                log.warning(
                    "kafka source %s: dead letters dropped: %d already wait to be sent to %s "
                    "(%d dropped so far)",
                    self.source_id,
                    _MAX_PENDING_LETTERS,
                    self.config.dead_letter_topic,
                    self.stats["dead_letter_dropped"],
                )

    def _send_dead_letters(self) -> None:
        """Send the dead letters handed off so far, in order (poller, commit, close)."""
        with self._send_lock:
            with self._lock:
                letters, self._letters = self._letters, deque()
            for letter in letters:
                self._dead_letter(*letter)

    def _dead_letter(self, rec: Any, origin: str, rejects: list[Reject]) -> None:
        topic = self.config.dead_letter_topic
        if self._producer is None or time.monotonic() < self._dlq_paused_until:
            with self._lock:  # _hand_off counts drops too, on the data loop's thread
                self.stats["dead_letter_dropped"] += 1
            return
        if len(rejects) == 1:
            detail = rejects[0].detail
        else:
            detail = "; ".join(f"{r.reason}: {r.detail}" for r in rejects)
        headers = [(k, v if v is not None else b"") for k, v in (rec.headers or [])]
        headers += [
            ("aiops-reason", rejects[0].reason.encode()),
            ("aiops-detail", detail[:_MAX_DETAIL].encode()),
            ("aiops-origin", origin.encode()),
            ("aiops-rejects", str(len(rejects)).encode()),
            ("aiops-source", self.source_id.encode()),
        ]
        ts = rec.timestamp if rec.timestamp is not None and rec.timestamp >= 0 else None
        try:
            future = self._producer.send(
                topic, value=rec.value, key=rec.key, headers=headers, timestamp_ms=ts
            )
        except KafkaError as exc:
            self.stats["dead_letter_failed"] += 1
            if isinstance(exc, KafkaTimeoutError):
                self._dlq_paused_until = time.monotonic() + _DLQ_PAUSE
            log.warning(
                "kafka source %s: cannot send %s to dead-letter topic %s: %s%s",
                self.source_id,
                origin,
                topic,
                exc,
                f" (paused for {_DLQ_PAUSE:.0f}s)" if isinstance(exc, KafkaTimeoutError) else "",
            )
            return
        future.add_callback(self._dlq_sent)
        future.add_errback(self._dlq_failed, origin)

    def _dlq_sent(self, _metadata: Any) -> None:
        self.stats["dead_letter_sent"] += 1

    def _dlq_failed(self, exc: BaseException, origin: str) -> None:
        self.stats["dead_letter_failed"] += 1
        log.warning(
            "kafka source %s: dead letter of %s to %s failed: %s",
            self.source_id,
            origin,
            self.config.dead_letter_topic,
            exc,
        )

    def _flush_dead_letters(self) -> None:
        producer = self._producer
        if producer is None:
            return
        try:
            producer.flush(timeout=FLUSH_TIMEOUT)
        except KafkaError as exc:
            log.warning(
                "kafka source %s: dead letters not flushed in %.0fs: %s",
                self.source_id,
                FLUSH_TIMEOUT,
                exc,
            )


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Forwards group rebalances to the source (runs on the client's I/O thread)."""

    def __init__(self, source: KafkaSource, consumer: Any) -> None:
        self._source = source
        self._consumer = consumer

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._source._on_revoked(revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._source._on_assigned(self._consumer, assigned)


class _Health:
    """Tracks whether the poller's client has any broker connection, and a hung broker.

    A broker that refuses connections shows as no connection (``next_batch()`` raises
    after :data:`OUTAGE_GRACE`). A hung one (stopped, or its disk stuck) keeps its TCP
    connections, even accepts new ones, and answers nothing: the client's requests
    wait until ``request_timeout``, then it reconnects and waits again. That is
    reported as the ``broker`` problem (``degraded``) once no byte has come from any
    broker for :data:`HUNG_AFTER` seconds while a request waits as long, until a byte
    comes again. A JoinGroup, which a broker rightly holds up to ``max_poll_interval``,
    does not count as waiting.
    """

    def __init__(self) -> None:
        self.checked = 0.0
        self.connected_at = time.monotonic()
        self.warned_unassigned = False
        self.hung_since: float | None = None

    def update(self, source: KafkaSource, consumer: Any) -> None:
        now = time.monotonic()
        if now - self.checked < _HEALTH_EVERY:
            return
        self.checked = now
        self._check_hung(source, consumer, now)
        connected = _connection_count(consumer) != 0
        with source._lock:
            if connected:
                source._no_broker_since = None
            elif source._no_broker_since is None:
                source._no_broker_since = now
            unassigned = not source._assigned
        if (
            connected
            and unassigned
            and not self.warned_unassigned
            and now - self.connected_at > _NO_ASSIGNMENT_WARNING
        ):
            self.warned_unassigned = True
            problem = (
                f"no partition assigned {now - self.connected_at:.0f}s after connecting; "
                f"do the topics {', '.join(source.config.topics)} exist?"
            )
            with source._lock:
                source._unassigned_problem = problem
            log.warning("kafka source %s: %s", source.source_id, problem)

    def _check_hung(self, source: KafkaSource, consumer: Any, now: float) -> None:
        cfg = source.config
        join_span = max(cfg.request_timeout, cfg.max_poll_interval + 5.0)
        stall = _stall(consumer, now, join_span if join_span > cfg.request_timeout else None)
        if stall is None:
            return
        waited, quiet = stall
        if self.hung_since is None and min(waited, quiet) >= HUNG_AFTER:
            self.hung_since = now - quiet
            log.warning(
                "kafka source %s: no answer from %s for %.0fs while requests wait "
                "(hung broker?); they time out after %gs",
                source.source_id,
                source._servers,
                quiet,
                cfg.request_timeout,
            )
        elif self.hung_since is not None and now - quiet > self.hung_since:
            log.info("kafka source %s: the broker answers again", source.source_id)
            self.hung_since = None
        problem = ""
        if self.hung_since is not None:
            problem = (
                f"no answer from {source._servers} for {now - self.hung_since:.0f}s while "
                f"requests wait (hung broker?); they time out after {cfg.request_timeout:g}s"
            )
        with source._lock:
            source._hung_problem = problem


class _Poller(threading.Thread):
    """Owns the consumer: connects (retrying), polls, commits, and closes it."""

    def __init__(self, source: KafkaSource) -> None:
        super().__init__(name=f"kafka-poller-{source.source_id}", daemon=True)
        self.source = source
        self.stop = threading.Event()

    def run(self) -> None:
        src = self.source
        backoff = 0.5
        consumer: Any = None
        health = _Health()
        stalled = False
        try:
            while not self.stop.is_set():
                if consumer is None:
                    try:
                        consumer = src._build_clients()
                    except Exception as exc:  # KafkaError, SecretError, OSError, bad options
                        src._report(
                            f"cannot connect to Kafka at {src._servers}: "
                            f"{type(exc).__name__}: {exc}"
                        )
                        self.stop.wait(backoff)
                        backoff = min(2 * backoff, src.config.reconnect_backoff_max)
                        continue
                    backoff = 0.5
                    health = _Health()
                    log.info(
                        "kafka source %s: connected to %s; group %s, topics %s",
                        src.source_id,
                        src._servers,
                        src.config.group_id,
                        ", ".join(src.config.topics),
                    )
                idle = time.monotonic() - src._last_call
                if idle > src.config.max_poll_interval:
                    # The daemon stopped taking batches (stuck, or backing off for long):
                    # stop polling too, so the group gives the partitions to a member
                    # that works, as it would without the poller.
                    if not stalled:
                        stalled = True
                        log.warning(
                            "kafka source %s: no batch taken for %.0fs (max_poll_interval); "
                            "not polling, the group will reassign the partitions",
                            src.source_id,
                            idle,
                        )
                    self.stop.wait(0.1)
                    continue
                stalled = False
                try:
                    src._poll_once(consumer, health)
                except KafkaError as exc:
                    src._report(f"kafka poll failed: {type(exc).__name__}: {exc}")
                    self.stop.wait(0.5)
                except Exception as exc:  # a client bug: start over with a new consumer
                    log.exception("kafka source %s: the consumer failed", src.source_id)
                    src._report(f"kafka consumer failed: {type(exc).__name__}: {exc}")
                    _close_quietly(consumer)
                    consumer = None
                    self.stop.wait(backoff)
        finally:
            if consumer is not None:
                src._finish(consumer)


def _close_quietly(consumer: Any) -> None:
    try:
        consumer.close(autocommit=False, timeout_ms=1000)
    except Exception:
        log.debug("closing a failed consumer", exc_info=True)


def _close_producer(producer: Any, timeout: float, source_id: str) -> None:
    try:
        producer.flush(timeout=timeout)
    except KafkaError as exc:
        log.warning("kafka source %s: dead letters not flushed on close: %s", source_id, exc)
    try:
        producer.close(timeout=timeout)
    except Exception as exc:
        log.warning("kafka source %s: closing the dead-letter producer: %s", source_id, exc)


def _connection_count(consumer: Any) -> float | None:
    """Open broker connections, from the client's metrics (None if it has no such metric)."""
    try:
        value = consumer.metrics().get("consumer-metrics", {}).get("connection-count")
    except Exception:  # metrics are an aid, never a reason to fail
        return None
    return None if value is None else float(value)


def _stall(consumer: Any, now: float, long_span: float | None) -> tuple[float, float] | None:
    """``(oldest request's wait, seconds since any byte came)`` of the consumer's client.

    Requests whose deadline is ``long_span`` after they were sent (JoinGroup) are not
    counted. From kafka-python 3.0's connection manager (its in-flight requests and its
    ``bytes-received`` sensor), which no public API shows; None if they are not there,
    and then a hung broker goes unreported until its requests time out.
    """
    try:
        waited = 0.0
        for conn in list(consumer._manager._conns.values()):
            for entry in list(conn.in_flight_requests):
                sent, deadline = entry[2], entry[3]
                if long_span is None or deadline - sent < long_span - 0.5:
                    waited = max(waited, now - sent)
        sensor = consumer._metrics.get_sensor("bytes-received")
        if sensor is None:
            return None
        return waited, now - sensor._last_record_time / 1000.0
    except Exception:  # internals of the client: an aid, never a reason to fail
        return None


def _tp_list(tps: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}:{tp.partition}" for tp in sorted(tps)) or "nothing"


def _parse_resume(
    resume: dict[str, Any] | None, topics: list[str], source_id: str
) -> dict[TopicPartition, int]:
    """Positions from a checkpoint; positions of topics no longer configured are dropped."""
    if resume is None:
        return {}
    if not isinstance(resume, dict):
        raise ValueError(f"invalid kafka resume state {resume!r}: expected a mapping")
    out: dict[TopicPartition, int] = {}
    dropped: list[str] = []
    for key, offset in resume.items():
        topic, sep, part = str(key).rpartition(":")
        if (
            not sep
            or not topic
            or not part.isdigit()
            or not isinstance(offset, int)
            or isinstance(offset, bool)
            or offset < 0
        ):
            msg = (
                f"invalid kafka resume state entry {key!r}: {offset!r}; expected "
                '{"topic:partition": next offset (int >= 0)}'
            )
            raise ValueError(msg)
        if topic in topics:
            out[TopicPartition(topic, int(part))] = offset
        else:
            dropped.append(str(key))
    if dropped:
        log.info(
            "kafka source %s: dropping checkpointed positions of topics no longer configured: %s",
            source_id,
            ", ".join(sorted(dropped)),
        )
    return out
