"""The running daemon's side of the model registry: which version each rule runs.

At start (after the checkpoint is loaded, :meth:`ModelLifecycle.start`):

- a rule with no version gets version 1 (trigger ``initial``) from the model it starts
  with (the checkpoint's, or a fresh one);
- a rule whose model hash (detector, effective parameters, state format, selector) is not
  its promoted version's gets a new version (trigger ``config-change``; the engine already
  started its detector fresh) and runs it;
- otherwise the rule runs its promoted version: the checkpoint's state when it continues
  that version (the model keeps learning online between checkpoints), else the version's
  own (its ``continued`` state if it ran before). A version whose state is refused falls
  back to its parent, and so on; with none left the rule starts cold as a new version.

While running, operations come from the HTTP API (:mod:`aiops.models.api`) and run on
the data loop between batches (:meth:`ModelLifecycle.apply`), so a rollback swaps a
rule's detector state without a restart and without racing the scoring. The running
version of each rule is recorded in the checkpoint (``RuleRuntime.model_version``).

While a daemon runs on a state directory it holds an ``flock`` on
``models/.daemon.lock``, which holds its pid and API address; offline ``aiops models``
commands that change something take the same lock, so they refuse (and say where the
daemon listens) while a daemon runs.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from aiops.models.registry import (
    ModelError,
    ModelPinned,
    ModelRegistry,
    ModelVersion,
    UnknownModel,
    VersionUnreadable,
)
from aiops.service.metrics import NULL_METRICS, Metrics

if TYPE_CHECKING:
    from aiops.pipeline.engine import Engine

__all__ = [
    "LOCK_FILE",
    "MODELS_DIR",
    "DaemonRunning",
    "ModelLifecycle",
    "NoModels",
    "daemon_holding",
    "offline_lock",
    "rollback_target",
    "rule_files",
    "wire_models",
]

log = logging.getLogger(__name__)

#: The registry's folder under the state directory.
MODELS_DIR = "models"
#: Held (``flock``) by the daemon running on the state directory.
LOCK_FILE = ".daemon.lock"
#: How long an HTTP request waits for the data loop to carry out an operation.
REQUEST_TIMEOUT = 10.0


class Versioned(Protocol):
    """What the lifecycle needs of a rule's model.

    A metric rule's :class:`~aiops.pipeline.engine.RuleRuntime`, or a log rule of
    :class:`~aiops.logs.rules.LogEngine` (its miners and what it learned on them).
    """

    spec: Any  # .key and .model_hash()
    model_version: int | None
    first_time: float
    data_time: float

    @property
    def points_seen(self) -> int:
        """Points (or lines) learned since the state started."""

    def model_state(self) -> dict[str, Any]:
        """The model as plain data."""

    def load_model_state(self, state: dict[str, Any]) -> None:
        """Run a :meth:`model_state`; ``ValueError`` (nothing changed) if it does not fit."""


def models_of(engine: Any) -> list[Versioned]:
    """Every versioned model of an engine: its metric rules, then its log rules."""
    logs = getattr(engine, "logs", None)
    return [*engine.rules.values(), *(logs.rules.values() if logs is not None else ())]


class DaemonRunning(ModelError):
    """An offline change while a daemon runs on the state directory."""


class NoModels:
    """The null lifecycle: no registry (tests and embeddings that want none)."""

    running: Mapping[str, int | None] = {}

    def start(self, engine: Any) -> None:
        """Nothing to do."""

    def reloaded(self, engine: Any, retired: Any = (), *, loaded: Any = None) -> None:
        """Nothing to do."""

    def apply(self, engine: Any) -> None:
        """Nothing to do."""

    def close(self) -> None:
        """Nothing to do."""


@dataclass
class _Request:
    run: Callable[[Engine], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


def rollback_target(
    registry: ModelRegistry, rule: str, current: int | None, to: int | None
) -> ModelVersion:
    """The version a rollback of ``rule`` from ``current`` goes to, checked.

    ``to`` names it; without, it is the nearest readable ancestor of ``current`` with
    the same model hash (a rollback never crosses a configuration change, whose state
    the rule's detector could not load). :class:`ModelError` says why there is none.
    """
    if current is None:
        raise UnknownModel(f"model {rule!r} runs no version")
    here = registry.get(rule, current)
    if to is not None:
        target = registry.get(rule, to)
        if target.version == current:
            raise ModelError(f"model {rule!r} already runs version {current}")
        if here.rule_hash and target.rule_hash != here.rule_hash:
            raise ModelError(
                f"model {rule!r} version {to} was trained with another detector configuration "
                f"(hash {target.rule_hash}, the rule's is {here.rule_hash}); put the rule's "
                "detector settings back to roll back to it"
            )
        return target
    seen = {current}
    parent = here.parent
    skipped = []
    while parent is not None and parent not in seen:
        seen.add(parent)
        try:
            mv = registry.get(rule, parent)
        except ModelError as exc:
            skipped.append(str(exc))
            break
        if mv.rule_hash != here.rule_hash:
            raise ModelError(
                f"model {rule!r} version {current}'s parent {mv.version} has another detector "
                "configuration; name a version with --to"
            )
        return mv
    detail = f" ({'; '.join(skipped)})" if skipped else ""
    raise ModelError(
        f"model {rule!r} version {current} has no earlier version to roll back to{detail}; "
        "name one with --to"
    )


def daemon_holding(root: Path) -> dict[str, Any] | None:
    """What the daemon holding the registry's lock wrote (pid, url), or None if none runs."""
    path = Path(root) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                doc = json.loads(os.read(fd, 4096) or b"{}")
            except ValueError:
                doc = {}
            return doc if isinstance(doc, dict) else {}
        return None
    finally:
        os.close(fd)


@contextmanager
def offline_lock(root: Path) -> Iterator[None]:
    """Hold the registry's daemon lock for an offline change; :class:`DaemonRunning` if taken."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = daemon_holding(root) or {}
            pid = holder.get("pid", "?")
            url = holder.get("url") or ""
            how = (
                f"use --url {url}" if url else "give the daemon an http.listen address, or stop it"
            )
            raise DaemonRunning(
                f"a daemon (pid {pid}) is running on {root.parent}; offline changes are "
                f"refused while it runs: {how}"
            ) from None
        yield
    finally:
        os.close(fd)


class ModelLifecycle:
    """Keeps each rule's running model and the registry in step (see the module doc).

    ``start``, ``apply`` and the operations run on the data loop's thread;
    :meth:`submit` is how other threads (the HTTP API) ask for an operation, and
    :attr:`running` (replaced whole on each change) is what they may read.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        url: str | Callable[[], str] = "",
        lock_timeout: float = 10.0,
        metrics: Metrics = NULL_METRICS,
    ) -> None:
        self.registry = registry
        self.url = url
        self.lock_timeout = lock_timeout
        self.metrics = metrics
        #: Each rule's file and the SHA-256 of its bytes (:func:`rule_files`), recorded in
        #: the versions made for it; set by :func:`wire_models` and at each reload.
        self.rule_files: Mapping[str, tuple[str, str]] = {}
        #: The version each configured rule runs, by rule key.
        self.running: Mapping[str, int | None] = {}
        #: Operations carried out (rollbacks, pins, swaps) since start.
        self.swaps = 0
        self._requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._lock_fd: int | None = None
        self._engine: Engine | None = None

    # -- daemon hooks ------------------------------------------------------------------

    def start(self, engine: Engine) -> None:
        """After the checkpoint is loaded: every rule runs its promoted version."""
        self._engine = engine
        self._take_lock()
        for rt in models_of(engine):
            try:
                self._start_rule(rt)
            except Exception as exc:  # the registry's trouble with one rule stops nothing
                log.error(
                    "model %s: the registry could not be brought in step (%s: %s); the rule "
                    "runs the model it has",
                    rt.spec.key,
                    type(exc).__name__,
                    exc,
                )
        self._publish(engine)

    def reloaded(
        self, engine: Engine, retired: Iterable[Versioned] = (), *, loaded: Any = None
    ) -> None:
        """After a reload put ``engine`` in place: rules it started fresh get their versions.

        Runtimes kept by the reload go on with their version. A rule changed by the
        reload (its old runtime is among ``retired``, and it ran a version) starts fresh
        as a new version (trigger ``config-change``, parent the version it ran), and what
        the old runtime learned is kept as that version's ``continued`` state, so a
        rollback to it restores the model as it last ran. A new rule is brought in step
        as at a start: version 1, or, when the registry knows the rule (removed and added
        back), its promoted version if its configuration fits. A removed rule's version
        keeps what it learned (``continued``) for that case: a metric rule's runtime or
        a log rule of the log engine that was replaced, among ``retired``. ``loaded`` is the new
        configuration (its rule files' hashes go into the new versions).
        """
        if loaded is not None:
            self.rule_files = rule_files(loaded)
        old = {rt.spec.key: rt for rt in retired}
        self._engine = engine
        running = {rt.spec.key for rt in models_of(engine)}
        for key, gone in old.items():
            if key not in running and gone.model_version is not None:
                self._keep_learned(gone)
        for rt in models_of(engine):
            if rt.model_version is not None:
                continue
            key = rt.spec.key
            try:
                before = old.get(key)
                if before is not None and before.model_version is not None:
                    self._restart_changed(rt, before)
                else:
                    self._start_rule(rt)
            except Exception as exc:  # one rule's registry trouble stops nothing
                log.error(
                    "model %s: the registry could not be brought in step after the reload "
                    "(%s: %s); the rule runs the model it has",
                    key,
                    type(exc).__name__,
                    exc,
                )
        self._publish(engine)

    def _restart_changed(self, rt: Versioned, before: Versioned) -> None:
        key, parent = rt.spec.key, before.model_version
        assert parent is not None
        self._keep_learned(before)
        mv = self.snapshot(
            rt,
            trigger="config-change",
            parent=parent,
            fresh=True,
            note="reload: the rule's definition changed; its model starts fresh",
        )
        self.registry.promote(key, mv.version, reason="a reload changed the rule's definition")
        rt.model_version = mv.version
        self.metrics.model_changed(key, "promoted", True)

    def _keep_learned(self, rt: Versioned) -> None:
        key, version = rt.spec.key, rt.model_version
        assert version is not None
        try:
            self.registry.save_continued(key, version, rt.model_state())
        except (ModelError, OSError) as exc:
            log.warning("model %s: what version %s learned is not kept: %s", key, version, exc)

    def apply(self, engine: Engine) -> None:
        """Carry out the operations other threads asked for (one loop turn's worth)."""
        while True:
            try:
                req = self._requests.get_nowait()
            except queue.Empty:
                return
            try:
                req.result = req.run(engine)
            except Exception as exc:
                req.error = exc
            finally:
                req.done.set()

    def close(self) -> None:
        """Release the state directory's lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def submit(self, run: Callable[[Engine], Any], timeout: float = REQUEST_TIMEOUT) -> Any:
        """Run ``run(engine)`` on the data loop and return its result (from another thread).

        Raises what it raised, or :class:`TimeoutError` when the loop did not get to it
        in ``timeout`` seconds (it still runs later; the caller cannot know the outcome).
        """
        req = _Request(run)
        self._requests.put(req)
        if not req.done.wait(timeout):
            raise TimeoutError(f"the daemon's loop did not answer within {timeout:.0f} s")
        if req.error is not None:
            raise req.error
        return req.result

    # -- operations (data loop thread) ---------------------------------------------------

    def rollback(self, engine: Engine, rule: str, to: int | None = None, *, by: str = "") -> int:
        """Swap ``rule`` to an earlier version (``to``, or its parent); returns it."""
        rt = self._rule(engine, rule)
        pinned = self.registry.pinned(rule)
        current = rt.model_version
        target = rollback_target(self.registry, rule, current, to)
        if pinned is not None and pinned != target.version:
            raise ModelPinned(
                f"model {rule!r} is pinned to version {pinned}; unpin it (aiops models unpin) "
                "or pin the version you want"
            )
        reason = f"rollback from version {current}" + (f" by {by}" if by else "")
        self._swap(rt, target.version, reason=reason, event="rolled back")
        self._publish(engine)
        return target.version

    def pin(self, engine: Engine, rule: str, version: int | None, *, by: str = "") -> int | None:
        """Pin ``rule`` to ``version`` (swapping to it if it runs another), or unpin (None)."""
        rt = self._rule(engine, rule)
        reason = f"by {by}" if by else ""
        if version is not None and version != rt.model_version:
            target = self.registry.get(rule, version)
            if target.rule_hash != rt.spec.model_hash():
                raise ModelError(
                    f"model {rule!r} version {version} was trained with another detector "
                    f"configuration (hash {target.rule_hash}, the rule's is "
                    f"{rt.spec.model_hash()})"
                )
            self._swap(rt, version, reason=f"pinned to version {version} {reason}".strip())
        self.registry.pin(rule, version, reason=reason)
        self._publish(engine)
        return version

    def activate(
        self,
        engine: Engine,
        rule: str,
        version: int,
        *,
        reason: str,
        automatic: bool = False,
        event: str = "promoted",
    ) -> None:
        """Make ``rule`` run ``version`` now: promote it and swap the detector state to it.

        For retraining and automatic rollbacks (``automatic=True`` respects a pin:
        :class:`ModelPinned`). What the outgoing version learned is kept as its
        ``continued`` state.
        """
        rt = self._rule(engine, rule)
        pinned = self.registry.pinned(rule)
        if automatic and pinned is not None and pinned != version:
            raise ModelPinned(
                f"model {rule!r} is pinned to version {pinned}; version {version} "
                "is not promoted automatically"
            )
        self._swap(rt, version, reason=reason, event=event, automatic=automatic)
        self._publish(engine)

    def snapshot(
        self,
        rt: Versioned,
        *,
        trigger: str,
        parent: int | None,
        note: str = "",
        fresh: bool = False,
    ) -> ModelVersion:
        """Store the rule's current model as a new version (not promoted).

        Its training window, points and evaluation are the rule's since its state
        started; ``fresh=True`` says the detector has learned nothing of them yet (it was
        just started afresh, its series and alert states kept).
        """
        first, last = rt.first_time, rt.data_time
        window = (first, last) if math.isfinite(first) and math.isfinite(last) else None
        return self.registry.add(
            rt.spec.key,
            rt.model_state(),
            trigger=trigger,
            parent=parent,
            training_window=None if fresh else window,
            points_seen=0 if fresh else rt.points_seen,
            rule_hash=rt.spec.model_hash(),
            params=describe(rt),
            evaluation={} if fresh else evaluate(rt),
            note=note,
            **self.provenance(rt.spec.key),
        )

    def provenance(self, rule: str) -> dict[str, str]:
        """The ``rule_file`` and ``rule_file_hash`` meta fields of a new version of ``rule``."""
        path, digest = self.rule_files.get(rule, ("", ""))
        return {"rule_file": path, "rule_file_hash": digest}

    def feedback_applied(self, feedback: Any, outcome: str) -> None:
        """Record an operator's answer to an alert (Slack buttons) in the model's history."""
        rule = str(feedback.rule)
        running = self.running.get(rule)
        try:
            self.registry.record(
                rule,
                {
                    "event": "feedback",
                    "action": feedback.action,
                    "series": feedback.series,
                    "user": feedback.user,
                    "fingerprint": feedback.fingerprint,
                    "outcome": outcome,
                    "version": running,
                    "answered": feedback.at,
                },
            )
        except OSError as exc:
            log.error("model %s: feedback not recorded in its history: %s", rule, exc)

    # -- internals --------------------------------------------------------------------

    def _rule(self, engine: Engine, rule: str) -> Versioned:
        rt: Versioned | None = engine.rule(rule)
        if rt is None:
            rt = engine.logs.rules.get(rule)
        if rt is None:
            raise UnknownModel(f"rule {rule!r} is not configured in this daemon")
        return rt

    def _swap(
        self,
        rt: Versioned,
        version: int,
        *,
        reason: str,
        event: str = "promoted",
        automatic: bool = False,
        count: bool = True,
    ) -> None:
        key = rt.spec.key
        try:
            state = self._version_state(key, version)
        except VersionUnreadable:
            self.metrics.model_state_refused(key)
            raise
        rt_hash = rt.spec.model_hash()
        if state.get("model_hash") != rt_hash:
            self.metrics.model_state_refused(key)
            raise ModelError(
                f"model {key!r} version {version} was trained with another detector "
                f"configuration (the rule's is {rt_hash})"
            )
        outgoing = rt.model_version
        if outgoing is not None:
            try:
                self.registry.save_continued(key, outgoing, rt.model_state())
            except ModelError as exc:  # the outgoing version is gone or unreadable
                log.warning("model %s: what version %s learned is not kept: %s", key, outgoing, exc)
        try:
            rt.load_model_state(state)
        except ValueError as exc:
            self.metrics.model_state_refused(key)
            raise ModelError(f"model {key!r} version {version} cannot be loaded: {exc}") from None
        rt.model_version = version
        self.registry.promote(key, version, reason=reason, event=event, automatic=automatic)
        if count:
            self.metrics.model_changed(key, event, automatic)
        self.swaps += 1
        log.warning("model %s: now runs version %d (was %s): %s", key, version, outgoing, reason)

    def _version_state(self, rule: str, version: int) -> dict[str, Any]:
        try:
            state = self.registry.load_continued(rule, version)
        except VersionUnreadable as exc:
            self.metrics.model_state_refused(rule)
            log.error("%s; the version's saved state is used instead", exc)
            state = None
        if state is None:
            state = self.registry.load_state(rule, version)
        if not isinstance(state, dict):
            raise VersionUnreadable(f"model {rule!r} version {version}: its state is not a model")
        return state

    def _start_rule(self, rt: Versioned) -> None:
        key, reg = rt.spec.key, self.registry
        versions = {v.version: v for v in reg.versions(key)}
        for _ in reg.problems(key):  # versions skipped: unreadable meta or state missing
            self.metrics.model_state_refused(key)
        rt_hash = rt.spec.model_hash()
        if not versions:
            if reg.problems(key):
                log.error("model %s: no readable version; the rule starts a new one", key)
            mv = self.snapshot(rt, trigger="initial", parent=None)
            reg.promote(key, mv.version, reason="first start of the rule with a registry")
            rt.model_version = mv.version
            return
        promoted = reg.promoted(key)
        target = versions.get(promoted) if promoted is not None else None
        if target is None:
            target = versions[max(versions)]
            log.error(
                "model %s: promoted version %s is not readable; the newest readable one, "
                "%d, is used",
                key,
                promoted,
                target.version,
            )
        if target.rule_hash != rt_hash:
            mv = self.snapshot(
                rt,
                trigger="config-change",
                parent=target.version,
                fresh=True,
                note=f"detector configuration changed (model hash {target.rule_hash} -> {rt_hash})",
            )
            reg.promote(key, mv.version, reason="the rule's detector configuration changed")
            rt.model_version = mv.version
            self.metrics.model_changed(key, "promoted", True)
            return
        if rt.model_version == target.version:
            if promoted != target.version:
                reg.promote(key, target.version, reason="promoted version unreadable")
            return  # the checkpoint continues the promoted version
        # The checkpoint holds another version (an offline rollback or pin) or none.
        candidates = [target.version]
        parent = target.parent
        while parent is not None and parent in versions and parent not in candidates:
            if versions[parent].rule_hash == rt_hash:
                candidates.append(parent)
            parent = versions[parent].parent
        errors: list[str] = []
        for v in candidates:
            try:
                self._swap(rt, v, reason="restart: the rule runs its promoted version", count=False)
                if v != target.version:
                    log.error(
                        "model %s: version %d refused (%s); running its ancestor %d",
                        key,
                        target.version,
                        "; ".join(errors),
                        v,
                    )
                return
            except ModelError as exc:
                errors.append(str(exc))
        log.error("model %s: no version could be loaded (%s); cold start", key, "; ".join(errors))
        if rt.model_version is None:
            mv = self.snapshot(
                rt,
                trigger="initial",
                parent=target.version,
                note="cold start: " + "; ".join(errors),
            )
            reg.promote(key, mv.version, reason="no stored version could be loaded")
            rt.model_version = mv.version

    def _publish(self, engine: Engine) -> None:
        self.running = {rt.spec.key: rt.model_version for rt in models_of(engine)}
        self.metrics.model_running(self.running)

    def _take_lock(self) -> None:
        root = self.registry.root
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    log.error(
                        "model registry %s is locked by another process (another daemon on "
                        "the same state directory?); running without the lock",
                        root,
                    )
                    return
                time.sleep(0.1)
        url = self.url() if callable(self.url) else self.url
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "url": url}).encode(), 0)
        self._lock_fd = fd


def describe(rt: Versioned) -> dict[str, Any]:
    """The rule's model settings as a version records them (effective parameters)."""
    from aiops.pipeline.engine import effective_params

    own = getattr(rt, "model_params", None)
    if own is not None:  # a log rule: its mining settings too
        return dict(own())

    spec = rt.spec
    return {
        "detector": spec.detector_type,
        "detector_params": effective_params(spec.detector_type, spec.detector_params),
        "threshold": spec.threshold,
        "min_hits": spec.min_hits,
        "for": spec.for_seconds,
        "selector": spec.selector_text,
    }


