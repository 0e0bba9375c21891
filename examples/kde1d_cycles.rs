//! Per-point cost of the 1-D fused binning pass (issue 11's case: n = 10⁶ points, a
//! 4096-point grid, h = 0.05), in time-stamp-counter ticks per point, best of many calls
//! (robust to a loaded machine), one thread unless `THREADS` says otherwise.
//! `cargo run --release --example kde1d_cycles [reps]`
use std::hint::black_box;
use std::sync::atomic::AtomicBool;

use divest::core::kde::Kernel;
use divest::core::kdegrid::{
    binned_1d_opt, binning::linear_bin_checked, fused::bin_with_fields, Grid1,
};
use divest::core::simd::set_level;
use divest::core::testing::{simd_levels, Lcg};
use divest::core::threads::set_num_threads;

fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: rdtsc has no preconditions.
    unsafe {
        std::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::time::Instant::now().elapsed().as_nanos() as u64
    }
}

fn best(reps: usize, n: usize, mut f: impl FnMut()) -> f64 {
    let mut b = u64::MAX;
    for _ in 0..reps {
        let t = ticks();
        f();
        b = b.min(ticks() - t);
    }
    b as f64 / n as f64
}

fn main() {
    let reps: usize = std::env::args().nth(1).map_or(40, |s| s.parse().unwrap());
    let threads: usize = std::env::var("THREADS").map_or(1, |s| s.parse().unwrap());
    let n = 1_000_000;
    let mut g = Lcg::new(3);
    let x: Vec<f64> = (0..n).map(|_| g.normal()).collect();
    let mut xs = x.clone();
    xs.sort_by(f64::total_cmp);
    let xr: Vec<f64> = x.iter().map(|v| (v * 100.0).round() / 100.0).collect();
    let w: Vec<f64> = (0..n).map(|_| g.unit()).collect();
    // Uniform over 40 bins (an L1-resident accumulator).
    let xn: Vec<f64> = (0..n).map(|_| 0.1 * g.unit()).collect();
    // One value, and two values alternating (the longest chains of adds to one word).
    let x1: Vec<f64> = vec![0.1234; n];
    let x2: Vec<f64> = (0..n)
        .map(|i| if i % 2 == 0 { 0.1234 } else { -0.777 })
        .collect();
    let stop = AtomicBool::new(false);
    let m = 4096;
    let grid = Grid1::new(-5.2, 10.4 / (m - 1) as f64, m).unwrap();
    let h = 0.05;
    let pad = (8.6 * h / grid.delta).ceil() as usize + 1;
    let nb = m + 2 * pad;
    let lo_b = grid.lo - pad as f64 * grid.delta;
    set_num_threads(threads).unwrap();
    println!("ticks per point, {threads} thread(s), best of {reps}");
    let only = std::env::var("LEVEL").ok();
    for level in simd_levels() {
        if only.as_deref().is_some_and(|o| o != level.name()) {
            continue;
        }
        set_level(Some(level)).unwrap();
        let mut line = format!("{:>7}", level.name());
        if std::env::var("GRIDONLY").is_ok() {
            let t = best(reps, n, || {
                black_box(binned_1d_opt(&x, None, Kernel::Gaussian, h, grid, &stop).unwrap());
            });
            println!("{line} grid {t:.2}");
            continue;
        }
        for (nm, d) in [
            ("rand", &x),
            ("sort", &xs),
            ("round", &xr),
            ("narrow", &xn),
            ("one", &x1),
            ("alt", &x2),
        ] {
            let t = best(reps, n, || {
                black_box(
                    bin_with_fields(level, d, None, 1.0 / n as f64, lo_b, grid.delta, nb, &stop)
                        .unwrap(),
                );
            });
            let tw = best(reps, n, || {
                black_box(
                    bin_with_fields(
                        level,
                        d,
                        Some(&w),
                        1.0 / n as f64,
                        lo_b,
                        grid.delta,
                        nb,
                        &stop,
                    )
                    .unwrap(),
                );
            });
            line += &format!(" {nm} {t:.2}/{tw:.2}");
        }
        let t = best(reps, n, || {
            black_box(
                bin_with_fields(
                    level,
                    &x,
                    Some(&w),
                    1.0 / n as f64,
                    lo_b,
                    grid.delta,
                    nb,
                    &stop,
                )
                .unwrap(),
            );
        });
        line += &format!(" w {t:.2}");
        let t = best(reps, n, || {
            black_box(
                linear_bin_checked(&x, None, 1.0 / n as f64, lo_b, grid.delta, nb, &stop).unwrap(),
            );
        });
        line += &format!(" | plain {t:.2}");
        let t = best(reps, n, || {
            black_box(binned_1d_opt(&x, None, Kernel::Gaussian, h, grid, &stop).unwrap());
        });
        line += &format!(" | grid {t:.2}");
        let t = best(reps, n, || {
            black_box(binned_1d_opt(&x, Some(&w), Kernel::Gaussian, h, grid, &stop).unwrap());
        });
        line += &format!(" gridw {t:.2}");
        println!("{line}");
    }
}
