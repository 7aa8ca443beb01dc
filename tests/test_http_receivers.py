"""PagerDuty, Opsgenie and webhook receivers against strict local stubs (tests/http_stubs.py)."""

import base64
import logging

import pytest
from http_stubs import OpsgenieStub, PagerDutyStub, WebhookStub, webhook_problems

from aiops.alerting.notify import Alert, Delivered, Notification, PermanentFailure, RetryAfter
from aiops.alerting.outbox import DeliveryPolicy, Integration, Outbox
from aiops.connectors.notifiers.opsgenie import OpsgenieNotifier
from aiops.connectors.notifiers.pagerduty import PagerDutyNotifier
from aiops.connectors.notifiers.webhook import WebhookNotifier
from aiops.registry import NOTIFIERS
from aiops.testing import FakeClock

PD_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
OG_KEY = "0b1f7a9e-genie-secret-key"


def alert(i=1, status="firing", **labels):
    lab = {"alertname": "Latency", "host": f"web{i}", "severity": "critical", **labels}
    return Alert(
        f"fp{i}",
        status,
        lab,
        {"summary": f"latency high on web{i}", "description": "p99 above its band"},
        starts_at=1_700_000_000.0 + i,
        ends_at=None if status == "firing" else 1_700_000_600.0 + i,
        value=2.5,
        score=0.9995,
        series=f'latency{{host="web{i}"}}',
    )


def group(*alerts, receiver="oncall"):
    return Notification(receiver, list(alerts), {"alertname": "Latency"})


@pytest.fixture
def pd(monkeypatch):
    monkeypatch.setenv("PD_KEY", PD_KEY)
    with PagerDutyStub(PD_KEY) as stub:
        yield stub


@pytest.fixture
def og(monkeypatch):
    monkeypatch.setenv("OG_KEY", OG_KEY)
    with OpsgenieStub(OG_KEY) as stub:
        yield stub


def pd_notifier(stub, **kw):
    return PagerDutyNotifier(
        PagerDutyNotifier.Config(routing_key_env="PD_KEY", url=stub.enqueue_url, **kw)
    )


def test_registered():
    for name in ("pagerduty", "opsgenie", "webhook", "alertmanager"):
        assert name in NOTIFIERS
        NOTIFIERS.get(name)


# ------------------------------------------------------------------------- PagerDuty


def test_pagerduty_trigger_then_resolve_one_incident_per_group(pd):
    n = pd_notifier(pd)
    assert isinstance(n.send(group(alert(1), alert(2))), Delivered)
    assert isinstance(n.send(group(alert(1, "resolved"), alert(2, "resolved"))), Delivered)
    assert pd.errors == []
    assert len(pd.alerts) == 1
    ((key, history),) = pd.alerts.items()
    assert history == [{"status": "resolved", "triggers": 1}]
    trigger, resolve = pd.events
    assert trigger["event_action"] == "trigger"
    assert resolve == {"routing_key": PD_KEY, "event_action": "resolve", "dedup_key": key}
    payload = trigger["payload"]
    assert payload["severity"] == "critical"
    assert payload["source"] == "web1"
    assert payload["summary"] == "[FIRING:2] Latency"
    assert payload["timestamp"] == "2023-11-14T22:13:21Z"
    assert payload["custom_details"]["num_firing"] == 2
    assert [a["labels"]["host"] for a in payload["custom_details"]["alerts"]] == ["web1", "web2"]


def test_pagerduty_a_resent_trigger_pages_once(pd):
    n = pd_notifier(pd)
    for _ in range(3):  # a crash between sending and recording, twice
        assert isinstance(n.send(group(alert(1))), Delivered)
    assert pd.errors == []
    ((history),) = pd.alerts.values()
    assert history == [{"status": "triggered", "triggers": 3}]  # one alert, no new page


def test_pagerduty_incident_per_alert(pd):
    n = pd_notifier(pd, incident="alert", severity="warning", component="api", event_class="lat")
    assert isinstance(n.send(group(alert(1), alert(2))), Delivered)
    assert isinstance(n.send(group(alert(1, "resolved"))), Delivered)
    assert pd.errors == []
    states = sorted(h[-1]["status"] for h in pd.alerts.values())
    assert states == ["resolved", "triggered"]
    first = pd.events[0]["payload"]
    assert (first["severity"], first["component"], first["class"]) == ("warning", "api", "lat")
    assert first["summary"] == "latency high on web1"


