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
//! then measures the whole request itself.
//!
//! `ChatMeasure.quote` goes on from the counts to what a budget holds on the deployments of
//! a `PriceTable`: the completion bound, the dearest deployment's cost in micro-dollars
//! (the float operations of `Deployment.cost` and the rounding of `usd_to_micros`, in
//! order, so the amount is the one Python computes) and the token estimate rate limits
//! consume, in one call. A number past an i64, or a cost past the float rounding's range,
//! leaves the request to Python. There is nothing to compute apart from the walk and that
//! arithmetic, so no kernel module sits behind this one.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PyString};

/// Register this module's class on `_core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyChatMeasure>()?;
    m.add_class::<PyPriceTable>()?;
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
        Ok(self
            .counts(request)?
            .map(|(c, tools)| (c.bytes, c.images, c.messages, c.text, tools)))
    }

    /// What a budget holds for `request` on the deployments of `prices`: `(micro-dollars,
    /// estimated tokens)` as `BudgetLayer.worst_case` and `InputSize.estimate` make them,
    /// with `default_max_tokens` for a request that sets no completion limit; None when
    /// Python must work it out (a request the walk leaves to it, or numbers past the
    /// float rounding rule: see the module docs).
    fn quote(
        &self,
        request: &Bound<'_, PyAny>,
        prices: &PyPriceTable,
        default_max_tokens: u64,
    ) -> PyResult<Option<(u64, u64)>> {
        let Some((c, tools)) = self.counts(request)? else {
            return Ok(None);
        };
        let Ok(request) = request.cast_exact::<PyDict>() else {
            return Ok(None);
        };
        let Some(completion) = completion_bound(request, default_max_tokens)? else {
            return Ok(None);
        };
        let Some(amount) = prices.worst(&c, tools, completion) else {
            return Ok(None);
        };
        let estimate = (c.bytes + 16 * c.messages) / 2 + c.images * 1024 + 8;
        Ok(Some((amount, estimate as u64)))
    }
}

impl PyChatMeasure {
    /// The walk (see `__call__`): the counts and whether tools are given.
    fn counts(&self, request: &Bound<'_, PyAny>) -> PyResult<Option<(Counts, bool)>> {
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
        Ok(Some((c, tools)))
    }
}

/// A positive int field of `request` that is not a bool: Some(None) when absent or not
/// such an int, None when it does not fit an i64 (left to Python).
fn positive_int(request: &Bound<'_, PyDict>, name: &str) -> PyResult<Option<Option<u64>>> {
    let Some(v) = request.get_item(name)? else {
        return Ok(Some(None));
    };
    if !v.is_instance_of::<PyInt>() || v.is_instance_of::<PyBool>() {
        return Ok(Some(None));
    }
    let Ok(n) = v.extract::<i64>() else {
        return Ok(None);
    };
    Ok(Some(u64::try_from(n).ok().filter(|&n| n > 0)))
}

/// `bound.completion_bound`: `n` choices of the request's larger completion limit (else
/// `default_max_tokens`); None when a number does not fit (left to Python).
fn completion_bound(request: &Bound<'_, PyDict>, default_max_tokens: u64) -> PyResult<Option<u64>> {
    let mut most: Option<u64> = None;
    for name in ["max_completion_tokens", "max_tokens"] {
        let Some(v) = positive_int(request, name)? else {
            return Ok(None);
        };
        if let Some(v) = v {
            most = Some(most.map_or(v, |m| m.max(v)));
        }
    }
    let Some(n) = positive_int(request, "n")? else {
        return Ok(None);
    };
    let choices = n.filter(|&n| n > 1).unwrap_or(1);
    Ok(choices.checked_mul(most.unwrap_or(default_max_tokens)))
}

/// The largest amount one call moves, as `ledger.MAX_AMOUNT`.
const MAX_AMOUNT: u64 = 1 << 53;

/// What a hold is priced at: per deployment, dollars a million input and output tokens and
/// the tokens one image costs there (`Gateway._priced` keeps one row per distinct price).
#[pyclass(name = "PriceTable", module = "routeguard._core", frozen)]
pub struct PyPriceTable {
    rows: Vec<(f64, f64, u64)>,
}

#[pymethods]
impl PyPriceTable {
    /// `rows`: `(input $/Mtok, output $/Mtok, tokens an image costs)`, prices finite and
    /// not negative (ValueError otherwise).
    #[new]
    fn new(rows: Vec<(f64, f64, u64)>) -> PyResult<Self> {
        if rows
            .iter()
            .any(|&(i, o, _)| !(i.is_finite() && o.is_finite() && i >= 0.0 && o >= 0.0))
        {
            return Err(PyValueError::new_err(
                "prices must be finite and not negative",
            ));
        }
        Ok(PyPriceTable { rows })
    }

    fn __len__(&self) -> usize {
        self.rows.len()
    }
}

impl PyPriceTable {
    /// Micro-dollars of the dearest row for `c` and `completion` tokens, rounded up as
    /// `usd_to_micros(..., round_up=True)` rounds a float and capped at MAX_AMOUNT; None
    /// past that rounding's float range (Python then rounds through Decimal).
    fn worst(&self, c: &Counts, tools: bool, completion: u64) -> Option<u64> {
        let base = c.bytes + 4 * (c.messages + 2) + if tools { 600 } else { 0 };
        let mut worst = 0.0_f64;
        for &(input, output, image) in &self.rows {
            let images = u64::try_from(c.images).ok()?.checked_mul(image)?;
            let prompt = u64::try_from(base).ok()?.checked_add(images)?;
            // The float operations of `Deployment.cost`, in its order: the same answer.
            let cost = (prompt as f64 * input + completion as f64 * output) / 1_000_000.0;
            if cost > worst {
                worst = cost;
            }
        }
        if !(worst.is_finite() && worst.abs() < 9e9) {
            return None;
        }
        let value = worst * 1_000_000.0;
        let whole = value.floor();
        let up = u64::from(value - whole >= 0.0005);
        Some(((whole as u64) + up).min(MAX_AMOUNT))
    }
}
