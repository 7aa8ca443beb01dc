"""PagerDuty receiver: PagerDuty Events API v2 (``POST /v2/enqueue``).

A firing notification is a ``trigger`` event, a resolved one a ``resolve`` event, both
with the same ``dedup_key``, so PagerDuty opens one alert and later resolves it. An
acknowledgement (someone pressed Acknowledge on the alert in Slack) is an
``acknowledge`` event with that ``dedup_key``: PagerDuty stops escalating it. With
``incident: group`` (the default, Alertmanager's behaviour) one PagerDuty alert stands
for one aggregation group: ``dedup_key`` is a hash of the receiver and the group
labels, and the event's ``custom_details`` list the group's alerts. With ``incident:
alert`` every alert of a notification is its own event, its ``dedup_key`` a hash of the
receiver and the alert's fingerprint.

Exactly once in effect: a notification sent again (after a crash between sending and
recording it, or a retry after a time-out) carries the same ``dedup_key``; PagerDuty
applies a second ``trigger`` to the alert already open (no new page) and a second
``resolve`` to nothing.

Answers: 202 delivered; 400 (an invalid event) and other 4xx permanent; 429 and 5xx
retried, honouring ``Retry-After`` when sent. The routing key comes only from
``routing_key_env`` or ``routing_key_file`` (read at each send) and never appears in a
log line or a delivery result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from aiops.alerting.notify import (
    Alert,
    Delivered,
    DeliveryResult,
    Notification,
    Notifier,
    RetryAfter,
)
from aiops.timeutil import to_rfc3339

from ._http import HttpSettings, Secret, SecretError, incident_key, post_json, summary_line

__all__ = ["PagerDutyNotifier"]

#: PagerDuty's public endpoint of the Events API v2.
EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
#: PagerDuty's severities; an alert's ``severity`` label is used when it is one of them.
SEVERITIES = ("critical", "error", "warning", "info")
#: Longest ``payload.summary`` PagerDuty accepts.
MAX_SUMMARY = 1024
#: Alerts listed in ``custom_details`` of one event (PagerDuty caps an event at 512 KB).
MAX_DETAIL_ALERTS = 50


class PagerDutyNotifier(Notifier):
    """Sends trigger and resolve events to PagerDuty; see the module docstring.

    >>> n = PagerDutyNotifier(PagerDutyNotifier.Config(routing_key_env="PD_KEY"))
    >>> a = Alert("f1", "firing", {"alertname": "Lat", "host": "web1", "severity": "warning"},
    ...           {"summary": "latency high"}, starts_at=0.0, value=2.5, score=0.999)
    >>> ev = n.events(Notification("oncall", [a], {"alertname": "Lat"}), "KEY")[0]
    >>> ev["event_action"], ev["payload"]["severity"], ev["payload"]["source"]
    ('trigger', 'warning', 'web1')
    >>> ev["payload"]["summary"], ev["payload"]["timestamp"]
    ('latency high', '1970-01-01T00:00:00Z')
    """

    class Config(HttpSettings):
        """Settings of one ``pagerduty_configs`` entry."""

        routing_key_env: str | None = Field(
            default=None, description="Environment variable holding the integration key."
        )
        routing_key_file: str | None = Field(
            default=None, description="File holding the integration key."
        )
        url: str = Field(default=EVENTS_URL, description="Events API v2 endpoint.")
        incident: Literal["group", "alert"] = Field(
            default="group",
            description="One PagerDuty alert per aggregation group, or per alert.",
        )
        source: str = Field(
            default="",
            description="payload.source; default: the alert's instance or host label, "
            'else "aiopsd".',
        )
        severity: Literal["", "critical", "error", "warning", "info"] = Field(
            default="",
            description='payload.severity; default: the alert\'s severity label, else "error".',
        )
        component: str = Field(default="", description="payload.component, if set.")
        group: str = Field(default="", description="payload.group, if set.")
        event_class: str = Field(default="", description="payload.class, if set.")
        client: str = Field(default="aiopsd", description="client: the sending tool's name.")
        client_url: str = Field(default="", description="client_url, if set.")
        send_resolved: bool = Field(default=True, description="Send resolve events.")

        @model_validator(mode="after")
        def _one_key(self) -> PagerDutyNotifier.Config:
            if (self.routing_key_env is None) == (self.routing_key_file is None):
                raise ValueError("set exactly one of routing_key_env and routing_key_file")
            return self

    acknowledges = True
    uses_window = False  # no chart here

    def __init__(self, config: Config, *, base_dir: Path | None = None, **_: object) -> None:
        self.config = config
        self._key = Secret("routing_key", config.routing_key_env, config.routing_key_file)
        self._session = config.session()

    def send(self, notification: Notification) -> DeliveryResult:
        """Post the notification's event(s); never raise."""
        if notification.status == "resolved" and not self.config.send_resolved:
            return Delivered("resolved: not sent (send_resolved: false)")
        try:
            key = self._key.value()
        except SecretError as exc:
            return RetryAfter(str(exc))
        keys = []
        for event in self.events(notification, key):
            result = post_json(
                self._session,
                self.config.url,
                event,
                where="pagerduty",
                timeout=self.config.timeout,
                secrets=[key],
            )
            if not isinstance(result, Delivered):
                # Events already accepted are sent again with the rest: same dedup_key.
                return result
            keys.append(event["dedup_key"])
        return Delivered("dedup_key " + ",".join(keys))

    def events(self, notification: Notification, routing_key: str) -> list[dict[str, Any]]:
        """The Events API v2 bodies for one notification (one, or one per alert)."""
        if notification.action == "acknowledge":
            keys = (
                [incident_key(notification, a) for a in notification.alerts]
                if self.config.incident == "alert"
                else [incident_key(notification)]
            )
            return [
                {"routing_key": routing_key, "event_action": "acknowledge", "dedup_key": k}
                for k in keys
            ]
        if self.config.incident == "alert":
            return [
                self._event(notification, [a], incident_key(notification, a), routing_key)
                for a in notification.alerts
                if a.status == "firing" or self.config.send_resolved
            ]
        alerts = list(notification.alerts)
        return [self._event(notification, alerts, incident_key(notification), routing_key)]

    def _event(
        self, notification: Notification, alerts: list[Alert], dedup_key: str, routing_key: str
    ) -> dict[str, Any]:
        cfg = self.config
        firing = [a for a in alerts if a.status == "firing"]
        event: dict[str, Any] = {
            "routing_key": routing_key,
            "event_action": "trigger" if firing else "resolve",
            "dedup_key": dedup_key,
        }
        if not firing:
            return event
        first = min(firing, key=lambda a: a.starts_at)
        summary = first.annotations.get("summary") if len(firing) == 1 else None
        payload: dict[str, Any] = {
            "summary": (summary or summary_line(notification, alerts))[:MAX_SUMMARY],
            "source": cfg.source
            or first.labels.get("instance")
            or first.labels.get("host")
            or "aiopsd",
            "severity": cfg.severity or _severity(first),
            "timestamp": to_rfc3339(first.starts_at),
            "custom_details": _details(notification, alerts),
        }
        for key, value in (
            ("component", cfg.component),
            ("group", cfg.group),
            ("class", cfg.event_class),
        ):
            if value:
                payload[key] = value
        event["payload"] = payload
        event["client"] = cfg.client
        if cfg.client_url:
            event["client_url"] = cfg.client_url
        return event

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()


def _severity(alert: Alert) -> str:
    label = alert.labels.get("severity", "").lower()
    return label if label in SEVERITIES else "error"


def _details(notification: Notification, alerts: list[Alert]) -> dict[str, Any]:
    firing = [a for a in alerts if a.status == "firing"]
    return {
        "num_firing": len(firing),
        "num_resolved": len(alerts) - len(firing),
        "group_labels": dict(notification.group_labels),
        "alerts": [_alert_detail(a) for a in alerts[:MAX_DETAIL_ALERTS]],
        "truncated_alerts": max(0, len(alerts) - MAX_DETAIL_ALERTS),
    }


def _alert_detail(a: Alert) -> dict[str, Any]:
    doc = a.to_json()
    doc.pop("window", None)  # the chart's points: too large for an event, no use there
    return doc
