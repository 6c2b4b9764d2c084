"""Tool-call policies: the language's semantics, the examples in docs/policy.md, and the errors
an invalid policy produces (with line numbers). Every decision here is checked against both the
compiled engine and the reference interpreter."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from routeguard._native import core
from routeguard.enforce import reference
from routeguard.enforce.decision import (
    DEFAULT_RULE_ID,
    Context,
    Decision,
    Principal,
    Redaction,
    Request,
)
from routeguard.enforce.engine import PolicyEngine, apply_redactions
from routeguard.enforce.model import to_json
from routeguard.enforce.patterns import PatternError, compile_glob, parse_path, render_path
from routeguard.enforce.policy import load_policy
from routeguard.errors import InvalidRequest, PolicyError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "policy.md"
NOON_THURSDAY = 1_767_268_800.0  # 2026-01-01T12:00:00Z
EXEC = Principal("agent-7", "executor", 0.9, 0)


def both(
    engine: PolicyEngine,
    principal: Principal,
    tool: str,
    args: Any = None,
    context: Context | None = None,
) -> Decision:
    """The engine's decision, asserted equal to the reference interpreter's."""
    ctx = context or Context(now=NOON_THURSDAY)
    got = engine.decide(principal, tool, args or {}, ctx)
    want = reference.decide(engine.policy, Request(principal, tool, args or {}, ctx))
    assert got == want
    if args is None or isinstance(args, dict):
        assert engine.decide_json(principal, tool, json.dumps(args or {}), ctx) == got
    return got


def effect(engine: PolicyEngine, *a: Any, **k: Any) -> tuple[str, str]:
    d = both(engine, *a, **k)
    return d.effect, d.rule_id


# ---- precedence -------------------------------------------------------------------------------


def test_default_deny_names_no_rule() -> None:
    engine = PolicyEngine.from_yaml("rules: []")
    assert effect(engine, EXEC, "anything") == ("deny", DEFAULT_RULE_ID)
    assert DEFAULT_RULE_ID == core.CompiledPolicy.DEFAULT_RULE_ID


def test_deny_wins_wherever_it_is() -> None:
    engine = PolicyEngine.from_yaml(
        """
rules:
  - {id: allow-all, effect: allow}
  - {id: approve-shell, effect: require_approval, action: {tool: shell}}
  - {id: deny-shell, effect: deny, action: {tool: shell}}
  - {id: deny-shell-2, effect: deny, action: {tool: "sh*"}}
"""
    )
    assert effect(engine, EXEC, "shell") == ("deny", "deny-shell")
    assert effect(engine, EXEC, "shutdown") == ("deny", "deny-shell-2")
    assert effect(engine, EXEC, "read") == ("allow", "allow-all")


def test_approval_beats_allow_and_first_rule_names_the_decision() -> None:
    engine = PolicyEngine.from_yaml(
        """
rules:
  - {id: a1, effect: allow, action: {tool: pay}}
  - {id: a2, effect: allow}
  - {id: big, effect: require_approval, action: {tool: pay}, when: {args: {$.amount: {gt: 100}}}}
"""
    )
    assert effect(engine, EXEC, "pay", {"amount": 100}) == ("allow", "a1")
    assert effect(engine, EXEC, "pay", {"amount": 100.5}) == ("require_approval", "big")
    assert effect(engine, EXEC, "refund") == ("allow", "a2")


def test_redact_never_permits_and_turns_allow_into_redact() -> None:
    engine = PolicyEngine.from_yaml(
        """
rules:
  - {id: mask, effect: redact, redact: [$.card.number, "$['card'].cvv"]}
  - {id: mask-again, effect: redact, redact: [$.card.number, $.ssn]}
  - {id: pay, effect: allow, action: {tool: pay}}
  - {id: wire, effect: require_approval, action: {tool: wire}}
  - {id: no-refund, effect: deny, action: {tool: refund}}
