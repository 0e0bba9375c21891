//! Binned Gaussian estimates on 2-D and 3-D grids.
//!
//! **Moment-corrected binning.** Linear binning moves a point at x = (k + t)δ (per axis)
//! onto the nodes k, k + 1 with masses 1 − t, t: the mean is kept, but the spread grows
//! by δ²·u with u = t(1 − t), so the binned sum Σ_nodes m_j K(g − g_j) is
//! f(g) + (δ²/2)·Σ_p w_p u_p·K″(g − x_p) up to O(δ³). [`bin_corrected`] removes that term
//! from the bins themselves: it also sums A_a = Σ w·u_a at the cell's centre along axis a
//! (linearly binned along the other axes), spreads it onto the two nodes with weights
//! ½, ½, and subtracts ½·Δ²_a of it (Δ²_a the second difference along axis a). Since a
//! convolution commutes with differences, convolving the corrected bins with the kernel
//! equals the plain binned sum minus (δ_a²/2)·(A_a ∗ K″), at no extra convolution cost.
//! It sums O_a = Σ w·u_a(1 − 2t_a) the same way and adds (1/12)·Δ³_a of it (the third
//! difference (−1, 3, −3, 1)/12 about the cell centre), which cancels the third-order
//! term −(δ³/12)·Σ w·u(1 − 2t)·K‴. Along axis a a point's mass becomes a 4-node stencil,
//! linear along the other axes, which keeps every moment Π x_a^{e_a} with e_a ≤ 3 and at
//! most one e_a > 1 exactly, whatever the distribution of t (rounded or lattice data
//! included). What is left is −(δ⁴/24)·Σ w·(2u + u²)·∂⁴K per axis (mean
//! (11/720)·δ⁴·f⁗ for continuous data) and −(δ_a²δ_b²/4)·Σ w u_a u_b·∂²_a∂²_b K per pair
//! of axes; [`error_estimate`] estimates them.
//!
//! Each point adds its share of all three terms to the nodes directly (a 4-node stencil
//! along each axis, linear along the others: 12 nodes in 2-D, one value per node). The
//! points are first counting-sorted by band of rows (cells along axis 0), so that the
//! rows a band writes stay in cache; bands are fixed by the lattice, not by the thread
//! count, and those of equal parity run in parallel, so the bins are bit-identical for
//! every number of threads.
//!
//! **Error fields in the same pass (2-D).** The Gaussian grid's error estimate
//! (`errfield`, `divest/_kdeerr.py`) needs per point w·(2u₀ + u₀²), w·(2u₁ + u₁²) and
//! w·u₀u₁ binned bilinearly onto a coarse lattice (r_a grid steps apart). When that
//! lattice lines up with the bins (whole ratios r_a and offsets, containing the bin
//! lattice, and bands at least a few coarse rows tall so that two bands that run at the
//! same time never write the same coarse row: [`field_plan`]), [`bin_corrected_fields`]
//! adds them in the band loop from the positions it already has, so the points are read
//! once; otherwise (3-D, odd lattices) the fields are binned in their own pass. Either
//! way the fields are those of `errfield::error_fields` over the binned points (to
//! rounding; tested), bit-identical for every thread count.
//!
//! The diagonal-bandwidth path [`binned_nd`] then runs one direct 1-D convolution per
//! axis, each computed only at the grid points (no padded d-dimensional FFT), register-
//! blocked ([`conv_axis`]).

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

/// How many standard deviations of the zero-mean fourth-order binning term the error
/// estimate adds: the largest of many nearly independent Gaussian values over a grid is
/// about 3 to 4 of their standard deviations, but the other terms add up with it; 2.5 keeps
/// the estimate within 2× of the true
/// error on small and large grids alike (tests).
pub const NOISE_Z: f64 = 2.5;

/// Result of [`binned_nd`]: row-major (last axis fastest) sums and error estimates.
#[derive(Clone, Debug)]
pub struct BinnedNd {
    pub sums: Vec<f64>,
    /// The pointwise estimate of [`error_estimate`]; empty when not asked for.
    pub err: Vec<f64>,
    /// The error fields on the coarse lattice asked for ([`bin_corrected_fields`]);
    /// empty when not asked for.
    pub fields: Vec<f64>,
}

/// What [`bin_corrected`] measures about the fractional positions t_a of the binned
/// points (u_a = t_a(1 − t_a)), for the error estimate.
#[derive(Clone, Debug, PartialEq)]
pub struct BinStats {
    /// Σ w·(2u_a + u_a²) per axis: the fourth-order binning term's weight (11·Σw/30 for
    /// uniform t, 0 for points on the nodes).
    pub q1: Vec<f64>,
    /// Σ w·(2u_a + u_a²)² per axis.
    pub q2: Vec<f64>,
    /// Σ w·u_a per axis (Σw/6 for uniform t).
    pub even: Vec<f64>,
    /// Σ w and Σ w² over the binned points.
    pub sum_w: f64,
    pub sum_w2: f64,
}

impl BinStats {
    /// Flattened as (q1, q2, even, sum_w, sum_w2), for the bindings.
    pub fn to_vec(&self) -> Vec<f64> {
        let mut v = self.q1.clone();
        v.extend_from_slice(&self.q2);
        v.extend_from_slice(&self.even);
        v.push(self.sum_w);
        v.push(self.sum_w2);
        v
    }

    /// Inverse of [`BinStats::to_vec`] for `d` axes.
    pub fn from_slice(v: &[f64], d: usize) -> Result<BinStats> {
        if v.len() != NSTAT * d + 2 {
            return Err(invalid!(
                "binning statistics need {} values for {d} axes; got {}",
                NSTAT * d + 2,
                v.len()
            ));
        }
        Ok(BinStats {
            q1: v[..d].to_vec(),
            q2: v[d..2 * d].to_vec(),
            even: v[2 * d..3 * d].to_vec(),
            sum_w: v[3 * d],
            sum_w2: v[3 * d + 1],
        })
    }
}

/// Per-axis statistics in [`BinStats`] (q1, q2, even); Σw and Σw² follow them.
const NSTAT: usize = 3;

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        s[a] = s[a + 1] * shape[a + 1];
    }
    s
}

/// Points per group of the band sort in [`bin_corrected`]: each group is counting-sorted
/// by its points' row band on its own, so groups sort in parallel.
const GROUP: usize = 1 << 18;
/// Groups sorted and binned at a time: bounds the sorted copy to WAVE·GROUP points.
const WAVE: usize = 8;
/// Row bands per lattice (at most) in the binning pass of [`bin_corrected`].
const BANDS: usize = 64;

/// The node lattice of [`bin_corrected`] as the binning loops see it: one value per node,
/// with one margin node below and above along every axis (a point's stencil reaches one
/// node below its cell and two above; the margins take what falls off the lattice).
struct Lat<const D: usize> {
    lo: [f64; D],
    inv: [f64; D],
    /// nb_a − 1: the largest position kept.
    last: [f64; D],
    /// nb_a − 2: the largest cell index.
    kmax: [usize; D],
    /// Strides of the padded lattice ((nb_a + 2) nodes per axis).
    st: [usize; D],
    /// Rows (cells along axis 0) per band.
    band: usize,
    /// The band of each row (a table read is cheaper than a division per point).
    band_of: Vec<u32>,
}

impl<const D: usize> Lat<D> {
    fn new(lo: &[f64], inv: &[f64], nb: &[usize], band: usize) -> Lat<D> {
        let mut l = Lat {
            lo: [0.0; D],
            inv: [0.0; D],
            last: [0.0; D],
            kmax: [0; D],
            st: [0; D],
            band,
            band_of: (0..nb[0] - 1).map(|k| (k / band) as u32).collect(),
        };
        let mut s = 1;
        for a in (0..D).rev() {
            l.lo[a] = lo[a];
            l.inv[a] = inv[a];
            l.last[a] = (nb[a] - 1) as f64;
            l.kmax[a] = nb[a] - 2;
            l.st[a] = s;
            s *= nb[a] + 2;
        }
        l
    }

    /// The positions of a point on the bin lattice, or None when it lies outside (NaN
    /// included).
    #[inline(always)]
    fn locate(&self, row: &[f64]) -> Option<[f64; D]> {
        let mut pos = [0.0f64; D];
        for a in 0..D {
            let p = (row[a] - self.lo[a]) * self.inv[a];
            if !(p >= 0.0 && p <= self.last[a]) {
                return None;
            }
            pos[a] = p;
        }
        Some(pos)
    }

    /// Cell index and fraction of position `p` along axis `a`.
    #[inline(always)]
    fn cell(&self, p: f64, a: usize) -> (usize, f64) {
        // p is in [0, nb_a − 1] (checked by `locate`): the signed conversion is one
        // instruction where the unsigned one is several.
        let k = ((p as i64) as usize).min(self.kmax[a]);
        (k, p - k as f64)
    }
}

/// Counting-sorts the points of one group by row band into `rec` (`r` values per point:
/// the positions along every axis, then the weight when `w` is given) and writes where
/// each band starts in `starts` (one entry per band and one more, relative to the group).
/// Points outside the lattice or with zero (or NaN) weight are dropped. Returns whether
/// every value was valid.
fn sort_group<const D: usize>(
    lat: &Lat<D>,
    x: &[f64],
    w: Option<&[f64]>,
    rec: &mut [f64],
    starts: &mut [usize],
) -> bool {
    let nbands = starts.len() - 1;
    let r = D + w.is_some() as usize;
    let keep = |i: usize, row: &[f64]| -> Option<(usize, [f64; D])> {
        if let Some(w) = w {
            let v = w[i];
            if v.is_nan() || v <= 0.0 {
                return None;
            }
        }
        let pos = lat.locate(row)?;
        Some((lat.band_of[lat.cell(pos[0], 0).0] as usize, pos))
    };
    let mut wrong = false;
    let mut count = vec![0usize; nbands + 1];
    for (i, row) in x.chunks_exact(D).enumerate() {
        wrong |= !row.iter().all(|v| v.is_finite());
        if let Some(w) = w {
            wrong |= !(0.0..f64::INFINITY).contains(&w[i]);
        }
        if let Some((b, _)) = keep(i, row) {
            count[b + 1] += 1;
        }
    }
    for b in 0..nbands {
        count[b + 1] += count[b];
    }
    starts.copy_from_slice(&count);
    for (i, row) in x.chunks_exact(D).enumerate() {
        if let Some((b, pos)) = keep(i, row) {
            let o = count[b] * r;
            count[b] += 1;
            let dst = &mut rec[o..o + r];
            dst[..D].copy_from_slice(&pos);
            if let Some(w) = w {
                dst[D] = w[i];
            }
        }
    }
    !wrong
}

