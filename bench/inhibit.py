"""Routing many firing alerts through many inhibit rules: aggregation groups against the old router.

Usage (from the repository root)::

    .venv/bin/python bench/inhibit.py [--alerts 5000] [--rules 50] [--seed 0]
        [--old-budget 20]

Builds a seeded fleet of firing alerts (``alertname`` of 10 kinds, ``severity``
critical / warning / info (5 / 60 / 35 %), 1,000 hosts, 20 services, 5 teams) and
``--rules`` inhibit rules (each: a critical alert of one kind mutes warnings and infos
of some kinds on the same ``host``, the same ``host`` and ``service``, or the same
``alertname`` and ``host``), and a route tree of a root and three team routes grouping
by ``[alertname, host]``.

- ``groups``: :class:`aiops.alerting.groups.Groups` on a fake clock: every alert is
  routed (``route``), then the clock passes ``group_wait`` and every group is flushed,
  so each alert's inhibition is decided once; the time covers both. Run 3 times, the
  best wall and CPU time printed.
- ``old router``: the per-alert path the daemon used before groups
  (:class:`aiops.alerting.routing.Router` with its former inhibition check, kept here as
  ``ScanningRouter``: every firing alert is scanned for each new one), on the same
  alerts, until ``--old-budget`` seconds have passed; its time for all alerts is
  extrapolated from the alerts it got through (its cost grows with the square of the
  number firing, so the extrapolation from the first ones is a lower bound) and the
  count is printed alongside.

- ``router now``: :class:`aiops.alerting.routing.Router` as ``aiops backtest`` uses it
  (per alert, no groups), whose inhibition check is now the same index.

All paths must agree on which alerts are muted by inhibition (checked on the alerts the
old router got through).
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from aiops.alerting.groups import Groups, InhibitionIndex
from aiops.alerting.notify import Alert
from aiops.alerting.routing import Inhibition, RouteNode, Router
from aiops.alerting.selector import Matcher
from aiops.testing import FakeClock

KINDS = [f"Kind{i}" for i in range(10)]
SEVERITIES = ["critical"] * 1 + ["warning"] * 12 + ["info"] * 7


def fleet(n: int, rng: random.Random) -> list[Alert]:
    alerts = []
    for i in range(n):
        labels = {
            "alertname": rng.choice(KINDS),
            "severity": rng.choice(SEVERITIES),
            "host": f"host-{rng.randrange(1000)}",
            "service": f"svc-{rng.randrange(20)}",
            "team": f"team-{rng.randrange(5)}",
            "instance": str(i),
        }
        alerts.append(Alert(f"fp{i}", "firing", labels, {}, starts_at=1000.0 + i * 0.01))
    return alerts


def rules(n: int, rng: random.Random) -> list[Inhibition]:
    equals = [["host"], ["host", "service"], ["alertname", "host"]]
    out = []
    for i in range(n):
        source = [
            Matcher("alertname", "=", KINDS[i % len(KINDS)]),
            Matcher("severity", "=", "critical"),
        ]
        muted = "|".join(rng.sample(KINDS, 3))
        target = [Matcher("alertname", "=~", muted), Matcher("severity", "=~", "warning|info")]
        out.append(Inhibition(source, target, equals[i % len(equals)]))
    return out


def tree() -> RouteNode:
    teams = tuple(
        RouteNode(
            f"team-{t}",
            matchers=(Matcher("team", "=", f"team-{t}"),),
            group_by=("alertname", "host"),
            group_wait=30.0,
        )
        for t in range(3)
    )
    return RouteNode("default", group_by=("alertname", "host"), routes=teams, group_wait=30.0)


def run_groups(alerts: list[Alert], inhibit: list[Inhibition]) -> tuple[float, float, set[str]]:
    """Wall and CPU seconds of routing and flushing every alert, and those notified."""
    clock = FakeClock(1000.0)
    groups = Groups(tree(), inhibitions=inhibit, clock=clock)
    started, cpu = time.perf_counter(), time.thread_time()
    out = groups.route(alerts)
    clock.advance(60.0)
    out += groups.flush()
    elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu
    notified = {a.fingerprint for n in out for a in n.alerts}
    return elapsed, cpu, notified


class ScanningRouter(Router):
    """The router as it was: each new alert scans every firing alert for each rule."""

    def _mute_reason(self, alert: Alert, at: float) -> str:
        if any(s.mutes(alert, at) for s in self.silences):
            return "silenced"
        for rule in self.inhibitions:
            for fp, labels in self._firing.items():
                if fp != alert.fingerprint and rule.inhibits(labels, alert.labels):
                    return "inhibited"
        return ""


def run_old(
    alerts: list[Alert], inhibit: list[Inhibition], budget: float, *, scan: bool = True
) -> tuple[float, int, set[str]]:
    router = (ScanningRouter if scan else Router)(tree(), inhibitions=inhibit)
    notified: set[str] = set()
    started = time.perf_counter()
    done = 0
    for a in alerts:
        notified.update(x.fingerprint for n in router.route([a]) for x in n.alerts)
        done += 1
        if time.perf_counter() - started > budget:
            break
    return time.perf_counter() - started, done, notified


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alerts", type=int, default=5000)
    p.add_argument("--rules", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--old-budget", type=float, default=20.0, help="seconds for the old router")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    alerts = fleet(args.alerts, rng)
    inhibit = rules(args.rules, rng)

    runs = [run_groups(alerts, inhibit) for _ in range(3)]
    notified = runs[0][2]
    muted = args.alerts - len(notified)
    # On a shared machine the wall time is mostly the other load; the CPU time is not.
    print(
        f"groups:     {args.alerts} firing alerts, {args.rules} inhibit rules: "
        f"{min(r[0] for r in runs):.3f} s wall, {min(r[1] for r in runs):.3f} s CPU, "
        f"best of 3 ({muted} inhibited)"
    )
    old_time, done, old_notified = run_old(alerts, inhibit, args.old_budget)
    fast_time, _, fast_notified = run_old(alerts, inhibit, float("inf"), scan=False)
    estimate = old_time * args.alerts / done if done else float("inf")
    kind = "" if done == len(alerts) else f" (extrapolated from {done} alerts in {old_time:.1f} s)"
    print(f"old router: {args.alerts} firing alerts: {estimate:.1f} s{kind}")
    print(f"router now (per alert, as aiops backtest routes): {fast_time:.3f} s")
    # The old router decides each alert when it arrives, against the alerts before it;
    # groups decide at flush, against all. Compare with the index built in arrival order.
    index = InhibitionIndex(inhibit)
    agree = True
    for a in alerts[:done]:
        index.add(a.fingerprint, a.labels)
        agree &= (a.fingerprint in old_notified) == (not index.inhibits(a.labels))
    agree &= all(
        (a.fingerprint in fast_notified) == (a.fingerprint in old_notified) for a in alerts[:done]
    )
    print(f"agreement on the alerts the old router routed: {'yes' if agree else 'NO'}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
