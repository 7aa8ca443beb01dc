"""What a rule's retraining carries over a clean restart: history ring, watch, drift checks.

At a clean stop (:meth:`aiops.models.retrain.Retraining.close`, after the final
checkpoint) each retrainer writes ``<registry>/<rule>/retrain.carry``: the rule's
history ring (series by key, so rows reused for other series meanwhile do not matter),
when a promotion's watch is under way the previous model's state and the watch's
counts, and the drift checks' state (:meth:`aiops.models.drift.DriftMonitor.state_dict`:
the input check's baseline and river's detectors, whose pickles are signed; without a
signing key they are not carried). The next start reads it back when the rule's
retrainer is made, and deletes it, so a file is never read twice (a crash later cannot
bring back an old one).

The file is a versioned envelope (:func:`aiops.state.envelope.seal`) of plain arrays and
JSON (:func:`aiops.state.envelope.dumps`, no pickle); a detector state that holds river
models carries them signed (:mod:`aiops.state.signing`) as in checkpoints. A file that
is refused (bad hash, unknown format), of other ``retrain:`` / ``drift:`` settings or
of another model, is logged and skipped: the rule starts with an empty ring, as after a
crash. Points of the ring newer than the rule's restored data time are dropped (the
sources replay them from the checkpoint's positions). A watch is restored only while the
rule runs the version it watches, and a watch or drift checks only with a series list
that continues the saved one (their state is by series index); drift state whose
signature does not verify is refused before anything is unpickled.

Not carried: a retrain in training or in shadow (the next trigger retrains; the rule
runs its promoted version meanwhile). Drift checks not carried learn a reference afresh
(river's grace period, a season of baseline for the input check) before they can
report: a restart then delays a detection, it does not cause one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aiops.state.envelope import dumps, loads, seal, unseal

if TYPE_CHECKING:
    from aiops.models.retrain import Retrainer
    from aiops.pipeline.engine import RuleRuntime

__all__ = ["CARRY_FILE", "CARRY_FORMAT", "CARRY_KIND", "restore", "save", "settings_hash"]

log = logging.getLogger(__name__)

#: The file in the rule's registry folder.
CARRY_FILE = "retrain.carry"
#: The envelope's kind.
CARRY_KIND = "aiops-retrain-carry"
#: Version of the document inside; another one is refused.
CARRY_FORMAT = 1


def settings_hash(r: Retrainer) -> str:
    """A hash of what shapes a retrainer's state: its ``retrain:``/``drift:`` and threshold."""
    doc = {
        "retrain": None if r.retrain is None else r.retrain.model_dump(mode="json"),
        "drift": None if r.drift_config is None else r.drift_config.model_dump(mode="json"),
        "threshold": r.threshold,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def save(path: Path, r: Retrainer, rt: RuleRuntime) -> bool:
    """Write the retrainer's ring and watch to ``path`` (atomically); False if nothing to."""
    ring = None
    if r.history is not None and len(r.history):
        idx, ts, vs = r.history.since_mark(0)
        ring = {"idx": idx, "t": ts, "v": vs}
    watch = None
    w = r._watch
    if w is not None and w.version is not None and w.version == rt.model_version:
        watch = {
            "previous_version": w.previous_version,
            "version": w.version,
            "start": w.counts.start,
            "points": w.counts.points,
            "hits_current": w.counts.hits_current,
            "hits_other": w.counts.hits_other,
            "detector": w.previous.state_dict(),
        }
    drift = None
    if r.drift is not None:
        from aiops.state.signing import SigningKeyMissing

        try:
            drift = r.drift.state_dict()
        except SigningKeyMissing as exc:
            log.info("rule %s: drift checks not carried over (%s)", r.rule, exc)
    if ring is None and watch is None and drift is None:
        return False
    doc = {
        "format": CARRY_FORMAT,
        "rule": r.rule,
        "settings": settings_hash(r),
        "model_hash": rt.spec.model_hash(),
        "data_time": rt.data_time,
        "keys": [str(k) for k in rt.registry.keys],
        "ring": ring,
        "watch": watch,
        "drift": drift,
    }
    blob = seal(dumps(doc), kind=CARRY_KIND)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return True


def restore(path: Path, r: Retrainer, rt: RuleRuntime) -> str:
    """Read ``path`` back into a new retrainer of ``rt`` and delete it; what was restored."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return ""
    try:
        path.unlink()
    except OSError as exc:
        log.error("rule %s: %s could not be removed (%s); it is not read", r.rule, path, exc)
        return ""
    try:
        _, payload = unseal(blob, kind=CARRY_KIND)
        doc = loads(payload)
        if not isinstance(doc, dict) or doc.get("format") != CARRY_FORMAT:
            raise ValueError(
                f"unknown format {doc.get('format') if isinstance(doc, dict) else '?'}"
            )
    except Exception as exc:  # refused: the rule starts with an empty ring
        log.error("rule %s: retraining state in %s refused: %s", r.rule, path, exc)
        return ""
    if doc.get("settings") != settings_hash(r):
        log.info("rule %s: retrain:/drift: settings changed; the saved ring is not used", r.rule)
        return ""
    index = {str(k): i for i, k in enumerate(rt.registry.keys)}
    saved_keys = [str(k) for k in doc.get("keys", [])]
    done = []
    ring = doc.get("ring")
    if ring is not None and r.history is not None:
        local = np.array([index.get(k, -1) for k in saved_keys] or [-1], dtype=np.int64)
        idx = np.asarray(ring["idx"], dtype=np.int64)
        ts = np.asarray(ring["t"], dtype=np.float64)
        vs = np.asarray(ring["v"], dtype=np.float64)
        ok = (idx >= 0) & (idx < len(saved_keys))
        mapped = np.where(ok, local[np.where(ok, idx, 0)], -1)
        until = rt.data_time if math.isfinite(rt.data_time) else -math.inf
        keep = (mapped >= 0) & (ts <= until)
        r.history.append(mapped[keep], ts[keep], vs[keep])
        done.append(f"{int(keep.sum()):,} history points")
    drift = doc.get("drift")
    if drift is not None and r.drift_config is not None:
        why = _drift_unfit(rt, saved_keys)
        if not why:
            try:
                _resume_drift(r, rt, drift)
                done.append("the drift checks")
            except Exception as exc:  # refused (signature, shape): the checks start afresh
                why = f"{type(exc).__name__}: {exc}"
        if why:
            log.info("rule %s: the drift checks start afresh: %s", r.rule, why)
    watch = doc.get("watch")
    if watch is not None:
        why = _watch_unfit(watch, doc, rt, saved_keys)
        if why:
            log.info("rule %s: the watch under way at the stop is not resumed: %s", r.rule, why)
        else:
            _resume_watch(r, rt, watch)
            done.append(f"the watch of version {watch['version']}")
    return " and ".join(done)


def _watch_unfit(
    watch: dict[str, Any], doc: dict[str, Any], rt: RuleRuntime, saved_keys: list[str]
) -> str:
    if doc.get("model_hash") != rt.spec.model_hash():
        return "the rule's detector configuration changed"
    if watch.get("version") != rt.model_version:
        return f"the rule runs version {rt.model_version}, not {watch.get('version')}"
    mine = [str(k) for k in rt.registry.keys]
    if mine[: len(saved_keys)] != saved_keys:
        return "the rule's series list does not continue the saved one"
    return ""


def _drift_unfit(rt: RuleRuntime, saved_keys: list[str]) -> str:
    mine = [str(k) for k in rt.registry.keys]
    if mine[: len(saved_keys)] != saved_keys:
        return "the rule's series list does not continue the saved one"
    return ""


def _resume_drift(r: Retrainer, rt: RuleRuntime, state: dict[str, Any]) -> None:
    from aiops.models.drift import DriftMonitor

    assert r.drift_config is not None
    monitor = DriftMonitor(r.rule, r.drift_config, threshold=r.threshold, keys=rt.registry.keys)
    monitor.load_state_dict(state)
    r.drift = monitor


def _resume_watch(r: Retrainer, rt: RuleRuntime, watch: dict[str, Any]) -> None:
    from aiops.models.retrain import _Counts, _Watch
    from aiops.registry import DETECTORS

    previous = DETECTORS.create(rt.spec.detector_type, **rt._detector_params())
    previous.load_state_dict(watch["detector"])
    previous.bind_series(rt.registry.keys)
    counts = _Counts(
        start=float(watch["start"]),
        points=int(watch["points"]),
        hits_current=int(watch["hits_current"]),
        hits_other=int(watch["hits_other"]),
    )
    pv = watch.get("previous_version")
    r._watch = _Watch(
        previous,
        None if pv is None else int(pv),
        int(watch["version"]),
        counts,
        len(rt.registry),
    )
