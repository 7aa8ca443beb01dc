"""``aiops models``: offline on a state directory, and against a running daemon's listener."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from aiops.cli import cli
from aiops.config import load_config
from aiops.models.api import list_doc
from aiops.models.lifecycle import ModelLifecycle
from aiops.models.registry import ModelRegistry
from aiops.service.app import build_daemon
from aiops.testing import StaticView

RULE = "g/Latency"


def wait_until(probe: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def models(*args: str) -> Any:
    return CliRunner().invoke(cli, ["models", *args], catch_exceptions=False)


def write_config(directory: Path, rows: int = 300) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    data = directory / "in.csv"
    data.write_text(
        "timestamp,value\n" + "".join(f"{60 * i},{50 + rng.normal():.4f}\n" for i in range(rows))
    )
    rules = {
        "groups": [
            {
                "name": "g",
                "rules": [
                    {
                        "alert": "Latency",
                        "source": "f",
                        "selector": "value",
                        "detector": {"type": "ewma_z", "params": {"warmup": 20}},
                    }
                ],
            }
        ]
    }
    (directory / "rules.yaml").write_text(json.dumps(rules))
    (directory / "alerting.yaml").write_text(
        json.dumps(
            {
                "route": {"receiver": "file"},
                "receivers": [{"name": "file", "jsonl_configs": [{"path": "alerts.jsonl"}]}],
            }
        )
    )
    config = {
        "sources": {"f": {"type": "file", "path": str(data), "follow": True}},
        "state": {"dir": "state", "checkpoint_interval": "1h"},
        "http": {"listen": "127.0.0.1:0"},
        "rule_files": ["rules.yaml"],
        "alerting_file": "alerting.yaml",
    }
    path = directory / "aiops.yaml"
    path.write_text(json.dumps(config))
    return path


class Running:
    def __init__(self, config: Path) -> None:
        loaded = load_config(config)
        self.state_dir = loaded.daemon.state.dir
        self.daemon = build_daemon(loaded, state_dir=self.state_dir)
        self.stop_event = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.daemon.ready or self.errors, what="daemon ready")
        if self.errors:
            raise self.errors[0]

    def _run(self) -> None:
        try:
            self.daemon.run(self.stop_event, until_exhausted=False)
        except BaseException as exc:
            self.errors.append(exc)

    @property
    def url(self) -> str:
        return str(self.daemon.listener.url)  # type: ignore[attr-defined]

    @property
    def life(self) -> ModelLifecycle:
        assert isinstance(self.daemon.models, ModelLifecycle)
        return self.daemon.models

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        if self.errors:
            raise self.errors[0]


def test_against_a_running_daemon_then_offline_and_restart(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    run = Running(config)
    try:
        wait_until(lambda: run.daemon.engine.rules[RULE].points_seen >= 300, what="the file scored")
        url = run.url
        out = models("list", "--url", url)
        assert out.exit_code == 0, out.output
        header, row = out.output.splitlines()[:2]
        assert header.split() == ["RULE", "VERSIONS", "PROMOTED", "PINNED", "RUNNING", "LATEST"]
        assert row.split()[:5] == [RULE, "1", "1", "-", "1"]
        # A second version, as a retrain makes one, runs; then the operator rolls back.
        life = run.life
        life.submit(lambda e: life.snapshot(e.rule(RULE), trigger="manual", parent=1, note="test"))
        life.submit(lambda e: life.activate(e, RULE, 2, reason="test"))
        assert life.running[RULE] == 2
        out = models("rollback", RULE, "--url", url, "--by", "alice")
        assert out.exit_code == 0, out.output
        assert out.output.strip() == f"{RULE}: now runs version 1"
        assert run.daemon.engine.rules[RULE].model_version == 1  # swapped without a restart
        shown = json.loads(models("show", RULE, "--url", url, "--json").output)
        assert shown["running"] == 1
        assert shown["version"]["version"] == 1
        last = shown["history"][-1]
        assert (last["event"], last["from"], last["version"]) == ("rolled back", 2, 1)
        assert "alice" in last["reason"]
        # Offline changes are refused while the daemon runs, and say where it listens.
        state = str(run.state_dir)
        out = CliRunner().invoke(cli, ["models", "pin", RULE, "2", "--state-dir", state])
        assert out.exit_code == 1
        assert f"offline changes are refused while it runs: use --url {url}" in out.output
        # Offline reading works, with a note.
        out = CliRunner().invoke(cli, ["models", "list", "--state-dir", state])
        assert out.exit_code == 0
        assert f"runs on this state directory at {url}" in out.output
        assert models("pin", RULE, "2", "--url", url).exit_code == 0
        assert (life.registry.pinned(RULE), life.running[RULE]) == (2, 2)
        out = CliRunner().invoke(cli, ["models", "rollback", RULE, "--url", url])
        assert out.exit_code == 1
        assert "409: model 'g/Latency' is pinned to version 2" in out.output
        assert models("unpin", RULE, "--url", url).exit_code == 0
        out = CliRunner().invoke(cli, ["models", "show", "other/Rule", "--url", url])
        assert out.exit_code == 1
        assert "404: no model 'other/Rule' in the registry" in out.output
    finally:
        run.stop()

    # Offline, with the daemon stopped: a rollback takes effect at the next start.
    state = str(run.state_dir)
    out = models("rollback", RULE, "--state-dir", state, "--by", "bob")
    assert out.exit_code == 0, out.output
    assert "version 2 -> 1 (the daemon runs it from its next start)" in out.output
    text = models("show", RULE, "--state-dir", state).output
    assert "version:         1 (promoted)" in text
    assert "trigger:         initial" in text
    again = Running(config)
    try:
        assert again.daemon.engine.rules[RULE].model_version == 1
        versions = ModelRegistry(again.state_dir / "models").versions(RULE)
        assert [v.version for v in versions] == [1, 2]  # the list survived, nothing added
    finally:
        again.stop()


def test_offline_list_show_pin_and_errors(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "models")
    reg.add(RULE, {"x": 1}, trigger="initial", parent=None, rule_hash="h", points_seen=5)
    reg.add(RULE, {"x": 2}, trigger="drift", parent=1, rule_hash="h", note="level shift")
    reg.promote(RULE, 2, reason="drift retrain", automatic=True)
    (tmp_path / "models" / "g%2FLatency" / "7").mkdir()  # an interrupted write
    state = str(tmp_path)
    out = models("list", "--state-dir", state)
    assert out.exit_code == 0
    assert out.output.splitlines()[1].split()[:5] == [RULE, "1,2", "2", "-", "?"]
    assert "skipped: model 'g/Latency' version 7: incomplete" in out.output
    out = models("show", RULE, "1", "--state-dir", state)
    assert "version:         1\n" in out.output
    assert "points seen:     5" in out.output
    out = models("show", RULE, "--state-dir", state, "--json")
    doc = json.loads(out.output.split("\nskipped:")[0])
    assert doc["version"]["note"] == "level shift"
    assert [e["event"] for e in doc["history"]] == ["added", "added", "promoted"]
    assert (
        models("pin", RULE, "1", "--state-dir", state).output.strip()
        == f"{RULE}: pinned to version 1"
    )
    assert (reg.pinned(RULE), reg.promoted(RULE)) == (1, 1)
    out = models("rollback", RULE, "--state-dir", state)
    assert out.exit_code == 1
    assert "version 1 has no earlier version" in out.output
    out = models("show", RULE, "9", "--state-dir", state)
    assert out.exit_code == 1
    assert "no version 9 (versions: 1, 2)" in out.output
    assert models("unpin", RULE, "--state-dir", state).exit_code == 0
    assert reg.pinned(RULE) is None


def get(url: str, token: str = "") -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, body.decode()


def test_get_endpoints_behind_the_listeners_auth_and_the_cli_reads_them(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    doc = json.loads(config.read_text())
    (tmp_path / "token").write_text("s3cret\n")
    doc["http"]["auth"] = {"bearer_token_file": "token"}
    config.write_text(json.dumps(doc))
    run = Running(config)
    try:
        wait_until(lambda: run.daemon.engine.rules[RULE].points_seen >= 300, what="the file scored")
        life = run.life
        life.submit(lambda e: life.snapshot(e.rule(RULE), trigger="manual", parent=1, note="t"))
        api = f"{run.url}/api/v1/models"
        assert get(api)[0] == 401
        assert get(f"{api}/{RULE}")[0] == 401
        status, listed = get(api, "s3cret")
        assert status == 200
        assert listed == json.loads(json.dumps(list_doc(life.registry, life.running)))
        (row,) = listed["rules"]
        assert (row["rule"], row["running"], [v["version"] for v in row["versions"]]) == (
            RULE,
            1,
            [1, 2],
        )
        # The rule as it is (with its "/") or percent-encoded; a version or the running one.
        for path in (f"{api}/{RULE}", f"{api}/g%2FLatency"):
            status, shown = get(path, "s3cret")
            assert status == 200, shown
            assert (shown["rule"], shown["version"]["version"], shown["running"]) == (RULE, 1, 1)
        status, shown = get(f"{api}/{RULE}/2", "s3cret")
        assert (status, shown["version"]["version"], shown["version"]["note"]) == (200, 2, "t")
        assert get(f"{api}/{RULE}/9", "s3cret")[0] == 404
        assert get(f"{api}/other/Rule", "s3cret")[0] == 404
        # The CLI reads through the GETs; a change is still a POST.
        token = str(tmp_path / "token")
        out = models("list", "--url", run.url, "--token-file", token, "--json")
        assert json.loads(out.output) == listed
        out = models("show", RULE, "2", "--url", run.url, "--token-file", token, "--json")
        assert json.loads(out.output)["version"]["version"] == 2
        out = CliRunner().invoke(cli, ["models", "list", "--url", run.url])
        assert out.exit_code == 1
        assert "401" in out.output
        # POST on a rule's path is 405; the changes are POSTs as before.
        request = urllib.request.Request(
            f"{api}/{RULE}", data=b"{}", method="POST", headers={"Authorization": "Bearer s3cret"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 405
        assert refused.value.headers["Allow"] == "GET, HEAD"
        out = models("rollback", RULE, "--to", "2", "--url", run.url, "--token-file", token)
        assert out.exit_code == 0, out.output
        assert get(api, "s3cret")[1]["rules"][0]["running"] == 2
    finally:
        run.stop()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("[" * 30_000 + "]" * 30_000, "nested deeper than 64 levels"),
        ('{"rule": ' + "[" * 65 + "]" * 65 + "}", "nested deeper than 64 levels"),
        ('{"rule": ' + "1" * 5000 + "}", "Exceeds the limit (4300 digits)"),
        ('{"rule": "x"', "Expecting ',' delimiter"),
    ],
    ids=["30000-levels", "65-levels", "5000-digits", "truncated"],
)
def test_a_hostile_models_api_body_is_a_400_never_a_traceback(
    tmp_path: Path, body: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    from types import SimpleNamespace

    from aiops.models.api import mount_models_api
    from aiops.service.http import HttpServer

    life = SimpleNamespace(registry=ModelRegistry(tmp_path / "models"), running={})
    server = HttpServer("127.0.0.1:0", StaticView())
    mount_models_api(server, life)  # type: ignore[arg-type]
    server.start()
    try:
        for path in ("/api/v1/models/show", "/api/v1/models/rollback", "/api/v1/models"):
            request = urllib.request.Request(server.url + path, data=body.encode(), method="POST")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=30)
            assert refused.value.code == 400
            assert reason in json.loads(refused.value.read())["error"]
    finally:
        server.stop()
    assert not [r for r in caplog.records if r.exc_info]
