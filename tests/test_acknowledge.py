"""Acknowledge in Slack -> acknowledged in PagerDuty and Opsgenie (strict stubs).

The chain as the daemon runs it: aggregation groups send the firing alert to a receiver
with PagerDuty, Opsgenie and a webhook; a person's answer is recorded in the feedback
store; the data loop's applier asks the groups to acknowledge; the outbox hands the
acknowledgement to the integrations that have an acknowledged state, and only to them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from http_stubs import OpsgenieStub, PagerDutyStub, WebhookStub

from aiops.alerting.feedback import FeedbackApplier, FeedbackStore, KnownAlert
from aiops.alerting.groups import DataClock, Groups
from aiops.alerting.notify import Alert, Notification
from aiops.alerting.outbox import Integration, Outbox, decode_notification, encode_notification
from aiops.alerting.routing import RouteNode
from aiops.connectors.notifiers.opsgenie import OpsgenieNotifier
from aiops.connectors.notifiers.pagerduty import PagerDutyNotifier
from aiops.connectors.notifiers.webhook import WebhookNotifier
from aiops.testing import FakeClock

PD_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
OG_KEY = "0b1f7a9e-genie-secret-key"
T0 = 1_800_000_000.0


def firing(i: int, at: float = T0) -> Alert:
    labels = {"alertname": "Latency", "host": f"web{i}", "service": "api"}
    return Alert(
        f"fp{i}", "firing", labels, {"summary": "p99 high"}, starts_at=at, value=2.5, score=0.9995
    )


class World:
    """Groups -> outbox -> PagerDuty + Opsgenie + webhook stubs, and the feedback loop."""

    def __init__(self, tmp: Path, pd: PagerDutyStub, og: OpsgenieStub, hook: WebhookStub) -> None:
        self.clock = DataClock(T0)
        route = RouteNode("oncall", group_by=("alertname", "service"), group_wait=30.0)
        self.groups = Groups(route, clock=self.clock)
        self.box = Outbox(
            tmp / "outbox.sqlite",
            [
                Integration(
                    "oncall",
                    "pagerduty[0]",
                    PagerDutyNotifier(
                        PagerDutyNotifier.Config(routing_key_env="PD_KEY", url=pd.enqueue_url)
                    ),
                ),
                Integration(
                    "oncall",
                    "opsgenie[0]",
                    OpsgenieNotifier(OpsgenieNotifier.Config(api_key_env="OG_KEY", api_url=og.url)),
                ),
                Integration(
                    "oncall", "webhook[0]", WebhookNotifier(WebhookNotifier.Config(url=hook.url))
                ),
            ],
            clock=FakeClock(T0),
        )
        self.store = FeedbackStore(tmp / "feedback.sqlite")
        self.applier = FeedbackApplier(self.store)

    def send(self, notifications: list[Notification]) -> None:
        self.box.submit(notifications)
        self.box.deliver_due()

    def answer(self, alert: Alert, action: str = "acknowledge", user: str = "alice") -> None:
        known = KnownAlert(alert.fingerprint, "web/Latency", "latency", alert.labels, 0.9995)
        self.store.record(action, known, user)  # type: ignore[arg-type]
        self.applier.apply(None, self.groups, force=True)  # type: ignore[arg-type]

    def close(self) -> None:
        self.box.close()
        self.store.close()


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("PD_KEY", PD_KEY)
    monkeypatch.setenv("OG_KEY", OG_KEY)
    with PagerDutyStub(PD_KEY) as pd, OpsgenieStub(OG_KEY) as og, WebhookStub() as hook:
        w = World(tmp_path, pd, og, hook)
        w.pd, w.og, w.hook = pd, og, hook  # type: ignore[attr-defined]
        try:
            yield w
        finally:
            w.close()
        assert pd.errors == []
        assert og.errors == []
        assert hook.errors == []


def test_acknowledge_reaches_pagerduty_and_opsgenie_for_the_same_incident(world: World) -> None:
    a, b = firing(1), firing(2, T0 + 1)
    assert world.groups.route([a, b]) == []  # group_wait
    world.clock.advance_to(T0 + 30)
    world.send(world.groups.flush())
    [(dedup_key, history)] = world.pd.alerts.items()  # type: ignore[attr-defined]
    assert history == [{"status": "triggered", "triggers": 1}]

    world.answer(a, user="alice")
    acks = world.groups.flush()  # due at once, no timer
    assert [(n.action, n.actor, [x.fingerprint for x in n.alerts]) for n in acks] == [
        ("acknowledge", "alice", ["fp1"])
    ]
    world.send(acks)
    pd_events = world.pd.events  # type: ignore[attr-defined]
    assert pd_events[-1] == {
        "routing_key": PD_KEY,
        "event_action": "acknowledge",
        "dedup_key": dedup_key,
    }
    assert world.pd.alerts[dedup_key] == [{"status": "acknowledged", "triggers": 1}]  # type: ignore[attr-defined]
    [(alias, og_history)] = world.og.alerts.items()  # type: ignore[attr-defined]
    assert alias == dedup_key  # both name the group's incident the same way
    assert og_history[-1]["status"] == "open"
    assert og_history[-1]["acknowledged"] == "Acknowledged by alice (aiopsd)"
    # The webhook has no acknowledged state: it was sent the firing only.
    assert sum(world.hook.keys.values()) == 1  # type: ignore[attr-defined]
    rows = world.box.history(limit=20)
    assert sorted((r.integration, r.status) for r in rows) == [
        ("opsgenie[0]", "acknowledge"),
        ("opsgenie[0]", "firing"),
        ("pagerduty[0]", "acknowledge"),
        ("pagerduty[0]", "firing"),
        ("webhook[0]", "firing"),
    ]
    assert all(r.state == "delivered" for r in rows)


def test_an_alert_the_receiver_was_not_sent_is_not_acknowledged(world: World) -> None:
    a = firing(1)
    world.groups.route([a])  # still in group_wait: nobody was told
    world.answer(a)
    assert world.groups.flush() == []
    world.clock.advance_to(T0 + 30)
    [note] = world.groups.flush()
    assert note.action == "notify"
    resolved = Alert("fp1", "resolved", a.labels, {}, starts_at=T0, ends_at=T0 + 40)
    world.groups.route([resolved])
    world.answer(a, user="late")  # resolved since: nothing left to acknowledge
    assert all(n.action == "notify" for n in world.groups.flush())


def test_other_answers_send_nothing(world: World) -> None:
    a = firing(1)
    world.groups.route([a])
    world.clock.advance_to(T0 + 30)
    world.groups.flush()
    world.answer(a, action="false_positive")
    assert world.groups.flush() == []


def test_an_acknowledgement_has_its_own_key_and_survives_the_outbox_encoding() -> None:
    a = firing(1)
    note = Notification("oncall", [a], {"alertname": "Latency"})
    ack = Notification("oncall", [a], {"alertname": "Latency"}, action="acknowledge", actor="bob")
    assert ack.idempotency_key != note.idempotency_key  # not taken for a re-send of the firing
    assert decode_notification(encode_notification(ack)) == ack
    # Rows written before the fields existed: one object per notification (orjson's own
    # encoding of the dataclass, as the outbox wrote it then) without action and actor.
    old_row = orjson.dumps(note).decode().replace(',"action":"notify","actor":""', "")
    assert '"action"' not in old_row
    assert decode_notification(old_row) == note


def test_pagerduty_per_alert_incidents_acknowledge_each_alert(monkeypatch) -> None:
    monkeypatch.setenv("PD_KEY", PD_KEY)
    n = PagerDutyNotifier(PagerDutyNotifier.Config(routing_key_env="PD_KEY", incident="alert"))
    ack = Notification("oncall", [firing(1), firing(2)], {}, action="acknowledge")
    events = n.events(ack, PD_KEY)
    assert [e["event_action"] for e in events] == ["acknowledge", "acknowledge"]
    assert len({e["dedup_key"] for e in events}) == 2
    assert all(set(e) == {"routing_key", "event_action", "dedup_key"} for e in events)
