"""asv benchmarks for KDE: time and peak memory.

Run with ``asv run --python=same --quick`` (uses the installed divest).
"""

import numpy as np

import divest


class KDELogpdf:
    params = ([(20000, 16), (5000, 256), (2000, 1024)], ["float64", "float32"])
    param_names = ["n_d", "dtype"]
    timeout = 300

    def setup(self, n_d, dtype):
        n, d = n_d
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((n, d)).astype(dtype)
        self.q = rng.standard_normal((n, d)).astype(dtype)
        bw = "scott" if d <= 16 else 1.0
        self.kde = divest.KDE(self.x, bandwidth=bw)

    def time_logpdf(self, n_d, dtype):
        self.kde.logpdf(self.q)

    def peakmem_logpdf(self, n_d, dtype):
        self.kde.logpdf(self.q)


class KDEScoreAndLOO:
    params = [(5000, 16), (3000, 256)]
    param_names = ["n_d"]
    timeout = 300

    def setup(self, n_d):
        n, d = n_d
        rng = np.random.default_rng(1)
        self.x = rng.standard_normal((n, d))
        self.kde = divest.KDE(self.x)

    def time_score(self, n_d):
        self.kde.score(self.x)

    def time_loo_logpdf(self, n_d):
        self.kde.loo_logpdf()

    def time_select_bandwidth_32(self, n_d):
        divest.select_bandwidth(self.x, warn_edge=False)

    def peakmem_select_bandwidth_32(self, n_d):
        divest.select_bandwidth(self.x, warn_edge=False)
