//! Times the dcov paths. `cargo run --release --example dcov_timing -- n`
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use divest::core::dcov::fast1d;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let mut s = 1u64;
    let mut r = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let x: Vec<f64> = (0..n).map(|_| r()).collect();
    let y: Vec<f64> = x.iter().map(|v| v * v + r()).collect();
    let stop = AtomicBool::new(false);
    for _ in 0..3 {
        let t = Instant::now();
        let st = fast1d::dcov_stats(&x, &y, false, &stop).unwrap();
        println!(
            "fast1d n={n}: {:.3} s ({:?})",
            t.elapsed().as_secs_f64(),
            st.cov
        );
    }
}
