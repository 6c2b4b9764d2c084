"""Deterministic content of the simulated upstream: token counts, answers, tool calls, vectors.

Each wire format parses its request into one neutral :class:`Prompt`; :func:`answer` turns it
into an :class:`Answer` (text split into tokens, or one tool call) that the format renders
back. Nothing here depends on time, randomness or the process: the same prompt always gets
the same answer, in every format, with the same token counts.

Counting rules (the same in all three formats):

- prompt tokens: ceil(total characters / 4) over every text piece of the request (system,
  message text, tool-call names and arguments, tool results, tool names, descriptions and
  JSON schemas), at least 1;
- completion tokens: the number of stream pieces. A text answer is
  ``"Simulated answer from {model}: "`` followed by 8..20 words picked by a hash of the last
  user message, each word one token; after a tool result the answer quotes it instead.
  ``max_tokens`` truncates the pieces (finish ``length``). A tool call counts
  1 + ceil(len(arguments JSON) / 4) tokens and is never truncated;
- JSON output (OpenAI ``response_format``, Gemini ``responseMimeType``): the minimal instance
  of the schema (:mod:`routeguard.mock.instances`), or ``{"answer": <the usual text>}`` for
  any JSON object, in 4-character pieces of one token each; ``max_tokens`` cuts it too.

A model whose name holds the token ``judge`` (``sim-judge``) is a deterministic judge for
shadow checks (:mod:`routeguard.routing.shadow`): it answers one word, ``B`` (the second answer
is better) when the ``[Question]`` section of the last user message contains one of
:data:`JUDGE_HARD_WORDS` (proofs, derivations, code) and ``TIE`` otherwise. The simulated
answers carry no meaning, so the question is all it can judge by: a stand-in for "the strong
model does better on proofs and code", which tests can then teach a router. Asked the cache
judge's question (two answers, "SAME or DIFFERENT"), it compares the two answers' texts
(case and spacing folded).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from routeguard.mock.instances import schema_instance

_encoder = msgspec.json.Encoder(order="deterministic")

_WORDS = tuple(
    " ".join(
        (
            "alpha bravo cobalt delta ember falcon garnet harbor indigo juniper kestrel lantern",
            "meadow nimbus orchid pebble quartz raven saffron timber umber velvet willow xenon",
            "yarrow zephyr amber birch cedar dune fjord glacier hollow island jasper kelp lagoon",
            "maple nectar ocean prairie quill ridge summit tundra upland valley wharf yonder",
            "zenith acorn beacon canyon drift estuary fern grove heath inlet",
        )
    ).split()
)


def count_tokens(chars: int) -> int:
    """Tokens for a text of ``chars`` characters (the ~4 characters per token rule)."""
    return max(1, (chars + 3) // 4)


def schema_text(schema: Any) -> str:
    """A JSON schema (or any JSON value) as compact, key-sorted text, for token counting."""
    return _encoder.encode(schema).decode()


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the client offers: name and JSON schema of its arguments."""

    name: str
    schema: Any


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The last message, when it returns a tool's result: the tool's name and the result text."""

    name: str
    content: str


ToolMode = Literal["auto", "none", "any"]


@dataclass(frozen=True, slots=True)
class JsonOutput:
    """The answer must be JSON: any object (``schema`` None: OpenAI ``json_object``), or an
    instance of ``schema`` (``json_schema``, Gemini ``responseJsonSchema``)."""

    schema: Any = None


@dataclass(slots=True)
class Prompt:
    """The neutral view of a chat request that every wire format parses into."""

    model: str
    prompt_tokens: int
    last_user_text: str = ""
    tool_result: ToolResult | None = None
    tools: list[Tool] = field(default_factory=list)
    tool_mode: ToolMode = "auto"
    # A tool the client forces (OpenAI/Anthropic tool_choice, Gemini allowedFunctionNames).
    forced_tool: str | None = None
    max_tokens: int | None = None
    stream: bool = False
    json_output: JsonOutput | None = None
    # Token log probabilities asked for (Gemini responseLogprobs): the top alternatives per
    # token (0: the chosen token's only); None when not asked.
    logprobs: int | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call of a client tool, with arguments built from its schema."""

    call_id: str
    name: str
    arguments: Any
    arguments_json: str
    # The arguments JSON cut into the pieces a stream sends (4 characters each).
    pieces: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Answer:
    """What the model says: text pieces (one token each) or a tool call, and why it stopped."""

    pieces: tuple[str, ...] = ()
    tool_call: ToolCall | None = None
    # "stop" (natural end), "length" (max_tokens hit) or "tool" (a tool call).
    finish: Literal["stop", "length", "tool"] = "stop"

    @property
    def text(self) -> str:
        """The answer's text ("" for a tool call)."""
        return "".join(self.pieces)

    @property
    def streamed(self) -> tuple[str, ...]:
        """What a stream sends one content frame each: the text's pieces, or the tool call's
        argument pieces."""
        return self.pieces if self.tool_call is None else self.tool_call.pieces

    @property
    def completion_tokens(self) -> int:
        """Tokens of the answer, as reported in usage."""
        if self.tool_call is not None:
            return 1 + count_tokens(len(self.tool_call.arguments_json))
        return len(self.pieces)


