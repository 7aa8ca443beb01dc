"""Aggregation groups over an alert's life, with a fake clock (Alertmanager's semantics)."""

from __future__ import annotations

import itertools
import json

import pytest

from aiops.alerting.groups import DataClock, Groups, InhibitionIndex
from aiops.alerting.notify import Alert, Notification
from aiops.alerting.routing import Inhibition, RouteNode, SilenceWindow
from aiops.alerting.selector import Matcher, parse_matchers
from aiops.testing import FakeClock

WAIT, INTERVAL, REPEAT = 30.0, 300.0, 3600.0


def node(receiver="team", *, group_by=("alertname",), routes=(), matchers="", **kw):
    return RouteNode(
        receiver,
        matchers=tuple(parse_matchers(matchers)),
        group_by=group_by,
        routes=routes,
        group_wait=kw.pop("group_wait", WAIT),
        group_interval=kw.pop("group_interval", INTERVAL),
        repeat_interval=kw.pop("repeat_interval", REPEAT),
        **kw,
    )


def firing(fp, t=0.0, **labels):
    return Alert(fp, "firing", {"alertname": "A", **labels}, {}, starts_at=t)


def resolved(fp, t=0.0, end=1.0, **labels):
    return Alert(fp, "resolved", {"alertname": "A", **labels}, {}, starts_at=t, ends_at=end)


def sent(notifications: list[Notification]) -> list[tuple[str, list[tuple[str, str]]]]:
    return [(n.receiver, [(a.fingerprint, a.status) for a in n.alerts]) for n in notifications]


class Run:
    """Groups on a fake clock, with every notification kept in order."""

    def __init__(self, root, clock=None, **kw):
        self.clock = clock or FakeClock(1000.0)
        self.groups = Groups(root, clock=self.clock, **kw)
        self.out: list[Notification] = []

    def insert(self, *alerts):
        self.out.extend(self.groups.route(alerts))

    def at(self, seconds):
        """Advance to ``seconds`` after the start and flush; what was sent just now."""
        self.clock.now = 1000.0 + seconds
        new = self.groups.flush()
        self.out.extend(new)
        return sent(new)


def test_two_alerts_of_one_group_a_second_apart_give_one_notification_after_group_wait():
    r = Run(node())
    r.insert(firing("a"))
    assert r.at(1) == []
    r.insert(firing("b"))
    assert r.at(29.9) == []
    assert r.at(30) == [("team", [("a", "firing"), ("b", "firing")])]
    assert r.out[0].group_labels == {"alertname": "A"}


def test_changes_are_flushed_at_most_every_group_interval():
    r = Run(node())
    r.insert(firing("a"))
    assert r.at(30) == [("team", [("a", "firing")])]
    r.insert(firing("b"))
    assert r.at(31) == []
    assert r.at(329) == []
    assert r.at(330) == [("team", [("a", "firing"), ("b", "firing")])]
    assert r.at(630) == []  # nothing changed


def test_an_unchanged_firing_group_is_resent_after_repeat_interval():
    r = Run(node())
    r.insert(firing("a"))
    assert r.at(30) == [("team", [("a", "firing")])]
    flushed = [r.at(30 + k * INTERVAL) for k in range(1, 13)]
    # Checked every group_interval; sent again once repeat_interval has passed.
    assert flushed[:11] == [[]] * 11
    assert flushed[11] == [("team", [("a", "firing")])]
    # A repeat is a new delivery (its own idempotency key); the same repeat is not.
    first, repeat = r.out
    assert (first.repeat, repeat.repeat) == (0, 1)
    assert first.idempotency_key != repeat.idempotency_key
    assert repeat.idempotency_key == Notification("team", first.alerts, repeat=1).idempotency_key
    r.insert(firing("b"))
    assert r.at(30 + 13 * INTERVAL) == [("team", [("a", "firing"), ("b", "firing")])]
    assert r.out[-1].repeat == 0  # new content starts the count again


def test_resolved_alerts_are_sent_once_then_dropped_and_the_empty_group_removed():
    r = Run(node())
    r.insert(firing("a"), firing("b"))
    r.at(30)
    r.insert(resolved("a"))
    assert r.at(330) == [("team", [("b", "firing"), ("a", "resolved")])]
    assert r.at(630) == []
    r.insert(resolved("b"))
    assert r.at(930) == [("team", [("b", "resolved")])]
    assert len(r.groups) == 0
    assert r.at(99999) == []


