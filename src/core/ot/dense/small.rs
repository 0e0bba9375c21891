//! The small-problem path of the batches: a balanced problem solved serially in the
//! scaling domain, with a fused one-pass loop on AVX-512.

use std::sync::atomic::AtomicBool;

use super::bodies::{
    axpy_rows, min_max, row_group, scale_body, scale_step, small_finish, small_kernel, small_lin,
    transpose, GROUP,
};
use super::finish::report;
use super::relax::Relax;
use super::{check_resolution, not_finite, Finished, Options, Problem, Solved};
use crate::core::error::Result;
use crate::core::simd::rows::{self, GROUP_ROWS, PAIR_ROWS};
use crate::core::simd::{self, Fma, Level, SimdTask};
use crate::core::threads;

/// Kernel entries of the small-problem path are at least e^-SMALL_RANGE, so its scalings
/// stay far from overflow and its sums far from underflow.
const SMALL_RANGE: f64 = 150.0;

/// Buffers of the small-problem path, reused by the problems a task solves.
#[derive(Default)]
pub(super) struct SmallWs {
    kern: Vec<f64>,
    /// The kernel transposed (m×n): both half-steps are then row-axpy sweeps, which
    /// vectorise reliably (row dot products need horizontal sums).
    kernt: Vec<f64>,
    scratch: Vec<f64>,
    xnew: Vec<f64>,
    s: Vec<f64>,
    t: Vec<f64>,
    /// The column sums the last column step used (fused loop): with `s`, the marginals of
    /// the plan the loop converged on, so the finish needs only the linear cost.
    tprev: Vec<f64>,
    alpha: Vec<f64>,
    beta: Vec<f64>,
    wa: Vec<f64>,
    wa_new: Vec<f64>,
    wb: Vec<f64>,
}

impl SmallWs {
    /// The scaling half-step of one side (see `scale_body`) on the sums the sweep left:
    /// rows (α and `s`; the candidate into `xnew` and `wa_new`, the violation before the
    /// step) or columns (β and `t`; into `xnew` and `wb`, the violation after it). `wt` is
    /// that side's weights.
    fn scale(&mut self, level: Level, rows: bool, wt: &[f64], w: f64) -> (f64, bool) {
        let k = wt.len();
        let (x, s, wx) = if rows {
            (&self.alpha, &self.s, &mut self.wa_new)
        } else {
            (&self.beta, &self.t, &mut self.wb)
        };
        scale_step(
            level,
            x,
            &s[..k],
            w,
            wt,
            &mut self.xnew[..k],
            wx,
            &mut self.scratch,
            !rows,
        )
    }
}

/// The iterations of [`solve_small`]: row half-step, stopping rule, column half-step.
/// The row half-step takes one of two routes with the same updates, errors, safeguard and
/// stopping rule (only the summation order of the products differs): two sweeps,
/// `s = K(b∘β)` on the transposed kernel and after the step `t = Kᵀ(a∘α)` on the kernel,
/// or with `fused` one pass over the kernel per iteration ([`fused_rows`]). Returns
/// `(iterations, error, converged)`, or `None` when a sum leaves the safe range.
struct Sweeps<'a, 'p> {
    level: Level,
    fused: bool,
    p: &'a Problem<'p>,
    opts: &'a Options,
    ws: &'a mut SmallWs,
    stop: &'a AtomicBool,
}

impl SimdTask for Sweeps<'_, '_> {
    type Output = Result<Option<(usize, f64, bool)>>;

