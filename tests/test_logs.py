"""Log template mining, log rules, the followed log file, journald, alert context."""

import dataclasses
import itertools
import json
import operator
import os
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from aiops.alerting.notify import Alert
from aiops.alerting.routing import Dispatcher, RouteNode, Router
from aiops.config.models import RuleFile
from aiops.connectors.formats import create_decoder
from aiops.connectors.sources.logfile import LogFileSource
from aiops.logs.mining import STATE_VERSION, LogMiner, Mask, Masker, MinerSettings
from aiops.logs.rules import LogEngine, log_rule_specs
from aiops.pipeline.engine import Engine, RuleSpec
from aiops.service.daemon import Daemon
from aiops.state.checkpoint import Checkpointer
from aiops.state.envelope import FileStateStore
from aiops.testing import FakeClock, ListNotifier
from aiops.types import Batch, LogRecord, SeriesKey

# -- masking and mining -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("from 10.1.2.3:8080 ok", "from <IP> ok"),
        ("peer fe80::1ff:fe23:4567:890a down", "peer <IP> down"),
        ("req 123e4567-e89b-12d3-a456-426614174000", "req <UUID>"),
        ("obj 0x7f3a and 9f86d081884c7d65", "obj <HEX> and <HEX>"),
        ("open /var/lib/app/data.db", "open <PATH>"),
        ("took 350ms then 1h2m", "took <DURATION> then <DURATION>"),
        ("to ops@example.com via https://x.example/a?b=1", "to <EMAIL> via <URL>"),
        ("at 2024-05-01T12:00:00Z, 12:30:45", "at <TIME>, <TIME>"),
        ("retry 3 of 5", "retry <NUM> of <NUM>"),
        ("blk_-1608 replica", "blk_<NUM> replica"),
        ("rhost=10.0.0.7 user=root ws=null,uid=0", "rhost=<*> user=<*> ws=<*>,uid=<*>"),
        ('acquire tag="View Lock", name=x', "acquire tag=<*>, name=<*>"),
        ("proxy.cse.example.edu:5070 open", "<HOST> open"),
        ("10.0.0.1,10.0.0.2 GET", "<IP> GET"),
        ("sent 18846 bytes (18.4 KB), used 2560MB", "sent <SIZE>, used <SIZE>"),
        ("took 160 ms, lifetime <1 sec", "took <DURATION>, lifetime <DURATION>"),
        ("queue jA9J1UvC004306 task_1445_0020_m_000001", "queue <ID> task_<ID>"),
        ("rdd_2_0 on en0", "rdd_<NUM>_<NUM> on en<NUM>"),
        ('level=ERROR msg="db down" uid=3', "level=ERROR msg=<*> uid=<*>"),  # a level stays
    ],
)
def test_default_masks(text, masked):
    assert Masker().mask(text) == masked


def test_custom_masks_come_first_and_a_bad_regex_is_named():
    m = Masker([Mask(r"(ord|inv)-\w+", "<DOC>")])
    assert m.mask("ord-77a paid 12") == "<DOC> paid <NUM>"
    with pytest.raises(ValueError, match=r"mask 1 \('\(x'\): invalid regex"):
        Masker([Mask("(x", "<X>")])


def test_miner_state_is_json_and_resumes_exactly():
    rng = np.random.default_rng(1)
    lines = [
        f"{rng.choice(['GET', 'PUT'])} /api/{rng.integers(9)} from 10.0.0.{rng.integers(255)} "
        f"in {rng.integers(900)}ms status {rng.choice([200, 500])} user u{rng.integers(50)}"
        for _ in range(400)
    ] + [f"worker {i} {w} restarted" for i in range(50) for w in ("cleanly", "after crash")]
    rng.shuffle(lines)
    whole = LogMiner()
    expected = whole.add_many(lines)
    first = LogMiner()
    got = first.add_many(lines[:250])
    state = json.loads(json.dumps(first.state_dict()))  # plain JSON, no pickle
    second = LogMiner.from_state(state)
    got += second.add_many(lines[250:])
    assert got == expected
    assert second.state_dict() == whole.state_dict()


def test_miner_refuses_unknown_state():
    state = LogMiner().state_dict()
    with pytest.raises(ValueError, match="version 99 is not 2"):
        LogMiner.from_state({**state, "version": 99})
    with pytest.raises(ValueError, match="invalid miner state"):
        LogMiner.from_state({**state, "clusters": [["x"]]})


# -- log rules ----------------------------------------------------------------------------

RULES = {
    "groups": [
        {
            "name": "logs",
            "rules": [
                {
                    "alert": "NewLogTemplate",
                    "source": "logs",
                    "log": {"type": "new_template", "learn_for": "1h", "max_alerts": 2},
                },
                {
                    "alert": "ErrorBurst",
                    "source": "logs",
                    "log": {"type": "error_burst", "interval": "1m"},
                    "detector": {"type": "ewma_z", "params": {"warmup": 30}},
                    "threshold": 0.999,
                },
            ],
        }
    ]
}
START = 28_333_333 * 60.0  # a whole minute
NEW_AT, BURST_AT = 120, 150  # minutes
NEW_LINE = "ERROR payment gateway timeout after {n}ms for order {o}"


def stream(minutes=180, seed=7, service="payments"):
    """Per minute: normal traffic, a rare known error; a new error template; a burst."""
    rng = np.random.default_rng(seed)
    per_minute = []
    for m in range(minutes):
        recs = []
        t0 = START + m * 60
        for _ in range(int(rng.poisson(20))):
            recs.append(f"GET /orders/{rng.integers(1000)} 200 in {rng.integers(5, 90)}ms")
        for _ in range(int(rng.poisson(5))):
            recs.append(f"user {rng.integers(500)} logged in from 10.0.{rng.integers(9)}.7")
        n_err = int(rng.poisson(1)) + (150 if BURST_AT <= m < BURST_AT + 2 else 0)
        recs += [f"ERROR db connection reset by peer id={rng.integers(1e6)}"] * n_err
        if m == NEW_AT:
            recs.append(NEW_LINE.format(n=rng.integers(900), o=rng.integers(1e5)))
        ts = t0 + np.sort(rng.uniform(0, 60, len(recs)))
        per_minute.append(
            [LogRecord(float(t), r, (("service", service),)) for t, r in zip(ts, recs, strict=True)]
        )
    return per_minute


_TS = operator.attrgetter("timestamp")


def log_engine():
    return LogEngine(log_rule_specs(RuleFile.model_validate(RULES).groups))


