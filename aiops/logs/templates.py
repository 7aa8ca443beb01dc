"""``aiops logs templates``: mine a file of log lines and write each line's template.

Output: ``line,template_id,template``, one row per input line in input order (``line`` is
the 1-based line number). The template is the cluster's final template, after the whole
file is mined, so lines of one group carry one text. A blank line, or a ``log_json``
line that does not decode, gets an empty ``template_id`` and ``template`` and is counted
in the returned summary, so the rows still line up with the input.
"""

from __future__ import annotations

import csv
import importlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiops.logs.mining import LogMiner, MinerSettings

__all__ = ["TemplatesSummary", "mine_file"]

Format = Literal["lines", "log_json"]


@dataclass
class TemplatesSummary:
    """What one run did: lines read, lines mined, templates found, skipped by reason."""

    lines: int = 0
    mined: int = 0
    templates: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def _messages(path: Path, fmt: Format) -> list[tuple[str | None, str]]:
    """Each line's message (None when there is none) and, if none, why."""
    out: list[tuple[str | None, str]] = []
    decoder: Any = None
    if fmt == "log_json":
        # aiops never imports connectors statically (they depend on aiops).
        formats = importlib.import_module("aiops.connectors.formats")
        decoder = formats.create_decoder("log_json")
    with path.open("rb") as fh:
        for raw in fh:
            raw = raw.rstrip(b"\n").rstrip(b"\r")
            if decoder is None:
                text = raw.decode("utf-8", "replace")
                out.append((text, "") if text.strip() else (None, "blank"))
                continue
            if not raw.strip():
                out.append((None, "blank"))
                continue
            decoded = decoder.decode(raw, timestamp=0.0)
            if decoded.logs:
                out.append((decoded.logs[0].message, ""))
            else:
                reason = decoded.rejects[0].reason if decoded.rejects else "no_message"
                out.append((None, reason))
    return out


def mine_file(
    path: Path,
    out: Path,
    *,
    fmt: Format = "lines",
    settings: MinerSettings | None = None,
) -> TemplatesSummary:
    """Mine ``path`` with the daemon's miner and write the CSV to ``out``."""
    miner = LogMiner(settings or MinerSettings())
    messages = _messages(path, fmt)
    summary = TemplatesSummary(lines=len(messages))
    ids: list[int | None] = []
    for message, why in messages:
        if message is None:
            summary.skipped[why] += 1
            ids.append(None)
        else:
            ids.append(miner.add(message).cluster_id)
    summary.mined = summary.lines - sum(summary.skipped.values())
    summary.templates = len({i for i in ids if i is not None})
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["line", "template_id", "template"])
        for n, cid in enumerate(ids, 1):
            if cid is None:
                writer.writerow([n, "", ""])
            else:
                writer.writerow([n, cid, miner.template(cid)])
    return summary
