//! The SIMD bodies of the dense solvers, each compiled once per level by `simd_fn!` (or
//! inlined into a `SimdTask`): row and column products, kernel builds, log-sum-exps, the
//! plan's rows, and the small path's scaling steps and sweeps.

use super::relax::{relax_far, relax_near};
use super::TINY;
use crate::core::simd::simd_fn;
use crate::core::simd::{self, Fma};

/// Σ x_j y_j with a fixed lane order.
#[inline(always)]
fn dot<M: Fma>(x: &[f64], y: &[f64]) -> f64 {
    const W: usize = 2 * simd::LANES;
    let mut acc = [0.0f64; W];
    let xc = x.chunks_exact(W);
    let yc = y.chunks_exact(W);
    let (xt, yt) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for l in 0..W {
            acc[l] = M::ma(a[l], b[l], acc[l]);
        }
    }
    let mut lanes = [0.0f64; simd::LANES];
    for l in 0..simd::LANES {
        lanes[l] = acc[l] + acc[l + simd::LANES];
    }
    let mut t = 0.0;
    for (a, b) in xt.iter().zip(yt) {
        t = M::ma(*a, *b, t);
    }
    simd::finish_lanes(&lanes) + t
}

#[inline(always)]
fn row_dot_body<M: Fma>(k: &[f64], m: usize, w: &[f64], out: &mut [f64]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = dot::<M>(&k[i * m..(i + 1) * m], w);
    }
}
simd_fn!(
    /// `out_i = Σ_j k_ij w_j` for the rows of `k` (row length m).
    pub(super) fn row_dot => row_dot_body(k: &[f64], m: usize, w: &[f64], out: &mut [f64]) -> ()
);

#[inline(always)]
fn col_dot_body<M: Fma>(k: &[f64], m: usize, j0: usize, w: &[f64], out: &mut [f64]) {
    out.fill(0.0);
    let nc = out.len();
    for (i, &wi) in w.iter().enumerate() {
        if wi == 0.0 {
            continue;
        }
        let row = &k[i * m + j0..i * m + j0 + nc];
        for (o, &x) in out.iter_mut().zip(row) {
            *o = M::ma(wi, x, *o);
        }
    }
}
simd_fn!(
    /// `out_j = Σ_i w_i k_{i, j0+j}`, rows taken in order.
    pub(super) fn col_dot => col_dot_body(k: &[f64], m: usize, j0: usize, w: &[f64], out: &mut [f64]) -> ()
);

#[inline(always)]
fn col_acc_body<M: Fma>(k: &[f64], m: usize, w: &[f64], out: &mut [f64]) {
    // Zipped iterators (no indexing) so that the inner loops vectorise.
    let out = &mut out[..m];
    let mut rows = k.chunks_exact(m);
    let mut ws = w.chunks_exact(4);
    for wq in &mut ws {
        let (r0, r1, r2, r3) = match (rows.next(), rows.next(), rows.next(), rows.next()) {
            (Some(a), Some(b), Some(c), Some(d)) => (a, b, c, d),
            _ => return,
        };
        let (w0, w1, w2, w3) = (wq[0], wq[1], wq[2], wq[3]);
        for ((((o, &x0), &x1), &x2), &x3) in out.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
            *o += M::ma(w0, x0, M::ma(w1, x1, M::ma(w2, x2, w3 * x3)));
        }
    }
    for (&wi, row) in ws.remainder().iter().zip(rows) {
        for (o, &x) in out.iter_mut().zip(row) {
            *o = M::ma(wi, x, *o);
        }
    }
}
simd_fn!(
    /// `out_j += Σ_i w_i k_ij` over the rows of `k` (row length m), in a fixed order.
    pub(super) fn col_dot_acc => col_acc_body(k: &[f64], m: usize, w: &[f64], out: &mut [f64]) -> ()
);

#[inline(always)]
fn build_body<M: Fma>(c: &[f64], fe: &[f64], ge: &[f64], inv_eps: f64, out: &mut [f64]) {
    let m = ge.len();
    for ((&fi, cr), or) in fe
        .iter()
        .zip(c.chunks_exact(m))
        .zip(out.chunks_exact_mut(m))
    {
        for ((o, &cj), &gj) in or.iter_mut().zip(cr).zip(ge) {
            // exp saturates at e^709, so an entry never becomes inf (0 · K̃ stays 0).
            *o = simd::exp::<M>(M::ma(-cj, inv_eps, fi + gj));
        }
    }
}
simd_fn!(
    /// `out_ij = exp(fe_i + ge_j - c_ij/ε)` for a block of rows.
    pub(super) fn build_kernel => build_body(c: &[f64], fe: &[f64], ge: &[f64], inv_eps: f64, out: &mut [f64]) -> ()
);

