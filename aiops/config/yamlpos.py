"""YAML to plain Python data, remembering the line and column of every key and value.

ruamel.yaml composes the document into nodes that carry their start marks; this module
walks the nodes into plain ``dict`` / ``list`` / ``str`` / ``int`` / ``float`` /
``bool`` / ``None`` (timestamps stay strings, for the models to parse) and records the
1-based position of each value and of each mapping key under its path, such as
``("groups", 0, "rules", 2, "threshold")``.

YAML 1.2 rules apply (``yes`` and ``on`` are strings; ``18:00`` is a string). Merge
keys (``<<: *defaults``) work as in YAML 1.1 and Go's yaml packages. Problems that do
not stop reading (a duplicate key, an unsupported tag) are collected in
:attr:`YamlDoc.problems`; a syntax error leaves the document empty with
:attr:`YamlDoc.syntax_error` set.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, ScalarEvent
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from aiops.config.errors import ConfigError

__all__ = ["MISSING", "Loc", "Problem", "YamlDoc", "child", "load_yaml"]

Loc = tuple[str | int, ...]
"""A path into the data: mapping keys and sequence indices."""

_TAG = "tag:yaml.org,2002:"
_MAX_NODES = 1_000_000  # aliases can expand a small file into a huge tree
_MAX_DEPTH = 200
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1  # Go's yaml (Prometheus) reads ints as int64
_UNTEXT = re.compile("[\0\ud800-\udfff]")  # see _Walker.text


MISSING: Any = object()
"""What :func:`child` returns when there is nothing there."""


def child(node: Any, part: str | int) -> Any:
    """``node[part]`` for a mapping key or a sequence index, else :data:`MISSING`."""
    if isinstance(node, dict) and isinstance(part, str):
        return node.get(part, MISSING)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return MISSING


@dataclass(frozen=True, slots=True)
class Problem:
    """A problem found while reading: at ``loc`` (its key if ``at_key``), ``message``.

    ``refused``: the value (or key) there was replaced (an out-of-range integer by
    ``None``, a lone surrogate by U+FFFD), so other errors at that place only echo it.
    """

    loc: Loc
    at_key: bool
    message: str
    refused: bool = False


@dataclass
class YamlDoc:
    """A read YAML file: its data and where each part of it is."""

    file: str
    data: Any = None
    syntax_error: ConfigError | None = None
    problems: list[Problem] = field(default_factory=list)
    values: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Loc, tuple[int, int]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """True if the file holds no document (or could not be parsed)."""
        return self.data is None

    def get(self, loc: Loc, default: Any = None) -> Any:
        """The data at ``loc``, or ``default`` if there is nothing there."""
        node = self.data
        for part in loc:
            node = child(node, part)
            if node is MISSING:
                return default
        return node

    def existing(self, loc: Loc) -> Loc:
        """The longest prefix of ``loc`` that exists in the data."""
        node = self.data
        for i, part in enumerate(loc):
            node = child(node, part)
            if node is MISSING:
                return loc[:i]
        return loc

    def value_pos(self, loc: Loc) -> tuple[int, int]:
        """Line and column of the value at ``loc`` (or of its closest existing parent)."""
        found = self.existing(loc)
        while found and found not in self.values:
            found = found[:-1]
        return self.values.get(found, (1, 1))

    def key_pos(self, loc: Loc) -> tuple[int, int]:
        """Line and column of the mapping key at ``loc``; its value's if it has no key."""
        if loc in self.keys:
            return self.keys[loc]
        return self.value_pos(loc)


