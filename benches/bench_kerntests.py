"""asv benchmarks for the kernel tests and sliced transport of issue 17, and a short
comparison against the peers (hyppo's Hsic and MMD tests, POT's sliced Wasserstein):

    python benches/bench_kerntests.py        # prints one line per case

asv: ``asv run --python=same --quick`` (uses the installed divest).
"""

import time

import numpy as np

import divest


def _pair(n, d, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    return x, x[:, :1] ** 2 + rng.standard_normal((n, 1))


class HsicTest:
    params = [500, 2000]
    param_names = ["n"]
    timeout = 300

    def setup(self, n):
        self.x, self.y = _pair(n, 3)

    def time_hsic_test(self, n):
        divest.hsic_test(self.x, self.y, n_resamples=200, rng=0)


class MmdTest:
    params = [500, 2000]
    param_names = ["n"]
    timeout = 300

    def setup(self, n):
        self.x, self.y = _pair(n, 3)
        self.y = np.random.default_rng(1).standard_normal((n, 3))

    def time_mmd_test(self, n):
        divest.mmd_test(self.x, self.y, n_resamples=200, rng=0)


class Sliced:
    params = ["10000x10", "100000x3"]  # strings: asv reads a list of tuples as several axes
    param_names = ["n_d"]
    timeout = 300

    def setup(self, n_d):
        n, d = map(int, n_d.split("x"))
        rng = np.random.default_rng(2)
        self.x, self.y = rng.standard_normal((n, d)), rng.standard_normal((n, d)) + 0.1

    def time_sliced(self, n_d):
        divest.sliced_wasserstein(self.x, self.y, n_projections=200, rng=0)

    def peakmem_sliced(self, n_d):
        divest.sliced_wasserstein(self.x, self.y, n_projections=200, rng=0)


def _best(f, *args, rounds=3, **kw):
    t = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        f(*args, **kw)
        t.append(time.perf_counter() - t0)
    return min(t)


def main():
    print(f"divest threads: {divest.get_num_threads()} (the machine may be loaded)")
    try:
        from hyppo.independence import Hsic
        from hyppo.ksample import MMD
    except ImportError:
        Hsic = MMD = None
    B = 200
    for n in (200, 500):
        x, y = _pair(n, 3)
        t_d = _best(divest.hsic_test, x, y, n_resamples=B, rng=0)
        line = f"hsic_test n={n} B={B}: divest {t_d * 1e3:.1f} ms"
        if Hsic is not None:
            Hsic().test(x, y, reps=5, auto=False)  # numba warm-up
            t_h = _best(Hsic().test, x, y, rounds=1, reps=B, auto=False, workers=1)
            line += f", hyppo {t_h * 1e3:.1f} ms (x{t_h / t_d:.1f})"
        print(line)
        y2 = np.random.default_rng(5).standard_normal((n, 3))
        t_d = _best(divest.mmd_test, x, y2, n_resamples=B, rng=0)
        line = f"mmd_test n=m={n} B={B}: divest {t_d * 1e3:.1f} ms"
        if MMD is not None:
            MMD().test(x, y2, reps=5, auto=False)
            t_h = _best(MMD().test, x, y2, rounds=1, reps=B, auto=False, workers=1)
            line += f", hyppo {t_h * 1e3:.1f} ms (x{t_h / t_d:.1f})"
        print(line)
    try:
        import ot
    except ImportError:
        ot = None
    for n, d in ((10_000, 10), (100_000, 3)):
        rng = np.random.default_rng(2)
        x, y = rng.standard_normal((n, d)), rng.standard_normal((n, d)) + 0.1
        th = rng.standard_normal((200, d))
        th /= np.linalg.norm(th, axis=1, keepdims=True)
        t_d = _best(divest.sliced_wasserstein, x, y, projections=th)
        line = f"sliced_wasserstein n={n} d={d} L=200: divest {t_d * 1e3:.1f} ms"
        if ot is not None:
            t_p = _best(ot.sliced_wasserstein_distance, x, y, projections=th.T)
            line += f", POT {t_p * 1e3:.1f} ms (x{t_p / t_d:.1f})"
        print(line)


if __name__ == "__main__":
    main()