def test_an_alert_that_fires_and_resolves_within_group_wait_sends_nothing():
    r = Run(node())
    r.insert(firing("a"))
    r.insert(resolved("a"))
    assert r.at(30) == []
    assert len(r.groups) == 0


def test_group_by_splits_groups_and_dots_group_by_every_label():
    r = Run(node(group_by=("service",)))
    r.insert(firing("a", service="db"), firing("b", service="web"), firing("c", service="db"))
    assert sorted(r.at(30)) == [
        ("team", [("a", "firing"), ("c", "firing")]),
        ("team", [("b", "firing")]),
    ]
    r2 = Run(node(group_by=("...",)))
    r2.insert(firing("a", service="db", host="h1"), firing("c", service="db", host="h2"))
    assert sorted(r2.at(30)) == [("team", [("a", "firing")]), ("team", [("c", "firing")])]
    assert sorted(json.dumps(dict(n.group_labels), sort_keys=True) for n in r2.out) == [
        '{"alertname": "A", "host": "h1", "service": "db"}',
        '{"alertname": "A", "host": "h2", "service": "db"}',
    ]


def test_group_wait_zero_sends_on_insert():
    r = Run(node(group_wait=0.0))
    r.insert(firing("a"))
    assert sent(r.out) == [("team", [("a", "firing")])]


def test_each_matching_route_has_its_own_groups_and_timers():
    root = node(
        "default",
        routes=(
            node("pager", matchers='severity="page"', continue_=True, group_wait=10.0),
            node("db", matchers="service=db", group_wait=60.0),
        ),
    )
    r = Run(root)
    r.insert(firing("a", severity="page", service="db"))
    assert r.at(10) == [("pager", [("a", "firing")])]
    assert r.at(59) == []
    assert r.at(60) == [("db", [("a", "firing")])]


# --- silences, inhibitions and time intervals are decided at flush ------------------------


def test_a_silence_that_ends_while_the_alert_fires_notifies_at_the_next_flush():
    silence = SilenceWindow([Matcher("host", "=", "h1")], 0.0, 1000.0 + 400.0)
    r = Run(node(), silences=[silence])
    r.insert(firing("a", host="h1"))
    assert r.at(30) == []
    assert r.at(330) == []  # still silenced
    assert r.at(630) == [("team", [("a", "firing")])]
    r.insert(resolved("a", host="h1"))
    assert r.at(930) == [("team", [("a", "resolved")])]
    assert r.groups.muted["silenced"] == 2


def test_a_silence_added_while_running_applies_at_the_next_flush():
    r = Run(node())
    r.insert(firing("a", host="h1"), firing("b", host="h2"))
    r.at(30)
    r.groups.silences.append(SilenceWindow([Matcher("host", "=", "h1")], 0.0, 1e12))
    r.insert(resolved("a", host="h1"), firing("c", host="h3"))
    assert r.at(330) == [("team", [("b", "firing"), ("c", "firing")])]  # a's end is silenced


def test_a_mute_interval_that_ends_while_firing_sends_the_firing_then_the_resolution():
    class Until:
        def __init__(self, end):
            self.end = end

        def contains(self, ts):
            return ts < self.end

    r = Run(node(mute_during=(Until(1000.0 + 400.0),)))
    r.insert(firing("a"))
    assert r.at(30) == []
    assert r.at(330) == []
    assert r.at(630) == [("team", [("a", "firing")])]
    r.insert(resolved("a"))
    assert r.at(930) == [("team", [("a", "resolved")])]
    assert r.groups.muted["time interval"] == 2


def test_an_alert_that_resolves_inside_a_mute_interval_sends_nothing_at_all():
    class Until:
        def contains(self, ts):
            return ts < 1000.0 + 400.0

    r = Run(node(mute_during=(Until(),)))
    r.insert(firing("a"))
    r.at(30)
    r.insert(resolved("a"))
    assert r.at(330) == []
    assert r.at(630) == []  # the interval is over; the resolution of an unsent firing is not sent
    assert len(r.groups) == 0


def test_active_intervals_send_only_inside():
    class Hours:
        def contains(self, ts):
            return 1000.0 + 300.0 <= ts < 1000.0 + 700.0

    r = Run(node(active_during=(Hours(),)))
    r.insert(firing("a"))
    assert r.at(30) == []
    assert r.at(330) == [("team", [("a", "firing")])]


RULE = Inhibition(
    source=[Matcher("severity", "=", "critical")],
    target=[Matcher("severity", "=", "warning")],
    equal=["host"],
)