"""
    )
    reds = (
        Redaction("$.card.number", "mask"),
        Redaction("$.card.cvv", "mask"),
        Redaction("$.ssn", "mask-again"),
    )
    assert both(engine, EXEC, "pay") == Decision("redact", "pay", reds)
    assert both(engine, EXEC, "pay").allowed
    assert both(engine, EXEC, "wire") == Decision("require_approval", "wire", reds)
    assert both(engine, EXEC, "refund") == Decision("deny", "no-refund")
    assert both(engine, EXEC, "other") == Decision("deny", DEFAULT_RULE_ID)
    args: dict[str, Any] = {"card": {"number": "4111", "cvv": "123", "exp": "12/29"}, "amount": 3}
    masked = apply_redactions(args, reds)
    assert masked == {
        "card": {"number": "[REDACTED]", "cvv": "[REDACTED]", "exp": "12/29"},
        "amount": 3,
    }
    assert args["card"]["number"] == "4111"  # not modified in place


# ---- conditions --------------------------------------------------------------------------------


def test_principal_conditions() -> None:
    engine = PolicyEngine.from_yaml(
        """
rules:
  - id: r
    effect: allow
    principal:
      agent: ["agent-*", "did:key:z6Mk*"]
      role: [executor, admin]
      min_trust: 0.5
      max_trust: 0.95
      min_delegation_depth: 0
      max_delegation_depth: 1
"""
    )
    assert effect(engine, EXEC, "t") == ("allow", "r")
    assert effect(engine, Principal("did:key:z6MkABC", "admin", 0.5, 1), "t")[0] == "allow"
    for p in [
        Principal("bot", "executor", 0.9, 0),
        Principal("agent-1", "planner", 0.9, 0),
        Principal("agent-1", "executor", 0.49, 0),
        Principal("agent-1", "executor", 0.96, 0),
        Principal("agent-1", "executor", math.nan, 0),
        Principal("agent-1", "executor", 0.9, 2),
        Principal("agent-1"),  # no trust score: fails closed
    ]:
        assert effect(engine, p, "t")[0] == "deny", p


def test_argument_predicates() -> None:
    engine = PolicyEngine.from_yaml(
        r"""
rules:
  - {id: eq, effect: allow, action: {tool: eq}, when: {args: {$.x: {equals: 1}}}}
  - {id: eqs, effect: allow, action: {tool: eqs}, when: {args: {$.x: {equals: "1"}}}}
  - {id: in, effect: allow, action: {tool: in}, when: {args: {$.x: {in: [a, 2.5, true, null]}}}}
  - {id: glob, effect: allow, action: {tool: glob}, when: {args: {$.x: {glob: "*@corp.com"}}}}
  - {id: re, effect: allow, action: {tool: re}, when: {args: {$.x: {regex: '^rm\s+-rf'}}}}
  - {id: rng, effect: allow, action: {tool: rng}, when: {args: {$.x: {range: [null, 10]}}}}
  - {id: ex, effect: allow, action: {tool: ex}, when: {args: {'$.x[0]': {exists: true}}}}
  - {id: nex, effect: allow, action: {tool: nex}, when: {args: {$.x: {exists: false}}}}
  - {id: not, effect: allow, action: {tool: not}, when: {args: {$.x: {not: {glob: "/tmp/*"}}}}}
  - {id: deep, effect: allow, action: {tool: deep}, when: {args: {'$.a["b.c"][1]': {equals: z}}}}
