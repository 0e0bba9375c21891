//! Gradients of dCov², JdCov² and CCdCov² with respect to the first sample.
//!
//! Every gradient here has the form ∂/∂x_k = (2/N) Σ_{j≠k} M_kj g_kj with
//! g_kj = α |x_k − x_j|^(α−2) (x_k − x_j) and N = n² (V) or n(n − 3) (U), for a symmetric
//! weight matrix M that is never stored: one full pass of the engine gives, per row k,
//! Σ_j w_kj and Σ_j w_kj x_j with w_kj = α |x_k − x_j|^(α−2) M_kj, and the gradient is
//! x_k Σ_j w_kj − Σ_j w_kj x_j. Pairs at distance zero contribute 0 (the symmetric
//! subgradient). Memory: O(n Σ p_k).
//!
//! The weights come from one fact: double centring (V) and U-centring (U, sums over
//! i ≠ j) are self-adjoint projections, so Σ C(a) P = Σ a C(P) for any symmetric P.
//! * dCov²(x, y) = (1/N) Σ a_ij B_ij, so M = B, the centred distances of y.
//! * JdCov² = (1/N) Σ (w_1 Û_1 + c) P + const, with P_ij = Π_{k≥2} (w_k Û_k(i, j) + c)
//!   free of x_1 and Û_1 = −A_1, so without scaling M = −C(P). One extra full pass gives
//!   the row sums of P, hence its centring offsets.
//! * With `scale`, w_1 = dCov²(x_1, x_1)^(−1/2) also depends on x_1: with
//!   S = Σ Û_1 P (from the same extra pass) and V_1 = dCov²(x_1, x_1),
//!   M = −(S/N) V_1^(−3/2) A_1 − w_1 C(P). When V_1 ≤ 0 the factor w_1 is 0 near x_1
//!   and so is the gradient.
//! * CCdCov²(y, attrs) is dCov²(y, concatenated attrs): the dCov² gradient.

use std::sync::atomic::AtomicBool;

use super::sums::Acc;
use super::{
    centred, check_exponent, check_n, norm_factor, offsets, row_sums, JointPrep, PowMap, SqrtMap,
};
use crate::core::error::{invalid, Result};
use crate::core::pairwise::multi::{reduce_pairs_multi, MultiReducer};
use crate::core::pairwise::reduce::PairMap;
use crate::core::pairwise::{Float, Points, COL_TILE};
use crate::core::simd::Fma;

/// The gradient weights M_kj for one row of a tile (`d2[k]` holds set k's distances).
trait Weights: Sync {
    fn row<M: Fma>(
        &self,
        gi: usize,
        i: usize,
        c0: usize,
        nc: usize,
        d2: &[Vec<f64>],
        out: &mut [f64],
    );
}

/// M = B: the centred distances of y (set 1).
struct DcovWeights<'a, F> {
    f: F,
    cy: &'a [f64],
}

impl<F: PairMap> Weights for DcovWeights<'_, F> {
    #[inline(always)]
    fn row<M: Fma>(
        &self,
        gi: usize,
        i: usize,
        c0: usize,
        nc: usize,
        d2: &[Vec<f64>],
        out: &mut [f64],
    ) {
        let cc = &self.cy[c0..c0 + nc];
        let dy = &d2[1][i * COL_TILE..i * COL_TILE + nc];
        let ci = self.cy[gi];
        for j in 0..nc {
            out[j] = (self.f.value(dy[j]) - ci) - cc[j];
        }
    }
}

/// Π_{k≥1} (w_k Û_k(i, j) + c) for one tile row (sets 1.. of `d2`), into `out`; the
/// diagonal pair (if in the tile) gets its exact value Π (2 w_k c^k_i + c) for the V
/// statistic and 0 for the U statistic, which sums over i ≠ j only.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn others_product<F: PairMap, M: Fma>(
    f: &F,
    offs: &[&[f64]],
    w: &[f64],
    cc: f64,
    diag: bool,
    gi: usize,
    i: usize,
    c0: usize,
    nc: usize,
    d2: &[Vec<f64>],
    out: &mut [f64],
) {
    let out = &mut out[..nc];
    out.fill(1.0);
    for k in 1..offs.len() {
        let (ci, wk) = (offs[k][gi], w[k]);
        let oc = &offs[k][c0..c0 + nc];
        let drow = &d2[k][i * COL_TILE..i * COL_TILE + nc];
        for j in 0..nc {
            let u = (ci + oc[j]) - f.value(drow[j]);
            out[j] *= M::ma(u, wk, cc);
        }
    }
    if gi >= c0 && gi < c0 + nc {
        out[gi - c0] = if diag {
            (1..offs.len())
                .map(|k| 2.0 * offs[k][gi] * w[k] + cc)
                .product()
        } else {
            0.0
        };
    }
}

