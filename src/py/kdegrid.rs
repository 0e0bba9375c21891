//! Bindings of the 1-D grid KDE (`core::kdegrid`). Inputs are validated by
//! `divest/_kdegrid.py`; the core re-checks what could make it misbehave.

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;

use super::common::{run, to_py};
use crate::core::kde::Kernel;
use crate::core::kdegrid::{self, exact, isj, Grid1};

type Pair<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>);

/// Binned unnormalised sums on the grid lo + i·delta (i < m) and their pointwise
/// binning-error estimates. `w = None`: every point weighs 1/n.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn kde_grid_binned_1d<'py>(
    py: Python<'py>,
    x: PyReadonlyArray1<'py, f64>,
    w: Option<PyReadonlyArray1<'py, f64>>,
    kernel: &str,
    h: f64,
    lo: f64,
    delta: f64,
    m: usize,
) -> PyResult<Pair<'py>> {
    let kernel = Kernel::parse(kernel).map_err(to_py)?;
    let grid = Grid1::new(lo, delta, m).map_err(to_py)?;
    let xs = x.as_slice()?;
    let ws = w.as_ref().map(|a| a.as_slice()).transpose()?;
    // The binning costs about one elementary operation per point (0.6 ns, vectorised
    // front end and one integer add), the direct convolution one per 8 taps; so 10^6
    // points run inline, and the interrupt watcher starts around 4·10^6.
    let reach = (kdegrid::support_radius(kernel) * h / delta).min(1e12) as usize + 1;
    let taps = m.saturating_mul(reach) / 8;
    let work = xs
        .len()
        .saturating_add(taps)
        .saturating_add(m.saturating_mul(16));
    let b = run(py, work, |stop| {
        kdegrid::binned_1d_opt(xs, ws, kernel, h, grid, stop)
    })?;
    Ok((
        PyArray1::from_vec(py, b.sums),
        PyArray1::from_vec(py, b.err),
    ))
}

/// One pass over 1-D data (optional weights; None: every weight `wu`): (min, max,
/// min and max of the positively weighted points, Σw, weighted mean, Σw(x − mean)², Σw²,
/// number of positively weighted points, all finite and weights non-negative); with
/// `spread` false the mean and M2 are not computed (0).
#[pyfunction]
#[pyo3(signature = (x, w=None, wu=1.0, spread=true))]
#[allow(clippy::type_complexity)]
fn kde_stats_1d(
    py: Python<'_>,
    x: PyReadonlyArray1<'_, f64>,
    w: Option<PyReadonlyArray1<'_, f64>>,
    wu: f64,
    spread: bool,
) -> PyResult<(f64, f64, f64, f64, f64, f64, f64, f64, usize, bool)> {
    let xs = x.as_slice()?;
    let ws = w.as_ref().map(|a| a.as_slice()).transpose()?;
    // One vectorised min/max pass (about one operation per point), two more for the
    // spread: 10^6 points run inline, without the interrupt watcher's thread.
    let work = xs.len().saturating_mul(if spread { 3 } else { 1 });
    let s = run(py, work, |stop| kdegrid::stats_1d(xs, ws, wu, spread, stop))?;
    Ok((
        s.min, s.max, s.min_pos, s.max_pos, s.sum_w, s.mean, s.m2, s.sum_w2, s.n_pos, s.ok,
    ))
}

/// Exact unnormalised sums and their logs on the grid (only where `mask` is true when
/// given; NaN elsewhere).
#[pyfunction]
#[pyo3(signature = (x, w, kernel, h, lo, delta, m, mask=None))]
#[allow(clippy::too_many_arguments)]
fn kde_grid_exact_1d<'py>(
    py: Python<'py>,
    x: PyReadonlyArray1<'py, f64>,
    w: PyReadonlyArray1<'py, f64>,
    kernel: &str,
    h: f64,
    lo: f64,
    delta: f64,
    m: usize,
    mask: Option<PyReadonlyArray1<'py, bool>>,
) -> PyResult<Pair<'py>> {
    let kernel = Kernel::parse(kernel).map_err(to_py)?;
    let grid = Grid1::new(lo, delta, m).map_err(to_py)?;
    let (xs, ws) = (x.as_slice()?, w.as_slice()?);
    let mk = mask.as_ref().map(|a| a.as_slice()).transpose()?;
    let work = xs
        .len()
        .saturating_mul(16)
        .saturating_add(m.saturating_mul(4096));
    let e = run(py, work, |stop| {
        exact::exact_1d(xs, ws, kernel, h, grid, mk, stop)
    })?;
    Ok((
        PyArray1::from_vec(py, e.sums),
        PyArray1::from_vec(py, e.log_sums),
    ))
}

