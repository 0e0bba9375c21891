//! Batched divergences between discrete distributions, one value per pair of rows.
//!
//! Rows are validated and normalised here (so Python never builds an input-sized
//! temporary), in probability or log space. Log-probabilities and logits stay in log space:
//! a row's log-sum-exp is computed in one pass and the softmax is never stored beyond one
//! row. Every row is independent, so any fixed partition gives bitwise-identical results
//! for any number of threads.
//!
//! The logarithmic divergences are sums of the non-negative terms p ln(p/q) - p + q
//! (see [`kl_term`]), which are exact for nearly identical inputs and never negative.

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use crate::core::error::{invalid, Result};
use crate::core::pairwise::Float;
use crate::core::simd::vmath::{kl_term, ln_ratio, ln_ratio_inv, LIFT, TINY};
use crate::core::simd::{self, Fma, Level, SimdTask};
use crate::core::threads;

/// The quantity reduced over each pair of rows (all in nats, before any square root).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Measure {
    /// KL(p‖q) = Σ p ln(p/q).
    Kl,
    /// KL(q‖p).
    ReverseKl,
    /// KL(p‖q) + KL(q‖p).
    Jeffreys,
    /// Jensen-Shannon divergence ½ KL(p‖m) + ½ KL(q‖m), m = (p + q)/2.
    Js,
    /// Squared Hellinger distance ½ Σ (√p - √q)².
    HellingerSq,
    /// Total variation ½ Σ |p - q|.
    Tv,
    /// Pearson χ² = Σ (p - q)² / q.
    Chi2,
    /// Neyman χ² = Σ (p - q)² / p.
    NeymanChi2,
    /// Triangular discrimination Σ (p - q)² / (p + q).
    Triangular,
    /// Amari's α-divergence 4/(1-α²) Σ [(1-α)/2 q + (1+α)/2 p - p^((1+α)/2) q^((1-α)/2)].
    Alpha(f64),
    /// Rényi divergence of order α >= 0 (α = ∞ allowed): ln(Σ p^α q^(1-α)) / (α - 1).
    Renyi(f64),
}

impl Measure {
    /// Parses a measure name; `param` is α for "alpha" and "renyi".
    pub fn parse(name: &str, param: f64) -> Result<Measure> {
        Ok(match name {
            "kl" => Measure::Kl,
            "reverse_kl" => Measure::ReverseKl,
            "jeffreys" => Measure::Jeffreys,
            "js" => Measure::Js,
            "hellinger" => Measure::HellingerSq,
            "tv" => Measure::Tv,
            "chi2" => Measure::Chi2,
            "neyman_chi2" => Measure::NeymanChi2,
            "triangular" => Measure::Triangular,
            "alpha" => {
                if !param.is_finite() {
                    return Err(invalid!("alpha must be finite; got {param}"));
                }
                Measure::Alpha(param)
            }
            "renyi" => {
                if param.is_nan() || param < 0.0 {
                    return Err(invalid!("alpha must be >= 0 (inf allowed); got {param}"));
                }
                Measure::Renyi(param)
            }
            other => return Err(invalid!("unknown divergence {other:?}")),
        })
    }
}

/// What the rows hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Probabilities (non-negative, rows summing to one unless normalising).
    Prob,
    /// Log-probabilities (rows whose exponentials sum to one unless normalising).
    LogProb,
    /// Unnormalised log-probabilities: always normalised by their log-sum-exp.
    Logits,
}

impl Input {
    /// Parses "prob", "log" or "logits".
    pub fn parse(name: &str) -> Result<Input> {
        Ok(match name {
            "prob" => Input::Prob,
            "log" => Input::LogProb,
            "logits" => Input::Logits,
            other => {
                return Err(invalid!(
                    "input must be 'prob', 'log' or 'logits'; got {other:?}"
                ))
            }
        })
    }
}

/// A row-major batch of `rows` distributions over `k` categories.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a, T> {
    /// `rows * k` values.
    pub data: &'a [T],
    /// Number of rows.
    pub rows: usize,
    /// Number of categories.
    pub k: usize,
}

/// How to read and reduce the rows.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// The divergence.
    pub measure: Measure,
    /// What the rows hold.
    pub input: Input,
    /// Rescale rows that do not sum to one instead of rejecting them.
    pub normalize: bool,
    /// Allowed |Σp - 1| (probabilities) or |log Σ e^x| (log-probabilities).
    pub tol: f64,
}

fn check_index(idx: Option<&[i64]>, n_out: usize, rows: usize, name: &str) -> Result<()> {
    match idx {
        None if rows != n_out => Err(invalid!(
            "{name} has {rows} rows but {n_out} outputs were asked for without an index"
        )),
        None => Ok(()),
        Some(ix) => {
            if ix.len() != n_out {
                return Err(invalid!(
                    "{name} index has length {} but there are {n_out} outputs",
                    ix.len()
                ));
            }
            if ix.iter().any(|&i| i < 0 || i as usize >= rows) {
                return Err(invalid!("{name} index out of range (0..{rows})"));
            }
            Ok(())
        }
    }
}

