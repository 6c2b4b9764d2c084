//! Unit and property tests of the policy matcher: semantics on hand-written policies, the
//! indexed `decide` against the brute-force `decide_linear` on random policies and requests
//! (the timing lives in the criterion bench `benches/policy.rs`).

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::error::CoreError;

fn compile(rules: Value) -> CompiledPolicy {
    match CompiledPolicy::from_json(&json!({"version": 1, "rules": rules}).to_string()) {
        Ok(p) => p,
        Err(e) => panic!("policy does not compile: {e}"),
    }
}

fn path(p: &str) -> Value {
    let segs: Vec<Value> = p
        .trim_start_matches("$.")
        .split('.')
        .map(|s| s.parse::<u64>().map_or_else(|_| json!(s), |i| json!(i)))
        .collect();
    json!(segs)
}

fn pred(p: &str, test: Value) -> Value {
    json!({"path": p, "segments": path(p), "test": test})
}

struct Req {
    agent: String,
    role: String,
    trust: f64,
    depth: i64,
    tool: String,
    args: Value,
    step: i64,
    labels: Vec<String>,
    now: f64,
}

impl Default for Req {
    fn default() -> Self {
        Req {
            agent: "agent-1".into(),
            role: "executor".into(),
            trust: 0.5,
            depth: 0,
            tool: "read_file".into(),
            args: json!({}),
            step: 1,
            labels: vec![],
            now: 1_767_268_800.0, // 2026-01-01T12:00:00Z, a Thursday
        }
    }
}

/// Decide with both the index and the brute force; they must agree. Returns
/// `(effect, rule id or "", redacted paths)`.
fn decide(p: &CompiledPolicy, r: &Req) -> (String, String, Vec<String>) {
    let labels = p.label_set(r.labels.iter().map(String::as_str));
    let req = Request {
        agent_id: &r.agent,
        role: &r.role,
        trust: r.trust,
        delegation_depth: r.depth,
        tool: &r.tool,
        args: &r.args,
        step: r.step,
        labels: &labels,
        now: r.now,
    };
    let d = p
        .decide(&req)
        .unwrap_or_else(|e| panic!("decide failed: {e}"));
    let lin = p
        .decide_linear(&req)
        .unwrap_or_else(|e| panic!("decide_linear failed: {e}"));
    assert_eq!(d, lin, "index and brute force disagree");
    let id = d.rule.map(|i| p.rules()[i].id.clone()).unwrap_or_default();
    let red = d
        .redactions
        .iter()
        .map(|&(q, _)| p.redact_paths()[q].to_string())
        .collect();
    (d.effect.as_str().to_string(), id, red)
}

fn rule(id: &str, effect: &str, tools: &[&str]) -> Value {
    json!({"id": id, "effect": effect, "tools": tools})
}

#[test]
fn default_deny_and_deny_wins() {
    let p = compile(json!([
        rule("allow-read", "allow", &["read_*"]),
        rule("deny-read", "deny", &["read_file"]),
        rule("allow-all", "allow", &["*"]),
    ]));
    assert_eq!(decide(&p, &Req::default()).0, "deny");
    assert_eq!(decide(&p, &Req::default()).1, "deny-read");
    let other = Req {
        tool: "read_dir".into(),
        ..Req::default()
    };
    assert_eq!(
        decide(&p, &other),
        ("allow".into(), "allow-read".into(), vec![])
    );
    let empty = compile(json!([]));
    assert_eq!(
        decide(&empty, &Req::default()),
        ("deny".into(), String::new(), vec![])
    );
}

