//! Pure evaluation of one request against a [`CompiledPolicy`].
//!
//! Data flow: the tool name selects the candidate rules (one hash lookup for a tool the
//! policy names literally; otherwise the universal rules plus one `RegexSet` pass over the
//! tool globs). Effects are tried in precedence order and within each in policy order, and the
//! first matching rule stops its effect's search: any deny decides at once; otherwise the
//! first require_approval, else the first allow, else the default deny. Only when the call
//! may proceed are the redact rules evaluated, all of them, their paths collected. Within a
//! rule the cheap principal and context checks run before the argument predicates. Nothing
//! allocates unless a glob-only tool matches a glob or a redaction applies.
//!
//! A predicate meeting a value of a type it does not compare with (a list where a number is
//! expected, NaN, `true` for a glob) is [`Truth::Unknown`]; predicates combine by Kleene
//! logic, and a rule whose predicates end up unknown matches when its effect restricts the
//! call (deny, require_approval, redact) and does not when it permits it (allow): a value
//! the policy cannot judge never opens a door and never slips past a guard.

use std::borrow::Cow;

use super::compile::{Candidates, CompiledPolicy, Effect, Rule, ScalarSet, Test, TimeCond};
use super::value::{numeric_str, Args, Num, Val};
use crate::error::CoreResult;

/// The session labels of a request, as ids of the labels the policy mentions (labels it does
/// not mention cannot change a decision and are dropped). Two words inline; more spill over.
#[derive(Debug, Clone, Default)]
pub struct LabelSet {
    inline: [u64; 2],
    spill: Vec<u64>,
}

impl LabelSet {
    /// Add the label with id `id`.
    pub fn insert(&mut self, id: usize) {
        let (word, bit) = (id / 64, id % 64);
        if word < 2 {
            self.inline[word] |= 1 << bit;
        } else {
            let w = word - 2;
            if self.spill.len() <= w {
                self.spill.resize(w + 1, 0);
            }
            self.spill[w] |= 1 << bit;
        }
    }

    /// Whether the label with id `id` is present.
    pub fn contains(&self, id: usize) -> bool {
        let (word, bit) = (id / 64, id % 64);
        let w = if word < 2 {
            self.inline[word]
        } else {
            *self.spill.get(word - 2).unwrap_or(&0)
        };
        w & (1 << bit) != 0
    }

    /// Whether no label is present.
    pub fn is_empty(&self) -> bool {
        self.inline == [0, 0] && self.spill.iter().all(|&w| w == 0)
    }
}

/// One tool call to decide on.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a, A> {
    /// The calling agent's id (e.g. a `did:key`).
    pub agent_id: &'a str,
    /// Its role (`planner`, `executor`, ...).
    pub role: &'a str,
    /// Its trust score.
    pub trust: f64,
    /// How many delegations separate it from the human principal (0 = direct).
    pub delegation_depth: i64,
    /// The tool it calls.
    pub tool: &'a str,
    /// The call's arguments.
    pub args: &'a A,
    /// The step of the plan the call belongs to.
    pub step: i64,
    /// The session's labels (see [`CompiledPolicy::label_set`]).
    pub labels: &'a LabelSet,
    /// Unix time in seconds (UTC). Non-finite: every time condition fails.
    pub now: f64,
}

/// The outcome: the effect, the rule that decided it (`None`: the default deny) and, when the
/// call may proceed, the paths to mask as `(redact path index, redact rule index)` pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `Deny`, `RequireApproval`, `Allow`, or `Redact` (allowed with masked arguments).
    pub effect: Effect,
    /// Index of the deciding rule; for `Redact`, the allow rule that granted the call.
    pub rule: Option<usize>,
    /// `(index into redact_paths, index of the redact rule)`, first rule first, each path once.
    pub redactions: Vec<(usize, usize)>,
}

const SECONDS_PER_DAY: i64 = 86_400;

impl TimeCond {
    /// Whether `now` (Unix seconds, UTC) satisfies every part of the condition.
    fn holds(&self, now: f64) -> bool {
        if !now.is_finite() {
            return false;
        }
        if self.after.is_some_and(|a| now < a) || self.before.is_some_and(|b| now >= b) {
            return false;
        }
        #[allow(clippy::cast_possible_truncation)]
        let secs = now.floor() as i64;
        if let Some((start, end)) = self.hours {
            let sod = secs.rem_euclid(SECONDS_PER_DAY);
            let (start, end) = (i64::from(start), i64::from(end));
            let inside = if start < end {
                start <= sod && sod < end
            } else {
                sod >= start || sod < end
            };
            if !inside {
                return false;
            }
        }
        if let Some(days) = self.days {
            // 1970-01-01 was a Thursday (3 when Monday is 0).
            let weekday = (secs.div_euclid(SECONDS_PER_DAY) + 3).rem_euclid(7);
            if days & (1 << weekday) == 0 {
                return false;
            }
        }
        true
    }
}

