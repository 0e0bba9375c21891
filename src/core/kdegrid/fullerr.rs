//! The binning-error estimate of a 2-D grid with a FULL bandwidth matrix (issue 11,
//! fullerr): the same estimate as divest/_kdeerr.py's `binning_error` (which convolves
//! by FFT), computed directly on the coarse lattice.
//!
//! With a full precision matrix P the derivative kernels of the moment-corrected scheme,
//! c_f·poly_f(P·o)·exp(−½·oᵀPo), are not products of 1-D kernels, but sampled on the
//! coarse lattice (about half a conditional standard deviation apart) they are close to
//! low rank when the correlation is weak: each kernel's (2·reach₀ + 1) × (2·reach₁ + 1)
//! matrix is split by cross approximation with complete pivoting (Gaussian elimination
//! that stops when the largest remaining entry is below 4e-16 of the largest entry) into
//! a sum of R outer products u ⊗ v; the correlation is then R passes along axis 1 (v)
//! followed by one summed pass along axis 0 (all the u's), with the row kernel of
//! [`super::errfield`]. The remainder bounds the difference from the exact sums
//! entrywise: 4e-16 of the kernel's largest value times the fields' total.
//!
//! The rank grows with the correlation (6 per field for Scott's bandwidth on independent
//! normal data, about 23 at a correlation of 0.3, up to the kernel's size when the
//! coarse lattice is the grid's own and the correlation strong); when the passes would
//! cost more than [`BUDGET`] multiply-adds, [`plan`] says so and the caller keeps the FFT.

use std::sync::atomic::AtomicBool;

use super::check_stop;
use super::errfield::{lattice_spans, row_multi_at, to_grid, ErrLattice, Member};
use crate::core::error::{checked_size, invalid, try_vec, Error, Result};

/// Entrywise tolerance of the cross approximation, relative to the kernel's largest
/// entry (rounding in the elimination is a few 1e-17 of it).
const TOL: f64 = 4e-16;

/// Largest number of multiply-adds the separable passes may take (about 10 ms on two
/// cores) whatever budget the caller gives; above it the FFT is cheaper.
pub const BUDGET: f64 = 2.5e8;

/// Largest kernel matrix (entries) the plan builds.
const MAX_KERNEL: usize = 1 << 20;

/// Cross approximation with complete pivoting of the `t0` × `t1` row-major matrix `a`:
/// outer products (u of `t0`, v of `t1`) whose sum differs from `a` by at most
/// `tol`·max|a| in every entry, or None when that needs more than `max_rank` terms.
/// Each step takes the largest remaining entry as the pivot, u = its column divided by
/// it, v = its row, and subtracts u ⊗ v (which zeroes that row and column); after
/// min(t0, t1) steps the rest is rounding, so the split is then complete.
pub fn cross_factors(
    a: &[f64],
    t0: usize,
    t1: usize,
    tol: f64,
    max_rank: usize,
) -> Option<Vec<(Vec<f64>, Vec<f64>)>> {
    debug_assert_eq!(a.len(), t0 * t1);
    let mut res = a.to_vec();
    let amax = res.iter().fold(0.0f64, |m, &v| m.max(v.abs()));
    let mut out = Vec::new();
    if !amax.is_finite() {
        return None;
    }
    loop {
        let (mut at, mut big) = (0usize, 0.0f64);
        for (i, &v) in res.iter().enumerate() {
            if v.abs() > big {
                big = v.abs();
                at = i;
            }
        }
        // After min(t0, t1) steps what is left is rounding.
        if big <= tol * amax || out.len() == t0.min(t1) {
            return Some(out);
        }
        if out.len() == max_rank {
            return None;
        }
        let (i0, j0) = (at / t1, at % t1);
        let p = res[at];
        let u: Vec<f64> = (0..t0).map(|i| res[i * t1 + j0] / p).collect();
        let v: Vec<f64> = res[i0 * t1..(i0 + 1) * t1].to_vec();
        for (row, &ui) in res.chunks_exact_mut(t1).zip(&u) {
            if ui != 0.0 {
                for (x, &vj) in row.iter_mut().zip(&v) {
                    *x -= ui * vj;
                }
            }
        }
        out.push((u, v));
    }
}

