//! Improved Sheather–Jones bandwidth (Botev, Grotowski and Kroese, Ann. Statist. 2010).
//!
//! The data are linearly binned onto N = 2^14 cells of [min − r/10, max + r/10]
//! (r the data range), mapped to the unit interval, and the cosine coefficients of the
//! binned density come from one DCT-II. The squared bandwidth t (in unit-interval units)
//! solves t = ξγ^[7](t), the plug-in fixed point of the paper's equation (29) with ℓ = 7
//! stages; the bandwidth in data units is √t times the interval's length, so scaling the
//! data by a scales the bandwidth by a (the interval scales with the data).
//!
//! Far outliers. The sums Σ_k k^{2s} a_k² e^{−k²π²τ} are pair sums of the binned data,
//! Σ_ab p_a p_b (−1)^s φ^{(2s)}_{2τ}(x_a − x_b) (with the interval's mirror images), so
//! two points farther apart than the widest stage kernel's reach add nothing but their
//! self-pairs, which count wherever the points are. One far point, though, stretches the
//! interval until the bulk sits in a few cells. After the usual solve, if the bins show a
//! gap wider than the reach ρ = 9·√(2τ_max) of the widest stage kernel at the root (or the
//! cells are too coarse to rule one out), the data are sorted, every gap wider than γ = ρ
//! is shortened to exactly γ (the heaviest piece stays put, the others are placed from it
//! outwards), and the solve is repeated on the packed data, with γ updated to the new
//! reach (capped by the heaviest piece's extent) until it settles (at most [`MAX_PACK`]
//! rounds). Packing keeps every pair difference that a stage kernel sees,
//! at the cost of the data's actual extent. Data without such a gap take the usual path
//! unchanged, bit for bit.
//!
//! Rounded data. Data recorded to a resolution Δ (0.01, whole years, half points) sit
//! on a lattice. Once the 2^14 cells resolve it, the binned density is a comb of spikes,
//! and t − ξγ(t) changes sign at the spikes' scale: the first root of the scan is a
//! spurious bandwidth many orders of magnitude below the data's. Ties are the hallmark
//! of rounding (continuous data essentially never tie), so [`resolution`] looks at a
//! strided sample of [`LATTICE_SAMPLE`] points, sorted: if at least one in
//! [`LATTICE_TIES`] adjacent pairs (and at least 2) are equal, Δ is the smallest positive
//! gap between its distinct values. Each value then stands for a point spread uniformly
//! over its rounding cell [v − Δ/2, v + Δ/2], the standard reading of rounded data as a
//! histogram of width Δ, and ISJ is run on the expected squared cosine coefficients of
//! the data so spread (jittered by independent U(−Δ/2, Δ/2)): with z_k = kπΔ/(2L) (L the
//! interval's length) and S_k = sin z_k / z_k, the box's transform,
//!
//!   E[(a_k/2)²] = S_k²·(a_k/2)² + (1 − S_k²)/(2·n_eff) + ½Σw_i² cos(2kπu_i)(S(2z_k) − S_k²),
//!
//! exact for the cosine series of the even extension (the box is symmetric). The last,
//! phase-dependent term averages to zero over a point's position and moves the
//! bandwidth by well under 1 % in tests; it is left out. The second is the flat noise
//! level 1/(2n_eff) of a continuous sample, restored where the box removes the data's
//! own power: above k ≈ L/Δ the coefficients look like a continuous sample's, so the
//! scan meets no comb. The interval is widened to hold the cells ([mn − Δ/2, mx + Δ/2]
//! before the usual tenth each side; otherwise the reflection at the ends folds the
//! outer cells back), and the packing of far gaps measures a gap between cells, not
//! values. For Δ far below the bandwidth S_k ≈ 1 wherever e^{−k²π²t} matters, so the
//! result is the unrounded data's; for coarse data (integers with a few values) it is
//! the bandwidth ISJ gives the data spread over their cells (close to the median over
//! jitter seeds), which can lie below Δ: a KDE of the rounded values then shows the
//! lattice. Data with only two distinct values are refused (no shape to estimate).
//! Sampled data without ties, and those with fewer than the threshold, take the usual
//! path bit for bit.
//!
//! Mixed data. A part rounded and a part not (values recorded two ways), exact zeros
//! among continuous values (zero inflation), a limit many values are censored at: the
//! sample's ties then sit among untied values, so its smallest gap is far below any
//! lattice's (it is flagged when 16·(sample size)·gap < its interquartile range), or
//! the ties are too rare for the sample and the root of the usual solve (or of the
//! pure-lattice solve) falls below [`SPIKE_CELLS`] cells (the spike of a point mass at
//! n = 10^6 with 0.1 % of the weight). Either way [`ties_solve`] sorts the data and finds the runs of equal values:
//! the significant ones (at least 3 copies and a weight of at least [`ATOM_MASS`]/√n_eff:
//! a spike of mass p adds about p² to every coefficient's square, the noise of a
//! continuous sample 1/n_eff) and the repeated ones (2 copies or more). None
//! significant: the result of the usual path stands. At least [`LATTICE_VALUES`]
//! repeated values on one lattice (step from their span and smallest gap, each within
//! [`LATTICE_TOL`] steps): every value on it is read as rounded, the others as they are;
//! the two parts are binned and transformed apart, and the expected squared coefficient
//! of the data with the rounded part jittered is (c_k + S_k·r_k)² + (1 − S_k²)·q_r/2, q_r
//! the rounded part's share of Σw². Otherwise the significant values are point masses
//! (atoms): a density with an atom has no finite AMISE-optimal bandwidth (R(f″) is
//! infinite), so they are left out and the result is the ISJ bandwidth of the other
//! values with their own effective sample size, the bandwidth that serves the continuous
//! part; [`isj_1d_info`] reports them (Python warns). Too few other values: an error.

