"""Issue [G]'s acceptance lines not proved elsewhere in tests/test_logs*.py.

A metric alert's log templates in a Slack message posted to the local Slack stub; one
deploy of fifty new templates paging ``max_alerts`` times; masks set in a rule file; a
daemon restart over a followed file with the model registry on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from slack_stub import BOT_TOKEN, SlackStub, block_kit_problem

from aiops.alerting.notify import Delivered, Notification
from aiops.config.models import RuleFile
from aiops.logs.rules import LogEngine, log_rule_specs
from aiops.models.lifecycle import ModelLifecycle
from aiops.models.registry import ModelRegistry
from aiops.types import Batch, LogRecord
from tests.test_logs import (
    NEW_AT,
    START,
    drain,
    make_daemon,
    metric_alerts_with_log_context,
    stream,
    write_jsonl,
)


def metric_alert_with_log_context():
    (alert,) = metric_alerts_with_log_context()
    return alert


def test_a_metric_alert_posted_to_slack_shows_the_log_templates_of_its_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiops.connectors.notifiers.slack import SlackNotifier

    alert = metric_alert_with_log_context()
    assert "log_templates" in alert.annotations
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    with SlackStub() as stub:
        notifier = SlackNotifier(
            SlackNotifier.Config(
                token_env="SLACK_BOT_TOKEN", channel="C0ALERTS01", api_url=stub.api_url
            ),
            base_dir=tmp_path,
        )
        assert isinstance(notifier.send(Notification("team", [alert])), Delivered)
        (msg,) = stub.top_level()
    assert block_kit_problem(msg.blocks) == ""
    text = json.dumps(msg.blocks)
    assert "*Log templates*" in text
    assert "error burst: ERROR db connection reset by peer id=<*>" in text
    assert "(e.g. ERROR db connection reset by peer id=" in text


def test_one_deploy_of_fifty_new_templates_pages_max_alerts_times() -> None:
    rules = {
        "groups": [
            {
                "name": "logs",
                "rules": [{"alert": "New", "source": "logs", "log": {"type": "new_template"}}],
            }
        ]
    }
    engine = LogEngine(log_rule_specs(RuleFile.model_validate(rules).groups))
    api = (("service", "api"),)
    words = [f"step{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(50)]
    engine.process("logs", Batch(logs=[LogRecord(START, "boot ok", api)]))  # learning starts
    deploy = START + 7200  # after the default learning period (1h)
    recs = [LogRecord(deploy + i, f"{w} of the deploy finished", api) for i, w in enumerate(words)]
    alerts = engine.process("logs", Batch(logs=recs))
    assert [a.status for a in alerts] == ["firing"] * 3  # max_alerts: 3 per 10m
    assert engine.rules["logs/New"].suppressed == 47
    # The next page, past the rate limit's window, says how many were held back.
    later = engine.process("logs", Batch(logs=[LogRecord(deploy + 700, "cutover done", api)]))
    (page,) = [a for a in later if a.status == "firing"]
    assert page.annotations["held_back"] == "47 more new templates in the last 600s"


RULE_FILE = """
groups:
  - name: logs
    rules:
      - alert: WithOrderMask
        source: logs
        log:
          type: new_template
          mining:
            masks:
              - {regex: 'ord-[a-z0-9]+', mask: '<ORDER>'}
      - alert: NoDefaultMasks
        source: logs
        log:
          type: new_template
          mining: {default_masks: false}
"""


def test_masks_are_set_in_the_rule_file(tmp_path: Path) -> None:
    from aiops.config.loader import load_rule_files

    path = tmp_path / "logs.yaml"
    path.write_text(RULE_FILE)
    engine = LogEngine(log_rule_specs(load_rule_files([path])))
    api = (("service", "api"),)
    lines = ["paid ord-77a1 from 10.0.0.1", "paid ord-b3 from 10.0.0.2"]
    engine.process("logs", Batch(logs=[LogRecord(START + i, x, api) for i, x in enumerate(lines)]))
    custom, bare = (
        [m.template(c) for m in engine.group_miners(engine.rules[k].spec) for c in (1, 2)]
        for k in ("logs/WithOrderMask", "logs/NoDefaultMasks")
    )
    assert custom == ["paid <ORDER> from <IP>", ""]  # one template: custom and default masks
    assert bare[0] != "paid <ORDER> from <IP>"
    assert "<IP>" not in bare[0]  # no default masks: Drain's own variables only


def test_a_daemon_restart_keeps_the_log_rules_versions_and_does_not_alert_again(
    tmp_path: Path,
) -> None:
    minutes = stream()
    path = tmp_path / "app.log"
    write_jsonl(path, [r for m in minutes[: NEW_AT + 5] for r in m])
    registry_dir = tmp_path / "b" / "state" / "models"
    first, seen = make_daemon(tmp_path / "b", path)
    first.models = ModelLifecycle(ModelRegistry(registry_dir))
    first.start()
    drain(first)
    first.shutdown()
    assert ("NewLogTemplate", "firing") in {(a, s) for a, s, _ in seen}
    write_jsonl(path, [r for m in minutes[NEW_AT + 5 :] for r in m])
    second, seen2 = make_daemon(tmp_path / "b", path)
    second.models = life = ModelLifecycle(ModelRegistry(registry_dir))
    second.start()
    assert life.running == {"logs/NewLogTemplate": 1, "logs/ErrorBurst": 1}
    drain(second)
    second.shutdown()
    assert [a for a, s, _ in seen2 if s == "firing"] == ["ErrorBurst"]
    for key in life.running:
        assert [v.version for v in life.registry.versions(key)] == [1]


def test_the_readme_s_log_rules_example_loads(tmp_path: Path) -> None:
    from aiops.config.loader import load_rule_files

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = text.index("groups:\n  - name: app-logs")
    path = tmp_path / "logs.yaml"
    path.write_text(text[start : text.index("```", start)])
    specs = log_rule_specs(load_rule_files([path]))
    assert [s.kind for s in specs] == ["new_template", "error_burst", "template_rate"]
    assert specs[0].mining.masks[0].mask == "<ORDER>"
