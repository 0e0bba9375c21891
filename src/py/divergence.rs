//! Divergence bindings. Inputs are validated, broadcast and laid out by
//! `divest/divergence.py`; rows are checked (signs, sums) in the core.

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use super::common::{run, slice, to_py, Arr2};
use crate::core::divergence::discrete::{self, Batch, Input, Measure, Spec};

/// One divergence per output row between rows `pidx[r]` of p and `qidx[r]` of q (row r
/// where an index is None); p and q are C-contiguous (rows, k) arrays of one dtype.
#[pyfunction]
#[pyo3(signature = (p, q, pidx, qidx, n_out, measure, param, input, normalize, tol))]
#[allow(clippy::too_many_arguments)]
fn divergence_rows<'py>(
    py: Python<'py>,
    p: &Bound<'py, PyAny>,
    q: &Bound<'py, PyAny>,
    pidx: Option<PyReadonlyArray1<'py, i64>>,
    qidx: Option<PyReadonlyArray1<'py, i64>>,
    n_out: usize,
    measure: &str,
    param: f64,
    input: &str,
    normalize: bool,
    tol: f64,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let spec = Spec {
        measure: Measure::parse(measure, param).map_err(to_py)?,
        input: Input::parse(input).map_err(to_py)?,
        normalize,
        tol,
    };
    let a = Arr2::extract(p, "p")?;
    let b = Arr2::extract(q, "q")?;
    let (rp, k) = a.shape();
    let (rq, kq) = b.shape();
    let pi = match &pidx {
        Some(x) => Some(x.as_slice()?),
        None => None,
    };
    let qi = match &qidx {
        Some(x) => Some(x.as_slice()?),
        None => None,
    };
    let work = n_out.saturating_mul(k).saturating_mul(8);
    let v = match (&a, &b) {
        (Arr2::F64(x), Arr2::F64(y)) => {
            let (xs, ys) = (slice(x)?, slice(y)?);
            run(py, work, |stop| {
                discrete::divergence_rows(
                    Batch {
                        data: xs,
                        rows: rp,
                        k,
                    },
                    Batch {
                        data: ys,
                        rows: rq,
                        k: kq,
                    },
                    pi,
                    qi,
                    n_out,
                    spec,
                    stop,
                )
            })?
        }
        (Arr2::F32(x), Arr2::F32(y)) => {
            let (xs, ys) = (slice(x)?, slice(y)?);
            run(py, work, |stop| {
                discrete::divergence_rows(
                    Batch {
                        data: xs,
                        rows: rp,
                        k,
                    },
                    Batch {
                        data: ys,
                        rows: rq,
                        k: kq,
                    },
                    pi,
                    qi,
                    n_out,
                    spec,
                    stop,
                )
            })?
        }
        _ => return Err(PyTypeError::new_err("p and q must have the same dtype")),
    };
    Ok(PyArray1::from_vec(py, v))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(divergence_rows, m)?)?;
    Ok(())
}
