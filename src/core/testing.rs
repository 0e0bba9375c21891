//! Test support shared by the core's tests and the timing examples: one seeded
//! generator, the usual test problems drawn from it, and the list of SIMD levels this
//! CPU can run. Not part of the API.
//!
//! Every builder here reproduces, bit for bit, the numbers the test modules drew with
//! their own copies of the generator before these were gathered here, so that no test
//! changed its data when it moved.

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

    /// Standard normal by Box–Muller (two uniforms per draw, the cosine branch).
    #[inline]
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-300), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Uniform on [-1, 1).
    #[inline]
    pub fn sym(&mut self) -> f64 {
        self.unit() * 2.0 - 1.0
    }

    /// One of the integers `0..levels` (from the state's high bits); few distinct
    /// values make duplicates and ties on purpose. `levels` must be positive.
    #[inline]
    pub fn level(&mut self, levels: u64) -> u64 {
        (self.next_u64() >> 33) % levels
    }

    /// The sum of `k` draws of [`Lcg::unit`], added left to right: a bell on [0, k)
    /// with mean k/2 (roughly normal from k = 3).
    #[inline]
    pub fn unit_sum(&mut self, k: usize) -> f64 {
        let mut a = 0.0;
        for _ in 0..k {
            a += self.unit();
        }
        a
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

/// `n` draws uniform on [-scale, scale) from `Lcg::new(seed)` (each [`Lcg::sym`] times
/// `scale`).
pub fn scaled_vec(seed: u64, n: usize, scale: f64) -> Vec<f64> {
    let mut g = Lcg::new(seed);
    (0..n).map(|_| g.sym() * scale).collect()
}

/// `n` coordinates with ties everywhere: each is one of the `levels` values
/// -1.5, -0.5, 0.5, ... drawn by [`Lcg::level`]. `levels == 0` means no ties: the same
/// numbers as [`sym_vec`].
pub fn tied_vec(seed: u64, n: usize, levels: u64) -> Vec<f64> {
    if levels == 0 {
        return sym_vec(seed, n);
    }
    let mut g = Lcg::new(seed);
    (0..n).map(|_| g.level(levels) as f64 - 1.5).collect()
}

/// The squared Euclidean distance between row `i` of `a` and row `j` of `b` (rows of
/// `d` values), summed in coordinate order: the written-out reference the pairwise
/// kernels are checked against.
pub fn sq_dist(a: &[f64], i: usize, b: &[f64], j: usize, d: usize) -> f64 {
    (0..d).map(|k| (a[i * d + k] - b[j * d + k]).powi(2)).sum()
}

/// The determinant of the row-major m×m matrix `a` by Gaussian elimination with partial
/// pivoting (`a` is overwritten): the written-out reference for small determinants.
pub fn det(a: &mut [f64], m: usize) -> f64 {
    let mut d = 1.0;
    for col in 0..m {
        let p = (col..m)
            .max_by(|&x, &y| a[x * m + col].abs().total_cmp(&a[y * m + col].abs()))
            .unwrap();
        if a[p * m + col] == 0.0 {
            return 0.0;
        }
        if p != col {
            for q in 0..m {
                a.swap(p * m + q, col * m + q);
            }
            d = -d;
        }
        d *= a[col * m + col];
        for r in col + 1..m {
            let f = a[r * m + col] / a[col * m + col];
            for q in col..m {
                a[r * m + q] -= f * a[col * m + q];
            }
        }
    }
    d
}

/// Every SIMD level, whether or not this CPU can run it.
pub const ALL_LEVELS: [Level; 3] = [Level::Scalar, Level::Avx2, Level::Avx512];

/// The SIMD levels this CPU can run, from the portable one up: every SIMD body is
/// tested against the scalar one over this list.
pub fn simd_levels() -> impl Iterator<Item = Level> {
    ALL_LEVELS.into_iter().filter(|&l| l <= detected())
}

/// Seconds of CPU time used by this process so far (all threads), for the timing
/// examples: on a loaded machine, time spent descheduled does not count against a
/// kernel. `clock_gettime` with the process CPU-time clock on Linux; wall time since the
/// first call elsewhere.
pub fn cpu_seconds() -> f64 {
    #[cfg(target_os = "linux")]
    {
        #[repr(C)]
        struct Timespec {
            sec: i64,
            nsec: i64,
        }
        extern "C" {
            fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
        }
        const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
        let mut t = Timespec { sec: 0, nsec: 0 };
        // SAFETY: a valid pointer to a timespec (two 64-bit fields on 64-bit Linux).
        if cfg!(target_pointer_width = "64")
            && unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut t) } == 0
        {
            return t.sec as f64 + t.nsec as f64 * 1e-9;
        }
    }
    use std::sync::OnceLock;
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64()
}

