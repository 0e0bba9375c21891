//! divest: statistical estimation kernels in Rust.
//!
//! `core` is pure Rust (no pyo3) and is what `cargo test` exercises; `py` holds the
//! bindings and is only compiled with the `python` feature.

pub mod core;

#[cfg(feature = "python")]
mod py;

#[cfg(feature = "python")]
use pyo3::prelude::*;

#[cfg(feature = "python")]
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    py::register(m)
}
