//! Times the vectorised exp at each SIMD level. `cargo run --release --example exp_timing`
use divest::core::simd::exp_slice_at;
use divest::core::testing::simd_levels;
use std::time::Instant;

fn main() {
    let base: Vec<f64> = (0..4096).map(|i| -(i as f64) * 0.01).collect();
    for lvl in simd_levels() {
        let mut v = base.clone();
        let t = Instant::now();
        for _ in 0..10000 {
            v.copy_from_slice(&base);
            exp_slice_at(lvl, &mut v);
        }
        let ns = t.elapsed().as_secs_f64() * 1e9 / (10000.0 * 4096.0);
        println!("{lvl:?}: {ns:.3} ns/exp");
    }
}
