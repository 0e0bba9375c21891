//! Bindings of the Gaussian box probabilities (`core::kdebox`, issue 11). Inputs are
//! validated and put in the KDE's internal units by `divest/_kdecalc.py`.

use numpy::{PyArray1, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;

use super::common::{run, to_py};
use crate::core::kdebox::{self, BoxModel, Bvn, Tvn};

/// Σ_i w_i P(lo_j ≤ x_i + L z ≤ hi_j) for each box j: `x` (n, d) data, `w` (n,)
/// weights, `lo`/`hi` (m, d) box corners (±inf allowed, lo ≤ hi), `chol` the (d, d)
/// lower-triangular bandwidth factor; `full` False reads only its diagonal (products
/// of 1-D tails, any d), True needs d = 2 or 3. Allocates the (m,) result and at most
/// 16 partial sums per box.
#[pyfunction]
fn kde_box_gauss<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f64>,
    w: PyReadonlyArray1<'py, f64>,
    lo: PyReadonlyArray2<'py, f64>,
    hi: PyReadonlyArray2<'py, f64>,
    chol: PyReadonlyArray2<'py, f64>,
    full: bool,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let d = x.shape()[1];
    if chol.shape() != [d, d] || lo.shape()[1] != d || hi.shape() != lo.shape() {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "kde_box_gauss: chol must be ({d}, {d}) and lo, hi (m, {d}) of one shape"
        )));
    }
    let model = BoxModel::new(chol.as_slice()?, d, full).map_err(to_py)?;
    let (xs, ws) = (x.as_slice()?, w.as_slice()?);
    let (ls, hs) = (lo.as_slice()?, hi.as_slice()?);
    let work = kdebox::box_work(&model, ws.len(), lo.shape()[0]);
    let out = run(py, work, |stop| {
        kdebox::box_probs(&model, xs, ws, ls, hs, d, stop)
    })?;
    Ok(PyArray1::from_vec(py, out))
}

/// Φ3(h; R) per row of `h` (k, 3), standardised limits (±inf allowed), for the
/// correlations of the (3, 3) lower-triangular factor `chol` (test access to the
/// per-point trivariate CDF).
#[pyfunction]
fn tvn_cdf<'py>(
    py: Python<'py>,
    chol: PyReadonlyArray2<'py, f64>,
    h: PyReadonlyArray2<'py, f64>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    if chol.shape() != [3, 3] || h.shape()[1] != 3 {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "tvn_cdf: chol must be (3, 3) and h (k, 3)",
        ));
    }
    let t = Tvn::new(chol.as_slice()?);
    let out: Vec<f64> = h
        .as_slice()?
        .chunks(3)
        .map(|v| t.cdf_at([v[0], v[1], v[2]]))
        .collect();
    Ok(PyArray1::from_vec(py, out))
}

/// P(X ≤ u, Y ≤ v) per row of `h` (k, 2) for correlation `r` (`a` = √(1 − r²)).
#[pyfunction]
fn bvn_cdf<'py>(
    py: Python<'py>,
    h: PyReadonlyArray2<'py, f64>,
    r: f64,
    a: f64,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    if h.shape()[1] != 2 {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "bvn_cdf: h must be (k, 2)",
        ));
    }
    let b = Bvn::new(r, a);
    let out: Vec<f64> = h
        .as_slice()?
        .chunks(2)
        .map(|v| b.cdf_at(v[0], v[1]))
        .collect();
    Ok(PyArray1::from_vec(py, out))
}

/// The upper normal tail 1 − Φ(t), elementwise (a few ulp relative).
#[pyfunction]
fn normal_sf<'py>(
    py: Python<'py>,
    t: PyReadonlyArray1<'py, f64>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let out: Vec<f64> = t.as_slice()?.iter().map(|&v| kdebox::norm_sf(v)).collect();
    Ok(PyArray1::from_vec(py, out))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(kde_box_gauss, m)?)?;
    m.add_function(wrap_pyfunction!(tvn_cdf, m)?)?;
    m.add_function(wrap_pyfunction!(bvn_cdf, m)?)?;
    m.add_function(wrap_pyfunction!(normal_sf, m)?)?;
    Ok(())
}
