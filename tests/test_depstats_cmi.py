"""knn_cmi by kd-trees and with discrete columns (mixed estimator), cmi_test's
tree neighbours, and KSG-2 in mi_matrix (issue 17)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import divest
from divest import _core


def _digamma_int(m):
    from scipy.special import digamma

    return digamma(np.asarray(m, dtype=float))


# ---------------------------------------------------------------------------------------
# mi_matrix(variant=2)


def _quiet(f, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return f(*a, **kw)


def test_mi_matrix_ksg2_equals_knn_mi_per_pair():
    rng = np.random.default_rng(3)
    n = 400
    X = rng.standard_normal((n, 5))
    X[:, 1] += X[:, 0]
    X[:, 2] = np.round(2 * X[:, 2]) / 2  # ties: rows whose (k+1)-th neighbour ties the k-th
    X[:, 4] = np.round(X[:, 0] + X[:, 4])
    for k in (1, 4):
        M = _quiet(divest.mi_matrix, X, k=k, variant=2)
        for i in range(5):
            for j in range(5):
                want = _quiet(divest.knn_mi, X[:, i], X[:, j], k, 2)
                assert M[i, j] == pytest.approx(want, abs=1e-12), (k, i, j)
        # KSG-1 stays the default and differs.
        assert not np.array_equal(_quiet(divest.mi_matrix, X, k=k), M)
    R = _quiet(divest.mi_matrix, X[:, :2], X[:, 2:], k=3, variant=2)
    for i in range(2):
        for j in range(3):
            want = _quiet(divest.knn_mi, X[:, i], X[:, 2 + j], 3, 2)
            assert R[i, j] == pytest.approx(want, abs=1e-12)
    # Discrete pairs ignore the variant (the mixture estimator), as in knn_mi.
    D = divest.mi_matrix(X, k=3, variant=2, discrete_features=[4])
    assert D[0, 4] == divest.mi_matrix(X, k=3, discrete_features=[4])[0, 4]


def test_mi_matrix_ksg2_threads_and_row_order():
    rng = np.random.default_rng(4)
    X = np.round(rng.standard_normal((300, 3)) * 3)
    a = _quiet(divest.mi_matrix, X, k=3, variant=2)
    with divest.threads(1):
        b = _quiet(divest.mi_matrix, X, k=3, variant=2)
    assert np.array_equal(a, b)
    p = rng.permutation(300)
    c = _quiet(divest.mi_matrix, X[p], k=3, variant=2)
    assert np.allclose(a, c, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [1000, 4000])
def test_mi_matrix_ksg2_gaussian_closed_form(n):
    rng = np.random.default_rng(n)
    rho = np.array([0.0, 0.5, 0.9])
    z = rng.standard_normal((n, 4))
    X = np.column_stack(
        [z[:, 0]] + [r * z[:, 0] + np.sqrt(1 - r * r) * z[:, j + 1] for j, r in enumerate(rho)]
    )
    M = divest.mi_matrix(X, k=5, variant=2)
    want = -0.5 * np.log(1 - rho**2)
    assert np.all(np.abs(M[0, 1:] - want) < 1.5 / np.sqrt(n)), (M[0, 1:], want)


# ---------------------------------------------------------------------------------------
# knn_cmi: trees against brute force


def _tied(rng, n, d, levels):
    return np.floor(rng.random((n, d)) * levels) if levels else rng.standard_normal((n, d))


@pytest.mark.parametrize("dims", [(1, 1, 1), (1, 1, 3), (2, 1, 5), (1, 2, 2)])
@pytest.mark.parametrize("levels", [0, 6, 3])
def test_knn_cmi_tree_equals_brute_force_bitwise(dims, levels):
    dx, dy, dz = dims
    rng = np.random.default_rng(10 * dx + dz + levels)
    n = 500
    z = _tied(rng, n, dz, levels)
    x = _tied(rng, n, dx, levels)
    x[:, 0] += z[:, 0]
    y = _tied(rng, n, dy, levels)
    y[:, 0] += x[:, 0]
    for k in (1, 3, 8):
        for disc in (False, True):
            got = {}
            for alg in ("brute", "kd_tree", "auto"):
                try:
                    got[alg] = _quiet(
                        divest.knn_cmi, x, y, z, k, discrete_features=disc, algorithm=alg
                    )
                except ValueError as e:
                    assert not disc and levels and "discrete_features" in str(e)
                    got[alg] = "error"
            assert got["brute"] == got["kd_tree"] == got["auto"], (k, disc, got)


def test_knn_cmi_tree_matches_the_definition_and_threads():
    from test_depstats import _cmi_brute

    rng = np.random.default_rng(12)
    n = 200
    z = rng.standard_normal((n, 3))
    x = z[:, :1] + rng.standard_normal((n, 1))
    y = z[:, 1:2] + x + rng.standard_normal((n, 1))
    got = divest.knn_cmi(x, y, z, 4, algorithm="kd_tree")
    assert got == pytest.approx(_cmi_brute(x, y, z, 4), rel=1e-10, abs=1e-12)
    with divest.threads(1):
        assert divest.knn_cmi(x, y, z, 4, algorithm="kd_tree") == got


def test_cmi_test_tree_and_brute_agree_and_neighbours_match_the_old_search():
    rng = np.random.default_rng(13)
    n = 150
    z = rng.standard_normal((n, 2))
    x = z[:, 0] + rng.standard_normal(n)
    y = z[:, 1] + 0.3 * x + rng.standard_normal(n)
    a = divest.cmi_test(x, y, z, k=4, n_resamples=19, rng=5, algorithm="brute")
    b = divest.cmi_test(x, y, z, k=4, n_resamples=19, rng=5, algorithm="kd_tree")
    assert a.statistic == b.statistic and np.array_equal(a.null_distribution, b.null_distribution)
    # Without duplicates in z, the tree's neighbours are the engine's kNN (ties by index).
    z1 = np.ascontiguousarray(z[:, :1])
    _, idx = _core.knn_sq_dists(z1, z1, 6, True)
    assert np.array_equal(_core.cmi_z_neighbours(z1, 6), idx)


def test_local_permutations_stay_in_discrete_z_cells():
    from divest._depstats import _local_permutations

    rng = np.random.default_rng(14)
    n = 300
    z = rng.integers(0, 4, size=(n, 1)).astype(float)
    perms = _local_permutations(z, 5, 20, np.random.default_rng(0))
    assert np.all(z[perms, 0] == z[None, :, 0])
    # Each row is a permutation where possible; the scheme moves x.
    assert np.mean([len(set(p.tolist())) for p in perms]) > 0.9 * n
    assert np.mean(perms != np.arange(n)) > 0.5


# ---------------------------------------------------------------------------------------
# knn_cmi with discrete columns: oracles


def _plugin_digamma(x, y, z, k):
    """The mixed estimator on discrete data where every cell has more than k points:
    ⟨ψ(n_xyz) − ψ(n_xz) − ψ(n_yz) + ψ(n_z)⟩ with counts including the point."""

    def cnt(*cols):
        key = np.stack(cols, axis=1)
        _, inv, c = np.unique(key, axis=0, return_inverse=True, return_counts=True)
        return c[inv.ravel()]

    nxyz = cnt(x, y, z)
    assert nxyz.min() > k
    return float(
        np.mean(
            _digamma_int(nxyz)
            - _digamma_int(cnt(x, z))
            - _digamma_int(cnt(y, z))
            + _digamma_int(cnt(z))
        )
    )


def _exact_discrete_cmi(P):
    """I(X; Y | Z) of the joint table P[x, y, z] by enumeration, in nats."""
    pz = P.sum(axis=(0, 1))
    pxz = P.sum(axis=1)
    pyz = P.sum(axis=0)
    tot = 0.0
    for i, j, m in zip(*np.nonzero(P)):
        tot += P[i, j, m] * np.log(P[i, j, m] * pz[m] / (pxz[i, m] * pyz[j, m]))
    return tot


@pytest.mark.parametrize("n", [2000, 8000])
def test_mixed_knn_cmi_all_discrete_against_enumeration(n):
    rng = np.random.default_rng(20 + n)
    P = rng.random((3, 2, 3)) + 0.3
    P[0, 0, 1] += 2.0  # dependence of X and Y given Z
    P /= P.sum()
    draw = rng.choice(P.size, size=n, p=P.ravel())
    x, y, z = np.unravel_index(draw, P.shape)
    x, y, z = (v.astype(float) for v in (x, y, z))
    got = divest.knn_cmi(x, y, z, 3, discrete_features=True)
    # Exactly the plug-in estimate with digammas (the estimator's definition here) ...
    assert got == pytest.approx(_plugin_digamma(x, y, z, 3), abs=1e-12)
    # ... and within sampling error of the true CMI (spread about 1/√n, bias of order
    # cells/n).
    want = _exact_discrete_cmi(P)
    assert abs(got - want) < 1.5 / np.sqrt(n) + 18 / n, (got, want)
    assert divest.knn_cmi(x, y, z, 3, discrete_features="auto") == got
    assert divest.knn_cmi(x, y, z, 3, discrete_features=[0]) == got
    assert divest.knn_cmi(x, y, z, 3, discrete_features=np.array([0, 0, 1], bool)) == got
    with pytest.warns(UserWarning, match="discrete_features"):
        divest.knn_cmi(x, y, z, 3)


def _bernoulli_gauss_mi(p, delta):
    """I(X; Y) for X ~ Bernoulli(p), Y | X ~ N(delta·X, 1): h(Y) − h(Y | X), with h(Y)
    by mpmath quadrature of the two-component mixture."""
    import mpmath as mp

    mp.mp.dps = 20
    p, delta = mp.mpf(p), mp.mpf(delta)

    def f(t):
        return (1 - p) * mp.npdf(t) + p * mp.npdf(t - delta)

    def g(t):
        v = f(t)
        return -v * mp.log(v) if v > 0 else mp.mpf(0)

    h = mp.quad(g, [-mp.inf, -5, 0, delta, delta + 5, mp.inf])
    return float(h - mp.log(2 * mp.pi * mp.e) / 2)


@pytest.mark.parametrize("n", [2000, 6000])
def test_mixed_knn_cmi_discrete_x_continuous_y_given_continuous_z(n):
    # X ~ Bernoulli(0.3) independent of Z ~ N(0, 1); Y = 1.5·X + Z + N(0, 1):
    # I(X; Y | Z) = I(X; 1.5·X + N(0, 1)).
    rng = np.random.default_rng(n + 1)
    z = rng.standard_normal(n)
    x = (rng.random(n) < 0.3).astype(float)
    y = 1.5 * x + z + rng.standard_normal(n)
    want = _bernoulli_gauss_mi(0.3, 1.5)
    got = divest.knn_cmi(x, y, z, 5, discrete_features=[0])
    assert abs(got - want) < 2.0 / np.sqrt(n), (got, want)
    # Conditioning matters: the MI without z is smaller.
    assert divest.knn_mi(x, y, 5, discrete_features=True) < want - 0.05


@pytest.mark.parametrize("n", [3000])
def test_mixed_knn_cmi_discrete_x_and_z_continuous_y(n):
    # Z uniform on {0, 1, 2}, X | Z ~ Bernoulli(p_Z), Y = δ·X + N(0, 1):
    # I(X; Y | Z) = Σ_z P(z) I_z with I_z the Bernoulli(p_z)-Gaussian MI.
    rng = np.random.default_rng(n + 2)
    ps = np.array([0.2, 0.5, 0.8])
    z = rng.integers(0, 3, n)
    x = (rng.random(n) < ps[z]).astype(float)
    y = 1.2 * x + rng.standard_normal(n)
    want = np.mean([_bernoulli_gauss_mi(p, 1.2) for p in ps])
    got = divest.knn_cmi(x, y, z.astype(float), 5, discrete_features=[0, 2])
    assert abs(got - want) < 2.0 / np.sqrt(n), (got, want)
    # cmi_test with the mixed estimator detects the dependence (permutations within the
    # z cells).
    r = divest.cmi_test(x, y, z.astype(float), k=5, n_resamples=19, rng=0, discrete_features=True)
    assert r.pvalue == 1 / 20


def test_mixed_cmi_test_calibration_with_discrete_z():
    rng = np.random.default_rng(60)
    n, B, reps = 150, 19, 30
    small = 0
    for _ in range(reps):
        z = rng.integers(0, 3, n).astype(float)
        x = z + rng.standard_normal(n)
        y = z + rng.standard_normal(n)
        r = divest.cmi_test(x, y, z, k=3, k_perm=5, n_resamples=B, rng=rng, discrete_features=[2])
        small += r.pvalue <= 0.1
    # P(p <= 0.1) = 2/20 under H0; Binomial(30, 0.1): P(count >= 9) < 2e-3.
    assert small <= 8


# ---------------------------------------------------------------------------------------
# Bad input


def test_knn_cmi_and_mi_matrix_bad_input():
    rng = np.random.default_rng(0)
    x, y, z = rng.standard_normal((3, 20))
    with pytest.raises(ValueError, match="discrete_features"):
        divest.knn_cmi(x, y, z, discrete_features=[3])
    with pytest.raises(ValueError, match="discrete_features"):
        divest.knn_cmi(x, y, z, discrete_features=np.array([True, False]))
    with pytest.raises(ValueError, match="discrete_features"):
        divest.knn_cmi(x, y, z, discrete_features="yes")
    with pytest.raises(TypeError, match="discrete_features"):
        divest.knn_cmi(x, y, z, discrete_features=[0.5])
    with pytest.raises(ValueError, match="discrete_features"):
        divest.cmi_test(x, y, z, discrete_features=[-4])
    with pytest.raises(ValueError, match="k"):
        divest.knn_cmi(x, y, z, k=20, discrete_features=True)
    with pytest.raises(ValueError, match="algorithm"):
        divest.knn_cmi(x, y, z, algorithm="ball_tree")
    with pytest.raises(ValueError, match="finite"):
        divest.knn_cmi(np.r_[x[:-1], np.inf], y, z, check_finite=False)
    with pytest.raises(ValueError, match="variant"):
        divest.mi_matrix(np.column_stack([x, y]), variant=3)
    with pytest.raises(ValueError, match="discrete_features"):
        divest.knn_cmi(np.ones(20), np.ones(20), np.ones(20), k=3, algorithm="kd_tree")
    # Enough points for the mixed estimator even when every point is equal.
    assert np.isfinite(
        divest.knn_cmi(np.ones(20), np.ones(20), np.ones(20), k=3, discrete_features=True)
    )
    xc = x.copy()
    divest.knn_cmi(x, y, z, discrete_features=True)
    assert np.array_equal(x, xc)
