//! Gradients of the batched discrete divergences ([`super::discrete`]) with respect to
//! both rows, for `divest.torch`'s backward pass.
//!
//! Each row is prepared exactly as in the forward pass (validated, normalised, in
//! probability or log space), so the gradient is that of the value the forward pass
//! returned: D(p̂, q̂) with p̂ = p / Σp (probabilities) or p̂ = softmax(x) (logits and
//! log-probabilities). With G = ∂D/∂p̂ (the partial derivatives of the unnormalised
//! form Σ q̂ f(p̂/q̂)) and H = p̂·G:
//!
//! * logits / log-probabilities: ∂D/∂x_j = H_j - p̂_j Σ_i H_i;
//! * probabilities: ∂D/∂p_j = (G_j - Σ_i H_i) / Σp.
//!
//! Both are invariant to adding a constant to G, so each G is taken in the form that
//! vanishes where p̂_j = q̂_j (f'(t) - f'(1) for p̂, f(t) - t f'(t) + f'(1) for q̂): equal
//! entries contribute exactly zero, and identical rows give exactly zero gradients.
//! Where p̂_j = 0, H_j = 0 (the term's mass vanishes), so a zero probability never makes a
//! NaN; the derivative with respect to a *probability* that is exactly zero is the
//! one-sided one, which is -inf for the terms with an unbounded slope there (KL's p ln p,
//! Hellinger's √p) and finite otherwise. Memory: the two gradients (the inputs' size, in
//! their dtype) plus a few rows of f64 per running task.

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use super::discrete::{prepare, Batch, Input, Measure, Spec};
use crate::core::error::{invalid, Result};
use crate::core::pairwise::Float;
use crate::core::simd::{self, Fma, Level, SimdTask};
use crate::core::threads;

/// Gradients of `coef[r] · D(p_r, q_r)` with respect to row r of `p` and of `q` (rows of
/// the same count, no broadcasting: the caller expands). An empty vector where the
/// gradient is not wanted.
pub fn divergence_rows_grad<T: Float>(
    p: Batch<'_, T>,
    q: Batch<'_, T>,
    spec: Spec,
    coef: &[f64],
    want: (bool, bool),
    stop: &AtomicBool,
) -> Result<(Vec<T>, Vec<T>)> {
    if p.k != q.k || p.rows != q.rows {
        return Err(invalid!(
            "p is {}x{} but q is {}x{}; gradients need rows of one shape",
            p.rows,
            p.k,
            q.rows,
            q.k
        ));
    }
    if p.k == 0 {
        return Err(invalid!("distributions need at least one category"));
    }
    for (b, name) in [(&p, "p"), (&q, "q")] {
        if b.rows.checked_mul(b.k) != Some(b.data.len()) {
            return Err(invalid!("{name} buffer has {} values", b.data.len()));
        }
    }
    if coef.len() != p.rows {
        return Err(invalid!(
            "coef has {} values for {} rows",
            coef.len(),
            p.rows
        ));
    }
    let (k, rows) = (p.k, p.rows);
    let mut gp = if want.0 {
        crate::core::error::try_vec(rows * k, T::ZERO, "the gradient")?
    } else {
        Vec::new()
    };
    let mut gq = if want.1 {
        crate::core::error::try_vec(rows * k, T::ZERO, "the gradient")?
    } else {
        Vec::new()
    };
    let per = (65_536 / k).clamp(1, 256);
    let level = simd::level();
    let chunk = per * k;
    let n_chunks = rows.div_ceil(per);
    // Split both outputs into the same row chunks (an empty output gives empty chunks).
    let mut gpc: Vec<&mut [T]> = if want.0 {
        gp.chunks_mut(chunk).collect()
    } else {
        (0..n_chunks).map(|_| <&mut [T]>::default()).collect()
    };
    let mut gqc: Vec<&mut [T]> = if want.1 {
        gq.chunks_mut(chunk).collect()
    } else {
        (0..n_chunks).map(|_| <&mut [T]>::default()).collect()
    };
    threads::install(|| {
        gpc.par_iter_mut()
            .zip(gqc.par_iter_mut())
            .enumerate()
            .try_for_each_init(
                || Bufs::new(k),
                |bufs, (c, (op, oq))| {
                    threads::check(stop)?;
                    let r0 = c * per;
                    let r1 = (r0 + per).min(rows);
                    let ctx = Ctx {
                        p,
                        q,
                        spec,
                        coef: &coef[r0..r1],
                        r0,
                    };
                    run_block(level, &ctx, op, oq, bufs)
                },
            )
    })??;
    Ok((gp, gq))
}

