"""Hot reload (aiops.service.reload) on a daemon built from real files, in process.

The daemon is the one ``aiops run`` builds (``build_daemon``) from files in a temporary
directory, with a simulator source; each test edits the files and reloads between two
loop steps, as SIGHUP and ``POST /-/reload`` do.
"""

import json

import pytest

from aiops.config import load_config
from aiops.pipeline.engine import WINDOW_POINTS
from aiops.service.app import build_daemon
from aiops.service.http import HttpRequest
from aiops.service.metrics import PrometheusMetrics
from aiops.service.reload import ReloadEndpoint, Reloader

DAEMON = """sources:
  sim:
    type: simulator
    seed: 3
    hosts: 2
    services: [api]
    max_steps_per_batch: 20
    warmup: 30m
state:
  dir: state
  checkpoint_interval: 1h
rule_files: [rules.yaml]
alerting_file: alerting.yaml
"""

RULE = """      - alert: {name}
        source: {source}
        selector: '{{__name__=~".+"}}'
        threshold: {threshold}
        annotations: {{summary: "{summary}"}}
"""

ALERTING = """route:
  receiver: file
  group_wait: 0s
receivers:
  - name: file
    jsonl_configs:
      - path: {path}
"""


def rules(*specs):
    body = "".join(
        RULE.format(
            name=s[0],
            threshold=s[1],
            summary=s[2] if len(s) > 2 else "x",
            source=s[3] if len(s) > 3 else "sim",
        )
        for s in specs
    )
    return "groups:\n  - name: g\n    rules:\n" + body


def value(metrics, name):
    return metrics.registry.get_sample_value(name)


@pytest.fixture
def setup(tmp_path):
    (tmp_path / "aiops.yaml").write_text(DAEMON)
    (tmp_path / "rules.yaml").write_text(
        rules(("Keep", 0.99), ("Drop", 0.6), ("Change", 0.99), ("Words", 0.99, "old"))
    )
    (tmp_path / "alerting.yaml").write_text(ALERTING.format(path="alerts.jsonl"))
    loaded = load_config(tmp_path / "aiops.yaml")
    daemon = build_daemon(loaded, state_dir=tmp_path / "state")
    metrics = PrometheusMetrics()
    reloader = Reloader(loaded, state_dir=tmp_path / "state", metrics=metrics)
    daemon.start()
    for _ in range(30):
        daemon.step()
    yield tmp_path, daemon, reloader, metrics
    daemon.shutdown()


def test_an_invalid_configuration_is_refused_with_every_error_and_the_old_one_runs(setup):
    root, daemon, reloader, metrics = setup
    assert value(metrics, "aiops_config_last_reload_successful") == 1.0
    started = value(metrics, "aiops_config_last_reload_success_timestamp_seconds")
    engine, runtimes = daemon.engine, dict(daemon.engine.rules)
    text = (root / "rules.yaml").read_text()
    (root / "rules.yaml").write_text(
        text.replace("threshold: 0.6", "threshold: 0.6\n        colour: red")
        + "      - alert: Late\n        source: nowhere\n        selector: up\n"
    )
    result = reloader.reload(daemon)
    assert result.status == 400
    assert len(result.errors) == 2, result.errors
    assert any(
        e.endswith('rules.yaml:13:9: group "g", rule "Drop": unknown key "colour"')
        for e in result.errors
    )
    assert any('rule "Late": undefined source "nowhere"' in e for e in result.errors)
    assert value(metrics, "aiops_config_last_reload_successful") == 0.0
    assert value(metrics, "aiops_config_last_reload_success_timestamp_seconds") == started
    assert daemon.engine is engine
    assert daemon.engine.rules == runtimes
    daemon.step()  # still scoring with the old rules
    (root / "rules.yaml").write_text(text)
    assert reloader.reload(daemon).ok
    assert value(metrics, "aiops_config_last_reload_successful") == 1.0


