//! 1-D linear binning with the error fields' moments in the same pass (issue 11).
//!
//! The 1-D Gaussian grid needs, per bin of the lattice, the binned mass (count and Σt,
//! t the point's fractional position) and, for its error estimate
//! ([`super::errfield::line1_error`]), the sums Σ w·u, Σ w·u(1 − 2t) and their first
//! moments in t (u = t(1 − t)). All of these are combinations of the power sums
//! Σw, Σw·t, Σw·t², Σw·t³ (and Σw·t⁴, estimated), so one pass over the points that adds
//! those to the point's bin serves both, instead of a second pass for the fields.
//!
//! Unweighted, every point adds one 32-byte slot of four integers: the packed word of
//! [`super::binning`] ((1 << 47) + the fraction's 2^-F bits, the mass exactly) and t², t³
//! and t⁴ in units of 2^-F (each power from the previous by a 32 × 32-bit product,
//! truncated). Integer sums make the result independent of the thread count and the SIMD
//! level, bit for bit. The powers only feed the error estimate, which needs about three
//! digits; truncating to 2^-31 moves u = t(1 − t) by at most 2^-31.
//!
//! Weighted, every point adds (w, w·t, w·t², w·t³) as four doubles to its slot and w·t⁴
//! to a second array, in the points' order at every SIMD level (so every level gives the
//! same bits; the per-thread sums are added in a fixed order, so a given thread count
//! always gives the same bits).
//!
//! Σ t⁴ is needed: the error sums Σ u(1 − 2t)·t = Σ t² − 3t³ + 2t⁴ nearly cancel (−1/60
//! per point for t spread evenly), and an estimate of Σ t⁴ from the lower sums was 30 %
//! off on a grid coarser than the bandwidth.

use std::sync::atomic::AtomicBool;

use super::binning::{over_parts, prefetch, Fixed, BLOCK, CHUNK, COUNT_SHIFT, PREFETCH, SPARE};
#[cfg(target_arch = "x86_64")]
use super::binning::{Loc4, Loc8};
use super::check_stop;
use crate::core::error::{try_vec, Result};
use crate::core::simd::{Fma, Level};
use crate::core::threads;

/// Accumulator copies per bin: point i of a block adds to copy i mod COPIES (the copies
/// of a bin lie side by side), so runs of points in one bin (sorted or rounded data) form
/// COPIES independent chains of adds instead of one chain whose every add waits for the
/// previous one's store. The copies are summed when the chunk is emptied (unweighted:
/// integers, so the bits do not change; weighted: in a fixed order at every level).
const COPIES: usize = 4;
const _: () = assert!(COPIES.is_power_of_two() && 8 % COPIES == 0);

/// One unweighted accumulator slot, aligned to its size so no slot straddles a cache
/// line.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C, align(32))]
struct Slot2([u64; 4]);

/// One weighted accumulator slot (w, w·t, w·t², w·t³).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C, align(32))]
struct Slot4([f64; 4]);

/// One weighted accumulator: (w, w·t, w·t², w·t³) and w·t⁴ side by side, so a point's
/// two adds touch one cache line (64 bytes, aligned: no add straddles two lines; a
/// separate array for w·t⁴ cost 1.4× the unweighted pass in all).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C, align(64))]
struct Acc5 {
    v: [f64; 4],
    e: f64,
}

/// Stack buffers of one block: every point's slot index and what it adds (weighted:
/// w·t⁴ in `extra`).
struct Block<S> {
    slot: [usize; BLOCK],
    val: [S; BLOCK],
    extra: [f64; BLOCK],
}

impl<S: Copy + Default> Block<S> {
    fn new() -> Box<Block<S>> {
        Box::new(Block {
            slot: [0; BLOCK],
            val: [S::default(); BLOCK],
            extra: [0.0; BLOCK],
        })
    }
}

/// The unweighted slot of a point with fraction bits `f` (0 when dropped; F = `fbits`):
/// the packed word, then t², t³ and t⁴ in units of 2^-F, each truncated (the rule the
/// SIMD front ends follow).
#[inline(always)]
fn unweighted_slot(f: u64, dropped: bool, fbits: u32) -> Slot2 {
    let s2 = (f * f) >> fbits;
    let w0 = if dropped {
        0
    } else {
        (1u64 << COUNT_SHIFT) + f
    };
    Slot2([w0, s2, (s2 * f) >> fbits, (s2 * s2) >> fbits])
}

