//! kNN mutual information between every pair of 1-D columns (or each column of X with
//! each column of Y).
//!
//! Each column is sorted once; a pair then costs one joint kNN search in the plane with
//! the max-norm (the exact kd-tree of `pairwise::kdtree`, the same distances and ties as
//! `divest.knn_mi`) and two binary searches per point in the sorted columns for the
//! marginal counts (a 1-D ball is an interval of the sorted column, and the computed
//! squared difference is monotone on either side of the centre, so the counts are those
//! of `count_within` exactly).
//!
//! Continuous pairs use KSG-1 (Kraskov et al. 2004):
//!   I = ψ(k) + ψ(n) − ⟨ψ(n_x + 1) + ψ(n_y + 1)⟩, with strict counts within the joint radius,
//! or KSG-2: I = ψ(k) − 1/k + ψ(n) − ⟨ψ(n_x) + ψ(n_y)⟩, where ε_x(i) is the largest
//! x-distance among the joint neighbours (every point at positive joint distance at most
//! the k-th smallest, within the radius margin: points tied with the k-th are all
//! included, as `divest.knn_mi(variant=2)` does) and n_x counts the other points with
//! x-distance at most ε_x(i). A row whose (k + 1)-th neighbour ties the k-th scans the
//! interval of the sorted x column within the joint radius for the whole set.
//! Pairs with a column marked discrete use the mixture estimator of Gao, Kannan, Oh and
//! Viswanath (2017) in the form of the authors' reference code: ρ_i is the k-th smallest
//! joint distance to the other points counting exact duplicates (distance 0); when
//! ρ_i > 0, k̃_i = k and n_x, n_y count the points strictly within ρ_i in each marginal;
//! when ρ_i = 0, k̃_i, n_x, n_y count the points equal to point i in the joint space and
//! in each marginal (the point itself included in every count), and
//!   I = ⟨ψ(k̃_i) + ln n − ψ(n_x) − ψ(n_y)⟩.

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use crate::core::dcov::sums::Acc;
use crate::core::error::{invalid, try_vec, Result};
use crate::core::pairwise::kdtree::{self, KdTree};
use crate::core::pairwise::Points;
use crate::core::threads;

/// Relative margin on radii (as `divest.knn_mi`): strict counts use r²(1 − m), inclusive
/// counts r²(1 + m), so points exactly on a radius are classified consistently.
pub const RADIUS_MARGIN: f64 = 1e-13;

const EULER: f64 = 0.577_215_664_901_532_9;

/// ψ(m) for m = 0..=n (ψ(0) unused): −γ + Σ_{j<m} 1/j, summed in order.
pub(crate) fn digamma_table(n: usize) -> Vec<f64> {
    let mut t = Vec::with_capacity(n + 1);
    t.push(f64::NAN);
    let mut h = 0.0;
    for m in 1..=n {
        t.push(h - EULER);
        h += 1.0 / m as f64;
    }
    t
}

/// Positions `lo..hi` of the entries s of the sorted column with (v − s)² below r2
/// (`strict`) or at most r2.
fn interval(sorted: &[f64], v: f64, r2: f64, strict: bool) -> (usize, usize) {
    let inside = |s: f64| {
        let d = v - s;
        let d2 = d * d;
        if strict {
            d2 < r2
        } else {
            d2 <= r2
        }
    };
    // Left part (values <= v): the squared difference does not increase along it.
    let mid = sorted.partition_point(|&s| s <= v);
    let lo = sorted[..mid].partition_point(|&s| !inside(s));
    let hi = sorted[mid..].partition_point(|&s| inside(s));
    (lo, mid + hi)
}

/// Number of entries s of the sorted column with (v − s)² below r2 (`strict`) or at most
/// r2, v included.
fn count(sorted: &[f64], v: f64, r2: f64, strict: bool) -> usize {
    let (lo, hi) = interval(sorted, v, r2, strict);
    hi - lo
}

/// A prepared column: its values by index, sorted, and (for KSG-2) the sort order.
pub struct Column<'a> {
    v: &'a [f64],
    sorted: Vec<f64>,
    ord: Vec<u32>,
}

