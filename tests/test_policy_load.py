"""Loading a policy fast must not change what is loaded: the memoised tag resolution gives the
tree PyYAML's own safe loaders give, and the per-load memos (values, globs, regexes, paths) still
report a problem at every line it occurs, with the same message."""

from __future__ import annotations

import pytest
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from routeguard.enforce import policy as policy_module
from routeguard.enforce.engine import PolicyEngine
from routeguard.enforce.model import Equals, In, to_json
from routeguard.enforce.policy import load_policy
from routeguard.errors import PolicyError

SCALARS = """\
plain: [1, -2, 0x1f, 0o17, 1_000, 1.5, .inf, -.INF, .nan, 1e3, true, False, yes, NO, on, off]
nulls: [~, null, Null, "", '', ]
quoted: ["1", '2.5', "true", "~", "null", "2001-12-14", "<<", "="]
times: [2001-12-14, 2001-12-14t21:59:43.10-05:00, 2001-12-14 21:59:43.10]
tagged: [!!str 5, !!int "7", !!float "1", ! 12, !custom x, !!binary aGk=]
texts: [svc.read_1, "$.a", '*.csv', a b c, =, <<, "multi
  line"]
block: |
  some
  text
folded: >-
  12
repeat: [1, 1, "1", yes, "yes", yes, ~, "~"]
nested: {a: {b: [1, {c: d}]}, "1": 1, 1: "1"}
"""


def walk(node: Node) -> list[tuple[object, ...]]:
    """Every node's kind, tag, value, style and position, depth first."""
    out: list[tuple[object, ...]] = []
    stack = [node]
    while stack:
        n = stack.pop()
        start, end = n.start_mark, n.end_mark
        pos = (start.line, start.column, end.line, end.column)
        if isinstance(n, ScalarNode):
            out.append(("scalar", n.tag, n.value, n.style or None, *pos))
        elif isinstance(n, SequenceNode):
            out.append(("seq", n.tag, len(n.value), n.flow_style, *pos))
            stack.extend(reversed(n.value))
        elif isinstance(n, MappingNode):
            out.append(("map", n.tag, len(n.value), n.flow_style, *pos))
            stack.extend(x for kv in reversed(n.value) for x in reversed(kv))
    return out


@pytest.mark.parametrize("loader", ["SafeLoader", "CSafeLoader"])
def test_compose_gives_pyyaml_tags_and_positions(loader: str) -> None:
    if not hasattr(yaml, loader):
        pytest.skip(f"PyYAML built without {loader}")
    fast = policy_module._compose(SCALARS)
    plain = yaml.compose(SCALARS, Loader=getattr(yaml, loader))
    assert fast is not None and plain is not None
    assert walk(fast) == walk(plain)


TOOLS = ("svc.read_1", '"svc.*"', '[a.b, "c.{d,e}"]')
HIGHS = ("100", "1.0e+3", "0x400")
REGEXES = ("'^git (status|log)'", "'rm\\s+-rf'")
FLAGS = ("yes", '"yes"', "1", '"1"', "~")


def rules_text(n: int) -> str:
    """``n`` rules that repeat a few values, patterns and paths, as a large policy does."""
    out = ["rules:"]
    for i in range(n):
        out += [
            f"  - id: r{i}",
            f"    effect: {('allow', 'deny', 'require_approval')[i % 3]}",
            f"    principal: {{role: {('executor', 'no', 'yes')[i % 3]}, min_trust: 0.{i % 9}}}",
            f"    action: {{tool: {TOOLS[i % 3]}}}",
            "    when:",
            "      args:",
            f"        $.amount: {{gt: {i % 4}, lte: {HIGHS[i % 3]}}}",
            f"        $.to: {{not: {{glob: '*@corp{i % 2}.example'}}}}",
            f"        $.cmd: {{regex: {REGEXES[i % 2]}}}",
            f"        $.flag: {{equals: {FLAGS[i % 5]}}}",
            "        $.cur: {in: [USD, 1, 1.0, true, null]}",
        ]
    return "\n".join(out) + "\n"


