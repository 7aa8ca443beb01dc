"""Checkpoints as generations: one state file per rule, written off the data loop.

The snapshot is copy-on-write (the loop goes on changing the rules' arrays while a
writer thread writes what they were); a generation torn or damaged falls back to the
previous one; the earlier one-blob format still loads.
"""

from __future__ import annotations

import errno
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aiops.pipeline.engine import Engine, RuleSpec
from aiops.state import rulestate
from aiops.state.checkpoint import Checkpoint, Checkpointer, CheckpointSnapshot
from aiops.state.envelope import FileStateStore, MemoryStateStore, dumps, seal
from aiops.state.rulestate import KeysRef, Live, StateSnapshot, read_state
from aiops.testing import FakeClock, ListNotifier
from aiops.types import Batch, SeriesKey


def _spec(detector: str = "ensemble", alert: str = "A") -> RuleSpec:
    return RuleSpec(
        group="g", alert=alert, source="s", matches=lambda k: True, detector_type=detector
    )


def _batch(n: int, t: float, seed: int) -> Batch:
    rng = np.random.default_rng(seed)
    keys = [SeriesKey.of("m", {"pod": f"p{i}", "ns": "x"}) for i in range(n)]
    return Batch(
        keys=keys,
        series=np.arange(n, dtype=np.int64),
        timestamps=np.full(n, t),
        values=rng.normal(50, 1, n),
    )


def _engine(n: int = 3000, batches: int = 3, detector: str = "ensemble") -> Engine:
    engine = Engine([_spec(detector), _spec("ewma_z", "B")])
    for b in range(batches):
        engine.process("s", _batch(n, 60.0 * (b + 1), b))
    return engine


def same_state(a: Any, b: Any, path: str = "") -> None:
    """Equal nested states (arrays by value, NaN equal to NaN)."""
    if isinstance(a, dict):
        assert isinstance(b, dict), path
        assert a.keys() == b.keys(), path
        for k in a:
            same_state(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list | tuple) and not isinstance(a, SeriesKey):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same_state(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), path
        assert a.dtype == b.dtype, path
        np.testing.assert_array_equal(a, b, err_msg=path)
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float), path
        assert np.isnan(b), path
    else:
        assert a == b, path


def _write(ck: Checkpointer, engine: Engine, sequence: int, **sources: Any) -> int:
    return ck.write(CheckpointSnapshot(rules=engine.snapshot(), sources=sources, sequence=sequence))


def _restored(ck: Checkpointer) -> Engine:
    loaded = ck.load()
    assert loaded is not None
    fresh = Engine([_spec(), _spec("ewma_z", "B")])
    fresh.load_state_dict(loaded.rules)
    assert not fresh.refused_states
    return fresh


def test_a_generation_restores_exactly_the_state_and_scores_on_the_same(tmp_path: Path) -> None:
    engine = _engine()
    ck = Checkpointer(FileStateStore(tmp_path))
    _write(ck, engine, 1, s={"next": 3})
    fresh = _restored(ck)
    for key, rt in engine.rules.items():
        same_state(rt.state_dict(), fresh.rules[key].state_dict(), key)
    more = _batch(3000, 240.0, 7)
    a, b = engine.process("s", more), fresh.process("s", more)
    assert [x.fingerprint for x in a] == [x.fingerprint for x in b]
    for key, rt in engine.rules.items():
        same_state(rt.state_dict(), fresh.rules[key].state_dict(), key)
    # One file per rule, under the generation's folder, and the manifest.
    names = FileStateStore(tmp_path).names()
    states = [n for n in names if n.endswith(".state")]
    assert sorted(set(names) - set(states)) == ["checkpoint.manifest"]
    assert len(states) == 2
    assert len({n.rsplit("/", 1)[0] for n in states}) == 1


