"""Issue 11: bounded and periodic data (reflection, wrapping) and degenerate data.

Oracles: the image sums written out directly (reflected Gaussian on the half-line and on
an interval, long sums well past the kernel's reach), the wrapped normal's Fourier series
(mpmath), quadrature of the density over the bounded domain, Uniform(0, 1) data's
boundary value, the joint/marginal ratio for conditionals, and fixed-seed counts for
resample.
"""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest

import divest
from divest import KDE

SQ2PI = math.sqrt(2 * math.pi)


def _gauss_image_sum(q, x, w, h, maps):
    """Σ_i w_i Σ_(s,t) φ((s q + t − x_i)/h)/h, by brute force."""
    q = np.asarray(q, dtype=np.float64)
    out = np.zeros(q.shape)
    for s, t in maps:
        z = (s * q[:, None] + t - x[None, :]) / h
        out += np.exp(-0.5 * z * z) @ w / (h * SQ2PI)
    return out


def _interval_maps(a, b, k=60):
    L = b - a
    return [(1.0, 2 * j * L) for j in range(-k, k + 1)] + [
        (-1.0, 2 * a + 2 * j * L) for j in range(-k, k + 1)
    ]


def _gl_integral(kde, edges, n=30):
    """∫ pdf over [edges[0], edges[-1]] by n-point Gauss-Legendre on every piece."""
    gx, gw = np.polynomial.legendre.leggauss(n)
    a, b = edges[:-1, None], edges[1:, None]
    nodes = 0.5 * (b - a) * gx + 0.5 * (a + b)
    return float(np.sum(kde.pdf(nodes.ravel()).reshape(nodes.shape) @ gw * 0.5 * (b - a)[:, 0]))


# ---------------------------------------------------------------------------------------
# Values against closed forms.


def test_reflect_half_line_is_the_image_sum():
    r = np.random.default_rng(1)
    x = r.exponential(1.0, 300)
    w = r.random(300) + 0.2
    h = 0.3
    kde = KDE(x, bandwidth=h, weights=w, bounds=(0, None))
    q = np.linspace(0, 6, 301)
    want = _gauss_image_sum(q, x, w / w.sum(), h, [(1, 0), (-1, 0)])
    np.testing.assert_allclose(kde.pdf(q), want, rtol=1e-12)
    # Outside the bounds the density is 0.
    assert kde.pdf(np.array([-1e-9, -3.0])).tolist() == [0.0, 0.0]
    assert np.all(kde.logpdf(np.array([-0.5])) == -np.inf)


