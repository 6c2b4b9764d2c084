"""Second look at a close semantic-cache hit: rules for what sentence embeddings miss.

Sentence embeddings score two questions that differ in one decisive detail as near-identical:
another number or version ("iPhone 13" / "iPhone 12"), a negation, an opposite ("for
beginners" / "for experts"), swapped roles ("do cats fear dogs" / "do dogs fear cats") or
another name ("Messi fans" / "Ronaldo fans"). :class:`HitVerifier` compares the query with the
cached prompt the vector search proposed and refuses the hit when one of its checks finds
such a difference. It is plain Python over regex tokens (tens of microseconds, no model);
each refusal names the check that fired and the words involved.

A query or cached prompt longer than :data:`MAX_CHARS` is refused unread (``length``).

Data flow: each text -> :func:`analyse` (cached): tokens with contractions expanded, a crude
stem per token, the numbers and their units, negation cues, name-like tokens -> each
enabled check compares the two analyses, in :data:`CHECKS` order -> the first
:class:`Refusal`, or None. ``SemanticCache(verifier=HitVerifier())`` consults ``__call__``
on every candidate at or above the threshold.

The checks (generic English, word lists in :mod:`routeguard.cache.lexicon`):

- ``numbers``: the numbers differ (digits, number words, roman numerals, versions inside
  tokens such as "iphone13"; "1,000" = "1000", "ten" = "10"), or one number carries other
  units ("5 km" / "5 miles"). A number only one side has counts when it is a quantity,
  a year or a version ("laptops under $500" / "laptops", "Windows 10" / "Windows"); a bare
  count ("top 5"), "one" and ordinals count only against another number.
- ``negation``: one side is negated and the other is not (not, never, no, without,
  cannot, ...; "X or not" is no negation), or a word faces its negated form ("safe" /
  "unsafe", "useful" / "useless").
- ``question``: the questions ask for different things, read from each sentence's opening
  word: why (a reason), when (a time), where (a place), who (a person), how many / much /
  long (an amount). "What", "which", "how" and yes/no questions ask for anything.
- ``opposites``: antonyms split between the sides (best / worst, buy / sell, before / after).
- ``qualifiers``: another audience or level ("beginners" / "experts", "kids" / "adults",
  "men" / "women"), another day, month or season.
- ``roles``: the same two words swap places around the same short link ("cats see dogs" /
  "dogs see cats", "PDF to Word" / "Word to PDF"); symmetric links ("and", "or", "vs",
  "between") and symmetric predicates ("difference", "compare") may swap.
- ``entities``: each side names something the other does not (capitalised mid-sentence
  words, acronyms, letters with digits; "USA" matches "United States"), or the texts differ
  only in one capitalised word ("Messi fans" / "Ronaldo fans").
- ``substitution``: the texts are the same but for one content word (two in a short text)
  swapped one for one, whatever their case, and a swapped pair is neither forms of one word, listed
  synonyms, nor a typo of each other ("legs" / "eyes", "learn python" / "learn java", "red
  car" / "blue car"). A word added, dropped or moved is left to the other checks, as the
  paraphrases that reword a question do that. It also refuses synonyms the lexicon does not
  list ("dish" / "meal"): a miss, the cheap side of the trade.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import lru_cache
from typing import Final

from routeguard.cache.lexicon import (
    ASKS,
    CLASS,
    CLASSED,
    CURRENCY,
    FILLER,
    HOW_AMOUNT,
    NEG_PREFIXES,
    NEGATIONS,
    NUMBER_WORDS,
    OPPOSITE,
    ORDINALS,
    PRONOUNS,
    SCALES,
    STOP,
    STOP_STEMS,
    SYMMETRIC_PREDICATES,
    SYMMETRIC_STEMS,
    UNITS,
    related,
    same_root,
    stem,
)

CHECKS: Final = (
    "numbers",
    "negation",
    "question",
    "opposites",
    "qualifiers",
    "roles",
    "entities",
    "substitution",
)
"""Every check, in the order they run (the first that fires decides the reason)."""

DEFAULT_CHECKS: Final = CHECKS
"""The checks :class:`HitVerifier` runs unless told otherwise: all of them."""

MAX_CHARS: Final = 4096
"""Longest text the verifier reads: a longer query or cached prompt is refused unread (a
sentence embedding stops reading at a few hundred tokens, so past that only an exact match
is the same request; and reading a multi-megabyte prompt would stall the caller)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a hit was refused: the check that fired and the words it saw."""

    check: str
    reason: str

    def __str__(self) -> str:
        return f"{self.check}: {self.reason}"


# ---------------------------------------------------------------------------- analysis


_TOKEN = re.compile(r"[A-Za-z]\+\+|[A-Za-z]#|[^\W_]+(?:['\u2019.][^\W_]+)*|[$€£¥₹%]")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_DIGITS = re.compile(r"\d+(?:\.\d+)*")
_QUANTITY = re.compile(r"(\d+(?:\.\d+)*)([a-z%]*)")
_NUMBER_ABBREV = re.compile(r"\bno\.(?=\s*\w)", re.IGNORECASE)
_ROMAN = re.compile(r"(?=[IVX]{2,5}$)X{0,3}(?:IX|IV|V?I{0,3})")
_ORDINAL_SUFFIX = frozenset({"st", "nd", "rd", "th"})
_CONTRACTED = {"ca": "can", "wo": "will", "sha": "shall", "ai": "is"}
_SENTENCE_END = frozenset(".?!:;\"'(\n")


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the checks need to know about one text."""

    words: tuple[str, ...]
    """Lower-cased tokens, contractions expanded ("can't" -> "can", "not")."""
    stems: tuple[str, ...]
    """:func:`stem` of each word."""
    numbers: dict[str, bool]
    """Each number's canonical value -> True if it is definite (digits, "ten"), False if it
    only counts against another number ("one", "first")."""
    units: dict[str, frozenset[str]]
    """Each number's value -> the units or currencies written with it."""
    negations: tuple[str, ...]
    names: dict[str, str]
    """Stem of each name-like token -> the token as written."""
    runs: tuple[tuple[str, ...], ...]
    """Runs of consecutive name-like words ("United States"), to match their acronyms."""
    capitalised: frozenset[str]
    """Stems of content words written with a capital (anywhere) or with digits."""
    asks: frozenset[str]
    """What its questions ask for, from each sentence's opening word: "reason" (why),
    "time" (when), "place" (where), "person" (who), "amount" (how many / much / long)."""


