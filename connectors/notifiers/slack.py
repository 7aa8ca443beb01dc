"""Slack notifier: Block Kit messages through the Web API, or an incoming webhook.

Two ways to reach Slack, one per ``slack_configs`` entry:

- **Web API** (``token_env`` / ``token_file``: a bot token ``xoxb-...`` with the scopes
  ``chat:write`` and ``files:write``, plus ``channels:history`` for crash recovery, see
  below; and ``channel``). Each alert group gets one message: a header (status and
  alert name), severity, the value against the expected band, the score, labels,
  detector and model version, links (``generator_url`` / ``dashboard_url`` templates),
  and the buttons Acknowledge, Silence 1 h, False positive and Expected change, which
  the daemon's ``POST /slack/interactions`` endpoint answers
  (:mod:`aiops.alerting.feedback`). A PNG chart of the recent window (expected band,
  anomalous points in red; :mod:`.slack_chart`) is uploaded into the message's thread
  with ``files_upload_v2``. While the group fires, later notifications update the same
  message (``chat.update``); its resolution updates it once more (no buttons) and
  replies in its thread.
- **Incoming webhook** (``webhook_url_env`` / ``webhook_url_file``): the same blocks
  without buttons, chart or threads (a webhook can only post), one message per
  notification.

Idempotency: the Web API has no idempotency key, so the notifier keeps, in a small
SQLite file in the state directory (``store``), the ``ts`` of each group's message and
which steps of each notification (by its idempotency key) are done: a notification sent
again after a crash updates the message it already posted instead of posting twice,
and does not upload its chart or reply twice. Each message also carries Slack message
``metadata`` with the idempotency key; when the daemon died between Slack's answer and
the store's write, the re-send looks for that key in the channel's recent history
(``conversations.history``, scope ``channels:history``; ``channel`` must then be a
channel ID) before posting.

Results: HTTP 429 is :class:`~aiops.alerting.notify.RetryAfter` with Slack's
``Retry-After`` seconds; 5xx, ``internal_error``, ``fatal_error``, ``service_unavailable``,
``request_timeout``, time-outs and connection errors are retried; other ``ok: false``
errors (``invalid_auth``, ``channel_not_found``, ``not_in_channel``, ``invalid_blocks``,
...) are :class:`~aiops.alerting.notify.PermanentFailure`. A missing secret is retried
(it may be provisioned later). Secrets never appear in a result, an exception or a log
line: slack-sdk gets a logger of its own that stays silent below WARNING, and every
reason is scrubbed of the token and the webhook URL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import sqlite3
import threading
import time
import urllib.error
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web import WebClient
from slack_sdk.webhook import WebhookClient

from aiops.alerting.feedback import FEEDBACK_FILE, FeedbackStore, action_id
from aiops.alerting.notify import (
    Alert,
    Delivered,
    DeliveryResult,
    Notification,
    Notifier,
    PermanentFailure,
    RetryAfter,
)
from aiops.alerting.templates import Template
from aiops.config.models import config_error
from aiops.secrets import SecretError, read_secret
from aiops.timeutil import to_rfc3339

from ..kafka_common import Seconds

__all__ = ["SlackNotifier", "build_message", "classify_slack_error"]

log = logging.getLogger(__name__)
# slack-sdk logs request URLs and bodies at debug level; a webhook URL is a secret.
_SDK_LOG = logging.getLogger("aiops.slack_sdk")
_SDK_LOG.setLevel(logging.WARNING)

#: Slack's Block Kit limits (docs.slack.dev/reference/block-kit).
MAX_BLOCKS = 50
MAX_HEADER = 150
MAX_SECTION = 3000
MAX_FIELD = 2000
MAX_BUTTON_VALUE = 2000
MAX_TEXT = 40_000
#: Alerts of a group shown with their own blocks; the rest are counted.
MAX_DETAILED_ALERTS = 8
#: Errors worth retrying (Slack's own list of transient errors) besides HTTP 429 / 5xx.
RETRYABLE_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{8,}")
_SEVERITY_ICON = {"critical": ":red_circle:", "page": ":red_circle:", "warning": ":warning:"}
_BUTTONS = (
    ("acknowledge", "Acknowledge", "primary"),
    ("silence", "Silence 1 h", None),
    ("false_positive", "False positive", "danger"),
    ("expected_change", "Expected change", None),
)
_LITERAL_SECRETS = ("token", "webhook_url", "signing_secret")
_METADATA_EVENT = "aiops_alert"
#: How far back (seconds) the crash recovery looks in the channel's history.
RECOVERY_WINDOW = 3600.0


class SlackNotifier(Notifier):
    """Posts alert groups to Slack; see the module docstring.

    >>> cfg = SlackNotifier.Config(token_env="SLACK_BOT_TOKEN", channel="C0123456789")
    >>> cfg.api_url, cfg.chart, cfg.buttons
    ('https://slack.com/api/', True, True)
    >>> SlackNotifier.Config(webhook_url_env="HOOK", channel="C0123456789")
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for Config
      "channel" goes with a bot token; an incoming webhook posts to its own channel ...
    """

    class Config(BaseModel):
        """Settings of one ``slack_configs`` entry."""

        model_config = ConfigDict(extra="forbid", frozen=True)

        token_env: str | None = Field(
            default=None, description="Environment variable holding the bot token (xoxb-...)."
        )
        token_file: str | None = Field(
            default=None, description="File holding the bot token (whitespace stripped)."
        )
        channel: str | None = Field(
            default=None,
            description="Channel ID (C0123...) to post to; a #name posts too, but then a "
            "crash cannot be recovered from the channel history.",
        )
        webhook_url_env: str | None = Field(
            default=None, description="Environment variable holding an incoming-webhook URL."
        )
        webhook_url_file: str | None = Field(
            default=None, description="File holding an incoming-webhook URL."
        )
        api_url: str = Field(
            default="https://slack.com/api/", description="Slack Web API base URL."
        )
        generator_url: str = Field(
            default="",
            description="Template of a link to the source of the alert (same language as "
            "annotations), shown as a button; empty: none.",
        )
        dashboard_url: str = Field(
            default="", description="Template of a link to a dashboard; empty: none."
        )
        chart: bool = Field(
            default=True, description="Upload a PNG chart of the recent window (Web API only)."
        )
        buttons: bool = Field(
            default=True,
            description="Add the buttons Acknowledge, Silence 1 h, False positive, Expected "
            "change (Web API only; needs http.slack for the interactivity endpoint).",
        )
        timeout: Seconds = Field(default=10.0, description="Time-out of one request to Slack.")
        store: str = Field(
            default="slack.sqlite",
            description="SQLite file of message ts per alert group; relative to the state "
            "directory.",
        )

        @model_validator(mode="before")
        @classmethod
        def _no_literal_secrets(cls, data: Any) -> Any:
            if isinstance(data, Mapping):
                for key in _LITERAL_SECRETS:
                    if key in data:
                        raise ValueError(
                            f'"{key}" must not be written in the file: use "{key}_env" '
                            f'(an environment variable) or "{key}_file" (a file)'
                        )
            return data

        @model_validator(mode="after")
        def _one_way(self) -> SlackNotifier.Config:
            token = (self.token_env, self.token_file)
            hook = (self.webhook_url_env, self.webhook_url_file)
            for name in ("token", "webhook_url"):
                if getattr(self, f"{name}_env") is not None and getattr(self, f"{name}_file"):
                    raise config_error(f'give "{name}_env" or "{name}_file", not both')
            has_token = any(x is not None for x in token)
            has_hook = any(x is not None for x in hook)
            if has_token == has_hook:
                raise config_error(
                    "give either a bot token (token_env / token_file, with channel) or an "
                    "incoming webhook (webhook_url_env / webhook_url_file)"
                )
            if has_hook and self.channel is not None:
                raise config_error(
                    '"channel" goes with a bot token; an incoming webhook posts to its own '
                    "channel (set when the webhook is created)",
                    "channel",
                )
            if has_token and not self.channel:
                raise config_error('a bot token needs "channel" (a channel ID such as C0123456789)')
            for name in ("generator_url", "dashboard_url"):
                try:
                    Template(getattr(self, name))  # a broken template fails at load time
                except ValueError as exc:
                    raise config_error(f'"{name}": {exc}', name) from None
            return self

        @property
        def webhook(self) -> bool:
            """True for the incoming-webhook variant."""
            return self.webhook_url_env is not None or self.webhook_url_file is not None

    def __init__(self, config: Config, *, base_dir: Path | None = None, **_: object) -> None:
        self.config = config
        store = Path(config.store)
        base = base_dir or Path(".")
        self.store_path = store if store.is_absolute() else base / store
        self.feedback_path = base / FEEDBACK_FILE
        self._links = [
            (label, Template(text))
            for label, text in (
                ("Source", config.generator_url),
                ("Dashboard", config.dashboard_url),
            )
            if text
        ]
        self._store: _MessageStore | None = None
        self._feedback: FeedbackStore | None = None
        self._secret = ""
        self._lock = threading.Lock()

    # -- the contract --------------------------------------------------------------------

    def send(self, notification: Notification) -> DeliveryResult:
        """Post or update the group's message; never raise."""
        with self._lock:
            try:
                secret = self._read_secret()
            except SecretError as exc:
                return RetryAfter(str(exc))
            try:
                if self.config.webhook:
                    return self._send_webhook(secret, notification)
                return self._send_api(secret, notification)
            except SlackApiError as exc:
                return classify_slack_error(exc, self._scrub)
            except (SlackClientError, urllib.error.URLError, OSError, TimeoutError) as exc:
                return RetryAfter(self._scrub(f"slack: {type(exc).__name__}: {exc}"))
            except sqlite3.Error as exc:
                return RetryAfter(f"slack: message store {self.store_path}: {exc}")
            except Exception as exc:  # a bug here must not take a worker down
                log.error("slack notifier: unexpected %s", type(exc).__name__)
                return RetryAfter(self._scrub(f"slack: unexpected {type(exc).__name__}: {exc}"))

    def close(self) -> None:
        """Close the stores."""
        if self._store is not None:
            self._store.close()
        if self._feedback is not None:
            self._feedback.close()

    # -- helpers ------------------------------------------------------------------------

    def _read_secret(self) -> str:
        cfg = self.config
        if cfg.webhook:
            value = read_secret(cfg.webhook_url_env, cfg.webhook_url_file, "slack webhook_url")
        else:
            value = read_secret(cfg.token_env, cfg.token_file, "slack token")
        if not value:
            raise SecretError("slack: no secret configured")
        self._secret = value
        return value

    def _scrub(self, text: str) -> str:
        if self._secret and self._secret in text:
            text = text.replace(self._secret, "<secret>")
        return re.sub(r"xox[abpr]-[A-Za-z0-9-]+", "<token>", text)

    def _stores(self) -> tuple[_MessageStore, FeedbackStore]:
        if self._store is None:
            self._store = _MessageStore(self.store_path)
        if self._feedback is None:
            self._feedback = FeedbackStore(self.feedback_path)
        return self._store, self._feedback

    def _client(self, token: str) -> WebClient:
        return WebClient(
            token=token,
            base_url=self.config.api_url,
            timeout=max(1, math.ceil(self.config.timeout)),
            logger=_SDK_LOG,
            retry_handlers=[],  # the outbox retries, with its own back-off
        )

    def _links_for(self, alert: Alert) -> list[tuple[str, str]]:
        ctx = {
            "labels": dict(alert.labels),
            "value": alert.value,
            "score": alert.score,
            "series": alert.series,
        }
        out = []
        for label, template in self._links:
            url = template.render(ctx).strip()
            if url.startswith(("http://", "https://")) and len(url) <= 3000:
                out.append((label, url))
        return out

    # -- incoming webhook ----------------------------------------------------------------

    def _send_webhook(self, url: str, notification: Notification) -> DeliveryResult:
        text, blocks = build_message(notification, buttons=False, links=self._links_for)
        resp = WebhookClient(
            url, timeout=max(1, math.ceil(self.config.timeout)), logger=_SDK_LOG
        ).send(text=text, blocks=blocks)
        status, body = resp.status_code, (resp.body or "")[:200]
        if status == 200:
            return Delivered("slack webhook")
        reason = self._scrub(f"slack webhook: HTTP {status}: {body}")
        if status == 429:
            return RetryAfter(reason, _retry_after(resp.headers))
        if status >= 500 or status == 408:
            return RetryAfter(reason)
        return PermanentFailure(reason)

    # -- Web API -------------------------------------------------------------------------

    def _send_api(self, token: str, n: Notification) -> DeliveryResult:
        store, feedback = self._stores()
        client = self._client(token)
        key = n.idempotency_key
        group = _group_key(self.config.channel or "", n)
        if store.step_done(key, "done"):
            msg = store.message(group)
            return Delivered(f"slack {msg.ts if msg else ''} (already delivered)")
        if self.config.buttons:
            feedback.remember(n.alerts)
        args = self.message_args(n)
        text, blocks, meta = args["text"], args["blocks"], args["metadata"]
        msg = store.message(group)
        resolved = n.status == "resolved"
        if msg is not None and not msg.ts and msg.pending_key:
            # A post was started and not recorded: the daemon may have died after Slack
            # took it. Adopt that message if the channel history has it.
            found = self._recover(client, msg.channel, msg.pending_key, msg.pending_since)
            msg = store.posted(group, msg.channel, found) if found else None
        # This very resolution closed the message before a crash: update it again.
        closed_by_me = resolved and store.step_done(key, "reply")
        if msg is not None and msg.ts and (msg.state == "open" or closed_by_me):
            try:
                client.chat_update(
                    channel=msg.channel, ts=msg.ts, text=text, blocks=blocks, metadata=meta
                )
            except SlackApiError as exc:
                if _error(exc) not in ("message_not_found", "cant_update_message"):
                    raise
                log.warning("slack: message %s is gone; posting a new one", msg.ts)
                msg = None
        else:
            msg = None
        if msg is None:
            store.pending(group, self.config.channel or "", key)
            resp = client.chat_postMessage(
                channel=self.config.channel or "", text=text, blocks=blocks, metadata=meta
            )
            msg = store.posted(group, str(resp["channel"]), str(resp["ts"]))
            if resolved:  # a resolution with no message to update: this post says it all
                store.mark(key, "reply")
        if not resolved and self.config.chart and not store.step_done(key, "chart"):
            try:
                self._upload_chart(client, n, msg.channel, msg.ts)
            except SlackApiError as exc:
                result = classify_slack_error(exc, self._scrub)
                if isinstance(result, RetryAfter):
                    raise
                # The message is out; a chart Slack refuses (no files:write) is not
                # worth losing the notification for.
                log.warning("slack: chart not uploaded: %s", result.reason)
            store.mark(key, "chart")
        if resolved and not store.step_done(key, "reply"):
            started = store.step_done(key, "reply started")
            if not (started and self._replied(client, msg.channel, msg.ts, key)):
                store.mark(key, "reply started")
                client.chat_postMessage(
                    channel=msg.channel,
                    thread_ts=msg.ts,
                    text=_resolution_text(n),
                    metadata={
                        "event_type": _METADATA_EVENT,
                        "event_payload": {"idempotency_key": key, "status": "resolved"},
                    },
                )
            store.mark(key, "reply")
        if resolved:
            store.close_message(group)
        store.mark(key, "done")
        return Delivered(f"slack {msg.channel}/{msg.ts}")

    def message_args(self, n: Notification) -> dict[str, Any]:
        """What :meth:`send` posts: ``channel``, ``text``, ``blocks``, ``metadata``."""
        text, blocks = build_message(n, buttons=self.config.buttons, links=self._links_for)
        group = _group_key(self.config.channel or "", n)
        meta = {
            "event_type": _METADATA_EVENT,
            "event_payload": {
                "idempotency_key": n.idempotency_key,
                "group": group,
                "status": n.status,
            },
        }
        return {"channel": self.config.channel, "text": text, "blocks": blocks, "metadata": meta}

    def _recover(self, client: WebClient, channel: str, key: str, since: float) -> str:
        """The ts of a message already posted with this idempotency key, or ""."""
        if not _CHANNEL_ID.fullmatch(channel):
            log.warning("slack: channel %s is not an ID; cannot look for a lost post", channel)
            return ""
        try:
            resp = client.conversations_history(
                channel=channel,
                oldest=f"{since - RECOVERY_WINDOW:.6f}",
                include_all_metadata=True,
                limit=200,
            )
        except SlackApiError as exc:
            log.warning("slack: history lookup failed (%s); posting again", _error(exc))
            return ""
        for m in resp.get("messages") or ():
            payload = (m.get("metadata") or {}).get("event_payload") or {}
            if payload.get("idempotency_key") == key:
                return str(m.get("ts", ""))
        return ""

    def _replied(self, client: WebClient, channel: str, ts: str, key: str) -> bool:
        """True if the thread of ``ts`` already holds the reply of this notification."""
        try:
            resp = client.conversations_replies(
                channel=channel, ts=ts, include_all_metadata=True, limit=200
            )
        except SlackApiError as exc:
            log.warning("slack: thread lookup failed (%s); replying again", _error(exc))
            return False
        for m in resp.get("messages") or ():
            payload = (m.get("metadata") or {}).get("event_payload") or {}
            if payload.get("idempotency_key") == key and m.get("ts") != ts:
                return True
        return False

    def _upload_chart(self, client: WebClient, n: Notification, channel: str, ts: str) -> None:
        from .slack_chart import render_chart

        alert = next((a for a in n.alerts if a.status == "firing" and a.window), None)
        if alert is None or alert.window is None or len(alert.window) < 2:
            return
        png = render_chart(alert.window, title=_clip(f"{alert.alertname} {alert.series}", 120))
        client.files_upload_v2(
            channel=channel,
            thread_ts=ts,
            content=png,
            filename=f"{alert.alertname or 'alert'}-{alert.fingerprint}.png",
            title=_clip(f"{alert.alertname}: recent window", 250),
            alt_txt=_clip(f"Chart of {alert.series}: value, expected band, anomalous points", 1000),
        )


