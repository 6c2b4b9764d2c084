"""The small grammars inside a policy: globs, JSON paths, regexes, times of day, weekdays.

Each function takes the text as written and either returns its parsed form or raises
:class:`PatternError` with a reason a policy author can act on; ``enforce/policy.py`` turns
that into a :class:`~routeguard.errors.PolicyError` with the YAML line. Globs are translated
here into Python regexes for the reference interpreter by the same rules ``rust/policy/glob.rs``
uses for the compiled matcher, so the two agree character for character.
"""

from __future__ import annotations

import datetime as dt
import re
import warnings
from functools import lru_cache

__all__ = [
    "PatternError",
    "compile_glob",
    "compile_regex",
    "glob_regex",
    "parse_days",
    "parse_instant",
    "parse_path",
    "parse_time_of_day",
    "render_path",
]


class PatternError(ValueError):
    """A glob, path, regex or time that does not parse; the message says why."""


# ---- globs -----------------------------------------------------------------------------------

# Characters with a meaning in Rust or Python regex syntax (Rust also uses `&`, `-`, `~` for
# class set operations). Both engines accept a backslash before each; nothing else is escaped
# (Rust reads `\<` as a word boundary where Python reads a literal `<`).
_META = frozenset("\\.+*?()|[]{}^$#&-~")
_MAX_BRACE_DEPTH = 16


def _esc(c: str) -> str:
    return "\\" + c if c in _META else c


class _GlobParser:
    """Recursive-descent parser of the glob grammar (see ``docs/policy.md``), emitting regex."""

    def __init__(self, glob: str) -> None:
        self.s = glob
        self.i = 0

    def next(self) -> str | None:
        if self.i >= len(self.s):
            return None
        c = self.s[self.i]
        self.i += 1
        return c

    def peek(self, k: int = 0) -> str | None:
        j = self.i + k
        return self.s[j] if j < len(self.s) else None

    def seq(self, depth: int) -> tuple[str, str | None]:
        """Regex for a sequence; inside braces it stops at ``,`` or ``}`` and returns it."""
        out: list[str] = []
        last_star = False
        while (c := self.next()) is not None:
            star = False
            if c == "*":
                if not last_star:
                    out.append(".*")
                star = True
            elif c == "?":
                out.append(".")
            elif c == "\\":
                e = self.next()
                if e is None:
                    raise PatternError("trailing '\\' escapes nothing")
                out.append(_esc(e))
            elif c == "[":
                out.append(self.char_class())
            elif c == "{":
                if depth + 1 > _MAX_BRACE_DEPTH:
                    raise PatternError(f"braces nested deeper than {_MAX_BRACE_DEPTH}")
                branches: list[str] = []
                while True:
                    branch, end = self.seq(depth + 1)
                    branches.append(branch)
                    if end == ",":
                        continue
                    if end is None:
                        raise PatternError("unclosed '{'")
                    break
                out.append("(?:" + "|".join(branches) + ")")
            elif c in ",}" and depth > 0:
                return "".join(out), c
            else:
                out.append(_esc(c))
            last_star = star
        return "".join(out), None

    def class_char(self) -> str:
        c = self.next()
        if c == "\\":
            c = self.next()
        if c is None:
            raise PatternError("unclosed '['")
        return c

    def char_class(self) -> str:
        negated = self.peek() in ("!", "^")
        if negated:
            self.i += 1
        items: list[str] = []
        first = True
        while True:
            if self.peek() is None:
                raise PatternError("unclosed '['")
            if self.peek() == "]" and not first:
                self.i += 1
                break
            lo = self.class_char()
            first = False
            if self.peek() == "-" and self.peek(1) not in ("]", None):
                self.i += 1
                hi = self.class_char()
                if hi < lo:
                    raise PatternError(f"class range '{lo}-{hi}' is out of order")
                items.append(_esc(lo) + "-" + _esc(hi))
            else:
                items.append(_esc(lo))
        return "[" + ("^" if negated else "") + "".join(items) + "]"


