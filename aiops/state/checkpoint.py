"""Checkpoints: detector states, registries, alert states and source positions, as one unit.

A checkpoint is written atomically through a :class:`~aiops.state.envelope.StateStore` inside a
versioned envelope. The previous checkpoint is kept as a fallback: if the newest one is
refused (corrupt, unknown version), the daemon says so loudly and loads the one before,
so it replays a little more rather than starting from nothing. A refused blob is kept
aside under ``refused/`` for inspection, never deleted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiops.state.envelope import SnapshotRefused, StateStore, dumps, loads, seal, unseal

__all__ = ["Checkpoint", "Checkpointer"]

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "checkpoint"


@dataclass
class Checkpoint:
    """What one checkpoint holds."""

    rules: dict[str, Any]
    sources: dict[str, Any]
    router: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    sequence: int = 0


class Checkpointer:
    """Saves and loads :class:`Checkpoint` objects under ``name`` and ``name.prev``."""

    def __init__(self, store: StateStore, name: str = "checkpoint") -> None:
        self.store = store
        self.name = name
        self.refused = 0
        self.saved = 0

    def save(self, checkpoint: Checkpoint) -> int:
        """Write a checkpoint atomically, keeping the previous one; returns its size."""
        payload = dumps(
            {
                "rules": checkpoint.rules,
                "sources": checkpoint.sources,
                "router": checkpoint.router,
                "created": checkpoint.created,
                "sequence": checkpoint.sequence,
            }
        )
        blob = seal(payload, kind=CHECKPOINT_KIND)
        # A crash between the two steps leaves only .prev, which load() falls back to.
        self.store.rename(self.name, f"{self.name}.prev")
        self.store.save(self.name, blob)
        self.saved += 1
        return len(blob)

    def load(self) -> Checkpoint | None:
        """The newest loadable checkpoint, or None if there is none.

        Whatever cannot be loaded (unreadable, refused by its envelope, or content that is
        not a checkpoint) is counted in :attr:`refused`, logged, kept aside under
        ``refused/`` when it could be read, and the previous checkpoint is tried.
        """
        for name in (self.name, f"{self.name}.prev"):
            try:
                blob = self.store.load(name)
            except OSError as exc:  # a directory in its place, no permission, a bad disk
                self.refused += 1
                log.error("checkpoint %r cannot be read and is skipped: %s", name, exc)
                continue
            if blob is None:
                continue
            try:
                _, payload = unseal(blob, kind=CHECKPOINT_KIND)
                doc = loads(payload)
                if not isinstance(doc, dict) or not all(
                    isinstance(doc.get(k), dict) for k in ("rules", "sources")
                ):
                    raise ValueError("it holds no rules and sources")
                return Checkpoint(
                    rules=doc["rules"],
                    sources=doc["sources"],
                    router=dict(doc.get("router") or {}),
                    created=float(doc["created"]),
                    sequence=int(doc["sequence"]),
                )
            except (SnapshotRefused, ValueError, KeyError, TypeError, OSError) as exc:
                self.refused += 1
                aside = f"refused/{name}.{int(time.time())}"
                self.store.save(aside, blob)
                log.error("checkpoint %r refused and kept as %r: %s", name, aside, exc)
        return None
