//! Minimum, maximum and finiteness of a slice in one pass. The lane-array form does not
//! vectorise reliably, so the AVX-512 and AVX2 paths use intrinsics.

use super::{Fma, LANES};

/// (min, max, every entry finite) of `v`; (+inf, −inf, true) when empty. NaN entries make
/// `finite` false and are otherwise ignored.
#[inline(always)]
pub fn min_max_finite<M: Fma>(v: &[f64]) -> (f64, f64, bool) {
    #[cfg(target_arch = "x86_64")]
    if M::AVX512 {
        // SAFETY: M::AVX512 holds only on the AVX-512 dispatch path.
        return unsafe { mm512(v) };
    }
    #[cfg(target_arch = "x86_64")]
    if M::AVX2 {
        // SAFETY: M::AVX2 holds only on the AVX2 and AVX-512 dispatch paths.
        return unsafe { mm_avx2(v) };
    }
    let mut lo = [f64::INFINITY; LANES];
    let mut hi = [f64::NEG_INFINITY; LANES];
    // 0·x is 0 for finite x and NaN for ±inf and NaN: one vectorised finiteness test.
    let mut nan = [0.0f64; LANES];
    let ch = v.chunks_exact(LANES);
    let rest = ch.remainder();
    for q in ch {
        for l in 0..LANES {
            lo[l] = if q[l] < lo[l] { q[l] } else { lo[l] };
            hi[l] = if q[l] > hi[l] { q[l] } else { hi[l] };
            nan[l] += q[l] * 0.0;
        }
    }
    let lo = rest
        .iter()
        .chain(&lo)
        .fold(f64::INFINITY, |x, &y| if y < x { y } else { x });
    let hi = rest
        .iter()
        .chain(&hi)
        .fold(f64::NEG_INFINITY, |x, &y| if y > x { y } else { x });
    let finite = nan.iter().chain(rest).all(|x| x.is_finite());
    (lo, hi, finite)
}

super::simd_fn!(
    /// [`min_max_finite`] on the best path `level` allows: (min, max, every entry finite).
    pub fn min_max => min_max_finite(v: &[f64]) -> (f64, f64, bool)
);

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn mm512(v: &[f64]) -> (f64, f64, bool) {
    use std::arch::x86_64::*;
    let n = v.len();
    let p = v.as_ptr();
    let (mut lo, mut hi) = (
        _mm512_set1_pd(f64::INFINITY),
        _mm512_set1_pd(f64::NEG_INFINITY),
    );
    let mut nan = _mm512_setzero_pd();
    let zero = _mm512_setzero_pd();
    let mut j = 0;
    while j < n {
        let rem = n - j;
        let mask: __mmask8 = if rem >= 8 { 0xff } else { (1u8 << rem) - 1 };
        // SAFETY: the masked lanes j..j+min(8, rem) lie inside v.
        let x = unsafe { _mm512_maskz_loadu_pd(mask, p.add(j)) };
        lo = _mm512_mask_min_pd(lo, mask, lo, x);
        hi = _mm512_mask_max_pd(hi, mask, hi, x);
        nan = _mm512_fmadd_pd(x, zero, nan);
        j += 8;
    }
    let finite = _mm512_reduce_add_pd(nan).is_finite();
    (_mm512_reduce_min_pd(lo), _mm512_reduce_max_pd(hi), finite)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn mm_avx2(v: &[f64]) -> (f64, f64, bool) {
    use std::arch::x86_64::*;
    let n = v.len();
    let p = v.as_ptr();
    let (mut lo0, mut hi0) = (
        _mm256_set1_pd(f64::INFINITY),
        _mm256_set1_pd(f64::NEG_INFINITY),
    );
    let (mut lo1, mut hi1) = (lo0, hi0);
    // 0·x is 0 for finite x and NaN for ±inf and NaN.
    let (mut nan0, mut nan1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    let zero = _mm256_setzero_pd();
    let mut j = 0;
    // min(x, acc) returns acc when x is NaN: NaN entries are ignored by the extremes.
    while j + 8 <= n {
        // SAFETY: lanes j..j+8 lie inside v.
        let (x0, x1) = unsafe { (_mm256_loadu_pd(p.add(j)), _mm256_loadu_pd(p.add(j + 4))) };
        lo0 = _mm256_min_pd(x0, lo0);
        hi0 = _mm256_max_pd(x0, hi0);
        nan0 = _mm256_fmadd_pd(x0, zero, nan0);
        lo1 = _mm256_min_pd(x1, lo1);
        hi1 = _mm256_max_pd(x1, hi1);
        nan1 = _mm256_fmadd_pd(x1, zero, nan1);
        j += 8;
    }
    while j < n {
        let mask = super::lanes_below(n - j);
        let mpd = _mm256_castsi256_pd(mask);
        // SAFETY: the masked lanes j..j+rem lie inside v.
        let x = unsafe { _mm256_maskload_pd(p.add(j), mask) };
        lo0 = _mm256_min_pd(_mm256_blendv_pd(lo0, x, mpd), lo0);
        hi0 = _mm256_max_pd(_mm256_blendv_pd(hi0, x, mpd), hi0);
        nan0 = _mm256_fmadd_pd(x, zero, nan0);
        j += 4;
    }
    let lo = _mm256_min_pd(lo0, lo1);
    let hi = _mm256_max_pd(hi0, hi1);
    let nan = _mm256_add_pd(nan0, nan1);
    let (mut a, mut b, mut c) = ([0.0f64; 4], [0.0f64; 4], [0.0f64; 4]);
    // SAFETY: each array holds 4 f64.
    unsafe {
        _mm256_storeu_pd(a.as_mut_ptr(), lo);
        _mm256_storeu_pd(b.as_mut_ptr(), hi);
        _mm256_storeu_pd(c.as_mut_ptr(), nan);
    }
    let lo = a
        .iter()
        .fold(f64::INFINITY, |x, &y| if y < x { y } else { x });
    let hi = b
        .iter()
        .fold(f64::NEG_INFINITY, |x, &y| if y > x { y } else { x });
    let finite = c.iter().all(|x| x.is_finite());
    (lo, hi, finite)
}

#[cfg(test)]
mod tests {
    use super::super::{dispatch, SimdTask};
    use super::*;
    use crate::core::testing::simd_levels;

    struct T<'a>(&'a [f64]);
    impl SimdTask for T<'_> {
        type Output = (f64, f64, bool);
        #[inline(always)]
        fn run<M: Fma>(self) -> (f64, f64, bool) {
            min_max_finite::<M>(self.0)
        }
    }

    #[test]
    fn every_level_agrees_with_a_fold() {
        for n in [0usize, 1, 7, 8, 9, 64, 67] {
            let v: Vec<f64> = (0..n).map(|i| (i as f64 * 1.37).sin() * 10.0).collect();
            let want = (
                v.iter().cloned().fold(f64::INFINITY, f64::min),
                v.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            );
            for lvl in simd_levels() {
                let (lo, hi, fin) = dispatch(lvl, T(&v));
                assert_eq!((lo, hi, fin), (want.0, want.1, true), "{lvl:?} n={n}");
                for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                    if n == 0 {
                        continue;
                    }
                    let mut w = v.clone();
                    w[n - 1] = bad;
                    assert!(!dispatch(lvl, T(&w)).2, "{lvl:?} n={n} {bad}");
                }
            }
        }
    }
}
