"""Reliability: a Prometheus outage mid-run needs no daemon restart and skips nothing.

A real Prometheus 2.42 (``tests/servers.py``) serves a backfilled gauge of two hosts,
one sample a second, while the daemon evaluates a query rule every second. Prometheus
is killed (SIGKILL) mid-run and started again on the same TSDB a few seconds later.
The daemon, never restarted, reports the outage and then evaluates every second it
missed: across the outage, the points scored are exactly two per evaluated second
(none skipped, none twice), as counted from the source's own position.

A broker outage is checked with the broker frozen (SIGSTOP, then SIGCONT 10 s later):
the test broker keeps its records in memory only (``tests/servers.py``), so a restarted
broker would be empty, while a frozen one keeps them, as a restarted production broker
does. The daemon, never restarted, reports the hung broker in health (``degraded``, the
``broker`` problem: no answer while its requests wait) until it answers again, and
scores every record exactly once, those produced before the outage and after it.
``tests/test_kafka_source.py::test_broker_outage_is_reported_in_health_and_the_source_recovers``
checks a real broker stop and restart (on an empty broker).
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable

import pytest
from test_http import start_daemon, wait_until, write_config
from test_kafka_source import config, one_source_daemon, produce, step_until, unique
from test_prometheus_source import outage_source, positions, rule, series

from aiops.connectors.sources.kafka import HUNG_AFTER, KafkaSource

RULE = "g/QueueDepth"
HOSTS = {"a": 50.0, "b": 60.0}


@pytest.mark.servers
def test_a_prometheus_outage_mid_run_skips_no_second_and_needs_no_restart(
    prometheus_server, tmp_path
):
    now0 = math.floor(time.time()) + 1.0
    # Samples up to two minutes ahead: Prometheus answers for the seconds that pass.
    prom = prometheus_server(history=series("queue_depth", HOSTS, now0 - 120, now0 + 120, 1.0))
    sources = {"prom": outage_source(prom.url)}
    d = start_daemon(write_config(tmp_path, sources, [rule("QueueDepth", "queue_depth")]))
    source = d.daemon.sources["prom"]
    health = d.daemon.health["prom"]
    try:
        wait_until(lambda: health.points >= 2 * 60, what="the first minute scored")
        prom.kill()
        killed_at = time.time()
        wait_until(lambda: d.healthz()[0] == 503, timeout=30, what="the outage to be noticed")
        time.sleep(1.5)  # a batch taken before the kill is scored by now
        before = source.snapshot()["rules"][RULE], health.points
        time.sleep(max(0.0, killed_at + 4 - time.time()))  # at least 4 s without Prometheus
        prom.start()
        wait_until(lambda: d.healthz()[0] == 200, timeout=30, what="recovery")
        restarted_at = time.time()
        wait_until(
            lambda: source.snapshot()["rules"][RULE] > restarted_at + 2,
            timeout=30,
            what="the missed seconds caught up",
        )
        assert d.thread.is_alive()
        assert d.metric("aiops_source_failures_total", source="prom") >= 1
    finally:
        d.stop()
    after = positions(d.state_dir)[RULE], health.points
    # The outage window was evaluated after all, every second of it once per host.
    assert before[0] < killed_at + 1
    assert after[0] > restarted_at + 2
    assert after[1] - before[1] == len(HOSTS) * (after[0] - before[0])


@pytest.mark.servers
@pytest.mark.slow
def test_a_frozen_kafka_broker_mid_run_needs_no_restart_and_skips_nothing(kafka_broker_factory):
    broker = kafka_broker_factory()
    topic = unique("frozen")
    broker.create_topic(topic, 2)

    def records(lo: int, hi: int) -> list[tuple[bytes, bytes]]:
        line = "m,host=h{} v={}i {}000000000"
        return [(line.format(i % 4, i, 1000 + i).encode(), b"h%d" % (i % 4)) for i in range(lo, hi)]

    produce(broker, topic, records(0, 400))
    src = KafkaSource("k", config(broker, [topic], "influx_line"))
    values: list[float] = []
    real_next = src.next_batch

    def next_batch():  # what the daemon is handed, in order
        batch = real_next()
        values.extend(v for _, _, v in batch.points())
        return batch

    src.next_batch = next_batch  # type: ignore[method-assign]
    daemon = one_source_daemon(src)
    health = daemon.health["k"]

    def steps(pred: Callable[[], bool], timeout: float) -> None:
        step_until(daemon, pred, timeout, longest=1.5, pause=0.02)

    pid = broker.process.pid
    assert pid is not None
    seen: list[tuple[float, str, dict[str, str]]] = []  # during the freeze: (s, state, problems)
    try:
        steps(lambda: health.points == 400, 30)
        os.kill(pid, signal.SIGSTOP)
        # Records sent while the broker is frozen wait in the producer and land after it.
        late = threading.Thread(target=produce, args=(broker, topic, records(400, 800)))
        try:
            late.start()
            t0 = time.monotonic()
            while time.monotonic() - t0 < 10:  # past the 6 s session timeout: a rebalance
                daemon.step()
                report = daemon.health_report["k"]
                seen.append((time.monotonic() - t0, report["state"], report["problems"]))
                time.sleep(0.05)
        finally:
            os.kill(pid, signal.SIGCONT)
        late.join(60)
        steps(lambda: health.points >= 800, 90)
        for _ in range(40):  # anything read twice would show up now
            daemon.step()
            time.sleep(0.02)
        after = daemon.health_report["k"]
    finally:
        daemon.shutdown()
    # The hung broker is reported while it hangs (HUNG_AFTER without a byte from it while
    # requests wait), to the end of the freeze, and no longer once it answers.
    hung = [t for t, state, problems in seen if state == "degraded" and "broker" in problems]
    assert hung, seen
    assert HUNG_AFTER - 1 <= hung[0] <= HUNG_AFTER + 3, seen
    assert all(state != "ok" for t, state, _ in seen if t > hung[0]), seen
    assert "no answer from" in seen[-1][2]["broker"]
    assert (after["state"], after["problems"]) == ("ok", {})
    assert health.ok
    assert health.points == 800
    assert sorted(values) == [float(i) for i in range(800)]  # none skipped, none twice
    assert sum(src.snapshot().values()) == 800
