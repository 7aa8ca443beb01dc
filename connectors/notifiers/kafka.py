"""Kafka notifier: each notification as one JSON record on a topic.

The record value is the JSON document that the ``jsonl`` notifier writes per line
(:func:`aiops.alerting.notify.notification_to_json`: receiver, status, idempotency key, group
labels, alerts in Alertmanager's shape), UTF-8, keys sorted. The record key is the
alert fingerprint, so every transition of one alert lands in one partition, in order;
a notification grouping several alerts is keyed by its receiver and group labels
instead (an alert always falls in the same group of a receiver, so its transitions
stay ordered too). Headers: ``aiops-idempotency-key``, ``aiops-receiver``,
``aiops-status`` and ``content-type: application/json``.

Delivery: ``send`` waits up to ``timeout`` for the broker's acknowledgement (``acks``
from all in-sync replicas, idempotent producer) and answers

- :class:`~aiops.alerting.notify.Delivered` with ``topic/partition@offset``;
- :class:`~aiops.alerting.notify.RetryAfter` when the broker cannot be reached, a time-out
  expires, a secret file or variable is missing, or the error is one Kafka calls
  retriable (no leader, not enough replicas, unknown topic while it is being created);
- :class:`~aiops.alerting.notify.PermanentFailure` when retrying cannot help: the record is too
  large (``max_request_size`` or the broker's ``message.max.bytes``), authentication or
  authorization failed, the topic name is invalid.

At least once: a record still buffered when ``send`` gives up (a time-out) may reach the
topic later, and the dispatcher's retry sends it again; consumers deduplicate on
``aiops-idempotency-key``. After a fatal client error the client is replaced on the next
``send``. The client connects on the first ``send`` (the constructor
touches no network, so ``aiops check`` can build it anywhere).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from kafka.errors import (
    AuthorizationError,
    IllegalSaslStateError,
    InvalidTopicError,
    KafkaConfigurationError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    SaslAuthenticationFailedError,
    UnsupportedSaslMechanismError,
)
from pydantic import Field, field_validator

from aiops.alerting.notify import (
    Delivered,
    DeliveryResult,
    Notification,
    Notifier,
    PermanentFailure,
    RetryAfter,
    notification_to_json,
)

from ..kafka_common import KafkaClientConfig, Seconds, SecretError, client_options, ms, topic_name

__all__ = ["KafkaNotifier", "classify_error", "record_key"]

log = logging.getLogger(__name__)

#: Errors that no retry can fix.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    AuthorizationError,
    SaslAuthenticationFailedError,
    UnsupportedSaslMechanismError,
    IllegalSaslStateError,
    InvalidTopicError,
    KafkaConfigurationError,
)
_SIZE_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError)
# Producer linger: alerts are rare and urgent, so send at once.
_LINGER_MS = 0


class KafkaNotifier(Notifier):
    """Writes each notification as one JSON record to a Kafka topic; see the module doc.

    >>> n = KafkaNotifier(KafkaNotifier.Config(bootstrap_servers="localhost:9092",
    ...                                        topic="aiops-alerts"))
    >>> n.config.timeout, n.config.max_request_size
    (10.0, 1048576)
    """

    class Config(KafkaClientConfig):
        """Settings of one ``kafka_configs`` entry (plus the shared client settings)."""

        topic: str = Field(description="Topic the notifications are written to.")
        timeout: Seconds = Field(
            default=10.0, description="Longest wait for the broker to acknowledge a record."
        )
        max_request_size: int = Field(
            default=1_048_576,
            ge=1024,
            description="Largest record the producer sends (bytes); larger is a permanent failure.",
        )

        @field_validator("topic")
        @classmethod
        def _topic(cls, value: str) -> str:
            return topic_name(value)

    def __init__(self, config: Config, *, base_dir: Path | None = None, **_: object) -> None:
        self.config = config
        self._producer: Any = None

    def send(self, notification: Notification) -> DeliveryResult:
        """Produce one record and wait for the acknowledgement; never raise."""
        cfg = self.config
        if self._producer is None:
            try:
                self._producer = self._connect()
            except SecretError as exc:
                return RetryAfter(str(exc))
            except KafkaError as exc:
                return classify_error(exc, f"cannot connect to Kafka at {self._servers}")
        doc = notification_to_json(notification)
        value = json.dumps(doc, sort_keys=True).encode()
        headers = [
            ("aiops-idempotency-key", notification.idempotency_key.encode()),
            ("aiops-receiver", notification.receiver.encode()),
            ("aiops-status", notification.status.encode()),
            ("content-type", b"application/json"),
        ]
        try:
            future = self._producer.send(
                cfg.topic, value=value, key=record_key(notification).encode(), headers=headers
            )
            meta = future.get(timeout=cfg.timeout)
        except KafkaError as exc:
            if not (isinstance(exc, _SIZE_ERRORS) or exc.retriable):
                # A fatal client error: start from a new client on the next send.
                self._drop_producer()
            return classify_error(exc, f"topic {cfg.topic}")
        return Delivered(f"{meta.topic}/{meta.partition}@{meta.offset}")

    def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        try:
            producer.close(timeout=0)
        except Exception as exc:
            log.debug("kafka notifier: closing a failed producer: %s", exc)

    def close(self) -> None:
        """Flush what is buffered (up to ``timeout``) and close the producer."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.flush(timeout=self.config.timeout)
        except KafkaError as exc:
            log.warning("kafka notifier: records to %s not flushed: %s", self.config.topic, exc)
        try:
            producer.close(timeout=self.config.timeout)
        except Exception as exc:  # closing must not fail the daemon's shutdown
            log.warning("kafka notifier: closing the producer: %s", exc)

    @property
    def _servers(self) -> str:
        return ",".join(self.config.bootstrap_servers)

    def _connect(self) -> Any:
        cfg = self.config
        opts = client_options(cfg)
        opts["bootstrap_timeout_ms"] = ms(min(cfg.connect_timeout, cfg.timeout))
        return KafkaProducer(
            acks="all",
            # Not idempotent: the idempotency key header deduplicates, and an idempotent
            # producer can be left unusable by a broker that forgot its producer id.
            # One request in flight keeps one alert's records in order across retries.
            enable_idempotence=False,
            max_in_flight_requests_per_connection=1,
            linger_ms=_LINGER_MS,
            max_block_ms=ms(cfg.timeout),
            max_request_size=cfg.max_request_size,
            # The client requires at least linger + request time-out; send() stops
            # waiting after ``timeout`` in any case.
            delivery_timeout_ms=max(ms(cfg.timeout), ms(cfg.request_timeout) + _LINGER_MS),
            **opts,
        )


