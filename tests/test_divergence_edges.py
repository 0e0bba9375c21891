"""Hard edges of the divergence family (issue 18): ratios beyond the double range, Rényi
orders far from and next to 1, parameters outside their range, ties in KSG-2, and data
near 1e300 or subnormal. Oracles: exact sums in Python floats and mpmath, closed forms,
brute-force NumPy, and the estimators' known scale equivariance."""

from __future__ import annotations

import math

import numpy as np
import pytest

import divest

# ----------------------------------------------------------------------------- helpers


def mp_div(name, p, q, alpha=None):
    """High-precision reference from the exact binary values of p and q (mpmath, 60 digits)."""
    mpmath = pytest.importorskip("mpmath")
    mp = mpmath.mp
    mp.dps = 60
    P = [mpmath.mpf(float(v)) for v in p]
    Q = [mpmath.mpf(float(v)) for v in q]
    sp, sq = sum(P), sum(Q)
    P = [v / sp for v in P]
    Q = [v / sq for v in Q]

    def kl(a, b):
        return sum(x * mpmath.log(x / y) for x, y in zip(a, b) if x > 0)

    if name == "kl":
        v = kl(P, Q)
    elif name == "jeffreys":
        v = kl(P, Q) + kl(Q, P)
    elif name == "renyi":
        a = mpmath.mpf(alpha)
        v = mpmath.log(sum(x**a * y ** (1 - a) for x, y in zip(P, Q) if x > 0)) / (a - 1)
    elif name == "amari":
        a = mpmath.mpf(alpha)
        b = (1 + a) / 2
        v = 4 / (1 - a * a) * (1 - sum(x**b * y ** (1 - b) for x, y in zip(P, Q)))
    elif name == "hellinger_sq":
        v = sum((mpmath.sqrt(x) - mpmath.sqrt(y)) ** 2 for x, y in zip(P, Q)) / 2
    elif name == "tv":
        v = sum(abs(x - y) for x, y in zip(P, Q)) / 2
    elif name == "js":
        M = [(x + y) / 2 for x, y in zip(P, Q)]
        v = (kl(P, M) + kl(Q, M)) / 2
    elif name == "chi2":
        v = sum((x - y) ** 2 / y for x, y in zip(P, Q))
    elif name == "triangular":
        v = sum((x - y) ** 2 / (x + y) for x, y in zip(P, Q) if x + y > 0)
    else:
        raise AssertionError(name)
    return float(v)


def close(got, want, rtol=1e-13):
    assert math.isfinite(got), got
    assert abs(got - want) <= rtol * abs(want) + 1e-300, (got, want)


# ------------------------------------------------------- 1. ratios beyond the double range

P_HUGE = [0.5, 0.5]
Q_HUGE = [1e-310, 1 - 1e-310]
KL_HUGE = math.fsum(a * (math.log(a) - math.log(b)) for a, b in zip(P_HUGE, Q_HUGE))


def test_kl_ratio_beyond_double_range_is_finite():
    assert abs(KL_HUGE - 356.2075) < 1e-4
    close(divest.kl(P_HUGE, Q_HUGE), KL_HUGE)
    close(divest.kl(np.log(P_HUGE), np.log(Q_HUGE), log_input=True), KL_HUGE)
    close(divest.f_divergence(P_HUGE, Q_HUGE, "kl"), KL_HUGE)
    close(divest.f_divergence(Q_HUGE, P_HUGE, "reverse_kl"), KL_HUGE)
    close(divest.renyi(P_HUGE, Q_HUGE, 1.0), KL_HUGE)
    close(divest.f_divergence(P_HUGE, Q_HUGE, "alpha", alpha=1.0), KL_HUGE)
    rev = math.fsum(b * (math.log(b) - math.log(a)) for a, b in zip(P_HUGE, Q_HUGE))
    close(divest.f_divergence(P_HUGE, Q_HUGE, "jeffreys"), KL_HUGE + rev)
    # base 2 divides by ln 2; batched rows agree with single rows.
    close(divest.kl(P_HUGE, Q_HUGE, base=2), KL_HUGE / math.log(2))
    got = divest.kl(np.array([P_HUGE, [0.3, 0.7]]), np.array([Q_HUGE, [0.6, 0.4]]))
    close(float(got[0]), KL_HUGE)