/// Improved Sheather–Jones bandwidth of 1-D data (`w = None`: equal weights).
#[pyfunction]
fn isj_bandwidth_1d(
    py: Python<'_>,
    x: PyReadonlyArray1<'_, f64>,
    w: Option<PyReadonlyArray1<'_, f64>>,
    neff: f64,
) -> PyResult<f64> {
    let xs = x.as_slice()?;
    let ws = w.as_ref().map(|a| a.as_slice()).transpose()?;
    let work = xs.len().saturating_mul(4);
    run(py, work, |stop| isj::isj_1d_opt(xs, ws, neff, stop))
}

/// [`isj_bandwidth_1d`] with what the tie analysis found: (h, Δ of the values read as
/// rounded or 0, fraction of the weight read as rounded, point masses left out as
/// (values, weight fractions)).
#[pyfunction]
#[allow(clippy::type_complexity)]
fn isj_bandwidth_1d_info(
    py: Python<'_>,
    x: PyReadonlyArray1<'_, f64>,
    w: Option<PyReadonlyArray1<'_, f64>>,
    neff: f64,
) -> PyResult<(f64, f64, f64, Vec<f64>, Vec<f64>)> {
    let xs = x.as_slice()?;
    let ws = w.as_ref().map(|a| a.as_slice()).transpose()?;
    let work = xs.len().saturating_mul(4);
    let r = run(py, work, |stop| isj::isj_1d_info(xs, ws, neff, stop))?;
    let (vals, mass) = r.atoms.iter().copied().unzip();
    Ok((r.h, r.delta, r.rounded, vals, mass))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(kde_grid_binned_1d, m)?)?;
    m.add_function(wrap_pyfunction!(kde_grid_exact_1d, m)?)?;
    m.add_function(wrap_pyfunction!(isj_bandwidth_1d, m)?)?;
    m.add_function(wrap_pyfunction!(isj_bandwidth_1d_info, m)?)?;
    m.add_function(wrap_pyfunction!(kde_points_exact_1d, m)?)?;
    m.add_function(wrap_pyfunction!(kde_points_exact_1d_folded, m)?)?;
    m.add_function(wrap_pyfunction!(kde_linear_bin_nd, m)?)?;
    m.add_function(wrap_pyfunction!(kde_stats_1d, m)?)?;
    m.add_function(wrap_pyfunction!(kde_grid_binned_nd, m)?)?;
    m.add_function(wrap_pyfunction!(kde_bin_corrected_nd, m)?)?;
    m.add_function(wrap_pyfunction!(kde_grid_binned_nd_fields, m)?)?;
    m.add_function(wrap_pyfunction!(kde_bin_corrected_nd_fields, m)?)?;
    m.add_function(wrap_pyfunction!(kde_grid_error_nd, m)?)?;
    Ok(())
}

/// Exact unnormalised sums and their logs at arbitrary 1-D points `q` (any order), or
/// None for a Gaussian whose centre lattice would need more than `max_centres` centres.
#[pyfunction]
fn kde_points_exact_1d<'py>(
    py: Python<'py>,
    x: PyReadonlyArray1<'py, f64>,
    w: PyReadonlyArray1<'py, f64>,
    kernel: &str,
    h: f64,
    q: PyReadonlyArray1<'py, f64>,
    max_centres: usize,
) -> PyResult<Option<Pair<'py>>> {
    let kernel = Kernel::parse(kernel).map_err(to_py)?;
    let (xs, ws, qs) = (x.as_slice()?, w.as_slice()?, q.as_slice()?);
    let work = xs
        .len()
        .saturating_mul(16)
        .saturating_add(qs.len().saturating_mul(4096));
    let e = run(py, work, |stop| {
        exact::exact_points_1d(xs, ws, kernel, h, qs, max_centres, stop)
    })?;
    Ok(e.map(|e| {
        (
            PyArray1::from_vec(py, e.sums),
            PyArray1::from_vec(py, e.log_sums),
        )
    }))
}

