//! Times the vectorised exp at each SIMD level. `cargo run --release --example exp_timing`
use divest::core::simd::{exp_slice_at, Level};
use std::time::Instant;

#[inline(always)]
fn expf(x: f64) -> f64 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    const LN2_HI: f64 = 6.931_471_803_691_238_164_90e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10;
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    let xc = if x > 709.0 { 709.0 } else { x };
    let xc = if xc < -708.0 { -708.0 } else { xc };
    let t = xc.mul_add(LOG2E, SHIFT);
    let nf = t - SHIFT;
    let r = nf.mul_add(-LN2_LO, nf.mul_add(-LN2_HI, xc));
    let c: [f64; 13] = [1.0 / 479_001_600.0, 1.0 / 39_916_800.0, 1.0 / 3_628_800.0, 1.0 / 362_880.0, 1.0 / 40_320.0, 1.0 / 5_040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0];
    let mut p = c[0];
    for k in 1..13 { p = p.mul_add(r, c[k]); }
    let n = t.to_bits().wrapping_sub(SHIFT.to_bits());
    let scale = f64::from_bits(n.wrapping_add(1023) << 52);
    let y = p * scale;
    if x < -708.39 { 0.0 } else { y }
}
#[inline(always)]
fn bodyf(v: &mut [f64]) { for x in v.iter_mut() { *x = expf(*x); } }
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")]
unsafe fn f512(v: &mut [f64]) { bodyf(v) }
#[target_feature(enable = "avx2,fma")]
unsafe fn f2(v: &mut [f64]) { bodyf(v) }
#[inline(always)]
fn body32(v: &mut [f64]) {
    for c in v.chunks_exact_mut(32) {
        let mut t = [0.0f64; 32];
        for l in 0..32 {
            t[l] = divest::core::simd::exp::<divest::core::simd::Fused>(c[l]);
        }
        c.copy_from_slice(&t);
    }
}
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")]
unsafe fn b512(v: &mut [f64]) {
    body32(v)
}
#[target_feature(enable = "avx2,fma")]
unsafe fn b2(v: &mut [f64]) {
    body32(v)
}

fn main() {
    let base: Vec<f64> = (0..4096).map(|i| -(i as f64) * 0.01).collect();
    for (name, f) in [("512x32", b512 as unsafe fn(&mut [f64])), ("avx2x32", b2), ("fma512", f512), ("fma2", f2)] {
        let mut v = base.clone();
        let t = Instant::now();
        for _ in 0..10000 {
            v.copy_from_slice(&base);
            unsafe { f(&mut v) };
        }
        let ns = t.elapsed().as_secs_f64() * 1e9 / (10000.0 * 4096.0);
        println!("{name}: {ns:.3} ns/exp");
    }
    let base: Vec<f64> = (0..4096).map(|i| -(i as f64) * 0.01).collect();
    for lvl in [Level::Scalar, Level::Avx2, Level::Avx512] {
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

#[allow(dead_code)]
fn unused() {}
