"""divest: fast, correct statistical estimation kernels, written in Rust.

Families, all on one tiled, multithreaded pairwise engine that works in log space and
never forms an n×m matrix unless asked to:

* kernel density estimation: :class:`KDE`, :func:`kde_logpdf`, :func:`select_bandwidth`;
* entropic optimal transport: :func:`sinkhorn`, :func:`sinkhorn_unbalanced`,
  :func:`sinkhorn_batch`, :func:`sinkhorn_divergence`;
* distance covariance and energy statistics: :func:`dcov_sqr`, :func:`dcor`,
  :func:`partial_dcor`, :func:`energy_distance`, :func:`dcov_test`, :func:`energy_test`,
  :func:`jdcov`, :func:`ccdcov`;
* determinantal point processes: the :mod:`divest.dpp` module;
* divergences: :func:`kl`, :func:`js`, :func:`hellinger`, :func:`tv`, :func:`chi2`,
  :func:`renyi`, :func:`f_divergence`, :func:`knn_entropy`, :func:`knn_kl`,
  :func:`knn_mi`, :func:`mmd`, :func:`cs_divergence`, :func:`fisher_merge`,
  :func:`fisher_weighted_svd`.

Threads: :func:`set_num_threads` (the process default, at most :data:`MAX_THREADS`),
:func:`threads` (a per-thread override), :func:`get_num_threads`, or the
``DIVEST_NUM_THREADS`` environment variable.
"""

from importlib import metadata as _metadata

from . import dpp
from ._depstats import cmi_test, knn_cmi, mi_matrix
from ._kdegrid import GridResult, isj_bandwidth, kde_grid
from ._results import ConvergenceWarning, TestResult
from ._threads import MAX_THREADS, get_num_threads, set_num_threads, threads
from .dcov import (
    ccdcov,
    ccdcov_test,
    dcor,
    dcor_matrix,
    dcor_sqr,
    dcov,
    dcov_sqr,
    dcov_test,
    energy_distance,
    energy_test,
    jdcov,
    jdcov_test,
    partial_dcor,
)
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

try:  # the one version is Cargo.toml's; maturin writes it into the package metadata
    __version__ = _metadata.version("divest")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "KDE",
    "BandwidthSelection",
    "ConvergenceWarning",
    "TestResult",
    "dpp",
    "kde_logpdf",
    "select_bandwidth",
    "MAX_THREADS",
    "kde_grid",
    "GridResult",
    "isj_bandwidth",
    "get_num_threads",
    "set_num_threads",
    "threads",
    "SinkhornResult",
    "SinkhornDivergence",
    "sinkhorn",
    "sinkhorn_batch",
    "sinkhorn_unbalanced",
    "sinkhorn_divergence",
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
    "dcov",
    "dcov_sqr",
    "dcor",
    "dcor_matrix",
    "mi_matrix",
    "knn_cmi",
    "cmi_test",
    "dcor_sqr",
    "partial_dcor",
    "energy_distance",
    "dcov_test",
    "energy_test",
    "jdcov",
    "ccdcov",
    "jdcov_test",
    "ccdcov_test",
    "__version__",
]

# issue 13: divest.cuda (the CUDA kernels' source, is_available()); imports no CuPy.
from . import cuda as cuda  # noqa: E402

# Kernel tests with permutation p-values (issue 17).
from .kerntest import (  # noqa: E402
    dhsic,
    dhsic_test,
    hsic,
    hsic_test,
    mmd_test,
    partial_dcor_test,
)

__all__ += [
    "mmd_test",
    "hsic",
    "hsic_test",
    "dhsic",
    "dhsic_test",
    "partial_dcor_test",
]

# Exact 1-D and sliced transport (issue 17).
from .transport import max_sliced_wasserstein, sliced_wasserstein, wasserstein_1d  # noqa: E402

__all__ += ["wasserstein_1d", "sliced_wasserstein", "max_sliced_wasserstein"]
