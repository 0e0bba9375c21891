"""DPPs and volume sampling: every sampler against exact enumeration (G-tests on counts,
fixed seeds), unbiasedness of volume-sampled least squares, the Legendre experiment of
Nouy and Michel, reproducibility across thread counts, and bad inputs."""

import itertools
from collections import Counter

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

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


def pattern_probs(k, items):
    """P(Y ∩ S = A) for every A ⊆ S (S = items): (-1)^|S∖A| det(K_S - I_{S∖A})."""
    ks = k[np.ix_(items, items)]
    out = {}
    for mask in itertools.product([0, 1], repeat=len(items)):
        d = ks - np.diag([1.0 - b for b in mask])
        out[mask] = abs(float(np.linalg.det(d)))
    return out


@pytest.mark.parametrize("method", ["chain", "rejection"])
def test_projection_many_directions_matches_exact_patterns(method):
    # m = 40 exceeds one panel of 32 directions, so the chain rule updates all residuals
    # in blocks and thins in between. The joint law of 5 items' memberships (32 patterns)
    # against the exact probabilities det(K_S - I_{S∖A}).
    u = random_orthonormal(60, 40, 11)
    k = u @ u.T
    items = [int(i) for i in np.argsort(np.abs(np.diag(k) - 0.5))[:5]]
    probs = pattern_probs(k, items)
    assert abs(sum(probs.values()) - 1) < 1e-10
    s = dpp.sample_projection(u, 20000, method=method, rng=17)
    assert (np.diff(s, axis=1) > 0).all()
    member = np.zeros((20000, 60), bool)
    np.put_along_axis(member, s, True, axis=1)
    pats = [tuple(int(b) for b in row) for row in member[:, items]]
    assert g_test(pats, probs) > ALPHA
    # The same check fails on a different kernel's probabilities.
    k2 = random_orthonormal(60, 40, 12) @ random_orthonormal(60, 40, 12).T
    assert g_test(pats, pattern_probs(k2, items)) < 1e-6


def test_projection_one_sample_is_thread_independent():
    # A lone chain sample splits its residual updates over the threads.
    u = random_orthonormal(3000, 70, 4)
    for seed in range(3):
        with divest.threads(1):
            a = dpp.sample_projection(u, method="chain", rng=seed)
        with divest.threads(2):
            b = dpp.sample_projection(u, method="chain", rng=seed)
        np.testing.assert_array_equal(a, b)
        assert len(np.unique(a)) == 70


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


# ---------------------------------------------------------------- L-ensembles, K, k-DPPs


def all_subsets(n):
    return [s for r in range(n + 1) for s in itertools.combinations(range(n), r)]


def random_psd(n, rank, seed, scale=1.0):
    b = np.random.default_rng(seed).standard_normal((n, rank)) * scale
    return b @ b.T


def l_ensemble_probs(L):
    n = L.shape[0]
    z = np.linalg.det(np.eye(n) + L)
    return {s: (float(np.linalg.det(L[np.ix_(s, s)])) if s else 1.0) / z for s in all_subsets(n)}


@pytest.mark.parametrize("method", ["chain", "rejection"])
@pytest.mark.parametrize("n,rank", [(6, 6), (7, 3)])
def test_l_ensemble_matches_enumeration(method, n, rank):
    L = random_psd(n, rank, n + rank, scale=0.8)
    probs = l_ensemble_probs(L)
    probs = {s: max(p, 0.0) if len(s) <= rank else 0.0 for s, p in probs.items()}
    d = dpp.DPP(L=L)
    s = d.sample(30000, method=method, rng=rank)
    assert len(s) == 30000 and all(x.dtype == np.int64 for x in s[:5])
    assert g_test(as_sets(s), probs) > ALPHA
    sizes = np.array([len(x) for x in s])
    assert abs(sizes.mean() - d.expected_size()) < 5 * sizes.std() / np.sqrt(len(s))


