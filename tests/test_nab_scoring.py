"""NAB v1.1 scoring: the published scoreboard, and the window arithmetic on toy series.

The corpus is found through ``AIOPS_NAB_DIR`` (default ``../shared/datasets/nab`` next to
the repository). Without it these tests fail: the scorer's correctness rests on them.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from aiops.evaluation import (
    NOTHING_DETECTED,
    NabCorpus,
    NabFile,
    evaluate,
    load_corpus,
    load_detector_results,
    load_published_thresholds,
    probation_length,
    score_at_threshold,
    score_detections,
    score_profiles,
    sweep,
    sweep_curve,
    sweep_profiles,
)

REPO = Path(__file__).resolve().parents[1]
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")

# The published scoreboard (results/final_results.json of NAB v1.1) at the thresholds
# stored in each detector's *_scores.csv, and what an exhaustive sweep finds.
PUBLISHED = {
    "numenta": (70.10, 63.12, 74.32),
    "windowedGaussian": (39.65, 20.87, 47.41),
}
SWEPT = {
    "numenta": (70.10, 63.21, 74.32),
    # The stored thresholds (1.0 for every profile) are already the optimum.
    "windowedGaussian": (39.65, 20.87, 47.41),
}


def nab_dir() -> Path:
    env = os.environ.get("AIOPS_NAB_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "datasets" / "nab"
    if not (path / "labels" / "combined_windows.json").is_file():
        pytest.fail(
            f"NAB corpus not found at {path} (no labels/combined_windows.json): set "
            "AIOPS_NAB_DIR to the NAB v1.1 root holding data/, labels/, config/, results/",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="module")
def root() -> Path:
    return nab_dir()


@pytest.fixture(scope="module")
def corpus(root: Path) -> NabCorpus:
    return load_corpus(root)


@pytest.fixture(scope="module")
def published(root: Path, corpus: NabCorpus) -> dict[str, dict[str, np.ndarray]]:
    return {d: load_detector_results(root / "results", d, corpus) for d in PUBLISHED}


# --- the corpus ---------------------------------------------------------------------------


def test_corpus_shape(corpus: NabCorpus) -> None:
    assert len(corpus) == 58
    assert corpus.n_rows == 365_558
    assert corpus.n_windows == 116
    assert list(corpus.profiles) == list(PROFILES)
    taxi = corpus["realKnownCause/nyc_taxi.csv"]
    assert taxi.timestamps[0] == 1404172800.0  # 2014-07-01 00:00:00, naive = UTC
    assert taxi.values.dtype == np.float64
    assert taxi.values[0] == 10844.0
    assert taxi.probation == 750  # 15 % of 10320 rows, capped at 750
    assert corpus["artificialNoAnomaly/art_daily_small_noise.csv"].probation == 604


def test_windows_are_row_ranges_of_the_label_timestamps(root: Path, corpus: NabCorpus) -> None:
    labels = json.loads((root / "labels" / "combined_windows.json").read_text())
    f = corpus["artificialWithAnomaly/art_daily_jumpsdown.csv"]
    ((a, b),) = f.windows.tolist()
    # data start 2014-04-01 00:00, 5-minute rows; window 2014-04-10 16:15 .. 04-12 01:45
    assert (a, b) == (9 * 288 + 16 * 12 + 3, 11 * 288 + 1 * 12 + 9)
    assert labels[f.name][0][0].startswith("2014-04-10 16:15:00")
    for g in corpus:
        assert len(g.windows) == len(labels[g.name])
        assert (g.windows[:, 0] >= g.probation).all()  # NAB v1.1 has no window in probation


# --- the published scoreboard ---------------------------------------------------------------


@pytest.mark.parametrize("detector", PUBLISHED)
def test_published_scores_at_stored_thresholds(
    root: Path, corpus: NabCorpus, published: dict[str, dict[str, np.ndarray]], detector: str
) -> None:
    thresholds = load_published_thresholds(root / "results", detector)
    final = json.loads((root / "results" / "final_results.json").read_text())[detector]
    for profile, expected in zip(PROFILES, PUBLISHED[detector], strict=True):
        r = score_at_threshold(corpus, published[detector], profile, thresholds[profile])
        assert r.score == pytest.approx(expected, abs=0.01), profile
        assert r.score == pytest.approx(final[profile], abs=1e-6), profile


@pytest.mark.parametrize("detector", PUBLISHED)
def test_per_file_rows_match_published_scores_csv(
    root: Path, corpus: NabCorpus, published: dict[str, dict[str, np.ndarray]], detector: str
) -> None:
    for profile in PROFILES:
        path = root / "results" / detector / f"{detector}_{profile}_scores.csv"
        with path.open(newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r["File"]]
        r = score_at_threshold(corpus, published[detector], profile, float(rows[0]["Threshold"]))
        assert len(rows) == len(corpus)
        for row in rows:
            got = r.file(row["File"])
            want = (int(row["TP"]), int(row["TN"]), int(row["FP"]), int(row["FN"]))
            assert (got.tp, got.tn, got.fp, got.fn) == want, row["File"]
            assert got.raw == pytest.approx(float(row["Score"]), abs=1e-9), row["File"]
            assert got.rows == int(row["Total_Count"])


@pytest.mark.parametrize("detector", SWEPT)
def test_exhaustive_sweep(
    corpus: NabCorpus, published: dict[str, dict[str, np.ndarray]], detector: str
) -> None:
    scores = published[detector]
    results = sweep_profiles(corpus, scores)
    for profile, expected in zip(PROFILES, SWEPT[detector], strict=True):
        r = results[profile]
        assert r.score == pytest.approx(expected, abs=0.01), profile
        # The result is the curve's maximum, and the curve is exhaustive.
        thresholds, curve = sweep_curve(corpus, scores, profile)
        distinct = np.unique(np.concatenate([scores[f.name][f.probation :] for f in corpus]))
        assert len(thresholds) == len(distinct) + 1
        assert r.threshold == thresholds[int(np.argmax(curve))]
        assert r.score == pytest.approx(curve.max(), abs=1e-9)
        assert sweep(corpus, scores, profile)[0] == r.threshold


# --- window arithmetic on a toy series -------------------------------------------------------

N = 100  # probation floor(0.15 * 100) = 15 rows
WINDOW = (40, 49)  # width 10
NAME = "toy/one_window.csv"


def toy(windows: list[tuple[int, int]] | None = None, n: int = N, name: str = NAME) -> NabFile:
    return NabFile.from_arrays(
        name, np.arange(n) * 300.0, np.zeros(n), [WINDOW] if windows is None else windows
    )


def raw_of(rows: list[int], profile: str = "standard", f: NabFile | None = None) -> float:
    f = f or toy()
    det = np.zeros(len(f), dtype=bool)
    det[rows] = True
    return score_detections(NabCorpus((f,)), {f.name: det}, profile).raw


def tp_reward(i: int, a: int = WINDOW[0], b: int = WINDOW[1]) -> float:
    """NAB's TP weight written as tanh: 2 * sigmoid(5 x) - 1 == tanh(5 x / 2)."""
    width = b - a + 1
    return math.tanh(2.5 * (b - i + 1) / width) / math.tanh(2.5)


