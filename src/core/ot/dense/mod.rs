//! Sinkhorn on a dense cost matrix: balanced, or with KL-relaxed marginals.
//!
//! Two methods compute the same iterates (up to rounding):
//! - **log**: every half-step is an exact log-sum-exp over a row of `g/ε + ln b - C/ε`
//!   (one exp per entry), on `C` for the rows and on a transposed copy for the columns.
//! - **kernel**: the stabilised scaling form. The potentials are split as
//!   `f = f̃ + ε·ln u`, `g = g̃ + ε·ln v`; the kernel `K̃ = exp((f̃ ⊕ g̃ - C)/ε)` is stored
//!   and a half-step is one matrix-vector product (no exp per entry). When `|ln u|` or
//!   `|ln v|` exceeds `ABSORB`, the scalings are absorbed into `f̃, g̃` and `K̃` is
//!   rebuilt. A row or column whose kernel sum underflows (or is not finite) is updated
//!   exactly in the log domain instead and triggers an absorption, so the kernel form never
//!   turns an underflow into a wrong potential. Entries of `K̃` that underflow are below
//!   `e^-708` times the row's largest entry, which is of order one after an absorption.
//!
//! The stopping rule is the L1 violation of the marginal condition of the current plan,
//! measured for free during the row half-step (columns are exact after a column step).
//! Row and column passes use a fixed partition, so results do not depend on the number of
//! threads.
//!
//! Layout: this file holds the types, [`solve`] and [`solve_batch`]; `general` the
//! log/kernel half-steps and their workspace; `relax` the over-relaxation rule; `small`
//! the small-problem path of the batches; `bodies` the SIMD bodies; `finish` the plan and
//! the reported costs ([`finish`], and the one function both paths report through).

// `!(x > 0.0)` is deliberate: it also rejects NaN. Index loops mirror the formulas.
#![allow(clippy::neg_cmp_op_on_partial_ord, clippy::needless_range_loop)]

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use crate::core::error::{invalid, Result};
use crate::core::threads;

mod bodies;
mod finish;
mod general;
mod relax;
mod small;

pub use finish::finish;

/// Kernel sums (and, on the small path, sums and scalings) below this are out of the
/// safe range: recomputed exactly in the log domain, or the small path is left.
const TINY: f64 = 1e-250;

fn not_finite() -> crate::core::error::Error {
    invalid!("cost contains NaN or inf; every entry must be finite")
}

/// How the iterations are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Exact log-sum-exp half-steps.
    Log,
    /// The kernel form (with absorption and exact fallbacks).
    Kernel,
}

impl Method {
    /// Parses "log" or "kernel"; "auto" (the Python default) means the kernel form.
    pub fn parse(s: &str) -> Result<Method> {
        match s {
            "auto" | "kernel" => Ok(Method::Kernel),
            "log" => Ok(Method::Log),
            other => Err(invalid!(
                "method must be 'auto', 'log' or 'kernel'; got {other:?}"
            )),
        }
    }
}

/// One problem: weights, a row-major n×m cost, ε and the marginal relaxations.
#[derive(Clone, Copy, Debug)]
pub struct Problem<'a> {
    /// Row weights (n), non-negative.
    pub a: &'a [f64],
    /// Column weights (m), non-negative.
    pub b: &'a [f64],
    /// Row-major n×m costs, finite.
    pub cost: &'a [f64],
    /// Entropic regularisation ε > 0.
    pub eps: f64,
    /// Strength ρ of the KL penalty on the row marginal (`f64::INFINITY`: balanced).
    pub rho_a: f64,
    /// Same for the column marginal.
    pub rho_b: f64,
}