/// One value per output row `r`: the divergence between row `pidx[r]` of `p` and row
/// `qidx[r]` of `q` (row `r` itself where no index is given). Memory: the output plus five
/// rows of `k` f64 per running task.
pub fn divergence_rows<T: Float>(
    p: Batch<'_, T>,
    q: Batch<'_, T>,
    pidx: Option<&[i64]>,
    qidx: Option<&[i64]>,
    n_out: usize,
    spec: Spec,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    if p.k != q.k {
        return Err(invalid!("p has {} categories but q has {}", p.k, q.k));
    }
    if p.k == 0 {
        return Err(invalid!("distributions need at least one category"));
    }
    for (b, name) in [(&p, "p"), (&q, "q")] {
        if b.rows.checked_mul(b.k) != Some(b.data.len()) {
            return Err(invalid!(
                "{name} buffer has {} values, expected {}*{}",
                b.data.len(),
                b.rows,
                b.k
            ));
        }
    }
    check_index(pidx, n_out, p.rows, "p")?;
    check_index(qidx, n_out, q.rows, "q")?;
    if spec.tol.is_nan() || spec.tol < 0.0 {
        return Err(invalid!("tolerance must be non-negative"));
    }
    let k = p.k;
    let per = (65_536 / k).clamp(1, 256);
    let level = simd::level();
    let mut out = vec![0.0f64; n_out];
    threads::install(|| {
        // Row buffers are reused across the chunks a worker takes (allocating them per
        // chunk costs page faults); every row overwrites them, so results do not depend
        // on which worker ran which chunk.
        out.par_chunks_mut(per).enumerate().try_for_each_init(
            || Bufs::new(k),
            |bufs, (c, o)| {
                threads::check(stop)?;
                let ctx = Ctx {
                    p,
                    q,
                    pidx,
                    qidx,
                    spec,
                };
                run_block(level, &ctx, c * per, o, bufs)
            },
        )
    })??;
    Ok(out)
}

struct Bufs {
    a: Vec<f64>,
    b: Vec<f64>,
    ea: Vec<f64>,
    eb: Vec<f64>,
    t: Vec<f64>,
}

impl Bufs {
    fn new(k: usize) -> Bufs {
        Bufs {
            a: vec![0.0; k],
            b: vec![0.0; k],
            ea: vec![0.0; k],
            eb: vec![0.0; k],
            t: vec![0.0; k],
        }
    }
}

struct Ctx<'a, T> {
    p: Batch<'a, T>,
    q: Batch<'a, T>,
    pidx: Option<&'a [i64]>,
    qidx: Option<&'a [i64]>,
    spec: Spec,
}

fn run_block<T: Float>(
    level: Level,
    ctx: &Ctx<'_, T>,
    r0: usize,
    out: &mut [f64],
    bufs: &mut Bufs,
) -> Result<()> {
    struct Task<'a, 'c, T> {
        ctx: &'a Ctx<'c, T>,
        r0: usize,
        out: &'a mut [f64],
        bufs: &'a mut Bufs,
    }
    impl<T: Float> SimdTask for Task<'_, '_, T> {
        type Output = Result<()>;
        #[inline(always)]
        fn run<M: Fma>(self) -> Result<()> {
            block::<T, M>(self.ctx, self.r0, self.out, self.bufs)
        }
    }
    simd::dispatch(level, Task { ctx, r0, out, bufs })
}

#[inline(always)]
fn block<T: Float, M: Fma>(
    ctx: &Ctx<'_, T>,
    r0: usize,
    out: &mut [f64],
    bufs: &mut Bufs,
) -> Result<()> {
    let k = ctx.p.k;
    let Bufs { a, b, ea, eb, t } = bufs;
    let spec = ctx.spec;
    for (i, o) in out.iter_mut().enumerate() {
        let r = r0 + i;
        let pr = ctx.pidx.map_or(r, |ix| ix[r] as usize);
        let qr = ctx.qidx.map_or(r, |ix| ix[r] as usize);
        prepare::<T, M>(&ctx.p.data[pr * k..(pr + 1) * k], a, ea, spec, "p", pr)?;
        prepare::<T, M>(&ctx.q.data[qr * k..(qr + 1) * k], b, eb, spec, "q", qr)?;
        let log = spec.input != Input::Prob;
        *o = row_value::<M>(spec.measure, log, a, b, ea, eb, t);
    }
    Ok(())
}