/// The three kernels of the 2-D moment-corrected scheme at offset (o₀, o₁) for the
/// precision `p` = [p₀₀, p₀₁, p₁₀, p₁₁] and grid spacing `delta`: −(δ_a⁴/24)·(v_a⁴ −
/// 6p_aa·v_a² + 3p_aa²)·k for a = 0, 1 and −(δ₀²δ₁²/4)·(v₀²v₁² − p₀₀v₁² − p₁₁v₀² −
/// 4p₀₁v₀v₁ + p₀₀p₁₁ + 2p₀₁²)·k, with v = P·o and k = exp(−½·oᵀv) (divest/_kdeerr.py's
/// `_derivative_kernels`).
fn kernels_2d(p: &[f64], delta: &[f64], o0: f64, o1: f64) -> [f64; 3] {
    let v0 = o0 * p[0] + o1 * p[2];
    let v1 = o0 * p[1] + o1 * p[3];
    let k = (-0.5 * (o0 * v0 + o1 * v1)).exp();
    let (p00, p01, p11) = (p[0], p[1], p[3]);
    let axis = |d: f64, pa: f64, va: f64| {
        -(d.powi(4) / 24.0) * (va.powi(4) - 6.0 * pa * va * va + 3.0 * pa * pa) * k
    };
    let poly = v0 * v0 * v1 * v1 - p00 * v1 * v1 - p11 * v0 * v0 - 4.0 * p01 * v0 * v1
        + p00 * p11
        + 2.0 * p01 * p01;
    [
        axis(delta[0], p00, v0),
        axis(delta[1], p11, v1),
        -(delta[0] * delta[0] * delta[1] * delta[1] / 4.0) * poly * k,
    ]
}

/// The separable form of the three kernels: per field, its outer products (u over axis
/// 0, v over axis 1, both reversed so that the correlation's taps run forward).
pub struct Plan {
    factors: Vec<(usize, Vec<f64>, Vec<f64>)>,
    span: [usize; 3],
}

impl Plan {
    /// Number of outer products over the three fields.
    pub fn rank(&self) -> usize {
        self.factors.len()
    }
}

/// Checks the lattice (2-D; `prec` the full 2 × 2 precision, row-major) and splits the
/// kernels; Ok(None) when the passes would cost more than `budget` (at most [`BUDGET`])
/// multiply-adds (or the kernel matrix is larger than 2^20 entries), so that the caller
/// keeps the FFT. Allocates the three kernel matrices and their factors.
#[allow(clippy::needless_range_loop)]
pub fn plan(lat: &ErrLattice<'_>, budget: f64) -> Result<Option<Plan>> {
    let bad = |v: f64| !(v > 0.0 && v.is_finite());
    let p = lat.prec;
    if lat.m.len() != 2
        || lat.delta.len() != 2
        || p.len() != 4
        || lat.r.len() != 2
        || lat.reach.len() != 2
        || lat.nc.len() != 2
        || lat.delta.iter().any(|&v| bad(v))
        || bad(p[0])
        || bad(p[3])
        || !(p[1].is_finite() && p[1] == p[2])
        || bad(p[0] * p[3] - p[1] * p[2])
    {
        return Err(invalid!(
            "the full-bandwidth error lattice needs 2 axes with a positive spacing each and \
             a symmetric positive definite 2 x 2 precision"
        ));
    }
    let span = lattice_spans(lat, 2)?;
    let (t0, t1) = (2 * lat.reach[0] + 1, 2 * lat.reach[1] + 1);
    if t0.saturating_mul(t1) > MAX_KERNEL {
        return Ok(None);
    }
    let dc = [
        lat.r[0] as f64 * lat.delta[0],
        lat.r[1] as f64 * lat.delta[1],
    ];
    // Entry (i, j) is the kernel at offset ((reach₀ − i)·dc₀, (reach₁ − j)·dc₁).
    let mut kers = vec![vec![0.0f64; t0 * t1]; 3];
    for i in 0..t0 {
        let o0 = (lat.reach[0] as f64 - i as f64) * dc[0];
        for j in 0..t1 {
            let o1 = (lat.reach[1] as f64 - j as f64) * dc[1];
            let k = kernels_2d(p, lat.delta, o0, o1);
            for f in 0..3 {
                kers[f][i * t1 + j] = k[f];
            }
        }
    }
    // Cost of one outer product: the axis-1 pass over every coarse row, the axis-0 pass
    // at the span nodes.
    let per = (t1 * lat.nc[0] * span[1] + t0 * span[0] * span[1]) as f64;
    // The products the budget allows over the three fields together.
    let max_rank = (budget.clamp(0.0, BUDGET) / per) as usize;
    let mut factors = Vec::new();
    for (f, k) in kers.iter().enumerate() {
        let left = max_rank.saturating_sub(factors.len());
        match cross_factors(k, t0, t1, TOL, left) {
            Some(fs) => factors.extend(fs.into_iter().map(|(u, v)| (f, u, v))),
            None => return Ok(None),
        }
    }
    Ok(Some(Plan { factors, span }))
}

