//! Bindings for the backward passes of `divest.torch` (gradients that the NumPy API does
//! not return). Inputs are laid out by `divest/torch.py`.

use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1};
use pyo3::prelude::*;

use super::common::{array2, run, to_py, with_slices, Arr2};
use crate::core::divergence::discrete::{Batch, Input, Measure, Spec};
use crate::core::divergence::grad;
use crate::core::divergence::kernel::PairKernel;
use crate::core::divergence::sample_grad;
use crate::core::ot::clouds;
use crate::core::pairwise::Points;

fn opt_array<'py, T: numpy::Element>(
    py: Python<'py>,
    v: Vec<T>,
    n: usize,
    k: usize,
    want: bool,
) -> PyResult<Option<Bound<'py, PyArray2<T>>>> {
    if want {
        Ok(Some(array2(py, v, n, k)?))
    } else {
        Ok(None)
    }
}

/// Gradients of Σ_r coef[r]·D(p_r, q_r) with respect to `p` and `q` (C-contiguous
/// (rows, k) arrays of one dtype; the gradients come back in that dtype, None where not
/// wanted).
#[pyfunction]
#[pyo3(signature = (p, q, coef, measure, param, input, normalize, tol, want_p, want_q))]
#[allow(clippy::too_many_arguments)]
fn divergence_rows_grad<'py>(
    py: Python<'py>,
    p: &Bound<'py, PyAny>,
    q: &Bound<'py, PyAny>,
    coef: PyReadonlyArray1<'py, f64>,
    measure: &str,
    param: f64,
    input: &str,
    normalize: bool,
    tol: f64,
    want_p: bool,
    want_q: bool,
) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
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
    let c = coef.as_slice()?;
    let work = rp.saturating_mul(k).saturating_mul(16);
    with_slices!(&a, &b, |xs, ys| {
        let (gp, gq) = run(py, work, |stop| {
            grad::divergence_rows_grad(
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
                spec,
                c,
                (want_p, want_q),
                stop,
            )
        })?;
        let gp = opt_array(py, gp, rp, k, want_p)?;
        let gq = opt_array(py, gq, rq, kq, want_q)?;
        Ok((
            gp.into_pyobject(py)?.into_any().unbind(),
            gq.into_pyobject(py)?.into_any().unbind(),
        ))
    })
}

type Arr1<'py> = Bound<'py, PyArray1<f64>>;

/// `sinkhorn_divergence_clouds_grads`: as `sinkhorn_divergence_clouds` with `grad=True`
/// (value, f, g, p and q or None, grad_x, n_iter, converged, marginal_error), then grad_y.
type GradsOut<'py> = (
    f64,
    Arr1<'py>,
    Arr1<'py>,
    Option<Arr1<'py>>,
    Option<Arr1<'py>>,
    Bound<'py, PyArray2<f64>>,
    usize,
    bool,
    f64,
    Bound<'py, PyArray2<f64>>,
);

/// The Sinkhorn divergence between clouds with its gradients with respect to both clouds
/// (the y gradient from the statistics of the y-row check passes).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn sinkhorn_divergence_clouds_grads<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    a: PyReadonlyArray1<'py, f64>,
    b: PyReadonlyArray1<'py, f64>,
    p: u8,
    eps: f64,
    eps0: f64,
    scaling: f64,
    debias: bool,
    max_iter: usize,
    tol: Option<f64>,
) -> PyResult<GradsOut<'py>> {
    let xa = Arr2::extract(x, "x")?;
    let ya = Arr2::extract(y, "y")?;
    let ((n, d), (m, dy)) = (xa.shape(), ya.shape());
    let (av, bv) = (a.as_slice()?, b.as_slice()?);
    let opts = clouds::DivOptions {
        p,
        eps,
        eps0,
        scaling,
        debias,
        max_iter,
        tol,
        grad: true,
    };
    // A larger allowance than the divergence alone: the y gradient's passes.
    let work = super::ot::clouds_work(n, m, d, &opts, 6);
    let (out, gy) = with_slices!(&xa, &ya, |xs, ys| {
        run(py, work, |stop| {
            clouds::divergence_grads(
                Points::new(xs, n, d)?,
                Points::new(ys, m, dy)?,
                av,
                bv,
                &opts,
                true,
                stop,
            )
        })?
    });
    Ok((
        out.value,
        out.f.into_pyarray(py),
        out.g.into_pyarray(py),
        debias.then(|| out.p.into_pyarray(py)),
        debias.then(|| out.q.into_pyarray(py)),
        array2(py, out.grad, n, d)?,
        out.n_iter,
        out.converged,
        out.error,
        array2(py, gy, m, dy)?,
    ))
}

