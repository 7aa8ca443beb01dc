"""The daemon loop: checkpoints, restarts, rejects, failing sources."""

import json
import threading

import numpy as np

from aiops.alerting.routing import Dispatcher, RouteNode, Router
from aiops.pipeline.engine import Engine, RuleSpec
from aiops.pipeline.source import Source, SourceError
from aiops.service.daemon import Daemon, DeadLetterFile
from aiops.state.checkpoint import Checkpointer
from aiops.state.envelope import FileStateStore
from aiops.testing import FakeClock, ListNotifier, MemorySource
from aiops.types import Batch, Reject, SeriesKey

KEYS = [SeriesKey.of("latency", {"host": f"h{i}"}) for i in range(4)]


def batches(n_batches=40, steps_per_batch=25, seed=3):
    rng = np.random.default_rng(seed)
    out = []
    for b in range(n_batches):
        steps = np.arange(b * steps_per_batch, (b + 1) * steps_per_batch)
        t = np.repeat(steps * 60.0, 4)
        series = np.tile(np.arange(4), len(steps))
        v = 50 + rng.normal(0, 1, len(t))
        for host, at in [(0, 300), (1, 520), (2, 700), (3, 910)]:
            v[(series == host) & (t >= at * 60) & (t < (at + 3) * 60)] += 12
        out.append(Batch(keys=KEYS, series=series, timestamps=t, values=v))
    return out


def make_daemon(tmp_path, data, notifier, clock=None, checkpoint_interval=1e9):
    spec = RuleSpec(
        group="g",
        alert="Lat",
        source="mem",
        matches=lambda k: True,
        detector_type="robust_ewma",
        threshold=0.99999,
        detector_params={"warmup": 30},
    )
    return Daemon(
        sources=lambda positions: {"mem": MemorySource(data, resume=positions.get("mem"))},
        engine=Engine([spec]),
        router=Router(RouteNode("r")),
        dispatcher=Dispatcher({"r": [notifier]}),
        checkpointer=Checkpointer(FileStateStore(tmp_path / "state")),
        checkpoint_interval=checkpoint_interval,
        dead_letters=DeadLetterFile(tmp_path / "state" / "rejects.jsonl"),
        clock=clock or FakeClock(),
    )


def transitions(notifier):
    return [(a.status, a.labels["host"], a.starts_at) for n in notifier.sent for a in n.alerts]


def test_stop_halfway_and_restart_gives_the_alerts_of_an_uninterrupted_run(tmp_path):
    data = batches()
    whole = ListNotifier()
    make_daemon(tmp_path / "a", data, whole).run(threading.Event())
    assert len(transitions(whole)) == 8  # 4 incidents, each fires and resolves

    first, second = ListNotifier(), ListNotifier()
    d1 = make_daemon(tmp_path / "b", data, first)
    d1.start()
    for _ in range(len(data) // 2):
        d1.step()
    d1.shutdown()  # final checkpoint, as on SIGTERM
    d2 = make_daemon(tmp_path / "b", data, second)
    d2.run(threading.Event())
    assert d2._sequence == 2
    assert transitions(first) + transitions(second) == transitions(whole)
    assert transitions(first)
    assert transitions(second)


def test_periodic_checkpoints_commit_positions_after_they_are_durable(tmp_path):
    clock = FakeClock()
    d = make_daemon(
        tmp_path, batches(n_batches=6), ListNotifier(), clock=clock, checkpoint_interval=10
    )
    d.start()
    d.step()
    clock.advance(11)
    d.step()
    src = d.sources["mem"]
    assert src.committed == [{"next": 2}]
    assert Checkpointer(FileStateStore(tmp_path / "state")).load().sources == {"mem": {"next": 2}}


def test_a_crash_replays_from_the_last_checkpoint_without_losing_alerts(tmp_path):
    data = batches()
    whole = ListNotifier()
    make_daemon(tmp_path / "a", data, whole).run(threading.Event())
    clock = FakeClock()
    first = ListNotifier()
    d1 = make_daemon(tmp_path / "b", data, first, clock=clock, checkpoint_interval=5)
    d1.start()
    for i in range(30):
        clock.advance(1 if i % 7 else 5)
        d1.step()
    # No shutdown: the process died. Some alerts after the last checkpoint are sent again.
    second = ListNotifier()
    make_daemon(tmp_path / "b", data, second).run(threading.Event())
    got = transitions(first) + transitions(second)
    assert set(got) == set(transitions(whole))
    assert got[-len(transitions(second)) :] == transitions(whole)[-len(transitions(second)) :]


def test_rejects_are_counted_and_kept_aside(tmp_path):
    bad = Batch(
        rejects=[
            Reject("bad_json", "line 1: expecting value", b"{oops", "f:1"),
            Reject("bad_json", "x", b"\xff\xfe", "f:2"),
            Reject("bad_value", "y", b"a,b", "f:3"),
        ]
    )
    d = make_daemon(tmp_path, [bad], ListNotifier())
    d.run(threading.Event())
    assert d.health["mem"].rejects == {"bad_json": 2, "bad_value": 1}
    lines = [json.loads(x) for x in (tmp_path / "state" / "rejects.jsonl").read_text().splitlines()]
    assert [x["reason"] for x in lines] == ["bad_json", "bad_json", "bad_value"]
    assert lines[0]["raw"] == "{oops"
    assert lines[1]["raw_base64"] == "//4="


class Flaky(Source):
    def __init__(self, fail_times):
        self.fail_times = fail_times
        self.calls = 0

    def next_batch(self):
        self.calls += 1
        if self.calls <= self.fail_times:
            raise SourceError("broker unreachable")
        return Batch()

    def snapshot(self):
        return {}


def test_a_failing_source_backs_off_reports_and_recovers(tmp_path):
    clock = FakeClock()
    d = make_daemon(tmp_path, [], ListNotifier(), clock=clock)
    flaky = Flaky(fail_times=3)
    d._source_factory = {"mem": flaky}
    d.start()
    d.step()
    h = d.health["mem"]
    assert not h.ok
    assert "broker unreachable" in h.last_error
    d.step()
    assert flaky.calls == 1  # backing off
    for _ in range(3):
        clock.advance(120)
        d.step()
    assert flaky.calls == 4
    assert h.ok
    assert h.failures == 0


def test_a_group_waiting_when_the_sources_go_quiet_is_sent_on_the_loop_clock(tmp_path):
    # Groups run on the data's clock; when no data comes, it goes on with the loop's own
    # clock from the last point, so the last incident's notification is not held for ever.
    from aiops.alerting.groups import DataClock, Groups

    clock = FakeClock()
    notifier = ListNotifier()
    data = batches(n_batches=301, steps_per_batch=1)  # ends as host 0's incident fires
    d = make_daemon(tmp_path, data, notifier, clock=clock)
    d.router = Groups(RouteNode("r", group_wait=30.0), clock=DataClock())
    d.start()
    for _ in data:
        d.step()
    assert d.alerts_sent >= 1
    assert notifier.sent == []  # it waits group_wait, in data time
    d.step()  # no data: the loop clock has not moved
    assert notifier.sent == []
    clock.advance(31)
    d.step()
    d.dispatcher.pump()
    assert [a.status for n in notifier.sent for a in n.alerts] == ["firing"]
