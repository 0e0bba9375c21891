"""Kernel tests with permutation p-values: mmd_test, hsic/hsic_test, dhsic/dhsic_test,
partial_dcor_test. Oracles: exact O(n²) NumPy formulas, divest.mmd, divest.partial_dcor,
dcor, hyppo (when installed); calibration on counts with fixed seeds."""

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import cdist, pdist

import divest
from divest import _core


def _gauss(x, s):
    x = x.reshape(len(x), -1)
    return np.exp(-cdist(x, x, "sqeuclidean") / (2 * s * s))


def _lap(x, s):
    x = x.reshape(len(x), -1)
    return np.exp(-cdist(x, x) / s)


def _med(x):
    d = pdist(x.reshape(len(x), -1))
    m = np.median(d)
    return m if m > 0 else np.median(d[d > 0])


# ----------------------------------------------------------------------------------------
# Median heuristic


@pytest.mark.parametrize("n,d", [(2, 1), (3, 2), (50, 3), (400, 2), (901, 1)])
def test_median_distance_is_exact(n, d):
    x = np.random.default_rng(n).standard_normal((n, d))
    assert _core.kern_median_distance(x) == np.median(pdist(x))


def test_median_distance_ties_and_zero_median():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, size=(500, 1)).astype(float)
    assert _core.kern_median_distance(x) == _med(x)
    y = np.zeros((600, 1))
    y[::7] = 1.0
    y[::11] = 2.5
    assert np.median(pdist(y)) == 0
    assert _core.kern_median_distance(y) == _med(y)
    assert _core.kern_median_distance(np.ones((5, 2))) == 0.0


# ----------------------------------------------------------------------------------------
# Statistics against exact formulas


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
@pytest.mark.parametrize("unbiased", [True, False])
def test_mmd_statistic_matches_formula_and_divest_mmd(kernel, unbiased):
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((30, 2)), rng.standard_normal((23, 2)) + 0.5
    z = np.vstack([x, y])
    s = _med(z)
    k = (_gauss if kernel == "gaussian" else _lap)(z, s)
    n, m = 30, 23
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    if unbiased:
        want = (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (
            m * (m - 1)
        )
    else:
        want = kxx.sum() / n**2 + kyy.sum() / m**2
    want -= 2 * kxy.mean()
    t = divest.mmd_test(x, y, kernel=kernel, unbiased=unbiased, n_resamples=20, rng=0)
    assert t.statistic == pytest.approx(want, rel=1e-10, abs=1e-14)
    assert t.statistic == pytest.approx(
        divest.mmd(x, y, sigma=s, kernel=kernel, unbiased=unbiased), rel=1e-9, abs=1e-13
    )
    # The p-value is (1 + #{T_b >= T}) / (1 + B).
    assert t.pvalue == (1 + np.sum(t.null_distribution >= t.statistic)) / 21


def _hsic_b(k, lm):
    n = len(k)
    h = np.eye(n) - 1.0 / n
    return np.trace(k @ h @ lm @ h) / n**2


def _hsic_u(k, lm):
    n = len(k)
    k, lm = k.copy(), lm.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(lm, 0)
    one = np.ones(n)
    return (
        np.trace(k @ lm)
        + (one @ k @ one) * (one @ lm @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ k @ lm @ one)
    ) / (n * (n - 3))


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
def test_hsic_matches_exact_formulas(kernel):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 2))
    y = x[:, :1] ** 2 + 0.5 * rng.standard_normal((40, 1))
    f = _gauss if kernel == "gaussian" else _lap
    k, lm = f(x, _med(x)), f(y, _med(y))
    assert divest.hsic(x, y, kernel=kernel) == pytest.approx(_hsic_b(k, lm), rel=1e-10)
    assert divest.hsic(x, y, kernel=kernel, unbiased=True) == pytest.approx(
        _hsic_u(k, lm), rel=1e-9
    )
    # Explicit bandwidths, one per sample.
    k, lm = f(x, 0.7), f(y, 2.0)
    assert divest.hsic(x, y, kernel=kernel, bandwidth=(0.7, 2.0)) == pytest.approx(
        _hsic_b(k, lm), rel=1e-10
    )


