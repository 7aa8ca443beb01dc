"""``aiops check``: validate config, rule and alerting files like promtool and amtool."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from aiops.config.errors import ConfigError, sort_errors
from aiops.config.loader import _Session
from aiops.config.yamlpos import YamlDoc

__all__ = ["check_paths", "detect_kind", "run_check"]

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


def run_check(paths: list[Path], out: TextIO) -> int:
    """Print every error, one per line, and a summary; return the exit code (0 or 1)."""
    errors, n_files = _check(paths)
    for e in errors:
        print(e, file=out)
    files = f"{n_files} file" + ("" if n_files == 1 else "s")
    if errors:
        print(f"checked {files}: {len(errors)} error" + ("" if len(errors) == 1 else "s"), file=out)
        return 1
    print(f"checked {files}: OK", file=out)
    return 0


def _check(paths: list[Path]) -> tuple[list[ConfigError], int]:
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
    return sort_errors(session.errors), len(session.docs)


def _yaml_files(directory: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(
            Path(root, n) for n in sorted(names) if n.endswith(_SUFFIXES) and not n.startswith(".")
        )
    return found
