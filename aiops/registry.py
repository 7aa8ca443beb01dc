"""Registries that map a ``type:`` name from a YAML file to a class, imported lazily.

Built-in entries are ``"module:Class"`` strings so that naming a detector does not import
every optional dependency. Third-party packages add entries through the entry-point
groups ``aiops.detectors``, ``aiops.sources`` and ``aiops.notifiers``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

__all__ = [
    "DEFAULT_DETECTOR",
    "DETECTORS",
    "NOTIFIERS",
    "SOURCES",
    "Registry",
    "UnknownTypeError",
]

T = TypeVar("T")


class UnknownTypeError(ValueError):
    """A ``type:`` name that no registry entry has."""


class Registry(Generic[T]):
    """A lazy map from ``type:`` names to classes.

    >>> r = Registry[object]("thing", {"dict": "builtins:dict"})
    >>> r.get("dict")
    <class 'dict'>
    >>> r.get("list")
    Traceback (most recent call last):
    ...
    aiops.registry.UnknownTypeError: unknown thing type "list"; valid types: dict
    """

    def __init__(self, kind: str, builtin: dict[str, str], group: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._paths = dict(builtin)
        self._plugins_loaded = group is None

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.group or ""):
            self._paths.setdefault(ep.name, ep.value)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._load_plugins()
        return sorted(self._paths)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._paths

    def path(self, name: str) -> str:
        """The ``module:Class`` path of ``name``."""
        self._load_plugins()
        try:
            return self._paths[name]
        except KeyError:
            valid = ", ".join(self.names())
            raise UnknownTypeError(
                f'unknown {self.kind} type "{name}"; valid types: {valid}'
            ) from None

    def get(self, name: str) -> type[T]:
        """Import and return the class registered as ``name``."""
        module, _, attr = self.path(name).partition(":")
        cls: type[T] = getattr(importlib.import_module(module), attr)
        return cls

    def create(self, name: str, **kwargs: Any) -> T:
        """Instantiate the class registered as ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)


#: The detector of a rule that names none, and of ``aiops score`` / ``aiops eval``:
#: ``ewma_z`` (which holds on operations metrics, the web-service KPIs) with
#: ``envelope_novelty``'s new extremes (NAB's anomalies), see README "Detectors":
#: KPI best / own-alert F1 within 0.006 of ``ewma_z`` alone (0.719 / 0.705 against
#: 0.719 / 0.710), NAB standard own-alert score 64.9 against 39.9.
DEFAULT_DETECTOR = "ensemble"

DETECTORS: Registry[Any] = Registry(
    "detector",
    {
        "ewma_z": "aiops.detectors.ewma_z:EwmaZ",
        "ensemble": "aiops.detectors.ensemble:Ensemble",
        "river": "aiops.detectors.river_adapter:RiverAdapter",
        "robust_ewma": "aiops.detectors.robust_ewma:RobustEWMA",
        "envelope_novelty": "aiops.detectors.envelope_novelty:EnvelopeNovelty",
        "stl": "aiops.detectors.stl_seasonal:STLSeasonal",
        "isolation_forest": "aiops.detectors.isolation_forest:IsolationForestDetector",
    },
    group="aiops.detectors",
)

SOURCES: Registry[Any] = Registry(
    "source",
    {
        "simulator": "aiops.connectors.sources.simulator:SimulatorSource",
        "file": "aiops.connectors.sources.files:FileSource",
        "log_file": "aiops.connectors.sources.logfile:LogFileSource",
        "prometheus": "aiops.connectors.sources.prometheus:PrometheusSource",
        "remote_write": "aiops.connectors.sources.remote_write:RemoteWriteSource",
        "kafka": "aiops.connectors.sources.kafka:KafkaSource",
    },
    group="aiops.sources",
)

NOTIFIERS: Registry[Any] = Registry(
    "notifier",
    {
        "console": "aiops.connectors.notifiers.console:ConsoleNotifier",
        "jsonl": "aiops.connectors.notifiers.jsonl:JsonlNotifier",
        "kafka": "aiops.connectors.notifiers.kafka:KafkaNotifier",
        "slack": "aiops.connectors.notifiers.slack:SlackNotifier",
        "pagerduty": "aiops.connectors.notifiers.pagerduty:PagerDutyNotifier",
        "opsgenie": "aiops.connectors.notifiers.opsgenie:OpsgenieNotifier",
        "webhook": "aiops.connectors.notifiers.webhook:WebhookNotifier",
        "alertmanager": "aiops.connectors.notifiers.alertmanager:AlertmanagerNotifier",
    },
    group="aiops.notifiers",
)
