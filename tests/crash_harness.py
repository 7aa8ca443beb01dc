"""SIGKILL the daemon at random moments while it delivers to a webhook; count what arrived.

Used by ``tests/test_outbox_crash.py`` (a few kills) and ``bench/outbox_crash.py`` (20).

The daemon replays a CSV of several series with a spike every ``every`` points, so
each spike is one firing and one resolved notification, to a webhook receiver that is
a :class:`http_stubs.WebhookStub` in this process, answering slowly enough that kills
land between sending and recording too. A reference run without kills gives the
expected idempotency keys.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from http_stubs import Answer, Request, WebhookStub

AIOPS = [sys.executable, "-m", "aiops.cli"]


class SlowWebhook(WebhookStub):
    """A webhook stub that takes ``delay`` seconds per request (a real endpoint's latency)."""

    def __init__(self, delay: float = 0.005) -> None:
        self.delay = delay
        super().__init__()

    def handle(self, req: Request) -> Answer:
        time.sleep(self.delay)
        return super().handle(req)


def write_workdir(
    root: Path,
    hook_url: str,
    *,
    series: int = 4,
    spikes: int = 60,
    every: int = 40,
    seed: int = 1,
    batch_size: int = 25,
    checkpoint_interval: str = "300ms",
) -> Path:
    """Data, rules, alerting and daemon config in ``root``; returns the config path."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = spikes * every + 60
    rows = ["timestamp,value,host"]
    for t in range(n):
        for s in range(series):
            v = 50.0 + rng.normal(0, 1)
            if t >= 60 and (t - 60 + 7 * s) % every == 0:
                v += 40.0
            rows.append(f"{1_700_000_000 + 60 * t},{v:.4f},h{s}")
    (root / "data.csv").write_text("\n".join(rows) + "\n")
    return write_setup(
        root,
        hook_url,
        detector="{type: robust_ewma, params: {warmup: 30, refractory: 0}}",
        threshold=0.999,
        batch_size=batch_size,
        checkpoint_interval=checkpoint_interval,
    )


def write_setup(
    root: Path,
    hook_url: str,
    *,
    detector: str,
    threshold: float,
    batch_size: int,
    checkpoint_interval: str,
) -> Path:
    """Rules (one Spike rule), alerting (to the webhook) and config for ``root/data.csv``."""
    (root / "rules.yaml").write_text(
        f"""groups:
  - name: crash
    rules:
      - alert: Spike
        source: data
        selector: load
        detector: {detector}
        threshold: {threshold}
        annotations: {{summary: 'spike on {{{{ $labels.host }}}}'}}
"""
    )
    (root / "alerting.yaml").write_text(
        f"""route:
  receiver: hook
  group_by: [alertname, host]
receivers:
  - name: hook
    webhook_configs:
      - url: {hook_url}
        timeout: 5s
"""
    )
    config = root / "aiops.yaml"
    config.write_text(
        f"""sources:
  data:
    type: file
    path: data.csv
    metric: load
    label_columns: [host]
    batch_size: {batch_size}
state:
  dir: state
  checkpoint_interval: {checkpoint_interval}
rule_files: [rules.yaml]
alerting_file: alerting.yaml
delivery: {{base_delay: 50ms, max_delay: 1s}}
"""
    )
    return config


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def run_to_end(config: Path, *, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """``aiops run --config CONFIG --once`` until it exits by itself."""
    return subprocess.run(
        [*AIOPS, "--log-level", "warning", "run", "--config", str(config), "--once"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )


@dataclass
class CrashReport:
    kills: int = 0
    runs: int = 0
    kill_times: list[float] = field(default_factory=list)
    final_rc: int | None = None
    final_stderr: str = ""


def crash_run(
    config: Path,
    kills: int,
    *,
    seed: int = 0,
    min_delay: float = 1.0,
    max_delay: float = 4.0,
    timeout: float = 600.0,
    progress: Callable[[], int] | None = None,
) -> CrashReport:
    """Start the daemon, SIGKILL it ``kills`` times at random moments, then let it finish.

    With ``progress`` (a count of what the receiver got so far), each kill waits until
    the run has delivered something new and then a random ``0 .. max_delay - min_delay``
    more: a loaded machine that starts slowly still gets killed mid-delivery, and a fast
    one does not finish the work before every kill landed.
    """
    rng = random.Random(seed)
    report = CrashReport()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = subprocess.Popen(
            [*AIOPS, "--log-level", "warning", "run", "--config", str(config), "--once"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        report.runs += 1
        if report.kills < kills:
            started = time.monotonic()
            if progress is None:
                wait = rng.uniform(min_delay, max_delay)
            else:
                before = progress()
                while progress() == before and proc.poll() is None:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the daemon delivered nothing")
                    time.sleep(0.01)
                wait = rng.uniform(0.0, max_delay - min_delay)
            delay = time.monotonic() - started + wait
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                report.kills += 1
                report.kill_times.append(round(delay, 3))
                continue
            # It finished before the kill: the data was all processed. Start it again
            # from scratch? No: the run is over; count fewer kills than asked.
            report.final_rc = proc.returncode
            report.final_stderr = proc.stderr.read() if proc.stderr else ""
            return report
        try:
            _, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        report.final_rc = proc.returncode
        report.final_stderr = err
        return report
    raise TimeoutError("crash run did not finish")
