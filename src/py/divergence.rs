//! Divergence bindings. Inputs are validated, broadcast and laid out by
//! `divest/divergence.py`; rows are checked (signs, sums) in the core.

use numpy::{PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use super::common::{array2, run, slice, to_py, with_slice, with_slices, Arr2};
use crate::core::divergence::discrete::{self, Batch, Input, Measure, Spec};
use crate::core::divergence::kernel::{self, PairKernel};
use crate::core::divergence::knn;
use crate::core::pairwise::topk::Joint;
use crate::core::pairwise::Points;

/// One divergence per output row between rows `pidx[r]` of p and `qidx[r]` of q (row r
/// where an index is None); p and q are C-contiguous (rows, k) arrays of one dtype.
#[pyfunction]
#[pyo3(signature = (p, q, pidx, qidx, n_out, measure, param, input, normalize, tol))]
#[allow(clippy::too_many_arguments)]
fn divergence_rows<'py>(
    py: Python<'py>,
    p: &Bound<'py, PyAny>,
    q: &Bound<'py, PyAny>,
    pidx: Option<PyReadonlyArray1<'py, i64>>,
    qidx: Option<PyReadonlyArray1<'py, i64>>,
    n_out: usize,
    measure: &str,
    param: f64,
    input: &str,
    normalize: bool,
    tol: f64,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let spec = Spec {
        measure: Measure::parse(measure, param).map_err(to_py)?,
        input: Input::parse(input).map_err(to_py)?,
        normalize,
        tol,
    };
    let a = Arr2::extract(p, "p")?;
    let b = Arr2::extract(q, "q")?;
    let (rp, k) = a.shape();
    let (rq, kq) = b.shape();
    let pi = pidx.as_ref().map(|x| x.as_slice()).transpose()?;
    let qi = qidx.as_ref().map(|x| x.as_slice()).transpose()?;
    let work = n_out.saturating_mul(k).saturating_mul(8);
    let v = with_slices!(&a, &b, |xs, ys| {
        run(py, work, |stop| {
            discrete::divergence_rows(
                Batch {
                    data: xs,
                    rows: rp,
                    k,
                },
                Batch {
                    data: ys,
                    rows: rq,
                    k: kq,
                },
                pi,
                qi,
                n_out,
                spec,
                stop,
            )
        })?
    });
    Ok(PyArray1::from_vec(py, v))
}

/// (log Σ k(x_i, x_j), log Σ k(y_i, y_j), log Σ k(x_i, y_j)) at scale 1/σ²; the within
/// sums skip i = j when `exclude_self`.
#[pyfunction]
fn kernel_log_sums<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    kernel: &str,
    scale: f64,
    exclude_self: bool,
) -> PyResult<(f64, f64, f64)> {
    let kern = PairKernel::parse(kernel).map_err(to_py)?;
    let a = Arr2::extract(x, "x")?;
    let b = Arr2::extract(y, "y")?;
    let (n, d) = a.shape();
    let (m, dy) = b.shape();
    let work = (n + m).saturating_mul(n + m).saturating_mul(d + 8);
    with_slices!(&a, &b, |xs, ys| run(py, work, |stop| {
        let px = Points::new(xs, n, d)?;
        let py_ = Points::new(ys, m, dy)?;
        let lxx = kernel::pair_log_sum(px, px, kern, scale, exclude_self, stop)?;
        let lyy = kernel::pair_log_sum(py_, py_, kern, scale, exclude_self, stop)?;
        let lxy = kernel::pair_log_sum(px, py_, kern, scale, false, stop)?;
        Ok((lxx, lyy, lxy))
    }))
}

/// log Σ k(x_i, y_j) over all pairs (i ≠ j when `exclude_self`, x and y then the same set)
/// at scale 1/σ²: one block pair of a distributed MMD or Cauchy-Schwarz divergence.
#[pyfunction]
fn kernel_pair_log_sum<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    y: &Bound<'py, PyAny>,
    kernel: &str,
    scale: f64,
    exclude_self: bool,
) -> PyResult<f64> {
    let kern = PairKernel::parse(kernel).map_err(to_py)?;
    let a = Arr2::extract(x, "x")?;
    let b = Arr2::extract(y, "y")?;
    let (n, d) = a.shape();
    let (m, dy) = b.shape();
    let work = n.saturating_mul(m).saturating_mul(d + 8);
    with_slices!(&a, &b, |xs, ys| run(py, work, |stop| {
        let px = Points::new(xs, n, d)?;
        let py_ = Points::new(ys, m, dy)?;
        kernel::pair_log_sum(px, py_, kern, scale, exclude_self, stop)
    }))
}

