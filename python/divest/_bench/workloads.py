"""Every benchmark workload, defined once: the data, its seed and its sizes.

The asv suite (``benches/bench_*.py``), the comparison against peers (``python -m divest
bench``, ``benches/compare.py``, the cases in ``divest/_bench/<family>.py``) and the timed
lines of the tour (``python -m divest tour``) all build their inputs here. The Rust timing
examples (``examples/*_timing.rs``) cannot import Python; each names the builder it
mirrors and generates data by the same recipe (same shapes, same distributions, its own
seeded generator).

Each builder is deterministic: its default ``seed`` is the one the asv suite uses, so asv
results stay comparable over time. Sizes that the comparison and the tour share are the
module constants below: the full size and the ``--quick`` size.
"""

from __future__ import annotations

import numpy as np

#: (full, quick) sizes shared by ``python -m divest bench`` and the tour.
OT_DENSE_N = (2000, 1000)
KDE_LOGPDF_N = (20000, 5000)  # d = 16
KDE_WIDE_N = (5000, 2000)  # d = 256
DISCRETE_ROWS = (10000, 2000)  # 1000 categories
LOGITS_ROWS = (512, 128)  # 32000 classes, float32
DCOV_N = (5000, 2000)  # p = 10, q = 5
DCOV_1D_N = (200_000, 50_000)
ENERGY_N = (5000, 2000)  # d = 10
DPP_LENSEMBLE_N = (2000, 1000)
KNN_N = (20000, 5000)  # d = 8
KERNEL_N = (5000, 2000)  # d = 8


def size(sizes: tuple[int, int], quick: bool) -> int:
    """The full or the ``--quick`` size of a ``(full, quick)`` pair."""
    return sizes[1] if quick else sizes[0]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- optimal transport ---------------------------------------------------------------


def ot_dense(n: int, seed: int = 0, dtype=np.float64):
    """Dense OT problem: two clouds of `n` points uniform on the unit square, cost the
    squared distances divided by their maximum, uniform weights. Returns ``(a, b, C)``;
    only ``C`` takes `dtype`."""
    rng = _rng(seed)
    x, y = rng.random((n, 2)), rng.random((n, 2))
    c = ((x[:, None] - y[None]) ** 2).sum(-1)
    c /= c.max()
    w = np.full(n, 1.0 / n)
    return w, w.copy(), c.astype(dtype, copy=False)


def ot_batch(nb: int, k: int, seed: int = 1):
    """A batch of `nb` OT problems of ``k x k``: each the recipe of :func:`ot_dense`
    (clouds uniform on the unit square, squared distances over the problem's maximum),
    uniform weights. Returns ``(w, C)`` of shapes ``(nb, k)`` and ``(nb, k, k)``; the
    benchmarks solve them at reg 0.05, tol 1e-9."""
    rng = _rng(seed)
    xs, ys = rng.random((nb, k, 2)), rng.random((nb, k, 2))
    c = ((xs[:, :, None] - ys[:, None]) ** 2).sum(-1)
    c /= c.max(axis=(1, 2), keepdims=True)
    return np.full((nb, k), 1.0 / k), c


def ot_ragged(nb: int, lo: int = 16, hi: int = 128, seed: int = 3):
    """A ragged batch: `nb` OT problems of ``n_k x m_k`` with n_k and m_k drawn uniformly
    in ``[lo, hi]`` (independently), each the recipe of :func:`ot_dense` (squared distances
    over the problem's maximum, uniform weights). Returns lists ``(a, b, C)``; the
    benchmarks solve them at reg 0.05, tol 1e-9."""
    rng = _rng(seed)
    a, b, c = [], [], []
    for _ in range(nb):
        n, m = (int(v) for v in rng.integers(lo, hi + 1, size=2))
        x, y = rng.random((n, 2)), rng.random((m, 2))
        ck = ((x[:, None] - y[None]) ** 2).sum(-1)
        c.append(ck / ck.max())
        a.append(np.full(n, 1.0 / n))
        b.append(np.full(m, 1.0 / m))
    return a, b, c


def ot_ragged_by_size(a, b, c, reg, **kw):
    """The size-group route to a ragged batch (the one before the one-pass kernel): one
    dense ``sinkhorn_batch`` per distinct size, the groups one after the other. Returns the
    linear costs in problem order (for the benchmarks' comparison)."""
    import divest

    groups: dict = {}
    for k, ck in enumerate(c):
        groups.setdefault(ck.shape, []).append(k)
    out = np.empty(len(c))
    for ks in groups.values():
        r = divest.sinkhorn_batch(
            np.stack([a[k] for k in ks]),
            np.stack([b[k] for k in ks]),
            np.stack([c[k] for k in ks]),
            reg,
            **kw,
        )
        out[ks] = r.linear_cost
    return out


def ot_clouds(n: int, d: int = 3, seed: int = 2):
    """Two point clouds of `n` points uniform on the unit cube of dimension `d` (the
    Sinkhorn divergence workloads). Returns ``(x, y)``."""
    rng = _rng(seed)
    return rng.random((n, d)), rng.random((n, d))


