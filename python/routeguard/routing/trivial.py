"""Synthetic trivial prompts: social turns with no task in them, labelled easy for training.

Why: the public outcome sets hold questions and instructions only, so a router trained on them
has never seen "hello" or "thanks!" and scores them wherever the embedding happens to land
(the MMLU-only model put "hi" above a request for a proof). Any model answers a greeting, an
acknowledgement or a farewell as well as any other, so these rows carry the labels "every
model did well" (difficulty 0) and "the strong model gained nothing" (worse = better = 0).

Data flow: small vocabularies of openers, small talk, thanks, acknowledgements and farewells
-> combined by a seeded generator (the same list on every run) -> the positives of a logistic
head "is this a trivial social turn" (:func:`add_trivial_head`), whose negatives are real
prompts and their first few words (so shortness alone does not make a prompt trivial) -> the
head's probability subtracted from the router's score, so a greeting ranks below real asks.
:class:`TrivialHead` does the same inside :func:`routeguard.routing.learned.train` (``router
train``, from outcome files or from the request log), for the final model and every
calibration fold, so a retrained router keeps the default's spread.

The vocabularies are written for this module; the spread test's prompts
(``tests/test_routing_spread.py``) are never used, and a test checks none of them is generated.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from routeguard.embed.base import Embedder
from routeguard.errors import RouteguardError
from routeguard.routing.learned import DEFAULT_L2, F64, LearnedRouter, fit_logistic
from routeguard.routing.outcomes import Outcomes

_OPENERS = (
    "hey",
    "hello",
    "hi there",
    "good day",
    "heya",
    "hullo",
    "well hello",
    "evening",
    "hey hey",
    "sup",
    "oh hi",
    "hello hello",
    "good to see you",
    "hey you",
    "bonjour",
    "hola",
)
_ADDRESSEES = ("", " friend", " buddy", " assistant", " bot", " folks", " pal", " all")
_ENDINGS = ("", "!", ".", " :)", " :D", "!!", "?", " ^^")
_SMALL_TALK = (
    "how are you doing",
    "how's your day been",
    "what's new",
    "how have you been",
    "hope all is well",
    "long time no see",
    "how's everything",
    "how are things",
    "you doing ok",
    "all good with you",
    "how's life",
    "what's happening",
)
_THANKS = (
    "thanks a lot",
    "many thanks",
    "thank you kindly",
    "thx",
    "ty",
    "much appreciated",
    "thanks again",
    "perfect, thanks",
    "awesome, thank you",
    "cool, thanks",
    "got it, thanks",
    "appreciate it",
    "thanks for the help",
    "that's very kind",
)
_ACKNOWLEDGEMENTS = (
    "ok",
    "okay",
    "cool",
    "great",
    "nice",
    "got it",
    "sounds good",
    "sure",
    "alright",
    "perfect",
    "yep",
    "noted",
    "makes sense",
    "fine",
    "lol",
    "haha",
    "wow",
    "awesome",
    "no worries",
    "all right then",
)
_FAREWELLS = (
    "goodbye",
    "bye",
    "see ya",
    "talk soon",
    "take care",
    "catch you later",
    "farewell",
    "have a good one",
    "later",
    "see you tomorrow",
    "good night then",
    "have a great day",
    "until next time",
)


def trivial_prompts(n: int = 400, seed: int = 0) -> list[str]:
    """``n`` distinct social turns (greetings, small talk, thanks, acknowledgements,
    farewells), the same list for the same arguments."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    rng = random.Random(seed)
    out: dict[str, None] = {}
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 100 * (n + 10):
            raise ValueError(f"cannot generate {n} distinct trivial prompts")
        kind = rng.randrange(5)
        if kind == 0:
            text = rng.choice(_OPENERS) + rng.choice(_ADDRESSEES)
            if rng.random() < 0.5:
                text += ", " + rng.choice(_SMALL_TALK) + "?"
            else:
                text += rng.choice(_ENDINGS)
        elif kind == 1:
            text = rng.choice(_SMALL_TALK) + rng.choice(("?", "", " today?", " lately?"))
        elif kind == 2:
            text = rng.choice(_THANKS) + rng.choice(_ENDINGS)
        elif kind == 3:
            text = rng.choice(_ACKNOWLEDGEMENTS) + rng.choice(_ENDINGS)
        else:
            text = rng.choice(_FAREWELLS) + rng.choice(_ADDRESSEES) + rng.choice(_ENDINGS)
        text = text.strip()
        if rng.random() < 0.3:
            text = text[:1].upper() + text[1:]
        out[text] = None
    return list(out)


PREFIX_WORDS = 6
"""Words kept from a real prompt to make a short negative (a terse ask still has a task)."""
POSITIVE_SHARE = 0.1
"""Total weight of the trivial rows, as a share of the real rows' (a prior: trivial is rare)."""


def prefixes(prompts: Sequence[str], words: int = PREFIX_WORDS) -> list[str]:
    """The first ``words`` words of each prompt: short texts that still carry a task."""
    return [" ".join(p.split()[:words]) for p in prompts]


def gain_heads(model: LearnedRouter) -> LearnedRouter:
    """``model``'s first two (p_worse, p_better) heads as a plain two-head model, without
    calibration (a model that already has a trivial head loses it)."""
    meta = {k: v for k, v in model.meta.items() if k not in ("trivial_head", "calibration")}
    return replace(
        model,
        weights=model.weights[:2],
        bias=model.bias[:2],
        head_coef=np.array([1.0, -1.0]),
        meta=meta,
        calibration=None,
    )


