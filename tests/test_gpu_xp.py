"""The GPU algorithms of divest._xp, run on the CPU with NumPy and with array-api-strict
(which rejects slices past the end of an array, the out-of-bounds read of a CUDA tile),
against the Rust engine (and brute force where Rust has no counterpart), in float32 and
float64, with ragged tails (tiles that do not divide the sizes) and zero weights."""

import math

import numpy as np
import pytest

import divest
from divest._xp import namespace
from divest._xp.discrete import discrete_rows
from divest._xp.pairs import dcov_from_sums, dcov_sums, lse_pairs, pair_sum
from divest._xp.sinkhorn import eps_schedule, sinkhorn_batch_log, sinkhorn_divergence_xp
from divest.kde import log_kernel_norm

strict = pytest.importorskip("array_api_strict")

NAMESPACES = ["numpy", "strict"]
DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-10, np.float32: 2e-4}


def _ns(name):
    return np if name == "numpy" else strict


def _to(xp, a):
    return xp.asarray(np.ascontiguousarray(a))


def _np(a):
    return np.asarray(a) if not hasattr(a, "__array_namespace__") else np.asarray(_host(a))


def _host(a):
    try:
        return np.from_dlpack(a)
    except Exception:
        return np.array(a.tolist())


@pytest.fixture(params=NAMESPACES)
def xp(request):
    return _ns(request.param)


@pytest.fixture(params=DTYPES, ids=["f64", "f32"])
def dtype(request):
    return request.param


def test_namespace_picks_each_library():
    assert namespace(np.zeros(2)) is np
    assert namespace(strict.zeros(2)) is strict
    assert namespace([1.0]) is np


def test_lse_pairs_matches_rust_kde_logpdf_and_score(xp, dtype):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(37, 3)).astype(dtype)
    q = (rng.normal(size=(23, 3)) * 1.5).astype(dtype)
    w = rng.random(37)
    w[[0, 5, 36]] = 0.0  # zero weights, at a tile edge and at the ragged tail
    kde = divest.KDE(x, bandwidth=0.7, weights=w)
    want = kde.logpdf(q)
    want_s = kde.score(q)
    mean = kde._mean
    xw = ((x.astype(np.float64) - mean) / 0.7).astype(dtype)
    qw = ((q.astype(np.float64) - mean) / 0.7).astype(dtype)
    with np.errstate(divide="ignore"):
        logw = np.log(kde.weights).astype(dtype)
    lse, mean_dir = lse_pairs(
        xp, _to(xp, qw), _to(xp, xw), _to(xp, logw), 0.5, grad=True, tile_q=7, tile_x=5
    )
    got = _np(lse) - (log_kernel_norm("gaussian", 3) + 3 * math.log(0.7))
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype])
    score = -0.5 * _np(mean_dir) / 0.7
    np.testing.assert_allclose(score, want_s, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
    assert _np(lse).dtype == dtype


def test_lse_pairs_exclude_self_is_leave_one_out(xp, dtype):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(19, 2)).astype(dtype)
    kde = divest.KDE(x, bandwidth=0.5)
    xw = ((x.astype(np.float64) - kde._mean) / 0.5).astype(dtype)
    logw = np.full(19, -math.log(19), dtype=dtype)
    lse = lse_pairs(
        xp, _to(xp, xw), _to(xp, xw), _to(xp, logw), 0.5, tile_q=4, tile_x=6, exclude_self=True
    )
    got = _np(lse) - math.log1p(-1 / 19) - (log_kernel_norm("gaussian", 2) + 2 * math.log(0.5))
    np.testing.assert_allclose(got, kde.loo_logpdf(), rtol=TOL[dtype], atol=TOL[dtype])


def test_lse_pairs_p1_gradient_matches_brute_force(xp, dtype):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(11, 4))
    q = rng.normal(size=(9, 4))
    q[2] = x[3]  # a coinciding pair: its direction is 0
    h = rng.normal(size=11)
    lse, md = lse_pairs(
        xp,
        _to(xp, q.astype(dtype)),
        _to(xp, x.astype(dtype)),
        _to(xp, h.astype(dtype)),
        1.3,
        p=1,
        grad=True,
        tile_q=2,
        tile_x=3,
    )
    diff = q[:, None, :] - x[None, :, :]
    r = np.sqrt((diff**2).sum(2))
    logit = h[None, :] - 1.3 * r
    want = np.log(np.exp(logit).sum(1))
    pi = np.exp(logit - want[:, None])
    unit = np.divide(diff, r[:, :, None], out=np.zeros_like(diff), where=r[:, :, None] > 0)
    np.testing.assert_allclose(_np(lse), want, rtol=TOL[dtype])
    np.testing.assert_allclose(_np(md), (pi[:, :, None] * unit).sum(1), atol=TOL[dtype] * 10)


