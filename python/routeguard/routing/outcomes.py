"""Outcome data: how a cheap and a strong model did on each prompt, the learned router's labels.

Data flow: a file (a user's JSON lines, or RouteLLM's per-subject MMLU CSVs) -> :class:`Outcomes`
(prompts, one quality score per model in ``[0, 1]``, an optional group such as the subject) ->
the learned router trains on ``cheap_worse`` (strong scored higher than cheap) and the metrics
score a router's ranking against ``cheap``/``strong``.

Splits are made by hashing, never by position, so the same prompt (or group) lands on the same
side whatever the file order: :func:`holdout_mask` for a random held-out share of prompts,
:func:`group_holdout_mask` for a held-out share of groups (train on some subjects, test on
others, a proxy for prompts of a kind the router never saw).

JSON lines accept ``{"prompt", "cheap_ok", "strong_ok"}`` (booleans) or
``{"prompt", "cheap_score", "strong_score"}`` (numbers, any scale the two share), plus an
optional ``"group"``. Sets judged over many models (:mod:`routeguard.routing.datasets`) also
carry soft labels, ``worse``/``better``: the share of cheaper models that did worse (better)
than the strong one on the prompt, which the trainer uses instead of the one pair's 0/1.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from routeguard.errors import RouteguardError

F64 = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]

ROUTELLM_WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
ROUTELLM_STRONG = "gpt-4-1106-preview"


@dataclass(frozen=True)
class Outcomes:
    """Per-prompt quality of a cheap and a strong model (higher is better)."""

    prompts: list[str]
    cheap: F64
    strong: F64
    groups: list[str]
    worse: F64 | None = None  # soft labels in [0, 1]; None = the pair's own 0/1
    better: F64 | None = None

    def __post_init__(self) -> None:
        n = len(self.prompts)
        if not (len(self.cheap) == len(self.strong) == len(self.groups) == n):
            raise ValueError("prompts, cheap, strong and groups must have the same length")
        for soft in (self.worse, self.better):
            if soft is not None and len(soft) != n:
                raise ValueError("soft labels must have one value per prompt")

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def cheap_worse(self) -> F64:
        """1.0 where the strong model scored higher than the cheap one, else 0.0: the label
        the learned router predicts the probability of."""
        return (self.strong > self.cheap).astype(np.float64)

    @property
    def worse_target(self) -> F64:
        """The trainer's target for P(cheap worse): the soft label, else :attr:`cheap_worse`."""
        return self.cheap_worse if self.worse is None else self.worse

    @property
    def better_target(self) -> F64:
        """The trainer's target for P(cheap better): the soft label, else the pair's 0/1."""
        if self.better is None:
            return (self.cheap > self.strong).astype(np.float64)
        return self.better

    @property
    def ok_target(self) -> F64:
        """Whether the cheap answer was as good as the strong one's (``1 - worse_target``):
        the outcome the router's probability (:mod:`routeguard.routing.probability`) predicts."""
        out: F64 = 1.0 - self.worse_target
        return out

    def subset(self, mask: Mask | npt.NDArray[np.intp]) -> Outcomes:
        """The rows a boolean mask (or an index array) selects."""
        idx = np.flatnonzero(mask) if mask.dtype == np.bool_ else mask
        return Outcomes(
            prompts=[self.prompts[i] for i in idx],
            cheap=self.cheap[idx],
            strong=self.strong[idx],
            groups=[self.groups[i] for i in idx],
            worse=None if self.worse is None else self.worse[idx],
            better=None if self.better is None else self.better[idx],
        )

    @classmethod
    def concat(cls, parts: Sequence[Outcomes]) -> Outcomes:
        """One set of the rows of ``parts`` in order (soft labels where a part has none are
        its pair's 0/1)."""
        if not parts:
            raise ValueError("concat needs at least one part")
        soft = any(p.worse is not None or p.better is not None for p in parts)
        return cls(
            prompts=[t for p in parts for t in p.prompts],
            cheap=np.concatenate([p.cheap for p in parts]),
            strong=np.concatenate([p.strong for p in parts]),
            groups=[g for p in parts for g in p.groups],
            worse=np.concatenate([p.worse_target for p in parts]) if soft else None,
            better=np.concatenate([p.better_target for p in parts]) if soft else None,
        )

    @classmethod
    def from_records(
        cls, records: Iterable[Mapping[str, Any]], source: str = "<records>"
    ) -> Outcomes:
        """Build from dicts with ``prompt`` and either ``cheap_ok``/``strong_ok`` or
        ``cheap_score``/``strong_score`` (and an optional ``group``)."""
        prompts: list[str] = []
        cheap: list[float] = []
        strong: list[float] = []
        groups: list[str] = []
        for i, r in enumerate(records, 1):
            where = f"{source}: record {i}"
            prompt = r.get("prompt")
            if not isinstance(prompt, str):
                raise RouteguardError(f"{where}: 'prompt' must be a string")
            c, s = _pair(r, where)
            prompts.append(prompt)
            cheap.append(c)
            strong.append(s)
            g = r.get("group", "")
            groups.append(str(g))
        if not prompts:
            raise RouteguardError(f"{source}: no outcome records")
        return cls(prompts, np.array(cheap), np.array(strong), groups)


