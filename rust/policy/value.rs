//! The values a policy compares: numbers compared exactly across int/float, the scalar view
//! of an argument ([`Val`]), and the [`Args`] trait through which evaluation reads arguments.
//!
//! Data flow: evaluation asks an [`Args`] source for the value at a pre-split JSON path and
//! gets a borrowed [`Val`] in a callback, so neither side copies strings. `serde_json::Value`
//! implements [`Args`] here; the Python wrapper implements it over a live `dict`.

use std::cmp::Ordering;

use crate::error::CoreResult;

/// A JSON number as the policy sees it. Integers outside `i64` become floats (the Python
/// side does the same), and comparisons between the two kinds are exact, as in Python.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// An integer in the `i64` range.
    Int(i64),
    /// Any other number (may be NaN or infinite when it comes from a request).
    Float(f64),
}

/// 2^63 as an `f64`: the first float above every `i64`.
const TWO_63: f64 = 9_223_372_036_854_775_808.0;

/// Exact comparison of an integer with a float (`None` when the float is NaN).
fn cmp_int_float(i: i64, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    if f >= TWO_63 {
        return Some(Ordering::Less);
    }
    if f < -TWO_63 {
        return Some(Ordering::Greater);
    }
    // Here `f` lies in [-2^63, 2^63), so its integral part converts to i64 without loss.
    let whole = f.trunc();
    #[allow(clippy::cast_possible_truncation)]
    let whole_int = whole as i64;
    Some(match i.cmp(&whole_int) {
        Ordering::Equal => {
            // Equal integral parts: the fractional part of `f` decides.
            if f > whole {
                Ordering::Less
            } else if f < whole {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        }
        other => other,
    })
}

impl Num {
    /// Exact numeric ordering; `None` when either side is NaN.
    pub fn compare(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (Num::Float(a), Num::Float(b)) => a.partial_cmp(&b),
            (Num::Int(a), Num::Float(b)) => cmp_int_float(a, b),
            (Num::Float(a), Num::Int(b)) => cmp_int_float(b, a).map(Ordering::reverse),
        }
    }

    /// Numeric equality (`1 == 1.0`, NaN equals nothing).
    pub fn num_eq(self, other: Num) -> bool {
        self.compare(other) == Some(Ordering::Equal)
    }

    /// Whether this is NaN (a value no numeric predicate can be evaluated on).
    pub fn is_nan(self) -> bool {
        matches!(self, Num::Float(f) if f.is_nan())
    }
}

/// Skip ASCII digits from `i`; the index after them.
fn digits(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// The number a string spells, if it is exactly a JSON number (`-?(0|[1-9][0-9]*)(.[0-9]+)?
/// ([eE][+-]?[0-9]+)?`: no `+` sign, no spaces, no `_`, no hex, no `NaN`). An integer in the
/// `i64` range is an integer, anything else the nearest float (`1e400` is infinite), as
/// `reference.py`'s `numeric_str` reads it. Numeric predicates read such strings as numbers.
pub fn numeric_str(s: &str) -> Option<Num> {
    let b = s.as_bytes();
    let start = usize::from(b.first() == Some(&b'-'));
    let mut i = digits(b, start);
    if i == start || (i - start > 1 && b.get(start) == Some(&b'0')) {
        return None;
    }
    let mut integral = true;
    if b.get(i) == Some(&b'.') {
        let end = digits(b, i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
        integral = false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits(b, i);
        if end == i {
            return None;
        }
        i = end;
        integral = false;
    }
    if i != b.len() {
        return None;
    }
    if integral {
        if let Ok(n) = s.parse::<i64>() {
            return Some(Num::Int(n));
        }
    }
    s.parse::<f64>().ok().map(Num::Float)
}

/// One bound of a [`Range`]: the number and whether it is included.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    /// The bound itself.
    pub value: Num,
    /// Whether the bound belongs to the range (`>=`/`<=` rather than `>`/`<`).
    pub inclusive: bool,
}

/// A numeric interval with optional ends.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Range {
    /// Lower end, if any.
    pub lo: Option<Bound>,
    /// Upper end, if any.
    pub hi: Option<Bound>,
}

