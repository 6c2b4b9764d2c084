//! Criterion benchmark of the pure-Rust policy decision at 10..10,000 rules (this replaces
//! the `#[ignore]` timing test `policy::tests` had). The policy is shaped like the one
//! `routeguard bench --suite policy` generates: rules over `n / 8` tools, 5% tool globs, a
//! universal redact rule, range/in/glob/regex/not predicates, label and step conditions. The
//! calls mostly name a tool, sometimes reach one only through a glob, sometimes an unknown one;
//! each iteration decides the next call of a fixed list of 4,000.
//!
//! `cargo bench --bench policy` (or `make bench-rust`).

use std::hint::black_box;

use _core::policy::{CompiledPolicy, LabelSet, Request};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use serde_json::{json, Value};

/// A tiny deterministic generator (xorshift): `next(m)` is in `0..m`.
struct Rng(u64);

impl Rng {
    fn next(&mut self, m: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % (m as u64)).unwrap_or(0)
    }
}

fn pred(path: &str, test: Value) -> Value {
    let segments: Vec<&str> = path.trim_start_matches("$.").split('.').collect();
    json!({"path": path, "segments": segments, "test": test})
}

/// `n` rules (plus the redact rule) and the tool names they are written over.
fn policy(n: usize, rng: &mut Rng) -> (CompiledPolicy, Vec<String>) {
    let tools: Vec<String> = (0..(n / 8).max(4))
        .map(|i| format!("svc{}.op_{i}", i % 13))
        .collect();
    let mut rules = vec![json!({"id": "mask", "effect": "redact", "tools": ["*"],
        "redact": [{"path": "$.auth.token", "segments": ["auth", "token"]}]})];
    for i in 0..n {
        let effect = ["allow", "allow", "allow", "deny", "require_approval"][rng.next(5)];
        let tool = if rng.next(20) == 0 {
            format!("svc{}.op_*", rng.next(13))
        } else {
            tools[rng.next(tools.len())].clone()
        };
        let role = ["executor", "reviewer"][rng.next(2)];
        let mut r = json!({"id": format!("r{i}"), "effect": effect, "tools": [tool],
            "roles": [role]});
        if rng.next(3) == 0 {
            r["trust"] = json!({"lo": 0.5, "lo_incl": true});
        }
        r["args"] = match rng.next(5) {
            0 => json!([
                pred(
                    "$.amount",
                    json!({"op": "range", "lo": 0, "lo_incl": false, "hi": 1000, "hi_incl": true})
                ),
                pred("$.currency", json!({"op": "in", "values": ["USD", "EUR"]})),
            ]),
            1 => json!([pred(
                "$.path",
                json!({"op": "glob", "pattern": "/srv/data/*"})
            )]),
            2 => json!([pred(
                "$.to",
                json!({"op": "not", "test": {"op": "glob", "pattern": "*@corp.example"}})
            )]),
            3 => json!([pred(
                "$.command",
                json!({"op": "regex", "pattern": "^git (status|log)\\b"})
            )]),
            _ => json!([]),
        };
        if rng.next(3) == 0 {
            r["labels_none"] = json!(["untrusted-data-seen"]);
            r["step"] = json!({"lo": 1, "lo_incl": true, "hi": 20, "hi_incl": true});
        }
        rules.push(r);
    }
    let text = json!({"version": 1, "rules": rules}).to_string();
    match CompiledPolicy::from_json(&text) {
        Ok(p) => (p, tools),
        Err(e) => panic!("policy does not compile: {e}"),
    }
}

fn request<'a>(tool: &'a str, args: &'a Value, labels: &'a LabelSet) -> Request<'a, Value> {
    Request {
        agent_id: "agent-1",
        role: "executor",
        trust: 0.9,
        delegation_depth: 0,
        tool,
        args,
        step: 3,
        labels,
        now: 1.7e9,
    }
}

fn decide(c: &mut Criterion) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let args = json!({"amount": 250, "currency": "EUR", "path": "/srv/data/a.csv",
        "to": "bob@corp.example", "command": "git status", "auth": {"token": "x"}});
    let mut group = c.benchmark_group("policy decide");
    for n in [10usize, 100, 1_000, 10_000] {
        let (p, tools) = policy(n, &mut rng);
        let calls: Vec<String> = (0..4_000)
            .map(|_| match rng.next(20) {
                0 | 1 => format!("svc{}.op_x", rng.next(13)),
                2 => "unknown.tool".to_string(),
                _ => tools[rng.next(tools.len())].clone(),
            })
            .collect();
        let labels = p.label_set(std::iter::empty());
        let mut next = calls.iter().cycle();
        group.bench_function(BenchmarkId::from_parameter(format!("{n} rules")), |b| {
            b.iter(|| {
                let tool = next.next().map_or("unknown.tool", String::as_str);
                match p.decide(&request(black_box(tool), &args, &labels)) {
                    Ok(d) => d,
                    Err(e) => panic!("decide: {e}"),
                }
            })
        });
    }
    group.finish();
}

criterion_group!(policy_matcher, decide);
criterion_main!(policy_matcher);
