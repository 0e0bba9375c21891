//! Distance correlation between every pair of 1-D columns (or every column of X with
//! every column of Y).
//!
//! Exponent 1 uses the exact O(n log n) path of [`fast1d`] with everything that depends on
//! one column only computed once per column: the median shift, the sort order, the row
//! sums Σ_j |x_i − x_j|, their total and the column's own dCov²(x, x). A pair then costs
//! one gather of the second column in the first one's order, one merge sort with the
//! signed running sums (S_ab), and one compensated dot product of the row sums, in four
//! length-n scratch vectors per task. Every intermediate is the one `fast1d::dcov_stats`
//! computes for that pair, so each entry equals [`super::dcov_stats`] bit for bit.
//!
//! Other exponents run the pairwise engine per pair (O(n²) time, O(n) memory), with each
//! column's centred copy, row sums and centring offsets computed once.
//!
//! Pairs run in parallel on divest's pool, one row of the output per task (results do not
//! depend on the thread count); the stop flag is polled before every pair.

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use super::fast1d::{self, Sum2, Terms, CHUNK};
use super::sums::Dd;
use super::{centred, centred_products, norm_factor, offsets, row_sums};
use crate::core::error::{invalid, Result};
use crate::core::pairwise::Points;
use crate::core::simd::{self, simd_fn, Fma};
use crate::core::threads;

/// What every pair with a column reuses (exponent 1).
struct Column {
    /// Median-shifted values, by original index.
    c: Vec<f64>,
    /// Original indices in ascending order of value (ties by index).
    order: Vec<u32>,
    /// Row sums Σ_j |c_i − c_j|, by original index.
    a: Vec<f64>,
    /// Σ_i a_i.
    s_a: Dd,
    /// dCov²(x, x).
    var: f64,
}

fn column(v: &[f64], unbiased: bool) -> Column {
    let n = v.len();
    let c = fast1d::median_shifted(v);
    let s = fast1d::sorted(&c);
    let a = fast1d::row_sums(&s);
    let order: Vec<u32> = s.iter().map(|p| p.1).collect();
    drop(s);
    // The same chunked sums as `fast1d::dcov_stats` (entries 0, 2, 4, 7 are Σc, Σa, Σa²,
    // Σc² whatever the second pair of arguments).
    let [sx, _, s_a, _, aa, _, _, sx2, _] = fast1d::moments(&c, &c, &a, &a);
    let nf = n as f64;
    let sxx = sx2.mul_f64(2.0 * nf) - (sx * sx).mul_f64(2.0);
    let var = fast1d::combine(
        &Terms {
            s_ab: sxx,
            ab: aa,
            s_a,
            s_b: s_a,
        },
        n,
        unbiased,
    );
    Column {
        c,
        order,
        a,
        s_a,
        var,
    }
}

#[inline(always)]
fn dot_body<M: Fma>(a: &[f64], b: &[f64]) -> Sum2 {
    let mut s = Sum2::default();
    for (&u, &v) in a.iter().zip(b) {
        s.add_prod::<M>(u, v);
    }
    s
}

simd_fn!(
    fn dot_chunk => dot_body(a: &[f64], b: &[f64]) -> Sum2
);

/// Σ a_i b_i as `fast1d::moments` sums it (same chunks, combined in the same order).
fn dot(level: simd::Level, a: &[f64], b: &[f64]) -> Dd {
    let mut out = Dd::default();
    for (ca, cb) in a.chunks(CHUNK).zip(b.chunks(CHUNK)) {
        out = out + dot_chunk(level, ca, cb).dd();
    }
    out
}

/// Four length-n vectors per task.
struct Scratch {
    xs: Vec<f64>,
    ys: Vec<f64>,
    tx: Vec<f64>,
    ty: Vec<f64>,
}

impl Scratch {
    fn new(n: usize) -> Self {
        Scratch {
            xs: vec![0.0; n],
            ys: vec![0.0; n],
            tx: vec![0.0; n],
            ty: vec![0.0; n],
        }
    }
}

/// dCov²(x, y) of two prepared columns.
fn pair_cov(
    x: &Column,
    y: &Column,
    unbiased: bool,
    sc: &mut Scratch,
    stop: &AtomicBool,
) -> Result<f64> {
    let n = x.c.len();
    for ((xs, ys), &i) in sc.xs.iter_mut().zip(sc.ys.iter_mut()).zip(&x.order) {
        *xs = x.c[i as usize];
        *ys = y.c[i as usize];
    }
    let level = simd::level();
    let (half, _) = fast1d::run(
        level,
        fast1d::plain_max(n),
        &mut sc.xs,
        &mut sc.ys,
        &mut sc.tx,
        &mut sc.ty,
        stop,
    )?;
    let ab = dot(level, &x.a, &y.a);
    Ok(fast1d::combine(
        &Terms {
            s_ab: half.mul_f64(2.0),
            ab,
            s_a: x.s_a,
            s_b: y.s_a,
        },
        n,
        unbiased,
    ))
}