def fp_penalty(i: int, b: int = WINDOW[1], width: int = 10) -> float:
    x = (i - b) / (width - 1)
    return -1.0 if x > 3 else -math.tanh(2.5 * x)


def test_probation_rounding_follows_nab() -> None:
    assert [probation_length(n) for n in (0, 6, 7, 100, 4032, 5000, 5001, 22695)] == [
        0,
        0,
        1,
        15,
        604,
        750,
        750,
        750,
    ]
    assert toy().probation == 15


def test_tp_at_window_start_earns_full_weight_and_at_end_little() -> None:
    assert raw_of([40]) == pytest.approx(1.0, abs=1e-15)
    assert raw_of([49]) == pytest.approx(tp_reward(49), abs=1e-12)
    assert raw_of([49]) == pytest.approx(0.2482415, abs=1e-7)
    assert raw_of([45]) == pytest.approx(0.8597926, abs=1e-7)
    assert raw_of([40]) > raw_of([45]) > raw_of([49]) > 0


def test_only_the_first_detection_in_a_window_counts() -> None:
    assert raw_of([45, 46, 49]) == raw_of([45])
    assert raw_of([41, 45]) == raw_of([41]) == pytest.approx(tp_reward(41), abs=1e-12)


def test_missed_window_costs_fn_weight() -> None:
    assert raw_of([]) == -1.0
    assert raw_of([], "reward_low_FN_rate") == -2.0


