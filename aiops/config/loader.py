"""Loading the three files: read, validate, cross-check, and report every error at once.

Order of work, as in Prometheus' rulefmt and Alertmanager's config.go: read the YAML
(positions kept), validate the parts that need the registries (source and notifier
settings against the plugin's ``Config`` model, detector parameters against the
detector's constructor, secrets), validate the shape and values with the pydantic
models, then check cross-references over the whole set of files (duplicate names,
undefined receivers, time intervals and sources, globs matching nothing).

Loading is a pure function: it returns new objects or raises :class:`ConfigErrors`
carrying every error, so a failed reload leaves the running configuration in place.
"""

from __future__ import annotations

import functools
import glob
import inspect
import math
import os
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from aiops.config.errors import ConfigError, ConfigErrors
from aiops.config.models import (
    ROOT_ROUTE_RULES,
    AlertingConfig,
    DaemonConfig,
    NotifierSpec,
    Receiver,
    Route,
    Rule,
    RuleFile,
    RuleGroup,
)
from aiops.config.translate import (
    Where,
    WhereFn,
    did_you_mean,
    located,
    problem_error,
    show,
    translate,
)
from aiops.config.yamlpos import Loc, YamlDoc, load_yaml
from aiops.pipeline.detector import keyword_params
from aiops.registry import DEFAULT_DETECTOR, DETECTORS, NOTIFIERS, SOURCES, Registry

__all__ = [
    "SECRET_KEYS",
    "LoadedConfig",
    "default_alerting",
    "load_alerting",
    "load_config",
    "load_rule_files",
]

SECRET_KEYS = frozenset({"token", "password", "secret", "api_key", "routing_key", "webhook_url"})
"""Setting names whose literal values must not sit in YAML (use ``<key>_env`` or
``<key>_file``)."""

_YAML = {"from_yaml": True}  # validation context: input comes from a file
_RESERVED_PARAMS = {"learn_below": 'it is set from "threshold" and "protect_baseline"'}


class _Unchecked(BaseModel):
    """Stands in for plugin settings that failed validation (never returned)."""

    model_config = ConfigDict(frozen=True)