    #[inline(always)]
    fn run<M: Fma>(self) -> Self::Output {
        let Sweeps {
            level,
            fused,
            p,
            opts,
            ws,
            stop,
        } = self;
        let (n, m) = (p.n(), p.m());
        let (a, b) = (p.a, p.b);
        let mut relax = Relax::new(opts.omega);
        let mut err = f64::INFINITY;
        let mut e_cols = f64::INFINITY;
        let mut it = 0;
        while it < opts.max_iter {
            if it % 32 == 0 {
                threads::check(stop)?;
            }
            // Row half-step: s = K(b∘β) gives the row marginals a∘α∘s of the current plan;
            // the candidate a∘α' goes to `wa_new`.
            let w = relax.omega;
            let (e_rows, fine) = if fused {
                fused_rows::<M>(ws, n, m, a, w, it)
            } else {
                axpy_rows(level, &ws.kernt, n, &ws.wb, &mut ws.s);
                ws.scale(level, true, a, w)
            };
            if !fine {
                return Ok(None);
            }
            if e_cols.is_finite() {
                err = e_rows + e_cols;
                relax.observe(err);
                if err <= opts.tol {
                    // Keep the plan just measured (α, in `wa`), not the candidate.
                    return Ok(Some((it, err, true)));
                }
            }
            ws.alpha.copy_from_slice(&ws.xnew[..n]);
            std::mem::swap(&mut ws.wa, &mut ws.wa_new);
            // Column half-step on t = Kᵀ(a∘α) (the fused pass has summed it); the new plan's
            // column marginals are b∘β∘t.
            if !fused {
                axpy_rows(level, &ws.kern, m, &ws.wa, &mut ws.t);
            }
            let (e_new, fine) = ws.scale(level, false, b, relax.omega);
            if !fine {
                return Ok(None);
            }
            e_cols = e_new;
            ws.beta.copy_from_slice(&ws.xnew[..m]);
            it += 1;
        }
        Ok(Some((it, err, false)))
    }
}

/// The fused row half-step of [`Sweeps`] (iteration `it`, factor `w`): one pass over the
/// kernel, in which each group of 8 rows gets its sums `K_i·(b∘β)` (the current row
/// marginals), its new scalings, and is added into `t = Kᵀ(a∘α')` while still in L1 (the
/// column sums of the last column step move to `tprev`). Returns the row violation before
/// the step and whether every sum and scaling is in the safe range.
#[inline(always)]
fn fused_rows<M: Fma>(
    ws: &mut SmallWs,
    n: usize,
    m: usize,
    a: &[f64],
    w: f64,
    it: usize,
) -> (f64, bool) {
    let mut s8 = [0.0f64; GROUP_ROWS];
    std::mem::swap(&mut ws.t, &mut ws.tprev);
    ws.t[..m].fill(0.0);
    let mut acc = [0.0f64; GROUP];
    let mut e_tail = 0.0;
    let mut fine = true;
    // Units of 16 rows (two groups: their sums and steps, then one pass over t
    // for both; the second group's loads overlap the first one's step), then the
    // rows left over in groups of at most 8. Odd iterations walk the units
    // backwards: a 64×64 kernel fills L1 on its own, and a cyclic sweep would
    // evict each line just before its next use; reversing reuses the lines the
    // previous sweep touched last.
    let pairs = n / PAIR_ROWS;
    let units = pairs + (n - pairs * PAIR_ROWS).div_ceil(GROUP_ROWS);
    for q in 0..units {
        let u = if it.is_multiple_of(2) {
            q
        } else {
            units - 1 - q
        };
        if u < pairs {
            let g = u * PAIR_ROWS;
            for h in [g, g + GROUP_ROWS] {
                fine &= group_step::<M>(ws, h, GROUP, m, w, a, &mut acc, &mut s8).1;
            }
            rows::axpy_rows16::<M>(&ws.kern[g * m..], m, m, &ws.wa_new[g..], &mut ws.t);
            continue;
        }
        let g = pairs * PAIR_ROWS + (u - pairs) * GROUP_ROWS;
        let nr = GROUP_ROWS.min(n - g);
        let (before, ok) = group_step::<M>(ws, g, nr, m, w, a, &mut acc, &mut s8);
        e_tail += before;
        fine &= ok;
        let rows = &ws.kern[g * m..];
        rows::axpy_rows::<M>(rows, m, m, nr, &ws.wa_new[g..g + nr], &mut ws.t);
    }
    (simd::finish_lanes(&acc) + e_tail, fine)
}

