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
use crate::core::pairwise::{reduce_rows, Float, Points, ROW_BLOCK, ROW_BLOCK_GEMM};

const _: () =
    assert!(MEAN_CHUNK.is_multiple_of(ROW_BLOCK) && MEAN_CHUNK.is_multiple_of(ROW_BLOCK_GEMM));

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
    /// Starting ε of the annealing.
    pub eps0: f64,
    /// Annealing factor in (0, 1): ε_k = eps0 · scaling^(p k) (GeomLoss's σ schedule).
    pub scaling: f64,
    /// Subtract the self terms (the Sinkhorn divergence); otherwise OT_ε(a, b).
    pub debias: bool,
    /// Most iterations at the target ε after the schedule (only with `tol`).
    pub max_iter: usize,
    /// Tolerance on the L1 marginal violation of each of the (two or three) problems:
    /// `None` runs the schedule and the extrapolation only (GeomLoss's default).
    pub tol: Option<f64>,
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
    /// Updates of the potentials: the initial one, one per ε of the schedule, the final
    /// extrapolation, then the iterations at the target ε (with `tol`).
    pub n_iter: usize,
    /// Largest of the problems' L1 marginal violations, for the returned potentials.
    pub error: f64,
    /// `tol` was given and every problem met it (always false without `tol`).
    pub converged: bool,
}

/// Soft-min over `cols`: `out_i = ln Σ_j exp(h_j − C(x_i, y_j)/ε)` (with `mean`, also the
/// statistics for the gradient). One engine pass.
fn log_sums<T: Float>(
    rows: Points<'_, T>,
    cols: Points<'_, T>,
    h: &[f64],
    map: NegCost,
    mean: Option<&[f64]>,
    stop: &AtomicBool,
) -> Result<RowStats> {
    row_stats(rows, cols, h, map, 1.0, false, mean, rows.d, stop)
}

/// One [`KernelRows`] pass of `map` at one `scale` with column log-weights (or weights)
/// `h`, skipping (i, i) when `exclude_self`; with `mean` (one `mean_d`-vector per column)
/// the rows run in chunks that keep the per-block mean buffers under 4 MB whatever n is
/// (results do not depend on it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn row_stats<T: Float, P: PairMap>(
    rows: Points<'_, T>,
    cols: Points<'_, T>,
    h: &[f64],
    map: P,
    scale: f64,
    exclude_self: bool,
    mean: Option<&[f64]>,
    mean_d: usize,
    stop: &AtomicBool,
) -> Result<RowStats> {
    let scales = [scale];
    let red = KernelRows {
        f: map,
        scales: &scales,
        w: h,
        exclude_self,
        sumsq: false,
        mean,
        d: mean_d,
    };
    if mean.is_none() || exclude_self {
        // (Chunks would shift the diagonal: leave-one-out passes run whole.)
        return Ok(RowStats::from_states(
            1,
            reduce_rows(rows, cols, &red, stop)?,
        ));
    }
    // With the mean, every block state holds a 64×256 buffer until the pass ends: run the
    // rows in chunks (a multiple of both block sizes, so results do not change) to keep
    // that under 4 MB whatever n is.
    let mut out = RowStats {
        g: 1,
        ..Default::default()
    };
    for r0 in (0..rows.n).step_by(MEAN_CHUNK) {
        let r1 = (r0 + MEAN_CHUNK).min(rows.n);
        let part = Points {
            data: &rows.data[r0 * rows.d..r1 * rows.d],
            n: r1 - r0,
            d: rows.d,
        };
        let st = RowStats::from_states(1, reduce_rows(part, cols, &red, stop)?);
        out.shift.extend(st.shift);
        out.sum.extend(st.sum);
        out.wsum.extend(st.wsum);
        out.wacc.extend(st.wacc);
    }
    Ok(out)
}

/// Rows per engine call of a pass with the gradient's statistics.
const MEAN_CHUNK: usize = 10 * ROW_BLOCK_GEMM;

