"""`aiops backtest` over Prometheus history: a real Prometheus 2.42 with backfilled days.

The backfilled data are the points of ``test_backtest``'s CSV replay, so a backtest of
PromQL rules over them must find exactly the alerts of the file replay.
"""

from __future__ import annotations

import csv
import json
import re
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from servers import HistorySeries
from test_backtest import (
    ALERTING,
    DAY_STEPS,
    EXPECTED,
    RULE_A,
    RULE_B,
    RULES,
    T0,
    aiops,
    parse_tables,
    per_rule,
    summary_line,
    write_config,
    write_csv,
)

from aiops.config import load_config
from aiops.connectors.sources.prometheus import PrometheusSource
from aiops.evaluation.backtest import BacktestError, BacktestUsageError, run_backtest
from aiops.pipeline.source import QuerySpec
from aiops.service.app import build_router
from aiops.timeutil import to_rfc3339

END = T0 + 3 * 86_400
# The file replay's rules as PromQL rules of a pull source, evaluated every 5 minutes
# (the CSV's spacing).
PROM_RULES = (
    RULES.replace("source: replay", "source: prom")
    .replace("selector:", "query:")
    .replace("  - name: bt\n", "  - name: bt\n    interval: 5m\n")
)


def csv_history(path: Path) -> list[HistorySeries]:
    """The valid rows of ``write_csv``'s file as one series per host."""
    samples: dict[str, list[tuple[float, float]]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            try:
                t, v = float(row["timestamp"]), float(row["value"])
            except ValueError:
                continue  # the two bad rows
            samples.setdefault(row["host"], []).append((t, v))
    return [HistorySeries("latency_seconds", {"host": h}, s) for h, s in samples.items()]


def prom_config(tmp_path: Path, url: str, *, extra: str = "", rules: str = PROM_RULES) -> Path:
    """A config whose rules query Prometheus at ``url`` (plus the file source ``replay``)."""
    (tmp_path / "prom-rules.yaml").write_text(rules)
    (tmp_path / "alerting.yaml").write_text(ALERTING)
    (tmp_path / "prom.yaml").write_text(
        "sources:\n"
        f"  prom: {{type: prometheus, url: '{url}'{extra}}}\n"
        "  replay:\n"
        "    type: file\n"
        "    path: replay.csv\n"
        "    metric: latency_seconds\n"
        "    label_columns: [host]\n"
        "state: {dir: state}\n"
        "rule_files: [prom-rules.yaml]\n"
        "alerting_file: alerting.yaml\n"
    )
    return tmp_path / "prom.yaml"


def backtest(config: Path, start: float | None = T0, end: float | None = END):
    loaded = load_config(config)
    return run_backtest(loaded, build_router(loaded.alerting), start=start, end=end)


def comparable(result) -> list[tuple]:
    """The alert records in time order (sources and rules are read in turn, not merged)."""
    return sorted(
        (r.time, r.rule, r.series, r.status, r.score, r.receivers) for r in result.records
    )


def query_range_requests(url: str) -> dict[str, float]:
    """Prometheus' own count of ``/api/v1/query_range`` requests, by HTTP code."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    pattern = r'prometheus_http_requests_total\{code="(\d+)",handler="/api/v1/query_range"\} (\S+)'
    return {code: float(n) for code, n in re.findall(pattern, text)}


@pytest.fixture
def days_of_history(prometheus_server, tmp_path):
    """A Prometheus holding the CSV replay's three days, and the file-replay config."""
    file_config = write_config(tmp_path)  # writes replay.csv
    prom = prometheus_server(history=csv_history(tmp_path / "replay.csv"))
    return prom, file_config


@pytest.mark.servers
def test_prometheus_history_finds_the_alerts_of_a_file_replay_of_the_same_points(
    days_of_history, tmp_path
):
    prom, file_config = days_of_history
    from_file = backtest(file_config, None, None)
    from_prom = backtest(prom_config(tmp_path, prom.url))

    assert from_prom.sources == ["prom"]
    assert from_prom.points == 2 * 3 * DAY_STEPS == from_file.points
    assert from_prom.series == 2
    assert from_prom.first_ts == T0
    assert from_prom.last_ts == END - 300
    assert from_prom.out_of_range == 0
    assert from_prom.per_day_rule() == EXPECTED
    # same points => same alerts, at the same times, for the same series and receivers
    assert comparable(from_prom) == comparable(from_file)
    summary, expected = from_prom.summary(), from_file.summary()
    for key in ("alerts", "resolved", "delivered", "alerts_per_day_per_receiver"):
        assert summary[key] == expected[key], key
    assert query_range_requests(prom.url) == {"200": 2}  # one range query per rule
    assert not (tmp_path / "state").exists()


@pytest.mark.servers
def test_cli_backtests_prometheus_history_and_writes_the_report(days_of_history, tmp_path):
    prom, _ = days_of_history
    config = prom_config(tmp_path, prom.url)
    out_dir = tmp_path / "report"
    # --from/--to in the middle of the grid: only evaluation times inside them count
    start, end = to_rfc3339(T0 + 86_400 - 1), str(END - 86_400)
    out = aiops(
        "backtest", "--config", str(config), "--from", start, "--to", end, "--out", str(out_dir)
    )
    assert out.returncode == 0, out.stderr
    rules, receivers, _ = parse_tables(out.stdout)
    assert per_rule({d: rules[d] for d in rules if d != "total"}) == {
        "2024-01-02": {RULE_A: 0, RULE_B: 1}
    }
    assert receivers["2024-01-02"] == {"ops": 0, "team-b": 1, "total": 1}
    assert summary_line(out.stdout).startswith(f"replayed {2 * DAY_STEPS} points of 2 series: ")
    with (out_dir / "alerts.csv").open() as f:
        firing = [r for r in csv.DictReader(f) if r["status"] == "firing"]
    assert [(r["time"], r["rule"], r["series"]) for r in firing] == [
        ("2024-01-02T06:00:00Z", RULE_B, 'latency_seconds{host="h1"}')
    ]
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["sources"] == ["prom"]
    assert summary["first_point"] == "2024-01-02T00:00:00Z"
    assert summary["last_point"] == "2024-01-02T23:55:00Z"
    assert (out_dir / "alerts_per_day.png").read_bytes().startswith(b"\x89PNG")
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "state").exists()