/// What a predicate says of a value: it holds, it does not, or it cannot be evaluated on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Truth {
    /// The predicate does not hold.
    No,
    /// The predicate holds.
    Yes,
    /// The value is of a type the predicate does not compare with (or NaN for a number).
    Unknown,
}

impl Truth {
    fn from_bool(b: bool) -> Truth {
        if b {
            Truth::Yes
        } else {
            Truth::No
        }
    }

    /// Kleene negation: unknown stays unknown.
    fn not(self) -> Truth {
        match self {
            Truth::No => Truth::Yes,
            Truth::Yes => Truth::No,
            Truth::Unknown => Truth::Unknown,
        }
    }
}

impl ScalarSet {
    /// Membership of a number: unknown for NaN or when the set holds no number.
    fn num_truth(&self, n: Num) -> Truth {
        if self.nums.is_empty() || n.is_nan() {
            Truth::Unknown
        } else {
            Truth::from_bool(self.nums.iter().any(|m| m.num_eq(n)))
        }
    }

    /// Membership of a present value; unknown when no member has the value's type (a
    /// numeric string counts as a number when the set holds numbers).
    fn truth(&self, v: Val<'_>) -> Truth {
        match v {
            Val::Missing => Truth::No,
            Val::Other => Truth::Unknown,
            Val::Null if self.null => Truth::Yes,
            Val::Null => Truth::Unknown,
            Val::Bool(b) if self.bools[usize::from(b)] => Truth::Yes,
            Val::Bool(_) if self.bools[0] || self.bools[1] => Truth::No,
            Val::Bool(_) => Truth::Unknown,
            Val::Num(n) => self.num_truth(n),
            Val::Str(s) => {
                if self.strs.contains(s) {
                    return Truth::Yes;
                }
                match numeric_str(s) {
                    Some(n) if !self.nums.is_empty() => self.num_truth(n),
                    _ if self.strs.is_empty() => Truth::Unknown,
                    _ => Truth::No,
                }
            }
        }
    }
}

/// What `test` says of `v`.
pub(crate) fn test_holds(test: &Test, v: Val<'_>) -> Truth {
    match test {
        Test::Exists(want) => Truth::from_bool((v != Val::Missing) == *want),
        Test::Not(inner) => test_holds(inner, v).not(),
        // A path that does not resolve satisfies no value test (only `exists` and `not`).
        _ if v == Val::Missing => Truth::No,
        Test::In(set) => set.truth(v),
        Test::Glob(g) => match v {
            Val::Str(s) => Truth::from_bool(g.is_match(s)),
            _ => Truth::Unknown,
        },
        Test::Regex(r) => match v {
            Val::Str(s) => Truth::from_bool(r.is_match(s)),
            _ => Truth::Unknown,
        },
        Test::Range(r) => match v {
            Val::Num(n) if !n.is_nan() => Truth::from_bool(r.contains(n)),
            Val::Str(s) => {
                numeric_str(s).map_or(Truth::Unknown, |n| Truth::from_bool(r.contains(n)))
            }
            _ => Truth::Unknown,
        },
    }
}

