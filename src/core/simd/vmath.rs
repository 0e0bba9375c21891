//! Branch-free logarithms that the loop vectoriser turns into SIMD code (used by the
//! divergences and by OT), and the series that keep divergences exact for nearly
//! identical inputs.

use std::f64::consts::{FRAC_1_SQRT_2, SQRT_2};

use super::Fma;

const LN2_HI: f64 = 0.693_147_180_369_123_8;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
/// 2^54: lifts subnormals into the normal range before the exponent is read.
const TWO54: f64 = 18_014_398_509_481_984.0;
/// 2^52 + 1023: turns the biased exponent bits into a float without an int conversion.
const EXP_MAGIC: f64 = 4_503_599_627_371_519.0;

/// ln(w), where `u = w - 1` is supplied with full relative precision (the caller computes
/// it without cancellation). Exact to about 1 ulp; ln 0 = -inf, ln inf = inf, NaN stays NaN.
#[inline(always)]
pub fn ln_core<M: Fma>(w: f64, u: f64) -> f64 {
    let sub = w < f64::MIN_POSITIVE;
    let ws = if sub { w * TWO54 } else { w };
    let bits = ws.to_bits();
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    let e = f64::from_bits((bits >> 52) | 0x4330_0000_0000_0000) - EXP_MAGIC;
    let hi = m >= SQRT_2;
    let m = if hi { 0.5 * m } else { m };
    let e = if hi { e + 1.0 } else { e };
    let e = if sub { e - 54.0 } else { e };
    // Near 1 the reduced argument comes from u, so ln(1 + u) keeps u's precision.
    let near = w > FRAC_1_SQRT_2 && w < SQRT_2;
    // One division per call (selecting the operands first): divisions dominate the cost.
    let num = if near { u } else { m - 1.0 };
    let den = if near { 2.0 + u } else { m + 1.0 };
    let f = num / den;
    let e = if near { 0.0 } else { e };
    // 2 atanh(f) = 2f Σ f^(2k)/(2k+1); |f| <= 0.1716 so 12 terms reach 1e-19.
    let f2 = f * f;
    let mut p = 1.0 / 23.0;
    p = M::ma(p, f2, 1.0 / 21.0);
    p = M::ma(p, f2, 1.0 / 19.0);
    p = M::ma(p, f2, 1.0 / 17.0);
    p = M::ma(p, f2, 1.0 / 15.0);
    p = M::ma(p, f2, 1.0 / 13.0);
    p = M::ma(p, f2, 1.0 / 11.0);
    p = M::ma(p, f2, 1.0 / 9.0);
    p = M::ma(p, f2, 1.0 / 7.0);
    p = M::ma(p, f2, 1.0 / 5.0);
    p = M::ma(p, f2, 1.0 / 3.0);
    let r = M::ma(2.0 * f * f2, p, 2.0 * f);
    let y = M::ma(e, LN2_HI, M::ma(e, LN2_LO, r));
    let y = if w == 0.0 { f64::NEG_INFINITY } else { y };
    let y = if w == f64::INFINITY { f64::INFINITY } else { y };
    if w.is_nan() {
        f64::NAN
    } else {
        y
    }
}

/// ln(a / b) for a, b >= 0, accurate when a ≈ b (a - b is exact there, by Sterbenz).
#[inline(always)]
pub fn ln_ratio<M: Fma>(a: f64, b: f64) -> f64 {
    // Exact power-of-two rescaling keeps 1/b finite for subnormal b.
    let tiny = b < TINY;
    let a = if tiny { a * LIFT } else { a };
    let b = if tiny { b * LIFT } else { b };
    ln_ratio_inv::<M>(a, b, 1.0 / b)
}

/// Below this a denominator is rescaled by [`LIFT`] before its reciprocal is taken.
pub const TINY: f64 = 1e-290;
/// 2^600, an exact scale factor.
pub const LIFT: f64 = 4.149_515_568_880_993e180;

/// [`ln_ratio`] given `inv_b = 1 / b` (shared between calls to save divisions).
#[inline(always)]
pub fn ln_ratio_inv<M: Fma>(a: f64, b: f64, inv_b: f64) -> f64 {
    ln_core::<M>(a * inv_b, (a - b) * inv_b)
}

