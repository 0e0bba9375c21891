//! Exact sampling of projection DPPs with kernel K = U Uᵀ, U (n×m) with orthonormal
//! columns: the chain rule (all n residuals, O(n m²) per sample, updated by blocks of
//! directions so that the work is a compute-bound product) and a rejection sampler that
//! proposes from the leverage scores (O(m³ log m) after O(n m)).

use std::sync::atomic::AtomicBool;

use super::panels::{row_norms_at, Panels, PANEL};
use super::rng::Rng;
use crate::core::error::{checked_size, invalid, try_vec, Result};
use crate::core::simd::{self, finish_lanes, Fma, LANES};
use crate::core::threads;

/// Which exact projection sampler to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Chain rule over all n residuals, O(n m²) per sample.
    Chain,
    /// Proposals from the leverage scores, accepted by the residual; cost independent of n.
    Rejection,
    /// Rejection when n is large against m, else the chain rule.
    Auto,
}

impl Method {
    /// Parses "chain", "rejection" or "auto".
    pub fn parse(s: &str) -> Result<Method> {
        match s {
            "chain" => Ok(Method::Chain),
            "rejection" => Ok(Method::Rejection),
            "auto" => Ok(Method::Auto),
            _ => Err(invalid!(
                "method must be 'auto', 'chain' or 'rejection'; got {s:?}"
            )),
        }
    }

    /// The concrete method for a kernel of n items and rank m.
    pub fn resolve(self, n: usize, m: usize) -> Method {
        match self {
            Method::Auto => {
                // Chain costs ~n m² multiply-adds, rejection ~m³ (H_m - 1) plus random
                // access; measured break-even is near n = m ln(m + 1) (benches/bench_dpp.py).
                let mf = m as f64;
                if (n as f64) > mf * (mf + 1.0).ln().max(1.0) {
                    Method::Rejection
                } else {
                    Method::Chain
                }
            }
            other => other,
        }
    }
}

/// Residual norm below which a direction counts as already spanned, relative to the
/// norm of the row (squared: 1e-20 of the leverage score).
const TINY_SQ: f64 = 1e-20;

/// Directions the chain rule gathers before it brings all residuals up to date: one full
/// panel of the kernel.
const MAX_PENDING: usize = PANEL;

/// The chain rule also brings all residuals up to date once their total exceeds the
/// current residual mass by this factor (the expected number of proposals per step).
const MAX_RATIO: f64 = 8.0;

/// A residual that disagrees with its exact value (Gram–Schmidt on the row) by more than
/// this fraction of the leverage score triggers a recomputation of all residuals.
const DRIFT: f64 = 1e-9;

/// Rows per task when the residuals are brought up to date.
const REFRESH_ROWS: usize = 256;

#[inline]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let ca = a.chunks_exact(4);
    let cb = b.chunks_exact(4);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    (acc[0] + acc[2]) + (acc[1] + acc[3]) + tail
}

/// Squared row norms (leverage scores) of U.
/// Rows are split in fixed blocks over divest's pool (each row on its own: the result
/// does not depend on the thread count).
pub fn leverage(u: &[f64], n: usize, m: usize) -> Vec<f64> {
    use rayon::prelude::*;
    let mut out = vec![0.0; n];
    if m == 0 {
        return out;
    }
    let level = simd::level();
    let block = |(b, o): (usize, &mut [f64])| {
        let k0 = b * PROBE_ROWS;
        row_norms_at(level, &u[k0 * m..(k0 + o.len()) * m], m, o);
    };
    if n * m < 1 << 17 {
        out.chunks_mut(PROBE_ROWS).enumerate().for_each(block);
    } else if threads::install(|| out.par_chunks_mut(PROBE_ROWS).enumerate().for_each(block))
        .is_err()
    {
        // No pool (it could not start threads): the same blocks, serially.
        out.chunks_mut(PROBE_ROWS).enumerate().for_each(block);
    }
    out
}

/// Rows per task of the orthonormality probes.
const PROBE_ROWS: usize = 1024;
/// Number of probe vectors.
const PROBES: usize = 4;

/// The four dot products U_k · x_t, sharing each load of the row.
#[inline(always)]
fn probe_dots<M: Fma>(row: &[f64], xs: &[&[f64]; PROBES]) -> [f64; PROBES] {
    let full = row.len() / LANES * LANES;
    let mut acc = [[0.0f64; LANES]; PROBES];
    for c in (0..full).step_by(LANES) {
        let r8 = &row[c..c + LANES];
        for (a, xt) in acc.iter_mut().zip(xs) {
            let x8 = &xt[c..c + LANES];
            for j in 0..LANES {
                a[j] = M::ma(r8[j], x8[j], a[j]);
            }
        }
    }
    let mut y = [0.0f64; PROBES];
    for ((yt, a), xt) in y.iter_mut().zip(&acc).zip(xs) {
        let mut tail = 0.0;
        for (r, xv) in row[full..].iter().zip(&xt[full..]) {
            tail = M::ma(*r, *xv, tail);
        }
        *yt = finish_lanes(a) + tail;
    }
    y
}

