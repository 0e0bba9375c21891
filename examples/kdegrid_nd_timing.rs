//! Times the 2-D and 3-D binned grid KDE (issue 11's 2-D case: n = 10⁶ standard normal
//! points, a 512 × 512 grid over the data range plus 8.6 bandwidths, h = 0.1 on both axes;
//! and a 3-D case, n = 10⁶ on 64³ points, h = 0.3): the moment-corrected binning pass alone
//! and the whole grid (binning, the separable convolution and the error estimate), at each
//! SIMD level and with 1 and 2 threads.
//! `cargo run --release --example kdegrid_nd_timing`
//!
//! Each figure is the best of several runs, so a loaded machine disturbs it less.
use std::hint::black_box;
use std::sync::atomic::AtomicBool;

use divest::core::kdegrid::nd::{bin_corrected, binned_nd};
use divest::core::simd::set_level;
use divest::core::testing::{best_ms, cpu_seconds, grid_lattice, simd_levels, GridLattice, Lcg};
use divest::core::threads::set_num_threads;

/// Mean CPU time of `reps` calls of `f`, in milliseconds.
fn cpu_per_call(reps: usize, mut f: impl FnMut()) -> f64 {
    let t = cpu_seconds() * 1e3;
    for _ in 0..reps {
        f();
    }
    (cpu_seconds() * 1e3 - t) / reps as f64
}

fn main() {
    let n = 1_000_000;
    let mut g = Lcg::new(3);
    let mut normal = || g.normal();
    let stop = AtomicBool::new(false);
    let args: Vec<String> = std::env::args().collect();
    let reps: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(7);
    // Optional filters: the dimension (2 or 3) and the thread count.
    let only_d: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(0);
    let only_t: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(0);
    for (d, m, h) in [(2usize, 512usize, 0.1f64), (3, 64, 0.3)] {
        if only_d != 0 && d != only_d {
            continue;
        }
        let x: Vec<f64> = (0..n * d).map(|_| normal()).collect();
        // The grid over the data's range and binned_nd's padded lattice.
        let GridLattice {
            lo,
            delta,
            pad: _,
            nb,
            lo_b,
        } = grid_lattice(&x, d, m, h);
        let ms = vec![m; d];
        let hs = vec![h; d];
        println!(
            "{d}-D: n = {n}, {m}^{d} grid ({} bins per axis), h = {h}; ms, best of {reps}",
            nb[0]
        );
        for level in simd_levels() {
            set_level(Some(level)).unwrap();
            for threads in [1, 2] {
                if only_t != 0 && threads != only_t {
                    continue;
                }
                set_num_threads(threads).unwrap();
                let bin = best_ms(reps, || {
                    black_box(
                        bin_corrected(&x, d, None, 1.0 / n as f64, &lo_b, &delta, &nb, &stop)
                            .unwrap(),
                    );
                });
                let full = best_ms(reps, || {
                    black_box(
                        binned_nd(&x, d, None, &lo, &delta, &ms, &hs, false, None, &stop).unwrap(),
                    );
                });
                let cpu = cpu_per_call(reps * 4, || {
                    black_box(
                        binned_nd(&x, d, None, &lo, &delta, &ms, &hs, false, None, &stop).unwrap(),
                    );
                });
                println!(
                    "{:>7} {} thread(s): binning {:.2}; whole grid {:.2} (CPU time {:.2} per call)",
                    level.name(),
                    threads,
                    bin,
                    full,
                    cpu
                );
            }
        }
    }
    set_level(None).unwrap();
}