def test_reflect_upper_half_line_and_compact_kernel():
    r = np.random.default_rng(2)
    x = 1.0 - r.exponential(0.5, 200)
    h = 0.25
    kde = KDE(x, bandwidth=h, kernel="epanechnikov", bounds=[(None, 1.0)])
    q = np.linspace(-2, 1, 211)

    def epa(u):
        return np.where(np.abs(u) < 1, 0.75 * (1 - u * u), 0.0) / h

    want = np.zeros(q.shape)
    for s, t in [(1, 0), (-1, 2.0)]:
        want += epa((s * q[:, None] + t - x[None, :]) / h).mean(axis=1)
    np.testing.assert_allclose(kde.pdf(q), want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("h", [0.05, 0.4, 1.5])
def test_reflect_interval_long_image_sum(h):
    r = np.random.default_rng(3)
    x = r.beta(2, 5, 150)
    kde = KDE(x, bandwidth=h, bounds=[(0.0, 1.0)])
    q = np.linspace(0, 1, 101)
    want = _gauss_image_sum(q, x, np.full(150, 1 / 150), h, _interval_maps(0.0, 1.0))
    np.testing.assert_allclose(kde.pdf(q), want, rtol=1e-12)
    # Zero normal derivative at both ends (reflecting boundary).
    s = kde.score(np.array([0.0, 1.0]))
    np.testing.assert_allclose(s[:, 0], 0.0, atol=1e-9)


def test_periodic_is_the_wrapped_normal_fourier_series():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 30
    L = 2 * math.pi
    mu, h = 0.4, 0.9
    kde = KDE(np.array([mu]), bandwidth=h, bounds=(-math.pi, math.pi), boundary="periodic")
    q = np.linspace(-math.pi, math.pi, 13)

    def wrapped(t):
        tot = mpmath.mpf(1)
        for n in range(1, 60):
            tot += (
                2
                * mpmath.exp(-2 * mpmath.pi**2 * n**2 * h**2 / L**2)
                * mpmath.cos(2 * mpmath.pi * n * (t - mu) / L)
            )
        return float(tot / L)

    want = np.array([wrapped(t) for t in q])
    np.testing.assert_allclose(kde.pdf(q), want, rtol=1e-13)
    # Periodic: the two ends carry the same density, and the score is continuous there.
    np.testing.assert_allclose(kde.pdf(np.array([-math.pi])), kde.pdf(np.array([math.pi])))
    s = kde.score(np.array([-math.pi, math.pi]))
    np.testing.assert_allclose(s[0], s[1], rtol=1e-10)


def test_periodic_long_image_sum_many_points_and_exponential():
    r = np.random.default_rng(4)
    x = r.vonmises(1.0, 2.0, 120)
    q = np.linspace(-math.pi, math.pi, 97)
    maps = [(1.0, 2 * math.pi * k) for k in range(-40, 41)]
    kde = KDE(x, bandwidth=0.5, bounds=(-math.pi, math.pi), boundary="periodic")
    want = _gauss_image_sum(q, x, np.full(120, 1 / 120), 0.5, maps)
    np.testing.assert_allclose(kde.pdf(q), want, rtol=1e-12)
    kx = KDE(
        x, bandwidth=0.5, kernel="exponential", bounds=(-math.pi, math.pi), boundary="periodic"
    )
    want = np.zeros(q.shape)
    for s, t in maps:
        want += np.exp(-np.abs(s * q[:, None] + t - x[None, :]) / 0.5).mean(axis=1) / (2 * 0.5)
    np.testing.assert_allclose(kx.pdf(q), want, rtol=1e-12)


def test_uniform_boundary_value_is_one_not_half():
    x = np.random.default_rng(5).random(20000)
    free = KDE(x)
    kde = KDE(x, bounds=(0, 1))
    ends = np.array([0.0, 1.0])
    assert np.all(np.abs(kde.pdf(ends) - 1.0) < 0.1)
    assert np.all(np.abs(free.pdf(ends) - 0.5) < 0.1)
    per = KDE(x, bounds=(0, 1), boundary="periodic")
    assert np.all(np.abs(per.pdf(ends) - 1.0) < 0.1)


@pytest.mark.parametrize("kernel", ["gaussian", "epanechnikov", "exponential", "cosine", "tophat"])
@pytest.mark.parametrize("boundary", ["reflect", "periodic"])
def test_integrates_to_one_by_quadrature(kernel, boundary):
    r = np.random.default_rng(6)
    x = r.beta(0.7, 1.3, 80) * 3.0 - 1.0
    h = 0.6
    kde = KDE(x, bandwidth=h, kernel=kernel, bounds=(-1.0, 2.0), boundary=boundary)
    # Every kink or jump of the integrand (each point ± h and its images), then
    # 30-point Gauss-Legendre between consecutive ones: exact for the polynomial
    # profiles, to rounding for the smooth pieces.
    base = np.concatenate([x, x - h, x + h])
    imgs = [base, -2.0 - base, 4.0 - base, base - 3.0, base + 3.0, base - 6.0, base + 6.0]
    pts = np.unique(np.concatenate(imgs + [[-1.0, 2.0]]))
    pts = pts[(pts >= -1) & (pts <= 2)]
    total = _gl_integral(kde, pts)
    assert abs(total - 1.0) < 1e-11
    assert abs(kde.integrate_box(-1.0, 2.0) - 1.0) < 1e-12
    assert abs(kde.integrate_box(-5.0, 7.0) - 1.0) < 1e-12
    assert kde.cdf(np.array([-1.0, 2.0])).tolist() == pytest.approx([0.0, 1.0], abs=1e-12)


def test_integrates_to_one_in_2d_gauss_legendre():
    r = np.random.default_rng(7)
    x = np.column_stack([r.exponential(1.0, 100), r.random(100)])
    kde = KDE(x, bandwidth=[0.3, 0.2], bounds=[(0, None), (0, 1)])
    gx, wx = np.polynomial.legendre.leggauss(120)
    # [0, 12] in 6 panels times [0, 1] in 2 panels.
    nodes, weights = [], []
    for a, b in zip(np.linspace(0, 12, 7)[:-1], np.linspace(0, 12, 7)[1:]):
        for c, e in ((0.0, 0.5), (0.5, 1.0)):
            u = 0.5 * (b - a) * gx + 0.5 * (a + b)
            v = 0.5 * (e - c) * gx + 0.5 * (c + e)
            uu, vv = np.meshgrid(u, v, indexing="ij")
            nodes.append(np.column_stack([uu.ravel(), vv.ravel()]))
            weights.append(np.outer(wx, wx).ravel() * 0.25 * (b - a) * (e - c))
    total = float(np.concatenate(weights) @ kde.pdf(np.concatenate(nodes)))
    assert abs(total - 1.0) < 1e-6
    assert abs(kde.integrate_box([0, 0], [np.inf, 1]) - 1.0) < 1e-12


def test_2d_product_of_folds_against_brute_force():
    r = np.random.default_rng(8)
    x = np.column_stack([r.exponential(1.0, 60), r.beta(2, 2, 60)])
    h = np.array([0.4, 0.3])
    kde = KDE(x, bandwidth=h, bounds=[(0, None), (0, 1)])
    q = np.column_stack([r.random(50) * 3, r.random(50)])
    m0 = [(1, 0), (-1, 0)]
    m1 = _interval_maps(0.0, 1.0, 20)
    want = np.zeros(50)
    for s0, t0 in m0:
        for s1, t1 in m1:
            z0 = (s0 * q[:, 0, None] + t0 - x[None, :, 0]) / h[0]
            z1 = (s1 * q[:, 1, None] + t1 - x[None, :, 1]) / h[1]
            want += np.exp(-0.5 * (z0 * z0 + z1 * z1)).mean(axis=1) / (2 * math.pi * h[0] * h[1])
    np.testing.assert_allclose(kde.pdf(q), want, rtol=1e-12)
    # The score against central differences of logpdf.
    eps = 1e-6
    for j in range(2):
        e = np.zeros(2)
        e[j] = eps
        qq = np.clip(q, 2 * eps, 1 - 2 * eps) if j == 1 else q + 2 * eps
        fd = (kde.logpdf(qq + e) - kde.logpdf(qq - e)) / (2 * eps)
        np.testing.assert_allclose(kde.score(qq)[:, j], fd, rtol=1e-5, atol=1e-6)


def test_return_ess_counts_images():
    x = np.array([1.0])
    kde = KDE(x, bandwidth=0.5, bounds=(0, None))
    lp, ess = kde.logpdf(np.array([0.0, 5.0]), return_ess=True)
    # At the bound the point and its image carry equal terms: ESS 2; far away ~1.
    assert ess[0] == pytest.approx(2.0, rel=1e-14)
    assert ess[1] == pytest.approx(1.0, rel=1e-14)
    assert lp[0] == pytest.approx(math.log(2 / (0.5 * SQ2PI)) - 2.0, rel=1e-14)


# ---------------------------------------------------------------------------------------
# Grid, cdf, ppf, resample, marginal, conditional: the same folded density.


@pytest.mark.parametrize("method", ["binned", "exact"])
def test_grid_matches_pdf(method):
    r = np.random.default_rng(9)
    x = r.exponential(1.0, 2000)
    kde = KDE(x, bandwidth=0.2, bounds=(0, None))
    g = kde.grid(512, method=method)
    assert g.grid[0] == 0.0  # the default extent stops at the bound
    want = kde.pdf(g.grid)
    tol = 1e-10 * want.max() if method == "exact" else 4 * g.error + 1e-12
    assert np.max(np.abs(g.values - want)) <= tol
    same = divest.kde_grid(x, bandwidth=0.2, bounds=(0, None), n_points=512, method=method)
    np.testing.assert_allclose(same.values, g.values, rtol=1e-14, atol=0)
    # An extent past the bound: 0 outside.
    g2 = kde.grid(101, extent=(-1, 1), method=method)
    assert np.all(g2.values[g2.grid < 0] == 0)
    inside = g2.grid >= 0
    np.testing.assert_allclose(
        g2.values[inside], kde.pdf(g2.grid[inside]), rtol=1e-3 if method == "binned" else 1e-10
    )


def test_grid_log_and_periodic_and_2d():
    r = np.random.default_rng(10)
    x = r.vonmises(0.0, 1.0, 500)
    kde = KDE(x, bandwidth=0.3, bounds=(-math.pi, math.pi), boundary="periodic")
    g = kde.grid(256, log=True)
    np.testing.assert_allclose(g.values, kde.logpdf(g.grid), atol=1e-6)
    x2 = np.column_stack([r.exponential(1.0, 300), r.random(300)])
    k2 = KDE(x2, bandwidth=[0.3, 0.1], bounds=[(0, None), (0, 1)])
    g2 = k2.grid((40, 30), method="exact")
    mesh = np.stack(np.meshgrid(*g2.grid, indexing="ij"), -1).reshape(-1, 2)
    np.testing.assert_allclose(g2.values.ravel(), k2.pdf(mesh), rtol=1e-10)
    gb = k2.grid((64, 64), method="binned")
    mesh = np.stack(np.meshgrid(*gb.grid, indexing="ij"), -1).reshape(-1, 2)
    assert np.max(np.abs(gb.values.ravel() - k2.pdf(mesh))) < 0.02 * gb.values.max()


def test_cdf_ppf_consistent_with_quadrature():
    from scipy.integrate import quad

    r = np.random.default_rng(11)
    x = r.random(60)
    kde = KDE(x, bandwidth=0.15, bounds=(0, 1))
    for t in (0.0, 0.03, 0.5, 0.97, 1.0):
        want = quad(lambda u: float(kde.pdf(np.array([u]))[0]), 0, t, epsabs=1e-14)[0]
        assert kde.cdf(np.array([t]))[0] == pytest.approx(want, abs=1e-11)
    q = np.array([0.0, 0.001, 0.3, 0.999, 1.0])
    v = kde.ppf(q)
    assert v[0] == 0.0 and v[-1] == 1.0
    np.testing.assert_allclose(kde.cdf(v[1:-1]), q[1:-1], atol=1e-12)


@pytest.mark.parametrize(
    "bounds, boundary",
    [
        ((0, None), "reflect"),
        ((None, 0.5), "reflect"),
        ((0, 1), "reflect"),
        ((0, 1), "periodic"),
    ],
)
@pytest.mark.parametrize("kernel", ["gaussian", "epanechnikov"])
def test_resample_inside_and_distributed_as_the_density(bounds, boundary, kernel):
    from scipy.stats import chi2

    r = np.random.default_rng(12)
    x = np.clip(r.random(40), 0.0, 0.5)
    kde = KDE(x, bandwidth=0.3, kernel=kernel, bounds=bounds, boundary=boundary)
    s = kde.resample(40000, rng=3)
    lo = bounds[0] if bounds[0] is not None else -np.inf
    hi = bounds[1] if bounds[1] is not None else np.inf
    assert s.shape == (40000, 1)
    assert np.all((s >= lo) & (s <= hi))  # every sample
    # Counts in 12 bins against the folded probabilities (integrate_box).
    a = max(lo, -1.5)
    b = min(hi, 2.0)
    edges = np.linspace(a, b, 13)
    edges[0], edges[-1] = lo, hi
    p = kde.integrate_box(edges[:-1, None], edges[1:, None])
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    cnt = np.histogram(s[:, 0], bins=np.clip(edges, -1e300, 1e300))[0]
    keep = p * 40000 > 5
    stat = np.sum((cnt[keep] - 40000 * p[keep]) ** 2 / (40000 * p[keep]))
    assert stat < chi2.ppf(1 - 1e-4, keep.sum() - 1)


def test_resample_2d_inside():
    r = np.random.default_rng(13)
    x = np.column_stack([r.random(30), r.random(30) * 2 * math.pi, r.standard_normal(30)])
    kde = KDE(x, bandwidth=[0.4, 1.0, 0.5], bounds=[(0, 1), (0, 2 * math.pi), None])
    s = kde.resample(20000, rng=np.random.default_rng(0))
    assert np.all((s[:, 0] >= 0) & (s[:, 0] <= 1))
    assert np.all((s[:, 1] >= 0) & (s[:, 1] <= 2 * math.pi))
    per = KDE(
        x[:, :2], bandwidth=[0.4, 1.0], bounds=[(0, 1), (0, 2 * math.pi)], boundary="periodic"
    )
    s = per.resample(20000, rng=1)
    assert np.all((s >= 0) & (s <= [1, 2 * math.pi]))


def test_marginal_and_conditional():
    r = np.random.default_rng(14)
    x = np.column_stack([r.exponential(1.0, 80), r.random(80), r.standard_normal(80)])
    # Scott's rule, decorrelated for the bounded dimensions only.
    x[:, 2] += 0.5 * x[:, 0]
    kde = KDE(x, bounds=[(0, None), (0, 1), None])
    bw = kde.bandwidth
    assert bw[0, 1] == bw[0, 2] == bw[1, 2] == 0.0
    full = KDE(x).bandwidth
    np.testing.assert_allclose(np.diag(bw), np.diag(full), rtol=1e-14)
    m = kde.marginal([0, 1])
    ref = KDE(x[:, :2], bandwidth=np.sqrt(np.diag(bw)[:2]), bounds=[(0, None), (0, 1)])
    q = np.column_stack([r.random(20) * 3, r.random(20)])
    np.testing.assert_allclose(m.logpdf(q), ref.logpdf(q), rtol=1e-12)
    assert np.all(m.logpdf(np.array([[-0.1, 0.5]])) == -np.inf)
    # Conditional on a bounded dimension: the joint over the marginal (an independent
    # route through the fold of the joint).
    c = kde.conditional({1: 0.02})
    m02 = kde.marginal([0, 2])  # noqa: F841 - documents the order of the free dims
    qq = np.column_stack([r.random(15) * 3, r.standard_normal(15)])
    joint = kde.logpdf(np.column_stack([qq[:, 0], np.full(15, 0.02), qq[:, 1]]))
    marg = kde.marginal(1).logpdf(np.array([0.02]))
    np.testing.assert_allclose(c.logpdf(qq), joint - marg, rtol=1e-10)
    # Conditional on the free dimension 2 (correlated with nothing bounded).
    c2 = kde.conditional({2: 0.3})
    q3 = np.column_stack([r.random(15) * 3, r.random(15)])
    joint = kde.logpdf(np.column_stack([q3, np.full(15, 0.3)]))
    marg = kde.marginal(2).logpdf(np.array([0.3]))
    np.testing.assert_allclose(c2.logpdf(q3), joint - marg, rtol=1e-10)
    with pytest.raises(ValueError, match="outside its bounds"):
        kde.conditional({1: 1.5})


def test_bounds_with_a_full_bandwidth_that_correlates_them_raises():
    x = np.random.default_rng(15).random((20, 2))
    with pytest.raises(ValueError, match="bounds.*bandwidth|bandwidth.*bounds"):
        KDE(x, bandwidth=np.array([[0.1, 0.02], [0.02, 0.1]]), bounds=[(0, 1), None])
    # The unbounded block may stay full.
    x3 = np.random.default_rng(15).random((20, 3))
    H = np.array([[0.1, 0, 0], [0, 0.1, 0.03], [0, 0.03, 0.1]])
    kde = KDE(x3, bandwidth=H, bounds=[(0, 1), None, None])
    assert np.isfinite(kde.logpdf(x3)).all()


@pytest.mark.parametrize(
    "bounds, boundary, maps",
    [
        ((0, None), "reflect", [(1, 0), (-1, 0)]),
        ((0, 1), "reflect", _interval_maps(0.0, 1.0, 20)),
        ((0, 1), "periodic", [(1.0, float(k)) for k in range(-20, 21)]),
    ],
)
def test_loo_logpdf_leaves_out_every_own_image(bounds, boundary, maps):
    r = np.random.default_rng(35)
    x = r.beta(0.6, 1.5, 50)
    w = r.random(50) + 0.1
    w /= w.sum()
    h = 0.2
    kde = KDE(x, bandwidth=h, weights=w, bounds=bounds, boundary=boundary)
    want = np.zeros(50)
    for s, t in maps:
        z = (s * x[:, None] + t - x[None, :]) / h
        k = np.exp(-0.5 * z * z) / (h * SQ2PI)
        np.fill_diagonal(k, 0.0)
        want += k @ w
    want /= 1 - w
    np.testing.assert_allclose(kde.loo_logpdf(), np.log(want), rtol=1e-12)


# ---------------------------------------------------------------------------------------
# Bad input: each a ValueError/TypeError naming the argument; nothing mutated.


@pytest.mark.parametrize(
    "bounds, match",
    [
        ((0.5, 1.0), "exclude"),
        ([(None, 0.5)], "exclude"),
        ((1.0, 0.0), "low < high"),
        ((0.3, 0.3), "low < high"),
        ([(0, 1), (0, 1)], "one \\(low, high\\) pair per dimension"),
        ([], "one \\(low, high\\) pair"),
        ([(0, 1, 2)], "bounds"),
        ((np.nan, 1.0), "NaN"),
        ("0,1", "bounds"),
        ([("a", 1)], "bounds"),
        ([(0j, 1)], "bounds"),
        (5.0, "bounds"),
        ((-1e308, 1e308), "overflows"),
    ],
)
def test_bad_bounds(bounds, match):
    x = np.random.default_rng(16).random(20)
    x_copy = x.copy()
    with pytest.raises((ValueError, TypeError), match=match) as e:
        KDE(x, bounds=bounds)
    assert "bounds" in str(e.value)
    np.testing.assert_array_equal(x, x_copy)


@pytest.mark.parametrize("bounds", [(0, None), (None, 1), (-np.inf, 1.0), (0.0, np.inf)])
def test_periodic_bounds_must_be_finite(bounds):
    with pytest.raises(ValueError, match="periodic bounds must be finite"):
        KDE(np.random.default_rng(17).random(10), bounds=bounds, boundary="periodic")


@pytest.mark.parametrize("boundary", ["wrap", None, 1, True, "Reflect"])
def test_bad_boundary(boundary):
    with pytest.raises(ValueError, match="boundary"):
        KDE(np.random.default_rng(17).random(10), bounds=(0, 1), boundary=boundary)


def test_kde_grid_bad_bounds():
    with pytest.raises(ValueError, match="bounds"):
        divest.kde_grid(np.random.default_rng(1).random(10), bounds=(0.5, 1))


# ---------------------------------------------------------------------------------------
# Degenerate data.


def test_constant_column_error_names_it_and_the_options():
    r = np.random.default_rng(20)
    x = np.column_stack([r.standard_normal(30), np.full(30, 2.5), r.standard_normal(30)])
    with pytest.raises(ValueError, match="singular") as e:
        KDE(x)
    msg = str(e.value)
    assert "Constant column(s): [1]" in msg
    assert "degenerate='hull'" in msg and "degenerate='regularize'" in msg
    assert not isinstance(e.value, np.linalg.LinAlgError)


def test_collinear_error_names_the_combination():
    r = np.random.default_rng(21)
    a = r.standard_normal(40)
    x = np.column_stack([a, r.standard_normal(40), 2.0 * a + 1.0])
    with pytest.raises(ValueError, match="singular") as e:
        KDE(x)
    msg = str(e.value)
    # 2·x0 − x2 ≈ const, normalised so that the largest coefficient is ±1.
    assert "x[:, 0]" in msg and "x[:, 2]" in msg and "x[:, 1]" not in msg.split("combination")[1]
    assert "0.5" in msg and "≈ const" in msg


def test_d_greater_than_n_error():
    x = np.random.default_rng(22).standard_normal((3, 5))
    with pytest.raises(ValueError, match="span at most 2 of the 5 dimensions"):
        KDE(x)


def test_hull_density_on_a_line_is_the_1d_kde_over_arclength():
    r = np.random.default_rng(23)
    t = r.standard_normal(50)
    x = np.column_stack([t, 2.0 * t + 1.0])
    kde = KDE(x, degenerate="hull")
    ref = KDE(t)
    tq = np.linspace(-3, 3, 41)
    q = np.column_stack([tq, 2.0 * tq + 1.0])
    np.testing.assert_allclose(kde.logpdf(q), ref.logpdf(tq) - 0.5 * math.log(5.0), rtol=1e-10)
    assert np.all(kde.logpdf(np.array([[0.0, 0.0]])) == -np.inf)  # off the line
    s = kde.resample(200, rng=0)
    np.testing.assert_allclose(s[:, 1], 2.0 * s[:, 0] + 1.0, atol=1e-12)
    # The score along the line, projected: d/dt log f = (1, 2)·score.
    g = kde.score(q[5:8])
    np.testing.assert_allclose(g @ np.array([1.0, 2.0]), ref.score(tq[5:8])[:, 0], rtol=1e-8)
    assert kde.bandwidth.shape == (2, 2)
    with pytest.raises(ValueError, match="affine hull"):
        kde.cdf(q)
    with pytest.raises(ValueError, match="affine hull"):
        kde.grid(64)


def test_hull_with_a_constant_column_and_d_greater_than_n():
    r = np.random.default_rng(24)
    x = np.column_stack([r.standard_normal(20), np.full(20, 3.0)])
    kde = KDE(x, degenerate="hull")
    q = np.column_stack([np.linspace(-2, 2, 9), np.full(9, 3.0)])
    np.testing.assert_allclose(kde.logpdf(q), KDE(x[:, 0]).logpdf(q[:, 0]), rtol=1e-10)
    assert np.all(kde.logpdf(q + [0, 1e-3]) == -np.inf)
    y = r.standard_normal((4, 6))
    k2 = KDE(y, degenerate="hull")
    assert np.isfinite(k2.logpdf(y)).all()
    with pytest.raises(ValueError, match="coincide"):
        KDE(np.ones((5, 2)), degenerate="hull")


def test_regularize_is_the_documented_covariance():
    r = np.random.default_rng(25)
    a = r.standard_normal(40)
    x = np.column_stack([a, 3.0 * a, np.full(40, 7.0)])
    kde = KDE(x, degenerate="regularize")
    cov = np.cov(x.T)
    v = np.diag(cov).copy()
    v[2] = math.exp(np.mean(np.log(v[:2])))
    want = kde.factor**2 * (cov + 1e-3 * np.diag(v))
    np.testing.assert_allclose(kde.bandwidth, want, rtol=1e-10, atol=1e-15)
    assert np.isfinite(kde.logpdf(x + 0.01)).all()
    s = kde.resample(10, rng=0)
    assert np.isfinite(s).all()


@pytest.mark.parametrize("degenerate", ["Hull", None, 0, "none"])
def test_bad_degenerate(degenerate):
    with pytest.raises(ValueError, match="degenerate"):
        KDE(np.random.default_rng(1).random((10, 2)), degenerate=degenerate)


def test_regular_data_ignore_degenerate():
    x = np.random.default_rng(26).standard_normal((30, 2))
    q = x[:5] + 0.1
    base = KDE(x).logpdf(q)
    for opt in ("hull", "regularize"):
        np.testing.assert_array_equal(KDE(x, degenerate=opt).logpdf(q), base)


def test_degenerate_with_loo_is_a_clear_error():
    a = np.random.default_rng(27).standard_normal(30)
    x = np.column_stack([a, 2 * a])
    with pytest.raises(ValueError, match="not to bandwidth='loo'"):
        KDE(x, bandwidth="loo", degenerate="hull")


def test_kde_logpdf_one_shot_takes_bounds_and_degenerate():
    x = np.random.default_rng(28).random(50)
    q = np.linspace(0, 1, 7)
    np.testing.assert_array_equal(
        divest.kde_logpdf(x, q, bounds=(0, 1)), KDE(x, bounds=(0, 1)).logpdf(q)
    )
    y = np.column_stack([x, np.zeros(50)])
    qq = np.column_stack([q, np.zeros(7)])
    np.testing.assert_array_equal(
        divest.kde_logpdf(y, qq, degenerate="hull"), KDE(y, degenerate="hull").logpdf(qq)
    )


def test_bounded_inputs_are_not_modified_and_float32_stays_float32():
    x = np.random.default_rng(29).random((40, 2)).astype(np.float32)
    b = np.array([[0.0, 1.0], [0.0, np.inf]])
    xc, bc = x.copy(), b.copy()
    kde = KDE(x, bounds=b)
    q = x[:5]
    assert kde.logpdf(q).dtype == np.float32
    assert kde.resample(3, rng=0).dtype == np.float32
    np.testing.assert_array_equal(x, xc)
    np.testing.assert_array_equal(b, bc)
    np.testing.assert_allclose(
        kde.logpdf(q), KDE(x.astype(np.float64), bounds=b).logpdf(q.astype(np.float64)), rtol=1e-5
    )


def test_a_bandwidth_far_wider_than_the_interval_is_a_clear_error():
    x = np.random.default_rng(30).random(20)
    with pytest.raises(ValueError, match="bandwidth.*wide relative to"):
        KDE(x, bandwidth=1e4, bounds=(0, 1))
    # Wide but manageable: the estimate is then nearly uniform (value 1 on [0, 1]).
    kde = KDE(x, bandwidth=20.0, bounds=(0, 1))
    np.testing.assert_allclose(kde.pdf(np.linspace(0, 1, 5)), 1.0, rtol=1e-3)
    kp = KDE(x, bandwidth=20.0, bounds=(0, 1), boundary="periodic")
    np.testing.assert_allclose(kp.pdf(np.linspace(0, 1, 5)), 1.0, rtol=1e-12)


@pytest.mark.parametrize("kernel", ["gaussian", "exponential", "epanechnikov", "cosine"])
@pytest.mark.parametrize("boundary", ["reflect", "periodic"])
def test_2d_radial_kernels_against_brute_force_images(kernel, boundary):
    from divest.kde import log_kernel_norm

    r = np.random.default_rng(31)
    x = np.column_stack([r.random(40), r.random(40) * 2])
    q = np.column_stack([r.random(30), r.random(30) * 2])
    h = np.array([0.3, 0.5])
    L = np.array([1.0, 2.0])
    K = 12  # beyond: below e^-40 of the density for every kernel here
    if boundary == "reflect":
        maps = [
            [(1, 2 * k * L[j]) for k in range(-K, K + 1)]
            + [(-1, 2 * k * L[j]) for k in range(-K, K + 1)]
            for j in range(2)
        ]
    else:
        maps = [[(1, k * L[j]) for k in range(-K, K + 1)] for j in range(2)]
    prof = {
        "exponential": lambda t: np.exp(-t),
        "epanechnikov": lambda t: np.maximum(1 - t * t, 0),
        "gaussian": lambda t: np.exp(-0.5 * t * t),
        "cosine": lambda t: np.where(t < 1, np.cos(np.pi * t / 2), 0),
    }[kernel]
    want = np.zeros(30)
    for s0, t0 in maps[0]:
        z0 = (s0 * q[:, 0, None] + t0 - x[None, :, 0]) / h[0]
        for s1, t1 in maps[1]:
            z1 = (s1 * q[:, 1, None] + t1 - x[None, :, 1]) / h[1]
            want += prof(np.sqrt(z0 * z0 + z1 * z1)).mean(1)
    want /= math.exp(log_kernel_norm(kernel, 2)) * h[0] * h[1]
    kde = KDE(x, bandwidth=h, kernel=kernel, bounds=[(0, 1), (0, 2)], boundary=boundary)
    np.testing.assert_allclose(kde.pdf(q), want, rtol=1e-13)
    if kernel == "gaussian":
        assert kde.integrate_box([0, 0], [1, 2]) == pytest.approx(1.0, abs=1e-14)
        # A sub-box by 2-D Gauss-Legendre of the density.
        gx, gw = np.polynomial.legendre.leggauss(60)
        u, v = 0.25 * gx + 0.25, 0.5 * gx + 0.5
        uu, vv = np.meshgrid(u, v, indexing="ij")
        dens = kde.pdf(np.column_stack([uu.ravel(), vv.ravel()])).reshape(60, 60)
        quad2 = float(gw @ dens @ gw) * 0.25 * 0.5
        assert kde.cdf(np.array([[0.5, 1.0]]))[0] == pytest.approx(quad2, abs=1e-12)


def test_zero_weights_and_periodic_ppf():
    r = np.random.default_rng(32)
    x = r.random(30)
    w = r.random(30)
    w[:5] = 0.0
    kde = KDE(x, bandwidth=0.1, weights=w, bounds=(0, 1), boundary="periodic")
    ref = KDE(x[5:], bandwidth=0.1, weights=w[5:], bounds=(0, 1), boundary="periodic")
    q = np.linspace(0, 1, 11)
    np.testing.assert_allclose(kde.logpdf(q), ref.logpdf(q), rtol=1e-13)
    p = np.array([0.1, 0.5, 0.9])
    v = kde.ppf(p)
    assert np.all((v >= 0) & (v <= 1))
    np.testing.assert_allclose(kde.cdf(v), p, atol=1e-12)
    assert kde.ppf(0.0) == 0.0 and kde.ppf(1.0) == 1.0


@pytest.mark.parametrize("bounds", [(0, None), (0, 1)])
def test_binned_grid_error_estimate_tracks_the_true_error(bounds):
    r = np.random.default_rng(33)
    x = r.exponential(0.5, 100_000)
    x = x[x <= 1.0]
    kde = KDE(x, bandwidth=0.03, bounds=bounds)
    gb = kde.grid(2048, method="binned")
    ge = kde.grid(2048, method="exact")
    true = float(np.max(np.abs(gb.values - ge.values)))
    assert 0.5 * true <= gb.error <= 2.0 * true


@pytest.mark.parametrize(
    "bounds, boundary", [((0, None), "reflect"), ((0, 2), "reflect"), ((0, 2), "periodic")]
)
def test_sorted_1d_path_agrees_with_brute_force(bounds, boundary):
    # n·m ≥ 2^20: the unbounded estimate takes its sorted 1-D path for the images too.
    r = np.random.default_rng(34)
    x = np.minimum(r.exponential(0.7, 3000), 2.0)
    h = 0.08
    kde = KDE(x, bandwidth=h, bounds=bounds, boundary=boundary)
    q = np.linspace(0, 2, 700)
    if boundary == "periodic":
        maps = [(1.0, 2.0 * k) for k in range(-3, 4)]
    elif bounds[1] is None:
        maps = [(1.0, 0.0), (-1.0, 0.0)]
    else:
        maps = _interval_maps(0.0, 2.0, 3)
    want = _gauss_image_sum(q, x, np.full(3000, 1 / 3000), h, maps)
    np.testing.assert_allclose(kde.pdf(q), want, rtol=1e-11)
    # The two-pass route (with the ESS, which the sorted path does not give) agrees.
    lp, _ = kde.logpdf(q, return_ess=True)
    np.testing.assert_allclose(lp, np.log(want), rtol=1e-11)


def test_per_dimension_boundary_angle_and_radius():
    r = np.random.default_rng(36)
    ang = r.vonmises(2.0, 1.0, 60) + math.pi  # in [0, 2π]
    rad = r.exponential(1.0, 60)
    x = np.column_stack([ang, rad])
    h = np.array([0.6, 0.3])
    kde = KDE(
        x, bandwidth=h, bounds=[(0, 2 * math.pi), (0, None)], boundary=["periodic", "reflect"]
    )
    q = np.column_stack([r.random(40) * 2 * math.pi, r.random(40) * 3])
    want = np.zeros(40)
    for k in range(-6, 7):
        z0 = (q[:, 0, None] + 2 * math.pi * k - x[None, :, 0]) / h[0]
        for s1 in (1, -1):
            z1 = (s1 * q[:, 1, None] - x[None, :, 1]) / h[1]
            want += np.exp(-0.5 * (z0 * z0 + z1 * z1)).mean(1) / (2 * math.pi * h[0] * h[1])
    np.testing.assert_allclose(kde.pdf(q), want, rtol=1e-12)
    assert kde.integrate_box([0, 0], [2 * math.pi, np.inf]) == pytest.approx(1.0, abs=1e-13)
    s = kde.resample(5000, rng=2)
    assert np.all((s[:, 0] >= 0) & (s[:, 0] <= 2 * math.pi) & (s[:, 1] >= 0))
    m = kde.marginal(1)
    assert m.boundary == "reflect"
    ref = KDE(rad, bandwidth=h[1], bounds=(0, None))
    np.testing.assert_allclose(m.logpdf(q[:, 1]), ref.logpdf(q[:, 1]), rtol=1e-12)
    with pytest.raises(ValueError, match="boundary"):
        KDE(x, bounds=[(0, 7), (0, None)], boundary=["periodic"])
    with pytest.raises(ValueError, match="periodic bounds must be finite"):
        KDE(x, bounds=[(0, 7), (0, None)], boundary=["periodic", "periodic"])


# ---------------------------------------------------------------------------------------
# bandwidth="loo" with bounds: the bounded estimate's leave-one-out likelihood.


def _brute_loo_loglik(x, w, h0, factors, maps, logprof, norm):
    """Σ_i w_i log p̂_{−i}(x_i) of the folded 1-D estimate for each factor, plainly (in
    log space: log-sum-exp over the images and the other points)."""
    out = []
    for f in factors:
        h = f * h0
        with np.errstate(divide="ignore"):
            terms = (
                np.stack([logprof(np.abs((s * x[:, None] + t - x[None, :]) / h)) for s, t in maps])
                + np.log(w)[None, None, :]
            )
        idx = np.arange(x.size)
        terms[:, idx, idx] = -np.inf
        top = terms.max(axis=(0, 2))
        safe = np.where(np.isfinite(top), top, 0.0)
        with np.errstate(divide="ignore"):
            lse = np.log(np.exp(terms - safe[None, :, None]).sum(axis=(0, 2))) + safe
        loo = lse - math.log(h * norm) - np.log1p(-w)
        out.append(float(np.sum(w * loo)))
    return np.array(out)


@pytest.mark.parametrize(
    "bounds, boundary, kernel",
    [
        ((0, None), "reflect", "gaussian"),
        ((0, None), "reflect", "epanechnikov"),
        ((0, 1), "reflect", "gaussian"),
        ((0, 1), "periodic", "gaussian"),
    ],
)
def test_loo_bandwidth_maximises_the_bounded_loo_likelihood(bounds, boundary, kernel):
    r = np.random.default_rng(37)
    n = 80
    if bounds[1] is None:
        x = r.exponential(0.25, n)
    elif boundary == "periodic":  # an angle around 0 ≡ 1: mass at both ends
        x = np.mod(r.normal(0.0, 0.12, n), 1.0)
    else:
        x = r.beta(0.7, 2.0, n)
    w = r.random(n) + 0.3
    w /= w.sum()
    # Scott's variance with the weights' effective size, written out.
    neff = 1.0 / np.sum(w * w)
    mean = w @ x
    var = np.sum(w * (x - mean) ** 2) / (1.0 - np.sum(w * w))
    h0 = math.sqrt(var) * neff ** (-1.0 / 5.0)
    factors = np.geomspace(0.05, 4.0, 32)
    if boundary == "periodic":
        maps = [(1.0, float(k)) for k in range(-40, 41)]
    elif bounds[1] is None:
        maps = [(1.0, 0.0), (-1.0, 0.0)]
    else:
        maps = _interval_maps(0.0, 1.0, 40)
    if kernel == "gaussian":
        logprof, norm = (lambda t: -0.5 * t * t), SQ2PI
    else:
        logprof, norm = (lambda t: np.log(np.maximum(1.0 - t * t, 0.0))), 4.0 / 3.0
    want = _brute_loo_loglik(x, w, h0, factors, maps, logprof, norm)
    sel = divest.select_bandwidth(
        x, kernel=kernel, weights=w, bounds=bounds, boundary=boundary, warn_edge=False
    )
    np.testing.assert_allclose(sel.base[0, 0], h0 * h0, rtol=1e-12)
    fin = np.isfinite(want)
    np.testing.assert_array_equal(np.isfinite(sel.loglik), fin)
    np.testing.assert_allclose(sel.loglik[fin], want[fin], rtol=1e-10)
    best = factors[int(np.argmax(want))]
    assert sel.factor == best
    # The unbounded selection scores other densities and picks another factor.
    free = divest.select_bandwidth(x, kernel=kernel, weights=w, warn_edge=False)
    assert free.factor != best
    kde = KDE(x, bandwidth="loo", kernel=kernel, weights=w, bounds=bounds, boundary=boundary)
    np.testing.assert_allclose(kde.bandwidth, [[(best * h0) ** 2]], rtol=1e-12)
    assert kde.selection.factor == best
    # The selected estimate's own LOO agrees with the selection's curve.
    np.testing.assert_allclose(
        float(np.sum(w * kde.loo_logpdf())), sel.loglik[np.argmax(want)], rtol=1e-10
    )


def test_loo_bandwidth_with_bounds_in_2d_against_loo_logpdf():
    # Per factor, the selection's curve is Σ w_i loo_logpdf_i of the bounded KDE with that
    # bandwidth (which test_loo_logpdf_leaves_out_every_own_image checks by brute force).
    r = np.random.default_rng(38)
    x = np.column_stack([r.random(50), r.standard_normal(50)])
    grid = np.array([0.3, 0.6, 1.0, 1.7])
    sel = divest.select_bandwidth(x, grid, bounds=[(0, 1), None], warn_edge=False)
    for f, ll in zip(grid, sel.loglik):
        kde = KDE(x, bandwidth=sel.base * f * f, bounds=[(0, 1), None])
        assert float(np.mean(kde.loo_logpdf())) == pytest.approx(ll, rel=1e-10)
    with pytest.raises(ValueError, match="bounds"):
        divest.select_bandwidth(x, bounds=[(0.5, 1), None])
    with pytest.raises(ValueError, match="boundary"):
        divest.select_bandwidth(x, bounds=[(0, 1), None], boundary="wrap")


# ---------------------------------------------------------------------------------------
# grid(rtol=...) with bounds: refinement of the folded grid.


@pytest.mark.parametrize(
    "bounds, boundary, d",
    [((0, None), "reflect", 1), ((0, 1), "reflect", 1), ((0, 1), "periodic", 1), (None, "", 2)],
)
def test_rtol_with_bounds_against_the_exact_bounded_grid(bounds, boundary, d):
    r = np.random.default_rng(39)
    if d == 1:
        x = np.minimum(r.exponential(0.3, 5000), 1.0)
        kde = KDE(x, bandwidth=0.05, bounds=bounds, boundary=boundary)
        pts = 150
    else:
        x = np.column_stack([r.beta(0.8, 2.0, 3000), r.standard_normal(3000)])
        kde = KDE(x, bandwidth=[0.06, 0.3], bounds=[(0, 1), None])
        pts = (60, 40)
    coarse = kde.grid(pts, method="binned")
    peak = coarse.values.max()
    rtol = coarse.error / peak / 20
    got = kde.grid(pts, method="binned", rtol=rtol)
    exact = kde.grid(pts, method="exact")
    assert got.values.shape == coarse.values.shape and got.method == "binned"
    if d == 1:
        np.testing.assert_allclose(got.grid, exact.grid, rtol=0, atol=1e-15)
    else:
        for a, b in zip(got.grid, exact.grid):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-15)
    # The exact bounded grid is the image sum (checked against brute force elsewhere).
    true = float(np.max(np.abs(got.values - exact.values)))
    true_coarse = float(np.max(np.abs(coarse.values - exact.values)))
    assert got.error <= rtol * got.values.max()
    assert true <= 2 * rtol * got.values.max()
    assert 0.5 * true <= got.error <= 2.0 * true
    assert true < true_coarse / 5
    # The one-shot call refines the same way; exact grids need no refinement.
    if d == 1:
        one = divest.kde_grid(
            x,
            bandwidth=0.05,
            n_points=pts,
            method="binned",
            rtol=rtol,
            bounds=bounds,
            boundary=boundary,
        )
        np.testing.assert_allclose(one.values, got.values, rtol=1e-12, atol=1e-15)
    e2 = kde.grid(pts, method="exact", rtol=1e-9)
    np.testing.assert_array_equal(e2.values, exact.values)


