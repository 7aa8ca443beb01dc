"""Two-byte codes for the points of the alert window rings (:mod:`aiops.pipeline.engine`).

A ring holds a series' last 60 points for the chart an alert carries. Its values and
scores were float32, 480 of a ring's 736 bytes; at a million series that was most of
what the rings cost in memory and most of what a restore decompressed (noise does not
compress). Here each is a float16, 240 bytes a ring together:

- a value is coded relative to its series' *grid*, an offset (float64) and a power of
  two (a float32 factor, ``2**-e``): ``code = (value - offset) * factor``, so that the
  code keeps float16's 11 significant bits of the value's distance from the offset. The
  grid is set (:func:`regrid`) from the ring's own values: the offset is their median,
  and the factor makes their largest distance from it a code of about ``2**12``. A
  spike of 1e9 on a series of 50 +- 1 therefore keeps both the spike (to 1 part in
  2,048) and the normal points (a code near 0 is a float16 with its own exponent: to
  about 0.002 there). A value whose code would pass ``2**14`` (the level moved away, a
  larger spike) makes the engine set the ring's grid again, and so does each series'
  turn, once every 60 points (the ring's length), so that a grid made wide by a
  spike narrows again once the spike is gone. Powers of two from ``2**-126`` to
  ``2**127`` (float32's) bound a grid: values further than about 1e41 from the offset
  are kept as inf (the float32 rings before kept values up to 3.4e38 only);
- a score ``s`` is coded as ``1 - s``: a float16 keeps its relative precision down to
  about 6e-5 (and to 6e-8 as a subnormal), where the interesting scores are, 0.99 to
  0.999999; a score of 0.5 is kept to about 2e-4. What a chart needs of a score is
  whether it reached the threshold: rounding to float16 keeps order, so every score at
  or above the threshold is still found to be by :func:`reached`, from the codes; one
  below it by less than about 1 part in 2,000 of ``1 - threshold`` can be too.

Non-finite values always make a grid again, and do not move it (they are kept as a
code of inf or NaN).

>>> vals = np.array([[50.0, 51.0, 49.0, 1e9]])
>>> codes, off, factor = regrid(vals, np.ones((1, 4), bool))
>>> back = decode_values(codes, off, factor)
>>> bool(np.all(np.abs(back - vals) <= np.abs(vals - off[:, None]) / 2048))
True
>>> float(off[0]), codes.dtype.name, factor.dtype.name
(50.0, 'float16', 'float32')
>>> codes = encode_scores(np.array([0.5, 0.98, 0.99, 0.999999]))
>>> decode_scores(codes).round(4).tolist(), reached(codes, 0.99).tolist()
([0.5, 0.98, 0.99, 1.0], [False, False, True, True])
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "EMPTY_FACTOR",
    "REGRID_CODE",
    "code_values",
    "decode_scores",
    "decode_values",
    "encode_scores",
    "reached",
    "regrid",
]

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
Float32Array = np.ndarray[Any, np.dtype[np.float32]]
Float16Array = np.ndarray[Any, np.dtype[np.float16]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]

#: A grid set by :func:`regrid` codes the largest distance of its values from the
#: offset as at most this (float16 holds up to 65,504).
HEAD_CODE = 2.0**12
#: A code beyond this (in magnitude) is not written: the ring's grid is set again.
REGRID_CODE = 2.0**14
#: The factor of a ring with no grid yet: every code is inf or NaN, so the first value
#: sets the grid.
EMPTY_FACTOR = np.float32(np.inf)
# A grid's factor is 2**-e for e in this range (float32's normal powers of two).
_E_LO, _E_HI = -127, 126
_HEAD_BITS = 12


def code_values(
    values: FloatArray, offset: FloatArray, factor: Float32Array
) -> tuple[FloatArray, BoolArray]:
    """Each value's code on its row's grid (float64), and whether it may be written.

    Not writable: a code past :data:`REGRID_CODE` in magnitude, or not finite.

    >>> v, off, f = np.array([52.0, 1e6, np.inf]), np.full(3, 50.0), np.full(3, 16, np.float32)
    >>> code, ok = code_values(v, off, f)
    >>> code.tolist(), ok.tolist()
    ([32.0, 15999200.0, inf], [True, False, False])
    """
    with np.errstate(over="ignore", invalid="ignore"):
        code = (values - offset) * factor
    ok = np.abs(code) <= REGRID_CODE
    return code, ok


def regrid(values: FloatArray, valid: BoolArray) -> tuple[Float16Array, FloatArray, Float32Array]:
    """Codes of rows of values on a grid of each row's own (see the module doc).

    ``valid`` marks the slots that hold a point; the others get codes of no meaning. A
    row with no finite valid value gets offset 0 and a factor from nothing.

    >>> valid = np.array([[1, 0], [0, 0]], bool)
    >>> codes, off, f = regrid(np.array([[3.0, 0.0], [0.0, 0.0]]), valid)
    >>> off.tolist(), f.tolist(), float(codes[0, 0])
    ([3.0, 0.0], [1024.0, 4096.0], 0.0)
    """
    k, w = values.shape
    if not w:  # rings of no width (no receiver draws windows): nothing to code
        return np.zeros((k, 0), np.float16), np.zeros(k), np.full(k, EMPTY_FACTOR, np.float32)
    fin = valid & np.isfinite(values)
    m = fin.sum(axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        if m.min(initial=w) == w:  # full rings: a partition
            mid = (w - 1) // 2
            median = np.partition(values, mid, axis=1)[:, mid] if k else np.zeros(0)
        else:
            ranked = np.sort(np.where(fin, values, np.inf), axis=1)
            median = np.where(m > 0, ranked[np.arange(k), np.maximum(m - 1, 0) // 2], 0.0)
        dev = np.max(np.where(fin, np.abs(values - median[:, None]), 0.0), axis=1, initial=0.0)
        ref = np.where(dev > 0, dev, np.abs(median))
        e = np.where(np.isfinite(ref), np.frexp(ref)[1], 1024) - _HEAD_BITS
        factor = np.ldexp(np.float32(1.0), -np.clip(e, _E_LO, _E_HI)).astype(np.float32)
        codes = (values - median[:, None]) * factor[:, None]
        return codes.astype(np.float16), median, factor


def decode_values(codes: Float16Array, offset: FloatArray, factor: Float32Array) -> FloatArray:
    """The values of rows of codes (float64); ``offset`` and ``factor`` one per row."""
    with np.errstate(over="ignore", invalid="ignore"):
        out: FloatArray = offset[..., None] + codes.astype(np.float64) / factor[..., None]
    return out


def encode_scores(scores: Any) -> Float16Array:
    """Scores as the float16 codes ``1 - s``."""
    out: Float16Array = (1.0 - np.asarray(scores, dtype=np.float64)).astype(np.float16)
    return out


def decode_scores(codes: Any) -> FloatArray:
    """Inverse of :func:`encode_scores` (to float16's precision of ``1 - s``)."""
    out: FloatArray = 1.0 - np.asarray(codes, dtype=np.float64)
    return out


def reached(codes: Any, threshold: float) -> BoolArray:
    """Whether the coded scores reached ``threshold`` (all that did; see the module doc)."""
    out: BoolArray = np.asarray(codes) <= encode_scores(threshold)
    return out
