"""SIGKILL the daemon during delivery and restart it: every notification arrives, none twice
by mistake (the long version, 20 kills: bench/outbox_crash.py)."""

import pytest
from crash_harness import SlowWebhook, crash_run, run_to_end, write_workdir

from aiops.alerting.outbox import OUTBOX_FILE, Outbox

pytestmark = pytest.mark.slow


def test_kills_lose_nothing_and_resends_carry_the_same_key(tmp_path):
    with SlowWebhook() as reference:
        ref = run_to_end(write_workdir(tmp_path / "ref", reference.url + "/hook"))
        assert ref.returncode == 0, ref.stderr[-3000:]
    expected = set(reference.keys)
    assert len(expected) > 300

    with SlowWebhook() as hook:
        config = write_workdir(tmp_path / "crash", hook.url + "/hook")
        report = crash_run(
            config,
            kills=5,
            seed=11,
            # Each kill lands 0-0.8 s after the run first delivered something new.
            min_delay=0.0,
            max_delay=0.8,
            progress=lambda: sum(hook.keys.values()),
        )
        assert report.kills == 5
        assert report.final_rc == 0, report.final_stderr[-3000:]
    assert hook.errors == []
    assert set(hook.keys) == expected  # none lost, none invented
    assert hook.mismatched == []  # a re-delivery is the same document under the same key
    box = Outbox(tmp_path / "crash" / "state" / OUTBOX_FILE)
    assert box.stats() == {}  # nothing pending, nothing dead
    assert len(box.history(limit=10_000)) == len(expected)  # one row per key
