//! The bounded 3-D `logpdf` of `benches/compare.py --only kdebounds_nd` (reflect:
//! [0, ∞) × [0, 1] × ℝ; periodic: ℝ × [0, 1) × ℝ), n = m (default 10⁴), Scott's
//! bandwidth, in whitened units: `kdefold::add_images` (the bounded pass, identity
//! included) against `kde_eval` (the unbounded pass) on the same data and queries, one
//! thread, CPU time, best of `reps`, interleaved, per SIMD level. The pruning margin is
//! `_kdebounds._BLOCK_MARGIN` (36; environment variable MARGIN to change it).
//! `cargo run --release --example kdefold_timing -- [n reps]`.
fn main() {
    #[cfg(target_arch = "x86_64")]
    {
        use divest::core::kde::{kde_eval, KdeOptions, Kernel};
        use divest::core::kdefold::add_images;
        use divest::core::pairwise::Points;
        use divest::core::simd::{detected, set_level, Level};
        use divest::core::testing::{cpu_seconds, Lcg};
        use std::sync::atomic::AtomicBool;

        let a: Vec<usize> = std::env::args()
            .skip(1)
            .map(|s| s.parse().unwrap())
            .collect();
        let n = a.first().copied().unwrap_or(10_000);
        let reps = a.get(1).copied().unwrap_or(5);
        let margin = std::env::var("MARGIN")
            .map(|v| v.parse().unwrap())
            .unwrap_or(36.0);
        divest::core::threads::set_num_threads(1).unwrap();
        let d = 3;
        let mut g = Lcg::new(1);
        let mut x = vec![0.0; n * d];
        let mut q = vec![0.0; n * d];
        for i in 0..n {
            x[i * d] = -0.3 * (1.0 - g.unit()).ln();
            x[i * d + 1] = g.unit();
            x[i * d + 2] = g.normal();
            q[i * d] = 2.0 * g.unit();
            q[i * d + 1] = g.unit();
            q[i * d + 2] = g.normal();
        }
        // Scott's rule with the population standard deviations (diagonal here).
        let f = (n as f64).powf(-1.0 / 7.0);
        let h: Vec<f64> = (0..d)
            .map(|j| {
                let mu = (0..n).map(|i| x[i * d + j]).sum::<f64>() / n as f64;
                let v = (0..n).map(|i| (x[i * d + j] - mu).powi(2)).sum::<f64>() / n as f64;
                v.sqrt() * f
            })
            .collect();
        let xs: Vec<f64> = (0..n * d).map(|k| x[k] / h[k % d]).collect();
        let qs: Vec<f64> = (0..n * d).map(|k| q[k] / h[k % d]).collect();
        let lw = vec![0.0; n];
        let stop = AtomicBool::new(false);
        let levels: Vec<Level> = [Level::Avx2, Level::Avx512]
            .into_iter()
            .filter(|&l| l <= detected())
            .collect();
        for periodic in [false, true] {
            // Maps (s, t) per dimension, whitened: z ↦ s·z + t/h.
            let mut maps = Vec::new();
            let mut near_edge = Vec::new(); // the ±2 translations: only for q1 near an end
            let s0s: &[f64] = if periodic { &[1.0] } else { &[1.0, -1.0] };
            let dim1: &[(f64, f64)] = if periodic {
                &[(1.0, -1.0), (1.0, 0.0), (1.0, 1.0)]
            } else {
                &[
                    (1.0, -2.0),
                    (1.0, 0.0),
                    (1.0, 2.0),
                    (-1.0, 0.0),
                    (-1.0, 2.0),
                ]
            };
            for &s0 in s0s {
                for &(s1, t1) in dim1 {
                    maps.extend_from_slice(&[s0, 0.0, s1, t1 / h[1], 1.0, 0.0]);
                    near_edge.push(s1 > 0.0 && t1 != 0.0 && !periodic);
                }
            }
            let (mut pq, mut pg) = (Vec::new(), Vec::new());
            for i in 0..n {
                for (gi, &edge) in near_edge.iter().enumerate() {
                    let q1 = q[i * d + 1];
                    if !edge || !(0.14..=0.86).contains(&q1) {
                        pq.push(i);
                        pg.push(gi);
                    }
                }
            }
            let mut best = vec![[f64::INFINITY; 2]; levels.len()];
            for _ in 0..reps {
                for (li, &l) in levels.iter().enumerate() {
                    set_level(Some(l)).unwrap();
                    let t = cpu_seconds();
                    let got = add_images(
                        &xs,
                        d,
                        &lw,
                        Kernel::Gaussian,
                        &qs,
                        n,
                        None,
                        &maps,
                        &pq,
                        &pg,
                        margin,
                        &stop,
                    )
                    .unwrap();
                    best[li][0] = best[li][0].min(cpu_seconds() - t);
                    std::hint::black_box(got);
                    let t = cpu_seconds();
                    let got = kde_eval(
                        Points::new(&xs, n, d).unwrap(),
                        &lw,
                        Points::new(&qs, n, d).unwrap(),
                        Kernel::Gaussian,
                        KdeOptions::default(),
                        &stop,
                    )
                    .unwrap();
                    best[li][1] = best[li][1].min(cpu_seconds() - t);
                    std::hint::black_box(got);
                    set_level(None).unwrap();
                }
            }
            let name = if periodic { "periodic" } else { "reflect" };
            for (li, l) in levels.iter().enumerate() {
                let [b, u] = best[li];
                println!(
                    "3-D {name}, n = m = {n}, {:>6}: bounded {:.1} ms, unbounded {:.1} ms, ratio {:.3} \
                     ({} maps, {} pairs)",
                    l.name(),
                    b * 1e3,
                    u * 1e3,
                    b / u,
                    near_edge.len(),
                    pq.len()
                );
            }
        }
    }
}
