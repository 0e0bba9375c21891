//! Kernel density estimation on whitened data.
//!
//! The Python layer whitens data and queries with the inverse Cholesky factor of the
//! bandwidth matrix, so here every kernel has unit bandwidth and depends on the Euclidean
//! distance r only. Kernels are the unnormalised radial profiles K(r) with K(0) = 1; the
//! caller adds the log normalising constant and the log-determinant of the bandwidth.
//! Gaussian and exponential kernels reduce in log space; the compactly supported ones are
//! plain weighted sums of bounded values with weights scaled so that the largest is 1.

use std::f64::consts::FRAC_PI_2;
use std::sync::atomic::AtomicBool;

use super::error::{invalid, Result};
use super::pairwise::maps::{ExponentialMap, GaussianMap};
use super::pairwise::reduce::{KernelRows, PairMap, RowStats};
use super::pairwise::{reduce_rows_with, Float, Points, ROW_BLOCK_GEMM};

/// The kernels, named as in scikit-learn's KernelDensity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// exp(-r²/2).
    Gaussian,
    /// 1 for r < 1.
    Tophat,
    /// 1 - r² for r < 1.
    Epanechnikov,
    /// exp(-r).
    Exponential,
    /// 1 - r for r < 1.
    Linear,
    /// cos(πr/2) for r < 1.
    Cosine,
}

impl Kernel {
    /// Parses a kernel name.
    pub fn parse(name: &str) -> Result<Kernel> {
        Ok(match name {
            "gaussian" => Kernel::Gaussian,
            "tophat" => Kernel::Tophat,
            "epanechnikov" => Kernel::Epanechnikov,
            "exponential" => Kernel::Exponential,
            "linear" => Kernel::Linear,
            "cosine" => Kernel::Cosine,
            other => {
                return Err(invalid!(
                    "kernel must be one of 'gaussian', 'tophat', 'epanechnikov', \
                     'exponential', 'linear', 'cosine'; got {other:?}"
                ))
            }
        })
    }
}

#[derive(Clone, Copy)]
struct TophatMap;
impl PairMap for TophatMap {
    const LOG: bool = false;
    #[inline(always)]
    fn value(&self, d2: f64) -> f64 {
        if d2 < 1.0 {
            1.0
        } else {
            0.0
        }
    }
    #[inline(always)]
    fn mean_factor(&self, _d2: f64) -> f64 {
        0.0
    }
}

#[derive(Clone, Copy)]
struct EpanechnikovMap;
impl PairMap for EpanechnikovMap {
    const LOG: bool = false;
    #[inline(always)]
    fn value(&self, d2: f64) -> f64 {
        if d2 < 1.0 {
            1.0 - d2
        } else {
            0.0
        }
    }
    #[inline(always)]
    fn mean_factor(&self, d2: f64) -> f64 {
        if d2 < 1.0 {
            2.0
        } else {
            0.0
        }
    }
}

#[derive(Clone, Copy)]
struct LinearMap;
impl PairMap for LinearMap {
    const LOG: bool = false;
    #[inline(always)]
    fn value(&self, d2: f64) -> f64 {
        let r = d2.sqrt();
        if r < 1.0 {
            1.0 - r
        } else {
            0.0
        }
    }
    #[inline(always)]
    fn mean_factor(&self, d2: f64) -> f64 {
        let r = d2.sqrt();
        if r < 1.0 && r > 0.0 {
            1.0 / r
        } else {
            0.0
        }
    }
}

#[derive(Clone, Copy)]
struct CosineMap;
impl PairMap for CosineMap {
    const LOG: bool = false;
    #[inline(always)]
    fn value(&self, d2: f64) -> f64 {
        let r = d2.sqrt();
        if r < 1.0 {
            (FRAC_PI_2 * r).cos()
        } else {
            0.0
        }
    }
    #[inline(always)]
    fn mean_factor(&self, d2: f64) -> f64 {
        let r = d2.sqrt();
        if r >= 1.0 {
            0.0
        } else if r > 1e-8 {
            FRAC_PI_2 * (FRAC_PI_2 * r).sin() / r
        } else {
            FRAC_PI_2 * FRAC_PI_2
        }
    }
}

