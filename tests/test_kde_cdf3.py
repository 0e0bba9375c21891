"""KDE.cdf / integrate_box with a full (non-diagonal) Gaussian bandwidth in 3-D (issue 11):
the trivariate normal CDF (Rust, core/kdebox.rs: Plackett's identity) against independent
oracles: conditioning on one variable with SciPy's adaptive quadrature over it and SciPy's
bivariate normal CDF (Genz's bvnu) for the other two, the closed-form orthant probability,
and nested adaptive quadrature for far-tail relative accuracy."""

import math
import os
import sys

import numpy as np
import pytest

import divest
from divest import _core

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _kdecalc_numpy as old  # noqa: E402  (the former NumPy path, an oracle)

st = pytest.importorskip("scipy.stats")
integrate = pytest.importorskip("scipy.integrate")
special = pytest.importorskip("scipy.special")


def _corr(chol):
    h = chol @ chol.T
    s = np.sqrt(np.diag(h))
    return h / np.outer(s, s)


def _oracle(h, r):
    """P(X ≤ h), X ~ N(0, r): ∫ φ(x) P(Xj ≤ hj, Xk ≤ hk | Xi = x) dx over x ≤ hi, Xi the
    variable least correlated with the others, adaptive quadrature split where the
    conditional limits cross 0."""
    h = np.asarray(h, dtype=float)
    i = min(range(3), key=lambda q: max(abs(r[q, p]) for p in range(3) if p != q))
    j, k = (q for q in range(3) if q != i)
    rj, rk = r[i, j], r[i, k]
    aj, ak = math.sqrt(1 - rj * rj), math.sqrt(1 - rk * rk)
    rho = (r[j, k] - rj * rk) / (aj * ak)
    mv = st.multivariate_normal(mean=[0, 0], cov=[[1, rho], [rho, 1]])

    def f(x):
        a = (h[j] - rj * x) / aj
        b = (h[k] - rk * x) / ak
        if a == np.inf and b == np.inf:
            v = 1.0
        elif a == np.inf:
            v = special.ndtr(b)
        elif b == np.inf:
            v = special.ndtr(a)
        else:
            v = mv.cdf([a, b])
        return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi) * v

    lo, hi = -40.0, min(h[i], 40.0)
    if hi <= lo:
        return 0.0
    pts = sorted(
        h[q] / rq
        for q, rq in ((j, rj), (k, rk))
        if rq != 0 and np.isfinite(h[q]) and lo < h[q] / rq < hi
    )
    with np.errstate(all="ignore"):
        return integrate.quad(f, lo, hi, points=pts or None, epsabs=1e-16, epsrel=1e-13, limit=400)[
            0
        ]


class _Tvn:
    """Test access to the Rust per-point trivariate CDF for one factor ``chol``."""

    def __init__(self, chol):
        self.chol = np.ascontiguousarray(chol, dtype=float)
        self.sine = old._Tvn(self.chol).sine  # √(1 − r²) from cross products of rows

    def cdf(self, h0, h1, h2):
        h = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (h0, h1, h2)))
        shape = h[0].shape
        out = _core.tvn_cdf(self.chol, np.ascontiguousarray(np.stack([v.ravel() for v in h], 1)))
        return out.reshape(shape) if shape else float(out[0])


def _bvn_cdf(u, v, r, a):
    u, v = np.broadcast_arrays(np.asarray(u, dtype=float), np.asarray(v, dtype=float))
    return _core.bvn_cdf(np.ascontiguousarray(np.stack([u.ravel(), v.ravel()], 1)), r, a)


def _chol_from(a):
    return np.linalg.cholesky(a @ a.T)