def load_yaml(path: Path | str, text: str | None = None) -> YamlDoc:
    """Read ``path`` (or parse ``text``, naming it ``path``) into a :class:`YamlDoc`.

    Never raises for bad content: an unreadable file or a syntax error becomes
    :attr:`YamlDoc.syntax_error`.
    """
    name = str(path)
    doc = YamlDoc(name)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            doc.syntax_error = ConfigError(name, 0, 0, f"cannot read file: not UTF-8 ({exc})")
            return doc
        except OSError as exc:
            doc.syntax_error = ConfigError(name, 0, 0, f"cannot read file: {exc.strerror or exc}")
            return doc
    try:
        refused = _precheck(text)
        if refused is not None:
            doc.syntax_error = ConfigError(name, refused[0], 1, refused[1])
            return doc
        root = YAML(typ="rt").compose(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        doc.syntax_error = ConfigError(name, line, col, _syntax_message(exc))
        return doc
    except YAMLError as exc:
        doc.syntax_error = ConfigError(name, 1, 1, f"invalid YAML: {exc}")
        return doc
    if root is not None:
        try:
            doc.data = _Walker(doc).node(root, ())
        except _TooLarge:
            doc.problems.clear()
            doc.syntax_error = ConfigError(
                name, 1, 1, f"document too large: more than {_MAX_NODES} nodes after aliases"
            )
    return doc


def _precheck(text: str) -> tuple[int, str] | None:
    """Refuse, from the event stream, what composing would choke on: ``(line, why)``.

    The composer recurses once per nesting level (thousands of ``[`` are a
    ``RecursionError``) and builds every alias' tree (a few lines of anchors can expand to
    millions of nodes, gigabytes and minutes). The parser's events are flat, so nesting
    depth and the size after alias expansion are counted here first, in one pass.
    """
    depth = 0
    total = 0
    sizes = [0]  # per open collection: its nodes so far, aliases expanded
    anchors: list[str | None] = []
    expanded: dict[str, int] = {}
    for ev in YAML(typ="rt").parse(text):
        if isinstance(ev, CollectionStartEvent):
            depth += 1
            if depth > _MAX_DEPTH:
                return ev.start_mark.line + 1, f"nested deeper than {_MAX_DEPTH} levels"
            sizes.append(1)
            anchors.append(ev.anchor)
            total += 1
        elif isinstance(ev, CollectionEndEvent):
            depth -= 1
            size, anchor = sizes.pop(), anchors.pop()
            if anchor:
                expanded[anchor] = size
            sizes[-1] += size
        elif isinstance(ev, ScalarEvent):
            if ev.anchor:
                expanded[ev.anchor] = 1
            sizes[-1] += 1
            total += 1
        elif isinstance(ev, AliasEvent):
            n = expanded.get(ev.anchor, 1)
            sizes[-1] += n
            total += n
        if total > _MAX_NODES:
            return 1, f"document too large: more than {_MAX_NODES} nodes after aliases"
    return None


def _syntax_message(exc: MarkedYAMLError) -> str:
    problem = (exc.problem or "syntax error").strip()
    context = (exc.context or "").strip()
    if context and problem.startswith("but "):
        return f"invalid YAML: {context}, {problem}"
    if context and exc.context_mark is not None and exc.context_mark != exc.problem_mark:
        m = exc.context_mark
        return f"invalid YAML: {problem} ({context} at line {m.line + 1}, column {m.column + 1})"
    if context:
        return f"invalid YAML: {problem} ({context})"
    return f"invalid YAML: {problem}"


def _shorten(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


def _pos(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Walker:
    def __init__(self, doc: YamlDoc) -> None:
        self.doc = doc
        self.count = 0
        self.stack: list[int] = []
        self.constructor = YAML(typ="rt").constructor

    def problem(
        self, loc: Loc, message: str, *, at_key: bool = False, refused: bool = False
    ) -> None:
        self.doc.problems.append(Problem(loc, at_key, message, refused))

    def node(self, node: Node, loc: Loc) -> Any:
        self.count += 1
        if self.count > _MAX_NODES:
            raise _TooLarge
        self.doc.values.setdefault(loc, _pos(node))
        if isinstance(node, ScalarNode):
            return self.scalar(node, loc)
        if id(node) in self.stack:
            self.problem(loc, "recursive alias")
            return None
        if len(self.stack) >= _MAX_DEPTH:
            self.problem(loc, "document nested too deeply")
            return None
        self.stack.append(id(node))
        try:
            if isinstance(node, MappingNode):
                if node.tag not in (_TAG + "map", _TAG + "omap"):
                    self.problem(loc, f'unsupported tag "{node.tag}"')
                return self.mapping(node, loc)
            if isinstance(node, SequenceNode):
                if node.tag != _TAG + "seq":
                    self.problem(loc, f'unsupported tag "{node.tag}"')
                return [self.node(item, (*loc, i)) for i, item in enumerate(node.value)]
        finally:
            self.stack.pop()
        self.problem(loc, "unsupported YAML node")
        return None

    def scalar(self, node: ScalarNode, loc: Loc) -> Any:
        tag = str(node.tag)
        kind = tag[len(_TAG) :] if tag.startswith(_TAG) else ""
        if kind in ("str", "timestamp"):
            return self.text(str(node.value), loc)
        if kind == "null":
            return None
        if kind == "int":
            # int() refuses more than 4300 digits (a ValueError), and an integer beyond
            # 64 bits fits no setting: it would overflow the float conversions later.
            try:
                number = int(self.constructor.construct_object(node, deep=True))
            except ValueError:
                number = None
            if number is None or not _INT_MIN <= number <= _INT_MAX:
                message = f"integer out of the 64-bit range: {_shorten(node.value)}"
                self.problem(loc, message, refused=True)
                return None
            return number
        if kind in ("float", "bool"):
            value = self.constructor.construct_object(node, deep=True)
            return {"float": float, "bool": bool}[kind](value)
        self.problem(loc, f'unsupported tag "{tag}"')
        return str(node.value)

    def text(self, value: str, loc: Loc, *, at_key: bool = False) -> str:
        r"""``value``, with a lone surrogate or a NUL reported and each replaced by U+FFFD.

        Only escapes (``"\udfff"``, ``"\0"``) make them. A lone surrogate is no
        Unicode text: UTF-8 cannot encode it, so it would fail every message, log line
        and file it reached. No setting takes a NUL, and every OS call raises on one
        (a glob, a path). Replaced, the value cannot fail the checks that read it.
        """
        found = _UNTEXT.search(value)
        if found is None:
            return value
        char = found.group()
        what = "NUL character" if char == "\0" else f"lone surrogate U+{ord(char):04X}"
        self.problem(loc, f"{what} in a string: not allowed", at_key=at_key, refused=True)
        return _UNTEXT.sub("\ufffd", value)

    def mapping(self, node: MappingNode, loc: Loc) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first: dict[str, tuple[int, int]] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if str(key_node.tag) == _TAG + "merge":
                merges.append(value_node)
                continue
            if not isinstance(key_node, ScalarNode):
                self.doc.values.setdefault((*loc, "<key>"), _pos(key_node))
                self.problem((*loc, "<key>"), "mapping keys must be strings")
                continue
            key = _UNTEXT.sub("\ufffd", str(key_node.value))
            if key != key_node.value:
                self.doc.keys.setdefault((*loc, key), _pos(key_node))
                self.text(str(key_node.value), (*loc, key), at_key=True)
            if key in first:
                line, col = first[key]
                self.doc.keys.setdefault((*loc, key, "<dup>"), _pos(key_node))
                self.problem(
                    (*loc, key, "<dup>"),
                    f'duplicate key "{key}" (first defined at line {line}, column {col})',
                    at_key=True,
                )
                continue
            first[key] = _pos(key_node)
            self.doc.keys[(*loc, key)] = _pos(key_node)
            out[key] = self.node(value_node, (*loc, key))
        for source in self._merge_sources(merges, loc):
            for key_node, value_node in source.value:
                key = _UNTEXT.sub("\ufffd", str(key_node.value))  # reported at the anchor
                if isinstance(key_node, ScalarNode) and key not in out:
                    self.doc.keys[(*loc, key)] = _pos(key_node)
                    out[key] = self.node(value_node, (*loc, key))
        return out

    def _merge_sources(self, merges: list[Node], loc: Loc) -> Iterator[MappingNode]:
        for m in merges:
            items = m.value if isinstance(m, SequenceNode) else [m]
            for item in items:
                if isinstance(item, MappingNode):
                    yield item
                else:
                    self.problem(loc, "a merge key (<<) needs a mapping or a list of mappings")


class _TooLarge(Exception):
    pass
