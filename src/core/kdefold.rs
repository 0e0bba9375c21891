//! The image terms of a bounded (reflected or periodic) KDE in any dimension, in one pass
//! over the data (issue 11).
//!
//! A bounded estimate at a query q is Σ_g Σ_i w_i K(|g q − x_i|) over the image maps g of
//! the fold (`divest/_kdebounds.py`); in whitened coordinates every map acts per
//! dimension as z ↦ s·z + t (the bounded rows of the bandwidth are diagonal). The identity
//! term is the unbounded estimate, which the caller computes with the pairwise engine;
//! this module adds the other images' terms for the (query, map) pairs the fold's proven
//! tests keep.
//!
//! The data are sorted once into blocks of at most [`LEAF`] points (a k-d split on the
//! widest side) with bounding boxes. For each kept pair the blocks are visited in order
//! and a block is skipped when the bound log Σ_{i∈B} w_i K(dist(g q, box_B)) lies below
//! log S₀(q) − T, S₀ the identity term and T = `margin` + log(blocks·pairs of the query):
//! everything skipped is then at most e^{−margin}·S₀ (K decreases with the distance, so
//! the bound holds for every kernel). A visited block is summed exactly: squared
//! distances into a buffer, then the SIMD exponential sum (Gaussian, exponential), or the
//! profile directly (compact kernels).

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use crate::core::error::{invalid, Result};
use crate::core::kde::Kernel;
use crate::core::simd::{self, Fma};
use crate::core::threads;

/// Most points per block.
pub const LEAF: usize = 64;

struct Blocks {
    /// Coordinates per dimension (structure of arrays), in block order.
    coords: Vec<Vec<f64>>,
    logw: Vec<f64>,
    /// The weights themselves, e^{logw − max logw} (compact kernels).
    wlin: Vec<f64>,
    /// Block b covers points start[b]..start[b + 1].
    start: Vec<usize>,
    /// Bounding boxes, d lows then d highs per block.
    bbox: Vec<f64>,
    /// log Σ w over the block.
    logsum: Vec<f64>,
    /// The largest log-weight (`wlin` is relative to it).
    top: f64,
}

fn build_blocks(x: &[f64], d: usize, logw: &[f64]) -> Blocks {
    let n = logw.len();
    let mut idx: Vec<usize> = (0..n).filter(|&i| logw[i] > f64::NEG_INFINITY).collect();
    let mut ranges = Vec::new();
    // Iterative k-d split: (start, end) ranges of `idx`.
    let mut stack = vec![(0usize, idx.len())];
    while let Some((a, b)) = stack.pop() {
        if b - a <= LEAF {
            if b > a {
                ranges.push((a, b));
            }
            continue;
        }
        let mut best = (0usize, -1.0f64);
        for j in 0..d {
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for &i in &idx[a..b] {
                lo = lo.min(x[i * d + j]);
                hi = hi.max(x[i * d + j]);
            }
            if hi - lo > best.1 {
                best = (j, hi - lo);
            }
        }
        let j = best.0;
        let mid = (a + b) / 2;
        idx[a..b].select_nth_unstable_by(mid - a, |&p, &q| x[p * d + j].total_cmp(&x[q * d + j]));
        stack.push((mid, b));
        stack.push((a, mid));
    }
    ranges.sort_unstable();
    let total: usize = ranges.iter().map(|r| r.1 - r.0).sum();
    let mut coords = vec![Vec::with_capacity(total); d];
    let mut lw = Vec::with_capacity(total);
    let mut start = vec![0usize];
    let mut bbox = Vec::with_capacity(ranges.len() * 2 * d);
    let mut logsum = Vec::with_capacity(ranges.len());
    for &(a, b) in &ranges {
        let mut lo = vec![f64::INFINITY; d];
        let mut hi = vec![f64::NEG_INFINITY; d];
        let top = idx[a..b]
            .iter()
            .map(|&i| logw[i])
            .fold(f64::NEG_INFINITY, f64::max);
        let mut s = 0.0;
        for &i in &idx[a..b] {
            for j in 0..d {
                let v = x[i * d + j];
                coords[j].push(v);
                lo[j] = lo[j].min(v);
                hi[j] = hi[j].max(v);
            }
            lw.push(logw[i]);
            s += (logw[i] - top).exp();
        }
        bbox.extend_from_slice(&lo);
        bbox.extend_from_slice(&hi);
        logsum.push(top + s.ln());
        start.push(start.last().unwrap() + (b - a));
    }
    let top = lw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let wlin = lw.iter().map(|v| (v - top).exp()).collect();
    Blocks {
        coords,
        wlin,
        top,
        logw: lw,
        start,
        bbox,
        logsum,
    }
}