# Correlation structures: moderate, strong positive / negative pairs (|r| up to 0.999),
# all three strong, and nearly singular (one row almost a combination of the others).
_MATS = {
    "moderate": np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [-0.3, 0.4, 0.866]]),
    "pair_0.999": np.array([[1.0, 0.0, 0.0], [0.999, 0.0447, 0.0], [0.3, -0.2, 0.93]]),
    "neg_0.995": np.array([[1.0, 0.0, 0.0], [-0.2, 0.98, 0.0], [0.1, -0.995, 0.05]]),
    "all_strong": np.array([[1.0, 0.0, 0.0], [0.97, 0.243, 0.0], [-0.95, 0.2, 0.24]]),
    "near_singular": np.array([[1.0, 0.0, 0.0], [0.5, 0.866, 0.0], [0.8, -0.59, 0.02]]),
}


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("name", sorted(_MATS))
def test_tvn_matches_conditioning_quadrature(name):
    chol = _MATS[name]
    r = _corr(chol)
    tv = _Tvn(chol)
    rng = np.random.default_rng(sorted(_MATS).index(name))
    h = rng.normal(size=(5, 3)) * 1.5
    h[0] = [0.2, np.inf, -0.4]  # an infinite corner: the bivariate CDF of the others
    got = tv.cdf(h[:, 0], h[:, 1], h[:, 2])
    want = np.array([_oracle(v, r) for v in h])
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-14)


@pytest.mark.parametrize("name", sorted(_MATS))
def test_tvn_orthant_closed_form(name):
    # P(X ≤ 0) = 1/8 + (asin r01 + asin r02 + asin r12)/(4π), for any correlation matrix;
    # also at the corner scaled by tiny amounts (continuity, no 0/0).
    chol = _MATS[name]
    r = _corr(chol)
    want = 0.125 + (math.asin(r[0, 1]) + math.asin(r[0, 2]) + math.asin(r[1, 2])) / (4 * math.pi)
    got = _Tvn(chol).cdf(np.zeros(2), np.zeros(2), np.array([0.0, 1e-300]))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)


def test_tvn_nearly_singular_orthants_and_reduction():
    # Correlations within 1e-6 of ±1 and det R about 1e-12: the orthant closed form and
    # the bivariate limits (one limit +inf or beyond 8.5 standard deviations).
    a = np.array([[1.0, 0.3, -0.2], [1.0, 0.3 + 1e-6, -0.2], [0.5, -1.0, 0.7]])
    chol = _chol_from(a)
    r = _corr(chol)
    want = 0.125 + (math.asin(r[0, 1]) + math.asin(r[0, 2]) + math.asin(r[1, 2])) / (4 * math.pi)
    tv = _Tvn(chol)
    assert abs(tv.cdf(0.0, 0.0, 0.0) - want) < 1e-14
    u = np.array([-1.0, 0.3, 2.0])
    v = np.array([0.5, -0.7, 1.0])
    for big in (np.inf, 1e6):
        got = tv.cdf(u, v, np.full(3, big))
        np.testing.assert_allclose(got, _bvn_cdf(u, v, r[0, 1], tv.sine[0, 1]), rtol=0, atol=1e-16)
        np.testing.assert_allclose(tv.cdf(np.full(3, big), u, np.full(3, big)), st.norm.cdf(u))
    assert np.all(tv.cdf(u, np.full(3, -np.inf), v) == 0)
    assert tv.cdf(np.inf, np.inf, np.inf) == 1.0


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
def test_tvn_far_lower_tail_relative():
    # Positive correlations: every Plackett term is positive, so probabilities of 1e-20
    # to 1e-30 keep their relative accuracy (oracle: nested adaptive quadrature).
    chol = _MATS["moderate"].copy()
    chol[2] = [0.3, 0.4, 0.866]
    r = _corr(chol)
    tv = _Tvn(chol)
    a = math.sqrt(1 - r[0, 1] ** 2)
    rho = (r[1, 2] - r[0, 1] * r[0, 2]) / (a * math.sqrt(1 - r[0, 2] ** 2))
    ar = math.sqrt(1 - rho * rho)
    for h in ([-10.0, -9.5, -6.0],):

        def inner(x, h=h):
            al = (h[1] - r[0, 1] * x) / a
            be = (h[2] - r[0, 2] * x) / math.sqrt(1 - r[0, 2] ** 2)
            return integrate.quad(
                lambda y: st.norm.pdf(y) * special.ndtr((be - rho * y) / ar),
                -np.inf,
                al,
                epsabs=0,
                epsrel=1e-13,
            )[0]

        want = integrate.quad(
            lambda x: st.norm.pdf(x) * inner(x), -np.inf, h[0], epsabs=0, epsrel=1e-12
        )[0]
        assert 1e-32 < want < 1e-18
        got = tv.cdf(*h)
        assert got == pytest.approx(want, rel=1e-11)


