"""The `aiops` command line, run as users run it: in a subprocess."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
AIOPS = [sys.executable, "-m", "aiops.cli"]


def aiops(*args, cwd=None, timeout=120):
    return subprocess.run(
        [*AIOPS, *args], cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout
    )


def test_check_shipped_rules_is_clean():
    out = aiops("check", "rules/")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith("OK")


def test_check_bad_fixtures_lists_every_error_with_position():
    # Exact messages are pinned in test_config.py (with the fixtures' test plugin types
    # registered); here, as a user would run it: exit 1, every bad file reported, and
    # every error line located.
    out = aiops("check", "tests/testdata/")
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    errors = lines[:-1]
    located = re.compile(r"^tests/testdata/[\w./-]+\.yaml:\d+:\d+: \S")
    assert all(located.match(line) for line in errors), [x for x in errors if not located.match(x)]
    # Every file the pinned messages name is reported (a daemon config's errors may sit
    # in the rule file it loads), and nothing else.
    pinned = {
        line.split(":")[0]
        for f in (REPO / "tests/testdata").glob("*.bad.errors")
        for line in f.read_text().splitlines()
    }
    assert {line.split(":")[0] for line in errors} == pinned
    assert len(errors) >= 15
    assert not any(".good." in line for line in errors)
    assert re.fullmatch(r"checked \d+ files: \d+ errors(, \d+ warnings?)?", lines[-1])


def test_score_writes_one_row_per_input_row_in_order(tmp_path):
    rows = [["timestamp", "value"]]
    t0 = 1_700_000_000
    rng = np.random.default_rng(1)
    for i in range(400):
        rows.append([str(t0 + 300 * i), f"{10 + rng.normal():.3f}"])
    rows[300][1] = "95"  # a spike
    rows[120][1] = ""  # an empty value
    rows[121][0] = rows[120][0]  # a duplicate timestamp
    rows[200][0] = str(t0)  # a backward jump
    rows[250][0] = "2023-11-14T22:13:20Z"  # ISO mixed with unix seconds
    rows.insert(260, ["not a time", "1"])  # an unparseable timestamp
    src = tmp_path / "in.csv"
    with src.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    dst = tmp_path / "out.csv"
    out = aiops("score", str(src), "--out", str(dst))
    assert out.returncode == 0, out.stderr
    with dst.open() as f:
        got = list(csv.reader(f))
    assert got[0] == ["timestamp", "value", "anomaly_score", "alert"]
    assert len(got) == len(rows)
    assert [r[:2] for r in got[1:]] == [r[:2] for r in rows[1:]]
    scores = [float(r[2]) for r in got[1:]]
    assert all(0.0 <= s <= 1.0 for s in scores)
    alerts = [i for i, r in enumerate(got[1:], start=1) if r[3] == "1"]
    assert 301 in alerts  # the spike (row 301 after the inserted row)
    assert got[120][2] == "0.000000"


def test_score_rejects_unknown_detector_and_bad_params(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("timestamp,value\n0,1\n")
    out = aiops("score", str(src), "--out", str(tmp_path / "o.csv"), "--detector", "nope")
    assert out.returncode == 2
    assert 'unknown detector type "nope"' in out.stderr
    out = aiops(
        "score",
        str(src),
        "--out",
        str(tmp_path / "o.csv"),
        "--detector",
        "robust_ewma",
        "--params",
        '{"alpha": 7}',
    )
    assert out.returncode == 2
    assert "alpha must be in (0, 1]" in out.stderr
    out = aiops(
        "score",
        str(src),
        "--out",
        str(tmp_path / "o.csv"),
        "--detector",
        "robust_ewma",
        "--params",
        '{"alpah": 0.1}',
    )
    assert out.returncode == 2
    assert "unknown for detector robust_ewma: alpah (valid: alpha," in out.stderr


def write_replay(tmp_path: Path, n_steps=30_000, hosts=6):
    """A long-format CSV: latency per host, one incident per host at a known step."""
    rng = np.random.default_rng(5)
    path = tmp_path / "replay.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "host", "value"])
        for step in range(n_steps):
            for h in range(hosts):
                v = 0.2 + 0.01 * rng.normal()
                if (step - 3000 * (h + 1)) % 9000 in range(0, 6):
                    v += 0.3
                w.writerow([1_700_000_000 + 15 * step, f"h{h}", f"{v:.5f}"])
    return path


def write_config(tmp_path: Path, replay: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "rules.yaml").write_text(
        "groups:\n"
        "  - name: replay\n"
        "    rules:\n"
        "      - alert: LatencyAnomaly\n"
        "        source: replay\n"
        "        selector: latency_seconds\n"
        "        threshold: 0.9999\n"
        "        labels: {severity: page}\n"
        "        annotations: {summary: 'latency on {{ $labels.host }}'}\n"
    )
    (d / "alerting.yaml").write_text(
        "route: {receiver: file}\n"
        "receivers:\n"
        "  - name: file\n"
        "    jsonl_configs: [{path: alerts.jsonl}]\n"
    )
    (d / "aiops.yaml").write_text(
        "sources:\n"
        "  replay:\n"
        "    type: file\n"
        f"    path: {replay}\n"
        "    metric: latency_seconds\n"
        "    label_columns: [host]\n"
        "    value_column: value\n"
        "    batch_size: 500\n"
        "state: {dir: state, checkpoint_interval: 1h}\n"
        "rule_files: [rules.yaml]\n"
        "alerting_file: alerting.yaml\n"
    )
    return d / "aiops.yaml"


def alerts_of(config: Path):
    path = config.parent / "state" / "alerts.jsonl"
    return [
        (a["status"], a["labels"]["host"], a["startsAt"], a["endsAt"])
        for line in path.read_text().splitlines()
        for a in json.loads(line)["alerts"]
    ]


@pytest.mark.slow
def test_sigterm_halfway_then_restart_gives_the_alerts_of_an_uninterrupted_run(tmp_path):
    replay = write_replay(tmp_path)
    whole = write_config(tmp_path, replay, "whole")
    out = aiops("run", "--config", str(whole), "--once", timeout=600)
    assert out.returncode == 0, out.stderr
    expected = alerts_of(whole)
    assert len(expected) >= 20

    halves = write_config(tmp_path, replay, "halves")
    jsonl = halves.parent / "state" / "alerts.jsonl"
    proc = subprocess.Popen(
        [*AIOPS, "run", "--config", str(halves), "--once"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
        jsonl.exists() and jsonl.read_text().count("\n") >= 4
    ):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "received SIGTERM: final checkpoint, then exit" in err
    first = alerts_of(halves)
    assert 0 < len(first) < len(expected), "the first run was not stopped halfway"

    out = aiops("run", "--config", str(halves), "--once", timeout=600)
    assert out.returncode == 0, out.stderr
    assert "resumed from checkpoint" in out.stderr
    assert alerts_of(halves) == expected


def test_eval_nab_checks_the_detector_before_reading_the_corpus(tmp_path):
    # An empty folder: the detector error must come first, as one usage line, no traceback.
    out = aiops("eval", "nab", "--data", str(tmp_path), "--detector", "nope")
    assert out.returncode == 2
    assert 'unknown detector type "nope"' in out.stderr
    assert "Traceback" not in out.stderr
    out = aiops(
        "eval", "nab", "--data", str(tmp_path), "--detector", "ewma_z", "--params", '{"alpha": 5}'
    )
    assert out.returncode == 2
    assert "detector ewma_z: alpha must be in (0, 1], got 5" in out.stderr
