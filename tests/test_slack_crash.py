"""SIGKILL while sending to Slack: every alert gets one message and one resolution reply."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest
import slack_crash_child
from slack_stub import BOT_TOKEN, SlackStub

from aiops.alerting.notify import Alert, Notification
from aiops.alerting.outbox import encode_notification

ALERTS = 60
KILLS = 20


def _notifications() -> list[Notification]:
    out: list[Notification] = []
    t0 = 1_767_225_600.0
    for k in range(ALERTS):
        labels = {"alertname": f"Crash{k:02d}", "severity": "warning"}
        fp = f"{k:016x}"
        firing = Alert(fp, "firing", labels, {}, t0 + k, value=float(k), score=0.9999)
        out.append(Notification("team", [firing], group_labels={"alertname": labels["alertname"]}))
        if k >= 2:  # resolutions trail their firings, interleaved with later firings
            j = k - 2
            labels_j = {"alertname": f"Crash{j:02d}", "severity": "warning"}
            resolved = Alert(f"{j:016x}", "resolved", labels_j, {}, t0 + j, t0 + j + 60)
            out.append(
                Notification("team", [resolved], group_labels={"alertname": f"Crash{j:02d}"})
            )
    for j in (ALERTS - 2, ALERTS - 1):
        labels_j = {"alertname": f"Crash{j:02d}", "severity": "warning"}
        resolved = Alert(f"{j:016x}", "resolved", labels_j, {}, t0 + j, t0 + j + 60)
        out.append(Notification("team", [resolved], group_labels={"alertname": f"Crash{j:02d}"}))
    return out


@pytest.fixture(scope="module")
def forkserver() -> multiprocessing.context.BaseContext:
    # Each child is forked from a process that imported what it runs once (see
    # slack_crash_child). Python 3.11's forkserver does not apply the parent's sys.path,
    # so tests/ modules cannot be preloaded (an ImportError there is silently ignored):
    # the child imports slack_crash_child itself, in a millisecond, and the installed
    # modules it needs come preloaded.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["aiops.alerting.outbox", "aiops.connectors.notifiers.slack"])
    return ctx


def _child(
    ctx: multiprocessing.context.BaseContext, stub: SlackStub, tmp: Path
) -> multiprocessing.Process:
    args = (stub.api_url, str(tmp / "state"), str(tmp / "todo"), str(tmp / "done"), BOT_TOKEN)
    proc = ctx.Process(target=slack_crash_child.run, args=args)  # type: ignore[attr-defined]
    proc.start()
    return proc


@pytest.mark.slow
def test_sigkill_at_random_moments_posts_each_message_once(
    tmp_path: Path, forkserver: multiprocessing.context.BaseContext
) -> None:
    notes = _notifications()
    (tmp_path / "todo").write_text("".join(encode_notification(n) + "\n" for n in notes))
    rng = random.Random(20261203)
    killed_mid_run = 0
    with SlackStub() as stub:
        for _ in range(KILLS):
            sent_before = len(stub.requests)
            child = _child(forkserver, stub, tmp_path)
            # Kill only once it talks to Slack: a loaded machine can take longer to get
            # there than the random delay below, and a kill before that tests nothing.
            deadline = time.monotonic() + 30
            while len(stub.requests) == sent_before and child.is_alive():
                assert time.monotonic() < deadline, "the child never talked to Slack"
                time.sleep(0.005)
            child.join(rng.uniform(0.0, 0.1))
            if child.is_alive():
                assert child.pid is not None
                os.kill(child.pid, signal.SIGKILL)
                child.join()
                killed_mid_run += len(stub.requests) > sent_before
            else:
                break  # it finished before this kill
        final = _child(forkserver, stub, tmp_path)
        final.join(120)
        assert final.exitcode == 0, "the last run did not finish cleanly"
        assert killed_mid_run >= 10  # the kills did land while it was talking to Slack
        assert stub.violations == []
        top = stub.top_level()
        names = sorted(m.blocks[0]["text"]["text"].split("] ")[1] for m in top)
        assert names == [f"Crash{k:02d}" for k in range(ALERTS)]  # one message per alert
        for m in top:
            assert len(stub.replies(m.ts)) == 1, m.blocks[0]["text"]["text"]
            assert m.blocks[0]["text"]["text"].startswith(":white_check_mark: [RESOLVED]")
    done = (tmp_path / "done").read_text().split()
    assert sorted(set(done)) == sorted(n.idempotency_key for n in notes)
