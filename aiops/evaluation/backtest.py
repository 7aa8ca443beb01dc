"""Backtesting: replay recorded data through the rules and count what would have alerted.

``aiops backtest`` reads the sources of a daemon config that have a past to replay:
*finite* sources (file sources that are not followed, the simulator with a
``duration``) from their start, and *pull* sources (Prometheus) over ``--from`` /
``--to``, through their :meth:`~aiops.pipeline.source.Source.history` (each rule's query at the
evaluation times live evaluation would have used, in range queries small enough for
Prometheus). The points go through the real :class:`~aiops.pipeline.engine.Engine` and the real
:class:`~aiops.alerting.routing.Router` (route tree, silences, inhibitions, time intervals).
Nothing is sent and nothing is written to the config's state directory: there are no
notifiers, no checkpoints and no dead letters.

The report counts alert transitions per UTC day, per rule and per receiver after
routing, and the notifications the daemon would have sent: the same alerts through
the daemon's aggregation groups (:class:`~aiops.alerting.groups.Groups` on the data's
clock: ``group_by``, ``group_wait``, ``group_interval``, ``repeat_interval``), per day
and receiver, which is what a person on call would have been paged. With an output
directory it also writes ``alerts.csv``, ``notifications.csv``, ``summary.json`` and
``alerts_per_day.png``.

Not yet: push sources that only receive live data (Kafka, remote write) are refused.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from aiops.alerting.notify import Alert, Notification
from aiops.alerting.routing import Router
from aiops.config import LoadedConfig, load_rule_files
from aiops.pipeline.decoder import drop_bad_times
from aiops.pipeline.engine import Engine
from aiops.pipeline.source import Source, SourceError
from aiops.registry import SOURCES
from aiops.service.app import (
    build_groups,
    render_template,
    resolve_paths,
    rule_queries,
    rule_specs,
)
from aiops.timeutil import parse_timestamp, to_rfc3339
from aiops.types import Batch

__all__ = [
    "AlertRecord",
    "BacktestError",
    "BacktestResult",
    "BacktestUsageError",
    "NotificationRecord",
    "format_report",
    "open_sources",
    "parse_time_bound",
    "rule_file_paths",
    "run_backtest",
    "with_rules",
    "write_outputs",
]

#: Source types a backtest can replay, with what it needs of them.
REPLAYABLE_SOURCES = {
    "file": "a file source without follow: true",
    "simulator": "a simulator source with a duration",
    "prometheus": "a prometheus source, over --from and --to",
}


class BacktestError(Exception):
    """A backtest that cannot run (unsupported source, unreadable file, failed query...)."""


class BacktestUsageError(BacktestError):
    """A backtest asked for wrongly (a pull source without --from/--to): a usage error."""


@dataclass(frozen=True)
class AlertRecord:
    """One alert transition of the replay, with what routing did to it."""

    time: float  # starts_at for firing, ends_at for resolved
    rule: str  # group/alert
    status: str  # firing or resolved
    series: str
    score: float
    value: float
    receivers: tuple[str, ...]
    muted: str = ""  # silenced, inhibited, time interval, resolution of muted alert

    @property
    def day(self) -> str:
        """The UTC day of the transition, ``YYYY-MM-DD``."""
        return _day(self.time)


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class NotificationRecord:
    """One notification the daemon's aggregation groups would have sent."""

    time: float  # when its group was due (data time)
    receiver: str
    status: str  # firing (some alert of the group fires) or resolved
    firing: int
    resolved: int
    repeat: int  # 0, or the n-th repeat after repeat_interval
    group: str  # the group labels, {a="b", ...}

    @property
    def day(self) -> str:
        """The UTC day it would have been sent, ``YYYY-MM-DD``."""
        return _day(self.time)


