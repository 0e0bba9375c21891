//! Distance covariance and energy statistics bindings. Inputs are validated by
//! `divest/dcov.py`, which passes 2-D C-contiguous arrays of one dtype.

use numpy::{PyArray1, PyArray2, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;

use super::common::{array2, run, slice, to_py, with_points, with_slice, with_slices, Arr2};
use crate::core::dcov::{self, grad, perm, Method};
use crate::core::pairwise::Points;

/// The arrays of a list argument `name`, each C-contiguous float32 or float64.
fn extract_all<'py>(xs: &[Bound<'py, PyAny>], name: &str) -> PyResult<Vec<Arr2<'py>>> {
    xs.iter()
        .enumerate()
        .map(|(i, a)| Arr2::extract(a, &format!("{name}[{i}]")))
        .collect()
}

/// (dCov²(x, y), dCov²(x, x), dCov²(y, y)), V or U statistics.
#[pyfunction]
#[pyo3(signature = (x, y, exponent=1.0, unbiased=false, method="auto"))]
fn dcov_stats(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    exponent: f64,
    unbiased: bool,
    method: &str,
) -> PyResult<(f64, f64, f64)> {
    let method = Method::parse(method).map_err(to_py)?;
    let (xa, ya) = (Arr2::extract(x, "x")?, Arr2::extract(y, "y")?);
    let ((n, p), (m, q)) = (xa.shape(), ya.shape());
    let work = n.saturating_mul(n).saturating_mul(p + q + 8);
    let s = with_slices!(&xa, &ya, |xs, ys| {
        run(py, work, |stop| {
            dcov::dcov_stats(
                Points::new(xs, n, p)?,
                Points::new(ys, m, q)?,
                exponent,
                unbiased,
                method,
                stop,
            )
        })?
    });
    Ok((s.cov, s.var_x, s.var_y))
}

/// U-statistic products (xx, yy, zz, xy, xz, yz) / n(n − 3) of three samples.
#[pyfunction]
#[pyo3(signature = (x, y, z, exponent=1.0))]
fn dcov_u_products3(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    z: &Bound<'_, PyAny>,
    exponent: f64,
) -> PyResult<[f64; 6]> {
    let arrs = [
        Arr2::extract(x, "x")?,
        Arr2::extract(y, "y")?,
        Arr2::extract(z, "z")?,
    ];
    let dsum: usize = arrs.iter().map(|a| a.shape().1).sum();
    let n = arrs[0].shape().0;
    let work = n.saturating_mul(n).saturating_mul(dsum + 12);
    with_points!(&arrs, |pts| run(py, work, |stop| {
        dcov::u_products3(pts[0], pts[1], pts[2], exponent, stop)
    }))
}

/// Energy distance between two samples (V or U statistic).
#[pyfunction]
#[pyo3(signature = (x, y, exponent=1.0, unbiased=false))]
fn energy_distance(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    exponent: f64,
    unbiased: bool,
) -> PyResult<f64> {
    let (xa, ya) = (Arr2::extract(x, "x")?, Arr2::extract(y, "y")?);
    let ((n, p), (m, q)) = (xa.shape(), ya.shape());
    let work = (n + m).saturating_mul(n + m).saturating_mul(p + 8);
    with_slices!(&xa, &ya, |xs, ys| {
        run(py, work, |stop| {
            dcov::energy_distance(
                Points::new(xs, n, p)?,
                Points::new(ys, m, q)?,
                exponent,
                unbiased,
                stop,
            )
        })
    })
}

/// Σ_ij |x_i − y_j|^α over all pairs of two float64 point sets as given (one block pair of a
/// distributed energy distance; the caller centres the blocks on one common vector).
#[pyfunction]
#[pyo3(signature = (x, y, exponent))]
fn energy_pair_sum(
    py: Python<'_>,
    x: numpy::PyReadonlyArray2<'_, f64>,
    y: numpy::PyReadonlyArray2<'_, f64>,
    exponent: f64,
) -> PyResult<f64> {
    use numpy::PyUntypedArrayMethods;
    let (xs, ys) = (x.as_slice()?, y.as_slice()?);
    let ((n, p), (m, q)) = ((x.shape()[0], x.shape()[1]), (y.shape()[0], y.shape()[1]));
    let work = n.saturating_mul(m).saturating_mul(p + 8);
    run(py, work, |stop| {
        dcov::energy_pair_sum(
            Points::new(xs, n, p)?,
            Points::new(ys, m, q)?,
            exponent,
            stop,
        )
    })
}