/// ψ(Δ) = e^Δ (Δ - 1) + 1 for |Δ| < 0.5 by its Taylor series Σ_{k≥2} (k-1)/k! Δ^k, so
/// that q ψ(ln(p/q)) = p ln(p/q) - p + q keeps full relative precision as p → q.
#[inline(always)]
pub fn psi_small<M: Fma>(d: f64) -> f64 {
    // c_j = (j + 1) / (j + 2)!, j = 0..15; the tail at |Δ| = 0.5 is below 1e-18.
    const C: [f64; 16] = [
        1.0 / 2.0,
        2.0 / 6.0,
        3.0 / 24.0,
        4.0 / 120.0,
        5.0 / 720.0,
        6.0 / 5_040.0,
        7.0 / 40_320.0,
        8.0 / 362_880.0,
        9.0 / 3_628_800.0,
        10.0 / 39_916_800.0,
        11.0 / 479_001_600.0,
        12.0 / 6_227_020_800.0,
        13.0 / 87_178_291_200.0,
        14.0 / 1_307_674_368_000.0,
        15.0 / 20_922_789_888_000.0,
        16.0 / 355_687_428_096_000.0,
    ];
    let mut p = C[15];
    for j in (0..15).rev() {
        p = M::ma(p, d, C[j]);
    }
    d * d * p
}

/// p ln(p/q) - p + q >= 0 given Δ = ln(p/q) and whether p or q is exactly zero.
/// Summed over a pair of probability vectors this is KL(p‖q); each term is non-negative
/// and exact as p → q. Conventions of scipy's rel_entr: 0 ln 0 = 0, p > 0 = q gives inf.
#[inline(always)]
pub fn kl_term<M: Fma>(p: f64, q: f64, d: f64, pz: bool, qz: bool) -> f64 {
    let small = q * psi_small::<M>(d);
    let big = M::ma(p, d, q - p);
    let v = if d.abs() < 0.5 { small } else { big };
    let v = if qz { f64::INFINITY } else { v };
    let v = if pz { q } else { v };
    if v > 0.0 {
        v
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::simd::Unfused;

    #[test]
    fn ln_matches_std_everywhere() {
        let mut worst = 0.0f64;
        let mut x = 1e-310f64;
        while x < 1e300 {
            let got = ln_core::<Unfused>(x, x - 1.0);
            let want = x.ln();
            let err = (got - want).abs() / want.abs().max(1e-300);
            worst = worst.max(err);
            x *= 1.000_913;
        }
        assert!(worst < 4e-16, "worst {worst}");
        for &x in &[5e-324f64, 1e-320, 0.5, 0.75, 1.0, 1.25, 2.0, 3.0] {
            let got = ln_core::<Unfused>(x, x - 1.0);
            assert!(
                (got - x.ln()).abs() <= 2e-16 * x.ln().abs().max(1e-300),
                "{x}"
            );
        }
        assert_eq!(ln_core::<Unfused>(0.0, -1.0), f64::NEG_INFINITY);
        assert_eq!(
            ln_core::<Unfused>(f64::INFINITY, f64::INFINITY),
            f64::INFINITY
        );
        assert!(ln_core::<Unfused>(f64::NAN, f64::NAN).is_nan());
        // Near 1 the result keeps the precision of u.
        let u = 1e-13;
        let got = ln_core::<Unfused>(1.0 + u, u);
        assert!((got - u.ln_1p()).abs() < 1e-29);
        let a = 1.0 + 1e-12;
        assert!((ln_ratio::<Unfused>(a, 1.0) - (a - 1.0).ln_1p()).abs() < 1e-27);
    }

    #[test]
    fn psi_and_kl_terms() {
        for &d in &[-0.49f64, -0.1, -1e-7, 0.0, 1e-9, 0.2, 0.4999] {
            // Reference: the series summed forward with many more terms.
            let (mut want, mut fact) = (0.0f64, 1.0f64);
            for kk in 2..40 {
                fact *= kk as f64;
                want += (kk - 1) as f64 / fact * d.powi(kk);
            }
            let got = psi_small::<Unfused>(d);
            assert!(
                (got - want).abs() <= 1e-15 * want.abs() + 1e-300,
                "{d}: {got} vs {want}"
            );
            assert!(got >= 0.0);
        }
        assert_eq!(
            kl_term::<Unfused>(0.0, 0.3, f64::NEG_INFINITY, true, false),
            0.3
        );
        assert_eq!(
            kl_term::<Unfused>(0.3, 0.0, f64::INFINITY, false, true),
            f64::INFINITY
        );
        assert_eq!(kl_term::<Unfused>(0.0, 0.0, f64::NAN, true, true), 0.0);
        assert_eq!(kl_term::<Unfused>(0.3, 0.3, 0.0, false, false), 0.0);
        let (p, q) = (0.7f64, 0.2f64);
        let want = p * (p / q).ln() - p + q;
        let got = kl_term::<Unfused>(p, q, ln_ratio::<Unfused>(p, q), false, false);
        assert!((got - want).abs() < 1e-15);
    }
}