def test_rtol_with_bounds_bad_input():
    kde = KDE(np.random.default_rng(40).random(200), bandwidth=0.05, bounds=(0, 1))
    for bad, exc in [(0.0, ValueError), (-1.0, ValueError), ("a", TypeError)]:
        with pytest.raises(exc, match="rtol"):
            kde.grid(64, rtol=bad)
    with pytest.raises(ValueError, match="rtol.*refined"):
        kde.grid(8, method="binned", rtol=1e-11)
    with pytest.raises(TypeError, match="log"):
        kde.grid(64, log="yes", rtol=1e-3)


# ---------------------------------------------------------------------------------------
# The 1-D sorted path evaluates every image in one pass (n·m ≥ 2^20).


@pytest.mark.parametrize("kernel", ["gaussian", "exponential", "epanechnikov", "cosine", "tophat"])
@pytest.mark.parametrize(
    "bounds, boundary", [((0, None), "reflect"), ((0, 3), "reflect"), ((0, 3), "periodic")]
)
def test_one_pass_folded_1d_path_against_brute_force_and_the_image_route(kernel, bounds, boundary):
    from divest.kde import log_kernel_norm

    r = np.random.default_rng(41)
    n = 1300
    x = np.minimum(r.exponential(0.2, n), 3.0)
    w = r.random(n) + 0.2
    w /= w.sum()
    h = 0.05
    # Inside the data, at the bounds, and far from every data point (tails: 40 to 58
    # bandwidths from the data's upper end, still inside the bounds).
    q = np.concatenate([r.random(400) * 1.5, [0.0, 3.0, 1e-9], np.linspace(2.0, 2.9, 20)])
    q = np.tile(q, 2)
    assert n * q.size >= 1 << 20
    kde = KDE(x, bandwidth=h, kernel=kernel, weights=w, bounds=bounds, boundary=boundary)
    # Images beyond these are more than 60 bandwidths from every query's data.
    if boundary == "periodic":
        maps = [(1.0, 3.0 * k) for k in range(-1, 2)]
    elif bounds[1] is None:
        maps = [(1.0, 0.0), (-1.0, 0.0)]
    else:
        maps = _interval_maps(0.0, 3.0, 1)
    logprof = {
        "gaussian": lambda t: -0.5 * t * t,
        "exponential": lambda t: -t,
        "epanechnikov": lambda t: np.log(np.maximum(1 - t * t, 0)),
        "cosine": lambda t: np.log(np.where(t < 1, np.cos(np.pi * np.minimum(t, 1) / 2), 0)),
        "tophat": lambda t: np.where(t < 1, 0.0, -np.inf),
    }[kernel]
    with np.errstate(divide="ignore"):
        terms = np.concatenate(
            [logprof(np.abs(s * q[:, None] + t - x[None, :]) / h) for s, t in maps], axis=1
        ) + np.tile(np.log(w), len(maps))
    top = terms.max(axis=1)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        want = np.log(np.exp(terms - safe[:, None]).sum(axis=1)) + safe
    want = want - log_kernel_norm(kernel, 1) - math.log(h)
    got = kde.logpdf(q)
    fin = np.isfinite(want)
    np.testing.assert_array_equal(np.isfinite(got), fin)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-11, atol=1e-11)
    # The image-by-image route (taken with the ESS) gives the same values.
    old = kde.logpdf(q, return_ess=True)[0]
    np.testing.assert_allclose(got[fin], old[fin], rtol=1e-11, atol=1e-11)