/// The c-transform `T(y)_i = −ε ln Σ_j w_j e^{(y_j − C_ij)/ε}` (one engine pass), and the
/// pass's statistics when `mean` asks for the gradient's.
#[allow(clippy::too_many_arguments)]
fn transform<T: Float>(
    rows: Points<'_, T>,
    cols: Points<'_, T>,
    logw: &[f64],
    y: &[f64],
    p: u8,
    eps: f64,
    mean: Option<&[f64]>,
    stop: &AtomicBool,
) -> Result<(Vec<f64>, Option<RowStats>)> {
    let map = NegCost {
        p,
        inv_eps: 1.0 / eps,
    };
    let h: Vec<f64> = logw.iter().zip(y).map(|(l, v)| l + v / eps).collect();
    let st = log_sums(rows, cols, &h, map, mean, stop)?;
    let t = (0..rows.n).map(|i| -eps * st.log_sum(i)).collect();
    Ok((t, mean.map(|_| st)))
}

/// One block of a distributed half-step: the soft-min state of `rows` against one block
/// of columns, `Σ_j exp(ln w_j + v_j/ε − C(x_i, y_j)/ε)` for the columns' weights `w`
/// and potential `v`, as the [`RowStats`] of one engine pass (`shift`, `sum`, and with
/// `mean` the gradient's `wsum`/`wacc` for the column points). It is exactly the pass
/// [`transform`] runs, restricted to the block: with all columns in one block,
/// `−ε·log_sum(i)` is bitwise [`transform`]'s value. States of several column blocks are
/// combined by log-sum-exp (the caller's tree), which rounds differently from the
/// engine's tile-by-tile accumulation. Memory: the engine's (O((rows + cols)·d)).
#[allow(clippy::too_many_arguments)]
pub fn partial_transform<T: Float>(
    rows: Points<'_, T>,
    cols: Points<'_, T>,
    w: &[f64],
    v: &[f64],
    p: u8,
    eps: f64,
    mean: bool,
    stop: &AtomicBool,
) -> Result<RowStats> {
    if rows.d != cols.d {
        return Err(invalid!(
            "rows and columns must have the same dimension; got {} and {}",
            rows.d,
            cols.d
        ));
    }
    if w.len() != cols.n || v.len() != cols.n {
        return Err(invalid!(
            "the column weights and potential must have one entry per column ({}); got {} and {}",
            cols.n,
            w.len(),
            v.len()
        ));
    }
    if p != 1 && p != 2 {
        return Err(invalid!("p must be 1 or 2; got {}", p));
    }
    if !(eps > 0.0 && eps.is_finite()) {
        return Err(invalid!("eps must be positive and finite; got {}", eps));
    }
    // The same log-weights as `divergence_grads` (one `ln` per column, in the same order).
    let lw: Vec<f64> = w.iter().map(|v| v.ln()).collect();
    let cm = if mean { cols.to_f64_vec() } else { Vec::new() };
    // As in `transform`: the column log-weights of the pass, and its map.
    let map = NegCost {
        p,
        inv_eps: 1.0 / eps,
    };
    let h: Vec<f64> = lw.iter().zip(v).map(|(l, v)| l + v / eps).collect();
    log_sums(rows, cols, &h, map, mean.then_some(cm.as_slice()), stop)
}

/// Σ_i w_i |e^{(x_i − t_i)/ε} − 1|: the L1 violation of the marginal on the side of `x`
/// of the plan built from `x` and the other side's potential, whose transform is `t`.
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

/// GeomLoss's ε schedule: `eps0`, then `exp(ln eps0 + k ln r)` for `k = 0, 1, …` while
/// the exponent is above `ln eps` (`r = scaling^p`), then `eps`.
pub fn schedule(eps0: f64, eps: f64, scaling: f64, p: u8) -> Vec<f64> {
    let (l0, lr) = (eps0.ln(), p as f64 * scaling.ln());
    let count = ((eps.ln() - l0) / lr).ceil();
    let count = if count.is_finite() && count > 0.0 {
        (count as usize).min(100_000)
    } else {
        0
    };
    let mut out = Vec::with_capacity(count + 2);
    out.push(eps0);
    out.extend((0..count).map(|k| (l0 + k as f64 * lr).exp()));
    out.push(eps);
    out
}

