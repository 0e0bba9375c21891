"""Distance covariance and energy statistics against dcor, brute-force NumPy references
and exact integer arithmetic."""

from __future__ import annotations

import importlib
from fractions import Fraction

import numpy as np
import pytest

import divest
from divest import _core

try:  # only the tests that compare with dcor skip without it
    import dcor
except ImportError:
    dcor = None
needs_dcor = pytest.mark.skipif(dcor is None, reason="dcor is not installed")
dmod = importlib.import_module("divest.dcov")


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


def naive_centred(x, exponent=1.0, unbiased=False):
    """Full-matrix double-centred (V) or U-centred distance matrix."""
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    n = x.shape[0]
    a = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)) ** exponent
    r = a.sum(1)
    t = r.sum()
    if unbiased:
        out = a - r[:, None] / (n - 2) - r[None, :] / (n - 2) + t / ((n - 1) * (n - 2))
        np.fill_diagonal(out, 0.0)
        return out
    return a - r[:, None] / n - r[None, :] / n + t / n**2


def data(rng, n, p, q, dep=1.0):
    x = rng.standard_normal((n, p))
    y = dep * np.sin(x[:, :1] * 2) + rng.standard_normal((n, q))
    return x, y


SHAPES = [(50, 1, 1), (64, 3, 2), (300, 10, 5), (257, 1, 4), (129, 20, 1)]


@needs_dcor
@pytest.mark.parametrize("n,p,q", SHAPES)
@pytest.mark.parametrize("exponent", [1.0, 0.5, 1.7])
def test_matches_dcor(n, p, q, exponent):
    rng = np.random.default_rng(n + p + q)
    x, y = data(rng, n, p, q)
    if p == 1 and q == 1 and exponent == 1.0:
        # dcor's fast 1-D methods are imprecise; compare with its naive method.
        kw = {"method": "naive"}
    else:
        kw = {}
    checks = [
        (
            divest.dcov_sqr(x, y, exponent),
            dcor.distance_covariance_sqr(x, y, exponent=exponent, **kw),
        ),
        (
            divest.dcov_sqr(x, y, exponent, unbiased=True),
            dcor.u_distance_covariance_sqr(x, y, exponent=exponent, **kw),
        ),
        (divest.dcov(x, y, exponent), dcor.distance_covariance(x, y, exponent=exponent, **kw)),
        (
            divest.dcor_sqr(x, y, exponent),
            dcor.distance_correlation_sqr(x, y, exponent=exponent, **kw),
        ),
        (
            divest.dcor_sqr(x, y, exponent, unbiased=True),
            dcor.u_distance_correlation_sqr(x, y, exponent=exponent, **kw),
        ),
        (divest.dcor(x, y, exponent), dcor.distance_correlation(x, y, exponent=exponent, **kw)),
    ]
    for got, want in checks:
        assert rel(got, float(want)) < 1e-10, (got, want)


def test_matches_full_matrix_reference_beyond_dcor():
    rng = np.random.default_rng(3)
    x, y = data(rng, 200, 30, 12)  # GEMM path for x (d > 16)
    for unbiased in (False, True):
        a, b = naive_centred(x, unbiased=unbiased), naive_centred(y, unbiased=unbiased)
        f = 1 / (200 * 197) if unbiased else 1 / 200**2
        assert rel(divest.dcov_sqr(x, y, unbiased=unbiased), (a * b).sum() * f) < 1e-10


@needs_dcor
def test_partial_dcor_and_energy_distance_match_dcor():
    rng = np.random.default_rng(4)
    x, y = data(rng, 150, 3, 2)
    z = x[:, :1] + 0.5 * rng.standard_normal((150, 1))
    assert rel(divest.partial_dcor(x, y, z), dcor.partial_distance_correlation(x, y, z)) < 1e-10
    assert (
        rel(divest.partial_dcor(x, y, z, exponent=1.0), dcor.partial_distance_correlation(x, y, z))
        < 1e-10
    )
    u = rng.standard_normal((120, 3))
    v = rng.standard_normal((90, 3)) * 1.3 + 0.2
    for e in (1.0, 0.6):
        assert (
            rel(divest.energy_distance(u, v, exponent=e), dcor.energy_distance(u, v, exponent=e))
            < 1e-10
        )
        assert (
            rel(
                divest.energy_distance(u, v, exponent=e, unbiased=True),
                dcor.energy_distance(u, v, exponent=e, estimation_stat="u_statistic"),
            )
            < 1e-10
        )