"""
    )
    cases: list[tuple[str, Any, str]] = [
        ("eq", 1, "allow"),
        ("eq", 1.0, "allow"),
        ("eq", True, "deny"),
        ("eq", "1", "allow"),  # a numeric string compares as the number it spells
        ("eq", "1.5", "deny"),
        ("eqs", "1", "allow"),
        ("eqs", 1, "deny"),
        ("in", "a", "allow"),
        ("in", 2.5, "allow"),
        ("in", True, "allow"),
        ("in", None, "allow"),
        ("in", 1, "deny"),
        ("in", False, "deny"),
        ("in", ["a"], "deny"),
        ("glob", "bob@corp.com", "allow"),
        ("glob", "bob@corp.com.evil", "deny"),
        ("glob", 5, "deny"),
        ("re", "rm  -rf /", "allow"),
        ("re", "sudo rm -rf /", "deny"),
        ("rng", -5, "allow"),
        ("rng", 10, "allow"),
        ("rng", 10.001, "deny"),
        ("rng", "1", "allow"),
        ("rng", "11", "deny"),
        ("rng", "1 ", "deny"),  # not exactly a number: no verdict, and an allow needs one
        ("rng", True, "deny"),
        ("rng", 2**70, "deny"),
        ("rng", -(2**70), "allow"),
        ("ex", [0], "allow"),
        ("ex", [], "deny"),
        ("ex", {"0": 1}, "deny"),
        ("ex", (1,), "allow"),
        ("nex", None, "deny"),
        ("not", "/etc/passwd", "allow"),
        ("not", "/tmp/x", "deny"),
        ("not", 3, "deny"),  # a glob cannot judge 3, nor can its `not`: no allow
    ]
    for tool, x, want in cases:
        assert effect(engine, EXEC, tool, {"x": x})[0] == want, (tool, x)
    assert effect(engine, EXEC, "nex", {})[0] == "allow"
    assert effect(engine, EXEC, "not", {})[0] == "allow"  # missing satisfies `not`
    assert effect(engine, EXEC, "deep", {"a": {"b.c": ["y", "z"]}})[0] == "allow"
    assert effect(engine, EXEC, "deep", {"a": {"b": {"c": ["y", "z"]}}})[0] == "deny"


def test_bounds_combine_and_are_exclusive_where_asked() -> None:
    engine = PolicyEngine.from_yaml(
        "rules: [{id: r, effect: allow, when: {args: {$.n: {gt: 0, lte: 10}}}}]"
    )
    got = [effect(engine, EXEC, "t", {"n": n})[0] for n in (0, 1e-300, 10, 10.0, 10.5)]
    assert got == ["deny", "allow", "allow", "allow", "deny"]


def test_context_labels_step_and_time() -> None:
    engine = PolicyEngine.from_yaml(
        """
rules:
  - id: r
    effect: allow
    when:
      context:
        labels_any: [a, b]
        labels_all: c
        labels_none: [tainted]
        step: [2, null]
        time: {hours: ["09:00", "17:00"], days: [mon-fri], after: 2025-01-01, before: 2027-01-01}
"""
    )

    def ctx(**k: Any) -> Context:
        base: dict[str, Any] = {"step": 2, "labels": frozenset({"a", "c"}), "now": NOON_THURSDAY}
        return Context(**{**base, **k})

    assert effect(engine, EXEC, "t", context=ctx())[0] == "allow"
    assert effect(engine, EXEC, "t", context=ctx(labels=frozenset({"b", "c", "x"})))[0] == "allow"
    for bad in [
        ctx(labels=frozenset({"c"})),
        ctx(labels=frozenset({"a"})),
        ctx(labels=frozenset({"a", "c", "tainted"})),
        ctx(step=1),
        ctx(now=NOON_THURSDAY - 4 * 3600),  # 08:00
        ctx(now=NOON_THURSDAY + 5 * 3600),  # 17:00, end excluded
        ctx(now=NOON_THURSDAY + 2 * 86400),  # Saturday
        ctx(now=NOON_THURSDAY + 400 * 86400),  # 2027
        ctx(now=math.inf),
    ]:
        assert effect(engine, EXEC, "t", context=bad)[0] == "deny", bad


def test_hours_wrap_past_midnight() -> None:
    engine = PolicyEngine.from_yaml(
        'rules: [{id: night, effect: allow, when: {context: {time: {hours: ["22:00", "06:00"]}}}}]'
    )
    midnight = NOON_THURSDAY - 12 * 3600
    got = [
        effect(engine, EXEC, "t", context=Context(now=midnight + h * 3600))[0]
        for h in (-1, 0, 5.99, 6, 12, 21.99, 22)
    ]
    assert got == ["allow", "allow", "allow", "deny", "deny", "deny", "allow"]


def test_tool_globs_and_index() -> None:
    engine = PolicyEngine.from_yaml(
        r"""
rules:
  - {id: fs, effect: allow, action: {tool: "fs.*"}}
  - {id: mail, effect: allow, action: {tool: "{send,draft}_email"}}
  - {id: q, effect: allow, action: {tool: "read_?"}}
  - {id: lit, effect: allow, action: {tool: 'star\*'}}
  - {id: cls, effect: deny, action: {tool: "fs.[!r]*"}}