#[inline(always)]
fn lse_body<M: Fma>(c: &[f64], h: &[f64], inv_eps: f64, buf: &mut [f64], out: &mut [f64]) {
    let m = h.len();
    for (i, o) in out.iter_mut().enumerate() {
        let cr = &c[i * m..(i + 1) * m];
        for j in 0..m {
            buf[j] = M::ma(-cr[j], inv_eps, h[j]);
        }
        let mx = simd::max(buf);
        if mx == f64::NEG_INFINITY {
            *o = f64::NEG_INFINITY;
            continue;
        }
        for x in buf.iter_mut() {
            *x = simd::exp::<M>(*x - mx);
        }
        *o = mx + simd::sum(buf).ln();
    }
}
simd_fn!(
    /// `out_i = ln Σ_j exp(h_j - c_ij/ε)` for a block of rows (`buf` has length m).
    pub(super) fn lse_rows => lse_body(c: &[f64], h: &[f64], inv_eps: f64, buf: &mut [f64], out: &mut [f64]) -> ()
);

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn finish_body<M: Fma>(
    c: &[f64],
    fa: &[f64],
    gb: &[f64],
    inv_eps: f64,
    plan: &mut [f64],
    colsum: &mut [f64],
    rowsum: &mut [f64],
    lin: &mut [f64],
) {
    let m = gb.len();
    colsum.fill(0.0);
    for (i, &fi) in fa.iter().enumerate() {
        let cr = &c[i * m..(i + 1) * m];
        let pr = &mut plan[i * m..(i + 1) * m];
        for j in 0..m {
            pr[j] = simd::exp::<M>(M::ma(-cr[j], inv_eps, fi + gb[j]));
        }
        if fi == f64::NEG_INFINITY {
            pr.fill(0.0);
        }
        rowsum[i] = simd::sum(pr);
        lin[i] = dot::<M>(pr, cr);
        for (s, &x) in colsum.iter_mut().zip(pr.iter()) {
            *s += x;
        }
    }
}
simd_fn!(
    /// Forms rows of the plan `exp(fa_i + gb_j - c_ij/ε)` with their sums, column sums and ⟨C,P⟩ per row.
    pub(super) fn finish_rows => finish_body(
        c: &[f64], fa: &[f64], gb: &[f64], inv_eps: f64, plan: &mut [f64],
        colsum: &mut [f64], rowsum: &mut [f64], lin: &mut [f64]
    ) -> ()
);

/// `Σ w_i |v_i − 1|` with a fixed lane order.
#[inline(always)]
fn l1_dev<M: Fma>(w: &[f64], v: &[f64]) -> f64 {
    let mut acc = [0.0f64; simd::LANES];
    let (wc, vc) = (w.chunks_exact(simd::LANES), v.chunks_exact(simd::LANES));
    let (wt, vt) = (wc.remainder(), vc.remainder());
    for (wq, vq) in wc.zip(vc) {
        for l in 0..simd::LANES {
            acc[l] = M::ma(wq[l], (vq[l] - 1.0).abs(), acc[l]);
        }
    }
    let mut t = 0.0;
    for (wi, vi) in wt.iter().zip(vt) {
        t = M::ma(*wi, (vi - 1.0).abs(), t);
    }
    simd::finish_lanes(&acc) + t
}