@pytest.mark.parametrize(
    "offset,scale",
    [(0.0, 1.0), (1e10, 1.0), (1e10, 1e8), (-1e10, 1e-3), (1e6, 1e-8), (0.0, 1e-8), (3.0, 1e8)],
)
def test_one_d_fast_path_is_precise_on_shifted_data(offset, scale):
    rng = np.random.default_rng(5)
    n = 2000
    z, w = rng.standard_normal(n), rng.standard_normal(n)
    x = offset + scale * z
    y = offset + scale * (w + 0.3 * z**2)
    xr, yr = x - offset, y - offset  # exact subtraction: the centred reference data
    for unbiased in (False, True):
        fast = dmod._stats(x, y, 1.0, unbiased, "sort")
        ref = dmod._stats(xr, yr, 1.0, unbiased, "pairwise")
        for g, r in zip(fast, ref):
            assert rel(g, r) < 1e-10, (offset, scale, g, r)
    # dcor's own fast path loses the precision that divest keeps.
    if offset == 1e10 and scale == 1.0:
        good = divest.dcor(x, y)
        assert rel(good, divest.dcor(xr, yr)) < 1e-10


@needs_dcor
def test_one_d_fast_path_matches_dcor_well_conditioned():
    rng = np.random.default_rng(6)
    x = rng.standard_normal(5000)
    y = x**2 + rng.standard_normal(5000)
    assert rel(divest.dcor_sqr(x, y), dcor.distance_correlation_sqr(x, y, method="naive")) < 1e-10
    assert (
        rel(
            divest.dcov_sqr(x, y, unbiased=True),
            dcor.u_distance_covariance_sqr(x, y, method="naive"),
        )
        < 1e-10
    )


def test_integer_inputs_are_exact():
    rng = np.random.default_rng(7)
    n = 120
    x = rng.integers(-(10**6), 10**6, n) + 3 * 10**9
    y = rng.integers(-1000, 1000, n) + x // 1000
    xi, yi = [int(v) for v in x], [int(v) for v in y]
    a = [[abs(p - q) for q in xi] for p in xi]
    b = [[abs(p - q) for q in yi] for p in yi]
    ra, rb = [sum(r) for r in a], [sum(r) for r in b]
    sab = sum(a[i][j] * b[i][j] for i in range(n) for j in range(n))
    ab = sum(p * q for p, q in zip(ra, rb))
    v = Fraction(n * n * sab - 2 * n * ab + sum(ra) * sum(rb), n**4)
    u = Fraction(
        (n - 1) * (n - 2) * sab - 2 * (n - 1) * ab + sum(ra) * sum(rb),
        n * (n - 1) * (n - 2) * (n - 3),
    )
    assert divest.dcov_sqr(x, y) == pytest.approx(float(v), rel=3e-16)
    assert divest.dcov_sqr(x, y, unbiased=True) == pytest.approx(float(u), rel=3e-16)
    # The engine path on the same integers (exact differences, no GEMM) agrees closely.
    assert rel(dmod._stats(x, y, 1.0, False, "pairwise")[0], float(v)) < 1e-12


@needs_dcor
def test_dtypes_layouts_and_threads():
    rng = np.random.default_rng(8)
    x, y = data(rng, 300, 4, 3)
    want = divest.dcov_sqr(x, y)
    assert divest.dcov_sqr(np.asfortranarray(x), y[::1]) == want
    assert divest.dcov_sqr(x.tolist(), y) == want
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    assert (
        rel(
            divest.dcov_sqr(x32, y32),
            dcor.distance_covariance_sqr(x32.astype(float), y32.astype(float)),
        )
        < 1e-10
    )
    xi = rng.integers(0, 5, (100, 2))
    assert (
        rel(
            divest.dcov_sqr(xi, xi[:, ::-1]),
            dcor.distance_covariance_sqr(xi.astype(float), xi[:, ::-1].astype(float)),
        )
        < 1e-10
    )
    xc = x.copy()
    divest.dcov_sqr(xc, y)
    assert np.array_equal(xc, x)
    with divest.threads(1):
        one = divest.dcov_sqr(x, y), divest.dcov_sqr(x[:, 0], y[:, 0])
    with divest.threads(2):
        two = divest.dcov_sqr(x, y), divest.dcov_sqr(x[:, 0], y[:, 0])
    assert one == two