"""
    )
    assert effect(engine, EXEC, "fs.read") == ("allow", "fs")
    assert effect(engine, EXEC, "fs.write") == ("deny", "cls")
    assert effect(engine, EXEC, "draft_email") == ("allow", "mail")
    assert effect(engine, EXEC, "read_x") == ("allow", "q")
    assert effect(engine, EXEC, "read_xy")[0] == "deny"
    assert effect(engine, EXEC, "star*") == ("allow", "lit")
    assert effect(engine, EXEC, "starry")[0] == "deny"


def test_yaml_text_fields_are_taken_as_written() -> None:
    engine = PolicyEngine.from_yaml("rules: [{id: r, effect: allow, principal: {role: no}}]")
    assert effect(engine, Principal("a", "no", 1.0), "t")[0] == "allow"
    engine = PolicyEngine.from_yaml(
        "rules: [{id: r, effect: allow, when: {args: {$.x: {equals: yes}}}}]"
    )
    assert effect(engine, EXEC, "t", {"x": True})[0] == "allow"


# ---- the docs ----------------------------------------------------------------------------------


def doc_policies() -> list[str]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.S)
    return [b for b in blocks if b.lstrip().startswith("rules:")]


def test_every_policy_in_the_docs_loads() -> None:
    blocks = doc_policies()
    assert len(blocks) >= 3
    for b in blocks:
        PolicyEngine.from_yaml(b)


def test_doc_example_planner_executor() -> None:
    engine = PolicyEngine.from_yaml(next(b for b in doc_policies() if "planner-no-tools" in b))
    planner = Principal("planner-1", "planner", 1.0)
    at = Context(step=3, now=NOON_THURSDAY)
    assert effect(engine, planner, "read_file", context=at) == ("deny", "planner-no-tools")
    assert effect(engine, EXEC, "read_file", context=at) == ("allow", "executor-read")
    assert effect(engine, EXEC, "write_file", context=at) == ("allow", "executor-write-step-3")
    early = Context(step=1, now=NOON_THURSDAY)
    assert effect(engine, EXEC, "write_file", context=early) == ("deny", DEFAULT_RULE_ID)
    deep = Principal("sub-agent", "executor", 0.9, 2)
    assert effect(engine, deep, "write_file", context=at) == ("deny", "no-deep-writes")
    assert effect(engine, deep, "read_file", context=at) == ("allow", "executor-read")


def test_doc_example_prompt_injection() -> None:
    engine = PolicyEngine.from_yaml(next(b for b in doc_policies() if "untrusted-data" in b))
    clean = Context(now=NOON_THURSDAY)
    tainted = Context(labels=frozenset({"untrusted-data-seen"}), now=NOON_THURSDAY)
    outside = {"to": "attacker@evil.example", "body": "secrets"}
    inside = {"to": "bob@corp.example", "body": "hi"}
    assert effect(engine, EXEC, "send_email", outside, clean) == ("allow", "email-internal")
    assert effect(engine, EXEC, "send_email", outside, tainted) == (
        "deny",
        "no-exfil-after-untrusted-input",
    )
    assert effect(engine, EXEC, "send_email", inside, tainted) == ("allow", "email-internal")
    assert effect(engine, EXEC, "send_email", {}, tainted)[0] == "deny"
    assert effect(engine, EXEC, "shell", {"cmd": "ls"}, tainted)[0] == "require_approval"
    rule = engine.rule("no-exfil-after-untrusted-input")
    assert rule is not None and rule.reason and "untrusted" in rule.reason


def test_doc_example_payments() -> None:
    engine = PolicyEngine.from_yaml(next(b for b in doc_policies() if "pay-small" in b))
    card = {"number": "4111111111111111", "cvv": "123"}
    pay = {"amount": 250, "currency": "EUR", "card": card}
    d = both(engine, EXEC, "payments.transfer", pay)
    assert (d.effect, d.rule_id) == ("redact", "pay-small")
    assert [r.path for r in d.redactions] == ["$.card.number", "$.card.cvv"]
    assert effect(engine, EXEC, "payments.transfer", {**pay, "amount": 5000})[0] == (
        "require_approval"
    )
    assert effect(engine, EXEC, "payments.transfer", {**pay, "amount": 60000}) == (
        "deny",
        "pay-over-ceiling",
    )
    assert effect(engine, EXEC, "payments.transfer", {**pay, "currency": "BTC"})[0] == "deny"
    saturday = Context(now=NOON_THURSDAY + 2 * 86400)
    assert effect(engine, EXEC, "payments.transfer", pay, saturday)[0] == "deny"
    weak = Principal("agent-7", "executor", 0.5)
    assert effect(engine, weak, "payments.transfer", pay)[0] == "deny"


# ---- requests the engine refuses to read --------------------------------------------------------


def test_unreadable_requests_fail_closed() -> None:
    engine = PolicyEngine.from_yaml(
        "rules: [{id: r, effect: allow, when: {args: {$.x: {glob: '*'}}}}]"
    )
    with pytest.raises(InvalidRequest, match="not valid Unicode"):
        engine.decide(EXEC, "t", {"x": "a\udc80"}, Context(now=0.0))
    with pytest.raises(InvalidRequest):
        engine.decide(EXEC, "t\udc80", {}, Context(now=0.0))
    with pytest.raises(InvalidRequest):
        engine.decide(EXEC, "t", {}, Context(step=2**64, now=0.0))
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        engine.decide_json(EXEC, "t", b"{nope", Context(now=0.0))
    with pytest.raises(TypeError, match="labels must be strings"):
        engine.decide(EXEC, "t", {}, Context(labels=frozenset({1}), now=0.0))  # type: ignore[arg-type]
    # Paths no rule tests are never read, so an unreadable value there does not matter.
    assert engine.decide(EXEC, "t", {"x": "ok", "y": "\udc80"}, Context(now=0.0)).effect == "allow"


# ---- invalid policies ----------------------------------------------------------------------------


def problems(text: str) -> list[tuple[int, str]]:
    with pytest.raises(PolicyError) as info:
        PolicyEngine.from_yaml(text)
    assert str(info.value).startswith("invalid policy")
    return [(p.line, f"{p.path}: {p.message}") for p in info.value.problems]


RULE = "rules:\n  - id: a\n    effect: allow\n"
PRINCIPAL = RULE + "    principal: "  # line 4
WHEN = RULE + "    when: "  # line 4
CTX = RULE + "    when:\n      context: "  # line 5
ARGS = RULE + "    when:\n      args:\n        $.a: "  # line 6


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("rules: [", 2, "not valid YAML"),
        ("", 1, "empty"),
        ("- 1", 1, "expected a mapping"),
        ("version: 2\nrules: []", 1, "unsupported version"),
        ("rules: []\nrulez: []", 2, "unknown key 'rulez' (did you mean 'rules'?)"),
        ("rules:\n  - id: a\n    effect: alow", 3, "did you mean 'allow'"),
        ("rules:\n  - effect: allow", 2, "needs 'id'"),
        ("rules:\n  - {id: a, effect: allow}\n  - {id: a, effect: deny}", 3, "duplicate rule id"),
        ("rules:\n  - {id: a, effect: allow, id: b}", 2, "duplicate key 'id'"),
        ("rules:\n  - {id: 'a b', effect: allow}", 2, "rule id 'a b'"),
        ("rules:\n  - {id: a, effect: allow, action: {tool: '[ab'}}", 2, "unclosed '['"),
        ("rules:\n  - {id: a, effect: allow, action: {}}", 2, "needs 'tool'"),
        (PRINCIPAL + "{min_trust: high}", 4, "a number"),
        (
            PRINCIPAL + "{min_trust: 0.9, max_trust: 0.1}",
            4,
            "above max",
        ),
        (
            PRINCIPAL + "{max_delegation_depth: -1}",
            4,
            "0 or more",
        ),
        (
            WHEN + "{args: {amount: {gt: 1}}}",
            4,
            "starts with '$'",
        ),
        (
            WHEN + "{args: {'$.a[*]': {gt: 1}}}",
            4,
            "wildcards",
        ),
        (
            ARGS + "{range: [5, 1]}",
            6,
            "empty range",
        ),
        (
            ARGS + "{gt: 5, lt: 5}",
            6,
            "leave nothing",
        ),
        (
            ARGS + "{gt: 1, range: [0, 9]}",
            6,
            "already given",
        ),
        (
            ARGS + "{}",
            6,
            "empty predicate",
        ),
        (
            ARGS + "{equals: [1]}",
            6,
            "a string, number, boolean or null",
        ),
        (
            ARGS + "{equals: 2026-01-01}",
            6,
            "not a JSON value",
        ),
        (
            ARGS + "{equals: 99999999999999999999}",
            6,
            "64-bit",
        ),
        (
            ARGS + "{gt: .nan}",
            6,
            "finite",
        ),
        (
            ARGS + "{regex: '(?<=a)b'}",
            6,
            "look-around",
        ),
        (
            ARGS + "{regex: '(a'}",
            6,
            "invalid regex",
        ),
        (
            ARGS + "{regex: 'a++'}",
            6,
            "possessive",
        ),
        (
            ARGS + "{regex: '\\<a'}",
            6,
            "assertion",
        ),
        (
            ARGS + "{regex: '[[:alpha:]]'}",
            6,
            "nested set",
        ),
        (
            ARGS + "{not: {equals: 1, glob: b}}",
            6,
            "exactly one test",
        ),
        (
            CTX + "{time: {hours: ['09:00', '9am']}}",
            5,
            "time of day",
        ),
        (
            CTX + "{time: {hours: ['09:00', '09:00']}}",
            5,
            "window is empty",
        ),
        (
            CTX + "{time: {days: [funday]}}",
            5,
            "weekday",
        ),
        (
            CTX + "{time: {after: tomorrow}}",
            5,
            "ISO 8601",
        ),
        (
            CTX + "{step: 1.5}",
            5,
            "an integer",
        ),
        (
            CTX + "{labels_any: []}",
            5,
            "non-empty list",
        ),
        ("rules:\n  - id: a\n    effect: redact", 2, "needs 'redact'"),
        ("rules:\n  - id: a\n    effect: allow\n    redact: [$.x]", 4, "only a redact rule"),
        ("rules:\n  - id: a\n    effect: redact\n    redact: [x]", 4, "starts with '$'"),
    ],
)
def test_invalid_policies_name_line_and_reason(text: str, line: int, reason: str) -> None:
    found = problems(text)
    assert any(ln == line and reason in msg for ln, msg in found), found


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        "rules:\n  - {id: a, effect: alow}\n  - {id: b, effect: allow, principal: {role: []}}\n"
        "  - {id: c, effect: deny, action: {tool: '{x'}}\n"
    )
    assert [ln for ln, _ in found] == [2, 3, 4]


def test_policy_files_and_errors_name_the_file(tmp_path: Path) -> None:
    good = tmp_path / "p.yaml"
    good.write_text("rules: [{id: r, effect: allow}]\n")
    assert len(PolicyEngine.from_yaml(good)) == 1
    assert len(PolicyEngine.from_yaml(str(good))) == 1
    bad = tmp_path / "bad.yml"
    bad.write_text("rules: [{id: r, effect: nope}]\n")
    with pytest.raises(PolicyError, match=re.escape(str(bad))):
        PolicyEngine.from_file(bad)
    with pytest.raises(PolicyError, match="cannot read"):
        PolicyEngine.from_yaml(tmp_path / "missing.yaml")


def test_rust_rejects_a_tampered_normalised_policy_with_the_rule_line() -> None:
    policy = load_policy("rules:\n  - {id: r, effect: allow}\n")
    raw = json.loads(to_json(policy))
    raw["rules"][0]["tools"] = ["[z-a]"]
    with pytest.raises(ValueError, match=r"rule 'r' \(line 2\).*out of order"):
        core.CompiledPolicy(json.dumps(raw))


# ---- grammars ------------------------------------------------------------------------------------


def test_glob_grammar() -> None:
    def m(glob: str, s: str) -> bool:
        return compile_glob(glob).fullmatch(s) is not None

    assert m("/etc/*", "/etc/ssl/certs/ca.pem") and m("*", "") and m("a*", "a\nb")
    assert m("[]]", "]") and m("[!]]", "a") and not m("[!]]", "]") and m("[a-]", "-")
    assert m("x{,y}", "x") and m("x{a,{b,c}d}", "xcd") and m("a,b}", "a,b}")
    assert m("[&&]~-", "&~-") and m(r"\<", "<") and not m("a.b", "axb")
    for bad in ["[abc", "{a,b", "ab\\", "[z-a]", "{" * 40]:
        with pytest.raises(PatternError):
            compile_glob(bad)


def test_path_grammar_round_trips() -> None:
    assert parse_path('$.a.b[0][\'c.d\']["e\\"f"]') == ["a", "b", 0, "c.d", 'e"f']
    for text in ["$.a", "$.a_b-c[12]", '$["x y"]', '$["0"]', '$["a\\\\b"]']:
        assert render_path(parse_path(text)) == text
    for bad in ["a", "$", "$.", "$.0", "$[", "$[01]", "$['a'", "$[*]", "$.a b"]:
        with pytest.raises(PatternError):
            parse_path(bad)
