//! Sinkhorn between point clouds, with costs computed on the fly: the debiased Sinkhorn
//! divergence.
//!
//! Every half-step is a soft-min over the other cloud,
//! `f_i = −ε ln Σ_j exp(ln b_j + g_j/ε − C(x_i, y_j)/ε)`, which is exactly a
//! [`KernelRows`] reduction in log mode: the pair map returns `−C(d²)/ε` and the column
//! log-weights are `ln b_j + g_j/ε`. Nothing of size n×m is stored: memory is that of the
//! engine (the clouds, their norms or SoA copies, one tile per task) plus the potentials.

use std::sync::atomic::AtomicBool;

use crate::core::error::{invalid, Result};
use crate::core::pairwise::reduce::{KernelRows, PairMap, RowStats};
use crate::core::pairwise::{reduce_rows, Float, Points};

/// `−C/ε` for C = |x−y|^p, p ∈ {1, 2}, as a function of the squared distance.
#[derive(Clone, Copy)]
struct NegCost {
    p: u8,
    inv_eps: f64,
}

impl PairMap for NegCost {
    const LOG: bool = true;
    #[inline(always)]
    fn value(&self, d2: f64) -> f64 {
        if self.p == 2 {
            -d2 * self.inv_eps
        } else {
            -d2.sqrt() * self.inv_eps
        }
    }
    #[inline(always)]
    fn mean_factor(&self, d2: f64) -> f64 {
        // ∇_x C = c'(r)·(x − y)/r: factor 2 for p = 2 (applied by the caller), 1/r for p = 1.
        if self.p == 2 {
            1.0
        } else if d2 > 0.0 {
            1.0 / d2.sqrt()
        } else {
            0.0
        }
    }
}

/// Options of [`divergence`].
#[derive(Clone, Copy, Debug)]
pub struct DivOptions {
    /// Exponent of the cost |x − y|^p (1 or 2).
    pub p: u8,
    /// Target ε > 0.
    pub eps: f64,
    /// Starting ε of the annealing (the diameter of the data to the power p).
    pub eps0: f64,
    /// Annealing factor in (0, 1): ε_k = eps0 · scaling^(p k) (GeomLoss's σ schedule).
    pub scaling: f64,
    /// Subtract the self terms (the Sinkhorn divergence); otherwise OT_ε(a, b).
    pub debias: bool,
    /// Most iterations at the target ε after the annealing.
    pub max_iter: usize,
    /// Tolerance on the L1 marginal violation of each of the (two or three) problems.
    pub tol: f64,
    /// Also return the gradient with respect to x.
    pub grad: bool,
}

/// Results of [`divergence`].
#[derive(Clone, Debug, Default)]
pub struct DivOutput {
    /// S_ε(a, b) (or OT_ε(a, b) without debiasing).
    pub value: f64,
    /// Potential of the cross problem on x (n).
    pub f: Vec<f64>,
    /// Potential of the cross problem on y (m).
    pub g: Vec<f64>,
    /// Symmetric potential of the x self problem (n; empty without debiasing).
    pub p: Vec<f64>,
    /// Symmetric potential of the y self problem (m; empty without debiasing).
    pub q: Vec<f64>,
    /// ∇_x of the value, row-major n×d (empty unless asked for).
    pub grad: Vec<f64>,
    /// Iterations (annealing steps plus iterations at the target ε).
    pub n_iter: usize,
    /// Largest of the problems' marginal violations at the last check.
    pub error: f64,
    /// Every problem met the tolerance.
    pub converged: bool,
}

/// Soft-min over `cols`: `out_i = ln Σ_j exp(h_j − C(x_i, y_j)/ε)` (with `mean`, also the
/// statistics for the gradient).
fn log_sums<T: Float>(
    rows: Points<'_, T>,
    cols: Points<'_, T>,
    h: &[f64],
    map: NegCost,
    mean: Option<&[f64]>,
    stop: &AtomicBool,
) -> Result<RowStats> {
    let red = KernelRows {
        f: map,
        scales: &[1.0],
        w: h,
        exclude_self: false,
        sumsq: false,
        mean,
        d: rows.d,
    };
    Ok(RowStats::from_states(
        1,
        reduce_rows(rows, cols, &red, stop)?,
    ))
}

/// The c-transform `T(y)_i = −ε ln Σ_j w_j e^{(y_j − C_ij)/ε}`.
fn transform<T: Float>(
    rows: Points<'_, T>,
    cols: Points<'_, T>,
    logw: &[f64],
    y: &[f64],
    map: NegCost,
    eps: f64,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    let h: Vec<f64> = logw.iter().zip(y).map(|(l, v)| l + v / eps).collect();
    let st = log_sums(rows, cols, &h, map, None, stop)?;
    Ok((0..rows.n).map(|i| -eps * st.log_sum(i)).collect())
}

