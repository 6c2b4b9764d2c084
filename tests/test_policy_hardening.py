"""Adversarial-review findings on the policy language (issue #11, item 15), each a regression
test: deny rules that failed open on values of the wrong type and on look-alike tool names.

Every decision is asserted on the compiled engine (from a dict and from JSON text) and on the
reference interpreter, which must agree.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import pytest

from routeguard.enforce import reference
from routeguard.enforce.decision import (
    DEFAULT_RULE_ID,
    TOOL_NAME_RULE_ID,
    Context,
    Decision,
    Principal,
    Request,
)
from routeguard.enforce.engine import PolicyEngine
from routeguard.enforce.names import mixed_scripts, normalize_tool, tool_name_problem
from routeguard.errors import PolicyError

P = Principal("agent-1", "executor", 0.9, 0)
CTX = Context(now=1_767_268_800.0)


def both(engine: PolicyEngine, tool: str, args: dict[str, Any] | None = None) -> Decision:
    """The engine's decision, asserted equal to the reference's (and to decide_json's)."""
    args = args if args is not None else {}
    got = engine.decide(P, tool, args, CTX)
    assert got == reference.decide(engine.policy, Request(P, tool, args, CTX)), (tool, args)
    try:
        text = json.dumps(args, allow_nan=False)
    except (TypeError, ValueError):
        return got  # NaN, Decimal...: not JSON
    assert engine.decide_json(P, tool, text, CTX) == got, (tool, args)
    return got


# ---- values a predicate cannot judge -----------------------------------------------------------

AMOUNTS = PolicyEngine.from_yaml(
    """
rules:
  - id: big
    effect: deny
    when: {args: {$.amount: {gt: 1000}}}
  - id: all
    effect: allow
"""
)


@pytest.mark.parametrize(
    "amount",
    [
        "5000",
        "1e4",
        "5000.5",
        [5000],
        {"value": 5000},
        math.nan,
        True,
        False,
        None,
        "5_000",
        " 5000",
        "+5000",
        "0x1388",
        "NaN",
        "five thousand",
        Decimal(5000),
        5000,
        math.inf,
        2**70,
    ],
)
def test_a_numeric_deny_denies_what_it_cannot_read_as_a_small_number(amount: Any) -> None:
    assert both(AMOUNTS, "pay", {"amount": amount}) == Decision("deny", "big")


@pytest.mark.parametrize("amount", [5, "5", 1000, "1000", "-1e9", 999.5, "999.5", -math.inf])
def test_a_numeric_deny_lets_small_numbers_and_numeric_strings_through(amount: Any) -> None:
    assert both(AMOUNTS, "pay", {"amount": amount}) == Decision("allow", "all")


def test_a_missing_argument_is_judged_not_unknown() -> None:
    # The documented rule stands: a path that does not resolve satisfies no value test.
    assert both(AMOUNTS, "pay", {}) == Decision("allow", "all")
    assert both(AMOUNTS, "pay", {"other": [1]}) == Decision("allow", "all")


def test_string_and_equality_denies_fail_closed_on_other_types() -> None:
    engine = PolicyEngine.from_yaml(
        """
rules:
  - {id: root, effect: deny, when: {args: {$.user: {equals: root}}}}
  - {id: etc, effect: deny, when: {args: {$.path: {glob: "/etc/*"}}}}
  - {id: rm, effect: deny, when: {args: {$.cmd: {regex: '^rm\\b'}}}}
  - {id: force, effect: deny, when: {args: {$.force: {equals: true}}}}
  - {id: all, effect: allow}
"""
    )
    for args, rule in [
        ({"user": ["root"]}, "root"),
        ({"user": 0}, "root"),
        ({"user": None}, "root"),
        ({"user": "alice"}, "all"),
        ({"path": ["/etc/shadow"]}, "etc"),
        ({"path": {"p": "/etc/shadow"}}, "etc"),
        ({"path": "/tmp/x"}, "all"),
        ({"cmd": ["rm", "-rf", "/"]}, "rm"),
        ({"cmd": "ls"}, "all"),
        ({"force": "true"}, "force"),
        ({"force": 1}, "force"),
        ({"force": False}, "all"),
    ]:
        assert both(engine, "t", args).rule_id == rule, args


def test_an_allow_predicate_that_cannot_judge_the_value_does_not_allow() -> None:
    engine = PolicyEngine.from_yaml(
        """
rules:
  - {id: small, effect: allow, when: {args: {$.amount: {lte: 100}}}}
  - {id: tmp, effect: allow, action: {tool: write}, when: {args: {$.path: {not: {glob: "/etc/*"}}}}}
  - {id: cur, effect: allow, action: {tool: fx}, when: {args: {$.cur: {in: [USD, EUR]}}}}
"""
    )
    for amount in [[50], {"v": 50}, math.nan, True, None, "fifty", "5O"]:
        assert both(engine, "pay", {"amount": amount}) == Decision("deny", DEFAULT_RULE_ID)
    for amount in [50, "50", "-3.5"]:
        assert both(engine, "pay", {"amount": amount}) == Decision("allow", "small")
    # `not` of something the glob cannot judge is not a yes: a list of paths gets no allow.
    assert both(engine, "write", {"path": ["/etc/passwd"]}).rule_id == DEFAULT_RULE_ID
    assert both(engine, "write", {"path": "/tmp/x"}).rule_id == "tmp"
    assert both(engine, "fx", {"cur": ["USD"]}).rule_id == DEFAULT_RULE_ID
    assert both(engine, "fx", {"cur": "USD"}).rule_id == "cur"


def test_approval_and_redaction_apply_when_their_predicates_cannot_judge() -> None:
    engine = PolicyEngine.from_yaml(
        """
rules:
  - {id: big, effect: require_approval, when: {args: {$.amount: {gt: 1000}}}}
  - {id: mask, effect: redact, when: {args: {$.kind: {equals: card}}}, redact: $.number}
  - {id: all, effect: allow}
"""
    )
    assert both(engine, "pay", {"amount": ["5000"]}) == Decision("require_approval", "big")
    assert both(engine, "pay", {"amount": 10}) == Decision("allow", "all")
    got = both(engine, "pay", {"kind": ["card"], "number": "4111"})
    assert got.effect == "redact"
    assert [r.path for r in got.redactions] == ["$.number"]


def test_predicates_combine_by_kleene_logic() -> None:
    engine = PolicyEngine.from_yaml(
        """
rules:
  - {id: eur-big, effect: deny, when: {args: {$.amount: {gt: 1000}, $.cur: {equals: EUR}}}}
  - {id: all, effect: allow}
"""
    )
    # Unknown AND definitely-false is false: the rule cannot apply whatever the amount is.
    assert both(engine, "fx", {"amount": [5000], "cur": "USD"}).rule_id == "all"
    assert both(engine, "fx", {"amount": [5000], "cur": "EUR"}).rule_id == "eur-big"
    assert both(engine, "fx", {"amount": 5000, "cur": None}).rule_id == "eur-big"
    assert both(engine, "fx", {"amount": 10, "cur": None}).rule_id == "all"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("-0", 0),
        ("5000", 5000),
        ("9223372036854775807", 2**63 - 1),
        ("9223372036854775808", 2.0**63),
        ("2.5", 2.5),
        ("1E3", 1000.0),
        ("-1e-2", -0.01),
        ("1e400", math.inf),
        ("1" * 5000, math.inf),
    ],
)
def test_numeric_strings_read_as_json_numbers(text: str, value: float) -> None:
    got = reference.numeric_str(text)
    assert got == value
    assert type(got) is type(value)


