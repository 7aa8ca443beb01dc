"""Assembling the daemon from validated configuration, and running it under signals."""

from __future__ import annotations

import functools
import importlib.resources
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from aiops.alerting.groups import DataClock, Groups
from aiops.alerting.notify import Notifier, NullNotifier
from aiops.alerting.outbox import (
    OUTBOX_FILE,
    DeliveryPolicy,
    Integration,
    Outbox,
    OutboxSchemaError,
)
from aiops.alerting.routing import Inhibition, RouteNode, Router, SilenceWindow
from aiops.alerting.templates import Template
from aiops.config import (
    AlertingConfig,
    ConfigErrors,
    LoadedConfig,
    Route,
    TimeInterval,
    load_config,
)
from aiops.config.models import DEFAULT_QUERY_INTERVAL
from aiops.logs.rules import LogEngine, log_rule_specs
from aiops.models.lifecycle import wire_models
from aiops.models.retrain import wire_retraining
from aiops.pipeline.engine import Engine, RuleSpec
from aiops.pipeline.source import QuerySpec, Source
from aiops.registry import NOTIFIERS, SOURCES
from aiops.secrets import SecretError
from aiops.service.daemon import Daemon, DeadLetterFile
from aiops.service.http import HttpServer, ListenError
from aiops.service.memory import MemoryGuard
from aiops.service.metrics import NULL_METRICS, Metrics, PrometheusMetrics
from aiops.state import signing
from aiops.state.checkpoint import Checkpointer
from aiops.state.envelope import FileStateStore
from aiops.types import SeriesKey

__all__ = ["DEMO_CONFIG", "build_daemon", "demo_config_path", "run_daemon"]

log = logging.getLogger(__name__)

#: Where the built-in demo's config lives inside the installed package.
DEMO_CONFIG = ("demo", "aiops.yaml")
#: State directory of the demo when none is given.
DEMO_STATE_DIR = Path("aiops-state")


def demo_config_path() -> Path:
    """The shipped demo config (simulator source, shipped rules, console + JSONL)."""
    root = importlib.resources.files("aiops.rules")
    return Path(str(root.joinpath(*DEMO_CONFIG)))


@functools.lru_cache(maxsize=1024)
def _template(text: str) -> Template:
    return Template(text)


def render_template(text: str, context: Mapping[str, Any]) -> str:
    """Render an annotation template (parsed once per distinct text)."""
    return _template(text).render(context)


def _match_all(key: SeriesKey) -> bool:
    return True


#: Source types whose series share one clock: a Prometheus source evaluates every query
#: at the same times, remote write arrives as scraped. Elsewhere (Kafka partitions read
#: at different paces, a file of one series after another) a series can be far behind
#: the rule's latest point without being gone, so the default ``forget_after_stale``
#: applies only to these; ``limits.forget_after_stale`` written out, or a rule's own,
#: applies to every source.
SHARED_CLOCK_SOURCES = frozenset({"prometheus", "remote_write"})


def rule_specs(loaded: LoadedConfig) -> list[RuleSpec]:
    """The engine's view of every rule in the loaded rule files."""
    specs = []
    limits = loaded.daemon.limits
    cap = limits.max_series_per_rule
    forget_everywhere = "forget_after_stale" in limits.model_fields_set
    windows = draws_charts(loaded.alerting)
    for group in loaded.groups:
        for rule in group.rules:
            if rule.log is not None:
                continue  # log rules: log_rule_specs
            source = loaded.daemon.sources.get(rule.source)
            shared_clock = source is not None and source.type in SHARED_CLOCK_SOURCES
            forget = limits.forget_after_stale if forget_everywhere or shared_clock else 0.0
            selector = rule.selector
            # Query rules (Prometheus pull) see exactly the series their query returns.
            matches = _match_all if selector is None else selector.matches
            text = (rule.query or "") if selector is None else str(selector)
            specs.append(
                RuleSpec.from_rule(
                    group.name,
                    rule,
                    matches=matches,
                    max_series=cap,
                    selector_text=text,
                    stale_seconds=rule.resolve_after_stale,
                    forget_seconds=group.forget_seconds(rule, forget),
                    windows=windows,
                )
            )
    return specs