def _kde3(n=12, seed=0, weights=False):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    x = z @ np.array([[1.0, 0.8, -0.5], [0.0, 0.6, 0.4], [0.0, 0.0, 0.3]])
    w = rng.uniform(0.2, 1.0, n) if weights else None
    return divest.KDE(x, weights=w), x


def _kernel_oracle(kde, x, corner):
    """Σ_i w_i P(X_i ≤ corner) by the per-point oracle."""
    chol = kde._chol  # internal units: data divided by kde._scale
    r = _corr(chol)
    s = np.sqrt(np.einsum("ij,ij->i", chol, chol))
    w = kde.weights / kde.weights.sum()
    c = np.asarray(corner, dtype=float) / kde._scale
    return sum(wi * _oracle((c - xi / kde._scale) / s, r) for xi, wi in zip(x, w))


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
def test_kde_cdf_and_box_match_per_point_oracle():
    kde, x = _kde3(n=8, seed=1, weights=True)
    assert kde._inv_diag is None  # Scott's rule: a full matrix
    q = np.array([[0.3, 0.1, -0.2], [-1.0, 0.5, 0.4]])
    want = np.array([_kernel_oracle(kde, x, c) for c in q])
    np.testing.assert_allclose(kde.cdf(q), want, rtol=0, atol=3e-14)
    # A box by inclusion–exclusion of the oracle at its 8 corners.
    lo, hi = np.array([-0.5, -0.4, -0.6]), np.array([0.7, 0.9, 0.2])
    box = 0.0
    for c in range(8):
        bits = [(c >> k) & 1 for k in range(3)]
        corner = np.where(bits, lo, hi)
        box += (-1) ** sum(bits) * _kernel_oracle(kde, x, corner)
    assert kde.integrate_box(lo, hi) == pytest.approx(box, abs=1e-13)


def test_kde_box_consistency():
    kde, x = _kde3(n=40, seed=2)
    inf = np.full(3, np.inf)
    assert kde.integrate_box(-inf, inf) == pytest.approx(1.0, abs=1e-15)
    q = x[:5] + 0.1
    # One coordinate +inf: the 2-D marginal's CDF (the exact bivariate path).
    for keep in ([0, 1], [0, 2], [1, 2]):
        pts = q.copy()
        pts[:, [k for k in range(3) if k not in keep][0]] = np.inf
        np.testing.assert_allclose(
            kde.cdf(pts), kde.marginal(keep).cdf(q[:, keep]), rtol=0, atol=1e-15
        )
    # Boxes tiling space sum to 1; reversed or empty boxes are 0.
    cut = np.median(x, axis=0)
    total = 0.0
    for c in range(8):
        bits = np.array([(c >> k) & 1 for k in range(3)], dtype=bool)
        total += kde.integrate_box(np.where(bits, cut, -inf), np.where(bits, inf, cut))
    assert total == pytest.approx(1.0, abs=1e-14)
    assert kde.integrate_box(cut, cut - 1) == 0.0
    # cdf is integrate_box from −inf, and monotone.
    np.testing.assert_allclose(kde.cdf(q), kde.integrate_box(np.full((5, 3), -np.inf), q))
    assert np.all(kde.cdf(q + 0.5) >= kde.cdf(q))


