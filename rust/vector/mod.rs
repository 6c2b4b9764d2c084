//! Vector search for the semantic cache and semantic routes, in plain Rust (no pyo3).
//!
//! Data flow: embeddings arrive as `f32` slices; [`FlatIndex`] normalises and stores them
//! (optionally also as int8 codes) and answers top-k cosine queries by scanning with the
//! [`kernels`], which pick AVX-512, AVX2+FMA, NEON or scalar code at run time. The pyo3
//! wrapper in `py::vector` only converts arrays and releases the GIL around these calls.

pub mod flat;
pub mod kernels;
#[cfg(target_arch = "aarch64")]
mod neon;
mod topk;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use flat::{FlatIndex, DEFAULT_PARALLEL_BYTES};
pub use kernels::{cosine, dot_f32, dot_i8, SimdLevel};
