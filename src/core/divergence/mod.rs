//! Divergences: batched discrete divergences between probability vectors (elementwise
//! reductions, outside the pairwise engine), and sample-based estimators (kernel and kNN)
//! built on the engine's reducers.

pub mod blocktree;
pub mod cmi;
pub mod discrete;
pub mod grad;
pub mod kernel;
pub mod knn;
pub mod mi_matrix;
pub mod sample_grad;