struct Bufs {
    a: Vec<f64>,
    b: Vec<f64>,
    ea: Vec<f64>,
    eb: Vec<f64>,
    hp: Vec<f64>,
    hq: Vec<f64>,
}

impl Bufs {
    fn new(k: usize) -> Bufs {
        Bufs {
            a: vec![0.0; k],
            b: vec![0.0; k],
            ea: vec![0.0; k],
            eb: vec![0.0; k],
            hp: vec![0.0; k],
            hq: vec![0.0; k],
        }
    }
}

struct Ctx<'a, T> {
    p: Batch<'a, T>,
    q: Batch<'a, T>,
    spec: Spec,
    coef: &'a [f64],
    r0: usize,
}

fn run_block<T: Float>(
    level: Level,
    ctx: &Ctx<'_, T>,
    op: &mut [T],
    oq: &mut [T],
    bufs: &mut Bufs,
) -> Result<()> {
    struct Task<'a, 'c, T> {
        ctx: &'a Ctx<'c, T>,
        op: &'a mut [T],
        oq: &'a mut [T],
        bufs: &'a mut Bufs,
    }
    impl<T: Float> SimdTask for Task<'_, '_, T> {
        type Output = Result<()>;
        #[inline(always)]
        fn run<M: Fma>(self) -> Result<()> {
            block::<T, M>(self.ctx, self.op, self.oq, self.bufs)
        }
    }
    simd::dispatch(level, Task { ctx, op, oq, bufs })
}

/// x·g with 0·(±inf) = 0: a term whose mass vanishes contributes nothing.
#[inline(always)]
fn hm(x: f64, g: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else {
        x * g
    }
}

#[inline(always)]
fn block<T: Float, M: Fma>(
    ctx: &Ctx<'_, T>,
    op: &mut [T],
    oq: &mut [T],
    bufs: &mut Bufs,
) -> Result<()> {
    let k = ctx.p.k;
    let spec = ctx.spec;
    let log = spec.input != Input::Prob;
    let Bufs {
        a,
        b,
        ea,
        eb,
        hp,
        hq,
    } = bufs;
    for (i, &c) in ctx.coef.iter().enumerate() {
        let r = ctx.r0 + i;
        let sp = &ctx.p.data[r * k..(r + 1) * k];
        let sq = &ctx.q.data[r * k..(r + 1) * k];
        prepare::<T, M>(sp, a, ea, spec, "p", r)?;
        prepare::<T, M>(sq, b, eb, spec, "q", r)?;
        let dp = if op.is_empty() {
            None
        } else {
            Some(&mut op[i * k..(i + 1) * k])
        };
        let dq = if oq.is_empty() {
            None
        } else {
            Some(&mut oq[i * k..(i + 1) * k])
        };
        if c == 0.0 || a == b {
            // No upstream gradient, or identical rows: exactly zero.
            for d in dp.into_iter().chain(dq) {
                d.fill(T::ZERO);
            }
            continue;
        }
        // (probabilities, log-probabilities) of each row.
        let (pp, pl, qp, ql): (&[f64], &[f64], &[f64], &[f64]) =
            if log { (ea, a, eb, b) } else { (a, a, b, b) };
        // G in hp/hq for probabilities, H in log mode; (Σ H_p, Σ H_q).
        let (shp, shq) = derivs::<M>(spec.measure, log, pp, pl, qp, ql, hp, hq);
        if log {
            if let Some(d) = dp {
                for j in 0..k {
                    d[j] = T::from_f64(c * (hp[j] - pp[j] * shp));
                }
            }
            if let Some(d) = dq {
                for j in 0..k {
                    d[j] = T::from_f64(c * (hq[j] - qp[j] * shq));
                }
            }
        } else {
            for (d, src, g, sh) in [(dp, sp, &*hp, shp), (dq, sq, &*hq, shq)] {
                if let Some(d) = d {
                    let mut s = 0.0;
                    for &x in src {
                        s += x.to_f64();
                    }
                    let f = c / s;
                    for j in 0..k {
                        d[j] = T::from_f64(f * (g[j] - sh));
                    }
                }
            }
        }
    }
    Ok(())
}

#[inline(always)]
fn ln<M: Fma>(x: f64) -> f64 {
    if x > 0.0 && x < f64::INFINITY {
        crate::core::simd::vmath::ln_core::<M>(x, x - 1.0)
    } else if x == 0.0 {
        f64::NEG_INFINITY
    } else {
        x.ln()
    }
}

