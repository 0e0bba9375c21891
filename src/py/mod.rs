//! Python bindings: argument conversion, dtype dispatch, GIL release and error mapping.
//! No numerics live here.

mod common;
mod dcov;
mod divergence;
mod dpp;
mod grads;
mod kde;
mod kdebox;
mod kdeerr;
mod kdefull;
mod kdegrid;
mod kerntest;
mod ot;
mod sliced;
mod threads;

use pyo3::prelude::*;

/// Registers every binding on the `divest._core` module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    threads::register(m)?;
    kde::register(m)?;
    kdegrid::register(m)?;
    ot::register(m)?;
    dpp::register(m)?;
    divergence::register(m)?;
    dcov::register(m)?;
    kerntest::register(m)?;
    sliced::register(m)?;
    grads::register(m)?;
    kdeerr::register(m)?;
    kdebox::register(m)?;
    kdefull::register(m)?;
    Ok(())
}