/// Exact unnormalised folded sums Σ_g S(s_g·q + t_g) and their logs at arbitrary 1-D
/// points (a bounded KDE's images, `scales`/`shifts` the maps), in one sorted pass, or
/// None for a Gaussian whose centre lattice would need more than `max_centres` centres.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn kde_points_exact_1d_folded<'py>(
    py: Python<'py>,
    x: PyReadonlyArray1<'py, f64>,
    w: PyReadonlyArray1<'py, f64>,
    kernel: &str,
    h: f64,
    q: PyReadonlyArray1<'py, f64>,
    scales: Vec<f64>,
    shifts: Vec<f64>,
    max_centres: usize,
) -> PyResult<Option<Pair<'py>>> {
    let kernel = Kernel::parse(kernel).map_err(to_py)?;
    if scales.len() != shifts.len() {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "scales and shifts must have the same length",
        ));
    }
    let maps: Vec<(f64, f64)> = scales.into_iter().zip(shifts).collect();
    let (xs, ws, qs) = (x.as_slice()?, w.as_slice()?, q.as_slice()?);
    let work = xs
        .len()
        .saturating_mul(16)
        .saturating_add(qs.len().saturating_mul(maps.len()).saturating_mul(4096));
    let e = run(py, work, |stop| {
        exact::exact_points_1d_folded(xs, ws, kernel, h, qs, &maps, max_centres, stop)
    })?;
    Ok(e.map(|e| {
        (
            PyArray1::from_vec(py, e.sums),
            PyArray1::from_vec(py, e.log_sums),
        )
    }))
}

/// Linear binning of (n, d) points (d = 2 or 3, C-contiguous) onto the lattice
/// lo + k·delta, k < nb per axis; returns the flat row-major bins.
#[pyfunction]
fn kde_linear_bin_nd<'py>(
    py: Python<'py>,
    x: numpy::PyReadonlyArray2<'py, f64>,
    w: PyReadonlyArray1<'py, f64>,
    lo: Vec<f64>,
    delta: Vec<f64>,
    nb: Vec<usize>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let (xs, ws) = (x.as_slice()?, w.as_slice()?);
    let work = xs.len().saturating_mul(8);
    let bins = run(py, work, |stop| {
        kdegrid::binning::linear_bin_nd(xs, ws, &lo, &delta, &nb, stop)
    })?;
    Ok(PyArray1::from_vec(py, bins))
}

/// Binned Gaussian sums with a diagonal bandwidth on a 2-D or 3-D grid (lo, delta, m, hsd
/// per axis; `w = None`: weights 1/n); returns the flat row-major sums (the caller
/// estimates the error from the data, `divest/_kdeerr.py`).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn kde_grid_binned_nd<'py>(
    py: Python<'py>,
    x: numpy::PyReadonlyArray2<'py, f64>,
    w: Option<PyReadonlyArray1<'py, f64>>,
    lo: Vec<f64>,
    delta: Vec<f64>,
    m: Vec<usize>,
    hsd: Vec<f64>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let d = numpy::PyUntypedArrayMethods::shape(&*x)[1];
    let xs = x.as_slice()?;
    let ws = w.as_ref().map(|a| a.as_slice()).transpose()?;
    let cells = m.iter().fold(1usize, |a, &b| a.saturating_mul(b));
    let work = xs
        .len()
        .saturating_mul(8)
        .saturating_add(cells.saturating_mul(64));
    let b = run(py, work, |stop| {
        kdegrid::nd::binned_nd(xs, d, ws, &lo, &delta, &m, &hsd, false, None, stop)
    })?;
    Ok(PyArray1::from_vec(py, b.sums))
}

/// Moment-corrected linear binning of (n, d) points (d = 2 or 3, C-contiguous; `w = None`:
/// weights `wu`) onto the lattice lo + k·delta, k < nb per axis; returns the flat
/// row-major corrected bins and the binning statistics (`nd::BinStats::to_vec`).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn kde_bin_corrected_nd<'py>(
    py: Python<'py>,
    x: numpy::PyReadonlyArray2<'py, f64>,
    w: Option<PyReadonlyArray1<'py, f64>>,
    wu: f64,
    lo: Vec<f64>,
    delta: Vec<f64>,
    nb: Vec<usize>,
) -> PyResult<(Bound<'py, PyArray1<f64>>, Vec<f64>)> {
    let d = numpy::PyUntypedArrayMethods::shape(&*x)[1];
    let xs = x.as_slice()?;
    let ws = w.as_ref().map(|a| a.as_slice()).transpose()?;
    let work = xs.len().saturating_mul(8);
    let (bins, st, ok) = run(py, work, |stop| {
        kdegrid::nd::bin_corrected(xs, d, ws, wu, &lo, &delta, &nb, stop)
    })?;
    if !ok {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "data must be finite and weights finite and non-negative",
        ));
    }
    Ok((PyArray1::from_vec(py, bins), st.to_vec()))
}

