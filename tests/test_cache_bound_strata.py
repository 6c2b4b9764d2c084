"""The wrong-hit bound's strata: a candidate that stands well above its nearest rival (an
entry holding another answer) is judged on the evidence of such candidates, a crowded one on
its own, each with its own threshold; decisions carry their stratum to the evidence, the
route's bound is the worst serving stratum's, and the semantic tier measures the margin
against rivals only (a paraphrase holding the same answer is no rival)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from embedders import WordsEmbedder
from routeguard.cache.bound import MARGIN_CUT, STRATA, Decision, ErrorBound, stratum_of
from routeguard.cache.semantic import SemanticCache


def _answer(text: str) -> dict[str, object]:
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


def test_stratum_of_a_margin() -> None:
    assert STRATA[stratum_of(MARGIN_CUT)] == "clear"
    assert STRATA[stratum_of(None)] == "clear"
    assert STRATA[stratum_of(MARGIN_CUT / 2)] == "crowded"


def test_clear_candidates_are_served_where_crowded_ones_are_not() -> None:
    """Clear candidates are right, crowded ones wrong one time in three at every similarity:
    the clear stratum certifies a threshold, the crowded one never does, and what is served
    is clear (so right)."""
    rng = random.Random(11)
    eb = ErrorBound(0.05, rng=random.Random(2))
    served = served_wrong = 0
    for _ in range(6000):
        s = rng.uniform(0.85, 1.0)
        clear = rng.random() < 0.5
        margin = MARGIN_CUT * (2 if clear else 0.5)
        wrong = (not clear) and rng.random() < 1 / 3
        d = eb.decide(s, margin)
        assert STRATA[d.stratum] == ("clear" if clear else "crowded")
        if d.serve:
            served += 1
            served_wrong += wrong
        elif d.compare:
            eb.record(s, wrong, d)
    est = eb.estimate(fresh=True)
    clear_t, crowded_t = est.thresholds
    assert clear_t is not None and clear_t <= 0.86 + 1e-9
    assert crowded_t is None
    assert est.threshold == clear_t
    assert served > 1000 and served_wrong == 0
    assert est.bound == pytest.approx(est.bounds[0]) and est.bound < 0.05


def test_evidence_goes_to_the_decisions_stratum() -> None:
    eb = ErrorBound(0.1)
    eb.record(0.95, True, Decision(False, False, True, 1.0, stratum=1))
    ev = eb.evidence.values
    assert any(k.startswith("s1.") for k in ev) and not any(k.startswith("s0.") for k in ev)


def test_the_margin_is_measured_against_entries_with_another_answer() -> None:
    cache = SemanticCache(WordsEmbedder(), verifier=None)
    words = "alpha bravo charlie delta echo foxtrot golf hotel"
    cache.put(words + " india", _answer("one"))
    cache.put(words + " juliet", _answer("one"))  # a paraphrase with the same answer
    cache.put(words + " kilo lima", _answer("two"))  # a rival, farther away
    query = words + " india"
    vec = cache.embedder.embed([query])[0]
    seen: list[tuple[float, float | None]] = []

    def decide(score: float, margin: float | None) -> Decision:
        seen.append((score, margin))
        return Decision(False, False, False, 1.0)

    cache.probe(query + " please", "default", None, vec, decide)
    [(score, margin)] = seen
    sims = cache.embedder.embed([words + " juliet", words + " kilo lima"]) @ vec
    assert margin is not None
    assert margin == pytest.approx(score - float(sims[1]), abs=1e-5)  # not the paraphrase
    assert float(sims[0]) > float(sims[1])  # which is nearer than the rival
    assert np.isfinite(margin)
