//! Greedy MAP inference for an L-ensemble DPP (Chen, Zhang & Zhou 2018): items are added
//! one at a time, each the available item j with the largest gain
//! d_j² = det(L_{S∪j}) / det(L_S), tracked by incremental Cholesky rows.
//!
//! With c_t the Cholesky rows of the items selected so far, selecting j adds the row
//! e_i = (L_ji − Σ_t c_t[j]·c_t[i]) / d_j and updates d_i² ← max(d_i² − e_i², 0). The
//! clamp keeps rounding from producing negative gains on (nearly) rank-deficient kernels
//! (where the reference implementation takes the square root of a negative number); a
//! candidate whose gain is not above `floor` is never selected, so the selection stops
//! at the numerical rank. Ties go to the smallest index. Memory: O(N·k) for the rows;
//! time O(N·k²). Each e_i is a sum over t in order, so the result does not depend on
//! the thread count.

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use crate::core::error::{checked_size, invalid, try_vec, Result};
use crate::core::threads;

/// Items per parallel task of one update.
const CHUNK: usize = 1024;
/// Multiply-adds of one update from which it runs in parallel.
const PAR_WORK: usize = 1 << 17;
/// Tile side of the symmetry check.
const SYM_TILE: usize = 64;

/// Checks that `l` is symmetric to 1e-8 relative (|l_ij − l_ji| ≤ 1e-12·max|l| +
/// 1e-8·|l_ji|, NumPy's `allclose(L, L.T, rtol=1e-8, atol=1e-12·max|L|)`) and has no
/// diagonal entry below −1e-12·max|l|, in tiles (one read of the matrix, no copy).
fn check_kernel(l: &[f64], n: usize, stop: &AtomicBool) -> Result<()> {
    let scale = threads::install(|| {
        l.par_chunks(n.max(1) * SYM_TILE)
            .map(|c| c.iter().fold(0.0f64, |m, v| m.max(v.abs())))
            .reduce(|| 0.0, f64::max)
    })?;
    let atol = 1e-12 * scale;
    let nt = n.div_ceil(SYM_TILE);
    threads::install(|| {
        (0..nt).into_par_iter().try_for_each(|bi| -> Result<()> {
            threads::check(stop)?;
            let (r0, r1) = (bi * SYM_TILE, ((bi + 1) * SYM_TILE).min(n));
            for j in r0 + 1..n {
                let col = &l[j * n + r0..j * n + r1.min(j)];
                for (q, &b) in col.iter().enumerate() {
                    let a = l[(r0 + q) * n + j];
                    // Written so that NaN fails the check.
                    let close = (a - b).abs() <= atol + 1e-8 * b.abs()
                        && (b - a).abs() <= atol + 1e-8 * a.abs();
                    if !close {
                        return Err(invalid!(
                            "L must be symmetric (a DPP kernel); symmetrise it, e.g. (L + L.T) / 2"
                        ));
                    }
                }
            }
            Ok(())
        })
    })??;
    if (0..n).any(|i| l[i * n + i] < -1e-12 * scale.max(1e-300)) {
        return Err(invalid!(
            "L has a negative diagonal entry, so it is not positive semi-definite; pass a \
             valid DPP kernel"
        ));
    }
    Ok(())
}