/// Fills `gp`, `gq` with G (probability mode) or H = p̂·G (log mode) and returns
/// (Σ H_p, Σ H_q). `pp`/`qp` are probabilities, `pl`/`ql` log-probabilities in log mode
/// (the probabilities again in probability mode).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn derivs<M: Fma>(
    measure: Measure,
    log: bool,
    pp: &[f64],
    pl: &[f64],
    qp: &[f64],
    ql: &[f64],
    gp: &mut [f64],
    gq: &mut [f64],
) -> (f64, f64) {
    let k = pp.len();
    // ln p̂ - ln q̂ (±inf at a zero; NaN only for 0/0, which the callers skip).
    let lr = |j: usize| -> f64 {
        if log {
            pl[j] - ql[j]
        } else {
            ln::<M>(pp[j]) - ln::<M>(qp[j])
        }
    };
    if let Measure::Renyi(alpha) = measure {
        return renyi(alpha, log, (pp, pl, qp, ql), &lr, gp, gq);
    }
    let (mut shp, mut shq) = (0.0, 0.0);
    for j in 0..k {
        let (p, q) = (pp[j], qp[j]);
        let (g1, g2, h1, h2) = if p == q || (log && pl[j] == ql[j]) {
            (0.0, 0.0, 0.0, 0.0)
        } else {
            elem(measure, p, q, lr(j))
        };
        shp += h1;
        shq += h2;
        if log {
            gp[j] = h1;
            gq[j] = h2;
        } else {
            gp[j] = g1;
            gq[j] = g2;
        }
    }
    (shp, shq)
}

/// (G_p, G_q, H_p, H_q) of one pair of entries p ≠ q, with l = ln(p/q).
#[inline(always)]
fn elem(measure: Measure, p: f64, q: f64, l: f64) -> (f64, f64, f64, f64) {
    match measure {
        Measure::Kl => {
            let t = if q > 0.0 { p / q } else { f64::INFINITY };
            let gp = l;
            (gp, 1.0 - t, hm(p, gp), q - p)
        }
        Measure::ReverseKl => {
            let u = if p > 0.0 { q / p } else { f64::INFINITY };
            let gq = -l;
            (1.0 - u, gq, p - q, hm(q, gq))
        }
        Measure::Jeffreys => {
            let t = if q > 0.0 { p / q } else { f64::INFINITY };
            let u = if p > 0.0 { q / p } else { f64::INFINITY };
            let gp = l + 1.0 - u;
            let gq = -l + 1.0 - t;
            (gp, gq, hm(p, l) + p - q, hm(q, -l) + q - p)
        }
        Measure::Js => {
            // ½ ln(2p/(p+q)) = ½ (ln 2 - softplus(-l)).
            let sp = |x: f64| -> f64 {
                if x == f64::INFINITY {
                    x
                } else {
                    x.max(0.0) + (-x.abs()).exp().ln_1p()
                }
            };
            let ln2 = std::f64::consts::LN_2;
            let gp = 0.5 * (ln2 - sp(-l));
            let gq = 0.5 * (ln2 - sp(l));
            (gp, gq, hm(p, gp), hm(q, gq))
        }
        Measure::HellingerSq => {
            let gp = 0.5 * (1.0 - (-0.5 * l).exp());
            let gq = 0.5 * (1.0 - (0.5 * l).exp());
            (gp, gq, hm(p, gp), hm(q, gq))
        }
        Measure::Tv => {
            let s = if p > q { 0.5 } else { -0.5 };
            (s, -s, p * s, -q * s)
        }
        Measure::Chi2 => {
            let t = if q > 0.0 { p / q } else { f64::INFINITY };
            let gp = 2.0 * (t - 1.0);
            let gq = 1.0 - t * t;
            (gp, gq, hm(p, gp), q - hm(p, t))
        }
        Measure::NeymanChi2 => {
            let u = if p > 0.0 { q / p } else { f64::INFINITY };
            let gp = 1.0 - u * u;
            let gq = 2.0 * (u - 1.0);
            (gp, gq, p - hm(q, u), hm(q, gq))
        }
        Measure::Triangular => {
            // r = p/(p+q) in [0, 1].
            let r = p / (p + q);
            let gp = (2.0 * r - 1.0) * (3.0 - 2.0 * r);
            let gq = -(2.0 * r - 1.0) * (1.0 + 2.0 * r);
            (gp, gq, p * gp, q * gq)
        }
        Measure::Alpha(alpha) => {
            let gam = 0.5 * (alpha - 1.0);
            let del = 0.5 * (alpha + 1.0);
            let gp = if gam == 0.0 {
                l
            } else {
                (gam * l).exp_m1() / gam
            };
            let gq = if del == 0.0 {
                -l
            } else {
                -(del * l).exp_m1() / del
            };
            (gp, gq, hm(p, gp), hm(q, gq))
        }
        Measure::Renyi(_) => unreachable!("handled per row"),
    }
}

