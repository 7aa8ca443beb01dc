"""One rule's state in a file of its own, snapshotted on the data loop and written elsewhere.

A :class:`StateSnapshot` holds what one rule's state was at one moment of the data loop:
nested dicts and lists of JSON values, numpy arrays, bytes and series keys
(:class:`KeysRef`, encoded only when written). Taking it costs the loop little:

- arrays the snapshot owns (copies already made) are written as they are;
- arrays marked :class:`Live` are views of the rule's working arrays, not copies. The
  writer copies them one chunk of rows at a time, under the snapshot's lock, just before
  writing that chunk; before the data loop writes rows the writer has not reached yet,
  it calls :meth:`StateSnapshot.capture` with those rows, which copies their values
  first (copy-on-write by row), and the writer puts them back into its chunk. Only the
  rows the loop writes while a write is under way are held twice, each only until its
  chunk is written.

The contract of a live array: between the snapshot and the end of its write, the data
loop writes its rows only after :meth:`~StateSnapshot.capture` of them (or replaces the
array by a new one and leaves the old buffer alone, as growth by concatenation does).

A state file is ``AIOPS-RULESTATE <version>``, one JSON header line (the document with
placeholders, the blobs' lengths, each array's dtype and shape, the rows per chunk), then
the blobs, then the arrays: first the 0-d ones, then chunk by chunk of rows, each
array's rows of that chunk in header order. Nothing in it is pickled (blobs of pickled
third-party models are signed by their detector, :mod:`aiops.state.signing`).

- Version 2 (written since 2026-12-07): each blob, the 0-d arrays together, and each
  chunk of rows is one zstd frame (level :data:`ZSTD_LEVEL`, with zstd's content
  checksum, an xxHash64 of what it holds), after its length (8 bytes, little-endian).
  The check value the manifest records (its ``crc32``) is the CRC-32 of the magic, the
  header and every frame's length and content checksum: the decompressor checks each
  frame's content against its checksum, the manifest's value binds those checksums, so
  no separate pass over the bytes is made.
- Version 1: the same parts stored raw, the check value the CRC-32 of the whole file.
  It was written with keys as JSON (``__k__``), then also as text (``__kt__``) and the
  envelope's profiles as one array, all under version 1: the reader takes every one.

:func:`read_state` reads the arrays straight into their final buffers (version 2: each
frame decompressed into them, on a thread that lets the GIL go) and checks the size and
check value the checkpoint manifest recorded, so a torn or damaged file is refused; a
version it does not know is refused (the checkpoint falls back to the previous one).

A restore of a million series is mostly two costs, both kept small: series keys are
written as one NUL-joined UTF-8 text (:meth:`KeysRef.encode_text`; JSON if a string
holds a NUL) and read back as one string a key, cut from it (:func:`decode_keys_text`:
the texts the series registry keeps, no key object made); and the arrays read are taken
as they are by the first ``load_state_dict`` that asks for them (:func:`adopt`) instead
of being copied once more.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import threading
import weakref
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

import numpy as np
import orjson
import zstandard

from aiops.state.envelope import SnapshotRefused
from aiops.types import KeyTexts, SeriesKey, collector_paused, key_fields

__all__ = ["KeysRef", "Live", "StateSnapshot", "adopt", "read_state"]

_MAGIC_PREFIX = b"AIOPS-RULESTATE "
#: The format :meth:`StateSnapshot.write` writes (see the module doc).
FORMAT = 2
MAGIC = b"AIOPS-RULESTATE 2\n"
#: The first format: every part stored raw (still read).
MAGIC_V1 = b"AIOPS-RULESTATE 1\n"
#: zstd's level for the frames: its fastest non-negative one, which already shrinks the
#: NaN- and zero-filled rings of young series tenfold or more, and reads back faster
#: than the raw bytes would.
ZSTD_LEVEL = 1
#: zstd cannot grow data more than this (a block of one byte repeated is 4 bytes): a
#: header whose arrays would need more is refused before anything is allocated.
_MAX_RATIO = 1 << 16
#: Threads that decompress a state file's chunks of rows beside the one reading them.
DECOMPRESS_THREADS = max(1, min(4, os.cpu_count() or 1))
#: Bytes of all arrays' rows the writer copies and writes at once, under the lock.
CHUNK_BYTES = 4 << 20
#: Series keys encoded per call of the JSON encoder (a few milliseconds' work).
KEYS_PER_SLICE = 20_000
#: The longest header line a reader accepts (the document of a rule is small).
MAX_HEADER = 64 << 20
_ARRAY = "__a__"
_BLOB = "__b__"
_KEYS = "__k__"
_KEYS_TEXT = "__kt__"
#: Separator of the strings of :meth:`KeysRef.encode_text` (a key holding it is JSON).
_SEP = "\x00"

# Arrays read_state made that no load_state_dict has taken yet, by id (see adopt()).
_fresh: dict[int, weakref.ref[np.ndarray[Any, Any]]] = {}
_fresh_lock = threading.Lock()


def _mark_fresh(a: np.ndarray[Any, Any]) -> None:
    i = id(a)

    def gone(ref: weakref.ref[np.ndarray[Any, Any]]) -> None:
        with _fresh_lock:
            if _fresh.get(i) is ref:
                del _fresh[i]

    with _fresh_lock:
        _fresh[i] = weakref.ref(a, gone)


def adopt(x: Any, dtype: Any) -> np.ndarray[Any, Any]:
    """``x`` itself if :func:`read_state` made it and nothing took it yet, else a copy.

    For ``load_state_dict`` methods: an array read from a state file is owned by no
    one, so the first to load it keeps it instead of copying it (a copy of each array
    was a third of a restore); any other value (a state another object still holds,
    a list, another dtype) is copied as ``np.asarray(x, dtype).copy()`` was.
    """
    if isinstance(x, np.ndarray) and x.dtype == np.dtype(dtype):
        with _fresh_lock:
            ref = _fresh.pop(id(x), None)
        if ref is not None and ref() is x:
            return x
    return np.asarray(x, dtype=dtype).copy()


class Live:
    """An array of the running rule, written from without a copy (see the module doc)."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray[Any, Any]) -> None:
        self.array = array


