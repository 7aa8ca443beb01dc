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


def test_lines_whose_first_token_is_a_different_mask_share_a_template():
    # An address is a host name or an IP: masked as <HOST> or <IP>, the two lines would
    # sit in separate branches of Drain's prefix tree and never be compared.
    m = LogMiner()
    ids = {
        m.add("proxy.example.com:5070 open through proxy gw.example.com:5070 HTTPS").cluster_id,
        m.add("203.205.146.15:80 open through proxy gw.example.com:5070 HTTPS").cluster_id,
        m.add("www.example.org:443 open through proxy gw.example.com:5070 HTTPS").cluster_id,
    }
    assert len(ids) == 1
    assert m.template(ids.pop()) == "<*> open through proxy <HOST> HTTPS"


def test_a_masked_token_with_a_word_keeps_its_own_branch():
    # broadcast_<ID> and rdd_<NUM>_<NUM> name kinds of block: the broadcast blocks'
    # "stored as bytes" and "stored as values" lines and the rdd blocks' lines stay three
    # templates, as the tree keeps them without masks.
    m = LogMiner()
    lines = [
        "Block broadcast_9_piece0 stored as bytes in memory (estimated size 5.2 KB, free 5.2 KB)",
        "Block broadcast_9 stored as values in memory (estimated size 8.8 KB, free 14.0 KB)",
        "Block rdd_2_2 stored as bytes in memory (estimated size 850.0 B, free 320.3 KB)",
        "Block broadcast_8_piece0 stored as bytes in memory (estimated size 21.4 KB, free 35.4 KB)",
        "Block broadcast_8 stored as values in memory (estimated size 281.6 KB, free 317.0 KB)",
        "Block rdd_2_3 stored as bytes in memory (estimated size 930.0 B, free 321.2 KB)",
    ]
    ids = [m.add(x).cluster_id for x in lines]
    assert (ids[0], ids[1], ids[2]) == (ids[3], ids[4], ids[5])
    assert len(set(ids)) == 3


def test_a_restored_miner_routes_masked_tokens_as_it_did():
    m = LogMiner()
    a = m.add("10.0.0.1:80 open through proxy gw.example.com:5070 HTTPS").cluster_id
    m2 = LogMiner.from_state(m.state_dict())
    r = m2.add("cdn.example.net:443 open through proxy gw.example.com:5070 HTTPS")
    assert (r.cluster_id, r.created) == (a, False)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("cpus 0 1 2 3 online", "cpus <NUM> online"),
        ("cpus 7 online", "cpus <NUM> online"),
        ("peers 10.0.0.1 10.0.0.2 up", "peers <IP> up"),
        # Only whole tokens of one mask: a word or another mask between ends the run.
        ("fans ( 3552 3534 **** 3515 )", "fans ( <NUM> **** <NUM> )"),
        ("moved 3 KB 4 files", "moved <SIZE> <NUM> files"),
        ("from 10.0.0.1 12 times", "from <IP> <NUM> times"),
    ],
)
def test_a_run_of_one_mask_is_one_list(text, masked):
    assert LogMiner().mask(text) == masked


def test_lists_of_any_length_share_a_template_and_a_marked_value_keeps_its_own():
    m = LogMiner()
    plain = {m.add(f"Fan speeds ( {' '.join(['3552'] * k)} )").cluster_id for k in (3, 5, 6)}
    marked = m.add("Fan speeds ( 3552 3534 **** 3515 3479 )").cluster_id
    assert len(plain) == 1
    assert marked not in plain


def test_a_run_of_a_rule_files_mask_is_one_too():
    from aiops.logs.mining import Mask, Masker

    masker = Masker([Mask(r"req-\d+", "<REQ_ID>")])
    assert masker.mask("batch req-1 req-2 req-3 done") == "batch <REQ_ID> done"


def test_miners_sharing_a_masker_mine_as_miners_with_their_own():
    """The masker's shape cache (shared by miners) gives each miner what it masks alone."""
    from aiops.logs.mining import Masker, MinerSettings

    msgs = [
        f"job {i % 7} of user u{i % 3} took {i * 13 % 900}ms"
        + (f" request {(i + 1) * 7919:011x}f" if i % 4 == 0 else "")
        for i in range(400)
    ]
    shared = Masker()
    together = [LogMiner(MinerSettings(), shared) for _ in range(3)]
    alone = [LogMiner() for _ in range(3)]
    for k, m in enumerate(msgs):
        assert together[k % 3].add(m) == alone[k % 3].add(m)
        assert shared.mask(m) == alone[k % 3].mask(m)
        # A message with a hex id is masked afresh each time (unique), others from cache.
        assert shared.unique == (k % 4 == 0)
    assert [len(m) for m in together] == [len(m) for m in alone]
    assert shared._shapes  # the cache was used
    assert not any(b"request" in s for s in shared._shapes)  # not the unique shapes
