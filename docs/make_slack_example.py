"""Make the Slack example of the README: docs/slack_message.json and docs/slack_chart.png.

Runs a seeded synthetic latency series through the engine (the default detector, a
rule with threshold 0.999), takes the alert it raises, and writes what the Slack
notifier would post for it (the ``chat.postMessage`` arguments) and the chart it would
upload. Usage::

    .venv/bin/python docs/make_slack_example.py [OUT_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from aiops.alerting.notify import Notification
from aiops.connectors.notifiers.slack import SlackNotifier
from aiops.connectors.notifiers.slack_chart import render_chart
from aiops.pipeline.engine import RuleRuntime, RuleSpec
from aiops.types import Batch, SeriesKey

#: 2026-01-01 00:00 UTC, one point a minute.
START = 1_767_225_600.0


def example(out: Path) -> tuple[Path, Path]:
    """Write the two files into ``out``; return their paths."""
    rule = RuleRuntime(
        RuleSpec(
            group="api",
            alert="HighLatency",
            source="prometheus",
            matches=lambda key: True,
            threshold=0.999,
            labels={"severity": "page", "team": "web"},
            annotations={"summary": "p99 latency of api on web-1 is far above its usual level"},
        )
    )
    rng = np.random.default_rng(7)
    n = 240
    minutes = np.arange(n)
    values = 0.180 + 0.015 * np.sin(2 * np.pi * minutes / 120) + rng.normal(0.0, 0.004, n)
    values[228:232] += np.array([0.05, 0.09, 0.11, 0.08])
    key = SeriesKey.of("http_request_duration_seconds:p99", {"host": "web-1", "job": "api"})
    batch = Batch(
        keys=[key],
        series=np.zeros(n, np.int64),
        timestamps=START + 60.0 * minutes,
        values=values,
    )
    firing = next(a for a in rule.process(batch).alerts if a.status == "firing")
    notifier = SlackNotifier(
        SlackNotifier.Config(
            token_env="SLACK_BOT_TOKEN",
            channel="C0123456789",
            generator_url="https://prometheus.example.com/graph?g0.expr={{ $series | urlquery }}",
            dashboard_url="https://grafana.example.com/d/api-latency?var-host={{ $labels.host }}",
        ),
        base_dir=out,
    )
    args = notifier.message_args(Notification("web-oncall", [firing]))
    out.mkdir(parents=True, exist_ok=True)
    message = out / "slack_message.json"
    message.write_text(json.dumps(args, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert firing.window is not None
    chart = out / "slack_chart.png"
    chart.write_bytes(render_chart(firing.window, title=f"{firing.alertname} {firing.series}"))
    return message, chart


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    for path in example(target):
        print(path)
