"""Prometheus remote write into the daemon: ``POST /api/v1/write`` on its listener.

Point a Prometheus (or an agent, Grafana Alloy, vmagent...) at the daemon::

    remote_write:
      - url: http://aiops:9464/api/v1/write

and declare the source (``http.listen`` must be set, or nothing ever arrives)::

    sources:
      prom_rw: {type: remote_write}

Protocol (remote write 1.0): the body is a protobuf ``prometheus.WriteRequest``
compressed with snappy's block format. The four messages the receiver needs are built
at import time with protobuf's descriptor API (:func:`message_classes`); native
histograms and exemplars are read as opaque bytes and not scored.

Answers:

- 204: decoded and queued. Series without a ``__name__`` label are rejected one by one
  (``missing_field``) while the rest of the request is kept.
- 400: the body is not snappy (``bad_snappy``) or not a WriteRequest
  (``bad_protobuf``).
- 413: the body is larger than ``max_body_bytes`` (refused by the listener from its
  Content-Length, before it is read; not a reject of the source), its declared
  decompressed size is over ``max_decoded_bytes`` (``too_large``: nothing is
  decompressed), or it holds more than ``max_samples_per_request`` samples
  (``too_many_samples``: decoding stops there).
  Each 400 and these 413s are one reject of the source (counted by reason, kept in the
  dead-letter file with the body's first bytes). Prometheus drops a request answered
  with 4xx: it cannot get better by sending it again.
- 503 with ``Retry-After``: the request fits the limits but not the queue now (the
  queue plus this request would pass ``max_queued_samples``), or the daemon is
  stopping. Prometheus retries 5xx with back-off, so this is backpressure, and nothing
  is lost. (429 would be dropped by Prometheus unless its ``retry_on_http_429`` is on,
  so the receiver does not use it.)

Memory: the queue never holds more than ``max_queued_samples`` samples, whatever the
size of one request or how many arrive at once (a request can never be larger than the
queue: ``max_samples_per_request`` is capped at ``max_queued_samples``); each request
being decoded holds at most ``max_decoded_bytes`` of protobuf and
``max_samples_per_request`` samples, and the listener decodes in a few threads.

Samples are decoded in the listener's threads and queued as one
:class:`~aiops.types.Batch` per request; ``next_batch()`` hands out one queued request
per call without blocking. Prometheus' staleness markers (a special NaN sent when a
series disappears) are not observations and are dropped.

Delivery guarantee. ``snapshot()`` is ``{}``: Prometheus, not the daemon, holds the
position (it resends what was not answered with 2xx). A 204 means the samples sit in
this process' memory; the decision to keep them is taken under the queue's lock, after
decoding and within the bound, so a 204 is never followed by a drop. From there:

- Clean stop (SIGTERM): the listener stops taking requests (503 from then on), the
  daemon processes every queued sample, however long that takes, then writes its
  final checkpoint: nothing acknowledged is lost. How long that takes is bounded by
  ``max_queued_samples``: size it so the engine drains it within the service
  manager's stop timeout.
- Crash (SIGKILL, OOM): samples queued or processed after the last checkpoint are lost
  for the detectors; Prometheus will not resend them (they were acknowledged). The
  loss is bounded by ``checkpoint_interval`` of data plus the queue.
- A request whose response was lost (connection cut after the queueing) is resent by
  Prometheus and scored twice: delivery is at least once up to the 204, at most once
  after it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import cramjam
import numpy as np
import numpy.typing as npt
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from pydantic import BaseModel, ConfigDict, Field, field_validator

from aiops.config.models import PositiveDuration
from aiops.pipeline.source import Source
from aiops.service.http import HttpRequest, HttpResponse
from aiops.types import Batch, FloatArray, Reject, SeriesKey

__all__ = [
    "STALE_NAN_BITS",
    "RemoteWriteSource",
    "decode_write_request",
    "encode_write_request",
    "message_classes",
]

log = logging.getLogger(__name__)

#: Prometheus' staleness marker: a NaN with this bit pattern (``value.StaleNaN``).
STALE_NAN_BITS = 0x7FF0000000000002
#: Bytes of a rejected request kept with its reject (for the dead-letter file).
RAW_KEEP = 512
#: Rejects waiting for ``next_batch()`` beyond this are counted in a log line only.
MAX_PENDING_REJECTS = 100_000
_KEY_CACHE_MAX = 200_000
_PROTO_PACKAGE = "prometheus"


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """``prometheus.WriteRequest`` and the messages it holds, field numbers as upstream.

    Native histograms (TimeSeries field 4) and exemplars (field 3) are declared as
    ``bytes``: they share the wire type of embedded messages, so they parse without
    their schema. Two views for the decoder share the wire format: ``RawWriteRequest``
    keeps each TimeSeries as bytes, ``LabelSet`` reads the label fields of one.
    """
    f = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(
        name="aiops/prometheus_remote_write.proto", package=_PROTO_PACKAGE, syntax="proto3"
    )

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        msg = fd.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            field = msg.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = f".{_PROTO_PACKAGE}.{type_name}"

    opt, rep = f.LABEL_OPTIONAL, f.LABEL_REPEATED
    message("Label", ("name", 1, f.TYPE_STRING, opt, ""), ("value", 2, f.TYPE_STRING, opt, ""))
    message("Sample", ("value", 1, f.TYPE_DOUBLE, opt, ""), ("timestamp", 2, f.TYPE_INT64, opt, ""))
    message(
        "TimeSeries",
        ("labels", 1, f.TYPE_MESSAGE, rep, "Label"),
        ("samples", 2, f.TYPE_MESSAGE, rep, "Sample"),
        ("exemplars", 3, f.TYPE_BYTES, rep, ""),
        ("histograms", 4, f.TYPE_BYTES, rep, ""),
    )
    message("WriteRequest", ("timeseries", 1, f.TYPE_MESSAGE, rep, "TimeSeries"))
    message("RawWriteRequest", ("timeseries", 1, f.TYPE_BYTES, rep, ""))
    message("LabelSet", ("labels", 1, f.TYPE_MESSAGE, rep, "Label"))
    return fd


def _build_classes() -> dict[str, type[Message]]:
    # A pool of our own: another library registering prometheus.WriteRequest in the
    # default pool (with the full upstream schema) cannot clash with ours.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file_descriptor())
    names = ("WriteRequest", "TimeSeries", "Label", "Sample", "RawWriteRequest", "LabelSet")
    return {
        name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"{_PROTO_PACKAGE}.{name}")
        )
        for name in names
    }


_CLASSES = _build_classes()
WriteRequest = _CLASSES["WriteRequest"]
_RawWriteRequest = _CLASSES["RawWriteRequest"]
_LabelSet = _CLASSES["LabelSet"]
_Sample = _CLASSES["Sample"]


def message_classes() -> dict[str, type[Message]]:
    """The generated classes: ``WriteRequest``, ``TimeSeries``, ``Label``, ``Sample``.

    >>> req = message_classes()["WriteRequest"]()
    >>> ts = req.timeseries.add()
    >>> ts.labels.add(name="__name__", value="up")
    name: "__name__"
    value: "up"
    <BLANKLINE>
    >>> len(req.SerializeToString())
    18
    """
    return {k: _CLASSES[k] for k in ("WriteRequest", "TimeSeries", "Label", "Sample")}


def encode_write_request(
    series: Iterable[tuple[Mapping[str, str], Sequence[tuple[float, float]]]],
) -> bytes:
    """A snappy-compressed WriteRequest body, as Prometheus sends it (for tests, tools).

    ``series`` yields ``(labels including __name__, [(unix seconds, value), ...])``.

    >>> body = encode_write_request([({"__name__": "up", "job": "a"}, [(1700000000, 1.0)])])
    >>> batch, rejects = decode_write_request(body)
    >>> [(str(k), t, v) for k, t, v in batch.points()], rejects
    ([('up{job="a"}', 1700000000.0, 1.0)], [])
    """
    req = WriteRequest()
    for labels, samples in series:
        ts = req.timeseries.add()
        for name in sorted(labels):
            ts.labels.add(name=name, value=labels[name])
        for t, v in samples:
            ts.samples.add(value=v, timestamp=round(t * 1000))
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


class _BadPayload(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _decompress(body: bytes, max_decoded: int) -> bytes:
    try:
        size = int(cramjam.snappy.decompress_raw_len(body))
    except Exception as exc:  # cramjam raises its own DecompressionError
        raise _BadPayload("bad_snappy", f"not snappy block data: {exc}") from None
    if size > max_decoded:
        raise _BadPayload(
            "too_large", f"decompresses to {size} bytes, over max_decoded_bytes={max_decoded}"
        )
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except Exception as exc:
        raise _BadPayload("bad_snappy", f"not snappy block data: {exc}") from None


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    """The varint at ``buf[i]`` and the index after it (IndexError when truncated)."""
    x = buf[i]
    result, shift = x & 0x7F, 7
    i += 1
    while x & 0x80:
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")
        x = buf[i]
        result |= (x & 0x7F) << shift
        shift += 7
        i += 1
    return result, i


def _split_series(buf: bytes, samples: list[bytes]) -> tuple[bytes, int, int]:
    """One TimeSeries' label fields (as bytes: the cache key), sample and histogram counts.

    Appends each sample's bytes to ``samples``. Protobuf's Python objects cost about
    4 µs per series; reading the few fields here costs half, and the samples are then
    decoded together (:func:`_decode_samples`). Unknown fields are skipped, as
    protobuf would; malformed input raises ValueError or IndexError.
    """
    # Fast path, the layout Prometheus writes: the labels, then the samples, each
    # field shorter than 128 bytes (a one-byte length).
    i, n = 0, len(buf)
    while i < n and buf[i] == 0x0A and buf[i + 1] < 0x80:
        i += 2 + buf[i + 1]
    lab_end, first = i, len(samples)
    while i < n and buf[i] == 0x12 and buf[i + 1] < 0x80:
        end = i + 2 + buf[i + 1]
        samples.append(buf[i + 2 : end])
        i = end
    if i == n:
        return buf[:lab_end], len(samples) - first, 0
    del samples[first:]
    return _split_series_slow(buf, samples)


def _split_series_slow(buf: bytes, samples: list[bytes]) -> tuple[bytes, int, int]:
    i, n = 0, len(buf)
    label_parts: list[bytes] = []
    lab_start = lab_end = -1
    n_samples = n_hist = 0
    while i < n:
        start = i
        tag = buf[i]
        i += 1
        if tag & 0x80:
            tag, i = _varint(buf, start)
        wire = tag & 7
        if wire == 2:
            size = buf[i]
            i += 1
            if size & 0x80:
                size, i = _varint(buf, i - 1)
            end = i + size
            if end > n:
                raise ValueError("field runs past the end of its series")
            field = tag >> 3
            if field == 1:
                if lab_start < 0:
                    lab_start = start
                elif lab_end != start:  # labels interleaved with other fields
                    label_parts.append(buf[lab_start:lab_end])
                    lab_start = start
                lab_end = end
            elif field == 2:
                samples.append(buf[i:end])
                n_samples += 1
            elif field == 4:
                n_hist += 1
            i = end
        elif wire == 0:
            _, i = _varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"wire type {wire} in a TimeSeries")
        if (tag >> 3) in (1, 2) and wire != 2:
            raise ValueError(f"field {tag >> 3} of a TimeSeries with wire type {wire}")
    if i != n:
        raise ValueError("a field runs past the end of its series")
    if lab_start >= 0:
        label_parts.append(buf[lab_start:lab_end])
    return b"".join(label_parts), n_samples, n_hist


# A sample as Go's protobuf writes it for a current timestamp: 0x09, the value as a
# little-endian double, 0x10, the milliseconds as a 6-byte varint (2^35 ms to 2^42 ms,
# 1971 to 2109). A value of 0 is omitted (proto3 default): 0x10 and the varint only.
_FULL, _ZERO_VALUE = 16, 7
_VARINT_SHIFTS = np.arange(6, dtype=np.int64) * 7


def _decode_samples(samples: list[bytes]) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """Millisecond timestamps and values, vectorized for the usual layouts."""
    n = len(samples)
    stamps = np.zeros(n, dtype=np.int64)
    values = np.zeros(n, dtype=np.float64)
    if n == 0:
        return stamps, values
    lens = np.fromiter(map(len, samples), dtype=np.int64, count=n)
    offsets = np.zeros(n, dtype=np.int64)
    np.cumsum(lens[:-1], out=offsets[1:])
    buf = np.frombuffer(b"".join(samples), dtype=np.uint8)
    done = np.zeros(n, dtype=bool)
    for size, value_at in ((_FULL, 1), (_ZERO_VALUE, -1)):
        rows_at = np.flatnonzero(lens == size)
        if not len(rows_at):
            continue
        rows = buf[offsets[rows_at, None] + np.arange(size)]
        ts_bytes = rows[:, size - 7 :]
        ok = (ts_bytes[:, 0] == 0x10) & (ts_bytes[:, 1:6] >= 0x80).all(axis=1)
        ok &= ts_bytes[:, 6] < 0x80
        if value_at > 0:
            ok &= rows[:, 0] == 0x09
        rows_at, rows, ts_bytes = rows_at[ok], rows[ok], ts_bytes[ok]
        stamps[rows_at] = ((ts_bytes[:, 1:].astype(np.int64) & 0x7F) << _VARINT_SHIFTS).sum(axis=1)
        if value_at > 0:
            values[rows_at] = np.ascontiguousarray(rows[:, 1:9]).view("<f8").ravel()
        done[rows_at] = True
    for j in np.flatnonzero(~done).tolist():
        s = _Sample()
        s.ParseFromString(samples[j])
        stamps[j] = s.timestamp
        values[j] = s.value
    return stamps, values


class _Decoder:
    """WriteRequest bytes to a batch; caches series keys (shared by the HTTP threads)."""

    def __init__(self) -> None:
        self._keys: dict[bytes, SeriesKey | str] = {}

    def decode(self, payload: bytes, max_samples: int = 1 << 62) -> tuple[Batch, list[Reject], int]:
        """``(batch, per-series rejects, stale markers dropped)``.

        Stops with ``too_many_samples`` as soon as more than ``max_samples`` are seen.
        """
        req = _RawWriteRequest()
        try:
            req.ParseFromString(payload)
        except (DecodeError, RecursionError, ValueError) as exc:
            raise _BadPayload("bad_protobuf", f"not a WriteRequest: {exc}") from None
        keys: list[SeriesKey] = []
        counts: list[int] = []
        samples: list[bytes] = []
        rejects: list[Reject] = []
        cache = self._keys
        for buf in req.timeseries:
            before = len(samples)
            try:
                label_bytes, n_samples, n_hist = _split_series(buf, samples)
            except (ValueError, IndexError) as exc:
                raise _BadPayload("bad_protobuf", f"malformed TimeSeries: {exc}") from None
            key = cache.get(label_bytes)
            if key is None:
                key = _series_key(label_bytes)
                if len(cache) >= _KEY_CACHE_MAX:
                    cache.clear()
                cache[label_bytes] = key
            if isinstance(key, str):  # why the series is rejected
                reason, _, detail = key.partition(":")
                rejects.append(Reject(reason, detail.strip(), label_bytes[:RAW_KEEP]))
                del samples[before:]
                continue
            if n_hist:
                rejects.append(
                    Reject(
                        "unsupported", f"{n_hist} native histogram sample(s) of {key} not scored"
                    )
                )
            if n_samples:
                keys.append(key)
                counts.append(n_samples)
            if len(samples) > max_samples:
                raise _BadPayload(
                    "too_many_samples",
                    f"more than {max_samples} samples in one request "
                    "(max_samples_per_request; lower the sender's max_samples_per_send)",
                )
        try:
            stamps, values = _decode_samples(samples)
        except (DecodeError, RecursionError, ValueError) as exc:
            raise _BadPayload("bad_protobuf", f"malformed Sample: {exc}") from None
        batch, stale = _columns(keys, counts, stamps, values)
        return batch, rejects, stale


def _series_key(label_bytes: bytes) -> SeriesKey | str:
    """The key of a series' label fields, or ``"reason: detail"`` when it has none."""
    labels = _LabelSet()
    try:
        labels.ParseFromString(label_bytes)
    except (DecodeError, ValueError) as exc:
        return f"bad_labels: labels are not valid protobuf/UTF-8: {exc}"
    pairs = {lb.name: lb.value for lb in labels.labels}
    name = pairs.get("__name__", "")
    if not name:
        return "missing_field: series without a __name__ label"
    return SeriesKey.of(name, pairs)