def test_the_snapshot_is_the_state_at_its_moment_while_the_loop_changes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Small chunks, so that the loop's writes land in chunks the writer has and has not
    # taken yet.
    monkeypatch.setattr(rulestate, "CHUNK_BYTES", 4096)
    engine = _engine(n=2000)
    before = {k: rt.state_dict() for k, rt in engine.rules.items()}
    snap = CheckpointSnapshot(rules=engine.snapshot(), sources={}, sequence=1)
    rt = engine.rules["g/A"]
    assert rt._snapshots
    assert rt._snapshots[0].pending
    # The loop goes on: two more batches change every row (and add rows) before the
    # write, one of them in the middle of it.
    half = _batch(2000, 240.0, 11)
    keep = np.arange(0, 2000, 2)  # every other series: half the chunks copied on write
    engine.process(
        "s",
        Batch(keys=half.keys, series=keep, timestamps=half.timestamps[keep],
              values=half.values[keep]),
    )  # fmt: skip
    store = MemoryStateStore()
    real = rulestate._Counting.write
    mid = {"writes": 0, "done": False}

    def write(self: Any, data: Any) -> None:
        real(self, data)
        mid["writes"] += 1
        if mid["writes"] == 40 and threading.current_thread() is writer:
            engine.process("s", _batch(2500, 300.0, 12))  # the loop, mid-write: every row
            mid["done"] = True

    monkeypatch.setattr(rulestate._Counting, "write", write)
    ck = Checkpointer(store)
    writer = threading.Thread(target=ck.write, args=(snap,))
    writer.start()
    writer.join()
    assert mid["done"]
    assert not any(s.pending for s in rt._snapshots)
    fresh = _restored(ck)
    for key, state in before.items():
        same_state(state, fresh.rules[key].state_dict(), key)


def test_a_background_write_does_not_hold_the_loop_and_commits_when_durable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from test_daemon import batches, make_daemon

    gate = threading.Event()
    entered = threading.Event()

    class Blocked(FileStateStore):
        def save_stream(self, name: str, write: Any) -> Any:
            entered.set()
            assert gate.wait(10)
            return super().save_stream(name, write)

    clock = FakeClock()
    d = make_daemon(tmp_path, batches(n_batches=8), ListNotifier(), clock=clock)
    d.checkpointer = Checkpointer(Blocked(tmp_path / "state"))
    d.checkpoint_interval = 60.0
    d.background_checkpoints = True
    d.start()
    d.step()
    clock.advance(61)
    d.step()  # takes the snapshot after batch 2 and hands it to the writer
    assert entered.wait(10)
    job = d.writing
    assert job is not None
    assert job.positions == {"mem": {"next": 2}}
    points = d.health["mem"].points
    for _ in range(3):  # the writer is stuck: the loop goes on scoring
        d.step()
    assert d.health["mem"].points == points * 5 // 2
    assert d.sources["mem"].committed == []  # nothing is committed before it is durable
    assert d.writing is job
    gate.set()
    job.done.wait(10)
    d.step()  # the next turn commits what the checkpoint covers, not what came since
    assert d.writing is None
    assert d.sources["mem"].committed == [{"next": 2}]
    assert d._sequence == 1
    loaded = Checkpointer(FileStateStore(tmp_path / "state")).load()
    assert loaded is not None
    assert loaded.sources == {"mem": {"next": 2}}
    d.shutdown()
    assert d.sources["mem"].committed[-1] == {"next": 6}  # the final checkpoint


def test_a_failed_background_write_is_counted_retried_and_the_loop_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from test_daemon import batches, make_daemon

    from aiops.service.daemon import CHECKPOINT_RETRY_SECONDS
    from aiops.service.metrics import Metrics

    class Counting(Metrics):
        failed = 0

        def checkpoint_failed(self) -> None:
            self.failed += 1

    full = {"on": True}

    class Full(FileStateStore):
        def save_stream(self, name: str, write: Any) -> Any:
            if full["on"]:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().save_stream(name, write)

    clock = FakeClock()
    d = make_daemon(tmp_path, batches(n_batches=10), ListNotifier(), clock=clock)
    d.checkpointer = Checkpointer(Full(tmp_path / "state"))
    d.checkpoint_interval = 60.0
    d.background_checkpoints = True
    d.metrics = metrics = Counting()
    d.start()
    d.step()
    clock.advance(61)
    with caplog.at_level(logging.ERROR):
        d.step()
        assert d.writing is not None
        d.writing.done.wait(10)
        d.step()  # the failure reaches the loop: counted, logged, nothing committed
    assert metrics.failed == 1
    assert "could not be written" in caplog.text
    assert d.sources["mem"].committed == []
    full["on"] = False
    clock.advance(CHECKPOINT_RETRY_SECONDS + 1)
    d.step()  # the retry
    d.wait_checkpoint()
    assert d.sources["mem"].committed == [{"next": 4}]  # the snapshot of the retry
    assert metrics.failed == 1


def _two_generations(store: Any) -> Checkpointer:
    engine = _engine(n=50)
    ck = Checkpointer(store)
    _write(ck, engine, 1, s={"next": 1})
    engine.process("s", _batch(50, 600.0, 5))
    _write(ck, engine, 2, s={"next": 2})
    return ck