impl CompiledPolicy {
    /// The label set for a request's labels; labels no rule mentions are dropped.
    pub fn label_set<'s>(&self, labels: impl IntoIterator<Item = &'s str>) -> LabelSet {
        let mut set = LabelSet::default();
        for l in labels {
            if let Some(id) = self.label_id(l) {
                set.insert(id);
            }
        }
        set
    }

    /// The rules that may apply to `tool`.
    fn candidates(&self, tool: &str) -> Cow<'_, Candidates> {
        if let Some(c) = self.exact.get(tool) {
            return Cow::Borrowed(c);
        }
        if self.glob_groups.is_empty() {
            return Cow::Borrowed(&self.universal);
        }
        let hits = self.glob_set.matches(tool);
        if !hits.matched_any() {
            return Cow::Borrowed(&self.universal);
        }
        let mut merged = self.universal.clone();
        for g in hits.iter() {
            merged.extend(&self.glob_groups[g]);
        }
        merged.finish();
        Cow::Owned(merged)
    }

    /// Whether `rule` matches the request.
    pub(crate) fn rule_matches<A: Args>(
        &self,
        rule: &Rule,
        req: &Request<'_, A>,
    ) -> CoreResult<bool> {
        if let Some(roles) = &rule.roles {
            if !roles.iter().any(|r| &**r == req.role) {
                return Ok(false);
            }
        }
        if rule
            .trust
            .is_some_and(|r| !r.contains(Num::Float(req.trust)))
            || rule
                .depth
                .is_some_and(|r| !r.contains(Num::Int(req.delegation_depth)))
            || rule.step.is_some_and(|r| !r.contains(Num::Int(req.step)))
        {
            return Ok(false);
        }
        let labels = req.labels;
        if (!rule.labels_any.is_empty() && !rule.labels_any.iter().any(|&l| labels.contains(l)))
            || !rule.labels_all.iter().all(|&l| labels.contains(l))
            || rule.labels_none.iter().any(|&l| labels.contains(l))
        {
            return Ok(false);
        }
        if rule.time.is_some_and(|t| !t.holds(req.now)) {
            return Ok(false);
        }
        if let Some(agents) = &rule.agents {
            if !agents.iter().any(|g| g.is_match(req.agent_id)) {
                return Ok(false);
            }
        }
        // Kleene AND over the predicates: any `No` decides; an `Unknown` makes a permitting
        // rule fail at once and a restricting one match unless another predicate says `No`.
        for pred in &rule.preds {
            let path = &self.paths[pred.path];
            match req
                .args
                .with_value(pred.path, &path.segs, |v| test_holds(&pred.test, v))?
            {
                Truth::Yes => {}
                Truth::No => return Ok(false),
                Truth::Unknown if rule.effect == Effect::Allow => return Ok(false),
                Truth::Unknown => {}
            }
        }
        Ok(true)
    }

    /// The first rule of `list` (policy order) that matches.
    fn first_match<A: Args>(
        &self,
        list: &[usize],
        req: &Request<'_, A>,
    ) -> CoreResult<Option<usize>> {
        for &i in list {
            if self.rule_matches(&self.rules[i], req)? {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// Decide on one request. Pure: the same policy and request always give the same decision.
    /// Errors only when the arguments cannot be read (see [`Args::with_value`]).
    pub fn decide<A: Args>(&self, req: &Request<'_, A>) -> CoreResult<Decision> {
        let cands = self.candidates(req.tool);
        if let Some(i) = self.first_match(&cands.deny, req)? {
            return Ok(Decision {
                effect: Effect::Deny,
                rule: Some(i),
                redactions: Vec::new(),
            });
        }
        let (effect, rule) = match self.first_match(&cands.approve, req)? {
            Some(i) => (Effect::RequireApproval, i),
            None => match self.first_match(&cands.allow, req)? {
                Some(i) => (Effect::Allow, i),
                None => {
                    return Ok(Decision {
                        effect: Effect::Deny,
                        rule: None,
                        redactions: Vec::new(),
                    })
                }
            },
        };
        let mut redactions: Vec<(usize, usize)> = Vec::new();
        for &i in &cands.redact {
            let r = &self.rules[i];
            if self.rule_matches(r, req)? {
                for &p in &r.redact {
                    if !redactions.iter().any(|&(q, _)| q == p) {
                        redactions.push((p, i));
                    }
                }
            }
        }
        let effect = if effect == Effect::Allow && !redactions.is_empty() {
            Effect::Redact
        } else {
            effect
        };
        Ok(Decision {
            effect,
            rule: Some(rule),
            redactions,
        })
    }

    /// The same decision by brute force: every rule, in order, no index. The oracle that
    /// the property tests hold [`CompiledPolicy::decide`] to.
    pub fn decide_linear<A: Args>(&self, req: &Request<'_, A>) -> CoreResult<Decision> {
        let mut first: [Option<usize>; 3] = [None; 3];
        let mut redactions: Vec<(usize, usize)> = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let tool_ok = rule.tools.iter().any(|g| g.is_match(req.tool));
            if !tool_ok || !self.rule_matches(rule, req)? {
                continue;
            }
            let slot = match rule.effect {
                Effect::Deny => 0,
                Effect::RequireApproval => 1,
                Effect::Allow => 2,
                Effect::Redact => {
                    for &p in &rule.redact {
                        if !redactions.iter().any(|&(q, _)| q == p) {
                            redactions.push((p, i));
                        }
                    }
                    continue;
                }
            };
            first[slot] = first[slot].or(Some(i));
        }
        Ok(match first {
            [Some(d), _, _] => Decision {
                effect: Effect::Deny,
                rule: Some(d),
                redactions: vec![],
            },
            [None, None, None] => Decision {
                effect: Effect::Deny,
                rule: None,
                redactions: vec![],
            },
            [None, Some(a), _] => Decision {
                effect: Effect::RequireApproval,
                rule: Some(a),
                redactions,
            },
            [None, None, Some(a)] => Decision {
                effect: if redactions.is_empty() {
                    Effect::Allow
                } else {
                    Effect::Redact
                },
                rule: Some(a),
                redactions,
            },
        })
    }
}
