//! Kernel density estimates on regular grids in one dimension (issue 11).
//!
//! Everything here works on raw (not whitened) 1-D data and returns *unnormalised* sums
//! S(g) = Σ_j w_j K(|g − x_j| / h) with the unit profiles of [`crate::core::kde`]
//! (K(0) = 1); the caller divides by h·∫K. Weights are expected to sum to 1 (the error
//! bounds of the exact Gaussian path assume it).
//!
//! * [`binning`]: linear binning of weighted data (and an O(n) bucket sort).
//! * [`convolve`]: real linear convolution, direct or by a radix-2 FFT written here.
//! * [`exact`]: exact sums at every grid point: running window sums for the compact
//!   kernels, one-sided recurrences for the exponential kernel, and a Taylor-binned
//!   expansion with a proven truncation bound (plus a log-space fallback) for the Gaussian.
//! * [`isj`]: the Improved Sheather–Jones bandwidth (Botev, Grotowski and Kroese 2010).

pub mod binning;
pub mod convolve;
pub mod errfield;
pub mod exact;
pub mod fullconv;
pub mod fullerr;
pub mod fused;
pub mod isj;
pub mod nd;

use std::sync::atomic::{AtomicBool, Ordering};

use super::error::{invalid, try_vec, Error, Result};
use super::kde::Kernel;

/// A regular 1-D grid g_i = lo + i·delta, i = 0..m.
#[derive(Clone, Copy, Debug)]
pub struct Grid1 {
    /// First grid point.
    pub lo: f64,
    /// Spacing (> 0).
    pub delta: f64,
    /// Number of points (>= 2).
    pub m: usize,
}

impl Grid1 {
    /// Checks the grid's parameters.
    pub fn new(lo: f64, delta: f64, m: usize) -> Result<Grid1> {
        if m < 2 {
            return Err(invalid!("n_points must be at least 2; got {m}"));
        }
        if !(lo.is_finite() && delta.is_finite() && delta > 0.0) {
            return Err(invalid!(
                "extent must be finite with low < high (grid start {lo}, spacing {delta})"
            ));
        }
        Ok(Grid1 { lo, delta, m })
    }

    /// The i-th grid point.
    #[inline]
    pub fn at(&self, i: usize) -> f64 {
        self.lo + i as f64 * self.delta
    }
}

/// The unit radial profile K(r), r >= 0, as in `kde.rs` (K(0) = 1).
#[inline]
pub fn profile(kernel: Kernel, r: f64) -> f64 {
    match kernel {
        Kernel::Gaussian => (-0.5 * r * r).exp(),
        Kernel::Exponential => (-r).exp(),
        Kernel::Tophat => {
            if r < 1.0 {
                1.0
            } else {
                0.0
            }
        }
        Kernel::Epanechnikov => {
            if r < 1.0 {
                1.0 - r * r
            } else {
                0.0
            }
        }
        Kernel::Linear => {
            if r < 1.0 {
                1.0 - r
            } else {
                0.0
            }
        }
        Kernel::Cosine => {
            if r < 1.0 {
                (std::f64::consts::FRAC_PI_2 * r).cos()
            } else {
                0.0
            }
        }
    }
}

/// Radius (in bandwidths) beyond which the binned path ignores the kernel: the support
/// for compact kernels; for the Gaussian K(8.6) = 9e-17, for the exponential K(37) = 9e-17.
pub fn support_radius(kernel: Kernel) -> f64 {
    match kernel {
        Kernel::Gaussian => 8.6,
        Kernel::Exponential => 37.0,
        _ => 1.0,
    }
}

/// Kernels whose profile has a kink inside the support (or a jump): linear binning
/// smears the kink, so the binned path refuses them.
pub fn is_kinked(kernel: Kernel) -> bool {
    matches!(
        kernel,
        Kernel::Tophat | Kernel::Linear | Kernel::Exponential
    )
}

pub(crate) fn check_stop(stop: &AtomicBool) -> Result<()> {
    if stop.load(Ordering::Relaxed) {
        Err(Error::Cancelled)
    } else {
        Ok(())
    }
}

