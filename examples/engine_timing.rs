//! Times the pairwise engine's distance paths alone and with the KDE reducer.
//! `cargo run --release --example engine_timing -- n m d`
//!
//! The data mirror `divest._bench.workloads.kde_data(n, d)` (asv `KDELogpdf`, `python -m
//! divest bench`): `n` points and `m` queries (the benchmarks take m = n), standard normal
//! in `d` dimensions (Box-Muller on `Lcg` draws; Python's generator cannot be reproduced).
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use divest::core::kde::{kde_eval, KdeOptions, Kernel};
use divest::core::pairwise::{reduce_rows_with, Points, RowReducer};
use divest::core::testing::Lcg;

struct Nothing;
impl RowReducer for Nothing {
    type State = f64;
    fn init(&self, _: usize, _: usize) -> f64 {
        0.0
    }
    fn tile<M: divest::core::simd::Fma>(
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

/// A standard normal draw (Box-Muller, cosine half).
fn normal(g: &mut Lcg) -> f64 {
    let r = (-2.0 * (1.0 - g.unit()).ln()).sqrt();
    r * (std::f64::consts::TAU * g.unit()).cos()
}

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let (n, m, d) = (a[0], a[1], a[2]);
    let mut g = Lcg::new(1);
    let x: Vec<f64> = (0..n * d).map(|_| normal(&mut g)).collect();
    let q: Vec<f64> = (0..m * d).map(|_| normal(&mut g)).collect();
    let stop = AtomicBool::new(false);
    let px = Points::new(&x, n, d).unwrap();
    let pq = Points::new(&q, m, d).unwrap();
    for direct in [true, false, false] {
        let t = Instant::now();
        let _ = reduce_rows_with(pq, px, &Nothing, &stop, Some(direct)).unwrap();
        let el = t.elapsed().as_secs_f64();
        println!(
            "distances only, direct={direct}: {el:.3} s ({:.1} GFMA/s)",
            (m * n * d) as f64 / el / 1e9
        );
    }
    // One big GEMM (single-threaded matrixmultiply) for the arithmetic rate of the machine.
    let mut c = vec![0.0f64; m * n];
    for _ in 0..3 {
        let t = Instant::now();
        // SAFETY: q is m×d, x is n×d (read transposed), c is m×n; distinct buffers.
        unsafe {
            matrixmultiply::dgemm(
                m,
                d,
                n,
                1.0,
                q.as_ptr(),
                d as isize,
                1,
                x.as_ptr(),
                1,
                d as isize,
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            );
        }
        let el = t.elapsed().as_secs_f64();
        println!(
            "one dgemm m x d x n: {el:.3} s ({:.1} GFMA/s)",
            (m * n * d) as f64 / el / 1e9
        );
    }
    let lw = vec![0.0; n];
    let t = Instant::now();
    let _ = kde_eval(px, &lw, pq, Kernel::Gaussian, KdeOptions::default(), &stop).unwrap();
    println!("kde_eval: {:.3} s", t.elapsed().as_secs_f64());
}
