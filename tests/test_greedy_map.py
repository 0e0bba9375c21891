"""dpp.greedy_map in Rust (issue 17): the same selections as the NumPy implementation it
replaced (kept below as the oracle), ties to the smallest index, independent of the
thread count, and Ctrl-C. The exhaustive-determinant oracle test is in test_depstats.py."""

from __future__ import annotations

import _thread
import math
import signal
import threading
import time

import numpy as np
import pytest

import divest
from divest import dpp


def _numpy_greedy(L, kmax, thr, floor):
    """The NumPy incremental-Cholesky greedy MAP that divest shipped before the Rust one:
    first index of the largest available gain, rows e = (L_j − c_j·C) / d_j, gains
    clamped at 0 after each update."""
    N = L.shape[0]
    d2 = np.maximum(np.diag(L).copy(), 0.0)
    avail = np.ones(N, dtype=bool)
    rows, out = [], []
    while len(out) < kmax:
        cand = np.where(avail, d2, -np.inf)
        j = int(np.argmax(cand))
        best = cand[j]
        if not (best > floor) or best < thr:
            break
        c = np.asarray(rows).reshape(len(rows), N)
        e = (L[j] - c[:, j] @ c) / math.sqrt(best)
        out.append(j)
        avail[j] = False
        rows.append(e)
        d2 = np.maximum(d2 - e * e, 0.0)
    return out


def _defaults(L, k, threshold):
    N = L.shape[0]
    floor = N * np.finfo(float).eps * max(float(np.diag(L).max()), 0.0)
    if k is None:
        return N, (1.0 if threshold is None else threshold), floor
    return k, (floor if threshold is None else threshold), floor


@pytest.mark.parametrize("seed", range(6))
def test_same_selection_as_the_numpy_implementation_on_random_kernels(seed):
    rng = np.random.default_rng(seed)
    N = int(rng.integers(5, 400))
    r = int(rng.integers(1, N + 1))
    B = rng.standard_normal((N, r)) * rng.uniform(0.2, 3.0, (N, 1))
    L = B @ B.T
    if seed % 2:
        L += 0.01 * np.eye(N)
    for k, thr in [(None, None), (min(N, 50), None), (N, None), (None, 3.0), (7, 0.5)]:
        if k is not None and k > N:
            continue
        got = dpp.greedy_map(L, k, threshold=thr).tolist()
        assert got == _numpy_greedy(L, *_defaults(L, k, thr)), (N, r, k, thr)


def test_rank_deficient_kernels_stop_at_their_rank_like_the_numpy_implementation():
    rng = np.random.default_rng(70)
    for N, r in [(60, 3), (300, 17), (1000, 40)]:
        B = rng.standard_normal((N, r))
        B[N // 2 :] = B[: N - N // 2] * (1 + 1e-13)  # near-duplicate items
        L = B @ B.T
        got = dpp.greedy_map(L, N).tolist()
        assert got == _numpy_greedy(L, *_defaults(L, N, None))
        assert len(got) == r
        sign, _ = np.linalg.slogdet(L[np.ix_(got, got)])
        assert sign > 0


def test_ties_go_to_the_smallest_index():
    # Equal gains everywhere: 0, 1, 2, ... in order.
    assert dpp.greedy_map(2.0 * np.eye(9), 4).tolist() == [0, 1, 2, 3]
    # Items 3 and 7 are copies of one vector with the largest norm: 3 is taken first and
    # 7 then has zero gain and is never taken.
    rng = np.random.default_rng(71)
    B = rng.standard_normal((10, 10))
    B[3] = B[7] = 5.0 * np.ones(10)
    L = B @ B.T
    got = dpp.greedy_map(L, 10).tolist()
    assert got[0] == 3 and 7 not in got
    assert got == _numpy_greedy(L, *_defaults(L, 10, None))


def test_independent_of_the_thread_count_and_input_untouched():
    rng = np.random.default_rng(72)
    B = rng.standard_normal((3000, 60))
    L = B @ B.T
    Lc = L.copy()
    with divest.threads(1):
        a = dpp.greedy_map(L, 60)
    with divest.threads(2):
        b = dpp.greedy_map(L, 60)
    assert np.array_equal(a, b) and a.dtype == np.int64
    assert np.array_equal(L, Lc)
    # Fortran order and float32 input give the same selection.
    assert np.array_equal(dpp.greedy_map(np.asfortranarray(L), 60), a)


def test_greedy_map_stops_on_ctrl_c():
    # Full rank (the identity plus a small symmetric perturbation): minutes of work.
    rng = np.random.default_rng(73)
    L = rng.standard_normal((4000, 4000))
    L += L.T
    L *= 0.0025
    L[np.diag_indices(4000)] += 1.0
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, _thread.interrupt_main)
    try:
        t0 = time.perf_counter()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            dpp.greedy_map(L, 4000)
        elapsed = time.perf_counter() - t0
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, old)
    assert elapsed < 5.0
    assert dpp.greedy_map(np.eye(3), 2).tolist() == [0, 1]
