"""Opsgenie receiver: the Alert API (create, acknowledge and close by alias).

A firing notification creates an alert (``POST /v2/alerts``), a resolved one closes it
(``POST /v2/alerts/{alias}/close?identifierType=alias``), an acknowledgement (someone
pressed Acknowledge in Slack) acknowledges it (``.../acknowledge?identifierType=alias``,
with the person's name in the note). The ``alias`` names the
incident: with ``incident: group`` (the default) a hash of the receiver and the group
labels, with ``incident: alert`` one Opsgenie alert per alert (a hash of the receiver
and the fingerprint; one request per alert).

Exactly once in effect: Opsgenie de-duplicates a create whose alias matches an open
alert (it counts the repeat instead of paging again), and closing a closed alert does
nothing, so a notification sent again after a crash pages once.

Opsgenie's limits are applied before sending: ``message`` at most 130 characters,
``description`` 15,000, at most 20 ``tags`` of 50 characters, ``details`` values as
strings. Answers: 202 delivered; 400, 401, 403, 404, 422 permanent; 429 and 5xx
retried (``Retry-After`` honoured). The API key comes only from ``api_key_env`` or
``api_key_file`` and is sent as ``Authorization: GenieKey <key>``.
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aiops.alerting.notify import (
    Alert,
    Delivered,
    DeliveryResult,
    Notification,
    Notifier,
    RetryAfter,
)

from ._http import HttpSettings, Secret, SecretError, incident_key, post_json, summary_line

__all__ = ["OpsgenieNotifier"]

#: Opsgenie's API in the US region (EU: https://api.eu.opsgenie.com).
API_URL = "https://api.opsgenie.com"
MAX_MESSAGE = 130
MAX_DESCRIPTION = 15_000
MAX_TAGS = 20
MAX_TAG = 50
MAX_SOURCE = 100
PRIORITIES = ("P1", "P2", "P3", "P4", "P5")


class Responder(BaseModel):
    """One responder: a team, user, escalation or schedule, by name (or username)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["team", "user", "escalation", "schedule"]
    name: str = Field(description="Name of the team, escalation or schedule; a user's username.")