impl Problem<'_> {
    fn n(&self) -> usize {
        self.a.len()
    }
    fn m(&self) -> usize {
        self.b.len()
    }

    /// Checks shapes and values (the Python layer checks first, with nicer messages).
    pub fn validate(&self) -> Result<()> {
        self.validate_but_cost()?;
        let mut big = 0.0f64;
        for &c in self.cost {
            if !c.is_finite() {
                return Err(not_finite());
            }
            big = big.max(c.abs());
        }
        check_resolution(self.eps, big)
    }

    /// [`Problem::validate`] without the scan of the costs (for callers that check their
    /// finiteness in a pass they make anyway).
    fn validate_but_cost(&self) -> Result<()> {
        let (n, m) = (self.n(), self.m());
        if n == 0 || m == 0 {
            return Err(invalid!("a and b must be non-empty"));
        }
        if n.checked_mul(m) != Some(self.cost.len()) {
            return Err(invalid!(
                "cost has {} entries, expected len(a)*len(b) = {n}*{m}",
                self.cost.len()
            ));
        }
        for (name, w) in [("a", self.a), ("b", self.b)] {
            if w.iter().any(|x| !(x.is_finite() && *x >= 0.0)) {
                return Err(invalid!("{name} must be finite and non-negative"));
            }
            if !(w.iter().sum::<f64>() > 0.0) {
                return Err(invalid!("{name} must not sum to zero"));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(invalid!(
                "reg must be positive and finite; got {}",
                self.eps
            ));
        }
        for (name, r) in [
            ("reg_m (rows)", self.rho_a),
            ("reg_m (columns)", self.rho_b),
        ] {
            if r.is_nan() || r <= 0.0 {
                return Err(invalid!("{name} must be positive (or inf); got {r}"));
            }
        }
        Ok(())
    }
}

/// Rejects an ε below the float64 resolution of costs of largest magnitude `cmax`.
///
/// Costs near `cmax` are stored to within `ulp(cmax) ≈ 2.2e-16·cmax`, and so are the
/// potentials built from them; the plan's exponents `(f_i + g_j − C_ij)/ε` then carry
/// rounding errors of `2.2e-16·cmax/ε`, more than 1 (a factor e on every entry) below
/// `ε = 2.2e-16·cmax`: the result would be noise, whatever the solver does. Above
/// `ε = 1e12·cmax` the log-sum-exps, of order ε, leave rounding errors of `2e-16·ε`
/// in the potentials and costs, more than `1e-4·cmax`: rejected too.
pub fn check_resolution(eps: f64, cmax: f64) -> Result<()> {
    let floor = f64::EPSILON * cmax;
    if eps < floor {
        return Err(invalid!(
            "reg = {eps:e} is below the float64 resolution of this cost: its largest \
             magnitude is {cmax:e}, so costs (and the potentials) are only known to \
             {floor:.3e} (2.2e-16 x max|cost|), and the plan's exponents \
             (f_i + g_j - cost_ij)/reg would carry rounding errors above 1: the result \
             would be noise. The smallest meaningful reg for this cost is {floor:.3e}; \
             use at least that (for a balanced problem, subtracting a constant from the \
             cost does not change the plan and may lower max|cost|)"
        ));
    }
    if eps > 1e12 * cmax && cmax > 0.0 {
        return Err(invalid!(
            "reg = {eps:e} is too large for this cost (largest magnitude {cmax:e}): above \
             1e12 x max|cost| the plan is a⊗b to float64 precision, and the potentials and \
             the entropic cost would be rounding noise (their errors are about \
             2e-16 x reg). Use reg <= {:.3e}",
            1e12 * cmax
        ));
    }
    Ok(())
}

/// Iteration controls.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Most iterations (one iteration = a row and a column half-step).
    pub max_iter: usize,
    /// Stop when the L1 marginal violation is at most this.
    pub tol: f64,
    /// Log or kernel form.
    pub method: Method,
    /// ε-scaling: start at max|C| and multiply ε by this factor (in (0, 1)) per iteration
    /// until it reaches the target; `None`: start at the target.
    pub scaling: Option<f64>,
    /// Over-relaxation factor ω in [1, 2) (0: chosen automatically): each half-step moves
    /// the potential by ω times the Sinkhorn step. See `relax::Relax` for the safeguard.
    pub omega: f64,
    /// Parallel passes (false inside a batch, where problems run in parallel).
    pub parallel: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_iter: 1000,
            tol: 1e-9,
            method: Method::Kernel,
            scaling: None,
            omega: 1.0,
            parallel: true,
        }
    }
}

/// Potentials and iteration record.
#[derive(Clone, Debug, Default)]
pub struct Solved {
    /// Row potential (n).
    pub f: Vec<f64>,
    /// Column potential (m).
    pub g: Vec<f64>,
    /// Iterations run (including the ε-scaling ones).
    pub n_iter: usize,
    /// Last measured L1 marginal violation (rows, after a column step).
    pub error: f64,
    /// The tolerance was met.
    pub converged: bool,
}

