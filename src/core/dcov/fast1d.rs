//! Exact O(n log n) distance covariance of two 1-D samples with exponent 1.
//!
//! With a_ij = |x_i − x_j|, b_ij = |y_i − y_j|, row sums a_i = Σ_j a_ij and totals S_a,
//! the statistics are combinations of S_ab = Σ_ij a_ij b_ij, Σ_i a_i b_i, S_a and S_b
//! (Huo & Székely 2016):
//!   V = [n² S_ab − 2n Σ a_i b_i + S_a S_b] / n⁴,
//!   U = [(n−1)(n−2) S_ab − 2(n−1) Σ a_i b_i + S_a S_b] / [n(n−1)(n−2)(n−3)].
//! Row sums come from one sort and prefix sums. S_ab comes from a merge sort on y of the
//! points taken in x order: when the run L (smaller x) meets the run R, each i ∈ R adds
//! Σ_{j∈L} s_j (x_i − x_j)(y_i − y_j), with s_j = ±1 by whether y_j < y_i, from four signed
//! running sums over L (the idea of Chaudhuri & Hu 2019).
//!
//! Precision on shifted data: both samples are first shifted by their medians (an exact
//! subtraction for data clustered around a large offset), every running sum of a run
//! longer than n/64 (or 4096) is compensated, and the final combinations, where terms of
//! size n² cancel down to the result, are evaluated in double-double arithmetic. Shorter
//! runs, which together carry a small share of S_ab, merge branch-free with plain sums
//! (about 35% faster; their rounding stays below that of the compensated sums). For integer-valued data every
//! intermediate is an integer held exactly (up to 2^53 per running sum), so the result
//! is the exact statistic rounded once.

use std::ops::{Add, Div, Mul, Sub};
use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use super::sums::{Acc, Dd};
use super::DcovStats;
use crate::core::error::Result;
use crate::core::simd::{self, simd_fn, Fma};
use crate::core::threads;

/// Runs up to this length are sorted and summed directly (O(m²), exact for integers).
const SMALL: usize = 16;
/// Runs longer than this split into two parallel tasks (a fixed tree, so the result does
/// not depend on the thread count).
const PAR_MIN: usize = 1 << 15;

/// `v` minus its (lower) median.
pub(super) fn median_shifted(v: &[f64]) -> Vec<f64> {
    if v.is_empty() {
        return Vec::new();
    }
    let mut tmp = v.to_vec();
    let k = (tmp.len() - 1) / 2;
    let (_, m, _) = tmp.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
    let m = *m;
    v.iter().map(|&x| x - m).collect()
}

