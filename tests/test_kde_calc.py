"""KDE integrals, marginals, conditionals and quantiles (issue 11), against scipy,
closed-form identities and numerical integration."""

import math

import numpy as np
import pytest

import divest
from divest.kde import KERNELS

st = pytest.importorskip("scipy.stats")
integrate = pytest.importorskip("scipy.integrate")
special = pytest.importorskip("scipy.special")

MIX = np.array([[1.0, 0.5, 0.2], [0.0, 1.0, 0.3], [0.0, 0.0, 1.0]])


def _data3(n=60, seed=0):
    r = np.random.default_rng(seed)
    return r.standard_normal((n, 3)) @ MIX, r


# ---- marginal ------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [0, [1], [2, 0], [-1, 1], (0, 1, 2)])
def test_marginal_matches_scipy(dims):
    x, r = _data3()
    w = r.random(x.shape[0]) + 0.1
    q = r.standard_normal((25, 3))
    cols = np.atleast_1d(dims)
    got = divest.KDE(x, weights=w).marginal(dims).logpdf(q[:, cols])
    want = st.gaussian_kde(x.T, weights=w).marginal(dims).logpdf(q[:, cols].T)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_marginal_is_integral_of_joint():
    r = np.random.default_rng(1)
    x = r.standard_normal((15, 2)) @ np.array([[1.0, 0.7], [0.0, 0.6]])
    kde = divest.KDE(x, bandwidth=np.array([[0.3, 0.1], [0.1, 0.2]]))
    m = kde.marginal(0)
    for t in (-1.0, 0.2, 1.5):
        val = integrate.quad(
            lambda y, t=t: kde.pdf(np.array([[t, y]]))[0],
            -np.inf,
            np.inf,
            epsabs=1e-13,
            epsrel=1e-11,
            limit=200,
        )[0]
        assert m.pdf(np.array([t]))[0] == pytest.approx(val, rel=1e-9)


def test_marginal_bad_dims_and_kernels():
    x, _ = _data3()
    kde = divest.KDE(x)
    for bad in (3, -4, [0, 0], [], [0, 5]):
        with pytest.raises(ValueError, match="dims"):
            kde.marginal(bad)
    for bad in ("a", 1.5, [0.5], True):
        with pytest.raises((TypeError, ValueError), match="dims"):
            kde.marginal(bad)
    ep = divest.KDE(x, bandwidth=0.5, kernel="epanechnikov")
    with pytest.raises(ValueError, match="not a 'epanechnikov' KDE"):
        ep.marginal([0])
    assert np.allclose(ep.marginal([0, 1, 2]).logpdf(x[:5]), ep.logpdf(x[:5]), rtol=1e-13)


# ---- conditional ---------------------------------------------------------------------


@pytest.mark.parametrize("given", [{1: 0.5}, {0: -0.3, 2: 1.1}, {-1: 2.0}])
def test_conditional_identity(given):
    # p(x_r | x_g = v) = p(x_r, v) / p_g(v) exactly for a Gaussian KDE.
    x, r = _data3()
    w = r.random(x.shape[0]) + 0.1
    h = np.array([[0.4, 0.1, 0.05], [0.1, 0.3, -0.08], [0.05, -0.08, 0.5]])
    kde = divest.KDE(x, bandwidth=h, weights=w)
    g = sorted(k % 3 for k in given)
    v = np.array([given[k] for k in sorted(given, key=lambda k: k % 3)])
    rest = [i for i in range(3) if i not in g]
    c = kde.conditional(given)
    assert c.d == len(rest)
    q = r.standard_normal((20, len(rest)))
    full = np.empty((20, 3))
    full[:, rest] = q
    full[:, g] = v
    want = kde.logpdf(full) - kde.marginal(g).logpdf(v[None, :])[0]
    np.testing.assert_allclose(c.logpdf(q), want, rtol=1e-10, atol=1e-12)


