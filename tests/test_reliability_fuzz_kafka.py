"""Reliability: 2,000 malformed records through a real Kafka-protocol broker.

1,600 seeded malformed line-protocol records (``tests.fuzz_inputs.Mutator``) and 400
canary records are produced to one topic of the test broker (``tests/servers.py``) and
read by the Kafka source with a dead-letter topic. The source reads to the end without
raising or blocking; its rejects, by reason, are exactly what the decoder gives for
each record on its own (nothing lost, nothing invented on the way through the broker);
every canary point arrives; and the dead-letter topic holds one copy of each record
that had a reject, with its reason and count in the headers.
"""

from __future__ import annotations

from collections import Counter

import pytest
from test_kafka_source import config, drain, produce, unique

from aiops.connectors.formats import InfluxLineDecoder
from aiops.connectors.sources.kafka import KafkaSource
from aiops.types import SeriesKey
from tests.fuzz_inputs import Mutator

SEEDS = (
    b"cpu,cpu=cpu0,host=web-1 usage_user=12.5,usage_system=3.1 1700000000000000000",
    b'mem,host=a used=1i,free=25u,ok=true,note="x \\"y\\"" 1700000000000000000',
    b"disk,path=/ used_percent=71.5 1700000000000000000\nswap,host=b in=0i 1700000000000000000",
)
MALFORMED, EVERY = 1600, 4  # a canary after every fourth malformed record


@pytest.mark.servers
def test_malformed_records_through_the_broker_are_each_counted_and_dead_lettered(kafka_broker):
    topic, dlq = unique("fuzz"), unique("fuzz-dlq")
    kafka_broker.create_topic(topic, 1)
    kafka_broker.create_topic(dlq, 1)
    m = Mutator(41)
    values: list[bytes] = []
    for i in range(MALFORMED):
        values.append(m.mutate(SEEDS[i % len(SEEDS)]))
        if i % EVERY == 0:
            values.append(b"canary,host=c v=%di %d000000000" % (i, 1_700_000_000 + i))
    n = produce(kafka_broker, topic, [(v, b"k") for v in values])
    assert n == len(values)

    decoder = InfluxLineDecoder()
    expected: Counter[str] = Counter()
    with_rejects = []
    for v in values:
        reasons = [r.reason for r in decoder.decode(v, timestamp=1.0).to_batch().rejects]
        expected.update(reasons)
        if reasons:
            with_rejects.append((v, len(reasons)))

    src = KafkaSource("k", config(kafka_broker, [topic], "influx_line", dead_letter_topic=dlq))
    try:
        got = drain({"k": src}, lambda _, bs: src.snapshot() == {f"{topic}:0": n}, timeout=60)
        batches = got["k"]
        src.commit(src.snapshot())  # flushes the dead letters
    finally:
        src.close()
    assert Counter(r.reason for b in batches for r in b.rejects) == expected
    canary = SeriesKey.of("canary_v", {"host": "c"})
    points = sorted(v for b in batches for k, _, v in b.points() if k == canary)
    assert points == [float(i) for i in range(0, MALFORMED, EVERY)]
    letters = kafka_broker.consume_all(dlq)
    assert [(r.value, int(dict(r.headers)["aiops-rejects"])) for r in letters] == with_rejects
