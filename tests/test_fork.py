"""Fork safety: a child forked while another thread is inside divest never hangs (issue 18)."""

import os
import signal
import threading
import time

import numpy as np
import pytest

import divest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() in a threaded process
def test_fork_never_hangs_while_another_thread_changes_threads():
    x = np.random.default_rng(5).standard_normal((300, 2))
    want = divest.KDE(x, bandwidth=0.5).logpdf(x[:5])
    stop = threading.Event()

    def hammer():
        # Every step changes the thread count, so pools are built (under the cache's lock)
        # all the time while the main thread forks.
        i = 0
        while not stop.is_set():
            with divest.threads(1 + i % 3):
                divest.KDE(x, bandwidth=0.5).logpdf(x[:40])
            divest.set_num_threads(1 + (i + 1) % 4)
            i += 1

    default = divest.get_num_threads()
    t = threading.Thread(target=hammer, daemon=True)
    t.start()
    pids = []
    try:
        for _ in range(100):
            pid = os.fork()
            if pid == 0:  # child: one small divest call, then leave without cleanup
                code = 1
                try:
                    got = divest.KDE(x, bandwidth=0.5).logpdf(x[:5])
                    code = 0 if np.array_equal(got, want) else 2
                finally:
                    os._exit(code)
            pids.append(pid)
    finally:
        stop.set()
        t.join(30)
        divest.set_num_threads(default)
    codes = {}
    deadline = time.monotonic() + 30
    while len(codes) < len(pids) and time.monotonic() < deadline:
        for pid in pids:
            if pid not in codes:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes[pid] = os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    hung = [pid for pid in pids if pid not in codes]
    for pid in hung:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert not hung, f"{len(hung)} of {len(pids)} forked children hung"
    assert all(c == 0 for c in codes.values()), sorted(codes.values())
