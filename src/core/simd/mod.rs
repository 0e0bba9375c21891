//! Run-time SIMD dispatch and the vectorisable math the reducers use.
//!
//! Hot loops are written once, over fixed-width lane arrays with an explicit order of
//! operations, and compiled three times: for AVX-512, for AVX2+FMA and for the portable
//! baseline ("scalar"). The two AVX paths use fused multiply-adds ([`Fused`], [`Wide`])
//! and give bitwise-identical results, except where the AVX-512 path runs a kernel
//! written with explicit intrinsics ([`lin_exp_sum`]), which agrees to a few ulp; the
//! portable path uses separate multiplies and adds ([`Unfused`]: a software fma would be
//! slow) and agrees to a few ulp. Rust never
//! reassociates floating-point sums, so each path is deterministic.

use std::sync::atomic::{AtomicU8, Ordering};

use super::error::{invalid, Result};

pub mod dgemm;
mod expsum;
mod minmax;
pub mod rows;
pub mod vmath;
pub use expsum::{lin_exp_in_place, lin_exp_into, lin_exp_sum};
pub use minmax::{min_max, min_max_finite};

/// Instruction-set level a kernel runs at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Portable code (SSE2 on x86-64).
    Scalar = 0,
    /// AVX2 with FMA.
    Avx2 = 1,
    /// AVX-512 (F, DQ, VL, BW).
    Avx512 = 2,
}

impl Level {
    /// Name used by the Python API and `DIVEST_SIMD`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// Parses a name produced by [`Level::name`].
    pub fn parse(s: &str) -> Result<Level> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Ok(Level::Scalar),
            "avx2" => Ok(Level::Avx2),
            "avx512" => Ok(Level::Avx512),
            other => Err(invalid!(
                "simd level must be 'scalar', 'avx2' or 'avx512'; got {other:?}"
            )),
        }
    }
}

/// Best level this CPU supports.
pub fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return Level::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Level::Avx2;
        }
    }
    Level::Scalar
}

const UNSET: u8 = 255;
static CHOSEN: AtomicU8 = AtomicU8::new(UNSET);

fn from_u8(v: u8) -> Level {
    match v {
        2 => Level::Avx512,
        1 => Level::Avx2,
        _ => Level::Scalar,
    }
}

/// Level in use: `set_level`, else `DIVEST_SIMD` (capped at what the CPU has), else detected.
pub fn level() -> Level {
    let v = CHOSEN.load(Ordering::Relaxed);
    if v != UNSET {
        return from_u8(v);
    }
    let best = detected();
    let lvl = std::env::var("DIVEST_SIMD")
        .ok()
        .and_then(|s| Level::parse(&s).ok())
        .map(|l| l.min(best))
        .unwrap_or(best);
    CHOSEN.store(lvl as u8, Ordering::Relaxed);
    lvl
}

