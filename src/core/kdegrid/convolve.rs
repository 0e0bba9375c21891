//! Linear convolution of real sequences: direct for short kernels, else by a radix-2
//! complex FFT (written here; both real inputs packed into one complex transform).

use std::f64::consts::PI;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use super::check_stop;
use crate::core::error::{try_vec, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct C {
    re: f64,
    im: f64,
}

impl C {
    #[inline]
    fn mul(self, o: C) -> C {
        C {
            re: self.re * o.re - self.im * o.im,
            im: self.re * o.im + self.im * o.re,
        }
    }
    #[inline]
    fn add(self, o: C) -> C {
        C {
            re: self.re + o.re,
            im: self.im + o.im,
        }
    }
    #[inline]
    fn sub(self, o: C) -> C {
        C {
            re: self.re - o.re,
            im: self.im - o.im,
        }
    }
    #[inline]
    fn conj(self) -> C {
        C {
            re: self.re,
            im: -self.im,
        }
    }
}

/// The forward twiddles e^{-2πik/n}, k < n/2, each from cos/sin of the exact angle
/// (error O(ε)), computed once per size and kept (the last few sizes) for later calls.
fn twiddles(n: usize) -> Arc<[C]> {
    static CACHE: Mutex<Vec<(usize, Arc<[C]>)>> = Mutex::new(Vec::new());
    if let Ok(c) = CACHE.lock() {
        if let Some((_, t)) = c.iter().find(|(m, _)| *m == n) {
            return t.clone();
        }
    }
    let t: Arc<[C]> = (0..n / 2)
        .map(|k| {
            let ang = -2.0 * PI * k as f64 / n as f64;
            C {
                re: ang.cos(),
                im: ang.sin(),
            }
        })
        .collect();
    if let Ok(mut c) = CACHE.lock() {
        if c.len() >= 8 {
            c.remove(0);
        }
        c.push((n, t.clone()));
    }
    t
}

/// In-place iterative radix-2 FFT (forward: e^{-2πi jk/N}); `a.len()` a power of two.
/// Twiddles are computed directly per stage (cos/sin of exact multiples), not by
/// repeated multiplication, so the error stays O(ε log N).
fn fft(a: &mut [C], inverse: bool) {
    let n = a.len();
    if n <= 1 {
        return;
    }
    debug_assert!(n.is_power_of_two());
    let bits = n.trailing_zeros();
    for i in 0..n {
        let j = i.reverse_bits() >> (usize::BITS - bits);
        if j > i {
            a.swap(i, j);
        }
    }
    // Twiddle table for the largest stage (cached per size); smaller stages stride
    // through it, and the inverse transform uses the conjugates.
    let tw = twiddles(n);
    let mut len = 2;
    while len <= n {
        let step = n / len;
        for start in (0..n).step_by(len) {
            for k in 0..len / 2 {
                let w = tw[k * step];
                let w = if inverse { w.conj() } else { w };
                let t = a[start + k + len / 2].mul(w);
                let u = a[start + k];
                a[start + k] = u.add(t);
                a[start + k + len / 2] = u.sub(t);
            }
        }
        len <<= 1;
    }
}

/// Full linear convolution (length na + nb − 1) by FFT. Absolute error about
/// ε·log₂N·Σ|a|·max|b|.
pub fn convolve_fft(a: &[f64], b: &[f64], stop: &AtomicBool) -> Result<Vec<f64>> {
    let len = a.len() + b.len() - 1;
    let n = len.next_power_of_two();
    let mut z = try_vec(n, C::default(), "n_points")?;
    for (i, &v) in a.iter().enumerate() {
        z[i].re = v;
    }
    for (i, &v) in b.iter().enumerate() {
        z[i].im = v;
    }
    fft(&mut z, false);
    check_stop(stop)?;
    // Split Z = A + iB: A_k = (Z_k + conj Z_{-k})/2, B_k = (Z_k − conj Z_{-k})/(2i).
    let mut p = try_vec(n, C::default(), "n_points")?;
    for k in 0..n {
        let zk = z[k];
        let zn = z[(n - k) % n].conj();
        let ak = C {
            re: 0.5 * (zk.re + zn.re),
            im: 0.5 * (zk.im + zn.im),
        };
        let d = zk.sub(zn);
        let bk = C {
            re: 0.5 * d.im,
            im: -0.5 * d.re,
        };
        p[k] = ak.mul(bk);
    }
    fft(&mut p, true);
    let scale = 1.0 / n as f64;
    Ok(p[..len].iter().map(|c| c.re * scale).collect())
}

/// Full linear convolution, directly: O(na·nb), relative accuracy for non-negative inputs.
pub fn convolve_direct(a: &[f64], b: &[f64], stop: &AtomicBool) -> Result<Vec<f64>> {
    let len = a.len() + b.len() - 1;
    let mut out = try_vec(len, 0.0f64, "n_points")?;
    for (i, &ai) in a.iter().enumerate() {
        if i % 4096 == 0 {
            check_stop(stop)?;
        }
        if ai == 0.0 {
            continue;
        }
        for (o, &bj) in out[i..i + b.len()].iter_mut().zip(b) {
            *o += ai * bj;
        }
    }
    Ok(out)
}

/// Full linear convolution: direct when the kernel is short (it costs fewer operations
/// than two FFTs), else by FFT.
pub fn convolve(a: &[f64], b: &[f64], stop: &AtomicBool) -> Result<Vec<f64>> {
    if a.is_empty() || b.is_empty() {
        return Ok(Vec::new());
    }
    let (long, short) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    let n = (a.len() + b.len() - 1).next_power_of_two();
    let log2 = n.trailing_zeros() as usize;
    if short.len() <= 6 * log2 + 8 {
        convolve_direct(long, short, stop)
    } else {
        convolve_fft(long, short, stop)
    }
}

/// Outputs per block of [`correlate_sym`]'s inner loop: 32 accumulators (four AVX-512 or
/// eight AVX2 registers) that stay in registers while the kernel taps stream past.
const SYM_BLOCK: usize = 32;

/// Outputs `out[i] = half[0]·a[c] + Σ_{j=1}^{r} half[j]·(a[c − j] + a[c + j])`,
/// c = `off + i`, for the `out.len()` consecutive outputs: a correlation with the
/// symmetric kernel whose taps at offsets 0..=r are `half`. Every output sums its terms
/// in the same order (j ascending, plain multiplies and adds, no fused multiply-add), so
/// the result has the same bits on every SIMD path and for every split of the outputs.
// `M` is unused on purpose: the body is compiled inside each SIMD wrapper of `simd_fn!`
// (vectorised for that level) and uses no fused multiply-add, so every level agrees.
#[allow(clippy::extra_unused_type_parameters)]
#[inline(always)]
fn correlate_sym_body<M: crate::core::simd::Fma>(
    a: &[f64],
    half: &[f64],
    off: usize,
    out: &mut [f64],
) {
    let r = half.len() - 1;
    assert!(off >= r && off + out.len() + r <= a.len());
    let m = out.len();
    let mut i = 0;
    while i + SYM_BLOCK <= m {
        let c = off + i;
        let mut acc = [0.0f64; SYM_BLOCK];
        let mid = &a[c..c + SYM_BLOCK];
        for t in 0..SYM_BLOCK {
            acc[t] = half[0] * mid[t];
        }
        for (j, &k) in half.iter().enumerate().skip(1) {
            let lo = &a[c - j..c - j + SYM_BLOCK];
            let hi = &a[c + j..c + j + SYM_BLOCK];
            for t in 0..SYM_BLOCK {
                acc[t] += k * (lo[t] + hi[t]);
            }
        }
        out[i..i + SYM_BLOCK].copy_from_slice(&acc);
        i += SYM_BLOCK;
    }
    for (o, c) in out[i..].iter_mut().zip(off + i..) {
        let mut s = half[0] * a[c];
        for (j, &k) in half.iter().enumerate().skip(1) {
            s += k * (a[c - j] + a[c + j]);
        }
        *o = s;
    }
}

crate::core::simd::simd_fn!(
    /// [`correlate_sym_body`] on the SIMD path `level` allows.
    fn correlate_sym_at => correlate_sym_body(a: &[f64], half: &[f64], off: usize, out: &mut [f64]) -> ()
);

/// The `m` outputs of a correlation of `a` with a symmetric kernel (taps `half[j]` at
/// offsets ±j), starting at `a[off]` (see [`correlate_sym_body`]); needs
/// `off ≥ r` and `off + m + r ≤ a.len()`, r = `half.len() − 1`. Direct, O(m·r), with
/// relative accuracy for non-negative inputs; split over the thread pool when large (the
/// bits do not depend on the split). Allocates the m outputs.
pub fn correlate_sym(
    a: &[f64],
    half: &[f64],
    off: usize,
    m: usize,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    use rayon::prelude::*;
    let mut out = try_vec(m, 0.0f64, "n_points")?;
    if m == 0 || half.is_empty() {
        return Ok(out);
    }
    let r = half.len() - 1;
    if !(off >= r && off + m + r <= a.len()) {
        return Err(crate::core::error::invalid!(
            "internal: correlation window out of range"
        ));
    }
    let level = crate::core::simd::level();
    // About 2^18 taps per piece: enough work to be worth a thread.
    let per = (((1usize << 18) / (r + 1)).max(SYM_BLOCK)).div_ceil(SYM_BLOCK) * SYM_BLOCK;
    let nthreads = crate::core::threads::num_threads();
    if nthreads == 1 || m <= per {
        correlate_sym_at(level, a, half, off, &mut out);
    } else {
        let per = per.max(m.div_ceil(4 * nthreads).div_ceil(SYM_BLOCK) * SYM_BLOCK);
        crate::core::threads::install(|| {
            out.par_chunks_mut(per)
                .enumerate()
                .for_each(|(p, o)| correlate_sym_at(level, a, half, off + p * per, o));
        })?;
    }
    check_stop(stop)?;
    Ok(out)
}

/// DCT-II, X_k = Σ_j x_j cos(πk(2j+1)/(2N)), by one complex FFT of length N
/// (Makhoul's reordering); N a power of two.
pub fn dct2(x: &[f64]) -> Vec<f64> {
    let n = x.len();
    if n == 0 {
        return Vec::new();
    }
    let mut v = vec![C::default(); n];
    for j in 0..n.div_ceil(2) {
        v[j].re = x[2 * j];
    }
    for j in 0..n / 2 {
        v[n - 1 - j].re = x[2 * j + 1];
    }
    fft(&mut v, false);
    (0..n)
        .map(|k| {
            let ang = -PI * k as f64 / (2.0 * n as f64);
            let t = C {
                re: ang.cos(),
                im: ang.sin(),
            };
            v[k].mul(t).re
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fft_and_direct_agree() {
        let stop = AtomicBool::new(false);
        let a: Vec<f64> = (0..300).map(|i| ((i * 37) % 11) as f64 - 3.0).collect();
        let b: Vec<f64> = (0..77).map(|i| (i as f64 * 0.1).sin()).collect();
        let d = convolve_direct(&a, &b, &stop).unwrap();
        let f = convolve_fft(&a, &b, &stop).unwrap();
        assert_eq!(d.len(), f.len());
        for (x, y) in d.iter().zip(&f) {
            assert!((x - y).abs() < 1e-11, "{x} {y}");
        }
    }

    #[test]
    fn symmetric_correlation_matches_the_direct_convolution_at_every_level() {
        use crate::core::testing::simd_levels;
        let stop = AtomicBool::new(false);
        // Lengths around the block of 32 outputs and its tail.
        for &(m, r) in &[
            (1usize, 0usize),
            (5, 3),
            (31, 7),
            (32, 1),
            (97, 40),
            (700, 151),
        ] {
            let off = r + 2;
            let a: Vec<f64> = (0..m + 2 * off)
                .map(|i| ((i * 7919) % 101) as f64 / 101.0)
                .collect();
            let half: Vec<f64> = (0..=r).map(|j| (-0.01 * (j * j) as f64).exp()).collect();
            let ker: Vec<f64> = (0..2 * r + 1).map(|j| half[j.abs_diff(r)]).collect();
            let full = convolve_direct(&a, &ker, &stop).unwrap();
            let got = correlate_sym(&a, &half, off, m, &stop).unwrap();
            for i in 0..m {
                let want = full[off + i + r];
                assert!((got[i] - want).abs() <= 1e-13 * want, "m={m} r={r} i={i}");
            }
            // The same bits at every SIMD level and for any split of the outputs.
            for level in simd_levels() {
                let mut out = vec![0.0; m];
                correlate_sym_at(level, &a, &half, off, &mut out);
                assert_eq!(out, got, "{level:?}");
                let cut = m / 3;
                let (mut p1, mut p2) = (vec![0.0; cut], vec![0.0; m - cut]);
                correlate_sym_at(level, &a, &half, off, &mut p1);
                correlate_sym_at(level, &a, &half, off + cut, &mut p2);
                p1.extend(p2);
                assert_eq!(p1, got, "{level:?} split");
            }
        }
        // A window that does not fit is an error, not a panic.
        assert!(correlate_sym(&[1.0; 4], &[1.0, 0.5], 0, 2, &stop).is_err());
        assert!(correlate_sym(&[1.0; 4], &[1.0, 0.5], 1, 3, &stop).is_err());
    }

    #[test]
    fn dct_matches_definition() {
        let x: Vec<f64> = (0..16)
            .map(|i| (i as f64 * 0.7).cos() + 0.1 * i as f64)
            .collect();
        let d = dct2(&x);
        for (k, dk) in d.iter().enumerate() {
            let e: f64 = x
                .iter()
                .enumerate()
                .map(|(j, &xj)| xj * (PI * k as f64 * (2 * j + 1) as f64 / 32.0).cos())
                .sum();
            assert!((dk - e).abs() < 1e-12, "{k} {dk} {e}");
        }
    }
}
