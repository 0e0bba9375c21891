//! The image terms of a bounded (reflected or periodic) KDE in any dimension, in one pass
//! over the data (issue 11).
//!
//! A bounded estimate at a query q is Σ_g Σ_i w_i K(|g q − x_i|) over the image maps g of
//! the fold (`divest/_kdebounds.py`); in whitened coordinates every map acts per
//! dimension as z ↦ s·z + t (the bounded rows of the bandwidth are diagonal). The identity
//! term is the unbounded estimate, which the caller usually computes with the pairwise
//! engine; this module adds the other images' terms for the (query, map) pairs the fold's
//! proven tests keep.
//!
//! **Layout.** The data are sorted once into blocks of exactly [`LEAF`] points (a k-d
//! split on the widest side at a multiple of [`LEAF`], so only the last block is short and
//! is padded with points at infinity of weight 0), stored per block as d rows of [`LEAF`]
//! coordinates, with bounding boxes. The queries are sorted the same way into blocks of
//! [`QBLOCK`]; one query block is one task (the partition does not depend on the thread
//! count, so neither do the results).
//!
//! **Pruning, and what it guarantees.** Let S be the query's full folded sum and F ≤ S a
//! floor: the identity log-sum when given, else the exact sum of the block with the
//! largest bound over the query's images (Gaussian, exponential) or nothing (compact
//! kernels, whose terms vanish beyond the reach). A block B is bounded at an image point z
//! by U = log Σ_{i∈B} w_i + log K(dist(z, box_B)) (K decreases with the distance). Two
//! rules skip it, each with half of the budget e^{−margin}·S:
//! * fixed: U < log F − margin − ln 2 − ln(blocks·images of the query): the union bound
//!   over every (image, block) keeps their total below ½e^{−margin}·F. The same test on
//!   the box of a query block's images skips a data block for the whole query block;
//! * running: the skipped bounds of this rule so far plus e^U stay below ½e^{−margin}·S′,
//!   S′ ≤ S the sum accumulated so far (exact terms only, so it only grows).
//!
//! So everything skipped is below e^{−margin}·S; with the caller's margin of 45 that is
//! 2.9e-20 of the density, under 1/3800 of the density's rounding (2^−53 ≈ 1.1e-16). A
//! kept block is summed exactly: squared distances of its [`LEAF`] points into registers,
//! then the SIMD exponential sum (Gaussian, exponential) or the profile (compact kernels),
//! added in linear space against a running shift (the largest bound so far), so a kept
//! block costs no logarithm.

use std::f64::consts::LN_2;
use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use crate::core::error::{invalid, Result};
use crate::core::kde::Kernel;
use crate::core::simd::{self, Fma, SimdTask};
use crate::core::threads;

/// Points per data block.
pub const LEAF: usize = 128;
/// Queries per task.
pub const QBLOCK: usize = 64;
/// Blocks per map summed first for every query of a query block when no floor is given.
const SEED: usize = 4;
/// Seeds whose bound is this far below the query's best are not summed first.
const SEED_SPAN: f64 = 10.0;

