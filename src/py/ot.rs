//! Optimal transport bindings. Inputs are validated by `divest/ot.py`; costs arrive as
//! C-contiguous float32 or float64 arrays and are widened to f64 here (the solver
//! accumulates in f64 whatever the input).

use std::borrow::Cow;

use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::common::{array2, array2_like, run, slice, to_py, widen, with_slice, with_slices, Arr2};
use crate::core::ot::clouds;
use crate::core::ot::dense::{self, Method, Options, Problem};
use crate::core::pairwise::Points;

type Arr1<'py> = Bound<'py, PyArray1<f64>>;

/// `sinkhorn_dense`: (plan or None, f, g, cost, linear_cost, n_iter, loop_converged,
/// marginal_error).
type DenseOut<'py> = (
    Option<Bound<'py, PyAny>>,
    Arr1<'py>,
    Arr1<'py>,
    f64,
    f64,
    usize,
    bool,
    f64,
);

/// `sinkhorn_batch_dense`: (plan (B·n, m) or None, f (B, n), g (B, m), and per problem
/// cost, linear_cost, n_iter, marginal_error).
type BatchOut<'py> = (
    Option<Bound<'py, PyAny>>,
    Bound<'py, PyArray2<f64>>,
    Bound<'py, PyArray2<f64>>,
    Arr1<'py>,
    Arr1<'py>,
    Bound<'py, PyArray1<i64>>,
    Arr1<'py>,
);

/// `sinkhorn_divergence_clouds`: (value, f, g, p and q or None without debiasing, grad or
/// None, n_iter, converged, marginal_error).
type CloudsOut<'py> = (
    f64,
    Arr1<'py>,
    Arr1<'py>,
    Option<Arr1<'py>>,
    Option<Arr1<'py>>,
    Option<Bound<'py, PyArray2<f64>>>,
    usize,
    bool,
    f64,
);

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

/// One dense problem; the plan has the cost's dtype, the rest is float64.
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
) -> PyResult<DenseOut<'py>> {
    let c = Arr2::extract(cost, "cost")?;
    let (n, m) = c.shape();
    let (av, bv) = (a.as_slice()?, b.as_slice()?);
    let opts = options(max_iter, tol, method, scaling, omega)?;
    let init_s = match &init {
        Some((f0, g0)) => Some((f0.as_slice()?, g0.as_slice()?)),
        None => None,
    };
    let work = solve_work(n, m, max_iter, scaling);
    let (s, fin, plan) = with_slice!(&c, |cs| {
        let cf = widen(cs);
        let p = Problem {
            a: av,
            b: bv,
            cost: &cf,
            eps: reg,
            rho_a: reg_m,
            rho_b: reg_m,
        };
        let (s, mut fin) = run(py, work, |stop| {
            let s = dense::solve(&p, init_s, &opts, stop)?;
            let fin = dense::finish(&p, &s.f, &s.g, return_plan, true, stop)?;
            Ok((s, fin))
        })?;
        let plan = if return_plan {
            let v = std::mem::take(&mut fin.plan);
            Some(array2_like(py, cs, v, n, m)?.into_any())
        } else {
            None
        };
        (s, fin, plan)
    });
    Ok((
        plan,
        s.f.into_pyarray(py),
        s.g.into_pyarray(py),
        fin.cost,
        fin.linear_cost,
        s.n_iter,
        s.converged,
        fin.marginal_error,
    ))
}

/// The per-problem results of a batch or ragged solve, in problem order: the potentials
/// concatenated (`f` has Σ n_k entries, `g` Σ m_k) and one scalar of each kind per problem.
struct Gathered {
    f: Vec<f64>,
    g: Vec<f64>,
    n_iter: Vec<i64>,
    marginal_error: Vec<f64>,
    cost: Vec<f64>,
    linear_cost: Vec<f64>,
}