def test_conditional_far_value_log_weights():
    r = np.random.default_rng(3)
    x = r.standard_normal((40, 2))
    kde = divest.KDE(x, bandwidth=0.1)
    c = kde.conditional({0: 80.0})  # every plain weight underflows
    nearest = np.argmax(x[:, 0])
    assert c.weights.max() > 0.99
    assert c._x[np.argmax(c.weights), 0] == pytest.approx(x[nearest, 1])


def test_conditional_bad_given():
    x, _ = _data3()
    kde = divest.KDE(x)
    for bad in (
        {3: 0.0},
        {0: 0.0, 1: 0.0, 2: 0.0},
        {0: 0.0, -3: 1.0},
        {0: np.nan},
        {0: np.inf},
        {"a": 0.0},
        {0: "x"},
    ):
        with pytest.raises(ValueError, match="given"):
            kde.conditional(bad)
    for bad in ({}, [0.0], None):
        with pytest.raises(TypeError, match="given"):
            kde.conditional(bad)
    with pytest.raises(ValueError, match="conditional"):
        divest.KDE(x, bandwidth=0.5, kernel="tophat").conditional({0: 0.0})
    with pytest.raises(ValueError, match="given"):
        divest.KDE(x, bandwidth=1e-3).conditional({0: 1e200})


# ---- cdf, integrate_box, ppf ---------------------------------------------------------


def _quad_cdf(kde, x, t, h):
    f = lambda u: kde.pdf(np.array([u]))[0]  # noqa: E731
    unbounded = kde.kernel in ("gaussian", "exponential")
    lo = -np.inf if unbounded else x.min() - h
    breaks = np.sort(np.concatenate([x - h, x, x + h]))
    edges = [lo] + [b for b in breaks if lo < b < t] + [t]
    if t <= lo:
        return 0.0
    return sum(
        integrate.quad(f, a, b, epsabs=1e-14, epsrel=1e-12, limit=200)[0]
        for a, b in zip(edges[:-1], edges[1:])
    )


@pytest.mark.parametrize("kernel", KERNELS)
def test_cdf_1d_matches_quadrature(kernel):
    r = np.random.default_rng(4)
    x = r.standard_normal(25)
    w = r.random(25) + 0.1
    h = 0.4
    kde = divest.KDE(x, bandwidth=h, kernel=kernel, weights=w)
    t = np.array([-3.0, -1.0, 0.1, 0.77, 1.3, 3.5])
    want = [_quad_cdf(kde, x, ti, h) for ti in t]
    np.testing.assert_allclose(kde.cdf(t), want, rtol=0, atol=1e-9)
    grid = np.linspace(-5, 5, 401)
    c = kde.cdf(grid)
    assert np.all(np.diff(c) >= 0)
    assert kde.cdf([-1e6])[0] == pytest.approx(0.0, abs=1e-300)
    assert kde.cdf([1e6])[0] == 1.0
    # integrate_box in 1-D is a difference of cdfs.
    assert kde.integrate_box([-1.0], [0.77])[0] == pytest.approx(want[3] - want[1], abs=1e-9)
    one = kde.integrate_box(-1.0, 0.77)  # scalars: a float, as scipy's integrate_box_1d
    assert isinstance(one, float) and one == pytest.approx(want[3] - want[1], abs=1e-9)


def test_gaussian_tail_keeps_relative_accuracy():
    x = np.array([0.0, 1.0])
    kde = divest.KDE(x, bandwidth=1.0)
    t = np.array([-30.0, -10.0])
    want = 0.5 * (special.ndtr(t) + special.ndtr(t - 1.0))
    np.testing.assert_allclose(kde.cdf(t), want, rtol=1e-13)
    # Upper tail box, away from the complement of 1.
    got = kde.integrate_box([12.0], [np.inf])[0]
    want = 0.5 * (special.ndtr(-12.0) + special.ndtr(-11.0))
    assert got == pytest.approx(want, rel=1e-13)


