//! Distance correlation between every pair of 1-D columns (or every column of X with
//! every column of Y).
//!
//! Exponent 1 uses the exact O(n log n) path of [`fast1d`] with everything that depends on
//! one column only computed once per column: the median shift, the sort order, the row
//! sums Σ_j |x_i − x_j|, their total and the column's own dCov²(x, x). A pair then costs
//! one gather of the second column in the first one's order, one merge sort with the
//! signed running sums (S_ab), and one compensated dot product of the row sums, in four
//! length-n scratch vectors per task. Up to [`PLAIN_MAX_N`] observations S_ab comes from a
//! bottom-up merge sort with plain running sums (branch-free, no copies between levels),
//! which agrees with `divest.dcor` to about n·√n·ε relative on dCov² (the final
//! combination cancels terms about n times larger than dCov² of independent columns);
//! above it every intermediate is the one `fast1d::dcov_stats` computes for that pair, so
//! entries equal [`super::dcov_stats`] bit for bit.
//!
//! Other exponents run the pairwise engine per pair (O(n²) time, O(n) memory), with each
//! column's centred copy, row sums and centring offsets computed once.
//!
//! Pairs run in parallel on divest's pool, one row of the output per task (results do not
//! depend on the thread count); the stop flag is polled before every pair.

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use super::fast1d::{self, Sum2, Terms, CHUNK};
use super::sums::{Acc, Dd};
use super::{centred, centred_products, norm_factor, offsets, row_sums};
use crate::core::error::{invalid, Result};
use crate::core::pairwise::Points;
use crate::core::simd::{self, simd_fn, Fma};
use crate::core::threads;

/// What every pair with a column reuses (exponent 1).
struct Column {
    /// Median-shifted values, by original index.
    c: Vec<f64>,
    /// Original indices in ascending order of value (ties by index).
    order: Vec<u32>,
    /// The values in that order.
    sorted: Vec<f64>,
    /// Row sums Σ_j |c_i − c_j|, by original index.
    a: Vec<f64>,
    /// Σ_i a_i.
    s_a: Dd,
    /// dCov²(x, x).
    var: f64,
}

fn column(v: &[f64], unbiased: bool) -> Column {
    let n = v.len();
    let c = fast1d::median_shifted(v);
    let s = fast1d::sorted(&c);
    let a = fast1d::row_sums(&s);
    let order: Vec<u32> = s.iter().map(|p| p.1).collect();
    let sorted: Vec<f64> = s.iter().map(|p| p.0).collect();
    drop(s);
    // The same chunked sums as `fast1d::dcov_stats` (entries 0, 2, 4, 7 are Σc, Σa, Σa²,
    // Σc² whatever the second pair of arguments).
    let [sx, _, s_a, _, aa, _, _, sx2, _] = fast1d::moments(&c, &c, &a, &a);
    let nf = n as f64;
    let sxx = sx2.mul_f64(2.0 * nf) - (sx * sx).mul_f64(2.0);
    let var = fast1d::combine(
        &Terms {
            s_ab: sxx,
            ab: aa,
            s_a,
            s_b: s_a,
        },
        n,
        unbiased,
    );
    Column {
        c,
        order,
        sorted,
        a,
        s_a,
        var,
    }
}

#[inline(always)]
fn dot_body<M: Fma>(a: &[f64], b: &[f64]) -> Sum2 {
    let mut s = Sum2::default();
    for (&u, &v) in a.iter().zip(b) {
        s.add_prod::<M>(u, v);
    }
    s
}

simd_fn!(
    fn dot_chunk => dot_body(a: &[f64], b: &[f64]) -> Sum2
);

/// Σ a_i b_i as `fast1d::moments` sums it (same chunks, combined in the same order).
fn dot(level: simd::Level, a: &[f64], b: &[f64]) -> Dd {
    let mut out = Dd::default();
    for (ca, cb) in a.chunks(CHUNK).zip(b.chunks(CHUNK)) {
        out = out + dot_chunk(level, ca, cb).dd();
    }
    out
}

/// Σ a_i b_i with eight plain partial sums (vectorises; fixed order).
fn lane_dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (u, v) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += u[l] * v[l];
        }
    }
    let mut t = 0.0;
    for (u, v) in ra.iter().zip(rb) {
        t += u * v;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + t
}

/// Four length-n vectors per task.
struct Scratch {
    xs: Vec<f64>,
    ys: Vec<f64>,
    tx: Vec<f64>,
    ty: Vec<f64>,
}

