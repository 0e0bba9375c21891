//! The large-n path of the kernel tests (n > [`STORE_MAX`](super::STORE_MAX), or
//! `store = false`): statistics evaluated tile by tile through the pairwise engine, for
//! groups of resamples at a time, in O(n) memory besides one tile per set per task.
//!
//! Distances come from the engine's tiles: exact differences up to
//! [`MULTI_DIRECT_MAX_D`] dimensions, the packed distance micro-kernel
//! ([`crate::core::simd::dgemm`]) above, on data centred first. Kernel values come from
//! the SIMD exponential ([`simd::lin_exp_into`]) for the Gaussian and Laplacian kernels.
//!
//! - HSIC, dHSIC and the partial dCor test: a resample permutes whole point sets, so its
//!   statistic is Σ_ij Π_f F_f(i, j) over the *permuted* points (a copy of n·d values per
//!   resample). The pairs are symmetric: only j ≥ i is visited (j > i doubled). A group
//!   of resamples shares one pass, so the unpermuted factor's tile is computed once per
//!   group.
//! - MMD: a resample only relabels the pooled sample, so the kernel tile is computed
//!   once per group of [`MMD_GROUP`] resamples and each resample costs one multiply-add
//!   per pair (the sums of each row over the points labelled x).
//!
//! Every resample's arithmetic is independent of the other members of its group and of
//! the thread count (fixed row blocks, states combined in order), so the null values do
//! not depend on how resamples are grouped, split or scheduled.

use std::sync::atomic::AtomicBool;

use super::{row_dot, Kernel};
use crate::core::dcov::sums::Acc;
use crate::core::error::{try_vec, Result};
use crate::core::pairwise::multi::{reduce_pairs_multi_with, MultiReducer, MULTI_DIRECT_MAX_D};
use crate::core::pairwise::{reduce_rows_with, Points, RowReducer, COL_TILE};
use crate::core::simd::{self, Fma};

/// Resamples per pass of the MMD relabelling reduction (two register blocks of 32).
pub const MMD_GROUP: usize = 64;
/// Width of the MMD register block.
const MMD_BLOCK: usize = 32;

/// Kernel values of squared distances `d2` into `out` (same length), through the SIMD
/// exponential where the kernel has one. `buf` is scratch of the same length.
#[inline(always)]
pub(super) fn kernel_row<M: Fma>(k: Kernel, d2: &[f64], buf: &mut [f64], out: &mut [f64]) {
    let m = d2.len();
    let (buf, out) = (&mut buf[..m], &mut out[..m]);
    match k {
        Kernel::Gaussian(s) => {
            let g = 0.5 / (s * s);
            if g.is_finite() && g > 0.0 {
                // Beyond e^-746 every term is 0: clamping keeps −g·d2 finite.
                let cap = 746.0 / g;
                for (b, &v) in buf.iter_mut().zip(d2) {
                    *b = v.min(cap);
                }
                simd::lin_exp_into::<M>(buf, -g, 0.0, out);
                return;
            }
        }
        Kernel::Laplacian(s) => {
            let c = 1.0 / s;
            if c.is_finite() && c > 0.0 {
                let cap = 746.0 / c;
                for (b, &v) in buf.iter_mut().zip(d2) {
                    *b = v.sqrt().min(cap);
                }
                simd::lin_exp_into::<M>(buf, -c, 0.0, out);
                return;
            }
        }
        Kernel::Distance(a) => {
            if a == 1.0 {
                for (o, &v) in out.iter_mut().zip(d2) {
                    *o = v.sqrt();
                }
                return;
            }
        }
    }
    for (o, &v) in out.iter_mut().zip(d2) {
        *o = k.eval(v);
    }
}

// ---------------------------------------------------------------------------------------
// Row sums of a kernel matrix.

struct SumRows {
    k: Kernel,
    zero_diag: bool,
}

struct SumState {
    s: Vec<f64>,
    buf: Vec<f64>,
    v: Vec<f64>,
}

