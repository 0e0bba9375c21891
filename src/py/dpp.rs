//! DPP and volume-sampling bindings. Inputs are validated (and orthonormalised or
//! eigendecomposed) by `divest/dpp.py`; indices come back as int64. `first` (default 0)
//! is the index of the first sample: sample s of a call draws the stream (seed, first + s),
//! so a range of samples drawn alone equals that range of one call.

use numpy::{PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;

use super::common::{array2, run, slice, to_py};
use crate::core::dpp::{self, Extra, Method};
use crate::core::error::try_vec;
use crate::core::Error;

/// Ragged samples: all items back to back, and the n_samples + 1 offsets.
type Ragged<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>);

fn index_matrix(
    py: Python<'_>,
    v: Vec<usize>,
    rows: usize,
    cols: usize,
) -> PyResult<Bound<'_, PyArray2<i64>>> {
    // usize and i64 share a layout: this collect reuses v's buffer (no second copy).
    array2(py, v.into_iter().map(|x| x as i64).collect(), rows, cols)
}

/// `(samples, error)`: n_samples×m sorted samples of the projection DPP with kernel U Uᵀ
/// (U float64, C order). With `check_tol`, U's orthonormality error is measured in the
/// pass that computes the leverage scores and returned as `error`, and the samples are
/// empty (0×m) when it exceeds the tolerance; without it `error` is None.
#[pyfunction]
#[pyo3(signature = (u, n_samples, seed, method="auto", check_tol=None, first=0))]
fn dpp_sample_projection<'py>(
    py: Python<'py>,
    u: PyReadonlyArray2<'py, f64>,
    n_samples: usize,
    seed: u64,
    method: &str,
    check_tol: Option<f64>,
    first: u64,
) -> PyResult<(Bound<'py, PyArray2<i64>>, Option<f64>)> {
    let method = Method::parse(method).map_err(to_py)?;
    let (n, m) = (u.shape()[0], u.shape()[1]);
    let us = slice(&u)?;
    // The leverage pass (n m) plus, per sample, n m² (chain) or about m³ ln m (rejection);
    // the larger bound keeps every call that could take long under the Ctrl-C watcher.
    let per_sample = n.saturating_add(m).saturating_mul(m).saturating_mul(m);
    let work = n
        .saturating_mul(m)
        .saturating_add(n_samples.saturating_mul(per_sample));
    match check_tol {
        None => {
            let out = run(py, work, |stop| {
                dpp::sample_projection(us, n, m, n_samples, seed, first, method, stop)
            })?;
            Ok((index_matrix(py, out, n_samples, m)?, None))
        }
        Some(tol) => {
            let (out, err) = run(py, work, |stop| {
                dpp::sample_projection_checked(us, n, m, n_samples, seed, first, method, tol, stop)
            })?;
            let rows = if out.is_empty() { 0 } else { n_samples };
            Ok((index_matrix(py, out, rows, m)?, Some(err)))
        }
    }
}

/// Samples of the DPP with correlation kernel V diag(probs) Vᵀ: (flat items, offsets).
#[pyfunction]
#[pyo3(signature = (v, probs, n_samples, seed, method="auto", first=0))]
fn dpp_sample_spectral<'py>(
    py: Python<'py>,
    v: PyReadonlyArray2<'py, f64>,
    probs: PyReadonlyArray1<'py, f64>,
    n_samples: usize,
    seed: u64,
    method: &str,
    first: u64,
) -> PyResult<Ragged<'py>> {
    let method = Method::parse(method).map_err(to_py)?;
    let (n, mm) = (v.shape()[0], v.shape()[1]);
    let vs = slice(&v)?;
    let p = probs.as_slice()?;
    let size: f64 = p.iter().sum();
    let size = if size.is_finite() {
        size.max(0.0)
    } else {
        mm as f64
    };
    // Per sample: the gathered n×|J| copy, its leverage scores and the sampler, and the
    // draw of mm eigenvectors.
    let per_sample = n as f64 * (size + 1.0) * (size + 1.0) + mm as f64;
    let work = (n_samples as f64 * per_sample).min(1e18) as usize;
    let samples = run(py, work, |stop| {
        dpp::sample_spectral(vs, n, mm, p, n_samples, seed, first, method, stop)
    })?;
    let total = samples
        .iter()
        .try_fold(0usize, |a, s| a.checked_add(s.len()))
        .ok_or_else(|| {
            to_py(Error::OutOfMemory(
                "n_samples: the samples' total size overflows".into(),
            ))
        })?;
    let mut offsets = try_vec(samples.len() + 1, 0i64, "n_samples").map_err(to_py)?;
    let mut flat = try_vec(total, 0i64, "n_samples").map_err(to_py)?;
    let mut at = 0usize;
    for (i, s) in samples.into_iter().enumerate() {
        for (dst, x) in flat[at..at + s.len()].iter_mut().zip(&s) {
            *dst = *x as i64;
        }
        at += s.len();
        offsets[i + 1] = at as i64;
    }
    Ok((
        PyArray1::from_vec(py, flat),
        PyArray1::from_vec(py, offsets),
    ))
}