def test_correlation_kernel_matches_enumeration():
    # Eigenvalues 1 (always one item from that direction), 0 and values in between.
    n = 7
    v = np.linalg.qr(np.random.default_rng(4).standard_normal((n, n)))[0]
    p = np.array([1.0, 0.0, 0.3, 0.7, 0.5, 0.05, 0.9])
    K = (v * p) @ v.T
    # P(Y = S) = |det(K - I_{S^c})|: an oracle independent of the eigendecomposition.
    probs = {}
    for s in all_subsets(n):
        m = K.copy()
        comp = [i for i in range(n) if i not in s]
        m[comp, comp] -= 1.0
        probs[s] = abs(float(np.linalg.det(m)))
    d = dpp.DPP(K=K)
    assert d.kind == "correlation" and d.rank == 6
    s = d.sample(30000, rng=8)
    assert g_test(as_sets(s), probs) > ALPHA
    np.testing.assert_allclose(d.inclusion_probabilities(), np.diag(K), atol=1e-12)
    np.testing.assert_allclose(d.expected_size(), p.sum(), rtol=1e-12)
    np.testing.assert_allclose(d.correlation_kernel(), K, atol=1e-12)


def test_inclusion_probabilities_and_expected_size():
    L = random_psd(30, 30, 5, scale=0.4)
    d = dpp.DPP(L=L)
    K = L @ np.linalg.inv(np.eye(30) + L)
    np.testing.assert_allclose(d.inclusion_probabilities(), np.diag(K), atol=1e-10)
    np.testing.assert_allclose(d.expected_size(), np.trace(K), rtol=1e-10)
    s = d.sample(4000, rng=1)
    freq = np.bincount(np.concatenate(s), minlength=30) / 4000
    pi = np.diag(K)
    z = (freq - pi) / np.sqrt(pi * (1 - pi) / 4000)
    assert np.max(np.abs(z)) < 5
    assert "DPP(kind='likelihood', N=30" in repr(d)


def k_dpp_probs_log(lam, v, k):
    """Exact k-DPP probabilities via the eigenbasis, in log space (any conditioning):
    P(S) ∝ Σ_{|J|=k} Π λ_J det(V_{S,J})²."""
    n = len(lam)
    with np.errstate(divide="ignore"):
        ll = np.log(lam)
    out = {}
    for s in itertools.combinations(range(n), k):
        terms = []
        for j in itertools.combinations(range(n), k):
            det = np.linalg.det(v[np.ix_(s, j)])
            if det != 0 and np.isfinite(ll[list(j)]).all():
                terms.append(ll[list(j)].sum() + 2 * np.log(abs(det)))
        out[s] = logsumexp(terms) if terms else -np.inf
    z = logsumexp([x for x in out.values() if np.isfinite(x)])
    return {s: float(np.exp(x - z)) for s, x in out.items()}, z


@pytest.mark.parametrize("method", ["chain", "rejection"])
def test_k_dpp_matches_enumeration(method):
    L = random_psd(8, 8, 21, scale=0.7)
    k = 3
    z = sum(np.linalg.det(L[np.ix_(s, s)]) for s in itertools.combinations(range(8), k))
    probs = {
        s: float(np.linalg.det(L[np.ix_(s, s)])) / z for s in itertools.combinations(range(8), k)
    }
    d = dpp.DPP(L=L)
    np.testing.assert_allclose(d.log_normaliser_k(k), np.log(z), rtol=1e-12)
    s = d.sample_k(k, 30000, method=method, rng=4)
    assert s.shape == (30000, 3)
    assert g_test(as_sets(s), probs) > ALPHA


