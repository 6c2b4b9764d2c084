//! `SseParser`: the event-stream framing of `crate::sse` for `routeguard.providers.http`,
//! one call per chunk read from an upstream instead of a Python loop per line.
//!
//! Data flow: `SseStream.events` makes one parser per stream and calls `feed` with each
//! chunk as it arrives and `finish` at the end of the body; each returns the events completed
//! as `(event, data)` pairs (`str`, `bytes`). An `event` line whose value is not UTF-8
//! raises UnicodeDecodeError, as decoding it at its line in Python did; the events completed
//! before that line are on the exception, as its `events` attribute, to be passed on first.

use std::sync::Mutex;

use pyo3::exceptions::PyUnicodeDecodeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::sse::{BadName, Event, SseParser};

/// Register this module's class on `_core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySseParser>()?;
    Ok(())
}

/// Server-sent events from a stream's chunks: `feed` each chunk, then `finish`.
#[pyclass(name = "SseParser", module = "routeguard._core", frozen)]
pub struct PySseParser {
    inner: Mutex<SseParser>,
}

#[pymethods]
impl PySseParser {
    #[new]
    fn new() -> Self {
        PySseParser {
            inner: Mutex::new(SseParser::new()),
        }
    }

    /// The events `chunk` completes, as `(event, data)` (event "" when the server named none).
    fn feed<'py>(&self, py: Python<'py>, chunk: &[u8]) -> PyResult<Bound<'py, PyList>> {
        let mut out = Vec::new();
        let framed = self.parser().feed(chunk, &mut out);
        done(py, framed, out)
    }

    /// The end of the body: the event its unended last line or data leaves, if any.
    fn finish<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut out = Vec::new();
        let framed = self.parser().finish(&mut out);
        done(py, framed, out)
    }
}

impl PySseParser {
    fn parser(&self) -> std::sync::MutexGuard<'_, SseParser> {
        // A poisoned lock only means a panic elsewhere; the parser's state is still whole.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The events as a list, or the UnicodeDecodeError of a bad name carrying them.
fn done(
    py: Python<'_>,
    framed: Result<(), BadName>,
    out: Vec<Event>,
) -> PyResult<Bound<'_, PyList>> {
    let list = PyList::empty(py);
    for (event, data) in out {
        let name = PyString::new(py, &event).into_any();
        list.append(PyTuple::new(
            py,
            [name, PyBytes::new(py, &data).into_any()],
        )?)?;
    }
    match framed {
        Ok(()) => Ok(list),
        Err(bad) => {
            let err = PyUnicodeDecodeError::new_utf8(py, &bad.name, bad.error)?;
            err.setattr("events", list)?;
            Err(PyErr::from_value(err.into_any()))
        }
    }
}