impl Gathered {
    /// Consumes the solves (plans already taken); `nf` and `ng` are the totals Σ n_k, Σ m_k.
    fn new(out: Vec<(dense::Solved, dense::Finished)>, nf: usize, ng: usize) -> Self {
        let nb = out.len();
        let mut r = Gathered {
            f: Vec::with_capacity(nf),
            g: Vec::with_capacity(ng),
            n_iter: Vec::with_capacity(nb),
            marginal_error: Vec::with_capacity(nb),
            cost: Vec::with_capacity(nb),
            linear_cost: Vec::with_capacity(nb),
        };
        for (s, fin) in out {
            r.f.extend(s.f);
            r.g.extend(s.g);
            r.n_iter.push(s.n_iter as i64);
            r.marginal_error.push(fin.marginal_error);
            r.cost.push(fin.cost);
            r.linear_cost.push(fin.linear_cost);
        }
        r
    }
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
) -> PyResult<BatchOut<'py>> {
    let c = Arr2::extract(cost, "cost")?;
    let (nb, n) = {
        let s = a.shape();
        (s[0], s[1])
    };
    let m = b.shape()[1];
    let (cr, cm) = c.shape();
    let expect_rows = if shared { n } else { nb * n };
    if cr != expect_rows || cm != m || b.shape()[0] != nb {
        return Err(PyValueError::new_err("batch shapes do not match"));
    }
    let (av, bv) = (slice(&a)?, slice(&b)?);
    let opts = options(max_iter, tol, method, scaling, omega)?;
    let work = nb.saturating_mul(solve_work(n, m, max_iter, scaling));
    let (out, plan) = with_slice!(&c, |cs| {
        // A shared cost is widened once; otherwise problem k's block when it is solved.
        let whole = if shared {
            widen(cs)
        } else {
            Cow::Borrowed(&[][..])
        };
        let get = |k: usize| -> Cow<'_, [f64]> {
            if shared {
                Cow::Borrowed(&whole[..])
            } else {
                widen(&cs[k * n * m..(k + 1) * n * m])
            }
        };
        let mut out = run(py, work, |stop| {
            dense::solve_batch(av, bv, n, m, nb, &get, reg, reg_m, &opts, return_plan, stop)
        })?;
        let plan = if return_plan {
            let mut plans = Vec::with_capacity(nb * n * m);
            for (_, fin) in &mut out {
                // Taken (not appended) so that each block is freed once copied.
                plans.extend(std::mem::take(&mut fin.plan));
            }
            Some(array2_like(py, cs, plans, nb * n, m)?.into_any())
        } else {
            None
        };
        (out, plan)
    });
    let r = Gathered::new(out, nb * n, nb * m);
    Ok((
        plan,
        array2(py, r.f, nb, n)?,
        array2(py, r.g, nb, m)?,
        PyArray1::from_vec(py, r.cost),
        PyArray1::from_vec(py, r.linear_cost),
        PyArray1::from_vec(py, r.n_iter),
        PyArray1::from_vec(py, r.marginal_error),
    ))
}

/// `sinkhorn_ragged_dense`: (plans concatenated (Σ n_k·m_k,) float64 or None, f (Σ n_k,),
/// g (Σ m_k,), and per problem cost, linear_cost, n_iter, marginal_error).
type RaggedOut<'py> = (
    Option<Arr1<'py>>,
    Arr1<'py>,
    Arr1<'py>,
    Arr1<'py>,
    Arr1<'py>,
    Bound<'py, PyArray1<i64>>,
    Arr1<'py>,
);

/// A problem's cost as stored by the caller, either precision.
#[derive(Clone, Copy)]
enum Src<'a> {
    F64(&'a [f64]),
    F32(&'a [f32]),
}

impl Src<'_> {
    fn len(&self) -> usize {
        match self {
            Src::F64(x) => x.len(),
            Src::F32(x) => x.len(),
        }
    }
    /// Entries `lo..hi` appended to `out` as f64.
    fn push(&self, lo: usize, hi: usize, out: &mut Vec<f64>) {
        match self {
            Src::F64(x) => out.extend_from_slice(&x[lo..hi]),
            Src::F32(x) => out.extend(x[lo..hi].iter().map(|&v| v as f64)),
        }
    }
}

