//! The one conversion from [`CoreError`] to a Python exception. The Python side
//! (`routeguard.errors`) re-raises these as its own hierarchy.

use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::PyErr;

use crate::error::CoreError;

/// Map a kernel error onto the matching built-in Python exception.
#[allow(dead_code)]
pub fn to_pyerr(err: CoreError) -> PyErr {
    match err {
        CoreError::InvalidInput(msg) => PyValueError::new_err(msg),
        CoreError::NotFound(msg) => PyKeyError::new_err(msg),
    }
}
