"""Readers of public outcome sets judged over many models, as :class:`Outcomes`.

Data flow: a directory under ``shared/data/routing`` -> one row per prompt with a cheap and a
strong quality (what the metrics score a ranking against) and soft labels (what the trainer
fits: the share of the set's cheaper models that did worse / better than its strong one) ->
a group naming the set and, for ``llmrouter``, the task family.

- **AlpacaEval** (``alpacaeval/preferences.jsonl``, Apache-2.0): 803 open-ended instructions,
  each of 11 models' answers judged against GPT-4-Turbo's (``1`` = GPT-4-Turbo preferred,
  ``2`` = the other model, ``1.5`` = a tie). Strong = GPT-4-Turbo, cheap = Mixtral-8x7B (the
  GPT-4 vs Mixtral pair of RouteLLM's MMLU data): cheap quality 1 / 0.5 / 0 when Mixtral
  wins / ties / loses, strong quality one minus that. Soft labels over all 11 models.
- **llmrouter** (``llmrouter/{train,test}.jsonl``, MIT): 5,768 questions, 9 open models each
  scored in ``[0, 1]``. Strong = the best model overall (Llama-3.1-Nemotron-51B), cheap = the
  mean of the other 8 (a cheaper model picked at random), so ``strong - cheap`` is exactly
  ``worse - better`` for 0/1 scores. The files have no task field (``cluster_id`` mixes tasks),
  so :func:`llmrouter_family` derives one from each source's fixed prompt format.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from routeguard.errors import RouteguardError
from routeguard.routing.outcomes import Outcomes

ALPACA_STRONG = "gpt-4-1106-preview"
ALPACA_CHEAP = "Mixtral-8x7B-Instruct-v0.1"
LLMROUTER_STRONG = "llama-3.1-nemotron-51b-instruct"
LLMROUTER_FAMILIES = ("code", "maths", "reasoning", "knowledge")

_CODE = re.compile(r"^\s*(?:def |from \w+ import |import )|^Write a (?:python )?function", re.I)
_PUZZLE = re.compile(r"^Q: There are \d+ houses")
_WORD_LIST = re.compile(r"^(?:[\w-]+, ){8,}")
_LATEX = re.compile(r"\$|\\\[|\\frac|\\begin")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_QUANTITY_ASK = re.compile(
    r"\b(?:how (?:many|much|long|far|old)|what is the (?:total|cost|price|average))", re.I
)
_WORD_PROBLEM_CHARS = 700  # GSM8K-style problems are short; longer texts are reading passages


def llmrouter_family(prompt: str) -> str:
    """The task family of an llmrouter prompt, from its source's format: ``code`` (MBPP's
    "Write a function", HumanEval's signatures), ``reasoning`` (zebra puzzles, word-list
    sorting), ``maths`` (LaTeX, or a short word problem asking for a quantity), else
    ``knowledge`` (open-domain, science and commonsense questions, reading passages)."""
    if _CODE.search(prompt):
        return "code"
    if _PUZZLE.search(prompt) or _WORD_LIST.search(prompt):
        return "reasoning"
    if _LATEX.search(prompt):
        return "maths"
    short = len(prompt) <= _WORD_PROBLEM_CHARS
    if short and len(_NUMBER.findall(prompt)) >= 2 and _QUANTITY_ASK.search(prompt):
        return "maths"
    return "knowledge"


def _jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        # split on "\n" only: str.splitlines also breaks at U+2028 inside JSON strings
        lines = path.read_text(encoding="utf-8").split("\n")
    except OSError as exc:
        raise RouteguardError(f"cannot read outcomes file {path}: {exc.strerror}") from None
    return [json.loads(line) for line in lines if line.strip()]


def read_alpacaeval(directory: str | Path, cheap: str = ALPACA_CHEAP) -> Outcomes:
    """AlpacaEval preferences: strong = GPT-4-Turbo, cheap = ``cheap``; soft labels over all
    judged models; groups ``alpacaeval/<source>``."""
    path = Path(directory) / "preferences.jsonl"
    prompts: list[str] = []
    cheap_q: list[float] = []
    worse: list[float] = []
    better: list[float] = []
    groups: list[str] = []
    for i, rec in enumerate(_jsonl(path), 1):
        prefs = {k: v for k, v in rec["preference_vs_gpt4_1106_preview"].items() if v is not None}
        if cheap not in prefs:
            raise RouteguardError(f"{path}: record {i} has no preference for {cheap!r}")
        wins = {k: float(v) - 1.0 for k, v in prefs.items()}  # 0 lose, 0.5 tie, 1 win
        prompts.append(rec["prompt"])
        cheap_q.append(wins[cheap])
        worse.append(float(np.mean([w == 0.0 for w in wins.values()])))
        better.append(float(np.mean([w == 1.0 for w in wins.values()])))
        groups.append(f"alpacaeval/{rec.get('dataset', '')}")
    c = np.array(cheap_q)
    return Outcomes(prompts, c, 1.0 - c, groups, worse=np.array(worse), better=np.array(better))


def read_llmrouter(directory: str | Path, strong: str = LLMROUTER_STRONG) -> Outcomes:
    """llmrouter's train then test files: strong = ``strong``, cheap = the mean of the other
    models; soft labels over the other models; groups ``llmrouter/<family>``."""
    d = Path(directory)
    prompts: list[str] = []
    cheap_q: list[float] = []
    strong_q: list[float] = []
    worse: list[float] = []
    better: list[float] = []
    for name in ("train.jsonl", "test.jsonl"):
        for i, rec in enumerate(_jsonl(d / name), 1):
            scores = {k: float(v) for k, v in rec["scores"].items()}
            if strong not in scores:
                raise RouteguardError(f"{d / name}: record {i} has no score for {strong!r}")
            top = scores.pop(strong)
            others = np.array(list(scores.values()))
            prompts.append(rec["prompt"])
            strong_q.append(top)
            cheap_q.append(float(others.mean()))
            worse.append(float((others < top).mean()))
            better.append(float((others > top).mean()))
    groups = [f"llmrouter/{llmrouter_family(p)}" for p in prompts]
    return Outcomes(
        prompts,
        np.array(cheap_q),
        np.array(strong_q),
        groups,
        worse=np.array(worse),
        better=np.array(better),
    )
