//! Small dense helpers that run on divest's own pool (never on NumPy's BLAS threads,
//! which would compete with the pool for the same cores).

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use super::error::{invalid, Result};
use super::pairwise::{Float, Points};
use super::threads;

/// Rows per parallel task of [`affine_rows`].
const AFFINE_BLOCK: usize = 256;

/// Returns `(x - shift) · Aᵀ` row by row, as f64 values cast to `T` (row-major n×k).
///
/// `shift` has length d and `a` is k×d row-major. Computed in f64 whatever `T` is.
/// Memory: the output plus one block of 256 centred rows per task.
pub fn affine_rows<T: Float>(
    x: Points<'_, T>,
    shift: &[f64],
    a: &[f64],
    k: usize,
    stop: &AtomicBool,
) -> Result<Vec<T>> {
    let (n, d) = (x.n, x.d);
    if shift.len() != d || a.len() != k * d {
        return Err(invalid!(
            "affine map shapes do not match: points are {d}-dimensional, shift has {} values, \
             matrix has {} values (expected {k}*{d})",
            shift.len(),
            a.len()
        ));
    }
    let mut out = vec![T::ZERO; n * k];
    threads::install(|| {
        out.par_chunks_mut(AFFINE_BLOCK * k)
            .enumerate()
            .try_for_each(|(b, o)| {
                threads::check(stop)?;
                let r0 = b * AFFINE_BLOCK;
                let nr = o.len() / k;
                let mut c = vec![0.0f64; nr * d];
                for i in 0..nr {
                    let row = x.row(r0 + i);
                    for j in 0..d {
                        c[i * d + j] = row[j].to_f64() - shift[j];
                    }
                }
                let mut y = vec![0.0f64; nr * k];
                // SAFETY: c is nr×d, a is k×d (read as its d×k transpose), y is nr×k; all
                // row-major and distinct.
                unsafe {
                    f64::gemm(
                        nr,
                        d,
                        k,
                        c.as_ptr(),
                        d as isize,
                        1,
                        a.as_ptr(),
                        1,
                        d as isize,
                        y.as_mut_ptr(),
                        k as isize,
                    );
                }
                for (dst, src) in o.iter_mut().zip(&y) {
                    *dst = T::from_f64(*src);
                }
                Ok(())
            })
    })??;
    Ok(out)
}