@pytest.mark.servers
def test_files_and_prometheus_in_one_backtest(days_of_history, tmp_path):
    prom, file_config = days_of_history
    # HostA reads the file replay, HostB asks Prometheus for the same data.
    mixed = RULES.replace(
        """        source: replay
        selector: 'latency_seconds{host="h1"}'""",
        """        source: prom
        query: 'latency_seconds{host="h1"}'""",
    ).replace("  - name: bt\n", "  - name: bt\n    interval: 5m\n")
    result = backtest(prom_config(tmp_path, prom.url, rules=mixed))
    assert result.sources == ["prom", "replay"]
    assert result.per_day_rule() == EXPECTED
    assert comparable(result) == comparable(backtest(file_config, None, None))
    assert result.rejects == {"bad_timestamp": 1, "bad_value": 1}  # the file's bad rows


@pytest.mark.servers
def test_a_bad_query_names_its_rule_and_prometheus_error(days_of_history, tmp_path):
    prom, _ = days_of_history
    rules = PROM_RULES.replace("""query: 'latency_seconds{host="h1"}'""", "query: 'sum(rate(x'")
    config = prom_config(tmp_path, prom.url, rules=rules)
    out = aiops("backtest", "--config", str(config), "--from", str(T0), "--to", str(END))
    assert out.returncode == 1
    assert out.stderr.startswith(f'aiops backtest: source "prom": rule {RULE_B} ')
    assert "query 'sum(rate(x')" in out.stderr
    assert "HTTP 400 bad_data" in out.stderr
    assert "unclosed left parenthesis" in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout == ""
    assert not (tmp_path / "state").exists()


