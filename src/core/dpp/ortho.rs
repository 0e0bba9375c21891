//! Orthonormal bases of column spans on divest's own code (no NumPy BLAS, whose idle
//! threads would compete with the pool): classical Gram–Schmidt applied twice (CGS2),
//! which keeps orthogonality at machine precision for numerically full-rank inputs.

use std::sync::atomic::AtomicBool;

use super::projection::dot;
use crate::core::error::{invalid, Result};
use crate::core::threads;

/// Q (n×d row-major, orthonormal columns) spanning the columns of X (n×d row-major).
/// Fails when X is numerically rank deficient: a column's residual is at most
/// max(n, d)·eps times the largest column norm. Memory: two n×d copies.
pub fn orthonormal_basis(x: &[f64], n: usize, d: usize, stop: &AtomicBool) -> Result<Vec<f64>> {
    if x.len() != n * d || d == 0 || d > n {
        return Err(invalid!(
            "X must be n×d with 1 <= d <= n; got {n}×{d} ({} values)",
            x.len()
        ));
    }
    // Columns stored contiguously.
    let mut q = vec![0.0f64; n * d];
    for (i, row) in x.chunks_exact(d).enumerate() {
        for (j, v) in row.iter().enumerate() {
            q[j * n + i] = *v;
        }
    }
    let max_norm = (0..d)
        .map(|j| dot(&q[j * n..(j + 1) * n], &q[j * n..(j + 1) * n]).sqrt())
        .fold(0.0f64, f64::max);
    if !max_norm.is_finite() {
        return Err(invalid!("X contains NaN or inf"));
    }
    let tol = (n.max(d) as f64) * f64::EPSILON * max_norm;
    let mut coef = vec![0.0f64; d];
    for j in 0..d {
        threads::check(stop)?;
        let (done, rest) = q.split_at_mut(j * n);
        let v = &mut rest[..n];
        for _pass in 0..2 {
            for (l, c) in coef[..j].iter_mut().enumerate() {
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
    let mut out = vec![0.0f64; n * d];
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
    }
}
