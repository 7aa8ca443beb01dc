"""The README documents every key an operator can write, and starts with the two commands."""

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from aiops import config as cfg
from aiops.registry import NOTIFIERS, SOURCES

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
# `state.dir` documents both `state` and `dir`.
DOCUMENTED = {
    part for name in re.findall(r"`([a-z_<>][a-z0-9_.<>]*)`", README) for part in name.split(".")
}


def keys(model: type[BaseModel]) -> set[str]:
    hidden = getattr(model, "_yaml_hidden", frozenset())
    if hasattr(hidden, "default"):
        hidden = hidden.default
    out = set()
    for name, field in model.model_fields.items():
        if name in hidden:
            continue
        out.add(field.alias or name)
    return out


CONFIG_MODELS = [
    cfg.DaemonConfig,
    cfg.RuleGroup,
    cfg.Rule,
    cfg.AlertingConfig,
    cfg.Route,
    cfg.Receiver,
    cfg.InhibitRule,
    cfg.Silence,
    cfg.TimeInterval,
    cfg.TimeSpec,
    cfg.TimeRange,
    cfg.DetectorSpec,
    cfg.Retrain,
    cfg.StateSettings,
    cfg.LimitsSettings,
    cfg.HttpSettings,
    cfg.LogRule,
    cfg.LogMining,
    cfg.MaskSpec,
]
PLUGINS = [(reg, name) for reg in (SOURCES, NOTIFIERS) for name in reg.names()]


@pytest.mark.parametrize("model", CONFIG_MODELS, ids=lambda m: m.__name__)
def test_every_config_key_is_documented(model):
    assert keys(model) - DOCUMENTED == set()


@pytest.mark.parametrize(("registry", "name"), PLUGINS, ids=lambda x: getattr(x, "kind", x))
def test_every_source_and_notifier_setting_is_documented(registry, name):
    model = registry.get(name).Config
    assert keys(model) - DOCUMENTED == set(), f"{registry.kind} {name}"
    assert f"`{name}" in README


def test_readme_starts_with_the_demo_and_test_commands():
    first_block = README.split("```")[1].splitlines()
    commands = [line.split("#")[0].strip() for line in first_block[1:] if line.strip()]
    assert commands == ["./scripts/demo", "./scripts/test"]
    ci = (REPO / ".ci" / "run").read_text()
    assert "exec scripts/test" in ci


def test_the_readme_s_complete_alerting_file_loads_with_slack_and_pagerduty(tmp_path):
    block = README.split("A complete alerting file:", 1)[1].split("```yaml\n", 1)[1]
    path = tmp_path / "alerting.yaml"
    path.write_text(block.split("```", 1)[0])
    alerting = cfg.load_alerting(path)
    types = {spec.type for r in alerting.receivers for spec in r.notifiers}
    assert {"slack", "pagerduty", "webhook", "alertmanager"} <= types
    assert alerting.route.receiver == "team-slack"
