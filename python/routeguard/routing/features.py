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
"""

from __future__ import annotations

from collections.abc import Sequence

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
"""The order of the columns :func:`lexical_features` returns."""

_MATH = frozenset("+-*/=^<>%|\\$∑∫√πθλμσ≤≥≠±÷∞\u00d7")
_CODE = frozenset("{}[]();_#`:")
_LONG_WORD = 12
WINDOW = 4096
"""Characters (from the start) the per-character fractions are measured on."""


def lexical_row(text: str) -> list[float]:
    """The features of one prompt (see :data:`FEATURE_NAMES`)."""
    n = len(text)
    if n == 0:
        return [0.0] * len(FEATURE_NAMES)
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
        float(np.log1p(n)),
        float(np.log1p(nw)),
        float(np.log1p(text.count("\n") + 1)),
        digits / m,
        math / m,
        code / m,
        upper / m,
        long_words / nw if nw else 0.0,
        float(np.log1p(text.count("?"))),
        non_ascii / m,
    ]


def lexical_features(texts: Sequence[str]) -> F64:
    """An ``(len(texts), len(FEATURE_NAMES))`` float64 array of raw features."""
    if not texts:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float64)
    return np.array([lexical_row(t) for t in texts], dtype=np.float64)
