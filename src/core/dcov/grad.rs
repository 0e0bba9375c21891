//! Gradient of the squared distance covariance with respect to the first sample.
//!
//! Because B is double-centred (V) or U-centred (U), Σ A_ij B_ij = Σ a_ij B_ij, so
//! ∂dCov²/∂x_k = (2/N) Σ_{j≠k} B_kj · α |x_k − x_j|^(α−2) (x_k − x_j), with N = n² (V) or
//! n(n − 3) (U). One full pass of the engine over (x, y) gives, per row k, Σ_j w_kj and
//! Σ_j w_kj x_j with w_kj = α |x_k − x_j|^(α−2) B_kj; pairs at distance zero contribute 0
//! (the symmetric subgradient). Memory: O(n (p + q)).

use std::sync::atomic::AtomicBool;

use super::{centred, check_exponent, check_n, norm_factor, offsets, row_sums};
use crate::core::error::{invalid, Result};
use crate::core::pairwise::multi::{reduce_pairs_multi, MultiReducer};
use crate::core::pairwise::{Float, Points, COL_TILE};
use crate::core::simd::Fma;

struct GradRows<'a> {
    half_x: f64,
    half_y: f64,
    alpha: f64,
    cy: &'a [f64],
    /// x's coordinates, column-major (p rows of n values).
    soa: &'a [f64],
    n: usize,
    p: usize,
}

struct GradState {
    sw: Vec<f64>,
    wx: Vec<f64>,
    w: Vec<f64>,
}

impl MultiReducer for GradRows<'_> {
    type State = GradState;
    fn upper(&self) -> bool {
        false
    }
    fn init(&self, _r0: usize, nr: usize) -> GradState {
        GradState {
            sw: vec![0.0; nr],
            wx: vec![0.0; nr * self.p],
            w: vec![0.0; COL_TILE],
        }
    }
    #[inline(always)]
    fn tile<M: Fma>(
        &self,
        st: &mut GradState,
        r0: usize,
        nr: usize,
        c0: usize,
        nc: usize,
        d2: &[Vec<f64>],
    ) {
        let cc = &self.cy[c0..c0 + nc];
        for i in 0..nr {
            let gi = r0 + i;
            let dx = &d2[0][i * COL_TILE..i * COL_TILE + nc];
            let dy = &d2[1][i * COL_TILE..i * COL_TILE + nc];
            let ci = self.cy[gi];
            let w = &mut st.w[..nc];
            for j in 0..nc {
                let b = if self.half_y == 0.5 {
                    dy[j].sqrt()
                } else {
                    dy[j].powf(self.half_y)
                };
                let bc = (b - ci) - cc[j];
                let s = if self.half_x == 0.5 {
                    1.0 / dx[j].sqrt()
                } else {
                    dx[j].powf(self.half_x - 1.0)
                };
                w[j] = if dx[j] > 0.0 {
                    self.alpha * s * bc
                } else {
                    0.0
                };
            }
            if gi >= c0 && gi < c0 + nc {
                w[gi - c0] = 0.0;
            }
            st.sw[i] += crate::core::simd::sum(w);
            for k in 0..self.p {
                let xc = &self.soa[k * self.n + c0..k * self.n + c0 + nc];
                st.wx[i * self.p + k] += super::dot(w, xc);
            }
        }
    }
}

/// ∂ dCov²(x, y) / ∂x as a row-major n×p array (V or U statistic).
pub fn dcov_sqr_grad<T: Float>(
    x: Points<'_, T>,
    y: Points<'_, T>,
    alpha: f64,
    unbiased: bool,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    check_exponent(alpha)?;
    if x.n != y.n {
        return Err(invalid!(
            "x and y must have the same number of observations; got {} and {}",
            x.n,
            y.n
        ));
    }
    let (n, p) = (x.n, x.d);
    check_n(n, unbiased)?;
    let xc = centred(x);
    let yc = centred(y);
    let px = Points::new(&xc, n, p)?;
    let py = Points::new(&yc, n, y.d)?;
    let cy = offsets(&row_sums(py, alpha, stop)?, unbiased);
    let mut soa = vec![0.0; n * p];
    for i in 0..n {
        for k in 0..p {
            soa[k * n + i] = xc[i * p + k];
        }
    }
    let red = GradRows {
        half_x: 0.5 * alpha,
        half_y: 0.5 * alpha,
        alpha,
        cy: &cy,
        soa: &soa,
        n,
        p,
    };
    let states = reduce_pairs_multi(&[px, py], &red, stop)?;
    let f = 2.0 * norm_factor(n, unbiased);
    let mut out = Vec::with_capacity(n * p);
    let mut i = 0;
    for s in &states {
        for (r, &sw) in s.sw.iter().enumerate() {
            for k in 0..p {
                out.push(f * (xc[i * p + k] * sw - s.wx[r * p + k]));
            }
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests::lcg;
    use super::super::{dcov_stats, Method};
    use super::*;

    #[test]
    fn gradient_matches_finite_differences() {
        let stop = AtomicBool::new(false);
        let (n, p, q) = (40, 2, 3);
        let x = lcg(31, n * p);
        let y: Vec<f64> = lcg(32, n * q)
            .iter()
            .enumerate()
            .map(|(i, v)| v + x[i % (n * p)])
            .collect();
        for &alpha in &[1.0, 0.7, 1.5] {
            for unbiased in [false, true] {
                let g = dcov_sqr_grad(
                    Points::new(&x, n, p).unwrap(),
                    Points::new(&y, n, q).unwrap(),
                    alpha,
                    unbiased,
                    &stop,
                )
                .unwrap();
                let val = |xx: &[f64]| {
                    dcov_stats(
                        Points::new(xx, n, p).unwrap(),
                        Points::new(&y, n, q).unwrap(),
                        alpha,
                        unbiased,
                        Method::Pairwise,
                        &stop,
                    )
                    .unwrap()
                    .cov
                };
                for t in [0usize, 7, 55, 79] {
                    let h = 1e-6;
                    let mut a = x.clone();
                    a[t] += h;
                    let mut b = x.clone();
                    b[t] -= h;
                    let fd = (val(&a) - val(&b)) / (2.0 * h);
                    assert!(
                        (fd - g[t]).abs() < 1e-6 * (1.0 + fd.abs()),
                        "α {alpha}, {t}: {fd} vs {}",
                        g[t]
                    );
                }
            }
        }
    }
}
