//! Kernel tests with permutation p-values: MMD two-sample test, HSIC and dHSIC
//! independence tests, and the partial distance correlation test; plus the exact median
//! of pairwise distances (the bandwidth heuristic) in O(n) memory.
//!
//! One resample driver ([`Resamples`], over [`resample`] on the stored path) serves every
//! test on both paths: resample r draws its permutation(s) from the SplitMix64 streams of
//! [`permutation`], keyed by (seed, stream), and evaluates its statistic serially, so the
//! null distribution depends on the seed and on r only (never on the thread count or on
//! how resamples are split: resamples `first..first + count` of one seed are the same
//! values whichever call computes them).
//!
//! Every statistic is Σ_ij Π_k M_k[π_k(i), π_k(j)] plus O(n) terms, for n×n matrices M_k.
//! With `store` (n ≤ [`STORE_MAX`]) the matrices are stored (one n² f64 buffer each) and
//! each resample gathers their permuted entries. Without it (larger n) the statistics of
//! groups of resamples are evaluated tile by tile through the pairwise engine (module
//! `tiled`): SIMD distance tiles (exact differences, or the packed micro-kernel above 16
//! dimensions) and the SIMD exponential, in O(n) memory besides one tile per set per
//! task. The two paths agree to rounding (about 1e-13 relative); each is reproducible
//! bit for bit on its own.

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use crate::core::dcov::perm::permutation;
pub use crate::core::dcov::perm::STORE_MAX;
use crate::core::dcov::sums::Acc;
use crate::core::error::{checked_size, invalid, try_vec, Result};
use crate::core::pairwise::Points;
use crate::core::threads;

mod tiled;

/// A kernel of the squared Euclidean distance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kernel {
    /// exp(−‖u − v‖² / (2σ²)).
    Gaussian(f64),
    /// exp(−‖u − v‖ / σ).
    Laplacian(f64),
    /// ‖u − v‖^α (the distance "kernel" of distance covariance), α in (0, 2).
    Distance(f64),
}

impl Kernel {
    fn check(&self) -> Result<()> {
        let ok = match *self {
            Kernel::Gaussian(s) | Kernel::Laplacian(s) => s.is_finite() && s > 0.0,
            Kernel::Distance(a) => a > 0.0 && a < 2.0,
        };
        if ok {
            Ok(())
        } else {
            Err(invalid!(
                "kernel parameter {self:?} is invalid: the bandwidth must be positive and \
                 finite, the exponent in (0, 2)"
            ))
        }
    }

    #[inline]
    fn eval(&self, d2: f64) -> f64 {
        match *self {
            Kernel::Gaussian(s) => {
                let g = 0.5 / (s * s);
                if g.is_finite() {
                    (-d2 * g).exp()
                } else {
                    // σ so small that 1/σ² overflows: scale the distance first.
                    let t = d2.sqrt() / s;
                    (-0.5 * t * t).exp()
                }
            }
            Kernel::Laplacian(s) => (-d2.sqrt() / s).exp(),
            Kernel::Distance(a) => {
                if a == 1.0 {
                    d2.sqrt()
                } else {
                    d2.powf(0.5 * a)
                }
            }
        }
    }
}

#[inline]
fn sqd(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(u, v)| (u - v) * (u - v)).sum()
}

/// How the kernel matrix is centred.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Centre {
    /// K itself (diagonal included).
    Raw,
    /// H K H with H = I − 11ᵀ/n (diagonal included).
    Double,
    /// U-centring (Székely & Rizzo 2014) of K with its diagonal set to 0; zero diagonal.
    U,
}

/// Row i of a matrix, written into `out` (length n).
pub trait RowSource: Sync {
    /// Number of rows (= columns).
    fn n(&self) -> usize;
    /// Writes row i into `out`.
    fn fill(&self, i: usize, out: &mut [f64]);
}

/// A (centred) kernel matrix of one sample, computed row by row.
pub struct KernelRows<'a> {
    p: Points<'a, f64>,
    k: Kernel,
    centre: Centre,
    sums: Vec<f64>,
    total: f64,
}

impl<'a> KernelRows<'a> {
    /// Computes the row sums the centring needs (one pass over all pairs).
    pub fn new(p: Points<'a, f64>, k: Kernel, centre: Centre, stop: &AtomicBool) -> Result<Self> {
        k.check()?;
        let n = p.n;
        if centre == Centre::U && n < 4 {
            return Err(invalid!(
                "an unbiased (U-centred) statistic needs at least 4 observations; got {n}"
            ));
        }
        let mut sums = try_vec(n, 0.0f64, "the number of observations")?;
        if centre != Centre::Raw {
            let zero_diag = centre == Centre::U;
            threads::install(|| {
                sums.par_iter_mut()
                    .enumerate()
                    .try_for_each(|(i, s)| -> Result<()> {
                        if i % 64 == 0 {
                            threads::check(stop)?;
                        }
                        let mut a = Acc::default();
                        for j in 0..n {
                            if !(zero_diag && i == j) {
                                a.add(k.eval(sqd(p.row(i), p.row(j))));
                            }
                        }
                        *s = a.value();
                        Ok(())
                    })
            })??;
        }
        let mut t = Acc::default();
        for &s in &sums {
            t.add(s);
        }
        Ok(KernelRows {
            p,
            k,
            centre,
            sums,
            total: t.value(),
        })
    }

    /// Row sums of the uncentred matrix (zero diagonal in U mode); empty for `Raw`.
    pub fn sums(&self) -> &[f64] {
        &self.sums
    }
}

