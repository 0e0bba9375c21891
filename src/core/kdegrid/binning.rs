//! Linear binning and an O(n) expected-time sort of weighted 1-D data.

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use super::check_stop;
use crate::core::error::{try_vec, Result};
use crate::core::simd::{Fma, Level};
use crate::core::threads;

/// Points per parallel chunk of the binning pass.
pub(super) const CHUNK: usize = 1 << 16;

/// Linear binning: a point at fractional position k + t (t ∈ [0, 1)) of the bin lattice
/// lo + k·delta, k = 0..nb, gives w(1 − t) to bin k and w·t to bin k + 1. Points outside
/// [lo, lo + (nb − 1)·delta] are dropped. Allocates nb values per thread and the nb bins.
pub fn linear_bin(
    x: &[f64],
    w: &[f64],
    lo: f64,
    delta: f64,
    nb: usize,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    Ok(linear_bin_checked(x, Some(w), 0.0, lo, delta, nb, stop)?.0)
}

/// 2^52. For 0 ≤ q ≤ 2^51, q + 2^52 rounds q to the nearest integer (ties to even) and
/// leaves it in the low mantissa bits: a float-to-integer conversion without a convert
/// instruction, done the same way at every SIMD level.
pub(super) const MAGIC: f64 = 4_503_599_627_370_496.0;
/// Points per block of the binning loop: a front end computes every point's slot and
/// increment into stack buffers (vectorised), then a tight loop adds them.
pub(super) const BLOCK: usize = 256;
/// How far ahead (in points) the add loop prefetches the coordinates and weights: two
/// blocks, so a line is requested a whole block's adds before the front end reads it.
pub(super) const PREFETCH: usize = 2 * BLOCK;
/// Accumulator slots past the lattice that take the dropped points (point j goes to slot
/// nb + j mod 4), so a run of dropped points never chains dependent adds on one slot and
/// the add loop needs no branch.
pub(super) const SPARE: usize = 4;
/// Bit where the count starts in an unweighted accumulator word; the sum of the points'
/// fractions sits below it. A chunk of at most 2^16 points with fractions below 2^31
/// keeps the sum under 2^47 and the count under 2^17.
pub(super) const COUNT_SHIFT: u32 = 47;

/// The fixed-point form of the bin lattice lo + k·δ, k < nb: a coordinate x maps to
/// q = (x − lo)·2^F/δ, rounded to the integer r; its bin is k = r >> F and its fraction
/// t = (r mod 2^F)/2^F. Points with q outside [0, (nb − 1)·2^F] (NaN included) are
/// dropped. Since (nb − 1)·2^F is an integer, r ≤ (nb − 1)·2^F, so k ≤ nb − 1 for every
/// kept point: the adds index the accumulators without bounds checks.
///
/// F ≤ 31 is chosen so that (nb − 1)·2^F < 2^51 (for [`MAGIC`]) and n·2^F < 2^63 (the
/// integer sums of fractions cannot overflow). Quantising t to 2^-31 moves a point by at
/// most 2^-32 of a bin, far below the binning error itself.
#[derive(Clone, Copy, Debug)]
pub(super) struct Fixed {
    pub(super) lo: f64,
    /// 2^F / δ.
    pub(super) scale: f64,
    /// (nb − 1)·2^F.
    pub(super) qmax: f64,
    /// F.
    pub(super) fbits: u32,
    pub(super) nb: usize,
}

impl Fixed {
    pub(super) fn new(lo: f64, delta: f64, nb: usize, n: usize) -> Result<Fixed> {
        let bits = |v: usize| (usize::BITS - v.leading_zeros()) as i32;
        let inv = 1.0 / delta;
        let mut fbits = 31.min(51 - bits(nb)).min(63 - bits(n));
        // A spacing near the smallest doubles: fewer fraction bits keep 2^F/δ finite.
        while fbits > 0 && !(inv * 2f64.powi(fbits)).is_finite() {
            fbits -= 1;
        }
        if fbits < 0 || nb == 0 {
            return Err(crate::core::error::Error::OutOfMemory(
                "the bin lattice is too large".into(),
            ));
        }
        let one = 2f64.powi(fbits);
        Ok(Fixed {
            lo,
            scale: inv * one,
            qmax: (nb - 1) as f64 * one,
            fbits: fbits as u32,
            nb,
        })
    }

    pub(super) fn fmask(&self) -> u64 {
        (1u64 << self.fbits) - 1
    }

    /// Slot and fraction bits of a point (the written-out rule the SIMD front ends
    /// follow): (k, r mod 2^F) when kept, (nb + j mod 4, 0) when dropped (`j` the point's
    /// index in its block), and whether the point was dropped.
    #[inline(always)]
    pub(super) fn locate(&self, x: f64, j: usize) -> (usize, u64, bool) {
        let q = (x - self.lo) * self.scale;
        if q >= 0.0 && q <= self.qmax {
            let r = (q + MAGIC).to_bits().wrapping_sub(MAGIC.to_bits());
            ((r >> self.fbits) as usize, r & self.fmask(), false)
        } else {
            (self.nb + (j & (SPARE - 1)), 0, true)
        }
    }
}

/// Stack buffers of one block.
struct Block {
    slot: [usize; BLOCK],
    /// Unweighted: the packed word (1 << COUNT_SHIFT) + fraction bits (0 when dropped).
    word: [u64; BLOCK],
    /// Weighted: (w(1 − t), w·t), the shares of bins k and k + 1.
    pair: [[f64; 2]; BLOCK],
}

impl Block {
    fn new() -> Block {
        Block {
            slot: [0; BLOCK],
            word: [0; BLOCK],
            pair: [[0.0; 2]; BLOCK],
        }
    }
}

/// Unweighted front end, written out: slots and packed words of `x` (at most BLOCK
/// points); returns whether a coordinate was not finite.
#[inline(always)]
fn counts_front_scalar(fx: &Fixed, x: &[f64], start: usize, b: &mut Block) -> bool {
    let mut bad = false;
    for (j, &xi) in x.iter().enumerate().skip(start) {
        let (s, f, dropped) = fx.locate(xi, j);
        b.slot[j] = s;
        b.word[j] = if dropped {
            0
        } else {
            (1u64 << COUNT_SHIFT) + f
        };
        bad |= dropped && !xi.is_finite();
    }
    bad
}