impl Scratch {
    fn new(n: usize) -> Self {
        Scratch {
            xs: vec![0.0; n],
            ys: vec![0.0; n],
            tx: vec![0.0; n],
            ty: vec![0.0; n],
        }
    }
}

/// Largest n for which a pair's S_ab comes from plain (uncompensated) running sums. Their
/// relative rounding error on S_ab is about √n·ε (a sum along one merge of n/2 terms), so
/// at most about 45ε here; above it the pairs take `fast1d::run`, compensated on long runs.
pub const PLAIN_MAX_N: usize = 2048;

/// Merges the y-sorted runs `xs[..h]` (L) and `xs[h..]` (R) (their y in `ys`) into `tx`,
/// `ty`, returning Σ_{i∈R, j∈L} (x_i − x_j)|y_i − y_j| with plain running sums, branch-free.
#[inline(always)]
#[allow(clippy::extra_unused_type_parameters)]
fn merge_body<M: Fma>(xs: &[f64], ys: &[f64], h: usize, tx: &mut [f64], ty: &mut [f64]) -> f64 {
    // Signed sums over L: every j starts with s_j = −1 and flips to +1 once y_j < y_i.
    let (mut gx, mut gy, mut gxy) = (0.0, 0.0, 0.0);
    for (&x, &y) in xs[..h].iter().zip(&ys[..h]) {
        gx -= x;
        gy -= y;
        gxy -= x * y;
    }
    // The merge itself is fast1d's branch-free plain merge (an accumulator holding one
    // term returns it exactly, so the sums are the same bits).
    let g = [gx, gy, gxy].map(|v| {
        let mut a = Acc::default();
        a.add(v);
        a
    });
    fast1d::merge_plain_body::<M>(xs, ys, h, tx, ty, g).value()
}

/// The state of one merge in [`merge2_body`].
#[derive(Clone, Copy)]
struct St {
    p: usize,
    q: usize,
    o: usize,
    g0: f64,
    gx: f64,
    gy: f64,
    gxy: f64,
    cr: f64,
}

/// One run's input and output slices.
struct Runs<'a> {
    xs: &'a [f64],
    ys: &'a [f64],
    tx: &'a mut [f64],
    ty: &'a mut [f64],
}

impl Runs<'_> {
    #[inline(always)]
    fn start(&self, h: usize) -> St {
        let (mut gx, mut gy, mut gxy) = (0.0, 0.0, 0.0);
        for (&x, &y) in self.xs[..h].iter().zip(&self.ys[..h]) {
            gx -= x;
            gy -= y;
            gxy -= x * y;
        }
        St {
            p: 0,
            q: h,
            o: 0,
            g0: -(h as f64),
            gx,
            gy,
            gxy,
            cr: 0.0,
        }
    }

    /// One step of the branch-free merge (both runs non-empty).
    #[inline(always)]
    fn step(&mut self, s: &mut St) {
        let (xi, yi) = (self.xs[s.q], self.ys[s.q]);
        let (x, y) = (self.xs[s.p], self.ys[s.p]);
        let take = y < yi;
        let t = take as u8 as f64;
        s.g0 += 2.0 * t;
        s.gx += 2.0 * x * t;
        s.gy += 2.0 * y * t;
        s.gxy += 2.0 * (x * y) * t;
        let v = xi * (yi * s.g0 - s.gy) - (yi * s.gx - s.gxy);
        s.cr += v * (1.0 - t);
        let mask = 0u64.wrapping_sub(take as u64);
        self.tx[s.o] = f64::from_bits((x.to_bits() & mask) | (xi.to_bits() & !mask));
        self.ty[s.o] = f64::from_bits((y.to_bits() & mask) | (yi.to_bits() & !mask));
        s.p += take as usize;
        s.q += 1 - take as usize;
        s.o += 1;
    }

    /// The rest of the merge once one run is exhausted; returns the cross term.
    #[inline(always)]
    fn finish(&mut self, h: usize, mut s: St) -> f64 {
        let m = self.xs.len();
        while s.p < h && s.q < m {
            self.step(&mut s);
        }
        while s.q < m {
            let (xi, yi) = (self.xs[s.q], self.ys[s.q]);
            s.cr += xi * (yi * s.g0 - s.gy) - (yi * s.gx - s.gxy);
            self.tx[s.o] = xi;
            self.ty[s.o] = yi;
            s.q += 1;
            s.o += 1;
        }
        let rest = h - s.p;
        self.tx[s.o..s.o + rest].copy_from_slice(&self.xs[s.p..h]);
        self.ty[s.o..s.o + rest].copy_from_slice(&self.ys[s.p..h]);
        s.cr
    }
}

