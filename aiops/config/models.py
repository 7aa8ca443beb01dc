"""The validated shape of the three files an operator edits.

Every model is frozen and forbids unknown keys. Field names are the YAML keys (``for``
and ``continue`` are spelled ``for_`` and ``continue_`` in Python; both spellings are
accepted when building a model in code). Durations are float seconds, times are
timezone-aware UTC datetimes, selectors, matchers and templates are parsed objects
(:class:`~aiops.alerting.selector.Selector`, :class:`~aiops.alerting.selector.Matcher`,
:class:`~aiops.alerting.templates.Template`) that serialize back to their text.

The models check what one section can check on its own. What needs the registries
(source, notifier and detector settings) or the whole set of files (undefined
receivers, duplicate names) is checked by :mod:`aiops.config.loader`.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SerializeAsAny,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from aiops.alerting.selector import (
    LABEL_NAME_RE,
    Matcher,
    Selector,
    parse_matcher,
    parse_matchers,
    parse_selector,
)
from aiops.alerting.templates import Template
from aiops.config.translate import show as _show
from aiops.pipeline.detector import DEFAULT_THRESHOLD
from aiops.registry import DEFAULT_DETECTOR
from aiops.timeutil import format_duration, parse_duration

__all__ = [
    "DEFAULT_GROUP_INTERVAL",
    "DEFAULT_GROUP_WAIT",
    "DEFAULT_REPEAT_INTERVAL",
    "DEFAULT_RESOLVE_AFTER_STALE",
    "ROOT_ROUTE_RULES",
    "AlertingConfig",
    "DaemonConfig",
    "DetectorSpec",
    "Drift",
    "HttpAuth",
    "HttpLimits",
    "HttpSettings",
    "HttpTls",
    "InhibitRule",
    "LimitsSettings",
    "LogMining",
    "LogRule",
    "MaskSpec",
    "NotifierSpec",
    "Receiver",
    "Retrain",
    "Route",
    "Rule",
    "RuleFile",
    "RuleGroup",
    "Silence",
    "SlackInteractivity",
    "SourceSpec",
    "StateSettings",
    "DeliverySettings",
    "TimeInterval",
    "TimeRange",
    "TimeSpec",
    "LEGACY_MATCH_KEYS",
    "config_error",
]

DEFAULT_GROUP_WAIT = 30.0
"""Alertmanager's default ``group_wait`` (seconds)."""
DEFAULT_GROUP_INTERVAL = 300.0
"""Alertmanager's default ``group_interval`` (seconds)."""
DEFAULT_REPEAT_INTERVAL = 4 * 3600.0
"""Alertmanager's default ``repeat_interval`` (seconds)."""
DEFAULT_RESOLVE_AFTER_STALE = 900.0
"""A rule's default ``resolve_after_stale`` (seconds): a firing series with no point for
15 minutes of data time resolves. Three times Prometheus' 5-minute staleness window, so
a few missed scrapes or a late push do not end an alert; ``0s`` turns it off."""
#: The longest duration any key takes: a longer one is a typo, and overflows the
#: timeouts of threads and sockets (``threading.TIMEOUT_MAX`` is about 292 years).
MAX_DURATION = 100 * 365 * 86400.0
#: The shortest ``forget_after_stale`` but 0: shorter forgets series between two scrapes
#: (each would start afresh at every point and never learn).
MIN_FORGET_AFTER_STALE = 60.0
#: Evaluation interval of a query rule whose group sets none (Prometheus' default).
DEFAULT_QUERY_INTERVAL = 60.0
#: A query rule's series are forgotten after at least this many evaluation intervals
#: without a point (``limits.forget_after_stale`` is raised to it for slow groups).
FORGET_MIN_EVALUATIONS = 3
DEFAULT_FORGET_AFTER_STALE = 900.0
"""``limits.forget_after_stale`` (seconds): a series with no point for 15 minutes of data
time is forgotten (its firing alert resolved, its row freed for a new series, as pods
come and go); a rule's own ``forget_after_stale`` overrides it; ``0s`` turns it off."""

_ID_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_-]*")
_ALERT_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_HOST_PORT_RE = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[^:\[\]\s]*):(?P<port>\d{1,5})")


def config_error(message: str, *at: str | int) -> PydanticCustomError:
    """An error for a model validator, located at the sub-path ``at`` of the model.

    The loader reports it at the value found under ``at`` (or at the model itself).
    """
    return PydanticCustomError("config", "{message}", {"message": message, "at": list(at)})


def _from_yaml(info: ValidationInfo) -> bool:
    return bool(isinstance(info.context, dict) and info.context.get("from_yaml"))


# --- scalar types -------------------------------------------------------------------


def _duration(value: Any, info: ValidationInfo) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f'must be a duration such as "5m", got {_show(value)}')
    if isinstance(value, int | float) and value != 0 and _from_yaml(info):
        # Like Prometheus: a bare number is ambiguous (seconds? minutes?), only 0 is not.
        raise ValueError(f'must be a duration with a unit such as "{value}s", got {value}')
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise ValueError(
            f"invalid duration {_show(value)}: use a number and a unit (ms, s, m, h, d, w, y), "
            'such as "90s" or "1h30m"'
        ) from None
    if not math.isfinite(seconds):
        raise ValueError(f"must be a finite duration, got {_show(value)}")
    if seconds > MAX_DURATION:
        raise ValueError(f"must be at most 100y, got {_show(value)}")
    return seconds


def _at_least(minimum: float, *, off: bool = False) -> AfterValidator:
    """A duration of at least ``minimum`` seconds (or 0, the off value, with ``off``)."""
    floor = format_duration(minimum)

    def check(seconds: float) -> float:
        if seconds < minimum and not (off and seconds == 0):
            got = format_duration(seconds)
            raise ValueError(f"must be {'0s (off) or ' if off else ''}at least {floor}, got {got}")
        return seconds

    return AfterValidator(check)


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be greater than 0s")
    return seconds


