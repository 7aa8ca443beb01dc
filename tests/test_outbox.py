"""The durable outbox: dedupe, back-off, Retry-After, breaker, dead letters, schema."""

import dataclasses
import logging
import random
import sqlite3
import threading
import time

import pytest

from aiops.alerting.notify import (
    Alert,
    Delivered,
    Notification,
    Notifier,
    PermanentFailure,
    RetryAfter,
)
from aiops.alerting.outbox import (
    SCHEMA_VERSION,
    DeliveryPolicy,
    Integration,
    Outbox,
    OutboxSchemaError,
    backoff_delay,
)
from aiops.testing import FakeClock, ListNotifier


def note(i=0, status="firing", receiver="ops"):
    a = Alert(
        f"fp{i}", status, {"alertname": "Lat", "host": f"h{i}"}, {}, 100.0 + i, value=2.0, score=1.0
    )
    return Notification(receiver, [a])


def make(tmp_path, notifier, clock=None, **policy):
    clock = clock or FakeClock(1000.0)
    outcomes = []
    box = Outbox(
        tmp_path / "outbox.sqlite",
        [Integration("ops", "test[0]", notifier)],
        policy=DeliveryPolicy(**policy),
        clock=clock,
        rng=random.Random(7),
        on_outcome=lambda r, o: outcomes.append((r, o)),
    )
    return box, clock, outcomes


def test_append_delivers_once_and_a_replayed_notification_is_not_queued_again(tmp_path):
    sink = ListNotifier()
    box, _, outcomes = make(tmp_path, sink)
    assert box.append(note(1)) == 1
    assert box.append(note(1)) == 0  # same idempotency key
    assert box.deliver_due() == 1
    assert [n.idempotency_key for n in sink.sent] == [note(1).idempotency_key]
    assert sink.sent[0] == note(1)  # the whole notification survives the round trip
    assert outcomes == [("ops", "delivered")]
    box.close()
    # After a restart (a new Outbox on the same file) the replayed key is still known.
    box2, _, _ = make(tmp_path, sink)
    assert box2.append(note(1)) == 0
    assert box2.append(note(1, "resolved")) == 1
    assert box2.deliver_due() == 1
    hist = box2.history()
    assert [(e.status, e.state) for e in hist] == [
        ("resolved", "delivered"),
        ("firing", "delivered"),
    ]


def test_every_integration_of_a_receiver_gets_its_own_row(tmp_path):
    a, b = ListNotifier(), ListNotifier()
    box = Outbox(
        tmp_path / "o.sqlite",
        [Integration("ops", "x[0]", a), Integration("ops", "x[1]", b)],
        clock=FakeClock(10.0),
    )
    assert box.submit([note(1), note(2)]) == 4
    box.deliver_due()
    assert len(a.sent) == len(b.sent) == 2
    assert box.append(note(3, receiver="nobody")) == 0


def test_back_off_is_full_jitter_on_the_fake_clock(tmp_path):
    sink = ListNotifier([RetryAfter("down"), RetryAfter("down"), Delivered()])
    box, clock, outcomes = make(tmp_path, sink, base_delay=2.0, max_delay=60.0)
    box.append(note(1))
    expected = random.Random(7)
    box.deliver_due()
    first = backoff_delay(1, box.policy, expected)
    (entry,) = box.history()
    assert entry.attempts == 1
    assert entry.next_attempt == pytest.approx(1000.0 + first)
    assert entry.last_error == "down"
    assert 0 <= first <= 2.0
    clock.advance(first - 0.001)
    assert box.deliver_due() == 0  # not due yet
    clock.advance(0.002)
    assert box.deliver_due() == 1
    second = backoff_delay(2, box.policy, expected)
    assert 0 <= second <= 4.0
    clock.advance(second + 0.001)
    assert box.deliver_due() == 1
    assert [o for _, o in outcomes] == ["retry", "retry", "delivered"]
    assert box.history()[0].state == "delivered"