/// Order-preserving map of an f64 onto u64 (the order of `f64::total_cmp`).
#[inline(always)]
fn key(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

/// Inverse of [`key`].
#[inline(always)]
fn unkey(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

/// Radix digit width: 6 passes of 11 bits cover 64-bit keys, 2048 counters per pass.
const DIGIT: u32 = 11;
const PASSES: usize = 6;

/// The values sorted ascending (ties by original index), with their original indices:
/// a stable LSD radix sort on the order-preserving keys, skipping digits that every key
/// shares. Deterministic, and about 4× faster than a comparison sort at n = 10⁶.
pub(super) fn sorted(v: &[f64]) -> Vec<(f64, u32)> {
    let n = v.len();
    let mut a: Vec<(u64, u32)> = v
        .iter()
        .enumerate()
        .map(|(i, &x)| (key(x), i as u32))
        .collect();
    let buckets = 1usize << DIGIT;
    let mask = (buckets - 1) as u64;
    let mut hist = vec![0usize; PASSES * buckets];
    for &(k, _) in &a {
        for p in 0..PASSES {
            hist[p * buckets + ((k >> (p as u32 * DIGIT)) & mask) as usize] += 1;
        }
    }
    let mut b: Vec<(u64, u32)> = vec![(0, 0); n];
    for p in 0..PASSES {
        let h = &mut hist[p * buckets..(p + 1) * buckets];
        if h.contains(&n) {
            continue;
        }
        let mut off = 0;
        for c in h.iter_mut() {
            let t = *c;
            *c = off;
            off += t;
        }
        let shift = p as u32 * DIGIT;
        for &e in &a {
            let d = ((e.0 >> shift) & mask) as usize;
            b[h[d]] = e;
            h[d] += 1;
        }
        std::mem::swap(&mut a, &mut b);
    }
    a.into_iter().map(|(k, i)| (unkey(k), i)).collect()
}

/// Row sums Σ_j |v_i − v_j| (by original index) from the sorted values:
/// (2k − n) v_(k) + (T − 2 P_k), with P_k the compensated sum of the k smaller values.
pub(super) fn row_sums(s: &[(f64, u32)]) -> Vec<f64> {
    let n = s.len();
    let mut tot = Acc::default();
    for &(x, _) in s {
        tot.add(x);
    }
    let t = tot.value();
    let mut out = vec![0.0; n];
    let mut p = Acc::default();
    for (k, &(x, i)) in s.iter().enumerate() {
        let r = ((2 * k) as f64 - n as f64) * x + (t - 2.0 * p.value());
        out[i as usize] = r.max(0.0);
        p.add(x);
    }
    out
}

/// Σ_{j<i} (x_i − x_j)|y_i − y_j| over a run in x order, sorting it by y on the way.
fn small_run(xs: &mut [f64], ys: &mut [f64]) -> f64 {
    let m = xs.len();
    // At most 120 terms: a plain sum loses nothing that matters (and is exact for
    // integer data).
    let mut acc = 0.0;
    for i in 1..m {
        for j in 0..i {
            acc += (xs[i] - xs[j]) * (ys[i] - ys[j]).abs();
        }
    }
    // Insertion sort by y, carrying x.
    for i in 1..m {
        let (xv, yv) = (xs[i], ys[i]);
        let mut j = i;
        while j > 0 && ys[j - 1] > yv {
            xs[j] = xs[j - 1];
            ys[j] = ys[j - 1];
            j -= 1;
        }
        xs[j] = xv;
        ys[j] = yv;
    }
    acc
}

/// Compensated totals Σx, Σy, Σxy of a run (order-free, so each run passes its own up
/// to the merge that needs them instead of that merge summing its left run again).
type Totals = [Acc; 3];

/// Merges the y-sorted runs `xs[..h]` (L) and `xs[h..]` (R) (with their y in `ys`) into
/// `tx`, `ty`, and returns Σ_{i∈R, j∈L} (x_i − x_j)|y_i − y_j|. `g` holds the signed sums
/// −(Σx, Σy, Σxy) over L.
#[inline(always)]
// `M` only selects the instruction set the body is compiled for (three-operand forms and
// 32 registers keep the compensated sums out of memory).
#[allow(clippy::extra_unused_type_parameters)]
fn merge_body<M: Fma>(
    xs: &[f64],
    ys: &[f64],
    h: usize,
    tx: &mut [f64],
    ty: &mut [f64],
    g: [Acc; 3],
) -> Acc {
    let (xl, xr) = xs.split_at(h);
    let (yl, yr) = ys.split_at(h);
    let [mut gx, mut gy, mut gxy] = g;
    let mut g0 = -(h as f64);
    let mut cross = Acc::default();
    let (mut p, mut q, mut o) = (0usize, 0usize, 0usize);
    while q < yr.len() {
        let (xi, yi) = (xr[q], yr[q]);
        while p < h && yl[p] < yi {
            let (x, y) = (xl[p], yl[p]);
            g0 += 2.0;
            gx.add(2.0 * x);
            gy.add(2.0 * y);
            gxy.add(2.0 * (x * y));
            tx[o] = x;
            ty[o] = y;
            p += 1;
            o += 1;
        }
        let (gx, gy, gxy) = (gx.value(), gy.value(), gxy.value());
        cross.add(xi * (yi * g0 - gy) - (yi * gx - gxy));
        tx[o] = xi;
        ty[o] = yi;
        q += 1;
        o += 1;
    }
    while p < h {
        tx[o] = xl[p];
        ty[o] = yl[p];
        p += 1;
        o += 1;
    }
    cross
}

/// [`merge_body`] with plain running sums and no branches on the data: for short runs,
/// where the sums have few terms (see [`plain_max`]).
#[inline(always)]
#[allow(clippy::extra_unused_type_parameters)]
pub(super) fn merge_plain_body<M: Fma>(
    xs: &[f64],
    ys: &[f64],
    h: usize,
    tx: &mut [f64],
    ty: &mut [f64],
    g: [Acc; 3],
) -> Acc {
    let (xl, xr) = xs.split_at(h);
    let (yl, yr) = ys.split_at(h);
    let (mut gx, mut gy, mut gxy) = (g[0].value(), g[1].value(), g[2].value());
    let mut g0 = -(h as f64);
    let mut cr = 0.0;
    let nr = yr.len();
    let (mut p, mut q, mut o) = (0usize, 0usize, 0usize);
    // Whether the next element comes from L is unpredictable: every step does both
    // updates, one with weight zero.
    while p < h && q < nr {
        let (xi, yi) = (xr[q], yr[q]);
        let (x, y) = (xl[p], yl[p]);
        let take = y < yi;
        let t = take as u8 as f64;
        g0 += 2.0 * t;
        gx += 2.0 * x * t;
        gy += 2.0 * y * t;
        gxy += 2.0 * (x * y) * t;
        let v = xi * (yi * g0 - gy) - (yi * gx - gxy);
        cr += v * (1.0 - t);
        let mask = 0u64.wrapping_sub(take as u64);
        tx[o] = f64::from_bits((x.to_bits() & mask) | (xi.to_bits() & !mask));
        ty[o] = f64::from_bits((y.to_bits() & mask) | (yi.to_bits() & !mask));
        p += take as usize;
        q += 1 - take as usize;
        o += 1;
    }
    while q < nr {
        let (xi, yi) = (xr[q], yr[q]);
        cr += xi * (yi * g0 - gy) - (yi * gx - gxy);
        tx[o] = xi;
        ty[o] = yi;
        q += 1;
        o += 1;
    }
    while p < h {
        tx[o] = xl[p];
        ty[o] = yl[p];
        p += 1;
        o += 1;
    }
    let mut cross = Acc::default();
    cross.add(cr);
    cross
}

simd_fn!(
    fn merge_plain => merge_plain_body(
        xs: &[f64],
        ys: &[f64],
        h: usize,
        tx: &mut [f64],
        ty: &mut [f64],
        g: [Acc; 3],
    ) -> Acc
);

/// Longest run merged with plain sums for n observations: at most n/64 and 4096. A run of
/// m contributes about m/n of S_ab with a relative rounding error of about √m·ε from
/// plain sums, so these levels add at most about ε·(m/n)·√m ≤ ε to S_ab's relative error;
/// longer runs keep compensated sums.
pub(super) fn plain_max(n: usize) -> usize {
    (n / 64).min(4096)
}

simd_fn!(
    fn merge => merge_body(
        xs: &[f64],
        ys: &[f64],
        h: usize,
        tx: &mut [f64],
        ty: &mut [f64],
        g: [Acc; 3],
    ) -> Acc
);

/// Sorts the run (given in x order) by y and returns Σ_{j before i in x order}
/// (x_i − x_j)|y_i − y_j| within it, with the run's [`Totals`]. `tx`, `ty` are scratch
/// of the same length.
pub(super) fn run(
    level: simd::Level,
    plain: usize,
    xs: &mut [f64],
    ys: &mut [f64],
    tx: &mut [f64],
    ty: &mut [f64],
    stop: &AtomicBool,
) -> Result<(Dd, Totals)> {
    let m = xs.len();
    if m <= SMALL {
        let mut t = [Acc::default(); 3];
        for (&x, &y) in xs.iter().zip(ys.iter()) {
            t[0].add(x);
            t[1].add(y);
            t[2].add(x * y);
        }
        return Ok((Dd::from(small_run(xs, ys)), t));
    }
    let h = m / 2;
    let (xl, xr) = xs.split_at_mut(h);
    let (yl, yr) = ys.split_at_mut(h);
    let (txl, txr) = tx.split_at_mut(h);
    let (tyl, tyr) = ty.split_at_mut(h);
    let (left, right) = if m > PAR_MIN {
        rayon::join(
            || run(level, plain, xl, yl, txl, tyl, stop),
            || run(level, plain, xr, yr, txr, tyr, stop),
        )
    } else {
        (
            run(level, plain, xl, yl, txl, tyl, stop),
            run(level, plain, xr, yr, txr, tyr, stop),
        )
    };
    let ((left, lt), (right, rt)) = (left?, right?);
    if m >= 1 << 16 {
        threads::check(stop)?;
    }
    // Signed sums over L: every j starts with s_j = −1 and flips to +1 once y_j < y_i.
    let neg = |a: &Acc| {
        let mut g = Acc::default();
        g.merge(a);
        g.negate();
        g
    };
    let g = [neg(&lt[0]), neg(&lt[1]), neg(&lt[2])];
    let mut tot = lt;
    for (t, r) in tot.iter_mut().zip(&rt) {
        t.merge(r);
    }
    let cross = if m <= plain {
        merge_plain(level, xs, ys, h, tx, ty, g)
    } else {
        merge(level, xs, ys, h, tx, ty, g)
    };
    xs.copy_from_slice(tx);
    ys.copy_from_slice(ty);
    Ok((left.add(right).add(cross.dd()), tot))
}

/// Ingredients of one pair of samples.
pub(super) struct Terms {
    pub(super) s_ab: Dd,
    pub(super) ab: Dd,
    pub(super) s_a: Dd,
    pub(super) s_b: Dd,
}

pub(super) fn combine(t: &Terms, n: usize, unbiased: bool) -> f64 {
    let nf = n as f64;
    if unbiased {
        let (n1, n2) = (Dd::from(nf - 1.0), Dd::from(nf - 2.0));
        let num = n1
            .mul(n2)
            .mul(t.s_ab)
            .sub(n1.mul_f64(2.0).mul(t.ab))
            .add(t.s_a.mul(t.s_b));
        let den = Dd::from(nf).mul(n1).mul(n2).mul_f64(nf - 3.0);
        num.div(den).to_f64()
    } else {
        let nn = Dd::prod(nf, nf);
        let num = nn
            .mul(t.s_ab)
            .sub(Dd::from(2.0 * nf).mul(t.ab))
            .add(t.s_a.mul(t.s_b));
        num.div(nn.mul(nn)).to_f64()
    }
}

/// Sum2/Dot2 accumulator (Ogita, Rump & Oishi): a running sum plus the plain sum of the
/// exact rounding errors of its additions and products, about twice working precision.
#[derive(Clone, Copy, Default)]
pub(super) struct Sum2 {
    s: f64,
    c: f64,
}

impl Sum2 {
    #[inline(always)]
    fn add(&mut self, x: f64, err: f64) {
        let t = self.s + x;
        let z = t - self.s;
        self.c += ((self.s - (t - z)) + (x - z)) + err;
        self.s = t;
    }
    #[inline(always)]
    pub(super) fn add_prod<M: Fma>(&mut self, a: f64, b: f64) {
        // The exact error of the rounded product: one fused op, or Dekker's splitting
        // (the same value either way, so the result does not depend on the SIMD level).
        let (p, e) = if M::FUSED {
            let p = a * b;
            (p, a.mul_add(b, -p))
        } else {
            let d = Dd::prod(a, b);
            (d.hi, d.lo)
        };
        self.add(p, e);
    }
    pub(super) fn dd(self) -> Dd {
        Dd::from(self.s).add_f64(self.c)
    }
}

/// Σx, Σy, Σa, Σb, Σab, Σa², Σb², Σx², Σy² over one range, in one pass.
#[inline(always)]
fn moments_body<M: Fma>(x: &[f64], y: &[f64], a: &[f64], b: &[f64]) -> [Sum2; 9] {
    let mut m = [Sum2::default(); 9];
    for (((&x, &y), &a), &b) in x.iter().zip(y).zip(a).zip(b) {
        m[0].add(x, 0.0);
        m[1].add(y, 0.0);
        m[2].add(a, 0.0);
        m[3].add(b, 0.0);
        m[4].add_prod::<M>(a, b);
        m[5].add_prod::<M>(a, a);
        m[6].add_prod::<M>(b, b);
        m[7].add_prod::<M>(x, x);
        m[8].add_prod::<M>(y, y);
    }
    m
}

simd_fn!(
    fn moments_chunk => moments_body(x: &[f64], y: &[f64], a: &[f64], b: &[f64]) -> [Sum2; 9]
);

/// Observations per chunk of the parallel moment sums (fixed, so results do not depend on
/// the thread count).
pub(super) const CHUNK: usize = 1 << 15;

/// The nine moments of [`moments_body`] over fixed chunks in parallel, as double-doubles
/// combined in chunk order.
pub(super) fn moments(x: &[f64], y: &[f64], a: &[f64], b: &[f64]) -> [Dd; 9] {
    let n = x.len();
    let level = simd::level();
    let parts: Vec<[Sum2; 9]> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let r = c * CHUNK..((c + 1) * CHUNK).min(n);
            moments_chunk(level, &x[r.clone()], &y[r.clone()], &a[r.clone()], &b[r])
        })
        .collect();
    let mut out = [Dd::default(); 9];
    for p in parts {
        for (o, s) in out.iter_mut().zip(p) {
            *o = *o + s.dd();
        }
    }
    out
}

