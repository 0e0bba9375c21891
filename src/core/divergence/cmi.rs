//! kNN conditional mutual information I(X; Y | Z) (Frenzel & Pompe 2007, the KSG-style
//! estimator, and its mixed discrete-continuous form), for the statistic and for many
//! permutations of X at once.
//!
//! Distances in the joint space are max(‖x_i − x_j‖, ‖y_i − y_j‖, ‖z_i − z_j‖) with
//! Euclidean norms in each block (the max-norm of the papers for 1-D blocks); the
//! subspaces (x, z), (y, z) and z use the restriction of that norm.
//!
//! Continuous (Frenzel–Pompe): with ε_i the joint distance to the k-th nearest neighbour
//! (points at distance zero are not neighbours, as in `knn_mi`) and n_xz, n_yz, n_z the
//! numbers of other points strictly within ε_i in each subspace,
//!   I = ψ(k) − ⟨ψ(n_xz + 1) + ψ(n_yz + 1) − ψ(n_z + 1)⟩.
//!
//! Mixed (Gao et al. 2017's form as in `knn_mi`, conditioned as Mesner & Shalizi 2020 do):
//! ρ_i is the k-th smallest joint distance counting points at distance zero. When ρ_i > 0,
//! k̃_i = k and the counts are of the points strictly within ρ_i; when ρ_i = 0, k̃_i and
//! the counts are of the points equal to point i (jointly, in (x, z), (y, z), z). Every
//! count includes the point itself, and I = ⟨ψ(k̃_i) − ψ(n_xz) − ψ(n_yz) + ψ(n_z)⟩. On
//! continuous data (no ties) this is Frenzel–Pompe; on discrete data with more than k
//! points per cell it is the plug-in estimate with digammas for logarithms.
//!
//! Two searches give the same counts bitwise: brute force (O(n²·(dx + dy + dz)) per
//! statistic, one row of block distances per task) and exact kd-trees (`blocktree`): a
//! tree over the joint points (rebuilt per permutation of x) for the k-th neighbour, and
//! one tree over z for the range counts, each z-neighbour's x and y distances checked
//! directly (the (x, z) and (y, z) balls lie inside the z ball). Either way the per-row
//! terms are summed in row order, so the result does not depend on the thread count or
//! on the search.

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use super::blocktree::{BlockTree, LEAF};
use super::knn::Method;
use super::mi_matrix::{digamma_table, RADIUS_MARGIN};
use crate::core::dcov::sums::Acc;
use crate::core::error::{invalid, try_vec, Result};
use crate::core::threads;

/// Rows per task.
const ROW_BLOCK: usize = 64;

/// Largest total dimension dx + dy + dz at which `Method::Auto` uses the trees.
/// Measured with n = 5000, dx = dy = 1, k = 5 (2 loaded cores): trees 0.45 s against
/// brute force 0.82 s at dz = 8, 0.59 s against 0.90 s at dz = 10, 1.31 s against 0.96 s
/// at dz = 14.
pub const CMI_TREE_MAX_D: usize = 12;

/// A block of coordinates: n rows of d values, row-major.
#[derive(Clone, Copy)]
pub struct Block<'a> {
    pub data: &'a [f64],
    pub d: usize,
}

impl Block<'_> {
    #[inline(always)]
    fn sq(&self, i: usize, j: usize) -> f64 {
        sq_rows(
            &self.data[i * self.d..(i + 1) * self.d],
            &self.data[j * self.d..(j + 1) * self.d],
        )
    }
}

/// Squared Euclidean distance, summed in order from 0.0 (as `blocktree::key`).
#[inline(always)]
fn sq_rows(a: &[f64], b: &[f64]) -> f64 {
    let mut s = 0.0;
    for (u, v) in a.iter().zip(b) {
        let t = u - v;
        s += t * t;
    }
    s
}