def test_one_pass_half_line_reflected_gaussian_closed_form():
    # One data point at c on [0, ∞): f(q) = (φ((q − c)/h) + φ((q + c)/h))/h, repeated
    # so that n·m is large enough for the sorted path; far queries included.
    c, h = 0.3, 0.1
    x = np.full(1100, c)
    q = np.concatenate([np.linspace(0, 2, 900), [5.0, 9.0, 30.0]])
    want = np.logaddexp(-0.5 * ((q - c) / h) ** 2, -0.5 * ((q + c) / h) ** 2) - math.log(h * SQ2PI)
    got = KDE(x, bandwidth=h, bounds=(0, None)).logpdf(q)
    np.testing.assert_allclose(got, want, rtol=1e-12)


# ---------------------------------------------------------------------------------------
# The exponential kernel in d ≥ 2: images pruned by a proven bound.


def _exp2d_brute_logpdf(q, x, h, maps0):
    """log of Σ_i (1/n) Σ_g e^{−|(g q − x_i)/h|} / norm, dim 0 folded by maps0, dim 1 free."""
    from divest.kde import log_kernel_norm

    terms = []
    for s, t in maps0:
        z0 = (s * q[:, 0, None] + t - x[None, :, 0]) / h[0]
        z1 = (q[:, 1, None] - x[None, :, 1]) / h[1]
        terms.append(-np.sqrt(z0 * z0 + z1 * z1))
    t = np.concatenate(terms, axis=1)
    top = t.max(axis=1)
    lse = np.log(np.exp(t - top[:, None]).sum(axis=1)) + top
    return lse - math.log(x.shape[0]) - log_kernel_norm("exponential", 2) - math.log(h[0] * h[1])


