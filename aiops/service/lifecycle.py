"""The daemon as a service: signals, the stop deadline, systemd notifications, status.

:class:`Supervisor` runs the daemon's loop in a thread of its own and keeps the main
thread for signals, so that a signal is handled at once whatever the loop is doing:

==========  =============================================================================
signal      effect
==========  =============================================================================
SIGHUP      reload the configuration (:mod:`aiops.service.reload`), between two loop steps
SIGTERM,    stop: the listener stops, push receivers are drained, the final checkpoint
SIGINT      is written, notifiers get a few seconds to send what is due. A second one
            hurries: draining stops, the final checkpoint is still written, and the
            process exits as soon as it is (queued notifications stay in the outbox for
            the next start). A third exits at once (the previous checkpoint stays).
SIGUSR1     logs a state summary (rules, series, sources, checkpoint age, outbox)
SIGQUIT     writes every thread's stack to stderr; the daemon goes on
SIGUSR2,    logged and ignored (never fatal)
SIGALRM,
SIGVTALRM,
SIGPROF,
SIGIO,
SIGPWR,
SIGXCPU
SIGPIPE,    ignored (a write to a closed pipe or past a file size limit fails with an
SIGXFSZ     error the daemon already handles)
==========  =============================================================================

The stop has a deadline (``stop_timeout``, default :data:`STOP_TIMEOUT`, under the
shipped unit's ``TimeoutStopSec=60s``): at half of it the stop hurries as on a second
SIGTERM, and at the deadline the process exits even if a step still runs (exit status
0 if the final checkpoint was written, else 1; the previous checkpoint is intact, as
every checkpoint is written atomically).

:class:`ServiceHooks` observes the loop (``Daemon.observers``): it applies reloads
between steps, and tells systemd ``READY=1``, ``WATCHDOG=1`` (from the loop, so a hung
loop stops the pings), ``STATUS=`` and ``STOPPING=1``.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

from aiops.service.http import HttpServer
from aiops.service.reload import ReloadEndpoint, Reloader
from aiops.service.sdnotify import NullNotifier, SystemdNotifier, notifier_from_env

if TYPE_CHECKING:
    from pathlib import Path

    from aiops.config import LoadedConfig
    from aiops.service.daemon import Daemon

__all__ = ["STOP_TIMEOUT", "ServiceHooks", "Supervisor", "service", "state_summary"]

log = logging.getLogger(__name__)

#: Seconds a stop may take before the process exits anyway (systemd's TimeoutStopSec
#: is 60 s in the shipped unit; this leaves it margin).
STOP_TIMEOUT = 50.0
#: Seconds between two ``STATUS=`` lines sent to systemd.
STATUS_EVERY = 5.0

#: Signals that are logged and otherwise ignored (their default action would kill).
IGNORED_SIGNALS = ("SIGUSR2", "SIGALRM", "SIGVTALRM", "SIGPROF", "SIGIO", "SIGPWR", "SIGXCPU")
#: Signals ignored without a log line.
SILENT_SIGNALS = ("SIGPIPE", "SIGXFSZ")

Notifier = SystemdNotifier | NullNotifier


def state_summary(daemon: Daemon) -> str:
    """One line for ``STATUS=`` and SIGUSR1: rules, series, sources, checkpoint age.

    Reads only what the loop replaces whole (safe from another thread).
    """
    rules = list(daemon.engine.rules.values())
    series = sum(len(rt.registry) for rt in rules)
    health = daemon.health_report
    bad = sorted(sid for sid, h in health.items() if h.get("state") != "ok")
    age = daemon.clock() - getattr(daemon, "_last_checkpoint", daemon.clock())
    parts = [
        f"scoring {len(rules)} rules, {series} series",
        f"{len(health)} sources" + (f" ({', '.join(bad)} not ok)" if bad else ""),
        f"last checkpoint {age:.0f} s ago",
    ]
    degraded = [rt.spec.key for rt in rules if getattr(getattr(rt, "health", None), "degraded", 0)]
    if degraded:
        parts.append(f"degraded rules: {', '.join(degraded)}")
    return ", ".join(parts)


class ServiceHooks:
    """Loop observer: reloads between steps, systemd notifications, status lines."""

    def __init__(
        self,
        *,
        reloader: Reloader | None = None,
        notifier: Notifier | None = None,
        endpoint: ReloadEndpoint | None = None,
        status_every: float = STATUS_EVERY,
    ) -> None:
        self.reloader = reloader
        self.notifier = notifier or NullNotifier()
        self.endpoint = endpoint
        self.status_every = status_every
        self._next_ping = 0.0
        self._next_status = 0.0

    def started(self, daemon: Daemon) -> None:
        """The checkpoint is loaded and the sources are open: ready."""
        if self.endpoint is not None:
            self.endpoint.accepting = True
        self.notifier.send(READY=1, STATUS=self.status(daemon))
        now = time.monotonic()
        self._next_ping = now  # the first ping goes with the first turn
        self._next_status = now + self.status_every

    def turned(self, daemon: Daemon) -> None:
        """Between two steps, on the loop's thread: reload if asked, ping, status."""
        if self.reloader is not None and self.reloader.pending:
            self.reloader.apply_pending(daemon)
            self._next_status = 0.0
        now = time.monotonic()
        interval = self.notifier.watchdog_seconds
        if interval and now >= self._next_ping:
            self.notifier.send(WATCHDOG=1)
            self._next_ping = now + interval
        if now >= self._next_status:
            self.notifier.send(STATUS=self.status(daemon))
            self._next_status = now + self.status_every

    def stopping(self, daemon: Daemon) -> None:
        """The loop ended: refuse reloads, tell systemd."""
        if self.endpoint is not None:
            self.endpoint.accepting = False
        self.notifier.send(STOPPING=1, STATUS="stopping: final checkpoint")

    def status(self, daemon: Daemon) -> str:
        """The ``STATUS=`` line: the state summary, and a failed reload if the last was."""
        text = state_summary(daemon)
        last = self.reloader.last if self.reloader is not None else None
        if last is not None and not last.ok:
            when = time.strftime("%H:%M:%S", time.gmtime(self.reloader.last_at))  # type: ignore[union-attr]
            text += (
                f"; reload at {when} UTC refused ({len(last.errors)} errors), "
                "the previous configuration runs"
            )
        return text


