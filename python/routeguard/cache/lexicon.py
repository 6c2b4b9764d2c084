"""Word lists and word relations behind :mod:`routeguard.cache.verify` (plain English).

The tables are data, not code: function words, negation cues, symmetric links, antonym
pairs, mutually exclusive qualifier classes (level, age, gender, day, month, season), a
small synonym list, number words and units. :func:`stem` reduces a word to the crude stem
the verifier compares, and each table is also indexed by stem (``OPPOSITE``, ``CLASS``,
``GROUP``) so a check looks a word up once. :func:`related` says whether two stems may name
the same thing. None of it is tuned to one data set: extend a list when a language domain
needs it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

# ---------------------------------------------------------------------------- vocabulary


def _w(words: str) -> tuple[str, ...]:
    """A word list written as one string (tables below stay readable)."""
    return tuple(words.split())


STOP: Final = frozenset(
    _w("""a an the this that these those some any each every all both either of to in on at by
    for from with without into onto over under about above below between through during
    before after against among than as like via per and or but nor so yet if then else
    because while since until unless whether i me my mine we us our you your he him his she
    her it its they them their what which who whom whose when where why how is am are was
    were be been being do does did done have has had having can could will would shall
    should may might must get gets got getting there here also too very just really only
    ever even much many more most such own same other another one ones not no never s t
    please""")
)
"""Function words (and a few near-empty question words): never a name, never a content swap."""

FILLER: Final = frozenset(_w("a an the please really very actually just exactly ever"))

NEGATIONS: Final = frozenset(
    _w(
        "not no never none nobody nothing nowhere neither nor without cannot unable impossible "
        "non absence lack lacking"
    )
)

ASKS: Final = {
    "why": "reason", "when": "time", "where": "place", "who": "person", "whom": "person",
    "whose": "person",
}  # fmt: skip
"""A question's opening word -> what it asks for (other openings ask for anything)."""
HOW_AMOUNT: Final = frozenset(_w("many much long old far often big tall"))
"""After an opening "how", these ask for an amount."""

SYMMETRIC: Final = frozenset(
    _w("""and or vs versus v between with nor plus & , difference differences different differ
    compare compared comparison similar similarity same equal relation relationship""")
)
"""Links around which two words may swap without changing the question."""

OPPOSITES: Final = (
    "best worst", "better worse", "good bad", "advantage disadvantage", "pro con",
    "cheap expensive", "increase decrease", "rise fall", "before after", "buy sell",
    "maximum minimum", "max min", "old new", "husband wife", "father mother", "son daughter",
    "brother sister", "king queen",
    "up down", "more less", "most least", "high low", "fast slow", "large small",
    "big small", "long short", "tall short", "hot cold", "warm cool", "positive negative",
    "easy hard", "easy difficult", "rich poor", "young old", "first last", "win lose",
    "gain lose", "gain loss", "profit loss", "love hate", "import export", "upload download",
    "input output", "send receive", "push pull", "open close", "start stop", "begin end",
    "enable disable", "add remove", "include exclude", "allow block", "accept reject",
    "encrypt decrypt", "compress decompress", "north south", "east west", "left right",
    "top bottom", "above below", "inside outside", "internal external", "light dark",
    "light heavy", "strong weak", "wet dry", "early late", "true false", "success failure",
    "thick thin", "fat thin", "wide narrow", "deep shallow", "near far", "private public",
    "odd even", "plus minus", "past future", "yesterday tomorrow", "always never",
    "everything nothing", "all none", "attack defend", "offense defense",
    "arrive depart", "arrival departure", "entry exit", "entrance exit", "import export",
    "domestic international", "online offline", "manual automatic", "physical digital",
    "hardware software", "client server", "frontend backend", "lend borrow", "give take",
    "ascending descending", "forward backward", "sunrise sunset", "asleep awake",
    "marry divorce", "hire fire",
    "question answer", "cause cure", "healthy unhealthy", "legal illegal", "safe dangerous",
    "win loss", "victory defeat", "majority minority", "lowest highest", "cheapest priciest",
)  # fmt: skip

QUALIFIERS: Final = {
    "level": (
        "beginner novice newbie dummy basic introductory elementary",
        "intermediate",
        "advanced expert professional pro master senior experienced",
    ),
    "age": (
        "baby infant toddler",
        "kid child children teen teenager student youth",
        "adult grownup",
        "elderly senior retiree",
    ),
    "gender": ("man men male boy guy gentleman", "woman women female girl lady"),
    "weekday": tuple(_w("monday tuesday wednesday thursday friday saturday sunday")),
    "month": tuple(
        _w("january february march april june july august september october november december")
    ),
    "season": ("spring", "summer", "autumn fall", "winter"),
}  # fmt: skip
"""Mutually exclusive classes of one dimension (words in one class are interchangeable)."""

