//! 1-D linear binning with the error fields' moments in the same pass (issue 11).
//!
//! The 1-D Gaussian grid needs, per bin of the lattice, the binned mass (count and Σt,
//! t the point's fractional position) and, for its error estimate
//! ([`super::errfield::line1_error`]), the sums Σ w·u, Σ w·u(1 − 2t) and their first
//! moments in t (u = t(1 − t)). All of these are combinations of the power sums
//! Σw, Σw·t, Σw·t², Σw·t³ and Σw·t⁴, so one pass over the points serves both, instead of
//! a second pass for the fields.
//!
//! Each bin is cut into S = 2^b sub-bins (b = [`SUB_BITS`]) and every point adds to its
//! sub-bin what plain linear binning adds to its bin: unweighted, one packed integer word
//! ((1 << 47) + the fraction's bits below the sub-bin, as in [`super::binning`]);
//! weighted, the pair (w, w·t). A point costs one scalar (or two-lane) add, as in plain
//! binning. The bin's count and Σw·t are exact sums of its sub-bins' (unweighted: exact
//! integers, so the masses are bit for bit those of
//! [`super::binning::linear_bin_checked`], at every SIMD level and thread count).
//!
//! The higher power sums are taken with every point of a sub-bin at the sub-bin's mean
//! fraction t̄ (Σw·t^p ≈ W·t̄^p). That is exact when the points of a sub-bin share one
//! fraction (lattice and rounded data, data on the nodes); for data spread evenly over a
//! sub-bin it misses the spread within it: Σw·t² is low by W/(12·S²), which makes
//! Σ w·u about 3 % high at S = 4 (the estimate only needs about one digit). The error
//! sums need Σ t⁴ itself: Σ u(1 − 2t)·t = Σ t² − 3t³ + 2t⁴ nearly cancels (−1/60 per
//! point for t spread evenly), and an estimate of Σ t⁴ from the lower sums of the whole
//! bin was 30 % off on a grid coarser than the bandwidth; per sub-bin the cancellation
//! is resolved.

use std::sync::atomic::AtomicBool;

use super::binning::{over_parts, prefetch, Fixed, BLOCK, CHUNK, COUNT_SHIFT, PREFETCH, SPARE};
#[cfg(target_arch = "x86_64")]
use super::binning::{Loc4, Loc8};
use super::check_stop;
use crate::core::error::{try_vec, Result};
use crate::core::simd::{Fma, Level};
use crate::core::threads;

/// log2 of the sub-bins per bin (fewer when the lattice has fewer fraction bits).
const SUB_BITS: u32 = 1;

/// Accumulator copies per sub-bin of the weighted pass: point j of a chunk adds to copy
/// j mod COPIES_W (the copies of a sub-bin lie side by side), so runs of points in one
/// sub-bin (sorted or rounded data) form COPIES_W independent chains of two-lane float
/// adds instead of one chain whose every add waits for the previous one's store. The
/// copies are summed in a fixed order, the same at every level. The unweighted pass adds
/// scalar integers, whose chains through one word cost no more than scattered adds (one
/// value repeated 10⁶ times ran as fast as random data on AMD Zen 4), so it keeps one
/// copy and a quarter of the accumulator.
const COPIES_W: usize = 4;
const COPIES_U: usize = 1;
const _: () = assert!(COPIES_W.is_power_of_two() && COPIES_U.is_power_of_two());
const _: () = assert!(COPIES_W <= 4 && COPIES_U <= 4);

/// One weighted accumulator (Σw, Σw·t), aligned so that no add straddles a cache line.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C, align(16))]
struct Pair([f64; 2]);

/// The accumulator layout over a lattice: b sub-bin bits, the fraction bits below them,
/// and log2 of the copies per sub-bin.
#[derive(Clone, Copy, Debug)]
struct Sub {
    b: u32,
    /// F − b.
    low_bits: u32,
    /// log2 of the copies.
    lc: u32,
}

impl Sub {
    fn new(fx: &Fixed, copies: usize) -> Sub {
        let b = SUB_BITS.min(fx.fbits);
        Sub {
            b,
            low_bits: fx.fbits - b,
            lc: copies.trailing_zeros(),
        }
    }