def test_a_new_error_template_and_an_error_burst_give_two_alerts():
    engine = Engine([], logs=log_engine())
    alerts = []
    for recs in stream():
        alerts += engine.process("logs", Batch(logs=recs))
    firing = [a for a in alerts if a.status == "firing"]
    assert [a.alertname for a in firing] == ["NewLogTemplate", "ErrorBurst"]
    new, burst = firing
    assert new.labels["service"] == "payments"
    assert new.annotations["template"] == (
        "ERROR payment gateway timeout after <DURATION> for order <NUM>"
    )
    assert new.annotations["examples"].startswith("ERROR payment gateway timeout")
    assert START + NEW_AT * 60 <= new.starts_at < START + (NEW_AT + 1) * 60
    assert burst.starts_at == START + (BURST_AT + 1) * 60  # the end of the burst's minute
    assert burst.value >= 150
    assert "ERROR db connection reset" in burst.annotations["examples"]
    resolved = [a.alertname for a in alerts if a.status == "resolved"]
    assert "NewLogTemplate" in resolved


def test_new_templates_are_rate_limited_per_partition():
    engine = LogEngine(log_rule_specs(RuleFile.model_validate(RULES).groups[:1]))
    recs = [LogRecord(START, "boot ok", (("service", "a"),))]
    recs += [
        LogRecord(START + 4000 + i, f"deploy step {w} finished", (("service", "a"),))
        for i, w in enumerate(["alpha", "bravo", "charlie", "delta", "echo"])
    ]
    # Distinct first words: five new templates in one minute of one deploy.
    recs = [recs[0]] + [
        LogRecord(r.timestamp, f"{w} {r.message}", r.labels)
        for w, r in zip(["init", "copy", "link", "warm", "swap"], recs[1:], strict=True)
    ]
    alerts = engine.process("logs", Batch(logs=recs))
    assert len(alerts) == 2  # max_alerts: 2 per 10m
    rule = engine.rules["logs/NewLogTemplate"]
    assert rule.suppressed == 3


def metric_alerts_with_log_context() -> list[Alert]:
    """The firing alerts of a latency rule whose service's logs burst (``stream()``)."""
    spec = RuleSpec(
        group="m",
        alert="Latency",
        source="metrics",
        matches=lambda k: True,
        detector_type="ewma_z",
        detector_params={"warmup": 30},
        threshold=0.999,
    )
    engine = Engine([spec], logs=log_engine())
    key = SeriesKey.of("latency", {"service": "payments"})
    rng = np.random.default_rng(3)
    metric_alerts = []
    for m, recs in enumerate(stream()):
        engine.process("logs", Batch(logs=recs))
        v = 50 + rng.normal(0, 1) + (40 if BURST_AT + 1 <= m < BURST_AT + 4 else 0)
        batch = Batch.from_points([(key, START + m * 60 + 59, v)])
        metric_alerts += [a for a in engine.process("metrics", batch) if a.status == "firing"]
    return metric_alerts


def test_a_metric_alert_carries_the_log_templates_of_its_service():
    metric_alerts = metric_alerts_with_log_context()
    assert len(metric_alerts) == 1
    context = metric_alerts[0].annotations["log_templates"]
    assert "error burst" in context
    assert "ERROR db connection reset" in context


# -- daemon restart over a followed file ----------------------------------------------


def write_jsonl(path, recs, mode="a"):
    with open(path, mode) as fh:
        for r in recs:
            fh.write(
                json.dumps({"message": r.message, "timestamp": r.timestamp, "service": "payments"})
                + "\n"
            )


def make_daemon(tmp_path, path):
    cfg = LogFileSource.Config(
        path=str(path),
        format="log_json",
        format_settings={"label_fields": {"service": "service"}},
    )
    daemon = Daemon(
        sources=lambda pos: {"logs": LogFileSource("logs", cfg, resume=pos.get("logs"))},
        engine=Engine([], logs=log_engine()),
        router=Router(RouteNode("r")),
        dispatcher=Dispatcher({"r": [ListNotifier()]}),
        checkpointer=Checkpointer(FileStateStore(tmp_path / "state")),
        checkpoint_interval=1e9,
        clock=FakeClock(),
    )
    seen = []
    process = daemon.engine.process

    def recording(sid, batch):
        out = process(sid, batch)
        seen.extend((a.alertname, a.status, a.starts_at) for a in out)
        return out

    daemon.engine.process = recording
    return daemon, seen


def drain(daemon):
    while daemon.step():
        pass


def test_restart_resumes_the_file_and_the_miner_without_alerting_again(tmp_path):
    minutes = stream()
    whole_path = tmp_path / "whole.log"
    write_jsonl(whole_path, [r for m in minutes for r in m])
    whole, expected = make_daemon(tmp_path / "a", whole_path)
    whole.start()
    drain(whole)
    whole.shutdown()
    assert ("NewLogTemplate", "firing") in {(a, s) for a, s, _ in expected}

    path = tmp_path / "app.log"
    write_jsonl(path, [r for m in minutes[: NEW_AT + 5] for r in m])
    first, seen = make_daemon(tmp_path / "b", path)
    first.start()
    drain(first)
    first.shutdown()  # final checkpoint: file position, miners, rule states
    write_jsonl(path, [r for m in minutes[NEW_AT + 5 :] for r in m])
    second, seen2 = make_daemon(tmp_path / "b", path)
    second.start()
    drain(second)
    second.shutdown()
    assert sorted(seen + seen2) == sorted(expected)
    assert [a for a, s, _ in seen2 if s == "firing"] == ["ErrorBurst"]  # no second new one


# -- the followed file ------------------------------------------------------------------


def lines(n, start=0, prefix="line"):
    return "".join(f"{prefix} {i}\n" for i in range(start, start + n))


def messages(src):
    out = []
    for _ in range(10):
        out += [r.message for r in src.next_batch().logs]
    return out


def test_rotation_by_rename_loses_no_line(tmp_path):
    path = tmp_path / "app.log"
    path.write_text(lines(5))
    src = LogFileSource("f", LogFileSource.Config(path=str(path), batch_size=3))
    got = messages(src)
    with open(path, "a") as fh:  # the writer appends before it reopens the log
        fh.write(lines(2, 5))
    os.rename(path, tmp_path / "app.log.1")
    with open(tmp_path / "app.log.1", "a") as fh:
        fh.write(lines(1, 7))
    path.write_text(lines(4, 8))
    got += messages(src)
    assert got == [f"line {i}" for i in range(12)]