@pytest.mark.parametrize("q0", [1e-310, 5e-324, 1e-300, 2.5e-308])
def test_other_measures_with_subnormal_masses(q0):
    p, q = [0.5, 0.5], [q0, 1 - q0]
    for name, fn in [
        ("hellinger_sq", lambda a, b: divest.hellinger(a, b) ** 2),
        ("tv", divest.tv),
        ("js", divest.js),
        ("triangular", lambda a, b: divest.f_divergence(a, b, "triangular")),
    ]:
        for a, b in [(p, q), (q, p)]:
            close(float(fn(a, b)), mp_div(name, a, b), 1e-12)
    # chi2 may be huge (here above the double range) but never NaN.
    c = divest.chi2(p, q)
    want = mp_div("chi2", p, q) if q0 > 1e-300 else math.inf
    assert c == want or abs(c - want) <= 1e-12 * want
    assert not math.isnan(divest.f_divergence(q, p, "neyman_chi2"))
    # chi2 with a subnormal q where p is 0: the term is q itself, not 0.
    got = divest.chi2([0.0, 1.0], [5e-324, 1.0], normalize=True)
    assert got > 0 and not math.isnan(got)


@pytest.mark.parametrize(
    "fn",
    [
        divest.kl,
        divest.js,
        divest.hellinger,
        divest.tv,
        divest.chi2,
        lambda a, b, **k: divest.renyi(a, b, 2.0, **k),
    ],
)
def test_rows_with_subnormal_or_overflowing_sums(fn):
    p, q = np.array([1.0, 1.0]), np.array([1.0, 2.0])
    want = fn(p / 2, q / 3)
    for s in (5e-324, 1e-310, 8e307, 8.9e307):  # q sums to inf at the last two
        got = fn(p * s, q * s, normalize=True)
        assert math.isfinite(got) and abs(got - want) <= 1e-15 * want, (s, got, want)


# --------------------------------------------------------------------------- 2. Rényi


def test_renyi_large_order_does_not_overflow():
    p, q = [0.5, 0.5], [1e-100, 1 - 1e-100]
    close(divest.renyi(p, q, 10.0), 229.48834576544908, 1e-14)
    close(divest.renyi(p, q, 10.0), mp_div("renyi", p, q, 10.0), 1e-14)
    for a in [3.0, 50.0, 1e6]:
        close(divest.renyi(p, q, a), mp_div("renyi", p, q, a), 1e-13)
    # Log inputs far below the probability range.
    lp = np.array([0.0, -2000.0])
    lq = np.array([-1e5, 0.0])
    v = divest.renyi(lp, lq, 4.0, log_input=True, normalize=True)
    assert math.isfinite(v) and abs(v - (1e5 + 0.0 / 3)) < 1e-6 * 1e5


@pytest.mark.parametrize(
    "alpha",
    [1 + 2.0**-52, 1 - 2.0**-53, 1 + 1e-12, 1 - 1e-9, 1 + 1e-5, 0.5, 0.9, 1.3, 1.5, 1.7, 2.5, 0.3],
)
def test_renyi_against_mpmath_near_and_away_from_one(alpha):
    rng = np.random.default_rng(7)
    for _ in range(3):
        p = rng.gamma(0.7, size=9)
        q = rng.gamma(0.7, size=9)
        p, q = p / p.sum(), q / q.sum()
        want = mp_div("renyi", p, q, alpha)
        close(divest.renyi(p, q, alpha), want, 1e-12)
        close(divest.renyi(np.log(p), np.log(q), alpha, log_input=True), want, 1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.5, 0.9, 1 - 1e-12, 1.0, 2.0])
def test_renyi_of_a_point_mass_is_minus_log_q(alpha):
    # p = δ_0: D_α = −ln q_0 for every order; Σ p^α q^(1−α) = q_0^(1−α) is far below 1.
    for q0 in (4.9e-14, 1e-200, 3e-5):
        q = np.array([q0, 1 - q0])
        close(divest.renyi([1.0, 0.0], q, alpha), -math.log(q0), 1e-14)


def test_renyi_tends_to_kl_with_variance_correction():
    p = np.array([0.2, 0.8])
    q = np.array([0.5, 0.5])
    d = np.log(p / q)
    kl = float(np.sum(p * d))
    var = float(np.sum(p * d * d) - kl * kl)
    e = 2.0**-52
    # D_α = KL + (α − 1) Var_p[ln p/q] / 2 + O((α − 1)²).
    close(divest.renyi(p, q, 1 + e), kl + e * var / 2, 1e-14)
    assert divest.renyi(p, q, 1 + e) > 0.0