impl RowSource for KernelRows<'_> {
    fn n(&self) -> usize {
        self.p.n
    }
    fn fill(&self, i: usize, out: &mut [f64]) {
        let n = self.p.n;
        let xi = self.p.row(i);
        for (j, o) in out.iter_mut().enumerate() {
            *o = self.k.eval(sqd(xi, self.p.row(j)));
        }
        let nf = n as f64;
        match self.centre {
            Centre::Raw => {}
            Centre::Double => {
                let (ri, t) = (self.sums[i] / nf, self.total / (nf * nf));
                for (o, &rj) in out.iter_mut().zip(&self.sums) {
                    *o = (*o - ri) - rj / nf + t;
                }
            }
            Centre::U => {
                let (ri, t) = (
                    self.sums[i] / (nf - 2.0),
                    self.total / ((nf - 1.0) * (nf - 2.0)),
                );
                for (o, &rj) in out.iter_mut().zip(&self.sums) {
                    *o = (*o - ri) - rj / (nf - 2.0) + t;
                }
                out[i] = 0.0;
            }
        }
    }
}

/// A − β C for two row sources of the same size (the projection of partial dCov).
pub struct Projected<'a> {
    a: &'a dyn RowSource,
    c: &'a dyn RowSource,
    beta: f64,
}

impl RowSource for Projected<'_> {
    fn n(&self) -> usize {
        self.a.n()
    }
    fn fill(&self, i: usize, out: &mut [f64]) {
        self.a.fill(i, out);
        if self.beta != 0.0 {
            let mut c = vec![0.0; out.len()];
            self.c.fill(i, &mut c);
            for (o, v) in out.iter_mut().zip(&c) {
                *o -= self.beta * v;
            }
        }
    }
}

/// Σ_ij A_ij B_ij of two row sources (compensated; serial over rows in a fixed order).
fn inner(a: &dyn RowSource, b: &dyn RowSource, stop: &AtomicBool) -> Result<f64> {
    let n = a.n();
    let parts: Vec<f64> = threads::install(|| {
        (0..n)
            .into_par_iter()
            .map(|i| -> Result<f64> {
                if i % 64 == 0 {
                    threads::check(stop)?;
                }
                let (mut ra, mut rb) = (vec![0.0; n], vec![0.0; n]);
                a.fill(i, &mut ra);
                b.fill(i, &mut rb);
                Ok(row_dot(&ra, &rb))
            })
            .collect::<Result<Vec<f64>>>()
    })??;
    let mut s = Acc::default();
    for v in parts {
        s.add(v);
    }
    Ok(s.value())
}

fn row_dot(a: &[f64], b: &[f64]) -> f64 {
    let mut s = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let mut t = 0.0;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        t += x * y;
    }
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            s[l] += x[l] * y[l];
        }
    }
    (s[0] + s[1]) + (s[2] + s[3]) + t
}

/// A matrix given by its rows: stored, or recomputed from a source on demand.
pub enum Mat<'a> {
    /// Row-major n×n.
    Stored(Vec<f64>, usize),
    /// Rows recomputed per use.
    Lazy(&'a dyn RowSource),
}