@dataclass
class BacktestResult:
    """Everything a replay produced; the report and the output files are views of it."""

    rules: list[str] = field(default_factory=list)
    receivers: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    start: float | None = None
    end: float | None = None
    points: int = 0
    out_of_range: int = 0
    series: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    rejects: Counter[str] = field(default_factory=Counter)
    records: list[AlertRecord] = field(default_factory=list)
    notifications: list[NotificationRecord] = field(default_factory=list)

    @property
    def firing(self) -> list[AlertRecord]:
        """The firing transitions (the alerts)."""
        return [r for r in self.records if r.status == "firing"]

    @property
    def muted(self) -> Counter[str]:
        """Firing transitions that routing muted, by reason."""
        return Counter(r.muted for r in self.firing if r.muted)

    def days(self) -> list[str]:
        """Every UTC day from the first replayed point (or alert) to the last."""
        times = [r.time for r in self.records] + [n.time for n in self.notifications]
        times += [t for t in (self.first_ts, self.last_ts) if t is not None]
        if not times:
            return []
        first = datetime.fromtimestamp(min(times), tz=UTC).date()
        last = datetime.fromtimestamp(max(times), tz=UTC).date()
        return [str(first + timedelta(days=i)) for i in range((last - first).days + 1)]

    def per_day_rule(self) -> dict[str, dict[str, int]]:
        """Alerts (firing transitions, muted or not) per day, then per rule."""
        out: dict[str, dict[str, int]] = {d: dict.fromkeys(self.rules, 0) for d in self.days()}
        for r in self.firing:
            out.setdefault(r.day, dict.fromkeys(self.rules, 0))
            out[r.day][r.rule] = out[r.day].get(r.rule, 0) + 1
        return out

    def per_day_receiver(self) -> dict[str, dict[str, int]]:
        """Alerts delivered per day, then per receiver (after routing and muting)."""
        out: dict[str, dict[str, int]] = {d: dict.fromkeys(self.receivers, 0) for d in self.days()}
        for r in self.firing:
            for name in r.receivers:
                out.setdefault(r.day, dict.fromkeys(self.receivers, 0))
                out[r.day][name] = out[r.day].get(name, 0) + 1
        return out

    def per_day_notifications(self) -> dict[str, dict[str, int]]:
        """Notifications per day, then per receiver (after grouping)."""
        out: dict[str, dict[str, int]] = {d: dict.fromkeys(self.receivers, 0) for d in self.days()}
        for n in self.notifications:
            row = out.setdefault(n.day, dict.fromkeys(self.receivers, 0))
            row[n.receiver] = row.get(n.receiver, 0) + 1
        return out

    def summary(self) -> dict[str, Any]:
        """The JSON document of ``summary.json``."""
        firing = self.firing
        per_rule = Counter(r.rule for r in firing)
        per_receiver = Counter(name for r in firing for name in r.receivers)
        return {
            "sources": self.sources,
            "from": None if self.start is None else to_rfc3339(self.start),
            "to": None if self.end is None else to_rfc3339(self.end),
            "first_point": None if self.first_ts is None else to_rfc3339(self.first_ts),
            "last_point": None if self.last_ts is None else to_rfc3339(self.last_ts),
            "points": self.points,
            "points_out_of_range": self.out_of_range,
            "series": self.series,
            "rejects": dict(sorted(self.rejects.items())),
            "alerts": len(firing),
            "resolved": len(self.records) - len(firing),
            "delivered": sum(1 for r in firing if r.receivers),
            "silenced": self.muted["silenced"],
            "inhibited": self.muted["inhibited"],
            "muted_by_time_interval": self.muted["time interval"],
            "days": len(self.days()),
            "alerts_per_rule": {k: per_rule.get(k, 0) for k in self.rules},
            "alerts_per_receiver": {k: per_receiver.get(k, 0) for k in self.receivers},
            "alerts_per_day_per_rule": self.per_day_rule(),
            "alerts_per_day_per_receiver": self.per_day_receiver(),
            "notifications": len(self.notifications),
            "notifications_per_receiver": {
                k: sum(1 for n in self.notifications if n.receiver == k) for k in self.receivers
            },
            "notifications_per_day_per_receiver": self.per_day_notifications(),
        }

    def summary_line(self) -> str:
        """One line: points, series, alerts, muted counts, rejects, days."""
        s = self.summary()
        rejects = sum(self.rejects.values())
        extra = f", {s['points_out_of_range']} outside --from/--to" if self.out_of_range else ""
        return (
            f"replayed {s['points']} points{extra} of {s['series']} series: "
            f"{s['alerts']} alerts ({s['delivered']} delivered, {s['silenced']} silenced, "
            f"{s['inhibited']} inhibited, {s['muted_by_time_interval']} muted by time "
            f"intervals), {s['resolved']} resolved, {s['notifications']} notifications "
            f"after grouping, {rejects} rejects, {s['days']} days"
        )


