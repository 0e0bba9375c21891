"""DPPs and volume sampling: every sampler against exact enumeration (G-tests on counts,
fixed seeds), unbiasedness of volume-sampled least squares, the Legendre experiment of
Nouy and Michel, reproducibility across thread counts, and bad inputs."""

import itertools
from collections import Counter

import numpy as np
import pytest
from scipy import stats

import divest
from divest import dpp

ALPHA = 1e-4  # fixed seeds: a p-value below this is a real discrepancy


def g_test(samples, probs, min_expected=5.0):
    """G-test of sampled outcomes against exact probabilities (a dict outcome -> p).

    Counts, not frequencies. Cells with expected count below `min_expected` are pooled
    into one cell; an outcome of probability zero that was sampled fails outright.
    Returns the p-value.
    """
    counts = Counter(samples)
    n = sum(counts.values())
    for s in counts:
        if probs.get(s, 0.0) <= 0.0:
            return 0.0
    obs, exp = [], []
    pool_o, pool_e = 0.0, 0.0
    for s, p in probs.items():
        e = p * n
        if e < min_expected:
            pool_o += counts.get(s, 0)
            pool_e += e
        else:
            obs.append(counts.get(s, 0))
            exp.append(e)
    if pool_e > 0:
        obs.append(pool_o)
        exp.append(pool_e)
    obs, exp = np.array(obs, float), np.array(exp, float)
    assert abs(exp.sum() - n) < 1e-6 * n, "exact probabilities must sum to one"
    nz = obs > 0
    g = 2.0 * np.sum(obs[nz] * np.log(obs[nz] / exp[nz]))
    return float(stats.chi2.sf(g, len(obs) - 1))


def as_sets(samples):
    return [tuple(int(i) for i in s) for s in samples]


def random_orthonormal(n, m, seed, uneven=True):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, m))
    if uneven:
        a *= np.linspace(0.2, 3.0, n)[:, None]  # very different leverage scores
    return np.linalg.qr(a)[0]


def projection_probs(u):
    n, m = u.shape
    k = u @ u.T
    return {s: float(np.linalg.det(k[np.ix_(s, s)])) for s in itertools.combinations(range(n), m)}


# ---------------------------------------------------------------- projection DPPs


def test_g_test_rejects_a_wrong_distribution():
    # The statistical tests below can fail: samples of one kernel against another
    # kernel's probabilities, and uniform subsets against a DPP, are both rejected.
    u = random_orthonormal(8, 3, 0)
    u2 = random_orthonormal(8, 3, 1)
    s = as_sets(dpp.sample_projection(u, 20000, rng=0))
    assert g_test(s, projection_probs(u)) > ALPHA
    assert g_test(s, projection_probs(u2)) < 1e-10
    rng = np.random.default_rng(0)
    uni = [tuple(sorted(rng.choice(8, 3, replace=False))) for _ in range(20000)]
    assert g_test(uni, projection_probs(u)) < 1e-10


@pytest.mark.parametrize("method", ["chain", "rejection", "auto"])
@pytest.mark.parametrize("n,m", [(8, 3), (10, 5), (12, 1)])
def test_projection_matches_enumeration(method, n, m):
    u = random_orthonormal(n, m, 10 * n + m)
    probs = projection_probs(u)
    assert abs(sum(probs.values()) - 1) < 1e-10
    s = dpp.sample_projection(u, 30000, method=method, rng=n + m)
    assert s.shape == (30000, m) and s.dtype == np.int64
    assert (np.diff(s, axis=1) > 0).all()
    assert g_test(as_sets(s), probs) > ALPHA


def test_projection_with_rank_one_item_and_zero_rows():
    # Item 0 spans a direction alone (always sampled); items 5, 6 have zero leverage.
    u = np.zeros((7, 3))
    u[0, 0] = 1.0
    u[1:5, 1:] = random_orthonormal(4, 2, 3)
    for method in ("chain", "rejection"):
        s = dpp.sample_projection(u, 4000, method=method, rng=1)
        assert (s[:, 0] == 0).all()
        assert not np.isin(s, [5, 6]).any()
        assert g_test(as_sets(s), projection_probs(u)) > ALPHA


def test_projection_large_is_valid_and_matches_leverage():
    # N = 3000, m = 40: no duplicate items, and inclusion frequencies match K_ii.
    u = random_orthonormal(3000, 40, 7)
    lev = np.einsum("ij,ij->i", u, u)
    for method in ("chain", "rejection"):
        s = dpp.sample_projection(u, 400, method=method, rng=3)
        assert (np.diff(s, axis=1) > 0).all()
        freq = np.bincount(s.ravel(), minlength=3000) / 400
        # Aggregate over 30 blocks of 100 items: binomial-ish z-scores.
        blocks = freq.reshape(30, 100).sum(axis=1)
        expect = lev.reshape(30, 100).sum(axis=1)
        z = (blocks - expect) / np.sqrt(expect / 400)
        assert np.max(np.abs(z)) < 5


def test_projection_reproducible_and_thread_independent():
    u = random_orthonormal(500, 20, 2)
    for method in ("chain", "rejection"):
        with divest.threads(1):
            a = dpp.sample_projection(u, 37, method=method, rng=5)
        with divest.threads(2):
            b = dpp.sample_projection(u, 37, method=method, rng=5)
        np.testing.assert_array_equal(a, b)
        c = dpp.sample_projection(u, 37, method=method, rng=np.random.default_rng(5))
        np.testing.assert_array_equal(a, c)
        d = dpp.sample_projection(u, 37, method=method, rng=6)
        assert not np.array_equal(a, d)
    one = dpp.sample_projection(u, rng=1)
    assert one.shape == (20,)


def test_projection_accepts_float32_and_fortran_order():
    u = random_orthonormal(40, 4, 9)
    a = dpp.sample_projection(u, 5, rng=2)
    b = dpp.sample_projection(np.asfortranarray(u), 5, rng=2)
    np.testing.assert_array_equal(a, b)
    c = dpp.sample_projection(u.astype(np.float32), 5, rng=2)
    assert c.shape == (5, 4)
    uu = u.copy()
    dpp.sample_projection(uu, 3, rng=0)
    np.testing.assert_array_equal(uu, u)


def test_projection_bad_inputs():
    u = random_orthonormal(10, 3, 0)
    with pytest.raises(ValueError, match="orthonormal"):
        dpp.sample_projection(u * 1.01)
    with pytest.raises(ValueError, match="orthonormal"):
        dpp.sample_projection(np.ones((10, 2)) / np.sqrt(10))
    big = random_orthonormal(3000, 90, 1)
    big[5, 3] += 1e-3
    with pytest.raises(ValueError, match="orthonormal"):  # the probed path
        dpp.sample_projection(big)
    with pytest.raises(ValueError, match="rows"):
        dpp.sample_projection(np.eye(3)[:2])
    bad = u.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        dpp.sample_projection(bad)
    with pytest.raises(ValueError, match="method"):
        dpp.sample_projection(u, method="gs")
    with pytest.raises(ValueError, match="2-D"):
        dpp.sample_projection(u[:, 0])
    with pytest.raises(ValueError):
        dpp.sample_projection(u, n_samples=-1)
    with pytest.raises(TypeError):
        dpp.sample_projection(u, rng="seed")