/// The plan, its costs and marginal error, from potentials.
#[derive(Clone, Debug, Default)]
pub struct Finished {
    /// Row-major n×m plan (empty unless asked for).
    pub plan: Vec<f64>,
    /// ⟨C, P⟩.
    pub linear_cost: f64,
    /// ⟨C,P⟩ + ε KL(P|a⊗b) + ρ_a KL(P1|a) + ρ_b KL(Pᵀ1|b) (generalised KL, with mass terms;
    /// the marginal terms vanish in the balanced case).
    pub cost: f64,
    /// Σ_i |r_i − a_i e^{−f_i/ρ_a}| + Σ_j |c_j − b_j e^{−g_j/ρ_b}| for the plan's marginals r, c.
    pub marginal_error: f64,
    /// Total mass of the plan.
    pub mass: f64,
}

/// ε schedule: max|C|·s^k while above the target, then the target.
fn schedule(p: &Problem<'_>, scaling: Option<f64>) -> Result<Vec<f64>> {
    let mut eps = Vec::new();
    if let Some(s) = scaling {
        if !(s > 0.0 && s < 1.0) {
            return Err(invalid!("scaling must be in (0, 1); got {s}"));
        }
        let cmax = p.cost.iter().fold(0.0f64, |m, c| m.max(c.abs()));
        let mut e = cmax;
        while e > p.eps && eps.len() < 10_000 {
            eps.push(e);
            e *= s;
        }
    }
    eps.push(p.eps);
    Ok(eps)
}

/// Solves the problem from `init` (or zero potentials).
pub fn solve(
    p: &Problem<'_>,
    init: Option<(&[f64], &[f64])>,
    opts: &Options,
    stop: &AtomicBool,
) -> Result<Solved> {
    p.validate()?;
    let (n, m) = (p.n(), p.m());
    let (mut f, mut g) = match init {
        Some((f0, g0)) => {
            if f0.len() != n || g0.len() != m {
                return Err(invalid!(
                    "init potentials have lengths ({}, {}), expected ({n}, {m})",
                    f0.len(),
                    g0.len()
                ));
            }
            if f0.iter().chain(g0).any(|x| !x.is_finite()) {
                return Err(invalid!("init potentials must be finite"));
            }
            (f0.to_vec(), g0.to_vec())
        }
        None => (vec![0.0; n], vec![0.0; m]),
    };
    if !(opts.tol >= 0.0) {
        return Err(invalid!("tol must be non-negative; got {}", opts.tol));
    }
    if !((1.0..2.0).contains(&opts.omega) || opts.omega == 0.0) {
        return Err(invalid!(
            "omega must be in [1, 2) (or 0: automatic); got {}",
            opts.omega
        ));
    }
    let epss = schedule(p, opts.scaling)?;
    let last = epss.len() - 1;
    let mut solved = Solved::default();
    let mut n_iter = 0usize;
    let mut err = f64::INFINITY;
    let mut converged = false;
    let mut ws = general::Workspace::new(p, opts.method, opts.parallel, stop)?;
    for (k, &eps) in epss.iter().enumerate() {
        let budget = if k == last {
            opts.max_iter.saturating_sub(n_iter)
        } else {
            1.min(opts.max_iter.saturating_sub(n_iter))
        };
        let omega = if k == last { opts.omega } else { 1.0 };
        let (it, e, c) = ws.run(p, eps, &mut f, &mut g, budget, opts.tol, omega, k == last)?;
        n_iter += it;
        err = e;
        converged = c;
    }
    solved.f = f;
    solved.g = g;
    solved.n_iter = n_iter;
    solved.error = err;
    solved.converged = converged;
    Ok(solved)
}

/// Solves `B` problems of one size n×m in parallel: [`solve_ragged`] with every shape
/// n×m (`a` is (B, n) and `b` (B, m), row-major).
#[allow(clippy::too_many_arguments)]
pub fn solve_batch<'c>(
    a: &[f64],
    b: &[f64],
    n: usize,
    m: usize,
    nprob: usize,
    cost: &(dyn Fn(usize) -> std::borrow::Cow<'c, [f64]> + Sync),
    eps: f64,
    rho: f64,
    opts: &Options,
    want_plan: bool,
    stop: &AtomicBool,
) -> Result<Vec<(Solved, Finished)>> {
    if nprob.checked_mul(n) != Some(a.len()) || nprob.checked_mul(m) != Some(b.len()) {
        return Err(invalid!("batch weights have the wrong length"));
    }
    let shapes = crate::core::error::try_vec(nprob, (n, m), "the number of problems")?;
    solve_ragged(a, b, &shapes, cost, eps, rho, opts, want_plan, stop)
}

