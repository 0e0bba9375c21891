//! Sinkhorn between point clouds (placeholder).