# -- messages --------------------------------------------------------------------------


def _log_text(alert: Alert) -> str:
    """Log evidence of an alert (aiops.logs): its template, example lines, log context."""
    parts = []
    for key, title in (
        ("template", "Template"),
        ("examples", "Example lines"),
        ("log_templates", "Log templates"),
    ):
        value = alert.annotations.get(key)
        if value:
            parts.append(f"*{title}*\n```{_clip(value, 900)}```")
    return _clip("\n".join(parts), MAX_SECTION)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\N{HORIZONTAL ELLIPSIS}"


def _num(x: float) -> str:
    if not math.isfinite(x):
        return "n/a"
    return f"{x:.4g}"


def _score(s: float) -> str:
    """The score and what it means: about one normal point in ``1 / (1 - s)`` scores this."""
    if not math.isfinite(s):
        return "n/a"
    if s >= 1.0:
        return "1 (beyond every normal point seen)"
    rarity = 1.0 / max(1.0 - s, 1e-12)
    return f"{s:.6f} (about 1 normal point in {rarity:,.0f})" if rarity >= 2 else f"{s:.6f}"


def _band(alert: Alert) -> str:
    w = alert.window
    if w is None or not len(w) or not (math.isfinite(w.lo[-1]) and math.isfinite(w.hi[-1])):
        return _num(alert.value)
    return f"{_num(alert.value)} (expected {_num(w.lo[-1])} to {_num(w.hi[-1])})"