def test_restart_across_a_rotation_finishes_the_renamed_file_first(tmp_path):
    path = tmp_path / "app.log"
    path.write_text(lines(3))
    src = LogFileSource("f", LogFileSource.Config(path=str(path)))
    got = messages(src)
    pos = src.snapshot()
    src.close()
    with open(path, "a") as fh:
        fh.write(lines(2, 3))
    os.rename(path, tmp_path / "app.log.1")
    path.write_text(lines(2, 5))
    src = LogFileSource("f", LogFileSource.Config(path=str(path)), resume=pos)
    got += messages(src)
    assert got == [f"line {i}" for i in range(7)]


def test_truncation_is_reported_and_reading_restarts(tmp_path):
    path = tmp_path / "app.log"
    path.write_text(lines(4))
    src = LogFileSource("f", LogFileSource.Config(path=str(path)))
    assert len(src.next_batch().logs) == 4
    with open(path, "w") as fh:  # copytruncate
        fh.write(lines(2, 10))
    batch = src.next_batch()
    assert [r.reason for r in batch.rejects] == ["file_truncated"]
    assert [r.message for r in batch.logs] == ["line 10", "line 11"]


def test_a_file_truncated_and_written_past_the_position_is_read_from_its_start(tmp_path):
    path = tmp_path / "app.log"
    path.write_text(lines(4))
    src = LogFileSource("f", LogFileSource.Config(path=str(path)))
    assert len(src.next_batch().logs) == 4
    with open(path, "w") as fh:  # copytruncate, then more lines than before the next poll
        fh.write(lines(6, 10, prefix="new"))
    batch = src.next_batch()
    assert [r.reason for r in batch.rejects] == ["file_truncated"]
    assert "changed: truncated and written again" in batch.rejects[0].detail
    assert [r.message for r in batch.logs] == [f"new {i}" for i in range(10, 16)]
    with open(path, "a") as fh:  # plain appends go on as before
        fh.write(lines(2, 16, prefix="new"))
    batch = src.next_batch()
    assert not batch.rejects
    assert [r.message for r in batch.logs] == ["new 16", "new 17"]


def test_a_restart_after_truncation_and_new_lines_reads_them_all(tmp_path):
    path = tmp_path / "app.log"
    path.write_text(lines(4))
    src = LogFileSource("f", LogFileSource.Config(path=str(path)))
    src.next_batch()
    pos = src.snapshot()
    src.close()
    with open(path, "w") as fh:  # truncated and rewritten while the daemon was stopped
        fh.write(lines(5, 20, prefix="after"))
    again = LogFileSource("f", LogFileSource.Config(path=str(path)), resume=pos)
    batch = again.next_batch()
    assert [r.reason for r in batch.rejects] == ["file_truncated"]
    assert [r.message for r in batch.logs] == [f"after {i}" for i in range(20, 25)]
    # A position saved before positions had a mark still resumes where it was.
    old = {k: v for k, v in pos.items() if k != "mark"}
    path.write_text(lines(4) + lines(1, 4))
    resumed = LogFileSource("f", LogFileSource.Config(path=str(path)), resume=old)
    assert [r.message for r in resumed.next_batch().logs] == ["line 4"]


def test_a_partial_last_line_waits_for_its_newline(tmp_path):
    path = tmp_path / "app.log"
    path.write_text("one\ntw")
    src = LogFileSource("f", LogFileSource.Config(path=str(path)))
    assert [r.message for r in src.next_batch().logs] == ["one"]
    with open(path, "a") as fh:
        fh.write("o\n")
    assert [r.message for r in src.next_batch().logs] == ["two"]


# -- journald ----------------------------------------------------------------------------


def test_journald_json_with_byte_array_messages_and_bad_lines(tmp_path):
    path = tmp_path / "journal.json"
    entries = [
        {
            "MESSAGE": "Started nginx",
            "PRIORITY": "6",
            "_SYSTEMD_UNIT": "nginx.service",
            "_HOSTNAME": "web-1",
            "__REALTIME_TIMESTAMP": "1700000000000001",
        },
        {"MESSAGE": list(b"caf\xc3\xa9 \x1b[31merr"), "PRIORITY": 3, "SYSLOG_IDENTIFIER": "app"},
    ]
    text = "".join(json.dumps(e) + "\n" for e in entries)
    text += '{"MESSAGE": null}\n[1, 2]\nnot json\n{"MESSAGE": [300]}\n'
    path.write_text(text)
    src = LogFileSource("j", LogFileSource.Config(path=str(path), format="journald"))
    batch = src.next_batch()
    assert [r.message for r in batch.logs] == ["Started nginx", "café \x1b[31merr"]
    assert batch.logs[0].timestamp == 1700000000.000001
    assert dict(batch.logs[0].labels) == {
        "host": "web-1",
        "level": "info",
        "service": "nginx",
        "unit": "nginx.service",
    }
    assert dict(batch.logs[1].labels) == {"level": "err", "service": "app"}
    assert [(r.reason, r.origin) for r in batch.rejects] == [
        ("missing_field", f"{path}:3"),
        ("bad_shape", f"{path}:4"),
        ("bad_json", f"{path}:5"),
        ("bad_value", f"{path}:6"),
    ]
    assert batch.rejects[2].raw == b"not json"


def test_journald_decoder_is_a_registered_format():
    out = create_decoder("journald").decode(b'{"MESSAGE": "x"}', timestamp=5.0)
    assert out.logs[0].timestamp == 5.0


# -- rule file validation -----------------------------------------------------------------


def rule(**extra):
    return {"groups": [{"name": "g", "rules": [{"alert": "A", "source": "logs", **extra}]}]}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"log": {"type": "new_template"}, "threshold": 0.99}, '"threshold" does not apply'),
        ({"log": {"type": "error_burst", "learn_for": "1h"}}, '"learn_for" does not apply'),
        ({"log": {"type": "template_rate", "levels": ["err"]}}, '"levels" does not apply'),
        ({"log": {"type": "nope"}}, "new_template"),
        ({"log": {"type": "error_burst", "pattern": "(x"}}, "invalid regular expression"),
        (
            {"log": {"type": "new_template", "mining": {"masks": [{"regex": "[", "mask": "<X>"}]}}},
            "invalid regular expression",
        ),
        ({"log": {"type": "new_template"}, "query": "up"}, 'takes no "query"'),
    ],
)
def test_log_rule_validation(extra, message):
    with pytest.raises(ValueError, match=message):
        RuleFile.model_validate(rule(**extra))


def test_log_rule_defaults():
    lr = RuleFile.model_validate(rule(log={"type": "template_rate"})).groups[0].rules[0].log
    assert (lr.interval, lr.partition_by, lr.mining.sim_th) == (60.0, ("service",), 0.7)
    assert (MinerSettings().depth, MinerSettings().sim_th) == (lr.mining.depth, 0.7)


