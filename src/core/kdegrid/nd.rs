//! Binned Gaussian estimates on 2-D and 3-D grids with a diagonal bandwidth: linear
//! binning (one cache line per point: the 2^d products w·Π t_a of a cell, combined into
//! the corner weights afterwards), then one direct 1-D convolution per axis, each
//! computed only at the grid points (no padded d-dimensional FFT), and the pointwise
//! error estimate |Σ_a Δ²_a S| / 12.

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use super::check_stop;
use crate::core::error::{checked_size, invalid, try_vec, Error, Result};
use crate::core::threads;

/// Reach of the truncated Gaussian in the n-D binned path, in standard deviations:
/// every dropped term is below K(7) = e^{−24.5} ≈ 2.3e-11 times its weight, so (weights
/// summing to 1) the truncation error is below 2.3e-11, far below the binning error; it
/// is added to the estimate.
pub const ND_REACH: f64 = 7.0;

/// Result of [`binned_nd`]: row-major (last axis fastest) sums and error estimates.
#[derive(Clone, Debug)]
pub struct BinnedNd {
    pub sums: Vec<f64>,
    pub err: Vec<f64>,
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        s[a] = s[a + 1] * shape[a + 1];
    }
    s
}

/// Linear binning of n points (rows of `x`, d = 2 or 3) onto the lattice lo_a + k·δ_a,
/// k < nb_a: per cell the 2^d sums M_S = Σ w·Π_{a∈S} t_a (t_a the fractional position),
/// so each point updates one contiguous block; the corner weights
/// w·Π_{a∈C} t_a·Π_{a∉C}(1 − t_a) = Σ_{S⊇C} (−1)^{|S∖C|} M_S are formed afterwards.
/// `w = None`: every point weighs `wu`. Returns the bins and whether every coordinate was
/// finite and every weight finite and non-negative. Allocates 2^d values per bin per
/// thread.
#[allow(clippy::too_many_arguments)]
pub fn bin_products(
    x: &[f64],
    d: usize,
    w: Option<&[f64]>,
    wu: f64,
    lo: &[f64],
    delta: &[f64],
    nb: &[usize],
    stop: &AtomicBool,
) -> Result<(Vec<f64>, bool)> {
    let n = x.len() / d;
    let total = nb.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
    let total = total.ok_or_else(|| Error::OutOfMemory("the bin lattice is too large".into()))?;
    let nsub = 1usize << d;
    let nacc = checked_size(total, nsub, "n_points")?;
    let st = strides(nb);
    let bad = AtomicBool::new(false);
    let acc = super::binning::accumulate(n, nacc, 1 << 14, stop, |s, e, acc| {
        let mut wrong = false;
        let mut prod = [0.0f64; 8];
        'points: for i in s..e {
            let wi = match w {
                Some(w) => {
                    let v = w[i];
                    wrong |= !(0.0..f64::INFINITY).contains(&v);
                    v
                }
                None => wu,
            };
            let row = &x[i * d..i * d + d];
            let mut idx = 0usize;
            let mut t = [0.0f64; 3];
            for a in 0..d {
                let pos = (row[a] - lo[a]) / delta[a];
                if !(pos >= 0.0 && pos <= (nb[a] - 1) as f64) {
                    wrong |= !row[a].is_finite();
                    continue 'points;
                }
                let k = pos as usize;
                t[a] = pos - k as f64;
                idx += k * st[a];
            }
            if wi == 0.0 {
                continue;
            }
            // prod[S] = w·Π_{a∈S} t_a, S a bit set over the axes.
            prod[0] = wi;
            for (a, &ta) in t[..d].iter().enumerate() {
                let b = 1usize << a;
                for sset in 0..b {
                    prod[sset | b] = prod[sset] * ta;
                }
            }
            let dst = &mut acc[idx * nsub..idx * nsub + nsub];
            for (o, p) in dst.iter_mut().zip(&prod[..nsub]) {
                *o += p;
            }
        }
        if wrong {
            bad.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    })?;
    check_stop(stop)?;
    // Corner weight for corner set C from a cell's sums: Σ_{S⊇C} (−1)^{|S∖C|} M_S.
    let mut bins = try_vec(total, 0.0f64, "n_points")?;
    let coords = |mut flat: usize| {
        let mut c = [0usize; 3];
        for a in 0..d {
            c[a] = flat / st[a];
            flat %= st[a];
        }
        c
    };
    threads::install(|| {
        bins.par_chunks_mut(4096)
            .enumerate()
            .for_each(|(b, chunk)| {
                for (r, out) in chunk.iter_mut().enumerate() {
                    let flat = b * 4096 + r;
                    let k = coords(flat);
                    let mut v = 0.0;
                    for cset in 0..nsub {
                        // The cell K − C must exist.
                        let mut ok = true;
                        let mut src = flat;
                        for a in 0..d {
                            if (cset >> a) & 1 == 1 {
                                if k[a] == 0 {
                                    ok = false;
                                    break;
                                }
                                src -= st[a];
                            }
                        }
                        if !ok {
                            continue;
                        }
                        let m = &acc[src * nsub..src * nsub + nsub];
                        for (sset, &ms) in m.iter().enumerate() {
                            if sset & cset == cset {
                                let extra = (sset & !cset).count_ones();
                                v += if extra % 2 == 0 { ms } else { -ms };
                            }
                        }
                    }
                    *out = v;
                }
            });
    })?;
    Ok((bins, !bad.load(std::sync::atomic::Ordering::Relaxed)))
}