def test_backoff_ceiling_doubles_up_to_max_delay():
    p = DeliveryPolicy(base_delay=1.0, max_delay=10.0)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (40, 10), (500, 10)]:
        draws = [backoff_delay(attempt, p, rng) for _ in range(300)]
        assert min(draws) >= 0
        assert max(draws) <= ceiling
        assert max(draws) > 0.8 * ceiling  # jitter spans the whole range


def test_retry_after_is_honoured_and_holds_the_integrations_other_rows(tmp_path):
    sink = ListNotifier([RetryAfter("429 too many requests", seconds=30.0)])
    box, clock, _ = make(tmp_path, sink, base_delay=0.1)
    box.submit([note(1), note(2)])
    assert box.deliver_due() == 1  # the first answers 429; the second must wait too
    clock.advance(29.0)
    assert box.deliver_due() == 0
    clock.advance(1.5)
    assert box.deliver_due() == 2
    assert len(sink.sent) == 3


def test_permanent_failure_goes_to_the_dead_letters_and_retry_brings_it_back(tmp_path):
    sink = ListNotifier([PermanentFailure("400 invalid routing key")])
    box, _, outcomes = make(tmp_path, sink)
    box.append(note(1))
    box.deliver_due()
    assert outcomes == [("ops", "permanent")]
    (dead,) = box.dead_letters()
    assert (dead.kind, dead.reason, dead.attempts) == ("permanent", "400 invalid routing key", 1)
    assert dead.alertnames == "Lat"
    assert box.history() == []
    assert box.append(note(1)) == 0  # a replay does not revive it
    assert box.append(note(2)) == 1  # while another key is queued beside it
    assert box.stats()["ops"].dead == 1
    assert box.retry([dead.id + 100]) == 0
    assert box.retry([dead.id]) == 1
    assert box.dead_letters() == []
    box.deliver_due()
    assert len(sink.sent) == 3
    assert [e.state for e in box.history()] == ["delivered", "delivered"]


def test_max_attempts_and_max_age_dead_letter(tmp_path):
    sink = ListNotifier([RetryAfter("down")] * 10)
    box, clock, outcomes = make(tmp_path, sink, max_attempts=3, base_delay=1.0, breaker_failures=99)
    box.append(note(1))
    for _ in range(5):
        box.deliver_due()
        clock.advance(5.0)
    assert [o for _, o in outcomes] == ["retry", "retry", "dead"]
    assert box.dead_letters()[0].kind == "max_attempts"

    box2, clock2, outcomes2 = make(
        tmp_path / "b", ListNotifier([RetryAfter("down")] * 10), max_age=60.0, breaker_failures=99
    )
    box2.append(note(2))
    box2.deliver_due()
    clock2.advance(61.0)
    box2.deliver_due()
    assert [o for _, o in outcomes2] == ["retry", "dead"]
    assert box2.dead_letters()[0].kind == "max_age"


def test_circuit_breaker_opens_then_probes_half_open(tmp_path):
    sink = ListNotifier([RetryAfter("down")] * 4)
    box, clock, _ = make(
        tmp_path, sink, breaker_failures=3, breaker_cooldown=100.0, base_delay=0.01, max_delay=0.01
    )
    box.submit([note(i) for i in range(5)])
    for _ in range(3):
        box.deliver_due()
        clock.advance(0.02)
    assert len(sink.sent) == 3
    assert box.breaker_state("ops", "test[0]") == "open"
    clock.advance(50.0)
    assert box.deliver_due() == 0  # open: nothing attempted, attempts not spent
    clock.advance(50.0)
    assert box.breaker_state("ops", "test[0]") == "half_open"
    assert box.deliver_due() == 1  # one probe; it fails: open again
    assert len(sink.sent) == 4
    assert box.breaker_state("ops", "test[0]") == "open"
    clock.advance(100.0)
    assert box.deliver_due() == 5  # the probe succeeds: closed, the rest goes
    assert box.breaker_state("ops", "test[0]") == "closed"
    assert box.stats()["ops"].pending == 0


class TracedOutbox(Outbox):
    """An outbox that records every SQL statement with the name of the thread running it."""

    def __init__(self, *args, **kwargs):
        self.statements = []
        super().__init__(*args, **kwargs)

    def _connect(self, *, durable=False):
        conn = super()._connect(durable=durable)
        conn.set_trace_callback(
            lambda sql: self.statements.append((threading.current_thread().name, sql))
        )
        return conn


