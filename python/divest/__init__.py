"""divest: fast, correct statistical estimation kernels, written in Rust.

Kernel density estimation (:class:`KDE`, :func:`kde_logpdf`, :func:`select_bandwidth`)
runs on a tiled, multithreaded pairwise engine that never forms an n×m matrix and works
in log space throughout. Threads: :func:`set_num_threads`, :func:`get_num_threads`,
:func:`threads`, or the ``DIVEST_NUM_THREADS`` environment variable.
"""

from ._results import TestResult
from ._threads import get_num_threads, set_num_threads, threads
from .dcov import (
    ccdcov,
    ccdcov_test,
    dcor,
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
from .kde import KDE, BandwidthSelection, kde_logpdf, select_bandwidth

__version__ = "0.1.0"


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped at ``max_iter`` before meeting its tolerance."""


__all__ = [
    "KDE",
    "BandwidthSelection",
    "ConvergenceWarning",
    "kde_logpdf",
    "select_bandwidth",
    "get_num_threads",
    "set_num_threads",
    "threads",
    "TestResult",
    "dcov",
    "dcov_sqr",
    "dcor",
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