/// Σ_i w_i |e^{(x_i − t_i)/ε} − 1|: the L1 marginal violation of a plan whose other side is
/// exact, when `t` is the transform of that side and `x` the current potential.
fn violation(w: &[f64], x: &[f64], t: &[f64], eps: f64) -> f64 {
    w.iter()
        .zip(x.iter().zip(t))
        .map(|(wi, (xi, ti))| {
            if *wi > 0.0 {
                wi * ((xi - ti) / eps).exp_m1().abs()
            } else {
                0.0
            }
        })
        .sum()
}

/// Conditional expectation of ∇_x C(x_i, ·) under the plan rows (mean statistics of a pass).
fn grad_rows<T: Float>(
    x: Points<'_, T>,
    st: &RowStats,
    p: u8,
    out: &mut [f64],
    sign: f64,
    w: &[f64],
) {
    let d = x.d;
    let c = if p == 2 { 2.0 } else { 1.0 };
    for i in 0..x.n {
        if st.sum[i] > 0.0 && w[i] > 0.0 {
            let row = x.row(i);
            for k in 0..d {
                let e = (row[k].to_f64() * st.wsum[i] - st.wacc[i * d + k]) / st.sum[i];
                out[i * d + k] += sign * w[i] * c * e;
            }
        }
    }
}

