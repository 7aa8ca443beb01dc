"""The Slack notifier against a local stub of Slack's Web API and incoming webhooks."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from prometheus_client import generate_latest
from pydantic import ValidationError
from slack_stub import BOT_TOKEN, Fault, SlackStub, block_kit_problem

from aiops.alerting.notify import (
    Alert,
    Delivered,
    Notification,
    PermanentFailure,
    RetryAfter,
)
from aiops.alerting.outbox import decode_notification, encode_notification
from aiops.connectors.notifiers import slack as slack_module
from aiops.connectors.notifiers.slack import SlackNotifier, build_message
from aiops.connectors.notifiers.slack_chart import render_chart
from aiops.pipeline.engine import RuleRuntime, RuleSpec
from aiops.registry import DEFAULT_DETECTOR, NOTIFIERS
from aiops.service.metrics import PrometheusMetrics
from aiops.types import Batch, SeriesKey

CHANNEL = "C0ALERTS01"
KEY = SeriesKey.of("http_latency_seconds", {"host": "web-1", "job": "api"})


def engine_alerts() -> tuple[Alert, Alert]:
    """A real firing and resolution from the engine, with its recent window."""
    rt = RuleRuntime(
        RuleSpec(
            group="web",
            alert="HighLatency",
            source="s",
            matches=lambda k: True,
            threshold=0.999,
            labels={"severity": "page"},
            annotations={"summary": "p99 latency is unusual"},
        )
    )
    values = 0.2 + np.random.default_rng(4).normal(0.0, 0.01, 200)
    values[150:153] = 0.6
    batch = Batch(
        keys=[KEY],
        series=np.zeros(200, np.int64),
        timestamps=1_767_225_600.0 + 60.0 * np.arange(200),
        values=values,
    )
    alerts = rt.process(batch).alerts
    firing = next(a for a in alerts if a.status == "firing")
    resolved = next(a for a in alerts if a.status == "resolved")
    return firing, resolved


@pytest.fixture(scope="module")
def alerts() -> tuple[Alert, Alert]:
    return engine_alerts()


@pytest.fixture
def stub() -> Any:
    with SlackStub() as s:
        yield s


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    return BOT_TOKEN


def notifier(stub: SlackStub, base: Path, **kw: Any) -> SlackNotifier:
    settings: dict[str, Any] = {
        "token_env": "SLACK_BOT_TOKEN",
        "channel": CHANNEL,
        "api_url": stub.api_url,
        "generator_url": "https://prometheus.example/graph?g0.expr={{ $series | urlquery }}",
        "dashboard_url": "https://grafana.example/d/api?var-host={{ $labels.host }}",
    }
    settings.update(kw)
    return SlackNotifier(SlackNotifier.Config(**settings), base_dir=base)


def test_registered_and_loadable_from_an_alerting_file(tmp_path: Path) -> None:
    from aiops.config import load_alerting

    assert NOTIFIERS.get("slack") is SlackNotifier
    path = tmp_path / "alerting.yaml"
    path.write_text(
        "route: {receiver: team}\n"
        "receivers:\n"
        "  - name: team\n"
        "    slack_configs:\n"
        "      - token_env: SLACK_BOT_TOKEN\n"
        "        channel: C0ALERTS01\n"
        "        dashboard_url: 'https://grafana.example/d/x?host={{ $labels.host }}'\n"
        "      - webhook_url_file: /run/secrets/slack-hook\n"
    )
    cfg = load_alerting(path)
    specs = cfg.receiver("team").notifiers
    assert [s.type for s in specs] == ["slack", "slack"]
    assert specs[1].config.webhook  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"token": "xoxb-1", "channel": CHANNEL}, '"token" must not be written in the file'),
        ({"webhook_url": "https://hooks.slack.com/x"}, '"webhook_url" must not be written'),
        ({"token_env": "T"}, "a bot token needs"),
        ({"token_env": "T", "token_file": "/f", "channel": CHANNEL}, "not both"),
        ({"token_env": "T", "webhook_url_env": "H", "channel": CHANNEL}, "either a bot token"),
        ({}, "either a bot token"),
        ({"webhook_url_env": "H", "channel": CHANNEL}, '"channel" goes with a bot token'),
        ({"token_env": "T", "channel": CHANNEL, "dashboard_url": "{{ $nope }}"}, "nope"),
    ],
)
def test_config_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SlackNotifier.Config(**settings)


def test_firing_posts_valid_blocks_and_uploads_the_chart(
    stub: SlackStub, token: str, tmp_path: Path, alerts: tuple[Alert, Alert]
) -> None:
    firing, _ = alerts
    n = notifier(stub, tmp_path)
    result = n.send(Notification("team", [firing]))
    assert isinstance(result, Delivered), result
    assert stub.violations == []
    [msg] = stub.top_level()
    assert msg.channel == CHANNEL
    assert block_kit_problem(msg.blocks) == ""
    header = msg.blocks[0]
    assert header["type"] == "header"
    assert header["text"]["text"] == ":red_circle: [FIRING] HighLatency"
    fields = [f["text"] for b in msg.blocks if b["type"] == "section" for f in b.get("fields", [])]
    w = firing.window
    assert w is not None
    value = next(f for f in fields if f.startswith("*Value*"))
    assert f"{firing.value:.4g} (expected {w.lo[-1]:.4g} to {w.hi[-1]:.4g})" in value
    assert "*Severity*\npage" in fields
    assert any(f.startswith(f"*Detector*\n{DEFAULT_DETECTOR} (model ") for f in fields)
    assert f"*Score*\n{slack_module._score(firing.score)}" in fields
    assert slack_module._score(0.999) == "0.999000 (about 1 normal point in 1,000)"
    text = json.dumps(msg.blocks)
    assert "host=web-1" in text
    assert "p99 latency is unusual" in text
    [actions] = [b for b in msg.blocks if b["type"] == "actions"]
    buttons = {e["action_id"]: e for e in actions["elements"]}
    assert list(buttons) == [
        "aiops_acknowledge_0",
        "aiops_silence_0",
        "aiops_false_positive_0",
        "aiops_expected_change_0",
        "link_0_0",
        "link_1_0",
    ]
    assert [b["text"]["text"] for b in buttons.values()][:4] == [
        "Acknowledge",
        "Silence 1 h",
        "False positive",
        "Expected change",
    ]
    value_doc = json.loads(buttons["aiops_silence_0"]["value"])
    assert value_doc == {"fingerprint": firing.fingerprint, "series": firing.series}
    assert buttons["link_0_0"]["url"] == (
        "https://prometheus.example/graph?g0.expr="
        "http_latency_seconds%7Bhost%3D%22web-1%22%2Cjob%3D%22api%22%7D"
    )
    assert buttons["link_1_0"]["url"] == "https://grafana.example/d/api?var-host=web-1"
    meta = msg.metadata
    assert meta is not None
    assert (
        meta["event_payload"]["idempotency_key"] == Notification("team", [firing]).idempotency_key
    )
    # the chart: the three steps of files_upload_v2, in order, into the message's thread
    steps = [
        r.method
        for r in stub.requests
        if r.method in ("files.getUploadURLExternal", "upload", "files.completeUploadExternal")
    ]
    assert steps == ["files.getUploadURLExternal", "upload", "files.completeUploadExternal"]
    [(file_id, meta_f)] = stub.files.items()
    assert meta_f["complete"] is True
    assert meta_f["channel"] == CHANNEL
    assert meta_f["thread_ts"] == msg.ts
    assert msg.files == [file_id]
    png = stub.uploads[file_id]
    assert stub.calls("files.getUploadURLExternal")[0].args["length"] in (len(png), str(len(png)))
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    assert image.size == (800, 300)
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)

    def count(rgb: tuple[int, int, int], tol: int = 12) -> int:
        return int((np.abs(pixels - np.array(rgb)).max(axis=1) <= tol).sum())

    assert count((0xD6, 0x27, 0x28)) > 50  # the anomalous points, in red
    assert count((0x1F, 0x77, 0xB4)) > 200  # the series line
    assert count((0xCE, 0xE4, 0xF0), tol=8) > 2000  # the band (#9ecae1 at 50% on white)


def test_chart_marks_exactly_the_anomalous_points() -> None:
    ts = tuple(60.0 * k for k in range(20))
    vals = tuple(1.0 for _ in range(20))
    band = tuple(0.5 for _ in range(20)), tuple(1.5 for _ in range(20))
    from aiops.alerting.notify import AlertWindow

    none = AlertWindow(ts, vals, *band, tuple(False for _ in range(20)), 0.99)
    some = AlertWindow(ts, vals, *band, tuple(k == 10 for k in range(20)), 0.99)

    def red(w: AlertWindow) -> int:
        px = np.asarray(Image.open(io.BytesIO(render_chart(w))).convert("RGB")).astype(int)
        return int((np.abs(px - np.array([0xD6, 0x27, 0x28])).max(axis=2) <= 12).sum())

    assert red(none) == 0
    assert red(some) > 20


def test_resolution_updates_the_same_message_and_replies_in_its_thread(
    stub: SlackStub, token: str, tmp_path: Path, alerts: tuple[Alert, Alert]
) -> None:
    firing, resolved = alerts
    n = notifier(stub, tmp_path)
    assert isinstance(n.send(Notification("team", [firing])), Delivered)
    [msg] = stub.top_level()
    result = n.send(Notification("team", [resolved]))
    assert isinstance(result, Delivered), result
    assert stub.violations == []
    assert len(stub.top_level()) == 1  # no second top-level message
    [update] = stub.calls("chat.update")
    assert update.args["ts"] == msg.ts
    assert update.args["channel"] == CHANNEL
    assert msg.updates == 1
    assert msg.blocks[0]["text"]["text"] == ":white_check_mark: [RESOLVED] HighLatency"
    assert not [b for b in msg.blocks if b["type"] == "actions" and _has_answer_buttons(b)]
    [reply] = stub.replies(msg.ts)
    assert reply.text.startswith(":white_check_mark: Resolved at 2026-")
    assert "HighLatency" in reply.text
    # a new firing of the same alert later is a new message
    again = Alert(
        firing.fingerprint, "firing", firing.labels, firing.annotations, firing.starts_at + 86400
    )
    assert isinstance(n.send(Notification("team", [again])), Delivered)
    assert len(stub.top_level()) == 2


def _has_answer_buttons(block: dict[str, Any]) -> bool:
    return any(e.get("action_id", "").startswith("aiops_") for e in block["elements"])


def test_resend_after_a_restart_updates_instead_of_posting_again(
    stub: SlackStub, token: str, tmp_path: Path, alerts: tuple[Alert, Alert]
) -> None:
    firing, resolved = alerts
    note = Notification("team", [firing])
    first = notifier(stub, tmp_path)
    assert isinstance(first.send(note), Delivered)
    first.close()
    # the outbox did not record Delivered (crash): the restarted daemon sends it again
    second = notifier(stub, tmp_path)
    assert isinstance(second.send(decode_notification(encode_notification(note))), Delivered)
    assert len(stub.calls("chat.postMessage")) == 1
    assert len(stub.calls("files.completeUploadExternal")) == 1
    # and the resolution, sent twice, replies once
    assert isinstance(second.send(Notification("team", [resolved])), Delivered)
    third = notifier(stub, tmp_path)
    assert isinstance(third.send(Notification("team", [resolved])), Delivered)
    [msg] = stub.top_level()
    assert len(stub.replies(msg.ts)) == 1
    assert stub.violations == []


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it in the process runs."""