/// The row half-step of the `nr` (at most GROUP) rows from `h` in the fused loop: their
/// sums `K_i·(b∘β)` (into `s` and `s8`) and new scalings (into `xnew`, `a∘α'` into
/// `wa_new`). A whole group adds its violation `Σ a_i|p_i − 1|` to `acc` lane by lane and
/// returns 0; a partial one returns it. Also returns whether everything is in range.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn group_step<M: Fma>(
    ws: &mut SmallWs,
    h: usize,
    nr: usize,
    m: usize,
    w: f64,
    a: &[f64],
    acc: &mut [f64; GROUP],
    s8: &mut [f64; GROUP_ROWS],
) -> (f64, bool) {
    rows::dot_rows::<M>(&ws.kern[h * m..], m, m, nr, &ws.wb, s8);
    ws.s[h..h + nr].copy_from_slice(&s8[..nr]);
    if nr == GROUP {
        let ok = row_group::<M>(
            &ws.alpha[h..],
            s8,
            w,
            &a[h..],
            acc,
            &mut ws.xnew[h..],
            &mut ws.wa_new[h..],
        );
        (0.0, ok)
    } else {
        scale_body::<M>(
            &ws.alpha[h..h + nr],
            &s8[..nr],
            w,
            &a[h..h + nr],
            &mut ws.xnew[h..h + nr],
            &mut ws.wa_new[h..h + nr],
            &mut ws.scratch,
            false,
        )
    }
}

