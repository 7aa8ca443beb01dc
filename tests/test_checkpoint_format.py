"""The rule state file's format: version 2 (zstd frames), version 1 still read, others refused.

Version 2 stores each blob, the 0-d arrays and each chunk of rows as a zstd frame with
its content checksum; the manifest's check value binds those checksums. A file of format
1 (raw, CRC-32 of every byte) still loads; a file of a version this release does not
know is refused, and the checkpoint falls back to the previous generation.
"""

from __future__ import annotations

import io
import logging
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zstandard
from test_checkpoint_generations import _engine, _restored, _two_generations, _write, same_state

from aiops.state import rulestate
from aiops.state.checkpoint import Checkpointer
from aiops.state.envelope import FileStateStore, MemoryStateStore, SnapshotRefused
from aiops.state.rulestate import KeysRef, Live, StateSnapshot, read_state
from aiops.types import SeriesKey


def _state(n: int = 2000) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    ring = np.full((n, 64), np.nan)  # young series: rings mostly empty
    ring[:, :2] = rng.normal(50, 1, (n, 2))
    return {
        "keys": KeysRef([SeriesKey.of("m", {"pod": f"p{i}", "ns": "x"}) for i in range(n)]),
        "ring": Live(ring),
        "count": Live(np.full(n, 2, dtype=np.int64)),
        "mean": rng.normal(50, 1, n),
        "scalar": np.float64(2.5),
        "zero_d": np.array(3, dtype=np.int64),
        "none": Live(np.zeros((n, 0))),
        "blob": b"\x00\x01pickled",
        "doc": [{"x": None, "y": [1, "two", float("inf")]}],
    }