class KeysRef:
    """A list of series keys as they were (a shallow copy of their texts), encoded when written."""

    __slots__ = ("texts",)

    def __init__(self, keys: Sequence[SeriesKey]) -> None:
        # A registry's keys (KeyTexts): a copy of its list of texts, one C-level copy on
        # the data loop; other keys: their texts.
        self.texts = list(keys.texts) if isinstance(keys, KeyTexts) else [k.text for k in keys]

    @property
    def keys(self) -> KeyTexts:
        """The keys (made when read)."""
        return KeyTexts(self.texts)

    def encode_text(self) -> bytes | None:
        """The keys as one UTF-8 text, rebuilt in bulk by :func:`decode_keys_text`.

        ``n`` (8 bytes, little-endian), each key's label count (one byte each), then
        every key's name, label names and values joined by NUL: the keys' texts
        (:attr:`SeriesKey.text`) joined by NUL. None if a string holds a NUL or cannot
        be encoded, a label is not a pair of strings (the text of such a key holds one
        NUL), or a key has 256 labels or more (:meth:`encode` then).
        Built in slices of :data:`KEYS_PER_SLICE` keys, as :meth:`encode` is.
        """
        keys = self.texts
        counts = bytearray()
        texts: list[bytes] = []
        for i in range(0, len(keys), KEYS_PER_SLICE):
            part = keys[i : i + KEYS_PER_SLICE]
            seps = np.fromiter(map(str.count, part, itertools.repeat(_SEP)), np.int64, len(part))
            if (seps & 1).any() or (len(seps) and int(seps.max()) > 2 * 255):
                return None
            try:
                texts.append(_SEP.join(part).encode())
            except UnicodeEncodeError:  # a lone surrogate
                return None
            counts += (seps // 2).astype(np.uint8).tobytes()
        return len(keys).to_bytes(8, "little") + bytes(counts) + _SEP.encode().join(texts)

    def encode(self) -> bytes:
        """JSON ``[[name, [[label, value], ...]], ...]``.

        In slices of :data:`KEYS_PER_SLICE`: one call of the encoder holds the GIL
        throughout, and the data loop runs between two.
        """
        keys = self.texts
        parts = [
            orjson.dumps(list(map(key_fields, keys[i : i + KEYS_PER_SLICE])))[1:-1]
            for i in range(0, len(keys), KEYS_PER_SLICE)
        ]
        return b"[" + b",".join(parts) + b"]"


def decode_keys(data: bytes) -> KeyTexts:
    """What :meth:`KeysRef.encode` wrote, as keys."""
    # Millions of new objects that are not garbage: without the cyclic collector's
    # passes over the whole heap meanwhile (they made this several times slower).
    with collector_paused():
        doc = orjson.loads(data)
        if not isinstance(doc, list):
            raise ValueError("series keys are not a list")
        return KeyTexts([SeriesKey(name, tuple(map(tuple, labels))).text for name, labels in doc])


def decode_keys_text(data: bytes) -> KeyTexts:
    """What :meth:`KeysRef.encode_text` wrote, as keys held as their texts.

    Each key's text is the part of the whole text between two of its NULs (its name,
    label names and values joined by NUL, :attr:`SeriesKey.text`): the NULs found by
    one numpy pass, the keys' ends picked from them by the label counts, then one
    C-level ``map`` of slices. One string a key, no key made (the series registry keeps
    the texts). With them the registry's index (:attr:`KeyTexts.rows`), made here, on
    the loading thread, while other threads still decompress the arrays, rather than
    after them.
    """
    if len(data) < 8:
        raise ValueError("series keys are cut short")
    n = int.from_bytes(data[:8], "little")
    if n < 0 or 8 + n > len(data):
        raise ValueError("series keys are cut short")
    counts = np.frombuffer(data, dtype=np.uint8, count=n, offset=8).astype(np.int64)
    fields = 1 + 2 * counts
    total = int(fields.sum())
    if n == 0:
        if len(data) != 8:
            raise ValueError("series keys: bytes after the last key")
        return KeyTexts([])
    body = data[8 + n :]
    text = body.decode()
    if len(text) == len(body):  # ASCII: a byte a character
        chars: np.ndarray[Any, Any] = np.frombuffer(body, dtype=np.uint8)
    else:
        chars = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    seps = np.flatnonzero(chars == 0)
    if len(seps) != total - 1:
        raise ValueError(f"series keys hold {len(seps) + 1} strings, {total} declared")
    cut = seps[np.cumsum(fields)[:-1] - 1]  # the NUL after each key but the last
    starts = np.concatenate([[0], cut + 1]).tolist()
    ends = [*cut.tolist(), len(text)]
    texts = list(map(text.__getitem__, map(slice, starts, ends)))
    rows = dict(zip(texts, range(n), strict=True))
    return KeyTexts(texts, rows if len(rows) == n else None)


def _key_blobs(doc: Any) -> list[tuple[str, int]]:
    """The (kind, blob index) of every keys placeholder in a state file's document."""
    out: list[tuple[str, int]] = []
    todo = [doc]
    while todo:
        x = todo.pop()
        if isinstance(x, dict):
            if len(x) == 1:
                ((k, v),) = x.items()
                if k in (_KEYS, _KEYS_TEXT):
                    if not isinstance(v, int) or v < 0:
                        raise ValueError(f"bad keys placeholder {v!r}")
                    out.append((k, v))
                    continue
            todo.extend(x.values())
        elif isinstance(x, list):
            todo.extend(x)
    return out


class StateSnapshot:
    """One rule's state at one moment; :meth:`write` from any thread, once."""

    def __init__(self, state: Any) -> None:
        self._lock = threading.Lock()
        self._arrays: list[np.ndarray[Any, Any]] = []
        self._live: list[bool] = []
        self._blobs: list[bytes | KeysRef] = []
        self._blob_slots: list[dict[str, int]] = []
        self.doc = self._flatten(state)
        rows = [a for a in self._arrays if a.ndim]
        row_bytes = sum(a.itemsize * int(np.prod(a.shape[1:], dtype=np.int64)) for a in rows)
        self.chunk_rows = max(1, CHUNK_BYTES // max(1, row_bytes))
        self.n_rows = max((len(a) for a in rows), default=0)
        self.n_chunks = -(-self.n_rows // self.chunk_rows)
        # Rows the data loop copied before it wrote them: each capture's sorted rows and
        # their values in every live array (None for the others), dropped once written.
        self._copied = np.zeros(self.n_rows, dtype=bool)
        self._overlays: list[tuple[np.ndarray[Any, Any], list[np.ndarray[Any, Any] | None]]] = []
        self._passed = 0  # rows below this one the writer has taken
        self._released = not any(self._live)

    def _flatten(self, x: Any) -> Any:
        if isinstance(x, Live | np.ndarray):
            live = isinstance(x, Live)
            a = x.array if isinstance(x, Live) else x
            if a.dtype.hasobject:
                raise TypeError("object arrays cannot be stored; use lists of plain values")
            self._arrays.append(a)
            self._live.append(live and a.ndim > 0)
            return {_ARRAY: len(self._arrays) - 1}
        if isinstance(x, KeyTexts):  # keys as read_state gives them back: written as keys
            x = KeysRef(x)
        if isinstance(x, KeysRef | bytes | bytearray):
            self._blobs.append(x if isinstance(x, KeysRef) else bytes(x))
            # Keys: text or JSON, decided when written (the slot is filled in then).
            slot = {_BLOB: len(self._blobs) - 1}
            self._blob_slots.append(slot)
            return slot
        if isinstance(x, dict):
            return {str(k): self._flatten(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [self._flatten(v) for v in x]
        if isinstance(x, np.generic):
            return x.item()
        if x is None or isinstance(x, str | int | float | bool):
            return x
        raise TypeError(f"cannot store a {type(x).__name__} in a snapshot")

    # -- the data loop's side ---------------------------------------------------------

    @property
    def pending(self) -> bool:
        """True while live arrays may still be read by the writer."""
        return not self._released

    def capture(self, rows: np.ndarray[Any, Any] | Sequence[int]) -> int:
        """Copy the values of ``rows`` the writer has not taken yet; how many rows.

        Called by the data loop before it writes those rows of a live array: it costs a
        copy of the rows the loop writes, whatever their order.
        """
        if self._released:
            return 0
        r = np.asarray(rows, dtype=np.int64)
        if not len(r):
            return 0
        with self._lock:
            r = r[(r >= self._passed) & (r < self.n_rows)]
            if not len(r):
                return 0
            r = np.unique(r[~self._copied[r]])
            if not len(r):
                return 0
            self._copied[r] = True
            # An array shorter than the snapshot's rows takes the rows it has (a prefix).
            values = [
                arr[r[: np.searchsorted(r, len(arr))]] if live else None
                for arr, live in zip(self._arrays, self._live, strict=True)
            ]
            self._overlays.append((r, values))
        return len(r)

    def capture_all(self) -> int:
        """Copy every row the writer has not taken yet (before writes of any row)."""
        if self._released:
            return 0
        return self.capture(np.arange(self.n_rows))

    def release(self) -> None:
        """The live arrays are no longer read (written, or given up); drops the copies."""
        with self._lock:
            self._released = True
            self._overlays.clear()

    # -- the writer's side --------------------------------------------------------------

    def write(self, fh: IO[bytes], *, version: int = FORMAT) -> tuple[int, int]:
        """Write the state file; returns ``(size, check value)``. Releases the live arrays.

        ``version`` 1 writes the earlier raw format (for tests of its reading).
        """
        if version not in (1, FORMAT):
            raise ValueError(f"no rule state format {version}")
        try:
            return self._write(fh, version)
        finally:
            self.release()

    def _write(self, fh: IO[bytes], version: int) -> tuple[int, int]:
        out = _Counting(fh, crc=version == 1)
        blobs: list[bytes] = []
        for i, (b, slot) in enumerate(zip(self._blobs, self._blob_slots, strict=True)):
            if isinstance(b, KeysRef):
                text = b.encode_text()
                slot.clear()
                slot[_KEYS if text is None else _KEYS_TEXT] = i
                blobs.append(b.encode() if text is None else text)
            else:
                blobs.append(b)
        header = {
            "doc": self.doc,
            "blobs": [len(b) for b in blobs],
            "arrays": [[a.dtype.str, list(a.shape)] for a in self._arrays],
            "chunk_rows": self.chunk_rows,
        }
        magic = MAGIC_V1 if version == 1 else MAGIC
        line = json.dumps(header, allow_nan=True, separators=(",", ":")).encode() + b"\n"
        out.write(magic)
        out.write(line)
        scalars = [
            np.ascontiguousarray(a).reshape(1).data.cast("B") for a in self._arrays if a.ndim == 0
        ]
        if version == 1:
            for b in blobs:
                out.write(b)
            del blobs
            for part in scalars:
                out.write(part)
            for parts in self._chunks():
                for part in parts:
                    out.write(part)
            return out.size, out.crc
        frames = _Frames(out, zlib.crc32(line, zlib.crc32(magic)))
        for b in blobs:
            frames.write([b])
        del blobs
        frames.write(scalars)
        for parts in self._chunks():
            frames.write(parts)
        return out.size, frames.check

    def _chunks(self) -> Iterator[list[memoryview]]:
        """Each chunk of rows: every array's rows of it, as they were at the snapshot."""
        rows = self.chunk_rows
        for c in range(self.n_chunks):
            lo, hi = c * rows, (c + 1) * rows
            with self._lock:  # the loop copies rows under it before it writes them
                pieces = [
                    arr[lo:hi].copy() if live else None
                    for arr, live in zip(self._arrays, self._live, strict=True)
                ]
                patches = []
                for r, values in self._overlays:
                    i, j = np.searchsorted(r, np.array([lo, hi])).tolist()
                    if i < j:
                        patches.append(
                            (r[i:j] - lo, [None if v is None else v[i:j] for v in values])
                        )
                self._passed = hi
                self._overlays = [o for o in self._overlays if o[0][-1] >= hi]
            for at, values in patches:  # rows the loop wrote since: their snapshot values
                for piece, v in zip(pieces, values, strict=True):
                    if piece is not None and v is not None and len(v):
                        piece[at[: len(v)]] = v
            parts = []
            for arr, piece in zip(self._arrays, pieces, strict=True):
                if arr.ndim == 0:
                    continue
                part = piece if piece is not None else arr[lo:hi]
                if part.nbytes:  # rows of no bytes (a (k, 0) array) cannot be cast
                    parts.append(np.ascontiguousarray(part).data.cast("B"))
            del pieces, patches
            yield parts
            del parts


class _Frames:
    """Writes zstd frames, each after its length, and their check value (module doc)."""

    def __init__(self, out: _Counting, check: int) -> None:
        self.out = out
        self.check = check
        self.cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)

    def write(self, parts: Sequence[bytes | memoryview]) -> None:
        """One frame of ``parts`` one after the other (compressed as they come)."""
        cobj = self.cctx.compressobj()
        bits = [cobj.compress(p) for p in parts]
        bits.append(cobj.flush())
        body = b"".join(bits)
        prefix = len(body).to_bytes(8, "little")
        self.out.write(prefix)
        self.out.write(body)
        self.check = zlib.crc32(body[-4:], zlib.crc32(prefix, self.check))


class _Counting:
    """A write-only file that counts the bytes and (with ``crc``) their CRC-32."""

    def __init__(self, fh: IO[bytes], *, crc: bool = True) -> None:
        self.fh = fh
        self.size = 0
        self.crc = 0
        self._crc = crc

    def write(self, data: bytes | memoryview) -> None:
        self.fh.write(data)
        self.size += len(data)
        if self._crc:
            self.crc = zlib.crc32(data, self.crc)


def read_state(fh: IO[bytes], *, size: int, crc32: int) -> Any:
    """Read a state file :meth:`StateSnapshot.write` made; refuse it unless whole and intact.

    Raises :class:`~aiops.state.envelope.SnapshotRefused` for a file of another size or
    check value than the manifest says (``crc32``: see the module doc), one of a format
    version this release does not read, or one that does not parse.
    """
    short = "rule state refused: the file is shorter than its header says"
    magic = fh.readline(len(_MAGIC_PREFIX) + 8)
    if magic not in (MAGIC, MAGIC_V1):
        version = magic[len(_MAGIC_PREFIX) : -1]
        if magic.startswith(_MAGIC_PREFIX) and magic.endswith(b"\n") and version.isdigit():
            raise SnapshotRefused(
                f"rule state refused: format version {int(version)} is not one this release"
                f" reads (it reads 1 to {FORMAT})"
            )
        raise SnapshotRefused("rule state refused: not an aiops rule state file")
    raw = magic == MAGIC_V1
    line = fh.readline(MAX_HEADER)
    if not line.endswith(b"\n"):
        raise SnapshotRefused("rule state refused: its header is cut off")
    got = len(magic) + len(line)
    check = zlib.crc32(line, zlib.crc32(magic))
    try:
        header = json.loads(line)
        specs = [(np.dtype(str(d)), tuple(int(s) for s in shape)) for d, shape in header["arrays"]]
        blob_sizes = [int(n) for n in header["blobs"]]
        rows = int(header["chunk_rows"])
        doc = header["doc"]
    except (ValueError, KeyError, TypeError, SyntaxError) as exc:  # np.dtype may parse
        raise SnapshotRefused(f"rule state refused: unreadable header ({exc})") from None
    nbytes = [dt.itemsize * int(np.prod(shape, dtype=object)) for dt, shape in specs]
    content = sum(blob_sizes) + sum(nbytes)
    if (
        rows < 1
        or any(dt.hasobject for dt, _ in specs)
        or any(d < 0 for _, shape in specs for d in shape)
        or any(n < 0 for n in blob_sizes)
        or (got + content != size if raw else content > _MAX_RATIO * size)
    ):
        raise SnapshotRefused("rule state refused: its header does not fit its size")
    n_rows = max((len(shape) and shape[0] for _, shape in specs), default=0)

    # Version 1: the parts as they are, the check value the CRC-32 of every byte.
    def take_into(view: memoryview) -> None:
        nonlocal check, got
        if fh.readinto(view) != len(view):  # type: ignore[attr-defined]
            raise SnapshotRefused(short)
        check = zlib.crc32(view, check)
        got += len(view)

    # Version 2: zstd frames, each after its length; the check value binds their checksums.
    def frame() -> bytes:
        nonlocal check, got
        prefix = fh.read(8)
        n = int.from_bytes(prefix, "little")
        if len(prefix) != 8 or n > size - got - 8:
            raise SnapshotRefused(short)
        data = fh.read(n)
        if len(data) != n or n < 4:
            raise SnapshotRefused(short)
        check = zlib.crc32(data[-4:], zlib.crc32(prefix, check))
        got += 8 + n
        return data

    def unframe(dctx: zstandard.ZstdDecompressor, views: Sequence[memoryview]) -> None:
        _decompress_into(dctx, frame(), views)

    dctx = zstandard.ZstdDecompressor()
    arrays = [np.empty(shape, dtype=dt) for dt, shape in specs]
    for a in arrays:
        _mark_fresh(a)
    if raw:
        blobs = []
        for n in blob_sizes:
            b = bytearray(n)
            take_into(memoryview(b))
            blobs.append(bytes(b))
    else:
        blobs = []
        for n in blob_sizes:
            b = bytearray(n)
            unframe(dctx, [memoryview(b)])
            blobs.append(bytes(b))
    scalars = [a.reshape(1).data.cast("B") for a in arrays if a.ndim == 0]
    if raw:
        for view in scalars:
            take_into(view)
    else:
        unframe(dctx, scalars)

    def chunk_views(c: int) -> list[memoryview]:
        views = []
        for a in arrays:
            if a.ndim:
                part = a[c * rows : (c + 1) * rows]
                if part.nbytes:
                    views.append(part.data.cast("B"))
        return views

    def read_rows() -> None:
        chunks = range(-(-n_rows // rows))
        if raw:
            for c in chunks:
                for view in chunk_views(c):
                    take_into(view)
        else:
            # This thread reads the frames; DECOMPRESS_THREADS decompress them (zstd lets
            # the GIL go), at most two each waiting.
            local = threading.local()

            def work(data: bytes, views: list[memoryview]) -> None:
                if not hasattr(local, "dctx"):
                    local.dctx = zstandard.ZstdDecompressor()
                _decompress_into(local.dctx, data, views)

            with ThreadPoolExecutor(DECOMPRESS_THREADS, "rulestate-zstd") as pool:
                waiting: collections.deque[Future[None]] = collections.deque()
                try:
                    for c in chunks:
                        if len(waiting) >= 2 * DECOMPRESS_THREADS:
                            waiting.popleft().result()
                        waiting.append(pool.submit(work, frame(), chunk_views(c)))
                    while waiting:
                        waiting.popleft().result()
                finally:
                    for f in waiting:
                        f.cancel()
        if fh.read(1) or got != size:
            raise SnapshotRefused("rule state refused: bytes after its end")

    return _finish(doc, blobs, arrays, read_rows, lambda: check == crc32)


def _decompress_into(
    dctx: zstandard.ZstdDecompressor, data: bytes, views: Sequence[memoryview]
) -> None:
    """Decompress the zstd frame ``data`` into ``views``, which it must fill exactly."""
    try:
        if not zstandard.get_frame_parameters(data).has_checksum:
            raise SnapshotRefused("rule state refused: a frame without its content checksum")
        reader = dctx.stream_reader(data)
        for view in views:
            filled = 0
            while filled < len(view):
                n = reader.readinto(view[filled:])
                if not n:
                    raise SnapshotRefused(
                        "rule state refused: a frame holds less than its header says"
                    )
                filled += n
        if reader.read(1):  # also reads the frame's end: its content checksum checked
            raise SnapshotRefused("rule state refused: a frame holds more than its header says")
    except zstandard.ZstdError as exc:
        raise SnapshotRefused(f"rule state refused: a damaged frame ({exc})") from None


def _finish(
    doc: Any,
    blobs: list[bytes],
    arrays: list[np.ndarray[Any, Any]],
    read_rows: Callable[[], None],
    intact: Callable[[], bool],
) -> Any:
    """Run ``read_rows`` on a thread while the keys are rebuilt here; the document."""
    # The arrays are read (version 2: decompressed) on another thread (readinto, crc32
    # and zstd let the GIL go) while this one rebuilds the series keys (which holds it):
    # the two overlap. Nothing decoded is used unless the whole file's check is right.
    failed: list[BaseException] = []

    def reader_run() -> None:
        try:
            read_rows()
        except BaseException as exc:  # raised below, on the caller's thread
            failed.append(exc)

    reader = threading.Thread(target=reader_run, name="rulestate-read", daemon=True)
    reader.start()
    keys: dict[tuple[str, int], KeyTexts] = {}
    bad_keys: Exception | None = None
    try:
        for kind, i in _key_blobs(doc):
            data = blobs[i]
            keys[kind, i] = decode_keys(data) if kind == _KEYS else decode_keys_text(data)
    except (ValueError, IndexError, TypeError) as exc:
        bad_keys = exc
    finally:
        reader.join()
    if failed:
        raise failed[0]
    if not intact():
        raise SnapshotRefused("rule state refused: checksum mismatch (corrupt or torn)")
    if bad_keys is not None:
        raise SnapshotRefused(f"rule state refused: {bad_keys}") from None

    def decode(x: Any) -> Any:
        if isinstance(x, dict):
            if len(x) == 1:
                ((k, v),) = x.items()
                if k == _ARRAY:
                    return arrays[int(v)]
                if k == _BLOB:
                    return blobs[int(v)]
                if k in (_KEYS, _KEYS_TEXT):
                    return keys[k, int(v)]
            return {k: decode(v) for k, v in x.items()}
        if isinstance(x, list):
            return [decode(v) for v in x]
        return x

    try:
        return decode(doc)
    except (ValueError, IndexError, TypeError) as exc:
        raise SnapshotRefused(f"rule state refused: {exc}") from None
