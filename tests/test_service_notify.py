"""``aiops run`` as a systemd ``Type=notify`` service, and its hot reload.

The notify protocol is checked with a real AF_UNIX datagram socket as
``NOTIFY_SOCKET`` and a real ``aiops run`` subprocess (see
``tests/service_harness.py``); reloads through SIGHUP and ``POST /-/reload``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from service_harness import (
    RULES,
    NotifySocket,
    http,
    metric,
    start_daemons,
    wait_ready,
    workdir,
)


@pytest.fixture
def daemons():
    yield from start_daemons()


def test_notify_protocol_ready_watchdog_status_reloading_stopping(tmp_path, daemons):
    config, _ = workdir(tmp_path)
    sock = NotifySocket()
    try:
        d = daemons(config, env={"NOTIFY_SOCKET": sock.address, "WATCHDOG_USEC": "400000"})
        ready = sock.wait_for("READY")
        assert ready["READY"] == "1"
        assert ready["STATUS"].startswith("scoring 1 rules, ")
        # Pings every 0.2 s (half of WATCHDOG_USEC), from the data loop: about 15 in 3 s,
        # counted from the first. The loop's first batch may compile numba's kernels (a
        # fresh clone has no cache: seconds on a loaded 2-core machine, no ping meanwhile,
        # well inside the shipped unit's WatchdogSec=60s); the bounds are loose for the
        # same machine, the upper one catches a flood.
        sock.wait_for("WATCHDOG", timeout=60)
        t0 = time.monotonic()
        pings = 0
        while time.monotonic() - t0 < 3.0:
            msg = sock.receive(0.5)
            pings += msg is not None and msg.get("WATCHDOG") == "1"
        assert 4 <= pings <= 20, sock.messages
        d.signal(signal.SIGHUP)
        reloading = sock.wait_for("RELOADING")
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert 0 <= now_usec - int(reloading["MONOTONIC_USEC"]) < 10_000_000
        assert sock.wait_for("READY")["READY"] == "1"
        status = sock.wait_for("STATUS", timeout=10)["STATUS"]
        assert "last checkpoint" in status
        d.signal(signal.SIGTERM)
        assert sock.wait_for("STOPPING")["STOPPING"] == "1"
        assert d.wait() == 0
    finally:
        sock.close()


def test_a_path_socket_and_a_watchdog_for_another_pid_sends_no_pings(tmp_path, daemons):
    config, _ = workdir(tmp_path)
    sock = NotifySocket(tmp_path / "notify.sock")
    try:
        d = daemons(
            config,
            env={"NOTIFY_SOCKET": sock.address, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"},
        )
        sock.wait_for("READY")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:
            sock.receive(0.2)
        assert not [m for m in sock.messages if "WATCHDOG" in m]
        d.signal(signal.SIGTERM)
        assert d.wait() == 0
    finally:
        sock.close()


def test_sighup_and_post_reload_apply_or_refuse_like_prometheus(tmp_path, daemons):
    config, port = workdir(tmp_path)
    base = f"http://127.0.0.1:{port}"
    d = daemons(config)
    d.wait_log("HTTP listener on")
    wait_ready(port)
    assert metric(port, "aiops_config_last_reload_successful") == 1.0
    (tmp_path / "rules.yaml").write_text(
        RULES + "      - alert: More\n        source: sim\n        selector: '{host=\"h0\"}'\n"
    )
    at = len(d.text())
    d.signal(signal.SIGHUP)
    d.wait_log("configuration reloaded", after=at)
    d.wait_log("rules new: svc/More", after=at)
    # A bad file: 400 with every error, the old configuration runs, the gauge says 0.
    (tmp_path / "rules.yaml").write_text(RULES.replace("threshold: 0.6", "threshold: 7"))
    status, body = http("POST", base + "/-/reload")
    assert status == 400, body
    assert body.startswith("configuration not reloaded\n")
    assert f"{tmp_path / 'rules.yaml'}:7:20:" in body, body
    assert metric(port, "aiops_config_last_reload_successful") == 0.0
    assert http("GET", base + "/readyz")[0] == 200
    (tmp_path / "rules.yaml").write_text(RULES)
    status, body = http("POST", base + "/-/reload")
    assert status == 200, body
    assert "rules removed: svc/More" in body
    assert metric(port, "aiops_config_last_reload_successful") == 1.0
    assert http("GET", base + "/-/reload")[0] == 405
    d.signal(signal.SIGTERM)
    assert d.wait() == 0


def test_the_unit_is_type_notify_with_a_watchdog_and_reload_by_sighup():
    path = Path(__file__).parent.parent / "deploy" / "systemd" / "aiopsd.service"
    unit = path.read_text()
    lines = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and line[0] != "#")
    assert lines["Type"] == "notify"
    assert lines["NotifyAccess"] == "main"
    assert lines["WatchdogSec"] == "60s"
    assert lines["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert lines["TimeoutStopSec"] == "60s"
    analyze = "/usr/bin/systemd-analyze"
    if not os.path.exists(analyze):
        pytest.fail("systemd-analyze is missing (Debian package systemd)")
    out = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    exposure = float(out.rsplit("Overall exposure level for aiopsd.service:", 1)[1].split()[0])
    assert exposure <= 2.0, out


def test_a_hung_loop_stops_the_watchdog_pings(tmp_path):
    """In process: a source whose poll blocks hangs the loop; the pings stop, then resume."""
    from aiops.alerting.routing import Dispatcher, RouteNode, Router
    from aiops.pipeline.engine import Engine
    from aiops.pipeline.source import Source
    from aiops.service.daemon import Daemon as LoopDaemon
    from aiops.service.lifecycle import ServiceHooks
    from aiops.service.sdnotify import SystemdNotifier
    from aiops.state.checkpoint import Checkpointer
    from aiops.state.envelope import FileStateStore
    from aiops.types import Batch

    release = threading.Event()
    release.set()

    class Blocking(Source):
        def next_batch(self) -> Batch:
            release.wait()
            return Batch()

        def snapshot(self) -> dict:
            return {}

    sock = NotifySocket()
    notifier = SystemdNotifier(sock.address, watchdog_seconds=0.05)
    daemon = LoopDaemon(
        sources={"b": Blocking()},
        engine=Engine([]),
        router=Router(RouteNode("r")),
        dispatcher=Dispatcher({"r": []}),
        checkpointer=Checkpointer(FileStateStore(tmp_path)),
        poll_interval=0.01,
    )
    daemon.observers.append(ServiceHooks(notifier=notifier))
    stop = threading.Event()
    loop = threading.Thread(target=daemon.run, args=(stop,), kwargs={"until_exhausted": False})
    loop.start()
    try:
        sock.wait_for("READY", timeout=10)

        def pings(seconds: float) -> int:
            n, t0 = 0, time.monotonic()
            while time.monotonic() - t0 < seconds:
                msg = sock.receive(0.05)
                n += msg is not None and "WATCHDOG" in msg
            return n

        assert pings(0.5) >= 4
        release.clear()  # the next poll blocks: the loop hangs
        time.sleep(0.2)
        pings(0.1)  # what was sent before the hang
        assert pings(0.6) == 0
        release.set()
        assert pings(0.5) >= 4
    finally:
        release.set()
        stop.set()
        loop.join(10)
        notifier.close()
        sock.close()
