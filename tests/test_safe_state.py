"""Safe state: pickles load only when signed, one rule's bad state stops nothing else."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aiops.detectors.ewma_z import EwmaZ
from aiops.pipeline.engine import Engine, RuleSpec
from aiops.state.checkpoint import Checkpoint, Checkpointer
from aiops.state.envelope import HMAC_KEY_ENV, MemoryStateStore, SnapshotRefused, dumps, loads
from aiops.state.signing import HMAC_KEY_FILE_ENV, sign_blobs, signing_key, verify_blobs
from aiops.types import Batch, SeriesKey


def _specs() -> list[RuleSpec]:
    return [
        RuleSpec(group="g", alert="River", source="s", matches=lambda k: True,
                 detector_type="river", detector_params={"model": "HalfSpaceTrees"}),
        RuleSpec(group="g", alert="Ewma", source="s", matches=lambda k: True,
                 detector_type="ewma_z"),
    ]  # fmt: skip


def _batch(n: int = 300, seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    keys = [SeriesKey.of("m", {"host": "a"}), SeriesKey.of("m", {"host": "b"})]
    series = np.tile(np.arange(2, dtype=np.int64), n)
    ts = np.repeat(np.arange(n) * 60.0, 2)
    return Batch(keys=keys, series=series, timestamps=ts, values=rng.normal(10, 1, 2 * n))


def _trained() -> dict[str, Any]:
    engine = Engine(_specs())
    engine.process("s", _batch())
    # Through the checkpoint's own encoding, as a restart would see it.
    state: dict[str, Any] = loads(dumps(engine.state_dict()))
    return state


class _Evil:
    """A pickle that runs a command when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _restore(state: dict[str, Any]) -> Engine:
    engine = Engine(_specs())
    engine.load_state_dict(state)
    return engine


def test_a_signed_state_round_trips() -> None:
    state = _trained()
    assert state["g/River"]["detector"]["models_hmac"]
    engine = _restore(state)
    assert engine.refused_states == {}
    assert engine.rules["g/River"].detector.state_dict()["models"][0] is not None


@pytest.mark.parametrize("tamper", ["payload", "hmac_removed", "hmac_wrong", "other_key"])
def test_a_tampered_pickle_is_refused_and_runs_no_code(
    tamper: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    state = _trained()
    det = state["g/River"]["detector"]
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Evil(marker))
    if tamper == "payload":
        det["models"][0] = evil
    elif tamper == "hmac_removed":
        det["models"][0] = evil
        del det["models_hmac"]
    elif tamper == "hmac_wrong":
        det["models"][0] = evil
        det["models_hmac"] = "0" * 64
    else:  # signed properly, but with a key that is not the daemon's
        monkeypatch.setenv(HMAC_KEY_ENV, "the attacker's key")
        det["models"][0] = evil
        det["models_hmac"] = sign_blobs(det["models"], purpose="river.models")
        monkeypatch.setenv(HMAC_KEY_ENV, "test-suite-signing-key")
    ewma_before = state["g/Ewma"]["detector"]["mu"].copy()
    with caplog.at_level(logging.ERROR):
        engine = _restore(state)
    assert not marker.exists()
    assert engine.refused_states == {"g/River": 1}
    assert "rule g/River: its checkpointed state was refused" in caplog.text
    # The refused rule starts fresh; the other keeps its state.
    assert engine.rules["g/River"].detector.state_dict()["models"] == []
    np.testing.assert_array_equal(engine.rules["g/Ewma"].detector.state_dict()["mu"], ewma_before)
    # And the fresh rule still scores new data (it is in the source's rule list).
    assert any(rt is engine.rules["g/River"] for rt in engine.by_source["s"])
    engine.process("s", _batch(50, seed=1))


