//! Volume sampling (P(S) ∝ det(X_Sᵀ X_S), |S| = k ≥ d) and volume-rescaled sampling,
//! both as a size-d projection DPP on an orthonormal basis U of X's columns plus k - d
//! further points (uniform without replacement, or i.i.d. from the base measure).
//! For volume-rescaled sampling from a measure p on the rows, U must be an orthonormal
//! basis of diag(√p) X; the caller forms it.

use std::sync::atomic::AtomicBool;

use super::projection::{cumsum, draw_cdf, par_samples, Method};
use super::rng::Rng;
use super::spectral::sample_dense;
use crate::core::error::{checked_size, invalid, try_vec, Error, Result};
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

/// `r` distinct items drawn uniformly from {0..n} minus the sorted `taken`, in increasing
/// order: Floyd's algorithm on a bitmap of the free ranks, then one ordered pass that maps
/// rank t to the t-th free item. O(n/64 + r) time and n/8 bytes; polls `stop`.
fn uniform_rest(
    n: usize,
    taken: &[usize],
    r: usize,
    rng: &mut Rng,
    stop: &AtomicBool,
) -> Result<Vec<usize>> {
    let pool = n - taken.len();
    let mut bits = try_vec(pool.div_ceil(64), 0u64, "k")?;
    for (c, j) in (pool - r..pool).enumerate() {
        if c % 4096 == 4095 {
            threads::check(stop)?;
        }
        let t = rng.below(j + 1);
        let pick = if (bits[t / 64] >> (t % 64)) & 1 == 1 {
            j
        } else {
            t
        };
        bits[pick / 64] |= 1 << (pick % 64);
    }
    let mut out = Vec::new();
    out.try_reserve_exact(r)
        .map_err(|_| Error::OutOfMemory(format!("k = {r} extra items could not be allocated")))?;
    let mut ti = 0; // taken items before the current one
    for (w, &word) in bits.iter().enumerate() {
        if w % 4096 == 4095 {
            threads::check(stop)?;
        }
        let mut b = word;
        while b != 0 {
            let t = w * 64 + b.trailing_zeros() as usize;
            b &= b - 1;
            // Rank t is item t + (number of taken items at or before that item).
            while ti < taken.len() && taken[ti] <= t + ti {
                ti += 1;
            }
            out.push(t + ti);
        }
    }
    Ok(out)
}

/// Sorts the items (all below n) of one sample: by counting when the sample is long and
/// n is not much larger (O(n + k), polling `stop`), else by comparison.
fn sort_items(items: &mut [usize], n: usize, stop: &AtomicBool) -> Result<()> {
    let k = items.len();
    if k < 1 << 15 || n > 4 * k {
        items.sort_unstable();
        return Ok(());
    }
    let mut counts = try_vec(n, 0usize, "k")?;
    for (c, &x) in items.iter().enumerate() {
        if c % 65536 == 65535 {
            threads::check(stop)?;
        }
        counts[x] += 1;
    }
    let mut at = 0;
    for (x, &c) in counts.iter().enumerate() {
        if x % 65536 == 65535 {
            threads::check(stop)?;
        }
        items[at..at + c].fill(x);
        at += c;
    }
    Ok(())
}