impl RowReducer for SumRows {
    type State = SumState;
    fn init(&self, _r0: usize, nr: usize) -> SumState {
        SumState {
            s: vec![0.0; nr],
            buf: vec![0.0; COL_TILE],
            v: vec![0.0; COL_TILE],
        }
    }
    #[inline(always)]
    fn tile<M: Fma>(
        &self,
        st: &mut SumState,
        r0: usize,
        nr: usize,
        c0: usize,
        nc: usize,
        d2: &[f64],
    ) {
        for i in 0..nr {
            let v = &mut st.v[..nc];
            kernel_row::<M>(self.k, &d2[i * COL_TILE..i * COL_TILE + nc], &mut st.buf, v);
            let gi = r0 + i;
            if gi >= c0 && gi < c0 + nc {
                v[gi - c0] = if self.zero_diag {
                    0.0
                } else {
                    self.k.eval(0.0)
                };
            }
            st.s[i] += simd::sum(v);
        }
    }
}

/// Σ_j k(x_i, x_j) for every i (the diagonal k(0) included unless `zero_diag`).
pub(super) fn kernel_row_sums(
    p: Points<'_, f64>,
    k: Kernel,
    zero_diag: bool,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    let red = SumRows { k, zero_diag };
    let st = reduce_rows_with(p, p, &red, stop, Some(p.d <= MULTI_DIRECT_MAX_D))?;
    let mut out = try_vec(p.n, 0.0f64, "the number of observations")?;
    out.clear();
    for s in st {
        out.extend(s.s);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Sums of products of centred kernel matrices over the pairs.

/// One kernel matrix in a factor: coef · ((K(set)_ij − off_i) − off_j) (off empty: 0).
pub(super) struct Part<'a> {
    pub set: usize,
    pub kernel: Kernel,
    pub off: &'a [f64],
    pub coef: f64,
}

/// A matrix F_ij = Σ_parts of the same n observations (zero diagonal when `zero_diag`).
pub(super) struct Factor<'a> {
    pub parts: Vec<Part<'a>>,
    pub zero_diag: bool,
}

impl Factor<'_> {
    fn diag(&self, i: usize) -> f64 {
        if self.zero_diag {
            return 0.0;
        }
        let mut v = 0.0;
        for p in &self.parts {
            let o = p.off.get(i).copied().unwrap_or(0.0);
            v += p.coef * ((p.kernel.eval(0.0) - o) - o);
        }
        v
    }
}

struct Products<'a> {
    factors: Vec<Factor<'a>>,
    prods: Vec<Vec<usize>>,
}

struct ProdState {
    acc: Vec<Acc>,
    rows: Vec<Vec<f64>>,
    buf: Vec<f64>,
    tmp: Vec<f64>,
    prod: Vec<f64>,
}

