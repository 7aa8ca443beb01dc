"""One rule that raises: the others go on, its points are kept aside, nothing is lost."""

from __future__ import annotations

import json
import logging
import threading

import numpy as np
import pytest

from aiops.alerting.routing import Dispatcher, RouteNode, Router
from aiops.pipeline.engine import Engine, RuleSpec
from aiops.registry import DETECTORS
from aiops.service.daemon import Daemon, DeadLetterFile
from aiops.service.metrics import PrometheusMetrics
from aiops.state.checkpoint import Checkpointer
from aiops.state.envelope import FileStateStore
from aiops.testing import FakeClock, ListNotifier, MemorySource
from aiops.types import Batch, SeriesKey

from .test_daemon import batches

#: The value the test detector cannot take (a stand-in for any bug on some input).
POISON = 666.0


class PoisonDetector:
    """Wraps the default detector; raises on a batch holding :data:`POISON`."""

    def __init__(self, **params):
        self.inner = DETECTORS.create("robust_ewma", **params)

    def score(self, idx, timestamps, values):
        if np.any(values == POISON):
            raise ValueError(f"cannot score {POISON}")
        return self.inner.score(idx, timestamps, values)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(autouse=True)
def poison_detector(monkeypatch):
    monkeypatch.setitem(DETECTORS._paths, "poison", f"{__name__}:PoisonDetector")


def spec(alert, detector, annotations=None):
    return RuleSpec(
        group="g",
        alert=alert,
        source="mem",
        matches=lambda k: True,
        detector_type=detector,
        threshold=0.99999,
        detector_params={"warmup": 30},
        annotations=annotations or {},
    )


def make_daemon(state, data, notifier, *, clock=None, interval=1e9, metrics=None, bad="poison"):
    """Rules "Good" and "Bad" on one source; "Bad" raises on POISON (unless ``bad`` is set)."""
    specs = [spec("Good", "robust_ewma"), spec("Bad", bad)]
    return Daemon(
        sources=lambda positions: {"mem": MemorySource(data, resume=positions.get("mem"))},
        engine=Engine(specs),
        router=Router(RouteNode("r")),
        dispatcher=Dispatcher({"r": [notifier]}),
        checkpointer=Checkpointer(FileStateStore(state)),
        checkpoint_interval=interval,
        dead_letters=DeadLetterFile(state / "rejects.jsonl"),
        clock=clock or FakeClock(),
        **({"metrics": metrics} if metrics else {}),
    )


def poisoned(data, at):
    """``data`` with one value of batch ``at`` replaced by POISON."""
    out = list(data)
    b = out[at]
    v = b.values.copy()
    v[5] = POISON
    out[at] = Batch(keys=b.keys, series=b.series, timestamps=b.timestamps, values=v)
    return out


def by_rule(notifier):
    out: dict[str, list] = {}
    for n in notifier.sent:
        for a in n.alerts:
            out.setdefault(a.labels["alertname"], []).append(
                (a.status, a.labels["host"], a.starts_at)
            )
    return out


def test_a_raising_rule_is_degraded_while_the_others_and_the_source_go_on(tmp_path, caplog):
    bad_at = 15
    data = poisoned(batches(), bad_at)
    clean = ListNotifier()  # the same data, no rule raises
    make_daemon(tmp_path / "clean", data, clean, bad="robust_ewma").run(threading.Event())
    expected = by_rule(clean)
    assert len(expected["Good"]) >= 8

    notifier = ListNotifier()
    metrics = PrometheusMetrics()
    d = make_daemon(tmp_path / "s", data, notifier, metrics=metrics)
    d.start()
    for _ in range(bad_at + 1):
        d.step()
    # The rule failed on batch 15: degraded in health and metrics, named in the log.
    report = d.health_report["mem"]
    assert report["state"] == "degraded"
    bad = report["rules"]["g/Bad"]
    assert bad["state"] == "degraded"
    assert bad["failed_points"] == data[bad_at].n_points
    assert "ValueError: cannot score 666.0" in bad["last_error"]
    assert bad["series"] == [str(k) for k in data[bad_at].keys]
    assert "g/Good" not in report["rules"]
    assert metrics.registry.get_sample_value("aiops_rule_degraded", {"rule": "g/Bad"}) == 1
    assert metrics.registry.get_sample_value("aiops_rule_degraded", {"rule": "g/Good"}) == 0
    points = data[bad_at].n_points
    failed = metrics.registry.get_sample_value("aiops_rule_failed_points_total", {"rule": "g/Bad"})
    assert failed == points
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("rule g/Bad failed" in m and 'latency{host="h0"}' in m for m in logged)
    # The next batch is the retry: it goes through and the rule is healthy again.
    d.step()
    assert d.health_report["mem"]["state"] == "ok"
    assert d.health_report["mem"]["rules"]["g/Bad"]["failed_batches"] == 1
    assert metrics.registry.get_sample_value("aiops_rule_degraded", {"rule": "g/Bad"}) == 0
    while not d.exhausted:
        d.step()
    d.shutdown()
    got = by_rule(notifier)
    assert got["Good"] == expected["Good"]  # the other rule lost nothing
    # The failed batch's points are kept aside, one line each, with series, time, value.
    lines = [json.loads(x) for x in (tmp_path / "s" / "rejects.jsonl").read_text().splitlines()]
    assert len(lines) == points
    assert {x["reason"] for x in lines} == {"rule_error"}
    assert {x["origin"] for x in lines} == {"g/Bad"}
    kept = [json.loads(x["raw"]) for x in lines]
    assert kept[5]["value"] == POISON
    assert [p["timestamp"] for p in kept] == data[bad_at].timestamps.tolist()


