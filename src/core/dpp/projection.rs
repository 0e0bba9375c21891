//! Exact sampling of projection DPPs with kernel K = U Uᵀ, U (n×m) with orthonormal
//! columns: the chain rule (batched over samples so the O(n m²) work is a GEMM) and a
//! rejection sampler that proposes from the leverage scores (O(m³ log m) after O(n m)).

use std::sync::atomic::AtomicBool;

use super::rng::Rng;
use crate::core::error::{invalid, Result};
use crate::core::simd::{self, Fma};
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

/// Samples per chain-rule task: the n×m by m×B product is then a real GEMM.
pub const CHAIN_BATCH: usize = 8;

/// Residual norm below which a direction counts as already spanned (relative to 1, the
/// norm of a row of an orthonormal U is at most 1).
const TINY: f64 = 1e-10;

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

/// Orthonormal basis (rows, in R^m) of the span of the rows of U picked so far.
pub(crate) struct Basis {
    m: usize,
    q: Vec<f64>,
    len: usize,
    work: Vec<f64>,
}

impl Basis {
    pub(crate) fn new(m: usize) -> Basis {
        Basis {
            m,
            q: vec![0.0; m * m],
            len: 0,
            work: vec![0.0; m],
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The newest basis vector.
    pub(crate) fn last(&self) -> &[f64] {
        &self.q[(self.len - 1) * self.m..self.len * self.m]
    }

    /// Σ_l (q_l · row)²: the part of ‖row‖² inside the span.
    pub(crate) fn captured(&self, row: &[f64]) -> f64 {
        let mut s = 0.0;
        for l in 0..self.len {
            let c = dot(&self.q[l * self.m..(l + 1) * self.m], row);
            s += c * c;
        }
        s
    }

    /// Appends the direction of `row` orthogonal to the span, by Gram–Schmidt done twice
    /// (one pass loses orthogonality when the residual is small; two always suffice).
    /// Returns false, leaving the basis unchanged, when the residual is numerically zero.
    pub(crate) fn push(&mut self, row: &[f64]) -> bool {
        if self.len >= self.m {
            return false;
        }
        let m = self.m;
        let v = &mut self.work;
        v.copy_from_slice(row);
        let norm0 = dot(v, v).sqrt();
        for _pass in 0..2 {
            for l in 0..self.len {
                let ql = &self.q[l * m..(l + 1) * m];
                let c = dot(ql, v);
                for (vi, qi) in v.iter_mut().zip(ql) {
                    *vi -= c * qi;
                }
            }
        }
        let nv = dot(v, v).sqrt();
        if nv.is_nan() || nv <= TINY * norm0.max(1e-300) || nv <= 1e-150 {
            return false;
        }
        let inv = 1.0 / nv;
        let dst = &mut self.q[self.len * m..(self.len + 1) * m];
        for (d, x) in dst.iter_mut().zip(v.iter()) {
            *d = x * inv;
        }
        self.len += 1;
        true
    }
}

/// Squared row norms (leverage scores) of U.
pub fn leverage(u: &[f64], n: usize, m: usize) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let r = &u[i * m..(i + 1) * m];
            dot(r, r)
        })
        .collect()
}

/// Largest entry of |UᵀU - I|, exactly (a Gram matrix) when n m² ≤ 2·10⁷, else estimated
/// from four fixed Gaussian-like probes x as max |UᵀU x - x| / max |x| (cheap: 8 n m).
pub fn orthonormality_error(u: &[f64], n: usize, m: usize) -> Result<f64> {
    if u.len() != n * m {
        return Err(invalid!("U has {} values, expected {n}*{m}", u.len()));
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
        return Ok(err);
    }
    let mut rng = Rng::stream(0x5EED, 0);
    let mut err = 0.0f64;
    let mut y = vec![0.0f64; n];
    let mut z = vec![0.0f64; m];
    for _ in 0..4 {
        // Sums of uniforms are close enough to Gaussian for a probe and never tiny.
        let x: Vec<f64> = (0..m)
            .map(|_| (0..4).map(|_| rng.uniform() - 0.5).sum::<f64>())
            .collect();
        let xmax = x.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        for (yi, row) in y.iter_mut().zip(u.chunks_exact(m)) {
            *yi = dot(row, &x);
        }
        z.iter_mut().for_each(|v| *v = 0.0);
        for (yi, row) in y.iter().zip(u.chunks_exact(m)) {
            for (zj, r) in z.iter_mut().zip(row) {
                *zj += yi * r;
            }
        }
        for (zj, xj) in z.iter().zip(&x) {
            let e = (zj - xj).abs() / xmax;
            err = err.max(if e.is_nan() { f64::INFINITY } else { e });
        }
    }
    Ok(err)
}