/// Unweighted front end, written out, from point `start` on; returns whether a
/// coordinate was not finite.
#[inline(always)]
fn counts_front_scalar(fx: &Fixed, x: &[f64], start: usize, b: &mut Block<Slot2>) -> bool {
    let mut bad = false;
    for (j, &xi) in x.iter().enumerate().skip(start) {
        let (s, f, dropped) = fx.locate(xi, j);
        b.slot[j] = s;
        b.val[j] = unweighted_slot(f, dropped, fx.fbits);
        bad |= dropped && !xi.is_finite();
    }
    bad
}

/// Weighted front end, written out, from point `start` on; returns whether a coordinate
/// was not finite or a weight negative or not finite.
#[inline(always)]
fn pairs_front_scalar(
    fx: &Fixed,
    x: &[f64],
    w: &[f64],
    start: usize,
    b: &mut Block<Slot4>,
) -> bool {
    let mut bad = false;
    let inv_one = 1.0 / (1u64 << fx.fbits) as f64;
    for (j, (&xi, &wi)) in x.iter().zip(w).enumerate().skip(start) {
        let (s, f, dropped) = fx.locate(xi, j);
        b.slot[j] = s;
        let t = f as f64 * inv_one;
        let wt = wi * t;
        let wt2 = wt * t;
        let wt3 = wt2 * t;
        b.val[j] = Slot4([wi, wt, wt2, wt3]);
        b.extra[j] = wt3 * t;
        bad |= (dropped && !xi.is_finite()) || !(0.0..f64::INFINITY).contains(&wi);
    }
    bad
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")]
fn counts_front_512(fx: &Fixed, x: &[f64], b: &mut Block<Slot2>) -> bool {
    use std::arch::x86_64::*;
    let n8 = x.len() / 8 * 8;
    let loc = Loc8::new(fx);
    let shift = loc.shift();
    let one = _mm512_set1_epi64(1i64 << COUNT_SHIFT);
    // The slots are stored in the order 0, 2, 4, 6, 1, 3, 5, 7 (what the in-lane unpacks
    // and one cross-lane permute give); integer adds do not care about the order.
    let order = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7);
    let q_lo = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
    let q_hi = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
    let mut bad: __mmask8 = 0;
    let mut j = 0;
    while j < n8 {
        // SAFETY: lanes j..j+8 lie inside x.
        let xv = unsafe { _mm512_loadu_pd(x.as_ptr().add(j)) };
        let (s, f, kept, bx) = loc.locate(xv);
        bad |= bx;
        let w0 = _mm512_maskz_add_epi64(kept, f, one);
        // f and the powers are below 2^31: the 32 × 32-bit products are exact.
        let s2 = _mm512_srl_epi64(_mm512_mul_epu32(f, f), shift);
        let s3 = _mm512_srl_epi64(_mm512_mul_epu32(s2, f), shift);
        let s4 = _mm512_srl_epi64(_mm512_mul_epu32(s2, s2), shift);
        // Pairs (w0, s2) and (s3, s4) of points 0, 2, 4, 6 (lo) and 1, 3, 5, 7 (hi).
        let (ab_lo, ab_hi) = (_mm512_unpacklo_epi64(w0, s2), _mm512_unpackhi_epi64(w0, s2));
        let (cd_lo, cd_hi) = (_mm512_unpacklo_epi64(s3, s4), _mm512_unpackhi_epi64(s3, s4));
        // SAFETY: entries j..j+8 lie inside the buffers (j + 8 <= x.len() <= BLOCK).
        unsafe {
            let sp = b.slot.as_mut_ptr().add(j) as *mut i64;
            _mm512_storeu_epi64(sp, _mm512_permutexvar_epi64(order, s));
            let vp = b.val.as_mut_ptr().add(j) as *mut i64;
            _mm512_storeu_epi64(vp, _mm512_permutex2var_epi64(ab_lo, q_lo, cd_lo));
            _mm512_storeu_epi64(vp.add(8), _mm512_permutex2var_epi64(ab_lo, q_hi, cd_lo));
            _mm512_storeu_epi64(vp.add(16), _mm512_permutex2var_epi64(ab_hi, q_lo, cd_hi));
            _mm512_storeu_epi64(vp.add(24), _mm512_permutex2var_epi64(ab_hi, q_hi, cd_hi));
        }
        j += 8;
    }
    counts_front_scalar(fx, x, n8, b) || bad != 0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn counts_front_avx2(fx: &Fixed, x: &[f64], b: &mut Block<Slot2>) -> bool {
    use std::arch::x86_64::*;
    let n4 = x.len() / 4 * 4;
    let loc = Loc4::new(fx);
    let shift = loc.shift();
    let one = _mm256_set1_epi64x(1i64 << COUNT_SHIFT);
    let mut bad = _mm256_setzero_pd();
    let mut j = 0;
    while j < n4 {
        // SAFETY: lanes j..j+4 lie inside x.
        let xv = unsafe { _mm256_loadu_pd(x.as_ptr().add(j)) };
        let (s, f, kept, bx) = loc.locate(xv);
        bad = _mm256_or_pd(bad, bx);
        let w0 = _mm256_and_si256(_mm256_add_epi64(f, one), _mm256_castpd_si256(kept));
        // f and the powers are below 2^31: the 32 × 32-bit products are exact.
        let s2 = _mm256_srl_epi64(_mm256_mul_epu32(f, f), shift);
        let s3 = _mm256_srl_epi64(_mm256_mul_epu32(s2, f), shift);
        let s4 = _mm256_srl_epi64(_mm256_mul_epu32(s2, s2), shift);
        // 4 × 4 transpose: (w0, s2, s3, s4) of points 0, 1, 2, 3.
        let (e0, o0) = (_mm256_unpacklo_epi64(w0, s2), _mm256_unpackhi_epi64(w0, s2));
        let (e1, o1) = (_mm256_unpacklo_epi64(s3, s4), _mm256_unpackhi_epi64(s3, s4));
        // SAFETY: entries j..j+4 lie inside the buffers (j + 4 <= x.len() <= BLOCK).
        unsafe {
            _mm256_storeu_si256(b.slot.as_mut_ptr().add(j) as *mut __m256i, s);
            let vp = b.val.as_mut_ptr().add(j) as *mut __m256i;
            _mm256_storeu_si256(vp, _mm256_permute2x128_si256::<0x20>(e0, e1));
            _mm256_storeu_si256(vp.add(1), _mm256_permute2x128_si256::<0x20>(o0, o1));
            _mm256_storeu_si256(vp.add(2), _mm256_permute2x128_si256::<0x31>(e0, e1));
            _mm256_storeu_si256(vp.add(3), _mm256_permute2x128_si256::<0x31>(o0, o1));
        }
        j += 4;
    }
    counts_front_scalar(fx, x, n4, b) || _mm256_movemask_pd(bad) != 0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")]
fn pairs_front_512(fx: &Fixed, x: &[f64], w: &[f64], b: &mut Block<Slot4>) -> bool {
    use std::arch::x86_64::*;
    let n8 = x.len() / 8 * 8;
    let loc = Loc8::new(fx);
    // A 4 × 8 transpose in the points' order: pairs (a_j, b_j), then (a_j, b_j, c_j, d_j).
    let p_lo = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
    let p_hi = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
    let q_lo = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
    let q_hi = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
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
        let t = loc.frac(f);
        let wt = _mm512_mul_pd(wv, t);
        let wt2 = _mm512_mul_pd(wt, t);
        let wt3 = _mm512_mul_pd(wt2, t);
        let wt4 = _mm512_mul_pd(wt3, t);
        let (a, c) = (_mm512_castpd_si512(wv), _mm512_castpd_si512(wt2));
        let (bb, d) = (_mm512_castpd_si512(wt), _mm512_castpd_si512(wt3));
        let ab_lo = _mm512_permutex2var_epi64(a, p_lo, bb);
        let ab_hi = _mm512_permutex2var_epi64(a, p_hi, bb);
        let cd_lo = _mm512_permutex2var_epi64(c, p_lo, d);
        let cd_hi = _mm512_permutex2var_epi64(c, p_hi, d);
        // SAFETY: entries j..j+8 lie inside the buffers (j + 8 <= x.len() <= BLOCK).
        unsafe {
            _mm512_storeu_epi64(b.slot.as_mut_ptr().add(j) as *mut i64, s);
            _mm512_storeu_pd(b.extra.as_mut_ptr().add(j), wt4);
            let vp = b.val.as_mut_ptr().add(j) as *mut i64;
            _mm512_storeu_epi64(vp, _mm512_permutex2var_epi64(ab_lo, q_lo, cd_lo));
            _mm512_storeu_epi64(vp.add(8), _mm512_permutex2var_epi64(ab_lo, q_hi, cd_lo));
            _mm512_storeu_epi64(vp.add(16), _mm512_permutex2var_epi64(ab_hi, q_lo, cd_hi));
            _mm512_storeu_epi64(vp.add(24), _mm512_permutex2var_epi64(ab_hi, q_hi, cd_hi));
        }
        j += 8;
    }
    pairs_front_scalar(fx, x, w, n8, b) || bad != 0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn pairs_front_avx2(fx: &Fixed, x: &[f64], w: &[f64], b: &mut Block<Slot4>) -> bool {
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
        let t = loc.frac(f);
        let wt = _mm256_mul_pd(wv, t);
        let wt2 = _mm256_mul_pd(wt, t);
        let wt3 = _mm256_mul_pd(wt2, t);
        let wt4 = _mm256_mul_pd(wt3, t);
        // 4 × 4 transpose: (w, wt, wt2, wt3) of point 0, 1, 2, 3.
        let (e0, o0) = (_mm256_unpacklo_pd(wv, wt), _mm256_unpackhi_pd(wv, wt));
        let (e1, o1) = (_mm256_unpacklo_pd(wt2, wt3), _mm256_unpackhi_pd(wt2, wt3));
        // SAFETY: entries j..j+4 lie inside the buffers (j + 4 <= x.len() <= BLOCK).
        unsafe {
            _mm256_storeu_si256(b.slot.as_mut_ptr().add(j) as *mut __m256i, s);
            _mm256_storeu_pd(b.extra.as_mut_ptr().add(j), wt4);
            let vp = b.val.as_mut_ptr().add(j) as *mut f64;
            _mm256_storeu_pd(vp, _mm256_permute2f128_pd::<0x20>(e0, e1));
            _mm256_storeu_pd(vp.add(4), _mm256_permute2f128_pd::<0x20>(o0, o1));
            _mm256_storeu_pd(vp.add(8), _mm256_permute2f128_pd::<0x31>(e0, e1));
            _mm256_storeu_pd(vp.add(12), _mm256_permute2f128_pd::<0x31>(o0, o1));
        }
        j += 4;
    }
    pairs_front_scalar(fx, x, w, n4, b) || _mm256_movemask_pd(bad) != 0
}

/// Adds one chunk (at most 2^16 points) of unweighted data to `acc` (nb + SPARE slots);
/// returns whether a coordinate was not finite.
#[inline(always)]
fn counts_chunk<M: Fma>(fx: &Fixed, x: &[f64], acc: &mut [Slot2], b: &mut Block<Slot2>) -> bool {
    assert!(acc.len() == COPIES * (fx.nb + SPARE) && x.len() <= CHUNK);
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
        // Prefetch the coordinates a block ahead while this block's adds run (the adds
        // issue no loads of `x`; see `binning::counts_chunk`).
        let next = xb.as_ptr().wrapping_add(PREFETCH);
        for (g, (sg, vg)) in b.slot[..xb.len()]
            .chunks(8)
            .zip(b.val[..xb.len()].chunks(8))
            .enumerate()
        {
            prefetch(next.wrapping_add(8 * g));
            for (c, (&s, v)) in sg.iter().zip(vg).enumerate() {
                let s = s * COPIES + (c & (COPIES - 1));
                debug_assert!(s < acc.len());
                // SAFETY: every front end gives a slot below nb + SPARE, so s is below
                // COPIES·(nb + SPARE) = acc.len().
                let a = unsafe { acc.get_unchecked_mut(s) };
                // One four-wide integer add where AVX2 is enabled.
                for (u, &d) in a.0.iter_mut().zip(&v.0) {
                    *u += d;
                }
            }
        }
    }
    bad
}