/// Solves problems of any sizes in one parallel pass, each serial inside: problem k is
/// `shapes[k]` = (n_k, m_k), its weights the next n_k entries of `a` and m_k of `b` (the
/// problems' weights concatenated), its row-major n_k×m_k cost `cost(k)` (asked for when
/// the problem is solved, so a gathered or widened copy lives only while it runs).
/// Returns each problem's solve and finish, in problem order.
///
/// Every problem runs [`solve_one`], so its result is bitwise the one it gets alone (the
/// task's reused buffers are resized to each problem and fully rewritten before they are
/// read). Scheduling: the problems are taken largest first (n_k·m_k, ties in index order)
/// from one shared counter by one task per thread (longest-processing-time list
/// scheduling), each task reusing its small-path buffers; a problem's own buffers are
/// O(n_k·m_k). On an error the tasks stop taking problems, and the error of the lowest
/// failing problem index among those run is returned (its message names the problem).
#[allow(clippy::too_many_arguments)]
pub fn solve_ragged<'c>(
    a: &[f64],
    b: &[f64],
    shapes: &[(usize, usize)],
    cost: &(dyn Fn(usize) -> std::borrow::Cow<'c, [f64]> + Sync),
    eps: f64,
    rho: f64,
    opts: &Options,
    want_plan: bool,
    stop: &AtomicBool,
) -> Result<Vec<(Solved, Finished)>> {
    use crate::core::error::{try_vec, Error};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let nprob = shapes.len();
    // Offsets of each problem's weights.
    let mut offs = try_vec(nprob + 1, (0usize, 0usize), "the number of problems")?;
    for (k, &(n, m)) in shapes.iter().enumerate() {
        let (ra, rb) = offs[k];
        match (ra.checked_add(n), rb.checked_add(m), n.checked_mul(m)) {
            (Some(x), Some(y), Some(_)) => offs[k + 1] = (x, y),
            _ => return Err(invalid!("problem {k}: its size {n}x{m} overflows")),
        }
    }
    if offs[nprob] != (a.len(), b.len()) {
        return Err(invalid!(
            "ragged batch weights have lengths ({}, {}), the shapes need {:?}",
            a.len(),
            b.len(),
            offs[nprob]
        ));
    }
    let mut o = *opts;
    o.parallel = false;
    // Largest first (stable: equal sizes keep their order).
    let mut order: Vec<usize> = try_vec(nprob, 0usize, "the number of problems")?;
    order.iter_mut().enumerate().for_each(|(i, x)| *x = i);
    order.sort_by_key(|&k| std::cmp::Reverse(shapes[k].0 * shapes[k].1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    type Done = (Solved, Finished);
    /// One task's solved problems (by index), and the problem it failed on.
    type Part = (Vec<(usize, Done)>, Option<(usize, Error)>);
    let parts: Vec<Part> = threads::install(|| {
        let tasks = rayon::current_num_threads().clamp(1, nprob.max(1));
        (0..tasks)
            .into_par_iter()
            .with_max_len(1)
            .map(|_| {
                let mut ws = small::SmallWs::default();
                let mut done = Vec::new();
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&k) = order.get(i) else { break };
                    if let Err(e) = threads::check(stop) {
                        failed.store(true, Ordering::Relaxed);
                        return (done, Some((k, e)));
                    }
                    let (ra, rb) = offs[k];
                    let (rn, rm) = offs[k + 1];
                    let c = cost(k);
                    let p = Problem {
                        a: &a[ra..rn],
                        b: &b[rb..rm],
                        cost: &c,
                        eps,
                        rho_a: rho,
                        rho_b: rho,
                    };
                    match solve_one(k, &p, &o, &mut ws, want_plan, stop) {
                        Ok(r) => done.push((k, r)),
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            return (done, Some((k, e)));
                        }
                    }
                }
                (done, None)
            })
            .collect()
    })?;
    let mut first: Option<(usize, Error)> = None;
    let mut out: Vec<Option<Done>> = Vec::new();
    out.try_reserve_exact(nprob)
        .map_err(|_| Error::OutOfMemory(format!("{nprob} results")))?;
    out.resize_with(nprob, || None);
    for (done, err) in parts {
        for (k, r) in done {
            out[k] = Some(r);
        }
        if let Some((k, e)) = err {
            if first.as_ref().is_none_or(|(j, _)| k < *j) {
                first = Some((k, e));
            }
        }
    }
    if let Some((_, e)) = first {
        return Err(e);
    }
    out.into_iter()
        .map(|r| r.ok_or_else(|| invalid!("a problem of the batch was not solved")))
        .collect()
}