def test_crash_between_slack_answer_and_store_write_is_recovered_from_history(
    stub: SlackStub,
    token: str,
    tmp_path: Path,
    alerts: tuple[Alert, Alert],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    firing, _ = alerts
    note = Notification("team", [firing])
    n = notifier(stub, tmp_path)

    def die(*args: object, **kwargs: object) -> None:
        raise _Killed

    monkeypatch.setattr(slack_module._MessageStore, "posted", die)
    with pytest.raises(_Killed):
        n.send(note)
    monkeypatch.undo()
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    assert len(stub.top_level()) == 1  # Slack has the message; the store has no ts
    restarted = notifier(stub, tmp_path)
    result = restarted.send(note)
    assert isinstance(result, Delivered), result
    [msg] = stub.top_level()
    assert result.detail == f"slack {CHANNEL}/{msg.ts}"
    assert len(stub.calls("chat.postMessage")) == 1
    [history] = stub.calls("conversations.history")
    assert history.args["include_all_metadata"] in (True, "true", "1")
    assert stub.violations == []


def test_429_is_retry_after_with_slacks_seconds(
    stub: SlackStub, token: str, tmp_path: Path, alerts: tuple[Alert, Alert]
) -> None:
    firing, _ = alerts
    n = notifier(stub, tmp_path)
    stub.fail_next("chat.postMessage", Fault(status=429, error="ratelimited", retry_after=7))
    result = n.send(Notification("team", [firing]))
    assert isinstance(result, RetryAfter)
    assert result.seconds == 7.0
    assert "ratelimited" in result.reason
    assert isinstance(n.send(Notification("team", [firing])), Delivered)
    assert len(stub.top_level()) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_worth_retrying(
    stub: SlackStub, token: str, tmp_path: Path, alerts: tuple[Alert, Alert], status: int
) -> None:
    n = notifier(stub, tmp_path)
    stub.fail_next("chat.postMessage", Fault(status=status, error="service_unavailable"))
    result = n.send(Notification("team", [alerts[0]]))
    assert isinstance(result, RetryAfter)
    assert result.seconds is None


def test_transient_error_on_the_chart_retries_without_posting_twice(
    stub: SlackStub, token: str, tmp_path: Path, alerts: tuple[Alert, Alert]
) -> None:
    n = notifier(stub, tmp_path)
    stub.fail_next("files.getUploadURLExternal", Fault(status=429, retry_after=3))
    first = n.send(Notification("team", [alerts[0]]))
    assert isinstance(first, RetryAfter)
    assert first.seconds == 3.0
    assert isinstance(n.send(Notification("team", [alerts[0]])), Delivered)
    assert len(stub.top_level()) == 1
    assert len(stub.uploads) == 1


def test_chart_refused_for_good_still_delivers(
    stub: SlackStub, token: str, tmp_path: Path, alerts: tuple[Alert, Alert]
) -> None:
    n = notifier(stub, tmp_path)
    stub.fail_next("files.getUploadURLExternal", Fault(error="missing_scope"))
    assert isinstance(n.send(Notification("team", [alerts[0]])), Delivered)
    assert stub.uploads == {}


@pytest.mark.parametrize(
    ("setup", "error"),
    [
        ("bad_token", "invalid_auth"),
        ("bad_channel", "channel_not_found"),
        ("not_in_channel", "not_in_channel"),
    ],
)
def test_permanent_failures(
    stub: SlackStub,
    tmp_path: Path,
    alerts: tuple[Alert, Alert],
    monkeypatch: pytest.MonkeyPatch,
    setup: str,
    error: str,
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-9999-wrong" if setup == "bad_token" else BOT_TOKEN)
    channel = "C0NOSUCH99" if setup == "bad_channel" else CHANNEL
    n = notifier(stub, tmp_path, channel=channel)
    if setup == "not_in_channel":
        stub.fail_next("chat.postMessage", Fault(error="not_in_channel"))
    result = n.send(Notification("team", [alerts[0]]))
    assert isinstance(result, PermanentFailure)
    assert error in result.reason
    assert "xoxb-9999-wrong" not in result.reason


def test_missing_token_is_retried_and_named(
    stub: SlackStub, tmp_path: Path, alerts: tuple[Alert, Alert], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    result = notifier(stub, tmp_path).send(Notification("team", [alerts[0]]))
    assert isinstance(result, RetryAfter)
    assert "SLACK_BOT_TOKEN" in result.reason
    assert stub.requests == []


def test_token_from_a_file(stub: SlackStub, tmp_path: Path, alerts: tuple[Alert, Alert]) -> None:
    secret = tmp_path / "token"
    secret.write_text(BOT_TOKEN + "\n")
    n = notifier(stub, tmp_path, token_env=None, token_file=str(secret))
    assert isinstance(n.send(Notification("team", [alerts[0]])), Delivered)
    assert stub.requests[0].headers["authorization"] == f"Bearer {BOT_TOKEN}"


def test_unreachable_slack_is_retry_after(
    tmp_path: Path, token: str, alerts: tuple[Alert, Alert]
) -> None:
    with SlackStub() as dead:
        url = dead.api_url
    n = SlackNotifier(
        SlackNotifier.Config(token_env="SLACK_BOT_TOKEN", channel=CHANNEL, api_url=url, timeout=2),
        base_dir=tmp_path,
    )
    result = n.send(Notification("team", [alerts[0]]))
    assert isinstance(result, RetryAfter)


def test_a_large_group_stays_within_block_kit_limits(
    stub: SlackStub, token: str, tmp_path: Path
) -> None:
    many = [
        Alert(
            f"{k:016x}",
            "firing",
            {"alertname": "DiskFull", "host": f"h{k}", "severity": "warning"},
            {"description": "x" * 5000},
            1_767_225_600.0,
            value=float(k),
            score=0.999,
            series=f'disk{{host="h{k}"}}' + "y" * 3000,
        )
        for k in range(40)
    ]
    n = notifier(stub, tmp_path)
    result = n.send(Notification("team", many, group_labels={"alertname": "DiskFull"}))
    assert isinstance(result, Delivered), result
    assert stub.violations == []
    [msg] = stub.top_level()
    assert len(msg.blocks) <= 50
    assert msg.blocks[0]["text"]["text"] == ":warning: [FIRING:40] DiskFull"
    assert msg.blocks[-1]["elements"][0]["text"].startswith("and ")
    assert msg.blocks[-1]["elements"][0]["text"].endswith(" more alerts")


def test_token_never_in_logs_metrics_or_results(
    stub: SlackStub,
    token: str,
    tmp_path: Path,
    alerts: tuple[Alert, Alert],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("slack_sdk", "aiops.slack_sdk", "urllib3"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    metrics = PrometheusMetrics()
    n = metrics.wrap_notifier("team", notifier(stub, tmp_path))
    results = []
    stub.fail_next("chat.postMessage", Fault(status=429, retry_after=1))
    stub.fail_next("chat.postMessage", Fault(status=500))
    stub.fail_next("chat.postMessage", Fault(error="invalid_auth"))
    for _ in range(4):
        results.append(n.send(Notification("team", [alerts[0]])))
    results.append(n.send(Notification("team", [alerts[1]])))
    assert [type(r).__name__ for r in results] == [
        "RetryAfter",
        "RetryAfter",
        "PermanentFailure",
        "Delivered",
        "Delivered",
    ]
    logging.getLogger("aiops.slack_sdk").setLevel(logging.WARNING)
    assert stub.requests  # the token went where it belongs ...
    assert all(r.headers.get("authorization") in (None, f"Bearer {token}") for r in stub.requests)
    # ... and nowhere else
    captured = caplog.text + repr([r.getMessage() for r in caplog.records])
    assert token not in captured
    assert token not in repr(results)
    assert token.encode() not in generate_latest(metrics.registry)  # type: ignore[arg-type]
    for f in tmp_path.iterdir():
        assert token.encode() not in f.read_bytes(), f


def test_webhook_variant_posts_blocks_without_buttons(
    stub: SlackStub,
    tmp_path: Path,
    alerts: tuple[Alert, Alert],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    hook = stub.webhook_url()
    monkeypatch.setenv("SLACK_WEBHOOK_URL", hook)
    n = SlackNotifier(SlackNotifier.Config(webhook_url_env="SLACK_WEBHOOK_URL"), base_dir=tmp_path)
    firing, resolved = alerts
    assert isinstance(n.send(Notification("team", [firing])), Delivered)
    assert isinstance(n.send(Notification("team", [resolved])), Delivered)
    assert stub.violations == []
    first, second = stub.webhook_posts
    assert first["text"].startswith("[FIRING] HighLatency")
    assert second["blocks"][0]["text"]["text"] == ":white_check_mark: [RESOLVED] HighLatency"
    for doc in (first, second):
        assert not [b for b in doc["blocks"] if b["type"] == "actions"]
    assert stub.uploads == {}
    assert [r.method for r in stub.requests] == ["webhook", "webhook"]
    stub.fail_next("webhook", Fault(status=429, error="rate_limited", retry_after=30))
    limited = n.send(Notification("team", [firing]))
    assert isinstance(limited, RetryAfter)
    assert limited.seconds == 30.0
    stub.fail_next("webhook", Fault(status=404, error="no_service"))
    gone = n.send(Notification("team", [firing]))
    assert isinstance(gone, PermanentFailure)
    assert "no_service" in gone.reason
    stub.fail_next("webhook", Fault(status=503, error="unavailable"))
    assert isinstance(n.send(Notification("team", [firing])), RetryAfter)
    secret_part = hook.rsplit("/", 1)[1]
    assert secret_part not in caplog.text
    assert secret_part not in repr([limited, gone])


def test_build_message_without_window_or_score() -> None:
    a = Alert("f", "firing", {"alertname": "X"}, {}, 0.0)
    text, blocks = build_message(Notification("r", [a]), buttons=False)
    assert text == "[FIRING] X  = n/a"
    assert block_kit_problem(blocks) == ""


def test_resolution_without_a_message_posts_one_and_no_thread_reply(
    stub: SlackStub, token: str, tmp_path: Path, alerts: tuple[Alert, Alert]
) -> None:
    n = notifier(stub, tmp_path)
    result = n.send(Notification("team", [alerts[1]]))
    assert isinstance(result, Delivered)
    [msg] = stub.top_level()
    assert msg.blocks[0]["text"]["text"] == ":white_check_mark: [RESOLVED] HighLatency"
    assert stub.replies(msg.ts) == []
    assert stub.uploads == {}
    # the next firing of that alert is a new message, not an update of this one
    firing = alerts[0]
    later = Alert(firing.fingerprint, "firing", firing.labels, {}, firing.starts_at + 3600)
    assert isinstance(n.send(Notification("team", [later])), Delivered)
    assert len(stub.top_level()) == 2
    assert stub.calls("chat.update") == []


def test_an_aggregation_group_keeps_one_message_while_its_alerts_change(
    stub: SlackStub, token: str, tmp_path: Path
) -> None:
    def alert(name: str, status: str) -> Alert:
        labels = {"alertname": "DiskFull", "host": name, "service": "db"}
        end = 1_767_229_200.0 if status == "resolved" else None
        return Alert(f"fp-{name}", status, labels, {}, 1_767_225_600.0, end)  # type: ignore[arg-type]

    group = {"service": "db"}
    n = notifier(stub, tmp_path)
    steps = [
        [alert("a", "firing")],
        [alert("a", "firing"), alert("b", "firing")],
        [alert("b", "firing"), alert("a", "resolved")],
        [alert("b", "resolved")],
    ]
    for alerts_now in steps:
        assert isinstance(n.send(Notification("team", alerts_now, group_labels=group)), Delivered)
    [msg] = stub.top_level()
    headers = [r.args["blocks"][0]["text"]["text"] for r in stub.calls("chat.update")]
    assert headers == [
        ":large_orange_circle: [FIRING:2] DiskFull",
        ":large_orange_circle: [FIRING] DiskFull",
        ":white_check_mark: [RESOLVED] DiskFull",
    ]
    assert all(r.args["ts"] == msg.ts for r in stub.calls("chat.update"))
    assert len(stub.replies(msg.ts)) == 1
    # another group of the same receiver is another message
    other = Notification("team", [alert("c", "firing")], group_labels={"service": "web"})
    assert isinstance(n.send(other), Delivered)
    assert len(stub.top_level()) == 2
    assert stub.violations == []


def test_aiops_check_reports_every_slack_config_error_at_its_place(tmp_path: Path) -> None:
    from aiops.config import check_paths

    path = tmp_path / "alerting.yaml"
    path.write_text(
        "route: {receiver: chat}\n"
        "receivers:\n"
        "  - name: chat\n"
        "    slack_configs:\n"
        "      - token_env: SLACK_BOT_TOKEN\n"
        "      - webhook_url_env: SLACK_WEBHOOK_URL\n"
        "        channel: C0123456789\n"
        "      - token_env: SLACK_BOT_TOKEN\n"
        "        token_file: /run/secrets/slack\n"
        "        channel: C0123456789\n"
        "      - token_env: SLACK_BOT_TOKEN\n"
        "        channel: C0123456789\n"
        "        dashboard_url: 'https://g.example.com/d/x?host={{ $labels.host | nope }}'\n"
        "      - token_env: SLACK_BOT_TOKEN\n"
        "        channel: C0123456789\n"
        "        timeout: 0s\n"
        "      - token: xoxb-1-2-3\n"
        "        channel: C0123456789\n"
    )
    got = [str(e).replace(str(path), "F") for e in check_paths([path])]
    assert got == [
        'F:5:9: receiver "chat": a bot token needs "channel" (a channel ID such as C0123456789)',
        'F:7:18: receiver "chat": "channel" goes with a bot token; an incoming webhook posts to'
        " its own channel (set when the webhook is created)",
        'F:8:9: receiver "chat": give "token_env" or "token_file", not both',
        'F:13:24: receiver "chat": "dashboard_url": unknown function "nope" at column 50',
        'F:16:18: receiver "chat": "timeout" must be a duration greater than 0s, got \'0s\'',
        'F:17:9: receiver "chat": give either a bot token (token_env / token_file, with channel)'
        " or an incoming webhook (webhook_url_env / webhook_url_file)",
        'F:17:9: receiver "chat": secret "token" must not be written in YAML; use token_env or'
        " token_file",
    ]
    assert "xoxb-1-2-3" not in "".join(got)