class Supervisor:
    """Runs ``daemon`` in a loop thread; the main thread handles signals and the deadline.

    :meth:`run` must be called from the main thread (Python delivers signals there);
    it returns when the daemon stopped, or exits the process when the stop passes its
    deadline. Exceptions of the loop (a listener that cannot bind) are raised again.
    """

    def __init__(
        self,
        daemon: Daemon,
        *,
        reloader: Reloader | None = None,
        notifier: Notifier | None = None,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self.daemon = daemon
        self.reloader = reloader
        self.notifier = notifier or NullNotifier()
        self.stop_timeout = stop_timeout
        self.stop = threading.Event()
        self._stops = 0
        self._stopping_since: float | None = None
        self._hurried = False
        self._error: BaseException | None = None

    # -- signals -----------------------------------------------------------------------

    def install(self) -> None:
        """Install the handlers (main thread only)."""
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        signal.signal(signal.SIGUSR1, self._on_summary)
        signal.signal(signal.SIGQUIT, self._on_stacks)
        for name in IGNORED_SIGNALS:
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), self._on_ignored)
        for name in SILENT_SIGNALS:
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), signal.SIG_IGN)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self._stops += 1
        if self._stops == 1:
            log.info(
                "received %s: final checkpoint, then exit (within %.0f s; another %s hurries)",
                name,
                self.stop_timeout,
                name,
            )
            self.begin_stop()
        elif self._stops == 2:
            self.hurry(f"received {name} again")
        else:
            log.error("received %s a third time: exiting now, without a final checkpoint", name)
            self._exit(1)

    def begin_stop(self) -> None:
        """Stop the loop; the deadline starts now."""
        if self._stopping_since is None:
            self._stopping_since = time.monotonic()
            self.notifier.send(STOPPING=1, STATUS="stopping: final checkpoint")
        self.stop.set()

    def hurry(self, why: str) -> None:
        """Stop draining; exit as soon as the final checkpoint is written."""
        if self._hurried:
            return
        self._hurried = True
        log.warning(
            "%s: stopping faster: draining ends, the final checkpoint is written, queued "
            "notifications stay in the outbox for the next start",
            why,
        )
        self.daemon.hurry.set()
        if hasattr(self.daemon.dispatcher, "drain_timeout"):
            self.daemon.dispatcher.drain_timeout = 0.0
        self.stop.set()

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        if self.reloader is None:
            log.warning("received SIGHUP: this daemon has no configuration file to reload")
            return
        if self._stopping_since is not None:
            log.info("received SIGHUP while stopping: no reload")
            return
        log.info("received SIGHUP: reloading the configuration")
        self.reloader.request("SIGHUP")

    def _on_summary(self, signum: int, frame: FrameType | None) -> None:
        d = self.daemon
        outbox = getattr(d.dispatcher, "results", {})
        log.info(
            "state (SIGUSR1): %s; alerts %d; notifications %s; loop %s",
            state_summary(d),
            d.alerts_sent,
            ", ".join(f"{k}={v}" for k, v in sorted(outbox.items())) or "none",
            "running" if d.ready else "not running",
        )

    def _on_stacks(self, signum: int, frame: FrameType | None) -> None:
        log.warning("received SIGQUIT: thread stacks follow on stderr; the daemon goes on")
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)

    def _on_ignored(self, signum: int, frame: FrameType | None) -> None:
        log.warning("received %s: ignored", signal.Signals(signum).name)

    # -- running -----------------------------------------------------------------------

    def run(self, *, until_exhausted: bool = False) -> None:
        """Run the daemon to its end; enforce the stop deadline."""
        loop = threading.Thread(
            target=self._loop, args=(until_exhausted,), name="aiops-loop", daemon=True
        )
        loop.start()
        while loop.is_alive():
            loop.join(0.2)
            self._check_deadline()
        if self._error is not None:
            raise self._error

    def _loop(self, until_exhausted: bool) -> None:
        try:
            self.daemon.run(self.stop, until_exhausted=until_exhausted)
        except BaseException as exc:  # handed to the main thread
            self._error = exc

    def _check_deadline(self) -> None:
        since = self._stopping_since
        if since is None:
            return
        elapsed = time.monotonic() - since
        if not self._hurried and elapsed >= self.stop_timeout / 2:
            self.hurry(f"the stop has taken {elapsed:.0f} s")
        done = self.daemon.final_checkpoint_done
        if self._hurried and done:
            log.info("final checkpoint written; exiting (stopped in %.1f s)", elapsed)
            self._exit(0)
        if elapsed >= self.stop_timeout:
            if done:
                log.warning("stop deadline (%.0f s) passed: exiting now", self.stop_timeout)
                self._exit(0)
            log.error(
                "stop deadline (%.0f s) passed before the final checkpoint was written: "
                "exiting; the daemon resumes from the previous checkpoint",
                self.stop_timeout,
            )
            self._exit(1)

    @staticmethod
    def _exit(code: int) -> None:
        logging.shutdown()
        sys.stderr.flush()
        os._exit(code)


def service(
    daemon: Daemon,
    loaded: LoadedConfig,
    *,
    state_dir: Path,
    state_dir_fixed: bool = False,
    stop_timeout: float = STOP_TIMEOUT,
) -> Supervisor:
    """Wire reloads, systemd notifications and signals around ``daemon``; main thread.

    ``POST /-/reload`` is mounted when the daemon has a listener (before it starts, so
    no source can claim the path). Signal handlers are installed; call ``run()``.
    """
    notifier = notifier_from_env()
    reloader = Reloader(
        loaded,
        state_dir=state_dir,
        state_dir_fixed=state_dir_fixed,
        metrics=daemon.metrics,
        notifier=notifier,
    )
    endpoint = None
    if isinstance(daemon.listener, HttpServer):
        endpoint = ReloadEndpoint(reloader)
        daemon.listener.mount(endpoint)
    daemon.observers.append(ServiceHooks(reloader=reloader, notifier=notifier, endpoint=endpoint))
    supervisor = Supervisor(daemon, reloader=reloader, notifier=notifier, stop_timeout=stop_timeout)
    supervisor.install()
    return supervisor