def test_inhibited_while_the_source_fires_and_notified_when_the_source_resolves_first():
    r = Run(node(group_by=("...",)), inhibitions=[RULE])
    r.insert(firing("crit", severity="critical", host="h1"))
    r.insert(firing("warn", severity="warning", host="h1"))
    r.insert(firing("other", severity="warning", host="h2"))
    assert sorted(r.at(30)) == [("team", [("crit", "firing")]), ("team", [("other", "firing")])]
    r.insert(resolved("crit", severity="critical", host="h1"))
    assert sorted(r.at(330)) == [("team", [("crit", "resolved")]), ("team", [("warn", "firing")])]
    assert r.groups.muted["inhibited"] == 1


def test_an_alert_matching_both_sides_does_not_inhibit_itself():
    both = Inhibition(
        source=[Matcher("alertname", "=", "A")],
        target=[Matcher("alertname", "=", "A")],
        equal=["host"],
    )
    r = Run(node(group_by=("...",)), inhibitions=[both])
    r.insert(firing("x", host="h1"))
    assert r.at(30) == [("team", [("x", "firing")])]
    # A second two-sided alert does not mute the first either (Alertmanager's inhibit.go).
    r.insert(firing("y", host="h1", instance="2"))
    assert r.at(60) == [("team", [("y", "firing")])]


def test_a_source_only_alert_still_inhibits_a_two_sided_one():
    rule = Inhibition(
        source=[Matcher("severity", "=~", "critical|warning")],
        target=[Matcher("severity", "=", "warning")],
        equal=["host"],
    )
    r = Run(node(group_by=("...",)), inhibitions=[rule])
    r.insert(firing("warn", severity="warning", host="h1"))  # matches both sides
    r.insert(firing("crit", severity="critical", host="h1"))  # source only
    assert r.at(30) == [("team", [("crit", "firing")])]


def test_inhibition_index_counts_and_forgets():
    index = InhibitionIndex([RULE])
    for i in range(3):
        index.add(f"c{i}", {"severity": "critical", "host": "h"})
    index.add("c0", {"severity": "critical", "host": "h"})  # idempotent
    target = {"severity": "warning", "host": "h"}
    assert index.inhibits(target)
    for i in range(3):
        assert index.inhibits(target)
        index.remove(f"c{i}")
    assert not index.inhibits(target)
    assert index._counts == {}  # nothing left behind
    assert not index._live
    assert len(index) == 0


# --- state across a restart ---------------------------------------------------------------


def test_restart_keeps_groups_timers_and_what_was_sent():
    silence = SilenceWindow([Matcher("host", "=", "h9")], 0.0, 1e12)
    root = node(group_by=("...",))
    r = Run(root, silences=[silence], inhibitions=[RULE])
    r.insert(
        firing("crit", severity="critical", host="h1"),
        firing("warn", severity="warning", host="h1"),
    )
    r.insert(firing("a", host="h2"))
    r.at(30)
    r.insert(firing("b", host="h3"))  # waits in its group
    before = sent(r.out)
    state = json.loads(json.dumps(r.groups.state_dict()))  # plain JSON
    r2 = Run(root, clock=r.clock, silences=[silence], inhibitions=[RULE])
    r2.groups.load_state_dict(state)
    assert len(r2.groups) == len(r.groups)
    assert r2.at(30 + WAIT) == [("team", [("b", "firing")])]  # its timer survived
    assert r2.at(30 + INTERVAL) == []  # what was sent is not sent again
    r2.insert(resolved("crit", severity="critical", host="h1"))  # the inhibition survived too
    assert sorted(r2.at(30 + 2 * INTERVAL)) == [
        ("team", [("crit", "resolved")]),
        ("team", [("warn", "firing")]),
    ]
    assert sorted(before) == [("team", [("a", "firing")]), ("team", [("crit", "firing")])]


def test_state_of_a_route_no_longer_configured_is_dropped():
    r = Run(node(routes=(node("x", matchers="a=b"),)))
    r.insert(firing("a", a="b"))
    state = r.groups.state_dict()
    r2 = Run(node())
    r2.groups.load_state_dict(state)
    assert len(r2.groups) == 0
    r3 = Run(node())
    r3.groups.load_state_dict({"firing": {}, "suppressed": []})  # the old router's state
    assert len(r3.groups) == 0


