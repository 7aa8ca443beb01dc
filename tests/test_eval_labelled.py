"""``aiops eval labelled``: the KPI protocol rule by rule, on hand-computed cases."""

from __future__ import annotations

import csv
import gzip
import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from aiops.cli import cli
from aiops.evaluation.labelled import (
    DELAY,
    Counts,
    Grid,
    ScoredFile,
    ScoredFolder,
    count_alarms,
    evaluate,
    read_labelled_csv,
    regrid,
    sweep_f1,
)

REPO = Path(__file__).resolve().parents[1]


def flags(n: int, *ones: int | range) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    for k in ones:
        out[k if isinstance(k, int) else list(k)] = True
    return out


def grid(labels: np.ndarray, scores: np.ndarray | None = None, alerts=None) -> Grid:
    n = len(labels)
    scores = np.zeros(n) if scores is None else np.asarray(scores, dtype=float)
    alerts = np.zeros(n, dtype=bool) if alerts is None else np.asarray(alerts, dtype=bool)
    return Grid(0.0, 60.0, labels, np.ones(n, bool), np.zeros(n), scores, alerts)


def folder(*grids: Grid) -> ScoredFolder:
    files = tuple(ScoredFile(f"s{i}.csv", len(g), 0, 0, 0.0, g) for i, g in enumerate(grids))
    return ScoredFolder(Path("."), "test", {}, 0.5, files, 0.0)


# --- rule 1: re-grid ---------------------------------------------------------------------


def test_regrid_gap_is_a_normal_slot_and_the_first_of_a_duplicate_counts():
    # 60 s is the most common step (3 of 5); the point at 300 leaves slot 4 (240) empty,
    # and the second point at 120 (label 0, alert) is ignored for the first (label 1).
    t = np.array([0.0, 60, 120, 120, 180, 300])
    labels = np.array([0, 0, 1, 0, 1, 1], dtype=bool)
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.4, 0.5])
    alerts = np.array([0, 0, 0, 1, 0, 0], dtype=bool)
    g = regrid(t, labels, np.arange(6.0), scores, alerts)
    assert g.interval == 60.0
    assert g.labels.tolist() == [False, False, True, True, False, True]
    assert g.present.tolist() == [True, True, True, True, False, True]
    assert g.scores[[0, 1, 2, 3, 5]].tolist() == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert math.isnan(g.scores[4])
    assert not g.alerts.any()
    assert g.values[2] == 2.0


def test_regrid_rounds_jitter_to_the_nearest_slot_and_keeps_file_order():
    # Unsorted input: the earliest time anchors the grid; 125 rounds to slot 2 where the
    # point at 118 (earlier in the file) already is, so 125 is ignored.
    t = np.array([60.0, 0, 118, 125, 180, 240, 300])
    labels = np.array([0, 0, 1, 0, 0, 0, 1], dtype=bool)
    scores = np.array([0.2, 0.1, 0.3, 0.99, 0.4, 0.5, 0.6])
    g = regrid(t, labels, np.zeros(7), scores, np.zeros(7, bool))
    assert (g.start, g.interval) == (0.0, 60.0)
    assert g.scores.tolist() == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert g.labels.tolist() == [False, False, True, False, False, True]


def test_regrid_refuses_a_stray_timestamp_that_would_make_millions_of_slots():
    t = np.array([0.0, 60, 120, 1e9])
    with pytest.raises(ValueError, match="slots"):
        regrid(t, np.zeros(4, bool), np.zeros(4), np.zeros(4), np.zeros(4, bool))


# --- rule 2: segments, delay, false positives --------------------------------------------


@pytest.mark.parametrize(("offset", "found"), [(0, True), (DELAY, True), (DELAY + 1, False)])
def test_a_segment_is_found_by_an_alarm_in_its_first_eight_slots(offset, found):
    labels = flags(30, range(5, 17))  # 12 slots
    c = count_alarms(labels, flags(30, 5 + offset))
    assert (c.tp, c.fn, c.fp, c.detected, c.segments) == (
        (12, 0, 0, 1, 1) if found else (0, 12, 0, 0, 1)
    )


def test_a_segment_shorter_than_eight_slots_is_found_only_inside_it():
    labels = flags(20, range(5, 8))  # 3 slots: its window stops at its end
    inside = count_alarms(labels, flags(20, 7))
    after = count_alarms(labels, flags(20, 8))  # within 7 of the start, but normal
    assert (inside.tp, inside.fn, inside.fp) == (3, 0, 0)
    assert (after.tp, after.fn, after.fp) == (0, 3, 1)


def test_alarms_outside_segments_are_false_positives_one_per_slot():
    labels = flags(20, range(10, 12))
    c = count_alarms(labels, flags(20, 0, 1, 2, 10, 15))
    assert (c.tp, c.fp, c.fn) == (2, 4, 0)
    assert c.precision == pytest.approx(2 / 6)
    assert c.f1 == pytest.approx(4 / 8)


def test_nothing_to_find_and_no_alarm_has_no_f1():
    c = count_alarms(np.zeros(5, bool), np.zeros(5, bool))
    assert math.isnan(c.f1)
    assert math.isnan(c.precision)