/// Rényi rows: with w_j = p̂_j^α q̂_j^(1-α) / S (the escort distribution),
/// H_p = α/(α-1) w and H_q = -w; the limits α = 0, 1 and ∞ are taken.
#[allow(clippy::too_many_arguments)]
fn renyi(
    alpha: f64,
    log: bool,
    rows: (&[f64], &[f64], &[f64], &[f64]),
    lr: &dyn Fn(usize) -> f64,
    gp: &mut [f64],
    gq: &mut [f64],
) -> (f64, f64) {
    let (pp, _, qp, ql) = rows;
    let k = pp.len();
    if alpha == 1.0 {
        let (mut a, mut b) = (0.0, 0.0);
        for j in 0..k {
            let (p, q) = (pp[j], qp[j]);
            let (g1, g2, h1, h2) = if p == q {
                (0.0, 0.0, 0.0, 0.0)
            } else {
                elem(Measure::Kl, p, q, lr(j))
            };
            a += h1;
            b += h2;
            (gp[j], gq[j]) = if log { (h1, h2) } else { (g1, g2) };
        }
        return (a, b);
    }
    // ln of each term p^α q^(1-α) (-inf where it vanishes), then w = softmax of them.
    let lw = |j: usize| -> f64 {
        let l = lr(j);
        // Outside the support of p̂ (l = -inf, or NaN for 0/0) the term vanishes (α > 0)
        // or is left out of the sum (α = 0).
        if l.is_nan() || l == f64::NEG_INFINITY {
            return f64::NEG_INFINITY;
        }
        let lq = if log { ql[j] } else { qp[j].ln() };
        // α ln p + (1-α) ln q = ln q + α ln(p/q).
        if alpha == 0.0 {
            lq
        } else {
            lq + alpha * l
        }
    };
    let (ha, hb) = if alpha == f64::INFINITY {
        (1.0, -1.0)
    } else if alpha == 0.0 {
        (0.0, -1.0)
    } else {
        (alpha / (alpha - 1.0), -1.0)
    };
    if alpha == f64::INFINITY {
        // D = max_{p>0} ln(p/q): the gradient sits on the arg max.
        let mut best = (f64::NEG_INFINITY, 0usize);
        for (j, &p) in pp.iter().enumerate() {
            if p > 0.0 || log {
                let l = lr(j);
                if l > best.0 {
                    best = (l, j);
                }
            }
        }
        for (j, (a, b)) in gp.iter_mut().zip(gq.iter_mut()).enumerate() {
            let w = if j == best.1 { 1.0 } else { 0.0 };
            *a = w;
            *b = -w;
        }
    } else {
        let mut mx = f64::NEG_INFINITY;
        for (j, v) in gq.iter_mut().enumerate() {
            *v = lw(j);
            mx = mx.max(*v);
        }
        let mut s = 0.0;
        for v in gq.iter_mut() {
            *v = if *v == f64::NEG_INFINITY {
                0.0
            } else {
                (*v - mx).exp()
            };
            s += *v;
        }
        for j in 0..k {
            let w = gq[j] / s;
            gp[j] = ha * w;
            gq[j] = hb * w;
        }
    }
    let sa: f64 = gp.iter().sum();
    let sb: f64 = gq.iter().sum();
    if !log {
        // G = H / p̂ (the one-sided limit where p̂ = 0: -inf when that slope is unbounded).
        for j in 0..k {
            let (p, q) = (pp[j], qp[j]);
            gp[j] = if p > 0.0 {
                gp[j] / p
            } else if alpha < 1.0 && alpha > 0.0 && q > 0.0 {
                f64::NEG_INFINITY
            } else {
                0.0
            };
            gq[j] = if q > 0.0 {
                gq[j] / q
            } else if p > 0.0 {
                f64::NEG_INFINITY
            } else {
                0.0
            };
        }
    }
    (sa, sb)
}