@pytest.mark.parametrize("bw", [0.4, np.array([0.3, 0.7])])
def test_integrate_box_2d_diagonal_against_ndtr(bw):
    r = np.random.default_rng(5)
    x = r.standard_normal((30, 2)) @ np.array([[1.0, 0.6], [0.0, 0.8]])
    w = r.random(30) + 0.1
    kde = divest.KDE(x, bandwidth=bw, weights=w)
    h = np.broadcast_to(bw, (2,))
    lo = np.array([[-1.0, -0.5], [-np.inf, 0.2], [0.3, -np.inf]])
    hi = np.array([[0.5, 1.0], [0.1, np.inf], [2.0, 0.0]])
    wn = w / w.sum()
    for a, b, got in zip(lo, hi, kde.integrate_box(lo, hi)):
        p = np.prod(special.ndtr((b - x) / h) - special.ndtr((a - x) / h), axis=1)
        assert got == pytest.approx(wn @ p, rel=1e-12, abs=1e-15)
    q = r.standard_normal((7, 2))
    np.testing.assert_allclose(
        kde.cdf(q), kde.integrate_box(np.full((7, 2), -np.inf), q), rtol=1e-14
    )
    # scipy's integrate_box agrees when its covariance is the same diagonal matrix.
    # (scipy caches the data covariance; replace it by the diagonal H, factor 1.)
    sk = st.gaussian_kde(x.T, weights=w)
    sk._data_covariance = np.diag(h**2)
    sk._data_cho_cov = np.diag(np.asarray(h, dtype=float))
    sk.set_bandwidth(1.0)
    assert np.array_equal(sk.covariance, np.diag(h**2))
    want = sk.integrate_box(lo[0], hi[0], maxpts=200000)
    got = kde.integrate_box(lo[0], hi[0])  # one box: a float, as scipy's
    assert isinstance(got, float) and got == pytest.approx(want, rel=1e-5)