fn src<'a>(c: &'a Arr2<'_>) -> PyResult<Src<'a>> {
    Ok(match c {
        Arr2::F64(x) => Src::F64(slice(x)?),
        Arr2::F32(x) => Src::F32(slice(x)?),
    })
}

fn usizes(v: &PyReadonlyArray1<'_, i64>, name: &str) -> PyResult<Vec<usize>> {
    v.as_slice()?
        .iter()
        .map(|&x| usize::try_from(x))
        .collect::<Result<_, _>>()
        .map_err(|_| PyValueError::new_err(format!("{name} must be non-negative")))
}

/// Problems of different sizes in one pass ([`dense::solve_ragged`]). `a` and `b` are the
/// problems' weights concatenated, `ns`/`ms` their sizes. Either `costs` lists one
/// C-contiguous (n_k, m_k) array per problem (float32 or float64, each its own), or
/// (masked form) `costs` holds one padded (B·N, M) array, and `rows`/`cols` give, problem
/// after problem, the rows (within its block of N) and the columns of its real entries:
/// each problem's sub-block is gathered when that problem is solved, nothing else is
/// copied. Plans come back concatenated, in float64.
#[pyfunction]
#[pyo3(signature = (a, b, ns, ms, costs, rows, cols, reg, reg_m, max_iter, tol, method, omega, return_plan, scaling=None))]
#[allow(clippy::too_many_arguments)]
fn sinkhorn_ragged_dense<'py>(
    py: Python<'py>,
    a: PyReadonlyArray1<'py, f64>,
    b: PyReadonlyArray1<'py, f64>,
    ns: PyReadonlyArray1<'py, i64>,
    ms: PyReadonlyArray1<'py, i64>,
    costs: Vec<Bound<'py, PyAny>>,
    rows: Option<PyReadonlyArray1<'py, i64>>,
    cols: Option<PyReadonlyArray1<'py, i64>>,
    reg: f64,
    reg_m: f64,
    max_iter: usize,
    tol: f64,
    method: &str,
    omega: f64,
    return_plan: bool,
    scaling: Option<f64>,
) -> PyResult<RaggedOut<'py>> {
    let (ns, ms) = (usizes(&ns, "ns")?, usizes(&ms, "ms")?);
    let nb = ns.len();
    if ms.len() != nb {
        return Err(PyValueError::new_err("ns and ms must have the same length"));
    }
    let shapes: Vec<(usize, usize)> = ns.iter().copied().zip(ms.iter().copied()).collect();
    let arrs = costs
        .iter()
        .enumerate()
        .map(|(k, c)| Arr2::extract(c, &format!("cost[{k}]")))
        .collect::<PyResult<Vec<_>>>()?;
    let srcs = arrs.iter().map(src).collect::<PyResult<Vec<_>>>()?;
    let (av, bv) = (a.as_slice()?, b.as_slice()?);
    // Masked form: each problem's row and column indices into the padded block.
    let index = match (&rows, &cols) {
        (Some(r), Some(c)) => {
            let (r, c) = (usizes(r, "rows")?, usizes(c, "cols")?);
            if srcs.len() != 1 || r.len() != av.len() || c.len() != bv.len() {
                return Err(PyValueError::new_err(
                    "the masked form takes one padded cost and one row (column) index per weight",
                ));
            }
            let (cr, cm) = arrs[0].shape();
            if nb == 0 || cr % nb != 0 {
                return Err(PyValueError::new_err("padded cost rows must be B*N"));
            }
            let np = cr / nb;
            if r.iter().any(|&i| i >= np) || c.iter().any(|&j| j >= cm) {
                return Err(PyValueError::new_err("mask index out of range"));
            }
            Some((r, c, np, cm))
        }
        (None, None) => {
            if srcs.len() != nb {
                return Err(PyValueError::new_err(
                    "costs must list one array per problem",
                ));
            }
            for (k, (c, s)) in arrs.iter().zip(&shapes).enumerate() {
                if c.shape() != *s {
                    return Err(PyValueError::new_err(format!(
                        "cost[{k}] has shape {:?}, expected {s:?}",
                        c.shape()
                    )));
                }
            }
            None
        }
        _ => return Err(PyValueError::new_err("rows and cols go together")),
    };
    let opts = options(max_iter, tol, method, scaling, omega)?;
    let work = shapes.iter().fold(0usize, |w, &(n, m)| {
        w.saturating_add(solve_work(n, m, max_iter, scaling))
    });
    // Offsets of each problem's indices (masked form).
    let mut offs = Vec::with_capacity(nb + 1);
    offs.push((0usize, 0usize));
    for &(n, m) in &shapes {
        let (r, c): (usize, usize) = offs[offs.len() - 1];
        offs.push((r.saturating_add(n), c.saturating_add(m)));
    }
    let get = |k: usize| -> Cow<'_, [f64]> {
        match &index {
            None => match srcs[k] {
                Src::F64(x) => Cow::Borrowed(x),
                Src::F32(x) => widen(x),
            },
            Some((r, c, np, cm)) => {
                let ((r0, c0), (r1, c1)) = (offs[k], offs[k + 1]);
                let (rk, ck) = (&r[r0..r1], &c[c0..c1]);
                let s = srcs[0];
                let mut v = Vec::with_capacity(rk.len() * ck.len());
                // Columns that are one run (a prefix mask, or any contiguous one) are copied
                // row slice by row slice; others entry by entry.
                let run = ck.windows(2).all(|w| w[1] == w[0] + 1);
                for &i in rk {
                    let base = (k * np + i) * cm;
                    if run && !ck.is_empty() {
                        s.push(base + ck[0], base + ck[0] + ck.len(), &mut v);
                    } else {
                        for &j in ck {
                            s.push(base + j, base + j + 1, &mut v);
                        }
                    }
                }
                debug_assert!(v.len() <= s.len());
                Cow::Owned(v)
            }
        }
    };
    let mut out = run(py, work, |stop| {
        dense::solve_ragged(av, bv, &shapes, &get, reg, reg_m, &opts, return_plan, stop)
    })?;
    let plan = if return_plan {
        let total = shapes
            .iter()
            .fold(0usize, |t, &(n, m)| t.saturating_add(n.saturating_mul(m)));
        let mut plans = Vec::with_capacity(total);
        for (_, fin) in &mut out {
            // Taken (not copied) so that each problem's plan is freed once appended.
            plans.extend(std::mem::take(&mut fin.plan));
        }
        Some(PyArray1::from_vec(py, plans))
    } else {
        None
    };
    let r = Gathered::new(out, av.len(), bv.len());
    Ok((
        plan,
        PyArray1::from_vec(py, r.f),
        PyArray1::from_vec(py, r.g),
        PyArray1::from_vec(py, r.cost),
        PyArray1::from_vec(py, r.linear_cost),
        PyArray1::from_vec(py, r.n_iter),
        PyArray1::from_vec(py, r.marginal_error),
    ))
}

