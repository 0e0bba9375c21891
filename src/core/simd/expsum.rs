//! Sums of exponentials of an affine function of the distances: the inner loop of the
//! bandwidth grid, which re-evaluates a Gaussian kernel at many scales over the same
//! tile of squared distances.
//!
//! On the AVX-512 path this is written with explicit intrinsics: a 16-entry table of
//! 2^(j/16) held in two registers (one permute per lookup) cuts the polynomial to degree
//! 6, and `vscalefpd` applies the power of two with correct underflow, so no clamping
//! or blending is needed. The AVX2 path has the same design on four lanes: a table of
//! 2^(j/8) in two registers of four (two `vpermd` on its 32-bit halves and an immediate blend per lookup), a degree-7
//! polynomial, and the power of two built in the exponent bits (0 for terms below
//! e^-708.4). The portable path uses [`exp`](super::exp) over a buffer.

use super::{exp, sum, Fma};

/// Σ_j exp(c·d_j + w_j + b) over j ≠ `skip` (w_j = 0 when `w` is `None`).
///
/// The caller keeps every term at most about e^700 (log-sum-exp shifts by an upper bound
/// of the largest term). The relative error of a term with exponent x is below
/// 2e-15 + 3e-16·|x| (the conditioning of exp at x, as if x carried one rounding): about
/// 1e-14 for the terms within e^-40 of the largest. Terms under e^-708 count as zero. Entries of `w` may be -inf (zero
/// weights). `buf` (at least `d.len()` long) is scratch for the portable paths.
#[inline(always)]
pub fn lin_exp_sum<M: Fma>(
    d: &[f64],
    w: Option<&[f64]>,
    c: f64,
    b: f64,
    skip: Option<usize>,
    buf: &mut [f64],
) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if M::AVX512 {
        // SAFETY: M::AVX512 is true only on the dispatch path that runs after the CPU
        // reported AVX-512F/DQ (see `dispatch` and `simd_fn!`).
        return unsafe { sum512(d, w, c, b, skip.unwrap_or(usize::MAX)) };
    }
    #[cfg(target_arch = "x86_64")]
    if M::AVX2 {
        // SAFETY: M::AVX2 is true only on the dispatch paths that run after the CPU
        // reported AVX2 and FMA.
        return unsafe { sum_avx2(d, w, c, b, skip.unwrap_or(usize::MAX)) };
    }
    let v = &mut buf[..d.len()];
    match w {
        Some(w) => {
            for j in 0..d.len() {
                v[j] = exp::<M>(M::ma(c, d[j], w[j] + b));
            }
        }
        None => {
            for j in 0..d.len() {
                v[j] = exp::<M>(M::ma(c, d[j], b));
            }
        }
    }
    if let Some(s) = skip {
        if s < v.len() {
            v[s] = 0.0;
        }
    }
    sum(v)
}

/// 2^(j/16), j = 0..15, correctly rounded.
#[cfg(target_arch = "x86_64")]
const EXP2_SIXTEENTHS: [f64; 16] = [
    1.0,
    1.044_273_782_427_413_8,
    1.090_507_732_665_257_7,
    1.138_788_634_756_691_6,
    1.189_207_115_002_721,
    1.241_857_812_073_484,
    1.296_839_554_651_009_6,
    1.354_255_546_936_892_7,
    std::f64::consts::SQRT_2,
    1.476_826_145_939_499_3,
    1.542_210_825_407_940_7,
    1.610_490_331_949_254_3,
    1.681_792_830_507_429,
    1.756_252_160_373_299_5,
    1.834_008_086_409_342_4,
    1.915_206_561_397_147_4,
];

/// Taylor coefficients of exp(f·ln2/16) in f, degree 0..6: |f| <= 1/2 leaves a
/// remainder below 5e-16.
#[cfg(target_arch = "x86_64")]
const POLY: [f64; 7] = [
    1.0,
    0.043_321_698_784_996_58,
    0.000_938_384_792_808_987_2,
    1.355_080_777_949_745_7e-5,
    1.467_610_032_291_943e-7,
    1.271_587_195_055_813_1e-9,
    9.181_219_573_844_438e-12,
];

/// 16·log2(e): exponents in units of 1/16 of a binary order of magnitude.
#[cfg(target_arch = "x86_64")]
const K16: f64 = 16.0 * std::f64::consts::LOG2_E;

