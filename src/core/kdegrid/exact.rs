//! Exact kernel sums on a regular 1-D grid.
//!
//! * Compact kernels (tophat, epanechnikov, linear, cosine): the data are sorted once and
//!   a window (g − h, g + h) slides along the grid. The window keeps the moments
//!   Σw, Σw·v, Σw·v² (v = (x − a)/h about an anchor grid point a) or, for the cosine,
//!   Σw·cos(πv/2) and Σw·sin(πv/2); moving to another grid point is a change of centre
//!   (binomial or angle-addition formulas). The anchor is reset (moments recomputed from
//!   the window) whenever the centre has moved one bandwidth or the window has lost 7/8 of
//!   its mass, so rounding never grows beyond a few ε of the current window's mass. Where
//!   the kernel sum cancels (value < 1e-3 of the window mass: all points near the support
//!   edge) the point is summed directly. Cost O(n + m) after the sort.
//! * Exponential: S = L + R with L(g) = Σ_{x ≤ g} w e^{−(g−x)/h} and R the mirror image;
//!   both follow one-sided recurrences along the grid, kept with a separate exponent so
//!   they never underflow (the log-sums are exact far into the tails).
//! * Gaussian: the data are binned onto a centre lattice with spacing δc ≤ h/12 and
//!   e^{−(d−u)²/2} = e^{−d²/2}·e^{−u²/2}·Σ_p (d·u)^p/p! (d = g − centre, u = x − centre,
//!   in bandwidths) is summed to the order P where the remainder is below 1e-17 of the
//!   term (|d·u| ≤ 0.51, so P ≈ 13). Every term is positive up to a factor e^{2|du|} ≤ 2.8,
//!   so the result is relatively accurate. Centres farther than R = 12 bandwidths are
//!   skipped; they contribute at most e^{−72} ≈ 5e-32 (weights summing to 1). Grid points
//!   where that bound is not below 1e-15 of the sum (far tails) are recomputed in log
//!   space from the sorted data over a window chosen so that the dropped terms are below
//!   1e-16 of the nearest point's term; a window of more than 1024 points is summed from
//!   Taylor moments on a finer lattice of cells (see `redo_tails`), so a far query costs
//!   O(cells) (a few hundred at most), not O(window).

use std::f64::consts::FRAC_PI_2;
use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use super::binning::sort_weighted;
use super::{check_data, check_stop, profile, Grid1};
use crate::core::error::{try_vec, Result};
use crate::core::kde::Kernel;
use crate::core::threads;

/// Exact unnormalised sums on a grid.
#[derive(Clone, Debug)]
pub struct Exact {
    /// S(g_i) = Σ_j w_j K(|g_i − x_j|/h) (may underflow to 0 in the tails).
    pub sums: Vec<f64>,
    /// log S(g_i), accurate where `sums` underflows (−inf outside a compact support).
    pub log_sums: Vec<f64>,
}

/// Exact sums at every grid point (or only where `mask` is true; other entries NaN).
/// `x`, `w`: data and non-negative weights (summing to 1 for the stated Gaussian bounds).
/// Allocates the sorted data (2n values; not for the Gaussian unless tails need it) and
/// O(m) outputs; the Gaussian path also O((m + reach)·P) moments.
pub fn exact_1d(
    x: &[f64],
    w: &[f64],
    kernel: Kernel,
    h: f64,
    grid: Grid1,
    mask: Option<&[bool]>,
    stop: &AtomicBool,
) -> Result<Exact> {
    check_data(x, w, h)?;
    if let Some(mk) = mask {
        if mk.len() != grid.m {
            return Err(crate::core::error::invalid!(
                "mask has length {} but the grid has {} points",
                mk.len(),
                grid.m
            ));
        }
    }
    match kernel {
        Kernel::Gaussian => gaussian(x, w, h, grid, mask, stop),
        Kernel::Exponential => {
            let (xs, ws) = sort_weighted(x, w, stop)?;
            let gs = grid_points(grid)?;
            exponential(&xs, &ws, h, &gs, stop)
        }
        _ => {
            let sums = match compact_cells(x, w, kernel, h, grid, stop)? {
                Some(s) => s,
                None => {
                    let (xs, ws) = sort_weighted(x, w, stop)?;
                    let gs = grid_points(grid)?;
                    compact(&xs, &ws, kernel, h, &gs, stop)?
                }
            };
            let log_sums = sums.iter().map(|s| s.ln()).collect();
            Ok(Exact { sums, log_sums })
        }
    }
}

/// Reciprocals 1/((2k+1)(2k+2)) and 1/((2k+2)(2k+3)) of the cosine and sine series'
/// successive term ratios.
const CS_RECIP: [(f64, f64); 16] = {
    let mut t = [(0.0, 0.0); 16];
    let mut k = 0;
    while k < 16 {
        let a = (2 * k + 1) as f64 * (2 * k + 2) as f64;
        let b = (2 * k + 2) as f64 * (2 * k + 3) as f64;
        t[k] = (1.0 / a, 1.0 / b);
        k += 1;
    }
    t
};

/// Taylor series of (cos φ, sin φ) for 0 ≤ φ ≤ π/2, `nt` ≤ 16 terms of each (chosen by
/// the caller so the first dropped term is below 1e-17), by Horner's rule.
#[inline]
fn cos_sin_small(phi: f64, nt: usize) -> (f64, f64) {
    let p2 = phi * phi;
    let (mut c, mut s) = (0.0f64, 0.0f64);
    for &(rc, rs) in CS_RECIP[..nt].iter().rev() {
        c = 1.0 - p2 * c * rc;
        s = 1.0 - p2 * s * rs;
    }
    (c, s * phi)
}