/// Loads, validates and normalises one row into `dst` (probabilities, or log-probabilities
/// in the log modes, with the probabilities in `scratch`).
#[inline(always)]
pub(super) fn prepare<T: Float, M: Fma>(
    src: &[T],
    dst: &mut [f64],
    scratch: &mut [f64],
    spec: Spec,
    name: &str,
    row: usize,
) -> Result<()> {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f64();
    }
    if spec.input == Input::Prob {
        let mut bad = false;
        for &x in dst.iter() {
            // Plain comparisons (not Range::contains) keep the loop branch-free.
            #[allow(clippy::manual_range_contains)]
            let ok = (x >= 0.0) & (x < f64::INFINITY);
            bad |= !ok;
        }
        if bad {
            let x = dst
                .iter()
                .find(|x| !(**x >= 0.0 && **x < f64::INFINITY))
                .copied()
                .unwrap_or(f64::NAN);
            return Err(if x < 0.0 {
                invalid!(
                    "{name} has a negative entry ({x}) in row {row}; probabilities must be >= 0"
                )
            } else {
                invalid!("{name} contains NaN or inf (row {row}); probabilities must be finite")
            });
        }
        let s = simd::sum(dst);
        if s == 0.0 {
            return Err(invalid!(
                "row {row} of {name} sums to zero; it is not a distribution"
            ));
        }
        if !spec.normalize && (s - 1.0).abs() > spec.tol {
            return Err(invalid!(
                "row {row} of {name} sums to {s}, not 1 (tolerance {}); pass normalize=True to rescale rows",
                spec.tol
            ));
        }
        if s != 1.0 {
            // A subnormal sum has no finite reciprocal, and finite entries may sum to inf:
            // rescale by an exact power of two first (2^600 up, or 2^-600 down).
            let s = if s < TINY || s == f64::INFINITY {
                let f = if s < TINY { LIFT } else { 1.0 / LIFT };
                for x in dst.iter_mut() {
                    *x *= f;
                }
                simd::sum(dst)
            } else {
                s
            };
            let inv = 1.0 / s;
            for x in dst.iter_mut() {
                *x *= inv;
            }
        }
    } else {
        let mut bad = false;
        for &x in dst.iter() {
            bad |= x.is_nan() | (x == f64::INFINITY);
        }
        if bad {
            return Err(invalid!(
                "{name} contains NaN or +inf (row {row}); log-probabilities must be < inf"
            ));
        }
        let mx = simd::max(dst);
        if mx == f64::NEG_INFINITY {
            return Err(invalid!(
                "row {row} of {name} is all -inf: it has no probability mass"
            ));
        }
        for (s, &x) in scratch.iter_mut().zip(dst.iter()) {
            *s = simd::exp::<M>(x - mx);
        }
        let tot = simd::sum(scratch);
        let lse = mx + tot.ln();
        if spec.input == Input::LogProb && !spec.normalize && lse.abs() > spec.tol {
            return Err(invalid!(
                "row {row} of {name} has log-sum-exp {lse}, not 0 (tolerance {}): it is not a log-probability \
                 vector; pass normalize=True or from_logits=True",
                spec.tol
            ));
        }
        if lse != 0.0 {
            for x in dst.iter_mut() {
                *x -= lse;
            }
        }
        // The probabilities come from the same exponentials: no second exp pass.
        let inv = 1.0 / tot;
        for x in scratch.iter_mut() {
            *x *= inv;
        }
    }
    Ok(())
}

#[inline(always)]
fn js_term<M: Fma>(p: f64, q: f64) -> f64 {
    // m = s/2 enters only through 2p/s and 2q/s, so a subnormal s never divides by zero.
    // Terms are linear in (p, q) given the ratios: rescale tiny pairs exactly (2^600) so
    // that 1/s stays finite, and scale the result back.
    let tiny = p + q < TINY;
    let (p, q) = if tiny { (p * LIFT, q * LIFT) } else { (p, q) };
    let s = p + q;
    let m = 0.5 * s;
    let sz = s == 0.0;
    let inv = 1.0 / s;
    let v = kl_term::<M>(p, m, ln_ratio_inv::<M>(2.0 * p, s, inv), p == 0.0, sz)
        + kl_term::<M>(q, m, ln_ratio_inv::<M>(2.0 * q, s, inv), q == 0.0, sz);
    if tiny {
        v * (1.0 / LIFT)
    } else {
        v
    }
}

/// Σ_j KL terms for (x, y): probabilities `px`, `py`; log-probabilities `lx`, `ly` in log mode.
#[inline(always)]
fn kl_sum<M: Fma>(log: bool, px: &[f64], py: &[f64], lx: &[f64], ly: &[f64], t: &mut [f64]) -> f64 {
    if log {
        for j in 0..t.len() {
            let (a, b) = (lx[j], ly[j]);
            t[j] = kl_term::<M>(
                px[j],
                py[j],
                a - b,
                a == f64::NEG_INFINITY,
                b == f64::NEG_INFINITY,
            );
        }
    } else {
        for j in 0..t.len() {
            let (a, b) = (px[j], py[j]);
            t[j] = kl_term::<M>(a, b, ln_ratio::<M>(a, b), a == 0.0, b == 0.0);
        }
        let s = simd::sum(t);
        if s != f64::INFINITY {
            return s;
        }
        // A ratio p/q above the largest double gives an infinite term although q > 0
        // (e.g. p = 0.5, q = 1e-310): form those ratios in log space instead. The usual
        // path pays nothing for this; only a row whose sum came out infinite is rescanned.
        for j in 0..t.len() {
            let (a, b) = (px[j], py[j]);
            if t[j] == f64::INFINITY && b > 0.0 {
                t[j] = kl_term::<M>(a, b, a.ln() - b.ln(), a == 0.0, false);
            }
        }
    }
    simd::sum(t)
}

