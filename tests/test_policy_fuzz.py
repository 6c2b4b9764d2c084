"""Fuzzing the policy loader: whatever the input, it returns a policy or raises PolicyError.

Three sources of input: YAML-ish token soup (indentation, flow brackets, anchors, tags,
directives, the schema's own keys), random mutations of the valid policies in docs/policy.md,
and well-formed YAML documents with the schema's keys holding values of every wrong type. A
policy that loads must also compile in the Rust matcher (Python's validation promises it) and
the engine must agree with the reference interpreter on it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routeguard.enforce import reference
from routeguard.enforce.decision import Context, Principal, Request
from routeguard.enforce.engine import PolicyEngine
from routeguard.enforce.policy import load_policy
from routeguard.errors import PolicyError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "policy.md"
SEEDS = [b for b in re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.S) if "rules:" in b]
KEYS = [
    "rules",
    "version",
    "id",
    "effect",
    "principal",
    "action",
    "tool",
    "when",
    "args",
    "context",
    "redact",
    "agent",
    "role",
    "min_trust",
    "max_trust",
    "max_delegation_depth",
    "equals",
    "in",
    "glob",
    "regex",
    "range",
    "gt",
    "lte",
    "exists",
    "not",
    "labels_any",
    "labels_none",
    "step",
    "time",
    "hours",
    "days",
    "after",
    "before",
    "$.a",
    "$.a[0]",
    "$['b']",
    "allow",
    "deny",
    "redact",
    "require_approval",
]
TOKENS = [
    *KEYS,
    ": ",
    ":",
    "- ",
    "\n",
    "\n  ",
    "\n    ",
    "  ",
    "\t",
    "[",
    "]",
    "{",
    "}",
    ", ",
    "'",
    '"',
    "#",
    "&a ",
    "*a",
    "!!str ",
    "!!python/object:os.system ",
    "!foo ",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "? ",
    "|\n",
    ">\n",
    "~",
    "null",
    "yes",
    "no",
    "1e999",
    ".nan",
    "-1",
    "0x1F",
    "12:30",
    "2026-13-45",
    "9223372036854775808",
    "\\",
    "\x00",
    "\x85",
    "\ufeff",
    "é",
    "\udc80",
    "*",
    "?",
    "[a-",
    "{a,",
    "(?<=x)",
    "a++",
    "09:00",
    "mon-fri",
]
PERSON = Principal("agent-1", "executor", 0.9, 0)


def check(text: str) -> None:
    """Load ``text``; only PolicyError may escape, and a loaded policy must run."""
    try:
        policy = load_policy(text)
    except PolicyError as e:
        assert e.problems and all(p.line >= 1 and p.column >= 1 for p in e.problems)
        return
    engine = PolicyEngine(policy)  # Rust must accept what Python validated
    for tool in ("read_file", "payments.transfer", "send_email"):
        req = Request(PERSON, tool, {"a": 1, "amount": 5}, Context(step=3, now=1.7e9))
        assert engine.decide_request(req) == reference.decide(policy, req)


FUZZ = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS) | st.text(max_size=3), max_size=40))
def test_token_soup(tokens: list[str]) -> None:
    check("".join(tokens))


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.lists(
        st.tuples(
            st.floats(0, 1),
            st.sampled_from(["delete", "insert", "replace"]),
            st.sampled_from(TOKENS) | st.text(max_size=2),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_doc_policies(seed: str, edits: list[tuple[float, str, str]]) -> None:
    text = seed
    for where, how, what in edits:
        i = int(where * len(text))
        if how == "delete":
            text = text[:i] + text[i + 1 + len(what) :]
        elif how == "insert":
            text = text[:i] + what + text[i:]
        else:
            text = text[:i] + what + text[i + len(what) :]
    check(text)


leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.sampled_from(KEYS + TOKENS),
    st.text(max_size=6),
)
documents = st.recursive(
    leaf,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=25,
)


@FUZZ
@given(documents)
def test_schema_shaped_documents(doc: Any) -> None:
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        return
    check(text)
    check(yaml.safe_dump({"rules": [doc]}, allow_unicode=True))


@pytest.mark.parametrize(
    "text",
    [
        "[" * 5000,
        "a: " + "{b: " * 3000,
        "rules:\n" + "  - &x {id: a, effect: allow}\n  - *x\n",
        "rules: &r [*r]",
        "rules: [{id: a, effect: allow, when: {args: {$.a: &p {not: *p}}}}]",
        "\ufeffrules: []",
        "rules: []\n---\nrules: []",
    ],
)
def test_pathological_inputs(text: str) -> None:
    check(text)
