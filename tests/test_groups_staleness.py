"""Staleness: a firing series that stops reporting resolves after resolve_after_stale."""

from __future__ import annotations

import numpy as np

from aiops.config.models import DEFAULT_RESOLVE_AFTER_STALE, Rule
from aiops.pipeline.engine import Engine, RuleRuntime, RuleSpec
from aiops.state.envelope import dumps, loads
from aiops.testing import ValueIsScore
from aiops.types import Batch, SeriesKey

KEYS = [SeriesKey.of("m", {"host": f"h{i}"}) for i in range(3)]


def runtime(stale=900.0, alert="A", source="s"):
    spec = RuleSpec(
        group="g",
        alert=alert,
        source=source,
        matches=lambda k: True,
        threshold=0.9,
        stale_seconds=stale,
    )
    rt = RuleRuntime(spec)
    rt.detector = ValueIsScore()
    return rt


def batch(points):
    """``points``: (series, time, value) triples."""
    s, t, v = zip(*points, strict=True)
    return Batch(keys=KEYS, series=np.array(s), timestamps=np.array(t, float), values=np.array(v))


def transitions(alerts):
    return [(a.labels["host"], a.status, a.starts_at, a.ends_at) for a in alerts]


def test_a_series_that_stops_reporting_resolves_after_the_stale_period():
    rt = runtime()
    got = rt.process(batch([(0, 0.0, 1.0), (1, 0.0, 1.0)])).alerts
    assert transitions(got) == [("h0", "firing", 0.0, None), ("h1", "firing", 0.0, None)]
    # h0 goes quiet after t=60; h1 keeps firing.
    rt.process(batch([(0, 60.0, 1.0), (1, 60.0, 1.0)]))
    quiet = [rt.process(batch([(1, t, 1.0)])).alerts for t in range(120, 960, 60)]
    assert quiet == [[]] * len(quiet)  # 900 s after 60 is 960
    got = rt.process(batch([(1, 960.0, 1.0)])).alerts
    assert transitions(got) == [("h0", "resolved", 0.0, 960.0)]
    assert got[0].value == 1.0  # its last value
    assert rt.alerts.firing().tolist() == [1]
    # It reports again: a new alert, not the old one.
    got = rt.process(batch([(0, 1020.0, 1.0)])).alerts
    assert transitions(got) == [("h0", "firing", 1020.0, None)]


def test_the_resolution_is_dated_when_the_series_went_stale_whenever_it_is_noticed():
    rt = runtime(stale=300.0)
    rt.process(batch([(0, 0.0, 1.0), (1, 0.0, 0.0)]))
    got = rt.process(batch([(1, 5000.0, 0.0)])).alerts  # a long gap in all the data
    assert transitions(got) == [("h0", "resolved", 0.0, 300.0)]


def test_missing_values_do_not_count_as_reporting():
    rt = runtime(stale=300.0)
    rt.process(batch([(0, 0.0, 1.0)]))
    got = rt.process(batch([(0, 360.0, float("nan")), (1, 360.0, 0.0)])).alerts
    assert transitions(got) == [("h0", "resolved", 0.0, 300.0)]


def test_zero_turns_staleness_off():
    rt = runtime(stale=0.0)
    rt.process(batch([(0, 0.0, 1.0)]))
    assert rt.process(batch([(1, 1e6, 0.0)])).alerts == []
    assert rt.alerts.firing().tolist() == [0]


def test_staleness_survives_a_checkpoint():
    rt = runtime(stale=300.0)
    rt.process(batch([(0, 0.0, 1.0), (1, 100.0, 0.0)]))
    again = runtime(stale=300.0)
    again.load_state_dict(loads(dumps(rt.state_dict())))
    assert again.data_time == 100.0
    got = again.process(batch([(1, 300.0, 0.0)])).alerts
    assert transitions(got) == [("h0", "resolved", 0.0, 300.0)]


