"""A seeded synthetic fleet: hosts x services emitting metrics (and logs) with incidents.

The simulator is the daemon's built-in demo source and the test bed of the detection
pipeline: it produces realistic-looking series (daily and weekly load cycle, load-driven
CPU and latency, heavy-tailed noise, error ratios near zero with rare blips) and injects
incidents whose ground truth is known (:attr:`SimulatorSource.incident_schedule`).

Series, fixed because rules are written against them: for every ``host`` ("host-1" ..
"host-N") and ``service``,

==================================  ===========================================
``http_requests_per_second``        request rate: daily + weekday/weekend cycle
``cpu_usage_ratio``                 0..1, follows the request rate
``http_request_duration_seconds``   p99 latency, grows with CPU utilisation
``http_errors_ratio``               0..1, near zero with rare small blips
``memory_usage_ratio``              0..1, slow daily wave
==================================  ===========================================

Reproducibility: a point's value is a pure function of ``(seed, series, step index)``.
The noise comes from a counter-based generator (SplitMix64 over the seed, the series id
and the step), never from a stateful RNG, so a run resumed from :meth:`snapshot` emits
exactly the points an uninterrupted run would, whatever the batch sizes.

Incidents (``incidents: auto`` or an explicit list) act on one ``(host, service, metric)``
series; ``magnitude`` means, per kind:

==================  ========================================================  =======
kind                effect on the series while active                         default
==================  ========================================================  =======
``spike``           adds ``magnitude`` units (a few steps long)               4
``level_shift``     adds ``magnitude`` units                                  2
``slow_ramp``       adds 0 growing linearly to ``magnitude`` units            3
``flatline``        holds the value of the step before the start, no noise    0
``seasonal_break``  the daily cycle runs ``magnitude`` hours out of phase     12
==================  ========================================================  =======

A unit is relative for the request rate and the latency (``magnitude`` 1 doubles the
value, -0.5 halves it) and absolute for ratios: 0.1 for CPU and memory, 0.05 for errors.
Ratios are clipped to [0, 1], other metrics at 0.
"""

from __future__ import annotations

import bisect
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

import numpy as np
import numpy.typing as npt
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from aiops.pipeline.source import Source
from aiops.timeutil import parse_duration, parse_timestamp, to_rfc3339
from aiops.types import Batch, FloatArray, IntArray, LogRecord, SeriesKey

__all__ = [
    "DEFAULT_START",
    "INCIDENT_KINDS",
    "METRICS",
    "Incident",
    "IncidentSpec",
    "SimulatorSource",
]

U64Array = npt.NDArray[np.uint64]

MetricName = Literal[
    "cpu_usage_ratio",
    "memory_usage_ratio",
    "http_request_duration_seconds",
    "http_errors_ratio",
    "http_requests_per_second",
]
#: The metric names, in the order of the series within one (host, service) pair.
METRICS: tuple[str, ...] = get_args(MetricName)
_CPU, _MEM, _LAT, _ERR, _RPS = range(len(METRICS))
_RATIO = np.array([True, True, False, True, False])
# Per-metric incident unit: relative (multiply by 1 + magnitude) where NaN.
_UNIT = np.array([0.1, 0.1, np.nan, 0.05, np.nan])

IncidentKind = Literal["spike", "level_shift", "slow_ramp", "flatline", "seasonal_break"]
INCIDENT_KINDS: tuple[IncidentKind, ...] = (
    "spike",
    "level_shift",
    "slow_ramp",
    "flatline",
    "seasonal_break",
)
_DEFAULT_MAGNITUDE = {
    "spike": 4.0,
    "level_shift": 2.0,
    "slow_ramp": 3.0,
    "flatline": 0.0,
    "seasonal_break": 12.0,
}

#: A Monday at midnight UTC: runs are reproducible unless ``start`` says otherwise.
DEFAULT_START = "2026-01-05T00:00:00Z"

