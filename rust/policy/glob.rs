//! Glob patterns as the policy language defines them, compiled to the cheapest matcher.
//!
//! Syntax (the Python side, `routeguard/enforce/patterns.py`, parses the same grammar):
//! `*` any run of characters (including `/` and the empty run), `?` exactly one character,
//! `[abc]`, `[a-z]`, `[!a-z]`/`[^a-z]` one character of (not of) a class (a `]` right after
//! the opening bracket is literal), `{a,b}` alternation (nestable, branches may be empty),
//! `\c` the character `c` literally. A glob always matches the whole string.
//!
//! Data flow: [`parse`] turns the text into tokens; [`Glob::new`] recognises the common
//! shapes (exact, prefix, suffix, contains, prefix+suffix, any) and keeps a string test for
//! them, and translates everything else into an anchored `regex`. [`anchored_regex`] gives
//! the same translation for the tool index, which groups every tool glob into one `RegexSet`.

use regex::Regex;

use crate::error::{CoreError, CoreResult};

/// One token of a parsed glob.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// Characters matched literally.
    Lit(String),
    /// `*`.
    Star,
    /// `?`.
    One,
    /// `[...]`: negated or not, and its items (single characters or inclusive ranges).
    Class(bool, Vec<(char, char)>),
    /// `{a,b}`: each branch is a token sequence.
    Alt(Vec<Vec<Tok>>),
}

/// Nesting limit for `{}`: deeper globs are rejected rather than risking the stack.
const MAX_DEPTH: usize = 16;

/// Parse `glob` into tokens, or say what is wrong with it.
fn parse(glob: &str) -> Result<Vec<Tok>, String> {
    let mut chars = glob.chars().peekable();
    let (toks, end) = parse_seq(&mut chars, 0)?;
    match end {
        None => Ok(toks),
        // Only reachable inside braces; at depth 0 `,` and `}` are literal.
        Some(c) => Err(format!("unexpected '{c}'")),
    }
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// Push a literal character, merging it into a preceding literal.
fn push_lit(toks: &mut Vec<Tok>, c: char) {
    if let Some(Tok::Lit(s)) = toks.last_mut() {
        s.push(c);
    } else {
        toks.push(Tok::Lit(c.to_string()));
    }
}

/// Parse a sequence up to the end of input, or (inside braces) up to `,` or `}`, which is
/// returned so the caller can tell a branch separator from the closing brace.
fn parse_seq(chars: &mut Chars<'_>, depth: usize) -> Result<(Vec<Tok>, Option<char>), String> {
    let mut toks = Vec::new();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                if toks.last() != Some(&Tok::Star) {
                    toks.push(Tok::Star);
                }
            }
            '?' => toks.push(Tok::One),
            '\\' => match chars.next() {
                Some(e) => push_lit(&mut toks, e),
                None => return Err("trailing '\\' escapes nothing".into()),
            },
            '[' => toks.push(parse_class(chars)?),
            '{' => {
                if depth + 1 > MAX_DEPTH {
                    return Err(format!("braces nested deeper than {MAX_DEPTH}"));
                }
                let mut branches = Vec::new();
                loop {
                    let (branch, end) = parse_seq(chars, depth + 1)?;
                    branches.push(branch);
                    match end {
                        Some(',') => continue,
                        Some(_) => break,
                        None => return Err("unclosed '{'".into()),
                    }
                }
                toks.push(Tok::Alt(branches));
            }
            ',' | '}' if depth > 0 => return Ok((toks, Some(c))),
            _ => push_lit(&mut toks, c),
        }
    }
    Ok((toks, None))
}

/// Parse a class after its `[`.
fn parse_class(chars: &mut Chars<'_>) -> Result<Tok, String> {
    let negated = matches!(chars.peek(), Some('!' | '^'));
    if negated {
        chars.next();
    }
    let mut items = Vec::new();
    let mut first = true;
    loop {
        let c = match chars.next() {
            None => return Err("unclosed '['".into()),
            Some(']') if !first => break,
            Some('\\') => chars.next().ok_or("unclosed '['")?,
            Some(c) => c,
        };
        first = false;
        let mut lookahead = chars.clone();
        if lookahead.next() == Some('-') && !matches!(lookahead.peek(), Some(']') | None) {
            chars.next();
            let hi = match chars.next() {
                Some('\\') => chars.next().ok_or("unclosed '['")?,
                Some(h) => h,
                None => return Err("unclosed '['".into()),
            };
            if hi < c {
                return Err(format!("class range '{c}-{hi}' is out of order"));
            }
            items.push((c, hi));
        } else {
            items.push((c, c));
        }
    }
    Ok(Tok::Class(negated, items))
}