/// One scaling half-step of the small-problem path, given the sums `s = K(w'∘y)` of the
/// other side: the current marginal ratios `p = x∘s`, the new scalings
/// `x' = x p^{−ω}` (`1/s` when ω = 1) and `wx = wt∘x'`. Returns the L1 violation
/// `Σ wt|p − 1|` before the step, or with `after` the violation `Σ wt|x'∘s − 1|` after it
/// (the callers need one of the two), and whether every sum and new scaling is in the safe
/// range. `scratch` holds 2·len values.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn scale_body<M: Fma>(
    x: &[f64],
    s: &[f64],
    w: f64,
    wt: &[f64],
    xn: &mut [f64],
    wx: &mut [f64],
    scratch: &mut [f64],
    after: bool,
) -> (f64, bool) {
    let n = x.len();
    let (p, lnp) = scratch[..2 * n].split_at_mut(n);
    for ((pi, &xi), &si) in p.iter_mut().zip(x).zip(s) {
        *pi = xi * si;
    }
    let before = if after { 0.0 } else { l1_dev::<M>(wt, p) };
    if w == 1.0 {
        for (o, &si) in xn.iter_mut().zip(s) {
            *o = 1.0 / si;
        }
    } else {
        let a = (w * w - 1.0) / 3.0;
        let mut far = false;
        for (r, &pi) in lnp.iter_mut().zip(p.iter()) {
            *r = relax_near::<M>(pi, w, a);
            far |= r.is_nan();
        }
        if far {
            for (r, &pi) in lnp.iter_mut().zip(p.iter()) {
                let v = relax_far::<M>(pi, w);
                *r = if r.is_nan() { v } else { *r };
            }
        }
        for ((o, &xi), &r) in xn.iter_mut().zip(x).zip(lnp.iter()) {
            *o = xi * r;
        }
    }
    let mut ok = true;
    for ((q, &xi), &si) in p.iter_mut().zip(xn.iter()).zip(s) {
        ok &= (si > TINY) & (si < f64::INFINITY) & (xi > TINY) & (xi < f64::INFINITY);
        *q = xi * si;
    }
    let err = if after { l1_dev::<M>(wt, p) } else { before };
    for ((o, &wi), &xi) in wx.iter_mut().zip(wt).zip(xn.iter()) {
        *o = wi * xi;
    }
    (err, ok)
}

/// The row half-step of [`scale_body`] for one whole group of the fused loop, on the
/// group's sums `s`: adds `wt|p − 1|` lane by lane to `acc`, writes `x'` and `wt∘x'`, and
/// returns whether the sums and new scalings are in the safe range. Fixed-size lanes, so
/// it compiles to a few vector instructions.
#[inline(always)]
pub(super) fn row_group<M: Fma>(
    x: &[f64],
    s: &[f64; GROUP],
    w: f64,
    wt: &[f64],
    acc: &mut [f64; GROUP],
    xn: &mut [f64],
    wx: &mut [f64],
) -> bool {
    let (x, wt) = (&x[..GROUP], &wt[..GROUP]);
    let (xn, wx) = (&mut xn[..GROUP], &mut wx[..GROUP]);
    let p: [f64; GROUP] = std::array::from_fn(|l| x[l] * s[l]);
    for l in 0..GROUP {
        acc[l] = M::ma(wt[l], (p[l] - 1.0).abs(), acc[l]);
    }
    let mut r = [0.0f64; GROUP];
    if w == 1.0 {
        for l in 0..GROUP {
            r[l] = 1.0 / s[l];
        }
    } else {
        let a = (w * w - 1.0) / 3.0;
        for l in 0..GROUP {
            r[l] = x[l] * relax_near::<M>(p[l], w, a);
        }
        if r.iter().any(|v| v.is_nan()) {
            for l in 0..GROUP {
                let v = x[l] * relax_far::<M>(p[l], w);
                r[l] = if r[l].is_nan() { v } else { r[l] };
            }
        }
    }
    let mut ok = true;
    for l in 0..GROUP {
        ok &= (s[l] > TINY) & (s[l] < f64::INFINITY) & (r[l] > TINY) & (r[l] < f64::INFINITY);
        xn[l] = r[l];
        wx[l] = wt[l] * r[l];
    }
    ok
}
simd_fn!(
    /// See `scale_body`.
    pub(super) fn scale_step => scale_body(x: &[f64], s: &[f64], w: f64, wt: &[f64], xn: &mut [f64], wx: &mut [f64], scratch: &mut [f64], after: bool) -> (f64, bool)
);

pub(super) use simd::min_max;

/// Rows per group of the small-problem path's fused sweep (and lanes per chunk).
pub(super) const GROUP: usize = simd::LANES;

