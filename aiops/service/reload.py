"""Hot reload of the whole configuration, as Prometheus does it (SIGHUP, ``POST /-/reload``).

A reload reads and validates the daemon config, every rule file and the alerting file
together (:func:`aiops.config.load_config`). A configuration with any error is not
applied: the daemon keeps running the previous one, every error is logged, and
``aiops_config_last_reload_successful`` drops to 0. A valid one is applied by the data
loop between two loop steps (never while a batch is processed):

- **Rules** are matched by key (``group/alert``). A rule whose definition is the same
  (every engine setting but its annotations) keeps its runtime: detector state, series,
  hit windows, alert states; new annotations apply to its next alerts. A new rule
  starts fresh. A removed rule stops, and so does the old version of a changed rule,
  which then starts fresh: their firing alerts are resolved at once (dated at the
  rule's last data time), so receivers see each incident close. Prometheus itself sends
  nothing for a removed rule; Alertmanager then resolves its alerts when their
  ``endsAt`` (a few evaluation intervals after the last send) passes: the end result,
  a resolved notification, is the same here, only sooner. Unlike Prometheus, a changed
  rule does not carry its active alerts over: its new model has not decided them.
  Log rules: unchanged ones keep the log engine as it is; if any changed, the log
  rules are rebuilt and restore what they can from the old state, as a restart does.
  The model lifecycle then versions the rules started fresh
  (:meth:`aiops.models.lifecycle.ModelLifecycle.reloaded`) and retraining takes the
  new ``retrain:`` / ``drift:`` settings (:func:`aiops.models.retrain.wire_retraining`).
- **Alerting** (route tree, receivers, silences, inhibit rules, time intervals): the
  aggregation groups are rebuilt and take over the old groups' state (groups of routes
  that no longer exist are dropped with a warning). When receivers or ``delivery:``
  changed, the outbox's workers are stopped (attempts in flight finish first) and
  started again with the new receivers on the same outbox file: no queued row is lost;
  rows of a receiver that no longer exists stay queued (a warning at start).
- **Sources**: a source whose settings (and, for pull sources, whose queries) are
  unchanged stays open at its position. A changed one is closed and opened again:
  from its old position when its type is the same and it reads the same file (a file
  source whose ``path`` changed starts that file from the beginning); a push receiver
  is drained first, so every sample it acknowledged is scored. New sources open fresh
  (as on a first start); removed ones are drained and closed.
- **Settings** ``state.checkpoint_interval`` applies at once. The listener (``http:``)
  and the rest of ``state:`` cannot change without a restart: such a reload is refused
  with an error saying so (the running configuration stays).

Threads: :meth:`Reloader.request` may be called from any thread (the SIGHUP handler,
the listener's threads); :meth:`Reloader.apply_pending` runs on the data loop.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiops.config import ConfigErrors, LoadedConfig, load_config
from aiops.service.http import HttpReceiver, HttpRequest, HttpResponse
from aiops.service.metrics import NULL_METRICS, Metrics
from aiops.service.sdnotify import NullNotifier, SystemdNotifier, monotonic_usec

if TYPE_CHECKING:
    from aiops.pipeline.engine import Engine, RuleRuntime, RuleSpec
    from aiops.pipeline.source import Source
    from aiops.service.daemon import Daemon

__all__ = [
    "RELOAD_PATH",
    "ReloadEndpoint",
    "ReloadResult",
    "Reloader",
    "restart_only_changes",
]

log = logging.getLogger(__name__)

#: Where the listener serves the reload (Prometheus' path).
RELOAD_PATH = "/-/reload"
#: How long ``POST /-/reload`` waits for the data loop to apply the reload.
RELOAD_WAIT_SECONDS = 60.0
#: Rule settings that do not shape any state: a change of these alone keeps the rule.
_PRESENTATION_ONLY = frozenset({"annotations", "matches", "windows"})


@dataclasses.dataclass(frozen=True)
class ReloadResult:
    """The outcome of one reload: 200 applied, 400 refused (invalid), 500 failed to apply."""

    status: int
    errors: tuple[str, ...] = ()
    changes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the new configuration runs."""
        return self.status == 200

    def text(self) -> str:
        """The answer of ``POST /-/reload``: what changed, or every error, one a line."""
        lines = self.changes if self.ok else self.errors
        head = "configuration reloaded" if self.ok else "configuration not reloaded"
        return "\n".join([head, *lines]) + "\n"


