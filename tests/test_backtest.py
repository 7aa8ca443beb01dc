"""`aiops backtest`: recorded data through the real engine and router, read-only."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
AIOPS = [sys.executable, "-m", "aiops.cli"]

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
STEP = 300
DAY_STEPS = 86_400 // STEP
DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]
# (host, step of the first anomalous point): one incident per host per listed day.
INCIDENTS = [
    ("h0", 144),  # 2024-01-01 12:00
    ("h1", DAY_STEPS + 72),  # 2024-01-02 06:00
    ("h1", 2 * DAY_STEPS + 36),  # 2024-01-03 03:00
    ("h0", 2 * DAY_STEPS + 216),  # 2024-01-03 18:00
]
RULE_A, RULE_B = "bt/HostA", "bt/HostB"
EXPECTED = {
    "2024-01-01": {RULE_A: 1, RULE_B: 0},
    "2024-01-02": {RULE_A: 0, RULE_B: 1},
    "2024-01-03": {RULE_A: 1, RULE_B: 1},
}

RULES = """\
groups:
  - name: bt
    rules:
      - alert: HostA
        source: replay
        selector: 'latency_seconds{host="h0"}'
        detector: {type: robust_ewma}
        threshold: 0.99999
        labels: {severity: page}
      - alert: HostB
        source: replay
        selector: 'latency_seconds{host="h1"}'
        detector: {type: robust_ewma}
        threshold: 0.99999
        labels: {severity: page}
"""

ALERTING = """\
route:
  receiver: ops
  routes:
    - matchers: ['alertname="HostB"']
      receiver: team-b
receivers:
  - name: ops
  - name: team-b
"""

# Covers the h1 incident of 2024-01-03 03:00 only.
SILENCE = """\
silences:
  - matchers: ['host="h1"']
    starts_at: 2024-01-03T02:00:00Z
    ends_at: 2024-01-03T04:00:00Z
    created_by: test
    comment: maintenance
"""


def aiops(*args, timeout=60):
    return subprocess.run(
        [*AIOPS, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def write_csv(path: Path) -> Path:
    rng = np.random.default_rng(11)
    anomalous = {(h, s + k) for h, s in INCIDENTS for k in range(3)}
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "host", "value"])
        for step in range(3 * DAY_STEPS):
            for h in ("h0", "h1"):
                v = 1.0 + 0.01 * rng.normal()
                if (h, step) in anomalous:
                    v += 1.0
                w.writerow([T0 + STEP * step, h, f"{v:.5f}"])
            if step == 500:
                w.writerow(["not a time", "h0", "1"])  # bad input: counted, not fatal
                w.writerow([T0 + STEP * step, "h1", "abc"])
    return path


def write_config(tmp_path: Path, *, silence=False, sources=None) -> Path:
    data = write_csv(tmp_path / "replay.csv")
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "alerting.yaml").write_text(ALERTING + (SILENCE if silence else ""))
    sources = sources or (
        "  replay:\n"
        "    type: file\n"
        f"    path: {data.name}\n"
        "    metric: latency_seconds\n"
        "    label_columns: [host]\n"
        "    batch_size: 200\n"
    )
    (tmp_path / "aiops.yaml").write_text(
        "sources:\n" + sources + "state: {dir: state}\n"
        "rule_files: [rules.yaml]\n"
        "alerting_file: alerting.yaml\n"
    )
    return tmp_path / "aiops.yaml"


def parse_tables(stdout: str) -> list[dict[str, dict[str, int]]]:
    """The report's tables as {day: {column: count}} (the totals row under "total")."""
    tables, current, header = [], None, None
    for line in stdout.splitlines():
        cells = line.split()
        if cells[:1] == ["day"]:
            header, current = cells[1:], {}
            tables.append(current)
        elif current is not None and cells and not set(line.strip()) <= {"-", " "}:
            if not cells[0][:1].isdigit() and cells[0] != "total":
                current, header = None, None
                continue
            current[cells[0]] = dict(zip(header, map(int, cells[1:]), strict=True))
        elif not cells:
            current = None
    return tables


def summary_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("replayed "))


def per_rule(table):
    return {d: {k: v for k, v in row.items() if k != "total"} for d, row in table.items()}


