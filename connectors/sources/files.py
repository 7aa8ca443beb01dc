"""Replay (or tail) a CSV or JSONL file of metric points, resumably.

Formats:

- CSV with a header line. Single-series (``timestamp,value``: the series is ``metric`` with
  ``labels``) or long format (``name_column`` gives the metric name of each row,
  ``label_columns`` become labels, added to ``labels``). Fields are split on commas, with
  CSV quoting; a record may not span lines; names and label values are taken as written
  (no trimming). Timestamps are ISO 8601 (no zone = UTC) or unix seconds; an empty value
  is a point with a missing value (NaN), not a reject.
- JSONL, one object per line as written by prometheus-kafka-adapter:
  ``{"name": "up", "labels": {"job": "x"}, "timestamp": "2024-01-01T00:00:00Z",
  "value": "1"}``; ``timestamp`` is RFC 3339 or unix seconds (a string or a number),
  ``value`` a number or a numeric string (``"NaN"``, ``""`` and ``null`` are missing values).
  ``name`` may instead be given as ``labels.__name__``.

A line that cannot be decoded becomes a :class:`~aiops.types.Reject` in the batch, with
``origin="{path}:{line number}"`` (line 1 is the CSV header) and the raw line. Reasons are
those of :data:`aiops.pipeline.decoder.REJECT_REASONS`: ``bad_utf8``, ``bad_line`` (CSV syntax),
``bad_json``, ``bad_shape`` (a JSON line that is not an object), ``missing_field`` (too few
CSV fields, an empty metric name, no ``timestamp`` or ``value``), ``bad_labels``,
``bad_timestamp``, ``bad_value``; plus ``file_truncated`` (see below). Blank lines are
skipped.

Position: ``snapshot()`` is ``{"offset": byte offset after the last line emitted,
"line": its line number}``. A resumed source seeks to ``offset`` and re-reads the CSV
header from the first line of the file. If the file is now shorter than ``offset`` (it
was truncated or replaced), the first batch holds a ``file_truncated`` reject and the
replay starts again from the beginning; the same happens when a followed file shrinks
(``copytruncate`` rotation). A file replaced by a longer one is not detected.

Missing file: the constructor never touches the file system (``aiops check`` can
validate a configuration anywhere); ``next_batch()`` raises
:class:`~aiops.pipeline.source.SourceError` when the file cannot be opened, and so does
a CSV header that lacks a configured column. A file that is not followed is then done
(``exhausted``: ``aiops run --once`` ends with exit code 1, the error stays in health);
a followed one is retried, the daemon backing off and reporting it in health.

Follow mode (``follow: true``) never ends: at the end of the file ``next_batch()`` returns
an empty batch and later picks up appended lines; a last line without its newline is not
read until the newline arrives. The open file is kept, so a rotation that renames the file
and creates a new one is not followed.

Speed: a batch is split into fields in one pass when its lines all have the same number
of commas and no quotes; numbers are converted in bulk, and plain ISO 8601 timestamps
(``YYYY-MM-DD[T ]HH:MM[:SS[.f]]``, optional ``Z``) are parsed from their bytes with numpy.
Only the strings these fast paths reject go one by one through
:func:`aiops.timeutil.parse_timestamp` or ``float``. Each string gets the same result
whichever path it takes, so the batch boundaries (and a resume) never change a value.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aiops.pipeline.source import Source, SourceError
from aiops.timeutil import parse_timestamp
from aiops.types import Batch, BoolArray, FloatArray, IntArray, Reject, SeriesKey

from ..formats._common import replace_lone_surrogates

__all__ = ["FileSource", "parse_timestamps", "parse_values"]

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_CSV_ONLY = ("metric", "labels", "timestamp_column", "value_column", "name_column",
             "label_columns")  # fmt: skip
_READ_CHUNK = 1 << 16
_JSON = json.JSONDecoder()
_KEY_CACHE_MAX = 100_000


class FileSource(Source):
    r"""Points from a CSV or JSONL file, resumable by byte offset; see the module doc.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "cpu.csv"
    >>> _ = path.write_text("timestamp,value\n2024-01-01 00:00:00,0.5\n1704067215,\nx,1\n")
    >>> src = FileSource("f", FileSource.Config(path=str(path), metric="cpu"))
    >>> b = src.next_batch()
    >>> [(str(k), t, v) for k, t, v in b.points()]
    [('cpu{}', 1704067200.0, 0.5), ('cpu{}', 1704067215.0, nan)]
    >>> [(r.reason, r.origin.rsplit(":", 1)[1]) for r in b.rejects]
    [('bad_timestamp', '4')]
    >>> src.snapshot(), src.exhausted
    ({'offset': 56, 'line': 4}, True)
    >>> src.close()
    >>> import shutil; shutil.rmtree(path.parent)
    """

    class Config(BaseModel):
        """Settings of a ``type: file`` source."""

        model_config = ConfigDict(extra="forbid", frozen=True)

        path: str = Field(
            min_length=1,
            description="The file to read; relative to the daemon config's folder.",
        )
        format: Literal["csv", "jsonl", "auto"] = Field(
            default="auto",
            description="csv or jsonl; auto = by extension (.csv; .jsonl, .ndjson, .json).",
        )
        batch_size: int = Field(
            default=5000, ge=1, description="At most this many lines per batch."
        )
        metric: str = Field(
            default="value", description="CSV: metric name when there is no name_column."
        )
        labels: dict[str, str] = Field(
            default_factory=dict, description="CSV: labels added to every series."
        )
        timestamp_column: str = Field(
            default="timestamp", description="CSV: column of the timestamps."
        )
        value_column: str = Field(default="value", description="CSV: column of the values.")
        name_column: str | None = Field(
            default=None, description="CSV: column holding each row's metric name (long format)."
        )
        label_columns: list[str] = Field(
            default_factory=list, description="CSV: columns that become labels of the same name."
        )
        follow: bool = Field(
            default=False,
            description="Tail the file: never exhausted; appended complete lines are read.",
        )

        @field_validator("metric")
        @classmethod
        def _check_metric(cls, value: str) -> str:
            if not _NAME.match(value):
                raise ValueError(f'invalid metric name "{value}"')
            return value

        @field_validator("labels")
        @classmethod
        def _check_labels(cls, value: dict[str, str]) -> dict[str, str]:
            bad = [k for k in value if not _LABEL.match(k) or k.startswith("__")]
            if bad:
                raise ValueError(f"invalid label name(s): {', '.join(map(repr, bad))}")
            return value

        @model_validator(mode="after")
        def check_columns(self) -> FileSource.Config:
            """Check that the CSV columns are distinct and usable as label names."""
            used = [self.timestamp_column, self.value_column]
            if self.name_column is not None:
                used.append(self.name_column)
            used += self.label_columns
            dup = sorted({c for c in used if used.count(c) > 1})
            if dup:
                raise ValueError(f"a column is used twice: {', '.join(map(repr, dup))}")
            bad = [c for c in self.label_columns if not _LABEL.match(c) or c.startswith("__")]
            if bad:
                raise ValueError(f"label_columns are not valid label names: {bad}")
            return self

    def __init__(
        self,
        source_id: str,
        config: Config,
        *,
        resume: dict[str, Any] | None = None,
    ) -> None:
        self.source_id = source_id
        self.config = config
        self.format = _resolve_format(config)
        if self.format == "jsonl":
            csv_only = sorted(set(_CSV_ONLY) & config.model_fields_set)
            if csv_only:
                msg = (
                    f"file source {source_id!r}: {', '.join(csv_only)} only apply to CSV "
                    f"files, and {config.path} is read as JSONL"
                )
                raise ValueError(msg)
        self._offset, self._line = _parse_resume(resume)
        self._fh: BinaryIO | None = None
        self._layout: _CsvLayout | None = None
        self._eof = False
        self._key_cache: dict[tuple[str, ...], SeriesKey | None] = {}
        self._json_keys: dict[Any, SeriesKey] = {}
        self._single_key = SeriesKey.of(config.metric, config.labels)

    # -- the contract -----------------------------------------------------------------

    def next_batch(self) -> Batch:
        """The next ``batch_size`` lines decoded; empty at the end of the file."""
        if self.exhausted:
            return Batch()
        try:
            fh = self._open()
        except SourceError:
            # A replay whose file is not there has nothing to replay: it is done, so
            # ``--once`` ends (exit 1, the error in health). A followed file may appear.
            self._eof = not self.config.follow
            raise
        size = self._size(fh)
        rejects: list[tuple[int, Reject]] = []
        if size < self._offset:
            detail = (
                f"the file has {size} bytes but the position was byte {self._offset} "
                f"(line {self._line}); reading it again from the start"
            )
            rejects.append((0, Reject("file_truncated", detail, origin=self.config.path)))
            self._offset, self._line, self._layout = 0, 0, None

        final = not self.config.follow
        if self.format == "csv" and self._layout is None:
            try:
                header_read = self._read_header(fh, final)
            except SourceError:
                # A replay gets no other header: it is done (so --once ends), and the
                # error stays in health. A followed file may be rewritten: retried.
                self._eof = final
                raise
            if not header_read:
                self._eof = final
                return Batch(rejects=[r for _, r in rejects])
        block = _read_block(fh, self._offset, self.config.batch_size, final)
        lines = _Lines(block)
        if self.format == "csv":
            batch = self._decode_csv(lines, rejects)
        else:
            batch = self._decode_jsonl(lines, rejects)
        self._offset += len(block)
        self._line += lines.count
        self._eof = self._offset >= size
        return batch

    def snapshot(self) -> dict[str, Any]:
        """``{"offset": byte after the last line emitted, "line": its line number}``."""
        return {"offset": self._offset, "line": self._line}

    @property
    def exhausted(self) -> bool:
        """True once a file that is not followed has been read to its end."""
        return self._eof and not self.config.follow

    def close(self) -> None:
        """Close the file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    # -- reading ----------------------------------------------------------------------

    def _open(self) -> BinaryIO:
        if self._fh is None:
            try:
                self._fh = open(self.config.path, "rb")  # noqa: SIM115 - kept open across polls
            except OSError as e:
                msg = f"file source {self.source_id!r}: cannot open {self.config.path}: {e}"
                raise SourceError(msg) from e
        return self._fh

    def _size(self, fh: BinaryIO) -> int:
        try:
            return os.fstat(fh.fileno()).st_size
        except OSError as e:
            msg = f"file source {self.source_id!r}: cannot stat {self.config.path}: {e}"
            raise SourceError(msg) from e

    def _read_header(self, fh: BinaryIO, final: bool) -> bool:
        """Read line 1 and map the configured columns; False while it is incomplete."""
        block = _read_block(fh, 0, 1, final)
        if not block:
            return False
        text = block.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")
        columns = [c.strip() for c in _split_csv(text) or []]
        self._layout = _CsvLayout.build(columns, self.config, self.source_id)
        if self._offset < len(block):
            self._offset, self._line = len(block), 1
        return True

    # -- decoding ---------------------------------------------------------------------

    def _reject(self, lines: _Lines, i: int, reason: str, detail: str) -> tuple[int, Reject]:
        line = self._line + 1 + i
        origin = f"{self.config.path}:{line}"
        return line, Reject(reason=reason, detail=detail, raw=lines.raw(i), origin=origin)

    def _decode_csv(self, lines: _Lines, rejects: list[tuple[int, Reject]]) -> Batch:
        layout = self._layout
        assert layout is not None  # the header is read before any data line
        kept: Sequence[int]  # the line of each row
        columns = layout.columns(lines)
        if columns is not None:
            kept = range(lines.count)
        else:
            kept, columns = self._split_rows(lines, layout, rejects)

        times, t_ok = parse_timestamps(columns[0])
        values, v_ok = parse_values(columns[1])
        if layout.name is None and not self.config.label_columns:
            keys: list[SeriesKey] = [self._single_key]
            series = np.zeros(len(times), dtype=np.int64)
            good = t_ok & v_ok
        else:
            # Series come from a name column, or from the fixed metric name; label
            # columns split them either way.
            ident = (
                columns[2:]
                if layout.name is not None
                else [[self.config.metric] * len(times), *columns[2:]]
            )
            keys, series, names_ok = self._long_format_keys(ident)
            good = t_ok & v_ok & names_ok
        if not good.all():
            for j in np.flatnonzero(~good).tolist():
                if not t_ok[j]:
                    reason, detail = "bad_timestamp", f"timestamp {_short(columns[0][j])}"
                elif not v_ok[j]:
                    reason, detail = "bad_value", f"value {_short(columns[1][j])}"
                else:
                    reason, detail = "missing_field", "empty metric name"
                rejects.append(self._reject(lines, kept[j], reason, detail))
            keys, series = _compact(keys, series[good])
            times, values = times[good], values[good]
        return _batch(keys, series, times, values, rejects)

    def _split_rows(
        self, lines: _Lines, layout: _CsvLayout, rejects: list[tuple[int, Reject]]
    ) -> tuple[list[int], list[list[str]]]:
        """The slow path: split line by line, with CSV quoting; reject short rows."""
        kept: list[int] = []
        rows: list[list[str]] = []
        for i, text in enumerate(lines.texts):
            if text is None:
                rejects.append(self._reject(lines, i, "bad_utf8", "not UTF-8"))
                continue
            fields = text.split(",") if '"' not in text else _split_csv(text)
            if fields is None:
                rejects.append(self._reject(lines, i, "bad_line", "unparseable CSV"))
            elif len(fields) >= layout.need:
                kept.append(i)
                rows.append(fields)
            elif text.strip():
                detail = f"{len(fields)} field(s), {layout.need} needed"
                rejects.append(self._reject(lines, i, "missing_field", detail))
        return kept, [[r[c] for r in rows] for c in layout.wanted]

    def _long_format_keys(
        self, columns: list[list[str]]
    ) -> tuple[list[SeriesKey], IntArray, BoolArray]:
        """Batch-local series indices from the name and label columns; which rows have a name."""
        idents = list(zip(*columns, strict=True))
        index: dict[tuple[str, ...], int] = {}
        keys: list[SeriesKey] = []
        valid: list[bool] = []
        for ident in dict.fromkeys(idents):
            key = self._key(ident)
            index[ident] = len(keys)
            keys.append(key or self._single_key)
            valid.append(key is not None)
        series = np.fromiter(map(index.__getitem__, idents), dtype=np.int64, count=len(idents))
        return keys, series, np.asarray(valid, dtype=bool)[series]

    def _key(self, ident: tuple[str, ...]) -> SeriesKey | None:
        """The key of a (name, *label values) row identity; None for an empty name."""
        if ident in self._key_cache:
            return self._key_cache[ident]
        key = None
        if ident[0]:
            labels = dict(self.config.labels)
            labels.update(
                (n, v) for n, v in zip(self.config.label_columns, ident[1:], strict=True) if v
            )
            key = SeriesKey.of(ident[0], labels)
        if len(self._key_cache) >= _KEY_CACHE_MAX:
            self._key_cache.clear()
        self._key_cache[ident] = key
        return key

    def _json_key(self, obj: dict[str, Any]) -> SeriesKey:
        """The record's series; cached by its raw name and labels, validated on a miss."""
        labels = obj.get("labels")
        try:
            ident = (obj.get("name"), *labels.items()) if type(labels) is dict else None
            key = self._json_keys.get(ident)
        except TypeError:  # an unhashable label value: let the validation say so
            ident, key = None, None
        if key is None:
            key = _json_key(obj)
            if ident is not None:
                if len(self._json_keys) >= _KEY_CACHE_MAX:
                    self._json_keys.clear()
                self._json_keys[ident] = key
        return key

    def _decode_jsonl(self, lines: _Lines, rejects: list[tuple[int, Reject]]) -> Batch:
        index: dict[SeriesKey, int] = {}
        series: list[int] = []
        values: list[float] = []
        # Numeric timestamps are taken at once; strings are parsed together at the end.
        times: list[float] = []
        text_ts: list[str] = []
        text_at: list[int] = []  # the point of each string timestamp
        kept: list[int] = []  # the line of each point
        for i, text in enumerate(lines.texts):
            if text is None:
                rejects.append(self._reject(lines, i, "bad_utf8", "not UTF-8"))
                continue
            if not text or text.isspace():
                continue
            try:
                obj = replace_lone_surrogates(_JSON.decode(text), text)
            except (ValueError, RecursionError) as e:
                rejects.append(self._reject(lines, i, "bad_json", str(e)[:200]))
                continue
            if not isinstance(obj, dict):
                detail = f"a JSON {type(obj).__name__}, not an object"
                rejects.append(self._reject(lines, i, "bad_shape", detail))
                continue
            try:
                key = self._json_key(obj)
                ts, value = _json_time_value(obj)
            except _BadRecord as e:
                rejects.append(self._reject(lines, i, e.reason, e.detail))
                continue
            if isinstance(ts, str):
                text_ts.append(ts)
                text_at.append(len(series))
                ts = math.nan
            kept.append(i)
            series.append(index.setdefault(key, len(index)))
            times.append(ts)
            values.append(value)

        keys = list(index)
        s = np.asarray(series, dtype=np.int64)
        t = np.asarray(times, dtype=np.float64)
        v = np.asarray(values, dtype=np.float64)
        if text_ts:
            parsed, ok = parse_timestamps(text_ts)
            at = np.asarray(text_at, dtype=np.int64)
            t[at] = parsed
            if not ok.all():
                for j in np.flatnonzero(~ok).tolist():
                    detail = f"timestamp {_short(text_ts[j])}"
                    rejects.append(self._reject(lines, kept[text_at[j]], "bad_timestamp", detail))
                good = np.ones(len(t), dtype=bool)
                good[at[~ok]] = False
                keys, s = _compact(keys, s[good])
                t, v = t[good], v[good]
        return _batch(keys, s, t, v, rejects)