# Base request rate (per second) and p99 latency (seconds) of well-known service names;
# other names get seeded values in the same ranges.
_SERVICE_PROFILES = {"api": (120.0, 0.25), "web": (60.0, 0.6), "db": (250.0, 0.04)}

# Shape of the daily load curve: a main peak and an evening shoulder; the weekend runs at
# 1 - _WEEKEND_DIP of weekday load, blended over _WEEKEND_RAMP seconds around midnight.
_DAY_AMPL, _SHOULDER_AMPL, _SHOULDER_LAG_H = 0.45, 0.12, 5.0
_WEEKEND_DIP, _WEEKEND_RAMP = 0.35, 7200.0
# Noise: normal, except that with probability _P_TAIL a draw is scaled by _TAIL_SCALE
# (request rate and latency get occasional large excursions, as real ones do).
_P_TAIL = 0.01
_TAIL_SCALE = np.array([1.0, 1.0, 4.0, 1.0, 2.5])
_RPS_NOISE, _CPU_NOISE, _LAT_NOISE, _ERR_NOISE, _MEM_NOISE = 0.04, 0.015, 0.08, 0.3, 0.004
_MEM_DAILY_AMPL, _MEM_LAG = 0.04, 7200.0
# Error blips: rare, small, one step long: about one a day per series at 15 s steps.
_P_BLIP, _BLIP_MIN, _BLIP_SPAN = 0.0002, 0.002, 0.01

# Auto schedule: first incident within an hour after the warm-up, then one every few hours.
_FIRST_WITHIN, _GAP_MIN, _GAP_MAX = 3600.0, 2 * 3600.0, 5 * 3600.0
_AUTO_METRICS: dict[str, tuple[int, ...]] = {
    "spike": (_CPU, _MEM, _LAT, _ERR, _RPS),
    "level_shift": (_CPU, _MEM, _LAT, _ERR, _RPS),
    "slow_ramp": (_MEM, _LAT, _CPU),
    "flatline": (_RPS, _CPU, _MEM),
    "seasonal_break": (_RPS, _CPU),
}
_AUTO_LENGTH = {  # seconds, uniform in [low, high]; a spike is 1-3 steps instead
    "level_shift": (1800.0, 7200.0),
    "slow_ramp": (3600.0, 3 * 3600.0),
    "flatline": (1200.0, 3600.0),
    "seasonal_break": (3 * 3600.0, 6 * 3600.0),
}
_AUTO_MAGNITUDE = {
    "spike": (3.0, 6.0),
    "level_shift": (1.5, 3.0),
    "slow_ramp": (2.0, 4.0),
    "flatline": (0.0, 0.0),
    "seasonal_break": (6.0, 12.0),
}

_LOGS_PER_STEP = 3
_ERROR_LOGS_PER_STEP = 4
_LOG_TEMPLATES = (
    "GET /{svc}/v1/items/{id} 200 {ms}ms",
    "POST /{svc}/v1/orders 201 {ms}ms",
    "GET /{svc}/healthz 200 {ms}ms",
    "cache refresh finished in {ms}ms, {n} entries",
    "worker pool busy={n}/64",
)
_ERROR_TEMPLATES = (
    "ERROR upstream {dep} timed out after {ms}ms",
    "ERROR connection refused by {dep} (attempt {a}/3)",
    "ERROR 503 Service Unavailable: GET /{svc}/v1/items/{id}",
    "WARN retry budget exhausted for {dep}, shedding load",
)

# Streams of the counter-based generator.
_STREAM_NORMAL, _STREAM_UNIFORM, _STREAM_LOGS, _STREAM_INCIDENTS = 1, 2, 3, 4
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _mix64(x: int) -> int:
    """The SplitMix64 finaliser on a Python int (for per-series constants)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * _MIX1) & _MASK64
    x = ((x ^ (x >> 27)) * _MIX2) & _MASK64
    return x ^ (x >> 31)


def _mix64_array(x: U64Array) -> U64Array:
    """The SplitMix64 finaliser, vectorized (uint64 arithmetic wraps, as intended)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(_MIX1)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(_MIX2)
    return x ^ (x >> np.uint64(31))


