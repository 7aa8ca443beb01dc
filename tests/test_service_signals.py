"""``aiops run`` under signals: none but SIGTERM/SIGINT is fatal; stops end in time.

Real ``aiops run`` subprocesses (see ``tests/service_harness.py``).
"""

from __future__ import annotations

import json
import signal
import time

import pytest
from service_harness import (
    HangingEndpoint,
    start_daemons,
    wait_ready,
    workdir,
)


@pytest.fixture
def daemons():
    yield from start_daemons()


def test_signals_other_than_term_are_never_fatal(tmp_path, daemons):
    config, port = workdir(tmp_path)
    d = daemons(config)
    d.wait_log("HTTP listener on")
    wait_ready(port)
    d.signal(signal.SIGUSR1)
    d.wait_log("state (SIGUSR1): scoring 1 rules, ")
    d.signal(signal.SIGQUIT)
    d.wait_log("(most recent call first)")
    for name in (
        "SIGUSR2",
        "SIGALRM",
        "SIGVTALRM",
        "SIGPROF",
        "SIGIO",
        "SIGPWR",
        "SIGXCPU",
        "SIGPIPE",
        "SIGXFSZ",
    ):
        d.signal(getattr(signal, name))
        time.sleep(0.1)
        assert d.proc.poll() is None, f"{name} killed the daemon:\n{d.text()}"
    for name in ("SIGUSR2", "SIGALRM", "SIGXCPU"):
        d.wait_log(f"received {name}: ignored")
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    log = d.text()
    assert "received SIGTERM: final checkpoint" in log
    assert "stopped after" in log
    assert list((tmp_path / "state").glob("checkpoint*"))


@pytest.mark.parametrize("second_sigterm", [False, True], ids=["deadline", "second-sigterm"])
def test_a_stop_stuck_on_a_receiver_ends_by_the_deadline_or_a_second_sigterm(
    tmp_path, daemons, second_sigterm
):
    hook = HangingEndpoint()
    try:
        receiver = f"    webhook_configs:\n      - url: {hook.url}/hook\n        timeout: 30s\n"
        config, _ = workdir(
            tmp_path, receiver=receiver, delivery="delivery: {attempt_timeout: 30s}\n"
        )
        d = daemons(config, "--stop-timeout", "4")
        deadline = time.monotonic() + 30
        while not hook.requests:  # a delivery is in flight, stuck
            assert time.monotonic() < deadline, d.text()
            assert d.proc.poll() is None, d.text()
            time.sleep(0.05)
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        if second_sigterm:
            time.sleep(0.5)
            d.signal(signal.SIGTERM)
        assert d.wait(timeout=20) == 0
        took = time.monotonic() - t0
        log = d.text()
        assert "stopping faster" in log
        assert "final checkpoint written; exiting" in log
        assert list((tmp_path / "state").glob("checkpoint*"))
        if second_sigterm:
            assert took < 3.0, log
            assert "received SIGTERM again" in log
        else:
            # Hurried at half the stop timeout (the drain alone had 5 s, the stuck
            # attempt 30 s more).
            assert 1.5 <= took <= 4.0 + 2.0, (took, log)
            assert "the stop has taken 2 s" in log
    finally:
        hook.close()


def test_log_format_json_one_object_a_line(tmp_path, daemons):
    config, _ = workdir(tmp_path)
    d = daemons(config, "--log-format", "json")
    d.wait_log('"HTTP listener on')
    d.signal(signal.SIGUSR1)
    d.wait_log("state (SIGUSR1)")
    d.signal(signal.SIGTERM)
    assert d.wait() == 0
    lines = [line for line in d.text().splitlines() if line.strip()]
    docs = [json.loads(line) for line in lines]
    assert len(docs) >= 4
    for doc in docs:
        assert {"time", "level", "logger", "message"} <= set(doc)
        assert doc["time"].endswith("Z")
        assert doc["time"][10] == "T"
    assert any(
        doc["logger"] == "aiops.service.lifecycle" and doc["message"].startswith("state (SIGUSR1)")
        for doc in docs
    )
    assert docs[-1]["message"].startswith("stopped after")