def _serialize_duration(seconds: float) -> str:
    return format_duration(seconds)


Duration = Annotated[float, PlainValidator(_duration), PlainSerializer(_serialize_duration)]
"""Seconds, written as a Prometheus duration (``90s``, ``1h30m``)."""
PositiveDuration = Annotated[Duration, AfterValidator(_positive)]


def _name_check(kind: str, pattern: re.Pattern[str], hint: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"invalid {kind} {_show(value)}: {hint}")
        return value

    return check


LabelName = Annotated[
    StrictStr,
    AfterValidator(_name_check("label name", LABEL_NAME_RE, "use [a-zA-Z_][a-zA-Z0-9_]*")),
]
SourceId = Annotated[
    StrictStr, AfterValidator(_name_check("source id", _ID_RE, "use [a-zA-Z_][a-zA-Z0-9_-]*"))
]
AnnotationName = Annotated[
    StrictStr,
    AfterValidator(_name_check("annotation name", LABEL_NAME_RE, "use [a-zA-Z_][a-zA-Z0-9_]*")),
]
AlertName = Annotated[
    StrictStr, AfterValidator(_name_check("alert name", _ALERT_RE, "use [a-zA-Z_][a-zA-Z0-9_]*"))
]


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


NonEmptyStr = Annotated[StrictStr, AfterValidator(_non_empty)]


def _rule_label_name(name: str) -> str:
    if name == "alertname":
        raise ValueError('label "alertname" is set from "alert"; remove it')
    if name.startswith("__"):
        raise ValueError(f"label names starting with __ are reserved, got {_show(name)}")
    return name


RuleLabelName = Annotated[LabelName, AfterValidator(_rule_label_name)]


def _threshold(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number, got {_show(value)}")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"must be in (0, 1], got {_show(value)}")
    return float(value)


def _selector(value: Any) -> Selector:
    if isinstance(value, Selector):
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {_show(value)}")
    return parse_selector(value)


SelectorField = Annotated[Selector, PlainValidator(_selector), PlainSerializer(str)]


def _matcher(value: Any) -> Matcher:
    if isinstance(value, Matcher):
        return value
    if not isinstance(value, str):
        raise ValueError(
            f"must be a matcher string such as 'severity=\"page\"', got {_show(value)}"
        )
    return parse_matcher(value)


MatcherField = Annotated[Matcher, PlainValidator(_matcher), PlainSerializer(str)]
"""One matcher; in a ``matchers:`` list one YAML entry may hold several (see below)."""

LEGACY_MATCH_KEYS: dict[str, tuple[str, str]] = {
    "match": ("matchers", "="),
    "match_re": ("matchers", "=~"),
    "source_match": ("source_matchers", "="),
    "source_match_re": ("source_matchers", "=~"),
    "target_match": ("target_matchers", "="),
    "target_match_re": ("target_matchers", "=~"),
}
"""Alertmanager's deprecated label maps: key -> (the ``matchers`` list it joins, operator)."""


def _expand_matchers(data: Any, lists: tuple[str, ...], legacy: tuple[str, ...] = ()) -> Any:
    """Before validation: legacy maps become matchers; entries holding several split.

    ``foo=bar,dings!=bums`` is two matchers, ``{}`` none, as in Alertmanager. When an
    entry does not parse, the list keeps its positions (each good entry stands for its
    first matcher) so that the error is reported at the right entry.
    """
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for old_key in legacy:
        target, op = LEGACY_MATCH_KEYS[old_key]
        if old_key not in out:
            continue
        mapping = out.pop(old_key)
        if mapping is None:
            continue
        if not isinstance(mapping, dict):
            raise config_error(
                f'"{old_key}" must be a mapping of label names to values, got {_show(mapping)}',
                old_key,
            )
        extra: list[Matcher] = []
        for name, value in mapping.items():
            if not isinstance(name, str) or not LABEL_NAME_RE.fullmatch(name):
                raise config_error(f'"{old_key}": invalid label name {_show(name)}', old_key)
            if not isinstance(value, str):
                raise config_error(
                    f'"{old_key}.{name}" must be a string, got {_show(value)}', old_key, name
                )
            try:
                extra.append(Matcher(name, op, value))  # type: ignore[arg-type]
            except ValueError as exc:
                raise config_error(f'"{old_key}.{name}": {exc}', old_key, name) from None
        current = out.get(target) or []
        out[target] = [*current, *extra] if isinstance(current, list | tuple) else current
    for key in lists:
        entries = out.get(key)
        if not isinstance(entries, list | tuple):
            continue
        parsed: list[list[Matcher] | None] = []
        for entry in entries:
            if isinstance(entry, Matcher):
                parsed.append([entry])
            elif isinstance(entry, str):
                try:
                    parsed.append(parse_matchers(entry))
                except ValueError:
                    parsed.append(None)
            else:
                parsed.append(None)
        if all(p is not None for p in parsed):
            out[key] = [m for p in parsed if p is not None for m in p]
        else:
            out[key] = [_first(p, e) for p, e in zip(parsed, entries, strict=True)]
    return out


def _first(parsed: list[Matcher] | None, entry: Any) -> Any:
    if parsed is None:
        return entry  # the field validator reports it
    return parsed[0] if parsed else Matcher(".empty", "=", "")  # stands in; never kept


def _template(value: Any) -> Template:
    if isinstance(value, Template):
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {_show(value)}")
    return Template(value)


TemplateField = Annotated[Template, PlainValidator(_template), PlainSerializer(str)]


def _utc_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"must be a time such as 2026-01-01T00:00:00Z, got {_show(value)}"
            ) from None
    else:
        raise ValueError(f"must be a time such as 2026-01-01T00:00:00Z, got {_show(value)}")
    if dt.tzinfo is None:  # YAML: a timestamp without a zone is UTC
        dt = dt.replace(tzinfo=UTC)
    try:
        return dt.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError(f"must be a time within years 1-9999 in UTC, got {_show(value)}") from None


