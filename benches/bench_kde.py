"""asv benchmarks for KDE: time and peak memory.

Run with ``asv run --python=same --quick`` (uses the installed divest). The inputs are
built by ``divest._bench.workloads`` (shared with ``python -m divest bench`` and the tour).
"""

import divest
from divest._bench import workloads as wl


class KDELogpdf:
    params = (["20000x16", "5000x256", "2000x1024"], ["float64", "float32"])
    param_names = ["n_d", "dtype"]
    timeout = 300

    def setup(self, n_d, dtype):
        n, d = map(int, n_d.split("x"))
        x, self.q = wl.kde_data(n, d, dtype=dtype)
        self.kde = divest.KDE(x, bandwidth="scott" if d <= 16 else 1.0)

    def time_logpdf(self, n_d, dtype):
        self.kde.logpdf(self.q)

    def peakmem_logpdf(self, n_d, dtype):
        self.kde.logpdf(self.q)


class KDEScoreAndLOO:
    params = [f"{n}x{d}" for n, d in wl.KDE_SELECT_SHAPES]
    param_names = ["n_d"]
    timeout = 300

    def setup(self, n_d):
        self.x = wl.kde_select(*map(int, n_d.split("x")))
        self.kde = divest.KDE(self.x)

    def time_score(self, n_d):
        self.kde.score(self.x)

    def time_loo_logpdf(self, n_d):
        self.kde.loo_logpdf()

    def time_select_bandwidth_32(self, n_d):
        divest.select_bandwidth(self.x, warn_edge=False)

    def peakmem_select_bandwidth_32(self, n_d):
        divest.select_bandwidth(self.x, warn_edge=False)


class BandwidthMatrix:
    """bandwidth="plugin" / "scv" (issue 11) on the 2-D bimodal mixture of
    divest._bench.kdebw, n = 10⁴ and 10⁵."""

    params = (["plugin", "scv"], [10_000, 100_000])
    param_names = ["method", "n"]
    timeout = 300

    def setup(self, method, n):
        from divest._bench.kdebw import sample

        self.x = sample(n, seed=n)

    def time_select(self, method, n):
        divest.KDE(self.x, bandwidth=method)
