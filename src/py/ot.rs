//! Optimal transport bindings. Inputs are validated by `divest/ot.py`; costs arrive as
//! C-contiguous float32 or float64 arrays and are widened to f64 here (the solver
//! accumulates in f64 whatever the input).

use std::borrow::Cow;

use numpy::ndarray::Array2;
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::common::{run, slice, to_py, Arr2};
use crate::core::ot::clouds;
use crate::core::ot::dense::{self, Method, Options, Problem};
use crate::core::pairwise::Points;

/// The cost as f64 (borrowed when it already is).
fn cost_f64<'a>(c: &'a Arr2<'_>) -> PyResult<Cow<'a, [f64]>> {
    Ok(match c {
        Arr2::F64(x) => Cow::Borrowed(slice(x)?),
        Arr2::F32(x) => Cow::Owned(slice(x)?.iter().map(|&v| v as f64).collect()),
    })
}

fn is_f32(c: &Arr2<'_>) -> bool {
    matches!(c, Arr2::F32(_))
}

fn matrix<'py>(
    py: Python<'py>,
    v: Vec<f64>,
    rows: usize,
    cols: usize,
    f32_out: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let wrap = |e: numpy::ndarray::ShapeError| PyRuntimeError::new_err(e.to_string());
    Ok(if f32_out {
        let v32: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        PyArray2::from_owned_array(py, Array2::from_shape_vec((rows, cols), v32).map_err(wrap)?)
            .into_any()
    } else {
        PyArray2::from_owned_array(py, Array2::from_shape_vec((rows, cols), v).map_err(wrap)?)
            .into_any()
    })
}

fn options(
    max_iter: usize,
    tol: f64,
    method: &str,
    scaling: Option<f64>,
    omega: f64,
) -> PyResult<Options> {
    Ok(Options {
        max_iter,
        tol,
        method: Method::parse(method).map_err(to_py)?,
        scaling,
        omega,
        parallel: true,
    })
}

/// Operations of a dense solve, for [`run`]: one pass over the n×m cost per iteration
/// (each ε of a scaling schedule adds at most one; the schedule has at most 10^4), with
/// n + m more for the potentials, so that tiny problems with a huge `max_iter` still get
/// the interrupt watcher.
fn solve_work(n: usize, m: usize, max_iter: usize, scaling: Option<f64>) -> usize {
    let iters = max_iter
        .saturating_add(if scaling.is_some() { 10_000 } else { 0 })
        .saturating_add(2);
    n.saturating_mul(m)
        .saturating_add(n)
        .saturating_add(m)
        .saturating_mul(iters)
}

/// One dense problem. Returns a dict with plan (or None), f, g, n_iter, converged,
/// marginal_error, cost, linear_cost, mass.
#[pyfunction]
#[pyo3(signature = (a, b, cost, reg, reg_m, max_iter, tol, method, scaling, omega, init, return_plan))]
#[allow(clippy::too_many_arguments)]
fn sinkhorn_dense<'py>(
    py: Python<'py>,
    a: PyReadonlyArray1<'py, f64>,
    b: PyReadonlyArray1<'py, f64>,
    cost: &Bound<'py, PyAny>,
    reg: f64,
    reg_m: f64,
    max_iter: usize,
    tol: f64,
    method: &str,
    scaling: Option<f64>,
    omega: f64,
    init: Option<(PyReadonlyArray1<'py, f64>, PyReadonlyArray1<'py, f64>)>,
    return_plan: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let c = Arr2::extract(cost, "cost")?;
    let (n, m) = c.shape();
    let cf = cost_f64(&c)?;
    let (av, bv) = (a.as_slice()?, b.as_slice()?);
    let opts = options(max_iter, tol, method, scaling, omega)?;
    let init_s = match &init {
        Some((f0, g0)) => Some((f0.as_slice()?, g0.as_slice()?)),
        None => None,
    };
    let p = Problem {
        a: av,
        b: bv,
        cost: &cf,
        eps: reg,
        rho_a: reg_m,
        rho_b: reg_m,
    };
    let work = solve_work(n, m, max_iter, scaling);
    let (s, fin) = run(py, work, |stop| {
        let s = dense::solve(&p, init_s, &opts, stop)?;
        let fin = dense::finish(&p, &s.f, &s.g, return_plan, true, stop)?;
        Ok((s, fin))
    })?;
    let d = PyDict::new(py);
    if return_plan {
        d.set_item("plan", matrix(py, fin.plan, n, m, is_f32(&c))?)?;
    } else {
        d.set_item("plan", py.None())?;
    }
    d.set_item("f", s.f.into_pyarray(py))?;
    d.set_item("g", s.g.into_pyarray(py))?;
    d.set_item("n_iter", s.n_iter)?;
    d.set_item("loop_converged", s.converged)?;
    d.set_item("marginal_error", fin.marginal_error)?;
    d.set_item("cost", fin.cost)?;
    d.set_item("linear_cost", fin.linear_cost)?;
    d.set_item("mass", fin.mass)?;
    Ok(d)
}