/// Greedy MAP of the DPP with the symmetric PSD kernel `l` (N×N, row-major; only the
/// diagonal and the rows of the selected items are read): at most `k` items, stopping
/// once the best available gain is not above `floor` or is below `threshold`. Returns
/// the selected indices in selection order.
pub fn greedy_map(
    l: &[f64],
    n: usize,
    k: usize,
    threshold: f64,
    floor: f64,
    stop: &AtomicBool,
) -> Result<Vec<usize>> {
    if checked_size(n, n, "the kernel")? != l.len() {
        return Err(invalid!(
            "the kernel must be an N×N matrix; got {} values for N = {n}",
            l.len()
        ));
    }
    let k = k.min(n);
    check_kernel(l, n, stop)?;
    let mut d2 = try_vec(n, 0.0f64, "the number of items")?;
    for (i, v) in d2.iter_mut().enumerate() {
        *v = l[i * n + i].max(0.0);
    }
    let mut avail = try_vec(n, true, "the number of items")?;
    // Cholesky rows, one of N per selected item.
    let mut c = try_vec(checked_size(k, n, "k")?, 0.0f64, "k")?;
    let mut out = Vec::with_capacity(k);
    // The whole loop runs inside the pool: a step's parallel update then costs no
    // hand-off from outside (which waits for the scheduler on a loaded machine).
    threads::install(|| -> Result<()> {
        while out.len() < k {
            threads::check(stop)?;
            // First index of the largest available gain.
            let mut j = usize::MAX;
            let mut best = f64::NEG_INFINITY;
            for (i, (&v, &a)) in d2.iter().zip(&avail).enumerate() {
                if a && v > best {
                    best = v;
                    j = i;
                }
            }
            let above_floor = best > floor;
            if j == usize::MAX || !above_floor || best < threshold {
                break;
            }
            let t = out.len();
            let (done, rest) = c.split_at_mut(t * n);
            let e = &mut rest[..n];
            let cj: Vec<f64> = (0..t).map(|s| done[s * n + j]).collect();
            let inv = 1.0 / best.sqrt();
            let lj = &l[j * n..(j + 1) * n];
            let done = &*done;
            let update = |b: usize, eb: &mut [f64], db: &mut [f64]| {
                let i0 = b * CHUNK;
                let m = eb.len();
                eb.copy_from_slice(&lj[i0..i0 + m]);
                for (s, &w) in cj.iter().enumerate() {
                    let row = &done[s * n + i0..s * n + i0 + m];
                    for (x, &r) in eb.iter_mut().zip(row) {
                        *x -= w * r;
                    }
                }
                for (x, dv) in eb.iter_mut().zip(db.iter_mut()) {
                    *x *= inv;
                    *dv = (*dv - *x * *x).max(0.0);
                }
            };
            if n.saturating_mul(t + 1) >= PAR_WORK {
                e.par_chunks_mut(CHUNK)
                    .zip(d2.par_chunks_mut(CHUNK))
                    .enumerate()
                    .for_each(|(b, (eb, db))| update(b, eb, db));
            } else {
                for (b, (eb, db)) in e.chunks_mut(CHUNK).zip(d2.chunks_mut(CHUNK)).enumerate() {
                    update(b, eb, db);
                }
            }
            avail[j] = false;
            out.push(j);
        }
        Ok(())
    })??;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::{det, sym_vec};

    #[test]
    fn each_step_maximises_the_determinant_and_rank_stops_it() {
        let stop = AtomicBool::new(false);
        let (n, r) = (12, 5);
        let b = sym_vec(7, n * r);
        let mut l = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                l[i * n + j] = (0..r).map(|q| b[i * r + q] * b[j * r + q]).sum();
            }
        }
        let floor = n as f64 * f64::EPSILON * 10.0;
        let got = greedy_map(&l, n, n, 0.0, floor, &stop).unwrap();
        assert_eq!(got.len(), r, "rank-{r} kernel");
        for t in 0..got.len() {
            let mut best = (f64::NEG_INFINITY, 0);
            for cand in 0..n {
                if got[..t].contains(&cand) {
                    continue;
                }
                let s: Vec<usize> = got[..t].iter().copied().chain([cand]).collect();
                let m = s.len();
                let mut a: Vec<f64> = (0..m * m).map(|q| l[s[q / m] * n + s[q % m]]).collect();
                let v = det(&mut a, m);
                if v > best.0 * (1.0 + 1e-9) {
                    best = (v, cand);
                }
            }
            assert_eq!(got[t], best.1, "step {t}");
        }
        let stopped = AtomicBool::new(true);
        assert!(greedy_map(&l, n, 3, 0.0, floor, &stopped).is_err());
        assert!(greedy_map(&l[1..], n, 3, 0.0, floor, &stop).is_err());
    }
}
