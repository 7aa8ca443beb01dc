"""What the HTTP receivers share: secrets, one POST with its outcome, incident keys.

``post_json`` turns an HTTP exchange into a delivery result: 2xx delivered; 429, 408
and 5xx worth retrying (with the ``Retry-After`` the server sent, in seconds or as an
HTTP date); any other status permanent; no connection or no answer in time worth
retrying. Reasons never hold a secret: every secret value the caller passes is
replaced by ``<secret>`` in them.
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import requests
from pydantic import BaseModel, ConfigDict, Field, model_validator

from aiops import __version__
from aiops.alerting.notify import (
    Alert,
    Delivered,
    DeliveryResult,
    Notification,
    PermanentFailure,
    RetryAfter,
)
from aiops.secrets import Secret, SecretError

from ..kafka_common import Seconds

__all__ = [
    "AuthSettings",
    "HttpAuth",
    "HttpSettings",
    "Secret",
    "SecretError",
    "group_key",
    "incident_key",
    "post_json",
    "retry_after_seconds",
]

USER_AGENT = f"aiopsd/{__version__}"
_BODY_IN_REASON = 300

IncidentMode = Literal["group", "alert"]


class HttpSettings(BaseModel):
    """Settings every HTTP receiver takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: Seconds = Field(
        default=10.0, description="Longest wait for the remote end to answer one request."
    )
    ca_file: str | None = Field(
        default=None, description="CA bundle (PEM) to verify the server; default: system CAs."
    )

    def session(self) -> requests.Session:
        """A session that verifies the server with ``ca_file`` (else the system CAs).

        The environment's settings that requests reads (``HTTPS_PROXY`` and the other
        proxy variables with ``NO_PROXY``, ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``,
        ``~/.netrc``) still apply, read once: here for the CA bundle, and once per URL by
        :func:`post_json` for proxies and netrc. requests read them at every request,
        walking the whole environment several times, which was a third of a webhook
        worker's CPU, on a thread that shares the interpreter with the data loop.
        """
        session = requests.Session()
        session.trust_env = False
        session.verify = (
            self.ca_file
            or os.environ.get("REQUESTS_CA_BUNDLE")
            or os.environ.get("CURL_CA_BUNDLE")
            or True
        )
        return session


class AuthSettings(HttpSettings):
    """HTTP settings plus optional basic or bearer authentication from env or file."""

    basic_auth_username: str | None = Field(default=None, description="Basic auth user.")
    basic_auth_password_env: str | None = Field(
        default=None, description="Environment variable holding the basic auth password."
    )
    basic_auth_password_file: str | None = Field(
        default=None, description="File holding the basic auth password."
    )
    bearer_token_env: str | None = Field(
        default=None, description="Environment variable holding a bearer token."
    )
    bearer_token_file: str | None = Field(default=None, description="File holding a bearer token.")

    @model_validator(mode="after")
    def _auth(self) -> AuthSettings:
        password = self.basic_auth_password_env or self.basic_auth_password_file
        token = self.bearer_token_env or self.bearer_token_file
        if self.basic_auth_password_env and self.basic_auth_password_file:
            raise ValueError("set one of basic_auth_password_env and basic_auth_password_file")
        if self.bearer_token_env and self.bearer_token_file:
            raise ValueError("set one of bearer_token_env and bearer_token_file")
        if bool(self.basic_auth_username) != bool(password):
            raise ValueError("basic_auth_username and a basic_auth_password_* go together")
        if password and token:
            raise ValueError("use basic auth or a bearer token, not both")
        return self


class HttpAuth:
    """The authentication of :class:`AuthSettings`, read at each request."""

    def __init__(self, config: AuthSettings) -> None:
        self.username = config.basic_auth_username
        self.password = Secret(
            "basic_auth_password", config.basic_auth_password_env, config.basic_auth_password_file
        )
        self.token = Secret("bearer_token", config.bearer_token_env, config.bearer_token_file)

    def resolve(self) -> tuple[dict[str, str], tuple[str, str] | None, list[str]]:
        """Headers, basic auth pair and the secret values (to scrub); :class:`SecretError`."""
        if self.token:
            token = self.token.value()
            return {"Authorization": f"Bearer {token}"}, None, [token]
        if self.username and self.password:
            password = self.password.value()
            return {}, (self.username, password), [password]
        return {}, None, []