/// Column update of GROUP consecutive rows of a row-major block: `t_j += Σ_r w_r k_rj`,
/// rows in order (one pass over t).
#[inline(always)]
fn group_axpy<M: Fma>(block: &[f64], m: usize, w: &[f64], t: &mut [f64]) {
    if block.len() < GROUP * m || w.len() < GROUP || t.len() < m {
        return; // Unreachable: the callers pass whole groups.
    }
    let (r0, rest) = block.split_at(m);
    let (r1, rest) = rest.split_at(m);
    let (r2, rest) = rest.split_at(m);
    let (r3, rest) = rest.split_at(m);
    let (r4, rest) = rest.split_at(m);
    let (r5, rest) = rest.split_at(m);
    let (r6, rest) = rest.split_at(m);
    let r7 = &rest[..m];
    let w: [f64; GROUP] = std::array::from_fn(|r| w[r]);
    for ((((((((o, &x0), &x1), &x2), &x3), &x4), &x5), &x6), &x7) in t[..m]
        .iter_mut()
        .zip(r0)
        .zip(r1)
        .zip(r2)
        .zip(r3)
        .zip(r4)
        .zip(r5)
        .zip(r6)
        .zip(r7)
    {
        let mut v = M::ma(w[0], x0, *o);
        v = M::ma(w[1], x1, v);
        v = M::ma(w[2], x2, v);
        v = M::ma(w[3], x3, v);
        v = M::ma(w[4], x4, v);
        v = M::ma(w[5], x5, v);
        v = M::ma(w[6], x6, v);
        *o = M::ma(w[7], x7, v);
    }
}

#[inline(always)]
fn axpy_rows_body<M: Fma>(k: &[f64], m: usize, w: &[f64], out: &mut [f64]) {
    let out = &mut out[..m];
    out.fill(0.0);
    let whole = w.len() / GROUP * GROUP;
    for (block, wq) in k
        .chunks_exact(GROUP * m)
        .zip(w[..whole].chunks_exact(GROUP))
    {
        group_axpy::<M>(block, m, wq, out);
    }
    col_acc_body::<M>(&k[whole * m..], m, &w[whole..], out);
}
simd_fn!(
    /// `out_j = Σ_i w_i k_ij` over the rows of the row-major `k` (row length m), rows in
    /// order, GROUP rows per pass over `out`.
    pub(super) fn axpy_rows => axpy_rows_body(k: &[f64], m: usize, w: &[f64], out: &mut [f64]) -> ()
);

/// Writes the transpose of the row-major n×m `k` into `kt` (m×n), in GROUP×GROUP tiles.
pub(super) fn transpose(k: &[f64], n: usize, m: usize, kt: &mut [f64]) {
    for i0 in (0..n).step_by(GROUP) {
        let i1 = (i0 + GROUP).min(n);
        for j0 in (0..m).step_by(GROUP) {
            let j1 = (j0 + GROUP).min(m);
            for i in i0..i1 {
                for j in j0..j1 {
                    kt[j * n + i] = k[i * m + j];
                }
            }
        }
    }
}

/// One pass over the kernel for the finish of the small-problem path: the linear cost
/// `Σ_ij c_ij wa_i k_ij wb_j`, and with `SUMS` also `s_i = K_i·wb` and `t = Kᵀwa`.
#[inline(always)]
fn small_pass<M: Fma, const SUMS: bool>(
    c: &[f64],
    k: &[f64],
    wa: &[f64],
    wb: &[f64],
    s: &mut [f64],
    t: &mut [f64],
) -> f64 {
    let m = wb.len();
    if SUMS {
        t[..m].fill(0.0);
    }
    let mut lin = 0.0;
    for (i, ((&wi, cr), kr)) in wa
        .iter()
        .zip(c.chunks_exact(m))
        .zip(k.chunks_exact(m))
        .enumerate()
    {
        // One pass for the row's mass and its cost-weighted mass.
        let (mut sa, mut la) = ([0.0f64; simd::LANES], [0.0f64; simd::LANES]);
        let whole = m / simd::LANES * simd::LANES;
        for ((kq, wq), cq) in kr[..whole]
            .chunks_exact(simd::LANES)
            .zip(wb[..whole].chunks_exact(simd::LANES))
            .zip(cr[..whole].chunks_exact(simd::LANES))
        {
            for l in 0..simd::LANES {
                let v = kq[l] * wq[l];
                if SUMS {
                    sa[l] += v;
                }
                la[l] = M::ma(v, cq[l], la[l]);
            }
        }
        let (mut st, mut lt) = (0.0, 0.0);
        for j in whole..m {
            let v = kr[j] * wb[j];
            if SUMS {
                st += v;
            }
            lt = M::ma(v, cr[j], lt);
        }
        lin = M::ma(wi, simd::finish_lanes(&la) + lt, lin);
        if SUMS {
            s[i] = simd::finish_lanes(&sa) + st;
            for (o, &kj) in t[..m].iter_mut().zip(kr) {
                *o = M::ma(wi, kj, *o);
            }
        }
    }
    lin
}