/// Row sums of P (and, for `scale`, S = Σ Û_1 P) over all ordered pairs.
struct PRows<'a, F> {
    f: F,
    offs: Vec<&'a [f64]>,
    w: &'a [f64],
    cc: f64,
    diag: bool,
    want_s: bool,
}

struct PRowsState {
    rows: Vec<Acc>,
    s: Acc,
    p: Vec<f64>,
}

impl<F: PairMap> MultiReducer for PRows<'_, F> {
    type State = PRowsState;
    fn upper(&self) -> bool {
        false
    }
    fn init(&self, _r0: usize, nr: usize) -> PRowsState {
        PRowsState {
            rows: vec![Acc::default(); nr],
            s: Acc::default(),
            p: vec![0.0; COL_TILE],
        }
    }
    #[inline(always)]
    fn tile<M: Fma>(
        &self,
        st: &mut PRowsState,
        r0: usize,
        nr: usize,
        c0: usize,
        nc: usize,
        d2: &[Vec<f64>],
    ) {
        for i in 0..nr {
            let gi = r0 + i;
            others_product::<F, M>(
                &self.f, &self.offs, self.w, self.cc, self.diag, gi, i, c0, nc, d2, &mut st.p,
            );
            let p = &st.p[..nc];
            st.rows[i].add(crate::core::simd::sum(p));
            if self.want_s {
                // Û_1 = c_i + c_j − a_ij; on the diagonal 2 c_i (V) or 0 (U, P is 0 there).
                let c1 = self.offs[0];
                let ci = c1[gi];
                let oc = &c1[c0..c0 + nc];
                let drow = &d2[0][i * COL_TILE..i * COL_TILE + nc];
                let mut s = 0.0;
                for j in 0..nc {
                    let u = if gi == c0 + j {
                        2.0 * ci
                    } else {
                        (ci + oc[j]) - self.f.value(drow[j])
                    };
                    s += u * p[j];
                }
                st.s.add(s);
            }
        }
    }
}

/// M = λ A_1 − μ C(P): the JdCov² weights.
struct JointWeights<'a, F> {
    f: F,
    offs: Vec<&'a [f64]>,
    w: &'a [f64],
    cc: f64,
    diag: bool,
    /// Centring offsets of P.
    op: &'a [f64],
    lambda: f64,
    mu: f64,
}

impl<F: PairMap> Weights for JointWeights<'_, F> {
    #[inline(always)]
    fn row<M: Fma>(
        &self,
        gi: usize,
        i: usize,
        c0: usize,
        nc: usize,
        d2: &[Vec<f64>],
        out: &mut [f64],
    ) {
        others_product::<F, M>(
            &self.f, &self.offs, self.w, self.cc, self.diag, gi, i, c0, nc, d2, out,
        );
        let (oi, oc) = (self.op[gi], &self.op[c0..c0 + nc]);
        let out = &mut out[..nc];
        for j in 0..nc {
            out[j] = -self.mu * ((out[j] - oi) - oc[j]);
        }
        if self.lambda != 0.0 {
            let c1 = self.offs[0];
            let (ci, cc1) = (c1[gi], &c1[c0..c0 + nc]);
            let drow = &d2[0][i * COL_TILE..i * COL_TILE + nc];
            for j in 0..nc {
                out[j] += self.lambda * ((self.f.value(drow[j]) - ci) - cc1[j]);
            }
        }
    }
}

struct GradRows<'a, W> {
    half_x: f64,
    alpha: f64,
    weights: W,
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

