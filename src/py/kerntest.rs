//! Bindings of the kernel tests (float64, C-contiguous 2-D arrays; Python validates).

use numpy::{PyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::common::run;
use crate::core::kerntest::{self, Kernel, STORE_MAX};
use crate::core::pairwise::Points;

fn pts<'a>(a: &'a PyReadonlyArray2<'_, f64>, name: &str) -> PyResult<Points<'a, f64>> {
    let s = a
        .as_slice()
        .map_err(|_| PyValueError::new_err(format!("{name} must be C-contiguous")))?;
    let sh = a.shape();
    Points::new(s, sh[0], sh[1]).map_err(super::common::to_py)
}

fn kernel(name: &str, param: f64) -> PyResult<Kernel> {
    match name {
        "gaussian" => Ok(Kernel::Gaussian(param)),
        "laplacian" => Ok(Kernel::Laplacian(param)),
        "distance" => Ok(Kernel::Distance(param)),
        _ => Err(PyValueError::new_err(format!(
            "kernel must be 'gaussian', 'laplacian' or 'distance'; got {name:?}"
        ))),
    }
}

fn work(n: usize, d: usize, n_resamples: usize) -> usize {
    n.saturating_mul(n)
        .saturating_mul(n_resamples.saturating_add(d).saturating_add(2))
}

type Out<'py> = PyResult<(f64, Bound<'py, PyArray1<f64>>)>;

/// Exact median of the pairwise Euclidean distances (0 median: median of non-zero ones).
#[pyfunction]
fn kern_median_distance(py: Python<'_>, x: PyReadonlyArray2<'_, f64>) -> PyResult<f64> {
    let p = pts(&x, "x")?;
    run(py, work(p.n, p.d, 64), |stop| {
        kerntest::median_distance(p, stop)
    })
}

/// MMD² permutation test of z[..n] against z[n..].
#[pyfunction]
#[pyo3(signature = (z, n, kernel_name, param, unbiased, n_resamples, first, seed))]
#[allow(clippy::too_many_arguments)]
fn kern_mmd_test<'py>(
    py: Python<'py>,
    z: PyReadonlyArray2<'py, f64>,
    n: usize,
    kernel_name: &str,
    param: f64,
    unbiased: bool,
    n_resamples: usize,
    first: u64,
    seed: u64,
) -> Out<'py> {
    let p = pts(&z, "z")?;
    let k = kernel(kernel_name, param)?;
    let out = run(py, work(p.n, p.d, n_resamples), |stop| {
        kerntest::mmd_test(
            p,
            n,
            k,
            unbiased,
            n_resamples,
            first,
            seed,
            p.n <= STORE_MAX,
            stop,
        )
    })?;
    Ok((out.statistic, PyArray1::from_vec(py, out.null)))
}

/// HSIC (biased or unbiased) and its permutation null.
#[pyfunction]
#[pyo3(signature = (x, y, kernel_name, sx, sy, unbiased, n_resamples, first, seed))]
#[allow(clippy::too_many_arguments)]
fn kern_hsic_test<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f64>,
    y: PyReadonlyArray2<'py, f64>,
    kernel_name: &str,
    sx: f64,
    sy: f64,
    unbiased: bool,
    n_resamples: usize,
    first: u64,
    seed: u64,
) -> Out<'py> {
    let (px, py_) = (pts(&x, "x")?, pts(&y, "y")?);
    let (kx, ky) = (kernel(kernel_name, sx)?, kernel(kernel_name, sy)?);
    let out = run(py, work(px.n, px.d + py_.d, n_resamples), |stop| {
        kerntest::hsic_test(
            px,
            py_,
            kx,
            ky,
            unbiased,
            n_resamples,
            first,
            seed,
            px.n <= STORE_MAX,
            stop,
        )
    })?;
    Ok((out.statistic, PyArray1::from_vec(py, out.null)))
}

/// Moments of the gamma approximation of the biased HSIC null.
#[pyfunction]
#[pyo3(signature = (x, y, kernel_name, sx, sy))]
fn kern_hsic_gamma<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f64>,
    y: PyReadonlyArray2<'py, f64>,
    kernel_name: &str,
    sx: f64,
    sy: f64,
) -> PyResult<(f64, f64, f64, f64)> {
    let (px, py_) = (pts(&x, "x")?, pts(&y, "y")?);
    let (kx, ky) = (kernel(kernel_name, sx)?, kernel(kernel_name, sy)?);
    run(py, work(px.n, px.d + py_.d, 4), |stop| {
        kerntest::hsic_gamma_moments(px, py_, kx, ky, stop)
    })
}

/// dHSIC of d ≥ 2 samples and its permutation null.
#[pyfunction]
#[pyo3(signature = (xs, kernel_name, params, n_resamples, first, seed))]
fn kern_dhsic_test<'py>(
    py: Python<'py>,
    xs: Vec<PyReadonlyArray2<'py, f64>>,
    kernel_name: &str,
    params: Vec<f64>,
    n_resamples: usize,
    first: u64,
    seed: u64,
) -> Out<'py> {
    let ps = xs
        .iter()
        .enumerate()
        .map(|(i, a)| pts(a, &format!("xs[{i}]")))
        .collect::<PyResult<Vec<_>>>()?;
    let ks = params
        .iter()
        .map(|&s| kernel(kernel_name, s))
        .collect::<PyResult<Vec<_>>>()?;
    let n = ps.first().map_or(0, |p| p.n);
    let d: usize = ps.iter().map(|p| p.d + 1).sum();
    let out = run(
        py,
        work(n, d, n_resamples.saturating_mul(ps.len())),
        |stop| kerntest::dhsic_test(&ps, &ks, n_resamples, first, seed, n <= STORE_MAX, stop),
    )?;
    Ok((out.statistic, PyArray1::from_vec(py, out.null)))
}

/// Partial distance correlation and its permutation null (energy's pdcor.test).
#[pyfunction]
#[pyo3(signature = (x, y, z, exponent, n_resamples, first, seed))]
#[allow(clippy::too_many_arguments)]
fn kern_pdcor_test<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f64>,
    y: PyReadonlyArray2<'py, f64>,
    z: PyReadonlyArray2<'py, f64>,
    exponent: f64,
    n_resamples: usize,
    first: u64,
    seed: u64,
) -> Out<'py> {
    let (px, py_, pz) = (pts(&x, "x")?, pts(&y, "y")?, pts(&z, "z")?);
    let out = run(
        py,
        work(px.n, px.d + py_.d + pz.d, n_resamples.saturating_add(8)),
        |stop| {
            kerntest::pdcor_test(
                px,
                py_,
                pz,
                exponent,
                n_resamples,
                first,
                seed,
                px.n <= STORE_MAX,
                stop,
            )
        },
    )?;
    Ok((out.statistic, PyArray1::from_vec(py, out.null)))
}

/// Registers the kernel-test bindings.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(kern_median_distance, m)?)?;
    m.add_function(wrap_pyfunction!(kern_mmd_test, m)?)?;
    m.add_function(wrap_pyfunction!(kern_hsic_test, m)?)?;
    m.add_function(wrap_pyfunction!(kern_dhsic_test, m)?)?;
    m.add_function(wrap_pyfunction!(kern_hsic_gamma, m)?)?;
    m.add_function(wrap_pyfunction!(kern_pdcor_test, m)?)?;
    Ok(())
}
