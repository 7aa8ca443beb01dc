"""The daemon with its outbox: a dead receiver does not hold up the data loop; what it could
not deliver waits in the state directory and goes out after a restart; outbox metrics."""

import socket
import threading

from crash_harness import SlowWebhook, write_workdir
from prometheus_client import generate_latest

from aiops.alerting.notify import Alert, Notification, RetryAfter
from aiops.alerting.outbox import OUTBOX_FILE, DeliveryPolicy, Integration, Outbox
from aiops.config import load_config
from aiops.service.app import build_daemon
from aiops.service.metrics import PrometheusMetrics
from aiops.testing import FakeClock, ListNotifier


def test_a_dead_receiver_does_not_block_the_loop_and_pending_rows_survive(tmp_path):
    dead = socket.socket()  # accepts connections (the kernel does) and never answers
    dead.bind(("127.0.0.1", 0))
    dead.listen(512)
    try:
        config = write_workdir(
            tmp_path,
            f"http://127.0.0.1:{dead.getsockname()[1]}/hook",
            series=2,
            spikes=10,
            checkpoint_interval="1h",
        )
        loaded = load_config(config)
        daemon = build_daemon(loaded, state_dir=loaded.daemon.state.dir)
        done = threading.Event()
        threading.Thread(
            target=lambda: (daemon.run(threading.Event(), until_exhausted=True), done.set()),
            daemon=True,
        ).start()
        # ~40 notifications; sent from the loop, each would wait its 5 s time-out.
        assert done.wait(60), "the data loop waited for the receiver"
    finally:
        dead.close()
    box = Outbox(loaded.daemon.state.dir / OUTBOX_FILE)
    pending = box.stats()["hook"].pending
    assert pending >= 30
    # The next start delivers what waited, to a receiver that answers now.
    with SlowWebhook(delay=0.0) as hook:
        config = write_workdir(tmp_path, hook.url + "/hook", series=2, spikes=10)
        loaded = load_config(config)
        daemon = build_daemon(loaded, state_dir=loaded.daemon.state.dir)
        daemon.run(threading.Event(), until_exhausted=True)
    assert box.stats() == {}
    assert len(hook.keys) == pending
    assert hook.errors == []


def test_outbox_metrics(tmp_path):
    metrics = PrometheusMetrics()
    sink = ListNotifier([RetryAfter("down")])
    box = Outbox(
        tmp_path / OUTBOX_FILE,
        [Integration("ops", "x[0]", sink)],
        clock=FakeClock(1_000.0),
        policy=DeliveryPolicy(base_delay=1.0, max_delay=1.0),
        on_outcome=metrics.outbox_outcome,
    )
    metrics.watch_outbox(box.stats)
    for i in range(2):
        box.append(Notification("ops", [Alert(f"f{i}", "firing", {"alertname": "A"}, {}, 0.0)]))
    box.deliver_due()
    text = generate_latest(metrics.registry).decode()
    assert 'aiops_outbox_pending{receiver="ops"} 1.0' in text
    assert 'aiops_outbox_dead_letters{receiver="ops"} 0.0' in text
    assert 'aiops_outbox_outcomes_total{outcome="retry",receiver="ops"} 1.0' in text
    assert 'aiops_outbox_outcomes_total{outcome="delivered",receiver="ops"} 1.0' in text
    age = [ln for ln in text.splitlines() if ln.startswith("aiops_outbox_oldest_pending_age")]
    assert len(age) == 1  # wall-clock age of a row made at fake time 1000: large
    assert float(age[0].split()[-1]) > 1e9


def test_a_checkpoint_is_held_back_while_notifications_are_not_in_the_outbox(tmp_path):
    import sqlite3

    from aiops.alerting.routing import RouteNode, Router
    from aiops.pipeline.engine import Engine
    from aiops.service.daemon import Daemon
    from aiops.state.checkpoint import Checkpointer
    from aiops.state.envelope import FileStateStore
    from aiops.testing import MemorySource

    from .test_daemon import batches
    from .test_fault_isolation import spec

    class QuickFlush(Outbox):
        def flush(self, timeout=10.0):  # the test need not wait the daemon's 10 s
            return super().flush(min(timeout, 0.3))

    data = batches(n_batches=20)  # the first spike is in batch 12
    clock = FakeClock()
    sink = ListNotifier()
    box = QuickFlush(
        tmp_path / "s" / OUTBOX_FILE, [Integration("r", "l[0]", sink)], busy_timeout=0.05
    )
    d = Daemon(
        sources=lambda positions: {"mem": MemorySource(data, resume=positions.get("mem"))},
        engine=Engine([spec("Good", "robust_ewma")]),
        router=Router(RouteNode("r")),
        dispatcher=box,
        checkpointer=Checkpointer(FileStateStore(tmp_path / "s")),
        checkpoint_interval=5,
        clock=clock,
    )
    d.start()
    blocker = sqlite3.connect(tmp_path / "s" / OUTBOX_FILE, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")  # the outbox cannot be written
    try:
        while d.alerts_sent == 0:
            assert d.step()
        clock.advance(6)
        d.step()
        assert Checkpointer(FileStateStore(tmp_path / "s")).load() is None
    finally:
        blocker.rollback()
        blocker.close()
    clock.advance(11)  # the retry: the rows are written first, then the checkpoint
    d.step()
    ckpt = Checkpointer(FileStateStore(tmp_path / "s")).load()
    assert ckpt is not None
    assert box.stats()["r"].pending + len(sink.sent) >= d.alerts_sent
    d.shutdown()