/// Two independent merges of runs of the same shape (L = `..h`), stepped in lockstep so
/// that their dependency chains overlap; the cross terms of each, as [`merge_body`].
#[inline(always)]
fn merge2(a: &mut Runs<'_>, b: &mut Runs<'_>, h: usize) -> (f64, f64) {
    let m = a.xs.len();
    let (mut sa, mut sb) = (a.start(h), b.start(h));
    while sa.p < h && sa.q < m && sb.p < h && sb.q < m {
        a.step(&mut sa);
        b.step(&mut sb);
    }
    (a.finish(h, sa), b.finish(h, sb))
}

/// [`half_sab_body`] for two point sets of the same length at once (two column pairs),
/// their merges in lockstep.
#[inline(always)]
#[allow(clippy::extra_unused_type_parameters)]
fn half_sab2_body<M: Fma>(a: &mut Scratch, b: &mut Scratch) -> (f64, f64) {
    let n = a.xs.len();
    let (mut ta, mut tb) = (Acc::default(), Acc::default());
    let (mut la, mut lb) = (0.0, 0.0);
    for (cx, cy) in a.xs.chunks_mut(8).zip(a.ys.chunks_mut(8)) {
        la += leaf(cx, cy);
    }
    for (cx, cy) in b.xs.chunks_mut(8).zip(b.ys.chunks_mut(8)) {
        lb += leaf(cx, cy);
    }
    ta.add(la);
    tb.add(lb);
    let (mut asx, mut asy, mut adx, mut ady) = (&mut a.xs, &mut a.ys, &mut a.tx, &mut a.ty);
    let (mut bsx, mut bsy, mut bdx, mut bdy) = (&mut b.xs, &mut b.ys, &mut b.tx, &mut b.ty);
    let mut w = 8;
    while w < n {
        let mut s = 0;
        while s < n {
            let mid = (s + w).min(n);
            let end = (s + 2 * w).min(n);
            if mid < end {
                let mut ra = Runs {
                    xs: &asx[s..end],
                    ys: &asy[s..end],
                    tx: &mut adx[s..end],
                    ty: &mut ady[s..end],
                };
                let mut rb = Runs {
                    xs: &bsx[s..end],
                    ys: &bsy[s..end],
                    tx: &mut bdx[s..end],
                    ty: &mut bdy[s..end],
                };
                let (ca, cb) = merge2(&mut ra, &mut rb, mid - s);
                ta.add(ca);
                tb.add(cb);
            } else {
                adx[s..end].copy_from_slice(&asx[s..end]);
                ady[s..end].copy_from_slice(&asy[s..end]);
                bdx[s..end].copy_from_slice(&bsx[s..end]);
                bdy[s..end].copy_from_slice(&bsy[s..end]);
            }
            s = end;
        }
        std::mem::swap(&mut asx, &mut adx);
        std::mem::swap(&mut asy, &mut ady);
        std::mem::swap(&mut bsx, &mut bdx);
        std::mem::swap(&mut bsy, &mut bdy);
        w *= 2;
    }
    (ta.value(), tb.value())
}

simd_fn!(
    fn half_sab2 => half_sab2_body(a: &mut Scratch, b: &mut Scratch) -> (f64, f64)
);

/// dCov²(x, y0) and dCov²(x, y1) of prepared columns (n ≤ [`PLAIN_MAX_N`]), the two merge
/// sorts in lockstep.
fn pair_cov2(
    x: &Column,
    y: [&Column; 2],
    unbiased: bool,
    sc: &mut (Scratch, Scratch),
) -> (f64, f64) {
    let n = x.c.len();
    for (s, c) in [&mut sc.0, &mut sc.1].into_iter().zip(y) {
        s.xs.copy_from_slice(&x.sorted);
        for (ys, &i) in s.ys.iter_mut().zip(&x.order) {
            *ys = c.c[i as usize];
        }
    }
    let (ha, hb) = half_sab2(simd::level(), &mut sc.0, &mut sc.1);
    let cov = |half: f64, c: &Column| {
        fast1d::combine(
            &Terms {
                s_ab: Dd::from(half).mul_f64(2.0),
                ab: Dd::from(lane_dot(&x.a, &c.a)),
                s_a: x.s_a,
                s_b: c.s_a,
            },
            n,
            unbiased,
        )
    };
    (cov(ha, y[0]), cov(hb, y[1]))
}