impl Range {
    /// Whether `x` lies in the range (never true for NaN unless both ends are open).
    pub fn contains(&self, x: Num) -> bool {
        let above = match self.lo {
            None => true,
            Some(b) => match x.compare(b.value) {
                Some(Ordering::Greater) => true,
                Some(Ordering::Equal) => b.inclusive,
                _ => false,
            },
        };
        above
            && match self.hi {
                None => true,
                Some(b) => match x.compare(b.value) {
                    Some(Ordering::Less) => true,
                    Some(Ordering::Equal) => b.inclusive,
                    _ => false,
                },
            }
    }
}

/// The view of one argument value that predicates see. Lists, objects and values of other
/// types are [`Val::Other`]: only `exists` can evaluate them; every other test is unknown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    /// The path does not resolve.
    Missing,
    /// JSON `null` / Python `None`.
    Null,
    /// A boolean (never equal to a number).
    Bool(bool),
    /// A number.
    Num(Num),
    /// A string.
    Str(&'a str),
    /// A list, an object or anything else.
    Other,
}

/// One step of a JSON path: an object key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// `.name` or `["name"]`.
    Key(Box<str>),
    /// `[3]`.
    Index(usize),
}

/// A source of argument values, read by pre-split path.
pub trait Args {
    /// Call `f` with the value at `path` (`path_id` indexes the policy's path table, so an
    /// implementation may keep per-path data such as interned keys). Errors only when the
    /// request itself cannot be read (the Python side: a string that is not valid Unicode).
    fn with_value<R>(
        &self,
        path_id: usize,
        path: &[Seg],
        f: impl FnOnce(Val<'_>) -> R,
    ) -> CoreResult<R>;
}

/// Convert a `serde_json` number, mapping integers outside `i64` to floats.
fn json_num(n: &serde_json::Number) -> Num {
    match n.as_i64() {
        Some(i) => Num::Int(i),
        None => Num::Float(n.as_f64().unwrap_or(f64::NAN)),
    }
}

/// The scalar view of a `serde_json` value.
pub fn json_val(v: &serde_json::Value) -> Val<'_> {
    match v {
        serde_json::Value::Null => Val::Null,
        serde_json::Value::Bool(b) => Val::Bool(*b),
        serde_json::Value::Number(n) => Val::Num(json_num(n)),
        serde_json::Value::String(s) => Val::Str(s),
        serde_json::Value::Array(_) | serde_json::Value::Object(_) => Val::Other,
    }
}