/// What a row's k-th neighbour gives: the radius (squared, margin applied) and whether
/// counts are strict; `None` when the row has fewer than k admissible neighbours.
#[inline(always)]
fn radius(kth: f64, mixed: bool) -> Option<(f64, bool)> {
    if kth == f64::INFINITY {
        None
    } else if mixed && kth == 0.0 {
        Some((0.0, false))
    } else {
        Some((kth * (1.0 - RADIUS_MARGIN), true))
    }
}

/// Counts of the other points inside the radius: in z, (x, z), (y, z) and jointly.
#[derive(Default, Clone, Copy)]
struct Counts {
    z: usize,
    xz: usize,
    yz: usize,
    xyz: usize,
}

impl Counts {
    #[inline(always)]
    fn add(&mut self, ix: bool, iy: bool) {
        self.z += 1;
        self.xz += ix as usize;
        self.yz += iy as usize;
        self.xyz += (ix && iy) as usize;
    }
}

/// The row's term: continuous ψ(n_xz + 1) + ψ(n_yz + 1) − ψ(n_z + 1); mixed
/// ψ(k̃) − ψ(n_xz + 1) − ψ(n_yz + 1) + ψ(n_z + 1) (counts here exclude the point).
#[inline(always)]
fn term(c: Counts, mixed: bool, zero: bool, k: usize, psi: &[f64]) -> f64 {
    if mixed {
        let kt = if zero { c.xyz + 1 } else { k };
        psi[kt] - psi[c.xz + 1] - psi[c.yz + 1] + psi[c.z + 1]
    } else {
        psi[c.xz + 1] + psi[c.yz + 1] - psi[c.z + 1]
    }
}

fn too_few(i: usize, k: usize) -> crate::core::error::Error {
    invalid!(
        "point {i} has fewer than k = {k} neighbours at positive distance in the joint \
         space (duplicates are not neighbours): mark discrete columns with \
         discrete_features, lower k, or remove duplicated points"
    )
}

/// Settings shared by every statistic of a call.
struct Setup<'a> {
    x: Block<'a>,
    y: Block<'a>,
    z: Block<'a>,
    k: usize,
    mixed: bool,
    psi: Vec<f64>,
}

/// The term of row i by brute force, with x permuted by `perm`.
fn row_term(
    i: usize,
    s: &Setup<'_>,
    perm: Option<&[u32]>,
    buf: &mut [Vec<f64>; 3],
    top: &mut Vec<f64>,
) -> Result<f64> {
    let (x, y, z, k) = (s.x, s.y, s.z, s.k);
    let n = x.data.len() / x.d;
    let px = |t: usize| perm.map_or(t, |p| p[t] as usize);
    let pi = px(i);
    top.clear();
    let [bx, by, bz] = buf;
    for j in 0..n {
        let (ax, ay, az) = if j == i {
            (0.0, 0.0, 0.0)
        } else {
            (x.sq(pi, px(j)), y.sq(i, j), z.sq(i, j))
        };
        bx[j] = ax;
        by[j] = ay;
        bz[j] = az;
        let m = ax.max(ay).max(az);
        if j != i && (m > 0.0 || s.mixed) && (top.len() < k || m < top[k - 1]) {
            // Insertion into the k smallest, ascending.
            let pos = top.partition_point(|&t| t <= m);
            if top.len() == k {
                top.pop();
            }
            top.insert(pos, m);
        }
    }
    let kth = if top.len() < k {
        f64::INFINITY
    } else {
        top[k - 1]
    };
    let (e, strict) = radius(kth, s.mixed).ok_or_else(|| too_few(i, k))?;
    let inside = |v: f64| if strict { v < e } else { v <= e };
    let mut c = Counts::default();
    for j in 0..n {
        if j != i && inside(bz[j]) {
            c.add(inside(bx[j]), inside(by[j]));
        }
    }
    Ok(term(c, s.mixed, !strict, k, &s.psi))
}

