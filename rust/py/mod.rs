//! pyo3 wrappers: convert, release the GIL through [`detach`] (or [`error::run`], which also
//! converts a kernel's [`crate::error::CoreError`] into our Python exceptions), call the
//! kernel, convert back.
//! Nothing here computes; every algorithm lives in a pyo3-free module.

mod bound;
mod budget;
mod embed;
mod error;
mod otlp;
mod policy;
mod regex;
mod sse;
mod vector;
use pyo3::prelude::*;

pub(crate) use error::run;

/// Run `f` without the GIL. The one place the crate releases it, so panics and
/// GIL handling are dealt with once.
#[allow(dead_code)]
pub(crate) fn detach<T, F>(py: Python<'_>, f: F) -> T
where
    F: Send + FnOnce() -> T,
    T: Send,
{
    py.detach(f)
}

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", crate::VERSION)?;
    bound::register(m)?;
    budget::register(m)?;
    embed::register(m)?;
    otlp::register(m)?;
    policy::register(m)?;
    regex::register(m)?;
    sse::register(m)?;
    vector::register(m)?;
    Ok(())
}