@lru_cache(maxsize=16_384)
def analyse(text: str) -> Analysis:
    """Tokenise ``text`` once (results are cached: a cached prompt is compared often)."""
    text = _NUMBER_ABBREV.sub("number ", _THOUSANDS.sub("", text))
    raw: list[tuple[str, bool]] = []  # (token as written, starts a sentence)
    last, pos = "", 0  # the last non-space character before the token, where the gap starts
    for m in _TOKEN.finditer(text):
        gap = text[pos : m.start()].rstrip()
        last = gap[-1] if gap else last
        raw.append((m.group(), not last or last in _SENTENCE_END))
        last, pos = m.group()[-1], m.end()
    alpha = [t for t, _ in raw if t[0].isalpha()]
    title_case = len(alpha) >= 4 and sum(t[0].isupper() for t in alpha) >= 0.7 * len(alpha)

    words: list[str] = []
    capital: list[bool] = []  # per word: written with a capital or digits (a name, a model)
    names: dict[str, str] = {}
    runs: list[list[str]] = [[]]
    for tok, first in raw:
        low = tok.lower()
        cap = tok[0].isupper() or (tok[0].isalpha() and any(c.isdigit() for c in tok))
        for q in ("'", "\u2019"):
            if q in low:
                base, _, suffix = low.partition(q)
                if suffix == "t" and base.endswith("n"):
                    base = _CONTRACTED.get(base[:-1], base[:-1])
                    words.extend((base, "not"))
                    capital.extend((False, False))
                    low = ""
                elif suffix in ("s", "re", "ve", "ll", "d", "m"):
                    low = base
                break
        if low:
            words.append(low)
            capital.append(cap and low not in STOP)
        if low and low not in STOP and low not in UNITS and _name_like(tok, first, title_case):
            letters = re.sub(r"[^a-z]", "", low)
            key = letters if len(letters) >= 2 else low
            names[stem(key)] = tok
            runs[-1].append(low)
        elif low not in STOP or not runs[-1]:
            runs.append([])
    stems = tuple(stem(w) for w in words)
    numbers, units = _numbers(words, capital)
    for tok, _ in raw:
        if _ROMAN.fullmatch(tok):  # "World War III", "Rocky II"
            numbers[str(_roman(tok))] = True
    return Analysis(
        tuple(words),
        stems,
        numbers,
        units,
        _negations(words),
        names,
        tuple(tuple(run) for run in runs if len(run) >= 2),
        frozenset(s for s, c in zip(stems, capital, strict=True) if c),
        _asks(raw),
    )