use std::f64::consts::PI;
use std::sync::atomic::AtomicBool;

use super::binning::{linear_bin_checked, sort_weighted};
use super::check_stop;
use super::convolve::dct2;
use crate::core::error::{invalid, try_vec, Result};

/// Number of cells of the binned density.
pub const ISJ_BINS: usize = 1 << 14;

/// Reach of a stage kernel in its standard deviations: the 14th derivative of the
/// Gaussian is below 1e-9 of its value at 0 beyond 9.
const ISJ_REACH: f64 = 9.0;

/// Most rounds of packing the data's gaps (module docs).
const MAX_PACK: usize = 16;

/// Points sampled (strided) to detect rounded data (module docs).
pub const LATTICE_SAMPLE: usize = 4096;

/// Rounded data need at least one tie per this many adjacent pairs of the sorted sample
/// (and at least 2 ties). Float32 data cast to f64 at n = 10^6 show about 0.1 ties in the
/// sample; a lattice fine enough to matter shows hundreds.
pub const LATTICE_TIES: usize = 256;

/// Two values closer than this times the data's magnitude count as equal (the same
/// rounded value computed two ways differs by a few units in the last place).
const TIE_REL: f64 = 1.0 / (1u64 << 50) as f64;

/// A root whose bandwidth is below this many cells of the binned density is at the
/// cells' scale: the data are scanned for ties (module docs, "Mixed data").
const SPIKE_CELLS: f64 = 8.0;

/// The sample mixes untied values with tied ones when its smallest gap times this many
/// times its size is below its interquartile range (module docs, "Mixed data").
const MIXED_GAP: f64 = 16.0;

/// A value repeated at least 3 times whose weight is at least this over √n_eff is a
/// significant tie: a spike of that mass moves the functionals by as much as the noise
/// of a continuous sample (module docs, "Mixed data").
const ATOM_MASS: f64 = 0.25;

/// Repeated values needed to read a lattice (fewer are point masses).
const LATTICE_VALUES: usize = 4;

/// A value within this many lattice steps of a lattice point is on the lattice.
const LATTICE_TOL: f64 = 1e-3;

/// Σ_k k^{2s} a2_k e^{−k²π²t}, with e^{−k²c} by an exact-to-rounding product recurrence.
fn weighted_sum(a2: &[f64], s: i32, t: f64) -> f64 {
    let c = PI * PI * t;
    let q = (-c).exp();
    let q2 = q * q;
    let mut e = q; // e^{−k²c} at k = 1
    let mut r = q * q2; // e^{−(2k+1)c}
    let mut acc = 0.0;
    for (i, &a) in a2.iter().enumerate() {
        let k = (i + 1) as f64;
        acc += k.powi(2 * s) * a * e;
        e *= r;
        r *= q2;
        if e < 1e-300 {
            break;
        }
    }
    acc
}

/// t − ξγ^[ℓ](t) for the binned coefficients a2 (a2_k = (a_k/2)², k = 1..N−1).
fn fixed_point(t: f64, neff: f64, a2: &[f64]) -> f64 {
    stage_chain(t, neff, a2).0
}

/// t − ξγ^[ℓ](t) and the largest time at which the chain evaluates a sum.
fn stage_chain(t: f64, neff: f64, a2: &[f64]) -> (f64, f64) {
    let l = 7;
    let mut tmax = t;
    let mut f = 2.0 * PI.powi(2 * l) * weighted_sum(a2, l, t);
    for s in (2..l).rev() {
        let k0: f64 = (1..=2 * s - 1)
            .step_by(2)
            .map(|v| v as f64)
            .product::<f64>()
            / (2.0 * PI).sqrt();
        let cst = (1.0 + 0.5f64.powf(s as f64 + 0.5)) / 3.0;
        let time = (2.0 * cst * k0 / (neff * f)).powf(2.0 / (3.0 + 2.0 * s as f64));
        tmax = tmax.max(time);
        f = 2.0 * PI.powi(2 * s) * weighted_sum(a2, s, time);
    }
    (t - (2.0 * neff * PI.sqrt() * f).powf(-0.4), tmax)
}

/// ISJ bandwidth (the Gaussian kernel's standard deviation, data units) of 1-D data with
/// weights `w` (any positive scale) and effective sample size `neff`.
/// Allocates O(2^14) for the bins and the DCT.
pub fn isj_1d(x: &[f64], w: &[f64], neff: f64, stop: &AtomicBool) -> Result<f64> {
    isj_1d_opt(x, Some(w), neff, stop)
}

/// [`isj_1d`] with optional weights (`None`: equal weights).
pub fn isj_1d_opt(x: &[f64], w: Option<&[f64]>, neff: f64, stop: &AtomicBool) -> Result<f64> {
    isj_1d_info(x, w, neff, stop).map(|r| r.h)
}

/// What [`isj_1d_info`] found besides the bandwidth.
#[derive(Debug, Clone)]
pub struct Isj {
    /// The bandwidth (data units).
    pub h: f64,
    /// The lattice's resolution Δ of the values read as rounded (0.0: none).
    pub delta: f64,
    /// Fraction of the weight read as rounded (spread over cells of width Δ).
    pub rounded: f64,
    /// Point masses left out of the selection: (value, fraction of the weight).
    pub atoms: Vec<(f64, f64)>,
}

impl Isj {
    fn plain(h: f64) -> Self {
        Isj {
            h,
            delta: 0.0,
            rounded: 0.0,
            atoms: Vec::new(),
        }
    }
}

