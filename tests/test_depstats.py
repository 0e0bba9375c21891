"""Dependence over many variables, conditional measures and greedy DPP MAP (issue 17):
dcor_matrix, mi_matrix, mixed discrete-continuous knn_mi, knn_cmi / cmi_test and
dpp.greedy_map, each against an independent oracle (the pairwise calls, dcor,
scikit-learn, closed forms, exhaustive enumeration)."""

from __future__ import annotations

import numpy as np
import pytest

import divest

# ---------------------------------------------------------------------------------------
# dcor_matrix


def _mixed_columns(n, rng):
    base = rng.standard_normal(n)
    cols = [
        base,
        base**2 + 0.3 * rng.standard_normal(n),
        np.round(3 * rng.standard_normal(n)),  # ties
        np.full(n, 2.5),  # constant
        rng.standard_normal(n) * 1e-3 + 1e6,  # shifted
        np.sin(3 * base),
    ]
    return np.column_stack(cols)


def _same(a, b, n):
    """Bit for bit above 2048 observations (the same arithmetic as divest.dcor); to
    rounding below (plain merge sums: about n·√n·ε relative on dCov²)."""
    if n > 2048:
        return a == b
    return abs(a - b) <= 1e-11 * max(abs(b), 1e-300) + 1e-15


@pytest.mark.parametrize("n", [4, 9, 64, 301, 2100])
def test_dcor_matrix_equals_pairwise_dcor(n):
    rng = np.random.default_rng(n)
    X = _mixed_columns(n, rng)
    p = X.shape[1]
    M = divest.dcor_matrix(X)
    assert M.shape == (p, p)
    for i in range(p):
        for j in range(p):
            if i == j:
                assert M[i, i] == (0.0 if i == 3 else 1.0)
            else:
                # The matrix is exactly symmetric: entry (i, j) is the call with the
                # lower index first (the call itself is symmetric only to rounding).
                a, b = min(i, j), max(i, j)
                assert _same(M[i, j], divest.dcor(X[:, a], X[:, b]), n), (i, j)
    Mu = divest.dcor_matrix(X, unbiased=True)
    for i in range(p):
        for j in range(p):
            if i != j:
                a, b = min(i, j), max(i, j)
                want = min(max(divest.dcor_sqr(X[:, a], X[:, b], unbiased=True), -1.0), 1.0)
                assert _same(Mu[i, j], want, n)
    Y = X[:, ::-1][:, :4]
    R = divest.dcor_matrix(X, Y)
    assert R.shape == (p, 4)
    for i in range(p):
        for j in range(4):
            assert _same(R[i, j], divest.dcor(X[:, i], Y[:, j]), n)
    # Entries do not depend on which other columns are in the call.
    assert np.array_equal(divest.dcor_matrix(X[:, 1:4], X[:, 4:]), M[1:4, 4:])


def test_dcor_matrix_matches_the_dcor_package():
    dcor = pytest.importorskip("dcor")
    rng = np.random.default_rng(3)
    X = _mixed_columns(50, rng)
    X[:, 3] += rng.standard_normal(50)  # dcor divides 0 by 0 on constant columns
    M = divest.dcor_matrix(X)
    Mu = divest.dcor_matrix(X, unbiased=True)
    Mh = divest.dcor_matrix(X, exponent=0.5)
    Xc = X.copy()
    Xc[:, 4] -= 1e6
    for i in range(X.shape[1]):
        for j in range(i + 1, X.shape[1]):
            # dcor's O(n²) matrices lose digits on the column shifted by 1e6: give it the
            # centred column (divest's value does not depend on the shift).
            x, y = Xc[:, i], Xc[:, j]
            assert M[i, j] == pytest.approx(dcor.distance_correlation(x, y), rel=1e-9, abs=1e-12)
            assert Mu[i, j] == pytest.approx(
                dcor.u_distance_correlation_sqr(x, y), rel=1e-9, abs=1e-12
            )
            assert Mh[i, j] == pytest.approx(
                dcor.distance_correlation(x, y, exponent=0.5), rel=1e-9, abs=1e-12
            )