def _asks(raw: list[tuple[str, bool]]) -> frozenset[str]:
    out = set()
    for i, (tok, first) in enumerate(raw):
        low = tok.lower()
        if not first:
            continue
        if low in ASKS:
            out.add(ASKS[low])
        elif low == "how" and i + 1 < len(raw) and raw[i + 1][0].lower() in HOW_AMOUNT:
            out.add("amount")
    return frozenset(out)


def _negations(words: list[str]) -> tuple[str, ...]:
    """Negation cues that negate the question; not the alternative in "X or not", "why or
    why not", "whether or not", "if not", nor "not only"."""
    out = []
    for i, w in enumerate(words):
        if w not in NEGATIONS:
            continue
        before = words[max(0, i - 2) : i]
        if before[-1:] in (["or"], ["if"]) or before == ["or", "why"]:
            continue
        if w == "not" and words[i + 1 : i + 2] == ["only"]:
            continue
        out.append(w)
    return tuple(out)


def _name_like(tok: str, sentence_start: bool, title_case: bool) -> bool:
    """A token that looks like a name: an acronym or mixed case ("NASA", "iPhone"), letters
    then digits ("GPT4", "x86"), or a capitalised word inside a sentence."""
    if not tok[0].isalpha() or tok.lower() in STOP or len(tok) < 2:
        return False
    if any(c.isdigit() for c in tok) or any(c.isupper() for c in tok[1:]):
        return True
    return tok[0].isupper() and not sentence_start and not title_case