pub(crate) fn check_data(x: &[f64], w: &[f64], h: f64) -> Result<()> {
    if x.len() != w.len() {
        return Err(invalid!(
            "weights have length {} but there are {} data points",
            w.len(),
            x.len()
        ));
    }
    if x.is_empty() {
        return Err(invalid!("data must contain at least one point"));
    }
    if !(h.is_finite() && h > 0.0) {
        return Err(invalid!("bandwidth must be positive and finite; got {h}"));
    }
    // One vectorised pass over each (the data are large, and `any` does not vectorise).
    let level = crate::core::simd::level();
    let (_, _, x_finite) = crate::core::simd::min_max(level, x);
    let (w_min, _, w_finite) = crate::core::simd::min_max(level, w);
    if !(x_finite && w_finite && w_min >= 0.0) {
        return Err(invalid!(
            "data must be finite and weights finite and non-negative"
        ));
    }
    Ok(())
}

/// One pass over 1-D data for a grid: ranges, the weighted mean and spread, and checks.
#[derive(Clone, Copy, Debug)]
pub struct Stats1 {
    /// Smallest and largest coordinate of all points.
    pub min: f64,
    pub max: f64,
    /// Smallest and largest coordinate of the points with positive weight.
    pub min_pos: f64,
    pub max_pos: f64,
    /// Σw, the weighted mean Σw·x/Σw and Σw(x − mean)².
    pub sum_w: f64,
    pub mean: f64,
    pub m2: f64,
    /// Σw² and the number of points with positive weight.
    pub sum_w2: f64,
    pub n_pos: usize,
    /// Every coordinate finite, every weight finite and non-negative.
    pub ok: bool,
}

impl Stats1 {
    fn empty() -> Stats1 {
        Stats1 {
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            min_pos: f64::INFINITY,
            max_pos: f64::NEG_INFINITY,
            sum_w: 0.0,
            mean: 0.0,
            m2: 0.0,
            sum_w2: 0.0,
            n_pos: 0,
            ok: true,
        }
    }

    /// Chan et al.'s pairwise update of (Σw, mean, M2).
    fn merge(mut self, o: Stats1) -> Stats1 {
        let w = self.sum_w + o.sum_w;
        if o.sum_w > 0.0 {
            let d = o.mean - self.mean;
            let f = o.sum_w / w;
            self.mean += d * f;
            self.m2 += o.m2 + d * d * self.sum_w * f;
        }
        self.sum_w = w;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.min_pos = self.min_pos.min(o.min_pos);
        self.max_pos = self.max_pos.max(o.max_pos);
        self.sum_w2 += o.sum_w2;
        self.n_pos += o.n_pos;
        self.ok &= o.ok;
        self
    }
}