_PREFIX = os.urandom(4).hex()
_counter = itertools.count(1)


def new_id(prefix: str, width: int = 24) -> str:
    """A response/tool-call id unique within the process (not part of the deterministic output)."""
    return f"{prefix}{_PREFIX}{next(_counter):0{width - len(_PREFIX)}x}"


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def answer(
    prompt: Prompt, choice: int = 0, *, tool_id_prefix: str = "call_", meaning: str | None = None
) -> Answer:
    """The deterministic answer to ``prompt`` (``choice`` > 0 varies the words for OpenAI
    ``n``); ``meaning`` (a cluster key, :mod:`routeguard.mock.meanings`) replaces the last
    user text as what picks the words, so every question of one cluster gets one answer."""
    tool = _tool_to_call(prompt)
    if tool is not None:
        args = schema_instance(tool.schema)
        if not isinstance(args, dict):
            args = {}
        text = schema_text(args)
        pieces = tuple(text[i : i + 4] for i in range(0, len(text), 4))
        call = ToolCall(new_id(tool_id_prefix), tool.name, args, text, pieces)
        return Answer(tool_call=call, finish="tool")
    verdict = _judge_verdict(prompt)
    if verdict is not None:
        return Answer(pieces=(verdict,))
    head = f"Simulated answer from {prompt.model}:"
    words = _words(prompt, choice, meaning)
    if prompt.json_output is not None:
        return _json_answer(prompt, words, head)
    pieces = (head, *(" " + w for w in words))
    return _limited(prompt, pieces)


def _words(prompt: Prompt, choice: int, meaning: str | None = None) -> list[str]:
    """The answer's words: a tool result quoted, else words picked by the last user text
    (or by its meaning's cluster key)."""
    if prompt.tool_result is not None:
        result = " ".join(prompt.tool_result.content.split())[:200] or "nothing"
        words = [f"the tool {prompt.tool_result.name} returned", *result.split(" ")]
    else:
        picked = prompt.last_user_text if meaning is None else f"\x01meaning\x00{meaning}"
        seed = f"{choice}\x00{picked}".encode()
        h = hashlib.blake2b(seed, digest_size=32).digest()
        words = [_WORDS[b % len(_WORDS)] for b in h[: 8 + h[31] % 13]]
    words[-1] += "."
    return words


def _json_answer(prompt: Prompt, words: list[str], head: str) -> Answer:
    """JSON text in 4-character pieces (a token each): the schema's minimal instance, or
    ``{"answer": ...}`` with the usual words for a bare JSON object."""
    out = prompt.json_output
    assert out is not None
    if out.schema is None:
        value: Any = {"answer": " ".join([head, *words])}
    else:
        value = schema_instance(out.schema)
    text = schema_text(value)
    return _limited(prompt, tuple(text[i : i + 4] for i in range(0, len(text), 4)))