def add_trivial_head(
    model: LearnedRouter,
    real: Sequence[str],
    real_vectors: npt.ArrayLike,
    embedder: Embedder,
    *,
    n_trivial: int = 400,
    max_prefixes: int = 3000,
    max_weight: float = 1.0,
) -> LearnedRouter:
    """``model`` with a third head, P(the prompt is a trivial social turn), subtracted from its
    score with a weight equal to the spread of ``model``'s scores on ``real`` (1st to 99th
    percentile): a prompt the head is sure of falls below almost every real one, a real prompt
    (P near 0) keeps its rank. Negatives: the ``real`` prompts and short prefixes of some of
    them; positives: :func:`trivial_prompts`. The weight is capped at ``max_weight`` (the
    gain heads keep ``1 - weight``). Only two-head (gain) models take a head."""
    if len(model.weights) != 2:
        raise RouteguardError("add_trivial_head: expected a two-head (p_worse, p_better) model")
    if not 0.0 < max_weight <= 1.0:
        raise ValueError(f"max_weight must be in (0, 1], got {max_weight}")
    texts = list(real)
    v = np.asarray(real_vectors, dtype=np.float64)
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(texts), min(max_prefixes, len(texts)), replace=False))
    short = prefixes([texts[i] for i in pick])
    easy = trivial_prompts(n_trivial)
    extra = np.asarray(embedder.embed(short + easy), dtype=np.float64)
    all_texts = texts + short + easy
    x = np.hstack([np.vstack([v, extra]), model.lexical_inputs(all_texts)])
    n_neg = len(texts) + len(short)
    y = np.concatenate([np.zeros(n_neg), np.ones(len(easy))])
    w = np.concatenate([np.ones(n_neg), np.full(len(easy), POSITIVE_SHARE * n_neg / len(easy))])
    w_head, b_head = fit_logistic(x, y, DEFAULT_L2, sample_weight=w * (len(w) / w.sum()))
    scores = model.score(texts, v)
    spread = min(float(np.quantile(scores, 0.99) - np.quantile(scores, 0.01)), max_weight)
    keep = 1.0 - spread
    a, b = model.head_coef
    coef = np.array([a * keep, b * keep, -spread])
    if coef[coef < 0].sum() < -1.0:  # a wide-spread model: shrink both so the score stays >= -1
        coef = coef / -coef[coef < 0].sum()
    out = replace(
        model,
        weights=np.vstack([model.weights, w_head]),
        bias=np.append(model.bias, b_head),
        head_coef=coef,
        meta={
            **model.meta,
            "trivial_head": {
                "positives": len(easy),
                "negatives": n_neg,
                "weight": spread,
                "max_weight": max_weight,
                "positive_share": POSITIVE_SHARE,
            },
        },
        calibration=None,  # the score changed: calibrate again
    )
    out.reference = np.quantile(out.score(texts, v), np.linspace(0.0, 1.0, len(model.reference)))
    return out


class _Memo:
    """An embedder that remembers every text it embedded (the trivial prompts and many
    prefixes recur across the calibration folds)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.dim = inner.dim
        self._seen: dict[str, npt.NDArray[np.float32]] = {}

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed the texts not seen before; every row from the memo."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._seen))
        if todo:
            fresh = np.asarray(self.inner.embed(todo), dtype=np.float32)
            self._seen.update(zip(todo, fresh, strict=True))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._seen[t] for t in texts])


TRAINED_MAX_WEIGHT = 0.5
"""The cap on the trivial head's weight in models ``router train`` writes. A small, easily
separated training set (a few dozen logged rows) has a gain-score spread near 1, and the
uncapped rule would then give the head ~0.85 and the gain ~0.15: the head's residual
probability on real prompts (~0.01) would move them by ~6% of the gain range and reorder
close ones. At 0.5 it moves them by ~1%, and a greeting the head is sure of still loses half
the score range. The shipped default's spread (0.387) is under the cap."""


class TrivialHead:
    """The ``extend`` step of :func:`routeguard.routing.learned.train` that gives a trained
    model the trivial-social-turn head (:func:`add_trivial_head`), fitted on the model's own
    training prompts as the shipped default's is fitted on its, with the weight capped at
    ``max_weight``; ``embedder`` embeds the synthetic greetings and the prompts' prefixes
    (the embedder of the training vectors)."""

    def __init__(self, embedder: Embedder, max_weight: float = TRAINED_MAX_WEIGHT) -> None:
        if not 0.0 < max_weight <= 1.0:
            raise ValueError(f"max_weight must be in (0, 1], got {max_weight}")
        self.embedder = _Memo(embedder)
        self.max_weight = max_weight

    def __call__(self, model: LearnedRouter, outcomes: Outcomes, vectors: F64) -> LearnedRouter:
        """``model`` with the trivial head fitted against ``outcomes``' prompts."""
        return add_trivial_head(
            model, outcomes.prompts, vectors, self.embedder, max_weight=self.max_weight
        )


def trivial_extend(off: bool = False) -> TrivialHead | None:
    """The trivial-head step for :func:`routeguard.routing.learned.train` with the default
    MiniLM (the embedder ``router train`` embeds prompts with); None when ``off``
    (``--no-trivial-head``)."""
    if off:
        return None
    from routeguard.embed import default_embedder

    return TrivialHead(default_embedder())