/// [`isj_1d_opt`] with what the tie analysis found (module docs, "Mixed data").
pub fn isj_1d_info(x: &[f64], w: Option<&[f64]>, neff: f64, stop: &AtomicBool) -> Result<Isj> {
    if x.is_empty() {
        return Err(invalid!("data must contain at least one point"));
    }
    if let Some(w) = w {
        if w.len() != x.len() {
            return Err(invalid!(
                "weights have length {} but there are {} data points",
                w.len(),
                x.len()
            ));
        }
    }
    if !(neff.is_finite() && neff > 1.0) {
        return Err(invalid!(
            "bandwidth='isj' needs an effective sample size above 1; got {neff}"
        ));
    }
    let level = crate::core::simd::level();
    let (mut mn, mut mx, x_finite) = crate::core::simd::min_max(level, x);
    let bad = || invalid!("data must be finite and weights finite and non-negative");
    if !x_finite {
        return Err(bad());
    }
    if let Some(w) = w {
        let (w_min, _, w_finite) = crate::core::simd::min_max(level, w);
        if !(w_finite && w_min >= 0.0) {
            return Err(bad());
        }
        if w_min == 0.0 {
            (mn, mx) = (f64::INFINITY, f64::NEG_INFINITY);
            for (&xi, &wi) in x.iter().zip(w) {
                if wi > 0.0 {
                    mn = mn.min(xi);
                    mx = mx.max(xi);
                }
            }
        }
    }
    check_stop(stop)?;
    let range = mx - mn;
    if !(range > 0.0 && range.is_finite()) {
        return Err(invalid!(
            "bandwidth='isj' needs data with positive, finite spread (all points with \
             positive weight are equal); pass a number instead"
        ));
    }
    let (delta, mixed) = resolution(x, w, mn, mx, stop)?;
    let plain = |delta: f64| pipeline(x, w, mn, mx, delta, neff, false, stop);
    if delta > 0.0 && !mixed {
        // a pure lattice: last session's rounded-data path (a root at the cells' scale
        // is checked as below)
        let (h, cell) = plain(delta)?;
        if h < SPIKE_CELLS * cell {
            if let Some(r) = ties_solve(x, w, neff, stop)? {
                return Ok(r);
            }
        }
        return Ok(Isj {
            h,
            delta,
            rounded: 1.0,
            atoms: Vec::new(),
        });
    }
    if !mixed {
        // no lattice seen in the sample: the usual path, kept unless its root sits at the
        // cells' scale (or there is none), the mark of a spike the sample missed
        let got = plain(0.0);
        if let Ok((h, cell)) = got {
            if h >= SPIKE_CELLS * cell {
                return Ok(Isj::plain(h));
            }
        }
        return match ties_solve(x, w, neff, stop)? {
            Some(r) => Ok(r),
            None => got.map(|(h, _)| Isj::plain(h)),
        };
    }
    // the sample mixes tied and untied values
    match ties_solve(x, w, neff, stop)? {
        Some(r) => Ok(r),
        None => plain(delta).map(|(h, _)| Isj {
            h,
            delta,
            rounded: 1.0,
            atoms: Vec::new(),
        }),
    }
}

/// One solve and, when the bins show a far gap, the packing rounds: (h, cell width of the
/// solve that gave h).
#[allow(clippy::too_many_arguments)]
fn pipeline(
    x: &[f64],
    w: Option<&[f64]>,
    mn: f64,
    mx: f64,
    delta: f64,
    neff: f64,
    signed: bool,
    stop: &AtomicBool,
) -> Result<(f64, f64)> {
    let first = solve(x, w, mn, mx, delta, neff, signed, stop)?;
    if !first.maybe_gap {
        return Ok((first.h, first.cell));
    }
    if signed {
        // mixed data arrive sorted by value, zero weights already dropped
        let ws = w.expect("signed weights");
        return packed(x, ws, neff, delta, first, true, stop);
    }
    let ones;
    let w = match w {
        Some(w) => w,
        None => {
            ones = try_vec(x.len(), 1.0f64, "data")?;
            &ones
        }
    };
    let (xs, ws) = sort_weighted(x, w, stop)?;
    packed(&xs, &ws, neff, delta, first, false, stop)
}

/// The resolution Δ of rounded data, or 0.0 when the data show no lattice (module docs):
/// a strided sample of at most [`LATTICE_SAMPLE`] points of positive weight, sorted.
/// Errs for data with fewer than 3 distinct values. Allocates [`LATTICE_SAMPLE`] values;
/// a sample with fewer than 3 distinct values costs one more pass over the data.
fn resolution(
    x: &[f64],
    w: Option<&[f64]>,
    mn: f64,
    mx: f64,
    stop: &AtomicBool,
) -> Result<(f64, bool)> {
    let n = x.len();
    let stride = (n / LATTICE_SAMPLE).max(1);
    let kept = |i: usize| w.is_none_or(|w| w[i] > 0.0);
    let mut s: Vec<f64> = Vec::with_capacity(LATTICE_SAMPLE.min(n));
    s.extend(
        (0..n)
            .step_by(stride)
            .take(LATTICE_SAMPLE)
            .filter(|&i| kept(i))
            .map(|i| x[i]),
    );
    // Count exact ties with a small hash table first (a few microseconds): data without
    // enough of them, nearly always continuous, need no sort.
    let pairs = s.len().saturating_sub(1);
    let enough = |ties: usize| ties >= 2 && ties * LATTICE_TIES >= pairs;
    if !enough(exact_ties(&s)) {
        return Ok((0.0, false));
    }
    s.sort_unstable_by(f64::total_cmp);
    let tol = TIE_REL * mn.abs().max(mx.abs());
    let mut ties = 0usize;
    let mut distinct = 1usize;
    let mut delta = f64::INFINITY;
    for p in s.windows(2) {
        let g = p[1] - p[0];
        if g <= tol {
            ties += 1;
        } else {
            distinct += 1;
            delta = delta.min(g);
        }
    }
    if !enough(ties) {
        return Ok((0.0, false));
    }
    if distinct >= 3 {
        // Untied values among the tied ones (a part rounded, exact zeros, censoring) show
        // a smallest gap far below a lattice's: the sample's ~4096 values have about
        // spread/len² between neighbours, a lattice that ties at this rate no less than
        // spread/len (module docs, "Mixed data").
        let m = s.len();
        let iqr = s[3 * m / 4] - s[m / 4];
        let scale = if iqr > 0.0 {
            iqr
        } else {
            0.25 * (s[m - 1] - s[0])
        };
        let mixed = delta * (MIXED_GAP * m as f64) < scale;
        return Ok((delta, mixed));
    }
    // The sample shows one or two values: look at all the data. Every other value's
    // distance to them is a multiple of the lattice's spacing; the smallest stands for it.
    check_stop(stop)?;
    let mut vals = vec![s[0]];
    if s[s.len() - 1] - s[0] > tol {
        vals.push(s[s.len() - 1]);
    }
    let mut near = f64::INFINITY;
    for (i, &v) in x.iter().enumerate() {
        if !kept(i) {
            continue;
        }
        let d = vals
            .iter()
            .fold(f64::INFINITY, |m, &u| m.min((v - u).abs()));
        if d > tol {
            near = near.min(d);
            if vals.len() < 3 {
                vals.push(v);
            }
        }
    }
    let count = vals.len();
    if count < 3 {
        return Err(invalid!(
            "bandwidth='isj' needs data with at least 3 distinct values; these take only \
             {count} (too discrete to estimate a density's shape); pass a number or \
             'silverman' instead"
        ));
    }
    Ok((delta.min(near), false))
}

