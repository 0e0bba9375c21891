//! Distance covariance, distance correlation and energy statistics.
//!
//! Multivariate data (or exponents α ≠ 1) go through the pairwise engine in two passes and
//! O(n) memory: pass 1 gives the row sums of |x_i − x_j|^α for each sample
//! ([`KernelRows`]), pass 2 sums products of the centred distances
//! A_ij = a_ij − c_i − c_j over the upper triangle of pairs, for every pair of samples at
//! once ([`reduce_pairs_multi`]). Centring per pair keeps every term of the final sum of
//! the order of the result's scale, so nothing large cancels at the end. One-dimensional
//! data with α = 1 take the exact O(n log n) path of [`fast1d`].
//!
//! Centring conventions (Székely & Rizzo): the V statistic double-centres with row means
//! (c_i = ā_i − ā/2 and the diagonal included); the U statistic U-centres
//! (c_i = a_i·/(n−2) − a··/(2(n−1)(n−2)), diagonal excluded) and divides by n(n−3).

pub mod fast1d;
pub mod grad;
pub mod matrix;
pub mod perm;
pub mod sums;

use std::sync::atomic::AtomicBool;

use super::error::{invalid, try_vec, Result};
use super::pairwise::multi::{reduce_pairs_multi, MultiReducer};
use super::pairwise::reduce::{KernelRows, PairMap, RowStats};
use super::pairwise::{reduce_rows_with, Float, Points, COL_TILE};
use super::simd::{finish_lanes, Fma, LANES};
use sums::Acc;

/// Largest dimension for which pass 1 uses exact differences (see
/// [`super::pairwise::multi::MULTI_DIRECT_MAX_D`]).
const DIRECT_MAX_D: usize = super::pairwise::multi::MULTI_DIRECT_MAX_D;

/// |x − y| from a squared distance (α = 1).
#[derive(Clone, Copy)]
pub struct SqrtMap;
impl PairMap for SqrtMap {
    const LOG: bool = false;
    #[inline(always)]
    fn value(&self, d2: f64) -> f64 {
        d2.sqrt()
    }
    #[inline(always)]
    fn mean_factor(&self, _d2: f64) -> f64 {
        0.0
    }
}

/// |x − y|^α from a squared distance: (d²)^(α/2).
#[derive(Clone, Copy)]
pub struct PowMap {
    /// α / 2.
    pub half: f64,
}
impl PairMap for PowMap {
    const LOG: bool = false;
    #[inline(always)]
    fn value(&self, d2: f64) -> f64 {
        if d2 > 0.0 {
            d2.powf(self.half)
        } else {
            0.0
        }
    }
    #[inline(always)]
    fn mean_factor(&self, _d2: f64) -> f64 {
        0.0
    }
}

/// How to compute a statistic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// The O(n log n) path when both samples are 1-D and α = 1, else the engine.
    Auto,
    /// The O(n²)-time, O(n)-memory pairwise engine.
    Pairwise,
    /// The O(n log n) sorting path (1-D samples, α = 1 only).
    Sort,
}

impl Method {
    /// Parses "auto", "pairwise" or "sort".
    pub fn parse(s: &str) -> Result<Method> {
        match s {
            "auto" => Ok(Method::Auto),
            "pairwise" => Ok(Method::Pairwise),
            "sort" => Ok(Method::Sort),
            o => Err(invalid!(
                "method must be 'auto', 'pairwise' or 'sort'; got {o:?}"
            )),
        }
    }
}

/// Checks the exponent α ∈ (0, 2).
pub fn check_exponent(alpha: f64) -> Result<()> {
    if !(alpha > 0.0 && alpha < 2.0) {
        return Err(invalid!(
            "exponent must be in the open interval (0, 2); got {alpha}"
        ));
    }
    Ok(())
}

/// Row-major f64 copy of `p` with the column means removed (distances are unchanged; the
/// GEMM identity and the 1-D sums lose far less precision on centred data).
pub fn centred<T: Float>(p: Points<'_, T>) -> Result<Vec<f64>> {
    let (n, d) = (p.n, p.d);
    let mut mean = vec![0.0f64; d];
    for i in 0..n {
        for (m, x) in mean.iter_mut().zip(p.row(i)) {
            *m += x.to_f64();
        }
    }
    for m in &mut mean {
        *m /= n.max(1) as f64;
    }
    // A float64 copy as large as the input: a fallible allocation (MemoryError, no abort).
    let mut out = try_vec(n * d, 0.0f64, "a float64 copy of the sample")?;
    for (i, o) in out.chunks_exact_mut(d.max(1)).enumerate().take(n) {
        for ((v, m), x) in o.iter_mut().zip(&mean).zip(p.row(i)) {
            *v = x.to_f64() - m;
        }
    }
    Ok(out)
}

/// Row sums Σ_j |x_i − x_j|^α of centred f64 points (pass 1).
pub fn row_sums(p: Points<'_, f64>, alpha: f64, stop: &AtomicBool) -> Result<Vec<f64>> {
    // The diagonal is zero by definition; skipping it avoids GEMM rounding there.
    pair_row_sums(p, p, alpha, true, stop)
}

/// Row sums Σ_j |r_i − c_j|^α of `rows` against `cols`, skipping the diagonal when `same`
/// (shared by [`row_sums`] and [`cross_row_sums`]; no checks).
fn pair_row_sums(
    rows: Points<'_, f64>,
    cols: Points<'_, f64>,
    alpha: f64,
    same: bool,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    fn with<F: PairMap>(
        f: F,
        rows: Points<'_, f64>,
        cols: Points<'_, f64>,
        same: bool,
        stop: &AtomicBool,
    ) -> Result<Vec<f64>> {
        let w = vec![1.0; cols.n];
        let red = KernelRows {
            f,
            scales: &[1.0],
            w: &w,
            exclude_self: same,
            sumsq: false,
            mean: None,
            d: rows.d,
        };
        let st = reduce_rows_with(rows, cols, &red, stop, Some(rows.d <= DIRECT_MAX_D))?;
        Ok(RowStats::from_states(1, st).sum)
    }
    if alpha == 1.0 {
        with(SqrtMap, rows, cols, same, stop)
    } else {
        with(PowMap { half: 0.5 * alpha }, rows, cols, same, stop)
    }
}

/// Per-row centring offsets c_i, so that the centred distance is a_ij − c_i − c_j.
pub fn offsets(rows: &[f64], unbiased: bool) -> Vec<f64> {
    let n = rows.len() as f64;
    let mut tot = Acc::default();
    for &r in rows {
        tot.add(r);
    }
    let total = tot.value();
    if unbiased {
        let g = total / (2.0 * (n - 1.0) * (n - 2.0));
        rows.iter().map(|&r| r / (n - 2.0) - g).collect()
    } else {
        let g = total / (2.0 * n * n);
        rows.iter().map(|&r| r / n - g).collect()
    }
}

/// Lane-ordered dot product (vectorises; fixed order, so reproducible).
#[inline(always)]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut t = 0.0;
    for (x, y) in ta.iter().zip(tb) {
        t += x * y;
    }
    finish_lanes(&acc) + t
}

