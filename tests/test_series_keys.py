"""Series keys as one string each: the text form, and the registry that holds only texts."""

from __future__ import annotations

import io
import tracemalloc
from typing import Any

import numpy as np
import pytest

from aiops.pipeline.series import DROPPED, NOT_SELECTED, SeriesRegistry
from aiops.state import rulestate
from aiops.state.rulestate import KeysRef, StateSnapshot, read_state
from aiops.types import KeyTexts, SeriesKey, key_fields, key_text

PLAIN = [
    SeriesKey("up"),
    SeriesKey(""),
    SeriesKey.of("cpu", {"host": "a", "dc": "x"}),
    SeriesKey.of("", {"": ""}),
    SeriesKey.of("m", {"q": 'a"\n\\', "h": "h\u00e9\u2603"}),
]
# Keys a plain NUL-joined text could not tell from others: each must get a text of its own.
ODD: list[Any] = [
    SeriesKey("a\x00b"),  # a NUL in the name: would read as a label
    SeriesKey("a", (("b\x00c", "d"),)),
    SeriesKey("a", (("b", "c\x00d"),)),
    SeriesKey("a", (("b", 7),)),  # type: ignore[arg-type]  # not a string
    SeriesKey("a", (("b", "7"), ("c",))),  # type: ignore[arg-type]  # a pair of one
    SeriesKey("a", (("b",), ("7", "c", "d"))),  # type: ignore[arg-type]  # one and three
    SeriesKey("a", ("bc",)),  # type: ignore[arg-type]  # a string, not a pair
    SeriesKey("a", (("b", "c", "d"),)),  # type: ignore[arg-type]
    SeriesKey("\x00", ()),
]


def test_every_key_has_a_text_of_its_own_and_is_made_again_from_it() -> None:
    keys = PLAIN + ODD + [SeriesKey("a", (("b", "c"),)), SeriesKey("a", (("b", "c"), ("d", "7")))]
    texts = [k.text for k in keys]
    assert len(set(texts)) == len(keys)  # no two keys share a text
    assert len(set(keys)) == len(keys)
    for k in keys:
        again = SeriesKey.from_text(k.text)
        assert again == k
        assert hash(again) == hash(k)
        assert again.text == k.text
        assert (again.name, again.labels) == (k.name, k.labels)
        assert key_fields(k.text) == (k.name, k.labels)
    # A plain key's text is its strings joined by NUL; a key text cannot hold, one NUL first.
    assert SeriesKey.of("cpu", {"host": "a"}).text == "cpu\x00host\x00a"
    assert SeriesKey("up").text == "up"
    assert all(k.text.startswith("\x00") and k.text.count("\x00") == 1 for k in ODD)


def test_keys_compare_and_hash_as_their_texts_however_made() -> None:
    a = SeriesKey.of("cpu", {"host": "a", "dc": "x"})
    b = SeriesKey("cpu", (("dc", "x"), ("host", "a")))
    assert a == b
    assert hash(a) == hash(b)
    assert a.text == b.text == key_text(b.name, b.labels)
    assert a != SeriesKey.of("cpu", {"host": "a"})
    assert a != a.text  # a key is not equal to its text
    assert {a: 1}[b] == 1


def _keys(n: int, prefix: str = "p") -> list[SeriesKey]:
    return [SeriesKey.of("m", {"pod": f"{prefix}{i}", "ns": "x"}) for i in range(n)]


def test_the_registry_holds_texts_and_finds_rows_by_keys_made_again() -> None:
    reg = SeriesRegistry(lambda k: k.name == "m", max_series=3)
    first = reg.resolve([*_keys(2), SeriesKey("other"), *_keys(2)])
    assert first.tolist() == [0, 1, NOT_SELECTED, 0, 1]
    assert reg.keys.texts == [k.text for k in _keys(2)]
    assert set(map(type, reg.keys.texts)) == {str}
    # New key objects equal to the registered ones find their rows.
    assert reg.resolve(_keys(2)[::-1]).tolist() == [1, 0]
    assert reg.lookup([*_keys(2), SeriesKey("other"), _keys(3)[2]]).tolist() == [0, 1, -1, -1]
    assert reg.resolve(_keys(4)).tolist() == [0, 1, 2, DROPPED]
    assert reg.key(2) == _keys(3)[2]
    assert isinstance(reg.key(2), SeriesKey)
    assert list(reg.keys) == _keys(3)
    assert reg.keys == _keys(3)
    assert reg.keys[1:] == _keys(3)[1:]
    assert reg.free([1]) == 1
    assert not reg.is_live(1)
    assert reg.is_live(2)
    assert reg.resolve([_keys(4)[3]]).tolist() == [1]  # the dropped key gets the freed row
    assert reg.take_reused() == [1]
    assert reg.dropped == 1