SYNONYMS: Final = (
    "fast quick rapid speedy swift",
    "good great top ideal excellent finest best",
    "way method technique approach strategy tip trick idea suggestion advice step",
    "learn study master",
    "buy purchase",
    "start begin launch",
    "make create build produce",
    "big large huge",
    "small little tiny",
    "car vehicle automobile",
    "movie film",
    "job work career employment occupation",
    "money cash fund",
    "improve enhance boost increase",
    "use utilize employ",
    "important essential crucial vital key",
    "help assist aid",
    "choose pick select",
    "find locate",
    "fix repair solve resolve",
    "mistake error",
    "problem issue trouble",
    "answer reply response",
    "question query",
    "example instance",
    "happy glad",
    "kid child",
    "phone smartphone mobile cellphone",
    "website site webpage",
    "software program app application tool",
    "picture photo image photograph",
    "show display",
    "speak talk",
    "stop quit cease",
    "reduce decrease lower lessen",
    "country nation",
    "famous popular renowned",
    "cheap inexpensive affordable",
    "expensive costly pricey",
    "benefit advantage",
    "drawback disadvantage downside",
    "affect impact influence effect",
    "get obtain acquire",
    "earn make",
    "prepare ready",
    "think feel believe",
    "mean meaning definition",
    "people person",
    "hard difficult tough",
    "easy simple",
)
"""Words that may stand in for each other in a question (one group per line)."""

IRREGULAR: Final = {
    "men": "man", "women": "woman", "children": "child", "people": "person", "mice": "mouse",
    "feet": "foot", "teeth": "tooth", "geese": "goose", "lives": "life", "wives": "wife",
    "knives": "knife", "leaves": "leaf", "halves": "half", "won": "win", "lost": "lose",
    "sold": "sell", "bought": "buy", "taught": "teach", "thought": "think", "built": "build",
    "made": "make", "went": "go", "gone": "go", "saw": "see", "seen": "see", "ate": "eat",
    "eaten": "eat", "wrote": "write", "written": "write", "gave": "give", "given": "give",
    "took": "take", "taken": "take", "found": "find", "got": "get", "gotten": "get",
    "better": "good", "best": "good", "worse": "bad", "worst": "bad", "pros": "pro",
    "cons": "con", "kids": "kid", "grownups": "grownup", "data": "data",
}  # fmt: skip
KEEP_S: Final = frozenset(
    _w("""news series species physics mathematics maths ethics economics politics analysis
    basis crisis thesis bus gas yes this his has was is does its always perhaps various
    thanks lens plus us vs whereas chaos canvas atlas bias alias corps status virus""")
)

NUMBER_WORDS: Final = {
    w: i
    for i, w in enumerate(
        _w("""zero one two three four five six seven eight nine ten eleven twelve thirteen
        fourteen fifteen sixteen seventeen eighteen nineteen""")
    )
} | {
    w: 10 * (i + 2)
    for i, w in enumerate(_w("twenty thirty forty fifty sixty seventy eighty ninety"))
}
SCALES: Final = {"hundred": 100, "thousand": 1_000, "million": 10**6, "billion": 10**9}
ORDINALS: Final = {
    w: i + 1
    for i, w in enumerate(_w("first second third fourth fifth sixth seventh eighth ninth tenth"))
}
CURRENCY: Final = {
    "$": "usd", "€": "eur", "£": "gbp", "¥": "jpy", "₹": "inr", "usd": "usd", "dollar": "usd",
    "dollars": "usd", "eur": "eur", "euro": "eur", "euros": "eur", "gbp": "gbp",
    "inr": "inr", "rs": "inr", "rupee": "inr", "rupees": "inr", "yen": "jpy",
}  # fmt: skip
UNITS: Final = {
    **{u: "km" for u in ("km", "kms", "kilometer", "kilometers", "kilometre", "kilometres")},
    **{u: "mile" for u in ("mile", "miles", "mi")},
    **{u: "m" for u in ("meter", "meters", "metre", "metres")},
    **{u: "cm" for u in ("cm", "centimeter", "centimeters")},
    **{u: "ft" for u in ("ft", "foot", "feet")},
    **{u: "in" for u in ("inch", "inches")},
    **{u: "kg" for u in ("kg", "kgs", "kilo", "kilos", "kilogram", "kilograms")},
    **{u: "lb" for u in ("lb", "lbs", "pound", "pounds")},
    **{u: "g" for u in ("gram", "grams")},
    **{u: "l" for u in ("liter", "liters", "litre", "litres")},
    **{u: "gb" for u in ("gb", "gigabyte", "gigabytes")},
    **{u: "mb" for u in ("mb", "megabyte", "megabytes")},
    **{u: "tb" for u in ("tb", "terabyte", "terabytes")},
    **{u: "s" for u in ("second", "seconds", "sec", "secs")},
    **{u: "min" for u in ("minute", "minutes", "mins")},
    **{u: "h" for u in ("hour", "hours", "hr", "hrs")},
    **{u: "day" for u in ("day", "days")},
    **{u: "week" for u in ("week", "weeks")},
    **{u: "month" for u in ("month", "months")},
    **{u: "year" for u in ("year", "years", "yr", "yrs")},
    **{u: "%" for u in ("%", "percent", "per cent")},
    **{u: "c" for u in ("celsius", "centigrade")},
    **{u: "f" for u in ("fahrenheit",)},
    **CURRENCY,
}