def test_lse_pairs_all_zero_weights_give_minus_inf(xp):
    x = _to(xp, np.zeros((3, 2)))
    h = _to(xp, np.full(3, -np.inf))
    lse, md = lse_pairs(xp, x, x, h, 0.5, grad=True, tile_q=2, tile_x=2)
    assert np.all(_np(lse) == -np.inf)
    assert np.all(_np(md) == 0)


@pytest.mark.parametrize("unbiased", [False, True])
def test_pair_sum_gives_rusts_energy_distance(xp, dtype, unbiased):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(21, 3)).astype(dtype)
    y = (rng.normal(size=(13, 3)) + 0.5).astype(dtype)
    a = 0.8
    X, Y = _to(xp, x), _to(xp, y)
    n, m = 21, 13
    exy = float(pair_sum(xp, X, Y, None, None, "power", a, tile=4)) / (n * m)
    nx, ny = (n * (n - 1), m * (m - 1)) if unbiased else (n * n, m * m)
    exx = float(pair_sum(xp, X, X, None, None, "power", a, exclude_self=True, tile=5)) / nx
    eyy = float(pair_sum(xp, Y, Y, None, None, "power", a, exclude_self=True, tile=6)) / ny
    want = divest.energy_distance(x, y, exponent=a, unbiased=unbiased)
    assert math.isclose(2 * exy - exx - eyy, want, rel_tol=TOL[dtype] * 10)


def test_pair_sum_weighted_kernels_match_brute_force(xp, dtype):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(10, 2))
    y = rng.normal(size=(7, 2))
    wx, wy = rng.random(10), rng.random(7)
    wx[9] = 0.0
    d = np.sqrt(((x[:, None] - y[None]) ** 2).sum(2))
    cases = {"gaussian": np.exp(-0.5 * 1.7 * d**2), "laplacian": np.exp(-1.7 * d)}
    for kernel, k in cases.items():
        got = pair_sum(
            xp,
            _to(xp, x.astype(dtype)),
            _to(xp, y.astype(dtype)),
            _to(xp, wx.astype(dtype)),
            _to(xp, wy.astype(dtype)),
            kernel,
            1.7,
            tile=3,
        )
        assert _np(got).dtype == np.float64  # float64 block accumulation
        assert math.isclose(float(got), wx @ k @ wy, rel_tol=TOL[dtype] * 10)


@pytest.mark.parametrize("unbiased", [False, True])
def test_dcov_sums_give_rusts_dcov_and_dcor(xp, dtype, unbiased):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(17, 3)).astype(dtype)
    y = (x[:, :2] ** 2 + rng.normal(size=(17, 2))).astype(dtype)
    ra, rb, ab, aa, bb = dcov_sums(xp, _to(xp, x), _to(xp, y), 1.0, tile=5)
    cov = float(dcov_from_sums(xp, ra, rb, ab, 17, unbiased))
    vx = float(dcov_from_sums(xp, ra, ra, aa, 17, unbiased))
    vy = float(dcov_from_sums(xp, rb, rb, bb, 17, unbiased))
    tol = TOL[dtype] * 10
    assert math.isclose(cov, divest.dcov_sqr(x, y, unbiased=unbiased), rel_tol=tol)
    want = divest.dcor_sqr(x, y, unbiased=unbiased)
    assert math.isclose(cov / math.sqrt(abs(vx * vy)), want, rel_tol=tol)


@pytest.mark.parametrize("measure", ["kl", "js", "tv", "hellinger"])
def test_discrete_rows_match_rust(xp, dtype, measure):
    rng = np.random.default_rng(7)
    p = rng.random((6, 9))
    q = rng.random((6, 9))
    p[0, :4] = 0.0  # zero mass
    q[1, 2] = 0.0
    p[1, 2] = 0.0
    p /= p.sum(1, keepdims=True)
    q /= q.sum(1, keepdims=True)
    p, q = p.astype(dtype), q.astype(dtype)
    fn = getattr(divest, measure)
    got = _np(discrete_rows(xp, _to(xp, p), _to(xp, q), measure, "prob"))
    if measure == "hellinger":
        got = np.sqrt(got)
    np.testing.assert_allclose(got, fn(p, q), rtol=TOL[dtype] * 10, atol=TOL[dtype])
    lp = np.log(rng.random((3, 5))).astype(dtype) * 3
    lq = np.log(rng.random((3, 5))).astype(dtype) * 3
    got = _np(discrete_rows(xp, _to(xp, lp), _to(xp, lq), measure, "logits"))
    if measure == "hellinger":
        got = np.sqrt(got)
    want = fn(lp, lq, from_logits=True)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype] * 10, atol=TOL[dtype])


def test_discrete_kl_is_inf_where_q_vanishes(xp):
    p = _to(xp, np.array([[0.5, 0.5]]))
    q = _to(xp, np.array([[1.0, 0.0]]))
    assert _np(discrete_rows(xp, p, q, "kl"))[0] == np.inf
    assert divest.kl([0.5, 0.5], [1.0, 0.0]) == np.inf


