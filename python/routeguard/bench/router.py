"""Suite ``router``: one routing decision (rules, then semantic routes, then the shipped
learned model) given the prompt's vector, as the gateway decides once the cache has embedded
the prompt, against ``route()`` embedding the prompt itself; then that whole decision
(embedding included, the default Rust MiniLM) against the same with the numpy MiniLM
backend; with ``--quality``, the shipped
model's APGR on RouteLLM's MMLU outcomes (the 20% hash holdout it never saw) against the
longer-prompt rule, through ``routeguard router eval``'s code."""

from __future__ import annotations

from typing import Any, cast

from routeguard.bench.embed import TEXTS
from routeguard.bench.report import Row
from routeguard.bench.suite import Options, Skip, one_core
from routeguard.bench.timing import summarize, time_calls
from routeguard.embed import MiniLMEmbedder, default_embedder
from routeguard.embed.blas import single_threaded
from routeguard.embed.minilm import PrecisionChoice
from routeguard.errors import RouteguardError
from routeguard.routing import Router

PROMPT = "What is the capital city of France, and why?"
SHORT = TEXTS["short"]  # the embed suite's 10-token prompt
SPEC: dict[str, Any] = {
    "cheap": "cheap",
    "strong": "strong",
    "strong_share": 0.3,
    "rules": [
        {"name": "vip", "target": "strong", "team": "vip"},
        {"name": "long", "target": "strong", "min_tokens": 8000},
        {"name": "sql", "target": "strong", "regex": r"(?i)\bexplain analyze\b"},
    ],
    "semantic_routes": {
        "threshold": 0.75,
        "routes": [
            {"name": "greeting", "target": "cheap",
             "utterances": ["hi", "hello there", "good morning", "thanks!", "how are you?"]},
            {"name": "translation", "target": "cheap",
             "utterances": ["translate this into French", "how do you say hello in Spanish",
                            "translate to German please", "what is this in Japanese",
                            "English to Italian"]},
        ],
    },
}  # fmt: skip


def run(opts: Options) -> list[Row]:
    """Decision latency with the vector against embedding included; APGR with --quality."""
    try:
        embedder = default_embedder(cast(PrecisionChoice, opts.precision))
    except RouteguardError as exc:
        raise Skip(str(exc)) from None
    router = Router.from_dict("smart", SPEC, embedder=embedder)
    numpy_router = Router.from_dict("smart", SPEC, embedder=MiniLMEmbedder(backend="numpy"))
    request = {"model": "smart", "messages": [{"role": "user", "content": PROMPT}]}
    vector = embedder.embed([PROMPT])[0]
    tokens = len(embedder.tokenize([PROMPT])[0])
    # The embed suite's 10-token prompt too, so the two targets can be read on one prompt.
    short = {"model": "smart", "messages": [{"role": "user", "content": SHORT}]}
    short_tokens = len(embedder.tokenize([SHORT])[0])
    with one_core(), single_threaded():
        n = opts.n(5_000, 1_000)
        opts.progress.step(f"decision given the vector, {n} calls")
        ours = summarize(time_calls(lambda: router.route(request, vector), n)).scaled(1e-3)
        m = opts.n(300, 40)
        opts.progress.step(f"decision embedding the prompt, {m} calls")
        whole = summarize(time_calls(lambda: router.route(request), m, 5)).scaled(1e-3)
        opts.progress.step(f"decision embedding the prompt with numpy MiniLM, {m} calls")
        numpy = summarize(time_calls(lambda: numpy_router.route(request), m, 5)).scaled(1e-3)
        opts.progress.step(f"decision embedding the {short_tokens}-token prompt, {m} calls")
        whole_s = summarize(time_calls(lambda: router.route(short), m, 5)).scaled(1e-3)
        opts.progress.step(f"the same with numpy MiniLM, {m} calls")
        numpy_s = summarize(time_calls(lambda: numpy_router.route(short), m, 5)).scaled(1e-3)
    rows = [
        Row("router", f"decision given the vector ({embedder.precision} MiniLM)", ours.p50,
            whole.p50, "route() embedding the prompt itself",
            detail={"ours": ours.as_dict(), "peer": whole.as_dict()}),
    ]  # fmt: skip
    for t, mine, peer in ((tokens, whole, numpy), (short_tokens, whole_s, numpy_s)):
        rows.append(
            Row("router", f"decision embedding the prompt ({t} tokens, {embedder.precision} "
                "MiniLM)",
                mine.p50 / 1e3, peer.p50 / 1e3, "the same with numpy MiniLM, 1 BLAS thread",
                unit="ms", detail={"ours": mine.as_dict(), "peer": peer.as_dict()})
        )  # fmt: skip
    if opts.quality:
        rows += quality(opts)
    return rows


def quality(opts: Options) -> list[Row]:
    """APGR of the shipped model against the longer-prompt rule on RouteLLM's MMLU holdout."""
    from routeguard.routing.cli import evaluate

    data = None if opts.data is None else opts.data / "routing" / "routellm-mmlu"
    if data is None or not data.is_dir():
        opts.progress.step("--quality: no shared/data/routing/routellm-mmlu here, skipped")
        return []
    opts.progress.step(f"--quality: APGR on {data} (embeds the holdout prompts)")
    mine, base = evaluate(data, holdout=0.2)
    return [
        Row("router", f"RouteLLM MMLU 20% holdout, {mine.n:,} prompts", mine.apgr,
            base.apgr, "longer-prompt rule", unit="", metric="APGR", better="higher",
            detail={"ours": mine.as_dict(), "peer": base.as_dict()})
    ]  # fmt: skip