impl MultiReducer for Products<'_> {
    type State = ProdState;
    fn upper(&self) -> bool {
        true
    }
    fn init(&self, _r0: usize, _nr: usize) -> ProdState {
        ProdState {
            acc: vec![Acc::default(); self.prods.len()],
            rows: self.factors.iter().map(|_| vec![0.0; COL_TILE]).collect(),
            buf: vec![0.0; COL_TILE],
            tmp: vec![0.0; COL_TILE],
            prod: vec![0.0; COL_TILE],
        }
    }
    #[inline(always)]
    fn tile<M: Fma>(
        &self,
        st: &mut ProdState,
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
            if lo < nc {
                let w = nc - lo;
                for (f, row) in self.factors.iter().zip(st.rows.iter_mut()) {
                    for (q, p) in f.parts.iter().enumerate() {
                        let drow = &d2[p.set][i * COL_TILE + lo..i * COL_TILE + nc];
                        let t = &mut st.tmp[..w];
                        kernel_row::<M>(p.kernel, drow, &mut st.buf, t);
                        let r = &mut row[..w];
                        let (oi, oj): (f64, &[f64]) = if p.off.is_empty() {
                            (0.0, &[])
                        } else {
                            (p.off[gi], &p.off[c0 + lo..c0 + nc])
                        };
                        let c = p.coef;
                        match (q == 0, oj.is_empty()) {
                            (true, true) if c == 1.0 => r.copy_from_slice(t),
                            (true, true) => {
                                for (x, &v) in r.iter_mut().zip(t.iter()) {
                                    *x = c * v;
                                }
                            }
                            (true, false) => {
                                for ((x, &v), &o) in r.iter_mut().zip(t.iter()).zip(oj) {
                                    *x = c * ((v - oi) - o);
                                }
                            }
                            (false, true) => {
                                for (x, &v) in r.iter_mut().zip(t.iter()) {
                                    *x += c * v;
                                }
                            }
                            (false, false) => {
                                for ((x, &v), &o) in r.iter_mut().zip(t.iter()).zip(oj) {
                                    *x += c * ((v - oi) - o);
                                }
                            }
                        }
                    }
                }
                for (a, fs) in st.acc.iter_mut().zip(&self.prods) {
                    let s = if fs.len() == 2 {
                        row_dot(&st.rows[fs[0]][..w], &st.rows[fs[1]][..w])
                    } else {
                        let pr = &mut st.prod[..w];
                        pr.copy_from_slice(&st.rows[fs[0]][..w]);
                        for &f in &fs[1..] {
                            for (x, &v) in pr.iter_mut().zip(&st.rows[f][..w]) {
                                *x *= v;
                            }
                        }
                        simd::sum(pr)
                    };
                    a.add(2.0 * s);
                }
            }
            if gi >= c0 && gi < c0 + nc {
                for (a, fs) in st.acc.iter_mut().zip(&self.prods) {
                    let mut v = 1.0;
                    for &f in fs {
                        v *= self.factors[f].diag(gi);
                    }
                    a.add(v);
                }
            }
        }
    }
}

/// Σ_ij Π_{f ∈ prod} F_f(i, j) for every requested product, over the sets' n
/// observations.
pub(super) fn products(
    sets: &[Points<'_, f64>],
    factors: Vec<Factor<'_>>,
    prods: Vec<Vec<usize>>,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    let np = prods.len();
    let red = Products { factors, prods };
    let states = reduce_pairs_multi_with(sets, &red, stop, MULTI_DIRECT_MAX_D, true)?;
    let mut tot = vec![Acc::default(); np];
    for s in &states {
        for (t, a) in tot.iter_mut().zip(&s.acc) {
            t.merge(a);
        }
    }
    Ok(tot.iter().map(|a| a.value()).collect())
}

/// Rows of `x` (n × d, row-major) in the order `perm`.
pub(super) fn permuted_rows(x: &[f64], d: usize, perm: &[u32]) -> Result<Vec<f64>> {
    let mut out = try_vec(x.len(), 0.0f64, "a permuted copy of the sample")?;
    for (i, &p) in perm.iter().enumerate() {
        let p = p as usize;
        out[i * d..(i + 1) * d].copy_from_slice(&x[p * d..(p + 1) * d]);
    }
    Ok(out)
}

/// `v` in the order `perm`.
pub(super) fn permuted(v: &[f64], perm: &[u32]) -> Vec<f64> {
    perm.iter().map(|&p| v[p as usize]).collect()
}

// ---------------------------------------------------------------------------------------
// MMD: row sums over the points labelled x, for a group of labellings.

struct MmdRows<'a> {
    k: Kernel,
    /// Indicators, n rows of MMD_GROUP (1 where the point is labelled x).
    ind: &'a [f64],
}

struct MmdState {
    /// nr rows of MMD_GROUP sums.
    sx: Vec<f64>,
    /// Full row sums (diagonal included).
    r: Vec<f64>,
    buf: Vec<f64>,
    v: Vec<f64>,
}