/// Pointwise error estimate of moment-corrected binned Gaussian sums on a grid of `m`
/// points per axis (`nd::error_estimate`): `hinv` the diagonal of the inverse kernel
/// covariance, `stats` from `kde_bin_corrected_nd`, `floor` added everywhere.
#[pyfunction]
fn kde_grid_error_nd<'py>(
    py: Python<'py>,
    sums: PyReadonlyArray1<'py, f64>,
    m: Vec<usize>,
    delta: Vec<f64>,
    hinv: Vec<f64>,
    stats: Vec<f64>,
    floor: f64,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let s = sums.as_slice()?;
    let work = s.len().saturating_mul(32);
    let err = run(py, work, |_stop| {
        let st = kdegrid::nd::BinStats::from_slice(&stats, m.len())?;
        kdegrid::nd::error_estimate(s, &m, &delta, &hinv, &st, floor)
    })?;
    Ok(PyArray1::from_vec(py, err))
}

/// `kde_grid_binned_nd` that also bins the moment-corrected error fields on the coarse
/// lattice `fields_lo`, `fields_delta`, `fields_nc` (that of `kde_error_fields`, on the
/// grid's lattice), in the binning pass itself where the lattices allow it (2-D); returns
/// (sums, fields), both flat.
#[pyfunction]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn kde_grid_binned_nd_fields<'py>(
    py: Python<'py>,
    x: numpy::PyReadonlyArray2<'py, f64>,
    w: Option<PyReadonlyArray1<'py, f64>>,
    lo: Vec<f64>,
    delta: Vec<f64>,
    m: Vec<usize>,
    hsd: Vec<f64>,
    fields_lo: Vec<f64>,
    fields_delta: Vec<f64>,
    fields_nc: Vec<usize>,
) -> PyResult<(Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>)> {
    let d = numpy::PyUntypedArrayMethods::shape(&*x)[1];
    let xs = x.as_slice()?;
    let ws = w.as_ref().map(|a| a.as_slice()).transpose()?;
    let cells = m.iter().fold(1usize, |a, &b| a.saturating_mul(b));
    let work = xs
        .len()
        .saturating_mul(8)
        .saturating_add(cells.saturating_mul(64));
    let fl = kdegrid::nd::FieldLattice {
        lo: fields_lo,
        delta: fields_delta,
        nc: fields_nc,
    };
    let b = run(py, work, |stop| {
        kdegrid::nd::binned_nd(xs, d, ws, &lo, &delta, &m, &hsd, false, Some(&fl), stop)
    })?;
    Ok((
        PyArray1::from_vec(py, b.sums),
        PyArray1::from_vec(py, b.fields),
    ))
}

/// `kde_bin_corrected_nd` that also bins the moment-corrected error fields (as
/// `kde_grid_binned_nd_fields`); returns (bins, stats, fields).
#[pyfunction]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn kde_bin_corrected_nd_fields<'py>(
    py: Python<'py>,
    x: numpy::PyReadonlyArray2<'py, f64>,
    w: Option<PyReadonlyArray1<'py, f64>>,
    wu: f64,
    lo: Vec<f64>,
    delta: Vec<f64>,
    nb: Vec<usize>,
    fields_lo: Vec<f64>,
    fields_delta: Vec<f64>,
    fields_nc: Vec<usize>,
) -> PyResult<(
    Bound<'py, PyArray1<f64>>,
    Vec<f64>,
    Bound<'py, PyArray1<f64>>,
)> {
    let d = numpy::PyUntypedArrayMethods::shape(&*x)[1];
    let xs = x.as_slice()?;
    let ws = w.as_ref().map(|a| a.as_slice()).transpose()?;
    let work = xs.len().saturating_mul(8);
    let fl = kdegrid::nd::FieldLattice {
        lo: fields_lo,
        delta: fields_delta,
        nc: fields_nc,
    };
    let (bins, st, ok, f) = run(py, work, |stop| {
        kdegrid::nd::bin_corrected_fields(xs, d, ws, wu, &lo, &delta, &nb, Some(&fl), stop)
    })?;
    if !ok {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "data must be finite and weights finite and non-negative",
        ));
    }
    Ok((
        PyArray1::from_vec(py, bins),
        st.to_vec(),
        PyArray1::from_vec(py, f.unwrap_or_default()),
    ))
}