impl<'a> Column<'a> {
    fn new(v: &'a [f64], with_order: bool) -> Self {
        if with_order {
            let mut ord: Vec<u32> = (0..v.len() as u32).collect();
            ord.sort_unstable_by(|&a, &b| v[a as usize].total_cmp(&v[b as usize]));
            let sorted = ord.iter().map(|&i| v[i as usize]).collect();
            Column { v, sorted, ord }
        } else {
            let mut sorted = v.to_vec();
            sorted.sort_unstable_by(|a, b| a.total_cmp(b));
            Column {
                v,
                sorted,
                ord: Vec::new(),
            }
        }
    }
}

/// Per point, the number of other points equal to it in both columns.
fn joint_duplicates(x: &[f64], y: &[f64]) -> Vec<usize> {
    let n = x.len();
    let mut ord: Vec<usize> = (0..n).collect();
    ord.sort_unstable_by(|&a, &b| x[a].total_cmp(&x[b]).then(y[a].total_cmp(&y[b])));
    let mut dup = vec![0usize; n];
    let mut s = 0;
    while s < n {
        let mut e = s + 1;
        while e < n && x[ord[e]] == x[ord[s]] && y[ord[e]] == y[ord[s]] {
            e += 1;
        }
        for &i in &ord[s..e] {
            dup[i] = e - s - 1;
        }
        s = e;
    }
    dup
}

/// Tables shared by every pair.
struct Tables {
    psi: Vec<f64>,
    ln: Vec<f64>,
}

/// The estimate for one pair of columns (`ci`, `cj` name them in errors).
#[allow(clippy::too_many_arguments)]
fn pair(
    x: &Column<'_>,
    y: &Column<'_>,
    k: usize,
    mixed: bool,
    ksg2: bool,
    t: &Tables,
    names: (&str, usize, &str, usize),
    stop: &AtomicBool,
) -> Result<f64> {
    let n = x.v.len();
    let px = Points::new(x.v, n, 1)?;
    let dup = if mixed {
        joint_duplicates(x.v, y.v)
    } else {
        Vec::new()
    };
    // Positive-distance neighbours needed: k for KSG-1, k + 1 for KSG-2 (a (k + 1)-th
    // beyond the radius proves the k nearest are the whole neighbour set), k − duplicates
    // for the mixture.
    let ksg2 = ksg2 && !mixed;
    let need = if mixed {
        dup.iter().map(|&d| k.saturating_sub(d)).max().unwrap_or(0)
    } else {
        k + ksg2 as usize
    };
    let (d2, idx, kk) = if need > 0 {
        let tree = KdTree::build(px, Some((y.v, 1)))?;
        let order = tree.order().to_vec();
        let (d2, idx) = kdtree::knn(&tree, px, Some(y.v), &order, need, true, stop)?;
        (d2, idx, need)
    } else {
        (Vec::new(), Vec::new(), 0)
    };
    let mut acc = Acc::default();
    for i in 0..n {
        let (xi, yi) = (x.v[i], y.v[i]);
        if mixed {
            // Counts include the point itself.
            let (kt, nx, ny) = if dup[i] >= k {
                (
                    dup[i] + 1,
                    count(&x.sorted, xi, 0.0, false),
                    count(&y.sorted, yi, 0.0, false),
                )
            } else {
                let rho2 = d2[i * kk + (k - dup[i]) - 1] * (1.0 - RADIUS_MARGIN);
                (
                    k,
                    count(&x.sorted, xi, rho2, true),
                    count(&y.sorted, yi, rho2, true),
                )
            };
            acc.add(t.psi[kt] + t.ln[n] - t.psi[nx] - t.psi[ny]);
        } else {
            let r = d2[i * kk + k - 1];
            if r == f64::INFINITY {
                return Err(invalid!(
                    "{}[:, {}] and {}[:, {}]: point {i} has fewer than k = {k} neighbours at \
                     positive distance (the columns have ties: mark discrete columns with \
                     discrete_features, or lower k)",
                    names.0,
                    names.1,
                    names.2,
                    names.3
                ));
            }
            if ksg2 {
                let (ex2, ey2) = ksg2_radii(x, y, i, r, &d2[i * kk..(i + 1) * kk], &idx[i * kk..]);
                let nx = count(&x.sorted, xi, ex2 * (1.0 + RADIUS_MARGIN), false) - 1;
                let ny = count(&y.sorted, yi, ey2 * (1.0 + RADIUS_MARGIN), false) - 1;
                acc.add(t.psi[nx] + t.psi[ny]);
                continue;
            }
            let eps2 = r * (1.0 - RADIUS_MARGIN);
            let nx = count(&x.sorted, xi, eps2, true) - 1;
            let ny = count(&y.sorted, yi, eps2, true) - 1;
            acc.add(t.psi[nx + 1] + t.psi[ny + 1]);
        }
    }
    let mean = acc.value() / n as f64;
    Ok(if mixed {
        mean
    } else if ksg2 {
        t.psi[k] - 1.0 / k as f64 + t.psi[n] - mean
    } else {
        t.psi[k] + t.psi[n] - mean
    })
}