def test_without_drain3_building_a_miner_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "drain3", None)
    monkeypatch.setitem(sys.modules, "drain3.drain", None)
    Engine([])  # no log rules: no miner, no Drain3 needed
    with pytest.raises(ImportError, match=r"aiopsd\[logs\]"):
        LogMiner()


def test_the_hex_and_uuid_shortcut_masks_as_the_regex_does():
    rng = np.random.default_rng(5)
    hexc = list("0123456789abcdefABCDEF")
    toks = ["".join(rng.choice(hexc, rng.integers(4, 20))) for _ in range(3000)]
    toks += ["-".join("".join(rng.choice(hexc, k)) for k in (8, 4, 4, 4, 12)) for _ in range(1000)]
    toks += ["0" * 12, "deadbeef", "0-0-0-0-0", "12345678-1234-1234-1234-1234567890ab-x"]
    fast, slow = Masker(), Masker()
    for tok in toks:
        shape = slow.shape(tok).decode()
        assert fast._token(shape, fast._builtin) == slow._builtin.sub(slow._replace, shape), tok


def test_interleaved_streams_alert_as_each_stream_alone():
    a, b = stream(service="a"), stream(service="b", seed=8)

    def run(minutes):
        engine = Engine([], logs=log_engine())
        out = []
        for recs in minutes:
            out += engine.process("logs", Batch(logs=recs))
        return {(x.alertname, x.status, x.labels["service"], x.starts_at) for x in out}

    mixed = [sorted(x + y, key=lambda r: r.timestamp) for x, y in zip(a, b, strict=True)]
    alone = run(a) | run(b)
    assert run(mixed) == alone
    assert {s for _, _, s, _ in alone} == {"a", "b"}


@pytest.mark.parametrize("hosts", [False, True])  # two hosts: streams share partitions
def test_batches_of_several_streams_count_as_record_by_partition(monkeypatch, hosts):
    """Mining and counting stream by stream gives the alerts and states of the path keyed
    by partition (which the batches of several streams of one partition take)."""
    from aiops.logs import rules as rules_module

    doc = json.loads(json.dumps(RULES))
    doc["groups"][0]["rules"].append(
        {
            "alert": "TemplateRate",
            "source": "logs",
            "log": {"type": "template_rate", "interval": "1m", "examples": 3},
            "detector": {"type": "ewma_z", "params": {"warmup": 30}},
            "threshold": 0.99,
        }
    )
    specs = log_rule_specs(RuleFile.model_validate(doc).groups)
    minutes = zip(*(stream(service=s, seed=i) for i, s in enumerate("abc")), strict=True)
    recs = sorted((r for minute in minutes for part in minute for r in part), key=_TS)
    if hosts:
        recs = [
            LogRecord(r.timestamp, r.message, (*r.labels, ("x", str(i % 2))))
            for i, r in enumerate(recs)
        ]
    rng = np.random.default_rng(3)
    cuts = np.cumsum(rng.integers(1, 400, len(recs))).tolist()
    batches = [recs[a:b] for a, b in itertools.pairwise([0, *cuts]) if a < len(recs)]

    def run():
        engine = LogEngine(specs)
        alerts = [a for b in batches for a in engine.process("logs", Batch(logs=b))]
        return alerts, engine.state_dict()

    taken = []
    streams = rules_module._streams
    monkeypatch.setattr(rules_module, "_streams", lambda *a: taken.append(1) or streams(*a))
    fast = run()
    assert taken
    assert len(taken) < len(batches)  # one-stream batches take the other path
    monkeypatch.setattr(rules_module, "_streams", lambda *a: None)
    slow = run()
    assert repr(fast) == repr(slow)  # (an alert's window may hold NaN)
    names = {a.alertname for a in fast[0] if a.status == "firing"}
    assert {"NewLogTemplate", "ErrorBurst", "TemplateRate"} <= names


@pytest.mark.parametrize("n", [3, 100])  # few streams or many: found two ways
def test_streams_of_a_batch_are_numbered_by_first_record(n):
    from aiops.logs.rules import _streams

    miners = [LogMiner() for _ in range(n)]
    hits = [([], (("p", str(i)),), miners[i], None, True) for i in range(n)]
    order = [(7 * i) % n for i in range(5 * n)]
    routes = [hits[k] for k in order]
    codes, streams = _streams([(("l", str(k)),) for k in order], routes, list(map(id, routes)))
    firsts = list(dict.fromkeys(order))
    assert [s[1] for s in streams] == [(("l", str(k)),) for k in firsts]
    assert [s[2] for s in streams] == [miners[k] for k in firsts]
    assert codes.tolist() == [firsts.index(k) for k in order]
    shared = [hits[0], (*hits[1][:2], miners[0], None, True)]  # two streams, one miner
    assert _streams([(("l", "0"),), (("l", "1"),)], shared, list(map(id, shared))) is None


@hsettings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([0, 1, 5, 80, 3000, 70_000]), max_size=300),
    st.sampled_from([1, 2, 7, 100, 1000]),
    st.booleans(),
)
def test_a_block_is_batch_size_complete_lines(tmp_path_factory, lengths, batch_size, partial):
    """_read_block ends after the batch_size-th newline (or the last), whatever the lines."""
    path = tmp_path_factory.mktemp("blocks") / "app.log"
    data = b"".join(b"x" * n + b"\n" for n in lengths) + (b"tail" if partial else b"")
    path.write_bytes(data)
    src = LogFileSource("f", LogFileSource.Config(path=str(path), batch_size=batch_size))
    with path.open("rb") as fh:
        block, newlines = src._read_block(fh, 0)
    rest = data.split(b"\n", batch_size)[-1]
    assert block == data[: len(data) - len(rest)]
    assert block.count(b"\n") == newlines == min(batch_size, len(lengths))
    assert block.endswith(b"\n") or not block
    assert data.startswith(block)
    src.close()


@hsettings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from([b'{"message": "a"}', b"{", b"", b" ", b"x", b' {"m": 1}', b"{}"]),
        min_size=1,
        max_size=40,
    ),
    st.integers(0, 3),
)
def test_a_json_block_is_one_array_only_when_every_line_starts_an_object(lines, polls):
    """The array of a log_json block is its lines joined by commas, or None (split them)."""
    src = LogFileSource("f", LogFileSource.Config(path="x.jsonl", format="log_json"))
    block = b"".join(x + b"\n" for x in lines)
    for _ in range(polls):  # the scratch buffers hold an earlier block's bytes
        src._scratch.json_array(b'{"other": "block", "longer": 1}\n' * 3)
    got = src._scratch.json_array(block)
    if all(x.startswith(b"{") for x in lines):
        assert got == (b"[" + b",".join(lines) + b"]", len(lines))
    else:
        assert got is None