def _alert_blocks(
    alert: Alert, n: int, *, buttons: bool, links: Sequence[tuple[str, str]]
) -> list[dict[str, Any]]:
    firing = alert.status == "firing"
    severity = alert.labels.get("severity", "")
    fields = [
        f"*Severity*\n{severity or 'none'}",
        f"*Value*\n{_band(alert)}",
        f"*Score*\n{_score(alert.score)}",
        f"*Series*\n`{_clip(alert.series, 300)}`" if alert.series else "*Series*\nn/a",
    ]
    if alert.detector:
        version = f" (model {alert.model_version})" if alert.model_version else ""
        fields.append(f"*Detector*\n{alert.detector}{version}")
    if alert.rule:
        fields.append(f"*Rule*\n{_clip(alert.rule, 300)}")
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": _clip(f, MAX_FIELD)} for f in fields],
        }
    ]
    summary = alert.annotations.get("summary") or alert.annotations.get("description")
    labels = ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
    text = (f"{summary}\n" if summary else "") + f"*Labels* `{labels}`"
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, MAX_SECTION)}})
    logs = _log_text(alert)
    if logs:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": logs}})
    when = to_rfc3339(alert.starts_at)
    if not firing and alert.ends_at is not None:
        when += f" to {to_rfc3339(alert.ends_at)}"
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"{when} | fingerprint {alert.fingerprint}"}],
        }
    )
    elements: list[dict[str, Any]] = []
    if buttons and firing:
        value = json.dumps({"fingerprint": alert.fingerprint, "series": alert.series[:1500]})
        if len(value) > MAX_BUTTON_VALUE:
            value = json.dumps({"fingerprint": alert.fingerprint})
        for action, label, style in _BUTTONS:
            button: dict[str, Any] = {
                "type": "button",
                "text": {"type": "plain_text", "text": label},
                "action_id": action_id(action, n),
                "value": value,
            }
            if style:
                button["style"] = style
            elements.append(button)
    for k, (label, url) in enumerate(links):
        elements.append(
            {
                "type": "button",
                "text": {"type": "plain_text", "text": label},
                "action_id": f"link_{k}_{n}",
                "url": url,
            }
        )
    if elements:
        blocks.append({"type": "actions", "elements": elements})
    return blocks