/// KSG-2's squared marginal radii of point `i`: the largest squared x- and y-distances
/// over every point at positive joint squared distance at most eps2·(1 + margin). `d2`
/// and `idx` are the row's k + 1 nearest (ascending); when the (k + 1)-th lies beyond
/// that radius the set is the k nearest, else the sorted x column's interval within the
/// radius is scanned.
fn ksg2_radii(
    x: &Column<'_>,
    y: &Column<'_>,
    i: usize,
    eps2: f64,
    d2: &[f64],
    idx: &[usize],
) -> (f64, f64) {
    let (xi, yi) = (x.v[i], y.v[i]);
    let thr = eps2 * (1.0 + RADIUS_MARGIN);
    let k = d2.len() - 1;
    let (mut ex2, mut ey2) = (0.0f64, 0.0f64);
    if d2[k] > thr {
        for &j in &idx[..k] {
            let (dx, dy) = (xi - x.v[j], yi - y.v[j]);
            ex2 = ex2.max(dx * dx);
            ey2 = ey2.max(dy * dy);
        }
        return (ex2, ey2);
    }
    let (lo, hi) = interval(&x.sorted, xi, thr, false);
    for &j in &x.ord[lo..hi] {
        let j = j as usize;
        let (dx, dy) = (xi - x.v[j], yi - y.v[j]);
        let (ax, ay) = (dx * dx, dy * dy);
        let m = ax.max(ay);
        if m > 0.0 && m <= thr {
            ex2 = ex2.max(ax);
            ey2 = ey2.max(ay);
        }
    }
    (ex2, ey2)
}