def test_constant_data_and_bad_input():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((20, 2))
    c = np.ones(20)
    assert divest.dcor(x, c) == 0.0 and divest.dcor_sqr(x, c, unbiased=True) == 0.0
    assert divest.dcov_sqr(x, c) == 0.0
    assert divest.dcor(c, c) == 0.0
    assert divest.dcor(c, np.arange(20.0)) == 0.0
    with pytest.raises(ValueError, match="same number of observations"):
        divest.dcov_sqr(x, x[:-1])
    with pytest.raises(ValueError, match="at least 4"):
        divest.dcov_sqr(x[:3], x[:3], unbiased=True)
    with pytest.raises(ValueError, match="NaN or inf"):
        divest.dcor(np.r_[x[:, 0][:-1], np.nan], x[:, 1])
    with pytest.raises(ValueError, match="NaN or inf"):
        divest.energy_distance(x, np.r_[x[:-1], [[np.inf, 0]]])
    for bad in (0.0, 2.0, -1.0, np.nan):
        with pytest.raises(ValueError, match="exponent"):
            divest.dcov_sqr(x, x, exponent=bad)
    with pytest.raises(TypeError):
        divest.dcov_sqr(x, x, exponent="1")
    with pytest.raises(TypeError):
        divest.dcov_sqr(x + 1j, x)
    with pytest.raises(ValueError, match="same dimension"):
        divest.energy_distance(x, x[:, :1])
    with pytest.raises(ValueError, match="method"):
        divest.dcov_test(x, x, method="bootstrap")
    with pytest.raises(ValueError, match="n_resamples"):
        divest.dcov_test(x, x, n_resamples=0)
    with pytest.raises(ValueError, match="two samples"):
        divest.energy_test(x)


@needs_dcor
def test_permutation_test_is_reproducible_and_matches_definition():
    rng = np.random.default_rng(10)
    x, y = data(rng, 80, 2, 2, dep=0.3)
    r1 = divest.dcov_test(x, y, n_resamples=200, rng=42)
    with divest.threads(1):
        r2 = divest.dcov_test(x, y, n_resamples=200, rng=42)
    assert r1.statistic == r2.statistic and np.array_equal(
        r1.null_distribution, r2.null_distribution
    )
    assert r1.statistic == pytest.approx(80 * dcor.distance_covariance_sqr(x, y), rel=1e-12)
    ref = dcor.independence.distance_covariance_test(x, y, num_resamples=10, random_state=0)
    assert r1.statistic == pytest.approx(float(ref.statistic), rel=1e-12)
    assert r1.pvalue == (1 + np.sum(r1.null_distribution >= r1.statistic)) / 201
    assert isinstance(r1, divest.TestResult)
    # Each permuted statistic is n·dCov² of a permutation of y: its values are a
    # rearrangement-invariant set (mean close to the expectation under permutation).
    assert divest.dcov_test(x, y, n_resamples=50, rng=1).null_distribution.shape == (50,)
    assert not np.array_equal(
        divest.dcov_test(x, y, n_resamples=50, rng=2).null_distribution,
        divest.dcov_test(x, y, n_resamples=50, rng=1).null_distribution,
    )
    strong = divest.dcov_test(x[:, 0], x[:, 0] ** 2, n_resamples=99, rng=0)
    assert strong.pvalue == 0.01