def build_message(
    notification: Notification,
    *,
    buttons: bool = True,
    links: Any = None,
) -> tuple[str, list[dict[str, Any]]]:
    """The fallback text and Block Kit blocks of one notification.

    ``links(alert)`` gives ``(label, url)`` pairs shown as link buttons. At most
    :data:`MAX_DETAILED_ALERTS` alerts get blocks of their own, and the message keeps
    within Slack's limits (50 blocks, text lengths, unique ``action_id``).

    >>> a = Alert("f1", "firing", {"alertname": "HighLatency", "severity": "page"}, {}, 0.0,
    ...           value=41.5, score=0.9999, series='latency{host="a"}')
    >>> text, blocks = build_message(Notification("ops", [a]))
    >>> text
    '[FIRING] HighLatency latency{host="a"} = 41.5'
    >>> [b["type"] for b in blocks]
    ['header', 'section', 'section', 'context', 'actions']
    """
    alerts = list(notification.alerts)
    firing = [a for a in alerts if a.status == "firing"]
    status = "FIRING" if firing else "RESOLVED"
    names = sorted({a.alertname for a in alerts if a.alertname}) or ["alert"]
    count = f":{len(firing)}" if len(firing) > 1 else ""
    severities = {a.labels.get("severity", "") for a in firing}
    icon = (
        ":white_check_mark:"
        if not firing
        else next(
            (_SEVERITY_ICON[s] for s in ("critical", "page", "warning") if s in severities),
            ":large_orange_circle:",
        )
    )
    title = f"{icon} [{status}{count}] {', '.join(names)}"
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _clip(title, MAX_HEADER), "emoji": True},
        }
    ]
    group = ", ".join(f"{k}={v}" for k, v in sorted(notification.group_labels.items()))
    if group:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": _clip(f"group {group}", 3000)}],
            }
        )
    shown = sorted(alerts, key=lambda a: (a.status != "firing", -_score_key(a)))
    detailed = 0
    for k, alert in enumerate(shown[:MAX_DETAILED_ALERTS]):
        more = _alert_blocks(alert, k, buttons=buttons, links=links(alert) if links else [])
        if k:
            more.insert(0, {"type": "divider"})
        if len(blocks) + len(more) + 1 > MAX_BLOCKS:  # keep room for "and N more"
            break
        blocks.extend(more)
        detailed += 1
    hidden = len(shown) - detailed
    if hidden > 0 and len(blocks) < MAX_BLOCKS:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"and {hidden} more alerts"}],
            }
        )
    lead = shown[0] if shown else None
    text = f"[{status}{count}] {', '.join(names)}"
    if lead is not None and len(alerts) == 1:
        text += f" {lead.series} = {_num(lead.value)}"
    return _clip(text, MAX_TEXT), blocks