/// Pass 2: Σ_ij A^k_ij A^l_ij for the requested pairs (k, l) of samples, where
/// A^k_ij = f(d²_k(i, j)) − c^k_i − c^k_j, over all i, j (V) or i ≠ j (U).
pub struct Centred<'a, F> {
    /// Distance map (α).
    pub f: F,
    /// Offsets per sample.
    pub c: Vec<&'a [f64]>,
    /// Include the diagonal (V statistic); its distance is zero.
    pub diag: bool,
    /// Products to accumulate, as (k, l) sample indices.
    pub pairs: Vec<(usize, usize)>,
}

/// Block state of [`Centred`].
pub struct CentredState {
    /// One accumulator per requested pair.
    pub acc: Vec<Acc>,
    v: Vec<Vec<f64>>,
}

impl<F: PairMap> MultiReducer for Centred<'_, F> {
    type State = CentredState;
    fn upper(&self) -> bool {
        true
    }
    fn init(&self, _r0: usize, _nr: usize) -> CentredState {
        CentredState {
            acc: vec![Acc::default(); self.pairs.len()],
            v: self.c.iter().map(|_| vec![0.0; COL_TILE]).collect(),
        }
    }
    #[inline(always)]
    fn tile<M: Fma>(
        &self,
        st: &mut CentredState,
        r0: usize,
        nr: usize,
        c0: usize,
        nc: usize,
        d2: &[Vec<f64>],
    ) {
        for i in 0..nr {
            let gi = r0 + i;
            // Columns strictly above the diagonal: j > gi.
            let lo = (gi + 1).saturating_sub(c0).min(nc);
            for (k, ck) in self.c.iter().enumerate() {
                let ci = ck[gi];
                let cc = &ck[c0 + lo..c0 + nc];
                let drow = &d2[k][i * COL_TILE + lo..i * COL_TILE + nc];
                let v = &mut st.v[k][lo..nc];
                for j in 0..v.len() {
                    v[j] = (self.f.value(drow[j]) - ci) - cc[j];
                }
            }
            let on_diag = self.diag && gi >= c0 && gi < c0 + nc;
            for (p, &(k, l)) in self.pairs.iter().enumerate() {
                if lo < nc {
                    let s = dot(&st.v[k][lo..nc], &st.v[l][lo..nc]);
                    st.acc[p].add(2.0 * s);
                }
                if on_diag {
                    // a_ii = 0, so A_ii = −2 c_i.
                    st.acc[p].add(4.0 * self.c[k][gi] * self.c[l][gi]);
                }
            }
        }
    }
}

/// Σ A^k A^l over pairs for the requested (k, l), from centred f64 samples and offsets.
pub fn centred_products(
    sets: &[Points<'_, f64>],
    offs: &[&[f64]],
    alpha: f64,
    unbiased: bool,
    pairs: Vec<(usize, usize)>,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    fn with<F: PairMap>(
        f: F,
        sets: &[Points<'_, f64>],
        offs: &[&[f64]],
        unbiased: bool,
        pairs: Vec<(usize, usize)>,
        stop: &AtomicBool,
    ) -> Result<Vec<f64>> {
        let np = pairs.len();
        let red = Centred {
            f,
            c: offs.to_vec(),
            diag: !unbiased,
            pairs,
        };
        let states = reduce_pairs_multi(sets, &red, stop)?;
        let mut tot = vec![Acc::default(); np];
        for s in &states {
            for (t, a) in tot.iter_mut().zip(&s.acc) {
                t.merge(a);
            }
        }
        Ok(tot.iter().map(|a| a.value()).collect())
    }
    if alpha == 1.0 {
        with(SqrtMap, sets, offs, unbiased, pairs, stop)
    } else {
        with(
            PowMap { half: 0.5 * alpha },
            sets,
            offs,
            unbiased,
            pairs,
            stop,
        )
    }
}

/// dCov²(x, y), dCov²(x, x) and dCov²(y, y), V or U statistics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DcovStats {
    /// dCov²(x, y).
    pub cov: f64,
    /// dCov²(x, x).
    pub var_x: f64,
    /// dCov²(y, y).
    pub var_y: f64,
}

impl DcovStats {
    /// Squared distance correlation: cov / sqrt(|var_x · var_y|), 0 when that is 0.
    pub fn cor_sqr(&self) -> f64 {
        let den = (self.var_x * self.var_y).abs().sqrt();
        if den > 0.0 {
            self.cov / den
        } else {
            0.0
        }
    }
}

/// Minimum sample size for a statistic.
pub fn check_n(n: usize, unbiased: bool) -> Result<()> {
    if unbiased && n < 4 {
        return Err(invalid!(
            "unbiased (U) statistics need at least 4 observations; got {n}"
        ));
    }
    if n < 1 {
        return Err(invalid!("at least one observation is needed; got 0"));
    }
    Ok(())
}

/// Normalisation of Σ A B: 1/n² (V) or 1/(n(n − 3)) (U).
pub fn norm_factor(n: usize, unbiased: bool) -> f64 {
    let nf = n as f64;
    if unbiased {
        1.0 / (nf * (nf - 3.0))
    } else {
        1.0 / (nf * nf)
    }
}

/// Distance covariance statistics of two samples with the same number of observations.
/// Memory: centred f64 copies of x and y, and O(n) per pass.
pub fn dcov_stats<T: Float>(
    x: Points<'_, T>,
    y: Points<'_, T>,
    alpha: f64,
    unbiased: bool,
    method: Method,
    stop: &AtomicBool,
) -> Result<DcovStats> {
    check_exponent(alpha)?;
    if x.n != y.n {
        return Err(invalid!(
            "x and y must have the same number of observations; got {} and {}",
            x.n,
            y.n
        ));
    }
    let n = x.n;
    check_n(n, unbiased)?;
    let one_d = x.d == 1 && y.d == 1 && alpha == 1.0;
    match method {
        Method::Sort if !one_d => {
            return Err(invalid!(
                "method='sort' needs 1-D x and y and exponent 1; got dimensions {} and {}, \
                 exponent {alpha}",
                x.d,
                y.d
            ))
        }
        Method::Sort | Method::Auto if one_d => {
            let xs: Vec<f64> = x.data.iter().map(|v| v.to_f64()).collect();
            let ys: Vec<f64> = y.data.iter().map(|v| v.to_f64()).collect();
            return fast1d::dcov_stats(&xs, &ys, unbiased, stop);
        }
        _ => {}
    }
    let xc = centred(x)?;
    let yc = centred(y)?;
    let px = Points::new(&xc, n, x.d)?;
    let py = Points::new(&yc, n, y.d)?;
    let rx = row_sums(px, alpha, stop)?;
    let ry = row_sums(py, alpha, stop)?;
    let (ox, oy) = (offsets(&rx, unbiased), offsets(&ry, unbiased));
    let s = centred_products(
        &[px, py],
        &[&ox, &oy],
        alpha,
        unbiased,
        vec![(0, 1), (0, 0), (1, 1)],
        stop,
    )?;
    let f = norm_factor(n, unbiased);
    Ok(DcovStats {
        cov: s[0] * f,
        var_x: s[1] * f,
        var_y: s[2] * f,
    })
}

/// The six U-statistic inner products (xx, yy, zz, xy, xz, yz) of three samples, each
/// divided by n(n − 3): the ingredients of the partial distance correlation.
pub fn u_products3<T: Float>(
    x: Points<'_, T>,
    y: Points<'_, T>,
    z: Points<'_, T>,
    alpha: f64,
    stop: &AtomicBool,
) -> Result<[f64; 6]> {
    check_exponent(alpha)?;
    let n = x.n;
    if y.n != n || z.n != n {
        return Err(invalid!(
            "x, y and z must have the same number of observations; got {}, {} and {}",
            n,
            y.n,
            z.n
        ));
    }
    check_n(n, true)?;
    let cs: Vec<Vec<f64>> = [x, y, z]
        .iter()
        .map(|p| centred(*p))
        .collect::<Result<_>>()?;
    let ds = [x.d, y.d, z.d];
    let pts: Vec<Points<'_, f64>> = cs
        .iter()
        .zip(ds)
        .map(|(c, d)| Points::new(c, n, d))
        .collect::<Result<_>>()?;
    let mut offs = Vec::with_capacity(3);
    for p in &pts {
        offs.push(offsets(&row_sums(*p, alpha, stop)?, true));
    }
    let o: Vec<&[f64]> = offs.iter().map(|v| v.as_slice()).collect();
    let pairs = vec![(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)];
    let s = centred_products(&pts, &o, alpha, true, pairs, stop)?;
    let f = norm_factor(n, true);
    Ok([s[0] * f, s[1] * f, s[2] * f, s[3] * f, s[4] * f, s[5] * f])
}

/// Σ over pairs of Π_k (−A^k_ij · w_k + c): the joint distance covariance sum.
pub struct Joint<'a, F> {
    /// Distance map (α).
    pub f: F,
    /// Offsets per sample.
    pub c: Vec<&'a [f64]>,
    /// Per-sample factors (1, or 1/dCov(X_k, X_k) for the scale-invariant version).
    pub w: Vec<f64>,
    /// The constant c of Chakraborty & Zhang.
    pub cc: f64,
    /// Include the diagonal (V statistic).
    pub diag: bool,
}