def draws_charts(alerting: AlertingConfig) -> bool:
    """True if a receiver has a notifier that draws the alerts' windows (``uses_window``).

    Without one, no rule keeps the recent window of its series (508 bytes a series).
    """
    return any(
        getattr(NOTIFIERS.get(n.type), "uses_window", True)
        for r in alerting.receivers
        for n in r.notifiers
    )


def _route_node(
    route: Route,
    intervals: Mapping[str, TimeInterval],
    receiver: str = "",
    group_by: tuple[str, ...] = (),
) -> RouteNode:
    """Children inherit the receiver and group_by of their parent unless they set them."""
    receiver = route.receiver or receiver
    group_by = tuple(route.group_by) if route.group_by is not None else group_by
    children = tuple(_route_node(r, intervals, receiver, group_by) for r in route.routes)
    return RouteNode(
        receiver,
        tuple(route.matchers),
        route.continue_,
        children,
        group_by,
        mute_during=tuple(intervals[n] for n in route.mute_time_intervals),
        active_during=tuple(intervals[n] for n in route.active_time_intervals),
        # Set on every route of a loaded config (inherited); RouteNode's defaults otherwise.
        **{
            k: float(v)
            for k in ("group_wait", "group_interval", "repeat_interval")
            if (v := getattr(route, k)) is not None
        },
    )


def build_groups(alerting: AlertingConfig, *, clock: Callable[[], float] | None = None) -> Groups:
    """Aggregation groups over the route tree, silences and inhibit rules (the daemon's).

    On the data's clock unless told otherwise, so a replay or a restart from a
    checkpoint notifies exactly as the live run did (see :mod:`aiops.alerting.groups`).
    """
    router = build_router(alerting)
    return Groups(router.root, router.silences, router.inhibitions, clock=clock or DataClock())


def build_router(alerting: AlertingConfig) -> Router:
    """The route tree, silences and inhibit rules of an alerting config."""
    silences = [
        SilenceWindow(tuple(s.matchers), s.starts_at.timestamp(), s.ends_at.timestamp())
        for s in alerting.silences
    ]
    inhibitions = [
        Inhibition(tuple(r.source_matchers), tuple(r.target_matchers), tuple(r.equal))
        for r in alerting.inhibit_rules
    ]
    intervals = {t.name: t for t in alerting.time_intervals}
    return Router(_route_node(alerting.route, intervals), silences, inhibitions)


def build_receivers(alerting: AlertingConfig, *, base_dir: Path) -> dict[str, list[Notifier]]:
    """One list of notifiers per receiver; a receiver with none gets a null notifier."""
    out: dict[str, list[Notifier]] = {}
    for r in alerting.receivers:
        notifiers: list[Notifier] = [
            NOTIFIERS.get(spec.type)(spec.config, base_dir=base_dir) for spec in r.notifiers
        ]
        out[r.name] = notifiers or [NullNotifier()]
    return out


def build_integrations(
    alerting: AlertingConfig, *, base_dir: Path, metrics: Metrics = NULL_METRICS
) -> list[Integration]:
    """One outbox integration per ``<type>_configs`` entry, named ``<type>[<index>]``.

    A receiver with no entries has none: it delivers nowhere, so nothing is queued for it.
    """
    out: list[Integration] = []
    for r in alerting.receivers:
        seen: dict[str, int] = {}
        for spec in r.notifiers:
            index = seen.get(spec.type, 0)
            seen[spec.type] = index + 1
            notifier = NOTIFIERS.get(spec.type)(spec.config, base_dir=base_dir)
            name = f"{spec.type}[{index}]"
            out.append(Integration(r.name, name, metrics.wrap_notifier(r.name, notifier)))
    return out


def build_outbox(
    loaded: LoadedConfig, *, state_dir: Path, metrics: Metrics = NULL_METRICS
) -> Outbox:
    """The durable outbox in ``state_dir`` with every receiver's integrations.

    Raises :class:`aiops.alerting.outbox.OutboxSchemaError` for an outbox file this
    version cannot use.
    """
    d = loaded.daemon.delivery
    policy = DeliveryPolicy(
        base_delay=d.base_delay,
        max_delay=d.max_delay,
        max_attempts=d.max_attempts,
        max_age=d.max_age,
        attempt_timeout=d.attempt_timeout,
        breaker_failures=d.breaker_failures,
        breaker_cooldown=d.breaker_cooldown,
        retention=d.retention,
    )
    outbox = Outbox(
        state_dir / OUTBOX_FILE,
        build_integrations(loaded.alerting, base_dir=state_dir, metrics=metrics),
        policy=policy,
        on_outcome=metrics.outbox_outcome,
    )
    metrics.watch_outbox(outbox.stats)
    return outbox