def _score_key(a: Alert) -> float:
    return a.score if math.isfinite(a.score) else -1.0


def _resolution_text(n: Notification) -> str:
    ends = [a.ends_at for a in n.alerts if a.ends_at is not None]
    when = f" at {to_rfc3339(max(ends))}" if ends else ""
    names = ", ".join(sorted({a.alertname for a in n.alerts if a.alertname})) or "alert"
    return _clip(f":white_check_mark: Resolved{when}: {names}", MAX_TEXT)


def _group_key(channel: str, n: Notification) -> str:
    """One message per receiver, channel and aggregation group (its group labels).

    As with Alertmanager's groups, every notification of a group holds the group's
    whole state (what fires, what just resolved), so the group's message is updated
    with it; ``group_by: []`` makes the receiver's alerts one group and one message.
    """
    ident = json.dumps(sorted(n.group_labels.items()))
    raw = f"{n.receiver}|{channel}|{ident}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


# -- results ---------------------------------------------------------------------------


def _error(exc: SlackApiError) -> str:
    try:
        return str(exc.response.get("error") or "")
    except Exception:
        return ""


def _retry_after(headers: Mapping[str, Any] | None) -> float | None:
    if not headers:
        return None
    for k, v in headers.items():
        if k.lower() == "retry-after":
            value = v[0] if isinstance(v, list) and v else v
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                return None
            return seconds if math.isfinite(seconds) and seconds >= 0 else None
    return None


