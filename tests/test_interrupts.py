"""Ctrl-C on every long pairwise call (issue 18): each stops within a couple of seconds
with KeyboardInterrupt, and the next call works. The samplers, permutation tests and
Sinkhorn solvers have their own interrupt tests in their families' edge-case files."""

from __future__ import annotations

import _thread
import signal
import threading
import time

import numpy as np
import pytest

import divest

R = np.random.default_rng(0)
X8 = R.standard_normal((60000, 8))
Y8 = R.standard_normal((60000, 8)) + 0.1
X3 = R.random((30000, 3))

#: Each call is several seconds (most of them minutes) of work on two cores.
LONG = {
    "mmd": lambda: divest.mmd(X8, Y8, sigma=1.0),
    "cs_divergence": lambda: divest.cs_divergence(X8, Y8, sigma=1.0),
    "energy_distance": lambda: divest.energy_distance(X8, Y8),
    "dcor (multivariate)": lambda: divest.dcor(X8, Y8),
    "sinkhorn_divergence": lambda: divest.sinkhorn_divergence(X3, X3 + 0.1, eps=1e-3),
    "select_bandwidth": lambda: divest.select_bandwidth(X8, warn_edge=False),
    "knn_entropy (brute force)": lambda: divest.knn_entropy(
        np.repeat(X8, 4, axis=0)[:, :8] + 1e-3 * R.standard_normal((240000, 8)), algorithm="brute"
    ),
    "hsic (median heuristic)": lambda: divest.hsic(X8, Y8),
    "hsic_test (recomputed rows)": lambda: divest.hsic_test(
        X8[:5000], Y8[:5000], bandwidth=1.0, n_resamples=999
    ),
    "mmd_test (recomputed rows)": lambda: divest.mmd_test(
        X8[:3000], Y8[:3000], bandwidth=1.0, n_resamples=999
    ),
    "partial_dcor_test": lambda: divest.partial_dcor_test(
        X8[:2000], Y8[:2000], X3[:2000], n_resamples=100000
    ),
    "sliced_wasserstein": lambda: divest.sliced_wasserstein(X8, Y8, n_projections=100000),
}


@pytest.mark.parametrize("name", sorted(LONG))
def test_long_call_stops_on_ctrl_c(name):
    # A shell may start background jobs with SIGINT ignored: install the usual handler.
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    try:
        t0 = time.perf_counter()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            LONG[name]()
        elapsed = time.perf_counter() - t0
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, old)
    assert elapsed < 3.0, f"{name} took {elapsed:.2f} s to stop"
    # The library still works afterwards.
    assert np.isfinite(divest.mmd(X8[:50], Y8[:50], sigma=1.0))
