//! Groups of up to eight rows of a small row-major matrix: their dot products with one
//! vector, and their weighted sum into another. The Sinkhorn small-problem path runs both
//! on the same rows while they are in L1, one pass over the kernel per iteration.
//!
//! The compiler's vectoriser handles these unreliably (it mixes widths, gathers or spills
//! depending on the surrounding code), so the AVX-512 and AVX2 paths are written with
//! intrinsics (four-lane vectors and masked tails on AVX2); the portable path is plain
//! loops.

use super::{finish_lanes, Fma, LANES};

/// Rows per group.
pub const GROUP_ROWS: usize = 8;

/// `out[r] = Σ_{j<m} k[r·stride + j]·w[j]` for the rows `r < nr` (at most 8).
///
/// `k` holds at least `(nr − 1)·stride + m` values and `w` at least `m`.
#[inline(always)]
pub fn dot_rows<M: Fma>(k: &[f64], stride: usize, m: usize, nr: usize, w: &[f64], out: &mut [f64]) {
    let nr = nr.min(GROUP_ROWS).min(out.len());
    if nr == 0 {
        return;
    }
    assert!(
        k.len() >= (nr - 1) * stride + m && w.len() >= m,
        "dot_rows: short input"
    );
    #[cfg(target_arch = "x86_64")]
    if M::AVX512 && nr == GROUP_ROWS {
        // SAFETY: M::AVX512 holds only on the AVX-512 dispatch path; the lengths were
        // checked above.
        unsafe { dot8_512(k, stride, m, w, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if M::AVX2 && nr == GROUP_ROWS {
        // SAFETY: M::AVX2 holds only on the AVX2 and AVX-512 dispatch paths; the lengths
        // were checked above.
        unsafe { dot8_avx2(k, stride, m, w, out) };
        return;
    }
    for (r, o) in out.iter_mut().enumerate().take(nr) {
        let row = &k[r * stride..r * stride + m];
        let mut acc = [0.0f64; LANES];
        let ch = row.chunks_exact(LANES);
        let tail = ch.remainder();
        for (q, wq) in ch.zip(w[..m].chunks_exact(LANES)) {
            for l in 0..LANES {
                acc[l] = M::ma(q[l], wq[l], acc[l]);
            }
        }
        let mut t = 0.0;
        for (x, y) in tail.iter().zip(&w[m - tail.len()..m]) {
            t = M::ma(*x, *y, t);
        }
        *o = finish_lanes(&acc) + t;
    }
}

/// `t[j] += Σ_{r<nr} w[r]·k[r·stride + j]` for `j < m`, rows in order.
///
/// `k` holds at least `(nr − 1)·stride + m` values, `w` at least `nr`, `t` at least `m`.
#[inline(always)]
pub fn axpy_rows<M: Fma>(k: &[f64], stride: usize, m: usize, nr: usize, w: &[f64], t: &mut [f64]) {
    let nr = nr.min(GROUP_ROWS).min(w.len());
    if nr == 0 {
        return;
    }
    assert!(
        k.len() >= (nr - 1) * stride + m && t.len() >= m,
        "axpy_rows: short input"
    );
    #[cfg(target_arch = "x86_64")]
    if M::AVX512 && nr == GROUP_ROWS {
        // SAFETY: as in `dot_rows`.
        unsafe { axpy_512::<GROUP_ROWS>(k, stride, m, w, t) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if M::AVX2 && nr == GROUP_ROWS {
        // SAFETY: as in `dot_rows`.
        unsafe { axpy_avx2::<GROUP_ROWS>(k, stride, m, w, t) };
        return;
    }
    for (j, o) in t.iter_mut().enumerate().take(m) {
        let mut v = *o;
        for (r, &wr) in w.iter().enumerate().take(nr) {
            v = M::ma(wr, k[r * stride + j], v);
        }
        *o = v;
    }
}

/// Rows of [`axpy_rows16`]: two groups.
pub const PAIR_ROWS: usize = 2 * GROUP_ROWS;

/// [`axpy_rows`] for 16 rows in one pass over `t` (the same sums in the same order as two
/// calls of eight rows).
///
/// `k` holds at least `15·stride + m` values, `w` at least 16, `t` at least `m`.
#[inline(always)]
pub fn axpy_rows16<M: Fma>(k: &[f64], stride: usize, m: usize, w: &[f64], t: &mut [f64]) {
    assert!(
        k.len() >= (PAIR_ROWS - 1) * stride + m && w.len() >= PAIR_ROWS && t.len() >= m,
        "axpy_rows16: short input"
    );
    #[cfg(target_arch = "x86_64")]
    if M::AVX512 {
        // SAFETY: M::AVX512 holds only on the AVX-512 dispatch path; the lengths were
        // checked above.
        unsafe { axpy_512::<PAIR_ROWS>(k, stride, m, w, t) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if M::AVX2 {
        // SAFETY: as above, for the AVX2 and AVX-512 paths.
        unsafe { axpy_avx2::<PAIR_ROWS>(k, stride, m, w, t) };
        return;
    }
    axpy_rows::<M>(k, stride, m, GROUP_ROWS, &w[..GROUP_ROWS], t);
    axpy_rows::<M>(
        &k[GROUP_ROWS * stride..],
        stride,
        m,
        GROUP_ROWS,
        &w[GROUP_ROWS..],
        t,
    );
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn dot8_512(k: &[f64], stride: usize, m: usize, w: &[f64], out: &mut [f64]) {
    use std::arch::x86_64::*;
    let kp = k.as_ptr();
    let wp = w.as_ptr();
    let mut acc = [_mm512_setzero_pd(); GROUP_ROWS];
    let mut j = 0;
    while j < m {
        let rem = m - j;
        let mask: __mmask8 = if rem >= 8 { 0xff } else { (1u8 << rem) - 1 };
        // SAFETY: lanes j..j+min(8, rem) lie inside w[..m] and inside each row's m values.
        unsafe {
            let wv = _mm512_maskz_loadu_pd(mask, wp.add(j));
            for (r, a) in acc.iter_mut().enumerate() {
                let kv = _mm512_maskz_loadu_pd(mask, kp.add(r * stride + j));
                *a = _mm512_fmadd_pd(kv, wv, *a);
            }
        }
        j += 8;
    }
    // The eight horizontal sums as one transposing tree (21 operations instead of eight
    // separate reductions): pairs of rows, then halves of 128-bit lanes, then lanes.
    macro_rules! pair {
        ($x:expr, $y:expr) => {
            _mm512_add_pd(_mm512_unpacklo_pd($x, $y), _mm512_unpackhi_pd($x, $y))
        };
    }
    // Lanes (r, r+1) for columns 0..4 then 4..8, twice per vector.
    macro_rules! quad {
        ($x:expr, $y:expr) => {{
            let (x, y) = ($x, $y);
            _mm512_add_pd(
                _mm512_shuffle_f64x2::<0x88>(x, y),
                _mm512_shuffle_f64x2::<0xdd>(x, y),
            )
        }};
    }
    let lo = quad!(pair!(acc[0], acc[1]), pair!(acc[2], acc[3]));
    let hi = quad!(pair!(acc[4], acc[5]), pair!(acc[6], acc[7]));
    let sums = quad!(lo, hi);
    if out.len() >= GROUP_ROWS {
        // SAFETY: out holds at least 8 values.
        unsafe { _mm512_storeu_pd(out.as_mut_ptr(), sums) };
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn axpy_512<const R: usize>(k: &[f64], stride: usize, m: usize, w: &[f64], t: &mut [f64]) {
    use std::arch::x86_64::*;
    let kp = k.as_ptr();
    let tp = t.as_mut_ptr();
    let wr: [__m512d; R] = std::array::from_fn(|r| _mm512_set1_pd(w[r]));
    let mut j = 0;
    while j < m {
        let rem = m - j;
        let mask: __mmask8 = if rem >= 8 { 0xff } else { (1u8 << rem) - 1 };
        // SAFETY: lanes j..j+min(8, rem) lie inside t[..m] and inside each row's m values.
        unsafe {
            let mut tv = _mm512_maskz_loadu_pd(mask, tp.add(j));
            for (r, wv) in wr.iter().enumerate() {
                let kv = _mm512_maskz_loadu_pd(mask, kp.add(r * stride + j));
                tv = _mm512_fmadd_pd(kv, *wv, tv);
            }
            _mm512_mask_storeu_pd(tp.add(j), mask, tv);
        }
        j += 8;
    }
}

/// The AVX2 body of [`dot_rows`] for a full group: eight accumulators of four lanes,
/// a masked tail, and the eight horizontal sums as two transposing trees.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot8_avx2(k: &[f64], stride: usize, m: usize, w: &[f64], out: &mut [f64]) {
    use std::arch::x86_64::*;
    let kp = k.as_ptr();
    let wp = w.as_ptr();
    let mut acc = [_mm256_setzero_pd(); GROUP_ROWS];
    let mut j = 0;
    while j + 4 <= m {
        // SAFETY: lanes j..j+4 lie inside w[..m] and inside each row's m values.
        unsafe {
            let wv = _mm256_loadu_pd(wp.add(j));
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_pd(_mm256_loadu_pd(kp.add(r * stride + j)), wv, *a);
            }
        }
        j += 4;
    }
    if j < m {
        let mask = super::lanes_below(m - j);
        // SAFETY: the masked lanes j..m lie inside w and inside each row.
        unsafe {
            let wv = _mm256_maskload_pd(wp.add(j), mask);
            for (r, a) in acc.iter_mut().enumerate() {
                let kv = _mm256_maskload_pd(kp.add(r * stride + j), mask);
                *a = _mm256_fmadd_pd(kv, wv, *a);
            }
        }
    }
    // Rows (r, r+1) pairwise within 128-bit halves, then the halves of rows r..r+4.
    let quad = |a: __m256d, b: __m256d, c: __m256d, e: __m256d| {
        let ab = _mm256_hadd_pd(a, b);
        let ce = _mm256_hadd_pd(c, e);
        _mm256_add_pd(
            _mm256_permute2f128_pd::<0x20>(ab, ce),
            _mm256_permute2f128_pd::<0x31>(ab, ce),
        )
    };
    let lo = quad(acc[0], acc[1], acc[2], acc[3]);
    let hi = quad(acc[4], acc[5], acc[6], acc[7]);
    if out.len() >= GROUP_ROWS {
        // SAFETY: out holds at least 8 values.
        unsafe {
            _mm256_storeu_pd(out.as_mut_ptr(), lo);
            _mm256_storeu_pd(out.as_mut_ptr().add(4), hi);
        }
    }
}

/// The AVX2 body of [`axpy_rows`] (R = 8) and [`axpy_rows16`] (R = 16): eight columns
/// per step as two independent chains, the rows in order; a masked tail.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn axpy_avx2<const R: usize>(k: &[f64], stride: usize, m: usize, w: &[f64], t: &mut [f64]) {
    use std::arch::x86_64::*;
    let kp = k.as_ptr();
    let tp = t.as_mut_ptr();
    let wp = w.as_ptr();
    let mut j = 0;
    while j + 8 <= m {
        // SAFETY: lanes j..j+8 lie inside t[..m] and inside each row's m values; w holds
        // R values.
        unsafe {
            let mut t0 = _mm256_loadu_pd(tp.add(j));
            let mut t1 = _mm256_loadu_pd(tp.add(j + 4));
            for r in 0..R {
                let wv = _mm256_broadcast_sd(&*wp.add(r));
                let row = kp.add(r * stride + j);
                t0 = _mm256_fmadd_pd(_mm256_loadu_pd(row), wv, t0);
                t1 = _mm256_fmadd_pd(_mm256_loadu_pd(row.add(4)), wv, t1);
            }
            _mm256_storeu_pd(tp.add(j), t0);
            _mm256_storeu_pd(tp.add(j + 4), t1);
        }
        j += 8;
    }
    while j < m {
        let mask = super::lanes_below(m - j);
        // SAFETY: the masked lanes j..min(j+4, m) lie inside t and inside each row.
        unsafe {
            let mut tv = _mm256_maskload_pd(tp.add(j), mask);
            for r in 0..R {
                let wv = _mm256_broadcast_sd(&*wp.add(r));
                tv = _mm256_fmadd_pd(_mm256_maskload_pd(kp.add(r * stride + j), mask), wv, tv);
            }
            _mm256_maskstore_pd(tp.add(j), mask, tv);
        }
        j += 4;
    }
}

#[cfg(test)]
mod tests {
    use super::super::{dispatch, SimdTask};
    use super::*;
    use crate::core::testing::simd_levels;

    struct Both<'a> {
        k: &'a [f64],
        stride: usize,
        m: usize,
        nr: usize,
        w: &'a [f64],
    }
    impl SimdTask for Both<'_> {
        type Output = (Vec<f64>, Vec<f64>);
        #[inline(always)]
        fn run<M: Fma>(self) -> (Vec<f64>, Vec<f64>) {
            let mut d = vec![0.0; GROUP_ROWS];
            dot_rows::<M>(self.k, self.stride, self.m, self.nr, self.w, &mut d);
            let mut t: Vec<f64> = (0..self.m).map(|j| j as f64 * 0.5).collect();
            axpy_rows::<M>(self.k, self.stride, self.m, self.nr, self.w, &mut t);
            (d, t)
        }
    }

    struct Pair<'a> {
        k: &'a [f64],
        stride: usize,
        m: usize,
        w: &'a [f64],
    }
    impl SimdTask for Pair<'_> {
        type Output = (Vec<f64>, Vec<f64>);
        #[inline(always)]
        fn run<M: Fma>(self) -> (Vec<f64>, Vec<f64>) {
            let start: Vec<f64> = (0..self.m).map(|j| j as f64 * 0.25).collect();
            let mut one = start.clone();
            axpy_rows16::<M>(self.k, self.stride, self.m, self.w, &mut one);
            let mut two = start;
            axpy_rows::<M>(self.k, self.stride, self.m, 8, &self.w[..8], &mut two);
            let rest = &self.k[8 * self.stride..];
            axpy_rows::<M>(rest, self.stride, self.m, 8, &self.w[8..], &mut two);
            (one, two)
        }
    }

    #[test]
    fn sixteen_rows_equal_two_groups_bitwise() {
        for m in [1usize, 7, 8, 64, 67] {
            let stride = m + 2;
            let k: Vec<f64> = (0..16 * stride).map(|i| (i as f64 * 0.37).sin()).collect();
            let w: Vec<f64> = (0..16).map(|i| (i as f64 * 0.71).cos()).collect();
            for lvl in simd_levels() {
                let (one, two) = dispatch(
                    lvl,
                    Pair {
                        k: &k,
                        stride,
                        m,
                        w: &w,
                    },
                );
                assert_eq!(one, two, "{lvl:?} m={m}");
            }
        }
    }

    #[test]
    fn groups_match_naive_at_every_level() {
        for m in [1usize, 5, 8, 13, 64, 67] {
            for nr in [1usize, 3, 8] {
                let stride = m + 3;
                let k: Vec<f64> = (0..nr * stride).map(|i| (i as f64 * 0.37).sin()).collect();
                let w: Vec<f64> = (0..m.max(nr)).map(|i| (i as f64 * 0.71).cos()).collect();
                let want_d: Vec<f64> = (0..nr)
                    .map(|r| (0..m).map(|j| k[r * stride + j] * w[j]).sum())
                    .collect();
                let want_t: Vec<f64> = (0..m)
                    .map(|j| {
                        j as f64 * 0.5 + (0..nr).map(|r| w[r] * k[r * stride + j]).sum::<f64>()
                    })
                    .collect();
                for lvl in simd_levels() {
                    let (d, t) = dispatch(
                        lvl,
                        Both {
                            k: &k,
                            stride,
                            m,
                            nr,
                            w: &w,
                        },
                    );
                    for (a, b) in d.iter().zip(&want_d) {
                        assert!((a - b).abs() < 1e-13, "{lvl:?} m={m} nr={nr}: {a} vs {b}");
                    }
                    for (a, b) in t.iter().zip(&want_t) {
                        assert!((a - b).abs() < 1e-13, "{lvl:?} m={m} nr={nr}: {a} vs {b}");
                    }
                }
            }
        }
    }
}