/// Adds one chunk of weighted data to `acc` (nb + SPARE slots), point after point;
/// returns whether a coordinate was not finite or a weight negative or not finite.
#[inline(always)]
fn pairs_chunk<M: Fma>(
    fx: &Fixed,
    x: &[f64],
    w: &[f64],
    acc: &mut [Acc5],
    b: &mut Block<Slot4>,
) -> bool {
    assert!(acc.len() == COPIES * (fx.nb + SPARE) && x.len() == w.len());
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
        for (g, ((sg, vg), eg)) in b.slot[..xb.len()]
            .chunks(8)
            .zip(b.val[..xb.len()].chunks(8))
            .zip(b.extra[..xb.len()].chunks(8))
            .enumerate()
        {
            prefetch(nx.wrapping_add(8 * g));
            prefetch(nw.wrapping_add(8 * g));
            for (c, ((&s, v), &e)) in sg.iter().zip(vg).zip(eg).enumerate() {
                let s = s * COPIES + (c & (COPIES - 1));
                debug_assert!(s < acc.len());
                // SAFETY: every front end gives a slot below nb + SPARE, so s is below
                // COPIES·(nb + SPARE) = acc.len().
                let a = unsafe { acc.get_unchecked_mut(s) };
                // Lane by lane the same adds at every level (one four-wide add where
                // AVX is enabled).
                for (u, &d) in a.v.iter_mut().zip(&v.0) {
                    *u += d;
                }
                a.e += e;
            }
        }
    }
    bad
}

