//! Shared binding helpers: error mapping, interruptible execution, array access.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use numpy::{PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{
    PyKeyboardInterrupt, PyMemoryError, PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;

use crate::core::Error;

/// Maps a core error to the Python exception users expect.
pub fn to_py(e: Error) -> PyErr {
    match e {
        Error::Cancelled => PyKeyboardInterrupt::new_err("divest computation interrupted"),
        Error::InvalidArgument(msg) => PyValueError::new_err(msg),
        Error::OutOfMemory(msg) => PyMemoryError::new_err(msg),
    }
}

fn panic_err() -> PyErr {
    PyRuntimeError::new_err(
        "divest internal error (a Rust panic); please report it with the inputs' shapes",
    )
}

/// Below this many elementary operations a call runs inline with the GIL released and
/// without an interrupt watcher (it finishes long before Ctrl-C matters).
const WATCH_THRESHOLD: usize = 4_000_000;

/// Runs `f` with the GIL released. Large jobs run on a helper thread while this thread
/// checks for signals every 50 ms; on Ctrl-C it raises the stop flag (the kernels check
/// it between tiles), waits for the worker and raises `KeyboardInterrupt`.
pub fn run<R: Send>(
    py: Python<'_>,
    work: usize,
    f: impl FnOnce(&AtomicBool) -> crate::core::Result<R> + Send,
) -> PyResult<R> {
    let stop = AtomicBool::new(false);
    if work < WATCH_THRESHOLD {
        // Releasing the GIL is sound: `f` only touches Rust-owned data and borrowed
        // buffers that the caller keeps alive (and read-only) for the whole call.
        let r = py.detach(|| catch_unwind(AssertUnwindSafe(|| f(&stop))));
        return r.map_err(|_| panic_err())?.map_err(to_py);
    }
    let main = std::thread::current();
    let done = AtomicBool::new(false);
    // The calling thread's `divest.threads(n)` override applies in the worker too.
    let n_override = crate::core::threads::thread_override();
    std::thread::scope(|s| {
        let (stop, done) = (&stop, &done);
        let h = s.spawn(move || {
            let _ = crate::core::threads::set_thread_override(n_override);
            let r = catch_unwind(AssertUnwindSafe(|| f(stop)));
            done.store(true, Ordering::Release);
            main.unpark();
            r
        });
        loop {
            // GIL released while waiting so other Python threads run; the worker never
            // touches Python objects.
            py.detach(|| std::thread::park_timeout(Duration::from_millis(50)));
            if done.load(Ordering::Acquire) {
                break;
            }
            if let Err(e) = py.check_signals() {
                stop.store(true, Ordering::Relaxed);
                let _ = py.detach(|| h.join());
                return Err(e);
            }
        }
        // The worker has stored its result; joining only waits for it to exit.
        match py.detach(|| h.join()) {
            Ok(Ok(r)) => r.map_err(to_py),
            _ => Err(panic_err()),
        }
    })
}

/// A 2-D float array of either precision.
pub enum Arr2<'py> {
    F32(PyReadonlyArray2<'py, f32>),
    F64(PyReadonlyArray2<'py, f64>),
}

impl<'py> Arr2<'py> {
    /// Accepts a C-contiguous float32 or float64 2-D array.
    pub fn extract(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Self> {
        let a = if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, f64>>() {
            Arr2::F64(a)
        } else if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, f32>>() {
            Arr2::F32(a)
        } else {
            return Err(PyTypeError::new_err(format!(
                "{name} must be a 2-D float32 or float64 numpy array"
            )));
        };
        let contiguous = match &a {
            Arr2::F32(x) => x.is_c_contiguous(),
            Arr2::F64(x) => x.is_c_contiguous(),
        };
        if !contiguous {
            return Err(PyValueError::new_err(format!(
                "{name} must be C-contiguous"
            )));
        }
        Ok(a)
    }

    /// (rows, columns).
    pub fn shape(&self) -> (usize, usize) {
        let s = match self {
            Arr2::F32(x) => x.shape(),
            Arr2::F64(x) => x.shape(),
        };
        (s[0], s[1])
    }
}

/// Row-major slice of a C-contiguous array (checked in `Arr2::extract`).
pub fn slice<'a, T: numpy::Element>(a: &'a PyReadonlyArray2<'_, T>) -> PyResult<&'a [T]> {
    a.as_slice()
        .map_err(|_| PyValueError::new_err("array must be C-contiguous"))
}

/// Runs `$body` with `$x` bound to the row-major slice of an [`Arr2`], for either dtype
/// (the body is compiled once per dtype).
macro_rules! with_slice {
    ($a:expr, |$x:ident| $body:expr) => {
        match $a {
            $crate::py::common::Arr2::F64(arr) => {
                let $x = $crate::py::common::slice(arr)?;
                $body
            }
            $crate::py::common::Arr2::F32(arr) => {
                let $x = $crate::py::common::slice(arr)?;
                $body
            }
        }
    };
}
pub(crate) use with_slice;

/// Like [`with_slice`] for two arrays that must share a dtype.
macro_rules! with_slices {
    ($a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            ($crate::py::common::Arr2::F64(p), $crate::py::common::Arr2::F64(q)) => {
                let ($x, $y) = ($crate::py::common::slice(p)?, $crate::py::common::slice(q)?);
                $body
            }
            ($crate::py::common::Arr2::F32(p), $crate::py::common::Arr2::F32(q)) => {
                let ($x, $y) = ($crate::py::common::slice(p)?, $crate::py::common::slice(q)?);
                $body
            }
            _ => {
                return Err(pyo3::exceptions::PyTypeError::new_err(
                    "both arrays must have the same dtype (float32 or float64)",
                ))
            }
        }
    };
}
pub(crate) use with_slices;

/// Wraps a row-major vector as an (n, k) NumPy array.
pub fn array2<'py, T: numpy::Element>(
    py: Python<'py>,
    v: Vec<T>,
    n: usize,
    k: usize,
) -> PyResult<Bound<'py, numpy::PyArray2<T>>> {
    let a = numpy::ndarray::Array2::from_shape_vec((n, k), v)
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    Ok(numpy::PyArray2::from_owned_array(py, a))
}
