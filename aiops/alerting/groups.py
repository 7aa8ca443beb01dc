"""Aggregation groups: Alertmanager's dispatcher, on a clock passed in.

An alert walks the route tree (:class:`~aiops.alerting.routing.RouteNode`); in each route
that takes it, it joins the group of alerts with the same values of the route's
``group_by`` labels (``...``: all labels). A group is what one notification is about:

- a new group waits ``group_wait`` before its first flush, so alerts that start firing
  together (two alerts a second apart) make one notification;
- after that the group is flushed every ``group_interval``: a notification goes out when
  an alert started firing that the receiver has not been told about, or a told-about
  alert resolved (each resolution is sent once, then the alert leaves the group), or
  nothing changed for ``repeat_interval`` while alerts still fire;
- a group with no alerts left after a flush is removed.

What reaches the receiver is decided at each flush, per alert, with the state at that
moment, as Alertmanager's notification pipeline does (mute stages, then dedup against
what was last sent):

- silences: an alert matched by an active silence is left out; when the silence ends
  while the alert fires, the next flush sends it;
- inhibitions: an alert is left out while a firing source alert of an inhibit rule has
  the same ``equal`` label values; when the source resolves first, the next flush sends
  the target. An alert that matches both sides of a rule is not inhibited by alerts that
  also match both sides (itself included), only by source-only alerts (Alertmanager's
  ``inhibit.go``);
- time intervals: while a route's mute interval holds (or none of its active intervals
  does), its groups send nothing. A firing alert is sent at the first flush after the
  interval ends; a resolution only goes to a receiver that was sent the firing.

Inhibition is indexed: per rule, a count of firing source alerts by their ``equal``
label values (and of those that also match the target side), kept up to date as alerts
fire and resolve, so deciding whether an alert is inhibited costs one look-up per rule
whose target side it matches, whatever the number of firing alerts.

Timers: the groups' next flush times sit in a heap, so :meth:`Groups.flush` (called on
every turn of the daemon loop) costs one comparison when nothing is due. Times come
from the ``clock``. The daemon's is a :class:`DataClock`: time as far as the data has
come (the latest point time it has seen), so a live stream behaves as Alertmanager does
on its wall clock, while a replay, or a restart that replays from a checkpoint, gives
exactly the notifications of an uninterrupted live run. Each group is flushed *at its
due time* (silences and time intervals are evaluated then, and the next flush is one
``group_interval`` after it), and :meth:`Groups.route` flushes what fell due before each
alert's own time before inserting it, so the result does not depend on how the points
were cut into batches nor on when ``flush`` is called. A fake clock works in tests.

The state (groups, their alerts and what each receiver was last sent, and the firing
alerts behind inhibitions) is plain JSON (:meth:`Groups.state_dict`), kept in the
checkpoint, so a restart keeps the groups' timers and does not re-send what was sent.
It leaves out each alert's window of recent points (for charts), which would make every
checkpoint kilobytes per firing alert larger: an alert restored from a checkpoint is
notified without it until its next transition.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiops.alerting.notify import Alert, Notification
from aiops.alerting.routing import Inhibition, LabelMatcher, RouteNode, SilenceWindow
from aiops.alerting.selector import Matcher

__all__ = ["GROUP_BY_ALL", "DataClock", "Groups", "InhibitionIndex", "alert_time", "group_key"]

log = logging.getLogger(__name__)

GROUP_BY_ALL = "..."
"""The ``group_by`` entry that groups by every label (each label set is its own group)."""

STATE_VERSION = 1

#: What ``json.dumps(text, ensure_ascii=False)`` returns for a string, without the
#: encoder object it builds each call (group keys are made for every alert).
_quote = json.encoder.encode_basestring


def group_key(route_id: str, labels: Mapping[str, str]) -> str:
    """The identity of a group: its route and its group labels.

    >>> group_key("0.1", {"service": "db", "alertname": "Lat"})
    '0.1:{alertname="Lat", service="db"}'
    """
    inner = ", ".join(
        f"{k}={_quote(v) if type(v) is str else json.dumps(v, ensure_ascii=False)}"
        for k, v in sorted(labels.items())
    )
    return f"{route_id}:{{{inner}}}"


class DataClock:
    """Time as far as the data has come: the latest time :meth:`advance_to` was given.

    It never moves backwards (late points do not rewind it).

    >>> c = DataClock(); c.advance_to(100.0); c.advance_to(50.0); c()
    100.0
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        """The latest data time seen."""
        return self.now

    def advance_to(self, t: float) -> None:
        """The data has reached ``t`` (NaN and earlier times are ignored)."""
        if t > self.now:
            self.now = t