def test_permutation_pvalues_are_uniform_under_independence():
    from scipy import stats

    rng = np.random.default_rng(11)
    ps = []
    for _ in range(300):
        x = rng.standard_normal((25, 2))
        y = rng.standard_normal((25, 1))
        ps.append(divest.dcov_test(x, y, n_resamples=99, rng=rng).pvalue)
    # p-values live on the grid k/100; compare with the discrete uniform law.
    assert stats.kstest(ps, "uniform").pvalue > 0.001
    assert 0.03 < np.mean(np.array(ps) <= 0.1) < 0.17
    pe = []
    for _ in range(200):
        pe.append(
            divest.energy_test(
                rng.standard_normal((15, 2)), rng.standard_normal((12, 2)), n_resamples=99, rng=rng
            ).pvalue
        )
    assert stats.kstest(pe, "uniform").pvalue > 0.001


@needs_dcor
def test_t_test_matches_reference_formula_and_dcor():
    from scipy import stats

    rng = np.random.default_rng(12)
    x, y = data(rng, 60, 5, 5, dep=0.2)
    res = divest.dcov_test(x, y, method="t")
    r = dcor.u_distance_correlation_sqr(x, y)
    v = 60 * 57 / 2
    t = np.sqrt(v - 1) * r / np.sqrt(1 - r**2)
    assert res.statistic == pytest.approx(t, rel=1e-10)
    assert res.pvalue == pytest.approx(stats.t.sf(t, v - 1), rel=1e-8)
    ref = dcor.independence.distance_correlation_t_test(x, y)
    assert res.statistic == pytest.approx(float(ref.statistic), rel=1e-10)
    assert res.null_distribution is None
    same = divest.dcov_test(x, x, method="t")
    assert same.statistic == np.inf and same.pvalue == 0.0


@needs_dcor
def test_energy_test_matches_dcor_statistic():
    rng = np.random.default_rng(13)
    a, b, c = (
        rng.standard_normal((30, 2)),
        rng.standard_normal((20, 2)) + 0.5,
        rng.standard_normal((25, 2)),
    )
    res = divest.energy_test(a, b, c, n_resamples=199, rng=3)
    ref = dcor.homogeneity.energy_test(a, b, c, num_resamples=5, random_state=0)
    assert res.statistic == pytest.approx(float(ref.statistic), rel=1e-10)
    with divest.threads(1):
        res1 = divest.energy_test(a, b, c, n_resamples=199, rng=3)
    assert np.array_equal(res.null_distribution, res1.null_distribution)
    assert 0.2 < res.pvalue  # a weak shift at these sizes (dcor also gives p ≈ 0.57)
    assert divest.energy_test(a, b + 1.0, c, n_resamples=199, rng=3).pvalue == 0.005


def test_large_n_paths_agree_with_stored_paths():
    # n above the stored-matrix limit: distances recomputed per permutation.
    rng = np.random.default_rng(14)
    n = 2100
    x, y = data(rng, n, 2, 1, dep=0.05)
    res = divest.dcov_test(x, y, n_resamples=3, rng=0)
    assert res.statistic == pytest.approx(n * divest.dcov_sqr(x, y), rel=1e-10)
    perm = [res.null_distribution[k] for k in range(3)]
    assert all(np.isfinite(perm))
    e = divest.energy_test(x[:1500], x[1500:] + 0.01, n_resamples=2, rng=0)
    ed = divest.energy_distance(x[:1500], x[1500:] + 0.01)
    assert e.statistic == pytest.approx(1500 * 600 / 2100 * ed, rel=1e-10)


def test_core_rejects_mixed_dtypes():
    x = np.ones((5, 1))
    with pytest.raises(TypeError):
        _core.dcov_stats(x, x.astype(np.float32))