def retry_after_seconds(header: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta seconds or an HTTP date.

    >>> retry_after_seconds("120")
    120.0
    >>> retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
    10.0
    >>> retry_after_seconds("soon") is None
    True
    """
    if not header:
        return None
    text = header.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "<secret>")
    return text


@functools.lru_cache(maxsize=256)
def _environment(url: str) -> tuple[dict[str, str], tuple[str, str] | None]:
    """The proxies and netrc credentials requests would take from the environment."""
    proxies = requests.utils.get_environ_proxies(url)
    netrc = requests.utils.get_netrc_auth(url)
    return proxies, netrc


def post_json(
    session: requests.Session,
    url: str,
    body: Any,
    *,
    where: str,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    secrets: Iterable[str] = (),
) -> DeliveryResult:
    """POST ``body`` as JSON and classify the answer; never raise (see the module doc)."""
    secrets = [s for s in secrets if s]
    data = json.dumps(body, allow_nan=False, default=str).encode()
    hdrs = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **(headers or {})}
    proxies: dict[str, str] | None = None
    try:
        if not session.trust_env:  # a session() one: the environment's settings, read once
            env_proxies, netrc = _environment(url)
            proxies, auth = dict(env_proxies), auth or netrc
        resp = session.post(
            url, data=data, headers=hdrs, auth=auth, timeout=timeout, proxies=proxies
        )
    except requests.Timeout:
        return RetryAfter(f"{where}: no answer within {timeout:g}s")
    except requests.RequestException as exc:
        return RetryAfter(_scrub(f"{where}: {type(exc).__name__}: {exc}", secrets)[:500])
    status = resp.status_code
    text = resp.text[:_BODY_IN_REASON].strip()
    reason = _scrub(f"{where}: HTTP {status}" + (f": {text}" if text else ""), secrets)
    if 200 <= status < 300:
        return Delivered(f"HTTP {status}")
    if status == 429 or status == 408 or status >= 500:
        return RetryAfter(reason, retry_after_seconds(resp.headers.get("Retry-After")))
    return PermanentFailure(reason)


def group_key(notification: Notification) -> str:
    """Alertmanager's group key: the receiver and the group labels, ``{}:{a="b"}``.

    >>> group_key(Notification("ops", [], {"service": "api", "alertname": "Lat"}))
    'ops:{alertname="Lat", service="api"}'
    """
    labels = ", ".join(
        f"{k}={json.dumps(v, ensure_ascii=False)}"
        for k, v in sorted(notification.group_labels.items())
    )
    return f"{notification.receiver}:{{{labels}}}"


def incident_key(notification: Notification, alert: Alert | None = None) -> str:
    """The key that names one incident on the remote end, stable from firing to resolved.

    For a group (``alert`` None): a hash of :func:`group_key`. For one alert: a hash of
    the receiver and the alert's fingerprint. 32 hex digits (PagerDuty allows 255,
    Opsgenie's alias 512).
    """
    raw = (
        "group|" + group_key(notification)
        if alert is None
        else f"alert|{notification.receiver}|{alert.fingerprint}"
    )
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def summary_line(notification: Notification, alerts: Iterable[Alert] | None = None) -> str:
    """``[FIRING:2] Lat service=api``: status, count, alert names and the group labels."""
    chosen = list(notification.alerts if alerts is None else alerts)
    firing = sum(a.status == "firing" for a in chosen)
    status = "FIRING" if firing else "RESOLVED"
    count = firing if firing else len(chosen)
    names = ",".join(sorted({a.alertname for a in chosen})) or "alert"
    labels = dict(notification.group_labels)
    if len(chosen) == 1:
        labels = {**chosen[0].labels}
    labels.pop("alertname", None)
    extra = " ".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return f"[{status}:{count}] {names}" + (f" {extra}" if extra else "")
