"""Suite ``embed``: the local MiniLM embedder end to end (tokenise, forward pass, pool) on one
core, for a 4-, a 10- and a 63-token prompt, the Rust pass at f32, f16, int8 and (where the CPU
multiplies bf16 natively) bf16, against the numpy backend with BLAS on one thread."""

from __future__ import annotations

from functools import partial

from routeguard._native import core
from routeguard.bench.report import Row
from routeguard.bench.suite import Options, Skip, one_core
from routeguard.bench.timing import summarize, time_calls
from routeguard.embed import MiniLMEmbedder, default_embedder
from routeguard.embed.blas import single_threaded
from routeguard.embed.minilm import Precision
from routeguard.errors import RouteguardError

TEXTS = {
    "tiny": "Thanks!",
    "short": "How do I reset my password quickly?",
    "medium": (
        "I am writing a small web service in Python that accepts uploads of CSV files, "
        "validates each row against a schema, and stores the valid rows in PostgreSQL. Some "
        "files are several hundred megabytes. How should I stream the parsing so memory stays "
        "flat?"
    ),
}


def precisions() -> list[Precision]:
    """The Rust precisions worth timing here: bf16 only where the CPU does it natively."""
    out: list[Precision] = ["f32", "f16", "int8"]
    if core.auto_precision() == "bf16":
        out.append("bf16")
    return out


def run(opts: Options) -> list[Row]:
    """p50 per call of each precision and prompt against numpy on the same prompt."""
    try:
        peer_e = MiniLMEmbedder(backend="numpy")
        ours_e = {p: MiniLMEmbedder(backend="rust", precision=p) for p in precisions()}
        auto = default_embedder().precision  # what `precision: auto` chose on this CPU
    except RouteguardError as exc:
        raise Skip(str(exc)) from None
    rows = []
    with one_core(), single_threaded():
        for case, text in TEXTS.items():
            tokens = len(peer_e.tokenize([text])[0])
            n = opts.n(300, 40)
            opts.progress.step(f"{case} ({tokens} tokens): numpy, {n} calls")
            peer = summarize(time_calls(partial(peer_e.embed, [text]), n, 5)).scaled(1e-6)
            for precision, e in ours_e.items():
                opts.progress.step(f"{case} ({tokens} tokens): rust {precision}, {n} calls")
                ours = summarize(time_calls(partial(e.embed, [text]), n, 5)).scaled(1e-6)
                rows.append(
                    Row("embed", f"MiniLM {tokens} tokens, {precision}"
                        + (" (auto)" if precision == auto else ""), ours.p50, peer.p50,
                        "numpy backend, f32, 1 BLAS thread", unit="ms",
                        detail={"ours": ours.as_dict(), "peer": peer.as_dict()})
                )  # fmt: skip
    return rows
