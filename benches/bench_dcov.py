"""asv benchmarks for distance covariance and energy statistics: time and peak memory.

Run with ``asv run --python=same --quick`` (uses the installed divest). The inputs are
built by ``divest._bench.workloads`` (shared with ``python -m divest bench`` and the tour).
"""

import divest
from divest._bench import workloads as wl


class Dcor1D:
    params = [200_000, 1_000_000]
    param_names = ["n"]
    timeout = 300

    def setup(self, n):
        # Shifted far from zero: the O(n log n) path must centre exactly.
        self.x, self.y = wl.dcov_1d(n, offset=1e10)

    def time_dcor(self, n):
        divest.dcor(self.x, self.y)

    def peakmem_dcor(self, n):
        divest.dcor(self.x, self.y)


class DcorMultivariate:
    # Strings, not tuples: asv reads a list of tuples as several parameter axes.
    params = ["5000x10x5", "20000x5x3"]
    param_names = ["n_p_q"]
    timeout = 300

    def setup(self, n_p_q):
        self.x, self.y = wl.dcov_pair(*map(int, n_p_q.split("x")))

    def time_dcor(self, n_p_q):
        divest.dcor(self.x, self.y)

    def peakmem_dcor(self, n_p_q):
        divest.dcor(self.x, self.y)

    def time_dcov_sqr_unbiased(self, n_p_q):
        divest.dcov_sqr(self.x, self.y, unbiased=True)


class Tests:
    timeout = 300

    def setup(self):
        self.x, self.y = wl.dcov_pair(*wl.DCOV_TEST_SHAPE, seed=wl.DCOV_TEST_SEED)

    def time_dcov_test_500(self):
        divest.dcov_test(self.x, self.y, n_resamples=500, rng=0)

    def peakmem_dcov_test_500(self):
        divest.dcov_test(self.x, self.y, n_resamples=500, rng=0)

    def time_energy_test_200(self):
        divest.energy_test(self.x, self.y + 0.1, n_resamples=200, rng=0)


class Energy:
    timeout = 300

    def setup(self):
        self.a, self.b = wl.energy_pair(5000)

    def time_energy_distance(self):
        divest.energy_distance(self.a, self.b)

    def peakmem_energy_distance(self):
        divest.energy_distance(self.a, self.b)


class JointDcov:
    timeout = 300

    def setup(self):
        self.xs = wl.jdcov_samples()

    def time_jdcov(self):
        divest.jdcov(*self.xs)

    def time_jdcov_grad(self):
        divest.jdcov(*self.xs, return_grad=True)

    def peakmem_jdcov_grad_scaled(self):
        divest.jdcov(*self.xs, return_grad=True, scale=True)


class DcorMatrix:
    """All column pairs (issue 17)."""

    params = ["1000x200"]  # strings: asv reads a list of tuples as several axes
    param_names = ["n_p"]
    timeout = 300

    def setup(self, n_p):
        import numpy as np

        self.X = np.random.default_rng(0).standard_normal(tuple(map(int, n_p.split("x"))))

    def time_dcor_matrix(self, n_p):
        divest.dcor_matrix(self.X)

    def peakmem_dcor_matrix(self, n_p):
        divest.dcor_matrix(self.X)