/// dCov²(x, y), dCov²(x, x), dCov²(y, y) of 1-D samples with exponent 1 (V or U), in
/// O(n log n) time and O(n) memory.
pub fn dcov_stats(x: &[f64], y: &[f64], unbiased: bool, stop: &AtomicBool) -> Result<DcovStats> {
    let n = x.len();
    type Out = (Dd, Vec<f64>, Vec<f64>, [Dd; 7]);
    let (s_ab, a, b, r) = threads::install(|| -> Result<Out> {
        let (xc, yc) = rayon::join(|| median_shifted(x), || median_shifted(y));
        let ((sx, a), (sy, b)) = rayon::join(
            || {
                let s = sorted(&xc);
                let a = row_sums(&s);
                (s, a)
            },
            || {
                let s = sorted(&yc);
                let b = row_sums(&s);
                (s, b)
            },
        );
        drop(sy);
        let mut xs: Vec<f64> = sx.iter().map(|&(v, _)| v).collect();
        let mut ys: Vec<f64> = sx.iter().map(|&(_, i)| yc[i as usize]).collect();
        drop(sx);
        let mut tx = vec![0.0; n];
        let mut ty = vec![0.0; n];
        let (half, _) = run(
            simd::level(),
            plain_max(n),
            &mut xs,
            &mut ys,
            &mut tx,
            &mut ty,
            stop,
        )?;
        let [sx, sy, s_a, s_b, ab, aa, bb, sx2, sy2] = moments(&xc, &yc, &a, &b);
        // Σ_ij (v_i − v_j)² = 2n Σ v² − 2 (Σ v)².
        let nf = n as f64;
        let sxx = sx2.mul_f64(2.0 * nf) - (sx * sx).mul_f64(2.0);
        let syy = sy2.mul_f64(2.0 * nf) - (sy * sy).mul_f64(2.0);
        let r = [s_a, s_b, ab, aa, bb, sxx, syy];
        Ok((half.mul_f64(2.0), a, b, r))
    })??;
    drop((a, b));
    let [s_a, s_b, ab, aa, bb, sxx, syy] = r;
    let xy = Terms { s_ab, ab, s_a, s_b };
    let xx = Terms {
        s_ab: sxx,
        ab: aa,
        s_a,
        s_b: s_a,
    };
    let yy = Terms {
        s_ab: syy,
        ab: bb,
        s_a: s_b,
        s_b,
    };
    Ok(DcovStats {
        cov: combine(&xy, n, unbiased),
        var_x: combine(&xx, n, unbiased),
        var_y: combine(&yy, n, unbiased),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::naive;
    use super::super::{dcov_stats as generic, norm_factor, Method};
    use super::*;
    use crate::core::pairwise::Points;
    use crate::core::testing::sym_vec;

    #[test]
    fn matches_full_matrices_with_ties_and_all_sizes() {
        let stop = AtomicBool::new(false);
        for &n in &[4usize, 5, 31, 32, 33, 64, 100, 257, 1000] {
            let x: Vec<f64> = sym_vec(n as u64, n)
                .iter()
                .map(|v| (v * 5.0).round())
                .collect();
            let y: Vec<f64> = sym_vec(n as u64 + 9, n)
                .iter()
                .zip(&x)
                .map(|(v, u)| v + 0.3 * u)
                .collect();
            for unbiased in [false, true] {
                let got = dcov_stats(&x, &y, unbiased, &stop).unwrap();
                let w = naive(&x, 1, &y, 1, 1.0, unbiased);
                let f = norm_factor(n, unbiased);
                for (g, w) in [got.cov, got.var_x, got.var_y].iter().zip(w) {
                    let w = w * f;
                    assert!(
                        (g - w).abs() <= 1e-11 * w.abs().max(1e-12),
                        "n={n}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn precise_on_shifted_and_scaled_data() {
        let stop = AtomicBool::new(false);
        let n = 3000;
        let z = sym_vec(11, n);
        let w = sym_vec(12, n);
        for &(offset, scale) in &[
            (1e10, 1.0),
            (1e10, 1e8),
            (-1e10, 1e-3),
            (1e6, 1e-8),
            (0.0, 1e-8),
        ] {
            let x: Vec<f64> = z.iter().map(|v| offset + scale * v).collect();
            let y: Vec<f64> = w
                .iter()
                .zip(&z)
                .map(|(v, u)| offset + scale * (v + 0.1 * u * u))
                .collect();
            // Reference on the exactly centred data.
            let xr: Vec<f64> = x.iter().map(|v| v - offset).collect();
            let yr: Vec<f64> = y.iter().map(|v| v - offset).collect();
            let px = Points::new(&xr, n, 1).unwrap();
            let py = Points::new(&yr, n, 1).unwrap();
            for unbiased in [false, true] {
                let got = dcov_stats(&x, &y, unbiased, &stop).unwrap();
                let want = generic(px, py, 1.0, unbiased, Method::Pairwise, &stop).unwrap();
                for (g, w) in [
                    (got.cov, want.cov),
                    (got.var_x, want.var_x),
                    (got.var_y, want.var_y),
                ] {
                    assert!(
                        (g - w).abs() <= 1e-10 * w.abs(),
                        "offset {offset} scale {scale}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn integer_data_are_exact() {
        let stop = AtomicBool::new(false);
        let n = 200usize;
        let x: Vec<i64> = sym_vec(5, n)
            .iter()
            .map(|v| (v * 1e6).round() as i64 + 3_000_000_000)
            .collect();
        let y: Vec<i64> = sym_vec(6, n)
            .iter()
            .zip(&x)
            .map(|(v, u)| (v * 1e3).round() as i64 + u / 1000)
            .collect();
        // Exact integer arithmetic for n⁴·V.
        let (mut sab, mut a, mut b) = (0i128, vec![0i128; n], vec![0i128; n]);
        for i in 0..n {
            for j in 0..n {
                let (da, db) = ((x[i] - x[j]).abs() as i128, (y[i] - y[j]).abs() as i128);
                sab += da * db;
                a[i] += da;
                b[i] += db;
            }
        }
        let ab: i128 = a.iter().zip(&b).map(|(p, q)| p * q).sum();
        let (sa, sb): (i128, i128) = (a.iter().sum(), b.iter().sum());
        let ni = n as i128;
        let num = ni * ni * sab - 2 * ni * ab + sa * sb;
        let want = num as f64 / (ni * ni * ni * ni) as f64;
        let xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let yf: Vec<f64> = y.iter().map(|&v| v as f64).collect();
        let got = dcov_stats(&xf, &yf, false, &stop).unwrap();
        assert!(
            (got.cov - want).abs() <= 2.0 * f64::EPSILON * want.abs(),
            "{} vs {want}",
            got.cov
        );
    }

    #[test]
    fn radix_sort_matches_a_comparison_sort() {
        let mut v: Vec<f64> = sym_vec(3, 5000)
            .iter()
            .map(|x| (x * 40.0).round() - 7.0)
            .collect();
        v.extend_from_slice(&[0.0, -0.0, 1e300, -1e300, f64::INFINITY, f64::NEG_INFINITY]);
        v.extend(sym_vec(4, 3000).iter().map(|x| x * 1e-5 - 3e-6));
        v.extend(sym_vec(5, 200).iter().map(|x| x * 1e20));
        let got = sorted(&v);
        let mut want: Vec<(f64, u32)> = v.iter().enumerate().map(|(i, &x)| (x, i as u32)).collect();
        want.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((g.0.to_bits(), g.1), (w.0.to_bits(), w.1));
        }
        assert!(sorted(&[]).is_empty());
        assert_eq!(
            sorted(&[2.5; 9]).iter().map(|p| p.1).collect::<Vec<_>>(),
            (0..9).collect::<Vec<u32>>()
        );
    }

    #[test]
    fn threads_do_not_change_results() {
        let stop = AtomicBool::new(false);
        let n = 100_000;
        let x = sym_vec(1, n);
        let y: Vec<f64> = sym_vec(2, n)
            .iter()
            .zip(&x)
            .map(|(a, b)| a + b * b)
            .collect();
        let a = dcov_stats(&x, &y, false, &stop).unwrap();
        threads::set_num_threads(1).unwrap();
        let b = dcov_stats(&x, &y, false, &stop).unwrap();
        threads::set_num_threads(2).unwrap();
        assert_eq!(a, b);
    }
}

#[cfg(test)]
mod plain_check {
    use super::*;
    use crate::core::testing::sym_vec;

    /// Plain sums on short runs change S_ab by far less than the compensated sums' own
    /// rounding (measured: below 1e-17 relative up to n = 10⁶; all-plain: about 1e-14).
    #[test]
    fn short_plain_runs_match_compensated_sums() {
        let stop = AtomicBool::new(false);
        let n = 60_000;
        for &(off, sc, dep) in &[(0.0, 1.0, 1.0), (1e10, 1.0, 0.0), (-1e10, 1e8, 0.0)] {
            let z = sym_vec(11, n);
            let w = sym_vec(12, n);
            let x: Vec<f64> = z.iter().map(|v| off + sc * v).collect();
            let y: Vec<f64> = w
                .iter()
                .zip(&z)
                .map(|(v, u)| off + sc * (v + dep * u * u))
                .collect();
            let xc = median_shifted(&x);
            let yc = median_shifted(&y);
            let sx = sorted(&xc);
            let go = |plain: usize| {
                let mut xs: Vec<f64> = sx.iter().map(|&(v, _)| v).collect();
                let mut ys: Vec<f64> = sx.iter().map(|&(_, i)| yc[i as usize]).collect();
                let mut tx = vec![0.0; n];
                let mut ty = vec![0.0; n];
                let l = simd::level();
                run(l, plain, &mut xs, &mut ys, &mut tx, &mut ty, &stop)
                    .unwrap()
                    .0
            };
            let (hybrid, comp) = (go(plain_max(n)), go(0));
            let rel = ((hybrid - comp).to_f64() / comp.to_f64()).abs();
            assert!(rel < 1e-16, "offset {off}, scale {sc}: {rel:e}");
        }
    }
}