class _Lines:
    """The complete lines of one read, decoded once.

    ``texts[i]`` is line ``i`` without its newline (and a trailing carriage return), or
    None when it is not UTF-8. ``text`` is all of them joined by newlines when every line
    decoded and none had a carriage return: the fast CSV path splits that in one go.
    """

    def __init__(self, block: bytes) -> None:
        self.body = block[:-1] if block.endswith(b"\n") else block
        self.count = self.body.count(b"\n") + 1 if block else 0
        self._raws: list[bytes] | None = None
        self.text: str | None = None
        self.texts: list[str | None]
        if not block:
            self.texts = []
            return
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            self.texts = [_utf8(raw) for raw in self.raw_lines()]
        else:
            self.texts = list(text.split("\n"))
            self.text = text
        if self.text is None or "\r" in self.text:
            self.text = None
            self.texts = [t[:-1] if t is not None and t.endswith("\r") else t for t in self.texts]

    def raw_lines(self) -> list[bytes]:
        """The lines as bytes, without newlines."""
        if self._raws is None:
            self._raws = self.body.split(b"\n")
        return self._raws

    def raw(self, i: int) -> bytes:
        """Line ``i`` as read, without its newline."""
        return self.raw_lines()[i]


@dataclass(frozen=True, slots=True)
class _CsvLayout:
    """Where the configured columns sit in the header."""

    wanted: tuple[int, ...]  # timestamp, value, then name and labels (long format)
    name: int | None
    need: int  # how many fields a row must have

    @classmethod
    def build(cls, columns: list[str], config: FileSource.Config, source_id: str) -> _CsvLayout:
        wanted = [config.timestamp_column, config.value_column]
        if config.name_column is not None:
            wanted.append(config.name_column)
        wanted += config.label_columns
        missing = [c for c in wanted if c not in columns]
        if missing:
            msg = (
                f"file source {source_id!r}: the header of {config.path} has no column "
                f"{', '.join(map(repr, missing))} (columns: {', '.join(map(repr, columns))})"
            )
            raise SourceError(msg)
        pos = tuple(columns.index(c) for c in wanted)
        name = None if config.name_column is None else pos[2]
        return cls(wanted=pos, name=name, need=max(pos) + 1)

    def columns(self, lines: _Lines) -> list[list[str]] | None:
        """The wanted columns split in one pass, or None if the lines need the slow path.

        The fast path applies when every line decoded, has no quote and has the same
        number of commas (enough for the wanted columns); it then splits exactly as the
        slow path would.
        """
        text = lines.text
        if text is None or '"' in text:
            return None
        buf = np.frombuffer(lines.body, dtype=np.uint8)
        ends = np.append(np.flatnonzero(buf == ord("\n")), len(buf))
        commas = np.diff(np.searchsorted(np.flatnonzero(buf == ord(",")), ends), prepend=0)
        n_fields = int(commas[0]) + 1
        if n_fields < self.need or not (commas == commas[0]).all():
            return None
        flat = text.replace("\n", ",").split(",")
        return [flat[c::n_fields] for c in self.wanted]