def test_dcor_matrix_constant_columns_scale_and_threads():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((40, 5))
    X[:, 1] = 7.0
    M = divest.dcor_matrix(X)
    assert np.all(np.isfinite(M)) and M.max() <= 1.0 and M.min() >= 0.0
    assert np.all(M[1] == 0.0) and np.all(M[:, 1] == 0.0)
    assert np.array_equal(M, M.T)
    # Per-column scales (powers of two far outside the double range's comfort zone).
    # Exact power-of-two scales give the same bits; other scales the same value to rounding.
    S = X * np.array([2.0**700, 1.0, 2.0**-1000, 3.0, 2.0**-900])
    assert np.array_equal(divest.dcor_matrix(S), divest.dcor_matrix(X * [1, 1, 1, 3, 1]))
    S = X * np.array([1e200, 1.0, 1e-300, 3.0, 1e300])
    assert np.allclose(divest.dcor_matrix(S), M, rtol=1e-12, atol=0)
    with divest.threads(1):
        one = divest.dcor_matrix(X, unbiased=True)
    with divest.threads(2):
        two = divest.dcor_matrix(X, unbiased=True)
    assert np.array_equal(one, two)
    x32 = X.astype(np.float32)
    assert np.array_equal(divest.dcor_matrix(x32), divest.dcor_matrix(x32.astype(np.float64)))
    assert divest.dcor_matrix(X[:, 0]).shape == (1, 1)
    Xc = X.copy()
    divest.dcor_matrix(X, X[:, :2])
    assert np.array_equal(X, Xc)