#[test]
fn approval_beats_allow_and_redact_modifies() {
    let mut approve = rule("pay-big", "require_approval", &["pay"]);
    approve["args"] = json!([pred(
        "$.amount",
        json!({"op": "range", "lo": 1000, "lo_incl": false})
    )]);
    let mut redact = rule("mask-card", "redact", &["*"]);
    redact["redact"] = json!([{"path": "$.card", "segments": ["card"]}]);
    let p = compile(json!([rule("pay", "allow", &["pay"]), approve, redact]));
    let small = Req {
        tool: "pay".into(),
        args: json!({"amount": 1000}),
        ..Req::default()
    };
    assert_eq!(
        decide(&p, &small),
        ("redact".into(), "pay".into(), vec!["$.card".into()])
    );
    let big = Req {
        tool: "pay".into(),
        args: json!({"amount": 1000.5}),
        ..Req::default()
    };
    assert_eq!(
        decide(&p, &big),
        (
            "require_approval".into(),
            "pay-big".into(),
            vec!["$.card".into()]
        )
    );
    // Redact alone never permits.
    let other = Req {
        tool: "refund".into(),
        ..Req::default()
    };
    assert_eq!(decide(&p, &other).0, "deny");
}

#[test]
fn principal_context_and_time_conditions() {
    let mut r = rule("r", "allow", &["*"]);
    r["agents"] = json!(["agent-*"]);
    r["roles"] = json!(["executor", "admin"]);
    r["trust"] = json!({"lo": 0.5, "lo_incl": true});
    r["depth"] = json!({"hi": 1, "hi_incl": true});
    r["step"] = json!({"lo": 1, "lo_incl": true, "hi": 3, "hi_incl": true});
    r["labels_none"] = json!(["untrusted-data-seen"]);
    r["time"] = json!({"hours": [32400, 61200], "days": 0b0011111});
    let p = compile(json!([r]));
    let ok = Req::default();
    assert_eq!(decide(&p, &ok).0, "allow");
    let cases: Vec<Req> = vec![
        Req {
            agent: "bot".into(),
            ..Req::default()
        },
        Req {
            role: "planner".into(),
            ..Req::default()
        },
        Req {
            trust: 0.49,
            ..Req::default()
        },
        Req {
            trust: f64::NAN,
            ..Req::default()
        },
        Req {
            depth: 2,
            ..Req::default()
        },
        Req {
            step: 4,
            ..Req::default()
        },
        Req {
            labels: vec!["untrusted-data-seen".into()],
            ..Req::default()
        },
        Req {
            now: 1_767_268_800.0 - 4.0 * 3600.0,
            ..Req::default()
        }, // 08:00
        Req {
            now: 1_767_268_800.0 + 2.0 * 86_400.0,
            ..Req::default()
        }, // Saturday
        Req {
            now: f64::NAN,
            ..Req::default()
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(decide(&p, c).0, "deny", "case {i}");
    }
    let unrelated = Req {
        labels: vec!["other".into()],
        ..Req::default()
    };
    assert_eq!(decide(&p, &unrelated).0, "allow");
}

#[test]
fn hours_wrap_past_midnight() {
    let mut r = rule("night", "allow", &["*"]);
    r["time"] = json!({"hours": [79200, 21600]}); // 22:00 - 06:00
    let p = compile(json!([r]));
    let at = |h: f64| Req {
        now: 1_767_225_600.0 + h * 3600.0,
        ..Req::default()
    };
    assert_eq!(decide(&p, &at(23.0)).0, "allow");
    assert_eq!(decide(&p, &at(5.99)).0, "allow");
    assert_eq!(decide(&p, &at(6.0)).0, "deny");
    assert_eq!(decide(&p, &at(12.0)).0, "deny");
    assert_eq!(decide(&p, &at(-1.0)).0, "allow"); // 23:00 the day before
}

#[test]
fn argument_predicates() {
    let allow = |id: &str, p: &str, test: Value| {
        let mut r = rule(id, "allow", &[id]);
        r["args"] = json!([pred(p, test)]);
        r
    };
    let p = compile(json!([
        allow("eq", "$.x", json!({"op": "equals", "value": 1})),
        allow(
            "in",
            "$.x",
            json!({"op": "in", "values": ["a", 2.5, true, null]})
        ),
        allow(
            "glob",
            "$.x",
            json!({"op": "glob", "pattern": "*@corp.com"})
        ),
        allow("re", "$.x", json!({"op": "regex", "pattern": "^rm\\s+-rf"})),
        allow("ex", "$.x.0", json!({"op": "exists", "value": false})),
        allow(
            "not",
            "$.x",
            json!({"op": "not", "test": {"op": "glob", "pattern": "/tmp/*"}})
        ),
    ]));
    let check = |tool: &str, x: Value, want: &str| {
        let r = Req {
            tool: tool.into(),
            args: json!({"x": x}),
            ..Req::default()
        };
        assert_eq!(decide(&p, &r).0, want, "{tool} on {x}");
    };
    check("eq", json!(1.0), "allow");
    check("eq", json!(true), "deny");
    check("eq", json!("1"), "allow"); // a numeric string compares as its number
    check("eq", json!("1.5"), "deny");
    check("eq", json!("one"), "deny");
    check("in", json!("a"), "allow");
    check("in", json!(2.5), "allow");
    check("in", json!(null), "allow");
    check("in", json!(false), "deny");
    check("in", json!(["a"]), "deny");
    check("glob", json!("bob@corp.com"), "allow");
    check("glob", json!("bob@corp.com.evil"), "deny");
    check("re", json!("sudo rm  -rf /"), "deny");
    check("re", json!("rm  -rf /"), "allow");
    check("ex", json!([1]), "deny");
    check("ex", json!({"0": 1}), "allow");
    check("not", json!("/etc/passwd"), "allow");
    check("not", json!("/tmp/x"), "deny");
    // A glob cannot judge a number: `not` of an unknown is unknown, and an allow needs a yes.
    check("not", json!(7), "deny");
}

#[test]
fn predicates_that_cannot_judge_a_value_deny_and_do_not_allow() {
    let p = compile(json!([
        {"id": "big", "effect": "deny", "tools": ["pay"],
         "args": [pred("$.amount", json!({"op": "range", "lo": 1000, "lo_incl": false}))]},
        {"id": "root", "effect": "deny", "tools": ["login"],
         "args": [pred("$.user", json!({"op": "equals", "value": "root"}))]},
        {"id": "etc", "effect": "require_approval", "tools": ["read"],
         "args": [pred("$.path", json!({"op": "glob", "pattern": "/etc/*"}))]},
        {"id": "eur-big", "effect": "deny", "tools": ["fx"],
         "args": [pred("$.amount", json!({"op": "range", "lo": 1000, "lo_incl": false})),
                  pred("$.cur", json!({"op": "equals", "value": "EUR"}))]},
        {"id": "small", "effect": "allow", "tools": ["refund"],
         "args": [pred("$.amount", json!({"op": "range", "hi": 100, "hi_incl": true}))]},
        {"id": "all", "effect": "allow", "tools": ["pay", "login", "read", "fx"]},
    ]));
    let run = |tool: &str, args: Value| {
        let r = Req {
            tool: tool.into(),
            args,
            ..Req::default()
        };
        decide(&p, &r)
    };
    for amount in [
        json!("5000"),
        json!("1e4"),
        json!([5000]),
        json!({"v": 5000}),
        json!(true),
        json!(null),
        json!("5_000"),
        json!(" 5000"),
        json!("lots"),
    ] {
        assert_eq!(run("pay", json!({"amount": amount})).1, "big", "{amount}");
    }
    for amount in [json!(5), json!("5"), json!("-2.5e2"), json!(1000)] {
        assert_eq!(run("pay", json!({"amount": amount})).1, "all", "{amount}");
    }
    assert_eq!(run("pay", json!({})).1, "all"); // a missing path is judged: not > 1000
    assert_eq!(run("login", json!({"user": ["root"]})).1, "root");
    assert_eq!(run("login", json!({"user": 0})).1, "root");
    assert_eq!(run("login", json!({"user": "alice"})).1, "all");
    assert_eq!(
        run("read", json!({"path": ["/etc/shadow"]})).0,
        "require_approval"
    );
    assert_eq!(run("read", json!({"path": "/tmp/x"})).0, "allow");
    // Kleene AND: an unknown amount with a currency that is definitely not EUR does not deny.
    assert_eq!(run("fx", json!({"amount": [5000], "cur": "USD"})).1, "all");
    assert_eq!(
        run("fx", json!({"amount": [5000], "cur": "EUR"})).1,
        "eur-big"
    );
    assert_eq!(
        run("fx", json!({"amount": [5000], "cur": ["EUR"]})).1,
        "eur-big"
    );
    for amount in [json!("50"), json!(50), json!(-1)] {
        assert_eq!(
            run("refund", json!({"amount": amount})).0,
            "allow",
            "{amount}"
        );
    }
    for amount in [
        json!([50]),
        json!(null),
        json!(true),
        json!("fifty"),
        json!(101),
    ] {
        assert_eq!(
            run("refund", json!({"amount": amount})).0,
            "deny",
            "{amount}"
        );
    }
}

#[test]
fn invalid_normalised_policies_are_rejected() {
    let bad = [
        json!({"version": 2, "rules": []}),
        json!({"version": 1, "rules": [rule("a", "allow", &[])]}),
        json!({"version": 1, "rules": [rule("a", "allow", &["*"]), rule("a", "deny", &["*"])]}),
        json!({"version": 1, "rules": [rule("a", "redact", &["*"])]}),
        json!({"version": 1, "rules": [rule("a", "permit", &["*"])]}),
        json!({"version": 1, "rules": [{"id": "a", "effect": "allow", "tools": ["*"], "x": 1}]}),
        json!({"version": 1, "rules": [{"id": "a", "effect": "allow", "tools": ["[z-a]"]}]}),
        json!({"version": 1, "rules": [{"id": "a", "effect": "allow", "tools": ["*"],
               "args": [pred("$.x", json!({"op": "regex", "pattern": "(?<=a)b"}))]}]}),
        json!({"version": 1, "rules": [{"id": "a", "effect": "allow", "tools": ["*"],
               "args": [pred("$.x", json!({"op": "equals", "value": [1]}))]}]}),
    ];
    for b in bad {
        match CompiledPolicy::from_json(&b.to_string()) {
            Err(CoreError::InvalidInput(_)) => {}
            other => panic!("{b} compiled: {other:?}"),
        }
    }
    assert!(regex_error("a(").is_some() && regex_error("^a+$").is_none());
}

// ---- indexed == brute force on random policies ----------------------------------------------

const TOOLS: [&str; 6] = [
    "read_file",
    "write_file",
    "send_email",
    "pay",
    "shell",
    "fs.read",
];
const TOOL_GLOBS: [&str; 7] = [
    "*",
    "read_*",
    "*_file",
    "fs.*",
    "{pay,shell}",
    "s?nd_email",
    "[rw]*",
];
const EFFECTS: [&str; 4] = ["allow", "deny", "require_approval", "redact"];

fn arb_test() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        (0i64..4).prop_map(|v| json!({"op": "equals", "value": v})),
        prop::sample::select(vec!["a", "b", "ab"])
            .prop_map(|v| json!({"op": "equals", "value": v})),
        Just(json!({"op": "in", "values": ["a", 1, true]})),
        prop::sample::select(vec!["a*", "*b", "?", "[ab]b"])
            .prop_map(|g| json!({"op": "glob", "pattern": g})),
        prop::sample::select(vec!["^a", "b$", "a|b"])
            .prop_map(|g| json!({"op": "regex", "pattern": g})),
        (0i64..3, 1i64..4).prop_map(
            |(lo, hi)| json!({"op": "range", "lo": lo, "lo_incl": true, "hi": hi, "hi_incl": false})
        ),
        any::<bool>().prop_map(|b| json!({"op": "exists", "value": b})),
    ];
    leaf.prop_recursive(2, 4, 1, |inner| {
        inner.prop_map(|t| json!({"op": "not", "test": t}))
    })
}

