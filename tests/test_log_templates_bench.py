"""bench/log_templates.py scores any folder of Loghub-style structured samples."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "log_templates.py"


def write_sample(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["LineId", "Content", "EventId", "EventTemplate"])
        for i, (content, event) in enumerate(rows, 1):
            w.writerow([i, content, event, ""])


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH), *args], capture_output=True, text=True, check=False
    )


def test_samples_at_any_depth_are_found_and_scored(tmp_path: Path) -> None:
    # Loghub's layout for one system, a flat file for another, a system outside the 16.
    write_sample(
        tmp_path / "HDFS" / "HDFS_2k.log_structured.csv",
        [
            ("user 3 logged in from 10.0.0.3", "E1"),
            ("user 41 logged in from 10.0.0.9", "E1"),
            ("disk full on /var/lib", "E2"),
        ],
    )
    # Two events the masks make one template: those two lines are wrong, the third right.
    write_sample(
        tmp_path / "Zookeeper_2k.log_structured.csv",
        [
            ("connect to 10.0.0.1 refused", "E1"),
            ("connect to 10.0.0.2 refused", "E2"),
            ("session expired", "E3"),
        ],
    )
    write_sample(tmp_path / "more" / "MyApp_2k.log_structured.csv", [("boot ok", "E1")])
    out = run("--data", str(tmp_path))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:2] == ["HDFS", "1.000"]
    assert lines[1].split()[:2] == ["Zookeeper", "0.333"]
    assert lines[2].split()[:2] == ["MyApp", "1.000"]
    assert lines[3].split()[:2] == ["average", "0.778"]
    assert "over 3 systems" in lines[3]
    picked = run("--data", str(tmp_path), "--systems", "Zookeeper,Nope")
    assert picked.stdout.splitlines()[0].split()[:2] == ["Zookeeper", "0.333"]
    assert "Nope" in picked.stdout.splitlines()[1]
    assert "missing" in picked.stdout.splitlines()[1]


def test_a_folder_without_samples_says_so(tmp_path: Path) -> None:
    out = run("--data", str(tmp_path))
    assert out.returncode != 0
    assert "no *_2k.log_structured.csv file under" in out.stderr