@pytest.mark.parametrize(
    "alpha", [1 - 1e-10, 1 + 1e-10, -1 + 1e-10, -1 - 1e-10, 0.0, 0.7, 1.8, -0.4, -1.6]
)
def test_amari_alpha_near_plus_minus_one(alpha):
    rng = np.random.default_rng(3)
    p = rng.gamma(0.7, size=6)
    q = rng.gamma(0.7, size=6)
    p, q = p / p.sum(), q / q.sum()
    close(divest.f_divergence(p, q, "alpha", alpha=alpha), mp_div("amari", p, q, alpha), 1e-11)


# ----------------------------------------------------------- 3. parameters out of range


@pytest.mark.parametrize("base", [0.5, 1e-3, 0.0, -2.0, 1.0, math.inf, math.nan])
def test_log_base_must_exceed_one(base):
    p, q = [0.2, 0.8], [0.5, 0.5]
    for fn in (divest.kl, divest.js, divest.js_distance):
        with pytest.raises(ValueError, match="base"):
            fn(p, q, base=base)
    with pytest.raises(ValueError, match="base"):
        divest.renyi(p, q, 2.0, base=base)
    x = np.random.default_rng(0).normal(size=(30, 1))
    with pytest.raises(ValueError, match="base"):
        divest.knn_entropy(x, base=base)


def _samples(seed=0, n=25):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)), rng.normal(size=(n, 2)) + 0.7


@pytest.mark.parametrize("sigma", [1e-200, 1e-160, 1e-155, 1e-150, 1e-12])
@pytest.mark.parametrize("scale", [1.0, 1e300, 1e-300])
def test_tiny_sigma_is_a_value_error(sigma, scale):
    x, y = _samples()
    x, y, sigma = x * scale, y * scale, sigma * scale
    for call in (
        lambda: divest.mmd(x, y, sigma=sigma),
        lambda: divest.mmd(x, y, sigma=sigma, unbiased=False),
        lambda: divest.mmd(x, y, sigma=sigma * sigma / scale, kernel="laplacian"),
        lambda: divest.cs_divergence(x, y, sigma=sigma),
    ):
        with pytest.raises(ValueError, match="sigma"):
            call()


def test_small_but_workable_sigma_matches_numpy():
    x, y = _samples(3, n=6)
    y[0] = x[0] + 1e-7  # one close pair keeps a kernel value away from 0
    for sigma in (1e-7, 3e-8):
        for unbiased in (True, False):
            want = _mmd_numpy(x, y, sigma, unbiased)
            got = divest.mmd(x, y, sigma=sigma, unbiased=unbiased)
            assert abs(got - want) <= 1e-6 * abs(want) + 1e-15, (sigma, got, want)


def _mmd_numpy(x, y, sigma, unbiased):
    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * sigma * sigma))

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = len(x), len(y)
    if unbiased:
        return (kxx.sum() - n) / (n * (n - 1)) + (kyy.sum() - m) / (m * (m - 1)) - 2 * kxy.mean()
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()


@pytest.mark.parametrize("scale", [1e300, 1e160, 1e-160, 1e-300, 1e-310])
def test_kernel_estimators_at_extreme_magnitudes(scale):
    x, y = _samples(1)
    s0 = divest.divergence.median_sigma(x, y)
    for unbiased in (True, False):
        want = _mmd_numpy(x, y, s0, unbiased)
        got = divest.mmd(x * scale, y * scale, unbiased=unbiased)
        tol = 1e-6 if scale < 1e-300 else 1e-9  # subnormal inputs keep fewer digits
        assert abs(got - want) <= tol * abs(want), (scale, got, want)
        got = divest.mmd(x * scale, y * scale, sigma=s0 * scale, unbiased=unbiased)
        assert abs(got - want) <= tol * abs(want), (scale, got, want)
    cs0 = divest.cs_divergence(x, y)
    cs = divest.cs_divergence(x * scale, y * scale)
    assert abs(cs - cs0) <= 1e-6 * cs0
    assert abs(divest.divergence.median_sigma(x * scale, y * scale) / scale - s0) <= 1e-6 * s0


def test_huge_sigma_gives_zero_not_an_error():
    x, y = _samples(2)
    assert divest.mmd(x, y, sigma=1e300) == 0.0
    assert divest.cs_divergence(x, y, sigma=1e300) == 0.0