def naive_jdcov(xs, c, unbiased, scale, exponent=1.0):
    n = len(xs[0])
    prod = np.ones((n, n))
    for x in xs:
        u = -naive_centred(x, exponent, unbiased=unbiased)
        if scale:
            f = 1 / (n * (n - 3)) if unbiased else 1 / n**2
            u = u / np.sqrt((u * u).sum() * f)
        prod = prod * (u + c)
    if unbiased:
        return prod.sum() / (n * (n - 3)) - c ** len(xs) * n / (n - 3)
    return prod.sum() / n**2 - c ** len(xs)


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("scale", [False, True])
def test_jdcov_matches_definition_and_reduces_to_dcov(unbiased, scale):
    rng = np.random.default_rng(15)
    n = 120
    z = rng.standard_normal((n, 3))
    xs = [
        z[:, 0],
        z[:, 1],
        np.c_[np.sign(z[:, 0] * z[:, 1]) * np.abs(z[:, 2]), rng.standard_normal(n)],
    ]
    for c in (0.5, 1.0, 2.0):
        got = divest.jdcov(*xs, c=c, unbiased=unbiased, scale=scale)
        assert rel(got, naive_jdcov(xs, c, unbiased, scale)) < 1e-10
    two = divest.jdcov(xs[0], xs[2], c=3.0, unbiased=unbiased)
    assert rel(two, divest.dcov_sqr(xs[0], xs[2], unbiased=unbiased)) < 1e-10
    if scale:
        a = divest.jdcov(*xs, unbiased=unbiased, scale=True)
        b = divest.jdcov(xs[0] * 1e4, xs[1] - 7, xs[2] * 0.01, unbiased=unbiased, scale=True)
        assert rel(a, b) < 1e-10


@needs_dcor
def test_ccdcov_is_dcov_with_concatenated_attributes():
    rng = np.random.default_rng(16)
    y = rng.standard_normal(100)
    a1, a2 = rng.integers(0, 2, 100), rng.standard_normal((100, 2)) + y[:, None] ** 2
    want = dcor.u_distance_covariance_sqr(y, np.c_[a1, a2].astype(float))
    assert rel(divest.ccdcov(y, a1, a2), want) < 1e-10
    assert (
        rel(
            divest.ccdcov(y, a1, a2, unbiased=False),
            dcor.distance_covariance_sqr(y, np.c_[a1, a2].astype(float)),
        )
        < 1e-10
    )
    assert rel(divest.ccdcov(y, a2), divest.dcov_sqr(y, a2, unbiased=True)) < 1e-12
    with pytest.raises(ValueError, match="at least one attribute"):
        divest.ccdcov(y)
    with pytest.raises(ValueError, match="at least two"):
        divest.jdcov(y)
    with pytest.raises(ValueError, match="c must be"):
        divest.jdcov(y, y, c=-1.0)
    with pytest.raises(ValueError, match="same number"):
        divest.jdcov(y, y[:-1])


@needs_dcor
@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("exponent", [1.0, 0.6])
def test_gradient_matches_finite_differences_of_dcor_package(unbiased, exponent):
    rng = np.random.default_rng(17)
    x, y = data(rng, 60, 3, 2)
    f = dcor.u_distance_covariance_sqr if unbiased else dcor.distance_covariance_sqr
    val, g = divest.dcov_sqr(x, y, exponent, unbiased=unbiased, return_grad=True)
    assert g.shape == x.shape and rel(val, f(x, y, exponent=exponent)) < 1e-10
    h = 1e-6
    for k, c in [(0, 0), (17, 2), (59, 1)]:
        xp, xm = x.copy(), x.copy()
        xp[k, c] += h
        xm[k, c] -= h
        fd = (f(xp, y, exponent=exponent) - f(xm, y, exponent=exponent)) / (2 * h)
        assert abs(fd - g[k, c]) < 1e-6 * (1 + abs(fd))
    v1, g1 = divest.dcov_sqr(x[:, 0], y, return_grad=True)
    assert g1.shape == (60,)
    vc, gc = divest.ccdcov(x[:, 0], y[:, 0], y[:, 1], return_grad=True)
    vd, gd = divest.dcov_sqr(x[:, 0], y, unbiased=True, return_grad=True)
    assert vc == vd and np.array_equal(gc, gd)
    _, g32 = divest.dcov_sqr(x.astype(np.float32), y.astype(np.float32), return_grad=True)
    assert g32.dtype == np.float32