def test_exponential_2d_keeps_an_image_the_termwise_heuristic_would_drop():
    # Data near (35, 0), half-line [0, ∞) in dim 0, dim 1 free, unit bandwidths. At
    # q = (25, R) the reflection −25 is 60 bandwidths from the data and the identity 10,
    # so the per-coordinate bound u − v = 50 exceeds the 45.7-nat cut; but the kernel
    # depends on the Euclidean distance: for R = 10⁴ the image's terms are e^{−0.175}
    # of the identity's, not e^{−50} (and 4e-10 of it at R = 100).
    r = np.random.default_rng(42)
    x = np.column_stack([35.0 + 0.2 * r.random(20), 0.1 * r.standard_normal(20)])
    h = np.array([1.0, 1.0])
    kde = KDE(x, bandwidth=h, kernel="exponential", bounds=[(0, None), None])
    fold = kde._fold
    assert fold.cost(0, -1.0, 0.0, np.array([25.0]))[0] > fold.threshold
    q = np.array([[25.0, R] for R in (0.0, 30.0, 100.0, 1e3, 1e4)] + [[0.5, 1e4], [80.0, 50.0]])
    want = _exp2d_brute_logpdf(q, x, h, [(1.0, 0.0), (-1.0, 0.0)])
    got = kde.logpdf(q)
    np.testing.assert_allclose(got, want, rtol=1e-13)
    assert want[4] - _exp2d_brute_logpdf(q[4:5], x, h, [(1.0, 0.0)])[0] > 0.5  # not small
    # The score and the grid (log values on an exact grid far out) use the same test.
    g = kde.grid((9, 3), extent=[(20.0, 30.0), (9999.0, 10001.0)], method="exact", log=True)
    mesh = np.stack([v.ravel() for v in np.meshgrid(*g.grid, indexing="ij")], axis=1)
    np.testing.assert_allclose(
        g.values.ravel(), _exp2d_brute_logpdf(mesh, x, h, [(1.0, 0.0), (-1.0, 0.0)]), rtol=1e-12
    )
    eps = 1e-6
    fd = (kde.logpdf(q[:3] + [eps, 0]) - kde.logpdf(q[:3] - [eps, 0])) / (2 * eps)
    np.testing.assert_allclose(kde.score(q[:3])[:, 0], fd, rtol=1e-5, atol=1e-7)