def evaluate(rt: Versioned) -> dict[str, Any]:
    """What the model scored on the recent window each series keeps (its last points).

    ``hit_rate`` is the fraction of those points at or over the rule's threshold; the
    quantiles are of their calibrated scores. A log rule says what it holds (lines,
    partitions, templates; a count rule its scores too).
    """
    own = getattr(rt, "model_evaluation", None)
    if own is not None:
        return dict(own())
    from aiops.pipeline import ringcodec
    from aiops.pipeline.engine import RuleRuntime

    assert isinstance(rt, RuleRuntime)
    ring, counts = rt.ring_score_codes()
    codes = np.concatenate(
        [ring[k, : int(c)] for k, c in enumerate(counts) if c] or [np.zeros(0, np.float16)]
    )
    scores = ringcodec.decode_scores(codes)
    out: dict[str, Any] = {"series": len(counts), "window_points": len(scores)}
    if len(scores):
        q50, q99 = np.quantile(scores, [0.5, 0.99])
        out.update(
            score_p50=round(float(q50), 6),
            score_p99=round(float(q99), 6),
            score_max=round(float(scores.max()), 6),
            # As the windows mark them (from the codes: every score that reached it).
            hit_rate=round(float(np.mean(ringcodec.reached(codes, rt.spec.threshold))), 6),
        )
    if math.isfinite(rt.data_time):
        out["data_until"] = rt.data_time
    return out