/// Per-band statistics: q1, q2, even per axis, then Σw and Σw².
type Stats = Vec<f64>;

/// Bins the sorted points of band `b` (from every group of the wave) into `slab`, the
/// padded lattice from row b·band on (the band's cells k reach the padded rows k ..= k + 3).
/// Returns the statistics of the band's points.
///
/// A point with fractions t_a (u_a = t_a(1 − t_a), o_a = u_a(1 − 2t_a)) in cell k_a
/// gives, along axis a and linearly binned along the others, the nodes k_a − 1 ..= k_a + 2
/// the weights (−u/4 − o/12, u/4 + o/4, u/4 − o/4, −u/4 + o/12): the correction
/// −½·Δ²_a(P_a A_a) + (1/12)·Δ³_a O_a of the module notes applied point by point; the
/// node masses 1 − t_0, t_0 of axis 0 join the middle two.
#[allow(clippy::too_many_arguments)]
fn bin_band<const D: usize>(
    lat: &Lat<D>,
    rec: &[f64],
    starts: &[Vec<usize>],
    offs: &[usize],
    r: usize,
    wu: f64,
    b: usize,
    slab: &mut [f64],
) -> Stats {
    let mut q1 = [0.0f64; D];
    let mut q2 = [0.0f64; D];
    let mut even = [0.0f64; D];
    let (mut sw, mut sw2) = (0.0f64, 0.0f64);
    let st = lat.st;
    let r0 = b * lat.band;
    let mut origin = 0usize;
    for s in st.iter().skip(1) {
        origin += s;
    }
    for (g, gs) in starts.iter().enumerate() {
        let recs = &rec[(offs[g] + gs[b]) * r..(offs[g] + gs[b + 1]) * r];
        for p in recs.chunks_exact(r) {
            let wi = if r > D { p[D] } else { wu };
            let mut t = [0.0f64; D];
            let (k0, t0) = lat.cell(p[0], 0);
            t[0] = t0;
            // The node (k_0, k_1, …): padded row k_0 + 1, relative to the slab.
            let mut base = origin + (k0 + 1 - r0) * st[0];
            for a in 1..D {
                let (k, ta) = lat.cell(p[a], a);
                t[a] = ta;
                base += k * st[a];
            }
            sw += wi;
            sw2 += wi * wi;
            let mut e = [[0.0f64; 4]; D];
            for a in 0..D {
                let u = t[a] * (1.0 - t[a]);
                let o = u * (1.0 - 2.0 * t[a]);
                let q = u * (2.0 + u);
                q1[a] += wi * q;
                q2[a] += wi * q * q;
                even[a] += wi * u;
                let (uq, o12, o4) = (0.25 * u, o * (1.0 / 12.0), 0.25 * o);
                e[a] = [-uq - o12, uq + o4, uq - o4, o12 - uq];
            }
            e[0][1] += 1.0 - t[0];
            e[0][2] += t[0];
            if D == 2 {
                // The loop below written out for 2-D: 12 nodes, the middle four shared by
                // both axes' stencils.
                let s = st[0];
                let (t1, s1) = (t[1], 1.0 - t[1]);
                let (c0, c1) = (wi * s1, wi * t1);
                let (r0w, r1w) = (wi * (1.0 - t[0]), wi * t[0]);
                let (e0, e1) = (e[0], e[1]);
                // The 3s + 4 nodes from (k_0 − 1, k_1 − 1) on: one bounds check.
                let v = &mut slab[base - s - 1..base + 2 * s + 3];
                v[1] += c0 * e0[0];
                v[2] += c1 * e0[0];
                v[s] += r0w * e1[0];
                v[s + 1] += c0 * e0[1] + r0w * e1[1];
                v[s + 2] += c1 * e0[1] + r0w * e1[2];
                v[s + 3] += r0w * e1[3];
                v[2 * s] += r1w * e1[0];
                v[2 * s + 1] += c0 * e0[2] + r1w * e1[1];
                v[2 * s + 2] += c1 * e0[2] + r1w * e1[2];
                v[2 * s + 3] += r1w * e1[3];
                v[3 * s + 1] += c0 * e0[3];
                v[3 * s + 2] += c1 * e0[3];
                continue;
            }
            for (a, ea) in e.iter().enumerate() {
                // The corners of the other axes, linearly binned.
                for corner in 0..(1usize << D) {
                    if (corner >> a) & 1 == 1 {
                        continue;
                    }
                    let mut g = wi;
                    let mut off = base;
                    for (b, &tb) in t.iter().enumerate() {
                        if b == a {
                            continue;
                        }
                        if (corner >> b) & 1 == 1 {
                            g *= tb;
                            off += st[b];
                        } else {
                            g *= 1.0 - tb;
                        }
                    }
                    let sa = st[a];
                    slab[off - sa] += g * ea[0];
                    slab[off] += g * ea[1];
                    slab[off + sa] += g * ea[2];
                    slab[off + 2 * sa] += g * ea[3];
                }
            }
        }
    }
    let mut s = Vec::with_capacity(NSTAT * D + 2);
    s.extend_from_slice(&q1);
    s.extend_from_slice(&q2);
    s.extend_from_slice(&even);
    s.push(sw);
    s.push(sw2);
    s
}

/// Points per block of [`band2_body`]: the first phase fills the block's arrays (a
/// multiple of the statistics' lanes), the second adds the points to the lattice.
const BLK: usize = 64;
/// Lanes of the statistics in [`band2_body`] (summed lane by lane, then across).
const SLN: usize = 8;

/// What [`band2`] needs of the 2-D lattice: the padded row length, the rows per band and
/// the largest cell index per axis.
#[derive(Clone, Copy)]
struct Geo2 {
    s: usize,
    band: usize,
    kmax: [usize; 2],
}

/// One block of [`band2_body`]'s first phase: per point the offset of node (k_0, k_1)
/// (as a float: exact, below 2⁵³), the axis-0 stencil with the linear masses joined to
/// the middle two (`e0`), the axis-1 stencil (`e1`), and the linear weights w·(1 − t_1),
/// w·t_1 (`c`) and w·(1 − t_0), w·t_0 (`l`).
struct Blk2 {
    base: [f64; BLK],
    e0: [[f64; BLK]; 4],
    e1: [[f64; BLK]; 4],
    c: [[f64; BLK]; 2],
    l: [[f64; BLK]; 2],
    /// The point's cell relative to the band's cell slab (row-major, as a float: exact)
    /// and its three error-field values w·(2u₀ + u₀²), w·(2u₁ + u₁²), w·u₀u₁.
    fcell: [f64; BLK],
    fv: [[f64; BLK]; 3],
}

/// Values per cell of the error fields' cell slab in [`band2_body`] (three fields and a
/// zero, so that a point adds one 4-wide row).
const FCH: usize = 4;

thread_local! {
    /// Each thread's slab of per-cell error-field sums for the band it bins (reused from
    /// band to band and call to call; the expansion in [`band2_body`] leaves it zeroed).
    static FIELD_CELLS: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The coarse lattice of the error fields as [`band2`] sees it: per axis the offset of the
/// bin lattice's node 0 on the fine lattice of the fields (a whole number), the inverse
/// of the coarse-to-fine ratio, the largest lower coarse node; and the coarse row stride
/// (3 fields per node).
#[derive(Clone, Copy)]
struct FGeo {
    off: [f64; 2],
    inv_r: [f64; 2],
    kmax: [f64; 2],
    row: usize,
}

/// The error fields a band adds to: the geometry, the first and last coarse rows (lower
/// nodes) the band may write, and the slab of the field lattice from its first row on.
struct Fld<'a> {
    g: FGeo,
    rows: [f64; 2],
    out: &'a mut [f64],
}

