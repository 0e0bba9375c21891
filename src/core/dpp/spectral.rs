//! DPPs given by an eigendecomposition (L-ensembles, correlation kernels and k-DPPs):
//! pick eigenvectors, then sample the projection DPP they span.

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use super::projection::{chain_one, cumsum, leverage, rejection_one, Method};
use super::rng::Rng;
use crate::core::error::{checked_size, invalid, try_vec, Result};
use crate::core::threads;

/// Samples the projection DPP spanned by the columns `cols` of V (n×mm row-major,
/// orthonormal columns); returns the sorted items. `parallel` as in [`sample_dense`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn sample_columns(
    v: &[f64],
    n: usize,
    mm: usize,
    cols: &[usize],
    method: Method,
    rng: &mut Rng,
    parallel: bool,
    stop: &AtomicBool,
) -> Result<Vec<usize>> {
    let k = cols.len();
    if k == 0 {
        return Ok(Vec::new());
    }
    let mut u = vec![0.0f64; n * k];
    for (dst, src) in u.chunks_exact_mut(k).zip(v.chunks_exact(mm)) {
        for (x, &c) in dst.iter_mut().zip(cols) {
            *x = src[c];
        }
    }
    sample_dense(&u, n, k, method, rng, parallel, stop)
}

/// One projection-DPP sample from U (n×k, orthonormal columns), sorted. `parallel` lets
/// the chain rule split its work over divest's pool (for a lone sample; the caller is on
/// the pool).
pub(crate) fn sample_dense(
    u: &[f64],
    n: usize,
    k: usize,
    method: Method,
    rng: &mut Rng,
    parallel: bool,
    stop: &AtomicBool,
) -> Result<Vec<usize>> {
    let lev = leverage(u, n, k);
    let mut out = vec![0usize; k];
    match method.resolve(n, k) {
        Method::Rejection => {
            let cdf = cumsum(&lev);
            rejection_one(u, k, &lev, &cdf, rng, &mut out, stop)?;
        }
        _ => chain_one(u, n, k, &lev, rng, &mut out, parallel, stop)?,
    }
    out.sort_unstable();
    Ok(out)
}

fn check_v(v: &[f64], n: usize, mm: usize, what: usize) -> Result<()> {
    if v.len() != n * mm {
        return Err(invalid!(
            "eigenvectors have {} values, expected {n}*{mm}",
            v.len()
        ));
    }
    if what != mm {
        return Err(invalid!("{what} eigenvalues given for {mm} eigenvectors"));
    }
    Ok(())
}

/// Samples of the DPP whose correlation kernel is V diag(probs) Vᵀ (V n×mm row-major with
/// orthonormal columns, probs in [0, 1]): eigenvector j is kept with probability
/// probs[j], then the projection DPP of the kept ones is sampled. Returns the samples
/// (sorted items), one vector each.
/// Sample `s` draws from the stream (seed, first + s), as in [`super::sample_projection`].
/// Memory: per sample, a gathered n×|J| copy of V.
#[allow(clippy::too_many_arguments)]
pub fn sample_spectral(
    v: &[f64],
    n: usize,
    mm: usize,
    probs: &[f64],
    n_samples: usize,
    seed: u64,
    first: u64,
    method: Method,
    stop: &AtomicBool,
) -> Result<Vec<Vec<usize>>> {
    check_v(v, n, mm, probs.len())?;
    if probs.iter().any(|p| !(0.0..=1.0).contains(p)) {
        return Err(invalid!("eigenvector probabilities must lie in [0, 1]"));
    }
    // One slot per sample, reserved up front: an absurd n_samples is an error, not an abort.
    let mut out: Vec<Vec<usize>> = try_vec(n_samples, Vec::new(), "n_samples")?;
    let one = |(s, slot): (usize, &mut Vec<usize>)| {
        threads::check(stop)?;
        let mut rng = Rng::stream(seed, first.wrapping_add(s as u64));
        let cols: Vec<usize> = (0..mm).filter(|&j| rng.uniform() < probs[j]).collect();
        *slot = sample_columns(v, n, mm, &cols, method, &mut rng, n_samples == 1, stop)?;
        Ok(())
    };
    threads::install(|| out.par_iter_mut().enumerate().try_for_each(one))??;
    Ok(out)
}

#[inline]
fn log_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

/// Logarithms of the elementary symmetric polynomials of the eigenvalues whose logs are
/// `log_lambda`: a (k+1)×(mm+1) row-major table, entry (l, t) = log e_l(λ_1, …, λ_t).
/// Computed in log space so that no kernel's spectrum overflows; -inf where e_l = 0.
/// Fails (never aborts) when the table cannot be allocated; stops on `stop`.
pub fn log_esp(log_lambda: &[f64], k: usize, stop: &AtomicBool) -> Result<Vec<f64>> {
    let mm = log_lambda.len();
    let w = mm + 1;
    let rows = k
        .checked_add(1)
        .ok_or_else(|| invalid!("k = {k} is too large"))?;
    let mut e = try_vec(checked_size(rows, w, "k")?, f64::NEG_INFINITY, "k")?;
    e[..w].fill(0.0);
    for l in 1..=k {
        threads::check(stop)?;
        for t in 1..=mm {
            let skip = e[l * w + t - 1];
            let take = log_lambda[t - 1] + e[(l - 1) * w + t - 1];
            e[l * w + t] = log_add(skip, take);
        }
    }
    Ok(e)
}

