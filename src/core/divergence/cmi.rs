//! kNN conditional mutual information I(X; Y | Z) (Frenzel & Pompe 2007, the KSG-style
//! estimator), for the statistic and for many permutations of X at once.
//!
//! Distances in the joint space are max(‖x_i − x_j‖, ‖y_i − y_j‖, ‖z_i − z_j‖) with
//! Euclidean norms in each block (the max-norm of the papers for 1-D blocks); the
//! subspaces (x, z), (y, z) and z use the restriction of that norm. With ε_i the joint
//! distance to the k-th nearest neighbour (points at distance zero are not neighbours, as
//! in `knn_mi`) and n_xz, n_yz, n_z the numbers of other points strictly within ε_i in
//! each subspace,
//!   I = ψ(k) − ⟨ψ(n_xz + 1) + ψ(n_yz + 1) − ψ(n_z + 1)⟩.
//!
//! Brute force: O(n²·(dx + dy + dz)) time per statistic, one row of block distances (3n
//! values) per task; rows run in fixed blocks in parallel and the per-row terms are summed
//! in row order, so the result does not depend on the thread count.

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use super::mi_matrix::{digamma_table, RADIUS_MARGIN};
use crate::core::dcov::sums::Acc;
use crate::core::error::{invalid, Result};
use crate::core::threads;

/// Rows per task.
const ROW_BLOCK: usize = 64;

/// A block of coordinates: n rows of d values, row-major.
#[derive(Clone, Copy)]
pub struct Block<'a> {
    pub data: &'a [f64],
    pub d: usize,
}

impl Block<'_> {
    #[inline(always)]
    fn sq(&self, i: usize, j: usize) -> f64 {
        let (a, b) = (
            &self.data[i * self.d..(i + 1) * self.d],
            &self.data[j * self.d..(j + 1) * self.d],
        );
        let mut s = 0.0;
        for (u, v) in a.iter().zip(b) {
            let t = u - v;
            s += t * t;
        }
        s
    }
}

/// ψ(n_xz + 1) + ψ(n_yz + 1) − ψ(n_z + 1) for row i, with x permuted by `perm`.
#[allow(clippy::too_many_arguments)]
fn row_term(
    i: usize,
    x: Block<'_>,
    y: Block<'_>,
    z: Block<'_>,
    perm: Option<&[u32]>,
    k: usize,
    psi: &[f64],
    buf: &mut [Vec<f64>; 3],
    top: &mut Vec<f64>,
) -> Result<f64> {
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
        if j != i && m > 0.0 && (top.len() < k || m < top[k - 1]) {
            // Insertion into the k smallest, ascending.
            let pos = top.partition_point(|&t| t <= m);
            if top.len() == k {
                top.pop();
            }
            top.insert(pos, m);
        }
    }
    if top.len() < k {
        return Err(invalid!(
            "point {i} has fewer than k = {k} neighbours at positive distance in the joint \
             space (duplicates are not neighbours); lower k or remove duplicated points"
        ));
    }
    let eps2 = top[k - 1] * (1.0 - RADIUS_MARGIN);
    let (mut nxz, mut nyz, mut nz) = (0usize, 0usize, 0usize);
    for j in 0..n {
        if j == i {
            continue;
        }
        let az = bz[j];
        if az < eps2 {
            nz += 1;
            nxz += (bx[j] < eps2) as usize;
            nyz += (by[j] < eps2) as usize;
        }
    }
    Ok(psi[nxz + 1] + psi[nyz + 1] - psi[nz + 1])
}

/// The estimate for one permutation of x (`None`: the identity).
fn statistic(
    x: Block<'_>,
    y: Block<'_>,
    z: Block<'_>,
    perm: Option<&[u32]>,
    k: usize,
    psi: &[f64],
    stop: &AtomicBool,
) -> Result<f64> {
    let n = x.data.len() / x.d;
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
                    .map(|i| row_term(i, x, y, z, perm, k, psi, buf, top))
                    .collect()
            },
        )
        .collect::<Result<_>>()?;
    let mut acc = Acc::default();
    for v in blocks.iter().flatten() {
        acc.add(*v);
    }
    Ok(psi[k] - acc.value() / n as f64)
}

/// I(X; Y | Z) in nats for x as given, then for x permuted by each row of `perms`
/// (`n_perms` × n indices, x'_i = x_{perm[i]}): a vector of 1 + n_perms estimates.
pub fn cmi_stats(
    x: Block<'_>,
    y: Block<'_>,
    z: Block<'_>,
    k: usize,
    perms: &[u32],
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    if x.d == 0 || y.d == 0 || z.d == 0 {
        return Err(invalid!("x, y and z need at least one coordinate each"));
    }
    let n = x.data.len() / x.d;
    if x.data.len() != n * x.d || y.data.len() != n * y.d || z.data.len() != n * z.d {
        return Err(invalid!(
            "x, y and z must have the same number of observations"
        ));
    }
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
    let psi = digamma_table(n + 1);
    threads::install(|| -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(1 + perms.len() / n);
        out.push(statistic(x, y, z, None, k, &psi, stop)?);
        for p in perms.chunks_exact(n) {
            out.push(statistic(x, y, z, Some(p), k, &psi, stop)?);
        }
        Ok(out)
    })?
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
        let got = cmi_stats(bx, by, bz, 4, &perm, &stop).unwrap();
        threads::set_num_threads(1).unwrap();
        let one = cmi_stats(bx, by, bz, 4, &perm, &stop).unwrap();
        threads::set_num_threads(2).unwrap();
        assert_eq!(got, one);
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
        assert!(cmi_stats(bx, by, bz, n, &[], &stop).is_err());
        assert!(cmi_stats(bx, by, bz, 3, &[n as u32], &stop).is_err());
    }
}
