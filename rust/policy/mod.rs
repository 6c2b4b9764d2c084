//! The tool-call policy matcher (runtime enforcement). No pyo3 here: `py::policy` wraps it.
//!
//! Data flow: the Python loader (`routeguard/enforce/policy.py`) parses and validates the
//! YAML policy and writes a normalised JSON form; [`CompiledPolicy::from_json`] (`compile`)
//! turns that into an immutable matcher indexed by tool, with globs and regexes compiled and
//! JSON paths pre-split; [`CompiledPolicy::decide`] (`eval`) answers one [`Request`] with a
//! [`Decision`]: deny wins, then require_approval, then allow; with no match the default is
//! deny, and redact rules mask arguments of a call that may proceed. The language itself is
//! documented in `docs/policy.md`; `routeguard/enforce/reference.py` is the executable
//! specification the property tests compare this matcher against.

mod compile;
mod eval;
mod glob;
mod value;

#[cfg(test)]
mod tests;

pub use compile::{regex_error, CompiledPolicy, Effect, PathEntry, Rule};
pub use eval::{Decision, LabelSet, Request};
pub use glob::Glob;
pub use value::{json_val, numeric_str, Args, Num, Seg, Val};

/// The rule id a decision reports when no rule matched (the default deny). Rule ids cannot
/// contain `<`, so it never names a real rule.
pub const DEFAULT_RULE_ID: &str = "<default-deny>";