def test_exponential_2d_periodic_deep_tail_needs_many_periods():
    # A circle of period 10 (unit bandwidth) and a free dimension: at R = 2000 bandwidths
    # the images up to ~400 bandwidths (40 periods) matter; the map list grows to cover
    # them (the construction-time list holds 3).
    r = np.random.default_rng(43)
    x = np.column_stack([10 * r.random(15), r.standard_normal(15)])
    h = np.array([1.0, 1.0])
    kde = KDE(x, bandwidth=h, kernel="exponential", bounds=[(0, 10), None], boundary="periodic")
    q = np.array([[1.0, 0.0], [5.0, 50.0], [3.0, 2000.0], [9.9, -2000.0]])
    want = _exp2d_brute_logpdf(q, x, h, [(1.0, 10.0 * k) for k in range(-80, 81)])
    np.testing.assert_allclose(kde.logpdf(q), want, rtol=1e-13)
    # Far enough out, the needed list passes the 4096 limit: a clear error.
    with pytest.raises(ValueError, match="exponential kernel"):
        kde.logpdf(np.array([[3.0, 1e9]]))


def test_loo_bandwidth_exponential_2d_with_bounds_against_loo_logpdf():
    r = np.random.default_rng(44)
    x = np.column_stack([r.random(40), r.exponential(1.0, 40)])
    grid = np.array([0.4, 0.8, 1.5])
    b = [(0, 1), (0, None)]
    sel = divest.select_bandwidth(x, grid, kernel="exponential", bounds=b, warn_edge=False)
    for f, ll in zip(grid, sel.loglik):
        kde = KDE(x, bandwidth=sel.base * f * f, kernel="exponential", bounds=b)
        assert float(np.mean(kde.loo_logpdf())) == pytest.approx(ll, rel=1e-12)


