"""A daemon's checkpoint edited on disk, as an attacker with write access to the state
directory would: the next ``aiops run`` runs none of it.

The attacker rewrites the river rule's state file with a pickle that creates a file when
loaded and makes every unkeyed check pass again (the file's CRC-32 and size in the
manifest, the manifest envelope's SHA-256). Only the key-based signature of the pickles
(or, for the last case, the envelope's format version) stands in the way.
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tamper import TAMPERINGS, tamper_river_models

from aiops.config import load_config
from aiops.service.app import build_daemon
from aiops.service.daemon import Daemon
from aiops.state.checkpoint import MANIFEST_KIND
from aiops.state.envelope import ENVELOPE_FORMAT, FileStateStore, dumps, loads, seal, unseal
from aiops.state.rulestate import KeysRef, StateSnapshot, read_state
from aiops.types import SeriesKey

RIVER, EWMA = "g/River", "g/Ewma"
MANIFEST = "checkpoint.manifest"


def _config(tmp: Path) -> Path:
    rng = np.random.default_rng(4)
    rows = "".join(f"{60 * i},{50 + rng.normal():.4f}\n" for i in range(300))
    (tmp / "in.csv").write_text("timestamp,value\n" + rows)
    river = {"type": "river", "params": {"model": "HalfSpaceTrees"}}
    rules = [
        {"alert": "River", "source": "f", "selector": "value", "detector": river},
        {"alert": "Ewma", "source": "f", "selector": "value", "detector": {"type": "ewma_z"}},
    ]
    (tmp / "rules.yaml").write_text(json.dumps({"groups": [{"name": "g", "rules": rules}]}))
    receivers = [{"name": "file", "jsonl_configs": [{"path": "alerts.jsonl"}]}]
    alerting = {"route": {"receiver": "file"}, "receivers": receivers}
    (tmp / "alerting.yaml").write_text(json.dumps(alerting))
    config = {
        "sources": {"f": {"type": "file", "path": str(tmp / "in.csv"), "batch_size": 50}},
        "state": {"dir": "state", "checkpoint_interval": "1h"},
        "rule_files": ["rules.yaml"],
        "alerting_file": "alerting.yaml",
    }
    (tmp / "aiops.yaml").write_text(json.dumps(config))
    return tmp / "aiops.yaml"


def _daemon(config: Path) -> Daemon:
    loaded = load_config(config)
    return build_daemon(loaded, state_dir=loaded.daemon.state.dir)


def _as_written(x: Any) -> Any:
    """A state as read back, ready to write again (its series key lists by reference)."""
    if isinstance(x, dict):
        return {k: _as_written(v) for k, v in x.items()}
    if isinstance(x, list):
        if x and all(isinstance(k, SeriesKey) for k in x):
            return KeysRef(x)
        return [_as_written(v) for v in x]
    return x


def _manifest(store: FileStateStore) -> dict[str, Any]:
    blob = store.load(MANIFEST)
    assert blob is not None
    _, payload = unseal(blob, kind=MANIFEST_KIND)
    doc: dict[str, Any] = loads(payload)
    return doc


@pytest.mark.parametrize("tamper", TAMPERINGS)
def test_a_checkpoint_edited_on_disk_runs_no_code_at_the_next_start(
    tamper: str, tmp_path: Path
) -> None:
    config = _config(tmp_path)
    first = _daemon(config)
    first.run(threading.Event(), until_exhausted=True)  # scores the file, checkpoints
    store = FileStateStore(tmp_path / "state")
    doc = _manifest(store)
    ref = doc["rules"][RIVER]
    with open(store.root / ref["file"], "rb") as fh:
        state = read_state(fh, size=ref["size"], crc32=ref["crc32"])
    marker = tmp_path / "pwned"
    tamper_river_models(state["detector"], tamper, marker)  # the models were in it, signed
    buf = io.BytesIO()
    ref["size"], ref["crc32"] = StateSnapshot(_as_written(state)).write(buf)
    (store.root / ref["file"]).write_bytes(buf.getvalue())
    blob = seal(dumps(doc), kind=MANIFEST_KIND)  # a matching SHA-256 again
    if tamper == "format":
        old = f'"format": {ENVELOPE_FORMAT}'.encode()
        assert old in blob
        blob = blob.replace(old, b'"format": 99', 1)
    store.save(MANIFEST, blob)
    store.delete(f"{MANIFEST}.prev")  # no fallback to an untouched generation

    second = _daemon(config)
    second.start()
    try:
        assert not marker.exists()
        if tamper == "format":  # the whole checkpoint refused: every rule from the registry
            assert second.checkpointer.refused == 1
            assert second.engine.refused_states == {}
        else:  # the river rule alone refused; the other keeps its checkpointed state
            assert second.engine.refused_states == {RIVER: 1}
            assert second.engine.rules[EWMA].points_seen == 300
        assert second.engine.rules[RIVER].model_version == 1  # its promoted version runs
        second.step()
    finally:
        second.shutdown()
    assert not marker.exists()
