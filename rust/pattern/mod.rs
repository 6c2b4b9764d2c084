//! Linear-time regular expressions over untrusted text. No pyo3 here: `py::regex` wraps it.
//!
//! Data flow: a pattern (from a routing rule, or one of the data-flow tracker's token
//! patterns) compiles once into a [`LinearRegex`] on the `regex` crate, whose searches run
//! in time linear in the text (finite automata, no backtracking), so a crafted pattern or a
//! crafted page cannot stall the caller. Patterns that need backtracking (look-around,
//! backreferences) do not compile: the caller refuses them at load time. Match positions are
//! reported in characters (Python `str` indices), counted in one pass over the text.

use regex::{Regex, RegexBuilder};

use crate::error::{CoreError, CoreResult};

/// Upper bound on a compiled program, so a pattern like `(\w{100}){100}` is refused at load
/// instead of taking memory and time at match time.
pub const SIZE_LIMIT: usize = 4 << 20;

/// A compiled pattern whose every search is linear in the text searched.
#[derive(Debug, Clone)]
pub struct LinearRegex {
    re: Regex,
}

impl LinearRegex {
    /// Compile `pattern`; `InvalidInput` says why when the engine cannot run it.
    pub fn new(pattern: &str, case_insensitive: bool) -> CoreResult<Self> {
        RegexBuilder::new(pattern)
            .case_insensitive(case_insensitive)
            .size_limit(SIZE_LIMIT)
            .build()
            .map(|re| Self { re })
            .map_err(|e| CoreError::InvalidInput(compile_message(&e)))
    }

    /// The source pattern.
    pub fn as_str(&self) -> &str {
        self.re.as_str()
    }

    /// Whether the pattern matches anywhere in `text`.
    pub fn is_match(&self, text: &str) -> bool {
        self.re.is_match(text)
    }

    /// Character offsets `(start, end)` of the leftmost-first match, if any.
    pub fn search(&self, text: &str) -> Option<(usize, usize)> {
        let m = self.re.find(text)?;
        let start = char_count(&text.as_bytes()[..m.start()]);
        Some((start, start + char_count(m.as_str().as_bytes())))
    }

    /// Character offsets of every non-overlapping match, in order, at most `limit` of them.
    pub fn find_spans(&self, text: &str, limit: usize) -> Vec<(usize, usize)> {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        // Offsets are converted incrementally: each byte is counted once overall.
        let (mut byte_pos, mut char_pos) = (0usize, 0usize);
        for m in self.re.find_iter(text).take(limit) {
            char_pos += char_count(&bytes[byte_pos..m.start()]);
            let start = char_pos;
            char_pos += char_count(&bytes[m.start()..m.end()]);
            byte_pos = m.end();
            out.push((start, char_pos));
        }
        out
    }
}

/// The number of UTF-8 characters in `bytes` (which start and end on char boundaries).
fn char_count(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| (b as i8) >= -0x40).count()
}

fn compile_message(e: &regex::Error) -> String {
    match e {
        regex::Error::CompiledTooBig(limit) => format!(
            "the pattern compiles to more than {limit} bytes; simplify it (fewer or smaller \
             counted repetitions)"
        ),
        // The syntax error's own text already points at the offending part; look-around and
        // backreferences are reported as unsupported there.
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_character_offsets() -> CoreResult<()> {
        let re = LinearRegex::new(r"\d+", false)?;
        let text = "é1 — 22 ünï 333";
        let spans = re.find_spans(text, usize::MAX);
        let chars: Vec<char> = text.chars().collect();
        let got: Vec<String> = spans
            .iter()
            .map(|&(s, e)| chars[s..e].iter().collect())
            .collect();
        assert_eq!(got, ["1", "22", "333"]);
        assert_eq!(re.search(text), Some((1, 2)));
        assert_eq!(re.find_spans(text, 2).len(), 2);
        Ok(())
    }

    #[test]
    fn case_insensitive_and_no_match() -> CoreResult<()> {
        let re = LinearRegex::new(r"\bprove\b", true)?;
        assert!(re.is_match("Please PROVE it"));
        assert!(!re.is_match("improve"));
        assert_eq!(re.search("nothing here"), None);
        assert_eq!(re.as_str(), r"\bprove\b");
        Ok(())
    }

    #[test]
    fn backtracking_only_features_are_refused() {
        for p in [
            r"(?=a)b",
            r"(?<!a)b",
            r"(a)\1",
            r"a{100}{100}{100}",
            "(unclosed",
        ] {
            match LinearRegex::new(p, false) {
                Err(CoreError::InvalidInput(msg)) => assert!(!msg.is_empty(), "{p}"),
                other => panic!("{p}: expected a compile error, got {other:?}"),
            }
        }
    }

    #[test]
    fn nested_quantifier_is_fast_on_a_long_text() -> CoreResult<()> {
        // `^(\w+\s?)*$` backtracks exponentially in Python's `re`; here it is one pass.
        let re = LinearRegex::new(r"^(\w+\s?)*$", false)?;
        let text = format!("{}!", "a".repeat(100_000));
        assert!(!re.is_match(&text));
        Ok(())
    }
}
