//! The f64 fused multiply-add peak of one core at each SIMD level (a bare loop over
//! independent accumulators, enough to cover the FMA latency on both pipes), and the
//! packed distance kernel's rate against it.
//! `cargo run --release --example fma_peak -- [n d reps]` (default 1000 256 8). Rates are
//! per second of process CPU time, so a loaded machine disturbs them less than wall time.
#[cfg(target_arch = "x86_64")]
mod bodies {
    use std::arch::x86_64::*;

    /// `iters` rounds of 100 dependent integer adds (one cycle each): the core clock is
    /// `100 · iters` cycles over the time taken.
    pub fn add_chain(iters: u64) -> u64 {
        let mut x = 0u64;
        // SAFETY: register arithmetic only; both registers are declared.
        unsafe {
            std::arch::asm!(
                "2:",
                ".rept 100",
                "add {x}, 1",
                ".endr",
                "dec {n}",
                "jnz 2b",
                x = inout(reg) x,
                n = inout(reg) iters => _,
                options(nomem, nostack),
            );
        }
        x
    }

    /// `iters` steps of 12 independent FMAs on ymm registers (4 f64 each).
    #[target_feature(enable = "avx2,fma")]
    pub fn ymm(iters: usize) -> f64 {
        let a = _mm256_set1_pd(0.999_999_9);
        let b = _mm256_set1_pd(1e-9);
        let mut acc = [_mm256_set1_pd(1.0); 12];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_pd(*x, a, b);
            }
        }
        let mut s = 0.0;
        for x in acc {
            let mut l = [0.0f64; 4];
            // SAFETY: l holds 4 f64.
            unsafe { _mm256_storeu_pd(l.as_mut_ptr(), x) };
            s += l.iter().sum::<f64>();
        }
        s
    }

    /// The same on zmm registers (8 f64 each).
    #[target_feature(enable = "avx512f")]
    pub fn zmm(iters: usize) -> f64 {
        let a = _mm512_set1_pd(0.999_999_9);
        let b = _mm512_set1_pd(1e-9);
        let mut acc = [_mm512_set1_pd(1.0); 12];
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_pd(*x, a, b);
            }
        }
        acc.iter().map(|&x| _mm512_reduce_add_pd(x)).sum()
    }
}

/// Best-of-`reps` rates (G f64 FMA/s), one core: the bare loop and the packed distance
/// kernel (distances only, then a Gaussian KDE with its log-sums) at each level,
/// interleaved so that a loaded machine disturbs every figure alike.
fn main() {
    #[cfg(target_arch = "x86_64")]
    {
        use divest::core::kde::{kde_eval, KdeOptions, Kernel};
        use divest::core::pairwise::{reduce_rows_with, Points, RowReducer};
        use divest::core::simd::{detected, set_level, Fma, Level};
        use divest::core::testing::{cpu_seconds, Lcg};
        use std::sync::atomic::AtomicBool;

        struct Nothing;
        impl RowReducer for Nothing {
            type State = f64;
            fn init(&self, _: usize, _: usize) -> f64 {
                0.0
            }
            fn tile<M: Fma>(
                &self,
                st: &mut f64,
                _: usize,
                _: usize,
                _: usize,
                _: usize,
                d2: &[f64],
            ) {
                *st += d2[0];
            }
        }

        let a: Vec<usize> = std::env::args()
            .skip(1)
            .map(|s| s.parse().unwrap())
            .collect();
        let (n, d, reps) = (
            a.first().copied().unwrap_or(1000),
            a.get(1).copied().unwrap_or(256),
            a.get(2).copied().unwrap_or(8),
        );
        divest::core::threads::set_num_threads(1).unwrap();
        let mut g = Lcg::new(1);
        let x: Vec<f64> = (0..n * d).map(|_| g.unit() - 0.5).collect();
        let q: Vec<f64> = (0..n * d).map(|_| g.unit() - 0.5).collect();
        let (px, pq) = (
            Points::new(&x, n, d).unwrap(),
            Points::new(&q, n, d).unwrap(),
        );
        let stop = AtomicBool::new(false);
        let levels: Vec<Level> = [Level::Avx2, Level::Avx512]
            .into_iter()
            .filter(|&l| l <= detected())
            .collect();
        let iters = 2_000_000;
        let fmas = (n * n * d) as f64;
        // The clock while running (best of a few): the FMA peak of one core is
        // 2 pipes × lanes × clock (Zen 4 and most AVX2 cores: two 256-bit FMA pipes, so
        // 2 × 4 f64 FMAs per cycle at both levels; Zen 4 splits a 512-bit FMA in two).
        let mut ghz = 0.0f64;
        for _ in 0..3 {
            let t = cpu_seconds();
            let x = bodies::add_chain(10_000_000);
            // x counts the adds, one cycle each.
            ghz = ghz.max(x as f64 / (cpu_seconds() - t) / 1e9);
        }
        // [level][peak, distances, kde]
        let mut best = vec![[0.0f64; 3]; levels.len()];
        for _ in 0..reps {
            for (li, &l) in levels.iter().enumerate() {
                let t = cpu_seconds();
                // SAFETY: the level is at most what the CPU reports.
                let s = unsafe {
                    if l == Level::Avx512 {
                        bodies::zmm(iters)
                    } else {
                        bodies::ymm(iters)
                    }
                };
                let lanes = if l == Level::Avx512 { 8 } else { 4 };
                let r = (iters * 12 * lanes) as f64 / (cpu_seconds() - t) / 1e9;
                std::hint::black_box(s);
                best[li][0] = best[li][0].max(r);
                set_level(Some(l)).unwrap();
                let t = cpu_seconds();
                let _ = reduce_rows_with(pq, px, &Nothing, &stop, Some(false)).unwrap();
                best[li][1] = best[li][1].max(fmas / (cpu_seconds() - t) / 1e9);
                let t = cpu_seconds();
                let lw = vec![0.0; n];
                let _ =
                    kde_eval(px, &lw, pq, Kernel::Gaussian, KdeOptions::default(), &stop).unwrap();
                best[li][2] = best[li][2].max(fmas / (cpu_seconds() - t) / 1e9);
            }
        }
        set_level(None).unwrap();
        let theory = 8.0 * ghz;
        println!(
            "clock {ghz:.2} GHz (dependent integer adds): two 256-bit FMA pipes give \
             {theory:.1} G f64 FMA/s ({:.1} Gflop/s) per core",
            2.0 * theory
        );
        println!(
            "one thread, n = m = {n}, d = {d}, best of {reps}, per CPU second \
             (percentages of the larger of the bare loop and the clock's peak):"
        );
        for (li, l) in levels.iter().enumerate() {
            let [bare, dist, kde] = best[li];
            let p = bare.max(theory);
            println!(
                "{:>6}: bare FMA loop {bare:5.1} G/s; packed distances {dist:5.1} G/s ({:.0}% of peak); \
                 Gaussian KDE {kde:5.1} G/s ({:.0}%)",
                l.name(),
                100.0 * dist / p,
                100.0 * kde / p
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    println!("no x86-64 FMA loop on this target");
}
