"""Kafka client settings shared by the Kafka source and the Kafka notifier.

One settings model, :class:`KafkaClientConfig`, holds what every Kafka client needs:
the bootstrap brokers, the client id, time-outs, and security (TLS with CA, certificate
and key files; SASL PLAIN or SCRAM over plaintext or TLS). :func:`client_options` turns
it into kafka-python keyword arguments.

Secrets never sit in YAML: the SASL password and the TLS key passphrase are read from an
environment variable (``sasl_password_env: KAFKA_PASSWORD``) or a file
(``sasl_password_file: /run/secrets/kafka``, surrounding whitespace stripped), and only
when a client connects, so ``aiops check`` validates a config on any machine. Writing
``sasl_password:`` or ``ssl_password:`` is a config error that names the two keys to use.

Security settings must agree: ``sasl_mechanism`` goes with ``security_protocol``
``SASL_PLAINTEXT`` or ``SASL_SSL`` (and needs ``sasl_username`` and a password), TLS
files with ``SSL`` or ``SASL_SSL``.

>>> c = KafkaClientConfig(bootstrap_servers="k1:9092,k2:9092", security_protocol="SASL_SSL",
...                       sasl_mechanism="SCRAM-SHA-512", sasl_username="aiops",
...                       sasl_password_env="KAFKA_PASSWORD", ssl_cafile="/etc/kafka/ca.pem")
>>> c.bootstrap_servers
['k1:9092', 'k2:9092']
>>> KafkaClientConfig(bootstrap_servers="k:9092", sasl_mechanism="PLAIN")
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for KafkaClientConfig
  Value error, sasl_mechanism needs security_protocol SASL_PLAINTEXT or SASL_SSL ...
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from aiops.secrets import SecretError, read_secret
from aiops.timeutil import parse_duration

__all__ = [
    "KafkaClientConfig",
    "Seconds",
    "SecretError",
    "client_options",
    "ms",
    "read_secret",
    "topic_name",
]

# Kafka's own rule for topic names (kafka.common.internals.Topic): legal characters and
# at most 249 of them.
_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")
_LITERAL_SECRETS = ("sasl_password", "ssl_password")
_HOST_PORT = re.compile(r"[^\s:\[\]]+:\d{1,5}|\[[0-9a-fA-F:.]+\]:\d{1,5}")


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f'must be a duration such as "5s", got {value!r}')
    seconds = parse_duration(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"must be a duration greater than 0s, got {value!r}")
    return seconds


#: A positive duration in seconds, written as ``"250ms"``, ``"6s"``, ``"5m"`` or a number
#: of seconds.
Seconds = Annotated[float, BeforeValidator(_seconds)]


def ms(seconds: float) -> int:
    """Seconds as the whole milliseconds kafka-python takes (at least 1)."""
    return max(1, round(seconds * 1000))


def topic_name(name: str) -> str:
    """Check a topic name against Kafka's rules; return it unchanged.

    >>> topic_name("metrics.v1")
    'metrics.v1'
    >>> topic_name("a b")
    Traceback (most recent call last):
    ...
    ValueError: invalid topic name 'a b': use 1-249 of a-z A-Z 0-9 . _ -
    """
    if not _TOPIC.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"invalid topic name {name!r}: use 1-249 of a-z A-Z 0-9 . _ -")
    return name


class KafkaClientConfig(BaseModel):
    """Settings every Kafka client takes: brokers, client id, time-outs, TLS and SASL."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bootstrap_servers: list[str] = Field(
        min_length=1,
        description='Brokers to bootstrap from: a list or a comma-separated "host:port,...".',
    )
    client_id: str = Field(
        default="aiopsd", min_length=1, description="Client id sent to the brokers."
    )
    request_timeout: Seconds = Field(
        default=30.0, description="Time-out of one request to a broker."
    )
    connect_timeout: Seconds = Field(
        default=10.0,
        description="How long a first connection (bootstrap) may take before it is reported "
        "as failed and retried.",
    )
    reconnect_backoff_max: Seconds = Field(
        default=10.0, description="Longest wait between reconnection attempts to a broker."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with SASL_*)."
    )
    sasl_username: str | None = Field(default=None, description="SASL user name.")
    sasl_password_env: str | None = Field(
        default=None, description="Environment variable holding the SASL password."
    )
    sasl_password_file: str | None = Field(
        default=None, description="File holding the SASL password."
    )
    ssl_cafile: str | None = Field(
        default=None, description="CA bundle (PEM) to verify the brokers; default: system CAs."
    )
    ssl_certfile: str | None = Field(
        default=None, description="Client certificate (PEM), for mutual TLS."
    )
    ssl_keyfile: str | None = Field(default=None, description="Client private key (PEM).")
    ssl_password_env: str | None = Field(
        default=None, description="Environment variable holding the key's passphrase."
    )
    ssl_password_file: str | None = Field(
        default=None, description="File holding the key's passphrase."
    )
    ssl_check_hostname: bool = Field(
        default=True, description="Check that a broker's certificate matches its host name."
    )

    # Declared only to reject them with a message that names the keys to use instead;
    # hidden from the keys a config may hold (suggestions, documentation).
    sasl_password: Any = Field(default=None, exclude=True, description="Not allowed.")
    ssl_password: Any = Field(default=None, exclude=True, description="Not allowed.")
    _yaml_hidden: ClassVar[frozenset[str]] = frozenset(_LITERAL_SECRETS)

    @classmethod
    def yaml_keys(cls) -> list[str]:
        """The keys a YAML mapping of these settings may hold."""
        return [n for n in cls.model_fields if n not in cls._yaml_hidden]

    @field_validator(*_LITERAL_SECRETS)
    @classmethod
    def _no_literal_secret(cls, value: Any, info: ValidationInfo) -> None:
        if value is not None:
            key = info.field_name
            msg = f'secret "{key}" must not be written in YAML; use {key}_env or {key}_file'
            raise ValueError(msg)
        return None

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split_servers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [s.strip() for s in value.split(",") if s.strip()]
        return value

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port(cls, value: list[str]) -> list[str]:
        bad = [s for s in value if not _HOST_PORT.fullmatch(s)]
        if bad:
            got = ", ".join(map(repr, bad))
            raise ValueError(f"bootstrap servers must be host:port, got {got}")
        return value

    @model_validator(mode="after")
    def _security_agrees(self) -> KafkaClientConfig:
        problems: list[str] = []
        sasl = self.security_protocol.startswith("SASL_")
        tls = self.security_protocol.endswith("SSL")
        if self.sasl_mechanism is not None and not sasl:
            problems.append(
                "sasl_mechanism needs security_protocol SASL_PLAINTEXT or SASL_SSL "
                f"(it is {self.security_protocol})"
            )
        if sasl:
            if self.sasl_mechanism is None:
                problems.append(f"security_protocol {self.security_protocol} needs sasl_mechanism")
            if not self.sasl_username:
                problems.append("SASL needs sasl_username")
            if (self.sasl_password_env is None) == (self.sasl_password_file is None):
                problems.append("SASL needs exactly one of sasl_password_env, sasl_password_file")
        elif self.sasl_username or self.sasl_password_env or self.sasl_password_file:
            problems.append("sasl_username and sasl_password_* need a SASL security_protocol")
        tls_keys = [
            k
            for k in (
                "ssl_cafile",
                "ssl_certfile",
                "ssl_keyfile",
                "ssl_password_env",
                "ssl_password_file",
            )
            if getattr(self, k) is not None
        ]
        if tls_keys and not tls:
            problems.append(
                f"{', '.join(tls_keys)} need security_protocol SSL or SASL_SSL "
                f"(it is {self.security_protocol})"
            )
        if self.ssl_password_env is not None and self.ssl_password_file is not None:
            problems.append("set at most one of ssl_password_env, ssl_password_file")
        if self.request_timeout <= 0.5:
            # kafka-python requires it above fetch_max_wait_ms (500 ms).
            problems.append("request_timeout must be longer than 500ms")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def client_options(config: KafkaClientConfig) -> dict[str, Any]:
    """kafka-python keyword arguments for ``config``, with secrets resolved now.

    Raises :class:`SecretError` if a referenced secret cannot be read.

    >>> opts = client_options(KafkaClientConfig(bootstrap_servers="k:9092"))
    >>> opts["bootstrap_servers"], opts["security_protocol"], opts["bootstrap_timeout_ms"]
    (['k:9092'], 'PLAINTEXT', 10000)
    """
    opts: dict[str, Any] = {
        "bootstrap_servers": list(config.bootstrap_servers),
        "client_id": config.client_id,
        "request_timeout_ms": ms(config.request_timeout),
        "bootstrap_timeout_ms": ms(config.connect_timeout),
        "reconnect_backoff_max_ms": ms(config.reconnect_backoff_max),
        "security_protocol": config.security_protocol,
    }
    if config.sasl_mechanism is not None:
        opts["sasl_mechanism"] = config.sasl_mechanism
        # kafka-python takes SCRAM credentials under the same two names as PLAIN's.
        opts["sasl_plain_username"] = config.sasl_username
        opts["sasl_plain_password"] = read_secret(
            config.sasl_password_env, config.sasl_password_file, "sasl password"
        )
    if config.security_protocol.endswith("SSL"):
        opts["ssl_check_hostname"] = config.ssl_check_hostname
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(config, key) is not None:
                opts[key] = getattr(config, key)
        passphrase = read_secret(
            config.ssl_password_env, config.ssl_password_file, "ssl key passphrase"
        )
        if passphrase is not None:
            opts["ssl_password"] = passphrase
    return opts