# --- kernel density estimation -------------------------------------------------------


def kde_data(n: int, d: int, seed: int = 0, dtype=np.float64):
    """KDE data and queries: `n` points and `n` queries, standard normal in `d`
    dimensions. Returns ``(x, q)``."""
    rng = _rng(seed)
    x = rng.standard_normal((n, d)).astype(dtype, copy=False)
    q = rng.standard_normal((n, d)).astype(dtype, copy=False)
    return x, q


#: (n, d) of the bandwidth-selection and leave-one-out workloads.
KDE_SELECT_SHAPES = [(5000, 16), (3000, 256)]


def kde_select(n: int, d: int, seed: int = 1):
    """Data for bandwidth selection and leave-one-out passes: `n` standard normal points
    in `d` dimensions."""
    return _rng(seed).standard_normal((n, d))


# --- distance covariance -------------------------------------------------------------


def dcov_1d(n: int, seed: int = 0, offset: float = 0.0):
    """1-D dependent pair: ``x`` standard normal, ``y = x**2 + noise`` (uncorrelated but
    dependent), both shifted by `offset` (a large offset exercises exact centring)."""
    rng = _rng(seed)
    x = rng.standard_normal(n)
    y = x**2 + rng.standard_normal(n)
    return x + offset, y + offset


def dcov_pair(n: int, p: int, q: int, seed: int = 1):
    """Multivariate dependent pair: ``x`` standard normal ``(n, p)``; ``y`` ``(n, q)``
    whose first two columns are ``x[:, j]**2 + noise`` (near zero Pearson correlation,
    strong dependence) and whose other columns are noise. Needs p, q >= 2."""
    rng = _rng(seed)
    x = rng.standard_normal((n, p))
    y = rng.standard_normal((n, q))
    y[:, :2] += x[:, :2] ** 2
    return x, y


#: (n, p, q) of the permutation-test workload and its seed.
DCOV_TEST_SHAPE, DCOV_TEST_SEED = (1000, 3, 3), 2


def energy_pair(n: int, d: int = 10, seed: int = 3, shift: float = 0.1):
    """Two samples for the energy distance: ``N(0, I_d)`` and ``N(shift, I_d)``."""
    rng = _rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((n, d)) + shift


def jdcov_samples(n: int = 3000, d: int = 2, k: int = 4, seed: int = 4):
    """`k` independent standard normal samples of shape ``(n, d)`` (joint dCov)."""
    rng = _rng(seed)
    return [rng.standard_normal((n, d)) for _ in range(k)]


# --- determinantal point processes ---------------------------------------------------


def dpp_basis(n: int, m: int, seed: int = 0):
    """An ``(n, m)`` orthonormal basis: the Q factor of a standard normal matrix (the
    projection DPP workloads)."""
    return np.linalg.qr(_rng(seed).standard_normal((n, m)))[0]


def dpp_gaussian_kernel(n: int, seed: int = 2):
    """L-ensemble kernel ``exp(-|g_i - g_j|^2 / 2)`` of `n` standard normal points in 3-D
    (``n x n``, built densely: the workloads are small)."""
    g = _rng(seed).standard_normal((n, 3))
    return np.exp(-0.5 * np.sum((g[:, None, :] - g[None, :, :]) ** 2, axis=-1))


def dpp_design(n: int, d: int, seed: int = 4):
    """An ``(n, d)`` standard normal design matrix (volume sampling, least squares)."""
    return _rng(seed).standard_normal((n, d))


# --- divergences ---------------------------------------------------------------------


def discrete_pairs(n: int, k: int = 1000, seed: int = 0, dtype=np.float64):
    """`n` pairs of distributions on `k` categories, each flat-Dirichlet. Returns
    ``(p, q)`` of shape ``(n, k)``."""
    rng = _rng(seed)
    p = rng.dirichlet(np.ones(k), n).astype(dtype, copy=False)
    q = rng.dirichlet(np.ones(k), n).astype(dtype, copy=False)
    return p, q


def logits_pair(rows: int, vocab: int = 32000, seed: int = 1):
    """Two float32 logit matrices ``(rows, vocab)``, standard normal."""
    rng = _rng(seed)
    z1 = rng.standard_normal((rows, vocab)).astype(np.float32)
    z2 = rng.standard_normal((rows, vocab)).astype(np.float32)
    return z1, z2


def shifted_samples(n: int, d: int = 8, seed: int = 2, shift: float = 0.2):
    """Two samples for the kNN and kernel estimators: ``N(0, I_d)`` and
    ``N(shift, I_d)``, `n` points each."""
    rng = _rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((n, d)) + shift


def correlated_normal(n: int, rho: float = 0.8, seed: int = 3):
    """`n` draws of a standard bivariate normal with correlation `rho` (mutual
    information ``-log(1 - rho**2) / 2``). Returns ``(u, v)``, 1-D each."""
    rng = _rng(seed)
    u = rng.standard_normal(n)
    return u, rho * u + np.sqrt(1 - rho**2) * rng.standard_normal(n)