class _NoSettings(BaseModel):
    """The settings model of a plugin class that declares no ``Config``."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class LoadedConfig:
    """A daemon config with everything it names, validated together.

    ``daemon.state.dir`` is resolved against the config's directory; ``rule_files``
    are the files the globs matched (in order, each once); ``alerting`` is the
    alerting file's config, or :func:`default_alerting` when none is named.
    """

    path: Path
    daemon: DaemonConfig
    groups: tuple[RuleGroup, ...]
    alerting: AlertingConfig
    rule_files: tuple[Path, ...] = ()
    alerting_file: Path | None = None

    @property
    def state_dir(self) -> Path:
        """The state directory, resolved against the config file's directory."""
        return self.daemon.state.dir

    def rules(self) -> Iterator[tuple[RuleGroup, Rule]]:
        """Every ``(group, rule)`` pair, in file order."""
        for group in self.groups:
            for rule in group.rules:
                yield group, rule

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file the configuration was read from (to watch for reloads)."""
        extra = (self.alerting_file,) if self.alerting_file is not None else ()
        return (self.path, *self.rule_files, *extra)


# --- public API ---------------------------------------------------------------------------


def load_config(path: Path, *, base_dir: Path | None = None) -> LoadedConfig:
    """Load a daemon config with its rule files and alerting file.

    Relative paths in the file (``state.dir``, ``rule_files``, ``alerting_file``) are
    relative to ``base_dir``, by default the config file's directory. Raises
    :class:`ConfigErrors` with every error of every file involved.
    """
    session = _Session()
    loaded = session.daemon(Path(path), base_dir)
    if session.errors or loaded is None:
        raise ConfigErrors(session.reported())
    return loaded


def load_rule_files(paths: Iterable[Path]) -> list[RuleGroup]:
    """Load rule files together (group names must be unique across them).

    Raises :class:`ConfigErrors` with every error. Sources are not checked (there is
    no daemon config to check them against).
    """
    session = _Session()
    groups, _ = session.rule_files([Path(p) for p in paths])
    if session.errors:
        raise ConfigErrors(session.reported())
    return groups


def load_alerting(path: Path) -> AlertingConfig:
    """Load an alerting file; raises :class:`ConfigErrors` with every error."""
    session = _Session()
    config = session.alerting(Path(path))
    if session.errors or config is None:
        raise ConfigErrors(session.reported())
    return config


@functools.cache
def default_alerting() -> AlertingConfig:
    """The alerting config used when none is named: everything to one console receiver.

    Built on first use: it needs the console notifier's settings model.
    """
    console = NOTIFIERS.get("console")
    settings = getattr(console, "Config", _NoSettings)()
    return AlertingConfig(
        route=Route(receiver="console"),
        receivers=(
            Receiver(name="console", notifiers=(NotifierSpec(type="console", config=settings),)),
        ),
    )


# --- the session: one load or check, with its file cache and errors -----------------


@dataclass
class _Session:
    """One load or check: caches read files and accumulates errors."""

    errors: list[ConfigError] = field(default_factory=list)
    docs: dict[str, YamlDoc] = field(default_factory=dict)
    refusals: set[ConfigError] = field(default_factory=set)

    def reported(self) -> list[ConfigError]:
        """The errors, without the echoes of a value refused while reading.

        A refused value (see :class:`~aiops.config.yamlpos.Problem`) was replaced, and
        the checks then complain about the replacement at the same place ("must be an
        integer, got null"): one line per mistake is kept, the reader's.
        """
        places = {(e.file, e.line, e.col) for e in self.refusals}
        return [
            e for e in self.errors if e in self.refusals or (e.file, e.line, e.col) not in places
        ]

    def read(self, path: Path) -> YamlDoc:
        key = os.path.normpath(str(path))
        if key not in self.docs:
            self.docs[key] = load_yaml(key)
        return self.docs[key]

    def readable(self, doc: YamlDoc, where: WhereFn) -> bool:
        """Report read problems; False if the file could not be parsed at all."""
        if doc.syntax_error is not None:
            self.errors.append(doc.syntax_error)
            return False
        for p in doc.problems:
            error = problem_error(p, doc, where)
            self.errors.append(error)
            if p.refused:
                self.refusals.add(error)
        return True

    # rule files ------------------------------------------------------------------------

    def rule_files(self, paths: Sequence[Path]) -> tuple[list[RuleGroup], list[YamlDoc]]:
        groups: list[RuleGroup] = []
        docs: list[YamlDoc] = []
        for path in paths:
            doc = self.read(path)
            if not self.readable(doc, _where_rules):
                continue
            docs.append(doc)
            groups.extend(self._rule_doc(doc))
        self._duplicate_groups(docs)
        return groups, docs

    def _rule_doc(self, doc: YamlDoc) -> list[RuleGroup]:
        if doc.empty:
            return []  # an empty rule file is allowed, as in Prometheus
        errors: list[ConfigError] = []
        for loc, rule in _raw_rules(doc):
            det = rule.get("detector")
            if isinstance(det, dict):
                errors.extend(self._detector(doc, (*loc, "detector"), det))
        errors.extend(_duplicate_alerts(doc))
        try:
            parsed = RuleFile.model_validate(doc.data, context=_YAML)
        except ValidationError as exc:
            errors.extend(translate(exc, doc, RuleFile, _where_rules))
            parsed = None
        self.errors.extend(errors)
        if parsed is None or errors:
            return []
        return [
            g.model_copy(update={"file": doc.file, "line": doc.value_pos(("groups", i))[0]})
            for i, g in enumerate(parsed.groups)
        ]

    def _detector(self, doc: YamlDoc, loc: Loc, det: dict[str, Any]) -> list[ConfigError]:
        dtype = det.get("type", DEFAULT_DETECTOR)
        params = det.get("params", {})
        if not isinstance(dtype, str) or not isinstance(params, dict):
            return []  # the model reports the wrong types
        out: list[ConfigError] = []

        def err(sub: Loc, message: str, *, at_key: bool = False) -> None:
            out.append(located(doc, (*loc, *sub), message, _where_rules, at_key=at_key))

        cls = _plugin_class(DETECTORS, dtype)
        if isinstance(cls, str):
            err(("type",), cls)
            return out
        names = keyword_params(cls)
        checked: dict[str, Any] = {}
        for name, value in params.items():
            if name in _RESERVED_PARAMS:
                err(
                    ("params", name),
                    f'"{name}" must not be set: {_RESERVED_PARAMS[name]}',
                    at_key=True,
                )
            elif names is not None and name not in names:
                valid = ", ".join(n for n in names if n not in _RESERVED_PARAMS)
                err(
                    ("params", name),
                    f'unknown param "{name}" for detector "{dtype}"'
                    + did_you_mean(name, names)
                    + f" (valid params: {valid})",
                    at_key=True,
                )
            else:
                checked[name] = value
        if names is not None:
            try:
                _params_model(cls).model_validate(checked)
            except ValidationError as exc:
                out.extend(translate(exc, doc, _params_model(cls), _where_rules, (*loc, "params")))
        if not out:
            try:
                cls(**checked)
            except (ValueError, TypeError) as exc:
                sub: Loc = ("params",) if "params" in det else ()
                err(sub, f'invalid params for detector "{dtype}": {exc}')
        return out

    def _duplicate_groups(self, docs: Sequence[YamlDoc]) -> None:
        first: dict[str, str] = {}
        for doc in docs:
            for i, group in enumerate(_as_list(_get(doc.data, "groups"))):
                name = _get(group, "name")
                if not isinstance(name, str):
                    continue
                loc: Loc = ("groups", i, "name")
                line, col = doc.value_pos(loc)
                if name in first:
                    where = first[name]
                    if where.startswith(f"{doc.file}:"):
                        where = "line {}, column {}".format(*where.rsplit(":", 2)[1:])
                    self.errors.append(
                        located(
                            doc,
                            loc,
                            f'duplicate group name "{name}" (first defined at {where})',
                            _where_rules,
                        )
                    )
                else:
                    first[name] = f"{doc.file}:{line}:{col}"

    # alerting file ------------------------------------------------------------------

    def alerting(self, path: Path) -> AlertingConfig | None:
        doc = self.read(path)
        if not self.readable(doc, _where_alerting):
            return None
        errors: list[ConfigError] = []
        data = doc.data if doc.data is not None else {}
        if isinstance(data, dict) and isinstance(data.get("receivers"), list):
            receivers = [
                self._receiver(doc, ("receivers", i), r, errors) if isinstance(r, dict) else r
                for i, r in enumerate(data["receivers"])
            ]
            data = {**data, "receivers": receivers}
        errors.extend(_alerting_references(doc))
        config = None
        try:
            config = AlertingConfig.model_validate(data, context=_YAML)
        except ValidationError as exc:
            errors.extend(translate(exc, doc, AlertingConfig, _where_alerting))
        self.errors.extend(errors)
        return None if errors else config

    def _receiver(
        self, doc: YamlDoc, loc: Loc, raw: dict[str, Any], errors: list[ConfigError]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        notifiers: list[NotifierSpec] = []
        for key, value in raw.items():
            if not key.endswith("_configs"):
                if key in Receiver._yaml_hidden:
                    msg = f'unknown key "{key}"' + did_you_mean(key, Receiver.yaml_keys())
                    errors.append(located(doc, (*loc, key), msg, _where_alerting, at_key=True))
                else:
                    out[key] = value
                continue
            ntype = key[: -len("_configs")]
            if ntype not in NOTIFIERS:
                msg = (
                    f'unknown notifier type "{ntype}" in "{key}"'
                    + did_you_mean(ntype, NOTIFIERS.names())
                    + f" (valid types: {', '.join(NOTIFIERS.names())})"
                )
                errors.append(located(doc, (*loc, key), msg, _where_alerting, at_key=True))
                continue
            if not isinstance(value, list):
                errors.append(
                    located(
                        doc,
                        (*loc, key),
                        f'"{key}" must be a list, got {show(value)}',
                        _where_alerting,
                    )
                )
                continue
            for j, item in enumerate(value):
                item_loc = (*loc, key, j)
                if not isinstance(item, dict):
                    errors.append(
                        located(
                            doc,
                            item_loc,
                            f'"{key}[{j}]" must be a mapping, got {show(item)}',
                            _where_alerting,
                        )
                    )
                    continue
                config = self._plugin(
                    doc, item_loc, NOTIFIERS, ntype, item, _where_alerting, errors, (*loc, key)
                )
                notifiers.append(NotifierSpec(type=ntype, config=config))
        out["notifiers"] = tuple(notifiers)
        return out

    # daemon config ------------------------------------------------------------------------

    def daemon(self, path: Path, base_dir: Path | None = None) -> LoadedConfig | None:
        doc = self.read(path)
        if not self.readable(doc, _where_daemon):
            return None
        base = Path(base_dir) if base_dir is not None else Path(os.path.dirname(doc.file))
        errors: list[ConfigError] = []
        data = doc.data if doc.data is not None else {}
        sources = _get(data, "sources")
        if isinstance(sources, dict):
            specs = {
                sid: self._source(doc, sid, entry, errors) if isinstance(entry, dict) else entry
                for sid, entry in sources.items()
            }
            data = {**data, "sources": specs}
        daemon: DaemonConfig | None = None
        try:
            daemon = DaemonConfig.model_validate(data, context=_YAML)
        except ValidationError as exc:
            errors.extend(translate(exc, doc, DaemonConfig, _where_daemon))

        rule_paths = self._expand_rule_files(doc, base, errors)
        groups, rule_docs = self.rule_files(rule_paths)
        if isinstance(sources, dict):
            self.errors.extend(_undefined_sources(rule_docs, set(sources), doc.file))
            self.errors.extend(_rule_kinds(rule_docs, sources))

        alerting_path: Path | None = None
        alerting: AlertingConfig | None = None
        name = _get(data, "alerting_file")
        if isinstance(name, str) and name.strip():
            alerting_path = Path(os.path.normpath(base / name))
            if alerting_path.is_file():
                alerting = self.alerting(alerting_path)
            else:
                errors.append(
                    located(
                        doc,
                        ("alerting_file",),
                        f'alerting file "{name}" does not exist (relative to {base})',
                        _where_daemon,
                    )
                )
        self.errors.extend(errors)
        if errors or self.errors or daemon is None:
            return None
        if alerting is None:
            alerting = default_alerting()
        state = daemon.state.model_copy(update={"dir": base / daemon.state.dir})
        return LoadedConfig(
            path=Path(doc.file),
            daemon=daemon.model_copy(update={"state": state}),
            groups=tuple(groups),
            alerting=alerting,
            rule_files=tuple(rule_paths),
            alerting_file=alerting_path,
        )

    def _source(
        self, doc: YamlDoc, sid: str, raw: dict[str, Any], errors: list[ConfigError]
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {"id": sid, "config": _Unchecked()}
        settings = {k: v for k, v in raw.items() if k != "type"}
        if "type" in raw:
            spec["type"] = raw["type"]
        stype = raw.get("type")
        loc: Loc = ("sources", sid)
        if isinstance(stype, str):
            spec["config"] = self._plugin(
                doc, loc, SOURCES, stype, settings, _where_daemon, errors, (*loc, "type")
            )
        else:
            errors.extend(_secrets(doc, loc, settings, _where_daemon))
        return spec

    def _plugin(
        self,
        doc: YamlDoc,
        loc: Loc,
        registry: Registry[Any],
        ptype: str,
        settings: dict[str, Any],
        where: WhereFn,
        errors: list[ConfigError],
        type_loc: Loc,
    ) -> BaseModel:
        """Validate one source's or notifier's settings against the plugin's model."""
        cls = _plugin_class(registry, ptype)
        model = getattr(cls, "Config", None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            model = _NoSettings
        known = None if isinstance(cls, str) else _keys_of(model)
        secret_errors = _secrets(doc, loc, settings, where, known)
        errors.extend(secret_errors)
        flagged = {e for e in settings if e in SECRET_KEYS}
        if isinstance(cls, str):
            # a notifier's type is in its key ("slack_configs"), a source's is a value
            errors.append(located(doc, type_loc, cls, where, at_key=registry is NOTIFIERS))
            return _Unchecked()
        try:
            config = model.model_validate({k: v for k, v in settings.items() if k not in flagged})
        except ValidationError as exc:
            errors.extend(translate(exc, doc, model, where, loc))
            return _Unchecked()
        # YAML's .inf and .nan pass a bound such as ge=0, and then fail at run time (a
        # simulator at speed .inf raised in every poll): no plugin setting takes them.
        bad = [
            located(doc, (*loc, *sub), f"{_name(sub)}must be a finite number, got {value}", where)
            for sub, value in _non_finite(config)
        ]
        if bad:
            errors.extend(bad)
            return _Unchecked()
        return config

    def _expand_rule_files(self, doc: YamlDoc, base: Path, errors: list[ConfigError]) -> list[Path]:
        raw = _get(doc.data, "rule_files", missing := object())
        written = raw is not missing
        patterns = raw if written else ["rules/*.yaml"]
        paths: list[Path] = []
        for i, pattern in enumerate(_as_list(patterns)):
            if not isinstance(pattern, str) or not pattern.strip():
                continue  # the model reports it
            found = sorted(glob.glob(os.path.join(str(base), pattern), recursive=True))
            matches = [os.path.normpath(f) for f in found if os.path.isfile(f)]
            if not matches:
                msg = f'"{pattern}" matches no files (relative to {base})'
                if not written:
                    msg = f'no rule files: the default "rule_files" pattern {msg}'
                errors.append(located(doc, ("rule_files", i), msg, _where_daemon))
            for m in matches:
                if Path(m) not in paths:
                    paths.append(Path(m))
        return paths


# --- checks over raw data (independent of the models' success) --------------------


def _name(sub: Loc) -> str:
    return f'"{sub[-1]}" ' if sub and isinstance(sub[-1], str) else ""


def _non_finite(value: Any, at: Loc = ()) -> Iterator[tuple[Loc, float]]:
    """``(sub-path, value)`` of every infinite or NaN float in a validated settings model."""
    if isinstance(value, float):
        if not math.isfinite(value):
            yield at, value
    elif isinstance(value, BaseModel):
        for name, info in type(value).model_fields.items():
            yield from _non_finite(getattr(value, name), (*at, info.alias or name))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _non_finite(item, (*at, i))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, (*at, str(key)))


def _get(node: Any, key: str, default: Any = None) -> Any:
    return node.get(key, default) if isinstance(node, dict) else default


def _as_list(node: Any) -> list[Any]:
    return node if isinstance(node, list) else []


def _raw_rules(doc: YamlDoc) -> Iterator[tuple[Loc, dict[str, Any]]]:
    for gi, group in enumerate(_as_list(_get(doc.data, "groups"))):
        for ri, rule in enumerate(_as_list(_get(group, "rules"))):
            if isinstance(rule, dict):
                yield ("groups", gi, "rules", ri), rule


def _duplicate_alerts(doc: YamlDoc) -> list[ConfigError]:
    out = []
    for gi, group in enumerate(_as_list(_get(doc.data, "groups"))):
        first: dict[str, tuple[int, int]] = {}
        for ri, rule in enumerate(_as_list(_get(group, "rules"))):
            alert = _get(rule, "alert")
            if not isinstance(alert, str):
                continue
            loc: Loc = ("groups", gi, "rules", ri, "alert")
            if alert in first:
                line, col = first[alert]
                msg = (
                    f'duplicate alert "{alert}" in group '
                    f"(first defined at line {line}, column {col})"
                )
                out.append(located(doc, loc, msg, _where_rules))
            else:
                first[alert] = doc.value_pos(loc)
    return out


def _undefined_sources(docs: Sequence[YamlDoc], ids: set[str], config: str) -> list[ConfigError]:
    out = []
    defined = ", ".join(sorted(ids)) or "none"
    for doc in docs:
        for loc, rule in _raw_rules(doc):
            source = rule.get("source")
            if isinstance(source, str) and source not in ids:
                msg = (
                    f'undefined source "{source}"'
                    + did_you_mean(source, ids)
                    + f" (sources in {config}: {defined})"
                )
                out.append(located(doc, (*loc, "source"), msg, _where_rules))
    return out


def _rule_kinds(docs: Sequence[YamlDoc], sources: Mapping[str, Any]) -> list[ConfigError]:
    """A rule's kind against its source's: either mismatch runs without any error.

    A pull source (``accepts_queries``: Prometheus) gets only the series its rules'
    queries return, so a ``selector`` (or log) rule on it never gets data; a push source
    never evaluates a ``query``, and the rule would see every series of the stream.
    """
    out = []
    for doc in docs:
        for loc, rule in _raw_rules(doc):
            sid = rule.get("source")
            entry = sources.get(sid) if isinstance(sid, str) else None
            stype = _get(entry, "type")
            if not isinstance(stype, str):
                continue
            cls = _plugin_class(SOURCES, stype)
            if isinstance(cls, str):
                continue  # reported with the source
            pull = bool(getattr(cls, "accepts_queries", False))
            if pull and "query" not in rule:
                key = "selector" if "selector" in rule else "log" if "log" in rule else "source"
                what = "a log rule" if "log" in rule else f'a "{key}" rule'
                msg = (
                    f'source "{sid}" is a {stype} source, which reads only the series of '
                    f'its rules\' "query": {what} on it never gets data'
                )
                out.append(located(doc, (*loc, key), msg, _where_rules))
            elif not pull and "query" in rule:
                msg = (
                    f'source "{sid}" is a {stype} source, which evaluates no "query" '
                    f'(only pull sources such as prometheus do): use "selector" to pick '
                    f"series of its stream"
                )
                out.append(located(doc, (*loc, "query"), msg, _where_rules))
    return out


def _alerting_references(doc: YamlDoc) -> list[ConfigError]:
    out: list[ConfigError] = []
    data = doc.data

    def names(section: str) -> list[str]:
        found: dict[str, tuple[int, int]] = {}
        for i, item in enumerate(_as_list(_get(data, section))):
            name = _get(item, "name")
            if not isinstance(name, str):
                continue
            loc: Loc = (section, i, "name")
            if name in found:
                line, col = found[name]
                kind = "receiver" if section == "receivers" else "time interval"
                msg = f'duplicate {kind} name "{name}" (first defined at line {line}, column {col})'
                out.append(located(doc, loc, msg, _where_alerting))
            else:
                found[name] = doc.value_pos(loc)
        return list(found)

    receivers = names("receivers")
    intervals = names("time_intervals")

    def walk(route: Any, loc: Loc) -> None:
        if not isinstance(route, dict):
            return
        receiver = route.get("receiver")
        if isinstance(receiver, str) and receiver not in receivers:
            msg = f'undefined receiver "{receiver}"' + did_you_mean(receiver, receivers)
            out.append(located(doc, (*loc, "receiver"), msg, _where_alerting))
        for key in ("mute_time_intervals", "active_time_intervals"):
            for i, name in enumerate(_as_list(route.get(key))):
                if isinstance(name, str) and name not in intervals:
                    msg = f'undefined time interval "{name}"' + did_you_mean(name, intervals)
                    out.append(located(doc, (*loc, key, i), msg, _where_alerting))
        for i, child in enumerate(_as_list(route.get("routes"))):
            walk(child, (*loc, "routes", i))

    root = _get(data, "route")
    if isinstance(root, dict):
        # Also checked by the model, but only once everything else in the file is valid.
        if root.get("receiver") is None:
            out.append(located(doc, ("route",), ROOT_ROUTE_RULES["receiver"], _where_alerting))
        for key in ("matchers", "mute_time_intervals", "active_time_intervals", "continue"):
            if root.get(key):
                out.append(located(doc, ("route", key), ROOT_ROUTE_RULES[key], _where_alerting))
    walk(root, ("route",))
    return out


def _keys_of(model: type[BaseModel]) -> frozenset[str]:
    """The keys a settings model takes (aliases where it has them)."""
    return frozenset(f.alias or name for name, f in model.model_fields.items())


#: Parts of the names of settings that hold a credential (``password_env``, ``token_file``).
_CREDENTIAL_WORDS = ("password", "token", "secret", "api_key", "routing_key")


def _url_credentials_hint(key: str, known: frozenset[str] | None) -> str:
    """Where a URL's credentials go instead: ``<key>_env``/``_file``, else the model's secrets.

    >>> _url_credentials_hint("url", frozenset({"url", "username", "password_env", "token_file"}))
    'give them in password_env, token_file, username'
    >>> _url_credentials_hint("url", None)
    'use url_env or url_file'
    """
    if known is None or {f"{key}_env", f"{key}_file"} & known:
        return f"use {key}_env or {key}_file"
    credentials = sorted(
        k
        for k in known
        if k.endswith("username")
        or (k.endswith(("_env", "_file")) and any(w in k for w in _CREDENTIAL_WORDS))
    )
    if not credentials:
        return "this connector takes no credentials"
    return "give them in " + ", ".join(credentials)


def _secrets(
    doc: YamlDoc, loc: Loc, settings: Any, where: WhereFn, known: frozenset[str] | None = None
) -> list[ConfigError]:
    """Literal secrets in plugin settings: ``token: abc`` or ``url: https://u:p@host``.

    ``known`` holds the keys of the plugin's settings model, when it is known, so a URL
    with credentials is pointed at the settings that exist.
    """
    out: list[ConfigError] = []

    def visit(node: Any, at: Loc, key: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in SECRET_KEYS and v is not None:
                    msg = f'secret "{k}" must not be written in YAML; use {k}_env or {k}_file'
                    out.append(located(doc, (*at, k), msg, where, at_key=True))
                else:
                    visit(v, (*at, k), k)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                visit(v, (*at, i), key)
        elif isinstance(node, str) and "@" in node and "://" in node:
            try:
                has_password = urlsplit(node.strip()).password is not None
            except ValueError:
                has_password = False
            if has_password:
                hint = _url_credentials_hint(key, known if at[:-1] == loc else None)
                msg = f'"{key}" must not hold credentials in YAML; {hint}'
                out.append(located(doc, at, msg, where))

    visit(settings, loc, str(loc[-1]) if loc else "")
    return out


# --- plugins -------------------------------------------------------------------------------


def _plugin_class(registry: Registry[Any], name: str) -> type[Any] | str:
    """The class registered as ``name``, or an error message."""
    if name not in registry:
        return (
            f'unknown {registry.kind} type "{name}"'
            + did_you_mean(name, registry.names())
            + f" (valid types: {', '.join(registry.names())})"
        )
    try:
        return registry.get(name)
    except (ImportError, AttributeError) as exc:
        return f'{registry.kind} type "{name}" is not available: {exc}'


_PARAMS_MODELS: dict[type[Any], type[BaseModel]] = {}


def _params_model(cls: type[Any]) -> type[BaseModel]:
    """A strict pydantic model of the constructor's keyword parameters and their types."""
    if cls in _PARAMS_MODELS:
        return _PARAMS_MODELS[cls]
    fields: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        init = vars(klass).get("__init__")
        if klass is object or init is None:
            continue
        try:
            hints = typing.get_type_hints(init)
        except (NameError, TypeError):
            hints = {}
        for p in inspect.signature(init).parameters.values():
            if p.kind is p.KEYWORD_ONLY:
                fields[p.name] = (hints.get(p.name, Any), None)
    model: type[BaseModel] = create_model(
        f"{cls.__name__}Params",
        __config__=ConfigDict(strict=True, extra="ignore", arbitrary_types_allowed=True),
        **fields,
    )
    _PARAMS_MODELS[cls] = model
    return model


# --- where an error is, for the message prefix ------------------------------------


def _where_rules(doc: YamlDoc, loc: Loc) -> Where:
    if len(loc) < 2 or loc[0] != "groups" or not isinstance(loc[1], int):
        return Where()
    group = _get(doc.get(loc[:2]), "name")
    rule = None
    if len(loc) >= 4 and loc[2] == "rules" and isinstance(loc[3], int):
        rule = _get(doc.get(loc[:4]), "alert")
    rule = rule if isinstance(rule, str) else None
    if isinstance(group, str):
        return Where(group=group, rule=rule)
    return Where(context=f'rule "{rule}"' if rule is not None else None)


def _where_alerting(doc: YamlDoc, loc: Loc) -> Where:
    if not loc:
        return Where()
    section = loc[0]
    if section == "route":
        return Where(context="route")
    if len(loc) < 2 or not isinstance(loc[1], int):
        return Where()
    name = _get(doc.get(loc[:2]), "name")
    if section == "receivers" and isinstance(name, str):
        return Where(context=f'receiver "{name}"')
    if section == "time_intervals" and isinstance(name, str):
        return Where(context=f'time interval "{name}"')
    if section in ("receivers", "time_intervals", "inhibit_rules", "silences"):
        return Where(context=f"{section}[{loc[1]}]")
    return Where()


def _where_daemon(doc: YamlDoc, loc: Loc) -> Where:
    if len(loc) >= 2 and loc[0] == "sources":
        return Where(context=f'source "{loc[1]}"')
    if len(loc) >= 2 and loc[0] in ("state", "limits", "http", "delivery"):
        return Where(context=str(loc[0]))
    return Where()
