//! The one error type of the core. The bindings map every variant to a Python exception.

use std::fmt;

/// Errors returned by core computations. Input-dependent failures never panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The caller raised the stop flag (Ctrl-C in Python); the result was abandoned.
    Cancelled,
    /// An argument was invalid; the message names the argument and the fix.
    InvalidArgument(String),
}

/// Shorthand for results of core computations.
pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Cancelled => write!(f, "computation cancelled"),
            Error::InvalidArgument(msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for Error {}

/// Builds an `InvalidArgument` error from a format string.
macro_rules! invalid {
    ($($arg:tt)*) => { $crate::core::error::Error::InvalidArgument(format!($($arg)*)) };
}
pub(crate) use invalid;