def test_loading_matches_plain_pyyaml_composition(monkeypatch: pytest.MonkeyPatch) -> None:
    text = rules_text(60)
    fast = load_policy(text)
    monkeypatch.setattr(
        policy_module, "_compose", lambda t: yaml.compose(t, Loader=yaml.SafeLoader)
    )
    plain = load_policy(text)
    assert fast == plain
    assert to_json(fast) == to_json(plain)
    assert PolicyEngine(fast).policy == PolicyEngine(plain).policy


def test_values_keep_their_yaml_type_per_tag() -> None:
    p = load_policy(
        """\
rules:
  - {id: a, effect: allow, when: {args: {$.x: {equals: yes}}}}
  - {id: b, effect: allow, when: {args: {$.x: {equals: "yes"}}}}
  - {id: c, effect: allow, when: {args: {$.x: {equals: 1}}}}
  - {id: d, effect: allow, when: {args: {$.x: {equals: "1"}}}}
  - {id: e, effect: allow, when: {args: {$.x: {equals: !!str 1}}}}
  - {id: f, effect: allow, when: {args: {$.x: {in: [1, "1", 1.0, yes, "yes", ~, "~"]}}}}
"""
    )
    tests = [r.args[0].test for r in p.rules]
    assert tests[:5] == [Equals(True), Equals("yes"), Equals(1), Equals("1"), Equals("1")]
    assert [type(t.value) for t in tests[:5] if isinstance(t, Equals)] == [bool, str, int, str, str]
    assert tests[5] == In((1, "1", 1.0, True, "yes", None, "~"))
    assert [type(v) for v in tests[5].values] == [int, str, float, bool, str, type(None), str]


def test_a_repeated_problem_is_reported_on_every_line() -> None:
    text = """\
rules:
  - id: a
    effect: allow
    action: {tool: "svc.{x"}
    when: {args: {$.x: {regex: "a++", equals: .nan}, $x: {equals: 1}}}
  - id: b
    effect: allow
    action: {tool: "svc.{x"}
    when: {args: {$.x: {regex: "a++", equals: .nan}, $x: {equals: 1}}}
  - id: c
    effect: allow
    action: {tool: svc.ok}
    when: {args: {$.y: {regex: "a+", equals: 99999999999999999999}}}
  - id: d
    effect: allow
    when: {args: {$.y: {regex: "a+", equals: 99999999999999999999}}}
"""
    with pytest.raises(PolicyError) as e:
        load_policy(text)
    got = [(p.line, p.column, p.path, p.message) for p in e.value.problems]
    glob = "invalid glob 'svc.{x': unclosed '{'"
    regex = "regex 'a++': possessive quantifiers (a++, a*+, a?+, a{n}+) are not supported; "
    regex += "write (?:a+)+ for a repeated repetition"
    path = "unexpected 'x' at offset 1; expected '.name' or '[...]'"
    big = "integer 99999999999999999999 is outside the 64-bit range"
    assert got == [
        (4, 20, "rules[0].action.tool", glob),
        (5, 32, "rules[0].when.args.$.x.regex", regex),
        (5, 47, "rules[0].when.args.$.x.equals", "'.nan' is not a finite number"),
        (5, 54, "rules[0].when.args.$x", path),
        (8, 20, "rules[1].action.tool", glob),
        (9, 32, "rules[1].when.args.$.x.regex", regex),
        (9, 47, "rules[1].when.args.$.x.equals", "'.nan' is not a finite number"),
        (9, 54, "rules[1].when.args.$x", path),
        (13, 46, "rules[2].when.args.$.y.equals", big),
        (16, 46, "rules[3].when.args.$.y.equals", big),
    ]


def test_a_repeated_unknown_or_duplicate_key_is_reported_each_time() -> None:
    text = """\
rules:
  - {id: a, effect: allow, efect: deny, efect: deny}
  - {id: b, effect: allow, id: c}
"""
    with pytest.raises(PolicyError) as e:
        load_policy(text)
    got = [(p.line, p.column, p.message) for p in e.value.problems]
    unknown = "unknown key 'efect' (did you mean 'effect'?); expected one of "
    unknown += "id, effect, description, reason, principal, action, when, redact"
    assert got == [
        (2, 28, unknown),
        (2, 41, unknown),
        (3, 28, "duplicate key 'id' (first given on line 3)"),
    ]