fn axpy_generic<M: crate::core::simd::Fma>(k: f64, a: &[f64], o: &mut [f64]) {
    for (ov, &av) in o.iter_mut().zip(a) {
        *ov = M::ma(k, av, *ov);
    }
}

crate::core::simd::simd_fn!(
    /// o += k·a (vectorised at the best SIMD level).
    fn axpy => axpy_generic(k: f64, a: &[f64], o: &mut [f64]) -> ()
);

/// out[…, i, …] = Σ_{j=0}^{2r} k_j · a[…, off + i + j, …] for i < m_out along `axis` of the
/// row-major array `a` of `shape`; returns the output and its shape. Direct, with the
/// inner loops over contiguous memory (vectorised AXPYs), rows in parallel.
fn conv_axis(
    a: &[f64],
    shape: &[usize],
    axis: usize,
    k: &[f64],
    off: usize,
    m_out: usize,
    stop: &AtomicBool,
) -> Result<(Vec<f64>, Vec<usize>)> {
    let outer: usize = shape[..axis].iter().product();
    let n_ax = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut oshape = shape.to_vec();
    oshape[axis] = m_out;
    let total = checked_size(outer * m_out, inner, "n_points")?;
    let mut out = try_vec(total, 0.0f64, "n_points")?;
    debug_assert!(off + m_out + k.len() - 1 <= n_ax);
    let level = crate::core::simd::level();
    threads::install(|| {
        if inner > 1 {
            out.par_chunks_mut(inner).enumerate().for_each(|(row, o)| {
                let (oi, i) = (row / m_out, row % m_out);
                let base = oi * n_ax * inner;
                for (j, &kj) in k.iter().enumerate() {
                    let s = base + (off + i + j) * inner;
                    axpy(level, kj, &a[s..s + inner], o);
                }
            });
        } else {
            out.par_chunks_mut(m_out).enumerate().for_each(|(oi, o)| {
                let src = &a[oi * n_ax..(oi + 1) * n_ax];
                for (j, &kj) in k.iter().enumerate() {
                    axpy(level, kj, &src[off + j..off + j + m_out], o);
                }
            });
        }
    })?;
    check_stop(stop)?;
    Ok((out, oshape))
}

