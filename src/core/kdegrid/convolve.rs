//! Linear convolution of real sequences: direct for short kernels, else by a radix-2
//! complex FFT (written here; both real inputs packed into one complex transform).

use std::f64::consts::PI;
use std::sync::atomic::AtomicBool;

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
    let sign = if inverse { 1.0 } else { -1.0 };
    // Twiddle table for the largest stage; smaller stages stride through it.
    let half = n / 2;
    let tw: Vec<C> = (0..half)
        .map(|k| {
            let ang = sign * 2.0 * PI * k as f64 / n as f64;
            C {
                re: ang.cos(),
                im: ang.sin(),
            }
        })
        .collect();
    let mut len = 2;
    while len <= n {
        let step = n / len;
        for start in (0..n).step_by(len) {
            for k in 0..len / 2 {
                let t = a[start + k + len / 2].mul(tw[k * step]);
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