def _counter_hash(keys: U64Array, steps: IntArray) -> U64Array:
    """64 random bits per (step, key): SplitMix64's output at position ``step`` of ``key``."""
    pos = (steps.astype(np.uint64) + np.uint64(1)) * np.uint64(_GOLDEN)
    return _mix64_array(keys[None, :] + pos[:, None])


def _uniform_pair(h: U64Array) -> tuple[FloatArray, FloatArray]:
    """Two independent uniforms in (0, 1) from the high and low halves of ``h``."""
    scale = 2.0**-32
    hi = ((h >> np.uint64(32)).astype(np.float64) + 0.5) * scale
    lo = ((h & np.uint64(0xFFFFFFFF)).astype(np.float64) + 0.5) * scale
    return hi, lo


def _normal(h: U64Array) -> FloatArray:
    """Standard normal draws (Box-Muller on the two halves of ``h``)."""
    u1, u2 = _uniform_pair(h)
    out: FloatArray = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return out


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


def _check_positive_duration(text: str) -> str:
    if parse_duration(text) <= 0:
        raise ValueError(f'duration "{text}" must be greater than zero')
    return text


def _check_timestamp(text: str | None) -> str | None:
    if text is not None:
        try:
            value = parse_timestamp(text)
        except ValueError:
            raise ValueError(f'invalid time "{text}": use RFC 3339, e.g. {DEFAULT_START}') from None
        if not math.isfinite(value):
            raise ValueError(f'invalid time "{text}"')
    return text


Duration = Annotated[str, AfterValidator(_check_duration)]
PositiveDuration = Annotated[str, AfterValidator(_check_positive_duration)]


class IncidentSpec(BaseModel):
    """One explicitly placed incident (an item of the simulator's ``incidents`` list)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: IncidentKind = Field(description="What happens to the series; see the module doc.")
    start: Duration = Field(description="Offset from the simulated start, e.g. 3h.")
    length: PositiveDuration = Field(description="How long the incident lasts, e.g. 30m.")
    host: str = Field(description='The host, "host-1" .. "host-N".')
    service: str = Field(description="The service; one of the simulator's services.")
    metric: MetricName = Field(description="The metric of the affected series.")
    magnitude: float | None = Field(
        default=None,
        description="Size of the effect (meaning depends on kind); default per kind.",
    )


@dataclass(frozen=True, slots=True)
class Incident:
    """Ground truth: one incident, active for ``start <= t < end`` on series ``key``."""

    kind: str
    start: float
    end: float
    key: SeriesKey
    magnitude: float

    @property
    def host(self) -> str:
        """The ``host`` label of the affected series."""
        return dict(self.key.labels)["host"]

    @property
    def service(self) -> str:
        """The ``service`` label of the affected series."""
        return dict(self.key.labels)["service"]

    @property
    def metric(self) -> str:
        """The metric name of the affected series."""
        return self.key.name

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly form (RFC 3339 times), for ground-truth files."""
        return {
            "kind": self.kind,
            "start": to_rfc3339(self.start),
            "end": to_rfc3339(self.end),
            "series": str(self.key),
            "metric": self.metric,
            "host": self.host,
            "service": self.service,
            "magnitude": self.magnitude,
        }


