"""Calibration of every registered detector on stationary noise: observed / nominal rates.

Usage (from the repository root)::

    .venv/bin/python bench/calibration.py [--detector NAME ...] [--defaults]
        [--levels 0.99 0.999 0.9999]

For each detector and each noise kind of the shared check suite's calibration check
(``tests/detector_checks.py``: Gaussian, Student-t3, Poisson 5, Poisson 0.5, rounded
Gaussian; 8 series x 4,000 points, the first 1,000 of each series unscored), prints the
share of scored points at ``s`` or more divided by ``1 - s``: 1.0 is exact, 2.0 twice
too many alerts on normal points. ``--defaults`` uses each detector's default parameters
instead of its ``check_params()`` (the suite's small ones).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from detector_checks import NOISE, calibration_ratios, factory_for

from aiops.registry import DETECTORS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--detector", nargs="*", default=None)
    ap.add_argument("--defaults", action="store_true")
    ap.add_argument("--levels", nargs="*", type=float, default=[0.99, 0.999, 0.9999])
    args = ap.parse_args()
    names = args.detector or DETECTORS.names()
    levels = tuple(args.levels)
    head = " | ".join(f"{k} " + "/".join(f"{lv:g}" for lv in levels) for k in NOISE)
    print(f"| detector | {head} | s |")
    print("|---" * (len(NOISE) + 2) + "|")
    for name in names:
        cls = DETECTORS.get(name)
        factory = DETECTORS.get(name) if args.defaults else factory_for(cls)
        t = time.process_time()
        ratios = calibration_ratios(factory, levels)
        cells = " | ".join("/".join(f"{r[lv]:.2f}" for lv in levels) for r in ratios.values())
        print(f"| {name} | {cells} | {time.process_time() - t:.0f} |", flush=True)


if __name__ == "__main__":
    main()