def _utf8(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _resolve_format(config: FileSource.Config) -> str:
    if config.format != "auto":
        return config.format
    ext = os.path.splitext(config.path)[1].lower()
    try:
        return _FORMATS[ext]
    except KeyError:
        msg = (
            f"cannot tell the format of {config.path} from its extension; "
            'set format: "csv" or "jsonl"'
        )
        raise ValueError(msg) from None


def _parse_resume(resume: dict[str, Any] | None) -> tuple[int, int]:
    if resume is None:
        return 0, 0
    if isinstance(resume, dict) and set(resume) == {"offset", "line"}:
        offset, line = resume["offset"], resume["line"]
        if all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in (offset, line)):
            return offset, line
    msg = f'invalid file resume state {resume!r}: expected {{"offset": int, "line": int}}'
    raise ValueError(msg)


def _read_block(fh: BinaryIO, offset: int, max_lines: int, final: bool) -> bytes:
    """The bytes of up to ``max_lines`` complete lines from ``offset``, newlines included.

    A last line without a newline is complete only when ``final`` (the file is not
    followed).
    """
    fh.seek(offset)
    chunks: list[bytes] = []
    newlines = 0
    size = max(_READ_CHUNK, min(max_lines * 128, 1 << 24))
    while newlines < max_lines:
        data = fh.read(size)
        if not data:
            break
        chunks.append(data)
        newlines += data.count(b"\n")
    buf = b"".join(chunks)
    if newlines >= max_lines:
        cut = int(np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == ord("\n"))[max_lines - 1])
        return buf[: cut + 1]
    return buf if final else buf[: buf.rfind(b"\n") + 1]