def test_pagerduty_summary_is_cut_to_1024(pd):
    long = Alert("f", "firing", {"alertname": "X"}, {"summary": "s" * 5000}, 0.0)
    assert isinstance(pd_notifier(pd).send(Notification("r", [long])), Delivered)
    assert pd.errors == []
    assert len(pd.events[0]["payload"]["summary"]) == 1024


@pytest.mark.parametrize(
    ("answer", "expected", "seconds"),
    [
        ((429, {"Retry-After": "17"}, ""), RetryAfter, 17.0),
        ((429, {}, ""), RetryAfter, None),
        ((500, {}, "oops"), RetryAfter, None),
        ((503, {"Retry-After": "2"}, ""), RetryAfter, 2.0),
        ((400, {}, '{"status":"invalid event"}'), PermanentFailure, None),
        ((403, {}, ""), PermanentFailure, None),
    ],
)
def test_pagerduty_answers(pd, answer, expected, seconds):
    pd.script.append(answer)
    result = pd_notifier(pd).send(group(alert(1)))
    assert isinstance(result, expected)
    if expected is RetryAfter:
        assert result.seconds == seconds
    assert f"HTTP {answer[0]}" in result.reason


def test_pagerduty_rejected_event_is_permanent(pd, monkeypatch):
    monkeypatch.setenv("PD_KEY", "short")  # not a 32-character key: PagerDuty answers 400
    result = pd_notifier(pd).send(group(alert(1)))
    assert isinstance(result, PermanentFailure)
    assert pd.errors  # the stub did see a bad event
    assert "short" not in result.reason


def test_pagerduty_timeout_and_unreachable_are_retried(pd):
    pd.hang = True
    result = pd_notifier(pd, timeout="0.3s").send(group(alert(1)))
    assert isinstance(result, RetryAfter)
    assert "no answer within 0.3s" in result.reason
    dead = PagerDutyNotifier(
        PagerDutyNotifier.Config(routing_key_env="PD_KEY", url="http://127.0.0.1:1/v2/enqueue")
    )
    assert isinstance(dead.send(group(alert(1))), RetryAfter)


def test_pagerduty_routing_key_from_file_and_config_errors(pd, tmp_path):
    f = tmp_path / "key"
    f.write_text(PD_KEY + "\n")
    n = PagerDutyNotifier(
        PagerDutyNotifier.Config(routing_key_file=str(f), url=pd.enqueue_url, send_resolved=False)
    )
    assert isinstance(n.send(group(alert(1))), Delivered)
    assert n.send(group(alert(1, "resolved"))) == Delivered(
        "resolved: not sent (send_resolved: false)"
    )
    assert len(pd.events) == 1
    with pytest.raises(ValueError, match="exactly one of routing_key_env and routing_key_file"):
        PagerDutyNotifier.Config()
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        PagerDutyNotifier.Config(routing_key=PD_KEY)
    missing = PagerDutyNotifier(PagerDutyNotifier.Config(routing_key_env="NO_SUCH_VAR_X"))
    result = missing.send(group(alert(1)))
    assert result == RetryAfter(
        "routing_key: environment variable NO_SUCH_VAR_X is not set or empty"
    )


# ------------------------------------------------------------------------- Opsgenie


def og_notifier(stub, **kw):
    return OpsgenieNotifier(OpsgenieNotifier.Config(api_key_env="OG_KEY", api_url=stub.url, **kw))


def test_opsgenie_create_then_close_by_alias(og):
    n = og_notifier(og, tags=["aiops"], responders=[{"type": "team", "name": "sre"}])
    assert isinstance(n.send(group(alert(1), alert(2))), Delivered)
    assert isinstance(n.send(group(alert(1), alert(2))), Delivered)  # re-sent after a crash
    assert isinstance(n.send(group(alert(1, "resolved"), alert(2, "resolved"))), Delivered)
    assert og.errors == []
    ((alias, history),) = og.alerts.items()
    assert len(history) == 1
    assert history[0]["status"] == "closed"
    assert history[0]["count"] == 2  # Opsgenie counted the repeat, paged once
    body = history[0]["body"]
    assert body["alias"] == alias
    assert body["message"] == "[FIRING:2] Latency"
    assert body["priority"] == "P3"
    assert body["tags"] == ["aiops", "alertname:Latency"]
    assert body["responders"] == [{"type": "team", "name": "sre"}]
    assert "latency high on web2" in body["description"]
    close = og.requests[-1]
    assert close.path == f"/v2/alerts/{alias}/close"
    assert close.query == {"identifierType": ["alias"]}
    assert all(r.headers["Authorization"] == f"GenieKey {OG_KEY}" for r in og.requests)