/// What to compute besides the log-sums.
#[derive(Clone, Copy, Debug, Default)]
pub struct KdeOptions {
    /// Leave-one-out: queries are the data and the pair (i, i) is skipped.
    pub exclude_self: bool,
    /// Effective number of points, (Σ w K)² / Σ (w K)².
    pub ess: bool,
    /// Gradient of the log-density (in whitened coordinates).
    pub score: bool,
}

/// Per-query results of [`kde_eval`].
#[derive(Clone, Debug, Default)]
pub struct KdeOutput {
    /// log Σ_j w_j K(r_ij), -inf outside the support.
    pub log_sum: Vec<f64>,
    /// Effective number of points (empty unless asked); 0 outside the support.
    pub ess: Vec<f64>,
    /// ∇_q log Σ_j w_j K(|q - x_j|), row-major m×d (empty unless asked); NaN outside the support.
    pub score: Vec<f64>,
}

/// Weights as the reducer wants them: log-weights for log kernels, else weights scaled
/// to a maximum of 1, with the log of the scale.
fn weights_for(log_mode: bool, logw: &[f64]) -> (Vec<f64>, f64) {
    if log_mode {
        (logw.to_vec(), 0.0)
    } else {
        let m = logw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        (logw.iter().map(|&l| (l - m).exp()).collect(), m)
    }
}

fn check_logw(logw: &[f64], n: usize) -> Result<()> {
    if logw.len() != n {
        return Err(invalid!(
            "log-weights have length {} but there are {n} data points",
            logw.len()
        ));
    }
    if logw.iter().any(|x| x.is_nan() || *x == f64::INFINITY) {
        return Err(invalid!("log-weights must be finite or -inf"));
    }
    if n > 0 && logw.iter().all(|x| *x == f64::NEG_INFINITY) {
        return Err(invalid!("weights must not all be zero"));
    }
    Ok(())
}

/// Queries per pass when scores are asked: the mean accumulators take about 2 KiB per
/// row of a pass, so scoring in passes keeps the extra memory bounded (about 13 MiB)
/// whatever the number of queries. A multiple of both row-block sizes, so the blocks (and
/// the results, bit for bit) are those of a single pass.
const SCORE_PASS_ROWS: usize = 32 * ROW_BLOCK_GEMM;

/// Coordinates beyond this magnitude take the direct distance path: the GEMM path forms
/// |q|² + |x|² − 2 q·x, which cancels catastrophically (or overflows to NaN) there.
const DIRECT_ABOVE: f64 = 1048576.0;

fn max_abs<T: Float>(p: Points<'_, T>) -> f64 {
    // Eight running maxima (a compare and select, so NaN is ignored as `f64::max`
    // ignores it, and the loop vectorises): the maximum does not depend on the order.
    let mut acc = [0.0f64; 8];
    let ch = p.data.chunks_exact(8);
    let rest = ch.remainder();
    for c in ch {
        for l in 0..8 {
            let v = c[l].to_f64().abs();
            acc[l] = if v > acc[l] { v } else { acc[l] };
        }
    }
    rest.iter()
        .fold(acc.iter().fold(0.0f64, |m, &v| m.max(v)), |m, v| {
            m.max(v.to_f64().abs())
        })
}

#[allow(clippy::too_many_arguments)]
fn eval_pass<T: Float, F: PairMap>(
    f: F,
    data: Points<'_, T>,
    w: &[f64],
    wshift: f64,
    cols64: &[f64],
    queries: Points<'_, T>,
    opts: KdeOptions,
    direct: Option<bool>,
    stop: &AtomicBool,
    out: &mut KdeOutput,
) -> Result<()> {
    let red = KernelRows {
        f,
        scales: &[1.0],
        w,
        exclude_self: opts.exclude_self,
        sumsq: opts.ess,
        mean: if opts.score { Some(cols64) } else { None },
        d: data.d,
    };
    let st = RowStats::from_states(1, reduce_rows_with(queries, data, &red, stop, direct)?);
    let m = queries.n;
    let d = data.d;
    out.log_sum.extend((0..m).map(|i| st.log_sum(i) + wshift));
    if opts.ess {
        out.ess.extend((0..m).map(|i| {
            if st.sum[i] > 0.0 {
                st.sum[i] * st.sum[i] / st.sumsq[i]
            } else {
                0.0
            }
        }));
    }
    if opts.score {
        for i in 0..m {
            let acc = &st.wacc[i * d..(i + 1) * d];
            for (a, qk) in acc.iter().zip(queries.row(i)) {
                out.score.push(if st.sum[i] > 0.0 {
                    (a - qk.to_f64() * st.wsum[i]) / st.sum[i]
                } else {
                    f64::NAN
                });
            }
        }
    }
    Ok(())
}