def test_k_dpp_ill_conditioned_does_not_overflow():
    # Eigenvalues from 1e-150 to 1e150: e_k overflows in linear space (and det(L_S) too).
    n, k = 7, 3
    v = np.linalg.qr(np.random.default_rng(6).standard_normal((n, n)))[0]
    lam = np.array([1e-150, 1e-60, 1e-5, 1.0, 1e5, 1e80, 1e150])
    L = (v * lam) @ v.T
    d = dpp.DPP(L=L)
    # Relative to 1e150 every other eigenvalue is below N·eps·λmax: eigh cannot resolve
    # them, so they are rounded to zero and k > 1 is refused rather than sampled wrongly.
    lam_r = d.eigenvalues
    assert d.rank == 1
    with pytest.raises(ValueError, match="rank 1"):
        d.sample_k(2)
    top = {(i,): float(v[i, -1] ** 2) for i in range(n)}
    assert g_test(as_sets(d.sample_k(1, 20000, rng=0)), top) > ALPHA
    # A spectrum built directly with a huge range that is not rounded away: pass K.
    p = np.array([1e-200, 1e-100, 1e-20, 0.5, 1 - 1e-12, 0.999, 0.3])
    Kmat = (v * p) @ v.T
    dk = dpp.DPP(K=Kmat)
    lam_l = dk.eigenvalues / (1 - dk.eigenvalues)
    probs, logz = k_dpp_probs_log(lam_l, dk.eigenvectors, k)
    assert np.isfinite(dk.log_normaliser_k(k))
    s = dk.sample_k(k, 20000, rng=3)
    assert g_test(as_sets(s), probs) > ALPHA
    # A k-DPP whose normaliser e_50 ≈ 1e430 overflows in linear space.
    lam = 10.0 ** np.linspace(1, 14, 60)
    v60 = np.linalg.qr(np.random.default_rng(7).standard_normal((60, 60)))[0]
    d60 = dpp.DPP(L=(v60 * lam) @ v60.T)
    ev = d60.eigenvalues
    c = np.exp(np.mean(np.log(ev)))
    ref = np.log(np.poly(-ev / c)[50]) + 50 * np.log(c)  # all terms positive: accurate
    assert ref > 900
    np.testing.assert_allclose(d60.log_normaliser_k(50), ref, rtol=1e-10)
    s = d60.sample_k(50, 200, rng=0)
    assert s.shape == (200, 50) and (np.diff(s, axis=1) > 0).all()
    assert lam_r.max() == pytest.approx(1e150)


def test_dpp_thread_independent():
    L = random_psd(300, 40, 2, scale=0.3)
    d = dpp.DPP(L=L)
    with divest.threads(1):
        a = d.sample(25, rng=9)
        ak = d.sample_k(10, 25, rng=9)
    with divest.threads(2):
        b = d.sample(25, rng=9)
        bk = d.sample_k(10, 25, rng=9)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    np.testing.assert_array_equal(ak, bk)
    assert d.sample(rng=1).ndim == 1 and d.sample_k(5, rng=1).shape == (5,)


def test_dpp_bad_inputs():
    L = random_psd(5, 5, 0)
    with pytest.raises(ValueError, match="exactly one"):
        dpp.DPP()
    with pytest.raises(ValueError, match="exactly one"):
        dpp.DPP(L=L, K=L)
    with pytest.raises(ValueError, match="symmetric"):
        dpp.DPP(L=L + np.triu(np.ones((5, 5)), 1))
    with pytest.raises(ValueError, match="positive semi-definite"):
        dpp.DPP(L=L - 2 * np.abs(np.linalg.eigvalsh(L)).max() * np.eye(5))
    with pytest.raises(ValueError, match="square"):
        dpp.DPP(L=L[:, :4])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dpp.DPP(K=2 * np.eye(3))
    with pytest.raises(ValueError, match="positive semi-definite"):
        dpp.DPP(K=-0.5 * np.eye(3))
    bad = L.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        dpp.DPP(L=bad)
    d = dpp.DPP(L=random_psd(6, 3, 1))
    with pytest.raises(ValueError, match="exceeds the rank 3"):
        d.sample_k(4)
    with pytest.raises(ValueError, match="method"):
        d.sample(method="spectral")
    with pytest.raises(ValueError, match="eigenvalues equal to 1"):
        dpp.DPP(K=np.eye(3)).sample_k(2)
    with pytest.raises(TypeError):
        d.sample_k(2.5)


# ---------------------------------------------------------------- volume sampling


