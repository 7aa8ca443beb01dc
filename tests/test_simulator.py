"""SimulatorSource: reproducibility, resume, incidents (ground truth), pacing, shapes."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from aiops.connectors.sources.simulator import (
    INCIDENT_KINDS,
    METRICS,
    Incident,
    SimulatorSource,
)
from aiops.registry import SOURCES
from aiops.testing import FakeClock
from aiops.timeutil import parse_timestamp
from aiops.types import Batch, SeriesKey

Config = SimulatorSource.Config
START = parse_timestamp("2026-01-05T00:00:00Z")  # the default start, a Monday
HOUR = 3600.0


def make(resume: dict[str, Any] | None = None, **settings: Any) -> SimulatorSource:
    return SimulatorSource("sim", Config(**settings), resume=resume)


def run(src: SimulatorSource, n_batches: int | None = None) -> list[Batch]:
    batches = []
    while not src.exhausted and (n_batches is None or len(batches) < n_batches):
        batches.append(src.next_batch())
    return batches


def columns(batches: list[Batch]) -> tuple[list[SeriesKey], np.ndarray, np.ndarray]:
    """Every point of the batches, in order: keys, timestamps, values."""
    keys = [b.keys[i] for b in batches for i in b.series.tolist()]
    ts = np.concatenate([b.timestamps for b in batches]) if batches else np.zeros(0)
    vs = np.concatenate([b.values for b in batches]) if batches else np.zeros(0)
    return keys, ts, vs


def matrix(src: SimulatorSource, batches: list[Batch]) -> np.ndarray:
    """Values as (steps, series) in ``src.keys`` order."""
    _, _, vs = columns(batches)
    return vs.reshape(-1, len(src.keys))


def series_index(src: SimulatorSource, metric: str, host: str, service: str) -> int:
    return src.keys.index(SeriesKey.of(metric, {"host": host, "service": service}))


def test_registered_as_simulator() -> None:
    assert SOURCES.get("simulator") is SimulatorSource


def test_series_names_and_labels() -> None:
    src = make(hosts=3, services=["api", "db"])
    batch = src.next_batch()
    assert len(batch.keys) == 3 * 2 * 5
    assert (
        {k.name for k in batch.keys}
        == set(METRICS)
        == {
            "cpu_usage_ratio",
            "memory_usage_ratio",
            "http_request_duration_seconds",
            "http_errors_ratio",
            "http_requests_per_second",
        }
    )
    assert {dict(k.labels)["host"] for k in batch.keys} == {"host-1", "host-2", "host-3"}
    assert {dict(k.labels)["service"] for k in batch.keys} == {"api", "db"}
    assert all({name for name, _ in k.labels} == {"host", "service"} for k in batch.keys)
    # Step-major order: every series once per step, timestamps on the interval grid.
    assert batch.series.tolist()[:30] == list(range(30))
    assert np.array_equal(np.unique(batch.timestamps), START + 15.0 * np.arange(40))


def test_same_seed_same_batches_and_different_seed_different() -> None:
    a, b, c = (run(make(seed=s, duration="3h")) for s in (7, 7, 8))
    ka, ta, va = columns(a)
    kb, tb, vb = columns(b)
    _, tc, vc = columns(c)
    assert ka == kb
    assert np.array_equal(ta, tb)
    assert np.array_equal(va, vb)
    assert np.array_equal(ta, tc)
    assert not np.array_equal(va, vc)
    assert (
        make(seed=7, duration="1d").incident_schedule
        != make(seed=8, duration="1d").incident_schedule
    )


@pytest.mark.parametrize("steps_per_batch", [1, 7, 40])
@pytest.mark.parametrize("stop_after", [0, 1, 3, 11])
def test_resume_equals_uninterrupted_run(steps_per_batch: int, stop_after: int) -> None:
    settings = {"duration": "2h", "hosts": 2, "logs": True, "seed": 3}
    reference = run(make(max_steps_per_batch=10_000, **settings))
    ref = columns(reference)
    ref_logs = [rec for b in reference for rec in b.logs]

    first = make(max_steps_per_batch=steps_per_batch, **settings)
    head = run(first, stop_after)
    state = json.loads(json.dumps(first.snapshot()))
    tail = run(make(resume=state, max_steps_per_batch=steps_per_batch, **settings))
    got = columns(head + tail)
    assert got[0] == ref[0]
    assert np.array_equal(got[1], ref[1])
    assert np.array_equal(got[2], ref[2])  # exactly, not approximately
    assert [rec for b in head + tail for rec in b.logs] == ref_logs


def test_finite_run_is_exhausted_after_its_duration() -> None:
    src = make(duration="1h", max_steps_per_batch=100)
    sizes = [b.n_points // len(src.keys) for b in run(src)]
    assert sizes == [100, 100, 40]
    assert src.exhausted
    assert src.next_batch().n_points == 0
    assert src.snapshot() == {"step": 240}


def test_values_are_in_range_and_shaped_like_a_fleet() -> None:
    src = make(duration="7d", max_steps_per_batch=100_000, interval="5m", incidents=[])
    m = matrix(src, run(src))
    assert np.isfinite(m).all()
    assert (m >= 0).all()
    t = START + 300.0 * np.arange(m.shape[0])
    hour = (t % 86400) // 3600
    weekday = ((t // 86400) + 3) % 7 < 5  # 1970-01-01 was a Thursday
    for i, key in enumerate(src.keys):
        v = m[:, i]
        if key.name.endswith("_ratio"):
            assert (v <= 1).all(), key
        if key.name == "http_requests_per_second":
            # Daily cycle: afternoon well above the small hours; weekends quieter.
            assert v[weekday & (hour == 14)].mean() > 1.8 * v[weekday & (hour == 3)].mean()
            assert v[~weekday & (hour == 14)].mean() < 0.8 * v[weekday & (hour == 14)].mean()
            labels = dict(key.labels)
            cpu = m[:, series_index(src, "cpu_usage_ratio", labels["host"], labels["service"])]
            where = (labels["host"], labels["service"])
            lat = m[:, series_index(src, "http_request_duration_seconds", *where)]
            assert np.corrcoef(v, cpu)[0, 1] > 0.9
            assert np.corrcoef(v, lat)[0, 1] > 0.5
        if key.name == "http_errors_ratio":
            assert np.median(v) < 0.01


def _place(kind: str, metric: str, magnitude: float | None = None, **more: Any) -> dict[str, Any]:
    spec = {
        "kind": kind,
        "start": "5h",
        "length": more.pop("length", "1h"),
        "host": "host-2",
        "service": "api",
        "metric": metric,
        "magnitude": magnitude,
    }
    return spec


@pytest.mark.parametrize(
    ("kind", "metric"),
    [
        ("spike", "http_requests_per_second"),
        ("spike", "http_errors_ratio"),
        ("level_shift", "http_request_duration_seconds"),
        ("slow_ramp", "memory_usage_ratio"),
        ("flatline", "cpu_usage_ratio"),
        ("seasonal_break", "http_requests_per_second"),
    ],
)
def test_an_incident_changes_exactly_its_series_and_window(kind: str, metric: str) -> None:
    base = {"duration": "10h", "max_steps_per_batch": 10_000}
    length = "30s" if kind == "spike" else "1h"
    src = make(incidents=[_place(kind, metric, length=length)], **base)
    clean_src = make(incidents=[], **base)
    m, clean = matrix(src, run(src)), matrix(clean_src, run(clean_src))
    (incident,) = src.incident_schedule
    got = (incident.kind, incident.metric, incident.host, incident.service)
    assert got == (kind, metric, "host-2", "api")
    assert incident.start == START + 5 * HOUR
    t = START + 15.0 * np.arange(m.shape[0])
    inside = (t >= incident.start) & (t < incident.end)
    col = series_index(src, metric, "host-2", "api")

    changed = m != clean
    assert not changed[:, np.arange(m.shape[1]) != col].any()  # other series untouched
    assert not changed[~inside, col].any()  # outside the window untouched
    during, normal = m[inside, col], clean[:, col]
    if kind == "spike":
        assert inside.sum() == 2
        assert during.min() > normal.max() * (1.5 if metric.endswith("second") else 3)
    elif kind == "level_shift":
        assert during.mean() > 2.5 * clean[inside, col].mean()
    elif kind == "slow_ramp":
        assert np.all(np.diff(during - clean[inside, col]) > 0)
        assert during[-1] - clean[inside, col][-1] > 0.25
    elif kind == "flatline":
        assert np.ptp(during) == 0
        assert np.ptp(clean[inside, col]) > 0
    else:  # seasonal_break: the 5 am level replaced by an afternoon one, 12 h away
        assert during.mean() > 1.5 * clean[inside, col].mean()


def test_auto_schedule_waits_for_warmup_and_is_plausible() -> None:
    for seed in range(8):
        src = make(seed=seed, duration="3d", warmup="2h")
        schedule = src.incident_schedule
        assert 8 <= len(schedule) <= 30, seed
        first = schedule[0]
        assert START + 2 * HOUR <= first.start <= START + 3 * HOUR
        keys = set(src.keys)
        for inc, nxt in itertools.pairwise(schedule):
            assert inc.end + HOUR <= nxt.start  # apart, never overlapping
        for inc in schedule:
            assert inc.kind in INCIDENT_KINDS
            assert inc.key in keys
            assert (inc.start - START) % 15.0 == 0  # on a sample
            assert inc.end > inc.start
    assert {i.kind for s in range(8) for i in make(seed=s, duration="3d").incident_schedule} == set(
        INCIDENT_KINDS
    )


def test_auto_incidents_are_the_only_differences_from_a_clean_run() -> None:
    base = {"duration": "1d", "max_steps_per_batch": 100_000, "seed": 5}
    src = make(**base)
    clean_src = make(incidents=[], **base)
    m, clean = matrix(src, run(src)), matrix(clean_src, run(clean_src))
    t = START + 15.0 * np.arange(m.shape[0])
    expected = np.zeros_like(m, dtype=bool)
    for inc in src.incident_schedule:
        inside = (t >= inc.start) & (t < inc.end)
        col = src.keys.index(inc.key)
        assert (m[inside, col] != clean[inside, col]).any(), inc
        expected[inside, col] = True
    assert not (m != clean)[~expected].any()


def test_endless_schedule_grows_without_changing_the_past() -> None:
    src = make(max_steps_per_batch=2000)
    early = src.incident_schedule
    run(src, 20)  # about a week
    later = src.incident_schedule
    assert later[: len(early)] == early
    assert len(later) > len(early)
    assert later == make(duration="9d").incident_schedule[: len(later)]


def test_incident_as_dict() -> None:
    key = SeriesKey.of("cpu_usage_ratio", {"host": "host-1", "service": "db"})
    inc = Incident("spike", START, START + 30, key, 4.0)
    assert inc.as_dict() == {
        "kind": "spike",
        "start": "2026-01-05T00:00:00Z",
        "end": "2026-01-05T00:00:30Z",
        "series": 'cpu_usage_ratio{host="host-1",service="db"}',
        "metric": "cpu_usage_ratio",
        "host": "host-1",
        "service": "db",
        "magnitude": 4.0,
    }


def test_pacing_follows_the_clock() -> None:
    clock = FakeClock(100.0)
    src = SimulatorSource("sim", Config(speed=60, interval="15s"), clock=clock)
    steps = len(src.keys)
    assert src.next_batch().n_points == steps  # step 0 is due at once
    assert src.next_batch().n_points == 0
    clock.advance(0.2)  # 12 simulated seconds: step 1 not due yet
    assert src.next_batch().n_points == 0
    clock.advance(0.05)  # 15 s
    assert src.next_batch().n_points == steps
    clock.advance(1.0)  # 75 s: steps 2..5
    assert src.next_batch().n_points == 4 * steps
    clock.advance(3600)  # far behind: catches up 40 steps at a time
    assert src.next_batch().n_points == 40 * steps
    assert src.snapshot() == {"step": 46}

    # After a resume, pacing starts again at the resumed step.
    clock2 = FakeClock(0.0)
    resumed = SimulatorSource("sim", Config(speed=60), resume=src.snapshot(), clock=clock2)
    batch = resumed.next_batch()
    assert batch.n_points == steps
    assert batch.timestamps[0] == START + 46 * 15


def test_logs_are_small_and_burst_during_incidents() -> None:
    spike = _place("level_shift", "http_errors_ratio", length="10m")
    src = make(logs=True, incidents=[spike], duration="6h", max_steps_per_batch=100_000)
    (batch,) = run(src)
    assert all(rec.labels[0][0] == "host" and rec.labels[1][0] == "service" for rec in batch.logs)
    (incident,) = src.incident_schedule
    ts = np.array([rec.timestamp for rec in batch.logs])
    assert np.all(np.diff(ts) >= 0)
    errors = [r for r in batch.logs if r.message.startswith(("ERROR", "WARN"))]
    assert len(batch.logs) == 3 * 1440 + len(errors)
    assert len(errors) == 4 * 40  # 10 minutes of 15 s steps, four lines each
    assert all(incident.start <= r.timestamp < incident.end + 15 for r in errors)
    assert {dict(r.labels)["host"] for r in errors} == {"host-2"}
    assert not make().next_batch().logs


def test_start_from_the_wall_clock_is_kept_in_the_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_800_000_007.0)
    src = make(start=None)
    first = src.next_batch()
    assert first.timestamps[0] == 1_800_000_000.0  # floored to the interval
    state = json.loads(json.dumps(src.snapshot()))
    assert state == {"step": 40, "start": 1_800_000_000.0}
    monkeypatch.setattr(time, "time", lambda: 1_900_000_000.0)
    assert make(start=None, resume=state).next_batch().timestamps[0] == 1_800_000_000.0 + 40 * 15


def test_config_validation() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        Config(type="simulator")  # type: ignore[call-arg]  # the loader strips "type"
    with pytest.raises(ValidationError, match="greater than zero"):
        Config(interval="0s")
    with pytest.raises(ValidationError, match="invalid duration"):
        Config(duration="a while")
    with pytest.raises(ValidationError, match="invalid time"):
        Config(start="yesterday")
    with pytest.raises(ValidationError, match="not unique"):
        Config(services=["api", "api"])
    bad = _place("spike", "cpu_usage_ratio") | {"host": "host-9", "service": "cache"}
    with pytest.raises(ValidationError, match=r'unknown host "host-9".*unknown service "cache"'):
        Config(incidents=[bad])
    with pytest.raises(ValidationError):
        Config(incidents=[_place("meltdown", "cpu_usage_ratio")])
    with pytest.raises(ValueError, match="invalid simulator resume state"):
        make(resume={"step": -1})
    with pytest.raises(ValueError, match="invalid simulator resume state"):
        make(resume={"offset": 3})


def test_every_config_field_is_documented() -> None:
    from aiops.connectors.sources.simulator import IncidentSpec

    for model in (Config, IncidentSpec):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"


def test_a_day_of_the_default_fleet_is_fast() -> None:
    src = make(duration="1d")  # 4 hosts x 3 services, 15 s steps, default batches
    began = time.perf_counter()
    n = sum(b.n_points for b in run(src))
    elapsed = time.perf_counter() - began
    assert n == 5760 * 60
    assert elapsed < 5.0, f"{n / elapsed:.0f} points/s"
