"""asv benchmarks for divergences: time and peak memory.

Run with ``asv run --python=same --quick`` (uses the installed divest). The inputs are
built by ``divest._bench.workloads`` (shared with ``python -m divest bench`` and the tour).
"""

import divest
from divest._bench import workloads as wl


class DiscreteDivergences:
    params = (["kl", "js", "hellinger", "tv"], ["float64", "float32"])
    param_names = ["measure", "dtype"]
    timeout = 300

    def setup(self, measure, dtype):
        self.p, self.q = wl.discrete_pairs(10000, 1000, dtype=dtype)
        self.f = getattr(divest, measure)

    def time_batch(self, measure, dtype):
        self.f(self.p, self.q)

    def peakmem_batch(self, measure, dtype):
        self.f(self.p, self.q)


class LogitsKL:
    params = ["512x32000"]  # strings: asv reads a list of tuples as several axes
    param_names = ["shape"]
    timeout = 300

    def setup(self, shape):
        self.z1, self.z2 = wl.logits_pair(*map(int, shape.split("x")))

    def time_kl_from_logits(self, shape):
        divest.kl(self.z1, self.z2, from_logits=True)

    def peakmem_kl_from_logits(self, shape):
        divest.kl(self.z1, self.z2, from_logits=True)


class SampleEstimators:
    params = ["5000x8", "20000x8"]
    param_names = ["n_d"]
    timeout = 600

    def setup(self, n_d):
        self.x, self.y = wl.shifted_samples(*map(int, n_d.split("x")))

    def time_knn_kl(self, n_d):
        divest.knn_kl(self.x, self.y, 5)

    def peakmem_knn_kl(self, n_d):
        divest.knn_kl(self.x, self.y, 5)

    def time_cs_divergence(self, n_d):
        divest.cs_divergence(self.x, self.y, 1.0)

    def peakmem_cs_divergence(self, n_d):
        divest.cs_divergence(self.x, self.y, 1.0)

    def time_mmd(self, n_d):
        divest.mmd(self.x, self.y, 1.0)

    def peakmem_mmd(self, n_d):
        divest.mmd(self.x, self.y, 1.0)
