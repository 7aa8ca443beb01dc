"""The notifier contract: alerts leave the daemon through here.

A notifier delivers one :class:`Notification` (a group of alerts for one receiver) and
says what happened: :class:`Delivered`, :class:`RetryAfter` (a failure worth retrying,
with the delay the remote end asked for if any), or :class:`PermanentFailure` (retrying
cannot help: a bad token, a rejected payload).

Every notification carries an ``idempotency_key`` built from the alert fingerprint, the
transition and the start time. A notifier passes it to the remote end where the remote
API has such a field (PagerDuty ``dedup_key``, Opsgenie ``alias``) so that a notification
sent twice after a crash pages once.

Notifiers never raise for a delivery problem; they return a result. Raising is a bug.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Alert",
    "Delivered",
    "DeliveryResult",
    "Notification",
    "Notifier",
    "NullNotifier",
    "PermanentFailure",
    "RetryAfter",
    "notification_to_json",
]

AlertStatus = Literal["firing", "resolved"]


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert of one series at one transition, as Alertmanager would see it."""

    fingerprint: str
    status: AlertStatus
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: float
    ends_at: float | None = None
    value: float = float("nan")
    score: float = float("nan")
    series: str = ""

    @property
    def alertname(self) -> str:
        """The ``alertname`` label (the rule's ``alert``)."""
        return self.labels.get("alertname", "")

    @property
    def idempotency_key(self) -> str:
        """Stable across retries and restarts for one transition of one alert."""
        raw = f"{self.fingerprint}:{self.status}:{self.starts_at:.3f}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with RFC 3339 times, like Alertmanager's API."""
        from aiops.timeutil import to_rfc3339

        return {
            "fingerprint": self.fingerprint,
            "status": self.status,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": to_rfc3339(self.starts_at),
            "endsAt": to_rfc3339(self.ends_at) if self.ends_at is not None else None,
            "value": _json_float(self.value),
            "score": _json_float(self.score),
            "series": self.series,
        }


def _json_float(x: float) -> float | None:
    return None if x != x else x


@dataclass(frozen=True, slots=True)
class Notification:
    """What one receiver is asked to deliver: one or more alerts of one group."""

    receiver: str
    alerts: Sequence[Alert]
    group_labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def status(self) -> AlertStatus:
        """``firing`` if any alert in the group fires, else ``resolved``."""
        return "firing" if any(a.status == "firing" for a in self.alerts) else "resolved"

    @property
    def idempotency_key(self) -> str:
        """One key for this receiver and exactly this set of alert transitions."""
        parts = sorted(a.idempotency_key for a in self.alerts)
        raw = self.receiver + "|" + "|".join(parts)
        return hashlib.sha256(raw.encode()).hexdigest()[:32]


def notification_to_json(notification: Notification) -> dict[str, Any]:
    """The JSON document of one notification, as file and Kafka notifiers write it.

    Receiver, status, idempotency key, group labels and the alerts in Alertmanager's
    JSON shape (:meth:`Alert.to_json`), so the output can be replayed into other tools.
    """
    return {
        "receiver": notification.receiver,
        "status": notification.status,
        "idempotency_key": notification.idempotency_key,
        "groupLabels": dict(notification.group_labels),
        "alerts": [a.to_json() for a in notification.alerts],
    }


@dataclass(frozen=True, slots=True)
class Delivered:
    """The remote end accepted the notification."""

    detail: str = ""


@dataclass(frozen=True, slots=True)
class RetryAfter:
    """A failure worth retrying; ``seconds`` is the remote end's hint, if it gave one."""

    reason: str
    seconds: float | None = None


@dataclass(frozen=True, slots=True)
class PermanentFailure:
    """A failure that retrying cannot fix."""

    reason: str


DeliveryResult = Delivered | RetryAfter | PermanentFailure


class Notifier(ABC):
    """Base class of every notifier; see the module docstring for the contract."""

    @abstractmethod
    def send(self, notification: Notification) -> DeliveryResult:
        """Deliver one notification and say how it went; never raise."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release resources."""


class NullNotifier(Notifier):
    """Accepts everything and delivers nowhere (a receiver with no configs)."""

    def send(self, notification: Notification) -> DeliveryResult:
        """Pretend delivery succeeded."""
        return Delivered("null notifier")