/// z_t += (U_k · x_t) U_k over the rows of a block, for the probes x_t (rows of `x`), two
/// rows per update of z.
#[inline(always)]
fn probe_body<M: Fma>(rows: &[f64], m: usize, x: &[f64], z: &mut [f64]) {
    let xs: [&[f64]; PROBES] = std::array::from_fn(|t| &x[t * m..(t + 1) * m]);
    let pairs = rows.chunks_exact(2 * m);
    let last = pairs.remainder();
    for pair in pairs {
        let (a, b) = pair.split_at(m);
        let (ya, yb) = (probe_dots::<M>(a, &xs), probe_dots::<M>(b, &xs));
        for ((zt, &s), &t) in z.chunks_exact_mut(m).zip(&ya).zip(&yb) {
            for ((zz, &ra), &rb) in zt.iter_mut().zip(a).zip(b) {
                *zz = M::ma(t, rb, M::ma(s, ra, *zz));
            }
        }
    }
    if !last.is_empty() {
        let ya = probe_dots::<M>(last, &xs);
        for (zt, &s) in z.chunks_exact_mut(m).zip(&ya) {
            for (zz, &ra) in zt.iter_mut().zip(last) {
                *zz = M::ma(s, ra, *zz);
            }
        }
    }
}

simd::simd_fn!(fn probe_at => probe_body(rows: &[f64], m: usize, x: &[f64], z: &mut [f64]) -> ());

/// Largest entry of |UᵀU - I|, exactly (a Gram matrix) when n m² ≤ 2·10⁷, else estimated
/// from four fixed Gaussian-like probes x as max |UᵀU x - x| / max |x| (one parallel pass
/// over U, 8 n m multiply-adds, blocks combined in a fixed order).
pub fn orthonormality_error(u: &[f64], n: usize, m: usize) -> Result<f64> {
    orthonormality_error_until(u, n, m, &AtomicBool::new(false))
}

/// [`orthonormality_error`] that returns `Err(Cancelled)` once `stop` is raised (polled
/// between blocks of rows).
pub fn orthonormality_error_until(u: &[f64], n: usize, m: usize, stop: &AtomicBool) -> Result<f64> {
    Ok(check_pass(u, n, m, false, stop)?.1)
}

/// Leverage scores and [`orthonormality_error`] together: with the probes, the row norms
/// are taken in the same pass over U (one read of U instead of two).
pub fn leverage_checked(
    u: &[f64],
    n: usize,
    m: usize,
    stop: &AtomicBool,
) -> Result<(Vec<f64>, f64)> {
    let (lev, err) = check_pass(u, n, m, true, stop)?;
    Ok((lev.unwrap_or_else(|| leverage(u, n, m)), err))
}

/// The orthonormality error, and the leverage scores when `norms` and the probes run.
fn check_pass(
    u: &[f64],
    n: usize,
    m: usize,
    norms: bool,
    stop: &AtomicBool,
) -> Result<(Option<Vec<f64>>, f64)> {
    if u.len() != n * m {
        return Err(invalid!("U has {} values, expected {n}*{m}", u.len()));
    }
    if m == 0 {
        return Ok((None, 0.0));
    }
    if (n as f64) * (m as f64) * (m as f64) <= 2e7 {
        let mut g = vec![0.0f64; m * m];
        // SAFETY: Uᵀ is U read with rs 1, cs m (m×n); U is n×m (rs m, cs 1); G is m×m
        // row-major and a separate allocation.
        unsafe {
            matrixmultiply::dgemm(
                m,
                n,
                m,
                1.0,
                u.as_ptr(),
                1,
                m as isize,
                u.as_ptr(),
                m as isize,
                1,
                0.0,
                g.as_mut_ptr(),
                m as isize,
                1,
            );
        }
        let mut err = 0.0f64;
        for i in 0..m {
            for j in 0..m {
                let e = g[i * m + j] - if i == j { 1.0 } else { 0.0 };
                err = err.max(if e.is_nan() { f64::INFINITY } else { e.abs() });
            }
        }
        return Ok((None, err));
    }
    let mut rng = Rng::stream(0x5EED, 0);
    // Sums of uniforms are close enough to Gaussian for a probe and never tiny.
    let x: Vec<f64> = (0..PROBES * m)
        .map(|_| (0..4).map(|_| rng.uniform() - 0.5).sum::<f64>())
        .collect();
    let level = simd::level();
    let blocks = n.div_ceil(PROBE_ROWS);
    let partial: Vec<(Vec<f64>, Vec<f64>)> = threads::install(|| {
        use rayon::prelude::*;
        (0..blocks)
            .into_par_iter()
            .map(|b| {
                threads::check(stop)?;
                let rows = &u[b * PROBE_ROWS * m..((b + 1) * PROBE_ROWS).min(n) * m];
                let mut z = vec![0.0f64; PROBES * m];
                probe_at(level, rows, m, &x, &mut z);
                // The block's rows are still in cache: their norms cost no second read.
                let mut nb = vec![0.0f64; if norms { rows.len() / m } else { 0 }];
                if norms {
                    row_norms_at(level, rows, m, &mut nb);
                }
                Ok((z, nb))
            })
            .collect::<Result<Vec<_>>>()
    })??;
    let mut z = vec![0.0f64; PROBES * m];
    let mut lev = Vec::with_capacity(if norms { n } else { 0 });
    for (p, nb) in &partial {
        for (a, b) in z.iter_mut().zip(p) {
            *a += b;
        }
        lev.extend_from_slice(nb);
    }
    let mut err = 0.0f64;
    for t in 0..PROBES {
        let xt = &x[t * m..(t + 1) * m];
        let xmax = xt.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        for (zj, xj) in z[t * m..(t + 1) * m].iter().zip(xt) {
            let e = (zj - xj).abs() / xmax;
            err = err.max(if e.is_nan() { f64::INFINITY } else { e });
        }
    }
    Ok((norms.then_some(lev), err))
}