def _limited(prompt: Prompt, pieces: tuple[str, ...]) -> Answer:
    """``pieces`` cut to ``max_tokens`` (finish ``length``) when the prompt sets it."""
    limit = prompt.max_tokens
    if limit is not None and limit < len(pieces):
        return Answer(pieces=pieces[:limit], finish="length")
    return Answer(pieces=pieces)


JUDGE_HARD_WORDS = frozenset(
    {"prove", "proof", "derive", "theorem", "lemma", "integral", "algorithm", "implement",
     "complexity", "recursion"}
)  # fmt: skip
_JUDGE_MODEL = re.compile(r"(?<![a-z0-9])judge(?![a-z0-9])")
_QUESTION = re.compile(r"\[Question\]\n(.*?)\n\[Answer A\]", re.S)
_ANSWERS = re.compile(r"\[Answer A\]\n(.*?)\n\n\[Answer B\]\n(.*?)\n\n", re.S)


def _judge_verdict(prompt: Prompt) -> str | None:
    """The simulated judge's one-word verdict, None when the model is not a judge."""
    if not _JUDGE_MODEL.search(prompt.model.lower()):
        return None
    text = prompt.last_user_text
    pair = _ANSWERS.search(text)
    if pair is not None and "SAME or DIFFERENT" in text:  # the cache's judge
        a, b = (" ".join(x.lower().split()) for x in pair.groups())
        return "SAME" if a == b else "DIFFERENT"
    m = _QUESTION.search(text)
    question = m.group(1) if m else text
    hard = any(w in JUDGE_HARD_WORDS for w in _WORD.findall(question.lower()))
    return "B" if hard else "TIE"


def _tool_to_call(prompt: Prompt) -> Tool | None:
    # Tools are called only at the start of a turn: after a tool result the model answers.
    if not prompt.tools or prompt.tool_mode == "none" or prompt.tool_result is not None:
        return None
    if prompt.forced_tool is not None:
        for t in prompt.tools:
            if t.name == prompt.forced_tool:
                return t
    return prompt.tools[0]


# --- embeddings -----------------------------------------------------------------------------

_WORD = re.compile(r"\w+")

FloatVector = npt.NDArray[np.float32]


@lru_cache(maxsize=16384)
def _word_vector(word: str, dim: int) -> FloatVector:
    rng = np.random.default_rng(_digest(word))
    v = rng.standard_normal(dim, dtype=np.float32)
    v.setflags(write=False)
    return v


def embedding(text: str, dim: int) -> FloatVector:
    """A deterministic unit vector for ``text``: the normalised sum of per-word random vectors.

    Texts sharing words get a positive cosine (lexical similarity, enough for cache tests),
    identical texts identical vectors, unrelated texts nearly orthogonal ones.
    """
    words = _WORD.findall(text.lower()) or [f"\x00{text}"]
    v = np.zeros(dim, dtype=np.float32)
    for w in words:
        v += _word_vector(w, dim)
    norm = float(np.linalg.norm(v))
    # A zero sum needs words that cancel exactly: not a case worth more than a fixed axis.
    if norm == 0.0:
        v[0] = 1.0
    else:
        v /= np.float32(norm)
    return v


def encode_vector(v: FloatVector, encoding_format: str) -> list[float] | str:
    """The vector as OpenAI sends it: a list of floats, or base64 of little-endian float32."""
    if encoding_format == "base64":
        return base64.b64encode(v.astype("<f4").tobytes()).decode()
    result: list[float] = v.tolist()
    return result


def default_dimensions(model: str) -> int:
    """Vector size of an embedding model when the request does not set ``dimensions``."""
    m = model.lower()
    if "minilm" in m or "-384" in m:
        return 384
    if "large" in m or "gemini-embedding" in m:
        return 3072
    if any(k in m for k in ("text-embedding-004", "text-embedding-005", "multilingual-embedding",
                            "embedding-001", "bge-base", "-768")):  # fmt: skip
        return 768
    return 1536