def volume_probs(x, k):
    """P(S) ∝ det(X_Sᵀ X_S), normalised by brute force over all k-subsets."""
    n = x.shape[0]
    w = {
        s: max(float(np.linalg.det(x[list(s)].T @ x[list(s)])), 0.0)
        for s in itertools.combinations(range(n), k)
    }
    z = sum(w.values())
    return {s: v / z for s, v in w.items()}


@pytest.mark.parametrize("n,d,k", [(7, 2, 2), (7, 2, 3), (8, 3, 5), (6, 1, 4)])
def test_volume_sample_matches_enumeration(n, d, k):
    x = np.random.default_rng(n * d + k).standard_normal((n, d)) * np.linspace(0.3, 2, n)[:, None]
    probs = volume_probs(x, k)
    s = dpp.volume_sample(x, k, n_samples=30000, rng=k)
    assert s.shape == (30000, k) and (np.diff(s, axis=1) > 0).all()
    assert g_test(as_sets(s), probs) > ALPHA
    one = dpp.volume_sample(x, k, rng=0)
    assert one.shape == (k,)


def test_volume_sample_rejects_uniform_and_wrong_size():
    # The test can fail: volume samples are not uniform subsets, and size-k samples are
    # not size-(k) samples of another matrix.
    x = np.random.default_rng(3).standard_normal((7, 2)) * np.linspace(0.3, 2, 7)[:, None]
    s = as_sets(dpp.volume_sample(x, 3, n_samples=30000, rng=1))
    uni = {c: 1 / 35 for c in itertools.combinations(range(7), 3)}
    assert g_test(s, uni) < 1e-10
    assert g_test(s, volume_probs(x**2 + 0.1, 3)) < 1e-10


def rescaled_probs(x, k, p=None):
    """Volume-rescaled sampling from the measure p on rows: the sequence (i_1..i_k) has
    probability ∝ det(Σ_t x_{i_t} x_{i_t}ᵀ) Π p_{i_t}; returns sorted multisets."""
    n = x.shape[0]
    p = np.ones(n) if p is None else p
    w = Counter()
    for seq in itertools.product(range(n), repeat=k):
        xs = x[list(seq)]
        w[tuple(sorted(seq))] += max(float(np.linalg.det(xs.T @ xs)), 0.0) * np.prod(p[list(seq)])
    z = sum(w.values())
    return {s: v / z for s, v in w.items()}


@pytest.mark.parametrize("n,d,k", [(5, 2, 3), (4, 2, 5), (6, 1, 3)])
def test_volume_rescaled_matches_enumeration(n, d, k):
    x = np.random.default_rng(n + d + k).standard_normal((n, d)) * np.linspace(0.5, 2, n)[:, None]
    probs = rescaled_probs(x, k)
    s = dpp.volume_rescaled_sample(x, k, n_samples=30000, rng=2)
    assert s.shape == (30000, k) and (np.diff(s, axis=1) >= 0).all()
    assert g_test(as_sets(s), probs) > ALPHA
    # Plain volume sampling (no repeats) is a different distribution: rejected.
    if k <= n:
        vs = as_sets(dpp.volume_sample(x, k, n_samples=30000, rng=2))
        assert g_test(vs, probs) < 1e-10
    # A non-uniform base measure.
    p = np.linspace(1.0, 3.0, n) ** 2
    probs_p = rescaled_probs(x, k, p)
    s = dpp.volume_rescaled_sample(x, k, p=p, n_samples=30000, rng=3)
    assert g_test(as_sets(s), probs_p) > ALPHA
    assert g_test(as_sets(s), probs) < 1e-10


