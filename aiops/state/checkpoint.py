"""Checkpoints: detector states, registries, alert states and source positions, as one unit.

The daemon writes a checkpoint as a *generation*: one state file per rule (and one for
the log rules), :mod:`aiops.state.rulestate`, written from a :class:`CheckpointSnapshot`
the data loop took (on any thread: :meth:`Checkpointer.write`), then a small manifest
in a versioned envelope that names each rule's file with its size and check value (its
``crc32``: see :mod:`aiops.state.rulestate`), and holds the source positions and the
router's state. The manifest is swapped in last (the
previous one kept as ``.prev``), so a checkpoint is one atomic unit: a crash before the
swap leaves the previous generation in force, and files no manifest names are deleted
after the next swap.

The previous generation is the fallback: if the newest is refused (corrupt, unknown
version, a manifest that passes its hash but holds bad content, a rule file missing,
torn or of another checksum), the daemon says so loudly and loads the one before, so it
replays a little more rather than starting from nothing. A refused manifest is kept
aside under ``refused/`` for inspection, never deleted.

Checkpoints of the earlier format (one sealed blob of everything, ``name`` and
``name.prev``, :meth:`Checkpointer.save`) still load when no generation does; they are
deleted once two generations of the new format are written.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import IO, Any

from aiops.state.envelope import SnapshotRefused, StateStore, dumps, loads, seal, unseal
from aiops.state.rulestate import StateSnapshot, read_state

__all__ = ["Checkpoint", "CheckpointSnapshot", "Checkpointer"]

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "checkpoint"
MANIFEST_KIND = "checkpoint-manifest"
#: The manifest's own format (inside the envelope).
MANIFEST_FORMAT = 2


@dataclass
class Checkpoint:
    """What one checkpoint holds."""

    rules: dict[str, Any]
    sources: dict[str, Any]
    router: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    sequence: int = 0


@dataclass
class CheckpointSnapshot:
    """What the data loop hands to :meth:`Checkpointer.write`: each rule's state, positions."""

    rules: dict[str, StateSnapshot]
    sources: dict[str, Any]
    router: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    sequence: int = 0

    def release(self) -> None:
        """Give up the rules' live arrays (a write that will not happen, or has failed)."""
        for snap in self.rules.values():
            snap.release()


