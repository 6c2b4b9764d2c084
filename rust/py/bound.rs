//! `ChatMeasure`: the byte counts of a chat request for `routeguard.budget.bound.measure`,
//! walked over the Python objects in one call instead of a Python loop per field.
//!
//! Data flow: `routeguard.budget.bound` builds one `ChatMeasure` with its rules (the request
//! fields no provider reads, the content-part types that are images) and its `_size` (the
//! UTF-8 bytes of a value as JSON), which this walk calls for the values it does not size
//! itself (dicts and lists other than the request's own structure). A call answers
//! `(bytes, images, messages, text_bytes, tools)` exactly as the Python walk would, or None
//! when the request holds something this walk leaves to Python (a request or message that
//! is not a plain dict, a key that is not a `str`, a lone surrogate in a string), which
//! then measures the whole request itself. There is nothing to compute apart from the walk,
//! so no kernel module sits behind this one.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PyString};

/// Register this module's class on `_core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyChatMeasure>()?;
    Ok(())
}

/// What `measure` counts of a chat request: JSON bytes, images, messages, text bytes, tools.
#[pyclass(name = "ChatMeasure", module = "routeguard._core", frozen)]
pub struct PyChatMeasure {
    not_read: Py<PyFrozenSet>,
    image_parts: Py<PyFrozenSet>,
    size: Py<PyAny>,
}

/// Fields of the request that count as text (the message text and the prompt-like fields).
const TEXT_FIELDS: [&str; 4] = ["tools", "functions", "system", "response_format"];

/// The walk's answer so far; `None` from a step means "leave this request to Python".
#[derive(Default)]
struct Counts {
    bytes: usize,
    images: usize,
    messages: usize,
    text: usize,
}

impl PyChatMeasure {
    /// UTF-8 bytes of `value` as JSON, as `bound._size` counts them (None: leave to Python).
    fn size_of(&self, value: &Bound<'_, PyAny>) -> PyResult<Option<usize>> {
        if let Ok(s) = value.cast::<PyString>() {
            // A lone surrogate has no UTF-8: Python counts it with `surrogatepass`.
            return Ok(s.to_str().ok().map(str::len));
        }
        if value.is_none()
            || value.is_instance_of::<PyBool>()
            || value.is_instance_of::<PyInt>()
            || value.is_instance_of::<PyFloat>()
        {
            return Ok(Some(8));
        }
        Ok(Some(self.size.bind(value.py()).call1((value,))?.extract()?))
    }

    /// Python's `len` of a dict key (characters), or None when it is not a `str`
    /// (one that is not valid UTF-8 is refused by its caller).
    fn key_len<'py>(key: &Bound<'py, PyAny>) -> PyResult<Option<(usize, Bound<'py, PyString>)>> {
        match key.cast::<PyString>() {
            Ok(s) if s.is_exact_instance_of::<PyString>() => Ok(Some((s.len()?, s.clone()))),
            _ => Ok(None),
        }
    }

    /// Count a content list's parts into `c` (images apart); false: leave to Python.
    fn content(&self, parts: &Bound<'_, PyList>, c: &mut Counts) -> PyResult<bool> {
        let image_parts = self.image_parts.bind(parts.py());
        for part in parts.iter() {
            let Ok(part) = part.cast_into_exact::<PyDict>() else {
                return Ok(false);
            };
            let kind = part.get_item("type")?;
            let image = match &kind {
                None => part.contains("image_url")? || part.contains("image")?,
                Some(k) if k.is_none() => part.contains("image_url")? || part.contains("image")?,
                Some(k) if k.is_instance_of::<PyString>() => image_parts.contains(k)?,
                Some(_) => false,
            };
            if image {
                c.images += 1;
                continue;
            }
            let Some(n) = self.size_of(part.as_any())? else {
                return Ok(false);
            };
            c.bytes += n;
            match part.get_item("text")? {
                Some(text) if text.is_instance_of::<PyString>() => {
                    let Some(t) = self.size_of(&text)? else {
                        return Ok(false);
                    };
                    c.text += t;
                }
                _ => c.text += n,
            }
        }
        Ok(true)
    }

    /// Count one message into `c`; false: leave to Python.
    fn message(&self, message: &Bound<'_, PyAny>, c: &mut Counts) -> PyResult<bool> {
        let Ok(message) = message.cast_exact::<PyDict>() else {
            return Ok(false);
        };
        for (k, v) in message.iter() {
            let Some((klen, key)) = Self::key_len(&k)? else {
                return Ok(false);
            };
            let Ok(key) = key.to_str() else {
                return Ok(false);
            };
            if key == "content" {
                if let Ok(parts) = v.cast::<PyList>() {
                    if !parts.is_exact_instance_of::<PyList>() || !self.content(parts, c)? {
                        return Ok(false);
                    }
                    continue;
                }
            }
            let Some(n) = self.size_of(&v)? else {
                return Ok(false);
            };
            let n = n + klen + 4;
            c.bytes += n;
            if key != "role" {
                c.text += n;
            }
        }
        Ok(true)
    }
}

#[pymethods]
impl PyChatMeasure {
    /// `not_read`: request fields no provider reads; `image_parts`: content-part types that
    /// are images; `size`: the JSON byte count of any other value.
    #[new]
    fn new(
        not_read: Bound<'_, PyFrozenSet>,
        image_parts: Bound<'_, PyFrozenSet>,
        size: Bound<'_, PyAny>,
    ) -> Self {
        PyChatMeasure {
            not_read: not_read.unbind(),
            image_parts: image_parts.unbind(),
            size: size.unbind(),
        }
    }

    /// `(bytes, images, messages, text_bytes, tools)` of `request`, or None when the
    /// request is one to measure in Python (see the module docs).
    #[allow(clippy::type_complexity)]
    fn __call__(
        &self,
        request: &Bound<'_, PyAny>,
    ) -> PyResult<Option<(usize, usize, usize, usize, bool)>> {
        let Ok(request) = request.cast_exact::<PyDict>() else {
            return Ok(None);
        };
        let mut c = Counts::default();
        if let Some(messages) = request.get_item("messages")? {
            if let Ok(messages) = messages.cast::<PyList>() {
                if !messages.is_exact_instance_of::<PyList>() {
                    return Ok(None);
                }
                for m in messages.iter() {
                    c.messages += 1;
                    if !self.message(&m, &mut c)? {
                        return Ok(None);
                    }
                }
            }
        }
        let not_read = self.not_read.bind(request.py());
        for (k, v) in request.iter() {
            let Some((klen, key)) = Self::key_len(&k)? else {
                return Ok(None);
            };
            let Ok(name) = key.to_str() else {
                return Ok(None);
            };
            if name == "messages"
                || v.is_none()
                || v.is_instance_of::<PyBool>()
                || v.is_instance_of::<PyInt>()
                || v.is_instance_of::<PyFloat>()
                || not_read.contains(&key)?
            {
                continue;
            }
            let Some(n) = self.size_of(&v)? else {
                return Ok(None);
            };
            let n = n + klen + 4;
            c.bytes += n;
            if TEXT_FIELDS.contains(&name) {
                c.text += n;
            }
        }
        let truthy = |name: &str| -> PyResult<bool> {
            Ok(match request.get_item(name)? {
                Some(v) => v.is_truthy()?,
                None => false,
            })
        };
        let tools = truthy("tools")? || truthy("functions")?;
        Ok(Some((c.bytes, c.images, c.messages, c.text, tools)))
    }
}