crate::core::simd::simd_fn!(
    /// [`counts_chunk`] on the SIMD path `level` allows.
    fn counts_chunk_at => counts_chunk(
        fx: &Fixed,
        x: &[f64],
        acc: &mut [Slot2],
        b: &mut Block<Slot2>
    ) -> bool
);

crate::core::simd::simd_fn!(
    /// [`pairs_chunk`] on the SIMD path `level` allows.
    fn pairs_chunk_at => pairs_chunk(
        fx: &Fixed,
        x: &[f64],
        w: &[f64],
        acc: &mut [Acc5],
        b: &mut Block<Slot4>
    ) -> bool
);

/// Integer sums of one thread's unweighted points per bin: count, then Σ t, Σ t², Σ t³
/// and Σ t⁴ in units of 2^-F (below n·2^F < 2^63).
struct Sums {
    cnt: Vec<u64>,
    f1: Vec<u64>,
    s2: Vec<u64>,
    s3: Vec<u64>,
    s4: Vec<u64>,
}

fn counts_part(level: Level, fx: &Fixed, x: &[f64], stop: &AtomicBool) -> Result<(Sums, bool)> {
    let nb = fx.nb;
    let mut acc = try_vec(COPIES * (nb + SPARE), Slot2::default(), "n_points")?;
    let mut s = Sums {
        cnt: try_vec(nb, 0u64, "n_points")?,
        f1: try_vec(nb, 0u64, "n_points")?,
        s2: try_vec(nb, 0u64, "n_points")?,
        s3: try_vec(nb, 0u64, "n_points")?,
        s4: try_vec(nb, 0u64, "n_points")?,
    };
    let mut b = Block::<Slot2>::new();
    let low = (1u64 << COUNT_SHIFT) - 1;
    let mut bad = false;
    // The packed word of a slot must be emptied before it holds more than CHUNK points
    // (count and fraction bits below 2^64 and 2^47); each copy takes a quarter of the
    // points of every whole block (copy = point index mod COPIES in 8-point groups), so
    // COPIES chunks fill a copy to at most CHUNK. The powers need no emptying.
    for xs in x.chunks(CHUNK * COPIES) {
        for xc in xs.chunks(CHUNK) {
            check_stop(stop)?;
            bad |= counts_chunk_at(level, fx, xc, &mut acc, &mut b);
        }
        for (k, cp) in acc[..COPIES * nb].chunks_mut(COPIES).enumerate() {
            for a in cp {
                s.cnt[k] += a.0[0] >> COUNT_SHIFT;
                s.f1[k] += a.0[0] & low;
                a.0[0] = 0;
            }
        }
    }
    for (k, cp) in acc[..COPIES * nb].chunks(COPIES).enumerate() {
        for a in cp {
            s.s2[k] += a.0[1];
            s.s3[k] += a.0[2];
            s.s4[k] += a.0[3];
        }
    }
    Ok((s, bad))
}

