"""Shared fixtures: real Prometheus, Alertmanager and Kafka-protocol servers.

How a test starts each server (mark it ``@pytest.mark.servers``)::

    def test_x(prometheus_server, alertmanager_server, kafka_broker):
        prom = prometheus_server(config={...}, history=[HistorySeries(...)])
        prom.url, prom.query("up"), prom.restart(), prom.log_tail()
        am = alertmanager_server()               # or alertmanager_server(config={...})
        am.url, am.post_alerts([...]), am.alerts()
        kafka_broker.bootstrap                   # one broker per test module
        kafka_broker.create_topic("t", 3); kafka_broker.produce("t", [b"v"], keys=[b"k"])

``prometheus_server`` and ``alertmanager_server`` are factories: each call starts one
server in its own temporary directory, and every server a test started is stopped at
its teardown, pass or fail. They start in a fraction of a second, so a test gets its own
server with its own config rather than sharing one. ``kafka_broker`` is shared by
the tests of one module (topics are cheap; name them with ``servers.unique()``); a test
that stops or restarts a broker takes a private one from ``kafka_broker_factory``.

A missing binary makes these tests fail (never skip) with the command that installs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from servers import (
    AlertmanagerServer,
    KafkaBroker,
    PrometheusServer,
    ServerError,
)

S = TypeVar("S", PrometheusServer, AlertmanagerServer, KafkaBroker)


@pytest.fixture(autouse=True)
def _state_signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pickled third-party models are checkpointed only when signed (aiops.state.signing);
    # tests run with a key, as a deployment would. Tests of the keyless case delete it.
    monkeypatch.setenv("AIOPS_STATE_HMAC_KEY", "test-suite-signing-key")


def _require_servers_marker(request: pytest.FixtureRequest) -> None:
    # Keeps `-m "not servers"` honest: a test that starts real servers must say so.
    node = request.node
    if node.get_closest_marker("servers") is None:
        pytest.fail(
            f"{node.nodeid} uses {request.fixturename} but is not marked @pytest.mark.servers",
            pytrace=False,
        )


def _start(make: Callable[[], S], started: list[S]) -> S:
    try:
        server = make()  # a missing binary or a failed promtool backfill
    except ServerError as e:
        pytest.fail(str(e), pytrace=False)
    started.append(server)
    try:
        server.start()
    except ServerError as e:
        pytest.fail(str(e), pytrace=False)
    return server


@pytest.fixture
def prometheus_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., PrometheusServer]]:
    """Factory: ``prometheus_server(config=None, *, history=None, port=0, ...)``.

    ``config`` is a dict (written as JSON, which is YAML) or YAML text; ``history`` is
    OpenMetrics text or :class:`servers.HistorySeries` items, backfilled with promtool
    before the server starts. See :class:`servers.PrometheusServer`.
    """
    _require_servers_marker(request)
    started: list[PrometheusServer] = []

    def start(config: Any = None, **kwargs: Any) -> PrometheusServer:
        workdir = tmp_path_factory.mktemp("prometheus")
        return _start(lambda: PrometheusServer(workdir, config, **kwargs), started)

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def alertmanager_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., AlertmanagerServer]]:
    """Factory: ``alertmanager_server(config=None, *, port=0)``; a null receiver by default."""
    _require_servers_marker(request)
    started: list[AlertmanagerServer] = []

    def start(config: Any = None, **kwargs: Any) -> AlertmanagerServer:
        workdir = tmp_path_factory.mktemp("alertmanager")
        return _start(lambda: AlertmanagerServer(workdir, config, **kwargs), started)

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def kafka_broker_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., KafkaBroker]]:
    """Factory of private brokers, for tests that stop or restart one."""
    _require_servers_marker(request)
    started: list[KafkaBroker] = []

    def start(**kwargs: Any) -> KafkaBroker:
        workdir = tmp_path_factory.mktemp("kafka")
        return _start(lambda: KafkaBroker(workdir, **kwargs), started)

    yield start
    for broker in reversed(started):
        broker.stop()


@pytest.fixture(scope="module")
def _module_kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    started: list[KafkaBroker] = []
    workdir = tmp_path_factory.mktemp("kafka")
    broker: KafkaBroker = _start(lambda: KafkaBroker(workdir), started)
    yield broker
    broker.stop()


@pytest.fixture
def kafka_broker(request: pytest.FixtureRequest) -> KafkaBroker:
    """The module's shared broker (memory storage); do not stop or restart it."""
    _require_servers_marker(request)  # before the broker starts, not after
    broker: KafkaBroker = request.getfixturevalue("_module_kafka_broker")
    if not broker.running:
        pytest.fail(
            "the shared Kafka broker is not running (a test stopped it?); use "
            "kafka_broker_factory for a private broker\n" + broker.log_tail(),
            pytrace=False,
        )
    return broker