def test_without_a_key_pickles_are_neither_written_nor_read(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    signed = _trained()
    monkeypatch.delenv(HMAC_KEY_ENV)
    with caplog.at_level(logging.WARNING):
        engine = Engine(_specs())
        engine.process("s", _batch())
        unsigned = engine.state_dict()
    assert unsigned["g/River"]["detector"]["models"] == [None, None]
    assert "not checkpointed" in caplog.text
    # A signed state cannot be read without the key either.
    restored = _restore(signed)
    assert restored.refused_states == {"g/River": 1}


def test_the_key_comes_from_a_file_or_systemd_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(HMAC_KEY_ENV)
    assert signing_key() is None
    (tmp_path / "key").write_text("from-a-file\n")
    monkeypatch.setenv(HMAC_KEY_FILE_ENV, str(tmp_path / "key"))
    assert signing_key() == b"from-a-file"
    monkeypatch.delenv(HMAC_KEY_FILE_ENV)
    (tmp_path / "state-hmac-key").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert signing_key() == b"from-systemd"
    tag = sign_blobs([b"x"], purpose="p")
    verify_blobs([b"x"], tag, purpose="p")
    with pytest.raises(SnapshotRefused):
        verify_blobs([b"x"], tag, purpose="another purpose")


def test_the_shipped_unit_loads_the_key_as_the_credential_the_daemon_reads() -> None:
    from aiops.state.signing import CREDENTIAL_NAME

    unit = Path(__file__).parent.parent / "deploy" / "systemd" / "aiopsd.service"
    lines = [x for x in unit.read_text().splitlines() if x and not x.startswith("#")]
    settings = dict(x.split("=", 1) for x in lines if "=" in x)
    name, source = settings["LoadCredential"].split(":", 1)
    assert name == CREDENTIAL_NAME
    # The key lives outside the state it protects (StateDirectory=, --state-dir).
    state_dir = "/var/lib/" + settings["StateDirectory"]
    assert f"--state-dir {state_dir}" in settings["ExecStart"]
    assert not source.startswith(state_dir + "/")
    assert source.startswith("/etc/" + settings["ConfigurationDirectory"] + "/")
    assert "AIOPS_STATE_HMAC_KEY" not in unit.read_text()  # not in the unit's environment


def test_a_state_saved_with_other_default_parameters_starts_that_rule_fresh(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    state = _trained()
    # A new release changes a default the rule does not write: the state no longer fits.
    defaults = dict(EwmaZ.__init__.__kwdefaults__ or {})
    monkeypatch.setattr(EwmaZ.__init__, "__kwdefaults__", {**defaults, "alpha": 0.2})
    with caplog.at_level(logging.WARNING):
        engine = _restore(state)
    assert "g/Ewma: detector configuration changed" in caplog.text
    assert not engine.rules["g/Ewma"].detector.state_dict()["n"].any()
    # The river rule keeps its models.
    assert engine.rules["g/River"].detector.state_dict()["models"][0] is not None


def test_a_state_that_does_not_fit_its_detector_starts_that_rule_fresh() -> None:
    state = _trained()
    det = state["g/Ewma"]["detector"]
    det["mu"] = det["mu"][:1]  # arrays of different lengths: "cannot reshape" in the field
    engine = _restore(state)
    assert engine.refused_states == {"g/Ewma": 1}
    assert engine.rules["g/River"].detector.state_dict()["models"][0] is not None
    engine.process("s", _batch(20, seed=2))


def test_a_checkpoint_of_an_unknown_format_is_refused_kept_aside_and_the_previous_used() -> None:
    store = MemoryStateStore()
    ckpt = Checkpointer(store)
    ckpt.save(Checkpoint(rules={"a": 1}, sources={}, sequence=1))
    ckpt.save(Checkpoint(rules={"a": 2}, sources={}, sequence=2))
    blob = store.load("checkpoint")
    assert blob is not None
    store.save("checkpoint", blob.replace(b'"format": 1', b'"format": 99', 1))
    loaded = ckpt.load()
    assert loaded is not None
    assert loaded.sequence == 1
    assert ckpt.refused == 1
    assert len(store.names("refused/")) == 1


def test_a_directory_in_place_of_the_checkpoint_is_skipped_not_a_traceback(tmp_path: Path) -> None:
    from aiops.state.envelope import FileStateStore

    store = FileStateStore(tmp_path)
    ckpt = Checkpointer(store)
    ckpt.save(Checkpoint(rules={}, sources={"s": {"next": 1}}, sequence=1))
    ckpt.save(Checkpoint(rules={}, sources={"s": {"next": 2}}, sequence=2))
    (tmp_path / "checkpoint").unlink()
    (tmp_path / "checkpoint").mkdir()
    loaded = ckpt.load()
    assert loaded is not None
    assert loaded.sequence == 1
    assert ckpt.refused == 1


@pytest.mark.parametrize(
    "doc",
    [
        {"rules": [], "sources": {}, "created": 0.0, "sequence": 2},
        {"rules": {}, "sources": None, "created": 0.0, "sequence": 2},
        {"rules": {}, "sources": {}, "created": "x", "sequence": 2},
        ["not", "a", "checkpoint"],
    ],
)
def test_a_checkpoint_that_passes_its_hash_but_holds_bad_content_falls_back(doc: Any) -> None:
    from aiops.state.envelope import seal

    store = MemoryStateStore()
    ckpt = Checkpointer(store)
    ckpt.save(Checkpoint(rules={}, sources={}, sequence=1))
    ckpt.save(Checkpoint(rules={}, sources={}, sequence=2))
    store.save("checkpoint", seal(dumps(doc), kind="checkpoint"))
    loaded = ckpt.load()
    assert loaded is not None
    assert loaded.sequence == 1
    assert len(store.names("refused/")) == 1


def test_router_state_that_cannot_be_loaded_does_not_stop_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import threading

    from test_daemon import batches, make_daemon, transitions

    from aiops.alerting.routing import Router
    from aiops.testing import ListNotifier

    data = batches()
    d1 = make_daemon(tmp_path, data, ListNotifier())
    d1.start()
    for _ in range(len(data) // 2):
        d1.step()
    d1.shutdown()

    def bad_state(self: Router, state: Any) -> None:
        raise ValueError("router state from another release")

    monkeypatch.setattr(Router, "load_state_dict", bad_state)
    second = ListNotifier()
    with caplog.at_level(logging.ERROR):
        make_daemon(tmp_path, data, second).run(threading.Event())
    assert "router state in the checkpoint refused" in caplog.text
    assert transitions(second)  # it ran on from the checkpoint, and still alerts


def test_a_failed_checkpoint_write_is_counted_retried_and_commits_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import errno

    from test_daemon import batches, make_daemon

    from aiops.service.daemon import CHECKPOINT_RETRY_SECONDS
    from aiops.service.metrics import Metrics
    from aiops.state.envelope import FileStateStore
    from aiops.testing import FakeClock, ListNotifier

    class Counting(Metrics):
        failed = 0

        def checkpoint_failed(self) -> None:
            self.failed += 1

    full = {"on": True}
    real_save = FileStateStore.save

    def save(self: FileStateStore, name: str, data: bytes) -> None:
        if full["on"] and name.startswith("checkpoint"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(self, name, data)

    monkeypatch.setattr(FileStateStore, "save", save)
    clock = FakeClock()
    d = make_daemon(tmp_path, batches(n_batches=10), ListNotifier(), clock=clock)
    d.checkpoint_interval = 60.0
    d.metrics = metrics = Counting()
    d.start()
    with caplog.at_level(logging.ERROR):
        d.step()
        clock.advance(61)
        d.step()  # the write fails: no crash, nothing committed
    assert metrics.failed == 1
    assert "could not be written" in caplog.text
    assert d.sources["mem"].committed == []
    clock.advance(CHECKPOINT_RETRY_SECONDS - 1)
    d.step()
    assert metrics.failed == 1  # not retried before its delay
    full["on"] = False
    clock.advance(2)
    d.step()  # the retry succeeds and commits what it covers
    assert metrics.failed == 1
    assert d.sources["mem"].committed == [{"next": 4}]
    assert d._sequence == 1
