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
