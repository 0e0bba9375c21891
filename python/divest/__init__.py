"""divest: fast, correct statistical estimation kernels, written in Rust.

Kernel density estimation (:class:`KDE`, :func:`kde_logpdf`, :func:`select_bandwidth`)
runs on a tiled, multithreaded pairwise engine that never forms an n×m matrix and works
in log space throughout. Threads: :func:`set_num_threads`, :func:`get_num_threads`,
:func:`threads`, or the ``DIVEST_NUM_THREADS`` environment variable.
"""

from . import dpp
from ._threads import get_num_threads, set_num_threads, threads
from .divergence import (
    chi2,
    cs_divergence,
    f_divergence,
    fisher_merge,
    fisher_weighted_svd,
    hellinger,
    js,
    js_distance,
    kl,
    knn_entropy,
    knn_kl,
    knn_mi,
    mmd,
    renyi,
    tv,
)
from .kde import KDE, BandwidthSelection, kde_logpdf, select_bandwidth
from .ot import (
    SinkhornDivergence,
    SinkhornResult,
    sinkhorn,
    sinkhorn_batch,
    sinkhorn_divergence,
    sinkhorn_unbalanced,
)

__version__ = "0.1.0"


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped at ``max_iter`` before meeting its tolerance."""


__all__ = [
    "KDE",
    "BandwidthSelection",
    "ConvergenceWarning",
    "dpp",
    "kde_logpdf",
    "select_bandwidth",
    "get_num_threads",
    "set_num_threads",
    "threads",
    "SinkhornResult",
    "sinkhorn",
    "sinkhorn_batch",
    "sinkhorn_unbalanced",
    "sinkhorn_divergence",
    "SinkhornDivergence",
    "kl",
    "js",
    "js_distance",
    "hellinger",
    "tv",
    "chi2",
    "renyi",
    "f_divergence",
    "mmd",
    "cs_divergence",
    "knn_entropy",
    "knn_kl",
    "knn_mi",
    "fisher_merge",
    "fisher_weighted_svd",
    "__version__",
]