def test_opsgenie_limits_and_per_alert_incidents(og):
    tags = [f"t{i}" * 30 for i in range(30)]
    n = og_notifier(og, incident="alert", tags=tags, priority="P1")
    long = Alert("f", "firing", {"alertname": "X"}, {"summary": "m" * 500}, 0.0)
    assert isinstance(n.send(Notification("r", [long, alert(2)])), Delivered)
    assert og.errors == []
    assert len(og.alerts) == 2
    bodies = [h[0]["body"] for h in og.alerts.values()]
    assert max(len(b["message"]) for b in bodies) == 130
    assert all(len(b["tags"]) == 20 and b["priority"] == "P1" for b in bodies)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(429, RetryAfter), (502, RetryAfter), (422, PermanentFailure), (401, PermanentFailure)],
)
def test_opsgenie_answers(og, status, expected):
    og.script.append((status, {"Retry-After": "3"}, '{"message":"x"}'))
    result = og_notifier(og).send(group(alert(1)))
    assert isinstance(result, expected)


def test_opsgenie_wrong_key_is_permanent_and_never_shown(og, monkeypatch):
    monkeypatch.setenv("OG_KEY", "wrong-secret-value")
    result = og_notifier(og).send(group(alert(1)))
    assert isinstance(result, PermanentFailure)
    assert "wrong-secret-value" not in result.reason


# ------------------------------------------------------------------------- webhook


def test_webhook_sends_alertmanagers_document_with_the_idempotency_key():
    with WebhookStub() as hook:
        n = WebhookNotifier(WebhookNotifier.Config(url=hook.url + "/hook", external_url="http://x"))
        note = group(alert(1), alert(2, "resolved"))
        assert isinstance(n.send(note), Delivered)
        assert hook.errors == []
        (req,) = hook.requests
        assert req.headers["Idempotency-Key"] == note.idempotency_key
        body = req.body
        assert body["status"] == "firing"
        assert body["groupKey"] == 'oncall:{alertname="Latency"}'
        assert body["commonLabels"] == {"alertname": "Latency", "severity": "critical"}
        assert body["commonAnnotations"] == {"description": "p99 above its band"}
        assert body["externalURL"] == "http://x"
        a1, a2 = body["alerts"]
        assert (a1["endsAt"], a2["endsAt"]) == ("0001-01-01T00:00:00Z", "2023-11-14T22:23:22Z")
        assert a1["fingerprint"] == "fp1"


def test_webhook_max_alerts_and_send_resolved():
    with WebhookStub() as hook:
        n = WebhookNotifier(WebhookNotifier.Config(url=hook.url, max_alerts=2, send_resolved=False))
        assert isinstance(n.send(group(alert(1), alert(2), alert(3))), Delivered)
        assert isinstance(n.send(group(alert(1, "resolved"))), Delivered)
        assert hook.errors == []
        (req,) = hook.requests
        assert len(req.body["alerts"]) == 2
        assert req.body["truncatedAlerts"] == 1


def test_webhook_basic_and_bearer_auth_from_env_and_file(monkeypatch, tmp_path):
    monkeypatch.setenv("HOOK_PW", "pw-secret-1")
    with WebhookStub(basic=("aiops", "pw-secret-1")) as hook:
        n = WebhookNotifier(
            WebhookNotifier.Config(
                url=hook.url, basic_auth_username="aiops", basic_auth_password_env="HOOK_PW"
            )
        )
        assert isinstance(n.send(group(alert(1))), Delivered)
        monkeypatch.setenv("HOOK_PW", "changed")
        result = n.send(group(alert(2)))
        assert isinstance(result, PermanentFailure)  # 401
        assert "changed" not in result.reason
    token = tmp_path / "token"
    token.write_text("tok-secret-2\n")
    with WebhookStub(bearer="tok-secret-2") as hook:
        n = WebhookNotifier(WebhookNotifier.Config(url=hook.url, bearer_token_file=str(token)))
        assert isinstance(n.send(group(alert(1))), Delivered)
        assert hook.errors == []
    with pytest.raises(ValueError, match="basic auth or a bearer token, not both"):
        WebhookNotifier.Config(
            url="http://x",
            basic_auth_username="u",
            basic_auth_password_env="P",
            bearer_token_env="T",
        )
    with pytest.raises(ValueError, match="go together"):
        WebhookNotifier.Config(url="http://x", basic_auth_username="u")


