"""The window rings' float16 codes: values on a grid of each series' own, scores as 1 - s."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_slack_engine_hooks import _spec

from aiops.pipeline import ringcodec
from aiops.pipeline.engine import WINDOW_POINTS, RuleRuntime
from aiops.types import Batch, SeriesKey

W = WINDOW_POINTS


def _feed(rt: RuleRuntime, values: np.ndarray, per_batch: int = 1, n_series: int = 1) -> np.ndarray:
    """Feed ``values`` (points x series) in batches; the scores, points x series."""
    keys = [SeriesKey.of("m", {"i": str(k)}) for k in range(n_series)]
    values = values.reshape(len(values), n_series)
    scores = np.zeros_like(values)
    for lo in range(0, len(values), per_batch):
        chunk = values[lo : lo + per_batch]
        m = len(chunk)
        batch = Batch(
            keys=keys,
            series=np.tile(np.arange(n_series), m),
            timestamps=np.repeat(60.0 * np.arange(lo, lo + m), n_series),
            values=chunk.ravel(),
        )
        scores[lo : lo + m] = rt.process(batch).scores.reshape(m, n_series)
    return scores


def _ring(rt: RuleRuntime, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Series ``k``'s ring, oldest first: decoded values and score codes."""
    n = int(rt._win_n[k])
    slots = (n - min(n, W) + np.arange(min(n, W))) % W
    vals = ringcodec.decode_values(rt._win_v[k], rt._win_vo[k], rt._win_vf[k])
    return vals[slots], rt._win_s[k, slots]


finite = st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, W)), elements=finite))
def test_a_regridded_value_keeps_11_bits_of_its_distance_from_the_offset(values) -> None:
    codes, off, factor = ringcodec.regrid(values, np.ones(values.shape, bool))
    back = ringcodec.decode_values(codes, off, factor)
    dist = np.abs(values - off[:, None])
    # 11 bits, down to float16's smallest step (2**-24 of a code, that is 2**-36 of the
    # row's largest distance: a value that close to the offset is shown at it)
    floor = (2.0**-24 / factor.astype(np.float64))[:, None]
    assert np.all(np.abs(back - values) <= dist / 2048 + floor)
    assert np.all(np.isfinite(codes))
    # the offset is one of the row's values (its median): a chart's points stay near it
    assert all(o in row for o, row in zip(off, values, strict=True))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=200), st.floats(0.5, 0.999999))
def test_a_score_that_reached_the_threshold_still_does_from_its_code(scores, threshold) -> None:
    s = np.asarray(scores)
    codes = ringcodec.encode_scores(s)
    back = ringcodec.decode_scores(codes)
    assert np.all(np.abs((1 - back) - (1 - s)) <= (1 - s) / 2048 + 2.0**-25)
    assert np.all(ringcodec.reached(codes, threshold)[s >= threshold])
    # and one well below it does not
    assert not np.any(ringcodec.reached(codes, threshold)[1 - s > (1 - threshold) * 1.002])


@pytest.mark.parametrize("per_batch", [1, 7, 500])
def test_the_normal_points_after_a_huge_spike_keep_their_detail(per_batch) -> None:
    rng = np.random.default_rng(3)
    values = 50.0 + rng.normal(0, 1, 400)
    values[360] = 1e9
    rt = RuleRuntime(_spec())
    _feed(rt, values, per_batch)
    ring, _ = _ring(rt, 0)
    want = values[-W:]
    # the spike is in the ring (40 points ago), the normal points still to 0.01
    assert abs(ring[want == 1e9][0] - 1e9) <= 1e9 / 2048
    normal = want != 1e9
    np.testing.assert_allclose(ring[normal], want[normal], rtol=0, atol=0.01)


@pytest.mark.parametrize(
    "values",
    [
        1e6 + np.arange(500.0),  # a counter, far from 0, that never stops growing
        1e9 + np.random.default_rng(4).normal(0, 1e-3, 500),  # big, moving in its 12th digit
        np.r_[np.zeros(250), 1e-7 * np.random.default_rng(5).uniform(1, 2, 250)],  # tiny values
        np.r_[np.full(250, 5.0), np.full(250, 5e7)],  # a level shift by 1e7
        np.repeat(np.arange(10.0), 50) * 1e-3,  # a quantized, stepping series
    ],
    ids=["counter", "big-and-steady", "tiny", "shift", "quantized"],
)
def test_a_window_holds_each_kind_of_series_to_a_thousandth_of_its_range(values) -> None:
    rt = RuleRuntime(_spec())
    _feed(rt, values)
    ring, _ = _ring(rt, 0)
    want = values[-W:]
    span = max(np.ptp(want), 1e-12 * np.abs(want).max(), 1e-300)
    np.testing.assert_allclose(ring, want, rtol=0, atol=span / 1000)