def test_a_line_over_max_line_bytes_is_cut_and_reported(tmp_path):
    path = tmp_path / "app.log"
    path.write_text("short\n" + "x" * 100 + "\nafter\n")
    src = LogFileSource("f", LogFileSource.Config(path=str(path), max_line_bytes=64))
    batch = src.next_batch()
    assert [len(r.message) for r in batch.logs] == [5, 64, 5]
    assert [(r.reason, r.origin) for r in batch.rejects] == [("line_too_long", f"{path}:2")]
    assert src.snapshot()["line"] == 3


def test_add_batch_mines_as_one_message_at_a_time():
    rng = np.random.default_rng(2)
    words = ["alpha", "beta", "gamma", "delta"]
    msgs = [
        f"{rng.choice(words)} job {rng.integers(99)} took {rng.integers(900)}ms id "
        f"{int(rng.integers(2**40)):x}" + (" retry" if rng.random() < 0.3 else "")
        for _ in range(3000)
    ]
    one, many = LogMiner(), LogMiner()
    expected = [tuple(one.add(m)) for m in msgs]
    got = []
    for i in range(0, len(msgs), 250):
        cids, created = many.add_batch(msgs[i : i + 250])
        got += list(zip(cids, created, strict=True))
    assert got == expected
    assert many.state_dict() == one.state_dict()
    assert any(c for _, c in got)


def test_slack_messages_show_the_template_examples_and_log_context():
    from slack_stub import block_kit_problem

    from aiops.alerting.notify import Notification
    from aiops.connectors.notifiers.slack import build_message

    engine = Engine([], logs=log_engine())
    alerts = []
    for recs in stream():
        alerts += engine.process("logs", Batch(logs=recs))
    new = next(a for a in alerts if a.alertname == "NewLogTemplate")
    _, blocks = build_message(Notification("team", [new]), buttons=False)
    assert block_kit_problem(blocks) == ""
    text = json.dumps(blocks)
    assert "*Template*" in text
    assert "ERROR payment gateway timeout after <DURATION> for order <NUM>" in text
    assert "*Example lines*" in text


@pytest.mark.parametrize(
    "line",
    [
        '{"message": "x"},{"message": "y"}',  # two values on one line
        '[{"message": "x"}, {"message": "y"}]',  # an array of events: kept, line by line
        '{"message": "x"}],[{"message": "y"}',
        "not json",
        "{",  # an object over two lines
        '{"message": "z"}  ',
        '{"message": "z"} {',
    ],
)
@pytest.mark.parametrize("blank", [True, False])  # without blank lines: no split of the block
def test_log_json_lines_decoded_in_one_parse_give_what_line_by_line_gives(tmp_path, line, blank):
    path = tmp_path / "app.jsonl"
    good = [json.dumps({"message": f"m{i}", "timestamp": i}) for i in range(3)]
    path.write_text("\n".join([good[0], line, good[1], *[""] * blank, good[2]]) + "\n")
    decoder = create_decoder("log_json")
    expected = []
    reasons = []
    for n, raw in enumerate(path.read_bytes().split(b"\n")[:-1], 1):
        if raw.strip():
            out = decoder.decode(raw, origin=f"{path}:{n}", timestamp=0.0)
            expected += [r.message for r in out.logs]
            reasons += [(r.reason, r.origin) for r in out.rejects]
    batch = LogFileSource("f", LogFileSource.Config(path=str(path), format="log_json")).next_batch()
    assert [r.message for r in batch.logs] == expected
    assert [(r.reason, r.origin) for r in batch.rejects] == reasons


def test_stdin_is_read_without_blocking_and_partial_lines_wait(monkeypatch):
    import types

    r, w = os.pipe()
    reader = os.fdopen(r, "rb", buffering=0)
    monkeypatch.setattr("sys.stdin", types.SimpleNamespace(buffer=reader))
    src = LogFileSource("in", LogFileSource.Config(path="-", format="journald"))
    try:
        assert not src.next_batch()  # nothing written yet: an empty batch, no wait
        os.write(w, b'{"MESSAGE": "one", "PRIORITY": "3"}\n{"MESSAGE": "tw')
        assert [(x.message, dict(x.labels)["level"]) for x in src.next_batch().logs] == [
            ("one", "err")
        ]
        os.write(w, b'o"}\n')
        assert [x.message for x in src.next_batch().logs] == ["two"]
    finally:
        os.close(w)
        reader.close()


def test_a_refused_log_state_restarts_the_log_rules_only():
    spec = RuleSpec(group="m", alert="Lat", source="metrics", matches=lambda k: True)
    engine = Engine([spec], logs=log_engine())
    for recs in stream(minutes=70):
        engine.process("logs", Batch(logs=recs))
    key = SeriesKey.of("latency", {"service": "payments"})
    engine.process("metrics", Batch.from_points([(key, START, 1.0)]))
    state = engine.state_dict()
    state["_logs"]["rules"]["logs/ErrorBurst"] = {"bucket": "not a time"}
    again = Engine([spec], logs=log_engine())
    again.load_state_dict(state)
    assert not again.logs.miners  # the log rules start fresh, half a state is not kept
    assert again.logs.rules["logs/NewLogTemplate"].started == {}
    assert len(again.rules["m/Lat"].registry) == 1  # the metric rule keeps its state


@pytest.mark.parametrize("size", [1, 37, 1000, 100_000])
def test_batch_boundaries_do_not_change_counts_or_alerts(size):
    records = [r for minute in stream() for r in minute]

    def run(chunks):
        engine = Engine([], logs=log_engine())
        out = []
        for chunk in chunks:
            out += engine.process("logs", Batch(logs=chunk))
        alerts = [(a.alertname, a.status, a.starts_at, a.value) for a in out]
        series = engine.logs.rules["logs/ErrorBurst"].series
        return alerts, {k: (s.count, s.last) for k, s in series.items()}

    per_minute = run(stream())
    assert run([records[i : i + size] for i in range(0, len(records), size)]) == per_minute
    assert any(v >= 150 for _, _, _, v in per_minute[0])


def test_a_config_reads_stdin_with_path_dash_and_files_next_to_it(tmp_path):
    from aiops.config import load_config
    from aiops.service.app import build_sources

    (tmp_path / "aiops.yaml").write_text(
        "sources:\n"
        "  journal: {type: log_file, path: '-', format: journald}\n"
        "  app: {type: log_file, path: app.log, labels: {service: api}}\n"
        "rule_files: [rules.yaml]\n"
    )
    (tmp_path / "rules.yaml").write_text(
        "groups:\n- name: g\n  rules:\n"
        "  - {alert: New, source: app, log: {type: new_template}}\n"
        "  - {alert: Burst, source: journal, log: {type: error_burst}}\n"
    )
    sources = build_sources(load_config(tmp_path / "aiops.yaml"), {})
    assert sources["journal"].config.path == "-"
    assert sources["app"].config.path == str(tmp_path / "app.log")