/// Block state of [`Joint`].
pub struct JointState {
    /// The block's sum.
    pub acc: Acc,
    p: Vec<f64>,
    /// Elementary symmetric polynomials e_1..e_d of the factors, COL_TILE each.
    e: Vec<f64>,
}

impl<F: PairMap> MultiReducer for Joint<'_, F> {
    type State = JointState;
    fn upper(&self) -> bool {
        true
    }
    fn init(&self, _r0: usize, _nr: usize) -> JointState {
        JointState {
            acc: Acc::default(),
            p: vec![0.0; COL_TILE],
            e: vec![0.0; COL_TILE * self.c.len()],
        }
    }
    #[inline(always)]
    fn tile<M: Fma>(
        &self,
        st: &mut JointState,
        r0: usize,
        nr: usize,
        c0: usize,
        nc: usize,
        d2: &[Vec<f64>],
    ) {
        // Π_k (u_k + c) − c^d − c^(d−1) e_1 = Σ_{m≥2} c^(d−m) e_m(u): the terms of degree
        // 0 and 1 add up to exactly c^d n² (V) or c^d n(n − 1) (U) and 0 over all pairs
        // (centred matrices sum to zero), so they are left out instead of being
        // cancelled in floating point (which loses everything when c is large against
        // the u_k, and overflows when c^d does). e_m by the usual recurrence, the sum by
        // Horner in c (no c^(d−m) that could overflow against a zero e_m).
        let d = self.c.len();
        for i in 0..nr {
            let gi = r0 + i;
            let lo = (gi + 1).saturating_sub(c0).min(nc);
            let len = nc - lo;
            let e = &mut st.e[..d * COL_TILE];
            for em in e.chunks_exact_mut(COL_TILE) {
                em[..len].fill(0.0);
            }
            for (k, ck) in self.c.iter().enumerate() {
                let (ci, w) = (ck[gi], self.w[k]);
                let cc = &ck[c0 + lo..c0 + nc];
                let drow = &d2[k][i * COL_TILE + lo..i * COL_TILE + nc];
                let u = &mut st.p[..len];
                for j in 0..len {
                    u[j] = ((ci + cc[j]) - self.f.value(drow[j])) * w;
                }
                // e_m (chunk m − 1) += u e_{m−1}, m from k + 1 down to 1 (e_0 = 1).
                for m in (1..=(k + 1).min(d)).rev() {
                    let (lower, upper) = e.split_at_mut((m - 1) * COL_TILE);
                    let em = &mut upper[..len];
                    if m == 1 {
                        for j in 0..len {
                            em[j] += u[j];
                        }
                    } else {
                        let prev = &lower[(m - 2) * COL_TILE..(m - 2) * COL_TILE + len];
                        for j in 0..len {
                            em[j] = M::ma(u[j], prev[j], em[j]);
                        }
                    }
                }
            }
            if len > 0 {
                // Σ_{m≥2} c^(d−m) e_m by Horner: ((e_2 c + e_3) c + …) c + e_d.
                let p = &mut st.p[..len];
                p.copy_from_slice(&e[COL_TILE..COL_TILE + len]);
                for m in 3..=d {
                    let em = &e[(m - 1) * COL_TILE..(m - 1) * COL_TILE + len];
                    for j in 0..len {
                        p[j] = M::ma(p[j], self.cc, em[j]);
                    }
                }
                st.acc.add(2.0 * crate::core::simd::sum(p));
            }
            if self.diag && gi >= c0 && gi < c0 + nc {
                // a_ii = 0, so −A_ii = 2 c_i.
                let mut es = vec![0.0f64; d + 1];
                es[0] = 1.0;
                for (k, ck) in self.c.iter().enumerate() {
                    let u = 2.0 * ck[gi] * self.w[k];
                    for m in (1..=(k + 1).min(d)).rev() {
                        es[m] += u * es[m - 1];
                    }
                }
                let mut t = es[2];
                for em in &es[3..] {
                    t = t * self.cc + em;
                }
                st.acc.add(t);
            }
        }
    }
}

/// What every JdCov computation needs: centred f64 copies of the samples, their centring
/// offsets, the per-sample factors w_k and (with `scale`) each dCov²(X_k, X_k).
pub struct JointPrep {
    /// Centred row-major f64 copies.
    pub cs: Vec<Vec<f64>>,
    /// Dimensions.
    pub dims: Vec<usize>,
    /// Centring offsets per sample (V or U).
    pub offs: Vec<Vec<f64>>,
    /// 1 for every sample, or 1/dCov(X_k, X_k) (0 for a sample of zero variance).
    pub w: Vec<f64>,
    /// dCov²(X_k, X_k) per sample when `scale` (else empty).
    pub var: Vec<f64>,
    /// Observations.
    pub n: usize,
}

