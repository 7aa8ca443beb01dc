"""Reliability: the file source's CSV and JSONL under 10,000 malformed lines each.

Seeded cases (:class:`tests.fuzz_inputs.Mutator`) between canary lines, read with two
batch sizes: the source never raises (but for a header without the configured columns,
a :class:`~aiops.pipeline.source.SourceError` the daemon reports), always finishes, keeps
every canary, gives each non-blank line one point or one reject (by reason), and the
batch boundaries change nothing. Times outside years 1-9999, which the source leaves to
the daemon, are dropped as the daemon does (:func:`~aiops.pipeline.decoder.drop_bad_times`).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from aiops.connectors.sources.files import FileSource
from aiops.pipeline.decoder import MAX_TIMESTAMP, MIN_TIMESTAMP, REJECT_REASONS, drop_bad_times
from aiops.pipeline.source import SourceError
from aiops.types import Batch, SeriesKey
from tests.fuzz_inputs import Mutator, assert_utf8, check_key

RECORD_TIME = 1_700_000_000.0
ADAPTER = {
    "timestamp": "2024-05-01T12:00:00Z",
    "value": "0.25",
    "name": "up",
    "labels": {"__name__": "up", "instance": "web-1:9100", "job": "node"},
}


def _j(doc: Any) -> bytes:
    return json.dumps(doc).encode()


CSV_SEEDS = (
    b"2024-05-01T12:00:00Z,0.5,cpu,web-1",
    b"1714564800,12,mem,web-2",
    b"2024-05-01 12:00:00.250,,cpu,web-1",
    b'"2024-05-01T12:00:00Z","1.5e3","disk","web,3"',
)
JSONL_SEEDS = (
    _j(ADAPTER),
    _j({"name": "mem", "labels": {"host": "b"}, "timestamp": 1714564800, "value": 3}),
    _j({"labels": {"__name__": "x", "a": "b"}, "timestamp": "2024-05-01T12:00:00.5Z", "value": ""}),
)
FILES, LINES_PER_FILE = 40, 250  # 10,000 malformed lines per format


def _canary(fmt: str, n: int) -> bytes:
    t = RECORD_TIME + n
    if fmt == "csv":
        return f"{t:.0f},{n},canary,c".encode()
    return _j({"name": "canary", "labels": {"host": "c"}, "timestamp": t, "value": n})


def _read_all(src: FileSource) -> list[Batch]:
    batches = []
    for _ in range(100_000):
        if src.exhausted:
            return batches
        batches.append(src.next_batch())
    raise AssertionError("the file source never finished")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_file_source_keeps_every_good_line_among_ten_thousand_malformed_ones(tmp_path, fmt):
    m = Mutator(seed=11 if fmt == "csv" else 12)
    seeds = CSV_SEEDS if fmt == "csv" else JSONL_SEEDS
    settings: dict[str, Any] = {"format": fmt}
    if fmt == "csv":
        settings |= {"name_column": "name", "label_columns": ["host"]}
    reasons: Counter[str] = Counter()
    for f in range(FILES):
        lines, canaries = [], []
        for i in range(LINES_PER_FILE):
            lines.append(m.mutate(seeds[i % len(seeds)]))
            if i % 5 == 0:
                canaries.append(len(canaries))
                lines.append(_canary(fmt, canaries[-1]))
        body = b"\n".join(lines) + m.rng.choice((b"\n", b""))
        path = tmp_path / f"f{f}.{fmt}"
        path.write_bytes((b"timestamp,value,name,host\n" if fmt == "csv" else b"") + body)
        # Batch boundaries change nothing (each line decodes alone): a few sizes each.
        results = []
        for size in (1 + m.rng.randrange(7), 50 + m.rng.randrange(500)):
            src = FileSource("f", FileSource.Config(path=str(path), batch_size=size, **settings))
            # The file source leaves times outside years 1-9999 to the daemon, which
            # rejects them before any rule (drop_bad_times); so does this test.
            batches = [drop_bad_times(b, "f") for b in _read_all(src)]
            src.close()
            for b in batches:
                for key in b.keys:
                    check_key(key)
                for r in b.rejects:
                    assert r.reason in REJECT_REASONS, r
                    assert_utf8(r.detail, "reject detail")
                assert ((b.timestamps >= MIN_TIMESTAMP) & (b.timestamps < MAX_TIMESTAMP)).all()
            points = [p for b in batches for p in _points_of(b)]
            rejects = sorted((r.origin, r.reason) for b in batches for r in b.rejects)
            results.append((points, rejects))
        assert results[0] == results[1], f"file {f}: batch size changed the outcome"
        points, rejects = results[0]
        canary = SeriesKey.of("canary", {"host": "c"})
        got = [(t, v) for k, t, v in points if k == canary]
        assert got == [(RECORD_TIME + n, float(n)) for n in canaries], f"file {f}"
        data_lines = body.split(b"\n")
        if body.endswith(b"\n"):
            data_lines.pop()
        non_blank = sum(1 for line in data_lines if _non_blank_file_line(line))
        assert len(points) + len(rejects) == non_blank, f"file {f}"
        reasons.update(reason for _, reason in rejects)
    need = {"bad_utf8", "bad_timestamp", "bad_value"}
    need |= {"bad_line", "missing_field"} if fmt == "csv" else {"bad_json", "bad_shape"}
    assert need <= set(reasons), dict(reasons)


def _points_of(batch: Batch) -> list[tuple[SeriesKey, float, float]]:
    return [(k, t, -1.0 if math.isnan(v) else v) for k, t, v in batch.points()]


def _non_blank_file_line(line: bytes) -> bool:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return bool(text.removesuffix("\r").strip())


def test_a_file_source_with_a_garbage_header_finishes(tmp_path: Path):
    """300 mutated CSV headers: each names the columns or fails the source; none hangs."""
    m = Mutator(5)
    failed = 0
    for i in range(300):
        header = m.mutate(b"timestamp,value,name,host")
        path = tmp_path / f"h{i}.csv"
        path.write_bytes(header + b"\n" + b"\n".join(CSV_SEEDS) + b"\n")
        config = FileSource.Config(
            path=str(path), format="csv", name_column="name", label_columns=["host"]
        )
        src = FileSource("f", config)
        try:
            batches = _read_all(src)
        except SourceError:  # the daemon reports it in health, and --once ends
            assert src.exhausted  # a replay gets no other header
            failed += 1
            continue
        finally:
            src.close()
        if b"\n" not in header:
            assert sum(b.n_points + len(b.rejects) for b in batches) == len(CSV_SEEDS), header
    assert 0 < failed < 300


def test_the_daemon_counts_every_reject_by_reason_keeps_each_aside_and_still_alerts(tmp_path):
    """5,000 malformed JSONL lines around an incident, through the whole daemon loop."""
    import threading

    from aiops.alerting.groups import DataClock, Groups
    from aiops.alerting.routing import Dispatcher, RouteNode
    from aiops.pipeline.engine import Engine, RuleSpec
    from aiops.service.daemon import Daemon, DeadLetterFile
    from aiops.state.checkpoint import Checkpointer
    from aiops.state.envelope import FileStateStore
    from aiops.testing import FakeClock, ListNotifier, ValueIsScore

    m = Mutator(seed=31)
    lines = []
    for i in range(5000):
        lines.append(m.mutate(JSONL_SEEDS[i % len(JSONL_SEEDS)]))
        if i % 50 == 0:  # a canary a step; the value is the score: steps 40-42 fire
            step = i // 50
            value = 1.0 if 40 <= step < 43 else 0.0
            doc = {"name": "canary", "labels": {"host": "c"}, "timestamp": 60.0 * step}
            lines.append(_j({**doc, "value": value}))
    path = tmp_path / "flood.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    # What the source and the daemon's time check reject, read on their own.
    expected: Counter[str] = Counter()
    alone = FileSource("f", FileSource.Config(path=str(path), batch_size=500))
    for b in _read_all(alone):
        expected.update(r.reason for r in drop_bad_times(b, "f").rejects)
    alone.close()

    spec = RuleSpec(
        group="g", alert="Canary", source="f", matches=lambda k: k.name == "canary", threshold=0.9
    )
    engine = Engine([spec])
    engine.rules[spec.key].detector = ValueIsScore()
    notifier = ListNotifier()
    state = tmp_path / "state"
    daemon = Daemon(
        sources={"f": FileSource("f", FileSource.Config(path=str(path), batch_size=500))},
        engine=engine,
        router=Groups(RouteNode("r", group_wait=0.0), clock=DataClock()),
        dispatcher=Dispatcher({"r": [notifier]}),
        checkpointer=Checkpointer(FileStateStore(state)),
        dead_letters=DeadLetterFile(state / "rejects.jsonl"),
        clock=FakeClock(),
    )
    daemon.run(threading.Event())
    health = daemon.health["f"]
    assert health.rejects == expected
    assert sum(expected.values()) > 3000
    kept = [json.loads(x) for x in (state / "rejects.jsonl").read_text().splitlines()]
    assert Counter(x["reason"] for x in kept) == expected
    assert all(("raw" in x) != ("raw_base64" in x) for x in kept)
    got = [(a.status, a.starts_at) for n in notifier.sent for a in n.alerts]
    assert got == [("firing", 40 * 60.0), ("resolved", 40 * 60.0)]


def test_aiops_run_once_ends_on_a_csv_header_without_the_columns(tmp_path):
    """Issue [H]: a file source with a garbage header never finished under --once."""
    import subprocess
    import sys

    (tmp_path / "data.csv").write_text("garbage,header\n1,2\n")
    (tmp_path / "rules.yaml").write_text(
        "groups:\n  - name: g\n    rules:\n      - {alert: A, source: data, selector: value}\n"
    )
    (tmp_path / "aiops.yaml").write_text(
        "sources:\n  data: {type: file, path: data.csv}\nstate: {dir: state}\n"
        "rule_files: [rules.yaml]\n"
    )

    def run_once() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aiops.cli", "run", "--config", "aiops.yaml", "--once"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    run = run_once()
    assert "has no column 'timestamp', 'value'" in run.stderr
    assert "Traceback" not in run.stderr
    # It ended without processing the file: exit 1, and one error line names the source.
    assert run.returncode == 1, run.stderr
    (line,) = [x for x in run.stderr.splitlines() if 'source "data" failed' in x]
    assert "ERROR" in line
    assert "has no column 'timestamp', 'value'" in line
    (tmp_path / "data.csv").write_text("timestamp,value\n1,2\n")
    run = run_once()
    assert run.returncode == 0, run.stderr
    assert "failed" not in run.stderr


def test_aiops_run_once_ends_on_a_missing_file(tmp_path):
    """A replay of a file that is not there retried for ever under --once; now exit 1."""
    import subprocess
    import sys

    (tmp_path / "rules.yaml").write_text(
        "groups:\n  - name: g\n    rules:\n      - {alert: A, source: data, selector: value}\n"
    )
    (tmp_path / "aiops.yaml").write_text(
        "sources:\n  data: {type: file, path: gone.csv}\nstate: {dir: state}\n"
        "rule_files: [rules.yaml]\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "aiops.cli", "run", "--config", "aiops.yaml", "--once"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in run.stderr
    assert run.returncode == 1, run.stderr
    (line,) = [x for x in run.stderr.splitlines() if 'source "data" failed' in x]
    assert "cannot open gone.csv" in line