/// k-d order of the points `idx` (rows of the n × d `x`): leaves of exactly `leaf` points
/// (the last one shorter), split on the widest side at a multiple of `leaf`. Returns the
/// permuted indices; leaf b is `idx[b·leaf..]`.
fn kd_order(x: &[f64], d: usize, mut idx: Vec<usize>, leaf: usize) -> Vec<usize> {
    let mut stack = vec![(0usize, idx.len())];
    while let Some((a, b)) = stack.pop() {
        if b - a <= leaf {
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
        // The left part holds a whole number of leaves, about half of the range.
        let left = leaf * (b - a).div_ceil(2 * leaf);
        idx[a..b].select_nth_unstable_by(left, |&p, &q| x[p * d + j].total_cmp(&x[q * d + j]));
        stack.push((a + left, b));
        stack.push((a, a + left));
    }
    idx
}

struct Blocks {
    nb: usize,
    /// Block k: d rows of [`LEAF`] coordinates from `k·d·LEAF` (padding: +inf).
    coords: Vec<f64>,
    /// Log-weights, [`LEAF`] per block (padding: −inf).
    logw: Vec<f64>,
    /// e^{logw − top} (compact kernels; padding: 0).
    wlin: Vec<f64>,
    /// Bounding boxes: d lows then d highs per block (real points only).
    bbox: Vec<f64>,
    /// log Σ w over each block.
    logsum: Vec<f64>,
    /// The largest log-weight.
    top: f64,
    /// The common log-weight when every kept point has the same one.
    uniform: Option<f64>,
}

fn build_blocks(x: &[f64], d: usize, logw: &[f64]) -> Blocks {
    let n = logw.len();
    let idx: Vec<usize> = (0..n).filter(|&i| logw[i] > f64::NEG_INFINITY).collect();
    let idx = kd_order(x, d, idx, LEAF);
    let nb = idx.len().div_ceil(LEAF);
    let mut coords = vec![f64::INFINITY; nb * d * LEAF];
    let mut lw = vec![f64::NEG_INFINITY; nb * LEAF];
    let mut bbox = Vec::with_capacity(nb * 2 * d);
    let mut logsum = Vec::with_capacity(nb);
    for (k, chunk) in idx.chunks(LEAF).enumerate() {
        let mut lo = vec![f64::INFINITY; d];
        let mut hi = vec![f64::NEG_INFINITY; d];
        let top = chunk
            .iter()
            .map(|&i| logw[i])
            .fold(f64::NEG_INFINITY, f64::max);
        let mut s = 0.0;
        for (l, &i) in chunk.iter().enumerate() {
            for j in 0..d {
                let v = x[i * d + j];
                coords[(k * d + j) * LEAF + l] = v;
                lo[j] = lo[j].min(v);
                hi[j] = hi[j].max(v);
            }
            lw[k * LEAF + l] = logw[i];
            s += (logw[i] - top).exp();
        }
        bbox.extend_from_slice(&lo);
        bbox.extend_from_slice(&hi);
        logsum.push(top + s.ln());
    }
    let top = lw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let wlin = lw.iter().map(|v| (v - top).exp()).collect();
    let first = idx.first().map(|&i| logw[i]);
    let uniform = first.filter(|&w0| idx.iter().all(|&i| logw[i] == w0));
    Blocks {
        nb,
        coords,
        logw: lw,
        wlin,
        bbox,
        logsum,
        top,
        uniform,
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

/// An upper bound of log K at squared distances ≥ `d2`, cheap: the profile for the
/// Gaussian and exponential kernels; 0 within the reach of a compact kernel (K ≤ 1).
#[inline(always)]
fn log_profile_ub(kernel: Kernel, d2: f64) -> f64 {
    match kernel {
        Kernel::Gaussian => -0.5 * d2,
        Kernel::Exponential => -d2.sqrt(),
        _ => {
            if d2 < 1.0 {
                0.0
            } else {
                f64::NEG_INFINITY
            }
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

/// An upper bound of ln x for x ≥ 0 from its exponent bits: (e + 1)·ln 2 for x in
/// [2^e, 2^{e+1}) (subnormals and 0 get −1022·ln 2, also above their logarithm).
#[inline(always)]
fn ln_hi(x: f64) -> f64 {
    (((x.to_bits() >> 52) & 0x7ff) as i64 - 1022) as f64 * LN_2
}

/// Σ_j exp(c·dd_j + w_j + b) ([`simd::lin_exp_sum`], `dd` at most [`LEAF`] long); the
/// scratch the portable path needs is made only there (the AVX paths never read it, and
/// zeroing it was a 1 KiB memset per kept block).
#[inline(always)]
fn exp_sum<M: Fma>(dd: &[f64], w: Option<&[f64]>, c: f64, b: f64) -> f64 {
    if M::AVX2 || M::AVX512 {
        simd::lin_exp_sum::<M>(dd, w, c, b, None, &mut [])
    } else {
        let mut buf = [0.0f64; LEAF];
        simd::lin_exp_sum::<M>(dd, w, c, b, None, &mut buf)
    }
}

/// What one query-block task reads.
struct Ctx<'a> {
    b: &'a Blocks,
    kernel: Kernel,
    d: usize,
    q: &'a [f64],
    maps: &'a [f64],
    first: &'a [usize],
    pair_g: &'a [usize],
    lse0: Option<&'a [f64]>,
    margin: f64,
}

impl Ctx<'_> {
    /// Upper bound of block k's log-sum at the point `img`.
    #[inline(always)]
    fn bound(&self, img: &[f64], k: usize) -> f64 {
        let d = self.d;
        let bx = &self.b.bbox[k * 2 * d..(k + 1) * 2 * d];
        let mut dmin = 0.0;
        for j in 0..d {
            let v = img[j];
            let e = (bx[j] - v).max(v - bx[d + j]).max(0.0);
            dmin += e * e;
        }
        let ub = self.b.logsum[k] + log_profile_ub(self.kernel, dmin);
        if ub.is_nan() {
            f64::NEG_INFINITY
        } else {
            ub
        }
    }

    /// Block k's sum at `img` over e^{shift} (`shift` ≥ the block's bound for the
    /// Gaussian and exponential kernels; the top log-weight for compact kernels).
    #[inline(always)]
    fn block_sum<M: Fma>(&self, img: &[f64], k: usize, shift: f64) -> f64 {
        let b = self.b;
        let d = self.d;
        let mut dd = [0.0f64; LEAF];
        match d {
            2 => self.dists::<M, 2>(img, k, &mut dd),
            3 => self.dists::<M, 3>(img, k, &mut dd),
            _ => {
                for (j, &v) in img.iter().enumerate() {
                    let col: &[f64; LEAF] = b.coords[(k * d + j) * LEAF..(k * d + j + 1) * LEAF]
                        .try_into()
                        .unwrap();
                    for l in 0..LEAF {
                        let t = v - col[l];
                        dd[l] = M::ma(t, t, dd[l]);
                    }
                }
            }
        }
        let lw = &b.logw[k * LEAF..(k + 1) * LEAF];
        let c = match self.kernel {
            Kernel::Gaussian => -0.5,
            Kernel::Exponential => {
                for v in dd.iter_mut() {
                    *v = v.sqrt();
                }
                -1.0
            }
            kernel => {
                // Compact kernels: the profile itself (weights ≤ 1 relative to the top).
                let wl = &b.wlin[k * LEAF..(k + 1) * LEAF];
                let mut s = 0.0;
                for (&v, &w) in dd.iter().zip(wl) {
                    if v < 1.0 {
                        s += w * profile(kernel, v);
                    }
                }
                return s;
            }
        };
        match b.uniform {
            Some(w0) => exp_sum::<M>(&dd, None, c, w0 - shift),
            None => exp_sum::<M>(&dd, Some(lw), c, -shift),
        }
    }

    /// Squared distances from `img` to block k's points in d = `D`: one pass over the
    /// block with the D coordinates' terms summed in registers (the same operations, in
    /// the same order, as the per-dimension passes of the general case).
    #[inline(always)]
    fn dists<M: Fma, const D: usize>(&self, img: &[f64], k: usize, dd: &mut [f64; LEAF]) {
        let c: &[f64] = &self.b.coords[k * D * LEAF..(k + 1) * D * LEAF];
        let z: [f64; D] = std::array::from_fn(|j| img[j]);
        let cols: [&[f64; LEAF]; D] =
            std::array::from_fn(|j| c[j * LEAF..(j + 1) * LEAF].try_into().unwrap());
        for l in 0..LEAF {
            let mut s = 0.0;
            for j in 0..D {
                let t = z[j] - cols[j][l];
                s = M::ma(t, t, s);
            }
            dd[l] = s;
        }
    }

    /// The image of query i under map g.
    #[inline(always)]
    fn image(&self, i: usize, g: usize, img: &mut [f64]) {
        let d = self.d;
        for (j, v) in img.iter_mut().enumerate() {
            let (s, t) = (self.maps[(g * d + j) * 2], self.maps[(g * d + j) * 2 + 1]);
            *v = s * self.q[i * d + j] + t;
        }
    }

    /// Bounds of every block over the box [lo, hi] (one map's images of a query block)
    /// into `ubox`.
    fn box_bounds(&self, lo: &[f64], hi: &[f64], ubox: &mut Vec<f64>) {
        let (b, d) = (self.b, self.d);
        ubox.clear();
        for k in 0..b.nb {
            let bx = &b.bbox[k * 2 * d..(k + 1) * 2 * d];
            let mut dmin = 0.0;
            for j in 0..d {
                let e = (bx[j] - hi[j]).max(lo[j] - bx[d + j]).max(0.0);
                dmin += e * e;
            }
            let ub = b.logsum[k] + log_profile_ub(self.kernel, dmin);
            ubox.push(if ub.is_nan() { f64::NEG_INFINITY } else { ub });
        }
    }

    /// Adds block k at `img` to row r (`ub` its bound): rescales the row's sum when `ub`
    /// exceeds its shift (Gaussian and exponential kernels).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn add<M: Fma>(
        &self,
        log_mode: bool,
        r: usize,
        img: &[f64],
        k: usize,
        ub: f64,
        shift: &mut [f64],
        sum: &mut [f64],
        waste: &mut [f64],
    ) {
        if log_mode && ub > shift[r] {
            let f = simd::exp::<M>(shift[r] - ub);
            sum[r] *= f;
            waste[r] *= f;
            shift[r] = ub;
        }
        sum[r] += self.block_sum::<M>(img, k, shift[r]);
    }

    /// The box [lo, hi] of map g's images of the member rows.
    fn image_box(
        &self,
        rows: &[usize],
        g: usize,
        members: &[(usize, usize)],
        img: &mut [f64],
        lo: &mut [f64],
        hi: &mut [f64],
    ) {
        lo.fill(f64::INFINITY);
        hi.fill(f64::NEG_INFINITY);
        for &(_, r) in members {
            self.image(rows[r], g, img);
            for j in 0..self.d {
                lo[j] = lo[j].min(img[j]);
                hi[j] = hi[j].max(img[j]);
            }
        }
    }

    /// The folded log-sums of the queries `rows` (one query block) into `out`.
    #[inline(always)]
    fn run_block<M: Fma>(&self, rows: &[usize], out: &mut [f64]) {
        let (b, d, nb) = (self.b, self.d, self.b.nb);
        let nr = rows.len();
        let log_mode = matches!(self.kernel, Kernel::Gaussian | Kernel::Exponential);
        let half_eps = 0.5 * (-self.margin).exp();
        let ln_half_eps = -self.margin - LN_2;
        // Per row: the sum so far is e^{shift}·sum; `waste` the running rule's skipped
        // bounds (same scale); `cut` the fixed rule's threshold.
        let mut shift = [0.0f64; QBLOCK];
        let mut sum = [0.0f64; QBLOCK];
        let mut waste = [0.0f64; QBLOCK];
        let mut cut = [f64::NEG_INFINITY; QBLOCK];
        let mut img = vec![0.0f64; d];
        // (map, row) pairs, grouped by map.
        let mut pairs: Vec<(usize, usize)> = Vec::new();
        for (r, &i) in rows.iter().enumerate() {
            for p in self.first[i]..self.first[i + 1] {
                pairs.push((self.pair_g[p], r));
            }
        }
        pairs.sort_unstable();
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let mut a = 0;
        while a < pairs.len() {
            let mut e = a;
            while e < pairs.len() && pairs[e].0 == pairs[a].0 {
                e += 1;
            }
            groups.push((a, e));
            a = e;
        }
        let seeded = log_mode && self.lse0.is_none();
        for (r, &i) in rows.iter().enumerate() {
            let l0 = self.lse0.map(|l| l[i]).unwrap_or(f64::NEG_INFINITY);
            if log_mode {
                (shift[r], sum[r]) = if l0 > f64::NEG_INFINITY {
                    (l0, 1.0)
                } else {
                    (f64::NEG_INFINITY, if l0.is_nan() { l0 } else { 0.0 })
                };
            } else {
                (shift[r], sum[r]) = (b.top, (l0 - b.top).exp());
            }
        }
        let (mut lo, mut hi) = (vec![0.0f64; d], vec![0.0f64; d]);
        let mut ubox: Vec<f64> = Vec::with_capacity(nb);
        // Seed (no floor given, Gaussian and exponential kernels): per map, the SEED
        // blocks with the largest bounds over the block's images, summed exactly for
        // every member row; their sum is the floor.
        let mut seeds: Vec<[usize; SEED]> = Vec::new();
        let mut smax = [f64::NEG_INFINITY; QBLOCK];
        if seeded {
            for &(a, e) in &groups {
                let g = pairs[a].0;
                self.image_box(rows, g, &pairs[a..e], &mut img, &mut lo, &mut hi);
                self.box_bounds(&lo, &hi, &mut ubox);
                let mut top = [usize::MAX; SEED];
                for (k, &u) in ubox.iter().enumerate() {
                    if u == f64::NEG_INFINITY {
                        continue;
                    }
                    // Insertion into the sorted top list.
                    let mut pos = SEED;
                    while pos > 0 && (top[pos - 1] == usize::MAX || ubox[top[pos - 1]] < u) {
                        pos -= 1;
                    }
                    if pos < SEED {
                        top.copy_within(pos..SEED - 1, pos + 1);
                        top[pos] = k;
                    }
                }
                for &(_, r) in &pairs[a..e] {
                    self.image(rows[r], g, &mut img);
                    for &k in top.iter().filter(|&&k| k != usize::MAX) {
                        smax[r] = smax[r].max(self.bound(&img, k));
                    }
                }
                seeds.push(top);
            }
            // The seeds within SEED_SPAN of the row's best, summed exactly.
            for (gi, &(a, e)) in groups.iter().enumerate() {
                let g = pairs[a].0;
                for &(_, r) in &pairs[a..e] {
                    self.image(rows[r], g, &mut img);
                    for &k in seeds[gi].iter().filter(|&&k| k != usize::MAX) {
                        let ub = self.bound(&img, k);
                        if ub > f64::NEG_INFINITY && ub >= smax[r] - SEED_SPAN {
                            self.add::<M>(
                                log_mode, r, &img, k, ub, &mut shift, &mut sum, &mut waste,
                            );
                        }
                    }
                }
            }
        }
        for (r, &i) in rows.iter().enumerate() {
            let np = self.first[i + 1] - self.first[i];
            let floor = shift[r] + sum[r].ln();
            cut[r] = floor - self.margin - LN_2 - ((nb * np.max(1)) as f64).ln();
            if cut[r].is_nan() || !log_mode {
                cut[r] = f64::NEG_INFINITY;
            }
        }
        let mut cands: Vec<(f64, usize)> = Vec::with_capacity(nb);
        for (gi, &(a, e)) in groups.iter().enumerate() {
            let g = pairs[a].0;
            let members = &pairs[a..e];
            self.image_box(rows, g, members, &mut img, &mut lo, &mut hi);
            self.box_bounds(&lo, &hi, &mut ubox);
            let box_cut = members
                .iter()
                .map(|&(_, r)| cut[r])
                .fold(f64::INFINITY, f64::min);
            let seed = seeds.get(gi).copied().unwrap_or([usize::MAX; SEED]);
            cands.clear();
            for (k, &u) in ubox.iter().enumerate() {
                if u > f64::NEG_INFINITY && u >= box_cut {
                    cands.push((u, k));
                }
            }
            // Nearest first: the running rule's sum grows fastest.
            cands.sort_unstable_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
            for &(_, r) in members {
                self.image(rows[r], g, &mut img);
                // Beyond this the running rule cannot skip (sum < 2^{ln_hi/ln2}).
                let mut pre = ln_half_eps + ln_hi(sum[r]);
                for &(_, k) in &cands {
                    let ub = self.bound(&img, k);
                    if ub > f64::NEG_INFINITY && ub >= smax[r] - SEED_SPAN && seed.contains(&k) {
                        continue; // summed as a seed
                    }
                    if ub == f64::NEG_INFINITY || ub < cut[r] {
                        continue;
                    }
                    if ub - shift[r] <= pre {
                        let t = simd::exp::<M>(ub - shift[r]);
                        if waste[r] + t <= half_eps * sum[r] {
                            waste[r] += t;
                            continue;
                        }
                    }
                    self.add::<M>(log_mode, r, &img, k, ub, &mut shift, &mut sum, &mut waste);
                    pre = ln_half_eps + ln_hi(sum[r]);
                }
            }
        }
        for r in 0..nr {
            out[r] = if sum[r] > 0.0 {
                shift[r] + sum[r].ln()
            } else if sum[r].is_nan() {
                f64::NAN
            } else {
                f64::NEG_INFINITY
            };
        }
    }
}

/// One query block as a [`SimdTask`].
struct BlockTask<'a> {
    ctx: &'a Ctx<'a>,
    rows: &'a [usize],
    out: &'a mut [f64],
}

impl SimdTask for BlockTask<'_> {
    type Output = ();
    #[inline(always)]
    fn run<M: Fma>(self) {
        self.ctx.run_block::<M>(self.rows, self.out)
    }
}

/// Folded log-sums of m queries: per query log Σ_{kept maps g} Σ_i w_i K(|g z_q − x_i|),
/// plus e^{lse0} when the identity log-sums `lse0` are given (the identity is then not
/// among the pairs, and they set the pruning floor). Without them the floor is the exact
/// sum of the block with the largest bound (Gaussian, exponential), a lower bound of the
/// density; compact kernels skip only blocks out of reach and what the running rule
/// allows. Everything skipped is below e^{−margin} of the density (see the module notes);
/// a query whose every block is out of a compact kernel's reach gets −inf, and a NaN
/// `lse0` gives NaN.
///
/// `x` is n × d whitened data, `logw` the log-weights (−inf: skipped), `q` m × d whitened
/// queries, `maps` per map and dimension the pair (s, t) (map-major: maps·d·2 values),
/// `pair_q`/`pair_g` the kept (query, map) pairs sorted by query, `margin` the pruning
/// margin (≥ 0). Every coordinate and map must be finite. Allocates the sorted data (d + 2
/// values per point), the query order (one index per query) and a few values per query
/// block in flight; stops within one query block of `stop`.
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
    if margin.is_nan() || margin < 0.0 {
        return Err(invalid!("the pruning margin must be >= 0"));
    }
    if !(x.iter().chain(q).chain(maps).all(|v| v.is_finite())) {
        return Err(invalid!("whitened data, queries and maps must be finite"));
    }
    if logw.iter().any(|v| v.is_nan() || *v == f64::INFINITY) {
        return Err(invalid!("log-weights must be finite or -inf"));
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
    threads::check(stop)?;
    // Pairs of each query: query i owns pair_q[first[i]..first[i + 1]].
    let mut first = vec![0usize; m + 1];
    for &v in pair_q {
        first[v + 1] += 1;
    }
    for i in 0..m {
        first[i + 1] += first[i];
    }
    let mut out: Vec<f64> = match lse0 {
        Some(l) => l.to_vec(),
        None => vec![f64::NEG_INFINITY; m],
    };
    let busy: Vec<usize> = (0..m).filter(|&i| first[i + 1] > first[i]).collect();
    let order = kd_order(q, d, busy, QBLOCK);
    let ctx = Ctx {
        b: &blocks,
        kernel,
        d,
        q,
        maps,
        first: &first,
        pair_g,
        lse0,
        margin,
    };
    let level = simd::level();
    let mut res = vec![0.0f64; order.len()];
    threads::install(|| {
        res.par_chunks_mut(QBLOCK)
            .zip(order.par_chunks(QBLOCK))
            .try_for_each(|(o, rows)| -> Result<()> {
                threads::check(stop)?;
                simd::dispatch(
                    level,
                    BlockTask {
                        ctx: &ctx,
                        rows,
                        out: o,
                    },
                );
                Ok(())
            })
    })??;
    for (&i, &v) in order.iter().zip(&res) {
        out[i] = v;
    }
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

    /// d = 3 and 4 (the register-resident distances of d = 2, 3 and the general
    /// per-dimension passes), Gaussian, no floor given: against the direct image sums.
    #[test]
    fn images_match_the_direct_sum_in_3d_and_4d() {
        let stop = AtomicBool::new(false);
        for d in [3usize, 4] {
            let mut g = Lcg::new(11 + d as u64);
            let n = 300;
            let m = 70;
            let x: Vec<f64> = (0..n * d).map(|_| g.unit() * 2.5).collect();
            let logw: Vec<f64> = (0..n).map(|_| g.unit().ln()).collect();
            let q: Vec<f64> = (0..m * d).map(|_| g.unit() * 2.5).collect();
            // Identity, reflection at 0 in dim 0, at 2.5 in dim 1, and both.
            let mut maps = Vec::new();
            for (s0, t0, s1, t1) in [
                (1.0, 0.0, 1.0, 0.0),
                (-1.0, 0.0, 1.0, 0.0),
                (1.0, 0.0, -1.0, 5.0),
                (-1.0, 0.0, -1.0, 5.0),
            ] {
                maps.extend_from_slice(&[s0, t0, s1, t1]);
                for _ in 2..d {
                    maps.extend_from_slice(&[1.0, 0.0]);
                }
            }
            let pq: Vec<usize> = (0..m).flat_map(|i| [i; 4]).collect();
            let pg: Vec<usize> = (0..m).flat_map(|_| 0..4).collect();
            let got = add_images(
                &x,
                d,
                &logw,
                Kernel::Gaussian,
                &q,
                m,
                None,
                &maps,
                &pq,
                &pg,
                45.0,
                &stop,
            )
            .unwrap();
            for i in 0..m {
                let mut want = 0.0;
                for gi in 0..4 {
                    let z: Vec<f64> = (0..d)
                        .map(|j| maps[(gi * d + j) * 2] * q[i * d + j] + maps[(gi * d + j) * 2 + 1])
                        .collect();
                    for k in 0..n {
                        let d2: f64 = (0..d).map(|j| (z[j] - x[k * d + j]).powi(2)).sum();
                        want += (logw[k] - 0.5 * d2).exp();
                    }
                }
                let want = want.ln();
                assert!(
                    (got[i] - want).abs() < 1e-12 * want.abs().max(1.0),
                    "d = {d}"
                );
            }
        }
    }
}