impl JointPrep {
    /// Checks the arguments and runs the row-sum passes (and the variance pass for
    /// `scale`).
    pub fn new<T: Float>(
        xs: &[Points<'_, T>],
        c: f64,
        alpha: f64,
        unbiased: bool,
        scale: bool,
        stop: &AtomicBool,
    ) -> Result<JointPrep> {
        check_exponent(alpha)?;
        if xs.len() < 2 {
            return Err(invalid!(
                "jdcov needs at least two samples; got {}",
                xs.len()
            ));
        }
        if !c.is_finite() || c < 0.0 {
            return Err(invalid!("c must be a non-negative finite number; got {c}"));
        }
        let n = xs[0].n;
        if let Some(p) = xs.iter().find(|p| p.n != n) {
            return Err(invalid!(
                "all samples must have the same number of observations; got {n} and {}",
                p.n
            ));
        }
        check_n(n, unbiased)?;
        let cs: Vec<Vec<f64>> = xs.iter().map(|p| centred(*p)).collect::<Result<_>>()?;
        let dims: Vec<usize> = xs.iter().map(|p| p.d).collect();
        let pts: Vec<Points<'_, f64>> = cs
            .iter()
            .zip(&dims)
            .map(|(v, &d)| Points::new(v, n, d))
            .collect::<Result<_>>()?;
        let mut offs = Vec::with_capacity(xs.len());
        for p in &pts {
            offs.push(offsets(&row_sums(*p, alpha, stop)?, unbiased));
        }
        let (mut w, mut var) = (vec![1.0; xs.len()], Vec::new());
        if scale {
            let o: Vec<&[f64]> = offs.iter().map(|v| v.as_slice()).collect();
            let f = norm_factor(n, unbiased);
            let pairs = (0..xs.len()).map(|k| (k, k)).collect();
            let v = centred_products(&pts, &o, alpha, unbiased, pairs, stop)?;
            var = v.iter().map(|&s| s * f).collect();
            w = var
                .iter()
                .map(|&s: &f64| {
                    let d = s.max(0.0).sqrt();
                    if d > 0.0 {
                        1.0 / d
                    } else {
                        0.0
                    }
                })
                .collect();
        }
        drop(pts);
        Ok(JointPrep {
            cs,
            dims,
            offs,
            w,
            var,
            n,
        })
    }

    /// The centred samples as point sets.
    pub fn points(&self) -> Result<Vec<Points<'_, f64>>> {
        self.cs
            .iter()
            .zip(&self.dims)
            .map(|(v, &d)| Points::new(v, self.n, d))
            .collect()
    }

    /// The offsets as slices.
    pub fn offsets(&self) -> Vec<&[f64]> {
        self.offs.iter().map(|v| v.as_slice()).collect()
    }

    /// JdCov² from the prepared samples (one upper-triangle pass).
    pub fn value(&self, c: f64, alpha: f64, unbiased: bool, stop: &AtomicBool) -> Result<f64> {
        fn with<F: PairMap>(
            pts: &[Points<'_, f64>],
            red: Joint<'_, F>,
            stop: &AtomicBool,
        ) -> Result<f64> {
            let states = reduce_pairs_multi(pts, &red, stop)?;
            let mut tot = Acc::default();
            for s in &states {
                tot.merge(&s.acc);
            }
            Ok(tot.value())
        }
        let pts = self.points()?;
        let o = self.offsets();
        let w = self.w.clone();
        let total = if alpha == 1.0 {
            let red = Joint {
                f: SqrtMap,
                c: o,
                w,
                cc: c,
                diag: !unbiased,
            };
            with(&pts, red, stop)?
        } else {
            let red = Joint {
                f: PowMap { half: 0.5 * alpha },
                c: o,
                w,
                cc: c,
                diag: !unbiased,
            };
            with(&pts, red, stop)?
        };
        // The constant and linear terms are left out of the pass (see `Joint::tile`), so
        // nothing is subtracted here.
        Ok(total * norm_factor(self.n, unbiased))
    }
}

/// Joint distance covariance JdCov²(X_1, …, X_d; c) of Chakraborty & Zhang (2019): V
/// statistic (1/n²) Σ_ij Π_k (Û_k(i, j) + c) − c^d with Û_k = −A_k (double-centred), or
/// U statistic (1/(n(n−3))) Σ_{i≠j} Π_k (Ũ_k + c) + c^d (1 − n)/(n − 3) with U-centring.
/// `scale`: each Û_k is divided by dCov(X_k, X_k) (the same V or U version), which makes
/// the statistic scale invariant. Memory: centred copies of the samples, O(n) per pass.
pub fn jdcov<T: Float>(
    xs: &[Points<'_, T>],
    c: f64,
    alpha: f64,
    unbiased: bool,
    scale: bool,
    stop: &AtomicBool,
) -> Result<f64> {
    JointPrep::new(xs, c, alpha, unbiased, scale, stop)?.value(c, alpha, unbiased, stop)
}

/// Sum of |x_i − y_j|^α over all pairs of two point sets (dimension checked by the engine).
fn cross_sum(x: Points<'_, f64>, y: Points<'_, f64>, alpha: f64, stop: &AtomicBool) -> Result<f64> {
    fn with<F: PairMap>(
        f: F,
        x: Points<'_, f64>,
        y: Points<'_, f64>,
        stop: &AtomicBool,
    ) -> Result<f64> {
        let w = vec![1.0; y.n];
        let red = KernelRows {
            f,
            scales: &[1.0],
            w: &w,
            exclude_self: false,
            sumsq: false,
            mean: None,
            d: x.d,
        };
        let st = reduce_rows_with(x, y, &red, stop, Some(x.d <= DIRECT_MAX_D))?;
        let mut acc = Acc::default();
        for v in RowStats::from_states(1, st).sum {
            acc.add(v);
        }
        Ok(acc.value())
    }
    if alpha == 1.0 {
        with(SqrtMap, x, y, stop)
    } else {
        with(PowMap { half: 0.5 * alpha }, x, y, stop)
    }
}

/// Centred f64 copies of two samples, shifted by the same vector (their pooled mean).
fn pooled_centred<T: Float>(x: Points<'_, T>, y: Points<'_, T>) -> Result<(Vec<f64>, Vec<f64>)> {
    let d = x.d;
    let mut mean = vec![0.0f64; d];
    for p in [x, y] {
        for i in 0..p.n {
            for (m, v) in mean.iter_mut().zip(p.row(i)) {
                *m += v.to_f64();
            }
        }
    }
    let tot = (x.n + y.n).max(1) as f64;
    for m in &mut mean {
        *m /= tot;
    }
    let shift = |p: Points<'_, T>| -> Result<Vec<f64>> {
        let mut out = try_vec(p.n * d, 0.0f64, "a float64 copy of the sample")?;
        for (i, o) in out.chunks_exact_mut(d.max(1)).enumerate().take(p.n) {
            for ((w, m), v) in o.iter_mut().zip(&mean).zip(p.row(i)) {
                *w = v.to_f64() - m;
            }
        }
        Ok(out)
    };
    Ok((shift(x)?, shift(y)?))
}

/// Energy distance 2 E|X−Y|^α − E|X−X'|^α − E|Y−Y'|^α between two samples; V statistic
/// (means over all pairs, zero diagonal included) or U statistic (within-sample means over
/// i ≠ j). Memory: centred copies of x and y and O(n + m) per pass.
pub fn energy_distance<T: Float>(
    x: Points<'_, T>,
    y: Points<'_, T>,
    alpha: f64,
    unbiased: bool,
    stop: &AtomicBool,
) -> Result<f64> {
    check_exponent(alpha)?;
    if x.d != y.d {
        return Err(invalid!(
            "x and y must have the same dimension; got {} and {}",
            x.d,
            y.d
        ));
    }
    let (n, m) = (x.n, y.n);
    let need = if unbiased { 2 } else { 1 };
    if n < need || m < need {
        return Err(invalid!(
            "energy distance needs at least {need} observation(s) in each sample; got {n} and {m}"
        ));
    }
    let (xc, yc) = pooled_centred(x, y)?;
    let px = Points::new(&xc, n, x.d)?;
    let py = Points::new(&yc, m, y.d)?;
    let sxy = cross_sum(px, py, alpha, stop)?;
    let sxx = cross_sum(px, px, alpha, stop)?;
    let syy = cross_sum(py, py, alpha, stop)?;
    let (nf, mf) = (n as f64, m as f64);
    let (dx, dy) = if unbiased {
        (nf * (nf - 1.0), mf * (mf - 1.0))
    } else {
        (nf * nf, mf * mf)
    };
    Ok(2.0 * (sxy / (nf * mf)) - sxx / dx - syy / dy)
}

/// Σ_ij |x_i − y_j|^α over all pairs of two point sets taken as they are (no centring):
/// one block pair's partial sum of a distributed energy distance, whose caller shifts
/// every block by one common vector first (as [`energy_distance`] shifts by the pooled
/// mean). Empty sets give 0.
pub fn energy_pair_sum(
    x: Points<'_, f64>,
    y: Points<'_, f64>,
    alpha: f64,
    stop: &AtomicBool,
) -> Result<f64> {
    check_exponent(alpha)?;
    if x.d != y.d {
        return Err(invalid!(
            "x and y must have the same dimension; got {} and {}",
            x.d,
            y.d
        ));
    }
    if x.n == 0 || y.n == 0 {
        return Ok(0.0);
    }
    cross_sum(x, y, alpha, stop)
}

/// Row sums Σ_{j} |r_i − c_j|^α of the points `rows` against the points `cols` (one block
/// pair of a distributed dCov's first pass; `same`: the two blocks are the same rows, whose
/// zero diagonal is skipped as [`row_sums`] skips it).
pub fn cross_row_sums(
    rows: Points<'_, f64>,
    cols: Points<'_, f64>,
    alpha: f64,
    same: bool,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    check_exponent(alpha)?;
    if rows.d != cols.d || (same && rows.n != cols.n) {
        return Err(invalid!(
            "row and column blocks must have the same dimension (and, when the same, size)"
        ));
    }
    if rows.n == 0 || cols.n == 0 {
        return Ok(vec![0.0; rows.n]);
    }
    pair_row_sums(rows, cols, alpha, same, stop)
}

/// The centring offsets of the rows of one block, from their row sums and the total of
/// all n row sums (as [`offsets`] computes them for the whole sample).
fn block_offsets(rows: &[f64], total: f64, n: usize, unbiased: bool) -> Vec<f64> {
    let n = n as f64;
    if unbiased {
        let g = total / (2.0 * (n - 1.0) * (n - 2.0));
        rows.iter().map(|&r| r / (n - 2.0) - g).collect()
    } else {
        let g = total / (2.0 * n * n);
        rows.iter().map(|&r| r / n - g).collect()
    }
}

/// One sample's block of a distributed dCov: its points and the row sums of those points
/// against the whole sample.
#[derive(Clone, Copy)]
pub struct CentredBlock<'a> {
    /// Points (centred f64, as for the whole sample).
    pub p: Points<'a, f64>,
    /// Σ_j |p_i − x_j|^α over all n points of the sample, per row.
    pub rows: &'a [f64],
}

