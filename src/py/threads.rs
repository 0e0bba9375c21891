//! Thread and SIMD controls.

use pyo3::prelude::*;

use super::common::to_py;
use crate::core::{simd, threads};

#[pyfunction]
fn get_num_threads() -> usize {
    threads::num_threads()
}

#[pyfunction]
fn set_num_threads(n: usize) -> PyResult<()> {
    threads::set_num_threads(n).map_err(to_py)
}

/// The process default (what `set_num_threads` sets), ignoring this thread's override.
#[pyfunction]
fn _default_num_threads() -> usize {
    threads::default_num_threads()
}

/// Sets the calling thread's override (0 clears it); returns the previous one (0 = none).
#[pyfunction]
fn _set_thread_override(n: usize) -> PyResult<usize> {
    threads::set_thread_override(n).map_err(to_py)
}

/// Called in a forked child: lock-free, it gives the child its own pool cache (the
/// parent's pools have no threads here).
#[pyfunction]
fn _after_fork_child() {
    threads::forget_pool_after_fork();
}

#[pyfunction]
fn simd_level() -> &'static str {
    simd::level().name()
}

#[pyfunction]
fn simd_detected() -> &'static str {
    simd::detected().name()
}

#[pyfunction]
#[pyo3(signature = (level=None))]
fn set_simd_level(level: Option<&str>) -> PyResult<()> {
    let l = level.map(simd::Level::parse).transpose().map_err(to_py)?;
    simd::set_level(l).map_err(to_py)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(_default_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(_set_thread_override, m)?)?;
    m.add_function(wrap_pyfunction!(_after_fork_child, m)?)?;
    m.add("MAX_THREADS", threads::MAX_THREADS)?;
    // Read DIVEST_NUM_THREADS now, at import, not lazily inside a later call.
    let _ = threads::default_num_threads();
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(simd_detected, m)?)?;
    m.add_function(wrap_pyfunction!(set_simd_level, m)?)?;
    Ok(())
}
