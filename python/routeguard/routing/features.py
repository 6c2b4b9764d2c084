"""Cheap lexical features of a prompt, the learned router's complement to the embedding.

Data flow: prompt text -> a handful of counts that hint at how hard a prompt is whatever its
task family (length, digits and math symbols, code punctuation, long words, questions) ->
squashed with ``log1p`` or kept as fractions in ``[0, 1]``, so no feature grows without bound
-> the learned model standardises them with the training set's mean and spread and clips them
to the training range, so a prompt unlike any seen in training (a long code file, a table of
numbers) cannot push the score past what training supports.

Counts of characters, words, lines and question marks cover the whole prompt (C-speed string
methods); the per-character fractions look at its first :data:`WINDOW` characters only, so a
long document costs at most a few hundred microseconds (a chat-sized prompt about ten).

Structural features (:data:`STRUCTURE_NAMES`, appended after the lexical ones) name what makes a
request hard in any family: a code block or a request to write code, maths markup, a request to
prove / solve / derive, numbered or bulleted steps, and how many sentences and numbers it holds.
They are regexes over the same window. A model records the feature names it was trained with
and reads only those columns, so models trained before these existed still load.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from math import log1p

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "log_lines",
    "digit_frac",
    "math_frac",
    "code_frac",
    "upper_frac",
    "long_word_frac",
    "log_questions",
    "non_ascii_frac",
)
"""The lexical features, the first columns :func:`lexical_features` returns."""

STRUCTURE_NAMES: tuple[str, ...] = (
    "code_block",
    "code_ask",
    "math_markup",
    "solve_ask",
    "log_list_items",
    "log_sentences",
    "log_numbers",
)
"""The structural features, the columns after :data:`FEATURE_NAMES`."""

ALL_FEATURES: tuple[str, ...] = FEATURE_NAMES + STRUCTURE_NAMES
"""Every column :func:`lexical_features` returns, in order."""

_MATH = frozenset("+-*/=^<>%|\\$∑∫√πθλμσ≤≥≠±÷∞\u00d7")
_CODE = frozenset("{}[]();_#`:")
_LONG_WORD = 12
_CODE_BLOCK = re.compile(
    r"```|^(?:    |\t)\S|^\s*(?:def|class|fn|func|function|public|#include)\b", re.M
)
_CODE_ASK = re.compile(
    r"\b(?:write|implement|code|refactor|debug|optimi[sz]e|fix)\b[^.?!\n]{0,60}?"
    r"\b(?:function|program|script|class|method|code|query|algorithm|parser|api|bug|test)s?\b",
    re.I,
)
_MATH_MARKUP = re.compile(r"\$[^$\n]+\$|\\[a-zA-Z]+|\^|[∑∫√≤≥≠±∞]|\b(?:sqrt|log|sin|cos|lim)\b")
_SOLVE_ASK = re.compile(
    r"\b(?:prove|proof|show that|derive|solve|integrate|differentiate|compute|calculate|"
    r"evaluate|simplify|find all|determine)\b",
    re.I,
)
_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*•]|[a-z][.)])\s", re.M)
_SENTENCE_END = re.compile(r"[.?!](?:\s|$)")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
WINDOW = 4096
"""Characters (from the start) the per-character fractions are measured on."""


def lexical_row(text: str) -> list[float]:
    """The features of one prompt (see :data:`ALL_FEATURES`)."""
    n = len(text)
    if n == 0:
        return [0.0] * len(ALL_FEATURES)
    words = text.split()
    nw = len(words)
    head = text[:WINDOW]
    digits = math = code = upper = non_ascii = 0
    for ch in head:
        if ch.isdigit():
            digits += 1
        elif ch in _MATH:
            math += 1
        elif ch in _CODE:
            code += 1
        elif ch.isupper():
            upper += 1
        if ord(ch) > 127:
            non_ascii += 1
    long_words = sum(1 for w in words if len(w) >= _LONG_WORD)
    m = len(head)
    return [
        float(log1p(n)),
        float(log1p(nw)),
        float(log1p(text.count("\n") + 1)),
        digits / m,
        math / m,
        code / m,
        upper / m,
        long_words / nw if nw else 0.0,
        float(log1p(text.count("?"))),
        non_ascii / m,
        *structure_row(head),
    ]


def structure_row(head: str) -> list[float]:
    """The structural features of a prompt's first :data:`WINDOW` characters."""
    return [
        1.0 if _CODE_BLOCK.search(head) else 0.0,
        1.0 if _CODE_ASK.search(head) else 0.0,
        float(log1p(len(_MATH_MARKUP.findall(head)))),
        1.0 if _SOLVE_ASK.search(head) else 0.0,
        float(log1p(len(_LIST_ITEM.findall(head)))),
        float(log1p(len(_SENTENCE_END.findall(head)))),
        float(log1p(len(_NUMBER.findall(head)))),
    ]


def lexical_features(texts: Sequence[str]) -> F64:
    """An ``(len(texts), len(ALL_FEATURES))`` float64 array of raw features."""
    if not texts:
        return np.zeros((0, len(ALL_FEATURES)), dtype=np.float64)
    return np.array([lexical_row(t) for t in texts], dtype=np.float64)
