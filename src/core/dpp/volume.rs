//! Volume sampling (P(S) ∝ det(X_Sᵀ X_S), |S| = k ≥ d) and volume-rescaled sampling,
//! both as a size-d projection DPP on an orthonormal basis U of X's columns plus k - d
//! further points (uniform without replacement, or i.i.d. from the base measure).
//! For volume-rescaled sampling from a measure p on the rows, U must be an orthonormal
//! basis of diag(√p) X; the caller forms it.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;

use super::projection::{cumsum, draw_cdf, par_samples, Method};
use super::rng::Rng;
use super::spectral::sample_dense;
use crate::core::error::{checked_size, invalid, try_vec, Result};
use crate::core::threads;

/// How the k - d points beyond the DPP part are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Extra<'a> {
    /// Uniformly without replacement from the other rows: volume sampling.
    Uniform,
    /// I.i.d. with probabilities proportional to these non-negative weights (one per
    /// row): volume-rescaled sampling from that base measure.
    Iid(&'a [f64]),
}

/// `r` distinct items drawn uniformly from {0..n} minus the sorted `taken` (Floyd).
fn uniform_rest(n: usize, taken: &[usize], r: usize, rng: &mut Rng) -> Vec<usize> {
    let pool = n - taken.len();
    let mut set = HashSet::with_capacity(2 * r);
    let mut ranks = Vec::with_capacity(r);
    for j in pool - r..pool {
        let t = rng.below(j + 1);
        let pick = if set.contains(&t) { j } else { t };
        set.insert(pick);
        ranks.push(pick);
    }
    // Rank t among the free items is the item t + (number of taken items at or before it).
    ranks
        .into_iter()
        .map(|t| {
            let mut idx = t;
            for &x in taken {
                if x <= idx {
                    idx += 1;
                } else {
                    break;
                }
            }
            idx
        })
        .collect()
}

/// `n_samples` samples of size k from U (n×d, orthonormal columns spanning X's columns).
/// Each sample is sorted; with `Extra::Iid` items may repeat (a multiset).
/// Memory: the output, the leverage scores and one n×d residual state per task.
#[allow(clippy::too_many_arguments)]
pub fn volume_sample(
    u: &[f64],
    n: usize,
    d: usize,
    k: usize,
    n_samples: usize,
    seed: u64,
    extra: Extra,
    method: Method,
    stop: &AtomicBool,
) -> Result<Vec<usize>> {
    if u.len() != n * d || d == 0 {
        return Err(invalid!("U must be a non-empty {n}×{d} array"));
    }
    if k < d {
        return Err(invalid!(
            "k must be at least d = {d} (the number of columns); got {k}"
        ));
    }
    if extra == Extra::Uniform && k > n {
        return Err(invalid!(
            "k must be at most n = {n} (samples are sets of rows); got {k}"
        ));
    }
    let cdf = match extra {
        Extra::Iid(p) => {
            if p.len() != n
                || p.iter().any(|x| x.is_nan() || *x < 0.0)
                || p.iter().sum::<f64>() <= 0.0
            {
                return Err(invalid!(
                    "the base measure needs {n} non-negative weights, not all zero"
                ));
            }
            cumsum(p)
        }
        Extra::Uniform => Vec::new(),
    };
    let mut out = try_vec(
        checked_size(n_samples, k, "n_samples")?,
        0usize,
        "n_samples",
    )?;
    par_samples(&mut out, k, stop, |s, chunk| {
        let mut rng = Rng::stream(seed, s as u64);
        let items = sample_dense(u, n, d, method, &mut rng, n_samples == 1, stop)?;
        let (head, rest) = chunk.split_at_mut(d);
        match extra {
            Extra::Uniform => {
                // k <= n here, so this extra state is bounded by the input's size.
                let more = uniform_rest(n, &items, k - d, &mut rng);
                rest.copy_from_slice(&more);
            }
            Extra::Iid(_) => {
                // Written in place (k may be far larger than n); a long draw polls Ctrl-C.
                for (t, slot) in rest.iter_mut().enumerate() {
                    if t % 4096 == 4095 {
                        threads::check(stop)?;
                    }
                    *slot = draw_cdf(&cdf, &mut rng);
                }
            }
        }
        head.copy_from_slice(&items);
        chunk.sort_unstable();
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_rest_is_uniform_and_avoids_taken() {
        let mut rng = Rng::stream(3, 0);
        let taken = [1usize, 4];
        let mut counts = [0usize; 7];
        for _ in 0..50_000 {
            let r = uniform_rest(7, &taken, 2, &mut rng);
            assert_ne!(r[0], r[1]);
            for x in r {
                assert!(x < 7 && !taken.contains(&x));
                counts[x] += 1;
            }
        }
        // Each of the 5 free items appears with probability 2/5.
        for (i, c) in counts.iter().enumerate() {
            if taken.contains(&i) {
                assert_eq!(*c, 0);
            } else {
                assert!((*c as f64 - 20_000.0).abs() < 600.0, "{counts:?}");
            }
        }
    }

    #[test]
    fn rejects_small_k() {
        let stop = AtomicBool::new(false);
        let u = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        assert!(volume_sample(&u, 3, 2, 1, 1, 0, Extra::Uniform, Method::Chain, &stop).is_err());
        assert!(volume_sample(&u, 3, 2, 4, 1, 0, Extra::Uniform, Method::Chain, &stop).is_err());
        let p = [1.0, 2.0, 0.0];
        let s = volume_sample(&u, 3, 2, 5, 2, 0, Extra::Iid(&p), Method::Chain, &stop).unwrap();
        // Row 2 has zero leverage and zero base weight: never drawn.
        assert!(s.iter().all(|&i| i < 2));
        assert!(
            volume_sample(&u, 3, 2, 5, 2, 0, Extra::Iid(&p[..2]), Method::Chain, &stop).is_err()
        );
    }
}