fn eval_with<T: Float, F: PairMap + Copy>(
    f: F,
    data: Points<'_, T>,
    logw: &[f64],
    queries: Points<'_, T>,
    opts: KdeOptions,
    stop: &AtomicBool,
) -> Result<KdeOutput> {
    let (w, wshift) = weights_for(F::LOG, logw);
    let cols64 = if opts.score {
        data.to_f64_vec()
    } else {
        Vec::new()
    };
    let direct = (max_abs(data).max(max_abs(queries)) > DIRECT_ABOVE).then_some(true);
    let (m, d) = (queries.n, queries.d);
    let mut out = KdeOutput::default();
    out.log_sum.reserve_exact(m);
    if opts.ess {
        out.ess.reserve_exact(m);
    }
    if opts.score {
        out.score.reserve_exact(m * d);
    }
    // Leave-one-out pairs are matched by row index, so that mode runs in one pass (it
    // never asks for scores, whose accumulators are what the passes bound).
    let pass = if opts.score && !opts.exclude_self {
        SCORE_PASS_ROWS
    } else {
        m.max(1)
    };
    let mut r0 = 0;
    while r0 < m {
        let r1 = (r0 + pass).min(m);
        let q = Points::new(&queries.data[r0 * d..r1 * d], r1 - r0, d)?;
        eval_pass(
            f, data, &w, wshift, &cols64, q, opts, direct, stop, &mut out,
        )?;
        r0 = r1;
    }
    Ok(out)
}

/// Evaluates log Σ_j w_j K(|q_i - x_j|) for every query, with unit bandwidth.
///
/// `logw` are log-weights (they need not be normalised). Memory: O((n + m)·d) plus one
/// distance tile per thread.
pub fn kde_eval<T: Float>(
    data: Points<'_, T>,
    logw: &[f64],
    queries: Points<'_, T>,
    kernel: Kernel,
    opts: KdeOptions,
    stop: &AtomicBool,
) -> Result<KdeOutput> {
    check_logw(logw, data.n)?;
    if opts.exclude_self && (queries.n != data.n) {
        return Err(invalid!("leave-one-out needs the queries to be the data"));
    }
    match kernel {
        Kernel::Gaussian => eval_with(GaussianMap, data, logw, queries, opts, stop),
        Kernel::Exponential => eval_with(ExponentialMap, data, logw, queries, opts, stop),
        Kernel::Tophat => eval_with(TophatMap, data, logw, queries, opts, stop),
        Kernel::Epanechnikov => eval_with(EpanechnikovMap, data, logw, queries, opts, stop),
        Kernel::Linear => eval_with(LinearMap, data, logw, queries, opts, stop),
        Kernel::Cosine => eval_with(CosineMap, data, logw, queries, opts, stop),
    }
}

fn grid_with<T: Float, F: PairMap>(
    f: F,
    data: Points<'_, T>,
    queries: Points<'_, T>,
    logw: &[f64],
    factors: &[f64],
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    let (w, wshift) = weights_for(F::LOG, logw);
    // A bandwidth factor s divides distances by s: squared distances by s².
    let scales: Vec<f64> = factors.iter().map(|s| 1.0 / (s * s)).collect();
    let red = KernelRows {
        f,
        scales: &scales,
        w: &w,
        exclude_self: true,
        sumsq: false,
        mean: None,
        d: data.d,
    };
    let g = factors.len();
    let direct = (max_abs(data).max(max_abs(queries)) > DIRECT_ABOVE).then_some(true);
    let st = RowStats::from_states(g, reduce_rows_with(queries, data, &red, stop, direct)?);
    Ok((0..queries.n * g).map(|k| st.log_sum(k) + wshift).collect())
}

