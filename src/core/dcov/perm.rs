//! Permutation tests: independence (distance covariance) and k-sample homogeneity
//! (energy statistic).
//!
//! Permutation r is drawn by Fisher–Yates from its own SplitMix64 stream, seeded by
//! (seed, r), so the null distribution depends on the seed only, never on the thread
//! count or on which thread ran which permutation. Small independence tests store both
//! double-centred distance matrices (n² f64 each, up to [`STORE_MAX`] observations) and
//! evaluate groups of permutations per task, gathering B_{π(i)π(j)} from row π(i) of B
//! (each row of A is read once per group); small energy tests store the pooled distance
//! matrix. Larger problems recompute every distance per permutation through the pairwise
//! engine in O(n) memory.

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use super::sums::Acc;
use super::{centred, centred_products, offsets, row_sums, PowMap, SqrtMap};
use crate::core::error::{checked_size, invalid, try_vec, Result};
use crate::core::pairwise::reduce::{KernelRows, PairMap, RowStats};
use crate::core::pairwise::{reduce_rows_with, Float, Points};
use crate::core::simd::{self, simd_fn, Fma};
use crate::core::threads;

/// Largest number of observations for which distance matrices are stored.
pub const STORE_MAX: usize = 2048;

/// SplitMix64: a tiny counter-friendly generator (one stream per permutation).
struct SplitMix(u64);
impl SplitMix {
    fn new(seed: u64, stream: u64) -> SplitMix {
        let mut s = SplitMix(seed ^ stream.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        s.next();
        s
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform integer in 0..=k (multiply-shift; bias below k / 2^64).
    fn below_incl(&mut self, k: usize) -> usize {
        ((self.next() as u128 * (k as u128 + 1)) >> 64) as usize
    }
}

/// Permutation `r` of 0..n for `seed`.
pub fn permutation(n: usize, seed: u64, r: u64) -> Vec<u32> {
    let mut p: Vec<u32> = (0..n as u32).collect();
    let mut g = SplitMix::new(seed, r);
    for i in (1..n).rev() {
        let j = g.below_incl(i);
        p.swap(i, j);
    }
    p
}

fn dist<F: PairMap>(f: &F, a: &[f64], b: &[f64]) -> f64 {
    let s: f64 = a.iter().zip(b).map(|(u, v)| (u - v) * (u - v)).sum();
    f.value(s)
}

/// Full double-centred (V) distance matrix, row-major n×n.
fn centred_matrix<F: PairMap>(f: &F, p: Points<'_, f64>) -> Result<Vec<f64>> {
    let n = p.n;
    let mut m = vec![0.0; n * n];
    threads::install(|| {
        m.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
            for (j, v) in row.iter_mut().enumerate() {
                *v = if i == j {
                    0.0
                } else {
                    dist(f, p.row(i), p.row(j))
                };
            }
        })
    })?;
    let rows: Vec<f64> = m.chunks(n).map(|r| r.iter().sum()).collect();
    let c = offsets(&rows, false);
    threads::install(|| {
        m.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (*v - c[i]) - c[j];
            }
        })
    })?;
    Ok(m)
}

/// Permutations evaluated together per task: each row of A is read once for all of them.
const GROUP: usize = 8;

/// Σ_ij A_ij B_{π(i)π(j)} for a group of permutations, both matrices stored: the permuted
/// y distances are gathered from row π(i) of B instead of recomputed.
#[inline(always)]
// `M` only selects the SIMD path the body is compiled for (its loads vectorise there).
#[allow(clippy::extra_unused_type_parameters)]
fn perm_gather_body<M: Fma>(a: &[f64], b: &[f64], perms: &[Vec<u32>], n: usize) -> Vec<f64> {
    let mut acc = vec![Acc::default(); perms.len()];
    for i in 0..n {
        let arow = &a[i * n + i + 1..(i + 1) * n];
        for (p, accg) in perms.iter().zip(acc.iter_mut()) {
            let pi = p[i] as usize;
            let brow = &b[pi * n..(pi + 1) * n];
            let tail = &p[i + 1..];
            let mut s = [0.0f64; 8];
            let (ac, pc) = (arow.chunks_exact(8), tail.chunks_exact(8));
            let mut t = 0.0;
            for (&x, &j) in ac.remainder().iter().zip(pc.remainder()) {
                t += x * brow[j as usize];
            }
            for (xa, jp) in ac.zip(pc) {
                for l in 0..8 {
                    s[l] += xa[l] * brow[jp[l] as usize];
                }
            }
            accg.add(2.0 * (crate::core::simd::finish_lanes(&s) + t));
            accg.add(a[i * n + i] * brow[pi]);
        }
    }
    acc.iter().map(|s| s.value()).collect()
}