@pytest.mark.parametrize("damage", ["truncated", "flipped", "missing", "longer"])
def test_a_torn_or_damaged_rule_file_falls_back_to_the_previous_generation(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = FileStateStore(tmp_path)
    ck = _two_generations(store)
    newest = store.load("checkpoint.manifest")
    assert newest is not None
    files = sorted(n for n in store.names("checkpoint.d/") if n.endswith(".state"))
    assert len(files) == 4  # two generations of two rules
    victim = tmp_path / max(files)  # a rule file of the newest generation
    data = victim.read_bytes()
    if damage == "truncated":
        victim.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":
        victim.write_bytes(data[:-9] + bytes([data[-9] ^ 0x40]) + data[-8:])
    elif damage == "missing":
        victim.unlink()
    else:
        victim.write_bytes(data + b"\0")
    with caplog.at_level(logging.ERROR):
        loaded = ck.load()
    assert loaded is not None
    assert loaded.sequence == 1
    assert loaded.sources == {"s": {"next": 1}}
    assert ck.refused == 1
    assert store.names("refused/")  # the refused manifest is kept for inspection
    assert "refused" in caplog.text


@pytest.mark.parametrize(
    "doc",
    [
        {"format": 2, "rules": [], "sources": {}, "router": {}, "created": 0.0, "sequence": 2},
        {"format": 2, "rules": {}, "sources": None, "router": {}, "created": 0.0, "sequence": 2},
        {"format": 2, "rules": {"r": {"file": "/etc/passwd", "size": 1, "crc32": 0}},
         "sources": {}, "router": {}, "created": 0.0, "sequence": 2},
        {"format": 2, "rules": {"r": {"file": "checkpoint.d/x", "size": "1", "crc32": 0}},
         "sources": {}, "router": {}, "created": 0.0, "sequence": 2},
        {"format": 2, "rules": {}, "sources": {}, "router": {}, "created": "x", "sequence": 2},
        {"format": 9, "rules": {}, "sources": {}, "router": {}, "created": 0.0, "sequence": 2},
        ["not", "a", "manifest"],
    ],
)  # fmt: skip
def test_a_manifest_that_passes_its_hash_but_holds_bad_content_falls_back(doc: Any) -> None:
    store = MemoryStateStore()
    ck = _two_generations(store)
    store.save("checkpoint.manifest", seal(dumps(doc), kind="checkpoint-manifest"))
    loaded = ck.load()
    assert loaded is not None
    assert loaded.sequence == 1
    assert len(store.names("refused/")) == 1


def test_only_the_two_newest_generations_are_kept(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path)
    engine = _engine(n=20)
    ck = Checkpointer(store)
    for seq in range(1, 6):
        _write(ck, engine, seq)
    gens = {n.split("/")[1] for n in store.names("checkpoint.d/")}
    assert len(gens) == 2
    assert len(list((tmp_path / "checkpoint.d").iterdir())) == 2  # no empty folders left
    loaded = ck.load()
    assert loaded is not None
    assert loaded.sequence == 5


def test_a_checkpoint_of_the_earlier_format_loads_and_goes_after_two_generations(
    tmp_path: Path,
) -> None:
    store = FileStateStore(tmp_path)
    engine = _engine(n=30)
    ck = Checkpointer(store)
    ck.save(Checkpoint(rules=engine.state_dict(), sources={"s": {"next": 7}}, sequence=7))
    loaded = ck.load()
    assert loaded is not None
    assert loaded.sequence == 7
    assert loaded.sources == {"s": {"next": 7}}
    fresh = _restored(ck)
    for key, rt in engine.rules.items():
        same_state(rt.state_dict(), fresh.rules[key].state_dict(), key)
    _write(ck, fresh, 8, s={"next": 8})
    assert store.load("checkpoint") is not None  # one generation: the old one stays
    _write(ck, fresh, 9, s={"next": 9})
    assert store.load("checkpoint") is None
    assert store.load("checkpoint.prev") is None
    loaded = ck.load()
    assert loaded is not None
    assert loaded.sequence == 9


def test_a_rule_state_file_holds_keys_blobs_and_arrays_of_any_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    monkeypatch.setattr(rulestate, "KEYS_PER_SLICE", 2)  # keys encoded in slices
    keys = [
        SeriesKey.of("m", {"a": "1", "b": 'q"\n'}),
        SeriesKey("n"),
        SeriesKey.of("o", {"x": ""}),
    ]
    state = {
        "keys": KeysRef(keys),
        "blob": b"\x00\x01pickled",
        "scalar": np.float64(2.5),
        "zero_d": np.array(3, dtype=np.int64),
        "rows": Live(np.arange(12, dtype=np.float32).reshape(6, 2)[:, ::-1]),
        "wide": np.arange(40, dtype=np.uint64).reshape(4, 10),
        "empty": np.zeros((0, 3)),
        "no_columns": Live(np.zeros((5, 0))),  # rows of no bytes (a detector without seasons)
        "nested": [{"x": None, "y": [1, "two", float("inf")]}],
    }
    buf = io.BytesIO()
    size, crc = StateSnapshot(state).write(buf)
    assert size == len(buf.getvalue())
    out = read_state(io.BytesIO(buf.getvalue()), size=size, crc32=crc)
    assert out["keys"] == keys
    assert out["blob"] == b"\x00\x01pickled"
    assert out["scalar"] == 2.5
    assert out["zero_d"].shape == ()
    assert int(out["zero_d"]) == 3
    np.testing.assert_array_equal(
        out["rows"], np.arange(12, dtype=np.float32).reshape(6, 2)[:, ::-1]
    )
    np.testing.assert_array_equal(out["wide"], state["wide"])
    assert out["empty"].shape == (0, 3)
    assert out["no_columns"].shape == (5, 0)
    assert out["nested"] == [{"x": None, "y": [1, "two", float("inf")]}]


def test_signed_pickled_models_round_trip_through_a_generation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiops.state.envelope import HMAC_KEY_ENV

    monkeypatch.setenv(HMAC_KEY_ENV, "test-key")
    spec = RuleSpec(group="g", alert="River", source="s", matches=lambda k: True,
                    detector_type="river", detector_params={"model": "HalfSpaceTrees"})  # fmt: skip
    engine = Engine([spec])
    engine.process("s", _batch(3, 60.0, 0))
    engine.process("s", _batch(3, 120.0, 1))
    ck = Checkpointer(MemoryStateStore())
    _write(ck, engine, 1)
    loaded = ck.load()
    assert loaded is not None
    fresh = Engine([spec])
    fresh.load_state_dict(loaded.rules)
    assert not fresh.refused_states
    assert fresh.rules["g/River"].detector.state_dict()["models"][0] is not None
    # Another key: the pickles are refused, that rule starts fresh, nothing runs.
    monkeypatch.setenv(HMAC_KEY_ENV, "another-key")
    other = Engine([spec])
    other.load_state_dict(loaded.rules)
    assert other.refused_states == {"g/River": 1}


@pytest.mark.parametrize(
    "header",
    [
        b'{"doc":{"a":{"__a__":0}},"blobs":[],"arrays":[["<f8",[1000000000000]]],"chunk_rows":1}',
        b'{"doc":{},"blobs":[],"arrays":[["<f8",[-5]]],"chunk_rows":1}',
        b'{"doc":{},"blobs":[-3],"arrays":[],"chunk_rows":1}',
        b'{"doc":{},"blobs":[],"arrays":[["|O",[1]]],"chunk_rows":1}',
        b'{"doc":{"a":{"__a__":7}},"blobs":[],"arrays":[],"chunk_rows":1}',
        b'{"doc":{"k":{"__k__":0}},"blobs":[2],"arrays":[],"chunk_rows":1}',
        b'{"doc":{},"blobs":[],"arrays":[],"chunk_rows":0}',
        b"[1, 2]",
    ],
)
def test_a_rule_file_with_a_hostile_header_is_refused_not_allocated(header: bytes) -> None:
    import io
    import zlib

    from aiops.state.envelope import SnapshotRefused

    body = b"{}" if b'"blobs":[2]' in header else b""
    data = rulestate.MAGIC_V1 + header + b"\n" + body
    with pytest.raises(SnapshotRefused):
        read_state(io.BytesIO(data), size=len(data), crc32=zlib.crc32(data))


def test_background_checkpoints_every_turn_and_a_restart_give_the_alerts_of_one_run(
    tmp_path: Path,
) -> None:
    from test_daemon import batches, make_daemon, transitions

    data = batches()
    whole = ListNotifier()
    make_daemon(tmp_path / "a", data, whole).run(threading.Event())

    first, second = ListNotifier(), ListNotifier()
    clock = FakeClock()
    d1 = make_daemon(tmp_path / "b", data, first, clock=clock, checkpoint_interval=1.0)
    d1.background_checkpoints = True
    d1.start()
    for turn in range(len(data) // 2):
        clock.advance(2.0)  # a checkpoint is due at every turn (one at a time)
        d1.step()  # the loop scores on while the writer writes
        if turn % 4 == 3:
            d1.wait_checkpoint()  # and some are committed mid-run
    d1.shutdown()
    assert d1._sequence >= 6
    d2 = make_daemon(tmp_path / "b", data, second)
    d2.background_checkpoints = True
    d2.run(threading.Event())
    assert transitions(first) + transitions(second) == transitions(whole)
    assert transitions(first)
    assert transitions(second)