def test_fisher_merge_extreme_weights_and_fishers():
    rng = np.random.default_rng(0)
    ps = [rng.normal(size=5) for _ in range(3)]
    fs = [rng.random(5) + 0.1 for _ in range(3)]
    want = divest.fisher_merge(ps, fs, weights=[1.0, 2.0, 3.0])
    for w in ([1e308, 1.7e308, 1.5e308], [5e-324, 1e-323, 1.5e-323]):
        w = np.array(w, dtype=np.float64)
        ref = divest.fisher_merge(ps, fs, weights=w / w.max())
        got = divest.fisher_merge(ps, fs, weights=w)
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, ref, rtol=1e-14)
    got = divest.fisher_merge(ps, fs, weights=[5e-324, 1e-323, 1.5e-323])
    np.testing.assert_allclose(got, want, rtol=1e-14)
    # Fishers near the top of the range, and zero Fishers with floor = 0.
    big = [f * 1e308 for f in fs]
    np.testing.assert_allclose(
        divest.fisher_merge(ps, big, weights=[1, 2, 3], floor=0.0),
        divest.fisher_merge(ps, fs, weights=[1, 2, 3], floor=0.0),
        rtol=1e-13,
    )
    zero = [np.zeros(5) for _ in range(3)]
    got = divest.fisher_merge(ps, zero, weights=[1, 2, 3], floor=0.0)
    np.testing.assert_allclose(got, (ps[0] + 2 * ps[1] + 3 * ps[2]) / 6, rtol=1e-13)
    # Parameters near the top of the range.
    top = max(np.abs(p).max() for p in ps)
    hp = [p / top * 1.5e308 for p in ps]  # differences of ±1.5e308 overflow
    got = divest.fisher_merge(hp, fs)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(
        got, divest.fisher_merge([p / top for p in ps], fs) * 1.5e308, rtol=1e-13
    )


@pytest.mark.parametrize("floor", [-1.0, math.nan, math.inf])
def test_fisher_floor_is_validated(floor):
    ps = [np.ones(3), np.zeros(3)]
    fs = [np.ones(3)] * 2
    with pytest.raises(ValueError, match="floor"):
        divest.fisher_merge(ps, fs, floor=floor)
    with pytest.raises(ValueError, match="floor"):
        divest.fisher_weighted_svd(np.eye(3), np.ones(3), 2, floor=floor)
    with pytest.raises(ValueError, match="floor"):
        divest.fisher_weighted_svd(np.eye(3), np.ones(3), 2, floor=2.0)
    with pytest.raises(TypeError, match="floor"):
        divest.fisher_merge(ps, fs, floor="a")
    with pytest.raises(TypeError, match="floor"):
        divest.fisher_weighted_svd(np.eye(3), np.ones(3), 2, floor=None)