simd_fn!(
    fn perm_gather => perm_gather_body(a: &[f64], b: &[f64], perms: &[Vec<u32>], n: usize) -> Vec<f64>
);

/// Result of a permutation test: the observed statistic and its permutation values.
#[derive(Clone, Debug)]
pub struct PermOutput {
    /// Observed statistic.
    pub statistic: f64,
    /// One statistic per permutation, in permutation order.
    pub null: Vec<f64>,
}

/// Stored-matrix permutation statistics (n·V for the identity, then each permutation).
fn stored_test<F: PairMap>(
    f: &F,
    px: Points<'_, f64>,
    py: Points<'_, f64>,
    n_resamples: usize,
    seed: u64,
    first: u64,
    stop: &AtomicBool,
) -> Result<PermOutput> {
    let n = px.n;
    let nf = n as f64;
    let a = centred_matrix(f, px)?;
    let b = centred_matrix(f, py)?;
    let level = simd::level();
    let id: Vec<u32> = (0..n as u32).collect();
    let statistic = perm_gather(level, &a, &b, &[id], n)[0] / nf;
    // Written in place: no per-group vectors to collect, and one fallible allocation.
    let mut null = try_vec(n_resamples, 0.0f64, "n_resamples")?;
    threads::install(|| {
        null.par_chunks_mut(GROUP)
            .enumerate()
            .try_for_each(|(g, out)| -> Result<()> {
                threads::check(stop)?;
                let r0 = first + (g * GROUP) as u64;
                let perms: Vec<Vec<u32>> = (0..out.len() as u64)
                    .map(|r| permutation(n, seed, r0 + r))
                    .collect();
                for (o, v) in out.iter_mut().zip(perm_gather(level, &a, &b, &perms, n)) {
                    *o = v / nf;
                }
                Ok(())
            })
    })??;
    Ok(PermOutput { statistic, null })
}

/// Distance covariance permutation test; the statistic is n·dCov²_V(x, y).
pub fn dcov_test<T: Float>(
    x: Points<'_, T>,
    y: Points<'_, T>,
    alpha: f64,
    n_resamples: usize,
    seed: u64,
    stop: &AtomicBool,
) -> Result<PermOutput> {
    dcov_test_from(x, y, alpha, 0, n_resamples, seed, stop)
}

/// [`dcov_test`] for the resamples `first..first + n_resamples` only: resample r draws
/// `permutation(n, seed, r)` whatever `first` is, so splitting 0..R into ranges (one per
/// task or machine) gives exactly the null distribution of one call, bit for bit.
pub fn dcov_test_from<T: Float>(
    x: Points<'_, T>,
    y: Points<'_, T>,
    alpha: f64,
    first: u64,
    n_resamples: usize,
    seed: u64,
    stop: &AtomicBool,
) -> Result<PermOutput> {
    super::check_exponent(alpha)?;
    if x.n != y.n {
        return Err(invalid!(
            "x and y must have the same number of observations; got {} and {}",
            x.n,
            y.n
        ));
    }
    let n = x.n;
    if n < 2 {
        return Err(invalid!(
            "a permutation test needs at least 2 observations; got {n}"
        ));
    }
    let xc = centred(x)?;
    let yc = centred(y)?;
    let px = Points::new(&xc, n, x.d)?;
    let py = Points::new(&yc, n, y.d)?;
    let nf = n as f64;
    if n <= STORE_MAX {
        return if alpha == 1.0 {
            stored_test(&SqrtMap, px, py, n_resamples, seed, first, stop)
        } else {
            stored_test(
                &PowMap { half: 0.5 * alpha },
                px,
                py,
                n_resamples,
                seed,
                first,
                stop,
            )
        };
    }
    let oy = offsets(&row_sums(py, alpha, stop)?, false);
    let ox = offsets(&row_sums(px, alpha, stop)?, false);
    let stat = |yp: &[f64], op: &[f64]| -> Result<f64> {
        let pyp = Points::new(yp, n, y.d)?;
        Ok(centred_products(&[px, pyp], &[&ox, op], alpha, false, vec![(0, 1)], stop)?[0] / nf)
    };
    let statistic = stat(&yc, &oy)?;
    let mut null = try_vec(n_resamples, 0.0f64, "n_resamples")?;
    null.clear();
    let mut yp = vec![0.0; yc.len()];
    let mut op = vec![0.0; n];
    let q = y.d;
    for r in first..first + n_resamples as u64 {
        threads::check(stop)?;
        let p = permutation(n, seed, r);
        for (i, &pi) in p.iter().enumerate() {
            let pi = pi as usize;
            yp[i * q..(i + 1) * q].copy_from_slice(&yc[pi * q..(pi + 1) * q]);
            op[i] = oy[pi];
        }
        null.push(stat(&yp, &op)?);
    }
    Ok(PermOutput { statistic, null })
}