impl<'a> Mat<'a> {
    /// Stores the matrix when `store` (n² f64), else keeps the source.
    pub fn new(src: &'a dyn RowSource, store: bool, stop: &AtomicBool) -> Result<Mat<'a>> {
        if !store {
            return Ok(Mat::Lazy(src));
        }
        let n = src.n();
        let mut m = try_vec(
            checked_size(n, n, "the Gram matrix")?,
            0.0f64,
            "the Gram matrix",
        )?;
        if n > 0 {
            threads::install(|| {
                m.par_chunks_mut(n)
                    .enumerate()
                    .try_for_each(|(i, row)| -> Result<()> {
                        if i % 64 == 0 {
                            threads::check(stop)?;
                        }
                        src.fill(i, row);
                        Ok(())
                    })
            })??;
        }
        Ok(Mat::Stored(m, n))
    }

    fn n(&self) -> usize {
        match self {
            Mat::Stored(_, n) => *n,
            Mat::Lazy(s) => s.n(),
        }
    }

    /// Row i: a slice of the stored matrix, or `scratch` filled from the source.
    fn row<'s>(&'s self, i: usize, scratch: &'s mut [f64]) -> &'s [f64] {
        match self {
            Mat::Stored(m, n) => &m[i * n..(i + 1) * n],
            Mat::Lazy(s) => {
                s.fill(i, scratch);
                scratch
            }
        }
    }
}

/// Σ_ij Π_k M_k[π_k(i), π_k(j)] (compensated over rows; serial, so bitwise reproducible).
fn prod_gather(mats: &[&Mat<'_>], perms: &[Vec<u32>], stop: &AtomicBool) -> Result<f64> {
    let n = mats[0].n();
    let mut scratch: Vec<Vec<f64>> = mats
        .iter()
        .map(|m| {
            if matches!(m, Mat::Lazy(_)) {
                vec![0.0; n]
            } else {
                Vec::new()
            }
        })
        .collect();
    let mut acc = Acc::default();
    let mut prod = vec![0.0; n];
    for i in 0..n {
        if i % 256 == 255 {
            threads::check(stop)?;
        }
        if mats.len() == 2 {
            let (s0, s1) = scratch.split_at_mut(1);
            let (p0, p1) = (&perms[0], &perms[1]);
            let r0 = mats[0].row(p0[i] as usize, &mut s0[0]);
            let r1 = mats[1].row(p1[i] as usize, &mut s1[0]);
            let mut s = [0.0f64; 4];
            let mut j = 0;
            while j + 4 <= n {
                for l in 0..4 {
                    s[l] += r0[p0[j + l] as usize] * r1[p1[j + l] as usize];
                }
                j += 4;
            }
            let mut t = 0.0;
            while j < n {
                t += r0[p0[j] as usize] * r1[p1[j] as usize];
                j += 1;
            }
            acc.add((s[0] + s[1]) + (s[2] + s[3]) + t);
            continue;
        }
        prod.iter_mut().for_each(|v| *v = 1.0);
        for (k, m) in mats.iter().enumerate() {
            let pk = &perms[k];
            let r = m.row(pk[i] as usize, &mut scratch[k]);
            for (v, &pj) in prod.iter_mut().zip(pk.iter()) {
                *v *= r[pj as usize];
            }
        }
        acc.add(prod.iter().sum());
    }
    Ok(acc.value())
}

/// The resampling engine: `count` statistics for resamples `first..first + count`,
/// `stat(r)` for resample r, evaluated in parallel and written in resample order.
pub fn resample<F>(count: usize, first: u64, stop: &AtomicBool, stat: F) -> Result<Vec<f64>>
where
    F: Fn(u64) -> Result<f64> + Sync,
{
    let mut null = try_vec(count, 0.0f64, "n_resamples")?;
    threads::install(|| {
        null.par_iter_mut()
            .enumerate()
            .try_for_each(|(r, o)| -> Result<()> {
                threads::check(stop)?;
                *o = stat(first + r as u64)?;
                Ok(())
            })
    })??;
    Ok(null)
}

/// The resample driver of every test, on either path: the resamples `first..first +
/// count` of `seed`, each drawing `per` permutations of 0..n (resample r's k-th is
/// stream r·per + k), and the data, whose "permutations" are identities. Item 0 of a
/// test is the data (its statistic), item i ≥ 1 resample first + i − 1.
#[derive(Clone, Copy, Debug)]
struct Resamples {
    count: usize,
    first: u64,
    seed: u64,
    n: usize,
    per: u64,
}

impl Resamples {
    fn new(count: usize, first: u64, seed: u64, n: usize, per: u64) -> Self {
        Resamples {
            count,
            first,
            seed,
            n,
            per,
        }
    }

    /// The permutations of item `i`.
    fn perms(&self, i: usize) -> Vec<Vec<u32>> {
        (0..self.per)
            .map(|k| {
                if i == 0 {
                    identity(self.n)
                } else {
                    let r = self.first + (i - 1) as u64;
                    permutation(self.n, self.seed, r * self.per + k)
                }
            })
            .collect()
    }

    /// The stored path: `stat(perms)` of the data, then of each resample, one resample
    /// per task in parallel ([`resample`]).
    fn each<F>(&self, stop: &AtomicBool, stat: F) -> Result<TestOutput>
    where
        F: Fn(Vec<Vec<u32>>) -> Result<f64> + Sync,
    {
        let statistic = stat(self.perms(0))?;
        let null = resample(self.count, self.first, stop, |r| {
            stat(self.perms((r - self.first) as usize + 1))
        })?;
        Ok(TestOutput { statistic, null })
    }

    /// The tiled path: `pass(perms of items a..b)` gives their values, for consecutive
    /// groups a..b of at most `group` items, one group after another (each pass runs in
    /// parallel inside).
    fn in_groups<F>(&self, group: usize, stop: &AtomicBool, mut pass: F) -> Result<TestOutput>
    where
        F: FnMut(&[Vec<Vec<u32>>]) -> Result<Vec<f64>>,
    {
        let count = self.count + 1;
        let mut out = try_vec(count, 0.0f64, "n_resamples")?;
        let mut a = 0;
        while a < count {
            threads::check(stop)?;
            let b = (a + group).min(count);
            let items: Vec<Vec<Vec<u32>>> = (a..b).map(|i| self.perms(i)).collect();
            let v = pass(&items)?;
            out[a..b].copy_from_slice(&v);
            a = b;
        }
        Ok(TestOutput {
            statistic: out[0],
            null: out[1..].to_vec(),
        })
    }
}

/// Observed statistic and resampled statistics.
#[derive(Clone, Debug)]
pub struct TestOutput {
    /// The statistic of the data.
    pub statistic: f64,
    /// One statistic per resample, in resample order.
    pub null: Vec<f64>,
}

fn identity(n: usize) -> Vec<u32> {
    (0..n as u32).collect()
}

fn same_n(ps: &[Points<'_, f64>]) -> Result<usize> {
    let n = ps[0].n;
    for (k, p) in ps.iter().enumerate() {
        if p.n != n {
            return Err(invalid!(
                "every sample must have the same number of observations; sample 0 has {n} \
                 and sample {k} has {}",
                p.n
            ));
        }
    }
    Ok(n)
}

/// The weights (w_xx, w_yy, w_xy) of MMD²'s within- and between-sample kernel sums for
/// samples of n and m points (U statistic: the diagonal excluded from the within sums).
fn mmd_weights(n: usize, m: usize, unbiased: bool) -> (f64, f64, f64) {
    let (nf, mf) = (n as f64, m as f64);
    let (wxx, wyy) = if unbiased {
        (1.0 / (nf * (nf - 1.0)), 1.0 / (mf * (mf - 1.0)))
    } else {
        (1.0 / (nf * nf), 1.0 / (mf * mf))
    };
    (wxx, wyy, -1.0 / (nf * mf))
}

/// dHSIC's term 2, Π_k (Σ_ij K_k / n²), from the samples' kernel row sums (invariant
/// under permutation).
fn dhsic_t2(rsums: &[Vec<f64>], n: usize) -> f64 {
    let nf = n as f64;
    let mut t2 = 1.0;
    for s in rsums {
        let mut a = Acc::default();
        for &v in s {
            a.add(v);
        }
        t2 *= a.value() / (nf * nf);
    }
    t2
}

/// MMD² between z[..n] and z[n..] relabelled by π (pooled Gram K, diagonal included).
fn mmd_stat(k: &Mat<'_>, perm: &[u32], n: usize, unbiased: bool, stop: &AtomicBool) -> Result<f64> {
    let nn = k.n();
    let m = nn - n;
    let (wxx, wyy, wxy) = mmd_weights(n, m, unbiased);
    let mut scratch = if matches!(k, Mat::Lazy(_)) {
        vec![0.0; nn]
    } else {
        Vec::new()
    };
    let mut acc = Acc::default();
    for i in 0..nn {
        if i % 256 == 255 {
            threads::check(stop)?;
        }
        let r = k.row(perm[i] as usize, &mut scratch);
        let mut sx = 0.0;
        let mut sy = 0.0;
        for &pj in &perm[..n] {
            sx += r[pj as usize];
        }
        for &pj in &perm[n..] {
            sy += r[pj as usize];
        }
        if unbiased {
            // Remove the diagonal term k(z_πi, z_πi) from its own group.
            let d = r[perm[i] as usize];
            if i < n {
                sx -= d;
            } else {
                sy -= d;
            }
        }
        acc.add(if i < n {
            wxx * sx + wxy * sy
        } else {
            wxy * sx + wyy * sy
        });
    }
    Ok(acc.value())
}

/// MMD² permutation test of z[..n] against z[n..] with kernel `k`.
#[allow(clippy::too_many_arguments)]
pub fn mmd_test(
    z: Points<'_, f64>,
    n: usize,
    k: Kernel,
    unbiased: bool,
    n_resamples: usize,
    first: u64,
    seed: u64,
    store: bool,
    stop: &AtomicBool,
) -> Result<TestOutput> {
    let need = if unbiased { 2 } else { 1 };
    if n < need || z.n < n + need {
        return Err(invalid!(
            "mmd_test needs at least {need} observation(s) in each sample; got {} and {}",
            n,
            z.n.saturating_sub(n)
        ));
    }
    let rs = Resamples::new(n_resamples, first, seed, z.n, 1);
    if !store {
        k.check()?;
        return tiled::mmd_test(z, n, k, unbiased, rs, stop);
    }
    let src = KernelRows::new(z, k, Centre::Raw, stop)?;
    let km = Mat::new(&src, store, stop)?;
    rs.each(stop, |p| mmd_stat(&km, &p[0], n, unbiased, stop))
}

/// HSIC statistic and permutation null: biased (V, double-centred, /n²) or unbiased
/// (U-centred, /(n(n − 3)), Song et al. 2012). Resample r permutes y by stream r.
#[allow(clippy::too_many_arguments)]
pub fn hsic_test(
    x: Points<'_, f64>,
    y: Points<'_, f64>,
    kx: Kernel,
    ky: Kernel,
    unbiased: bool,
    n_resamples: usize,
    first: u64,
    seed: u64,
    store: bool,
    stop: &AtomicBool,
) -> Result<TestOutput> {
    let n = same_n(&[x, y])?;
    if n < 2 {
        return Err(invalid!("hsic needs at least 2 observations; got {n}"));
    }
    if unbiased && n < 4 {
        return Err(invalid!(
            "an unbiased (U-centred) statistic needs at least 4 observations; got {n}"
        ));
    }
    let rs = Resamples::new(n_resamples, first, seed, n, 1);
    if !store {
        kx.check()?;
        ky.check()?;
        return tiled::hsic_test(x, y, kx, ky, unbiased, rs, stop);
    }
    let centre = if unbiased { Centre::U } else { Centre::Double };
    let sx = KernelRows::new(x, kx, centre, stop)?;
    let sy = KernelRows::new(y, ky, centre, stop)?;
    let (a, b) = (Mat::new(&sx, store, stop)?, Mat::new(&sy, store, stop)?);
    let nf = n as f64;
    let den = if unbiased { nf * (nf - 3.0) } else { nf * nf };
    // y is permuted, x not.
    rs.each(stop, |mut p| {
        p.insert(0, identity(n));
        Ok(prod_gather(&[&a, &b], &p, stop)? / den)
    })
}

/// Moments for the gamma approximation of the biased HSIC null (Gretton et al. 2008):
/// (n·HSIC_b, Σ_{i≠j} (Kc_ij Lc_ij)², μ_x, μ_y) with Kc, Lc the double-centred Gram
/// matrices and μ the mean off-diagonal kernel value. O(n) memory, two passes.
pub fn hsic_gamma_moments(
    x: Points<'_, f64>,
    y: Points<'_, f64>,
    kx: Kernel,
    ky: Kernel,
    stop: &AtomicBool,
) -> Result<(f64, f64, f64, f64)> {
    let n = same_n(&[x, y])?;
    if n < 6 {
        return Err(invalid!(
            "the gamma approximation needs at least 6 observations; got {n}"
        ));
    }
    let sx = KernelRows::new(x, kx, Centre::Double, stop)?;
    let sy = KernelRows::new(y, ky, Centre::Double, stop)?;
    let parts: Vec<(f64, f64)> = threads::install(|| {
        (0..n)
            .into_par_iter()
            .map(|i| -> Result<(f64, f64)> {
                if i % 64 == 0 {
                    threads::check(stop)?;
                }
                let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
                sx.fill(i, &mut a);
                sy.fill(i, &mut b);
                let dot = row_dot(&a, &b);
                let mut sq = 0.0;
                for j in 0..n {
                    if j != i {
                        let v = a[j] * b[j];
                        sq += v * v;
                    }
                }
                Ok((dot, sq))
            })
            .collect::<Result<Vec<_>>>()
    })??;
    let (mut dot, mut sq) = (Acc::default(), Acc::default());
    for (d, s) in parts {
        dot.add(d);
        sq.add(s);
    }
    let nf = n as f64;
    // Off-diagonal means: the row sums include the diagonal k(0).
    let mu = |k: &KernelRows<'_>, kern: Kernel| -> f64 {
        (k.total - nf * kern.eval(0.0)) / (nf * (nf - 1.0))
    };
    Ok((dot.value() / nf, sq.value(), mu(&sx, kx), mu(&sy, ky)))
}

/// dHSIC (Pfister et al. 2018, the V statistic) of d ≥ 2 samples and its permutation null:
/// resample r permutes sample k ≥ 1 by stream r·(d − 1) + (k − 1).
#[allow(clippy::too_many_arguments)]
pub fn dhsic_test(
    xs: &[Points<'_, f64>],
    ks: &[Kernel],
    n_resamples: usize,
    first: u64,
    seed: u64,
    store: bool,
    stop: &AtomicBool,
) -> Result<TestOutput> {
    let d = xs.len();
    if d < 2 || ks.len() != d {
        return Err(invalid!(
            "dhsic needs at least two samples and one kernel per sample"
        ));
    }
    let n = same_n(xs)?;
    if n < 2 {
        return Err(invalid!("dhsic needs at least 2 observations; got {n}"));
    }
    // Samples 1.. are permuted, sample 0 not.
    let rs = Resamples::new(n_resamples, first, seed, n, (d - 1) as u64);
    if !store {
        for k in ks {
            k.check()?;
        }
        return tiled::dhsic_test(xs, ks, rs, stop);
    }
    // Row sums through the Double centring's pass; the rows themselves are raw.
    let mut srcs = Vec::with_capacity(d);
    let mut rsums = Vec::with_capacity(d);
    for (p, k) in xs.iter().zip(ks) {
        let c = KernelRows::new(*p, *k, Centre::Double, stop)?;
        rsums.push(c.sums().to_vec());
        srcs.push(KernelRows {
            centre: Centre::Raw,
            ..c
        });
    }
    let mats: Vec<Mat<'_>> = srcs
        .iter()
        .map(|s| Mat::new(s, store, stop))
        .collect::<Result<_>>()?;
    let refs: Vec<&Mat<'_>> = mats.iter().collect();
    let nf = n as f64;
    let t2 = dhsic_t2(&rsums, n);
    let stat = |perms: &[Vec<u32>]| -> Result<f64> {
        let t1 = prod_gather(&refs, perms, stop)? / (nf * nf);
        let mut t3 = Acc::default();
        for i in 0..n {
            let mut p = 1.0;
            for (s, pk) in rsums.iter().zip(perms) {
                p *= s[pk[i] as usize] / nf;
            }
            t3.add(p);
        }
        Ok(t1 + t2 - 2.0 * t3.value() / nf)
    };
    rs.each(stop, |mut p| {
        p.insert(0, identity(n));
        stat(&p)
    })
}

/// Partial distance correlation test (energy's pdcor.test): the U-centred distance
/// matrices of x and y projected off that of z, P and Q; the statistic is
/// ⟨P, Q⟩ / (|P| |Q|) (0 when a norm is 0), and resample r permutes the rows and columns
/// of P by stream r.
#[allow(clippy::too_many_arguments)]
pub fn pdcor_test(
    x: Points<'_, f64>,
    y: Points<'_, f64>,
    z: Points<'_, f64>,
    alpha: f64,
    n_resamples: usize,
    first: u64,
    seed: u64,
    store: bool,
    stop: &AtomicBool,
) -> Result<TestOutput> {
    let n = same_n(&[x, y, z])?;
    if n < 4 {
        return Err(invalid!(
            "partial_dcor_test needs at least 4 observations; got {n}"
        ));
    }
    let k = Kernel::Distance(alpha);
    let rs = Resamples::new(n_resamples, first, seed, n, 1);
    if !store {
        k.check()?;
        return tiled::pdcor_test(x, y, z, alpha, rs, stop);
    }
    let (ax, ay, az) = (
        KernelRows::new(x, k, Centre::U, stop)?,
        KernelRows::new(y, k, Centre::U, stop)?,
        KernelRows::new(z, k, Centre::U, stop)?,
    );
    let cc = inner(&az, &az, stop)?;
    let beta = |a: &dyn RowSource| -> Result<f64> {
        Ok(if cc > 0.0 {
            inner(a, &az, stop)? / cc
        } else {
            0.0
        })
    };
    let px = Projected {
        a: &ax,
        c: &az,
        beta: beta(&ax)?,
    };
    let py = Projected {
        a: &ay,
        c: &az,
        beta: beta(&ay)?,
    };
    let (pp, qq) = (inner(&px, &px, stop)?, inner(&py, &py, stop)?);
    let (a, b) = (Mat::new(&px, store, stop)?, Mat::new(&py, store, stop)?);
    let den = (pp.max(0.0) * qq.max(0.0)).sqrt();
    let scaled = |v: f64| {
        if den > 0.0 {
            (v / den).clamp(-1.0, 1.0)
        } else {
            0.0
        }
    };
    // P is permuted, Q not.
    rs.each(stop, |mut p| {
        p.push(identity(n));
        Ok(scaled(prod_gather(&[&a, &b], &p, stop)?))
    })
}

// ---------------------------------------------------------------------------------------
// Exact median of pairwise distances in O(n) memory.

/// Counts of squared distances over pairs i < j: (#{v ≤ lo}, #{lo < v ≤ hi}).
fn count_pairs(p: Points<'_, f64>, lo: f64, hi: f64, stop: &AtomicBool) -> Result<(u64, u64)> {
    let n = p.n;
    let parts: Vec<(u64, u64)> = threads::install(|| {
        (0..n)
            .into_par_iter()
            .map(|i| -> Result<(u64, u64)> {
                if i % 64 == 0 {
                    threads::check(stop)?;
                }
                let (mut a, mut b) = (0u64, 0u64);
                for j in i + 1..n {
                    let v = sqd(p.row(i), p.row(j));
                    if v <= lo {
                        a += 1;
                    } else if v <= hi {
                        b += 1;
                    }
                }
                Ok((a, b))
            })
            .collect::<Result<Vec<_>>>()
    })??;
    Ok(parts.iter().fold((0, 0), |(a, b), &(x, y)| (a + x, b + y)))
}

/// All squared distances v with lo < v ≤ hi (at most `cap` expected).
fn collect_pairs(p: Points<'_, f64>, lo: f64, hi: f64, stop: &AtomicBool) -> Result<Vec<f64>> {
    let n = p.n;
    let parts: Vec<Vec<f64>> = threads::install(|| {
        (0..n)
            .into_par_iter()
            .map(|i| -> Result<Vec<f64>> {
                if i % 64 == 0 {
                    threads::check(stop)?;
                }
                Ok((i + 1..n)
                    .map(|j| sqd(p.row(i), p.row(j)))
                    .filter(|&v| v > lo && v <= hi)
                    .collect())
            })
            .collect::<Result<Vec<_>>>()
    })??;
    Ok(parts.concat())
}

/// The k-th smallest (0-based) of the n(n − 1)/2 squared distances, by bisection on the
/// bit pattern of the value with counting passes, starting from a bracket read off a
/// fixed sample of pairs; the candidates are collected once at most `cap` remain.
fn kth_sq_distance(p: Points<'_, f64>, k: u64, stop: &AtomicBool) -> Result<f64> {
    let n = p.n;
    let total = (n as u64) * (n as u64 - 1) / 2;
    let cap = (4 * n as u64).max(1 << 16);
    // Bracket (lo, hi] holding rank k: below = #{v ≤ lo} ≤ k < below + inside.
    let (mut lo, mut hi, mut below, mut inside) = (-1.0f64, f64::INFINITY, 0u64, total);
    if total > cap {
        // A deterministic sample of pairs proposes a tight bracket; counting checks it.
        let s = 4096usize;
        let mut g = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            g ^= g << 13;
            g ^= g >> 7;
            g ^= g << 17;
            g
        };
        let mut v: Vec<f64> = (0..s)
            .map(|_| {
                let i = (next() % n as u64) as usize;
                let mut j = (next() % (n as u64 - 1)) as usize;
                if j >= i {
                    j += 1;
                }
                sqd(p.row(i), p.row(j))
            })
            .collect();
        v.sort_by(f64::total_cmp);
        let q = k as f64 / total as f64 * s as f64;
        let w = 4.0 * (s as f64).sqrt();
        let (il, ih) = ((q - w).floor(), (q + w).ceil());
        let cand_lo = if il >= 0.0 { v[il as usize] } else { -1.0 };
        let cand_hi = if (ih as usize) < s {
            v[ih as usize]
        } else {
            f64::INFINITY
        };
        let (a, b) = count_pairs(p, cand_lo, cand_hi, stop)?;
        if a <= k && k < a + b {
            (lo, hi, below, inside) = (cand_lo, cand_hi, a, b);
        } else if a > k {
            (hi, inside) = (cand_lo, a);
        } else {
            (lo, below, inside) = (cand_hi, a + b, total - a - b);
        }
    }
    loop {
        if inside <= cap {
            let mut v = collect_pairs(p, lo, hi, stop)?;
            let r = (k - below) as usize;
            if r >= v.len() {
                return Err(invalid!(
                    "the pairwise distances changed while being read (inputs modified \
                     during the call)"
                ));
            }
            let (_, x, _) = v.select_nth_unstable_by(r, f64::total_cmp);
            return Ok(*x);
        }
        // Midpoint in the ordered bit patterns of non-negative floats.
        let lb = if lo < 0.0 { 0u64 } else { lo.to_bits() };
        let hb = if hi.is_finite() {
            hi.to_bits()
        } else {
            f64::MAX.to_bits()
        };
        if hb <= lb + 1 {
            // Every value in the bracket is hi.
            return Ok(hi);
        }
        let mid = f64::from_bits(lb + (hb - lb) / 2);
        let (_, b) = count_pairs(p, lo, mid, stop)?;
        if below + b <= k {
            (lo, below, inside) = (mid, below + b, inside - b);
        } else {
            (hi, inside) = (mid, b);
        }
    }
}

/// Median of the pairwise Euclidean distances ‖x_i − x_j‖ over i < j (the mean of the
/// two middle values when their number is even, as NumPy's median); when that median is
/// 0 (more than half the pairs coincide), the median of the non-zero distances; 0 when
/// every distance is 0. Exact, O(n) memory (besides the samples), a few counting passes
/// of O(n² d) each.
pub fn median_distance(p: Points<'_, f64>, stop: &AtomicBool) -> Result<f64> {
    let n = p.n;
    if n < 2 {
        return Err(invalid!(
            "the median heuristic needs at least 2 observations; got {n}"
        ));
    }
    for v in p.data.iter() {
        if !v.is_finite() {
            return Err(invalid!("the samples must be finite"));
        }
    }
    let total = (n as u64) * (n as u64 - 1) / 2;
    let (zeros, _) = count_pairs(p, 0.0, 0.0, stop)?;
    let (mut k1, mut k2) = ((total - 1) / 2, total / 2);
    if zeros > k2 {
        if zeros == total {
            return Ok(0.0);
        }
        let m = total - zeros;
        k1 = zeros + (m - 1) / 2;
        k2 = zeros + m / 2;
    }
    let a = kth_sq_distance(p, k1, stop)?.sqrt();
    if k2 == k1 {
        return Ok(a);
    }
    let b = kth_sq_distance(p, k2, stop)?.sqrt();
    Ok(0.5 * (a + b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::sym_vec;

    fn pts(v: &[f64], d: usize) -> Points<'_, f64> {
        Points::new(v, v.len() / d, d).unwrap()
    }

    fn brute_median(v: &[f64], d: usize) -> f64 {
        let n = v.len() / d;
        let mut all = vec![];
        for i in 0..n {
            for j in i + 1..n {
                all.push(sqd(&v[i * d..(i + 1) * d], &v[j * d..(j + 1) * d]).sqrt());
            }
        }
        let nz: Vec<f64> = all.iter().copied().filter(|&x| x > 0.0).collect();
        all.sort_by(f64::total_cmp);
        let med = |a: &[f64]| {
            let m = a.len();
            if m % 2 == 1 {
                a[m / 2]
            } else {
                0.5 * (a[m / 2 - 1] + a[m / 2])
            }
        };
        let m = med(&all);
        if m > 0.0 {
            m
        } else {
            let mut nz = nz;
            nz.sort_by(f64::total_cmp);
            med(&nz)
        }
    }

    #[test]
    fn median_is_exact_small_and_large() {
        let stop = AtomicBool::new(false);
        for (n, d) in [(2, 1), (3, 2), (7, 3), (60, 2), (500, 2)] {
            let v = sym_vec(n as u64, n * d);
            let got = median_distance(pts(&v, d), &stop).unwrap();
            assert_eq!(got, brute_median(&v, d), "n={n} d={d}");
        }
        // Ties and a zero median: integer data with many repeats.
        let v: Vec<f64> = (0..600)
            .map(|i| if i % 5 == 0 { (i % 3) as f64 } else { 0.0 })
            .collect();
        assert_eq!(
            median_distance(pts(&v, 1), &stop).unwrap(),
            brute_median(&v, 1)
        );
        let c = vec![3.0; 10];
        assert_eq!(median_distance(pts(&c, 1), &stop).unwrap(), 0.0);
    }

    fn close(a: &TestOutput, b: &TestOutput, tol: f64, what: &str) {
        // Relative to the spread of the values (the statistics cancel: a value near 0
        // carries the rounding of the terms it came from).
        let scale = b
            .null
            .iter()
            .chain([&b.statistic])
            .fold(0.0f64, |m, v| m.max(v.abs()));
        let ok = |x: f64, y: f64| (x - y).abs() <= tol * scale.max(1e-300);
        assert!(
            ok(a.statistic, b.statistic),
            "{what}: {} vs {}",
            a.statistic,
            b.statistic
        );
        assert_eq!(a.null.len(), b.null.len());
        for (r, (x, y)) in a.null.iter().zip(&b.null).enumerate() {
            assert!(ok(*x, *y), "{what} resample {r}: {x} vs {y}");
        }
    }

    /// The tiled path (store = false) against the stored matrices, resample by resample,
    /// with exact differences (d ≤ 16) and the packed distance kernel (d = 20); resample
    /// ranges concatenate bit for bit on both paths. (The SIMD level is process-wide, so
    /// the other levels are covered by the Python suite under `DIVEST_SIMD`.)
    #[test]
    fn stored_and_tiled_paths_agree_and_splits_concatenate() {
        let stop = AtomicBool::new(false);
        let n = 150;
        for dx in [2, 20] {
            let x: Vec<f64> = sym_vec(1, n * dx).iter().map(|v| v + 2.0).collect();
            let y: Vec<f64> = sym_vec(2, n)
                .iter()
                .enumerate()
                .map(|(i, a)| a + x[i * dx] * x[i * dx])
                .collect();
            let (px, py) = (pts(&x, dx), pts(&y, 1));
            let s = (dx as f64).sqrt();
            for (kx, ky) in [
                (Kernel::Gaussian(0.7 * s), Kernel::Gaussian(1.1)),
                (Kernel::Laplacian(0.9 * s), Kernel::Laplacian(0.6)),
            ] {
                for unbiased in [false, true] {
                    let a = hsic_test(px, py, kx, ky, unbiased, 30, 0, 9, true, &stop).unwrap();
                    let b = hsic_test(px, py, kx, ky, unbiased, 30, 0, 9, false, &stop).unwrap();
                    close(&b, &a, 1e-12, "hsic");
                    let c = hsic_test(px, py, kx, ky, unbiased, 10, 20, 9, false, &stop).unwrap();
                    assert_eq!(&b.null[20..], &c.null[..]);
                    let c = hsic_test(px, py, kx, ky, unbiased, 10, 20, 9, true, &stop).unwrap();
                    assert_eq!(&a.null[20..], &c.null[..]);
                }
                let z = sym_vec(3, 2 * n * dx);
                let pz = pts(&z, dx);
                for unbiased in [false, true] {
                    let a = mmd_test(pz, 130, kx, unbiased, 70, 0, 4, true, &stop).unwrap();
                    let b = mmd_test(pz, 130, kx, unbiased, 70, 0, 4, false, &stop).unwrap();
                    close(&b, &a, 1e-12, "mmd");
                    let c = mmd_test(pz, 130, kx, unbiased, 4, 66, 4, false, &stop).unwrap();
                    assert_eq!(&b.null[66..], &c.null[..]);
                }
                let ks = [kx, ky, kx];
                let a = dhsic_test(&[px, py, px], &ks, 20, 0, 4, true, &stop).unwrap();
                let b = dhsic_test(&[px, py, px], &ks, 20, 0, 4, false, &stop).unwrap();
                close(&b, &a, 1e-12, "dhsic");
                let c = dhsic_test(&[px, py, px], &ks, 7, 13, 4, false, &stop).unwrap();
                assert_eq!(&b.null[13..], &c.null[..]);
            }
            let pz = pts(&x[..n * dx], dx);
            for alpha in [1.0, 0.5] {
                let a = pdcor_test(px, py, pz, alpha, 20, 0, 4, true, &stop).unwrap();
                let b = pdcor_test(px, py, pz, alpha, 20, 0, 4, false, &stop).unwrap();
                close(&b, &a, 1e-12, "pdcor (z = x)");
                let z = sym_vec(8, n * 3);
                let pz = pts(&z, 3);
                let a = pdcor_test(px, py, pz, alpha, 20, 0, 4, true, &stop).unwrap();
                let b = pdcor_test(px, py, pz, alpha, 20, 0, 4, false, &stop).unwrap();
                close(&b, &a, 1e-12, "pdcor");
                let c = pdcor_test(px, py, pz, alpha, 6, 14, 4, false, &stop).unwrap();
                assert_eq!(&b.null[14..], &c.null[..]);
            }
        }
    }

    #[test]
    fn tiled_path_is_independent_of_the_thread_count_and_stops() {
        let stop = AtomicBool::new(false);
        let n = 300;
        let x = sym_vec(11, n * 3);
        let y = sym_vec(12, n);
        let (px, py) = (pts(&x, 3), pts(&y, 1));
        let k = Kernel::Gaussian(0.8);
        let run = || {
            (
                hsic_test(px, py, k, k, false, 9, 0, 2, false, &stop).unwrap(),
                mmd_test(px, 140, k, true, 9, 0, 2, false, &stop).unwrap(),
            )
        };
        let (a, b) = run();
        threads::set_num_threads(1).unwrap();
        let (c, d) = run();
        threads::set_num_threads(2).unwrap();
        assert_eq!((a.statistic, &a.null), (c.statistic, &c.null));
        assert_eq!((b.statistic, &b.null), (d.statistic, &d.null));
        let stopped = AtomicBool::new(true);
        assert!(matches!(
            hsic_test(px, py, k, k, false, 9, 0, 2, false, &stopped),
            Err(crate::core::Error::Cancelled)
        ));
        assert!(matches!(
            mmd_test(px, 140, k, false, 9, 0, 2, false, &stopped),
            Err(crate::core::Error::Cancelled)
        ));
    }

    #[test]
    fn permuted_statistics_equal_statistics_of_permuted_data() {
        let stop = AtomicBool::new(false);
        let n = 30;
        let x = sym_vec(5, n);
        let y = sym_vec(6, n);
        let k = Kernel::Laplacian(1.3);
        let t = hsic_test(pts(&x, 1), pts(&y, 1), k, k, false, 5, 0, 11, true, &stop).unwrap();
        let p = permutation(n, 11, 3);
        let yp: Vec<f64> = p.iter().map(|&i| y[i as usize]).collect();
        let u = hsic_test(pts(&x, 1), pts(&yp, 1), k, k, false, 1, 0, 11, true, &stop).unwrap();
        assert!((t.null[3] - u.statistic).abs() < 1e-14);
        // dHSIC of two samples is the biased HSIC.
        let dh = dhsic_test(&[pts(&x, 1), pts(&y, 1)], &[k, k], 5, 0, 11, true, &stop).unwrap();
        assert!((dh.statistic - t.statistic).abs() < 1e-14);
        for (a, b) in dh.null.iter().zip(&t.null) {
            assert!((a - b).abs() < 1e-14);
        }
    }

    #[test]
    fn bad_input_and_stop_flag() {
        let stop = AtomicBool::new(false);
        let x = sym_vec(1, 10);
        let k = Kernel::Gaussian(1.0);
        assert!(mmd_test(pts(&x, 1), 1, k, true, 5, 0, 1, true, &stop).is_err());
        assert!(hsic_test(
            pts(&x[..3], 1),
            pts(&x[..3], 1),
            k,
            k,
            true,
            5,
            0,
            1,
            true,
            &stop
        )
        .is_err());
        assert!(hsic_test(
            pts(&x, 1),
            pts(&x, 1),
            Kernel::Gaussian(0.0),
            k,
            false,
            5,
            0,
            1,
            true,
            &stop
        )
        .is_err());
        assert!(pdcor_test(
            pts(&x[..3], 1),
            pts(&x[..3], 1),
            pts(&x[..3], 1),
            1.0,
            5,
            0,
            1,
            true,
            &stop
        )
        .is_err());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(matches!(
            hsic_test(pts(&x, 1), pts(&x, 1), k, k, false, 5, 0, 1, true, &stop),
            Err(crate::core::Error::Cancelled)
        ));
    }
}