/// An index drawn with probability proportional to the non-negative `w`, normalised by
/// the actual total mass; None when the mass is zero.
fn pick(w: &[f64], rng: &mut Rng) -> Option<usize> {
    let total: f64 = w.iter().sum();
    if total.is_nan() || total <= 0.0 || !total.is_finite() {
        return None;
    }
    let t = rng.uniform() * total;
    let mut acc = 0.0;
    let mut last = None;
    for (i, &x) in w.iter().enumerate() {
        if x > 0.0 {
            acc += x;
            last = Some(i);
            if t < acc {
                return Some(i);
            }
        }
    }
    last // rounding pushed t past the running sum: the last item with mass
}

fn rank_error(m: usize) -> crate::core::Error {
    invalid!(
        "U has numerical rank below its {m} columns (the residual mass vanished before {m} \
         items were drawn); U must have orthonormal columns"
    )
}

/// Chain rule for `rngs.len()` samples of one kernel at once; writes sample s (in draw
/// order) to `out[s*m..(s+1)*m]`. `lev` are U's leverage scores.
pub(crate) fn chain_batch(
    u: &[f64],
    n: usize,
    m: usize,
    lev: &[f64],
    rngs: &mut [Rng],
    out: &mut [usize],
    stop: &AtomicBool,
) -> Result<()> {
    let b = rngs.len();
    // d[s*n + i]: the residual mass of item i for sample s (the conditional kernel's diagonal).
    let mut d = Vec::with_capacity(b * n);
    for _ in 0..b {
        d.extend_from_slice(lev);
    }
    let mut bases: Vec<Basis> = (0..b).map(|_| Basis::new(m)).collect();
    let mut w = vec![0.0f64; b * m];
    let mut c = vec![0.0f64; b * n];
    for step in 0..m {
        threads::check(stop)?;
        for s in 0..b {
            let ds = &mut d[s * n..(s + 1) * n];
            let i = loop {
                let i = pick(ds, &mut rngs[s]).ok_or_else(|| rank_error(m))?;
                if bases[s].push(&u[i * m..(i + 1) * m]) {
                    break i;
                }
                ds[i] = 0.0; // its residual was rounding noise: it lies in the span
            };
            out[s * m + step] = i;
            w[s * m..(s + 1) * m].copy_from_slice(bases[s].last());
        }
        if step + 1 == m {
            break;
        }
        if b == 1 {
            matvec(u, m, &w, &mut c);
        } else {
            // SAFETY: U is n×m row-major (rs m, cs 1); W holds b vectors of length m, read
            // as the m×b matrix with rs 1, cs m; C is n×b with rs 1, cs n. All buffers have
            // exactly these sizes and C is a distinct allocation.
            unsafe {
                matrixmultiply::dgemm(
                    n,
                    m,
                    b,
                    1.0,
                    u.as_ptr(),
                    m as isize,
                    1,
                    w.as_ptr(),
                    1,
                    m as isize,
                    0.0,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                );
            }
        }
        for s in 0..b {
            let ds = &mut d[s * n..(s + 1) * n];
            for (di, ci) in ds.iter_mut().zip(&c[s * n..(s + 1) * n]) {
                *di = (*di - ci * ci).max(0.0);
            }
            for &i in &out[s * m..s * m + step + 1] {
                ds[i] = 0.0; // picked items have zero residual exactly, not rounding noise
            }
        }
    }
    Ok(())
}

