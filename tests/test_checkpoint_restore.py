"""A restore's two costs: series keys rebuilt in bulk, arrays taken without a copy.

Keys are written as one NUL-joined UTF-8 text (JSON when a string holds a NUL) and
read back as one string each (their texts) cut from it; the arrays a state file was read
into are taken by the first ``load_state_dict`` (``rulestate.adopt``) and copied by any
later one.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_checkpoint_generations import same_state

from aiops.pipeline.engine import Engine, RuleSpec
from aiops.state import rulestate
from aiops.state.checkpoint import Checkpointer, CheckpointSnapshot
from aiops.state.envelope import FileStateStore, SnapshotRefused
from aiops.state.rulestate import KeysRef, StateSnapshot, adopt, read_state
from aiops.types import Batch, KeyTexts, SeriesKey

KEYS = [
    SeriesKey.of("m", {"pod": "p0", "ns": "x"}),
    SeriesKey("n"),
    SeriesKey.of("m", {"pod": "p1", "ns": "x"}),
    SeriesKey.of("cpu", {"host": "h\u00e9\u2603", "q": 'a"\n\\'}),
    SeriesKey.of("", {"x": ""}),
    SeriesKey.of("m", {f"l{i}": str(i) for i in range(7)}),
]


def _round_trip(state: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    buf = io.BytesIO()
    size, crc = StateSnapshot(state).write(buf)
    return read_state(io.BytesIO(buf.getvalue()), size=size, crc32=crc), buf.getvalue()


@pytest.mark.parametrize("per_slice", [2, 20_000])
def test_keys_of_any_label_count_round_trip_as_text(
    monkeypatch: pytest.MonkeyPatch, per_slice: int
) -> None:
    monkeypatch.setattr(rulestate, "KEYS_PER_SLICE", per_slice)
    out, data = _round_trip({"keys": KeysRef(KEYS), "same": KeysRef(KEYS[:1] * 3)})
    assert b'"__kt__"' in data
    assert b'"__k__"' not in data
    assert out["keys"] == KEYS
    assert [hash(k) for k in out["keys"]] == [hash(k) for k in KEYS]
    assert {k: i for i, k in enumerate(out["keys"])}[KEYS[3]] == 3
    assert [type(k) for k in out["keys"]] == [SeriesKey] * len(KEYS)
    # Held as one string a key (its text), each key made only when read.
    assert isinstance(out["keys"], KeyTexts)
    assert out["keys"].texts == [k.text for k in KEYS]
    assert set(map(type, out["keys"].texts)) == {str}
    assert out["same"] == KEYS[:1] * 3
    assert _round_trip({"k": KeysRef([])})[0]["k"] == []


@pytest.mark.parametrize(
    "odd",
    [
        SeriesKey.of("m", {"a": "x\x00y"}),  # a NUL
        SeriesKey("m", (("a", 7),)),  # type: ignore[arg-type]  # not a string
        SeriesKey("m", tuple((f"l{i:03}", "v") for i in range(300))),  # 300 labels
    ],
)
def test_keys_that_text_cannot_hold_are_written_as_json_and_round_trip(odd: SeriesKey) -> None:
    keys = [*KEYS, odd]
    out, data = _round_trip({"keys": KeysRef(keys)})
    assert b'"__k__"' in data
    assert b'"__kt__"' not in data
    assert out["keys"] == keys


@pytest.mark.parametrize(
    "blob",
    [
        b"\x01\x00",  # shorter than its count
        struct.pack("<q", 5) + b"\x00",  # five counts declared, one there
        struct.pack("<q", 2) + b"\x00\x01" + b"m\x00n\x00a",  # 4 strings declared, 3 there
        struct.pack("<q", 1) + b"\x00" + b"\xff\xfe",  # not UTF-8
        struct.pack("<q", 0) + b"x",  # bytes after no key
    ],
)
def test_a_damaged_keys_text_is_refused(blob: bytes) -> None:
    header = b'{"doc":{"k":{"__kt__":0}},"blobs":[%d],"arrays":[],"chunk_rows":1}' % len(blob)
    data = rulestate.MAGIC_V1 + header + b"\n" + blob
    with pytest.raises(SnapshotRefused):
        read_state(io.BytesIO(data), size=len(data), crc32=zlib.crc32(data))


def test_an_array_read_from_a_state_file_is_adopted_once_and_copied_after() -> None:
    out, _ = _round_trip({"a": np.arange(6.0), "b": np.arange(3)})
    a = out["a"]
    assert adopt(a, np.float64) is a  # the first taker keeps it
    again = adopt(a, np.float64)  # any later one copies
    assert again is not a
    np.testing.assert_array_equal(again, a)
    assert adopt(out["b"], np.float64) is not out["b"]  # another dtype: converted
    mine = np.arange(4.0)
    assert adopt(mine, np.float64) is not mine  # not read from a file: copied


def _spec() -> RuleSpec:
    return RuleSpec(group="g", alert="A", source="s", matches=lambda k: True,
                    detector_type="ensemble")  # fmt: skip


def _batch(n: int, t: float, seed: int) -> Batch:
    rng = np.random.default_rng(seed)
    return Batch(
        keys=[SeriesKey.of("m", {"pod": f"p{i}"}) for i in range(n)],
        series=np.arange(n, dtype=np.int64),
        timestamps=np.full(n, t),
        values=rng.normal(50, 1, n) + (t > 200) * np.arange(n) % 7 * 3,
    )


def _arrays(x: Any) -> list[np.ndarray[Any, Any]]:
    if isinstance(x, dict):
        return [a for v in x.values() for a in _arrays(v)]
    if isinstance(x, list):
        return [a for v in x for a in _arrays(v)]
    return [x] if isinstance(x, np.ndarray) and x.ndim else []


def test_a_restore_takes_the_arrays_read_and_a_second_restore_of_them_copies(
    tmp_path: Path,
) -> None:
    engine = Engine([_spec()])
    for b in range(3):
        engine.process("s", _batch(500, 60.0 * (b + 1), b))
    saved = engine.rules["g/A"].state_dict()
    ck = Checkpointer(FileStateStore(tmp_path))
    ck.write(CheckpointSnapshot(rules=engine.snapshot(), sources={}, sequence=1))
    loaded = ck.load()
    assert loaded is not None
    read = {id(a) for a in _arrays(loaded.rules["g/A"])}
    first, second = Engine([_spec()]), Engine([_spec()])
    first.load_state_dict(loaded.rules)
    second.load_state_dict(loaded.rules)
    rt1, rt2 = first.rules["g/A"], second.rules["g/A"]
    held = [rt1._last_value, rt1.detector._members[0]._mu, rt1.alerts.state, rt1.hits._history]
    assert all(id(a) in read or id(a.base) in read for a in held)  # no copy
    held2 = [rt2._last_value, rt2.detector._members[0]._mu, rt2.alerts.state, rt2.hits._history]
    assert not any(id(a) in read or id(a.base) in read for a in held2)
    # The first scores on (writing its arrays in place); the second is still the saved state.
    more = _batch(500, 240.0, 9)
    fired = [a.fingerprint for a in first.process("s", more)]
    same_state(saved, rt2.state_dict())
    assert [a.fingerprint for a in second.process("s", more)] == fired
    assert [a.fingerprint for a in engine.process("s", more)] == fired
    same_state(engine.rules["g/A"].state_dict(), rt1.state_dict())
    same_state(engine.rules["g/A"].state_dict(), rt2.state_dict())


def test_an_envelope_state_of_the_earlier_layouts_still_loads() -> None:
    spec = RuleSpec(group="g", alert="E", source="s", matches=lambda k: True,
                    detector_type="envelope_novelty")  # fmt: skip
    engine = Engine([spec])
    for b in range(4):
        engine.process("s", _batch(50, 3600.0 * (b + 1), b))
    det = engine.rules["g/E"].detector
    state = det.state_dict()
    bins = det._bins
    assert len(bins) >= 2
    assert state["profile_codes"].shape == (50, sum(bins))
    assert state["profile_codes"].dtype == np.uint16
    # The layouts before: float32 profiles in one array (and before that one array per
    # season), every envelope, count, residual and refractory level in float64, int64
    # point counts. Values that were float32 come back exactly; profiles re-coded.
    profiles = det.profiles().astype(np.float32)
    wide = {
        "n": state["n"].astype(np.int64),
        "refr": state["refr"].astype(np.float64),
        "resid": state["resid"].astype(np.float64),
        "count": state["count"].astype(np.float64),
        "hi": np.hstack([state["hi"], state["hi_dev"].astype(np.float64)]),
        "lo": np.hstack([state["lo"], state["lo_dev"].astype(np.float64)]),
    }
    kept = {k: v for k, v in state.items() if k in ("t0", "last", "level", "vol")}
    offsets = np.r_[0, np.cumsum(bins)]
    per_season = {
        f"profile_{s}": profiles[:, offsets[s] : offsets[s + 1]] for s in range(len(bins))
    }
    for earlier in ({**kept, **wide, "profiles": profiles}, {**kept, **wide, **per_season}):
        fresh = Engine([spec])
        loaded = fresh.rules["g/E"].detector
        loaded.load_state_dict(earlier)
        again = loaded.state_dict()
        same_state(
            {k: v for k, v in state.items() if not k.startswith("profile_")},
            {k: v for k, v in again.items() if not k.startswith("profile_")},
        )
        assert all(again[k].dtype == v.dtype for k, v in state.items())
        # Converted on load: every bin within half a step of the new grid.
        step = again["profile_grid"][:, 1:]
        diff = np.abs(loaded.profiles() - profiles.astype(np.float64))
        assert (np.isnan(loaded.profiles()) == np.isnan(profiles)).all()
        assert (np.isnan(diff) | (diff <= 0.5 * step * (1 + 1e-9))).all()