/// Pearson χ² terms (p - q)²/q, in log space when `log` (so q may underflow).
fn chi2_sum(log: bool, px: &[f64], py: &[f64], lx: &[f64], ly: &[f64]) -> f64 {
    let mut s = 0.0;
    for j in 0..px.len() {
        let (p, q) = (px[j], py[j]);
        let v = if log {
            let (a, b) = (lx[j], ly[j]);
            if a == f64::NEG_INFINITY && b == f64::NEG_INFINITY {
                0.0
            } else if b == f64::NEG_INFINITY {
                f64::INFINITY
            } else {
                let e = (a - b).exp_m1();
                // q e² = exp(ln q + 2 ln|e|), finite even where q underflows.
                if e == 0.0 {
                    0.0
                } else {
                    (b + 2.0 * e.abs().ln()).exp()
                }
            }
        } else if q == 0.0 {
            if p == 0.0 {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            // d (d/q) keeps a subnormal q or d from rounding to 0 in d²; a ratio that
            // overflows is redone in log space (inf only where the value exceeds the range).
            let d = p - q;
            let v = d * (d / q);
            if v.is_finite() {
                v
            } else {
                (2.0 * d.abs().ln() - q.ln()).exp()
            }
        };
        s += v;
    }
    s
}

/// (ln p, ln q) of one element: the stored log-probabilities in log mode.
#[inline(always)]
fn logs(log: bool, px: &[f64], py: &[f64], lx: &[f64], ly: &[f64], j: usize) -> (f64, f64) {
    if log {
        (lx[j], ly[j])
    } else {
        (px[j].ln(), py[j].ln())
    }
}

fn alpha_sum(alpha: f64, log: bool, px: &[f64], py: &[f64], lx: &[f64], ly: &[f64]) -> f64 {
    let beta = 0.5 * (1.0 + alpha);
    let c = 4.0 / (1.0 - alpha * alpha);
    let mut s = 0.0;
    for j in 0..px.len() {
        let (p, q) = (px[j], py[j]);
        let (lp, lq) = logs(log, px, py, lx, ly, j);
        let (pz, qz) = (lp == f64::NEG_INFINITY, lq == f64::NEG_INFINITY);
        let prod = if p == q {
            // Identical entries contribute exactly zero.
            (1.0 - beta) * q + beta * p
        } else if pz && qz {
            0.0
        } else if pz {
            if beta > 0.0 {
                0.0
            } else {
                f64::INFINITY
            }
        } else if qz {
            if beta < 1.0 {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            (beta * lp + (1.0 - beta) * lq).exp()
        };
        let v = if prod == f64::INFINITY {
            f64::INFINITY
        } else {
            c * ((1.0 - beta) * q + beta * p - prod)
        };
        // Each term is >= 0 by the weighted AM-GM inequality; clamp rounding.
        s += if v > 0.0 { v } else { 0.0 };
    }
    s
}

/// ln(p/q) for p, q > 0: the stored log-probabilities in log mode; in probability mode
/// [`ln_ratio`] (exact as p → q), or ln p - ln q where the ratio leaves the double range.
#[inline(always)]
fn log_ratio<M: Fma>(log: bool, p: f64, q: f64, lp: f64, lq: f64) -> f64 {
    if log {
        lp - lq
    } else {
        let d = ln_ratio::<M>(p, q);
        if d.is_finite() {
            d
        } else {
            p.ln() - q.ln()
        }
    }
}

/// (e^x - 1 - x)/x for |x| <= 0.5, by its series Σ_{m>=0} x^(m+1)/(m+2)! (tail < 1e-20).
#[inline(always)]
fn expm1_excess_ratio(x: f64) -> f64 {
    let mut c = 1.0 / 6_402_373_705_728_000.0; // 1/18!
    let mut acc = c;
    for m in (0..16).rev() {
        // c runs over 1/(m+2)! from 1/17! down to 1/2!.
        c *= (m + 3) as f64;
        acc = acc * x + c;
    }
    acc * x
}

/// T(e) = Σ_j [p e^(e·d) - q - (1 + e)(p - q)] / e with d = ln(p/q), for 0 < |e| <= 0.5:
/// the tilted sum behind the Rényi (e = α - 1) and Amari (e = (α - 1)/2) divergences. Each
/// term equals kl_term(p, q) + p·d·(e^(ed) - 1 - ed)/(ed), so T → KL(p‖q) as e → 0 with
/// full relative precision (the direct form loses everything at |e| ~ 1e-16). No term is
/// negative. Returns inf where the exact value is infinite (q = 0 < p with e > 0) and may
/// return inf where an exponential overflows (callers then fall back to log space).
fn tilted_kl<M: Fma>(e: f64, log: bool, px: &[f64], py: &[f64], lx: &[f64], ly: &[f64]) -> f64 {
    let mut s = 0.0;
    for j in 0..px.len() {
        let (p, q) = (px[j], py[j]);
        let (lp, lq) = logs(log, px, py, lx, ly, j);
        let (pz, qz) = (lp == f64::NEG_INFINITY, lq == f64::NEG_INFINITY);
        let v = if pz && qz {
            0.0
        } else if pz {
            q
        } else if qz {
            if e > 0.0 {
                return f64::INFINITY;
            }
            (1.0 + e) * p / -e
        } else {
            let d = log_ratio::<M>(log, p, q, lp, lq);
            let x = e * d;
            if x.abs() <= 0.5 {
                kl_term::<M>(p, q, d, p == 0.0, q == 0.0) + p * d * expm1_excess_ratio(x)
            } else {
                // |d| > 1 here: the direct form has no harmful cancellation.
                ((lp + x).exp() - q - (1.0 + e) * (p - q)) / e
            }
        };
        s += if v > 0.0 { v } else { 0.0 };
    }
    s
}

/// Rényi divergence of order α > 1 in log space, for rows where Σ p^α q^(1-α) overflows:
/// Z + ln Σ_j e^((α-1)(z_j - Z)) / (α - 1) with z_j = ln(p_j/q_j) + ln p_j / (α - 1) and
/// Z = max z_j (terms with p_j = 0 vanish; q_j = 0 < p_j is handled by the caller).
fn renyi_log_space<M: Fma>(
    alpha: f64,
    log: bool,
    px: &[f64],
    py: &[f64],
    lx: &[f64],
    ly: &[f64],
) -> f64 {
    let e = alpha - 1.0;
    let z = |j: usize| -> Option<f64> {
        let (lp, lq) = logs(log, px, py, lx, ly, j);
        if lp == f64::NEG_INFINITY {
            None
        } else {
            Some(log_ratio::<M>(log, px[j], py[j], lp, lq) + lp / e)
        }
    };
    let mut zmax = f64::NEG_INFINITY;
    for j in 0..px.len() {
        if let Some(v) = z(j) {
            zmax = zmax.max(v);
        }
    }
    let mut acc = 0.0;
    for j in 0..px.len() {
        if let Some(v) = z(j) {
            acc += (e * (v - zmax)).exp();
        }
    }
    (zmax + acc.ln() / e).max(0.0)
}

/// Rényi divergence of order α < 1 from ln S, S = Σ p^α q^(1-α) summed by log-sum-exp of
/// m_j = ln p_j + (α - 1) ln(p_j/q_j): for rows where S is far below 1, so that forming
/// S - 1 first would lose the relative precision of S. Disjoint supports give inf.
fn renyi_below_one<M: Fma>(
    alpha: f64,
    log: bool,
    px: &[f64],
    py: &[f64],
    lx: &[f64],
    ly: &[f64],
) -> f64 {
    let e = alpha - 1.0;
    let m = |j: usize| -> Option<f64> {
        let (lp, lq) = logs(log, px, py, lx, ly, j);
        if lp == f64::NEG_INFINITY || lq == f64::NEG_INFINITY {
            None // p^α q^(1-α) = 0 for 0 < α < 1
        } else {
            Some(lp + e * log_ratio::<M>(log, px[j], py[j], lp, lq))
        }
    };
    let mut mx = f64::NEG_INFINITY;
    for j in 0..px.len() {
        if let Some(v) = m(j) {
            mx = mx.max(v);
        }
    }
    if mx == f64::NEG_INFINITY {
        return f64::INFINITY;
    }
    let mut acc = 0.0;
    for j in 0..px.len() {
        if let Some(v) = m(j) {
            acc += (v - mx).exp();
        }
    }
    ((mx + acc.ln()) / e).max(0.0)
}

fn renyi_value<M: Fma>(
    alpha: f64,
    log: bool,
    px: &[f64],
    py: &[f64],
    lx: &[f64],
    ly: &[f64],
) -> f64 {
    let n = px.len();
    if alpha == 0.0 {
        // -ln Σ_{p>0} q = -ln(1 - Σ_{p=0} q), whichever sum is smaller (no cancellation).
        let (mut z, mut w) = (0.0, 0.0);
        for j in 0..n {
            let (lp, _) = logs(log, px, py, lx, ly, j);
            if lp == f64::NEG_INFINITY {
                z += py[j];
            } else {
                w += py[j];
            }
        }
        let r = if w < 0.5 { -w.ln() } else { -(-z).ln_1p() };
        return r.max(0.0);
    }
    if alpha == f64::INFINITY {
        let mut m = f64::NEG_INFINITY;
        for j in 0..n {
            let (lp, lq) = logs(log, px, py, lx, ly, j);
            if lp > f64::NEG_INFINITY {
                let d = if lq == f64::NEG_INFINITY {
                    f64::INFINITY
                } else {
                    lp - lq
                };
                if d > m {
                    m = d;
                }
            }
        }
        return m.max(0.0);
    }
    let e = alpha - 1.0;
    if e.abs() <= 0.5 {
        // ln(1 + eT)/e with T = (S - 1)/e from the tilted sum: the KL limit plus its
        // correction, exact next to α = 1.
        let t = tilted_kl::<M>(e, log, px, py, lx, ly);
        if t == f64::INFINITY {
            let inf_exact = (0..n).any(|j| {
                let (lp, lq) = logs(log, px, py, lx, ly, j);
                lp > f64::NEG_INFINITY && lq == f64::NEG_INFINITY
            });
            return if inf_exact || e < 0.0 {
                f64::INFINITY
            } else {
                renyi_log_space::<M>(alpha, log, px, py, lx, ly)
            };
        }
        let x = (e * t).max(-1.0);
        if x < -0.5 {
            // Σ p^α q^(1-α) is far below 1: ln of the sum itself, not ln(1 + (S - 1)).
            return renyi_below_one::<M>(alpha, log, px, py, lx, ly);
        }
        let r = if x == 0.0 { t } else { x.ln_1p() / x * t };
        return if r > 0.0 { r } else { 0.0 };
    }
    // S - 1 = Σ [p^α q^(1-α) - q - α (p - q)], whose terms share the sign of α - 1.
    let mut inf_exact = false;
    let mut s = 0.0;
    for j in 0..n {
        let (p, q) = (px[j], py[j]);
        let (lp, lq) = logs(log, px, py, lx, ly, j);
        let (pz, qz) = (lp == f64::NEG_INFINITY, lq == f64::NEG_INFINITY);
        let v = if pz && qz {
            0.0
        } else if pz {
            q * (alpha - 1.0)
        } else if qz {
            if alpha > 1.0 {
                inf_exact = true;
                f64::INFINITY
            } else {
                -alpha * p
            }
        } else {
            let d = log_ratio::<M>(log, p, q, lp, lq);
            if d.abs() < 1.0 {
                q * ((alpha * d).exp_m1() - alpha * d.exp_m1())
            } else {
                (lq + alpha * d).exp() - q - alpha * (p - q)
            }
        };
        s += v;
    }
    if inf_exact {
        return f64::INFINITY;
    }
    if !s.is_finite() {
        // Σ p^α q^(1-α) overflowed (only possible for α > 1): redo the row in log space.
        return renyi_log_space::<M>(alpha, log, px, py, lx, ly);
    }
    if s < -0.5 {
        return renyi_below_one::<M>(alpha, log, px, py, lx, ly);
    }
    let r = s.ln_1p() / (alpha - 1.0);
    if r > 0.0 {
        r
    } else {
        0.0
    }
}

#[inline(always)]
fn row_value<M: Fma>(
    measure: Measure,
    log: bool,
    a: &[f64],
    b: &[f64],
    ea: &[f64],
    eb: &[f64],
    t: &mut [f64],
) -> f64 {
    // Probabilities are `a`, `b` in probability mode and their exponentials in log mode.
    let (p, q) = if log { (ea, eb) } else { (a, b) };
    match measure {
        Measure::Kl => kl_sum::<M>(log, p, q, a, b, t),
        Measure::ReverseKl => kl_sum::<M>(log, q, p, b, a, t),
        Measure::Jeffreys => kl_sum::<M>(log, p, q, a, b, t) + kl_sum::<M>(log, q, p, b, a, t),
        Measure::Js => {
            for j in 0..t.len() {
                t[j] = js_term::<M>(p[j], q[j]);
            }
            // Bounded by ln 2; clamp the last-ulp rounding of the sum.
            (0.5 * simd::sum(t)).min(std::f64::consts::LN_2)
        }
        Measure::HellingerSq => {
            for j in 0..t.len() {
                let (x, y) = (p[j], q[j]);
                // √p - √q = (p - q)/(√p + √q): no cancellation when p ≈ q.
                let den = x.sqrt() + y.sqrt();
                let v = (x - y) / den;
                t[j] = if den > 0.0 { v * v } else { 0.0 };
            }
            (0.5 * simd::sum(t)).min(1.0)
        }
        Measure::Tv => {
            for j in 0..t.len() {
                t[j] = (p[j] - q[j]).abs();
            }
            (0.5 * simd::sum(t)).min(1.0)
        }
        Measure::Chi2 => chi2_sum(log, p, q, a, b),
        Measure::NeymanChi2 => chi2_sum(log, q, p, b, a),
        Measure::Triangular => {
            for j in 0..t.len() {
                let (x, y) = (p[j], q[j]);
                let s = x + y;
                let d = x - y;
                // |d| <= s, so d/s never overflows and d (d/s) keeps subnormal entries.
                t[j] = if s > 0.0 { d * (d / s) } else { 0.0 };
            }
            simd::sum(t)
        }
        Measure::Alpha(1.0) => kl_sum::<M>(log, p, q, a, b, t),
        Measure::Alpha(-1.0) => kl_sum::<M>(log, q, p, b, a, t),
        // D_α = 2/(1+α) · Σ [p^β q^(1-β) - q - β(p - q)]/(β - 1), β = (1+α)/2; near
        // α = ±1 (β - 1 small) the tilted sum keeps full precision where the direct form
        // cancels. D_α(p‖q) = D_{-α}(q‖p) covers α in [-2, 0).
        Measure::Alpha(al) if (0.0..=2.0).contains(&al) => {
            2.0 / (1.0 + al) * tilted_kl::<M>(0.5 * (al - 1.0), log, p, q, a, b)
        }
        Measure::Alpha(al) if (-2.0..0.0).contains(&al) => {
            2.0 / (1.0 - al) * tilted_kl::<M>(0.5 * (-al - 1.0), log, q, p, b, a)
        }
        Measure::Alpha(al) => alpha_sum(al, log, p, q, a, b),
        Measure::Renyi(1.0) => kl_sum::<M>(log, p, q, a, b, t),
        Measure::Renyi(al) => renyi_value::<M>(al, log, p, q, a, b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::{simd_levels, Lcg};

    fn spec(measure: Measure, input: Input) -> Spec {
        Spec {
            measure,
            input,
            normalize: false,
            tol: 1e-9,
        }
    }

    fn one(p: &[f64], q: &[f64], s: Spec) -> Result<f64> {
        let stop = AtomicBool::new(false);
        let k = p.len();
        divergence_rows(
            Batch {
                data: p,
                rows: 1,
                k,
            },
            Batch {
                data: q,
                rows: 1,
                k,
            },
            None,
            None,
            1,
            s,
            &stop,
        )
        .map(|v| v[0])
    }

    fn naive(m: Measure, p: &[f64], q: &[f64]) -> f64 {
        let kl = |p: &[f64], q: &[f64]| -> f64 {
            p.iter()
                .zip(q)
                .map(|(&a, &b)| if a == 0.0 { 0.0 } else { a * (a / b).ln() })
                .sum()
        };
        match m {
            Measure::Kl => kl(p, q),
            Measure::ReverseKl => kl(q, p),
            Measure::Jeffreys => kl(p, q) + kl(q, p),
            Measure::Js => {
                let mm: Vec<f64> = p.iter().zip(q).map(|(a, b)| 0.5 * (a + b)).collect();
                0.5 * kl(p, &mm) + 0.5 * kl(q, &mm)
            }
            Measure::HellingerSq => {
                0.5 * p
                    .iter()
                    .zip(q)
                    .map(|(a, b)| (a.sqrt() - b.sqrt()).powi(2))
                    .sum::<f64>()
            }
            Measure::Tv => 0.5 * p.iter().zip(q).map(|(a, b)| (a - b).abs()).sum::<f64>(),
            Measure::Chi2 => p.iter().zip(q).map(|(a, b)| (a - b).powi(2) / b).sum(),
            Measure::NeymanChi2 => p.iter().zip(q).map(|(a, b)| (a - b).powi(2) / a).sum(),
            Measure::Triangular => p
                .iter()
                .zip(q)
                .map(|(a, b)| (a - b).powi(2) / (a + b))
                .sum(),
            Measure::Alpha(al) => {
                let s: f64 = p
                    .iter()
                    .zip(q)
                    .map(|(a, b)| a.powf(0.5 * (1.0 + al)) * b.powf(0.5 * (1.0 - al)))
                    .sum();
                4.0 / (1.0 - al * al) * (1.0 - s)
            }
            Measure::Renyi(al) => {
                let s: f64 = p
                    .iter()
                    .zip(q)
                    .map(|(a, b)| a.powf(al) * b.powf(1.0 - al))
                    .sum();
                s.ln() / (al - 1.0)
            }
        }
    }

    #[test]
    fn measures_match_naive_in_all_input_modes() {
        let p = [0.1, 0.2, 0.3, 0.4];
        let q = [0.25, 0.25, 0.35, 0.15];
        let lp: Vec<f64> = p.iter().map(|x: &f64| x.ln()).collect();
        let lq: Vec<f64> = q.iter().map(|x: &f64| x.ln()).collect();
        let zp: Vec<f64> = lp.iter().map(|x| x + 3.0).collect();
        let zq: Vec<f64> = lq.iter().map(|x| x - 7.0).collect();
        for m in [
            Measure::Kl,
            Measure::ReverseKl,
            Measure::Jeffreys,
            Measure::Js,
            Measure::HellingerSq,
            Measure::Tv,
            Measure::Chi2,
            Measure::NeymanChi2,
            Measure::Triangular,
            Measure::Alpha(0.3),
            Measure::Alpha(-2.5),
            Measure::Renyi(0.5),
            Measure::Renyi(2.0),
        ] {
            let want = naive(m, &p, &q);
            let a = one(&p, &q, spec(m, Input::Prob)).unwrap();
            let b = one(&lp, &lq, spec(m, Input::LogProb)).unwrap();
            let c = one(&zp, &zq, spec(m, Input::Logits)).unwrap();
            for got in [a, b, c] {
                assert!(
                    (got - want).abs() < 1e-13 * (1.0 + want.abs()),
                    "{m:?}: {got} vs {want}"
                );
            }
            assert_eq!(one(&p, &p, spec(m, Input::Prob)).unwrap(), 0.0, "{m:?}");
        }
    }

    #[test]
    fn zeros_and_edge_cases() {
        let s = |m| spec(m, Input::Prob);
        assert_eq!(
            one(&[0.5, 0.5], &[1.0, 0.0], s(Measure::Kl)).unwrap(),
            f64::INFINITY
        );
        assert!((one(&[1.0, 0.0], &[0.5, 0.5], s(Measure::Kl)).unwrap() - 2f64.ln()).abs() < 1e-15);
        let js = one(&[0.0, 1.0], &[5e-324, 1.0], s(Measure::Js)).unwrap();
        assert!(js.is_finite() && js >= 0.0);
        assert!((one(&[1.0, 0.0], &[0.0, 1.0], s(Measure::Js)).unwrap() - 2f64.ln()).abs() < 1e-15);
        let mut n0 = s(Measure::Kl);
        n0.normalize = true;
        assert_eq!(one(&[5e-324, 1.0], &[5e-324, 1.0], n0).unwrap(), 0.0);
        let v = one(&[1e-310, 1.0], &[5e-324, 1.0], n0).unwrap();
        assert!(v.is_finite() && v > 0.0 && v < 1e-300);
        assert!(one(&[-0.5, 1.5], &[0.5, 0.5], s(Measure::Kl)).is_err());
        assert!(one(&[0.5, 0.6], &[0.5, 0.5], s(Measure::Kl)).is_err());
        let mut n = s(Measure::Kl);
        n.normalize = true;
        assert!(
            (one(&[1.0, 3.0], &[2.0, 2.0], n).unwrap()
                - naive(Measure::Kl, &[0.25, 0.75], &[0.5, 0.5]))
            .abs()
                < 1e-15
        );
        assert!(one(&[0.0, 0.0], &[0.5, 0.5], n).is_err());
        assert!(one(&[f64::NAN, 1.0], &[0.5, 0.5], n).is_err());
        // Rényi limits: order 0 and infinity.
        let (p, q) = ([0.0, 0.3, 0.7], [0.2, 0.4, 0.4]);
        assert!((one(&p, &q, s(Measure::Renyi(0.0))).unwrap() + 0.8f64.ln()).abs() < 1e-15);
        assert!(
            (one(&p, &q, s(Measure::Renyi(f64::INFINITY))).unwrap() - 1.75f64.ln()).abs() < 1e-15
        );
        // Log mode keeps q's tiny mass that would underflow as a probability.
        let lp = [0.0f64, -700.0];
        let lq = [-1e-300f64, -900.0];
        let v = one(
            &lp,
            &lq,
            Spec {
                normalize: true,
                ..spec(Measure::Kl, Input::LogProb)
            },
        )
        .unwrap();
        assert!(v.is_finite());
    }

    #[test]
    fn ratios_beyond_the_double_range_and_renyi_orders() {
        let s = |m| spec(m, Input::Prob);
        let (p, q) = ([0.5, 0.5], [1e-310, 1.0 - 1e-310]);
        let want = 0.5 * (0.5f64.ln() - 1e-310f64.ln()) + 0.5 * 0.5f64.ln();
        for m in [Measure::Kl, Measure::Renyi(1.0), Measure::Alpha(1.0)] {
            let got = one(&p, &q, s(m)).unwrap();
            assert!((got - want).abs() < 1e-14 * want, "{m:?}: {got} vs {want}");
        }
        let got = one(
            &[0.5, 0.5],
            &[1e-100, 1.0 - 1e-100],
            s(Measure::Renyi(10.0)),
        )
        .unwrap();
        assert!((got - 229.488_345_765_449_08).abs() < 1e-12, "{got}");
        // Next to order 1: KL + (α - 1) Var_p[ln p/q] / 2.
        let (p, q) = ([0.2, 0.8], [0.5, 0.5]);
        let d = [0.4f64.ln(), 1.6f64.ln()];
        let kl = 0.2 * d[0] + 0.8 * d[1];
        let var = 0.2 * d[0] * d[0] + 0.8 * d[1] * d[1] - kl * kl;
        let e = f64::EPSILON;
        let got = one(&p, &q, s(Measure::Renyi(1.0 + e))).unwrap();
        assert!(
            (got - (kl + 0.5 * e * var)).abs() < 1e-15 * kl,
            "{got} vs {kl}"
        );
    }

    #[test]
    fn every_simd_level_matches_scalar_including_tails() {
        let measures = [
            Measure::Kl,
            Measure::Js,
            Measure::HellingerSq,
            Measure::Tv,
            Measure::Chi2,
            Measure::Alpha(0.4),
            Measure::Renyi(2.0),
        ];
        for k in [1usize, 7, 8, 9, 33, 1001] {
            let mut g = Lcg::new(99 + k as u64);
            let rows = 5;
            let p: Vec<f64> = (0..rows * k).map(|_| g.unit() * 3.0 - 1.0).collect();
            let q: Vec<f64> = (0..rows * k).map(|_| g.unit() * 3.0 - 1.5).collect();
            for input in [Input::Prob, Input::Logits] {
                let (pa, qa): (Vec<f64>, Vec<f64>) = if input == Input::Prob {
                    (
                        p.iter().map(|x| x.abs()).collect(),
                        q.iter().map(|x| x.abs()).collect(),
                    )
                } else {
                    (p.clone(), q.clone())
                };
                for m in measures {
                    let spec = Spec {
                        measure: m,
                        input,
                        normalize: true,
                        tol: 0.0,
                    };
                    let ctx = Ctx {
                        p: Batch { data: &pa, rows, k },
                        q: Batch { data: &qa, rows, k },
                        pidx: None,
                        qidx: None,
                        spec,
                    };
                    let mut per_level = Vec::new();
                    for lvl in simd_levels() {
                        let mut out = vec![0.0; rows];
                        run_block(lvl, &ctx, 0, &mut out, &mut Bufs::new(k)).unwrap();
                        per_level.push(out);
                    }
                    for got in &per_level[1..] {
                        for (a, b) in got.iter().zip(&per_level[0]) {
                            assert!(
                                (a - b).abs() <= 1e-13 * b.abs() + 1e-300,
                                "{m:?} k={k}: {a} vs {b}"
                            );
                        }
                    }
                    if per_level.len() == 3 {
                        assert_eq!(
                            per_level[1], per_level[2],
                            "{m:?} k={k}: AVX2 and AVX-512 differ"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn nearly_identical_rows_are_exact_and_threads_agree() {
        let (n, k) = (300, 37);
        let mut p = vec![0.0; n * k];
        let mut q = vec![0.0; n * k];
        let mut g = Lcg::new(12345);
        for i in 0..n * k {
            p[i] = 0.01 + g.unit();
            q[i] = p[i] * (1.0 + 1e-12 * ((i % 7) as f64 - 3.0));
        }
        let stop = AtomicBool::new(false);
        let run = |m| {
            divergence_rows(
                Batch {
                    data: &p,
                    rows: n,
                    k,
                },
                Batch {
                    data: &q,
                    rows: n,
                    k,
                },
                None,
                None,
                n,
                Spec {
                    measure: m,
                    input: Input::Prob,
                    normalize: true,
                    tol: 0.0,
                },
                &stop,
            )
            .unwrap()
        };
        for m in [Measure::Js, Measure::Kl] {
            let a = run(m);
            assert!(
                a.iter().all(|v| v.is_finite() && *v >= 0.0 && *v < 1e-22),
                "{m:?}"
            );
            threads::set_num_threads(1).unwrap();
            let b = run(m);
            threads::set_num_threads(2).unwrap();
            assert_eq!(a, b);
        }
        let idx = vec![0i64; 5];
        let one_row = divergence_rows(
            Batch {
                data: &p[..k],
                rows: 1,
                k,
            },
            Batch {
                data: &q[..5 * k],
                rows: 5,
                k,
            },
            Some(&idx),
            None,
            5,
            Spec {
                measure: Measure::Kl,
                input: Input::Prob,
                normalize: true,
                tol: 0.0,
            },
            &stop,
        )
        .unwrap();
        assert_eq!(one_row[0], run(Measure::Kl)[0]);
    }
}