/// Rows per parallel task of [`matvec`].
const ROW_BLOCK: usize = 512;

/// c = U w for row-major U (n×m). Row blocks run in parallel when the caller is on
/// divest's pool; every c_i is one dot product, so the partition never changes a bit.
fn matvec(u: &[f64], m: usize, w: &[f64], c: &mut [f64]) {
    use rayon::prelude::*;
    let level = simd::level();
    let block = |(bi, cb): (usize, &mut [f64])| {
        let rows = &u[bi * ROW_BLOCK * m..(bi * ROW_BLOCK + cb.len()) * m];
        matvec_at(level, rows, m, w, cb);
    };
    if c.len() * m < 1 << 16 || rayon::current_thread_index().is_none() {
        c.chunks_mut(ROW_BLOCK).enumerate().for_each(block);
    } else {
        c.par_chunks_mut(ROW_BLOCK).enumerate().for_each(block);
    }
}

#[inline(always)]
fn matvec_rows<M: Fma>(rows: &[f64], m: usize, w: &[f64], c: &mut [f64]) {
    for (ci, row) in c.iter_mut().zip(rows.chunks_exact(m)) {
        let mut acc = [0.0f64; 8];
        let (ra, wa) = (row.chunks_exact(8), w.chunks_exact(8));
        let (rt, wt) = (ra.remainder(), wa.remainder());
        for (x, y) in ra.zip(wa) {
            for l in 0..8 {
                acc[l] = M::ma(x[l], y[l], acc[l]);
            }
        }
        let mut tail = 0.0;
        for (x, y) in rt.iter().zip(wt) {
            tail = M::ma(*x, *y, tail);
        }
        *ci = ((acc[0] + acc[4]) + (acc[1] + acc[5]))
            + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
            + tail;
    }
}

fn matvec_at(level: simd::Level, rows: &[f64], m: usize, w: &[f64], c: &mut [f64]) {
    struct Task<'a> {
        rows: &'a [f64],
        m: usize,
        w: &'a [f64],
        c: &'a mut [f64],
    }
    impl simd::SimdTask for Task<'_> {
        type Output = ();
        #[inline(always)]
        fn run<M: Fma>(self) {
            matvec_rows::<M>(self.rows, self.m, self.w, self.c)
        }
    }
    simd::dispatch(level, Task { rows, m, w, c })
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
    let mut basis = Basis::new(m);
    let mut tries: u64 = 0;
    // Expected proposals are m·H_m; this cap is only reached when U is not orthonormal.
    let cap = 200 * (m as u64 + 1) * (m as u64 + 10);
    while basis.len() < m {
        tries += 1;
        if tries.is_multiple_of(4096) {
            threads::check(stop)?;
        }
        if tries > cap {
            return Err(rank_error(m));
        }
        let i = draw_cdf(cdf, rng);
        let li = lev[i];
        if li.is_nan() || li <= 0.0 {
            continue;
        }
        let row = &u[i * m..(i + 1) * m];
        let resid = li - basis.captured(row);
        // Accept with probability residual / leverage: accepted draws are ∝ the residual.
        if rng.uniform() * li < resid {
            let j = basis.len();
            if out[..j].contains(&i) {
                continue;
            }
            if basis.push(row) {
                out[j] = i;
            }
        }
    }
    Ok(())
}