/// [`bin_band`] for 2-D, in blocks of [`BLK`] points: a branch-free first phase over
/// fixed-length arrays (positions, stencils, statistics in [`SLN`] lanes) that the
/// compiler vectorises, then per point four 4-wide row updates (rows k_0 − 1 ..= k_0 + 2,
/// columns k_1 − 1 ..= k_1 + 2): row i gets e0_i·(0, c_0, c_1, 0) + l_i·e1 with l =
/// (0, w(1 − t_0), w·t_0, 0), the outer product of the axis-0 stencil with the linear
/// axis-1 masses plus the axis-1 stencil on the linear axis-0 masses. The products and
/// the one add per node are those of the scalar loop in [`bin_band`], so the bins are
/// bitwise the same; the statistics are summed in lanes (equal to rounding).
#[inline(always)]
// Indexed loops over the lanes and block slots, written so that they vectorise.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
fn band2_body<M: crate::core::simd::Fma, const R: usize, const F: bool>(
    geo: Geo2,
    rec: &[f64],
    starts: &[Vec<usize>],
    offs: &[usize],
    wu: f64,
    b: usize,
    slab: &mut [f64],
    fld: Option<&mut Fld<'_>>,
) -> Stats {
    // Lanes of q1, q2, even per axis, then Σw and Σw².
    let mut acc = [[0.0f64; SLN]; 8];
    let s = geo.s;
    let r0 = b * geo.band;
    // Node (k_0, k_1) sits at padded row k_0 + 1 − r0, column k_1 + 1: offset base + add.
    let add = (s + 1).wrapping_sub(r0 * s);
    let kmax = [geo.kmax[0] as f64, geo.kmax[1] as f64];
    let mut blk = Blk2 {
        base: [0.0; BLK],
        e0: [[0.0; BLK]; 4],
        e1: [[0.0; BLK]; 4],
        c: [[0.0; BLK]; 2],
        l: [[0.0; BLK]; 2],
        fcell: [0.0; BLK],
        fv: [[0.0; BLK]; 3],
    };
    let ncols = geo.kmax[1] + 1;
    // The band's cells (rows r0 .. r0 + band, every column) for the error fields.
    let mut cells = if F {
        FIELD_CELLS.with(|c| std::mem::take(&mut *c.borrow_mut()))
    } else {
        Vec::new()
    };
    if F {
        let need = geo.band * ncols * FCH;
        if cells.len() < need {
            cells.clear();
            cells.resize(need, 0.0);
        }
    }
    let mut p0 = [0.0f64; BLK];
    let mut p1 = [0.0f64; BLK];
    let mut wv = [0.0f64; BLK];
    for (g, gs) in starts.iter().enumerate() {
        let recs = &rec[(offs[g] + gs[b]) * R..(offs[g] + gs[b + 1]) * R];
        for chunk in recs.chunks(BLK * R) {
            let m = chunk.len() / R;
            for (j, p) in chunk.chunks_exact(R).enumerate() {
                p0[j] = p[0];
                p1[j] = p[1];
                wv[j] = if R > 2 { p[2] } else { wu };
            }
            // The padding: weight 0 at position 0 adds nothing to the statistics.
            for j in m..BLK {
                p0[j] = 0.0;
                p1[j] = 0.0;
                wv[j] = 0.0;
            }
            for cb in 0..BLK / SLN {
                for ln in 0..SLN {
                    let j = cb * SLN + ln;
                    let wi = wv[j];
                    let mut t = [0.0f64; 2];
                    let mut kf = [0.0f64; 2];
                    for a in 0..2 {
                        let p = if a == 0 { p0[j] } else { p1[j] };
                        // p ≥ 0: the floor is the truncation of `Lat::cell`.
                        let k = if M::AVX2 {
                            p.floor()
                        } else {
                            (p as i64) as f64
                        };
                        let k = k.min(kmax[a]);
                        kf[a] = k;
                        t[a] = p - k;
                    }
                    blk.base[j] = kf[0] * s as f64 + kf[1];
                    let mut e = [[0.0f64; 4]; 2];
                    for a in 0..2 {
                        let u = t[a] * (1.0 - t[a]);
                        let o = u * (1.0 - 2.0 * t[a]);
                        let q = u * (2.0 + u);
                        acc[a][ln] += wi * q;
                        acc[2 + a][ln] += wi * q * q;
                        acc[4 + a][ln] += wi * u;
                        let (uq, o12, o4) = (0.25 * u, o * (1.0 / 12.0), 0.25 * o);
                        e[a] = [-uq - o12, uq + o4, uq - o4, o12 - uq];
                    }
                    acc[6][ln] += wi;
                    acc[7][ln] += wi * wi;
                    if F {
                        // The error fields w·(2u₀ + u₀²), w·(2u₁ + u₁²), w·u₀u₁, summed per
                        // cell (placed at the cell's centre when the band is done).
                        let u0 = t[0] * (1.0 - t[0]);
                        let u1 = t[1] * (1.0 - t[1]);
                        blk.fv[0][j] = wi * (u0 * (2.0 + u0));
                        blk.fv[1][j] = wi * (u1 * (2.0 + u1));
                        blk.fv[2][j] = wi * (u0 * u1);
                        // Padding points sit at position 0 of band 0's first cell.
                        blk.fcell[j] = ((kf[0] - r0 as f64) * ncols as f64 + kf[1]).max(0.0);
                    }
                    e[0][1] += 1.0 - t[0];
                    e[0][2] += t[0];
                    for i in 0..4 {
                        blk.e0[i][j] = e[0][i];
                        blk.e1[i][j] = e[1][i];
                    }
                    blk.c[0][j] = wi * (1.0 - t[1]);
                    blk.c[1][j] = wi * t[1];
                    blk.l[0][j] = wi * (1.0 - t[0]);
                    blk.l[1][j] = wi * t[0];
                }
            }
            for j in 0..m {
                let base = (blk.base[j] as usize).wrapping_add(add);
                let cv = [0.0, blk.c[0][j], blk.c[1][j], 0.0];
                let e1 = [blk.e1[0][j], blk.e1[1][j], blk.e1[2][j], blk.e1[3][j]];
                // The 3s + 4 nodes from (k_0 − 1, k_1 − 1) on: one bounds check.
                let v = &mut slab[base - s - 1..base + 2 * s + 3];
                for (i, row) in [0, 3].into_iter().map(|i| (i, i * s)) {
                    let e0 = blk.e0[i][j];
                    let dst: &mut [f64; 4] = (&mut v[row..row + 4]).try_into().unwrap();
                    for c in 0..4 {
                        dst[c] += e0 * cv[c];
                    }
                }
                for i in 1..3 {
                    let (e0, li) = (blk.e0[i][j], blk.l[i - 1][j]);
                    let dst: &mut [f64; 4] = (&mut v[i * s..i * s + 4]).try_into().unwrap();
                    for c in 0..4 {
                        dst[c] += e0 * cv[c] + li * e1[c];
                    }
                }
            }
            if F {
                for j in 0..m {
                    let at = blk.fcell[j] as usize * FCH;
                    let dst: &mut [f64; FCH] = (&mut cells[at..at + FCH]).try_into().unwrap();
                    let v = [blk.fv[0][j], blk.fv[1][j], blk.fv[2][j], 0.0];
                    for c in 0..FCH {
                        dst[c] += v[c];
                    }
                }
            }
        }
    }
    if F {
        if let Some(f) = fld {
            spread_cells(&mut cells, ncols, r0, geo.band, f);
        }
        FIELD_CELLS.with(|c| *c.borrow_mut() = cells);
    }
    let mut out = Vec::with_capacity(NSTAT * 2 + 2);
    for lanes in &acc {
        let mut v = 0.0;
        for x in lanes {
            v += x;
        }
        out.push(v);
    }
    out
}