def test_an_old_checkpoint_without_last_seen_counts_the_firing_time():
    rt = runtime(stale=300.0)
    rt.process(batch([(0, 50.0, 1.0)]))
    state = loads(dumps(rt.state_dict()))
    del state["alerts"]["last_seen"]
    del state["data_time"]
    again = runtime(stale=300.0)
    again.load_state_dict(state)
    assert transitions(again.process(batch([(1, 349.0, 0.0)])).alerts) == []
    assert transitions(again.process(batch([(1, 350.0, 0.0)])).alerts) == [
        ("h0", "resolved", 50.0, 350.0)
    ]


def test_a_rule_whose_every_series_stopped_resolves_by_its_own_sources_time_only():
    engine = Engine([])
    quiet, busy = runtime(alert="Quiet", source="a"), runtime(alert="Busy", source="b")
    engine.rules = {quiet.spec.key: quiet, busy.spec.key: busy}
    quiet.process(batch([(0, 0.0, 1.0)]))
    busy.process(batch([(2, 1000.0, 0.0)]))  # its own data does not touch Quiet's series
    assert quiet.alerts.firing().tolist() == [0]
    # Source b's time is no clock of source a (it may be ahead, a read backlog behind).
    assert engine.resolve_stale(1000.0, "b") == []
    assert quiet.alerts.firing().tolist() == [0]
    # Source a's other series reaching t=1000 (matching no series of Quiet's) do resolve it.
    got = engine.resolve_stale(1000.0, "a")
    assert transitions(got) == [("h0", "resolved", 0.0, 900.0)]
    assert got[0].labels["alertname"] == "Quiet"


def test_in_the_daemon_a_quiet_source_is_not_resolved_by_another_sources_time(tmp_path):
    import threading

    from aiops.alerting.routing import Dispatcher, RouteNode, Router
    from aiops.service.daemon import Daemon
    from aiops.state.checkpoint import Checkpointer
    from aiops.state.envelope import MemoryStateStore
    from aiops.testing import FakeClock, ListNotifier, MemorySource

    def rule(name, source):
        return RuleSpec(
            group="g",
            alert=name,
            source=source,
            matches=lambda k: True,
            threshold=0.9,
            stale_seconds=900.0,
        )

    a0, b0 = SeriesKey.of("m", {"src": "a", "host": "h0"}), SeriesKey.of("m", {"src": "b"})

    def points(key, times, value):
        return Batch(
            keys=[key],
            series=np.zeros(len(times), np.int64),
            timestamps=np.asarray(times, float),
            values=np.full(len(times), value),
        )

    # A fires at t=0 and then sends nothing; B runs on to t=3000, firing at its end.
    sources = {
        "a": MemorySource([points(a0, [0.0], 1.0)], source_id="a"),
        "b": MemorySource(
            [points(b0, [t], 1.0 if t == 3000 else 0.0) for t in range(60, 3060, 60)],
            source_id="b",
        ),
    }
    engine = Engine([rule("QuietA", "a"), rule("BusyB", "b")])
    for rt in engine.rules.values():
        rt.detector = ValueIsScore()
    notifier = ListNotifier()
    Daemon(
        sources=sources,
        engine=engine,
        router=Router(RouteNode("r")),
        dispatcher=Dispatcher({"r": [notifier]}),
        checkpointer=Checkpointer(MemoryStateStore()),
        clock=FakeClock(),
    ).run(threading.Event())
    got = [(a.labels["alertname"], a.status) for n in notifier.sent for a in n.alerts]
    # QuietA fires and stays firing: B's clock 50 minutes on resolves nothing of A's.
    assert sorted(got) == [("BusyB", "firing"), ("QuietA", "firing")]


def test_the_rule_key_and_its_default():
    base = {"alert": "A", "source": "s", "selector": "up"}
    assert Rule.model_validate(base).resolve_after_stale == DEFAULT_RESOLVE_AFTER_STALE == 900.0
    assert Rule.model_validate({**base, "resolve_after_stale": "1h"}).resolve_after_stale == 3600
    assert Rule.model_validate({**base, "resolve_after_stale": "0s"}).resolve_after_stale == 0