def record_key(notification: Notification) -> str:
    """The record key: the alert's fingerprint, or the group's key for several alerts.

    >>> from aiops.alerting.notify import Alert
    >>> a = Alert("f00d", "firing", {"alertname": "X"}, {}, 0.0)
    >>> record_key(Notification("ops", [a]))
    'f00d'
    """
    fingerprints = {a.fingerprint for a in notification.alerts}
    if len(fingerprints) == 1:
        return next(iter(fingerprints))
    group = json.dumps([notification.receiver, dict(notification.group_labels)], sort_keys=True)
    return hashlib.sha256(group.encode()).hexdigest()[:16]


def classify_error(exc: BaseException, where: str) -> RetryAfter | PermanentFailure:
    """A Kafka error as a delivery result: permanent for size and auth, else retry.

    >>> classify_error(MessageSizeTooLargeError("too big"), "topic t")
    PermanentFailure(reason='topic t: [Error 10] MessageSizeTooLargeError: too big')
    >>> classify_error(TimeoutError("no answer"), "topic t")
    RetryAfter(reason='topic t: TimeoutError: no answer', seconds=None)
    """
    text = str(exc)
    name = type(exc).__name__
    reason = f"{where}: {text}" if name in text else f"{where}: {name}: {text}"
    if isinstance(exc, PERMANENT_ERRORS):
        return PermanentFailure(reason)
    return RetryAfter(reason)
