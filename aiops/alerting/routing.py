"""Routing and delivery: which receivers get an alert, and getting it to them.

The route tree follows Alertmanager: an alert walks down from the root; at each level
the first child whose matchers all match takes it (and, with ``continue``, later
siblings are tried too); the deepest matching routes name the receivers; the root
catches everything else. Silences drop alerts whose labels they match at the alert's
time; inhibit rules drop a target alert while a matching source alert fires with the
same ``equal`` labels; a route's mute (active) time intervals drop what falls inside
(outside) them. Times are the alert's own (data time), so replays route alike.

This :class:`Router` sends each alert transition at once, deciding with the alert's own
time (the backtest uses it: replays route alike); the daemon groups alerts first
(:mod:`aiops.alerting.groups`: ``group_wait``, ``group_interval``, ``repeat_interval``,
with silences, inhibitions and time intervals decided at flush).

The :class:`Dispatcher` sends a notification right away and keeps failures worth
retrying in a queue with exponential back-off, until ``max_age`` has passed.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from aiops.alerting.notify import (
    Alert,
    Delivered,
    DeliveryResult,
    Notification,
    Notifier,
    PermanentFailure,
    RetryAfter,
)

if TYPE_CHECKING:
    from aiops.alerting.groups import InhibitionIndex

__all__ = [
    "Dispatcher",
    "Inhibition",
    "LabelMatcher",
    "RouteNode",
    "Router",
    "SilenceWindow",
    "TimeWindow",
]

log = logging.getLogger(__name__)


class LabelMatcher(Protocol):
    """Anything with ``matches(labels) -> bool`` (Alertmanager matchers)."""

    def matches(self, labels: Mapping[str, str]) -> bool:
        """True if the labels satisfy the matcher."""
        ...


class TimeWindow(Protocol):
    """Anything with ``contains(ts) -> bool`` (a named time interval)."""

    def contains(self, ts: float) -> bool:
        """True if unix time ``ts`` falls inside."""
        ...


@dataclass(frozen=True)
class RouteNode:
    """One node of the route tree."""

    receiver: str
    matchers: Sequence[LabelMatcher] = ()
    continue_: bool = False
    routes: Sequence[RouteNode] = ()
    group_by: Sequence[str] = ()
    mute_during: Sequence[TimeWindow] = ()
    active_during: Sequence[TimeWindow] = ()
    #: Seconds; Alertmanager's defaults (:mod:`aiops.alerting.groups` applies them).
    group_wait: float = 30.0
    group_interval: float = 300.0
    repeat_interval: float = 4 * 3600.0

    def delivers_at(self, ts: float) -> bool:
        """False if a mute interval holds ``ts`` or no active interval does."""
        if any(w.contains(ts) for w in self.mute_during):
            return False
        return not self.active_during or any(w.contains(ts) for w in self.active_during)

    def match(self, labels: Mapping[str, str]) -> list[RouteNode]:
        """The deepest routes that take ``labels`` (this node if no child does)."""
        if not all(m.matches(labels) for m in self.matchers):
            return []
        found: list[RouteNode] = []
        for child in self.routes:
            taken = child.match(labels)
            if taken:
                found.extend(taken)
                if not child.continue_:
                    break
        return found or [self]


@dataclass(frozen=True)
class SilenceWindow:
    """Alerts whose labels match every matcher are muted between the two times."""

    matchers: Sequence[LabelMatcher]
    starts_at: float
    ends_at: float

    def mutes(self, alert: Alert, at: float) -> bool:
        """True if this silence is active at ``at`` and matches the alert."""
        return self.starts_at <= at < self.ends_at and all(
            m.matches(alert.labels) for m in self.matchers
        )


@dataclass(frozen=True)
class Inhibition:
    """While a source alert fires, target alerts with the same ``equal`` labels are muted."""

    source: Sequence[LabelMatcher]
    target: Sequence[LabelMatcher]
    equal: Sequence[str] = ()

    def inhibits(self, source: Mapping[str, str], target: Mapping[str, str]) -> bool:
        """True if ``source`` (firing) mutes ``target``."""
        return (
            all(m.matches(target) for m in self.target)
            and all(m.matches(source) for m in self.source)
            and all(source.get(k, "") == target.get(k, "") for k in self.equal)
        )


class Router:
    """Turns alerts into notifications, one per receiver, after silences and inhibitions.

    The router remembers which alerts fire (for inhibition) and which firing alerts it
    muted (so that their resolution is muted too); :meth:`state_dict` carries that
    across restarts inside the checkpoint.
    """

    def __init__(
        self,
        root: RouteNode,
        silences: Sequence[SilenceWindow] = (),
        inhibitions: Sequence[Inhibition] = (),
    ) -> None:
        self.root = root
        self.silences = list(silences)
        self.inhibitions = list(inhibitions)
        self.muted: Counter[str] = Counter()
        self._firing: dict[str, Mapping[str, str]] = {}
        self._suppressed: set[str] = set()
        self._index = self._new_index()

    def _new_index(self) -> InhibitionIndex:
        from aiops.alerting.groups import InhibitionIndex  # groups builds on this module

        return InhibitionIndex(self.inhibitions)

    @property
    def silenced(self) -> int:
        """How many alert transitions silences muted."""
        return self.muted["silenced"]

    def route(self, alerts: Sequence[Alert]) -> list[Notification]:
        """Notifications for a batch of alert transitions, in order."""
        out: list[Notification] = []
        for alert in alerts:
            fp = alert.fingerprint
            if alert.status == "firing":
                self._firing[fp] = alert.labels
                self._index.add(fp, alert.labels)
                reason = self._mute_reason(alert, alert.starts_at)
                if reason:
                    self.muted[reason] += 1
                    self._suppressed.add(fp)
                    continue
            else:
                self._firing.pop(fp, None)
                self._index.remove(fp)
                if fp in self._suppressed:
                    self._suppressed.discard(fp)
                    self.muted["resolution of muted alert"] += 1
                    continue
            at = alert.starts_at if alert.status == "firing" else (alert.ends_at or alert.starts_at)
            nodes = [n for n in self.root.match(alert.labels) if n.delivers_at(at)]
            if not nodes:
                self.muted["time interval"] += 1
            for node in {n.receiver: n for n in nodes}.values():
                group = {k: alert.labels.get(k, "") for k in node.group_by}
                out.append(Notification(node.receiver, [alert], group_labels=group))
        return out

    def flush(self) -> list[Notification]:
        """Nothing: this router sends each transition at once (see :mod:`.groups`)."""
        return []

    def drain(self) -> list[Notification]:
        """Nothing waits here."""
        return []

    def observe(self, data_time: float) -> None:
        """Times are the alerts' own; nothing to do."""

    def _mute_reason(self, alert: Alert, at: float) -> str:
        if any(s.mutes(alert, at) for s in self.silences):
            return "silenced"
        if self._index.inhibits(alert.labels):
            return "inhibited"
        return ""

    def state_dict(self) -> dict[str, object]:
        """Firing alerts' labels and the muted fingerprints, as JSON."""
        return {
            "firing": {fp: dict(labels) for fp, labels in self._firing.items()},
            "suppressed": sorted(self._suppressed),
        }

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore what :meth:`state_dict` returned."""
        firing = state.get("firing", {})
        suppressed = state.get("suppressed", [])
        self._firing = dict(firing) if isinstance(firing, dict) else {}
        self._suppressed = set(suppressed) if isinstance(suppressed, list) else set()
        self._index = self._new_index()
        for fp, labels in self._firing.items():
            self._index.add(fp, labels)


@dataclass(order=True)
class _Pending:
    due: float
    seq: int
    notification: Notification = field(compare=False)
    notifier: Notifier = field(compare=False)
    attempt: int = field(compare=False, default=1)
    first_try: float = field(compare=False, default=0.0)


class Dispatcher:
    """Delivers notifications to receivers' notifiers, retrying with back-off."""

    def __init__(
        self,
        receivers: Mapping[str, Sequence[Notifier]],
        *,
        clock: Callable[[], float] = time.monotonic,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        max_age: float = 3600.0,
    ) -> None:
        self.receivers = receivers
        self.clock = clock
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_age = max_age
        self.results: Counter[str] = Counter()
        self._queue: list[_Pending] = []
        self._seq = 0

    def start(self) -> None:
        """Nothing to start: this dispatcher sends from :meth:`submit` and :meth:`pump`."""

    def flush(self, timeout: float = 10.0) -> bool:
        """Nothing to flush: this dispatcher keeps nothing durable (True)."""
        return True

    def submit(self, notifications: Sequence[Notification]) -> None:
        """Try each notification now on every notifier of its receiver."""
        now = self.clock()
        for n in notifications:
            for notifier in self.receivers.get(n.receiver, ()):
                if n.action == "notify" or notifier.acknowledges:
                    self._attempt(_Pending(now, self._next_seq(), n, notifier, 1, now))

    def pump(self) -> None:
        """Retry the queued notifications whose time has come."""
        now = self.clock()
        while self._queue and self._queue[0].due <= now:
            self._attempt(heapq.heappop(self._queue))

    @property
    def queued(self) -> int:
        """Notifications waiting for a retry."""
        return len(self._queue)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _attempt(self, p: _Pending) -> None:
        try:
            result: DeliveryResult = p.notifier.send(p.notification)
        except Exception as exc:  # a notifier bug must not stop the daemon
            log.exception("notifier %s raised", type(p.notifier).__name__)
            result = RetryAfter(f"notifier raised {type(exc).__name__}: {exc}")
        receiver = p.notification.receiver
        if isinstance(result, Delivered):
            self.results["delivered"] += 1
            return
        if isinstance(result, PermanentFailure):
            self.results["failed"] += 1
            log.error("receiver %s: permanent delivery failure: %s", receiver, result.reason)
            return
        now = self.clock()
        if now - p.first_try >= self.max_age:
            self.results["expired"] += 1
            log.error(
                "receiver %s: giving up after %d attempts: %s", receiver, p.attempt, result.reason
            )
            return
        delay = min(self.max_delay, self.base_delay * 2 ** (p.attempt - 1))
        if result.seconds is not None:
            delay = max(delay, result.seconds)
        self.results["retried"] += 1
        log.warning("receiver %s: %s; retry %d in %.0fs", receiver, result.reason, p.attempt, delay)
        heapq.heappush(
            self._queue,
            _Pending(
                now + delay,
                self._next_seq(),
                p.notification,
                p.notifier,
                p.attempt + 1,
                p.first_try,
            ),
        )

    def close(self) -> None:
        """Close every notifier."""
        for notifiers in self.receivers.values():
            for n in notifiers:
                n.close()
