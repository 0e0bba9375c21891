//! Entropic optimal transport.
//!
//! [`dense`] solves problems given by a cost matrix (one at a time, in parallel over row
//! blocks, or many at once, one per task); [`clouds`] solves problems between point clouds
//! with costs computed on the fly by the pairwise engine, for the Sinkhorn divergence.
//!
//! Potentials follow the dual of `min ⟨C,P⟩ + ε KL(P | a⊗b)`: the plan is
//! `P_ij = a_i b_j exp((f_i + g_j - C_ij)/ε)`, so f and g stay finite where a weight is zero.

pub mod clouds;
pub mod dense;
