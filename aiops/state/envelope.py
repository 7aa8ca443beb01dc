"""State stores, the versioned envelope around every blob, and plain-data serialization.

Three layers, each small:

- :func:`dumps` / :func:`loads` turn nested dicts and lists of JSON values and numpy
  arrays into bytes and back, without pickle: arrays go into an ``.npz`` archive
  (``allow_pickle=False``) and everything else into one JSON document inside it.
- :func:`seal` / :func:`unseal` wrap a payload in a versioned envelope: one JSON header
  line (format version, package and library versions, creation time, kind, SHA-256 of
  the payload, and an HMAC when the payload holds pickled third-party models) followed
  by the payload. :func:`unseal` refuses an unknown format, a bad hash or a bad
  signature with :class:`SnapshotRefused`, never returning suspect data.
- A :class:`StateStore` is bytes in, bytes out, by name (Drain3's two-method seam):
  :class:`FileStateStore` writes atomically (temp file, fsync, rename, fsync of the
  directory); :class:`MemoryStateStore` is the test double.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np

import aiops

__all__ = [
    "ENVELOPE_FORMAT",
    "FileStateStore",
    "MemoryStateStore",
    "SnapshotRefused",
    "StateStore",
    "dumps",
    "loads",
    "seal",
    "unseal",
]

#: Bump when the envelope header or the payload encoding changes incompatibly.
ENVELOPE_FORMAT = 1
_MAGIC = b"AIOPS-STATE"
_ARRAY_TAG = "__ndarray__"
_BYTES_TAG = "__bytes__"
HMAC_KEY_ENV = "AIOPS_STATE_HMAC_KEY"
_T = TypeVar("_T")


class SnapshotRefused(ValueError):
    """A stored blob that must not be loaded; the message says why."""


def dumps(obj: Any) -> bytes:
    """Encode nested dicts/lists of JSON values, numpy arrays and bytes, without pickle.

    >>> blob = dumps({"mu": np.array([1.0, 2.0]), "n": 3, "keys": ["a", "b"]})
    >>> out = loads(blob)
    >>> out["mu"].tolist(), out["n"], out["keys"]
    ([1.0, 2.0], 3, ['a', 'b'])
    """
    arrays: dict[str, np.ndarray[Any, Any]] = {}

    def encode(x: Any) -> Any:
        if isinstance(x, np.ndarray):
            if x.dtype.hasobject:
                raise TypeError("object arrays cannot be stored; use lists of plain values")
            name = f"a{len(arrays)}"
            arrays[name] = x
            return {_ARRAY_TAG: name}
        if isinstance(x, bytes | bytearray):
            name = f"a{len(arrays)}"
            arrays[name] = np.frombuffer(bytes(x), dtype=np.uint8)
            return {_BYTES_TAG: name}
        if isinstance(x, dict):
            return {str(k): encode(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [encode(v) for v in x]
        if isinstance(x, np.generic):
            return x.item()
        if x is None or isinstance(x, str | int | float | bool):
            return x
        raise TypeError(f"cannot store a {type(x).__name__} in a snapshot")

    doc = json.dumps(encode(obj), allow_nan=True, separators=(",", ":"))
    arrays["__doc__"] = np.frombuffer(doc.encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def loads(data: bytes) -> Any:
    """Decode what :func:`dumps` wrote."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    doc = json.loads(arrays.pop("__doc__").tobytes().decode())

    def decode(x: Any) -> Any:
        if isinstance(x, dict):
            if len(x) == 1 and _ARRAY_TAG in x:
                return arrays[x[_ARRAY_TAG]]
            if len(x) == 1 and _BYTES_TAG in x:
                return arrays[x[_BYTES_TAG]].tobytes()
            return {k: decode(v) for k, v in x.items()}
        if isinstance(x, list):
            return [decode(v) for v in x]
        return x

    return decode(doc)


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("numpy", "river", "scikit-learn", "statsmodels"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def _hmac_key() -> bytes | None:
    key = os.environ.get(HMAC_KEY_ENV, "")
    return key.encode() if key else None


def seal(payload: bytes, *, kind: str, signed: bool = False) -> bytes:
    """Wrap ``payload`` in a versioned envelope.

    ``signed=True`` is for payloads holding pickled third-party models: the header then
    carries an HMAC-SHA256 of the payload under the key in ``$AIOPS_STATE_HMAC_KEY``,
    and sealing without that key raises :class:`ValueError`.
    """
    header: dict[str, Any] = {
        "format": ENVELOPE_FORMAT,
        "kind": kind,
        "package": "aiopsd",
        "version": aiops.__version__,
        "libraries": _library_versions(),
        "created": time.time(),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    if signed:
        key = _hmac_key()
        if key is None:
            raise ValueError(f"storing pickled models needs a signing key in ${HMAC_KEY_ENV}")
        header["hmac"] = hmac.new(key, payload, hashlib.sha256).hexdigest()
    line = json.dumps(header, sort_keys=True).encode()
    return _MAGIC + b" " + line + b"\n" + payload


def unseal(blob: bytes, *, kind: str) -> tuple[dict[str, Any], bytes]:
    """Check an envelope and return ``(header, payload)``; refuse anything suspect.

    >>> header, payload = unseal(seal(b"abc", kind="test"), kind="test")
    >>> payload, header["format"]
    (b'abc', 1)
    >>> unseal(seal(b"abc", kind="test")[:-1] + b"x", kind="test")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    aiops.state.envelope.SnapshotRefused: test snapshot refused: content hash mismatch (corrupt ...)
    """
    prefix = _MAGIC + b" "
    head, sep, payload = blob.partition(b"\n")
    if not head.startswith(prefix) or not sep:
        raise SnapshotRefused(f"{kind} snapshot refused: not an aiops state envelope")
    try:
        header = json.loads(head[len(prefix) :])
    except ValueError as exc:
        raise SnapshotRefused(f"{kind} snapshot refused: unreadable header ({exc})") from None
    if header.get("format") != ENVELOPE_FORMAT:
        raise SnapshotRefused(
            f"{kind} snapshot refused: envelope format {header.get('format')!r} is not "
            f"{ENVELOPE_FORMAT} (written by aiopsd {header.get('version')})"
        )
    if header.get("kind") != kind:
        raise SnapshotRefused(f"{kind} snapshot refused: it holds a {header.get('kind')!r} blob")
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise SnapshotRefused(
            f"{kind} snapshot refused: content hash mismatch (corrupt or truncated)"
        )
    if "hmac" in header:
        key = _hmac_key()
        if key is None:
            raise SnapshotRefused(
                f"{kind} snapshot refused: it is signed and ${HMAC_KEY_ENV} is unset"
            )
        expected = hmac.new(key, payload, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, str(header["hmac"])):
            raise SnapshotRefused(f"{kind} snapshot refused: signature does not match")
    return header, payload


class StateStore(ABC):
    """Bytes in, bytes out, by name. ``save`` is atomic: a reader sees old or new."""

    @abstractmethod
    def save(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name``, replacing what was there, atomically."""

    @abstractmethod
    def load(self, name: str) -> bytes | None:
        """The bytes stored under ``name``, or None if nothing is."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove ``name`` if present."""

    @abstractmethod
    def rename(self, name: str, new_name: str) -> bool:
        """Move ``name`` over ``new_name`` atomically; False if ``name`` did not exist."""

    @abstractmethod
    def names(self, prefix: str = "") -> list[str]:
        """Stored names starting with ``prefix``, sorted."""

    def save_stream(self, name: str, write: Callable[[IO[bytes]], _T]) -> _T:
        """Store what ``write`` writes to the file it is given, atomically, as :meth:`save`.

        Returns what ``write`` returns. This default collects the bytes in memory first;
        :class:`FileStateStore` writes them to the file as they come.
        """
        buf = io.BytesIO()
        out = write(buf)
        self.save(name, buf.getvalue())
        return out

    def open(self, name: str) -> IO[bytes] | None:
        """The stored bytes under ``name`` as a file to read, or None if nothing is."""
        data = self.load(name)
        return None if data is None else io.BytesIO(data)


class FileStateStore(StateStore):
    """One file per name under a directory; names may contain ``/`` for sub-folders."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"state name {name!r} escapes the state directory")
        return path

    def save(self, name: str, data: bytes) -> None:
        """Write to a temp file, fsync it, rename it over the old one, fsync the folder."""
        self.save_stream(name, lambda f: f.write(data))

    def save_stream(self, name: str, write: Callable[[IO[bytes]], _T]) -> _T:
        """Like :meth:`save`, with the bytes written to the temp file as ``write`` makes them."""
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                out = write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return out

    def load(self, name: str) -> bytes | None:
        """The file's bytes, or None if it does not exist."""
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            return None

    def open(self, name: str) -> IO[bytes] | None:
        """The file opened for reading, or None if it does not exist."""
        try:
            return self._path(name).open("rb")
        except FileNotFoundError:
            return None

    def delete(self, name: str) -> None:
        """Remove the file if it exists, and its folder under the root once empty."""
        path = self._path(name)
        path.unlink(missing_ok=True)
        root = self.root.resolve()
        parent = path.parent
        while parent != root and parent.is_relative_to(root):
            try:
                parent.rmdir()
            except OSError:  # not empty (or gone): stop there
                break
            parent = parent.parent

    def rename(self, name: str, new_name: str) -> bool:
        """``os.replace``, then fsync of the folder: readers see the old or the new name."""
        src, dst = self._path(name), self._path(new_name)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(src, dst)
        except FileNotFoundError:
            return False
        dir_fd = os.open(dst.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return True

    def names(self, prefix: str = "") -> list[str]:
        """Stored names (relative paths) starting with ``prefix``; temp files excluded."""
        out = []
        for p in self.root.rglob("*"):
            if p.is_file() and not p.name.startswith("."):
                rel = p.relative_to(self.root).as_posix()
                if rel.startswith(prefix):
                    out.append(rel)
        return sorted(out)


class MemoryStateStore(StateStore):
    """A dict-backed store for tests and plugin authors."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def save(self, name: str, data: bytes) -> None:
        """Store a copy of ``data``."""
        with self._lock:
            self._data[name] = bytes(data)

    def load(self, name: str) -> bytes | None:
        """The stored bytes or None."""
        with self._lock:
            return self._data.get(name)

    def delete(self, name: str) -> None:
        """Forget ``name``."""
        with self._lock:
            self._data.pop(name, None)

    def rename(self, name: str, new_name: str) -> bool:
        """Move the bytes to ``new_name``; False if ``name`` was not stored."""
        with self._lock:
            if name not in self._data:
                return False
            self._data[new_name] = self._data.pop(name)
            return True

    def names(self, prefix: str = "") -> list[str]:
        """Stored names starting with ``prefix``, sorted."""
        with self._lock:
            return sorted(n for n in self._data if n.startswith(prefix))