impl<W: Weights> MultiReducer for GradRows<'_, W> {
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
        for i in 0..nr {
            let gi = r0 + i;
            self.weights.row::<M>(gi, i, c0, nc, d2, &mut st.w);
            let dx = &d2[0][i * COL_TILE..i * COL_TILE + nc];
            let w = &mut st.w[..nc];
            for j in 0..nc {
                let s = if self.half_x == 0.5 {
                    1.0 / dx[j].sqrt()
                } else {
                    dx[j].powf(self.half_x - 1.0)
                };
                w[j] = if dx[j] > 0.0 {
                    self.alpha * s * w[j]
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

/// Runs the gradient pass over `sets` (set 0 is x, centred row-major `xc`) with the
/// weights `wts`, and returns factor · (x_k Σ_j w_kj − Σ_j w_kj x_j), row-major n×p.
fn grad_pass<W: Weights>(
    sets: &[Points<'_, f64>],
    xc: &[f64],
    alpha: f64,
    wts: W,
    factor: f64,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    let (n, p) = (sets[0].n, sets[0].d);
    let mut soa = vec![0.0; n * p];
    for i in 0..n {
        for k in 0..p {
            soa[k * n + i] = xc[i * p + k];
        }
    }
    let red = GradRows {
        half_x: 0.5 * alpha,
        alpha,
        weights: wts,
        soa: &soa,
        n,
        p,
    };
    let states = reduce_pairs_multi(sets, &red, stop)?;
    let mut out = Vec::with_capacity(n * p);
    let mut i = 0;
    for s in &states {
        for (r, &sw) in s.sw.iter().enumerate() {
            for k in 0..p {
                out.push(factor * (xc[i * p + k] * sw - s.wx[r * p + k]));
            }
            i += 1;
        }
    }
    Ok(out)
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
    let xc = centred(x)?;
    let yc = centred(y)?;
    let px = Points::new(&xc, n, p)?;
    let py = Points::new(&yc, n, y.d)?;
    let cy = offsets(&row_sums(py, alpha, stop)?, unbiased);
    let f = 2.0 * norm_factor(n, unbiased);
    if alpha == 1.0 {
        let wts = DcovWeights {
            f: SqrtMap,
            cy: &cy,
        };
        grad_pass(&[px, py], &xc, alpha, wts, f, stop)
    } else {
        let wts = DcovWeights {
            f: PowMap { half: 0.5 * alpha },
            cy: &cy,
        };
        grad_pass(&[px, py], &xc, alpha, wts, f, stop)
    }
}

/// JdCov²(X_1, …, X_d; c) (as [`super::jdcov`], bitwise) and its gradient with respect
/// to X_1, a row-major n×p_1 array. Passes: the statistic's, then one full pass for the
/// row sums of P = Π_{k≥2} (w_k Û_k + c) and one full gradient pass.
pub fn jdcov_grad<T: Float>(
    xs: &[Points<'_, T>],
    c: f64,
    alpha: f64,
    unbiased: bool,
    scale: bool,
    stop: &AtomicBool,
) -> Result<(f64, Vec<f64>)> {
    let prep = JointPrep::new(xs, c, alpha, unbiased, scale, stop)?;
    let value = prep.value(c, alpha, unbiased, stop)?;
    let grad = if alpha == 1.0 {
        joint_grad(&prep, SqrtMap, c, alpha, unbiased, scale, stop)?
    } else {
        let f = PowMap { half: 0.5 * alpha };
        joint_grad(&prep, f, c, alpha, unbiased, scale, stop)?
    };
    Ok((value, grad))
}

fn joint_grad<F: PairMap + Copy>(
    prep: &JointPrep,
    f: F,
    c: f64,
    alpha: f64,
    unbiased: bool,
    scale: bool,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    let n = prep.n;
    let nf = norm_factor(n, unbiased);
    let pts = prep.points()?;
    let offs = prep.offsets();
    // With scale, w_1 multiplies Û_1 and is differentiated separately: P uses w_k, k ≥ 2.
    let (mu, lambda_needed) = if scale {
        (prep.w[0], prep.w[0] > 0.0)
    } else {
        (1.0, false)
    };
    if mu == 0.0 {
        return Ok(vec![0.0; n * prep.dims[0]]);
    }
    let pr = PRows {
        f,
        offs: offs.clone(),
        w: &prep.w,
        cc: c,
        diag: !unbiased,
        want_s: lambda_needed,
    };
    let states = reduce_pairs_multi(&pts, &pr, stop)?;
    let mut rows = Vec::with_capacity(n);
    let mut s = Acc::default();
    for st in &states {
        rows.extend(st.rows.iter().map(|a| a.value()));
        s.merge(&st.s);
    }
    let op = offsets(&rows, unbiased);
    let lambda = if lambda_needed {
        let v1 = prep.var[0];
        -(s.value() * nf) * v1.powf(-1.5)
    } else {
        0.0
    };
    let wts = JointWeights {
        f,
        offs,
        w: &prep.w,
        cc: c,
        diag: !unbiased,
        op: &op,
        lambda,
        mu,
    };
    grad_pass(&pts, &prep.cs[0], alpha, wts, 2.0 * nf, stop)
}

#[cfg(test)]
mod tests {
    use super::super::{dcov_stats, jdcov, Method};
    use super::*;
    use crate::core::testing::sym_vec;

    fn fd_check(val: &dyn Fn(&[f64]) -> f64, x: &[f64], g: &[f64], what: &str) {
        for t in [0usize, 7, x.len() / 2 + 1, x.len() - 1] {
            let h = 1e-6;
            let mut a = x.to_vec();
            a[t] += h;
            let mut b = x.to_vec();
            b[t] -= h;
            let fd = (val(&a) - val(&b)) / (2.0 * h);
            assert!(
                (fd - g[t]).abs() < 1e-6 * (1.0 + fd.abs()),
                "{what}, {t}: {fd} vs {}",
                g[t]
            );
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let stop = AtomicBool::new(false);
        let (n, p, q) = (40, 2, 3);
        let x = sym_vec(31, n * p);
        let y: Vec<f64> = sym_vec(32, n * q)
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
                fd_check(&val, &x, &g, &format!("dcov α {alpha}"));
            }
        }
    }

    #[test]
    fn jdcov_gradient_matches_finite_differences_and_two_sample_dcov() {
        let stop = AtomicBool::new(false);
        let n = 45;
        let x = sym_vec(41, n * 2);
        let y: Vec<f64> = sym_vec(42, n)
            .iter()
            .enumerate()
            .map(|(i, v)| v + x[2 * i] * x[2 * i + 1])
            .collect();
        let z: Vec<f64> = sym_vec(43, n * 3)
            .iter()
            .enumerate()
            .map(|(i, v)| v * (1.0 + y[i / 3].abs()))
            .collect();
        let (py, pz) = (
            Points::new(&y, n, 1).unwrap(),
            Points::new(&z, n, 3).unwrap(),
        );
        for &alpha in &[1.0, 0.6, 1.4] {
            for unbiased in [false, true] {
                for scale in [false, true] {
                    let px = Points::new(&x, n, 2).unwrap();
                    let (v, g) =
                        jdcov_grad(&[px, py, pz], 0.8, alpha, unbiased, scale, &stop).unwrap();
                    let want = jdcov(&[px, py, pz], 0.8, alpha, unbiased, scale, &stop).unwrap();
                    assert_eq!(v, want);
                    let val = |xx: &[f64]| {
                        let px = Points::new(xx, n, 2).unwrap();
                        jdcov(&[px, py, pz], 0.8, alpha, unbiased, scale, &stop).unwrap()
                    };
                    let what = format!("jdcov α {alpha} U {unbiased} scale {scale}");
                    fd_check(&val, &x, &g, &what);
                }
                // Two samples, no scaling: the dCov² gradient, whatever c is.
                let px = Points::new(&x, n, 2).unwrap();
                let (_, g2) = jdcov_grad(&[px, pz], 2.5, alpha, unbiased, false, &stop).unwrap();
                let gd = dcov_sqr_grad(px, pz, alpha, unbiased, &stop).unwrap();
                for (a, b) in g2.iter().zip(&gd) {
                    assert!((a - b).abs() < 1e-10 * (1e-3 + b.abs()), "{a} vs {b}");
                }
            }
        }
        // A constant first sample under scale: zero factor, zero gradient.
        let k = vec![3.0; n];
        let pk = Points::new(&k, n, 1).unwrap();
        let (_, g) = jdcov_grad(&[pk, py, pz], 1.0, 1.0, true, true, &stop).unwrap();
        assert!(g.iter().all(|&v| v == 0.0));
    }
}