/// The small-problem path: a balanced problem solved serially in the scaling domain.
///
/// With `K_ij = e^{−(C_ij − min C)/ε}` and scalings α, β, the plan is
/// `P_ij = a_i α_i K_ij β_j b_j`, i.e. `f = ε ln α + min C`, `g = ε ln β`: the iterates of
/// [`super::solve`] from zero potentials (the same updates, errors and over-relaxation safeguard),
/// with no exp or log per iteration unless ω ≠ 1. A half-step is one matrix-vector product
/// on the stored kernel (or its transpose); the row product also gives the plan's exact row
/// marginals, so the L1 marginal check costs n operations. Returns `None` (the caller runs [`super::solve`]) when
/// `(max C − min C)/ε` exceeds [`SMALL_RANGE`] or a sum leaves the safe range.
pub(super) fn solve_small(
    p: &Problem<'_>,
    opts: &Options,
    ws: &mut SmallWs,
    want_plan: bool,
    stop: &AtomicBool,
) -> Result<Option<(Solved, Finished)>> {
    p.validate_but_cost()?;
    let level = simd::level();
    // One pass for the range and the finiteness check of `validate`.
    let (cmin, cmax, finite) = min_max(level, p.cost);
    if !finite {
        return Err(not_finite());
    }
    check_resolution(p.eps, cmax.abs().max(cmin.abs()))?;
    if !(p.rho_a.is_infinite() && p.rho_b.is_infinite()) || opts.scaling.is_some() {
        return Ok(None);
    }
    if !(opts.tol >= 0.0) || !((1.0..2.0).contains(&opts.omega) || opts.omega == 0.0) {
        return Ok(None);
    }
    let (n, m) = (p.n(), p.m());
    let eps = p.eps;
    if !((cmax - cmin) / eps <= SMALL_RANGE) {
        return Ok(None);
    }
    ws.kern.resize(n * m, 0.0);
    ws.scratch.resize(2 * n.max(m).max(GROUP), 0.0);
    ws.xnew.resize(n.max(m), 0.0);
    for v in [&mut ws.s, &mut ws.alpha, &mut ws.wa, &mut ws.wa_new] {
        v.resize(n, 0.0);
    }
    for v in [&mut ws.t, &mut ws.tprev, &mut ws.beta, &mut ws.wb] {
        v.resize(m, 0.0);
    }
    ws.s.fill(cmin / eps);
    ws.t.fill(0.0);
    small_kernel(level, p.cost, m, -1.0 / eps, cmin / eps, &mut ws.kern);
    ws.alpha.fill(1.0);
    ws.beta.fill(1.0);
    ws.wa.copy_from_slice(p.a);
    ws.wb.copy_from_slice(p.b);
    // AVX-512 runs the one-pass loop (explicit intrinsics); other levels sweep K and Kᵀ:
    // the one-pass loop's portable row kernels run 2x slower there than two axpy sweeps.
    let fused = level.min(simd::detected()) == Level::Avx512;
    if !fused {
        ws.kernt.resize(n * m, 0.0);
        transpose(&ws.kern, n, m, &mut ws.kernt);
    }
    let task = Sweeps {
        level,
        fused,
        p,
        opts,
        ws: &mut *ws,
        stop,
    };
    let Some((it, err, converged)) = simd::dispatch(level, task)? else {
        return Ok(None);
    };
    // The plan's marginals, linear cost and (optionally) entries, from the kernel.
    let f: Vec<f64> = ws.alpha.iter().map(|x| eps * x.ln() + cmin).collect();
    let g: Vec<f64> = ws.beta.iter().map(|y| eps * y.ln()).collect();
    let lin = if fused && converged {
        // The loop stopped on the row sums `s` of this plan, and `tprev` gave its column
        // sums in the column step before: the marginals are known.
        std::mem::swap(&mut ws.t, &mut ws.tprev);
        small_lin(level, p.cost, &ws.kern, &ws.wa, &ws.wb)
    } else {
        small_finish(
            level, p.cost, &ws.kern, &ws.wa, &ws.wb, &mut ws.s, &mut ws.t,
        )
    };
    let rowsum: Vec<f64> = (0..n).map(|i| ws.wa[i] * ws.s[i]).collect();
    let colsum: Vec<f64> = (0..m).map(|j| ws.wb[j] * ws.t[j]).collect();
    let mut plan = if want_plan {
        vec![0.0; n * m]
    } else {
        Vec::new()
    };
    if want_plan {
        for ((row, kr), &wi) in plan
            .chunks_exact_mut(m)
            .zip(ws.kern.chunks_exact(m))
            .zip(&ws.wa)
        {
            for ((pj, &kj), &wj) in row.iter_mut().zip(kr).zip(&ws.wb) {
                *pj = wi * kj * wj;
            }
        }
    }
    let fin = report(p, &f, &g, &rowsum, &colsum, lin, plan);
    Ok(Some((
        Solved {
            f,
            g,
            n_iter: it,
            error: err,
            converged,
        },
        fin,
    )))
}

#[cfg(test)]
mod tests {
    use super::super::tests::balanced;
    use super::*;
    use crate::core::ot::dense::{finish, solve};
    use crate::core::testing::Lcg;