/// Characters that have a meaning in Rust or Python regex syntax (outside a class, or inside
/// one for `&`, `-`, `~`, which Rust uses for class set operations). Both engines accept a
/// backslash before each of them; no other character is escaped (Rust reads `\<` and `\>` as
/// word boundaries, where Python reads a literal).
fn needs_escape(c: char) -> bool {
    matches!(
        c,
        '\\' | '.'
            | '+'
            | '*'
            | '?'
            | '('
            | ')'
            | '|'
            | '['
            | ']'
            | '{'
            | '}'
            | '^'
            | '$'
            | '#'
            | '&'
            | '-'
            | '~'
    )
}

fn push_escaped(out: &mut String, c: char) {
    if needs_escape(c) {
        out.push('\\');
    }
    out.push(c);
}

/// Append the regex for `toks` (to be used with the `s` flag, so `.` matches newlines).
fn write_regex(toks: &[Tok], out: &mut String) {
    for tok in toks {
        match tok {
            Tok::Lit(s) => s.chars().for_each(|c| push_escaped(out, c)),
            Tok::Star => out.push_str(".*"),
            Tok::One => out.push('.'),
            Tok::Class(negated, items) => {
                out.push('[');
                if *negated {
                    out.push('^');
                }
                for &(lo, hi) in items {
                    push_escaped(out, lo);
                    if hi != lo {
                        out.push('-');
                        push_escaped(out, hi);
                    }
                }
                out.push(']');
            }
            Tok::Alt(branches) => {
                out.push_str("(?:");
                for (i, branch) in branches.iter().enumerate() {
                    if i > 0 {
                        out.push('|');
                    }
                    write_regex(branch, out);
                }
                out.push(')');
            }
        }
    }
}

/// The anchored regex equivalent to `glob`, e.g. `a*.py` → `^(?s:a.*\.py)$`.
pub fn anchored_regex(glob: &str) -> CoreResult<String> {
    let toks = parse(glob).map_err(|why| invalid(glob, &why))?;
    Ok(anchored(&toks))
}

fn anchored(toks: &[Tok]) -> String {
    let mut out = String::from("^(?s:");
    write_regex(toks, &mut out);
    out.push_str(")$");
    out
}

fn invalid(glob: &str, why: &str) -> CoreError {
    CoreError::InvalidInput(format!("invalid glob '{glob}': {why}"))
}

/// A compiled glob: a plain string test for the common shapes, a regex otherwise.
#[derive(Debug, Clone)]
pub enum Glob {
    /// `*`.
    Any,
    /// No wildcard at all.
    Exact(Box<str>),
    /// `abc*`.
    Prefix(Box<str>),
    /// `*abc`.
    Suffix(Box<str>),
    /// `*abc*`.
    Contains(Box<str>),
    /// `abc*xyz`.
    PrefixSuffix(Box<str>, Box<str>),
    /// Anything else.
    Regex(Regex),
}

impl Glob {
    /// Compile `glob`, or explain why it is not a valid glob.
    pub fn new(glob: &str) -> CoreResult<Glob> {
        let toks = parse(glob).map_err(|why| invalid(glob, &why))?;
        let lit = |t: &Tok| match t {
            Tok::Lit(s) => Some(s.as_str().into()),
            _ => None,
        };
        let shape = match toks.as_slice() {
            [] => Some(Glob::Exact("".into())),
            [Tok::Star] => Some(Glob::Any),
            [a] => lit(a).map(Glob::Exact),
            [a, Tok::Star] => lit(a).map(Glob::Prefix),
            [Tok::Star, b] => lit(b).map(Glob::Suffix),
            [Tok::Star, b, Tok::Star] => lit(b).map(Glob::Contains),
            [a, Tok::Star, b] => lit(a).zip(lit(b)).map(|(a, b)| Glob::PrefixSuffix(a, b)),
            _ => None,
        };
        match shape {
            Some(g) => Ok(g),
            None => Regex::new(&anchored(&toks))
                .map(Glob::Regex)
                .map_err(|e| invalid(glob, &e.to_string())),
        }
    }

