"""Data-flow tracking: values that first reached the agent through untrusted tool outputs.

Prompt injection works by getting text under an attacker's control (a web page, an inbound
message, a file) in front of the agent, and then getting the agent to act on values that text
supplied: the attacker's IBAN, e-mail address or URL. The tracker sees every tool output
(:meth:`TaintTracker.observe`), labelled trusted or untrusted (by the caller, or by the
``untrusted_sources`` globs), and records, in order of arrival, the values in it: every string
and number, and the e-mail addresses, URLs, IBAN-like tokens and long digit runs found inside
strings. A value's *first* sighting decides: a value first seen in trusted data (the user's
own request, a trusted tool) stays trusted even if an attacker repeats it later. Before a call
to a *sensitive* tool (``sensitive_tools`` globs), :meth:`TaintTracker.check` walks its
arguments: a string or number first seen in untrusted data, a string that occurs verbatim in an
untrusted output before any trusted one, or an address/URL/IBAN token inside a string first seen
untrusted, taints the call, and the guard denies it (rule id :data:`TAINT_RULE_ID`). Once any
untrusted output has been seen, :attr:`TaintTracker.labels` holds ``untrusted-data-seen`` for
policies to test (``when.context.labels_any``).

Two refinements. A value shorter than ``min_length`` (a file id ``"13"``) is evidence only
where untrusted text says what it is (``match_short_values``: the words around it share one
with the tool's or the argument's name). And a hit on a value first seen in the output of a
call the user's request named ("pay the bill in 'bill.txt'" then ``read_file('bill.txt')``)
is marked :attr:`TaintHit.named`, so the guard may ask for approval instead of refusing.

Memory is bounded (``max_text_chars`` of output text, oldest dropped first; values likewise):
very long sessions forget their oldest outputs. Time is too: token extraction runs on a
linear-time regex engine and scans at most ``max_scan_chars`` characters per observation.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import re
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from routeguard._native import core
from routeguard.enforce.patterns import PatternError, compile_glob
from routeguard.errors import EnforcementError

__all__ = [
    "ANY_CONTEXT",
    "TAINT_RULE_ID",
    "UNTRUSTED_LABEL",
    "TaintHit",
    "TaintTracker",
    "extract_tokens",
    "name_words",
    "short_words",
]

TAINT_RULE_ID = "<taint>"
"""The rule id a decision carries when the data-flow check refused the call."""

UNTRUSTED_LABEL = "untrusted-data-seen"

# Compiled by the linear-time engine (Rust `regex`): a page of crafted text costs time
# proportional to its length, never the backtracking blow-up of Python's `re`.
_EMAIL = core.Regex(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = core.Regex(
    r"(?:https?://)?(?:www\.)?(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}(?::\d+)?(?:/[^\s\"'<>]*)?",
    case_insensitive=True,
)
_IBAN = core.Regex(r"\b[A-Z]{2}\d{2}[A-Z0-9]{10,30}\b")
_DIGITS = core.Regex(r"\d[\d -]{6,}\d")
_TRAILING = ".,;:!?)]}'\""
_TOKEN_EDGE = "\"'`([{<>}]).,;:!?*"


def _norm_url(u: str) -> str:
    u = u.casefold().rstrip(_TRAILING)
    for p in ("https://", "http://"):
        if u.startswith(p):
            u = u[len(p) :]
    if u.startswith("www."):
        u = u[4:]
    return u.rstrip("/")


def _ends_a_part(ends: list[str], u: str) -> bool:
    """Whether some reversed address part in ``ends`` (sorted) starts with reversed ``u``:
    ``u`` ends an address's local part or domain (``mple.org`` of ``bob@exämple.org``)."""
    r = u[::-1]
    k = bisect.bisect_left(ends, r)
    return k < len(ends) and ends[k].startswith(r)