def _numbers(
    words: list[str], capital: list[bool]
) -> tuple[dict[str, bool], dict[str, frozenset[str]]]:
    """Numbers in ``words``: value -> definite?, and value -> units.

    Definite (it counts even when the other side has no number): a quantity (with a unit or
    currency), a year, a decimal or version ("8.1"), or a number after a name or inside one
    ("Windows 10", "iphone13"). A bare count ("top 5", "two types"), "one" and ordinals
    only count against another number.
    """
    values: dict[str, bool] = {}
    units: dict[str, set[str]] = {}

    def add(value: float | str, definite: bool, unit: str | None) -> None:
        key = _canonical(value)
        values[key] = values.get(key, False) or definite
        if unit:
            units.setdefault(key, set()).add(unit)

    i, n = 0, len(words)
    while i < n:
        w = words[i]
        prev = words[i - 1] if i else ""
        nxt = words[i + 1] if i + 1 < n else ""
        currency = CURRENCY.get(prev)
        m = _QUANTITY.fullmatch(w)
        if m:
            digits, suffix = m.groups()
            if suffix == "k":
                add(float(digits.split(".")[0]) * 1000, bool(currency), currency)
            elif nxt in SCALES and digits.replace(".", "", 1).isdigit():
                after = words[i + 2] if i + 2 < n else ""
                unit = currency or UNITS.get(after)
                add(float(digits) * SCALES[nxt], bool(unit), unit)
                i += 2
                continue
            else:
                unit = None if suffix in _ORDINAL_SUFFIX else currency or UNITS.get(suffix)
                year = len(digits) == 4 and digits.isdigit() and 1900 <= int(digits) <= 2099
                version = "." in digits or (i > 0 and capital[i - 1])
                unit = unit or UNITS.get(nxt)
                add(digits, year or version or bool(unit), unit)
        elif w in NUMBER_WORDS or w in SCALES:
            total, group, j = 0, 0, i
            while j < n and (words[j] in NUMBER_WORDS or words[j] in SCALES):
                if words[j] in NUMBER_WORDS:
                    group += NUMBER_WORDS[words[j]]
                else:
                    total += max(group, 1) * SCALES[words[j]]
                    group = 0
                j += 1
            total += group
            unit = currency or UNITS.get(words[j] if j < n else "")
            add(total, bool(unit) and total != 1, unit)  # "one month" = "a month"
            i = j
            continue
        elif w in ORDINALS and not (w == "second" and _QUANTITY.fullmatch(prev)):
            add(ORDINALS[w], False, None)
        elif w.endswith("s") and w[:-1] in SCALES:
            add(SCALES[w[:-1]], False, None)  # "thousands of" ~ "several thousand"
        else:
            for d in _DIGITS.findall(w):  # versions inside names: "iphone13", "gpt4"
                add(d, True, None)
        i += 1
    return values, {k: frozenset(v) for k, v in units.items()}


def _roman(numeral: str) -> int:
    values = {"I": 1, "V": 5, "X": 10}
    total = 0
    for c, nxt in zip(numeral, [*numeral[1:], ""], strict=True):
        v = values[c]
        total += -v if nxt and values[nxt] > v else v
    return total


def _canonical(value: float | str) -> str:
    """Canonical text of a number: 1000.0, "1000" and "1000.00" give "1000"; "3.10" stays
    "3.10" (a version)."""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if re.fullmatch(r"\d+\.0+", value):
        value = value.split(".")[0]
    return (value.lstrip("0") or "0") if value.isdigit() else value


# ---------------------------------------------------------------------------- checks


def check_numbers(a: Analysis, b: Analysis, *, one_sided: bool = True) -> str | None:
    """Numbers or quantities that differ; None when they agree."""
    only_a = [v for v in a.numbers if v not in b.numbers]
    only_b = [v for v in b.numbers if v not in a.numbers]
    definite = [v for v in only_a if a.numbers[v]] + [v for v in only_b if b.numbers[v]]
    if (only_a and only_b) or (one_sided and definite):
        return f"{_show(only_a)} vs {_show(only_b)}"
    for value, units in a.units.items():
        other = b.units.get(value)
        if other and units and not units & other:
            return f"{value} {_show(sorted(units))} vs {value} {_show(sorted(other))}"
    return None


def check_negation(a: Analysis, b: Analysis) -> str | None:
    """One side negated and not the other, or a word against its negated form."""
    if bool(a.negations) != bool(b.negations):
        return f"{_show(a.negations)} vs {_show(b.negations)}"
    wa, wb = set(a.words), set(b.words)
    for x, only_x, plain in ((a, wa - wb, wb - wa), (b, wb - wa, wa - wb)):
        for w in only_x:
            if not w.startswith(NEG_PREFIXES) and not w.endswith("less"):
                continue
            for p in NEG_PREFIXES:
                if w.startswith(p) and len(w) - len(p) >= 4 and w[len(p) :] in plain:
                    return _pair(x is a, w, w[len(p) :])
            if w.endswith("less") and w[:-4] + "ful" in plain:
                return _pair(x is a, w, w[:-4] + "ful")
    return None


def check_question(a: Analysis, b: Analysis) -> str | None:
    """The questions ask for different things: why vs when vs where vs who vs how many."""
    if a.asks and b.asks and not a.asks & b.asks:
        return f"{_show(sorted(a.asks))} vs {_show(sorted(b.asks))}"
    return None