/// kNN mutual information between the columns of `x` (`p` columns of `n` values, each
/// contiguous) and those of `y` (`Some((values, q))`), or between every pair of columns of
/// `x` (`None`; the diagonal is the estimator applied to a column and itself). A pair
/// with a column marked in `discrete_x` / `discrete_y` uses the mixture estimator, others
/// KSG-1 (`variant` 1) or KSG-2 (`variant` 2). Returns the p × q matrix, row-major, in nats.
///
/// Memory: a sorted copy of every column (8 bytes per value), the output, and per task
/// the kd-tree and neighbour lists of one pair (O(n·k)).
#[allow(clippy::too_many_arguments)]
pub fn mi_matrix(
    x: &[f64],
    p: usize,
    y: Option<(&[f64], usize)>,
    n: usize,
    k: usize,
    discrete_x: &[bool],
    discrete_y: &[bool],
    variant: u8,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    if variant != 1 && variant != 2 {
        return Err(invalid!(
            "variant must be 1 (KSG-1) or 2 (KSG-2); got {variant}"
        ));
    }
    let ksg2 = variant == 2;
    if k == 0 || k >= n {
        return Err(invalid!(
            "k must be at least 1 and smaller than the number of observations ({n}); got {k}"
        ));
    }
    let q = y.map_or(p, |(_, q)| q);
    if x.len() != p * n
        || y.is_some_and(|(v, q)| v.len() != q * n)
        || discrete_x.len() != p
        || discrete_y.len() != q
    {
        return Err(invalid!("column data have the wrong length"));
    }
    if x.iter()
        .chain(y.map_or(&[][..], |(v, _)| v))
        .any(|v| !v.is_finite())
    {
        return Err(invalid!("the columns must be finite"));
    }
    let sym = y.is_none();
    let mut out = try_vec(
        crate::core::error::checked_size(p, q, "the MI matrix")?,
        0.0f64,
        "the MI matrix",
    )?;
    if p == 0 || q == 0 {
        return Ok(out);
    }
    let t = Tables {
        psi: digamma_table(n + 1),
        ln: (0..=n).map(|m| (m as f64).ln()).collect(),
    };
    let (ny_name, ys) = match y {
        Some((v, _)) => ("Y", v),
        None => ("X", x),
    };
    threads::install(|| -> Result<()> {
        fn prep(v: &[f64], k: usize, n: usize, ord: bool) -> Vec<Column<'_>> {
            (0..k)
                .into_par_iter()
                .map(|j| Column::new(&v[j * n..(j + 1) * n], ord))
                .collect()
        }
        let cx = prep(x, p, n, ksg2);
        let cy = if sym {
            Vec::new()
        } else {
            prep(ys, q, n, ksg2)
        };
        let cy_ref = if sym { &cx } else { &cy };
        out.par_chunks_mut(q)
            .enumerate()
            .try_for_each(|(i, row)| -> Result<()> {
                let start = if sym { i } else { 0 };
                for (j, o) in row.iter_mut().enumerate().skip(start) {
                    threads::check(stop)?;
                    let mixed = discrete_x[i] || discrete_y[j];
                    *o = pair(
                        &cx[i],
                        &cy_ref[j],
                        k,
                        mixed,
                        ksg2,
                        &t,
                        ("X", i, ny_name, j),
                        stop,
                    )?;
                }
                Ok(())
            })
    })??;
    if sym {
        for i in 0..q {
            for j in 0..i {
                out[i * q + j] = out[j * q + i];
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::Lcg;

    #[test]
    fn counts_match_a_scan() {
        let mut g = Lcg::new(9);
        let v: Vec<f64> = (0..300).map(|_| (g.unit() * 20.0).round() / 4.0).collect();
        let mut s = v.clone();
        s.sort_by(|a, b| a.total_cmp(b));
        for &c in &v[..50] {
            for &r2 in &[0.0, 0.0625, 0.3, 4.0, 1e9] {
                for strict in [true, false] {
                    let want = v
                        .iter()
                        .filter(|&&u| {
                            let d2 = (c - u) * (c - u);
                            if strict {
                                d2 < r2
                            } else {
                                d2 <= r2
                            }
                        })
                        .count();
                    assert_eq!(count(&s, c, r2, strict), want);
                }
            }
        }
    }

    /// On fully discrete data with more than k points per cell the mixture estimator is
    /// the plug-in estimate with digammas for logarithms.
    #[test]
    fn discrete_pairs_give_the_plugin_estimate() {
        let stop = AtomicBool::new(false);
        let n = 400;
        let x: Vec<f64> = (0..n).map(|i| (i % 4) as f64).collect();
        let y: Vec<f64> = (0..n).map(|i| ((i / 4 + i) % 2) as f64).collect();
        let mut data = x.clone();
        data.extend(&y);
        let m = mi_matrix(&data, 2, None, n, 3, &[true, true], &[true, true], 1, &stop).unwrap();
        // ψ(n_xy) + ln n − ψ(n_x) − ψ(n_y), averaged (cell counts include the point).
        let mut cell = std::collections::HashMap::new();
        for i in 0..n {
            *cell.entry((x[i] as i64, y[i] as i64)).or_insert(0usize) += 1;
        }
        let psi = digamma_table(n + 1);
        let mut want = 0.0;
        for i in 0..n {
            let nxy = cell[&(x[i] as i64, y[i] as i64)];
            let nx = x.iter().filter(|&&u| u == x[i]).count();
            let ny = y.iter().filter(|&&u| u == y[i]).count();
            want += psi[nxy] + (n as f64).ln() - psi[nx] - psi[ny];
        }
        want /= n as f64;
        assert!((m[1] - want).abs() < 1e-12, "{} vs {want}", m[1]);
        assert_eq!(m[1], m[2]);
        // The continuous estimator on these columns is far off (negative here) ...
        let c = mi_matrix(
            &data,
            2,
            None,
            n,
            3,
            &[false, false],
            &[false, false],
            1,
            &stop,
        );
        assert!(c.unwrap()[1] < 0.0);
        // ... and where no point has k neighbours at positive distance, a clear error
        // naming discrete_features.
        let ones = vec![1.0; 2 * n];
        let e = mi_matrix(
            &ones,
            2,
            None,
            n,
            3,
            &[false, false],
            &[false, false],
            1,
            &stop,
        );
        assert!(format!("{:?}", e.unwrap_err()).contains("discrete_features"));
    }
}
