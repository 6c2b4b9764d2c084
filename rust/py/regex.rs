//! pyo3 wrapper of [`crate::pattern`]: `Regex` and the `RegexError` it raises.
//!
//! Data flow: Python passes a pattern once (compiled here, a `RegexError` naming what the
//! linear-time engine cannot run) and then texts to search; answers are booleans or
//! character offsets into the same `str`. A lone surrogate (valid in a Python `str`, not in
//! UTF-8) is searched as `?`, one character for one, so offsets still index the `str`.
//! Texts longer than [`DETACH_BYTES`] are searched without the GIL.

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use std::borrow::Cow;

use super::detach;
use crate::error::CoreError;
use crate::pattern::LinearRegex;

create_exception!(
    routeguard._core,
    RegexError,
    PyValueError,
    "A pattern the linear-time regex engine cannot compile (syntax, look-around, \
     backreferences, or too large)."
);

/// Texts at least this long are searched with the GIL released: below it a search costs
/// less than giving the GIL up and taking it back.
const DETACH_BYTES: usize = 16 * 1024;

/// Register this module's class and exception on `_core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyRegex>()?;
    m.add("RegexError", m.py().get_type::<RegexError>())?;
    Ok(())
}

/// A regular expression whose searches take time linear in the text (no backtracking).
#[pyclass(name = "Regex", module = "routeguard._core", frozen)]
pub struct PyRegex {
    inner: LinearRegex,
}

/// The text as UTF-8: borrowed when it is valid, else with `?` for each lone surrogate.
fn utf8<'a>(text: &'a Bound<'_, PyString>) -> PyResult<Cow<'a, str>> {
    if let Ok(s) = text.to_str() {
        return Ok(Cow::Borrowed(s));
    }
    let encoded = text.call_method1("encode", ("utf-8", "replace"))?;
    let bytes = encoded.cast::<PyBytes>()?;
    Ok(Cow::Owned(
        String::from_utf8_lossy(bytes.as_bytes()).into_owned(),
    ))
}

fn run<T: Send>(py: Python<'_>, text: &str, f: impl Send + FnOnce() -> T) -> T {
    if text.len() >= DETACH_BYTES {
        detach(py, f)
    } else {
        f()
    }
}

#[pymethods]
impl PyRegex {
    #[new]
    #[pyo3(signature = (pattern, *, case_insensitive = false))]
    fn new(pattern: &str, case_insensitive: bool) -> PyResult<Self> {
        match LinearRegex::new(pattern, case_insensitive) {
            Ok(inner) => Ok(Self { inner }),
            Err(CoreError::InvalidInput(msg) | CoreError::NotFound(msg)) => {
                Err(RegexError::new_err(msg))
            }
        }
    }

    /// The source pattern.
    #[getter]
    fn pattern(&self) -> &str {
        self.inner.as_str()
    }

    /// Whether the pattern matches anywhere in `text`.
    fn is_match(&self, py: Python<'_>, text: &Bound<'_, PyString>) -> PyResult<bool> {
        let text = utf8(text)?;
        Ok(run(py, &text, || self.inner.is_match(&text)))
    }

    /// Character offsets `(start, end)` of the first match, or None.
    fn search(
        &self,
        py: Python<'_>,
        text: &Bound<'_, PyString>,
    ) -> PyResult<Option<(usize, usize)>> {
        let text = utf8(text)?;
        Ok(run(py, &text, || self.inner.search(&text)))
    }

    /// Character offsets of every non-overlapping match, in order (at most `limit`).
    #[pyo3(signature = (text, limit = None))]
    fn find_spans(
        &self,
        py: Python<'_>,
        text: &Bound<'_, PyString>,
        limit: Option<usize>,
    ) -> PyResult<Vec<(usize, usize)>> {
        let limit = limit.unwrap_or(usize::MAX);
        let text = utf8(text)?;
        Ok(run(py, &text, || self.inner.find_spans(&text, limit)))
    }

    fn __repr__(&self) -> String {
        format!("Regex({:?})", self.inner.as_str())
    }
}