@pytest.mark.servers
def test_long_ranges_are_chunked_below_prometheus_limit(prometheus_server, tmp_path):
    # 4 h at a 1 s step: 14,400 evaluation times, which Prometheus refuses in one query
    # ("exceeded maximum resolution of 11,000 points per timeseries").
    n, step = 4 * 3600, 1.0
    rng = np.random.default_rng(3)
    times = T0 + np.arange(n) * step
    values = 10 + rng.normal(0, 1, n)
    values[7200:7205] += 30  # an incident at 02:00:00
    prom = prometheus_server(
        history=[
            HistorySeries(
                "queue_depth",
                {"host": "a"},
                list(zip(times.tolist(), values.tolist(), strict=True)),
            )
        ]
    )
    rules = (
        "groups:\n  - name: q\n    interval: 1m\n    rules:\n"
        "      - {alert: Depth, source: prom, query: queue_depth, threshold: 0.99999,"
        " detector: {type: robust_ewma}}\n"
    )
    default = backtest(prom_config(tmp_path, prom.url, rules=rules, extra=", step: 1s"), T0, T0 + n)
    assert default.points == n
    assert query_range_requests(prom.url) == {"200": 2}  # 10,000 + 4,400 times
    assert [(r.day, r.rule, to_rfc3339(r.time)) for r in default.firing] == [
        ("2024-01-01", "q/Depth", "2024-01-01T02:00:00Z")
    ]

    small = prom_config(
        tmp_path, prom.url, rules=rules, extra=", step: 1s, max_points_per_query: 999"
    )
    chunked = backtest(small, T0, T0 + n)
    assert query_range_requests(prom.url) == {"200": 2 + 15}
    assert comparable(chunked) == comparable(default)
    assert chunked.points == n

    # Every evaluation time once, in order, whatever the chunk boundaries; progress
    # is the share of the range covered.
    src = PrometheusSource(
        "prom",
        PrometheusSource.Config(url=prom.url, step="1s", max_points_per_query=5000),
        queries=[QuerySpec("q/Depth", "queue_depth", 60.0)],
    )
    history = src.history(T0 + 0.5, T0 + n)
    try:
        stamps, progress = [], [history.progress]
        while not history.exhausted:
            batch = history.next_batch()
            assert batch.rule == "q/Depth"
            stamps.append(batch.timestamps)
            progress.append(history.progress)
        assert history.next_batch().n_points == 0
    finally:
        history.close()
    assert [len(s) for s in stamps] == [5000, 5000, n - 1 - 10_000]
    np.testing.assert_array_equal(np.concatenate(stamps), times[1:])
    assert progress == pytest.approx([0.0, 5000 / (n - 1), 10_000 / (n - 1), 1.0])
    assert history.snapshot()["rules"] == {"q/Depth": T0 + n - 1}


def test_pull_sources_need_from_and_to(tmp_path):
    write_csv(tmp_path / "replay.csv")
    config = prom_config(tmp_path, "http://127.0.0.1:1")
    for args in ([], ["--from", str(T0)], ["--to", str(END)]):
        out = aiops("backtest", "--config", str(config), "--no-progress", *args)
        assert out.returncode == 2, out.stderr
        assert "--from and --to are required" in out.stderr
        assert 'pull source(s) "prom" (type prometheus)' in out.stderr
        assert "Traceback" not in out.stderr
    with pytest.raises(BacktestUsageError, match="--from and --to are required"):
        backtest(config, T0, None)
    assert not (tmp_path / "state").exists()


def test_an_unreachable_prometheus_is_a_clear_error(tmp_path):
    write_csv(tmp_path / "replay.csv")
    config = prom_config(tmp_path, "http://127.0.0.1:1", extra=", timeout: 2s")
    out = aiops("backtest", "--config", str(config), "--from", str(T0), "--to", str(END))
    assert out.returncode == 1
    assert out.stderr.startswith(f'aiops backtest: source "prom": rule {RULE_A} ')
    assert "cannot reach http://127.0.0.1:1" in out.stderr
    assert "Traceback" not in out.stderr
    with pytest.raises(BacktestError, match="cannot reach"):
        backtest(config)
    assert not (tmp_path / "state").exists()