/// Weighted front end, written out: slots and (w, w·t) of the points of `x` and `w` from
/// `start` on; returns whether a coordinate was not finite or a weight negative or not
/// finite (weights of dropped points are checked too).
#[inline(always)]
fn pairs_front_scalar(fx: &Fixed, x: &[f64], w: &[f64], start: usize, b: &mut Block) -> bool {
    let mut bad = false;
    let inv_one = 1.0 / (1u64 << fx.fbits) as f64;
    for (j, (&xi, &wi)) in x.iter().zip(w).enumerate().skip(start) {
        let (s, f, dropped) = fx.locate(xi, j);
        b.slot[j] = s;
        let wt = wi * (f as f64 * inv_one);
        b.pair[j] = [wi - wt, wt];
        bad |= (dropped && !xi.is_finite()) || !(0.0..f64::INFINITY).contains(&wi);
    }
    bad
}

/// The fixed-point front end of [`Fixed::locate`] for 8 lanes at once (AVX-512), shared by
/// the binning and the fused passes' SIMD bodies.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Loc8 {
    lo: std::arch::x86_64::__m512d,
    sc: std::arch::x86_64::__m512d,
    qmax: std::arch::x86_64::__m512d,
    inf: std::arch::x86_64::__m512d,
    magic: std::arch::x86_64::__m512d,
    magic_i: std::arch::x86_64::__m512i,
    fmask: std::arch::x86_64::__m512i,
    spare: std::arch::x86_64::__m512i,
    shift: std::arch::x86_64::__m128i,
    inv_one: std::arch::x86_64::__m512d,
}

#[cfg(target_arch = "x86_64")]
impl Loc8 {
    #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")]
    #[inline]
    pub(super) fn new(fx: &Fixed) -> Loc8 {
        use std::arch::x86_64::*;
        let nb = fx.nb as i64;
        Loc8 {
            lo: _mm512_set1_pd(fx.lo),
            sc: _mm512_set1_pd(fx.scale),
            qmax: _mm512_set1_pd(fx.qmax),
            inf: _mm512_set1_pd(f64::INFINITY),
            magic: _mm512_set1_pd(MAGIC),
            magic_i: _mm512_set1_epi64(MAGIC.to_bits() as i64),
            fmask: _mm512_set1_epi64(fx.fmask() as i64),
            spare: _mm512_setr_epi64(nb, nb + 1, nb + 2, nb + 3, nb, nb + 1, nb + 2, nb + 3),
            shift: _mm_cvtsi64_si128(fx.fbits as i64),
            inv_one: _mm512_set1_pd(1.0 / (1u64 << fx.fbits) as f64),
        }
    }

    /// Per lane: the slot (a spare one when dropped), the fraction bits (0 when dropped),
    /// the kept lanes and the lanes whose coordinate is not finite.
    #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")]
    #[inline]
    pub(super) fn locate(
        &self,
        xv: std::arch::x86_64::__m512d,
    ) -> (
        std::arch::x86_64::__m512i,
        std::arch::x86_64::__m512i,
        std::arch::x86_64::__mmask8,
        std::arch::x86_64::__mmask8,
    ) {
        use std::arch::x86_64::*;
        let zero = _mm512_setzero_pd();
        let q = _mm512_mul_pd(_mm512_sub_pd(xv, self.lo), self.sc);
        let kept = _mm512_cmp_pd_mask::<_CMP_GE_OQ>(q, zero)
            & _mm512_cmp_pd_mask::<_CMP_LE_OQ>(q, self.qmax);
        // x − x is NaN exactly when x is not finite.
        let bad = _mm512_cmp_pd_mask::<_CMP_UNORD_Q>(_mm512_sub_pd(xv, xv), zero);
        let r = _mm512_sub_epi64(
            _mm512_castpd_si512(_mm512_add_pd(q, self.magic)),
            self.magic_i,
        );
        let s = _mm512_mask_blend_epi64(kept, self.spare, _mm512_srl_epi64(r, self.shift));
        (s, _mm512_maskz_and_epi64(kept, r, self.fmask), kept, bad)
    }

    /// The lanes whose weight is negative or not finite.
    #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")]
    #[inline]
    pub(super) fn bad_weights(
        &self,
        wv: std::arch::x86_64::__m512d,
    ) -> std::arch::x86_64::__mmask8 {
        use std::arch::x86_64::*;
        let zero = _mm512_setzero_pd();
        !(_mm512_cmp_pd_mask::<_CMP_GE_OQ>(wv, zero)
            & _mm512_cmp_pd_mask::<_CMP_LT_OQ>(wv, self.inf))
    }

    /// The fraction bits (< 2^31) as t = f·2^-F, exactly (OR them into 2^52's mantissa).
    #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")]
    #[inline]
    pub(super) fn frac(&self, f: std::arch::x86_64::__m512i) -> std::arch::x86_64::__m512d {
        use std::arch::x86_64::*;
        let fd = _mm512_sub_pd(
            _mm512_castsi512_pd(_mm512_or_si512(f, self.magic_i)),
            self.magic,
        );
        _mm512_mul_pd(fd, self.inv_one)
    }
}

/// [`Loc8`] for 4 lanes (AVX2); masks are all-ones or zero lanes.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Loc4 {
    lo: std::arch::x86_64::__m256d,
    sc: std::arch::x86_64::__m256d,
    qmax: std::arch::x86_64::__m256d,
    inf: std::arch::x86_64::__m256d,
    magic: std::arch::x86_64::__m256d,
    magic_i: std::arch::x86_64::__m256i,
    fmask: std::arch::x86_64::__m256i,
    spare: std::arch::x86_64::__m256d,
    shift: std::arch::x86_64::__m128i,
    inv_one: std::arch::x86_64::__m256d,
}

