"""divest on NVIDIA GPUs: the CUDA C kernels and what CuPy needs to run them.

There is nothing to call here to use the GPU: pass CuPy arrays (or PyTorch CUDA tensors)
to the ordinary functions (``divest.kde_logpdf``, ``divest.energy_distance``, ...) and
the results come back on the same device. This module holds the kernel source
(``kernels.cu``), the template instances divest compiles with NVRTC, and
:func:`is_available`. Importing it imports neither CuPy nor touches a GPU.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["is_available", "KERNELS", "source", "SOURCE_PATH", "NVRTC_OPTIONS"]

#: The kernel source, shipped in the wheel next to this file.
SOURCE_PATH = Path(__file__).with_name("kernels.cu")

#: Template kernels and their instances (float and double each).
KERNELS = (
    "lse_pairs",
    "lse_merge_gemm",
    "pair_sum",
    "dcov_sums",
    "sinkhorn_batch",
    "lse_rows",
    "lse_cols",
    "discrete_rows",
)
DTYPES = ("float", "double")

#: NVRTC options: C++14, IEEE division and square roots, no fused multiply-add
#: contraction differences between the two dtypes' instances beyond what the ISA does.
NVRTC_OPTIONS = ("--std=c++14", "-default-device")


#: Kernels with a compile-time dimension, and the dimensions compiled (points are padded
#: with zero coordinates up to the next one; wider points use the run-time-d kernels).
FIXED_KERNELS = ("lse_pairs_fixed", "pair_sum_fixed")
FIXED_DIMS = (1, 2, 3, 4, 8, 16, 32, 64)


def fixed_dim(d: int) -> int | None:
    """The compiled dimension that holds d coordinates, or None beyond the largest."""
    for D in FIXED_DIMS:
        if d <= D:
            return D
    return None


def name_expressions() -> list[str]:
    """Every kernel instance (``kernel<type>`` and ``kernel<type, D>``)."""
    out = [f"{k}<{t}>" for k in KERNELS for t in DTYPES]
    out += [f"{k}<{t}, {D}>" for k in FIXED_KERNELS for t in DTYPES for D in FIXED_DIMS]
    return out


def source() -> str:
    return SOURCE_PATH.read_text()


def is_available() -> bool:
    """Whether CuPy imports and sees a CUDA device (probed once, cached)."""
    from .._backend import gpu_available

    return gpu_available()
