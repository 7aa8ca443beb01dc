from dataclasses import dataclass

from aiops.alerting.notify import Alert, Notification, PermanentFailure, RetryAfter
from aiops.alerting.routing import Dispatcher, Inhibition, RouteNode, Router, SilenceWindow
from aiops.testing import FakeClock, ListNotifier


@dataclass(frozen=True)
class Eq:
    name: str
    value: str

    def matches(self, labels):
        return labels.get(self.name, "") == self.value


def alert(status="firing", t=100.0, **labels):
    return Alert("fp", status, {"alertname": "A", **labels}, {}, starts_at=t)


TREE = RouteNode(
    "default",
    group_by=("alertname",),
    routes=(
        RouteNode("pager", matchers=(Eq("severity", "page"),), continue_=True),
        RouteNode("db-team", matchers=(Eq("service", "db"),)),
        RouteNode("never", matchers=(Eq("service", "db"),)),
    ),
)


def receivers(notifications):
    return [n.receiver for n in notifications]


def test_first_match_wins_unless_continue():
    r = Router(TREE)
    assert receivers(r.route([alert(severity="page", service="db")])) == ["pager", "db-team"]
    assert receivers(r.route([alert(service="db")])) == ["db-team"]
    assert receivers(r.route([alert(service="web")])) == ["default"]
    assert r.route([alert()])[0].group_labels == {"alertname": "A"}


def test_nested_routes_take_the_deepest_match():
    tree = RouteNode(
        "root",
        routes=(
            RouteNode(
                "team",
                matchers=(Eq("team", "x"),),
                routes=(RouteNode("team-page", matchers=(Eq("severity", "page"),)),),
            ),
        ),
    )
    r = Router(tree)
    assert receivers(r.route([alert(team="x", severity="page")])) == ["team-page"]
    assert receivers(r.route([alert(team="x")])) == ["team"]


def test_silence_mutes_matching_alerts_inside_its_window():
    r = Router(TREE, silences=[SilenceWindow([Eq("host", "db-1")], 50.0, 150.0)])
    assert r.route([alert(host="db-1", t=100.0)]) == []
    assert receivers(r.route([alert(host="db-1", t=200.0)])) == ["default"]
    assert receivers(r.route([alert(host="db-2", t=100.0)])) == ["default"]
    assert r.silenced == 1


def test_dispatcher_retries_with_backoff_and_honours_retry_after():
    clock = FakeClock()
    flaky = ListNotifier([RetryAfter("503"), RetryAfter("429", seconds=30.0)])
    d = Dispatcher({"r": [flaky]}, clock=clock, base_delay=1.0)
    d.submit([Notification("r", [alert()])])
    assert len(flaky.sent) == 1
    assert d.queued == 1
    clock.advance(0.5)
    d.pump()
    assert len(flaky.sent) == 1
    clock.advance(0.5)
    d.pump()  # 1 s back-off
    assert len(flaky.sent) == 2
    assert d.queued == 1
    clock.advance(29.0)
    d.pump()  # remote asked for 30 s
    assert len(flaky.sent) == 2
    clock.advance(1.0)
    d.pump()
    assert len(flaky.sent) == 3
    assert d.queued == 0
    assert d.results == {"retried": 2, "delivered": 1}
    # One key for all attempts of the same notification.
    assert len({n.idempotency_key for n in flaky.sent}) == 1


def test_dispatcher_gives_up_on_permanent_failure_and_on_age():
    clock = FakeClock()
    d = Dispatcher({"r": [ListNotifier([PermanentFailure("bad token")])]}, clock=clock)
    d.submit([Notification("r", [alert()])])
    assert d.results == {"failed": 1}
    assert d.queued == 0
    always = ListNotifier([RetryAfter("down")] * 100)
    d2 = Dispatcher({"r": [always]}, clock=clock, max_age=10.0, max_delay=4.0)
    d2.submit([Notification("r", [alert()])])
    for _ in range(10):
        clock.advance(4.0)
        d2.pump()
    assert d2.results["expired"] == 1
    assert d2.queued == 0


def test_a_raising_notifier_does_not_escape():
    class Broken(ListNotifier):
        def send(self, notification):
            raise RuntimeError("bug")

    d = Dispatcher({"r": [Broken()]}, clock=FakeClock())
    d.submit([Notification("r", [alert()])])
    assert d.results == {"retried": 1}


def test_idempotency_key_depends_on_transition_and_start():
    a, b = alert(t=1.0), alert(t=2.0)
    assert a.idempotency_key != b.idempotency_key
    assert a.idempotency_key != alert(status="resolved", t=1.0).idempotency_key
    assert a.idempotency_key == alert(t=1.0).idempotency_key