impl RowReducer for MmdRows<'_> {
    type State = MmdState;
    fn init(&self, _r0: usize, nr: usize) -> MmdState {
        MmdState {
            sx: vec![0.0; nr * MMD_GROUP],
            r: vec![0.0; nr],
            buf: vec![0.0; COL_TILE],
            v: vec![0.0; COL_TILE],
        }
    }
    #[inline(always)]
    fn tile<M: Fma>(
        &self,
        st: &mut MmdState,
        r0: usize,
        nr: usize,
        c0: usize,
        nc: usize,
        d2: &[f64],
    ) {
        let k0 = self.k.eval(0.0);
        for i in 0..nr {
            let v = &mut st.v[..nc];
            kernel_row::<M>(self.k, &d2[i * COL_TILE..i * COL_TILE + nc], &mut st.buf, v);
            let gi = r0 + i;
            if gi >= c0 && gi < c0 + nc {
                v[gi - c0] = k0;
            }
            st.r[i] += simd::sum(v);
            let ind = &self.ind[c0 * MMD_GROUP..(c0 + nc) * MMD_GROUP];
            for h in 0..MMD_GROUP / MMD_BLOCK {
                let out = &mut st.sx[i * MMD_GROUP + h * MMD_BLOCK..][..MMD_BLOCK];
                let mut acc = [0.0f64; MMD_BLOCK];
                for (j, &kv) in v.iter().enumerate() {
                    let l = &ind[j * MMD_GROUP + h * MMD_BLOCK..][..MMD_BLOCK];
                    for g in 0..MMD_BLOCK {
                        acc[g] = M::ma(kv, l[g], acc[g]);
                    }
                }
                for g in 0..MMD_BLOCK {
                    out[g] += acc[g];
                }
            }
        }
    }
}

/// MMD² of z[..n] against z[n..] under each labelling of `labels` (at most
/// [`MMD_GROUP`]; `labels[g][p]` is true when point p is in the first sample).
pub(super) fn mmd_group(
    z: Points<'_, f64>,
    n: usize,
    k: Kernel,
    unbiased: bool,
    labels: &[Vec<bool>],
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    let nn = z.n;
    let mut ind = try_vec(
        crate::core::error::checked_size(nn, MMD_GROUP, "the number of observations")?,
        0.0f64,
        "the number of observations",
    )?;
    for (g, lab) in labels.iter().enumerate() {
        for (p, &x) in lab.iter().enumerate() {
            if x {
                ind[p * MMD_GROUP + g] = 1.0;
            }
        }
    }
    let red = MmdRows { k, ind: &ind };
    let states = reduce_rows_with(z, z, &red, stop, Some(z.d <= MULTI_DIRECT_MAX_D))?;
    let m = nn - n;
    let (wxx, wyy, wxy) = mmd_weights(n, m, unbiased);
    let k0 = k.eval(0.0);
    let mut acc = vec![Acc::default(); labels.len()];
    let mut p = 0;
    for s in &states {
        for (i, &r) in s.r.iter().enumerate() {
            for (g, (a, lab)) in acc.iter_mut().zip(labels).enumerate() {
                let mut sx = s.sx[i * MMD_GROUP + g];
                let mut sy = r - sx;
                if lab[p] {
                    if unbiased {
                        sx -= k0;
                    }
                    a.add(wxx * sx + wxy * sy);
                } else {
                    if unbiased {
                        sy -= k0;
                    }
                    a.add(wxy * sx + wyy * sy);
                }
            }
            p += 1;
        }
    }
    Ok(acc.iter().map(|a| a.value()).collect())
}

// ---------------------------------------------------------------------------------------
// The tests' large-n paths.

use super::{dhsic_t2, mmd_weights, Centre, Resamples, TestOutput};
use crate::core::dcov::centred;

/// Resamples per pass of the permutation tests whose resamples permute point sets (the
/// unpermuted sets' tiles are shared by the group).
const PERM_GROUP: usize = 8;

/// A centred f64 copy of the points (distances unchanged; the GEMM path loses less).
fn centred_copy(p: Points<'_, f64>) -> Result<Vec<f64>> {
    centred(p)
}

