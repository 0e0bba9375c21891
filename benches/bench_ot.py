"""asv benchmarks for entropic optimal transport: time and peak memory.

Run with ``asv run --python=same --quick`` (uses the installed divest). The inputs are
built by ``divest._bench.workloads`` (shared with ``python -m divest bench`` and the tour).
"""

import divest
from divest._bench import workloads as wl


class SinkhornDense:
    params = ([500, 2000], [1e-2, 1e-3], ["float64", "float32"])
    param_names = ["n", "reg", "dtype"]
    timeout = 300

    def setup(self, n, reg, dtype):
        self.w, _, self.c = wl.ot_dense(n, dtype=dtype)

    def time_sinkhorn(self, n, reg, dtype):
        tol = 1e-9 if dtype == "float64" else 1e-6
        divest.sinkhorn(self.w, self.w, self.c, reg, tol=tol, max_iter=100000, return_plan=False)

    def peakmem_sinkhorn(self, n, reg, dtype):
        divest.sinkhorn(self.w, self.w, self.c, reg, tol=1e-6, max_iter=100000)


class SinkhornBatch:
    params = [64, 128]
    param_names = ["size"]
    timeout = 300

    def setup(self, size):
        self.w, self.c = wl.ot_batch(1000, size)

    def time_batch(self, size):
        divest.sinkhorn_batch(self.w, self.w, self.c, 0.05, tol=1e-9)


class SinkhornBatchRagged:
    """1000 problems of n_k x m_k, sizes 16..128: one pass, and the size-group route."""

    def setup(self):
        self.a, self.b, self.c = wl.ot_ragged(1000)

    def time_ragged_one_pass(self):
        divest.sinkhorn_batch(self.a, self.b, self.c, 0.05, tol=1e-9)

    def time_ragged_size_groups(self):
        wl.ot_ragged_by_size(self.a, self.b, self.c, 0.05, tol=1e-9)


class SinkhornDivergence:
    params = [1000, 5000]
    param_names = ["n"]
    timeout = 600

    def setup(self, n):
        self.x, self.y = wl.ot_clouds(n)

    def time_divergence(self, n):
        # GeomLoss's schedule (blur 0.05, scaling 0.9) without a tolerance loop.
        divest.sinkhorn_divergence(self.x, self.y, eps=2 * 0.05**2, grad=False)

    def time_divergence_tol(self, n):
        divest.sinkhorn_divergence(self.x, self.y, eps=2 * 0.05**2, tol=1e-3)

    def peakmem_divergence(self, n):
        divest.sinkhorn_divergence(self.x, self.y, eps=2 * 0.05**2)


class SinkhornDivergenceLarge:
    """n = m = 20000, d = 3: the issue asks for under 50 MB of extra memory. A large eps
    keeps the schedule short; memory does not depend on its length. (asv's peakmem counts
    the whole process; the extra memory is that minus the setup's, about 13 MB here.)"""

    timeout = 900

    def setup(self):
        self.x, self.y = wl.ot_clouds(20000, seed=3)

    def peakmem_divergence_20000(self):
        divest.sinkhorn_divergence(self.x, self.y, eps=2.0)
