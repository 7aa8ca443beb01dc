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

Acknowledgements. When someone acknowledges a firing alert (a Slack button), the
receivers that were sent it and whose remote end has an acknowledged state (PagerDuty,
Opsgenie: their class sets :attr:`Notifier.acknowledges`) get a notification with
``action="acknowledge"`` for the same group, so the page stops escalating there too.
Other notifiers are not handed those.

Optional context for richer receivers (Slack): the rule that raised the alert
(``rule``, ``group/alert``), its detector type and model version, and an
:class:`AlertWindow` of the series' recent points with the expected band and the points
that scored at or above the threshold. They default to empty, so an alert built with
only the Alertmanager fields is complete.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Alert",
    "AlertWindow",
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
class AlertWindow:
    """The recent points of an alert's series, oldest first, for a chart.

    ``lo`` and ``hi`` bound the expected band at each point (NaN where none is known
    yet); ``anomalous`` marks the points that scored at or above ``threshold``. All
    sequences have one entry per point.

    >>> w = AlertWindow((0.0, 60.0), (1.0, 9.0), (0.5, 0.5), (1.5, 1.5), (False, True), 0.99)
    >>> AlertWindow.from_json(w.to_json()) == w
    True
    """

    timestamps: tuple[float, ...]
    values: tuple[float, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    anomalous: tuple[bool, ...]
    threshold: float = float("nan")

    def __post_init__(self) -> None:
        n = len(self.timestamps)
        if not all(len(x) == n for x in (self.values, self.lo, self.hi, self.anomalous)):
            raise ValueError("AlertWindow: every sequence must have one entry per point")

    def __len__(self) -> int:
        return len(self.timestamps)

    def to_json(self) -> dict[str, Any]:
        """Plain lists; NaN as ``null``."""
        return {
            "timestamps": list(self.timestamps),
            # Inline (v == v is False for NaN only): every alert's window goes through here.
            "values": [v if v == v else None for v in self.values],
            "lo": [v if v == v else None for v in self.lo],
            "hi": [v if v == v else None for v in self.hi],
            "anomalous": list(self.anomalous),
            "threshold": _json_float(self.threshold),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> AlertWindow:
        """Inverse of :meth:`to_json` (``null`` back to NaN)."""

        def floats(key: str) -> tuple[float, ...]:
            return tuple(float("nan") if v is None else float(v) for v in doc.get(key) or ())

        threshold = doc.get("threshold")
        return cls(
            floats("timestamps"),
            floats("values"),
            floats("lo"),
            floats("hi"),
            tuple(bool(v) for v in doc.get("anomalous") or ()),
            float("nan") if threshold is None else float(threshold),
        )


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
    rule: str = ""
    detector: str = ""
    model_version: str = ""
    window: AlertWindow | None = None

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
        """A JSON-ready dict with RFC 3339 times, like Alertmanager's API.

        The optional context (``rule``, ``detector``, ``modelVersion``, ``window``) is
        included only when set.
        """
        from aiops.timeutil import to_rfc3339

        doc: dict[str, Any] = {
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
        for key, text in (
            ("rule", self.rule),
            ("detector", self.detector),
            ("modelVersion", self.model_version),
        ):
            if text:
                doc[key] = text
        if self.window is not None:
            doc["window"] = self.window.to_json()
        return doc


def _json_float(x: float) -> float | None:
    return None if x != x else x


@dataclass(frozen=True, slots=True)
class Notification:
    """What one receiver is asked to deliver: one or more alerts of one group."""

    receiver: str
    alerts: Sequence[Alert]
    group_labels: Mapping[str, str] = field(default_factory=dict)
    #: How many times in a row this same set of transitions is sent again because its
    #: group's ``repeat_interval`` passed (0: not a repeat); part of the key, so a repeat
    #: is a new delivery while a re-send of the same one (after a crash) is not.
    repeat: int = 0
    #: ``notify`` (tell the alerts' state), or ``acknowledge``: someone (``actor``) took
    #: the alerts on; only notifiers that can acknowledge are handed it (see above).
    action: Literal["notify", "acknowledge"] = "notify"
    #: Who asked for the action (an acknowledgement's user), for the remote end's record.
    actor: str = ""

    @property
    def status(self) -> AlertStatus:
        """``firing`` if any alert in the group fires, else ``resolved``."""
        alerts = self.alerts
        if len(alerts) == 1:  # most notifications (on the data loop, in the outbox)
            return "firing" if alerts[0].status == "firing" else "resolved"
        return "firing" if any(a.status == "firing" for a in alerts) else "resolved"

    @property
    def idempotency_key(self) -> str:
        """One key for this receiver and exactly this set of alert transitions (and repeat)."""
        alerts = self.alerts
        if len(alerts) == 1:  # the same key, without the sort and join
            raw = self.receiver + "|" + alerts[0].idempotency_key
        else:
            raw = self.receiver + "|" + "|".join(sorted(a.idempotency_key for a in alerts))
        if self.repeat:
            raw += f"|repeat {self.repeat}"
        if self.action != "notify":
            raw += f"|{self.action}"
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

    #: True if :meth:`send` takes ``action="acknowledge"`` notifications (the remote end
    #: has an acknowledged state); the others are never handed one.
    acknowledges = False
    #: False if the notifier never uses the alerts' chart windows (:class:`AlertWindow`):
    #: the outbox then stores and hands it the notification without them.
    uses_window = True

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
