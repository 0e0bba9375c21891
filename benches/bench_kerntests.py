"""asv benchmarks for the kernel tests and sliced transport of issue 17, and a short
comparison against the peers (hyppo's Hsic and MMD tests, POT's sliced Wasserstein):

    python benches/bench_kerntests.py          # prints one line per case
    python benches/bench_kerntests.py --large  # n = 4096 and 10^4, B = 100 (issue 17)

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


class LargeTests:
    """The n > 2048 path (tiles through the pairwise engine), B = 100."""

    params = [4096, 10000]
    param_names = ["n"]
    timeout = 600

    def setup(self, n):
        self.x, self.y = _pair(n, 3)
        self.y2 = np.random.default_rng(5).standard_normal((n, 3))

    def time_hsic_test_b100(self, n):
        divest.hsic_test(self.x, self.y, bandwidth=1.0, n_resamples=100, rng=0)

    def time_mmd_test_b100(self, n):
        divest.mmd_test(self.x, self.y2, bandwidth=1.0, n_resamples=100, rng=0)


def large(sizes=(4096, 10_000), b=100, peer_max=4096, before_b=0):
    """mmd_test (x and y of n points each) and hsic_test (n pairs), d = 3, σ = 1, B = b.
    With ``before_b`` > 0, each call runs with that many resamples instead and the time
    for B = b is extrapolated linearly (for builds too slow to time at B = b)."""
    print(f"divest threads: {divest.get_num_threads()} (the machine may be loaded)")
    try:
        from hyppo.independence import Hsic
        from hyppo.ksample import MMD
    except ImportError:
        Hsic = MMD = None
    for n in sizes:
        x, y = _pair(n, 3)
        y2 = np.random.default_rng(5).standard_normal((n, 3))
        for name, f, peer in (
            (
                "hsic_test",
                lambda r, x=x, y=y: divest.hsic_test(x, y, bandwidth=1.0, n_resamples=r, rng=0),
                Hsic,
            ),
            (
                "mmd_test",
                lambda r, x=x, y2=y2: divest.mmd_test(x, y2, bandwidth=1.0, n_resamples=r, rng=0),
                MMD,
            ),
        ):
            r = before_b or b
            c0 = time.process_time()
            t_d = _best(f, r, rounds=1)
            cpu = time.process_time() - c0
            if before_b:
                # On the old path the observed statistic costs one resample, and HSIC's
                # row-sum pass (both kernels over all pairs) one more.
                u = 2 if name == "hsic_test" else 1
                t_d, cpu = (v / (before_b + u) * (b + u) for v in (t_d, cpu))
            line = f"{name} n={n} B={b}: divest {t_d:.2f} s wall, {cpu:.2f} s CPU" + (
                f" (extrapolated from B={before_b})" if before_b else ""
            )
            if peer is not None and n <= peer_max:
                a, c = (x, y) if name == "hsic_test" else (x, y2)
                peer().test(a[:50], c[:50], reps=5, auto=False)  # numba warm-up
                t_h = _best(peer().test, a, c, rounds=1, reps=b, auto=False, workers=1)
                line += f", hyppo {t_h:.2f} s (x{t_h / t_d:.1f})"
            print(line, flush=True)


if __name__ == "__main__":
    import sys

    if "--large" in sys.argv:
        before = [int(a.split("=")[1]) for a in sys.argv if a.startswith("--before-b=")]
        large(before_b=before[0] if before else 0)
    else:
        main()