def test_flush_is_cheap_when_nothing_is_due():
    r = Run(node(group_by=("...",)))
    r.insert(*(firing(f"a{i}", host=f"h{i}") for i in range(2000)))
    assert r.groups.next_due == pytest.approx(1000.0 + WAIT)
    import time

    started = time.perf_counter()
    for _ in range(10_000):
        r.groups.flush()
    assert time.perf_counter() - started < 0.5
    assert len(r.at(30)) == 2000


# --- on the data's clock: replays and batch boundaries do not change what is sent -------


def stream(n=60, seed=4):
    """Alert transitions of several hosts over an hour of data, in time order."""
    import random

    rng = random.Random(seed)
    out, state = [], {}
    t = 1_700_000_000.0
    for _ in range(n):
        t += rng.choice([1.0, 5.0, 20.0, 90.0, 400.0])
        host = f"h{rng.randrange(5)}"
        if host in state:
            out.append(resolved(host, t=state.pop(host), end=t, host=host))
        else:
            state[host] = t
            out.append(firing(host, t=t, host=host))
    return out, t


def replay(alerts, end, cuts, *, flush_every=False):
    groups = Groups(node(group_by=("host",)), clock=DataClock())
    out = []
    bounds = [0, *cuts, len(alerts)]
    for a, b in itertools.pairwise(bounds):
        out.extend(groups.route(alerts[a:b]))
        if flush_every:
            out.extend(groups.flush())
    groups.observe(end + 10 * REPEAT)
    out.extend(groups.flush())
    return [(n.receiver, [(x.fingerprint, x.status, x.starts_at) for x in n.alerts]) for n in out]


def test_on_a_data_clock_the_batches_do_not_change_what_is_sent():
    alerts, end = stream()
    whole = replay(alerts, end, [])
    assert len(whole) > 10
    assert replay(alerts, end, [7, 8, 30, 31, 32, 50]) == whole
    assert replay(alerts, end, list(range(1, len(alerts))), flush_every=True) == whole


def test_a_restart_from_saved_state_continues_like_an_uninterrupted_run():
    alerts, end = stream(seed=9)
    whole = replay(alerts, end, [])
    for cut in (5, 23, 41):
        first = Groups(node(group_by=("host",)), clock=DataClock())
        out = first.route(alerts[:cut])
        state = json.loads(json.dumps(first.state_dict()))
        second = Groups(node(group_by=("host",)), clock=DataClock())
        second.load_state_dict(state)
        out += second.route(alerts[cut:])
        second.observe(end + 10 * REPEAT)
        out += second.flush()
        got = [
            (n.receiver, [(x.fingerprint, x.status, x.starts_at) for x in n.alerts]) for n in out
        ]
        assert got == whole, cut


def test_drain_flushes_every_waiting_group_once_when_the_data_ends():
    groups = Groups(node(group_by=("host",)), clock=DataClock())
    assert groups.route([firing("a", t=100.0, host="a"), firing("b", t=110.0, host="b")]) == []
    assert sent(groups.drain()) == [("team", [("a", "firing")]), ("team", [("b", "firing")])]
    assert groups.drain() == []  # nothing new; their next flush is group_interval later
    assert len(groups) == 2


# --- in the daemon: the checkpoint keeps the groups ---------------------------------------


def test_daemon_restart_keeps_groups_and_sends_what_an_uninterrupted_run_sends(tmp_path):
    import threading

    from aiops.alerting.routing import Dispatcher
    from aiops.pipeline.engine import Engine, RuleSpec
    from aiops.service.daemon import Daemon
    from aiops.state.checkpoint import Checkpointer
    from aiops.state.envelope import FileStateStore
    from aiops.testing import ListNotifier, MemorySource
    from tests.test_daemon import batches

    data = batches(n_batches=200, steps_per_batch=5)  # 5 minutes of data per batch
    spec = RuleSpec(
        group="g",
        alert="Lat",
        source="mem",
        matches=lambda k: True,
        detector_type="robust_ewma",
        threshold=0.99999,
        detector_params={"warmup": 30},
    )

    def daemon(state, notifier):
        # One group for all hosts, flushed every 5 minutes of data time.
        root = node("r", group_by=("alertname",), group_wait=30.0, group_interval=300.0)
        return Daemon(
            sources=lambda positions: {"mem": MemorySource(data, resume=positions.get("mem"))},
            engine=Engine([spec]),
            router=Groups(root, clock=DataClock()),
            dispatcher=Dispatcher({"r": [notifier]}),
            checkpointer=Checkpointer(FileStateStore(state)),
            checkpoint_interval=1e9,
            clock=FakeClock(),
        )

    def shape(notifier):
        return [
            [(a.labels["host"], a.status, a.starts_at) for a in n.alerts] for n in notifier.sent
        ]

    whole = ListNotifier()
    daemon(tmp_path / "a", whole).run(threading.Event())
    # Each 1-minute incident: its firing after group_wait, its resolution a flush later.
    assert [[(h, s) for h, s, _ in n] for n in shape(whole)] == [
        [(h, s)] for h in ("h0", "h1", "h2", "h3") for s in ("firing", "resolved")
    ]
    # Stop after the batch with h0's firing and resolution (its resolution flush is due in
    # the next batch), in a quiet stretch, and just before h3's incident.
    for stop_after in (61, 80, 182):
        first, second = ListNotifier(), ListNotifier()
        d1 = daemon(tmp_path / f"b{stop_after}", first)
        d1.start()
        for _ in range(stop_after):
            d1.step()
        if stop_after == 61:
            assert len(d1.router) == 1  # h0's resolution waits in its group
        d1.shutdown()  # final checkpoint with the groups, as on SIGTERM
        daemon(tmp_path / f"b{stop_after}", second).run(threading.Event())
        assert shape(first) + shape(second) == shape(whole), stop_after