def test_dcor_matrix_bad_input():
    X = np.random.default_rng(0).standard_normal((10, 3))
    with pytest.raises(ValueError, match="Y"):
        divest.dcor_matrix(X, X[:5])
    with pytest.raises(ValueError, match="unbiased"):
        divest.dcor_matrix(X[:3], unbiased=True)
    with pytest.raises(ValueError, match="exponent"):
        divest.dcor_matrix(X, exponent=2.0)
    with pytest.raises(ValueError, match="X"):
        divest.dcor_matrix(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="X"):
        divest.dcor_matrix(np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(TypeError, match="unbiased"):
        divest.dcor_matrix(X, unbiased="yes")


# ---------------------------------------------------------------------------------------
# mi_matrix and mixed discrete-continuous knn_mi


def _gauss_columns(n, rng):
    C = np.array(
        [
            [1.0, 0.6, 0.0, 0.3],
            [0.6, 1.0, 0.2, 0.0],
            [0.0, 0.2, 1.0, -0.5],
            [0.3, 0.0, -0.5, 1.0],
        ]
    )
    return rng.standard_normal((n, 4)) @ np.linalg.cholesky(C).T, C


def test_mi_matrix_equals_pairwise_knn_mi():
    rng = np.random.default_rng(11)
    X, _ = _gauss_columns(300, rng)
    X[:, 2] = X[:, 2] * 5 + 3
    M = divest.mi_matrix(X, k=4)
    assert np.array_equal(M, M.T)
    for i in range(4):
        for j in range(4):
            want = divest.knn_mi(X[:, i], X[:, j], k=4)
            assert M[i, j] == pytest.approx(want, rel=1e-12, abs=1e-13), (i, j)
    R = divest.mi_matrix(X[:, :3], X[:, 1:], k=4)
    assert R.shape == (3, 3)
    assert np.allclose(R, M[:3, 1:], rtol=1e-12, atol=1e-13)
    with divest.threads(1):
        one = divest.mi_matrix(X, k=4)
    assert np.array_equal(one, M)


def test_mi_matrix_many_targets_matches_scikit_learn():
    from sklearn.feature_selection import mutual_info_regression

    rng = np.random.default_rng(12)
    X, _ = _gauss_columns(500, rng)
    y = X[:, 0] + 0.5 * X[:, 2] ** 2 + 0.3 * rng.standard_normal(500)
    Xs, ys = X / X.std(0), y / y.std()
    ours = divest.mi_matrix(Xs, ys, k=3)[:, 0]
    sk = mutual_info_regression(X, y, n_neighbors=3, random_state=0)
    # scikit-learn standardises, adds noise of relative size 1e-10 and clips at 0.
    assert np.allclose(np.maximum(ours, 0), sk, atol=1e-6)


@pytest.mark.parametrize("n", [1000, 4000])
def test_mi_matrix_gaussian_closed_form(n):
    rng = np.random.default_rng(n)
    X, C = _gauss_columns(n, rng)
    M = divest.mi_matrix(X, k=5)
    off = ~np.eye(4, dtype=bool)
    want = -0.5 * np.log(1 - np.where(off, C, 0) ** 2)
    # KSG's error is about 1/√n here (bias and spread); generous constant, shrinking with n.
    assert np.max(np.abs(M - want)[off]) < 1.5 / np.sqrt(n)


def _gao_brute(x, y, k):
    """The mixture estimator of Gao et al. (2017) (the authors' reference code's form) by
    its definition, all pairs."""
    from scipy.special import digamma

    n = len(x)
    dx = np.sqrt(((x[:, None, :] - x[None]) ** 2).sum(-1))
    dy = np.sqrt(((y[:, None, :] - y[None]) ** 2).sum(-1))
    dz = np.maximum(dx, dy)
    out = 0.0
    for i in range(n):
        others = np.delete(np.arange(n), i)
        rho = np.sort(dz[i, others])[k - 1]
        if rho > 0:
            kt = k
            nx = np.count_nonzero(dx[i] < rho * (1 - 1e-12))
            ny = np.count_nonzero(dy[i] < rho * (1 - 1e-12))
        else:
            kt = np.count_nonzero(dz[i] == 0)
            nx = np.count_nonzero(dx[i] == 0)
            ny = np.count_nonzero(dy[i] == 0)
        out += digamma(kt) + np.log(n) - digamma(nx) - digamma(ny)
    return out / n


def test_mixed_knn_mi_matches_the_definition():
    rng = np.random.default_rng(13)
    n = 200
    xd = rng.integers(0, 3, (n, 1)).astype(float)
    xc = rng.standard_normal((n, 1)) + xd
    yc = np.column_stack([xd[:, 0] + rng.standard_normal(n), rng.standard_normal(n)])
    yd = (rng.random((n, 1)) < 0.3).astype(float) + xd
    for x, y in [(xd, yc), (xd, yd), (xc, yc), (np.hstack([xd, xc]), yd)]:
        for k in (1, 3, 7):
            got = divest.knn_mi(x, y, k, discrete_features=True)
            assert got == pytest.approx(_gao_brute(x, y, k), rel=1e-10, abs=1e-12)
    # The matrix form agrees on 1-D columns, whichever column is marked.
    X = np.column_stack([xd[:, 0], xc[:, 0], yd[:, 0], yc[:, 0]])
    M = divest.mi_matrix(X, k=3, discrete_features=[0, 2])
    for i, j in [(0, 1), (0, 2), (2, 3), (1, 2)]:
        want = divest.knn_mi(X[:, i], X[:, j], 3, discrete_features=True)
        assert M[i, j] == pytest.approx(want, rel=1e-12, abs=1e-13)
    assert M[1, 3] == pytest.approx(divest.knn_mi(X[:, 1], X[:, 3], 3), rel=1e-12)
    mask = np.array([True, False, True, False])
    assert np.array_equal(divest.mi_matrix(X, k=3, discrete_features=mask), M)
    assert np.array_equal(divest.mi_matrix(X, k=3, discrete_features="auto"), M)


def _mixture_mi(means, sigma=1.0):
    """I(X; Y) for X uniform on len(means) values and Y | X = m ~ N(m, σ²): h(Y) − h(Y|X),
    h(Y) by mpmath quadrature."""
    import mpmath as mp

    mp.mp.dps = 30
    w = mp.mpf(1) / len(means)

    def f(t):
        return w * sum(mp.npdf(t, m, sigma) for m in means)

    lo, hi = min(means) - 12 * sigma, max(means) + 12 * sigma
    pts = [lo] + sorted(means) + [hi]
    h = -mp.quad(lambda t: f(t) * mp.log(f(t)), pts)
    return float(h - 0.5 * mp.log(2 * mp.pi * mp.e * sigma**2))


@pytest.mark.parametrize("n", [1000, 4000])
def test_mixed_knn_mi_discrete_uniform_gaussian_closed_form(n):
    rng = np.random.default_rng(n + 1)
    means = [0.0, 1.0, 3.0]
    x = rng.integers(0, 3, n)
    y = np.asarray(means)[x] + rng.standard_normal(n)
    want = _mixture_mi(means)
    got = divest.knn_mi(x, y, 5, discrete_features=True)
    assert abs(got - want) < 1.5 / np.sqrt(n)
    assert divest.knn_mi(x, y, 5, discrete_features="auto") == got
    with pytest.warns(UserWarning, match="discrete_features"):
        divest.mi_matrix(np.column_stack([x, y]), k=5)


@pytest.mark.parametrize("n", [1000, 4000])
def test_mixed_knn_mi_discrete_pair_closed_form(n):
    rng = np.random.default_rng(n + 2)
    x = rng.integers(0, 4, n)
    y = (x + (rng.random(n) < 0.2)) % 2
    P = np.array([[0.25 * (0.8 if b == a % 2 else 0.2) for b in range(2)] for a in range(4)])
    want = float((P * np.log(P / (P.sum(1, keepdims=True) * P.sum(0, keepdims=True)))).sum())
    got = divest.knn_mi(x, y, 5, discrete_features=True)
    assert abs(got - want) < 1.5 / np.sqrt(n)
    assert divest.mi_matrix(np.column_stack([x, y]), k=5, discrete_features=True)[0, 1] == (
        pytest.approx(got, rel=1e-12)
    )
    # What the warning is about: KSG on discrete data is far off (here negative).
    with pytest.warns(UserWarning, match="discrete_features"):
        biased = divest.knn_mi(x, y, 5)
    assert biased < 0


def test_mi_bad_input():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 3))
    with pytest.raises(ValueError, match="k"):
        divest.mi_matrix(X, k=20)
    with pytest.raises(ValueError, match="Y"):
        divest.mi_matrix(X, X[:10])
    with pytest.raises(ValueError, match="discrete_features"):
        divest.mi_matrix(X, discrete_features=np.array([True, False]))
    with pytest.raises(ValueError, match="discrete_features"):
        divest.mi_matrix(X, discrete_features=[5])
    with pytest.raises(ValueError, match="discrete_features"):
        divest.mi_matrix(X, discrete_features="yes")
    with pytest.raises(TypeError, match="discrete_features"):
        divest.knn_mi(X[:, 0], X[:, 1], discrete_features=None)
    with pytest.raises(ValueError, match="X"):
        divest.mi_matrix(np.array([[1.0, np.inf], [2.0, 3.0], [0.0, 1.0]]), k=1)
    # Both columns constant: no point has a neighbour at positive distance.
    C = np.ones((10, 2))
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="discrete_features"):
        divest.mi_matrix(C, k=2)
    assert np.all(np.isfinite(divest.mi_matrix(C, k=2, discrete_features=True)))


