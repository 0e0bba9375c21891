//! Times the projection DPP samplers. `cargo run --release --example dpp_timing [threads...]`
//! or `... dpp_timing rejection`.
//!
//! The bases mirror `divest._bench.workloads.dpp_basis(n, m)` (asv `ProjectionDPP`,
//! `python -m divest bench`): N = 5000 (and 10000 for `rejection`), m = 100, an
//! orthonormal basis of the span of a standard normal N×m matrix (Box-Muller on `Lcg`
//! draws, then Gram-Schmidt, which is QR up to column signs; Python's generator cannot
//! be reproduced).
use divest::core::dpp::{orthonormality_error, sample_projection, Method};
use divest::core::testing::{cpu_seconds, Lcg};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// A standard normal draw (Box-Muller, cosine half).
fn normal(g: &mut Lcg) -> f64 {
    let r = (-2.0 * (1.0 - g.unit()).ln()).sqrt();
    r * (std::f64::consts::TAU * g.unit()).cos()
}

fn orthonormal(n: usize, m: usize) -> Vec<f64> {
    // Householder-free: modified Gram-Schmidt on a standard normal matrix, twice.
    let mut g = Lcg::new(12345);
    let mut cols: Vec<Vec<f64>> = Vec::new();
    for _ in 0..m {
        let mut v: Vec<f64> = (0..n).map(|_| normal(&mut g)).collect();
        for _ in 0..2 {
            for c in &cols {
                let p: f64 = c.iter().zip(&v).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(c).for_each(|(vi, ci)| *vi -= p * ci);
            }
        }
        let nv = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        cols.push(v.iter().map(|a| a / nv).collect());
    }
    let mut u = vec![0.0; n * m];
    for i in 0..n {
        for j in 0..m {
            u[i * m + j] = cols[j][i];
        }
    }
    u
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let stop = AtomicBool::new(false);
    let (n, m) = (5000, 100);
    let u = orthonormal(n, m);
    let threads: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let threads = if threads.is_empty() {
        vec![1, 2]
    } else {
        threads
    };
    if std::env::args().nth(1).as_deref() == Some("rejection") {
        let u2 = orthonormal(10_000, m);
        let c0 = cpu_seconds();
        let t0 = Instant::now();
        for s in 0..2000 {
            sample_projection(&u2, 10_000, m, 1, s, 0, Method::Rejection, &stop).unwrap();
        }
        println!(
            "rejection N=10000: {:.3} ms wall, {:.3} ms cpu per sample",
            t0.elapsed().as_secs_f64() / 2.0,
            (cpu_seconds() - c0) / 2.0
        );
        return;
    }
    let c0 = cpu_seconds();
    let t0 = Instant::now();
    for _ in 0..200 {
        orthonormality_error(&u, n, m).unwrap();
    }
    println!(
        "orthonormality check: {:.3} ms wall, {:.3} ms cpu",
        t0.elapsed().as_secs_f64() * 5.0,
        (cpu_seconds() - c0) * 5.0
    );
    for &t in &threads {
        divest::core::threads::set_num_threads(t).unwrap();
        let one: Vec<f64> = (0..31)
            .map(|s| {
                let t0 = Instant::now();
                sample_projection(&u, n, m, 1, s, 0, Method::Chain, &stop).unwrap();
                t0.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        let c0 = cpu_seconds();
        for s in 0..200 {
            sample_projection(&u, n, m, 1, s, 0, Method::Chain, &stop).unwrap();
        }
        let cpu_one = (cpu_seconds() - c0) / 200.0 * 1e3;
        let c0 = cpu_seconds();
        let many: Vec<f64> = (0..3)
            .map(|s| {
                let t0 = Instant::now();
                sample_projection(&u, n, m, 200, s, 0, Method::Chain, &stop).unwrap();
                t0.elapsed().as_secs_f64() * 1e3 / 200.0
            })
            .collect();
        let cpu_many = (cpu_seconds() - c0) / 600.0 * 1e3;
        let c0 = cpu_seconds();
        let t0 = Instant::now();
        sample_projection(&u, n, m, 1000, 9, 0, Method::Rejection, &stop).unwrap();
        let rej = t0.elapsed().as_secs_f64() * 1e3 / 1000.0;
        let cpu_rej = (cpu_seconds() - c0) / 1000.0 * 1e3;
        println!("  cpu ms per sample: chain one {cpu_one:.2}, chain many {cpu_many:.2}; rejection {rej:.3} ms/sample wall, {cpu_rej:.3} cpu");
        println!(
            "threads {t}: chain one sample {:.2} ms (min {:.2}); chain 200 samples {:.2} ms/sample",
            median(one.clone()),
            one.iter().cloned().fold(f64::INFINITY, f64::min),
            median(many)
        );
    }
}
