//! Shared binding helpers: error mapping, interruptible execution, array access.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use numpy::{PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{
    PyKeyboardInterrupt, PyMemoryError, PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;

use crate::core::pairwise::{Float, Points};
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

/// Below this many elementary operations (a few milliseconds of work) a call runs inline
/// with the GIL released and without an interrupt watcher: it finishes long before Ctrl-C
/// matters, and a watcher thread would cost more than the call.
const WATCH_THRESHOLD: usize = 4_000_000;

/// Runs `f` with the GIL released. Large jobs run on a helper thread while this thread
/// checks for signals every 50 ms; on Ctrl-C it raises the stop flag (the kernels check
/// it between tiles), waits for the worker and raises `KeyboardInterrupt`.
///
/// `work` estimates the elementary operations `f` will do: one per multiply-add,
/// comparison or copied value, about eight per `exp`, `ln` or log-add, summed over every
/// pass the kernel makes (including, for iterative solvers, as many iterations as the
/// limit allows). It is a stand-in for the running time and decides one thing: at
/// `WATCH_THRESHOLD` or above, the call runs under the interrupt watcher. Callers
/// compute it with saturating arithmetic and round up: too large costs one thread spawn
/// (tens of microseconds), too small leaves a long call deaf to Ctrl-C.
///
/// # Sharing input buffers with other threads
/// `f` touches no Python object: it works on Rust-owned data and on slices of the input
/// arrays, taken through `PyReadonlyArray` before the call and alive until it returns (the
/// readonly array holds a reference to its NumPy array, so the buffer is not freed; NumPy
/// refuses to resize an array others reference, unless told `refcheck=False`). What the
/// readonly borrow does not do is stop writers: rust-numpy records it in a borrow table
/// that only rust-numpy code consults, while NumPy and Python code write regardless. So
/// another Python thread can write into an input array (`x[:] = ...`, an in-place ufunc)
/// while the kernel reads it through `&[T]`. That is a data race, which Rust's memory
/// model leaves undefined, exactly as it is for two NumPy operations racing on one array;
/// nothing here can prevent it short of copying every input. What bounds its effect in
/// divest: the offsets that unsafe code uses (the SIMD kernels' raw pointers) come from the
/// shapes, which cannot change during the call, never from values read; where a value
/// decides an index (`divergence_rows`' row indices, a grid bin, a kd-tree split), the
/// index goes through bounds-checked indexing, so a value changed after it was checked
/// selects another valid entry or panics, which becomes a `RuntimeError`. In practice the
/// caller gets results computed from a mixture of old and new values; code that writes an
/// array while passing it to divest must synchronise itself, as it must with NumPy.
pub fn run<R: Send>(
    py: Python<'_>,
    work: usize,
    f: impl FnOnce(&AtomicBool) -> crate::core::Result<R> + Send,
) -> PyResult<R> {
    let stop = AtomicBool::new(false);
    if work < WATCH_THRESHOLD {
        // Releasing the GIL is sound: `f` touches no Python object (see above for
        // writers racing on the input buffers).
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

/// The element types of [`Arr2`] (f32 and f64), for the bindings whose core works in f64
/// whatever the input, or takes several arrays of one dtype.
pub trait Real: Float + numpy::Element {
    /// The array when it holds this type.
    fn of<'a, 'py>(a: &'a Arr2<'py>) -> Option<&'a PyReadonlyArray2<'py, Self>>;
    /// The values as f64, borrowed when they already are.
    fn widen(x: &[Self]) -> Cow<'_, [f64]>;
    /// f64 values in this type (rounded to nearest for f32; moved for f64).
    fn narrow(v: Vec<f64>) -> Vec<Self>;
}

impl Real for f64 {
    fn of<'a, 'py>(a: &'a Arr2<'py>) -> Option<&'a PyReadonlyArray2<'py, f64>> {
        match a {
            Arr2::F64(x) => Some(x),
            Arr2::F32(_) => None,
        }
    }
    fn widen(x: &[f64]) -> Cow<'_, [f64]> {
        Cow::Borrowed(x)
    }
    fn narrow(v: Vec<f64>) -> Vec<f64> {
        v
    }
}

impl Real for f32 {
    fn of<'a, 'py>(a: &'a Arr2<'py>) -> Option<&'a PyReadonlyArray2<'py, f32>> {
        match a {
            Arr2::F32(x) => Some(x),
            Arr2::F64(_) => None,
        }
    }
    fn widen(x: &[f32]) -> Cow<'_, [f64]> {
        Cow::Owned(x.iter().map(|&v| v as f64).collect())
    }
    fn narrow(v: Vec<f64>) -> Vec<f32> {
        v.iter().map(|&x| x as f32).collect()
    }
}

/// `x` as f64 (borrowed when it already is): for a core that computes in f64.
pub fn widen<T: Real>(x: &[T]) -> Cow<'_, [f64]> {
    T::widen(x)
}

/// Wraps row-major f64 values as an (n, k) array of `like`'s dtype (a result such as a
/// transport plan, computed in f64, returned in the input's precision).
pub fn array2_like<'py, T: Real>(
    py: Python<'py>,
    _like: &[T],
    v: Vec<f64>,
    n: usize,
    k: usize,
) -> PyResult<Bound<'py, numpy::PyArray2<T>>> {
    array2(py, T::narrow(v), n, k)
}

/// The arrays as [`Points`] when every one holds `T` (`None` when one does not).
pub fn points<'a, T: Real>(arrs: &'a [Arr2<'_>]) -> PyResult<Option<Vec<Points<'a, T>>>> {
    if !arrs.iter().all(|a| T::of(a).is_some()) {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(arrs.len());
    for a in arrs {
        if let Some(x) = T::of(a) {
            let (n, d) = a.shape();
            out.push(Points::new(slice(x)?, n, d).map_err(to_py)?);
        }
    }
    Ok(Some(out))
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

/// Runs `$body` with `$pts` bound to a `Vec` of [`Points`] over a slice of [`Arr2`] that
/// must all share a dtype (the body is compiled once per dtype).
macro_rules! with_points {
    ($arrs:expr, |$pts:ident| $body:expr) => {
        if let Some($pts) = $crate::py::common::points::<f64>($arrs)? {
            $body
        } else if let Some($pts) = $crate::py::common::points::<f32>($arrs)? {
            $body
        } else {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "all samples must have the same dtype (float32 or float64)",
            ));
        }
    };
}
pub(crate) use with_points;

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