/// Leave-one-out log-sums for a grid of bandwidth factors, in one pass over the pairs.
///
/// Returns an n×G row-major array: entry (i, g) is log Σ_{j≠i} w_j K(|x_i - x_j| / s_g).
/// The distances are computed once per pair; only the kernel is re-evaluated per factor.
pub fn kde_loo_grid<T: Float>(
    data: Points<'_, T>,
    logw: &[f64],
    kernel: Kernel,
    factors: &[f64],
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    kde_loo_grid_at(data, data, logw, kernel, factors, stop)
}

/// Leave-one-out log-sums for a grid of bandwidth factors at queries matched to the data
/// by index (for a bounded KDE, the images g·x_i of the data, in order): entry (i, g) is
/// log Σ_{j≠i} w_j K(|q_i − x_j| / s_g). With `queries` the data this is
/// [`kde_loo_grid`]. One pass over the pairs; memory O(n·G) plus a tile per thread.
pub fn kde_loo_grid_at<T: Float>(
    data: Points<'_, T>,
    queries: Points<'_, T>,
    logw: &[f64],
    kernel: Kernel,
    factors: &[f64],
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    check_logw(logw, data.n)?;
    if queries.n != data.n || queries.d != data.d {
        return Err(invalid!(
            "leave-one-out queries must match the data row for row ({}x{} against {}x{})",
            queries.n,
            queries.d,
            data.n,
            data.d
        ));
    }
    if factors.is_empty() || factors.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(invalid!("grid factors must be positive and finite"));
    }
    match kernel {
        Kernel::Gaussian => grid_with(GaussianMap, data, queries, logw, factors, stop),
        Kernel::Exponential => grid_with(ExponentialMap, data, queries, logw, factors, stop),
        Kernel::Tophat => grid_with(TophatMap, data, queries, logw, factors, stop),
        Kernel::Epanechnikov => grid_with(EpanechnikovMap, data, queries, logw, factors, stop),
        Kernel::Linear => grid_with(LinearMap, data, queries, logw, factors, stop),
        Kernel::Cosine => grid_with(CosineMap, data, queries, logw, factors, stop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::{scaled_vec, sq_dist};

    /// The lane-wise maximum of |x| equals the sequential fold (NaN ignored, as
    /// `f64::max` ignores it), for every length mod 8 and the extremes in every position.
    #[test]
    fn max_abs_matches_a_sequential_fold() {
        let fold = |v: &[f64]| v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        for n in 0..40usize {
            let base: Vec<f64> = (0..n)
                .map(|i| ((i * 7919 % 97) as f64 - 48.0) / 9.0)
                .collect();
            let mut cases = vec![base.clone()];
            for pos in 0..n {
                for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1e300] {
                    let mut v = base.clone();
                    v[pos] = bad;
                    cases.push(v);
                }
            }
            for v in cases {
                let got = max_abs(Points {
                    data: &v,
                    n: v.len(),
                    d: 1,
                });
                let want = fold(&v);
                assert!(got == want, "n={n}: {got} vs {want}");
                let v32: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                let got32 = max_abs(Points {
                    data: &v32,
                    n: v32.len(),
                    d: 1,
                });
                let want32 = v32.iter().fold(0.0f64, |m, x| m.max((*x as f64).abs()));
                assert!(got32 == want32, "f32 n={n}: {got32} vs {want32}");
            }
        }
    }

    const KERNELS: [Kernel; 6] = [
        Kernel::Gaussian,
        Kernel::Tophat,
        Kernel::Epanechnikov,
        Kernel::Exponential,
        Kernel::Linear,
        Kernel::Cosine,
    ];

    fn profile(k: Kernel, r: f64) -> f64 {
        match k {
            Kernel::Gaussian => (-0.5 * r * r).exp(),
            Kernel::Exponential => (-r).exp(),
            Kernel::Tophat => (r < 1.0) as u8 as f64,
            Kernel::Epanechnikov => (1.0 - r * r).max(0.0),
            Kernel::Linear => (1.0 - r).max(0.0),
            Kernel::Cosine => {
                if r < 1.0 {
                    (FRAC_PI_2 * r).cos()
                } else {
                    0.0
                }
            }
        }
    }

    fn naive(x: &[f64], lw: &[f64], q: &[f64], d: usize, k: Kernel, skip_self: bool) -> Vec<f64> {
        let n = x.len() / d;
        (0..q.len() / d)
            .map(|i| {
                let s: f64 = (0..n)
                    .filter(|&j| !(skip_self && i == j))
                    .map(|j| {
                        let r = sq_dist(q, i, x, j, d).sqrt();
                        lw[j].exp() * profile(k, r)
                    })
                    .sum();
                s.ln()
            })
            .collect()
    }

    #[test]
    fn eval_matches_naive_for_every_kernel_and_path() {
        let stop = AtomicBool::new(false);
        for d in [1usize, 3, 30] {
            let (n, m) = (300, 70);
            let x = scaled_vec(11, n * d, 0.6);
            let q = scaled_vec(12, m * d, 0.6);
            let lw: Vec<f64> = scaled_vec(13, n, 1.0);
            for k in KERNELS {
                let out = kde_eval(
                    Points::new(&x, n, d).unwrap(),
                    &lw,
                    Points::new(&q, m, d).unwrap(),
                    k,
                    KdeOptions::default(),
                    &stop,
                )
                .unwrap();
                let want = naive(&x, &lw, &q, d, k, false);
                for (g, w) in out.log_sum.iter().zip(&want) {
                    if w.is_finite() {
                        assert!(
                            (g - w).abs() < 1e-11 * (1.0 + w.abs()),
                            "{k:?} d={d}: {g} vs {w}"
                        );
                    } else {
                        assert_eq!(*g, f64::NEG_INFINITY);
                    }
                }
            }
        }
    }

    #[test]
    fn far_queries_stay_finite_in_log_space() {
        let stop = AtomicBool::new(false);
        let x = vec![0.0, 0.0, 1.0, 0.0];
        let q = vec![400.0, 0.0];
        let out = kde_eval(
            Points::new(&x, 2, 2).unwrap(),
            &[0.0, 0.0],
            Points::new(&q, 1, 2).unwrap(),
            Kernel::Gaussian,
            KdeOptions {
                ess: true,
                score: true,
                ..Default::default()
            },
            &stop,
        )
        .unwrap();
        let want = (-0.5f64 * 399.0 * 399.0)
            + (1.0 + (-0.5f64 * (400.0 * 400.0 - 399.0 * 399.0)).exp()).ln();
        assert!((out.log_sum[0] - want).abs() < 1e-9 * want.abs());
        assert!((out.ess[0] - 1.0).abs() < 1e-12);
        // Score points toward the nearest data point: -(q - x_near) = -399.
        assert!((out.score[0] + 399.0).abs() < 1e-9);
    }

    #[test]
    fn score_matches_finite_differences() {
        let stop = AtomicBool::new(false);
        let d = 3;
        let (n, m) = (120, 9);
        let x = scaled_vec(21, n * d, 0.5);
        let q = scaled_vec(22, m * d, 0.3);
        let lw = vec![0.0; n];
        for k in [
            Kernel::Gaussian,
            Kernel::Exponential,
            Kernel::Epanechnikov,
            Kernel::Cosine,
            Kernel::Linear,
        ] {
            let opts = KdeOptions {
                score: true,
                ..Default::default()
            };
            let out = kde_eval(
                Points::new(&x, n, d).unwrap(),
                &lw,
                Points::new(&q, m, d).unwrap(),
                k,
                opts,
                &stop,
            )
            .unwrap();
            let h = 1e-6;
            for i in 0..m {
                for t in 0..d {
                    let mut qp = q[i * d..(i + 1) * d].to_vec();
                    let mut qm = qp.clone();
                    qp[t] += h;
                    qm[t] -= h;
                    let fp = naive(&x, &lw, &qp, d, k, false)[0];
                    let fm = naive(&x, &lw, &qm, d, k, false)[0];
                    let fd = (fp - fm) / (2.0 * h);
                    let got = out.score[i * d + t];
                    assert!(
                        (got - fd).abs() < 1e-4 * (1.0 + fd.abs()),
                        "{k:?}: {got} vs {fd}"
                    );
                }
            }
        }
    }

    #[test]
    fn loo_grid_matches_naive_and_f32_is_close() {
        let stop = AtomicBool::new(false);
        let d = 2;
        let n = 260;
        let x = scaled_vec(31, n * d, 1.0);
        let lw = scaled_vec(32, n, 0.5);
        let factors = [0.2, 0.5, 1.0, 3.0];
        for k in KERNELS {
            let got =
                kde_loo_grid(Points::new(&x, n, d).unwrap(), &lw, k, &factors, &stop).unwrap();
            for (g, s) in factors.iter().enumerate() {
                let xs: Vec<f64> = x.iter().map(|v| v / s).collect();
                let want = naive(&xs, &lw, &xs, d, k, true);
                for i in 0..n {
                    let (a, b) = (got[i * factors.len() + g], want[i]);
                    if b.is_finite() {
                        assert!(
                            (a - b).abs() < 1e-10 * (1.0 + b.abs()),
                            "{k:?} s={s}: {a} vs {b}"
                        );
                    } else {
                        assert_eq!(a, f64::NEG_INFINITY);
                    }
                }
            }
        }
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let a = kde_eval(
            Points::new(&x32, n, d).unwrap(),
            &lw,
            Points::new(&x32, n, d).unwrap(),
            Kernel::Gaussian,
            KdeOptions {
                exclude_self: true,
                ..Default::default()
            },
            &stop,
        )
        .unwrap();
        let b = naive(&x, &lw, &x, d, Kernel::Gaussian, true);
        for (p, q) in a.log_sum.iter().zip(&b) {
            assert!((p - q).abs() < 1e-5 * (1.0 + q.abs()));
        }
    }

    #[test]
    fn loo_grid_at_image_queries_matches_naive() {
        // Queries are the data reflected at -1 in the first coordinate (a bounded KDE's
        // images): the pair (i, i) is left out, every other pair is summed.
        let stop = AtomicBool::new(false);
        let (n, d) = (150, 2);
        let x = scaled_vec(41, n * d, 1.0);
        let lw = scaled_vec(42, n, 0.5);
        let mut q = x.clone();
        for i in 0..n {
            q[i * d] = -2.0 - x[i * d];
        }
        let factors = [0.3, 1.0, 4.0];
        for k in KERNELS {
            let got = kde_loo_grid_at(
                Points::new(&x, n, d).unwrap(),
                Points::new(&q, n, d).unwrap(),
                &lw,
                k,
                &factors,
                &stop,
            )
            .unwrap();
            for (g, s) in factors.iter().enumerate() {
                let xs: Vec<f64> = x.iter().map(|v| v / s).collect();
                let qs: Vec<f64> = q.iter().map(|v| v / s).collect();
                let want = naive(&xs, &lw, &qs, d, k, true);
                for i in 0..n {
                    let (a, b) = (got[i * factors.len() + g], want[i]);
                    if b.is_finite() {
                        assert!((a - b).abs() < 1e-10 * (1.0 + b.abs()), "{k:?}: {a} vs {b}");
                    } else {
                        assert_eq!(a, f64::NEG_INFINITY);
                    }
                }
            }
        }
        let p = Points::new(&x, n, d).unwrap();
        let short = Points::new(&x[..d * 10], 10, d).unwrap();
        assert!(kde_loo_grid_at(p, short, &lw, Kernel::Gaussian, &[1.0], &stop).is_err());
    }

    #[test]
    fn bad_weights_are_errors() {
        let stop = AtomicBool::new(false);
        let x = vec![0.0; 4];
        let p = Points::new(&x, 2, 2).unwrap();
        let o = KdeOptions::default();
        assert!(kde_eval(p, &[0.0], p, Kernel::Gaussian, o, &stop).is_err());
        assert!(kde_eval(p, &[f64::NAN, 0.0], p, Kernel::Gaussian, o, &stop).is_err());
        assert!(kde_eval(p, &[f64::NEG_INFINITY; 2], p, Kernel::Gaussian, o, &stop).is_err());
        assert!(kde_loo_grid(p, &[0.0, 0.0], Kernel::Gaussian, &[0.0], &stop).is_err());
        assert!(Kernel::parse("gauss").is_err());
    }
}
