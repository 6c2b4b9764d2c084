"""Tool names as the policy compares them: one canonical spelling, look-alikes refused.

A deny on ``send_email`` must also stop ``SEND_EMAIL``, the name in fullwidth letters, and the
name with a zero-width space inside. Data flow: the loader (``enforce/policy.py``) passes every
rule's tool globs through :func:`normalize_tool` and refuses a glob that mixes scripts;
``PolicyEngine.decide`` and the reference interpreter do the same to the called name before
any rule sees it, and refuse a call whose name mixes scripts (``send_email`` spelt with a
Cyrillic ``i``) as ``decision.TOOL_NAME_RULE_ID``. Canonical means: invisible characters
removed (format and control characters, whitespace, default-ignorable fillers, variation
selectors), NFKC, case folded. A name may use one script, or Latin with the Han-based
combinations of Unicode's "highly restrictive" level (UTS #39): Japanese, Chinese, Korean.
"""

from __future__ import annotations

import unicodedata

__all__ = ["mixed_scripts", "normalize_tool", "tool_name_problem"]

# Default-ignorable code points that are not format (Cf) characters: they render as nothing.
_IGNORABLE = frozenset(
    [
        *(0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0, 0x2800),
        *range(0x180B, 0x1810),
        *range(0xFE00, 0xFE10),
        *range(0xE0100, 0xE01F0),
    ]
)
# Scripts that may share a name: UTS #39 "highly restrictive" (plus the scripts every
# Japanese, Chinese or Korean name mixes with Latin).
_ALLOWED_MIXES = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)
# The first word of a character name that is not its script.
_SCRIPT_ALIASES = {"CJK": "HAN", "IDEOGRAPHIC": "HAN", "KATAKANA-HIRAGANA": "KATAKANA"}


def _visible(text: str) -> str:
    """``text`` without the characters that render as nothing (or as blank space)."""
    return "".join(
        c
        for c in text
        if not (c.isspace() or unicodedata.category(c) in ("Cf", "Cc") or ord(c) in _IGNORABLE)
    )


def normalize_tool(name: str) -> str:
    """The canonical spelling of a tool name (or tool glob): invisible characters removed,
    NFKC, case folded."""
    if name.isascii() and name.isprintable() and " " not in name:
        return name.lower()  # the common case: already NFKC, nothing invisible
    folded = unicodedata.normalize("NFKC", _visible(name)).casefold()
    return _visible(unicodedata.normalize("NFKC", folded))


def _script(c: str) -> str | None:
    """The script of a letter or digit, from its Unicode name; None for common characters."""
    cat = unicodedata.category(c)
    if not (cat.startswith("L") or cat in ("Nd", "Nl", "No")):
        return None  # punctuation, symbols, marks (inherit their base): no script of their own
    name = unicodedata.name(c, "")
    if not name or name.startswith(("DIGIT ", "MODIFIER LETTER ")):
        return None
    word = name.split(" ", 1)[0]
    return _SCRIPT_ALIASES.get(word, word)


def mixed_scripts(text: str) -> tuple[str, ...]:
    """The scripts ``text`` mixes, sorted, when the mix is not one a real name uses; else ()."""
    if text.isascii():
        return ()
    scripts = {s for c in text if (s := _script(c)) is not None}
    if len(scripts) <= 1 or any(scripts <= allowed for allowed in _ALLOWED_MIXES):
        return ()
    return tuple(sorted(scripts))


def tool_name_problem(name: str) -> str | None:
    """Why the (normalised) tool name ``name`` is refused, or None when it is acceptable."""
    scripts = mixed_scripts(name)
    if not scripts:
        return None
    return (
        f"tool name {name!a} mixes scripts ({', '.join(s.title() for s in scripts)}); "
        "refused as a possible look-alike of another tool"
    )
