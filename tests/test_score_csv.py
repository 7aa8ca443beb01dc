"""`aiops score`'s CSV reading and writing in bulk: exactly the row-by-row results.

``row_by_row_read`` and ``row_by_row_write`` are the per-row code that the bulk versions
replaced, kept here only as the reference.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiops.pipeline.decoder import MAX_TIMESTAMP, MIN_TIMESTAMP
from aiops.pipeline.scoring import CsvRows, ScoredSeries, read_series_csv, write_scored_csv
from aiops.timeutil import parse_timestamp, parse_timestamps


def row_by_row_read(path):
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        rows = [r for r in csv.reader(f) if r]

    def is_number(text):
        try:
            float(text)
        except ValueError:
            return False
        return True

    def is_time(text):
        try:
            parse_timestamp(text)
        except ValueError:
            return False
        return True

    if rows and not is_number(rows[0][1] if len(rows[0]) > 1 else "") and not is_time(rows[0][0]):
        rows = rows[1:]
    ts, vs = np.empty(len(rows)), np.empty(len(rows))
    last_t = 0.0
    for i, row in enumerate(rows):
        time_ok = False
        with contextlib.suppress(ValueError, IndexError):
            t = parse_timestamp(row[0])
            # Beyond 1e11: a wrong unit; before year 1 or past 9999: no alert can carry it.
            time_ok = math.isfinite(t) and abs(t) < 1e11 and MIN_TIMESTAMP <= t < MAX_TIMESTAMP
            if time_ok:
                last_t = t
        ts[i] = last_t
        try:
            v = float(row[1])
            # A row without a usable time is scored as missing.
            vs[i] = v if math.isfinite(v) and time_ok else math.nan
        except (ValueError, IndexError):
            vs[i] = math.nan
    return rows, ts, vs


def row_by_row_write(path, rows, result):
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["timestamp", "value", "anomaly_score", "alert"])
        for row, s, a in zip(rows, result.scores.tolist(), result.alerts.tolist(), strict=True):
            w.writerow([row[0] if row else "", row[1] if len(row) > 1 else "", f"{s:.6f}", int(a)])


DATES = ["2014-04-01", "2000-02-29", "1900-02-29", "0001-01-01", "9999-12-31", "2014-13-01"]
CLOCKS = ["00:05:00", "23:59:59", "24:00:00", "12:60:00", "00:00:60"]
SEPARATORS = ["T", " ", "t", "_"]
TAILS = ["", "Z", "z", "+02:00", "-05:30", "+23:59", "+24:00", "-00:00", "+0200", "+02"]
DECIMALS = ["", ".1", ".25", ".123456", ".1234567", ",5", "."]
ODD = ["", " ", "x", "nan", "inf", "-inf", "1e9", " 12 ", "1_000", "\uff11\uff12", "12\x00", "-1.5"]

iso = st.builds(
    lambda d, sep, c, dec, tail: f"{d}{sep}{c}{dec}{tail}",
    st.sampled_from(DATES),
    st.sampled_from(SEPARATORS),
    st.sampled_from(CLOCKS),
    st.sampled_from(DECIMALS),
    st.sampled_from(TAILS),
)
unix = st.one_of(
    st.integers(-(10**10), 10**10).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=64).map(repr),
)
mangled = st.builds(
    lambda s, i, ch: s[: i % (len(s) + 1)] + ch + s[i % (len(s) + 1) + 1 :],
    iso,
    st.integers(0, 40),
    st.sampled_from(list("0123456789-:TZ+. \x00é,")),
)
timestamps = st.one_of(iso, unix, mangled, st.sampled_from(ODD))


@settings(max_examples=300, deadline=None)
@given(st.lists(timestamps, max_size=40))
def test_bulk_timestamps_equal_parse_timestamp_one_by_one(texts):
    seconds, parsed = parse_timestamps(texts)
    for k, text in enumerate(texts):
        try:
            want = parse_timestamp(text)
        except ValueError:
            assert not parsed[k], text
            continue
        assert parsed[k], text
        assert seconds[k] == want or (math.isnan(want) and math.isnan(seconds[k])), text


def test_bulk_timestamps_of_a_long_iso_column():
    t = 1_700_000_000 + 60 * np.arange(10_000)
    texts = [x + "Z" for x in np.datetime_as_string(t.astype("datetime64[s]")).tolist()]
    texts[5] = texts[5][:-1] + ".5+01:00"
    seconds, parsed = parse_timestamps(texts)
    assert parsed.all()
    want = t.astype(float)
    want[5] += 0.5 - 3600
    assert seconds.tolist() == want.tolist()


values = st.one_of(
    st.floats(width=64).map(repr),
    st.integers(-1000, 1000).map(str),
    st.sampled_from(ODD),
)
rows = st.lists(
    st.one_of(
        st.tuples(timestamps, values).map(list),
        st.tuples(timestamps).map(list),  # no value column
        st.tuples(timestamps, values, st.sampled_from(["extra", ""])).map(list),
        st.just([]),  # a blank line
    ),
    max_size=30,
)
HEADERS = [[], ["timestamp", "value"], ["time"], ["t", "1"], ["1396310700", "v"]]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.sampled_from(HEADERS), rows, st.sampled_from(["\n", "\r\n"]), st.booleans(), st.data())
def test_read_and_write_equal_the_row_by_row_code(tmp_path, header, body, newline, quote, data):
    buf = io.StringIO()
    quoting = csv.QUOTE_ALL if quote else csv.QUOTE_MINIMAL
    w = csv.writer(buf, lineterminator=newline, quoting=quoting)
    for row in ([header] if header else []) + body:
        if row:
            w.writerow(row)
        else:
            buf.write(newline)
    src = tmp_path / "in.csv"
    src.write_bytes(buf.getvalue().encode("utf-8"))

    got_rows, got_t, got_v = read_series_csv(src)
    want_rows, want_t, want_v = row_by_row_read(src)
    assert got_rows == want_rows
    assert np.array_equal(got_t, want_t, equal_nan=True)
    assert np.array_equal(got_v, want_v, equal_nan=True)
    assert got_v.dtype == got_t.dtype == np.float64

    n = len(got_rows)
    scored = ScoredSeries(
        scores=np.array(data.draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)), float),
        alerts=np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool),
    )
    write_scored_csv(tmp_path / "bulk.csv", got_rows, scored)
    row_by_row_write(tmp_path / "rows.csv", want_rows, scored)
    assert (tmp_path / "bulk.csv").read_bytes() == (tmp_path / "rows.csv").read_bytes()


def test_write_refuses_rows_and_scores_of_different_lengths(tmp_path):
    scored = ScoredSeries(np.zeros(2), np.zeros(2, dtype=bool))
    with pytest.raises(ValueError, match="differ in length: 1, 2, 2"):
        write_scored_csv(tmp_path / "o.csv", [["0", "1"]], scored)


def test_one_bad_row_never_fails_the_file(tmp_path):
    # A non-UTF-8 byte, a field longer than the csv module's 128 KiB limit and an
    # infinite timestamp: each stays one row, scored as missing; the others are scored.
    good = [f"{1_700_000_000 + 60 * i},{i % 7}".encode() for i in range(50)]
    bad = [b"1700009999,\xff\xfe", b"1700009999," + b"9" * 200_000, b"inf,1.5"]
    path = tmp_path / "in.csv"
    path.write_bytes(b"timestamp,value\n" + b"\n".join(good[:20] + bad + good[20:]) + b"\n")
    rows, ts, vs = read_series_csv(path)
    assert len(rows) == len(ts) == len(vs) == 53
    assert np.isnan(vs[20:23]).all()  # the inf row's value too: no time to score it at
    assert ts[22] == ts[21]  # an unparseable timestamp takes the previous one
    assert not np.isnan(np.delete(vs, [20, 21, 22])).any()
    assert csv.field_size_limit() == 131072  # the global limit is restored


def test_aiops_score_keeps_one_row_per_input_row_and_says_how_many_were_unusable(tmp_path):
    from click.testing import CliRunner

    from aiops.cli import cli

    path = tmp_path / "in.csv"
    body = [f"{1_700_000_000 + 60 * i},{i % 5}".encode() for i in range(30)]
    path.write_bytes(b"\n".join([*body[:10], b"1700000601,\xff", *body[10:]]) + b"\n")
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(cli, ["score", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "1 row without a usable value" in result.output
    assert len(out.read_text(encoding="utf-8").splitlines()) == 1 + 31


# The plain path (aiops.pipeline.csvscan): files without quotes, NULs, lone carriage
# returns or non-ASCII bytes are read and written by compiled loops; they must give what
# the row-by-row code gives, number by number and byte by byte.
plain_numbers = st.one_of(
    st.floats(width=64).map(repr),
    st.floats(width=64, allow_nan=False, allow_infinity=False).map(lambda x: f"{x:.4f}"),
    st.floats(width=64, allow_nan=False, allow_infinity=False).map(lambda x: f"{x:e}"),
    st.floats(width=32).map(lambda x: f"{x:.9g}"),
    st.integers(-(10**25), 10**25).map(str),
    st.builds(
        lambda sign, whole, frac, e: f"{sign}{whole}{frac}{e}",
        st.sampled_from(["", "+", "-"]),
        st.sampled_from(["", "0", "00012", "9007199254740993", "123456789012345678901"]),
        st.sampled_from(["", ".", ".5", ".000001", ".12345678901234567890"]),
        st.sampled_from(["", "e0", "E+22", "e-22", "e23", "e-23", "e308", "e-330", "e", "e+"]),
    ),
    st.sampled_from(["", " ", "x", "nan", "inf", "-inf", "1e9", " 12 ", "1_000", "-0", "-0.0"]),
)
plain_times = st.one_of(
    iso,
    unix,
    plain_numbers,
    mangled.filter(lambda s: s.isascii() and "," not in s and "\x00" not in s),
)
plain_rows = st.lists(
    st.one_of(
        st.tuples(plain_times, plain_numbers).map(list),
        st.tuples(plain_times).map(list),
        st.tuples(plain_times, plain_numbers, st.sampled_from(["extra", ""])).map(list),
        st.just([]),
    ),
    max_size=30,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.sampled_from(HEADERS), plain_rows, st.sampled_from(["\n", "\r\n"]), st.data())
def test_plain_files_read_and_write_as_the_row_by_row_code(tmp_path, header, body, newline, data):
    lines = [",".join(row) for row in ([header] if header else []) + body]
    text = newline.join(lines) + data.draw(st.sampled_from(["", newline]))
    src = tmp_path / "in.csv"
    src.write_bytes(text.encode("ascii"))

    got_rows, got_t, got_v = read_series_csv(src)
    want_rows, want_t, want_v = row_by_row_read(src)
    assert isinstance(got_rows, CsvRows)  # the plain path, not the csv module's
    assert got_rows == want_rows
    assert np.array_equal(got_t, want_t, equal_nan=True)
    assert np.array_equal(got_v, want_v, equal_nan=True)

    n = len(got_rows)
    ties = [k / 1e6 + 5e-7 for k in range(0, 1_000_000, 37_111)] + [5e-7, 0.9999995, 5e-324]
    score = st.one_of(st.floats(0, 1), st.sampled_from([*ties, 0.0, 1.0, 0.5, 1e-07]))
    scored = ScoredSeries(
        scores=np.array(data.draw(st.lists(score, min_size=n, max_size=n)), float),
        alerts=np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool),
    )
    write_scored_csv(tmp_path / "bulk.csv", got_rows, scored)
    row_by_row_write(tmp_path / "rows.csv", want_rows, scored)
    assert (tmp_path / "bulk.csv").read_bytes() == (tmp_path / "rows.csv").read_bytes()


def test_plain_numbers_equal_float_one_by_one(tmp_path):
    # Every float's shortest repr and a few other spellings, read by the compiled loop.
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**63, 20_000, dtype=np.int64).view(np.float64)
    finite = bits[np.isfinite(bits)]
    texts = [repr(x) for x in finite.tolist()]
    texts += [f"{x:.6f}" for x in rng.normal(0, 1e4, 5000).tolist()]
    texts += [f"{x:.17g}" for x in rng.random(5000).tolist()]
    texts += ["0.1", "0.3", "1e22", "1e-22", "9007199254740992", "9007199254740993", "-0"]
    body = "".join(f"{1_700_000_000 + i},{t}\n" for i, t in enumerate(texts))
    path = tmp_path / "in.csv"
    path.write_text(body, encoding="ascii")
    rows, _, vs = read_series_csv(path)
    assert isinstance(rows, CsvRows)
    want = np.array([float(t) for t in texts])
    want[~np.isfinite(want)] = np.nan
    assert np.array_equal(vs, want, equal_nan=True)
    assert np.array_equal(np.signbit(vs), np.signbit(want))  # "-0" stays -0.0


def test_quoted_or_non_ascii_files_go_through_the_csv_module(tmp_path):
    for body in ['"1700000000",1\n', "1700000000,\u00e9\n", "1700000000,1\r2,3\n"]:
        path = tmp_path / "in.csv"
        path.write_bytes(body.encode("utf-8"))
        rows, _, _ = read_series_csv(path)
        assert not isinstance(rows, CsvRows)
        assert rows == row_by_row_read(path)[0]


def test_numba_without_the_blas_probe_still_compiles_linear_algebra():
    # In a fresh interpreter, as `aiops score` starts: numba's NumPy support loads without
    # importing scipy.linalg; afterwards scipy.linalg imports and numba's linear algebra
    # (which imports it itself) compiles and agrees with NumPy.
    code = """
import sys
import numba, numpy as np
from aiops.pipeline.scoring import skip_numba_blas_probe
skip_numba_blas_probe()
f = numba.njit(lambda x: x.sum())
assert f(np.arange(4.0)) == 6.0
assert "scipy.linalg" not in sys.modules, "numba imported scipy.linalg"
import scipy.linalg
a = np.array([[2.0, 1.0], [1.0, 3.0]])
assert np.allclose(numba.njit(lambda m: np.linalg.inv(m))(a), np.linalg.inv(a))
assert numba.njit(lambda x, y: np.dot(x, y))(a[0], a[1]) == 5.0
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
