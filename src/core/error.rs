//! The one error type of the core. The bindings map every variant to a Python exception.

use std::fmt;

/// Errors returned by core computations. Input-dependent failures never panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The caller raised the stop flag (Ctrl-C in Python); the result was abandoned.
    Cancelled,
    /// An argument was invalid; the message names the argument and the fix.
    InvalidArgument(String),
    /// A buffer the call needs could not be allocated; the message says how large it was
    /// and which argument sets its size.
    OutOfMemory(String),
}

/// Shorthand for results of core computations.
pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Cancelled => write!(f, "computation cancelled"),
            Error::InvalidArgument(msg) | Error::OutOfMemory(msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for Error {}

/// Builds an `InvalidArgument` error from a format string.
macro_rules! invalid {
    ($($arg:tt)*) => { $crate::core::error::Error::InvalidArgument(format!($($arg)*)) };
}
pub(crate) use invalid;

/// `a * b` for sizes, or an error naming `what` when the product does not fit in `usize`.
pub fn checked_size(a: usize, b: usize, what: &str) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| {
        Error::OutOfMemory(format!(
            "{what} would need {a} x {b} elements, more than this machine can address; \
             reduce it"
        ))
    })
}

/// A vector of `n` copies of `fill`, or `Error::OutOfMemory` (never an abort) when the
/// allocation fails. `what` names the argument that sets `n`, for the message.
pub fn try_vec<T: Clone>(n: usize, fill: T, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        let bytes = (n as f64) * (std::mem::size_of::<T>() as f64);
        Error::OutOfMemory(format!(
            "{what} needs a buffer of {:.3} GiB that could not be allocated; reduce it",
            bytes / (1u64 << 30) as f64
        ))
    })?;
    v.resize(n, fill);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_vec_reports_failure_instead_of_aborting() {
        assert_eq!(try_vec(3, 1.5f64, "n").unwrap(), vec![1.5; 3]);
        let e = try_vec(usize::MAX / 16, 0.0f64, "n_samples").unwrap_err();
        assert!(matches!(e, Error::OutOfMemory(ref m) if m.contains("n_samples")));
        assert!(checked_size(usize::MAX, 2, "k").is_err());
        assert_eq!(checked_size(3, 4, "k").unwrap(), 12);
    }
}