def test_log_records_made_many_at_a_time_are_the_records():
    labels = (("service", "api"),)
    many = LogRecord.many(12.5, ["a", "b c", ""], labels)
    assert many == [LogRecord(12.5, m, labels) for m in ["a", "b c", ""]]
    assert hash(many[1]) == hash(LogRecord(12.5, "b c", labels))
    with pytest.raises(AttributeError):  # still frozen
        many[0].message = "x"  # type: ignore[misc]
    assert LogRecord.many(1.0, []) == []
    other = (("service", "db"),)
    cols = LogRecord.columns([1.0, 2.5], ["a", "b"], [labels, other])
    assert cols == [LogRecord(1.0, "a", labels), LogRecord(2.5, "b", other)]
    with pytest.raises(ValueError, match="one length"):
        LogRecord.columns([1.0], ["a", "b"], [labels, labels])


def test_log_metrics_count_lines_templates_and_new_templates():
    from prometheus_client import generate_latest

    from aiops.service.metrics import PrometheusMetrics

    engine = Engine([], logs=log_engine())
    metrics = PrometheusMetrics()
    metrics.watch_logs(lambda: engine.logs.stats())  # read at scrape, as the daemon does
    minutes = stream()
    for recs in minutes:
        engine.process("logs", Batch(logs=recs))
    text = generate_latest(metrics.registry).decode()
    lines = sum(len(m) for m in minutes)
    assert f'aiops_log_lines_mined_total{{source="logs"}} {float(lines)}' in text
    miner = engine.logs.miners[next(iter(engine.logs.miners))]
    assert f'aiops_log_templates{{source="logs"}} {float(len(miner))}' in text
    assert 'aiops_log_new_templates_total{rule="logs/NewLogTemplate"} 1.0' in text
    assert 'aiops_log_new_templates_held_total{rule="logs/NewLogTemplate"} 0.0' in text
    broken = PrometheusMetrics()
    broken.watch_logs(lambda: 1 / 0)  # a failing read leaves the families empty
    assert "aiops_log_templates" in generate_latest(broken.registry).decode()


def test_template_rate_alerts_on_a_burst_and_on_a_silence_of_one_template():
    rules = {
        "groups": [
            {
                "name": "logs",
                "rules": [
                    {
                        "alert": "TemplateRate",
                        "source": "logs",
                        "log": {"type": "template_rate", "interval": "1m"},
                        "detector": {"type": "ewma_z", "params": {"warmup": 30}},
                        "threshold": 0.999,
                    }
                ],
            }
        ]
    }
    engine = Engine([], logs=LogEngine(log_rule_specs(RuleFile.model_validate(rules).groups)))
    rng = np.random.default_rng(3)
    out = []
    for m in range(150):
        n_login = 300 if m == 100 else int(rng.poisson(30))  # a burst at minute 100
        n_cache = 0 if m >= 120 else int(rng.poisson(40))  # silent from minute 120
        msgs = [f"user {rng.integers(500)} logged in" for _ in range(n_login)]
        msgs += [f"cache hit for key {rng.integers(9999)}" for _ in range(n_cache)]
        ts = START + m * 60 + np.sort(rng.uniform(0, 60, len(msgs)))
        api = (("service", "api"),)
        recs = [LogRecord(float(t), x, api) for t, x in zip(ts, msgs, strict=True)]
        out += engine.process("logs", Batch(logs=recs))
    firing = [a for a in out if a.status == "firing"]
    by_template = {a.annotations["template"]: a for a in firing}
    burst = by_template["user <NUM> logged in"]
    assert burst.starts_at == START + 101 * 60
    assert burst.value == 300
    assert burst.annotations["examples"].startswith("user ")
    silence = by_template["cache hit for key <NUM>"]
    assert silence.value == 0
    assert START + 121 * 60 <= silence.starts_at <= START + 125 * 60
    assert len(firing) == 2