/// All squared distances of a (small) point set against itself: an (n, n) array.
#[pyfunction]
fn self_sq_dists<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let a = Arr2::extract(x, "x")?;
    let (n, d) = a.shape();
    let work = n.saturating_mul(n).saturating_mul(d + 1);
    let v = with_slice!(&a, |xs| {
        run(py, work, |stop| {
            kernel::self_sq_dists(Points::new(xs, n, d)?, stop)
        })?
    });
    array2(py, v, n, n)
}

type KnnOut<'py> = (Bound<'py, PyArray2<f64>>, Bound<'py, PyArray2<i64>>);

/// k smallest squared distances (n, k) and column indices (n, k) from each point of `x`
/// to `cols`, ignoring zero distances; with `ux`, `ucols` (float64 second blocks) the
/// distance is the max of the two blocks' Euclidean norms.
#[pyfunction]
#[pyo3(signature = (x, cols, k, same, ux=None, ucols=None, algorithm="auto"))]
#[allow(clippy::too_many_arguments)]
fn knn_sq_dists<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    cols: &Bound<'py, PyAny>,
    k: usize,
    same: bool,
    ux: Option<PyReadonlyArray2<'py, f64>>,
    ucols: Option<PyReadonlyArray2<'py, f64>>,
    algorithm: &str,
) -> PyResult<KnnOut<'py>> {
    let method = knn::Method::parse(algorithm).map_err(to_py)?;
    let a = Arr2::extract(x, "x")?;
    let b = Arr2::extract(cols, "cols")?;
    let (n, d) = a.shape();
    let (m, dc) = b.shape();
    let joint = match (&ux, &ucols) {
        (Some(u), Some(v)) => Some(Joint {
            rows: slice(u)?,
            cols: slice(v)?,
            d: u.shape()[1],
        }),
        (None, None) => None,
        _ => return Err(PyTypeError::new_err("pass both second blocks or neither")),
    };
    let work = n.saturating_mul(m).saturating_mul(d + 4);
    let (d2, idx) = with_slices!(&a, &b, |xs, ys| {
        run(py, work, |stop| {
            knn::knn(
                Points::new(xs, n, d)?,
                Points::new(ys, m, dc)?,
                k,
                same,
                joint,
                method,
                stop,
            )
        })?
    });
    let idx = idx.into_iter().map(|v| v as i64).collect();
    Ok((array2(py, d2, n, k)?, array2(py, idx, n, k)?))
}

/// Per point of `x`, how many other points lie within squared radius `r2[i]` (strictly
/// below it when `strict`).
#[pyfunction]
#[pyo3(signature = (x, r2, strict, algorithm="auto"))]
fn count_within<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    r2: PyReadonlyArray1<'py, f64>,
    strict: bool,
    algorithm: &str,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let method = knn::Method::parse(algorithm).map_err(to_py)?;
    let a = Arr2::extract(x, "x")?;
    let (n, d) = a.shape();
    let r = r2.as_slice()?;
    let work = n.saturating_mul(n).saturating_mul(d + 2);
    let c = with_slice!(&a, |xs| {
        run(py, work, |stop| {
            knn::count_within(Points::new(xs, n, d)?, r, strict, method, stop)
        })?
    });
    Ok(PyArray1::from_vec(
        py,
        c.into_iter().map(|v| v as i64).collect(),
    ))
}

/// `count_within` for the rows `lo .. lo + len(r2)` of `x` only (one block of a
/// distributed kNN estimator): the counts `count_within` gives those rows.
#[pyfunction]
#[pyo3(signature = (x, lo, r2, strict, algorithm="auto"))]
fn count_within_rows<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    lo: usize,
    r2: PyReadonlyArray1<'py, f64>,
    strict: bool,
    algorithm: &str,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let method = knn::Method::parse(algorithm).map_err(to_py)?;
    let a = Arr2::extract(x, "x")?;
    let (n, d) = a.shape();
    let r = r2.as_slice()?;
    let work = r.len().saturating_mul(n).saturating_mul(d + 2);
    let c = with_slice!(&a, |xs| {
        run(py, work, |stop| {
            knn::count_within_rows(Points::new(xs, n, d)?, lo, r, strict, method, stop)
        })?
    });
    Ok(PyArray1::from_vec(
        py,
        c.into_iter().map(|v| v as i64).collect(),
    ))
}