/// The correlation from (dCov²(x, y), dCov²(x, x), dCov²(y, y)), exactly as
/// `divest.dcor` (V: the square root, clamped to [0, 1]) or `divest.dcor_sqr(...,
/// unbiased=True)` (clamped to [−1, 1]) form it; 0 when a variance is 0.
fn correlation(cov: f64, vx: f64, vy: f64, unbiased: bool) -> f64 {
    let den = (vx * vy).abs().sqrt();
    let r = if den > 0.0 { cov / den } else { 0.0 };
    if unbiased {
        r.clamp(-1.0, 1.0)
    } else {
        r.clamp(0.0, 1.0).sqrt()
    }
}

/// Prepared columns of the general-exponent path.
struct EngineColumn {
    c: Vec<f64>,
    off: Vec<f64>,
    var: f64,
}

fn engine_column(
    v: &[f64],
    alpha: f64,
    unbiased: bool,
    stop: &AtomicBool,
) -> Result<EngineColumn> {
    let n = v.len();
    let c = centred(Points::new(v, n, 1)?)?;
    let p = Points::new(&c, n, 1)?;
    let rows = row_sums(p, alpha, stop)?;
    let off = offsets(&rows, unbiased);
    let s = centred_products(&[p], &[&off], alpha, unbiased, vec![(0, 0)], stop)?;
    let var = s[0] * norm_factor(n, unbiased);
    Ok(EngineColumn { c, off, var })
}

fn engine_cov(
    x: &EngineColumn,
    y: &EngineColumn,
    alpha: f64,
    unbiased: bool,
    stop: &AtomicBool,
) -> Result<f64> {
    let n = x.c.len();
    let px = Points::new(&x.c, n, 1)?;
    let py = Points::new(&y.c, n, 1)?;
    let s = centred_products(
        &[px, py],
        &[&x.off, &y.off],
        alpha,
        unbiased,
        vec![(0, 1)],
        stop,
    )?;
    Ok(s[0] * norm_factor(n, unbiased))
}

/// Fills `out` (p × q, row-major): entry (i, j) is `cov(i, j)` turned into a correlation.
/// With `sym` (Y is X) only j > i is computed; the diagonal is 1 for a column of positive
/// variance and 0 for a constant one, and the lower triangle mirrors the upper one.
fn fill<S, C>(
    out: &mut [f64],
    q: usize,
    sym: bool,
    var_x: &[f64],
    var_y: &[f64],
    unbiased: bool,
    scratch: impl Fn() -> S + Sync + Send,
    cov: C,
    stop: &AtomicBool,
) -> Result<()>
where
    C: Fn(&mut S, usize, usize) -> Result<f64> + Sync + Send,
{
    if q == 0 {
        return Ok(());
    }
    out.par_chunks_mut(q)
        .enumerate()
        .try_for_each_init(&scratch, |sc, (i, row)| -> Result<()> {
            let start = if sym { i + 1 } else { 0 };
            for (j, o) in row.iter_mut().enumerate().skip(start) {
                threads::check(stop)?;
                *o = correlation(cov(sc, i, j)?, var_x[i], var_y[j], unbiased);
            }
            Ok(())
        })?;
    if sym {
        for i in 0..q {
            out[i * q + i] = if var_x[i] > 0.0 { 1.0 } else { 0.0 };
            for j in 0..i {
                out[i * q + j] = out[j * q + i];
            }
        }
    }
    Ok(())
}