/// Optimal 8-input sorting network (19 comparators).
const NET8: [(usize, usize); 19] = [
    (0, 1),
    (2, 3),
    (4, 5),
    (6, 7),
    (0, 2),
    (1, 3),
    (4, 6),
    (5, 7),
    (1, 2),
    (5, 6),
    (0, 4),
    (3, 7),
    (1, 5),
    (2, 6),
    (1, 4),
    (3, 6),
    (2, 4),
    (3, 5),
    (3, 4),
];

/// Σ_{j<i} (x_i − x_j)|y_i − y_j| over a run of at most 8 points (in x order) by direct
/// sums, then the run sorted by y (carrying x): a branch-free network for 8 points.
#[inline(always)]
fn leaf(xs: &mut [f64], ys: &mut [f64]) -> f64 {
    let m = xs.len();
    let mut acc = 0.0;
    for i in 1..m {
        for j in 0..i {
            acc += (xs[i] - xs[j]) * (ys[i] - ys[j]).abs();
        }
    }
    if m == 8 {
        for &(i, j) in &NET8 {
            let (a, b) = (ys[i], ys[j]);
            let sw = b < a;
            let (xa, xb) = (xs[i], xs[j]);
            ys[i] = if sw { b } else { a };
            ys[j] = if sw { a } else { b };
            xs[i] = if sw { xb } else { xa };
            xs[j] = if sw { xa } else { xb };
        }
    } else {
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
    }
    acc
}

/// Σ_{j before i in x order} (x_i − x_j)|y_i − y_j| (half of S_ab) of points given in x
/// order, by a bottom-up merge sort on y with ping-pong buffers (`tx`, `ty` scratch of the
/// same length), from sorted runs of 8 (see [`leaf`]). Per merge the cross term is a plain sum; the merges' terms are summed with
/// compensation.
#[inline(always)]
fn half_sab_body<M: Fma>(xs: &mut [f64], ys: &mut [f64], tx: &mut [f64], ty: &mut [f64]) -> f64 {
    let n = xs.len();
    let mut total = Acc::default();
    let mut leaves = 0.0;
    for (cx, cy) in xs.chunks_mut(8).zip(ys.chunks_mut(8)) {
        leaves += leaf(cx, cy);
    }
    total.add(leaves);
    let (mut sx, mut sy, mut dx, mut dy) = (xs, ys, tx, ty);
    let mut w = 8;
    while w < n {
        let mut s = 0;
        while s < n {
            let mid = (s + w).min(n);
            let end = (s + 2 * w).min(n);
            if mid < end {
                total.add(merge_body::<M>(
                    &sx[s..end],
                    &sy[s..end],
                    mid - s,
                    &mut dx[s..end],
                    &mut dy[s..end],
                ));
            } else {
                dx[s..end].copy_from_slice(&sx[s..end]);
                dy[s..end].copy_from_slice(&sy[s..end]);
            }
            s = end;
        }
        std::mem::swap(&mut sx, &mut dx);
        std::mem::swap(&mut sy, &mut dy);
        w *= 2;
    }
    total.value()
}

simd_fn!(
    fn half_sab => half_sab_body(xs: &mut [f64], ys: &mut [f64], tx: &mut [f64], ty: &mut [f64]) -> f64
);

/// dCov²(x, y) of two prepared columns.
fn pair_cov(
    x: &Column,
    y: &Column,
    unbiased: bool,
    sc: &mut Scratch,
    stop: &AtomicBool,
) -> Result<f64> {
    let n = x.c.len();
    sc.xs.copy_from_slice(&x.sorted);
    for (ys, &i) in sc.ys.iter_mut().zip(&x.order) {
        *ys = y.c[i as usize];
    }
    let level = simd::level();
    let half = if n <= PLAIN_MAX_N {
        Dd::from(half_sab(
            level, &mut sc.xs, &mut sc.ys, &mut sc.tx, &mut sc.ty,
        ))
    } else {
        fast1d::run(
            level,
            fast1d::plain_max(n),
            &mut sc.xs,
            &mut sc.ys,
            &mut sc.tx,
            &mut sc.ty,
            stop,
        )?
        .0
    };
    let ab = if n <= PLAIN_MAX_N {
        Dd::from(lane_dot(&x.a, &y.a))
    } else {
        dot(level, &x.a, &y.a)
    };
    Ok(fast1d::combine(
        &Terms {
            s_ab: half.mul_f64(2.0),
            ab,
            s_a: x.s_a,
            s_b: y.s_a,
        },
        n,
        unbiased,
    ))
}

