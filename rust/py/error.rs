//! The one conversion from [`CoreError`] to a Python exception: `From<CoreError> for PyErr`,
//! so wrappers use `?`. Each variant becomes an exception of `routeguard.errors`
//! (`CoreInputError`, a `ValueError`; `CoreNotFound`, a `KeyError`; both `RouteguardError`s),
//! looked up once; if that module cannot be imported the built-in base is raised instead.

use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::error::{CoreError, CoreResult};

static INPUT_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static NOT_FOUND: PyOnceLock<Py<PyType>> = PyOnceLock::new();

impl From<CoreError> for PyErr {
    fn from(err: CoreError) -> PyErr {
        Python::attach(|py| {
            let (cell, name, msg) = match &err {
                CoreError::InvalidInput(msg) => (&INPUT_ERROR, "CoreInputError", msg),
                CoreError::NotFound(msg) => (&NOT_FOUND, "CoreNotFound", msg),
            };
            match cell.import(py, "routeguard.errors", name) {
                Ok(ty) => PyErr::from_type(ty.clone(), (msg.clone(),)),
                Err(_) => match err {
                    CoreError::InvalidInput(msg) => PyValueError::new_err(msg),
                    CoreError::NotFound(msg) => PyKeyError::new_err(msg),
                },
            }
        })
    }
}

/// Run a kernel call without the GIL and convert its error: the helper every wrapper that
/// computes goes through.
pub(crate) fn run<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    F: Send + FnOnce() -> CoreResult<T>,
    T: Send,
{
    Ok(super::detach(py, f)?)
}