def parse_time_bound(text: str) -> float:
    """``--from``/``--to``: RFC 3339 (a zone-less time is UTC) or unix seconds.

    >>> parse_time_bound("2024-01-02T00:00:00Z"), parse_time_bound("1704153600")
    (1704153600.0, 1704153600.0)
    """
    try:
        value = parse_timestamp(text)
    except ValueError:
        raise ValueError(f'invalid time "{text}": use RFC 3339 or unix seconds') from None
    if not math.isfinite(value):
        raise ValueError(f'invalid time "{text}": not finite')
    return value


def rule_file_paths(paths: Iterable[Path]) -> list[Path]:
    """Files as given, directories as their ``*.yaml``/``*.yml`` files (sorted, recursive)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml")))
        else:
            out.append(p)
    return list(dict.fromkeys(out))


def with_rules(loaded: LoadedConfig, paths: Sequence[Path]) -> LoadedConfig:
    """The config with its rules replaced by those of ``paths`` (files or directories).

    Raises :class:`~aiops.config.ConfigErrors` for invalid rule files and
    :class:`BacktestError` when a rule reads a source the config does not define.
    """
    files = rule_file_paths(paths)
    if not files:
        raise BacktestError(f"no rule files in {', '.join(map(str, paths))}")
    groups = tuple(load_rule_files(files))
    known = set(loaded.daemon.sources)
    for group in groups:
        for rule in group.rules:
            if rule.source not in known:
                raise BacktestError(
                    f'rule {group.name}/{rule.alert} reads source "{rule.source}", which '
                    f"{loaded.path} does not define (sources: {', '.join(sorted(known))})"
                )
    return dataclasses.replace(loaded, groups=groups, rule_files=tuple(files))


def open_sources(
    loaded: LoadedConfig, start: float | None = None, end: float | None = None
) -> dict[str, Source]:
    """Open every source a rule reads, as a finite source over the replay.

    Finite sources open from their start (a paced simulator, ``speed > 0``, is replayed
    as fast as possible); pull sources open as their history over ``[start, end)``,
    which must both be given (:class:`BacktestUsageError` otherwise). Sources no rule
    reads are not opened. Raises :class:`BacktestError` for any other source and when
    a source cannot be opened.
    """
    used = {rule.source for _, rule in loaded.rules()}
    base_dir = loaded.path.parent
    problems, pull = [], []
    for sid in sorted(used):
        spec = loaded.daemon.sources[sid]
        if SOURCES.get(spec.type).accepts_queries:
            pull.append(sid)
            continue
        finite = (spec.type == "file" and not getattr(spec.config, "follow", False)) or (
            spec.type == "simulator" and getattr(spec.config, "duration", None) is not None
        )
        if not finite:
            problems.append(f'source "{sid}" (type {spec.type})')
    if problems:
        raise BacktestError(
            f"cannot backtest {', '.join(problems)}: a backtest replays finite sources and "
            f"the history of pull sources ({'; '.join(REPLAYABLE_SOURCES.values())})"
        )
    if pull and (start is None or end is None):
        names = ", ".join(f'"{sid}" (type {loaded.daemon.sources[sid].type})' for sid in pull)
        raise BacktestUsageError(
            f"--from and --to are required: rules read history from pull source(s) {names}"
        )
    queries = rule_queries(loaded)
    sources: dict[str, Source] = {}
    try:
        for sid in sorted(used):
            spec = loaded.daemon.sources[sid]
            config = resolve_paths(spec.config, base_dir)
            cls = SOURCES.get(spec.type)
            if cls.accepts_queries:
                assert start is not None  # checked above
                assert end is not None
                live = cls(sid, config, queries=queries.get(sid, []), resume=None)
                try:
                    sources[sid] = live.history(start, end)
                except NotImplementedError as exc:
                    live.close()
                    raise BacktestError(f'cannot backtest source "{sid}": {exc}') from None
                continue
            if spec.type == "simulator":
                config = config.model_copy(update={"speed": 0.0})
            sources[sid] = cls(sid, config, resume=None)
    except (ValueError, OSError, SourceError, BacktestError) as exc:
        for s in sources.values():
            s.close()
        if isinstance(exc, BacktestError):
            raise
        raise BacktestError(str(exc)) from exc
    return sources


def _progress_of(source: Source) -> float:
    """How far a finite source is, in [0, 1] (0 when unknown)."""
    if source.progress is not None:  # pull sources: the share of the time range covered
        return source.progress
    pos = source.snapshot()
    config = getattr(source, "config", None)
    if "offset" in pos and config is not None:
        try:
            size = Path(config.path).stat().st_size
        except OSError:
            return 0.0
        return min(1.0, float(pos["offset"]) / size) if size else 1.0
    end = getattr(source, "_end_step", None)
    if "step" in pos and isinstance(end, int) and end > 0:
        return min(1.0, float(pos["step"]) / end)
    return 0.0


def _select(batch: Batch, start: float | None, end: float | None) -> tuple[Batch, int]:
    """The batch restricted to ``start <= t < end``, and how many points were dropped."""
    if (start is None and end is None) or batch.n_points == 0:
        return batch, 0
    keep = np.ones(batch.n_points, dtype=bool)
    if start is not None:
        keep &= batch.timestamps >= start
    if end is not None:
        keep &= batch.timestamps < end
    dropped = int(batch.n_points - keep.sum())
    if dropped == 0:
        return batch, 0
    return (
        Batch(
            keys=batch.keys,
            series=batch.series[keep],
            timestamps=batch.timestamps[keep],
            values=batch.values[keep],
            logs=batch.logs,
            rejects=batch.rejects,
            rule=batch.rule,
        ),
        dropped,
    )


def _receivers_of(router: Router, alert: Alert) -> tuple[tuple[str, ...], str]:
    """Route one alert; its receivers and, if routing muted it, why."""
    before = Counter(router.muted)
    notifications = router.route([alert])
    reasons = sorted((router.muted - before).keys())
    return tuple(n.receiver for n in notifications), ",".join(reasons)


def run_backtest(
    loaded: LoadedConfig,
    router: Router,
    *,
    start: float | None = None,
    end: float | None = None,
    progress: bool = False,
) -> BacktestResult:
    """Replay every source of ``loaded`` that rules read through its rules and ``router``.

    Finite sources replay from their start; pull sources (Prometheus) replay their
    rules' queries over ``[start, end)``, which they require (see :func:`open_sources`).
    Sources are read round-robin, one batch each in turn, as the daemon does. Points
    outside ``[start, end)`` are dropped before the rules see them. Each alert is routed
    on its own through ``router`` (the per-alert counts) and, with every other, through
    the daemon's aggregation groups (the notifications; groups still waiting at the end
    are flushed once, as the daemon does when a finite replay ends). Raises
    :class:`BacktestError` when a source cannot be opened or read (a failed query names
    its rule), :class:`BacktestUsageError` when a pull source lacks ``start``/``end``.
    """
    from tqdm import tqdm

    engine = Engine(rule_specs(loaded), render=render_template)
    sources = open_sources(loaded, start, end)
    result = BacktestResult(
        rules=list(engine.rules),
        receivers=[r.name for r in loaded.alerting.receivers],
        sources=list(sources),
        start=start,
        end=end,
    )
    groups = build_groups(loaded.alerting)
    groups.on_notify = lambda due, n: result.notifications.append(_notification_record(due, n))
    seen: set[tuple[str, str]] = set()
    ticks = 1000
    bar = tqdm(
        total=ticks,
        unit="‰",
        disable=None if progress else True,
        file=sys.stderr,
        dynamic_ncols=True,
        desc="backtest",
        bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]",
    )
    try:
        active = dict(sources)
        while active:
            for sid, source in list(active.items()):
                try:
                    batch = source.next_batch()
                except SourceError as exc:
                    raise BacktestError(f'source "{sid}": {exc}') from exc
                batch = drop_bad_times(batch, sid)  # as the daemon does
                result.rejects.update(r.reason for r in batch.rejects)
                batch, dropped = _select(batch, start, end)
                result.out_of_range += dropped
                if batch.n_points:
                    _account(result, seen, sid, batch)
                    batch_alerts: list[Alert] = []
                    for rt, alerts in engine.process_by_rule(sid, batch):
                        _record(result, router, rt.spec.key, alerts)
                        batch_alerts += alerts
                    groups.route(batch_alerts)
                    groups.observe(float(np.nanmax(batch.timestamps)))
                    groups.flush()
                if source.exhausted:
                    del active[sid]
            done = sum(_progress_of(s) for s in sources.values()) / max(1, len(sources))
            bar.update(int(done * ticks) - bar.n)
            bar.set_postfix_str(f"{result.points} points, {len(result.firing)} alerts")
        groups.drain()
    finally:
        bar.close()
        for s in sources.values():
            s.close()
    result.series = len(seen)
    return result


def _account(result: BacktestResult, seen: set[tuple[str, str]], sid: str, batch: Batch) -> None:
    result.points += batch.n_points
    used = np.unique(batch.series)
    seen.update((sid, str(batch.keys[int(i)])) for i in used)
    finite = batch.timestamps[np.isfinite(batch.timestamps)]
    if len(finite):
        lo, hi = float(finite.min()), float(finite.max())
        result.first_ts = lo if result.first_ts is None else min(result.first_ts, lo)
        result.last_ts = hi if result.last_ts is None else max(result.last_ts, hi)


def _notification_record(due: float, n: Notification) -> NotificationRecord:
    firing = sum(a.status == "firing" for a in n.alerts)
    labels = ", ".join(f'{k}="{v}"' for k, v in sorted(n.group_labels.items()))
    return NotificationRecord(
        time=due,
        receiver=n.receiver,
        status=n.status,
        firing=firing,
        resolved=len(n.alerts) - firing,
        repeat=n.repeat,
        group="{" + labels + "}",
    )


def _record(result: BacktestResult, router: Router, rule: str, alerts: list[Alert]) -> None:
    """Route one rule's alerts and keep a record of each."""
    for alert in alerts:
        receivers, muted = _receivers_of(router, alert)
        at = alert.starts_at if alert.status == "firing" else (alert.ends_at or alert.starts_at)
        result.records.append(
            AlertRecord(
                time=at,
                rule=rule,
                status=alert.status,
                series=alert.series,
                score=alert.score,
                value=alert.value,
                receivers=receivers,
                muted=muted,
            )
        )


