"""EXPERIMENT (not shipped): a learned second look at a close semantic-cache hit, a small
logistic model over pair features. It did not beat the rule verifier on the QQP test split
(see ``benches/cache_verifier_train.py``), so it lives in benches/, outside the package.

:class:`~routeguard.cache.verify.HitVerifier` refuses a hit when one hand-written rule fires.
:class:`LearnedVerifier` turns the same rules into features, adds generic lexical ones (how
much of each text the other leaves unmatched, weighted by how rare each unmatched word is,
length ratio, character overlap) and the cosine of the hit, and weighs them with a model
trained on labelled pairs (``benches/cache_verifier_train.py``). It serves the hit when the
model's probability that the two prompts ask the same thing reaches ``min_probability``.

Data flow: (query, cached prompt, cosine) -> :func:`pair_features` (the rule analyses are
cached per text) -> standardised features -> logistic model -> probability. Word rarity is a
fixed table: a word's frequency rank in the BERT WordPiece vocabulary (general English text,
most frequent first), saved with the weights by ``cache_verifier_train.py --write``; a word
outside it counts as rarest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from difflib import SequenceMatcher
from functools import lru_cache
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from routeguard.cache.lexicon import FILLER, STOP_STEMS
from routeguard.cache.verify import (
    CHECKS,
    Analysis,
    analyse,
    check_entities,
    check_negation,
    check_numbers,
    check_opposites,
    check_qualifiers,
    check_question,
    check_roles,
    check_substitution,
)

RULES: Final = CHECKS  # every rule of the verifier, as a feature each

MISMATCH: Final = (
    "numbers_diff",
    "names_diff",
    "negations_diff",
    "asks_differ",
    "asks_one_sided",
    "opening_differs",
)
"""Counts of what differs between the two texts (the last feature columns)."""

FEATURES: Final = (
    # cosine of the hit, and where it sits in the close-call band
    "cos",
    "cos_hi",
    "cos_lo",
    # the rules of verify.py, each as 0/1 (1 = the rule would refuse)
    *(f"rule_{r}" for r in RULES),
    "rule_numbers_two_sided",
    "rules_fired",
    # lexical overlap of content stems
    "jaccard",
    "unmatched_q",
    "unmatched_c",
    "rare_unmatched_q",
    "rare_unmatched_c",
    "rare_unmatched_max",
    "rare_shared",
    "len_ratio",
    "order_ratio",
    # mismatch counts
    *MISMATCH,
)
"""Feature names, in column order."""

GROUPS: Final = {
    "cosine": ("cos", "cos_hi", "cos_lo"),
    "rules": (*(f"rule_{r}" for r in RULES), "rule_numbers_two_sided", "rules_fired"),
    "overlap": ("jaccard", "unmatched_q", "unmatched_c", "len_ratio", "order_ratio"),
    "rarity": ("rare_unmatched_q", "rare_unmatched_c", "rare_unmatched_max", "rare_shared"),
    "mismatch": MISMATCH,
}
"""Feature groups, for ablations."""


class Rarity:
    """Word rarity in [0, 1] from a frequency-ranked word list (0 = most frequent)."""

    __slots__ = ("_rank", "_scale")

    def __init__(self, words: Sequence[str]) -> None:
        self._rank = {w: i for i, w in enumerate(words)}
        self._scale = math.log(len(words) + 2)

    def __call__(self, word: str) -> float:
        """``log(1 + rank) / log(n + 2)``; 1.0 for a word not in the list."""
        rank = self._rank.get(word)
        return 1.0 if rank is None else math.log(rank + 2) / self._scale


def _content(a: Analysis) -> dict[str, str]:
    """Content stems of a text -> one word written for it."""
    out: dict[str, str] = {}
    for w, s in zip(a.words, a.stems, strict=True):
        if s not in STOP_STEMS and w not in FILLER and s not in out:
            out[s] = w
    return out


@lru_cache(maxsize=16_384)
def _prepared(text: str) -> tuple[Analysis, dict[str, str]]:
    a = analyse(text)
    return a, _content(a)


def pair_features(query: str, cached: str, cosine: float, rarity: Rarity) -> list[float]:
    """The :data:`FEATURES` of serving ``cached``'s answer to ``query`` at ``cosine``."""
    a, ca = _prepared(query)
    b, cb = _prepared(cached)
    rules = [
        check_numbers(a, b) is not None,
        check_negation(a, b) is not None,
        check_question(a, b) is not None,
        check_opposites(a, b) is not None,
        check_qualifiers(a, b) is not None,
        check_roles(a, b) is not None,
        check_entities(a, b) is not None,
        check_substitution(a, b) is not None,
    ]
    two_sided = check_numbers(a, b, one_sided=False) is not None
    sa, sb = ca.keys(), cb.keys()
    only_a, only_b, shared = sa - sb, sb - sa, sa & sb
    union = len(sa | sb)
    rare_a = [rarity(ca[s]) for s in only_a]
    rare_b = [rarity(cb[s]) for s in only_b]
    rare_shared = sum(rarity(ca[s]) for s in shared)
    na, nb = len(a.words), len(b.words)
    names_a, names_b = set(a.names), set(b.names)
    return [
        cosine,
        max(0.0, cosine - 0.9) * 10,
        max(0.0, 0.9 - cosine) * 10,
        *map(float, rules),
        float(two_sided),
        float(sum(rules[:7])),
        len(shared) / union if union else 1.0,
        math.log1p(len(only_a)),
        math.log1p(len(only_b)),
        sum(rare_a),
        sum(rare_b),
        max(rare_a + rare_b, default=0.0),
        math.log1p(rare_shared),
        abs(math.log((na + 1) / (nb + 1))),
        SequenceMatcher(None, a.stems, b.stems, autojunk=False).ratio(),
        float(len(set(a.numbers) ^ set(b.numbers))),
        float(len(names_a ^ names_b)),
        float(abs(len(a.negations) - len(b.negations))),
        float(bool(a.asks and b.asks and not a.asks & b.asks)),
        float(bool(a.asks) != bool(b.asks)),
        float((a.words[:1] or [""])[0] != (b.words[:1] or [""])[0]),
    ]