def test_webhook_retry_after_and_5xx():
    with WebhookStub() as hook:
        hook.script.extend(
            [(429, {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}, ""), (503, {}, "")]
        )
        n = WebhookNotifier(WebhookNotifier.Config(url=hook.url))
        first = n.send(group(alert(1)))
        assert isinstance(first, RetryAfter)
        assert first.seconds > 1e9
        assert isinstance(n.send(group(alert(1))), RetryAfter)
        assert isinstance(n.send(group(alert(1))), Delivered)
        assert hook.keys[group(alert(1)).idempotency_key] == 1


def test_webhook_stub_rejects_a_document_that_is_not_alertmanagers():
    assert webhook_problems({"version": "4"})
    bad = {
        "version": "3",
        "groupKey": "g",
        "truncatedAlerts": -1,
        "status": "firing",
        "receiver": "r",
        "groupLabels": {},
        "commonLabels": {"a": 1},
        "commonAnnotations": {},
        "externalURL": "",
        "alerts": [{"status": "firing"}],
    }
    problems = webhook_problems(bad)
    assert any("version" in p for p in problems)
    assert any("truncatedAlerts" in p for p in problems)
    assert any("commonLabels" in p for p in problems)
    assert any("alerts[0]" in p for p in problems)


# ------------------------------------------------------------------------- through the outbox


def test_outbox_delivers_to_pagerduty_through_a_429_with_retry_after(pd, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    pd.script.append((429, {"Retry-After": "30"}, '{"status":"throttled"}'))
    clock = FakeClock(1_800_000_000.0)
    box = Outbox(
        tmp_path / "o.sqlite",
        [Integration("oncall", "pagerduty[0]", pd_notifier(pd))],
        policy=DeliveryPolicy(base_delay=1.0),
        clock=clock,
    )
    box.append(group(alert(1)))
    box.deliver_due()
    assert box.history()[0].next_attempt >= clock() + 30
    clock.advance(31)
    box.deliver_due()
    assert box.history()[0].state == "delivered"
    assert box.history()[0].detail.startswith("dedup_key ")
    box.close()
    assert pd.errors == []
    assert [h[-1]["status"] for h in pd.alerts.values()] == ["triggered"]
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("o.sqlite*"))
    captured = caplog.text + repr(box.results) + repr(box.history())
    for text in (captured.encode(), stored):
        assert PD_KEY.encode() not in text
        assert base64.b64encode(PD_KEY.encode()) not in text


def test_secrets_stay_out_of_logs_rows_and_dead_letters(og, monkeypatch, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HOOK_TOKEN", "tok-SECRET-9")
    with WebhookStub(bearer="another-token") as hook:
        integrations = [
            Integration("og", "opsgenie[0]", og_notifier(og)),
            Integration(
                "hook",
                "webhook[0]",
                WebhookNotifier(
                    WebhookNotifier.Config(url=hook.url, bearer_token_env="HOOK_TOKEN")
                ),
            ),
        ]
        box = Outbox(tmp_path / "o.sqlite", integrations, clock=FakeClock(1e9))
        og.script.append((500, {}, f"echo {OG_KEY}"))  # a server that echoes the key back
        box.submit([group(alert(1), receiver="og"), group(alert(1), receiver="hook")])
        box.deliver_due()
        dead = box.dead_letters()
        history = box.history()
        box.close()
    assert [d.receiver for d in dead] == ["hook"]  # 401: permanent
    assert "HTTP 401" in dead[0].reason
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("o.sqlite*"))
    captured = (caplog.text + repr(dead) + repr(history)).encode()
    for secret in (OG_KEY, "tok-SECRET-9"):
        assert secret.encode() not in stored
        assert secret.encode() not in captured
    assert "echo <secret>" in history[0].last_error + caplog.text


def test_the_environments_proxy_and_no_proxy_still_apply(monkeypatch):
    from aiops.connectors.notifiers import _http

    url = "http://hooks.example.invalid/hook"  # resolves nowhere: only a proxy reaches it
    with WebhookStub() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        _http._environment.cache_clear()
        n = WebhookNotifier(WebhookNotifier.Config(url=url, timeout=5))
        assert isinstance(n.send(group(alert(1))), Delivered)
        assert isinstance(n.send(group(alert(2))), Delivered)
        # Through the proxy (the host resolves nowhere), for the host asked for.
        assert [r.headers["Host"] for r in proxy.requests] == ["hooks.example.invalid"] * 2
        assert _http._environment.cache_info().misses == 1  # read once for the URL
        monkeypatch.setenv("NO_PROXY", "example.invalid")
        _http._environment.cache_clear()
        assert isinstance(n.send(group(alert(3))), RetryAfter)  # direct: no such host
        assert len(proxy.requests) == 2
    _http._environment.cache_clear()
