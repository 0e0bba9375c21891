//! Gradients of the sample-based discrepancies (MMD, Cauchy-Schwarz, energy distance) with
//! respect to the sample points, for `divest.torch`'s backward pass.
//!
//! Each is a sum over rows i of Σ_j φ'(x_i, y_j), with the pair gradient
//! ∇_{x_i} φ(x_i, y_j) = c_ij (x_i − y_j) for a scalar weight c_ij of the squared distance:
//! one pass of the pairwise engine's weighted-mean reducer gives Σ_j c_ij and Σ_j c_ij y_j
//! per row, and the gradient is x_i Σ_j c_ij − Σ_j c_ij y_j. Nothing of size n×m is
//! formed: memory O((n + m)·d). The pair (i, i) of a sample against itself is kept: its
//! gradient is zero (x_i − x_i = 0), and its weight is 0 where the distance is exactly 0.

use std::sync::atomic::AtomicBool;

use super::kernel::PairKernel;
use crate::core::error::{invalid, Result};
use crate::core::ot::clouds::row_stats;
use crate::core::pairwise::maps::{ExponentialMap, GaussianMap};
use crate::core::pairwise::reduce::{PairMap, RowStats};
use crate::core::pairwise::{Float, Points};

fn combine<T: Float>(x: Points<'_, T>, st: &RowStats, factor: impl Fn(usize) -> f64) -> Vec<f64> {
    let d = x.d;
    let mut g = vec![0.0; x.n * d];
    for i in 0..x.n {
        let f = factor(i);
        if f == 0.0 {
            continue;
        }
        let row = x.row(i);
        for k in 0..d {
            g[i * d + k] = f * (row[k].to_f64() * st.wsum[i] - st.wacc[i * d + k]);
        }
    }
    g
}

fn check(x: usize, y: usize) -> Result<()> {
    if x != y {
        return Err(invalid!(
            "x and y must have the same dimension; got {x} and {y}"
        ));
    }
    Ok(())
}

/// Rows of `exp(-log_norm) · Σ_j ∇_{x_i} k(x_i, y_j)` (row-major n×d) for the kernel at
/// scale `scale` = 1/σ²: ∇_x k = −scale·(x − y)·k for the Gaussian exp(−scale·d²/2) and
/// −scale·(x − y)·k/√(scale·d²) for the Laplacian exp(−√(scale·d²)).
pub fn kernel_row_grads<T: Float>(
    x: Points<'_, T>,
    y: Points<'_, T>,
    kernel: PairKernel,
    scale: f64,
    log_norm: f64,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    check(x.d, y.d)?;
    if !(scale.is_finite() && scale > 0.0) {
        return Err(invalid!("sigma must be positive and finite"));
    }
    let cols = y.to_f64_vec();
    let w = vec![0.0f64; y.n];
    let st = match kernel {
        PairKernel::Gaussian => {
            row_stats(x, y, &w, GaussianMap, scale, false, Some(&cols), x.d, stop)?
        }
        PairKernel::Laplacian => row_stats(
            x,
            y,
            &w,
            ExponentialMap,
            scale,
            false,
            Some(&cols),
            x.d,
            stop,
        )?,
    };
    Ok(combine(x, &st, |i| {
        if st.shift[i] == f64::NEG_INFINITY {
            0.0
        } else {
            -scale * (st.shift[i] - log_norm).exp()
        }
    }))
}

/// α |x − y|^(α−2) as the mean weight of a pair (0 at distance 0, the symmetric
/// subgradient); the value itself is not used.
#[derive(Clone, Copy)]
struct EnergySlope {
    alpha: f64,
    half_m1: f64,
}

impl PairMap for EnergySlope {
    const LOG: bool = false;
    #[inline(always)]
    fn value(&self, _d2: f64) -> f64 {
        0.0
    }
    #[inline(always)]
    fn mean_factor(&self, d2: f64) -> f64 {
        if d2 > 0.0 {
            self.alpha * d2.powf(self.half_m1)
        } else {
            0.0
        }
    }
}

/// [`EnergySlope`] at α = 1 (the usual case): 1/|x − y|, a select the loop vectorises.
#[derive(Clone, Copy)]
struct UnitSlope;

impl PairMap for UnitSlope {
    const LOG: bool = false;
    #[inline(always)]
    fn value(&self, _d2: f64) -> f64 {
        0.0
    }
    #[inline(always)]
    fn mean_factor(&self, d2: f64) -> f64 {
        let r = 1.0 / d2.sqrt();
        if d2 > 0.0 {
            r
        } else {
            0.0
        }
    }
}