def test_unchanged_rules_keep_their_state_new_start_removed_and_changed_resolve(setup):
    root, daemon, reloader, _ = setup
    for _ in range(200):  # until the low-threshold rule has firing alerts
        if daemon.engine.rules["g/Drop"].alerts.firing().size:
            break
        daemon.step()
    old = dict(daemon.engine.rules)
    keep_state = old["g/Keep"].detector.state_dict()
    firing = old["g/Drop"].alerts.firing().tolist()
    assert firing, "the low-threshold rule should fire on the simulated data"
    changed_firing = old["g/Change"].alerts.firing().tolist()  # resolved too: it restarts
    alerts_before = daemon.alerts_sent
    (root / "rules.yaml").write_text(
        rules(("Keep", 0.99), ("Change", 0.95), ("Words", 0.99, "new words"), ("New", 0.99))
    )
    result = reloader.reload(daemon)
    assert result.ok, result.errors
    rules_now = daemon.engine.rules
    assert list(rules_now) == ["g/Keep", "g/Change", "g/Words", "g/New"]
    assert rules_now["g/Keep"] is old["g/Keep"]  # the same runtime: state and alerts kept
    assert json.dumps(keep_state, default=str) == json.dumps(
        rules_now["g/Keep"].detector.state_dict(), default=str
    )
    assert rules_now["g/Words"] is old["g/Words"]
    assert rules_now["g/Words"].spec.annotations == {"summary": "new words"}
    assert rules_now["g/Change"] is not old["g/Change"]
    assert len(rules_now["g/Change"].registry) == 0  # starts fresh
    assert rules_now["g/Change"].spec.threshold == 0.95
    assert len(rules_now["g/New"].registry) == 0
    assert [rt.spec.key for rt in daemon.engine.by_source["sim"]] == list(rules_now)
    # The removed and the changed rules' firing alerts were resolved and handed over.
    assert daemon.alerts_sent == alerts_before + len(firing) + len(changed_firing)
    assert any("resolved" in c for c in result.changes)
    daemon.dispatcher.flush()
    for _ in range(5):
        daemon.step()
    assert len(rules_now["g/New"].registry) == len(rules_now["g/Keep"].registry) == 10


def test_sources_unchanged_stay_open_changed_resume_new_open_removed_close(setup):
    root, daemon, reloader, _ = setup
    sim = daemon.sources["sim"]
    position = sim.snapshot()
    (root / "aiops.yaml").write_text(
        DAEMON.replace("  sim:\n", "  other:\n    type: simulator\n    seed: 5\n  sim:\n")
    )
    assert reloader.reload(daemon).ok
    assert daemon.sources["sim"] is sim
    assert set(daemon.sources) == {"sim", "other"}
    assert daemon.sources["other"].snapshot()["step"] == 0
    assert set(daemon.health) == {"sim", "other"}
    # A changed source of the same type resumes where the old one was.
    (root / "aiops.yaml").write_text(DAEMON.replace("seed: 3", "seed: 4"))
    result = reloader.reload(daemon)
    assert result.ok, result.errors
    assert "sources reopened: sim" in result.changes
    assert "sources removed: other" in result.changes
    assert daemon.sources["sim"] is not sim
    assert daemon.sources["sim"].snapshot()["step"] == position["step"]
    assert set(daemon.sources) == {"sim"}


def test_a_change_that_needs_a_restart_is_refused(setup):
    root, daemon, reloader, _ = setup
    (root / "aiops.yaml").write_text(DAEMON + "http:\n  listen: 127.0.0.1:9\n")
    result = reloader.reload(daemon)
    assert result.status == 400
    assert result.errors == (f"{root / 'aiops.yaml'}: http: changed; the listener needs a restart",)
    (root / "aiops.yaml").write_text(
        DAEMON.replace("checkpoint_interval: 1h", "checkpoint_interval: 2m")
    )
    result = reloader.reload(daemon)
    assert result.ok
    assert daemon.checkpoint_interval == 120.0


def test_new_receivers_restart_the_outbox_and_keep_its_rows(setup):
    root, daemon, reloader, _ = setup
    outbox = daemon.dispatcher
    router = daemon.router
    daemon.dispatcher.flush()
    rows = outbox.history(limit=10_000)
    assert rows
    (root / "alerting.yaml").write_text(ALERTING.format(path="other.jsonl"))
    result = reloader.reload(daemon)
    assert result.ok, result.errors
    assert daemon.dispatcher is not outbox
    assert daemon.router is not router
    assert [e.id for e in daemon.dispatcher.history(limit=10_000)][-len(rows) :] == [
        e.id for e in rows
    ]
    for _ in range(20):
        daemon.step()
    daemon.dispatcher.flush()
    assert daemon.dispatcher.drain(10.0)
    assert (root / "state" / "other.jsonl").exists()