impl Args for serde_json::Value {
    fn with_value<R>(
        &self,
        _path_id: usize,
        path: &[Seg],
        f: impl FnOnce(Val<'_>) -> R,
    ) -> CoreResult<R> {
        let mut cur = self;
        for seg in path {
            let next = match (seg, cur) {
                (Seg::Key(k), serde_json::Value::Object(map)) => map.get(&**k),
                (Seg::Index(i), serde_json::Value::Array(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(v) => cur = v,
                None => return Ok(f(Val::Missing)),
            }
        }
        Ok(f(json_val(cur)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn int_float_comparison_is_exact() {
        assert!(Num::Int(5).num_eq(Num::Float(5.0)));
        assert_eq!(Num::Int(5).compare(Num::Float(5.5)), Some(Ordering::Less));
        assert_eq!(
            Num::Int(-5).compare(Num::Float(-5.5)),
            Some(Ordering::Greater)
        );
        // 2^53 + 1 is not representable: Python says 2**53 + 1 != float(2**53).
        let big = (1_i64 << 53) + 1;
        assert_eq!(
            Num::Int(big).compare(Num::Float((1_i64 << 53) as f64)),
            Some(Ordering::Greater)
        );
        assert_eq!(
            Num::Int(i64::MAX).compare(Num::Float(TWO_63)),
            Some(Ordering::Less)
        );
        assert_eq!(
            Num::Int(i64::MIN).compare(Num::Float(-TWO_63)),
            Some(Ordering::Equal)
        );
        assert_eq!(Num::Int(1).compare(Num::Float(f64::NAN)), None);
        assert_eq!(
            Num::Float(f64::INFINITY).compare(Num::Int(i64::MAX)),
            Some(Ordering::Greater)
        );
    }

    #[test]
    fn numeric_strings_follow_the_json_grammar() {
        assert_eq!(numeric_str("5000"), Some(Num::Int(5000)));
        assert_eq!(numeric_str("-0"), Some(Num::Int(0)));
        assert_eq!(numeric_str("2.5"), Some(Num::Float(2.5)));
        assert_eq!(numeric_str("1E3"), Some(Num::Float(1000.0)));
        assert_eq!(numeric_str("-1e-2"), Some(Num::Float(-0.01)));
        assert_eq!(numeric_str("1e400"), Some(Num::Float(f64::INFINITY)));
        assert_eq!(numeric_str("9223372036854775808"), Some(Num::Float(TWO_63)));
        for bad in [
            "", "-", "+5", " 5", "5 ", "05", "5.", ".5", "5_000", "0x10", "NaN", "inf", "1e",
            "1e+", "--1", "1.2.3", "\u{0665}",
        ] {
            assert_eq!(numeric_str(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ranges_honour_inclusiveness() {
        let r = Range {
            lo: Some(Bound {
                value: Num::Int(0),
                inclusive: false,
            }),
            hi: Some(Bound {
                value: Num::Float(10.0),
                inclusive: true,
            }),
        };
        assert!(!r.contains(Num::Int(0)));
        assert!(r.contains(Num::Float(1e-300)));
        assert!(r.contains(Num::Int(10)));
        assert!(!r.contains(Num::Float(10.000001)));
        assert!(!r.contains(Num::Float(f64::NAN)));
        assert!(Range::default().contains(Num::Float(f64::NAN)));
    }

    #[test]
    fn json_paths_resolve_keys_and_indices_only() {
        let v: serde_json::Value = serde_json::json!({"a": {"b": [10, {"c": "x"}]}, "0": true, "big": 18446744073709551615_u64});
        let get = |path: &[Seg]| v.with_value(0, path, |x| format!("{x:?}")).ok();
        let key = |k: &str| Seg::Key(k.into());
        assert_eq!(
            get(&[key("a"), key("b"), Seg::Index(0)]).as_deref(),
            Some("Num(Int(10))")
        );
        assert_eq!(
            get(&[key("a"), key("b"), Seg::Index(1), key("c")]).as_deref(),
            Some("Str(\"x\")")
        );
        assert_eq!(
            get(&[key("a"), key("b"), Seg::Index(2)]).as_deref(),
            Some("Missing")
        );
        assert_eq!(
            get(&[key("a"), key("b"), key("0")]).as_deref(),
            Some("Missing")
        );
        assert_eq!(get(&[Seg::Index(0)]).as_deref(), Some("Missing"));
        assert_eq!(get(&[key("0")]).as_deref(), Some("Bool(true)"));
        assert_eq!(get(&[key("a")]).as_deref(), Some("Other"));
        assert_eq!(
            get(&[key("big")]).as_deref(),
            Some("Num(Float(1.8446744073709552e19))")
        );
    }

    /// Oracle: compare on `floor(f)` in i128 (exact for |f| < 2^100), then on the fraction.
    fn cmp_exact(i: i64, f: f64) -> Ordering {
        let fi = f.floor();
        if fi >= 2f64.powi(100) {
            return Ordering::Less;
        }
        if fi <= -(2f64.powi(100)) {
            return Ordering::Greater;
        }
        #[allow(clippy::cast_possible_truncation)]
        let fi128 = fi as i128;
        match i128::from(i).cmp(&fi128) {
            Ordering::Equal if f > fi => Ordering::Less,
            o => o,
        }
    }

    proptest! {
        #[test]
        fn int_float_matches_an_i128_oracle(i in any::<i64>(), f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
            prop_assert_eq!(Num::Int(i).compare(Num::Float(f)), Some(cmp_exact(i, f)));
            prop_assert_eq!(Num::Float(f).compare(Num::Int(i)), Some(cmp_exact(i, f).reverse()));
        }

        #[test]
        fn int_float_near_the_int(i in any::<i64>(), d in -3.0f64..3.0) {
            #[allow(clippy::cast_precision_loss)]
            let f = i as f64 + d;
            prop_assert_eq!(Num::Int(i).compare(Num::Float(f)), Some(cmp_exact(i, f)));
        }
    }
}
