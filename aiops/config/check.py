"""``aiops check``: validate config, rule and alerting files like promtool and amtool."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TextIO

from aiops.alerting.selector import Matcher
from aiops.config.errors import ConfigError, sort_errors
from aiops.config.loader import _Session
from aiops.config.models import LEGACY_MATCH_KEYS
from aiops.config.yamlpos import Loc, YamlDoc

__all__ = ["check_paths", "check_warnings", "detect_kind", "deprecations", "run_check"]

_SUFFIXES = (".yaml", ".yml")
_KINDS = (
    'expected a top-level "groups" (rule file), "route" or "receivers" (alerting file), '
    'or "sources" or "rule_files" (daemon config)'
)


def detect_kind(doc: YamlDoc) -> str | None:
    """``"rules"``, ``"alerting"``, ``"daemon"`` from the top-level keys, or None."""
    if not isinstance(doc.data, dict):
        return None
    if "groups" in doc.data:
        return "rules"
    if "route" in doc.data or "receivers" in doc.data:
        return "alerting"
    if "sources" in doc.data or "rule_files" in doc.data:
        return "daemon"
    return None


def check_paths(paths: list[Path]) -> list[ConfigError]:
    """Every error in the given files and directories (searched for ``*.yaml``/``*.yml``).

    Each file's kind comes from its top-level keys. A daemon config is checked together
    with the rule files and alerting file it names, including its sources against the
    rules' ``source:``; a rule file on its own is checked alone. Errors come sorted by
    file, line and column.
    """
    return _check(paths)[0]


def check_warnings(paths: list[Path]) -> list[ConfigError]:
    """What is accepted but deprecated in the given files (see :func:`deprecations`)."""
    return _check(paths)[2]


def run_check(paths: list[Path], out: TextIO) -> int:
    """Print every error and warning, one per line, and a summary; return the exit code.

    Warnings (deprecated keys) do not fail the check: the exit code is 1 only for errors.
    """
    errors, n_files, warnings = _check(paths)
    for e in sort_errors([*errors, *warnings]):
        print(e, file=out)
    files = f"{n_files} file" + ("" if n_files == 1 else "s")
    noted = f", {_count(len(warnings), 'warning')}" if warnings else ""
    if errors:
        print(f"checked {files}: {_count(len(errors), 'error')}{noted}", file=out)
        return 1
    print(f"checked {files}: OK{noted}", file=out)
    return 0


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def deprecations(doc: YamlDoc) -> list[ConfigError]:
    """Alertmanager's deprecated matcher maps in an alerting file, with their replacement.

    ``match``/``match_re`` (routes), ``source_match*``/``target_match*`` (inhibit rules)
    still load (converted to matchers), as in Alertmanager, which deprecated them in
    0.22; each is reported with the ``matchers`` entries that replace it.
    """
    out: list[ConfigError] = []
    data = doc.data if isinstance(doc.data, dict) else {}

    def note(item: Any, loc: Loc, context: str) -> None:
        if not isinstance(item, dict):
            return
        for key, (target, op) in LEGACY_MATCH_KEYS.items():
            mapping = item.get(key)
            if key not in item or not isinstance(mapping, dict):
                continue
            try:
                written = [str(Matcher(str(k), op, str(v))) for k, v in mapping.items()]  # type: ignore[arg-type]
            except ValueError:
                continue  # an error, which the loader reports
            line, col = doc.key_pos((*loc, key))
            listed = ", ".join(repr(w) for w in written)
            message = (
                f'warning: "{key}" is deprecated (Alertmanager 0.22); use {target}: [{listed}]'
            )
            out.append(ConfigError(doc.file, line, col, message, context=context))

    def walk(route: Any, loc: Loc) -> None:
        note(route, loc, "route")
        if isinstance(route, dict) and isinstance(route.get("routes"), list):
            for i, child in enumerate(route["routes"]):
                walk(child, (*loc, "routes", i))

    walk(data.get("route"), ("route",))
    rules = data.get("inhibit_rules")
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        note(rule, ("inhibit_rules", i), f"inhibit_rules[{i}]")
    return out


def _check(paths: list[Path]) -> tuple[list[ConfigError], int, list[ConfigError]]:
    session = _Session()
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(_yaml_files(path))
        elif path.exists():
            files.append(path)
        else:
            session.errors.append(ConfigError(str(path), 0, 0, "no such file or directory"))
    for path in dict.fromkeys(Path(os.path.normpath(f)) for f in files):
        doc = session.read(path)
        if doc.syntax_error is not None:
            session.errors.append(doc.syntax_error)
            continue
        kind = detect_kind(doc)
        if kind == "rules":
            session.rule_files([path])
        elif kind == "alerting":
            session.alerting(path)
        elif kind == "daemon":
            session.daemon(path)
        else:
            what = "empty file" if doc.empty else "cannot tell what kind of file this is"
            session.errors.append(ConfigError(doc.file, 1, 1, f"{what}: {_KINDS}"))
    warnings = [
        w
        for doc in session.docs.values()
        if doc.syntax_error is None and detect_kind(doc) == "alerting"
        for w in deprecations(doc)
    ]
    return sort_errors(session.reported()), len(session.docs), sort_errors(warnings)


def _yaml_files(directory: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(
            Path(root, n) for n in sorted(names) if n.endswith(_SUFFIXES) and not n.startswith(".")
        )
    return found
