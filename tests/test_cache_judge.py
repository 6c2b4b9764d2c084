"""The judges of a cached answer against a fresh one (:mod:`routeguard.cache.judge`) and the
by-meaning clusters of the simulated upstream (:mod:`routeguard.mock.meanings`)."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from embedders import WordsEmbedder
from routeguard.cache.judge import (
    EmbeddingJudge,
    ExactJudge,
    ModelJudge,
    answer_text,
    judge_wrong,
)
from routeguard.mock.meanings import Meanings, load_meanings


def _completion(content: Any = None, calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls is not None:
        message["tool_calls"] = calls
    return {"choices": [{"message": message}]}


def _call(name: str, arguments: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def test_answer_text_reads_content_parts_and_tool_calls() -> None:
    assert answer_text(_completion("hello")) == ("hello", False)
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert answer_text(_completion(parts)) == ("ab", False)
    text, structured = answer_text(_completion(None, [_call("f", '{"b": 1, "a": 2}')]))
    assert structured and json.loads(text) == [{"name": "f", "arguments": {"a": 2, "b": 1}}]
    assert answer_text({}) == ("", False)


async def test_structured_answers_are_compared_exactly_whatever_the_judge() -> None:
    always_right = ExactJudge()
    same_args = (_completion(None, [_call("f", '{"a": 1, "b": 2}')]),
                 _completion(None, [_call("f", '{"b": 2,  "a": 1}')]))  # fmt: skip
    assert await judge_wrong(always_right, "q", {}, *same_args) is False
    other = _completion(None, [_call("f", '{"a": 1, "b": 3}')])
    assert await judge_wrong(always_right, "q", {}, same_args[0], other) is True
    json_request = {"response_format": {"type": "json_object"}}
    a, b = _completion('{"x": [1, 2]}'), _completion('{ "x": [1,2] }')
    assert await judge_wrong(EmbeddingJudge(WordsEmbedder()), "q", json_request, a, b) is False
    c = _completion('{"x": [2, 1]}')
    assert await judge_wrong(EmbeddingJudge(WordsEmbedder()), "q", json_request, a, c) is True


async def test_embedding_and_exact_judges() -> None:
    judge = EmbeddingJudge(WordsEmbedder(), threshold=0.9)
    assert await judge.wrong("q", "Paris is the capital", "paris  is the CAPITAL") is False
    assert await judge.wrong("q", "Paris is the capital", "bread needs yeast and time") is True
    assert await judge.wrong("q", "", "something") is None  # nothing to compare
    assert await ExactJudge().wrong("q", "A  b", "a b") is False
    assert await ExactJudge().wrong("q", "a b", "a c") is True


@pytest.mark.parametrize(
    ("reply", "verdict"), [("SAME", False), ("different.", True), ("I cannot tell", None)]
)
async def test_model_judge_reads_its_verdict(reply: str, verdict: bool | None) -> None:
    asked: list[tuple[str, dict[str, Any]]] = []

    async def call(alias: str, request: dict[str, Any]) -> dict[str, Any]:
        asked.append((alias, request))
        return _completion(reply)

    judge = ModelJudge("judge-m", call)
    assert await judge.wrong("what is up", "one answer", "another answer") is verdict
    alias, request = asked[0]
    assert alias == "judge-m" and request["model"] == "judge-m"
    prompt = request["messages"][0]["content"]
    assert "what is up" in prompt and "one answer" in prompt and "another answer" in prompt
    assert await judge.wrong("q", "same", "same") is False and len(asked) == 1  # no call


def test_meanings_join_label_one_pairs_transitively() -> None:
    m = Meanings.from_pairs([("A?", "b?", 1), ("B?", "c?", 1), ("c?", "D?", 0), ("e", "f", 0)])
    assert m.of("a?") == m.of("B?") == m.of("C?")
    assert m.of("d?") != m.of("a?") and m.of("e") != m.of("f")
    assert m.of("never asked") is None
    g = Meanings.from_groups([["x", "y"], ["y", "z"], ["w"]])
    assert g.of("x") == g.of("z") != g.of("w")


def test_load_meanings_reads_pairs_groups_gzip_and_tar(tmp_path: Path) -> None:
    pairs = [{"text_a": "how old is earth", "text_b": "age of the earth", "label": 1},
             {"text_a": "how old is earth", "text_b": "how old is mars", "label": 0}]  # fmt: skip
    raw = json.dumps(pairs).encode()
    (tmp_path / "p.json").write_bytes(raw)
    (tmp_path / "p.json.gz").write_bytes(gzip.compress(raw))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("data/pairs.json")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    (tmp_path / "p.tar.gz").write_bytes(buf.getvalue())
    for name in ("p.json", "p.json.gz", "p.tar.gz"):
        m = load_meanings(tmp_path / name)
        assert m.of("Age of the Earth") == m.of("how old is earth") != m.of("how old is mars")
    (tmp_path / "g.json").write_text(json.dumps([["one", "uno"], ["two"]]))
    assert load_meanings(tmp_path / "g.json").of("uno") == load_meanings(tmp_path / "g.json").of(
        "one"
    )
    (tmp_path / "bad.json").write_text(json.dumps([{"text": "x"}]))
    with pytest.raises(ValueError, match="text_a/text_b"):
        load_meanings(tmp_path / "bad.json")