class _Request:
    """One asked-for reload; several asked before the loop gets to them share one."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: ReloadResult | None = None
        self.origins: list[str] = []


def restart_only_changes(
    old: LoadedConfig, new: LoadedConfig, *, state_dir_fixed: bool = False
) -> list[str]:
    """Settings that changed but only apply at a restart, as error messages.

    ``state_dir_fixed``: the state directory came from ``--state-dir``, so the config's
    ``state.dir`` does not matter.
    """
    errors = []
    if old.daemon.http != new.daemon.http:
        errors.append(f"{new.path}: http: changed; the listener needs a restart")
    skip = {"checkpoint_interval", *({"dir"} if state_dir_fixed else ())}
    for name in type(old.daemon.state).model_fields:
        if name in skip:
            continue
        if getattr(old.daemon.state, name) != getattr(new.daemon.state, name):
            errors.append(f"{new.path}: state.{name}: changed; it needs a restart")
    return errors


class Reloader:
    """Reloads the daemon's configuration from ``loaded.path`` on request.

    ``state_dir`` is the directory the daemon runs with (``state_dir_fixed`` when it
    came from the command line); ``notifier`` gets ``RELOADING=1`` and ``READY=1``;
    ``load`` reads a configuration (raises :class:`aiops.config.ConfigErrors`).
    """

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        state_dir: Path,
        state_dir_fixed: bool = False,
        metrics: Metrics = NULL_METRICS,
        notifier: SystemdNotifier | NullNotifier | None = None,
        load: Callable[[Path], LoadedConfig] = load_config,
    ) -> None:
        self.loaded = loaded
        self.state_dir = state_dir
        self.state_dir_fixed = state_dir_fixed
        self.metrics = metrics
        self.notifier = notifier or NullNotifier()
        self.load = load
        self._lock = threading.Lock()
        self._pending: _Request | None = None
        #: The last reload's outcome (None: none yet), for status lines.
        self.last: ReloadResult | None = None
        self.last_at = 0.0
        metrics.config_reload(True)  # the configuration loaded at start counts as one

    def request(self, origin: str) -> _Request:
        """Ask for a reload (any thread); returns a request whose ``done`` is set once applied."""
        with self._lock:
            if self._pending is None:
                self._pending = _Request()
            self._pending.origins.append(origin)
            return self._pending

    @property
    def pending(self) -> bool:
        """True when a reload waits for the data loop."""
        return self._pending is not None

    def apply_pending(self, daemon: Daemon) -> ReloadResult | None:
        """On the data loop: run the reload asked for, if any, and answer its requesters."""
        with self._lock:
            req, self._pending = self._pending, None
        if req is None:
            return None
        try:
            result = self.reload(daemon, origin=", ".join(sorted(set(req.origins))))
        finally:
            req.result = req.result or ReloadResult(500, ("the reload raised; see the log",))
            req.done.set()
        req.result = result
        return result

    def reload(self, daemon: Daemon, *, origin: str = "") -> ReloadResult:
        """Load, validate and apply the configuration now (on the data loop)."""
        started = time.monotonic()
        self.notifier.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec(), STATUS="reloading")
        log.info("reloading the configuration from %s (%s)", self.loaded.path, origin or "asked")
        try:
            result = self._reload(daemon)
        except Exception as exc:  # nothing half-applied is left: see _Plan.commit
            log.exception("reload failed")
            result = ReloadResult(500, (f"{type(exc).__name__}: {exc}",))
        self.last, self.last_at = result, time.time()
        self.metrics.config_reload(result.ok)
        self.notifier.send(READY=1)
        took = time.monotonic() - started
        if result.ok:
            changes = "; ".join(result.changes) or "no change"
            log.info("configuration reloaded in %.2f s: %s", took, changes)
        else:
            for err in result.errors:
                log.error("%s", err)
            log.error(
                "reload refused (%d errors): the previous configuration keeps running",
                len(result.errors),
            )
        return result

    def _reload(self, daemon: Daemon) -> ReloadResult:
        try:
            new = self.load(self.loaded.path)
        except ConfigErrors as exc:
            return ReloadResult(400, tuple(str(e) for e in exc.errors))
        errors = restart_only_changes(self.loaded, new, state_dir_fixed=self.state_dir_fixed)
        if errors:
            return ReloadResult(400, tuple(errors))
        plan = _Plan(daemon, self.loaded, new, state_dir=self.state_dir, metrics=self.metrics)
        try:
            plan.build()
        except Exception as exc:
            plan.abandon()
            log.exception("reload: building the new configuration failed")
            return ReloadResult(500, (f"{type(exc).__name__}: {exc}",))
        try:
            daemon.listener.attach(plan.sources)
        except ValueError as exc:  # a push receiver on a path already served
            plan.abandon()
            return ReloadResult(400, (f"{new.path}: {exc}",))
        changes = plan.commit()
        self.loaded = new
        return ReloadResult(200, changes=tuple(changes))


class _Plan:
    """A reload in two phases: ``build`` the new parts (the daemon untouched), then ``commit``.

    Whatever may fail (opening sources, building notifiers) happens in ``build``; on a
    failure ``abandon`` closes what was opened and the daemon never saw any of it.
    ``commit`` swaps the parts in on the data loop.
    """

    def __init__(
        self,
        daemon: Daemon,
        old: LoadedConfig,
        new: LoadedConfig,
        *,
        state_dir: Path,
        metrics: Metrics,
    ) -> None:
        self.daemon = daemon
        self.old = old
        self.new = new
        self.state_dir = state_dir
        self.metrics = metrics
        self.sources: dict[str, Source] = {}
        self.opened: dict[str, Source] = {}  # changed and new sources, opened here
        self.engine: Engine | None = None
        self.kept_rules: dict[str, RuleRuntime] = {}
        self.router: Any = None
        self.outbox: Any = None
        self.changes: list[str] = []

    # -- build -------------------------------------------------------------------------

    def build(self) -> None:
        """Make every new part; the daemon is not touched."""
        self._build_engine()
        self._build_router()
        self._build_outbox()
        self._build_sources()

    def _build_engine(self) -> None:
        from aiops.logs.rules import LogEngine, log_rule_specs
        from aiops.pipeline.engine import Engine
        from aiops.service.app import render_template, rule_specs

        old_engine = self.daemon.engine
        specs = rule_specs(self.new)
        kept: list[str] = []
        changed: list[str] = []
        added: list[str] = []
        annotated: list[str] = []
        for spec in specs:
            rt = old_engine.rules.get(spec.key)
            if rt is None:
                added.append(spec.key)
            elif _definition(rt.spec) == _definition(spec):
                kept.append(spec.key)
                if rt.spec.annotations != spec.annotations or rt.spec.windows != spec.windows:
                    annotated.append(spec.key)
                self.kept_rules[spec.key] = rt
            else:
                changed.append(spec.key)
        keys = {s.key for s in specs}
        removed = [k for k in old_engine.rules if k not in keys]
        log_specs = log_rule_specs(self.new.groups, self.new.daemon.limits.max_series_per_rule)
        old_logs = old_engine.logs
        logs_changed = tuple(log_specs) != tuple(old_logs.specs)
        logs = LogEngine(log_specs, render=render_template) if logs_changed else old_logs
        engine = Engine(specs, render=render_template, logs=logs)
        self.engine = engine
        self._annotated = {k: s for s in specs if (k := s.key) in annotated}
        self._retired = [old_engine.rules[k] for k in (*changed, *removed)]
        self._logs_changed = logs_changed
        # Removed log rules: their versions keep what they learned (as removed rules' do).
        self._retired_logs = [r for k, r in old_logs.rules.items() if k not in logs.rules]
        for what, keys_ in (
            ("kept", kept),
            ("new", added),
            ("changed (start fresh)", changed),
            ("removed", removed),
        ):
            if keys_:
                self.changes.append(f"rules {what}: {', '.join(keys_)}")
        if logs_changed:
            self.changes.append("log rules changed: rebuilt, restoring what they can")

    def _build_router(self) -> None:
        from aiops.service.app import build_groups, build_router

        if self.new.alerting == self.old.alerting:
            return
        router = build_groups(self.new.alerting)
        current = self.daemon.router
        try:
            router.load_state_dict(current.state_dict())
        except Exception as exc:  # the groups start empty; alert states are the rules'
            log.error("reload: the alert groups' state does not fit the new routes: %s", exc)
        # Silences added while running (Slack buttons) stay; the file's are the new ones.
        configured = build_router(self.old.alerting).silences
        router.silences.extend(s for s in current.silences if s not in configured)
        self.router = router
        self.changes.append("alerting rebuilt (routes, receivers, silences, inhibitions)")

    def _build_outbox(self) -> None:
        from aiops.alerting.outbox import Outbox
        from aiops.service.app import build_outbox

        same = (
            self.new.alerting.receivers == self.old.alerting.receivers
            and self.new.daemon.delivery == self.old.daemon.delivery
        )
        if same:
            return
        current = self.daemon.dispatcher
        if not isinstance(current, Outbox):
            log.warning("reload: receivers changed but the delivery is not an outbox: kept")
            return
        outbox = build_outbox(self.new, state_dir=self.state_dir, metrics=self.metrics)
        outbox.drain_timeout = current.drain_timeout
        self.outbox = outbox
        self.changes.append("receivers restarted on the same outbox")

    def _build_sources(self) -> None:
        from aiops.registry import SOURCES
        from aiops.service.app import resolve_paths, rule_queries

        old_specs = self.old.daemon.sources
        old_queries = rule_queries(self.old)
        new_queries = rule_queries(self.new)
        current = self.daemon.sources
        kept: list[str] = []
        reopened: list[str] = []
        added: list[str] = []
        for sid, spec in self.new.daemon.sources.items():
            src = current.get(sid)
            before = old_specs.get(sid)
            queries = new_queries.get(sid, [])
            if src is not None and before == spec and old_queries.get(sid, []) == queries:
                self.sources[sid] = src
                kept.append(sid)
                continue
            resume = None
            same_kind = src is not None and before is not None and before.type == spec.type
            if same_kind and _path(before.config) == _path(spec.config):  # type: ignore[union-attr]
                resume = src.snapshot()  # type: ignore[union-attr]
            cls = SOURCES.get(spec.type)
            kwargs: dict[str, Any] = {"resume": resume}
            if cls.accepts_queries:
                kwargs["queries"] = queries
            opened = cls(sid, resolve_paths(spec.config, self.new.path.parent), **kwargs)
            self.opened[sid] = opened
            self.sources[sid] = opened
            (reopened if src is not None else added).append(sid)
        removed = [sid for sid in current if sid not in self.new.daemon.sources]
        self._closing = [current[sid] for sid in (*reopened, *removed)]
        self._closing_ids = [*reopened, *removed]
        for what, ids in (("reopened", reopened), ("new", added), ("removed", removed)):
            if ids:
                self.changes.append(f"sources {what}: {', '.join(ids)}")

    def abandon(self) -> None:
        """Close what ``build`` opened; the daemon goes on as it was."""
        for sid, src in self.opened.items():
            try:
                src.close()
            except Exception:
                log.exception("reload: closing source %s failed", sid)
        if self.outbox is not None:
            self.outbox.drain_timeout = 0
            self.outbox.close()
            self.daemon.metrics.watch_outbox(self.daemon.dispatcher.stats)  # type: ignore[attr-defined]

    # -- commit ------------------------------------------------------------------------

    def commit(self) -> list[str]:
        """Swap the new parts in (the listener already routes to the new receivers)."""
        d = self.daemon
        # What retiring receivers acknowledged is scored by the rules that were running.
        for sid, src in zip(self._closing_ids, self._closing, strict=True):
            if isinstance(src, HttpReceiver):
                src.stop_receiving()
                _drain(d, sid, src)
        resolved = [a for rt in self._retired for a in rt.resolve_all()]
        assert self.engine is not None
        for key, rt in self.kept_rules.items():
            if key in self._annotated:
                # Same definition; new annotations, and window rings kept or not, from now.
                rt.spec = self._annotated[key]
                rt.use_windows(rt.spec.windows)
        self.engine.adopt(self.kept_rules, d.engine.refused_states)
        if self._logs_changed:
            try:
                self.engine.logs.load_state_dict(d.engine.logs.state_dict())
            except Exception as exc:
                log.error("reload: the log rules' state does not fit; they start fresh: %s", exc)
                self.engine.logs = self.engine.logs.fresh()
        d.engine = self.engine
        # Versions for the rules started fresh; drift checks and retraining of the new rules.
        d.models.reloaded(d.engine, [*self._retired, *self._retired_logs], loaded=self.new)
        from aiops.models.retrain import wire_retraining

        wire_retraining(d, self.new, metrics=d.metrics)
        d.retraining.start(d.engine, restore=False)  # observers in place for the next batch
        if self.router is not None:
            d.router = self.router
        if self.outbox is not None:
            old = d.dispatcher
            old.flush()
            old.drain_timeout = 0  # type: ignore[attr-defined]
            old.close()
            d.dispatcher = self.outbox
            self.outbox.start()
        if resolved:
            self.changes.append(f"{len(resolved)} firing alerts of retired rules resolved")
            d.metrics.alerts(resolved)
            d.alerts_sent += len(resolved)
            d.dispatcher.submit(d.router.route(resolved))
        for src in self._closing:
            try:
                src.close()
            except Exception:
                log.exception("reload: closing a retired source failed")
        from aiops.service.daemon import SourceHealth

        d.health = {sid: d.health.get(sid) or SourceHealth() for sid in self.sources}
        for sid in self.opened:
            d.health[sid] = SourceHealth()
        d.sources = self.sources
        d.metrics.watch_sources(self.sources)
        interval = self.new.daemon.state.checkpoint_interval
        if interval != d.checkpoint_interval:
            self.changes.append(f"checkpoint_interval {d.checkpoint_interval:g}s -> {interval:g}s")
            d.checkpoint_interval = interval
        budget = int(self.new.daemon.limits.max_memory)
        if budget != d.memory.budget:
            self.changes.append(f"limits.max_memory {d.memory.budget} -> {budget} bytes")
            d.memory.set_budget(budget, d.engine)
        return self.changes


def _definition(spec: RuleSpec) -> dict[str, Any]:
    """What shapes a rule's state: every field but the presentation-only ones."""
    return {
        f.name: getattr(spec, f.name)
        for f in dataclasses.fields(spec)
        if f.name not in _PRESENTATION_ONLY
    }


