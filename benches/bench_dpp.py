"""asv benchmarks for DPPs and volume sampling: time and peak memory.

Run with ``asv run --python=same --quick`` (uses the installed divest). The inputs are
built by ``divest._bench.workloads`` (shared with ``python -m divest bench`` and the tour).
"""

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
