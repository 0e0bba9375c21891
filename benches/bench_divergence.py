"""asv benchmarks for divergences: time and peak memory.

Run with ``asv run --python=same --quick`` (uses the installed divest).
"""

import numpy as np

import divest


class DiscreteDivergences:
    params = (["kl", "js", "hellinger", "tv"], ["float64", "float32"])
    param_names = ["measure", "dtype"]
    timeout = 300

    def setup(self, measure, dtype):
        rng = np.random.default_rng(0)
        self.p = rng.dirichlet(np.ones(1000), 10000).astype(dtype)
        self.q = rng.dirichlet(np.ones(1000), 10000).astype(dtype)
        self.f = getattr(divest, measure)

    def time_batch(self, measure, dtype):
        self.f(self.p, self.q)

    def peakmem_batch(self, measure, dtype):
        self.f(self.p, self.q)


class LogitsKL:
    params = [(512, 32000)]
    param_names = ["shape"]
    timeout = 300

    def setup(self, shape):
        rng = np.random.default_rng(1)
        self.z1 = rng.standard_normal(shape).astype(np.float32)
        self.z2 = rng.standard_normal(shape).astype(np.float32)

    def time_kl_from_logits(self, shape):
        divest.kl(self.z1, self.z2, from_logits=True)

    def peakmem_kl_from_logits(self, shape):
        divest.kl(self.z1, self.z2, from_logits=True)


class SampleEstimators:
    params = [(5000, 8), (20000, 8)]
    param_names = ["n_d"]
    timeout = 600

    def setup(self, n_d):
        n, d = n_d
        rng = np.random.default_rng(2)
        self.x = rng.standard_normal((n, d))
        self.y = rng.standard_normal((n, d)) + 0.2

    def time_knn_kl(self, n_d):
        divest.knn_kl(self.x, self.y, 5)

    def time_cs_divergence(self, n_d):
        divest.cs_divergence(self.x, self.y, 1.0)

    def time_mmd(self, n_d):
        divest.mmd(self.x, self.y, 1.0)

    def peakmem_mmd(self, n_d):
        divest.mmd(self.x, self.y, 1.0)