def test_joint_independence_tests():
    from scipy import stats

    rng = np.random.default_rng(18)
    n = 200
    z = rng.standard_normal((n, 2))
    w = np.sign(z[:, 0] * z[:, 1]) * np.abs(rng.standard_normal(n))
    # Pairwise independent, jointly dependent: JdCov detects it.
    res = divest.jdcov_test(z[:, 0], z[:, 1], w, n_resamples=99, rng=0, scale=True)
    assert res.pvalue == 0.01 and res.statistic == divest.jdcov(z[:, 0], z[:, 1], w, scale=True)
    again = divest.jdcov_test(z[:, 0], z[:, 1], w, n_resamples=99, rng=0, scale=True)
    assert np.array_equal(res.null_distribution, again.null_distribution)
    ps = [
        divest.jdcov_test(*rng.standard_normal((3, 20)), n_resamples=49, rng=rng).pvalue
        for _ in range(150)
    ]
    assert stats.kstest(ps, "uniform").pvalue > 0.001
    y = z[:, 0] + 0.1 * rng.standard_normal(n)
    cc = divest.ccdcov_test(y, z[:, :1], z[:, 1], n_resamples=99, rng=1)
    ref = divest.dcov_test(y, z, n_resamples=99, rng=1)
    assert cc.pvalue == ref.pvalue == 0.01 and cc.statistic == ref.statistic


def centre_matrix(m, unbiased):
    """Double-centred (V) or U-centred (zero diagonal, sums over i != j) copy of m."""
    m = np.array(m, dtype=float)
    n = m.shape[0]
    if unbiased:
        np.fill_diagonal(m, 0.0)
        r = m.sum(1)
        out = m - r[:, None] / (n - 2) - r[None, :] / (n - 2) + r.sum() / ((n - 1) * (n - 2))
        np.fill_diagonal(out, 0.0)
        return out
    r = m.sum(1)
    return m - r[:, None] / n - r[None, :] / n + r.sum() / n**2


def dense_jdcov_grad(xs, c, unbiased, scale, exponent):
    """Analytic gradient of JdCov² in xs[0] from dense n×n matrices (no autograd)."""
    xs = [np.asarray(x, float).reshape(len(x), -1) for x in xs]
    n = len(xs[0])
    f = 1 / (n * (n - 3)) if unbiased else 1 / n**2
    cen = [naive_centred(x, exponent, unbiased=unbiased) for x in xs]
    w = [1 / np.sqrt((a * a).sum() * f) if scale else 1.0 for a in cen]
    p = np.ones((n, n))
    for a, wk in zip(cen[1:], w[1:]):
        p = p * (-wk * a + c)
    cp = centre_matrix(p, unbiased)
    m = -w[0] * cp
    if scale:
        pz = p.copy()
        if unbiased:
            np.fill_diagonal(pz, 0.0)
        s = (-cen[0] * pz).sum()
        m = m - (s * f) * ((cen[0] * cen[0]).sum() * f) ** -1.5 * cen[0]
    x = xs[0]
    diff = x[:, None, :] - x[None, :, :]
    d = np.sqrt((diff**2).sum(-1))
    np.fill_diagonal(d, 1.0)
    g = exponent * d ** (exponent - 2)
    np.fill_diagonal(g, 0.0)
    return 2 * f * ((m * g)[:, :, None] * diff).sum(1)


def jdcov_inputs(rng, n):
    x = rng.standard_normal((n, 2))
    y = np.sin(2 * x[:, 0]) + 0.5 * rng.standard_normal(n)
    z = np.c_[x[:, 1] * y, rng.standard_normal(n)]
    return x, y, z


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("scale", [False, True])
@pytest.mark.parametrize("exponent", [1.0, 0.7])
def test_jdcov_gradient_matches_dense_reference_and_finite_differences(unbiased, scale, exponent):
    rng = np.random.default_rng(19)
    n = 40
    x, y, z = jdcov_inputs(rng, n)
    c = 0.7
    val, g = divest.jdcov(
        x, y, z, c=c, unbiased=unbiased, scale=scale, exponent=exponent, return_grad=True
    )
    assert val == divest.jdcov(x, y, z, c=c, unbiased=unbiased, scale=scale, exponent=exponent)
    assert rel(val, naive_jdcov([x, y, z], c, unbiased, scale, exponent)) < 1e-10
    want = dense_jdcov_grad([x, y, z], c, unbiased, scale, exponent)
    assert g.shape == x.shape and g.dtype == np.float64
    assert np.max(np.abs(g - want)) < 1e-10 * np.max(np.abs(want))
    # Finite differences of the dense statistic, an oracle free of the derivation.
    h = 1e-6
    for k, col in [(0, 0), (13, 1), (39, 0)]:
        xp, xm = x.copy(), x.copy()
        xp[k, col] += h
        xm[k, col] -= h
        fd = (
            naive_jdcov([xp, y, z], c, unbiased, scale, exponent)
            - naive_jdcov([xm, y, z], c, unbiased, scale, exponent)
        ) / (2 * h)
        assert abs(fd - g[k, col]) < 1e-6 * (1 + abs(fd)), (k, col, fd, g[k, col])