def test_state_keeps_an_alerts_context_but_not_its_chart_window():
    from dataclasses import replace

    from aiops.alerting.notify import AlertWindow

    window = AlertWindow((0.0, 60.0), (1.0, 9.0), (0.5, 0.5), (1.5, 1.5), (False, True), 0.99)
    a = replace(
        firing("a", t=5.0), rule="g/A", detector="ewma_z", model_version="m1", window=window
    )
    a = replace(a, value=9.0, score=float("nan"))
    groups = Groups(node(), clock=FakeClock(0.0))
    groups.route([a])
    state = json.loads(json.dumps(groups.state_dict()))
    assert "window" not in json.dumps(state)
    again = Groups(node(), clock=FakeClock(0.0))
    again.load_state_dict(state)
    (restored,) = again._groups[next(iter(again._groups))].alerts.values()
    assert restored == replace(a, window=None, score=restored.score)
    assert restored.score != restored.score  # NaN survives as NaN


# --- Alertmanager's inhibitor cases (inhibit_test.go), re-expressed -----------------------

SOURCE_ONE = {"s1": "1", "t1": "2", "e": "1"}  # matches rule one's source only
SOURCE_TWO = {"s2": "1", "t2": "1", "e": "1"}  # matches rule two's source and target

# Targets and whether they are muted, with rule one's target `t1="1"` (legacy-style
# equality) and with `t1!="1"`; rule two is `s2="1"` -> `t2="1"`, both on `e`.
INHIBITOR_CASES = [
    ({"t1": "1", "e": "1"}, True, False),
    ({"t2": "1", "e": "1"}, True, True),
    ({"t1": "1", "t3": "1", "e": "1"}, True, False),
    ({"t1": "1", "t2": "1", "e": "1"}, True, True),
    ({"t1": "0", "e": "1"}, False, True),
    ({"s1": "1", "t1": "1", "e": "1"}, True, False),  # two-sided, muted by a source-only alert
    ({"s2": "1", "t2": "1", "e": "1"}, False, True),  # two-sided, only two-sided sources: kept
    ({"t1": "1", "e": "0"}, False, False),  # `equal` differs
]


@pytest.mark.parametrize(("target", "muted_eq", "muted_ne"), INHIBITOR_CASES)
def test_alertmanagers_inhibitor_cases(target, muted_eq, muted_ne):
    def index(op):
        rules = [
            Inhibition([Matcher("s1", "=", "1")], [Matcher("t1", op, "1")], ["e"]),
            Inhibition([Matcher("s2", "=", "1")], [Matcher("t2", "=", "1")], ["e"]),
        ]
        idx = InhibitionIndex(rules)
        idx.add("one", SOURCE_ONE)
        idx.add("two", SOURCE_TWO)
        return idx

    assert index("=").inhibits(target) is muted_eq
    assert index("!=").inhibits(target) is muted_ne


