"""Follow a log file like ``tail -F``: across rotation and truncation, resumably.

Each complete line is one log record, decoded by ``format``: ``lines`` (the line is the
message, timed when read), ``log_json`` or ``journald`` (see :mod:`aiops.connectors.formats`;
their ``settings`` go in ``format_settings``). ``path: "-"`` reads standard input (no
position: a restart does not resume it).

Position: ``snapshot()`` is ``{"inode", "device", "offset", "line", "mark"}`` of the
file being read, after the last line emitted (``mark``: the hex of the last bytes read).
Rotation by rename (logrotate's default): the source keeps reading the renamed file to
its end, then opens the new file at ``path`` from its start, so no line is lost. If the
daemon was stopped across a rotation, the renamed file is found by its inode in the same
folder and read to its end first. Truncation in place (``copytruncate``): when the file
is shorter than the position, or the bytes before the position are no longer those read
there (truncated, then written past the position before the next poll), a
``file_truncated`` reject says so and reading starts again at its beginning (lines
written and truncated between two polls are gone; that is ``copytruncate``'s own race).
While the file cannot be opened, ``next_batch()`` raises
:class:`~aiops.pipeline.source.SourceError`: the daemon backs off, retries and shows it
in health.

A line without its newline is not read until the newline arrives. A line longer than
``max_line_bytes`` is cut there (the rest is skipped up to the newline) and counted as a
``line_too_long`` reject with the start of the line.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any, BinaryIO, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from aiops.pipeline.decoder import Decoder
from aiops.pipeline.source import Source, SourceError
from aiops.types import Batch, LogRecord, Reject

from ..formats import create_decoder

__all__ = ["LogFileSource"]

_CHUNK = 1 << 16
#: Bytes before the position kept to tell a file truncated and written again past it.
_MARK = 64
#: Scratch buffers (see :class:`_Scratch`) larger than this are not kept between polls.
_KEEP_BYTES = 8 << 20
_NEWLINE, _COMMA, _OPEN, _CLOSE, _BRACE = b"\n,[]{"


class LogFileSource(Source):
    r"""Log records from a followed file; see the module docstring.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "app.log"
    >>> _ = path.write_text("started\nlistening on 8080\npartial")
    >>> src = LogFileSource("app", LogFileSource.Config(path=str(path), labels={"service": "api"}))
    >>> [r.message for r in src.next_batch().logs]
    ['started', 'listening on 8080']
    >>> src.snapshot()["offset"], src.snapshot()["line"]
    (26, 2)
    >>> src.close()
    >>> import shutil; shutil.rmtree(path.parent)
    """

    class Config(BaseModel):
        """Settings of a ``type: log_file`` source."""

        model_config = ConfigDict(extra="forbid", frozen=True)

        path: str = Field(min_length=1, description='The file to follow, or "-" for stdin.')
        format: Literal["lines", "log_json", "journald"] = Field(
            default="lines", description="How each line is decoded."
        )
        format_settings: dict[str, Any] = Field(
            default_factory=dict, description="Settings of the log_json or journald decoder."
        )
        labels: dict[str, str] = Field(
            default_factory=dict, description="lines: stream labels of every record."
        )
        batch_size: int = Field(default=5000, ge=1, description="At most this many lines a batch.")
        start_at: Literal["beginning", "end"] = Field(
            default="beginning", description="Without a checkpoint: read from here."
        )
        max_line_bytes: int = Field(default=1 << 20, ge=64, description="Longer lines are cut.")

    def __init__(
        self, source_id: str, config: Config, *, resume: dict[str, Any] | None = None
    ) -> None:
        self.source_id = source_id
        self.config = config
        self._decoder: Decoder | None = None
        if config.format != "lines":
            self._decoder = create_decoder(config.format, config.format_settings)
        elif config.format_settings:
            raise ValueError(
                f"log_file source {source_id!r}: format_settings needs log_json or journald"
            )
        self._labels = tuple(sorted(config.labels.items()))
        self._stdin = config.path == "-"
        self._fh: BinaryIO | None = None
        self._inode = self._device = 0
        self._offset = self._line = 0
        self._mark = b""  # the last bytes read, up to the position
        self._resume = resume
        self._fresh = resume is None
        if resume is not None:
            try:
                self._inode = int(resume["inode"])
                self._device = int(resume["device"])
                self._offset = int(resume["offset"])
                self._line = int(resume["line"])
                self._mark = bytes.fromhex(str(resume.get("mark", "")))[-_MARK:]
            except (KeyError, TypeError, ValueError):
                expected = "expected inode, device, offset, line"
                msg = f"invalid log_file resume state {resume!r}: {expected}"
                raise ValueError(msg) from None
        self._pending = b""  # stdin: a line not complete yet
        self._scratch = _Scratch()

    # -- the contract -----------------------------------------------------------------

    def next_batch(self) -> Batch:
        """Up to ``batch_size`` new complete lines, decoded; empty when none are ready."""
        if self._stdin:
            return self._stdin_batch()
        rejects: list[Reject] = []
        fh = self._current(rejects)
        if fh is None:
            return Batch(rejects=rejects)
        block, newlines = self._read_block(fh, self._offset)
        if not block and self._rotated():
            # The renamed file is read to its end: go on with the new one from its start.
            self._switch(rejects)
            fh = self._fh
            assert fh is not None
            block, newlines = self._read_block(fh, 0)
        start_line = self._line
        self._offset += len(block)
        self._line += newlines
        if block:
            self._mark = (self._mark + block[-_MARK:])[-_MARK:]
        return self._decode(block, start_line, rejects)

    def snapshot(self) -> dict[str, Any]:
        """``{"inode", "device", "offset", "line", "mark"}`` after the last line emitted."""
        return {
            "inode": self._inode,
            "device": self._device,
            "offset": self._offset,
            "line": self._line,
            "mark": self._mark.hex(),
        }

    def close(self) -> None:
        """Close the file."""
        if self._fh is not None and not self._stdin:
            self._fh.close()
        self._fh = None

    # -- files ------------------------------------------------------------------------

    def _current(self, rejects: list[Reject]) -> BinaryIO | None:
        """The open file to read, after checking for truncation; opens it if needed."""
        if self._fh is None:
            self._open_initial(rejects)
        fh = self._fh
        if fh is None:
            return None
        size = os.fstat(fh.fileno()).st_size
        if size < self._offset:
            detail = (
                f"{self.config.path} has {size} bytes but the position was byte {self._offset} "
                f"(line {self._line}): truncated; reading it again from the start"
            )
        elif self._mark and self._mark_at(fh, self._offset) != self._mark:
            detail = (
                f"{self.config.path}: the bytes before the position (byte {self._offset}, line "
                f"{self._line}) changed: truncated and written again; reading it from the start"
            )
        else:
            return fh
        rejects.append(Reject("file_truncated", detail, origin=self.config.path))
        self._offset = self._line = 0
        self._mark = b""
        return fh

    def _mark_at(self, fh: BinaryIO, offset: int) -> bytes:
        """The ``len(self._mark)`` bytes of the file before ``offset``."""
        n = min(len(self._mark), offset)
        return os.pread(fh.fileno(), n, offset - n) if n else b""

    def _open_initial(self, rejects: list[Reject]) -> None:
        path = self.config.path
        try:
            fh = open(path, "rb")  # noqa: SIM115 - kept open across polls
        except OSError as e:
            raise SourceError(f"log_file source {self.source_id!r}: cannot open {path}: {e}") from e
        st = os.fstat(fh.fileno())
        if self._fresh:
            self._fresh = False
            self._inode, self._device = st.st_ino, st.st_dev
            self._offset = st.st_size if self.config.start_at == "end" else 0
            if self._offset:
                self._offset = self._line_start(fh, self._offset)
                n = min(_MARK, self._offset)
                self._mark = os.pread(fh.fileno(), n, self._offset - n)
            self._fh = fh
            return
        if (st.st_ino, st.st_dev) == (self._inode, self._device):
            self._fh = fh
            return
        # Rotated while we were stopped: finish the renamed file first, if it is there.
        old = self._find_inode()
        if old is not None:
            fh.close()
            self._fh = old
            return
        detail = (
            f"{path} is a new file and the one read before (inode {self._inode}) is gone; "
            f"lines after its byte {self._offset} were not read"
        )
        rejects.append(Reject("file_rotated_away", detail, origin=path))
        self._inode, self._device = st.st_ino, st.st_dev
        self._offset = self._line = 0
        self._mark = b""
        self._fh = fh

    def _line_start(self, fh: BinaryIO, offset: int) -> int:
        fh.seek(max(0, offset - _CHUNK))
        data = fh.read(min(offset, _CHUNK))
        cut = data.rfind(b"\n")
        return offset - len(data) + cut + 1 if cut >= 0 else offset - len(data)

    def _find_inode(self) -> BinaryIO | None:
        folder = os.path.dirname(os.path.abspath(self.config.path))
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return None
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if (st.st_ino, st.st_dev) == (self._inode, self._device) and entry.is_file():
                try:
                    return open(entry.path, "rb")
                except OSError:
                    return None
        return None

    def _rotated(self) -> bool:
        """True when ``path`` now names another file than the one open (at its end)."""
        try:
            st = os.stat(self.config.path)
        except OSError:
            return False  # renamed, the new one not created yet: wait
        return (st.st_ino, st.st_dev) != (self._inode, self._device)

    def _switch(self, rejects: list[Reject]) -> None:
        assert self._fh is not None
        self._fh.close()
        self._fh = None
        try:
            fh = open(self.config.path, "rb")  # noqa: SIM115 - kept open across polls
        except OSError as e:
            raise SourceError(
                f"log_file source {self.source_id!r}: cannot open {self.config.path}: {e}"
            ) from e
        st = os.fstat(fh.fileno())
        self._fh = fh
        self._inode, self._device = st.st_ino, st.st_dev
        self._offset = self._line = 0
        self._mark = b""

    def _read_block(self, fh: BinaryIO, offset: int) -> tuple[bytes, int]:
        """Up to ``batch_size`` complete lines from ``offset``, newlines included; their count.

        The file is read in chunks into a buffer kept between polls, and newlines are
        counted by numpy: new large buffers each poll (the chunks, their join, the
        block cut from it) cost more than the counting and copying themselves.
        """
        fh.seek(offset)
        want = self.config.batch_size
        scratch = self._scratch
        buf = scratch.get("read", _CHUNK)
        size = newlines = 0
        last = (0, 0)  # the last chunk (start, length) that has a newline
        while newlines < want:
            if len(buf) < size + _CHUNK:
                buf = scratch.grow("read", buf, size, 2 * len(buf))
            got = fh.readinto(memoryview(buf)[size : size + _CHUNK])
            if not got:
                break
            hits = buf[size : size + got] == _NEWLINE
            found = int(np.count_nonzero(hits))
            if found:
                last = (size, got)
                if newlines + found >= want:
                    # The end of the want-th line is in this chunk.
                    cut = size + int(np.flatnonzero(hits)[want - newlines - 1])
                    return self._taken(buf, cut + 1), want
                newlines += found
            size += got
        if not newlines:
            self._taken(buf, 0)
            return b"", 0
        # Fewer lines than wanted: up to the last newline.
        start, got = last
        cut = start + int(np.flatnonzero(buf[start : start + got] == _NEWLINE)[-1])
        return self._taken(buf, cut + 1), newlines

    def _taken(self, buf: np.ndarray[Any, np.dtype[np.uint8]], n: int) -> bytes:
        """The first ``n`` bytes of the read buffer; a large buffer is let go after."""
        data = buf[:n].tobytes()
        self._scratch.trim()
        return data

    def _stdin_batch(self) -> Batch:
        if self._fh is None:
            self._fh = sys.stdin.buffer
            with contextlib.suppress(OSError, ValueError):
                os.set_blocking(self._fh.fileno(), False)
        try:
            data = os.read(self._fh.fileno(), _CHUNK * 16)
        except BlockingIOError:
            return Batch()
        buf = self._pending + data
        cut = buf.rfind(b"\n") + 1
        self._pending = buf[cut:]
        start = self._line
        self._line += buf.count(b"\n", 0, cut)
        return self._decode(buf[:cut], start, [])

    # -- decoding ---------------------------------------------------------------------

    def _decode(self, block: bytes, start_line: int, rejects: list[Reject]) -> Batch:
        """The records of a block of complete lines (each ends with a newline)."""
        if not block:
            return Batch(rejects=rejects)
        now = time.time()
        limit = self.config.max_line_bytes
        lines = None
        if b"\r" not in block:
            if len(block) - 1 > limit:
                lines = block[:-1].split(b"\n")
            if lines is None or max(map(len, lines)) <= limit:
                # The usual case: the whole block decoded at once.
                if self._decoder is None:
                    labels = self._labels
                    # The last text is the empty one after the last newline.
                    texts = block.decode("utf-8", "replace").split("\n")
                    kept = [t for t in texts if t and not t.isspace()]
                    logs = LogRecord.many(now, kept, labels)
                    return Batch(logs=logs, rejects=rejects)
                whole = self._decode_whole(block, lines, now)
                if whole is not None:
                    return Batch(logs=whole, rejects=rejects)
        return self._decode_lines(lines or block[:-1].split(b"\n"), start_line, rejects, now)

    def _decode_whole(
        self, block: bytes, lines: list[bytes] | None, now: float
    ) -> list[LogRecord] | None:
        """Every line's records from one decoder call; None if any line is rejected.

        ``log_json`` gets the lines as one JSON array (one parse for the block), and
        ``journald`` the block as it is. With a reject the block is decoded line by line
        again, so each reject names its own line and keeps only that line.
        """
        assert self._decoder is not None
        json_lines = self.config.format == "log_json"
        array = self._scratch.json_array(block) if json_lines else None
        if array is not None:
            # Every line starts an object, so none is blank: the array without a split.
            payload, count = array
        else:
            kept = [x for x in (lines or block[:-1].split(b"\n")) if x.strip()]
            if not kept:
                return []
            count = len(kept)
            payload = b"[" + b",".join(kept) + b"]" if json_lines else block[:-1]
        # One event a line, or the line by line path says what is wrong: a line that is
        # not one JSON value (two objects, an array of events) changes the count.
        out = self._decoder.decode(payload, origin=self.config.path, timestamp=now)
        return None if out.rejects or len(out.logs) != count else out.logs

    def _decode_lines(
        self, lines: list[bytes], start_line: int, rejects: list[Reject], now: float
    ) -> Batch:
        logs: list[LogRecord] = []
        limit = self.config.max_line_bytes
        path = self.config.path
        for i, raw in enumerate(lines):
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if len(raw) > limit:
                rejects.append(
                    Reject(
                        "line_too_long",
                        f"{len(raw)} bytes",
                        raw[:200],
                        f"{path}:{start_line + i + 1}",
                    )
                )
                raw = raw[:limit]
            if not raw.strip():
                continue
            if self._decoder is None:
                logs.append(LogRecord(now, raw.decode("utf-8", "replace"), self._labels))
                continue
            out = self._decoder.decode(raw, origin=f"{path}:{start_line + i + 1}", timestamp=now)
            logs.extend(out.logs)
            rejects.extend(out.rejects)
        return Batch(logs=logs, rejects=rejects)


class _Scratch:
    """Work buffers of one source, kept between polls (up to :data:`_KEEP_BYTES` each).

    A new buffer of a block's size costs the process fresh pages each poll (mapped,
    faulted in and zeroed, then given back), more than the work done in it.
    """

    def __init__(self) -> None:
        self._bufs: dict[str, np.ndarray[Any, np.dtype[Any]]] = {}

    def get(self, name: str, n: int, dtype: Any = np.uint8) -> np.ndarray[Any, np.dtype[Any]]:
        """A buffer of at least ``n`` items (its contents are whatever was left in it)."""
        buf = self._bufs.get(name)
        if buf is None or len(buf) < n:
            buf = self._bufs[name] = np.empty(max(n, _CHUNK), dtype)
        return buf

    def grow(
        self, name: str, buf: np.ndarray[Any, np.dtype[Any]], keep: int, n: int
    ) -> np.ndarray[Any, np.dtype[Any]]:
        """``buf`` (of ``name``) made ``n`` items long, its first ``keep`` items kept."""
        bigger = np.empty(n, buf.dtype)
        bigger[:keep] = buf[:keep]
        self._bufs[name] = bigger
        return bigger

    def trim(self) -> None:
        """Let go of the buffers grown past :data:`_KEEP_BYTES`."""
        for name, buf in list(self._bufs.items()):
            if buf.nbytes > _KEEP_BYTES:
                del self._bufs[name]

    def json_array(self, block: bytes) -> tuple[bytes, int] | None:
        """``[`` + the block's lines joined by commas + ``]``, and their count.

        None unless every line (each ends with a newline) starts with ``{``: then none is
        blank, and the lines need no split.
        """
        data = np.frombuffer(block, np.uint8)
        n = len(data)
        if not n or data[0] != _BRACE:
            return None
        ends = np.equal(data, _NEWLINE, out=self.get("ends", n, bool)[:n])
        other = np.not_equal(data[1:], _BRACE, out=self.get("other", n, bool)[: n - 1])
        np.logical_and(other, ends[:-1], out=other)
        if other.any():
            return None
        out = self.get("array", n + 1)[: n + 1]
        out[0] = _OPEN
        np.copyto(out[1:], data)
        np.copyto(out[1:], _COMMA, where=ends)
        out[n] = _CLOSE  # the last newline's place
        count = int(np.count_nonzero(ends))
        payload = out.tobytes()
        self.trim()
        return payload, count