@pytest.mark.parametrize(
    "text",
    ["", "-", "+1", " 1", "1 ", "01", "1.", ".5", "1_000", "0x10", "NaN", "inf", "1e", "\u0661"],
)
def test_strings_that_are_not_exactly_numbers_are_not_numbers(text: str) -> None:
    assert reference.numeric_str(text) is None


# ---- tool names --------------------------------------------------------------------------------

MAIL = PolicyEngine.from_yaml(
    """
rules:
  - {id: no-mail, effect: deny, action: {tool: send_email}}
  - {id: no-shell, effect: deny, action: {tool: "Shell.*"}}
  - {id: all, effect: allow}
"""
)


@pytest.mark.parametrize(
    "tool",
    [
        "send_email",
        "SEND_EMAIL",
        "Send_Email",
        "send_email\u200b",  # zero-width space
        "send\u00ad_email",  # soft hyphen
        "\ufeffsend_email",  # byte-order mark
        "send_email\u2060",  # word joiner
        "send_e\u200dmail",  # zero-width joiner
        "send_email\n",
        " send_email ",
        "\uff53\uff45\uff4e\uff44_email",  # fullwidth letters
        "send_\U0001d41eMAIL",  # mathematical bold e
        "send_email\ufe0f",  # variation selector
    ],
)
def test_a_deny_on_a_tool_stops_every_spelling_of_it(tool: str) -> None:
    assert both(MAIL, tool) == Decision("deny", "no-mail")