    /// Sub-bins per bin.
    fn per(&self) -> usize {
        1 << self.b
    }

    /// Copies per sub-bin.
    fn copies(&self) -> usize {
        1 << self.lc
    }

    /// Accumulator entries: the copies of every sub-bin of the nb + SPARE slots.
    fn len(&self, fx: &Fixed) -> usize {
        ((fx.nb + SPARE) << self.b) << self.lc
    }

    fn low(&self) -> u64 {
        (1u64 << self.low_bits) - 1
    }

    /// The accumulator entry of a point in slot `s` with fraction bits `f`, point `j` of
    /// its chunk (the rule the SIMD bodies follow).
    #[inline(always)]
    fn entry(&self, s: usize, f: u64, j: usize) -> usize {
        (((s << self.b) | (f >> self.low_bits) as usize) << self.lc) | (j & (self.copies() - 1))
    }
}

/// Stack buffers of one block: every point's accumulator entry and what it adds.
struct Block {
    idx: [usize; BLOCK],
    word: [u64; BLOCK],
    pair: [Pair; BLOCK],
}

impl Block {
    fn new() -> Box<Block> {
        Box::new(Block {
            idx: [0; BLOCK],
            word: [0; BLOCK],
            pair: [Pair::default(); BLOCK],
        })
    }
}

/// Unweighted front end, written out, for the points of `x` (at most BLOCK) from
/// `start` on; returns whether a coordinate was not finite.
#[inline(always)]
fn counts_front_scalar(fx: &Fixed, sub: &Sub, x: &[f64], start: usize, b: &mut Block) -> bool {
    let mut bad = false;
    let low = sub.low();
    for (j, &xi) in x.iter().enumerate().skip(start) {
        let (s, f, dropped) = fx.locate(xi, j);
        b.idx[j] = sub.entry(s, f, j);
        b.word[j] = if dropped {
            0
        } else {
            (1u64 << COUNT_SHIFT) + (f & low)
        };
        bad |= dropped && !xi.is_finite();
    }
    bad
}

