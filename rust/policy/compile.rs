//! Normalised policy (JSON written by `routeguard/enforce/policy.py`) → indexed matcher.
//!
//! Data flow: [`CompiledPolicy::from_json`] deserialises the normalised rules (serde, unknown
//! fields rejected), compiles every glob and regex once, pre-splits every JSON path into
//! segments (deduplicated into one path table, so the Python wrapper can intern its keys once
//! per path), maps session labels to small integer ids, and indexes rules by tool:
//! literal tool names in a hash map, `*` in a universal list, every other tool glob in one
//! `RegexSet`. For each literal tool name the candidate rules (its own, the universal ones and
//! those of every glob that matches the name) are merged ahead of time, split by effect and
//! kept in policy order, so a decision for a known tool starts with one hash lookup.

use std::collections::{HashMap, HashSet};

use regex::{Regex, RegexSet};
use serde::Deserialize;

use super::glob::{anchored_regex, Glob};
use super::value::{Bound, Num, Range, Seg};
use crate::error::{CoreError, CoreResult};

/// What a rule does when it matches, and what a decision says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Permit the call.
    Allow,
    /// Refuse the call (wins over everything).
    Deny,
    /// Hold the call for a human (wins over allow).
    RequireApproval,
    /// As a rule: mask arguments of a call that something else permits. As a decision:
    /// the call is allowed with the listed arguments masked.
    Redact,
}

impl Effect {
    /// The name used in policies and decisions.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::RequireApproval => "require_approval",
            Effect::Redact => "redact",
        }
    }
}

