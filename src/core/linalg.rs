//! Small dense helpers that run on divest's own pool (never on NumPy's BLAS threads,
//! which would compete with the pool for the same cores).

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
pub fn affine_rows<T: Float>(x: Points<'_, T>, shift: &[f64], a: &[f64], k: usize) -> Result<Vec<T>> {
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
            .for_each(|(b, o)| {
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
                    f64::gemm(nr, d, k, c.as_ptr(), d as isize, 1, a.as_ptr(), 1, d as isize, y.as_mut_ptr(), k as isize);
                }
                for (dst, src) in o.iter_mut().zip(&y) {
                    *dst = T::from_f64(*src);
                }
            })
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affine_matches_naive() {
        let (n, d, k) = (600, 3, 2);
        let x: Vec<f64> = (0..n * d).map(|i| (i as f64 * 0.37).sin()).collect();
        let shift = [0.1, -0.2, 0.3];
        let a = [1.0, 2.0, 3.0, -1.0, 0.5, 0.25];
        let y = affine_rows(Points::new(&x, n, d).unwrap(), &shift, &a, k).unwrap();
        for i in 0..n {
            for r in 0..k {
                let want: f64 = (0..d).map(|j| a[r * d + j] * (x[i * d + j] - shift[j])).sum();
                assert!((y[i * k + r] - want).abs() < 1e-13);
            }
        }
        assert!(affine_rows(Points::new(&x, n, d).unwrap(), &shift[..2], &a, k).is_err());
    }
}