def test_alertmanagers_inhibit_sequence_a_resolved_source_mutes_nothing():
    rule = Inhibition([Matcher("s", "=", "1")], [Matcher("t", "=", "1")], ["e"])
    one = Alert("one", "firing", {"t": "1", "e": "f"}, {}, starts_at=0.0)
    two = Alert("two", "firing", {"s": "1", "e": "f"}, {}, starts_at=0.0)
    two_ended = Alert("two", "resolved", {"s": "1", "e": "f"}, {}, starts_at=0.0, ends_at=0.0)

    def run(*alerts):
        r = Run(node(group_by=("...",), group_wait=0.0), inhibitions=[rule])
        r.insert(*alerts)
        return sent(r.out)

    assert run(one) == [("team", [("one", "firing")])]  # the source has not fired
    assert run(two, one) == [("team", [("two", "firing")])]  # muted by the active source
    assert ("team", [("one", "firing")]) in run(two, two_ended, one)  # the source resolved


def test_a_clock_jump_is_one_flush_not_one_pass_per_skipped_interval():
    r = Run(node(group_interval=1.0))
    r.insert(firing("a"))
    assert r.at(30) == [("team", [("a", "firing")])]
    r.insert(firing("b"))
    calls = 0
    flush = r.groups._flush

    def counting(*args):
        nonlocal calls
        calls += 1
        return flush(*args)

    r.groups._flush = counting
    # A day of data time passes at once (a backfill): one flush sends the change.
    assert r.at(30 + 86_400) == [("team", [("a", "firing"), ("b", "firing")])]
    assert calls == 1
    assert r.groups.next_due == pytest.approx(1000.0 + 30 + 86_401)


def _inhibited_by_scanning(rules, firing_labels, labels):
    """Alertmanager's rule, by brute force over every firing alert."""
    for r in rules:
        if not all(m.matches(labels) for m in r.target):
            continue
        also_source = all(m.matches(labels) for m in r.source)
        for other in firing_labels:
            if not all(m.matches(other) for m in r.source):
                continue
            if also_source and all(m.matches(other) for m in r.target):
                continue  # a two-sided alert is muted only by source-only ones
            if all(other.get(k, "") == labels.get(k, "") for k in r.equal):
                return True
    return False


@pytest.mark.parametrize("seed", range(5))
def test_inhibition_index_agrees_with_a_scan_of_every_firing_alert(seed, monkeypatch):
    import random

    import aiops.alerting.groups as groups_module

    rng = random.Random(seed)
    values = ["", "a", "b", "c"]
    names = ["x", "y", "z", "e"]

    def matcher():
        op = rng.choice(["=", "!=", "=~", "!~"])
        value = rng.choice(["a", "b", "a|b", ".*", "c?"]) if "~" in op else rng.choice(values)
        return Matcher(rng.choice(names), op, value)

    rules = [
        Inhibition(
            [matcher() for _ in range(rng.randint(0, 2))],
            [matcher() for _ in range(rng.randint(0, 2))],
            rng.sample(names, rng.randint(0, 2)),
        )
        for _ in range(6)
    ]
    # A small memo, so that it is also emptied and filled again on the way.
    monkeypatch.setattr(groups_module, "_MATCHES_KEPT", 7)
    index = InhibitionIndex(rules)
    assert index._names is not None  # the memo is in use
    firing_now: dict[str, dict[str, str]] = {}
    for step in range(400):
        labels = {n: v for n in names if (v := rng.choice(values))}
        if firing_now and rng.random() < 0.3:
            fp = rng.choice(sorted(firing_now))
            index.remove(fp)
            del firing_now[fp]
        else:
            fp = f"f{step}"
            index.add(fp, labels)
            firing_now[fp] = labels
        probe = {n: v for n in names if (v := rng.choice(values))}
        want = _inhibited_by_scanning(rules, list(firing_now.values()), probe)
        assert index.inhibits(probe) is want, (step, probe)
    for fp in firing_now:
        index.remove(fp)
    assert not index._counts
    assert not index._live


def test_inhibition_index_asks_matchers_of_other_kinds_every_time():
    class Odd:  # reads two labels: its answer cannot be kept per one label's value
        def matches(self, labels):
            return labels.get("a") == labels.get("b")

    index = InhibitionIndex([Inhibition([Matcher("s", "=", "1")], [Odd()], ["h"])])
    assert index._names is None
    index.add("src", {"s": "1", "h": "x"})
    assert index.inhibits({"a": "1", "b": "1", "h": "x"})
    assert not index.inhibits({"a": "1", "b": "2", "h": "x"})


def test_group_keys_quote_values_as_json_does():
    from aiops.alerting.groups import group_key

    # The keys are in checkpoints: they must stay what json.dumps made them.
    labels = {"a": 'q"uo\\te', "b": "é\u2028\x01\n", "c": "", "d": "plain"}
    inner = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(labels.items()))
    assert group_key("0.1", labels) == f"0.1:{{{inner}}}"
