"""Load a YAML tool-call policy, validate it, normalise it (the language: ``docs/policy.md``).

Data flow: ``yaml.compose`` gives a node tree that still knows every line and column; the
loader (typed node reads from ``enforce/nodes.py``) walks it against the schema, so an error
names the line, the key path and the reason, and every problem in the file is reported at
once, not just the first. It parses the small grammars inside (``enforce/patterns.py``: globs,
JSON paths, regexes, times) and builds a normalised :class:`Policy` of msgspec Structs
(``enforce/model.py``): one flat rule list in file order, defaults made explicit, numeric
conditions as closed/open bounds, paths pre-split. That one form feeds both the reference
interpreter (``enforce/reference.py``) and, encoded as JSON by :func:`to_json`, the compiled
Rust matcher (``rust/policy/compile.rs``), so the two cannot read a policy differently. String
fields take the scalar's text as written (``role: no`` is the role ``"no"``); values compared
with arguments (``equals``, ``in``, bounds) keep their YAML types.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from routeguard.enforce.model import (
    Bounds,
    Equals,
    Exists,
    Glob,
    In,
    Not,
    Number,
    PathRef,
    Policy,
    Pred,
    Range,
    Regex,
    Rule,
    RuleEffect,
    Test,
    TimeWindow,
    to_json,
)
from routeguard.enforce.names import normalize_tool, tool_name_problem
from routeguard.enforce.nodes import Invalid, NodeReader, describe, first_line
from routeguard.enforce.patterns import (
    PatternError,
    compile_glob,
    compile_regex,
    parse_days,
    parse_instant,
    parse_path,
    parse_time_of_day,
    render_path,
)
from routeguard.errors import PolicyError, PolicyProblem

__all__ = ["EFFECTS", "Policy", "RegexCheck", "Rule", "load_policy", "load_policy_file", "to_json"]

RegexCheck = Callable[[str], str | None]

EFFECTS: tuple[RuleEffect, ...] = ("allow", "deny", "require_approval", "redact")
_RULE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/@-]{0,127}")
_BOUND_OPS = ("range", "gt", "gte", "lt", "lte")
_GLOB_SYNTAX = re.compile(r"[*?\[\]{}\\]")  # a glob without these is its own literal text
_KEYS = {
    "policy": ("version", "description", "rules"),
    "rule": ("id", "effect", "description", "reason", "principal", "action", "when", "redact"),
    "principal": (
        "agent",
        "role",
        "min_trust",
        "max_trust",
        "min_delegation_depth",
        "max_delegation_depth",
    ),
    "action": ("tool",),
    "when": ("args", "context"),
    "predicate": ("equals", "in", "glob", "regex", "exists", "not", *_BOUND_OPS),
    "context": ("labels_any", "labels_all", "labels_none", "step", "time"),
    "time": ("hours", "days", "after", "before"),
}


class _Loader(NodeReader):
    """Walks the YAML node tree, collecting problems and building the normalised policy."""

    def __init__(self, regex_check: RegexCheck | None) -> None:
        super().__init__()
        self.regex_check = regex_check
        # Pattern text -> why it is refused (None: accepted), and path text -> its parsed form
        # or why not: a large policy repeats the same few patterns and paths thousands of times.
        self._glob_errors: dict[str, str | None] = {}
        self._regex_errors: dict[str, str | None] = {}
        self._paths: dict[str, tuple[str, tuple[str | int, ...]] | str] = {}

    def section(self, node: Node, path: str, kind: str) -> dict[str, tuple[Node, Node]]:
        """A mapping of the schema part ``kind`` (its keys checked against the schema)."""
        return self.mapping(node, path, kind, _KEYS.get(kind))

    # -- grammar pieces --

    def glob(self, node: Node, path: str, *, tool: bool = False) -> str:
        """A glob; a ``tool`` glob in the canonical spelling calls are compared in
        (``enforce/names.py``), refused if it mixes scripts."""
        text = self.text(node, path, "a glob", allow_empty=True)
        if tool:
            text = normalize_tool(text)
            if (problem := tool_name_problem(text)) is not None:
                raise self.fail(node, path, problem)
        try:
            why = self._glob_errors[text]
        except KeyError:
            why = self._glob_errors[text] = _glob_error(text)
        if why is not None:
            raise self.fail(node, path, why)
        return text

    def globs(self, node: Node, path: str, *, tool: bool = False) -> tuple[str, ...]:
        if isinstance(node, SequenceNode) and node.value:
            return tuple(self.glob(n, f"{path}[{i}]", tool=tool) for i, n in enumerate(node.value))
        self.texts(node, path, "a glob")  # reports an empty list or a non-scalar
        return (self.glob(node, path, tool=tool),)

    def regex(self, node: Node, path: str) -> str:
        text = self.text(node, path, "a regex", allow_empty=True)
        try:
            why = self._regex_errors[text]
        except KeyError:
            why = self._regex_errors[text] = self._regex_error(text)
        if why is not None:
            raise self.fail(node, path, why)
        return text

    def _regex_error(self, text: str) -> str | None:
        """Why the regex ``text`` is refused (by Python's checks or the matcher's), or None."""
        try:
            compile_regex(text)
        except PatternError as e:
            return f"regex {text!r}: {e}"
        why = self.regex_check(text) if self.regex_check is not None else None
        if why is not None:
            return f"regex {text!r} is not supported: {_last_line(why)}"
        return None

    def json_path(self, node: Node, path: str) -> tuple[str, tuple[str | int, ...]]:
        text = self.text(node, path, "a JSON path like $.amount")
        try:
            parsed = self._paths[text]
        except KeyError:
            try:
                segs = parse_path(text)
            except PatternError as e:
                parsed = str(e)
            else:
                parsed = (render_path(segs), tuple(segs))
            self._paths[text] = parsed
        if isinstance(parsed, str):
            raise self.fail(node, path, parsed)
        return parsed

    def bounds(self, node: Node, path: str, *, integer: bool = False) -> Bounds:
        """``[lo, hi]`` inclusive, either end may be null (open)."""
        if not isinstance(node, SequenceNode) or len(node.value) != 2:
            raise self.fail(node, path, "expected [low, high] (use null for an open end)")
        ends: list[Number | None] = []
        for i, n in enumerate(node.value):
            if isinstance(n, ScalarNode) and n.tag == "tag:yaml.org,2002:null":
                ends.append(None)
            else:
                ends.append(self.number(n, f"{path}[{i}]", integer=integer))
        lo, hi = ends
        if lo is None and hi is None:
            raise self.fail(node, path, "a range needs at least one end")
        if lo is not None and hi is not None and lo > hi:
            raise self.fail(node, path, f"empty range: {lo} > {hi}")
        return Bounds(lo, lo is not None, hi, hi is not None)

    # -- sections --

    def predicate(self, node: Node, path: str) -> list[Test]:
        """The tests of one predicate mapping (all must hold); bounds merge into one range."""
        entries = self.section(node, path, "predicate")
        if isinstance(node, MappingNode) and not node.value:
            raise self.fail(
                node, path, f"empty predicate; use one of {', '.join(_KEYS['predicate'])}"
            )
        tests: list[Test] = []
        lo: tuple[Number, bool] | None = None
        hi: tuple[Number, bool] | None = None
        for op, (key_node, v) in entries.items():
            where = f"{path}.{op}"
            try:
                if op == "equals":
                    tests.append(Equals(self.value(v, where)))
                elif op == "in":
                    if not isinstance(v, SequenceNode) or not v.value:
                        raise self.fail(v, where, "expected a non-empty list of values")
                    tests.append(
                        In(tuple(self.value(n, f"{where}[{i}]") for i, n in enumerate(v.value)))
                    )
                elif op == "glob":
                    tests.append(Glob(self.glob(v, where)))
                elif op == "regex":
                    tests.append(Regex(self.regex(v, where)))
                elif op == "exists":
                    tests.append(Exists(self.boolean(v, where)))
                elif op == "not":
                    errors_before = len(self.problems)
                    inner = self.predicate(v, where)
                    if len(self.problems) > errors_before:
                        raise Invalid("the inner test is invalid")
                    if len(inner) != 1:
                        raise self.fail(v, where, "`not` takes exactly one test")
                    tests.append(Not(inner[0]))
                else:
                    if op == "range":
                        b = self.bounds(v, where)
                        new_lo = (b.lo, True) if b.lo is not None else None
                        new_hi = (b.hi, True) if b.hi is not None else None
                    else:
                        n = self.number(v, where)
                        new_lo = (n, op == "gte") if op in ("gt", "gte") else None
                        new_hi = (n, op == "lte") if op in ("lt", "lte") else None
                    if (new_lo and lo) or (new_hi and hi):
                        raise self.fail(key_node, where, "this bound is already given")
                    lo, hi = lo or new_lo, hi or new_hi
            except Invalid:
                continue
        if lo is not None or hi is not None:
            if (
                lo is not None
                and hi is not None
                and (lo[0] > hi[0] or (lo[0] == hi[0] and not (lo[1] and hi[1])))
            ):
                raise self.fail(node, path, f"the bounds leave nothing: {lo[0]} .. {hi[0]}")
            tests.append(
                Range(
                    lo[0] if lo else None,
                    bool(lo and lo[1]),
                    hi[0] if hi else None,
                    bool(hi and hi[1]),
                )
            )
        return tests

    def rule(self, node: Node, path: str) -> Rule:
        entries = self.section(node, path, "rule")
        fields: dict[str, Any] = {"line": node.start_mark.line + 1, "tools": ("*",)}
        for required in ("id", "effect"):
            if required not in entries:
                self.fail(node, path, f"a rule needs '{required}'")
        for key, (_, v) in entries.items():
            where = f"{path}.{key}"
            try:
                if key == "id":
                    rid = self.text(v, where, "a rule id")
                    if not _RULE_ID.fullmatch(rid):
                        raise self.fail(
                            v, where, f"rule id {rid!r} must be 1-128 of letters, digits, _.:/@-"
                        )
                    fields["id"] = rid
                elif key == "effect":
                    effect = self.text(v, where, "an effect")
                    if effect not in EFFECTS:
                        hint = difflib.get_close_matches(effect, EFFECTS, n=1)
                        also = f" (did you mean '{hint[0]}'?)" if hint else ""
                        raise self.fail(
                            v,
                            where,
                            f"unknown effect '{effect}'{also}; expected one of "
                            f"{', '.join(EFFECTS)}",
                        )
                    fields["effect"] = effect
                elif key == "reason":
                    fields["reason"] = self.text(v, where)
                elif key == "description":
                    self.text(v, where)
                elif key == "principal":
                    fields.update(self.principal(v, where))
                elif key == "action":
                    action = self.section(v, where, "action")
                    if "tool" not in action:
                        raise self.fail(
                            v, where, "an action needs 'tool' (a glob or list of globs)"
                        )
                    fields["tools"] = self.globs(action["tool"][1], f"{where}.tool", tool=True)
                elif key == "when":
                    fields.update(self.when(v, where))
                elif key == "redact":
                    if isinstance(v, SequenceNode) and v.value:
                        items = [(n, f"{where}[{i}]") for i, n in enumerate(v.value)]
                    else:
                        items = [(v, where)]
                    refs = []
                    for n, w in items:
                        with contextlib.suppress(Invalid):
                            refs.append(PathRef(*self.json_path(n, w)))
                    fields["redact"] = tuple(refs)
            except Invalid:
                continue
        rule_effect = fields.get("effect")
        if rule_effect == "redact" and "redact" not in entries:
            self.fail(node, path, "a redact rule needs 'redact': the argument paths to mask")
        if rule_effect is not None and rule_effect != "redact" and "redact" in entries:
            self.fail(
                entries["redact"][0],
                f"{path}.redact",
                f"only a redact rule masks arguments; this rule's effect is {rule_effect}",
            )
        if "id" not in fields or "effect" not in fields:
            raise Invalid("incomplete rule")
        return Rule(**fields)

    def principal(self, node: Node, path: str) -> dict[str, Any]:
        entries = self.section(node, path, "principal")
        out: dict[str, Any] = {}
        trust: list[tuple[str, Number, Node]] = []
        depth: list[tuple[str, Number, Node]] = []
        for key, (_, v) in entries.items():
            where = f"{path}.{key}"
            try:
                if key == "agent":
                    out["agents"] = self.globs(v, where)
                elif key == "role":
                    out["roles"] = self.texts(v, where, "a role")
                elif key in ("min_trust", "max_trust"):
                    trust.append((key, self.number(v, where), v))
                else:
                    n = self.number(v, where, integer=True)
                    if n < 0:
                        raise self.fail(v, where, "a delegation depth is 0 or more")
                    depth.append((key, n, v))
            except Invalid:
                continue
        for name, items in (("trust", trust), ("depth", depth)):
            if items:
                found = {k.split("_", 1)[0]: (n, v) for k, n, v in items}
                lo, hi = found.get("min"), found.get("max")
                if lo and hi and lo[0] > hi[0]:
                    self.fail(
                        hi[1], path, f"min {lo[0]} is above max {hi[0]}: the rule never matches"
                    )
                out[name] = Bounds(
                    lo[0] if lo else None, lo is not None, hi[0] if hi else None, hi is not None
                )
        return out

    def when(self, node: Node, path: str) -> dict[str, Any]:
        entries = self.section(node, path, "when")
        out: dict[str, Any] = {}
        if "args" in entries:
            where = f"{path}.args"
            preds: list[Pred] = []
            args_node = entries["args"][1]
            for key_text, (key_node, v) in self.mapping(args_node, where, "args").items():
                try:
                    text, segs = self.json_path(key_node, f"{where}.{key_text}")
                    preds.extend(
                        Pred(text, segs, t) for t in self.predicate(v, f"{where}.{key_text}")
                    )
                except Invalid:
                    continue
            out["args"] = tuple(preds)
        if "context" in entries:
            out.update(self.context(entries["context"][1], f"{path}.context"))
        return out

    def context(self, node: Node, path: str) -> dict[str, Any]:
        entries = self.section(node, path, "context")
        out: dict[str, Any] = {}
        for key, (_, v) in entries.items():
            where = f"{path}.{key}"
            try:
                if key.startswith("labels_"):
                    out[key] = self.texts(v, where, "a label")
                elif key == "step":
                    if isinstance(v, SequenceNode):
                        out["step"] = self.bounds(v, where, integer=True)
                    else:
                        n = self.number(v, where, integer=True)
                        out["step"] = Bounds(n, True, n, True)
                elif key == "time":
                    out["time"] = self.time(v, where)
            except Invalid:
                continue
        return out

    def time(self, node: Node, path: str) -> TimeWindow:
        entries = self.section(node, path, "time")
        if not entries:
            raise self.fail(node, path, "empty time condition")
        hours = days = after = before = None
        for key, (_, v) in entries.items():
            where = f"{path}.{key}"
            if key == "hours":
                if not isinstance(v, SequenceNode) or len(v.value) != 2:
                    raise self.fail(
                        v, where, 'expected ["HH:MM", "HH:MM"] (UTC; may wrap past midnight)'
                    )
                start, end = (
                    self.parsed(n, f"{where}[{i}]", parse_time_of_day, "a time of day")
                    for i, n in enumerate(v.value)
                )
                if start == end or start == 86_400:
                    raise self.fail(v, where, "the window is empty (it starts where it ends)")
                hours = (start, end)
            elif key == "days":
                names = self.texts(v, where, "a weekday")
                try:
                    days = parse_days(list(names))
                except PatternError as e:
                    raise self.fail(v, where, str(e)) from None
            elif key == "after":
                after = self.parsed(v, where, parse_instant, "a date-time")
            else:
                before = self.parsed(v, where, parse_instant, "a date-time")
        if after is not None and before is not None and after >= before:
            raise self.fail(node, path, "'after' is not before 'before': the window is empty")
        return TimeWindow(hours, days, after, before)

    def policy(self, root: Node) -> Policy:
        entries = self.section(root, "", "policy")
        if "version" in entries:
            v = entries["version"][1]
            try:
                if self.value(v, "version") != 1:
                    self.fail(v, "version", "unsupported version; this routeguard reads version 1")
            except Invalid:
                pass
        if "rules" not in entries:
            raise self.fail(
                root, "", "a policy needs 'rules' (a list; an empty list denies everything)"
            )
        rules_node = entries["rules"][1]
        if not isinstance(rules_node, SequenceNode):
            raise self.fail(
                rules_node, "rules", f"expected a list of rules, got {describe(rules_node)}"
            )
        rules: list[Rule] = []
        first_line: dict[str, int] = {}
        for i, n in enumerate(rules_node.value):
            try:
                r = self.rule(n, f"rules[{i}]")
            except Invalid:
                continue
            if r.id in first_line:
                self.fail(
                    n,
                    f"rules[{i}].id",
                    f"duplicate rule id '{r.id}' (first used on line {first_line[r.id]})",
                )
                continue
            first_line[r.id] = r.line
            rules.append(r)
        return Policy(tuple(rules))


def _glob_error(text: str) -> str | None:
    """Why the glob ``text`` is refused, or None."""
    if not _GLOB_SYNTAX.search(text):
        return None  # plain text: it matches itself, nothing to parse
    try:
        compile_glob(text)
    except PatternError as e:
        return f"invalid glob {text!r}: {e}"
    return None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else text


_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = yaml.SafeLoader.DEFAULT_SCALAR_TAG
_SEQ_TAG = yaml.SafeLoader.DEFAULT_SEQUENCE_TAG
_MAP_TAG = yaml.SafeLoader.DEFAULT_MAPPING_TAG


class _ComposeLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    """PyYAML's safe loader, with each node's tag resolved as it would, but once per text.

    PyYAML tries its implicit-type regexes on every plain scalar; a large policy is mostly the
    same keys and values again and again. With no path resolvers (the safe loader has none),
    a quoted scalar is always a string and a plain one's tag depends on its text alone.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._plain_tags: dict[str, str] = {}

    def resolve(self, kind: type[Node], value: str | None, implicit: tuple[bool, bool]) -> str:
        """The tag PyYAML's resolver gives this node."""
        if self.yaml_path_resolvers:
            return str(super().resolve(kind, value, implicit))
        if kind is ScalarNode and value is not None:
            if not implicit[0]:
                return _STR_TAG
            tag = self._plain_tags.get(value)
            if tag is None:
                tag = self._plain_tags[value] = str(super().resolve(kind, value, implicit))
            return tag
        return _SEQ_TAG if kind is SequenceNode else _MAP_TAG