def glob_regex(glob: str) -> str:
    """The regex body (use with ``re.DOTALL`` and ``fullmatch``) equivalent to ``glob``."""
    body, _ = _GlobParser(glob).seq(0)
    return body


@lru_cache(maxsize=4096)
def compile_glob(glob: str) -> re.Pattern[str]:
    """The compiled glob; match it with ``.fullmatch``."""
    return re.compile(glob_regex(glob), re.DOTALL)


# ---- regexes ---------------------------------------------------------------------------------


def _divergence(pattern: str) -> str | None:
    """Why both engines would accept ``pattern`` but read it differently, if they would.

    Scans outside character classes for Rust's word-boundary assertions (``\\<``, ``\\>``,
    ``\\b{...}``: literal text to Python), Python's possessive quantifiers (``a++``, ``a?+``,
    ``a{2}+``: a repeated repetition to Rust) and the verbose flag (Rust ignores whitespace
    inside classes too, Python does not).
    """
    i, n = 0, len(pattern)
    in_class = False
    class_start = 0
    after_quantifier = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1 : i + 2]
            if not in_class and (
                nxt in ("<", ">") or (nxt in ("b", "B") and pattern[i + 2 : i + 3] == "{")
            ):
                return (
                    f"'\\{nxt}' is an assertion to the compiled matcher but literal text to "
                    "Python; use \\b"
                )
            i += 2
            after_quantifier = False
            continue
        if in_class:
            if c == "]" and i > class_start:
                in_class = False
            i += 1
            continue
        if c == "[":
            i += 1
            if pattern[i : i + 1] == "^":
                i += 1
            in_class, class_start, after_quantifier = True, i, False
            continue
        if c == "(" and pattern[i + 1 : i + 2] == "?":
            j = i + 2
            while j < n and (pattern[j].isalpha() or pattern[j] == "-"):
                j += 1
            if "x" in pattern[i + 2 : j] and pattern[j : j + 1] in (":", ")"):
                return "the verbose flag (?x) is not supported (the engines differ inside [...])"
        if c == "+" and after_quantifier:
            return (
                "possessive quantifiers (a++, a*+, a?+, a{n}+) are not supported; "
                "write (?:a+)+ for a repeated repetition"
            )
        after_quantifier = c in "*+?}"
        i += 1
    return None


def compile_regex(pattern: str) -> re.Pattern[str]:
    """Compile a policy regex with Python's ``re``, refusing what the engines read differently.

    The compiled matcher uses Rust's ``regex`` crate (no look-around, no back-references,
    linear time); ``policy.py`` also asks it to compile each pattern. Here Python must accept
    it without a warning (Python warns exactly on the nested-set and set-operation syntax that
    Rust reads as class operations), and :func:`_divergence` must find nothing.
    """
    why = _divergence(pattern)
    if why is not None:
        raise PatternError(why)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return re.compile(pattern)
    except (re.error, FutureWarning, DeprecationWarning) as e:
        raise PatternError(f"invalid regex: {e}") from None
    except (RecursionError, OverflowError, MemoryError) as e:
        raise PatternError(f"regex too complex: {type(e).__name__}") from None


# ---- JSON paths ------------------------------------------------------------------------------

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_INDEX = re.compile(r"0|[1-9][0-9]*")
_MAX_INDEX = 2**63 - 1


