"""The rejects file: rotated by size, raw bytes bounded, synced before checkpoints."""

from __future__ import annotations

import json

import pytest

from aiops.service.daemon import DeadLetterFile
from aiops.types import Reject


def rejects(n, size=100):
    return [Reject("bad_json", f"item {i}", b"x" * size, f"f:{i}") for i in range(n)]


def test_rotates_by_size_and_keeps_n_files(tmp_path):
    path = tmp_path / "rejects.jsonl"
    dl = DeadLetterFile(path, max_bytes=2000, keep=2)
    for _ in range(10):
        dl.write("src", rejects(5))
    dl.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["rejects.jsonl", "rejects.jsonl.1", "rejects.jsonl.2"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size < 2000 + 300  # one line past the limit at most
    assert dl.rotations >= 3
    # The newest lines are in the current file, the next older in .1.
    newest = [json.loads(x) for x in path.read_text().splitlines()]
    older = [json.loads(x) for x in (tmp_path / "rejects.jsonl.1").read_text().splitlines()]
    assert newest[-1]["detail"] == "item 4"
    assert older


def test_keep_zero_keeps_only_the_current_file(tmp_path):
    dl = DeadLetterFile(tmp_path / "rejects.jsonl", max_bytes=500, keep=0)
    for _ in range(5):
        dl.write("src", rejects(3))
    dl.close()
    assert [p.name for p in tmp_path.iterdir()] == ["rejects.jsonl"]


def test_raw_bytes_are_cut_and_their_length_noted(tmp_path):
    dl = DeadLetterFile(tmp_path / "r.jsonl", raw_bytes=10)
    dl.write("src", [Reject("too_big", "d", b"a" * 1000), Reject("bad", "d", b"\xff" * 3)])
    dl.close()
    a, b = (json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines())
    assert a["raw"] == "a" * 10
    assert a["raw_truncated"] == 1000
    assert b["raw_base64"] == "////"
    assert "raw_truncated" not in b


def test_a_failed_write_keeps_the_lines_until_the_disk_takes_them(tmp_path):
    path = tmp_path / "r.jsonl"
    path.mkdir()  # cannot be opened as a file
    dl = DeadLetterFile(path)
    dl.write("src", rejects(3))
    assert dl.sync() is False
    path.rmdir()
    assert dl.sync() is True
    assert len(path.read_text().splitlines()) == 3


@pytest.mark.parametrize("kwargs", [{"max_bytes": 0}, {"keep": -1}, {"raw_bytes": -1}])
def test_bad_limits_are_refused(tmp_path, kwargs):
    with pytest.raises(ValueError, match="need max_bytes"):
        DeadLetterFile(tmp_path / "r.jsonl", **kwargs)