/// k-sample energy statistic Σ_{g<h} n_g n_h/(n_g + n_h) · E(X_g, X_h) (V statistics)
/// from the group-pair sums S_gh = Σ_{i∈g, j∈h} |z_i − z_j|^α.
fn energy_stat(s: &[f64], sizes: &[usize]) -> f64 {
    let k = sizes.len();
    let mut acc = Acc::default();
    for g in 0..k {
        for h in g + 1..k {
            let (ng, nh) = (sizes[g] as f64, sizes[h] as f64);
            let e = 2.0 * s[g * k + h] / (ng * nh)
                - s[g * k + g] / (ng * ng)
                - s[h * k + h] / (nh * nh);
            acc.add(ng * nh / (ng + nh) * e);
        }
    }
    acc.value()
}

/// Group-pair sums from a stored distance matrix and a labelling (one-hot weights).
fn group_sums_stored(dm: &[f64], n: usize, labels: &[u32], k: usize) -> Result<Vec<f64>> {
    let kn = checked_size(k, n, "the number of samples")?;
    let mut onehot = try_vec(kn, 0.0f64, "the number of samples")?;
    for (j, &l) in labels.iter().enumerate() {
        onehot[l as usize * n + j] = 1.0;
    }
    let kk = checked_size(k, k, "the number of samples")?;
    let mut s = try_vec(kk, Acc::default(), "the number of samples")?;
    for i in 0..n {
        let g = labels[i] as usize;
        let row = &dm[i * n + i + 1..(i + 1) * n];
        for h in 0..k {
            let w = &onehot[h * n + i + 1..(h + 1) * n];
            let v: f64 = super::dot(row, w);
            s[g * k + h].add(v);
            s[h * k + g].add(v);
        }
    }
    Ok(s.iter().map(|a| a.value()).collect())
}

/// Group-pair sums recomputed through the engine (k passes of weighted row sums).
fn group_sums_engine<F: PairMap + Copy>(
    f: F,
    z: Points<'_, f64>,
    labels: &[u32],
    k: usize,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    let n = z.n;
    let kk = checked_size(k, k, "the number of samples")?;
    let mut s = try_vec(kk, Acc::default(), "the number of samples")?;
    for h in 0..k {
        threads::check(stop)?;
        let w: Vec<f64> = labels
            .iter()
            .map(|&l| if l as usize == h { 1.0 } else { 0.0 })
            .collect();
        let red = KernelRows {
            f,
            scales: &[1.0],
            w: &w,
            exclude_self: true,
            sumsq: false,
            mean: None,
            d: z.d,
        };
        let st = reduce_rows_with(z, z, &red, stop, Some(z.d <= super::DIRECT_MAX_D))?;
        let rows = RowStats::from_states(1, st).sum;
        for i in 0..n {
            s[labels[i] as usize * k + h].add(rows[i]);
        }
    }
    Ok(s.iter().map(|a| a.value()).collect())
}

/// k-sample energy permutation test on pooled points `z` (rows grouped by `sizes`).
pub fn energy_test<T: Float>(
    z: Points<'_, T>,
    sizes: &[usize],
    alpha: f64,
    n_resamples: usize,
    seed: u64,
    stop: &AtomicBool,
) -> Result<PermOutput> {
    energy_test_from(z, sizes, alpha, 0, n_resamples, seed, stop)
}