/// n_samples×k sorted samples of the k-DPP with L = V diag(exp(log_lambda)) Vᵀ;
/// `table` is dpp_log_esp(log_lambda, k).
#[pyfunction]
#[pyo3(signature = (v, log_lambda, table, k, n_samples, seed, method="auto", first=0))]
#[allow(clippy::too_many_arguments)]
fn dpp_sample_k<'py>(
    py: Python<'py>,
    v: PyReadonlyArray2<'py, f64>,
    log_lambda: PyReadonlyArray1<'py, f64>,
    table: PyReadonlyArray2<'py, f64>,
    k: usize,
    n_samples: usize,
    seed: u64,
    method: &str,
    first: u64,
) -> PyResult<Bound<'py, PyArray2<i64>>> {
    let method = Method::parse(method).map_err(to_py)?;
    let (n, mm) = (v.shape()[0], v.shape()[1]);
    let vs = slice(&v)?;
    let ll = log_lambda.as_slice()?;
    let tb = slice(&table)?;
    // Per sample: the n×k gather, leverage scores and the projection sampler, and the
    // eigenvector selection over mm.
    let k1 = k.saturating_add(1);
    let per_sample = n.saturating_mul(k1).saturating_mul(k1).saturating_add(mm);
    let work = n_samples.saturating_mul(per_sample);
    let out = run(py, work, |stop| {
        dpp::sample_k_dpp(vs, n, mm, ll, tb, k, n_samples, seed, first, method, stop)
    })?;
    index_matrix(py, out, n_samples, k)
}

/// The (k+1)×(len+1) table of log elementary symmetric polynomials of exp(log_lambda).
#[pyfunction]
fn dpp_log_esp<'py>(
    py: Python<'py>,
    log_lambda: PyReadonlyArray1<'py, f64>,
    k: usize,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let ll = log_lambda.as_slice()?;
    let w = ll.len() + 1;
    // Each entry is a log-add (an exp and a log1p): count it as a few operations.
    let work = w.saturating_mul(k.saturating_add(1)).saturating_mul(8);
    let e = run(py, work, |stop| dpp::log_esp(ll, k, stop))?;
    array2(py, e, k + 1, w)
}

/// n_samples×k sorted volume samples (p=None: U an orthonormal basis of X's columns) or
/// volume-rescaled multisets from the base measure p (U a basis of diag(√p) X).
#[pyfunction]
#[pyo3(signature = (u, k, n_samples, seed, p=None, method="auto", first=0))]
#[allow(clippy::too_many_arguments)]
fn dpp_volume_sample<'py>(
    py: Python<'py>,
    u: PyReadonlyArray2<'py, f64>,
    k: usize,
    n_samples: usize,
    seed: u64,
    p: Option<PyReadonlyArray1<'py, f64>>,
    method: &str,
    first: u64,
) -> PyResult<Bound<'py, PyArray2<i64>>> {
    let method = Method::parse(method).map_err(to_py)?;
    let (n, d) = (u.shape()[0], u.shape()[1]);
    let us = slice(&u)?;
    let ps = p.as_ref().map(|a| a.as_slice()).transpose()?;
    let extra = ps.map_or(Extra::Uniform, Extra::Iid);
    // Per sample: leverage scores (n d), the size-d projection sampler (up to n d²) and
    // the k - d further draws.
    let per_sample = n
        .saturating_mul(d)
        .saturating_mul(d.saturating_add(1))
        .saturating_add(k);
    let work = n_samples.saturating_mul(per_sample);
    let out = run(py, work, |stop| {
        dpp::volume_sample(us, n, d, k, n_samples, seed, first, extra, method, stop)
    })?;
    index_matrix(py, out, n_samples, k)
}

/// max |UᵀU - I| (exact for small U, probed for large; see the core's docs).
#[pyfunction]
fn dpp_orthonormality_error<'py>(py: Python<'py>, u: PyReadonlyArray2<'py, f64>) -> PyResult<f64> {
    let (n, m) = (u.shape()[0], u.shape()[1]);
    let us = slice(&u)?;
    run(py, n.saturating_mul(m).saturating_mul(m.min(64)), |stop| {
        dpp::orthonormality_error_until(us, n, m, stop)
    })
}

/// Orthonormal basis (n×d) of the columns of x (CGS2 in Rust, no NumPy BLAS threads).
#[pyfunction]
fn dpp_orthonormal_basis<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f64>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let (n, d) = (x.shape()[0], x.shape()[1]);
    let xs = slice(&x)?;
    let work = n.saturating_mul(d).saturating_mul(d).saturating_mul(4);
    let q = run(py, work, |stop| dpp::orthonormal_basis(xs, n, d, stop))?;
    array2(py, q, n, d)
}

/// Greedy MAP of the DPP with kernel L (N×N float64, C order, validated by Python): at
/// most k items, stopping once the best gain is not above `floor` or is below
/// `threshold`. Indices (int64) in selection order.
#[pyfunction]
#[pyo3(signature = (l, k, threshold, floor))]
fn dpp_greedy_map<'py>(
    py: Python<'py>,
    l: PyReadonlyArray2<'py, f64>,
    k: usize,
    threshold: f64,
    floor: f64,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let n = l.shape()[0];
    let ls = slice(&l)?;
    let k = k.min(n);
    let work = n.saturating_mul(k).saturating_mul(k);
    let out = run(py, work, |stop| {
        dpp::greedy_map(ls, n, k, threshold, floor, stop)
    })?;
    Ok(PyArray1::from_vec(
        py,
        out.into_iter().map(|x| x as i64).collect(),
    ))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(dpp_sample_projection, m)?)?;
    m.add_function(wrap_pyfunction!(dpp_sample_spectral, m)?)?;
    m.add_function(wrap_pyfunction!(dpp_sample_k, m)?)?;
    m.add_function(wrap_pyfunction!(dpp_log_esp, m)?)?;
    m.add_function(wrap_pyfunction!(dpp_orthonormal_basis, m)?)?;
    m.add_function(wrap_pyfunction!(dpp_orthonormality_error, m)?)?;
    m.add_function(wrap_pyfunction!(dpp_volume_sample, m)?)?;
    m.add_function(wrap_pyfunction!(dpp_greedy_map, m)?)?;
    Ok(())
}