/// The debiased Sinkhorn divergence
/// `S_ε = OT_ε(a,b) − ½ OT_ε(a,a) − ½ OT_ε(b,b)` between weighted clouds (weights summing
/// to one), with `OT_ε = min ⟨C,P⟩ + ε KL(P | a⊗b)` and `C = |x − y|^p`.
///
/// GeomLoss's schedule: potentials start as the transforms of zero at the first ε; at
/// every ε of [`schedule`] the four potentials (f, g of the cross problem, p and q of the
/// self problems) are updated at once by averaging each with its transform,
/// `f ← (f + T(g))/2`, `p ← (p + T(p))/2`; a final extrapolation at `eps` replaces each by
/// its transform. That is four engine passes per ε. Then one more pass per potential
/// measures the L1 marginal violations of the returned potentials (and, fused with it,
/// the gradient's statistics). With `tol`, iterations continue at `eps` (alternating
/// updates for the cross problem, averaged ones for the self problems) until every
/// violation is at most `tol` or `max_iter` is reached. Memory: O((n + m)·d).
pub fn divergence<T: Float>(
    x: Points<'_, T>,
    y: Points<'_, T>,
    a: &[f64],
    b: &[f64],
    opts: &DivOptions,
    stop: &AtomicBool,
) -> Result<DivOutput> {
    Ok(divergence_grads(x, y, a, b, opts, false, stop)?.0)
}

