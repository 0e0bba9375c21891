//! Times the SIMD kernels at each level, one core: the vectorised exp, the exp-sum
//! (`lin_exp_sum`, `lin_exp_into`), the Sinkhorn row-group steps (`dot_rows`,
//! `axpy_rows16`) and `min_max`. `cargo run --release --example exp_timing`
//!
//! Each figure is the best of many short runs (a few microseconds each), so a loaded
//! machine disturbs it little.
use divest::core::simd::rows::{axpy_rows16, dot_rows};
use divest::core::simd::{
    dispatch, exp_slice_at, lin_exp_into, lin_exp_sum, min_max, Fma, SimdTask,
};
use divest::core::testing::simd_levels;
use std::hint::black_box;
use std::time::Instant;

/// Best time per call of `f` in nanoseconds, over `reps` runs of `inner` calls.
fn best_ns(reps: usize, inner: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..inner {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e9 / inner as f64);
    }
    best
}

struct ExpSum<'a>(&'a [f64], &'a mut [f64]);
impl SimdTask for ExpSum<'_> {
    type Output = f64;
    #[inline(always)]
    fn run<M: Fma>(self) -> f64 {
        lin_exp_sum::<M>(self.0, None, -0.37, 1.0, Some(3), self.1)
    }
}

struct ExpInto<'a>(&'a [f64], &'a mut [f64]);
impl SimdTask for ExpInto<'_> {
    type Output = ();
    #[inline(always)]
    fn run<M: Fma>(self) {
        lin_exp_into::<M>(self.0, -0.37, 1.0, self.1)
    }
}

/// One Sinkhorn small-path step on a 16-row group: the dot products of both halves with
/// one vector and the weighted sum of the 16 rows into another.
struct Rows<'a>(&'a [f64], usize, &'a [f64], &'a mut [f64]);
impl SimdTask for Rows<'_> {
    type Output = f64;
    #[inline(always)]
    fn run<M: Fma>(self) -> f64 {
        let (k, m, w, t) = (self.0, self.1, self.2, self.3);
        let mut out = [0.0; 8];
        dot_rows::<M>(k, m, m, 8, w, &mut out);
        dot_rows::<M>(&k[8 * m..], m, m, 8, w, &mut out);
        axpy_rows16::<M>(k, m, m, w, t);
        out[0]
    }
}

fn main() {
    let n = 4096;
    let base: Vec<f64> = (0..n).map(|i| (i as f64) * 0.01).collect();
    let neg: Vec<f64> = base.iter().map(|x| -x).collect();
    let m = 64;
    let k: Vec<f64> = (0..16 * m).map(|i| (i as f64 * 0.37).sin()).collect();
    let w: Vec<f64> = (0..m).map(|i| (i as f64 * 0.71).cos()).collect();
    println!("ns per element (rows: per kernel entry), best of 200 runs, one core");
    for lvl in simd_levels() {
        let mut v = neg.clone();
        let e = best_ns(200, 5, || {
            v.copy_from_slice(&neg);
            exp_slice_at(lvl, &mut v);
        }) / n as f64;
        let mut buf = vec![0.0; n];
        let s = best_ns(200, 5, || {
            black_box(dispatch(lvl, ExpSum(&base, &mut buf)));
        }) / n as f64;
        let mut out = vec![0.0; n];
        let i = best_ns(200, 5, || dispatch(lvl, ExpInto(&base, &mut out))) / n as f64;
        let mm = best_ns(200, 5, || {
            black_box(min_max(lvl, &base));
        }) / n as f64;
        let mut t = vec![0.0; m];
        let r = best_ns(200, 50, || {
            black_box(dispatch(lvl, Rows(&k, m, &w, &mut t)));
        }) / (2 * 16 * m) as f64;
        println!(
            "{:>6}: exp {e:.3}  lin_exp_sum {s:.3}  lin_exp_into {i:.3}  min_max {mm:.3}  \
             rows (dot 2x8 + axpy 16) {r:.3}",
            lvl.name()
        );
    }
}