/// Whether `v` lies within [`LATTICE_TOL`] steps of the lattice v0 + kΔ.
fn on_lattice(v: f64, v0: f64, delta: f64) -> bool {
    let k = (v - v0) / delta;
    (k - k.round()).abs() <= LATTICE_TOL
}

/// ISJ on data with significant ties (module docs, "Mixed data"): one sort of the data
/// of positive weight (allocates 2n values, then 2n more for the solve), the runs of
/// equal values, and those repeated at least 3 times with a weight of at least
/// [`ATOM_MASS`]/√n_eff. None when there are none. Three or more such values on a common
/// lattice of step Δ: every value on that lattice is read as rounded to Δ, the others as
/// they are (a mixed solve). Otherwise they are point masses: left out, and the
/// bandwidth is that of the rest, with its own effective sample size.
fn ties_solve(x: &[f64], w: Option<&[f64]>, neff: f64, stop: &AtomicBool) -> Result<Option<Isj>> {
    let ones;
    let w = match w {
        Some(w) => w,
        None => {
            ones = try_vec(x.len(), 1.0f64, "data")?;
            &ones
        }
    };
    let (xs, ws) = sort_weighted(x, w, stop)?;
    let m = xs.len();
    if m < 3 {
        return Ok(None);
    }
    check_stop(stop)?;
    let (sw, sw2) = ws.iter().fold((0.0, 0.0), |(a, b), &v| (a + v, b + v * v));
    let tol = TIE_REL * xs[0].abs().max(xs[m - 1].abs());
    let thr = ATOM_MASS / neff.sqrt() * sw;
    let mut sig: Vec<(f64, f64)> = Vec::new();
    let mut tied: Vec<f64> = Vec::new();
    let mut i = 0;
    while i < m {
        let mut j = i + 1;
        let mut mass = ws[i];
        while j < m && xs[j] - xs[i] <= tol {
            mass += ws[j];
            j += 1;
        }
        if j - i >= 2 {
            tied.push(xs[i]);
        }
        if j - i >= 3 && mass >= thr {
            sig.push((xs[i], mass / sw));
        }
        i = j;
    }
    if sig.is_empty() {
        return Ok(None);
    }
    // A common lattice of [`LATTICE_VALUES`] or more repeated values (the significant
    // ones and the rarer ones, which show where a rounded part's lattice runs): its step
    // from their span and smallest gap.
    let mut lattice = None;
    if tied.len() >= LATTICE_VALUES {
        let dmin = tied
            .windows(2)
            .map(|p| p[1] - p[0])
            .fold(f64::INFINITY, f64::min);
        let (v0, span) = (tied[0], tied[tied.len() - 1] - tied[0]);
        let d = span / (span / dmin).round();
        if d > 0.0 && d.is_finite() && tied.iter().all(|&v| on_lattice(v, v0, d)) {
            lattice = Some((v0, d));
        }
    }
    if let Some((v0, d)) = lattice {
        let mut signed = ws;
        let mut rounded = 0.0;
        for (v, s) in xs.iter().zip(signed.iter_mut()) {
            if on_lattice(*v, v0, d) {
                rounded += *s;
                *s = -*s;
            }
        }
        let (h, _) = pipeline(&xs, Some(&signed), xs[0], xs[m - 1], d, neff, true, stop)?;
        return Ok(Some(Isj {
            h,
            delta: d,
            rounded: rounded / sw,
            atoms: Vec::new(),
        }));
    }
    // Point masses: the bandwidth of the rest, with the rest's effective sample size.
    let is_atom = |v: f64| {
        let k = sig.partition_point(|a| a.0 < v - tol);
        k < sig.len() && (sig[k].0 - v).abs() <= tol
    };
    let mut rx = Vec::new();
    let mut rw = Vec::new();
    for (&v, &wi) in xs.iter().zip(&ws) {
        if !is_atom(v) {
            rx.push(v);
            rw.push(wi);
        }
    }
    let (rs, rs2) = rw.iter().fold((0.0, 0.0), |(a, b), &v| (a + v, b + v * v));
    let rest_neff = neff * (rs * rs / rs2) / (sw * sw / sw2);
    let distinct = rx.windows(2).filter(|p| p[1] - p[0] > tol).count() + 1;
    if rx.len() < 2 || distinct < 3 || rest_neff.is_nan() || rest_neff <= 1.0 {
        let first = sig[0].0;
        return Err(invalid!(
            "bandwidth='isj': these data are mostly point masses (values repeated many \
             times, such as {first}) with too few other values ({count}) to select the \
             continuous part's bandwidth; pass a number or 'silverman' instead",
            count = rx.len()
        ));
    }
    let (mn, mx) = (rx[0], rx[rx.len() - 1]);
    let (delta, _) = resolution(&rx, Some(&rw), mn, mx, stop)?;
    let (h, _) = pipeline(&rx, Some(&rw), mn, mx, delta, rest_neff, false, stop)?;
    Ok(Some(Isj {
        h,
        delta,
        rounded: 0.0,
        atoms: sig,
    }))
}