/// Weighted front end, written out, for the points of `x` and `w` from `start` on;
/// returns whether a coordinate was not finite or a weight negative or not finite.
#[inline(always)]
fn pairs_front_scalar(
    fx: &Fixed,
    sub: &Sub,
    x: &[f64],
    w: &[f64],
    start: usize,
    b: &mut Block,
) -> bool {
    let mut bad = false;
    let inv_one = 1.0 / (1u64 << fx.fbits) as f64;
    for (j, (&xi, &wi)) in x.iter().zip(w).enumerate().skip(start) {
        let (s, f, dropped) = fx.locate(xi, j);
        b.idx[j] = sub.entry(s, f, j);
        b.pair[j] = Pair([wi, wi * (f as f64 * inv_one)]);
        bad |= (dropped && !xi.is_finite()) || !(0.0..f64::INFINITY).contains(&wi);
    }
    bad
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")]
fn counts_front_512(fx: &Fixed, sub: &Sub, x: &[f64], b: &mut Block) -> bool {
    use std::arch::x86_64::*;
    let n8 = x.len() / 8 * 8;
    let loc = Loc8::new(fx);
    let (bsh, lsh) = (
        _mm_cvtsi64_si128(sub.b as i64),
        _mm_cvtsi64_si128(sub.low_bits as i64),
    );
    let low = _mm512_set1_epi64(sub.low() as i64);
    let one = _mm512_set1_epi64(1i64 << COUNT_SHIFT);
    let (csh, m) = (_mm_cvtsi64_si128(sub.lc as i64), sub.copies() as i64 - 1);
    let copy = _mm512_setr_epi64(0, 1 & m, 2 & m, 3 & m, 0, 1 & m, 2 & m, 3 & m);
    let mut bad: __mmask8 = 0;
    let mut j = 0;
    while j < n8 {
        // SAFETY: lanes j..j+8 lie inside x.
        let xv = unsafe { _mm512_loadu_pd(x.as_ptr().add(j)) };
        let (s, f, kept, bx) = loc.locate(xv);
        bad |= bx;
        let e = _mm512_or_si512(_mm512_sll_epi64(s, bsh), _mm512_srl_epi64(f, lsh));
        let e = _mm512_or_si512(_mm512_sll_epi64(e, csh), copy);
        let v = _mm512_maskz_add_epi64(kept, _mm512_and_si512(f, low), one);
        // SAFETY: entries j..j+8 lie inside the buffers (j + 8 <= x.len() <= BLOCK).
        unsafe {
            _mm512_storeu_epi64(b.idx.as_mut_ptr().add(j) as *mut i64, e);
            _mm512_storeu_epi64(b.word.as_mut_ptr().add(j) as *mut i64, v);
        }
        j += 8;
    }
    counts_front_scalar(fx, sub, x, n8, b) || bad != 0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn counts_front_avx2(fx: &Fixed, sub: &Sub, x: &[f64], b: &mut Block) -> bool {
    use std::arch::x86_64::*;
    let n4 = x.len() / 4 * 4;
    let loc = Loc4::new(fx);
    let (bsh, lsh) = (
        _mm_cvtsi64_si128(sub.b as i64),
        _mm_cvtsi64_si128(sub.low_bits as i64),
    );
    let low = _mm256_set1_epi64x(sub.low() as i64);
    let one = _mm256_set1_epi64x(1i64 << COUNT_SHIFT);
    let (csh, m) = (_mm_cvtsi64_si128(sub.lc as i64), sub.copies() as i64 - 1);
    let copy = _mm256_setr_epi64x(0, 1 & m, 2 & m, 3 & m);
    let mut bad = _mm256_setzero_pd();
    let mut j = 0;
    while j < n4 {
        // SAFETY: lanes j..j+4 lie inside x.
        let xv = unsafe { _mm256_loadu_pd(x.as_ptr().add(j)) };
        let (s, f, kept, bx) = loc.locate(xv);
        bad = _mm256_or_pd(bad, bx);
        let e = _mm256_or_si256(_mm256_sll_epi64(s, bsh), _mm256_srl_epi64(f, lsh));
        let e = _mm256_or_si256(_mm256_sll_epi64(e, csh), copy);
        let v = _mm256_and_si256(
            _mm256_add_epi64(_mm256_and_si256(f, low), one),
            _mm256_castpd_si256(kept),
        );
        // SAFETY: entries j..j+4 lie inside the buffers (j + 4 <= x.len() <= BLOCK).
        unsafe {
            _mm256_storeu_si256(b.idx.as_mut_ptr().add(j) as *mut __m256i, e);
            _mm256_storeu_si256(b.word.as_mut_ptr().add(j) as *mut __m256i, v);
        }
        j += 4;
    }
    counts_front_scalar(fx, sub, x, n4, b) || _mm256_movemask_pd(bad) != 0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")]
fn pairs_front_512(fx: &Fixed, sub: &Sub, x: &[f64], w: &[f64], b: &mut Block) -> bool {
    use std::arch::x86_64::*;
    let n8 = x.len() / 8 * 8;
    let loc = Loc8::new(fx);
    let (bsh, lsh) = (
        _mm_cvtsi64_si128(sub.b as i64),
        _mm_cvtsi64_si128(sub.low_bits as i64),
    );
    let (csh, m) = (_mm_cvtsi64_si128(sub.lc as i64), sub.copies() as i64 - 1);
    let copy = _mm512_setr_epi64(0, 1 & m, 2 & m, 3 & m, 0, 1 & m, 2 & m, 3 & m);
    // (w, w·t) interleaved: lanes 0..3 and 4..7 of w and w·t.
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
        let e = _mm512_or_si512(_mm512_sll_epi64(s, bsh), _mm512_srl_epi64(f, lsh));
        let e = _mm512_or_si512(_mm512_sll_epi64(e, csh), copy);
        // SAFETY: entries j..j+8 lie inside the buffers (j + 8 <= x.len() <= BLOCK).
        unsafe {
            _mm512_storeu_epi64(b.idx.as_mut_ptr().add(j) as *mut i64, e);
            let p = b.pair.as_mut_ptr().add(j) as *mut f64;
            _mm512_storeu_pd(p, _mm512_permutex2var_pd(wv, il0, wt));
            _mm512_storeu_pd(p.add(8), _mm512_permutex2var_pd(wv, il1, wt));
        }
        j += 8;
    }
    pairs_front_scalar(fx, sub, x, w, n8, b) || bad != 0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn pairs_front_avx2(fx: &Fixed, sub: &Sub, x: &[f64], w: &[f64], b: &mut Block) -> bool {
    use std::arch::x86_64::*;
    let n4 = x.len() / 4 * 4;
    let loc = Loc4::new(fx);
    let (bsh, lsh) = (
        _mm_cvtsi64_si128(sub.b as i64),
        _mm_cvtsi64_si128(sub.low_bits as i64),
    );
    let (csh, m) = (_mm_cvtsi64_si128(sub.lc as i64), sub.copies() as i64 - 1);
    let copy = _mm256_setr_epi64x(0, 1 & m, 2 & m, 3 & m);
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
        let e = _mm256_or_si256(_mm256_sll_epi64(s, bsh), _mm256_srl_epi64(f, lsh));
        let e = _mm256_or_si256(_mm256_sll_epi64(e, csh), copy);
        let (a, c) = (_mm256_unpacklo_pd(wv, wt), _mm256_unpackhi_pd(wv, wt));
        // SAFETY: entries j..j+4 lie inside the buffers (j + 4 <= x.len() <= BLOCK).
        unsafe {
            _mm256_storeu_si256(b.idx.as_mut_ptr().add(j) as *mut __m256i, e);
            let p = b.pair.as_mut_ptr().add(j) as *mut f64;
            _mm256_storeu_pd(p, _mm256_permute2f128_pd::<0x20>(a, c));
            _mm256_storeu_pd(p.add(4), _mm256_permute2f128_pd::<0x31>(a, c));
        }
        j += 4;
    }
    pairs_front_scalar(fx, sub, x, w, n4, b) || _mm256_movemask_pd(bad) != 0
}

/// Adds one chunk (at most 2^16 points) of unweighted data to `acc`; returns whether a
/// coordinate was not finite.
#[inline(always)]
fn counts_chunk<M: Fma>(fx: &Fixed, sub: &Sub, x: &[f64], acc: &mut [u64], b: &mut Block) -> bool {
    assert!(acc.len() == sub.len(fx) && x.len() <= CHUNK);
    let mut bad = false;
    for xb in x.chunks(BLOCK) {
        bad |= match () {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: M::AVX512 holds only on the AVX-512 dispatch path.
            _ if M::AVX512 => unsafe { counts_front_512(fx, sub, xb, b) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: M::AVX2 holds only on the AVX2 and AVX-512 dispatch paths.
            _ if M::AVX2 => unsafe { counts_front_avx2(fx, sub, xb, b) },
            _ => counts_front_scalar(fx, sub, xb, 0, b),
        };
        // Prefetch the coordinates a block ahead while this block's adds run (the adds
        // issue no loads of `x`; see `binning::counts_chunk`).
        let next = xb.as_ptr().wrapping_add(PREFETCH);
        for (g, (ig, vg)) in b.idx[..xb.len()]
            .chunks(8)
            .zip(b.word[..xb.len()].chunks(8))
            .enumerate()
        {
            prefetch(next.wrapping_add(8 * g));
            for (&i, &v) in ig.iter().zip(vg) {
                debug_assert!(i < acc.len());
                // SAFETY: a slot is below nb + SPARE and its sub-bin below S, so the
                // entry is below ((nb + SPARE) << b) << lc = acc.len() (asserted above).
                unsafe { *acc.get_unchecked_mut(i) += v };
            }
        }
    }
    bad
}

/// Adds one chunk of weighted data to `acc`, point after point; returns whether a
/// coordinate was not finite or a weight negative or not finite.
#[inline(always)]
fn pairs_chunk<M: Fma>(
    fx: &Fixed,
    sub: &Sub,
    x: &[f64],
    w: &[f64],
    acc: &mut [Pair],
    b: &mut Block,
) -> bool {
    assert!(acc.len() == sub.len(fx) && x.len() == w.len());
    let mut bad = false;
    for (xb, wb) in x.chunks(BLOCK).zip(w.chunks(BLOCK)) {
        bad |= match () {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: M::AVX512 holds only on the AVX-512 dispatch path.
            _ if M::AVX512 => unsafe { pairs_front_512(fx, sub, xb, wb, b) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: M::AVX2 holds only on the AVX2 and AVX-512 dispatch paths.
            _ if M::AVX2 => unsafe { pairs_front_avx2(fx, sub, xb, wb, b) },
            _ => pairs_front_scalar(fx, sub, xb, wb, 0, b),
        };
        let (nx, nw) = (
            xb.as_ptr().wrapping_add(PREFETCH),
            wb.as_ptr().wrapping_add(PREFETCH),
        );
        for (g, (ig, pg)) in b.idx[..xb.len()]
            .chunks(8)
            .zip(b.pair[..xb.len()].chunks(8))
            .enumerate()
        {
            prefetch(nx.wrapping_add(8 * g));
            prefetch(nw.wrapping_add(8 * g));
            for (&i, p) in ig.iter().zip(pg) {
                debug_assert!(i < acc.len());
                // SAFETY: as in `counts_chunk`.
                let a = unsafe { acc.get_unchecked_mut(i) };
                // Lane by lane the same adds at every level (one two-wide add where
                // SIMD is enabled).
                a.0[0] += p.0[0];
                a.0[1] += p.0[1];
            }
        }
    }
    bad
}

crate::core::simd::simd_fn!(
    /// [`counts_chunk`] on the SIMD path `level` allows.
    fn counts_chunk_at => counts_chunk(
        fx: &Fixed,
        sub: &Sub,
        x: &[f64],
        acc: &mut [u64],
        b: &mut Block
    ) -> bool
);

crate::core::simd::simd_fn!(
    /// [`pairs_chunk`] on the SIMD path `level` allows.
    fn pairs_chunk_at => pairs_chunk(
        fx: &Fixed,
        sub: &Sub,
        x: &[f64],
        w: &[f64],
        acc: &mut [Pair],
        b: &mut Block
    ) -> bool
);

/// Exact integer sums of one thread's unweighted points per sub-bin: the count and the
/// sum of the fraction bits below the sub-bin (units of 2^-F).
struct Sums {
    cnt: Vec<u64>,
    low: Vec<u64>,
}

fn counts_part(level: Level, fx: &Fixed, x: &[f64], stop: &AtomicBool) -> Result<(Sums, bool)> {
    let sub = Sub::new(fx, COPIES_U);
    let ns = fx.nb << sub.b;
    let mut acc = try_vec(sub.len(fx), 0u64, "n_points")?;
    let mut s = Sums {
        cnt: try_vec(ns, 0u64, "n_points")?,
        low: try_vec(ns, 0u64, "n_points")?,
    };
    let mut b = Block::new();
    let mask = (1u64 << COUNT_SHIFT) - 1;
    let mut bad = false;
    // A packed word holds the count above bit 47 and the fraction bits below the
    // sub-bin (each below 2^(F − b)) under it, so it must be emptied before it holds
    // `cap` points; copy c takes the points j ≡ c mod COPIES_U of every chunk (at most
    // CHUNK/COPIES_U), so `per` chunks fill no copy to `cap`.
    let cap = ((1u64 << (64 - COUNT_SHIFT)) - 1).min(mask / sub.low().max(1)) as usize;
    let per = (cap / (CHUNK / COPIES_U)).max(1);
    debug_assert!(per * (CHUNK / COPIES_U) <= cap);
    for xs in x.chunks(CHUNK * per) {
        for xc in xs.chunks(CHUNK) {
            check_stop(stop)?;
            bad |= counts_chunk_at(level, fx, &sub, xc, &mut acc, &mut b);
        }
        for ((cp, c), l) in acc[..COPIES_U * ns]
            .chunks_exact_mut(COPIES_U)
            .zip(s.cnt.iter_mut())
            .zip(s.low.iter_mut())
        {
            let (mut cc, mut ll) = (0, 0);
            for a in cp.iter_mut() {
                cc += *a >> COUNT_SHIFT;
                ll += *a & mask;
                *a = 0;
            }
            *c += cc;
            *l += ll;
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
) -> Result<(Vec<Pair>, bool)> {
    let sub = Sub::new(fx, COPIES_W);
    let ns = fx.nb << sub.b;
    let mut acc = try_vec(sub.len(fx), Pair::default(), "n_points")?;
    let mut b = Block::new();
    let mut bad = false;
    for (xc, wc) in x.chunks(CHUNK).zip(w.chunks(CHUNK)) {
        check_stop(stop)?;
        bad |= pairs_chunk_at(level, fx, &sub, xc, wc, &mut acc, &mut b);
    }
    // The copies of each sub-bin, summed in order (the same at every level).
    let mut tot = try_vec(ns, Pair::default(), "n_points")?;
    for (t, cp) in tot.iter_mut().zip(acc.chunks(COPIES_W)) {
        *t = cp[0];
        for a in &cp[1..] {
            t.0[0] += a.0[0];
            t.0[1] += a.0[1];
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
    /// [`super::errfield::line1_error`] takes; the powers of t above the first with
    /// every point of a sub-bin at the sub-bin's mean fraction (see the module notes).
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

/// Adds W·t̄², W·t̄³ and W·t̄⁴ of one sub-bin (total weight `wt`, mean fraction `m`) to
/// `p`: its points taken at their mean fraction (see the module notes).
#[inline]
fn add_powers(p: &mut [f64; 3], wt: f64, m: f64) {
    let m2 = m * m;
    p[0] += wt * m2;
    p[1] += wt * m2 * m;
    p[2] += wt * m2 * m2;
}

/// Linear binning of `x` onto the lattice lo + k·δ, k < nb (weights `w`, or `wu` each)
/// and, in the same pass, the 1-D error sums per bin (see [`BinsAndFields`]). The
/// masses are the same as [`super::binning::linear_bin_checked`]'s to rounding
/// (unweighted: bit for bit). Points outside [lo, lo + (nb − 1)·δ] are dropped.
///
/// Allocates per thread 4·S·(nb + 4) accumulators of 8 bytes (unweighted, plus 2·S·nb
/// integers) or 16 bytes (weighted, plus S·nb pairs), S = 4 sub-bins per bin, plus the
/// nb masses and 4·nb sums.
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
    let sub = Sub::new(&fx, 1);
    let per = sub.per();
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
                        for (u, v) in [(&mut t.cnt, &s.cnt), (&mut t.low, &s.low)] {
                            u.iter_mut().zip(v).for_each(|(a, b)| *a += b);
                        }
                    }
                }
            }
            let s = tot.expect("at least one part");
            // Bin k holds count_k − Σt_k + Σt_{k−1}, an exact integer in units of 2^-F
            // (as in `binning::linear_bin_at`); sub-bin q of a bin starts at q·2^(F−b).
            let unit = wu / (1u64 << fx.fbits) as f64;
            let inv_one = 1.0 / (1u64 << fx.fbits) as f64;
            let mut carry = 0u64;
            for (k, (cs, ls)) in s.cnt.chunks(per).zip(s.low.chunks(per)).enumerate() {
                let (mut c, mut f) = (0u64, 0u64);
                let mut p = [0.0f64; 3];
                for (q, (&cq, &lq)) in cs.iter().zip(ls).enumerate() {
                    // Below n·2^F < 2^63 (see `Fixed`).
                    let fq = cq * ((q as u64) << sub.low_bits) + lq;
                    c += cq;
                    f += fq;
                    if cq > 0 {
                        add_powers(&mut p, cq as f64, fq as f64 / cq as f64 * inv_one);
                    }
                }
                bins[k] = ((c << fx.fbits) - f + carry) as f64 * unit;
                carry = f;
                let e = error_sums(f as f64 * unit, p[0] * wu, p[1] * wu, p[2] * wu);
                fine[4 * k..4 * k + 4].copy_from_slice(&e);
            }
        }
        Some(w) => {
            let res = over_parts(n, parts, |a, b| {
                pairs_part(level, &fx, &x[a..b], &w[a..b], stop)
            })?;
            let mut tot: Vec<Pair> = Vec::new();
            for (p, bd) in res {
                bad |= bd;
                if tot.is_empty() {
                    tot = p;
                } else {
                    for (u, v) in tot.iter_mut().zip(&p) {
                        u.0[0] += v.0[0];
                        u.0[1] += v.0[1];
                    }
                }
            }
            let mut carry = 0.0;
            for (k, sl) in tot.chunks(per).enumerate() {
                let (mut s0, mut s1) = (0.0, 0.0);
                let mut p = [0.0f64; 3];
                for a in sl {
                    let [wq, tq] = a.0;
                    s0 += wq;
                    s1 += tq;
                    if wq > 0.0 {
                        add_powers(&mut p, wq, tq / wq);
                    }
                }
                bins[k] = (s0 - s1) + carry;
                carry = s1;
                fine[4 * k..4 * k + 4].copy_from_slice(&error_sums(s1, p[0], p[1], p[2]));
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

    /// The error sums written out in floating point (t from (x − lo)/δ), with the power
    /// sums above the first taken per half bin at the points' mean fraction (the fused
    /// pass's model), and Σw per bin; also the exact Σw·u per bin.
    fn reference(
        x: &[f64],
        w: &[f64],
        lo: f64,
        delta: f64,
        nb: usize,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let per = 1usize << SUB_BITS;
        // Per sub-bin: Σw, Σw·t.
        let mut sw = vec![[0.0f64; 2]; nb * per];
        let mut mass = vec![0.0; nb];
        let mut exact2 = vec![0.0; nb];
        // The fraction's sub-bin as the pass finds it (the fixed-point position rounded
        // to 2^-31 of a bin, ties to even), so that points on a sub-bin edge fall alike.
        let scale = 1.0 / delta * 2f64.powi(31);
        for (&xi, &wi) in x.iter().zip(w) {
            let pos = (xi - lo) / delta;
            if !(pos >= 0.0 && pos <= (nb - 1) as f64) {
                continue;
            }
            let k = pos.floor() as usize;
            let t = pos - k as f64;
            let r = ((xi - lo) * scale).round_ties_even() as u64;
            let q = ((r & ((1 << 31) - 1)) >> (31 - SUB_BITS)) as usize;
            let k = if (r >> 31) as usize != k {
                (r >> 31) as usize
            } else {
                k
            };
            let t = if k as f64 > pos { 0.0 } else { t };
            sw[k * per + q][0] += wi;
            sw[k * per + q][1] += wi * t;
            mass[k] += wi;
            exact2[k] += wi * t * (1.0 - t);
        }
        let mut out = vec![0.0; 4 * nb];
        for k in 0..nb {
            let mut p = [0.0f64; 4];
            for a in &sw[k * per..(k + 1) * per] {
                if a[0] > 0.0 {
                    let m = a[1] / a[0];
                    p[0] += a[1];
                    p[1] += a[0] * m * m;
                    p[2] += a[0] * m * m * m;
                    p[3] += a[0] * m * m * m * m;
                }
            }
            out[4 * k..4 * k + 4].copy_from_slice(&error_sums(p[0], p[1], p[2], p[3]));
        }
        (out, mass, exact2)
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
                let (want, mass, exact2) = reference(&x, ww, lo, delta, nb);
                for k in 0..nb {
                    // Σw·u = Σw·t − Σw·t²: the model's Σw·t² is low by at most
                    // W·(1/2S)² (the spread within a sub-bin of width 1/S), never high.
                    let over = first.fine[4 * k] - exact2[k];
                    let per = (1u64 << SUB_BITS) as f64;
                    let tol = 1e-9 * mass[k] + 1e-12;
                    assert!(
                        over >= -tol && over <= mass[k] / (4.0 * per * per) + tol,
                        "n={n} k={k}: {over} (W = {})",
                        mass[k]
                    );
                }
                for q in 0..4 {
                    // Fractions quantised to 2^-31, rounding.
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
        let n = 2 * 4 * CHUNK + 3;
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
