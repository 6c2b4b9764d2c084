//! `otlp_trace_request`: a batch of finished spans as an OTLP `ExportTraceServiceRequest`'s
//! protobuf bytes, for `routeguard.server.otlp_wire`.
//!
//! Data flow: the Python side groups the spans by resource and scope and reads each span's
//! fields into a tuple (see `otlp_wire.encode`); this walks those lists and the attribute
//! mappings and drives [`crate::otlp::Writer`]. Attribute values are written as the
//! OpenTelemetry SDK's encoder writes them: `str`, `bool`, an `int` within int64, `float`,
//! `bytes`, a sequence as an array (None in one: an empty value), at most 32 levels deep.
//! Anything else raises (a key that is not a `str`, a lone surrogate, an int past int64, a
//! mapping, a value of another type, deeper nesting, a self-containing list), and the
//! exporter falls back to the SDK's encoder, which writes or drops it as the SDK does.

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::otlp::{field, SpanHead, Value, Writer};

/// How deep arrays may nest in one attribute value (a self-containing list raises here).
const MAX_DEPTH: usize = 32;

/// Register this module's function on `_core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(otlp_trace_request, m)?)?;
    Ok(())
}

/// The `ExportTraceServiceRequest` of `resources`: a list of `(attributes, schema_url,
/// scopes)`, each scope `(scope, spans)` with `scope` None or `(name, version, attributes,
/// schema_url)`, each span `(trace_id, span_id, trace_state, parent_span_id, parent_is_remote,
/// name, kind, start_ns, end_ns, attributes, dropped_attributes, status_description,
/// status_code, dropped_events, dropped_links)` in the SDK's terms (kind and status code as
/// their enum values).
#[pyfunction]
fn otlp_trace_request<'py>(
    py: Python<'py>,
    resources: &Bound<'py, PyList>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut w = Writer::new();
    for resource in resources.iter() {
        let resource = resource.cast::<PyTuple>()?;
        let open = w.open(field::RESOURCE_SPANS);
        let inner = w.open(field::RESOURCE);
        attributes(&mut w, field::RESOURCE_ATTRIBUTES, &resource.get_item(0)?)?;
        w.close(inner);
        for scope_spans in resource.get_item(2)?.cast::<PyList>()?.iter() {
            let scope_spans = scope_spans.cast::<PyTuple>()?;
            scope(&mut w, &scope_spans.get_item(0)?, &scope_spans.get_item(1)?)?;
        }
        text(&mut w, field::SCHEMA_URL, &resource.get_item(1)?)?;
        w.close(open);
    }
    Ok(PyBytes::new(py, &w.finish()))
}

/// One `ScopeSpans`: the scope (an empty message when None), the spans, the schema URL.
fn scope(w: &mut Writer, scope: &Bound<'_, PyAny>, spans: &Bound<'_, PyAny>) -> PyResult<()> {
    let open = w.open(field::SCOPE_SPANS);
    let inner = w.open(field::SCOPE);
    let scope = if scope.is_none() {
        None
    } else {
        Some(scope.cast::<PyTuple>()?)
    };
    if let Some(scope) = scope {
        let name = scope.get_item(0)?;
        w.bytes(
            field::SCOPE_NAME,
            name.cast::<PyString>()?.to_str()?.as_bytes(),
        );
        text(w, field::SCOPE_VERSION, &scope.get_item(1)?)?;
        attributes(w, field::SCOPE_ATTRIBUTES, &scope.get_item(2)?)?;
    }
    w.close(inner);
    for span_fields in spans.cast::<PyList>()?.iter() {
        span(w, span_fields.cast::<PyTuple>()?)?;
    }
    if let Some(scope) = scope {
        text(w, field::SCHEMA_URL, &scope.get_item(3)?)?;
    }
    w.close(open);
    Ok(())
}