def _plain(state: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in state.items():
        if isinstance(v, Live):
            v = v.array
        elif isinstance(v, KeysRef):
            v = v.keys
        out[k] = v
    return out


def _written(state: dict[str, Any], version: int = rulestate.FORMAT) -> tuple[bytes, int]:
    buf = io.BytesIO()
    size, check = StateSnapshot(state).write(buf, version=version)
    assert size == len(buf.getvalue())
    return buf.getvalue(), check


def _read(data: bytes, check: int) -> Any:
    return read_state(io.BytesIO(data), size=len(data), crc32=check)


def test_a_rule_file_is_written_compressed_and_reads_back_the_same() -> None:
    state = _state()
    data, check = _written(state)
    assert data.startswith(b"AIOPS-RULESTATE 2\n")
    raw = sum(a.nbytes for a in (state["ring"].array, state["count"].array, state["mean"]))
    assert len(data) < raw / 4  # NaN-filled rings and repeated counts: a fraction
    out = _read(data, check)
    same_state(_plain(state), {k: v for k, v in out.items()})
    # The check value is not the CRC-32 of the file (no pass over its bytes).
    assert check != zlib.crc32(data)


def test_a_rule_file_of_format_1_still_loads() -> None:
    state = _state()
    data, check = _written(state, version=1)
    assert data.startswith(b"AIOPS-RULESTATE 1\n")
    assert check == zlib.crc32(data)
    same_state(_plain(state), _read(data, check))
    with pytest.raises(ValueError, match="no rule state format 3"):
        StateSnapshot(_state()).write(io.BytesIO(), version=3)


def test_a_generation_of_format_1_files_restores_as_a_generation_of_format_2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = _engine(n=300)
    old = Checkpointer(MemoryStateStore())
    write = StateSnapshot.write
    monkeypatch.setattr(StateSnapshot, "write", lambda self, fh: write(self, fh, version=1))
    _write(old, engine, 1)
    monkeypatch.setattr(StateSnapshot, "write", write)
    new = Checkpointer(MemoryStateStore())
    _write(new, engine, 1)
    for ck in (old, new):
        fresh = _restored(ck)
        for key, rt in engine.rules.items():
            same_state(rt.state_dict(), fresh.rules[key].state_dict(), key)


@pytest.mark.parametrize("version", [b"3", b"0", b"12"])
def test_a_rule_file_of_an_unknown_version_is_refused_and_the_previous_generation_used(
    tmp_path: Path, version: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    store = FileStateStore(tmp_path)
    ck = _two_generations(store)
    files = sorted(n for n in store.names("checkpoint.d/") if n.endswith(".state"))
    victim = tmp_path / max(files)  # a rule file of the newest generation
    data = victim.read_bytes()
    assert data.startswith(rulestate.MAGIC)
    victim.write_bytes(b"AIOPS-RULESTATE " + version + b"\n" + data[len(rulestate.MAGIC) :])
    with pytest.raises(SnapshotRefused, match=f"format version {int(version)} is not one"):
        read_state(io.BytesIO(victim.read_bytes()), size=len(data), crc32=0)
    with caplog.at_level(logging.ERROR):
        loaded = ck.load()
    assert loaded is not None
    assert loaded.sequence == 1
    assert ck.refused == 1
    assert f"format version {int(version)}" in caplog.text


def test_damage_anywhere_in_a_compressed_file_is_refused_or_changes_nothing() -> None:
    state = _state(300)
    data, check = _written(state)
    want = _plain(state)
    rng = np.random.default_rng(0)
    spots = sorted({*range(0, 200), *rng.integers(0, len(data), 400).tolist(), len(data) - 1})
    refused = 0
    for at in spots:
        damaged = bytearray(data)
        damaged[at] ^= 1 << int(rng.integers(0, 8))
        try:
            out = _read(bytes(damaged), check)
        except SnapshotRefused:
            refused += 1
            continue
        # A bit zstd does not use (in a frame's header, an unused code): the same content.
        same_state(want, out)
    assert refused >= 0.9 * len(spots)
    for cut in (data[:-1], data[: len(data) // 2], data + b"\0"):
        with pytest.raises(SnapshotRefused):
            read_state(io.BytesIO(cut), size=len(cut), crc32=check)
    with pytest.raises(SnapshotRefused):  # the manifest's size, the file intact
        read_state(io.BytesIO(data), size=len(data) + 1, crc32=check)
    with pytest.raises(SnapshotRefused, match="checksum"):  # another file's check value
        _read(data, check ^ 1)


def test_frames_of_another_file_are_refused() -> None:
    # Two files of the same header and frame lengths, other values: each frame intact.
    a, check = _written({"x": np.full(1000, 3.0)})
    b, _ = _written({"x": np.full(1000, 5.0)})
    assert len(a) == len(b)
    assert a[:120] == b[:120]
    same_state({"x": np.full(1000, 5.0)}, _read(b, _written({"x": np.full(1000, 5.0)})[1]))
    with pytest.raises(SnapshotRefused, match="checksum"):
        _read(b, check)


def _framed(body: bytes, checksum: bool = True) -> bytes:
    frame = zstandard.ZstdCompressor(write_checksum=checksum).compress(body)
    return struct.pack("<q", len(frame)) + frame


def _v2(header: bytes, *frames: bytes) -> tuple[bytes, int]:
    data = rulestate.MAGIC + header + b"\n" + b"".join(frames)
    check = zlib.crc32(rulestate.MAGIC + header + b"\n")
    for f in frames:
        check = zlib.crc32(f[-4:], zlib.crc32(f[:8], check))
    return data, check


@pytest.mark.parametrize(
    "blob",
    [
        b"\x01\x00",  # shorter than its count
        struct.pack("<q", 5) + b"\x00",  # five counts declared, one there
        struct.pack("<q", 2) + b"\x00\x01" + b"m\x00n\x00a",  # 4 strings declared, 3 there
        struct.pack("<q", 1) + b"\x00" + b"\xff\xfe",  # not UTF-8
    ],
)
def test_a_damaged_keys_text_in_a_frame_is_refused(blob: bytes) -> None:
    header = b'{"doc":{"k":{"__kt__":0}},"blobs":[%d],"arrays":[],"chunk_rows":1}' % len(blob)
    data, check = _v2(header, _framed(blob), _framed(b""))
    with pytest.raises(SnapshotRefused):
        _read(data, check)


def test_a_well_formed_hand_made_file_of_format_2_reads() -> None:
    # The check above is right: a file made by hand the same way reads.
    blob = struct.pack("<q", 1) + b"\x00" + b"m"
    header = b'{"doc":{"k":{"__kt__":0}},"blobs":[%d],"arrays":[],"chunk_rows":1}' % len(blob)
    data, check = _v2(header, _framed(blob), _framed(b""))
    assert _read(data, check) == {"k": [SeriesKey("m")]}


@pytest.mark.parametrize(
    ("header", "frames"),
    [
        # Arrays far larger than any frame could hold: refused before they are allocated.
        (b'{"doc":{},"blobs":[],"arrays":[["<f8",[1000000000000]]],"chunk_rows":1}', []),
        # A frame's length past the file's end.
        (b'{"doc":{},"blobs":[4],"arrays":[],"chunk_rows":1}', [struct.pack("<q", 1 << 40)]),
        # A frame that holds more, or less, than the header says.
        (b'{"doc":{},"blobs":[2],"arrays":[],"chunk_rows":1}', [_framed(b"abc"), _framed(b"")]),
        (b'{"doc":{},"blobs":[4],"arrays":[],"chunk_rows":1}', [_framed(b"abc"), _framed(b"")]),
        # Not a zstd frame.
        (b'{"doc":{},"blobs":[3],"arrays":[],"chunk_rows":1}', [struct.pack("<q", 8) + b"x" * 8]),
        # A frame without zstd's content checksum.
        (
            b'{"doc":{},"blobs":[3],"arrays":[],"chunk_rows":1}',
            [_framed(b"abc", checksum=False), _framed(b"")],
        ),
        # No frame for the 0-d arrays.
        (b'{"doc":{},"blobs":[],"arrays":[],"chunk_rows":1}', []),
    ],
)
def test_a_format_2_file_with_a_hostile_header_or_frame_is_refused(
    header: bytes, frames: list[bytes]
) -> None:
    data, check = _v2(header, *frames)  # the check value right: refused for what it holds
    why = r"does not fit|shorter|holds (more|less)|damaged|without"
    with pytest.raises(SnapshotRefused, match=why):
        _read(data, check)