def test_fisher_svd_extreme_fisher_magnitudes():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(6, 4))
    f = rng.random((6, 4)) + 0.01
    a0, b0 = divest.fisher_weighted_svd(w, f, 2)
    for s in (1e308, 1e-310):
        a, b = divest.fisher_weighted_svd(w, f * s, 2)
        np.testing.assert_allclose(a @ b, a0 @ b0, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ 4. KSG-2 under ties


def _ksg2_bruteforce(x, y, k):
    """KSG-2 with the neighbour set defined by value: every point at positive joint
    (max-of-Euclidean) distance at most the k-th smallest."""
    from scipy.special import digamma

    n = len(x)
    dx = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    dy = np.sqrt(((y[:, None, :] - y[None, :, :]) ** 2).sum(-1))
    dj = np.maximum(dx, dy)
    acc = 0.0
    for i in range(n):
        pos = np.sort(dj[i][dj[i] > 0])
        eps = pos[k - 1]
        nb = (dj[i] > 0) & (dj[i] <= eps)
        ex, ey = dx[i][nb].max(), dy[i][nb].max()
        nx = np.sum(dx[i] <= ex) - 1
        ny = np.sum(dy[i] <= ey) - 1
        acc += digamma(nx) + digamma(ny)
    return digamma(k) - 1.0 / k + digamma(n) - acc / n


@pytest.mark.parametrize("algorithm", ["auto", "brute"])
def test_ksg2_is_permutation_invariant_under_ties(algorithm):
    rng = np.random.default_rng(5)
    n = 120
    x = rng.integers(0, 5, size=(n, 1)).astype(float)
    y = (x + rng.integers(0, 3, size=(n, 1))).astype(float)
    base = divest.knn_mi(x, y, k=3, variant=2, algorithm=algorithm)
    assert abs(base - _ksg2_bruteforce(x, y, 3)) < 1e-12
    for seed in range(4):
        perm = np.random.default_rng(seed).permutation(n)
        got = divest.knn_mi(x[perm], y[perm], k=3, variant=2, algorithm=algorithm)
        assert abs(got - base) < 1e-12, (seed, got, base)
    # KSG-1 too.
    b1 = divest.knn_mi(x, y, k=3, variant=1, algorithm=algorithm)
    perm = np.random.default_rng(9).permutation(n)
    assert abs(divest.knn_mi(x[perm], y[perm], k=3, variant=1, algorithm=algorithm) - b1) < 1e-12


@pytest.mark.parametrize("max_k", [0, 8, 4096])
def test_ksg2_tie_search_paths_agree(monkeypatch, max_k):
    # max_k = 0: every tied row by the tiled brute-force scan; 8: widened kNN searches
    # first, then the scan; 4096: widened searches only.
    monkeypatch.setattr(divest.divergence, "_TIE_MAX_K", max_k)
    rng = np.random.default_rng(12)
    n = 90
    x = rng.integers(0, 4, size=(n, 1)).astype(float)
    y = (x + rng.integers(0, 4, size=(n, 1))).astype(float)
    for k in (1, 3, 6):
        got = divest.knn_mi(x, y, k=k, variant=2)
        assert abs(got - _ksg2_bruteforce(x, y, k)) < 1e-12, (max_k, k)


def test_ksg2_ties_in_two_dimensions_match_bruteforce():
    rng = np.random.default_rng(11)
    n = 60
    x = rng.integers(0, 3, size=(n, 2)).astype(float)
    y = rng.integers(0, 3, size=(n, 1)).astype(float) + x[:, :1]
    for k in (1, 2, 4):
        got = divest.knn_mi(x, y, k=k, variant=2)
        assert abs(got - _ksg2_bruteforce(x, y, k)) < 1e-12


# ---------------------------------------------------- 5. kNN estimators at extreme scales


@pytest.mark.parametrize("scale", [1e160, 1e300, 1e-160, 1e-300, 2.0**-1060])
def test_knn_estimators_scale_equivariance(scale):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(80, 2))
    y = rng.normal(size=(70, 2)) + 0.5
    u = rng.normal(size=(80, 1))
    v = u + 0.5 * rng.normal(size=(80, 1))
    # The scaled data as stored (subnormal scales keep only some bits), in unit scale.
    xs, ys, us, vs = (a * scale for a in (x, y, u, v))
    x, y, u, v = (a / scale for a in (xs, ys, us, vs))
    h0 = divest.knn_entropy(x)
    h = divest.knn_entropy(xs)
    close(h, h0 + 2 * math.log(scale), 1e-9)
    close(divest.knn_kl(xs, ys), divest.knn_kl(x, y), 1e-9)
    for variant in (1, 2):
        close(divest.knn_mi(us, vs, variant=variant), divest.knn_mi(u, v, variant=variant), 1e-9)


# ------------------------------------------------------------- 6. layouts and dtypes


def test_layouts_dtypes_and_readonly_inputs():
    rng = np.random.default_rng(8)
    p = rng.random((4, 7)) + 0.1
    q = rng.random((4, 7)) + 0.1
    p /= p.sum(-1, keepdims=True)
    q /= q.sum(-1, keepdims=True)
    want = divest.kl(p, q)
    pf, qf = np.asfortranarray(p), np.asfortranarray(q)
    np.testing.assert_allclose(divest.kl(pf, qf), want, rtol=1e-15)
    big = np.zeros((4, 14))
    big[:, ::2] = p
    np.testing.assert_allclose(divest.kl(big[:, ::2], q), want, rtol=1e-15)
    ro = p.copy()
    ro.setflags(write=False)
    np.testing.assert_allclose(divest.kl(ro, q), want, rtol=1e-15)
    np.testing.assert_allclose(divest.kl(p.T, q.T, axis=0), want, rtol=1e-15)
    f32 = divest.kl(p.astype(np.float32), q.astype(np.float32))
    assert f32.dtype == np.float32
    np.testing.assert_allclose(f32, want, rtol=1e-5)
    r = divest.renyi(p.astype(np.float32), q.astype(np.float32), 1 + 1e-7)
    np.testing.assert_allclose(r, want, rtol=1e-4)
    x = rng.normal(size=(50, 3))
    xf = np.asfortranarray(x)
    xf.setflags(write=False)
    assert divest.knn_entropy(xf) == divest.knn_entropy(x)
    assert abs(divest.knn_entropy(x.astype(np.float32)) - divest.knn_entropy(x)) < 1e-5
    wide = np.zeros((50, 6))
    wide[:, ::2] = x
    assert divest.knn_entropy(wide[:, ::2]) == divest.knn_entropy(x)


