//! The parts of issue 11's 2-D grid call (n = 10⁶ standard normal points, 512² grid over
//! the data range plus 8.6 bandwidths, h = 0.1, the Gaussian grid path of
//! `divest/_kdegrid.py::_grid_nd_separable`): the corrected binning alone, binning with
//! the error fields, the whole binned grid with the fields (`binned_nd`), and the error
//! estimate (`errfield::grid_error`), each the best of `reps` runs, per SIMD level and for
//! 1 and 2 threads.
//! `cargo run --release --example kdegrid2d_parts [reps] [threads] [level]`
//! With `perf` as the first argument it loops the whole grid call for a few seconds (for
//! `perf record`).
use std::hint::black_box;
use std::sync::atomic::AtomicBool;

use divest::core::kdegrid::errfield::{grid_error, ErrLattice, Scheme};
use divest::core::kdegrid::nd::{bin_corrected, bin_corrected_fields, binned_nd, FieldLattice};
use divest::core::simd::set_level;
use divest::core::testing::{best_ms, grid_lattice, simd_levels, GridLattice, Lcg};
use divest::core::threads::set_num_threads;

fn main() {
    let n = 1_000_000;
    let (m, h) = (512usize, 0.1f64);
    let d = 2;
    let mut g = Lcg::new(3);
    let x: Vec<f64> = (0..n * d).map(|_| g.normal()).collect();
    let stop = AtomicBool::new(false);
    let args: Vec<String> = std::env::args().collect();
    let perf = args.get(1).map(|v| v == "perf").unwrap_or(false);
    let reps: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(9);
    let only_t: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(0);
    let only_l: String = args.get(3).cloned().unwrap_or_default();
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
    // `_kdeerr._lattice` for a diagonal precision 1/h².
    let r: Vec<usize> = (0..d)
        .map(|a| ((0.5 * h / delta[a]).floor() as usize).max(1))
        .collect();
    let dc: Vec<f64> = (0..d).map(|a| r[a] as f64 * delta[a]).collect();
    let reach: Vec<usize> = (0..d).map(|a| (7.0 * h / dc[a]).ceil() as usize).collect();
    let span: Vec<usize> = (0..d).map(|a| (m - 1).div_ceil(r[a]) + 1).collect();
    let nc: Vec<usize> = (0..d).map(|a| span[a] + 2 * (reach[a] + 1)).collect();
    let lo_c: Vec<f64> = (0..d)
        .map(|a| lo[a] - (reach[a] + 1) as f64 * dc[a])
        .collect();
    let fl = FieldLattice {
        lo: lo_c,
        delta: dc.clone(),
        nc: nc.clone(),
    };
    let prec: Vec<f64> = hs.iter().map(|h| 1.0 / (h * h)).collect();
    let lat = ErrLattice {
        m: &ms,
        delta: &delta,
        prec: &prec,
        r: &r,
        reach: &reach,
        nc: &nc,
    };
    let whole = || binned_nd(&x, d, None, &lo, &delta, &ms, &hs, false, Some(&fl), &stop).unwrap();
    if perf {
        // `perf [iterations] [part]`: part 0 the whole grid, 1 binning with the fields, 2
        // binning alone (run under `perf stat -e task-clock` for the CPU time per call).
        let iters: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(40);
        let part: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(0);
        for _ in 0..iters {
            match part {
                0 => drop(black_box(whole())),
                1 => drop(black_box(
                    bin_corrected_fields(
                        &x,
                        d,
                        None,
                        1.0 / n as f64,
                        &lo_b,
                        &delta,
                        &nb,
                        Some(&fl),
                        &stop,
                    )
                    .unwrap(),
                )),
                _ => drop(black_box(
                    bin_corrected(&x, d, None, 1.0 / n as f64, &lo_b, &delta, &nb, &stop).unwrap(),
                )),
            }
        }
        return;
    }
    println!(
        "2-D: n = {n}, {m}^2 grid ({} bins per axis, fields r = {}, {} coarse nodes), h = {h}; \
         ms, best of {reps}",
        nb[0], r[0], nc[0]
    );
    let res = whole();
    for level in simd_levels() {
        if !only_l.is_empty() && level.name() != only_l {
            continue;
        }
        set_level(Some(level)).unwrap();
        for threads in [1, 2] {
            if only_t != 0 && threads != only_t {
                continue;
            }
            set_num_threads(threads).unwrap();
            let bin = best_ms(reps, || {
                black_box(
                    bin_corrected(&x, d, None, 1.0 / n as f64, &lo_b, &delta, &nb, &stop).unwrap(),
                );
            });
            let binf = best_ms(reps, || {
                black_box(
                    bin_corrected_fields(
                        &x,
                        d,
                        None,
                        1.0 / n as f64,
                        &lo_b,
                        &delta,
                        &nb,
                        Some(&fl),
                        &stop,
                    )
                    .unwrap(),
                );
            });
            let full = best_ms(reps, || {
                black_box(whole());
            });
            let est = best_ms(reps, || {
                let mut s = res.sums.clone();
                let _ = black_box(
                    grid_error(&res.fields, &lat, Scheme::Corrected, 0.0, 1.0, &stop).unwrap(),
                );
                black_box(&mut s);
            });
            println!(
                "{:>7} {} thread(s): binning {:.2}, with fields {:.2}; binned_nd with fields {:.2}; \
                 grid_error {:.2}",
                level.name(),
                threads,
                bin,
                binf,
                full,
                est
            );
        }
    }
    set_level(None).unwrap();
}