# --- rule 3: pooling ---------------------------------------------------------------------


def test_pooled_f1_differs_from_the_mean_of_per_series_f1():
    a = grid(flags(20, range(0, 10)), alerts=flags(20, 0))  # TP 10: F1 1
    b = grid(flags(20, range(0, 2)), alerts=flags(20, 0, *range(10, 18)))  # TP 2, FP 8
    report = evaluate(folder(a, b))
    per_series = sorted(r.own.f1 for r in report.series)
    assert per_series == pytest.approx([4 / 12, 1.0])
    assert report.own == Counts(tp=12, fp=8, fn=0, segments=2, detected=2)
    assert report.own.f1 == pytest.approx(24 / 32)  # 0.75, not the mean 0.667
    assert report.series[0].name == "s1.csv"  # worst first


# --- rule 4: the best-F1 sweep -----------------------------------------------------------


def brute_force(series, delay=DELAY):
    values = {math.inf}
    for _, s in series:
        values |= {float(x) for x in s[~np.isnan(s)]}
    best = None
    for thr in sorted(values, reverse=True):  # highest first: keeps it among ties
        c = sum((count_alarms(lab, s >= thr, delay=delay) for lab, s in series), Counts())
        f1 = 0.0 if math.isnan(c.f1) else c.f1
        if best is None or f1 > best[0]:
            best = (f1, thr, c)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_sweep_equals_a_brute_force_loop_over_every_threshold(seed):
    rng = np.random.default_rng(seed)
    series = []
    for _ in range(rng.integers(1, 4)):
        n = int(rng.integers(5, 120))
        labels = np.repeat(rng.random(n // 3 + 1) < 0.3, 3)[:n]  # runs, some adjacent
        scores = np.round(rng.random(n) ** 0.5, 1)  # ties on purpose
        scores[labels] = np.minimum(1.0, scores[labels] + rng.random(labels.sum()) * 0.3)
        scores[rng.random(n) < 0.05] = np.nan
        series.append((labels, scores))
    thr, counts = sweep_f1(series)
    f1, want_thr, want = brute_force(series)
    assert thr == want_thr
    assert counts == want
    assert (0.0 if math.isnan(counts.f1) else counts.f1) == pytest.approx(f1)


def test_sweep_reports_the_threshold_and_per_series_counts_add_up():
    a = grid(flags(12, range(2, 6)), scores=[0, 0, 0.3, 0.9, 0, 0, 0.95, 0, 0, 0, 0, 0])
    b = grid(flags(12, range(8, 12)), scores=[0.2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.8, 0])
    report = evaluate(folder(a, b))
    # 0.8 finds both segments (8 TP) with one false alarm (0.95); 0.9 finds one (FP 1).
    assert report.best_threshold == 0.8
    assert report.best == Counts(tp=8, fp=1, fn=0, segments=2, detected=2)
    assert sum((r.best for r in report.series), Counts()) == report.best


def test_sweep_with_nothing_worth_alarming_returns_infinity():
    thr, c = sweep_f1([(np.zeros(4, bool), np.array([0.1, 0.2, 0.3, 0.4]))])
    assert thr == math.inf
    assert (c.tp, c.fp) == (0, 0)


# --- rule 5: warm-up ---------------------------------------------------------------------


@pytest.mark.parametrize(("alarm", "found"), [(5 + DELAY, True), (5 + DELAY + 1, False)])
def test_warmup_cuts_a_segment_which_counts_from_the_boundary(alarm, found):
    # 20 slots, warm-up 0.25: slots 0-4 are streamed, not evaluated. The segment 3..14
    # counts as 5..14 (10 slots), its first 8 slots from 5. The alarm and labels in the
    # warm-up (slot 1, slot 3) do not count.
    labels = flags(20, range(3, 15))
    g = grid(labels, alerts=flags(20, 1, 3, alarm))
    report = evaluate(folder(g), warmup=0.25)
    row = report.series[0]
    assert row.evaluated_slots == 15
    assert (row.own.tp, row.own.fn, row.own.fp) == ((10, 0, 0) if found else (0, 10, 0))


# --- reading -----------------------------------------------------------------------------


def test_bad_rows_are_counted_not_fatal(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text(
        "timestamp,value,label\n"
        "1700000000,1.0,0\n"
        "not-a-time,2.0,0\n"  # bad timestamp
        "1700000120,3.0,2\n"  # bad label
        "1700000180,4.0\n"  # missing column
        "1700000240,,1\n"  # empty value: kept, missing
        "2023-11-14T22:18:20Z,5.0,1.0\n"  # ISO time, label 1.0
        "\n"
    )
    s = read_labelled_csv(path)
    assert s.bad_rows == 3
    assert s.missing_values == 1
    assert s.timestamps.tolist() == [1700000000.0, 1700000240.0, 1700000300.0]
    assert s.labels.tolist() == [False, True, True]
    assert np.isnan(s.values[1])


def test_an_unreadable_file_is_reported_not_raised(tmp_path):
    path = tmp_path / "broken.csv.gz"
    path.write_bytes(b"not gzip at all")
    s = read_labelled_csv(path)
    assert len(s) == 0
    assert s.error


# --- the command -------------------------------------------------------------------------


def write_series(path: Path, t, v, labels, *, iso=False, header=True, extra=()):
    rows = [["timestamp", "value", "label"]] if header else []
    for ti, vi, li in zip(t, v, labels, strict=True):
        when = datetime.fromtimestamp(ti, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if iso else ti
        rows.append([str(when), f"{vi:.4f}", str(int(li))])
    rows[len(rows) // 2 : len(rows) // 2] = [list(r) for r in extra]
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", newline="") as f:
        csv.writer(f).writerows(rows)


@pytest.fixture
def kpi_folder(tmp_path):
    rng = np.random.default_rng(3)
    t0 = 1_700_000_000
    # a.csv.gz: a 40-sigma spike at 150 (normal: a false alert) and a labelled burst at
    # 300..304 that the detector alerts on at its first slot.
    v = 10 + rng.normal(0, 1, 400)
    v[150] += 40
    v[300:305] += 40
    write_series(
        tmp_path / "a.csv.gz",
        t0 + 60 * np.arange(400),
        v,
        flags(400, range(300, 305)),
        header=False,
    )
    # b.csv: ISO times, a labelled stretch (100..102) that looks normal: 3 FN; a bad row.
    v = 10 + rng.normal(0, 1, 300)
    write_series(
        tmp_path / "b.csv",
        t0 + 60 * np.arange(300),
        v,
        flags(300, range(100, 103)),
        iso=True,
        extra=[["garbage", "1", "0"]],
    )
    (tmp_path / "notes.txt").write_text("not a series")
    return tmp_path


def test_eval_labelled_prints_both_views_writes_the_table_and_the_plot(kpi_folder, tmp_path):
    png, table = tmp_path / "worst.png", tmp_path / "series.csv"
    # 0.9999: about one normal point in 10,000 alerts, so the hand count below holds (at
    # the default 0.998, one in 500, the 700 normal points may raise an alert or two).
    args = ["--data", str(kpi_folder), "--detector", "robust_ewma", "--jobs", "2"]
    args += ["--threshold", "0.9999"]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "aiops.cli",
            "eval",
            "labelled",
            *args,
            "--plot",
            str(png),
            "--out",
            str(table),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "2 series, 700 points" in text
    assert "Input: 1 bad rows skipped (b.csv: 1)" in text
    # own alerts: 5 TP (a's burst), 1 FP (a's spike), 3 FN (b's stretch).
    own = next(line for line in text.splitlines() if line.startswith("| own alerts"))
    assert own.split(" | ")[2:] == ["0.833", "0.625", "0.714", "5", "1", "3", "1/2 |"]
    best = next(line for line in text.splitlines() if line.startswith("| best F1"))
    assert best.split(" | ")[4] == "0.714"
    # Per series, worst first: b (F1 0) then a (F1 10/11).
    rows = list(csv.DictReader(table.open()))
    assert [r["series"] for r in rows] == ["b.csv", "a.csv.gz"]
    assert rows[0] == {
        "series": "b.csv",
        "points": "300",
        "bad_rows": "1",
        "segments": "1",
        "detected": "0",
        "fp": "0",
        "own_f1": "0.000000",
        "best_f1": "0.000000",
    }
    assert rows[1]["own_f1"] == f"{10 / 11:.6f}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png} (b.csv)" in out.stderr


def test_eval_labelled_warmup_scores_the_later_part_only(kpi_folder):
    args = ["--data", str(kpi_folder), "--detector", "robust_ewma", "--no-progress"]
    args += ["--threshold", "0.9999"]  # one normal point in 10,000, as above
    out = CliRunner().invoke(cli, ["eval", "labelled", *args, "--warmup", "0.5"])
    assert out.exit_code == 0, out.output
    own = next(line for line in out.output.splitlines() if line.startswith("| own alerts"))
    # a's spike (slot 150) falls in its warm-up; b's stretch (100..102) too: only a's burst.
    assert own.split(" | ")[5:9] == ["5", "0", "0", "1/1 |"]


def test_eval_labelled_usage_errors_exit_2(tmp_path, kpi_folder):
    def run(*args):
        return CliRunner().invoke(cli, ["eval", "labelled", *args])

    empty = run("--data", str(tmp_path / "nothing-here"))
    assert empty.exit_code == 2
    (tmp_path / "empty").mkdir()
    out = run("--data", str(tmp_path / "empty"))
    assert out.exit_code == 2
    assert "no *.csv or *.csv.gz files in" in out.output
    data = ["--data", str(kpi_folder)]
    assert run(*data, "--params", "[1]").exit_code == 2
    unknown = run(*data, "--detector", "robust_ewma", "--params", '{"nope": 1}')
    assert unknown.exit_code == 2
    assert "unknown for detector robust_ewma: nope" in unknown.output
    assert run(*data, "--detector", "no-such").exit_code == 2
    assert run(*data, "--warmup", "1").exit_code == 2
