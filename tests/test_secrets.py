"""Secrets (tokens, routing keys, signing secret) never leave the process.

One daemon with every receiver that takes a secret, each secret read from the
environment, runs until every stub has been sent an alert; then everything a user or an
attacker could read is scanned for every secret: every log line at DEBUG, every HTTP
answer of the listener, every file of the state directory (checkpoint, outbox, Slack and
feedback stores), the ``aiops alerts`` commands' output and the ``aiops check`` output.
"""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from http_stubs import OpsgenieStub, PagerDutyStub, WebhookStub
from slack_stub import BOT_TOKEN, SlackStub, wait_for

from aiops.cli import cli
from aiops.config import load_config
from aiops.service.app import build_daemon

SECRETS = {
    "PD_ROUTING_KEY": "R0utingKey0fPagerDuty7c1e9a4b5c6",  # 32 characters
    "OPSGENIE_KEY": "0psgenie-Api-Key-5b2d4f",
    "HOOK_TOKEN": "Webhook-Bearer-Token-9e8d7c",
    "SLACK_BOT_TOKEN": BOT_TOKEN,
    "SLACK_SIGNING_SECRET": "Slack-Signing-Secret-3a4b5c",
}


def _config(
    tmp: Path, pd: PagerDutyStub, og: OpsgenieStub, hook: WebhookStub, slack: SlackStub
) -> Path:
    rng = np.random.default_rng(5)
    values = 0.2 + rng.normal(0.0, 0.01, 400)
    values[250] = values[330] = 0.3
    rows = [f"{1_767_225_600 + 60 * k},{v:.6f}" for k, v in enumerate(values)]
    (tmp / "data.csv").write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    (tmp / "rules.yaml").write_text(
        "groups:\n  - name: web\n    rules:\n      - alert: HighLatency\n"
        "        source: data\n        selector: latency\n        threshold: 0.999\n"
    )
    (tmp / "alerting.yaml").write_text(
        "route: {receiver: all, group_by: ['...'], group_wait: 0s, group_interval: 1s}\n"
        "receivers:\n"
        "  - name: all\n"
        f"    pagerduty_configs: [{{routing_key_env: PD_ROUTING_KEY, url: '{pd.enqueue_url}'}}]\n"
        f"    opsgenie_configs: [{{api_key_env: OPSGENIE_KEY, api_url: '{og.url}'}}]\n"
        f"    webhook_configs: [{{url: '{hook.url}/hook', bearer_token_env: HOOK_TOKEN}}]\n"
        "    slack_configs:\n"
        f"      - {{token_env: SLACK_BOT_TOKEN, channel: C0ALERTS01, api_url: '{slack.api_url}'}}\n"
    )
    (tmp / "aiops.yaml").write_text(
        "sources:\n  data: {type: file, path: data.csv, metric: latency, labels: {host: w1}}\n"
        "state: {dir: state}\n"
        "rule_files: [rules.yaml]\n"
        "alerting_file: alerting.yaml\n"
        "http:\n  listen: 127.0.0.1:0\n  slack: {signing_secret_env: SLACK_SIGNING_SECRET}\n"
    )
    return tmp / "aiops.yaml"


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return bytes(r.read())
    except urllib.error.HTTPError as exc:
        return bytes(exc.read())


def test_no_secret_in_logs_http_answers_state_files_or_command_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)
    with (
        PagerDutyStub(SECRETS["PD_ROUTING_KEY"]) as pd,
        OpsgenieStub(SECRETS["OPSGENIE_KEY"]) as og,
        WebhookStub(bearer=SECRETS["HOOK_TOKEN"]) as hook,
        SlackStub() as slack,
    ):
        cfg = _config(tmp_path, pd, og, hook, slack)
        daemon = build_daemon(load_config(cfg), state_dir=tmp_path / "state")
        stop = threading.Event()
        runner = threading.Thread(
            target=daemon.run, args=(stop,), kwargs={"until_exhausted": False}
        )
        runner.start()
        answers = []
        try:
            delivered = wait_for(
                lambda: bool(pd.events and og.alerts and hook.keys and slack.messages), 60
            )
            base = daemon.listener.url.rstrip("/")
            for path in ("/metrics", "/healthz", "/readyz", "/", "/slack/interactions"):
                answers.append(_get(base + path))
        finally:
            stop.set()
            runner.join(30)
        assert delivered, (pd.events, og.alerts, hook.keys, len(slack.messages))
        # The stubs did receive the secrets: the scan below can find them where they leak.
        assert pd.events[0]["routing_key"] == SECRETS["PD_ROUTING_KEY"]
    runner_cli = CliRunner()
    outputs = [
        runner_cli.invoke(cli, [*cmd, "--state-dir", str(tmp_path / "state")]).output
        for cmd in (["alerts", "history"], ["alerts", "failed"])
    ]
    outputs.append(runner_cli.invoke(cli, ["check", str(tmp_path)]).output)
    texts = {"logs": caplog.text.encode(), "commands": "\n".join(outputs).encode()}
    texts.update({f"http {i}": a for i, a in enumerate(answers)})
    files = [p for p in (tmp_path / "state").rglob("*") if p.is_file()]
    assert any(p.name == "outbox.sqlite" for p in files)
    texts.update({str(p.relative_to(tmp_path)): p.read_bytes() for p in files})
    assert "HighLatency" in caplog.text or any(b"HighLatency" in t for t in texts.values())
    leaks = [
        (where, name)
        for where, blob in texts.items()
        for name, secret in SECRETS.items()
        if secret.encode() in blob
    ]
    assert leaks == []