#: With ``--once``, how long the outbox may take at exit to send what is due.
ONCE_DRAIN_TIMEOUT = 600.0


def rule_queries(loaded: LoadedConfig) -> dict[str, list[QuerySpec]]:
    """The query rules of every source, for pull sources."""
    out: dict[str, list[QuerySpec]] = {}
    for group in loaded.groups:
        interval = group.interval or DEFAULT_QUERY_INTERVAL
        for rule in group.rules:
            if rule.query is not None:
                key = f"{group.name}/{rule.alert}"
                out.setdefault(rule.source, []).append(QuerySpec(key, rule.query, interval))
    return out


_Settings = TypeVar("_Settings", bound=BaseModel)


def resolve_paths(config: _Settings, base_dir: Path) -> _Settings:
    """Make relative file settings (``path``, ``*_file``) relative to ``base_dir``.

    Paths in the daemon config are relative to the config file's directory, as in
    Prometheus, so a config works the same whatever directory the daemon starts in.
    """
    update = {}
    for name, value in config:
        is_path = name == "path" or name.endswith("_file")
        # "-" is standard input (log_file), not a file next to the config.
        if (
            is_path
            and isinstance(value, str)
            and value not in ("", "-")
            and not Path(value).is_absolute()
        ):
            update[name] = str(base_dir / value)
    return config.model_copy(update=update) if update else config


def build_sources(loaded: LoadedConfig, positions: Mapping[str, Any]) -> dict[str, Source]:
    """Open every configured source at its checkpointed position."""
    sources: dict[str, Source] = {}
    queries = rule_queries(loaded)
    base_dir = loaded.path.parent
    for sid, spec in loaded.daemon.sources.items():
        cls = SOURCES.get(spec.type)
        kwargs: dict[str, Any] = {"resume": positions.get(sid)}
        if cls.accepts_queries:
            kwargs["queries"] = queries.get(sid, [])
        sources[sid] = cls(sid, resolve_paths(spec.config, base_dir), **kwargs)
    return sources