def test_the_window_marks_every_point_that_scored_at_the_threshold() -> None:
    rng = np.random.default_rng(6)
    values = 10.0 + rng.standard_t(3, 3000)
    rt = RuleRuntime(_spec(threshold=0.9))
    scores = _feed(rt, values)[:, 0]
    _, codes = _ring(rt, 0)
    reached = ringcodec.reached(codes, 0.9)
    last = scores[-W:]
    assert (last >= 0.9).any()
    assert np.all(reached[last >= 0.9])
    clear = np.abs((1 - last) - 0.1) > 0.1 * 2e-3  # not within float16's step of 1 - 0.9
    assert np.array_equal(reached[clear], last[clear] >= 0.9)
    np.testing.assert_allclose(ringcodec.decode_scores(codes), last, rtol=0, atol=5e-4)


def test_many_series_in_one_batch_each_on_its_own_grid() -> None:
    rng = np.random.default_rng(7)
    scale = 10.0 ** rng.uniform(-6, 9, 50)
    values = scale * (1 + 0.01 * rng.normal(size=(200, 50)))
    rt = RuleRuntime(_spec())
    _feed(rt, values, per_batch=13, n_series=50)
    for k in range(50):
        ring, _ = _ring(rt, k)
        want = values[-W:, k]
        np.testing.assert_allclose(ring, want, rtol=0, atol=np.ptp(want) / 1000)


def test_a_state_with_float32_rings_from_before_the_codes_loads() -> None:
    rng = np.random.default_rng(8)
    values = 1e3 + rng.normal(0, 5, 200)
    rt = RuleRuntime(_spec())
    _feed(rt, values)
    state = rt.state_dict()
    win = state["window"]
    ring, codes = _ring(rt, 0)
    # the layout before: float32 values and scores in slot order, no grid
    vals = ringcodec.decode_values(win.pop("value16"), win.pop("offset"), win.pop("factor"))
    win["value"] = vals.astype(np.float32)
    win["score"] = ringcodec.decode_scores(win.pop("rest16")).astype(np.float32)
    old = RuleRuntime(_spec())
    old.load_state_dict(state)
    ring2, codes2 = _ring(old, 0)
    np.testing.assert_allclose(ring2, ring, rtol=0, atol=np.ptp(ring) / 1000)
    np.testing.assert_allclose(
        ringcodec.decode_scores(codes2), ringcodec.decode_scores(codes), rtol=0, atol=1e-3
    )
    # and it goes on writing on the grids made for it
    more = 1e3 + rng.normal(0, 5, 30)
    _feed(old, more)
    ring3, _ = _ring(old, 0)
    np.testing.assert_allclose(ring3[-30:], more, rtol=0, atol=np.ptp(more) / 1000)


@pytest.mark.parametrize("saved_windows", [True, False])
@pytest.mark.parametrize("windows", [True, False])
def test_an_old_float32_state_loads_whatever_the_widths(saved_windows, windows) -> None:
    rt = RuleRuntime(_spec(windows=saved_windows))
    _feed(rt, 1e3 + np.random.default_rng(9).normal(0, 5, 100))
    state = rt.state_dict()
    win = state["window"]
    vals = ringcodec.decode_values(win.pop("value16"), win.pop("offset"), win.pop("factor"))
    win["value"] = vals.astype(np.float32)
    win["score"] = ringcodec.decode_scores(win.pop("rest16")).astype(np.float32)
    old = RuleRuntime(_spec(windows=windows))
    old.load_state_dict(state)
    assert old._win_v.shape == (1, W if windows else 0)
    more = 1e3 + np.random.default_rng(10).normal(0, 5, 70)
    _feed(old, more)  # and it goes on
    if windows:
        ring, _ = _ring(old, 0)
        np.testing.assert_allclose(ring[-W:], more[-W:], rtol=0, atol=np.ptp(more) / 1000)