def test_rule_tool_globs_are_normalised_too() -> None:
    assert both(MAIL, "shell.exec") == Decision("deny", "no-shell")
    assert both(MAIL, "SHELL.exec") == Decision("deny", "no-shell")
    assert MAIL.policy.rules[1].tools == ("shell.*",)


@pytest.mark.parametrize(
    "tool",
    [
        "send_ema\u0456l",  # Cyrillic i
        "s\u0435nd_email",  # Cyrillic e
        "send_em\u03b1il",  # Greek alpha
        "\u0455end_email",  # Cyrillic dze
        "pay\u0663",  # Arabic-Indic digit three
    ],
)
def test_a_tool_name_that_mixes_scripts_is_refused(tool: str) -> None:
    assert both(MAIL, tool) == Decision("deny", TOOL_NAME_RULE_ID)
    why = tool_name_problem(normalize_tool(tool))
    assert why is not None
    assert "mixes scripts" in why
    assert "Latin" in why


@pytest.mark.parametrize(
    "tool",
    [
        "\u043e\u0442\u043f\u0440\u0430\u0432\u0438\u0442\u044c",  # all Cyrillic
        "\u691c\u7d22_\u30c4\u30fc\u30eb",  # Han + Katakana (Japanese)
        "search_\u691c\u7d22",  # Latin + Han
        "caf\u00e9",  # Latin with an accent
        "e\u0301tape",  # combining accent (NFKC composes it)
    ],
)
def test_single_script_and_cjk_names_are_not_refused(tool: str) -> None:
    assert mixed_scripts(normalize_tool(tool)) == ()
    assert both(MAIL, tool) == Decision("allow", "all")


def test_a_policy_naming_a_mixed_script_tool_does_not_load() -> None:
    with pytest.raises(PolicyError) as info:
        PolicyEngine.from_yaml(
            "rules:\n  - id: a\n    effect: deny\n    action: {tool: send_ema\u0456l}\n"
        )
    [problem] = info.value.problems
    assert problem.line == 4
    assert "mixes scripts (Cyrillic, Latin)" in problem.message


def test_a_flood_of_distinct_tool_names_is_decided_and_cached_boundedly() -> None:
    engine = PolicyEngine.from_yaml(
        "rules: [{id: no-mail, effect: deny, action: {tool: send_email}}]"
    )
    for i in range(5000):
        assert engine.decide(P, f"T{i}", {}, CTX).rule_id == DEFAULT_RULE_ID
        assert engine.decide(P, f"t{i}\u0456", {}, CTX).rule_id == TOOL_NAME_RULE_ID
    assert len(engine._tool_names) <= 4096
    assert engine.decide(P, "SEND_EMAIL", {}, CTX).rule_id == "no-mail"  # past the cache
    assert engine.decide(P, "send_ema\u0456l", {}, CTX).rule_id == TOOL_NAME_RULE_ID