/// [`energy_test`] for the resamples `first..first + n_resamples` only (the same streams
/// as one call over 0..R, so ranges split across tasks give the same null, bit for bit).
pub fn energy_test_from<T: Float>(
    z: Points<'_, T>,
    sizes: &[usize],
    alpha: f64,
    first: u64,
    n_resamples: usize,
    seed: u64,
    stop: &AtomicBool,
) -> Result<PermOutput> {
    super::check_exponent(alpha)?;
    let k = sizes.len();
    if k < 2 || sizes.contains(&0) {
        return Err(invalid!("energy_test needs at least two non-empty samples"));
    }
    let n: usize = sizes.iter().sum();
    if n != z.n {
        return Err(invalid!(
            "sample sizes add up to {n} but there are {} points",
            z.n
        ));
    }
    let mut base = Vec::with_capacity(n);
    for (g, &s) in sizes.iter().enumerate() {
        base.extend(std::iter::repeat_n(g as u32, s));
    }
    let zc = centred(z)?;
    let pz = Points::new(&zc, n, z.d)?;
    let relabel = |r: u64| -> Vec<u32> {
        let p = permutation(n, seed, r);
        p.iter().map(|&i| base[i as usize]).collect()
    };
    if n <= STORE_MAX {
        let mut dm = vec![0.0; n * n];
        let fill = |dm: &mut [f64], f: &(dyn Fn(&[f64], &[f64]) -> f64 + Sync)| {
            dm.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = if i == j { 0.0 } else { f(pz.row(i), pz.row(j)) };
                }
            })
        };
        threads::install(|| {
            if alpha == 1.0 {
                fill(&mut dm, &|a, b| dist(&SqrtMap, a, b))
            } else {
                let f = PowMap { half: 0.5 * alpha };
                fill(&mut dm, &|a, b| dist(&f, a, b))
            }
        })?;
        let statistic = energy_stat(&group_sums_stored(&dm, n, &base, k)?, sizes);
        let mut null = try_vec(n_resamples, 0.0f64, "n_resamples")?;
        threads::install(|| {
            null.par_iter_mut()
                .enumerate()
                .try_for_each(|(r, out)| -> Result<()> {
                    threads::check(stop)?;
                    *out = energy_stat(
                        &group_sums_stored(&dm, n, &relabel(first + r as u64), k)?,
                        sizes,
                    );
                    Ok(())
                })
        })??;
        return Ok(PermOutput { statistic, null });
    }
    let sums = |labels: &[u32]| -> Result<Vec<f64>> {
        if alpha == 1.0 {
            group_sums_engine(SqrtMap, pz, labels, k, stop)
        } else {
            group_sums_engine(PowMap { half: 0.5 * alpha }, pz, labels, k, stop)
        }
    };
    let statistic = energy_stat(&sums(&base)?, sizes);
    let mut null = try_vec(n_resamples, 0.0f64, "n_resamples")?;
    null.clear();
    for r in first..first + n_resamples as u64 {
        threads::check(stop)?;
        null.push(energy_stat(&sums(&relabel(r))?, sizes));
    }
    Ok(PermOutput { statistic, null })
}

#[cfg(test)]
mod tests {
    use super::super::{dcov_stats, energy_distance, Method};
    use super::*;
    use crate::core::testing::sym_vec;

    #[test]
    fn absurd_counts_fail_cleanly_and_the_stop_flag_is_polled() {
        use crate::core::error::Error;
        let stop = AtomicBool::new(false);
        let x = sym_vec(4, 40);
        let (px, py) = (
            Points::new(&x[..20], 20, 1).unwrap(),
            Points::new(&x[20..], 20, 1).unwrap(),
        );
        let pz = Points::new(&x, 40, 1).unwrap();
        let huge = usize::MAX / 16;
        let e = dcov_test(px, py, 1.0, huge, 1, &stop).unwrap_err();
        assert!(matches!(e, Error::OutOfMemory(ref m) if m.contains("n_resamples")));
        let e = energy_test(pz, &[20, 20], 1.0, huge, 1, &stop).unwrap_err();
        assert!(matches!(e, Error::OutOfMemory(ref m) if m.contains("n_resamples")));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(matches!(
            dcov_test(px, py, 1.0, 1000, 1, &stop),
            Err(Error::Cancelled)
        ));
        assert!(matches!(
            energy_test(pz, &[20, 20], 1.0, 1000, 1, &stop),
            Err(Error::Cancelled)
        ));
    }