def test_after_a_crash_and_restart_every_point_was_scored_or_kept_aside(tmp_path):
    """A checkpoint after the failed batch covers it: its points are in the rejects file.

    The process dies after the checkpoint; the restarted daemon resumes after the
    failed batch. Each rule's alerts plus the kept-aside points account for all data.
    """
    data = poisoned(batches(), 12)
    clock = FakeClock()
    first = ListNotifier()
    d1 = make_daemon(tmp_path / "s", data, first, clock=clock, interval=5)
    d1.start()
    for _ in range(14):
        clock.advance(1)
        d1.step()
    clock.advance(5)
    d1.step()  # checkpoint after batch 15 (12 failed for g/Bad)
    ckpt = Checkpointer(FileStateStore(tmp_path / "s")).load()
    assert ckpt.sources == {"mem": {"next": 15}}
    # Died here, no shutdown. The rejects of batch 12 were synced before that checkpoint.
    kept = (tmp_path / "s" / "rejects.jsonl").read_text().splitlines()
    assert len(kept) == data[12].n_points
    second = ListNotifier()
    d2 = make_daemon(tmp_path / "s", data, second)
    d2.run(threading.Event())
    assert d2.health_report["mem"]["state"] == "ok"
    clean = ListNotifier()
    make_daemon(tmp_path / "clean", data, clean, bad="robust_ewma").run(threading.Event())
    good = by_rule(first).get("Good", []) + by_rule(second).get("Good", [])
    assert sorted(set(good)) == sorted(set(by_rule(clean)["Good"]))


def test_a_checkpoint_is_held_back_while_kept_aside_points_cannot_be_written(tmp_path):
    data = poisoned(batches(n_batches=6), 1)
    clock = FakeClock()
    d = make_daemon(tmp_path / "s", data, ListNotifier(), clock=clock, interval=5)
    blocker = tmp_path / "s" / "rejects.jsonl"
    blocker.mkdir(parents=True)  # the rejects file cannot be opened
    d.start()
    d.step()
    d.step()  # batch 1 fails for g/Bad: its points wait in memory
    clock.advance(6)
    d.step()
    assert Checkpointer(FileStateStore(tmp_path / "s")).load() is None
    blocker.rmdir()  # the disk is writable again: the retry writes them, then checkpoints
    clock.advance(11)
    d.step()
    assert Checkpointer(FileStateStore(tmp_path / "s")).load().sources == {"mem": {"next": 4}}
    assert len(blocker.read_text().splitlines()) == data[1].n_points


def test_a_template_that_fails_sends_the_alert_with_the_error(tmp_path):
    def render(template, context):
        if "{{ broken" in template:
            raise ValueError("unclosed action")
        return template

    engine = Engine(
        [spec("Good", "robust_ewma", {"summary": "{{ broken", "runbook": "r"})], render=render
    )
    alerts = [a for b in batches() for a in engine.process("mem", b)]
    assert alerts  # the alerts were not lost
    assert alerts[0].annotations["summary"].startswith("<error expanding template: ValueError")
    assert alerts[0].annotations["runbook"] == "r"
    rt = engine.rule("g/Good")
    assert rt.health.template_errors == len(alerts)
    assert not rt.health.degraded


def test_a_rule_that_fails_every_batch_stays_degraded_and_costs_the_others_nothing():
    engine = Engine([spec("Good", "robust_ewma"), spec("Bad", "poison")])
    keys = [SeriesKey.of("x")]
    for t in range(50):
        value = POISON if t >= 40 else float(t % 3)
        engine.process("mem", Batch.from_points([(keys[0], 60.0 * t, value)]))
    bad, good = engine.rule("g/Bad"), engine.rule("g/Good")
    assert bad.health.degraded
    assert bad.health.consecutive == 10
    assert len(engine.take_failures()) == 10
    assert engine.take_failures() == []
    assert not good.health.degraded
    assert good.detector.n_series == 1
    # The failed rule's own state did not advance: its alert states saw 40 points only.
    assert bad.alerts.last_seen[0] == 60.0 * 39
    assert good.alerts.last_seen[0] == 60.0 * 49
