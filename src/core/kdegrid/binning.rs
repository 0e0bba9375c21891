//! Linear binning and an O(n) expected-time sort of weighted 1-D data.

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use super::check_stop;
use crate::core::error::{try_vec, Result};
use crate::core::threads;

/// Points per parallel chunk of the binning pass.
const CHUNK: usize = 1 << 16;

fn bin_chunk(x: &[f64], w: &[f64], lo: f64, inv: f64, bins: &mut [f64]) {
    let last = (bins.len() - 1) as f64;
    for (&xi, &wi) in x.iter().zip(w) {
        let pos = (xi - lo) * inv;
        // Points beyond the first or last bin are out of every kernel's reach: dropped.
        if !(pos >= 0.0 && pos <= last) {
            continue;
        }
        let k = pos as usize; // floor, pos >= 0
        let t = pos - k as f64;
        if k + 1 < bins.len() {
            bins[k] += wi * (1.0 - t);
            bins[k + 1] += wi * t;
        } else {
            bins[k] += wi;
        }
    }
}

/// Linear binning: a point at fractional position k + t (t ∈ [0, 1)) of the bin lattice
/// lo + k·delta, k = 0..nb, gives w(1 − t) to bin k and w·t to bin k + 1. Points outside
/// [lo, lo + (nb − 1)·delta] are dropped. Allocates nb values per thread.
pub fn linear_bin(
    x: &[f64],
    w: &[f64],
    lo: f64,
    delta: f64,
    nb: usize,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    if nb == 0 {
        return Ok(Vec::new());
    }
    let inv = 1.0 / delta;
    accumulate(x.len(), nb, CHUNK, stop, |s, e, bins| {
        bin_chunk(&x[s..e], &w[s..e], lo, inv, bins)
    })
}

/// Runs `bin(start, end, bins)` over the points `0..n` in chunks of `ch` and returns the
/// sum of what it added to `nbins` zeroed bins: serially into one array, or, when the
/// points outnumber the bins 8 to 1 and several threads are allowed, into one array per
/// thread added up in a fixed order (results do not depend on timing). Checks the stop
/// flag between chunks. Allocates `nbins` values per thread.
fn accumulate(
    n: usize,
    nbins: usize,
    ch: usize,
    stop: &AtomicBool,
    bin: impl Fn(usize, usize, &mut [f64]) + Sync,
) -> Result<Vec<f64>> {
    let mut bins = try_vec(nbins, 0.0f64, "n_points")?;
    let nthreads = threads::num_threads();
    // Per-thread bins only pay off when the data outnumber the bins.
    if nthreads == 1 || n < 4 * ch || nbins > n / 8 {
        for s in (0..n).step_by(ch) {
            check_stop(stop)?;
            bin(s, (s + ch).min(n), &mut bins);
        }
        return Ok(bins);
    }
    let parts = nthreads.min(n.div_ceil(ch));
    let per = n.div_ceil(parts);
    let partial: Vec<Result<Vec<f64>>> = threads::install(|| {
        (0..parts)
            .into_par_iter()
            .map(|p| {
                let (a, b) = (p * per, ((p + 1) * per).min(n));
                let mut local = try_vec(nbins, 0.0f64, "n_points")?;
                for s in (a..b).step_by(ch) {
                    check_stop(stop)?;
                    bin(s, (s + ch).min(b), &mut local);
                }
                Ok(local)
            })
            .collect()
    })?;
    for part in partial {
        let part = part?;
        for (b, v) in bins.iter_mut().zip(&part) {
            *b += v;
        }
    }
    Ok(bins)
}

fn bin_chunk_nd(x: &[f64], w: &[f64], lo: &[f64], delta: &[f64], nb: &[usize], bins: &mut [f64]) {
    let d = lo.len();
    let mut strides = [0usize; 3];
    let mut acc = 1usize;
    for a in (0..d).rev() {
        strides[a] = acc;
        acc *= nb[a];
    }
    let (mut k, mut t) = ([0usize; 3], [0.0f64; 3]);
    'points: for (row, &wi) in x.chunks_exact(d).zip(w) {
        if wi.is_nan() || wi <= 0.0 {
            continue;
        }
        for a in 0..d {
            let pos = (row[a] - lo[a]) / delta[a];
            // Points beyond the padded lattice are out of the kernel's reach: dropped.
            if !(pos >= 0.0 && pos <= (nb[a] - 1) as f64) {
                continue 'points;
            }
            let ka = (pos as usize).min(nb[a] - 2);
            k[a] = ka;
            t[a] = pos - ka as f64;
        }
        for corner in 0..(1usize << d) {
            let mut f = 1.0;
            let mut idx = 0usize;
            for a in 0..d {
                let bit = (corner >> a) & 1;
                f *= if bit == 1 { t[a] } else { 1.0 - t[a] };
                idx += (k[a] + bit) * strides[a];
            }
            bins[idx] += wi * f;
        }
    }
}