def stem(word: str) -> str:
    """A crude suffix-stripping stem, only ever compared with other stems: "studies",
    "studying" and "study" give "studi"; "bigger" and "big" give "big"."""
    w = word.lower()
    if w in IRREGULAR:
        return IRREGULAR[w]
    if len(w) <= 3 or not w.isalpha() or w in KEEP_S:
        return w
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith(("sses", "xes", "ches", "shes")):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    if w.endswith("ied") and len(w) > 4:
        w = w[:-3] + "y"
    else:
        for suffix, keep in (("ing", 3), ("ed", 3), ("ly", 3), ("est", 3), ("er", 4)):
            if w.endswith(suffix) and len(w) - len(suffix) >= keep:
                w = w[: -len(suffix)]
                break
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    if len(w) > 3 and w[-1] == w[-2] and w[-1] in "bdgmnprt":
        w = w[:-1]
    if w.endswith("y") and len(w) > 3:
        w = w[:-1] + "i"
    return w


# ---------------------------------------------------------------------------- tables


def _pairs_by_stem(pairs: Iterable[str]) -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    for pair in pairs:
        a, b = (stem(w) for w in pair.split())
        out.setdefault(a, set()).add(b)
        out.setdefault(b, set()).add(a)
    return {k: frozenset(v) for k, v in out.items()}


def _classes_by_stem() -> dict[str, dict[str, int]]:
    return {
        dim: {stem(w): i for i, cls in enumerate(classes) for w in cls.split()}
        for dim, classes in QUALIFIERS.items()
    }


def _groups_by_stem() -> dict[str, frozenset[int]]:
    out: dict[str, set[int]] = {}
    for i, group in enumerate(SYNONYMS):
        for w in group.split():
            out.setdefault(stem(w), set()).add(i)
    return {k: frozenset(v) for k, v in out.items()}


OPPOSITE: Final = _pairs_by_stem(OPPOSITES)
CLASS: Final = _classes_by_stem()
CLASSED: Final = frozenset(s for classes in CLASS.values() for s in classes)
GROUP: Final = _groups_by_stem()
STOP_STEMS: Final = frozenset(stem(w) for w in STOP) | STOP
SYMMETRIC_STEMS: Final = frozenset(stem(w) for w in SYMMETRIC) | SYMMETRIC
SYMMETRIC_PREDICATES: Final = SYMMETRIC_STEMS - frozenset(_w("and or , & with nor v vs versus"))
NEG_PREFIXES: Final = ("un", "non", "in", "im", "il", "ir", "dis")


def related(x: str, y: str) -> bool:
    """Whether two stems may stand for the same thing: listed synonyms, one qualifier
    class, a compound ending in the other, or a one-letter typo in a longer word."""
    if GROUP.get(x, frozenset()) & GROUP.get(y, frozenset()):
        return True
    if any(x in c and y in c and c[x] == c[y] for c in CLASS.values()):
        return True
    short, long = sorted((x, y), key=len)
    if len(short) >= 4 and long.endswith(short):
        return True  # a compound of the same thing: "plane" / "airplane"
    return len(short) >= 5 and _one_edit(x, y)


SUFFIXES: Final = frozenset(
    _w("""s es d ed ing er ers est ly ness iness ment ments ion ions ation ations ity
    ful ive y ies ied ily ence ance ize ise ized ised""")
)
"""Endings of one word's inflected or derived forms ("use" / "used", "happy" / "happiness")."""

PRONOUNS: Final = frozenset(
    _w("""myself yourself himself herself itself oneself ourselves yourselves themselves
    someone anyone everyone somebody anybody everybody something anything everything
    nothing nobody none""")
)
"""Pronouns that stand for whoever asks or anyone at all: never a content swap."""


def same_root(x: str, y: str) -> bool:
    """Whether two words are forms of one word: the same root of at least three letters,
    each followed by nothing or an inflectional or derivational ending ("use" / "used",
    "invented" / "invention", "happy" / "happiness"; not "pen" / "penguin")."""
    n = 0
    while n < min(len(x), len(y)) and x[n] == y[n]:
        n += 1
    for k in range(n, 2, -1):  # "happ|y" / "happ|iness": try shorter roots too
        rx, ry = x[k:], y[k:]
        if (not rx or rx in SUFFIXES) and (not ry or ry in SUFFIXES):
            return True
    return False


def _one_edit(x: str, y: str) -> bool:
    """Damerau distance at most 1 (a typo: one letter added, dropped, changed or swapped)."""
    if abs(len(x) - len(y)) > 1:
        return False
    i = 0
    while i < min(len(x), len(y)) and x[i] == y[i]:
        i += 1
    return (
        x[i + 1 :] == y[i + 1 :]
        or x[i + 1 :] == y[i:]
        or x[i:] == y[i + 1 :]
        or (x[i : i + 2] == y[i : i + 2][::-1] and x[i + 2 :] == y[i + 2 :])
    )
