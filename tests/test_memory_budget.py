"""limits.max_memory: over the budget new series are dropped (counted), old ones scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aiops.config import ConfigErrors, load_config
from aiops.pipeline.engine import Engine, RuleSpec
from aiops.pipeline.series import DROPPED
from aiops.service.app import build_daemon
from aiops.service.memory import RESUME_FRACTION, MemoryGuard, resident_bytes
from aiops.service.metrics import PrometheusMetrics
from aiops.types import Batch, SeriesKey

MiB = 1 << 20


def engine() -> Engine:
    spec = RuleSpec(group="g", alert="A", source="s", matches=lambda k: True, threshold=0.999)
    return Engine([spec])


def batch(hosts: list[str], t: float) -> Batch:
    keys = [SeriesKey.of("cpu", {"host": h}) for h in hosts]
    return Batch(
        keys=keys,
        series=np.arange(len(keys), dtype=np.int64),
        timestamps=np.full(len(keys), t),
        values=np.ones(len(keys)),
    )


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_over_budget_new_series_are_dropped_and_taken_again_under_it() -> None:
    eng = engine()
    reg = eng.rules["g/A"].registry
    rss, clock = [100 * MiB], Clock()
    guard = MemoryGuard(200 * MiB, rss=lambda: rss[0], clock=clock)
    assert guard.check(eng) is False
    eng.process("s", batch(["a", "b"], 60.0))
    assert reg.live == 2

    rss[0] = 250 * MiB
    clock.t += 0.5
    assert guard.check(eng) is False  # read at most once a second
    clock.t += 1.0
    assert guard.check(eng) is True
    eng.process("s", batch(["a", "b", "c", "d"], 120.0))
    assert reg.live == 2  # a and b still scored: their rows advanced
    assert reg.lookup([SeriesKey.of("cpu", {"host": "c"})]).tolist() == [-1]
    assert reg.dropped == 2
    assert int(eng.rules["g/A"].points_seen) == 4

    rss[0] = int(200 * MiB * RESUME_FRACTION) + MiB  # under the budget, not under 90%
    clock.t += 1.0
    assert guard.check(eng) is True
    rss[0] = 150 * MiB
    clock.t += 1.0
    assert guard.check(eng) is False
    eng.process("s", batch(["c"], 180.0))
    assert reg.live == 3  # a key dropped before is asked again
    assert reg.resolve([SeriesKey.of("cpu", {"host": "d"})]).tolist() != [DROPPED]


def test_no_budget_never_reads_memory() -> None:
    def fail() -> int:
        raise AssertionError("read")

    assert MemoryGuard(0, rss=fail).check(engine()) is False


def test_a_new_budget_from_a_reload_readmits_at_once() -> None:
    eng = engine()
    guard = MemoryGuard(100 * MiB, rss=lambda: 300 * MiB, clock=Clock())
    guard.check(eng)
    assert not eng.rules["g/A"].registry.admitting
    guard.set_budget(0, eng)
    assert eng.rules["g/A"].registry.admitting
    assert guard.check(eng) is False


def write(tmp_path: Path, limits: str) -> Path:
    rows = ["timestamp,value,host"] + [
        f"{1_700_000_000 + 60 * t},{1.0 + 0.01 * (t % 7)},h{s}" for t in range(50) for s in range(5)
    ]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "rules.yaml").write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        source: data\n"
        "        selector: load\n"
    )
    config = tmp_path / "aiops.yaml"
    config.write_text(
        "sources:\n  data: {type: file, path: data.csv, metric: load, label_columns: [host]}\n"
        f"state: {{dir: state}}\nrule_files: [rules.yaml]\nlimits: {limits}\n"
    )
    return config


def test_the_daemon_over_its_budget_takes_no_series_and_says_so(tmp_path, caplog) -> None:
    # This process (numpy, numba, pandas loaded) is far over the smallest budget.
    assert resident_bytes() > 64 * MiB
    daemon = build_daemon(load_config(write(tmp_path, "{max_memory: 64MiB}")), state_dir=tmp_path)
    daemon.start()
    while not daemon.exhausted:
        daemon.step()
    rt = daemon.engine.rules["g/A"]
    assert rt.registry.live == 0
    assert rt.registry.dropped == 5
    assert daemon.memory.exceeded
    assert "memory budget reached" in caplog.text
    daemon.shutdown()


def test_metrics_show_the_budget_and_when_it_is_exceeded() -> None:
    metrics = PrometheusMetrics()
    MemoryGuard(64 * MiB, rss=lambda: 65 * MiB, metrics=metrics).check(engine())
    assert metrics.registry is not None
    values = {s.name: s.value for fam in metrics.registry.collect() for s in fam.samples}
    assert values["aiops_memory_budget_exceeded"] == 1
    assert values["aiops_memory_budget_bytes"] == 64 * MiB


@pytest.mark.parametrize(("value", "ok"), [("0", True), ("1GiB", True), ("32MiB", False)])
def test_the_budget_is_0_or_at_least_64_mib(tmp_path, value, ok) -> None:
    config = write(tmp_path, f"{{max_memory: {value}}}")
    if ok:
        load_config(config)
    else:
        with pytest.raises(ConfigErrors, match="64MiB"):
            load_config(config)
