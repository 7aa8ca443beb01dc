"""Console notifier: one readable line per alert of each notification, for a terminal."""

from __future__ import annotations

import sys
from typing import TextIO

from pydantic import BaseModel, ConfigDict, Field

from aiops.alerting.notify import Delivered, DeliveryResult, Notification, Notifier, RetryAfter
from aiops.timeutil import to_rfc3339

__all__ = ["ConsoleNotifier"]

_COLORS = {"firing": "\033[31m", "resolved": "\033[32m"}
_RESET = "\033[0m"


class ConsoleNotifier(Notifier):
    """Writes ``TIME STATUS alertname series score=... value=... summary`` lines.

    >>> import io
    >>> from aiops.alerting.notify import Alert
    >>> out = io.StringIO()
    >>> n = ConsoleNotifier(ConsoleNotifier.Config(color="never"), stream=out)
    >>> a = Alert("f1", "firing", {"alertname": "HighCPU", "host": "a"},
    ...           {"summary": "cpu high"}, starts_at=0.0, value=0.97, score=0.999,
    ...           series='cpu{host="a"}')
    >>> n.send(Notification("console", [a]))
    Delivered(detail='')
    >>> print(out.getvalue(), end="")
    1970-01-01T00:00:00Z FIRING   HighCPU cpu{host="a"} score=0.9990 value=0.97 cpu high
    """

    uses_window = False  # no chart here

    class Config(BaseModel):
        """Settings of one ``console_configs`` entry."""

        model_config = ConfigDict(extra="forbid", frozen=True)

        stream: str = Field("stdout", pattern="^(stdout|stderr)$", description="stdout or stderr.")
        color: str = Field(
            "auto",
            pattern="^(auto|always|never)$",
            description="Colour the status word: auto (when a terminal), always or never.",
        )

    def __init__(self, config: Config, *, stream: TextIO | None = None, **_: object) -> None:
        self.config = config
        self.stream = stream or (sys.stdout if config.stream == "stdout" else sys.stderr)
        isatty = getattr(self.stream, "isatty", lambda: False)()
        self._color = config.color == "always" or (config.color == "auto" and isatty)

    def send(self, notification: Notification) -> DeliveryResult:
        """Print one line per alert in the notification."""
        lines = []
        for a in notification.alerts:
            at = a.starts_at if a.status == "firing" or a.ends_at is None else a.ends_at
            status = f"{a.status.upper():8s}"
            if self._color:
                status = _COLORS[a.status] + status + _RESET
            summary = a.annotations.get("summary", "")
            lines.append(
                f"{to_rfc3339(at)} {status} {a.alertname} {a.series} "
                f"score={a.score:.4f} value={a.value:.4g} {summary}".rstrip()
            )
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except OSError as exc:
            return RetryAfter(f"console write failed: {exc}")
        return Delivered()
