"""aiops alerts history / failed / retry, offline on a state directory."""

import sqlite3

from click.testing import CliRunner

from aiops.alerting.notify import Alert, Notification, PermanentFailure
from aiops.alerting.outbox import OUTBOX_FILE, Integration, Outbox
from aiops.cli import cli
from aiops.testing import FakeClock, ListNotifier


def fill(state):
    sink = ListNotifier([PermanentFailure("HTTP 400: invalid event")])
    box = Outbox(
        state / OUTBOX_FILE,
        [
            Integration("pager", "pagerduty[0]", sink),
            Integration("chat", "webhook[0]", ListNotifier()),
        ],
        clock=FakeClock(1_700_000_000.0),
    )
    for i, receiver in enumerate(["pager", "pager", "chat"]):
        a = Alert(f"f{i}", "firing", {"alertname": f"A{i}"}, {}, float(i), score=1.0)
        box.append(Notification(receiver, [a]))
    box.deliver_due()
    box.close()


def run(*args):
    return CliRunner().invoke(cli, ["alerts", *args])


def test_history_failed_and_retry(tmp_path):
    fill(tmp_path)
    r = run("history", "--state-dir", str(tmp_path))
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("ID\tRECEIVER\tINTEGRATION\tSTATE")
    assert [ln.split("\t")[1:5] for ln in lines[1:]] == [
        ["chat", "webhook[0]", "delivered", "firing"],
        ["pager", "pagerduty[0]", "delivered", "firing"],
    ]
    assert "pager: 0 pending, 1 dead" in r.stderr
    r = run("history", "--state-dir", str(tmp_path), "--receiver", "chat", "--limit", "5")
    assert len(r.stdout.splitlines()) == 2

    r = run("failed", "--state-dir", str(tmp_path))
    assert r.exit_code == 0
    (row,) = r.stdout.splitlines()[1:]
    fields = row.split("\t")
    assert fields[1:5] == ["pager", "pagerduty[0]", "firing", "A0"]
    assert fields[8:] == ["permanent", "HTTP 400: invalid event"]
    dead_id = fields[0]

    r = run("retry", "--state-dir", str(tmp_path), "999")
    assert r.exit_code == 1
    assert "1 IDs are not dead letters" in r.stderr
    r = run("retry", "--state-dir", str(tmp_path), dead_id)
    assert r.exit_code == 0
    assert "queued 1 notifications again" in r.stderr
    r = run("failed", "--state-dir", str(tmp_path))
    assert r.stdout.splitlines()[1:] == []
    con = sqlite3.connect(tmp_path / OUTBOX_FILE)
    assert con.execute("SELECT state, attempts FROM outbox WHERE id=?", (dead_id,)).fetchone() == (
        "pending",
        0,
    )


def test_retry_all_and_usage_errors(tmp_path):
    fill(tmp_path)
    assert run("retry", "--state-dir", str(tmp_path)).exit_code == 2
    assert run("retry", "--state-dir", str(tmp_path), "--all", "1").exit_code == 2
    r = run("retry", "--state-dir", str(tmp_path), "--all")
    assert r.exit_code == 0
    assert "queued 1 notifications again" in r.stderr
    r = run("history", "--state-dir", str(tmp_path / "nowhere"))
    assert r.exit_code == 1
    assert "no outbox at" in r.stderr


def test_state_dir_from_the_config(tmp_path):
    (tmp_path / "aiops.yaml").write_text(
        "sources:\n  s: {type: simulator}\nstate: {dir: st}\nrule_files: []\n"
    )
    (tmp_path / "st").mkdir()
    fill(tmp_path / "st")
    r = run("failed", "--config", str(tmp_path / "aiops.yaml"))
    assert r.exit_code == 0, r.output
    assert len(r.stdout.splitlines()) == 2