#[inline(always)]
fn small_finish_body<M: Fma>(
    c: &[f64],
    k: &[f64],
    wa: &[f64],
    wb: &[f64],
    s: &mut [f64],
    t: &mut [f64],
) -> f64 {
    small_pass::<M, true>(c, k, wa, wb, s, t)
}
simd_fn!(
    /// `s_i = K_i·wb`, `t = Kᵀwa` and the linear cost `Σ_ij c_ij wa_i k_ij wb_j`, in one
    /// pass over the kernel (see `small_pass`).
    pub(super) fn small_finish => small_finish_body(c: &[f64], k: &[f64], wa: &[f64], wb: &[f64], s: &mut [f64], t: &mut [f64]) -> f64
);

#[inline(always)]
fn small_lin_body<M: Fma>(c: &[f64], k: &[f64], wa: &[f64], wb: &[f64]) -> f64 {
    small_pass::<M, false>(c, k, wa, wb, &mut [], &mut [])
}
simd_fn!(
    /// The linear cost `Σ_ij c_ij wa_i k_ij wb_j` alone (see `small_pass`).
    pub(super) fn small_lin => small_lin_body(c: &[f64], k: &[f64], wa: &[f64], wb: &[f64]) -> f64
);

#[inline(always)]
fn small_kernel_body<M: Fma>(c: &[f64], m: usize, slope: f64, offset: f64, out: &mut [f64]) {
    for (cr, or) in c.chunks_exact(m).zip(out.chunks_exact_mut(m)) {
        simd::lin_exp_into::<M>(cr, slope, offset, or);
    }
}
simd_fn!(
    /// `out_ij = exp(slope·c_ij + offset)` for exponents in [−`SMALL_RANGE`, 0] (the
    /// small-problem kernel; the table-driven exp on AVX-512).
    pub(super) fn small_kernel => small_kernel_body(c: &[f64], m: usize, slope: f64, offset: f64, out: &mut [f64]) -> ()
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::simd_levels;

    #[test]
    fn axpy_rows_every_level_matches_naive_including_tails() {
        for (n, m) in [
            (1usize, 1usize),
            (7, 9),
            (8, 8),
            (17, 13),
            (64, 64),
            (23, 40),
        ] {
            let k: Vec<f64> = (0..n * m)
                .map(|i| ((i * 37 % 101) as f64) / 101.0)
                .collect();
            let w: Vec<f64> = (0..n).map(|i| 1.0 + (i % 5) as f64 * 0.25).collect();
            let want: Vec<f64> = (0..m)
                .map(|j| (0..n).map(|i| w[i] * k[i * m + j]).sum())
                .collect();
            for lvl in simd_levels() {
                let mut out = vec![f64::NAN; m];
                axpy_rows(lvl, &k, m, &w, &mut out);
                for (o, e) in out.iter().zip(&want) {
                    assert!(
                        (o - e).abs() <= 1e-14 * e.abs(),
                        "{lvl:?} {n}x{m}: {o} vs {e}"
                    );
                }
            }
            let mut kt = vec![0.0; n * m];
            transpose(&k, n, m, &mut kt);
            for i in 0..n {
                for j in 0..m {
                    assert_eq!(kt[j * n + i], k[i * m + j]);
                }
            }
        }
    }

    #[test]
    fn min_max_flags_non_finite() {
        for lvl in simd_levels() {
            for len in [3usize, 8, 19] {
                let mut c: Vec<f64> = (0..len).map(|i| i as f64 - 2.0).collect();
                assert_eq!(min_max(lvl, &c), (-2.0, len as f64 - 3.0, true));
                for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                    for at in [0, len - 1] {
                        let keep = c[at];
                        c[at] = bad;
                        assert!(!min_max(lvl, &c).2, "{lvl:?} len {len} {bad} at {at}");
                        c[at] = keep;
                    }
                }
            }
        }
    }
}