def test_dhsic_matches_formula_and_reduces_to_hsic():
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((25, 1)), rng.standard_normal((25, 2)), rng.standard_normal(25)]
    ks = [_gauss(a, _med(a)) for a in xs]
    n = 25
    want = (
        np.mean(ks[0] * ks[1] * ks[2])
        + np.prod([k.mean() for k in ks])
        - 2 * np.mean(np.prod([k.mean(axis=1) for k in ks], axis=0))
    )
    assert divest.dhsic(*xs) == pytest.approx(want, rel=1e-10)
    assert divest.dhsic(xs[0], xs[1]) == pytest.approx(divest.hsic(xs[0], xs[1]), rel=1e-12)
    assert n == len(xs[2])


def test_hsic_test_null_is_statistic_of_permuted_data_and_reproducible():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((30, 1)), rng.standard_normal((30, 1))
    a = divest.hsic_test(x, y, bandwidth=1.0, n_resamples=50, rng=7)
    b = divest.hsic_test(x, y, bandwidth=1.0, n_resamples=50, rng=7)
    assert np.array_equal(a.null_distribution, b.null_distribution)
    with divest.threads(1):
        c = divest.hsic_test(x, y, bandwidth=1.0, n_resamples=50, rng=7)
    assert np.array_equal(a.null_distribution, c.null_distribution)
    assert a.statistic == c.statistic
    # Every resampled value is the statistic of some permutation of y: the null values
    # lie in the permutation distribution, and their mean is near its known mean.
    assert np.all(a.null_distribution >= 0)
    assert a.pvalue == (1 + np.sum(a.null_distribution >= a.statistic)) / 51


def test_partial_dcor_test_statistic_matches_dcor_and_divest():
    dcor = pytest.importorskip("dcor")
    rng = np.random.default_rng(6)
    z = rng.standard_normal((40, 2))
    x = z[:, :1] + 0.3 * rng.standard_normal((40, 1))
    y = z[:, 1:] ** 2 + x + 0.3 * rng.standard_normal((40, 1))
    t = divest.partial_dcor_test(x, y, z, n_resamples=30, rng=1)
    assert t.statistic == pytest.approx(dcor.partial_distance_correlation(x, y, z), abs=1e-10)
    assert t.statistic == pytest.approx(divest.partial_dcor(x, y, z), abs=1e-10)
    t2 = divest.partial_dcor_test(x, y, z, n_resamples=30, rng=1, exponent=0.5)
    assert t2.statistic == pytest.approx(divest.partial_dcor(x, y, z, exponent=0.5), abs=1e-10)


def test_hyppo_hsic_statistic_is_normalised_hsic():
    hyppo = pytest.importorskip("hyppo.independence")
    rng = np.random.default_rng(8)
    x = rng.standard_normal((35, 2))
    y = x[:, :1] + rng.standard_normal((35, 1))
    want = hyppo.Hsic(bias=True).statistic(x, y)
    # hyppo's statistic is the square root of the normalised biased HSIC, with the
    # Gaussian bandwidth of both samples set from x's median distance.
    s = np.median(pdist(x))
    r = divest.hsic(x, y, bandwidth=s) / np.sqrt(
        divest.hsic(x, x, bandwidth=s) * divest.hsic(y, y, bandwidth=s)
    )
    assert np.sqrt(r) == pytest.approx(want, rel=1e-10)


def test_scale_invariance_with_median_bandwidth():
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((20, 2)), rng.standard_normal((20, 1))
    a = divest.hsic_test(x, y, n_resamples=30, rng=3)
    b = divest.hsic_test(x * 2.0**200, y * 2.0**-300, n_resamples=30, rng=3)
    assert a.statistic == pytest.approx(b.statistic, rel=1e-12)
    assert a.pvalue == b.pvalue


# ----------------------------------------------------------------------------------------
# Calibration (fixed seeds; counts)


def _pvalues(test, make, reps, seed0):
    return np.array([test(*make(np.random.default_rng(seed0 + r)), r) for r in range(reps)])


def _uniform_ok(p):
    # Permutation p-values with B = 99 are discrete on {1/100, ..., 1}: compare the
    # rejection count at 0.05 with its binomial law and the whole law by KS.
    reps = len(p)
    k = np.sum(p <= 0.05)
    assert stats.binomtest(int(k), reps, 0.05).pvalue > 1e-3, k
    assert stats.kstest(p, "uniform").pvalue > 1e-3