/// Exact sums of a compact kernel on the grid without sorting: the data are accumulated
/// per grid cell [g_k, g_k + δ) into moments about the cell's left end (Σw, Σw·v, Σw·v²
/// with v = (x − g_k)/h, or Σw, Σw·cos(πv/2), Σw·sin(πv/2) for the cosine), once for
/// the whole cell and once for the parts the window edges cut (the edges fall at the
/// same fractions f and 1 − f of a cell for every grid point, f = h/δ − ⌊h/δ⌋). Each grid
/// point then combines the 2⌊h/δ⌋ + 2 cells in its window with its distance to them
/// (binomial or angle-addition formulas, terms bounded by a few times the cell's mass,
/// since δ ≤ h). Points whose value is below 1e-2 of the window's mass (all mass near
/// the support's edge, where those formulas cancel) are summed directly from the few
/// points of their window, sorted. Cost O(n + m·h/δ); returns None (the caller sorts
/// and sweeps) when δ > h or when m·h/δ is large against n. Allocates 9 values per cell
/// per thread.
fn compact_cells(
    x: &[f64],
    w: &[f64],
    kernel: Kernel,
    h: f64,
    grid: Grid1,
    stop: &AtomicBool,
) -> Result<Option<Vec<f64>>> {
    let m = grid.m;
    let delta = grid.delta;
    let qf = (h / delta).floor();
    // The tophat's jump makes points at exactly h from a grid point matter; the sorted
    // sweep decides them by the same comparison as the direct sum.
    if !(1.0..1e7).contains(&qf) || kernel == Kernel::Tophat {
        return Ok(None);
    }
    let q = qf as usize;
    let work = (m as f64) * (2.0 * qf + 2.0);
    if work > (8.0 * x.len() as f64).max((1u64 << 22) as f64) {
        return Ok(None);
    }
    let p = q + 2; // cells before grid point 0
    let nc = m + 2 * p;
    let hf = h - qf * delta; // the window's right edge cuts a cell at hf from its start
    let left_cut = delta - hf; // and its left edge at δ − hf
    let cosine = kernel == Kernel::Cosine;
    let inv_h = 1.0 / h;
    let inv_d = 1.0 / delta;
    // Terms of the small-angle series for φ ≤ πδ/(2h) ≤ π/2.
    let phi_max = FRAC_PI_2 * delta * inv_h;
    let mut nt = 1usize;
    let mut term = phi_max;
    while term > 1e-17 && nt < 30 {
        term *= phi_max / (nt as f64 + 1.0);
        nt += 1;
    }
    let nt = (nt.div_ceil(2) + 1).min(16); // (π/2)^30/30! < 1e-17
                                           // Cell index and the offset from its left end (exact to rounding of x − g_k).
    let locate = |xi: f64| -> Option<(usize, f64)> {
        let pos = (xi - grid.lo) * inv_d + p as f64;
        if !(pos >= 0.0 && pos < nc as f64) {
            return None;
        }
        // Offsets from the cell's start as the grid's own points are rounded,
        // lo + k·δ (the subtraction is exact when x is near it).
        let start = |c: usize| grid.lo + (c as f64 - p as f64) * delta;
        let mut c = pos as usize;
        let mut u = xi - start(c);
        if u < 0.0 {
            if c == 0 {
                return None;
            }
            c -= 1;
            u = xi - start(c);
        } else if u >= delta {
            c += 1;
            if c >= nc {
                return None;
            }
            u = xi - start(c);
        }
        Some((c, u))
    };
    // Each cell is split at hf and δ − hf into three sub-cells [0, b1), [b1, b2), [b2, δ),
    // three moments each; every point touches one sub-cell (one cache line).
    const ST: usize = 9;
    let (b1, b2) = (hf.min(left_cut), hf.max(left_cut));
    let nbins = crate::core::error::checked_size(nc, ST, "n_points")?;
    let sub = super::binning::accumulate(x.len(), nbins, 1, 1 << 15, stop, |s, e, mo| {
        for (&xi, &wi) in x[s..e].iter().zip(&w[s..e]) {
            if wi == 0.0 {
                continue;
            }
            let Some((c, u)) = locate(xi) else { continue };
            let v = u * inv_h;
            let (m1, m2) = if cosine {
                let (cs, sn) = cos_sin_small(FRAC_PI_2 * v, nt);
                (wi * cs, wi * sn)
            } else {
                (wi * v, wi * v * v)
            };
            let k = c * ST + 3 * (usize::from(u >= b1) + usize::from(u >= b2));
            let slot = &mut mo[k..k + 3];
            slot[0] += wi;
            slot[1] += m1;
            slot[2] += m2;
        }
    })?;
    // Per cell: [whole cell; part at or beyond δ − hf (the left edge's cell); part below
    // hf (the right edge's cell)].
    let left_from = if left_cut == b1 { 1 } else { 2 };
    let right_to = if hf == b2 { 2 } else { 1 };
    let mut mom = try_vec(nbins, 0.0f64, "n_points")?;
    for (dst, src) in mom.chunks_exact_mut(ST).zip(sub.chunks_exact(ST)) {
        for k in 0..3 {
            let part = |a: usize, b: usize| (a..b).map(|t| src[3 * t + k]).sum::<f64>();
            dst[k] = part(0, 3);
            dst[3 + k] = part(left_from, 3);
            dst[6 + k] = part(0, right_to);
        }
    }
    check_stop(stop)?;
    // Coefficients per cell offset j = −q−1..=q (cell start − g = j·δ): the contribution
    // is α·m0 + β·m1 + γ·m2.
    let nj = 2 * q + 2;
    let mut coef = try_vec(3 * nj, 0.0f64, "n_points")?;
    for t in 0..nj {
        let j = t as f64 - (q as f64 + 1.0);
        let d = j * delta * inv_h;
        let (a, b, g) = match kernel {
            Kernel::Epanechnikov => ((1.0 - d) * (1.0 + d), -2.0 * d, -1.0),
            Kernel::Linear => {
                let sg = if j >= 0.0 { 1.0 } else { -1.0 };
                (1.0 - sg * d, -sg, 0.0)
            }
            Kernel::Cosine => {
                let (sn, cs) = (FRAC_PI_2 * d).sin_cos();
                (0.0, cs, -sn)
            }
            _ => (1.0, 0.0, 0.0), // not reached: the tophat takes the sorted sweep
        };
        coef[3 * t] = a;
        coef[3 * t + 1] = b;
        coef[3 * t + 2] = g;
    }
    let mut out = try_vec(m, 0.0f64, "n_points")?;
    let mut flagged = try_vec(m, false, "n_points")?;
    const GCH: usize = 256;
    threads::install(|| {
        out.par_chunks_mut(GCH)
            .zip(flagged.par_chunks_mut(GCH))
            .enumerate()
            .for_each(|(b, (oc, fc))| {
                for (r, (o, f)) in oc.iter_mut().zip(fc.iter_mut()).enumerate() {
                    let i = b * GCH + r;
                    let c0 = i + p - q - 1; // the cell at offset j = −q−1
                    let (mut val, mut mass) = (0.0f64, 0.0f64);
                    for t in 1..nj - 1 {
                        let cell = &mom[(c0 + t) * ST..(c0 + t) * ST + 3];
                        let k = &coef[3 * t..3 * t + 3];
                        val += k[0] * cell[0] + k[1] * cell[1] + k[2] * cell[2];
                        mass += cell[0];
                    }
                    let lc = &mom[c0 * ST + 3..c0 * ST + 6];
                    val += coef[0] * lc[0] + coef[1] * lc[1] + coef[2] * lc[2];
                    let t = nj - 1;
                    let rc = &mom[(c0 + t) * ST + 6..(c0 + t) * ST + 9];
                    val += coef[3 * t] * rc[0] + coef[3 * t + 1] * rc[1] + coef[3 * t + 2] * rc[2];
                    mass += lc[0] + rc[0];
                    if mass == 0.0 {
                        *o = 0.0;
                    } else if val > 1e-2 * mass {
                        *o = val;
                    } else {
                        *f = true;
                    }
                }
            });
    })?;
    check_stop(stop)?;
    if flagged.iter().any(|&f| f) {
        // The few points in the flagged windows, sorted, then the sliding-window sums
        // (which sum directly where they cancel) at the flagged grid points.
        let mut need = try_vec(nc, false, "n_points")?;
        for (i, _) in flagged.iter().enumerate().filter(|(_, &f)| f) {
            let c0 = i + p - q - 1;
            need[c0..c0 + nj].iter_mut().for_each(|v| *v = true);
        }
        let (mut xs, mut ws) = (Vec::new(), Vec::new());
        for (&xi, &wi) in x.iter().zip(w) {
            if wi > 0.0 {
                if let Some((c, _)) = locate(xi) {
                    if need[c] {
                        xs.push(xi);
                        ws.push(wi);
                    }
                }
            }
        }
        let (xs, ws) = sort_weighted(&xs, &ws, stop)?;
        let idx: Vec<usize> = (0..m).filter(|&i| flagged[i]).collect();
        let gs: Vec<f64> = idx.iter().map(|&i| grid.at(i)).collect();
        let sums = compact(&xs, &ws, kernel, h, &gs, stop)?;
        for (&i, s) in idx.iter().zip(sums) {
            out[i] = s;
        }
    }
    Ok(Some(out))
}

#[derive(Clone, Copy, Default)]
struct Mom {
    a0: f64,
    a1: f64,
    a2: f64,
    c: f64,
    s: f64,
}

impl Mom {
    #[inline]
    fn add(&mut self, wt: f64, v: f64, cosine: bool, sign: f64) {
        let sw = sign * wt;
        self.a0 += sw;
        self.a1 += sw * v;
        self.a2 += sw * v * v;
        if cosine {
            let (sn, cs) = (FRAC_PI_2 * v).sin_cos();
            self.c += sw * cs;
            self.s += sw * sn;
        }
    }
}

fn grid_points(grid: Grid1) -> Result<Vec<f64>> {
    let mut gs = try_vec(grid.m, 0.0f64, "n_points")?;
    for (i, g) in gs.iter_mut().enumerate() {
        *g = grid.at(i);
    }
    Ok(gs)
}