def test_registry_state_round_trips_as_json_as_keys_and_through_a_state_file() -> None:
    reg = SeriesRegistry(lambda k: True, max_series=10)
    keys = [*PLAIN, *ODD[:4]]
    reg.resolve(keys)
    reg.free([2])
    plain = reg.state_dict()
    assert plain["keys"][2] == ["cpu", [["dc", "x"], ["host", "a"]]]
    buf = io.BytesIO()
    size, crc = StateSnapshot(reg.snapshot_state()).write(buf)
    read = read_state(io.BytesIO(buf.getvalue()), size=size, crc32=crc)
    assert isinstance(read["keys"], KeyTexts)
    for state in (plain, {**plain, "keys": keys}, read):
        again = SeriesRegistry(lambda k: True, max_series=10)
        again.load_state_dict(state)
        assert again.keys == keys
        assert again.keys.texts == reg.keys.texts
        assert not again.is_live(2)
        assert again.live == 8
        assert again.resolve(keys).tolist() == list(range(9))  # the freed row taken again
        assert again.take_reused() == [2]
        assert again.is_live(2)
        assert len(again) == 9
    # Keys read back are written again as keys (a state read, changed and written).
    buf = io.BytesIO()
    size, crc = StateSnapshot({"keys": read["keys"]}).write(buf)
    assert read_state(io.BytesIO(buf.getvalue()), size=size, crc32=crc)["keys"] == keys
    assert KeysRef(read["keys"]).texts == read["keys"].texts


def test_a_registry_of_many_series_holds_one_small_string_a_series() -> None:
    n = 50_000
    reg = SeriesRegistry(lambda k: True, max_series=n)
    tracemalloc.start()
    try:
        keys = _keys(n)  # as a decoder makes them
        reg.resolve(keys)
        del keys  # the registry alone keeps what it needs of them
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Keys held were about 400 bytes a series for these two-label keys (the key, its
    # label tuples and strings, the index and the list); a 23-character text, the index
    # and the list are about 145.
    assert held / n < 200, f"{held / n:.0f} bytes a series"
    assert reg.resolve(_keys(n)).tolist() == np.arange(n).tolist()


def test_a_restores_index_is_taken_by_the_first_registry_and_made_anew_for_the_next() -> None:
    keys = _keys(5)
    reg = SeriesRegistry(lambda k: True, max_series=10)
    reg.resolve(keys)
    buf = io.BytesIO()
    size, crc = StateSnapshot(reg.snapshot_state()).write(buf)
    read = read_state(io.BytesIO(buf.getvalue()), size=size, crc32=crc)
    rows = read["keys"].rows
    assert rows == {k.text: i for i, k in enumerate(keys)}
    first, second = (SeriesRegistry(lambda k: True, max_series=10) for _ in range(2))
    first.load_state_dict(read)
    assert first._index is rows
    assert read["keys"].rows is None
    first.resolve([SeriesKey("new")])  # the first registry's index is its own
    second.load_state_dict(read)
    assert second._index is not rows
    assert second.resolve([*keys, SeriesKey("new")]).tolist() == [0, 1, 2, 3, 4, 5]
    assert first.resolve([SeriesKey("new")]).tolist() == [5]
    # A key listed twice: no index made, and the registry refuses the state.
    doubled = KeysRef([*keys, keys[0]]).encode_text()
    assert doubled is not None
    again = rulestate.decode_keys_text(doubled)
    assert again.rows is None
    with pytest.raises(ValueError, match="twice"):
        SeriesRegistry(lambda k: True, max_series=10).load_state_dict({"keys": again})
