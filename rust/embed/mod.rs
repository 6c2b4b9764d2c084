//! The local text encoder (all-MiniLM-L6-v2) in plain Rust: token ids in, unit vectors out.
//!
//! Data flow: Python tokenises (HF `tokenizers`) and hands the ids of each text to
//! [`BertEncoder::encode`]; [`model`] runs the forward pass on the calling thread with the
//! dense layers of [`linear`] (weights pre-packed: f32, f16 or bf16) and the element-wise steps of
//! `ops`, each on the widest instruction set [`Isa::detect`] finds (AVX-512, AVX2+F16C,
//! else portable Rust). The pyo3 wrapper in `py::embed` only converts and releases the GIL.

pub mod half;
pub mod int8;
mod isa;
pub mod linear;
pub mod model;
mod ops;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use int8::Int8Kernel;
pub use isa::Isa;
pub use linear::{auto_precision, Linear, Precision};
pub use model::{BertConfig, BertEncoder, LayerWeights, CHUNK_TOKENS};