    #[test]
    #[ignore = "timing probe: cargo test --release -- --ignored --nocapture small_phases"]
    fn small_phases() {
        let (n, m) = (64usize, 64usize);
        let (a, b, c) = super::super::tests::problem_data(n, m, 3);
        let level = simd::level();
        let reps = 20000;
        let mut kern = vec![0.0; n * m];
        let t = std::time::Instant::now();
        let mut acc = 0.0;
        for _ in 0..reps {
            let (lo, hi, _) = min_max(level, &c);
            acc += lo + hi;
        }
        println!(
            "min_max {:.2} us",
            t.elapsed().as_secs_f64() / reps as f64 * 1e6
        );
        let t = std::time::Instant::now();
        for _ in 0..reps {
            small_kernel(level, &c, m, -20.0, 0.0, &mut kern);
        }
        println!(
            "kernel {:.2} us",
            t.elapsed().as_secs_f64() / reps as f64 * 1e6
        );
        let (mut s1, mut t1) = (vec![0.0; n], vec![0.0; m]);
        let t = std::time::Instant::now();
        for _ in 0..reps {
            acc += small_finish(level, &c, &kern, &a, &b, &mut s1, &mut t1);
        }
        println!(
            "finish {:.2} us",
            t.elapsed().as_secs_f64() / reps as f64 * 1e6
        );
        let p = balanced(&a, &b, &c, 0.05);
        let o = Options {
            max_iter: 0,
            tol: 1e-30,
            ..Options::default()
        };
        let mut ws = SmallWs::default();
        let stop = AtomicBool::new(false);
        let t = std::time::Instant::now();
        for _ in 0..reps / 10 {
            acc += solve_small(&p, &o, &mut ws, false, &stop)
                .unwrap()
                .unwrap()
                .1
                .cost;
        }
        println!(
            "solve_small(max_iter 0) {:.2} us",
            t.elapsed().as_secs_f64() / (reps / 10) as f64 * 1e6
        );
        assert!(acc.is_finite());
    }

    #[test]
    fn small_path_rejects_non_finite_cost() {
        let (a, b) = (vec![0.5; 2], vec![0.5; 2]);
        let c = [0.0, 1.0, f64::NAN, 0.5];
        let p = balanced(&a, &b, &c, 0.1);
        let stop = AtomicBool::new(false);
        let err = solve_small(
            &p,
            &Options::default(),
            &mut SmallWs::default(),
            false,
            &stop,
        );
        assert!(matches!(err, Err(e) if e.to_string().contains("NaN or inf")));
        assert!(p.validate().is_err());
    }

    #[test]
    fn small_path_matches_general_solver_and_declines_wide_ranges() {
        let (n, m) = (23, 17);
        let mut g = Lcg::new(7);
        let mut rnd = || g.unit();
        let c: Vec<f64> = (0..n * m).map(|_| 2.0 + rnd()).collect();
        let mut a: Vec<f64> = (0..n).map(|_| rnd()).collect();
        let mut b: Vec<f64> = (0..m).map(|_| rnd()).collect();
        a[4] = 0.0;
        let (sa, sb): (f64, f64) = (a.iter().sum(), b.iter().sum());
        a.iter_mut().for_each(|x| *x /= sa);
        b.iter_mut().for_each(|x| *x /= sb);
        let stop = AtomicBool::new(false);
        let mut ws = SmallWs::default();
        for omega in [1.0, 0.0, 1.5] {
            let o = Options {
                tol: 1e-12,
                omega,
                max_iter: 10_000,
                parallel: false,
                ..Default::default()
            };
            let p = balanced(&a, &b, &c, 0.02);
            let (s1, f1) = solve_small(&p, &o, &mut ws, true, &stop).unwrap().unwrap();
            assert!(s1.converged && f1.marginal_error <= 1e-12);
            let s2 = solve(&p, None, &o, &stop).unwrap();
            let f2 = finish(&p, &s2.f, &s2.g, true, false, &stop).unwrap();
            if omega == 1.0 {
                // The same iterates from zero potentials.
                assert_eq!(s1.n_iter, s2.n_iter);
            }
            assert!((f1.cost - f2.cost).abs() <= 1e-12 * f2.cost.abs());
            for (x, y) in f1.plan.iter().zip(&f2.plan) {
                assert!((x - y).abs() <= 1e-8 * y + 1e-16, "{x} vs {y}");
            }
            // (max C − min C)/ε = 1/0.005 = 200 > SMALL_RANGE: left to the general solver.
            let wide = Problem { eps: 0.005, ..p };
            assert!(solve_small(&wide, &o, &mut ws, false, &stop)
                .unwrap()
                .is_none());
        }
    }
}
