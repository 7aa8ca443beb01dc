"""A cardinality flood of 10,000,000 distinct series through the engine: RSS stays flat.

Run: ``.venv/bin/python bench/cardinality_flood.py [--keys 10000000] [--cap 10000]``

Runs ``tests/reliability_flood.py`` in a child process (a fresh interpreter, so the
resident set size is the flood's alone): one rule capped at ``--cap`` series, half of
the keys matching it, half matching nothing, every key new. Prints the RSS after each
tenth of the keys, the growth from the first tenth to the end, and the rule's counts.
``--all-match --cap 1000000 --keys 1000000`` measures the RSS per series of one rule
(``--detector``, ``ewma_z`` unless named) instead; ``--no-windows`` without the alert
window rings (a daemon whose receivers draw no charts). ``tests/test_reliability_flood.py``
runs 1,000,000 keys.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

FLOOD = Path(__file__).resolve().parents[1] / "tests" / "reliability_flood.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10_000_000)
    parser.add_argument("--cap", type=int, default=10_000)
    parser.add_argument(
        "--all-match", action="store_true", help="every key matches: the RSS per series"
    )
    parser.add_argument("--detector", default="ewma_z", help="the rule's detector")
    parser.add_argument(
        "--no-windows", action="store_true", help="no alert window rings (no chart receiver)"
    )
    args = parser.parse_args()
    out = subprocess.run(
        [sys.executable, str(FLOOD), str(args.keys), "--cap", str(args.cap)]
        + ["--detector", args.detector]
        + (["--all-match"] if args.all_match else [])
        + (["--no-windows"] if args.no_windows else []),
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(out.stdout)
    mib = [(n, rss / 2**20) for n, rss in doc["rss"]]
    print(
        f"{doc['keys']:,} keys in {doc['seconds']:.0f} s, cap {doc['cap']:,}, "
        f"detector {doc['detector']}{'' if doc['windows'] else ', no window rings'}"
    )
    print("RSS MiB after keys: " + ", ".join(f"{n:,}: {m:.0f}" for n, m in mib))
    later = [m for _, m in mib[2:]]
    print(
        f"start {mib[0][1]:.0f} MiB, after the first tenth {mib[1][1]:.0f} MiB, "
        f"peak later {max(later):.0f} MiB, end {mib[-1][1]:.0f} MiB"
    )
    print(f"live {doc['live']:,}, dropped {doc['dropped']:,}, remembered {doc['remembered']:,}")
    if doc["live"]:
        per = (doc["rss"][-1][1] - doc["rss"][0][1]) / doc["live"]
        print(f"RSS over the bare engine per live series: {per / 1024:.2f} KiB")


if __name__ == "__main__":
    main()