def test_inhibition_mutes_targets_while_a_matching_source_fires_and_their_resolution_too():
    rule = Inhibition(
        source=[Eq("severity", "page")], target=[Eq("severity", "warning")], equal=["host"]
    )
    r = Router(RouteNode("default"), inhibitions=[rule])

    def a(status, fp, **labels):
        return Alert(fp, status, {"alertname": "A", **labels}, {}, starts_at=1.0, ends_at=2.0)

    page = a("firing", "p", severity="page", host="h1")
    warn_same = a("firing", "w1", severity="warning", host="h1")
    warn_other = a("firing", "w2", severity="warning", host="h2")
    assert receivers(r.route([page, warn_same, warn_other])) == ["default", "default"]
    assert r.muted["inhibited"] == 1
    # The muted alert's resolution is muted too; after the source resolves, targets page again.
    assert r.route([a("resolved", "w1", severity="warning", host="h1")]) == []
    r2 = Router(RouteNode("default"), inhibitions=[rule])
    r2.load_state_dict(r.state_dict())
    assert receivers(r2.route([a("resolved", "p", severity="page", host="h1")])) == ["default"]
    assert receivers(r2.route([warn_same])) == ["default"]


@dataclass(frozen=True)
class Hours:
    start: int
    end: int

    def contains(self, ts):
        return self.start <= (ts // 3600) % 24 < self.end


def test_mute_and_active_time_intervals_use_the_alert_time():
    tree = RouteNode(
        "root",
        routes=(
            RouteNode("day", matchers=(Eq("team", "a"),), active_during=(Hours(9, 17),)),
            RouteNode("not-at-night", matchers=(Eq("team", "b"),), mute_during=(Hours(0, 6),)),
        ),
    )
    r = Router(tree)
    assert receivers(r.route([alert(team="a", t=10 * 3600.0)])) == ["day"]
    assert r.route([alert(team="a", t=20 * 3600.0)]) == []
    assert r.route([alert(team="b", t=3 * 3600.0)]) == []
    assert receivers(r.route([alert(team="b", t=7 * 3600.0)])) == ["not-at-night"]
    assert r.muted["time interval"] == 2


# --- time intervals: which day-of-month ranges load, checked against the real amtool ---

DAY_RANGES = [
    "1", "-1", "31", "1:31", "1:-1", "5:-15", "-15:-5", "-1:-1", "-31:-1",
    "0", "32", "-32", "10:5", "-15:5", "-2:2", "-31:31", "-5:-15", "31:-1", "30:-1",
    "29:-2", "2:-30", "1:-31",
]  # fmt: skip


OTHER_SPECS = [
    {"days_of_month": ["1 : 5"]},
    {"days_of_month": [5]},
    {"weekdays": ["monday:friday"]},
    {"weekdays": ["Monday"]},
    {"weekdays": ["friday:monday"]},
    {"weekdays": ["monday: friday"]},
    {"weekdays": ["mon"]},
    {"months": ["december:january"]},
    {"months": ["January:3"]},
    {"years": ["2020:2019"]},
    {"years": ["2026"]},
    {"times": [{"start_time": "09:00", "end_time": "17:00"}]},
    {"times": [{"start_time": "00:00", "end_time": "24:00"}]},
    {"times": [{"start_time": "9:00", "end_time": "17:00"}]},
    {"times": [{"start_time": "09:00 ", "end_time": "17:00"}]},
    {"times": [{"start_time": "17:00", "end_time": "09:00"}]},
    {"times": [{"start_time": "09:00", "end_time": "24:01"}]},
    {"location": "Europe/Berlin"},
    {"location": "Mars/Olympus_Mons"},
]


def test_time_intervals_load_exactly_when_alertmanager_loads_them(tmp_path):
    import json
    import subprocess

    from pydantic import ValidationError

    from aiops.config.models import TimeSpec
    from tests.servers import require_binary

    specs = [{"days_of_month": [text]} for text in DAY_RANGES] + OTHER_SPECS
    files = []
    for i, spec in enumerate(specs):
        config = {
            "route": {"receiver": "r", "routes": [{"receiver": "r", "mute_time_intervals": ["t"]}]},
            "receivers": [{"name": "r"}],
            "time_intervals": [{"name": "t", "time_intervals": [spec]}],
        }
        f = tmp_path / f"t{i:02d}.yml"
        f.write_text(json.dumps(config))
        files.append(f)
    run = subprocess.run(
        [require_binary("amtool"), "check-config", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    verdicts = {
        line.split("'")[1]: "SUCCESS" in line
        for line in (run.stdout + run.stderr).splitlines()
        if line.startswith("Checking '")
    }
    ours = {}
    for f, spec in zip(files, specs, strict=True):
        try:
            TimeSpec.model_validate(spec)
            ours[str(f)] = True
        except ValidationError:
            ours[str(f)] = False
    assert ours == verdicts
    assert 0 < sum(verdicts.values()) < len(verdicts)  # both kinds occur


def test_day_of_month_arithmetic_counts_negative_days_from_the_real_month_end():
    from datetime import UTC, datetime

    from aiops.config.models import TimeSpec

    last_week = TimeSpec.model_validate({"days_of_month": ["-7:-1"]})
    assert last_week.contains(datetime(2026, 2, 22, tzinfo=UTC).timestamp())  # Feb: 28 days
    assert not last_week.contains(datetime(2026, 2, 21, tzinfo=UTC).timestamp())
    assert last_week.contains(datetime(2026, 1, 25, tzinfo=UTC).timestamp())
    assert not last_week.contains(datetime(2026, 1, 24, tzinfo=UTC).timestamp())
    mixed = TimeSpec.model_validate({"days_of_month": ["5:-15"]})
    assert mixed.contains(datetime(2026, 1, 17, tzinfo=UTC).timestamp())  # 31 - 15 + 1
    assert not mixed.contains(datetime(2026, 1, 18, tzinfo=UTC).timestamp())


# --- Alertmanager's documented example: our routing tree against amtool's ---------------

EXAMPLE_LABELS = [
    {"service": "foo1", "severity": "critical"},
    {"service": "foo2"},
    {"service": "baz", "severity": "warning"},
    {"service": "foo12"},  # anchored: not foo1
    {"service": "files", "severity": "critical"},
    {"service": "files"},
    {"service": "database"},
    {"service": "database", "owner": "team-X"},
    {"service": "database", "owner": "team-Y"},
    {"service": "database", "owner": "team-Z"},
    {"service": "other"},
    {},
]


def amtool_receivers(config_path, labels):
    import subprocess

    from tests.servers import require_binary

    args = [f"{k}={v}" for k, v in labels.items()] or ["alertname=x"]
    run = subprocess.run(
        [
            require_binary("amtool"),
            "config",
            "routes",
            "test",
            f"--config.file={config_path}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.strip().split(",")


def test_alertmanagers_example_routes_like_alertmanager(tmp_path):
    import json

    from aiops.config.loader import load_alerting
    from aiops.service.app import build_router
    from tests.test_config import TESTDATA

    examples = TESTDATA.parent / "alertmanager_examples"
    for source in (examples / "simple.yml", examples / "simple_legacy.yml"):
        name = source.name
        config = load_alerting(source)
        router = build_router(config)
        # amtool gets the same tree with receivers that have no integrations.
        am = config.model_dump(mode="json", exclude={"silences", "time_intervals"})
        am["receivers"] = [{"name": r.name} for r in config.receivers]
        path = tmp_path / f"{name}.yml"
        path.write_text(json.dumps(am))
        for labels in EXAMPLE_LABELS:
            ours = [n.receiver for n in router.root.match(labels)]
            assert ours == amtool_receivers(path, labels), (name, labels)


def test_the_immediate_router_inhibits_with_alertmanagers_two_sided_rule():
    both = Inhibition(source=[Eq("alertname", "A")], target=[Eq("alertname", "A")], equal=["host"])
    only_source = Inhibition(
        source=[Eq("kind", "root")], target=[Eq("alertname", "A")], equal=["host"]
    )
    r = Router(RouteNode("default"), inhibitions=[both])

    def a(fp, **labels):
        return Alert(fp, "firing", {"alertname": "A", **labels}, {}, starts_at=1.0)

    assert receivers(r.route([a("x", host="h")])) == ["default"]  # not by itself
    assert receivers(r.route([a("y", host="h", n="2")])) == ["default"]  # nor by a peer
    r2 = Router(RouteNode("default"), inhibitions=[only_source])
    r2.route([Alert("s", "firing", {"alertname": "B", "kind": "root", "host": "h"}, {}, 1.0)])
    assert r2.route([a("x", host="h")]) == []
    r3 = Router(RouteNode("default"), inhibitions=[only_source])
    r3.load_state_dict(r2.state_dict())  # the index is rebuilt from the saved firing alerts
    assert r3.route([a("z", host="h", n="3")]) == []
