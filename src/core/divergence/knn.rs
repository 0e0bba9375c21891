//! k-nearest-neighbour quantities for the entropy, KL and mutual-information estimators:
//! an exact kd-tree (`pairwise::kdtree`) at low dimension, and brute force on the pairwise
//! engine's exact (direct-difference) distance path with the top-k and count reducers of
//! `pairwise::topk` otherwise. Both give bitwise-identical results (same distances, same
//! tie-breaking by column index). The finishing formulas live in Python.

use std::sync::atomic::AtomicBool;

use crate::core::error::{invalid, Result};
use crate::core::pairwise::kdtree::{self, KdTree};
use crate::core::pairwise::topk::{CountWithin, Joint, TopK};
use crate::core::pairwise::{reduce_rows_with, Float, Points};
use crate::core::threads;

/// Largest total dimension (both blocks) at which `Method::Auto` uses the kd-tree.
/// Measured on knn_kl with n = m = 20,000 Gaussian points, k = 5 (2 shared, noisy cores):
/// the tree is ~10x faster than brute force at d = 2, ~1.5x at d = 8, ~1.2-1.4x at d = 9-10,
/// and slower from d = 11 (about 0.75x) and d = 12 (about 0.55x) as pruning fades.
pub const TREE_MAX_D: usize = 10;

/// How neighbours are found. Every method gives identical results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// The kd-tree when the dimension is at most [`TREE_MAX_D`], else brute force.
    Auto,
    /// The kd-tree (brute force anyway when an input is not finite).
    Tree,
    /// Brute force on the engine.
    Brute,
}

impl Method {
    /// Parses "auto", "kd_tree" or "brute".
    pub fn parse(s: &str) -> Result<Method> {
        match s {
            "auto" => Ok(Method::Auto),
            "kd_tree" => Ok(Method::Tree),
            "brute" => Ok(Method::Brute),
            _ => Err(invalid!(
                "algorithm must be 'auto', 'kd_tree' or 'brute'; got {s:?}"
            )),
        }
    }

    /// Whether to use the tree for inputs of total dimension `dims`.
    fn tree(self, dims: usize, finite: bool) -> bool {
        // Non-finite inputs go to the engine, whose handling of them is the reference.
        finite
            && match self {
                Method::Auto => dims <= TREE_MAX_D,
                Method::Tree => true,
                Method::Brute => false,
            }
    }
}

fn finite<T: Float>(v: &[T]) -> bool {
    v.iter().all(|x| x.to_f64().is_finite())
}

/// The k smallest squared distances (ascending, `rows.n * k`) from each row point to the
/// column points, and the column indices, ignoring pairs at distance zero (duplicates, and
/// the point itself when `same`). With `joint`, distances are max(‖x_i − x_j‖, ‖u_i − u_j‖)
/// (squared) over the two coordinate blocks. Errors if a row has fewer than k columns at
/// positive distance. Ties are broken by the smaller column index. Memory: the output plus
/// one distance tile per task (brute force), or a tree-ordered copy of the columns (tree).
pub fn knn<T: Float>(
    rows: Points<'_, T>,
    cols: Points<'_, T>,
    k: usize,
    same: bool,
    joint: Option<Joint<'_>>,
    method: Method,
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
    if rows.d != cols.d {
        return Err(invalid!(
            "points have dimension {} but the other set has dimension {}",
            rows.d,
            cols.d
        ));
    }
    let dims = rows.d + joint.map_or(0, |j| j.d);
    let fin = finite(rows.data)
        && finite(cols.data)
        && joint.is_none_or(|j| finite(j.rows) && finite(j.cols));
    let (d2, idx) = if method.tree(dims, fin) {
        threads::check(stop)?;
        let tree = KdTree::build(cols, joint.map(|j| (j.cols, j.d)))?;
        let order = if same {
            tree.order().to_vec()
        } else {
            // Tree order of the rows too: consecutive queries visit the same leaves.
            KdTree::build(rows, joint.map(|j| (j.rows, j.d)))?
                .order()
                .to_vec()
        };
        threads::check(stop)?;
        kdtree::knn(&tree, rows, joint.map(|j| j.rows), &order, k, same, stop)?
    } else {
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
        (d2, idx)
    };
    if let Some(i) = (0..rows.n).find(|&i| d2[i * k + k - 1] == f64::INFINITY) {
        return Err(invalid!(
            "point {i} has fewer than k = {k} neighbours at positive distance (duplicates are \
             not neighbours); lower k or remove duplicated points"
        ));
    }
    Ok((d2, idx))
}