    #[test]
    fn permutations_are_permutations_and_seeded() {
        let p = permutation(100, 7, 3);
        let mut s = p.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<u32>>());
        assert_eq!(p, permutation(100, 7, 3));
        assert_ne!(p, permutation(100, 7, 4));
    }

    #[test]
    fn observed_statistics_match_direct_formulas() {
        let stop = AtomicBool::new(false);
        let (n, p) = (60, 2);
        let x = sym_vec(1, n * p);
        let y: Vec<f64> = sym_vec(2, n)
            .iter()
            .enumerate()
            .map(|(i, v)| v + x[2 * i].powi(2))
            .collect();
        let px = Points::new(&x, n, p).unwrap();
        let py = Points::new(&y, n, 1).unwrap();
        let t = dcov_test(px, py, 1.0, 20, 5, &stop).unwrap();
        let v = dcov_stats(px, py, 1.0, false, Method::Pairwise, &stop).unwrap();
        assert!((t.statistic - n as f64 * v.cov).abs() < 1e-12 * t.statistic);
        assert_eq!(t.null.len(), 20);
        // The permuted statistics equal the direct statistic of permuted data.
        let perm = permutation(n, 5, 7);
        let yp: Vec<f64> = perm.iter().map(|&i| y[i as usize]).collect();
        let vp = dcov_stats(
            px,
            Points::new(&yp, n, 1).unwrap(),
            1.0,
            false,
            Method::Pairwise,
            &stop,
        )
        .unwrap();
        assert!((t.null[7] - n as f64 * vp.cov).abs() < 1e-12 * t.statistic);

        let (n1, n2) = (30, 25);
        let z: Vec<f64> = sym_vec(3, (n1 + n2) * p);
        let pz = Points::new(&z, n1 + n2, p).unwrap();
        let e = energy_test(pz, &[n1, n2], 1.0, 10, 1, &stop).unwrap();
        let ed = energy_distance(
            Points::new(&z[..n1 * p], n1, p).unwrap(),
            Points::new(&z[n1 * p..], n2, p).unwrap(),
            1.0,
            false,
            &stop,
        )
        .unwrap();
        let want = (n1 * n2) as f64 / (n1 + n2) as f64 * ed;
        assert!(
            (e.statistic - want).abs() < 1e-12 * want.abs(),
            "{} vs {want}",
            e.statistic
        );
        let engine = group_sums_engine(
            SqrtMap,
            pz,
            &vec![0; n1]
                .into_iter()
                .chain(vec![1; n2])
                .collect::<Vec<u32>>(),
            2,
            &stop,
        )
        .unwrap();
        assert!((energy_stat(&engine, &[n1, n2]) - want).abs() < 1e-12 * want.abs());
    }

    #[test]
    fn resample_ranges_concatenate_to_the_full_null_bitwise() {
        let stop = AtomicBool::new(false);
        // n = 30 takes the stored-matrix paths, n = 2050 the recomputing ones.
        for (n, r) in [(30usize, 21usize), (STORE_MAX + 2, 3)] {
            let x = sym_vec(7, 2 * n);
            let y = sym_vec(8, n);
            let (px, py) = (
                Points::new(&x, n, 2).unwrap(),
                Points::new(&y, n, 1).unwrap(),
            );
            let full = dcov_test(px, py, 1.0, r, 42, &stop).unwrap();
            let ef = energy_test(px, &[n / 2, n - n / 2], 0.5, r, 42, &stop).unwrap();
            let (mut got, mut eg) = (Vec::new(), Vec::new());
            for (a, b) in [(0, 1), (1, r / 2), (r / 2, r / 2), (r / 2, r)] {
                let part = dcov_test_from(px, py, 1.0, a as u64, b - a, 42, &stop).unwrap();
                assert_eq!(part.statistic.to_bits(), full.statistic.to_bits());
                got.extend(part.null);
                let sizes = [n / 2, n - n / 2];
                let e = energy_test_from(px, &sizes, 0.5, a as u64, b - a, 42, &stop).unwrap();
                assert_eq!(e.statistic.to_bits(), ef.statistic.to_bits());
                eg.extend(e.null);
            }
            let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&full.null));
            assert_eq!(bits(&eg), bits(&ef.null));
        }
    }
}
