//! Pure-Rust numerics: the tiled pairwise engine, SIMD helpers, threads and the families.

pub mod dcov;
pub mod divergence;
pub mod dpp;
pub mod error;
pub mod kde;
pub mod kdebox;
pub mod kdefold;
pub mod kdegrid;
pub mod kerntest;
pub mod linalg;
pub mod ot;
pub mod pairwise;
pub mod simd;
pub mod sliced;
#[doc(hidden)]
pub mod testing;
pub mod threads;

pub use error::{Error, Result};
