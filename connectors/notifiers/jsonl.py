"""JSONL file notifier: one JSON object per notification, appended and flushed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ConfigDict, Field

from aiops.alerting.notify import (
    Delivered,
    DeliveryResult,
    Notification,
    Notifier,
    RetryAfter,
    notification_to_json,
)

__all__ = ["JsonlNotifier"]


class JsonlNotifier(Notifier):
    """Appends each notification as one JSON line to a file, fsync'd when asked.

    The line holds the receiver, the status, the idempotency key and the alerts in
    Alertmanager's JSON shape, so the file can be replayed into other tools. A relative
    ``path`` is resolved against ``base_dir`` (the daemon's state directory).
    """

    class Config(BaseModel):
        """Settings of one ``jsonl_configs`` entry."""

        model_config = ConfigDict(extra="forbid", frozen=True)

        path: str = Field(description="File to append to; relative to the state directory.")
        fsync: bool = Field(False, description="fsync after every line (durable, slower).")

    def __init__(self, config: Config, *, base_dir: Path | None = None, **_: object) -> None:
        self.config = config
        path = Path(config.path)
        self.path = path if path.is_absolute() or base_dir is None else base_dir / path
        self._file: IO[str] | None = None

    def send(self, notification: Notification) -> DeliveryResult:
        """Append one line; a failed write is worth retrying."""
        record = notification_to_json(notification)
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")
            self._file.write(json.dumps(record, sort_keys=True) + "\n")
            self._file.flush()
            if self.config.fsync:
                os.fsync(self._file.fileno())
        except OSError as exc:
            self._file = None
            return RetryAfter(f"cannot append to {self.path}: {exc}")
        return Delivered()

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None
