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

/// Called in a forked child: forget the parent's pool (its threads do not exist here).
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
    m.add_function(wrap_pyfunction!(_after_fork_child, m)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(simd_detected, m)?)?;
    m.add_function(wrap_pyfunction!(set_simd_level, m)?)?;
    Ok(())
}