def _pair(r: Mapping[str, Any], where: str) -> tuple[float, float]:
    if "cheap_ok" in r or "strong_ok" in r:
        keys, flags = ("cheap_ok", "strong_ok"), True
    elif "cheap_score" in r or "strong_score" in r:
        keys, flags = ("cheap_score", "strong_score"), False
    else:
        raise RouteguardError(
            f"{where}: expected 'cheap_ok' and 'strong_ok' (booleans) "
            "or 'cheap_score' and 'strong_score' (numbers)"
        )
    out = []
    for k in keys:
        v = r.get(k)
        is_bool = isinstance(v, bool)
        if is_bool != flags or not isinstance(v, int | float):
            want = "a boolean" if flags else "a number"
            raise RouteguardError(f"{where}: '{k}' must be {want}, got {v!r}")
        out.append(float(v))
    return out[0], out[1]


def read_jsonl(path: str | Path) -> Outcomes:
    """Outcomes from a JSON-lines file (one record per line; blank lines skipped)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise RouteguardError(f"cannot read outcomes file {p}: {exc.strerror}") from None
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RouteguardError(f"{p}:{n}: not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise RouteguardError(f"{p}:{n}: expected a JSON object per line")
        records.append(rec)
    return Outcomes.from_records(records, source=str(p))


def read_routellm_mmlu(directory: str | Path) -> Outcomes:
    """RouteLLM's MMLU outcomes: every ``mmlu_<subject>.csv`` in ``directory`` (weak model =
    Mixtral-8x7B, strong = GPT-4), grouped by subject, without the prompts listed in
    ``contaminated_prompts.jsonl`` (as the RouteLLM evaluation drops them)."""
    d = Path(directory)
    files = sorted(d.glob("mmlu_*.csv"))
    if not files:
        raise RouteguardError(f"{d}: no mmlu_*.csv files (expected RouteLLM's MMLU outcomes)")
    contaminated: set[str] = set()
    cfile = d / "contaminated_prompts.jsonl"
    if cfile.is_file():
        for line in cfile.read_text(encoding="utf-8").splitlines():
            if line.strip():
                contaminated.add(json.loads(line)["eval_prompt"])
    records: list[dict[str, Any]] = []
    for f in files:
        subject = f.stem.removeprefix("mmlu_")
        with f.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if row["prompt"] in contaminated:
                    continue
                records.append(
                    {
                        "prompt": row["prompt"],
                        "cheap_ok": row[ROUTELLM_WEAK] == "True",
                        "strong_ok": row[ROUTELLM_STRONG] == "True",
                        "group": subject,
                    }
                )
    return Outcomes.from_records(records, source=str(d))


def read_outcomes(path: str | Path) -> Outcomes:
    """A JSON-lines file, or a directory of RouteLLM MMLU CSVs."""
    return read_routellm_mmlu(path) if Path(path).is_dir() else read_jsonl(path)


def suspect_groups(outcomes: Outcomes, margin: float = 0.1, min_rows: int = 30) -> list[str]:
    """Groups where the strong model averages ``margin`` below the cheap one (over at least
    ``min_rows`` rows): more likely broken grading than a real skill gap, and poison for a
    router that should generalise. In RouteLLM's MMLU, ``high_school_mathematics`` (GPT-4
    right on 3% of questions, Mixtral on 32%) is the one such subject."""
    groups = np.array(outcomes.groups)
    out = []
    for g in sorted(set(outcomes.groups)):
        rows = groups == g
        big = bool(g) and rows.sum() >= min_rows
        if big and outcomes.strong[rows].mean() < outcomes.cheap[rows].mean() - margin:
            out.append(g)
    return out


def unit_hash(text: str, salt: str = "routeguard") -> float:
    """A stable number in ``[0, 1)`` for ``text``: what the hash splits compare."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=salt.encode()).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def holdout_mask(prompts: Sequence[str], fraction: float, salt: str = "routeguard") -> Mask:
    """True for the prompts in the held-out share (about ``fraction`` of them, by hash)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    return np.array([unit_hash(p, salt) < fraction for p in prompts], dtype=np.bool_)


def group_holdout_mask(groups: Sequence[str], fraction: float, salt: str = "routeguard") -> Mask:
    """True for the rows whose group is held out (about ``fraction`` of the groups, by hash)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    held = {g for g in set(groups) if unit_hash("group:" + g, salt) < fraction}
    return np.array([g in held for g in groups], dtype=np.bool_)
