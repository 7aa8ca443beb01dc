"""Alertmanager receiver: alerts POSTed to Alertmanager's API v2, as Prometheus does.

Each notification's alerts go to ``POST <url>/api/v2/alerts`` as postable alerts
(``labels``, ``annotations``, ``startsAt``, ``endsAt``, and ``generatorURL`` when set).
Alertmanager then groups, silences, inhibits and routes them itself.

Like Prometheus, the receiver keeps the alerts that fire and re-sends them every
``resend_interval`` (default 1 minute) with ``endsAt`` four intervals ahead: an
Alertmanager that restarted learns them again, and if this daemon dies they resolve
on their own instead of firing for ever. A resolution is sent with ``endsAt`` = the
alert's end. The firing set is kept in ``alertmanager-<hash of url>.json`` in the state
directory (written atomically), so a restarted daemon keeps re-sending the alerts that
still fire; one HTTP exchange runs at a time, so a re-send never overtakes a resolution.

Alertmanager identifies an alert by its label set, so a notification sent twice (after
a crash) changes nothing there. Answers: 200 delivered; 400 (invalid alerts) and other
4xx permanent; 429 and 5xx retried.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from aiops.alerting.notify import (
    Alert,
    Delivered,
    DeliveryResult,
    Notification,
    Notifier,
    PermanentFailure,
    RetryAfter,
)
from aiops.timeutil import to_rfc3339

from ..kafka_common import Seconds
from ._http import AuthSettings, HttpAuth, SecretError, post_json

__all__ = ["AlertmanagerNotifier"]

log = logging.getLogger(__name__)

#: A firing alert's ``endsAt`` lies this many resend intervals ahead (Prometheus: 4).
RESEND_VALIDITY = 4


class AlertmanagerNotifier(Notifier):
    """Pushes alerts to an Alertmanager and keeps firing ones alive; see the module doc.

    >>> n = AlertmanagerNotifier(AlertmanagerNotifier.Config(url="http://am:9093"),
    ...                          clock=lambda: 600.0)
    >>> a = Alert("f1", "firing", {"alertname": "Lat", "host": "a"}, {"summary": "s"}, 0.0)
    >>> n.postable(a)
    {'labels': {'alertname': 'Lat', 'host': 'a'}, 'annotations': {'summary': 's'}, \
'startsAt': '1970-01-01T00:00:00Z', 'endsAt': '1970-01-01T00:14:00Z'}
    """

    uses_window = False  # no chart here

    class Config(AuthSettings):
        """Settings of one ``alertmanager_configs`` entry."""

        url: str = Field(description="Alertmanager's base URL, e.g. http://alertmanager:9093.")
        resend_interval: Seconds = Field(
            default=60.0, description="How often firing alerts are sent again."
        )
        generator_url: str = Field(
            default="", description="generatorURL of every alert (a link back), if set."
        )

    def __init__(
        self,
        config: Config,
        *,
        base_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
        **_: object,
    ) -> None:
        self.config = config
        self.clock = clock
        self.url = config.url.rstrip("/") + "/api/v2/alerts"
        self._auth = HttpAuth(config)
        self._session = config.session()
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:12]
        self.state_path = base_dir / f"alertmanager-{digest}.json" if base_dir else None
        #: fingerprint -> the alert's labels, annotations and start, while it fires.
        self.firing: dict[str, dict[str, Any]] = self._load()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._resender: threading.Thread | None = None
        if self.firing:
            self._start_resender()

    def postable(self, alert: Alert) -> dict[str, Any]:
        """The postable alert of API v2 for one alert (``endsAt`` as described above)."""
        if alert.status == "firing":
            return self._postable(alert.labels, alert.annotations, alert.starts_at, None)
        end = alert.ends_at if alert.ends_at is not None else alert.starts_at
        return self._postable(alert.labels, alert.annotations, alert.starts_at, end)

    def _postable(
        self, labels: Any, annotations: Any, starts: float, ends: float | None
    ) -> dict[str, Any]:
        if ends is None:
            ends = self.clock() + RESEND_VALIDITY * self.config.resend_interval
        doc: dict[str, Any] = {
            "labels": dict(labels),
            "annotations": dict(annotations),
            "startsAt": to_rfc3339(starts),
            "endsAt": to_rfc3339(max(ends, starts)),
        }
        if self.config.generator_url:
            doc["generatorURL"] = self.config.generator_url
        return doc

    def send(self, notification: Notification) -> DeliveryResult:
        """POST the notification's alerts; remember which fire; never raise."""
        with self._lock:
            for a in notification.alerts:
                if a.status == "firing":
                    self.firing[a.fingerprint] = {
                        "labels": dict(a.labels),
                        "annotations": dict(a.annotations),
                        "startsAt": a.starts_at,
                    }
                else:
                    self.firing.pop(a.fingerprint, None)
            result = self._post([self.postable(a) for a in notification.alerts])
            if isinstance(result, PermanentFailure):
                # Alertmanager refused these alerts: re-sending them would fail for ever.
                for a in notification.alerts:
                    self.firing.pop(a.fingerprint, None)
            self._save()
        if self.firing:
            self._start_resender()
        return result

    def resend(self) -> DeliveryResult:
        """POST every firing alert again (what the re-send thread does each interval)."""
        with self._lock:
            if not self.firing:
                return Delivered("nothing fires")
            body = [
                self._postable(f["labels"], f["annotations"], float(f["startsAt"]), None)
                for f in self.firing.values()
            ]
            return self._post(body)

    def _post(self, body: list[dict[str, Any]]) -> DeliveryResult:
        try:
            headers, auth, secrets = self._auth.resolve()
        except SecretError as exc:
            return RetryAfter(str(exc))
        return post_json(
            self._session,
            self.url,
            body,
            where="alertmanager",
            timeout=self.config.timeout,
            headers=headers,
            auth=auth,
            secrets=secrets,
        )

    def _start_resender(self) -> None:
        if self._resender is not None or self._stop.is_set():
            return
        self._resender = threading.Thread(
            target=self._resend_loop, name="alertmanager-resend", daemon=True
        )
        self._resender.start()

    def _resend_loop(self) -> None:
        while not self._stop.wait(self.config.resend_interval):
            try:
                result = self.resend()
            except Exception:  # keep re-sending whatever one attempt did
                log.exception("alertmanager: re-sending firing alerts failed")
                continue
            if not isinstance(result, Delivered):
                log.warning("alertmanager: re-sending firing alerts: %s", result)

    def _load(self) -> dict[str, dict[str, Any]]:
        if self.state_path is None or not self.state_path.exists():
            return {}
        try:
            doc = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("alertmanager: ignoring unreadable %s: %s", self.state_path, exc)
            return {}
        if not isinstance(doc, dict):
            return {}
        return {
            str(fp): f
            for fp, f in doc.items()
            if isinstance(f, dict) and {"labels", "annotations", "startsAt"} <= f.keys()
        }

    def _save(self) -> None:
        if self.state_path is None:
            return
        tmp = self.state_path.with_suffix(".tmp")
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.firing, f, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_path)
        except OSError as exc:
            log.warning("alertmanager: cannot save firing alerts to %s: %s", self.state_path, exc)

    def close(self) -> None:
        """Stop re-sending and close the HTTP session."""
        self._stop.set()
        if self._resender is not None:
            self._resender.join(self.config.timeout + 1.0)
        self._session.close()
