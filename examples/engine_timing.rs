//! Times the pairwise engine's distance paths alone and with the KDE reducer.
//! `cargo run --release --example engine_timing -- n m d`
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use divest::core::kde::{kde_eval, KdeOptions, Kernel};
use divest::core::pairwise::{reduce_rows_with, Points, RowReducer};

struct Nothing;
impl RowReducer for Nothing {
    type State = f64;
    fn init(&self, _: usize, _: usize) -> f64 {
        0.0
    }
    fn tile<M: divest::core::simd::Fma>(&self, st: &mut f64, _: usize, _: usize, _: usize, _: usize, d2: &[f64]) {
        *st += d2[0];
    }
}

fn main() {
    let a: Vec<usize> = std::env::args().skip(1).map(|s| s.parse().unwrap()).collect();
    let (n, m, d) = (a[0], a[1], a[2]);
    let mut s = 1u64;
    let mut r = |k: usize| -> Vec<f64> {
        (0..k)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 11) as f64 / (1u64 << 53) as f64
            })
            .collect()
    };
    let x = r(n * d);
    let q = r(m * d);
    let stop = AtomicBool::new(false);
    let px = Points::new(&x, n, d).unwrap();
    let pq = Points::new(&q, m, d).unwrap();
    for direct in [true, false] {
        let t = Instant::now();
        let _ = reduce_rows_with(pq, px, &Nothing, &stop, Some(direct)).unwrap();
        println!("distances only, direct={direct}: {:.3} s", t.elapsed().as_secs_f64());
    }
    let lw = vec![0.0; n];
    let t = Instant::now();
    let _ = kde_eval(px, &lw, pq, Kernel::Gaussian, KdeOptions::default(), &stop).unwrap();
    println!("kde_eval: {:.3} s", t.elapsed().as_secs_f64());
}