# ---------------------------------------------------------------------------------------
# knn_cmi and cmi_test


def _cmi_brute(x, y, z, k):
    """Frenzel-Pompe by its definition (all pairs, max of the blocks' Euclidean norms)."""
    from scipy.special import digamma

    def dist(a):
        return np.sqrt(((a[:, None, :] - a[None]) ** 2).sum(-1))

    dx, dy, dz = dist(x), dist(y), dist(z)
    joint = np.maximum(np.maximum(dx, dy), dz)
    n = len(x)
    tot = 0.0
    for i in range(n):
        o = np.delete(np.arange(n), i)
        e = np.sort(joint[i, o])[k - 1] * (1 - 1e-13)
        nxz = np.count_nonzero(np.maximum(dx[i, o], dz[i, o]) < e)
        nyz = np.count_nonzero(np.maximum(dy[i, o], dz[i, o]) < e)
        nz = np.count_nonzero(dz[i, o] < e)
        tot += digamma(nxz + 1) + digamma(nyz + 1) - digamma(nz + 1)
    return digamma(k) - tot / n


def _gauss_cmi_case(n, d, c, rng):
    """x = a·z + e1, y = a·z + c·x + e2 with z ~ N(0, I_d): the sample and the closed form
    I(X; Y | Z) = ½ [log det Σ_xz + log det Σ_yz − log det Σ_z − log det Σ_xyz]."""
    a = np.full(d, 0.5 / np.sqrt(d))
    z = rng.standard_normal((n, d))
    x = z @ a + rng.standard_normal(n)
    y = z @ a + c * x + rng.standard_normal(n)
    M = np.zeros((d + 2, d + 2))
    M[0, :d], M[0, d] = a, 1.0
    M[1, :d], M[1, d], M[1, d + 1] = a + c * a, c, 1.0
    M[2:, :d] = np.eye(d)
    S = M @ M.T
    zi = list(range(2, d + 2))

    def ld(idx):
        return np.linalg.slogdet(S[np.ix_(idx, idx)])[1]

    want = 0.5 * (ld([0] + zi) + ld([1] + zi) - ld(zi) - ld([0, 1] + zi))
    return x, y, z, want


