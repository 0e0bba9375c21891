"""Threads, determinism, SIMD paths, fork safety, GIL release and Ctrl-C."""

import _thread
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import divest
from divest import _core

RNG = np.random.default_rng(99)


def _all_outputs(x, q):
    kde = divest.KDE(x)
    lp, ess = kde.logpdf(q, return_ess=True)
    return [
        lp,
        ess,
        kde.score(q),
        kde.loo_logpdf(),
        divest.select_bandwidth(x, np.geomspace(0.3, 2, 5), warn_edge=False).loglik,
    ]


@pytest.mark.parametrize("d", [3, 40])
def test_bitwise_identical_for_one_and_two_threads(d):
    x = RNG.standard_normal((1500, d))
    q = RNG.standard_normal((700, d))
    with divest.threads(1):
        assert divest.get_num_threads() == 1
        one = _all_outputs(x, q)
    with divest.threads(2):
        two = _all_outputs(x, q)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def test_threads_context_restores_and_validates():
    before = divest.get_num_threads()
    with divest.threads(3):
        assert divest.get_num_threads() == 3
    assert divest.get_num_threads() == before
    with pytest.raises(ValueError):
        divest.set_num_threads(0)
    with pytest.raises(TypeError):
        divest.set_num_threads(1.5)


def test_environment_variable_sets_thread_count():
    code = "import divest; print(divest.get_num_threads())"
    env = dict(os.environ, DIVEST_NUM_THREADS="3")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "3"


def test_simd_paths_agree_with_scalar():
    x = RNG.standard_normal((777, 5))
    q = RNG.standard_normal((301, 5))
    x2 = RNG.standard_normal((300, 33))
    results = {}
    best = _core.simd_detected()
    levels = ["scalar", "avx2", "avx512"][: ["scalar", "avx2", "avx512"].index(best) + 1]
    try:
        for level in levels:
            _core.set_simd_level(level)
            assert _core.simd_level() == level
            k = divest.KDE(x, bandwidth=0.5)
            results[level] = (k.logpdf(q), k.score(q), divest.KDE(x2, bandwidth=2.0).loo_logpdf())
    finally:
        _core.set_simd_level(None)
    for level in levels[1:]:
        for a, b in zip(results[level], results["scalar"]):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
    if "avx512" in results:
        # The AVX-512 path sums Gaussian terms with its own table-driven exp kernel; the
        # two AVX paths agree to a few ulp (each level is deterministic on its own).
        for a, b in zip(results["avx512"], results["avx2"]):
            np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-14)
    with pytest.raises(ValueError):
        _core.set_simd_level("sse9")


def _child(q):
    x = np.random.default_rng(0).standard_normal((3000, 4))
    q.put(float(divest.KDE(x).logpdf(x[:2000]).sum()))


def test_forked_child_still_works():
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork on this platform")
    x = np.random.default_rng(0).standard_normal((3000, 4))
    want = float(divest.KDE(x).logpdf(x[:2000]).sum())  # the parent's pool is now running
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q,))
    p.start()
    p.join(60)
    assert p.exitcode == 0, "forked child hung or crashed"
    assert q.get(timeout=5) == want


def test_gil_is_released_during_kernels():
    x = RNG.standard_normal((6000, 16))
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.002)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        t0 = time.perf_counter()
        divest.KDE(x).logpdf(x)
        t1 = time.perf_counter()
    finally:
        stop.set()
        t.join()
    during = [s for s in ticks if t0 < s < t1]
    # With the GIL held the ticker could not run at all during the call (a few ticks
    # suffice: on a loaded machine the ticker thread itself gets little CPU).
    assert len(during) >= 3


def test_ctrl_c_interrupts_promptly():
    x = RNG.standard_normal((60000, 32))
    kde = divest.KDE(x, bandwidth=1.0)
    # A shell may start background jobs with SIGINT ignored, and then Python installs no
    # handler and interrupt_main() does nothing: install the usual one for this test.
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, _thread.interrupt_main)
    try:
        t0 = time.perf_counter()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            kde.logpdf(x)  # several seconds of work on two cores
        elapsed = time.perf_counter() - t0
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, old)
    assert elapsed < 2.0, f"took {elapsed:.2f} s to stop"
    # the library still works afterwards
    assert np.isfinite(kde.logpdf(x[:5])).all()


def test_thread_count_is_capped_with_a_clear_error():
    before = divest.get_num_threads()
    for bad in (10**6, divest.MAX_THREADS + 1, 10**30):
        with pytest.raises(ValueError, match=r"n must be at most 4096"):
            divest.set_num_threads(bad)
        with pytest.raises(ValueError, match=r"n must be at most 4096"):
            with divest.threads(bad):
                pass
    assert divest.MAX_THREADS == 4096
    assert divest.get_num_threads() == before
    code = "import divest; print(divest.get_num_threads())"
    env = dict(os.environ, DIVEST_NUM_THREADS="1000000")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "4096"


def test_threads_context_is_per_thread():
    """Overlapping blocks in two threads: each sees its own count, and the process
    default is intact afterwards (a process-global setting ended at 1)."""
    x = RNG.standard_normal((900, 3))
    q = RNG.standard_normal((400, 3))
    want = divest.KDE(x, bandwidth=0.7).score(q)
    default = divest.get_num_threads()
    step = threading.Barrier(2, timeout=30)
    seen, results, errors = {}, {}, []

    def a():
        try:
            with divest.threads(1):
                step.wait()  # 1: A is inside its block
                step.wait()  # 2: B is inside its block
                seen["a_inside"] = divest.get_num_threads()
                results["a"] = divest.KDE(x, bandwidth=0.7).score(q)
            step.wait()  # 3: A has left its block
            step.wait()  # 4: B has checked
        except Exception as e:  # noqa: BLE001
            errors.append(e)
            step.abort()

    def b():
        try:
            step.wait()
            with divest.threads(3):
                step.wait()
                step.wait()
                seen["b_inside"] = divest.get_num_threads()
                results["b"] = divest.KDE(x, bandwidth=0.7).score(q)
                step.wait()
            seen["b_after"] = divest.get_num_threads()
        except Exception as e:  # noqa: BLE001
            errors.append(e)
            step.abort()

    ts = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors
    assert seen == {"a_inside": 1, "b_inside": 3, "b_after": default}
    assert divest.get_num_threads() == default
    for r in results.values():
        np.testing.assert_array_equal(r, want)


def test_threads_block_leaves_the_process_default_alone():
    default = divest.get_num_threads()
    try:
        with divest.threads(2):
            divest.set_num_threads(3)  # the process default; this block keeps 2
            assert divest.get_num_threads() == 2
            assert _core._default_num_threads() == 3
            with divest.threads(1):
                assert divest.get_num_threads() == 1
            assert divest.get_num_threads() == 2
        assert divest.get_num_threads() == 3
    finally:
        divest.set_num_threads(default)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_results_bitwise_identical_under_any_block(n):
    x = RNG.standard_normal((1200, 3))
    q = RNG.standard_normal((900, 3))
    ref = _all_outputs(x, q)
    with divest.threads(n):
        got = _all_outputs(x, q)
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(a, b)