def extract_tokens(text: str, limit: int | None = None) -> set[str]:
    """The addresses, URLs, IBAN-like tokens and long digit runs in ``text``, normalised.

    Linear in ``len(text)``; ``limit``: scan only the first ``limit`` characters.
    """
    if limit is not None and len(text) > limit:
        text = text[: max(limit, 0)]
    out: set[str] = set()
    email_spans = _EMAIL.find_spans(text)
    parts: set[str] = set()  # each address's local part and domain, reversed
    for a, b in email_spans:
        e = text[a:b].casefold().rstrip(_TRAILING)
        out.add("email:" + e)
        local, _, domain = e.rpartition("@")
        parts.update((local[::-1], domain[::-1]))
    ends = sorted(parts)
    i = 0
    for a, b in _URL.find_spans(text):
        while i < len(email_spans) and email_spans[i][1] <= a:
            i += 1
        if i < len(email_spans) and email_spans[i][0] <= a:
            continue  # a piece of an e-mail address (its local part), already recorded
        if a > 0 and text[a - 1] == "@":
            continue  # the domain of an e-mail address, already recorded
        u = _norm_url(text[a:b])
        if "." in u and not _ends_a_part(ends, u):
            out.add("url:" + u)
    out |= {"iban:" + text[a:b].casefold() for a, b in _IBAN.find_spans(text)}
    for a, b in _DIGITS.find_spans(text):
        digits = text[a:b].replace(" ", "").replace("-", "")
        if len(digits) >= 8:
            out.add("digits:" + digits)
    return out


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_ALNUM = re.compile(r"[^0-9a-z]+")
ANY_CONTEXT = "*"
"""The context of a short value seen with nothing around it to say what it is."""


def name_words(name: str) -> set[str]:
    """The words of an identifier or phrase, casefolded, a plural ``s`` dropped
    (``"delete_file"``, ``"$.fileIds"`` → ``delete``, ``file``, ``id``)."""
    out: set[str] = set()
    for w in _NON_ALNUM.split(_CAMEL.sub("_", name).casefold()):
        if len(w) > 2 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        if w and not w.isdigit():
            out.add(w)
    return out


def short_words(
    text: str, min_length: int, *, names: Iterable[str] = (), window: int = 3
) -> dict[str, set[str]]:
    """The values shorter than ``min_length`` in ``text`` and, for each, the words that say
    what it is: for the whole text, ``names`` (its field's key; :data:`ANY_CONTEXT` if none),
    for a word inside it, the :func:`name_words` of the ``window`` words either side.

    ``"Delete the file with ID '13'."`` → ``{"13": {"delete", "the", "file", "with", "id"},
    ...}``: edge punctuation is stripped, words are casefolded.
    """
    out: dict[str, set[str]] = {}
    whole = text.strip().casefold()
    if 0 < len(whole) < min_length:
        out.setdefault(whole, set()).update(set(names) or {ANY_CONTEXT})
    words = [w.strip(_TOKEN_EDGE) for w in whole.split()]
    if len(words) < 2:
        return out
    for i, word in enumerate(words):
        if 0 < len(word) < min_length:
            ctx = out.setdefault(word, set())
            for near in words[max(0, i - window) : i] + words[i + 1 : i + 1 + window]:
                ctx |= name_words(near)
    return out


def _number_key(x: float) -> str | None:
    if isinstance(x, bool) or not math.isfinite(x):
        return None
    return "num:" + repr(float(x))


_RANK = {"iban": 0, "email": 1, "url": 2, "str": 3, "num": 4, "digits": 5}


def _key_rank(key: str) -> tuple[int, str]:
    """Report the most telling token first (an IBAN before the digit run inside it)."""
    return _RANK.get(key.split(":", 1)[0], 9), key


@dataclass(frozen=True, slots=True)
class TaintHit:
    """Why a call is tainted: the argument path and the untrusted value it carries."""

    path: str
    value: str
    source: str  # the tool whose output first carried it
    named: bool = False  # that output came from a source the user's request named

    def describe(self) -> str:
        """One line for refusal messages."""
        where = " (a source the user's request names)" if self.named else ""
        return (
            f"argument {self.path} carries {self.value!r}, first seen in untrusted output "
            f"of '{self.source}'{where}"
        )


def _walk(value: Any, path: str, depth: int = 0) -> Iterator[tuple[str, Any]]:
    """(path, scalar) for every scalar inside ``value`` (dicts, lists, dataclasses, models)."""
    if depth > 32:
        return
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str | int | float):
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _walk(v, f"{path}.{k}", depth + 1)
    elif isinstance(value, list | tuple | set | frozenset | deque):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]", depth + 1)
    elif isinstance(value, bytes | bytearray):
        yield path, bytes(value).decode("utf-8", "replace")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        yield from _walk(dataclasses.asdict(value), path, depth + 1)
    elif callable(getattr(value, "model_dump", None)):  # pydantic models
        yield from _walk(value.model_dump(), path, depth + 1)
    else:
        yield path, str(value)