/// Best wall time of `reps` calls of `f`, in milliseconds (timing examples).
pub fn best_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = std::time::Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    best
}

/// The lattice of the timing examples' n-D grids, as `_kdegrid` lays it out for a
/// diagonal bandwidth h: the grid covers the data's range plus 8.6 h per side with `m`
/// points per axis (`lo`, `delta`), and `binned_nd` pads it by `pad` = ⌈7 h / δ⌉ + 1 bins
/// per side (`nb` bins per axis from `lo_b`). `x` is row-major with `d` columns.
pub struct GridLattice {
    pub lo: Vec<f64>,
    pub delta: Vec<f64>,
    pub pad: Vec<usize>,
    pub nb: Vec<usize>,
    pub lo_b: Vec<f64>,
}

/// [`GridLattice`] of `m` points per axis for the data `x` (d columns) and bandwidth `h`.
pub fn grid_lattice(x: &[f64], d: usize, m: usize, h: f64) -> GridLattice {
    let (mut lo, mut delta) = (vec![0.0; d], vec![0.0; d]);
    for a in 0..d {
        let (mn, mx) = x
            .iter()
            .skip(a)
            .step_by(d)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(p, q), &v| {
                (p.min(v), q.max(v))
            });
        lo[a] = mn - 8.6 * h;
        delta[a] = (mx - mn + 17.2 * h) / (m - 1) as f64;
    }
    let pad: Vec<usize> = delta
        .iter()
        .map(|&dl| (7.0 * h / dl).ceil() as usize + 1)
        .collect();
    let nb = pad.iter().map(|&p| m + 2 * p).collect();
    let lo_b = (0..d).map(|a| lo[a] - pad[a] as f64 * delta[a]).collect();
    GridLattice {
        lo,
        delta,
        pad,
        nb,
        lo_b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The draws are pinned: the tests' tolerances were set on these numbers, so a
    /// change to the generator or to a builder's arithmetic must fail here first. The
    /// expected bits come from the formulas written out in Python floats.
    #[test]
    fn draws_are_pinned_bit_for_bit() {
        let mut g = Lcg::new(1);
        let s: Vec<u64> = (0..3).map(|_| g.next_u64()).collect();
        assert_eq!(
            s,
            [0x6c576fac43fd007c, 0x826886b3864a1b1b, 0xa5fae1992097aa0e]
        );
        let bits = |v: Vec<f64>| v.iter().map(|x| x.to_bits()).collect::<Vec<u64>>();
        assert_eq!(
            bits(sym_vec(5, 3)),
            [0x3fe367d0185d94be, 0xbfe70645b11cddcc, 0x3fe48321dd3a4b12]
        );
        assert_eq!(
            bits(scaled_vec(21, 3, 0.3)),
            [0xbfbb274adf73663d, 0x3fb9204536fce89d, 0x3f7651288d3b2819]
        );
        assert_eq!(tied_vec(8, 6, 4), [-1.5, -1.5, -1.5, 1.5, 0.5, 1.5]);
        assert_eq!(bits(tied_vec(5, 3, 0)), bits(sym_vec(5, 3)));
        let mut g = Lcg::new(12345);
        assert_eq!(
            bits(vec![g.unit_sum(3), g.unit_sum(3)]),
            [0x3ff42b5e364eb43a, 0x3ffb8ca8d5fd93a6]
        );
        assert_eq!(
            unit_vec(5, 3),
            sym_vec(5, 3)
                .iter()
                .map(|x| (x + 1.0) / 2.0)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn levels_start_at_scalar_and_stop_at_the_cpu() {
        let l: Vec<Level> = simd_levels().collect();
        assert_eq!(l[0], Level::Scalar);
        assert_eq!(*l.last().unwrap(), detected());
        assert!(l.windows(2).all(|w| w[0] < w[1]));
    }
}
