"""Reliability: SIGKILL the daemon 20 times during a 200,000-point replay with incidents.

A replay of 20 series x 10,000 points (one a minute) with 100 incidents goes through the
whole daemon (file source, the ewma_z detector, the outbox, a webhook receiver served
by this process). A reference run without kills gives the notifications an
uninterrupted run delivers, by idempotency key and document. The same replay, from an
empty state directory, is then killed with SIGKILL at 20 random moments (each after the
run has delivered a random share of what is left, plus a short random wait, so kills
land while points are scored, checkpoints written and notifications sent) and
restarted each time from its checkpoint until it ends by itself. Delivered, by the
end: exactly the reference's keys, none lost, none invented, and a key sent again (a
kill between sending and recording) carries the same document, which receivers
de-duplicate on.

Cheaper kills: ``aiops run`` as a fresh interpreter takes about a second to import
before it reads a byte, so 20 kills would spend most of the test starting up. Each run
is instead a process forked from a forkserver that imported the daemon once
(:mod:`multiprocessing`), calling what ``aiops run --once`` calls; SIGKILL ends it as
it would end ``aiops run``: nothing runs after it, no handler, no final checkpoint.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from crash_harness import SlowWebhook, write_setup
from reliability_child import run_once

pytestmark = pytest.mark.slow

SERIES, STEPS = 20, 10_000  # 200,000 points
INCIDENTS_PER_SERIES = 5
KILLS = 20
#: Each kill waits for new deliveries (a random share of those left), then up to this long.
MAX_EXTRA_WAIT = 0.05
T0 = 1_700_000_000


def write_replay(root: Path, hook_url: str, seed: int = 7) -> Path:
    """Data (a CSV of 200,000 points), rules, alerting and config; the config's path."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    values = 50.0 + rng.normal(0, 1, (STEPS, SERIES))
    for s in range(SERIES):
        # Incidents: 4 minutes 25 sigma up, spread over the replay after a warm-up.
        for at in rng.choice(np.arange(500, STEPS - 50, 100), INCIDENTS_PER_SERIES, False):
            values[at : at + 4, s] += 25.0
    times = T0 + 60 * np.arange(STEPS)
    with (root / "data.csv").open("w") as fh:
        fh.write("timestamp,value,host\n")
        for t in range(STEPS):
            fh.write("".join(f"{times[t]},{values[t, s]:.3f},h{s}\n" for s in range(SERIES)))
    return write_setup(
        root,
        hook_url,
        detector="{type: ewma_z}",
        threshold=0.99999,
        batch_size=2000,
        checkpoint_interval="200ms",
    )


@pytest.fixture(scope="module")
def forkserver() -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["reliability_child", "aiops.service.app", "numpy"])
    return ctx


def _start(ctx: multiprocessing.context.BaseContext, config: Path) -> multiprocessing.Process:
    proc = ctx.Process(target=run_once, args=(str(config),))  # type: ignore[attr-defined]
    proc.start()
    return proc


def test_twenty_sigkills_during_a_200000_point_replay_deliver_what_an_uninterrupted_run_does(
    tmp_path, forkserver
):
    with SlowWebhook(delay=0.002) as reference:
        config = write_replay(tmp_path / "ref", reference.url + "/hook")
        started = time.monotonic()
        proc = _start(forkserver, config)
        proc.join(120)
        assert proc.exitcode == 0
        took = time.monotonic() - started
    expected = dict(reference.bodies)
    assert reference.errors == []
    assert len(expected) >= 2 * SERIES * INCIDENTS_PER_SERIES * 0.9  # fired and resolved

    rng = random.Random(3)
    kill_at: list[tuple[int, int]] = []  # (deliveries so far, run) at each kill
    with SlowWebhook(delay=0.002) as hook:
        config = write_replay(tmp_path / "crash", hook.url + "/hook")
        deadline = time.monotonic() + 240
        runs = 0
        while True:
            proc = _start(forkserver, config)
            runs += 1
            if len(kill_at) == KILLS:
                proc.join(max(1.0, deadline - time.monotonic()))
                assert proc.exitcode == 0, "the last run did not finish cleanly"
                break
            # Kill once this run has delivered a random share of what is left, so the
            # kills spread over the whole replay however fast this machine is.
            seen = len(hook.keys)
            share = (len(expected) - seen) // (KILLS - len(kill_at) + 1)
            target = seen + rng.randint(1, max(1, share))
            while len(hook.keys) < target and proc.is_alive():
                assert time.monotonic() < deadline, "no delivery after a restart"
                time.sleep(0.002)
            proc.join(rng.uniform(0.0, MAX_EXTRA_WAIT))
            if not proc.is_alive():
                break  # the replay ended before every kill landed: fewer kills
            os.kill(proc.pid, signal.SIGKILL)
            proc.join()
            kill_at.append((sum(hook.keys.values()), runs))
    print(f"reference {len(expected)} in {took:.1f} s; kills at {kill_at}")
    assert hook.errors == []
    assert len(kill_at) == KILLS, f"the replay ended after {len(kill_at)} kills"
    # The kills spread over the replay, not all at its start.
    assert kill_at[-1][0] > len(expected) // 4, kill_at
    assert set(hook.keys) == set(expected)  # none lost, none invented
    assert hook.mismatched == []  # a key sent again carried the same document
    assert all(hook.bodies[key] == body for key, body in expected.items())
    resent = sum(n - 1 for n in hook.keys.values())
    print(f"{len(expected)} notifications, {runs} runs, kills at {kill_at}, {resent} resent")