/// `n_samples` samples of size k from U (n×d, orthonormal columns spanning X's columns).
/// Each sample is sorted; with `Extra::Iid` items may repeat (a multiset).
/// Sample `s` draws from the stream (seed, first + s), as in [`super::sample_projection`].
/// Memory: the output, the leverage scores and one n×d residual state per task.
#[allow(clippy::too_many_arguments)]
pub fn volume_sample(
    u: &[f64],
    n: usize,
    d: usize,
    k: usize,
    n_samples: usize,
    seed: u64,
    first: u64,
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
        let mut rng = Rng::stream(seed, first.wrapping_add(s as u64));
        let items = sample_dense(u, n, d, method, &mut rng, n_samples == 1, stop)?;
        match extra {
            Extra::Uniform => {
                // k <= n here, so this extra state is bounded by the input's size. Both
                // parts are sorted: merge them.
                let more = uniform_rest(n, &items, k - d, &mut rng, stop)?;
                let (mut a, mut b) = (items.iter().peekable(), more.iter().peekable());
                for slot in chunk.iter_mut() {
                    let take_a = match (a.peek(), b.peek()) {
                        (Some(x), Some(y)) => x <= y,
                        (Some(_), None) => true,
                        _ => false,
                    };
                    *slot = *if take_a { a.next() } else { b.next() }.unwrap_or(&0);
                }
            }
            Extra::Iid(_) => {
                // Written in place (k may be far larger than n); a long draw polls Ctrl-C.
                let (head, rest) = chunk.split_at_mut(d);
                head.copy_from_slice(&items);
                for (t, slot) in rest.iter_mut().enumerate() {
                    if t % 4096 == 4095 {
                        threads::check(stop)?;
                    }
                    *slot = draw_cdf(&cdf, &mut rng);
                }
                sort_items(chunk, n, stop)?;
            }
        }
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
        let stop = AtomicBool::new(false);
        let taken = [1usize, 4];
        let mut counts = [0usize; 7];
        for _ in 0..50_000 {
            let r = uniform_rest(7, &taken, 2, &mut rng, &stop).unwrap();
            assert!(r[0] < r[1]);
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
    fn uniform_rest_pairs_are_uniform_and_counting_sort_sorts() {
        // All C(5, 3) triples of the free items of {0..7} \ {0, 6} equally likely.
        let mut rng = Rng::stream(4, 0);
        let stop = AtomicBool::new(false);
        let mut counts = std::collections::HashMap::new();
        let reps = 60_000;
        for _ in 0..reps {
            let r = uniform_rest(7, &[0, 6], 3, &mut rng, &stop).unwrap();
            assert!(r.windows(2).all(|w| w[0] < w[1]) && r.iter().all(|&x| x != 0 && x != 6));
            *counts.entry(r).or_insert(0usize) += 1;
        }
        assert_eq!(counts.len(), 10);
        let e = reps as f64 / 10.0;
        let chi2: f64 = counts.values().map(|&o| (o as f64 - e).powi(2) / e).sum();
        assert!(chi2 < 33.7, "{chi2}"); // 9 degrees of freedom, 1e-4 quantile
                                        // Every rank of a full draw (r = pool) maps to a distinct free item.
        let all = uniform_rest(200, &[3, 100, 199], 197, &mut rng, &stop).unwrap();
        let want: Vec<usize> = (0..200).filter(|x| ![3, 100, 199].contains(x)).collect();
        assert_eq!(all, want);
        let mut v: Vec<usize> = (0..100_000).map(|i| (i * 7919) % 1000).collect();
        let mut w = v.clone();
        sort_items(&mut v, 1000, &stop).unwrap();
        w.sort_unstable();
        assert_eq!(v, w);
    }

    #[test]
    fn rejects_small_k() {
        let stop = AtomicBool::new(false);
        let u = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        assert!(volume_sample(&u, 3, 2, 1, 1, 0, 0, Extra::Uniform, Method::Chain, &stop).is_err());
        assert!(volume_sample(&u, 3, 2, 4, 1, 0, 0, Extra::Uniform, Method::Chain, &stop).is_err());
        let p = [1.0, 2.0, 0.0];
        let s = volume_sample(&u, 3, 2, 5, 2, 0, 0, Extra::Iid(&p), Method::Chain, &stop).unwrap();
        // Row 2 has zero leverage and zero base weight: never drawn.
        assert!(s.iter().all(|&i| i < 2));
        assert!(volume_sample(
            &u,
            3,
            2,
            5,
            2,
            0,
            0,
            Extra::Iid(&p[..2]),
            Method::Chain,
            &stop
        )
        .is_err());
    }
}