@needs_dcor
def test_jdcov_and_ccdcov_gradient_shapes_dtypes_and_special_cases():
    rng = np.random.default_rng(20)
    n = 50
    x, y, z = jdcov_inputs(rng, n)
    # 1-D first argument: gradient of its shape; against the dense reference.
    v1, g1 = divest.jdcov(y, x, z, c=1.3, unbiased=False, return_grad=True)
    assert g1.shape == (n,)
    want = dense_jdcov_grad([y, x, z], 1.3, False, False, 1.0)[:, 0]
    assert np.max(np.abs(g1 - want)) < 1e-10 * np.max(np.abs(want))
    # Two samples: the dcov_sqr gradient whatever c is.
    for unbiased in (False, True):
        _, gj = divest.jdcov(x, z, c=4.0, unbiased=unbiased, return_grad=True)
        _, gd = divest.dcov_sqr(x, z, unbiased=unbiased, return_grad=True)
        assert np.max(np.abs(gj - gd)) < 1e-10 * np.max(np.abs(gd))
    # float32 in, float32 out; scale invariance of the statistic carries to the gradient.
    _, g32 = divest.jdcov(
        x.astype(np.float32), y.astype(np.float32), z.astype(np.float32), return_grad=True
    )
    assert g32.dtype == np.float32
    _, ga = divest.jdcov(x, y, z, scale=True, return_grad=True)
    _, gb = divest.jdcov(x * 10.0, y * 3.0, z, scale=True, return_grad=True)
    assert np.max(np.abs(ga - 10.0 * gb)) < 1e-9 * np.max(np.abs(ga))
    # A constant first sample under scale=True: factor 0, gradient 0.
    _, gc = divest.jdcov(np.ones(n), y, z, scale=True, return_grad=True)
    assert np.all(gc == 0.0)
    with pytest.raises(TypeError, match="return_grad"):
        divest.jdcov(x, y, return_grad=1)
    # ccdcov: gradient in y of dCov²(y, [attrs]) against dcor finite differences and the
    # dense reference (JdCov of two samples reduces to dCov²).
    a1, a2 = rng.integers(0, 2, n), np.c_[y**2, rng.standard_normal(n)]
    yy = np.c_[y, x[:, 0]]
    for unbiased in (False, True):
        val, g = divest.ccdcov(yy, a1, a2, unbiased=unbiased, exponent=0.8, return_grad=True)
        cat = np.c_[a1, a2].astype(float)
        f = dcor.u_distance_covariance_sqr if unbiased else dcor.distance_covariance_sqr
        assert rel(val, f(yy, cat, exponent=0.8)) < 1e-10
        want = dense_jdcov_grad([yy, cat], 1.0, unbiased, False, 0.8)
        assert np.max(np.abs(g - want)) < 1e-10 * np.max(np.abs(want))
        h = 1e-6
        for k, col in [(3, 0), (44, 1)]:
            yp, ym = yy.copy(), yy.copy()
            yp[k, col] += h
            ym[k, col] -= h
            fd = (f(yp, cat, exponent=0.8) - f(ym, cat, exponent=0.8)) / (2 * h)
            assert abs(fd - g[k, col]) < 1e-6 * (1 + abs(fd))


def test_bias_corrected_dcor_matches_hyppo():
    hyppo = pytest.importorskip("hyppo.independence")
    rng = np.random.default_rng(21)
    x, y = data(rng, 150, 3, 2)
    # hyppo's Dcorr statistic is the bias-corrected (U-centred) squared distance correlation.
    assert rel(divest.dcor_sqr(x, y, unbiased=True), hyppo.Dcorr().statistic(x, y)) < 1e-10
