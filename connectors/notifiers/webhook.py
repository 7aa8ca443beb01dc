"""Generic webhook receiver: Alertmanager's webhook JSON, POSTed to a URL.

The body is the document Alertmanager's ``webhook_configs`` send (version ``"4"``):
``receiver``, ``status``, ``alerts`` (each with ``status``, ``labels``,
``annotations``, ``startsAt``, ``endsAt``, ``generatorURL``, ``fingerprint``),
``groupLabels``, ``commonLabels``, ``commonAnnotations``, ``externalURL``,
``groupKey`` and ``truncatedAlerts`` (alerts left out by ``max_alerts``). As in
Alertmanager, an alert that has not ended has ``endsAt`` ``0001-01-01T00:00:00Z``.

Every request carries the notification's idempotency key in the ``Idempotency-Key``
header: a notification sent again (a crash between sending and recording, a retry after
a time-out) carries the same key, so the endpoint can drop the copy.

Answers: 2xx delivered; 429, 408 and 5xx retried (``Retry-After`` honoured); other
statuses permanent. Optional basic auth or a bearer token, from ``*_env`` / ``*_file``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from aiops.alerting.notify import (
    Alert,
    Delivered,
    DeliveryResult,
    Notification,
    Notifier,
    RetryAfter,
)
from aiops.timeutil import to_rfc3339

from ._http import AuthSettings, HttpAuth, SecretError, group_key, post_json

__all__ = ["IDEMPOTENCY_HEADER", "WebhookNotifier", "webhook_body"]

#: The request header holding the notification's idempotency key.
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Alertmanager's ``endsAt`` of an alert that has not ended (Go's zero time).
ZERO_TIME = "0001-01-01T00:00:00Z"


class WebhookNotifier(Notifier):
    """POSTs Alertmanager's webhook JSON; see the module docstring.

    >>> a = Alert("f1", "firing", {"alertname": "Lat", "host": "a"}, {"summary": "s"}, 0.0)
    >>> body = webhook_body(Notification("hook", [a], {"alertname": "Lat"}))
    >>> body["version"], body["groupKey"], body["alerts"][0]["endsAt"]
    ('4', 'hook:{alertname="Lat"}', '0001-01-01T00:00:00Z')
    """

    uses_window = False  # no chart here

    class Config(AuthSettings):
        """Settings of one ``webhook_configs`` entry."""

        url: str = Field(description="Where to POST the JSON.")
        max_alerts: int = Field(
            default=0, ge=0, description="At most this many alerts per request (0: all)."
        )
        send_resolved: bool = Field(default=True, description="Send resolved notifications.")
        external_url: str = Field(default="", description="The body's externalURL.")

    def __init__(self, config: Config, *, base_dir: Path | None = None, **_: object) -> None:
        self.config = config
        self._auth = HttpAuth(config)
        self._session = config.session()

    def send(self, notification: Notification) -> DeliveryResult:
        """POST one notification; never raise."""
        cfg = self.config
        if notification.status == "resolved" and not cfg.send_resolved:
            return Delivered("resolved: not sent (send_resolved: false)")
        try:
            headers, auth, secrets = self._auth.resolve()
        except SecretError as exc:
            return RetryAfter(str(exc))
        body = webhook_body(notification, max_alerts=cfg.max_alerts, external_url=cfg.external_url)
        headers[IDEMPOTENCY_HEADER] = notification.idempotency_key
        return post_json(
            self._session,
            cfg.url,
            body,
            where="webhook",
            timeout=cfg.timeout,
            headers=headers,
            auth=auth,
            secrets=secrets,
        )

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()


def _common(maps: list[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def _alert(a: Alert) -> dict[str, Any]:
    ended = a.status == "resolved"
    ends = a.ends_at if a.ends_at is not None else a.starts_at
    return {
        "status": a.status,
        "labels": dict(a.labels),
        "annotations": dict(a.annotations),
        "startsAt": to_rfc3339(a.starts_at),
        "endsAt": to_rfc3339(ends) if ended else ZERO_TIME,
        "generatorURL": "",
        "fingerprint": a.fingerprint,
    }


def webhook_body(
    notification: Notification, *, max_alerts: int = 0, external_url: str = ""
) -> dict[str, Any]:
    """Alertmanager's webhook document (version 4) for one notification."""
    alerts = list(notification.alerts)
    kept = alerts[:max_alerts] if max_alerts else alerts
    return {
        "version": "4",
        "groupKey": group_key(notification),
        "truncatedAlerts": len(alerts) - len(kept),
        "status": notification.status,
        "receiver": notification.receiver,
        "groupLabels": dict(notification.group_labels),
        "commonLabels": _common([a.labels for a in alerts]),
        "commonAnnotations": _common([a.annotations for a in alerts]),
        "externalURL": external_url,
        "alerts": [_alert(a) for a in kept],
    }