/// One `Span` from its tuple (see [`otlp_trace_request`]).
fn span(w: &mut Writer, s: &Bound<'_, PyTuple>) -> PyResult<()> {
    let trace_state = s.get_item(2)?;
    let trace_state = optional_str(&trace_state)?;
    let parent = s.get_item(3)?;
    let parent = if parent.is_none() {
        None
    } else {
        Some((parent.extract::<u64>()?, s.get_item(4)?.is_truthy()?))
    };
    let name = s.get_item(5)?;
    let head = SpanHead {
        trace_id: s.get_item(0)?.extract::<u128>()?,
        span_id: s.get_item(1)?.extract::<u64>()?,
        trace_state,
        parent,
        name: name.cast::<PyString>()?.to_str()?,
        kind: s.get_item(6)?.extract::<u32>()?,
        start_ns: s.get_item(7)?.extract::<u64>()?,
        end_ns: s.get_item(8)?.extract::<u64>()?,
    };
    let open = w.open(field::SPANS);
    w.span_head(&head);
    attributes(w, field::SPAN_ATTRIBUTES, &s.get_item(9)?)?;
    let description = s.get_item(11)?;
    let status = (
        optional_str(&description)?,
        s.get_item(12)?.extract::<u32>()?,
    );
    let dropped = (
        s.get_item(10)?.extract::<u32>()?,
        s.get_item(13)?.extract::<u32>()?,
        s.get_item(14)?.extract::<u32>()?,
    );
    w.span_tail(&head, dropped, status);
    w.close(open);
    Ok(())
}

/// A string or None.
fn optional_str<'a>(value: &'a Bound<'_, PyAny>) -> PyResult<Option<&'a str>> {
    if value.is_none() {
        return Ok(None);
    }
    Ok(Some(value.cast::<PyString>()?.to_str()?))
}

/// A string field when `value` is a non-empty string (None and "" write nothing).
fn text(w: &mut Writer, number: u32, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if let Some(s) = optional_str(value)?.filter(|s| !s.is_empty()) {
        w.bytes(number, s.as_bytes());
    }
    Ok(())
}

/// Repeated `KeyValue` fields from a mapping (None or empty: none).
fn attributes(w: &mut Writer, number: u32, attrs: &Bound<'_, PyAny>) -> PyResult<()> {
    if attrs.is_none() {
        return Ok(());
    }
    if let Ok(attrs) = attrs.cast::<PyDict>() {
        for (k, v) in attrs.iter() {
            key_value(w, number, &k, &v)?;
        }
        return Ok(());
    }
    for item in attrs.call_method0("items")?.try_iter()? {
        let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
        key_value(w, number, &k, &v)?;
    }
    Ok(())
}

fn key_value(
    w: &mut Writer,
    number: u32,
    key: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let key = key
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err("an attribute key is not a str"))?;
    let open = w.open_key_value(number, key.to_str()?);
    any_value(w, value, 0)?;
    w.close_key_value(open);
    Ok(())
}

/// The content of the `AnyValue` open now (None: left empty), `depth` arrays down.
fn any_value(w: &mut Writer, v: &Bound<'_, PyAny>, depth: usize) -> PyResult<()> {
    if v.is_none() {
        return Ok(());
    }
    if let Ok(s) = v.cast::<PyString>() {
        w.value(Value::Str(s.to_str()?));
    } else if let Ok(b) = v.cast::<PyBool>() {
        w.value(Value::Bool(b.is_true()));
    } else if v.is_instance_of::<PyInt>() {
        let n = v
            .extract::<i64>()
            .map_err(|_| PyOverflowError::new_err("an attribute int is past int64"))?;
        w.value(Value::Int(n as u64)); // int64 as two's complement
    } else if let Ok(x) = v.cast::<PyFloat>() {
        w.value(Value::Double(x.value()));
    } else if let Ok(b) = v.cast::<PyBytes>() {
        w.value(Value::Bytes(b.as_bytes()));
    } else if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() || is_sequence(v)? {
        if depth >= MAX_DEPTH {
            return Err(PyValueError::new_err("an attribute value nests too deep"));
        }
        let array = w.open_array();
        for item in v.try_iter()? {
            let open = w.open_item();
            any_value(w, &item?, depth + 1)?;
            w.close(open);
        }
        w.close(array);
    } else {
        return Err(PyTypeError::new_err(
            "an attribute value of a type the wire encoder leaves to the SDK's",
        ));
    }
    Ok(())
}

/// `isinstance(v, collections.abc.Sequence)`, asked only of values of no common type.
fn is_sequence(v: &Bound<'_, PyAny>) -> PyResult<bool> {
    let abc = v.py().import("collections.abc")?.getattr("Sequence")?;
    v.is_instance(&abc)
}
