//! The d = 256 Gaussian KDE's parts on one core, per SIMD level: the packed distance
//! kernel on one row block × column tile (192 × 256, as the engine runs it), the
//! Gaussian reducer on one such distance tile, and the whole `kde_eval`; in cycles per
//! pair (the FMA work of a pair is d/8 cycles at the two-pipe peak of 8 f64 FMAs/cycle).
//! `cargo run --release --example kde_parts -- [d reps]`. CPU time, best of `reps`.
fn main() {
    #[cfg(target_arch = "x86_64")]
    {
        use divest::core::kde::{kde_eval, KdeOptions, Kernel};
        use divest::core::pairwise::maps::GaussianMap;
        use divest::core::pairwise::reduce::KernelRows;
        use divest::core::pairwise::{Points, RowReducer, COL_TILE, ROW_BLOCK_GEMM};
        use divest::core::simd::dgemm::{dist_tile, group_width, pack_to, panel_width, MR, NR};
        use divest::core::simd::{detected, dispatch, set_level, Fma, Level, SimdTask};
        use divest::core::testing::{cpu_seconds, Lcg};
        use std::sync::atomic::AtomicBool;

        let a: Vec<usize> = std::env::args()
            .skip(1)
            .map(|s| s.parse().unwrap())
            .collect();
        let d = a.first().copied().unwrap_or(256);
        let reps = a.get(1).copied().unwrap_or(5);
        divest::core::threads::set_num_threads(1).unwrap();
        let ghz = 3.64;
        let (nr, nc) = (ROW_BLOCK_GEMM, COL_TILE);
        let mut g = Lcg::new(1);
        let q: Vec<f64> = (0..nr * d).map(|_| g.unit() - 0.5).collect();
        let x: Vec<f64> = (0..nc * d).map(|_| g.unit() - 0.5).collect();
        let norms = |v: &[f64], n: usize| -> Vec<f64> {
            (0..n)
                .map(|i| v[i * d..(i + 1) * d].iter().map(|t| t * t).sum())
                .collect()
        };
        let (qn, xn) = (norms(&q, nr), norms(&x, nc));

        struct Dist<'a> {
            q: &'a [f64],
            x: &'a [f64],
            qn: &'a [f64],
            xn: &'a [f64],
            d: usize,
            iters: usize,
            out: &'a mut [f64],
        }
        impl SimdTask for Dist<'_> {
            type Output = ();
            #[inline(always)]
            fn run<M: Fma>(self) {
                let l = divest::core::simd::level_of::<M>();
                let (nr, nc) = (self.qn.len(), self.xn.len());
                let (ng, np) = (nr / MR, nc / NR);
                let gr = pack_to(self.q, nr, self.d, group_width(l), nr);
                let pa = pack_to(self.x, nc, self.d, panel_width(l, NR), nc);
                for _ in 0..self.iters {
                    dist_tile::<M>(&gr, ng, self.d, &pa, np, self.qn, self.xn, self.out, nc);
                    std::hint::black_box(&mut *self.out);
                }
            }
        }
        struct Red<'a> {
            d2: &'a [f64],
            w: &'a [f64],
            iters: usize,
        }
        impl SimdTask for Red<'_> {
            type Output = f64;
            #[inline(always)]
            fn run<M: Fma>(self) -> f64 {
                let red = KernelRows {
                    f: GaussianMap,
                    scales: &[1.0],
                    w: self.w,
                    exclude_self: false,
                    sumsq: false,
                    mean: None,
                    d: 1,
                };
                let nr = self.d2.len() / COL_TILE;
                let mut st = red.init(0, nr);
                for _ in 0..self.iters {
                    red.tile::<M>(&mut st, 0, nr, 0, COL_TILE, self.d2);
                    std::hint::black_box(&mut st);
                }
                0.0
            }
        }

        struct Parts<'a> {
            d2: &'a [f64],
            iters: usize,
            exp: bool,
        }
        impl SimdTask for Parts<'_> {
            type Output = f64;
            #[inline(always)]
            fn run<M: Fma>(self) -> f64 {
                let mut s = 0.0;
                let mut buf = vec![0.0; COL_TILE];
                for _ in 0..self.iters {
                    for row in self.d2.chunks(COL_TILE) {
                        s += if self.exp {
                            divest::core::simd::lin_exp_sum::<M>(
                                row, None, -0.5, 20.0, None, &mut buf,
                            )
                        } else {
                            divest::core::simd::min(row)
                        };
                    }
                }
                s
            }
        }
        let levels: Vec<Level> = [Level::Avx2, Level::Avx512]
            .into_iter()
            .filter(|&l| l <= detected())
            .collect();
        let mut d2 = vec![0.0; nr * nc];
        let w = vec![0.0; nc];
        let (n, ds) = (3000usize, d);
        let xs: Vec<f64> = (0..n * ds).map(|_| g.unit() - 0.5).collect();
        let qs: Vec<f64> = (0..n * ds).map(|_| g.unit() - 0.5).collect();
        let lw = vec![0.0; n];
        let stop = AtomicBool::new(false);
        // [level][dist, reduce, kde] in cycles per pair
        let mut best = vec![[f64::INFINITY; 5]; levels.len()];
        for _ in 0..reps {
            for (li, &l) in levels.iter().enumerate() {
                let iters = 40;
                let t = cpu_seconds();
                dispatch(
                    l,
                    Dist {
                        q: &q,
                        x: &x,
                        qn: &qn,
                        xn: &xn,
                        d,
                        iters,
                        out: &mut d2,
                    },
                );
                let c = (cpu_seconds() - t) * ghz * 1e9 / (iters * nr * nc) as f64;
                best[li][0] = best[li][0].min(c);
                // Distances of a KDE at unit bandwidth: about 2·d·var = d/6 here.
                let iters = 200;
                let t = cpu_seconds();
                dispatch(
                    l,
                    Red {
                        d2: &d2,
                        w: &w,
                        iters,
                    },
                );
                let c = (cpu_seconds() - t) * ghz * 1e9 / (iters * nr * nc) as f64;
                best[li][1] = best[li][1].min(c);
                for (e, slot) in [(false, 3), (true, 4)] {
                    let t = cpu_seconds();
                    std::hint::black_box(dispatch(
                        l,
                        Parts {
                            d2: &d2,
                            iters,
                            exp: e,
                        },
                    ));
                    let c = (cpu_seconds() - t) * ghz * 1e9 / (iters * nr * nc) as f64;
                    best[li][slot] = best[li][slot].min(c);
                }
                set_level(Some(l)).unwrap();
                let t = cpu_seconds();
                let _ = kde_eval(
                    Points::new(&xs, n, ds).unwrap(),
                    &lw,
                    Points::new(&qs, n, ds).unwrap(),
                    Kernel::Gaussian,
                    KdeOptions::default(),
                    &stop,
                )
                .unwrap();
                let c = (cpu_seconds() - t) * ghz * 1e9 / (n * n) as f64;
                best[li][2] = best[li][2].min(c);
                set_level(None).unwrap();
            }
        }
        let ideal = d as f64 / 8.0;
        println!(
            "d = {d}, cycles per pair at {ghz} GHz (ideal FMA work {ideal:.1}), best of {reps}:"
        );
        for (li, l) in levels.iter().enumerate() {
            let [dc, rc, kc, mc, ec] = best[li];
            println!("{:>6}: min pass {mc:.2}, exp-sum pass {ec:.2}", l.name());
            println!(
                "{:>6}: distances (one 192x256 tile, repeated) {dc:.2} ({:.1}%); reducer {rc:.2}; \
                 sum {:.2} ({:.1}%); kde_eval 3000x3000 {kc:.2} ({:.1}%)",
                l.name(),
                100.0 * ideal / dc,
                dc + rc,
                100.0 * ideal / (dc + rc),
                100.0 * ideal / kc
            );
        }
    }
}
