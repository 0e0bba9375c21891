//! KDE bindings. Inputs are already validated and whitened by `divest/kde.py`.

use numpy::{PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;

use super::common::{array2, run, slice, to_py, with_slice, with_slices, Arr2};
use crate::core::kde::{self, KdeOptions, Kernel};
use crate::core::linalg;
use crate::core::pairwise::Points;

type EvalOut<'py> = (
    Bound<'py, PyArray1<f64>>,
    Option<Bound<'py, PyArray1<f64>>>,
    Option<Bound<'py, PyArray2<f64>>>,
);

/// log Σ_j w_j K(|q_i - x_j|) for whitened data (n, d) and queries (m, d) of one dtype.
#[pyfunction]
#[pyo3(signature = (data, logw, points, kernel, exclude_self=false, ess=false, score=false))]
#[allow(clippy::too_many_arguments)]
fn kde_eval<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    logw: PyReadonlyArray1<'py, f64>,
    points: &Bound<'py, PyAny>,
    kernel: &str,
    exclude_self: bool,
    ess: bool,
    score: bool,
) -> PyResult<EvalOut<'py>> {
    let kernel = Kernel::parse(kernel).map_err(to_py)?;
    let x = Arr2::extract(data, "data")?;
    let q = Arr2::extract(points, "points")?;
    let (n, d) = x.shape();
    let (m, dq) = q.shape();
    let lw = logw.as_slice()?;
    let opts = KdeOptions {
        exclude_self,
        ess,
        score,
    };
    let work = n.saturating_mul(m).saturating_mul(d + 8);
    let out = with_slices!(&x, &q, |xs, qs| run(py, work, |stop| {
        kde::kde_eval(
            Points::new(xs, n, d)?,
            lw,
            Points::new(qs, m, dq)?,
            kernel,
            opts,
            stop,
        )
    })?);
    let lse = PyArray1::from_vec(py, out.log_sum);
    let ess = ess.then(|| PyArray1::from_vec(py, out.ess));
    let score = if score {
        Some(array2(py, out.score, m, d)?)
    } else {
        None
    };
    Ok((lse, ess, score))
}

/// Leave-one-out log-sums for a grid of bandwidth factors: an (n, G) array.
#[pyfunction]
fn kde_loo_grid<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    logw: PyReadonlyArray1<'py, f64>,
    kernel: &str,
    factors: PyReadonlyArray1<'py, f64>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let kernel = Kernel::parse(kernel).map_err(to_py)?;
    let x = Arr2::extract(data, "data")?;
    let (n, d) = x.shape();
    let lw = logw.as_slice()?;
    let f = factors.as_slice()?;
    let work = n.saturating_mul(n).saturating_mul(d + 8 * f.len());
    let v = with_slice!(&x, |xs| run(py, work, |stop| {
        kde::kde_loo_grid(Points::new(xs, n, d)?, lw, kernel, f, stop)
    })?);
    array2(py, v, n, f.len())
}

/// Leave-one-out log-sums for a grid of bandwidth factors at queries matched to the data
/// row for row (a bounded KDE's data images): an (n, G) array.
#[pyfunction]
fn kde_loo_grid_at<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    logw: PyReadonlyArray1<'py, f64>,
    points: &Bound<'py, PyAny>,
    kernel: &str,
    factors: PyReadonlyArray1<'py, f64>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let kernel = Kernel::parse(kernel).map_err(to_py)?;
    let x = Arr2::extract(data, "data")?;
    let q = Arr2::extract(points, "points")?;
    let (n, d) = x.shape();
    let (m, dq) = q.shape();
    let lw = logw.as_slice()?;
    let f = factors.as_slice()?;
    let work = n.saturating_mul(m).saturating_mul(d + 8 * f.len());
    let v = with_slices!(&x, &q, |xs, qs| run(py, work, |stop| {
        kde::kde_loo_grid_at(
            Points::new(xs, n, d)?,
            Points::new(qs, m, dq)?,
            lw,
            kernel,
            f,
            stop,
        )
    })?);
    array2(py, v, m, f.len())
}

/// `(x - shift) · matrixᵀ` on divest's pool, in x's dtype: whitening without NumPy's BLAS
/// threads (which would compete with the pool).
#[pyfunction]
fn affine<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    shift: PyReadonlyArray1<'py, f64>,
    matrix: PyReadonlyArray2<'py, f64>,
) -> PyResult<Bound<'py, PyAny>> {
    let x = Arr2::extract(x, "x")?;
    let (n, d) = x.shape();
    let k = matrix.shape()[0];
    let sh = shift.as_slice()?;
    let a = slice(&matrix)?;
    let work = n.saturating_mul(d).saturating_mul(k);
    Ok(with_slice!(&x, |xs| {
        let y = run(py, work, |stop| {
            linalg::affine_rows(Points::new(xs, n, d)?, sh, a, k, stop)
        })?;
        array2(py, y, n, k)?.into_any()
    }))
}

/// Weighted mean and covariance (`numpy.cov` with `aweights`, `bias=False`) on divest's
/// pool. Returns `(mean, cov)` as float64.
#[pyfunction]
fn weighted_cov<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    w: PyReadonlyArray1<'py, f64>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let x = Arr2::extract(x, "x")?;
    let (n, d) = x.shape();
    let ws = w.as_slice()?;
    let work = n.saturating_mul(d).saturating_mul(d);
    Ok(with_slice!(&x, |xs| {
        let (mean, cov) = run(py, work, |stop| {
            linalg::weighted_cov(Points::new(xs, n, d)?, ws, stop)
        })?;
        (
            array2(py, mean, 1, d)?.into_any(),
            array2(py, cov, d, d)?.into_any(),
        )
    }))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(affine, m)?)?;
    m.add_function(wrap_pyfunction!(weighted_cov, m)?)?;
    m.add_function(wrap_pyfunction!(kde_eval, m)?)?;
    m.add_function(wrap_pyfunction!(kde_loo_grid, m)?)?;
    m.add_function(wrap_pyfunction!(kde_loo_grid_at, m)?)?;
    Ok(())
}