def test_volume_sampling_least_squares_is_unbiased():
    # E[X_S⁻¹ y_S] = X⁺ y for volume sampling of size d: by exact enumeration ...
    rng = np.random.default_rng(11)
    n, d = 9, 3
    x = rng.standard_normal((n, d)) * np.linspace(0.2, 2.0, n)[:, None]
    y = rng.standard_normal(n) + x @ np.array([1.0, -2.0, 0.5])
    target = np.linalg.lstsq(x, y, rcond=None)[0]
    probs = volume_probs(x, d)
    exact = sum(p * np.linalg.solve(x[list(s)], y[list(s)]) for s, p in probs.items() if p > 0)
    np.testing.assert_allclose(exact, target, rtol=1e-10, atol=1e-12)
    # ... whereas uniform subsets give a biased answer (the check can fail) ...
    uni = np.mean(
        [np.linalg.solve(x[list(s)], y[list(s)]) for s in itertools.combinations(range(n), d)],
        axis=0,
    )
    assert np.max(np.abs(uni - target)) > 0.05
    # ... and divest's samples agree with it within their standard error.
    s = dpp.volume_sample(x, d, n_samples=20000, rng=5)
    est = np.array([np.linalg.solve(x[r], y[r]) for r in s])
    se = est.std(axis=0) / np.sqrt(len(est))
    assert np.all(np.abs(est.mean(axis=0) - target) < 5 * se)


def test_volume_thread_independent_and_bad_inputs():
    x = np.random.default_rng(0).standard_normal((200, 4))
    for f in (dpp.volume_sample, dpp.volume_rescaled_sample):
        with divest.threads(1):
            a = f(x, 9, n_samples=30, rng=3)
        with divest.threads(2):
            b = f(x, 9, n_samples=30, rng=3)
        np.testing.assert_array_equal(a, b)
        with pytest.raises(ValueError, match="at least d = 4"):
            f(x, 3)
        with pytest.raises(ValueError, match="full column rank"):
            f(np.c_[x, x[:, :1]], 6)
        bad = x.copy()
        bad[3, 1] = np.inf
        with pytest.raises(ValueError, match="NaN or inf"):
            f(bad, 5)
    with pytest.raises(ValueError, match="at most N = 200"):
        dpp.volume_sample(x, 201)
    assert dpp.volume_rescaled_sample(x[:5], 12, rng=0).shape == (12,)
    with pytest.raises(ValueError, match="more columns"):
        dpp.volume_rescaled_sample(x[:3], 4)
    with pytest.raises(ValueError, match="p must"):
        dpp.volume_rescaled_sample(x, 5, p=-np.ones(200))
    with pytest.raises(ValueError, match="p must"):
        dpp.volume_rescaled_sample(x, 5, p=np.ones(3))


# ---------------------------------------------------------------- weighted least squares


def legendre_basis(x, m):
    """Legendre polynomials orthonormal in L²(uniform on [-1, 1])."""
    from numpy.polynomial import legendre

    return legendre.legvander(x, m - 1) * np.sqrt(2 * np.arange(m) + 1)


def test_optimal_weights_closed_form():
    x = np.linspace(-1, 1, 7)
    phi = legendre_basis(x, 4)
    w = dpp.optimal_weights(phi)
    np.testing.assert_allclose(w, 4 / np.sum(phi**2, axis=1), rtol=1e-14)
    # Christoffel function of orthonormal Legendre: k_m(±1) = m², so w(±1) = 1/m.
    np.testing.assert_allclose(w[[0, -1]], 1 / 4, rtol=1e-12)
    with pytest.raises(ValueError, match="row 1 is zero"):
        dpp.optimal_weights(np.array([[1.0, 0.0], [0.0, 0.0]]))