/// One ISJ solve on the interval [mn − r/10, mx + r/10] (r = mx − mn).
struct Solved {
    /// The bandwidth (data units).
    h: f64,
    /// Reach of the widest stage kernel at the root (data units).
    reach: f64,
    /// Whether the data may have a gap wider than `reach` (the bins show one, or their
    /// cells are too coarse to rule one out).
    maybe_gap: bool,
    /// Width of the cells (data units).
    cell: f64,
}

#[allow(clippy::too_many_arguments)]
fn solve(
    x: &[f64],
    w: Option<&[f64]>,
    mn: f64,
    mx: f64,
    delta: f64,
    neff: f64,
    signed: bool,
    stop: &AtomicBool,
) -> Result<Solved> {
    let bad = || invalid!("data must be finite and weights finite and non-negative");
    // Rounded data (delta > 0): the interval holds the values' cells.
    let (mn, mx) = if delta > 0.0 {
        (mn - 0.5 * delta, mx + 0.5 * delta)
    } else {
        (mn, mx)
    };
    let range = mx - mn;
    let lo = mn - range / 10.0;
    let len = range * 1.2;
    let n = ISJ_BINS;
    let cell = len / n as f64;
    // Cell centres lo + (j + 1/2)·cell: the DCT-II's sample points on [0, 1].
    if signed {
        return solve_mixed(x, w, lo, cell, len, delta, neff, stop);
    }
    let (bins, ok) = linear_bin_checked(x, w, 1.0, lo + 0.5 * cell, cell, n, stop)?;
    if !ok {
        return Err(bad());
    }
    check_stop(stop)?;
    let total: f64 = bins.iter().sum();
    let p: Vec<f64> = bins.iter().map(|b| b / total).collect();
    let d = dct2(&p);
    // a_k = 2·DCT_k (cosine coefficients of the density on [0, 1]); a2 = (a_k/2)².
    let mut a2: Vec<f64> = d[1..].iter().map(|v| v * v).collect();
    if delta > 0.0 {
        spread(&mut a2, delta / len, neff);
    }
    finish(&bins, &a2, neff, len, cell, delta, stop)
}

/// The root and the far-gap check of a solve, from its bins and coefficients.
fn finish(
    bins: &[f64],
    a2: &[f64],
    neff: f64,
    len: f64,
    cell: f64,
    delta: f64,
    stop: &AtomicBool,
) -> Result<Solved> {
    let t_star = root(a2, neff, stop)?;
    let tmax = stage_chain(t_star, neff, a2).1;
    let reach = ISJ_REACH * (2.0 * tmax).sqrt() * len;
    // Zero bins j..=k mean no point in the open cells j − 1 .. k + 1: a gap of at least
    // (k − j + 2) cells. A gap wider than the reach shows as such a run when the cells are
    // a quarter of it or less.
    let mut maybe_gap = 4.0 * cell > reach;
    let mut run = 0usize;
    for &b in bins {
        if b == 0.0 {
            run += 1;
            if (run + 2) as f64 * cell - delta > reach {
                maybe_gap = true;
                break;
            }
        } else {
            run = 0;
        }
    }
    Ok(Solved {
        h: t_star.sqrt() * len,
        reach,
        maybe_gap,
        cell,
    })
}

/// A solve on mixed data (module docs, "Mixed data"): `w` holds signed weights, negative
/// for the values read as rounded to `delta` (spread over their cells), positive for the
/// others (kept as they are). The two parts are binned and transformed apart; the
/// expected squared coefficients of the data with the rounded part jittered are
/// (c_k + S_k·r_k)² + (1 − S_k²)·q_r/2, q_r the rounded part's share of Σw²/neff.
/// Allocates 2n weights and two sets of 2^14 bins.
#[allow(clippy::too_many_arguments)]
fn solve_mixed(
    x: &[f64],
    w: Option<&[f64]>,
    lo: f64,
    cell: f64,
    len: f64,
    delta: f64,
    neff: f64,
    stop: &AtomicBool,
) -> Result<Solved> {
    let bad = || invalid!("data must be finite and weights finite and non-negative");
    let w = w.expect("signed weights");
    let n = ISJ_BINS;
    let mut wc = try_vec(x.len(), 0.0f64, "data")?;
    let mut wr = try_vec(x.len(), 0.0f64, "data")?;
    let (mut sc, mut sr) = (0.0, 0.0);
    for ((&v, c), r) in w.iter().zip(wc.iter_mut()).zip(wr.iter_mut()) {
        if v >= 0.0 {
            *c = v;
            sc += v * v;
        } else {
            *r = -v;
            sr += v * v;
        }
    }
    let (bc, ok1) = linear_bin_checked(x, Some(&wc), 1.0, lo + 0.5 * cell, cell, n, stop)?;
    let (br, ok2) = linear_bin_checked(x, Some(&wr), 1.0, lo + 0.5 * cell, cell, n, stop)?;
    if !(ok1 && ok2) {
        return Err(bad());
    }
    check_stop(stop)?;
    let total: f64 = bc.iter().sum::<f64>() + br.iter().sum::<f64>();
    let pc: Vec<f64> = bc.iter().map(|b| b / total).collect();
    let pr: Vec<f64> = br.iter().map(|b| b / total).collect();
    let (dc, dr) = (dct2(&pc), dct2(&pr));
    let q_r = sr / (sc + sr) / neff;
    let d = delta / len;
    let a2: Vec<f64> = (1..n)
        .map(|k| {
            let s = sinc(k as f64 * PI * d * 0.5);
            let a = dc[k] + s * dr[k];
            a * a + (1.0 - s * s) * 0.5 * q_r
        })
        .collect();
    let bins: Vec<f64> = bc.iter().zip(&br).map(|(a, b)| a + b).collect();
    finish(&bins, &a2, neff, len, cell, delta, stop)
}

