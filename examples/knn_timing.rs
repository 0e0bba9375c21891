//! Times the exact kNN search of `knn_kl` (n = m = 20,000 Gaussian points, d = 8, k = 5):
//! the self search (x against x) and the cross search (x against y), at each SIMD level,
//! on one thread and on the pool. `cargo run --release --example knn_timing [n] [d] [k]`
//!
//! Each figure is the best of several runs, so a loaded machine disturbs it less.
use divest::core::divergence::knn::{knn, Method};
use divest::core::pairwise::Points;
use divest::core::simd::{self, Level};
use divest::core::testing::Lcg;
use divest::core::threads;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

fn normal(g: &mut Lcg, n: usize, shift: f64) -> Vec<f64> {
    (0..n).map(|_| g.normal() + shift).collect()
}

fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    // `KNN_ONLY=avx2` (or avx512): one thread, that level only, 3 runs of the self and
    // cross searches, nothing printed (for `perf stat`, which counts cycles on a loaded
    // machine better than a clock).
    if let Ok(l) = std::env::var("KNN_ONLY") {
        let a: Vec<usize> = std::env::args()
            .skip(1)
            .map(|s| s.parse().unwrap())
            .collect();
        let (n, d, k) = (a.first().copied().unwrap_or(20000), 8, 5);
        let mut g = Lcg::new(2);
        let x = normal(&mut g, n * d, 0.0);
        let y = normal(&mut g, n * d, 0.2);
        let px = Points::new(&x, n, d).unwrap();
        let py = Points::new(&y, n, d).unwrap();
        let stop = AtomicBool::new(false);
        threads::set_num_threads(1).unwrap();
        simd::set_level(Some(Level::parse(&l).unwrap())).unwrap();
        for _ in 0..3 {
            knn(px, px, k, true, None, Method::Tree, &stop).unwrap();
            knn(px, py, k, false, None, Method::Tree, &stop).unwrap();
        }
        return;
    }
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let (n, d, k) = (
        *a.first().unwrap_or(&20000),
        *a.get(1).unwrap_or(&8),
        *a.get(2).unwrap_or(&5),
    );
    let mut g = Lcg::new(2);
    let x = normal(&mut g, n * d, 0.0);
    let y = normal(&mut g, n * d, 0.2);
    let px = Points::new(&x, n, d).unwrap();
    let py = Points::new(&y, n, d).unwrap();
    let stop = AtomicBool::new(false);
    let levels: Vec<Level> = [Level::Avx2, Level::Avx512]
        .into_iter()
        .filter(|&l| l <= simd::detected())
        .collect();
    let tb = best(5, || {
        divest::core::pairwise::kdtree::KdTree::build(px, None).unwrap();
    });
    println!("build {tb:.2} ms");
    for threads_n in [1, 2] {
        threads::set_num_threads(threads_n).unwrap();
        for &l in &levels {
            simd::set_level(Some(l)).unwrap();
            let ts = best(5, || {
                knn(px, px, k, true, None, Method::Tree, &stop).unwrap();
            });
            let tc = best(5, || {
                knn(px, py, k, false, None, Method::Tree, &stop).unwrap();
            });
            println!(
                "{} threads {threads_n}: self {ts:.1} ms, cross {tc:.1} ms, both {:.1} ms",
                l.name(),
                ts + tc
            );
        }
    }
}