def _columns(
    keys: list[SeriesKey],
    counts: list[int],
    stamps: npt.NDArray[np.int64],
    values: FloatArray,
) -> tuple[Batch, int]:
    if not keys:
        return Batch(), 0
    series = np.repeat(np.arange(len(keys), dtype=np.int64), counts)
    ts = stamps / 1000.0
    stale = values.view(np.uint64) == np.uint64(STALE_NAN_BITS)
    n_stale = int(stale.sum())
    if n_stale:
        keep = ~stale
        series, ts, values = series[keep], ts[keep], values[keep]
    return Batch(keys=keys, series=series, timestamps=ts, values=values), n_stale


def decode_write_request(
    body: bytes, *, max_decoded_bytes: int = 128 << 20
) -> tuple[Batch, list[Reject]]:
    """Decode a snappy-compressed WriteRequest; raise :class:`ValueError` if it is not one.

    Returns the batch (staleness markers dropped) and per-series rejects.
    """
    batch, rejects, _ = _Decoder().decode(_decompress(body, max_decoded_bytes))
    return batch, rejects


class RemoteWriteSource(Source):
    """Samples pushed by Prometheus remote write; see the module docstring.

    Cost: decoding runs in the listener's threads, about 1-2 µs per sample in
    Python over protobuf's C parser; the daemon's data path only takes queued batches.
    Memory: at most ``max_queued_samples`` queued samples (about 40 bytes each plus
    the series keys of each request).

    >>> src = RemoteWriteSource("rw", RemoteWriteSource.Config())
    >>> body = encode_write_request([({"__name__": "up"}, [(10.0, 1.0), (25.0, 0.0)])])
    >>> src.handle_http(HttpRequest("POST", "/api/v1/write", {}, body)).status
    204
    >>> src.queued_samples, src.next_batch().n_points, src.queued_samples
    (2, 2, 0)
    >>> r = src.handle_http(HttpRequest("POST", "/api/v1/write", {}, b"junk"))
    >>> r.status, [x.reason for x in src.next_batch().rejects]
    (400, ['bad_snappy'])
    """

    class Config(BaseModel):
        """Settings of a ``type: remote_write`` source."""

        model_config = ConfigDict(extra="forbid", frozen=True)

        path: str = Field(
            default="/api/v1/write", description="Path on the daemon's listener (http.listen)."
        )
        max_queued_samples: int = Field(
            default=1_000_000,
            ge=1,
            description="Accepted samples not yet processed; beyond it requests get 503 "
            "and Prometheus retries.",
        )
        max_body_bytes: int = Field(
            default=8 << 20, ge=1, description="Largest compressed request body (413 above)."
        )
        max_decoded_bytes: int = Field(
            default=32 << 20,
            ge=1,
            description="Largest decompressed WriteRequest (413 too_large above).",
        )
        max_queue_seconds: PositiveDuration = Field(
            default=10.0,
            description="The queue never holds more samples than the daemon processed in "
            "this long (measured while it runs), so a stop drains it in time; beyond, 503.",
        )
        max_samples_per_request: int = Field(
            default=100_000,
            ge=1,
            description="Most samples in one request (413 too_many_samples above; at most "
            "max_queued_samples). Prometheus sends max_samples_per_send (2000) per request.",
        )

        @field_validator("path")
        @classmethod
        def _check_path(cls, value: str) -> str:
            if not value.startswith("/") or any(c in value for c in "?# "):
                raise ValueError(f'must be a URL path such as "/api/v1/write", got "{value}"')
            return value

    def __init__(
        self,
        source_id: str,
        config: Config,
        *,
        resume: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if resume not in (None, {}):
            msg = f"remote_write source {source_id!r}: resume state must be {{}}, got {resume!r}"
            raise ValueError(msg)
        self.source_id = source_id
        self.config = config
        self.http_path = config.path
        self.max_body_bytes = config.max_body_bytes
        #: Read by the listener: bound of a gzip/deflate Content-Encoding it inflates.
        self.max_decoded_bytes = config.max_decoded_bytes
        #: A request never holds more than the whole queue.
        self.max_samples_per_request = min(
            config.max_samples_per_request, config.max_queued_samples
        )
        self._decoder = _Decoder()
        self._lock = threading.Lock()
        self._queue: deque[Batch] = deque()
        self._queued = 0
        self._rejects: list[Reject] = []
        self._lost_rejects = 0
        self._receiving = True
        self._clock = clock
        self._handed_at = 0.0
        self._handed_n = 0
        self._spent = 0.0
        self._processed = 0.0
        #: Measured seconds the daemon spends per queued sample (0: not measured yet).
        self.seconds_per_sample = 0.0
        #: Requests answered 503 because the queue was full (for tests and logs).
        self.refused = 0
        #: Staleness markers dropped.
        self.stale_dropped = 0

    # -- HTTP side (listener threads) -------------------------------------------------

    def handle_http(self, request: HttpRequest) -> HttpResponse:
        """Decode one WriteRequest and queue it (204), or say why not (400, 413, 503)."""
        if not self._receiving:
            return _busy("the daemon is stopping", "stopping")
        if self._queued >= self.config.max_queued_samples:  # cheap check before decoding
            return self._refuse()
        try:
            batch, rejects, stale = self._decoder.decode(
                _decompress(request.body, self.config.max_decoded_bytes),
                self.max_samples_per_request,
            )
        except _BadPayload as exc:
            origin = f"{request.remote_addr} {request.path}".strip()
            self._add_rejects([Reject(exc.reason, str(exc), request.body[:RAW_KEEP], origin)])
            status = 413 if exc.reason in ("too_large", "too_many_samples") else 400
            return HttpResponse(status, f"{exc.reason}: {exc}\n".encode(), refusal=exc.reason)
        n = batch.n_points
        with self._lock:
            if not self._receiving:
                return _busy("the daemon is stopping", "stopping")
            # n <= max_samples_per_request <= max_queued_samples: an empty queue takes
            # any request, and the queue never passes its bound.
            if self._queued + n > self.config.max_queued_samples:
                self.refused += 1
                return _busy("queue full", "queue_full")
            # Nor more than the daemon gets through in max_queue_seconds: what is
            # acknowledged must be processed before a stop's deadline.
            drain = (self._queued + n) * self.seconds_per_sample
            if self._queued and drain > self.config.max_queue_seconds:
                self.refused += 1
                return _busy(f"queue full ({drain:.0f} s of work queued)", "queue_full")
            if n:
                self._queue.append(batch)
                self._queued += n
            self.stale_dropped += stale
        if rejects:
            self._add_rejects(rejects)
        return HttpResponse(204)

    def _refuse(self) -> HttpResponse:
        with self._lock:
            self.refused += 1
        return _busy("queue full", "queue_full")

    def _add_rejects(self, rejects: list[Reject]) -> None:
        with self._lock:
            room = MAX_PENDING_REJECTS - len(self._rejects)
            self._rejects.extend(rejects[: max(room, 0)])
            lost = len(rejects) - max(room, 0)
            if lost > 0:
                self._lost_rejects += lost
        if lost > 0:
            log.error(
                "remote_write %s: %d rejects not recorded (%d waiting already)",
                self.source_id,
                lost,
                MAX_PENDING_REJECTS,
            )

    def stop_receiving(self) -> None:
        """Answer 503 to every later request (Prometheus keeps the data and retries)."""
        with self._lock:
            self._receiving = False

    # -- daemon side --------------------------------------------------------------------

    @property
    def queued_samples(self) -> int:
        """Samples accepted and not yet handed out by ``next_batch()``."""
        return self._queued

    def next_batch(self) -> Batch:
        """One queued request's samples (and any pending rejects); never blocks.

        The daemon calls again right after processing what it got (it waits only when
        no source had data), so the time between two calls measures its speed.
        """
        now = self._clock()
        with self._lock:
            if self._handed_n:  # weighted by samples: small batches' overhead counts less
                self._spent = 0.9 * self._spent + max(now - self._handed_at, 0.0)
                self._processed = 0.9 * self._processed + self._handed_n
                self.seconds_per_sample = self._spent / self._processed
            batch = self._queue.popleft() if self._queue else Batch()
            self._queued -= batch.n_points
            self._handed_at, self._handed_n = now, batch.n_points
            rejects, self._rejects = self._rejects, []
        if rejects:
            batch = dataclasses.replace(batch, rejects=rejects)
        return batch

    def snapshot(self) -> dict[str, Any]:
        """Always ``{}``: Prometheus keeps the position (see the module docstring)."""
        return {}

    def close(self) -> None:
        """Refuse further requests (the daemon has drained the queue before: see above)."""
        self.stop_receiving()


def _busy(why: str, refusal: str) -> HttpResponse:
    return HttpResponse(
        503, f"{why}; retry later\n".encode(), headers=(("Retry-After", "1"),), refusal=refusal
    )
