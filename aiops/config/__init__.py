"""Strict parsing and validation of the files an operator edits.

Three kinds of file, each validated against frozen pydantic models that forbid
unknown keys:

- the daemon config (``aiops.yaml``): :class:`DaemonConfig`;
- rule files (Prometheus style ``groups:`` / ``rules:``): :class:`RuleGroup`,
  :class:`Rule`;
- the alerting file (Alertmanager style): :class:`AlertingConfig`.

Loading collects every error of every file in one pass and raises
:class:`ConfigErrors`; each :class:`ConfigError` prints as
``file:line:col: group "g", rule "r": message``. Loading is pure (new objects or an
exception), so a reload that fails leaves the running configuration in place.
"""

from __future__ import annotations

from typing import Any

from aiops.config.check import check_paths, detect_kind, run_check
from aiops.config.errors import ConfigError, ConfigErrors
from aiops.config.loader import (
    SECRET_KEYS,
    LoadedConfig,
    default_alerting,
    load_alerting,
    load_config,
    load_rule_files,
)
from aiops.config.models import (
    AlertingConfig,
    DaemonConfig,
    DetectorSpec,
    HttpSettings,
    InhibitRule,
    LimitsSettings,
    LogMining,
    LogRule,
    MaskSpec,
    NotifierSpec,
    Receiver,
    Retrain,
    Route,
    Rule,
    RuleGroup,
    Silence,
    SourceSpec,
    StateSettings,
    TimeInterval,
    TimeRange,
    TimeSpec,
)

__all__ = [
    "DEFAULT_ALERTING",
    "SECRET_KEYS",
    "AlertingConfig",
    "ConfigError",
    "ConfigErrors",
    "DaemonConfig",
    "DetectorSpec",
    "HttpSettings",
    "InhibitRule",
    "LimitsSettings",
    "LogMining",
    "LogRule",
    "MaskSpec",
    "LoadedConfig",
    "NotifierSpec",
    "Receiver",
    "Retrain",
    "Route",
    "Rule",
    "RuleGroup",
    "Silence",
    "SourceSpec",
    "StateSettings",
    "TimeInterval",
    "TimeRange",
    "TimeSpec",
    "check_paths",
    "default_alerting",
    "detect_kind",
    "load_alerting",
    "load_config",
    "load_rule_files",
    "run_check",
]

DEFAULT_ALERTING: AlertingConfig
"""Everything to one ``console`` receiver; built on first access (see
:func:`default_alerting`)."""


def __getattr__(name: str) -> Any:
    if name == "DEFAULT_ALERTING":
        return default_alerting()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
