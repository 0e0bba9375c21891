"""asv benchmarks for densities on grids (issue 11): 1-D n = 10⁶ on 4096 points, binned
(from a KDE and one-shot) and exact, the ISJ bandwidth, 2-D n = 10⁶ on 512 × 512 points
(with and without ``rtol``) and the 2-D plug-in bandwidth matrix.

Run with ``asv run --python=same --quick`` (uses the installed divest).
"""

import numpy as np

import divest


class KDEGrid1D:
    params = (
        [
            "gaussian-binned",
            "gaussian-binned-weighted",
            "gaussian-exact",
            "epanechnikov-exact",
            "cosine-exact",
            "exponential-exact",
        ],
    )
    param_names = ["case"]
    timeout = 300

    def setup(self, case):
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal(1_000_000)
        parts = case.split("-")
        self.kernel, self.method = parts[0], parts[1]
        w = rng.random(self.x.size) if parts[-1] == "weighted" else None
        self.kde = divest.KDE(self.x, bandwidth="silverman", kernel=self.kernel, weights=w)

    def time_grid(self, case):
        self.kde.grid(4096, method=self.method)

    def peakmem_grid(self, case):
        self.kde.grid(4096, method=self.method)


class KDEGridOneShot:
    """``kde_grid`` on raw 1-D data: validation, bandwidth rule and grid in one call."""

    params = (["0.05", "silverman", "isj"],)
    param_names = ["bandwidth"]
    timeout = 300

    def setup(self, bandwidth):
        self.x = np.random.default_rng(0).standard_normal(1_000_000)
        self.bw = float(bandwidth) if bandwidth[0].isdigit() else bandwidth

    def time_one_shot(self, bandwidth):
        divest.kde_grid(self.x, bandwidth=self.bw, n_points=4096)


class ISJ:
    timeout = 300

    def setup(self):
        rng = np.random.default_rng(1)
        self.x = np.where(
            rng.random(1_000_000) < 0.5, rng.normal(-2, 0.5, 1_000_000), rng.normal(1, 1, 1_000_000)
        )

    def time_isj_1e6(self):
        divest.isj_bandwidth(self.x)


class KDEGrid2D:
    """2-D, n = 10⁶ correlated Gaussian data, Scott's rule (full bandwidth) or its
    diagonal, on a 512 × 512 grid, binned."""

    params = (["full", "diagonal"],)
    param_names = ["bandwidth"]
    timeout = 300

    def setup(self, bandwidth):
        rng = np.random.default_rng(2)
        z = rng.standard_normal((1_000_000, 2))
        x = np.column_stack([z[:, 0], 0.6 * z[:, 0] + 0.8 * z[:, 1]])
        bw = "scott" if bandwidth == "full" else np.sqrt(np.diag(divest.KDE(x).bandwidth))
        self.kde = divest.KDE(x, bandwidth=bw)

    def time_grid(self, bandwidth):
        self.kde.grid((512, 512), method="binned")

    def peakmem_grid(self, bandwidth):
        self.kde.grid((512, 512), method="binned")

    def time_grid_rtol(self, bandwidth):
        if bandwidth == "diagonal":
            self.kde.grid((512, 512), method="binned", rtol=5e-5)


class PluginBandwidth:
    """The 2-D and 3-D plug-in bandwidth matrix (bandwidth="plugin"), n = 10⁵."""

    params = ([2, 3],)
    param_names = ["d"]
    timeout = 300

    def setup(self, d):
        self.x = np.random.default_rng(3).standard_normal((100_000, d))

    def time_plugin(self, d):
        divest.KDE(self.x, bandwidth="plugin")
