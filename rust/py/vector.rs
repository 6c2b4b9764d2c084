//! pyo3 wrapper of [`crate::vector`]: `FlatIndex`, `cosine` and `simd_level`.
//!
//! Data flow: numpy arrays come in as `PyReadonlyArray{1,2}` and are read with `.as_slice()`
//! (a non-contiguous array raises instead of being copied in silence); their contents are
//! copied out while the GIL is held, then the kernel runs inside [`detach`]. Every access to
//! the index, even `len`, takes its lock inside `detach` too, so no thread holds the GIL while
//! it scans or waits for the index, and a long `add` never stalls Python threads that do not
//! touch it. Results go back with `into_pyarray` (no copy).

use std::sync::RwLock;

use numpy::ndarray::Array2;
use numpy::{
    IntoPyArray, Ix1, Ix2, PyArray, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;

use super::detach;
use crate::error::CoreResult;
use crate::vector::{self, FlatIndex, SimdLevel};

/// Search results as numpy arrays: ids and scores of the same shape.
type Hits<'py, D> = (Bound<'py, PyArray<u64, D>>, Bound<'py, PyArray<f32, D>>);

/// Register this module's classes and functions on `_core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyFlatIndex>()?;
    m.add_function(wrap_pyfunction!(cosine, m)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    Ok(())
}

/// The slice of a C-contiguous array, or a `TypeError` that names the argument and the fix.
/// (`as_slice` alone would also accept a Fortran-ordered array and hand back its columns.)
fn contiguous<'a, T: numpy::Element, D: numpy::ndarray::Dimension>(
    array: &'a numpy::PyReadonlyArray<'_, T, D>,
    name: &str,
) -> PyResult<&'a [T]> {
    let error = || {
        PyTypeError::new_err(format!(
            "{name} must be a C-contiguous array; pass numpy.ascontiguousarray({name})"
        ))
    };
    if !array.is_c_contiguous() {
        return Err(error());
    }
    array.as_slice().map_err(|_| error())
}

/// Exact top-k cosine search over vectors of one dimension (optionally scanning int8 codes).
#[pyclass(name = "FlatIndex", module = "routeguard._core", frozen)]
pub struct PyFlatIndex {
    // Settings fixed at construction, copied out so reading them needs no lock.
    dim: usize,
    quantized: bool,
    parallel_threshold: usize,
    threads: usize,
    inner: RwLock<FlatIndex>,
}

impl PyFlatIndex {
    /// Run `f` on the index under its read lock, taken without the GIL: a thread waiting
    /// for a long `add` to finish must not stall every other Python thread meanwhile. Its
    /// error becomes a Python exception only once the lock is released (that takes the GIL).
    fn with_read<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&FlatIndex) -> CoreResult<T> + Send,
    ) -> PyResult<T> {
        let out = detach(py, || {
            self.inner.read().map(|index| f(&index)).map_err(|_| ())
        });
        Ok(out.map_err(|()| poisoned())??)
    }

    /// Run `f` on the index under its write lock, taken without the GIL (errors converted
    /// after it is released, as in `with_read`).
    fn with_write<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut FlatIndex) -> CoreResult<T> + Send,
    ) -> PyResult<T> {
        let out = detach(py, || {
            self.inner
                .write()
                .map(|mut index| f(&mut index))
                .map_err(|_| ())
        });
        Ok(out.map_err(|()| poisoned())??)
    }

    fn check_dim(&self, got: usize, what: &str) -> PyResult<()> {
        if got == self.dim {
            return Ok(());
        }
        Err(PyValueError::new_err(format!(
            "{what} dimension {got} but the index has dimension {}",
            self.dim
        )))
    }
}

fn poisoned() -> PyErr {
    PyRuntimeError::new_err(
        "the index is unusable: an earlier call panicked while changing it; build a new index",
    )
}

#[pymethods]
impl PyFlatIndex {
    #[new]
    #[pyo3(signature = (dim, quantize = false, *, parallel_threshold = None, threads = None))]
    fn new(
        dim: usize,
        quantize: bool,
        parallel_threshold: Option<usize>,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let mut index = FlatIndex::new(dim, quantize).map_err(PyErr::from)?;
        if let Some(rows) = parallel_threshold {
            index.set_parallel_threshold(rows);
        }
        if let Some(threads) = threads {
            index.set_threads(threads);
        }
        Ok(PyFlatIndex {
            dim,
            quantized: index.is_quantized(),
            parallel_threshold: index.parallel_threshold(),
            threads: index.threads(),
            inner: RwLock::new(index),
        })
    }

