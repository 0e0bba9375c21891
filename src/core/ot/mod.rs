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

/// Dispatches a function generic over [`crate::core::simd::Fma`] to the SIMD level in use.
macro_rules! simd_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident => $body:ident ($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(level: $crate::core::simd::Level, $($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v512($($arg: $ty),*) -> $ret {
                    $body::<$crate::core::simd::Fused>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v2($($arg: $ty),*) -> $ret {
                    $body::<$crate::core::simd::Fused>($($arg),*)
                }
                match level.min($crate::core::simd::detected()) {
                    // SAFETY: the level is capped at what the CPU reports.
                    $crate::core::simd::Level::Avx512 => unsafe { v512($($arg),*) },
                    // SAFETY: as above.
                    $crate::core::simd::Level::Avx2 => unsafe { v2($($arg),*) },
                    $crate::core::simd::Level::Scalar => {
                        $body::<$crate::core::simd::Unfused>($($arg),*)
                    }
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = level;
                $body::<$crate::core::simd::Unfused>($($arg),*)
            }
        }
    };
}
pub(crate) use simd_fn;