/// log K(r) from the squared distance.
fn log_profile(kernel: Kernel, d2: f64) -> f64 {
    match kernel {
        Kernel::Gaussian => -0.5 * d2,
        Kernel::Exponential => -d2.sqrt(),
        Kernel::Tophat => {
            if d2 < 1.0 {
                0.0
            } else {
                f64::NEG_INFINITY
            }
        }
        Kernel::Epanechnikov => {
            if d2 < 1.0 {
                (1.0 - d2).ln()
            } else {
                f64::NEG_INFINITY
            }
        }
        Kernel::Linear => {
            let r = d2.sqrt();
            if r < 1.0 {
                (1.0 - r).ln()
            } else {
                f64::NEG_INFINITY
            }
        }
        Kernel::Cosine => {
            let r = d2.sqrt();
            if r < 1.0 {
                (std::f64::consts::FRAC_PI_2 * r).cos().ln()
            } else {
                f64::NEG_INFINITY
            }
        }
    }
}

/// log Σ over block points `s0..s1` of w·K(|img − x|), shifted by `shift` (an upper
/// bound of the log terms): returns log Σ − shift. `wlin` = e^{logw − top}. `d2` (at least the block's length) and
/// `buf` are scratch.
#[allow(clippy::too_many_arguments)]
#[inline(always)] // into the target-feature wrappers of `simd_fn!` (else FMA is a libcall)
fn block_sum_generic<M: Fma>(
    kernel: Kernel,
    img: &[f64],
    coords: &[Vec<f64>],
    s0: usize,
    s1: usize,
    logw: &[f64],
    wlin: &[f64],
    top: f64,
    shift: f64,
    d2: &mut [f64],
    buf: &mut [f64],
) -> f64 {
    let wlin = &wlin[s0..s1];
    let dd = &mut d2[..s1 - s0];
    dd.fill(0.0);
    for (j, &v) in img.iter().enumerate() {
        for (e, &xv) in dd.iter_mut().zip(&coords[j][s0..s1]) {
            let t = v - xv;
            *e += t * t;
        }
    }
    let lw = &logw[s0..s1];
    match kernel {
        Kernel::Gaussian => simd::lin_exp_sum::<M>(dd, Some(lw), -0.5, -shift, None, buf).ln(),
        Kernel::Exponential => {
            for v in dd.iter_mut() {
                *v = v.sqrt();
            }
            simd::lin_exp_sum::<M>(dd, Some(lw), -1.0, -shift, None, buf).ln()
        }
        _ => {
            // Compact kernels: the profile itself, no logarithms (w ≤ 1 after the
            // caller's normalisation, so nothing overflows).
            let mut s = 0.0;
            for (&v, &w) in dd.iter().zip(wlin) {
                if v < 1.0 {
                    s += w * profile(kernel, v);
                }
            }
            s.ln() + top - shift
        }
    }
}

/// K(r) from the squared distance, for r < 1 (compact kernels).
#[inline(always)]
fn profile(kernel: Kernel, d2: f64) -> f64 {
    match kernel {
        Kernel::Tophat => 1.0,
        Kernel::Epanechnikov => 1.0 - d2,
        Kernel::Linear => 1.0 - d2.sqrt(),
        Kernel::Cosine => (std::f64::consts::FRAC_PI_2 * d2.sqrt()).cos(),
        _ => log_profile(kernel, d2).exp(),
    }
}

simd::simd_fn!(
    /// [`block_sum_generic`] at the best SIMD level.
    fn block_sum => block_sum_generic(
        kernel: Kernel,
        img: &[f64],
        coords: &[Vec<f64>],
        s0: usize,
        s1: usize,
        logw: &[f64],
        wlin: &[f64],
        top: f64,
        shift: f64,
        d2: &mut [f64],
        buf: &mut [f64]
    ) -> f64
);

fn add_log(acc: &mut f64, v: f64) {
    if v == f64::NEG_INFINITY {
        return;
    }
    if *acc == f64::NEG_INFINITY {
        *acc = v;
    } else if v > *acc {
        *acc = v + (*acc - v).exp().ln_1p();
    } else {
        *acc += (v - *acc).exp().ln_1p();
    }
}

