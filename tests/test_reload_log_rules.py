"""Hot reload of log rules on a daemon built from real files: a removed one's version.

A reload that removes a log rule stops it; its model version keeps what it learned
(``continued``), as a removed metric rule's does, so that adding the rule back (or a
rollback to that version) restores it as it last ran.
"""

from __future__ import annotations

from aiops.config import load_config
from aiops.service.app import build_daemon
from aiops.service.metrics import PrometheusMetrics
from aiops.service.reload import Reloader
from tests.test_reload import ALERTING, DAEMON

LOG_RULE = """      - alert: {name}
        source: sim
        log: {{type: {kind}}}
"""


def log_rules(*rules: tuple[str, str]) -> str:
    body = "".join(LOG_RULE.format(name=n, kind=k) for n, k in rules)
    return "groups:\n  - name: g\n    rules:\n" + body


def test_a_reload_that_removes_a_log_rule_keeps_what_it_learned_in_its_version(tmp_path):
    (tmp_path / "aiops.yaml").write_text(DAEMON)
    (tmp_path / "rules.yaml").write_text(
        log_rules(("NewTemplate", "new_template"), ("Burst", "error_burst"))
    )
    (tmp_path / "alerting.yaml").write_text(ALERTING.format(path="alerts.jsonl"))
    loaded = load_config(tmp_path / "aiops.yaml")
    daemon = build_daemon(loaded, state_dir=tmp_path / "state")
    reloader = Reloader(loaded, state_dir=tmp_path / "state", metrics=PrometheusMetrics())
    daemon.start()
    try:
        for _ in range(30):
            daemon.step()
        gone = daemon.engine.logs.rules["g/Burst"]
        assert gone.model_version == 1
        learned = gone.model_state()
        registry = daemon.models.registry
        assert registry.load_continued("g/Burst", 1) is None
        (tmp_path / "rules.yaml").write_text(log_rules(("NewTemplate", "new_template")))
        result = reloader.reload(daemon)
        assert result.ok, result.errors
        assert list(daemon.engine.logs.rules) == ["g/NewTemplate"]
        kept = registry.load_continued("g/Burst", 1)
        assert kept is not None
        assert kept["model_hash"] == learned["model_hash"]
        assert kept.keys() == learned.keys()
        # The rule that stays is still running: its version keeps no "continued" state.
        assert daemon.engine.logs.rules["g/NewTemplate"].model_version == 1
        assert registry.load_continued("g/NewTemplate", 1) is None
        for _ in range(5):
            daemon.step()
    finally:
        daemon.shutdown()
