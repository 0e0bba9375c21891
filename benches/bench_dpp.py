"""asv benchmarks for DPPs and volume sampling: time and peak memory.

Run with ``asv run --python=same --quick`` (uses the installed divest). The inputs are
built by ``divest._bench.workloads`` (shared with ``python -m divest bench`` and the tour).
"""

import math
import time

import numpy as np

from divest import dpp
from divest._bench import workloads as wl


class ProjectionDPP:
    params = ([(5000, 100), (10000, 100), (2000, 20)], ["chain", "rejection"])
    param_names = ["n_m", "method"]
    timeout = 300

    def setup(self, n_m, method):
        self.u = wl.dpp_basis(*n_m)

    def time_one_sample(self, n_m, method):
        dpp.sample_projection(self.u, method=method, rng=1)

    def time_100_samples(self, n_m, method):
        dpp.sample_projection(self.u, 100, method=method, rng=1)

    def peakmem_100_samples(self, n_m, method):
        dpp.sample_projection(self.u, 100, method=method, rng=1)


class LEnsemble:
    params = [1000, 2000]
    param_names = ["n"]
    timeout = 300

    def setup(self, n):
        self.dpp = dpp.DPP(L=wl.dpp_gaussian_kernel(n))

    def time_sample(self, n):
        self.dpp.sample(rng=3)

    def time_sample_k50(self, n):
        self.dpp.sample_k(50, rng=3)

    def time_sample_k50_x100(self, n):
        self.dpp.sample_k(50, 100, rng=3)


class VolumeSampling:
    params = ["5000x20", "20000x50"]  # strings: asv reads a list of tuples as several axes
    param_names = ["n_d"]
    timeout = 300

    def setup(self, n_d):
        self.x = wl.dpp_design(*map(int, n_d.split("x")))

    def time_volume_sample_2d(self, n_d):
        dpp.volume_sample(self.x, 2 * self.x.shape[1], rng=5)

    def peakmem_volume_sample_2d(self, n_d):
        dpp.volume_sample(self.x, 2 * self.x.shape[1], rng=5)

    def time_volume_rescaled_4d(self, n_d):
        dpp.volume_rescaled_sample(self.x, 4 * self.x.shape[1], rng=5)

    def time_design_dpp_x10(self, n_d):
        dpp.least_squares_design(self.x, 10 * self.x.shape[1], method="dpp", rng=6)


def _greedy_kernel(n: int, r: int = 500, seed: int = 8):
    """A rank-r L-ensemble kernel B Bᵀ / r (B n×r standard normal): k ≤ r items fit."""
    b = np.random.default_rng(seed).standard_normal((n, r))
    return (b @ b.T) / r


class GreedyMap:
    params = [1000, 5000]
    param_names = ["n"]
    timeout = 300

    def setup(self, n):
        self.L = _greedy_kernel(n)

    def time_greedy_map_k200(self, n):
        dpp.greedy_map(self.L, 200)

    def peakmem_greedy_map_k200(self, n):
        dpp.greedy_map(self.L, 200)


def _before_numpy(L, kmax):
    """divest's previous NumPy greedy_map loop (the k-DPP case: floor threshold)."""
    N = L.shape[0]
    floor = N * np.finfo(float).eps * max(float(np.diag(L).max()), 0.0)
    d2 = np.maximum(np.diag(L).copy(), 0.0)
    avail = np.ones(N, dtype=bool)
    rows, out = [], []
    c = np.empty((0, N))
    while len(out) < kmax:
        cand = np.where(avail, d2, -np.inf)
        j = int(np.argmax(cand))
        if not (cand[j] > floor):
            break
        e = (L[j] - (c[:, j] @ c if rows else 0.0)) / math.sqrt(cand[j])
        out.append(j)
        avail[j] = False
        rows.append(e)
        c = np.asarray(rows)
        d2 = np.maximum(d2 - e * e, 0.0)
    return out


def _fast_map_reference(L, kmax, eps=1e-10):
    """Chen et al.'s fast greedy MAP as their reference code runs it, written plainly in
    NumPy: preallocated Cholesky rows, no clamping (negative pivots give NaN there)."""
    N = L.shape[0]
    c = np.zeros((kmax, N))
    d2 = np.diag(L).copy()
    j = int(np.argmax(d2))
    out = [j]
    while len(out) < kmax:
        t = len(out) - 1
        e = (L[j] - c[:t, j] @ c[:t]) / math.sqrt(d2[j])
        c[t] = e
        d2 -= e * e
        d2[j] = -np.inf
        j = int(np.argmax(d2))
        if d2[j] < eps:
            break
        out.append(j)
    return out


def main():
    """Prints greedy_map at N = 5000, k = 200 against the previous NumPy loop and the
    plain NumPy form of Chen et al.'s reference code (best of 3; threads as set)."""
    import divest

    print(f"divest threads: {divest.get_num_threads()} (the machine may be loaded)")
    for n, k in ((5000, 200), (2000, 100)):
        L = _greedy_kernel(n)
        t = {}
        for name, f in (
            ("divest (Rust)", lambda L=L, k=k: dpp.greedy_map(L, k)),
            ("divest before (NumPy)", lambda L=L, k=k: _before_numpy(L, k)),
            ("fast-map-dpp (NumPy)", lambda L=L, k=k: _fast_map_reference(L, k)),
        ):
            best = math.inf
            for _ in range(3):
                t0 = time.perf_counter()
                got = f()
                best = min(best, time.perf_counter() - t0)
            t[name] = (best, list(got))
        ref = t["divest (Rust)"]
        for name, (s, got) in t.items():
            same = "same selection" if got == ref[1] else "different selection"
            print(
                f"greedy_map N={n} k={k}: {name} {s * 1e3:.1f} ms "
                f"(x{s / ref[0]:.1f} of divest; {same})"
            )


if __name__ == "__main__":
    main()