def classify_slack_error(exc: SlackApiError, scrub: Any = str) -> RetryAfter | PermanentFailure:
    """A Web API error as a delivery result (429 and transient errors retry)."""
    status = int(getattr(exc.response, "status_code", 0) or 0)
    error = _error(exc) or f"HTTP {status}"
    reason = scrub(f"slack: {error} (HTTP {status})")
    if status == 429 or error == "ratelimited":
        return RetryAfter(reason, _retry_after(getattr(exc.response, "headers", None)))
    if status >= 500 or status == 408 or error in RETRYABLE_ERRORS:
        return RetryAfter(reason)
    return PermanentFailure(reason)


# -- the message store -----------------------------------------------------------------


class _Message:
    __slots__ = ("channel", "pending_key", "pending_since", "state", "ts")

    def __init__(
        self, channel: str, ts: str, state: str, pending_key: str, pending_since: float
    ) -> None:
        self.channel, self.ts, self.state = channel, ts, state
        self.pending_key, self.pending_since = pending_key, pending_since


class _MessageStore:
    """Message ``ts`` per group and the done steps per notification (SQLite, WAL)."""

    SCHEMA_VERSION = 1
    RETENTION = 30 * 86400.0

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(
            path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > self.SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"schema {version} is newer than {self.SCHEMA_VERSION}")
        with self._conn:
            self._conn.executescript(
                """
                CREATE TABLE IF NOT EXISTS messages (
                    grp TEXT PRIMARY KEY, channel TEXT NOT NULL, ts TEXT NOT NULL DEFAULT '',
                    state TEXT NOT NULL, pending_key TEXT NOT NULL DEFAULT '',
                    pending_since REAL NOT NULL DEFAULT 0, updated REAL NOT NULL);
                CREATE TABLE IF NOT EXISTS steps (
                    idempotency_key TEXT NOT NULL, step TEXT NOT NULL, at REAL NOT NULL,
                    PRIMARY KEY (idempotency_key, step));
                """
            )
            self._conn.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")
            cutoff = time.time() - self.RETENTION
            self._conn.execute("DELETE FROM steps WHERE at < ?", (cutoff,))
            self._conn.execute(
                "DELETE FROM messages WHERE updated < ? AND state != 'open'", (cutoff,)
            )

    def close(self) -> None:
        self._conn.close()

    def message(self, group: str) -> _Message | None:
        row = self._conn.execute(
            "SELECT channel, ts, state, pending_key, pending_since FROM messages WHERE grp = ?",
            (group,),
        ).fetchone()
        return None if row is None else _Message(*row)

    def pending(self, group: str, channel: str, key: str) -> None:
        now = time.time()
        with self._conn:
            self._conn.execute(
                "INSERT INTO messages (grp, channel, ts, state, pending_key, pending_since, "
                "updated) VALUES (?, ?, '', 'open', ?, ?, ?) ON CONFLICT (grp) DO UPDATE SET "
                "channel = excluded.channel, ts = '', state = 'open', "
                "pending_key = excluded.pending_key, pending_since = excluded.pending_since, "
                "updated = excluded.updated",
                (group, channel, key, now, now),
            )

    def posted(self, group: str, channel: str, ts: str) -> _Message:
        with self._conn:
            self._conn.execute(
                "UPDATE messages SET channel = ?, ts = ?, state = 'open', pending_key = '', "
                "updated = ? WHERE grp = ?",
                (channel, ts, time.time(), group),
            )
        return _Message(channel, ts, "open", "", 0.0)

    def close_message(self, group: str) -> None:
        with self._conn:
            self._conn.execute(
                "UPDATE messages SET state = 'resolved', updated = ? WHERE grp = ?",
                (time.time(), group),
            )

    def step_done(self, key: str, step: str) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM steps WHERE idempotency_key = ? AND step = ?", (key, step)
        ).fetchone()
        return row is not None

    def mark(self, key: str, step: str) -> None:
        with self._conn:
            self._conn.execute(
                "INSERT OR IGNORE INTO steps (idempotency_key, step, at) VALUES (?, ?, ?)",
                (key, step, time.time()),
            )