def build_daemon(loaded: LoadedConfig, *, state_dir: Path) -> Daemon:
    """Wire a :class:`Daemon` from validated configuration.

    With ``http.listen`` set, the daemon gets a listener (started by ``run()``) and
    records metrics; that needs the ``server`` extra (:class:`ImportError` otherwise).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    logs = LogEngine(
        log_rule_specs(loaded.groups, loaded.daemon.limits.max_series_per_rule),
        render=render_template,
    )
    engine = Engine(rule_specs(loaded), render=render_template, logs=logs)
    listen = loaded.daemon.http.listen
    metrics: Metrics = PrometheusMetrics() if listen else NULL_METRICS
    daemon = Daemon(
        sources=functools.partial(build_sources, loaded),
        engine=engine,
        router=build_groups(loaded.alerting),
        dispatcher=build_outbox(loaded, state_dir=state_dir, metrics=metrics),
        checkpointer=Checkpointer(FileStateStore(state_dir)),
        checkpoint_interval=loaded.daemon.state.checkpoint_interval,
        background_checkpoints=True,  # written by a writer thread, off the data loop
        dead_letters=DeadLetterFile(
            state_dir / "rejects.jsonl",
            max_bytes=int(loaded.daemon.state.rejects_max_size),
            keep=loaded.daemon.state.rejects_keep,
        ),
        metrics=metrics,
    )
    if listen:
        daemon.listener = HttpServer.from_settings(
            loaded.daemon.http, daemon, metrics, base_dir=loaded.path.parent
        )
    daemon.memory = MemoryGuard(int(loaded.daemon.limits.max_memory), metrics=metrics)
    wire_feedback(daemon, loaded, state_dir=state_dir, metrics=metrics)
    wire_models(daemon, state_dir=state_dir, loaded=loaded)
    wire_retraining(daemon, loaded, metrics=metrics)
    return daemon


def wire_feedback(
    daemon: Daemon, loaded: LoadedConfig, *, state_dir: Path, metrics: Metrics = NULL_METRICS
) -> None:
    """Answers to alerts: the Slack endpoint (``http.slack``) and the loop's applier.

    The applier runs whenever the state directory holds a feedback store (raised
    thresholds and silences outlive the endpoint's configuration). A signing secret
    that cannot be read leaves the endpoint off, with an error in the log; alerts
    still flow.
    """
    from aiops.alerting.feedback import (
        FEEDBACK_FILE,
        FeedbackApplier,
        FeedbackStore,
        SlackInteractions,
    )
    from aiops.secrets import read_secret

    slack = loaded.daemon.http.slack
    path = state_dir / FEEDBACK_FILE
    if slack is None and not path.exists():
        return
    store = FeedbackStore(path)
    applier = FeedbackApplier(store, metrics=metrics)
    daemon.feedback = applier
    if slack is None:
        return
    if not isinstance(daemon.listener, HttpServer):
        log.error("http.slack is set but http.listen is not: the Slack buttons get no answer")
        return
    secret_file = slack.signing_secret_file
    if secret_file is not None and not Path(secret_file).is_absolute():
        secret_file = str(loaded.path.parent / secret_file)
    try:
        secret = read_secret(slack.signing_secret_env, secret_file, "http.slack signing secret")
    except ValueError as exc:
        log.error("%s; POST /slack/interactions is off", exc)
        return
    handler = SlackInteractions(
        store,
        [secret or ""],
        applier=applier,
        metrics=metrics,
        response_url_prefixes=slack.response_url_prefixes,
    )
    daemon.listener.mount(handler)


def run_daemon(
    config_path: Path | None,
    *,
    state_dir: Path | None = None,
    until_exhausted: bool = False,
    stop_timeout: float | None = None,
) -> int:
    """Load, build and run until SIGINT/SIGTERM; returns the process exit code.

    Signals, reloads (SIGHUP, ``POST /-/reload``) and systemd notifications:
    :mod:`aiops.service.lifecycle`; ``stop_timeout`` bounds the stop (seconds).
    """
    from aiops.service import lifecycle

    demo = config_path is None
    path = demo_config_path() if config_path is None else config_path
    try:
        loaded = load_config(path)
    except ConfigErrors as exc:
        for err in exc.errors:
            log.error("%s", err)
        log.error("configuration invalid: %d errors; not starting", len(exc.errors))
        return 1
    state = state_dir or (DEMO_STATE_DIR.resolve() if demo else loaded.daemon.state.dir)
    keys = resolve_paths(loaded.daemon.state, path.parent)  # a key file by the config's
    try:
        signing.use_key_reference(keys.hmac_key_env, keys.hmac_key_file)
    except SecretError as exc:
        log.error("%s; not starting", exc)
        return 1
    try:
        daemon = build_daemon(loaded, state_dir=state)
    except (ImportError, OutboxSchemaError) as exc:
        log.error("%s", exc)
        return 1
    supervisor = lifecycle.service(
        daemon,
        loaded,
        state_dir=state,
        state_dir_fixed=state_dir is not None,
        stop_timeout=lifecycle.STOP_TIMEOUT if stop_timeout is None else stop_timeout,
    )
    if demo:
        log.info(
            "demo: simulated fleet -> shipped rules -> console and %s (state in %s)",
            state / "alerts.jsonl",
            state,
        )
    if until_exhausted and isinstance(daemon.dispatcher, Outbox):
        # A finite replay asked to finish: send what is due before exiting (rows waiting
        # for a back-off or an open breaker stay queued for the next start).
        daemon.dispatcher.drain_timeout = ONCE_DRAIN_TIMEOUT
    started = time.monotonic()
    try:
        supervisor.run(until_exhausted=until_exhausted)
    except ListenError as exc:
        log.error("%s; not starting", exc)
        return 1
    log.info(
        "stopped after %.0fs: %d alerts, %s",
        time.monotonic() - started,
        daemon.alerts_sent,
        ", ".join(f"{k}={v}" for k, v in sorted(daemon.dispatcher.results.items()))
        or "nothing sent",
    )
    if until_exhausted and daemon.exhausted:
        # A replay that ended with a source failing (a file without the configured
        # columns, say) did not process all its data: a script must not read success.
        failed = {sid: h.last_error for sid, h in daemon.health.items() if not h.ok}
        for sid, error in sorted(failed.items()):
            log.error('source "%s" failed: %s', sid, error)
        if failed:
            return 1
    return 0
