//! Linear binning and an O(n) expected-time sort of weighted 1-D data.

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use super::check_stop;
use crate::core::error::{try_vec, Result};
use crate::core::threads;

/// Points per parallel chunk of the binning pass.
const CHUNK: usize = 1 << 16;

/// Linear binning: a point at fractional position k + t (t ∈ [0, 1)) of the bin lattice
/// lo + k·delta, k = 0..nb, gives w(1 − t) to bin k and w·t to bin k + 1. Points outside
/// [lo, lo + (nb − 1)·delta] are dropped. Allocates 2·nb values per thread.
pub fn linear_bin(
    x: &[f64],
    w: &[f64],
    lo: f64,
    delta: f64,
    nb: usize,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    Ok(linear_bin_checked(x, Some(w), 0.0, lo, delta, nb, stop)?.0)
}

/// One scatter per point: `acc[2k] += w`, `acc[2k + 1] += w·t`; bin k then holds
/// acc[2k] − acc[2k+1] + acc[2k−1] (the same sums as w(1 − t) and w·t, one cache line
/// touched instead of two). Notes in `bad` a non-finite coordinate or a negative or
/// non-finite weight (checked in the same pass, so no separate validation pass). Without
/// weights it counts points (the caller scales by the common weight).
fn bin_chunk_pairs(
    x: &[f64],
    w: Option<&[f64]>,
    lo: f64,
    inv: f64,
    acc: &mut [f64],
    bad: &AtomicBool,
) {
    let last = (acc.len() / 2 - 1) as f64;
    let mut wrong = false;
    match w {
        Some(w) => {
            for (&xi, &wi) in x.iter().zip(w) {
                wrong |= !(0.0..f64::INFINITY).contains(&wi);
                let pos = (xi - lo) * inv;
                if !(pos >= 0.0 && pos <= last) {
                    wrong |= !xi.is_finite();
                    continue;
                }
                let k = pos as usize; // floor, pos >= 0; k = last only when t = 0
                let t = pos - k as f64;
                let a = &mut acc[2 * k..2 * k + 2];
                a[0] += wi;
                a[1] += wi * t;
            }
        }
        None => {
            for &xi in x {
                let pos = (xi - lo) * inv;
                if !(pos >= 0.0 && pos <= last) {
                    wrong |= !xi.is_finite();
                    continue;
                }
                let k = pos as usize;
                let t = pos - k as f64;
                let a = &mut acc[2 * k..2 * k + 2];
                a[0] += 1.0;
                a[1] += t;
            }
        }
    }
    if wrong {
        bad.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// [`linear_bin`] with the data checks folded into the same pass: `w = None` means every
/// weight equals `wu`. Returns the bins and whether every coordinate was finite and every
/// weight finite and non-negative (when not, the bins are meaningless). Allocates 2·nb
/// values per thread and nb for the result.
pub fn linear_bin_checked(
    x: &[f64],
    w: Option<&[f64]>,
    wu: f64,
    lo: f64,
    delta: f64,
    nb: usize,
    stop: &AtomicBool,
) -> Result<(Vec<f64>, bool)> {
    if nb == 0 {
        return Ok((Vec::new(), true));
    }
    let inv = 1.0 / delta;
    let bad = AtomicBool::new(false);
    let nb2 = crate::core::error::checked_size(nb, 2, "n_points")?;
    let acc = accumulate(x.len(), nb2, CHUNK, stop, |s, e, acc| {
        bin_chunk_pairs(&x[s..e], w.map(|w| &w[s..e]), lo, inv, acc, &bad)
    })?;
    let scale = if w.is_some() { 1.0 } else { wu };
    let mut bins = try_vec(nb, 0.0f64, "n_points")?;
    let mut carry = 0.0;
    for (k, b) in bins.iter_mut().enumerate() {
        *b = scale * ((acc[2 * k] - acc[2 * k + 1]) + carry);
        carry = acc[2 * k + 1];
    }
    Ok((bins, !bad.load(std::sync::atomic::Ordering::Relaxed)))
}

/// Runs `bin(start, end, bins)` over the points `0..n` in chunks of `ch` and returns the
/// sum of what it added to `nbins` zeroed bins: serially into one array, or, when the
/// points outnumber the bins 2 to 1 and several threads are allowed, into one array per
/// thread added up in a fixed order (results do not depend on timing). Checks the stop
/// flag between chunks. Allocates `nbins` values per thread.
pub(crate) fn accumulate(
    n: usize,
    nbins: usize,
    ch: usize,
    stop: &AtomicBool,
    bin: impl Fn(usize, usize, &mut [f64]) + Sync,
) -> Result<Vec<f64>> {
    let mut bins = try_vec(nbins, 0.0f64, "n_points")?;
    let nthreads = threads::num_threads();
    // Per-thread bins pay off while the data outnumber the bins 2 to 1: merging costs
    // one add per bin, binning several scattered adds per point.
    if nthreads == 1 || n < 4 * ch || nbins > n / 2 {
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

#[allow(clippy::too_many_arguments)]
fn bin_chunk_nd(
    x: &[f64],
    w: Option<&[f64]>,
    wu: f64,
    lo: &[f64],
    delta: &[f64],
    nb: &[usize],
    bins: &mut [f64],
    bad: &AtomicBool,
) {
    let d = lo.len();
    let mut strides = [0usize; 3];
    let mut acc = 1usize;
    for a in (0..d).rev() {
        strides[a] = acc;
        acc *= nb[a];
    }
    let mut wrong = false;
    let (mut k, mut t) = ([0usize; 3], [0.0f64; 3]);
    'points: for (i, row) in x.chunks_exact(d).enumerate() {
        let wi = match w {
            Some(w) => {
                let v = w[i];
                wrong |= !(0.0..f64::INFINITY).contains(&v);
                v
            }
            None => wu,
        };
        for a in 0..d {
            let pos = (row[a] - lo[a]) / delta[a];
            // Points beyond the padded lattice are out of the kernel's reach: dropped.
            if !(pos >= 0.0 && pos <= (nb[a] - 1) as f64) {
                wrong |= !row[a].is_finite();
                continue 'points;
            }
            let ka = (pos as usize).min(nb[a] - 2);
            k[a] = ka;
            t[a] = pos - ka as f64;
        }
        if wi.is_nan() || wi <= 0.0 {
            continue;
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
    if wrong {
        bad.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// [`linear_bin_nd`] with optional weights (`None`: every weight `wu`) and the data
/// checks in the same pass: returns the bins and whether every coordinate was finite and
/// every weight finite and non-negative. `x` holds rows of d coordinates.
#[allow(clippy::too_many_arguments)]
pub fn linear_bin_nd_checked(
    x: &[f64],
    d: usize,
    w: Option<&[f64]>,
    wu: f64,
    lo: &[f64],
    delta: &[f64],
    nb: &[usize],
    stop: &AtomicBool,
) -> Result<(Vec<f64>, bool)> {
    let total = nb
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| {
            crate::core::error::Error::OutOfMemory("the bin lattice is too large".into())
        })?;
    let bad = AtomicBool::new(false);
    let n = x.len() / d;
    let bins = accumulate(n, total, CHUNK / 4, stop, |s, e, bins| {
        bin_chunk_nd(
            &x[s * d..e * d],
            w.map(|w| &w[s..e]),
            wu,
            lo,
            delta,
            nb,
            bins,
            &bad,
        )
    })?;
    Ok((bins, !bad.load(std::sync::atomic::Ordering::Relaxed)))
}

/// Linear binning in d = 2 or 3 dimensions onto the lattice lo_a + k_a·delta_a,
/// k_a < nb_a (each nb_a >= 2), row-major (the last axis fastest): a point splits its
/// weight over the 2^d corners of its cell, w·Π_a (t_a or 1 − t_a). `x` holds n rows of
/// d coordinates. Points outside the lattice or with zero weight are dropped. Allocates
/// the Π nb_a bins (and one copy per thread when the data outnumber the bins 2 to 1).
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
    let bad = AtomicBool::new(false);
    accumulate(w.len(), total, CHUNK / 4, stop, |s, e, bins| {
        bin_chunk_nd(
            &x[s * d..e * d],
            Some(&w[s..e]),
            0.0,
            lo,
            delta,
            nb,
            bins,
            &bad,
        )
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