/// Forces a level (for testing the paths against each other); `None` restores detection.
pub fn set_level(l: Option<Level>) -> Result<()> {
    match l {
        None => CHOSEN.store(detected() as u8, Ordering::Relaxed),
        Some(l) => {
            if l > detected() {
                return Err(invalid!(
                    "simd level {:?} is not supported by this CPU (best: {:?})",
                    l.name(),
                    detected().name()
                ));
            }
            CHOSEN.store(l as u8, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Multiply-add strategy, chosen per SIMD path.
pub trait Fma: Copy + Send + Sync + 'static {
    /// Whether `ma` is a hardware fused multiply-add (one rounding).
    const FUSED: bool;
    /// Whether the path runs with AVX-512 enabled ([`Wide`]): kernels written with
    /// explicit AVX-512 intrinsics may be called.
    const AVX512: bool = false;
    /// Whether the path runs with AVX2 and FMA enabled ([`Fused`] and [`Wide`]): kernels
    /// written with explicit AVX2 intrinsics may be called.
    const AVX2: bool = false;
    /// a * b + c, fused or not.
    fn ma<T: MulAdd>(a: T, b: T, c: T) -> T;
}

/// Scalar types with a (possibly fused) multiply-add.
pub trait MulAdd: Copy + std::ops::Mul<Output = Self> + std::ops::Add<Output = Self> {
    /// Fused a * b + c (one rounding).
    fn fused(self, b: Self, c: Self) -> Self;
}
impl MulAdd for f64 {
    #[inline(always)]
    fn fused(self, b: f64, c: f64) -> f64 {
        self.mul_add(b, c)
    }
}
impl MulAdd for f32 {
    #[inline(always)]
    fn fused(self, b: f32, c: f32) -> f32 {
        self.mul_add(b, c)
    }
}

/// Fused multiply-add: only inside functions compiled with the `fma` target feature.
#[derive(Clone, Copy, Debug)]
pub struct Fused;
impl Fma for Fused {
    const FUSED: bool = true;
    const AVX2: bool = true;
    #[inline(always)]
    fn ma<T: MulAdd>(a: T, b: T, c: T) -> T {
        a.fused(b, c)
    }
}

/// Fused multiply-add on the AVX-512 path: arithmetic identical to [`Fused`], plus
/// access to the explicit AVX-512 kernels (`M::AVX512`).
#[derive(Clone, Copy, Debug)]
pub struct Wide;
impl Fma for Wide {
    const FUSED: bool = true;
    const AVX512: bool = true;
    const AVX2: bool = true;
    #[inline(always)]
    fn ma<T: MulAdd>(a: T, b: T, c: T) -> T {
        a.fused(b, c)
    }
}

/// Separate multiply and add (portable path).
#[derive(Clone, Copy, Debug)]
pub struct Unfused;
impl Fma for Unfused {
    const FUSED: bool = false;
    #[inline(always)]
    fn ma<T: MulAdd>(a: T, b: T, c: T) -> T {
        a * b + c
    }
}

/// Lanes of the explicit-width loops (one AVX-512 register of f64).
pub const LANES: usize = 8;

/// exp(x) for f64, branch-free so loops over it vectorise. Relative error below 2 ulp on
/// [-708.39, TOP] and 0 below -708.39 (as the table-driven kernels count such terms);
/// above TOP it saturates at exp(TOP). TOP is ln(f64::MAX) ≈ 709.78 on the portable path;
/// on the AVX2 and AVX-512 paths it is 709.43, where 2^n still has an f64: the full range
/// costs one more multiply and integer step per value (7 to 10 % of this function, timed),
/// and their callers (shifted log-domain terms) stay far below it.
#[inline(always)]
pub fn exp<M: Fma>(x: f64) -> f64 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    // ln 2 split so that n * LN2_HI is exact for |n| < 2^20.
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    // Adding 1.5 * 2^52 rounds to the nearest integer and leaves it in the low bits.
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    // The top of the range: ln(f64::MAX) rounded down, or the largest x whose n is 1023.
    let hi = if M::AVX2 {
        709.436
    } else {
        709.782_712_893_384
    };
    // The cut-off below which the result is 0 (n = -1022 down to here).
    const LO: f64 = -708.39;
    let xc = if x > hi { hi } else { x };
    let xc = if xc < LO { LO } else { xc };
    let t = M::ma(xc, LOG2E, SHIFT);
    let nf = t - SHIFT;
    let r = M::ma(nf, -LN2_LO, M::ma(nf, -LN2_HI, xc));
    // Taylor polynomial of degree 12: |r| <= 0.347 keeps the remainder under 2e-16.
    let mut p = 1.0 / 479_001_600.0;
    p = M::ma(p, r, 1.0 / 39_916_800.0);
    p = M::ma(p, r, 1.0 / 3_628_800.0);
    p = M::ma(p, r, 1.0 / 362_880.0);
    p = M::ma(p, r, 1.0 / 40_320.0);
    p = M::ma(p, r, 1.0 / 5_040.0);
    p = M::ma(p, r, 1.0 / 720.0);
    p = M::ma(p, r, 1.0 / 120.0);
    p = M::ma(p, r, 1.0 / 24.0);
    p = M::ma(p, r, 1.0 / 6.0);
    p = M::ma(p, r, 0.5);
    p = M::ma(p, r, 1.0);
    p = M::ma(p, r, 1.0);
    let n = t.to_bits().wrapping_sub(SHIFT.to_bits());
    let y = if M::AVX2 {
        // n in [-1022, 1023]: one scale.
        p * f64::from_bits(n.wrapping_add(1023) << 52)
    } else {
        // n in [-1022, 1024], and 2^1024 has no f64: the power of two goes on in two
        // normal halves, exact (the same bits as one multiply wherever the result is
        // normal). With e = n + 2046 in [1024, 3070] (a logical shift; AVX2 has no
        // 64-bit arithmetic one), 2^n = 2^(e1 - 1023) · 2^(e - e1 - 1023), e1 = e/2.
        let e = n.wrapping_add(2046);
        let e1 = e >> 1;
        (p * f64::from_bits(e1 << 52)) * f64::from_bits((e - e1) << 52)
    };
    if x < LO {
        0.0
    } else {
        y
    }
}

/// Maximum of a slice (-inf when empty), over lanes so the loop vectorises.
#[inline(always)]
pub fn max(v: &[f64]) -> f64 {
    let mut acc = [f64::NEG_INFINITY; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    let mut m = f64::NEG_INFINITY;
    for &a in acc.iter().chain(tail.iter()) {
        if a > m {
            m = a;
        }
    }
    m
}

/// Minimum of a slice (+inf when empty), over lanes so the loop vectorises.
#[inline(always)]
pub fn min(v: &[f64]) -> f64 {
    let mut acc = [f64::INFINITY; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] = if c[l] < acc[l] { c[l] } else { acc[l] };
        }
    }
    let mut m = f64::INFINITY;
    for &a in acc.iter().chain(tail.iter()) {
        if a < m {
            m = a;
        }
    }
    m
}

/// Sum of a slice with a fixed lane order (vectorisable and reproducible).
#[inline(always)]
pub fn sum(v: &[f64]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    finish_lanes(&acc) + tail.iter().sum::<f64>()
}

/// Replaces each `v[j]` by `exp(v[j] - shift)` and returns (sum, sum of squares).
#[inline(always)]
pub fn exp_shift_sums<M: Fma>(v: &mut [f64], shift: f64) -> (f64, f64) {
    // A plain elementwise loop: the loop vectoriser maps it to full-width registers
    // (lane arrays here would be SLP-vectorised at a narrower width). On AVX2 the
    // table-driven exp of `expsum` is faster than the vectorised polynomial.
    lin_exp_in_place::<M>(v, 1.0, -shift);
    sums_sq::<M>(v)
}

/// Sum and sum of squares, lane-ordered.
#[inline(always)]
pub fn sums_sq<M: Fma>(v: &[f64]) -> (f64, f64) {
    let mut s = [0.0f64; LANES];
    let mut s2 = [0.0f64; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            s[l] += c[l];
            s2[l] = M::ma(c[l], c[l], s2[l]);
        }
    }
    let (mut ts, mut ts2) = (0.0, 0.0);
    for &x in tail {
        ts += x;
        ts2 = M::ma(x, x, ts2);
    }
    (finish_lanes(&s) + ts, finish_lanes(&s2) + ts2)
}

