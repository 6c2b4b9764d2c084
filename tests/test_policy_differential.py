"""Differential test: the compiled Rust matcher agrees with the reference interpreter.

Hypothesis writes random policies in the YAML language (every construct: principal, tool
globs, argument predicates including nested ``not``, context labels, steps, time windows,
redactions), loads each through the real parser, and asks both the engine (reading the ``dict``
in place, and again from JSON text) and ``enforce/reference.py`` about random requests drawn
from the same small vocabularies, so rules and requests actually meet. Values include the
awkward ones: ``1`` vs ``1.0`` vs ``True``, integers past 64 bits, NaN and infinities, lists
and objects where scalars are expected, numeric strings (and strings that almost are), deeply
nested values; tool names include look-alikes (other case, fullwidth, invisible characters,
mixed scripts) and rules name tools in other cases. Runs derandomised: the same examples every
time.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routeguard._native import core
from routeguard.enforce import reference
from routeguard.enforce.decision import TOOL_NAME_RULE_ID, Context, Principal, Request
from routeguard.enforce.engine import PolicyEngine
from routeguard.enforce.patterns import PatternError, compile_glob, compile_regex
from routeguard.errors import InvalidRequest

TOOLS = ["read_file", "write_file", "send_email", "fs.read", "fs.write", "pay", "shell"]
TOOL_GLOBS = ["*", "read_*", "*_file", "fs.*", "{pay,shell}", "s?nd_email", "[rw]*", "fs.[!r]*"]
TOOL_GLOBS += ["READ_*", "Send_Email", "FS.[!R]*", "\uff50ay"]  # normalised at load
LOOKALIKE_TOOLS = [
    "SEND_EMAIL",
    "Read_File",
    "send_email\u200b",
    "\ufefffs.read",
    "fs.wri\u00adte",
    "\uff50\uff41\uff59",  # fullwidth "pay"
    "shell\n",
    "send_ema\u0456l",  # Cyrillic i: refused
    "\u0455hell",  # Cyrillic dze: refused
    "\u03a1\u0391\u03a5",  # all Greek: one script, matches no literal rule
]
AGENTS = ["agent-1", "agent-2", "did:key:z6Mk1"]
AGENT_GLOBS = ["agent-*", "*1", "did:key:*", "agent-[12]"]
ROLES = ["executor", "planner", "admin"]
LABELS = ["t", "pii", "ok"]
PATHS = ["$.a", "$.b", "$.a.c", "$.l[0]", '$["x y"]']
TEXT = "abAB1 ._-"
NUMBERS: list[int | float] = [0, 1, -1, 2, 2.5, 1.0, -0.5, 2**53 + 1, 1e300]
SCALARS: list[Any] = [None, True, False, *NUMBERS, "", "a", "ab", "ba", "A b", "1", "2.5"]
TIMES = [  # Unix seconds around the day and week boundaries
    0.0,
    1_767_225_600.0,  # Thu 2026-01-01 00:00
    1_767_268_800.0,  # Thu 12:00
    1_767_297_599.5,  # Thu 19:59:59.5
    1_767_484_800.0,  # Sun 00:00
    1_767_571_199.0,  # Sun 23:59:59
    -86_400.5,
    1_767_258_000.0,  # Thu 09:00
    1_767_288_599.0,  # Thu 17:29:59
    1_767_322_800.0,  # Fri 03:00
]

# Hypothesis spends most of its time per draw, so rules and requests are assembled from
# pools of ready-made pieces (one draw each) rather than character by character.


def _pool(atoms: list[str], length: int, step: int) -> list[str]:
    """Every ``step``-th string of up to ``length`` atoms: a deterministic spread."""
    out = [""]
    for n in range(1, length + 1):
        out += ["".join(p) for p in itertools.product(atoms, repeat=n)]
    return out[::step]


GLOBS = _pool(["a", "b", ".", "*", "?", "[ab]", "[!a]", "{a,b}", "{,b.}", "\\*"], 3, 7)
REGEX_BODIES = ["a", "b+", "A", ".", "[ab]*", "[^a]", "\\d", "\\w", " ", "(a|b)?", "a{1,2}"]
ANCHORS = [("", ""), ("^", ""), ("", "$"), ("(?i)^", "$")]
REGEXES = [
    *[left + body + right for body in _pool(REGEX_BODIES, 3, 11) for left, right in ANCHORS][::3],
    "\\bab\\b",
    "(?i)a",
    "^$",
]
NUMBER_PAIRS = [(lo, hi) for lo in NUMBERS for hi in NUMBERS if lo <= hi][::2]
LEAF_TESTS: list[dict[str, Any]] = [
    *({"equals": v} for v in SCALARS),
    *({"in": list(c)} for c in itertools.combinations(SCALARS, 3)),
    *({"glob": g} for g in GLOBS),
    *({"regex": r} for r in REGEXES),
    *({"range": [lo, hi]} for lo, hi in NUMBER_PAIRS),
    *({"range": [None, hi]} for hi in NUMBERS),
    *({"range": [lo, None]} for lo in NUMBERS),
    *(
        {lo_op: lo, hi_op: hi}
        for lo, hi in NUMBER_PAIRS
        if lo < hi
        for lo_op in ("gt", "gte")
        for hi_op in ("lt", "lte")
    ),
    *({op: n} for n in NUMBERS for op in ("gt", "gte", "lt", "lte")),
    {"exists": True},
    {"exists": False},
]
TESTS = LEAF_TESTS + [{"not": t} for t in LEAF_TESTS[::3]] + [{"not": {"not": {"exists": True}}}]

PRINCIPALS: list[dict[str, Any]] = []
for agent, role, trust, depth in itertools.product(
    [None, ["agent-*"], ["*1", "did:key:*"], ["agent-[12]"]],
    [None, ["executor"], ["planner", "admin"]],
    [None, {"min_trust": 0.5}, {"min_trust": 0.25, "max_trust": 0.75}, {"max_trust": 1.0}],
    [None, {"max_delegation_depth": 0}, {"min_delegation_depth": 1, "max_delegation_depth": 2}],
):
    principal: dict[str, Any] = {**(trust or {}), **(depth or {})}
    if agent:
        principal["agent"] = agent
    if role:
        principal["role"] = role
    PRINCIPALS.append(principal)

TIME_WINDOWS: list[dict[str, Any]] = [
    {"hours": ["09:00", "17:30"]},
    {"hours": ["22:00", "06:00"]},
    {"hours": ["00:00", "24:00"], "days": ["thu"]},
    {"days": ["fri-mon"]},
    {"days": ["mon", "sun"], "after": "2026-01-01T06:00:00Z"},
    {"after": "1970-01-01T00:00:00Z", "before": "2026-01-01T12:00:00Z"},
    {"hours": ["12:00", "12:30"], "before": "2030-01-01T00:00:00Z"},
]
CONTEXTS: list[dict[str, Any]] = [
    {"labels_any": ["t", "pii"]},
    {"labels_all": ["t", "ok"]},
    {"labels_none": ["t"]},
    {"labels_any": "ok", "labels_none": ["pii"]},
    {"step": 2},
    {"step": [1, 3]},
    {"step": [None, 1]},
    {"step": [3, None]},
    *({"time": w} for w in TIME_WINDOWS),
    {"labels_none": "pii", "step": [0, 2], "time": TIME_WINDOWS[0]},
]


# Strategies built once: hypothesis labels a sampled_from by hashing its elements.
EFFECTS = st.sampled_from(["allow", "allow", "deny", "require_approval", "redact"])
ANY_PRINCIPAL: st.SearchStrategy[dict[str, Any]] = (
    st.just({}) | st.just({}) | st.sampled_from(PRINCIPALS)
)
TOOL_LISTS = st.lists(st.sampled_from(TOOLS + TOOL_GLOBS), max_size=3)
ARG_TESTS: st.SearchStrategy[dict[str, Any]] = st.just({}) | st.dictionaries(
    st.sampled_from(PATHS), st.sampled_from(TESTS), max_size=2
)
ANY_CONTEXT = st.none() | st.sampled_from(CONTEXTS)
REDACT_PATHS = st.lists(st.sampled_from(PATHS), min_size=1, max_size=2)


@st.composite
def rules(draw: st.DrawFn, index: int) -> dict[str, Any]:
    effect = draw(EFFECTS)
    rule: dict[str, Any] = {"id": f"r{index}", "effect": effect}
    principal = draw(ANY_PRINCIPAL)
    if principal:
        rule["principal"] = principal
    tools = draw(TOOL_LISTS)
    if tools:
        rule["action"] = {"tool": tools if len(tools) > 1 else tools[0]}
    when: dict[str, Any] = {}
    args = draw(ARG_TESTS)
    if args:
        when["args"] = args
    context = draw(ANY_CONTEXT)
    if context:
        when["context"] = context
    if when:
        rule["when"] = when
    if effect == "redact":
        rule["redact"] = draw(REDACT_PATHS)
    return rule


@st.composite
def policies(draw: st.DrawFn) -> str:
    n = draw(st.integers(0, 10))
    doc = {"rules": [draw(rules(i)) for i in range(n)]}
    return yaml.dump(doc, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)


# ---- requests ----------------------------------------------------------------------------------

SCALAR_VALUES: list[Any] = [
    *SCALARS,
    *(g.replace("*", "ab").replace("?", "b") for g in GLOBS[:40:4]),
    "aB1",
    " a.b",
    "b a",
    "1_a-",
    "a\tb",
    2**64 + 5,
    -(2**70),
    2**63,
    math.nan,
    math.inf,
    -math.inf,
    # numeric strings, and strings that are almost numbers
    *("0", "-0", "2", "-1", "1.0", "2.50", "-0.5", "1e0", "25e-1", "1e300", "1e999", "-1e999"),
    *("9007199254740993", "18446744073709551621", "0x10", "1_0", " 1", "1 ", "+1", "NaN", "01"),
]


def _deep(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = {"c": leaf}
    return leaf


DEEP = [_deep(200, "a"), _deep(130, 1), [[[[[[["a"]]]]]]], {"c": _deep(2000, None)}]
VALUES: list[Any] = [
    *SCALAR_VALUES,
    *({"c": "a"}, {"c": 1}, {}, ["a"], [1, 2], [], ("ab",), ["1"], {"c": "2.5"}),
    *DEEP,
]
CALLERS = list(itertools.product([*AGENTS, "other"], [*ROLES, ""], range(4)))


LABEL_SETS = [frozenset(c) for n in range(4) for c in itertools.combinations([*LABELS, "x"], n)]
ANY_CALLER = st.sampled_from(CALLERS)
TRUSTS = st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, math.nan, 0.2500001])
ARGS = st.dictionaries(
    st.sampled_from(["a", "b", "l", "x y"]), st.sampled_from(VALUES), min_size=1, max_size=4
)
ANY_LABELS = st.sampled_from(LABEL_SETS)
ANY_TIME = st.sampled_from(TIMES)
ANY_TOOL = st.sampled_from([*TOOLS, "unknown", "fs.", "read_"]) | st.sampled_from(LOOKALIKE_TOOLS)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    agent, role, depth = draw(ANY_CALLER)
    principal = Principal(agent, role, draw(TRUSTS), depth)
    context = Context(step=draw(st.integers(0, 4)), labels=draw(ANY_LABELS), now=draw(ANY_TIME))
    return Request(principal, draw(ANY_TOOL), draw(ARGS), context)


def _json_safe(args: Any) -> str | None:
    try:
        return json.dumps(args, allow_nan=False)
    except (ValueError, RecursionError):
        return None


def _depth(v: Any) -> int:
    """Levels of objects and lists in ``v`` (``{"a": []}`` is 2), without recursing."""
    depth, level = 0, [v]
    while level := [x for x in level if isinstance(x, dict | list | tuple)]:
        depth += 1
        level = [c for x in level for c in (x.values() if isinstance(x, dict) else x)]
    return depth


@settings(
    max_examples=600,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(policy=policies(), batch=st.lists(requests(), min_size=1, max_size=6))
def test_compiled_matcher_agrees_with_reference(policy: str, batch: list[Request]) -> None:
    engine = PolicyEngine.from_yaml(policy)
    for req in batch:
        want = reference.decide(engine.policy, req)
        got = engine.decide_request(req)
        assert got == want, (req, policy)
        raw = _json_safe(req.args)
        if raw is None:
            continue
        # Past serde_json's nesting limit: refused, never misread (unless the name already is).
        if _depth(req.args) >= 128 and want.rule_id != TOOL_NAME_RULE_ID:
            try:
                engine.decide_json(req.principal, req.tool, raw, req.context)
            except InvalidRequest as e:
                assert "recursion limit" in str(e)
            else:
                raise AssertionError("serde_json read JSON nested past its limit")
        else:
            assert engine.decide_json(req.principal, req.tool, raw, req.context) == want


# ---- the grammars, character by character ------------------------------------------------------

GLOB_CHARS = "ab.*?[]{},!^-\\é"
REGEX_TOKENS = [
    "a",
    "b",
    "é",
    ".",
    "*",
    "+",
    "?",
    "|",
    "(",
    ")",
    "[",
    "]",
    "^",
    "$",
    "-",
    "{1,2}",
    "{2}",
    "\\d",
    "\\w",
    "\\s",
    "\\b",
    "\\.",
    "(?i)",
    "(?:",
    "[^",
    "*?",
    " ",
]


def _single_rule(test: dict[str, Any]) -> str:
    return json.dumps(
        {
            "version": 1,
            "rules": [
                {
                    "id": "r",
                    "effect": "allow",
                    "tools": ["*"],
                    "args": [{"path": "$.x", "segments": ["x"], "test": test}],
                }
            ],
        }
    )


def _rust_matches(test: dict[str, Any], samples: list[str]) -> list[bool] | None:
    """What the compiled matcher says of each sample, or None if it rejects the pattern."""
    try:
        compiled = core.CompiledPolicy(_single_rule(test))
    except ValueError:
        return None
    return [
        compiled.decide("a", "r", 1.0, 0, "t", {"x": s}, 0, (), 0.0)[0] == "allow" for s in samples
    ]


GRAMMAR = settings(max_examples=500, derandomize=True, deadline=None)


@GRAMMAR
@given(st.text(GLOB_CHARS, max_size=8), st.lists(st.text("ab.*?[]{},!^-é", max_size=6), max_size=8))
def test_globs_read_the_same_in_both_languages(glob: str, samples: list[str]) -> None:
    rust = _rust_matches({"op": "glob", "pattern": glob}, samples)
    try:
        pattern = compile_glob(glob)
    except PatternError:
        assert rust is None, glob
        return
    assert rust == [pattern.fullmatch(s) is not None for s in samples], glob


@GRAMMAR
@given(
    st.lists(st.sampled_from(REGEX_TOKENS), max_size=7).map("".join),
    st.lists(st.text("ab é1_.-", max_size=6), max_size=8),
)
def test_regexes_both_engines_accept_match_alike(regex: str, samples: list[str]) -> None:
    try:
        pattern = compile_regex(regex)
    except PatternError:
        return
    if core.CompiledPolicy.regex_error(regex) is not None:
        return  # the loader rejects it (with its line); nothing to compare
    rust = _rust_matches({"op": "regex", "pattern": regex}, samples)
    assert rust == [pattern.search(s) is not None for s in samples], regex