def test_logs_templates_command_writes_one_row_per_line(tmp_path):
    import csv

    from click.testing import CliRunner

    from aiops.cli import cli

    src = tmp_path / "app.log"
    src.write_text(
        "user 3 logged in from 10.0.0.3\n\nuser 42 logged in from 10.0.0.9\ndisk full on /var\n"
    )
    out = tmp_path / "out.csv"
    res = CliRunner().invoke(cli, ["logs", "templates", str(src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert [r["line"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[0]["template_id"] == rows[2]["template_id"] != rows[3]["template_id"]
    assert rows[0]["template"] == "user <NUM> logged in from <IP>"
    assert rows[1]["template_id"] == rows[1]["template"] == ""  # the blank line
    assert "4 lines, 3 mined into 2 templates; without a template: blank=1" in res.output
    jsonl = tmp_path / "app.jsonl"
    jsonl.write_text('{"message": "boot ok", "timestamp": 1}\nnot json\n')
    res = CliRunner().invoke(
        cli, ["logs", "templates", str(jsonl), "--out", str(out), "--format", "log_json"]
    )
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert [r["template"] for r in rows] == ["boot ok", ""]


def test_json_receivers_carry_the_log_context_of_log_and_metric_alerts():
    """A webhook (Alertmanager's JSON document) gets template, examples and log_templates."""
    from http_stubs import WebhookStub

    from aiops.alerting.notify import Notification
    from aiops.connectors.notifiers.webhook import WebhookNotifier

    engine = Engine([], logs=log_engine())
    firing = []
    for recs in stream():
        firing += [a for a in engine.process("logs", Batch(logs=recs)) if a.status == "firing"]
    new, burst = firing
    metric = engine.logs.annotate([dataclasses.replace(burst, labels={"service": "payments"})])
    with WebhookStub() as hook:
        sent = WebhookNotifier(WebhookNotifier.Config(url=hook.url))
        sent.send(Notification("hook", [new, burst, *metric], {}))
        (req,) = hook.requests
    a_new, a_burst, a_metric = req.body["alerts"]
    assert a_new["annotations"]["template"] == new.annotations["template"]
    assert a_new["annotations"]["examples"].startswith("ERROR payment gateway timeout")
    assert "ERROR db connection reset" in a_burst["annotations"]["examples"]
    assert "error burst" in a_metric["annotations"]["log_templates"]


def test_the_demo_shows_a_log_alert_next_to_its_metric_alert():
    """The shipped demo's rules on its simulator: an incident's error lines alert too."""
    from aiops.config.loader import load_config
    from aiops.connectors.sources.simulator import SimulatorSource
    from aiops.service.app import demo_config_path, rule_specs

    loaded = load_config(demo_config_path())
    sim = dict(loaded.daemon.sources["sim"].config)
    sim.pop("speed", None)  # as fast as it can
    incident = {"kind": "level_shift", "start": "3h", "length": "20m", "host": "host-2"}
    incident |= {"service": "api", "metric": "http_errors_ratio", "magnitude": 0.2}
    sim |= {"incidents": [incident], "duration": "3h40m", "max_steps_per_batch": 240}
    source = SimulatorSource("sim", SimulatorSource.Config(**sim))
    engine = Engine(rule_specs(loaded), logs=LogEngine(log_rule_specs(loaded.groups)))
    firing = []
    while not source.exhausted:
        firing += [a for a in engine.process("sim", source.next_batch()) if a.status == "firing"]
    (inc,) = source.incident_schedule
    during = [a for a in firing if inc.start <= a.starts_at <= inc.end + 300]
    logs = [a for a in during if a.alertname in ("LogErrorBurst", "NewLogTemplate")]
    metric = [a for a in during if a.alertname not in ("LogErrorBurst", "NewLogTemplate")]
    assert logs, [a.alertname for a in firing]
    assert all(a.labels["service"] == "api" for a in logs)
    assert metric, [a.alertname for a in firing]
    assert any("error burst" in a.annotations.get("log_templates", "") for a in metric)


def test_the_miners_caches_group_lines_as_drain_does_on_the_masked_lines():
    """Shape, blanked-id and masked-message caches: the same ids as Drain alone."""
    rng = np.random.default_rng(11)
    hexc = list("0123456789abcdef")

    def hexid(k):
        return "".join(rng.choice(hexc, k))

    forms = [
        lambda: f"request {hexid(16)} done in {rng.integers(900)} ms",
        lambda: f"job {hexid(8)}-{hexid(4)}-{hexid(4)}-{hexid(4)}-{hexid(12)} state=ok",
        lambda: (
            f'acquire tag="{rng.choice(["View Lock", "x"])}" id {hexid(12)} n={rng.integers(9)}'
        ),
        lambda: f"user u{rng.integers(999)} from 10.0.{rng.integers(9)}.1 session {hexid(10)}",
        lambda: f"sent {rng.integers(99999)} bytes ({rng.integers(99)}.{rng.integers(9)} KB)",
        lambda: f"{rng.choice(['GET', 'POST'])} /api/{rng.integers(50)} {hexid(7)} {hexid(6)}x",
        lambda: "cache " + rng.choice(["hit", "miss", "deadbeef", "cafe0a1b2c"]),
    ]
    msgs = [forms[int(rng.integers(len(forms)))]() for _ in range(4000)]
    miner = LogMiner()
    got = []
    for i in range(0, len(msgs), 300):
        got += miner.add_batch(msgs[i : i + 300])[0]
    bare = LogMiner()
    expected = [bare.drain.add_log_message(bare.mask(m))[0].cluster_id for m in msgs]
    assert got == expected
    assert miner._uniques  # both caches were used
    assert miner._shapes


def test_a_hex_id_in_place_of_a_uuid_is_not_taken_for_it():
    """Blanked ids keep their kind: a line with a hex id is not the UUID line's template."""
    miner = LogMiner()
    miner.add("job 01234567-89ab-cdef-0123-456789abcdef ok")
    miner.add("job 11234567-89ab-cdef-0123-456789abcdef ok")  # from the blanked-id cache
    cid = miner.add("job 0a0b0c0d ok").cluster_id
    assert miner.template(cid) == "job <HEX> ok"
    nul = miner.add("job \x00 ok").cluster_id  # a NUL of its own is no blanked id
    assert miner.template(nul) == "job \x00 ok"
    miner.add("job \x00 0a0b0c0e ok")
    assert miner.template(miner.add("job 0a0b0c0f \x00 ok").cluster_id) == "job <HEX> \x00 ok"


@hsettings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(
            st.sampled_from(
                [
                    "0a0b0c",  # an id: hex digits, a digit and a letter
                    "ab00cd00ef",
                    "000000",  # all digits: a number, not an id
                    "facade",  # all letters: a word
                    "0a0b",  # too short
                    "00000000-0a00-0000-b000-000000000000",  # a UUID
                    "0" * 36,  # 36 hex digits, no UUID, no id
                    "a0" * 18,  # 36 hex digits, an id
                    "x0a0b0c",
                    "0a0b0c,",
                    "é0a0b0c",
                    "state=ok",
                    "\x00",
                ]
            ),
            min_size=1,
            max_size=4,
        ),
        min_size=1,
        max_size=30,
    ),
    st.sampled_from([" ", "  ", "\t", "\x1c", " \x1f "]),
)
def test_blanked_shapes_are_what_the_id_regex_makes(rows, sep):
    """LogMiner._blank's cache of places gives the regex's blanks on any sequence of shapes."""
    ids = re.compile(
        rb"(?<![^ \t\n\r\x0b\x0c\x1c-\x1f])(?:(?P<hex>(?=[0a-fA-F]*0)(?=[0a-fA-F]*[a-fA-F])"
        rb"[0a-fA-F]{6,})|[0a-fA-F]{8}-[0a-fA-F]{4}-[0a-fA-F]{4}-[0a-fA-F]{4}-[0a-fA-F]{12})"
        rb"(?![^ \t\n\r\x0b\x0c\x1c-\x1f])"
    )

    maybe = re.compile(  # tokens that may be ids: hex digits only, six or more, or a UUID's form
        rb"(?<![^ \t\n\r\x0b\x0c\x1c-\x1f])(?:[0a-fA-F]{6,}|[0a-fA-F]{8}-[0a-fA-F]{4}-"
        rb"[0a-fA-F]{4}-[0a-fA-F]{4}-[0a-fA-F]{12})(?![^ \t\n\r\x0b\x0c\x1c-\x1f])"
    )

    def blank(shape):
        if not shape.isascii():
            return None
        found = list(ids.finditer(shape))
        if len(maybe.findall(shape)) == 1:
            # The usual forms: one possible id, a hex id, a UUID or none; the bytes either
            # side (and b"" between for a UUID).
            if not found:
                return None
            sides = (shape[: found[0].start()], shape[found[0].end() :])
            return sides if found[0]["hex"] else (sides[0], b"", sides[1])
        parts, prev = [], 0
        for m in found:
            parts += (shape[prev : m.start()], 0 if m["hex"] else 1)
            prev = m.end()
        return (*parts, shape[prev:]) if parts else None

    miner = LogMiner()
    shapes = [sep.join(["user", *row, "done"]).encode() for row in rows]
    for shape in shapes:
        assert miner._blank(shape) == blank(shape), shape
    # Looked up together, as add_batch does: each shape's entry of the blanked-id cache.
    miner._uniques = {blank(x): i for i, x in enumerate(shapes[::2]) if blank(x) is not None}
    fresh = LogMiner()
    fresh._uniques = miner._uniques
    for m in (miner, fresh):  # places known, and not
        expected = [None if blank(x) is None else miner._uniques.get(blank(x)) for x in shapes]
        assert m._find_uniques(shapes) == expected
    # The masks agree: a hex id is <HEX> and a UUID <UUID>, whatever their digits.
    masker = Masker()
    for row in rows:
        # Token by token: a run of one mask in a message is one token (<HEX> <HEX> is <HEX>).
        for tok in " ".join(row).split():
            masked = masker.mask(tok)
            if blank(tok.encode()) == (b"", b""):
                assert masked == "<HEX>"
            elif blank(tok.encode()) == (b"", b"", b""):
                assert masked == "<UUID>"


def test_a_rule_whose_miners_changed_settings_learns_again_after_a_restart():
    """New mining settings (or defaults) drop the saved miners: no flood of 'new' templates."""

    def engine(sim_th):
        rules = json.loads(json.dumps(RULES))
        for r in rules["groups"][0]["rules"]:
            r["log"]["mining"] = {"sim_th": sim_th}
        return Engine([], logs=LogEngine(log_rule_specs(RuleFile.model_validate(rules).groups)))

    before = engine(0.5)
    minutes = stream()
    for recs in minutes[:90]:
        before.process("logs", Batch(logs=recs))
    state = before.logs.state_dict()
    same, changed = engine(0.5), engine(0.6)
    same.logs.load_state_dict(state)
    changed.logs.load_state_dict(state)
    assert same.logs.rules["logs/NewLogTemplate"].started  # learned: kept
    assert same.logs.miners
    assert not changed.logs.miners
    assert not changed.logs.rules["logs/NewLogTemplate"].started  # learns again
    later = [a for recs in minutes[90:110] for a in changed.process("logs", Batch(logs=recs))]
    assert not [a for a in later if a.alertname == "NewLogTemplate"]


def test_miners_of_an_earlier_release_are_refused_and_their_rules_learn_again():
    """A miner state of version 1 routes lines as today's miner no longer does: not kept."""
    rules = json.loads(json.dumps(RULES))
    before = Engine([], logs=LogEngine(log_rule_specs(RuleFile.model_validate(rules).groups)))
    minutes = stream()
    for recs in minutes[:90]:
        before.process("logs", Batch(logs=recs))
    state = before.logs.state_dict()
    assert state["miners"]
    assert all(m[3]["version"] == STATE_VERSION for m in state["miners"])
    for m in state["miners"]:
        m[3]["version"] = 1
    after = Engine([], logs=LogEngine(log_rule_specs(RuleFile.model_validate(rules).groups)))
    after.logs.load_state_dict(state)
    assert not after.logs.miners
    assert not after.logs.rules["logs/NewLogTemplate"].started  # learns again
    later = [a for recs in minutes[90:110] for a in after.process("logs", Batch(logs=recs))]
    assert not [a for a in later if a.alertname == "NewLogTemplate"]


def test_log_json_arrays_decode_as_each_event_alone():
    """The array loop's shortcut for common events gives what one event at a time gives."""
    from aiops.pipeline.decoder import Decoded

    rng = np.random.default_rng(4)
    values = ["a", "b", None, 3, True, 2.5, {"x": 1}, [1], ""]
    times = [1.7e9, 1_700_000_000, "2024-05-01T12:00:00Z", 1.7e12, -1.0, None, True, "x"]
    times += [float("nan"), 1e11, 0]
    events: list = []
    for _ in range(3000):
        ev = {}
        for key, pool in (
            ("message", ["disk full", None, 7, {"m": 1}, "user 3 in"]),
            ("log", ["from log", None]),
            ("timestamp", times),
            ("@timestamp", times),
            ("service", values),
            ("host", values),
        ):
            if rng.random() < 0.7:
                ev[key] = pool[int(rng.integers(len(pool)))]
        events.append(ev)
    events += [[1], "text", None, 5]
    for settings in (
        {"label_fields": {"service": "service", "host": "host"}, "labels": {"env": "prod"}},
        {"message_field": ["log", "message"], "label_fields": ["service"]},
        {"label_fields": {"host": "host.name"}},  # a dotted path: the general loop
        {"timestamp_format": "unix_ms", "label_fields": {"service": "service"}},
        {"missing_message": "raw_json"},
    ):
        decoder = create_decoder("log_json", settings)
        fast = Decoded()
        decoder._decode_items(events, fast, b"raw", 5.0)
        slow = Decoded()
        for i, ev in enumerate(events):
            decoder._item(ev, slow, b"raw", 5.0, f"item {i}: ")
        assert fast.logs == slow.logs, settings
        assert [(r.reason, r.detail) for r in fast.rejects] == [
            (r.reason, r.detail) for r in slow.rejects
        ]
        assert len(fast.logs) > 100


def test_a_batch_of_many_streams_mines_and_alerts_as_records_one_at_a_time():
    """Streams mined miner by miner in one batch, rules that select some of them."""
    rules = json.loads(json.dumps(RULES))
    rules["groups"][0]["rules"][1]["selector"] = '{service=~"a|c"}'
    specs = log_rule_specs(RuleFile.model_validate(rules).groups)
    streams = [stream(service=s, seed=k) for k, s in enumerate("abc")]
    mixed = [sorted(x + y + z, key=lambda r: r.timestamp) for x, y, z in zip(*streams, strict=True)]

    def run(batches):
        engine = Engine([], logs=LogEngine(specs))
        out = [a for b in batches for a in engine.process("logs", Batch(logs=b))]
        miners = {k[2]: m.state_dict() for k, m in engine.logs.miners.items()}
        return [(a.alertname, a.status, a.labels["service"], a.starts_at) for a in out], miners

    whole, whole_miners = run(mixed)
    single, single_miners = run([[r] for minute in mixed for r in minute])
    assert sorted(whole) == sorted(single)
    assert whole_miners == single_miners
    assert {s for _, _, s, _ in whole} == {"a", "b", "c"}
    assert {s for n, _, s, _ in whole if n == "ErrorBurst"} == {"a", "c"}
