"""Raw text log lines: one or many per record."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from aiops.pipeline.decoder import Decoded, Decoder, DecoderConfig
from aiops.types import LogRecord

__all__ = ["LogLinesDecoder"]


class LogLinesDecoder(Decoder):
    r"""Decode plain text: every non-blank line of a record is one log record.

    Lines split on ``\n``; a trailing ``\r`` is dropped; blank lines are ignored. Each
    record gets the record's time (the payload has none) and the constant stream
    ``labels``. Invalid UTF-8 is replaced with U+FFFD by default, so a line is never
    lost for one bad byte; ``utf8_errors: reject`` rejects that line as ``bad_utf8``.

    >>> d = LogLinesDecoder(labels={"app": "api"})
    >>> out = d.decode(b"GET /a 200\r\n\nGET /b 500\n", timestamp=5.0)
    >>> [(r.timestamp, r.message, r.labels) for r in out.logs]
    [(5.0, 'GET /a 200', (('app', 'api'),)), (5.0, 'GET /b 500', (('app', 'api'),))]
    """

    type = "log_lines"

    class Config(DecoderConfig):
        """Settings of :class:`LogLinesDecoder`."""

        #: Stream labels of every record.
        labels: dict[str, str] = Field(default_factory=dict)
        #: ``replace`` bad bytes with U+FFFD, or ``reject`` the line.
        utf8_errors: Literal["replace", "reject"] = "replace"

    config: Config

    def decode(
        self, payload: bytes, *, origin: str = "", timestamp: float | None = None
    ) -> Decoded:
        """Decode one record; see the class docstring."""
        out = Decoded(origin=origin)
        ts = self.default_time(timestamp)
        labels = tuple(sorted(self.config.labels.items()))
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            if self.config.utf8_errors == "replace":
                text = payload.decode("utf-8", "replace")
            else:
                self._per_line(payload, out, ts, labels)
                return out
        for line in text.split("\n"):
            if line.endswith("\r"):
                line = line[:-1]
            if line.strip():
                out.logs.append(LogRecord(ts, line, labels))
        return out

    @staticmethod
    def _per_line(
        payload: bytes, out: Decoded, ts: float, labels: tuple[tuple[str, str], ...]
    ) -> None:
        for lineno, raw in enumerate(payload.split(b"\n"), 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                out.reject("bad_utf8", f"line {lineno}: invalid UTF-8 at byte {e.start}", raw)
                continue
            if line.endswith("\r"):
                line = line[:-1]
            if line.strip():
                out.logs.append(LogRecord(ts, line, labels))