    /// The dimension every vector must have.
    #[getter]
    fn dim(&self) -> usize {
        self.dim
    }

    /// Whether searches scan int8 codes (then rescore their candidates exactly).
    #[getter]
    fn quantized(&self) -> bool {
        self.quantized
    }

    /// Row-scores per call from which a scan is split over threads.
    #[getter]
    fn parallel_threshold(&self) -> usize {
        self.parallel_threshold
    }

    /// The most threads one scan uses.
    #[getter]
    fn threads(&self) -> usize {
        self.threads
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.with_read(py, |index| Ok(index.len()))
    }

    fn __contains__(&self, py: Python<'_>, id: u64) -> PyResult<bool> {
        self.with_read(py, |index| Ok(index.contains(id)))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let len = self.__len__(py)?;
        let quantize = if self.quantized { "True" } else { "False" };
        Ok(format!(
            "FlatIndex(dim={}, quantize={quantize}, len={len})",
            self.dim
        ))
    }

    /// Add (or replace) one vector per id; `vectors` is float32 of shape (len(ids), dim).
    fn add(
        &self,
        py: Python<'_>,
        ids: PyReadonlyArray1<'_, u64>,
        vectors: PyReadonlyArray2<'_, f32>,
    ) -> PyResult<()> {
        let [rows, cols] = [vectors.shape()[0], vectors.shape()[1]];
        self.check_dim(cols, "vectors have")?;
        let ids = contiguous(&ids, "ids")?;
        if rows != ids.len() {
            return Err(PyValueError::new_err(format!(
                "got {} ids but {rows} vectors; pass one vector per id",
                ids.len()
            )));
        }
        let ids = ids.to_vec();
        let vectors = contiguous(&vectors, "vectors")?.to_vec();
        self.with_write(py, |index| index.add(&ids, &vectors))
    }

    /// Remove the vector of `id`; False if there was none.
    fn remove(&self, py: Python<'_>, id: u64) -> PyResult<bool> {
        self.with_write(py, |index| Ok(index.remove(id)))
    }

    /// The top `k` (ids, scores) for one float32 query of shape (dim,), best first.
    fn search<'py>(
        &self,
        py: Python<'py>,
        query: PyReadonlyArray1<'py, f32>,
        k: usize,
    ) -> PyResult<Hits<'py, Ix1>> {
        self.check_dim(query.shape()[0], "the query has")?;
        let query = contiguous(&query, "query")?.to_vec();
        let hits = self.with_read(py, |index| index.search(&query, k))?;
        let (ids, scores): (Vec<u64>, Vec<f32>) = hits.into_iter().unzip();
        Ok((ids.into_pyarray(py), scores.into_pyarray(py)))
    }

    /// The top `k` for each row of `queries` (float32, shape (n, dim)): ids and scores of
    /// shape (n, min(k, len(index))).
    fn search_batch<'py>(
        &self,
        py: Python<'py>,
        queries: PyReadonlyArray2<'py, f32>,
        k: usize,
    ) -> PyResult<Hits<'py, Ix2>> {
        let count = queries.shape()[0];
        self.check_dim(queries.shape()[1], "the queries have")?;
        let queries = contiguous(&queries, "queries")?.to_vec();
        let (width, hits) = self.with_read(py, |index| {
            let hits = index.search_batch(&queries, k)?;
            Ok((k.min(index.len()), hits))
        })?;
        let mut ids = Vec::with_capacity(count * width);
        let mut scores = Vec::with_capacity(count * width);
        for (id, score) in hits.into_iter().flatten() {
            ids.push(id);
            scores.push(score);
        }
        let shape_error = |e: numpy::ndarray::ShapeError| PyRuntimeError::new_err(e.to_string());
        let ids = Array2::from_shape_vec((count, width), ids).map_err(shape_error)?;
        let scores = Array2::from_shape_vec((count, width), scores).map_err(shape_error)?;
        Ok((ids.into_pyarray(py), scores.into_pyarray(py)))
    }
}

/// Cosine similarity of two float32 vectors of the same dimension.
#[pyfunction]
fn cosine(a: PyReadonlyArray1<'_, f32>, b: PyReadonlyArray1<'_, f32>) -> PyResult<f32> {
    vector::cosine(contiguous(&a, "a")?, contiguous(&b, "b")?).map_err(PyErr::from)
}

/// The instruction set the kernels use on this CPU: "avx512", "avx2", "neon" or "scalar".
#[pyfunction]
fn simd_level() -> &'static str {
    SimdLevel::detect().name()
}
