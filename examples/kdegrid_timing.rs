//! Times the 1-D grid KDE's binning pass and the whole binned grid (issue 11's case:
//! n = 10⁶ standard normal points, a 4096-point grid over [−6, 6], h = 0.05), at each SIMD
//! level and with 1 and 2 threads, unweighted and weighted.
//! `cargo run --release --example kdegrid_timing`
//!
//! Each figure is the best of several runs, so a loaded machine disturbs it less.
use std::hint::black_box;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use divest::core::kde::Kernel;
use divest::core::kdegrid::{binned_1d_opt, binning::linear_bin_checked, Grid1};
use divest::core::simd::set_level;
use divest::core::testing::{simd_levels, Lcg};
use divest::core::threads::set_num_threads;

/// Best time of `reps` calls of `f`, in nanoseconds per point.
fn best_ns(reps: usize, n: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64() * 1e9 / n as f64);
    }
    best
}

fn main() {
    let n = 1_000_000;
    let mut g = Lcg::new(3);
    // Standard normal draws by Box–Muller.
    let x: Vec<f64> = (0..n).map(|_| g.normal()).collect();
    let w: Vec<f64> = (0..n).map(|_| g.unit() / n as f64 * 2.0).collect();
    let stop = AtomicBool::new(false);
    let m = 4096;
    let grid = Grid1::new(-6.0, 12.0 / (m - 1) as f64, m).unwrap();
    let h = 0.05;
    // The binned driver's padded lattice: reach = ceil(8.6 h / δ), one more bin each side.
    let pad = (8.6 * h / grid.delta).ceil() as usize + 1;
    let nb = m + 2 * pad;
    let lo_b = grid.lo - pad as f64 * grid.delta;
    println!("n = {n}, {m} grid points ({nb} bins), h = {h}; ns per point, best of 15");
    for level in simd_levels() {
        set_level(Some(level)).unwrap();
        for threads in [1, 2] {
            set_num_threads(threads).unwrap();
            let bin = |wt: Option<&[f64]>| {
                best_ns(15, n, || {
                    black_box(
                        linear_bin_checked(&x, wt, 1.0 / n as f64, lo_b, grid.delta, nb, &stop)
                            .unwrap(),
                    );
                })
            };
            let full = |wt: Option<&[f64]>| {
                best_ns(15, n, || {
                    black_box(binned_1d_opt(&x, wt, Kernel::Gaussian, h, grid, &stop).unwrap());
                })
            };
            println!(
                "{:>7} {} thread(s): binning {:.3} (weighted {:.3}); whole grid {:.3} (weighted {:.3})",
                level.name(),
                threads,
                bin(None),
                bin(Some(&w)),
                full(None),
                full(Some(&w)),
            );
        }
    }
    set_level(None).unwrap();
}
