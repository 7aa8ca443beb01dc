"""Pydantic's validation errors, translated into located, operator-friendly messages.

Pydantic reports *what* failed with a ``loc`` such as ``("groups", 0, "rules", 1,
"for")`` and a terse English message. This module finds that path in the YAML data to
get a line and column (the key, for an unknown key; the value otherwise), names the
group and rule (or receiver, source...) it is in, and rewrites the message in our own
words: ``unknown key "treshold"; did you mean "threshold"?``, ``missing required key
"alert"``, ``"threshold" must be a number, got "high"``.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from aiops.config.errors import ConfigError
from aiops.config.yamlpos import MISSING, Loc, Problem, YamlDoc, child

__all__ = ["Where", "WhereFn", "did_you_mean", "show", "translate"]


@dataclass(frozen=True, slots=True)
class Where:
    """The group/rule or context part of an error."""

    group: str | None = None
    rule: str | None = None
    context: str | None = None


WhereFn = Callable[[YamlDoc, Loc], Where]

_TYPE_WORDS = {
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "set_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dataclass_type": "a mapping",
    "none_required": "null",
}
_BOUNDS = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}


def show(value: Any) -> str:
    """A value as it would be written in YAML, for ``got ...`` in messages.

    >>> show("high"), show(True), show(None), show(1.5), show([1]), show({})
    ('"high"', 'true', 'null', '1.5', 'a list', 'a mapping')
    """
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return str(value)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``; did you mean "x"?`` for the closest choice, or ``""``.

    >>> did_you_mean("treshold", ["threshold", "for"])
    '; did you mean "threshold"?'
    """
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


def translate(
    exc: ValidationError,
    doc: YamlDoc,
    model: type[BaseModel],
    where: WhereFn,
    prefix: Loc = (),
) -> list[ConfigError]:
    """Turn every error of ``exc`` into a located :class:`ConfigError`.

    ``exc`` comes from validating ``model`` with the data found at ``prefix`` in ``doc``.
    """
    return [_one(err, doc, model, where, prefix) for err in exc.errors()]


def problem_error(problem: Problem, doc: YamlDoc, where: WhereFn) -> ConfigError:
    """A :class:`ConfigError` for a problem found while reading the YAML."""
    line, col = doc.key_pos(problem.loc) if problem.at_key else doc.value_pos(problem.loc)
    return located(doc, problem.loc, problem.message, where, line=line, col=col)


def located(
    doc: YamlDoc,
    loc: Loc,
    message: str,
    where: WhereFn,
    *,
    at_key: bool = False,
    line: int | None = None,
    col: int | None = None,
) -> ConfigError:
    """A :class:`ConfigError` at ``loc`` (its key if ``at_key``) of ``doc``."""
    if line is None or col is None:
        line, col = doc.key_pos(loc) if at_key else doc.value_pos(loc)
    w = where(doc, loc)
    return ConfigError(doc.file, line, col, message, w.group, w.rule, w.context)


def _one(
    err: ErrorDetails, doc: YamlDoc, model: type[BaseModel], where: WhereFn, prefix: Loc
) -> ConfigError:
    kind = err["type"]
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    walk = _walk(doc, prefix, tuple(err["loc"]), model)
    loc, at_key = walk.data_loc, walk.at_key
    value = err.get("input")
    name = walk.name
    last = err["loc"][-1] if err["loc"] else ""

    if kind == "missing":
        message = f'missing required key "{last}"'
    elif kind == "extra_forbidden":
        message = f'unknown key "{last}"' + did_you_mean(str(last), walk.parent_keys)
        at_key = True
    elif kind == "config":
        message = str(ctx.get("message", err["msg"]))
        extra = tuple(ctx.get("at") or ())
        loc = doc.existing((*loc, *extra))
    elif kind in ("value_error", "assertion_error"):
        text = str(ctx.get("error", err["msg"]))
        message = f'"{name}" {text}' if text.startswith("must ") else f'"{name}": {text}'
        if walk.at_key:
            message = text
    elif kind in _TYPE_WORDS:
        message = f'"{name}" must be {_TYPE_WORDS[kind]}, got {show(value)}'
        if kind == "string_type" and walk.in_mapping and isinstance(value, int | float):
            message += f' (quote it: "{value}")'
    elif kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        message = f'"{name}" must be {words} {ctx.get(key)}, got {show(value)}'
    elif kind in ("too_short", "string_too_short"):
        message = f'"{name}" must not be empty'
    elif kind == "literal_error":
        message = f'"{name}" must be one of {ctx.get("expected")}, got {show(value)}'
    elif kind == "string_pattern_mismatch":
        message = f'"{name}" must match {ctx.get("pattern")}, got {show(value)}'
    else:
        message = f'"{name}": {err["msg"]}'
    return located(doc, loc, message, where, at_key=at_key)


@dataclass(frozen=True, slots=True)
class _Walk:
    data_loc: Loc
    at_key: bool
    name: str
    parent_keys: list[str]
    in_mapping: bool  # the value is an entry of a free-form mapping (labels, params)


def _walk(doc: YamlDoc, prefix: Loc, loc: tuple[Any, ...], model: type[BaseModel]) -> _Walk:
    """Follow a pydantic ``loc`` through the data and the model's types at once."""
    node = doc.get(prefix)
    path: list[str | int] = list(prefix)
    tp: Any = model
    parent_keys = _keys_of(tp)
    name = ""
    at_key = False
    in_mapping = False
    for i, part in enumerate(loc):
        if part == "[key]":
            at_key = True
            continue
        base = _model_of(tp)
        if base is not None:
            parent_keys = _keys_of(base)
            field = _field(base, part)
            if field is not None:
                tp, name, in_mapping = field, str(part), False
            elif i < len(loc) - 1:
                continue  # a union member's tag
            else:
                tp = Any  # the unknown or missing key itself
        else:
            item, is_dict = _item_type(tp)
            in_mapping = is_dict
            if is_dict:
                name = f"{name}.{part}"
            elif isinstance(part, int):
                name = f"{name}[{part}]"
            else:
                continue  # a union member's tag
            tp = item
        node = child(node, part)
        if node is not MISSING:
            path.append(part)
    return _Walk(
        tuple(path), at_key, name or (str(loc[-1]) if loc else ""), parent_keys, in_mapping
    )


def _strip(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) == 1:
            return _strip(members[0])
    return tp


def _model_of(tp: Any) -> type[BaseModel] | None:
    tp = _strip(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    return None


def _field(model: type[BaseModel], part: Any) -> Any:
    if not isinstance(part, str):
        return None
    for fname, f in model.model_fields.items():
        if part in (fname, f.alias):
            return f.annotation
    return None


def _item_type(tp: Any) -> tuple[Any, bool]:
    tp = _strip(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is dict and len(args) == 2:
        return args[1], True
    if origin in (list, tuple, set, frozenset) and args:
        return args[0], False
    return Any, False


def _keys_of(tp: Any) -> list[str]:
    model = _model_of(tp)
    if model is None:
        return []
    keys = getattr(model, "yaml_keys", None)
    if callable(keys):
        return list(keys())
    return [f.alias or n for n, f in model.model_fields.items()]