/// Σ of a slice with four accumulators (vectorises; a fixed order, so reproducible).
fn sum4(it: impl Iterator<Item = f64>) -> f64 {
    let mut acc = [0.0f64; 4];
    for (i, v) in it.enumerate() {
        acc[i & 3] += v;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}

fn stats_chunk(x: &[f64], w: Option<&[f64]>, wu: f64, spread: bool) -> Stats1 {
    let mut s = Stats1::empty();
    let level = crate::core::simd::level();
    let (mn, mx, fin) = crate::core::simd::min_max(level, x);
    s.min = mn;
    s.max = mx;
    s.ok = fin;
    match w {
        None => {
            s.min_pos = mn;
            s.max_pos = mx;
            s.n_pos = if wu > 0.0 { x.len() } else { 0 };
            s.sum_w = wu * x.len() as f64;
            s.sum_w2 = wu * wu * x.len() as f64;
            if spread {
                let mean = sum4(x.iter().copied()) / x.len() as f64;
                let m2 = sum4(x.iter().map(|&v| (v - mean) * (v - mean)));
                s.mean = mean;
                s.m2 = wu * m2;
            }
        }
        Some(w) => {
            let (wmin, _, wfin) = crate::core::simd::min_max(level, w);
            s.ok &= wfin && wmin >= 0.0;
            let (mut sw, mut sx, mut sw2) = (0.0, 0.0, 0.0);
            for (&v, &wi) in x.iter().zip(w) {
                sw += wi;
                sx += wi * v;
                sw2 += wi * wi;
            }
            s.sum_w = sw;
            s.sum_w2 = sw2;
            if wmin > 0.0 {
                s.min_pos = mn;
                s.max_pos = mx;
                s.n_pos = x.len();
            } else {
                for (&v, &wi) in x.iter().zip(w) {
                    if wi > 0.0 {
                        s.min_pos = s.min_pos.min(v);
                        s.max_pos = s.max_pos.max(v);
                        s.n_pos += 1;
                    }
                }
            }
            if sw > 0.0 && spread {
                let mean = sx / sw;
                s.mean = mean;
                s.m2 = x
                    .iter()
                    .zip(w)
                    .map(|(&v, &wi)| wi * (v - mean) * (v - mean))
                    .sum();
            }
        }
    }
    s
}

/// [`Stats1`] of 1-D data with optional weights (`None`: every weight `wu`), in chunks
/// that stay in cache (two passes each for the spread) merged in a fixed order, so the
/// result does not depend on the thread count's timing. Allocates one record per chunk.
/// With `spread` false the mean and M2 are skipped (left 0): the range and checks only.
pub fn stats_1d(
    x: &[f64],
    w: Option<&[f64]>,
    wu: f64,
    spread: bool,
    stop: &AtomicBool,
) -> Result<Stats1> {
    use rayon::prelude::*;
    if let Some(w) = w {
        if w.len() != x.len() {
            return Err(invalid!(
                "weights have length {} but there are {} data points",
                w.len(),
                x.len()
            ));
        }
    }
    const CH: usize = 1 << 15;
    let nch = x.len().div_ceil(CH);
    let parts: Vec<Stats1> = super::threads::install(|| {
        (0..nch)
            .into_par_iter()
            .map(|c| {
                let (a, b) = (c * CH, ((c + 1) * CH).min(x.len()));
                stats_chunk(&x[a..b], w.map(|w| &w[a..b]), wu, spread)
            })
            .collect()
    })?;
    check_stop(stop)?;
    Ok(parts.into_iter().fold(Stats1::empty(), Stats1::merge))
}

/// Whether the direct correlation (m outputs of 2·reach + 1 taps, half of them folded by
/// symmetry, vectorised) costs less than an FFT convolution of the padded lattice (two
/// complex transforms of the next power of two above m + 4·reach). The ratio is an
/// estimate: a tap measured 0.12 to 0.17 ns on x86-64 (loaded machine), a scalar
/// complex butterfly is assumed about 20 times that.
pub(crate) fn use_direct(m: usize, reach: usize) -> bool {
    let n = (m + 4 * reach + 2).next_power_of_two();
    let fft = n as f64 * n.trailing_zeros() as f64;
    (m as f64) * (reach as f64 + 1.0) <= DIRECT_PER_FFT * fft
}

/// See [`use_direct`].
const DIRECT_PER_FFT: f64 = 20.0;

/// Result of [`binned_1d`].
#[derive(Clone, Debug)]
pub struct Binned {
    /// Unnormalised sums at the grid points.
    pub sums: Vec<f64>,
    /// Pointwise estimate of the binning error of `sums` (same units): for the Gaussian
    /// the leading term computed from the data ([`errfield::line1_error`]), otherwise
    /// |Δ²S|/12 plus the kink term.
    pub err: Vec<f64>,
}

/// Binned estimate on `grid`: linear binning of the data onto the grid extended by the
/// kernel's reach on both sides (so data outside the grid still contribute), then one
/// convolution with the kernel sampled at the grid spacing.
///
/// The error of linear binning at a grid point is, to leading order in δ,
/// (δ²/2)·Σ_j w_j t_j(1−t_j) K_h″(g − x_j) with t_j the fractional bin position; with t
/// spread over [0, 1] the mean of t(1−t) is 1/6, so the error is about (δ²/12)·|S″|, which
/// the second differences of the output estimate: err_i = |S_{i+1} − 2S_i + S_{i−1}| / 12.
///
/// Allocates O(m + 2·reach) for the bins and O(FFT size) for the convolution.
pub fn binned_1d(
    x: &[f64],
    w: &[f64],
    kernel: Kernel,
    h: f64,
    grid: Grid1,
    stop: &AtomicBool,
) -> Result<Binned> {
    binned_1d_opt(x, Some(w), kernel, h, grid, stop)
}

/// [`binned_1d`] with optional weights (`None`: every point weighs 1/n). The data checks
/// (finite coordinates, finite non-negative weights) run inside the binning pass.
pub fn binned_1d_opt(
    x: &[f64],
    w: Option<&[f64]>,
    kernel: Kernel,
    h: f64,
    grid: Grid1,
    stop: &AtomicBool,
) -> Result<Binned> {
    if let Some(w) = w {
        if x.len() != w.len() {
            return Err(invalid!(
                "weights have length {} but there are {} data points",
                w.len(),
                x.len()
            ));
        }
    }
    if x.is_empty() {
        return Err(invalid!("data must contain at least one point"));
    }
    if !(h.is_finite() && h > 0.0) {
        return Err(invalid!("bandwidth must be positive and finite; got {h}"));
    }
    let reach_f = (support_radius(kernel) * h / grid.delta).ceil();
    if reach_f >= 1e9 || reach_f.is_nan() {
        return Err(Error::OutOfMemory(format!(
            "the bandwidth spans {reach_f:.3e} grid steps, too many to sample the kernel; \
             use fewer n_points or a narrower extent"
        )));
    }
    let reach = reach_f as usize;
    let pad = reach + 1;
    let nb = grid.m + 2 * pad;
    let lo_b = grid.lo - pad as f64 * grid.delta;
    let wu = 1.0 / x.len() as f64;
    // The Gaussian's error estimate comes from the data (errfield.rs): its fields are
    // summed per bin in the binning pass itself.
    let (bins, ok, fine) = if kernel == Kernel::Gaussian {
        let level = crate::core::simd::level();
        let b = fused::bin_with_fields(level, x, w, wu, lo_b, grid.delta, nb, stop)?;
        (b.bins, b.ok, Some(b.fine))
    } else {
        let (bins, ok) = binning::linear_bin_checked(x, w, wu, lo_b, grid.delta, nb, stop)?;
        (bins, ok, None)
    };
    if !ok {
        return Err(invalid!(
            "data must be finite and weights finite and non-negative"
        ));
    }
    // The kernel's taps at offsets 0..=reach (it is symmetric).
    let mut half = try_vec(reach + 1, 0.0f64, "n_points")?;
    for (j, k) in half.iter_mut().enumerate() {
        *k = profile(kernel, j as f64 * grid.delta / h);
    }
    // sums[i] = Σ_j bins[pad + i + j] K(|j| δ / h), |j| ≤ reach: grid point i is bin
    // pad + i. Directly (only the m outputs wanted, O(m·reach)) unless the kernel is so
    // long that an FFT of the whole lattice costs less.
    let sums = if use_direct(grid.m, reach) {
        convolve::correlate_sym(&bins, &half, pad, grid.m, stop)?
    } else {
        let mut ker = try_vec(2 * reach + 1, 0.0f64, "n_points")?;
        for (j, k) in ker.iter_mut().enumerate() {
            *k = half[j.abs_diff(reach)];
        }
        let full = convolve::convolve_fft(&bins, &ker, stop)?;
        // full[t] = Σ_s bins[s] ker[t − s]; the kernel's centre is index `reach`, so grid
        // point i's value is full[pad + i + reach].
        let start = pad + reach;
        full[start..start + grid.m].to_vec()
    };
    // The epanechnikov and cosine profiles have a slope jump J (2 and π/2 per bandwidth)
    // at the support's edge. A kink at fraction a of a bin holding mass μ adds
    // (J/h)·δ·μ·a(1−a)/2 to the binning error, while S″ (hence Δ²S/12) counts it as
    // (J/h)·δ·μ/12; the signed difference is added before taking the magnitude.
    let jump = match kernel {
        Kernel::Epanechnikov => 2.0,
        Kernel::Cosine => std::f64::consts::FRAC_PI_2,
        _ => 0.0,
    };
    let m = grid.m;
    if let Some(fine) = fine {
        let err = errfield::line1_error(&fine, pad, h, grid.delta, m)?;
        return Ok(Binned { sums, err });
    }
    let mut err = vec![0.0; m];
    if m >= 3 {
        for i in 1..m - 1 {
            err[i] = (sums[i + 1] - 2.0 * sums[i] + sums[i - 1]) / 12.0;
        }
        err[0] = err[1];
        err[m - 1] = err[m - 2];
    }
    if jump > 0.0 {
        let off = h / grid.delta;
        let coef = jump * grid.delta / h;
        let kink = |pos: f64| -> f64 {
            if pos < 0.0 || pos.is_nan() {
                return 0.0;
            }
            let k = pos as usize;
            let a = pos - k as f64;
            let mass = 0.5
                * (bins.get(k).copied().unwrap_or(0.0) + bins.get(k + 1).copied().unwrap_or(0.0));
            mass * (0.5 * a * (1.0 - a) - 1.0 / 12.0)
        };
        for (i, e) in err.iter_mut().enumerate() {
            let c = (pad + i) as f64;
            *e += coef * (kink(c - off) + kink(c + off));
        }
    }
    for e in err.iter_mut() {
        *e = e.abs();
    }
    Ok(Binned { sums, err })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::testing::Lcg;

    /// The density sum at `g` written out: Σ_j w_j K(|g − x_j| / h).
    pub fn direct(x: &[f64], w: &[f64], kernel: Kernel, h: f64, g: f64) -> f64 {
        x.iter()
            .zip(w)
            .map(|(&xi, &wi)| wi * profile(kernel, (g - xi).abs() / h))
            .sum()
    }

    fn sample(n: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
        let mut g = Lcg::new(seed);
        let x: Vec<f64> = (0..n).map(|_| (g.unit_sum(3) - 1.5) * 2.0).collect();
        let mut w: Vec<f64> = (0..n).map(|_| 0.5 + g.unit()).collect();
        let t: f64 = w.iter().sum();
        w.iter_mut().for_each(|v| *v /= t);
        (x, w)
    }

    #[test]
    fn binned_close_to_direct_and_error_estimate_bounds() {
        let (x, w) = sample(3000, 7);
        let stop = AtomicBool::new(false);
        let h = 0.3;
        let grid = Grid1::new(-3.5, 7.0 / 511.0, 512).unwrap();
        let b = binned_1d(&x, &w, Kernel::Gaussian, h, grid, &stop).unwrap();
        let mut max_err: f64 = 0.0;
        for i in 0..grid.m {
            let e = direct(&x, &w, Kernel::Gaussian, h, grid.at(i));
            max_err = max_err.max((b.sums[i] - e).abs());
        }
        let est = b.err.iter().cloned().fold(0.0, f64::max);
        assert!(max_err > 0.0 && est < 2.0 * max_err && est > 0.5 * max_err);
    }

    #[test]
    fn direct_and_fft_convolutions_agree() {
        // Same bins, both ways of convolving: the direct path is picked for short kernels,
        // the FFT for long ones; they must agree to rounding.
        let (x, w) = sample(5000, 11);
        let stop = AtomicBool::new(false);
        for &(h, m) in &[(0.05, 600usize), (0.3, 512), (2.0, 256), (2.0, 4096)] {
            let grid = Grid1::new(-4.0, 8.0 / (m - 1) as f64, m).unwrap();
            let b = binned_1d(&x, &w, Kernel::Gaussian, h, grid, &stop).unwrap();
            let reach = (support_radius(Kernel::Gaussian) * h / grid.delta).ceil() as usize;
            let pad = reach + 1;
            let lo_b = grid.lo - pad as f64 * grid.delta;
            let nb = m + 2 * pad;
            let (bins, _) =
                binning::linear_bin_checked(&x, Some(&w), 0.0, lo_b, grid.delta, nb, &stop)
                    .unwrap();
            let ker: Vec<f64> = (0..2 * reach + 1)
                .map(|j| profile(Kernel::Gaussian, j.abs_diff(reach) as f64 * grid.delta / h))
                .collect();
            let full = convolve::convolve_fft(&bins, &ker, &stop).unwrap();
            let peak = b.sums.iter().cloned().fold(0.0, f64::max);
            for i in 0..m {
                let f = full[pad + reach + i];
                assert!((b.sums[i] - f).abs() <= 1e-12 * peak, "h={h} i={i}");
            }
        }
        assert!(use_direct(4096, 151) && !use_direct(4096, 4000));
    }

    #[test]
    fn data_outside_the_grid_contribute() {
        let x = [0.0, 10.0];
        let w = [0.5, 0.5];
        let stop = AtomicBool::new(false);
        let grid = Grid1::new(0.5, 0.01, 10).unwrap();
        let b = binned_1d(&x, &w, Kernel::Gaussian, 1.0, grid, &stop).unwrap();
        let e = direct(&x, &w, Kernel::Gaussian, 1.0, 0.5);
        assert!((b.sums[0] - e).abs() < 1e-5 * e);
        assert!(Grid1::new(0.0, 0.1, 1).is_err());
        assert!(Grid1::new(0.0, -0.1, 4).is_err());
    }
}
