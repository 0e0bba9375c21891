//! Bindings of the grid estimates' error fields (`core::kdegrid::errfield`, issue 11) and
//! of the bounded estimates' one-pass image sums. Inputs are validated in Python.

use numpy::{
    PyArray1, PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray1, PyUntypedArrayMethods,
};
use pyo3::prelude::*;

use super::common::run;
use crate::core::kde::Kernel;
use crate::core::kdefold;
use crate::core::kdegrid::errfield::{self, Scheme};

/// The binning-error fields of (n, d) points (d = 1 to 3, C-contiguous; `w = None`:
/// weights `wu`), with fractional positions on the fine lattice (`lo_f`, `delta_f`),
/// linearly binned onto the coarse lattice (`lo_c`, `delta_c`, `nc`); `corrected` picks
/// the moment-corrected scheme, else plain linear binning. Flat, fields interleaved per
/// node.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn kde_error_fields<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f64>,
    w: Option<PyReadonlyArray1<'py, f64>>,
    wu: f64,
    corrected: bool,
    lo_f: Vec<f64>,
    delta_f: Vec<f64>,
    lo_c: Vec<f64>,
    delta_c: Vec<f64>,
    nc: Vec<usize>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let d = x.shape()[1];
    let xs = x.as_slice()?;
    let ws = w.as_ref().map(|a| a.as_slice()).transpose()?;
    let scheme = if corrected {
        Scheme::Corrected
    } else {
        Scheme::Linear
    };
    let work = xs.len().saturating_mul(8);
    let f = run(py, work, |stop| {
        errfield::error_fields(
            xs, d, ws, wu, scheme, &lo_f, &delta_f, &lo_c, &delta_c, &nc, stop,
        )
    })?;
    Ok(PyArray1::from_vec(py, f))
}

/// The binning-error estimate of a 1-D to 3-D Gaussian grid with a diagonal bandwidth
/// (`errfield::grid_error`), and the grid values: `sums` (the flat binned sums, Π m) is
/// overwritten IN PLACE with max(sums, 0)·scale; returns (errors, max error) with errors =
/// (|E| + floor_rel·max|sums| + floor_abs)·scale. `fields` as `kde_error_fields` returns
/// them on the lattice (`r`, `reach`, `nc`) of divest/_kdeerr.py's `_lattice`; `prec` the
/// diagonal of the inverse kernel covariance.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn kde_grid_error_diag<'py>(
    py: Python<'py>,
    mut sums: PyReadwriteArray1<'py, f64>,
    fields: PyReadonlyArray1<'py, f64>,
    corrected: bool,
    m: Vec<usize>,
    delta: Vec<f64>,
    prec: Vec<f64>,
    r: Vec<usize>,
    reach: Vec<usize>,
    nc: Vec<usize>,
    scale: f64,
    floor_rel: f64,
    floor_abs: f64,
) -> PyResult<(Bound<'py, PyArray1<f64>>, f64)> {
    let total = m.iter().fold(1usize, |a, &b| a.saturating_mul(b));
    let s = sums.as_slice_mut()?;
    if s.len() != total {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "sums has {} values but the grid has {total}",
            s.len()
        )));
    }
    let f = fields.as_slice()?;
    let scheme = if corrected {
        Scheme::Corrected
    } else {
        Scheme::Linear
    };
    let taps: usize = reach.iter().map(|&v| 2 * v + 1).sum();
    let work = f
        .len()
        .saturating_mul(taps)
        .saturating_add(total.saturating_mul(4));
    let (err, peak) = run(py, work, |stop| {
        let lat = errfield::ErrLattice {
            m: &m,
            delta: &delta,
            prec: &prec,
            r: &r,
            reach: &reach,
            nc: &nc,
        };
        let smax = errfield::clamp_scale(s, scale)?;
        errfield::grid_error(f, &lat, scheme, floor_rel * smax + floor_abs, scale, stop)
    })?;
    Ok((PyArray1::from_vec(py, err), peak))
}

/// Bounded KDE: the folded log-sums of the kept (query, map) pairs, plus the identity
/// log-sums `lse0` (m) when given (then the identity is not among the pairs) (`pair_q` sorted, `pair_g`), `maps` (n_maps, d, 2) whitened (s, t)
/// per dimension, `x` (n, d) and `q` (m, d) whitened, `logw` the log-weights
/// (`kdefold::add_images`).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn kde_fold_images<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f64>,
    logw: PyReadonlyArray1<'py, f64>,
    kernel: &str,
    q: PyReadonlyArray2<'py, f64>,
    lse0: Option<PyReadonlyArray1<'py, f64>>,
    maps: PyReadonlyArray1<'py, f64>,
    pair_q: PyReadonlyArray1<'py, i64>,
    pair_g: PyReadonlyArray1<'py, i64>,
    margin: f64,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let kernel = Kernel::parse(kernel).map_err(super::common::to_py)?;
    let d = x.shape()[1];
    if q.shape()[1] != d {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "queries and data need the same dimension",
        ));
    }
    let m = q.shape()[0];
    let (xs, lw, qs, ms) = (
        x.as_slice()?,
        logw.as_slice()?,
        q.as_slice()?,
        maps.as_slice()?,
    );
    let l0 = lse0.as_ref().map(|a| a.as_slice()).transpose()?;
    let conv = |a: &[i64]| -> PyResult<Vec<usize>> {
        a.iter()
            .map(|&v| {
                usize::try_from(v).map_err(|_| {
                    pyo3::exceptions::PyValueError::new_err("image pair indices must be >= 0")
                })
            })
            .collect()
    };
    let pq = conv(pair_q.as_slice()?)?;
    let pg = conv(pair_g.as_slice()?)?;
    let work = pq.len().saturating_mul(lw.len()).saturating_mul(d);
    let out = run(py, work, |stop| {
        kdefold::add_images(xs, d, lw, kernel, qs, m, l0, ms, &pq, &pg, margin, stop)
    })?;
    Ok(PyArray1::from_vec(py, out))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(kde_error_fields, m)?)?;
    m.add_function(wrap_pyfunction!(kde_grid_error_diag, m)?)?;
    m.add_function(wrap_pyfunction!(kde_fold_images, m)?)?;
    Ok(())
}
