"""A hot reload and the model lifecycle: versions, drift checks and retraining follow it.

The daemon is the one ``aiops run`` builds from files (a simulator source); each test
edits the rule file and reloads between two loop steps, as SIGHUP does.
"""

import hashlib
from pathlib import Path

import pytest

from aiops.config import load_config
from aiops.models.carry import CARRY_FILE
from aiops.models.registry import rule_dirname
from aiops.models.retrain import Retrainer, Retraining
from aiops.service.app import build_daemon
from aiops.service.reload import Reloader

DAEMON = """sources:
  sim:
    type: simulator
    seed: 3
    hosts: 2
    services: [api]
    max_steps_per_batch: 20
    warmup: 30m
state:
  dir: state
  checkpoint_interval: 1h
rule_files: [rules.yaml]
alerting_file: alerting.yaml
"""

ALERTING = """route:
  receiver: file
  group_wait: 0s
receivers:
  - name: file
    jsonl_configs:
      - path: alerts.jsonl
"""


def rules(*specs: tuple[str, float, str]) -> str:
    out = "groups:\n  - name: g\n    rules:\n"
    for name, threshold, extra in specs:
        out += (
            f"      - alert: {name}\n        source: sim\n"
            f"        selector: '{{__name__=~\".+\"}}'\n        threshold: {threshold}\n"
        )
        if extra:
            out += f"        {extra}\n"
    return out


@pytest.fixture
def setup(tmp_path):
    (tmp_path / "aiops.yaml").write_text(DAEMON)
    (tmp_path / "rules.yaml").write_text(
        rules(("Keep", 0.99, ""), ("Change", 0.99, ""), ("Gone", 0.99, ""))
    )
    (tmp_path / "alerting.yaml").write_text(ALERTING)
    loaded = load_config(tmp_path / "aiops.yaml")
    daemon = build_daemon(loaded, state_dir=tmp_path / "state")
    reloader = Reloader(loaded, state_dir=tmp_path / "state")
    daemon.start()
    for _ in range(10):
        daemon.step()
    yield tmp_path, daemon, reloader
    daemon.shutdown()


def test_a_reload_versions_new_and_changed_rules_and_wires_their_retraining(setup):
    root, daemon, reloader = setup
    registry = daemon.models.registry
    assert dict(daemon.models.running) == {"g/Keep": 1, "g/Change": 1, "g/Gone": 1}
    assert not isinstance(daemon.retraining, Retraining)  # no rule asked for it yet
    old = dict(daemon.engine.rules)
    first_hash = hashlib.sha256((root / "rules.yaml").read_bytes()).hexdigest()
    (root / "rules.yaml").write_text(
        rules(
            ("Keep", 0.99, ""),
            ("Change", 0.95, "retrain: {every: 1h, window: 1d}"),
            ("New", 0.99, "drift: {on: [input, score]}"),
        )
    )
    second_hash = hashlib.sha256((root / "rules.yaml").read_bytes()).hexdigest()
    # A retrain.carry left by some earlier run is for a start, not for a reload.
    leftover = root / "state" / "models" / rule_dirname("g/New") / CARRY_FILE
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"from an earlier run")
    result = reloader.reload(daemon)
    assert result.ok, result.errors
    now = daemon.engine.rules
    assert now["g/Keep"] is old["g/Keep"]
    assert dict(daemon.models.running) == {"g/Keep": 1, "g/Change": 2, "g/New": 1}
    change = registry.get("g/Change", 2)
    assert (change.trigger, change.parent, change.points_seen) == ("config-change", 1, 0)
    assert change.params["threshold"] == 0.95
    # Which rule file, as it was, made each version.
    v1 = registry.get("g/Change", 1)
    assert Path(v1.rule_file).resolve() == (root / "rules.yaml").resolve()
    assert (v1.rule_file_hash, change.rule_file_hash) == (first_hash, second_hash)
    assert registry.promoted("g/Change") == 2
    # What the changed and the removed rules' old runtimes learned is kept for a rollback.
    assert (
        registry.load_continued("g/Change", 1)["registry"] == old["g/Change"].registry.state_dict()
    )
    assert registry.load_continued("g/Gone", 1) is not None
    assert registry.get("g/New", 1).trigger == "initial"
    assert registry.versions("g/Keep")[-1].version == 1  # a kept rule gets no new version
    # Retraining and drift checks now run for the rules that ask for them.
    assert isinstance(daemon.retraining, Retraining)
    daemon.step()
    for key in ("g/Change", "g/New"):
        assert isinstance(now[key].observer, Retrainer), key
        assert now[key].observer.runtime is now[key]
    assert not isinstance(now["g/Keep"].observer, Retrainer)
    history = now["g/Change"].observer.history
    assert history is not None
    assert len(history) > 0
    assert now["g/New"].observer.drift is not None
    assert leftover.read_bytes() == b"from an earlier run"  # not read at the reload


def test_a_rule_removed_and_added_back_runs_its_promoted_version_as_it_last_ran(setup):
    root, daemon, reloader = setup
    before = daemon.engine.rules["g/Gone"]
    learned = before.detector.state_dict()
    (root / "rules.yaml").write_text(rules(("Keep", 0.99, ""), ("Change", 0.99, "")))
    assert reloader.reload(daemon).ok
    assert "g/Gone" not in daemon.models.running
    (root / "rules.yaml").write_text(
        rules(("Keep", 0.99, ""), ("Change", 0.99, ""), ("Gone", 0.99, ""))
    )
    assert reloader.reload(daemon).ok
    back = daemon.engine.rules["g/Gone"]
    assert back is not before
    assert daemon.models.running["g/Gone"] == 1
    assert list(back.registry.keys) == list(before.registry.keys)
    assert repr(back.detector.state_dict()) == repr(learned)


def test_a_reload_that_changes_the_threshold_gives_the_retrainer_the_new_one(setup):
    root, daemon, reloader = setup
    (root / "rules.yaml").write_text(
        rules(("Keep", 0.99, "retrain: {every: 1h}"), ("Change", 0.99, ""), ("Gone", 0.99, ""))
    )
    assert reloader.reload(daemon).ok
    daemon.step()
    first = daemon.engine.rules["g/Keep"].observer
    assert isinstance(first, Retrainer)
    assert first.threshold == 0.99
    (root / "rules.yaml").write_text(
        rules(("Keep", 0.9, "retrain: {every: 1h}"), ("Change", 0.99, ""), ("Gone", 0.99, ""))
    )
    assert reloader.reload(daemon).ok
    daemon.step()
    second = daemon.engine.rules["g/Keep"].observer
    assert isinstance(second, Retrainer)
    assert second is not first
    assert second.threshold == 0.9