/// Rows of exp(-log_norm)·Σ_j ∇_{x_i} k(x_i, y_j) (an (n, d) float64 array).
#[pyfunction]
fn kernel_row_grads<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    kernel: &str,
    scale: f64,
    log_norm: f64,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let kern = PairKernel::parse(kernel).map_err(to_py)?;
    let a = Arr2::extract(x, "x")?;
    let b = Arr2::extract(y, "y")?;
    let ((n, d), (m, dy)) = (a.shape(), b.shape());
    let work = n.saturating_mul(m).saturating_mul(d + 8);
    let g = with_slices!(&a, &b, |xs, ys| run(py, work, |stop| {
        sample_grad::kernel_row_grads(
            Points::new(xs, n, d)?,
            Points::new(ys, m, dy)?,
            kern,
            scale,
            log_norm,
            stop,
        )
    })?);
    array2(py, g, n, d)
}

/// Rows of Σ_j α|x_i − y_j|^(α−2)(x_i − y_j) (an (n, d) float64 array).
#[pyfunction]
fn energy_row_grads<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    alpha: f64,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let a = Arr2::extract(x, "x")?;
    let b = Arr2::extract(y, "y")?;
    let ((n, d), (m, dy)) = (a.shape(), b.shape());
    let work = n.saturating_mul(m).saturating_mul(d + 8);
    let g = with_slices!(&a, &b, |xs, ys| run(py, work, |stop| {
        sample_grad::energy_row_grads(Points::new(xs, n, d)?, Points::new(ys, m, dy)?, alpha, stop)
    })?);
    array2(py, g, n, d)
}

type Moments<'py> = (
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray2<f64>>,
    Option<Bound<'py, PyArray2<f64>>>,
);

/// (ln Σ_j exp(lw_j − ‖x_i − y_j‖²/2), E_r[y], E_r[y²] or None) per row of x.
#[pyfunction]
fn gauss_moments<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    lw: PyReadonlyArray1<'py, f64>,
    second: bool,
) -> PyResult<Moments<'py>> {
    let a = Arr2::extract(x, "x")?;
    let b = Arr2::extract(y, "y")?;
    let ((n, d), (m, dy)) = (a.shape(), b.shape());
    let w = lw.as_slice()?;
    let work = n.saturating_mul(m).saturating_mul(d + 8);
    let (lse, m1, m2) = with_slices!(&a, &b, |xs, ys| run(py, work, |stop| {
        sample_grad::gauss_moments(
            Points::new(xs, n, d)?,
            Points::new(ys, m, dy)?,
            w,
            second,
            stop,
        )
    })?);
    let m2 = if second {
        Some(array2(py, m2, n, d)?)
    } else {
        None
    };
    Ok((lse.into_pyarray(py), array2(py, m1, n, d)?, m2))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(gauss_moments, m)?)?;
    m.add_function(wrap_pyfunction!(kernel_row_grads, m)?)?;
    m.add_function(wrap_pyfunction!(energy_row_grads, m)?)?;
    m.add_function(wrap_pyfunction!(sinkhorn_divergence_clouds_grads, m)?)?;
    m.add_function(wrap_pyfunction!(divergence_rows_grad, m)?)?;
    Ok(())
}