def test_post_reload_answers_200_400_and_503(setup):
    root, daemon, reloader, _ = setup
    endpoint = ReloadEndpoint(reloader, wait=5.0)
    request = HttpRequest("POST", "/-/reload", {}, b"", "127.0.0.1")
    assert endpoint.handle_http(request).status == 503  # the loop is not turning yet
    endpoint.accepting = True
    import threading

    answers = []
    t = threading.Thread(target=lambda: answers.append(endpoint.handle_http(request)))
    t.start()
    while not reloader.pending:
        pass
    reloader.apply_pending(daemon)  # what the loop does between two steps
    t.join()
    assert answers[0].status == 200
    assert answers[0].body.startswith(b"configuration reloaded")
    (root / "rules.yaml").write_text("groups: [")
    t = threading.Thread(target=lambda: answers.append(endpoint.handle_http(request)))
    t.start()
    while not reloader.pending:
        pass
    reloader.apply_pending(daemon)
    t.join()
    assert answers[1].status == 400
    assert b"rules.yaml:1:" in answers[1].body
    endpoint.stop_receiving()
    assert endpoint.handle_http(request).status == 503


def test_a_push_receiver_cannot_take_the_reload_path(tmp_path):
    from aiops.service.http import HttpServer
    from aiops.service.reload import RELOAD_PATH

    (tmp_path / "aiops.yaml").write_text(
        DAEMON.replace(
            "  sim:\n",
            f"  push:\n    type: remote_write\n    path: {RELOAD_PATH}\n  sim:\n",
        )
        + "http:\n  listen: 127.0.0.1:0\n"
    )
    (tmp_path / "rules.yaml").write_text(rules(("Keep", 0.99)))
    (tmp_path / "alerting.yaml").write_text(ALERTING.format(path="a.jsonl"))
    loaded = load_config(tmp_path / "aiops.yaml")
    daemon = build_daemon(loaded, state_dir=tmp_path / "state")
    assert isinstance(daemon.listener, HttpServer)
    daemon.listener.mount(ReloadEndpoint(Reloader(loaded, state_dir=tmp_path / "state")))
    with pytest.raises(ValueError, match="/-/reload is the listener's own endpoint"):
        daemon.start()
    daemon.dispatcher.close()


CONSOLE = """route:
  receiver: screen
  group_wait: 0s
receivers:
  - name: screen
    console_configs:
      - stream: stderr
        color: never
"""


def test_rules_keep_window_rings_only_while_a_receiver_uses_them(setup):
    # jsonl records carry the alerts' windows; the console (like webhook, PagerDuty,
    # Opsgenie, Alertmanager) does not: its rules keep no ring, and keep their state.
    root, daemon, reloader, _ = setup
    old = dict(daemon.engine.rules)
    keep = old["g/Keep"]
    assert keep.spec.windows
    assert keep._win_dt.shape[1] == WINDOW_POINTS
    seen = keep.points_seen
    assert seen > 0
    (root / "alerting.yaml").write_text(CONSOLE)
    result = reloader.reload(daemon)
    assert result.ok, result.errors
    assert daemon.engine.rules == old  # the same runtimes: no rule restarted
    assert not keep.spec.windows
    assert keep._win_dt.shape == (len(keep._win_n), 0)
    for _ in range(5):
        daemon.step()
    assert keep.points_seen > seen
    (root / "alerting.yaml").write_text(ALERTING.format(path="alerts.jsonl"))
    assert reloader.reload(daemon).ok
    assert daemon.engine.rules["g/Keep"] is keep
    assert keep.spec.windows
    assert keep._win_dt.shape == (len(keep._win_n), WINDOW_POINTS)


def test_a_daemon_whose_receivers_draw_no_window_keeps_no_ring(tmp_path):
    (tmp_path / "aiops.yaml").write_text(DAEMON)
    (tmp_path / "rules.yaml").write_text(rules(("Keep", 0.99)))
    (tmp_path / "alerting.yaml").write_text(CONSOLE)
    daemon = build_daemon(load_config(tmp_path / "aiops.yaml"), state_dir=tmp_path / "state")
    daemon.start()
    try:
        for _ in range(5):
            daemon.step()
        rt = daemon.engine.rules["g/Keep"]
        assert len(rt.registry) == 10
        assert rt._win_dt.shape == (len(rt._win_n), 0)
        assert rt.points_seen > 0
    finally:
        daemon.shutdown()
