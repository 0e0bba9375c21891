//! Exact 1-D optimal transport by sorting, and sliced transport: the 1-D problems of many
//! projections solved in parallel.
//!
//! Between two weighted 1-D samples, W_p^p = ∫_0^1 |F⁻¹(t) − G⁻¹(t)|^p dt, the quantile
//! functions being step functions: after sorting both samples, one merge over the
//! cumulative weights visits every segment on which both quantile functions are constant
//! (at most n + m − 1 of them) and adds (segment length)·|u_i − v_j|^p. The segment ends
//! are read off the cumulative sums (never accumulated from remainders), the last of each
//! set to exactly 1. Each projection of the sliced distance is one such problem on the
//! projected samples, solved serially by one worker (so the result does not depend on
//! the thread count), in O(n + m) memory per worker.

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use crate::core::dcov::sums::Acc;
use crate::core::error::{invalid, try_vec, Result};
use crate::core::pairwise::Points;
use crate::core::threads;

/// Sorted values and their normalised cumulative weights (last exactly 1), with the
/// original index of each sorted value.
struct Sorted {
    v: Vec<f64>,
    cum: Vec<f64>,
    idx: Vec<u32>,
}

fn sorted(vals: Vec<f64>, w: Option<&[f64]>) -> Sorted {
    let n = vals.len();
    let mut idx: Vec<u32> = (0..n as u32).collect();
    idx.sort_by(|&a, &b| vals[a as usize].total_cmp(&vals[b as usize]));
    let v: Vec<f64> = idx.iter().map(|&i| vals[i as usize]).collect();
    let mut cum = Vec::with_capacity(n);
    let mut acc = Acc::default();
    match w {
        Some(w) => {
            let mut tot = Acc::default();
            for &x in w {
                tot.add(x);
            }
            let t = tot.value();
            for &i in &idx {
                acc.add(w[i as usize]);
                cum.push(acc.value() / t);
            }
        }
        None => {
            for k in 1..=n {
                cum.push(k as f64 / n as f64);
            }
        }
    }
    if let Some(last) = cum.last_mut() {
        *last = 1.0;
    }
    Sorted { v, cum, idx }
}

#[inline]
fn cost(d: f64, p: f64) -> f64 {
    let a = d.abs();
    if p == 1.0 {
        a
    } else if p == 2.0 {
        a * a
    } else {
        a.powf(p)
    }
}

/// Visits the segments of the quantile merge: `seg(i, j, δ, u_i − v_j)` with i, j the
/// original indices and δ > 0 the segment length.
fn merge(u: &Sorted, v: &Sorted, mut seg: impl FnMut(u32, u32, f64, f64)) {
    let (n, m) = (u.v.len(), v.v.len());
    let (mut i, mut j) = (0usize, 0usize);
    let mut t = 0.0f64;
    while i < n && j < m {
        let next = u.cum[i].min(v.cum[j]);
        let delta = next - t;
        if delta > 0.0 {
            seg(u.idx[i], v.idx[j], delta, u.v[i] - v.v[j]);
        }
        t = next;
        if u.cum[i] <= next {
            i += 1;
        }
        if v.cum[j] <= next {
            j += 1;
        }
    }
}

/// W_p between two sorted samples, evaluated as D·(Σ δ (|d|/D)^p)^(1/p) with D the
/// largest coupled |d| (no overflow for any p); with `grad`, a second merge calls
/// `grad(i, j, ∂W_p/∂d)` = δ (|d|/W_p)^(p−1) sign(d) for every segment.
fn wp(u: &Sorted, v: &Sorted, p: f64, grad: Option<&mut dyn FnMut(u32, u32, f64)>) -> f64 {
    let mut dmax = 0.0f64;
    merge(u, v, |_, _, _, d| dmax = dmax.max(d.abs()));
    if dmax == 0.0 {
        return 0.0;
    }
    let mut acc = Acc::default();
    merge(u, v, |_, _, delta, d| acc.add(delta * cost(d / dmax, p)));
    let w = dmax * acc.value().powf(1.0 / p);
    if let Some(g) = grad {
        if w > 0.0 {
            merge(u, v, |i, j, delta, d| {
                if d != 0.0 {
                    g(i, j, delta * (d.abs() / w).powf(p - 1.0) * d.signum());
                }
            });
        }
    }
    w
}

fn check_p(p: f64) -> Result<()> {
    if p.is_finite() && p >= 1.0 {
        Ok(())
    } else {
        Err(invalid!("p must be a finite number >= 1; got {p}"))
    }
}