fn arb_rule() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(EFFECTS.to_vec()),
        prop::collection::vec(
            prop::sample::select([&TOOLS[..], &TOOL_GLOBS[..]].concat()),
            1..3,
        ),
        prop::option::of(prop::collection::vec(
            prop::sample::select(vec!["executor", "planner"]),
            1..2,
        )),
        prop::option::of(0.0f64..1.0),
        prop::collection::vec(
            (
                prop::sample::select(vec!["$.x", "$.y", "$.x.0"]),
                arb_test(),
            ),
            0..3,
        ),
        prop::collection::vec(prop::sample::select(vec!["tainted", "pii"]), 0..2),
    )
        .prop_map(|(effect, tools, roles, trust, preds, labels_none)| {
            let mut r = json!({"effect": effect, "tools": tools, "labels_none": labels_none});
            if let Some(roles) = roles {
                r["roles"] = json!(roles);
            }
            if let Some(t) = trust {
                r["trust"] = json!({"lo": t, "lo_incl": true});
            }
            r["args"] = json!(preds
                .iter()
                .map(|(p, t)| pred(p, t.clone()))
                .collect::<Vec<_>>());
            if effect == "redact" {
                r["redact"] = json!([{"path": "$.x", "segments": ["x"]}]);
            }
            r
        })
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(|b| json!(b)),
        (0i64..4).prop_map(|v| json!(v)),
        (0.0f64..4.0).prop_map(|v| json!(v)),
        prop::sample::select(vec!["a", "b", "ab", "ba", "", "1", "2.5", "1e0", "x1"])
            .prop_map(|v| json!(v)),
        Just(json!(["a"])),
        Just(json!({"0": 1})),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn index_agrees_with_brute_force(
        rules in prop::collection::vec(arb_rule(), 0..12),
        tool in prop::sample::select([&TOOLS[..], &["write_log", "unknown"]].concat()),
        role in prop::sample::select(vec!["executor", "planner"]),
        trust in 0.0f64..1.0,
        x in prop::option::of(arb_value()),
        y in prop::option::of(arb_value()),
        labels in prop::collection::vec(prop::sample::select(vec!["tainted", "pii", "x"]), 0..3),
    ) {
        let rules: Vec<Value> = rules
            .into_iter()
            .enumerate()
            .map(|(i, mut r)| { r["id"] = json!(format!("r{i}")); r })
            .collect();
        let p = compile(json!(rules));
        let mut args = serde_json::Map::new();
        if let Some(x) = x { args.insert("x".into(), x); }
        if let Some(y) = y { args.insert("y".into(), y); }
        let req = Req {
            tool: tool.into(), role: role.into(), trust, args: Value::Object(args),
            labels: labels.into_iter().map(String::from).collect(), ..Req::default()
        };
        decide(&p, &req); // asserts index == brute force
    }

    #[test]
    fn compile_never_panics(json in "\\PC{0,64}") {
        let _ = CompiledPolicy::from_json(&json);
    }
}

#[test]
fn nan_is_unknown_to_every_numeric_test() {
    use super::eval::{test_holds, Truth};
    let p = compile(json!([
        {"id": "r", "effect": "deny", "tools": ["*"],
         "args": [pred("$.a", json!({"op": "range", "lo": 0, "lo_incl": true})),
                  pred("$.b", json!({"op": "in", "values": [1, "x"]})),
                  pred("$.c", json!({"op": "not", "test": {"op": "equals", "value": 2.5}}))]},
    ]));
    let nan = Val::Num(Num::Float(f64::NAN));
    for pred in &p.rules()[0].preds {
        assert_eq!(test_holds(&pred.test, nan), Truth::Unknown);
    }
    let inf = Val::Num(Num::Float(f64::INFINITY));
    assert_eq!(test_holds(&p.rules()[0].preds[0].test, inf), Truth::Yes);
}