def test_knn_cmi_matches_the_definition():
    rng = np.random.default_rng(31)
    n = 150
    z = rng.standard_normal((n, 2))
    x = np.column_stack([z[:, 0] + rng.standard_normal(n), rng.standard_normal(n)])
    y = z[:, 1] + x[:, 0] + rng.standard_normal(n)
    for k in (1, 4):
        got = divest.knn_cmi(x, y, z, k)
        assert got == pytest.approx(_cmi_brute(x, y[:, None], z, k), rel=1e-10, abs=1e-12)
    with divest.threads(1):
        assert divest.knn_cmi(x, y, z, 4) == divest.knn_cmi(x, y, z, 4)
    assert divest.knn_cmi(x, y, z, 4, base=2) == pytest.approx(
        divest.knn_cmi(x, y, z, 4) / np.log(2), rel=1e-14
    )


@pytest.mark.parametrize("d", [1, 2, 5, 10])
def test_knn_cmi_gaussian_closed_forms(d):
    rng = np.random.default_rng(40 + d)
    n = 1500
    for c in (0.0, 0.5):
        x, y, z, want = _gauss_cmi_case(n, d, c, rng)
        got = divest.knn_cmi(x, y, z, 5)
        # Spread about 1/√n; the estimator's bias grows with the dimension of z
        # (measured: −0.08 at d = 10, n = 1000, for I = 0.11).
        assert abs(got - want) < 1.5 / np.sqrt(n) + 0.008 * d, (c, got, want)


def test_cmi_test_calibration_power_and_reproducibility():
    rng = np.random.default_rng(50)
    n, B, reps = 120, 39, 40
    small = 0
    for _ in range(reps):
        x, y, z, _ = _gauss_cmi_case(n, 1, 0.0, rng)
        r = divest.cmi_test(x, y, z, k=5, n_resamples=B, rng=rng)
        assert r.null_distribution.shape == (B,)
        assert r.pvalue == (1 + np.count_nonzero(r.null_distribution >= r.statistic)) / (1 + B)
        small += r.pvalue <= 0.1
    # Under H0, P(p <= 0.1) = 4/40 = 0.1; 40 draws: P(count >= 11) < 1e-3 for Binomial(40, 0.1).
    assert small <= 10
    x, y, z, _ = _gauss_cmi_case(n, 1, 1.0, rng)
    r1 = divest.cmi_test(x, y, z, k=5, n_resamples=B, rng=7)
    assert r1.pvalue == 1 / (1 + B)
    with divest.threads(1):
        r2 = divest.cmi_test(x, y, z, k=5, n_resamples=B, rng=7)
    assert r1.statistic == r2.statistic
    assert np.array_equal(r1.null_distribution, r2.null_distribution)
    r3 = divest.cmi_test(x, y, z, k=5, n_resamples=B, rng=np.random.default_rng(7))
    assert np.array_equal(r3.null_distribution, r1.null_distribution)


def test_cmi_bad_input():
    rng = np.random.default_rng(0)
    x, y, z = rng.standard_normal((3, 20))
    with pytest.raises(ValueError, match="k"):
        divest.knn_cmi(x, y, z, k=20)
    with pytest.raises(ValueError, match="z"):
        divest.knn_cmi(x, y, z[:10])
    with pytest.raises(ValueError, match="k_perm"):
        divest.cmi_test(x, y, z, k_perm=21)
    with pytest.raises(ValueError, match="n_resamples"):
        divest.cmi_test(x, y, z, n_resamples=0)
    with pytest.raises(ValueError, match="x"):
        divest.knn_cmi(np.full(20, np.nan), y, z)
    with pytest.raises(ValueError, match="duplicate"):
        with pytest.warns(UserWarning, match="discrete_features"):
            divest.knn_cmi(np.ones(20), np.ones(20), np.ones(20))