/// Row sums Σ_j |r_i − c_j|^α of float64 row points against column points (`same`: the
/// same block, diagonal skipped): one block pair of a distributed dCov's first pass.
#[pyfunction]
#[pyo3(signature = (rows, cols, exponent, same))]
fn dcov_cross_row_sums<'py>(
    py: Python<'py>,
    rows: numpy::PyReadonlyArray2<'py, f64>,
    cols: numpy::PyReadonlyArray2<'py, f64>,
    exponent: f64,
    same: bool,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    use numpy::PyUntypedArrayMethods;
    let (rs, cs) = (rows.as_slice()?, cols.as_slice()?);
    let ((n, p), (m, q)) = (
        (rows.shape()[0], rows.shape()[1]),
        (cols.shape()[0], cols.shape()[1]),
    );
    let work = n.saturating_mul(m).saturating_mul(p + 8);
    let out = run(py, work, |stop| {
        dcov::cross_row_sums(
            Points::new(rs, n, p)?,
            Points::new(cs, m, q)?,
            exponent,
            same,
            stop,
        )
    })?;
    Ok(PyArray1::from_vec(py, out))
}

/// (Σ A·B, Σ A·A, Σ B·B) over one block pair (I, J) of a distributed dCov: float64 points
/// of x and y in each block, their row sums against the whole samples, the totals of all
/// row sums and n.
#[pyfunction]
#[pyo3(signature = (xi, xj, yi, yj, rxi, rxj, ryi, ryj, totals, n, exponent, unbiased, same))]
#[allow(clippy::too_many_arguments)]
fn dcov_block_products<'py>(
    py: Python<'py>,
    xi: numpy::PyReadonlyArray2<'py, f64>,
    xj: numpy::PyReadonlyArray2<'py, f64>,
    yi: numpy::PyReadonlyArray2<'py, f64>,
    yj: numpy::PyReadonlyArray2<'py, f64>,
    rxi: numpy::PyReadonlyArray1<'py, f64>,
    rxj: numpy::PyReadonlyArray1<'py, f64>,
    ryi: numpy::PyReadonlyArray1<'py, f64>,
    ryj: numpy::PyReadonlyArray1<'py, f64>,
    totals: (f64, f64),
    n: usize,
    exponent: f64,
    unbiased: bool,
    same: bool,
) -> PyResult<(f64, f64, f64)> {
    use numpy::PyUntypedArrayMethods;
    let shape = |a: &numpy::PyReadonlyArray2<'py, f64>| (a.shape()[0], a.shape()[1]);
    let (sxi, sxj, syi, syj) = (shape(&xi), shape(&xj), shape(&yi), shape(&yj));
    let (dxi, dxj, dyi, dyj) = (
        xi.as_slice()?,
        xj.as_slice()?,
        yi.as_slice()?,
        yj.as_slice()?,
    );
    let (rxi, rxj, ryi, ryj) = (
        rxi.as_slice()?,
        rxj.as_slice()?,
        ryi.as_slice()?,
        ryj.as_slice()?,
    );
    let work = sxi
        .0
        .saturating_mul(sxj.0)
        .saturating_mul(sxi.1 + syi.1 + 8);
    let s = run(py, work, |stop| {
        fn blk<'a>(
            data: &'a [f64],
            rows: &'a [f64],
            (k, d): (usize, usize),
        ) -> crate::core::error::Result<dcov::CentredBlock<'a>> {
            Points::new(data, k, d).map(|p| dcov::CentredBlock { p, rows })
        }
        dcov::dcov_block_products(
            (blk(dxi, rxi, sxi)?, blk(dxj, rxj, sxj)?),
            (blk(dyi, ryi, syi)?, blk(dyj, ryj, syj)?),
            totals,
            n,
            exponent,
            unbiased,
            same,
            stop,
        )
    })?;
    Ok((s[0], s[1], s[2]))
}

/// Distance covariance permutation test: (n·dCov²_V, permutation statistics).
/// `first`: index of the first resample (resample r always draws stream (seed, r), so
/// ranges of resamples computed apart concatenate to the null of one call).
#[pyfunction]
#[pyo3(signature = (x, y, exponent, n_resamples, seed, first=0))]
fn dcov_perm_test<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    exponent: f64,
    n_resamples: usize,
    seed: u64,
    first: u64,
) -> PyResult<(f64, Bound<'py, PyArray1<f64>>)> {
    let (xa, ya) = (Arr2::extract(x, "x")?, Arr2::extract(y, "y")?);
    let ((n, p), (m, q)) = (xa.shape(), ya.shape());
    let work = n
        .saturating_mul(n)
        .saturating_mul(n_resamples.saturating_add(p + q + 1));
    let out = with_slices!(&xa, &ya, |xs, ys| {
        run(py, work, |stop| {
            perm::dcov_test_from(
                Points::new(xs, n, p)?,
                Points::new(ys, m, q)?,
                exponent,
                first,
                n_resamples,
                seed,
                stop,
            )
        })?
    });
    Ok((out.statistic, PyArray1::from_vec(py, out.null)))
}

