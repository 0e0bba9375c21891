//! Binding of the full-bandwidth 2-D grid's binning-error estimate
//! (`core::kdegrid::fullerr`, issue 11). Inputs are validated in Python.

use numpy::{PyArray1, PyReadonlyArray1, PyReadwriteArray1};
use pyo3::prelude::*;

use super::common::run;
use crate::core::kdegrid::errfield::{self, ErrLattice};
use crate::core::kdegrid::{fullconv, fullerr};

/// `kde_grid_error_diag` for a 2-D grid with a full inverse kernel covariance `prec`
/// (2 × 2, row-major): the moment-corrected error fields correlated with the kernels'
/// separable splits (`fullerr`). Returns None, with `sums` untouched, when the splits
/// would cost more than `budget` multiply-adds (the caller's price of the FFT); else writes max(sums, 0)·scale into `sums` and returns
/// ((|E| + floor_rel·max|sums| + floor_abs)·scale, its maximum).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn kde_grid_error_full<'py>(
    py: Python<'py>,
    mut sums: PyReadwriteArray1<'py, f64>,
    fields: PyReadonlyArray1<'py, f64>,
    m: Vec<usize>,
    delta: Vec<f64>,
    prec: Vec<f64>,
    r: Vec<usize>,
    reach: Vec<usize>,
    nc: Vec<usize>,
    scale: f64,
    floor_rel: f64,
    floor_abs: f64,
    budget: f64,
) -> PyResult<Option<(Bound<'py, PyArray1<f64>>, f64)>> {
    let total = m.iter().fold(1usize, |a, &b| a.saturating_mul(b));
    let s = sums.as_slice_mut()?;
    if s.len() != total {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "sums has {} values but the grid has {total}",
            s.len()
        )));
    }
    let f = fields.as_slice()?;
    let lat = ErrLattice {
        m: &m,
        delta: &delta,
        prec: &prec,
        r: &r,
        reach: &reach,
        nc: &nc,
    };
    let plan = match fullerr::plan(&lat, budget).map_err(super::common::to_py)? {
        Some(p) => p,
        None => return Ok(None),
    };
    let taps: usize = reach.iter().map(|&v| 2 * v + 1).sum();
    let work = f
        .len()
        .saturating_mul(taps)
        .saturating_mul(plan.rank().max(1))
        .saturating_add(total.saturating_mul(4));
    let (err, peak) = run(py, work, |stop| {
        let smax = errfield::clamp_scale(s, scale)?;
        fullerr::grid_error_full(f, &lat, &plan, floor_rel * smax + floor_abs, scale, stop)
    })?;
    Ok(Some((PyArray1::from_vec(py, err), peak)))
}

/// The sums Σ_j bins_j·exp(−½(g − j)ᵀS⁻¹(g − j)) at the m₀ × m₁ grid points
/// (pad₀ + i₀, pad₁ + i₁) of the nb₀ × nb₁ bin lattice (flat, row-major), for the lattice
/// covariance `cov` = [S₀₀, S₀₁, S₁₁], by 1-D passes along lattice directions
/// (`fullconv`); None when no split of S is accurate enough (the caller uses the FFT).
#[pyfunction]
fn kde_grid_conv_full<'py>(
    py: Python<'py>,
    bins: PyReadonlyArray1<'py, f64>,
    nb: Vec<usize>,
    m: Vec<usize>,
    pad: Vec<usize>,
    cov: Vec<f64>,
) -> PyResult<Option<Bound<'py, PyArray1<f64>>>> {
    if nb.len() != 2 || m.len() != 2 || pad.len() != 2 || cov.len() != 3 {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "nb, m and pad need 2 values each and cov 3",
        ));
    }
    let sp = match fullconv::split(cov[0], cov[1], cov[2]) {
        Some(s) => s,
        None => return Ok(None),
    };
    let b = bins.as_slice()?;
    let taps: usize = sp
        .passes
        .iter()
        .map(|p| p.var.sqrt() as usize * 18 + 1)
        .sum();
    let work = b.len().saturating_mul(taps);
    let out = run(py, work, |stop| {
        fullconv::conv_full_2d(b, [nb[0], nb[1]], [m[0], m[1]], [pad[0], pad[1]], &sp, stop)
    })?;
    Ok(Some(PyArray1::from_vec(py, out)))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(kde_grid_error_full, m)?)?;
    m.add_function(wrap_pyfunction!(kde_grid_conv_full, m)?)?;
    Ok(())
}
