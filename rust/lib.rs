//! routeguard's native core.
//!
//! Kernels live in plain-Rust modules that know nothing of Python (`vector`, `budget`,
//! `policy`, `otlp`, `sse`); `py` holds the thin pyo3 wrappers and is built only with the `python`
//! feature (maturin enables it), so `cargo test` exercises the kernels without libpython.

pub mod budget;
pub mod embed;
pub mod error;
pub mod otlp;
pub mod pattern;
pub mod policy;
pub mod sse;
pub mod vector;

#[cfg(feature = "python")]
mod py;

/// The crate version; `routeguard._native` checks it against the Python package's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
