//! Bindings of exact 1-D and sliced transport (float64, C-contiguous; Python validates).

use numpy::{PyArray1, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::common::{array2, run, to_py};
use crate::core::pairwise::Points;
use crate::core::sliced;

fn s1<'a>(a: &'a PyReadonlyArray1<'_, f64>, name: &str) -> PyResult<&'a [f64]> {
    a.as_slice()
        .map_err(|_| PyValueError::new_err(format!("{name} must be C-contiguous")))
}

fn pts<'a>(a: &'a PyReadonlyArray2<'_, f64>, name: &str) -> PyResult<Points<'a, f64>> {
    let s = a
        .as_slice()
        .map_err(|_| PyValueError::new_err(format!("{name} must be C-contiguous")))?;
    let sh = a.shape();
    Points::new(s, sh[0], sh[1]).map_err(to_py)
}

/// W_p^p between weighted 1-D samples.
#[pyfunction]
#[pyo3(signature = (u, v, wu, wv, p))]
fn ot_wasserstein_1d(
    py: Python<'_>,
    u: PyReadonlyArray1<'_, f64>,
    v: PyReadonlyArray1<'_, f64>,
    wu: Option<PyReadonlyArray1<'_, f64>>,
    wv: Option<PyReadonlyArray1<'_, f64>>,
    p: f64,
) -> PyResult<f64> {
    let (us, vs) = (s1(&u, "u")?, s1(&v, "v")?);
    let wus = wu.as_ref().map(|w| s1(w, "u_weights")).transpose()?;
    let wvs = wv.as_ref().map(|w| s1(w, "v_weights")).transpose()?;
    let work = (us.len() + vs.len()).saturating_mul(64);
    run(py, work, |_| sliced::wasserstein_1d(us, vs, wus, wvs, p))
}

/// Per projection W_p^p (and its gradient with respect to the projection).
#[pyfunction]
#[pyo3(signature = (x, y, a, b, thetas, p, with_grad))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn ot_sliced<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f64>,
    y: PyReadonlyArray2<'py, f64>,
    a: Option<PyReadonlyArray1<'py, f64>>,
    b: Option<PyReadonlyArray1<'py, f64>>,
    thetas: PyReadonlyArray2<'py, f64>,
    p: f64,
    with_grad: bool,
) -> PyResult<(Bound<'py, PyArray1<f64>>, Bound<'py, numpy::PyArray2<f64>>)> {
    let (px, py_, pt) = (pts(&x, "x")?, pts(&y, "y")?, pts(&thetas, "projections")?);
    let asl = a.as_ref().map(|w| s1(w, "a")).transpose()?;
    let bsl = b.as_ref().map(|w| s1(w, "b")).transpose()?;
    let work = (px.n + py_.n)
        .saturating_mul(px.d + 32)
        .saturating_mul(pt.n);
    let (vals, grads) = run(py, work, |stop| {
        sliced::sliced(px, py_, asl, bsl, pt, p, with_grad, stop)
    })?;
    let rows = if with_grad { pt.n } else { 0 };
    Ok((PyArray1::from_vec(py, vals), array2(py, grads, rows, px.d)?))
}

/// Registers the transport bindings.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(ot_wasserstein_1d, m)?)?;
    m.add_function(wrap_pyfunction!(ot_sliced, m)?)?;
    Ok(())
}