def _ignore(t: float) -> None:
    """A wall or fake clock moves by itself; data times do not move it."""


def alert_time(alert: Alert) -> float:
    """When the transition happened: the start of a firing, the end of a resolution."""
    if alert.status == "resolved" and alert.ends_at is not None:
        return alert.ends_at
    return alert.starts_at


def _group_labels(node: RouteNode, labels: Mapping[str, str]) -> dict[str, str]:
    if tuple(node.group_by) == (GROUP_BY_ALL,):
        return dict(labels)
    return {k: labels[k] for k in node.group_by if k in labels}


class InhibitionIndex:
    """Which firing alerts inhibit which, by rule and ``equal`` label values.

    ``add`` a firing alert, ``remove`` it when it resolves; ``inhibits(labels)`` says
    whether an alert with these labels is muted now. Each alert's side matches are
    computed once, when it is first added.

    >>> from aiops.alerting.selector import Matcher
    >>> rule = Inhibition([Matcher("severity", "=", "critical")],
    ...                   [Matcher("severity", "=", "warning")], ["host"])
    >>> index = InhibitionIndex([rule])
    >>> index.add("c1", {"severity": "critical", "host": "a"})
    >>> index.inhibits({"severity": "warning", "host": "a"}), index.inhibits(
    ...     {"severity": "warning", "host": "b"})
    (True, False)
    >>> index.remove("c1")
    >>> index.inhibits({"severity": "warning", "host": "a"})
    False
    """

    def __init__(self, rules: Sequence[Inhibition]) -> None:
        self.rules = list(rules)
        self._sides = [(tuple(r.source), tuple(r.target), tuple(r.equal)) for r in self.rules]
        # (rule, equal values) -> [firing sources, of which also match the target side]
        self._counts: dict[tuple[int, tuple[str, ...]], list[int]] = {}
        self._entries: dict[str, list[tuple[int, tuple[str, ...], bool]]] = {}
        # (equal, its values) -> how many keys of _counts have them: an alert whose
        # values are not here is muted by no rule of that ``equal`` (one look-up for all)
        self._live: Counter[tuple[tuple[str, ...], tuple[str, ...]]] = Counter()
        # Which sides of which rules a label set matches depends only on the values of
        # the labels the matchers name (absent: ""), and alerts share few of those (an
        # alert name, a severity): the answer is kept per tuple of those values, so an
        # alert costs one look-up instead of the matchers of every rule. Only for
        # matchers known to read just their own label (Matcher); others are asked.
        matchers = [m for source, target, _ in self._sides for m in (*source, *target)]
        self._names: tuple[str, ...] | None = (
            tuple(sorted({m.name for m in matchers if isinstance(m, Matcher)}))
            if all(type(m) is Matcher for m in matchers)
            else None
        )
        self._matched: dict[tuple[str, ...], _Matched] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _match(self, labels: Mapping[str, str]) -> _Matched:
        """The rules whose source, and whose target, side ``labels`` match.

        Sources as ``(rule, equal, matches the target side too)``; targets by their
        ``equal``: ``(equal, ((rule, matches the source side too), ...))``.
        """
        names = self._names
        if names is not None:
            key = tuple([labels.get(n, "") for n in names])
            hit = self._matched.get(key)
            if hit is not None:
                return hit
        sources = []
        targets: dict[tuple[str, ...], list[tuple[int, bool]]] = {}
        for i, (source, target, equal) in enumerate(self._sides):
            is_source, is_target = _all_match(source, labels), _all_match(target, labels)
            if is_source:
                sources.append((i, equal, is_target))
            if is_target:
                targets.setdefault(equal, []).append((i, is_source))
        hit = (tuple(sources), tuple((e, tuple(r)) for e, r in targets.items()))
        if names is not None:
            if len(self._matched) >= _MATCHES_KEPT:
                self._matched.clear()
            self._matched[key] = hit
        return hit

    def add(self, fingerprint: str, labels: Mapping[str, str]) -> None:
        """Count a firing alert as a source of every rule whose source side it matches."""
        if fingerprint in self._entries:
            return
        entries = []
        for i, equal, two_sided in self._match(labels)[0]:
            values = tuple([labels.get(k, "") for k in equal])
            counts = self._counts.get((i, values))
            if counts is None:
                counts = self._counts[(i, values)] = [0, 0]
                self._live[(equal, values)] += 1
            counts[0] += 1
            counts[1] += two_sided
            entries.append((i, values, two_sided))
        self._entries[fingerprint] = entries

    def remove(self, fingerprint: str) -> None:
        """Stop counting an alert (it resolved)."""
        for rule, values, two_sided in self._entries.pop(fingerprint, ()):
            key = (rule, values)
            counts = self._counts[key]
            counts[0] -= 1
            counts[1] -= two_sided
            if counts[0] == 0:
                del self._counts[key]
                live = (self._sides[rule][2], values)
                self._live[live] -= 1
                if not self._live[live]:
                    del self._live[live]

    def inhibits(self, labels: Mapping[str, str]) -> bool:
        """True if a firing source alert mutes an alert with these labels."""
        if not self._counts:
            return False
        live = self._live
        for equal, rules in self._match(labels)[1]:
            values = tuple([labels.get(k, "") for k in equal])
            if (equal, values) not in live:
                continue
            for i, also_source in rules:
                counts = self._counts.get((i, values))
                if counts is None:
                    continue
                # A target that is also a source is muted only by sources that are not.
                if also_source:
                    if counts[0] - counts[1] > 0:
                        return True
                elif counts[0] > 0:
                    return True
        return False