/// The debiased Sinkhorn divergence
/// `S_ε = OT_ε(a,b) − ½ OT_ε(a,a) − ½ OT_ε(b,b)` between weighted clouds (weights summing
/// to one), with `OT_ε = min ⟨C,P⟩ + ε KL(P | a⊗b)` and `C = |x − y|^p`.
///
/// ε is annealed from `eps0` down to `eps` with one iteration per value (cross problem:
/// alternate updates; self problems: symmetric averaged updates `p ← (p + T(p))/2`), then
/// iterations continue at `eps` until every problem's L1 marginal violation is at most
/// `tol`. Memory: O((n + m)·d).
pub fn divergence<T: Float>(
    x: Points<'_, T>,
    y: Points<'_, T>,
    a: &[f64],
    b: &[f64],
    opts: &DivOptions,
    stop: &AtomicBool,
) -> Result<DivOutput> {
    if x.d != y.d {
        return Err(invalid!(
            "x and y must have the same dimension; got {} and {}",
            x.d,
            y.d
        ));
    }
    if a.len() != x.n || b.len() != y.n {
        return Err(invalid!("weights must have one entry per point"));
    }
    if opts.p != 1 && opts.p != 2 {
        return Err(invalid!("p must be 1 or 2; got {}", opts.p));
    }
    if !(opts.eps > 0.0 && opts.eps.is_finite()) {
        return Err(invalid!(
            "eps must be positive and finite; got {}",
            opts.eps
        ));
    }
    if !(opts.scaling > 0.0 && opts.scaling < 1.0) {
        return Err(invalid!("scaling must be in (0, 1); got {}", opts.scaling));
    }
    let la: Vec<f64> = a.iter().map(|v| v.ln()).collect();
    let lb: Vec<f64> = b.iter().map(|v| v.ln()).collect();
    let mut epss = Vec::new();
    let ratio = opts.scaling.powi(opts.p as i32);
    let mut e = opts.eps0;
    while e > opts.eps && epss.len() < 10_000 {
        epss.push(e);
        e *= ratio;
    }
    let map = |eps: f64| NegCost {
        p: opts.p,
        inv_eps: 1.0 / eps,
    };
    let (n, m) = (x.n, y.n);
    let (mut f, mut g) = (vec![0.0; n], vec![0.0; m]);
    let (mut pp, mut qq) = (vec![0.0; n], vec![0.0; m]);
    let mut n_iter = 0;
    // Annealing: one update of each problem per ε.
    for &eps in &epss {
        f = transform(x, y, &lb, &g, map(eps), eps, stop)?;
        g = transform(y, x, &la, &f, map(eps), eps, stop)?;
        if opts.debias {
            let tp = transform(x, x, &la, &pp, map(eps), eps, stop)?;
            let tq = transform(y, y, &lb, &qq, map(eps), eps, stop)?;
            for (v, t) in pp.iter_mut().zip(&tp) {
                *v = 0.5 * (*v + t);
            }
            for (v, t) in qq.iter_mut().zip(&tq) {
                *v = 0.5 * (*v + t);
            }
        }
        n_iter += 1;
    }
    // At the target ε: iterate each problem until its marginal violation meets tol.
    let eps = opts.eps;
    let mp = map(eps);
    let (mut done_xy, mut done_x, mut done_y) = (false, !opts.debias, !opts.debias);
    let (mut e_xy, mut e_x, mut e_y) = (f64::INFINITY, 0.0f64, 0.0f64);
    let mut first = true;
    let mut it = 0;
    while it < opts.max_iter && !(done_xy && done_x && done_y) {
        if !done_xy {
            let fnew = transform(x, y, &lb, &g, mp, eps, stop)?;
            if !first {
                // (f, g) has exact columns (g = T(f)); its rows are off by e^{(f − T(g))/ε}.
                e_xy = violation(a, &f, &fnew, eps);
                if e_xy <= opts.tol {
                    done_xy = true;
                }
            }
            if !done_xy {
                f = fnew;
                g = transform(y, x, &la, &f, mp, eps, stop)?;
            }
        }
        if !done_x {
            let t = transform(x, x, &la, &pp, mp, eps, stop)?;
            // The symmetric plan (p, p) is off by e^{(p − T(p))/ε} on both sides.
            e_x = 2.0 * violation(a, &pp, &t, eps);
            if e_x <= opts.tol {
                done_x = true;
            } else {
                for (v, tv) in pp.iter_mut().zip(&t) {
                    *v = 0.5 * (*v + tv);
                }
            }
        }
        if !done_y {
            let t = transform(y, y, &lb, &qq, mp, eps, stop)?;
            e_y = 2.0 * violation(b, &qq, &t, eps);
            if e_y <= opts.tol {
                done_y = true;
            } else {
                for (v, tv) in qq.iter_mut().zip(&t) {
                    *v = 0.5 * (*v + tv);
                }
            }
        }
        first = false;
        it += 1;
    }
    n_iter += it;
    let dot = |w: &[f64], v: &[f64]| -> f64 { w.iter().zip(v).map(|(a, b)| a * b).sum() };
    let mut value = dot(a, &f) + dot(b, &g);
    if opts.debias {
        value -= dot(a, &pp) + dot(b, &qq);
    }
    let mut grad = Vec::new();
    if opts.grad {
        grad = vec![0.0; n * x.d];
        let ycols = y.to_f64_vec();
        let h: Vec<f64> = lb.iter().zip(&g).map(|(l, v)| l + v / eps).collect();
        let st = log_sums(x, y, &h, mp, Some(&ycols), stop)?;
        grad_rows(x, &st, opts.p, &mut grad, 1.0, a);
        if opts.debias {
            let xcols = x.to_f64_vec();
            let h: Vec<f64> = la.iter().zip(&pp).map(|(l, v)| l + v / eps).collect();
            let st = log_sums(x, x, &h, mp, Some(&xcols), stop)?;
            grad_rows(x, &st, opts.p, &mut grad, -1.0, a);
        }
    }
    let error = e_xy.max(e_x).max(e_y);
    Ok(DivOutput {
        value,
        f,
        g,
        p: if opts.debias { pp } else { Vec::new() },
        q: if opts.debias { qq } else { Vec::new() },
        grad,
        n_iter,
        error,
        converged: done_xy && done_x && done_y,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ot::dense::{self, Options, Problem};

    fn lcg(seed: u64, n: usize) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 11) as f64 / (1u64 << 53) as f64
            })
            .collect()
    }

    fn dense_ot(x: &[f64], y: &[f64], d: usize, a: &[f64], b: &[f64], p: u8, eps: f64) -> f64 {
        let (n, m) = (a.len(), b.len());
        let mut c = vec![0.0; n * m];
        for i in 0..n {
            for j in 0..m {
                let d2: f64 = (0..d).map(|k| (x[i * d + k] - y[j * d + k]).powi(2)).sum();
                c[i * m + j] = if p == 2 { d2 } else { d2.sqrt() };
            }
        }
        let pr = Problem {
            a,
            b,
            cost: &c,
            eps,
            rho_a: f64::INFINITY,
            rho_b: f64::INFINITY,
        };
        let stop = AtomicBool::new(false);
        let o = Options {
            tol: 1e-12,
            max_iter: 100_000,
            ..Default::default()
        };
        let s = dense::solve(&pr, None, &o, &stop).unwrap();
        dense::finish(&pr, &s.f, &s.g, false, false, &stop)
            .unwrap()
            .cost
    }

    #[test]
    fn divergence_matches_dense_solves() {
        let (n, m, d) = (70, 50, 3);
        let x = lcg(1, n * d);
        let y: Vec<f64> = lcg(2, m * d).iter().map(|v| v * 0.8 + 0.3).collect();
        let a = vec![1.0 / n as f64; n];
        let b = vec![1.0 / m as f64; m];
        let stop = AtomicBool::new(false);
        for p in [1u8, 2] {
            let eps = 0.05;
            let opts = DivOptions {
                p,
                eps,
                eps0: 3.0,
                scaling: 0.7,
                debias: true,
                max_iter: 10_000,
                tol: 1e-11,
                grad: true,
            };
            let out = divergence(
                Points::new(&x, n, d).unwrap(),
                Points::new(&y, m, d).unwrap(),
                &a,
                &b,
                &opts,
                &stop,
            )
            .unwrap();
            assert!(out.converged);
            let want = dense_ot(&x, &y, d, &a, &b, p, eps)
                - 0.5 * dense_ot(&x, &x, d, &a, &a, p, eps)
                - 0.5 * dense_ot(&y, &y, d, &b, &b, p, eps);
            assert!(
                (out.value - want).abs() < 1e-9,
                "p={p}: {} vs {want}",
                out.value
            );
        }
    }
}