def test_diagonal_bandwidth_agrees_with_diagonal_path():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 3))
    kde = divest.KDE(x, bandwidth=np.array([0.4, 0.7, 0.3]))
    assert kde._inv_diag is not None
    lo = rng.normal(size=(6, 3)) - 1.0
    hi = lo + rng.uniform(0.1, 3.0, size=(6, 3))
    lo[0, 1] = -np.inf
    hi[1, 2] = np.inf
    w = kde.weights / kde.weights.sum()
    xs = np.ascontiguousarray(x.astype(float) / kde._scale)
    got = _core.kde_box_gauss(xs, w, lo / kde._scale, hi / kde._scale, kde._chol, True)
    np.testing.assert_allclose(got, kde.integrate_box(lo, hi), rtol=0, atol=1e-14)


@pytest.mark.parametrize("boundary", ["reflect", "periodic"])
def test_bounded_3d_with_correlated_block(boundary):
    # Bounds on dimension 0, a full bandwidth on dimensions 1-2 (Scott's rule keeps the
    # bounded row diagonal): every image box goes through the 3-D path.
    rng = np.random.default_rng(4)
    z = rng.normal(size=(30, 2))
    x = np.column_stack([rng.uniform(0, 1, 30), z[:, 0], 0.8 * z[:, 0] + 0.3 * z[:, 1]])
    kde = divest.KDE(x, bounds=[(0, 1), (None, None), (None, None)], boundary=boundary)
    assert kde._base._inv_diag is None  # the unbounded base has a full 3-D bandwidth
    big = np.inf
    assert kde.integrate_box([0, -big, -big], [1, big, big]) == pytest.approx(1.0, abs=1e-14)
    q = x[:4, 1:] + 0.2
    pts = np.column_stack([np.ones(4), q])
    np.testing.assert_allclose(kde.cdf(pts), kde.marginal([1, 2]).cdf(q), rtol=0, atol=1e-14)


def test_four_dimensional_full_bandwidth_still_raises():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(20, 4)) @ np.triu(np.ones((4, 4)))
    with pytest.raises(ValueError, match="d = 2 and d = 3 only"):
        divest.KDE(x).integrate_box(x[0], x[1])


def test_normal_tail_table_against_mpmath():
    # The table-driven upper tail every Gaussian box path uses (Rust): a few ulp relative
    # over the whole range where the tail is a normal double, exactly 0/1 beyond ±40.
    mpmath = pytest.importorskip("mpmath")

    def _phi_c(t):
        return _core.normal_sf(np.ascontiguousarray(t, dtype=float))

    rng = np.random.default_rng(6)
    t = np.concatenate(
        [rng.uniform(-40, 37, 400), rng.uniform(-3, 3, 200), np.arange(-200, 200) / 64 + 1 / 128]
    )
    with mpmath.workdps(40):
        want = np.array([float(mpmath.ncdf(-mpmath.mpf(float(v)))) for v in t])
    got = _phi_c(t)
    np.testing.assert_allclose(got, want, rtol=8 * 2.0**-52, atol=0)
    assert np.array_equal(_phi_c(np.array([-np.inf, -41.0, 41.0, np.inf])), [1, 1, 0, 0])


def test_nearly_collinear_kde_against_sampling():
    # Correlations within 2e-6 of ±1 (det R ≈ 2e-12), where the conditioning oracle's
    # adaptive quadrature is unreliable: fixed-seed counts of the estimate's own draws
    # (resample: x_i + L z), 5 standard errors.
    rng = np.random.default_rng(7)
    z = rng.normal(size=(6, 3))
    x = np.column_stack([z[:, 0], z[:, 0] + 1e-3 * z[:, 1], -z[:, 0] + 1e-3 * z[:, 2]])
    kde = divest.KDE(x)
    q = np.array([[0.3, 0.31, -0.2], [-0.5, -0.4, 0.6], [1.0, 1.0, -1.0]])
    got = kde.cdf(q)
    s = kde.resample(1_000_000, rng=11)
    freq = np.array([(s <= c).all(axis=1).mean() for c in q])
    se = np.sqrt(np.maximum(got * (1 - got), 1e-7) / len(s))
    assert np.all(np.abs(freq - got) < 5 * se), (freq, got)
    assert np.all(got > 1e-5)  # the counts can fail


