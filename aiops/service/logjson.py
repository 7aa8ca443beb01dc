"""``--log-format json``: one JSON object a line on stderr, for journald, Loki or ELK.

Each line holds ``time`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``,
``message`` (the formatted message, as the text format shows it), the fields a log
call passed with ``extra=``, and ``exc_info`` (the traceback) when there is one. The
formatting is python-json-logger's. Secrets: log messages never carry one (the
daemon logs secret names, never values; ``tests/test_secrets.py``); an ``extra`` field
whose name is a secret setting (``token``, ``password``, ...) is written as
``"<redacted>"`` all the same.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pythonjsonlogger.json import JsonFormatter

__all__ = ["REDACTED", "AiopsJsonFormatter", "json_handler"]

#: What an ``extra`` field named like a secret setting is written as.
REDACTED = "<redacted>"
_SECRET_FIELDS = frozenset(
    {"token", "password", "secret", "api_key", "routing_key", "webhook_url", "authorization"}
)


class AiopsJsonFormatter(JsonFormatter):
    """python-json-logger's formatter with the daemon's field names and UTC times."""

    def __init__(self) -> None:
        super().__init__(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """RFC 3339 in UTC with milliseconds, e.g. ``2026-12-03T08:44:26.355Z``."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        """The fields of one line; secret-named extras redacted."""
        super().add_fields(log_data, record, message_dict)
        for key in list(log_data):
            if key.lower() in _SECRET_FIELDS or key.lower().endswith(("_token", "_password")):
                log_data[key] = REDACTED


def json_handler(stream: Any) -> logging.Handler:
    """A stream handler writing :class:`AiopsJsonFormatter` lines to ``stream``."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(AiopsJsonFormatter())
    return handler