/// Row offsets c with the centred matrix (K_ij − c_i) − c_j (empty for `Raw`), from the
/// row sums of K (zero diagonal in U mode).
fn offsets(p: Points<'_, f64>, k: Kernel, centre: Centre, stop: &AtomicBool) -> Result<Vec<f64>> {
    if centre == Centre::Raw {
        return Ok(Vec::new());
    }
    let s = kernel_row_sums(p, k, centre == Centre::U, stop)?;
    let mut t = Acc::default();
    for &v in &s {
        t.add(v);
    }
    let (t, nf) = (t.value(), p.n as f64);
    let (a, b) = if centre == Centre::U {
        (1.0 / (nf - 2.0), t / (2.0 * (nf - 1.0) * (nf - 2.0)))
    } else {
        (1.0 / nf, t / (2.0 * nf * nf))
    };
    Ok(s.iter().map(|&v| v * a - b).collect())
}

/// A factor of one kernel: Σ coef·((K(set) − off_i) − off_j) over `parts`.
fn factor<'a>(kernel: Kernel, parts: &[(usize, &'a [f64], f64)], zero_diag: bool) -> Factor<'a> {
    Factor {
        parts: parts
            .iter()
            .map(|&(set, off, coef)| Part {
                set,
                kernel,
                off,
                coef,
            })
            .collect(),
        zero_diag,
    }
}

/// [`super::mmd_test`]'s large-n path.
#[allow(clippy::too_many_arguments)]
pub(super) fn mmd_test(
    z: Points<'_, f64>,
    n: usize,
    k: Kernel,
    unbiased: bool,
    rs: Resamples,
    stop: &AtomicBool,
) -> Result<TestOutput> {
    let nn = z.n;
    let zc = centred_copy(z)?;
    let pz = Points::new(&zc, nn, z.d)?;
    rs.in_groups(MMD_GROUP, stop, |items| {
        let labels: Vec<Vec<bool>> = items
            .iter()
            .map(|p| {
                let mut l = vec![false; nn];
                for &q in &p[0][..n] {
                    l[q as usize] = true;
                }
                l
            })
            .collect();
        mmd_group(pz, n, k, unbiased, &labels, stop)
    })
}

/// [`super::hsic_test`]'s large-n path.
#[allow(clippy::too_many_arguments)]
pub(super) fn hsic_test(
    x: Points<'_, f64>,
    y: Points<'_, f64>,
    kx: Kernel,
    ky: Kernel,
    unbiased: bool,
    rs: Resamples,
    stop: &AtomicBool,
) -> Result<TestOutput> {
    let n = x.n;
    let centre = if unbiased { Centre::U } else { Centre::Double };
    let (xc, yc) = (centred_copy(x)?, centred_copy(y)?);
    let (px, py) = (Points::new(&xc, n, x.d)?, Points::new(&yc, n, y.d)?);
    let ox = offsets(px, kx, centre, stop)?;
    let oy = offsets(py, ky, centre, stop)?;
    let nf = n as f64;
    let den = if unbiased { nf * (nf - 3.0) } else { nf * nf };
    rs.in_groups(PERM_GROUP, stop, |items| {
        // y is permuted, x not.
        let perms: Vec<&[u32]> = items.iter().map(|p| &p[0][..]).collect();
        let ys = perms
            .iter()
            .map(|p| permuted_rows(&yc, y.d, p))
            .collect::<Result<Vec<_>>>()?;
        let oys: Vec<Vec<f64>> = perms.iter().map(|p| permuted(&oy, p)).collect();
        let mut sets = vec![px];
        for v in &ys {
            sets.push(Points::new(v, n, y.d)?);
        }
        let mut factors = vec![factor(kx, &[(0, &ox, 1.0)], unbiased)];
        let mut prods = Vec::new();
        for (g, o) in oys.iter().enumerate() {
            factors.push(factor(ky, &[(1 + g, o, 1.0)], unbiased));
            prods.push(vec![0, 1 + g]);
        }
        Ok(products(&sets, factors, prods, stop)?
            .iter()
            .map(|v| v / den)
            .collect())
    })
}