def test_with_its_breaker_open_a_worker_does_nothing_until_the_probe(tmp_path, caplog):
    down = ListNotifier([RetryAfter("down")] * 100)
    cooldown = 2.5
    box = TracedOutbox(
        tmp_path / "o.sqlite",
        [Integration("ops", "x[0]", down)],
        policy=DeliveryPolicy(
            breaker_failures=3, breaker_cooldown=cooldown, base_delay=30.0, poll_interval=0.05
        ),
    )
    caplog.set_level(logging.DEBUG, logger="aiops.alerting.outbox")
    worker = "outbox-ops-x[0]"
    box.start()
    try:
        box.submit([note(i) for i in range(3)])
        deadline = time.monotonic() + 10
        while box.breaker_state("ops", "x[0]") != "open" and time.monotonic() < deadline:
            time.sleep(0.01)
        opened = time.monotonic()
        assert len(down.sent) == 3
        time.sleep(0.2)  # the worker records its third failure
        assert any(name == worker for name, _ in box.statements)  # the trace sees it
        box.statements.clear()
        caplog.clear()
        # An alert storm while the breaker is open: the appender writes every row...
        i = 3
        while time.monotonic() - opened < 1.0:
            box.submit([note(i)])
            i += 1
            time.sleep(0.01)
        assert box.flush()
        assert any(name == "outbox-appender" and "INSERT" in sql for name, sql in box.statements)
        # ...and the worker is not woken for them: no attempt, no query, no log line.
        assert len(down.sent) == 3
        assert [sql for name, sql in box.statements if name == worker] == []
        assert caplog.records == []
        # After the cooldown one probe (half open); it fails and the breaker opens again.
        while len(down.sent) < 4 and time.monotonic() < opened + cooldown + 10:
            time.sleep(0.01)
        assert len(down.sent) == 4
        assert time.monotonic() - opened >= cooldown - 0.3
        time.sleep(0.3)
        assert len(down.sent) == 4
        assert box.breaker_state("ops", "x[0]") == "open"
        assert len(caplog.records) == 1  # the probe's failure, once
    finally:
        box.close()
    assert box.stats()["ops"].pending == i


class Raising(Notifier):
    def send(self, notification):
        raise RuntimeError("bug")


class Blocking(Notifier):
    def __init__(self):
        self.release = threading.Event()
        self.started = threading.Event()
        self.sent = []

    def send(self, notification):
        self.started.set()
        self.release.wait(10)
        self.sent.append(notification)
        return Delivered()


def test_a_raising_notifier_is_a_retry(tmp_path):
    box, _, outcomes = make(tmp_path, Raising())
    box.append(note(1))
    box.deliver_due()
    assert outcomes == [("ops", "retry")]
    assert "notifier raised RuntimeError: bug" in box.history()[0].last_error


def test_an_attempt_past_its_timeout_is_a_retry_and_not_sent_twice_at_once(tmp_path):
    slow = Blocking()
    box, clock, _ = make(tmp_path, slow, attempt_timeout=0.2, base_delay=0.01)
    box.append(note(1))
    box.deliver_due()
    assert box.history()[0].last_error == "no answer within 0.2s"
    clock.advance(1.0)
    box.deliver_due()  # the first send still runs: no second send in parallel
    assert "previous attempt" in box.history()[0].last_error
    slow.release.set()
    time.sleep(0.1)
    clock.advance(10.0)
    box.deliver_due()
    assert box.history()[0].state == "delivered"
    assert len(slow.sent) == 2  # the late first answer is ignored; the row was resent


def test_unreadable_row_is_dead_lettered_not_a_crash(tmp_path):
    box, _, outcomes = make(tmp_path, ListNotifier())
    box.append(note(1))
    con = sqlite3.connect(tmp_path / "outbox.sqlite")
    con.execute("UPDATE outbox SET payload='{not json'")
    con.commit()
    con.close()
    box.deliver_due()
    assert outcomes == [("ops", "dead")]
    assert box.dead_letters()[0].reason.startswith("unreadable row")