/// k-sample energy permutation test on pooled points grouped by `sizes`; `first` as for
/// `dcov_perm_test`.
#[pyfunction]
#[pyo3(signature = (z, sizes, exponent, n_resamples, seed, first=0))]
fn energy_perm_test<'py>(
    py: Python<'py>,
    z: &Bound<'py, PyAny>,
    sizes: Vec<usize>,
    exponent: f64,
    n_resamples: usize,
    seed: u64,
    first: u64,
) -> PyResult<(f64, Bound<'py, PyArray1<f64>>)> {
    let za = Arr2::extract(z, "z")?;
    let (n, d) = za.shape();
    let work = n
        .saturating_mul(n)
        .saturating_mul(n_resamples.saturating_add(d + 1));
    let out = with_slice!(&za, |zs| {
        run(py, work, |stop| {
            perm::energy_test_from(
                Points::new(zs, n, d)?,
                &sizes,
                exponent,
                first,
                n_resamples,
                seed,
                stop,
            )
        })?
    });
    Ok((out.statistic, PyArray1::from_vec(py, out.null)))
}

/// One block pair of a distributed JdCov² (see `dcov::jdcov_block_sum`): per sample k,
/// float64 points of blocks I and J (`xi[k]`, `xj[k]`) and their row sums against the
/// whole sample (`ri[k]`, `rj[k]`), the totals of all row sums, and the factors `w`.
#[pyfunction]
#[pyo3(signature = (xi, xj, ri, rj, totals, w, c, n, exponent, unbiased, same))]
#[allow(clippy::too_many_arguments)]
fn jdcov_block_sum<'py>(
    py: Python<'py>,
    xi: Vec<numpy::PyReadonlyArray2<'py, f64>>,
    xj: Vec<numpy::PyReadonlyArray2<'py, f64>>,
    ri: Vec<numpy::PyReadonlyArray1<'py, f64>>,
    rj: Vec<numpy::PyReadonlyArray1<'py, f64>>,
    totals: Vec<f64>,
    w: Vec<f64>,
    c: f64,
    n: usize,
    exponent: f64,
    unbiased: bool,
    same: bool,
) -> PyResult<f64> {
    if xj.len() != xi.len() || ri.len() != xi.len() || rj.len() != xi.len() {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "xi, xj, ri and rj must have one entry per sample",
        ));
    }
    fn blocks<'a>(
        xs: &'a [numpy::PyReadonlyArray2<'_, f64>],
        rs: &'a [numpy::PyReadonlyArray1<'_, f64>],
    ) -> PyResult<Vec<dcov::CentredBlock<'a>>> {
        xs.iter()
            .zip(rs)
            .map(|(x, r)| {
                let p = Points::new(x.as_slice()?, x.shape()[0], x.shape()[1]).map_err(to_py)?;
                Ok(dcov::CentredBlock {
                    p,
                    rows: r.as_slice()?,
                })
            })
            .collect()
    }
    let (bi, bj) = (blocks(&xi, &ri)?, blocks(&xj, &rj)?);
    let (ni, nj) = (
        bi.first().map_or(0, |b| b.p.n),
        bj.first().map_or(0, |b| b.p.n),
    );
    let dsum: usize = bi.iter().map(|b| b.p.d + 8).sum();
    let work = ni.saturating_mul(nj).saturating_mul(dsum);
    run(py, work, |stop| {
        dcov::jdcov_block_sum(&bi, &bj, &totals, &w, c, n, exponent, unbiased, same, stop)
    })
}

/// Joint distance covariance of two or more samples of one dtype.
#[pyfunction]
#[pyo3(signature = (xs, c=1.0, exponent=1.0, unbiased=true, scale=false))]
fn jdcov(
    py: Python<'_>,
    xs: Vec<Bound<'_, PyAny>>,
    c: f64,
    exponent: f64,
    unbiased: bool,
    scale: bool,
) -> PyResult<f64> {
    let arrs = extract_all(&xs, "xs")?;
    let n = arrs.first().map_or(0, |a| a.shape().0);
    let dsum: usize = arrs.iter().map(|a| a.shape().1).sum();
    let work = n.saturating_mul(n).saturating_mul(dsum + 8 * arrs.len());
    with_points!(&arrs, |pts| run(py, work, |stop| {
        dcov::jdcov(&pts, c, exponent, unbiased, scale, stop)
    }))
}