/// Pairwise combination of the lane accumulators in a fixed order.
#[inline(always)]
pub fn finish_lanes(a: &[f64; LANES]) -> f64 {
    ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
}

/// The level whose dispatch path runs with the multiply-add flavour `M`.
pub fn level_of<M: Fma>() -> Level {
    if M::AVX512 {
        Level::Avx512
    } else if M::AVX2 {
        Level::Avx2
    } else {
        Level::Scalar
    }
}

/// Lanes `l < rem` set (rem clamped to 0..=4), as a mask of 64-bit lanes: the masked
/// loads and stores of the AVX2 kernels' tails.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) fn lanes_below(rem: usize) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    _mm256_cmpgt_epi64(
        _mm256_set1_epi64x(rem.min(4) as i64),
        _mm256_setr_epi64x(0, 1, 2, 3),
    )
}

/// Work compiled once per SIMD path. Implementations must mark `run` `#[inline(always)]`
/// so that its body (and everything it inlines) is compiled inside the target-feature
/// wrapper of [`dispatch`].
pub trait SimdTask {
    /// What the task returns.
    type Output;
    /// The work, with the multiply-add flavour of the path it runs on.
    fn run<M: Fma>(self) -> Self::Output;
}

/// Runs `task` on the best path `level` allows on this CPU: AVX-512 and AVX2 with fused
/// multiply-adds, or the portable path without.
pub fn dispatch<K: SimdTask>(level: Level, task: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")]
        fn v512<K: SimdTask>(task: K) -> K::Output {
            task.run::<Wide>()
        }
        #[target_feature(enable = "avx2,fma")]
        fn v2<K: SimdTask>(task: K) -> K::Output {
            task.run::<Fused>()
        }
        match level.min(detected()) {
            // SAFETY: the level is capped at what the CPU reports.
            Level::Avx512 => unsafe { v512(task) },
            // SAFETY: as above.
            Level::Avx2 => unsafe { v2(task) },
            Level::Scalar => task.run::<Unfused>(),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = level;
        task.run::<Unfused>()
    }
}