/// Distance correlations between the columns of `x` (`p` columns of `n` values, each
/// contiguous) and those of `y` (`Some((values, q))`, columns likewise), or between every
/// pair of columns of `x` (`None`). Returns the p × q (or p × p) matrix, row-major: the V
/// distance correlation (as `divest.dcor`), or with `unbiased` the bias-corrected squared
/// distance correlation (as `divest.dcor_sqr(..., unbiased=True)`, clamped to [−1, 1]).
/// A constant column has correlation 0 with everything (itself included).
///
/// Memory: 20 bytes per value of x and y (exponent 1: shifted values, sort order, row
/// sums) or 24 (other exponents), plus 32·n bytes per task and the output.
pub fn dcor_matrix(
    x: &[f64],
    p: usize,
    y: Option<(&[f64], usize)>,
    n: usize,
    exponent: f64,
    unbiased: bool,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    super::check_exponent(exponent)?;
    if n == 0 {
        return Err(invalid!("the samples need at least one observation"));
    }
    if unbiased && n < 4 {
        return Err(invalid!(
            "the bias-corrected statistic needs at least 4 observations; got {n}"
        ));
    }
    if n > u32::MAX as usize {
        return Err(invalid!("at most {} observations are supported", u32::MAX));
    }
    if x.len() != p * n || y.is_some_and(|(v, q)| v.len() != q * n) {
        return Err(invalid!("column data have the wrong length"));
    }
    let q = y.map_or(p, |(_, q)| q);
    let sym = y.is_none();
    let mut out = crate::core::error::try_vec(
        crate::core::error::checked_size(p, q, "the correlation matrix")?,
        0.0f64,
        "the correlation matrix",
    )?;
    threads::install(|| -> Result<()> {
        if exponent == 1.0 {
            let prep = |v: &[f64], k: usize| -> Result<Vec<Column>> {
                (0..k)
                    .into_par_iter()
                    .map(|j| {
                        threads::check(stop)?;
                        Ok(column(&v[j * n..(j + 1) * n], unbiased))
                    })
                    .collect()
            };
            let cx = prep(x, p)?;
            let cy = match y {
                Some((v, q)) => Some(prep(v, q)?),
                None => None,
            };
            let cy_ref = cy.as_ref().unwrap_or(&cx);
            let vx: Vec<f64> = cx.iter().map(|c| c.var).collect();
            let vy: Vec<f64> = cy_ref.iter().map(|c| c.var).collect();
            fill(
                &mut out,
                q,
                sym,
                &vx,
                &vy,
                unbiased,
                || Scratch::new(n),
                |sc, i, j| pair_cov(&cx[i], &cy_ref[j], unbiased, sc, stop),
                stop,
            )
        } else {
            let prep = |v: &[f64], k: usize| -> Result<Vec<EngineColumn>> {
                (0..k)
                    .map(|j| engine_column(&v[j * n..(j + 1) * n], exponent, unbiased, stop))
                    .collect()
            };
            let cx = prep(x, p)?;
            let cy = match y {
                Some((v, q)) => Some(prep(v, q)?),
                None => None,
            };
            let cy_ref = cy.as_ref().unwrap_or(&cx);
            let vx: Vec<f64> = cx.iter().map(|c| c.var).collect();
            let vy: Vec<f64> = cy_ref.iter().map(|c| c.var).collect();
            fill(
                &mut out,
                q,
                sym,
                &vx,
                &vy,
                unbiased,
                || (),
                |_, i, j| engine_cov(&cx[i], &cy_ref[j], exponent, unbiased, stop),
                stop,
            )
        }
    })??;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::dcov::{dcov_stats, Method};
    use crate::core::testing::sym_vec;

    fn reference(x: &[f64], y: &[f64], alpha: f64, unbiased: bool) -> f64 {
        let stop = AtomicBool::new(false);
        let n = x.len();
        let s = dcov_stats(
            Points::new(x, n, 1).unwrap(),
            Points::new(y, n, 1).unwrap(),
            alpha,
            unbiased,
            Method::Auto,
            &stop,
        )
        .unwrap();
        correlation(s.cov, s.var_x, s.var_y, unbiased)
    }

    #[test]
    fn entries_equal_pairwise_calls() {
        let stop = AtomicBool::new(false);
        for &n in &[4usize, 17, 100, 300] {
            let p = 5;
            let mut x = Vec::new();
            let base = sym_vec(n as u64, n);
            for j in 0..p {
                let z = sym_vec(100 + j as u64, n);
                x.extend(
                    z.iter()
                        .zip(&base)
                        .map(|(a, b)| ((a + (j as f64) * 0.3 * b * b) * 8.0).round() / 8.0),
                );
            }
            // A constant column.
            x[2 * n..3 * n].iter_mut().for_each(|v| *v = 1.5);
            for unbiased in [false, true] {
                for alpha in [1.0, 0.5] {
                    let m = dcor_matrix(&x, p, None, n, alpha, unbiased, &stop).unwrap();
                    for i in 0..p {
                        for j in 0..p {
                            let got = m[i * p + j];
                            let (ci, cj) = (&x[i * n..(i + 1) * n], &x[j * n..(j + 1) * n]);
                            if i == j {
                                assert_eq!(got, if i == 2 { 0.0 } else { 1.0 });
                                continue;
                            }
                            let want = reference(ci, cj, alpha, unbiased);
                            if alpha == 1.0 {
                                assert_eq!(got.to_bits(), want.to_bits(), "n={n} {i},{j}");
                            } else {
                                assert!((got - want).abs() <= 1e-12, "{got} vs {want}");
                            }
                        }
                    }
                    // Rectangular: columns 1..3 against 3..5.
                    let m2 = dcor_matrix(
                        &x[n..3 * n],
                        2,
                        Some((&x[3 * n..], 2)),
                        n,
                        alpha,
                        unbiased,
                        &stop,
                    )
                    .unwrap();
                    for i in 0..2 {
                        for j in 0..2 {
                            assert_eq!(m2[i * 2 + j], m[(1 + i) * p + 3 + j]);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn threads_do_not_change_results_and_stop_is_honoured() {
        let stop = AtomicBool::new(false);
        let (n, p) = (200, 9);
        let x: Vec<f64> = sym_vec(3, n * p);
        let a = dcor_matrix(&x, p, None, n, 1.0, false, &stop).unwrap();
        threads::set_num_threads(1).unwrap();
        let b = dcor_matrix(&x, p, None, n, 1.0, false, &stop).unwrap();
        threads::set_num_threads(2).unwrap();
        assert_eq!(a, b);
        let stopped = AtomicBool::new(true);
        assert!(dcor_matrix(&x, p, None, n, 1.0, false, &stopped).is_err());
        assert!(dcor_matrix(&x, p, None, 3, 1.0, true, &stop).is_err());
        assert!(dcor_matrix(&x, p, None, n, 2.0, false, &stop).is_err());
    }
}