/// Operations of a point-cloud Sinkhorn divergence, for [`run`]: one pass is about
/// (n + m)²·(d + 8) operations; there are 4 per ε of the schedule and 4 per `extra` step
/// (the extrapolation and the finish), and with `tol` up to 4 per iteration at the target ε
/// (so that tiny clouds with a huge `max_iter` still get the interrupt watcher).
pub(super) fn clouds_work(
    n: usize,
    m: usize,
    d: usize,
    opts: &clouds::DivOptions,
    extra: usize,
) -> usize {
    let passes = clouds::schedule(opts.eps0, opts.eps, opts.scaling, opts.p)
        .len()
        .saturating_add(extra)
        .saturating_mul(4)
        .saturating_add(if opts.tol.is_some() {
            opts.max_iter.saturating_mul(4)
        } else {
            0
        });
    (n + m)
        .saturating_mul(n + m)
        .saturating_mul(d + 8)
        .saturating_mul(passes)
}

/// Debiased Sinkhorn divergence between clouds x (n, d) and y (m, d) of one dtype; weights
/// sum to one. Everything returned is float64.
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
) -> PyResult<CloudsOut<'py>> {
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
    let work = clouds_work(n, m, d, &opts, 4);
    let out = with_slices!(&xa, &ya, |xs, ys| {
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
    });
    let grad = if grad {
        Some(array2(py, out.grad, n, d)?)
    } else {
        None
    };
    Ok((
        out.value,
        out.f.into_pyarray(py),
        out.g.into_pyarray(py),
        debias.then(|| out.p.into_pyarray(py)),
        debias.then(|| out.q.into_pyarray(py)),
        grad,
        out.n_iter,
        out.converged,
        out.error,
    ))
}