def test_in_the_daemon_a_series_that_stops_sends_its_resolution_through_its_group(tmp_path):
    import threading

    from aiops.alerting.groups import DataClock, Groups
    from aiops.alerting.routing import Dispatcher, RouteNode
    from aiops.service.daemon import Daemon
    from aiops.state.checkpoint import Checkpointer
    from aiops.state.envelope import FileStateStore
    from aiops.testing import FakeClock, ListNotifier, MemorySource

    # h0 fires at t=0 and stops after t=60; h1 reports normal values every minute.
    data = [batch([(0, 0.0, 1.0), (1, 0.0, 0.0)]), batch([(0, 60.0, 1.0), (1, 60.0, 0.0)])]
    data += [batch([(1, float(t), 0.0)]) for t in range(120, 1800, 60)]
    spec = RuleSpec(
        group="g",
        alert="A",
        source="mem",
        matches=lambda k: True,
        threshold=0.9,
        stale_seconds=900.0,
    )
    engine = Engine([spec])
    engine.rules[spec.key].detector = ValueIsScore()
    notifier = ListNotifier()
    root = RouteNode("r", group_by=("host",), group_wait=30.0, group_interval=300.0)
    Daemon(
        sources={"mem": MemorySource(data)},
        engine=engine,
        router=Groups(root, clock=DataClock()),
        dispatcher=Dispatcher({"r": [notifier]}),
        checkpointer=Checkpointer(FileStateStore(tmp_path)),
        clock=FakeClock(),
    ).run(threading.Event())
    assert [[(a.labels["host"], a.status, a.ends_at) for a in n.alerts] for n in notifier.sent] == [
        [("h0", "firing", None)],
        [("h0", "resolved", 960.0)],
    ]


def quiet_daemon(source):
    from aiops.alerting.routing import Dispatcher, RouteNode, Router
    from aiops.service.daemon import Daemon
    from aiops.state.checkpoint import Checkpointer
    from aiops.state.envelope import MemoryStateStore
    from aiops.testing import FakeClock, ListNotifier

    spec = RuleSpec(
        group="g",
        alert="A",
        source=source.source_id,
        matches=lambda k: True,
        threshold=0.9,
        stale_seconds=900.0,
    )
    engine = Engine([spec])
    engine.rules[spec.key].detector = ValueIsScore()
    clock, notifier = FakeClock(), ListNotifier()
    daemon = Daemon(
        sources={source.source_id: source},
        engine=engine,
        router=Router(RouteNode("r")),
        dispatcher=Dispatcher({"r": [notifier]}),
        checkpointer=Checkpointer(MemoryStateStore()),
        clock=clock,
    )
    daemon.start()
    return daemon, clock, notifier


def sent(notifier):
    return [(a.status, a.starts_at, a.ends_at) for n in notifier.sent for a in n.alerts]


def test_in_the_daemon_a_source_that_goes_silent_resolves_by_the_loop_clock_from_its_last_point():
    from aiops.testing import MemorySource

    class Live(MemorySource):  # a stream that stays open
        exhausted = False

    # h0 fires at t=0; then the source is up and sends nothing at all.
    daemon, clock, notifier = quiet_daemon(Live([batch([(0, 0.0, 1.0)])]))
    daemon.step()
    for _ in range(899):  # 899 s of silence: not stale yet
        clock.advance(1.0)
        daemon.step()
        daemon.dispatcher.pump()
    assert sent(notifier) == [("firing", 0.0, None)]
    clock.advance(1.0)
    daemon.step()
    daemon.dispatcher.pump()
    # Dated as by data time: its last point + resolve_after_stale.
    assert sent(notifier) == [("firing", 0.0, None), ("resolved", 0.0, 900.0)]


def test_a_failing_source_keeps_its_alerts_firing_while_it_is_down():
    from aiops.testing import MemorySource

    class DownAfterFirst(MemorySource):
        def next_batch(self):
            if self._next:
                raise ConnectionError("broker down")
            return super().next_batch()

    daemon, clock, notifier = quiet_daemon(DownAfterFirst([batch([(0, 0.0, 1.0)]), Batch()]))
    daemon.step()
    for _ in range(40):  # an hour down, polled at each retry
        clock.advance(90.0)
        daemon.step()
        daemon.dispatcher.pump()
    assert daemon.health["mem"].failures > 10
    assert sent(notifier) == [("firing", 0.0, None)]