def check_opposites(a: Analysis, b: Analysis) -> str | None:
    """An antonym pair split between the two sides (best / worst, buy / sell)."""
    sa, sb = set(a.stems), set(b.stems)
    for s in sa - sb:
        for o in OPPOSITE.get(s, ()):
            if o in sb and o not in sa:
                return f"{_word(a, s)!r} vs {_word(b, o)!r}"
    return None


def check_qualifiers(a: Analysis, b: Analysis) -> str | None:
    """Another audience, level, gender, day, month or season."""
    if not (CLASSED.intersection(a.stems) and CLASSED.intersection(b.stems)):
        return None
    for dim, classes in CLASS.items():
        ca = {classes[s]: s for s in a.stems if s in classes}
        cb = {classes[s]: s for s in b.stems if s in classes}
        extra_a, extra_b = ca.keys() - cb.keys(), cb.keys() - ca.keys()
        if extra_a and extra_b:
            wa, wb = _word(a, ca[min(extra_a)]), _word(b, cb[min(extra_b)])
            return f"{dim} {wa!r} vs {wb!r}"
    return None


def check_roles(a: Analysis, b: Analysis) -> str | None:
    """Two words that swap places around the same short asymmetric link: "X to Y" / "Y to X",
    "X better than Y" / "Y better than X"."""
    sa = [s for s in a.stems if s not in FILLER]
    sb = [s for s in b.stems if s not in FILLER]
    shared = set(sa) & set(sb)
    if len(shared) < 3 or shared & SYMMETRIC_PREDICATES:
        return None  # "difference", "compare": the order of what is compared carries no role
    once = {s for s in shared if sa.count(s) == 1 and sb.count(s) == 1}
    pa = {s: i for i, s in enumerate(sa) if s in once}
    pb = {s: i for i, s in enumerate(sb) if s in once}
    content = sorted((s for s in once if s not in STOP_STEMS), key=pa.__getitem__)[:40]
    for i, x in enumerate(content):
        for y in content[i + 1 :]:
            if pb[x] < pb[y]:
                continue  # same order in both texts
            link = sa[pa[x] + 1 : pa[y]]
            same_link = 0 < len(link) <= 3 and link == sb[pb[y] + 1 : pb[x]]
            if same_link and not set(link) & SYMMETRIC_STEMS:
                words = " ".join(_word(a, s) for s in link)
                return f"{_word(a, x)!r} and {_word(a, y)!r} swap around {words!r}"
    return None


def check_entities(a: Analysis, b: Analysis) -> str | None:
    """Each side names something (a name, acronym or model) the other does not mention, or
    the texts differ only in one slot holding a capitalised word ("Messi fans" / "Ronaldo
    fans", where a sentence-initial capital alone would not mark a name)."""
    only_a = _unmatched_names(a, b)
    only_b = _unmatched_names(b, a)
    if only_a and only_b:
        return f"{_show(only_a)} vs {_show(only_b)}"
    slot = _one_slot(a, b) if a.capitalised or b.capitalised else None
    if slot is not None and (slot[0] in a.capitalised or slot[1] in b.capitalised):
        return f"{_word(a, slot[0])!r} vs {_word(b, slot[1])!r}"  # "Messi fans" / "Ronaldo fans"
    return None


def _unmatched_names(x: Analysis, y: Analysis) -> list[str]:
    """Names in ``x`` that ``y`` does not mention, as a word, inside a longer word, or as an
    acronym ("USA" for "United States (of America)")."""
    other = set(y.stems) | set(y.words)
    joined = "".join(y.words)
    acronyms_y = {t.lower() for t in y.names.values() if t.isupper() and len(t) >= 2}
    acronyms_x = {t.lower() for t in x.names.values() if t.isupper() and len(t) >= 2}
    spelled = {w for run in x.runs if _abbreviates(run, acronyms_y) for w in run}
    initials_y = {"".join(w[0] for w in run) for run in y.runs}
    names_y = [k for k in y.names] + [t.lower().replace(".", "") for t in y.names.values()]
    out = []
    for key, tok in x.names.items():
        low = tok.lower()
        bare = low.replace(".", "")
        if key in other or low in other or low in spelled or (len(low) > 4 and low in joined):
            continue
        if low in acronyms_x and any(low.startswith(i) for i in initials_y):
            continue
        if any(related(key, n) or _same_acronym(bare, n) for n in names_y):
            continue
        out.append(tok)
    return out


