"""How a rule set pages on the simulated fleet: incidents found, false alerts, alerts per day.

Usage (from the repository root)::

    .venv/bin/python bench/fleet.py [--rules rules/fleet.yaml] [--seeds 42 7 99] [--days 4]

For each seed, the simulator (``aiops.connectors.sources.simulator``, incidents ``auto``) runs
``--days`` simulated days through ``aiops backtest``'s replay (the real engine, no
routing effects counted). An incident is *found* when a firing alert starts on its own
series between its start and ``--grace`` after its end; a firing alert is *false* when it
starts on a series outside every incident of that series (with the same grace). The
simulator changes exactly an incident's series and window, so an alert elsewhere is
noise. Every incident that starts within the ``--days`` is counted, and the replay runs
on past the last one's end and its grace, so that one starting minutes before the end
can be seen (a slow ramp of seed 99 starts 17 minutes before the fourth day ends and
lasts 149); alerts in that run-on that meet no counted incident are not counted as
false, and false alerts per day are over the ``--days``. Prints one row per seed and
the totals, in Markdown. :func:`run_fleet` returns the same totals for one rule set,
for other benchmarks (``bench/quality/run.py``).

``--detector NAME`` (with optional ``--params JSON``) scores every rule of the rule
files with that detector instead of their own, to compare detectors under the same
thresholds and post-rules (``--threshold`` likewise; ``--single-hits`` sets
``min_hits: 1`` and ``hits_window: 1``, which onset detectors such as
``envelope_novelty`` need).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aiops.config import load_config
from aiops.connectors.sources.simulator import Incident, SimulatorSource
from aiops.evaluation.backtest import BacktestResult, run_backtest, with_rules
from aiops.service.app import build_router

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SEEDS = (42, 7, 99)
DEFAULT_DAYS = 4
DEFAULT_GRACE = 600.0


def _config(tmp: Path, seed: int, seconds: int) -> Path:
    path = tmp / f"fleet-{seed}.yaml"
    path.write_text(
        "sources:\n"
        "  sim:\n"
        "    type: simulator\n"
        f"    seed: {seed}\n"
        f"    duration: {seconds}s\n"
        "    speed: 0\n"
        "state: {dir: state}\n"
        "rule_files: []\n",
        encoding="utf-8",
    )
    return path


def _incidents(seed: int, days: int) -> tuple[list[Incident], float]:
    """The incidents starting within ``days``, and the simulator's start time."""
    config = SimulatorSource.Config.model_validate({"seed": seed, "duration": f"{days}d"})
    sim = SimulatorSource("sim", config, resume=None)
    try:
        end = sim.start_time + days * 86400
        return [i for i in sim.incident_schedule if i.start < end], sim.start_time
    finally:
        sim.close()


def _replay_seconds(incidents: list[Incident], start: float, days: int, grace: float) -> int:
    """``days`` in seconds, or up to the last incident's end and grace if that is later."""
    last = max((i.end for i in incidents), default=start)
    return max(days * 86400, math.ceil(last + grace - start))


def _override(
    rule_files: list[Path],
    tmp: Path,
    detector: dict[str, Any] | None,
    threshold: float | None,
    single_hits: bool,
) -> list[Path]:
    """Copies of the rule files with every rule's detector/threshold/hits replaced."""
    if detector is None and threshold is None and not single_hits:
        return rule_files
    from ruamel.yaml import YAML

    yaml = YAML()
    out = []
    for k, path in enumerate(rule_files):
        doc = yaml.load(path.read_text(encoding="utf-8")) or {}
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                if detector is not None:
                    rule["detector"] = detector
                if threshold is not None:
                    rule["threshold"] = threshold
                if single_hits:
                    rule["min_hits"] = rule["hits_window"] = 1
        copy = tmp / f"rules-{k}.yaml"
        with copy.open("w", encoding="utf-8") as f:
            yaml.dump(doc, f)
        out.append(copy)
    return out