/// Per-row terms by brute force, in row order.
fn terms_brute(s: &Setup<'_>, perm: Option<&[u32]>, stop: &AtomicBool) -> Result<Vec<f64>> {
    let n = s.x.data.len() / s.x.d;
    let k = s.k;
    let blocks: Vec<Vec<f64>> = (0..n.div_ceil(ROW_BLOCK))
        .into_par_iter()
        .map_init(
            || {
                (
                    [vec![0.0; n], vec![0.0; n], vec![0.0; n]],
                    Vec::with_capacity(k + 1),
                )
            },
            |(buf, top), b| -> Result<Vec<f64>> {
                threads::check(stop)?;
                (b * ROW_BLOCK..((b + 1) * ROW_BLOCK).min(n))
                    .map(|i| row_term(i, s, perm, buf, top))
                    .collect()
            },
        )
        .collect::<Result<_>>()?;
    Ok(blocks.concat())
}

/// Queries per task in the tree searches (a fixed partition of tree order).
const QUERY_BLOCK: usize = 4 * LEAF;

/// The trees' shared part: the tree over z and y in its order.
struct ZTree {
    tree: BlockTree,
    y: Vec<f64>,
}

impl ZTree {
    fn new(s: &Setup<'_>) -> Result<ZTree> {
        let tree = BlockTree::build(&[(s.z, None)]);
        let dy = s.y.d;
        let mut y = try_vec(tree.len() * dy, 0.0, "the tree-ordered y")?;
        for (p, &i) in tree.order().iter().enumerate() {
            y[p * dy..(p + 1) * dy].copy_from_slice(&s.y.data[i * dy..(i + 1) * dy]);
        }
        Ok(ZTree { tree, y })
    }
}

/// Per-row terms by the trees, in row order.
fn terms_tree(
    s: &Setup<'_>,
    zt: &ZTree,
    perm: Option<&[u32]>,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    let n = zt.tree.len();
    let k = s.k;
    let nb = n.div_ceil(QUERY_BLOCK);
    // The k-th joint key of every row.
    let jt = BlockTree::build(&[(s.x, perm), (s.y, None), (s.z, None)]);
    let kth_parts: Vec<Vec<f64>> = (0..nb)
        .into_par_iter()
        .map_init(
            || {
                (
                    vec![0.0; k],
                    vec![0usize; k],
                    Vec::with_capacity(64),
                    Vec::new(),
                )
            },
            |(keys, idx, stack, qbuf), b| -> Result<Vec<f64>> {
                threads::check(stop)?;
                Ok((b * QUERY_BLOCK..((b + 1) * QUERY_BLOCK).min(n))
                    .map(|p| {
                        jt.knn(p, !s.mixed, keys, idx, stack, qbuf);
                        keys[k - 1]
                    })
                    .collect())
            },
        )
        .collect::<Result<_>>()?;
    let mut kth = try_vec(n, 0.0, "the neighbour radii")?;
    for (p, v) in kth_parts.into_iter().flatten().enumerate() {
        kth[jt.order()[p]] = v;
    }
    drop(jt);
    // x (permuted) in the z tree's order.
    let dx = s.x.d;
    let mut xg = try_vec(n * dx, 0.0, "the tree-ordered x")?;
    for (p, &i) in zt.tree.order().iter().enumerate() {
        let r = perm.map_or(i, |m| m[i] as usize);
        xg[p * dx..(p + 1) * dx].copy_from_slice(&s.x.data[r * dx..(r + 1) * dx]);
    }
    let dy = s.y.d;
    let parts: Vec<Vec<(usize, f64)>> = (0..nb)
        .into_par_iter()
        .map_init(
            || (Vec::with_capacity(64), Vec::new()),
            |(stack, qbuf), b| -> Result<Vec<(usize, f64)>> {
                threads::check(stop)?;
                (b * QUERY_BLOCK..((b + 1) * QUERY_BLOCK).min(n))
                    .map(|p| {
                        let i = zt.tree.order()[p];
                        let (e, strict) = radius(kth[i], s.mixed).ok_or_else(|| too_few(i, k))?;
                        let inside = |v: f64| if strict { v < e } else { v <= e };
                        let (qx, qy) = (&xg[p * dx..(p + 1) * dx], &zt.y[p * dy..(p + 1) * dy]);
                        let mut c = Counts::default();
                        zt.tree.within(p, e, strict, stack, qbuf, |t| {
                            let ax = sq_rows(qx, &xg[t * dx..(t + 1) * dx]);
                            let ay = sq_rows(qy, &zt.y[t * dy..(t + 1) * dy]);
                            c.add(inside(ax), inside(ay));
                        });
                        Ok((i, term(c, s.mixed, !strict, k, &s.psi)))
                    })
                    .collect()
            },
        )
        .collect::<Result<_>>()?;
    let mut out = kth;
    for (i, v) in parts.into_iter().flatten() {
        out[i] = v;
    }
    Ok(out)
}