def _split_csv(text: str) -> list[str] | None:
    try:
        return next(csv.reader([text]), [])
    except csv.Error:  # e.g. a field over csv.field_size_limit()
        return None


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _compact(keys: list[SeriesKey], series: IntArray) -> tuple[list[SeriesKey], IntArray]:
    """Drop the keys no point refers to any more (their points were all rejected)."""
    used = np.unique(series)
    if len(used) == len(keys):
        return keys, series
    remap = np.zeros(len(keys), dtype=np.int64)
    remap[used] = np.arange(len(used))
    return [keys[u] for u in used.tolist()], remap[series]


def _batch(
    keys: list[SeriesKey],
    series: IntArray,
    times: FloatArray,
    values: FloatArray,
    rejects: list[tuple[int, Reject]],
) -> Batch:
    rejects.sort(key=lambda r: r[0])
    return Batch(
        keys=keys if len(series) else [],
        series=series,
        timestamps=times,
        values=values,
        rejects=[r for _, r in rejects],
    )


class _BadRecord(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


def _json_key(obj: dict[str, Any]) -> SeriesKey:
    """The series of a prometheus-kafka-adapter record; raises :class:`_BadRecord`."""
    labels = obj.get("labels", {})
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise _BadRecord("bad_labels", "labels must be an object of strings")
    name = obj.get("name") or labels.get("__name__")
    if not name or not isinstance(name, str):
        raise _BadRecord("missing_field", "no metric name (name or labels.__name__)")
    return SeriesKey.of(name, labels)


def _json_time_value(obj: dict[str, Any]) -> tuple[float | str, float]:
    """Timestamp and value of a record; a string timestamp is left for a batched parse."""
    for field in ("timestamp", "value"):
        if field not in obj:
            raise _BadRecord("missing_field", f'no "{field}"')
    ts = obj["timestamp"]
    if not isinstance(ts, str):
        ts = _json_number(ts)
        if ts is None or not math.isfinite(ts):
            raise _BadRecord("bad_timestamp", f"timestamp {_short(str(obj['timestamp']))}")
    raw = obj["value"]
    if raw is None:
        value: float | None = math.nan
    elif isinstance(raw, str):
        value = _string_value(raw)
    else:
        value = _json_number(raw)
    if value is None:
        raise _BadRecord("bad_value", f"value {_short(str(raw))}")
    return ts, value


def _json_number(raw: object) -> float | None:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        try:
            return float(raw)
        except OverflowError:  # an integer beyond float range
            return None
    return None


def _string_value(raw: str) -> float | None:
    try:
        return float(raw)
    except ValueError:
        return math.nan if not raw or raw.isspace() else None


# -- vectorized parsing ---------------------------------------------------------------


def _bisect_convert(
    strings: Sequence[str], convert: Callable[[Sequence[str]], FloatArray]
) -> tuple[FloatArray, BoolArray]:
    """Apply an all-or-nothing conversion, splitting around the elements it rejects.

    ``convert`` raises ValueError if any element is invalid. Each element's result is
    what ``convert`` gives for it alone, so it does not depend on its neighbours (the
    batch boundaries); k bad elements cost about 2k log(n/k) calls.
    """
    out = np.full(len(strings), np.nan)
    ok = np.zeros(len(strings), dtype=bool)
    stack = [(0, len(strings))]
    while stack:
        lo, hi = stack.pop()
        try:
            out[lo:hi] = convert(strings[lo:hi])
            ok[lo:hi] = True
        except (ValueError, TypeError, OverflowError):
            if hi - lo > 1:
                mid = (lo + hi) // 2
                stack += [(mid, hi), (lo, mid)]
    return out, ok


def _floats(strings: Sequence[str]) -> FloatArray:
    """Python's ``float`` of each string, as one numpy call."""
    return np.array(strings, dtype=np.float64)


def _finite_floats(strings: Sequence[str]) -> FloatArray:
    out = _floats(strings)
    if not np.isfinite(out).all():
        raise ValueError("not finite")
    return out


# Plain ISO 8601: "YYYY-MM-DD", then optionally "[T ]HH:MM", ":SS", ".f" (1-9 digits), and
# optionally "Z". Strings of this shape are parsed from their bytes, vectorized, with the
# same result as datetime.fromisoformat (fractions truncated to microseconds).
_ISO_TEMPLATE = "0000-00-00T00:00:00.000000000"
_ISO_WIDTH = len(_ISO_TEMPLATE)
_ISO_SIZES = frozenset((10, 16, 19, *range(21, _ISO_WIDTH + 1)))
_ISO_CHAR = np.frombuffer(_ISO_TEMPLATE.encode(), dtype=np.uint8)
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def _iso_codes(strings: Sequence[str], lens: IntArray) -> npt.NDArray[np.uint8]:
    """The first ``_ISO_WIDTH + 1`` bytes of each string as rows (0 after its end)."""
    n, width = len(strings), _ISO_WIDTH + 1
    # "replace" keeps one byte per character, so byte offsets are string offsets.
    buf = np.frombuffer(("\n".join(strings) + "\n").encode("ascii", "replace"), dtype=np.uint8)
    codes = np.zeros((n, width), dtype=np.uint8)
    size = int(lens[0])
    if (lens == size).all():  # the usual case: one format, a zero-copy view of the rows
        w = min(size, width)
        codes[:, :w] = buf.reshape(n, size + 1)[:, :w]
        return codes
    starts = np.cumsum(lens + 1) - (lens + 1)
    inside = np.arange(width) < lens[:, None]
    at = np.minimum(starts[:, None] + np.arange(width), len(buf) - 1)
    codes[inside] = buf[at[inside]]
    return codes


def _iso_shape_ok(rows: npt.NDArray[np.uint8], size: int) -> BoolArray:
    """Which rows (all ``size`` characters long) have the plain ISO shape."""
    digits = [c for c in range(size) if _ISO_TEMPLATE[c] == "0"]
    fixed = [c for c in range(size) if _ISO_TEMPLATE[c] not in "0T"]
    ok: BoolArray = np.all((rows[:, digits] - np.uint8(ord("0"))) < 10, axis=1)
    ok &= np.all(rows[:, fixed] == _ISO_CHAR[fixed], axis=1)
    if size > 10:
        ok &= (rows[:, 10] == ord("T")) | (rows[:, 10] == ord(" "))
    return ok


def _iso_vectorized(strings: Sequence[str]) -> tuple[FloatArray, BoolArray]:
    """Unix seconds of the plain-ISO strings (see above); the mask says which they are."""
    n = len(strings)
    lens = np.fromiter(map(len, strings), dtype=np.int64, count=n)
    codes = _iso_codes(strings, lens)
    last = codes[np.arange(n), np.clip(lens - 1, 0, _ISO_WIDTH)]
    zulu = (lens > 16) & (lens <= _ISO_WIDTH + 1) & ((last == ord("Z")) | (last == ord("z")))
    body = lens - zulu
    shaped = np.zeros(n, dtype=bool)
    # A chunk usually holds one or two lengths: check each group on its own columns.
    for size in np.flatnonzero(np.bincount(np.minimum(body, _ISO_WIDTH + 1))).tolist():
        if size in _ISO_SIZES:
            group = body == size
            rows = codes[:, :size] if group.all() else codes[group, :size]
            shaped[group] = _iso_shape_ok(rows, size)
    if not shaped.any():
        return np.full(n, np.nan), shaped

    def num(*cols: int) -> IntArray:
        """The decimal number in these columns; 0 where the string is shorter."""
        out = np.zeros(n, dtype=np.int64)
        for c in cols:
            out = out * 10 + (codes[:, c] - np.uint8(ord("0")))
        return np.where(body > cols[-1], out, 0)

    year, month, day = num(0, 1, 2, 3), num(5, 6), num(8, 9)
    hour, minute, second = num(11, 12), num(14, 15), num(17, 18)
    # Microseconds: the first six digits of the fraction (Python truncates the rest).
    micros = sum(num(20 + k) * 10 ** (5 - k) for k in range(6))
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_ok = (month >= 1) & (month <= 12)
    mdays = _DAYS_IN_MONTH[np.where(month_ok, month, 0)] + (leap & (month == 2))
    valid = shaped & (year >= 1) & month_ok & (day >= 1) & (day <= mdays)
    valid &= (hour <= 23) & (minute <= 59) & (second <= 59)

    # Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant, days_from_civil).
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    total = (days * 86400 + hour * 3600 + minute * 60 + second) * 1_000_000 + micros
    # Python divides the exact integer; float64 does too while it is exact (below 2**53
    # microseconds: 1685-2255). Times outside that take the reference path.
    valid &= np.abs(total) < 2**53
    return np.where(valid, total / 1e6, np.nan), valid


def parse_timestamps(strings: Sequence[str]) -> tuple[FloatArray, BoolArray]:
    """Parse ISO 8601 (no zone = UTC) or unix-second strings into unix seconds, at once.

    Returns the times and a mask of the strings that parsed (NaN where not). Each
    string gets what :func:`aiops.timeutil.parse_timestamp` gives it; numbers and plain
    ISO 8601 take vectorized paths. Non-finite times do not parse.

    >>> t, ok = parse_timestamps(["2014-04-01 00:05:00", "1396310700.5",
    ...                           "2014-04-01T02:05:00+02:00", "2014-04-01T00:05:00Z", "x"])
    >>> t.tolist(), ok.tolist()
    ([1396310700.0, 1396310700.5, 1396310700.0, 1396310700.0, nan], [True, True, True, True, False])
    """
    n = len(strings)
    if n == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    try:
        return _finite_floats(strings), np.ones(n, dtype=bool)
    except (ValueError, TypeError, OverflowError):
        pass
    out, ok = _iso_vectorized(strings)
    rest = np.flatnonzero(~ok)
    if len(rest):
        subset = [strings[i] for i in rest.tolist()]
        out[rest], ok[rest] = _bisect_convert(subset, _finite_floats)
    for i in np.flatnonzero(~ok).tolist():
        try:
            value = parse_timestamp(strings[i])
        except (ValueError, OverflowError, TypeError):
            continue
        if math.isfinite(value):
            out[i], ok[i] = value, True
    return out, ok


def parse_values(strings: Sequence[str]) -> tuple[FloatArray, BoolArray]:
    """Parse numeric strings at once; empty (or blank) strings are NaN, a missing value.

    >>> v, ok = parse_values(["1.5", "", "NaN", "-inf", "1e3", "abc"])
    >>> v.tolist(), ok.tolist()
    ([1.5, nan, nan, -inf, 1000.0, nan], [True, True, True, True, True, False])
    """
    out, ok = _bisect_convert(strings, _floats)
    for i in np.flatnonzero(~ok).tolist():
        text = strings[i]
        if not text or text.isspace():
            ok[i] = True  # out[i] is already NaN
    return out, ok