fn rank_error(m: usize) -> crate::core::Error {
    invalid!(
        "U has numerical rank below its {m} columns (the residual mass vanished before {m} \
         items were drawn); U must have orthonormal columns"
    )
}

/// Brings the residuals `d` up to date: d_k -= Σ_j (q_j · u_k)² over the directions in
/// `dirs` (from the leverage scores instead when `from_lev`), and 0 for `taken` items.
/// Fixed blocks of rows, each row computed the same way whatever the thread count.
#[allow(clippy::too_many_arguments)]
fn refresh(
    u: &[f64],
    m: usize,
    lev: &[f64],
    d: &mut [f64],
    taken: &[bool],
    dirs: &Panels,
    from_lev: bool,
    parallel: bool,
    stop: &AtomicBool,
) -> Result<()> {
    use rayon::prelude::*;
    let level = simd::level();
    let block = |(b, db): (usize, &mut [f64])| -> Result<()> {
        threads::check(stop)?;
        let k0 = b * REFRESH_ROWS;
        let mut s = [0.0f64; REFRESH_ROWS];
        let s = &mut s[..db.len()];
        dirs.sq_rows(level, &u[k0 * m..(k0 + db.len()) * m], s);
        for (j, (dk, sk)) in db.iter_mut().zip(s.iter()).enumerate() {
            let base = if from_lev { lev[k0 + j] } else { *dk };
            *dk = if taken[k0 + j] {
                0.0
            } else {
                (base - sk).max(0.0)
            };
        }
        Ok(())
    };
    let work = d.len() * m * dirs.len().max(1);
    if parallel && work >= 1 << 16 && rayon::current_thread_index().is_some() {
        d.par_chunks_mut(REFRESH_ROWS)
            .enumerate()
            .try_for_each(block)
    } else {
        d.chunks_mut(REFRESH_ROWS).enumerate().try_for_each(block)
    }
}

/// When the chain rule brings all residuals up to date.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    /// At the latest after this many new directions.
    max_pending: usize,
    /// Or once the stale residual mass exceeds the current one by this factor.
    max_ratio: f64,
}

const SCHEDULE: Schedule = Schedule {
    max_pending: MAX_PENDING,
    max_ratio: MAX_RATIO,
};

/// One sample by the chain rule; writes the m items in draw order to `out`. `lev` are U's
/// leverage scores; `parallel` splits the residual updates over divest's pool (the
/// caller is on it).
///
/// Step i draws item k with probability d_k / Σ d, d_k being the squared residual of row
/// k off the span of the rows drawn so far. The residuals of all n items are brought up
/// to date by blocks of up to 32 directions (a register-blocked product instead of one
/// pass over U per step); in between, a step draws k from the residuals d' of the last
/// update and accepts it with probability d_k / d'_k ≤ 1 (d_k computed for that row
/// alone), which picks k with probability exactly d_k / Σ d. Each new direction is
/// Gram–Schmidt-orthogonalised in R^m, twice when the first pass cancels, and its exact
/// residual checks the running one.
#[allow(clippy::too_many_arguments)]
pub(crate) fn chain_one(
    u: &[f64],
    n: usize,
    m: usize,
    lev: &[f64],
    rng: &mut Rng,
    out: &mut [usize],
    parallel: bool,
    stop: &AtomicBool,
) -> Result<()> {
    chain_scheduled(u, n, m, lev, rng, out, parallel, SCHEDULE, stop)
}