/// `sinkhorn_partial_transform`: (log_sum, shift, sum, wsum or None, wacc (n, d) or None).
type PartialOut<'py> = (
    Arr1<'py>,
    Arr1<'py>,
    Arr1<'py>,
    Option<Arr1<'py>>,
    Option<Bound<'py, PyArray2<f64>>>,
);

/// One (row block, column block) task of a distributed Sinkhorn divergence: the soft-min
/// state of the rows x (n, d) against the columns y (m, d) with column weights `w` and
/// potential `v` at `eps` (see `clouds::partial_transform`). Everything returned is
/// float64; `log_sum[i] = shift[i] + ln(sum[i])` (−inf for an empty sum).
#[pyfunction]
#[pyo3(signature = (x, y, w, v, p, eps, mean))]
#[allow(clippy::too_many_arguments)]
fn sinkhorn_partial_transform<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    w: PyReadonlyArray1<'py, f64>,
    v: PyReadonlyArray1<'py, f64>,
    p: u8,
    eps: f64,
    mean: bool,
) -> PyResult<PartialOut<'py>> {
    let xa = Arr2::extract(x, "x")?;
    let ya = Arr2::extract(y, "y")?;
    let ((n, d), (m, dy)) = (xa.shape(), ya.shape());
    let (wv, vv) = (w.as_slice()?, v.as_slice()?);
    let work = n.saturating_mul(m).saturating_mul(d + 8);
    let st = with_slices!(&xa, &ya, |xs, ys| {
        run(py, work, |stop| {
            clouds::partial_transform(
                Points::new(xs, n, d)?,
                Points::new(ys, m, dy)?,
                wv,
                vv,
                p,
                eps,
                mean,
                stop,
            )
        })?
    });
    let ls: Vec<f64> = (0..n).map(|i| st.log_sum(i)).collect();
    let (wsum, wacc) = if mean {
        (
            Some(st.wsum.into_pyarray(py)),
            Some(array2(py, st.wacc, n, d)?),
        )
    } else {
        (None, None)
    };
    Ok((
        ls.into_pyarray(py),
        st.shift.into_pyarray(py),
        st.sum.into_pyarray(py),
        wsum,
        wacc,
    ))
}

/// The ε schedule of `sinkhorn_divergence_clouds` (GeomLoss's), for a distributed solve
/// that runs the same steps.
#[pyfunction]
fn sinkhorn_schedule(eps0: f64, eps: f64, scaling: f64, p: u8) -> Vec<f64> {
    clouds::schedule(eps0, eps, scaling, p)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(sinkhorn_divergence_clouds, m)?)?;
    m.add_function(wrap_pyfunction!(sinkhorn_dense, m)?)?;
    m.add_function(wrap_pyfunction!(sinkhorn_batch_dense, m)?)?;
    m.add_function(wrap_pyfunction!(sinkhorn_ragged_dense, m)?)?;
    m.add_function(wrap_pyfunction!(sinkhorn_partial_transform, m)?)?;
    m.add_function(wrap_pyfunction!(sinkhorn_schedule, m)?)?;
    Ok(())
}