/// The correlation from (dCov²(x, y), dCov²(x, x), dCov²(y, y)), exactly as
/// `divest.dcor` (V: the square root, clamped to [0, 1]) or `divest.dcor_sqr(...,
/// unbiased=True)` (clamped to [−1, 1]) form it; 0 when a variance is 0.
fn correlation(cov: f64, vx: f64, vy: f64, unbiased: bool) -> f64 {
    let den = (vx * vy).abs().sqrt();
    let r = if den > 0.0 { cov / den } else { 0.0 };
    if unbiased {
        r.clamp(-1.0, 1.0)
    } else {
        r.clamp(0.0, 1.0).sqrt()
    }
}

/// Prepared columns of the general-exponent path.
struct EngineColumn {
    c: Vec<f64>,
    off: Vec<f64>,
    var: f64,
}

fn engine_column(v: &[f64], alpha: f64, unbiased: bool, stop: &AtomicBool) -> Result<EngineColumn> {
    let n = v.len();
    let c = centred(Points::new(v, n, 1)?)?;
    let p = Points::new(&c, n, 1)?;
    let rows = row_sums(p, alpha, stop)?;
    let off = offsets(&rows, unbiased);
    let s = centred_products(&[p], &[&off], alpha, unbiased, vec![(0, 0)], stop)?;
    let var = s[0] * norm_factor(n, unbiased);
    Ok(EngineColumn { c, off, var })
}

fn engine_cov(
    x: &EngineColumn,
    y: &EngineColumn,
    alpha: f64,
    unbiased: bool,
    stop: &AtomicBool,
) -> Result<f64> {
    let n = x.c.len();
    let px = Points::new(&x.c, n, 1)?;
    let py = Points::new(&y.c, n, 1)?;
    let s = centred_products(
        &[px, py],
        &[&x.off, &y.off],
        alpha,
        unbiased,
        vec![(0, 1)],
        stop,
    )?;
    Ok(s[0] * norm_factor(n, unbiased))
}

/// Fills `out` (p × q, row-major): entry (i, j) is `cov(i, j)` turned into a correlation.
/// With `sym` (Y is X) only j > i is computed; the diagonal is 1 for a column of positive
/// variance and 0 for a constant one, and the lower triangle mirrors the upper one.
#[allow(clippy::too_many_arguments)]
fn fill<S, C>(
    out: &mut [f64],
    q: usize,
    sym: bool,
    var_x: &[f64],
    var_y: &[f64],
    unbiased: bool,
    scratch: impl Fn() -> S + Sync + Send,
    covs: C,
) -> Result<()>
where
    C: Fn(&mut S, usize, usize, &mut [f64]) -> Result<()> + Sync + Send,
{
    if q == 0 {
        return Ok(());
    }
    out.par_chunks_mut(q).enumerate().try_for_each_init(
        &scratch,
        |sc, (i, row)| -> Result<()> {
            let start = if sym { i + 1 } else { 0 };
            covs(sc, i, start, &mut row[start..])?;
            for (o, vy) in row[start..].iter_mut().zip(&var_y[start..]) {
                *o = correlation(*o, var_x[i], *vy, unbiased);
            }
            Ok(())
        },
    )?;
    if sym {
        for i in 0..q {
            out[i * q + i] = if var_x[i] > 0.0 { 1.0 } else { 0.0 };
            for j in 0..i {
                out[i * q + j] = out[j * q + i];
            }
        }
    }
    Ok(())
}