# ---------------------------------------------------------------------------------------
# dpp.greedy_map


def _greedy_oracle(L, k, thr):
    """Greedy selection recomputing log det of every candidate set directly."""
    S, cur = [], 0.0
    N = L.shape[0]
    while len(S) < k:
        best, bj = -np.inf, None
        for j in range(N):
            if j in S:
                continue
            sign, ld = np.linalg.slogdet(L[np.ix_(S + [j], S + [j])])
            if sign > 0 and ld > best:
                best, bj = ld, j
        if bj is None or best - cur < np.log(thr):
            break
        S.append(bj)
        cur = best
    return S


def test_greedy_map_matches_exhaustive_greedy_steps():
    from divest import dpp

    rng = np.random.default_rng(60)
    for N, r in [(8, 8), (12, 12), (15, 6)]:
        B = rng.standard_normal((N, r)) * rng.uniform(0.5, 2.0, (N, 1))
        L = B @ B.T + (0.05 * np.eye(N) if r == N else 0)
        for k in (1, 3, min(r, 6)):
            assert list(dpp.greedy_map(L, k)) == _greedy_oracle(L, k, 1e-300), (N, k)
        # Without k: stop once no item increases det(L_S).
        got = list(dpp.greedy_map(L))
        assert got == _greedy_oracle(L, N, 1.0)
        assert list(dpp.greedy_map(L, threshold=2.0)) == _greedy_oracle(L, N, 2.0)


def test_greedy_map_is_stable_on_rank_deficient_kernels():
    from divest import dpp

    rng = np.random.default_rng(61)
    B = rng.standard_normal((200, 5))
    B[100:] = B[:100] * (1 + 1e-12)  # near-duplicate items
    L = B @ B.T
    S = dpp.greedy_map(L, 20)
    # Rank 5: five items, then every pivot is rounding noise (the reference implementation
    # takes square roots of negative pivots there).
    assert len(S) == 5 and len(set(S.tolist())) == 5
    sign, ld = np.linalg.slogdet(L[np.ix_(S, S)])
    assert sign > 0 and np.isfinite(ld)
    assert list(S) == _greedy_oracle(L, 5, 1e-300)
    assert dpp.greedy_map(np.zeros((4, 4)), 2).size == 0
    Lc = L.copy()
    dpp.greedy_map(L, 3)
    assert np.array_equal(L, Lc)


def test_greedy_map_bad_input():
    from divest import dpp

    L = np.eye(4)
    with pytest.raises(ValueError, match="k"):
        dpp.greedy_map(L, 5)
    with pytest.raises(ValueError, match="k"):
        dpp.greedy_map(L, 0)
    with pytest.raises(ValueError, match="square"):
        dpp.greedy_map(np.ones((3, 4)))
    with pytest.raises(ValueError, match="symmetric"):
        dpp.greedy_map(np.triu(np.ones((3, 3))))
    with pytest.raises(ValueError, match="threshold"):
        dpp.greedy_map(L, threshold=-1.0)
    with pytest.raises(TypeError, match="threshold"):
        dpp.greedy_map(L, threshold="x")
    with pytest.raises(ValueError, match="L"):
        dpp.greedy_map(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="negative"):
        dpp.greedy_map(-np.eye(3))


# ---------------------------------------------------------------------------------------
# Ctrl-C


def _long_calls():
    R = np.random.default_rng(1)
    X = R.standard_normal((1000, 1000))
    x, y, z = R.standard_normal((3, 1500))
    return {
        "dcor_matrix": lambda: divest.dcor_matrix(X),
        "mi_matrix": lambda: divest.mi_matrix(X[:, :400]),
        "cmi_test": lambda: divest.cmi_test(x, y, z, n_resamples=2000, rng=0),
    }


@pytest.mark.parametrize("name", ["dcor_matrix", "mi_matrix", "cmi_test"])
def test_long_calls_stop_on_ctrl_c(name):
    import _thread
    import signal
    import threading
    import time

    call = _long_calls()[name]
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    try:
        t0 = time.perf_counter()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            call()
        elapsed = time.perf_counter() - t0
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, old)
    assert elapsed < 3.0, f"{name} took {elapsed:.2f} s to stop"
    assert divest.dcor_matrix(np.eye(5)).shape == (5, 5)