#[allow(clippy::too_many_arguments)]
fn chain_scheduled(
    u: &[f64],
    n: usize,
    m: usize,
    lev: &[f64],
    rng: &mut Rng,
    out: &mut [usize],
    parallel: bool,
    schedule: Schedule,
    stop: &AtomicBool,
) -> Result<()> {
    let level = simd::level();
    let mut d = lev.to_vec();
    let mut cdf = cumsum(&d);
    let total0 = cdf.last().copied().unwrap_or(0.0);
    if !(total0 > 0.0 && total0.is_finite()) {
        return Err(rank_error(m));
    }
    let mut mass = total0;
    let mut basis = Panels::new(m, m);
    // Room for every direction: the last steps may skip their update (see below).
    let mut pending = Panels::new(m, m);
    let mut taken = vec![false; n];
    let mut v = vec![0.0f64; m];
    let mut work = vec![0.0f64; m.div_ceil(PANEL) * PANEL];
    let (mut resync, mut force, mut stuck) = (false, false, 0);
    let mut i = 0;
    'steps: while i < m {
        threads::check(stop)?;
        // Each direction removes ≈ 1 from the residual mass of an orthonormal U.
        let left = mass - pending.len() as f64;
        let ratio = if left > 0.0 {
            mass / left
        } else {
            f64::INFINITY
        };
        let full = pending.len() >= schedule.max_pending;
        // The last few steps thin stale residuals instead of paying for an update of all
        // n: expected proposals Σ_s mass / (left − s) over the remaining steps, each
        // costing O(pending·m), against an update costing O(n·pending·m).
        let tail = (0..m - i)
            .map(|s| left - s as f64)
            .try_fold(0.0, |acc, l| (l > 0.5).then(|| acc + mass / l));
        let cheap_tail = matches!(tail, Some(t) if t < n as f64 / 4.0);
        if resync || force || ((full || ratio > schedule.max_ratio) && !cheap_tail) {
            if force {
                stuck += 1;
                if stuck > 2 {
                    return Err(rank_error(m));
                }
            }
            let dirs = if resync { &basis } else { &pending };
            refresh(u, m, lev, &mut d, &taken, dirs, resync, parallel, stop)?;
            pending.clear();
            cdf = cumsum(&d);
            mass = cdf.last().copied().unwrap_or(0.0);
            if !(mass > 1e-9 * total0 && mass.is_finite()) {
                return Err(rank_error(m));
            }
            (resync, force) = (false, false);
        }
        let p = pending.len();
        let left = mass - p as f64;
        let ratio = if left > 0.0 {
            mass / left
        } else {
            f64::INFINITY
        };
        // Far more proposals than expected: the stale mass is mostly rounding noise or
        // items found to lie in the span; update everything and retry.
        let cap = 64 + 16 * ratio.min(1e6).ceil() as usize;
        for t in 0..cap {
            if t % 1024 == 1023 {
                threads::check(stop)?;
            }
            let k = draw_cdf(&cdf, rng);
            let dk = d[k];
            if taken[k] || dk <= 0.0 {
                continue;
            }
            let row = &u[k * m..(k + 1) * m];
            let now = if p == 0 {
                dk
            } else {
                let mut s = [0.0f64];
                pending.sq_rows(level, row, &mut s);
                let now = (dk - s[0]).max(0.0);
                if rng.uniform() * dk >= now {
                    continue;
                }
                now
            };
            v.copy_from_slice(row);
            let r = basis.orthogonalise(level, &mut v, &mut work);
            if !(r > TINY_SQ * lev[k] && r > 1e-300) {
                taken[k] = true; // its residual was rounding noise: it lies in the span
                continue;
            }
            if (now - r).abs() > DRIFT * lev[k] {
                resync = true;
            }
            let inv = 1.0 / r.sqrt();
            v.iter_mut().for_each(|x| *x *= inv);
            basis.push(&v);
            pending.push(&v);
            out[i] = k;
            taken[k] = true;
            i += 1;
            stuck = 0;
            continue 'steps;
        }
        force = true;
    }
    Ok(())
}

/// Cumulative sums of `w` (for inverse-CDF draws).
pub(crate) fn cumsum(w: &[f64]) -> Vec<f64> {
    let mut acc = 0.0;
    w.iter()
        .map(|x| {
            acc += x;
            acc
        })
        .collect()
}

/// An index drawn from the cumulative sums `cdf` (binary search).
#[inline]
pub(crate) fn draw_cdf(cdf: &[f64], rng: &mut Rng) -> usize {
    let total = cdf[cdf.len() - 1];
    let t = rng.uniform() * total;
    let i = cdf.partition_point(|&c| c <= t);
    i.min(cdf.len() - 1)
}