def test_workers_deliver_in_the_background_and_append_never_waits_for_them(tmp_path):
    slow = Blocking()
    box = Outbox(
        tmp_path / "o.sqlite",
        [Integration("ops", "slow[0]", slow), Integration("fast", "l[0]", ListNotifier())],
        policy=DeliveryPolicy(poll_interval=0.05),
    )
    box.start()
    try:
        box.append(note(1))
        assert slow.started.wait(5)
        # The worker is stuck in a send; the data loop's appends still return.
        for i in range(2, 50):
            box.append(note(i))
        box.append(note(1, receiver="fast"))
        assert box.flush()  # the appender wrote them while the send still hangs
        assert not slow.release.is_set()
        deadline = time.monotonic() + 5
        while box.stats()["fast"].pending and time.monotonic() < deadline:
            time.sleep(0.02)
        assert box.stats()["fast"].pending == 0  # another receiver is not held up
        assert box.stats()["ops"].pending == 49
    finally:
        slow.release.set()
        box.stop()
    stats = box.stats()["ops"]
    assert stats.pending < 49


def test_stop_leaves_pending_rows_for_the_next_start(tmp_path):
    always_down = ListNotifier([RetryAfter("down")] * 1000)
    box = Outbox(
        tmp_path / "o.sqlite",
        [Integration("ops", "x[0]", always_down)],
        policy=DeliveryPolicy(poll_interval=0.05, base_delay=0.01, max_delay=0.05),
    )
    box.start()
    box.submit([note(i) for i in range(3)])
    time.sleep(0.3)
    box.close()
    assert box.stats()["ops"].pending == 3
    sink = ListNotifier()
    box2 = Outbox(
        tmp_path / "o.sqlite",
        [Integration("ops", "x[0]", sink)],
        policy=DeliveryPolicy(poll_interval=0.05),
    )
    box2.start()
    deadline = time.monotonic() + 5
    while len(sink.sent) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    box2.close()
    assert sorted(n.alerts[0].fingerprint for n in sink.sent) == ["fp0", "fp1", "fp2"]


def test_a_newer_schema_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "outbox.sqlite"
    Outbox(path).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    before = path.read_bytes()
    with pytest.raises(OutboxSchemaError, match=r"schema version 2, newer than this aiopsd's 1"):
        Outbox(path)
    assert path.read_bytes() == before


def test_a_foreign_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "outbox.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE something (x)")
    con.commit()
    con.close()
    with pytest.raises(OutboxSchemaError, match="not an aiopsd outbox"):
        Outbox(path)


def test_the_file_is_in_wal_mode_with_its_schema_version(tmp_path):
    path = tmp_path / "outbox.sqlite"
    Outbox(path).close()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "1"


def test_policy_validation():
    with pytest.raises(ValueError, match="base_delay must be > 0"):
        DeliveryPolicy(base_delay=0)
    with pytest.raises(ValueError, match="max_attempts"):
        DeliveryPolicy(max_attempts=0)


