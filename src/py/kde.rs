//! KDE bindings. Inputs are already validated and whitened by `divest/kde.py`.

use numpy::ndarray::Array2;
use numpy::{PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use super::common::{run, slice, Arr2};
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
    let kernel = Kernel::parse(kernel).map_err(super::common::to_py)?;
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
    let out = match (&x, &q) {
        (Arr2::F64(a), Arr2::F64(b)) => {
            let (xs, qs) = (slice(a)?, slice(b)?);
            run(py, work, |stop| {
                kde::kde_eval(Points::new(xs, n, d)?, lw, Points::new(qs, m, dq)?, kernel, opts, stop)
            })?
        }
        (Arr2::F32(a), Arr2::F32(b)) => {
            let (xs, qs) = (slice(a)?, slice(b)?);
            run(py, work, |stop| {
                kde::kde_eval(Points::new(xs, n, d)?, lw, Points::new(qs, m, dq)?, kernel, opts, stop)
            })?
        }
        _ => return Err(PyTypeError::new_err("data and points must have the same dtype")),
    };
    let lse = PyArray1::from_vec(py, out.log_sum);
    let ess = ess.then(|| PyArray1::from_vec(py, out.ess));
    let score = if score {
        let a = Array2::from_shape_vec((m, d), out.score)
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
        Some(PyArray2::from_owned_array(py, a))
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
    let kernel = Kernel::parse(kernel).map_err(super::common::to_py)?;
    let x = Arr2::extract(data, "data")?;
    let (n, d) = x.shape();
    let lw = logw.as_slice()?;
    let f = factors.as_slice()?;
    let g = f.len();
    let work = n.saturating_mul(n).saturating_mul(d + 8 * g);
    let v = match &x {
        Arr2::F64(a) => {
            let xs = slice(a)?;
            run(py, work, |stop| kde::kde_loo_grid(Points::new(xs, n, d)?, lw, kernel, f, stop))?
        }
        Arr2::F32(a) => {
            let xs = slice(a)?;
            run(py, work, |stop| kde::kde_loo_grid(Points::new(xs, n, d)?, lw, kernel, f, stop))?
        }
    };
    let a = Array2::from_shape_vec((n, g), v)
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    Ok(PyArray2::from_owned_array(py, a))
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
    let wrap = |e: numpy::ndarray::ShapeError| pyo3::exceptions::PyRuntimeError::new_err(e.to_string());
    Ok(match &x {
        Arr2::F64(v) => {
            let xs = slice(v)?;
            let y = run(py, work, |_| linalg::affine_rows(Points::new(xs, n, d)?, sh, a, k))?;
            PyArray2::from_owned_array(py, Array2::from_shape_vec((n, k), y).map_err(wrap)?).into_any()
        }
        Arr2::F32(v) => {
            let xs = slice(v)?;
            let y = run(py, work, |_| linalg::affine_rows(Points::new(xs, n, d)?, sh, a, k))?;
            PyArray2::from_owned_array(py, Array2::from_shape_vec((n, k), y).map_err(wrap)?).into_any()
        }
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(affine, m)?)?;
    m.add_function(wrap_pyfunction!(kde_eval, m)?)?;
    m.add_function(wrap_pyfunction!(kde_loo_grid, m)?)?;
    Ok(())
}