/// Distance correlations between the columns of `x` (`p` columns of `n` values, each
/// contiguous) and those of `y` (`Some((values, q))`, columns likewise), or between every
/// pair of columns of `x` (`None`). Returns the p × q (or p × p) matrix, row-major: the V
/// distance correlation (as `divest.dcor`), or with `unbiased` the bias-corrected squared
/// distance correlation (as `divest.dcor_sqr(..., unbiased=True)`, clamped to [−1, 1]).
/// A constant column has correlation 0 with everything (itself included).
///
/// Memory: 20 bytes per value of x and y (exponent 1: shifted values, sort order, row
/// sums) or 24 (other exponents), plus 32·n bytes per task and the output.
pub fn dcor_matrix(
    x: &[f64],
    p: usize,
    y: Option<(&[f64], usize)>,
    n: usize,
    exponent: f64,
    unbiased: bool,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    super::check_exponent(exponent)?;
    if n == 0 {
        return Err(invalid!("the samples need at least one observation"));
    }
    if unbiased && n < 4 {
        return Err(invalid!(
            "the bias-corrected statistic needs at least 4 observations; got {n}"
        ));
    }
    if n > u32::MAX as usize {
        return Err(invalid!("at most {} observations are supported", u32::MAX));
    }
    if x.len() != p * n || y.is_some_and(|(v, q)| v.len() != q * n) {
        return Err(invalid!("column data have the wrong length"));
    }
    let q = y.map_or(p, |(_, q)| q);
    let sym = y.is_none();
    let mut out = crate::core::error::try_vec(
        crate::core::error::checked_size(p, q, "the correlation matrix")?,
        0.0f64,
        "the correlation matrix",
    )?;
    threads::install(|| -> Result<()> {
        if exponent == 1.0 {
            let prep = |v: &[f64], k: usize| -> Result<Vec<Column>> {
                (0..k)
                    .into_par_iter()
                    .map(|j| {
                        threads::check(stop)?;
                        Ok(column(&v[j * n..(j + 1) * n], unbiased))
                    })
                    .collect()
            };
            let cx = prep(x, p)?;
            let cy = match y {
                Some((v, q)) => Some(prep(v, q)?),
                None => None,
            };
            let cy_ref = cy.as_ref().unwrap_or(&cx);
            let vx: Vec<f64> = cx.iter().map(|c| c.var).collect();
            let vy: Vec<f64> = cy_ref.iter().map(|c| c.var).collect();
            fill(
                &mut out,
                q,
                sym,
                &vx,
                &vy,
                unbiased,
                || (Scratch::new(n), Scratch::new(n)),
                |sc, i, start, row| {
                    let mut j = start;
                    for o in row.chunks_mut(2) {
                        threads::check(stop)?;
                        if o.len() == 2 && n <= PLAIN_MAX_N {
                            let (a, b) =
                                pair_cov2(&cx[i], [&cy_ref[j], &cy_ref[j + 1]], unbiased, sc);
                            o[0] = a;
                            o[1] = b;
                        } else {
                            for (t, v) in o.iter_mut().enumerate() {
                                *v = pair_cov(&cx[i], &cy_ref[j + t], unbiased, &mut sc.0, stop)?;
                            }
                        }
                        j += o.len();
                    }
                    Ok(())
                },
            )
        } else {
            let prep = |v: &[f64], k: usize| -> Result<Vec<EngineColumn>> {
                (0..k)
                    .map(|j| engine_column(&v[j * n..(j + 1) * n], exponent, unbiased, stop))
                    .collect()
            };
            let cx = prep(x, p)?;
            let cy = match y {
                Some((v, q)) => Some(prep(v, q)?),
                None => None,
            };
            let cy_ref = cy.as_ref().unwrap_or(&cx);
            let vx: Vec<f64> = cx.iter().map(|c| c.var).collect();
            let vy: Vec<f64> = cy_ref.iter().map(|c| c.var).collect();
            fill(
                &mut out,
                q,
                sym,
                &vx,
                &vy,
                unbiased,
                || (),
                |_, i, start, row| {
                    for (t, o) in row.iter_mut().enumerate() {
                        threads::check(stop)?;
                        *o = engine_cov(&cx[i], &cy_ref[start + t], exponent, unbiased, stop)?;
                    }
                    Ok(())
                },
            )
        }
    })??;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::dcov::{dcov_stats, Method};
    use crate::core::testing::sym_vec;

    fn reference(x: &[f64], y: &[f64], alpha: f64, unbiased: bool) -> f64 {
        let stop = AtomicBool::new(false);
        let n = x.len();
        let s = dcov_stats(
            Points::new(x, n, 1).unwrap(),
            Points::new(y, n, 1).unwrap(),
            alpha,
            unbiased,
            Method::Auto,
            &stop,
        )
        .unwrap();
        correlation(s.cov, s.var_x, s.var_y, unbiased)
    }

    #[test]
    fn entries_equal_pairwise_calls() {
        let stop = AtomicBool::new(false);
        for &n in &[4usize, 17, 100, 300, 2049] {
            let p = 5;
            let mut x = Vec::new();
            let base = sym_vec(n as u64, n);
            for j in 0..p {
                let z = sym_vec(100 + j as u64, n);
                x.extend(
                    z.iter()
                        .zip(&base)
                        .map(|(a, b)| ((a + (j as f64) * 0.3 * b * b) * 8.0).round() / 8.0),
                );
            }
            // A constant column.
            x[2 * n..3 * n].iter_mut().for_each(|v| *v = 1.5);
            for unbiased in [false, true] {
                for alpha in [1.0, 0.5] {
                    let m = dcor_matrix(&x, p, None, n, alpha, unbiased, &stop).unwrap();
                    for i in 0..p {
                        for j in 0..p {
                            let got = m[i * p + j];
                            let (ci, cj) = (&x[i * n..(i + 1) * n], &x[j * n..(j + 1) * n]);
                            if i == j {
                                assert_eq!(got, if i == 2 { 0.0 } else { 1.0 });
                                continue;
                            }
                            let want = reference(ci, cj, alpha, unbiased);
                            if alpha == 1.0 && n > PLAIN_MAX_N {
                                assert_eq!(got.to_bits(), want.to_bits(), "n={n} {i},{j}");
                            } else {
                                assert!((got - want).abs() <= 1e-12, "{got} vs {want}");
                            }
                        }
                    }
                    // Rectangular: columns 1..3 against 3..5.
                    let m2 = dcor_matrix(
                        &x[n..3 * n],
                        2,
                        Some((&x[3 * n..], 2)),
                        n,
                        alpha,
                        unbiased,
                        &stop,
                    )
                    .unwrap();
                    for i in 0..2 {
                        for j in 0..2 {
                            assert_eq!(m2[i * 2 + j], m[(1 + i) * p + 3 + j]);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn leaves_sort_and_sum_like_the_definition() {
        // 0-1 principle: the network sorts every 0/1 input, so it sorts everything.
        for bits in 0u32..256 {
            let mut y: Vec<f64> = (0..8).map(|b| ((bits >> b) & 1) as f64).collect();
            let mut x: Vec<f64> = (0..8).map(|b| b as f64).collect();
            leaf(&mut x, &mut y);
            assert!(y.windows(2).all(|w| w[0] <= w[1]), "{bits}");
        }
        let mut g = crate::core::testing::Lcg::new(4);
        for m in 1..=8 {
            let mut x: Vec<f64> = (0..m).map(|_| g.unit()).collect();
            x.sort_by(|a, b| a.total_cmp(b));
            let mut y: Vec<f64> = (0..m).map(|_| g.unit()).collect();
            let pairs: Vec<(f64, f64)> = x.iter().copied().zip(y.iter().copied()).collect();
            let want: f64 = (0..m)
                .flat_map(|i| (0..i).map(move |j| (i, j)))
                .map(|(i, j)| (x[i] - x[j]) * (y[i] - y[j]).abs())
                .sum();
            let got = leaf(&mut x, &mut y);
            assert!((got - want).abs() < 1e-14);
            assert!(y.windows(2).all(|w| w[0] <= w[1]));
            for (xv, yv) in x.iter().zip(&y) {
                assert!(pairs.contains(&(*xv, *yv)));
            }
        }
    }

    #[test]
    fn threads_do_not_change_results_and_stop_is_honoured() {
        let stop = AtomicBool::new(false);
        let (n, p) = (200, 9);
        let x: Vec<f64> = sym_vec(3, n * p);
        let a = dcor_matrix(&x, p, None, n, 1.0, false, &stop).unwrap();
        threads::set_num_threads(1).unwrap();
        let b = dcor_matrix(&x, p, None, n, 1.0, false, &stop).unwrap();
        threads::set_num_threads(2).unwrap();
        assert_eq!(a, b);
        let stopped = AtomicBool::new(true);
        assert!(dcor_matrix(&x, p, None, n, 1.0, false, &stopped).is_err());
        assert!(dcor_matrix(&x, p, None, 3, 1.0, true, &stop).is_err());
        assert!(dcor_matrix(&x, p, None, n, 2.0, false, &stop).is_err());
    }
}