fn pairs_part(
    level: Level,
    fx: &Fixed,
    x: &[f64],
    w: &[f64],
    stop: &AtomicBool,
) -> Result<(Vec<Acc5>, bool)> {
    let mut acc = try_vec(COPIES * (fx.nb + SPARE), Acc5::default(), "n_points")?;
    let mut b = Block::<Slot4>::new();
    let mut bad = false;
    for (xc, wc) in x.chunks(CHUNK).zip(w.chunks(CHUNK)) {
        check_stop(stop)?;
        bad |= pairs_chunk_at(level, fx, xc, wc, &mut acc, &mut b);
    }
    // The copies of each bin, summed in order (the same at every level).
    let mut tot = try_vec(fx.nb, Acc5::default(), "n_points")?;
    for (t, cp) in tot.iter_mut().zip(acc.chunks(COPIES)) {
        *t = cp[0];
        for a in &cp[1..] {
            for q in 0..4 {
                t.v[q] += a.v[q];
            }
            t.e += a.e;
        }
    }
    Ok((tot, bad))
}

/// Result of [`bin_with_fields`].
#[derive(Clone, Debug, PartialEq)]
pub struct BinsAndFields {
    /// The linear-binned masses of the nb bins (as [`super::binning::linear_bin_checked`]).
    pub bins: Vec<f64>,
    /// Per bin k, four sums over the points in [k, k + 1): Σ w·u, Σ w·u(1 − 2t),
    /// Σ w·u·t and Σ w·u(1 − 2t)·t (u = t(1 − t)), the layout
    /// [`super::errfield::line1_error`] takes.
    pub fine: Vec<f64>,
    /// Whether every coordinate was finite and every weight finite and non-negative.
    pub ok: bool,
}