/// The table of 2^(j/16) with j·2^48 taken from each entry's bits, in two registers:
/// adding k·2^48 (k = 16·floor(k/16) + j) to entry j adds floor(k/16) to its exponent.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn table() -> (std::arch::x86_64::__m512i, std::arch::x86_64::__m512i) {
    use std::arch::x86_64::*;
    let mut t = [0i64; 16];
    for (j, x) in t.iter_mut().enumerate() {
        *x = EXP2_SIXTEENTHS[j].to_bits().wrapping_sub((j as u64) << 48) as i64;
    }
    // SAFETY: the table has 16 entries, read as two registers of 8.
    unsafe {
        (
            _mm512_loadu_si512(t.as_ptr().cast()),
            _mm512_loadu_si512(t.as_ptr().add(8).cast()),
        )
    }
}

/// 2^(u/16) per lane for u < 16·1024 (+inf from there with `HI`): exactly 0 for u <= -16·1023 (u = -inf included),
/// below 2^-1022 (about e^-708.4) for u < -16·1022.
///
/// As [`pow2_8`] with 16 entries: one `vpermt2q` reads the table entry, an integer add of
/// k·2^48 applies the power of two, the degree-6 polynomial runs in Estrin's form.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
#[inline]
fn pow2_16<const HI: bool>(
    u: std::arch::x86_64::__m512d,
    tlo: std::arch::x86_64::__m512i,
    thi: std::arch::x86_64::__m512i,
) -> std::arch::x86_64::__m512d {
    use std::arch::x86_64::*;
    // Adding 1.5·2^52 rounds to an integer and leaves it, two's complement, in the low
    // mantissa bits: the permute reads the table index from the low four.
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    let mut u = _mm512_max_pd(u, _mm512_set1_pd(-16.0 * 1023.0));
    if HI {
        u = _mm512_min_pd(u, _mm512_set1_pd(16.0 * 1024.0));
    }
    let tb = _mm512_castpd_si512(_mm512_add_pd(u, _mm512_set1_pd(SHIFT)));
    let f = _mm512_sub_pd(u, _mm512_roundscale_pd::<0x08>(u));
    let c = |i: usize| _mm512_set1_pd(POLY[i]);
    let f2 = _mm512_mul_pd(f, f);
    let a01 = _mm512_fmadd_pd(c(1), f, c(0));
    let a23 = _mm512_fmadd_pd(c(3), f, c(2));
    let a45 = _mm512_fmadd_pd(c(5), f, c(4));
    let f4 = _mm512_mul_pd(f2, f2);
    let a03 = _mm512_fmadd_pd(a23, f2, a01);
    let a46 = _mm512_fmadd_pd(c(6), f2, a45);
    let p = _mm512_fmadd_pd(a46, f4, a03);
    let tab = _mm512_permutex2var_epi64(tlo, tb, thi);
    let scale = _mm512_add_epi64(tab, _mm512_slli_epi64::<48>(tb));
    _mm512_mul_pd(p, _mm512_castsi512_pd(scale))
}

