"""The GPU algorithms written once against the Python array API standard (``xp``).

Every function takes the array namespace ``xp`` first and uses only operations of the
standard (plus ``matmul``), so it runs unchanged on NumPy, on ``array_api_strict`` (which
rejects what the standard leaves undefined, such as slices past the end of an array: the
mistake that reads out of bounds in a CUDA kernel) and on CuPy. On a GPU this is the
reference the fused CUDA kernels of :mod:`divest._gpu` are tested against, and the path
for calls without a fused kernel. The tiles here have the shapes the kernels use: a block
of queries against a block of the other set, a running maximum and sum per query (online
log-sum-exp) or float64 block sums (sum reducer), so memory stays O(tile²·d).
"""

from .discrete import discrete_rows
from .pairs import dcov_sums, lse_pairs, pair_sum
from .sinkhorn import sinkhorn_batch_log, sinkhorn_divergence_xp

__all__ = [
    "namespace",
    "lse_pairs",
    "pair_sum",
    "dcov_sums",
    "sinkhorn_batch_log",
    "sinkhorn_divergence_xp",
    "discrete_rows",
]


def namespace(*arrays):
    """The array namespace of the arrays (CuPy's main namespace for CuPy arrays)."""
    for a in arrays:
        mod = type(a).__module__ or ""
        if mod == "cupy" or mod.startswith("cupy."):
            import cupy

            return cupy
    for a in arrays:
        ns = getattr(a, "__array_namespace__", None)
        if ns is not None:
            return ns()
    import numpy

    return numpy
