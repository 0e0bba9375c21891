//! Squared distances of f64 point sets through a register-blocked product, on the
//! AVX-512 and AVX2 paths.
//!
//! A general GEMM packs both operands on every call; the pairwise engine calls one per
//! (row block, column tile), so packing cost about a fifth of the multiply at d = 256.
//! Here the columns are packed once per call into k-major panels of [`NR`] points and
//! each row block once into k-major groups of [`MR`] rows. The micro-kernel keeps a
//! 12 × 16 block of products in 24 registers and writes ‖q‖² + ‖x‖² − 2 q·x, clamped at
//! zero, straight into the distance tile. The f32 kernel ([`dist_tile_f32`]) does the
//! same with 12 × 32 blocks of f32 products, widened to f64 for the identity.
//!
//! The AVX2 kernels have 16 ymm registers: each 12 × 16 (f32: 12 × 32) block is computed
//! as four 6 × 8 (6 × 16) register blocks of 12 accumulators, half a panel at a time,
//! in depth chunks of at most 256. Their operands are packed in half groups of 6 rows
//! and half panels of 8 (16) points ([`group_width`], [`panel_width`]), so each register
//! block streams two contiguous buffers; the counts and paddings stay those of whole
//! groups and panels.

use super::{Fma, Level, MulAdd};

/// Rows per group (broadcast operand).
pub const MR: usize = 12;
/// Columns per panel (two AVX-512 registers of f64).
pub const NR: usize = 16;
/// Columns per panel of the f32 kernel (two AVX-512 registers of f32).
pub const NR32: usize = 32;
/// Largest depth chunk of the AVX-512 kernel: a 16 × 256 panel slice is 32 KiB.
#[cfg(target_arch = "x86_64")]
const KC: usize = 256;

/// Packs `n` row-major points of dimension `d` into k-major blocks of `w` points,
/// zero-padded: `ceil(n / w) · w · d` values.
pub fn pack<T: Copy + Default>(x: &[T], n: usize, d: usize, w: usize) -> Vec<T> {
    pack_to(x, n, d, w, n.div_ceil(w) * w)
}

/// [`pack`], zero-padded to `n_pad` points (`n_pad >= n`, a multiple of `w`).
pub fn pack_to<T: Copy + Default>(x: &[T], n: usize, d: usize, w: usize, n_pad: usize) -> Vec<T> {
    let nb = n_pad.max(n).div_ceil(w);
    let mut out = vec![T::default(); nb * w * d];
    for i in 0..n {
        let (b, l) = (i / w, i % w);
        let base = b * w * d;
        for (k, &v) in x[i * d..(i + 1) * d].iter().enumerate() {
            out[base + k * w + l] = v;
        }
    }
    out
}

/// Points per packed block of rows that the kernels of `level` read: [`MR`], or a
/// half group on AVX2 (the AVX2 register block has 6 rows).
pub fn group_width(level: Level) -> usize {
    if level == Level::Avx2 {
        MR / 2
    } else {
        MR
    }
}

/// Points per packed block of columns that the kernels of `level` read, for panels of
/// `nr` points ([`NR`] or [`NR32`]): a half panel on AVX2.
pub fn panel_width(level: Level, nr: usize) -> usize {
    if level == Level::Avx2 {
        nr / 2
    } else {
        nr
    }
}