/// sin z / z.
fn sinc(z: f64) -> f64 {
    if z < 1e-4 {
        1.0 - z * z / 6.0
    } else {
        z.sin() / z
    }
}

/// The number of values of `s` equal to an earlier one (open addressing on the bits;
/// −0.0 counts as 0.0).
fn exact_ties(s: &[f64]) -> usize {
    const EMPTY: u64 = u64::MAX; // a NaN's bits: never a finite value's
    let bits = (2 * s.len()).next_power_of_two().max(2).trailing_zeros();
    let mask = (1usize << bits) - 1;
    let mut table = vec![EMPTY; 1 << bits];
    let mut ties = 0;
    for &v in s {
        let key = if v == 0.0 { 0 } else { v.to_bits() };
        let mut slot = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize;
        loop {
            let k = table[slot];
            if k == EMPTY {
                table[slot] = key;
                break;
            }
            if k == key {
                ties += 1;
                break;
            }
            slot = (slot + 1) & mask;
        }
    }
    ties
}

/// The expected squared coefficients of the data spread uniformly over cells of width
/// `d` (unit-interval units; module docs): a2_k ← S_k²·a2_k + (1 − S_k²)/(2·neff) with
/// S_k = sin z/z, z = kπd/2 (a2[i] holds k = i + 1).
fn spread(a2: &mut [f64], d: f64, neff: f64) {
    let floor = 0.5 / neff;
    for (i, a) in a2.iter_mut().enumerate() {
        let z = (i + 1) as f64 * PI * d * 0.5;
        let s = if z < 1e-4 {
            1.0 - z * z / 6.0
        } else {
            z.sin() / z
        };
        let s2 = s * s;
        *a = s2 * *a + (1.0 - s2) * floor;
    }
}

/// The ISJ bandwidth of data whose gaps wider than the stage kernels' reach are packed
/// (module docs), and the cell width of the solve that gave it. `xs` sorted, `ws` their
/// weights (positive, or signed in mixed mode: the magnitude is the weight). Allocates n
/// values. With rounded data (delta > 0) a gap is measured between the values' cells.
fn packed(
    xs: &[f64],
    ws: &[f64],
    neff: f64,
    delta: f64,
    first: Solved,
    signed: bool,
    stop: &AtomicBool,
) -> Result<(f64, f64)> {
    let m = xs.len();
    let mut xp = try_vec(m, 0.0f64, "data")?;
    let mut starts: Vec<usize> = Vec::new();
    let mut gamma = first.reach;
    let mut last = (first.h, first.cell);
    let mut best = None;
    for _ in 0..MAX_PACK {
        check_stop(stop)?;
        // Shorten every gap wider than gamma to gamma; the heaviest piece stays put (its
        // bits unchanged). Each piece keeps its differences; its new start is placed from
        // the heaviest piece outwards, not by subtracting the cumulative excess (a piece
        // 1e20 away would land wherever that difference rounds to).
        starts.clear();
        starts.push(0);
        for i in 1..m {
            if xs[i] - xs[i - 1] > gamma + delta {
                starts.push(i);
            }
        }
        starts.push(m);
        let pieces = starts.len() - 1;
        let mass = |k: usize| {
            ws[starts[k]..starts[k + 1]]
                .iter()
                .map(|v| v.abs())
                .sum::<f64>()
        };
        let mut heavy = 0;
        let mut heavy_w = mass(0);
        for k in 1..pieces {
            let wk = mass(k);
            if wk > heavy_w {
                (heavy, heavy_w) = (k, wk);
            }
        }
        let extent = |k: usize| xs[starts[k + 1] - 1] - xs[starts[k]];
        let mut place = |k: usize, at: f64| {
            for i in starts[k]..starts[k + 1] {
                xp[i] = at + (xs[i] - xs[starts[k]]);
            }
        };
        let mut at = xs[starts[heavy]];
        for k in heavy + 1..pieces {
            at += extent(k - 1) + (gamma + delta);
            place(k, at);
        }
        at = xs[starts[heavy]];
        for k in (0..heavy).rev() {
            at -= (gamma + delta) + extent(k);
            place(k, at);
        }
        xp[starts[heavy]..starts[heavy + 1]].copy_from_slice(&xs[starts[heavy]..starts[heavy + 1]]);
        let got = solve(&xp, Some(ws), xp[0], xp[m - 1], delta, neff, signed, stop)?;
        last = (got.h, got.cell);
        if got.reach <= gamma {
            best = Some(last);
            if got.reach >= 0.8 * gamma {
                break;
            }
        }
        // The next reach: the solve's, but no more than the heaviest piece's extent while
        // the cells are too coarse for the solve's reach to mean much (a point 1e100 out
        // would otherwise take a round per factor of about 10³); too small a guess shows
        // as reach > gamma next round and is widened.
        let ext = extent(heavy);
        gamma = if ext > 0.0 {
            got.reach.min(ext)
        } else {
            got.reach
        };
    }
    Ok(best.unwrap_or(last))
}