/// Weighted mean and covariance of the rows of `x`, with the estimator of
/// `numpy.cov(x.T, aweights=w, bias=False)` (scipy's `gaussian_kde`):
/// Σ w_i (x_i − μ)(x_i − μ)ᵀ / (1 − Σ w_i²) for weights normalised to sum to one.
///
/// Two passes (mean, then centred products) in f64. The rows split into a fixed number
/// of chunks (set by the shape, not the thread count), each with its own d×d sum,
/// combined in order: bitwise reproducible. Memory: at most 8 d×d sums (fewer for large
/// d) plus one 256-row centred block per task. Returns (mean, covariance row-major).
pub fn weighted_cov<T: Float>(
    x: Points<'_, T>,
    w: &[f64],
    stop: &AtomicBool,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let (n, d) = (x.n, x.d);
    if w.len() != n {
        return Err(invalid!("weights have {} values for {n} points", w.len()));
    }
    let total: f64 = w.iter().sum();
    if !(total > 0.0 && total.is_finite()) {
        return Err(invalid!("weights must sum to a positive finite value"));
    }
    let wn: Vec<f64> = w.iter().map(|v| v / total).collect();
    let chunks = (n.div_ceil(AFFINE_BLOCK)).clamp(1, (4_194_304 / (d * d).max(1)).clamp(1, 8));
    let per = n.div_ceil(chunks);
    let ranges: Vec<(usize, usize)> = (0..chunks)
        .map(|c| (c * per, ((c + 1) * per).min(n)))
        .filter(|(a, b)| a < b)
        .collect();
    let partial_means: Vec<Vec<f64>> = threads::install(|| {
        ranges
            .par_iter()
            .map(|&(a, b)| {
                let mut m = vec![0.0f64; d];
                for (i, &wi) in wn.iter().enumerate().take(b).skip(a) {
                    for (mj, v) in m.iter_mut().zip(x.row(i)) {
                        *mj += wi * v.to_f64();
                    }
                }
                m
            })
            .collect()
    })?;
    let mut mean = vec![0.0f64; d];
    for m in &partial_means {
        for j in 0..d {
            mean[j] += m[j];
        }
    }
    let partial_covs: Vec<Vec<f64>> = threads::install(|| {
        ranges
            .par_iter()
            .map(|&(a, b)| {
                let mut acc = vec![0.0f64; d * d];
                let mut c = vec![0.0f64; AFFINE_BLOCK * d];
                let mut r0 = a;
                while r0 < b {
                    threads::check(stop)?;
                    let nr = AFFINE_BLOCK.min(b - r0);
                    for i in 0..nr {
                        let sw = wn[r0 + i].sqrt();
                        let row = x.row(r0 + i);
                        for j in 0..d {
                            c[i * d + j] = sw * (row[j].to_f64() - mean[j]);
                        }
                    }
                    // SAFETY: c holds nr×d row-major (read as its d×nr transpose and as
                    // itself), acc is d×d row-major and distinct from c.
                    unsafe {
                        matrixmultiply::dgemm(
                            d,
                            nr,
                            d,
                            1.0,
                            c.as_ptr(),
                            1,
                            d as isize,
                            c.as_ptr(),
                            d as isize,
                            1,
                            1.0,
                            acc.as_mut_ptr(),
                            d as isize,
                            1,
                        );
                    }
                    r0 += nr;
                }
                Ok(acc)
            })
            .collect::<Result<Vec<_>>>()
    })??;
    let sw2: f64 = wn.iter().map(|v| v * v).sum();
    let denom = 1.0 - sw2;
    let mut cov = vec![0.0f64; d * d];
    for p in &partial_covs {
        for (o, v) in cov.iter_mut().zip(p) {
            *o += v;
        }
    }
    // The GEMM does not promise exact symmetry; Cholesky wants it.
    for i in 0..d {
        for j in 0..i {
            let s = 0.5 * (cov[i * d + j] + cov[j * d + i]) / denom;
            cov[i * d + j] = s;
            cov[j * d + i] = s;
        }
        cov[i * d + i] /= denom;
    }
    Ok((mean, cov))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_cov_matches_two_pass_formula() {
        let (n, d) = (1000, 5);
        let x: Vec<f64> = (0..n * d).map(|i| (i as f64 * 0.37).sin() + 1e6).collect();
        let w: Vec<f64> = (0..n).map(|i| 1.0 + (i % 7) as f64).collect();
        let (mean, cov) =
            weighted_cov(Points::new(&x, n, d).unwrap(), &w, &AtomicBool::new(false)).unwrap();
        let tw: f64 = w.iter().sum();
        let wn: Vec<f64> = w.iter().map(|v| v / tw).collect();
        for a in 0..d {
            let ma: f64 = (0..n).map(|i| wn[i] * x[i * d + a]).sum();
            assert!((mean[a] - ma).abs() < 1e-9);
            for b in 0..d {
                let mb: f64 = (0..n).map(|i| wn[i] * x[i * d + b]).sum();
                let s: f64 = (0..n)
                    .map(|i| wn[i] * (x[i * d + a] - ma) * (x[i * d + b] - mb))
                    .sum();
                let want = s / (1.0 - wn.iter().map(|v| v * v).sum::<f64>());
                assert!((cov[a * d + b] - want).abs() < 1e-9 * want.abs().max(1e-3));
            }
        }
        assert!(weighted_cov(
            Points::new(&x, n, d).unwrap(),
            &w[1..],
            &AtomicBool::new(false)
        )
        .is_err());
    }

    #[test]
    fn affine_matches_naive() {
        let (n, d, k) = (600, 3, 2);
        let x: Vec<f64> = (0..n * d).map(|i| (i as f64 * 0.37).sin()).collect();
        let shift = [0.1, -0.2, 0.3];
        let a = [1.0, 2.0, 3.0, -1.0, 0.5, 0.25];
        let y = affine_rows(
            Points::new(&x, n, d).unwrap(),
            &shift,
            &a,
            k,
            &AtomicBool::new(false),
        )
        .unwrap();
        for i in 0..n {
            for r in 0..k {
                let want: f64 = (0..d)
                    .map(|j| a[r * d + j] * (x[i * d + j] - shift[j]))
                    .sum();
                assert!((y[i * k + r] - want).abs() < 1e-13);
            }
        }
        assert!(affine_rows(
            Points::new(&x, n, d).unwrap(),
            &shift[..2],
            &a,
            k,
            &AtomicBool::new(false)
        )
        .is_err());
    }
}