/// W_p between weighted 1-D samples (weights non-negative with positive sums; the
/// caller validates them). Exact up to rounding: O((n + m) log(n + m)).
pub fn wasserstein_1d(
    u: &[f64],
    v: &[f64],
    wu: Option<&[f64]>,
    wv: Option<&[f64]>,
    p: f64,
) -> Result<f64> {
    check_p(p)?;
    if u.is_empty() || v.is_empty() {
        return Err(invalid!("both samples need at least one value"));
    }
    let (su, sv) = (sorted(u.to_vec(), wu), sorted(v.to_vec(), wv));
    Ok(wp(&su, &sv, p, None))
}

fn project(x: Points<'_, f64>, th: &[f64]) -> Vec<f64> {
    (0..x.n)
        .map(|i| x.row(i).iter().zip(th).map(|(a, b)| a * b).sum())
        .collect()
}

/// Per projection θ_l (rows of `thetas`): W_p between the projected samples, and with
/// `with_grad` its gradient with respect to θ_l (for the fixed optimal 1-D coupling),
/// row-major L×d. Projections run in parallel, each serially.
#[allow(clippy::too_many_arguments)]
pub fn sliced(
    x: Points<'_, f64>,
    y: Points<'_, f64>,
    a: Option<&[f64]>,
    b: Option<&[f64]>,
    thetas: Points<'_, f64>,
    p: f64,
    with_grad: bool,
    stop: &AtomicBool,
) -> Result<(Vec<f64>, Vec<f64>)> {
    check_p(p)?;
    let d = x.d;
    if y.d != d || thetas.d != d {
        return Err(invalid!(
            "x, y and the projections must have the same dimension; got {}, {} and {}",
            d,
            y.d,
            thetas.d
        ));
    }
    if x.n == 0 || y.n == 0 {
        return Err(invalid!("both samples need at least one point"));
    }
    let l = thetas.n;
    let mut vals = try_vec(l, 0.0f64, "n_projections")?;
    let mut grads = try_vec(if with_grad { l * d } else { 0 }, 0.0f64, "n_projections")?;
    threads::install(|| {
        let work = |li: usize, out: &mut f64, g: &mut [f64]| -> Result<()> {
            threads::check(stop)?;
            let th = thetas.row(li);
            let (su, sv) = (sorted(project(x, th), a), sorted(project(y, th), b));
            *out = if with_grad {
                let mut f = |i: u32, j: u32, c: f64| {
                    let (xi, yj) = (x.row(i as usize), y.row(j as usize));
                    for k in 0..d {
                        g[k] += c * (xi[k] - yj[k]);
                    }
                };
                wp(&su, &sv, p, Some(&mut f))
            } else {
                wp(&su, &sv, p, None)
            };
            Ok(())
        };
        if with_grad {
            vals.par_iter_mut()
                .zip(grads.par_chunks_mut(d))
                .enumerate()
                .try_for_each(|(li, (o, g))| work(li, o, g))
        } else {
            vals.par_iter_mut()
                .enumerate()
                .try_for_each(|(li, o)| work(li, o, &mut []))
        }
    })??;
    Ok((vals, grads))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::sym_vec;

    #[test]
    fn equal_size_uniform_is_sorted_matching() {
        let u = sym_vec(1, 50);
        let v = sym_vec(2, 50);
        let (mut su, mut sv) = (u.clone(), v.clone());
        su.sort_by(f64::total_cmp);
        sv.sort_by(f64::total_cmp);
        for p in [1.0, 2.0, 3.5] {
            let want: f64 = su
                .iter()
                .zip(&sv)
                .map(|(a, b)| (a - b).abs().powf(p))
                .sum::<f64>()
                / 50.0;
            let got = wasserstein_1d(&u, &v, None, None, p).unwrap().powf(p);
            assert!((got - want).abs() < 1e-12 * want, "{got} {want}");
        }
    }

    #[test]
    fn gradient_matches_finite_differences_and_threads_do_not_matter() {
        let stop = AtomicBool::new(false);
        let (x, y) = (sym_vec(3, 40 * 3), sym_vec(4, 30 * 3));
        let (px, py) = (
            Points::new(&x, 40, 3).unwrap(),
            Points::new(&y, 30, 3).unwrap(),
        );
        let th = [0.3, -0.5, 0.8];
        let pt = Points::new(&th, 1, 3).unwrap();
        let (v, g) = sliced(px, py, None, None, pt, 2.0, true, &stop).unwrap();
        for k in 0..3 {
            let mut t2 = th;
            let h = 1e-6;
            t2[k] += h;
            let (v2, _) = sliced(
                px,
                py,
                None,
                None,
                Points::new(&t2, 1, 3).unwrap(),
                2.0,
                false,
                &stop,
            )
            .unwrap();
            assert!(((v2[0] - v[0]) / h - g[k]).abs() < 1e-4, "{k}");
        }
        assert!(wasserstein_1d(&x, &y, None, None, 0.5).is_err());
    }
}