@pytest.mark.parametrize("d, boundary", [(2, "reflect"), (3, "reflect"), (2, "periodic")])
def test_nd_block_pass_at_the_pruning_edge_against_explicit_log_sums(d, boundary):
    # Data piled against the boundary and queries at the boundary, just inside it and
    # about the pruning reach (sqrt(2·45) ≈ 9.5 bandwidths) away, with weights spanning
    # e^-30: images and blocks sit on both sides of the skip threshold. The explicit sum
    # over every image and point is taken in log space (no underflow), so far-tail
    # queries are checked in relative terms too.
    r = np.random.default_rng(41)
    n = 700
    x = r.random((n, d))
    x[: n // 2, 1] = r.random(n // 2) * 0.02  # a slab at the lower boundary
    w = np.exp(-30 * r.random(n))
    h = np.full(d, 0.05)
    reach = math.sqrt(2 * 45) * 0.05
    qa = r.random((60, d))
    qa[:20, 1] = 0.0
    qa[20:40, 1] = np.minimum(reach * (0.9 + 0.2 * r.random(20)), 1.0)
    qa[40:, 1] = 1e-9
    if boundary == "reflect":
        bounds = [(0, 1)] * d
        maps1 = [(1, 2 * k) for k in range(-2, 3)] + [(-1, 2 * k) for k in range(-2, 3)]
    else:
        bounds = [(None, None), (0, 1)] + [(None, None)] * (d - 2)
        maps1 = [(1, k) for k in range(-3, 4)]
    per_dim = [maps1 if bounds[j][0] is not None else [(1, 0)] for j in range(d)]
    logw = np.log(w / w.sum())
    terms = []
    for combo in product(*per_dim):
        s = np.array([c[0] for c in combo], dtype=float)
        t = np.array([c[1] for c in combo], dtype=float)
        z = (qa * s + t)[:, None, :] - x[None, :, :]
        terms.append(-0.5 * np.sum((z / h) ** 2, axis=2) + logw[None, :])
    terms = np.concatenate(terms, axis=1)
    top = terms.max(axis=1)
    want = top + np.log(np.exp(terms - top[:, None]).sum(axis=1))
    want -= 0.5 * d * math.log(2 * math.pi) + np.sum(np.log(h))
    kde = KDE(x, bandwidth=h, weights=w, bounds=bounds, boundary=boundary)
    got = kde.logpdf(qa)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
