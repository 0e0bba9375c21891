"""Issue 18: concurrency. Python threads calling divest at once get the serial results,
bit for bit; changing the thread count in one thread does not disturb calls in another;
results do not depend on the thread count."""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest

import divest
from divest import dpp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _hostile_cases import flatten  # noqa: E402


def _jobs():
    """A mix of families, each large enough to be split over the pool."""
    r = np.random.default_rng(11)
    x = r.standard_normal((1500, 3))
    y = x[:, :1] ** 2 + r.standard_normal((1500, 1))
    z = r.standard_normal((1200, 3)) + 0.3
    q = r.standard_normal((800, 3))
    p = r.random((300, 64)) + 0.01
    pp = r.random((300, 64)) + 0.01
    a = np.full(300, 1 / 300)
    b = np.full(250, 1 / 250)
    cost = ((r.random((300, 1)) - r.random((1, 250))) ** 2) * 4
    u = np.linalg.qr(r.standard_normal((2000, 12)))[0]
    kde = divest.KDE(x, bandwidth="scott")
    ll = r.standard_normal((40, 40))
    dl = dpp.DPP(L=ll @ ll.T / 40)
    return {
        "dcor": lambda: divest.dcor(x, y),
        "dcov_sqr_u": lambda: divest.dcov_sqr(x, y, unbiased=True),
        "energy_distance": lambda: divest.energy_distance(x, z),
        "energy_test": lambda: divest.energy_test(x[:300], z[:300], n_resamples=49, rng=3),
        "kde_logpdf": lambda: kde.logpdf(q, return_ess=True),
        "kde_score": lambda: kde.score(q[:200]),
        "kde_loo": lambda: divest.KDE(x[:600]).loo_logpdf(),
        "select_bandwidth": lambda: divest.select_bandwidth(x[:500], warn_edge=False).loglik,
        "sinkhorn": lambda: divest.sinkhorn(a, b, cost, 0.05, tol=1e-10),
        "sinkhorn_divergence": lambda: divest.sinkhorn_divergence(x[:400], z[:300], eps=0.1),
        "kl_batch": lambda: divest.kl(p, pp, normalize=True),
        "js_batch": lambda: divest.js(p, pp, normalize=True),
        "mmd": lambda: divest.mmd(x, z, 1.0),
        "knn_entropy": lambda: divest.knn_entropy(x),
        "knn_mi": lambda: divest.knn_mi(x, y),
        "sample_projection": lambda: dpp.sample_projection(u, 8, rng=5),
        "dpp_sample_k": lambda: dl.sample_k(5, 20, rng=6),
    }


JOBS = _jobs()


def _same(r1, r2):
    f1, f2 = flatten(r1), flatten(r2)
    return len(f1) == len(f2) and all(
        a.shape == b.shape and np.array_equal(a, b, equal_nan=True) for a, b in zip(f1, f2)
    )


@pytest.fixture(scope="module")
def serial():
    with divest.threads(2):
        return {k: f() for k, f in JOBS.items()}


def _run_threads(targets):
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(repr(exc))

        return run

    ts = [threading.Thread(target=wrap(t)) for t in targets]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not any(t.is_alive() for t in ts), "a thread hung"
    assert not errors, errors


def test_eight_threads_get_the_serial_results_bitwise(serial):
    names = list(JOBS)
    mismatches = []

    def worker(i):
        def run():
            order = names[i:] + names[:i]
            for name in order:
                if not _same(JOBS[name](), serial[name]):
                    mismatches.append((i, name))

        return run

    with divest.threads(2):
        _run_threads([worker(i) for i in range(8)])
    assert not mismatches, mismatches


def test_changing_the_thread_count_in_one_thread_does_not_break_another(serial):
    before = divest.get_num_threads()
    stop = threading.Event()
    mismatches = []

    def flipper():
        k = 0
        while not stop.is_set():
            with divest.threads(1 + k % 3):
                divest.dcor(np.arange(50.0), np.arange(50.0) ** 2)
            divest.set_num_threads(1 + (k + 1) % 3)
            k += 1

    def caller(i):
        def run():
            try:
                for name in list(JOBS)[i::3]:
                    if not _same(JOBS[name](), serial[name]):
                        mismatches.append(name)
            finally:
                stop.set()

        return run

    try:
        _run_threads([flipper, caller(0), caller(1), caller(2)])
    finally:
        divest.set_num_threads(before)
    assert not mismatches, mismatches


@pytest.mark.parametrize("n", [1, 3])
def test_results_are_bitwise_identical_across_thread_counts(serial, n):
    with divest.threads(n):
        got = {k: f() for k, f in JOBS.items()}
    differ = [k for k in JOBS if not _same(got[k], serial[k])]
    assert not differ, f"differ with {n} threads from 2 threads: {differ}"


_FORK_CHILD = r"""
import os, sys, threading, time
import numpy as np
import divest

stop = threading.Event()

def flipper():
    # Another thread keeps taking the thread-count lock (issue 18: the at-fork hook
    # waited on it and a forked child could hang forever).
    y = np.random.default_rng(1).standard_normal((600, 2))
    k = 0
    while not stop.is_set():
        with divest.threads(1 + k % 2):
            divest.energy_distance(y, y[::-1] + 0.1)
        k += 1

t = threading.Thread(target=flipper, daemon=True)
t.start()
x = np.random.default_rng(0).standard_normal((200, 2))
want = divest.dcor(x, x[:, :1] ** 2)
hung = 0
for i in range(int(sys.argv[1])):
    pid = os.fork()
    if pid == 0:
        ok = divest.dcor(x, x[:, :1] ** 2) == want
        os._exit(0 if ok else 3)
    deadline = time.monotonic() + 5.0
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.waitstatus_to_exitcode(status) != 0:
                print("BADCHILD", i, status, flush=True)
                sys.exit(1)
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            print("HUNG", i, flush=True)
            sys.exit(2)
        time.sleep(0.002)
stop.set()
print("OK", flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_while_another_thread_changes_the_thread_count_never_hangs():
    import subprocess
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fork in a threaded process: the point of the test
        p = subprocess.run(
            [sys.executable, "-c", _FORK_CHILD, "150"], capture_output=True, text=True, timeout=120
        )
    assert p.returncode == 0 and "OK" in p.stdout, p.stdout + p.stderr[-1000:]


_EXIT_WITH_DAEMON = r"""
import threading, time
import numpy as np
import divest

y = np.random.default_rng(1).standard_normal((600, 2))
started = threading.Event()

def worker():
    while True:
        started.set()
        divest.energy_distance(y, y[::-1] + 0.1)

for _ in range(2):
    threading.Thread(target=worker, daemon=True).start()
started.wait()
time.sleep(0.05)
print("OK", flush=True)
"""


def test_interpreter_exit_while_daemon_threads_are_inside_divest_does_not_crash():
    # CPython < 3.14 ends a daemon thread that wakes during shutdown with pthread_exit, a
    # forced unwind through divest's frames. A wheel linked with a second, static unwinder
    # crashed here (signal 11) every time; the unwinder must be the system's libgcc_s.
    import subprocess

    for _ in range(3):
        p = subprocess.run(
            [sys.executable, "-c", _EXIT_WITH_DAEMON], capture_output=True, text=True, timeout=120
        )
        assert p.returncode == 0 and "OK" in p.stdout, (p.returncode, p.stderr[-1000:])
