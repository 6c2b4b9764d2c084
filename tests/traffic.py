"""Synthetic request logs for the analyze/simulate tests and the example log.

Three kinds of traffic, deterministic for a seed:

- ``support``: a repetitive FAQ route (a fixed system prompt; questions drawn from a small
  pool, asked verbatim, re-cased or paraphrased, some with an order number that changes);
- ``assistant``: complex one-off reasoning and coding prompts (little repetition);
- ``agent``: a tool-using agent (``tools`` declared, tool calls and tool results in the
  conversation, a system prompt about refunds).

Lines are written in the wrapped request-log format (``{"request", "response", "usage",
"latency_ms", "metadata": {"route"}}``), with some bare OpenAI bodies and Anthropic-style
bodies mixed in. ``python tests/traffic.py examples/traffic.jsonl`` writes the example log.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

Json = dict[str, Any]

FAQ = [
    (
        "How do I reset my password?",
        ["how can I reset my password", "I forgot my password, how do I reset it?"],
    ),
    ("What are your opening hours?", ["when are you open?", "what time do you open"]),
    ("How long does shipping take?", ["how long will shipping take", "shipping time?"]),
    (
        "Can I return an item after 30 days?",
        ["can i return something after thirty days", "return after 30 days possible?"],
    ),
    (
        "How do I change my delivery address?",
        ["how can I change the delivery address", "change my shipping address"],
    ),
    ("Do you ship internationally?", ["do you deliver abroad", "do you ship outside the country?"]),
    (
        "How do I cancel my subscription?",
        ["how can I cancel my subscription", "cancel subscription how"],
    ),
    (
        "Which payment methods do you accept?",
        ["what payment methods are accepted", "can I pay with paypal"],
    ),
    (
        "How do I contact customer support?",
        ["how can I reach customer support", "support contact?"],
    ),
    ("Where can I find my invoice?", ["where is my invoice", "how do I download my invoice"]),
    (
        "Is there a student discount?",
        ["do you offer a student discount", "student discount available?"],
    ),
    (
        "How do I update my billing details?",
        ["how can I update billing information", "change billing details"],
    ),
]

ORDER_Q = "What is the status of order {n}?"

TOPICS = [
    "graph colouring",
    "binary search trees",
    "Bayesian inference",
    "TCP congestion control",
    "the Riemann zeta function",
    "lock-free queues",
    "photosynthesis",
    "monetary policy",
    "transformer attention",
    "database isolation levels",
    "public-key cryptography",
    "the halting problem",
    "supply chain logistics",
    "protein folding",
    "game theory",
]
TASKS = [
    "Prove that {a} implies {b}, step by step, and discuss where the argument breaks down.",
    "Write a Python function that implements {a} efficiently, with tests; analyse its complexity.",
    "Compare {a} with {b}: derive the trade-offs formally and give a worked numerical example.",
    "Explain {a} to a graduate student, then design an experiment relating it to {b}.",
    "Debug this reasoning about {a}: it claims {b} is irrelevant. Give a rigorous counterexample.",
]  # fmt: skip

AGENT_SYSTEM = (
    "You are the payments agent. You can look up orders and issue refunds through tools. "
    "Never reveal card numbers. Refunds above $500 need approval."
)
TOOLS = [
    {"type": "function", "function": {"name": "lookup_order", "parameters": {
        "type": "object", "properties": {"order_id": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "issue_refund", "parameters": {
        "type": "object", "properties": {"order_id": {"type": "string"},
                                         "amount": {"type": "number"}}}}},
]  # fmt: skip
SUPPORT_SYSTEM = "You are the friendly support assistant of Acme Store. Answer briefly."


def _wrap(route: str, request: Json, rng: random.Random, answer: str) -> Json:
    prompt_tokens = sum(len(str(m.get("content") or "")) for m in request["messages"]) // 4 + 8
    completion = rng.randint(40, 400) if route == "assistant" else rng.randint(20, 80)
    return {
        "request": request,
        "response": {"choices": [{"message": {"role": "assistant", "content": answer}}]},
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion},
        "latency_ms": rng.randint(300, 4000),
        "metadata": {"route": route},
    }


def support_request(rng: random.Random, *, paraphrase: float = 0.3, order: float = 0.1) -> Json:
    """One FAQ request: verbatim, re-cased, paraphrased, or an order-status question."""
    roll = rng.random()
    if roll < order:
        text = ORDER_Q.format(n=rng.randint(10000, 99999))
    else:
        q, variants = rng.choice(FAQ)
        r2 = rng.random()
        if r2 < paraphrase:
            text = rng.choice(variants)
        elif r2 < paraphrase + 0.1:
            text = q.lower()
        else:
            text = q
    return {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": SUPPORT_SYSTEM},
            {"role": "user", "content": text},
        ],
        "temperature": 0,
    }


def assistant_request(rng: random.Random) -> Json:
    """One complex, mostly unique reasoning or coding request."""
    a, b = rng.sample(TOPICS, 2)
    text = rng.choice(TASKS).format(a=a, b=b) + f" Use at most {rng.randint(200, 900)} words."
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}


def agent_request(rng: random.Random) -> Json:
    """One step of the tool-using payments agent."""
    order = f"A{rng.randint(1000, 9999)}"
    messages: list[Json] = [
        {"role": "system", "content": AGENT_SYSTEM},
        {"role": "user", "content": f"Please refund order {order}, the item arrived broken."},
    ]
    if rng.random() < 0.5:
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
             "function": {"name": "lookup_order", "arguments": json.dumps({"order_id": order})}}]},
            {"role": "tool", "tool_call_id": "c1",
             "content": json.dumps({"order_id": order, "total": rng.randint(5, 900)})},
        ]  # fmt: skip
    return {"model": "gpt-4o", "messages": messages, "tools": TOOLS}


def make_log(
    *,
    support: int = 300,
    assistant: int = 120,
    agent: int = 80,
    seed: int = 7,
    bad_lines: int = 3,
    anthropic_share: float = 0.05,
) -> list[str]:
    """A shuffled synthetic log as JSON lines (see the module docstring)."""
    rng = random.Random(seed)
    items: list[Json] = []
    for _ in range(support):
        req = support_request(rng)
        items.append(_wrap("support", req, rng, "Here is how: ..."))
    for _ in range(assistant):
        items.append(_wrap("assistant", assistant_request(rng), rng, "Let us reason ..."))
    for _ in range(agent):
        items.append(_wrap("agent", agent_request(rng), rng, ""))
    rng.shuffle(items)
    lines = []
    for it in items:
        route = it["metadata"]["route"]
        if route == "assistant" and rng.random() < anthropic_share:
            # An Anthropic Messages body, unwrapped: the route is then the model asked for.
            req = it["request"]
            body = {"model": req["model"], "max_tokens": 1024, "metadata": {"route": route},
                    "messages": [{"role": "user", "content": [
                        {"type": "text", "text": req["messages"][-1]["content"]}]}]}  # fmt: skip
            lines.append(json.dumps(body))
        else:
            lines.append(json.dumps(it))
    for i in range(bad_lines):
        lines.insert(
            rng.randrange(len(lines)), ["{not json", '"a string"', '{"model": "x"}'][i % 3]
        )
    return lines


def repeat_log(
    n: int, repeat_share: float, *, route: str = "faq", model: str = "gpt-4o"
) -> list[str]:
    """``n`` single-turn requests of which ``repeat_share`` repeat an earlier one verbatim;
    the rest are distinct (different words, so no semantic near-duplicates either)."""
    distinct = n - round(n * repeat_share)
    words = [
        "apple",
        "river",
        "quantum",
        "violin",
        "glacier",
        "harbor",
        "saffron",
        "tundra",
        "lantern",
        "meteor",
        "orchid",
        "cobalt",
        "falcon",
        "walnut",
        "zephyr",
        "basalt",
    ]
    texts = [
        f"{words[i % 16]} {words[(i // 16) % 16]} {words[(i // 256) % 16]} question {i}"
        for i in range(distinct)
    ]
    lines = [json.dumps({"model": model, "metadata": {"route": route},
                         "messages": [{"role": "user", "content": t}]}) for t in texts]  # fmt: skip
    rng = random.Random(n)
    for _ in range(n - distinct):
        lines.append(rng.choice(lines[:distinct]))
    return lines


def write_log(path: str | Path, lines: list[str]) -> Path:
    """Write lines to ``path``."""
    p = Path(path)
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


if __name__ == "__main__":
    write_log(sys.argv[1] if len(sys.argv) > 1 else "traffic.jsonl", make_log())
