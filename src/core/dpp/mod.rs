//! Determinantal point processes and volume sampling: exact samplers for projection DPPs,
//! L-ensembles and k-DPPs (from an eigendecomposition computed by the caller), volume
//! sampling and volume-rescaled sampling. Every sample has its own random stream, so the
//! output depends on the seed and never on the thread count.

pub mod greedy;
pub mod ortho;
mod panels;
pub mod projection;
pub mod rng;
pub mod spectral;
pub mod volume;

pub use greedy::greedy_map;
pub use ortho::orthonormal_basis;
pub use projection::{
    orthonormality_error, orthonormality_error_until, sample_projection, sample_projection_checked,
    Method,
};
pub use spectral::{log_esp, sample_k_dpp, sample_spectral};
pub use volume::{volume_sample, Extra};