def test_alerts_per_day_per_rule_and_receiver(tmp_path):
    config = write_config(tmp_path)
    out = aiops("backtest", "--config", str(config), "--no-progress")
    assert out.returncode == 0, out.stderr
    rules, receivers, _ = parse_tables(out.stdout)
    assert per_rule({d: rules[d] for d in DAYS}) == EXPECTED
    assert rules["total"] == {RULE_A: 2, RULE_B: 2, "total": 4}
    assert {d: receivers[d] for d in DAYS} == {
        "2024-01-01": {"ops": 1, "team-b": 0, "total": 1},
        "2024-01-02": {"ops": 0, "team-b": 1, "total": 1},
        "2024-01-03": {"ops": 1, "team-b": 1, "total": 2},
    }
    line = summary_line(out.stdout)
    assert line.startswith(f"replayed {2 * 3 * DAY_STEPS} points of 2 series: 4 alerts ")
    assert "0 silenced" in line
    assert "2 rejects" in line
    assert line.endswith("3 days")
    assert "bad_timestamp=1" in out.stdout
    assert "bad_value=1" in out.stdout
    assert not (tmp_path / "state").exists()


def test_a_silence_mutes_one_incident(tmp_path):
    config = write_config(tmp_path, silence=True)
    out = aiops("backtest", "--config", str(config), "--no-progress")
    assert out.returncode == 0, out.stderr
    rules, receivers, _ = parse_tables(out.stdout)
    assert per_rule({d: rules[d] for d in DAYS}) == EXPECTED  # before routing: all alerts
    assert receivers["2024-01-03"] == {"ops": 1, "team-b": 0, "total": 1}
    assert receivers["total"] == {"ops": 2, "team-b": 1, "total": 3}
    line = summary_line(out.stdout)
    assert "4 alerts (3 delivered, 1 silenced, 0 inhibited" in line


def test_from_to_narrow_the_replay(tmp_path):
    config = write_config(tmp_path)
    out = aiops(
        "backtest",
        "--config",
        str(config),
        "--from",
        "2024-01-02T00:00:00Z",
        "--to",
        str(T0 + 2 * 86_400),
        "--no-progress",
    )
    assert out.returncode == 0, out.stderr
    rules, _, _ = parse_tables(out.stdout)
    assert per_rule({d: rules[d] for d in rules if d != "total"}) == {
        "2024-01-02": {RULE_A: 0, RULE_B: 1}
    }
    line = summary_line(out.stdout)
    assert line.startswith(f"replayed {2 * DAY_STEPS} points, ")
    assert ": 1 alerts " in line
    assert line.endswith(" 1 days")

    bad = aiops("backtest", "--config", str(config), "--from", "yesterday")
    assert bad.returncode == 2
    assert "use RFC 3339 or unix seconds" in bad.stderr


def test_rules_option_replaces_the_config_rules(tmp_path):
    config = write_config(tmp_path)
    only_a = tmp_path / "other"
    only_a.mkdir()
    (only_a / "a.yaml").write_text(RULES.split("      - alert: HostB")[0])
    out = aiops("backtest", "--config", str(config), "--rules", str(only_a), "--no-progress")
    assert out.returncode == 0, out.stderr
    rules, _, _ = parse_tables(out.stdout)
    assert rules["total"] == {RULE_A: 2, "total": 2}