#[cfg(target_arch = "x86_64")]
impl Loc4 {
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) fn new(fx: &Fixed) -> Loc4 {
        use std::arch::x86_64::*;
        let nb = fx.nb as i64;
        Loc4 {
            lo: _mm256_set1_pd(fx.lo),
            sc: _mm256_set1_pd(fx.scale),
            qmax: _mm256_set1_pd(fx.qmax),
            inf: _mm256_set1_pd(f64::INFINITY),
            magic: _mm256_set1_pd(MAGIC),
            magic_i: _mm256_set1_epi64x(MAGIC.to_bits() as i64),
            fmask: _mm256_set1_epi64x(fx.fmask() as i64),
            spare: _mm256_castsi256_pd(_mm256_setr_epi64x(nb, nb + 1, nb + 2, nb + 3)),
            shift: _mm_cvtsi64_si128(fx.fbits as i64),
            inv_one: _mm256_set1_pd(1.0 / (1u64 << fx.fbits) as f64),
        }
    }

    /// As [`Loc8::locate`]; the kept and not-finite lanes as masks of whole lanes.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) fn locate(
        &self,
        xv: std::arch::x86_64::__m256d,
    ) -> (
        std::arch::x86_64::__m256i,
        std::arch::x86_64::__m256i,
        std::arch::x86_64::__m256d,
        std::arch::x86_64::__m256d,
    ) {
        use std::arch::x86_64::*;
        let zero = _mm256_setzero_pd();
        let q = _mm256_mul_pd(_mm256_sub_pd(xv, self.lo), self.sc);
        let kept = _mm256_and_pd(
            _mm256_cmp_pd::<_CMP_GE_OQ>(q, zero),
            _mm256_cmp_pd::<_CMP_LE_OQ>(q, self.qmax),
        );
        // x − x is NaN exactly when x is not finite.
        let bad = _mm256_cmp_pd::<_CMP_UNORD_Q>(_mm256_sub_pd(xv, xv), zero);
        let r = _mm256_sub_epi64(
            _mm256_castpd_si256(_mm256_add_pd(q, self.magic)),
            self.magic_i,
        );
        let k = _mm256_castsi256_pd(_mm256_srl_epi64(r, self.shift));
        let s = _mm256_castpd_si256(_mm256_blendv_pd(self.spare, k, kept));
        let f = _mm256_and_si256(_mm256_and_si256(r, self.fmask), _mm256_castpd_si256(kept));
        (s, f, kept, bad)
    }

    /// The lanes whose weight is negative or not finite (all-ones lanes).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) fn bad_weights(&self, wv: std::arch::x86_64::__m256d) -> std::arch::x86_64::__m256d {
        use std::arch::x86_64::*;
        let zero = _mm256_setzero_pd();
        let ok = _mm256_and_pd(
            _mm256_cmp_pd::<_CMP_GE_OQ>(wv, zero),
            _mm256_cmp_pd::<_CMP_LT_OQ>(wv, self.inf),
        );
        _mm256_andnot_pd(ok, _mm256_castsi256_pd(_mm256_set1_epi64x(-1)))
    }

    /// As [`Loc8::frac`].
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) fn frac(&self, f: std::arch::x86_64::__m256i) -> std::arch::x86_64::__m256d {
        use std::arch::x86_64::*;
        let fd = _mm256_sub_pd(
            _mm256_castsi256_pd(_mm256_or_si256(f, self.magic_i)),
            self.magic,
        );
        _mm256_mul_pd(fd, self.inv_one)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")]
fn counts_front_512(fx: &Fixed, x: &[f64], b: &mut Block) -> bool {
    use std::arch::x86_64::*;
    let n8 = x.len() / 8 * 8;
    let loc = Loc8::new(fx);
    let one = _mm512_set1_epi64(1i64 << COUNT_SHIFT);
    let mut bad: __mmask8 = 0;
    let mut j = 0;
    while j < n8 {
        // SAFETY: lanes j..j+8 lie inside x.
        let xv = unsafe { _mm512_loadu_pd(x.as_ptr().add(j)) };
        let (s, f, kept, bx) = loc.locate(xv);
        bad |= bx;
        let v = _mm512_maskz_add_epi64(kept, f, one);
        // SAFETY: entries j..j+8 lie inside the buffers (j + 8 <= x.len() <= BLOCK).
        unsafe {
            _mm512_storeu_epi64(b.slot.as_mut_ptr().add(j) as *mut i64, s);
            _mm512_storeu_epi64(b.word.as_mut_ptr().add(j) as *mut i64, v);
        }
        j += 8;
    }
    counts_front_scalar(fx, x, n8, b) || bad != 0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")]
fn pairs_front_512(fx: &Fixed, x: &[f64], w: &[f64], b: &mut Block) -> bool {
    use std::arch::x86_64::*;
    let n8 = x.len() / 8 * 8;
    let loc = Loc8::new(fx);
    // (w(1 − t), w·t) interleaved: lanes 0..3 and 4..7 of w − w·t and w·t.
    let il0 = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
    let il1 = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
    let mut bad: __mmask8 = 0;
    let mut j = 0;
    while j < n8 {
        // SAFETY: lanes j..j+8 lie inside x and w (same length).
        let (xv, wv) = unsafe {
            (
                _mm512_loadu_pd(x.as_ptr().add(j)),
                _mm512_loadu_pd(w.as_ptr().add(j)),
            )
        };
        let (s, f, _, bx) = loc.locate(xv);
        bad |= bx | loc.bad_weights(wv);
        let wt = _mm512_mul_pd(wv, loc.frac(f));
        // SAFETY: entries j..j+8 lie inside the buffers (j + 8 <= x.len() <= BLOCK).
        unsafe {
            _mm512_storeu_epi64(b.slot.as_mut_ptr().add(j) as *mut i64, s);
            let p = b.pair.as_mut_ptr().add(j) as *mut f64;
            let u = _mm512_sub_pd(wv, wt);
            _mm512_storeu_pd(p, _mm512_permutex2var_pd(u, il0, wt));
            _mm512_storeu_pd(p.add(8), _mm512_permutex2var_pd(u, il1, wt));
        }
        j += 8;
    }
    pairs_front_scalar(fx, x, w, n8, b) || bad != 0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn counts_front_avx2(fx: &Fixed, x: &[f64], b: &mut Block) -> bool {
    use std::arch::x86_64::*;
    let n4 = x.len() / 4 * 4;
    let loc = Loc4::new(fx);
    let one = _mm256_set1_epi64x(1i64 << COUNT_SHIFT);
    let mut bad = _mm256_setzero_pd();
    let mut j = 0;
    while j < n4 {
        // SAFETY: lanes j..j+4 lie inside x.
        let xv = unsafe { _mm256_loadu_pd(x.as_ptr().add(j)) };
        let (s, f, kept, bx) = loc.locate(xv);
        bad = _mm256_or_pd(bad, bx);
        let v = _mm256_and_si256(_mm256_add_epi64(f, one), _mm256_castpd_si256(kept));
        // SAFETY: entries j..j+4 lie inside the buffers (j + 4 <= x.len() <= BLOCK).
        unsafe {
            _mm256_storeu_si256(b.slot.as_mut_ptr().add(j) as *mut __m256i, s);
            _mm256_storeu_si256(b.word.as_mut_ptr().add(j) as *mut __m256i, v);
        }
        j += 4;
    }
    counts_front_scalar(fx, x, n4, b) || _mm256_movemask_pd(bad) != 0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn pairs_front_avx2(fx: &Fixed, x: &[f64], w: &[f64], b: &mut Block) -> bool {
    use std::arch::x86_64::*;
    let n4 = x.len() / 4 * 4;
    let loc = Loc4::new(fx);
    let mut bad = _mm256_setzero_pd();
    let mut j = 0;
    while j < n4 {
        // SAFETY: lanes j..j+4 lie inside x and w (same length).
        let (xv, wv) = unsafe {
            (
                _mm256_loadu_pd(x.as_ptr().add(j)),
                _mm256_loadu_pd(w.as_ptr().add(j)),
            )
        };
        let (s, f, _, bx) = loc.locate(xv);
        bad = _mm256_or_pd(_mm256_or_pd(bad, loc.bad_weights(wv)), bx);
        let wt = _mm256_mul_pd(wv, loc.frac(f));
        let u = _mm256_sub_pd(wv, wt);
        let (a, c) = (_mm256_unpacklo_pd(u, wt), _mm256_unpackhi_pd(u, wt));
        // SAFETY: entries j..j+4 lie inside the buffers (j + 4 <= x.len() <= BLOCK).
        unsafe {
            _mm256_storeu_si256(b.slot.as_mut_ptr().add(j) as *mut __m256i, s);
            let p = b.pair.as_mut_ptr().add(j) as *mut f64;
            _mm256_storeu_pd(p, _mm256_permute2f128_pd::<0x20>(a, c));
            _mm256_storeu_pd(p.add(4), _mm256_permute2f128_pd::<0x31>(a, c));
        }
        j += 4;
    }
    pairs_front_scalar(fx, x, w, n4, b) || _mm256_movemask_pd(bad) != 0
}

/// Adds one chunk (at most 2^16 points) of unweighted data to `acc` (nb + SPARE packed
/// words); returns whether a coordinate was not finite.
#[inline(always)]
fn counts_chunk<M: Fma>(fx: &Fixed, x: &[f64], acc: &mut [u64], b: &mut Block) -> bool {
    assert!(acc.len() == fx.nb + SPARE && x.len() <= CHUNK);
    let mut bad = false;
    for xb in x.chunks(BLOCK) {
        bad |= match () {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: M::AVX512 holds only on the AVX-512 dispatch path.
            _ if M::AVX512 => unsafe { counts_front_512(fx, xb, b) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: M::AVX2 holds only on the AVX2 and AVX-512 dispatch paths.
            _ if M::AVX2 => unsafe { counts_front_avx2(fx, xb, b) },
            _ => counts_front_scalar(fx, xb, 0, b),
        };
        // The coordinates [`PREFETCH`] points ahead are fetched while this block's adds
        // run (one cache line per 8 points): the adds issue no loads of `x`, so the
        // hardware prefetcher alone leaves the front end waiting on memory.
        let next = xb.as_ptr().wrapping_add(PREFETCH);
        for (g, (sg, vg)) in b.slot[..xb.len()]
            .chunks(8)
            .zip(b.word[..xb.len()].chunks(8))
            .enumerate()
        {
            prefetch(next.wrapping_add(8 * g));
            for (&s, &v) in sg.iter().zip(vg) {
                debug_assert!(s < acc.len());
                // SAFETY: every front end gives a slot below nb + SPARE = acc.len() (see
                // `Fixed`: a kept point's bin is at most nb − 1).
                unsafe { *acc.get_unchecked_mut(s) += v };
            }
        }
    }
    bad
}

/// A hint to bring the cache line at `p` into L1 (x86-64; nothing elsewhere). Never
/// dereferences `p`, which may lie past the end of the data.
#[inline(always)]
pub(super) fn prefetch(p: *const f64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that does not fault, whatever the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Adds one chunk of weighted data to `acc` (nb + SPARE + 1 values: the bins themselves,
/// w(1 − t) to bin k and w·t to bin k + 1 by one two-lane add); returns whether a
/// coordinate was not finite or a weight negative or not finite.
///
/// One value per bin (not the pair Σw, Σw·t) halves the accumulator, which then stays in
/// L1 at 4096 bins. A kept point's k + 1 is at most nb, where only t = 0 points of the
/// last bin add (zero), and dropped points add to the spare slots nb..nb + SPARE.
#[inline(always)]
fn pairs_chunk<M: Fma>(fx: &Fixed, x: &[f64], w: &[f64], acc: &mut [f64], b: &mut Block) -> bool {
    assert!(acc.len() == fx.nb + SPARE + 1 && x.len() == w.len());
    let mut bad = false;
    for (xb, wb) in x.chunks(BLOCK).zip(w.chunks(BLOCK)) {
        bad |= match () {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: M::AVX512 holds only on the AVX-512 dispatch path.
            _ if M::AVX512 => unsafe { pairs_front_512(fx, xb, wb, b) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: M::AVX2 holds only on the AVX2 and AVX-512 dispatch paths.
            _ if M::AVX2 => unsafe { pairs_front_avx2(fx, xb, wb, b) },
            _ => pairs_front_scalar(fx, xb, wb, 0, b),
        };
        let (nx, nw) = (
            xb.as_ptr().wrapping_add(PREFETCH),
            wb.as_ptr().wrapping_add(PREFETCH),
        );
        for (g, (sg, pg)) in b.slot[..xb.len()]
            .chunks(8)
            .zip(b.pair[..xb.len()].chunks(8))
            .enumerate()
        {
            prefetch(nx.wrapping_add(8 * g));
            prefetch(nw.wrapping_add(8 * g));
            for (&s, p) in sg.iter().zip(pg) {
                debug_assert!(s + 1 < acc.len());
                // SAFETY: every slot is below nb + SPARE (as in `counts_chunk`), so s + 1
                // is inside acc; [f64; 2] has f64's alignment.
                let a = unsafe { &mut *(acc.as_mut_ptr().add(s) as *mut [f64; 2]) };
                a[0] += p[0];
                a[1] += p[1];
            }
        }
    }
    bad
}

crate::core::simd::simd_fn!(
    /// [`counts_chunk`] on the SIMD path `level` allows.
    fn counts_chunk_at => counts_chunk(fx: &Fixed, x: &[f64], acc: &mut [u64], b: &mut Block) -> bool
);

crate::core::simd::simd_fn!(
    /// [`pairs_chunk`] on the SIMD path `level` allows.
    fn pairs_chunk_at => pairs_chunk(
        fx: &Fixed,
        x: &[f64],
        w: &[f64],
        acc: &mut [f64],
        b: &mut Block
    ) -> bool
);

/// Unweighted binning of one thread's points: per bin the count and the sum of the
/// fraction bits, as exact integers (so the result depends neither on the thread count
/// nor on the SIMD level). Packed words are unpacked into the totals after every chunk.
fn counts_part(
    level: Level,
    fx: &Fixed,
    x: &[f64],
    stop: &AtomicBool,
) -> Result<(Vec<u64>, Vec<u64>, bool)> {
    let mut acc = try_vec(fx.nb + SPARE, 0u64, "n_points")?;
    let mut cnt = try_vec(fx.nb, 0u64, "n_points")?;
    let mut fsum = try_vec(fx.nb, 0u64, "n_points")?;
    let mut b = Box::new(Block::new());
    let low = (1u64 << COUNT_SHIFT) - 1;
    let mut bad = false;
    for xc in x.chunks(CHUNK) {
        check_stop(stop)?;
        bad |= counts_chunk_at(level, fx, xc, &mut acc, &mut b);
        for ((a, c), f) in acc.iter_mut().zip(cnt.iter_mut()).zip(fsum.iter_mut()) {
            *c += *a >> COUNT_SHIFT;
            *f += *a & low;
            *a = 0;
        }
    }
    Ok((cnt, fsum, bad))
}

/// Weighted binning of one thread's points: the bins Σ w(1 − t) + Σ w·t (of the bin
/// below), summed in the points' order.
fn pairs_part(
    level: Level,
    fx: &Fixed,
    x: &[f64],
    w: &[f64],
    stop: &AtomicBool,
) -> Result<(Vec<f64>, bool)> {
    let mut acc = try_vec(fx.nb + SPARE + 1, 0.0f64, "n_points")?;
    let mut b = Box::new(Block::new());
    let mut bad = false;
    for (xc, wc) in x.chunks(CHUNK).zip(w.chunks(CHUNK)) {
        check_stop(stop)?;
        bad |= pairs_chunk_at(level, fx, xc, wc, &mut acc, &mut b);
    }
    acc.truncate(fx.nb);
    Ok((acc, bad))
}

/// Runs `part(start, end)` over `parts` equal ranges of `0..n` (on the pool when more
/// than one) and returns the results in order.
pub(super) fn over_parts<T: Send>(
    n: usize,
    parts: usize,
    part: impl Fn(usize, usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let per = n.div_ceil(parts);
    if parts == 1 {
        return Ok(vec![part(0, n)?]);
    }
    threads::install(|| {
        (0..parts)
            .into_par_iter()
            .map(|p| part(p * per, ((p + 1) * per).min(n)))
            .collect::<Result<Vec<T>>>()
    })?
}

/// [`linear_bin`] with the data checks folded into the same pass: `w = None` means every
/// weight equals `wu`. Returns the bins and whether every coordinate was finite and every
/// weight finite and non-negative (when not, the bins are meaningless).
///
/// Each point is placed on the fixed-point lattice of `Fixed` (its fraction quantised
/// to 2^-31 of a bin or finer). Unweighted, one packed integer add per point counts it
/// and sums its fraction; the bins are then exact integer combinations scaled once, the
/// same bits whatever the thread count and SIMD level. Weighted, one two-lane add of
/// (w(1 − t), w·t) to bins k and k + 1 per point; the per-thread sums are added in a fixed order, so a given thread
/// count always gives the same bits (and every SIMD level the same bits).
///
/// Allocates, per thread, 3·nb integers unweighted or nb values weighted, plus the nb
/// bins.
pub fn linear_bin_checked(
    x: &[f64],
    w: Option<&[f64]>,
    wu: f64,
    lo: f64,
    delta: f64,
    nb: usize,
    stop: &AtomicBool,
) -> Result<(Vec<f64>, bool)> {
    let level = crate::core::simd::level();
    linear_bin_at(level, x, w, wu, lo, delta, nb, stop)
}

/// [`linear_bin_checked`] at a given SIMD level (every level gives the same bits).
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear_bin_at(
    level: Level,
    x: &[f64],
    w: Option<&[f64]>,
    wu: f64,
    lo: f64,
    delta: f64,
    nb: usize,
    stop: &AtomicBool,
) -> Result<(Vec<f64>, bool)> {
    if nb == 0 {
        return Ok((Vec::new(), true));
    }
    if let Some(w) = w {
        if w.len() != x.len() {
            return Err(crate::core::error::invalid!(
                "weights have length {} but there are {} data points",
                w.len(),
                x.len()
            ));
        }
    }
    let n = x.len();
    let fx = Fixed::new(lo, delta, nb, n)?;
    let nthreads = threads::num_threads();
    // Per-thread accumulators pay off while the data outnumber the bins 2 to 1.
    let parts = if nthreads == 1 || n < 4 * CHUNK || nb > n / 2 {
        1
    } else {
        nthreads.min(n.div_ceil(CHUNK))
    };
    let mut bins = try_vec(nb, 0.0f64, "n_points")?;
    let mut bad = false;
    match w {
        None => {
            let res = over_parts(n, parts, |a, b| counts_part(level, &fx, &x[a..b], stop))?;
            let (mut cnt, mut fsum) = (Vec::new(), Vec::new());
            for (c, f, bd) in res {
                bad |= bd;
                if cnt.is_empty() {
                    (cnt, fsum) = (c, f);
                } else {
                    cnt.iter_mut().zip(&c).for_each(|(u, v)| *u += v);
                    fsum.iter_mut().zip(&f).for_each(|(u, v)| *u += v);
                }
            }
            // Bin k holds count_k − Σt_k + Σt_{k−1}: an integer in units of 2^-F below
            // n·2^F < 2^63 (Σt_k ≤ count_k·2^F), converted once.
            let unit = wu / (1u64 << fx.fbits) as f64;
            let mut carry = 0u64;
            for ((b, &c), &f) in bins.iter_mut().zip(&cnt).zip(&fsum) {
                *b = ((c << fx.fbits) - f + carry) as f64 * unit;
                carry = f;
            }
        }
        Some(w) => {
            let res = over_parts(n, parts, |a, b| {
                pairs_part(level, &fx, &x[a..b], &w[a..b], stop)
            })?;
            for (i, (p, bd)) in res.into_iter().enumerate() {
                bad |= bd;
                if i == 0 {
                    bins = p;
                } else {
                    bins.iter_mut().zip(&p).for_each(|(u, v)| *u += v);
                }
            }
        }
    }
    Ok((bins, !bad))
}

/// Runs `bin(start, end, bins)` over the points `0..n` in chunks of `ch` and returns the
/// sum of what it added to `nbins` zeroed bins: serially into one array, or, when the
/// scattered adds (`adds` per point) outnumber the bins 2 to 1 and several threads are
/// allowed, into one array per thread added up in a fixed order (results do not depend on
/// timing). Checks the stop flag between chunks. Allocates `nbins` values per thread.
pub(crate) fn accumulate(
    n: usize,
    nbins: usize,
    adds: usize,
    ch: usize,
    stop: &AtomicBool,
    bin: impl Fn(usize, usize, &mut [f64]) + Sync,
) -> Result<Vec<f64>> {
    let mut bins = try_vec(nbins, 0.0f64, "n_points")?;
    let nthreads = threads::num_threads();
    // Per-thread bins pay off while the scattered adds outnumber the bins 2 to 1: merging
    // costs one add per bin and thread.
    if nthreads == 1 || n < 4 * ch || nbins > n.saturating_mul(adds.max(1)) / 2 {
        for s in (0..n).step_by(ch) {
            check_stop(stop)?;
            bin(s, (s + ch).min(n), &mut bins);
        }
        return Ok(bins);
    }
    let parts = nthreads.min(n.div_ceil(ch));
    let per = n.div_ceil(parts);
    let partial: Vec<Result<Vec<f64>>> = threads::install(|| {
        (0..parts)
            .into_par_iter()
            .map(|p| {
                let (a, b) = (p * per, ((p + 1) * per).min(n));
                let mut local = try_vec(nbins, 0.0f64, "n_points")?;
                for s in (a..b).step_by(ch) {
                    check_stop(stop)?;
                    bin(s, (s + ch).min(b), &mut local);
                }
                Ok(local)
            })
            .collect()
    })?;
    for part in partial {
        let part = part?;
        for (b, v) in bins.iter_mut().zip(&part) {
            *b += v;
        }
    }
    Ok(bins)
}

#[allow(clippy::too_many_arguments)]
fn bin_chunk_nd(
    x: &[f64],
    w: Option<&[f64]>,
    wu: f64,
    lo: &[f64],
    delta: &[f64],
    nb: &[usize],
    bins: &mut [f64],
    bad: &AtomicBool,
) {
    let d = lo.len();
    let mut strides = [0usize; 3];
    let mut acc = 1usize;
    for a in (0..d).rev() {
        strides[a] = acc;
        acc *= nb[a];
    }
    let mut wrong = false;
    let (mut k, mut t) = ([0usize; 3], [0.0f64; 3]);
    'points: for (i, row) in x.chunks_exact(d).enumerate() {
        let wi = match w {
            Some(w) => {
                let v = w[i];
                wrong |= !(0.0..f64::INFINITY).contains(&v);
                v
            }
            None => wu,
        };
        for a in 0..d {
            let pos = (row[a] - lo[a]) / delta[a];
            // Points beyond the padded lattice are out of the kernel's reach: dropped.
            if !(pos >= 0.0 && pos <= (nb[a] - 1) as f64) {
                wrong |= !row[a].is_finite();
                continue 'points;
            }
            let ka = (pos as usize).min(nb[a] - 2);
            k[a] = ka;
            t[a] = pos - ka as f64;
        }
        if wi.is_nan() || wi <= 0.0 {
            continue;
        }
        for corner in 0..(1usize << d) {
            let mut f = 1.0;
            let mut idx = 0usize;
            for a in 0..d {
                let bit = (corner >> a) & 1;
                f *= if bit == 1 { t[a] } else { 1.0 - t[a] };
                idx += (k[a] + bit) * strides[a];
            }
            bins[idx] += wi * f;
        }
    }
    if wrong {
        bad.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// [`linear_bin_nd`] with optional weights (`None`: every weight `wu`) and the data
/// checks in the same pass: returns the bins and whether every coordinate was finite and
/// every weight finite and non-negative. `x` holds rows of d coordinates.
#[allow(clippy::too_many_arguments)]
pub fn linear_bin_nd_checked(
    x: &[f64],
    d: usize,
    w: Option<&[f64]>,
    wu: f64,
    lo: &[f64],
    delta: &[f64],
    nb: &[usize],
    stop: &AtomicBool,
) -> Result<(Vec<f64>, bool)> {
    let total = nb
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| {
            crate::core::error::Error::OutOfMemory("the bin lattice is too large".into())
        })?;
    let bad = AtomicBool::new(false);
    let n = x.len() / d;
    let bins = accumulate(n, total, 1, CHUNK / 4, stop, |s, e, bins| {
        bin_chunk_nd(
            &x[s * d..e * d],
            w.map(|w| &w[s..e]),
            wu,
            lo,
            delta,
            nb,
            bins,
            &bad,
        )
    })?;
    Ok((bins, !bad.load(std::sync::atomic::Ordering::Relaxed)))
}

/// Linear binning in d = 2 or 3 dimensions onto the lattice lo_a + k_a·delta_a,
/// k_a < nb_a (each nb_a >= 2), row-major (the last axis fastest): a point splits its
/// weight over the 2^d corners of its cell, w·Π_a (t_a or 1 − t_a). `x` holds n rows of
/// d coordinates. Points outside the lattice or with zero weight are dropped. Allocates
/// the Π nb_a bins (and one copy per thread when the data outnumber the bins 2 to 1).
pub fn linear_bin_nd(
    x: &[f64],
    w: &[f64],
    lo: &[f64],
    delta: &[f64],
    nb: &[usize],
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    let d = lo.len();
    if !(2..=3).contains(&d) || delta.len() != d || nb.len() != d || x.len() != w.len() * d {
        return Err(crate::core::error::invalid!(
            "binning needs 2 or 3 dimensions with one lo, delta and size per axis and n·d \
             coordinates"
        ));
    }
    if nb.iter().any(|&v| v < 2)
        || delta.iter().any(|v| !(v.is_finite() && *v > 0.0))
        || lo.iter().any(|v| !v.is_finite())
    {
        return Err(crate::core::error::invalid!(
            "the bin lattice needs at least 2 bins per axis and a finite positive spacing"
        ));
    }
    let total = nb
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| {
            crate::core::error::Error::OutOfMemory("the bin lattice is too large".into())
        })?;
    let bad = AtomicBool::new(false);
    accumulate(w.len(), total, 1, CHUNK / 4, stop, |s, e, bins| {
        bin_chunk_nd(
            &x[s * d..e * d],
            Some(&w[s..e]),
            0.0,
            lo,
            delta,
            nb,
            bins,
            &bad,
        )
    })
}

/// The data sorted ascending with their weights, zero weights dropped: a bucket pass
/// (about four points per bucket, monotone bucket index) then insertion sort within
/// buckets, so O(n) expected time for data without extreme clusters (O(n log n) worst
/// case falls back to a full sort). Allocates 2n values plus n/4 counters.
pub fn sort_weighted(x: &[f64], w: &[f64], stop: &AtomicBool) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut pts: Vec<(f64, f64)> = Vec::new();
    pts.try_reserve_exact(x.len()).map_err(|_| {
        crate::core::error::Error::OutOfMemory(format!(
            "sorting the data needs {:.3} GiB; reduce the data",
            x.len() as f64 * 16.0 / (1u64 << 30) as f64
        ))
    })?;
    pts.extend(
        x.iter()
            .zip(w)
            .filter(|(_, &wi)| wi > 0.0)
            .map(|(&a, &b)| (a, b)),
    );
    let n = pts.len();
    check_stop(stop)?;
    let (mn, mx) = pts
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
    let nbk = (n / 4).max(1);
    if n < 64 || mx <= mn || !(mx - mn).is_finite() {
        pts.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    } else {
        let scale = (nbk as f64 - 1.0) / (mx - mn);
        let key = |v: f64| (((v - mn) * scale) as usize).min(nbk - 1);
        let mut start = try_vec(nbk + 1, 0usize, "data")?;
        for p in &pts {
            start[key(p.0) + 1] += 1;
        }
        for i in 0..nbk {
            start[i + 1] += start[i];
        }
        let mut out = try_vec(n, (0.0f64, 0.0f64), "data")?;
        let mut fill = start.clone();
        for p in &pts {
            let k = key(p.0);
            out[fill[k]] = *p;
            fill[k] += 1;
        }
        check_stop(stop)?;
        for b in 0..nbk {
            let s = &mut out[start[b]..start[b + 1]];
            if s.len() > 32 {
                s.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
            } else {
                for i in 1..s.len() {
                    let mut j = i;
                    while j > 0 && s[j - 1].0 > s[j].0 {
                        s.swap(j - 1, j);
                        j -= 1;
                    }
                }
            }
        }
        pts = out;
    }
    Ok(pts.into_iter().unzip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_binning_conserves_mass_and_first_moment() {
        let stop = AtomicBool::new(false);
        let x = [0.25, 1.5, 2.0, 9.0];
        let w = [1.0, 2.0, 3.0, 4.0];
        let b = linear_bin(&x, &w, 0.0, 1.0, 4, &stop).unwrap();
        // 9.0 is beyond the last bin (3.0): dropped.
        assert_eq!(b, vec![0.75, 1.25, 4.0, 0.0]);
    }

    use crate::core::testing::{simd_levels, Lcg};

    /// Linear binning written out in floating point: pos = (x − lo)/δ, k = ⌊pos⌋,
    /// t = pos − k; points outside [0, nb − 1] dropped.
    fn reference(x: &[f64], w: &[f64], lo: f64, delta: f64, nb: usize) -> Vec<f64> {
        let mut b = vec![0.0; nb + 1];
        for (&xi, &wi) in x.iter().zip(w) {
            let pos = (xi - lo) / delta;
            if !(pos >= 0.0 && pos <= (nb - 1) as f64) {
                continue;
            }
            let k = pos.floor() as usize;
            let t = pos - k as f64;
            b[k] += wi * (1.0 - t);
            b[k + 1] += wi * t;
        }
        b.truncate(nb);
        b
    }

    fn data(n: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
        let mut g = Lcg::new(seed);
        // Mostly inside [-3, 3], some outside, a few exactly on bin edges.
        let x = (0..n)
            .map(|i| {
                if i % 97 == 5 {
                    -3.0 + (i % 61) as f64 * 0.125
                } else {
                    (g.unit_sum(3) - 1.5) * 2.6
                }
            })
            .collect();
        let w = (0..n).map(|_| g.unit()).collect();
        (x, w)
    }

    fn bin_at(
        level: Level,
        x: &[f64],
        w: Option<&[f64]>,
        lo: f64,
        delta: f64,
        nb: usize,
    ) -> (Vec<f64>, bool) {
        let stop = AtomicBool::new(false);
        linear_bin_at(level, x, w, 1.0, lo, delta, nb, &stop).unwrap()
    }

    #[test]
    fn fixed_point_binning_matches_the_reference_at_every_level() {
        // Lengths around the SIMD widths, the block and the chunk.
        for &n in &[1usize, 7, 8, 13, 256, 1000, CHUNK + 37] {
            let (x, w) = data(n, n as u64);
            let ones = vec![1.0; n];
            let (lo, delta, nb) = (-3.0, 0.125, 49);
            let want_w = reference(&x, &w, lo, delta, nb);
            let want_c = reference(&x, &ones, lo, delta, nb);
            let (first_c, _) = bin_at(Level::Scalar, &x, None, lo, delta, nb);
            let (first_w, _) = bin_at(Level::Scalar, &x, Some(&w), lo, delta, nb);
            for level in simd_levels() {
                let (c, ok_c) = bin_at(level, &x, None, lo, delta, nb);
                let (b, ok_w) = bin_at(level, &x, Some(&w), lo, delta, nb);
                assert!(ok_c && ok_w);
                // Fractions are quantised to 2^-31 of a bin: 2.4e-10 per point at most.
                let tol = 3e-10 * n as f64;
                for k in 0..nb {
                    assert!((c[k] - want_c[k]).abs() <= tol, "{level:?} n={n} k={k}");
                    assert!((b[k] - want_w[k]).abs() <= tol, "{level:?} n={n} k={k}");
                }
                // Every level gives the same bits.
                assert_eq!(c, first_c, "{level:?} n={n}");
                assert_eq!(b, first_w, "{level:?} n={n}");
            }
        }
    }

    #[test]
    fn edges_last_point_and_dropped_points() {
        // δ a power of two: lattice points are exact, so a point on one puts all its
        // weight in that bin; the last lattice point is kept, anything beyond dropped.
        let (lo, delta, nb) = (-1.0, 0.25, 9); // lattice -1, -0.75, ..., 1
        let x = [
            -1.0,
            -0.5,
            1.0,
            0.1,
            1.0 + 1e-12,
            -1.0 - 1e-12,
            5.0,
            -7.0,
            f64::MAX,
            -f64::MAX,
            f64::MIN_POSITIVE,
            -0.375,
        ];
        let w = [
            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
        ];
        for level in simd_levels() {
            let (b, ok) = bin_at(level, &x, Some(&w), lo, delta, nb);
            assert!(ok);
            let mut want = vec![0.0; nb];
            want[0] = 1.0;
            want[2] = 2.0;
            want[8] = 4.0;
            // 0.1 is at 4.4 bins (t rounded to 2^-31 of a bin).
            want[4] += 8.0 * 0.6;
            want[5] += 8.0 * 0.4;
            // f64::MIN_POSITIVE sits on the lattice point 0 (bin 4).
            want[4] += 1024.0;
            want[2] += 2048.0 * 0.5;
            want[3] += 2048.0 * 0.5;
            for k in 0..nb {
                assert!((b[k] - want[k]).abs() < 1e-8, "{level:?} k={k}: {b:?}");
            }
            assert_eq!(b[0], 1.0);
            assert_eq!(b[8], 4.0);
            let (c, ok) = bin_at(level, &x, None, lo, delta, nb);
            assert!(ok);
            // Six points kept: the mass is exact.
            assert_eq!(c.iter().sum::<f64>(), 6.0);
            assert_eq!((c[0], c[2], c[3], c[8]), (1.0, 1.5, 0.5, 1.0));
        }
        // One bin: only points exactly on lo are kept.
        let (b, ok) = bin_at(Level::Scalar, &[0.0, 0.0, 1e-300], None, 0.0, 1.0, 1);
        assert!(ok && b == vec![2.0]);
    }

    #[test]
    fn non_finite_data_and_bad_weights_are_flagged_at_every_level() {
        let (x0, w0) = data(203, 9);
        let (lo, delta, nb) = (-3.0, 0.125, 49);
        for level in simd_levels() {
            // Clean data: no flag, even with points far outside and zero weights.
            let mut w = w0.clone();
            w[3] = 0.0;
            let mut x = x0.clone();
            x[4] = 1e308;
            assert!(bin_at(level, &x, None, lo, delta, nb).1);
            assert!(bin_at(level, &x, Some(&w), lo, delta, nb).1);
            // Every bad value in a SIMD body position and in a tail position.
            for &pos in &[0usize, 5, 9, 200, 202] {
                for &v in &[f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                    let mut x = x0.clone();
                    x[pos] = v;
                    assert!(
                        !bin_at(level, &x, None, lo, delta, nb).1,
                        "{level:?} {pos} {v}"
                    );
                    assert!(!bin_at(level, &x, Some(&w0), lo, delta, nb).1);
                }
                for &v in &[-1.0, -0.0 - 1e-300, f64::NAN, f64::INFINITY] {
                    let mut w = w0.clone();
                    w[pos] = v;
                    assert!(
                        !bin_at(level, &x0, Some(&w), lo, delta, nb).1,
                        "{level:?} {pos} {v}"
                    );
                }
                // A bad weight on a dropped point is still reported.
                let (mut x, mut w) = (x0.clone(), w0.clone());
                x[pos] = 100.0;
                w[pos] = -2.0;
                assert!(!bin_at(level, &x, Some(&w), lo, delta, nb).1);
            }
        }
    }

    #[test]
    fn unweighted_bins_do_not_depend_on_the_thread_count() {
        let (x, w) = data(4 * CHUNK + 1001, 3);
        let stop = AtomicBool::new(false);
        let run = |t: usize, w: Option<&[f64]>| {
            let prev = threads::set_thread_override(t).unwrap();
            let out = linear_bin_checked(&x, w, 0.5, -3.0, 0.01, 601, &stop).unwrap();
            threads::set_thread_override(prev).unwrap();
            out
        };
        let (one, ok) = run(1, None);
        assert!(ok);
        for t in [2, 3] {
            assert_eq!(run(t, None).0, one);
            let (a, b) = (run(1, Some(&w)).0, run(t, Some(&w)).0);
            let top = a.iter().cloned().fold(0.0, f64::max);
            assert!(a.iter().zip(&b).all(|(u, v)| (u - v).abs() <= 1e-13 * top));
        }
        // The stop flag ends the pass.
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(linear_bin_checked(&x, None, 1.0, -3.0, 0.01, 601, &stop).is_err());
    }

    #[test]
    fn fraction_bits_shrink_for_huge_lattices_and_tiny_spacings() {
        let f = Fixed::new(0.0, 1.0, 4096, 1_000_000).unwrap();
        assert_eq!(f.fbits, 31);
        let f = Fixed::new(0.0, 1.0, 1 << 30, 1_000).unwrap();
        assert_eq!(f.fbits, 20);
        assert!(f.qmax < 2f64.powi(51));
        let f = Fixed::new(0.0, 1.0, 10, 1 << 40).unwrap();
        assert_eq!(f.fbits, 22);
        let f = Fixed::new(0.0, 1e-300, 10, 10).unwrap();
        assert!(f.scale.is_finite() && f.fbits < 31);
        assert!(Fixed::new(0.0, 1.0, 0, 10).is_err());
    }

    #[test]
    fn sort_matches_std_sort() {
        let stop = AtomicBool::new(false);
        let x: Vec<f64> = (0..1000)
            .map(|i| ((i * 7919) % 1000) as f64 * 0.37 - 50.0)
            .collect();
        let w: Vec<f64> = (0..1000)
            .map(|i| if i % 10 == 0 { 0.0 } else { i as f64 })
            .collect();
        let (xs, ws) = sort_weighted(&x, &w, &stop).unwrap();
        assert_eq!(xs.len(), 900);
        assert!(xs.windows(2).all(|p| p[0] <= p[1]));
        let mut pairs: Vec<(f64, f64)> = x
            .iter()
            .cloned()
            .zip(w.iter().cloned())
            .filter(|p| p.1 > 0.0)
            .collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (ex, ew): (Vec<f64>, Vec<f64>) = pairs.into_iter().unzip();
        assert_eq!(xs, ex);
        assert_eq!(ws.iter().sum::<f64>(), ew.iter().sum::<f64>());
    }
}