/// B dense problems: a (B, n), b (B, m), cost (B*n, m) or shared (n, m).
#[pyfunction]
#[pyo3(signature = (a, b, cost, shared, reg, reg_m, max_iter, tol, method, omega, return_plan, scaling=None))]
#[allow(clippy::too_many_arguments)]
fn sinkhorn_batch_dense<'py>(
    py: Python<'py>,
    a: PyReadonlyArray2<'py, f64>,
    b: PyReadonlyArray2<'py, f64>,
    cost: &Bound<'py, PyAny>,
    shared: bool,
    reg: f64,
    reg_m: f64,
    max_iter: usize,
    tol: f64,
    method: &str,
    omega: f64,
    return_plan: bool,
    scaling: Option<f64>,
) -> PyResult<Bound<'py, PyDict>> {
    let c = Arr2::extract(cost, "cost")?;
    let (nb, n) = {
        let s = a.shape();
        (s[0], s[1])
    };
    let m = b.shape()[1];
    let (cr, cm) = c.shape();
    let expect_rows = if shared { n } else { nb * n };
    if cr != expect_rows || cm != m || b.shape()[0] != nb {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "batch shapes do not match",
        ));
    }
    let (av, bv) = (slice(&a)?, slice(&b)?);
    let opts = options(max_iter, tol, method, scaling, omega)?;
    let work = nb.saturating_mul(solve_work(n, m, max_iter, scaling));
    let f32_in = is_f32(&c);
    let out = match &c {
        Arr2::F64(x) => {
            let cs = slice(x)?;
            let get = |k: usize| -> Cow<'_, [f64]> {
                if shared {
                    Cow::Borrowed(cs)
                } else {
                    Cow::Borrowed(&cs[k * n * m..(k + 1) * n * m])
                }
            };
            run(py, work, |stop| {
                dense::solve_batch(av, bv, n, m, nb, &get, reg, reg_m, &opts, return_plan, stop)
            })?
        }
        Arr2::F32(x) => {
            let cs = slice(x)?;
            let shared64: Vec<f64> = if shared {
                cs.iter().map(|&v| v as f64).collect()
            } else {
                Vec::new()
            };
            let get = |k: usize| -> Cow<'_, [f64]> {
                if shared {
                    Cow::Borrowed(&shared64[..])
                } else {
                    Cow::Owned(
                        cs[k * n * m..(k + 1) * n * m]
                            .iter()
                            .map(|&v| v as f64)
                            .collect(),
                    )
                }
            };
            run(py, work, |stop| {
                dense::solve_batch(av, bv, n, m, nb, &get, reg, reg_m, &opts, return_plan, stop)
            })?
        }
    };
    let mut f = Vec::with_capacity(nb * n);
    let mut g = Vec::with_capacity(nb * m);
    let mut plans = Vec::with_capacity(if return_plan { nb * n * m } else { 0 });
    let (mut it, mut conv, mut err, mut cost_v, mut lin) = (vec![], vec![], vec![], vec![], vec![]);
    for (s, fin) in out {
        f.extend(s.f);
        g.extend(s.g);
        it.push(s.n_iter as i64);
        conv.push(s.converged);
        err.push(fin.marginal_error);
        cost_v.push(fin.cost);
        lin.push(fin.linear_cost);
        plans.extend(fin.plan);
    }
    let d = PyDict::new(py);
    d.set_item("f", matrix(py, f, nb, n, false)?)?;
    d.set_item("g", matrix(py, g, nb, m, false)?)?;
    d.set_item("n_iter", PyArray1::from_vec(py, it))?;
    d.set_item("loop_converged", PyArray1::from_vec(py, conv))?;
    d.set_item("marginal_error", PyArray1::from_vec(py, err))?;
    d.set_item("cost", PyArray1::from_vec(py, cost_v))?;
    d.set_item("linear_cost", PyArray1::from_vec(py, lin))?;
    if return_plan {
        d.set_item("plan", matrix(py, plans, nb * n, m, f32_in)?)?;
    } else {
        d.set_item("plan", py.None())?;
    }
    Ok(d)
}