/// Window sums for the compact kernels at ascending points `gs`, over sorted data.
fn compact(
    xs: &[f64],
    ws: &[f64],
    kernel: Kernel,
    h: f64,
    gs: &[f64],
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    let n = xs.len();
    let m = gs.len();
    if m == 0 {
        return Ok(Vec::new());
    }
    let mut out = try_vec(m, 0.0f64, "n_points")?;
    let cosine = kernel == Kernel::Cosine;
    let linear = kernel == Kernel::Linear;
    // Window [lo, hi); for the linear kernel [lo, mid) is x ≤ g and [mid, hi) is x > g.
    let (mut lo, mut mid, mut hi) = (0usize, 0usize, 0usize);
    let mut left = Mom::default(); // whole window, or x ≤ g for the linear kernel
    let mut right = Mom::default(); // x > g (linear kernel only)
    let mut anchor = gs[0];
    let mut max_mass = 0.0f64;
    let inv_h = 1.0 / h;
    let rebuild = |lo: usize, mid: usize, hi: usize, a: f64| {
        let mut l = Mom::default();
        let mut r = Mom::default();
        let split = if linear { mid } else { hi };
        for j in lo..split {
            l.add(ws[j], (xs[j] - a) * inv_h, cosine, 1.0);
        }
        for j in split..hi {
            r.add(ws[j], (xs[j] - a) * inv_h, cosine, 1.0);
        }
        (l, r)
    };
    for (i, o) in out.iter_mut().enumerate() {
        if i % 1024 == 0 {
            check_stop(stop)?;
        }
        let g = gs[i];
        // Enter points with (x − g)/h < 1, leave those with (x − g)/h <= −1.
        while hi < n && (xs[hi] - g) * inv_h < 1.0 {
            let v = (xs[hi] - anchor) * inv_h;
            if linear {
                right.add(ws[hi], v, false, 1.0);
            } else {
                left.add(ws[hi], v, cosine, 1.0);
            }
            hi += 1;
        }
        if linear {
            if mid < lo {
                mid = lo;
            }
            while mid < hi && xs[mid] <= g {
                let v = (xs[mid] - anchor) * inv_h;
                right.add(ws[mid], v, false, -1.0);
                left.add(ws[mid], v, false, 1.0);
                mid += 1;
            }
        }
        while lo < hi && (xs[lo] - g) * inv_h <= -1.0 {
            let v = (xs[lo] - anchor) * inv_h;
            if linear && lo >= mid {
                right.add(ws[lo], v, false, -1.0);
                mid = lo + 1;
            } else {
                left.add(ws[lo], v, cosine, -1.0);
            }
            lo += 1;
        }
        if lo == hi {
            left = Mom::default();
            right = Mom::default();
            anchor = g;
            max_mass = 0.0;
            *o = 0.0;
            continue;
        }
        let mass = left.a0 + right.a0;
        max_mass = max_mass.max(mass);
        let mut b = (g - anchor) * inv_h;
        if b.abs() > 1.0 || mass < 0.125 * max_mass {
            anchor = g;
            b = 0.0;
            let (l, r) = rebuild(lo, mid.max(lo), hi, anchor);
            left = l;
            right = r;
            max_mass = left.a0 + right.a0;
        }
        let mass = left.a0 + right.a0;
        // Moments about g from those about the anchor (v_g = v_a − b).
        let val = match kernel {
            Kernel::Tophat => left.a0,
            Kernel::Epanechnikov => {
                let a2 = left.a2 - 2.0 * b * left.a1 + b * b * left.a0;
                left.a0 - a2
            }
            Kernel::Linear => {
                let l1 = left.a1 - b * left.a0;
                let r1 = right.a1 - b * right.a0;
                (left.a0 + l1) + (right.a0 - r1)
            }
            _ => {
                let (sb, cb) = (FRAC_PI_2 * b).sin_cos();
                left.c * cb + left.s * sb
            }
        };
        *o = if kernel != Kernel::Tophat && (val <= 1e-3 * mass || val.is_nan()) {
            // Cancellation (every point near the support edge): sum directly.
            (lo..hi)
                .map(|j| ws[j] * profile_dist(kernel, (xs[j] - g).abs(), h))
                .sum()
        } else {
            val
        };
    }
    Ok(out)
}

/// The compact profiles at distance `a` = |x − g| (exact when x is near g) and
/// bandwidth h, written with h − a so that values near the support's edge keep their
/// relative accuracy (1 − r² with r = a/h rounded would lose it).
#[inline]
fn profile_dist(kernel: Kernel, a: f64, h: f64) -> f64 {
    if a >= h || a.is_nan() {
        return 0.0;
    }
    match kernel {
        Kernel::Tophat => 1.0,
        Kernel::Epanechnikov => ((h - a) / h) * ((h + a) / h),
        Kernel::Linear => (h - a) / h,
        Kernel::Cosine => (FRAC_PI_2 * ((h - a) / h)).sin(),
        _ => profile(kernel, a / h),
    }
}

/// log of L(g) = Σ_{x ≤ g (or < g if strict)} w e^{−(g−x)/h} at ascending points `gs`.
fn one_sided_log(xs: &[f64], ws: &[f64], gs: &[f64], h: f64, strict: bool) -> Vec<f64> {
    let inv_h = 1.0 / h;
    let mut out = vec![f64::NEG_INFINITY; gs.len()];
    // L(g) = e^{−(g − a)/h} · t · e^{e}, anchor a.
    let (mut t, mut e) = (0.0f64, 0.0f64);
    let mut a = match gs.first() {
        Some(&g) => g,
        None => return out,
    };
    let mut j = 0usize;
    for (i, &g) in gs.iter().enumerate() {
        if (g - a) * inv_h > 30.0 {
            // Re-anchor: fold the decay since a into the exponent.
            e -= (g - a) * inv_h;
            a = g;
        }
        while j < xs.len() && (xs[j] < g || (!strict && xs[j] == g)) {
            let ex = -(a - xs[j]) * inv_h; // log of the term relative to anchor a
            if t == 0.0 || ex - e > 600.0 {
                // Rebase so the new term fits: value = t·e^{e} = (t·e^{e − ex})·e^{ex}.
                t = if t == 0.0 { 0.0 } else { t * (e - ex).exp() };
                e = ex;
            }
            t += ws[j] * (ex - e).exp();
            j += 1;
        }
        if t > 0.0 {
            if t < 1e-200 {
                e += t.ln();
                t = 1.0;
            }
            out[i] = t.ln() + e - (g - a) * inv_h;
        }
    }
    out
}

fn exponential(xs: &[f64], ws: &[f64], h: f64, gs: &[f64], stop: &AtomicBool) -> Result<Exact> {
    let left = one_sided_log(xs, ws, gs, h, false);
    check_stop(stop)?;
    let xr: Vec<f64> = xs.iter().rev().map(|v| -v).collect();
    let wr: Vec<f64> = ws.iter().rev().cloned().collect();
    let gr: Vec<f64> = gs.iter().rev().map(|v| -v).collect();
    let mut right = one_sided_log(&xr, &wr, &gr, h, true);
    right.reverse();
    let log_sums: Vec<f64> = left
        .iter()
        .zip(&right)
        .map(|(&a, &b)| {
            let m = a.max(b);
            if m == f64::NEG_INFINITY {
                m
            } else {
                m + ((a - m).exp() + (b - m).exp()).ln()
            }
        })
        .collect();
    let sums = log_sums.iter().map(|l| l.exp()).collect();
    Ok(Exact { sums, log_sums })
}

/// Cut-off of the Gaussian centre window, in bandwidths.
const GAUSS_R: f64 = 12.0;