/// [`divergence`], plus (with `grad_y` and `opts.grad`) the gradient with respect to y
/// (row-major m×d; empty otherwise), from the statistics of the check passes on the y
/// rows (no extra pass unless `tol` iterations moved the potentials).
pub fn divergence_grads<T: Float>(
    x: Points<'_, T>,
    y: Points<'_, T>,
    a: &[f64],
    b: &[f64],
    opts: &DivOptions,
    grad_y: bool,
    stop: &AtomicBool,
) -> Result<(DivOutput, Vec<f64>)> {
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
    if !(opts.eps0 > 0.0 && opts.eps0.is_finite()) {
        return Err(invalid!(
            "eps0 must be positive and finite; got {}",
            opts.eps0
        ));
    }
    if !(opts.scaling > 0.0 && opts.scaling < 1.0) {
        return Err(invalid!("scaling must be in (0, 1); got {}", opts.scaling));
    }
    let la: Vec<f64> = a.iter().map(|v| v.ln()).collect();
    let lb: Vec<f64> = b.iter().map(|v| v.ln()).collect();
    let epss = schedule(opts.eps0, opts.eps, opts.scaling, opts.p);
    let p = opts.p;
    let deb = opts.debias;
    let (n, m) = (x.n, y.n);
    // Potentials start as the transforms of zero at the first ε (GeomLoss's init).
    let e0 = epss[0];
    let zx = vec![0.0; n];
    let zy = vec![0.0; m];
    let mut f = transform(x, y, &lb, &zy, p, e0, None, stop)?.0;
    let mut g = transform(y, x, &la, &zx, p, e0, None, stop)?.0;
    let (mut pp, mut qq) = if deb {
        (
            transform(x, x, &la, &zx, p, e0, None, stop)?.0,
            transform(y, y, &lb, &zy, p, e0, None, stop)?.0,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let avg = |v: &mut [f64], t: &[f64]| {
        for (vi, ti) in v.iter_mut().zip(t) {
            *vi = 0.5 * (*vi + ti);
        }
    };
    // Annealing: every potential is averaged with its transform of the previous iterate.
    for &e in &epss {
        let (tf, _) = transform(x, y, &lb, &g, p, e, None, stop)?;
        let (tg, _) = transform(y, x, &la, &f, p, e, None, stop)?;
        avg(&mut f, &tf);
        avg(&mut g, &tg);
        if deb {
            let (tp, _) = transform(x, x, &la, &pp, p, e, None, stop)?;
            let (tq, _) = transform(y, y, &lb, &qq, p, e, None, stop)?;
            avg(&mut pp, &tp);
            avg(&mut qq, &tq);
        }
    }
    // Final extrapolation at the target ε: every potential becomes its transform.
    let eps = opts.eps;
    let (tf, _) = transform(x, y, &lb, &g, p, eps, None, stop)?;
    let (tg, _) = transform(y, x, &la, &f, p, eps, None, stop)?;
    f = tf;
    g = tg;
    if deb {
        pp = transform(x, x, &la, &pp, p, eps, None, stop)?.0;
        qq = transform(y, y, &lb, &qq, p, eps, None, stop)?.0;
    }
    let mut n_iter = epss.len() + 2;
    // Check: the transforms of the returned potentials give the marginal violations; the
    // x-row passes also carry the gradient's statistics.
    let gy = opts.grad && grad_y;
    let ycols = if opts.grad {
        y.to_f64_vec()
    } else {
        Vec::new()
    };
    let xcols = if (opts.grad && deb) || gy {
        x.to_f64_vec()
    } else {
        Vec::new()
    };
    let my = opts.grad.then_some(ycols.as_slice());
    let mx = (opts.grad && deb).then_some(xcols.as_slice());
    let (mut tf, mut st_xy) = transform(x, y, &lb, &g, p, eps, my, stop)?;
    let (tg, mut st_yx) = transform(y, x, &la, &f, p, eps, gy.then_some(xcols.as_slice()), stop)?;
    let mut st_yy = None;
    let mut e_xy = violation(a, &f, &tf, eps) + violation(b, &g, &tg, eps);
    let (mut tp, mut st_xx, mut tq) = (Vec::new(), None, Vec::new());
    let (mut e_x, mut e_y) = (0.0f64, 0.0f64);
    if deb {
        (tp, st_xx) = transform(x, x, &la, &pp, p, eps, mx, stop)?;
        (tq, st_yy) = transform(y, y, &lb, &qq, p, eps, gy.then_some(ycols.as_slice()), stop)?;
        // The symmetric plan (p, p) is off by e^{(p − T(p))/ε} on both sides.
        e_x = 2.0 * violation(a, &pp, &tp, eps);
        e_y = 2.0 * violation(b, &qq, &tq, eps);
    }
    let mut converged = false;
    if let Some(tol) = opts.tol {
        let mut it = 0;
        while it < opts.max_iter && !(e_xy <= tol && e_x <= tol && e_y <= tol) {
            if e_xy > tol {
                // Alternate: g = T(f) makes the columns exact, T(g) measures the rows.
                f = tf;
                g = transform(y, x, &la, &f, p, eps, None, stop)?.0;
                tf = transform(x, y, &lb, &g, p, eps, None, stop)?.0;
                st_xy = None;
                st_yx = None;
                e_xy = violation(a, &f, &tf, eps);
            }
            if e_x > tol {
                avg(&mut pp, &tp);
                tp = transform(x, x, &la, &pp, p, eps, None, stop)?.0;
                st_xx = None;
                e_x = 2.0 * violation(a, &pp, &tp, eps);
            }
            if e_y > tol {
                avg(&mut qq, &tq);
                tq = transform(y, y, &lb, &qq, p, eps, None, stop)?.0;
                st_yy = None;
                e_y = 2.0 * violation(b, &qq, &tq, eps);
            }
            it += 1;
        }
        n_iter += it;
        converged = e_xy <= tol && e_x <= tol && e_y <= tol;
    }
    let dot = |w: &[f64], v: &[f64]| -> f64 { w.iter().zip(v).map(|(a, b)| a * b).sum() };
    let mut value = dot(a, &f) + dot(b, &g);
    if deb {
        value -= dot(a, &pp) + dot(b, &qq);
    }
    // The loop passes skip the gradient's statistics: one more pass where it moved.
    if opts.grad && st_xy.is_none() {
        st_xy = transform(x, y, &lb, &g, p, eps, my, stop)?.1;
    }
    if opts.grad && deb && st_xx.is_none() {
        st_xx = transform(x, x, &la, &pp, p, eps, mx, stop)?.1;
    }
    let mut grad = Vec::new();
    if opts.grad {
        grad = vec![0.0; n * x.d];
        if let Some(st) = &st_xy {
            grad_rows(x, st, p, &mut grad, 1.0, a);
        }
        if let Some(st) = &st_xx {
            grad_rows(x, st, p, &mut grad, -1.0, a);
        }
    }
    let mut grad_y = Vec::new();
    if gy {
        if st_yx.is_none() {
            st_yx = transform(y, x, &la, &f, p, eps, Some(&xcols), stop)?.1;
        }
        if deb && st_yy.is_none() {
            st_yy = transform(y, y, &lb, &qq, p, eps, Some(&ycols), stop)?.1;
        }
        grad_y = vec![0.0; m * y.d];
        if let Some(st) = &st_yx {
            grad_rows(y, st, p, &mut grad_y, 1.0, b);
        }
        if let Some(st) = &st_yy {
            grad_rows(y, st, p, &mut grad_y, -1.0, b);
        }
    }
    Ok((
        DivOutput {
            value,
            f,
            g,
            p: pp,
            q: qq,
            grad,
            n_iter,
            error: e_xy.max(e_x).max(e_y),
            converged,
        },
        grad_y,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ot::dense::{self, Options, Problem};
    use crate::core::testing::unit_vec;

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
    fn partial_transform_is_transform_on_whole_columns_and_combines_by_blocks() {
        let (n, m, d) = (150, 700, 3);
        let x = unit_vec(3, n * d);
        let y: Vec<f64> = unit_vec(4, m * d).iter().map(|v| v * 0.9 + 0.2).collect();
        let w: Vec<f64> = (0..m).map(|j| 1.0 + (j % 7) as f64).collect();
        let v: Vec<f64> = unit_vec(5, m).iter().map(|t| 0.1 * t).collect();
        let lw: Vec<f64> = w.iter().map(|t| t.ln()).collect();
        let stop = AtomicBool::new(false);
        let (px, py) = (
            Points::new(&x, n, d).unwrap(),
            Points::new(&y, m, d).unwrap(),
        );
        for p in [1u8, 2] {
            let eps = 0.03;
            let (t, _) = transform(px, py, &lw, &v, p, eps, None, &stop).unwrap();
            let st = partial_transform(px, py, &w, &v, p, eps, false, &stop).unwrap();
            for (i, ti) in t.iter().enumerate() {
                assert_eq!((-eps * st.log_sum(i)).to_bits(), ti.to_bits());
            }
            // Two column blocks (a tile boundary and a ragged one), combined by log-sum-exp.
            for cut in [256, 301] {
                let p1 = Points::new(&y[..cut * d], cut, d).unwrap();
                let p2 = Points::new(&y[cut * d..], m - cut, d).unwrap();
                let s1 = partial_transform(px, p1, &w[..cut], &v[..cut], p, eps, true, &stop);
                let s2 = partial_transform(px, p2, &w[cut..], &v[cut..], p, eps, true, &stop);
                let (s1, s2) = (s1.unwrap(), s2.unwrap());
                for (i, ti) in t.iter().enumerate() {
                    let (a, b) = (s1.log_sum(i), s2.log_sum(i));
                    let hi = a.max(b);
                    let l = hi + ((a - hi).exp() + (b - hi).exp()).ln();
                    let want = -ti / eps;
                    assert!(
                        (l - want).abs() <= 1e-14 * want.abs().max(1.0),
                        "{l} vs {want}"
                    );
                }
            }
        }
        assert!(partial_transform(px, py, &w[1..], &v, 2, 0.1, false, &stop).is_err());
        assert!(partial_transform(px, py, &w, &v, 3, 0.1, false, &stop).is_err());
        assert!(partial_transform(px, py, &w, &v, 2, 0.0, false, &stop).is_err());
    }

    #[test]
    fn divergence_matches_dense_solves() {
        let (n, m, d) = (70, 50, 3);
        let x = unit_vec(1, n * d);
        let y: Vec<f64> = unit_vec(2, m * d).iter().map(|v| v * 0.8 + 0.3).collect();
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
                tol: Some(1e-11),
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
