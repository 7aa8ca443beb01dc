"""Our aggregation groups against the real Alertmanager, on one alerting configuration.

The same route tree, intervals and inhibit rules go to a real Alertmanager 0.25 (whose
webhook receiver posts to a local server here) and to :class:`Groups` on a fake clock;
the same alerts go to both, and each must send the same notifications: which alerts
are grouped together, which are inhibited, and that an alert matching both sides of an
inhibit rule is not muted by itself.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from aiops.alerting.notify import Alert
from aiops.config.loader import load_alerting
from aiops.service.app import build_groups
from aiops.testing import FakeClock
from tests.servers import http_json

ROUTE = {
    "receiver": "hook",
    "group_by": ["alertname"],
    "group_wait": "2s",
    "group_interval": "1h",
    "repeat_interval": "4h",
}
INHIBIT = [
    {
        "source_matchers": ['severity="critical"'],
        "target_matchers": ['severity="warning"'],
        "equal": ["host"],
    },
    # Both sides match alertname="Both": such an alert must not inhibit itself.
    {
        "source_matchers": ["alertname=Both"],
        "target_matchers": ["alertname=Both"],
        "equal": ["host"],
    },
]
ALERTS = [
    {"alertname": "Disk", "host": "h1", "severity": "warning"},
    {"alertname": "Disk", "host": "h2", "severity": "warning"},  # same group as the first
    {"alertname": "Crit", "host": "h3", "severity": "critical"},
    {"alertname": "Warn", "host": "h3", "severity": "warning"},  # inhibited by Crit
    {"alertname": "Warn", "host": "h4", "severity": "warning"},  # not: no critical on h4
    {"alertname": "Both", "host": "h5"},
]


class Hook:
    """A local webhook endpoint that keeps every JSON body Alertmanager posts."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                hook.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def notified(groups_of_labels: list[list[dict[str, str]]]) -> list[list[tuple[str, ...]]]:
    """Notifications as sorted lists of alerts, each alert its sorted label pairs."""
    out = [
        sorted(tuple(f"{k}={v}" for k, v in sorted(a.items())) for a in n) for n in groups_of_labels
    ]
    return sorted(out)


@pytest.mark.servers
def test_groups_send_what_alertmanager_sends(tmp_path: Path, alertmanager_server) -> None:
    hook = Hook()
    try:
        config = {
            "route": ROUTE,
            "receivers": [{"name": "hook", "webhook_configs": [{"url": hook.url}]}],
            "inhibit_rules": INHIBIT,
        }
        am = alertmanager_server(config)
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        for labels in ALERTS:
            am.post_alerts([{"labels": labels, "startsAt": now}])
            time.sleep(0.2)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(hook.bodies) < 4:
            time.sleep(0.2)
        time.sleep(1.0)  # nothing more should come
        theirs = notified([[a["labels"] for a in b["alerts"]] for b in hook.bodies])
    finally:
        hook.close()

    ours_config = {
        "route": ROUTE,
        "receivers": [{"name": "hook"}],
        "inhibit_rules": INHIBIT,
    }
    path = tmp_path / "alerting.yaml"
    path.write_text(json.dumps(ours_config))
    clock = FakeClock(0.0)
    groups = build_groups(load_alerting(path), clock=clock)
    out = []
    for i, labels in enumerate(ALERTS):
        out += groups.route([Alert(f"fp{i}", "firing", labels, {}, starts_at=clock())])
        clock.advance(0.2)
    clock.advance(60.0)
    out += groups.flush()
    ours = notified([[dict(a.labels) for a in n.alerts] for n in out])

    assert theirs == ours
    assert ours == [
        [("alertname=Both", "host=h5")],
        [("alertname=Crit", "host=h3", "severity=critical")],
        [
            ("alertname=Disk", "host=h1", "severity=warning"),
            ("alertname=Disk", "host=h2", "severity=warning"),
        ],
        [("alertname=Warn", "host=h4", "severity=warning")],
    ]


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


@pytest.mark.servers
def test_a_silence_ending_and_an_inhibitor_resolving_notify_like_alertmanager(
    tmp_path: Path, alertmanager_server
) -> None:
    """Decided at flush: after the silence ends, and after the inhibiting alert resolves."""
    route = {**ROUTE, "group_wait": "1s", "group_interval": "1s"}
    crit = {"alertname": "Crit2", "host": "h9", "severity": "critical"}
    warn = {"alertname": "Warn2", "host": "h9", "severity": "warning"}
    silenced = {"alertname": "Sil", "host": "s1"}
    hook = Hook()
    try:
        config = {
            "route": route,
            "receivers": [{"name": "hook", "webhook_configs": [{"url": hook.url}]}],
            "inhibit_rules": INHIBIT[:1],
        }
        am = alertmanager_server(config)
        t0 = time.time()
        status, body = http_json(
            "POST",
            f"{am.url}/api/v2/silences",
            {
                "matchers": [{"name": "host", "value": "s1", "isRegex": False, "isEqual": True}],
                "startsAt": iso(t0 - 1),
                "endsAt": iso(t0 + 3.5),
                "createdBy": "test",
                "comment": "ends while the alert fires",
            },
        )
        assert status == 200, body
        am.post_alerts([{"labels": x, "startsAt": iso(t0)} for x in (crit, warn, silenced)])
        time.sleep(max(0.0, t0 + 2.2 - time.time()))
        am.post_alerts([{"labels": crit, "startsAt": iso(t0), "endsAt": iso(time.time())}])
        time.sleep(max(0.0, t0 + 8.0 - time.time()))
        theirs = sorted(
            (a["labels"]["alertname"], a["status"]) for b in hook.bodies for a in b["alerts"]
        )
    finally:
        hook.close()

    path = tmp_path / "alerting.yaml"
    path.write_text(
        json.dumps(
            {
                "route": route,
                "receivers": [{"name": "hook"}],
                "inhibit_rules": INHIBIT[:1],
                "silences": [
                    {
                        "matchers": ['host="s1"'],
                        "starts_at": iso(-1.0),
                        "ends_at": iso(3.5),
                        "created_by": "test",
                        "comment": "ends while the alert fires",
                    }
                ],
            }
        )
    )
    clock = FakeClock(0.0)
    groups = build_groups(load_alerting(path), clock=clock)
    out = groups.route(
        [Alert(x["alertname"], "firing", x, {}, 0.0) for x in (crit, warn, silenced)]
    )
    while clock() < 8.0:
        clock.advance(0.1)
        if abs(clock() - 2.2) < 1e-9:
            out += groups.route([Alert("Crit2", "resolved", crit, {}, 0.0, ends_at=2.2)])
        out += groups.flush()
    ours = sorted((a.labels["alertname"], a.status) for n in out for a in n.alerts)

    assert theirs == ours
    assert ours == [
        ("Crit2", "firing"),
        ("Crit2", "resolved"),
        ("Sil", "firing"),
        ("Warn2", "firing"),
    ]