#: The rules whose source side a label set matches, and those whose target side it
#: matches, by ``equal`` (:meth:`InhibitionIndex._match`).
_Matched = tuple[
    tuple[tuple[int, tuple[str, ...], bool], ...],
    tuple[tuple[tuple[str, ...], tuple[tuple[int, bool], ...]], ...],
]
#: Label-value tuples whose matches an :class:`InhibitionIndex` keeps (then starts over).
_MATCHES_KEPT = 10_000


def _all_match(matchers: tuple[LabelMatcher, ...], labels: Mapping[str, str]) -> bool:
    # A plain loop: this runs rules x alerts times, and a generator costs twice as much.
    for m in matchers:  # noqa: SIM110
        if not m.matches(labels):
            return False
    return True


@dataclass
class _Group:
    key: str
    route: str
    labels: dict[str, str]
    alerts: dict[str, Alert] = field(default_factory=dict)
    due: float = 0.0
    # What the receiver was last sent (Alertmanager's notification log entry).
    sent_at: float | None = None
    sent_firing: set[str] = field(default_factory=set)
    sent_resolved: set[str] = field(default_factory=set)
    repeats: int = 0  # the last notification was the n-th repeat of the same content


class Groups:
    """Alerts in, grouped notifications out when their groups are due.

    :meth:`route` takes alert transitions (and returns what is due right away, which
    with a ``group_wait`` of 0 is their groups' first notification); :meth:`flush`
    returns the notifications of every group due by the clock; :meth:`observe` moves a
    :class:`DataClock` on; :meth:`drain` flushes every group once, due or not (the data
    has ended). ``silences`` may be appended to while running (answers from Slack
    buttons). ``on_notify``, if set, is told ``(due, notification)`` of every flushed
    notification with the clock time its group was due (a backtest counts them per day).
    """

    def __init__(
        self,
        root: RouteNode,
        silences: Sequence[SilenceWindow] = (),
        inhibitions: Sequence[Inhibition] = (),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.silences = list(silences)
        self.inhibitions = list(inhibitions)
        self.clock = clock
        advance = getattr(clock, "advance_to", None)
        self._advance: Callable[[float], None] = advance if callable(advance) else _ignore
        self.muted: Counter[str] = Counter()
        self.index = InhibitionIndex(self.inhibitions)
        self._firing: dict[str, Mapping[str, str]] = {}
        self._groups: dict[str, _Group] = {}
        self._heap: list[tuple[float, str]] = []
        self._acks: list[Notification] = []
        self.on_notify: Callable[[float, Notification], None] | None = None
        self._routes: dict[str, RouteNode] = {}
        self._route_ids: dict[int, str] = {}
        self._number(root, "0")

    def _number(self, node: RouteNode, route_id: str) -> None:
        self._routes[route_id] = node
        self._route_ids[id(node)] = route_id
        for i, child in enumerate(node.routes):
            self._number(child, f"{route_id}.{i}")

    # -- the data loop's side ---------------------------------------------------------

    def route(self, alerts: Iterable[Alert]) -> list[Notification]:
        """Put alert transitions into their groups, in time order; return what is due.

        Before each alert, the clock is moved to the alert's time (a :class:`DataClock`;
        other clocks move by themselves) and what fell due before it is flushed.
        """
        out: list[Notification] = []
        for alert in sorted(alerts, key=alert_time):
            self._advance(alert_time(alert))
            out.extend(self.flush())
            self.insert([alert])
        out.extend(self.flush())
        return out

    def observe(self, data_time: float) -> None:
        """The data has reached ``data_time`` (moves a :class:`DataClock`)."""
        self._advance(data_time)

    def insert(self, alerts: Iterable[Alert]) -> None:
        """Put alert transitions into their groups (new groups start their wait)."""
        now = self.clock()
        for alert in alerts:
            fp = alert.fingerprint
            if alert.status == "firing":
                self._firing[fp] = alert.labels
                self.index.add(fp, alert.labels)
            else:
                self._firing.pop(fp, None)
                self.index.remove(fp)
            for node in self.root.match(alert.labels):
                route_id = self._route_ids[id(node)]
                labels = _group_labels(node, alert.labels)
                key = group_key(route_id, labels)
                group = self._groups.get(key)
                if group is None:
                    group = _Group(key, route_id, labels, due=now + node.group_wait)
                    self._groups[key] = group
                    heapq.heappush(self._heap, (group.due, key))
                group.alerts[fp] = alert

    def acknowledge(self, fingerprint: str, actor: str = "") -> int:
        """Someone took the firing alert ``fingerprint`` on: tell the receivers it went to.

        One ``action="acknowledge"`` notification for each group that holds the alert
        firing and whose receiver was sent it, returned by the next :meth:`flush` (at
        once: an acknowledgement waits for no timer). Only notifiers with an
        acknowledged state are handed it (PagerDuty, Opsgenie): with their default
        ``incident: group`` that acknowledges the group's incident. Returns how many.
        Not in the state: an acknowledgement is sent once, and the Slack message keeps it.
        """
        n = 0
        for group in self._groups.values():
            alert = group.alerts.get(fingerprint)
            if alert is None or alert.status != "firing" or fingerprint not in group.sent_firing:
                continue
            self._acks.append(
                Notification(
                    self._routes[group.route].receiver,
                    [alert],
                    group_labels=dict(group.labels),
                    action="acknowledge",
                    actor=actor,
                )
            )
            n += 1
        return n

    def flush(self) -> list[Notification]:
        """The notifications of every group whose time has come, by the clock."""
        now = self.clock()
        out: list[Notification] = self._acks
        self._acks = []
        while self._heap and self._heap[0][0] <= now:
            due, key = heapq.heappop(self._heap)
            notification = self._flush_due(due, key)
            if notification is not None:
                out.append(notification)
        return out

    def drain(self) -> list[Notification]:
        """Flush every group once, at its due time, due or not: the data has ended.

        A finite replay calls this at its end, so the alerts of its last group waits are
        notified; groups that still hold firing alerts stay, with their next flush.
        """
        pending = sorted(self._heap)
        self._heap = []
        out, self._acks = self._acks, []
        out += [n for due, key in pending if (n := self._flush_due(due, key)) is not None]
        return out

    def _flush_due(self, due: float, key: str) -> Notification | None:
        group = self._groups.get(key)
        if group is None or group.due != due:
            return None  # a stale timer (the group was rescheduled or removed)
        node = self._routes[group.route]
        notification = self._flush(group, node, due)
        if notification is not None and self.on_notify is not None:
            self.on_notify(due, notification)
        if group.alerts:
            # The next tick after the clock: when the clock jumped (a backfill, a replay,
            # a quiet source), the ticks it skipped are one flush, as a timer that fired
            # late would do, not one pass per group_interval of the gap.
            skipped = max(0.0, math.floor((self.clock() - due) / node.group_interval))
            group.due = due + (skipped + 1.0) * node.group_interval
            heapq.heappush(self._heap, (group.due, key))
        else:
            del self._groups[key]
        return notification

    @property
    def next_due(self) -> float:
        """Clock time of the next flush (``inf`` if no group waits)."""
        return self._heap[0][0] if self._heap else math.inf

    def __len__(self) -> int:
        """The number of groups."""
        return len(self._groups)

    def _flush(self, group: _Group, node: RouteNode, now: float) -> Notification | None:
        alerts = sorted(group.alerts.values(), key=lambda a: sorted(a.labels.items()))
        # Resolved alerts leave the group with this flush, sent or not.
        for a in alerts:
            if a.status == "resolved":
                del group.alerts[a.fingerprint]
        if not node.delivers_at(now):
            self.muted["time interval"] += len(alerts)
            return None
        firing: list[Alert] = []
        resolved: list[Alert] = []
        for a in alerts:
            reason = self._mute_reason(a, now)
            if reason:
                self.muted[reason] += 1
            elif a.status == "firing":
                firing.append(a)
            elif a.fingerprint in group.sent_firing:
                resolved.append(a)  # only a receiver that was told it fired hears it ended
        firing_fps = {a.fingerprint for a in firing}
        resolved_fps = {a.fingerprint for a in resolved}
        if not (firing or resolved) or not self._needs_update(
            group, node, firing_fps, resolved_fps, now
        ):
            return None
        same = firing_fps == group.sent_firing and resolved_fps == group.sent_resolved
        group.repeats = group.repeats + 1 if same and group.sent_at is not None else 0
        group.sent_at = now
        group.sent_firing = firing_fps
        group.sent_resolved = resolved_fps
        return Notification(
            node.receiver,
            [*firing, *resolved],
            group_labels=dict(group.labels),
            repeat=group.repeats,
        )

    @staticmethod
    def _needs_update(
        group: _Group, node: RouteNode, firing: set[str], resolved: set[str], now: float
    ) -> bool:
        """Alertmanager's dedup stage against the last notification of this group."""
        if group.sent_at is None:
            return bool(firing)
        if not firing <= group.sent_firing:
            return True  # something new fires
        if not firing:
            return bool(group.sent_firing)  # all told-about alerts resolved
        if not resolved <= group.sent_resolved:
            return True
        return group.sent_at <= now - node.repeat_interval

    def _mute_reason(self, alert: Alert, now: float) -> str:
        if any(s.mutes(alert, now) for s in self.silences):
            return "silenced"
        if self.index.inhibits(alert.labels):
            return "inhibited"
        return ""

    # -- state --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Groups, their alerts, what was last sent, and the firing alerts, as JSON."""
        return {
            "version": STATE_VERSION,
            "groups": [
                {
                    "route": g.route,
                    "labels": dict(g.labels),
                    "due": g.due,
                    "sent_at": g.sent_at,
                    "sent_firing": sorted(g.sent_firing),
                    "sent_resolved": sorted(g.sent_resolved),
                    "repeats": g.repeats,
                    "alerts": [_alert_state(a) for a in g.alerts.values()],
                }
                for g in self._groups.values()
            ],
            "firing": {fp: dict(labels) for fp, labels in self._firing.items()},
            "clock": self.clock(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; groups of routes no longer configured are dropped.

        A state from before groups existed (the immediate router's) restores nothing.
        """
        self._groups.clear()
        self._heap.clear()
        self._firing.clear()
        self.index = InhibitionIndex(self.inhibitions)
        if state.get("version") != STATE_VERSION:
            return
        self._advance(float(state.get("clock", -math.inf)))
        for fp, labels in dict(state.get("firing", {})).items():
            self._firing[fp] = dict(labels)
            self.index.add(fp, self._firing[fp])
        dropped = 0
        for doc in state.get("groups", []):
            route_id = str(doc["route"])
            if route_id not in self._routes:
                dropped += 1
                continue
            labels = {str(k): str(v) for k, v in doc["labels"].items()}
            key = group_key(route_id, labels)
            sent_at = doc.get("sent_at")
            group = _Group(
                key,
                route_id,
                labels,
                alerts={a.fingerprint: a for a in map(_alert_from_state, doc["alerts"])},
                due=float(doc["due"]),
                sent_at=None if sent_at is None else float(sent_at),
                sent_firing=set(doc.get("sent_firing", [])),
                sent_resolved=set(doc.get("sent_resolved", [])),
                repeats=int(doc.get("repeats", 0)),
            )
            self._groups[key] = group
            heapq.heappush(self._heap, (group.due, key))
        if dropped:
            log.warning("%d alert groups of routes no longer configured were dropped", dropped)


def _nan_to_none(x: float) -> float | None:
    return None if x != x else x


def _alert_state(a: Alert) -> dict[str, Any]:
    return {
        "fingerprint": a.fingerprint,
        "status": a.status,
        "labels": dict(a.labels),
        "annotations": dict(a.annotations),
        "starts_at": a.starts_at,
        "ends_at": a.ends_at,
        "value": _nan_to_none(a.value),
        "score": _nan_to_none(a.score),
        "series": a.series,
        "rule": a.rule,
        "detector": a.detector,
        "model_version": a.model_version,
        # Not the window of recent points (about 4 kB an alert, in every checkpoint): an
        # alert restored from a checkpoint is sent without its chart until it changes.
    }


def _alert_from_state(doc: Mapping[str, Any]) -> Alert:
    value, score = doc.get("value"), doc.get("score")
    ends_at = doc.get("ends_at")
    return Alert(
        fingerprint=str(doc["fingerprint"]),
        status="firing" if doc["status"] == "firing" else "resolved",
        labels=dict(doc["labels"]),
        annotations=dict(doc.get("annotations", {})),
        starts_at=float(doc["starts_at"]),
        ends_at=None if ends_at is None else float(ends_at),
        value=math.nan if value is None else float(value),
        score=math.nan if score is None else float(score),
        series=str(doc.get("series", "")),
        rule=str(doc.get("rule", "")),
        detector=str(doc.get("detector", "")),
        model_version=str(doc.get("model_version", "")),
    )