fn check_blocks(x: Block<'_>, y: Block<'_>, z: Block<'_>) -> Result<usize> {
    if x.d == 0 || y.d == 0 || z.d == 0 {
        return Err(invalid!("x, y and z need at least one coordinate each"));
    }
    let n = x.data.len() / x.d;
    if x.data.len() != n * x.d || y.data.len() != n * y.d || z.data.len() != n * z.d {
        return Err(invalid!(
            "x, y and z must have the same number of observations"
        ));
    }
    if [x, y, z]
        .iter()
        .any(|b| b.data.iter().any(|v| !v.is_finite()))
    {
        return Err(invalid!("x, y and z must be finite"));
    }
    Ok(n)
}

/// I(X; Y | Z) in nats for x as given, then for x permuted by each row of `perms`
/// (`n_perms` × n indices, x'_i = x_{perm[i]}): a vector of 1 + n_perms estimates.
/// `mixed` selects the mixed discrete-continuous estimator; `method` the search
/// (identical results). Memory: brute force 3n values per task; the trees a tree-ordered
/// copy of (x, y, z) and of z (16 bytes per value, plus boxes), and 2n values.
#[allow(clippy::too_many_arguments)]
pub fn cmi_stats(
    x: Block<'_>,
    y: Block<'_>,
    z: Block<'_>,
    k: usize,
    perms: &[u32],
    mixed: bool,
    method: Method,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    let n = check_blocks(x, y, z)?;
    if k == 0 || k >= n {
        return Err(invalid!(
            "k must be at least 1 and smaller than the number of observations ({n}); got {k}"
        ));
    }
    if !perms.len().is_multiple_of(n) || perms.iter().any(|&p| p as usize >= n) {
        return Err(invalid!(
            "permutation indices must be in [0, n), n per permutation"
        ));
    }
    let s = Setup {
        x,
        y,
        z,
        k,
        mixed,
        psi: digamma_table(n + 1),
    };
    let tree = match method {
        Method::Auto => x.d + y.d + z.d <= CMI_TREE_MAX_D,
        Method::Tree => true,
        Method::Brute => false,
    };
    threads::install(|| -> Result<Vec<f64>> {
        let zt = if tree { Some(ZTree::new(&s)?) } else { None };
        let mut out = Vec::with_capacity(1 + perms.len() / n);
        let perm_iter = std::iter::once(None).chain(perms.chunks_exact(n).map(Some));
        for p in perm_iter {
            let t = match &zt {
                Some(zt) => terms_tree(&s, zt, p, stop)?,
                None => terms_brute(&s, p, stop)?,
            };
            let mut acc = Acc::default();
            for v in &t {
                acc.add(*v);
            }
            let mean = acc.value() / n as f64;
            out.push(if mixed { mean } else { s.psi[k] - mean });
        }
        Ok(out)
    })?
}

