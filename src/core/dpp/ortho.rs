//! Orthonormal bases of column spans on divest's own code (no NumPy BLAS, whose idle
//! threads would compete with the pool): classical Gram–Schmidt applied twice (CGS2),
//! which keeps orthogonality at machine precision for numerically full-rank inputs.

use std::sync::atomic::AtomicBool;

use super::projection::dot;
use crate::core::error::{checked_size, invalid, try_vec, Result};
use crate::core::threads;

/// `e` with 2^e <= x < 2^(e+1), for finite x > 0 (subnormals included).
fn exponent(x: f64) -> i32 {
    let (y, off) = if x < f64::MIN_POSITIVE {
        (x * 18446744073709551616.0, 64) // 2^64: subnormal to normal, exactly
    } else {
        (x, 0)
    };
    ((y.to_bits() >> 52) & 0x7ff) as i32 - 1023 - off
}

/// 2^e for -1022 <= e <= 1023.
fn pow2(e: i32) -> f64 {
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// Q (n×d row-major, orthonormal columns) spanning the columns of X (n×d row-major).
/// Each column is first scaled by a power of two (exactly) so that its largest entry
/// lies in [1, 2): the span is unchanged, entries from subnormal to 1e308 neither
/// underflow nor overflow, and the rank test does not depend on the columns' units.
/// Fails when X is numerically rank deficient: a column's residual is at most
/// max(n, d)·eps times that column's norm. Memory: two n×d copies.
pub fn orthonormal_basis(x: &[f64], n: usize, d: usize, stop: &AtomicBool) -> Result<Vec<f64>> {
    if x.len() != n * d || d == 0 || d > n {
        return Err(invalid!(
            "X must be n×d with 1 <= d <= n; got {n}×{d} ({} values)",
            x.len()
        ));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(invalid!("X contains NaN or inf"));
    }
    // Columns stored contiguously.
    let size = checked_size(n, d, "X")?;
    let mut q = try_vec(size, 0.0f64, "X")?;
    for (i, row) in x.chunks_exact(d).enumerate() {
        for (j, v) in row.iter().enumerate() {
            q[j * n + i] = *v;
        }
    }
    let rel = (n.max(d) as f64) * f64::EPSILON;
    let mut coef = vec![0.0f64; d];
    for j in 0..d {
        threads::check(stop)?;
        let (done, rest) = q.split_at_mut(j * n);
        let v = &mut rest[..n];
        let big = v.iter().fold(0.0f64, |a, x| a.max(x.abs()));
        if big > 0.0 {
            // Two factors, each a normal power of two: every product is exact.
            let s = -exponent(big);
            let (a, b) = (pow2(s / 2), pow2(s - s / 2));
            v.iter_mut().for_each(|x| *x = *x * a * b);
        }
        let tol = rel * dot(v, v).sqrt();
        for _pass in 0..2 {
            for (l, c) in coef[..j].iter_mut().enumerate() {
                if l % 64 == 63 {
                    threads::check(stop)?; // a column of a tall X is long work alone
                }
                *c = dot(&done[l * n..(l + 1) * n], v);
            }
            for (l, c) in coef[..j].iter().enumerate() {
                for (vi, qi) in v.iter_mut().zip(&done[l * n..(l + 1) * n]) {
                    *vi -= c * qi;
                }
            }
        }
        let nv = dot(v, v).sqrt();
        if nv.is_nan() || nv <= tol {
            return Err(invalid!(
                "X must have full column rank {d}; column {j} is (numerically) a combination \
                 of the previous ones. Drop redundant columns"
            ));
        }
        v.iter_mut().for_each(|x| *x /= nv);
    }
    let mut out = try_vec(size, 0.0f64, "X")?;
    for j in 0..d {
        for i in 0..n {
            out[i * d + j] = q[j * n + i];
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthonormal_and_same_span() {
        let (n, d) = (50, 6);
        // Ill-conditioned Vandermonde columns.
        let x: Vec<f64> = (0..n)
            .flat_map(|i| (0..d).map(move |j| (i as f64 / n as f64).powi(j as i32)))
            .collect();
        let stop = AtomicBool::new(false);
        let q = orthonormal_basis(&x, n, d, &stop).unwrap();
        for a in 0..d {
            for b in 0..d {
                let g: f64 = (0..n).map(|i| q[i * d + a] * q[i * d + b]).sum();
                assert!((g - if a == b { 1.0 } else { 0.0 }).abs() < 1e-13);
            }
        }
        // Each column of X is reproduced by its projection onto span(Q).
        for j in 0..d {
            let col: Vec<f64> = (0..n).map(|i| x[i * d + j]).collect();
            let mut r = col.clone();
            for a in 0..d {
                let c: f64 = (0..n).map(|i| q[i * d + a] * col[i]).sum();
                for i in 0..n {
                    r[i] -= c * q[i * d + a];
                }
            }
            assert!(r.iter().all(|v| v.abs() < 1e-12));
        }
        let mut dup = x.clone();
        for i in 0..n {
            dup[i * d + 3] = 2.0 * dup[i * d + 1];
        }
        assert!(orthonormal_basis(&dup, n, d, &stop).is_err());
        assert!(orthonormal_basis(&x[..12], 2, 6, &stop).is_err());
        // Columns at 1e300, 1e-300 and subnormal scales span the same space.
        let scales = [1e300, 1e-300, 3e-310, 1.0, 1e-8, 1e8];
        let xs: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, v)| v * scales[i % d])
            .collect();
        let qs = orthonormal_basis(&xs, n, d, &stop).unwrap();
        for a in 0..d {
            for b in 0..d {
                let g: f64 = (0..n).map(|i| qs[i * d + a] * qs[i * d + b]).sum();
                assert!(
                    (g - if a == b { 1.0 } else { 0.0 }).abs() < 1e-12,
                    "{a} {b} {g}"
                );
            }
        }
        // Same projector as the unscaled basis (QQᵀ compared entrywise).
        for i in 0..n {
            for k in 0..n {
                let p: f64 = (0..d).map(|a| q[i * d + a] * q[k * d + a]).sum();
                let ps: f64 = (0..d).map(|a| qs[i * d + a] * qs[k * d + a]).sum();
                assert!((p - ps).abs() < 1e-8, "{i} {k}");
            }
        }
        assert_eq!(exponent(1.0), 0);
        assert_eq!(exponent(3e-310), -1029);
        assert_eq!(exponent(f64::MAX), 1023);
    }
}
