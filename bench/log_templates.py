"""Grouping accuracy of ``aiops logs templates`` on the Loghub log-parsing benchmark.

Data: a folder holding Loghub's ``<System>_2k.log_structured.csv`` files (columns
``Content`` and ``EventId`` at least), at any depth (Loghub's layout,
``<System>/<System>_2k.log_structured.csv``, or all in one folder), given by ``--data``
or ``AIOPS_LOGHUB_DIR``. Every such file found is scored (``--systems`` picks some by
name). The dataset is not part of this repository; fetch it from the Loghub project
into a folder of your own.

For each system, the ``Content`` column is written one message a line, mined by the
command ``aiops logs templates FILE --out OUT.csv`` (the daemon's miner, masking and
settings), and scored with the benchmark's grouping accuracy: a line counts as correct
when the set of lines sharing its template id equals the set of lines sharing its
ground-truth event (Zhu et al., "Tools and Benchmarks for Automated Log Parsing", ICSE-SEIP
2019; Drain averages 0.865 on the 16 systems there).

    .venv/bin/python bench/log_templates.py --data /path/to/loghub [--systems HDFS,Spark]

``--explain`` also lists, per system, each ground-truth event that was not grouped
exactly: the templates its lines fell into and the other events sharing them.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

#: The 16 systems of the benchmark (Zhu et al.), in the paper's order: found files are
#: listed in this order, others after them by name.
SYSTEMS = [
    "HDFS",
    "Hadoop",
    "Spark",
    "Zookeeper",
    "BGL",
    "HPC",
    "Thunderbird",
    "Windows",
    "Linux",
    "Android",
    "HealthApp",
    "Apache",
    "Proxifier",
    "OpenSSH",
    "OpenStack",
    "Mac",
]


def grouping_accuracy(truth: list[str], predicted: list[str]) -> float:
    """Share of lines whose predicted group is exactly their ground-truth group.

    >>> grouping_accuracy(["a", "a", "b", "c"], ["1", "1", "2", "2"])
    0.5
    """
    by_truth: dict[str, set[int]] = defaultdict(set)
    by_pred: dict[str, set[int]] = defaultdict(set)
    for i, (t, p) in enumerate(zip(truth, predicted, strict=True)):
        by_truth[t].add(i)
        by_pred[p].add(i)
    correct = sum(len(g) for g in by_pred.values() if g == by_truth[truth[next(iter(g))]])
    return correct / len(truth) if truth else float("nan")


def read_structured(path: Path) -> tuple[list[str], list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [r["Content"] for r in rows], [r["EventId"] for r in rows]


def explain(contents: list[str], truth: list[str], rows: list[dict[str, str]]) -> None:
    """Print each ground-truth event whose lines are not exactly one predicted group."""
    ids = [r["template_id"] for r in rows]
    templates = {r["template_id"]: r["template"] for r in rows}
    by_truth: dict[str, list[int]] = defaultdict(list)
    by_pred: dict[str, set[int]] = defaultdict(set)
    for i, (t, p) in enumerate(zip(truth, ids, strict=True)):
        by_truth[t].append(i)
        by_pred[p].add(i)
    for event, lines in by_truth.items():
        preds = sorted({ids[i] for i in lines})
        if len(preds) == 1 and by_pred[preds[0]] == set(lines):
            continue
        print(f"    {event} ({len(lines)} lines, first: {contents[lines[0]][:100]!r})")
        for p in preds[:5]:
            shared = sorted({truth[i] for i in by_pred[p]} - {event})
            print(f"      -> {templates[p][:100]!r}" + (f" also {shared[:6]}" if shared else ""))


SUFFIX = "_2k.log_structured.csv"


def find_samples(root: Path) -> dict[str, Path]:
    """``{system: file}`` of every ``<System>_2k.log_structured.csv`` under ``root``."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob(f"*{SUFFIX}")):
        system = path.name[: -len(SUFFIX)]
        if system in found:
            raise SystemExit(f"two samples of {system}: {found[system]} and {path}")
        found[system] = path
    order = {s: i for i, s in enumerate(SYSTEMS)}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def mine_with_cli(contents: list[str]) -> list[dict[str, str]]:
    """The rows ``aiops logs templates`` writes, run as a command."""
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.log", Path(tmp) / "out.csv"
        # A message holding a newline would shift the rows: keep one message a line.
        src.write_text("".join(c.replace("\n", " ") + "\n" for c in contents), encoding="utf-8")
        aiops = Path(sys.executable).with_name("aiops")
        cmd = [str(aiops)] if aiops.exists() else [sys.executable, "-m", "aiops.cli"]
        subprocess.run([*cmd, "logs", "templates", str(src), "--out", str(out)], check=True)
        with out.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    if len(rows) != len(contents):
        raise SystemExit(f"aiops logs templates wrote {len(rows)} rows for {len(contents)} lines")
    for r in rows:
        r["template_id"] = r["template_id"] or f"blank-{r['line']}"
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("AIOPS_LOGHUB_DIR"))
    ap.add_argument("--systems", default="", help="comma-separated names (default: all found)")
    ap.add_argument("--explain", action="store_true", help="list the events grouped wrongly")
    args = ap.parse_args()
    if not args.data:
        raise SystemExit("give --data DIR (or AIOPS_LOGHUB_DIR): a Loghub folder")
    root = Path(args.data)
    samples = find_samples(root)
    if not samples:
        raise SystemExit(f"no *{SUFFIX} file under {root}")
    wanted = [s for s in args.systems.split(",") if s] or list(samples)
    scores: dict[str, tuple[float, int]] = {}
    for system in wanted:
        path = samples.get(system)
        if path is None:
            print(f"{system:12s} missing (no {system}{SUFFIX} under {root})")
            continue
        contents, truth = read_structured(path)
        rows = mine_with_cli(contents)
        scores[system] = (grouping_accuracy(truth, [r["template_id"] for r in rows]), len(truth))
        print(f"{system:12s} {scores[system][0]:.3f}  ({len(truth)} lines)")
        if args.explain:
            explain(contents, truth, rows)
    if scores:
        mean = sum(a for a, _ in scores.values()) / len(scores)
        print(f"{'average':12s} {mean:.3f}  over {len(scores)} systems")


if __name__ == "__main__":
    main()