def rule_files(loaded: Any) -> dict[str, tuple[str, str]]:
    """Each rule's file (``group/alert`` -> absolute path) and the SHA-256 of its bytes.

    A file that cannot be read (gone since it was loaded) gets an empty hash.
    """
    import hashlib

    digests: dict[str, str] = {}
    out: dict[str, tuple[str, str]] = {}
    for group in getattr(loaded, "groups", ()):
        path = str(getattr(group, "file", "") or "")
        if path:
            path = str(Path(path).resolve())
        if path and path not in digests:
            try:
                digests[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            except OSError:
                digests[path] = ""
        for rule in group.rules:
            out[f"{group.name}/{rule.alert}"] = (path, digests.get(path, ""))
    return out


def wire_models(daemon: Any, *, state_dir: Path, loaded: Any = None) -> ModelLifecycle:
    """Give a daemon its model lifecycle: registry, HTTP API, feedback in the history.

    ``loaded`` (the configuration) gives the rule files whose hashes versions record.
    """
    from aiops.models.api import mount_models_api

    listener = daemon.listener
    served = hasattr(listener, "mount")

    def url() -> str:
        return str(getattr(listener, "url", "")) if served else ""

    lifecycle = ModelLifecycle(
        ModelRegistry(Path(state_dir) / MODELS_DIR), url=url, metrics=daemon.metrics
    )
    if loaded is not None:
        lifecycle.rule_files = rule_files(loaded)
    daemon.models = lifecycle
    if served:
        mount_models_api(listener, lifecycle)
    if hasattr(daemon.feedback, "on_applied"):
        daemon.feedback.on_applied = lifecycle.feedback_applied
    return lifecycle