UtcDatetime = Annotated[
    datetime, PlainValidator(_utc_datetime), PlainSerializer(lambda d: d.isoformat())
]


def _path(value: Any) -> Path:
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty path, got {_show(value)}")
    return Path(value)


PathField = Annotated[Path, PlainValidator(_path), PlainSerializer(str)]


def _listen(value: str) -> str:
    if value == "":
        return value
    m = _HOST_PORT_RE.fullmatch(value)
    if m is None or int(m.group("port")) > 65535:
        raise ValueError(f'must be "host:port" (or "" for off), got {_show(value)}')
    return value


class _Model(BaseModel):
    """Frozen, strict about keys; YAML-only checks look at the validation context."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    #: Fields set by the loader, never written in YAML.
    _yaml_hidden: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _null_is_empty(cls, data: Any) -> Any:
        # `rules:` with every rule commented out is null in YAML; Go's yaml (Prometheus,
        # Alertmanager) reads it as an empty list, and so do we for optional lists/maps.
        if not isinstance(data, dict) or None not in data.values():
            return data
        empty = set()
        for name, f in cls.model_fields.items():
            factory = f.default_factory
            if (
                f.default == ()
                or factory in (dict, list, tuple)
                or (isinstance(factory, type) and issubclass(factory, BaseModel))
            ):
                empty.update({name, f.alias or name})
        return {k: v for k, v in data.items() if not (v is None and k in empty)}

    @classmethod
    def yaml_keys(cls) -> list[str]:
        """The keys a YAML mapping for this model may hold."""
        return [
            f.alias or name for name, f in cls.model_fields.items() if name not in cls._yaml_hidden
        ]


# --- rule files -----------------------------------------------------------------------


class DetectorSpec(_Model):
    """``detector:``: which registered detector scores the rule's series, with what."""

    type: NonEmptyStr = DEFAULT_DETECTOR
    params: dict[StrictStr, Any] = Field(default_factory=dict)


def _cron(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f'must be a cron expression such as "0 3 * * *", got {_show(value)}')
    from aiops.models.retrain import cron_trigger  # APScheduler, imported when used

    try:
        cron_trigger(value)
    except ValueError as exc:  # APScheduler's reason
        raise ValueError(f"invalid cron expression {_show(value)}: {exc}") from None
    return value


CronField = Annotated[str, PlainValidator(_cron)]


def _ratio(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number, got {_show(value)}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"must be a number greater than 0, got {_show(value)}")
    return float(value)


Ratio = Annotated[float, PlainValidator(_ratio)]


class Retrain(_Model):
    """``retrain:``: when a new model version is trained, and when it replaces the old one.

    See :mod:`aiops.models.retrain` and the README's "Retraining". ``every`` and
    ``cron`` are two ways to schedule (not both); ``on_drift`` adds a retrain when the
    rule's ``drift:`` check fires.
    """

    every: PositiveDuration | None = None
    cron: CronField | None = None
    window: PositiveDuration = 7 * 86400.0
    on_drift: StrictBool = False
    max_points: StrictInt = Field(default=1_000_000, ge=1000, le=100_000_000)
    shadow: PositiveDuration = 3600.0
    max_alert_rate_ratio: Ratio = 2.0
    rollback_alert_rate_ratio: Ratio = 5.0
    watch: PositiveDuration = 6 * 3600.0

    @model_validator(mode="after")
    def _one_schedule(self) -> Retrain:
        if self.every is not None and self.cron is not None:
            raise config_error('give either "every" or "cron", not both', "cron")
        return self


#: Bound on the values a drift check's seasonal input baseline keeps (8 bytes each).
MAX_SEASON_VALUES = 2_000_000


class Drift(_Model):
    """``drift:``: river drift checks on the rule's input, score and alert rate.

    See :mod:`aiops.models.drift` and the README's "Drift checks". The input check
    compares each bucket with the same bucket one ``season`` earlier, so a daily cycle
    is not a drift (``bench/drift_seasonal.py``).
    """

    detector: Literal["adwin", "kswin", "page_hinkley"] = "adwin"
    params: dict[StrictStr, Any] = Field(default_factory=dict)
    on: tuple[Literal["input", "score", "alert_rate"], ...] = ("input", "score", "alert_rate")
    sample: StrictInt = Field(default=64, ge=1, le=10_000)
    every: PositiveDuration = 300.0
    cooldown: Duration = 3600.0
    season: Duration = 86400.0

    @model_validator(mode="after")
    def _checks(self) -> Drift:
        if not self.on:
            raise config_error('"on" must name at least one of input, score, alert_rate', "on")
        if self.season and (self.season < self.every or self.season % self.every):
            raise config_error(
                '"season" must be 0 or a whole number of buckets ("every")', "season"
            )
        kept = self.sample * round(self.season / self.every) if "input" in self.on else 0
        if kept > MAX_SEASON_VALUES:
            raise config_error(
                f'the input check would keep "sample" x "season"/"every" = {kept:,} values; '
                f"at most {MAX_SEASON_VALUES:,} (fewer series, longer buckets, or season: 0)",
                "season",
            )
        if len(set(self.on)) != len(self.on):
            raise config_error('"on" names a signal twice', "on")
        from aiops.models.drift import make_detector  # river, imported when used

        try:
            make_detector(self.detector, self.params)
        except ImportError:
            raise config_error(
                "drift checks need river: pip install 'aiopsd[river]'", "detector"
            ) from None
        except (TypeError, ValueError) as exc:
            raise config_error(f"invalid {self.detector} parameters: {exc}", "params") from None
        return self


