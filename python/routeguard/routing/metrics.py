"""Router quality metrics of the RouteLLM paper (Ong et al., arXiv 2406.18665): PGR, APGR, CPT.

Data flow: a router's scores (higher = send to the strong model) and the two models' per-prompt
quality -> prompts sorted by score, best candidates for the strong model first -> the quality of
the mix when the top ``k`` go to the strong model, for every ``k`` (one cumulative sum) ->

- PGR ("performance gap recovered") at a strong-call share: ``(q_mix - q_cheap) /
  (q_strong - q_cheap)``, 0 for all-cheap, 1 for all-strong;
- APGR: the area under PGR over strong-call shares 0%..100% in 10 steps (the paper's
  trapezoid over 11 points); a random router scores about 0.5;
- CPT(x): the least share of strong calls whose PGR reaches ``x`` (lower is better);
- :func:`estimated_apgr`: APGR expected from calibrated probabilities alone (no labels).

Ties among scores are broken by input order (a stable sort), so a constant router behaves like
"the first ``k`` prompts", which on shuffled data is a random router.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike


@dataclass(frozen=True, slots=True)
class Quality:
    """A router's summary on one data set."""

    apgr: float
    cpt50: float
    cpt80: float
    q_cheap: float
    q_strong: float
    n: int

    def as_dict(self) -> dict[str, float]:
        """Plain numbers, for JSON output."""
        return {
            "apgr": self.apgr,
            "cpt50": self.cpt50,
            "cpt80": self.cpt80,
            "q_cheap": self.q_cheap,
            "q_strong": self.q_strong,
            "n": float(self.n),
        }


def _arrays(scores: ArrayLike, cheap: ArrayLike, strong: ArrayLike) -> tuple[F64, F64, F64]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    c = np.asarray(cheap, dtype=np.float64).ravel()
    g = np.asarray(strong, dtype=np.float64).ravel()
    if not (s.shape == c.shape == g.shape) or s.size == 0:
        raise ValueError(
            f"scores, cheap and strong must be non-empty and of one length, "
            f"got {s.size}, {c.size}, {g.size}"
        )
    return s, c, g


def mix_quality(scores: ArrayLike, cheap: ArrayLike, strong: ArrayLike) -> F64:
    """Mean quality when the top ``k`` scores go to the strong model, for ``k = 0..n``
    (``n + 1`` values: all cheap first, all strong last)."""
    s, c, g = _arrays(scores, cheap, strong)
    order = np.argsort(-s, kind="stable")
    gains = np.concatenate(([0.0], np.cumsum(g[order] - c[order])))
    out: F64 = (c.sum() + gains) / s.size
    return out


def pgr(q_mix: ArrayLike, q_cheap: float, q_strong: float) -> F64:
    """Performance gap recovered: ``(q_mix - q_cheap) / (q_strong - q_cheap)``."""
    gap = q_strong - q_cheap
    if gap == 0:
        raise ValueError("the two models have the same mean quality: PGR is undefined")
    out: F64 = (np.asarray(q_mix, dtype=np.float64) - q_cheap) / gap
    return out


def pgr_curve(
    scores: ArrayLike, cheap: ArrayLike, strong: ArrayLike, steps: int = 10
) -> tuple[F64, F64]:
    """PGR at strong-call shares ``0, 1/steps, ..., 1``: ``(shares, pgrs)``. A share maps to
    ``round(share * n)`` strong calls."""
    s, c, g = _arrays(scores, cheap, strong)
    mix = mix_quality(s, c, g)
    shares: F64 = np.linspace(0.0, 1.0, steps + 1)
    ks = np.rint(shares * s.size).astype(np.intp)
    return shares, pgr(mix[ks], float(c.mean()), float(g.mean()))


def apgr(scores: ArrayLike, cheap: ArrayLike, strong: ArrayLike, steps: int = 10) -> float:
    """Average PGR: the trapezoid area under the PGR curve over shares 0..1 in ``steps``."""
    shares, p = pgr_curve(scores, cheap, strong, steps)
    return float(np.sum((p[1:] + p[:-1]) * np.diff(shares)) / 2.0)


def cpt(scores: ArrayLike, cheap: ArrayLike, strong: ArrayLike, target: float) -> float:
    """Call-performance threshold: the least share of strong calls (``k / n``) at which PGR
    reaches ``target`` (e.g. 0.5 for CPT(50%)); 1.0 if only all-strong does."""
    s, c, g = _arrays(scores, cheap, strong)
    p = pgr(mix_quality(s, c, g), float(c.mean()), float(g.mean()))
    reached = np.flatnonzero(p >= target - 1e-12)
    k = int(reached[0]) if reached.size else s.size
    return k / s.size


def quality(scores: ArrayLike, cheap: ArrayLike, strong: ArrayLike) -> Quality:
    """APGR, CPT(50%) and CPT(80%) of one router on one data set."""
    s, c, g = _arrays(scores, cheap, strong)
    return Quality(
        apgr=apgr(s, c, g),
        cpt50=cpt(s, c, g, 0.5),
        cpt80=cpt(s, c, g, 0.8),
        q_cheap=float(c.mean()),
        q_strong=float(g.mean()),
        n=int(s.size),
    )


def estimated_apgr(scores: ArrayLike, p_cheap_ok: ArrayLike) -> float:
    """APGR a router would reach on prompts without outcome labels, from its own calibrated
    P(the cheap answer is as good) per prompt.

    Assumes (1) the probabilities are calibrated on this traffic, (2) the strong answer is never
    worse, and (3) where the cheap answer falls short it falls short by the same amount on every
    prompt, so the expected gain of a strong call is ``1 - p``: the APGR of ``scores`` with cheap
    quality ``p`` and strong quality 1. Equal probabilities give 0.5 whatever the scores (the
    ranking among them is noise by (1)); the more the probabilities spread, the higher. 0.5 when
    every ``p`` is 1 (nothing to gain).
    """
    p = np.clip(np.asarray(p_cheap_ok, dtype=np.float64).ravel(), 0.0, 1.0)
    if p.size and float((1.0 - p).sum()) <= 1e-12:
        return 0.5
    return apgr(scores, p, np.ones_like(p))