/// Folded log-sums of m queries: per query log Σ_{kept maps g} Σ_i w_i K(|g z_q − x_i|),
/// plus e^{lse0} when the identity log-sums `lse0` are given (the identity is then not
/// among the pairs, and they set the pruning floor). Without them the floor is the exact
/// sum of the block with the largest bound, a lower bound of the density, so what is
/// skipped is still below e^{−margin} of the density; a query whose every block is out of
/// a compact kernel's reach gets −inf.
///
/// `x` is n × d whitened data, `logw` the log-weights (−inf: skipped), `q` m × d whitened
/// queries, `maps` per map and dimension the pair (s, t) (map-major: maps·d·2 values),
/// `pair_q`/`pair_g` the kept (query, map) pairs sorted by query, `margin` the pruning
/// margin (see the module notes). Allocates the sorted data (d + 1 values per point) and
/// one buffer of [`LEAF`] values per thread.
#[allow(clippy::too_many_arguments)]
pub fn add_images(
    x: &[f64],
    d: usize,
    logw: &[f64],
    kernel: Kernel,
    q: &[f64],
    m: usize,
    lse0: Option<&[f64]>,
    maps: &[f64],
    pair_q: &[usize],
    pair_g: &[usize],
    margin: f64,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    let n = logw.len();
    if lse0.is_some_and(|l| l.len() != m) {
        return Err(invalid!("one identity log-sum per query is needed"));
    }
    if d == 0
        || x.len() != n * d
        || q.len() != m * d
        || !maps.len().is_multiple_of(2 * d)
        || pair_q.len() != pair_g.len()
    {
        return Err(invalid!(
            "add_images needs n·d data, m·d queries, 2·d values per map and one map per pair"
        ));
    }
    let nmaps = maps.len() / (2 * d);
    if pair_q.iter().any(|&v| v >= m)
        || pair_g.iter().any(|&v| v >= nmaps)
        || pair_q.windows(2).any(|p| p[0] > p[1])
    {
        return Err(invalid!(
            "image pairs must name existing queries and maps, sorted by query"
        ));
    }
    let blocks = build_blocks(x, d, logw);
    let nb = blocks.logsum.len();
    super::kdegrid::check_stop(stop)?;
    // Pairs of each query: query i owns pair_q[first[i]..first[i + 1]].
    let mut first = vec![0usize; m + 1];
    for &v in pair_q {
        first[v + 1] += 1;
    }
    for i in 0..m {
        first[i + 1] += first[i];
    }
    let level = simd::level();
    let mut out = vec![f64::NEG_INFINITY; m];
    let b = &blocks;
    // Upper bound of block k's sum at the point `img`.
    let bound = |img: &[f64], k: usize| -> f64 {
        let bx = &b.bbox[k * 2 * d..(k + 1) * 2 * d];
        let mut dmin = 0.0;
        for j in 0..d {
            let v = img[j];
            let e = (bx[j] - v).max(v - bx[d + j]).max(0.0);
            dmin += e * e;
        }
        let ub = b.logsum[k] + log_profile(kernel, dmin);
        if ub.is_nan() {
            f64::NEG_INFINITY
        } else {
            ub
        }
    };
    // Exact log-sum of block k at `img`, given an upper bound `ub` of it.
    let exact = |img: &[f64], k: usize, ub: f64, d2: &mut [f64], buf: &mut [f64]| -> f64 {
        let (s0, s1) = (b.start[k], b.start[k + 1]);
        block_sum(
            level, kernel, img, &b.coords, s0, s1, &b.logw, &b.wlin, b.top, ub, d2, buf,
        ) + ub
    };
    threads::install(|| {
        out.par_chunks_mut(64).enumerate().for_each(|(c, chunk)| {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let mut d2 = vec![0.0f64; LEAF];
            let mut buf = vec![0.0f64; LEAF];
            let mut imgs: Vec<f64> = Vec::new();
            for (r, o) in chunk.iter_mut().enumerate() {
                let i = c * 64 + r;
                let (p0, p1) = (first[i], first[i + 1]);
                let np = p1 - p0;
                imgs.clear();
                for &g in &pair_g[p0..p1] {
                    for j in 0..d {
                        let (s, t) = (maps[(g * d + j) * 2], maps[(g * d + j) * 2 + 1]);
                        imgs.push(s * q[i * d + j] + t);
                    }
                }
                let logn = ((nb * np.max(1)) as f64).ln();
                let (mut acc, cut, done) = match lse0 {
                    Some(l0) => (l0[i], l0[i] - margin - logn, None),
                    None => {
                        // A lower bound of the density: the exact sum of the block with
                        // the largest bound over every image.
                        let mut best = (f64::NEG_INFINITY, 0usize, 0usize);
                        for p in 0..np {
                            for k in 0..nb {
                                let ub = bound(&imgs[p * d..(p + 1) * d], k);
                                if ub > best.0 {
                                    best = (ub, p, k);
                                }
                            }
                        }
                        if best.0 == f64::NEG_INFINITY {
                            *o = f64::NEG_INFINITY;
                            continue;
                        }
                        let (ub, p, k) = best;
                        let v = exact(&imgs[p * d..(p + 1) * d], k, ub, &mut d2, &mut buf);
                        (v, v - margin - logn, Some((p, k)))
                    }
                };
                for p in 0..np {
                    let img = &imgs[p * d..(p + 1) * d];
                    for k in 0..nb {
                        if done == Some((p, k)) {
                            continue;
                        }
                        let ub = bound(img, k);
                        if ub == f64::NEG_INFINITY || ub < cut {
                            continue;
                        }
                        add_log(&mut acc, exact(img, k, ub, &mut d2, &mut buf));
                    }
                }
                *o = acc;
            }
        });
    })?;
    super::kdegrid::check_stop(stop)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::Lcg;

    #[test]
    fn images_match_the_direct_sum() {
        let stop = AtomicBool::new(false);
        let mut g = Lcg::new(7);
        let d = 2;
        let n = 700;
        let x: Vec<f64> = (0..n * d).map(|_| g.unit() * 3.0).collect();
        let logw: Vec<f64> = (0..n).map(|_| g.unit().ln()).collect();
        let m = 50;
        let q: Vec<f64> = (0..m * d).map(|_| g.unit() * 3.0).collect();
        // Reflections at 0 in dim 0, at 3 in dim 1 and both.
        let maps = vec![
            -1.0, 0.0, 1.0, 0.0, //
            1.0, 0.0, -1.0, 6.0, //
            -1.0, 0.0, -1.0, 6.0,
        ];
        for kernel in [
            Kernel::Gaussian,
            Kernel::Exponential,
            Kernel::Epanechnikov,
            Kernel::Tophat,
            Kernel::Linear,
            Kernel::Cosine,
        ] {
            let h = if matches!(kernel, Kernel::Gaussian | Kernel::Exponential) {
                1.0
            } else {
                0.25
            };
            let term = |z: &[f64], i: usize| -> f64 {
                let d2: f64 = (0..d).map(|j| ((z[j] - x[i * d + j]) / h).powi(2)).sum();
                (logw[i] + log_profile(kernel, d2)).exp()
            };
            let xs: Vec<f64> = x.iter().map(|v| v / h).collect();
            let qs: Vec<f64> = q.iter().map(|v| v / h).collect();
            let ms: Vec<f64> = maps.chunks(2).flat_map(|p| [p[0], p[1] / h]).collect();
            let lse0: Vec<f64> = (0..m)
                .map(|i| {
                    (0..n)
                        .map(|k| term(&q[i * d..i * d + d], k))
                        .sum::<f64>()
                        .ln()
                })
                .collect();
            let mut pq = Vec::new();
            let mut pg = Vec::new();
            for i in 0..m {
                for gi in 0..3 {
                    pq.push(i);
                    pg.push(gi);
                }
            }
            let got = add_images(
                &xs,
                d,
                &logw,
                kernel,
                &qs,
                m,
                Some(&lse0),
                &ms,
                &pq,
                &pg,
                45.0,
                &stop,
            )
            .unwrap();
            // The same with the identity as a map and no floor given.
            let mut ms1 = vec![1.0, 0.0, 1.0, 0.0];
            ms1.extend_from_slice(&ms);
            let pg1: Vec<usize> = (0..m).flat_map(|_| 0..4).collect();
            let pq1: Vec<usize> = (0..m).flat_map(|i| [i; 4]).collect();
            let got1 = add_images(
                &xs, d, &logw, kernel, &qs, m, None, &ms1, &pq1, &pg1, 45.0, &stop,
            )
            .unwrap();
            for i in 0..m {
                let mut want = lse0[i].exp();
                for gi in 0..3 {
                    let z: Vec<f64> = (0..d)
                        .map(|j| maps[(gi * d + j) * 2] * q[i * d + j] + maps[(gi * d + j) * 2 + 1])
                        .collect();
                    want += (0..n).map(|k| term(&z, k)).sum::<f64>();
                }
                let want = want.ln();
                for v in [got[i], got1[i]] {
                    if want.is_finite() {
                        assert!((v - want).abs() < 1e-12 * want.abs().max(1.0), "{kernel:?}");
                    } else {
                        assert_eq!(v, want);
                    }
                }
            }
        }
    }
}
