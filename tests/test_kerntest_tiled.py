"""The kernel tests' large-n path (n > 2048: tiles through the pairwise engine, issue 17).
Oracles: exact O(n²) NumPy formulas at n just above 2048 (exact differences for d ≤ 16,
the packed distance kernel above), divest.mmd and divest.partial_dcor; the nulls are
bitwise independent of the thread count. The agreement with the stored-matrix path of
n ≤ 2048, resample by resample, is tested in Rust (src/core/kerntest.rs)."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

import divest

N = 2060  # just above the stored size (2048)


def _gauss(x, s):
    return np.exp(-cdist(x, x, "sqeuclidean") / (2 * s * s))


def _lap(x, s):
    return np.exp(-cdist(x, x) / s)


def _centre(a):
    return a - a.mean(0) - a.mean(1)[:, None] + a.mean()


@pytest.mark.parametrize("d", [1, 3, 20])
@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
def test_hsic_matches_exact_formulas(d, kernel):
    rng = np.random.default_rng(d)
    x = rng.standard_normal((N, d)) + 3.0  # off-centre: the path centres the data
    y = x[:, :1] ** 2 + rng.standard_normal((N, 1))
    f = _gauss if kernel == "gaussian" else _lap
    sx, sy = 0.8 * np.sqrt(d), 1.3
    k, lm = f(x, sx), f(y, sy)
    want = np.sum(_centre(k) * _centre(lm)) / N**2
    got = divest.hsic(x, y, kernel=kernel, bandwidth=(sx, sy))
    assert got == pytest.approx(want, rel=1e-11)
    # Unbiased (Song et al.): the U-centred inner product / (n (n − 3)).
    np.fill_diagonal(k, 0)
    np.fill_diagonal(lm, 0)
    one = np.ones(N)
    want_u = (
        np.sum(k * lm)
        + k.sum() * lm.sum() / ((N - 1) * (N - 2))
        - 2.0 / (N - 2) * (one @ k @ (lm @ one))
    ) / (N * (N - 3))
    got_u = divest.hsic(x, y, kernel=kernel, bandwidth=(sx, sy), unbiased=True)
    assert got_u == pytest.approx(want_u, rel=1e-10)


@pytest.mark.parametrize("d", [2, 20])
@pytest.mark.parametrize("unbiased", [True, False])
def test_mmd_test_statistic_matches_formula_and_null_is_relabelled_statistic(d, unbiased):
    rng = np.random.default_rng(10 + d)
    n, m = 1100, 1000
    x, y = rng.standard_normal((n, d)), rng.standard_normal((m, d)) + 0.1
    z = np.vstack([x, y])
    s = 1.1 * np.sqrt(d)
    k = _gauss(z, s)

    def mmd2(kk, lab):
        kxx, kyy, kxy = kk[np.ix_(lab, lab)], kk[np.ix_(~lab, ~lab)], kk[np.ix_(lab, ~lab)]
        if unbiased:
            a = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
            b = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        else:
            a, b = kxx.sum() / n**2, kyy.sum() / m**2
        return a + b - 2 * kxy.mean()

    lab = np.arange(n + m) < n
    t = divest.mmd_test(x, y, bandwidth=s, unbiased=unbiased, n_resamples=70, rng=3)
    assert t.statistic == pytest.approx(mmd2(k, lab), rel=1e-11, abs=1e-15)
    assert t.statistic == pytest.approx(
        divest.mmd(x, y, sigma=s, unbiased=unbiased), rel=1e-9, abs=1e-14
    )
    assert t.pvalue == (1 + np.sum(t.null_distribution >= t.statistic)) / 71
    # Each null value is the statistic of some relabelling with n points labelled x: its
    # value lies between the extremes and differs from the observed one (shift 0.1).
    assert t.null_distribution.shape == (70,)
    assert np.all(np.isfinite(t.null_distribution))
    # 70 resamples span two passes of 64 labellings: the values do not depend on that.
    u = divest.mmd_test(x, y, bandwidth=s, unbiased=unbiased, n_resamples=3, rng=3)
    assert np.array_equal(u.null_distribution, t.null_distribution[:3])


def test_dhsic_and_partial_dcor_match_formulas():
    rng = np.random.default_rng(20)
    xs = [rng.standard_normal((N, 1)), rng.standard_normal((N, 2)), rng.standard_normal(N)]
    xs[2] = xs[2] + xs[0][:, 0]
    ks = [_gauss(a.reshape(N, -1), 1.0) for a in xs]
    want = (
        np.mean(ks[0] * ks[1] * ks[2])
        + np.prod([k.mean() for k in ks])
        - 2 * np.mean(np.prod([k.mean(axis=1) for k in ks], axis=0))
    )
    assert divest.dhsic(*xs, bandwidth=1.0) == pytest.approx(want, rel=1e-11)
    x, y, z = xs[0], xs[1][:, :1] + xs[0], xs[2]
    t = divest.partial_dcor_test(x, y, z, n_resamples=3, rng=0)
    assert t.statistic == pytest.approx(divest.partial_dcor(x, y, z), rel=1e-10, abs=1e-13)


def test_nulls_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(30)
    x = rng.standard_normal((N, 3))
    y = x[:, :1] + rng.standard_normal((N, 1))
    calls = [
        lambda: divest.hsic_test(x, y, bandwidth=1.0, n_resamples=9, rng=5),
        lambda: divest.mmd_test(
            x[:1100], y[:1000] * np.ones(3), bandwidth=1.0, n_resamples=9, rng=5
        ),
        lambda: divest.dhsic_test(x, y, x[:, :1], bandwidth=1.0, n_resamples=5, rng=5),
        lambda: divest.partial_dcor_test(x, y, x[:, 1:], n_resamples=5, rng=5),
    ]
    for call in calls:
        with divest.threads(1):
            a = call()
        with divest.threads(2):
            b = call()
        assert a.statistic == b.statistic
        assert np.array_equal(a.null_distribution, b.null_distribution)
        assert a.pvalue == b.pvalue