def test_fp_weight_depends_on_distance_after_the_window() -> None:
    right_after = raw_of([40, 50]) - 1.0
    assert right_after == pytest.approx(0.11 * fp_penalty(50), abs=1e-12)
    assert right_after == pytest.approx(-0.0297932, abs=1e-7)
    # Exactly 3 widths after the window is still on the sigmoid; beyond it is -1.
    assert raw_of([40, 76]) - 1.0 == pytest.approx(-0.11 * math.tanh(7.5), abs=1e-12)
    assert raw_of([40, 77]) - 1.0 == pytest.approx(-0.11, abs=1e-15)
    assert raw_of([40, 99]) - 1.0 == pytest.approx(-0.11, abs=1e-15)
    assert raw_of([40, 99], "reward_low_FP_rate") - 1.0 == pytest.approx(-0.22, abs=1e-15)
    # Before any window: full penalty.
    assert raw_of([20]) == pytest.approx(-1.0 - 0.11, abs=1e-15)


def test_probation_rows_are_ignored() -> None:
    assert raw_of([0, 5, 14]) == -1.0
    assert raw_of([15]) == pytest.approx(-1.11, abs=1e-15)
    f = toy([(10, 30)])  # window overlapping probation: scored from row 15 on
    assert raw_of([10, 12], f=f) == -1.0
    assert raw_of([15], f=f) == pytest.approx(tp_reward(15, 10, 30), abs=1e-12)
    g = toy([(2, 8), (40, 49)])  # a window wholly in probation is not scored
    r = score_detections(NabCorpus((g,)), {g.name: np.zeros(N, dtype=bool)}, "standard")
    assert (r.windows, r.raw, r.null, r.perfect) == (1, -1.0, -1.0, 2.0)


def test_null_and_perfect_detectors_score_0_and_100() -> None:
    files = (toy(), toy([(20, 29), (60, 79)], n=120, name="toy/two.csv"), toy([], name="toy/no"))
    corpus = NabCorpus(files)
    null = {f.name: np.zeros(len(f), dtype=bool) for f in files}
    perfect = {f.name: np.isin(np.arange(len(f)), f.windows[:, 0]) for f in files}
    for profile in PROFILES:
        assert score_detections(corpus, null, profile).score == 0.0
        assert score_detections(corpus, perfect, profile).score == pytest.approx(100.0)
    assert score_profiles(corpus, perfect).scores() == pytest.approx(dict.fromkeys(PROFILES, 100))
    r = score_detections(corpus, perfect, "standard")
    assert (r.detected, r.missed, r.fp, r.tp, r.fn) == (3, 0, 0, 3, 10 + 10 + 20 - 3)


# --- the sweep ---------------------------------------------------------------------------


def reference_curve(corpus: NabCorpus, scores: dict[str, np.ndarray], profile: str):
    """NAB's sweep, row by row: walk each file, then lower the threshold one value at a time."""
    p = corpus.profiles[profile]
    rows = []
    for f in corpus:
        prev = None
        for i in range(len(f)):
            inside = [(a, b) for a, b in f.windows.tolist() if a <= i <= b]
            if inside:
                (a, b) = inside[0]
                w, key = p.tp_weight * tp_reward(i, a, b), (f.name, a)
            else:
                far = prev is None
                w = p.fp_weight * (-1.0 if far else fp_penalty(i, prev[1], prev[1] - prev[0] + 1))
                key = None
            if i >= f.probation:
                rows.append((float(scores[f.name][i]), w, key))
            if inside and i == inside[0][1]:
                prev = inside[0]
    rows.sort(key=lambda r: r[0], reverse=True)
    parts: dict[object, float] = {k: -p.fn_weight for _, _, k in rows if k is not None}
    parts["fp"] = 0.0
    out = [(math.inf, sum(parts.values()))]
    for j, (s, w, key) in enumerate(rows):
        if key is None:
            parts["fp"] += w
        else:
            parts[key] = max(parts[key], w)
        if j + 1 == len(rows) or rows[j + 1][0] != s:
            out.append((s, sum(parts.values())))
    return out