def test_calibration_and_power_hsic():
    def h0(g):
        return g.standard_normal((25, 1)), g.standard_normal((25, 1))

    def h1(g):
        x = g.standard_normal((40, 1))
        return x, x**2 + 0.3 * g.standard_normal((40, 1))

    def run(x, y, r):
        return divest.hsic_test(x, y, n_resamples=99, rng=r).pvalue

    _uniform_ok(_pvalues(run, h0, 300, 1000))
    assert np.mean(_pvalues(run, h1, 40, 5000) <= 0.05) >= 0.9


def test_calibration_and_power_mmd():
    def h0(g):
        return g.standard_normal((20, 2)), g.standard_normal((25, 2))

    def h1(g):
        return g.standard_normal((30, 2)), g.standard_normal((30, 2)) + 1.0

    def run(x, y, r):
        return divest.mmd_test(x, y, n_resamples=99, rng=r).pvalue

    _uniform_ok(_pvalues(run, h0, 300, 2000))
    assert np.mean(_pvalues(run, h1, 40, 6000) <= 0.05) >= 0.9


def test_calibration_and_power_dhsic_on_pairwise_independent_triples():
    def h0(g):
        return [g.choice([-1.0, 1.0], 40) + 0.1 * g.standard_normal(40) for _ in range(3)]

    def h1(g):
        # Pairwise independent, jointly dependent: z = x·y for symmetric signs.
        x, y = g.choice([-1.0, 1.0], 60), g.choice([-1.0, 1.0], 60)
        e = 0.1 * g.standard_normal((3, 60))
        return [x + e[0], y + e[1], x * y + e[2]]

    def run(x, y, z, r):
        return divest.dhsic_test(x, y, z, n_resamples=99, rng=r).pvalue

    _uniform_ok(_pvalues(run, h0, 200, 3000))
    assert np.mean(_pvalues(run, h1, 30, 7000) <= 0.05) >= 0.9
    # The pairwise HSIC tests have no power here.
    g = np.random.default_rng(7000)
    x, y, z = h1(g)
    assert divest.hsic_test(x, z, n_resamples=99, rng=0).pvalue > 0.01


def test_calibration_and_power_partial_dcor():
    def h0(g):
        return g.standard_normal((25, 1)), g.standard_normal((25, 1)), g.standard_normal((25, 1))

    def h1(g):
        z = g.standard_normal((40, 1))
        x = z + g.standard_normal((40, 1))
        return x, x + z + 0.5 * g.standard_normal((40, 1)), z

    def run(x, y, z, r):
        return divest.partial_dcor_test(x, y, z, n_resamples=99, rng=r).pvalue

    _uniform_ok(_pvalues(run, h0, 300, 4000))
    assert np.mean(_pvalues(run, h1, 30, 8000) <= 0.05) >= 0.9


# ----------------------------------------------------------------------------------------
# Bad input


def test_bad_input_messages():
    x = np.random.default_rng(0).standard_normal((10, 2))
    with pytest.raises(ValueError, match="n_resamples"):
        divest.hsic_test(x, x, n_resamples=0)
    with pytest.raises(ValueError, match="at least 2"):
        divest.mmd_test(x[:1], x)
    with pytest.raises(ValueError, match="at least 4"):
        divest.hsic(x[:3], x[:3], unbiased=True)
    with pytest.raises(ValueError, match="at least 4"):
        divest.partial_dcor_test(x[:3], x[:3], x[:3])
    with pytest.raises(ValueError, match="same number"):
        divest.hsic(x, x[:5])
    with pytest.raises(ValueError, match="bandwidth"):
        divest.hsic(x, x, bandwidth=-1.0)
    with pytest.raises(ValueError, match="bandwidth"):
        divest.mmd_test(x, x, bandwidth="scott")
    with pytest.raises(ValueError, match="kernel"):
        divest.mmd_test(x, x, kernel="linear")
    with pytest.raises(ValueError, match="dimension"):
        divest.mmd_test(x, x[:, :1])
    with pytest.raises(ValueError, match="two samples"):
        divest.dhsic(x)
    with pytest.raises(ValueError, match="one entry per sample"):
        divest.dhsic(x, x, x, bandwidth=[1.0, 2.0])
    with pytest.raises(ValueError):
        divest.hsic(np.array([1.0, np.nan, 2.0]), np.ones(3))
    before = x.copy()
    divest.hsic_test(x, x, n_resamples=5, rng=0)
    assert np.array_equal(x, before)