def _random_chol(rng, kind):
    a = rng.normal(size=(3, 3))
    if kind == 1:  # a pair within 1e-4 to 1e-1 of ±1
        a[1] = a[0] * rng.choice([-1, 1]) + 10 ** rng.uniform(-4, -1) * rng.normal(size=3)
    elif kind == 2:  # nearly singular: one row almost a combination of the others
        a[2] = a[0] * rng.normal() + a[1] * rng.normal() + 10 ** rng.uniform(-4, -1) * a[2]
    return np.linalg.cholesky(a @ a.T)


def test_rust_tvn_matches_former_numpy_path():
    # The Rust trivariate CDF against the former NumPy implementation of the same scheme
    # (tests/_kdecalc_numpy.py) on random matrices (a third with a pair near ±1, a third
    # nearly singular) and limits (some infinite, some beyond the 8.5 reduction).
    rng = np.random.default_rng(21)
    for trial in range(12):
        chol = _random_chol(rng, trial % 3)
        h = rng.normal(size=(200, 3)) * 3.0
        h[:10, 0] = np.inf
        h[10:20, 1] = 9.0
        h[20:25, 2] = -np.inf
        want = old._Tvn(chol).cdf(h[:, 0], h[:, 1], h[:, 2])
        got = _Tvn(chol).cdf(h[:, 0], h[:, 1], h[:, 2])
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=2e-15)


@pytest.mark.parametrize("d,full", [(1, False), (2, False), (4, False), (2, True), (3, True)])
def test_kde_box_matches_former_numpy_path(d, full):
    # kde.integrate_box (Rust) against the former NumPy box sums, weighted data, boxes with
    # infinite and reversed ends, values from 1e-12 to 1.
    rng = np.random.default_rng(22 + d)
    n = 60
    x = rng.normal(size=(n, d)) @ (np.triu(rng.uniform(0.2, 1, (d, d))) if full else np.eye(d))
    w = rng.uniform(0.1, 1.0, n)
    bw = "scott" if full else rng.uniform(0.2, 0.8, d)
    kde = divest.KDE(x, weights=w, bandwidth=bw)
    assert (kde._inv_diag is None) == full
    lo = rng.normal(size=(15, d)) * 2 - 1
    hi = lo + rng.uniform(0.05, 4.0, size=(15, d))
    lo[0, 0] = -np.inf
    hi[1, d - 1] = np.inf
    lo[2] = -np.inf
    lo[3] = 5.0  # far tail
    hi[3] = 7.0
    xs = x / kde._scale
    ws = kde.weights / kde.weights.sum()
    lo_s, hi_s = lo / kde._scale, hi / kde._scale
    if not full:
        want = old.diag_box(kde, lo_s, hi_s, xs, ws)
    elif d == 2:
        want = old._full_2d_box(kde, lo_s, hi_s, xs, ws)
    else:
        want = old._full_3d_box(kde, lo_s, hi_s, xs, ws)
    got = kde.integrate_box(lo, hi)
    np.testing.assert_allclose(got, np.clip(want, 0, 1), rtol=1e-12, atol=2e-15)


def test_box_probabilities_stop_on_ctrl_c():
    # Minutes of work (2e4 points × 2000 boxes × 8 corners); Ctrl-C after 0.5 s must stop
    # it within a few seconds, and the next call works.
    import _thread
    import signal
    import threading
    import time

    rng = np.random.default_rng(30)
    x = rng.normal(size=(20_000, 3)) @ np.array([[1.0, 0.8, -0.5], [0, 0.6, 0.4], [0, 0, 0.3]])
    kde = divest.KDE(x)
    lo = x[:2000] - 0.5
    old_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    try:
        t0 = time.perf_counter()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            kde.integrate_box(lo, lo + 1.0)
        elapsed = time.perf_counter() - t0
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, old_handler)
    assert elapsed < 5.0, elapsed
    assert 0 < kde.integrate_box(lo[0], lo[0] + 1.0) < 1