/// `out_j = exp(c·d_j + b)`, with the accuracy of [`lin_exp_sum`]'s terms; callers keep
/// the exponents below about 709.7 (the AVX2 and AVX-512 paths are exact up to 709.74
/// and 709.76 and give meaningless values above, skipping that clamp; the portable path
/// is exact up to ln(f64::MAX) ≈ 709.78 and saturates above).
#[inline(always)]
pub fn lin_exp_into<M: Fma>(d: &[f64], c: f64, b: f64, out: &mut [f64]) {
    let out = &mut out[..d.len()];
    #[cfg(target_arch = "x86_64")]
    if M::AVX512 {
        // SAFETY: as in `lin_exp_sum`.
        unsafe { into512(d, c, b, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if M::AVX2 {
        // SAFETY: as in `lin_exp_sum`.
        unsafe { into_avx2(d, c, b, out) };
        return;
    }
    for (o, &x) in out.iter_mut().zip(d) {
        *o = exp::<M>(M::ma(c, x, b));
    }
}

/// `v_j = exp(c·v_j + b)` in place, with the accuracy of [`lin_exp_into`] on the AVX2
/// path (its table-driven exp) and of [`exp`](super::exp) on the others; terms under
/// e^-708.4 are 0.
#[inline(always)]
pub fn lin_exp_in_place<M: Fma>(v: &mut [f64], c: f64, b: f64) {
    #[cfg(target_arch = "x86_64")]
    if M::AVX2 && !M::AVX512 {
        // SAFETY: M::AVX2 holds only on the paths that run after the CPU reported AVX2
        // and FMA.
        unsafe { in_place_avx2(v, c, b) };
        return;
    }
    for x in v.iter_mut() {
        *x = exp::<M>(M::ma(c, *x, b));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn in_place_avx2(v: &mut [f64], c: f64, b: f64) {
    use std::arch::x86_64::*;
    let n = v.len();
    let p = v.as_mut_ptr();
    // c·x + b first, then the scale: b·K8 alone can overflow where c·x + b does not
    // (the log-domain rows pass b = -shift with |shift| up to 1e308).
    let cv = _mm256_set1_pd(c);
    let bv = _mm256_set1_pd(b);
    let kv = _mm256_set1_pd(K8);
    let (tlo, thi) = table8();
    let mut j = 0;
    while j + 4 <= n {
        // SAFETY: lanes j..j+4 lie inside v.
        unsafe {
            let u = _mm256_mul_pd(_mm256_fmadd_pd(_mm256_loadu_pd(p.add(j)), cv, bv), kv);
            _mm256_storeu_pd(p.add(j), pow2_8::<true>(u, tlo, thi));
        }
        j += 4;
    }
    if j < n {
        let mask = super::lanes_below(n - j);
        // SAFETY: the masked lanes j..n lie inside v.
        unsafe {
            let u = _mm256_mul_pd(
                _mm256_fmadd_pd(_mm256_maskload_pd(p.add(j), mask), cv, bv),
                kv,
            );
            _mm256_maskstore_pd(p.add(j), mask, pow2_8::<true>(u, tlo, thi));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
fn into512(d: &[f64], c: f64, b: f64, out: &mut [f64]) {
    use std::arch::x86_64::*;
    let n = d.len().min(out.len());
    let cv = _mm512_set1_pd(c * K16);
    let bv = _mm512_set1_pd(b * K16);
    let (tlo, thi) = table();
    let mut j = 0;
    while j < n {
        let rem = n - j;
        let mask: __mmask8 = if rem >= 8 { 0xff } else { (1u8 << rem) - 1 };
        // SAFETY: masked lanes j..j+min(8, rem) lie inside d and out.
        unsafe {
            let u = _mm512_fmadd_pd(_mm512_maskz_loadu_pd(mask, d.as_ptr().add(j)), cv, bv);
            _mm512_mask_storeu_pd(out.as_mut_ptr().add(j), mask, pow2_16::<false>(u, tlo, thi));
        }
        j += 8;
    }
}

/// The AVX-512 body of [`lin_exp_sum`]. Works in units of 1/16 of a binary order of
/// magnitude: u = 16·log2(e)·(c·d + w + b) = k + f with k an integer and |f| <= 1/2, and
/// exp(...) = 2^floor(k/16) · 2^((k mod 16)/16) · 2^(f/16).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
fn sum512(d: &[f64], w: Option<&[f64]>, c: f64, b: f64, skip: usize) -> f64 {
    use std::arch::x86_64::*;
    let n = d.len();
    let cv = _mm512_set1_pd(c * K16);
    let bv = _mm512_set1_pd(b * K16);
    let kv = _mm512_set1_pd(K16);
    let (tlo, thi) = table();
    let mut acc = _mm512_setzero_pd();
    let mut j = 0;
    while j < n {
        let rem = n - j;
        let mut mask: __mmask8 = if rem >= 8 { 0xff } else { (1u8 << rem) - 1 };
        if skip.wrapping_sub(j) < 8 {
            mask &= !(1u8 << (skip - j));
        }
        // SAFETY: masked loads touch only lanes j..j+rem, inside d (and w, same length).
        let mut u =
            unsafe { _mm512_fmadd_pd(_mm512_maskz_loadu_pd(mask, d.as_ptr().add(j)), cv, bv) };
        if let Some(w) = w {
            // SAFETY: as above; callers pass w as long as d.
            let wv = unsafe { _mm512_maskz_loadu_pd(mask, w.as_ptr().add(j)) };
            u = _mm512_fmadd_pd(wv, kv, u);
        }
        let y = pow2_16::<false>(u, tlo, thi);
        acc = _mm512_mask_add_pd(acc, mask, acc, y);
        j += 8;
    }
    let mut lanes = [0.0f64; 8];
    // SAFETY: lanes holds 8 f64.
    unsafe { _mm512_storeu_pd(lanes.as_mut_ptr(), acc) };
    super::finish_lanes(&lanes)
}

/// 8·log2(e): exponents in units of 1/8 of a binary order of magnitude (AVX2 path).
#[cfg(target_arch = "x86_64")]
const K8: f64 = 8.0 * std::f64::consts::LOG2_E;

/// Taylor coefficients of exp(f·ln2/8) in f, degree 0..7: |f| <= 1/2 leaves a remainder
/// below 4e-16.
#[cfg(target_arch = "x86_64")]
const POLY8: [f64; 8] = [
    1.0,
    0.086_643_397_569_993_16,
    0.003_753_539_171_235_948_8,
    0.000_108_406_462_235_979_65,
    2.348_176_051_667_108_6e-6,
    4.069_079_024_178_602e-8,
    5.875_980_527_260_44e-10,
    7.273_070_241_956_635e-12,
];

/// The table of 2^(j/8) (the even entries of [`EXP2_SIXTEENTHS`]) with j·2^49 taken
/// from each entry's bits, split into two registers of eight 32-bit halves: the low
/// halves of the eight entries, and the high halves. One `vpermd` per register reads
/// entry k mod 8 (its low three index bits) and an immediate blend joins the halves;
/// adding k·2^49 (k = 8·floor(k/8) + j) to entry j then adds floor(k/8) to its exponent.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn table8() -> (std::arch::x86_64::__m256i, std::arch::x86_64::__m256i) {
    use std::arch::x86_64::*;
    let t = |j: usize| {
        EXP2_SIXTEENTHS[2 * j]
            .to_bits()
            .wrapping_sub((j as u64) << 49)
    };
    let lo = |j: usize| t(j) as u32 as i32;
    let hi = |j: usize| (t(j) >> 32) as u32 as i32;
    (
        _mm256_setr_epi32(lo(0), lo(1), lo(2), lo(3), lo(4), lo(5), lo(6), lo(7)),
        _mm256_setr_epi32(hi(0), hi(1), hi(2), hi(3), hi(4), hi(5), hi(6), hi(7)),
    )
}

/// The first stage of [`pow2_8`]: the clamped u rounded to an integer k (left in the
/// low bits of `t`, see below) and the reduced argument f = u - k, |f| <= 1/2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn pow2_8_round<const HI: bool>(
    u: std::arch::x86_64::__m256d,
) -> (std::arch::x86_64::__m256d, std::arch::x86_64::__m256i) {
    use std::arch::x86_64::*;
    // Adding 1.5·2^52 rounds to an integer k and leaves the bits 0x4338… + k.
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    // max(NaN, LO) is LO.
    const LO: f64 = -8.0 * 1023.0;
    let mut u = _mm256_max_pd(u, _mm256_set1_pd(LO));
    if HI {
        u = _mm256_min_pd(u, _mm256_set1_pd(8.0 * 1024.0));
    }
    let t = _mm256_add_pd(u, _mm256_set1_pd(SHIFT));
    let f = _mm256_sub_pd(
        u,
        _mm256_round_pd::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(u),
    );
    (f, _mm256_castpd_si256(t))
}

/// The middle stage of [`pow2_8`]: f², the four degree-1 pairs of the polynomial
/// (Estrin's form), and the scale 2^(k/8) from the table.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn pow2_8_mid(
    f: std::arch::x86_64::__m256d,
    tb: std::arch::x86_64::__m256i,
    tlo: std::arch::x86_64::__m256i,
    thi: std::arch::x86_64::__m256i,
) -> [std::arch::x86_64::__m256d; 6] {
    use std::arch::x86_64::*;
    let c = |i: usize| _mm256_set1_pd(POLY8[i]);
    let f2 = _mm256_mul_pd(f, f);
    let a01 = _mm256_fmadd_pd(c(1), f, c(0));
    let a23 = _mm256_fmadd_pd(c(3), f, c(2));
    let a45 = _mm256_fmadd_pd(c(5), f, c(4));
    let a67 = _mm256_fmadd_pd(c(7), f, c(6));
    // k (two's complement) is the low 32-bit half of each lane of tb: copied to both
    // halves, it indexes the low-half table for the low half and the high-half table
    // for the high half.
    let idx = _mm256_shuffle_epi32::<0xa0>(tb);
    let tab = _mm256_blend_epi32::<0xaa>(
        _mm256_permutevar8x32_epi32(tlo, idx),
        _mm256_permutevar8x32_epi32(thi, idx),
    );
    // tb << 49 is k·2^49 modulo 2^64 (the bits of 0x4338… fall off).
    let scale = _mm256_castsi256_pd(_mm256_add_epi64(tab, _mm256_slli_epi64::<49>(tb)));
    [f2, a01, a23, a45, a67, scale]
}

/// The last stage of [`pow2_8`]: the polynomial's upper levels and the scale.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn pow2_8_finish(m: [std::arch::x86_64::__m256d; 6]) -> std::arch::x86_64::__m256d {
    use std::arch::x86_64::*;
    let [f2, a01, a23, a45, a67, scale] = m;
    let f4 = _mm256_mul_pd(f2, f2);
    let a03 = _mm256_fmadd_pd(a23, f2, a01);
    let a47 = _mm256_fmadd_pd(a67, f2, a45);
    let p = _mm256_fmadd_pd(a47, f4, a03);
    _mm256_mul_pd(p, scale)
}

/// 2^(u/8) per lane on AVX2 for u <= 8·1024: exactly 0 for u <= -8·1023 (NaN and -inf
/// included), below 2^-1022 (about e^-708.4) for u < -8·1022.
///
/// u = k + f with k an integer and |f| <= 1/2; 2^(u/8) = 2^floor(k/8) · 2^((k mod 8)/8) ·
/// 2^(f/8). The table entry comes from two `vpermd` (one on the low 32-bit halves of the
/// eight entries, one on the high halves) and an immediate blend ([`table8`]); the power
/// of two is fused in by one integer add of k·2^49 to the entry's bits. u is clamped
/// below at -8·1023, where that add gives the bits of +0; between -8·1023 and -8·1022 it
/// gives a subnormal below 2^-1022. The polynomial runs in Estrin's form (depth 3
/// multiply-adds instead of 7), so that more vectors overlap in the scheduler. `HI`:
/// clamp above at 8·1024 (+inf from there); without it, u above 8·1024 gives garbage,
/// which the exp-sum's contract (terms at most about e^700) rules out. The three stages
/// ([`pow2_8_round`], [`pow2_8_mid`], [`pow2_8_finish`]) are separate so that the
/// exp-sum can run them on three consecutive vectors at once.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn pow2_8<const HI: bool>(
    u: std::arch::x86_64::__m256d,
    tlo: std::arch::x86_64::__m256i,
    thi: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256d {
    let (f, tb) = pow2_8_round::<HI>(u);
    pow2_8_finish(pow2_8_mid(f, tb, tlo, thi))
}

/// The AVX2 body of [`lin_exp_sum`]: [`pow2_8`] over four lanes, the skipped lane
/// cleared, masked loads for the tail.
///
/// The full chunks run software-pipelined: each step rounds chunk j + 2, runs the middle
/// stage of chunk j + 1 and finishes chunk j, so that the operations dispatched together
/// do not wait on each other (the scheduler, not the FMA pipes, bounded the plain loop).
/// The terms are added in the same order as chunk by chunk: the result is unchanged.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn sum_avx2(d: &[f64], w: Option<&[f64]>, c: f64, b: f64, skip: usize) -> f64 {
    use std::arch::x86_64::*;
    let n = d.len();
    let cv = _mm256_set1_pd(c * K8);
    let bv = _mm256_set1_pd(b * K8);
    let kv = _mm256_set1_pd(K8);
    let (tlo, thi) = table8();
    let lane = _mm256_setr_epi64x(0, 1, 2, 3);
    // The lane mask of a chunk: the skipped entry cleared when it lies in the chunk.
    let keep = |j: usize, mask: __m256i| {
        if skip.wrapping_sub(j) < 4 {
            let s = _mm256_cmpeq_epi64(_mm256_set1_epi64x((skip - j) as i64), lane);
            _mm256_andnot_si256(s, mask)
        } else {
            mask
        }
    };
    // A finished chunk's terms, the skipped one cleared.
    let term = |j: usize, y: __m256d| {
        if skip.wrapping_sub(j) < 4 {
            _mm256_and_pd(y, _mm256_castsi256_pd(keep(j, _mm256_set1_epi64x(-1))))
        } else {
            y
        }
    };
    // The first stage of the full chunk at j.
    let round = |j: usize| {
        // SAFETY: the callers pass j + 4 <= n: lanes j..j+4 lie inside d (and w, as
        // long as d).
        let mut u = unsafe { _mm256_fmadd_pd(_mm256_loadu_pd(d.as_ptr().add(j)), cv, bv) };
        if let Some(w) = w {
            // SAFETY: as above.
            u = _mm256_fmadd_pd(unsafe { _mm256_loadu_pd(w.as_ptr().add(j)) }, kv, u);
        }
        pow2_8_round::<false>(u)
    };
    let mut acc = _mm256_setzero_pd();
    let full = n / 4 * 4;
    let mut j = 0;
    if full >= 8 {
        let (f, tb) = round(0);
        let mut m = pow2_8_mid(f, tb, tlo, thi);
        let (mut f, mut tb) = round(4);
        j = 8;
        while j < full {
            let next = round(j);
            let m1 = pow2_8_mid(f, tb, tlo, thi);
            acc = _mm256_add_pd(acc, term(j - 8, pow2_8_finish(m)));
            m = m1;
            (f, tb) = next;
            j += 4;
        }
        acc = _mm256_add_pd(acc, term(j - 8, pow2_8_finish(m)));
        let y = pow2_8_finish(pow2_8_mid(f, tb, tlo, thi));
        acc = _mm256_add_pd(acc, term(j - 4, y));
    }
    while j + 4 <= n {
        let (f, tb) = round(j);
        acc = _mm256_add_pd(acc, term(j, pow2_8_finish(pow2_8_mid(f, tb, tlo, thi))));
        j += 4;
    }
    if j < n {
        let mask = keep(j, super::lanes_below(n - j));
        // SAFETY: the masked loads touch only lanes j..n, inside d (and w).
        let mut u = unsafe { _mm256_fmadd_pd(_mm256_maskload_pd(d.as_ptr().add(j), mask), cv, bv) };
        if let Some(w) = w {
            // SAFETY: as above.
            u = _mm256_fmadd_pd(
                unsafe { _mm256_maskload_pd(w.as_ptr().add(j), mask) },
                kv,
                u,
            );
        }
        let y = _mm256_and_pd(pow2_8::<false>(u, tlo, thi), _mm256_castsi256_pd(mask));
        acc = _mm256_add_pd(acc, y);
    }
    let mut l = [0.0f64; 4];
    // SAFETY: l holds 4 f64.
    unsafe { _mm256_storeu_pd(l.as_mut_ptr(), acc) };
    (l[0] + l[2]) + (l[1] + l[3])
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn into_avx2(d: &[f64], c: f64, b: f64, out: &mut [f64]) {
    use std::arch::x86_64::*;
    let n = d.len().min(out.len());
    let cv = _mm256_set1_pd(c * K8);
    let bv = _mm256_set1_pd(b * K8);
    let (tlo, thi) = table8();
    let mut j = 0;
    while j + 4 <= n {
        // SAFETY: lanes j..j+4 lie inside d and out.
        unsafe {
            let u = _mm256_fmadd_pd(_mm256_loadu_pd(d.as_ptr().add(j)), cv, bv);
            _mm256_storeu_pd(out.as_mut_ptr().add(j), pow2_8::<false>(u, tlo, thi));
        }
        j += 4;
    }
    if j < n {
        let mask = super::lanes_below(n - j);
        // SAFETY: the masked lanes j..n lie inside d and out.
        unsafe {
            let u = _mm256_fmadd_pd(_mm256_maskload_pd(d.as_ptr().add(j), mask), cv, bv);
            _mm256_maskstore_pd(out.as_mut_ptr().add(j), mask, pow2_8::<false>(u, tlo, thi));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{dispatch, Level, SimdTask};
    use super::*;
    use crate::core::testing::simd_levels;

    struct Task<'a> {
        d: &'a [f64],
        w: Option<&'a [f64]>,
        c: f64,
        b: f64,
        skip: Option<usize>,
    }
    impl SimdTask for Task<'_> {
        type Output = f64;
        #[inline(always)]
        fn run<M: Fma>(self) -> f64 {
            let mut buf = vec![0.0; self.d.len()];
            lin_exp_sum::<M>(self.d, self.w, self.c, self.b, self.skip, &mut buf)
        }
    }

    fn run_at(
        lvl: Level,
        d: &[f64],
        w: Option<&[f64]>,
        c: f64,
        b: f64,
        skip: Option<usize>,
    ) -> f64 {
        dispatch(lvl, Task { d, w, c, b, skip })
    }

    fn reference(d: &[f64], w: Option<&[f64]>, c: f64, b: f64, skip: Option<usize>) -> f64 {
        (0..d.len())
            .filter(|&j| Some(j) != skip)
            .map(|j| (c * d[j] + w.map_or(0.0, |w| w[j]) + b).exp())
            .sum()
    }

    #[test]
    fn every_level_matches_libm_including_tails_skips_and_zero_weights() {
        for n in [0usize, 1, 5, 8, 9, 16, 23, 256] {
            let d: Vec<f64> = (0..n)
                .map(|i| (i as f64 * 0.731).sin().abs() * 40.0)
                .collect();
            let mut w: Vec<f64> = (0..n)
                .map(|i| -(i as f64 * 0.37).cos().abs() * 3.0)
                .collect();
            if n > 3 {
                w[2] = f64::NEG_INFINITY;
            }
            for (c, b) in [(-0.5, 0.0), (-17.3, 2.0), (-1e-3, -1.0), (-200.0, 650.0)] {
                for skip in [None, Some(0), Some(n / 2), Some(n.saturating_sub(1))] {
                    for wo in [None, Some(&w[..])] {
                        let want = reference(&d, wo, c, b, skip);
                        for lvl in simd_levels() {
                            let got = run_at(lvl, &d, wo, c, b, skip);
                            let xmax = (0..n).map(|j| (c * d[j] + b).abs()).fold(0.0f64, f64::max);
                            let tol = (2e-15 + 3e-16 * xmax) * want.abs() + 1e-300;
                            assert!(
                                (got - want).abs() <= tol,
                                "{lvl:?} n={n} c={c} b={b} skip={skip:?}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    struct Into<'a>(&'a [f64], f64, f64);
    impl SimdTask for Into<'_> {
        type Output = Vec<f64>;
        #[inline(always)]
        fn run<M: Fma>(self) -> Vec<f64> {
            let mut out = vec![f64::NAN; self.0.len()];
            lin_exp_into::<M>(self.0, self.1, self.2, &mut out);
            out
        }
    }

    #[test]
    fn into_matches_libm_including_tails() {
        for n in [0usize, 3, 8, 13, 64] {
            let d: Vec<f64> = (0..n)
                .map(|i| (i as f64 * 0.913).sin().abs() * 7.0)
                .collect();
            for (c, b) in [(-20.0, 3.0), (-0.3, 0.0), (-1e3, 0.0)] {
                for lvl in simd_levels() {
                    let got = dispatch(lvl, Into(&d, c, b));
                    for (g, x) in got.iter().zip(&d) {
                        let want = (c * x + b).exp();
                        let tol = (2e-15 + 3e-16 * (c * x + b).abs()) * want + 1e-300;
                        assert!((g - want).abs() <= tol, "{lvl:?}: {g} vs {want}");
                    }
                }
            }
        }
    }

    /// The AVX2 exp-sum runs its full chunks software-pipelined (three chunks in flight):
    /// it must add exactly the terms `lin_exp_into` gives (the same `pow2_8` on the same
    /// u), chunk by chunk in four lanes, for every length around the pipeline's start and
    /// end and a skipped term in every position (first, middle and last stage).
    #[test]
    fn avx2_pipelined_sum_is_the_chunkwise_sum_of_its_terms() {
        if !simd_levels().any(|l| l == Level::Avx2) {
            return;
        }
        for n in 0usize..=29 {
            let d: Vec<f64> = (0..n)
                .map(|i| (i as f64 * 1.37).sin().abs() * 30.0)
                .collect();
            for (c, b) in [(-0.5, 3.0), (-40.0, 0.0), (-3.0, -700.0)] {
                let terms = dispatch(Level::Avx2, Into(&d, c, b));
                for skip in (0..n).map(Some).chain([None]) {
                    let mut lanes = [0.0f64; 4];
                    for (j, &t) in terms.iter().enumerate() {
                        if Some(j) != skip {
                            lanes[j % 4] += t;
                        }
                    }
                    let want = (lanes[0] + lanes[2]) + (lanes[1] + lanes[3]);
                    let got = run_at(Level::Avx2, &d, None, c, b, skip);
                    assert_eq!(got.to_bits(), want.to_bits(), "n={n} c={c} skip={skip:?}");
                    // And against libm, as the other tests do.
                    let r = reference(&d, None, c, b, skip);
                    let xmax = d.iter().map(|x| (c * x + b).abs()).fold(0.0f64, f64::max);
                    let tol = (2e-15 + 3e-16 * xmax) * r + 1e-300;
                    assert!((got - r).abs() <= tol, "n={n}: {got} vs {r}");
                }
            }
        }
    }

    struct InPlace(Vec<f64>, f64, f64);
    impl SimdTask for InPlace {
        type Output = Vec<f64>;
        #[inline(always)]
        fn run<M: Fma>(mut self) -> Vec<f64> {
            lin_exp_in_place::<M>(&mut self.0, self.1, self.2);
            self.0
        }
    }

    #[test]
    fn in_place_matches_libm_including_tails_and_underflow() {
        for n in [0usize, 3, 8, 13, 64] {
            let d: Vec<f64> = (0..n)
                .map(|i| -(i as f64 * 0.913).sin().abs() * 9.0)
                .collect();
            for (c, b) in [(1.0, -3.0), (1.0, 0.0), (80.0, 0.0), (1.0, -1e3)] {
                for lvl in simd_levels() {
                    let got = dispatch(lvl, InPlace(d.clone(), c, b));
                    for (g, x) in got.iter().zip(&d) {
                        let want = (c * x + b).exp();
                        let tol = (2e-15 + 3e-16 * (c * x + b).abs()) * want + 1e-300;
                        assert!((g - want).abs() <= tol, "{lvl:?} n={n}: {g} vs {want}");
                    }
                }
            }
        }
    }

    /// The log-domain rows shift by their maximum, which can be near ±1e308: the
    /// largest entry must still give exp(0) = 1 and -inf entries 0.
    #[test]
    fn in_place_with_a_huge_shift() {
        // -big·8·log2(e) overflows; differences from big do not.
        let big = -1.6e308;
        let v = vec![big, big, f64::NEG_INFINITY, -1.79e308, big, big, big];
        for lvl in simd_levels() {
            let got = dispatch(lvl, InPlace(v.clone(), 1.0, -big));
            assert_eq!(got, vec![1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0], "{lvl:?}");
        }
    }

    /// Terms at the edges of the range: near the underflow threshold (below e^-708.4 a
    /// term may be anything under 2^-1022; -inf weights and deep underflow give exactly
    /// 0) and near the top of `lin_exp_into`'s range.
    #[test]
    fn edges_of_the_range() {
        let xs: Vec<f64> = (0..64).map(|i| -705.0 - 0.09 * i as f64).collect();
        for lvl in simd_levels() {
            for &x in &xs {
                let got = run_at(lvl, &[x], None, 1.0, 0.0, None);
                let want = x.exp();
                let tol = if x > -707.9 {
                    (2e-15 + 3e-16 * x.abs()) * want
                } else {
                    f64::MIN_POSITIVE
                };
                assert!((got - want).abs() <= tol, "{lvl:?} x={x}: {got} vs {want}");
                assert!(got >= 0.0);
            }
            let d = vec![0.5; 11];
            let w = vec![f64::NEG_INFINITY; 11];
            assert_eq!(run_at(lvl, &d, Some(&w), -1.0, 3.0, None), 0.0, "{lvl:?}");
            for x in [-709.2, -720.0, -1e4, -1e300, f64::NEG_INFINITY] {
                assert_eq!(
                    run_at(lvl, &[x; 5], None, 1.0, 0.0, None),
                    0.0,
                    "{lvl:?} {x}"
                );
            }
            let d = [650.0, 700.0, 709.0];
            let got = dispatch(lvl, Into(&d, 1.0, 0.0));
            for (g, x) in got.iter().zip(&d) {
                let want = x.exp();
                if want.is_finite() {
                    assert!((g - want).abs() <= 3e-13 * want, "{lvl:?} {x}: {g}");
                } else {
                    assert_eq!(*g, f64::INFINITY, "{lvl:?} {x}");
                }
            }
        }
    }

    /// The two portable-path defects of the closing note, at every level, against
    /// mpmath (40 digits): `lin_exp_into` up to ln(f64::MAX) (the portable exp was capped
    /// at exp(709): 8.2e307 for exp(709.7)) and `lin_exp_sum` just above the cut-off
    /// (the portable exp clamped at -708: 3.3e-308 for exp(-708.06)).
    #[test]
    fn top_and_bottom_edges_match_mpmath() {
        // The table-driven paths reach 2^1024 at 709.74 (AVX2) and 709.76 (AVX-512):
        // their callers keep exponents below about 709; the portable path goes on to
        // ln(f64::MAX).
        let top = [
            (709.7, 1.654_984_027_680_264_4e308),
            (709.4, 1.226_042_322_642_672_7e308),
            (709.78, 1.792_822_794_394_515_5e308),
        ];
        let bottom = [
            (-707.95, 3.477_134_872_456_602_7e-308),
            (-708.06, 3.114_936_111_776_876e-308),
            (-708.3, 2.450_295_530_965_988e-308),
            (-708.38, 2.261_907_858_112_732_6e-308),
        ];
        for lvl in simd_levels() {
            let top = if lvl == Level::Scalar {
                &top[..]
            } else {
                &top[..2]
            };
            let xs: Vec<f64> = top.iter().map(|c| c.0).collect();
            let got = dispatch(lvl, Into(&xs, 1.0, 0.0));
            for (&(x, want), g) in top.iter().zip(&got) {
                let tol = (2e-15 + 3e-16 * x) * want;
                assert!(
                    (g - want).abs() <= tol,
                    "{lvl:?} into exp({x}) = {g}, want {want}"
                );
            }
            for &(x, want) in &bottom {
                // As one term, and as the exponent of a weighted term: c·d + w + b.
                for got in [
                    run_at(lvl, &[x], None, 1.0, 0.0, None),
                    run_at(lvl, &[2.0], Some(&[x + 1.0]), -0.5, 0.0, None),
                ] {
                    let tol = (2e-15 + 3e-16 * x.abs()) * want;
                    assert!(
                        (got - want).abs() <= tol,
                        "{lvl:?} sum exp({x}) = {got}, want {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn underflow_is_zero_not_nan() {
        let d = vec![1e6; 19];
        for lvl in simd_levels() {
            assert_eq!(run_at(lvl, &d, None, -1.0, 0.0, None), 0.0);
        }
    }
}