/// kNN mutual information between the rows of `xt` (p, n) (the columns of the user's X)
/// and those of `yt` (q, n), or between every pair of rows of `xt`: a (p, q) array.
/// Pairs involving a row marked in `discrete_x` / `discrete_y` use the mixture estimator;
/// others KSG-1 or KSG-2 (`variant`).
#[pyfunction]
#[pyo3(signature = (xt, yt, k, discrete_x, discrete_y, variant=1))]
fn mi_matrix<'py>(
    py: Python<'py>,
    xt: PyReadonlyArray2<'py, f64>,
    yt: Option<PyReadonlyArray2<'py, f64>>,
    k: usize,
    discrete_x: Vec<bool>,
    discrete_y: Vec<bool>,
    variant: u8,
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
    let per_pair = n.saturating_mul(k.saturating_add(64 - n.leading_zeros() as usize) * 16);
    let work = p.saturating_mul(q).saturating_mul(per_pair);
    let m = run(py, work, |stop| {
        crate::core::divergence::mi_matrix::mi_matrix(
            xs,
            p,
            ys,
            n,
            k,
            &discrete_x,
            &discrete_y,
            variant,
            stop,
        )
    })?;
    array2(py, m, p, q)
}

/// kNN conditional mutual information of (n, dx), (n, dy), (n, dz) float64 samples for
/// x as given and then for x permuted by each row of `perms` (B, n): 1 + B estimates.
/// `mixed`: the mixed discrete-continuous estimator; `algorithm`: the search.
#[pyfunction]
#[pyo3(signature = (x, y, z, k, perms=None, mixed=false, algorithm="auto"))]
#[allow(clippy::too_many_arguments)]
fn cmi_stats<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f64>,
    y: PyReadonlyArray2<'py, f64>,
    z: PyReadonlyArray2<'py, f64>,
    k: usize,
    perms: Option<PyReadonlyArray2<'py, i64>>,
    mixed: bool,
    algorithm: &str,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    use crate::core::divergence::cmi::{self, Block};
    let method = knn::Method::parse(algorithm).map_err(to_py)?;
    let n = x.shape()[0];
    let dsum = x.shape()[1] + y.shape()[1] + z.shape()[1];
    let idx: Vec<u32> = match &perms {
        Some(p) => {
            if p.shape()[1] != n {
                return Err(pyo3::exceptions::PyValueError::new_err(
                    "perms must have one row of n indices per permutation",
                ));
            }
            slice(p)?
                .iter()
                .map(|&v| u32::try_from(v).unwrap_or(u32::MAX))
                .collect()
        }
        None => Vec::new(),
    };
    let nstat = 1 + idx.len() / n.max(1);
    // The brute-force cost (the trees' is far less, but the watcher is cheap).
    let work = n
        .saturating_mul(n)
        .saturating_mul(dsum + 8)
        .saturating_mul(nstat);
    let (xs, ys, zs) = (slice(&x)?, slice(&y)?, slice(&z)?);
    let (dx, dy, dz) = (x.shape()[1], y.shape()[1], z.shape()[1]);
    if y.shape()[0] != n || z.shape()[0] != n {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "x, y and z must have the same number of observations (rows)",
        ));
    }
    let v = run(py, work, |stop| {
        cmi::cmi_stats(
            Block { data: xs, d: dx },
            Block { data: ys, d: dy },
            Block { data: zs, d: dz },
            k,
            &idx,
            mixed,
            method,
            stop,
        )
    })?;
    Ok(PyArray1::from_vec(py, v))
}

/// The k nearest neighbours in z (n, dz) of every point, points equal to it included
/// (not itself), nearest first, ties by index: an (n, k) int64 array (the kd-tree of
/// `cmi_stats`).
#[pyfunction]
#[pyo3(signature = (z, k))]
fn cmi_z_neighbours<'py>(
    py: Python<'py>,
    z: PyReadonlyArray2<'py, f64>,
    k: usize,
) -> PyResult<Bound<'py, PyArray2<i64>>> {
    use crate::core::divergence::cmi::{self, Block};
    let (n, dz) = (z.shape()[0], z.shape()[1]);
    let zs = slice(&z)?;
    let work = n
        .saturating_mul(k.saturating_add(64 - n.leading_zeros() as usize))
        .saturating_mul(dz + 4)
        .saturating_mul(16);
    let idx = run(py, work, |stop| {
        cmi::z_neighbours(Block { data: zs, d: dz }, k, stop)
    })?;
    array2(py, idx.into_iter().map(|v| v as i64).collect(), n, k)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(knn_sq_dists, m)?)?;
    m.add_function(wrap_pyfunction!(count_within, m)?)?;
    m.add_function(wrap_pyfunction!(divergence_rows, m)?)?;
    m.add_function(wrap_pyfunction!(kernel_pair_log_sum, m)?)?;
    m.add_function(wrap_pyfunction!(count_within_rows, m)?)?;
    m.add_function(wrap_pyfunction!(kernel_log_sums, m)?)?;
    m.add_function(wrap_pyfunction!(self_sq_dists, m)?)?;
    m.add_function(wrap_pyfunction!(mi_matrix, m)?)?;
    m.add_function(wrap_pyfunction!(cmi_stats, m)?)?;
    m.add_function(wrap_pyfunction!(cmi_z_neighbours, m)?)?;
    Ok(())
}