def test_weighted_least_squares_matches_lstsq():
    rng = np.random.default_rng(3)
    phi = legendre_basis(rng.uniform(-1, 1, 50), 8)
    y = rng.standard_normal((50, 2))
    w = rng.uniform(0.1, 5, 50)
    c = dpp.weighted_least_squares(phi, y, w)
    ref = np.linalg.lstsq(phi * np.sqrt(w)[:, None], y * np.sqrt(w)[:, None], rcond=None)[0]
    np.testing.assert_allclose(c, ref, rtol=1e-10, atol=1e-12)
    c1 = dpp.weighted_least_squares(phi, y[:, 0])
    np.testing.assert_allclose(c1, np.linalg.lstsq(phi, y[:, 0], rcond=None)[0], rtol=1e-10)
    # QR keeps accuracy where the normal equations square the condition number:
    # a Vandermonde basis with cond ~1e9 still recovers exact coefficients.
    x = np.linspace(0, 1, 40)
    v = np.vander(x, 10, increasing=True)
    coef = np.arange(1.0, 11.0)
    got = dpp.weighted_least_squares(v, v @ coef, np.ones(40))
    normal = np.linalg.solve(v.T @ v, v.T @ (v @ coef))
    assert np.max(np.abs(got - coef)) < 1e-5 < np.max(np.abs(normal - coef))
    with pytest.raises(ValueError, match="rank deficient"):
        dpp.weighted_least_squares(np.c_[phi, phi[:, :1]], y[:, 0])
    with pytest.raises(ValueError, match="rank deficient"):
        dpp.weighted_least_squares(phi, y[:, 0], np.r_[np.ones(5), np.zeros(45)])
    with pytest.raises(ValueError, match="non-negative"):
        dpp.weighted_least_squares(phi, y[:, 0], -w)
    with pytest.raises(ValueError, match="y must have shape"):
        dpp.weighted_least_squares(phi, y[:10, 0])
    with pytest.raises(ValueError, match="at least m = 8"):
        dpp.weighted_least_squares(phi[:5], y[:5, 0])


def test_least_squares_design_distributions():
    # On 8 candidates with 3 features the "dpp" design is the projection DPP onto the
    # features' span, whatever basis they are given in.
    rng = np.random.default_rng(1)
    phi = rng.standard_normal((8, 3)) * np.linspace(0.5, 2, 8)[:, None]
    q = np.linalg.qr(phi)[0]
    probs = projection_probs(q)
    idx = np.array(
        [
            dpp.least_squares_design(
                phi @ np.array([[1, 2, 0], [0, 1, 3], [0, 0, 1.0]]), 3, rng=r
            ).indices
            for r in range(3000)
        ]
    )
    assert g_test(as_sets(np.sort(idx, axis=1)), probs) > ALPHA
    d = dpp.least_squares_design(phi, 6, method="dpp", rng=0)
    assert d.indices.shape == (6,) and d.weights.shape == (6,)
    lev = np.einsum("ij,ij->i", q, q)
    np.testing.assert_allclose(d.weights, 3 / (8 * lev[d.indices]), rtol=1e-12)
    # "iid_optimal" draws from k_m/m (here ∝ leverage); "iid" uniformly with weight 1.
    dd = dpp.least_squares_design(phi, 30000, method="iid_optimal", rng=2)
    assert g_test([(int(i),) for i in dd.indices], {(i,): lev[i] / 3 for i in range(8)}) > ALPHA
    di = dpp.least_squares_design(phi, 30000, method="iid", rng=2)
    assert g_test([(int(i),) for i in di.indices], {(i,): 1 / 8 for i in range(8)}) > ALPHA
    assert (di.weights == 1).all()
    dv = dpp.least_squares_design(phi, 7, method="volume_rescaled", rng=4)
    assert dv.indices.shape == (7,)
    with pytest.raises(ValueError, match="at least m = 3"):
        dpp.least_squares_design(phi, 2, method="iid")
    with pytest.raises(ValueError, match="method"):
        dpp.least_squares_design(phi, 3, method="leverage")
    with pytest.raises(ValueError, match="full column rank"):
        dpp.least_squares_design(np.c_[phi, phi[:, 0]], 4)