/// Per row point, the number of other points of the same set with squared distance below
/// (`strict`) or at most `r2[i]`. Memory: the output plus one tile per task (brute force)
/// or a tree-ordered copy of the points (tree).
pub fn count_within<T: Float>(
    x: Points<'_, T>,
    r2: &[f64],
    strict: bool,
    method: Method,
    stop: &AtomicBool,
) -> Result<Vec<u64>> {
    if r2.len() != x.n {
        return Err(invalid!(
            "radii have length {} but there are {} points",
            r2.len(),
            x.n
        ));
    }
    if method.tree(x.d, finite(x.data)) {
        threads::check(stop)?;
        let tree = KdTree::build(x, None)?;
        return kdtree::count_within(&tree, x, r2, strict, stop);
    }
    let red = CountWithin {
        r2,
        strict,
        exclude_self: true,
    };
    Ok(reduce_rows_with(x, x, &red, stop, Some(true))?.concat())
}

/// [`count_within`] for the rows `lo .. lo + r2.len()` of `x` only, against all of `x`
/// (one block of a distributed kNN estimator): the counts [`count_within`] gives those
/// rows (the same path, chosen from the whole set, and the same pairs). Memory: the
/// output plus one tile per task (brute force) or a tree-ordered copy of the points.
pub fn count_within_rows<T: Float>(
    x: Points<'_, T>,
    lo: usize,
    r2: &[f64],
    strict: bool,
    method: Method,
    stop: &AtomicBool,
) -> Result<Vec<u64>> {
    let hi = lo
        .checked_add(r2.len())
        .filter(|&h| h <= x.n)
        .ok_or_else(|| {
            invalid!(
                "rows {lo}.. with {} radii exceed the {} points",
                r2.len(),
                x.n
            )
        })?;
    if method.tree(x.d, finite(x.data)) {
        threads::check(stop)?;
        let tree = KdTree::build(x, None)?;
        return kdtree::count_within_rows(&tree, x, lo, r2, strict, stop);
    }
    // Brute force: every pair of the rows against all points, the point itself included
    // (at distance exactly 0, as the direct path computes it), then taken back out.
    let rows = Points {
        data: &x.data[lo * x.d..hi * x.d],
        n: hi - lo,
        d: x.d,
    };
    let red = CountWithin {
        r2,
        strict,
        exclude_self: false,
    };
    let mut out = reduce_rows_with(rows, x, &red, stop, Some(true))?.concat();
    for (c, &r) in out.iter_mut().zip(r2) {
        let own = if strict { 0.0 < r } else { 0.0 <= r };
        *c -= own as u64;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::Lcg;

    #[test]
    fn count_within_rows_gives_blocks_of_rows_their_counts() {
        let (n, d) = (300, 2);
        let mut g = Lcg::new(9);
        // Rounded coordinates: duplicates and points exactly on a radius.
        let x: Vec<f64> = (0..n * d).map(|_| (g.unit() * 8.0).round() / 8.0).collect();
        let r2: Vec<f64> = (0..n).map(|i| [0.0, 0.015625, 0.05, 0.2][i % 4]).collect();
        let px = Points::new(&x, n, d).unwrap();
        let stop = AtomicBool::new(false);
        for method in [Method::Tree, Method::Brute] {
            for strict in [true, false] {
                let all = count_within(px, &r2, strict, method, &stop).unwrap();
                for (lo, hi) in [(0, 300), (0, 0), (7, 150), (150, 300)] {
                    let part =
                        count_within_rows(px, lo, &r2[lo..hi], strict, method, &stop).unwrap();
                    assert_eq!(part, all[lo..hi], "{method:?} {strict} {lo}..{hi}");
                }
            }
        }
        assert!(count_within_rows(px, 299, &r2[..2], true, Method::Brute, &stop).is_err());
    }

    #[test]
    fn joint_knn_matches_naive_and_errors() {
        let n = 200;
        let mut g = Lcg::new(3);
        let x: Vec<f64> = (0..n).map(|_| g.unit()).collect();
        let y: Vec<f64> = (0..2 * n).map(|_| g.unit()).collect();
        let stop = AtomicBool::new(false);
        let px = Points::new(&x, n, 1).unwrap();
        let jt = Joint {
            rows: &y,
            cols: &y,
            d: 2,
        };
        let (d2, idx) = knn(px, px, 3, true, Some(jt), Method::Brute, &stop).unwrap();
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
        let c = count_within(px, &vec![0.01; n], true, Method::Auto, &stop).unwrap();
        let want = (0..n)
            .filter(|&j| j != 5 && (x[5] - x[j]).powi(2) < 0.01)
            .count() as u64;
        assert_eq!(c[5], want);
        let dup = vec![1.0; 4];
        let pd = Points::new(&dup, 4, 1).unwrap();
        for m in [Method::Brute, Method::Tree] {
            assert!(knn(pd, pd, 1, true, None, m, &stop).is_err());
            assert!(knn(px, px, 0, true, None, m, &stop).is_err());
        }
    }
}