/// Rejection sampler for one sample; writes the m items in draw order to `out`.
pub(crate) fn rejection_one(
    u: &[f64],
    m: usize,
    lev: &[f64],
    cdf: &[f64],
    rng: &mut Rng,
    out: &mut [usize],
    stop: &AtomicBool,
) -> Result<()> {
    let level = simd::level();
    let mut basis = Panels::new(m, m);
    let mut v = vec![0.0f64; m];
    let mut work = vec![0.0f64; m.div_ceil(PANEL) * PANEL];
    let mut tries: u64 = 0;
    // Expected proposals are m·H_m; this cap is only reached when U is not orthonormal.
    let cap = 200 * (m as u64 + 1) * (m as u64 + 10);
    while basis.len() < m {
        tries += 1;
        // Every proposal costs at least O(m): an uncontended relaxed load is free beside it,
        // and a single long sample (large m) still stops at once.
        threads::check(stop)?;
        if tries > cap {
            return Err(rank_error(m));
        }
        let i = draw_cdf(cdf, rng);
        let li = lev[i];
        if li.is_nan() || li <= 0.0 {
            continue;
        }
        let row = &u[i * m..(i + 1) * m];
        // Accept with probability residual / leverage (li - captured): accepted draws are
        // ∝ the residual. The captured mass only grows panel by panel, so a draw is
        // rejected as soon as a partial sum reaches li - t.
        let t = rng.uniform() * li;
        if basis.sq_row_below(level, row, li - t).is_some() {
            let j = basis.len();
            if out[..j].contains(&i) {
                continue;
            }
            v.copy_from_slice(row);
            let r = basis.orthogonalise(level, &mut v, &mut work);
            if !(r > TINY_SQ * li && r > 1e-300) {
                continue; // its residual was rounding noise: it lies in the span
            }
            let inv = 1.0 / r.sqrt();
            v.iter_mut().for_each(|x| *x *= inv);
            basis.push(&v);
            out[j] = i;
        }
    }
    Ok(())
}

/// Draws `n_samples` samples of the projection DPP with kernel U Uᵀ (U n×m row-major,
/// orthonormal columns). Returns n_samples×m indices, each sample sorted. Sample `s` of
/// the call is sample `first + s` of the seed: it draws from the stream (seed, first + s)
/// (indices modulo 2^64), so a range of samples can be drawn by any task, alone.
/// Memory: the output, U's leverage scores, and per running sample O(n + m²) state
/// (for the chain rule, residuals, their cumulative sums and flags for the n items).
#[allow(clippy::too_many_arguments)]
pub fn sample_projection(
    u: &[f64],
    n: usize,
    m: usize,
    n_samples: usize,
    seed: u64,
    first: u64,
    method: Method,
    stop: &AtomicBool,
) -> Result<Vec<usize>> {
    check_shape(u, n, m)?;
    sample_with(
        u,
        n,
        m,
        leverage(u, n, m),
        n_samples,
        seed,
        first,
        method,
        stop,
    )
}

/// [`sample_projection`] after checking that U has orthonormal columns, the check sharing
/// its pass over U with the leverage scores. Returns no samples (and the error) when
/// [`orthonormality_error`] exceeds `tol`.
#[allow(clippy::too_many_arguments)]
pub fn sample_projection_checked(
    u: &[f64],
    n: usize,
    m: usize,
    n_samples: usize,
    seed: u64,
    first: u64,
    method: Method,
    tol: f64,
    stop: &AtomicBool,
) -> Result<(Vec<usize>, f64)> {
    check_shape(u, n, m)?;
    let (lev, err) = leverage_checked(u, n, m, stop)?;
    // NaN errors (non-finite U) fail the check too.
    if err.is_nan() || err > tol {
        return Ok((Vec::new(), err));
    }
    Ok((
        sample_with(u, n, m, lev, n_samples, seed, first, method, stop)?,
        err,
    ))
}

