"""Reliability: a cardinality flood of 1,000,000 distinct series keeps the RSS flat.

A child process (``tests/reliability_flood.py``, a fresh interpreter so the resident set
is the flood's alone) feeds 1,000,000 new series, 10,000 a batch, to a rule capped at
10,000 series: half match it (past the cap they are dropped and counted), half match
no rule (remembered in the registry's bounded caches, emptied whole when full). The
RSS after the first tenth of the flood is the plateau; it never grows past it by more
than a few MiB, and the whole flood costs less than 256 MiB over the bare engine.
``bench/cardinality_flood.py`` runs the same with 10,000,000 keys (RELIABILITY.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from aiops.pipeline.series import MAX_UNMATCHED

FLOOD = Path(__file__).parent / "reliability_flood.py"
KEYS, CAP = 1_000_000, 10_000
MiB = 2**20


def test_a_million_new_series_keep_the_rss_flat_and_are_all_counted():
    out = subprocess.run(
        [sys.executable, str(FLOOD), str(KEYS), "--cap", str(CAP)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    doc = json.loads(out.stdout)
    assert doc["keys"] == KEYS
    # Existing series are kept, every matching one over the cap is counted once.
    assert doc["live"] == CAP
    assert doc["dropped"] == KEYS // 2 - CAP
    assert doc["remembered"] <= 2 * MAX_UNMATCHED
    rss = [r for _, r in doc["rss"]]
    base, plateau, later = rss[0], max(rss[1:3]), max(rss[3:])
    assert later <= plateau + 16 * MiB, [r // MiB for r in rss]
    assert later - base < 256 * MiB, [r // MiB for r in rss]