/// One problem of a batch (index `k`, for error messages), serial: the small-problem path
/// where it applies (balanced, not `Method::Log`, see `small::solve_small`), else [`solve`]
/// from zero potentials and [`finish`]. The uniform and the ragged batches both run this.
fn solve_one(
    k: usize,
    p: &Problem<'_>,
    o: &Options,
    ws: &mut small::SmallWs,
    want_plan: bool,
    stop: &AtomicBool,
) -> Result<(Solved, Finished)> {
    // Errors about this problem's reg name the problem.
    let name = |e: crate::core::error::Error| match e {
        crate::core::error::Error::InvalidArgument(msg) if msg.starts_with("reg") => {
            invalid!("problem {k}: {msg}")
        }
        e => e,
    };
    if o.method != Method::Log {
        if let Some(done) = small::solve_small(p, o, ws, want_plan, stop).map_err(name)? {
            return Ok(done);
        }
    }
    let s = solve(p, None, o, stop).map_err(name)?;
    let fin = finish(p, &s.f, &s.g, want_plan, false, stop)?;
    Ok((s, fin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::unit_vec;

    /// A balanced problem.
    pub(super) fn balanced<'a>(
        a: &'a [f64],
        b: &'a [f64],
        cost: &'a [f64],
        eps: f64,
    ) -> Problem<'a> {
        Problem {
            a,
            b,
            cost,
            eps,
            rho_a: f64::INFINITY,
            rho_b: f64::INFINITY,
        }
    }

    pub(super) fn problem_data(n: usize, m: usize, seed: u64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let x = unit_vec(seed, 2 * n);
        let y = unit_vec(seed + 1, 2 * m);
        let mut c = vec![0.0; n * m];
        for i in 0..n {
            for j in 0..m {
                c[i * m + j] =
                    (x[2 * i] - y[2 * j]).powi(2) + (x[2 * i + 1] - y[2 * j + 1]).powi(2);
            }
        }
        let mut a = unit_vec(seed + 2, n);
        let mut b = unit_vec(seed + 3, m);
        let (sa, sb): (f64, f64) = (a.iter().sum(), b.iter().sum());
        a.iter_mut().for_each(|x| *x /= sa);
        b.iter_mut().for_each(|x| *x /= sb);
        (a, b, c)
    }

    /// Plain Sinkhorn in the scaling domain, many iterations (the oracle).
    fn naive(a: &[f64], b: &[f64], c: &[f64], eps: f64, iters: usize) -> Vec<f64> {
        let (n, m) = (a.len(), b.len());
        let k: Vec<f64> = c.iter().map(|x| (-x / eps).exp()).collect();
        let (mut u, mut v) = (vec![1.0; n], vec![1.0; m]);
        for _ in 0..iters {
            for i in 0..n {
                u[i] = a[i] / (0..m).map(|j| k[i * m + j] * v[j]).sum::<f64>();
            }
            for j in 0..m {
                v[j] = b[j] / (0..n).map(|i| k[i * m + j] * u[i]).sum::<f64>();
            }
        }
        (0..n * m).map(|ij| u[ij / m] * k[ij] * v[ij % m]).collect()
    }

    #[test]
    fn log_and_kernel_match_naive() {
        let stop = AtomicBool::new(false);
        let (n, m) = (37, 300);
        let (a, b, c) = problem_data(n, m, 5);
        let eps = 0.05;
        let want = naive(&a, &b, &c, eps, 3000);
        let p = balanced(&a, &b, &c, eps);
        for method in [Method::Log, Method::Kernel] {
            for omega in [1.0, 1.5, 0.0] {
                let opts = Options {
                    method,
                    tol: 1e-12,
                    max_iter: 5000,
                    omega,
                    ..Default::default()
                };
                let s = solve(&p, None, &opts, &stop).unwrap();
                assert!(s.converged, "{method:?} {omega}");
                let fin = finish(&p, &s.f, &s.g, true, true, &stop).unwrap();
                assert!(fin.marginal_error <= 1e-11, "{}", fin.marginal_error);
                for (x, y) in fin.plan.iter().zip(&want) {
                    assert!((x - y).abs() <= 1e-10 * y.max(1e-300) + 1e-16, "{x} vs {y}");
                }
            }
        }
    }

    #[test]
    fn small_eps_does_not_underflow_and_threads_agree() {
        let stop = AtomicBool::new(false);
        let (n, m) = (90, 70);
        let (mut a, b, c) = problem_data(n, m, 9);
        a[3] = 0.0;
        let s: f64 = a.iter().sum();
        a.iter_mut().for_each(|x| *x /= s);
        let p = balanced(&a, &b, &c, 2e-4);
        let opts = Options {
            tol: 1e-9,
            max_iter: 100_000,
            scaling: Some(0.5),
            ..Default::default()
        };
        let s1 = solve(&p, None, &opts, &stop).unwrap();
        assert!(s1.converged);
        assert!(s1.f.iter().chain(&s1.g).all(|x| x.is_finite()));
        let fin = finish(&p, &s1.f, &s1.g, true, true, &stop).unwrap();
        assert!(fin.marginal_error <= 1e-9 * 1.01 && fin.plan.iter().all(|x| x.is_finite()));
        threads::set_num_threads(1).unwrap();
        let s2 = solve(&p, None, &opts, &stop).unwrap();
        threads::set_num_threads(2).unwrap();
        assert_eq!(s1.f, s2.f);
        let log = Options {
            method: Method::Log,
            ..opts
        };
        let s3 = solve(&p, None, &log, &stop).unwrap();
        assert!(s3.converged);
        let fin3 = finish(&p, &s3.f, &s3.g, false, true, &stop).unwrap();
        assert!((fin3.cost - fin.cost).abs() < 1e-8 * fin.cost.abs());
    }

    #[test]
    fn unbalanced_fixed_point() {
        let stop = AtomicBool::new(false);
        let (n, m) = (20, 30);
        let (a, mut b, c) = problem_data(n, m, 2);
        b.iter_mut().for_each(|x| *x *= 2.0);
        let p = Problem {
            a: &a,
            b: &b,
            cost: &c,
            eps: 0.1,
            rho_a: 0.5,
            rho_b: 0.5,
        };
        let opts = Options {
            tol: 1e-12,
            max_iter: 10_000,
            ..Default::default()
        };
        let s = solve(&p, None, &opts, &stop).unwrap();
        assert!(s.converged);
        let fin = finish(&p, &s.f, &s.g, true, false, &stop).unwrap();
        // Optimality: P1 = a e^{-f/ρ}.
        for i in 0..n {
            let r: f64 = fin.plan[i * m..(i + 1) * m].iter().sum();
            assert!((r - a[i] * (-s.f[i] / 0.5).exp()).abs() < 1e-11);
        }
    }

    #[test]
    fn reg_outside_the_cost_resolution_is_rejected_on_every_path() {
        let (a, b, c) = problem_data(6, 5, 3);
        let cmax = c.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let stop = AtomicBool::new(false);
        let o = Options {
            max_iter: 3,
            ..Default::default()
        };
        for (eps, ok) in [
            (f64::EPSILON * cmax * 0.99, false),
            (f64::EPSILON * cmax * 1.01, true),
            (1e12 * cmax * 0.99, true),
            (1e12 * cmax * 1.01, false),
        ] {
            let p = balanced(&a, &b, &c, eps);
            assert_eq!(solve(&p, None, &o, &stop).is_ok(), ok, "eps {eps}");
            let get = |_k: usize| std::borrow::Cow::Borrowed(&c[..]);
            let r = solve_batch(&a, &b, 6, 5, 1, &get, eps, f64::INFINITY, &o, false, &stop);
            match r {
                Ok(_) => assert!(ok),
                Err(e) => {
                    assert!(!ok);
                    assert!(e.to_string().starts_with("problem 0: reg = "), "{e}");
                }
            }
        }
        // All-zero costs: no resolution limit.
        let z = vec![0.0; 30];
        let p = balanced(&a, &b, &z, 1e-300);
        assert!(solve(&p, None, &o, &stop).is_ok());
    }

    /// Mixed sizes (1×1 and very unequal ones), zero weights, each method, balanced and
    /// unbalanced: every problem of one ragged pass is bitwise the problem solved alone.
    #[test]
    fn ragged_pass_equals_each_problem_alone() {
        let shapes = [
            (1, 1),
            (3, 5),
            (70, 2),
            (2, 70),
            (17, 17),
            (3, 5),
            (40, 33),
            (1, 9),
        ];
        let mut a = Vec::new();
        let mut b = Vec::new();
        let mut costs = Vec::new();
        for (k, &(n, m)) in shapes.iter().enumerate() {
            let (mut ak, bk, ck) = problem_data(n, m, 11 + 4 * k as u64);
            if n > 2 {
                ak[1] = 0.0;
                let s: f64 = ak.iter().sum();
                ak.iter_mut().for_each(|x| *x /= s);
            }
            a.extend(ak);
            b.extend(bk);
            costs.push(ck);
        }
        let stop = AtomicBool::new(false);
        let get = |k: usize| std::borrow::Cow::Borrowed(&costs[k][..]);
        for (method, rho, omega) in [
            (Method::Kernel, f64::INFINITY, 1.0),
            (Method::Kernel, f64::INFINITY, 0.0),
            (Method::Log, f64::INFINITY, 1.0),
            (Method::Kernel, 0.5, 1.0),
        ] {
            let o = Options {
                method,
                omega,
                max_iter: 400,
                ..Default::default()
            };
            let all = solve_ragged(&a, &b, &shapes, &get, 0.05, rho, &o, true, &stop).unwrap();
            let (mut ra, mut rb) = (0, 0);
            for (k, &(n, m)) in shapes.iter().enumerate() {
                let one = |_j: usize| std::borrow::Cow::Borrowed(&costs[k][..]);
                let (ak, bk) = (&a[ra..ra + n], &b[rb..rb + m]);
                let alone = solve_batch(ak, bk, n, m, 1, &one, 0.05, rho, &o, true, &stop).unwrap();
                let ((s1, f1), (s2, f2)) = (&all[k], &alone[0]);
                assert_eq!((&s1.f, &s1.g, s1.n_iter), (&s2.f, &s2.g, s2.n_iter), "{k}");
                assert_eq!(s1.error.to_bits(), s2.error.to_bits());
                assert_eq!(f1.plan, f2.plan);
                assert_eq!(f1.cost.to_bits(), f2.cost.to_bits());
                assert_eq!(f1.marginal_error.to_bits(), f2.marginal_error.to_bits());
                (ra, rb) = (ra + n, rb + m);
            }
        }
        // Weights that do not match the shapes, and a raised stop flag.
        let o = Options::default();
        let short = &a[1..];
        assert!(solve_ragged(short, &b, &shapes, &get, 0.05, 1.0, &o, false, &stop).is_err());
        let raised = AtomicBool::new(true);
        assert_eq!(
            solve_ragged(&a, &b, &shapes, &get, 0.05, 1.0, &o, false, &raised).unwrap_err(),
            crate::core::Error::Cancelled
        );
        // An error names the failing problem (the lowest index among those that failed).
        let bad = |k: usize| {
            let mut c = costs[k].clone();
            if k == 4 || k == 6 {
                c[0] = 1e30;
            }
            std::borrow::Cow::Owned(c)
        };
        let e = solve_ragged(&a, &b, &shapes, &bad, 1e-3, f64::INFINITY, &o, false, &stop);
        let msg = e.unwrap_err().to_string();
        assert!(
            msg.starts_with("problem 4: reg") || msg.starts_with("problem 6: reg"),
            "{msg}"
        );
    }

    #[test]
    fn stop_flag_cancels() {
        let (a, b, c) = problem_data(10, 10, 1);
        let p = balanced(&a, &b, &c, 0.1);
        let stop = AtomicBool::new(true);
        assert_eq!(
            solve(&p, None, &Options::default(), &stop).unwrap_err(),
            crate::core::Error::Cancelled
        );
        let ok = AtomicBool::new(false);
        let bad = Problem { eps: -1.0, ..p };
        assert!(solve(&bad, None, &Options::default(), &ok).is_err());
    }
}