/// The estimate of a [`plan`]: the error fields `fields` (3 per coarse node,
/// interleaved, as the binning pass returns them) correlated with the kernels' outer
/// products, |E| interpolated back onto the grid and each value (value + floor)·scale, as
/// [`super::errfield::grid_error`] finishes it. Returns (Π m values, their maximum).
/// Allocates R·nc₀·span₁ values for the axis-1 passes (R the plan's rank), span₀·span₁
/// for E and the Π m values. Rows run in parallel; same bits for any thread count.
pub fn grid_error_full(
    fields: &[f64],
    lat: &ErrLattice<'_>,
    plan: &Plan,
    floor: f64,
    scale: f64,
    stop: &AtomicBool,
) -> Result<(Vec<f64>, f64)> {
    use rayon::prelude::*;
    const NF: usize = 3;
    if !(floor.is_finite() && scale.is_finite()) {
        return Err(invalid!(
            "the error estimate needs a finite floor and scale"
        ));
    }
    let (nc0, nc1) = (lat.nc[0], lat.nc[1]);
    let span = plan.span;
    let (sp0, sp1) = (span[0], span[1]);
    let cells = checked_size(nc0, nc1, "n_points")?;
    if checked_size(cells, NF, "n_points")? != fields.len() {
        return Err(invalid!(
            "the error fields have {} values, expected {} ({NF} per lattice node)",
            fields.len(),
            cells * NF
        ));
    }
    lat.m
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| Error::OutOfMemory("the grid is too large".into()))?;
    let q = plan.factors.len();
    let level = crate::core::simd::level();
    let mut e = try_vec(checked_size(sp0, sp1, "n_points")?, 0.0f64, "n_points")?;
    if q > 0 {
        // Axis 1: plane row `row` holds, for each outer product in turn, the row of its
        // field correlated with its v (at the span nodes).
        let row_len = checked_size(q, sp1, "n_points")?;
        let mut planes = try_vec(checked_size(nc0, row_len, "n_points")?, 0.0f64, "n_points")?;
        crate::core::threads::install(|| {
            planes
                .par_chunks_mut(row_len)
                .enumerate()
                .for_each(|(row, out)| {
                    let src = &fields[row * nc1 * NF..(row + 1) * nc1 * NF];
                    let mut buf = vec![0.0f64; NF * nc1];
                    for (f, b) in buf.chunks_exact_mut(nc1).enumerate() {
                        for (v, s) in b.iter_mut().zip(src.chunks_exact(NF)) {
                            *v = s[f];
                        }
                    }
                    for ((f, _, v), o) in plan.factors.iter().zip(out.chunks_exact_mut(sp1)) {
                        let mem: [Member<'_>; 1] = [(&v[..], &buf[f * nc1..(f + 1) * nc1])];
                        row_multi_at(level, &mem, 1, 1, o);
                    }
                });
        })?;
        check_stop(stop)?;
        // Axis 0: output row i sums every product's u over plane rows 1 + i ..
        let planes = &planes;
        crate::core::threads::install(|| {
            e.par_chunks_mut(sp1).enumerate().for_each(|(i, o)| {
                let mem: Vec<Member<'_>> = plan
                    .factors
                    .iter()
                    .enumerate()
                    .map(|(k, (_, u, _))| (&u[..], &planes[k * sp1..]))
                    .collect();
                row_multi_at(level, &mem, 1 + i, row_len, o);
            });
        })?;
        check_stop(stop)?;
    }
    to_grid(&mut e, lat, &span, floor, scale, stop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::Lcg;

    #[test]
    fn cross_factors_reproduce_the_matrix_and_stop_at_the_rank() {
        let mut g = Lcg::new(7);
        // A rank-3 matrix is split into exactly 3 products, to rounding.
        let (t0, t1) = (9, 13);
        let a: Vec<f64> = (0..t0 * t1)
            .map(|k| {
                let (i, j) = ((k / t1) as f64, (k % t1) as f64);
                (0.3 * i).sin() * (0.2 * j).cos() + i * j * 1e-2 - 0.5 * (i - j).abs().min(0.0)
                    + 2.0
            })
            .collect();
        let fs = cross_factors(&a, t0, t1, 1e-14, 20).unwrap();
        assert_eq!(fs.len(), 3);
        for i in 0..t0 {
            for j in 0..t1 {
                let s: f64 = fs.iter().map(|(u, v)| u[i] * v[j]).sum();
                assert!((s - a[i * t1 + j]).abs() < 1e-13, "{i} {j}");
            }
        }
        // A random matrix needs full rank; a cap below it gives None.
        let b: Vec<f64> = (0..t0 * t1).map(|_| g.unit() - 0.5).collect();
        assert!(cross_factors(&b, t0, t1, 1e-15, 5).is_none());
        let fb = cross_factors(&b, t0, t1, 1e-15, t0).unwrap();
        assert_eq!(fb.len(), t0);
        for i in 0..t0 {
            for j in 0..t1 {
                let s: f64 = fb.iter().map(|(u, v)| u[i] * v[j]).sum();
                assert!((s - b[i * t1 + j]).abs() < 1e-14);
            }
        }
        // Zero matrix: no product.
        assert_eq!(cross_factors(&[0.0; 6], 2, 3, 1e-16, 4).unwrap().len(), 0);
    }

    /// The estimate written out: E(node) = Σ_f Σ_offsets F_f[node − q]·K_f(q·dc), |E|,
    /// then interpolation as `to_grid` (checked separately by the diagonal tests).
    #[test]
    fn full_estimate_equals_the_direct_sums() {
        let stop = AtomicBool::new(false);
        let mut g = Lcg::new(11);
        for (rho, r) in [(0.01, [2usize, 1usize]), (0.35, [1, 1]), (-0.2, [1, 2])] {
            let (s0, s1) = (0.3f64, 0.22f64);
            let cov = [s0 * s0, rho * s0 * s1, rho * s0 * s1, s1 * s1];
            let det = cov[0] * cov[3] - cov[1] * cov[2];
            let p = [cov[3] / det, -cov[1] / det, -cov[2] / det, cov[0] / det];
            let delta = [0.05, 0.07];
            let m = [23usize, 17usize];
            let reach = [9usize, 6usize];
            let span: Vec<usize> = (0..2).map(|a| (m[a] - 1).div_ceil(r[a]) + 1).collect();
            let nc: Vec<usize> = (0..2).map(|a| span[a] + 2 * (reach[a] + 1)).collect();
            let fields: Vec<f64> = (0..nc[0] * nc[1] * 3).map(|_| g.unit()).collect();
            let lat = ErrLattice {
                m: &m,
                delta: &delta,
                prec: &p,
                r: &r,
                reach: &reach,
                nc: &nc,
            };
            let pl = plan(&lat, BUDGET).unwrap().unwrap();
            assert!(pl.rank() >= 3);
            let (out, peak) = grid_error_full(&fields, &lat, &pl, 0.0, 1.0, &stop).unwrap();
            let dc = [r[0] as f64 * delta[0], r[1] as f64 * delta[1]];
            let (pad0, pad1) = (reach[0] + 1, reach[1] + 1);
            let mut e = vec![0.0f64; span[0] * span[1]];
            let mut big = 0.0f64;
            for i in 0..span[0] {
                for j in 0..span[1] {
                    let mut s = 0.0;
                    for a in -(reach[0] as i64)..=reach[0] as i64 {
                        for b in -(reach[1] as i64)..=reach[1] as i64 {
                            let k = kernels_2d(&p, &delta, a as f64 * dc[0], b as f64 * dc[1]);
                            let n0 = (pad0 + i) as i64 - a;
                            let n1 = (pad1 + j) as i64 - b;
                            let at = (n0 as usize * nc[1] + n1 as usize) * 3;
                            for f in 0..3 {
                                s += fields[at + f] * k[f];
                                big = big.max((fields[at + f] * k[f]).abs());
                            }
                        }
                    }
                    e[i * span[1] + j] = s;
                }
            }
            let emax = e.iter().fold(0.0f64, |a, &b| a.max(b.abs()));
            assert!(emax > 0.0);
            for i in 0..m[0] {
                for j in 0..m[1] {
                    let at = |a: usize, b: usize| e[a * span[1] + b].abs();
                    let (p0, p1) = (i as f64 / r[0] as f64, j as f64 / r[1] as f64);
                    let (j0, j1) = (
                        (p0 as usize).min(span[0] - 2),
                        (p1 as usize).min(span[1] - 2),
                    );
                    let (f0, f1) = (p0 - j0 as f64, p1 - j1 as f64);
                    let lo = at(j0, j1) * (1.0 - f0) + at(j0 + 1, j1) * f0;
                    let hi = at(j0, j1 + 1) * (1.0 - f0) + at(j0 + 1, j1 + 1) * f0;
                    let want = lo * (1.0 - f1) + hi * f1;
                    let got = out[i * m[1] + j];
                    assert!(
                        (got - want).abs() <= 1e-12 * emax,
                        "{rho} {i} {j} {got} {want}"
                    );
                }
            }
            assert_eq!(peak, out.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b)));
            // The same bits on one thread.
            let prev = crate::core::threads::set_thread_override(1).unwrap();
            let one = grid_error_full(&fields, &lat, &pl, 0.0, 1.0, &stop).unwrap();
            crate::core::threads::set_thread_override(prev).unwrap();
            assert_eq!(one.0, out);
        }
    }

    #[test]
    fn the_plan_refuses_bad_lattices_and_declines_costly_ones() {
        let m = [10usize, 10];
        let delta = [0.1, 0.1];
        let r = [1usize, 1];
        let reach = [3usize, 3];
        let nc = [18usize, 18];
        let p = [1.0, 0.2, 0.2, 1.0];
        let lat = ErrLattice {
            m: &m,
            delta: &delta,
            prec: &p,
            r: &r,
            reach: &reach,
            nc: &nc,
        };
        assert!(plan(&lat, BUDGET).unwrap().is_some());
        let asym = [1.0, 0.2, 0.1, 1.0];
        assert!(plan(&ErrLattice { prec: &asym, ..lat }, BUDGET).is_err());
        let indef = [1.0, 2.0, 2.0, 1.0];
        assert!(plan(
            &ErrLattice {
                prec: &indef,
                ..lat
            },
            BUDGET
        )
        .is_err());
        let wrong = [17usize, 18];
        assert!(plan(&ErrLattice { nc: &wrong, ..lat }, BUDGET).is_err());
        // Strong correlation on a wide kernel and a large lattice: over the budget.
        let (mb, rb, reachb) = ([4000usize, 4000], [1usize, 1], [200usize, 200]);
        let ncb = [4000 + 402, 4000 + 402];
        let pb = [1.0, 0.9, 0.9, 1.0];
        let big = ErrLattice {
            m: &mb,
            delta: &[0.01, 0.01],
            prec: &pb,
            r: &rb,
            reach: &reachb,
            nc: &ncb,
        };
        assert!(plan(&big, BUDGET).unwrap().is_none());
        // A zero budget declines any kernel that is not zero.
        assert!(plan(&lat, 0.0).unwrap().is_none());
    }
}