/// [`super::dhsic_test`]'s large-n path; `rsums` are the samples' kernel row sums (from
/// the centred copies `xs`).
#[allow(clippy::too_many_arguments)]
pub(super) fn dhsic_test(
    xs: &[Points<'_, f64>],
    ks: &[Kernel],
    rs: Resamples,
    stop: &AtomicBool,
) -> Result<TestOutput> {
    let d = xs.len();
    let n = xs[0].n;
    let nf = n as f64;
    let copies = xs
        .iter()
        .map(|&p| centred_copy(p))
        .collect::<Result<Vec<_>>>()?;
    let pts = copies
        .iter()
        .zip(xs)
        .map(|(c, p)| Points::new(c, n, p.d))
        .collect::<Result<Vec<_>>>()?;
    let rsums = pts
        .iter()
        .zip(ks)
        .map(|(&p, &k)| kernel_row_sums(p, k, false, stop))
        .collect::<Result<Vec<_>>>()?;
    let t2 = dhsic_t2(&rsums, n);
    let dm1 = d - 1;
    let group = (PERM_GROUP / dm1).max(1);
    rs.in_groups(group, stop, |perms| {
        // perms[g][k − 1]: the permutation of sample k ≥ 1 in the group's item g.
        let mut copies_p = Vec::with_capacity(perms.len() * dm1);
        for pg in perms {
            for (k, p) in pg.iter().enumerate() {
                copies_p.push(permuted_rows(&copies[k + 1], xs[k + 1].d, p)?);
            }
        }
        let mut sets = vec![pts[0]];
        for (q, c) in copies_p.iter().enumerate() {
            sets.push(Points::new(c, n, xs[q % dm1 + 1].d)?);
        }
        let raw = |set: usize, kernel: Kernel| factor(kernel, &[(set, &[], 1.0)], false);
        let mut factors = vec![raw(0, ks[0])];
        let mut prods = Vec::new();
        for g in 0..perms.len() {
            let mut pr = vec![0];
            for (k, &kk) in ks.iter().enumerate().skip(1) {
                // Sets and factors are pushed in the same order: one index for both.
                let s = 1 + g * dm1 + (k - 1);
                factors.push(raw(s, kk));
                pr.push(s);
            }
            prods.push(pr);
        }
        let t1s = products(&sets, factors, prods, stop)?;
        Ok(t1s
            .iter()
            .zip(perms)
            .map(|(&t1, pg)| {
                let mut t3 = Acc::default();
                for i in 0..n {
                    let mut p = rsums[0][i] / nf;
                    for (s, pk) in rsums[1..].iter().zip(pg) {
                        p *= s[pk[i] as usize] / nf;
                    }
                    t3.add(p);
                }
                t1 / (nf * nf) + t2 - 2.0 * t3.value() / nf
            })
            .collect())
    })
}

/// [`super::pdcor_test`]'s large-n path.
#[allow(clippy::too_many_arguments)]
pub(super) fn pdcor_test(
    x: Points<'_, f64>,
    y: Points<'_, f64>,
    z: Points<'_, f64>,
    alpha: f64,
    rs: Resamples,
    stop: &AtomicBool,
) -> Result<TestOutput> {
    let n = x.n;
    let k = Kernel::Distance(alpha);
    let (xc, yc, zc) = (centred_copy(x)?, centred_copy(y)?, centred_copy(z)?);
    let (px, py, pz) = (
        Points::new(&xc, n, x.d)?,
        Points::new(&yc, n, y.d)?,
        Points::new(&zc, n, z.d)?,
    );
    let (ox, oy, oz) = (
        offsets(px, k, Centre::U, stop)?,
        offsets(py, k, Centre::U, stop)?,
        offsets(pz, k, Centre::U, stop)?,
    );
    let sets = [px, py, pz];
    let s1 = products(
        &sets,
        vec![
            factor(k, &[(0, &ox, 1.0)], true),
            factor(k, &[(1, &oy, 1.0)], true),
            factor(k, &[(2, &oz, 1.0)], true),
        ],
        vec![vec![2, 2], vec![0, 2], vec![1, 2]],
        stop,
    )?;
    let cc = s1[0];
    let beta = |v: f64| if cc > 0.0 { v / cc } else { 0.0 };
    let (bx, by) = (beta(s1[1]), beta(s1[2]));
    let s2 = products(
        &sets,
        vec![
            factor(k, &[(0, &ox, 1.0), (2, &oz, -bx)], true),
            factor(k, &[(1, &oy, 1.0), (2, &oz, -by)], true),
        ],
        vec![vec![0, 0], vec![1, 1]],
        stop,
    )?;
    let den = (s2[0].max(0.0) * s2[1].max(0.0)).sqrt();
    let scaled = |v: f64| {
        if den > 0.0 {
            (v / den).clamp(-1.0, 1.0)
        } else {
            0.0
        }
    };
    rs.in_groups(PERM_GROUP / 2, stop, |items| {
        // x and z are permuted together (P's rows and columns), y not.
        let perms: Vec<&[u32]> = items.iter().map(|p| &p[0][..]).collect();
        let mut copies = Vec::with_capacity(2 * perms.len());
        let mut offs = Vec::with_capacity(2 * perms.len());
        for p in &perms {
            copies.push(permuted_rows(&xc, x.d, p)?);
            copies.push(permuted_rows(&zc, z.d, p)?);
            offs.push(permuted(&ox, p));
            offs.push(permuted(&oz, p));
        }
        let mut sets = vec![py, pz];
        for (q, c) in copies.iter().enumerate() {
            sets.push(Points::new(c, n, if q % 2 == 0 { x.d } else { z.d })?);
        }
        let mut factors = vec![factor(k, &[(0, &oy, 1.0), (1, &oz, -by)], true)];
        let mut prods = Vec::new();
        for g in 0..perms.len() {
            factors.push(factor(
                k,
                &[
                    (2 + 2 * g, &offs[2 * g], 1.0),
                    (3 + 2 * g, &offs[2 * g + 1], -bx),
                ],
                true,
            ));
            prods.push(vec![1 + g, 0]);
        }
        Ok(products(&sets, factors, prods, stop)?
            .into_iter()
            .map(scaled)
            .collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::simd::{dispatch, SimdTask};
    use crate::core::testing::simd_levels;

    struct Row<'a>(Kernel, &'a [f64], &'a mut [f64]);
    impl SimdTask for Row<'_> {
        type Output = ();
        #[inline(always)]
        fn run<M: Fma>(self) {
            let mut buf = vec![0.0; self.1.len()];
            kernel_row::<M>(self.0, self.1, &mut buf, self.2);
        }
    }

    /// The SIMD kernel rows against `Kernel::eval` at every level, from 0 to distances
    /// far in the tail and with bandwidths whose reciprocal overflows.
    #[test]
    fn kernel_rows_match_eval_at_every_level() {
        let d2: Vec<f64> = (0..300)
            .map(|i| if i < 3 { 0.0 } else { 1e-6 * 1.13f64.powi(i) })
            .collect();
        for k in [
            Kernel::Gaussian(0.9),
            Kernel::Gaussian(1e-160),
            Kernel::Gaussian(1e200),
            Kernel::Laplacian(0.4),
            Kernel::Laplacian(1e-320),
            Kernel::Distance(1.0),
            Kernel::Distance(0.5),
        ] {
            for lvl in simd_levels() {
                let mut out = vec![f64::NAN; d2.len()];
                dispatch(lvl, Row(k, &d2, &mut out));
                for (v, &x) in out.iter().zip(&d2) {
                    let want = k.eval(x);
                    // lin_exp's bound: 2e-15 + 3e-16·|exponent| relative.
                    let rel = 4e-15 + 4e-16 * want.ln().abs().min(800.0);
                    assert!(
                        (v - want).abs() <= rel * want.abs() + 1e-300,
                        "{k:?} {lvl:?} d2={x}: {v} vs {want}"
                    );
                }
            }
        }
    }
}