def test_box_errors():
    x, _ = _data3()
    x4 = np.column_stack([x, x[:, 0] + 0.5 * np.sin(3 * x[:, 1])])
    with pytest.raises(ValueError, match="d = 2 and d = 3 only, not d=4"):
        divest.KDE(x4).cdf(x4[:2])  # full bandwidth in 4-D (3-D: tests/test_kde_cdf3.py)
    with pytest.raises(ValueError, match="gaussian"):
        divest.KDE(x, bandwidth=0.5, kernel="cosine").integrate_box(x[0], x[1])
    kde = divest.KDE(x, bandwidth=0.5)
    with pytest.raises(ValueError, match="low"):
        kde.integrate_box([np.nan, 0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="high"):
        kde.integrate_box([0, 0, 0], [1, 1])


@pytest.mark.parametrize("kernel", KERNELS)
def test_ppf_inverts_cdf(kernel):
    r = np.random.default_rng(6)
    x = r.standard_normal(40)
    kde = divest.KDE(x, bandwidth=0.3, kernel=kernel)
    t = np.linspace(-2.0, 2.0, 17)
    c = kde.cdf(t)
    inner = (c > 1e-12) & (c < 1 - 1e-12)
    back = kde.ppf(c[inner])
    np.testing.assert_allclose(kde.cdf(back), c[inner], rtol=0, atol=1e-12)
    np.testing.assert_allclose(back, t[inner], atol=1e-9)
    ends = kde.ppf([0.0, 1.0])
    if kernel in ("gaussian", "exponential"):
        assert ends[0] == -np.inf and ends[1] == np.inf
    else:
        assert ends[0] == pytest.approx(x.min() - 0.3) and ends[1] == pytest.approx(x.max() + 0.3)
    assert isinstance(kde.ppf(0.5), float)
    for bad in (-0.1, 1.5, np.nan, []):
        with pytest.raises(ValueError, match="q"):
            kde.ppf(bad)
    with pytest.raises(ValueError, match="1-D"):
        divest.KDE(np.c_[x, x[::-1]], bandwidth=0.3).ppf(0.5)


def test_ppf_median_of_symmetric_data_is_fast_and_exact():
    kde = divest.KDE(np.array([-1.0, 1.0]), bandwidth=0.5)
    assert abs(kde.ppf(0.5)) < 1e-14
    assert kde.ppf(0.5 * (1 + math.erf(1 / math.sqrt(2)))) > 1.0


# ---- full bandwidth in 2-D (bivariate normal CDF) -------------------------------------


@pytest.mark.parametrize("rho", [-0.9999, -0.95, -0.93, -0.5, 0.0, 0.5, 0.92, 0.93, 0.9999])
def test_full_2d_orthant_closed_form(rho):
    # One data point: P(X ≤ x0, Y ≤ y0) = 1/4 + asin(ρ)/(2π) for any variances.
    h = np.array([[0.5, rho * math.sqrt(0.5 * 2.0)], [rho * math.sqrt(0.5 * 2.0), 2.0]])
    kde = divest.KDE(np.array([[0.3, -0.7]]), bandwidth=h)
    got = kde.cdf(np.array([[0.3, -0.7]]))[0]
    # The answer moves by 1/(2π√(1−ρ²)) per unit of ρ: allow ρ's rounding through H.
    tol = 2e-16 + 1e-15 / math.sqrt(1 - rho * rho)
    assert got == pytest.approx(0.25 + math.asin(rho) / (2 * math.pi), abs=tol)


@pytest.mark.parametrize("rho", [-0.999, -0.95, -0.6, 0.2, 0.93, 0.99, 0.999999])
def test_full_2d_cdf_matches_quadrature(rho):
    # P(X ≤ u, Y ≤ v) = ∫_{-∞}^{u} φ(z) Φ((v − ρz)/√(1−ρ²)) dz for a unit-variance kernel.
    a = math.sqrt((1 - rho) * (1 + rho))
    kde = divest.KDE(np.zeros((1, 2)), bandwidth=np.array([[1.0, rho], [rho, 1.0]]))
    r = np.random.default_rng(8)
    pts = r.uniform(-4, 4, (12, 2))
    got = kde.cdf(pts)
    for (u, v), g in zip(pts, got):

        def f(z, v=v):
            return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi) * special.ndtr((v - rho * z) / a)

        kink = v / rho if rho != 0 else None
        edges = [-40.0] + ([kink] if kink is not None and -40 < kink < u else []) + [u]
        want = sum(
            integrate.quad(f, lo, hi, epsabs=1e-16, epsrel=1e-13, limit=400)[0]
            for lo, hi in zip(edges[:-1], edges[1:])
        )
        assert g == pytest.approx(want, abs=2e-15)


def test_full_2d_box_matches_scipy():
    r = np.random.default_rng(2)
    x = r.standard_normal((40, 2)) @ np.array([[1.0, 0.9], [0.0, 0.4]])
    w = r.random(40) + 0.1
    kde = divest.KDE(x, weights=w)
    sk = st.gaussian_kde(x.T, weights=w)
    lo, hi = np.array([-1.0, -0.5]), np.array([0.7, 1.2])
    assert kde.integrate_box(lo, hi) == pytest.approx(sk.integrate_box(lo, hi), abs=1e-5)
    wn = w / w.sum()
    q = r.standard_normal((4, 2))
    for qi, g in zip(q, kde.cdf(q)):
        want = sum(
            wi * st.multivariate_normal(xi, kde.bandwidth, abseps=1e-14, releps=1e-14).cdf(qi)
            for wi, xi in zip(wn, x)
        )
        assert g == pytest.approx(want, abs=1e-13)
    inf = np.inf
    edge = kde.cdf(np.array([[inf, inf], [inf, 0.3], [-inf, 1.0], [0.2, inf]]))
    np.testing.assert_allclose(edge[:3], [1.0, kde.marginal(1).cdf([0.3])[0], 0.0], atol=1e-15)
    assert edge[3] == pytest.approx(kde.marginal(0).cdf([0.2])[0], abs=1e-15)
    boxes = kde.integrate_box(np.array([[-inf, -inf], [0.0, 0.0]]), np.array([[inf, inf], [1, 1]]))
    assert boxes[0] == pytest.approx(1.0, abs=1e-15) and 0 < boxes[1] < 1