def _compose(text: str) -> Node | None:
    return yaml.compose(text, Loader=_ComposeLoader)


def load_policy(
    text: str, *, source: str = "<policy>", regex_check: RegexCheck | None = None
) -> Policy:
    """Parse and validate YAML policy text into a :class:`Policy`.

    ``regex_check`` returns why a regex cannot be compiled by the matcher that will run the
    policy (``PolicyEngine`` passes the Rust one), so such a pattern fails here, with its line.
    Raises :class:`~routeguard.errors.PolicyError` listing every problem with line and column.
    """
    # A large policy is hundreds of thousands of nodes and objects, none of them garbage; with
    # the cycle collector running, building them takes superlinear time (10,000 rules: 4.4 s
    # instead of 1.2 s). Loading is a cold path, so it runs with the collector paused.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _load(text, source, regex_check)
    finally:
        if collecting:
            gc.enable()


def _load(text: str, source: str, regex_check: RegexCheck | None) -> Policy:
    try:
        root = _compose(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        raise PolicyError(
            [PolicyProblem(line, col, "", f"not valid YAML: {e.problem or e.context}")],
            source=source,
        ) from None
    except yaml.YAMLError as e:
        pos = getattr(e, "position", 0)
        line = text.count("\n", 0, pos) + 1
        raise PolicyError(
            [PolicyProblem(line, 1, "", f"not valid YAML: {first_line(e)}")], source=source
        ) from None
    except RecursionError:
        raise PolicyError(
            [PolicyProblem(1, 1, "", "not valid YAML: nested too deeply")], source=source
        ) from None
    except UnicodeEncodeError as e:
        line = text.count("\n", 0, e.start) + 1
        raise PolicyError(
            [PolicyProblem(line, 1, "", "not valid text: a lone surrogate character")],
            source=source,
        ) from None
    if root is None:
        raise PolicyError(
            [PolicyProblem(1, 1, "", "the policy is empty; it needs 'rules'")], source=source
        )
    loader = _Loader(regex_check)
    try:
        policy = loader.policy(root)
    except Invalid:
        policy = None
    except RecursionError:
        loader.problems.append(PolicyProblem(1, 1, "", "nested too deeply"))
        policy = None
    if loader.problems or policy is None:
        raise PolicyError(
            sorted(set(loader.problems), key=lambda p: (p.line, p.column)), source=source
        )
    return policy


def load_policy_file(path: str | Path, *, regex_check: RegexCheck | None = None) -> Policy:
    """Read and load a policy file (errors name the file)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(
            [PolicyProblem(1, 1, "", f"cannot read the policy: {e}")], source=str(p)
        ) from None
    return load_policy(text, source=str(p), regex_check=regex_check)
