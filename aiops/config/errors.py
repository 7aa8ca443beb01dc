"""Configuration errors: where (file, line, column, group, rule) and what."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ConfigError", "ConfigErrors", "sort_errors"]


@dataclass(frozen=True, slots=True)
class ConfigError:
    """One problem in one file, printed as ``FILE:LINE:COL: [where: ]MESSAGE``.

    ``line`` and ``col`` are 1-based; ``0`` means the error concerns the whole file
    (it cannot be read, say) and prints as ``FILE: MESSAGE``. Inside a rule file,
    ``group`` and ``rule`` name the group and alert; elsewhere ``context`` says where
    (``receiver "pager"``, ``route``, ``source "kafka"``).

    >>> str(ConfigError("rules/a.yaml", 7, 20, 'unknown key "treshold"', group="g", rule="R"))
    'rules/a.yaml:7:20: group "g", rule "R": unknown key "treshold"'
    >>> str(ConfigError("alerting.yaml", 3, 15, 'receiver "x" is not defined', context="route"))
    'alerting.yaml:3:15: route: receiver "x" is not defined'
    """

    file: str
    line: int
    col: int
    message: str
    group: str | None = None
    rule: str | None = None
    context: str | None = None

    @property
    def where(self) -> str:
        """The ``group "g", rule "r"`` (or context) part, without the colon."""
        if self.group is not None:
            text = f'group "{self.group}"'
            return text + (f', rule "{self.rule}"' if self.rule is not None else "")
        return self.context or ""

    def sort_key(self) -> tuple[str, int, int, str]:
        """Errors sort by file, line, column, then message."""
        return (self.file, self.line, self.col, self.message)

    def __str__(self) -> str:
        pos = f"{self.file}:{self.line}:{self.col}" if self.line else self.file
        where = self.where
        return f"{pos}: {where}: {self.message}" if where else f"{pos}: {self.message}"


def sort_errors(errors: Iterable[ConfigError]) -> list[ConfigError]:
    """Sort by file, line and column, dropping exact duplicates."""
    return sorted(set(errors), key=ConfigError.sort_key)


class ConfigErrors(Exception):
    """Loading failed; ``errors`` holds every problem found, sorted.

    The running configuration is never touched by a failed load: loading builds new
    objects and raises this instead of returning them.
    """

    def __init__(self, errors: Iterable[ConfigError]) -> None:
        self.errors: list[ConfigError] = sort_errors(errors)
        super().__init__("\n".join(str(e) for e in self.errors))
