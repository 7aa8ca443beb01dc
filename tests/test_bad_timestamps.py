"""Times no alert could carry (outside years 1-9999, inf, NaN) are counted rejects.

Every decoder rejects them item by item (``bad_timestamp``, the good items kept), the
daemon drops any a source lets through before the rules see them (and counts them), and
``aiops score`` keeps one output row per input row, such a row scored as missing.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from aiops.cli import cli
from aiops.connectors.formats import (
    GenericJsonDecoder,
    InfluxLineDecoder,
    JournaldDecoder,
    LogJsonDecoder,
    PrometheusJsonDecoder,
)
from aiops.connectors.formats._common import ItemError, parse_time
from aiops.pipeline.decoder import MAX_TIMESTAMP, MIN_TIMESTAMP, Decoded, drop_bad_times
from aiops.pipeline.engine import Engine, RuleSpec
from aiops.testing import ValueIsScore
from aiops.types import Batch, LogRecord, SeriesKey

UP = SeriesKey.of("up", {"job": "a"})


def test_the_bounds_are_year_1_and_year_10000():
    from datetime import UTC, datetime

    assert datetime.fromtimestamp(MIN_TIMESTAMP, UTC) == datetime(1, 1, 1, tzinfo=UTC)
    assert datetime.fromtimestamp(MAX_TIMESTAMP - 1, UTC) == datetime(
        9999, 12, 31, 23, 59, 59, tzinfo=UTC
    )


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:00:00+01:00",  # a zone moves it before year 1
        "9999-12-31T23:59:59-05:00",  # ... or past 9999
        "0000-06-01T00:00:00Z",
        -7e10,  # year ~ -250 in seconds: under the wrong-unit bound
        "-70000000000",
        math.inf,
        math.nan,
        "1e400",
    ],
)
def test_parse_time_refuses_times_outside_years_1_to_9999(value):
    with pytest.raises(ItemError) as e:
        parse_time(value)
    assert e.value.reason == "bad_timestamp"


def test_parse_time_keeps_the_edges():
    assert parse_time("0001-01-01T00:00:00Z") == MIN_TIMESTAMP
    assert parse_time("9999-12-31T23:59:59Z") == MAX_TIMESTAMP - 1


def reasons(out: Decoded) -> list[str]:
    return [r.reason for r in out.rejects]


def test_influx_line_with_second_precision_past_year_9999():
    d = InfluxLineDecoder(precision="s")
    out = d.decode(b"cpu v=1 60\ncpu v=2 9000000000000000000\ncpu v=3 -70000000000\n")
    assert out.timestamps == [60.0]
    assert reasons(out) == ["bad_timestamp", "bad_timestamp"]
    assert "outside years 1-9999" in out.rejects[0].detail
    assert out.rejects[0].raw == b"cpu v=2 9000000000000000000"


def test_journald_with_a_huge_realtime_timestamp():
    lines = [
        {"MESSAGE": "ok", "__REALTIME_TIMESTAMP": "1700000000000000"},
        {"MESSAGE": "far", "__REALTIME_TIMESTAMP": "9" * 30},
        {"MESSAGE": "huge", "__REALTIME_TIMESTAMP": "9" * 400},
    ]
    out = JournaldDecoder().decode(b"\n".join(json.dumps(x).encode() for x in lines))
    assert [r.message for r in out.logs] == ["ok"]
    assert reasons(out) == ["bad_timestamp", "bad_timestamp"]


@pytest.mark.parametrize(
    ("decoder", "template"),
    [
        (PrometheusJsonDecoder(), '{{"name": "up", "value": "1", "timestamp": {t}}}'),
        (
            GenericJsonDecoder(name="up", value_path="v", timestamp_path="t"),
            '{{"v": 1, "t": {t}}}',
        ),
        (LogJsonDecoder(), '{{"message": "m", "timestamp": {t}}}'),
    ],
    ids=["prometheus_json", "generic_json", "log_json"],
)
@pytest.mark.parametrize(
    "t", ['"0000-01-01T00:00:00Z"', '"9999-12-31T23:59:59-01:00"', "-70000000000", "1e400"]
)
def test_json_decoders_reject_the_item(decoder, template, t):
    good = decoder.decode(template.format(t="60").encode())
    assert good.rejects == []
    assert good.n_points + len(good.logs) == 1
    out = decoder.decode(template.format(t=t).encode())
    assert reasons(out) == ["bad_timestamp"]
    assert out.n_points == 0
    assert out.logs == []


def test_to_batch_is_a_net_for_any_decoder():
    d = Decoded(origin="topic/0@5")
    d.add_point(UP, 60.0, 1.0)
    d.add_point(SeriesKey.of("far"), 1e20, 2.0)
    d.add_point(UP, math.nan, 3.0)
    d.logs.append(LogRecord(-1e11, "old"))
    d.logs.append(LogRecord(60.0, "fine"))
    b = d.to_batch()
    assert b.timestamps.tolist() == [60.0]
    assert b.values.tolist() == [1.0]
    assert list(b.keys) == [UP]  # a key with only bad points is gone
    assert [r.message for r in b.logs] == ["fine"]
    assert [(r.reason, r.origin) for r in b.rejects] == [("bad_timestamp", "topic/0@5")] * 3


def test_a_batch_without_bad_times_is_passed_through_as_is():
    b = Batch.from_points([(UP, 0.0, 1.0), (UP, 60.0, 2.0)])
    assert drop_bad_times(b) is b


def test_the_daemon_counts_them_and_no_alert_carries_them(tmp_path):
    from aiops.alerting.groups import DataClock, Groups
    from aiops.alerting.routing import Dispatcher, RouteNode
    from aiops.service.daemon import Daemon
    from aiops.state.checkpoint import Checkpointer
    from aiops.state.envelope import FileStateStore
    from aiops.testing import FakeClock, ListNotifier, MemorySource

    keys = [SeriesKey.of("m", {"host": "h0"})]
    # A source that builds batches itself (remote write, a plugin): values 1.0 would fire.
    bad = Batch(
        keys=keys,
        series=np.zeros(4, np.int64),
        timestamps=np.array([np.inf, np.nan, 1e20, -7e10]),
        values=np.ones(4),
    )
    good = Batch(
        keys=keys, series=np.zeros(1, np.int64), timestamps=np.array([60.0]), values=np.ones(1)
    )
    spec = RuleSpec(group="g", alert="A", source="mem", matches=lambda k: True, threshold=0.9)
    engine = Engine([spec])
    rt = engine.rules[spec.key]

    rt.detector = ValueIsScore()
    notifier = ListNotifier()
    daemon = Daemon(
        sources={"mem": MemorySource([bad, good])},
        engine=engine,
        router=Groups(RouteNode("r", group_wait=0.0), clock=DataClock()),
        dispatcher=Dispatcher({"r": [notifier]}),
        checkpointer=Checkpointer(FileStateStore(tmp_path)),
        clock=FakeClock(),
    )
    daemon.run(threading.Event())
    assert daemon.health["mem"].rejects["bad_timestamp"] == 4
    assert daemon.health["mem"].points == 1
    # Only the good point fired (at t=60): nothing dated at a bad time reached a receiver.
    assert [[(a.status, a.starts_at) for a in n.alerts] for n in notifier.sent] == [
        [("firing", 60.0)]
    ]
    assert rt.data_time == 60.0


def test_aiops_score_keeps_every_row_and_counts_bad_times(tmp_path: Path):
    rows = [f"{1_700_000_000 + 60 * i},{i % 7}" for i in range(200)]
    bad = ["inf", "nan", "-70000000000", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59-05:00"]
    for k, t in enumerate(bad):
        rows[100 + k] = f"{t},1000"  # a value that would alert, were it scored
    src = tmp_path / "in.csv"
    src.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out.csv"
    res = CliRunner().invoke(cli, ["score", str(src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "5 rows with a bad timestamp" in res.output
    lines = out.read_text().splitlines()[1:]
    assert len(lines) == 200
    for k, t in enumerate(bad):
        assert lines[100 + k] == f"{t},1000,0.000000,0"


def test_a_backtest_counts_them_as_the_daemon_does(tmp_path: Path):
    from aiops.config import load_config
    from aiops.evaluation.backtest import run_backtest
    from aiops.service.app import build_router

    (tmp_path / "t.csv").write_text(
        "timestamp,value\n1700000000,1\n-70000000000,2\n1e20,3\n"
        "9999-12-31T23:59:59-05:00,4\n1700000060,2\n"
    )
    (tmp_path / "rules.yaml").write_text(
        "groups:\n  - name: g\n    rules:\n      - {alert: B, source: f, selector: m}\n"
    )
    (tmp_path / "aiops.yaml").write_text(
        "sources:\n  f: {type: file, path: t.csv, metric: m}\n"
        "state: {dir: state}\nrule_files: [rules.yaml]\n"
    )
    loaded = load_config(tmp_path / "aiops.yaml")
    result = run_backtest(loaded, build_router(loaded.alerting))
    assert result.rejects == {"bad_timestamp": 3}
    assert result.points == 2
