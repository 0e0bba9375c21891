"""Issue 18: property tests with hypothesis, for every family.

Symmetry, non-negativity, zero at identical inputs, invariance to row permutations,
shifts and scales where the quantity has them, float32 close to float64, and agreement
with a peer (scipy, dcor, POT) where the peer is right.

Data are drawn by numpy from a hypothesis-chosen seed, size and scale: realistic finite
samples in moderate ranges (hypothesis still shrinks the seed and the sizes). A few
targeted properties at extreme magnitudes follow at the end.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import divest
from divest import dpp

FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEED = st.integers(0, 2**32 - 1)
SCALE = st.sampled_from([1e-3, 0.1, 1.0, 7.0, 1e3])


def _close(a, b, rtol=1e-9, atol=1e-12):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------
# Divergences between discrete distributions.


@st.composite
def prob_pairs(draw, min_n=2, max_n=9):
    r = np.random.default_rng(draw(SEED))
    n = draw(st.integers(min_n, max_n))
    # A spread of magnitudes, strictly positive: every divergence is finite.
    p = r.random(n) ** draw(st.sampled_from([1, 3])) + 1e-3
    q = r.random(n) ** draw(st.sampled_from([1, 3])) + 1e-3
    return p / p.sum(), q / q.sum(), r.permutation(n)


SYMMETRIC = ("js", "js_distance", "hellinger", "tv")
ALL_DIV = SYMMETRIC + ("kl", "chi2")


@FAST
@given(prob_pairs())
def test_divergences_nonnegative_zero_at_identity_permutation_invariant(pq):
    p, q, perm = pq
    for name in ALL_DIV:
        f = getattr(divest, name)
        v = f(p, q)
        assert v >= 0, (name, v)
        assert abs(f(p, p)) <= 1e-12, name
        _close(f(p[perm], q[perm]), v, rtol=1e-12, atol=1e-15)
        # Rows of a batch are independent problems.
        _close(f(np.stack([p, q]), np.stack([q, p])), [f(p, q), f(q, p)], rtol=1e-12)
    for alpha in (0.5, 2.0, 5.0):
        assert divest.renyi(p, q, alpha) >= 0
        assert abs(divest.renyi(p, p, alpha)) <= 1e-12


@FAST
@given(prob_pairs())
def test_symmetric_divergences_are_symmetric(pq):
    p, q, _ = pq
    for name in SYMMETRIC:
        f = getattr(divest, name)
        _close(f(p, q), f(q, p), rtol=1e-12, atol=1e-15)


@FAST
@given(prob_pairs())
def test_divergences_agree_with_scipy_and_closed_forms(pq):
    from scipy.spatial.distance import jensenshannon
    from scipy.special import rel_entr

    p, q, _ = pq
    _close(divest.kl(p, q), rel_entr(p, q).sum(), rtol=1e-12)
    _close(divest.kl(p, q, base=2), rel_entr(p, q).sum() / math.log(2), rtol=1e-12)
    _close(divest.js_distance(p, q), jensenshannon(p, q), rtol=1e-10)
    _close(divest.js(p, q), jensenshannon(p, q) ** 2, rtol=1e-10, atol=1e-15)
    _close(divest.tv(p, q), 0.5 * np.abs(p - q).sum(), rtol=1e-12)
    _close(divest.chi2(p, q), ((p - q) ** 2 / q).sum(), rtol=1e-12)
    _close(
        divest.hellinger(p, q), np.sqrt(0.5 * ((np.sqrt(p) - np.sqrt(q)) ** 2).sum()), rtol=1e-10
    )
    for alpha in (0.5, 2.0, 3.0):
        _close(
            divest.renyi(p, q, alpha),
            np.log((p**alpha * q ** (1 - alpha)).sum()) / (alpha - 1),
            rtol=1e-10,
            atol=1e-14,
        )
    # Named f-divergences equal the dedicated functions.
    _close(divest.f_divergence(p, q, "kl"), divest.kl(p, q), rtol=1e-10)
    _close(divest.f_divergence(p, q, "reverse_kl"), divest.kl(q, p), rtol=1e-10)
    _close(divest.f_divergence(p, q, "tv"), divest.tv(p, q), rtol=1e-10)
    _close(divest.f_divergence(p, q, "jeffreys"), divest.kl(p, q) + divest.kl(q, p), rtol=1e-10)


@FAST
@given(prob_pairs())
def test_divergences_float32_close_to_float64(pq):
    p, q, _ = pq
    for name in ALL_DIV:
        f = getattr(divest, name)
        v32 = f(p.astype(np.float32), q.astype(np.float32))
        v64 = f(p.astype(np.float32).astype(np.float64), q.astype(np.float32).astype(np.float64))
        _close(v32, v64, rtol=1e-4, atol=1e-6)


@FAST
@given(prob_pairs(), st.sampled_from([1e-3, 1.0, 1e6]))
def test_logits_and_normalize_paths_agree(pq, s):
    p, q, _ = pq
    # Unnormalised inputs with normalize=True, log inputs and logits give the same KL.
    want = divest.kl(p, q)
    _close(divest.kl(p * s, q * s, normalize=True), want, rtol=1e-10, atol=1e-14)
    _close(divest.kl(np.log(p), np.log(q), log_input=True), want, rtol=1e-9, atol=1e-14)
    _close(
        divest.kl(np.log(p) + 3.0, np.log(q) - 2.0, from_logits=True), want, rtol=1e-9, atol=1e-14
    )


# ---------------------------------------------------------------------------------------
# Sample-based divergences: MMD, Cauchy-Schwarz, kNN estimators.


@st.composite
def two_samples(draw, min_n=5, max_n=30, max_d=3, same_d=True):
    r = np.random.default_rng(draw(SEED))
    n = draw(st.integers(min_n, max_n))
    m = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, max_d))
    s = draw(SCALE)
    x = r.standard_normal((n, d)) * s
    y = (r.standard_normal((m, d if same_d else draw(st.integers(1, max_d)))) + 0.5) * s
    return x, y, s, r


@FAST
@given(two_samples())
def test_mmd_and_cs_properties(xy):
    x, y, s, r = xy
    sigma = 1.3 * s
    c = r.standard_normal(x.shape[1]) * 10 * s
    for f in (
        lambda a, b, **k: divest.mmd(a, b, sigma, **k),
        lambda a, b, **k: divest.cs_divergence(a, b, sigma),
    ):
        v = f(x, y)
        _close(f(y, x), v, rtol=1e-9, atol=1e-12)
        _close(f(x + c, y + c), v, rtol=1e-6, atol=1e-9)
        _close(f(x[r.permutation(len(x))], y[::-1]), v, rtol=1e-9, atol=1e-12)
    assert divest.mmd(x, y, sigma, unbiased=False) >= 0
    assert abs(divest.mmd(x, x, sigma, unbiased=False)) <= 1e-9
    assert divest.cs_divergence(x, y, sigma) >= -1e-12
    assert abs(divest.cs_divergence(x, x, sigma)) <= 1e-9
    # The median heuristic makes both scale invariant.
    for f in (divest.mmd, divest.cs_divergence):
        _close(f(x * 3.0, y * 3.0), f(x, y), rtol=1e-8, atol=1e-12)


@FAST
@given(two_samples(min_n=8))
def test_knn_estimators_shift_scale_permutation(xy):
    x, y, s, r = xy
    d = x.shape[1]
    c = r.standard_normal(d) * s
    h = divest.knn_entropy(x)
    _close(divest.knn_entropy(x + c), h, rtol=1e-7, atol=1e-7)
    _close(divest.knn_entropy(x * 4.0), h + d * math.log(4.0), rtol=1e-9, atol=1e-9)
    _close(divest.knn_entropy(x[r.permutation(len(x))]), h, rtol=1e-12, atol=1e-12)
    k = divest.knn_kl(x, y)
    _close(divest.knn_kl(x + c, y + c), k, rtol=1e-7, atol=1e-7)
    _close(divest.knn_kl(x * 4.0, y * 4.0), k, rtol=1e-9, atol=1e-9)
    _close(divest.knn_kl(x[::-1], y[r.permutation(len(y))]), k, rtol=1e-12, atol=1e-12)


@FAST
@given(two_samples(min_n=10, same_d=False))
def test_knn_mi_symmetry_shift_permutation(xy):
    x, y, s, r = xy
    n = min(len(x), len(y))
    x, y = x[:n], y[:n] + 0.5 * x[:n, :1]
    v = divest.knn_mi(x, y)
    _close(divest.knn_mi(y, x), v, rtol=1e-12, atol=1e-12)
    _close(divest.knn_mi(x + 1.5 * s, y - 2.0 * s), v, rtol=1e-7, atol=1e-7)
    perm = r.permutation(n)
    _close(divest.knn_mi(x[perm], y[perm]), v, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------
# Distance covariance and energy statistics. The oracle is the textbook O(n²) formula
# (the dcor package agrees with it, see tests/test_dcov.py; importing it here would cost
# a numba start-up of tens of seconds).


def _dist(a, b):
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


def _dcov2(x, y, unbiased=False):
    """V statistic (double centring) or U statistic (U-centring, Székely-Rizzo 2014)."""
    a, b = _dist(x, x), _dist(y, y)
    n = len(x)
    if not unbiased:

        def c(m):
            return m - m.mean(0) - m.mean(1)[:, None] + m.mean()

        return float((c(a) * c(b)).mean())

    def u(m):
        out = m - m.sum(0) / (n - 2) - m.sum(1)[:, None] / (n - 2) + m.sum() / ((n - 1) * (n - 2))
        np.fill_diagonal(out, 0.0)
        return out

    return float((u(a) * u(b)).sum() / (n * (n - 3)))


@FAST
@given(two_samples(min_n=6, same_d=False))
def test_dcor_symmetry_range_invariances_and_oracle(xy):
    x, y, s, r = xy
    n = min(len(x), len(y))
    x, y = x[:n], y[:n] + x[:n, :1]
    v = divest.dcor(x, y)
    assert 0.0 <= v <= 1.0
    _close(divest.dcor(y, x), v, rtol=1e-12, atol=1e-14)
    _close(divest.dcor(x, x), 1.0, rtol=1e-12)
    _close(divest.dcor(x * 7.5 + 3 * s, y), v, rtol=1e-9, atol=1e-12)
    _close(divest.dcor(x, -y / 3.0), v, rtol=1e-9, atol=1e-12)
    perm = r.permutation(n)
    _close(divest.dcor(x[perm], y[perm]), v, rtol=1e-10, atol=1e-12)
    # An orthogonal transform of x keeps every distance.
    qmat = np.linalg.qr(r.standard_normal((x.shape[1],) * 2))[0]
    _close(divest.dcor(x @ qmat, y), v, rtol=1e-9, atol=1e-12)
    vxy, vxx, vyy = _dcov2(x, y), _dcov2(x, x), _dcov2(y, y)
    _close(v, np.sqrt(vxy / np.sqrt(vxx * vyy)), rtol=1e-9, atol=1e-12)
    _close(divest.dcov_sqr(x, y), vxy, rtol=1e-9, atol=1e-14 * s)
    assert divest.dcov_sqr(x, y) >= 0
    if n >= 4:
        _close(
            divest.dcov_sqr(x, y, unbiased=True),
            _dcov2(x, y, unbiased=True),
            rtol=1e-8,
            atol=1e-12 * s,
        )
    # dCov² scales with the product of the scales (exponent 1).
    _close(divest.dcov_sqr(x * 3.0, y * 5.0), 15.0 * divest.dcov_sqr(x, y), rtol=1e-9, atol=1e-14)


@FAST
@given(two_samples(min_n=5))
def test_energy_distance_properties_and_oracle(xy):
    x, y, s, r = xy
    v = divest.energy_distance(x, y)
    assert v >= 0
    _close(divest.energy_distance(y, x), v, rtol=1e-12, atol=1e-14)
    assert abs(divest.energy_distance(x, x)) <= 1e-12 * s
    _close(divest.energy_distance(x * 2.5, y * 2.5), 2.5 * v, rtol=1e-9, atol=1e-12 * s)
    c = r.standard_normal(x.shape[1]) * s
    _close(divest.energy_distance(x + c, y + c), v, rtol=1e-7, atol=1e-9 * s)
    _close(divest.energy_distance(x[::-1], y[r.permutation(len(y))]), v, rtol=1e-10, atol=1e-13 * s)
    _close(
        v,
        2 * _dist(x, y).mean() - _dist(x, x).mean() - _dist(y, y).mean(),
        rtol=1e-9,
        atol=1e-12 * s,
    )


@FAST
@given(two_samples(min_n=6))
def test_partial_dcor_jdcov_ccdcov_relations(xy):
    x, y, s, r = xy
    n = min(len(x), len(y))
    x, y = x[:n], y[:n]
    z = r.standard_normal((n, 1))
    v = divest.partial_dcor(x, y, z)
    assert -1.0 - 1e-12 <= v <= 1.0 + 1e-12
    _close(divest.partial_dcor(y, x, z), v, rtol=1e-9, atol=1e-12)
    # Two variables: JdCov and CCdCov are dCov² (V or U).
    # (JdCov forms Π(Û + c) − c^d: its rounding is relative to c = 1, not to dCov².)
    _close(divest.jdcov(x, y, unbiased=False), divest.dcov_sqr(x, y), rtol=1e-9, atol=1e-13)
    if n >= 4:
        _close(
            divest.ccdcov(y, x), divest.dcov_sqr(y, x, unbiased=True), rtol=1e-9, atol=1e-13 * s * s
        )
        _close(
            divest.ccdcov(y, x[:, :1], z),
            divest.dcov_sqr(y, np.column_stack([x[:, :1], z]), unbiased=True),
            rtol=1e-9,
            atol=1e-13 * max(s, 1.0) ** 2,
        )


@settings(max_examples=5, deadline=None)
@given(two_samples(min_n=8, max_n=15))
def test_permutation_tests_are_reproducible_and_valid(xy):
    x, y, s, r = xy
    n = min(len(x), len(y))
    t1 = divest.dcov_test(x[:n], y[:n], n_resamples=29, rng=5)
    t2 = divest.dcov_test(x[:n], y[:n], n_resamples=29, rng=5)
    assert t1.statistic == t2.statistic and t1.pvalue == t2.pvalue
    assert 0 < t1.pvalue <= 1
    e = divest.energy_test(x, y, n_resamples=29, rng=5)
    assert 0 < e.pvalue <= 1
    _close(e.pvalue, (1 + np.sum(e.null_distribution >= e.statistic)) / 30, rtol=1e-12)


# ---------------------------------------------------------------------------------------
# Kernel density estimation.


@st.composite
def kde_data(draw):
    r = np.random.default_rng(draw(SEED))
    n = draw(st.integers(5, 40))
    d = draw(st.integers(1, 3))
    s = draw(SCALE)
    a = r.standard_normal((d, d)) * 0.3 + np.eye(d)
    x = (r.standard_normal((n, d)) @ a) * s
    q = (r.standard_normal((draw(st.integers(1, 8)), d)) @ a) * s
    return x, q, s, r


@FAST
@given(kde_data())
def test_kde_shift_scale_permutation_and_scipy(xq):
    from scipy.stats import gaussian_kde

    x, q, s, r = xq
    d = x.shape[1]
    want = divest.KDE(x).logpdf(q)
    c = r.standard_normal(d) * 3 * s
    _close(divest.KDE(x + c).logpdf(q + c), want, rtol=1e-7, atol=1e-7)
    _close(divest.KDE(x * 3.0).logpdf(q * 3.0), want - d * math.log(3.0), rtol=1e-9, atol=1e-9)
    _close(divest.KDE(x[r.permutation(len(x))]).logpdf(q), want, rtol=1e-10, atol=1e-10)
    for rule in ("scott", "silverman"):
        _close(
            divest.KDE(x, bandwidth=rule).logpdf(q),
            gaussian_kde(x.T, bw_method=rule).logpdf(q.T),
            rtol=1e-8,
            atol=1e-8,
        )
    w = r.random(len(x)) + 0.1
    _close(
        divest.KDE(x, weights=w).logpdf(q),
        gaussian_kde(x.T, weights=w).logpdf(q.T),
        rtol=1e-8,
        atol=1e-8,
    )
    _close(
        divest.KDE(x, weights=w * 1e5).logpdf(q),
        divest.KDE(x, weights=w).logpdf(q),
        rtol=1e-12,
        atol=1e-12,
    )


@FAST
@given(
    kde_data(),
    st.sampled_from(["gaussian", "epanechnikov", "tophat", "exponential", "linear", "cosine"]),
)
def test_kde_kernels_float32_and_consistency(xq, kernel):
    x, q, s, r = xq
    kde = divest.KDE(x, kernel=kernel)
    lp = kde.logpdf(q)
    assert not np.isnan(lp).any()
    _close(kde.pdf(q), np.exp(lp), rtol=1e-12, atol=0)
    _close(divest.kde_logpdf(x, q, kernel=kernel), lp, rtol=1e-12, atol=1e-12)
    k32 = divest.KDE(x.astype(np.float32), kernel=kernel)
    lp32 = k32.logpdf(q.astype(np.float32))
    assert lp32.dtype == np.float32
    ref = divest.KDE(x.astype(np.float32).astype(np.float64), kernel=kernel).logpdf(
        q.astype(np.float32).astype(np.float64)
    )
    fin = np.isfinite(ref)
    assert np.array_equal(fin, np.isfinite(lp32))
    _close(lp32[fin], ref[fin], rtol=1e-4, atol=1e-4)


@settings(max_examples=10, deadline=None)
@given(kde_data())
def test_kde_score_is_the_gradient_of_logpdf(xq):
    x, q, s, r = xq
    kde = divest.KDE(x)
    g = kde.score(q)
    h = 1e-6 * s
    for j in range(x.shape[1]):
        e = np.zeros(x.shape[1])
        e[j] = h
        fd = (kde.logpdf(q + e) - kde.logpdf(q - e)) / (2 * h)
        _close(g[:, j], fd, rtol=1e-4, atol=1e-4 / s)


# ---------------------------------------------------------------------------------------
# Entropic optimal transport.


@st.composite
def ot_problems(draw):
    r = np.random.default_rng(draw(SEED))
    n = draw(st.integers(2, 8))
    m = draw(st.integers(2, 8))
    a = r.random(n) + 0.1
    b = r.random(m) + 0.1
    cost = r.random((n, m)) * draw(st.sampled_from([1.0, 5.0]))
    reg = draw(st.sampled_from([0.1, 0.5, 2.0]))
    return a / a.sum(), b / b.sum(), cost, reg, r


@FAST
@given(ot_problems())
def test_sinkhorn_transpose_shift_permutation_and_pot(prob):
    import ot

    a, b, cost, reg, r = prob
    res = divest.sinkhorn(a, b, cost, reg, tol=1e-12, max_iter=20000)
    assert res.converged
    _close(res.plan.sum(1), a, rtol=1e-8, atol=1e-10)
    _close(res.plan.sum(0), b, rtol=1e-8, atol=1e-10)
    t = divest.sinkhorn(b, a, cost.T, reg, tol=1e-12, max_iter=20000)
    _close(t.cost, res.cost, rtol=1e-8, atol=1e-10)
    _close(t.plan, res.plan.T, rtol=1e-7, atol=1e-10)
    # A constant added to the cost adds itself to the cost of a mass-one problem.
    sh = divest.sinkhorn(a, b, cost + 3.0, reg, tol=1e-12, max_iter=20000)
    _close(sh.cost, res.cost + 3.0, rtol=1e-8, atol=1e-9)
    _close(sh.plan, res.plan, rtol=1e-7, atol=1e-10)
    pi, pj = r.permutation(len(a)), r.permutation(len(b))
    pr = divest.sinkhorn(a[pi], b[pj], cost[np.ix_(pi, pj)], reg, tol=1e-12, max_iter=20000)
    _close(pr.plan, res.plan[np.ix_(pi, pj)], rtol=1e-7, atol=1e-10)
    want = ot.sinkhorn(a, b, cost, reg, method="sinkhorn_log", stopThr=1e-13, numItermax=100000)
    _close(res.plan, want, rtol=1e-6, atol=1e-9)
    _close(res.linear_cost, float((want * cost).sum()), rtol=1e-7, atol=1e-10)


@FAST
@given(ot_problems())
def test_sinkhorn_batch_equals_single_problems(prob):
    a, b, cost, reg, r = prob
    a2 = np.stack([a, a[::-1]])
    b2 = np.stack([b, b[::-1]])
    c2 = np.stack([cost, cost[::-1, ::-1]])
    res = divest.sinkhorn_batch(a2, b2, c2, reg, tol=1e-12, max_iter=20000)
    for i in range(2):
        one = divest.sinkhorn(a2[i], b2[i], c2[i], reg, tol=1e-12, max_iter=20000)
        _close(res.cost[i], one.cost, rtol=1e-8, atol=1e-10)
    # The two problems are the same problem, reordered.
    _close(res.cost[0], res.cost[1], rtol=1e-8, atol=1e-10)


@FAST
@given(two_samples(min_n=2, max_n=12))
def test_sinkhorn_divergence_symmetric_nonnegative_translation_invariant(xy):
    x, y, s, r = xy
    x, y = x / s, y / s
    for p in (1, 2):
        v = divest.sinkhorn_divergence(x, y, eps=0.5, p=p).value
        assert v >= -1e-9
        _close(divest.sinkhorn_divergence(y, x, eps=0.5, p=p).value, v, rtol=1e-6, atol=1e-9)
        c = r.standard_normal(x.shape[1])
        _close(
            divest.sinkhorn_divergence(x + c, y + c, eps=0.5, p=p).value, v, rtol=1e-6, atol=1e-8
        )
        _close(
            divest.sinkhorn_divergence(x[::-1], y[r.permutation(len(y))], eps=0.5, p=p).value,
            v,
            rtol=1e-6,
            atol=1e-9,
        )
    same = divest.sinkhorn_divergence(x, x, eps=0.5, p=1).value
    assert abs(same) <= 1e-9


# ---------------------------------------------------------------------------------------
# Determinantal point processes.


@st.composite
def dpp_kernels(draw):
    r = np.random.default_rng(draw(SEED))
    n = draw(st.integers(2, 7))
    k = draw(st.integers(1, n))
    a = r.standard_normal((n, k)) * draw(st.sampled_from([0.3, 1.0, 3.0]))
    return a @ a.T, r


def _esp_bruteforce(lam, k):
    from itertools import combinations

    return sum(np.prod([lam[i] for i in c]) for c in combinations(range(len(lam)), k))


@FAST
@given(dpp_kernels())
def test_dpp_kernels_probabilities_and_normalisers(kr):
    L, r = kr
    n = L.shape[0]
    d = dpp.DPP(L=L)
    K = L @ np.linalg.inv(np.eye(n) + L)
    _close(d.correlation_kernel(), K, rtol=1e-8, atol=1e-10)
    p = d.inclusion_probabilities()
    assert np.all((p >= -1e-12) & (p <= 1 + 1e-12))
    _close(p, np.diag(K), rtol=1e-8, atol=1e-10)
    _close(d.expected_size(), np.trace(K), rtol=1e-9, atol=1e-12)
    dk = dpp.DPP(K=(K + K.T) / 2)
    _close(dk.inclusion_probabilities(), p, rtol=1e-7, atol=1e-9)
    lam = np.clip(np.linalg.eigvalsh(L), 0, None)
    for k in range(1, d.rank + 1):
        want = _esp_bruteforce(lam, k)
        if want > 1e-200:
            _close(d.log_normaliser_k(k), math.log(want), rtol=1e-8, atol=1e-8)


@FAST
@given(dpp_kernels(), st.integers(0, 2**32 - 1))
def test_dpp_samples_are_valid_sets_and_reproducible(kr, seed):
    L, r = kr
    n = L.shape[0]
    d = dpp.DPP(L=L)
    for method in ("chain", "rejection"):
        ss = d.sample(4, rng=seed, method=method)
        again = d.sample(4, rng=seed, method=method)
        assert len(ss) == 4 and all(np.array_equal(u, v) for u, v in zip(ss, again))
        for s_ in ss:
            assert np.all(np.diff(s_) > 0) and (len(s_) == 0 or (s_[0] >= 0 and s_[-1] < n))
            assert len(s_) <= d.rank
        k = d.rank
        kk = d.sample_k(k, 3, rng=seed, method=method)
        assert kk.shape == (3, k)
        assert all(len(set(row)) == k for row in kk.tolist())
    u = np.linalg.qr(r.standard_normal((n, max(1, d.rank))))[0]
    sp = dpp.sample_projection(u, 5, rng=seed)
    assert sp.shape == (5, u.shape[1])
    assert np.all(np.diff(sp, axis=1) > 0)


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(5, 20), st.integers(1, 4))
def test_least_squares_tools(seed, n, m):
    r = np.random.default_rng(seed)
    phi = r.standard_normal((n, m))
    y = r.standard_normal(n)
    w = r.random(n) + 0.1
    sw = np.sqrt(w)
    want = np.linalg.lstsq(phi * sw[:, None], y * sw, rcond=None)[0]
    _close(dpp.weighted_least_squares(phi, y, w), want, rtol=1e-8, atol=1e-10)
    _close(dpp.weighted_least_squares(phi, y, w * 1e3), want, rtol=1e-8, atol=1e-10)
    ow = dpp.optimal_weights(phi)
    _close(ow, m / (phi**2).sum(1), rtol=1e-12)
    design = dpp.least_squares_design(phi, max(m, 3), rng=seed)
    assert len(design.indices) == max(m, 3)
    assert np.all((design.indices >= 0) & (design.indices < n))
    assert np.all(design.weights > 0)


# ---------------------------------------------------------------------------------------
# Fisher tools.


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(1, 6))
def test_fisher_merge_and_svd(seed, k, n):
    r = np.random.default_rng(seed)
    params = [r.standard_normal(n) for _ in range(k)]
    fishers = [r.random(n) + 0.01 for _ in range(k)]
    merged = divest.fisher_merge(params, fishers)
    # Identical parameters return themselves exactly.
    np.testing.assert_array_equal(divest.fisher_merge([params[0]] * k, fishers), params[0])
    # A convex combination, elementwise, and invariant to the order of the models.
    lo = np.min(params, axis=0)
    hi = np.max(params, axis=0)
    assert np.all(merged >= lo - 1e-12) and np.all(merged <= hi + 1e-12)
    perm = r.permutation(k)
    _close(
        divest.fisher_merge([params[i] for i in perm], [fishers[i] for i in perm]),
        merged,
        rtol=1e-10,
        atol=1e-12,
    )
    f = np.array(fishers)
    _close(merged, (f * np.array(params)).sum(0) / f.sum(0), rtol=1e-9, atol=1e-12)
    # Equal Fishers: the plain average.
    _close(
        divest.fisher_merge(params, [np.ones(n)] * k),
        np.mean(params, axis=0),
        rtol=1e-10,
        atol=1e-12,
    )
    W = r.standard_normal((n + 2, n + 1))
    F = r.random(W.shape) + 0.1
    A, B = divest.fisher_weighted_svd(W, F, min(W.shape))
    _close(A @ B, W, rtol=1e-9, atol=1e-10)
    A1, B1 = divest.fisher_weighted_svd(W, np.ones_like(W), 1)
    u, sv, vt = np.linalg.svd(W)
    _close(A1 @ B1, sv[0] * np.outer(u[:, 0], vt[0]), rtol=1e-8, atol=1e-10)


# ---------------------------------------------------------------------------------------
# Targeted extreme magnitudes (a few examples each).

EXTREME = settings(max_examples=6, deadline=None)


@EXTREME
@given(st.integers(0, 2**32 - 1), st.sampled_from([1e-150, 1e-100, 1e100, 1e140]))
def test_energy_statistics_at_extreme_but_safe_scales(seed, s):
    r = np.random.default_rng(seed)
    x = r.standard_normal((15, 2))
    y = x[:, :1] + r.standard_normal((15, 1))
    z = r.standard_normal((12, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _close(divest.dcor(x * s, y), divest.dcor(x, y), rtol=1e-9, atol=1e-12)
        _close(
            divest.energy_distance(x * s, z * s) / s,
            divest.energy_distance(x, z),
            rtol=1e-9,
            atol=1e-12,
        )


@EXTREME
@given(st.integers(0, 2**32 - 1), st.sampled_from([1e-170, 1e160, 1e200]))
def test_energy_statistics_at_the_edges_of_the_range(seed, s):
    r = np.random.default_rng(seed)
    x = r.standard_normal((15, 2))
    y = x[:, :1] + r.standard_normal((15, 1))
    z = r.standard_normal((12, 2))
    _close(divest.dcor(x * s, y), divest.dcor(x, y), rtol=1e-9, atol=1e-12)
    _close(
        divest.energy_distance(x * s, z * s) / s,
        divest.energy_distance(x, z),
        rtol=1e-9,
        atol=1e-12,
    )


@EXTREME
@given(prob_pairs(), st.sampled_from([1e-300, 1e-200, 1e200, 1e300]))
def test_normalized_divergences_at_extreme_masses(pq, s):
    p, q, _ = pq
    for name in ALL_DIV:
        f = getattr(divest, name)
        _close(f(p * s, q * s, normalize=True), f(p, q), rtol=1e-9, atol=1e-13)


@EXTREME
@given(prob_pairs(), st.sampled_from([1e-310, 1e-315, 5e-320]))
def test_kl_with_a_tiny_q_matches_rel_entr(pq, tiny):
    from scipy.special import rel_entr

    p, q, _ = pq
    q = q.copy()
    q[0] = tiny
    q[1:] *= (1 - tiny) / q[1:].sum()
    _close(divest.kl(p, q), rel_entr(p, q).sum(), rtol=1e-10)
