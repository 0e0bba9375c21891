//! Pair maps shared by several families (see [`PairMap`]).

use super::reduce::PairMap;

/// Gaussian log-kernel, -d²/2 (unit bandwidth); the mean weights are the kernel terms.
#[derive(Clone, Copy, Debug, Default)]
pub struct GaussianMap;
impl PairMap for GaussianMap {
    const LOG: bool = true;
    const DECREASING: bool = true;
    #[inline(always)]
    fn value(&self, d2: f64) -> f64 {
        -0.5 * d2
    }
    #[inline(always)]
    fn linear(&self) -> Option<f64> {
        Some(-0.5)
    }
    #[inline(always)]
    fn mean_factor(&self, _d2: f64) -> f64 {
        1.0
    }
}

/// Exponential (Laplacian) log-kernel, -|d| (unit bandwidth); the mean weights are the
/// terms divided by the distance, the score of the kernel.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExponentialMap;
impl PairMap for ExponentialMap {
    const LOG: bool = true;
    const DECREASING: bool = true;
    #[inline(always)]
    fn value(&self, d2: f64) -> f64 {
        -d2.sqrt()
    }
    #[inline(always)]
    fn mean_factor(&self, d2: f64) -> f64 {
        // -K'(r) / (r K(r)) = 1/r; the kink at r = 0 contributes nothing (symmetric choice).
        if d2 > 0.0 {
            1.0 / d2.sqrt()
        } else {
            0.0
        }
    }
}
