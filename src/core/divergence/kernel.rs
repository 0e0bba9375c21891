//! Kernel sums over pairs of points for MMD and the Cauchy-Schwarz divergence.
//!
//! Each sum Σ_{i,j} k(x_i, y_j) runs on the pairwise engine with [`KernelRows`] in log
//! mode: per row an online log-sum-exp of the log-kernel, then a log-sum-exp over rows in
//! row order. Nothing of size n×m is formed: memory is O((n + m)·d).

use std::sync::atomic::AtomicBool;

use crate::core::error::{invalid, Result};
use crate::core::pairwise::maps::{ExponentialMap, GaussianMap};
use crate::core::pairwise::reduce::{CollectRows, KernelRows, PairMap, RowStats};
use crate::core::pairwise::{reduce_rows, Float, Points};

/// The kernel, as a function of the scaled squared distance a·‖x − y‖², a = 1/σ².
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairKernel {
    /// exp(−‖x − y‖² / (2σ²)).
    Gaussian,
    /// exp(−‖x − y‖ / σ).
    Laplacian,
}

impl PairKernel {
    /// Parses "gaussian" or "laplacian".
    pub fn parse(name: &str) -> Result<PairKernel> {
        match name {
            "gaussian" => Ok(PairKernel::Gaussian),
            "laplacian" => Ok(PairKernel::Laplacian),
            other => Err(invalid!(
                "kernel must be 'gaussian' or 'laplacian'; got {other:?}"
            )),
        }
    }
}

fn log_sum_with<T: Float, F: PairMap>(
    f: F,
    x: Points<'_, T>,
    y: Points<'_, T>,
    scale: f64,
    exclude_self: bool,
    stop: &AtomicBool,
) -> Result<f64> {
    let w = vec![0.0f64; y.n];
    let red = KernelRows {
        f,
        scales: &[scale],
        w: &w,
        exclude_self,
        sumsq: false,
        mean: None,
        d: x.d,
    };
    let st = RowStats::from_states(1, reduce_rows(x, y, &red, stop)?);
    // Log-sum-exp over rows, in row order (deterministic for any thread count).
    let ls: Vec<f64> = (0..x.n).map(|i| st.log_sum(i)).collect();
    let mx = ls.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if mx == f64::NEG_INFINITY {
        return Ok(mx);
    }
    let s: f64 = ls.iter().map(|v| (v - mx).exp()).sum();
    Ok(mx + s.ln())
}

/// log Σ_{i,j} k(x_i, y_j) with k evaluated at scale `scale` = 1/σ² (pairs (i, i) skipped
/// when `exclude_self`, which needs x and y to be the same set). -inf for an empty sum.
pub fn pair_log_sum<T: Float>(
    x: Points<'_, T>,
    y: Points<'_, T>,
    kernel: PairKernel,
    scale: f64,
    exclude_self: bool,
    stop: &AtomicBool,
) -> Result<f64> {
    if !(scale.is_finite() && scale > 0.0) {
        return Err(invalid!("sigma must be positive and finite"));
    }
    if exclude_self && x.n != y.n {
        return Err(invalid!(
            "excluding i = j needs the two point sets to be the same"
        ));
    }
    match kernel {
        PairKernel::Gaussian => log_sum_with(GaussianMap, x, y, scale, exclude_self, stop),
        PairKernel::Laplacian => log_sum_with(ExponentialMap, x, y, scale, exclude_self, stop),
    }
}

/// Collects all squared distances of a small set against itself, row-major n×n (for the
/// median heuristic on a subsample; the caller bounds n).
pub fn self_sq_dists<T: Float>(x: Points<'_, T>, stop: &AtomicBool) -> Result<Vec<f64>> {
    if x.n > 20_000 {
        return Err(invalid!(
            "self_sq_dists is for subsamples of at most 20000 points"
        ));
    }
    let st = reduce_rows(x, x, &CollectRows { m: x.n }, stop)?;
    Ok(st.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::{sq_dist, sym_vec};

    #[test]
    fn log_sums_match_naive() {
        let stop = AtomicBool::new(false);
        for d in [2usize, 12] {
            let (n, m) = (130, 300);
            let x = sym_vec(1, n * d);
            let y = sym_vec(2, m * d);
            let px = Points::new(&x, n, d).unwrap();
            let py = Points::new(&y, m, d).unwrap();
            for (kern, kf) in [
                (
                    PairKernel::Gaussian,
                    (|d2: f64| (-0.5 * d2 / 0.7).exp()) as fn(f64) -> f64,
                ),
                (PairKernel::Laplacian, |d2: f64| (-(d2 / 0.7).sqrt()).exp()),
            ] {
                let got = pair_log_sum(px, py, kern, 1.0 / 0.7, false, &stop).unwrap();
                let mut want = 0.0;
                for i in 0..n {
                    for j in 0..m {
                        let d2 = sq_dist(&x, i, &y, j, d);
                        want += kf(d2);
                    }
                }
                assert!((got - want.ln()).abs() < 1e-12, "{kern:?} d={d}");
                let got = pair_log_sum(px, px, kern, 1.0 / 0.7, true, &stop).unwrap();
                let mut want = 0.0;
                for i in 0..n {
                    for j in 0..n {
                        if i != j {
                            let d2 = sq_dist(&x, i, &x, j, d);
                            want += kf(d2);
                        }
                    }
                }
                assert!((got - want.ln()).abs() < 1e-12, "{kern:?} d={d} loo");
            }
        }
        let x = sym_vec(3, 10 * 2);
        let p = Points::new(&x, 10, 2).unwrap();
        assert!(pair_log_sum(p, p, PairKernel::Gaussian, 0.0, false, &stop).is_err());
        let dd = self_sq_dists(p, &stop).unwrap();
        assert_eq!(dd.len(), 100);
        assert_eq!(dd[0], 0.0);
    }
}
