//! Test support shared by the core's tests and the timing examples: one seeded
//! generator and the list of SIMD levels this CPU can run. Not part of the API.

use super::simd::{detected, Level};

/// A 64-bit linear congruential generator (Knuth's MMIX constants). Deterministic and
/// fast; good enough for test data, never for sampling (the samplers use `dpp::rng`).
#[derive(Clone, Debug)]
pub struct Lcg(u64);

impl Lcg {
    /// A generator whose first draw depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        Lcg(seed)
    }

    /// The next 64-bit state.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0
    }

    /// Uniform on [0, 1), 53 random bits.
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform on [-1, 1).
    #[inline]
    pub fn sym(&mut self) -> f64 {
        self.unit() * 2.0 - 1.0
    }
}

/// `n` draws uniform on [0, 1) from `Lcg::new(seed)`.
pub fn unit_vec(seed: u64, n: usize) -> Vec<f64> {
    let mut g = Lcg::new(seed);
    (0..n).map(|_| g.unit()).collect()
}

/// `n` draws uniform on [-1, 1) from `Lcg::new(seed)`.
pub fn sym_vec(seed: u64, n: usize) -> Vec<f64> {
    let mut g = Lcg::new(seed);
    (0..n).map(|_| g.sym()).collect()
}

/// The SIMD levels this CPU can run, from the portable one up: every SIMD body is
/// tested against the scalar one over this list.
pub fn simd_levels() -> impl Iterator<Item = Level> {
    [Level::Scalar, Level::Avx2, Level::Avx512]
        .into_iter()
        .filter(|&l| l <= detected())
}