def test_out_writes_csv_json_and_png(tmp_path):
    config = write_config(tmp_path, silence=True)
    out_dir = tmp_path / "report"
    out = aiops("backtest", "--config", str(config), "--out", str(out_dir), "--no-progress")
    assert out.returncode == 0, out.stderr
    rules, receivers, notifications = parse_tables(out.stdout)
    with (out_dir / "alerts.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [
        "time",
        "rule",
        "status",
        "series",
        "score",
        "value",
        "receivers",
        "muted",
    ]
    firing = [r for r in rows if r["status"] == "firing"]
    assert len(firing) == rules["total"]["total"] == 4
    assert len(rows) - len(firing) == 4  # every incident resolved
    delivered = sum(len(r["receivers"].split(";")) for r in firing if r["receivers"])
    assert delivered == receivers["total"]["total"] == 3
    assert [r["muted"] for r in firing].count("silenced") == 1
    assert {(r["time"][:10], r["rule"]) for r in firing} == {
        (d, rule) for d, counts in EXPECTED.items() for rule, n in counts.items() if n
    }
    with (out_dir / "notifications.csv").open() as f:
        sent = list(csv.DictReader(f))
    # The three incidents not silenced: each its firing, then its resolution.
    assert [(n["receiver"], n["status"], n["firing"], n["resolved"]) for n in sent] == [
        ("ops", "firing", "1", "0"),
        ("ops", "resolved", "0", "1"),
        ("team-b", "firing", "1", "0"),
        ("team-b", "resolved", "0", "1"),
        ("ops", "firing", "1", "0"),
        ("ops", "resolved", "0", "1"),
    ]
    assert len(sent) == notifications["total"]["total"]
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["notifications_per_receiver"] == {"ops": 4, "team-b": 2}
    assert summary["alerts"] == 4
    assert summary["silenced"] == 1
    assert summary["days"] == 3
    assert summary["alerts_per_day_per_rule"] == EXPECTED
    png = (out_dir / "alerts_per_day.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 5000
    assert not (tmp_path / "state").exists()


def test_alerts_of_one_group_are_one_notification(tmp_path):
    """Both hosts spike at once: two alerts, one page per group_wait, as the daemon sends."""
    config = write_config(tmp_path)
    data = tmp_path / "replay.csv"
    spike = f"{T0 + STEP * 144},h1,"  # h1 joins h0's incident of 2024-01-01 12:00
    rows = [spike + "2.0" if r.startswith(spike) else r for r in data.read_text().splitlines()]
    data.write_text("\n".join(rows) + "\n")
    one_rule = RULES.replace(
        "selector: 'latency_seconds{host=\"h0\"}'", "selector: latency_seconds"
    )
    (tmp_path / "rules.yaml").write_text(one_rule)
    (tmp_path / "alerting.yaml").write_text(
        "route: {receiver: ops, group_by: [alertname], group_wait: 30s}\nreceivers: [{name: ops}]\n"
    )
    report = tmp_path / "report"
    out = aiops("backtest", "--config", str(config), "--out", str(report), "--no-progress")
    assert out.returncode == 0, out.stderr
    with (report / "alerts.csv").open() as f:
        rows = list(csv.DictReader(f))
    fired = [r for r in rows if r["status"] == "firing" and r["rule"] == RULE_A]
    noon = [r["series"] for r in fired if r["time"].startswith("2024-01-01T12:00")]
    assert sorted(noon) == ['latency_seconds{host="h0"}', 'latency_seconds{host="h1"}']
    with (report / "notifications.csv").open() as f:
        sent = [n for n in csv.DictReader(f) if n["group"] == '{alertname="HostA"}']
    first = [n for n in sent if n["time"].startswith("2024-01-01") and n["status"] == "firing"]
    assert [(n["firing"], n["time"]) for n in first] == [("2", "2024-01-01T12:00:30Z")]


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ("  replay:\n    type: simulator\n", 'source "replay" (type simulator)'),
        (
            "  replay:\n    type: file\n    path: replay.csv\n    follow: true\n",
            'source "replay" (type file)',
        ),
    ],
)
def test_unsupported_sources_are_a_clear_error(tmp_path, sources, message):
    config = write_config(tmp_path, sources=sources)
    out = aiops("backtest", "--config", str(config), "--no-progress")
    assert out.returncode == 1
    assert message in out.stderr
    assert "a backtest replays finite sources and the history of pull sources" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "state").exists()


def test_a_finite_simulator_replays(tmp_path):
    sim = (
        "  replay:\n    type: simulator\n    hosts: 1\n    services: [api]\n"
        "    duration: 6h\n    speed: 10\n    incidents: []\n"
    )
    config = write_config(tmp_path, sources=sim)
    (tmp_path / "rules.yaml").write_text(RULES.replace("latency_seconds", "cpu_usage_ratio"))
    out = aiops("backtest", "--config", str(config), "--no-progress")
    assert out.returncode == 0, out.stderr
    assert summary_line(out.stdout).startswith("replayed ")
    assert not (tmp_path / "state").exists()