/// The squared bandwidth t (unit-interval units) solving t = ξγ^[7](t).
fn root(a2: &[f64], neff: f64, stop: &AtomicBool) -> Result<f64> {
    let f = |t: f64| fixed_point(t, neff, a2);
    // Bracket the first sign change on a geometric scan of (0, 0.1], then bisect in log t.
    let mut prev_t = 1e-12;
    let mut prev_f = f(prev_t);
    let mut bracket = None;
    let mut t = prev_t;
    while t < 0.1 {
        t = (t * 4.0).min(0.1);
        let ft = f(t);
        if prev_f.is_finite() && ft.is_finite() && prev_f < 0.0 && ft >= 0.0 {
            bracket = Some((prev_t, t));
            break;
        }
        prev_t = t;
        prev_f = ft;
    }
    let (a, b) = bracket.ok_or_else(|| {
        invalid!(
            "bandwidth='isj' found no fixed point (too few or too discrete data); use \
             'silverman' or a number"
        )
    })?;
    // Illinois (modified regula falsi) in u = ln t: superlinear, and the bracket always
    // holds the root, so it ends where bisection would, in far fewer evaluations.
    let (mut fa, mut fb) = (f(a), f(b));
    let (mut ua, mut ub) = (a.ln(), b.ln());
    let mut side = 0i32;
    for _ in 0..200 {
        check_stop(stop)?;
        if ub - ua < 1e-12 {
            break;
        }
        let mut u = (ua * fb - ub * fa) / (fb - fa);
        if !(u > ua && u < ub) {
            u = 0.5 * (ua + ub);
        }
        let fu = f(u.exp());
        if fu == 0.0 {
            (ua, ub) = (u, u);
            break;
        }
        if fu < 0.0 {
            ua = u;
            fa = fu;
            if side == -1 {
                fb *= 0.5;
            }
            side = -1;
        } else {
            ub = u;
            fb = fu;
            if side == 1 {
                fa *= 0.5;
            }
            side = 1;
        }
    }
    let (a, b) = (ua.exp(), ub.exp());
    Ok((a * b).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::Lcg;

    #[test]
    fn isj_scales_with_the_data() {
        let stop = AtomicBool::new(false);
        let mut g = Lcg::new(99);
        let x: Vec<f64> = (0..5000).map(|_| g.unit_sum(4)).collect();
        let w = vec![1.0; x.len()];
        let h1 = isj_1d(&x, &w, 5000.0, &stop).unwrap();
        let x2: Vec<f64> = x.iter().map(|v| 7.0 * v - 3.0).collect();
        let h2 = isj_1d(&x2, &w, 5000.0, &stop).unwrap();
        assert!((h2 / h1 - 7.0).abs() < 1e-9 * 7.0, "{h1} {h2}");
        assert!(h1 > 0.0 && h1 < 1.0);
    }

    #[test]
    fn isj_ignores_far_points() {
        let stop = AtomicBool::new(false);
        let mut g = Lcg::new(7);
        let x: Vec<f64> = (0..5000).map(|_| g.unit_sum(4)).collect();
        let (mn, mx) = x
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        // no gap wider than the reach: the usual path
        assert_eq!(resolution(&x, None, mn, mx, &stop).unwrap(), (0.0, false));
        assert!(
            !solve(&x, None, mn, mx, 0.0, 5000.0, false, &stop)
                .unwrap()
                .maybe_gap
        );
        let h0 = isj_1d_opt(&x, None, 5000.0, &stop).unwrap();
        for far in [1e3, 1e8, -1e15, 1e300] {
            let mut y = x.clone();
            y.push(far);
            let h = isj_1d_opt(&y, None, 5001.0, &stop).unwrap();
            assert!((h / h0 - 1.0).abs() < 2e-3, "{far}: {h} {h0}");
            // weighted, and a far point of zero weight changes nothing
            let mut w = vec![1.0; y.len()];
            w[5000] = 0.0;
            let hw = isj_1d(&y, &w, 5000.0, &stop).unwrap();
            assert!((hw / h0 - 1.0).abs() < 1e-12, "{far}: {hw} {h0}");
        }
    }

    fn lcg_data(n: usize, seed: u64) -> Vec<f64> {
        let mut g = Lcg::new(seed);
        (0..n).map(|_| g.unit_sum(4)).collect()
    }

    fn rounded(x: &[f64], d: f64) -> Vec<f64> {
        x.iter().map(|v| (v / d).round() * d).collect()
    }

    #[test]
    fn isj_rounded_data_keep_the_bandwidth() {
        // Rounding to a resolution well below the bandwidth changes it little; the old
        // first root sat at the lattice's scale, orders of magnitude below.
        let stop = AtomicBool::new(false);
        for (n, seed) in [(3000usize, 3u64), (50_000, 4)] {
            let x = lcg_data(n, seed);
            let h0 = isj_1d_opt(&x, None, n as f64, &stop).unwrap();
            for frac in [20.0, 10.0, 4.0] {
                let d = h0 / frac;
                let y = rounded(&x, d);
                let (mn, mx) = y
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                        (a.min(v), b.max(v))
                    });
                let (got, mixed) = resolution(&y, None, mn, mx, &stop).unwrap();
                assert!(!mixed);
                assert!((got / d - 1.0).abs() < 1e-9, "{n} {frac}: {got} {d}");
                let h = isj_1d_opt(&y, None, n as f64, &stop).unwrap();
                assert!((h / h0 - 1.0).abs() < 0.05, "{n} {frac}: {h} {h0}");
                // scale equivariance holds on the rounded path too
                let y7: Vec<f64> = y.iter().map(|v| -7.0 * v + 2.0).collect();
                let h7 = isj_1d_opt(&y7, None, n as f64, &stop).unwrap();
                assert!((h7 / (7.0 * h) - 1.0).abs() < 1e-9, "{h7} {h}");
            }
        }
    }

    #[test]
    fn isj_continuous_data_show_no_lattice() {
        let stop = AtomicBool::new(false);
        let x = lcg_data(200_000, 8);
        let (mn, mx) = (-2.0, 2.0);
        assert_eq!(resolution(&x, None, mn, mx, &stop).unwrap(), (0.0, false));
        // float32 resolution: ties exist in the data but too few in the sample
        let y: Vec<f64> = x.iter().map(|&v| v as f32 as f64).collect();
        assert_eq!(resolution(&y, None, mn, mx, &stop).unwrap(), (0.0, false));
        // a few duplicated records
        let mut z = x[..3000].to_vec();
        z.extend_from_slice(&x[..5]);
        assert_eq!(resolution(&z, None, mn, mx, &stop).unwrap(), (0.0, false));
        assert_eq!(exact_ties(&[0.0, -0.0, 1.0, 1.0, 2.0]), 2);
    }

    #[test]
    fn isj_spread_is_the_expected_jittered_spectrum() {
        // The box's transform against a direct average over the cell (midpoint rule).
        let d = 0.01;
        let neff = 50.0;
        let mut a2 = vec![0.3; 300];
        spread(&mut a2, d, neff);
        for (i, &got) in a2.iter().enumerate() {
            let k = (i + 1) as f64;
            let m = 20_000;
            let mean: f64 = (0..m)
                .map(|j| (k * PI * d * ((j as f64 + 0.5) / m as f64 - 0.5)).cos())
                .sum::<f64>()
                / m as f64;
            let want = mean * mean * 0.3 + (1.0 - mean * mean) * 0.5 / neff;
            assert!((got - want).abs() < 1e-7, "{k}: {got} {want}");
        }
    }

    #[test]
    fn isj_discrete_data() {
        let stop = AtomicBool::new(false);
        // two distinct values: refused with a message naming the fix
        let mut x = vec![0.0; 500];
        x.extend([1.0; 3]);
        let e = isj_1d_opt(&x, None, 503.0, &stop).unwrap_err().to_string();
        assert!(e.contains("3 distinct") && e.contains("number"), "{e}");
        // also when the strided sample misses the rare value
        let mut x = vec![0.0; 100_000];
        x[777] = 2.0;
        let e = isj_1d_opt(&x, None, 1e5, &stop).unwrap_err().to_string();
        assert!(e.contains("only 2"), "{e}");
        // three values, one rare: a bandwidth, positive and finite
        x[4321] = 3.0;
        let h = isj_1d_opt(&x, None, 1e5, &stop).unwrap();
        assert!(h.is_finite() && h > 0.0, "{h}");
        // integers 0..9: of the order of the cell, not of 1e-50
        let mut g = Lcg::new(3);
        let x: Vec<f64> = (0..1000).map(|_| (g.unit_sum(1) * 10.0).floor()).collect();
        let h = isj_1d_opt(&x, None, 1000.0, &stop).unwrap();
        assert!(h > 0.1 && h < 1.0, "{h}");
    }

    #[test]
    fn isj_rounded_with_a_far_point_and_weights() {
        let stop = AtomicBool::new(false);
        let x = lcg_data(5000, 11);
        let h0 = isj_1d_opt(&x, None, 5000.0, &stop).unwrap();
        let y = rounded(&x, h0 / 8.0);
        let h = isj_1d_opt(&y, None, 5000.0, &stop).unwrap();
        for far in [1e3, -1e9] {
            let mut z = y.clone();
            z.push(far);
            let hf = isj_1d_opt(&z, None, 5001.0, &stop).unwrap();
            assert!((hf / h - 1.0).abs() < 3e-3, "{far}: {hf} {h}");
            let mut w = vec![1.0; z.len()];
            w[5000] = 0.0;
            let hw = isj_1d(&z, &w, 5000.0, &stop).unwrap();
            assert!((hw / h - 1.0).abs() < 1e-12, "{far}: {hw} {h}");
        }
    }

    #[test]
    fn isj_mixed_lattice_and_point_masses() {
        let stop = AtomicBool::new(false);
        let n = 40_000;
        let x = lcg_data(n, 21);
        let h0 = isj_1d_opt(&x, None, n as f64, &stop).unwrap();
        // half the values rounded to h0/3: read as a lattice part, not a spike
        let mut y = x.clone();
        for v in y.iter_mut().take(n / 2) {
            *v = (*v / (h0 / 3.0)).round() * (h0 / 3.0);
        }
        let (d, mixed) = resolution(&y, None, -2.0, 2.0, &stop).unwrap();
        assert!(mixed && d < 1e-3 * h0, "{d}");
        let r = isj_1d_info(&y, None, n as f64, &stop).unwrap();
        assert!((r.delta / (h0 / 3.0) - 1.0).abs() < 1e-9, "{}", r.delta);
        assert!((r.rounded - 0.5).abs() < 0.01, "{}", r.rounded);
        assert!(r.atoms.is_empty());
        assert!((r.h / h0 - 1.0).abs() < 0.05, "{} {h0}", r.h);
        // a fifth of the values at exactly 0.25: left out, the rest's bandwidth
        let mut z = x.clone();
        for v in z.iter_mut().step_by(5) {
            *v = 0.25;
        }
        let rest: Vec<f64> = z.iter().copied().filter(|&v| v != 0.25).collect();
        let r = isj_1d_info(&z, None, n as f64, &stop).unwrap();
        assert_eq!(r.atoms.len(), 1);
        assert_eq!(r.atoms[0].0, 0.25);
        assert!((r.atoms[0].1 - 0.2).abs() < 1e-12);
        let hr = isj_1d_opt(&rest, None, rest.len() as f64, &stop).unwrap();
        assert!((r.h / hr - 1.0).abs() < 1e-9, "{} {hr}", r.h);
        assert!(r.h > 0.5 * h0, "{} {h0}", r.h);
    }
}