def test_full_2d_far_corners_are_limits_not_nan():
    r = np.random.default_rng(9)
    x = r.standard_normal((20, 2)) @ np.array([[1.0, 0.95], [0.0, 0.2]])
    kde = divest.KDE(x)
    got = kde.cdf(np.array([[1e300, 1e300], [-1e300, 0.0], [1e300, 0.3], [0.1, -1e300]]))
    want = [1.0, 0.0, kde.marginal(1).cdf([0.3])[0], 0.0]
    np.testing.assert_allclose(got, want, atol=1e-15)


@pytest.mark.parametrize("kernel", ["tophat", "epanechnikov", "linear", "cosine"])
def test_ppf_in_a_gap_of_the_support(kernel):
    # cdf is flat (0.5) on [-4, 4]: the quantile is the smallest x with cdf(x) >= q.
    kde = divest.KDE(np.array([-5.0, 5.0]), bandwidth=1.0, kernel=kernel)
    got = kde.ppf([0.5, 0.25, 0.75])
    assert got[1] == pytest.approx(-5.0, abs=1e-12) and got[2] == pytest.approx(5.0, abs=1e-12)
    assert got[0] == pytest.approx(-4.0, abs=1e-7)  # the density vanishes at the edge
    assert abs(kde.cdf(got[:1])[0] - 0.5) <= 1e-12
    if kernel == "tophat":
        assert got[0] == -4.0


def test_ppf_many_points_accuracy():
    r = np.random.default_rng(10)
    x = np.concatenate([r.standard_normal(3000), 8 + 0.1 * r.standard_normal(500)])
    for kernel in ("gaussian", "epanechnikov", "exponential"):
        kde = divest.KDE(x, kernel=kernel)
        q = np.array([1e-6, 0.01, 0.3, 0.857, 0.86, 0.999, 1 - 1e-9])
        np.testing.assert_allclose(kde.cdf(kde.ppf(q)), q, rtol=0, atol=1e-12)


@pytest.mark.parametrize("s", [1e300, 1e-300])
def test_extreme_scales_are_equivariant(s):
    r = np.random.default_rng(11)
    x = r.standard_normal((30, 2)) @ np.array([[1.0, 0.5], [0.0, 1.0]])
    q = r.standard_normal((5, 2))
    k, ks = divest.KDE(x), divest.KDE(x * s)
    shift = math.log(s)
    np.testing.assert_allclose(
        ks.marginal(1).logpdf(q[:, 1] * s) + shift, k.marginal(1).logpdf(q[:, 1]), atol=1e-11
    )
    np.testing.assert_allclose(
        ks.conditional({0: 0.3 * s}).logpdf(q[:, 1] * s) + shift,
        k.conditional({0: 0.3}).logpdf(q[:, 1]),
        atol=1e-11,
    )
    np.testing.assert_allclose(ks.cdf(q * s), k.cdf(q), atol=1e-14)
    k1, k1s = divest.KDE(x[:, 0]), divest.KDE(x[:, 0] * s)
    np.testing.assert_allclose(k1s.ppf([0.1, 0.5, 0.9]) / s, k1.ppf([0.1, 0.5, 0.9]), rtol=1e-13)


def test_empty_and_reversed_boxes_have_probability_zero():
    kde = divest.KDE(np.random.default_rng(12).standard_normal((20, 2)), bandwidth=0.5)
    got = kde.integrate_box(np.array([[0.0, 0.0], [1.0, -1.0]]), np.array([[0.0, 1.0], [0.5, 1.0]]))
    assert np.array_equal(got, [0.0, 0.0])