/// (Σ A·B, Σ A·A, Σ B·B) over the rows i of block I and j of block J, with the centred
/// distances A_ij = |x_i − x_j|^α − c_i − c_j and B alike (offsets c from the row sums
/// and `totals` = (Σ row sums of x, of y) over all `n` observations, V or U). With
/// `same` (I = J) the diagonal contributes A_ii B_ii = 4 c_i c'_i (V) or nothing (U).
/// Summed over all ordered block pairs this is the Σ A B of [`dcov_stats`]; memory
/// O(|I| + |J|).
#[allow(clippy::too_many_arguments)]
pub fn dcov_block_products(
    x: (CentredBlock<'_>, CentredBlock<'_>),
    y: (CentredBlock<'_>, CentredBlock<'_>),
    totals: (f64, f64),
    n: usize,
    alpha: f64,
    unbiased: bool,
    same: bool,
    stop: &AtomicBool,
) -> Result<[f64; 3]> {
    use crate::core::threads;
    use rayon::prelude::*;
    check_exponent(alpha)?;
    let (xi, xj) = x;
    let (yi, yj) = y;
    let ok = xi.p.n == yi.p.n
        && xj.p.n == yj.p.n
        && xi.p.d == xj.p.d
        && yi.p.d == yj.p.d
        && xi.rows.len() == xi.p.n
        && xj.rows.len() == xj.p.n
        && yi.rows.len() == yi.p.n
        && yj.rows.len() == yj.p.n
        && (!same || xi.p.n == xj.p.n);
    if !ok {
        return Err(invalid!(
            "dcov blocks of x and y do not match in size or dimension"
        ));
    }
    let cxi = block_offsets(xi.rows, totals.0, n, unbiased);
    let cxj = block_offsets(xj.rows, totals.0, n, unbiased);
    let cyi = block_offsets(yi.rows, totals.1, n, unbiased);
    let cyj = block_offsets(yj.rows, totals.1, n, unbiased);
    fn body<F: PairMap>(f: &F, a: &[f64], b: &[f64]) -> f64 {
        let s: f64 = a.iter().zip(b).map(|(u, v)| (u - v) * (u - v)).sum();
        f.value(s)
    }
    fn run<F: PairMap>(
        f: F,
        x: (Points<'_, f64>, Points<'_, f64>),
        y: (Points<'_, f64>, Points<'_, f64>),
        c: [&[f64]; 4],
        unbiased: bool,
        same: bool,
        stop: &AtomicBool,
    ) -> Result<[f64; 3]> {
        let [cxi, cxj, cyi, cyj] = c;
        let rows: Vec<[f64; 3]> = threads::install(|| {
            (0..x.0.n)
                .into_par_iter()
                .map(|i| -> Result<[f64; 3]> {
                    threads::check(stop)?;
                    let mut s = [0.0f64; 3];
                    for j in 0..x.1.n {
                        let (a, b) = if same && i == j {
                            if unbiased {
                                continue;
                            }
                            (-2.0 * cxi[i], -2.0 * cyi[i])
                        } else {
                            (
                                (body(&f, x.0.row(i), x.1.row(j)) - cxi[i]) - cxj[j],
                                (body(&f, y.0.row(i), y.1.row(j)) - cyi[i]) - cyj[j],
                            )
                        };
                        s[0] += a * b;
                        s[1] += a * a;
                        s[2] += b * b;
                    }
                    Ok(s)
                })
                .collect::<Result<Vec<_>>>()
        })??;
        let mut acc = [Acc::default(), Acc::default(), Acc::default()];
        for r in &rows {
            for (a, v) in acc.iter_mut().zip(r) {
                a.add(*v);
            }
        }
        Ok([acc[0].value(), acc[1].value(), acc[2].value()])
    }
    let c = [&cxi[..], &cxj[..], &cyi[..], &cyj[..]];
    let (px, py) = ((xi.p, xj.p), (yi.p, yj.p));
    if alpha == 1.0 {
        run(SqrtMap, px, py, c, unbiased, same, stop)
    } else {
        run(
            PowMap { half: 0.5 * alpha },
            px,
            py,
            c,
            unbiased,
            same,
            stop,
        )
    }
}