fn gaussian(
    x: &[f64],
    w: &[f64],
    h: f64,
    grid: Grid1,
    mask: Option<&[bool]>,
    stop: &AtomicBool,
) -> Result<Exact> {
    let m = grid.m;
    let delta = grid.delta;
    // Unit lattice e: centres every `cs` units, outputs every `os` units.
    let target = h / GAUSS_R;
    let (cs, os, e) = if delta > target {
        let s = (delta / target).ceil() as usize;
        (1usize, s, delta / s as f64)
    } else if delta < 0.5 * target {
        let s = (target / delta).floor() as usize;
        (s, 1usize, delta)
    } else {
        (1, 1, delta)
    };
    let dc = cs as f64 * e; // centre spacing
    let jmax = ((GAUSS_R * h + 0.5 * dc) / e).ceil() as usize + 1; // offsets in units
    let kpad = jmax / cs + 2;
    let out_units = os * (m - 1);
    let nc = out_units / cs + 2 * kpad + 2;
    // Largest |d·u| in bandwidths², then the Taylor order.
    let z = (jmax as f64 * e) * (0.5 * dc) / (h * h);
    let mut p_ord = 0usize;
    let mut term = z; // z^{P+1}/(P+1)!
    while term * (2.0 * z).exp() > 1e-17 && p_ord < 60 {
        p_ord += 1;
        term *= z / (p_ord + 1) as f64;
    }
    let np = p_ord + 1;
    let mom_len = crate::core::error::checked_size(nc, np, "n_points")?;
    // Moments m[k][p] = Σ w e^{−t²/2} t^p / p!, t = (x − y_k)/h.
    let inv_h = 1.0 / h;
    let bin_part = |xc: &[f64], wc: &[f64], mo: &mut [f64]| {
        let mut pw = [0.0f64; 64];
        for (&xi, &wi) in xc.iter().zip(wc) {
            if wi == 0.0 {
                continue;
            }
            let pos = (xi - grid.lo) / dc + kpad as f64;
            if !(pos >= 0.0 && pos < (nc - 1) as f64) {
                continue;
            }
            let k = pos.round() as usize;
            // u = x − (lo + K·dc) in double-double, so the centre's rounding does not
            // enter (dc = cs·e and the table's offsets are exact multiples of e).
            let kk = (cs as f64) * (k as f64 - kpad as f64);
            let t = exact_offset(xi, grid.lo, kk, e) * inv_h;
            let mut c = wi * (-0.5 * t * t).exp();
            pw[0] = c;
            for (p, slot) in pw.iter_mut().enumerate().take(np).skip(1) {
                c *= t / p as f64;
                *slot = c;
            }
            let dst = &mut mo[k * np..(k + 1) * np];
            for (d, s) in dst.iter_mut().zip(&pw[..np]) {
                *d += s;
            }
        }
    };
    let n = x.len();
    let nthreads = threads::num_threads();
    let mut mo = try_vec(mom_len, 0.0f64, "n_points")?;
    const CH: usize = 1 << 15;
    if nthreads == 1 || n < 1 << 17 || mom_len > n / 4 {
        for (xc, wc) in x.chunks(CH).zip(w.chunks(CH)) {
            check_stop(stop)?;
            bin_part(xc, wc, &mut mo);
        }
    } else {
        let per = n.div_ceil(nthreads);
        let parts: Vec<Result<Vec<f64>>> = threads::install(|| {
            (0..nthreads)
                .into_par_iter()
                .map(|p| {
                    let (a, b) = (p * per, ((p + 1) * per).min(n));
                    let mut local = try_vec(mom_len, 0.0f64, "n_points")?;
                    let mut s = a;
                    while s < b {
                        check_stop(stop)?;
                        let t = (s + CH).min(b);
                        bin_part(&x[s..t], &w[s..t], &mut local);
                        s = t;
                    }
                    Ok(local)
                })
                .collect()
        })?;
        for part in parts {
            for (a, b) in mo.iter_mut().zip(part?.iter()) {
                *a += b;
            }
        }
    }
    // Table T[j][p] = (d/h)^p e^{−(d/h)²/2}, d = (j − jmax)·e, and the derivative table
    // D[j][q] = T_{q+1} − q·T_{q−1}, so that S′ = −(1/h)·Σ m_q D_q. When the grid is much
    // finer than the bandwidth the offsets (in units of δ) are too many to tabulate and
    // each grid point computes its ~290 entries itself.
    let nt = 2 * jmax + 1;
    let fill = |j: usize, t: &mut [f64], dt: &mut [f64], tp: &mut [f64]| {
        let d = (j as f64 - jmax as f64) * e * inv_h;
        let mut c = (-0.5 * d * d).exp();
        for v in tp.iter_mut() {
            *v = c;
            c *= d;
        }
        for q in 0..np {
            t[q] = tp[q];
            let below = if q > 0 { q as f64 * tp[q - 1] } else { 0.0 };
            dt[q] = tp[q + 1] - below;
        }
    };
    let tabulate = nt <= (1 << 16).max(4 * m);
    let (mut table, mut dtab) = (Vec::new(), Vec::new());
    if tabulate {
        table = try_vec(nt * np, 0.0f64, "n_points")?;
        dtab = try_vec(nt * np, 0.0f64, "n_points")?;
        let mut tp = vec![0.0f64; np + 1];
        for j in 0..nt {
            let (a, b) = (j * np, (j + 1) * np);
            fill(j, &mut table[a..b], &mut dtab[a..b], &mut tp);
        }
    }
    // Output i sits at unit os·i; centre k at unit cs·(k − kpad). The grid point itself
    // is the rounded lo + i·δ, γ_i away from the lattice point lo + os·i·e; the first-order
    // correction γ_i·S′ (|γ_i| ~ ε|g|) keeps the sum exact at the rounded point.
    let eval = |i: usize| -> f64 {
        let gi = grid.at(i);
        let gamma = exact_offset(gi, grid.lo, (os * i) as f64, e);
        let ui = (os * i) as i64;
        let kmin = (ui - jmax as i64).div_euclid(cs as i64) + kpad as i64;
        let kmax = (ui + jmax as i64).div_euclid(cs as i64) + kpad as i64;
        let mut acc = 0.0;
        let mut dacc = 0.0;
        let (mut lt, mut ld, mut ltp) = (vec![0.0; np], vec![0.0; np], vec![0.0; np + 1]);
        for k in kmin.max(0)..=kmax.min(nc as i64 - 1) {
            let j = ui - cs as i64 * (k - kpad as i64) + jmax as i64;
            if j < 0 || j >= nt as i64 {
                continue;
            }
            let mk = &mo[k as usize * np..(k as usize + 1) * np];
            let (tj, dj): (&[f64], &[f64]) = if tabulate {
                let (a, b) = (j as usize * np, (j as usize + 1) * np);
                (&table[a..b], &dtab[a..b])
            } else {
                fill(j as usize, &mut lt, &mut ld, &mut ltp);
                (&lt, &ld)
            };
            let (mut s, mut sd) = (0.0, 0.0);
            for ((a, b), c) in mk.iter().zip(tj).zip(dj) {
                s += a * b;
                sd += a * c;
            }
            acc += s;
            dacc += sd;
        }
        acc - gamma * inv_h * dacc
    };
    let mut sums = try_vec(m, f64::NAN, "n_points")?;
    threads::install(|| {
        sums.par_chunks_mut(256)
            .enumerate()
            .try_for_each(|(c, chunk)| -> Result<()> {
                check_stop(stop)?;
                for (q, s) in chunk.iter_mut().enumerate() {
                    let i = c * 256 + q;
                    if mask.is_none_or(|mk| mk[i]) {
                        *s = eval(i);
                    }
                }
                Ok(())
            })
    })??;
    let mut log_sums: Vec<f64> = sums.iter().map(|s| s.ln()).collect();
    // Window bound: centres beyond GAUSS_R bandwidths hold weight ≤ Σw = 1 whose terms are
    // ≤ e^{−R²/2}. Where that is not below 1e-15 of the sum, redo in log space.
    let wsum: f64 = w.iter().sum();
    let dropped = wsum * (-0.5 * GAUSS_R * GAUSS_R).exp();
    let tails: Vec<usize> = (0..m)
        .filter(|&i| mask.is_none_or(|mk| mk[i]) && (sums[i] * 1e-15 < dropped || sums[i].is_nan()))
        .collect();
    redo_tails(
        x,
        w,
        h,
        &tails,
        |i| grid.at(i),
        &mut sums,
        &mut log_sums,
        stop,
    )?;
    Ok(Exact { sums, log_sums })
}