def _regex(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty regular expression, got {_show(value)}")
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {_show(value)}: {exc}") from None
    return value


RegexField = Annotated[str, PlainValidator(_regex)]


class MaskSpec(_Model):
    """One ``log.mining.masks`` entry: text matching ``regex`` is mined as ``mask``."""

    regex: RegexField
    mask: NonEmptyStr


class LogMining(_Model):
    """``log.mining:``: the template miner's settings (Drain) and extra masks."""

    depth: StrictInt = Field(default=5, ge=3, le=10)
    sim_th: Annotated[float, PlainValidator(_threshold)] = 0.7
    max_clusters: StrictInt = Field(default=10_000, ge=1, le=10_000_000)
    masks: tuple[MaskSpec, ...] = ()
    default_masks: StrictBool = True


_LOG_ONLY = {
    "new_template": ("learn_for", "max_alerts", "per", "resolve_after"),
    "template_rate": ("interval",),
    "error_burst": ("interval", "levels", "pattern"),
}


class LogRule(_Model):
    """``log:``: makes the rule a log rule of one ``type`` (see README "Log rules").

    The rule's ``selector`` (optional) then picks log streams by their labels.
    """

    type: Literal["new_template", "template_rate", "error_burst"]
    partition_by: tuple[LabelName, ...] = ("service",)
    interval: PositiveDuration = 60.0
    learn_for: Duration = 3600.0
    max_alerts: StrictInt = Field(default=3, ge=1, le=100_000)
    per: PositiveDuration = 600.0
    resolve_after: PositiveDuration = 600.0
    levels: tuple[NonEmptyStr, ...] = ()
    pattern: RegexField | None = None
    examples: StrictInt = Field(default=3, ge=0, le=20)
    mining: LogMining = Field(default_factory=LogMining)

    @model_validator(mode="after")
    def _options_of_type(self) -> LogRule:
        allowed = set(_LOG_ONLY[self.type])
        for key in sorted(set().union(*_LOG_ONLY.values()) - allowed):
            if key in self.model_fields_set:
                raise config_error(f'"{key}" does not apply to log rules of type {self.type}', key)
        return self


#: Keys of a rule that a ``new_template`` log rule does not use (it has no detector).
_NO_SCORING = ("detector", "threshold", "for_", "min_hits", "suppress")


class Rule(_Model):
    """One alerting rule: which series, which detector, and when a score becomes an alert.

    Exactly one of ``selector`` (push sources: which series of the stream) and
    ``query`` (pull sources: a PromQL expression) is set, unless ``log`` makes it a log
    rule: then ``selector`` (optional) picks log streams and ``query`` is not allowed.
    ``hits_window`` defaults to ``min_hits``. ``for_`` and ``suppress`` are seconds.
    """

    alert: AlertName
    source: SourceId
    selector: SelectorField | None = None
    query: NonEmptyStr | None = None
    log: LogRule | None = None
    detector: DetectorSpec = Field(default_factory=DetectorSpec)
    threshold: Annotated[float, PlainValidator(_threshold)] = DEFAULT_THRESHOLD
    for_: Duration = Field(default=0.0, alias="for")
    min_hits: StrictInt = Field(default=1, ge=1, le=64)
    # The hit history is one 64-bit word per series (aiops.pipeline.postrule.MAX_WINDOW).
    hits_window: StrictInt = Field(default=1, ge=1, le=64)
    suppress: Duration = 0.0
    protect_baseline: StrictBool = True
    resolve_after_stale: Duration = DEFAULT_RESOLVE_AFTER_STALE
    #: None: ``limits.forget_after_stale``.
    forget_after_stale: Annotated[Duration, _at_least(MIN_FORGET_AFTER_STALE, off=True)] | None = (
        None
    )
    retrain: Retrain | None = None
    drift: Drift | None = None
    labels: dict[RuleLabelName, StrictStr] = Field(default_factory=dict)
    annotations: dict[AnnotationName, TemplateField] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _default_hits_window(cls, data: Any) -> Any:
        if isinstance(data, dict) and "hits_window" not in data:
            min_hits = data.get("min_hits", 1)
            # An out-of-range min_hits is reported alone (not again as its window).
            if isinstance(min_hits, int) and not isinstance(min_hits, bool) and 1 <= min_hits <= 64:
                return {**data, "hits_window": min_hits}
        return data

    @model_validator(mode="after")
    def _cross_checks(self) -> Rule:
        if self.selector is not None and self.query is not None:
            raise config_error('give either "selector" or "query", not both', "query")
        if self.log is not None:
            if self.query is not None:
                raise config_error('a log rule takes no "query" (use "selector")', "query")
            for name in ("retrain", "drift"):
                if name in self.model_fields_set:
                    raise config_error(f'"{name}" does not apply to log rules', name)
            if self.log.type == "new_template":
                for name in _NO_SCORING:
                    if name in self.model_fields_set:
                        key = name.rstrip("_")
                        raise config_error(
                            f'"{key}" does not apply to log rules of type new_template', key
                        )
        elif self.selector is None and self.query is None:
            raise config_error('missing required key "selector" (or "query" for PromQL sources)')
        if self.hits_window < self.min_hits:
            raise config_error(
                f'"hits_window" must be at least "min_hits" ({self.min_hits}), '
                f"got {self.hits_window}",
                "hits_window",
            )
        return self

    def fingerprint(self) -> str:
        """A hash of the rule's whole definition: equal hashes mean equal rules."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class RuleGroup(_Model):
    """A named list of rules; ``file`` and ``line`` say where it was loaded from."""

    @model_validator(mode="after")
    def _forget_after_evaluations(self) -> RuleGroup:
        every = self.interval or DEFAULT_QUERY_INTERVAL
        for i, rule in enumerate(self.rules):
            forget = rule.forget_after_stale
            if rule.query is not None and forget and forget < 2 * every:
                raise config_error(
                    f'"forget_after_stale" ({format_duration(forget)}) '
                    f"must be at least two evaluation intervals ({format_duration(2 * every)}): "
                    "its series would be forgotten between evaluations",
                    "rules",
                    i,
                    "forget_after_stale",
                )
        return self

    def forget_seconds(self, rule: Rule, default: float) -> float:
        """``rule``'s forget_after_stale: its own, else ``default`` (the limits').

        For a query rule the default is raised to :data:`FORGET_MIN_EVALUATIONS`
        evaluation intervals, so that a slow group's series are never forgotten between
        two evaluations while other sources move the data time on.
        """
        if rule.forget_after_stale is not None:
            return rule.forget_after_stale
        if rule.query is None or default == 0:
            return default
        every = self.interval or DEFAULT_QUERY_INTERVAL
        return max(default, FORGET_MIN_EVALUATIONS * every)

    name: NonEmptyStr
    interval: PositiveDuration | None = None
    rules: tuple[Rule, ...] = ()
    file: str = ""
    line: int = 0

    _yaml_hidden: ClassVar[frozenset[str]] = frozenset({"file", "line"})

    @field_validator("file", "line", mode="before")
    @classmethod
    def _not_from_yaml(cls, value: Any, info: ValidationInfo) -> Any:
        if _from_yaml(info):
            raise PydanticCustomError("extra_forbidden", "Extra inputs are not permitted")
        return value


class RuleFile(_Model):
    """A rule file: ``groups:``."""

    groups: tuple[RuleGroup, ...] = ()


# --- daemon config -----------------------------------------------------------------------


class SourceSpec(_Model):
    """One entry of ``sources:``: its id (the key), ``type`` and the type's settings.

    ``config`` is an instance of the source class' nested ``Config`` model, validated
    by the loader from the entry's other keys.
    """

    id: NonEmptyStr
    type: NonEmptyStr
    config: SerializeAsAny[BaseModel]


class StateSettings(_Model):
    """``state:``: where checkpoints and models live, and how often to checkpoint."""

    dir: PathField = Path("aiops-state")
    checkpoint_interval: PositiveDuration = 30.0
    #: ``rejects.jsonl`` is rotated when it passes this size ("64MiB", "500KB", bytes).
    rejects_max_size: Annotated[ByteSize, Field(ge=4096, le=1 << 40)] = ByteSize(64 << 20)
    #: Rotated rejects files kept (``rejects.jsonl.1`` ...); 0 keeps only the current one.
    rejects_keep: StrictInt = Field(default=4, ge=0, le=1000)
    #: The key that signs pickled models in the state (:mod:`aiops.state.signing`): an
    #: environment variable's name or a file (relative to the config file), one of them;
    #: neither: ``$AIOPS_STATE_HMAC_KEY``, ``$AIOPS_STATE_HMAC_KEY_FILE`` or systemd's
    #: ``state-hmac-key`` credential.
    hmac_key_env: NonEmptyStr | None = None
    hmac_key_file: NonEmptyStr | None = None

    @model_validator(mode="after")
    def _one_key(self) -> StateSettings:
        if self.hmac_key_env is not None and self.hmac_key_file is not None:
            raise ValueError(
                'give the state signing key as one of "hmac_key_env" or "hmac_key_file", not both'
            )
        return self


class DeliverySettings(_Model):
    """``delivery:``: how the outbox retries notifications (see :mod:`aiops.alerting.outbox`)."""

    base_delay: PositiveDuration = 1.0
    max_delay: PositiveDuration = 300.0
    max_attempts: StrictInt = Field(default=50, ge=1, le=100_000)
    max_age: PositiveDuration = 86_400.0
    attempt_timeout: PositiveDuration = 30.0
    breaker_failures: StrictInt = Field(default=5, ge=1, le=100_000)
    breaker_cooldown: PositiveDuration = 60.0
    retention: PositiveDuration = 7 * 86_400.0

    @model_validator(mode="after")
    def _delays(self) -> DeliverySettings:
        if self.base_delay > self.max_delay:
            raise config_error(
                f'"base_delay" ({format_duration(self.base_delay)}) must not exceed '
                f'"max_delay" ({format_duration(self.max_delay)})',
                "base_delay",
            )
        return self


def _memory_budget(value: ByteSize) -> ByteSize:
    if value and not (64 << 20) <= value <= (1 << 50):
        raise ValueError("must be 0 (no budget) or between 64MiB and 1PiB")
    return value


class LimitsSettings(_Model):
    """``limits:``: caps that protect the daemon from runaway cardinality."""

    #: At about 1 KiB per series, beyond 100 million is a typo, not a machine.
    max_series_per_rule: StrictInt = Field(default=100_000, ge=1, le=100_000_000)
    #: A series with no point for this long (data time) is forgotten; 0 never.
    forget_after_stale: Annotated[Duration, _at_least(MIN_FORGET_AFTER_STALE, off=True)] = (
        DEFAULT_FORGET_AFTER_STALE
    )
    #: The process' resident set size above which new series are dropped; 0: no budget.
    max_memory: Annotated[ByteSize, AfterValidator(_memory_budget)] = ByteSize(0)


class SlackInteractivity(_Model):
    """``http.slack:``: the ``POST /slack/interactions`` endpoint for Slack's buttons.

    The Slack app's signing secret comes from an environment variable or a file (one
    of them); ``response_url_prefixes`` bounds where the handler may post message
    updates (Slack's own host unless a test or proxy needs another).
    """

    signing_secret_env: NonEmptyStr | None = None
    signing_secret_file: NonEmptyStr | None = None
    response_url_prefixes: tuple[NonEmptyStr, ...] = ("https://hooks.slack.com/",)

    @model_validator(mode="after")
    def _one_secret(self) -> SlackInteractivity:
        if (self.signing_secret_env is None) == (self.signing_secret_file is None):
            raise ValueError(
                'give the signing secret as exactly one of "signing_secret_env" or '
                '"signing_secret_file"'
            )
        return self


_BCRYPT_RE = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")


def _bcrypt_hash(value: str) -> str:
    if not _BCRYPT_RE.fullmatch(value):
        raise ValueError(
            'must be a bcrypt hash such as "$2y$10$..." (60 characters; make one with '
            "`htpasswd -nBC 10 USER`), not a password"
        )
    return value


class HttpAuth(_Model):
    """``http.auth:``: credentials every endpoint but ``/healthz`` asks for.

    A bearer token (from an environment variable or a file, never inline) and/or basic
    auth users with bcrypt-hashed passwords, as in Prometheus' web configuration.
    """

    bearer_token_env: NonEmptyStr | None = None
    bearer_token_file: NonEmptyStr | None = None
    basic_auth_users: dict[NonEmptyStr, Annotated[StrictStr, AfterValidator(_bcrypt_hash)]] = Field(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _some_credential(self) -> HttpAuth:
        if self.bearer_token_env is not None and self.bearer_token_file is not None:
            raise ValueError(
                'give the bearer token as one of "bearer_token_env" or '
                '"bearer_token_file", not both'
            )
        no_token = self.bearer_token_env is None and self.bearer_token_file is None
        if no_token and not self.basic_auth_users:
            raise ValueError(
                'set "bearer_token_env", "bearer_token_file" or "basic_auth_users" '
                "(or remove http.auth)"
            )
        return self


class HttpTls(_Model):
    """``http.tls:``: serve HTTPS from certificate files (PEM)."""

    cert_file: NonEmptyStr
    key_file: NonEmptyStr
    client_ca_file: NonEmptyStr | None = None


class HttpLimits(_Model):
    """``http.limits:``: what one client may cost the listener (see :mod:`aiops.service.http`)."""

    max_connections: StrictInt = Field(default=512, ge=8, le=100_000)
    read_header_timeout: PositiveDuration = 10.0
    read_timeout: PositiveDuration = 60.0
    idle_timeout: PositiveDuration = 60.0
    max_header_bytes: StrictInt = Field(default=16 << 10, ge=1024, le=1 << 20)
    max_inflight_bytes: StrictInt = Field(default=128 << 20, ge=1 << 20, le=1 << 40)


class HttpSettings(_Model):
    """``http:``: the HTTP API and ``/metrics`` listener."""

    listen: Annotated[StrictStr, AfterValidator(_listen)] = ""
    external_url: StrictStr = ""
    slack: SlackInteractivity | None = None
    auth: HttpAuth | None = None
    tls: HttpTls | None = None
    limits: HttpLimits = Field(default_factory=HttpLimits)


def _at_least_one_source(sources: dict[str, SourceSpec]) -> dict[str, SourceSpec]:
    if not sources:
        raise ValueError("must define at least one source")
    return sources


class DaemonConfig(_Model):
    """``aiops.yaml``: sources, state, limits, HTTP, and the paths of the other files.

    Relative paths are relative to the config file's directory; the loader resolves
    ``state.dir`` and expands ``rule_files`` (see :class:`aiops.config.LoadedConfig`).
    """

    sources: Annotated[dict[SourceId, SourceSpec], AfterValidator(_at_least_one_source)]
    state: StateSettings = Field(default_factory=StateSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    rule_files: tuple[NonEmptyStr, ...] = ("rules/*.yaml",)
    alerting_file: NonEmptyStr | None = None


# --- alerting file -------------------------------------------------------------------------


def _group_by(labels: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if labels is None:
        return None
    if "..." in labels and len(labels) > 1:
        raise ValueError('"..." (group by all labels) must be the only entry')
    for name in labels:
        if name != "..." and not LABEL_NAME_RE.fullmatch(name):
            raise ValueError(f"invalid label name {_show(name)}")
    seen = [n for i, n in enumerate(labels) if n in labels[:i]]
    if seen:
        raise ValueError(f"duplicate label {_show(seen[0])}")
    return labels


class Route(_Model):
    """A node of the route tree (Alertmanager's ``route``).

    As written, unset fields are ``None``; in a loaded :class:`AlertingConfig` every
    route has ``receiver``, ``group_by`` and the three intervals set, inherited from
    its parent (the root's defaults: group by nothing, 30s, 5m, 4h). ``group_by ==
    ("...",)`` groups by all labels.
    """

    receiver: NonEmptyStr | None = None
    group_by: Annotated[tuple[StrictStr, ...] | None, AfterValidator(_group_by)] = None
    group_wait: Duration | None = None
    group_interval: PositiveDuration | None = None
    repeat_interval: PositiveDuration | None = None
    matchers: tuple[MatcherField, ...] = ()
    continue_: StrictBool = Field(default=False, alias="continue")
    mute_time_intervals: tuple[NonEmptyStr, ...] = ()
    active_time_intervals: tuple[NonEmptyStr, ...] = ()
    routes: tuple[Route, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _matcher_lists(cls, data: Any) -> Any:
        return _expand_matchers(data, ("matchers",), ("match", "match_re"))

    def walk(self) -> list[Route]:
        """Return this route and all routes below it, depth first."""
        out = [self]
        for child in self.routes:
            out.extend(child.walk())
        return out

    def _inherit(self, parent: Route | None) -> Route:
        update: dict[str, Any] = {}
        if parent is None:
            defaults = {
                "group_by": (),
                "group_wait": DEFAULT_GROUP_WAIT,
                "group_interval": DEFAULT_GROUP_INTERVAL,
                "repeat_interval": DEFAULT_REPEAT_INTERVAL,
            }
        else:
            defaults = {
                k: getattr(parent, k)
                for k in ("receiver", "group_by", "group_wait", "group_interval", "repeat_interval")
            }
        for key, value in defaults.items():
            if getattr(self, key) is None:
                update[key] = value
        me = self.model_copy(update=update) if update else self
        children = tuple(child._inherit(me) for child in self.routes)
        return me.model_copy(update={"routes": children}) if self.routes else me


class NotifierSpec(_Model):
    """One ``<type>_configs`` entry of a receiver: the notifier type and its settings."""

    type: NonEmptyStr
    config: SerializeAsAny[BaseModel]


class Receiver(_Model):
    """A named set of notifiers; written as ``name`` plus ``<type>_configs`` lists."""

    name: NonEmptyStr
    notifiers: tuple[NotifierSpec, ...] = ()

    _yaml_hidden: ClassVar[frozenset[str]] = frozenset({"notifiers"})

    @classmethod
    def yaml_keys(cls) -> list[str]:
        """``name`` and one ``<type>_configs`` key per registered notifier type."""
        from aiops.registry import NOTIFIERS

        return ["name", *(f"{t}_configs" for t in NOTIFIERS.names())]


class InhibitRule(_Model):
    """An inhibition: while a source alert fires, matching target alerts are muted.

    A source alert matches ``source_matchers``, a target alert ``target_matchers``, and
    both must have the same values of the ``equal`` labels.
    """

    source_matchers: tuple[MatcherField, ...] = ()
    target_matchers: tuple[MatcherField, ...] = ()
    equal: tuple[LabelName, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _matcher_lists(cls, data: Any) -> Any:
        legacy = ("source_match", "source_match_re", "target_match", "target_match_re")
        return _expand_matchers(data, ("source_matchers", "target_matchers"), legacy)


def _silence_matchers(matchers: tuple[Matcher, ...]) -> tuple[Matcher, ...]:
    if not matchers:
        raise ValueError("must have at least one matcher")
    if all(m.matches_value("") for m in matchers):
        raise ValueError("must have at least one matcher that does not match the empty string")
    return matchers


class Silence(_Model):
    """Mute alerts whose labels match every matcher between ``starts_at`` and ``ends_at``."""

    matchers: Annotated[tuple[MatcherField, ...], AfterValidator(_silence_matchers)]
    starts_at: UtcDatetime
    ends_at: UtcDatetime
    created_by: NonEmptyStr
    comment: NonEmptyStr

    @model_validator(mode="before")
    @classmethod
    def _matcher_lists(cls, data: Any) -> Any:
        return _expand_matchers(data, ("matchers",))

    @model_validator(mode="after")
    def _ordered(self) -> Silence:
        if self.ends_at <= self.starts_at:
            raise config_error('"ends_at" must be after "starts_at"', "ends_at")
        return self

    def active(self, ts: float) -> bool:
        """True if the silence is in effect at unix time ``ts``."""
        return self.starts_at.timestamp() <= ts < self.ends_at.timestamp()


_WEEKDAYS = {name.lower(): (i + 1) % 7 for i, name in enumerate(calendar.day_name)}  # sunday=0
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}


def _clock(value: Any) -> int:
    if not isinstance(value, str):
        raise ValueError(f'must be a time of day such as "18:00", got {_show(value)}')
    # Alertmanager's format: two-digit hours and minutes, "24:00" the only hour 24.
    m = re.fullmatch(r"(\d{2}):(\d{2})", value)
    if m is None or int(m.group(2)) > 59 or int(m.group(1)) * 60 + int(m.group(2)) > 1440:
        raise ValueError(
            f'must be a time of day "HH:MM" from "00:00" to "24:00", got {_show(value)}'
        )
    return int(m.group(1)) * 60 + int(m.group(2))


def _format_clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


ClockField = Annotated[int, PlainValidator(_clock), PlainSerializer(_format_clock)]


class TimeRange(_Model):
    """``{start_time: "09:00", end_time: "17:00"}``; stored as minutes since midnight."""

    start_time: ClockField
    end_time: ClockField

    @model_validator(mode="after")
    def _ordered(self) -> TimeRange:
        if self.end_time <= self.start_time:
            raise config_error('"end_time" must be after "start_time"', "end_time")
        return self


def _range_parser(
    kind: str, parse_one: Callable[[str], int], lo: int, hi: int
) -> Callable[[Any], tuple[int, int]]:
    def parse(value: Any) -> tuple[int, int]:
        if isinstance(value, tuple) and len(value) == 2:
            return (int(value[0]), int(value[1]))
        if isinstance(value, int) and not isinstance(value, bool):
            text = str(value)
        elif isinstance(value, str):
            text = value  # no spaces, as in Alertmanager (" 1:5" is an error there)
        else:
            raise ValueError(f"must be a {kind} or a {kind} range, got {_show(value)}")
        first, sep, last = text.partition(":")
        try:
            start = parse_one(first)
            end = parse_one(last) if sep else start
        except ValueError:
            raise ValueError(f"invalid {kind} range {_show(value)}") from None
        for v in (start, end):
            if not lo <= v <= hi or (kind == "day of month" and v == 0):
                raise ValueError(f"invalid {kind} range {_show(value)}: out of range")
        if kind == "day of month":
            _check_day_range(value, start, end)
        elif start > end:
            raise ValueError(f"invalid {kind} range {_show(value)}: start is after end")
        return (start, end)

    return parse


#: Alertmanager's stand-in month length for checking ranges that mix signs: a range
#: that ends before it starts in a 30-day month is rejected (``'31:-1'``, ``'2:-30'``).
_CHECK_MONTH_DAYS = 30


def _check_day_range(value: Any, start: int, end: int) -> None:
    """Reject day-of-month ranges that can never match, as Alertmanager does.

    A negative start needs a negative end (``'-15:5'`` is rejected); with negative days
    counted from a 30-day month's end, the start must not come after the end.
    """
    if start < 0 < end:
        raise ValueError(
            f"invalid day of month range {_show(value)}: the end must be negative "
            "if the start is negative"
        )
    first = start + _CHECK_MONTH_DAYS if start < 0 else start
    last = end + _CHECK_MONTH_DAYS if end < 0 else end
    if first > last:
        raise ValueError(
            f"invalid day of month range {_show(value)}: the end is always before the start"
        )


def _weekday(text: str) -> int:
    if text.lower() not in _WEEKDAYS:
        raise ValueError(text)
    return _WEEKDAYS[text.lower()]


def _month(text: str) -> int:
    return _MONTHS[text.lower()] if text.lower() in _MONTHS else _integer(text)


def _integer(text: str) -> int:
    """Digits with an optional minus sign, nothing else (Python's int() allows spaces)."""
    if not re.fullmatch(r"-?[0-9]+", text):
        raise ValueError(text)
    return int(text)


def _format_range(r: tuple[int, int]) -> str:
    return f"{r[0]}:{r[1]}"


WeekdayRange = Annotated[
    tuple[int, int],
    PlainValidator(_range_parser("weekday", _weekday, 0, 6)),
    PlainSerializer(_format_range),
]
DayRange = Annotated[
    tuple[int, int],
    PlainValidator(_range_parser("day of month", _integer, -31, 31)),
    PlainSerializer(_format_range),
]
MonthRange = Annotated[
    tuple[int, int],
    PlainValidator(_range_parser("month", _month, 1, 12)),
    PlainSerializer(_format_range),
]
YearRange = Annotated[
    tuple[int, int],
    PlainValidator(_range_parser("year", _integer, 1, 9999)),
    PlainSerializer(_format_range),
]


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {_show(name)}") from None
    return name


class TimeSpec(_Model):
    """One entry of a time interval: every given field must match (none given: always).

    Weekdays count from sunday = 0; negative days of month count from the month's end
    (-1 is the last day); ranges are inclusive, ``times`` ranges end-exclusive.
    """

    times: tuple[TimeRange, ...] = ()
    weekdays: tuple[WeekdayRange, ...] = ()
    days_of_month: tuple[DayRange, ...] = ()
    months: tuple[MonthRange, ...] = ()
    years: tuple[YearRange, ...] = ()
    location: Annotated[StrictStr, AfterValidator(_zone)] = "UTC"

    def contains(self, ts: float) -> bool:
        """True if unix time ``ts`` falls inside this spec, in its ``location``."""
        dt = datetime.fromtimestamp(ts, tz=ZoneInfo(self.location))
        minute = dt.hour * 60 + dt.minute
        if self.times and not any(r.start_time <= minute < r.end_time for r in self.times):
            return False
        weekday = (dt.weekday() + 1) % 7
        if self.weekdays and not any(a <= weekday <= b for a, b in self.weekdays):
            return False
        if self.days_of_month:
            n = calendar.monthrange(dt.year, dt.month)[1]
            if not any(_day(a, n) <= dt.day <= _day(b, n) for a, b in self.days_of_month):
                return False
        if self.months and not any(a <= dt.month <= b for a, b in self.months):
            return False
        return not self.years or any(a <= dt.year <= b for a, b in self.years)


def _day(day: int, days_in_month: int) -> int:
    return days_in_month + day + 1 if day < 0 else day


class TimeInterval(_Model):
    """A named list of time specs (Alertmanager's ``time_intervals`` entry).

    >>> ti = TimeInterval.model_validate({"name": "offhours", "time_intervals": [
    ...     {"weekdays": ["saturday", "sunday"]},
    ...     {"times": [{"start_time": "18:00", "end_time": "24:00"}]}]})
    >>> ti.contains(datetime(2026, 1, 3, 12, tzinfo=UTC).timestamp())  # a saturday
    True
    >>> ti.contains(datetime(2026, 1, 5, 12, tzinfo=UTC).timestamp())  # a monday noon
    False
    """

    name: NonEmptyStr
    time_intervals: tuple[TimeSpec, ...] = ()

    def contains(self, ts: float) -> bool:
        """True if any of the specs contains unix time ``ts``."""
        return any(spec.contains(ts) for spec in self.time_intervals)


ROOT_ROUTE_RULES = {
    "receiver": 'missing required key "receiver" in the root route',
    "matchers": 'the root route must not have "matchers" (it takes every alert)',
    "mute_time_intervals": 'the root route must not have "mute_time_intervals"',
    "active_time_intervals": 'the root route must not have "active_time_intervals"',
    "continue": 'the root route must not have "continue"',
}
"""What the root route must (not) have, by key: the message for each violation."""


class AlertingConfig(_Model):
    """The alerting file: route tree, receivers, inhibit rules, silences, time intervals.

    After validation the root route has a receiver and no matchers, and every route
    has its inherited settings filled in (see :class:`Route`).
    """

    route: Route
    receivers: tuple[Receiver, ...]
    inhibit_rules: tuple[InhibitRule, ...] = ()
    silences: tuple[Silence, ...] = ()
    time_intervals: tuple[TimeInterval, ...] = ()

    @model_validator(mode="after")
    def _root_and_inheritance(self) -> AlertingConfig:
        root = self.route
        if root.receiver is None:
            raise config_error(ROOT_ROUTE_RULES["receiver"], "route")
        for key in ("matchers", "mute_time_intervals", "active_time_intervals", "continue"):
            if getattr(root, key.replace("continue", "continue_")):
                raise config_error(ROOT_ROUTE_RULES[key], "route", key)
        # Frozen, but still being validated: the only moment the tree may be completed.
        object.__setattr__(self, "route", root._inherit(None))
        return self

    def receiver(self, name: str) -> Receiver:
        """The receiver called ``name`` (raises :class:`KeyError` if there is none)."""
        for r in self.receivers:
            if r.name == name:
                return r
        raise KeyError(name)

    def time_interval(self, name: str) -> TimeInterval:
        """The time interval called ``name`` (raises :class:`KeyError` if there is none)."""
        for t in self.time_intervals:
            if t.name == name:
                return t
        raise KeyError(name)