def _table(title: str, rows: dict[str, dict[str, int]], columns: Sequence[str]) -> list[str]:
    """A fixed-width table: one row per day, one column per name, and totals."""
    header = ["day", *columns, "total"]
    body = [
        [day, *(str(counts.get(c, 0)) for c in columns), str(sum(counts.values()))]
        for day, counts in rows.items()
    ]
    totals = [sum(rows[d].get(c, 0) for d in rows) for c in columns]
    body.append(["total", *map(str, totals), str(sum(totals))])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return [title, line(header), rule, *(line(r) for r in body[:-1]), rule, line(body[-1])]


def format_report(result: BacktestResult) -> str:
    """The human-readable report: alerts per day per rule, per day per receiver, summary."""
    lines = _table(
        "Alerts per day and rule (firing transitions, before routing):",
        result.per_day_rule(),
        result.rules,
    )
    lines.append("")
    lines += _table(
        "Alerts per day and receiver (after routing, silences, inhibitions):",
        result.per_day_receiver(),
        result.receivers,
    )
    lines.append("")
    lines += _table(
        "Notifications per day and receiver (what would have been sent, after grouping):",
        result.per_day_notifications(),
        result.receivers,
    )
    if result.rejects:
        lines.append("")
        lines.append("rejects: " + ", ".join(f"{k}={v}" for k, v in sorted(result.rejects.items())))
    lines.append("")
    lines.append(result.summary_line())
    return "\n".join(lines)