def test_empty_and_single_sample_are_value_errors():
    with pytest.raises(ValueError, match="x"):
        divest.knn_entropy(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="k"):
        divest.knn_entropy(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="x"):
        divest.mmd(np.zeros((0, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError):
        divest.kl([], [])
    with pytest.raises(ValueError):
        divest.knn_mi(np.zeros((1, 1)), np.zeros((1, 1)))
    # One point per sample: the V-statistic and CS divergence exist.
    v = divest.mmd([[0.0]], [[1.0]], sigma=1.0, unbiased=False)
    close(v, 2 - 2 * math.exp(-0.5), 1e-14)


# ------------------------------------------------------------------ property tests

import hypothesis  # noqa: E402  (a declared test dependency)

st = hypothesis.strategies

_MASS = st.one_of(
    st.just(0.0),
    st.sampled_from([5e-324, 1e-310, 1e-200, 1e-100]),
    st.floats(1e-6, 1.0),
)


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(
    st.integers(1, 6).flatmap(
        lambda k: st.tuples(
            st.lists(_MASS, min_size=k, max_size=k), st.lists(_MASS, min_size=k, max_size=k)
        )
    )
)
def test_discrete_family_properties(pq):
    p, q = (np.array(v) for v in pq)
    hypothesis.assume(p.sum() > 0 and q.sum() > 0)
    p, q = p / p.sum(), q / q.sum()
    hypothesis.assume(abs(p.sum() - 1) < 1e-9 and abs(q.sum() - 1) < 1e-9)
    for f in divest.divergence.F_DIVERGENCES:
        kw = {"alpha": 0.4} if f == "alpha" else {}
        v = divest.f_divergence(p, q, f, normalize=True, **kw)
        assert not math.isnan(v) and v >= 0, (f, v)
        assert divest.f_divergence(p, p, f, normalize=True, **kw) == 0.0, f
    for sym in ("js", "hellinger", "tv", "jeffreys", "triangular"):
        a = divest.f_divergence(p, q, sym, normalize=True)
        b = divest.f_divergence(q, p, sym, normalize=True)
        assert a == b or abs(a - b) <= 1e-12 * max(a, b), sym
    # The Rényi divergence is non-decreasing in its order, through α = 1.
    orders = [0.0, 0.5, 1 - 1e-12, 1.0, 1 + 1e-12, 2.0, 10.0, math.inf]
    vals = [divest.renyi(p, q, a, normalize=True) for a in orders]
    for a, v in zip(orders, vals):
        assert not math.isnan(v) and v >= 0, (a, v)
        assert divest.renyi(p, p, a, normalize=True) == 0.0
    for lo, hi in zip(vals, vals[1:]):
        assert hi == math.inf if lo == math.inf else hi >= lo - 1e-9 * max(1.0, lo), vals


def test_knn_kl_samples_of_very_different_magnitudes():
    # x near 1, y near 1e10 (no overflow anywhere: a brute-force oracle works), then y near
    # 1e300 (the x-to-y distances scale by 1e290 more: d·ln(1e290) more nats).
    from scipy.spatial.distance import cdist

    r = np.random.default_rng(5)
    x = r.standard_normal((200, 2))
    y = r.standard_normal((250, 2)) * 1e10
    k, (n, d), m = 3, x.shape, len(y)
    dx = cdist(x, x)
    np.fill_diagonal(dx, np.inf)
    rho = np.sort(dx, 1)[:, k - 1]
    nu = np.sort(cdist(x, y), 1)[:, k - 1]
    want = d * np.mean(np.log(nu / rho)) + np.log(m / (n - 1))
    got = divest.knn_kl(x, y, k)
    assert abs(got - want) <= 1e-12 * abs(want)
    far = divest.knn_kl(x, y * 1e290, k)
    assert abs(far - (want + d * math.log(1e290))) <= 1e-12 * abs(far)