/// Draws `n_samples` samples of the projection DPP with kernel U Uᵀ (U n×m row-major,
/// orthonormal columns). Returns n_samples×m indices, each sample sorted.
/// Memory: the output, U's leverage scores, and per task 8 residual vectors of length n.
pub fn sample_projection(
    u: &[f64],
    n: usize,
    m: usize,
    n_samples: usize,
    seed: u64,
    method: Method,
    stop: &AtomicBool,
) -> Result<Vec<usize>> {
    if u.len() != n * m {
        return Err(invalid!("U has {} values, expected {n}*{m}", u.len()));
    }
    if m == 0 || m > n {
        return Err(invalid!(
            "U must have between 1 and n = {n} columns; got {m}"
        ));
    }
    let lev = leverage(u, n, m);
    let mut out = vec![0usize; n_samples * m];
    match method.resolve(n, m) {
        Method::Rejection => {
            let cdf = cumsum(&lev);
            par_samples(&mut out, m, 1, |s0, chunk| {
                let mut rng = Rng::stream(seed, s0 as u64);
                rejection_one(u, m, &lev, &cdf, &mut rng, chunk, stop)
            })?;
        }
        _ => {
            par_samples(&mut out, m, CHAIN_BATCH, |s0, chunk| {
                let b = chunk.len() / m;
                let mut rngs: Vec<Rng> =
                    (0..b).map(|s| Rng::stream(seed, (s0 + s) as u64)).collect();
                chain_batch(u, n, m, &lev, &mut rngs, chunk, stop)
            })?;
        }
    }
    for s in out.chunks_mut(m) {
        s.sort_unstable();
    }
    Ok(out)
}

/// Runs `f(first sample index, output chunk)` over fixed chunks of `per` samples of
/// `width` values each, in parallel on divest's pool. The partition does not depend on
/// the thread count.
pub(crate) fn par_samples<T: Send>(
    out: &mut [T],
    width: usize,
    per: usize,
    f: impl Fn(usize, &mut [T]) -> Result<()> + Sync,
) -> Result<()> {
    use rayon::prelude::*;
    if width == 0 || out.is_empty() {
        return Ok(());
    }
    if out.len() / width <= per {
        // Still on the pool: a lone sample parallelises inside (see `matvec`).
        return threads::install(|| f(0, out))?;
    }
    threads::install(|| {
        out.par_chunks_mut(width * per)
            .enumerate()
            .try_for_each(|(c, chunk)| f(c * per, chunk))
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn det(a: &mut [f64], k: usize) -> f64 {
        let mut det = 1.0;
        for c in 0..k {
            let p = (c..k)
                .max_by(|&x, &y| a[x * k + c].abs().total_cmp(&a[y * k + c].abs()))
                .unwrap();
            if a[p * k + c] == 0.0 {
                return 0.0;
            }
            if p != c {
                for j in 0..k {
                    a.swap(p * k + j, c * k + j);
                }
                det = -det;
            }
            det *= a[c * k + c];
            for r in c + 1..k {
                let f = a[r * k + c] / a[c * k + c];
                for j in c..k {
                    a[r * k + j] -= f * a[c * k + j];
                }
            }
        }
        det
    }

    fn check_distribution(method: Method) {
        let (n, m) = (6, 2);
        let u = orthonormal(n, m, 3);
        let stop = AtomicBool::new(false);
        let ns = 30_000;
        let s = sample_projection(&u, n, m, ns, 11, method, &stop).unwrap();
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
            let a = sample_projection(&u, n, m, 20, 4, method, &stop).unwrap();
            let b = sample_projection(&u, n, m, 20, 4, method, &stop).unwrap();
            assert_eq!(a, b);
            let c = sample_projection(&u, n, m, 20, 5, method, &stop).unwrap();
            assert_ne!(a, c);
            for s in a.chunks(m) {
                assert!(s.windows(2).all(|w| w[0] < w[1]));
            }
        }
    }

    #[test]
    fn rejects_bad_shapes_and_rank() {
        let stop = AtomicBool::new(false);
        assert!(sample_projection(&[1.0; 5], 3, 2, 1, 0, Method::Chain, &stop).is_err());
        assert!(sample_projection(&[], 3, 0, 1, 0, Method::Chain, &stop).is_err());
        // Two identical columns: rank 1, the chain must fail cleanly, not loop.
        let u = vec![0.5; 8];
        assert!(sample_projection(&u, 4, 2, 3, 0, Method::Chain, &stop).is_err());
        assert!(sample_projection(&u, 4, 2, 3, 0, Method::Rejection, &stop).is_err());
    }
}