/// Debiased Sinkhorn divergence between clouds x (n, d) and y (m, d) of one dtype; weights
/// sum to one. Returns a dict with value, f, g, p, q, grad (or None), n_iter, converged,
/// marginal_error.
#[pyfunction]
#[pyo3(signature = (x, y, a, b, p, eps, eps0, scaling, debias, max_iter, tol, grad))]
#[allow(clippy::too_many_arguments)]
fn sinkhorn_divergence_clouds<'py>(
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
    grad: bool,
) -> PyResult<Bound<'py, PyDict>> {
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
        grad,
    };
    // One pass is about (n + m)²·(d + 8) operations; there are 4 per ε of the schedule,
    // about 12 more, and with `tol` up to 4 per iteration at the target ε (so that tiny
    // clouds with a huge `max_iter` still get the interrupt watcher).
    let passes = clouds::schedule(eps0, eps, scaling, p)
        .len()
        .saturating_add(4)
        .saturating_mul(4)
        .saturating_add(if tol.is_some() {
            max_iter.saturating_mul(4)
        } else {
            0
        });
    let work = (n + m)
        .saturating_mul(n + m)
        .saturating_mul(d + 8)
        .saturating_mul(passes);
    let out = match (&xa, &ya) {
        (Arr2::F64(u), Arr2::F64(v)) => {
            let (xs, ys) = (slice(u)?, slice(v)?);
            run(py, work, |stop| {
                clouds::divergence(
                    Points::new(xs, n, d)?,
                    Points::new(ys, m, dy)?,
                    av,
                    bv,
                    &opts,
                    stop,
                )
            })?
        }
        (Arr2::F32(u), Arr2::F32(v)) => {
            let (xs, ys) = (slice(u)?, slice(v)?);
            run(py, work, |stop| {
                clouds::divergence(
                    Points::new(xs, n, d)?,
                    Points::new(ys, m, dy)?,
                    av,
                    bv,
                    &opts,
                    stop,
                )
            })?
        }
        _ => {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "x and y must have the same dtype",
            ))
        }
    };
    let dct = PyDict::new(py);
    dct.set_item("value", out.value)?;
    dct.set_item("f", out.f.into_pyarray(py))?;
    dct.set_item("g", out.g.into_pyarray(py))?;
    dct.set_item("p", out.p.into_pyarray(py))?;
    dct.set_item("q", out.q.into_pyarray(py))?;
    if grad {
        dct.set_item("grad", matrix(py, out.grad, n, d, false)?)?;
    } else {
        dct.set_item("grad", py.None())?;
    }
    dct.set_item("n_iter", out.n_iter)?;
    dct.set_item("converged", out.converged)?;
    dct.set_item("marginal_error", out.error)?;
    Ok(dct)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(sinkhorn_divergence_clouds, m)?)?;
    m.add_function(wrap_pyfunction!(sinkhorn_dense, m)?)?;
    m.add_function(wrap_pyfunction!(sinkhorn_batch_dense, m)?)?;
    Ok(())
}