def test_a_database_error_on_append_keeps_the_rows_and_pump_appends_them_later(tmp_path):
    sink = ListNotifier()
    box, _, _ = make(tmp_path, sink)
    blocker = sqlite3.connect(tmp_path / "outbox.sqlite", timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the file
    box.busy_timeout = 0.05
    box._local.conn.execute("PRAGMA busy_timeout=50")
    assert box.append(note(1)) == 0
    assert box.backlog == 1
    box.pump()
    assert box.backlog == 1
    blocker.rollback()
    blocker.close()
    box.pump()
    assert box.backlog == 0
    box.deliver_due()
    assert [n.alerts[0].fingerprint for n in sink.sent] == ["fp1"]


def test_once_started_append_does_not_wait_for_a_locked_database(tmp_path):
    sink = ListNotifier()
    box = Outbox(
        tmp_path / "o.sqlite",
        [Integration("ops", "x[0]", sink)],
        policy=DeliveryPolicy(poll_interval=0.05),
        busy_timeout=0.05,
    )
    box.start()
    blocker = sqlite3.connect(tmp_path / "o.sqlite", timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")  # a writer that holds the lock (a busy worker, a CLI)
    try:
        box.append(note(1))  # returns: the appender thread waits, not the data loop
        assert box.flush(timeout=0.3) is False
    finally:
        blocker.rollback()
        blocker.close()
    assert box.flush(timeout=5) is True
    deadline = time.monotonic() + 5
    while not sink.sent and time.monotonic() < deadline:
        time.sleep(0.02)
    box.close()
    assert [n.alerts[0].fingerprint for n in sink.sent] == ["fp1"]


def test_a_notifier_without_charts_gets_and_stores_no_windows(tmp_path):
    from aiops.alerting.notify import AlertWindow

    class Plain(ListNotifier):
        uses_window = False

    window = AlertWindow((0.0, 60.0), (1.0, 9.0), (0.5, 0.5), (1.5, 1.5), (False, True), 0.99)
    a = Alert("fpw", "firing", {"alertname": "Lat"}, {}, 100.0, value=9.0, score=1.0, window=window)
    charts, plain = ListNotifier(), Plain()
    box = Outbox(
        tmp_path / "outbox.sqlite",
        [Integration("ops", "chart[0]", charts), Integration("ops", "plain[0]", plain)],
        clock=FakeClock(1000.0),
    )
    box.append(Notification("ops", [a]))
    box.deliver_due()
    assert charts.sent[0].alerts[0].window == window
    assert plain.sent[0].alerts[0].window is None
    assert plain.sent[0].alerts[0].score == 1.0  # everything else is there
    rows = dict(
        sqlite3.connect(tmp_path / "outbox.sqlite").execute(
            "SELECT integration, length(payload) FROM outbox"
        )
    )
    assert rows["plain[0]"] < rows["chart[0]"]
    box.close()


def test_the_payload_arrays_name_every_field_of_the_dataclasses():
    from aiops.alerting.notify import AlertWindow
    from aiops.alerting.outbox import ALERT_FIELDS, NOTIFICATION_FIELDS, WINDOW_FIELDS

    # A field missing here would be dropped from every row without a word.
    for cls, names in (
        (Notification, NOTIFICATION_FIELDS),
        (Alert, ALERT_FIELDS),
        (AlertWindow, WINDOW_FIELDS),
    ):
        assert sorted(names) == sorted(f.name for f in dataclasses.fields(cls)), cls
    assert ALERT_FIELDS[-1] == "window"  # left out as the last item when not wanted


def test_every_field_round_trips_exactly_through_the_database(tmp_path):
    from aiops.alerting.notify import AlertWindow

    class Plain(ListNotifier):
        uses_window = False

    rng = random.Random(3)
    odd = [0.1 + 0.2, 1e-300, 5e-324, 1.7976931348623157e308, -0.0, 1700000000.123456]
    floats = odd + [rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-20, 20) for _ in range(200)]
    nan = float("nan")
    window = AlertWindow(
        tuple(floats[:50]),
        (nan, *floats[51:100]),
        tuple(floats[100:150]),
        (*floats[150:199], nan),
        tuple(rng.random() < 0.5 for _ in range(50)),
        0.999,
    )
    alerts = [
        Alert(
            f"fp{i}",
            "resolved" if i else "firing",
            {"alertname": "Lat", "host": 'h"\\\u2028\x01é', "ütf": "ok"},
            {"summary": "line\nbreak"},
            floats[i],
            ends_at=None if i == 0 else floats[i + 1],
            value=nan if i == 1 else floats[i + 2],
            score=floats[i + 3],
            series='lat{host="h"}',
            rule="g/Lat",
            detector="ensemble",
            model_version="v1",
            window=window,
        )
        for i in range(3)
    ]
    n = Notification("ops", alerts, {"alertname": "Lat"}, repeat=3)
    charts, plain = ListNotifier(), Plain()
    box = Outbox(
        tmp_path / "outbox.sqlite",
        [Integration("ops", "chart[0]", charts), Integration("ops", "plain[0]", plain)],
        clock=FakeClock(1000.0),
    )
    box.append(n)
    box.deliver_due()
    box.close()

    def same(a, b):  # NaN equals NaN, and the sign of a zero counts
        return repr(a) == repr(b)

    got = charts.sent[0]
    assert same(got, n)
    assert same(
        plain.sent[0],
        Notification(
            "ops", [dataclasses.replace(a, window=None) for a in alerts], {"alertname": "Lat"}, 3
        ),
    )


def test_rows_of_the_older_object_format_still_deliver(tmp_path):
    import json

    import orjson

    sink = ListNotifier()
    box, _, _ = make(tmp_path, sink)
    box.append(note(1))
    old = orjson.dumps(note(2)).decode()  # how rows were written before the arrays
    older = json.dumps(
        {**json.loads(old), "alerts": [{**json.loads(old)["alerts"][0], "value": float("nan")}]}
    )
    con = sqlite3.connect(tmp_path / "outbox.sqlite")
    con.execute("UPDATE outbox SET payload=?", (older,))  # NaN literal: the stdlib encoder
    con.commit()
    con.close()
    box.deliver_due()
    box.close()
    [got] = sink.sent
    assert got.alerts[0].fingerprint == "fp2"
    assert got.alerts[0].value != got.alerts[0].value  # NaN


def test_the_backlog_keeps_the_newest_rows_up_to_its_bound(monkeypatch):
    from aiops.alerting import outbox

    monkeypatch.setattr(outbox, "MAX_BACKLOG", 5)
    batches = [outbox._Rows(b"[]", c, set()) for c in (2, 2, 2, 1)]
    assert [b.count for b in outbox._bounded(batches)] == [2, 2, 1]
    assert [b.count for b in outbox._bounded([outbox._Rows(b"[]", 9, set())])] == [9]
    joined = outbox._join([outbox._Rows(b"[1,2]", 2, set()), outbox._Rows(b"[[3]]", 1, set())])
    assert joined == b"[1,2,[3]]"


def test_batches_of_no_rows_join_into_valid_json():
    # An acknowledgement for a receiver none of whose integrations takes one encodes to no
    # rows; the appender may then write it beside others in one statement.
    from aiops.alerting.outbox import _join, _Rows

    parts = [_Rows(b"[1]", 1, set()), _Rows(b"[]", 0, set()), _Rows(b'[2,"x"]', 2, set())]
    assert _join(parts) == b'[1,2,"x"]'
    assert _join([_Rows(b"[]", 0, set())]) == b"[]"


def test_attempts_run_on_one_thread_per_integration_which_comes_back_after_a_stop(tmp_path):
    class Where(ListNotifier):
        def __init__(self):
            super().__init__()
            self.threads = []

        def send(self, notification):
            self.threads.append(threading.current_thread())
            return super().send(notification)

    sink = Where()
    box, _, _ = make(tmp_path, sink)
    for i in range(3):
        box.append(note(i))
    box.deliver_due()
    assert len(sink.sent) == 3
    first = sink.threads[0]
    assert sink.threads == [first] * 3  # not a thread started per attempt
    assert first is not threading.current_thread()
    box.stop()
    first.join(5)
    assert not first.is_alive()  # a stop ends it
    box.append(note(9))
    box.deliver_due()
    assert [n.alerts[0].fingerprint for n in sink.sent][-1] == "fp9"
    assert sink.threads[-1] is not first
    assert sink.threads[-1].is_alive()
    box.close()


def _mixed_notifications():
    from aiops.alerting.notify import AlertWindow

    window = AlertWindow((0.0, 60.0), (1.0, 9.0), (0.5, 0.5), (1.5, 1.5), (False, True), 0.99)
    one = note(1)
    two = Notification(
        "ops",
        [note(2).alerts[0], dataclasses.replace(note(3).alerts[0], window=window)],
        {"alertname": "Lat"},
        repeat=2,
    )
    ack = Notification(
        "ops", [note(4).alerts[0]], {"alertname": "Lat"}, action="acknowledge", actor="ann"
    )
    windowed = Notification("ops", [dataclasses.replace(note(5).alerts[0], window=window)])
    resolved = note(6, status="resolved")
    return [one, two, ack, windowed, resolved]


@pytest.mark.parametrize("started", [False, True])
def test_rows_from_the_appender_hold_each_notifications_key_and_every_field(tmp_path, started):
    class Plain(ListNotifier):
        uses_window = False

    class Acks(ListNotifier):
        acknowledges = True

    charts, plain, acks = ListNotifier(), Plain(), Acks()
    box = Outbox(
        tmp_path / "outbox.sqlite",
        [
            Integration("ops", "chart[0]", charts),
            Integration("ops", "plain[0]", plain),
            Integration("ops", "acks[0]", acks),
        ],
        clock=FakeClock(1000.0),
    )
    notes = _mixed_notifications()
    if started:
        box.start()
    assert box.submit(notes[:2]) == (2 if started else 6)
    assert box.submit(notes[2:]) == (3 if started else 7)
    assert box.flush()
    if started:
        box.stop()
    rows = sqlite3.connect(tmp_path / "outbox.sqlite").execute(
        "SELECT integration, idempotency_key, status, payload FROM outbox ORDER BY id"
    )
    from aiops.alerting.outbox import decode_notification

    def bare(n):
        return dataclasses.replace(
            n, alerts=[dataclasses.replace(a, window=None) for a in n.alerts]
        )

    want = []
    for n in notes:
        for name in ("chart[0]", "plain[0]", "acks[0]"):
            if n.action == "notify" or name == "acks[0]":
                status = n.status if n.action == "notify" else n.action
                doc = bare(n) if name == "plain[0]" else n
                want.append((name, n.idempotency_key, status, doc))
    got = [(r[0], r[1], r[2], decode_notification(r[3])) for r in rows]
    assert got == want
    box.close()


def test_a_notification_that_cannot_be_encoded_is_logged_and_holds_up_nothing(tmp_path, caplog):
    sink = ListNotifier()
    box, _, _ = make(tmp_path, sink)
    bad = Notification("ops", [dataclasses.replace(note(2).alerts[0], labels={"a": object()})])
    box.start()
    try:
        assert box.submit([note(1), bad, note(3)]) == 3  # handed over: the loop saw nothing
        assert box.flush(timeout=5)  # a checkpoint is not held back by it
    finally:
        box.stop()
    assert "cannot be encoded" in caplog.text
    assert [e.idempotency_key for e in box.history()][::-1] == [
        note(1).idempotency_key,
        note(3).idempotency_key,
    ]
    # Before start (written at once) too.
    assert box.submit([bad, note(4)]) == 1
    box.close()


def test_rows_are_appended_with_synchronous_full_and_workers_commit_normal(tmp_path):
    sink = ListNotifier()
    box = Outbox(
        tmp_path / "o.sqlite",
        [Integration("ops", "l[0]", sink)],
        policy=DeliveryPolicy(poll_interval=0.05),
    )
    seen = {}
    connect = box._connect

    def record(**kw):
        conn = connect(**kw)
        seen[threading.current_thread().name] = conn.execute("PRAGMA synchronous").fetchone()[0]
        return conn

    box._connect = record
    box.start()
    try:
        box.append(note(1))
        assert box.flush()
        deadline = time.monotonic() + 5
        while not sink.sent and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sink.sent
    finally:
        box.close()
    assert seen["outbox-appender"] == 2  # FULL: on disk before a checkpoint covers it
    assert seen["outbox-ops-l[0]"] == 1  # NORMAL: a lost update is a resend, by its key


def test_a_subclass_of_notification_is_stored_like_its_base(tmp_path):
    class Plain(ListNotifier):
        uses_window = False

    @dataclasses.dataclass(frozen=True)
    class Mine(Notification):
        pass

    charts, plain = ListNotifier(), Plain()
    box = Outbox(
        tmp_path / "o.sqlite",
        [Integration("ops", "chart[0]", charts), Integration("ops", "plain[0]", plain)],
        clock=FakeClock(1000.0),
    )
    n = note(1)
    assert box.submit([Mine(n.receiver, n.alerts, {"alertname": "Lat"})]) == 2
    box.deliver_due()
    box.close()
    want = Notification(n.receiver, n.alerts, {"alertname": "Lat"})
    assert charts.sent == [want]
    assert plain.sent == [want]