/// Samples of the k-DPP with L = V diag(λ) Vᵀ (`log_lambda` = log λ, -inf for zero
/// eigenvalues): exactly k eigenvectors are picked with probability Π λ_J / e_k, then the
/// projection DPP they span is sampled. `table` is [`log_esp`]`(log_lambda, k)`, which
/// callers cache. Returns n_samples×k sorted items. Memory: per sample, an n×k copy of V.
/// Sample `s` draws from the stream (seed, first + s), as in [`super::sample_projection`].
#[allow(clippy::too_many_arguments)]
pub fn sample_k_dpp(
    v: &[f64],
    n: usize,
    mm: usize,
    log_lambda: &[f64],
    table: &[f64],
    k: usize,
    n_samples: usize,
    seed: u64,
    first: u64,
    method: Method,
    stop: &AtomicBool,
) -> Result<Vec<usize>> {
    check_v(v, n, mm, log_lambda.len())?;
    if log_lambda.iter().any(|x| x.is_nan() || *x == f64::INFINITY) {
        return Err(invalid!("log eigenvalues must be finite or -inf"));
    }
    let rank = log_lambda.iter().filter(|x| x.is_finite()).count();
    if k > rank {
        return Err(invalid!(
            "k = {k} exceeds the rank {rank} of the kernel; choose k <= {rank}"
        ));
    }
    // k <= rank <= mm: the product cannot overflow.
    if table.len() != (k + 1) * (mm + 1) {
        return Err(invalid!(
            "the log-ESP table must be ({k}+1)×({mm}+1); got {} values",
            table.len()
        ));
    }
    if k == 0 {
        return Ok(Vec::new());
    }
    let e = table;
    let w = mm + 1;
    let mut out = try_vec(
        checked_size(n_samples, k, "n_samples")?,
        0usize,
        "n_samples",
    )?;
    super::projection::par_samples(&mut out, k, stop, |s, chunk| {
        let mut rng = Rng::stream(seed, first.wrapping_add(s as u64));
        let mut cols = Vec::with_capacity(k);
        let mut l = k;
        for t in (1..=mm).rev() {
            if l == 0 {
                break;
            }
            // P(take eigenvalue t | l still to take among the first t) = λ_t e_{l-1}^{t-1} / e_l^t.
            let take = if e[l * w + t - 1] == f64::NEG_INFINITY {
                true
            } else {
                let p = (log_lambda[t - 1] + e[(l - 1) * w + t - 1] - e[l * w + t]).exp();
                rng.uniform() < p
            };
            if take {
                cols.push(t - 1);
                l -= 1;
            }
        }
        if l != 0 {
            return Err(invalid!("k-DPP eigenvector selection failed; the spectrum has fewer than k = {k} positive eigenvalues"));
        }
        cols.reverse();
        let s = sample_columns(v, n, mm, &cols, method, &mut rng, n_samples == 1, stop)?;
        chunk.copy_from_slice(&s);
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_esp_matches_direct() {
        let lam = [0.5f64, 2.0, 3.0, 0.0, 7.0];
        let ll: Vec<f64> = lam.iter().map(|x| x.ln()).collect();
        let e = log_esp(&ll, 3, &AtomicBool::new(false)).unwrap();
        let w = lam.len() + 1;
        // e_2 of all five, directly.
        let mut e2 = 0.0;
        for i in 0..5 {
            for j in i + 1..5 {
                e2 += lam[i] * lam[j];
            }
        }
        assert!((e[2 * w + 5].exp() - e2).abs() < 1e-12 * e2);
        let e3: f64 = (0..5)
            .flat_map(|i| {
                (i + 1..5).flat_map(move |j| (j + 1..5).map(move |k| lam[i] * lam[j] * lam[k]))
            })
            .sum();
        assert!((e[3 * w + 5].exp() - e3).abs() < 1e-12 * e3);
        // Huge and tiny eigenvalues: no overflow.
        let ll = [700.0f64, 710.0, -700.0, 705.0];
        let e = log_esp(&ll, 3, &AtomicBool::new(false)).unwrap();
        assert!(e[3 * 5 + 4].is_finite());
        assert!((e[3 * 5 + 4] - 2115.0).abs() < 1e-9);
    }

    #[test]
    fn k_larger_than_rank_fails() {
        let stop = AtomicBool::new(false);
        let v = [1.0, 0.0, 0.0, 1.0];
        let ll = [0.0, f64::NEG_INFINITY];
        assert!(sample_k_dpp(
            &v,
            2,
            2,
            &ll,
            &log_esp(&ll, 2, &stop).unwrap(),
            2,
            1,
            0,
            0,
            Method::Chain,
            &stop
        )
        .is_err());
        let s = sample_k_dpp(
            &v,
            2,
            2,
            &ll,
            &log_esp(&ll, 1, &stop).unwrap(),
            1,
            3,
            0,
            0,
            Method::Chain,
            &stop,
        )
        .unwrap();
        assert!(sample_k_dpp(&v, 2, 2, &ll, &[0.0; 3], 1, 3, 0, 0, Method::Chain, &stop).is_err());
        assert_eq!(s, vec![0, 0, 0]);
    }
}