/// Exact unnormalised sums at arbitrary 1-D points `q` (any order, finite): the queries
/// are sorted, swept like a grid, and the results scattered back to the caller's order.
/// Same kernels and accuracy as [`exact_1d`]. Returns `Ok(None)` for a Gaussian whose
/// centre lattice over the overlap of data and queries would exceed `max_centres`
/// (data spread over very many bandwidths): the caller then sums directly.
///
/// Allocates the sorted data (2n values), the sorted queries with their positions
/// (2m values) and the outputs; the Gaussian path also its lattice moments (≤ 14 per
/// centre, ≤ `max_centres` centres).
pub fn exact_points_1d(
    x: &[f64],
    w: &[f64],
    kernel: Kernel,
    h: f64,
    q: &[f64],
    max_centres: usize,
    stop: &AtomicBool,
) -> Result<Option<Exact>> {
    check_data(x, w, h)?;
    if q.iter().any(|v| !v.is_finite()) {
        return Err(crate::core::error::invalid!("points must be finite"));
    }
    let m = q.len();
    let mut order: Vec<usize> = Vec::new();
    order.try_reserve_exact(m).map_err(|_| {
        crate::core::error::Error::OutOfMemory("sorting the points does not fit".into())
    })?;
    order.extend(0..m);
    order.sort_unstable_by(|&a, &b| q[a].total_cmp(&q[b]));
    let gs: Vec<f64> = order.iter().map(|&i| q[i]).collect();
    check_stop(stop)?;
    let sorted = match kernel {
        Kernel::Gaussian => match gaussian_points(x, w, h, &gs, max_centres, stop)? {
            Some(e) => e,
            None => return Ok(None),
        },
        Kernel::Exponential => {
            let (xs, ws) = sort_weighted(x, w, stop)?;
            exponential(&xs, &ws, h, &gs, stop)?
        }
        _ => {
            let (xs, ws) = sort_weighted(x, w, stop)?;
            let sums = compact(&xs, &ws, kernel, h, &gs, stop)?;
            let log_sums = sums.iter().map(|s| s.ln()).collect();
            Exact { sums, log_sums }
        }
    };
    let mut sums = try_vec(m, 0.0f64, "points")?;
    let mut log_sums = try_vec(m, 0.0f64, "points")?;
    for (r, &i) in order.iter().enumerate() {
        sums[i] = sorted.sums[r];
        log_sums[i] = sorted.log_sums[r];
    }
    Ok(Some(Exact { sums, log_sums }))
}

/// The Gaussian at ascending arbitrary points: the data's Taylor moments on a lattice of
/// centres y_k = base + k·δc (δc = h/12) covering the overlap of the data and the
/// queries widened by 12 bandwidths, then per query the centres within 12 bandwidths,
/// with the offsets q − y_k in double-double and the factors e^{−d²/2}·d^p computed per
/// centre (d is not on a lattice). Far-tail queries are redone in log space as on grids.
fn gaussian_points(
    x: &[f64],
    w: &[f64],
    h: f64,
    gs: &[f64],
    max_centres: usize,
    stop: &AtomicBool,
) -> Result<Option<Exact>> {
    let mut sums = match gaussian_lattice(x, w, h, gs, max_centres, stop)? {
        Some(s) => s,
        None => return Ok(None),
    };
    let m = gs.len();
    let mut log_sums: Vec<f64> = sums.iter().map(|s| s.ln()).collect();
    let dropped = gauss_dropped(w);
    let tails: Vec<usize> = (0..m)
        .filter(|&i| sums[i] * 1e-15 < dropped || sums[i].is_nan())
        .collect();
    redo_tails(x, w, h, &tails, |i| gs[i], &mut sums, &mut log_sums, stop)?;
    Ok(Some(Exact { sums, log_sums }))
}

/// Bound on what the centre lattice drops at one point: centres beyond 12 bandwidths
/// hold data at least 12 − 1/24 bandwidths away, so the dropped terms total at most
/// Σw·e^{−(12 − 0.1)²/2}.
fn gauss_dropped(w: &[f64]) -> f64 {
    let wsum: f64 = w.iter().sum();
    wsum * (-0.5 * (GAUSS_R - 0.1) * (GAUSS_R - 0.1)).exp()
}

/// The lattice part of [`gaussian_points`]: the sums at ascending points `gs` from the
/// centres within 12 bandwidths (0 for points farther from every data point), or None
/// when the lattice would need more than `max_centres` centres.
fn gaussian_lattice(
    x: &[f64],
    w: &[f64],
    h: f64,
    gs: &[f64],
    max_centres: usize,
    stop: &AtomicBool,
) -> Result<Option<Vec<f64>>> {
    let m = gs.len();
    if m == 0 {
        return Ok(Some(Vec::new()));
    }
    let inv_h = 1.0 / h;
    let dc = h / GAUSS_R;
    let reach = GAUSS_R * h + 2.0 * dc;
    let (xmin, xmax) = x
        .iter()
        .zip(w)
        .filter(|(_, &wi)| wi > 0.0)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (&v, _)| {
            (a.min(v), b.max(v))
        });
    let mut sums = try_vec(m, 0.0f64, "points")?;
    let lo = (gs[0] - reach).max(xmin - reach);
    let hi = (gs[m - 1] + reach).min(xmax + reach);
    // Order of the expansion: |d| ≤ 12 + 1/12 bandwidths, |u| ≤ 1/24 (+ rounding).
    let z = (GAUSS_R + 2.0 / GAUSS_R) * (0.5 / GAUSS_R + 1e-9);
    let mut p_ord = 0usize;
    let mut term = z;
    while term * (2.0 * z).exp() > 1e-17 && p_ord < 60 {
        p_ord += 1;
        term *= z / (p_ord + 1) as f64;
    }
    let np = p_ord + 1;
    if lo < hi {
        let span = (hi - lo) / dc;
        if !(span.is_finite() && span + 2.0 <= max_centres as f64) {
            return Ok(None);
        }
        let nc = span.ceil() as usize + 2;
        let mut mo = try_vec(
            crate::core::error::checked_size(nc, np, "points")?,
            0.0f64,
            "points",
        )?;
        let mut pw = [0.0f64; 64];
        for (c, (xc, wc)) in x.chunks(1 << 15).zip(w.chunks(1 << 15)).enumerate() {
            if c > 0 {
                check_stop(stop)?;
            }
            for (&xi, &wi) in xc.iter().zip(wc) {
                if wi == 0.0 {
                    continue;
                }
                let pos = (xi - lo) / dc;
                if !(pos > -0.5 && pos < nc as f64 - 0.5) {
                    continue;
                }
                let k = pos.round() as usize;
                let t = exact_offset(xi, lo, k as f64, dc) * inv_h;
                let mut cc = wi * (-0.5 * t * t).exp();
                pw[0] = cc;
                for (p, slot) in pw.iter_mut().enumerate().take(np).skip(1) {
                    cc *= t / p as f64;
                    *slot = cc;
                }
                for (d, s) in mo[k * np..(k + 1) * np].iter_mut().zip(&pw[..np]) {
                    *d += s;
                }
            }
        }
        let eval = |g: f64| -> f64 {
            let a = ((g - lo - GAUSS_R * h) / dc).ceil().max(0.0);
            let b = ((g - lo + GAUSS_R * h) / dc).floor().min(nc as f64 - 1.0);
            if a > b {
                return 0.0;
            }
            let (a, b) = (a as usize, b as usize);
            let mut acc = 0.0;
            for k in a..=b {
                let d = exact_offset(g, lo, k as f64, dc) * inv_h;
                let mk = &mo[k * np..(k + 1) * np];
                // Σ_p m_p d^p, by Horner, times e^{−d²/2}.
                let mut s = 0.0;
                for &v in mk.iter().rev() {
                    s = s * d + v;
                }
                acc += s * (-0.5 * d * d).exp();
            }
            acc
        };
        threads::install(|| {
            sums.par_chunks_mut(256)
                .enumerate()
                .try_for_each(|(c, chunk)| -> Result<()> {
                    check_stop(stop)?;
                    for (r, s) in chunk.iter_mut().enumerate() {
                        *s = eval(gs[c * 256 + r]);
                    }
                    Ok(())
                })
        })??;
    }
    Ok(Some(sums))
}