def _same_acronym(x: str, y: str) -> bool:
    """ "us" and "usa" ("U.S." and "USA"): one a prefix of the other, both short."""
    return (
        min(len(x), len(y)) >= 2
        and max(len(x), len(y)) <= 5
        and (x.startswith(y) or y.startswith(x))
    )


def _abbreviates(run: tuple[str, ...], acronyms: set[str]) -> bool:
    initials = "".join(w[0] for w in run)
    return any(a.startswith(initials) for a in acronyms)


def check_substitution(a: Analysis, b: Analysis) -> str | None:
    """Otherwise identical texts with one content word (two in a short text) swapped, a swapped
    pair that is neither forms of one word nor listed synonyms ("legs" / "eyes", "python" /
    "java", "red" / "blue"): another question, whatever the words are."""
    swaps = _swaps(a, b)
    if not swaps:
        return None
    return ", ".join(f"{_word(a, x)!r} vs {_word(b, y)!r}" for x, y in swaps)


def _swaps(a: Analysis, b: Analysis) -> list[tuple[str, str]]:
    """The unrelated pairs among the content words the two texts swap one for one, when
    everything else is the same (function words aside) and one word is swapped, or up to
    :data:`MAX_SWAPS` in a text of at most :data:`SHORT_TEXT` content words; [] when the
    texts differ otherwise (a word added, dropped or moved is a rewording, judged by the
    other checks) or only in related words. Numbers and units are left to the numbers
    check ("ten" = "10")."""
    wa = [(w, s) for w, s in zip(a.words, a.stems, strict=True) if w not in FILLER]
    wb = [(w, s) for w, s in zip(b.words, b.stems, strict=True) if w not in FILLER]
    sa, sb = [s for _, s in wa], [s for _, s in wb]
    swapped: list[tuple[str, str]] = []
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, sa, sb, autojunk=False).get_opcodes():
        # A content word is judged as written: "everest" is one though it stems to "ever".
        xs = [s for w, s in wa[i1:i2] if w not in STOP]
        ys = [s for w, s in wb[j1:j2] if w not in STOP]
        if tag == "equal" or not (xs or ys):
            continue
        if len(xs) != len(ys):
            return []
        swapped.extend(zip(xs, ys, strict=True))
    short = sum(1 for w, _ in wa if w not in STOP) <= SHORT_TEXT
    if len(swapped) > (MAX_SWAPS if short else 1):
        return []
    out = []
    for x, y in swapped:
        if x in sb or y in sa:
            return []  # a word that moved: a reordering, not a swap
        wx, wy = _word(a, x), _word(b, y)
        if _numeric(x) or _numeric(y) or related(x, y) or same_root(wx, wy):
            continue
        if wx in PRONOUNS or wy in PRONOUNS or _same_unit(wx, wy):
            continue
        out.append((x, y))
    return out


MAX_SWAPS: Final = 2
"""Most content words two short texts may swap and still count as "otherwise identical"
(a longer text: one; two swaps there are mostly rewordings, "gives the quantity" / "returns
the number")."""
SHORT_TEXT: Final = 4
"""Content words of a short text (a question such as "how many legs does a spider have")."""


def _numeric(s: str) -> bool:
    return any(c.isdigit() for c in s) or s in NUMBER_WORDS or s in ORDINALS or s in SCALES


def _same_unit(x: str, y: str) -> bool:
    unit = UNITS.get(x)
    return unit is not None and unit == UNITS.get(y)


