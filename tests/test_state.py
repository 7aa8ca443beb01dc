import numpy as np
import pytest

from aiops.state.checkpoint import Checkpoint, Checkpointer
from aiops.state.envelope import (
    HMAC_KEY_ENV,
    FileStateStore,
    MemoryStateStore,
    SnapshotRefused,
    dumps,
    loads,
    seal,
    unseal,
)


def test_dumps_round_trips_nested_arrays_and_json():
    obj = {
        "a": np.arange(5, dtype=np.int64),
        "b": {"c": [np.zeros((2, 3)), 1.5, "x", None, True]},
        "u": np.array([1, 2], dtype=np.uint64),
        "raw": b"\x00\xffbytes",
        "nan": float("nan"),
    }
    out = loads(dumps(obj))
    assert out["a"].dtype == np.int64
    assert out["a"].tolist() == [0, 1, 2, 3, 4]
    assert out["b"]["c"][0].shape == (2, 3)
    assert out["b"]["c"][1:] == [1.5, "x", None, True]
    assert out["u"].dtype == np.uint64
    assert out["raw"] == b"\x00\xffbytes"
    assert np.isnan(out["nan"])


def test_dumps_refuses_objects_that_would_need_pickle():
    with pytest.raises(TypeError, match="cannot store a object"):
        dumps({"x": object()})
    with pytest.raises(TypeError, match="object arrays"):
        dumps({"x": np.array([object()], dtype=object)})


def test_envelope_refuses_other_versions_kinds_and_corruption():
    blob = seal(b"payload", kind="checkpoint")
    header, payload = unseal(blob, kind="checkpoint")
    assert payload == b"payload"
    assert header["package"] == "aiopsd"
    assert "numpy" in header["libraries"]
    with pytest.raises(SnapshotRefused, match="holds a 'checkpoint' blob"):
        unseal(blob, kind="model")
    with pytest.raises(SnapshotRefused, match="content hash mismatch"):
        unseal(blob[:-2], kind="checkpoint")
    future = blob.replace(b'"format": 1', b'"format": 99')
    with pytest.raises(SnapshotRefused, match="envelope format 99 is not 1"):
        unseal(future, kind="checkpoint")
    with pytest.raises(SnapshotRefused, match="not an aiops state envelope"):
        unseal(b"garbage", kind="checkpoint")


def test_signed_payloads_need_the_right_key(monkeypatch):
    monkeypatch.delenv(HMAC_KEY_ENV, raising=False)
    with pytest.raises(ValueError, match="signing key"):
        seal(b"pickled", kind="model", signed=True)
    monkeypatch.setenv(HMAC_KEY_ENV, "k1")
    blob = seal(b"pickled", kind="model", signed=True)
    assert unseal(blob, kind="model")[1] == b"pickled"
    monkeypatch.setenv(HMAC_KEY_ENV, "k2")
    with pytest.raises(SnapshotRefused, match="signature does not match"):
        unseal(blob, kind="model")
    monkeypatch.delenv(HMAC_KEY_ENV)
    with pytest.raises(SnapshotRefused, match="is unset"):
        unseal(blob, kind="model")


@pytest.mark.parametrize("store_kind", ["file", "memory"])
def test_store_save_load_delete(tmp_path, store_kind):
    store = FileStateStore(tmp_path / "s") if store_kind == "file" else MemoryStateStore()
    assert store.load("x") is None
    store.save("x", b"1")
    store.save("models/r/1/state", b"2")
    store.save("x", b"3")
    assert store.load("x") == b"3"
    assert store.names() == ["models/r/1/state", "x"]
    assert store.names("models/") == ["models/r/1/state"]
    assert store.rename("x", "y") is True
    assert store.load("x") is None
    assert store.load("y") == b"3"
    assert store.rename("x", "y") is False
    assert store.load("y") == b"3"
    store.delete("y")
    assert store.load("y") is None


def test_file_store_leaves_no_temp_files_and_rejects_escapes(tmp_path):
    store = FileStateStore(tmp_path)
    store.save("a", b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    with pytest.raises(ValueError, match="escapes"):
        store.save("../evil", b"x")


def test_checkpointer_falls_back_to_previous_and_keeps_refused_aside(tmp_path, caplog):
    store = FileStateStore(tmp_path)
    ck = Checkpointer(store)
    assert ck.load() is None
    ck.save(Checkpoint(rules={"r": {"a": np.arange(3)}}, sources={"s": {"offset": 1}}, sequence=1))
    ck.save(Checkpoint(rules={"r": {"a": np.arange(4)}}, sources={"s": {"offset": 2}}, sequence=2))
    loaded = ck.load()
    assert loaded is not None
    assert loaded.sequence == 2
    assert loaded.rules["r"]["a"].tolist() == [0, 1, 2, 3]
    # Corrupt the newest: the previous one loads, the bad one is kept, the log says so.
    (tmp_path / "checkpoint").write_bytes(b"AIOPS-STATE {}\nnope")
    loaded = ck.load()
    assert loaded is not None
    assert loaded.sequence == 1
    assert loaded.sources == {"s": {"offset": 1}}
    assert ck.refused == 1
    assert store.names("refused/")
    assert "checkpoint 'checkpoint' refused" in caplog.text