/// Adds the per-cell error-field sums of a band (`cells`: rows r0 .. r0 + band of the
/// cells, `ncols` per row, [`FCH`] values each) to the band's field slab, each cell's sums
/// placed at the cell's centre with bilinear shares on the coarse nodes, and zeroes them.
/// Empty cells (and cells whose points all lie on nodes) are skipped.
fn spread_cells(cells: &mut [f64], ncols: usize, r0: usize, band: usize, f: &mut Fld<'_>) {
    let g = f.g;
    let row = g.row;
    for (i, crow) in cells[..band * ncols * FCH]
        .chunks_exact_mut(ncols * FCH)
        .enumerate()
    {
        // The cell centre's coarse row: within the rows this band owns.
        let pc = ((r0 + i) as f64 + 0.5 + g.off[0]) * g.inv_r[0];
        let k0 = pc.floor().min(g.kmax[0]).max(f.rows[0]).min(f.rows[1]);
        let t0 = (pc - k0).clamp(0.0, 1.0);
        let base = (k0 - f.rows[0]) as usize * row;
        for (k1, cell) in crow.chunks_exact_mut(FCH).enumerate() {
            // Weights are positive and u₀u₁ > 0 only where u₀ > 0: both first fields are
            // zero exactly when the cell adds nothing.
            if cell[0] == 0.0 && cell[1] == 0.0 {
                continue;
            }
            let v = [cell[0], cell[1], cell[2]];
            cell.fill(0.0);
            let pc = (k1 as f64 + 0.5 + g.off[1]) * g.inv_r[1];
            let kc = pc.floor().min(g.kmax[1]).max(0.0);
            let sh = super::errfield::bilinear([t0, (pc - kc).clamp(0.0, 1.0)]);
            let at = base + 3 * kc as usize;
            let out = &mut f.out[at..at + row + 6];
            for q in 0..2 {
                for c in 0..3 {
                    out[3 * q + c] += sh[q] * v[c];
                    out[row + 3 * q + c] += sh[2 + q] * v[c];
                }
            }
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn band2_generic<M: crate::core::simd::Fma>(
    geo: Geo2,
    rec: &[f64],
    starts: &[Vec<usize>],
    offs: &[usize],
    r: usize,
    wu: f64,
    b: usize,
    slab: &mut [f64],
    fld: Option<&mut Fld<'_>>,
) -> Stats {
    match (r > 2, fld.is_some()) {
        (true, true) => band2_body::<M, 3, true>(geo, rec, starts, offs, wu, b, slab, fld),
        (true, false) => band2_body::<M, 3, false>(geo, rec, starts, offs, wu, b, slab, fld),
        (false, true) => band2_body::<M, 2, true>(geo, rec, starts, offs, wu, b, slab, fld),
        (false, false) => band2_body::<M, 2, false>(geo, rec, starts, offs, wu, b, slab, fld),
    }
}

crate::core::simd::simd_fn!(
    /// [`band2_generic`] on the SIMD path `level` allows.
    fn band2 => band2_generic(
        geo: Geo2,
        rec: &[f64],
        starts: &[Vec<usize>],
        offs: &[usize],
        r: usize,
        wu: f64,
        b: usize,
        slab: &mut [f64],
        fld: Option<&mut Fld<'_>>
    ) -> Stats
);

/// [`bin_band`], through [`band2`] in 2-D (which also adds the error fields to `fld`
/// when given; the caller passes none in 3-D).
#[allow(clippy::too_many_arguments)]
fn bin_band_any<const D: usize>(
    lat: &Lat<D>,
    rec: &[f64],
    starts: &[Vec<usize>],
    offs: &[usize],
    r: usize,
    wu: f64,
    b: usize,
    slab: &mut [f64],
    fld: Option<&mut Fld<'_>>,
) -> Stats {
    if D == 2 {
        let geo = Geo2 {
            s: lat.st[0],
            band: lat.band,
            kmax: [lat.kmax[0], lat.kmax[D - 1]],
        };
        let level = crate::core::simd::level();
        return band2(level, geo, rec, starts, offs, r, wu, b, slab, fld);
    }
    bin_band::<D>(lat, rec, starts, offs, r, wu, b, slab)
}

/// What the 2-D binning pass adds the error fields to: the geometry, each band's coarse
/// rows, and the field lattice.
type FieldTarget<'a> = (&'a FGeo, &'a [[usize; 2]], &'a mut [f64]);

/// The coarse lattice of the error fields (`errfield`): start, spacing and nodes per
/// axis. Its fine lattice (where the fractional positions are taken) starts at `lo`
/// with the bins' spacing.
#[derive(Clone, Debug)]
pub struct FieldLattice {
    pub lo: Vec<f64>,
    pub delta: Vec<f64>,
    pub nc: Vec<usize>,
}

/// How the 2-D binning pass adds the error fields: the geometry for [`band2`] and the
/// coarse rows (lower nodes) each band writes, or None when the fields must be binned
/// in their own pass (3-D; a coarse lattice that is not a whole multiple of the bins'
/// spacing, does not contain the bin lattice, or whose rows would be shared by two bands
/// that run at the same time).
fn field_plan(
    lo_b: &[f64],
    delta: &[f64],
    nb: &[usize],
    fl: &FieldLattice,
) -> Option<(FGeo, Vec<[usize; 2]>)> {
    if nb.len() != 2 || fl.lo.len() != 2 || fl.delta.len() != 2 || fl.nc.len() != 2 {
        return None;
    }
    let mut g = FGeo {
        off: [0.0; 2],
        inv_r: [1.0; 2],
        kmax: [0.0; 2],
        row: 3 * fl.nc[1],
    };
    let mut rr = [1usize; 2];
    let mut oo = [0usize; 2];
    for a in 0..2 {
        let ratio = fl.delta[a] / delta[a];
        let r = ratio.round();
        let off = (lo_b[a] - fl.lo[a]) / delta[a];
        let o = off.round();
        let whole = (1.0..1e6).contains(&r)
            && (ratio - r).abs() <= 1e-9 * r
            && (0.0..1e9).contains(&o)
            && (off - o).abs() <= 1e-6;
        if !whole || fl.nc[a] < 2 || (nb[a] - 1 + o as usize) > (fl.nc[a] - 1) * r as usize {
            return None;
        }
        g.off[a] = o;
        g.inv_r[a] = 1.0 / r;
        g.kmax[a] = (fl.nc[a] - 2) as f64;
        rr[a] = r as usize;
        oo[a] = o as usize;
    }
    let ncells = nb[0] - 1;
    let band = ncells.div_ceil(BANDS).max(3);
    let nbands = ncells.div_ceil(band);
    let kmax0 = fl.nc[0] - 2;
    // Band b holds positions b·band ..= (b + 1)·band along axis 0 (the last one clamped to
    // the last node): its points' lower coarse rows, one more on each side for rounding.
    let rows: Vec<[usize; 2]> = (0..nbands)
        .map(|b| {
            let lo = ((b * band + oo[0]) / rr[0]).saturating_sub(1).min(kmax0);
            let top = ((b + 1) * band).min(nb[0] - 1);
            let hi = ((top + oo[0]) / rr[0] + 1).min(kmax0);
            [lo, hi]
        })
        .collect();
    // Bands b and b + 2 run at the same time: b writes rows up to its last lower row + 1.
    if (0..nbands.saturating_sub(2)).any(|b| rows[b][1] + 1 >= rows[b + 2][0]) {
        return None;
    }
    Some((g, rows))
}

/// The binning pass of [`bin_corrected`] for `D` axes into the padded lattice `lattice`:
/// the points are counting-sorted by row band in groups of [`GROUP`] (in parallel, a wave
/// of [`WAVE`] groups at a time), then binned band by band, so that the lattice rows a
/// band writes stay in cache. Bands of even index run in parallel first, then those of
/// odd index (a band also writes the first rows of the next one). The bands and groups do
/// not depend on the number of threads, so neither do the bits of the result. Adds the
/// statistics to `stats`; returns whether every value was valid.
#[allow(clippy::too_many_arguments)]
fn bin_sorted<const D: usize>(
    x: &[f64],
    w: Option<&[f64]>,
    wu: f64,
    lo: &[f64],
    inv: &[f64],
    nb: &[usize],
    lattice: &mut [f64],
    stats: &mut [f64],
    mut fields: Option<FieldTarget<'_>>,
    stop: &AtomicBool,
) -> Result<bool> {
    let ncells = nb[0] - 1;
    // At least 3 rows per band, so that a band's rows and the 3 it writes beyond them
    // stay clear of the next band of the same parity.
    let band = ncells.div_ceil(BANDS).max(3);
    let nbands = ncells.div_ceil(band);
    let lat = Lat::<D>::new(lo, inv, nb, band);
    let n = x.len() / D;
    let r = D + w.is_some() as usize;
    let rowlen = lat.st[0];
    let mut ok = true;
    let wave_pts = (GROUP * WAVE).min(n);
    let mut rec = try_vec(checked_size(wave_pts, r, "n_points")?, 0.0f64, "n_points")?;
    for ws in (0..n).step_by(GROUP * WAVE) {
        check_stop(stop)?;
        let we = (ws + GROUP * WAVE).min(n);
        let groups: Vec<(usize, usize)> = (ws..we)
            .step_by(GROUP)
            .map(|s| (s, (s + GROUP).min(we)))
            .collect();
        // Each group sorts into its own stretch of `rec`.
        let mut parts: Vec<&mut [f64]> = Vec::with_capacity(groups.len());
        let mut rest = &mut rec[..];
        for &(s, e) in &groups {
            let (h, t) = rest.split_at_mut((e - s) * r);
            parts.push(h);
            rest = t;
        }
        let sorted: Vec<(Vec<usize>, bool)> = threads::install(|| {
            parts
                .into_par_iter()
                .zip(groups.par_iter())
                .map(|(part, &(s, e))| {
                    let mut starts = vec![0usize; nbands + 1];
                    let good = sort_group::<D>(
                        &lat,
                        &x[s * D..e * D],
                        w.map(|w| &w[s..e]),
                        part,
                        &mut starts,
                    );
                    (starts, good)
                })
                .collect()
        })?;
        let offs: Vec<usize> = groups.iter().map(|&(s, _)| s - ws).collect();
        let starts: Vec<Vec<usize>> = sorted
            .into_iter()
            .map(|(s, good)| {
                ok &= good;
                s
            })
            .collect();
        check_stop(stop)?;
        // Band b writes the padded rows b·band ..= (b + 1)·band + 2, within its chunk of
        // 2·band rows.
        let mut band_stats: Vec<(usize, Stats)> = Vec::with_capacity(nbands);
        for parity in 0..2 {
            let start = parity * band * rowlen;
            if parity >= nbands {
                continue;
            }
            let (rec, starts, offs, lat) = (&rec[..], &starts[..], &offs[..], &lat);
            // This parity's bands with their lattice slabs and (when binned here) the
            // slabs of the field lattice they write.
            let mut jobs: Vec<(usize, &mut [f64], Option<Fld<'_>>)> = lattice[start..]
                .chunks_mut(2 * band * rowlen)
                .enumerate()
                .map(|(j, slab)| (2 * j + parity, slab))
                .filter(|(b, _)| *b < nbands)
                .map(|(b, slab)| (b, slab, None))
                .collect();
            if let Some((g, rows, out)) = fields.as_mut() {
                let mut rest: &mut [f64] = out;
                let mut at = 0usize;
                for job in jobs.iter_mut() {
                    let [lo, hi] = rows[job.0];
                    let tail = std::mem::take(&mut rest);
                    let (_, tail) = tail.split_at_mut((lo - at) * g.row);
                    let (mine, tail) = tail.split_at_mut((hi + 2 - lo) * g.row);
                    rest = tail;
                    at = hi + 2;
                    job.2 = Some(Fld {
                        g: **g,
                        rows: [lo as f64, hi as f64],
                        out: mine,
                    });
                }
            }
            let res: Vec<(usize, Stats)> = threads::install(|| {
                jobs.into_par_iter()
                    .map(|(b, slab, mut fld)| {
                        (
                            b,
                            bin_band_any::<D>(lat, rec, starts, offs, r, wu, b, slab, fld.as_mut()),
                        )
                    })
                    .collect()
            })?;
            band_stats.extend(res);
        }
        band_stats.sort_by_key(|v| v.0);
        for (_, s) in band_stats {
            for (a, v) in stats.iter_mut().zip(&s) {
                *a += v;
            }
        }
    }
    Ok(ok)
}

/// Moment-corrected linear binning of n points (rows of `x`, d = 2 or 3) onto the node
/// lattice lo_a + k·δ_a, k < nb_a (each nb_a ≥ 2): the multilinear node masses minus
/// ½·Σ_a Δ²_a of the cell sums Σ w·t_a(1 − t_a) spread onto the nodes, plus the
/// third-order term (see the module notes), each point's share added to the nodes
/// directly. `w = None`: every point weighs `wu`. Points outside the lattice or with zero
/// weight are dropped. Returns the corrected bins (row-major), the statistics of the
/// fractional positions, and whether every coordinate was finite and every weight finite
/// and non-negative. Allocates the lattice widened by 2 per axis, the corrected bins, and
/// a sorted copy of up to 2^21 points at a time (d values each, and the weight).
#[allow(clippy::too_many_arguments)]
pub fn bin_corrected(
    x: &[f64],
    d: usize,
    w: Option<&[f64]>,
    wu: f64,
    lo: &[f64],
    delta: &[f64],
    nb: &[usize],
    stop: &AtomicBool,
) -> Result<(Vec<f64>, BinStats, bool)> {
    let (bins, st, ok, _) = bin_corrected_fields(x, d, w, wu, lo, delta, nb, None, stop)?;
    Ok((bins, st, ok))
}

/// [`bin_corrected`], and when `fl` is given also the moment-corrected error fields of
/// `errfield::error_fields` on the coarse lattice `fl` (fine positions on the bins' own
/// lattice, which `fl.lo` must lie on): in 2-D added in the binning pass itself (no second
/// pass over the points) when the lattices line up (see `field_plan`), else in their own
/// pass. Allocates the field lattice (3 values per coarse node in 2-D) besides what
/// [`bin_corrected`] does.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub fn bin_corrected_fields(
    x: &[f64],
    d: usize,
    w: Option<&[f64]>,
    wu: f64,
    lo: &[f64],
    delta: &[f64],
    nb: &[usize],
    fl: Option<&FieldLattice>,
    stop: &AtomicBool,
) -> Result<(Vec<f64>, BinStats, bool, Option<Vec<f64>>)> {
    if !(2..=3).contains(&d)
        || lo.len() != d
        || delta.len() != d
        || nb.len() != d
        || !x.len().is_multiple_of(d)
    {
        return Err(invalid!(
            "binning needs 2 or 3 dimensions with one lo, spacing and size per axis and \
             n·d coordinates"
        ));
    }
    if nb.iter().any(|&v| v < 2)
        || delta.iter().any(|v| !(v.is_finite() && *v > 0.0))
        || lo.iter().any(|v| !v.is_finite())
    {
        return Err(invalid!(
            "the bin lattice needs at least 2 bins per axis and a finite start and \
             positive spacing"
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
    let too_large = || Error::OutOfMemory("the bin lattice is too large".into());
    let total = nb
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(too_large)?;
    let np: Vec<usize> = nb.iter().map(|&v| v + 2).collect();
    let padded = np
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(too_large)?;
    let mut lattice = try_vec(padded, 0.0f64, "n_points")?;
    let mut st = vec![0.0f64; NSTAT * d + 2];
    let inv: Vec<f64> = delta.iter().map(|v| 1.0 / v).collect();
    if let Some(fl) = fl {
        if fl.lo.len() != d || fl.delta.len() != d || fl.nc.len() != d {
            return Err(invalid!(
                "the error-field lattice needs one start, spacing and size per axis"
            ));
        }
    }
    let plan = fl.and_then(|fl| field_plan(lo, delta, nb, fl));
    let mut fout = match (&plan, fl) {
        (Some(_), Some(fl)) => Some(try_vec(
            checked_size(fl.nc[0] * fl.nc[1], 3, "n_points")?,
            0.0f64,
            "n_points",
        )?),
        _ => None,
    };
    let ok = if d == 2 {
        let fields = match (&plan, fout.as_mut()) {
            (Some((g, rows)), Some(out)) => Some((g, &rows[..], &mut out[..])),
            _ => None,
        };
        bin_sorted::<2>(x, w, wu, lo, &inv, nb, &mut lattice, &mut st, fields, stop)?
    } else {
        bin_sorted::<3>(x, w, wu, lo, &inv, nb, &mut lattice, &mut st, None, stop)?
    };
    check_stop(stop)?;
    if let (None, Some(fl)) = (&fout, fl) {
        fout = Some(super::errfield::error_fields(
            x,
            d,
            w,
            wu,
            super::errfield::Scheme::Corrected,
            &fl.lo,
            delta,
            &fl.lo,
            &fl.delta,
            &fl.nc,
            stop,
        )?);
    }
    let stats = BinStats::from_slice(&st, d)?;
    // The bins are the padded lattice without its margins.
    let mut bins = try_vec(total, 0.0f64, "n_points")?;
    let sp = strides(&np);
    let inner = nb[d - 1];
    for (r, seg) in bins.chunks_mut(inner).enumerate() {
        let mut start = 1;
        let mut rem = r;
        for a in (0..d - 1).rev() {
            start += (rem % nb[a] + 1) * sp[a];
            rem /= nb[a];
        }
        seg.copy_from_slice(&lattice[start..start + inner]);
    }
    Ok((bins, stats, ok, fout))
}

/// Pointwise estimate of the error of moment-corrected binned sums `sums` on a grid of
/// `m` points per axis with spacings `delta`, for a Gaussian kernel whose inverse
/// covariance has diagonal `hinv` (1/h_a² for a diagonal bandwidth), from the binning
/// statistics `st`. The corrected stencil keeps the moments up to the third along each
/// axis; its fourth moment is −δ⁴·(2u + u²) (u = t(1 − t)), so the error is
/// −(δ⁴/24)·Σ w (2u + u²)·∂⁴K per axis: its mean part c_a·Δ⁴_a S with
/// c_a = mean(2u + u²)/24 (11/720 for uniform t) from fourth differences of the output,
/// plus [`NOISE_Z`] standard deviations of the rest,
/// (δ⁴/24)·√(Σw²/Σw · var(2u + u²) · S · ∫(∂⁴K)²/∫K) with ∫(∂⁴K)²/∫K = 6.5625·2^{−d/2}·hinv⁴
/// (the squared fourth derivative averaged over a window where S is nearly constant).
/// Pairs of axes add ¼·ū_a·ū_b·|Δ²_aΔ²_b S| (ū the mean of u, 1/6 for continuous data).
/// Axes with fewer than 5 points use the bound (δ⁴/24)·mean(2u + u²)·6·hinv²·S. `floor`
/// (rounding and truncation) is added to every point.
pub fn error_estimate(
    sums: &[f64],
    m: &[usize],
    delta: &[f64],
    hinv: &[f64],
    st: &BinStats,
    floor: f64,
) -> Result<Vec<f64>> {
    let d = m.len();
    let total: usize = m.iter().product();
    if delta.len() != d
        || hinv.len() != d
        || st.q1.len() != d
        || st.even.len() != d
        || sums.len() != total
        || !(2..=3).contains(&d)
    {
        return Err(invalid!(
            "the error estimate needs one spacing and inverse variance per axis and one \
             sum per grid point"
        ));
    }
    let stm = strides(m);
    let sw = if st.sum_w > 0.0 { st.sum_w } else { 1.0 };
    let c4: Vec<f64> = st.q1.iter().map(|v| v / sw / 24.0).collect();
    let ubar: Vec<f64> = st.even.iter().map(|v| v / sw).collect();
    let gauss = 6.5625 * 2f64.powf(-(d as f64) / 2.0);
    let noise: Vec<f64> = (0..d)
        .map(|a| {
            let mean = st.q1[a] / sw;
            let var = (st.q2[a] / sw - mean * mean).max(0.0);
            let c = delta[a].powi(4) / 24.0;
            c * c * var * (st.sum_w2 / sw) * gauss * hinv[a].powi(4)
        })
        .collect();
    let small: Vec<f64> = (0..d)
        .map(|a| {
            if m[a] < 5 {
                delta[a].powi(4) * c4[a] * 6.0 * hinv[a] * hinv[a]
            } else {
                0.0
            }
        })
        .collect();
    let mut err = try_vec(total, 0.0f64, "n_points")?;
    threads::install(|| {
        err.par_chunks_mut(4096).enumerate().for_each(|(b, chunk)| {
            for (r, e) in chunk.iter_mut().enumerate() {
                let flat = b * 4096 + r;
                let s0 = sums[flat];
                let (mut b4, mut b22, mut var, mut sm) = (0.0, 0.0, 0.0, 0.0);
                let mut rem = flat;
                let mut ctr = [0usize; 3];
                for a in 0..d {
                    let i = rem / stm[a];
                    rem %= stm[a];
                    ctr[a] = i.clamp(1, m[a].max(3) - 2);
                    var += noise[a];
                    if m[a] < 5 {
                        sm += small[a];
                        continue;
                    }
                    let s = stm[a];
                    let f0 = flat - i * s + i.clamp(2, m[a] - 3) * s;
                    b4 += c4[a]
                        * (sums[f0 + 2 * s] - 4.0 * sums[f0 + s] + 6.0 * sums[f0]
                            - 4.0 * sums[f0 - s]
                            + sums[f0 - 2 * s]);
                }
                // Pairs of axes: mixed differences about clamped centres.
                for a in 0..d {
                    for b in a + 1..d {
                        if m[a] < 3 || m[b] < 3 {
                            continue;
                        }
                        let mut f0 = 0;
                        for (e, &c) in ctr[..d].iter().enumerate() {
                            f0 += c * stm[e];
                        }
                        let (sa, sb) = (stm[a], stm[b]);
                        let row = |o: usize| sums[o + sb] - 2.0 * sums[o] + sums[o - sb];
                        let mixed = row(f0 + sa) - 2.0 * row(f0) + row(f0 - sa);
                        b22 += 0.25 * ubar[a] * ubar[b] * mixed;
                    }
                }
                let pos = s0.max(0.0);
                *e = b4.abs() + b22.abs() + sm * pos + NOISE_Z * (var * pos).sqrt() + floor;
            }
        });
    })?;
    Ok(err)
}

/// Output rows per block of [`rows_block`] and columns (or outputs) per chunk of the
/// convolution kernels: 4 × 32 accumulators stay in registers.
const CRB: usize = 4;
const CCB: usize = 32;

/// Rows `i0 .. i0 + nr` (nr ≤ [`CRB`]) of one outer slice of the convolution along a
/// non-last axis: out[r, :] = Σ_j k_j·src[off + i0 + r + j, :] (rows of `inner` values),
/// `kp` the kernel with CRB − 1 zeros on each side. Each input row chunk is loaded once
/// for all the block's rows, the sums stay in registers; the products are added in the
/// order of j (as one AXPY per tap would), so the bits do not depend on the blocking.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
fn rows_block<M: crate::core::simd::Fma>(
    kp: &[f64],
    src: &[f64],
    inner: usize,
    off: usize,
    i0: usize,
    nr: usize,
    out: &mut [f64],
) {
    let taps = kp.len() - 2 * (CRB - 1);
    let mut c = 0;
    while c < inner {
        let cw = (inner - c).min(CCB);
        let mut acc = [[0.0f64; CCB]; CRB];
        for jj in 0..nr + taps - 1 {
            let at = (off + i0 + jj) * inner + c;
            let mut tail = [0.0f64; CCB];
            // A whole chunk is read in place (a copy through the stack would stall the
            // loads behind the stores).
            let v: &[f64; CCB] = if cw == CCB {
                (&src[at..at + CCB]).try_into().unwrap()
            } else {
                tail[..cw].copy_from_slice(&src[at..at + cw]);
                &tail
            };
            for r in 0..CRB {
                // Tap jj − r of output row r (zero outside the kernel).
                let kk = kp[jj + CRB - 1 - r];
                for l in 0..CCB {
                    acc[r][l] = M::ma(kk, v[l], acc[r][l]);
                }
            }
        }
        for r in 0..nr {
            out[r * inner + c..r * inner + c + cw].copy_from_slice(&acc[r][..cw]);
        }
        c += CCB;
    }
}

crate::core::simd::simd_fn!(
    /// [`rows_block`] on the SIMD path `level` allows.
    fn rows_block_at => rows_block(
        kp: &[f64],
        src: &[f64],
        inner: usize,
        off: usize,
        i0: usize,
        nr: usize,
        out: &mut [f64]
    ) -> ()
);

/// One row of the convolution along the last axis: o[i] = Σ_j k_j·src[off + i + j],
/// [`CCB`] outputs at a time in registers (the products added in the order of j).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn line_conv<M: crate::core::simd::Fma>(k: &[f64], src: &[f64], off: usize, o: &mut [f64]) {
    let m = o.len();
    let mut i = 0;
    while i < m {
        let cw = (m - i).min(CCB);
        let mut acc = [0.0f64; CCB];
        if cw == CCB {
            for (j, &kj) in k.iter().enumerate() {
                let v: &[f64; CCB] = (&src[off + i + j..off + i + j + CCB]).try_into().unwrap();
                for l in 0..CCB {
                    acc[l] = M::ma(kj, v[l], acc[l]);
                }
            }
        } else {
            for (j, &kj) in k.iter().enumerate() {
                let mut v = [0.0f64; CCB];
                v[..cw].copy_from_slice(&src[off + i + j..off + i + j + cw]);
                for l in 0..CCB {
                    acc[l] = M::ma(kj, v[l], acc[l]);
                }
            }
        }
        o[i..i + cw].copy_from_slice(&acc[..cw]);
        i += CCB;
    }
}

crate::core::simd::simd_fn!(
    /// [`line_conv`] on the SIMD path `level` allows.
    fn line_conv_at => line_conv(k: &[f64], src: &[f64], off: usize, o: &mut [f64]) -> ()
);

/// out[…, i, …] = Σ_{j=0}^{2r} k_j · a[…, off + i + j, …] for i < m_out along `axis` of the
/// row-major array `a` of `shape`; returns the output and its shape. Direct, register-
/// blocked (several outputs share each load, the sums stay in registers), blocks of rows
/// in parallel; each output's products are added in the order of j, so the bits do not
/// depend on the blocking or the thread count.
pub(super) fn conv_axis(
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
            let mut kp = vec![0.0; k.len() + 2 * (CRB - 1)];
            kp[CRB - 1..CRB - 1 + k.len()].copy_from_slice(k);
            let blocks = m_out.div_ceil(CRB);
            out.par_chunks_mut(m_out * inner)
                .enumerate()
                .flat_map(|(oi, o)| {
                    o.par_chunks_mut(CRB * inner)
                        .enumerate()
                        .map(move |(bi, ob)| (oi, bi, ob))
                })
                .for_each(|(oi, bi, ob)| {
                    let src = &a[oi * n_ax * inner..(oi + 1) * n_ax * inner];
                    let nr = ob.len() / inner;
                    debug_assert!(bi < blocks);
                    rows_block_at(level, &kp, src, inner, off, bi * CRB, nr, ob);
                });
        } else {
            out.par_chunks_mut(m_out).enumerate().for_each(|(oi, o)| {
                let src = &a[oi * n_ax..(oi + 1) * n_ax];
                line_conv_at(level, k, src, off, o);
            });
        }
    })?;
    check_stop(stop)?;
    Ok((out, oshape))
}

/// Binned Gaussian sums S(g) = Σ_j w_j Π_a exp(−(g_a − x_ja)²/(2h_a²)) on the grid
/// lo_a + i·δ_a, i < m_a (d = 2 or 3; `x` row-major n × d; `w = None`: weights 1/n), by
/// moment-corrected binning ([`bin_corrected`]) and one direct 1-D convolution per axis
/// (axes in the cheapest order), with (when `estimate`) the pointwise error estimate of
/// [`error_estimate`] plus the truncation bound. The Gaussian grid path estimates its
/// error from the data instead (`divest/_kdeerr.py`) and passes `estimate = false`. Points farther than the kernel's reach from the grid do not
/// contribute. Allocates what [`bin_corrected`] does and two arrays of at most the bins'
/// size for the passes.
#[allow(clippy::too_many_arguments)]
pub fn binned_nd(
    x: &[f64],
    d: usize,
    w: Option<&[f64]>,
    lo: &[f64],
    delta: &[f64],
    m: &[usize],
    hsd: &[f64],
    estimate: bool,
    fl: Option<&FieldLattice>,
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
    let (mut cur, stats, ok, fields) =
        bin_corrected_fields(x, d, w, 1.0 / n as f64, &lo_b, delta, &nb, fl, stop)?;
    let fields = fields.unwrap_or_default();
    if !ok {
        return Err(invalid!(
            "data must be finite and weights finite and non-negative"
        ));
    }
    // The axes in the order that costs the fewest multiply-adds: a pass over axis a turns
    // nb_a into m_a and costs (the other extents)·m_a·(2·reach_a + 1).
    let mut best: (f64, Vec<usize>) = (f64::INFINITY, Vec::new());
    let perms: &[&[usize]] = if d == 2 {
        &[&[0, 1], &[1, 0]]
    } else {
        &[
            &[0, 1, 2],
            &[0, 2, 1],
            &[1, 0, 2],
            &[1, 2, 0],
            &[2, 0, 1],
            &[2, 1, 0],
        ]
    };
    for p in perms {
        let mut shape: Vec<f64> = nb.iter().map(|&v| v as f64).collect();
        let mut cost = 0.0;
        for &a in p.iter() {
            let others: f64 = (0..d).filter(|&b| b != a).map(|b| shape[b]).product();
            cost += others * m[a] as f64 * (2 * reach[a] + 1) as f64;
            shape[a] = m[a] as f64;
        }
        if cost < best.0 {
            best = (cost, p.to_vec());
        }
    }
    let mut shape = nb.clone();
    for &a in &best.1 {
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
    if !estimate {
        return Ok(BinnedNd {
            sums: cur,
            err: Vec::new(),
            fields,
        });
    }
    let smax = cur.iter().fold(0.0f64, |a, &b| a.max(b.abs()));
    // Rounding (a few ε of the largest sum) and truncation (≤ e^{−R²/2}·Σw, Σw = 1).
    let floor = 1e-14 * smax + (-0.5 * ND_REACH * ND_REACH).exp();
    let hinv: Vec<f64> = hsd.iter().map(|h| 1.0 / (h * h)).collect();
    let err = error_estimate(&cur, m, delta, &hinv, &stats, floor)?;
    Ok(BinnedNd {
        sums: cur,
        err,
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::Lcg;

    /// Direct Gaussian sum with weights at one point.
    fn direct(x: &[f64], w: &[f64], d: usize, h: &[f64], g: &[f64]) -> f64 {
        x.chunks_exact(d)
            .zip(w)
            .map(|(p, &wi)| {
                let q: f64 = (0..d).map(|a| ((g[a] - p[a]) / h[a]).powi(2)).sum();
                wi * (-0.5 * q).exp()
            })
            .sum()
    }

    #[test]
    fn corrected_bins_keep_moments_up_to_third_order() {
        // Along each axis the stencil keeps Σ m·x^e for e ≤ 3, linear along the others.
        let stop = AtomicBool::new(false);
        let mut g = Lcg::new(5);
        for d in 2..=3 {
            let n = 300;
            let x: Vec<f64> = (0..n * d).map(|_| g.unit() * 2.0 + 0.9).collect();
            let w: Vec<f64> = (0..n).map(|_| g.unit()).collect();
            let lo = vec![0.0; d];
            let delta = vec![0.37; d];
            let nb = vec![12usize; d];
            let (b, st, ok) = bin_corrected(&x, d, Some(&w), 0.0, &lo, &delta, &nb, &stop).unwrap();
            assert!(ok);
            let sw: f64 = w.iter().sum();
            assert!((st.sum_w - sw).abs() < 1e-12);
            let stn = strides(&nb);
            // Moments Σ m·Π x_a^{e_a} for exponents ≤ 3 with at most one above 1.
            for e in 0..4usize.pow(d as u32) {
                let ex: Vec<i32> = (0..d)
                    .map(|a| ((e / 4usize.pow(a as u32)) % 4) as i32)
                    .collect();
                if ex.iter().filter(|&&v| v > 1).count() > 1 {
                    continue;
                }
                let want: f64 = x
                    .chunks_exact(d)
                    .zip(&w)
                    .map(|(p, &wi)| wi * (0..d).map(|a| p[a].powi(ex[a])).product::<f64>())
                    .sum();
                let got: f64 = (0..b.len())
                    .map(|f| {
                        let mut r = f;
                        let mut v = b[f];
                        for a in 0..d {
                            let k = r / stn[a];
                            r %= stn[a];
                            v *= (k as f64 * delta[a]).powi(ex[a]);
                        }
                        v
                    })
                    .sum();
                assert!(
                    (got - want).abs() < 1e-10 * want.abs().max(1.0),
                    "{d} {ex:?}: {got} {want}"
                );
            }
        }
    }

    #[test]
    fn binning_bits_do_not_depend_on_threads_and_groups_add_up() {
        // More points than one sort group, weighted and not, in 2-D and 3-D: the bins are
        // bit-identical for 1, 2 and 3 threads, and equal (to rounding) to the same points
        // binned in two halves and added, each bin a sum over its points.
        let stop = AtomicBool::new(false);
        let mut g = Lcg::new(17);
        for d in 2..=3 {
            let n = GROUP + 3001;
            let x: Vec<f64> = (0..n * d).map(|_| g.unit_sum(3) * 1.3 - 0.5).collect();
            let w: Vec<f64> = (0..n).map(|_| g.unit()).collect();
            let lo = vec![-0.7; d];
            let delta: Vec<f64> = (0..d).map(|a| 0.11 + 0.01 * a as f64).collect();
            let nb: Vec<usize> = (0..d).map(|a| 40 - 3 * a).collect();
            for wt in [None, Some(&w[..])] {
                let run = |t: usize, lo_i: usize, hi_i: usize| {
                    let old = threads::set_thread_override(t).unwrap();
                    let r = bin_corrected(
                        &x[lo_i * d..hi_i * d],
                        d,
                        wt.map(|w| &w[lo_i..hi_i]),
                        0.5,
                        &lo,
                        &delta,
                        &nb,
                        &stop,
                    )
                    .unwrap();
                    threads::set_thread_override(old).unwrap();
                    r
                };
                let (b1, s1, ok) = run(1, 0, n);
                assert!(ok);
                for t in [2, 3] {
                    let (bt, st, _) = run(t, 0, n);
                    assert!(b1.iter().zip(&bt).all(|(p, q)| p.to_bits() == q.to_bits()));
                    assert_eq!(s1, st);
                }
                let (ha, _, _) = run(2, 0, n / 3);
                let (hb, _, _) = run(2, n / 3, n);
                let scale = b1.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                for ((p, a), b) in b1.iter().zip(&ha).zip(&hb) {
                    assert!((p - (a + b)).abs() <= 1e-12 * scale, "{d}: {p} {a} {b}");
                }
            }
        }
    }

    #[test]
    fn blocked_2d_band_loop_matches_the_scalar_one() {
        // The 2-D band loop (blocks, 4-wide rows) against the per-point loop of
        // `bin_band`, band by band, at every SIMD level, weighted and not, with points on
        // the lattice's last node, on cell edges and filling partial blocks: the bins are
        // the same bits, the statistics equal to 1e-12 relative (summed in another order).
        let mut g = Lcg::new(29);
        let nb = [23usize, 31];
        let (lo, inv) = ([-0.4, -0.9], [9.0, 13.0]);
        let band = 3;
        let lat = Lat::<2>::new(&lo, &inv, &nb, band);
        let nbands = (nb[0] - 1).div_ceil(band);
        let rowlen = lat.st[0];
        let size = (nb[0] + 2) * rowlen;
        for n in [1usize, 63, 64, 65, 1000, 5003] {
            let mut x: Vec<f64> = (0..2 * n)
                .map(|i| lo[i % 2] + g.unit() * (nb[i % 2] as f64 - 0.5) / inv[i % 2])
                .collect();
            x[0] = lo[0] + (nb[0] - 1) as f64 / inv[0];
            if n > 2 {
                x[3] = lo[1] + (nb[1] - 1) as f64 / inv[1];
                x[2] = lo[0] + 5.0 / inv[0];
            }
            let w: Vec<f64> = (0..n).map(|_| g.unit() + 0.1).collect();
            for wt in [None, Some(&w[..])] {
                let r = 2 + wt.is_some() as usize;
                let mut rec = vec![0.0; n * r];
                let mut st = vec![0usize; nbands + 1];
                assert!(sort_group::<2>(&lat, &x, wt, &mut rec, &mut st));
                let starts = vec![st];
                let offs = [0usize];
                for b in 0..nbands {
                    let at = b * band * rowlen;
                    let mut want = vec![0.0; size];
                    let sw = bin_band::<2>(&lat, &rec, &starts, &offs, r, 0.7, b, &mut want[at..]);
                    for level in crate::core::testing::simd_levels() {
                        let mut got = vec![0.0; size];
                        let geo = Geo2 {
                            s: rowlen,
                            band,
                            kmax: lat.kmax,
                        };
                        let sg = band2(
                            level,
                            geo,
                            &rec,
                            &starts,
                            &offs,
                            r,
                            0.7,
                            b,
                            &mut got[at..],
                            None,
                        );
                        assert!(got.iter().zip(&want).all(|(p, q)| p == q), "{n} {b}");
                        for (p, q) in sg.iter().zip(&sw) {
                            assert!((p - q).abs() <= 1e-12 * q.abs(), "{n} {b}: {p} {q}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn fused_error_fields_match_their_own_pass() {
        // The error fields binned in the 2-D band pass (`band2` with a field slab: per
        // cell, then spread from the cell centres) against the same sums written out
        // point by point, weighted and not, with points outside the lattice, on its last
        // node and with zero weight: equal to rounding at every SIMD level, with the
        // totals of errfield's own pass (exact positions) and close to it node by node;
        // the whole pass bit-identical for 1, 2 and 3 threads.
        let stop = AtomicBool::new(false);
        let mut g = Lcg::new(41);
        let nb = [520usize, 45];
        let delta = [0.01, 0.07];
        let lo_b = [-2.6, -1.5];
        let r = [2usize, 3];
        let off = [4usize, 5];
        let fl = FieldLattice {
            lo: (0..2).map(|a| lo_b[a] - off[a] as f64 * delta[a]).collect(),
            delta: (0..2).map(|a| r[a] as f64 * delta[a]).collect(),
            nc: vec![
                (nb[0] - 1 + off[0]).div_ceil(r[0]) + 1,
                (nb[1] - 1 + off[1]).div_ceil(r[1]) + 1,
            ],
        };
        let (fg, rows) = field_plan(&lo_b, &delta, &nb, &fl).expect("the lattices line up");
        let n = 20_000;
        let mut x: Vec<f64> = (0..2 * n)
            .map(|i| lo_b[i % 2] + (g.unit() * 1.02 - 0.01) * (nb[i % 2] - 1) as f64 * delta[i % 2])
            .collect();
        x[0] = lo_b[0] + (nb[0] - 1) as f64 * delta[0];
        x[1] = lo_b[1] + (nb[1] - 1) as f64 * delta[1];
        let mut w: Vec<f64> = (0..n).map(|_| g.unit() + 0.05).collect();
        w[7] = 0.0;
        let nf = 3 * fl.nc[0] * fl.nc[1];
        let scale = |v: &[f64]| v.iter().fold(0.0f64, |m, q| m.max(q.abs()));
        // The oracle sees only the points inside the bin lattice (the binning pass drops
        // the others; the separate pass would keep those inside the coarse lattice).
        let inside: Vec<usize> = (0..n)
            .filter(|&i| {
                (0..2).all(|a| {
                    let p = (x[2 * i + a] - lo_b[a]) / delta[a];
                    p >= 0.0 && p <= (nb[a] - 1) as f64
                })
            })
            .collect();
        assert!(inside.len() < n - 100);
        let x_in: Vec<f64> = inside
            .iter()
            .flat_map(|&i| [x[2 * i], x[2 * i + 1]])
            .collect();
        let w_in: Vec<f64> = inside.iter().map(|&i| w[i]).collect();
        for wt in [None, Some(&w[..])] {
            let exact = crate::core::kdegrid::errfield::error_fields(
                &x_in,
                2,
                wt.map(|_| &w_in[..]),
                0.3,
                crate::core::kdegrid::errfield::Scheme::Corrected,
                &fl.lo,
                &delta,
                &fl.lo,
                &fl.delta,
                &fl.nc,
                &stop,
            )
            .unwrap();
            // The band pass places each cell's sums at the cell's centre: the oracle
            // written out point by point (fields from the point's own fractions, bilinear
            // shares of its cell's centre on the coarse nodes).
            let mut want = vec![0.0; nf];
            for (j, &i) in inside.iter().enumerate() {
                let wi = wt.map_or(0.3, |_| w_in[j]);
                let mut u = [0.0; 2];
                let mut at = 0;
                let mut sh = [[0.0; 2]; 2];
                for a in 0..2 {
                    let p = (x[2 * i + a] - lo_b[a]) / delta[a];
                    let k = p.floor().min((nb[a] - 2) as f64);
                    u[a] = (p - k) * (1.0 - (p - k));
                    let pc = (k + 0.5 + off[a] as f64) / r[a] as f64;
                    let kc = pc.floor().min((fl.nc[a] - 2) as f64);
                    sh[a] = [1.0 - (pc - kc), pc - kc];
                    at = at * fl.nc[a] + kc as usize;
                }
                let v = [
                    wi * u[0] * (2.0 + u[0]),
                    wi * u[1] * (2.0 + u[1]),
                    wi * u[0] * u[1],
                ];
                for (q0, s0) in sh[0].iter().enumerate() {
                    for (q1, s1) in sh[1].iter().enumerate() {
                        let node = at + q0 * fl.nc[1] + q1;
                        for f in 0..3 {
                            want[3 * node + f] += s0 * s1 * v[f];
                        }
                    }
                }
            }
            let tol = 1e-12 * scale(&want);
            // The same totals per field as the exact positions (the shares sum to 1), and
            // close to them node by node (the positions moved by at most half a cell).
            for f in 0..3 {
                let tot = |v: &[f64]| v.iter().skip(f).step_by(3).sum::<f64>();
                assert!((tot(&want) - tot(&exact)).abs() <= 1e-12 * tot(&exact));
            }
            let diff: f64 = want.iter().zip(&exact).map(|(p, q)| (p - q).abs()).sum();
            assert!(
                diff < 0.5 * exact.iter().map(|v| v.abs()).sum::<f64>(),
                "{diff}"
            );
            // The band loop at each level, on the sorted points.
            let inv = [1.0 / delta[0], 1.0 / delta[1]];
            let band = (nb[0] - 1).div_ceil(BANDS).max(3);
            let lat = Lat::<2>::new(&lo_b, &inv, &nb, band);
            let nbands = (nb[0] - 1).div_ceil(band);
            let rr = 2 + wt.is_some() as usize;
            let mut rec = vec![0.0; n * rr];
            let mut st = vec![0usize; nbands + 1];
            sort_group::<2>(&lat, &x, wt, &mut rec, &mut st);
            let starts = vec![st];
            let geo = Geo2 {
                s: lat.st[0],
                band,
                kmax: lat.kmax,
            };
            for level in crate::core::testing::simd_levels() {
                let mut got = vec![0.0; nf];
                let mut slab = vec![0.0; (nb[0] + 2) * lat.st[0]];
                for (b, &[lo, hi]) in rows.iter().enumerate() {
                    let mut part = vec![0.0; (hi + 2 - lo) * fg.row];
                    let mut fld = Fld {
                        g: fg,
                        rows: [lo as f64, hi as f64],
                        out: &mut part,
                    };
                    let at = b * band * lat.st[0];
                    band2(
                        level,
                        geo,
                        &rec,
                        &starts,
                        &[0],
                        rr,
                        0.3,
                        b,
                        &mut slab[at..],
                        Some(&mut fld),
                    );
                    for (i, v) in part.iter().enumerate() {
                        got[lo * fg.row + i] += v;
                    }
                }
                for (i, (p, q)) in got.iter().zip(&want).enumerate() {
                    assert!((p - q).abs() <= tol, "{level:?} {i}: {p} {q}");
                }
            }
            // The whole pass: the same fields, bit-identical for every thread count.
            let run = |t: usize| {
                let old = threads::set_thread_override(t).unwrap();
                let out =
                    bin_corrected_fields(&x, 2, wt, 0.3, &lo_b, &delta, &nb, Some(&fl), &stop)
                        .unwrap();
                threads::set_thread_override(old).unwrap();
                out
            };
            let (b1, s1, ok, f1) = run(1);
            assert!(ok);
            let f1 = f1.unwrap();
            for (p, q) in f1.iter().zip(&want) {
                assert!((p - q).abs() <= tol, "{p} {q}");
            }
            for t in [2, 3] {
                let (bt, stt, _, ft) = run(t);
                assert!(b1.iter().zip(&bt).all(|(p, q)| p.to_bits() == q.to_bits()));
                assert!(f1
                    .iter()
                    .zip(&ft.unwrap())
                    .all(|(p, q)| p.to_bits() == q.to_bits()));
                assert_eq!(s1, stt);
            }
            // The bins are those of the pass without fields.
            let (b0, _, _) = bin_corrected(&x, 2, wt, 0.3, &lo_b, &delta, &nb, &stop).unwrap();
            assert!(b1.iter().zip(&b0).all(|(p, q)| p.to_bits() == q.to_bits()));
        }
        // Lattices that do not line up (a ratio that is not whole) take the separate pass.
        let mut odd = fl.clone();
        odd.delta[0] *= 1.1;
        assert!(field_plan(&lo_b, &delta, &nb, &odd).is_none());
        let (_, _, _, f) =
            bin_corrected_fields(&x, 2, None, 0.3, &lo_b, &delta, &nb, Some(&odd), &stop).unwrap();
        assert_eq!(f.unwrap().len(), 3 * odd.nc[0] * odd.nc[1]);
    }

    #[test]
    fn blocked_convolutions_match_the_direct_sums() {
        // Both convolution kernels at every SIMD level against the sums written out, on
        // sizes that leave partial row blocks and partial column chunks; and conv_axis
        // along each axis of a 3-D array, for 1 and 2 threads (same bits).
        let mut g = Lcg::new(3);
        let k: Vec<f64> = (0..9).map(|_| g.unit()).collect();
        for (n_ax, inner) in [(19usize, 37usize), (12, 32), (40, 5)] {
            let m_out = n_ax - k.len() + 1 - 1;
            let src: Vec<f64> = (0..n_ax * inner).map(|_| g.unit() - 0.5).collect();
            let mut kp = vec![0.0; k.len() + 2 * (CRB - 1)];
            kp[CRB - 1..CRB - 1 + k.len()].copy_from_slice(&k);
            for level in crate::core::testing::simd_levels() {
                for i0 in (0..m_out).step_by(CRB) {
                    let nr = (m_out - i0).min(CRB);
                    let mut out = vec![0.0; nr * inner];
                    rows_block_at(level, &kp, &src, inner, 1, i0, nr, &mut out);
                    for r in 0..nr {
                        for c in 0..inner {
                            let want: f64 = (0..k.len())
                                .map(|j| k[j] * src[(1 + i0 + r + j) * inner + c])
                                .sum();
                            assert!((out[r * inner + c] - want).abs() < 1e-14, "{level:?}");
                        }
                    }
                }
                let line: Vec<f64> = src[..n_ax].to_vec();
                let mut o = vec![0.0; m_out];
                line_conv_at(level, &k, &line, 1, &mut o);
                for (i, v) in o.iter().enumerate() {
                    let want: f64 = (0..k.len()).map(|j| k[j] * line[1 + i + j]).sum();
                    assert!((v - want).abs() < 1e-14, "{level:?}");
                }
            }
        }
        let stop = AtomicBool::new(false);
        let shape = [23usize, 17, 41];
        let a: Vec<f64> = (0..shape.iter().product::<usize>())
            .map(|_| g.unit())
            .collect();
        for axis in 0..3 {
            let m_out = shape[axis] - k.len();
            let run = |t: usize| {
                let old = threads::set_thread_override(t).unwrap();
                let r = conv_axis(&a, &shape, axis, &k, 1, m_out, &stop).unwrap();
                threads::set_thread_override(old).unwrap();
                r
            };
            let (o1, s1) = run(1);
            let (o2, _) = run(2);
            assert!(o1.iter().zip(&o2).all(|(p, q)| p.to_bits() == q.to_bits()));
            let st = strides(&s1);
            let sa = strides(&shape);
            for (f, v) in o1.iter().enumerate() {
                let idx: Vec<usize> = (0..3).map(|e| (f / st[e]) % s1[e]).collect();
                let want: f64 = (0..k.len())
                    .map(|j| {
                        let mut at = 0;
                        for e in 0..3 {
                            let i = if e == axis { idx[e] + 1 + j } else { idx[e] };
                            at += i * sa[e];
                        }
                        k[j] * a[at]
                    })
                    .sum();
                assert!((v - want).abs() < 1e-13, "{axis} {f}");
            }
        }
    }

    #[test]
    fn lattice_statistics() {
        // Every point at t = 0.25 on both axes: u = 0.1875, 2u + u² = 0.41015625.
        let stop = AtomicBool::new(false);
        let x: Vec<f64> = (0..40).map(|i| (i % 5) as f64 + 1.25).collect();
        let (_, st, _) =
            bin_corrected(&x, 2, None, 0.05, &[0.0, 0.0], &[1.0, 1.0], &[9, 9], &stop).unwrap();
        for a in 0..2 {
            assert!((st.even[a] - 0.1875).abs() < 1e-12, "{:?}", st);
            assert!((st.q1[a] - 0.41015625).abs() < 1e-12, "{:?}", st);
            assert!((st.q2[a] - 0.41015625f64.powi(2)).abs() < 1e-12);
        }
        assert!((st.sum_w - 1.0).abs() < 1e-12 && (st.sum_w2 - 0.05).abs() < 1e-12);
    }

    fn check_against_direct(
        d: usize,
        n: usize,
        seed: u64,
        m: &[usize],
        h: &[f64],
        lattice: bool,
        bound: f64,
    ) {
        let stop = AtomicBool::new(false);
        let mut g = Lcg::new(seed);
        let mut x: Vec<f64> = (0..d * n).map(|_| g.unit_sum(3) - 1.5).collect();
        if lattice {
            x.iter_mut().for_each(|v| *v = (*v * 20.0).round() / 20.0);
        }
        let w = vec![1.0 / n as f64; n];
        let lo: Vec<f64> = vec![-2.0; d];
        let delta: Vec<f64> = (0..d).map(|a| 4.0 / (m[a] - 1) as f64).collect();
        let b = binned_nd(&x, d, None, &lo, &delta, m, h, true, None, &stop).unwrap();
        let st = strides(m);
        let (mut max_err, mut max_est, mut peak) = (0.0f64, 0.0f64, 0.0f64);
        for (f, (&s, &e)) in b.sums.iter().zip(&b.err).enumerate() {
            let gp: Vec<f64> = (0..d)
                .map(|a| lo[a] + ((f / st[a]) % m[a]) as f64 * delta[a])
                .collect();
            let ex = direct(&x, &w, d, h, &gp);
            max_err = max_err.max((s - ex).abs());
            max_est = max_est.max(e);
            peak = peak.max(ex);
        }
        eprintln!(
            "{d} {lattice}: err {:.3e} est {:.3e} of the peak",
            max_err / peak,
            max_est / peak
        );
        assert!(max_err < bound * peak, "{d} {lattice}: {max_err} {peak}");
        assert!(
            max_est < 2.0 * max_err && max_est > 0.5 * max_err,
            "{d} {lattice}: {max_err} {max_est}"
        );
    }

    #[test]
    fn separable_sums_match_the_direct_sum() {
        check_against_direct(2, 4000, 9, &[80, 60], &[0.3, 0.2], false, 1e-4);
        check_against_direct(3, 3000, 4, &[24, 20, 22], &[0.4, 0.35, 0.45], false, 3e-3);
    }

    #[test]
    fn rounded_data_keep_the_accuracy_and_the_estimate() {
        check_against_direct(2, 4000, 11, &[81, 61], &[0.3, 0.2], true, 1e-4);
    }
}