def _one_slot(a: Analysis, b: Analysis) -> tuple[str, str] | None:
    """The two stems filling the texts' only differing slot (function words aside), when
    they are unrelated (see :func:`related`); None otherwise."""
    sa = [s for s in a.stems if s not in FILLER]
    sb = [s for s in b.stems if s not in FILLER]
    content = []
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, sa, sb, autojunk=False).get_opcodes():
        xs = [s for s in sa[i1:i2] if s not in STOP_STEMS]
        ys = [s for s in sb[j1:j2] if s not in STOP_STEMS]
        if tag != "equal" and (xs or ys):
            content.append((xs, ys))
    if len(content) != 1 or len(content[0][0]) != 1 or len(content[0][1]) != 1:
        return None
    x, y = content[0][0][0], content[0][1][0]
    if x in sb or y in sa or related(x, y):
        return None
    return x, y


def _word(x: Analysis, s: str) -> str:
    """The word as written for a stem (the stem itself if it was not a single word)."""
    for w, st in zip(x.words, x.stems, strict=True):
        if st == s:
            return w
    return s


def _show(items: Iterable[str]) -> str:
    listed = list(items)
    return "{" + ", ".join(listed) + "}" if listed else "{}"


def _pair(first_is_query: bool, w: str, other: str) -> str:
    return f"{w!r} vs {other!r}" if first_is_query else f"{other!r} vs {w!r}"


# ---------------------------------------------------------------------------- verifier


class HitVerifier:
    """The second-stage check a :class:`~routeguard.cache.semantic.SemanticCache` consults on
    each candidate at or above its threshold: ``verifier(query, cached_prompt) -> bool``.

    ``checks`` picks which of :data:`CHECKS` run (all of them unless given);
    ``one_sided_numbers`` also refuses a definite number only one side has; a text longer
    than ``max_chars`` is refused unread (check ``"length"``). :meth:`explain`
    says why a hit is refused; ``refusals`` counts refusals per check since construction.
    """

    __slots__ = ("checks", "max_chars", "one_sided_numbers", "refusals")

    def __init__(
        self,
        checks: Iterable[str] = DEFAULT_CHECKS,
        *,
        one_sided_numbers: bool = True,
        max_chars: int = MAX_CHARS,
    ) -> None:
        chosen = tuple(checks)
        unknown = [c for c in chosen if c not in CHECKS]
        if unknown:
            raise ValueError(f"unknown verifier checks {unknown}: choose from {list(CHECKS)}")
        self.checks = tuple(c for c in CHECKS if c in chosen)
        self.one_sided_numbers = one_sided_numbers
        self.max_chars = max_chars
        self.refusals: dict[str, int] = dict.fromkeys(self.checks, 0)

    def __repr__(self) -> str:
        return f"HitVerifier(checks={list(self.checks)})"

    def explain(self, query: str, cached: str) -> Refusal | None:
        """The first check that refuses serving ``cached``'s answer to ``query``, or None."""
        longest = max(len(query), len(cached))
        if longest > self.max_chars:
            return Refusal("length", f"{longest} characters, past the {self.max_chars} read")
        a, b = analyse(query), analyse(cached)
        for name in self.checks:
            if name == "numbers":
                reason = check_numbers(a, b, one_sided=self.one_sided_numbers)
            else:
                reason = _CHECK_FUNCS[name](a, b)
            if reason is not None:
                return Refusal(name, reason)
        return None

    def __call__(self, query: str, cached: str) -> bool:
        """True when the hit may be served (no check refused it)."""
        refusal = self.explain(query, cached)
        if refusal is None:
            return True
        self.refusals[refusal.check] = self.refusals.get(refusal.check, 0) + 1
        return False


_CHECK_FUNCS: Final = {
    "negation": check_negation,
    "question": check_question,
    "opposites": check_opposites,
    "qualifiers": check_qualifiers,
    "roles": check_roles,
    "entities": check_entities,
    "substitution": check_substitution,
}