def random_corpus(seed: int) -> tuple[NabCorpus, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    files = [
        toy([(30, 44), (60, 61), (80, 99)], n=120, name="r/a.csv"),
        toy([(5, 25), (50, 70)], n=90, name="r/b.csv"),
        toy([], n=60, name="r/c.csv"),
    ]
    # Coarse scores make many ties, inside and across files.
    scores = {f.name: rng.integers(0, 12, len(f)) / 11.0 for f in files}
    return NabCorpus(tuple(files)), scores


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("profile", PROFILES)
def test_sweep_curve_matches_row_by_row_reference(seed: int, profile: str) -> None:
    corpus, scores = random_corpus(seed)
    ref = reference_curve(corpus, scores, profile)
    thresholds, curve = sweep_curve(corpus, scores, profile)
    assert thresholds.tolist() == [t for t, _ in ref]
    null = -corpus.profiles[profile].fn_weight * 5
    perfect = 5.0
    ref_norm = [100 * (raw - null) / (perfect - null) for _, raw in ref]
    np.testing.assert_allclose(curve, ref_norm, atol=1e-9)
    # and every point of the curve is what scoring at that threshold gives
    for t, c in zip(thresholds, curve, strict=True):
        assert score_at_threshold(corpus, scores, profile, t).score == pytest.approx(c, abs=1e-9)


def test_sweep_ties_pick_the_highest_threshold_and_ge_detects() -> None:
    f = toy()
    corpus = NabCorpus((f,))
    s = np.zeros(N)
    s[40], s[45], s[10] = 0.9, 0.8, 0.95  # row 10 is probation: never scored
    threshold, r = sweep(corpus, {f.name: s}, "standard")
    assert threshold == 0.9  # 0.8 ties with it (row 45 adds nothing): the higher wins
    assert (r.raw, r.threshold) == (1.0, 0.9)
    assert score_at_threshold(corpus, {f.name: s}, "standard", 0.9).detected == 1  # >=
    assert score_at_threshold(corpus, {f.name: s}, "standard", 0.90001).detected == 0
    s[s == 0] = 0.99  # every non-window row scores higher than the window
    threshold, r = sweep(corpus, {f.name: s}, "standard")
    assert (threshold, r.detected, r.score) == (NOTHING_DETECTED, 0, 0.0)


def test_nan_scores_are_never_detections() -> None:
    f = toy()
    s = np.full(N, np.nan)
    s[40] = 0.5
    threshold, r = sweep(NabCorpus((f,)), {f.name: s}, "standard")
    assert (threshold, r.raw, r.fp) == (0.5, 1.0, 0)


def test_inputs_are_checked() -> None:
    corpus = NabCorpus((toy(),))
    with pytest.raises(ValueError, match="missing 1 file"):
        score_detections(corpus, {}, "standard")
    with pytest.raises(ValueError, match=r"shape \(3,\), expected \(100,\)"):
        sweep(corpus, {NAME: np.zeros(3)}, "standard")
    with pytest.raises(ValueError, match='unknown NAB profile "strict"; valid profiles: standard'):
        sweep(corpus, {NAME: np.zeros(N)}, "strict")
    with pytest.raises(ValueError, match="overlap"):
        toy([(10, 30), (30, 40)])


# --- running a detector ------------------------------------------------------------------------


def jump_detector(timestamps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Absolute step over the running max of steps so far: a crude, deterministic detector."""
    step = np.abs(np.diff(values, prepend=values[0]))
    scale = np.maximum.accumulate(step) + 1e-9
    scores = step / scale
    return scores, scores >= 0.999


def test_evaluate_runs_sweeps_and_scores_alerts(corpus: NabCorpus) -> None:
    small = corpus.subset(corpus.names[::8])
    report = evaluate(small, jump_detector, progress=False)
    assert report.alerts is not None
    assert report.alert_flags is not None
    assert report.swept.scores() == sweep_profiles(small, report.scores).scores()
    assert report.alerts.scores() == score_profiles(small, report.alert_flags).scores()
    for profile in PROFILES:
        assert report.alerts[profile].threshold is None
        assert report.swept[profile].score >= report.alerts[profile].score - 1e-9
    text = report.to_markdown()
    assert "| standard |" in text
    assert "own alerts" in text
    parallel = evaluate(small, jump_detector, progress=False, jobs=2)
    assert parallel.swept.scores() == report.swept.scores()
    assert parallel.alerts is not None
    assert parallel.alerts.scores() == report.alerts.scores()
