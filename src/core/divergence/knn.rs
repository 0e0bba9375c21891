//! k-nearest-neighbour quantities for the entropy, KL and mutual-information estimators:
//! brute force on the pairwise engine's exact (direct-difference) distance path, with the
//! top-k and count reducers of `pairwise::topk`. The finishing formulas live in Python.

use std::sync::atomic::AtomicBool;

use crate::core::error::{invalid, Result};
use crate::core::pairwise::topk::{CountWithin, Joint, TopK};
use crate::core::pairwise::{reduce_rows_with, Float, Points};

/// The k smallest squared distances (ascending, `rows.n * k`) from each row point to the
/// column points, and the column indices, ignoring pairs at distance zero (duplicates, and
/// the point itself when `same`). With `joint`, distances are max(‖x_i − x_j‖, ‖u_i − u_j‖)
/// (squared) over the two coordinate blocks. Errors if a row has fewer than k columns at
/// positive distance. Memory: the output plus one distance tile per task.
pub fn knn<T: Float>(
    rows: Points<'_, T>,
    cols: Points<'_, T>,
    k: usize,
    same: bool,
    joint: Option<Joint<'_>>,
    stop: &AtomicBool,
) -> Result<(Vec<f64>, Vec<usize>)> {
    if k == 0 {
        return Err(invalid!("k must be at least 1"));
    }
    if same && rows.n != cols.n {
        return Err(invalid!("same=true needs rows and columns to be one set"));
    }
    if let Some(j) = &joint {
        if j.rows.len() != rows.n * j.d || j.cols.len() != cols.n * j.d || j.d == 0 {
            return Err(invalid!("second coordinate block has the wrong shape"));
        }
    }
    let red = TopK {
        k,
        exclude_self: same,
        skip_zero: true,
        joint,
    };
    // The direct path computes exact differences, so ties and counts are reproducible.
    let st = reduce_rows_with(rows, cols, &red, stop, Some(true))?;
    let mut d2 = Vec::with_capacity(rows.n * k);
    let mut idx = Vec::with_capacity(rows.n * k);
    for s in st {
        d2.extend(s.d2);
        idx.extend(s.idx);
    }
    if let Some(i) = (0..rows.n).find(|&i| d2[i * k + k - 1] == f64::INFINITY) {
        return Err(invalid!(
            "point {i} has fewer than k = {k} neighbours at positive distance (duplicates are \
             not neighbours); lower k or remove duplicated points"
        ));
    }
    Ok((d2, idx))
}

/// Per row point, the number of other points of the same set with squared distance below
/// (`strict`) or at most `r2[i]`. Memory: the output plus one tile per task.
pub fn count_within<T: Float>(
    x: Points<'_, T>,
    r2: &[f64],
    strict: bool,
    stop: &AtomicBool,
) -> Result<Vec<u64>> {
    if r2.len() != x.n {
        return Err(invalid!(
            "radii have length {} but there are {} points",
            r2.len(),
            x.n
        ));
    }
    let red = CountWithin {
        r2,
        strict,
        exclude_self: true,
    };
    Ok(reduce_rows_with(x, x, &red, stop, Some(true))?.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joint_knn_matches_naive_and_errors() {
        let n = 200;
        let mut s = 3u64;
        let mut r = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let x: Vec<f64> = (0..n).map(|_| r()).collect();
        let y: Vec<f64> = (0..2 * n).map(|_| r()).collect();
        let stop = AtomicBool::new(false);
        let px = Points::new(&x, n, 1).unwrap();
        let jt = Joint {
            rows: &y,
            cols: &y,
            d: 2,
        };
        let (d2, idx) = knn(px, px, 3, true, Some(jt), &stop).unwrap();
        for i in 0..n {
            let mut all: Vec<(f64, usize)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| {
                    let a = (x[i] - x[j]).powi(2);
                    let b = (y[2 * i] - y[2 * j]).powi(2) + (y[2 * i + 1] - y[2 * j + 1]).powi(2);
                    (a.max(b), j)
                })
                .collect();
            all.sort_by(|a, b| a.partial_cmp(b).unwrap());
            for t in 0..3 {
                assert_eq!(d2[i * 3 + t], all[t].0);
                assert_eq!(idx[i * 3 + t], all[t].1);
            }
        }
        let c = count_within(px, &vec![0.01; n], true, &stop).unwrap();
        let want = (0..n)
            .filter(|&j| j != 5 && (x[5] - x[j]).powi(2) < 0.01)
            .count() as u64;
        assert_eq!(c[5], want);
        let dup = vec![1.0; 4];
        let pd = Points::new(&dup, 4, 1).unwrap();
        assert!(knn(pd, pd, 1, true, None, &stop).is_err());
        assert!(knn(px, px, 0, true, None, &stop).is_err());
    }
}
