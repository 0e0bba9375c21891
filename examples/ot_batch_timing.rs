//! Times `sinkhorn_batch`'s core on the benchmark's problems with 1 and 2 threads.
//! `cargo run --release --example ot_batch_timing [problems] [repeats] [size]`
//!
//! The workload mirrors `divest._bench.workloads.ot_batch(nb, k)` (asv `SinkhornBatch`,
//! `python -m divest bench`): `problems` (default 1000) problems of `size`×`size`
//! (default 64), each two clouds uniform on the unit square, cost the squared distances
//! over the problem's maximum, uniform weights; reg 0.05, tol 1e-9. Python's generator
//! cannot be reproduced here: same recipe and shapes, `Lcg` draws.
use std::borrow::Cow;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use divest::core::ot::dense::{solve_batch, Options};
use divest::core::testing::Lcg;
use divest::core::threads;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    let nb = args.first().copied().unwrap_or(1000);
    let reps = args.get(1).copied().unwrap_or(21);
    let k = args.get(2).copied().unwrap_or(64);
    let mut g = Lcg::new(12345);
    let mut rnd = || g.unit();
    let mut cost = vec![0.0; nb * k * k];
    for c in cost.chunks_exact_mut(k * k) {
        let x: Vec<[f64; 2]> = (0..k).map(|_| [rnd(), rnd()]).collect();
        let y: Vec<[f64; 2]> = (0..k).map(|_| [rnd(), rnd()]).collect();
        for i in 0..k {
            for j in 0..k {
                c[i * k + j] = (x[i][0] - y[j][0]).powi(2) + (x[i][1] - y[j][1]).powi(2);
            }
        }
        let mx = c.iter().fold(0.0f64, |a, &b| a.max(b));
        c.iter_mut().for_each(|v| *v /= mx);
    }
    let w = vec![1.0 / k as f64; nb * k];
    let opts = Options {
        omega: 0.0,
        ..Options::default()
    };
    let stop = AtomicBool::new(false);
    let get = |i: usize| Cow::Borrowed(&cost[i * k * k..(i + 1) * k * k]);
    let threads_list: Vec<usize> = match std::env::var("OT_THREADS") {
        Ok(v) => v.split(',').filter_map(|t| t.trim().parse().ok()).collect(),
        Err(_) => vec![1, 2],
    };
    for nt in threads_list {
        threads::set_num_threads(nt).unwrap();
        let mut ts = Vec::new();
        let mut iters = 0.0;
        for _ in 0..reps {
            let t = Instant::now();
            let out = solve_batch(
                &w,
                &w,
                k,
                k,
                nb,
                &get,
                0.05,
                f64::INFINITY,
                &opts,
                false,
                &stop,
            )
            .unwrap();
            ts.push(t.elapsed().as_secs_f64());
            iters = out.iter().map(|o| o.0.n_iter as f64).sum::<f64>() / nb as f64;
            assert!(out.iter().all(|o| o.0.converged));
        }
        ts.sort_by(f64::total_cmp);
        println!(
            "{nt} thread(s): median {:.2} ms, min {:.2} ms, {:.2} iterations per problem",
            ts[ts.len() / 2] * 1e3,
            ts[0] * 1e3,
            iters
        );
    }
}