def _path(config: Any) -> Any:
    """The file a source reads (its ``path`` setting), or None."""
    return getattr(config, "path", None)


#: Bound on draining one retired push receiver during a reload.
DRAIN_SECONDS = 30.0


def _drain(daemon: Daemon, sid: str, src: Source) -> None:
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline:
        try:
            batch = src.next_batch()
        except Exception as exc:
            log.warning("reload: draining source %s failed: %s", sid, exc)
            return
        if not batch:
            return
        daemon.handle(sid, batch)


class ReloadEndpoint:
    """``POST /-/reload`` on the daemon's listener (Prometheus' ``--web.enable-lifecycle``).

    Answers 200 with what changed once the data loop applied the reload; 400 with
    every error when the configuration is invalid (or needs a restart); 500 when it
    could not be applied; 503 while the daemon starts or stops, or when the loop did
    not get to it within :data:`RELOAD_WAIT_SECONDS` (it is still applied then).
    """

    http_path = RELOAD_PATH
    max_body_bytes = 1024

    def __init__(self, reloader: Reloader, *, wait: float = RELOAD_WAIT_SECONDS) -> None:
        self.reloader = reloader
        self.wait = wait
        self.accepting = False  # set by the daemon's hooks once its loop turns
        self._stopped = False

    def handle_http(self, request: HttpRequest) -> HttpResponse:
        """Ask for a reload and wait for its outcome."""
        if self._stopped or not self.accepting:
            return HttpResponse(503, b"the daemon is not running; no reload\n")
        req = self.reloader.request(f"POST {RELOAD_PATH} from {request.remote_addr or '?'}")
        if not req.done.wait(self.wait):
            return HttpResponse(
                503,
                f"the reload is queued but not applied after {self.wait:g} s\n".encode(),
                headers=(("Retry-After", "5"),),
            )
        result = req.result or ReloadResult(500, ("no result",))
        return HttpResponse(result.status, result.text().encode())

    def stop_receiving(self) -> None:
        """Refuse later requests (the daemon is stopping)."""
        self._stopped = True