/// The four error sums of a bin from its power sums Σw·t^p, p = 1 to 4.
#[inline]
fn error_sums(p1: f64, p2: f64, p3: f64, p4: f64) -> [f64; 4] {
    [
        p1 - p2,
        p1 - 3.0 * p2 + 2.0 * p3,
        p2 - p3,
        p2 - 3.0 * p3 + 2.0 * p4,
    ]
}

/// Linear binning of `x` onto the lattice lo + k·δ, k < nb (weights `w`, or `wu` each)
/// and, in the same pass, the 1-D error sums per bin (see [`BinsAndFields`]). The
/// masses are the same as [`super::binning::linear_bin_checked`]'s to rounding
/// (unweighted: bit for bit). Points outside [lo, lo + (nb − 1)·δ] are dropped.
///
/// Allocates per thread 4·(nb + 4) slots of 32 bytes (unweighted, plus 5·nb integers)
/// or 64 bytes (weighted), plus the nb masses and 4·nb sums.
#[allow(clippy::too_many_arguments)]
pub fn bin_with_fields(
    level: Level,
    x: &[f64],
    w: Option<&[f64]>,
    wu: f64,
    lo: f64,
    delta: f64,
    nb: usize,
    stop: &AtomicBool,
) -> Result<BinsAndFields> {
    if let Some(w) = w {
        if w.len() != x.len() {
            return Err(crate::core::error::invalid!(
                "weights have length {} but there are {} data points",
                w.len(),
                x.len()
            ));
        }
    }
    if nb == 0 {
        return Ok(BinsAndFields {
            bins: Vec::new(),
            fine: Vec::new(),
            ok: true,
        });
    }
    let n = x.len();
    let fx = Fixed::new(lo, delta, nb, n)?;
    let nthreads = threads::num_threads();
    let parts = if nthreads == 1 || n < 4 * CHUNK || nb > n / 2 {
        1
    } else {
        nthreads.min(n.div_ceil(CHUNK))
    };
    let mut bins = try_vec(nb, 0.0f64, "n_points")?;
    let mut fine = try_vec(4 * nb, 0.0f64, "n_points")?;
    let mut bad = false;
    match w {
        None => {
            let res = over_parts(n, parts, |a, b| counts_part(level, &fx, &x[a..b], stop))?;
            let mut tot: Option<Sums> = None;
            for (s, bd) in res {
                bad |= bd;
                match tot.as_mut() {
                    None => tot = Some(s),
                    Some(t) => {
                        for (u, v) in [
                            (&mut t.cnt, &s.cnt),
                            (&mut t.f1, &s.f1),
                            (&mut t.s2, &s.s2),
                            (&mut t.s3, &s.s3),
                            (&mut t.s4, &s.s4),
                        ] {
                            u.iter_mut().zip(v).for_each(|(a, b)| *a += b);
                        }
                    }
                }
            }
            let s = tot.expect("at least one part");
            // Bin k holds count_k − Σt_k + Σt_{k−1}, an exact integer in units of 2^-F
            // (as in `binning::linear_bin_at`).
            let unit = wu / (1u64 << fx.fbits) as f64;
            let mut carry = 0u64;
            for k in 0..nb {
                let (c, f) = (s.cnt[k], s.f1[k]);
                bins[k] = ((c << fx.fbits) - f + carry) as f64 * unit;
                carry = f;
                let e = error_sums(
                    f as f64 * unit,
                    s.s2[k] as f64 * unit,
                    s.s3[k] as f64 * unit,
                    s.s4[k] as f64 * unit,
                );
                fine[4 * k..4 * k + 4].copy_from_slice(&e);
            }
        }
        Some(w) => {
            let res = over_parts(n, parts, |a, b| {
                pairs_part(level, &fx, &x[a..b], &w[a..b], stop)
            })?;
            let mut tot: Vec<Acc5> = Vec::new();
            for (p, bd) in res {
                bad |= bd;
                if tot.is_empty() {
                    tot = p;
                } else {
                    for (u, v) in tot.iter_mut().zip(&p) {
                        for q in 0..4 {
                            u.v[q] += v.v[q];
                        }
                        u.e += v.e;
                    }
                }
            }
            let mut carry = 0.0;
            for (k, sl) in tot.iter().enumerate() {
                let [s0, s1, s2, s3] = sl.v;
                let s4 = sl.e;
                bins[k] = (s0 - s1) + carry;
                carry = s1;
                fine[4 * k..4 * k + 4].copy_from_slice(&error_sums(s1, s2, s3, s4));
            }
        }
    }
    Ok(BinsAndFields {
        bins,
        fine,
        ok: !bad,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::kdegrid::binning::linear_bin_at;
    use crate::core::testing::{simd_levels, Lcg};

    /// Data inside and outside [-3, 3], on bin edges, on a coarser lattice (every point of
    /// a bin shares one t), and in sorted runs.
    fn data(n: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
        let mut g = Lcg::new(seed);
        let x = (0..n)
            .map(|i| match i % 7 {
                0 => -3.0 + (i % 61) as f64 * 0.125,
                1 => 0.03 * ((i % 150) as f64) - 2.2,
                _ => (g.unit_sum(3) - 1.5) * 2.6,
            })
            .collect();
        let w = (0..n).map(|_| g.unit() + 0.05).collect();
        (x, w)
    }

    /// The error sums written out in floating point (t from (x − lo)/δ), and Σw per bin.
    fn reference(x: &[f64], w: &[f64], lo: f64, delta: f64, nb: usize) -> (Vec<f64>, Vec<f64>) {
        let mut out = vec![0.0; 4 * nb];
        let mut mass = vec![0.0; nb];
        for (&xi, &wi) in x.iter().zip(w) {
            let pos = (xi - lo) / delta;
            if !(pos >= 0.0 && pos <= (nb - 1) as f64) {
                continue;
            }
            let k = pos.floor() as usize;
            let t = pos - k as f64;
            let u = t * (1.0 - t);
            let v = u * (1.0 - 2.0 * t);
            for (q, val) in [wi * u, wi * v, wi * u * t, wi * v * t]
                .into_iter()
                .enumerate()
            {
                out[4 * k + q] += val;
            }
            mass[k] += wi;
        }
        (out, mass)
    }

    fn run(
        level: Level,
        x: &[f64],
        w: Option<&[f64]>,
        lo: f64,
        d: f64,
        nb: usize,
    ) -> BinsAndFields {
        bin_with_fields(level, x, w, 0.5, lo, d, nb, &AtomicBool::new(false)).unwrap()
    }

    #[test]
    fn masses_equal_the_binning_pass_and_sums_the_reference_at_every_level() {
        let (lo, delta, nb) = (-3.0, 0.0625, 97);
        for &n in &[1usize, 7, 8, 13, 256, 1001, CHUNK + 37] {
            let (x, w) = data(n, n as u64);
            let half = vec![0.5; n];
            let first_c = run(Level::Scalar, &x, None, lo, delta, nb);
            let first_w = run(Level::Scalar, &x, Some(&w), lo, delta, nb);
            for (ww, first) in [(&half, &first_c), (&w, &first_w)] {
                let (want, mass) = reference(&x, ww, lo, delta, nb);
                for q in 0..4 {
                    // Powers truncated to 2^-31 (unweighted), rounding.
                    let tol = 1e-9;
                    for k in 0..nb {
                        let (a, b) = (first.fine[4 * k + q], want[4 * k + q]);
                        assert!(
                            (a - b).abs() <= tol * mass[k] + 1e-12,
                            "n={n} k={k} q={q}: {a} vs {b}"
                        );
                    }
                }
                assert!(first.ok);
            }
            let mass_c = linear_bin_at(
                Level::Scalar,
                &x,
                None,
                0.5,
                lo,
                delta,
                nb,
                &AtomicBool::new(false),
            );
            assert_eq!(first_c.bins, mass_c.unwrap().0);
            let mass_w = linear_bin_at(
                Level::Scalar,
                &x,
                Some(&w),
                0.5,
                lo,
                delta,
                nb,
                &AtomicBool::new(false),
            )
            .unwrap()
            .0;
            for (a, b) in first_w.bins.iter().zip(&mass_w) {
                assert!((a - b).abs() <= 1e-13 * n as f64);
            }
            for level in simd_levels() {
                // Every level gives the scalar loop's bits.
                assert_eq!(
                    run(level, &x, None, lo, delta, nb),
                    first_c,
                    "{level:?} n={n}"
                );
                assert_eq!(
                    run(level, &x, Some(&w), lo, delta, nb),
                    first_w,
                    "{level:?} n={n}"
                );
            }
        }
    }

    #[test]
    fn lattice_data_give_the_sums_of_their_one_fraction() {
        // Every point 0.3 of a bin past a node: u = 0.21.
        let (lo, delta, nb) = (0.0, 0.5, 9);
        let x: Vec<f64> = (0..400).map(|i| 0.15 + 0.5 * (i % 8) as f64).collect();
        for level in simd_levels() {
            let r = run(level, &x, None, lo, delta, nb);
            let (t, u) = (0.3, 0.21);
            let per = 0.5 * 50.0;
            for k in 0..8 {
                let want = [u, u * (1.0 - 2.0 * t), u * t, u * (1.0 - 2.0 * t) * t];
                for (q, v) in want.iter().enumerate() {
                    assert!((r.fine[4 * k + q] - per * v).abs() < 1e-9 * per, "{q}");
                }
            }
            assert_eq!(&r.fine[32..], &[0.0; 4]);
        }
    }

    #[test]
    fn dropped_points_nan_and_bad_weights() {
        let (x0, w0) = data(203, 9);
        let (lo, delta, nb) = (-3.0, 0.125, 49);
        for level in simd_levels() {
            // Far points are dropped: same result as without them.
            let mut x = x0.clone();
            x[4] = 1e308;
            x[100] = -50.0;
            let mut keep_x = x0.clone();
            keep_x[4] = 1e3;
            keep_x[100] = -1e3;
            let a = run(level, &x, Some(&w0), lo, delta, nb);
            assert!(a.ok);
            assert_eq!(a, run(level, &keep_x, Some(&w0), lo, delta, nb));
            assert_eq!(
                run(level, &x, None, lo, delta, nb),
                run(level, &keep_x, None, lo, delta, nb)
            );
            for &pos in &[0usize, 5, 9, 200, 202] {
                for &v in &[f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                    let mut x = x0.clone();
                    x[pos] = v;
                    assert!(
                        !run(level, &x, None, lo, delta, nb).ok,
                        "{level:?} {pos} {v}"
                    );
                    assert!(!run(level, &x, Some(&w0), lo, delta, nb).ok);
                }
                for &v in &[-1.0, f64::NAN, f64::INFINITY] {
                    let mut w = w0.clone();
                    w[pos] = v;
                    assert!(
                        !run(level, &x0, Some(&w), lo, delta, nb).ok,
                        "{level:?} {pos}"
                    );
                }
            }
        }
    }

    #[test]
    fn one_bin_at_the_largest_fraction_does_not_overflow_the_packed_words() {
        // Every point in one bin just below its upper edge: each copy's packed word gets
        // its largest load (CHUNK points of fraction 2^F - 1) between two emptyings.
        let (lo, delta, nb) = (0.0, 1.0, 8);
        let n = 2 * COPIES * CHUNK + 3;
        let x = vec![3.0 - 1e-12; n];
        let zero = AtomicBool::new(false);
        for level in simd_levels() {
            let r = run(level, &x, None, lo, delta, nb);
            let want = linear_bin_at(level, &x, None, 0.5, lo, delta, nb, &zero).unwrap();
            assert_eq!(r.bins, want.0, "{level:?}");
            assert!((r.bins.iter().sum::<f64>() - 0.5 * n as f64).abs() < 1e-6);
        }
    }

    #[test]
    fn unweighted_results_do_not_depend_on_the_thread_count() {
        let (x, w) = data(4 * CHUNK + 1001, 3);
        let stop = AtomicBool::new(false);
        let go = |t: usize, w: Option<&[f64]>| {
            let prev = threads::set_thread_override(t).unwrap();
            let level = crate::core::simd::level();
            let out = bin_with_fields(level, &x, w, 0.5, -3.0, 0.01, 601, &stop).unwrap();
            threads::set_thread_override(prev).unwrap();
            out
        };
        let one = go(1, None);
        for t in [2, 3] {
            assert_eq!(go(t, None), one);
            let (a, b) = (go(1, Some(&w)), go(t, Some(&w)));
            let top = a.bins.iter().cloned().fold(0.0, f64::max);
            assert!(a
                .bins
                .iter()
                .zip(&b.bins)
                .all(|(u, v)| (u - v).abs() <= 1e-13 * top));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let level = crate::core::simd::level();
        assert!(bin_with_fields(level, &x, None, 1.0, -3.0, 0.01, 601, &stop).is_err());
    }
}