class LearnedVerifier:
    """A close-call verifier with a learned model: ``verifier.verify(query, cached, score)``
    is True when the model's probability that the two prompts ask the same thing reaches
    ``min_probability`` (the saved operating point unless given).

    :class:`~routeguard.cache.semantic.SemanticCache` passes the hit's cosine to
    :meth:`verify`; called as ``verifier(query, cached)`` (the plain verifier signature) it
    assumes the cosine of the saved operating point's threshold. ``path``: a model file
    written by ``benches/cache_verifier_train.py --write``. ``refused`` counts refusals.
    """

    __slots__ = (
        "_bias",
        "_mean",
        "_scale",
        "_weights",
        "min_probability",
        "rarity",
        "refused",
        "threshold",
    )

    def __init__(self, path: Path, *, min_probability: float | None = None) -> None:
        model = _load(path)
        if tuple(str(f) for f in model["features"]) != FEATURES:
            raise ValueError(
                f"{path}: its features do not match this routeguard version's; "
                "retrain it with benches/cache_verifier_train.py --write"
            )
        self._mean = np.asarray(model["mean"], dtype=np.float64)
        self._scale = 1.0 / np.asarray(model["std"], dtype=np.float64)
        self._weights = np.asarray(model["weights"], dtype=np.float64)
        self._bias = float(model["bias"])
        self.threshold = float(model["threshold"])
        """The cosine threshold the model's operating point was chosen with."""
        chosen = float(model["min_probability"]) if min_probability is None else min_probability
        if not 0.0 <= chosen <= 1.0:
            raise ValueError(f"min_probability must be in [0, 1], got {chosen}")
        self.min_probability = chosen
        self.rarity = Rarity(bytes(model["vocab"]).decode().split("\n"))
        self.refused = 0

    def __repr__(self) -> str:
        return f"LearnedVerifier(min_probability={self.min_probability:.2f})"

    def probability(self, query: str, cached: str, score: float) -> float:
        """The model's probability that ``cached``'s answer serves ``query`` (cosine ``score``)."""
        x = np.asarray(pair_features(query, cached, score, self.rarity))
        z = float(((x - self._mean) * self._scale) @ self._weights) + self._bias
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def verify(self, query: str, cached: str, score: float) -> bool:
        """True when the hit may be served: its probability reaches ``min_probability``."""
        if self.probability(query, cached, score) >= self.min_probability:
            return True
        self.refused += 1
        return False

    def __call__(self, query: str, cached: str) -> bool:
        """:meth:`verify` at the operating point's threshold (no cosine given)."""
        return self.verify(query, cached, self.threshold)


def _load(path: Path) -> dict[str, npt.NDArray[np.generic]]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