/// Exact unnormalised folded sums at arbitrary 1-D points: for each query q_r the sum
/// over the maps (s_g, t_g) of S(s_g·q_r + t_g), S the kernel sum of [`exact_points_1d`]
/// (a bounded KDE's reflected or wrapped images; the identity must be one of the maps
/// for the accuracy statement below). All images go through one sorted pass: the images
/// within the kernel's reach of the data (12 bandwidths for the Gaussian, one for the
/// compact kernels, all of them for the exponential) are sorted once and swept (compact,
/// exponential) or evaluated on one centre lattice (Gaussian), and each query gets the
/// sum of its images. A Gaussian query whose lattice total is not 10¹⁵ times the terms
/// the lattice can drop (k·Σw·e^{−71.4} for k maps, an image outside the reach counting
/// as dropped) is a far-tail query: every one of its images is recomputed in log space
/// (see `redo_tails`) and the logs combined, so the result is the full image sum to
/// about 1e-12 relative, tails included. Returns `Ok(None)` when the Gaussian lattice
/// would exceed `max_centres` (the caller then sums directly).
///
/// Allocates the images within reach with their owners (16 bytes each, at most m·k),
/// the sorted data for the compact and exponential kernels (2n values), O(m) outputs,
/// and the Gaussian lattice (≤ 14 moments per centre).
#[allow(clippy::too_many_arguments)]
pub fn exact_points_1d_folded(
    x: &[f64],
    w: &[f64],
    kernel: Kernel,
    h: f64,
    q: &[f64],
    maps: &[(f64, f64)],
    max_centres: usize,
    stop: &AtomicBool,
) -> Result<Option<Exact>> {
    check_data(x, w, h)?;
    if q.iter().any(|v| !v.is_finite()) {
        return Err(crate::core::error::invalid!("points must be finite"));
    }
    if maps.is_empty() || maps.iter().any(|(a, b)| !(a.is_finite() && b.is_finite())) {
        return Err(crate::core::error::invalid!(
            "the image maps must be a non-empty list of finite (scale, shift) pairs"
        ));
    }
    let m = q.len();
    let k = maps.len();
    let (xmin, xmax) = x
        .iter()
        .zip(w)
        .filter(|(_, &wi)| wi > 0.0)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (&v, _)| {
            (a.min(v), b.max(v))
        });
    let reach = match kernel {
        Kernel::Gaussian => GAUSS_R * h + 2.0 * h / GAUSS_R,
        Kernel::Exponential => f64::INFINITY,
        _ => h,
    };
    let total = crate::core::error::checked_size(m, k, "points")?;
    let mut imgs: Vec<(f64, usize)> = Vec::new();
    imgs.try_reserve_exact(total).map_err(|_| {
        crate::core::error::Error::OutOfMemory("the points' images do not fit".into())
    })?;
    for (r, &qr) in q.iter().enumerate() {
        if r % 4096 == 0 {
            check_stop(stop)?;
        }
        for &(sg, tg) in maps {
            let y = sg * qr + tg;
            // An image beyond the reach adds 0 (compact kernels) or at most the
            // lattice's dropped terms (Gaussian; such queries are tails, see below).
            if y.is_finite() && y >= xmin - reach && y <= xmax + reach {
                imgs.push((y, r));
            }
        }
    }
    imgs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let gs: Vec<f64> = imgs.iter().map(|p| p.0).collect();
    check_stop(stop)?;
    let mut sums = try_vec(m, 0.0f64, "points")?;
    let mut log_sums = try_vec(m, f64::NEG_INFINITY, "points")?;
    match kernel {
        Kernel::Gaussian => {
            let part = match gaussian_lattice(x, w, h, &gs, max_centres, stop)? {
                Some(p) => p,
                None => return Ok(None),
            };
            for (&(_, r), v) in imgs.iter().zip(&part) {
                sums[r] += v;
            }
            let dropped = k as f64 * gauss_dropped(w);
            let mut tails = Vec::new();
            for r in 0..m {
                if sums[r] * 1e-15 < dropped || sums[r].is_nan() {
                    tails.push(r);
                } else {
                    log_sums[r] = sums[r].ln();
                }
            }
            if !tails.is_empty() {
                // Every image of every tail query, in log space.
                let nt = crate::core::error::checked_size(tails.len(), k, "points")?;
                let mut pts = try_vec(nt, 0.0f64, "points")?;
                for (c, &r) in tails.iter().enumerate() {
                    for (g, &(sg, tg)) in maps.iter().enumerate() {
                        pts[c * k + g] = sg * q[r] + tg;
                    }
                }
                let idx: Vec<usize> = (0..nt).filter(|&i| pts[i].is_finite()).collect();
                let mut s2 = try_vec(nt, 0.0f64, "points")?;
                let mut l2 = try_vec(nt, f64::NEG_INFINITY, "points")?;
                redo_tails(x, w, h, &idx, |i| pts[i], &mut s2, &mut l2, stop)?;
                for (c, &r) in tails.iter().enumerate() {
                    let l = log_sum_exp(&l2[c * k..(c + 1) * k]);
                    log_sums[r] = l;
                    sums[r] = l.exp();
                }
            }
        }
        Kernel::Exponential => {
            let (xs, ws) = sort_weighted(x, w, stop)?;
            let e = exponential(&xs, &ws, h, &gs, stop)?;
            // Per query, log Σ over its images (max-shifted).
            let mut top = try_vec(m, f64::NEG_INFINITY, "points")?;
            for (&(_, r), &l) in imgs.iter().zip(&e.log_sums) {
                top[r] = top[r].max(l);
            }
            for (&(_, r), &l) in imgs.iter().zip(&e.log_sums) {
                if top[r] > f64::NEG_INFINITY {
                    sums[r] += (l - top[r]).exp();
                }
            }
            for r in 0..m {
                log_sums[r] = if top[r] > f64::NEG_INFINITY {
                    sums[r].ln() + top[r]
                } else {
                    f64::NEG_INFINITY
                };
                sums[r] = log_sums[r].exp();
            }
        }
        _ => {
            let (xs, ws) = sort_weighted(x, w, stop)?;
            let part = compact(&xs, &ws, kernel, h, &gs, stop)?;
            for (&(_, r), v) in imgs.iter().zip(&part) {
                sums[r] += v;
            }
            for r in 0..m {
                log_sums[r] = sums[r].ln();
            }
        }
    }
    Ok(Some(Exact { sums, log_sums }))
}

/// log Σ e^{v} over `v` (−inf entries allowed), max-shifted.
fn log_sum_exp(v: &[f64]) -> f64 {
    let top = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if top == f64::NEG_INFINITY || top.is_nan() {
        return top;
    }
    top + v.iter().map(|a| (a - top).exp()).sum::<f64>().ln()
}

