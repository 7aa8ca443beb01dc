"""Masks of dotted class and package names: a constant's name stays part of the template."""

from __future__ import annotations

import pytest

from aiops.logs.mining import LogMiner


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("java.lang.ClassCastException: boom", "<CLASS>: boom"),
        ("at org.apache.hadoop.ipc.Server.run", "at <CLASS>"),
        ("app com.apple.cts.daily done", "app <CLASS> done"),
        # An UPPER_CASE segment names a constant (an intent action, an enum value).
        ("onReceive: android.intent.action.SCREEN_ON", "onReceive: <CLASS>.SCREEN_ON"),
        ("state com.example.Job.State.RUNNING", "state <CLASS>.RUNNING"),
    ],
)
def test_class_names_are_masked_up_to_a_constant(text, masked):
    assert LogMiner().mask(text) == masked


def test_lines_that_differ_in_a_constant_keep_their_templates_apart():
    m = LogMiner()
    on = m.add("onReceive action: android.intent.action.SCREEN_ON").cluster_id
    off = m.add("onReceive action: android.intent.action.SCREEN_OFF").cluster_id
    tick = m.add("processHandleBroadcastAction action:android.intent.action.TIME_TICK").cluster_id
    screen = m.add("processHandleBroadcastAction action:android.intent.action.SCREEN_ON")
    assert len({on, off, tick, screen.cluster_id}) == 4
    # Class names that differ still share one template.
    a = m.add("caught java.lang.IllegalStateException in worker").cluster_id
    b = m.add("caught java.io.IOException in worker").cluster_id
    assert a == b
