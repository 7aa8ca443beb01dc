"""POST /slack/interactions: Slack's signature, the four buttons, and what they change."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import generate_latest
from slack_stub import BOT_TOKEN, SlackStub, wait_for

from aiops.alerting.feedback import (
    FEEDBACK_FILE,
    FeedbackApplier,
    FeedbackStore,
    SlackInteractions,
    raised_threshold,
)
from aiops.alerting.notify import Alert, Notification
from aiops.alerting.routing import RouteNode, Router
from aiops.connectors.notifiers.slack import SlackNotifier
from aiops.pipeline.engine import Engine, RuleSpec
from aiops.service.http import HttpServer
from aiops.service.metrics import PrometheusMetrics
from aiops.testing import StaticView
from aiops.types import Batch, SeriesKey

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL = "C0ALERTS01"
A = SeriesKey.of("http_latency_seconds", {"host": "web-1"})
B = SeriesKey.of("http_latency_seconds", {"host": "web-2"})
T0 = 1_767_225_600.0
SPIKE_AT = 150


def _spec() -> RuleSpec:
    return RuleSpec(
        group="web",
        alert="HighLatency",
        source="src",
        matches=lambda k: True,
        threshold=0.999,
        labels={"severity": "page"},
        detector_type="ewma_z",  # the tests read ewma_z's per-series state
    )


def _history(n: int = 200, seed: int = 4) -> np.ndarray:
    values = 0.2 + np.random.default_rng(seed).normal(0.0, 0.01, n)
    values[SPIKE_AT] = 0.245  # about 4.5 sigma: a score below 1, so it can be raised
    return values


def _quiet(n: int, seed: int) -> np.ndarray:
    return 0.2 + np.random.default_rng(seed).normal(0.0, 0.01, n)


def _batch(key: SeriesKey, values: np.ndarray, start: int = 0) -> Batch:
    n = len(values)
    return Batch(
        keys=[key],
        series=np.zeros(n, np.int64),
        timestamps=T0 + 60.0 * (start + np.arange(n)),
        values=values,
    )


class World:
    """A real engine and router, the Slack stub, the listener with the endpoint."""

    def __init__(self, tmp: Path, stub: SlackStub, clock: Any = time.time) -> None:
        self.stub = stub
        self.engine = Engine([_spec()])
        self.rule = self.engine.rules["web/HighLatency"]
        self.router = Router(RouteNode("team"))
        self.metrics = PrometheusMetrics()
        self.store = FeedbackStore(tmp / FEEDBACK_FILE)
        self.applier = FeedbackApplier(self.store, metrics=self.metrics)
        self.handler = SlackInteractions(
            self.store,
            [SECRET],
            applier=self.applier,
            metrics=self.metrics,
            response_url_prefixes=(stub.url,),
            clock=clock,
        )
        self.server = HttpServer("127.0.0.1:0", StaticView(), self.metrics)
        self.server.mount(self.handler)
        self.server.start()
        self.notifier = SlackNotifier(
            SlackNotifier.Config(
                token_env="SLACK_BOT_TOKEN", channel=CHANNEL, api_url=stub.api_url
            ),
            base_dir=tmp,
        )
        self.before_spike = self.engine.state_dict()

    def close(self) -> None:
        self.server.stop()
        self.notifier.close()

    def fire(self) -> Alert:
        """Feed the history to the engine; post its alert to Slack; return the alert."""
        values = _history()
        self.before_spike = None
        self.engine.process("src", _batch(A, values[:SPIKE_AT]))
        self.before_spike = self.engine.state_dict()
        alerts = self.engine.process("src", _batch(A, values[SPIKE_AT:], SPIKE_AT))
        firing = [a for a in alerts if a.status == "firing"]
        assert len(firing) == 1
        assert 0.999 <= firing[0].score < 1.0
        self.notifier.send(Notification("team", firing))
        return firing[0]

    def click(self, action: str, *, user: str = "alice", **kw: Any) -> tuple[int, bytes]:
        return post(self.server.url, self.body(action, user=user), **kw)

    def body(self, action: str, *, user: str = "alice") -> bytes:
        """The form body Slack posts when ``user`` clicks ``action`` on the last message."""
        msg = self.stub.top_level()[-1]
        actions = next(b for b in msg.blocks if b["type"] == "actions")["elements"]
        button = next(e for e in actions if e["action_id"] == f"aiops_{action}_0")
        payload = {
            "type": "block_actions",
            "user": {"id": "U0ALICE", "username": user, "name": user, "team_id": "T0"},
            "api_app_id": "A0APP",
            "container": {"type": "message", "message_ts": msg.ts, "channel_id": msg.channel},
            "channel": {"id": msg.channel, "name": "alerts"},
            "message": {"type": "message", "ts": msg.ts, "text": msg.text, "blocks": msg.blocks},
            "response_url": self.stub.response_url(),
            "actions": [
                {
                    "type": "button",
                    "action_id": button["action_id"],
                    "block_id": "b1",
                    "text": button["text"],
                    "value": button["value"],
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


def sign(body: bytes, ts: int, secret: str = SECRET) -> str:
    base = b"v0:" + str(ts).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def post(
    url: str,
    body: bytes,
    *,
    ts: int | None = None,
    signature: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    ts = int(time.time()) if ts is None else ts
    h = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": sign(body, ts) if signature is None else signature,
    }
    if headers is not None:
        h = headers
    req = urllib.request.Request(url + "/slack/interactions", data=body, headers=h, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    with SlackStub() as stub:
        w = World(tmp_path, stub)
        try:
            yield w
        finally:
            w.close()


def _metric(w: World, name: str) -> str:
    return generate_latest(w.metrics.registry).decode()  # type: ignore[arg-type]


# -- signature ----------------------------------------------------------------------------


def test_good_signature_is_accepted(world: World) -> None:
    world.fire()
    status, _ = world.click("acknowledge")
    assert status == 200
    assert [f.action for f in world.store.answers()] == ["acknowledge"]


@pytest.mark.parametrize(
    "case", ["bad_signature", "other_secret", "stale", "future", "unsigned", "tampered", "bad_ts"]
)
def test_bad_or_stale_signature_is_refused_and_nothing_recorded(world: World, case: str) -> None:
    world.fire()
    now = int(time.time())
    body = urllib.parse.urlencode({"payload": json.dumps({"type": "block_actions"})}).encode()
    kw: dict[str, Any] = {}
    if case == "bad_signature":
        kw["signature"] = "v0=" + "0" * 64
    elif case == "other_secret":
        kw["signature"] = sign(body, now, "another-apps-secret")
    elif case == "stale":  # correctly signed, 5 minutes and 1 second ago
        kw["ts"] = now - 301
        kw["signature"] = sign(body, now - 301)
    elif case == "future":
        kw["ts"] = now + 400
        kw["signature"] = sign(body, now + 400)
    elif case == "unsigned":
        kw["headers"] = {"Content-Type": "application/x-www-form-urlencoded"}
    elif case == "tampered":
        kw["signature"] = sign(body, now)
        body = body.replace(b"block_actions", b"block_actionz")
    elif case == "bad_ts":
        kw["headers"] = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": "yesterday",
            "X-Slack-Signature": sign(body, now),
        }
    status, text = post(world.server.url, body, **kw)
    assert status == 401, text
    assert world.store.answers() == []
    expected = {
        "stale": "stale_timestamp",
        "future": "stale_timestamp",
        "unsigned": "unsigned",
        "bad_ts": "bad_timestamp",
    }.get(case, "bad_signature")
    assert f'aiops_slack_interactions_total{{outcome="{expected}"}} 1.0' in _metric(world, "")


def test_a_request_just_inside_five_minutes_is_accepted(world: World) -> None:
    world.fire()
    body = world.body("acknowledge")
    ts = int(time.time()) - 290
    status, _ = post(world.server.url, body, ts=ts, signature=sign(body, ts))
    assert status == 200
    assert len(world.store.answers()) == 1


def test_signed_garbage_is_a_400_and_get_is_a_405(world: World) -> None:
    body = b"payload=%7Bnot+json"
    status, _ = post(world.server.url, body)
    assert status == 400
    status, _ = post(world.server.url, b"\xff\xfe=\x00")
    assert status == 400
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(world.server.url + "/slack/interactions", timeout=5)
    assert err.value.code == 405
    assert world.store.answers() == []


# -- the buttons ------------------------------------------------------------------------


def test_acknowledge_records_and_updates_the_message(world: World) -> None:
    alert = world.fire()
    status, _ = world.click("acknowledge", user="alice")
    assert status == 200
    [fb] = world.store.answers()
    assert (fb.action, fb.user, fb.fingerprint) == ("acknowledge", "alice", alert.fingerprint)
    assert (fb.rule, fb.series) == ("web/HighLatency", str(A))
    assert wait_for(lambda: len(world.stub.response_url_posts) == 1)
    [update] = world.stub.response_url_posts
    assert update["replace_original"] is True
    assert update["blocks"][-1]["block_id"] == "aiops_feedback_0"
    assert update["blocks"][-1]["elements"][0]["text"].startswith("Acknowledged by alice at ")
    assert world.stub.violations == []
    assert world.applier.apply(world.engine, world.router) == 1
    assert 'aiops_feedback_total{action="acknowledge",outcome="applied"} 1.0' in _metric(world, "")
    assert world.rule.threshold_of(0) == 0.999  # nothing else changed


def test_silence_mutes_the_alert_for_an_hour(world: World) -> None:
    alert = world.fire()
    assert world.router.route([alert])  # routed before
    status, _ = world.click("silence")
    assert status == 200
    world.applier.apply(world.engine, world.router)
    now = time.time()
    live = Alert(alert.fingerprint, "firing", alert.labels, {}, now, value=1.0, score=0.9999)
    assert world.router.route([live]) == []
    assert world.router.silenced == 1
    later = Alert(alert.fingerprint, "firing", alert.labels, {}, now + 3601, value=1.0)
    assert world.router.route([later]) != []
    other = Alert("x", "firing", {**alert.labels, "host": "web-2"}, {}, now, value=1.0)
    assert world.router.route([other]) != []
    # a restarted daemon gets the silence back from the store
    router = Router(RouteNode("team"))
    FeedbackApplier(world.store).start(world.engine, router)
    assert router.route([live]) == []


def test_false_positive_raises_that_series_threshold_so_the_same_score_does_not_alert(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiops")
    alert = world.fire()
    status, _ = world.click("false_positive")
    assert status == 200
    assert world.rule.threshold_of(0) == 0.999  # recorded, not yet applied: loop's job
    assert world.applier.apply(world.engine, world.router) == 1
    raised = world.rule.threshold_of(0)
    assert raised == raised_threshold(alert.score, 0.0)
    assert raised > alert.score
    assert "feedback: false_positive on web/HighLatency" in caplog.text
    assert 'aiops_feedback_total{action="false_positive",outcome="applied"}' in _metric(world, "")
    # the same history again (a restarted daemon: the checkpoint from before the spike,
    # then the stored thresholds): the same score no longer alerts
    engine = Engine([_spec()])
    assert world.before_spike is not None
    engine.load_state_dict(world.before_spike)
    FeedbackApplier(world.store).start(engine, Router(RouteNode("team")))
    assert engine.rules["web/HighLatency"].threshold_of(0) == raised
    again = engine.process("src", _batch(A, _history()[SPIKE_AT:], SPIKE_AT))
    assert [a.score for a in again if a.status == "firing"] == []
    # without the feedback it alerts at that very score (the check above can fail)
    control = Engine([_spec()])
    control.load_state_dict(world.before_spike)
    fired = control.process("src", _batch(A, _history()[SPIKE_AT:], SPIKE_AT))
    assert [a.score for a in fired if a.status == "firing"] == [alert.score]


def test_false_positive_on_one_series_leaves_the_others_alone(world: World) -> None:
    world.engine.process("src", _batch(B, _quiet(SPIKE_AT, seed=9)))  # registers B
    world.fire()
    world.click("false_positive")
    world.applier.apply(world.engine, world.router)
    b = world.rule.series_index(str(B))
    assert b is not None
    assert world.rule.threshold_of(b) == 0.999


def test_expected_change_rebaselines_the_series(world: World) -> None:
    world.engine.process("src", _batch(B, _quiet(SPIKE_AT + 50, seed=9)))
    world.fire()
    b = world.rule.series_index(str(B))
    assert b is not None
    status, _ = world.click("expected_change")
    assert status == 200
    world.applier.apply(world.engine, world.router)
    # series A scores like a brand-new series from now on ...
    new_level = 0.5 + np.random.default_rng(5).normal(0.0, 0.01, 40)
    start = 400
    got = world.engine.rules["web/HighLatency"].process(_batch(A, new_level, start)).scores
    fresh = Engine([_spec()]).rules["web/HighLatency"]
    want = fresh.process(_batch(A, new_level, start)).scores
    np.testing.assert_allclose(got, want)
    # ... while series B keeps what it learned
    assert world.rule.detector.state_dict()["n"][b] == SPIKE_AT + 50
    [fb] = world.store.answers()
    assert fb.applied is not None


def test_rebaseline_not_in_a_checkpoint_is_applied_again_after_a_restart(world: World) -> None:
    world.fire()
    world.click("expected_change")
    world.applier.apply(world.engine, world.router)
    assert world.store.rebaselines_not_checkpointed() != []
    # crash before the next checkpoint: the old checkpoint is loaded, the reset redone
    engine = Engine([_spec()])
    engine.load_state_dict(world.engine.state_dict())
    old = world.before_spike
    assert old is not None
    engine.load_state_dict(old)
    assert engine.rules["web/HighLatency"].detector.state_dict()["n"][0] == SPIKE_AT
    FeedbackApplier(world.store).start(engine, Router(RouteNode("team")))
    assert engine.rules["web/HighLatency"].detector.state_dict()["n"][0] == 0
    # once a checkpoint covers it, a restart does not reset again
    world.applier.checkpointed(time.time())
    assert world.store.rebaselines_not_checkpointed() == []


def test_unknown_alert_is_answered_not_recorded(world: World, tmp_path: Path) -> None:
    world.fire()
    with world.store._conn() as conn:
        conn.execute("DELETE FROM alerts")
    status, _ = world.click("silence")
    assert status == 200
    assert world.store.answers() == []
    assert wait_for(lambda: len(world.stub.response_url_posts) == 1)
    text = world.stub.response_url_posts[0]["blocks"][-1]["elements"][0]["text"]
    assert "no longer known" in text


def test_response_url_elsewhere_is_not_posted_to(world: World, tmp_path: Path) -> None:
    world.fire()
    world.handler.response_url_prefixes = ("https://hooks.slack.com/",)
    status, _ = world.click("acknowledge")
    assert status == 200
    world.handler.join()
    assert world.stub.response_url_posts == []
    assert len(world.store.answers()) == 1


def test_signing_secret_and_token_never_logged(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world.fire()
    world.click("acknowledge")
    post(world.server.url, b"payload=x", signature="v0=00")
    world.handler.join()
    text = caplog.text + _metric(world, "")
    assert SECRET not in text
    assert BOT_TOKEN not in text
    assert "StubResponseSecret" not in text


def test_app_mounts_the_endpoint_from_http_slack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiops.config import load_config
    from aiops.service.app import build_daemon

    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        source: sim\n"
        "        selector: 'cpu'\n"
    )
    (tmp_path / "aiops.yaml").write_text(
        "sources:\n  sim: {type: simulator}\n"
        "http:\n  listen: 127.0.0.1:0\n  slack: {signing_secret_env: SLACK_SIGNING_SECRET}\n"
    )
    loaded = load_config(tmp_path / "aiops.yaml")
    daemon = build_daemon(loaded, state_dir=tmp_path / "state")
    assert isinstance(daemon.listener, HttpServer)
    assert "/slack/interactions" in daemon.listener._mounted
    assert isinstance(daemon.feedback, FeedbackApplier)
    daemon.listener.start()
    try:
        status, _ = post(daemon.listener.url, b"payload=%7B%7D", signature="v0=bad")
        assert status == 401
        body = urllib.parse.urlencode({"payload": json.dumps({"type": "view_submission"})})
        status, _ = post(daemon.listener.url, body.encode())
        assert status == 200
    finally:
        daemon.listener.stop()


def test_store_keeps_the_firing_score_when_the_resolution_comes(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / FEEDBACK_FILE)
    labels = {"alertname": "X"}
    store.remember([Alert("f1", "firing", labels, {}, 0.0, score=0.9995, rule="g/X", series="s")])
    store.remember(
        [Alert("f1", "resolved", labels, {}, 0.0, 60.0, score=0.1, rule="g/X", series="s")]
    )
    known = store.known("f1")
    assert known is not None
    assert known.score == 0.9995


@pytest.mark.parametrize(
    "payload",
    [
        [],
        "text",
        {"type": "block_actions"},
        {"type": "block_actions", "actions": 5},
        {"type": "block_actions", "actions": "abc"},
        {"type": "block_actions", "actions": [5, None, "x"]},
        {"type": "block_actions", "actions": [{"action_id": "aiops_silence_0", "value": "[]"}]},
        {"type": "block_actions", "actions": [{"action_id": "aiops_silence_0", "value": 7}]},
        {"type": "block_actions", "actions": [{"action_id": "aiops_nope_0", "value": "{}"}]},
        {
            "type": "block_actions",
            "user": "mallory",
            "message": 3,
            "response_url": 9,
            "actions": [{"action_id": "aiops_acknowledge_0", "value": '{"fingerprint": "x"}'}],
        },
        {
            "type": "block_actions",
            "message": {"blocks": "nope"},
            "actions": [{"action_id": "aiops_acknowledge_1", "value": '{"fingerprint": 1}'}],
        },
    ],
    ids=lambda p: json.dumps(p)[:40],
)
def test_signed_odd_payloads_never_break_the_endpoint(world: World, payload: Any) -> None:
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    status, _ = post(world.server.url, body)
    assert status in (200, 400)
    assert world.store.answers() == []


def test_runtime_silences_leave_the_router_when_they_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aiops.alerting.feedback as feedback

    store = FeedbackStore(tmp_path / FEEDBACK_FILE)
    router = Router(RouteNode("team"))
    applier = FeedbackApplier(store)
    from aiops.alerting.feedback import KnownAlert

    good = KnownAlert("f1", "g/X", "s", {"alertname": "X", "host": "a"}, 0.9995)
    odd = KnownAlert("f2", "g/X", "s2", {"alertname": "X", "": "v"}, 0.9995)
    store.record("silence", good, "alice")
    store.record("silence", odd, "alice")  # no matcher can name that label: skipped
    assert applier.apply(object(), router, force=True) == 2  # type: ignore[arg-type]
    assert len(router.silences) == 1
    now = time.time()
    monkeypatch.setattr(feedback.time, "time", lambda: now + 3601.0)
    applier.apply(object(), router, force=True)  # type: ignore[arg-type]
    assert router.silences == []


def test_a_signed_deeply_nested_payload_is_a_400(world: World) -> None:
    """json.loads recurses once per level: 100,000 levels were a RecursionError."""
    deep = "[" * 100_000 + "]" * 100_000
    status, text = post(world.server.url, urllib.parse.urlencode({"payload": deep}).encode())
    assert (status, text) == (400, b"bad payload\n")
    assert 'aiops_slack_interactions_total{outcome="bad_payload"} 1.0' in _metric(world, "")
    assert world.store.answers() == []


def test_a_deeply_nested_button_value_is_counted_not_raised(world: World) -> None:
    world.fire()
    body = urllib.parse.unquote_plus(world.body("acknowledge").decode()[len("payload=") :])
    payload = json.loads(body)
    payload["actions"][0]["value"] = "[" * 50_000 + "]" * 50_000
    status, _ = post(
        world.server.url, urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    )
    assert status == 200
    assert 'aiops_slack_interactions_total{outcome="bad_payload"} 1.0' in _metric(world, "")
    assert world.store.answers() == []


def test_lone_surrogates_in_a_signed_payload_never_break_the_endpoint(world: World) -> None:
    """JSON escapes make them; SQLite and UTF-8 logs cannot take them."""
    world.fire()
    body = urllib.parse.unquote_plus(world.body("acknowledge").decode()[len("payload=") :])
    payload = json.loads(body)
    payload["user"]["username"] = "mal\udfffory"
    status, _ = post(
        world.server.url, urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    )
    assert status == 200
    assert [f.user for f in world.store.answers()] == ["mal\ufffdory"]
    payload["actions"][0]["value"] = json.dumps({"fingerprint": "\ud800"})
    status, _ = post(
        world.server.url, urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    )
    assert status == 200
    assert len(world.store.answers()) == 1
