"""The model registry: numbered, immutable versions of each rule's model, on disk.

Layout under ``<state_dir>/models`` (DESIGN.md section 5)::

    <rule>/index.json          {"rule": ..., "promoted": 3, "pinned": null}
    <rule>/history.jsonl       one event per line, append-only
    <rule>/<version>/meta.json what the version is (:class:`ModelVersion`)
    <rule>/<version>/state     the model's state, in the project's versioned envelope
    <rule>/<version>/continued the state it had learned to when it last stopped running

``<rule>`` is the rule's name (``group/alert``) percent-encoded, so any character is
safe in a directory name; ``index.json`` keeps the name itself.

A version is immutable once written (``meta.json`` and ``state``; MLflow's registry is
the model): what changes is which version a rule runs (``promoted``), whether automatic
promotion may change it (``pinned``), and each change is an event in the history with
why. ``continued`` is the one file written again: the running model keeps learning
online, and when another version takes its place, what it had learned is kept there, so
a rollback to it restores the model as it last ran, not as it was first saved.

Every write is atomic (temp file, fsync, rename, through
:class:`~aiops.state.envelope.FileStateStore`); a version is complete once its
``meta.json`` exists, which is written last. A version whose meta or state is corrupt is
reported (:meth:`ModelRegistry.problems`, a log line) and skipped; it never makes the
registry unreadable.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import aiops
from aiops.state.envelope import (
    FileStateStore,
    SnapshotRefused,
    _library_versions,
    dumps,
    loads,
    seal,
    unseal,
)

__all__ = [
    "MODEL_KIND",
    "TRIGGERS",
    "ModelError",
    "ModelPinned",
    "ModelRegistry",
    "ModelVersion",
    "UnknownModel",
    "VersionUnreadable",
    "rule_dirname",
]

log = logging.getLogger(__name__)

#: The envelope kind of a model version's state blob.
MODEL_KIND = "model"
#: Why a version was made.
TRIGGERS = frozenset({"initial", "scheduled", "drift", "manual", "config-change", "rollback"})
#: Longest encoded rule directory name kept whole (file systems allow 255 bytes).
_MAX_DIRNAME = 200

INDEX_FILE = "index.json"
HISTORY_FILE = "history.jsonl"
META_FILE = "meta.json"
STATE_FILE = "state"
CONTINUED_FILE = "continued"


class ModelError(ValueError):
    """A registry request that cannot be done; the message says why, for an operator."""


class UnknownModel(ModelError):
    """No such rule or version in the registry."""


class VersionUnreadable(ModelError):
    """A version whose meta or state is corrupt, truncated or refused by its envelope."""


class ModelPinned(ModelError):
    """An automatic promotion of a rule that is pinned to another version."""


@dataclass(frozen=True)
class ModelVersion:
    """One version of a rule's model: what ``meta.json`` holds, plus where its state is.

    ``training_window`` is the data time (unix seconds) the model learned on, ``None``
    for a model that has seen nothing; ``points_seen`` counts those points.
    ``rule_file`` and ``rule_file_hash`` say which rule file, as it was then, defined
    the rule. ``rule_hash`` is the rule's model hash
    (:meth:`aiops.pipeline.engine.RuleSpec.model_hash`: detector, effective parameters,
    state format, selector): a state is only loaded into a rule with the same hash.
    ``versions`` holds the package and library versions that wrote it; ``evaluation``
    what the model did on a recent window (score quantiles, hit rate).
    """

    rule: str
    version: int
    parent: int | None
    created: float
    trigger: str
    training_window: tuple[float, float] | None
    points_seen: int
    rule_hash: str
    params: dict[str, Any]
    versions: dict[str, Any]
    evaluation: dict[str, Any]
    note: str = ""
    #: The rule file the rule came from, and the SHA-256 of its bytes when the version
    #: was made (empty for versions made before these were recorded, or in replays).
    rule_file: str = ""
    rule_file_hash: str = ""
    #: The directory holding ``meta.json`` and ``state`` (not written into the meta).
    path: str = field(default="", compare=False)

    def to_json(self) -> dict[str, Any]:
        """The ``meta.json`` document (no path)."""
        doc = asdict(self)
        doc.pop("path")
        if self.training_window is not None:
            doc["training_window"] = list(self.training_window)
        return doc

    @classmethod
    def from_json(cls, doc: Any, *, rule: str, version: int, path: str = "") -> ModelVersion:
        """Check and read a ``meta.json`` document; :class:`VersionUnreadable` if it is bad."""
        where = f"model {rule!r} version {version}"
        if not isinstance(doc, dict):
            raise VersionUnreadable(f"{where}: meta.json is not a JSON object")
        try:
            if doc.get("version") != version:
                raise ValueError(f"it says version {doc.get('version')!r}")
            window = doc.get("training_window")
            if window is not None:
                lo, hi = (float(x) for x in window)
                window = (lo, hi)
            parent = doc.get("parent")
            trigger = str(doc["trigger"])
            if trigger not in TRIGGERS:
                raise ValueError(f"unknown trigger {trigger!r}")
            for key in ("params", "versions", "evaluation"):
                if not isinstance(doc.get(key, {}), dict):
                    raise ValueError(f"{key} is not an object")
            return cls(
                rule=rule,
                version=version,
                parent=None if parent is None else int(parent),
                created=float(doc["created"]),
                trigger=trigger,
                training_window=window,
                points_seen=int(doc.get("points_seen", 0)),
                rule_hash=str(doc.get("rule_hash", "")),
                params=dict(doc.get("params", {})),
                versions=dict(doc.get("versions", {})),
                evaluation=dict(doc.get("evaluation", {})),
                note=str(doc.get("note", "")),
                rule_file=str(doc.get("rule_file", "")),
                rule_file_hash=str(doc.get("rule_file_hash", "")),
                path=path,
            )
        except (KeyError, TypeError, ValueError) as exc:
            detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise VersionUnreadable(f"{where}: meta.json is invalid: {detail}") from None


def rule_dirname(rule: str) -> str:
    """A directory name for ``rule`` that is safe whatever characters it holds.

    Percent-encoding of every byte but letters, digits and ``_-~``; names too long for
    a file system keep a prefix and a hash of the whole.

    >>> rule_dirname("fleet/HighCPU"), rule_dirname(".."), rule_dirname("a b.c")
    ('fleet%2FHighCPU', '%2E%2E', 'a%20b%2Ec')
    """
    import hashlib

    name = quote(rule, safe="-_~").replace(".", "%2E")
    if not name:
        return "%00empty"
    if len(name) > _MAX_DIRNAME:
        digest = hashlib.sha256(rule.encode()).hexdigest()[:16]
        name = f"{name[: _MAX_DIRNAME - 17]}~{digest}"
    return name


class ModelRegistry:
    """Model versions of every rule under ``root`` (``<state_dir>/models``).

    Reads go to the files every time (the CLI, the HTTP listener's threads and the data
    loop may read at once; writes are atomic renames). Writes to one rule's index are
    serialized by a lock in this process and an ``flock`` across processes.
    Nothing is created on disk until something is written.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._store: FileStateStore | None = None
        self._lock = threading.RLock()
        self._reported: set[str] = set()
        self._held: dict[str, int] = {}

    # -- reading ----------------------------------------------------------------------

    def rules(self) -> list[str]:
        """Names of the rules that have a registry entry, sorted."""
        if not self.root.is_dir():
            return []
        out = []
        for d in self.root.iterdir():
            if not d.is_dir() or d.name.startswith("."):
                continue
            index = self._read_index_at(d)
            name = index.get("rule")
            out.append(name if isinstance(name, str) else unquote(d.name))
        return sorted(out)

    def versions(self, rule: str) -> list[ModelVersion]:
        """The readable versions of ``rule``, oldest first; unreadable ones are skipped.

        What was skipped, and why, is in :meth:`problems` (and logged once).
        """
        return self._scan(rule)[0]

    def problems(self, rule: str) -> list[str]:
        """Why versions of ``rule`` were skipped (corrupt meta, missing state)."""
        return self._scan(rule)[1]

    def get(self, rule: str, version: int | None = None) -> ModelVersion:
        """One version's meta; ``None`` is the promoted version.

        :class:`UnknownModel` if there is no such version, :class:`VersionUnreadable`
        if it exists and cannot be read.
        """
        if version is None:
            version = self.promoted(rule)
            if version is None:
                raise UnknownModel(f"model {rule!r} has no promoted version")
        d = self._version_dir(rule, version)
        if not (d / META_FILE).exists():
            raise UnknownModel(self._unknown(rule, version))
        return self._read_meta(rule, version, d)

    def load_state(self, rule: str, version: int) -> Any:
        """The state of a version as it was saved, checked by its envelope.

        :class:`VersionUnreadable` (with the envelope's reason) when the blob is
        missing, corrupt, of an unknown format or fails its signature.
        """
        self.get(rule, version)
        return self._load_blob(rule, version, STATE_FILE)

    def load_continued(self, rule: str, version: int) -> Any | None:
        """What the version had learned when it last stopped running; None if it never did."""
        self.get(rule, version)
        path = self._version_dir(rule, version) / CONTINUED_FILE
        if not path.exists():
            return None
        return self._load_blob(rule, version, CONTINUED_FILE)

    def promoted(self, rule: str) -> int | None:
        """The version ``rule`` runs (or will run at the next start); None if none."""
        value = self._read_index(rule).get("promoted")
        return value if isinstance(value, int) else None

    def pinned(self, rule: str) -> int | None:
        """The version ``rule`` is pinned to; None if it is not pinned."""
        value = self._read_index(rule).get("pinned")
        return value if isinstance(value, int) else None

    def history(self, rule: str) -> list[dict[str, Any]]:
        """The rule's events, oldest first (unreadable lines are skipped and logged)."""
        path = self._rule_dir(rule) / HISTORY_FILE
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []
        out = []
        bad = 0
        for line in lines:
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(doc, dict):
                out.append(doc)
            else:
                bad += 1
        if bad:
            self._report(f"{path}: {bad} unreadable history lines skipped")
        return out

    # -- writing ----------------------------------------------------------------------

    def add(
        self,
        rule: str,
        state: Any,
        *,
        trigger: str,
        parent: int | None,
        **meta: Any,
    ) -> ModelVersion:
        """Store a new version of ``rule``'s model and return its meta; it is not promoted.

        ``state`` is plain data (:func:`aiops.state.envelope.dumps`: dicts, lists, JSON
        values, numpy arrays, bytes). ``meta`` may set ``training_window``,
        ``points_seen``, ``rule_hash``, ``params``, ``versions`` (default: this package's
        and its libraries'), ``evaluation``, ``note``, ``rule_file``, ``rule_file_hash``
        and ``created``.
        """
        if trigger not in TRIGGERS:
            raise ModelError(f"unknown trigger {trigger!r}; one of {', '.join(sorted(TRIGGERS))}")
        allowed = {f for f in ModelVersion.__dataclass_fields__ if f not in ("rule", "version")}
        allowed -= {"parent", "trigger", "path"}
        unknown = sorted(set(meta) - allowed)
        if unknown:
            raise TypeError(f"unknown meta fields: {', '.join(unknown)}")
        blob = seal(dumps(state), kind=MODEL_KIND)
        window = meta.get("training_window")
        with self._lock, self._flock(rule):
            store = self._writer()
            self._ensure_index(rule)
            version = self._allocate(rule)
            mv = ModelVersion(
                rule=rule,
                version=version,
                parent=parent,
                created=float(meta.get("created", time.time())),
                trigger=trigger,
                training_window=None if window is None else (float(window[0]), float(window[1])),
                points_seen=int(meta.get("points_seen", 0)),
                rule_hash=str(meta.get("rule_hash", "")),
                params=dict(meta.get("params", {})),
                versions=dict(meta.get("versions") or _package_versions()),
                evaluation=dict(meta.get("evaluation", {})),
                note=str(meta.get("note", "")),
                rule_file=str(meta.get("rule_file", "")),
                rule_file_hash=str(meta.get("rule_file_hash", "")),
                path=str(self._version_dir(rule, version)),
            )
            prefix = f"{rule_dirname(rule)}/{version}"
            store.save(f"{prefix}/{STATE_FILE}", blob)
            # The meta last: a version is complete once it has one.
            store.save(f"{prefix}/{META_FILE}", _json_bytes(mv.to_json()))
            self._append(
                rule,
                {"event": "added", "version": version, "parent": parent, "trigger": trigger},
            )
        log.info("model %s: version %d added (%s, parent %s)", rule, version, trigger, parent)
        return mv

    def save_continued(self, rule: str, version: int, state: Any) -> None:
        """Keep what ``version`` learned while it ran, for a later rollback to it."""
        self.get(rule, version)
        blob = seal(dumps(state), kind=MODEL_KIND)
        self._writer().save(f"{rule_dirname(rule)}/{version}/{CONTINUED_FILE}", blob)

    def promote(
        self, rule: str, version: int, *, reason: str, automatic: bool = False, **event: Any
    ) -> None:
        """Make ``version`` the one ``rule`` runs, and record why.

        ``automatic=True`` (a retrain, an automatic rollback) raises
        :class:`ModelPinned` when the rule is pinned to another version; an operator's
        promotion is not automatic. ``event`` adds fields to the history event.
        """
        self.get(rule, version)
        with self._lock, self._flock(rule):
            index = self._read_index(rule)
            pinned = index.get("pinned")
            if automatic and isinstance(pinned, int) and pinned != version:
                raise ModelPinned(
                    f"model {rule!r} is pinned to version {pinned}; version {version} "
                    "is not promoted automatically"
                )
            previous = index.get("promoted")
            self._write_index(rule, {**index, "promoted": version})
            self._append(
                rule,
                {
                    **event,
                    "event": str(event.get("event", "promoted")),
                    "version": version,
                    "from": previous,
                    "reason": reason,
                    "automatic": automatic,
                },
            )
        log.info("model %s: version %d promoted (was %s): %s", rule, version, previous, reason)

    def pin(self, rule: str, version: int | None, *, reason: str = "") -> None:
        """Pin ``rule`` to ``version`` (promoting it if it is not), or unpin with None.

        A pinned rule keeps its version: automatic promotions are refused
        (:class:`ModelPinned`) until it is unpinned.
        """
        if version is not None:
            self.get(rule, version)
        elif not self.versions(rule):
            raise UnknownModel(f"model {rule!r} has no versions")
        with self._lock, self._flock(rule):
            index = self._read_index(rule)
            if version is not None and index.get("promoted") != version:
                self.promote(rule, version, reason=reason or f"pinned to version {version}")
                index = self._read_index(rule)
            before = index.get("pinned")
            self._write_index(rule, {**index, "pinned": version})
            event = "pinned" if version is not None else "unpinned"
            self._append(
                rule, {"event": event, "version": version, "from": before, "reason": reason}
            )

    def record(self, rule: str, event: Mapping[str, Any]) -> None:
        """Append an event (a dict with at least ``"event"``) to the rule's history."""
        if not isinstance(event.get("event"), str):
            raise ValueError('a history event needs an "event" name')
        with self._lock:
            self._writer()
            self._ensure_index(rule)
            self._append(rule, dict(event))

    # -- internals --------------------------------------------------------------------

    def _writer(self) -> FileStateStore:
        if self._store is None:
            self._store = FileStateStore(self.root)
        return self._store

    def _rule_dir(self, rule: str) -> Path:
        return self.root / rule_dirname(rule)

    def _version_dir(self, rule: str, version: int) -> Path:
        return self._rule_dir(rule) / str(int(version))

    def _unknown(self, rule: str, version: int) -> str:
        known = [str(v.version) for v in self.versions(rule)]
        if not known:
            return f"model {rule!r} has no versions"
        return f"model {rule!r} has no version {version} (versions: {', '.join(known)})"

    def _scan(self, rule: str) -> tuple[list[ModelVersion], list[str]]:
        d = self._rule_dir(rule)
        if not d.is_dir():
            return [], []
        found, problems = [], []
        numbers = sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit())
        for n in numbers:
            vd = d / str(n)
            try:
                if not (vd / META_FILE).exists():
                    raise VersionUnreadable(
                        f"model {rule!r} version {n}: incomplete (no meta.json; "
                        "a write was interrupted)"
                    )
                mv = self._read_meta(rule, n, vd)
                if not (vd / STATE_FILE).is_file():
                    raise VersionUnreadable(
                        f"model {rule!r} version {n}: its state file is missing"
                    )
                found.append(mv)
            except VersionUnreadable as exc:
                problems.append(str(exc))
                self._report(str(exc))
        return found, problems

    def _read_meta(self, rule: str, version: int, d: Path) -> ModelVersion:
        try:
            doc = json.loads((d / META_FILE).read_bytes())
        except (OSError, ValueError) as exc:
            raise VersionUnreadable(
                f"model {rule!r} version {version}: meta.json unreadable: {exc}"
            ) from None
        return ModelVersion.from_json(doc, rule=rule, version=version, path=str(d))

    def _load_blob(self, rule: str, version: int, name: str) -> Any:
        path = self._version_dir(rule, version) / name
        where = f"model {rule!r} version {version}"
        try:
            _, payload = unseal(path.read_bytes(), kind=MODEL_KIND)
            return loads(payload)
        except FileNotFoundError:
            raise VersionUnreadable(f"{where}: its {name} file is missing") from None
        except SnapshotRefused as exc:
            raise VersionUnreadable(f"{where}: {name} refused: {exc}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise VersionUnreadable(f"{where}: {name} unreadable: {exc}") from None

    def _allocate(self, rule: str) -> int:
        d = self._rule_dir(rule)
        d.mkdir(parents=True, exist_ok=True)
        taken = [int(p.name) for p in d.iterdir() if p.name.isdigit()]
        n = max(taken, default=0) + 1
        while True:  # another process may take a number between the listing and the mkdir
            try:
                (d / str(n)).mkdir()
                return n
            except FileExistsError:
                n += 1

    def _read_index_at(self, d: Path) -> dict[str, Any]:
        path = d / INDEX_FILE
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            self._report(f"{path}: unreadable ({exc}); no version counts as promoted or pinned")
            return {}
        if not isinstance(doc, dict):
            self._report(f"{path}: not a JSON object; no version counts as promoted or pinned")
            return {}
        return doc

    def _read_index(self, rule: str) -> dict[str, Any]:
        return self._read_index_at(self._rule_dir(rule))

    def _ensure_index(self, rule: str) -> None:
        if not (self._rule_dir(rule) / INDEX_FILE).exists():
            self._write_index(rule, {"promoted": None, "pinned": None})

    def _write_index(self, rule: str, index: Mapping[str, Any]) -> None:
        doc = {**index, "rule": rule}
        self._writer().save(f"{rule_dirname(rule)}/{INDEX_FILE}", _json_bytes(doc))

    def _append(self, rule: str, event: dict[str, Any]) -> None:
        event.setdefault("time", time.time())
        line = json.dumps(event, sort_keys=True, default=str) + "\n"
        path = self._rule_dir(rule) / HISTORY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())  # one write: concurrent appenders never interleave
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextmanager
    def _flock(self, rule: str) -> Iterator[None]:
        """The rule's lock across processes; re-entrant (callers hold ``self._lock``)."""
        if self._held.get(rule):
            self._held[rule] += 1
            try:
                yield
            finally:
                self._held[rule] -= 1
            return
        d = self._rule_dir(rule)
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._held[rule] = 1
            yield
        finally:
            self._held.pop(rule, None)
            os.close(fd)  # closing releases the lock

    def _report(self, problem: str) -> None:
        if problem not in self._reported:
            self._reported.add(problem)
            log.error("%s; skipped", problem)


def _package_versions() -> dict[str, Any]:
    from contextlib import suppress
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Any] = {"aiopsd": aiops.__version__, **_library_versions()}
    with suppress(PackageNotFoundError):  # the log rules' miners (the logs extra)
        out["drain3"] = version("drain3")
    return out


def _json_bytes(doc: Any) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode()