class SimulatorSource(Source):
    """Synthetic metrics of a small fleet, with injected incidents; see the module doc.

    Cost: one batch of ``T`` steps is a handful of numpy operations over ``T x hosts x
    services x 5`` values; a simulated day of 4 hosts x 3 services (346k points) takes
    well under a second. ``logs: true`` adds a short Python loop per step.

    Pacing: with ``speed == 0`` every poll returns the next ``max_steps_per_batch`` steps.
    With ``speed > 0`` a poll returns the steps whose simulated time has come, measured
    with ``clock`` from the construction of the source (so after a resume, pacing starts
    again at the resumed step); the same per-batch cap applies, so a consumer that fell
    behind catches up in bounded batches.

    >>> src = SimulatorSource("sim", SimulatorSource.Config(hosts=1, services=["api"]))
    >>> b = src.next_batch()
    >>> b.n_points, sorted({k.name for k in b.keys})[0], src.snapshot()
    (200, 'cpu_usage_ratio', {'step': 40})
    >>> again = SimulatorSource("sim", src.config, resume={"step": 39}).next_batch()
    >>> bool(again.values[0] == b.values[-5])
    True
    """

    class Config(BaseModel):
        """Settings of a ``type: simulator`` source."""

        model_config = ConfigDict(extra="forbid", frozen=True)

        seed: int = Field(default=42, ge=0, description="Seed of every random choice.")
        hosts: int = Field(default=4, ge=1, le=10_000, description="Number of hosts.")
        services: list[str] = Field(
            default_factory=lambda: ["api", "web", "db"],
            min_length=1,
            description="Service names; every host runs every service.",
        )
        interval: PositiveDuration = Field(default="15s", description="Simulated sample step.")
        start: str | None = Field(
            default=DEFAULT_START,
            description="Simulated time of step 0 (RFC 3339); null = the wall clock at the "
            "first run, kept in the snapshot so a resumed run continues the same timeline.",
        )
        speed: float = Field(
            default=0.0,
            ge=0.0,
            description="Simulated seconds per wall-clock second; 0 = as fast as polled.",
        )
        max_steps_per_batch: int = Field(
            default=40, ge=1, description="At most this many steps (all series) per batch."
        )
        duration: PositiveDuration | None = Field(
            default=None, description="Simulated length of a finite run; null = endless."
        )
        incidents: Literal["auto"] | list[IncidentSpec] = Field(
            default="auto",
            description='"auto" = a seeded incident every few hours after the warm-up; '
            "or an explicit list ([] = none).",
        )
        warmup: Duration = Field(
            default="2h", description="No automatic incident starts before this offset."
        )
        logs: bool = Field(
            default=False, description="Also emit a few synthetic log lines per step."
        )

        @model_validator(mode="after")
        def check_references(self) -> SimulatorSource.Config:
            """Check the start time, the service names and the incidents' host/service."""
            _check_timestamp(self.start)
            problems = []
            if len(set(self.services)) != len(self.services):
                problems.append(f"services are not unique: {self.services}")
            if any(not s for s in self.services):
                problems.append("a service name is empty")
            if isinstance(self.incidents, list):
                hosts = {f"host-{i}" for i in range(1, self.hosts + 1)}
                for i, inc in enumerate(self.incidents):
                    if inc.host not in hosts:
                        problems.append(
                            f'incidents[{i}]: unknown host "{inc.host}" '
                            f"(hosts are host-1 .. host-{self.hosts})"
                        )
                    if inc.service not in self.services:
                        problems.append(
                            f'incidents[{i}]: unknown service "{inc.service}" '
                            f"(services: {', '.join(self.services)})"
                        )
            if problems:
                raise ValueError("; ".join(problems))
            return self

    def __init__(
        self,
        source_id: str,
        config: Config,
        *,
        resume: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source_id = source_id
        self.config = config
        self.clock = clock

        step, resumed_start = _parse_resume(resume)
        self._interval = parse_duration(config.interval)
        if config.start is not None:
            self._start = parse_timestamp(config.start)
        elif resumed_start is not None:
            self._start = resumed_start
        else:
            self._start = math.floor(time.time() / self._interval) * self._interval
        self._end_step = (
            None
            if config.duration is None
            else math.ceil(parse_duration(config.duration) / self._interval - 1e-9)
        )
        self._step = step
        # Pacing restarts at the resumed step: the first poll returns it at once.
        self._pace_step0 = step
        self._pace_t0 = clock()

        self._build_fleet()
        self._build_schedule()

    # -- construction -----------------------------------------------------------------

    def _build_fleet(self) -> None:
        cfg = self.config
        hosts = [f"host-{i}" for i in range(1, cfg.hosts + 1)]
        pairs = [(h, s) for h in hosts for s in cfg.services]
        self._pairs = pairs
        self._keys = tuple(
            SeriesKey.of(m, {"host": h, "service": s}) for h, s in pairs for m in METRICS
        )
        self._column = {k: i for i, k in enumerate(self._keys)}

        seed_key = _mix64(cfg.seed ^ 0x5EED)
        ids = [int(k.series_id, 16) for k in self._keys]
        self._noise_keys = {
            stream: np.array([_mix64(i ^ _mix64(seed_key + stream)) for i in ids], dtype=np.uint64)
            for stream in (_STREAM_NORMAL, _STREAM_UNIFORM)
        }
        self._log_key = np.array([_mix64(seed_key + _STREAM_LOGS)], dtype=np.uint64)

        # Static per-(host, service) parameters, each drawn from a generator keyed by the
        # names, so that adding a host or service does not change the existing series.
        params = np.empty((len(pairs), 7))
        for p, (host, service) in enumerate(pairs):
            svc_rng = np.random.default_rng([cfg.seed, zlib.crc32(service.encode())])
            rate, latency = _SERVICE_PROFILES.get(
                service,
                (
                    float(np.exp(svc_rng.uniform(np.log(20), np.log(300)))),
                    float(np.exp(svc_rng.uniform(np.log(0.02), np.log(0.5)))),
                ),
            )
            peak = 14.0 + svc_rng.uniform(-1.5, 1.5)
            rng = np.random.default_rng(
                [cfg.seed, zlib.crc32(service.encode()), zlib.crc32(host.encode())]
            )
            params[p] = (
                rate * rng.uniform(0.85, 1.15),  # load-balancer share of this host
                latency * rng.uniform(0.9, 1.1),
                rng.uniform(0.04, 0.10),  # idle CPU
                rng.uniform(0.25, 0.40),  # CPU per unit of normalised load
                rng.uniform(0.30, 0.60),  # memory baseline
                rng.uniform(0.0005, 0.003),  # error ratio baseline
                peak,
            )
        (
            self._rate,
            self._latency,
            self._cpu_idle,
            self._cpu_gain,
            self._mem_base,
            self._err_base,
            self._peak_hour,
        ) = params.T.copy()
        self._upper = np.where(np.tile(_RATIO, len(pairs)), 1.0, np.inf)

    def _build_schedule(self) -> None:
        cfg = self.config
        self._incidents: list[Incident] = []
        self._starts: list[float] = []
        self._max_length = 0.0
        self._auto_rng: np.random.Generator | None = None
        self._auto_next = math.inf
        if cfg.incidents == "auto":
            self._auto_rng = np.random.default_rng([cfg.seed, _STREAM_INCIDENTS])
            first = parse_duration(cfg.warmup) + self._auto_rng.uniform(0.0, _FIRST_WITHIN)
            self._auto_next = self._start + self._align(first)
            return
        specs = sorted(cfg.incidents, key=lambda s: parse_duration(s.start))
        for spec in specs:
            start = self._start + parse_duration(spec.start)
            magnitude = _DEFAULT_MAGNITUDE[spec.kind] if spec.magnitude is None else spec.magnitude
            key = SeriesKey.of(spec.metric, {"host": spec.host, "service": spec.service})
            self._add(
                Incident(spec.kind, start, start + parse_duration(spec.length), key, magnitude)
            )

    def _align(self, offset: float) -> float:
        """Round an offset up to the step grid, so incidents start on a sample."""
        return math.ceil(offset / self._interval - 1e-9) * self._interval

    def _add(self, incident: Incident) -> None:
        self._incidents.append(incident)
        self._starts.append(incident.start)
        self._max_length = max(self._max_length, incident.end - incident.start)

    def _extend_schedule(self, until: float) -> None:
        """Draw automatic incidents (always in the same order) until one starts after ``until``."""
        rng = self._auto_rng
        if rng is None:
            return
        while self._auto_next <= until:
            kind = INCIDENT_KINDS[int(rng.integers(len(INCIDENT_KINDS)))]
            host, service = self._pairs[int(rng.integers(len(self._pairs)))]
            choices = _AUTO_METRICS[kind]
            metric = choices[int(rng.integers(len(choices)))]
            if kind == "spike":
                length = float(rng.integers(1, 4)) * self._interval
            else:
                length = max(self._interval, self._align(float(rng.uniform(*_AUTO_LENGTH[kind]))))
            magnitude = round(float(rng.uniform(*_AUTO_MAGNITUDE[kind])), 3)
            if kind == "level_shift" and metric == _RPS:
                magnitude = -round(float(rng.uniform(0.5, 0.8)), 3)  # traffic drop
            key = SeriesKey.of(METRICS[metric], {"host": host, "service": service})
            start = self._auto_next
            self._add(Incident(kind, start, start + length, key, magnitude))
            gap = float(rng.uniform(_GAP_MIN, _GAP_MAX))
            self._auto_next = start + length + self._align(gap)

    # -- the contract -----------------------------------------------------------------

    def next_batch(self) -> Batch:
        """The next steps of every series (see the class doc for pacing)."""
        hi = self._step + self.config.max_steps_per_batch
        if self.config.speed > 0:
            elapsed = max(0.0, self.clock() - self._pace_t0)
            due = (
                self._pace_step0
                + math.floor(elapsed * self.config.speed / self._interval + 1e-9)
                + 1
            )
            hi = min(hi, due)
        if self._end_step is not None:
            hi = min(hi, self._end_step)
        if hi <= self._step:
            return Batch()
        steps = np.arange(self._step, hi, dtype=np.int64)
        batch = self._batch(steps)
        self._step = hi
        return batch

    def snapshot(self) -> dict[str, Any]:
        """``{"step": next step index}``, plus ``"start"`` when it came from the wall clock."""
        state: dict[str, Any] = {"step": self._step}
        if self.config.start is None:
            state["start"] = self._start
        return state

    @property
    def exhausted(self) -> bool:
        """True after the last step of a finite (``duration``) run."""
        return self._end_step is not None and self._step >= self._end_step

    # -- ground truth and helpers -----------------------------------------------------

    @property
    def keys(self) -> tuple[SeriesKey, ...]:
        """Every series, in the (stable) order used as ``Batch.keys``."""
        return self._keys

    @property
    def start_time(self) -> float:
        """Unix time of step 0."""
        return self._start

    @property
    def interval(self) -> float:
        """Seconds between steps."""
        return self._interval

    @property
    def incident_schedule(self) -> list[Incident]:
        """The injected incidents, by start time.

        All of them for an explicit list or a finite run; for an endless ``auto`` run,
        those starting up to one simulated day after the current position (the list grows
        as the run goes on; earlier entries never change).
        """
        if self._end_step is not None:
            horizon = self._start + self._end_step * self._interval
        else:
            horizon = self._start + self._step * self._interval + 86400.0
        self._extend_schedule(horizon)
        if self._auto_rng is None:
            return list(self._incidents)
        return [i for i in self._incidents if i.start < horizon]

    def _overlapping(self, t0: float, t1: float) -> list[Incident]:
        """Incidents active at some time in ``[t0, t1]``."""
        self._extend_schedule(t1)
        hi = bisect.bisect_right(self._starts, t1)
        lo = bisect.bisect_left(self._starts, t0 - self._max_length)
        return [i for i in self._incidents[lo:hi] if i.end > t0]

    # -- generation -------------------------------------------------------------------

    def _batch(self, steps: IntArray) -> Batch:
        t = self._start + steps.astype(np.float64) * self._interval
        values = self._clean(steps)
        incidents = self._overlapping(float(t[0]), float(t[-1]))
        if incidents:
            self._apply(incidents, steps, t, values)
        n = len(self._keys)
        return Batch(
            keys=self._keys,
            series=np.tile(np.arange(n, dtype=np.int64), len(steps)),
            timestamps=np.repeat(t, n),
            values=values.ravel(),
            logs=self._logs(steps, t, incidents) if self.config.logs else (),
        )

    def _daily(self, t: FloatArray) -> FloatArray:
        """The daily cycle (mean 1) per (time, host-service pair)."""
        hours = (t % 86400.0) / 3600.0
        phase = (hours[:, None] - self._peak_hour[None, :]) * (2 * np.pi / 24)
        shoulder = phase - _SHOULDER_LAG_H * (2 * np.pi / 24)
        out: FloatArray = 1.0 + _DAY_AMPL * np.cos(phase) + _SHOULDER_AMPL * np.cos(2 * shoulder)
        return out

    def _clean(self, steps: IntArray, shift: float = 0.0) -> FloatArray:
        """Values before incidents, shape (steps, series); ``shift`` moves the daily cycle."""
        n_t, n_p = len(steps), len(self._pairs)
        shape = (n_t, n_p, len(METRICS))
        t = self._start + steps.astype(np.float64) * self._interval + shift
        z = _normal(_counter_hash(self._noise_keys[_STREAM_NORMAL], steps)).reshape(shape)
        u_tail, u_size = (
            u.reshape(shape)
            for u in _uniform_pair(_counter_hash(self._noise_keys[_STREAM_UNIFORM], steps))
        )
        z = z * np.where(u_tail < _P_TAIL, _TAIL_SCALE, 1.0)

        load = self._daily(t) * (1.0 - _WEEKEND_DIP * _weekend_weight(t))[:, None]
        rps = np.maximum(self._rate * load * (1.0 + _RPS_NOISE * z[..., _RPS]), 0.0)
        util = self._cpu_idle + self._cpu_gain * rps / self._rate
        u = np.clip(util, 0.0, 1.0)
        latency = self._latency * (0.6 + 0.8 * u + 2.0 * u**4) * np.exp(_LAT_NOISE * z[..., _LAT])
        blip = np.where(u_tail[..., _ERR] < _P_BLIP, _BLIP_MIN + _BLIP_SPAN * u_size[..., _ERR], 0)
        errors = self._err_base * np.exp(_ERR_NOISE * z[..., _ERR]) * (0.5 + 0.5 * load) + blip
        memory = (
            self._mem_base
            + _MEM_DAILY_AMPL * (self._daily(t - _MEM_LAG) - 1.0)
            + _MEM_NOISE * z[..., _MEM]
        )

        out = np.empty(shape)
        out[..., _CPU] = util + _CPU_NOISE * z[..., _CPU]
        out[..., _MEM] = memory
        out[..., _LAT] = latency
        out[..., _ERR] = errors
        out[..., _RPS] = rps
        flat = out.reshape(n_t, -1)
        np.clip(flat, 0.0, self._upper, out=flat)
        return flat

    def _apply(
        self, incidents: list[Incident], steps: IntArray, t: FloatArray, values: FloatArray
    ) -> None:
        """Apply incident effects in place (seasonal first, flatline last)."""
        order = {"seasonal_break": 0, "flatline": 2}
        for inc in sorted(incidents, key=lambda i: order.get(i.kind, 1)):
            rows = np.flatnonzero((t >= inc.start) & (t < inc.end))
            if rows.size == 0:
                continue
            col = self._column[inc.key]
            metric = col % len(METRICS)
            if inc.kind == "seasonal_break":
                shifted = self._clean(steps[rows], shift=inc.magnitude * 3600.0)
                values[rows, col] = shifted[:, col]
            elif inc.kind == "flatline":
                first = math.ceil((inc.start - self._start) / self._interval - 1e-9)
                held = self._clean(np.array([max(first - 1, 0)], dtype=np.int64))
                values[rows, col] = held[0, col]
            else:
                effect = np.full(rows.size, inc.magnitude)
                if inc.kind == "slow_ramp":
                    effect *= (t[rows] - inc.start) / (inc.end - inc.start)
                if np.isnan(_UNIT[metric]):
                    values[rows, col] *= 1.0 + effect
                else:
                    values[rows, col] += effect * _UNIT[metric]
            values[rows, col] = np.clip(values[rows, col], 0.0, self._upper[col])

    def _logs(self, steps: IntArray, t: FloatArray, incidents: list[Incident]) -> list[LogRecord]:
        """A few access/housekeeping lines per step, and error bursts during incidents."""
        n_err = _ERROR_LOGS_PER_STEP
        # One 64-bit draw per potential line of each step, keyed by (seed, step, line).
        per_line = np.arange(1, _LOGS_PER_STEP + n_err + 1, dtype=np.uint64)
        h = _counter_hash(self._log_key, steps)  # (steps, 1)
        bits = _mix64_array(h + per_line * np.uint64(_GOLDEN)).tolist()
        services = self.config.services
        records: list[LogRecord] = []
        for r, ts in enumerate(t.tolist()):
            lines = bits[r]
            for j in range(_LOGS_PER_STEP):
                host, service = self._pairs[lines[j] % len(self._pairs)]
                records.append(
                    _log_line(ts, self._interval, lines[j], host, service, _LOG_TEMPLATES, services)
                )
            for inc in incidents:
                if inc.start <= ts < inc.end:
                    for j in range(_LOGS_PER_STEP, _LOGS_PER_STEP + n_err):
                        records.append(
                            _log_line(
                                ts,
                                self._interval,
                                lines[j],
                                inc.host,
                                inc.service,
                                _ERROR_TEMPLATES,
                                services,
                            )
                        )
        records.sort(key=lambda rec: rec.timestamp)
        return records


def _log_line(
    ts: float,
    interval: float,
    bits: int,
    host: str,
    service: str,
    templates: tuple[str, ...],
    services: list[str],
) -> LogRecord:
    """One log line whose every choice comes from the 64 random ``bits``."""
    deps = [s for s in services if s != service] or ["upstream"]
    template = templates[(bits >> 8) % len(templates)]
    message = template.format(
        svc=service,
        id=(bits >> 16) % 100_000,
        ms=1 + (bits >> 24) % 900,
        n=1 + (bits >> 34) % 64,
        a=1 + (bits >> 40) % 3,
        dep=deps[(bits >> 42) % len(deps)],
    )
    offset = ((bits >> 48) % 1000) / 1000.0 * interval
    return LogRecord(ts + offset, message, (("host", host), ("service", service)))


def _weekend_weight(t: FloatArray) -> FloatArray:
    """1 on Saturday and Sunday (UTC), 0 on weekdays, blended linearly around midnight."""
    # 1970-01-01 was a Thursday: day 0 of the week (Monday) starts 3 days earlier.
    pos = ((t / 86400.0) + 3.0) % 7.0  # 0 = Monday 00:00, 5 = Saturday 00:00
    pos = np.where(pos < 1.0, pos + 7.0, pos)  # Monday early hours sit after Sunday
    ramp = _WEEKEND_RAMP / 86400.0
    rise = np.clip((pos - 5.0) / ramp + 0.5, 0.0, 1.0)
    fall = np.clip((7.0 - pos) / ramp + 0.5, 0.0, 1.0)
    out: FloatArray = np.minimum(rise, fall)
    return out


def _parse_resume(resume: dict[str, Any] | None) -> tuple[int, float | None]:
    if resume is None:
        return 0, None
    if not isinstance(resume, dict):
        raise ValueError(f"simulator resume state must be a mapping, got {resume!r}")
    unknown = set(resume) - {"step", "start"}
    step = resume.get("step")
    start = resume.get("start")
    if (
        unknown
        or not isinstance(step, int)
        or isinstance(step, bool)
        or step < 0
        or (start is not None and not isinstance(start, int | float))
    ):
        msg = (
            f"invalid simulator resume state {resume!r}: expected "
            '{"step": non-negative int} and optionally {"start": unix seconds}'
        )
        raise ValueError(msg)
    return step, None if start is None else float(start)