fn check_shape(u: &[f64], n: usize, m: usize) -> Result<()> {
    if u.len() != n * m {
        return Err(invalid!("U has {} values, expected {n}*{m}", u.len()));
    }
    if m == 0 || m > n {
        return Err(invalid!(
            "U must have between 1 and n = {n} columns; got {m}"
        ));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn sample_with(
    u: &[f64],
    n: usize,
    m: usize,
    lev: Vec<f64>,
    n_samples: usize,
    seed: u64,
    first: u64,
    method: Method,
    stop: &AtomicBool,
) -> Result<Vec<usize>> {
    let mut out = try_vec(
        checked_size(n_samples, m, "n_samples")?,
        0usize,
        "n_samples",
    )?;
    match method.resolve(n, m) {
        Method::Rejection => {
            let cdf = cumsum(&lev);
            par_samples(&mut out, m, stop, |s, chunk| {
                let mut rng = Rng::stream(seed, first.wrapping_add(s as u64));
                rejection_one(u, m, &lev, &cdf, &mut rng, chunk, stop)
            })?;
        }
        _ => {
            // One sample splits its residual updates over the pool; many run side by side.
            let parallel = n_samples == 1;
            par_samples(&mut out, m, stop, |s, chunk| {
                let mut rng = Rng::stream(seed, first.wrapping_add(s as u64));
                chain_one(u, n, m, &lev, &mut rng, chunk, parallel, stop)
            })?;
        }
    }
    for s in out.chunks_mut(m) {
        s.sort_unstable();
    }
    Ok(out)
}

/// Runs `f(sample index, output chunk)` over the samples of `width` values each, in
/// parallel on divest's pool. The result does not depend on the thread count.
pub(crate) fn par_samples<T: Send>(
    out: &mut [T],
    width: usize,
    stop: &AtomicBool,
    f: impl Fn(usize, &mut [T]) -> Result<()> + Sync,
) -> Result<()> {
    use rayon::prelude::*;
    if width == 0 || out.is_empty() {
        return Ok(());
    }
    threads::install(|| {
        out.par_chunks_mut(width)
            .enumerate()
            .try_for_each(|(s, chunk)| {
                // Checked before every sample: a sample is short, so Ctrl-C stops the
                // whole call at once even when no single sample polls the flag.
                threads::check(stop)?;
                f(s, chunk)
            })
    })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::det;

    /// An n×m matrix with orthonormal columns (Gram–Schmidt on a deterministic matrix).
    pub(crate) fn orthonormal(n: usize, m: usize, seed: u64) -> Vec<f64> {
        let mut r = Rng::stream(seed, 99);
        let mut cols: Vec<Vec<f64>> = Vec::new();
        while cols.len() < m {
            let mut v: Vec<f64> = (0..n)
                .map(|_| r.uniform() - 0.5 + if r.uniform() < 0.1 { 2.0 } else { 0.0 })
                .collect();
            for _ in 0..2 {
                for c in &cols {
                    let p = dot(c, &v);
                    for (vi, ci) in v.iter_mut().zip(c) {
                        *vi -= p * ci;
                    }
                }
            }
            let nv = dot(&v, &v).sqrt();
            cols.push(v.iter().map(|x| x / nv).collect());
        }
        let mut u = vec![0.0; n * m];
        for i in 0..n {
            for j in 0..m {
                u[i * m + j] = cols[j][i];
            }
        }
        u
    }

    fn check_distribution(method: Method) {
        let (n, m) = (6, 2);
        let u = orthonormal(n, m, 3);
        let stop = AtomicBool::new(false);
        let ns = 30_000;
        let s = sample_projection(&u, n, m, ns, 11, 0, method, &stop).unwrap();
        let mut counts = std::collections::HashMap::new();
        for x in s.chunks(m) {
            assert!(x[0] < x[1]);
            *counts.entry((x[0], x[1])).or_insert(0usize) += 1;
        }
        let mut chi2 = 0.0;
        let mut total_p = 0.0;
        for a in 0..n {
            for b in a + 1..n {
                let mut k = vec![0.0; 4];
                for (r, i) in [a, b].iter().enumerate() {
                    for (cidx, j) in [a, b].iter().enumerate() {
                        k[r * 2 + cidx] = dot(&u[i * m..(i + 1) * m], &u[j * m..(j + 1) * m]);
                    }
                }
                let p = det(&mut k, 2);
                total_p += p;
                let e = p * ns as f64;
                let o = *counts.get(&(a, b)).unwrap_or(&0) as f64;
                chi2 += (o - e) * (o - e) / e;
            }
        }
        assert!((total_p - 1.0).abs() < 1e-12);
        // 14 degrees of freedom: the 1e-4 quantile is about 43.
        assert!(chi2 < 43.0, "chi2 = {chi2}");
    }

    #[test]
    fn chain_matches_exact_probabilities() {
        check_distribution(Method::Chain);
    }

    /// Chi-square quantile at 1 - 1e-4 (Wilson–Hilferty).
    fn chi2_limit(df: f64) -> f64 {
        let h = 2.0 / (9.0 * df);
        df * (1.0 - h + 3.719 * h.sqrt()).powi(3)
    }

    #[test]
    fn chain_is_exact_for_every_update_schedule() {
        // All residuals updated every step (the textbook chain rule), every two steps or
        // when the stale mass exceeds 1.5 times the current one, never (every step by
        // thinning the leverage scores), and the default.
        let (n, m) = (8, 4);
        let u = orthonormal(n, m, 21);
        let lev = leverage(&u, n, m);
        let mut subsets: Vec<Vec<usize>> = Vec::new();
        for mask in 0u32..(1 << n) {
            if mask.count_ones() as usize == m {
                subsets.push((0..n).filter(|&i| mask >> i & 1 == 1).collect());
            }
        }
        let probs: Vec<f64> = subsets
            .iter()
            .map(|s| {
                let mut k = vec![0.0; m * m];
                for (r, &i) in s.iter().enumerate() {
                    for (c, &j) in s.iter().enumerate() {
                        k[r * m + c] = dot(&u[i * m..(i + 1) * m], &u[j * m..(j + 1) * m]);
                    }
                }
                det(&mut k, m)
            })
            .collect();
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let stop = AtomicBool::new(false);
        let ns = 40_000;
        let schedules = [
            Schedule {
                max_pending: 1,
                max_ratio: f64::INFINITY,
            },
            Schedule {
                max_pending: 2,
                max_ratio: 1.5,
            },
            Schedule {
                max_pending: 100,
                max_ratio: f64::INFINITY,
            },
            SCHEDULE,
        ];
        for (si, sch) in schedules.into_iter().enumerate() {
            let mut counts = std::collections::HashMap::new();
            let mut out = vec![0usize; m];
            for s in 0..ns {
                let mut rng = Rng::stream(40 + si as u64, s);
                chain_scheduled(&u, n, m, &lev, &mut rng, &mut out, false, sch, &stop).unwrap();
                let mut key = out.clone();
                key.sort_unstable();
                *counts.entry(key).or_insert(0usize) += 1;
            }
            let (mut chi2, mut cells) = (0.0, 0.0);
            let (mut pool_o, mut pool_e) = (0.0, 0.0);
            for (set, p) in subsets.iter().zip(&probs) {
                let e = p * ns as f64;
                let o = *counts.get(set).unwrap_or(&0) as f64;
                if e < 5.0 {
                    (pool_o, pool_e) = (pool_o + o, pool_e + e);
                } else {
                    chi2 += (o - e) * (o - e) / e;
                    cells += 1.0;
                }
            }
            if pool_e > 0.0 {
                chi2 += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
                cells += 1.0;
            }
            assert!(cells > 30.0);
            assert!(
                chi2 < chi2_limit(cells - 1.0),
                "{sch:?}: chi2 = {chi2} on {cells} cells"
            );
        }
    }

    #[test]
    fn rejection_matches_exact_probabilities() {
        check_distribution(Method::Rejection);
    }

    #[test]
    fn reproducible_and_sorted() {
        let (n, m) = (300, 12);
        let u = orthonormal(n, m, 5);
        let stop = AtomicBool::new(false);
        for method in [Method::Chain, Method::Rejection] {
            let a = sample_projection(&u, n, m, 20, 4, 0, method, &stop).unwrap();
            let b = sample_projection(&u, n, m, 20, 4, 0, method, &stop).unwrap();
            assert_eq!(a, b);
            let c = sample_projection(&u, n, m, 20, 5, 0, method, &stop).unwrap();
            assert_ne!(a, c);
            for s in a.chunks(m) {
                assert!(s.windows(2).all(|w| w[0] < w[1]));
            }
        }
    }

    #[test]
    fn a_range_of_samples_drawn_alone_equals_that_range_of_one_call() {
        use crate::core::dpp::{log_esp, sample_k_dpp, sample_spectral, volume_sample, Extra};
        let (n, m) = (200, 6);
        let u = orthonormal(n, m, 8);
        let stop = AtomicBool::new(false);
        for method in [Method::Chain, Method::Rejection] {
            let all = sample_projection(&u, n, m, 12, 9, 0, method, &stop).unwrap();
            // One sample alone (the single-sample path splits its updates over the pool).
            for (first, count) in [(0usize, 5usize), (5, 1), (6, 6)] {
                let part =
                    sample_projection(&u, n, m, count, 9, first as u64, method, &stop).unwrap();
                assert_eq!(part, all[first * m..(first + count) * m]);
            }
            let p = vec![0.7; m];
            let all = sample_spectral(&u, n, m, &p, 9, 3, 0, method, &stop).unwrap();
            let part = sample_spectral(&u, n, m, &p, 1, 3, 4, method, &stop).unwrap();
            assert_eq!(part[0], all[4]);
            let ll = vec![0.0; m];
            let t = log_esp(&ll, 3, &stop).unwrap();
            let all = sample_k_dpp(&u, n, m, &ll, &t, 3, 9, 3, 0, method, &stop).unwrap();
            let part = sample_k_dpp(&u, n, m, &ll, &t, 3, 2, 3, 7, method, &stop).unwrap();
            assert_eq!(part, all[7 * 3..9 * 3]);
            for extra in [Extra::Uniform, Extra::Iid(&[1.0; 200])] {
                let all = volume_sample(&u, n, m, 9, 8, 2, 0, extra, method, &stop).unwrap();
                let part = volume_sample(&u, n, m, 9, 1, 2, 5, extra, method, &stop).unwrap();
                assert_eq!(part, all[5 * 9..6 * 9]);
            }
        }
    }

    #[test]
    fn absurd_counts_fail_and_stop_flag_is_polled() {
        use crate::core::dpp::{log_esp, sample_k_dpp, sample_spectral, volume_sample, Extra};
        use crate::core::Error;
        let (n, m) = (40, 4);
        let u = orthonormal(n, m, 8);
        let stop = AtomicBool::new(false);
        for method in [Method::Chain, Method::Rejection] {
            // 2^62 samples of 4 items: the count wrapped to 0 before.
            let e = sample_projection(&u, n, m, 1 << 62, 0, 0, method, &stop).unwrap_err();
            assert!(
                matches!(e, Error::OutOfMemory(ref s) if s.contains("n_samples")),
                "{e:?}"
            );
            let e = sample_projection(&u, n, m, 1 << 40, 0, 0, method, &stop).unwrap_err();
            assert!(matches!(e, Error::OutOfMemory(_)), "{e:?}");
        }
        let e = volume_sample(
            &u,
            n,
            m,
            6,
            1 << 62,
            0,
            0,
            Extra::Uniform,
            Method::Auto,
            &stop,
        );
        assert!(matches!(e, Err(Error::OutOfMemory(_))));
        let p = vec![0.5; m];
        let e = sample_spectral(&u, n, m, &p, 1 << 60, 0, 0, Method::Auto, &stop);
        assert!(matches!(e, Err(Error::OutOfMemory(_))));
        let ll = vec![0.0; m];
        assert!(log_esp(&ll, usize::MAX, &stop).is_err());
        assert!(log_esp(&ll, 1 << 60, &stop).is_err());
        let t = log_esp(&ll, 2, &stop).unwrap();
        let e = sample_k_dpp(&u, n, m, &ll, &t, 2, 1 << 62, 0, 0, Method::Auto, &stop);
        assert!(matches!(e, Err(Error::OutOfMemory(_))));
        // A raised flag stops every sampler before it does any sampling work.
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for method in [Method::Chain, Method::Rejection] {
            let e = sample_projection(&u, n, m, 1000, 0, 0, method, &stop).unwrap_err();
            assert_eq!(e, Error::Cancelled);
            let e = sample_k_dpp(&u, n, m, &ll, &t, 2, 1000, 0, 0, method, &stop).unwrap_err();
            assert_eq!(e, Error::Cancelled);
            let e = sample_spectral(&u, n, m, &p, 1000, 0, 0, method, &stop).unwrap_err();
            assert_eq!(e, Error::Cancelled);
            let e = volume_sample(&u, n, m, 6, 1000, 0, 0, Extra::Uniform, method, &stop);
            assert_eq!(e.unwrap_err(), Error::Cancelled);
            let e = volume_sample(&u, n, m, 6, 1000, 0, 0, Extra::Iid(&lev1(n)), method, &stop);
            assert_eq!(e.unwrap_err(), Error::Cancelled);
            // One sample alone polls the flag too (rejection between proposals, the chain
            // rule between steps).
            let mut rng = Rng::stream(1, 0);
            let lev = leverage(&u, n, m);
            let cdf = cumsum(&lev);
            let mut out = vec![0usize; m];
            let e = if method == Method::Rejection {
                rejection_one(&u, m, &lev, &cdf, &mut rng, &mut out, &stop)
            } else {
                chain_one(&u, n, m, &lev, &mut rng, &mut out, false, &stop)
            };
            assert_eq!(e.unwrap_err(), Error::Cancelled);
        }
        assert_eq!(log_esp(&ll, 2, &stop).unwrap_err(), Error::Cancelled);
    }

    fn lev1(n: usize) -> Vec<f64> {
        vec![1.0; n]
    }

    #[test]
    fn rejects_bad_shapes_and_rank() {
        let stop = AtomicBool::new(false);
        assert!(sample_projection(&[1.0; 5], 3, 2, 1, 0, 0, Method::Chain, &stop).is_err());
        assert!(sample_projection(&[], 3, 0, 1, 0, 0, Method::Chain, &stop).is_err());
        // Two identical columns: rank 1, the chain must fail cleanly, not loop.
        let u = vec![0.5; 8];
        assert!(sample_projection(&u, 4, 2, 3, 0, 0, Method::Chain, &stop).is_err());
        assert!(sample_projection(&u, 4, 2, 3, 0, 0, Method::Rejection, &stop).is_err());
    }
}
