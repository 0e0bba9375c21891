"""Divergences: discrete (against scipy, closed forms and hand values), kernel and kNN
estimators (against brute-force NumPy, closed forms and scikit-learn), Fisher tools."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.special import gammaln, log_softmax, rel_entr
from scipy.stats import entropy

import divest

# ----------------------------------------------------------------------------- helpers


def dirichlet(rng, shape, k, zeros=0.0):
    x = rng.gamma(0.7, size=tuple(shape) + (k,))
    if zeros:
        x[rng.random(x.shape) < zeros] = 0.0
        x[..., 0] += 1e-3  # keep every row non-empty
    return x / x.sum(-1, keepdims=True)


def poisson(lam, k=120):
    j = np.arange(k)
    return np.exp(j * np.log(lam) - lam - gammaln(j + 1))


def f_numpy(name, p, q, alpha=None):
    """Σ q f(p/q) for strictly positive p, q: the textbook definition."""
    t = p / q
    f = {
        "kl": t * np.log(t),
        "reverse_kl": -np.log(t),
        "js": 0.5 * (t * np.log(t) - (1 + t) * np.log((1 + t) / 2)),
        "hellinger": 0.5 * (np.sqrt(t) - 1) ** 2,
        "tv": 0.5 * np.abs(t - 1),
        "chi2": (t - 1) ** 2,
        "neyman_chi2": (t - 1) ** 2 / t,
        "jeffreys": (t - 1) * np.log(t),
        "triangular": (t - 1) ** 2 / (t + 1),
    }
    if name == "alpha":
        v = 4 / (1 - alpha**2) * (1 - t ** ((1 + alpha) / 2))
    else:
        v = f[name]
    return (q * v).sum(-1)


# ------------------------------------------------------------------- discrete: oracles


def test_kl_and_js_match_scipy_on_batches_with_zeros():
    rng = np.random.default_rng(0)
    p = dirichlet(rng, (7, 5), 13, zeros=0.3)
    q = dirichlet(rng, (7, 5), 13)
    np.testing.assert_allclose(divest.kl(p, q), rel_entr(p, q).sum(-1), rtol=1e-13)
    np.testing.assert_allclose(divest.kl(p, q, base=2), entropy(p, q, base=2, axis=-1), rtol=1e-13)
    np.testing.assert_allclose(divest.js_distance(p, q), jensenshannon(p, q, axis=-1), rtol=1e-13)
    np.testing.assert_allclose(
        divest.js_distance(p, q, base=2), jensenshannon(p, q, base=2, axis=-1), rtol=1e-13
    )
    np.testing.assert_allclose(divest.js(p, q), jensenshannon(p, q, axis=-1) ** 2, rtol=1e-12)
    # q with zeros where p > 0 gives inf, like rel_entr.
    assert divest.kl([0.5, 0.5], [1.0, 0.0]) == np.inf
    assert divest.kl([1.0, 0.0], [0.5, 0.5]) == pytest.approx(math.log(2), rel=1e-15)


def test_axis_keepdims_and_broadcasting():
    rng = np.random.default_rng(1)
    p = dirichlet(rng, (3, 1), 6)
    q = dirichlet(rng, (1, 4), 6)
    got = divest.kl(p, q)
    assert got.shape == (3, 4)
    want = np.array([[rel_entr(p[i, 0], q[0, j]).sum() for j in range(4)] for i in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-13)
    # One distribution against a batch, and the category axis first.
    one = dirichlet(rng, (), 6)
    np.testing.assert_allclose(divest.tv(one, q[0]), 0.5 * np.abs(one - q[0]).sum(-1), rtol=1e-13)
    pt = np.moveaxis(p * np.ones((3, 4, 6)), -1, 0)  # (6, 3, 4), not contiguous along axis 0
    np.testing.assert_allclose(
        divest.kl(pt, np.moveaxis(q * np.ones((3, 4, 6)), -1, 0), axis=0), want, rtol=1e-13
    )
    assert divest.kl(p, q, keepdims=True).shape == (3, 4, 1)
    assert divest.kl(
        pt, np.moveaxis(q * np.ones((3, 4, 6)), -1, 0), axis=0, keepdims=True
    ).shape == (1, 3, 4)
    assert isinstance(divest.kl(one, one), float)


def test_poisson_closed_forms():
    a, b = 4.0, 6.5
    p, q = poisson(a), poisson(b)
    assert divest.kl(p, q, normalize=True) == pytest.approx(a * math.log(a / b) - a + b, rel=1e-12)
    for al in (0.5, 2.0, 3.0):
        want = (a**al * b ** (1 - al) - al * a - (1 - al) * b) / (al - 1)
        assert divest.renyi(p, q, al, normalize=True) == pytest.approx(want, rel=1e-11)
    h2 = 1 - math.exp(-0.5 * (math.sqrt(a) - math.sqrt(b)) ** 2)
    assert divest.hellinger(p, q, normalize=True) == pytest.approx(math.sqrt(h2), rel=1e-12)
    assert divest.chi2(p, q, normalize=True) == pytest.approx(
        math.exp((a - b) ** 2 / b) - 1, rel=1e-11
    )
    # The same through log-probabilities and logits (shifted by an arbitrary constant).
    lp, lq = np.log(p), np.log(q)
    assert divest.kl(lp, lq, log_input=True, normalize=True) == pytest.approx(
        a * math.log(a / b) - a + b, rel=1e-12
    )
    assert divest.kl(lp + 3.0, lq - 40.0, from_logits=True) == pytest.approx(
        a * math.log(a / b) - a + b, rel=1e-12
    )


def test_hand_values():
    p, q = [1.0, 0.0], [0.5, 0.5]
    assert divest.tv(p, q) == 0.5
    assert divest.chi2(p, q) == pytest.approx(1.0)
    assert divest.hellinger(p, q) == pytest.approx(math.sqrt(1 - math.sqrt(0.5)))
    assert divest.js([1, 0], [0, 1]) == pytest.approx(math.log(2))
    assert divest.js([1, 0], [0, 1], base=2) == pytest.approx(1.0)
    assert divest.renyi(p, q, 0) == pytest.approx(math.log(2))  # -log q(supp p)
    assert divest.renyi(q, p, 0) == 0.0  # supp p ⊂ supp q
    assert divest.renyi([0.0, 0.3, 0.7], [0.2, 0.4, 0.4], np.inf) == pytest.approx(math.log(1.75))
    assert divest.f_divergence([0.2, 0.8], [0.5, 0.5], "triangular") == pytest.approx(
        0.09 / 0.7 + 0.09 / 1.3
    )


def test_f_divergences_match_definitions_and_named_functions():
    rng = np.random.default_rng(2)
    p = dirichlet(rng, (20,), 9)
    q = dirichlet(rng, (20,), 9)
    for name in divest.divergence.F_DIVERGENCES:
        kw = {"alpha": 0.3} if name == "alpha" else {}
        got = divest.f_divergence(p, q, name, **kw)
        np.testing.assert_allclose(got, f_numpy(name, p, q, **kw), rtol=1e-11, err_msg=name)
        assert np.all(divest.f_divergence(p, p, name, **kw) == 0.0)
    for al in (-3.0, 2.5):
        np.testing.assert_allclose(
            divest.f_divergence(p, q, "alpha", alpha=al), f_numpy("alpha", p, q, al), rtol=1e-11
        )
    np.testing.assert_allclose(
        divest.f_divergence(p, q, "alpha", alpha=1), divest.kl(p, q), rtol=1e-13
    )
    np.testing.assert_allclose(
        divest.f_divergence(p, q, "alpha", alpha=0), 4 * divest.hellinger(p, q) ** 2, rtol=1e-12
    )
    np.testing.assert_allclose(
        divest.f_divergence(p, q, "jeffreys"), divest.kl(p, q) + divest.kl(q, p), rtol=1e-12
    )
    np.testing.assert_allclose(divest.renyi(p, q, 1), divest.kl(p, q), rtol=1e-13)
    np.testing.assert_allclose(divest.renyi(p, q, 0.999999), divest.kl(p, q), rtol=1e-5)


def test_identical_inputs_give_exact_zero_in_every_mode():
    rng = np.random.default_rng(3)
    p = dirichlet(rng, (50,), 31, zeros=0.2)
    for fn in (divest.kl, divest.js, divest.js_distance, divest.hellinger, divest.tv, divest.chi2):
        assert np.all(fn(p, p) == 0.0), fn.__name__
    z = rng.standard_normal((50, 31)) * 30
    assert np.all(divest.kl(z, z, from_logits=True) == 0.0)
    assert np.all(divest.js(z, z, from_logits=True) == 0.0)
    assert np.all(divest.renyi(p, p, 2.0) == 0.0)


def test_scipy_failure_cases():
    rng = np.random.default_rng(4)
    a = rng.random((20000, 10))
    b = a + 1e-12 * rng.random((20000, 10))
    a /= a.sum(-1, keepdims=True)
    b /= b.sum(-1, keepdims=True)
    v = divest.js(a, b)
    assert not np.isnan(v).any() and (v >= 0).all()
    # Second order: JS ≈ Σ (p - q)² / (8 p) for p ≈ q; KL ≈ Σ (p - q)² / (2 p).
    chi = ((a - b) ** 2 / a).sum(-1)
    np.testing.assert_allclose(v, chi / 8, rtol=1e-3)
    np.testing.assert_allclose(divest.kl(a, b), chi / 2, rtol=1e-3)
    d = divest.js_distance(a, b)
    assert not np.isnan(d).any()
    # scipy returns inf or NaN for this pair; the true value is 0 to double precision.
    val = divest.js([0, 1], [5e-324, 1])
    assert np.isfinite(val) and 0 <= val < 1e-300
    assert divest.kl([5e-324, 1.0], [5e-324, 1.0], normalize=True) == 0.0


def test_logits_match_numpy_softmax_reference_and_float32():
    rng = np.random.default_rng(5)
    z1 = rng.standard_normal((64, 3000)) * 3
    z2 = rng.standard_normal((64, 3000)) * 3
    lp, lq = log_softmax(z1, -1), log_softmax(z2, -1)
    p, q = np.exp(lp), np.exp(lq)
    np.testing.assert_allclose(
        divest.kl(z1, z2, from_logits=True), (p * (lp - lq)).sum(-1), rtol=1e-12
    )
    np.testing.assert_allclose(
        divest.kl(lp, lq, log_input=True), (p * (lp - lq)).sum(-1), rtol=1e-12
    )
    np.testing.assert_allclose(divest.js(z1, z2, from_logits=True), divest.js(p, q), rtol=1e-12)
    np.testing.assert_allclose(divest.tv(z1, z2, from_logits=True), divest.tv(p, q), rtol=1e-12)
    np.testing.assert_allclose(divest.chi2(lp, lq, log_input=True), divest.chi2(p, q), rtol=1e-11)
    out = divest.kl(z1.astype(np.float32), z2.astype(np.float32), from_logits=True)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, (p * (lp - lq)).sum(-1), rtol=1e-5)
    # Logits so spread that q underflows as a probability: log space keeps KL finite.
    big = np.array([0.0, -800.0])
    assert np.isfinite(divest.kl([0.0, -700.0], big, from_logits=True))
    assert divest.kl(np.array([0.0, -700.0]), big, from_logits=True) > 0


def test_threads_give_identical_results_and_inputs_are_untouched():
    rng = np.random.default_rng(6)
    p = dirichlet(rng, (300,), 500)
    q = dirichlet(rng, (300,), 500)
    p0, q0 = p.copy(), q.copy()
    with divest.threads(1):
        a = divest.js(p, q)
    with divest.threads(2):
        b = divest.js(p, q)
    assert np.array_equal(a, b)
    assert np.array_equal(p, p0) and np.array_equal(q, q0)
    np.testing.assert_allclose(
        divest.js(p[:, ::2] * 2, q[:, ::2] * 2, normalize=True),
        divest.js(np.ascontiguousarray(p[:, ::2]), q[:, ::2], normalize=True),
        rtol=1e-14,
    )


def test_discrete_bad_inputs():
    with pytest.raises(ValueError, match="categories"):
        divest.kl([0.5, 0.5], [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="broadcast"):
        divest.kl(np.full((2, 3), 1 / 3), np.full((4, 3), 1 / 3))
    with pytest.raises(ValueError, match="negative"):
        divest.kl([-0.1, 1.1], [0.5, 0.5])
    with pytest.raises(ValueError, match="normalize=True"):
        divest.kl([0.5, 0.6], [0.5, 0.5])
    with pytest.raises(ValueError, match="NaN"):
        divest.js([np.nan, 1.0], [0.5, 0.5])
    with pytest.raises(ValueError, match="NaN"):
        divest.kl([np.nan, 1.0], [0.5, 0.5], from_logits=True)
    with pytest.raises(ValueError, match="log-sum-exp"):
        divest.kl([0.0, 0.0], [-1.0, -1.0], log_input=True)
    with pytest.raises(ValueError, match="not both"):
        divest.kl([0.5, 0.5], [0.5, 0.5], from_logits=True, log_input=True)
    with pytest.raises(ValueError, match="base"):
        divest.tv([0.5, 0.5], [0.5, 0.5], base=2)
    with pytest.raises(ValueError, match="base"):
        divest.kl([0.5, 0.5], [0.5, 0.5], base=1)
    with pytest.raises(ValueError, match="f must be"):
        divest.f_divergence([0.5, 0.5], [0.5, 0.5], "bhattacharyya")
    with pytest.raises(ValueError, match="alpha"):
        divest.f_divergence([0.5, 0.5], [0.5, 0.5], "alpha")
    with pytest.raises(ValueError, match="alpha"):
        divest.renyi([0.5, 0.5], [0.5, 0.5], -1)
    with pytest.raises(ValueError, match="sums to zero"):
        divest.kl([0.0, 0.0], [0.5, 0.5], normalize=True)
    with pytest.raises(ValueError, match="out of bounds"):
        divest.kl([0.5, 0.5], [0.5, 0.5], axis=1)
    with pytest.raises(ValueError, match="1-D"):
        divest.kl(1.0, 1.0)
    with pytest.raises(TypeError):
        divest.kl([0.5 + 1j, 0.5], [0.5, 0.5])


# ------------------------------------------------------------------ kernel estimators


def brute_kernel_sums(x, y, sigma, kernel, exclude):
    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return (
            np.exp(-0.5 * d2 / sigma**2) if kernel == "gaussian" else np.exp(-np.sqrt(d2) / sigma)
        )

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    if exclude:
        np.fill_diagonal(kxx, 0)
        np.fill_diagonal(kyy, 0)
    return kxx.sum(), kyy.sum(), kxy.sum()


@pytest.mark.parametrize("d", [3, 20])
@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
def test_mmd_matches_brute_force(d, kernel):
    rng = np.random.default_rng(10)
    n, m = 300, 170
    x = rng.standard_normal((n, d)) + 5.0
    y = rng.standard_normal((m, d)) * 1.3 + 5.2
    sx, sy, sxy = brute_kernel_sums(x, y, 1.7, kernel, True)
    want = sx / (n * (n - 1)) + sy / (m * (m - 1)) - 2 * sxy / (n * m)
    assert divest.mmd(x, y, 1.7, kernel) == pytest.approx(want, rel=1e-10)
    sx, sy, sxy = brute_kernel_sums(x, y, 1.7, kernel, False)
    want = sx / n**2 + sy / m**2 - 2 * sxy / (n * m)
    assert divest.mmd(x, y, 1.7, kernel, unbiased=False) == pytest.approx(want, rel=1e-10)
    got32 = divest.mmd(x.astype(np.float32), y.astype(np.float32), 1.7, kernel, unbiased=False)
    assert got32 == pytest.approx(want, rel=1e-3)
    assert divest.mmd(x, x, 1.7, kernel, unbiased=False) == 0.0


def test_mmd_gaussian_closed_form():
    # X ~ N(0, s1² I), Y ~ N(mu, s2² I); E k(X, X') = (σ²/(σ² + 2 s1²))^(d/2), etc.
    rng = np.random.default_rng(11)
    d, sig, s1, s2 = 2, 1.0, 1.0, 0.7
    mu = np.array([0.8, 0.0])
    exx = (sig**2 / (sig**2 + 2 * s1**2)) ** (d / 2)
    eyy = (sig**2 / (sig**2 + 2 * s2**2)) ** (d / 2)
    v = sig**2 + s1**2 + s2**2
    exy = (sig**2 / v) ** (d / 2) * np.exp(-mu @ mu / (2 * v))
    want = exx + eyy - 2 * exy
    vals = [
        divest.mmd(
            rng.standard_normal((1500, d)) * s1, rng.standard_normal((1500, d)) * s2 + mu, sig
        )
        for _ in range(4)
    ]
    assert np.mean(vals) == pytest.approx(want, abs=0.01)


def test_cs_divergence_brute_force_and_gaussian_closed_form():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((400, 3))
    y = rng.standard_normal((250, 3)) + 0.5
    sx, sy, sxy = brute_kernel_sums(x, y, 0.9, "gaussian", False)
    assert divest.cs_divergence(x, y, 0.9) == pytest.approx(
        np.log(sx) + np.log(sy) - 2 * np.log(sxy), rel=1e-10
    )
    assert divest.cs_divergence(x, x, 0.9) == 0.0

    # Closed form between the smoothed Gaussians N(mu_i, (s_i² + σ²/2) I).
    def log_gauss_overlap(m1, v1, m2, v2, d):
        v = v1 + v2
        return -0.5 * d * np.log(2 * np.pi * v) - 0.5 * np.sum((m1 - m2) ** 2) / v

    d, sig = 2, 0.6
    m1, m2, s1, s2 = np.zeros(d), np.array([1.0, -0.5]), 1.0, 0.8
    v1, v2 = s1**2 + sig**2 / 2, s2**2 + sig**2 / 2
    want = (
        log_gauss_overlap(m1, v1, m1, v1, d)
        + log_gauss_overlap(m2, v2, m2, v2, d)
        - 2 * log_gauss_overlap(m1, v1, m2, v2, d)
    )
    got = divest.cs_divergence(
        rng.standard_normal((4000, d)) * s1 + m1, rng.standard_normal((4000, d)) * s2 + m2, sig
    )
    assert got == pytest.approx(want, rel=0.05)


def test_median_heuristic_and_kernel_bad_inputs():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((60, 2))
    y = rng.standard_normal((40, 2)) + 1
    z = np.concatenate([x, y])
    dist = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))[np.triu_indices(100, 1)]
    sigma = float(np.median(dist))
    assert divest.divergence.median_sigma(x, y) == pytest.approx(sigma, rel=1e-12)
    assert divest.mmd(x, y) == pytest.approx(divest.mmd(x, y, sigma), rel=1e-12)
    assert divest.cs_divergence(x, y) == pytest.approx(divest.cs_divergence(x, y, sigma), rel=1e-12)
    big = rng.standard_normal((1500, 2))
    assert divest.divergence.median_sigma(big, big[:10]) == divest.divergence.median_sigma(
        big, big[:10]
    )
    with pytest.raises(ValueError, match="dimension"):
        divest.mmd(x, rng.standard_normal((5, 3)), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        divest.mmd(x, y, -1.0)
    with pytest.raises(ValueError, match="kernel"):
        divest.mmd(x, y, 1.0, kernel="cauchy")
    with pytest.raises(ValueError, match="at least 2"):
        divest.mmd(x[:1], y, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        divest.cs_divergence(np.full((3, 2), np.nan), y, 1.0)
    with pytest.raises(ValueError, match="sigma = 0"):
        divest.mmd(np.zeros((5, 2)), np.zeros((5, 2)))


# ---------------------------------------------------------------------- kNN estimators


def brute_kth(x, y, k, same):
    d = np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))
    if same:
        np.fill_diagonal(d, np.inf)
    d[d == 0] = np.inf  # duplicates are not neighbours
    return np.sort(d, axis=1)[:, k - 1]


def test_knn_entropy_and_kl_match_brute_force_formulas():
    from scipy.special import digamma

    rng = np.random.default_rng(20)
    x = rng.standard_normal((250, 3))
    y = rng.standard_normal((180, 3)) * 1.5
    x[5] = x[6]  # a duplicate pair
    n, d, k = 250, 3, 4
    log_cd = 1.5 * np.log(np.pi) - gammaln(2.5)
    want = digamma(n) - digamma(k) + log_cd + d * np.mean(np.log(brute_kth(x, x, k, True)))
    assert divest.knn_entropy(x, k) == pytest.approx(want, rel=1e-12)
    assert divest.knn_entropy(x, k, base=2) == pytest.approx(want / np.log(2), rel=1e-12)
    want = d * np.mean(np.log(brute_kth(x, y, k, False) / brute_kth(x, x, k, True))) + np.log(
        180 / 249
    )
    assert divest.knn_kl(x, y, k) == pytest.approx(want, rel=1e-11)


def brute_ksg(x, y, k, variant):
    from scipy.special import digamma

    n = len(x)
    dx = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    dy = np.sqrt(((y[:, None] - y[None]) ** 2).sum(-1))
    dz = np.maximum(dx, dy)
    np.fill_diagonal(dz, np.inf)
    order = np.argsort(dz, axis=1, kind="stable")[:, :k]
    eps = np.take_along_axis(dz, order, 1)[:, -1]
    np.fill_diagonal(dx, np.inf)
    np.fill_diagonal(dy, np.inf)
    if variant == 1:
        nx = (dx < eps[:, None]).sum(1)
        ny = (dy < eps[:, None]).sum(1)
        return digamma(k) + digamma(n) - np.mean(digamma(nx + 1) + digamma(ny + 1))
    ex = np.take_along_axis(dx, order, 1).max(1)
    ey = np.take_along_axis(dy, order, 1).max(1)
    nx = (dx <= ex[:, None]).sum(1)
    ny = (dy <= ey[:, None]).sum(1)
    return digamma(k) - 1 / k + digamma(n) - np.mean(digamma(nx) + digamma(ny))


@pytest.mark.parametrize("variant", [1, 2])
def test_knn_mi_matches_brute_force_ksg(variant):
    rng = np.random.default_rng(21)
    x = rng.standard_normal((300, 2))
    y = x[:, :1] * 0.8 + rng.standard_normal((300, 1)) * 0.6
    assert divest.knn_mi(x, y, 5, variant) == pytest.approx(brute_ksg(x, y, 5, variant), rel=1e-10)


def test_knn_mi_equals_scikit_learn_mutual_info_regression():
    from sklearn.feature_selection import mutual_info_regression

    rng = np.random.default_rng(22)
    x = rng.standard_normal(800)
    y = 0.7 * x + rng.standard_normal(800) * 0.5
    sk = mutual_info_regression(x[:, None], y, n_neighbors=3, random_state=0)[0]
    ours = divest.knn_mi(x / x.std(), y / y.std(), k=3)
    assert ours == pytest.approx(sk, abs=1e-6)


def test_knn_estimators_converge_to_gaussian_closed_forms():
    rng = np.random.default_rng(23)
    cov = np.array([[1.0, 0.6], [0.6, 2.0]])
    lc = np.linalg.cholesky(cov)
    n = 4000
    x = rng.standard_normal((n, 2)) @ lc.T
    h = 0.5 * np.log((2 * np.pi * np.e) ** 2 * np.linalg.det(cov))
    assert divest.knn_entropy(x, 3) == pytest.approx(h, abs=0.03)
    # KL(N(0, I) ‖ N(mu, s² I)) in d = 2.
    s, mu = 1.5, np.array([0.5, 0.0])
    p = rng.standard_normal((n, 2))
    q = rng.standard_normal((n, 2)) * s + mu
    want = 0.5 * (2 / s**2 + mu @ mu / s**2 - 2 + 2 * np.log(s**2))
    assert divest.knn_kl(p, q, 5) == pytest.approx(want, abs=0.04)
    # Bivariate normal MI = -½ log(1 - ρ²).
    rho = 0.6
    u = rng.standard_normal(n)
    v = rho * u + np.sqrt(1 - rho**2) * rng.standard_normal(n)
    want = -0.5 * np.log(1 - rho**2)
    assert divest.knn_mi(u, v, 5, 1) == pytest.approx(want, abs=0.03)
    assert divest.knn_mi(u, v, 5, 2) == pytest.approx(want, abs=0.03)


def test_knn_duplicates_and_bad_inputs():
    rng = np.random.default_rng(24)
    x = rng.standard_normal((100, 2))
    xd = np.concatenate([x, x[:30]])  # 30 exact duplicates: finite, no noise needed
    assert np.isfinite(divest.knn_entropy(xd, 3))
    assert np.isfinite(divest.knn_mi(xd[:, 0], xd[:, 1], 3))
    with pytest.raises(ValueError, match="k must be smaller"):
        divest.knn_entropy(x, 100)
    with pytest.raises(ValueError, match="fewer than k"):
        divest.knn_entropy(np.ones((10, 1)), 2)
    with pytest.raises(ValueError, match="same length"):
        divest.knn_mi(x[:, 0], x[:50, 1])
    with pytest.raises(ValueError, match="variant"):
        divest.knn_mi(x[:, 0], x[:, 1], variant=3)
    with pytest.raises(ValueError, match="NaN"):
        divest.knn_kl(np.full((10, 2), np.nan), x)
    with pytest.raises(ValueError, match="dimension"):
        divest.knn_kl(x, rng.standard_normal((10, 3)))


def _knn_cases(rng, d, n=400):
    yield rng.standard_normal((n, d)), rng.standard_normal((n + 37, d)) * 1.3 + 0.2
    # Few distinct values: many duplicates and tied distances, including on the radii.
    yield rng.integers(0, 4, (n, d)).astype(float), rng.integers(0, 4, (n, d)).astype(float)


@pytest.mark.parametrize("d", [1, 2, 5, 8, 20])
def test_knn_kd_tree_is_identical_to_brute_force(d):
    rng = np.random.default_rng(40 + d)
    levels = ["scalar"] + (
        [divest._core.simd_detected()] if divest._core.simd_detected() != "scalar" else []
    )
    try:
        for level in levels:
            divest._core.set_simd_level(level)
            for x, y in _knn_cases(rng, d):
                for k in (1, 3, 10):
                    xc = np.ascontiguousarray(x - x.mean(0))
                    yc = np.ascontiguousarray(y - y.mean(0))
                    for same, cols in ((True, xc), (False, yc)):
                        a = divest._core.knn_sq_dists(xc, cols, k, same, algorithm="kd_tree")
                        b = divest._core.knn_sq_dists(xc, cols, k, same, algorithm="brute")
                        np.testing.assert_array_equal(a[0], b[0])
                        np.testing.assert_array_equal(a[1], b[1])
                    r2 = np.ascontiguousarray(
                        a[0][:, -1]
                    )  # radii exactly equal to neighbour distances
                    for strict in (True, False):
                        np.testing.assert_array_equal(
                            divest._core.count_within(xc, r2, strict, "kd_tree"),
                            divest._core.count_within(xc, r2, strict, "brute"),
                        )
                    if k == 3:
                        kw = [dict(algorithm=m) for m in ("kd_tree", "brute", "auto")]
                        assert len({divest.knn_entropy(x, k, **w) for w in kw}) == 1
                        assert len({divest.knn_kl(x, y, k, **w) for w in kw}) == 1
                        if d <= 5:
                            u = y[: len(x), :2]
                            for variant in (1, 2):
                                vals = {divest.knn_mi(x, u, k, variant, **w) for w in kw}
                                assert len(vals) == 1, (variant, vals)
    finally:
        divest._core.set_simd_level(None)
    with pytest.raises(ValueError, match="algorithm"):
        divest.knn_entropy(x, 3, algorithm="ball_tree")


# ------------------------------------------------------------------------ Fisher tools


def test_fisher_merge_properties_and_hand_value():
    rng = np.random.default_rng(30)
    ps = [rng.standard_normal((4, 3)) for _ in range(3)]
    same_f = [np.full((4, 3), 2.5)] * 3
    np.testing.assert_allclose(divest.fisher_merge(ps, same_f), np.mean(ps, axis=0), rtol=1e-13)
    np.testing.assert_allclose(
        divest.fisher_merge(ps, same_f, weights=[1, 2, 1]),
        (ps[0] + 2 * ps[1] + ps[2]) / 4,
        rtol=1e-13,
    )
    fs = [rng.random((4, 3)) for _ in range(3)]
    assert np.array_equal(divest.fisher_merge([ps[0]] * 3, fs), ps[0])
    # Hand value: (F1 θ1 + F2 θ2) / (F1 + F2) with the floor applied to a zero Fisher.
    got = divest.fisher_merge(
        [np.array([1.0, 1.0]), np.array([3.0, 3.0])], [np.array([1.0, 0.0]), np.array([3.0, 0.0])]
    )
    np.testing.assert_allclose(got, [2.5, 2.0], rtol=1e-13)
    dicts = [{"w": p, "b": p[0]} for p in ps]
    fd = [{"w": f, "b": f[0]} for f in fs]
    out = divest.fisher_merge(dicts, fd)
    np.testing.assert_allclose(out["w"], divest.fisher_merge(ps, fs), rtol=1e-13)
    assert out["b"].shape == (3,)
    assert divest.fisher_merge([p.astype(np.float32) for p in ps], fs).dtype == np.float32
    with pytest.raises(ValueError, match="one per model"):
        divest.fisher_merge(ps, fs[:2])
    with pytest.raises(ValueError, match="negative"):
        divest.fisher_merge(ps, [-f for f in fs])
    with pytest.raises(ValueError, match="shape"):
        divest.fisher_merge([ps[0], ps[1][:2]], fs[:2])
    with pytest.raises(ValueError, match="keys"):
        divest.fisher_merge(dicts, [{"w": fs[0]}] * 3)


@pytest.mark.parametrize("axis", [0, 1])
def test_fisher_weighted_svd(axis):
    rng = np.random.default_rng(31)
    w = rng.standard_normal((12, 8))
    # Uniform importance: the truncated SVD.
    a, b = divest.fisher_weighted_svd(w, np.ones_like(w), 3, axis=axis)
    u, s, vt = np.linalg.svd(w)
    np.testing.assert_allclose(a @ b, (u[:, :3] * s[:3]) @ vt[:3], atol=1e-12)
    assert a.shape == (12, 3) and b.shape == (3, 8)
    # Full rank reconstructs W.
    f = rng.random((12, 8)) ** 3
    a, b = divest.fisher_weighted_svd(w, f, 8, axis=axis)
    np.testing.assert_allclose(a @ b, w, atol=1e-12)
    # Eckart-Young in the weighted norm: the error is the trailing singular values of D W.
    dw = np.sqrt(f.sum(1 - axis))
    a, b = divest.fisher_weighted_svd(w, f, 2, axis=axis)
    scaled = (lambda m: dw[:, None] * m) if axis == 0 else (lambda m: m * dw[None, :])
    err = np.linalg.norm(scaled(w - a @ b))
    sv = np.linalg.svd(scaled(w), compute_uv=False)
    assert err == pytest.approx(np.sqrt((sv[2:] ** 2).sum()), rel=1e-10)
    a1, b1 = divest.fisher_weighted_svd(w, f.sum(1 - axis), 2, axis=axis)
    np.testing.assert_allclose(a1 @ b1, a @ b, atol=1e-12)
    with pytest.raises(ValueError, match="rank"):
        divest.fisher_weighted_svd(w, f, 9, axis=axis)
    with pytest.raises(ValueError, match="fisher must have"):
        divest.fisher_weighted_svd(w, f[:3], 2, axis=axis)


def test_extreme_magnitudes_never_nan_negative_or_out_of_range():
    rng = np.random.default_rng(40)
    vals = np.array([0, 5e-324, 1e-310, 1e-300, 1e-200, 1e-17, 0.3, 1.0, 1e300])
    p = vals[rng.integers(0, len(vals), (5000, 6))]
    q = vals[rng.integers(0, len(vals), (5000, 6))]
    p[:, 0] += 1e-300
    q[:, 0] += 1e-300
    for name in divest.divergence.F_DIVERGENCES:
        v = divest.f_divergence(
            p, q, name, normalize=True, **({"alpha": 0.3} if name == "alpha" else {})
        )
        assert not np.isnan(v).any() and (v >= 0).all(), name
    for a in (0, 0.5, 2, np.inf):
        v = divest.renyi(p, q, a, normalize=True)
        assert not np.isnan(v).any() and (v >= 0).all()
    assert divest.js(p, q, normalize=True).max() <= math.log(2)
    assert divest.tv(p, q, normalize=True).max() <= 1.0
    assert divest.hellinger(p, q, normalize=True).max() <= 1.0
    with np.errstate(divide="ignore"):
        lp, lq = np.log(p), np.log(q)
    v = divest.kl(lp, lq, from_logits=True)
    assert not np.isnan(v).any() and (v >= 0).all()


def test_sample_estimators_do_not_depend_on_thread_count():
    rng = np.random.default_rng(41)
    x = rng.standard_normal((700, 3))
    y = rng.standard_normal((500, 3)) + 0.2
    runs = []
    for t in (1, 2):
        with divest.threads(t):
            runs.append(
                (
                    divest.mmd(x, y, 1.0),
                    divest.cs_divergence(x, y, 1.0),
                    divest.knn_kl(x, y, 4),
                    divest.knn_mi(x[:, :2], x[:, 2:] + x[:, :1], 4, 2),
                )
            )
    assert runs[0] == runs[1]
