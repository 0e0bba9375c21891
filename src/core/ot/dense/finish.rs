//! The plan of given potentials, and the costs and marginal error every path reports.

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use super::bodies::finish_rows;
use super::{Finished, Problem};
use crate::core::error::Result;
use crate::core::simd;
use crate::core::threads;

/// Rows per parallel task when the plan is formed.
const FINISH_ROWS: usize = 128;

/// Forms the plan of potentials (f, g) (when `want_plan`) and its costs and marginal error.
///
/// Memory: the plan when asked for; otherwise one block of 128 rows per task plus one
/// partial column sum per block.
pub fn finish(
    p: &Problem<'_>,
    f: &[f64],
    g: &[f64],
    want_plan: bool,
    parallel: bool,
    stop: &AtomicBool,
) -> Result<Finished> {
    p.validate()?;
    let (n, m) = (p.n(), p.m());
    let eps = p.eps;
    let fa: Vec<f64> = (0..n).map(|i| f[i] / eps + p.a[i].ln()).collect();
    let gb: Vec<f64> = (0..m).map(|j| g[j] / eps + p.b[j].ln()).collect();
    let nb = n.div_ceil(FINISH_ROWS);
    let level = simd::level();
    let mut plan = if want_plan {
        vec![0.0; n * m]
    } else {
        Vec::new()
    };
    let work = |b: usize, pl: &mut [f64]| {
        let r0 = b * FINISH_ROWS;
        let nr = FINISH_ROWS.min(n - r0);
        let mut own = Vec::new();
        let pl = if pl.is_empty() {
            own = vec![0.0; nr * m];
            &mut own[..]
        } else {
            pl
        };
        let mut cs = vec![0.0; m];
        let mut rs = vec![0.0; nr];
        let mut lin = vec![0.0; nr];
        finish_rows(
            level,
            &p.cost[r0 * m..(r0 + nr) * m],
            &fa[r0..r0 + nr],
            &gb,
            1.0 / eps,
            pl,
            &mut cs,
            &mut rs,
            &mut lin,
        );
        drop(own);
        (cs, rs, lin)
    };
    let parts: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = if want_plan {
        let run = |(b, pl): (usize, &mut [f64])| -> Result<_> {
            threads::check(stop)?;
            Ok(work(b, pl))
        };
        if parallel && nb > 1 {
            threads::install(|| {
                plan.par_chunks_mut(FINISH_ROWS * m)
                    .enumerate()
                    .map(run)
                    .collect::<Result<Vec<_>>>()
            })??
        } else {
            plan.chunks_mut(FINISH_ROWS * m)
                .enumerate()
                .map(run)
                .collect::<Result<Vec<_>>>()?
        }
    } else {
        let run = |b: usize| -> Result<_> {
            threads::check(stop)?;
            Ok(work(b, &mut []))
        };
        if parallel && nb > 1 {
            threads::install(|| (0..nb).into_par_iter().map(run).collect::<Result<Vec<_>>>())??
        } else {
            (0..nb).map(run).collect::<Result<Vec<_>>>()?
        }
    };
    let mut colsum = vec![0.0; m];
    let mut rowsum = Vec::with_capacity(n);
    let mut lin = 0.0;
    for (cs, rs, l) in parts {
        for (a, x) in colsum.iter_mut().zip(&cs) {
            *a += x;
        }
        rowsum.extend(rs);
        lin += l.iter().sum::<f64>();
    }
    Ok(report(p, f, g, &rowsum, &colsum, lin, plan))
}

/// What every path reports for the plan of potentials (f, g), from its row sums `rowsum`,
/// column sums `colsum` and linear cost `lin` = ⟨C, P⟩: the entropic cost (with the
/// marginal terms when unbalanced), the marginal error and the mass; `plan` (possibly
/// empty) is passed through.
pub(super) fn report(
    p: &Problem<'_>,
    f: &[f64],
    g: &[f64],
    rowsum: &[f64],
    colsum: &[f64],
    lin: f64,
    plan: Vec<f64>,
) -> Finished {
    let (n, m) = (p.n(), p.m());
    let eps = p.eps;
    let mass: f64 = rowsum.iter().sum();
    // Σ P ln(P/(a⊗b)) = Σ P (f ⊕ g − C)/ε = (⟨r, f⟩ + ⟨c, g⟩ − ⟨C, P⟩)/ε.
    let rf: f64 = rowsum
        .iter()
        .zip(f)
        .map(|(r, x)| if *r > 0.0 { r * x } else { 0.0 })
        .sum();
    let cg: f64 = colsum
        .iter()
        .zip(g)
        .map(|(c, y)| if *c > 0.0 { c * y } else { 0.0 })
        .sum();
    let (ma, mb): (f64, f64) = (p.a.iter().sum(), p.b.iter().sum());
    let kl_plan = (rf + cg - lin) / eps - mass + ma * mb;
    let mut cost = lin + eps * kl_plan;
    // KL(r|w) = Σ w φ(r/w − 1), φ(u) = (1+u) ln(1+u) − u: the series near u = 0, where the
    // direct form cancels (its rounding, times a large reg_m, would swamp the cost).
    let kl = |r: &[f64], w: &[f64]| -> f64 {
        r.iter()
            .zip(w)
            .map(|(&ri, &wi)| {
                if wi == 0.0 {
                    return ri;
                }
                let u = (ri - wi) / wi;
                if u.abs() < 1e-3 {
                    let u2 = u * u;
                    wi * u2 * (0.5 - u / 6.0 + u2 / 12.0 - u2 * u / 20.0)
                } else {
                    let t = if ri > 0.0 { ri * (ri / wi).ln() } else { 0.0 };
                    t - ri + wi
                }
            })
            .sum()
    };
    if p.rho_a.is_finite() {
        cost += p.rho_a * kl(rowsum, p.a);
    }
    if p.rho_b.is_finite() {
        cost += p.rho_b * kl(colsum, p.b);
    }
    let target = |w: f64, x: f64, rho: f64| {
        if rho.is_finite() {
            w * (-x / rho).exp()
        } else {
            w
        }
    };
    let err: f64 = (0..n)
        .map(|i| (rowsum[i] - target(p.a[i], f[i], p.rho_a)).abs())
        .sum::<f64>()
        + (0..m)
            .map(|j| (colsum[j] - target(p.b[j], g[j], p.rho_b)).abs())
            .sum::<f64>();
    Finished {
        plan,
        linear_cost: lin,
        cost,
        marginal_error: err,
        mass,
    }
}
