"""Make the ``aiops models`` examples of the README's "Model lifecycle" section.

Two seeded replays through a real daemon (``build_daemon``, file source, the default
detector), then the commands an operator would type, printed as they answer:

- ``OUT/fdemo``: a day of one-minute points replayed, then replayed again after the
  rule's detector settings changed (the ensemble's ``seed``): ``aiops models list`` and
  ``aiops models show``;
- ``OUT/fdrift``: three days whose level rises by 8 standard deviations at noon on the
  second, with ``drift: {on: [input]}`` and ``retrain: {every: 1d, on_drift: true}``,
  trainings inline (a replay this fast would end before a worker thread's result):
  ``aiops models show`` of the version the drift-triggered retrain made.

Usage::

    .venv/bin/python docs/make_models_example.py [OUT]   # OUT defaults to /tmp
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
from click.testing import CliRunner

from aiops.cli import cli
from aiops.config import load_config
from aiops.models.registry import ModelRegistry
from aiops.models.retrain import InlineExecutor
from aiops.service.app import build_daemon

#: 2026-12-01 00:00 UTC.
START = 1_796_083_200
RULE = "web/LatencyAnomaly"


def _write(directory: Path, values: np.ndarray, rule: dict[str, Any]) -> Path:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    rows = "".join(f"{START + 60 * i},{v:.4f}\n" for i, v in enumerate(values))
    (directory / "latency.csv").write_text("timestamp,value\n" + rows)
    write_rules(directory, rule)
    alerting = {
        "route": {"receiver": "file"},
        "receivers": [{"name": "file", "jsonl_configs": [{"path": "alerts.jsonl"}]}],
    }
    (directory / "alerting.yaml").write_text(json.dumps(alerting, indent=2))
    config = {
        # An hour of points a batch: a shadow hour after a retrain has data to score.
        "sources": {
            "csv": {"type": "file", "path": str(directory / "latency.csv"), "batch_size": 60}
        },
        "state": {"dir": "state"},
        "rule_files": ["rules.yaml"],
        "alerting_file": "alerting.yaml",
    }
    (directory / "aiops.yaml").write_text(json.dumps(config, indent=2))
    return directory / "aiops.yaml"


def write_rules(directory: Path, rule: dict[str, Any]) -> None:
    """The rule file: one group ``web`` with ``rule`` in it."""
    base = {"alert": "LatencyAnomaly", "source": "csv", "selector": "value"}
    doc = {"groups": [{"name": "web", "rules": [{**base, **rule}]}]}
    (directory / "rules.yaml").write_text(json.dumps(doc, indent=2))


def replay(config: Path, *, inline: bool = False) -> None:
    """``aiops run --once`` on ``config``, in this process."""
    loaded = load_config(config)
    daemon = build_daemon(loaded, state_dir=loaded.daemon.state.dir)
    if inline:
        daemon.retraining.executor = InlineExecutor()  # type: ignore[union-attr]
    daemon.run(threading.Event(), until_exhausted=True)


def command(directory: Path, *args: str) -> str:
    """``$ aiops ARGS`` run in ``directory``: the prompt line and the answer."""
    here = Path.cwd()
    os.chdir(directory)
    try:
        out = CliRunner().invoke(cli, list(args), catch_exceptions=False).output
    finally:
        os.chdir(here)
    return f"$ aiops {' '.join(args)}\n{out}"


def config_change(out: Path) -> str:
    """The first example: ``list`` and ``show`` after a detector configuration change."""
    rng = np.random.default_rng(3)
    config = _write(out / "fdemo", 50 + rng.normal(0, 1, 1440), {})
    replay(config)
    write_rules(config.parent, {"detector": {"type": "ensemble", "params": {"seed": 1}}})
    replay(config)
    return command(config.parent, "models", "list", "--config", "aiops.yaml") + command(
        config.parent, "models", "show", RULE, "--config", "aiops.yaml"
    )


def drift_retrain(out: Path) -> str:
    """The second example: ``show`` of the version a drift-triggered retrain made."""
    rng = np.random.default_rng(7)
    values = 50 + rng.normal(0, 1, 3 * 1440)
    values[1440 + 720 :] += 8
    rule = {"drift": {"on": ["input"]}, "retrain": {"every": "1d", "on_drift": True}}
    config = _write(out / "fdrift", values, rule)
    replay(config, inline=True)
    registry = ModelRegistry(config.parent / "state" / "models")
    drifted = [v.version for v in registry.versions(RULE) if v.trigger == "drift"]
    return command(config.parent, "models", "show", RULE, str(drifted[0]), "--state-dir", "state")


def main() -> None:
    """Print both examples."""
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp")
    print(config_change(out))
    print(drift_retrain(out))


if __name__ == "__main__":
    main()