/// Linear binning in d = 2 or 3 dimensions onto the lattice lo_a + k_a·delta_a,
/// k_a < nb_a (each nb_a >= 2), row-major (the last axis fastest): a point splits its
/// weight over the 2^d corners of its cell, w·Π_a (t_a or 1 − t_a). `x` holds n rows of
/// d coordinates. Points outside the lattice or with zero weight are dropped. Allocates
/// the Π nb_a bins (and one copy per thread when the data outnumber the bins 8 to 1).
pub fn linear_bin_nd(
    x: &[f64],
    w: &[f64],
    lo: &[f64],
    delta: &[f64],
    nb: &[usize],
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    let d = lo.len();
    if !(2..=3).contains(&d) || delta.len() != d || nb.len() != d || x.len() != w.len() * d {
        return Err(crate::core::error::invalid!(
            "binning needs 2 or 3 dimensions with one lo, delta and size per axis and n·d \
             coordinates"
        ));
    }
    if nb.iter().any(|&v| v < 2)
        || delta.iter().any(|v| !(v.is_finite() && *v > 0.0))
        || lo.iter().any(|v| !v.is_finite())
    {
        return Err(crate::core::error::invalid!(
            "the bin lattice needs at least 2 bins per axis and a finite positive spacing"
        ));
    }
    let total = nb
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| {
            crate::core::error::Error::OutOfMemory("the bin lattice is too large".into())
        })?;
    accumulate(w.len(), total, CHUNK / 4, stop, |s, e, bins| {
        bin_chunk_nd(&x[s * d..e * d], &w[s..e], lo, delta, nb, bins)
    })
}

/// The data sorted ascending with their weights, zero weights dropped: a bucket pass
/// (about four points per bucket, monotone bucket index) then insertion sort within
/// buckets, so O(n) expected time for data without extreme clusters (O(n log n) worst
/// case falls back to a full sort). Allocates 2n values plus n/4 counters.
pub fn sort_weighted(x: &[f64], w: &[f64], stop: &AtomicBool) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut pts: Vec<(f64, f64)> = Vec::new();
    pts.try_reserve_exact(x.len()).map_err(|_| {
        crate::core::error::Error::OutOfMemory(format!(
            "sorting the data needs {:.3} GiB; reduce the data",
            x.len() as f64 * 16.0 / (1u64 << 30) as f64
        ))
    })?;
    pts.extend(
        x.iter()
            .zip(w)
            .filter(|(_, &wi)| wi > 0.0)
            .map(|(&a, &b)| (a, b)),
    );
    let n = pts.len();
    check_stop(stop)?;
    let (mn, mx) = pts
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
    let nbk = (n / 4).max(1);
    if n < 64 || mx <= mn || !(mx - mn).is_finite() {
        pts.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    } else {
        let scale = (nbk as f64 - 1.0) / (mx - mn);
        let key = |v: f64| (((v - mn) * scale) as usize).min(nbk - 1);
        let mut start = try_vec(nbk + 1, 0usize, "data")?;
        for p in &pts {
            start[key(p.0) + 1] += 1;
        }
        for i in 0..nbk {
            start[i + 1] += start[i];
        }
        let mut out = try_vec(n, (0.0f64, 0.0f64), "data")?;
        let mut fill = start.clone();
        for p in &pts {
            let k = key(p.0);
            out[fill[k]] = *p;
            fill[k] += 1;
        }
        check_stop(stop)?;
        for b in 0..nbk {
            let s = &mut out[start[b]..start[b + 1]];
            if s.len() > 32 {
                s.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
            } else {
                for i in 1..s.len() {
                    let mut j = i;
                    while j > 0 && s[j - 1].0 > s[j].0 {
                        s.swap(j - 1, j);
                        j -= 1;
                    }
                }
            }
        }
        pts = out;
    }
    Ok(pts.into_iter().unzip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_binning_conserves_mass_and_first_moment() {
        let stop = AtomicBool::new(false);
        let x = [0.25, 1.5, 2.0, 9.0];
        let w = [1.0, 2.0, 3.0, 4.0];
        let b = linear_bin(&x, &w, 0.0, 1.0, 4, &stop).unwrap();
        // 9.0 is beyond the last bin (3.0): dropped.
        assert_eq!(b, vec![0.75, 1.25, 4.0, 0.0]);
    }

    #[test]
    fn sort_matches_std_sort() {
        let stop = AtomicBool::new(false);
        let x: Vec<f64> = (0..1000)
            .map(|i| ((i * 7919) % 1000) as f64 * 0.37 - 50.0)
            .collect();
        let w: Vec<f64> = (0..1000)
            .map(|i| if i % 10 == 0 { 0.0 } else { i as f64 })
            .collect();
        let (xs, ws) = sort_weighted(&x, &w, &stop).unwrap();
        assert_eq!(xs.len(), 900);
        assert!(xs.windows(2).all(|p| p[0] <= p[1]));
        let mut pairs: Vec<(f64, f64)> = x
            .iter()
            .cloned()
            .zip(w.iter().cloned())
            .filter(|p| p.1 > 0.0)
            .collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (ex, ew): (Vec<f64>, Vec<f64>) = pairs.into_iter().unzip();
        assert_eq!(xs, ex);
        assert_eq!(ws.iter().sum::<f64>(), ew.iter().sum::<f64>());
    }
}
