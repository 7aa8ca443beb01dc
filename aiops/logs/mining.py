"""Streaming log template mining: masking, then Drain (the Drain3 implementation).

A :class:`LogMiner` turns each log message into the id of its template. It first masks
the variable parts that any system writes the same way (IP addresses, host names,
numbers, UUIDs, hex and generated ids, key=value values, paths, sizes, durations, e-mail
addresses, URLs, times) with one combined compiled regex per token and one over the
masked message, then hands the masked text to a :class:`drain3.drain.Drain` prefix
tree, which groups messages of the same length and prefix whose tokens agree enough
(``sim_th``).

Costs: a message's *shape* (digits as ``0``; see :meth:`Masker.shape`) is looked up in a
bounded cache of shapes already mined, so most lines cost one ``str.translate`` and one
dictionary look-up. Otherwise its tokens are masked through a bounded token cache (the
regex runs on new tokens only) and a masked message seen before skips the Drain tree.
The caches are derived data and are not saved.

State: :meth:`LogMiner.state_dict` is plain JSON-able data (versioned): the clusters (id,
template tokens, size), the prefix tree (token paths and cluster ids at the leaves) and
the settings it was built with. Loading rebuilds the Drain object from that data; no
pickle is ever read (Drain3's own ``TemplateMiner`` persistence uses jsonpickle, which
can run code from a crafted snapshot).

>>> m = LogMiner()
>>> m.mask("connect from 10.0.0.7:5432 took 12ms, id 0x1f3a")
'connect from <IP> took <DURATION>, id <HEX>'
>>> [m.add(f"user {u} logged in from 10.1.2.{u}").cluster_id for u in (3, 4)]
[1, 1]
>>> m.template(1)
'user <NUM> logged in from <IP>'
>>> m2 = LogMiner.from_state(m.state_dict())
>>> m2.add("user 9 logged in from 10.1.2.9").created
False
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import itertools
import json
import operator
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, cast

if TYPE_CHECKING:
    from drain3.drain import Drain, LogCluster, Node

__all__ = [
    "DEFAULT_MASKS",
    "LogMiner",
    "Mask",
    "Masker",
    "MineResult",
    "MinerSettings",
    "STATE_VERSION",
]

#: Version of :meth:`LogMiner.state_dict`; a state of another version is refused, and a
#: log rule whose miners were refused learns again (no "new template" alert for what an
#: earlier miner knew). 2: masked tokens go down Drain's wildcard branch and a run of one
#: mask is one token, so the trees and templates of version 1 do not route today's lines.
STATE_VERSION = 2

_HEXD = "0-9a-fA-F"
#: After "key=": not a level's or a severity's value (fixed-width look-behinds).
_NOT_A_LEVEL = "".join(
    f"(?<!{k}=)" for w in ("level", "lvl", "severity") for k in (w, w.title(), w.upper())
)
#: Top-level domains a host name mask accepts (generic ones and common country codes).
_TLDS = (
    "com",
    "net",
    "org",
    "edu",
    "gov",
    "mil",
    "int",
    "io",
    "info",
    "biz",
    "cloud",
    "local",
    "localdomain",
    "internal",
    "lan",
    "us",
    "uk",
    "hk",
    "cn",
    "de",
    "br",
    "eu",
    "om",
    "jp",
    "fr",
    "ru",
    "in",
    "au",
    "ca",
    "nl",
    "it",
    "es",
    "se",
    "ch",
    "kr",
    "tw",
    "pl",
    "be",
)
_CACHE_MAX = 50_000  # tokens of one set of masks
_MINER_CACHE_MAX = 20_000  # shapes and masked messages of one miner, each


@dataclass(frozen=True, slots=True)
class Mask:
    """Replace what ``regex`` matches with ``mask`` (a text such as ``<IP>``)."""

    regex: str
    mask: str


#: The built-in masks, tried left to right at each position of a token (the first that
#: matches there wins, so the specific ones come before the generic number). They are
#: written for any system's logs, not fitted to one benchmark system.
DEFAULT_MASKS: tuple[Mask, ...] = (
    Mask(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+", "<URL>"),
    Mask(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", "<EMAIL>"),
    Mask(rf"(?<![\w-])[{_HEXD}]{{8}}-(?:[{_HEXD}]{{4}}-){{3}}[{_HEXD}]{{12}}(?![\w-])", "<UUID>"),
    # Dates and times before numbers and IPv6 (12:30:45 looks like both).
    Mask(
        r"(?<!\d)\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?(?:[.,]\d+)?)?"
        r"(?:Z|[+-]\d{2}:?\d{2})?(?!\d)",
        "<TIME>",
    ),
    Mask(r"(?<![\d:])\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?(?![\d:])", "<TIME>"),
    Mask(rf"(?<![\w:])[{_HEXD}]{{2}}(?::[{_HEXD}]{{2}}){{5}}(?![\w:])", "<MAC>"),
    # The value of a key=value pair, whatever it is (uid=0, name=android, ws=null), but
    # for a level or severity: it is part of what the line is (level=ERROR).
    Mask(r"(?<=\w=)" + _NOT_A_LEVEL + r"[^\s,;]+", "<*>"),
    # A host name: dotted labels ending in a common top-level domain, with a port.
    Mask(
        r"(?<![\w.-])(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?\.)+"
        rf"(?:{'|'.join(_TLDS)})(?::\d{{1,5}})?(?![\w.-])",
        "<HOST>",
    ),
    # A reverse-domain name of a class, package or app (com.apple.cts.daily,
    # org.apache.hadoop.ipc.Server, java.lang.ClassCastException), up to a segment
    # that is a constant's name (UPPER_CASE: android.intent.action.SCREEN_ON is
    # <CLASS>.SCREEN_ON): an enum value or action says what happened, like a word.
    Mask(
        r"(?<![\w.$])(?:com|org|net|io|android|androidx|java|javax|kotlin|sun)"
        r"(?:\.(?![A-Z][A-Z0-9_]+(?![\w$]))[a-zA-Z_$][\w$]*){2,}",
        "<CLASS>",
    ),
    Mask(
        r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?(?![\w]|\.\d)",
        "<IP>",
    ),
    Mask(
        rf"(?<![\w:])(?=[{_HEXD}:]*[{_HEXD}])(?:(?:[{_HEXD}]{{1,4}}:){{7}}[{_HEXD}]{{1,4}}"
        rf"|(?:[{_HEXD}]{{1,4}}:){{0,6}}[{_HEXD}]{{0,4}}::(?:[{_HEXD}]{{1,4}}:){{0,6}}"
        rf"[{_HEXD}]{{0,4}})(?![\w:])",
        "<IP>",
    ),
    Mask(
        r"(?<![\w])\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h)(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))*"
        r"(?![\w])",
        "<DURATION>",
    ),
    Mask(rf"(?<![\w])0[xX][{_HEXD}]+(?![\w])", "<HEX>"),
    # A long hex word with both digits and letters (a hash, a request or trace id).
    Mask(
        rf"(?<![\w])(?=[{_HEXD}]*\d)(?=[{_HEXD}]*[a-fA-F])[{_HEXD}]{{6,}}(?![\w])",
        "<HEX>",
    ),
    Mask(r"(?<![\w.])\d+(?:\.\d+)?(?:[KMGTP]i?B|B)(?![\w])", "<SIZE>"),
    Mask(r"(?<![\w/.~-])(?:[a-zA-Z]:\\|~?/)(?:[\w.@%+~-]+[/\\]){1,}[\w.@%+~-]*", "<PATH>"),
    # A generated id: a word of letters and two or more runs of digits (jA9J1UvC004306),
    # or, from a run of digits, digits and letters joined by underscores
    # (task_1445_0020_m_000001 -> task_<ID>; all digits are numbers: rdd_2_0).
    Mask(r"(?<![a-zA-Z0-9])[a-zA-Z0-9]*\d[a-zA-Z]+\d[a-zA-Z0-9]*", "<ID>"),
    Mask(r"(?<![a-zA-Z0-9])(?=\d)(?=[\w-]*_)(?=[\w-]*[a-zA-Z])[\w-]*[a-zA-Z0-9]", "<ID>"),
    # Any other run of digits, also inside a word (blk_123 -> blk_<NUM>), so ids that
    # embed counters keep their constant prefix and group together; a minus sign not
    # after a letter or digit is the number's (blk_-123 -> blk_<NUM>).
    Mask(r"(?:(?<![a-zA-Z0-9])-)?\d+(?:\.\d+)*", "<NUM>"),
)

#: Masks over the whole message, after the token masks: variables of several tokens.
#: A quantity with its unit (``5.2 KB``, ``160 ms``, ``<1 sec``) is one ``<SIZE>`` or
#: ``<DURATION>``, a size restated in parentheses (``18846 bytes (18.4 KB)``) is one
#: ``<SIZE>``, a comma-joined list of one mask (``<IP>,<IP>``) is one, and so is a run
#: of one mask as whole tokens (``cpus 0 1 2 3 online`` is ``cpus <NUM> online``): a list
#: of numbers or addresses of any length is one variable.
PHRASE_MASKS: tuple[Mask, ...] = (
    Mask(r"(?<![\w<>])(?:<NUM>|<\*>) ?(?:[KMGTP]i?B|B|bytes?)(?![\w])", "<SIZE>"),
    Mask(
        r"(?<![\w<>])[<>~]?<NUM> ?(?:ns|us|µs|ms|msecs?|millis|milliseconds?|secs?|seconds?"
        r"|mins?|minutes?|hrs?|hours?|days?)(?![\w])",
        "<DURATION>",
    ),
)
_RESTATED = re.compile(r"(<(?:SIZE|DURATION)>) \(<(?:SIZE|DURATION)>\)")
_LISTED = re.compile(r"<(\w+|\*)>(?:,<\1>)+")
_RUN = re.compile(r"(?<!\S)(<[A-Z][A-Z0-9_]*>)(?: \1)+(?!\S)")
#: A quoted value of a key=value pair, spaces and all (tag="View Lock"), before tokens.
_QUOTED_VALUE = re.compile(r"(?<=\w=)" + _NOT_A_LEVEL + r"(?:\"[^\"]*\"|'[^']*')")


class Masker:
    r"""Apply a list of masks: the given ones on the whole message, then the built-in ones.

    ``masks`` (from the rule file) run first, in order, as one compiled alternation over
    the whole message. The built-in ones (unless ``defaults`` is False) then run: a
    quoted key=value value (``tag="View Lock"``) becomes ``<*>`` first, then
    :data:`DEFAULT_MASKS` run on each whitespace-separated token, through a bounded cache
    of tokens: words repeat, so the regex runs only on tokens never seen before, and only
    on those with a digit, ``/``, ``\``, ``@``, ``:``, ``=`` or ``.`` (no token mask
    matches a token without one). Last, :data:`PHRASE_MASKS` join the masked tokens of
    one quantity (``5.2 KB``, ``<1 sec``, ``<IP>,<IP>``) and a run of one mask's tokens
    (``<NUM> <NUM> <NUM>``) becomes one. The result is the tokens joined
    by single spaces, which is what Drain splits anyway. Each regex is compiled alone
    first, so a bad one is reported by its index.

    >>> Masker([Mask(r"req-\w+", "<REQ>")]).mask("req-ab12 failed after 3 tries")
    '<REQ> failed after <NUM> tries'
    """

    def __init__(self, masks: Sequence[Mask] = (), *, defaults: bool = True) -> None:
        self.masks = tuple(masks)
        self.defaults = defaults
        self._replacements: dict[str, str] = {}
        self._custom = self._compile(self.masks, 0)
        self._builtin = self._compile(DEFAULT_MASKS, len(self.masks)) if defaults else None
        self._phrases = (
            self._compile(PHRASE_MASKS, len(self.masks) + len(DEFAULT_MASKS)) if defaults else None
        )
        self._tokens: dict[str, str] = {}
        #: Shapes without a hex id or UUID token -> their masked messages.
        self._shapes: dict[bytes, str] = {}
        #: Tokens seen that are unit words (``KB``, ``sec.``): only a message with one
        #: can hold a phrase mask.
        self._units: set[str] = set()
        #: Set by :meth:`mask_shape`: the last message held a hex id or UUID token.
        self.unique = False

    def _compile(self, masks: Sequence[Mask], first: int) -> re.Pattern[str] | None:
        parts = []
        for i, m in enumerate(masks, first):
            try:
                compiled = re.compile(m.regex)
            except re.error as exc:
                raise ValueError(f"mask {i + 1} ({m.regex!r}): invalid regex: {exc}") from None
            # Groups of the user's regex would shift ours: make them non-capturing.
            body = _no_capture(m.regex) if compiled.groups else m.regex
            parts.append(f"(?P<m{i}>{body})")
            self._replacements[f"m{i}"] = m.mask
        return re.compile("|".join(parts)) if parts else None

    def _replace(self, match: re.Match[str]) -> str:
        return self._replacements[match.lastgroup or ""]

    def mask(self, text: str) -> str:
        """The message with every masked part replaced (tokens joined by one space)."""
        return self.mask_shape(self.shape(text))

    def shape(self, text: str) -> bytes:
        """The message after the rule file's masks, UTF-8, with every ASCII digit as ``0``.

        Every digit left ends up inside a built-in mask (``<NUM>`` takes any other), and
        no built-in mask looks at digit values, only at where digits are: messages of
        one shape mask alike, so the shape is a cache key for what follows. (UTF-8 puts
        no ASCII byte inside a multi-byte character, so only digits change.)
        """
        if self._custom is not None:
            text = self._custom.sub(self._replace, text)
        data = text.encode("utf-8", "surrogatepass")
        return data.translate(_ZEROS) if self._builtin is not None else data

    def shapes(self, texts: Sequence[str]) -> list[bytes]:
        """:meth:`shape` of each text; without custom masks, encoded in one go."""
        if self._custom is not None or not texts:
            return [self.shape(t) for t in texts]
        whole = "\n".join(texts)
        if whole.count("\n") != len(texts) - 1:  # a text holds a newline
            return [self.shape(t) for t in texts]
        data = whole.encode("utf-8", "surrogatepass")
        if self._builtin is not None:
            data = data.translate(_ZEROS)
        return data.split(b"\n")

    def mask_shape(self, shape: bytes) -> str:
        """The masked message of a :meth:`shape`.

        Afterwards :attr:`unique` says whether the message held a hex id or UUID token
        (masked without the regex and not cached: such tokens rarely come back).

        A shape without such a token is remembered with its masked message (a bounded
        cache), so the miners that share this masker (one per service or host) mask
        each shape once between them, not once each.
        """
        masked = self._shapes.get(shape)
        if masked is not None:
            self.unique = False
            return masked
        masked = self._mask_shape(shape)
        if not self.unique:
            if len(self._shapes) >= _CACHE_MAX:
                self._shapes.clear()
            self._shapes[shape] = masked
        return masked

    def _mask_shape(self, shape: bytes) -> str:
        text = shape.decode("utf-8", "surrogatepass")
        self.unique = False
        builtin = self._builtin
        if builtin is None:
            return text
        if "=" in text and ("='" in text or '="' in text):
            text = _QUOTED_VALUE.sub("<*>", text)
        get, token = self._tokens.get, self._token
        tokens = text.split()
        # A masked token is never empty, so "or" asks _token only for those not cached.
        joined = " ".join([get(tok) or token(tok, builtin) for tok in tokens])
        if not self._units.isdisjoint(tokens):  # a phrase mask needs a unit word
            joined = self._phrase(joined)
        if "> <" in joined:  # a run of one mask, space-separated, is one list
            joined = _RUN.sub(r"\1", joined)
        return joined

    def _phrase(self, text: str) -> str:
        assert self._phrases is not None
        text = self._phrases.sub(self._replace, text)
        if " (<" in text:
            text = _RESTATED.sub(r"\1", text)
        return text

    def _token(self, tok: str, builtin: re.Pattern[str]) -> str:
        # A whole token of hex digits (6 or more, digits and letters) or a UUID is what
        # the <HEX> and <UUID> masks would make of it, found without the regex.
        n = len(tok)
        if n >= 6 and not tok.strip(_HEX_CHARS):
            if "0" in tok and tok.strip("0"):
                self.unique = True
                return "<HEX>"
        elif (
            n == 36
            and tok[8] == tok[13] == tok[18] == tok[23] == "-"
            and tok.count("-") == 4
            and not tok.replace("-", "").strip(_HEX_CHARS)
        ):
            self.unique = True
            return "<UUID>"
        cache = self._tokens
        masked = builtin.sub(self._replace, tok) if _MAY_MASK.search(tok) else tok
        if ">,<" in masked:  # a comma-joined list of one mask is one
            masked = _LISTED.sub(r"<\1>", masked)
        if len(cache) >= _CACHE_MAX:
            cache.clear()
            self._units.clear()
        cache[tok] = masked
        if tok.rstrip(_PUNCT) in _UNITS:
            self._units.add(tok)
        return masked


_HEX_CHARS = "0123456789abcdefABCDEF"
_PUNCT = ",.;:)]}'\"!?"
#: The unit words of :data:`PHRASE_MASKS` (a token that is one, but for punctuation after).
_UNITS = frozenset(
    [f"{p}{i}B" for p in "KMGTP" for i in ("", "i")]
    + ["B", "byte", "bytes", "ns", "us", "µs", "ms", "msec", "msecs", "millis"]
    + ["millisecond", "milliseconds", "sec", "secs", "second", "seconds", "min", "mins"]
    + ["minute", "minutes", "hr", "hrs", "hour", "hours", "day", "days"]
)
_MAY_MASK = re.compile(r"[\d/\\@:=.]")
_ZEROS = bytes.maketrans(b"123456789", b"000000000")


def _no_capture(regex: str) -> str:
    """Turn ``(`` groups into ``(?:`` (named ones too), keeping escapes and classes."""
    out: list[str] = []
    i, n, in_class = 0, len(regex), False
    while i < n:
        c = regex[i]
        if c == "\\":
            out.append(regex[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if regex[i + 1 : i + 2] == "]":
                out.append("[]")
                i += 2
                continue
        elif c == "(" and regex[i + 1 : i + 2] != "?":
            out.append("(?:")
            i += 1
            continue
        elif c == "(" and regex[i + 1 : i + 3] == "?P" and regex[i + 3 : i + 4] == "<":
            end = regex.index(">", i)
            out.append("(?:")
            i = end + 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class MinerSettings:
    """Drain's settings and the masks; one set for every system (see README "Logs").

    ``depth`` 5 (Drain3 counts the root and the leaf: the first two tokens choose the
    leaf, so ``GET`` and ``POST`` lines of one shape stay apart) and ``sim_th`` 0.7 (a
    template needs 70% of its tokens equal; the masks leave few variables to absorb)
    group the Loghub benchmark samples best among the settings tried, on held-out
    parts of the samples too (``bench/log_templates.py``; Drain3's defaults are 4 and
    0.4). ``max_clusters`` bounds memory: past it the least recently matched template
    is forgotten.
    """

    depth: int = 5
    sim_th: float = 0.7
    max_children: int = 100
    max_clusters: int = 10_000
    masks: tuple[Mask, ...] = ()
    default_masks: bool = True
    extra_delimiters: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The settings as plain JSON data."""
        return {
            "depth": self.depth,
            "sim_th": self.sim_th,
            "max_children": self.max_children,
            "max_clusters": self.max_clusters,
            "masks": [[m.regex, m.mask] for m in self.masks],
            "default_masks": self.default_masks,
            "extra_delimiters": list(self.extra_delimiters),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> MinerSettings:
        """Inverse of :meth:`as_json`."""
        return cls(
            depth=int(doc["depth"]),
            sim_th=float(doc["sim_th"]),
            max_children=int(doc["max_children"]),
            max_clusters=int(doc["max_clusters"]),
            masks=tuple(Mask(str(r), str(m)) for r, m in doc["masks"]),
            default_masks=bool(doc["default_masks"]),
            extra_delimiters=tuple(str(d) for d in doc["extra_delimiters"]),
        )

    def digest(self) -> str:
        """A short hash: miners with equal settings may be shared between rules."""
        text = json.dumps(self.as_json(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


class MineResult(NamedTuple):
    """The template a message fell into, and whether this message created it."""

    cluster_id: int
    created: bool


@dataclass
class LogMiner:
    """One Drain tree with its masking; see the module docstring."""

    settings: MinerSettings = field(default_factory=MinerSettings)
    #: A masker of the same masks may be shared by miners (its token cache with it).
    masker: Masker | None = None

    def __post_init__(self) -> None:
        s = self.settings
        if s.depth < 3:
            raise ValueError(f"depth must be at least 3, got {s.depth}")
        if not 0.0 < s.sim_th <= 1.0:
            raise ValueError(f"sim_th must be in (0, 1], got {s.sim_th}")
        if self.masker is None:
            self.masker = Masker(s.masks, defaults=s.default_masks)
        elif (self.masker.masks, self.masker.defaults) != (s.masks, s.default_masks):
            raise ValueError("a shared masker must have the miner's masks")
        self._m: Masker = self.masker
        self.drain = _new_drain(s)
        self._masked: dict[str, LogCluster] = {}
        self._shapes: dict[bytes, LogCluster] = {}
        self._uniques: dict[_Blank, LogCluster] = {}
        #: A shape's _HEX_CLASS translation -> where its tokens may be ids (see _blank).
        self._spans: dict[bytes, _SpanEntry] = {}
        self._clusters = self.drain.id_to_cluster
        self._full = False

    def mask(self, message: str) -> str:
        """The masked message, as Drain sees it."""
        return self._m.mask(message)

    def add(self, message: str) -> MineResult:
        """Mine one message: its template's id, and whether it is a new template."""
        return self._add(self._m.shape(message))

    def _add(self, shape: bytes) -> MineResult:
        cluster = self._shapes.get(shape)
        # Once full, Drain forgets clusters: a cached one must still be there.
        if cluster is not None and (not self._full or cluster.cluster_id in self._clusters):
            cluster.size += 1
            cid = cluster.cluster_id
            return _NOT_NEW[cid] if cid < len(_NOT_NEW) else MineResult(cid, False)
        # A shape with hex ids or UUIDs (each a whole token, always masked alike) is
        # looked up with them blanked out: most such lines are old messages, new ids.
        blank = self._blank(shape) if self._uniques else None
        if blank is not None:
            cluster = self._uniques.get(blank)
            if cluster is not None and (not self._full or cluster.cluster_id in self._clusters):
                cluster.size += 1
                cid = cluster.cluster_id
                return _NOT_NEW[cid] if cid < len(_NOT_NEW) else MineResult(cid, False)
        masked = self._m.mask_shape(shape)
        cluster = self._masked.get(masked)
        if cluster is not None and (not self._full or cluster.cluster_id in self._clusters):
            cluster.size += 1
            created = False
        else:
            cluster, change = self.drain.add_log_message(masked)
            created = change == "cluster_created"
            self._full = len(self._clusters) >= self.settings.max_clusters
            if len(self._masked) >= _MINER_CACHE_MAX:
                self._masked.clear()
            self._masked[masked] = cluster
        if not self._m.unique:  # a shape with a unique id will not come back
            if len(self._shapes) >= _MINER_CACHE_MAX:
                self._shapes.clear()
            self._shapes[shape] = cluster
        else:
            if blank is None:
                blank = self._blank(shape)
            if blank is not None:
                if len(self._uniques) >= _MINER_CACHE_MAX:
                    self._uniques.clear()
                self._uniques[blank] = cluster
        return MineResult(cluster.cluster_id, created)

    def _blank(self, shape: bytes) -> _Blank | None:
        """The shape with its hex id and UUID tokens blanked; None without any.

        The blanked shape is a tuple: the bytes between the ids, each id in between as
        its kind (0 a hex id, 1 a UUID): ``(b"job ", 1, b" of ", 0, b"")``; for the
        usual shapes, whose only token that may be an id is one, just the bytes before
        and after it, ``(b"job ", b" done")``, with ``b""`` between for a UUID. Also
        None for a shape that is not ASCII (``str.split``, which masking tokenizes by,
        splits it elsewhere). A hex id is a whole token of six or more hex digits, a
        digit (``0``) and a letter among them, as :meth:`Masker._token` masks it
        ``<HEX>`` without looking further; a UUID one of its form, as it masks it
        ``<UUID>``.

        The places of the tokens that may be ids (six or more hex digits only, or a
        UUID's form) are remembered by the shape's :data:`_HEX_CLASS` translation:
        shapes of one message with other ids share it (and a shape that shares it has
        its possible ids in those places, and only there), so the regex pass runs once
        for such a form, not once a line. Two shapes of one blanked shape have their
        possible ids that are not ids in the same places: of one form of blanked shape.
        """
        if not shape.isascii():
            return None
        key = shape.translate(_HEX_CLASS)
        entry = self._spans.get(key)
        if entry is None:
            entry = self._new_spans(key, shape)
        spans = entry[0]
        if len(spans) == 1:  # the usual cases
            a, b, uuid = spans[0]
            if uuid:
                return (shape[:a], b"", shape[b:])
            if 0 < shape.count(48, a, b) < b - a:  # hex digits: 0s and letters both
                return (shape[:a], shape[b:])
            return None
        return _blank_at(spans, shape)

    def _new_spans(self, key: bytes, shape: bytes) -> _SpanEntry:
        """Find and remember the places of a shape's possible ids (see :meth:`_blank`)."""
        spans = tuple((m.start(), m.end(), b"-" in m[0]) for m in _MAYBE_ID.finditer(shape))
        entry: _SpanEntry
        if len(spans) == 1:
            a, b, uuid = spans[0]
            if uuid:  # always an id: no token to check
                entry = (spans, operator.itemgetter(slice(a), _NOWHERE, slice(b, None)), _NO_TOKEN)
            else:
                entry = (spans, operator.itemgetter(slice(a), slice(b, None)), _slicer(a, b))
        else:
            entry = (spans, functools.partial(_blank_at, spans), _NO_TOKEN)
        if len(self._spans) >= _MINER_CACHE_MAX:
            self._spans.clear()
        self._spans[key] = entry
        return entry

    def _find_uniques(self, shapes: list[bytes]) -> list[LogCluster | None]:
        """The blanked-id cache's clusters of ``shapes`` (None where it has none).

        In C-level passes: :meth:`_blank` of each, then a look-up. Each usual shape's
        two sides come from one slicing call (``itemgetter``) and its possible id is
        checked with the others' (all 0s or all letters is no id).
        """
        if not all(map(bytes.isascii, shapes)):
            return [None if (k := self._blank(x)) is None else self._uniques.get(k) for x in shapes]
        keys = list(map(bytes.translate, shapes, itertools.repeat(_HEX_CLASS)))
        known: list[_SpanEntry | None] = list(map(self._spans.get, keys))
        if None in known:
            for j, e in enumerate(known):
                if e is None:
                    known[j] = self._new_spans(keys[j], shapes[j])
        entries = cast(list[_SpanEntry], known)
        blanks = list(map(operator.call, map(_ENTRY_BLANK, entries), shapes))
        toks = list(map(operator.call, map(_ENTRY_TOKEN, entries), shapes))
        bad = list(map(operator.or_, map(bytes.isdigit, toks), map(bytes.isalpha, toks)))
        found: list[LogCluster | None] = list(map(self._uniques.get, blanks))
        if any(bad):  # no id where the usual shape has it: no blanked shape
            for j in itertools.compress(range(len(bad)), bad):
                found[j] = None
        return found

    def add_batch(self, messages: Sequence[str]) -> tuple[list[int], list[bool]]:
        """Mine messages in order: their template ids and which created a template.

        The same as :meth:`add` one message at a time: messages whose shape was mined
        before the batch are looked up together (they create nothing and Drain never
        changes a cluster's id); the others go through :meth:`add` in order.
        """
        if self._full:  # clusters may be forgotten meanwhile: one at a time
            results = [self.add(m) for m in messages]
            return [r[0] for r in results], [r[1] for r in results]
        shapes = self._m.shapes(messages)
        found: list[LogCluster | None] = list(map(self._shapes.get, shapes))
        # Misses that the blanked-id cache knows (most: old messages, new ids), looked up
        # together: such a shape is never in the shape cache, and the entry found for it
        # is the one a look-up in order finds, unless Drain could forget a cluster in
        # the meantime (only with max_clusters clusters: then it is looked up in order).
        if (
            None in found
            and self._uniques
            and len(self._clusters) + len(shapes) < self.settings.max_clusters
        ):
            absent = map(operator.is_, found, itertools.repeat(None))
            miss = list(itertools.compress(range(len(found)), absent))
            hits = self._find_uniques(list(map(shapes.__getitem__, miss)))
            collections.deque(
                map(found.__setitem__, itertools.compress(miss, hits), filter(None, hits)), 0
            )
        counts = Counter(found)
        counts.pop(None, None)
        for cluster, n in counts.items():
            assert cluster is not None
            cluster.size += n
        if None in found:
            cids = [-1 if c is None else c.cluster_id for c in found]
        else:
            cids = list(map(_CLUSTER_ID, found))
        created = [False] * len(found)
        if None in found:
            i = -1
            add, get, uniques, blank = self._add, self._shapes.get, self._uniques, self._blank
            clusters = self._clusters
            with contextlib.suppress(ValueError):  # index() raises after the last miss
                while True:
                    i = found.index(None, i + 1)
                    shape = shapes[i]
                    # What _add does first, here: most misses are old messages, new ids.
                    cluster = get(shape)
                    if cluster is None and uniques:
                        key = blank(shape)
                        if key is not None:
                            cluster = uniques.get(key)
                    if cluster is not None and (not self._full or cluster.cluster_id in clusters):
                        cluster.size += 1
                        cids[i] = cluster.cluster_id
                        continue
                    cids[i], created[i] = add(shape)
        return cids, created

    def add_many(self, messages: Iterable[str]) -> list[int]:
        """Mine messages in order; their template ids."""
        return [self.add(m).cluster_id for m in messages]

    def template_of(self, message: str) -> str:
        """The template a message like this one was mined into ("" if none); changes nothing.

        For alert text only (a search of Drain's clusters of the message's length when
        the caches do not know it), not for the data path.
        """
        masked = self._m.mask_shape(self._m.shape(message))
        cluster = self._masked.get(masked)
        if cluster is None or cluster.cluster_id not in self._clusters:
            cluster = self.drain.match(masked, full_search_strategy="fallback")
        return "" if cluster is None else str(cluster.get_template())

    def template(self, cluster_id: int) -> str:
        """The current template text of a cluster ("" if it was forgotten)."""
        cluster = self.drain.id_to_cluster.get(cluster_id)
        return "" if cluster is None else str(cluster.get_template())

    def __len__(self) -> int:
        return len(self.drain.id_to_cluster)

    # -- state ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-able data: version, settings, clusters, prefix tree, id counter."""
        clusters = [
            [c.cluster_id, list(c.log_template_tokens), c.size]
            for c in self.drain.id_to_cluster.values()
        ]
        return {
            "version": STATE_VERSION,
            "settings": self.settings.as_json(),
            "counter": self.drain.clusters_counter,
            "clusters": clusters,
            "tree": _tree_to_json(self.drain.root_node),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], masker: Masker | None = None) -> LogMiner:
        """Rebuild a miner from :meth:`state_dict` data; ``ValueError`` if it is not one."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            version = state.get("version") if isinstance(state, dict) else None
            raise ValueError(f"miner state version {version!r} is not {STATE_VERSION}; not loaded")
        try:
            miner = cls(MinerSettings.from_json(state["settings"]), masker)
            drain = miner.drain
            for cid, tokens, size in state["clusters"]:
                cluster = _drain3().LogCluster([str(t) for t in tokens], int(cid))
                cluster.size = int(size)
                drain.id_to_cluster[cluster.cluster_id] = cluster
            drain.clusters_counter = int(state["counter"])
            drain.root_node = _tree_from_json(state["tree"])
            miner._full = len(drain.id_to_cluster) >= miner.settings.max_clusters
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid miner state: {type(exc).__name__}: {exc}") from None
        return miner


_NOT_NEW = [MineResult(i, False) for i in range(4096)]

# A whole token (between what ``str.split`` splits on, in ASCII) of a shape (digits are
# 0s) that Masker._token may mask as <HEX> (if it has a 0 and a letter) or <UUID>
# without looking further.
_SPACE = rb" \t\n\r\x0b\x0c\x1c-\x1f"
_MAYBE_ID = re.compile(
    rb"(?<![^" + _SPACE + rb"])(?:[0a-fA-F]{6,}"
    rb"|[0a-fA-F]{8}-[0a-fA-F]{4}-[0a-fA-F]{4}-[0a-fA-F]{4}-[0a-fA-F]{12})"
    rb"(?![^" + _SPACE + rb"])"
)
#: A shape with its ids blanked (:meth:`LogMiner._blank`).
_Blank = tuple[bytes | int, ...]
#: Where a form of shape may have ids (start, end, whether a UUID's form), what makes
#: its blanked shape, and what takes its possible id (the usual form) or nothing.
_SpanEntry = tuple[
    tuple[tuple[int, int, bool], ...], Callable[[bytes], Any], Callable[[bytes], bytes]
]
_ENTRY_BLANK = operator.itemgetter(1)
_ENTRY_TOKEN = operator.itemgetter(2)
_NOWHERE = slice(0, 0)
_NO_TOKEN = operator.itemgetter(_NOWHERE)  # b"": neither digits nor letters
_CLUSTER_ID = operator.attrgetter("cluster_id")


def _slicer(a: int, b: int) -> Callable[[bytes], bytes]:
    getter: Callable[[bytes], bytes] = operator.itemgetter(slice(a, b))
    return getter


def _blank_at(spans: tuple[tuple[int, int, bool], ...], shape: bytes) -> _Blank | None:
    """The general form of :meth:`LogMiner._blank` (any other than one hex id)."""
    parts: list[bytes | int] = []
    prev = 0
    for a, b, uuid in spans:
        if uuid:
            parts += (shape[prev:a], 1)
        elif 0 < shape.count(48, a, b) < b - a:
            parts += (shape[prev:a], 0)
        else:
            continue
        prev = b
    if not parts:
        return None
    parts.append(shape[prev:])
    return tuple(parts)


#: Every hex digit of a shape (its other digits are 0s already) as ``0``: shapes of one
#: translation have hex digits in the same places and every other byte equal.
_HEX_CLASS = bytes.maketrans(b"abcdefABCDEF", b"0" * 12)


def _drain3() -> Any:
    """The ``drain3.drain`` module; imported when a miner is built (the ``logs`` extra)."""
    try:
        import drain3.drain
    except ImportError as exc:
        raise ImportError(
            f"log rules need Drain3, from the logs extra: pip install 'aiopsd[logs]' ({exc})"
        ) from None
    return drain3.drain


#: A mask's text in a token (``<NUM>``, ``<IP>``, a rule file's ``<ORDER>``).
_MASKED_TOKEN = re.compile(r"<[A-Z][A-Z0-9_]*>")
_drain_class: Any = None


def _masked_drain() -> Any:
    """Drain whose prefix tree takes a token that is all masks for a variable.

    Drain's tree sends a token with a digit down its wildcard branch (it is likely a
    variable) and any other token down a branch of its own. Masking leaves no digit, so
    ``<IP> open ...`` and ``<HOST> open ...`` would sit in two branches and never be
    compared. A token that is masks and punctuation only (``<IP>``, ``<NUM>:<NUM>``,
    ``(<SIZE>)``) now goes down the wildcard branch, and ``sim_th`` decides, as it does
    for variables Drain sees itself. A token with a word around its mask
    (``blk_<NUM>``, ``broadcast_<ID>``) keeps a branch of its own: its word names a kind,
    like any word.
    """
    global _drain_class
    base = _drain3().Drain  # imported each time: it says which extra is missing
    if _drain_class is None or _drain_class.__base__ is not base:

        class MaskedDrain(base):  # type: ignore[misc, valid-type]
            @staticmethod
            def has_numbers(s: str) -> bool:
                if any(c.isdigit() for c in s):
                    return True
                rest = _MASKED_TOKEN.sub("", s)
                return rest != s and not any(c.isalnum() for c in rest)

        _drain_class = MaskedDrain
    return _drain_class


def _new_drain(s: MinerSettings) -> Drain:
    drain: Drain = _masked_drain()(
        depth=s.depth,
        sim_th=s.sim_th,
        max_children=s.max_children,
        max_clusters=s.max_clusters,
        extra_delimiters=s.extra_delimiters,
    )
    return drain


def _tree_to_json(node: Node) -> list[Any]:
    """``[cluster_ids, {token: child}]``, iteratively (a deep tree must not recurse)."""
    root: list[Any] = [list(node.cluster_ids), {}]
    stack = [(node, root)]
    while stack:
        n, out = stack.pop()
        for token, child in n.key_to_child_node.items():
            doc: list[Any] = [list(child.cluster_ids), {}]
            out[1][token] = doc
            stack.append((child, doc))
    return root


def _tree_from_json(doc: list[Any]) -> Node:
    node_class = _drain3().Node
    root: Node = node_class()
    stack = [(root, doc)]
    while stack:
        node, (ids, children) = stack.pop()
        node.cluster_ids = [int(i) for i in ids]
        for token, child_doc in children.items():
            child = node_class()
            node.key_to_child_node[str(token)] = child
            stack.append((child, child_doc))
    return root