def _is_field(path: str, scalar: str | int | float) -> bool:
    """Whether ``scalar`` is a one-token field of a structured output (not free text)."""
    if path == "$":
        return False
    if isinstance(scalar, str):
        s = scalar.strip()
        return bool(s) and not any(c.isspace() for c in s)
    return True


class TaintTracker:
    """Records values first seen in untrusted tool outputs and flags calls that carry them.

    ``sensitive_tools``: globs of tools whose arguments must not carry untrusted values.
    ``untrusted_sources``: globs of tools whose outputs are untrusted by default (``["*"]``
    when not given: every tool output is untrusted unless observed with ``trusted=True``).
    ``min_length``: shorter strings are too common to be evidence (``"Bob"``, ``"yes"``).
    ``check_numbers``: whether numbers count as values (amounts echo easily; off by default).
    ``trust_structured_fields``: in an untrusted *structured* output (a dict or list), a field
    holding one token (no whitespace: an IBAN in ``recipient``, an address in ``email``, a
    channel name) is data the tool itself vouches for and is recorded as trusted, unless the
    same value also appears in free text in that output; free text (a message body, a
    transaction subject, a web page, any top-level string) stays untrusted. Off by default
    (strict: everything an untrusted tool returns is untrusted).
    ``match_short_values``: also track values shorter than ``min_length`` (a file id ``"13"``,
    a channel ``"dev"``). Such a value means nothing alone, so it only counts where the
    untrusted output says what it is: an argument that *is* a short value is tainted when
    that value was seen in untrusted output as a whole word next to (within three words) a
    word of the tool's or the argument's name (``delete_file(file_id="13")`` after "delete
    the file with ID '13'"), or as a whole field whose key shares a word with them, and
    never in trusted data (the user's request, a trusted tool): a short value is too common
    for a first-sighting rule, so any trusted sighting clears it. Under
    ``trust_structured_fields`` a one-token field neither taints nor clears a short value
    (file 13 is listed whether or not an injection asked to delete it). Short words inside
    longer arguments are not checked. Off by default.
    ``max_scan_chars``: how many characters of one observation are searched for addresses,
    URLs, IBANs and digit runs (the rest is still kept for verbatim matching).
    Sources the user's request names: the request may say where a step's values come from
    ("pay the bill in 'bill-december-2023.txt'", "her e-mail is on www.dora-website.com").
    An untrusted output whose call (``observe(..., args=...)``) carried an argument that a
    text given to :meth:`trust` contains verbatim is recorded as *named*, and a hit on a
    value first seen there says so (:attr:`TaintHit.named`), so that the guard can ask for
    approval rather than refuse. The values stay untrusted: the injection may sit inside
    the named source itself (AgentDojo puts it in the very bill the user asks to pay).
    """

    def __init__(
        self,
        *,
        sensitive_tools: Iterable[str] = (),
        untrusted_sources: Iterable[str] | None = None,
        min_length: int = 5,
        check_numbers: bool = False,
        max_text_chars: int = 4_000_000,
        max_values: int = 200_000,
        trust_structured_fields: bool = False,
        match_short_values: bool = False,
        max_scan_chars: int = 4_000_000,
    ) -> None:
        self.sensitive_tools = self._globs(sensitive_tools, "sensitive_tools")
        self.untrusted_sources = self._globs(
            ["*"] if untrusted_sources is None else untrusted_sources, "untrusted_sources"
        )
        if min_length < 1:
            raise EnforcementError(f"taint min_length must be at least 1, got {min_length}")
        self.min_length = min_length
        self.check_numbers = check_numbers
        self.trust_structured_fields = trust_structured_fields
        self.match_short_values = match_short_values
        # casefolded texts given to trust() (they may name sources); the newest 1,024 kept
        self._named: deque[str] = deque(maxlen=1024)
        self.max_text_chars = max_text_chars
        self.max_values = max_values
        if max_scan_chars < 0:
            raise EnforcementError(f"taint max_scan_chars must be 0 or more, got {max_scan_chars}")
        self.max_scan_chars = max_scan_chars
        self._lock = threading.Lock()
        # value -> (trusted, tool, from a source the user named)
        self._first: OrderedDict[str, tuple[bool, str, bool]] = OrderedDict()
        # Short values seen trusted; (short value, context word) seen untrusted -> tool.
        self._short_trusted: OrderedDict[str, None] = OrderedDict()
        self._short_untrusted: OrderedDict[tuple[str, str], tuple[str, bool]] = OrderedDict()
        # (trusted, tool, casefolded text, from a source the user named)
        self._texts: deque[tuple[bool, str, str, bool]] = deque()
        self._chars = 0
        self._untrusted_seen = False

    @staticmethod
    def _globs(items: Iterable[str], what: str) -> tuple[str, ...]:
        out = (items,) if isinstance(items, str) else tuple(items)
        for g in out:
            try:
                compile_glob(g)
            except (PatternError, TypeError) as e:
                raise EnforcementError(f"taint {what}: invalid tool pattern {g!r}: {e}") from None
        return out

    def fresh(self) -> TaintTracker:
        """A tracker with the same configuration and nothing recorded (a new session)."""
        return TaintTracker(
            sensitive_tools=self.sensitive_tools, untrusted_sources=self.untrusted_sources,
            min_length=self.min_length, check_numbers=self.check_numbers,
            max_text_chars=self.max_text_chars, max_values=self.max_values,
            trust_structured_fields=self.trust_structured_fields,
            match_short_values=self.match_short_values, max_scan_chars=self.max_scan_chars,
        )  # fmt: skip

    @property
    def labels(self) -> frozenset[str]:
        """Context labels to add to decisions (``untrusted-data-seen`` once applicable)."""
        return frozenset((UNTRUSTED_LABEL,)) if self._untrusted_seen else frozenset()

    def is_sensitive(self, tool: str) -> bool:
        """Whether ``tool`` matches ``sensitive_tools``."""
        return any(compile_glob(g).fullmatch(tool) for g in self.sensitive_tools)

    def is_untrusted_source(self, tool: str) -> bool:
        """Whether ``tool``'s outputs are untrusted by default."""
        return any(compile_glob(g).fullmatch(tool) for g in self.untrusted_sources)

    def _keys(self, scalar: str | int | float, limit: int | None = None) -> set[str]:
        if isinstance(scalar, str):
            s = scalar.strip().casefold()
            keys = extract_tokens(scalar, limit)
            if len(s) >= self.min_length:
                keys.add("str:" + s)
            return keys
        k = _number_key(scalar) if self.check_numbers else None
        return {k} if k else set()

    def _short_keys(self, path: str, scalar: str | int | float) -> dict[str, set[str]]:
        if not self.match_short_values or not isinstance(scalar, str):
            return {}
        key = path.rsplit(".", 1)[-1] if "." in path else ""
        return short_words(scalar, self.min_length, names=name_words(key))

    def _see_short(
        self, word: str, context: set[str], trusted: bool, tool: str, named: bool
    ) -> int:
        if trusted:
            seen = word in self._short_trusted
            self._short_trusted[word] = None
            return 0 if seen else 1
        fresh = [c for c in context if (word, c) not in self._short_untrusted]
        for c in fresh:
            self._short_untrusted[(word, c)] = (tool, named)
        return 1 if fresh else 0

    def _short_hit(self, word: str, names: set[str]) -> tuple[str, bool] | None:
        """(tool, named) of an output that called ``word`` one of ``names``, unless trusted."""
        if word in self._short_trusted:
            return None
        for c in (*sorted(names), ANY_CONTEXT):
            seen = self._short_untrusted.get((word, c))
            if seen is not None:
                return seen
        return None

    def _names_source(self, args: Any) -> bool:
        """Whether a call's arguments carry a value the trusted request spells out."""
        for _path, scalar in _walk(args, "$"):
            if isinstance(scalar, str):
                s = scalar.strip().casefold()
                if len(s) >= self.min_length and any(s in t for t in self._named):
                    return True
        return False

    def observe(
        self, tool: str, output: Any, *, trusted: bool | None = None, args: Any = None
    ) -> int:
        """Record ``output`` of ``tool``; returns how many values were seen for the first time.

        ``args``: the call's arguments; when the trusted request spells one out, the output
        is recorded as coming from a source the user named.
        """
        is_trusted = not self.is_untrusted_source(tool) if trusted is None else trusted
        new = 0
        items = list(_walk(output, "$"))
        named = not is_trusted and args is not None and self._names_source(args)
        split = self.trust_structured_fields and not is_trusted
        # Token extraction is linear in the text and capped per observation: past
        # max_scan_chars characters, strings are still recorded (verbatim matches) but not
        # searched for tokens.
        budget = self.max_scan_chars
        item_keys: list[set[str]] = []
        for _path, scalar in items:
            item_keys.append(self._keys(scalar, budget))
            if isinstance(scalar, str):
                budget = max(0, budget - len(scalar))
        free: set[str] = set()
        if split:  # keys mentioned in free text anywhere in this output stay untrusted
            for (path, scalar), keys in zip(items, item_keys, strict=True):
                if not _is_field(path, scalar):
                    free |= keys
        with self._lock:
            for (path, scalar), keys in zip(items, item_keys, strict=True):
                field_ok = split and _is_field(path, scalar)
                ok = is_trusted or (field_ok and not keys & free)
                if not field_ok:  # a structured field names no short value: neutral
                    for word, context in self._short_keys(path, scalar).items():
                        new += self._see_short(word, context, is_trusted, tool, named)
                if isinstance(scalar, str) and scalar.strip():
                    text = scalar.casefold()
                    self._texts.append((ok, tool, text, named and not ok))
                    self._chars += len(text)
                    if not ok:
                        self._untrusted_seen = True
                for key in keys:
                    if key not in self._first:
                        self._first[key] = (ok, tool, named and not ok)
                        new += 1
            while self._chars > self.max_text_chars and self._texts:
                self._chars -= len(self._texts.popleft()[2])
            while len(self._first) > self.max_values:
                self._first.popitem(last=False)
            for short in (self._short_trusted, self._short_untrusted):
                while len(short) > self.max_values:
                    short.popitem(last=False)
        return new

    def trust(self, value: Any, *, source: str = "user") -> None:
        """Record values as trusted (e.g. the user's own request) before anything else sees them."""
        self._named.extend(
            s.casefold() for _p, s in _walk(value, "$") if isinstance(s, str) and s.strip()
        )
        self.observe(source, value, trusted=True)

    def tainted(self, value: Any) -> bool:
        """Whether ``value`` (or something inside it) was first seen untrusted."""
        return self._find(value, "$") is not None

    def _first_text(self, needle: str) -> tuple[bool, str, bool] | None:
        for trusted, tool, text, named in self._texts:
            if needle in text:
                return trusted, tool, named
        return None

    def _find(self, args: Any, root: str, tool: str = "") -> TaintHit | None:
        with self._lock:
            for path, scalar in _walk(args, root):
                for key in sorted(self._keys(scalar), key=_key_rank):
                    seen = self._first.get(key)
                    if seen is None or seen[0]:
                        continue
                    if key.startswith("str:"):
                        # Its first sighting may be verbatim inside a longer trusted text
                        # (the user asked for "the family reunion"); that one decides.
                        first = self._first_text(key[4:])
                        if first is not None and first[0]:
                            continue
                    return TaintHit(path, key.split(":", 1)[1], seen[1], seen[2])
                if isinstance(scalar, str):
                    s = scalar.strip().casefold()
                    if self.match_short_values and 0 < len(s) < self.min_length:
                        key = path.rsplit(".", 1)[-1] if "." in path else ""
                        short = self._short_hit(s, name_words(tool) | name_words(key))
                        if short is not None:
                            return TaintHit(path, scalar.strip(), *short)
                    if len(s) >= self.min_length:
                        first = self._first_text(s)
                        if first is not None and not first[0]:
                            return TaintHit(path, scalar.strip(), first[1], first[2])
        return None

    def check(self, tool: str, args: Any) -> TaintHit | None:
        """The first untrusted value in ``args`` if ``tool`` is sensitive; else None."""
        if not self.is_sensitive(tool):
            return None
        return self._find(args, "$", tool)