def test_dpp_design_with_a_remainder():
    # n = 2m + 1: two independent DPPs, then one point i.i.d. from k_m/m.
    rng = np.random.default_rng(3)
    phi = rng.standard_normal((8, 3)) * np.linspace(0.5, 2, 8)[:, None]
    q = np.linalg.qr(phi)[0]
    lev = np.einsum("ij,ij->i", q, q)
    designs = [dpp.least_squares_design(phi, 7, method="dpp", rng=r) for r in range(3000)]
    idx = np.array([d.indices for d in designs])
    assert idx.shape == (3000, 7)
    probs = projection_probs(q)
    for part in (idx[:, :3], idx[:, 3:6]):
        assert g_test(as_sets(part), probs) > ALPHA
    assert g_test([(int(i),) for i in idx[:, 6]], {(i,): lev[i] / 3 for i in range(8)}) > ALPHA
    # The remainder is not a DPP point: against the uniform law it is rejected.
    assert g_test([(int(i),) for i in idx[:, 6]], {(i,): 1 / 8 for i in range(8)}) < 1e-6
    # Weighted Gram matrix (1/n) Σ w ψψᵀ, ψ = √N q: unbiased for the identity.
    grams = np.array(
        [
            (d.weights[:, None, None] * 8 * q[d.indices, :, None] * q[d.indices, None, :]).sum(0)
            / 7
            for d in designs
        ]
    )
    se = grams.std(axis=0) / np.sqrt(len(grams))
    assert np.all(np.abs(grams.mean(axis=0) - np.eye(3)) < 5 * se + 1e-12)
    np.testing.assert_allclose(designs[0].weights, 3 / (8 * lev[designs[0].indices]), rtol=1e-12)


def test_volume_rescaled_design_matches_enumeration():
    # Volume-rescaled design: multisets with P ∝ det(Σ w ψψᵀ) Π ρ, ρ = k_m/m, w = m/k_m.
    rng = np.random.default_rng(8)
    phi = rng.standard_normal((5, 2)) * np.linspace(0.5, 2, 5)[:, None]
    q = np.linalg.qr(phi)[0]
    lev = np.einsum("ij,ij->i", q, q)
    psi_w = q / np.sqrt(lev)[:, None]  # √w ψ up to a constant factor
    probs = rescaled_probs(psi_w, 3, lev / 2)
    idx = [
        tuple(sorted(dpp.least_squares_design(phi, 3, method="volume_rescaled", rng=r).indices))
        for r in range(6000)
    ]
    assert g_test(idx, probs) > ALPHA
    # iid from ρ with the same n is a different distribution: rejected.
    iid = [
        tuple(sorted(dpp.least_squares_design(phi, 3, method="iid_optimal", rng=r).indices))
        for r in range(6000)
    ]
    assert g_test(iid, probs) < 1e-6


@pytest.mark.parametrize("m", [10, 20])
def test_legendre_experiment(m):
    # Nouy and Michel's message: with weighted least squares, DPP designs (n = m) and
    # volume-rescaled designs (n = 2m) stay within a modest constant of the best
    # approximation error; i.i.d. points from μ with the same n do far worse.
    rng = np.random.default_rng(m)
    xc = rng.uniform(-1, 1, 2000)
    phi = legendre_basis(xc, m)
    y = 1 / (1 + 25 * xc**2) + 0.3 * np.sin(3 * xc)
    best = np.sqrt(np.mean((phi @ np.linalg.lstsq(phi, y, rcond=None)[0] - y) ** 2))

    def errors(method, n, reps=30):
        out = []
        for r in range(reps):
            d = dpp.least_squares_design(phi, n, method=method, rng=100 * r + m)
            try:
                c = dpp.weighted_least_squares(phi[d.indices], y[d.indices], d.weights)
                out.append(np.sqrt(np.mean((phi @ c - y) ** 2)) / best)
            except ValueError:  # a rank-deficient i.i.d. design
                out.append(np.inf)
        return np.array(out)

    e_dpp, e_vr = errors("dpp", m), errors("volume_rescaled", 2 * m)
    e_iid_m, e_iid_2m = errors("iid", m), errors("iid", 2 * m)
    # Theory: E err² = (m+1) best² for the DPP, (1 + m/(n-m+1)) best² volume-rescaled.
    assert np.sqrt(np.mean(e_dpp**2)) < 2 * np.sqrt(m + 1)
    assert np.sqrt(np.mean(e_vr**2)) < 2 * np.sqrt(1 + m / (m + 1))
    assert np.median(e_iid_m) > 10 * np.median(e_dpp)
    assert np.median(e_iid_2m) > 3 * np.median(e_vr)
