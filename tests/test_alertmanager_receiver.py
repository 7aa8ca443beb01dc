"""The Alertmanager receiver against a real Alertmanager 0.25 (tests/servers.py)."""

import time

import pytest

from aiops.alerting.notify import Alert, Delivered, Notification, PermanentFailure, RetryAfter
from aiops.connectors.notifiers.alertmanager import AlertmanagerNotifier

pytestmark = pytest.mark.servers


def alert(status="firing", host="web1", starts=None, ends=None):
    starts = time.time() - 30 if starts is None else starts
    return Alert(
        f"fp-{host}",
        status,
        {"alertname": "LatencyAnomaly", "host": host, "severity": "page"},
        {"summary": f"latency high on {host}"},
        starts_at=starts,
        ends_at=ends,
    )


def find(am, host):
    return [a for a in am.alerts() if a["labels"].get("host") == host]


def wait_until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def test_alert_appears_with_its_labels_and_resolves(alertmanager_server, tmp_path):
    am = alertmanager_server()
    n = AlertmanagerNotifier(AlertmanagerNotifier.Config(url=am.url), base_dir=tmp_path)
    firing = alert()
    assert isinstance(n.send(Notification("am", [firing])), Delivered)
    (got,) = find(am, "web1")
    assert got["labels"] == {"alertname": "LatencyAnomaly", "host": "web1", "severity": "page"}
    assert got["annotations"] == {"summary": "latency high on web1"}
    assert got["status"]["state"] == "active"
    resolved = alert("resolved", starts=firing.starts_at, ends=time.time() - 1)
    assert isinstance(n.send(Notification("am", [resolved])), Delivered)
    # Alertmanager's API lists only alerts that have not ended.
    assert wait_until(lambda: find(am, "web1") == [])
    assert n.firing == {}
    n.close()


def test_firing_alerts_are_re_sent_so_they_outlive_their_ends_at(alertmanager_server, tmp_path):
    am = alertmanager_server()
    cfg = AlertmanagerNotifier.Config(url=am.url, resend_interval="0.5s")
    n = AlertmanagerNotifier(cfg, base_dir=tmp_path)
    assert isinstance(n.send(Notification("am", [alert(host="web2")])), Delivered)
    first_end = find(am, "web2")[0]["endsAt"]
    # endsAt is 4 intervals (2 s) ahead; without the re-sends it would be gone by then.
    time.sleep(3.0)
    (got,) = find(am, "web2")
    assert got["endsAt"] > first_end
    n.close()
    # A restarted daemon keeps re-sending what still fires (kept in the state directory).
    again = AlertmanagerNotifier(cfg, base_dir=tmp_path)
    assert set(again.firing) == {"fp-web2"}
    time.sleep(1.2)
    assert find(am, "web2")[0]["endsAt"] > got["endsAt"]
    again.close()
    # Nobody re-sends now: Alertmanager resolves it on its own once endsAt passes.
    assert wait_until(lambda: find(am, "web2") == [], timeout=6.0)


def test_invalid_alert_is_permanent_and_a_down_alertmanager_retried(alertmanager_server, tmp_path):
    am = alertmanager_server()
    n = AlertmanagerNotifier(AlertmanagerNotifier.Config(url=am.url), base_dir=tmp_path)
    bad = Alert("f", "firing", {}, {}, starts_at=time.time())  # no labels: Alertmanager says 400
    result = n.send(Notification("am", [bad]))
    assert isinstance(result, PermanentFailure)
    assert "HTTP 400" in result.reason
    assert n.firing == {}  # not re-sent for ever
    n.close()
    am.stop()
    down = AlertmanagerNotifier(AlertmanagerNotifier.Config(url=am.url, timeout="1s"))
    assert isinstance(down.send(Notification("am", [alert()])), RetryAfter)
    down.close()