/// Binned Gaussian sums S(g) = Σ_j w_j Π_a exp(−(g_a − x_ja)²/(2h_a²)) on the grid
/// lo_a + i·δ_a, i < m_a (d = 2 or 3; `x` row-major n × d; `w = None`: weights 1/n), with
/// the pointwise error estimate |Σ_a Δ²_a S|/12 + the truncation bound. Points farther
/// than the kernel's reach from the grid do not contribute. Allocates the bins (2^d
/// values per bin per thread during binning) and two arrays of the partially convolved
/// size.
#[allow(clippy::too_many_arguments)]
pub fn binned_nd(
    x: &[f64],
    d: usize,
    w: Option<&[f64]>,
    lo: &[f64],
    delta: &[f64],
    m: &[usize],
    hsd: &[f64],
    stop: &AtomicBool,
) -> Result<BinnedNd> {
    if !(2..=3).contains(&d)
        || lo.len() != d
        || delta.len() != d
        || m.len() != d
        || hsd.len() != d
        || !x.len().is_multiple_of(d)
        || x.is_empty()
    {
        return Err(invalid!(
            "binned_nd needs 2 or 3 dimensions, one lo, spacing, size and bandwidth per \
             axis, and n·d coordinates (n ≥ 1)"
        ));
    }
    let n = x.len() / d;
    if let Some(w) = w {
        if w.len() != n {
            return Err(invalid!(
                "weights have length {} but there are {n} data points",
                w.len()
            ));
        }
    }
    let mut reach = vec![0usize; d];
    let mut nb = vec![0usize; d];
    let mut lo_b = vec![0.0; d];
    for a in 0..d {
        if !(lo[a].is_finite()
            && delta[a].is_finite()
            && delta[a] > 0.0
            && hsd[a].is_finite()
            && hsd[a] > 0.0
            && m[a] >= 2)
        {
            return Err(invalid!(
                "the grid needs a finite start, a positive spacing, at least 2 points and \
                 a positive bandwidth per axis"
            ));
        }
        let r = (ND_REACH * hsd[a] / delta[a]).ceil();
        if r >= 1e7 || r.is_nan() {
            return Err(Error::OutOfMemory(format!(
                "the bandwidth spans {r:.3e} grid steps, too many to sample the kernel; use \
                 fewer n_points or a narrower extent"
            )));
        }
        reach[a] = r as usize;
        let pad = reach[a] + 1;
        nb[a] = m[a] + 2 * pad;
        lo_b[a] = lo[a] - pad as f64 * delta[a];
    }
    // The product layout touches one cache line per point but holds 2^d values per bin:
    // it pays while those stay in a core's cache; beyond, the plain corner scatter.
    let cells: usize = nb.iter().product();
    let (mut cur, ok) = if cells << d <= 1 << 17 {
        bin_products(x, d, w, 1.0 / n as f64, &lo_b, delta, &nb, stop)?
    } else {
        super::binning::linear_bin_nd_checked(x, d, w, 1.0 / n as f64, &lo_b, delta, &nb, stop)?
    };
    if !ok {
        return Err(invalid!(
            "data must be finite and weights finite and non-negative"
        ));
    }
    let mut shape = nb.clone();
    for a in 0..d {
        let r = reach[a];
        let k: Vec<f64> = (0..=2 * r)
            .map(|j| {
                let u = (j as f64 - r as f64) * delta[a] / hsd[a];
                (-0.5 * u * u).exp()
            })
            .collect();
        // Grid point i is bin pad + i; the window starts `reach` before it.
        let (o, s) = conv_axis(&cur, &shape, a, &k, 1, m[a], stop)?;
        cur = o;
        shape = s;
    }
    // Error estimate: second differences along each axis (edge values repeated).
    let st = strides(m);
    let total = cur.len();
    let mut err = try_vec(total, 0.0f64, "n_points")?;
    let smax = cur.iter().fold(0.0f64, |a, &b| a.max(b.abs()));
    // Rounding (a few ε of the largest sum) and truncation (≤ e^{−R²/2}·Σw, Σw = 1).
    let floor = 1e-14 * smax + (-0.5 * ND_REACH * ND_REACH).exp();
    let sums = &cur;
    threads::install(|| {
        err.par_chunks_mut(4096).enumerate().for_each(|(b, chunk)| {
            for (r, e) in chunk.iter_mut().enumerate() {
                let flat = b * 4096 + r;
                let mut rem = flat;
                let mut est = 0.0;
                for a in 0..d {
                    let i = rem / st[a];
                    rem %= st[a];
                    let c = i.clamp(1, m[a] - 2);
                    let f0 = flat - i * st[a] + c * st[a];
                    if m[a] >= 3 {
                        est += sums[f0 + st[a]] - 2.0 * sums[f0] + sums[f0 - st[a]];
                    }
                }
                *e = (est / 12.0).abs() + floor;
            }
        });
    })?;
    Ok(BinnedNd { sums: cur, err })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::Lcg;

    #[test]
    fn product_binning_equals_corner_binning() {
        let stop = AtomicBool::new(false);
        let mut g = Lcg::new(5);
        for d in 2..=3 {
            let n = 500;
            let x: Vec<f64> = (0..n * d).map(|_| g.unit() * 4.0 - 1.0).collect();
            let w: Vec<f64> = (0..n).map(|_| g.unit()).collect();
            let lo = vec![-0.5; d];
            let delta = vec![0.37; d];
            let nb = vec![7usize; d];
            let (a, ok) = bin_products(&x, d, Some(&w), 0.0, &lo, &delta, &nb, &stop).unwrap();
            let b = crate::core::kdegrid::binning::linear_bin_nd(&x, &w, &lo, &delta, &nb, &stop)
                .unwrap();
            assert!(ok);
            for (u, v) in a.iter().zip(&b) {
                assert!((u - v).abs() < 1e-12, "{d}: {u} {v}");
            }
        }
    }

    #[test]
    fn separable_sums_match_the_direct_sum() {
        let stop = AtomicBool::new(false);
        let mut g = Lcg::new(9);
        let n = 4000;
        let x: Vec<f64> = (0..2 * n).map(|_| g.unit_sum(3) - 1.5).collect();
        let h = [0.3, 0.2];
        let (lo, delta, m) = ([-2.0, -1.5], [4.0 / 79.0, 3.0 / 59.0], [80usize, 60]);
        let b = binned_nd(&x, 2, None, &lo, &delta, &m, &h, &stop).unwrap();
        let mut max_err: f64 = 0.0;
        let mut max_est: f64 = 0.0;
        for i in 0..m[0] {
            for j in 0..m[1] {
                let (g0, g1) = (lo[0] + i as f64 * delta[0], lo[1] + j as f64 * delta[1]);
                let s: f64 = x
                    .chunks_exact(2)
                    .map(|p| {
                        let (u, v) = ((g0 - p[0]) / h[0], (g1 - p[1]) / h[1]);
                        (-0.5 * (u * u + v * v)).exp()
                    })
                    .sum::<f64>()
                    / n as f64;
                max_err = max_err.max((b.sums[i * m[1] + j] - s).abs());
                max_est = max_est.max(b.err[i * m[1] + j]);
            }
        }
        assert!(
            max_est < 2.0 * max_err && max_est > 0.5 * max_err,
            "{max_err} {max_est}"
        );
    }
}