/// Defines `fn name(level, args...) -> ret` that runs `body::<M>(args...)` on the SIMD
/// path `level` allows: the fixed-signature counterpart of [`dispatch`], for non-generic
/// kernels with many arguments.
macro_rules! simd_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident => $body:ident ($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(level: $crate::core::simd::Level, $($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn v512($($arg: $ty),*) -> $ret {
                    $body::<$crate::core::simd::Wide>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn v2($($arg: $ty),*) -> $ret {
                    $body::<$crate::core::simd::Fused>($($arg),*)
                }
                match level.min($crate::core::simd::detected()) {
                    // SAFETY: the level is capped at what the CPU reports.
                    $crate::core::simd::Level::Avx512 => unsafe { v512($($arg),*) },
                    // SAFETY: as above.
                    $crate::core::simd::Level::Avx2 => unsafe { v2($($arg),*) },
                    $crate::core::simd::Level::Scalar => {
                        $body::<$crate::core::simd::Unfused>($($arg),*)
                    }
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = level;
                $body::<$crate::core::simd::Unfused>($($arg),*)
            }
        }
    };
}
pub(crate) use simd_fn;

/// Runs `exp` over a slice at a given level (used to test the paths against each other).
pub fn exp_slice_at(level: Level, v: &mut [f64]) {
    struct ExpTask<'a>(&'a mut [f64]);
    impl SimdTask for ExpTask<'_> {
        type Output = ();
        #[inline(always)]
        fn run<M: Fma>(self) {
            for x in self.0.iter_mut() {
                *x = exp::<M>(*x);
            }
        }
    }
    dispatch(level, ExpTask(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::{simd_levels, ALL_LEVELS};

    #[test]
    fn exp_matches_std() {
        let mut worst = 0.0f64;
        let mut x = -708.0;
        while x < 709.0 {
            let got = exp::<Unfused>(x);
            let want = x.exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 4e-16, "worst relative error {worst}");
        assert_eq!(exp::<Unfused>(0.0), 1.0);
        assert_eq!(exp::<Unfused>(-800.0), 0.0);
        assert_eq!(exp::<Unfused>(f64::NEG_INFINITY), 0.0);
        assert!(exp::<Unfused>(800.0).is_finite());
    }

    /// The ends of the range against exp at 40 digits (mpmath): on the portable path up
    /// to ln(f64::MAX) (was capped at exp(709) = 8.2e307), on the AVX paths up to 709.43;
    /// at every level down to the cut-off at -708.39 (was clamped at -708).
    #[test]
    fn ends_of_the_range_match_mpmath_at_every_level() {
        // (x, exp(x)) from mpmath (mp.dps = 40) at the f64 x, rounded to f64.
        let portable_top = [
            (709.7, 1.654_984_027_680_264_4e308),
            (709.78, 1.792_822_794_394_515_5e308),
            (709.782, 1.796_412_028_020_638_7e308),
        ];
        let cases = [
            (709.4, 1.226_042_322_642_672_7e308),
            (708.0, 3.023_383_144_276_055e307),
            (-707.95, 3.477_134_872_456_602_7e-308),
            (-708.06, 3.114_936_111_776_876e-308),
            (-708.3, 2.450_295_530_965_988e-308),
            (-708.38, 2.261_907_858_112_732_6e-308),
        ];
        for lvl in simd_levels() {
            let scalar = lvl == Level::Scalar;
            let all: Vec<(f64, f64)> = cases
                .iter()
                .chain(if scalar { &portable_top[..] } else { &[] })
                .copied()
                .collect();
            let mut v: Vec<f64> = all.iter().map(|c| c.0).collect();
            exp_slice_at(lvl, &mut v);
            for (&(x, want), got) in all.iter().zip(&v) {
                assert!(
                    (got - want).abs() <= 4e-16 * want,
                    "{lvl:?} exp({x}) = {got}, want {want}"
                );
            }
            let mut v = vec![709.783, 710.0, 1e300, f64::INFINITY, -708.4, -745.0];
            exp_slice_at(lvl, &mut v);
            // exp(709.782712893384), the largest f64 below ln(f64::MAX), and exp(709.436)
            // (mpmath).
            let top = if scalar {
                1.797_693_134_862_273_2e308
            } else {
                1.270_983_941_812_912e308
            };
            for &g in &v[..4] {
                assert!(
                    g.is_finite() && (g - top).abs() <= 4e-16 * top,
                    "{lvl:?} {g}"
                );
            }
            assert_eq!(&v[4..], &[0.0, 0.0], "{lvl:?}");
        }
    }

    #[test]
    fn every_level_matches_scalar_including_tails() {
        for n in [0usize, 1, 7, 8, 9, 15, 16, 17, 63, 1000, 1003] {
            let base: Vec<f64> = (0..n).map(|i| -700.0 + 1.39 * i as f64 % 1400.0).collect();
            let mut scalar = base.clone();
            exp_slice_at(Level::Scalar, &mut scalar);
            let mut fused = Vec::new();
            for lvl in simd_levels().filter(|&l| l != Level::Scalar) {
                let mut v = base.clone();
                exp_slice_at(lvl, &mut v);
                for (a, b) in v.iter().zip(&scalar) {
                    assert!(
                        (a - b).abs() <= 4e-16 * b.abs(),
                        "level {lvl:?}, n {n}: {a} vs {b}"
                    );
                }
                fused.push(v);
            }
            if fused.len() == 2 {
                assert_eq!(fused[0], fused[1], "AVX2 and AVX-512 paths differ");
            }
        }
    }

    #[test]
    fn sums_and_max() {
        let v: Vec<f64> = (0..37).map(|i| (i as f64 * 0.37).sin()).collect();
        let want: f64 = v.iter().sum();
        assert!((sum(&v) - want).abs() < 1e-13);
        let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(max(&v), m);
        assert_eq!(max(&[]), f64::NEG_INFINITY);
        let mut w = v.clone();
        let (s, s2) = exp_shift_sums::<Unfused>(&mut w, 1.0);
        let ws: f64 = v.iter().map(|x| (x - 1.0).exp()).sum();
        let ws2: f64 = v.iter().map(|x| (2.0 * (x - 1.0)).exp()).sum();
        assert!((s - ws).abs() < 1e-13 && (s2 - ws2).abs() < 1e-13);
    }

    #[test]
    fn level_names_round_trip() {
        for l in ALL_LEVELS {
            assert_eq!(Level::parse(l.name()).unwrap(), l);
        }
        assert!(Level::parse("sse9").is_err());
    }
}
