"""asv benchmarks for distance covariance and energy statistics: time and peak memory.

Run with ``asv run --python=same --quick`` (uses the installed divest).
"""

import numpy as np

import divest


class Dcor1D:
    params = [200_000, 1_000_000]
    param_names = ["n"]
    timeout = 300

    def setup(self, n):
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal(n) + 1e10
        self.y = self.x - 1e10 + rng.standard_normal(n)

    def time_dcor(self, n):
        divest.dcor(self.x, self.y)

    def peakmem_dcor(self, n):
        divest.dcor(self.x, self.y)


class DcorMultivariate:
    params = [(5000, 10, 5), (20000, 5, 3)]
    param_names = ["n_p_q"]
    timeout = 300

    def setup(self, n_p_q):
        n, p, q = n_p_q
        rng = np.random.default_rng(1)
        self.x = rng.standard_normal((n, p))
        self.y = rng.standard_normal((n, q))

    def time_dcor(self, n_p_q):
        divest.dcor(self.x, self.y)

    def peakmem_dcor(self, n_p_q):
        divest.dcor(self.x, self.y)

    def time_dcov_sqr_unbiased(self, n_p_q):
        divest.dcov_sqr(self.x, self.y, unbiased=True)


class Tests:
    timeout = 300

    def setup(self):
        rng = np.random.default_rng(2)
        self.x = rng.standard_normal((1000, 3))
        self.y = rng.standard_normal((1000, 3))

    def time_dcov_test_500(self):
        divest.dcov_test(self.x, self.y, n_resamples=500, rng=0)

    def time_energy_test_200(self):
        divest.energy_test(self.x, self.y + 0.1, n_resamples=200, rng=0)


class Energy:
    timeout = 300

    def setup(self):
        rng = np.random.default_rng(3)
        self.a = rng.standard_normal((5000, 10))
        self.b = rng.standard_normal((5000, 10))

    def time_energy_distance(self):
        divest.energy_distance(self.a, self.b)

    def peakmem_energy_distance(self):
        divest.energy_distance(self.a, self.b)


class JointDcov:
    timeout = 300

    def setup(self):
        rng = np.random.default_rng(4)
        self.xs = [rng.standard_normal((3000, 2)) for _ in range(4)]

    def time_jdcov(self):
        divest.jdcov(*self.xs)

    def time_jdcov_grad(self):
        divest.jdcov(*self.xs, return_grad=True)

    def peakmem_jdcov_grad_scaled(self):
        divest.jdcov(*self.xs, return_grad=True, scale=True)