class Checkpointer:
    """Writes generations (:meth:`write`) and loads the newest good one (:meth:`load`).

    Names used in the store: ``name.manifest`` and ``name.manifest.prev`` (the two
    newest generations' manifests), ``name.d/<generation>/<n>.state`` (their files),
    and, of the earlier format, ``name`` and ``name.prev``.
    """

    def __init__(self, store: StateStore, name: str = "checkpoint") -> None:
        self.store = store
        self.name = name
        self.refused = 0
        self.saved = 0
        self.manifest = f"{name}.manifest"
        self.files = f"{name}.d/"

    def write(self, snapshot: CheckpointSnapshot) -> int:
        """Write one generation and swap its manifest in; returns the bytes written.

        Safe to call from a thread other than the data loop's (the snapshot's live arrays
        are copied chunk by chunk, see :class:`~aiops.state.rulestate.StateSnapshot`).
        Raises ``OSError`` when the store cannot take it; the generation in force then
        stays in force. The snapshot's live arrays are released either way.
        """
        try:
            return self._write(snapshot)
        finally:
            snapshot.release()

    def _write(self, snapshot: CheckpointSnapshot) -> int:
        gen = f"{self.files}{snapshot.sequence:012d}-{int(snapshot.created * 1000)}"
        rules: dict[str, dict[str, Any]] = {}
        total = 0
        for i, (key, snap) in enumerate(snapshot.rules.items()):
            file = f"{gen}/{i}.state"

            def write(fh: IO[bytes], snap: StateSnapshot = snap) -> tuple[int, int]:
                return snap.write(fh)

            size, crc = self.store.save_stream(file, write)
            rules[key] = {"file": file, "size": size, "crc32": crc}
            total += size
        payload = dumps(
            {
                "format": MANIFEST_FORMAT,
                "rules": rules,
                "sources": snapshot.sources,
                "router": snapshot.router,
                "created": snapshot.created,
                "sequence": snapshot.sequence,
            }
        )
        blob = seal(payload, kind=MANIFEST_KIND)
        self._swap_in(self.manifest, blob)
        self._collect()
        return total + len(blob)

    def _swap_in(self, name: str, blob: bytes) -> None:
        """Make ``blob`` the file ``name``, the one it replaces kept as ``name.prev``."""
        # A crash between the two steps leaves only .prev, which load() falls back to.
        self.store.rename(name, f"{name}.prev")
        self.store.save(name, blob)
        self.saved += 1

    def _collect(self) -> None:
        """Delete the files no manifest names (failed or superseded generations)."""
        keep: set[str] = set()
        generations = 0
        for name in (self.manifest, f"{self.manifest}.prev"):
            try:
                doc = self._manifest(name)
            except (OSError, SnapshotRefused, ValueError, KeyError, TypeError):
                continue
            if doc is not None:
                generations += 1
                keep.update(r["file"] for r in doc["rules"].values())
        for name in self.store.names(self.files):
            if name not in keep:
                self.store.delete(name)
        if generations == 2:  # two good generations: the earlier format is not needed
            self.store.delete(self.name)
            self.store.delete(f"{self.name}.prev")

    def _manifest(self, name: str) -> dict[str, Any] | None:
        """The checked manifest document under ``name``, or None if there is none."""
        blob = self.store.load(name)
        if blob is None:
            return None
        _, payload = unseal(blob, kind=MANIFEST_KIND)
        doc = loads(payload)
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            raise ValueError("it is not a checkpoint manifest of this release")
        if not all(isinstance(doc.get(k), dict) for k in ("rules", "sources", "router")):
            raise ValueError("it holds no rules, sources and router")
        for key, ref in doc["rules"].items():
            if not (
                isinstance(ref, dict)
                and isinstance(ref.get("file"), str)
                and str(ref["file"]).startswith(self.files)
                and all(isinstance(ref.get(k), int) for k in ("size", "crc32"))
            ):
                raise ValueError(f"its entry for rule {key!r} is not a file reference")
        float(doc["created"])
        int(doc["sequence"])
        return doc

    def _load_generation(self, name: str) -> Checkpoint | None:
        doc = self._manifest(name)
        if doc is None:
            return None
        rules: dict[str, Any] = {}
        for key, ref in doc["rules"].items():
            fh = self.store.open(ref["file"])
            if fh is None:
                raise ValueError(f"the state file of rule {key!r} is missing")
            with fh:
                rules[key] = read_state(fh, size=ref["size"], crc32=ref["crc32"])
        return Checkpoint(
            rules=rules,
            sources=doc["sources"],
            router=dict(doc["router"]),
            created=float(doc["created"]),
            sequence=int(doc["sequence"]),
        )

    def save(self, checkpoint: Checkpoint) -> int:
        """Write a checkpoint of the earlier format (one blob), keeping the previous one.

        Returns its size. The daemon writes generations (:meth:`write`); this stays for
        tools and tests that make a checkpoint of the earlier format.
        """
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
        self._swap_in(self.name, blob)
        return len(blob)

    def load(self) -> Checkpoint | None:
        """The newest loadable checkpoint, or None if there is none.

        Generations first (the newest, then the previous), then checkpoints of the
        earlier format. Whatever cannot be loaded (unreadable, refused by its envelope,
        content that is not a checkpoint, a rule file missing or damaged) is counted in
        :attr:`refused`, logged, kept aside under ``refused/`` when it could be read, and
        the previous checkpoint is tried.
        """
        for name in (self.manifest, f"{self.manifest}.prev"):
            try:
                loaded = self._load_generation(name)
            except (SnapshotRefused, ValueError, KeyError, TypeError, OSError) as exc:
                self.refused += 1
                self._keep_aside(name, exc)
                continue
            if loaded is not None:
                return loaded
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

    def _keep_aside(self, name: str, exc: Exception) -> None:
        try:
            blob = self.store.load(name)
        except OSError:
            blob = None
        if blob is None:
            log.error("checkpoint %r cannot be read and is skipped: %s", name, exc)
            return
        aside = f"refused/{name}.{int(time.time())}"
        try:
            self.store.save(aside, blob)
        except OSError as err:
            log.error("checkpoint %r refused (%s); keeping it aside failed: %s", name, exc, err)
            return
        log.error("checkpoint %r refused and kept as %r: %s", name, aside, exc)