/// `out[i·ldo + j] = max(qn[i] + xn[j] − 2·Σ_k row_i[k]·col_j[k], 0)` for the rows of
/// `ng` groups (packed by [`pack_to`] with `w = group_width(level)` and `n_pad = ng·MR`)
/// and the columns of `np` panels (packed with `w = panel_width(level, NR)` and
/// `n_pad = np·NR`), padding included, where `level` is the path `M` runs on.
///
/// `groups` holds `ng·MR·d` values, `panels` `np·NR·d`, `qn` `ng·MR`, `xn` `np·NR`, and
/// `out` `ng·MR` rows of stride `ldo >= np·NR`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn dist_tile<M: Fma>(
    groups: &[f64],
    ng: usize,
    d: usize,
    panels: &[f64],
    np: usize,
    qn: &[f64],
    xn: &[f64],
    out: &mut [f64],
    ldo: usize,
) {
    if !check(groups.len(), ng, d, panels.len(), np, NR, qn, xn, out, ldo) {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if M::AVX512 {
        // SAFETY: M::AVX512 holds only on the AVX-512 dispatch path; lengths checked above.
        unsafe { dist_tile_512(groups, ng, d, panels, np, qn, xn, out, ldo) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if M::AVX2 {
        // SAFETY: M::AVX2 holds only on the AVX2 and AVX-512 dispatch paths; lengths
        // checked above.
        unsafe { dist_tile_avx2(groups, ng, d, panels, np, qn, xn, out, ldo) };
        return;
    }
    portable::<f64, M, NR>(groups, ng, d, panels, np, qn, xn, out, ldo);
}

/// Whether there is work, after checking the lengths [`dist_tile`] documents for panels
/// of `w` points (a short buffer is a bug in the caller: it panics).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn check(
    groups: usize,
    ng: usize,
    d: usize,
    panels: usize,
    np: usize,
    w: usize,
    qn: &[f64],
    xn: &[f64],
    out: &[f64],
    ldo: usize,
) -> bool {
    if ng == 0 || np == 0 {
        return false;
    }
    assert!(
        groups >= ng * MR * d
            && panels >= np * w * d
            && qn.len() >= ng * MR
            && xn.len() >= np * w
            && ldo >= np * w
            && out.len() >= (ng * MR - 1) * ldo + np * w,
        "dist_tile: short input"
    );
    true
}

/// The portable body of both kernels: products accumulate in `T`, the identity in f64.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn portable<T: MulAdd + Default + Into<f64>, M: Fma, const W: usize>(
    groups: &[T],
    ng: usize,
    d: usize,
    panels: &[T],
    np: usize,
    qn: &[f64],
    xn: &[f64],
    out: &mut [f64],
    ldo: usize,
) {
    for g in 0..ng {
        let a = &groups[g * MR * d..(g + 1) * MR * d];
        for p in 0..np {
            let b = &panels[p * W * d..(p + 1) * W * d];
            let mut acc = [[T::default(); W]; MR];
            for k in 0..d {
                for (r, row) in acc.iter_mut().enumerate() {
                    let ak = a[k * MR + r];
                    for l in 0..W {
                        row[l] = M::ma(ak, b[k * W + l], row[l]);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                let i = g * MR + r;
                for (l, &c) in row.iter().enumerate() {
                    let j = p * W + l;
                    let v = (qn[i] + xn[j]) - 2.0 * c.into();
                    out[i * ldo + j] = if v > 0.0 { v } else { 0.0 };
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
fn dist_tile_512(
    groups: &[f64],
    ng: usize,
    d: usize,
    panels: &[f64],
    np: usize,
    qn: &[f64],
    xn: &[f64],
    out: &mut [f64],
    ldo: usize,
) {
    use std::arch::x86_64::*;
    let op = out.as_mut_ptr();
    let two = _mm512_set1_pd(2.0);
    let zero = _mm512_setzero_pd();
    // Depth chunks of KC keep a panel (16·KC values) in L1 while the groups stream by;
    // the products of earlier chunks wait in the output tile.
    let kc_even = d.div_ceil(d.div_ceil(KC));
    let mut k0 = 0;
    while k0 < d {
        let kc = kc_even.min(d - k0);
        let (first, last) = (k0 == 0, k0 + kc == d);
        for p in 0..np {
            // SAFETY: panel p, from depth k0, and its norms lie inside `panels` and `xn`
            // (checked by the caller).
            let (b0p, x0, x1) = unsafe {
                (
                    panels.as_ptr().add(p * NR * d + k0 * NR),
                    _mm512_loadu_pd(xn.as_ptr().add(p * NR)),
                    _mm512_loadu_pd(xn.as_ptr().add(p * NR + 8)),
                )
            };
            for g in 0..ng {
                // SAFETY: group g, from depth k0, lies inside `groups` (checked).
                let mut ap = unsafe { groups.as_ptr().add(g * MR * d + k0 * MR) };
                let mut bp = b0p;
                let mut lo = [_mm512_setzero_pd(); MR];
                let mut hi = [_mm512_setzero_pd(); MR];
                for _ in 0..kc {
                    // SAFETY: each step reads MR values of the group and NR of the
                    // panel, kc steps from depth k0 in all.
                    unsafe {
                        let b0 = _mm512_loadu_pd(bp);
                        let b1 = _mm512_loadu_pd(bp.add(8));
                        for r in 0..MR {
                            let av = _mm512_set1_pd(*ap.add(r));
                            lo[r] = _mm512_fmadd_pd(av, b0, lo[r]);
                            hi[r] = _mm512_fmadd_pd(av, b1, hi[r]);
                        }
                        ap = ap.add(MR);
                        bp = bp.add(NR);
                    }
                }
                for r in 0..MR {
                    let i = g * MR + r;
                    // SAFETY: row i < ng·MR and columns p·NR .. p·NR + 16 <= ldo (checked).
                    unsafe {
                        let o = op.add(i * ldo + p * NR);
                        let (mut c0, mut c1) = (lo[r], hi[r]);
                        if !first {
                            c0 = _mm512_add_pd(c0, _mm512_loadu_pd(o));
                            c1 = _mm512_add_pd(c1, _mm512_loadu_pd(o.add(8)));
                        }
                        if last {
                            let q = _mm512_set1_pd(*qn.as_ptr().add(i));
                            c0 = _mm512_max_pd(
                                _mm512_fnmadd_pd(two, c0, _mm512_add_pd(q, x0)),
                                zero,
                            );
                            c1 = _mm512_max_pd(
                                _mm512_fnmadd_pd(two, c1, _mm512_add_pd(q, x1)),
                                zero,
                            );
                        }
                        _mm512_storeu_pd(o, c0);
                        _mm512_storeu_pd(o.add(8), c1);
                    }
                }
            }
        }
        k0 += kc;
    }
}

/// [`dist_tile`] for f32 points: products accumulate in f32 over depth chunks (chunks
/// are added in f64), panels hold [`NR32`] points, the identity runs in f64.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn dist_tile_f32<M: Fma>(
    groups: &[f32],
    ng: usize,
    d: usize,
    panels: &[f32],
    np: usize,
    qn: &[f64],
    xn: &[f64],
    out: &mut [f64],
    ldo: usize,
) {
    if !check(
        groups.len(),
        ng,
        d,
        panels.len(),
        np,
        NR32,
        qn,
        xn,
        out,
        ldo,
    ) {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if M::AVX512 {
        // SAFETY: M::AVX512 holds only on the AVX-512 dispatch path; lengths checked above.
        unsafe { dist_tile_f32_512(groups, ng, d, panels, np, qn, xn, out, ldo) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if M::AVX2 {
        // SAFETY: M::AVX2 holds only on the AVX2 and AVX-512 dispatch paths; lengths
        // checked above.
        unsafe { dist_tile_f32_avx2(groups, ng, d, panels, np, qn, xn, out, ldo) };
        return;
    }
    portable::<f32, M, NR32>(groups, ng, d, panels, np, qn, xn, out, ldo);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
fn dist_tile_f32_512(
    groups: &[f32],
    ng: usize,
    d: usize,
    panels: &[f32],
    np: usize,
    qn: &[f64],
    xn: &[f64],
    out: &mut [f64],
    ldo: usize,
) {
    use std::arch::x86_64::*;
    let op = out.as_mut_ptr();
    let two = _mm512_set1_pd(2.0);
    let zero = _mm512_setzero_pd();
    let kc_even = d.div_ceil(d.div_ceil(KC));
    // The two f64 halves of an f32 register.
    #[inline(always)]
    fn halves(v: __m512) -> (__m512d, __m512d) {
        // SAFETY: plain register conversions, available wherever AVX-512F is.
        unsafe {
            (
                _mm512_cvtps_pd(_mm512_castps512_ps256(v)),
                _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
                    _mm512_castps_pd(v),
                ))),
            )
        }
    }
    let mut k0 = 0;
    while k0 < d {
        let kc = kc_even.min(d - k0);
        let (first, last) = (k0 == 0, k0 + kc == d);
        for p in 0..np {
            // SAFETY: panel p, from depth k0, lies inside `panels` (checked by the caller).
            let b0p = unsafe { panels.as_ptr().add(p * NR32 * d + k0 * NR32) };
            for g in 0..ng {
                // SAFETY: group g, from depth k0, lies inside `groups` (checked).
                let mut ap = unsafe { groups.as_ptr().add(g * MR * d + k0 * MR) };
                let mut bp = b0p;
                let mut lo = [_mm512_setzero_ps(); MR];
                let mut hi = [_mm512_setzero_ps(); MR];
                for _ in 0..kc {
                    // SAFETY: each step reads MR values of the group and NR32 of the
                    // panel, kc steps from depth k0 in all.
                    unsafe {
                        let b0 = _mm512_loadu_ps(bp);
                        let b1 = _mm512_loadu_ps(bp.add(16));
                        for r in 0..MR {
                            let av = _mm512_set1_ps(*ap.add(r));
                            lo[r] = _mm512_fmadd_ps(av, b0, lo[r]);
                            hi[r] = _mm512_fmadd_ps(av, b1, hi[r]);
                        }
                        ap = ap.add(MR);
                        bp = bp.add(NR32);
                    }
                }
                for r in 0..MR {
                    let i = g * MR + r;
                    let (a0, a1) = halves(lo[r]);
                    let (a2, a3) = halves(hi[r]);
                    let mut c = [a0, a1, a2, a3];
                    // SAFETY: row i < ng·MR and columns p·NR32 .. p·NR32 + 32 <= ldo, with
                    // their norms inside `xn` (checked by the caller).
                    unsafe {
                        let o = op.add(i * ldo + p * NR32);
                        let q = _mm512_set1_pd(*qn.as_ptr().add(i));
                        for (h, ch) in c.iter_mut().enumerate() {
                            if !first {
                                *ch = _mm512_add_pd(*ch, _mm512_loadu_pd(o.add(8 * h)));
                            }
                            if last {
                                let x = _mm512_loadu_pd(xn.as_ptr().add(p * NR32 + 8 * h));
                                *ch = _mm512_max_pd(
                                    _mm512_fnmadd_pd(two, *ch, _mm512_add_pd(q, x)),
                                    zero,
                                );
                            }
                            _mm512_storeu_pd(o.add(8 * h), *ch);
                        }
                    }
                }
            }
        }
        k0 += kc;
    }
}

/// Largest depth chunk of the AVX2 kernels: a half panel (8 f64 or 16 f32 points,
/// 16 KiB) stays in L1 while half groups (12 KiB) stream by.
#[cfg(target_arch = "x86_64")]
const KC2: usize = 256;
/// Rows of the AVX2 micro-kernels (half a group).
#[cfg(target_arch = "x86_64")]
const MH: usize = MR / 2;

/// The AVX2 body of [`dist_tile`]: each 12 × 16 block of a group and a panel is computed
/// as four 6 × 8 register blocks (12 accumulators, two panel registers and one broadcast:
/// 15 of the 16 ymm registers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn dist_tile_avx2(
    groups: &[f64],
    ng: usize,
    d: usize,
    panels: &[f64],
    np: usize,
    qn: &[f64],
    xn: &[f64],
    out: &mut [f64],
    ldo: usize,
) {
    use std::arch::x86_64::*;
    const NH: usize = NR / 2;
    let op = out.as_mut_ptr();
    let two = _mm256_set1_pd(2.0);
    let zero = _mm256_setzero_pd();
    let kc_even = d.div_ceil(d.div_ceil(KC2));
    let mut k0 = 0;
    while k0 < d {
        let kc = kc_even.min(d - k0);
        let (first, last) = (k0 == 0, k0 + kc == d);
        for p in 0..np {
            // Half panels outside the groups: a half panel stays in L1 while the groups
            // of the block go by.
            for h in 0..2 {
                let j0 = p * NR + h * NH;
                // SAFETY: half h of panel p, from depth k0, and its norms lie inside
                // `panels` and `xn` (checked by the caller).
                let (b0p, x0, x1) = unsafe {
                    (
                        panels.as_ptr().add((p * NR + h * NH) * d + k0 * NH),
                        _mm256_loadu_pd(xn.as_ptr().add(j0)),
                        _mm256_loadu_pd(xn.as_ptr().add(j0 + 4)),
                    )
                };
                // The next half panel of this tile (kc lines of 64 bytes from depth k0),
                // prefetched a slice per register block so that it is in cache when its
                // turn comes: without it, the first pass over each half panel waits on
                // L2/L3 (distances 86 to 88 % of the FMA peak at d = 256, 89 to 92 % with
                // it; measured by `examples/fma_peak`). The AVX-512 kernel's whole panel
                // (32 KiB) fills L1, and prefetching the next one there measured slower.
                let next = (p * NR + h * NH + NH < np * NR).then(|| b0p.wrapping_add(NH * d));
                for g in 0..ng {
                    for v in 0..2 {
                        if let Some(nx) = next {
                            let blk = 2 * g + v;
                            let (l0, l1) = (blk * kc / (2 * ng), (blk + 1) * kc / (2 * ng));
                            for l in l0..l1 {
                                // SAFETY: a prefetch hint inside the next half panel.
                                unsafe {
                                    _mm_prefetch::<_MM_HINT_T0>(nx.add(l * NH).cast());
                                }
                            }
                        }
                        // SAFETY: rows v·6 .. v·6 + 6 of group g, from depth k0, lie
                        // inside `groups` (checked).
                        let mut ap =
                            unsafe { groups.as_ptr().add((g * MR + v * MH) * d + k0 * MH) };
                        let mut bp = b0p;
                        let mut lo = [_mm256_setzero_pd(); MH];
                        let mut hi = [_mm256_setzero_pd(); MH];
                        for _ in 0..kc {
                            // SAFETY: each step reads 6 values of the group and 8 of the
                            // panel, kc steps from depth k0 in all.
                            unsafe {
                                let b0 = _mm256_loadu_pd(bp);
                                let b1 = _mm256_loadu_pd(bp.add(4));
                                for r in 0..MH {
                                    let av = _mm256_broadcast_sd(&*ap.add(r));
                                    lo[r] = _mm256_fmadd_pd(av, b0, lo[r]);
                                    hi[r] = _mm256_fmadd_pd(av, b1, hi[r]);
                                }
                                ap = ap.add(MH);
                                bp = bp.add(NH);
                            }
                        }
                        for r in 0..MH {
                            let i = g * MR + v * MH + r;
                            // SAFETY: row i < ng·MR and columns j0 .. j0 + 8 <= ldo (checked).
                            unsafe {
                                let o = op.add(i * ldo + j0);
                                let (mut c0, mut c1) = (lo[r], hi[r]);
                                if !first {
                                    c0 = _mm256_add_pd(c0, _mm256_loadu_pd(o));
                                    c1 = _mm256_add_pd(c1, _mm256_loadu_pd(o.add(4)));
                                }
                                if last {
                                    let q = _mm256_broadcast_sd(&*qn.as_ptr().add(i));
                                    c0 = _mm256_max_pd(
                                        _mm256_fnmadd_pd(two, c0, _mm256_add_pd(q, x0)),
                                        zero,
                                    );
                                    c1 = _mm256_max_pd(
                                        _mm256_fnmadd_pd(two, c1, _mm256_add_pd(q, x1)),
                                        zero,
                                    );
                                }
                                _mm256_storeu_pd(o, c0);
                                _mm256_storeu_pd(o.add(4), c1);
                            }
                        }
                    }
                }
            }
        }
        k0 += kc;
    }
}

/// The AVX2 body of [`dist_tile_f32`]: 6 × 16 register blocks of f32 products (a half
/// panel), widened to f64 for the identity.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn dist_tile_f32_avx2(
    groups: &[f32],
    ng: usize,
    d: usize,
    panels: &[f32],
    np: usize,
    qn: &[f64],
    xn: &[f64],
    out: &mut [f64],
    ldo: usize,
) {
    use std::arch::x86_64::*;
    const NH: usize = NR32 / 2;
    let op = out.as_mut_ptr();
    let two = _mm256_set1_pd(2.0);
    let zero = _mm256_setzero_pd();
    let kc_even = d.div_ceil(d.div_ceil(KC2));
    let mut k0 = 0;
    while k0 < d {
        let kc = kc_even.min(d - k0);
        let (first, last) = (k0 == 0, k0 + kc == d);
        for p in 0..np {
            for h in 0..2 {
                let j0 = p * NR32 + h * NH;
                // SAFETY: half h of panel p, from depth k0, lies inside `panels` (checked
                // by the caller).
                let b0p = unsafe { panels.as_ptr().add((p * NR32 + h * NH) * d + k0 * NH) };
                for g in 0..ng {
                    for v in 0..2 {
                        // SAFETY: rows v·6 .. v·6 + 6 of group g, from depth k0, lie
                        // inside `groups` (checked).
                        let mut ap =
                            unsafe { groups.as_ptr().add((g * MR + v * MH) * d + k0 * MH) };
                        let mut bp = b0p;
                        let mut lo = [_mm256_setzero_ps(); MH];
                        let mut hi = [_mm256_setzero_ps(); MH];
                        for _ in 0..kc {
                            // SAFETY: each step reads 6 values of the group and 16 of the
                            // panel, kc steps from depth k0 in all.
                            unsafe {
                                let b0 = _mm256_loadu_ps(bp);
                                let b1 = _mm256_loadu_ps(bp.add(8));
                                for r in 0..MH {
                                    let av = _mm256_broadcast_ss(&*ap.add(r));
                                    lo[r] = _mm256_fmadd_ps(av, b0, lo[r]);
                                    hi[r] = _mm256_fmadd_ps(av, b1, hi[r]);
                                }
                                ap = ap.add(MH);
                                bp = bp.add(NH);
                            }
                        }
                        for r in 0..MH {
                            let i = g * MR + v * MH + r;
                            let c = [
                                _mm256_cvtps_pd(_mm256_castps256_ps128(lo[r])),
                                _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(lo[r])),
                                _mm256_cvtps_pd(_mm256_castps256_ps128(hi[r])),
                                _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(hi[r])),
                            ];
                            // SAFETY: row i < ng·MR and columns j0 .. j0 + 16 <= ldo, with
                            // their norms inside `xn` (checked by the caller).
                            unsafe {
                                let o = op.add(i * ldo + j0);
                                let q = _mm256_broadcast_sd(&*qn.as_ptr().add(i));
                                for (e, &ce) in c.iter().enumerate() {
                                    let mut ch = ce;
                                    if !first {
                                        ch = _mm256_add_pd(ch, _mm256_loadu_pd(o.add(4 * e)));
                                    }
                                    if last {
                                        let x = _mm256_loadu_pd(xn.as_ptr().add(j0 + 4 * e));
                                        ch = _mm256_max_pd(
                                            _mm256_fnmadd_pd(two, ch, _mm256_add_pd(q, x)),
                                            zero,
                                        );
                                    }
                                    _mm256_storeu_pd(o.add(4 * e), ch);
                                }
                            }
                        }
                    }
                }
            }
        }
        k0 += kc;
    }
}

#[cfg(test)]
mod tests {
    use super::super::{dispatch, SimdTask};
    use super::*;
    use crate::core::testing::simd_levels;

    struct Run<'a> {
        groups: &'a [f64],
        ng: usize,
        d: usize,
        panels: &'a [f64],
        np: usize,
        qn: &'a [f64],
        xn: &'a [f64],
    }
    impl SimdTask for Run<'_> {
        type Output = Vec<f64>;
        fn run<M: Fma>(self) -> Vec<f64> {
            let ldo = self.np * NR + 3;
            let mut out = vec![f64::NAN; self.ng * MR * ldo];
            dist_tile::<M>(
                self.groups,
                self.ng,
                self.d,
                self.panels,
                self.np,
                self.qn,
                self.xn,
                &mut out,
                ldo,
            );
            out
        }
    }

    struct Run32<'a> {
        groups: &'a [f32],
        ng: usize,
        d: usize,
        panels: &'a [f32],
        np: usize,
        qn: &'a [f64],
        xn: &'a [f64],
    }
    impl SimdTask for Run32<'_> {
        type Output = Vec<f64>;
        fn run<M: Fma>(self) -> Vec<f64> {
            let ldo = self.np * NR32 + 3;
            let mut out = vec![f64::NAN; self.ng * MR * ldo];
            dist_tile_f32::<M>(
                self.groups,
                self.ng,
                self.d,
                self.panels,
                self.np,
                self.qn,
                self.xn,
                &mut out,
                ldo,
            );
            out
        }
    }

    #[test]
    fn f32_distances_match_direct_sums_at_every_level() {
        let cases: [(usize, usize, usize); 4] =
            [(1, 1, 1), (13, 33, 20), (25, 40, 64), (7, 70, 300)];
        for &(n, m, d) in &cases {
            let x: Vec<f32> = (0..m * d)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
                .collect();
            let q: Vec<f32> = (0..n * d)
                .map(|i| ((i * 53 % 89) as f32 - 44.0) / 13.0)
                .collect();
            let (ng, np) = (n.div_ceil(MR), m.div_ceil(NR32));
            let norms = |v: &[f32], cnt: usize, pad: usize| -> Vec<f64> {
                let mut o: Vec<f64> = (0..cnt)
                    .map(|i| {
                        v[i * d..(i + 1) * d]
                            .iter()
                            .map(|&a| (a as f64) * (a as f64))
                            .sum()
                    })
                    .collect();
                o.resize(pad, 0.0);
                o
            };
            let (qn, xn) = (norms(&q, n, ng * MR), norms(&x, m, np * NR32));
            let ldo = np * NR32 + 3;
            for lvl in simd_levels() {
                let groups = pack_to(&q, n, d, group_width(lvl), ng * MR);
                let panels = pack_to(&x, m, d, panel_width(lvl, NR32), np * NR32);
                let out = dispatch(
                    lvl,
                    Run32 {
                        groups: &groups,
                        ng,
                        d,
                        panels: &panels,
                        np,
                        qn: &qn,
                        xn: &xn,
                    },
                );
                for i in 0..n {
                    for j in 0..m {
                        let want: f64 = (0..d)
                            .map(|k| (q[i * d + k] as f64 - x[j * d + k] as f64).powi(2))
                            .sum();
                        let got = out[i * ldo + j];
                        assert!(
                            (got - want).abs() <= 2e-7 * d as f64 * (qn[i] + xn[j]),
                            "{lvl:?} ({i},{j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn distances_match_direct_sums_at_every_level() {
        // The last case: three depth chunks and an odd group count (the AVX2 kernel's
        // prefetch slices of the next half panel are uneven there).
        let cases: [(usize, usize, usize); 6] = [
            (1, 1, 1),
            (12, 16, 5),
            (25, 40, 64),
            (7, 70, 300),
            (13, 17, 400),
            (30, 75, 520),
        ];
        for &(n, m, d) in &cases {
            let x: Vec<f64> = (0..m * d)
                .map(|i| ((i * 37 % 101) as f64 - 50.0) / 17.0)
                .collect();
            let q: Vec<f64> = (0..n * d)
                .map(|i| ((i * 53 % 89) as f64 - 44.0) / 13.0)
                .collect();
            let (ng, np) = (n.div_ceil(MR), m.div_ceil(NR));
            let norms = |v: &[f64], cnt: usize, pad: usize| -> Vec<f64> {
                let mut o: Vec<f64> = (0..cnt)
                    .map(|i| v[i * d..(i + 1) * d].iter().map(|a| a * a).sum())
                    .collect();
                o.resize(pad, 0.0);
                o
            };
            let (qn, xn) = (norms(&q, n, ng * MR), norms(&x, m, np * NR));
            let ldo = np * NR + 3;
            for lvl in simd_levels() {
                let groups = pack_to(&q, n, d, group_width(lvl), ng * MR);
                let panels = pack_to(&x, m, d, panel_width(lvl, NR), np * NR);
                let out = dispatch(
                    lvl,
                    Run {
                        groups: &groups,
                        ng,
                        d,
                        panels: &panels,
                        np,
                        qn: &qn,
                        xn: &xn,
                    },
                );
                for i in 0..n {
                    for j in 0..m {
                        let want: f64 = (0..d).map(|k| (q[i * d + k] - x[j * d + k]).powi(2)).sum();
                        let got = out[i * ldo + j];
                        assert!(
                            (got - want).abs() <= 1e-12 * (qn[i] + xn[j]),
                            "{lvl:?} ({i},{j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