def test_constant_sample_gives_zero_and_p_one():
    x = np.random.default_rng(0).standard_normal((12, 1))
    c = np.ones((12, 1))
    t = divest.hsic_test(x, c, n_resamples=20, rng=0)
    assert abs(t.statistic) < 1e-15 and t.pvalue == 1.0
    t = divest.partial_dcor_test(x, c, x, n_resamples=20, rng=0)
    assert t.statistic == 0.0 and t.pvalue == 1.0


def test_resample_ranges_concatenate_for_every_test():
    # Resamples first..first+count of one seed are the same values whichever call
    # computes them (so a test can be split across processes or machines).
    rng = np.random.default_rng(10)
    x, y, z = (
        rng.standard_normal((15, 2)),
        rng.standard_normal((15, 1)),
        rng.standard_normal((15, 1)),
    )
    pooled = np.ascontiguousarray(np.vstack([x[:, :1], y]))
    calls = [
        lambda b, f: _core.kern_mmd_test(pooled, 15, "gaussian", 1.0, True, b, f, 42),
        lambda b, f: _core.kern_hsic_test(x, y, "laplacian", 1.0, 2.0, True, b, f, 42),
        lambda b, f: _core.kern_dhsic_test([x, y, z], "gaussian", [1.0, 1.0, 1.0], b, f, 42),
        lambda b, f: _core.kern_pdcor_test(x, y, z, 1.0, b, f, 42),
    ]
    for call in calls:
        stat, full = call(30, 0)
        s2, part = call(10, 20)
        assert s2 == stat
        assert np.array_equal(full[20:], part)
        with divest.threads(1):
            assert np.array_equal(call(30, 0)[1], full)


def _gretton_gamma(k, lm):
    # Transcription of the moments of Gretton's hsicTestGamma reference code.
    n = len(k)
    h = np.eye(n) - 1.0 / n
    kc, lc = h @ k @ h, h @ lm @ h
    stat = np.sum(kc.T * lc) / n
    v = (kc * lc / 6) ** 2
    v = (v.sum() - np.trace(v)) / n / (n - 1)
    v = v * 72 * (n - 4) * (n - 5) / n / (n - 1) / (n - 2) / (n - 3)
    k0, l0 = k - np.diag(np.diag(k)), lm - np.diag(np.diag(lm))
    mux, muy = k0.sum() / n / (n - 1), l0.sum() / n / (n - 1)
    m = (1 + mux * muy - mux - muy) / n
    return stat, stats.gamma.sf(stat, m**2 / v, scale=v * n / m)


def test_hsic_gamma_matches_reference_moments_and_is_roughly_calibrated():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((50, 2))
    y = x[:, :1] * 0.3 + rng.standard_normal((50, 1))
    stat, p = _gretton_gamma(_gauss(x, 1.1), _gauss(y, 0.8))
    t = divest.hsic_test(x, y, bandwidth=(1.1, 0.8), method="gamma")
    assert t.statistic * 50 == pytest.approx(stat, rel=1e-10)
    assert t.pvalue == pytest.approx(p, rel=1e-8)
    assert t.null_distribution is None
    g = np.random.default_rng(12)
    ps = np.array(
        [
            divest.hsic_test(
                g.standard_normal((60, 1)), g.standard_normal((60, 1)), method="gamma"
            ).pvalue
            for _ in range(300)
        ]
    )
    assert 0.02 <= np.mean(ps <= 0.05) <= 0.09
    with pytest.raises(ValueError, match="unbiased"):
        divest.hsic_test(x, y, unbiased=True, method="gamma")
    with pytest.raises(ValueError, match="method"):
        divest.hsic_test(x, y, method="asymptotic")


def test_recomputed_rows_path_beyond_the_stored_size():
    # n > 2048: kernel rows are recomputed per resample instead of stored.
    rng = np.random.default_rng(13)
    n = 2100
    x, y = rng.standard_normal((n, 1)), rng.standard_normal((n, 1))
    k, lm = _gauss(x, 0.9), _gauss(y, 1.3)

    def centre(a):
        return a - a.mean(0) - a.mean(1)[:, None] + a.mean()

    want = np.sum(centre(k) * centre(lm)) / n**2
    t = divest.hsic_test(x, y, bandwidth=(0.9, 1.3), n_resamples=2, rng=0)
    assert t.statistic == pytest.approx(want, rel=1e-9)
    assert t.null_distribution.shape == (2,)