/// One block pair (I, J) of a distributed JdCov²: the sum over rows i of I and j of J
/// (i ≠ j; with `same`, I = J, the V statistic also takes i = j, where Û_k(i, i) = 2 c_ki)
/// of Σ_{m≥2} c^(d−m) e_m(u_1, …, u_d) with u_k = w_k·Û_k(i, j) = w_k·(c_ki + c_kj −
/// |x_ki − x_kj|^α), the terms [`jdcov`]'s pass sums (offsets c from each sample's row
/// sums against the whole sample and `totals`, the totals of those row sums, over all `n`
/// observations, V or U). Summed over all ordered block pairs and multiplied by the
/// normalisation this is [`jdcov`]'s value. `bi[k]`, `bj[k]`: sample k's blocks; `w`: its
/// factor (1, or 1/dCov(X_k, X_k) for the scaled statistic). Memory O(|I| + |J|) per
/// sample.
#[allow(clippy::too_many_arguments)]
pub fn jdcov_block_sum(
    bi: &[CentredBlock<'_>],
    bj: &[CentredBlock<'_>],
    totals: &[f64],
    w: &[f64],
    cc: f64,
    n: usize,
    alpha: f64,
    unbiased: bool,
    same: bool,
    stop: &AtomicBool,
) -> Result<f64> {
    use crate::core::threads;
    use rayon::prelude::*;
    check_exponent(alpha)?;
    let d = bi.len();
    let (ni, nj) = (
        bi.first().map_or(0, |b| b.p.n),
        bj.first().map_or(0, |b| b.p.n),
    );
    let ok = d >= 2
        && bj.len() == d
        && totals.len() == d
        && w.len() == d
        && bi.iter().zip(bj).all(|(a, b)| {
            a.p.n == ni && b.p.n == nj && a.p.d == b.p.d && a.rows.len() == ni && b.rows.len() == nj
        })
        && (!same || ni == nj);
    if !ok {
        return Err(invalid!(
            "jdcov blocks must give at least two samples, each with blocks of the same rows, \
             row sums, a total and a factor"
        ));
    }
    if !cc.is_finite() || cc < 0.0 {
        return Err(invalid!("c must be a non-negative finite number; got {cc}"));
    }
    let ci: Vec<Vec<f64>> = bi
        .iter()
        .zip(totals)
        .map(|(b, &t)| block_offsets(b.rows, t, n, unbiased))
        .collect();
    let cj: Vec<Vec<f64>> = bj
        .iter()
        .zip(totals)
        .map(|(b, &t)| block_offsets(b.rows, t, n, unbiased))
        .collect();
    fn body<F: PairMap>(f: &F, a: &[f64], b: &[f64]) -> f64 {
        let s: f64 = a.iter().zip(b).map(|(u, v)| (u - v) * (u - v)).sum();
        f.value(s)
    }
    /// Σ_{m≥2} c^(d−m) e_m(u) by the recurrence and Horner, as the in-memory pass.
    fn terms(u: &[f64], e: &mut [f64], cc: f64) -> f64 {
        e.fill(0.0);
        e[0] = 1.0;
        for (k, &uk) in u.iter().enumerate() {
            for m in (1..=k + 1).rev() {
                e[m] = uk.mul_add(e[m - 1], e[m]);
            }
        }
        let mut t = e[2];
        for em in &e[3..] {
            t = t.mul_add(cc, *em);
        }
        t
    }
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    fn run<F: PairMap>(
        f: F,
        bi: &[CentredBlock<'_>],
        bj: &[CentredBlock<'_>],
        ci: &[Vec<f64>],
        cj: &[Vec<f64>],
        w: &[f64],
        cc: f64,
        unbiased: bool,
        same: bool,
        stop: &AtomicBool,
    ) -> Result<f64> {
        let d = bi.len();
        let (ni, nj) = (bi[0].p.n, bj[0].p.n);
        let rows: Vec<Acc> = threads::install(|| {
            (0..ni)
                .into_par_iter()
                .map(|i| -> Result<Acc> {
                    threads::check(stop)?;
                    let (mut u, mut e) = (vec![0.0f64; d], vec![0.0f64; d + 1]);
                    let mut acc = Acc::default();
                    for j in 0..nj {
                        if same && i == j {
                            if unbiased {
                                continue;
                            }
                            for k in 0..d {
                                u[k] = 2.0 * ci[k][i] * w[k];
                            }
                        } else {
                            for k in 0..d {
                                let r = body(&f, bi[k].p.row(i), bj[k].p.row(j));
                                u[k] = ((ci[k][i] + cj[k][j]) - r) * w[k];
                            }
                        }
                        acc.add(terms(&u, &mut e, cc));
                    }
                    Ok(acc)
                })
                .collect::<Result<Vec<_>>>()
        })??;
        let mut tot = Acc::default();
        for r in &rows {
            tot.merge(r);
        }
        Ok(tot.value())
    }
    if ni == 0 || nj == 0 {
        return Ok(0.0);
    }
    if alpha == 1.0 {
        run(SqrtMap, bi, bj, &ci, &cj, w, cc, unbiased, same, stop)
    } else {
        let f = PowMap { half: 0.5 * alpha };
        run(f, bi, bj, &ci, &cj, w, cc, unbiased, same, stop)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::testing::{sq_dist, sym_vec};

    /// Full-matrix reference: (Σ A B, Σ A A, Σ B B) with V or U centring.
    pub fn naive(x: &[f64], p: usize, y: &[f64], q: usize, alpha: f64, unbiased: bool) -> [f64; 3] {
        let n = x.len() / p;
        let dist = |v: &[f64], d: usize| -> Vec<f64> {
            let mut m = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    let s = sq_dist(v, i, v, j, d);
                    m[i * n + j] = s.sqrt().powf(alpha);
                }
            }
            m
        };
        let centre = |a: &[f64]| -> Vec<f64> {
            let nf = n as f64;
            let r: Vec<f64> = (0..n).map(|i| a[i * n..(i + 1) * n].iter().sum()).collect();
            let t: f64 = r.iter().sum();
            let mut o = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    o[i * n + j] = if unbiased {
                        if i == j {
                            0.0
                        } else {
                            a[i * n + j] - r[i] / (nf - 2.0) - r[j] / (nf - 2.0)
                                + t / ((nf - 1.0) * (nf - 2.0))
                        }
                    } else {
                        a[i * n + j] - r[i] / nf - r[j] / nf + t / (nf * nf)
                    };
                }
            }
            o
        };
        let a = centre(&dist(x, p));
        let b = centre(&dist(y, q));
        let dotm = |u: &[f64], v: &[f64]| -> f64 { u.iter().zip(v).map(|(s, t)| s * t).sum() };
        [dotm(&a, &b), dotm(&a, &a), dotm(&b, &b)]
    }

    #[test]
    fn engine_matches_full_matrices() {
        let stop = AtomicBool::new(false);
        for &(n, p, q, alpha) in &[
            (4, 1, 1, 1.0),
            (70, 2, 3, 1.0),
            (300, 20, 1, 0.5),
            (131, 3, 17, 1.5),
        ] {
            let x = sym_vec(7, n * p);
            let y: Vec<f64> = sym_vec(8, n * q)
                .iter()
                .enumerate()
                .map(|(i, v)| v + x[i % x.len()])
                .collect();
            for unbiased in [false, true] {
                let got = dcov_stats(
                    Points::new(&x, n, p).unwrap(),
                    Points::new(&y, n, q).unwrap(),
                    alpha,
                    unbiased,
                    Method::Pairwise,
                    &stop,
                )
                .unwrap();
                let w = naive(&x, p, &y, q, alpha, unbiased);
                let f = norm_factor(n, unbiased);
                for (g, w) in [got.cov, got.var_x, got.var_y].iter().zip(w) {
                    assert!(
                        (g - w * f).abs() <= 1e-12 * (w * f).abs().max(1e-300),
                        "{g} vs {}",
                        w * f
                    );
                }
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_threads() {
        let stop = AtomicBool::new(false);
        let (n, p) = (700, 3);
        let x = sym_vec(1, n * p);
        let y = sym_vec(2, n * 2);
        let run = || {
            dcov_stats(
                Points::new(&x, n, p).unwrap(),
                Points::new(&y, n, 2).unwrap(),
                1.0,
                false,
                Method::Auto,
                &stop,
            )
            .unwrap()
        };
        let a = run();
        crate::core::threads::set_num_threads(1).unwrap();
        let b = run();
        crate::core::threads::set_num_threads(2).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn jdcov_of_two_samples_is_dcov_and_matches_full_matrices() {
        let stop = AtomicBool::new(false);
        let n = 90;
        let x = sym_vec(21, n * 2);
        let y: Vec<f64> = sym_vec(22, n)
            .iter()
            .enumerate()
            .map(|(i, v)| v + x[2 * i] * x[2 * i])
            .collect();
        let z: Vec<f64> = sym_vec(23, n * 3)
            .iter()
            .enumerate()
            .map(|(i, v)| v * y[i / 3])
            .collect();
        let (px, py, pz) = (
            Points::new(&x, n, 2).unwrap(),
            Points::new(&y, n, 1).unwrap(),
            Points::new(&z, n, 3).unwrap(),
        );
        for unbiased in [false, true] {
            let j = jdcov(&[px, py], 1.0, 1.0, unbiased, false, &stop).unwrap();
            let d = dcov_stats(px, py, 1.0, unbiased, Method::Pairwise, &stop).unwrap();
            assert!((j - d.cov).abs() < 1e-12 * d.cov.abs(), "{j} vs {}", d.cov);
            // Three samples against explicit matrices.
            let mats: Vec<Vec<f64>> = [(&x, 2), (&y, 1), (&z, 3)]
                .iter()
                .map(|(v, d)| {
                    let dist: Vec<f64> = (0..n * n)
                        .map(|t| {
                            let (i, j) = (t / n, t % n);
                            sq_dist(v, i, v, j, *d).sqrt()
                        })
                        .collect();
                    let r: Vec<f64> = (0..n)
                        .map(|i| dist[i * n..(i + 1) * n].iter().sum())
                        .collect();
                    let t: f64 = r.iter().sum();
                    let nf = n as f64;
                    (0..n * n)
                        .map(|q| {
                            let (i, j) = (q / n, q % n);
                            if unbiased {
                                if i == j {
                                    0.0
                                } else {
                                    -(dist[q] - r[i] / (nf - 2.0) - r[j] / (nf - 2.0)
                                        + t / ((nf - 1.0) * (nf - 2.0)))
                                }
                            } else {
                                -(dist[q] - r[i] / nf - r[j] / nf + t / (nf * nf))
                            }
                        })
                        .collect()
                })
                .collect();
            let cc = 0.7;
            let tot: f64 = (0..n * n)
                .map(|q| mats.iter().map(|m| m[q] + cc).product::<f64>())
                .sum();
            let nf = n as f64;
            let want = if unbiased {
                tot / (nf * (nf - 3.0)) - cc.powi(3) * nf / (nf - 3.0)
            } else {
                tot / (nf * nf) - cc.powi(3)
            };
            let got = jdcov(&[px, py, pz], cc, 1.0, unbiased, false, &stop).unwrap();
            assert!(
                (got - want).abs() < 1e-12 * want.abs().max(1e-3),
                "{got} vs {want}"
            );
            // Scale invariance.
            let y2: Vec<f64> = y.iter().map(|v| 1e3 * v - 5.0).collect();
            let py2 = Points::new(&y2, n, 1).unwrap();
            let s1 = jdcov(&[px, py, pz], cc, 1.0, unbiased, true, &stop).unwrap();
            let s2 = jdcov(&[px, py2, pz], cc, 1.0, unbiased, true, &stop).unwrap();
            assert!((s1 - s2).abs() < 1e-10 * s1.abs());
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let stop = AtomicBool::new(false);
        let x = sym_vec(1, 10);
        let p = Points::new(&x, 10, 1).unwrap();
        let q = Points::new(&x[..9], 9, 1).unwrap();
        assert!(dcov_stats(p, q, 1.0, false, Method::Auto, &stop).is_err());
        assert!(dcov_stats(p, p, 2.0, false, Method::Auto, &stop).is_err());
        assert!(dcov_stats(p, p, 0.0, false, Method::Auto, &stop).is_err());
        let small = Points::new(&x[..3], 3, 1).unwrap();
        assert!(dcov_stats(small, small, 1.0, true, Method::Auto, &stop).is_err());
        assert!(dcov_stats(p, p, 0.5, false, Method::Sort, &stop).is_err());
    }

    #[test]
    fn energy_distance_matches_naive() {
        let stop = AtomicBool::new(false);
        let (n, m, d) = (50, 37, 3);
        let x = sym_vec(3, n * d);
        let y: Vec<f64> = sym_vec(4, m * d).iter().map(|v| v * 1.5 + 0.2).collect();
        for alpha in [1.0, 0.7] {
            for unbiased in [false, true] {
                let got = energy_distance(
                    Points::new(&x, n, d).unwrap(),
                    Points::new(&y, m, d).unwrap(),
                    alpha,
                    unbiased,
                    &stop,
                )
                .unwrap();
                let mean = |a: &[f64], na: usize, b: &[f64], nb: usize, skip: bool| -> f64 {
                    let mut s = 0.0;
                    let mut c = 0.0;
                    for i in 0..na {
                        for j in 0..nb {
                            if skip && i == j {
                                continue;
                            }
                            let r = sq_dist(a, i, b, j, d);
                            s += r.sqrt().powf(alpha);
                            c += 1.0;
                        }
                    }
                    s / c
                };
                let want = 2.0 * mean(&x, n, &y, m, false)
                    - mean(&x, n, &x, n, unbiased)
                    - mean(&y, m, &y, m, unbiased);
                assert!((got - want).abs() < 1e-12 * want.abs(), "{got} vs {want}");
            }
        }
    }

    #[test]
    fn energy_pair_sums_of_blocks_add_up_to_the_energy_distance() {
        let stop = AtomicBool::new(false);
        let (n, m, d) = (37, 23, 3);
        let x = sym_vec(21, n * d);
        let y: Vec<f64> = sym_vec(22, m * d).iter().map(|v| v + 0.3).collect();
        let want = energy_distance(
            Points::new(&x, n, d).unwrap(),
            Points::new(&y, m, d).unwrap(),
            1.5,
            false,
            &stop,
        )
        .unwrap();
        // The pooled mean, then block sums over the pairs of blocks of 10 rows.
        let mut mean = vec![0.0; d];
        for r in x.chunks(d).chain(y.chunks(d)) {
            for k in 0..d {
                mean[k] += r[k] / (n + m) as f64;
            }
        }
        let shift = |v: &[f64]| -> Vec<f64> {
            v.chunks(d)
                .flat_map(|r| r.iter().zip(&mean).map(|(a, b)| a - b))
                .collect()
        };
        let (xs, ys) = (shift(&x), shift(&y));
        let sum = |a: &[f64], b: &[f64]| -> f64 {
            let mut t = 0.0;
            for ca in a.chunks(10 * d) {
                for cb in b.chunks(10 * d) {
                    let pa = Points::new(ca, ca.len() / d, d).unwrap();
                    let pb = Points::new(cb, cb.len() / d, d).unwrap();
                    t += energy_pair_sum(pa, pb, 1.5, &stop).unwrap();
                }
            }
            t
        };
        let (nf, mf) = (n as f64, m as f64);
        let got =
            2.0 * sum(&xs, &ys) / (nf * mf) - sum(&xs, &xs) / (nf * nf) - sum(&ys, &ys) / (mf * mf);
        assert!((got - want).abs() < 1e-12 * want.abs(), "{got} vs {want}");
        let empty = Points::new(&x[..0], 0, d).unwrap();
        assert_eq!(
            energy_pair_sum(empty, Points::new(&x, n, d).unwrap(), 1.0, &stop).unwrap(),
            0.0
        );
    }

    #[test]
    fn dcov_block_pairs_add_up_to_dcov_stats() {
        let stop = AtomicBool::new(false);
        let (n, p, q) = (41, 3, 2);
        let x = sym_vec(31, n * p);
        let y: Vec<f64> = sym_vec(32, n * q)
            .iter()
            .enumerate()
            .map(|(k, v)| v + 0.5 * x[(k / q) * p])
            .collect();
        for (alpha, unbiased) in [(1.0, false), (1.0, true), (0.7, false), (1.3, true)] {
            let want = dcov_stats(
                Points::new(&x, n, p).unwrap(),
                Points::new(&y, n, q).unwrap(),
                alpha,
                unbiased,
                Method::Auto,
                &stop,
            )
            .unwrap();
            let (xc, yc) = (
                centred(Points::new(&x, n, p).unwrap()).unwrap(),
                centred(Points::new(&y, n, q).unwrap()).unwrap(),
            );
            let bounds = [0usize, 10, 10, 25, 41]; // blocks of 10, 0, 15, 16 rows
            let blk = |v: &[f64], d: usize, b: usize| -> Vec<f64> {
                v[bounds[b] * d..bounds[b + 1] * d].to_vec()
            };
            fn pts(v: &[f64], d: usize) -> Points<'_, f64> {
                Points::new(v, v.len() / d, d).unwrap()
            }
            let nb = bounds.len() - 1;
            let (xb, yb): (Vec<Vec<f64>>, Vec<Vec<f64>>) =
                (0..nb).map(|b| (blk(&xc, p, b), blk(&yc, q, b))).unzip();
            let rows = |v: &[Vec<f64>], d: usize| -> Vec<Vec<f64>> {
                (0..nb)
                    .map(|i| {
                        let mut r = vec![0.0; v[i].len() / d];
                        for j in 0..nb {
                            let s =
                                cross_row_sums(pts(&v[i], d), pts(&v[j], d), alpha, i == j, &stop)
                                    .unwrap();
                            for (a, b) in r.iter_mut().zip(s) {
                                *a += b;
                            }
                        }
                        r
                    })
                    .collect()
            };
            let (rx, ry) = (rows(&xb, p), rows(&yb, q));
            let tx: f64 = rx.iter().flatten().sum();
            let ty: f64 = ry.iter().flatten().sum();
            let (mut tot, mut jd) = ([0.0; 3], 0.0);
            for i in 0..nb {
                for j in 0..nb {
                    fn cb<'a>(v: &'a [f64], d: usize, r: &'a [f64]) -> CentredBlock<'a> {
                        CentredBlock {
                            p: Points::new(v, v.len() / d, d).unwrap(),
                            rows: r,
                        }
                    }
                    let s = dcov_block_products(
                        (cb(&xb[i], p, &rx[i]), cb(&xb[j], p, &rx[j])),
                        (cb(&yb[i], q, &ry[i]), cb(&yb[j], q, &ry[j])),
                        (tx, ty),
                        n,
                        alpha,
                        unbiased,
                        i == j,
                        &stop,
                    )
                    .unwrap();
                    for (t, v) in tot.iter_mut().zip(s) {
                        *t += v;
                    }
                    // Two samples: Σ_{m≥2} c^(2−m) e_m = Û_x Û_y = A B, whatever c is.
                    let bi = [cb(&xb[i], p, &rx[i]), cb(&yb[i], q, &ry[i])];
                    let bj = [cb(&xb[j], p, &rx[j]), cb(&yb[j], q, &ry[j])];
                    let (tt, w) = ([tx, ty], [1.0, 1.0]);
                    jd +=
                        jdcov_block_sum(&bi, &bj, &tt, &w, 3.0, n, alpha, unbiased, i == j, &stop)
                            .unwrap();
                }
            }
            assert!(
                (jd - tot[0]).abs() < 1e-12 * tot[0].abs(),
                "{jd} vs {}",
                tot[0]
            );
            let f = norm_factor(n, unbiased);
            for (got, want) in [
                (tot[0] * f, want.cov),
                (tot[1] * f, want.var_x),
                (tot[2] * f, want.var_y),
            ] {
                assert!(
                    (got - want).abs() < 1e-12 * want.abs(),
                    "{alpha} {unbiased}: {got} vs {want}"
                );
            }
        }
    }
}