def evaluate(
    result: BacktestResult, incidents: list[Incident], grace: float, until: float = math.inf
) -> dict[str, int]:
    """Incidents found and false alerts of one replay (alerts after ``until`` that meet no
    incident are not counted: the replay's run-on past the scored days)."""
    by_series: dict[str, list[Incident]] = {}
    for inc in incidents:
        by_series.setdefault(str(inc.key), []).append(inc)
    found: set[int] = set()
    false = alerts = 0
    for rec in result.firing:
        hit = False
        for inc in by_series.get(rec.series, []):
            if inc.start <= rec.time <= inc.end + grace:
                found.add(id(inc))
                hit = True
        if hit or rec.time <= until:
            alerts += 1
            false += not hit
    return {
        "incidents": len(incidents),
        "found": len(found),
        "alerts": alerts,
        "false": false,
    }


def replay_seed(rules: list[Path], seed: int, days: int, grace: float, tmp: Path) -> dict[str, int]:
    """One seed's replay: incidents, found, alerts, false alerts, and series replayed."""
    incidents, start = _incidents(seed, days)
    seconds = _replay_seconds(incidents, start, days, grace)
    loaded = with_rules(load_config(_config(tmp, seed, seconds)), rules)
    result = run_backtest(loaded, build_router(loaded.alerting))
    row = evaluate(result, incidents, grace, until=start + days * 86400)
    row["series"] = result.series
    return row


def run_fleet(
    rule_files: list[Path] | None = None,
    *,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    days: int = DEFAULT_DAYS,
    grace: float = DEFAULT_GRACE,
    detector: dict[str, Any] | None = None,
    threshold: float | None = None,
    single_hits: bool = False,
    on_seed: Callable[[int, dict[str, int]], None] | None = None,
) -> dict[str, int]:
    """Totals over ``seeds`` of one rule set (``detector`` etc. override every rule).

    Keys: ``incidents``, ``found``, ``alerts``, ``false``, ``series`` (summed over seeds)
    and ``series_days`` (series times simulated days), for :func:`false_per_100_series_day`.
    ``on_seed(seed, row)`` is called after each seed.
    """
    rule_files = rule_files or [ROOT / "rules" / "fleet.yaml"]
    totals = {"incidents": 0, "found": 0, "alerts": 0, "false": 0, "series": 0, "series_days": 0}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rules = _override(rule_files, tmp, detector, threshold, single_hits)
        for seed in seeds:
            row = replay_seed(rules, seed, days, grace, tmp)
            for key in row:
                totals[key] += row[key]
            totals["series_days"] += row["series"] * days
            if on_seed is not None:
                on_seed(seed, row)
    return totals


def false_per_100_series_day(totals: dict[str, int]) -> float:
    """False alerts per 100 series per simulated day, from :func:`run_fleet`'s totals."""
    return 100.0 * totals["false"] / totals["series_days"] if totals["series_days"] else math.nan


def main(argv: list[str] | None = None) -> int:
    """Run every seed and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=Path, action="append")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    ap.add_argument("--days", type=int, default=DEFAULT_DAYS)
    ap.add_argument("--grace", type=float, default=DEFAULT_GRACE, help="seconds after an incident")
    ap.add_argument("--detector")
    ap.add_argument("--params", default="{}")
    ap.add_argument("--threshold", type=float)
    ap.add_argument("--single-hits", action="store_true")
    args = ap.parse_args(argv)
    rule_files = args.rules or [ROOT / "rules" / "fleet.yaml"]
    detector = {"type": args.detector, "params": json.loads(args.params)} if args.detector else None

    print(f"rules: {', '.join(str(p) for p in rule_files)}", end="")
    print(f"; detector: {detector}" if detector else "", end="")
    print(f"; threshold: {args.threshold}" if args.threshold else "", end="")
    print("; min_hits 1 of 1" if args.single_hits else "")
    print()
    print("| seed | incidents found | alerts | false alerts | false alerts per day |")
    print("|---|---:|---:|---:|---:|")

    def print_row(seed: int, row: dict[str, int]) -> None:
        print(
            f"| {seed} | {row['found']}/{row['incidents']} | {row['alerts']} | "
            f"{row['false']} | {row['false'] / args.days:.2f} |",
            flush=True,
        )

    totals = run_fleet(
        rule_files,
        seeds=args.seeds,
        days=args.days,
        grace=args.grace,
        detector=detector,
        threshold=args.threshold,
        single_hits=args.single_hits,
        on_seed=print_row,
    )
    days = args.days * len(args.seeds)
    print(
        f"| all | {totals['found']}/{totals['incidents']} | {totals['alerts']} | "
        f"{totals['false']} | {totals['false'] / days:.2f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