def test_sinkhorn_batch_log_matches_rust(xp, dtype):
    rng = np.random.default_rng(8)
    nb, n, m = 5, 7, 6
    a = rng.random((nb, n))
    b = rng.random((nb, m))
    a[0, 3] = 0.0  # a zero weight: its row of the plan is 0
    b[2, 5] = 0.0
    a /= a.sum(1, keepdims=True)
    b /= b.sum(1, keepdims=True)
    c = rng.random((nb, n, m)).astype(dtype)
    tol = 1e-10 if dtype == np.float64 else 1e-5
    f, g, it, err, cost, lin, plan = sinkhorn_batch_log(
        xp, _to(xp, a.astype(dtype)), _to(xp, b.astype(dtype)), _to(xp, c), 0.1, 5000, tol
    )
    want = divest.sinkhorn_batch(a, b, c.astype(np.float64), 0.1, tol=1e-13, return_plan=True)
    t = 1e-9 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(_np(plan), want.plan, atol=t)
    np.testing.assert_allclose(_np(cost), want.cost, rtol=t * 10, atol=t)
    np.testing.assert_allclose(_np(lin), want.linear_cost, rtol=t * 10, atol=t)
    assert np.all(_np(err) <= tol)
    assert np.all(_np(plan)[0, 3, :] == 0) and np.all(_np(plan)[2, :, 5] == 0)
    assert len(set(_np(it).tolist())) > 1  # each problem stopped on its own


def test_eps_schedule_is_geomloss_in_divest_units():
    d, blur, s = 1.7, 0.05, 0.8
    # GeomLoss (p = 2, cost |x - y|²/2, ε = blur²): D², exp(arange(2 log D, 2 log blur,
    # 2 log s)), blur²; divest's cost doubles every ε.
    want = [d**2] + list(np.exp(np.arange(2 * np.log(d), 2 * np.log(blur), 2 * np.log(s))))
    want = 2 * np.array(want + [blur**2])
    np.testing.assert_allclose(eps_schedule(2, d, 2 * blur**2, s), want, rtol=1e-14)


@pytest.mark.parametrize("p", [2, 1])
def test_sinkhorn_divergence_xp_matches_rust(xp, p):
    rng = np.random.default_rng(9)
    x = rng.random((23, 2))
    y = rng.random((17, 2)) + 0.2
    a = rng.random(23)
    a[4] = 0.0
    a /= a.sum()
    b = np.full(17, 1 / 17)
    want = divest.sinkhorn_divergence(x, y, a, b, eps=0.05, p=p, scaling=0.7)
    lo = np.minimum(x.min(0), y.min(0))
    hi = np.maximum(x.max(0), y.max(0))
    shift, w = lo / 2 + hi / 2, hi / 2 - lo / 2
    diam = 2 * float(np.sqrt((w**2).sum()))
    out = sinkhorn_divergence_xp(
        xp,
        _to(xp, x - shift),
        _to(xp, y - shift),
        _to(xp, a),
        _to(xp, b),
        p=p,
        eps=0.05,
        scaling=0.7,
        diameter=diam,
        tile=6,
    )
    value, f, g, fa, gb, gr, n_upd, err, conv = out
    assert math.isclose(float(value), want.value, rel_tol=1e-9, abs_tol=1e-13)
    assert n_upd == want.n_iter
    assert math.isclose(err, want.marginal_error, rel_tol=1e-7)
    np.testing.assert_allclose(_np(f) - _np(fa), want.f, atol=1e-10)
    np.testing.assert_allclose(_np(gr), want.grad, atol=1e-10)


def test_lse_pairs_gemm_route_matches_rust(xp, dtype):
    from divest._xp.pairs import lse_pairs_gemm

    rng = np.random.default_rng(12)
    x = rng.normal(size=(45, 16)).astype(dtype)
    q = rng.normal(size=(31, 16)).astype(dtype)
    w = rng.random(45)
    w[7] = 0.0
    kde = divest.KDE(x, bandwidth=1.5, weights=w)
    xw = ((x.astype(np.float64) - kde._mean) / 1.5).astype(dtype)
    qw = ((q.astype(np.float64) - kde._mean) / 1.5).astype(dtype)
    with np.errstate(divide="ignore"):
        logw = np.log(kde.weights).astype(dtype)
    lse = lse_pairs_gemm(xp, _to(xp, qw), _to(xp, xw), _to(xp, logw), 0.5, tile_q=8, tile_x=13)
    got = _np(lse) - (log_kernel_norm("gaussian", 16) + 16 * math.log(1.5))
    # ‖q‖² + ‖x‖² − 2q·x cancels: about eps·‖q‖² per distance, so a looser float32 bound.
    t = 1e-9 if dtype == np.float64 else 1e-3
    np.testing.assert_allclose(got, kde.logpdf(q), rtol=t, atol=t)
