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

/// Distance covariance permutation test: (n·dCov²_V, permutation statistics).
#[pyfunction]
#[pyo3(signature = (x, y, exponent, n_resamples, seed))]
fn dcov_perm_test<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    exponent: f64,
    n_resamples: usize,
    seed: u64,
) -> PyResult<(f64, Bound<'py, PyArray1<f64>>)> {
    let (xa, ya) = (Arr2::extract(x, "x")?, Arr2::extract(y, "y")?);
    let ((n, p), (m, q)) = (xa.shape(), ya.shape());
    let work = n
        .saturating_mul(n)
        .saturating_mul(n_resamples.saturating_add(p + q + 1));
    let out = with_slices!(&xa, &ya, |xs, ys| {
        run(py, work, |stop| {
            perm::dcov_test(
                Points::new(xs, n, p)?,
                Points::new(ys, m, q)?,
                exponent,
                n_resamples,
                seed,
                stop,
            )
        })?
    });
    Ok((out.statistic, PyArray1::from_vec(py, out.null)))
}

/// k-sample energy permutation test on pooled points grouped by `sizes`.
#[pyfunction]
#[pyo3(signature = (z, sizes, exponent, n_resamples, seed))]
fn energy_perm_test<'py>(
    py: Python<'py>,
    z: &Bound<'py, PyAny>,
    sizes: Vec<usize>,
    exponent: f64,
    n_resamples: usize,
    seed: u64,
) -> PyResult<(f64, Bound<'py, PyArray1<f64>>)> {
    let za = Arr2::extract(z, "z")?;
    let (n, d) = za.shape();
    let work = n
        .saturating_mul(n)
        .saturating_mul(n_resamples.saturating_add(d + 1));
    let out = with_slice!(&za, |zs| {
        run(py, work, |stop| {
            perm::energy_test(
                Points::new(zs, n, d)?,
                &sizes,
                exponent,
                n_resamples,
                seed,
                stop,
            )
        })?
    });
    Ok((out.statistic, PyArray1::from_vec(py, out.null)))
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
    m.add_function(wrap_pyfunction!(energy_perm_test, m)?)?;
    m.add_function(wrap_pyfunction!(jdcov, m)?)?;
    m.add_function(wrap_pyfunction!(dcov_sqr_grad, m)?)?;
    m.add_function(wrap_pyfunction!(jdcov_grad, m)?)?;
    m.add_function(wrap_pyfunction!(dcor_matrix, m)?)?;
    Ok(())
}