CSV_COLUMNS = ["time", "rule", "status", "series", "score", "value", "receivers", "muted"]
NOTIFICATION_COLUMNS = ["time", "receiver", "status", "firing", "resolved", "repeat", "group"]


def write_outputs(result: BacktestResult, out_dir: Path) -> list[Path]:
    """Write ``alerts.csv``, ``notifications.csv``, ``summary.json`` and a plot.

    The plot, ``alerts_per_day.png``, needs matplotlib.

    Returns the files written; the plot is skipped (not an error) without matplotlib.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    alert_rows = (
        [
            to_rfc3339(r.time),
            r.rule,
            r.status,
            r.series,
            f"{r.score:.6f}",
            "" if math.isnan(r.value) else repr(r.value),
            ";".join(r.receivers),
            r.muted,
        ]
        for r in result.records
    )
    written.append(_write_csv(out_dir / "alerts.csv", CSV_COLUMNS, alert_rows))
    note_rows = (
        [to_rfc3339(n.time), n.receiver, n.status, n.firing, n.resolved, n.repeat, n.group]
        for n in result.notifications
    )
    written.append(_write_csv(out_dir / "notifications.csv", NOTIFICATION_COLUMNS, note_rows))
    summary = out_dir / "summary.json"
    summary.write_text(json.dumps(result.summary(), indent=2) + "\n", encoding="utf-8")
    written.append(summary)
    png = out_dir / "alerts_per_day.png"
    if _plot(result, png):
        written.append(png)
    return written


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(rows)
    return path


def _plot(result: BacktestResult, path: Path) -> bool:
    """Stacked bars of alerts per rule per day; False if matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return False
    per_day = result.per_day_rule()
    days = list(per_day)
    fig, ax = plt.subplots(figsize=(max(6.0, min(20.0, 0.5 * len(days) + 3)), 4.5))
    try:
        x = np.arange(len(days))
        bottom = np.zeros(len(days))
        for rule in result.rules:
            counts = np.array([per_day[d].get(rule, 0) for d in days], dtype=float)
            if counts.any():
                ax.bar(x, counts, bottom=bottom, label=rule)
                bottom += counts
        if not bottom.any():
            ax.text(0.5, 0.5, "no alerts", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks(
            x, days, rotation=45 if len(days) > 7 else 0, ha="right" if len(days) > 7 else "center"
        )
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("day (UTC)")
        ax.set_ylabel("alerts (firing transitions)")
        ax.set_title(f"Backtest: alerts per day and rule ({len(result.firing)} alerts)")
        if bottom.any():
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return True
