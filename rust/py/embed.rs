//! pyo3 wrapper of [`crate::embed`]: `BertEncoder`, the Rust forward pass of the local
//! embedder (`routeguard.embed.minilm` drives it).
//!
//! Data flow: the constructor takes the numpy arrays of `routeguard.embed.bert.BertWeights`
//! (read with `.as_slice()`, so a non-contiguous array raises), copies them out while the
//! GIL is held and packs the dense layers inside [`detach`]. `encode` takes one list of
//! token ids per text, runs the whole forward pass without the GIL on the calling thread,
//! and returns a `(texts, hidden)` float32 array (`into_pyarray`, no copy).

use std::collections::HashMap;

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;

use super::{detach, run};
use crate::embed::{BertConfig, BertEncoder, LayerWeights, Precision};

/// Register this module's class and functions on `_core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyBertEncoder>()?;
    m.add_function(wrap_pyfunction!(auto_precision, m)?)?;
    m.add_function(wrap_pyfunction!(int8_kernel, m)?)?;
    Ok(())
}

/// What `precision="auto"` means on this CPU: "bf16", "f16" or "f32".
#[pyfunction]
fn auto_precision() -> &'static str {
    crate::embed::auto_precision().name()
}

/// Which tile int8 layers run at this process's SIMD level: "vnni", "avx2" or "scalar".
#[pyfunction]
fn int8_kernel() -> &'static str {
    crate::embed::Int8Kernel::for_isa(crate::embed::Isa::detect()).name()
}

/// The names of one layer's arrays, as `routeguard.embed.bert.Layer` spells them.
const LAYER_KEYS: [&str; 12] = [
    "qkv_w",
    "qkv_b",
    "out_w",
    "out_b",
    "ln1_g",
    "ln1_b",
    "ffn_in_w",
    "ffn_in_b",
    "ffn_out_w",
    "ffn_out_b",
    "ln2_g",
    "ln2_b",
];

/// The contents of a C-contiguous float32 array, copied, or a `TypeError` naming it.
fn owned(array: &PyReadonlyArrayDyn<'_, f32>, name: &str) -> PyResult<Vec<f32>> {
    let error = || {
        PyTypeError::new_err(format!(
            "{name} must be a C-contiguous float32 array; pass numpy.ascontiguousarray({name})"
        ))
    };
    if !array.is_c_contiguous() {
        return Err(error());
    }
    Ok(array.as_slice().map_err(|_| error())?.to_vec())
}

/// A BERT encoder forward pass (mean pooling, L2 norm) on the calling thread.
#[pyclass(name = "BertEncoder", module = "routeguard._core", frozen)]
pub struct PyBertEncoder {
    inner: BertEncoder,
}

#[pymethods]
impl PyBertEncoder {
    #[new]
    #[pyo3(signature = (word, position, ln_g, ln_b, layers, *, heads, eps = 1e-12, precision = "f32"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        word: PyReadonlyArrayDyn<'_, f32>,
        position: PyReadonlyArrayDyn<'_, f32>,
        ln_g: PyReadonlyArrayDyn<'_, f32>,
        ln_b: PyReadonlyArrayDyn<'_, f32>,
        layers: Vec<HashMap<String, PyReadonlyArrayDyn<'_, f32>>>,
        heads: usize,
        eps: f32,
        precision: &str,
    ) -> PyResult<Self> {
        let precision = Precision::parse(precision).map_err(PyErr::from)?;
        let hidden = ln_g.len();
        let mut owned_layers = Vec::with_capacity(layers.len());
        for (n, layer) in layers.iter().enumerate() {
            let mut arrays = Vec::with_capacity(LAYER_KEYS.len());
            for key in LAYER_KEYS {
                let array = layer.get(key).ok_or_else(|| {
                    PyValueError::new_err(format!("layer {n} lacks the array {key:?}"))
                })?;
                arrays.push(owned(array, &format!("layers[{n}][{key:?}]"))?);
            }
            owned_layers.push(arrays);
        }
        let intermediate = owned_layers.first().map_or(0, |l| l[7].len());
        let config = BertConfig {
            hidden,
            heads,
            intermediate,
            eps,
            precision,
        };
        let (word, position) = (owned(&word, "word")?, owned(&position, "position")?);
        let (ln_g, ln_b) = (owned(&ln_g, "ln_g")?, owned(&ln_b, "ln_b")?);
        let inner = detach(py, move || {
            let views: Vec<LayerWeights<'_>> = owned_layers
                .iter()
                .map(|l| LayerWeights::from_parts(l))
                .collect();
            BertEncoder::new(config, word, position, ln_g, ln_b, &views)
        })
        .map_err(PyErr::from)?;
        Ok(PyBertEncoder { inner })
    }

    /// Width of every output vector.
    #[getter]
    fn hidden(&self) -> usize {
        self.inner.hidden()
    }

    /// Longest text (special tokens included) the encoder takes.
    #[getter]
    fn max_positions(&self) -> usize {
        self.inner.max_positions()
    }

    /// How the dense weights are stored: "f32", "f16", "bf16" or "int8".
    #[getter]
    fn precision(&self) -> &'static str {
        self.inner.config().precision.name()
    }

    /// The instruction set the forward pass uses: "avx512", "avx2" or "scalar".
    #[getter]
    fn isa(&self) -> &'static str {
        self.inner.isa().name()
    }

    /// Bytes of packed dense weights (what one forward pass reads).
    #[getter]
    fn weight_bytes(&self) -> usize {
        self.inner.weight_bytes()
    }

    fn __repr__(&self) -> String {
        let c = self.inner.config();
        format!(
            "BertEncoder(hidden={}, heads={}, layers={}, precision={:?}, isa={:?})",
            c.hidden,
            c.heads,
            self.inner.layers(),
            c.precision.name(),
            self.inner.isa().name()
        )
    }

    /// Embed texts given as token ids (special tokens included): float32 `(len(ids), hidden)`,
    /// rows mean-pooled and L2-normalised. Runs without the GIL, on this thread only.
    fn encode<'py>(
        &self,
        py: Python<'py>,
        ids: Vec<Vec<u32>>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let rows = ids.len();
        let hidden = self.inner.hidden();
        let flat = run(py, || self.inner.encode(&ids))?;
        let array = Array2::from_shape_vec((rows, hidden), flat)
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok(array.into_pyarray(py))
    }
}