/// Recomputes the Gaussian sums at the points `at(i)`, i in `tails` (where the lattice's
/// dropped terms are not negligible), in log space over the sorted data. Each point keeps
/// the data within r_c of it (see [`gauss_window`]). A window of few points is summed
/// directly; a wider one (a query a few bandwidths outside dense data holds ~10⁵ points
/// in its window at n = 10⁶) is summed from Taylor moments on a finer lattice of cells
/// (width h/(12·2^ℓ), ℓ chosen so that |d·s| ≤ 0.51 as on the main lattice, d the
/// query-to-centre and s the point-to-centre distance in bandwidths), every cell's term
/// positive and scaled by e^{r0²/2}, so far queries cost O(cells) instead of O(window).
/// Allocates the sorted data (2n values) when there is a tail point, and per level the
/// moments of the cells spanning each group of nearby wide windows (≤ 14 per cell, at
/// most max(2^22, 16·n) values; beyond that the group's windows are summed directly).
#[allow(clippy::too_many_arguments)]
fn redo_tails(
    x: &[f64],
    w: &[f64],
    h: f64,
    tails: &[usize],
    at: impl Fn(usize) -> f64,
    sums: &mut [f64],
    log_sums: &mut [f64],
    stop: &AtomicBool,
) -> Result<()> {
    if tails.is_empty() {
        return Ok(());
    }
    let (xs, ws) = sort_weighted(x, w, stop)?;
    let wmin = ws.iter().cloned().fold(f64::INFINITY, f64::min);
    let wtot: f64 = ws.iter().sum();
    let extra = 2.0 * h * h * ((wtot / wmin).ln() + 37.0);
    // Taylor order for |d·s| ≤ Z (as on the main lattice).
    const Z: f64 = 0.51;
    let mut p_ord = 0usize;
    let mut term = Z;
    while term * (2.0 * Z).exp() > 1e-17 && p_ord < 60 {
        p_ord += 1;
        term *= Z / (p_ord + 1) as f64;
    }
    let np = p_ord + 1;
    const SCAN_MAX: usize = 1024;
    const MAX_LEVEL: usize = 48;
    let mut by_level: Vec<Vec<(usize, Window)>> = vec![Vec::new(); MAX_LEVEL + 1];
    for (c, &i) in tails.iter().enumerate() {
        if c % 64 == 0 {
            check_stop(stop)?;
        }
        let g = at(i);
        let win = gauss_window(&xs, g, extra);
        let mut level = None;
        if win.b - win.a > SCAN_MAX && win.rc.is_finite() {
            let rch = win.rc / h;
            let mut cw = 1.0 / GAUSS_R; // cell width in bandwidths
            for l in 0..=MAX_LEVEL {
                if (rch + cw) * 0.5 * cw * (1.0 + 1e-9) <= Z {
                    level = Some(l);
                    break;
                }
                cw *= 0.5;
            }
        }
        match level {
            Some(l) => by_level[l].push((i, win)),
            None => {
                let l = gauss_window_sum(&xs, &ws, g, h, &win);
                log_sums[i] = l;
                sums[i] = l.exp();
            }
        }
    }
    let inv_h = 1.0 / h;
    let cap = (1usize << 22).max(16 * xs.len());
    // Per level, the windows (in query order) are grouped while the gap between them is
    // under 4096 cells, and each group gets its own run of cells.
    let groups = by_level.iter().enumerate().flat_map(|(l, all)| {
        let c = h / GAUSS_R / (1u64 << l) as f64;
        let mut out = Vec::new();
        let mut start = 0;
        while start < all.len() {
            let (mut ia, mut ib) = (all[start].1.a, all[start].1.b);
            let mut end = start + 1;
            while end < all.len() {
                let v = &all[end].1;
                let gap = if v.a >= ib {
                    (xs[v.a] - xs[ib - 1]) / c
                } else if v.b <= ia {
                    (xs[ia] - xs[v.b - 1]) / c
                } else {
                    0.0
                };
                if gap.is_nan() || gap > 4096.0 {
                    break;
                }
                (ia, ib) = (ia.min(v.a), ib.max(v.b));
                end += 1;
            }
            out.push((c, ia, ib, &all[start..end]));
            start = end;
        }
        out
    });
    for (c, ia, ib, items) in groups {
        check_stop(stop)?;
        let lo = xs[ia];
        let span = (xs[ib - 1] - lo) / c;
        let nc = span.round() as usize + 1;
        if !(span.is_finite() && (nc as f64) * (np as f64) <= cap as f64) {
            for (c2, (i, win)) in items.iter().enumerate() {
                if c2 % 64 == 0 {
                    check_stop(stop)?;
                }
                let lg = gauss_window_sum(&xs, &ws, at(*i), h, win);
                log_sums[*i] = lg;
                sums[*i] = lg.exp();
            }
            continue;
        }
        let cell = |v: f64| ((v - lo) / c).round().max(0.0).min((nc - 1) as f64) as usize;
        let mut mo = try_vec(nc * np, 0.0f64, "points")?;
        let mut pw = [0.0f64; 64];
        for j in ia..ib {
            if (j - ia) % (1 << 15) == 0 {
                check_stop(stop)?;
            }
            let k = cell(xs[j]);
            let s = exact_offset(xs[j], lo, k as f64, c) * inv_h;
            let mut cc = ws[j] * (-0.5 * s * s).exp();
            pw[0] = cc;
            for (p, slot) in pw.iter_mut().enumerate().take(np).skip(1) {
                cc *= s / p as f64;
                *slot = cc;
            }
            for (d, v) in mo[k * np..(k + 1) * np].iter_mut().zip(&pw[..np]) {
                *d += v;
            }
        }
        for (c2, (i, win)) in items.iter().enumerate() {
            if c2 % 64 == 0 {
                check_stop(stop)?;
            }
            let g = at(*i);
            let r0 = win.r0 * inv_h;
            let mut acc = 0.0;
            // The data below g (indices a..p) and above (p..b), each a run of cells (a
            // cell holding both sides is counted once).
            let mut next = 0usize;
            for (ja, jb) in [(win.a, win.p), (win.p, win.b)] {
                if ja >= jb {
                    continue;
                }
                let (k0, k1) = (cell(xs[ja]).max(next), cell(xs[jb - 1]));
                next = k1 + 1;
                for k in k0..=k1 {
                    let mk = &mo[k * np..(k + 1) * np];
                    let d = exact_offset(g, lo, k as f64, c) * inv_h;
                    let mut s = 0.0;
                    for &v in mk.iter().rev() {
                        s = s * d + v;
                    }
                    let da = d.abs();
                    acc += s * (-0.5 * (da - r0) * (da + r0)).exp();
                }
            }
            let lg = acc.ln() - 0.5 * r0 * r0;
            log_sums[*i] = lg;
            sums[*i] = lg.exp();
        }
    }
    Ok(())
}

/// (x − lo) − k·e to about one rounding of the result (the two subtractions and the
/// product in double-double), for x within a few e of lo + k·e.
#[inline]
fn exact_offset(x: f64, lo: f64, k: f64, e: f64) -> f64 {
    // two_sum(x, −lo)
    let s = x - lo;
    let bb = s - x;
    let se = (x - (s - bb)) + (-lo - bb);
    let (p, pe) = two_prod(k, e);
    (s - p) + (se - pe)
}

/// Dekker's exact product a·b = p + e (no fused multiply-add: without a target feature
/// `f64::mul_add` is a slow software routine).
#[inline]
fn two_prod(a: f64, b: f64) -> (f64, f64) {
    const SPLIT: f64 = 134_217_729.0; // 2^27 + 1
    let p = a * b;
    let ca = SPLIT * a;
    let ah = ca - (ca - a);
    let al = a - ah;
    let cb = SPLIT * b;
    let bh = cb - (cb - b);
    let bl = b - bh;
    (p, ((ah * bh - p) + ah * bl + al * bh) + al * bl)
}

/// The data window of a query g: the sorted data within r_c of g, with
/// r_c² = r0² + `extra` (r0 the nearest distance): every dropped term is below
/// e^{−extra/2h²}·(Σw / w_min) of the nearest term.
#[derive(Clone, Copy, Debug)]
struct Window {
    /// Nearest distance r0 and the cut-off r_c.
    r0: f64,
    rc: f64,
    /// xs[a..p] lie below g, xs[p..b] at or above it.
    a: usize,
    p: usize,
    b: usize,
}

fn gauss_window(xs: &[f64], g: f64, extra: f64) -> Window {
    let n = xs.len();
    let p = xs.partition_point(|&v| v < g);
    let mut r0 = f64::INFINITY;
    if p < n {
        r0 = r0.min(xs[p] - g);
    }
    if p > 0 {
        r0 = r0.min(g - xs[p - 1]);
    }
    let rc = (r0 * r0 + extra).sqrt();
    let a = xs.partition_point(|&v| v < g - rc);
    let b = xs.partition_point(|&v| v <= g + rc);
    Window { r0, rc, a, p, b }
}

/// log Σ w e^{−(g−x)²/2h²} over the window, term by term.
fn gauss_window_sum(xs: &[f64], ws: &[f64], g: f64, h: f64, win: &Window) -> f64 {
    let r0 = win.r0;
    let inv = 0.5 / (h * h);
    let mut s = 0.0;
    for j in win.a..win.b {
        let d = (g - xs[j]).abs();
        s += ws[j] * (-(d - r0) * (d + r0) * inv).exp();
    }
    s.ln() - r0 * r0 * inv
}

#[cfg(test)]
mod tests {
    use super::super::tests::direct;
    use super::*;
    use crate::core::testing::Lcg;