/// The k nearest neighbours in z of every point (n × k original indices, nearest first,
/// ties by index), points equal to it included (but not itself), found with the z tree.
pub fn z_neighbours(z: Block<'_>, k: usize, stop: &AtomicBool) -> Result<Vec<usize>> {
    if z.d == 0 || !z.data.len().is_multiple_of(z.d) {
        return Err(invalid!("z needs at least one coordinate"));
    }
    let n = z.data.len() / z.d;
    if k == 0 || k >= n {
        return Err(invalid!(
            "the number of neighbours must be at least 1 and smaller than the number of \
             observations ({n}); got {k}"
        ));
    }
    if z.data.iter().any(|v| !v.is_finite()) {
        return Err(invalid!("z must be finite"));
    }
    let mut out = try_vec(n * k, 0usize, "the neighbour lists")?;
    threads::install(|| -> Result<()> {
        let t = BlockTree::build(&[(z, None)]);
        let nb = n.div_ceil(QUERY_BLOCK);
        let parts: Vec<(Vec<usize>, Vec<usize>)> = (0..nb)
            .into_par_iter()
            .map_init(
                || (vec![0.0; k], Vec::with_capacity(64), Vec::new()),
                |(keys, stack, qbuf), b| -> Result<(Vec<usize>, Vec<usize>)> {
                    threads::check(stop)?;
                    let ps = b * QUERY_BLOCK..((b + 1) * QUERY_BLOCK).min(n);
                    let mut idx = vec![0usize; ps.len() * k];
                    let rows: Vec<usize> = ps.clone().map(|p| t.order()[p]).collect();
                    for (r, p) in ps.enumerate() {
                        t.knn(p, false, keys, &mut idx[r * k..(r + 1) * k], stack, qbuf);
                    }
                    Ok((rows, idx))
                },
            )
            .collect::<Result<_>>()?;
        for (rows, idx) in parts {
            for (r, &i) in rows.iter().enumerate() {
                out[i * k..(i + 1) * k].copy_from_slice(&idx[r * k..(r + 1) * k]);
            }
        }
        Ok(())
    })??;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::Lcg;

    /// Against a direct transcription of the definition (all pairs, sorted distances).
    #[test]
    fn matches_the_definition_and_threads() {
        let n = 120;
        let mut g = Lcg::new(5);
        let z: Vec<f64> = (0..2 * n).map(|_| g.unit()).collect();
        let x: Vec<f64> = (0..n).map(|i| z[2 * i] + 0.5 * g.unit()).collect();
        let y: Vec<f64> = (0..n)
            .map(|i| z[2 * i + 1] - x[i] + 0.5 * g.unit())
            .collect();
        let (bx, by, bz) = (
            Block { data: &x, d: 1 },
            Block { data: &y, d: 1 },
            Block { data: &z, d: 2 },
        );
        let stop = AtomicBool::new(false);
        let perm: Vec<u32> = (0..n as u32).rev().collect();
        let got = cmi_stats(bx, by, bz, 4, &perm, false, Method::Brute, &stop).unwrap();
        threads::set_num_threads(1).unwrap();
        let one = cmi_stats(bx, by, bz, 4, &perm, false, Method::Brute, &stop).unwrap();
        threads::set_num_threads(2).unwrap();
        assert_eq!(got, one);
        let tree = cmi_stats(bx, by, bz, 4, &perm, false, Method::Tree, &stop).unwrap();
        assert_eq!(got, tree);
        let psi = digamma_table(n + 1);
        for (t, xs) in [x.clone(), perm.iter().map(|&p| x[p as usize]).collect()]
            .iter()
            .enumerate()
        {
            let mut s = 0.0;
            for i in 0..n {
                let dz = |j: usize| {
                    (z[2 * i] - z[2 * j]).powi(2) + (z[2 * i + 1] - z[2 * j + 1]).powi(2)
                };
                let dx = |j: usize| (xs[i] - xs[j]).powi(2);
                let dy = |j: usize| (y[i] - y[j]).powi(2);
                let mut all: Vec<f64> = (0..n)
                    .filter(|&j| j != i)
                    .map(|j| dx(j).max(dy(j)).max(dz(j)))
                    .collect();
                all.sort_by(|a, b| a.total_cmp(b));
                let e = all[3] * (1.0 - RADIUS_MARGIN);
                let c = |f: &dyn Fn(usize) -> f64| (0..n).filter(|&j| j != i && f(j) < e).count();
                let nxz = c(&|j| dx(j).max(dz(j)));
                let nyz = c(&|j| dy(j).max(dz(j)));
                let nz = c(&|j| dz(j));
                s += psi[nxz + 1] + psi[nyz + 1] - psi[nz + 1];
            }
            let want = psi[4] - s / n as f64;
            assert!((got[t] - want).abs() < 1e-12, "{} vs {want}", got[t]);
        }
        for m in [Method::Brute, Method::Tree] {
            assert!(cmi_stats(bx, by, bz, n, &[], false, m, &stop).is_err());
            assert!(cmi_stats(bx, by, bz, 3, &[n as u32], false, m, &stop).is_err());
        }
    }

    /// Data on a coarse grid: duplicates, tied distances and points exactly on radii.
    fn tied(n: usize, d: usize, levels: f64, g: &mut Lcg) -> Vec<f64> {
        (0..n * d).map(|_| (g.unit() * levels).floor()).collect()
    }

    /// The trees give the brute-force counts exactly (bitwise equal estimates), with and
    /// without ties, continuous and mixed, for several block dimensions and permutations.
    #[test]
    fn tree_equals_brute_force_bitwise() {
        let stop = AtomicBool::new(false);
        let mut g = Lcg::new(17);
        for &(dx, dy, dz) in &[(1usize, 1usize, 1usize), (1, 1, 3), (2, 1, 5), (1, 3, 2)] {
            for &levels in &[0.0, 7.0, 3.0] {
                let n = 700;
                let mk = |d: usize, g: &mut Lcg| {
                    if levels > 0.0 {
                        tied(n, d, levels, g)
                    } else {
                        (0..n * d).map(|_| g.unit() - 0.5).collect::<Vec<f64>>()
                    }
                };
                let z = mk(dz, &mut g);
                let mut x = mk(dx, &mut g);
                for i in 0..n {
                    x[i * dx] += z[i * dz];
                }
                let y = mk(dy, &mut g);
                let (bx, by, bz) = (
                    Block { data: &x, d: dx },
                    Block { data: &y, d: dy },
                    Block { data: &z, d: dz },
                );
                let mut perm: Vec<u32> = (0..n as u32).collect();
                for i in (1..n).rev() {
                    perm.swap(i, (g.unit() * (i + 1) as f64) as usize % (i + 1));
                }
                for k in [1usize, 4, 10] {
                    for mixed in [false, true] {
                        let a = cmi_stats(bx, by, bz, k, &perm, mixed, Method::Brute, &stop);
                        let b = cmi_stats(bx, by, bz, k, &perm, mixed, Method::Tree, &stop);
                        match (a, b) {
                            (Ok(a), Ok(b)) => assert_eq!(a, b, "{dx} {dy} {dz} {levels} {k}"),
                            (Err(_), Err(_)) => assert!(!mixed && levels > 0.0),
                            _ => panic!("one search failed: {dx} {dy} {dz} {levels} {k}"),
                        }
                    }
                }
            }
        }
    }

    /// The mixed estimator on continuous data is Frenzel–Pompe; on discrete data with more
    /// than k points per cell, the plug-in estimate with digammas.
    #[test]
    fn mixed_reduces_to_known_forms() {
        let stop = AtomicBool::new(false);
        let mut g = Lcg::new(3);
        let n = 400;
        let z: Vec<f64> = (0..n).map(|_| g.unit()).collect();
        let x: Vec<f64> = z.iter().map(|v| v + g.unit()).collect();
        let y: Vec<f64> = x.iter().map(|v| v + g.unit()).collect();
        let (bx, by, bz) = (
            Block { data: &x, d: 1 },
            Block { data: &y, d: 1 },
            Block { data: &z, d: 1 },
        );
        let fp = cmi_stats(bx, by, bz, 3, &[], false, Method::Tree, &stop).unwrap();
        let mx = cmi_stats(bx, by, bz, 3, &[], true, Method::Tree, &stop).unwrap();
        assert!((fp[0] - mx[0]).abs() < 1e-12, "{fp:?} {mx:?}");
        let zd: Vec<f64> = (0..n).map(|i| (i % 3) as f64).collect();
        let xd: Vec<f64> = (0..n).map(|i| ((i / 3) % 2) as f64).collect();
        let yd: Vec<f64> = (0..n).map(|i| ((i * 7 / 5 + i / 3) % 3) as f64).collect();
        let (bx, by, bz) = (
            Block { data: &xd, d: 1 },
            Block { data: &yd, d: 1 },
            Block { data: &zd, d: 1 },
        );
        let got = cmi_stats(bx, by, bz, 3, &[], true, Method::Tree, &stop).unwrap()[0];
        let psi = digamma_table(n + 1);
        let cnt = |f: &dyn Fn(usize) -> bool| (0..n).filter(|&j| f(j)).count();
        let mut want = 0.0;
        for i in 0..n {
            let nxyz = cnt(&|j| xd[j] == xd[i] && yd[j] == yd[i] && zd[j] == zd[i]);
            assert!(nxyz > 3);
            let nxz = cnt(&|j| xd[j] == xd[i] && zd[j] == zd[i]);
            let nyz = cnt(&|j| yd[j] == yd[i] && zd[j] == zd[i]);
            let nz = cnt(&|j| zd[j] == zd[i]);
            want += psi[nxyz] - psi[nxz] - psi[nyz] + psi[nz];
        }
        want /= n as f64;
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        // The continuous estimator is far off on such data (duplicates are not
        // neighbours), and refuses data where a point has too few distinct neighbours,
        // naming discrete_features.
        let c = cmi_stats(bx, by, bz, 3, &[], false, Method::Tree, &stop).unwrap()[0];
        assert!(c < want - 1.0, "{c} vs {want}");
        let two = vec![1.0; n];
        let b2 = Block { data: &two, d: 1 };
        for m in [Method::Tree, Method::Brute] {
            let e = cmi_stats(b2, b2, b2, 3, &[], false, m, &stop).unwrap_err();
            assert!(format!("{e:?}").contains("discrete_features"));
        }
    }

    #[test]
    fn z_neighbours_equal_a_sort() {
        let stop = AtomicBool::new(false);
        let mut g = Lcg::new(8);
        for &(d, levels) in &[(1usize, 0.0), (2, 4.0), (3, 0.0)] {
            let n = 500;
            let z: Vec<f64> = if levels > 0.0 {
                tied(n, d, levels, &mut g)
            } else {
                (0..n * d).map(|_| g.unit()).collect()
            };
            let k = 6;
            let got = z_neighbours(Block { data: &z, d }, k, &stop).unwrap();
            for i in 0..n {
                let mut all: Vec<(f64, usize)> = (0..n)
                    .filter(|&j| j != i)
                    .map(|j| (sq_rows(&z[i * d..(i + 1) * d], &z[j * d..(j + 1) * d]), j))
                    .collect();
                all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                let want: Vec<usize> = all[..k].iter().map(|t| t.1).collect();
                assert_eq!(&got[i * k..(i + 1) * k], &want[..]);
            }
        }
        let z = [0.0, 1.0];
        assert!(z_neighbours(Block { data: &z, d: 1 }, 2, &stop).is_err());
        let stopped = AtomicBool::new(true);
        let z: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        assert!(z_neighbours(Block { data: &z, d: 1 }, 2, &stopped).is_err());
    }
}