class OpsgenieNotifier(Notifier):
    """Creates, acknowledges and closes Opsgenie alerts; see the module docstring.

    >>> n = OpsgenieNotifier(OpsgenieNotifier.Config(api_key_env="OG_KEY", tags=["aiops"]))
    >>> a = Alert("f1", "firing", {"alertname": "Lat", "host": "web1", "priority": "P2"},
    ...           {"summary": "latency high"}, starts_at=0.0)
    >>> body = n.create_body(Notification("oncall", [a], {"alertname": "Lat"}), [a], "k1")
    >>> body["message"], body["priority"], body["tags"]
    ('latency high', 'P2', ['aiops', 'alertname:Lat'])
    """

    class Config(HttpSettings):
        """Settings of one ``opsgenie_configs`` entry."""

        api_key_env: str | None = Field(
            default=None, description="Environment variable holding the API key."
        )
        api_key_file: str | None = Field(default=None, description="File holding the API key.")
        api_url: str = Field(default=API_URL, description="API base URL (EU: api.eu.opsgenie.com).")
        incident: Literal["group", "alert"] = Field(
            default="group", description="One Opsgenie alert per aggregation group, or per alert."
        )
        priority: Literal["", "P1", "P2", "P3", "P4", "P5"] = Field(
            default="", description="Priority; default: the alert's priority label, else P3."
        )
        tags: list[str] = Field(default_factory=list, description="Tags added to every alert.")
        responders: list[Responder] = Field(
            default_factory=list, description="Teams, users, escalations or schedules notified."
        )
        entity: str = Field(default="", description="The alert's entity, if set.")
        source: str = Field(default="aiopsd", description="The alert's source.")
        send_resolved: bool = Field(default=True, description="Close the alert on resolution.")

        @model_validator(mode="after")
        def _one_key(self) -> OpsgenieNotifier.Config:
            if (self.api_key_env is None) == (self.api_key_file is None):
                raise ValueError("set exactly one of api_key_env and api_key_file")
            return self

    acknowledges = True
    uses_window = False  # no chart here

    def __init__(self, config: Config, *, base_dir: Path | None = None, **_: object) -> None:
        self.config = config
        self._key = Secret("api_key", config.api_key_env, config.api_key_file)
        self._session = config.session()

    def send(self, notification: Notification) -> DeliveryResult:
        """Create, close or acknowledge; never raise."""
        try:
            key = self._key.value()
        except SecretError as exc:
            return RetryAfter(str(exc))
        if self.config.incident == "alert":
            parts = [([a], incident_key(notification, a)) for a in notification.alerts]
        else:
            parts = [(list(notification.alerts), incident_key(notification))]
        aliases = []
        for alerts, alias in parts:
            if notification.action == "acknowledge":
                who = f" by {notification.actor}" if notification.actor else ""
                request = self._by_alias(alias, "acknowledge", f"Acknowledged{who} (aiopsd)")
            elif any(a.status == "firing" for a in alerts):
                request = ("/v2/alerts", self.create_body(notification, alerts, alias))
            elif self.config.send_resolved:
                request = self._by_alias(alias, "close", "Resolved (aiopsd)")
            else:
                continue
            path, body = request
            result = post_json(
                self._session,
                self.config.api_url.rstrip("/") + path,
                body,
                where="opsgenie",
                timeout=self.config.timeout,
                headers={"Authorization": f"GenieKey {key}"},
                secrets=[key],
            )
            if not isinstance(result, Delivered):
                return result
            aliases.append(alias)
        return Delivered("alias " + ",".join(aliases))

    def _by_alias(self, alias: str, verb: str, note: str) -> tuple[str, dict[str, Any]]:
        """Path and body of a close or acknowledge request on the alert ``alias``."""
        path = f"/v2/alerts/{urllib.parse.quote(alias, safe='')}/{verb}?identifierType=alias"
        return path, {"source": self.config.source[:MAX_SOURCE], "note": note}

    def create_body(
        self, notification: Notification, alerts: list[Alert], alias: str
    ) -> dict[str, Any]:
        """The body of ``POST /v2/alerts`` for these alerts."""
        cfg = self.config
        firing = [a for a in alerts if a.status == "firing"] or alerts
        first = min(firing, key=lambda a: a.starts_at)
        summary = first.annotations.get("summary") if len(firing) == 1 else None
        message = summary or summary_line(notification, alerts)
        label_priority = first.labels.get("priority", "").upper()
        priority = cfg.priority or (label_priority if label_priority in PRIORITIES else "P3")
        tags = list(cfg.tags) + [f"{k}:{v}" for k, v in sorted(notification.group_labels.items())]
        details = {k: str(v) for k, v in sorted(notification.group_labels.items())}
        details["num_firing"] = str(sum(a.status == "firing" for a in alerts))
        body: dict[str, Any] = {
            "message": message[:MAX_MESSAGE],
            "alias": alias,
            "description": _description(alerts)[:MAX_DESCRIPTION],
            "tags": [t[:MAX_TAG] for t in tags][:MAX_TAGS],
            "details": details,
            "priority": priority,
            "source": cfg.source[:MAX_SOURCE],
        }
        if cfg.entity:
            body["entity"] = cfg.entity[:512]
        if cfg.responders:
            body["responders"] = [
                {"type": r.type, "username" if r.type == "user" else "name": r.name}
                for r in cfg.responders
            ]
        return body

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()


def _description(alerts: list[Alert]) -> str:
    lines = []
    for a in alerts:
        labels = json.dumps(dict(a.labels), sort_keys=True, ensure_ascii=False)
        lines.append(f"[{a.status.upper()}] {a.annotations.get('summary', a.alertname)} {labels}")
        description = a.annotations.get("description")
        if description:
            lines.append(f"  {description}")
    return "\n".join(lines)