def parse_path(text: str) -> list[str | int]:
    """Split ``$.a.b[0]["c.d"]`` into ``["a", "b", 0, "c.d"]``.

    Grammar: ``$`` then one or more of ``.name`` (letters, digits, ``_``, ``-``; not starting
    with a digit), ``[N]`` (a list index) and ``["key"]`` / ``['key']`` (any key; ``\\``
    escapes the quote and itself).
    """
    if not text.startswith("$"):
        raise PatternError("a path starts with '$', e.g. '$.amount'")
    segs: list[str | int] = []
    i = 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == ".":
            m = _IDENT.match(text, i + 1)
            if m is None:
                raise PatternError(
                    f"expected a name after '.' at offset {i}; quote other keys: $[\"key\"]"
                )
            segs.append(m.group())
            i = m.end()
        elif c == "[":
            if i + 1 < n and text[i + 1] in "\"'":
                quote = text[i + 1]
                j = i + 2
                key: list[str] = []
                while True:
                    if j >= n:
                        raise PatternError("unclosed quoted key")
                    ch = text[j]
                    if ch == "\\" and j + 1 < n and text[j + 1] in (quote, "\\"):
                        key.append(text[j + 1])
                        j += 2
                    elif ch == quote:
                        break
                    else:
                        key.append(ch)
                        j += 1
                if j + 1 >= n or text[j + 1] != "]":
                    raise PatternError("expected ']' after a quoted key")
                segs.append("".join(key))
                i = j + 2
            else:
                m = _INDEX.match(text, i + 1)
                if m is None or m.end() >= n or text[m.end()] != "]":
                    raise PatternError(
                        f'expected [N] or ["key"] at offset {i} (wildcards are not supported)'
                    )
                index = int(m.group())
                if index > _MAX_INDEX:
                    raise PatternError(f"index {index} is too large")
                segs.append(index)
                i = m.end() + 1
        else:
            raise PatternError(f"unexpected {c!r} at offset {i}; expected '.name' or '[...]'")
    if not segs:
        raise PatternError("'$' alone selects all arguments; name a field, e.g. '$.amount'")
    return segs


def render_path(segs: list[str | int]) -> str:
    """The canonical text of a path: ``.name`` where possible, else ``["key"]``, ``[N]``."""
    out = ["$"]
    for s in segs:
        if isinstance(s, int):
            out.append(f"[{s}]")
        elif _IDENT.fullmatch(s):
            out.append("." + s)
        else:
            out.append('["' + s.replace("\\", "\\\\").replace('"', '\\"') + '"]')
    return "".join(out)


# ---- times -----------------------------------------------------------------------------------

_TIME_OF_DAY = re.compile(r"([01][0-9]|2[0-4]):([0-5][0-9])(?::([0-5][0-9]))?")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = {
    **{d: i for i, d in enumerate(_DAYS)},
    **{
        full: i
        for i, full in enumerate(
            ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        )
    },
}


def parse_time_of_day(text: str) -> int:
    """Seconds since midnight of ``HH:MM`` or ``HH:MM:SS`` (``24:00`` is the end of the day)."""
    m = _TIME_OF_DAY.fullmatch(text.strip())
    if m is None:
        raise PatternError(f"expected a time of day HH:MM or HH:MM:SS, got {text!r}")
    secs = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3) or 0)
    if secs > 86_400:
        raise PatternError(f"{text!r} is past 24:00")
    return secs


def _day(name: str) -> int:
    day = _DAY_NAMES.get(name.strip().lower())
    if day is None:
        raise PatternError(f"unknown weekday {name!r}; use mon, tue, wed, thu, fri, sat, sun")
    return day


def parse_days(items: list[str]) -> int:
    """A weekday bit mask (bit 0 = Monday) from names and ranges like ``mon-fri``."""
    mask = 0
    for item in items:
        if "-" in item:
            a, b = item.split("-", 1)
            start, end = _day(a), _day(b)
            d = start
            while True:  # ranges may wrap: fri-mon is fri, sat, sun, mon
                mask |= 1 << d
                if d == end:
                    break
                d = (d + 1) % 7
        else:
            mask |= 1 << _day(item)
    return mask


def parse_instant(text: str) -> float:
    """Unix seconds of an ISO 8601 date-time; without an offset it is taken as UTC."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise PatternError(
            f"expected an ISO 8601 date-time like 2026-01-31T18:00:00Z, got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()