/// (JdCov², ∂ JdCov² / ∂xs[0]) of two or more samples of one dtype; the gradient is an
/// (n, p_0) float64 array.
#[pyfunction]
#[pyo3(signature = (xs, c=1.0, exponent=1.0, unbiased=true, scale=false))]
fn jdcov_grad<'py>(
    py: Python<'py>,
    xs: Vec<Bound<'py, PyAny>>,
    c: f64,
    exponent: f64,
    unbiased: bool,
    scale: bool,
) -> PyResult<(f64, Bound<'py, PyArray2<f64>>)> {
    let arrs = extract_all(&xs, "xs")?;
    let (n, p) = arrs.first().map_or((0, 1), |a| a.shape());
    let dsum: usize = arrs.iter().map(|a| a.shape().1).sum();
    let work = n
        .saturating_mul(n)
        .saturating_mul(3 * dsum + 24 * arrs.len());
    let (v, g) = with_points!(&arrs, |pts| run(py, work, |stop| {
        grad::jdcov_grad(&pts, c, exponent, unbiased, scale, stop)
    })?);
    Ok((v, array2(py, g, n, p)?))
}

/// ∂ dCov²(x, y) / ∂x, an (n, p) float64 array.
#[pyfunction]
#[pyo3(signature = (x, y, exponent=1.0, unbiased=false))]
fn dcov_sqr_grad<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    exponent: f64,
    unbiased: bool,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let (xa, ya) = (Arr2::extract(x, "x")?, Arr2::extract(y, "y")?);
    let ((n, p), (m, q)) = (xa.shape(), ya.shape());
    let work = n.saturating_mul(n).saturating_mul(p + q + 8);
    let g = with_slices!(&xa, &ya, |xs, ys| {
        run(py, work, |stop| {
            grad::dcov_sqr_grad(
                Points::new(xs, n, p)?,
                Points::new(ys, m, q)?,
                exponent,
                unbiased,
                stop,
            )
        })?
    });
    array2(py, g, n, p)
}

/// Distance correlations between the rows of `xt` (p, n) (the columns of the user's X)
/// and those of `yt` (q, n), or between every pair of rows of `xt`: a (p, q) array.
#[pyfunction]
#[pyo3(signature = (xt, yt=None, exponent=1.0, unbiased=false))]
fn dcor_matrix<'py>(
    py: Python<'py>,
    xt: PyReadonlyArray2<'py, f64>,
    yt: Option<PyReadonlyArray2<'py, f64>>,
    exponent: f64,
    unbiased: bool,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let (p, n) = (xt.shape()[0], xt.shape()[1]);
    let xs = slice(&xt)?;
    let ys = match &yt {
        Some(a) => {
            if a.shape()[1] != n {
                return Err(pyo3::exceptions::PyValueError::new_err(
                    "X and Y must have the same number of observations (rows)",
                ));
            }
            Some((slice(a)?, a.shape()[0]))
        }
        None => None,
    };
    let q = ys.map_or(p, |(_, q)| q);
    let per_pair = if exponent == 1.0 {
        n.saturating_mul(64 - n.leading_zeros() as usize + 8)
    } else {
        n.saturating_mul(n).saturating_mul(8)
    };
    let work = p.saturating_mul(q).saturating_mul(per_pair);
    let m = run(py, work, |stop| {
        dcov::matrix::dcor_matrix(xs, p, ys, n, exponent, unbiased, stop)
    })?;
    array2(py, m, p, q)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(dcov_stats, m)?)?;
    m.add_function(wrap_pyfunction!(dcov_u_products3, m)?)?;
    m.add_function(wrap_pyfunction!(energy_distance, m)?)?;
    m.add_function(wrap_pyfunction!(dcov_perm_test, m)?)?;
    m.add_function(wrap_pyfunction!(energy_pair_sum, m)?)?;
    m.add_function(wrap_pyfunction!(jdcov_block_sum, m)?)?;
    m.add_function(wrap_pyfunction!(dcov_cross_row_sums, m)?)?;
    m.add_function(wrap_pyfunction!(dcov_block_products, m)?)?;
    m.add_function(wrap_pyfunction!(energy_perm_test, m)?)?;
    m.add_function(wrap_pyfunction!(jdcov, m)?)?;
    m.add_function(wrap_pyfunction!(dcov_sqr_grad, m)?)?;
    m.add_function(wrap_pyfunction!(jdcov_grad, m)?)?;
    m.add_function(wrap_pyfunction!(dcor_matrix, m)?)?;
    Ok(())
}