    /// Whether the whole of `s` matches.
    pub fn is_match(&self, s: &str) -> bool {
        match self {
            Glob::Any => true,
            Glob::Exact(e) => s == &**e,
            Glob::Prefix(p) => s.starts_with(&**p),
            Glob::Suffix(x) => s.ends_with(&**x),
            Glob::Contains(c) => s.contains(&**c),
            Glob::PrefixSuffix(p, x) => {
                s.len() >= p.len() + x.len() && s.starts_with(&**p) && s.ends_with(&**x)
            }
            Glob::Regex(r) => r.is_match(s),
        }
    }

    /// The one string this glob matches, if it has no wildcard.
    pub fn literal(&self) -> Option<&str> {
        match self {
            Glob::Exact(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(glob: &str, s: &str) -> bool {
        Glob::new(glob).map(|g| g.is_match(s)).unwrap_or(false)
    }

    #[test]
    fn shapes_and_matches() {
        assert!(matches!(Glob::new("*"), Ok(Glob::Any)));
        assert!(matches!(Glob::new("**"), Ok(Glob::Any)));
        assert!(matches!(Glob::new("send_email"), Ok(Glob::Exact(_))));
        assert!(matches!(Glob::new(r"send\*"), Ok(Glob::Exact(_))));
        assert!(matches!(Glob::new("fs.*"), Ok(Glob::Prefix(_))));
        assert!(matches!(Glob::new("*.py"), Ok(Glob::Suffix(_))));
        assert!(matches!(Glob::new("*rm*"), Ok(Glob::Contains(_))));
        assert!(matches!(Glob::new("a*b"), Ok(Glob::PrefixSuffix(_, _))));
        assert!(matches!(Glob::new("a?b"), Ok(Glob::Regex(_))));
        assert!(m("/etc/*", "/etc/ssl/certs/ca.pem"));
        assert!(!m("ab*ba", "aba"));
        assert!(m("ab*ba", "abba"));
        assert!(m("file?.txt", "file1.txt") && !m("file?.txt", "file.txt"));
        assert!(m("[a-c]x", "bx") && !m("[!a-c]x", "bx") && m("[^a-c]x", "dx"));
        assert!(m("[]]", "]") && m("[!]]", "a") && m("[a-]", "-"));
        assert!(m("{gmail,yahoo}.com", "yahoo.com") && !m("{gmail,yahoo}.com", "aol.com"));
        assert!(m("x{,y}", "x") && m("x{a,{b,c}d}", "xcd"));
        assert!(m("a,b}", "a,b}"));
        assert!(m("*\n*", "a\nb") && m("?", "\n") && m("[!a]", "\n"));
        assert!(m("[&&]~-", "&~-") && m("a.b", "a.b") && !m("a.b", "axb"));
        assert!(m("é?", "éü") && m("\\<", "<"));
    }

    #[test]
    fn bad_globs_say_why() {
        for (glob, why) in [
            ("[abc", "unclosed '['"),
            ("{a,b", "unclosed '{'"),
            ("ab\\", "trailing"),
            ("[z-a]", "out of order"),
        ] {
            match Glob::new(glob) {
                Err(CoreError::InvalidInput(msg)) => assert!(msg.contains(why), "{glob}: {msg}"),
                other => panic!("{glob}: expected an error, got {other:?}"),
            }
        }
        assert!(Glob::new(&"{".repeat(40)).is_err());
    }

    proptest! {
        /// Every fast path answers exactly as the regex translation does.
        #[test]
        fn fast_paths_equal_the_regex(
            glob in "[ab*?\\[\\]{},!\\\\-]{0,8}",
            s in "[ab,{}!\\[\\]\\-]{0,8}",
        ) {
            if let (Ok(fast), Ok(src)) = (Glob::new(&glob), anchored_regex(&glob)) {
                let re = Regex::new(&src);
                prop_assert!(re.is_ok(), "{} -> {}", glob, src);
                if let Ok(re) = re {
                    prop_assert_eq!(fast.is_match(&s), re.is_match(&s), "{} on {:?}", glob, s);
                }
            }
        }

        /// Parsing never panics, whatever the input.
        #[test]
        fn parse_never_panics(glob in "\\PC{0,24}") {
            let _ = Glob::new(&glob);
        }
    }
}
