"""End to end: a daemon with a Slack receiver and the interactivity endpoint, against the stub."""

from __future__ import annotations

import json
import threading
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from slack_stub import BOT_TOKEN, SlackStub, wait_for
from test_slack_interactions import SECRET, post

from aiops.alerting.feedback import FeedbackStore
from aiops.config import load_config
from aiops.models.registry import ModelRegistry
from aiops.service.app import build_daemon
from aiops.service.http import HttpServer


def _write_config(tmp: Path, stub: SlackStub) -> Path:
    rng = np.random.default_rng(11)
    values = 0.2 + rng.normal(0.0, 0.01, 300)
    values[299] = 0.245  # the last point: the alert still fires (its buttons shown) at the end
    lines = ["timestamp,value"] + [
        f"{1_767_225_600 + 60 * k},{v:.6f}" for k, v in enumerate(values)
    ]
    (tmp / "data.csv").write_text("\n".join(lines) + "\n")
    (tmp / "rules").mkdir()
    (tmp / "rules" / "r.yaml").write_text(
        "groups:\n"
        "  - name: web\n"
        "    rules:\n"
        "      - alert: HighLatency\n"
        "        source: data\n"
        "        selector: 'latency'\n"
        "        threshold: 0.999\n"
        "        labels: {severity: page}\n"
    )
    (tmp / "alerting.yaml").write_text(
        "route: {receiver: slack, group_wait: 0s}\n"
        "receivers:\n"
        "  - name: slack\n"
        "    slack_configs:\n"
        "      - token_env: SLACK_BOT_TOKEN\n"
        "        channel: C0ALERTS01\n"
        f"        api_url: {stub.api_url}\n"
    )
    (tmp / "aiops.yaml").write_text(
        "sources:\n"
        "  data:\n"
        "    type: file\n"
        "    path: data.csv\n"
        "    metric: latency\n"
        "    labels: {host: web-1}\n"
        "alerting_file: alerting.yaml\n"
        "http:\n"
        "  listen: 127.0.0.1:0\n"
        "  slack:\n"
        "    signing_secret_env: SLACK_SIGNING_SECRET\n"
        f"    response_url_prefixes: ['{stub.url}']\n"
    )
    return tmp / "aiops.yaml"


def test_alert_to_slack_and_a_false_positive_back_to_the_detector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    with SlackStub() as stub:
        loaded = load_config(_write_config(tmp_path, stub))
        state = tmp_path / "state"
        daemon = build_daemon(loaded, state_dir=state)
        assert isinstance(daemon.listener, HttpServer)
        stop = threading.Event()
        runner = threading.Thread(
            target=daemon.run, args=(stop,), kwargs={"until_exhausted": False}
        )
        runner.start()
        try:
            assert wait_for(lambda: any(m.thread_ts is None for m in stub.messages), 30)
            msg = stub.top_level()[0]
            assert msg.blocks[0]["text"]["text"] == ":red_circle: [FIRING] HighLatency"
            assert wait_for(lambda: len(stub.uploads) == 1, 10)
            button = next(
                e
                for b in msg.blocks
                if b["type"] == "actions"
                for e in b["elements"]
                if e["action_id"] == "aiops_false_positive_0"
            )
            payload = {
                "type": "block_actions",
                "user": {"id": "U1", "username": "bob"},
                "message": {"ts": msg.ts, "text": msg.text, "blocks": msg.blocks},
                "response_url": stub.response_url(),
                "actions": [{"action_id": button["action_id"], "value": button["value"]}],
            }
            body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
            status, _ = post(daemon.listener.url, body)
            assert status == 200
            store = FeedbackStore(state / "feedback.sqlite")
            assert wait_for(lambda: all(f.applied for f in store.answers()), 10)
            [fb] = store.answers()
            rule = daemon.engine.rules["web/HighLatency"]
            index = rule.series_index(fb.series)
            assert index is not None
            assert rule.threshold_of(index) == pytest.approx(fb.detail["threshold"])
            assert rule.threshold_of(index) > fb.detail["score"] >= 0.999
            # The answer is in the history of the rule's model, with the version that ran.
            registry = ModelRegistry(state / "models")

            def feedback() -> list[tuple[str, str, int]]:
                history = registry.history("web/HighLatency")
                return [
                    (e["action"], e["user"], e["version"])
                    for e in history
                    if e["event"] == "feedback"
                ]

            assert wait_for(feedback, 10)
            assert feedback() == [("false_positive", "bob", 1)]
            assert wait_for(lambda: len(stub.response_url_posts) == 1, 10)
            text = stub.response_url_posts[0]["blocks"][-1]["elements"][0]["text"]
            assert text.startswith("Marked as a false positive")
        finally:
            stop.set()
            runner.join(30)
        assert not runner.is_alive()
        assert stub.violations == []
        assert len(stub.top_level()) == 1
        # the raised threshold is in the final checkpoint too
        again = build_daemon(load_config(tmp_path / "aiops.yaml"), state_dir=state)
        again.start()
        try:
            rule = again.engine.rules["web/HighLatency"]
            assert rule.threshold_of(0) > 0.999
        finally:
            again.shutdown()