// ---- the normalised form, as the Python parser writes it ---------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySpec {
    version: u32,
    rules: Vec<RuleSpec>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RangeSpec {
    lo: Option<serde_json::Number>,
    #[serde(default)]
    lo_incl: bool,
    hi: Option<serde_json::Number>,
    #[serde(default)]
    hi_incl: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SegSpec {
    Index(u64),
    Key(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathSpec {
    path: String,
    segments: Vec<SegSpec>,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum TestSpec {
    Equals { value: serde_json::Value },
    In { values: Vec<serde_json::Value> },
    Glob { pattern: String },
    Regex { pattern: String },
    Range(RangeSpec),
    Exists { value: bool },
    Not { test: Box<TestSpec> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PredSpec {
    path: String,
    segments: Vec<SegSpec>,
    test: TestSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeSpec {
    hours: Option<(u32, u32)>,
    days: Option<u8>,
    after: Option<f64>,
    before: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    effect: Effect,
    #[serde(default)]
    line: u32,
    // Shown to users by the Python side; the matcher has no use for it.
    #[serde(default)]
    #[allow(dead_code)]
    reason: Option<String>,
    tools: Vec<String>,
    agents: Option<Vec<String>>,
    roles: Option<Vec<String>>,
    trust: Option<RangeSpec>,
    depth: Option<RangeSpec>,
    #[serde(default)]
    args: Vec<PredSpec>,
    #[serde(default)]
    labels_any: Vec<String>,
    #[serde(default)]
    labels_all: Vec<String>,
    #[serde(default)]
    labels_none: Vec<String>,
    step: Option<RangeSpec>,
    time: Option<TimeSpec>,
    #[serde(default)]
    redact: Vec<PathSpec>,
}

// ---- the compiled form --------------------------------------------------------------------

/// A scalar a predicate compares with.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// `null`.
    Null,
    /// `true`/`false`.
    Bool(bool),
    /// A number.
    Num(Num),
    /// A string.
    Str(Box<str>),
}

/// The members of an `in` set (or the one value of `equals`), split by type so membership is
/// one typed probe, and the types present tell which values the test can be evaluated on.
#[derive(Debug, Clone, Default)]
pub struct ScalarSet {
    pub(crate) strs: HashSet<Box<str>>,
    pub(crate) nums: Vec<Num>,
    pub(crate) bools: [bool; 2],
    pub(crate) null: bool,
}

impl ScalarSet {
    fn insert(&mut self, s: Scalar) {
        match s {
            Scalar::Null => self.null = true,
            Scalar::Bool(b) => self.bools[usize::from(b)] = true,
            Scalar::Num(n) => self.nums.push(n),
            Scalar::Str(s) => {
                self.strs.insert(s);
            }
        }
    }
}

/// One predicate on an argument value.
#[derive(Debug, Clone)]
pub enum Test {
    /// Equal to one of a set of scalars (`equals` is a set of one). Numbers compare
    /// numerically, numeric strings as the numbers they spell; booleans are not numbers.
    In(ScalarSet),
    /// A string matching a glob.
    Glob(Glob),
    /// A string in which a regex finds a match.
    Regex(Regex),
    /// A number (not a boolean), or a string spelling one, in a range.
    Range(Range),
    /// The path resolves (`true`) or does not (`false`).
    Exists(bool),
    /// The inner test does not hold.
    Not(Box<Test>),
}

/// A test on the value at one path of the arguments.
#[derive(Debug, Clone)]
pub struct Pred {
    /// Index into [`CompiledPolicy::paths`].
    pub path: usize,
    /// What must hold of the value there.
    pub test: Test,
}

/// A daily window, weekdays and an absolute window, all in UTC.
#[derive(Debug, Clone, Copy)]
pub struct TimeCond {
    /// `[start, end)` seconds of the day; wraps past midnight when `start > end`.
    pub hours: Option<(u32, u32)>,
    /// Bit `d` set: weekday `d` allowed (0 = Monday).
    pub days: Option<u8>,
    /// `now >= after`.
    pub after: Option<f64>,
    /// `now < before`.
    pub before: Option<f64>,
}

/// One compiled rule. Every condition present must hold for the rule to match.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule's id, as decisions report it.
    pub id: String,
    /// Its effect.
    pub effect: Effect,
    /// The YAML line the rule starts on (0 when unknown).
    pub line: u32,
    /// The tool globs it applies to (the index is built from these).
    pub(crate) tools: Vec<Glob>,
    pub(crate) agents: Option<Vec<Glob>>,
    pub(crate) roles: Option<Vec<Box<str>>>,
    pub(crate) trust: Option<Range>,
    pub(crate) depth: Option<Range>,
    pub(crate) step: Option<Range>,
    pub(crate) labels_any: Vec<usize>,
    pub(crate) labels_all: Vec<usize>,
    pub(crate) labels_none: Vec<usize>,
    pub(crate) time: Option<TimeCond>,
    pub(crate) preds: Vec<Pred>,
    /// Indices into [`CompiledPolicy::redact_paths`].
    pub(crate) redact: Vec<usize>,
}

/// The rules that may apply to one tool, split by effect, each list in policy order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Candidates {
    pub(crate) deny: Vec<usize>,
    pub(crate) approve: Vec<usize>,
    pub(crate) allow: Vec<usize>,
    pub(crate) redact: Vec<usize>,
}

impl Candidates {
    fn push(&mut self, rule: usize, effect: Effect) {
        match effect {
            Effect::Deny => self.deny.push(rule),
            Effect::RequireApproval => self.approve.push(rule),
            Effect::Allow => self.allow.push(rule),
            Effect::Redact => self.redact.push(rule),
        }
    }

    /// Add every rule of `other` (lists stay sorted and free of duplicates after `finish`).
    pub(crate) fn extend(&mut self, other: &Candidates) {
        self.deny.extend_from_slice(&other.deny);
        self.approve.extend_from_slice(&other.approve);
        self.allow.extend_from_slice(&other.allow);
        self.redact.extend_from_slice(&other.redact);
    }

    /// Sort each list into policy order and drop duplicates.
    pub(crate) fn finish(&mut self) {
        for list in [
            &mut self.deny,
            &mut self.approve,
            &mut self.allow,
            &mut self.redact,
        ] {
            list.sort_unstable();
            list.dedup();
        }
    }
}

/// A JSON path of the policy: its text and its segments.
#[derive(Debug, Clone)]
pub struct PathEntry {
    /// As written in the policy (normalised), e.g. `$.payment.amount`.
    pub text: Box<str>,
    /// Pre-split segments.
    pub segs: Vec<Seg>,
}

/// A policy compiled for evaluation. Immutable, so it is shared freely across threads.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub(crate) rules: Vec<Rule>,
    pub(crate) paths: Vec<PathEntry>,
    pub(crate) redact_paths: Vec<Box<str>>,
    pub(crate) labels: HashMap<Box<str>, usize>,
    pub(crate) exact: HashMap<Box<str>, Candidates>,
    pub(crate) universal: Candidates,
    pub(crate) glob_set: RegexSet,
    pub(crate) glob_groups: Vec<Candidates>,
}

/// Why a policy failed to compile, naming the rule.
fn rule_error(rule: &RuleSpec, why: impl std::fmt::Display) -> CoreError {
    CoreError::InvalidInput(format!("rule '{}' (line {}): {why}", rule.id, rule.line))
}

fn num(n: &serde_json::Number) -> Num {
    match n.as_i64() {
        Some(i) => Num::Int(i),
        None => Num::Float(n.as_f64().unwrap_or(f64::NAN)),
    }
}

fn range(spec: &RangeSpec) -> Range {
    let bound = |v: &Option<serde_json::Number>, inclusive| {
        v.as_ref().map(|n| Bound {
            value: num(n),
            inclusive,
        })
    };
    Range {
        lo: bound(&spec.lo, spec.lo_incl),
        hi: bound(&spec.hi, spec.hi_incl),
    }
}

fn scalar(v: &serde_json::Value) -> Result<Scalar, String> {
    Ok(match v {
        serde_json::Value::Null => Scalar::Null,
        serde_json::Value::Bool(b) => Scalar::Bool(*b),
        serde_json::Value::Number(n) => Scalar::Num(num(n)),
        serde_json::Value::String(s) => Scalar::Str(s.as_str().into()),
        other => return Err(format!("expected a scalar, got {other}")),
    })
}

fn segments(specs: &[SegSpec]) -> Result<Vec<Seg>, String> {
    if specs.is_empty() {
        return Err("a path needs at least one segment".into());
    }
    specs
        .iter()
        .map(|s| match s {
            SegSpec::Key(k) => Ok(Seg::Key(k.as_str().into())),
            SegSpec::Index(i) => usize::try_from(*i)
                .map(Seg::Index)
                .map_err(|_| format!("index {i} is too large")),
        })
        .collect()
}

/// Everything a policy compiles into apart from the rules themselves: the tables rules
/// refer to by index.
#[derive(Default)]
struct Tables {
    paths: Vec<PathEntry>,
    path_ids: HashMap<String, usize>,
    redact_paths: Vec<Box<str>>,
    redact_ids: HashMap<String, usize>,
    labels: HashMap<Box<str>, usize>,
}

impl Tables {
    fn path(&mut self, text: &str, specs: &[SegSpec]) -> Result<usize, String> {
        if let Some(&id) = self.path_ids.get(text) {
            return Ok(id);
        }
        let id = self.paths.len();
        self.paths.push(PathEntry {
            text: text.into(),
            segs: segments(specs)?,
        });
        self.path_ids.insert(text.to_owned(), id);
        Ok(id)
    }

    fn redact_path(&mut self, text: &str) -> usize {
        let next = self.redact_paths.len();
        let id = *self.redact_ids.entry(text.to_owned()).or_insert(next);
        if id == next {
            self.redact_paths.push(text.into());
        }
        id
    }

    fn labels(&mut self, names: &[String]) -> Vec<usize> {
        names
            .iter()
            .map(|n| {
                let next = self.labels.len();
                *self.labels.entry(n.as_str().into()).or_insert(next)
            })
            .collect()
    }

    fn test(&self, spec: &TestSpec) -> Result<Test, String> {
        Ok(match spec {
            TestSpec::Equals { value } => {
                let mut set = ScalarSet::default();
                set.insert(scalar(value)?);
                Test::In(set)
            }
            TestSpec::In { values } => {
                let mut set = ScalarSet::default();
                for v in values {
                    set.insert(scalar(v)?);
                }
                Test::In(set)
            }
            TestSpec::Glob { pattern } => {
                Test::Glob(Glob::new(pattern).map_err(|e| e.to_string())?)
            }
            TestSpec::Regex { pattern } => Test::Regex(
                Regex::new(pattern).map_err(|e| format!("invalid regex '{pattern}': {e}"))?,
            ),
            TestSpec::Range(r) => Test::Range(range(r)),
            TestSpec::Exists { value } => Test::Exists(*value),
            TestSpec::Not { test } => Test::Not(Box::new(self.test(test)?)),
        })
    }

    fn rule(&mut self, spec: &RuleSpec) -> Result<Rule, String> {
        let globs = |pats: &Option<Vec<String>>| -> Result<Option<Vec<Glob>>, String> {
            pats.as_ref()
                .map(|ps| {
                    ps.iter()
                        .map(|p| Glob::new(p).map_err(|e| e.to_string()))
                        .collect()
                })
                .transpose()
        };
        let mut preds = Vec::with_capacity(spec.args.len());
        for p in &spec.args {
            let path = self.path(&p.path, &p.segments)?;
            preds.push(Pred {
                path,
                test: self.test(&p.test)?,
            });
        }
        if (spec.effect == Effect::Redact) == spec.redact.is_empty() {
            return Err(
                "a redact rule needs `redact` paths, and only a redact rule has them".into(),
            );
        }
        let mut redact = Vec::with_capacity(spec.redact.len());
        for p in &spec.redact {
            segments(&p.segments)?;
            redact.push(self.redact_path(&p.path));
        }
        if let Some(t) = &spec.time {
            if let Some((start, end)) = t.hours {
                if start > 86_400 || end > 86_400 || start == end {
                    return Err(format!("bad daily window {start}..{end}"));
                }
            }
        }
        if spec.tools.is_empty() {
            return Err("a rule needs at least one tool pattern".into());
        }
        Ok(Rule {
            id: spec.id.clone(),
            effect: spec.effect,
            line: spec.line,
            tools: spec
                .tools
                .iter()
                .map(|p| Glob::new(p).map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()?,
            agents: globs(&spec.agents)?,
            roles: spec
                .roles
                .as_ref()
                .map(|rs| rs.iter().map(|r| r.as_str().into()).collect()),
            trust: spec.trust.as_ref().map(range),
            depth: spec.depth.as_ref().map(range),
            step: spec.step.as_ref().map(range),
            labels_any: self.labels(&spec.labels_any),
            labels_all: self.labels(&spec.labels_all),
            labels_none: self.labels(&spec.labels_none),
            time: spec.time.as_ref().map(|t| TimeCond {
                hours: t.hours,
                days: t.days,
                after: t.after,
                before: t.before,
            }),
            preds,
            redact,
        })
    }
}

impl CompiledPolicy {
    /// Compile the normalised JSON the Python parser writes. Errors name the rule and line.
    pub fn from_json(json: &str) -> CoreResult<CompiledPolicy> {
        let spec: PolicySpec = serde_json::from_str(json)
            .map_err(|e| CoreError::InvalidInput(format!("malformed normalised policy: {e}")))?;
        if spec.version != 1 {
            return Err(CoreError::InvalidInput(format!(
                "unsupported policy version {} (expected 1)",
                spec.version
            )));
        }
        let mut tables = Tables::default();
        let mut rules = Vec::with_capacity(spec.rules.len());
        let mut seen = HashSet::new();
        for r in &spec.rules {
            if !seen.insert(r.id.as_str()) {
                return Err(rule_error(r, "duplicate rule id"));
            }
            rules.push(tables.rule(r).map_err(|why| rule_error(r, why))?);
        }

        // The tool index.
        let mut exact: HashMap<Box<str>, Candidates> = HashMap::new();
        let mut universal = Candidates::default();
        let mut glob_sources: Vec<String> = Vec::new();
        let mut glob_ids: HashMap<String, usize> = HashMap::new();
        let mut glob_groups: Vec<Candidates> = Vec::new();
        for (i, (r, rule)) in spec.rules.iter().zip(&rules).enumerate() {
            for (pattern, glob) in r.tools.iter().zip(&rule.tools) {
                if let Some(lit) = glob.literal() {
                    exact.entry(lit.into()).or_default().push(i, r.effect);
                } else if matches!(glob, Glob::Any) {
                    universal.push(i, r.effect);
                } else {
                    let next = glob_groups.len();
                    let g = *glob_ids.entry(pattern.clone()).or_insert(next);
                    if g == next {
                        glob_sources.push(anchored_regex(pattern).map_err(|e| rule_error(r, e))?);
                        glob_groups.push(Candidates::default());
                    }
                    glob_groups[g].push(i, r.effect);
                }
            }
        }
        let glob_set = RegexSet::new(&glob_sources)
            .map_err(|e| CoreError::InvalidInput(format!("tool globs do not compile: {e}")))?;
        universal.finish();
        for g in &mut glob_groups {
            g.finish();
        }
        for (tool, cands) in &mut exact {
            cands.extend(&universal);
            for g in glob_set.matches(tool).iter() {
                cands.extend(&glob_groups[g]);
            }
            cands.finish();
        }
        Ok(CompiledPolicy {
            rules,
            paths: tables.paths,
            redact_paths: tables.redact_paths,
            labels: tables.labels,
            exact,
            universal,
            glob_set,
            glob_groups,
        })
    }

    /// The compiled rules, in policy order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Every distinct argument path the rules test, indexed as [`super::value::Args`] sees it.
    pub fn paths(&self) -> &[PathEntry] {
        &self.paths
    }

    /// Every distinct path a redact rule masks, indexed as decisions report it.
    pub fn redact_paths(&self) -> &[Box<str>] {
        &self.redact_paths
    }

    /// The id of a session label, if any rule mentions it.
    pub fn label_id(&self, label: &str) -> Option<usize> {
        self.labels.get(label).copied()
    }

    /// How many distinct labels the rules mention.
    pub fn label_count(&self) -> usize {
        self.labels.len()
    }
}

/// Why `pattern` is not a regex the compiled matcher accepts, or `None` if it is.
pub fn regex_error(pattern: &str) -> Option<String> {
    Regex::new(pattern).err().map(|e| e.to_string())
}
