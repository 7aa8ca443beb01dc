"""Reliability: a Prometheus outage mid-run needs no daemon restart and skips nothing.

A real Prometheus 2.42 (``tests/servers.py``) serves a backfilled gauge of two hosts,
one sample a second, while the daemon evaluates a query rule every second. Prometheus
is killed (SIGKILL) mid-run and started again on the same TSDB a few seconds later.
The daemon, never restarted, reports the outage and then evaluates every second it
missed: across the outage, the points scored are exactly two per evaluated second
(none skipped, none twice), as counted from the source's own position.

A broker restart cannot be checked the same way: the test broker keeps its records in
memory only (``tests/servers.py``), so a restarted broker is empty;
``tests/test_kafka_source.py::test_broker_outage_is_reported_in_health_and_the_source_recovers``
checks that the daemon rides it out and reads what is produced after it.
"""

from __future__ import annotations

import math
import time

import pytest
from test_http import start_daemon, wait_until, write_config
from test_prometheus_source import positions, rule, series

RULE = "g/QueueDepth"
HOSTS = {"a": 50.0, "b": 60.0}


@pytest.mark.servers
def test_a_prometheus_outage_mid_run_skips_no_second_and_needs_no_restart(
    prometheus_server, tmp_path
):
    now0 = math.floor(time.time()) + 1.0
    # Samples up to two minutes ahead: Prometheus answers for the seconds that pass.
    prom = prometheus_server(history=series("queue_depth", HOSTS, now0 - 120, now0 + 120, 1.0))
    sources = {
        "prom": {
            "type": "prometheus",
            "url": prom.url,
            "history": "1m",
            "step": "1s",
            "max_backoff": "1s",
            "timeout": "2s",
        }
    }
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