/// Rows of `Σ_j ∇_{x_i} |x_i − y_j|^α = Σ_j α |x_i − y_j|^(α−2) (x_i − y_j)` (row-major n×d).
pub fn energy_row_grads<T: Float>(
    x: Points<'_, T>,
    y: Points<'_, T>,
    alpha: f64,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    check(x.d, y.d)?;
    if !(alpha > 0.0 && alpha < 2.0) {
        return Err(invalid!("exponent must be in (0, 2); got {alpha}"));
    }
    let cols = y.to_f64_vec();
    let w = vec![1.0f64; y.n];
    let map = EnergySlope {
        alpha,
        half_m1: 0.5 * alpha - 1.0,
    };
    let st = if alpha == 1.0 {
        row_stats(x, y, &w, UnitSlope, 1.0, false, Some(&cols), x.d, stop)?
    } else {
        row_stats(x, y, &w, map, 1.0, false, Some(&cols), x.d, stop)?
    };
    Ok(combine(x, &st, |_| 1.0))
}

/// Gaussian responsibilities' moments: for each row i, with r_ij ∝ exp(lw_j − ‖x_i − y_j‖²/2)
/// (unit bandwidth: whiten first), returns (ln Σ_j exp(lw_j − ‖x_i − y_j‖²/2) (n),
/// E_r[y] (n×d), and with `second` E_r[y²] per coordinate (n×d; empty otherwise)). Rows
/// whose sum is empty get −inf and zero moments. One engine pass, O((n + m)·d) memory.
pub fn gauss_moments<T: Float>(
    x: Points<'_, T>,
    y: Points<'_, T>,
    lw: &[f64],
    second: bool,
    stop: &AtomicBool,
) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    check(x.d, y.d)?;
    if lw.len() != y.n {
        return Err(invalid!("one log-weight per column is needed"));
    }
    let d = x.d;
    let md = if second { 2 * d } else { d };
    let mut cols = vec![0.0; y.n * md];
    for j in 0..y.n {
        for (k, v) in y.row(j).iter().enumerate() {
            let v = v.to_f64();
            cols[j * md + k] = v;
            if second {
                cols[j * md + d + k] = v * v;
            }
        }
    }
    let st = row_stats(x, y, lw, GaussianMap, 1.0, false, Some(&cols), md, stop)?;
    let mut lse = vec![f64::NEG_INFINITY; x.n];
    let mut m1 = vec![0.0; x.n * d];
    let mut m2 = if second {
        vec![0.0; x.n * d]
    } else {
        Vec::new()
    };
    for i in 0..x.n {
        if st.wsum[i].is_nan() || st.wsum[i] <= 0.0 {
            continue;
        }
        lse[i] = st.log_sum(i);
        let inv = 1.0 / st.wsum[i];
        for k in 0..d {
            m1[i * d + k] = st.wacc[i * md + k] * inv;
            if second {
                m2[i * d + k] = st.wacc[i * md + d + k] * inv;
            }
        }
    }
    Ok((lse, m1, m2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::sym_vec;

    fn naive(x: &[f64], y: &[f64], d: usize, f: impl Fn(f64) -> f64) -> Vec<f64> {
        let (n, m) = (x.len() / d, y.len() / d);
        let mut g = vec![0.0; n * d];
        for i in 0..n {
            for j in 0..m {
                let d2: f64 = (0..d).map(|k| (x[i * d + k] - y[j * d + k]).powi(2)).sum();
                let c = f(d2);
                for k in 0..d {
                    g[i * d + k] += c * (x[i * d + k] - y[j * d + k]);
                }
            }
        }
        g
    }

    #[test]
    fn row_grads_match_naive() {
        let stop = AtomicBool::new(false);
        for d in [3usize, 11] {
            let (n, m) = (70, 300);
            let x = sym_vec(1, n * d);
            let y = sym_vec(2, m * d);
            let px = Points::new(&x, n, d).unwrap();
            let py = Points::new(&y, m, d).unwrap();
            let s = 0.8;
            let g = kernel_row_grads(px, py, PairKernel::Gaussian, s, 0.5, &stop).unwrap();
            let want = naive(&x, &y, d, |d2| -s * (-0.5 * s * d2).exp() * (-0.5f64).exp());
            for (a, b) in g.iter().zip(&want) {
                assert!(
                    (a - b).abs() < 1e-11 * (1.0 + b.abs()),
                    "gauss d={d}: {a} {b}"
                );
            }
            let g = kernel_row_grads(px, py, PairKernel::Laplacian, s, 0.0, &stop).unwrap();
            let want = naive(&x, &y, d, |d2| {
                let r = (s * d2).sqrt();
                -s * (-r).exp() / r
            });
            for (a, b) in g.iter().zip(&want) {
                assert!(
                    (a - b).abs() < 1e-11 * (1.0 + b.abs()),
                    "lap d={d}: {a} {b}"
                );
            }
            for alpha in [1.0, 0.5, 1.5] {
                let g = energy_row_grads(px, py, alpha, &stop).unwrap();
                let want = naive(&x, &y, d, |d2| alpha * d2.powf(0.5 * alpha - 1.0));
                for (a, b) in g.iter().zip(&want) {
                    assert!(
                        (a - b).abs() < 1e-10 * (1.0 + b.abs()),
                        "energy d={d}: {a} {b}"
                    );
                }
            }
        }
    }
}