    fn data(n: usize) -> (Vec<f64>, Vec<f64>) {
        let mut g = Lcg::new(12345);
        let x: Vec<f64> = (0..n).map(|_| (g.unit_sum(3) - 1.5) * 3.0).collect();
        let mut w: Vec<f64> = (0..n).map(|_| g.unit()).collect();
        let t: f64 = w.iter().sum();
        w.iter_mut().for_each(|v| *v /= t);
        (x, w)
    }

    #[test]
    fn every_kernel_matches_the_direct_sum() {
        let (x, w) = data(2000);
        let stop = AtomicBool::new(false);
        for kernel in [
            Kernel::Gaussian,
            Kernel::Tophat,
            Kernel::Epanechnikov,
            Kernel::Linear,
            Kernel::Cosine,
            Kernel::Exponential,
        ] {
            for (h, m) in [(0.4, 300usize), (0.02, 700), (3.0, 50)] {
                let grid = Grid1::new(-7.0, 14.0 / (m - 1) as f64, m).unwrap();
                let ex = exact_1d(&x, &w, kernel, h, grid, None, &stop).unwrap();
                for i in 0..m {
                    let d = direct(&x, &w, kernel, h, grid.at(i));
                    let got = ex.sums[i];
                    assert!(
                        (got - d).abs() <= 1e-12 * d.abs() + 1e-300,
                        "{kernel:?} h={h} i={i}: {got} vs {d}"
                    );
                }
            }
        }
    }

    #[test]
    fn gaussian_log_is_exact_in_far_tails() {
        let x = [0.0, 1.0];
        let w = [0.5, 0.5];
        let stop = AtomicBool::new(false);
        let grid = Grid1::new(-60.0, 1.0, 121).unwrap();
        let ex = exact_1d(&x, &w, Kernel::Gaussian, 1.0, grid, None, &stop).unwrap();
        for i in 0..121 {
            let g = grid.at(i);
            let a = -0.5 * g * g;
            let b = -0.5 * (g - 1.0) * (g - 1.0);
            let m = a.max(b);
            let e = m + (0.5 * (a - m).exp() + 0.5 * (b - m).exp()).ln();
            assert!((ex.log_sums[i] - e).abs() < 1e-12 * e.abs().max(1.0), "{g}");
        }
    }

    #[test]
    fn gaussian_far_tails_over_dense_data_match_log_sum_exp() {
        // Windows of thousands of points (queries 6–80 bandwidths out, and in a gap):
        // summed from the finer lattice's moments; oracle: a term-by-term log-sum-exp.
        let mut g = Lcg::new(7);
        let n = 40_000;
        let x: Vec<f64> = (0..n)
            .map(|i| g.unit() + if i % 3 == 0 { 1.7 } else { 0.0 })
            .collect();
        let w: Vec<f64> = (0..n).map(|_| 0.2 + g.unit()).collect();
        let h = 0.01;
        let mut q: Vec<f64> = [6.0, 7.0, 9.0, 13.0, 20.0, 35.0, 80.0]
            .iter()
            .flat_map(|&d| [-d * h, 2.7 + d * h])
            .collect();
        q.extend((0..9).map(|i| 1.35 + (i as f64 - 4.0) * 4.0 * h));
        let stop = AtomicBool::new(false);
        let ex = exact_points_1d(&x, &w, Kernel::Gaussian, h, &q, 1 << 24, &stop)
            .unwrap()
            .unwrap();
        for (i, &gq) in q.iter().enumerate() {
            let lt: Vec<f64> = x
                .iter()
                .zip(&w)
                .map(|(&xi, &wi)| wi.ln() - 0.5 * ((gq - xi) / h).powi(2))
                .collect();
            let mx = lt.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e = mx + lt.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
            let got = ex.log_sums[i];
            assert!(
                (got - e).abs() <= 1e-12 * e.abs().max(1.0),
                "{gq}: {got} vs {e}"
            );
        }
    }

    #[test]
    fn folded_points_match_the_direct_image_sum() {
        // Half-line and interval reflections and a period, with queries deep in the tails
        // (far from the data but inside the bounds): Σ over the maps of the direct sum,
        // in log space for the Gaussian's far tails.
        let mut g = Lcg::new(5);
        let n = 4000;
        let x: Vec<f64> = (0..n).map(|_| 0.3 * g.unit() * g.unit()).collect();
        let w: Vec<f64> = (0..n).map(|_| 0.1 + g.unit()).collect();
        let mut q: Vec<f64> = (0..600).map(|_| g.unit()).collect();
        q.extend([0.0, 1.0, 0.999, 0.5, 0.95]);
        let stop = AtomicBool::new(false);
        let interval: Vec<(f64, f64)> = (-3..=3)
            .flat_map(|k| [(1.0, 2.0 * k as f64), (-1.0, 2.0 * k as f64)])
            .collect();
        let period: Vec<(f64, f64)> = (-3..=3).map(|k| (1.0, k as f64)).collect();
        let half = vec![(1.0, 0.0), (-1.0, 0.0)];
        for kernel in [
            Kernel::Gaussian,
            Kernel::Epanechnikov,
            Kernel::Cosine,
            Kernel::Linear,
            Kernel::Tophat,
            Kernel::Exponential,
        ] {
            for maps in [&half, &interval, &period] {
                for h in [0.01, 0.2] {
                    let ex = exact_points_1d_folded(&x, &w, kernel, h, &q, maps, 1 << 24, &stop)
                        .unwrap()
                        .unwrap();
                    for (i, &gq) in q.iter().enumerate() {
                        // log of the direct image sum, term by term (max-shifted).
                        let lt: Vec<f64> = maps
                            .iter()
                            .flat_map(|&(s, t)| {
                                let y = s * gq + t;
                                x.iter().zip(&w).map(move |(&xi, &wi)| {
                                    let r = (y - xi).abs() / h;
                                    wi.ln()
                                        + match kernel {
                                            Kernel::Gaussian => -0.5 * r * r,
                                            Kernel::Exponential => -r,
                                            _ => profile_dist(kernel, (y - xi).abs(), h).ln(),
                                        }
                                })
                            })
                            .collect();
                        let e = log_sum_exp(&lt);
                        let got = ex.log_sums[i];
                        if e == f64::NEG_INFINITY {
                            assert_eq!(got, e, "{kernel:?} h={h} q={gq}");
                        } else {
                            assert!(
                                (got - e).abs() <= 1e-11 * e.abs().max(1.0),
                                "{kernel:?} h={h} q={gq}: {got} vs {e}"
                            );
                        }
                    }
                }
            }
        }
        assert!(exact_points_1d_folded(&x, &w, Kernel::Gaussian, 0.2, &q, &[], 99, &stop).is_err());
    }

    #[test]
    fn arbitrary_points_match_the_direct_sum() {
        let (x, w) = data(3000);
        let stop = AtomicBool::new(false);
        let mut g = crate::core::testing::Lcg::new(99);
        let q: Vec<f64> = (0..800)
            .map(|i| {
                let u = g.unit();
                if i % 50 == 0 {
                    (u - 0.5) * 200.0
                } else {
                    (u - 0.5) * 16.0
                }
            })
            .collect();
        for kernel in [
            Kernel::Gaussian,
            Kernel::Tophat,
            Kernel::Epanechnikov,
            Kernel::Linear,
            Kernel::Cosine,
            Kernel::Exponential,
        ] {
            for h in [0.4, 0.03, 3.0] {
                let ex = exact_points_1d(&x, &w, kernel, h, &q, 1 << 24, &stop)
                    .unwrap()
                    .unwrap();
                for (i, &g) in q.iter().enumerate() {
                    let d = direct(&x, &w, kernel, h, g);
                    let got = ex.sums[i];
                    assert!(
                        (got - d).abs() <= 1e-12 * d.abs() + 1e-300,
                        "{kernel:?} h={h} q={g}: {got} vs {d}"
                    );
                }
            }
        }
        assert!(
            exact_points_1d(&x, &w, Kernel::Gaussian, 0.4, &q, 10, &stop)
                .unwrap()
                .is_none()
        );
    }
}
