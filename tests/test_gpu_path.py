"""The whole GPU path of divest._gpu (validation, rescaling, bandwidths, the xp
algorithms), run on the CPU with NumPy standing in for CuPy and the fused kernels off,
against the public host functions (the Rust engine)."""

import math
import types
import warnings

import numpy as np
import pytest

import divest
from divest import _gpu


@pytest.fixture(autouse=True)
def numpy_namespace():
    _gpu._use(np, fused=False)
    yield
    _gpu._use(None, fused=True)


@pytest.fixture(params=[np.float64, np.float32], ids=["f64", "f32"])
def dtype(request):
    return request.param


TOL = {np.float64: 1e-9, np.float32: 5e-4}


def _kde(data, **kw):
    k = divest.KDE.__new__(divest.KDE)
    _gpu.kde_init(
        k,
        data,
        kw.get("bandwidth", "scott"),
        kw.get("kernel", "gaussian"),
        kw.get("weights"),
        True,
    )
    return k


@pytest.mark.parametrize("bandwidth", ["scott", "silverman", 0.4, [0.3, 0.5, 0.2]])
def test_kde_logpdf_and_score(dtype, bandwidth):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(dtype)
    x[:, 1] += x[:, 0]
    q = rng.normal(size=(15, 3)).astype(dtype)
    w = rng.random(40)
    w[3] = 0
    host = divest.KDE(x, bandwidth=bandwidth, weights=w)
    dev = _kde(x, bandwidth=bandwidth, weights=w)
    np.testing.assert_allclose(dev.bandwidth, host.bandwidth, rtol=1e-12)
    assert dev.neff == pytest.approx(host.neff, rel=1e-12)
    got = _gpu.kde_logpdf(dev, q)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, host.logpdf(q), rtol=TOL[dtype], atol=TOL[dtype])
    np.testing.assert_allclose(
        _gpu.kde_score(dev, q), host.score(q), rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10
    )


def test_kde_loo_and_host_only_methods():
    rng = np.random.default_rng(13)
    x = rng.normal(size=(25, 2))
    w = rng.random(25)
    dev = _kde(x, weights=w)
    assert isinstance(dev, divest.KDE)
    np.testing.assert_allclose(
        dev.loo_logpdf(), divest.KDE(x, weights=w).loo_logpdf(), rtol=1e-12, atol=1e-12
    )
    for name, args in [("resample", (3,)), ("cdf", (x,)), ("marginal", ([0],))]:
        with pytest.raises(ValueError, match=f"KDE.{name} is not available for a KDE built"):
            getattr(dev, name)(*args)


def test_kde_full_bandwidth_matrix():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 2))
    h = np.array([[0.5, 0.2], [0.2, 0.3]])
    host = divest.KDE(x, bandwidth=h)
    dev = _kde(x, bandwidth=h)
    np.testing.assert_allclose(_gpu.kde_logpdf(dev, x[:5]), host.logpdf(x[:5]), rtol=1e-12)


def test_kde_gpu_refusals_name_the_argument():
    x = np.random.default_rng(2).normal(size=(10, 2))
    with pytest.raises(ValueError, match="kernel='tophat'"):
        _kde(x, kernel="tophat")
    with pytest.raises(ValueError, match="bandwidth='loo'"):
        _kde(x, bandwidth="loo")
    with pytest.raises(ValueError, match="singular"):
        _kde(np.c_[x[:, 0], 2 * x[:, 0]])
    with pytest.raises(ValueError, match="return_ess"):
        _gpu.kde_logpdf(_kde(x), x, return_ess=True)
    with pytest.raises(ValueError, match="points has dimension 3"):
        _gpu.kde_logpdf(_kde(x), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="data contains NaN"):
        _kde(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="weights must be non-negative"):
        _kde(x, weights=-np.ones(10))


@pytest.mark.parametrize("unbiased", [False, True])
def test_energy_and_dcov(dtype, unbiased):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(25, 3)).astype(dtype)
    y = (x[:, :2] + rng.normal(size=(25, 2))).astype(dtype)
    t = TOL[dtype]
    assert float(_gpu.energy_distance(x, y[:, :1].repeat(3, 1), 1.2, unbiased)) == pytest.approx(
        divest.energy_distance(x, y[:, :1].repeat(3, 1), 1.2, unbiased), rel=t
    )
    assert float(_gpu.dcov_sqr(x, y, 1.0, unbiased)) == pytest.approx(
        divest.dcov_sqr(x, y, 1.0, unbiased), rel=t
    )
    assert float(_gpu.dcor_sqr(x, y, 0.5, unbiased)) == pytest.approx(
        divest.dcor_sqr(x, y, 0.5, unbiased), rel=t
    )
    assert float(_gpu.dcor(x, y, 1.0)) == pytest.approx(divest.dcor(x, y), rel=t)


def test_energy_dcov_refusals():
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match="exponent"):
        _gpu.energy_distance(x, x, 2.5)
    with pytest.raises(ValueError, match="same number of observations"):
        _gpu.dcov_sqr(x, np.zeros((4, 1)))
    with pytest.raises(ValueError, match="at least 4"):
        _gpu.dcov_sqr(x, x, 1.0, True)
    with pytest.raises(ValueError, match="return_grad"):
        _gpu.dcov_sqr(x, x, 1.0, False, True)
    with pytest.raises(ValueError, match="y has dimension 3"):
        _gpu.energy_distance(x, np.zeros((2, 3)))


@pytest.mark.parametrize("sigma", [None, 0.7])
def test_mmd_and_cs(dtype, sigma):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(30, 4)).astype(dtype)
    y = (rng.normal(size=(22, 4)) + 0.4).astype(dtype)
    t = TOL[dtype] * 10
    for kernel in ("gaussian", "laplacian"):
        for unbiased in (True, False):
            got = float(_gpu.mmd(x, y, sigma, kernel, unbiased))
            want = divest.mmd(x, y, sigma, kernel, unbiased)
            assert got == pytest.approx(want, rel=t, abs=1e-7)
    assert float(_gpu.cs_divergence(x, y, sigma)) == pytest.approx(
        divest.cs_divergence(x, y, sigma), rel=t
    )
    assert float(_gpu.cs_divergence(x, x, sigma)) == 0.0
    assert float(_gpu.mmd(x, x, sigma, "gaussian", False)) == 0.0


def test_mmd_median_subsample_like_host():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(700, 2))
    y = rng.normal(size=(600, 2)) + 0.2
    assert float(_gpu.mmd(x, y)) == pytest.approx(divest.mmd(x, y), rel=1e-9)


def test_mmd_refusals():
    x = np.zeros((3, 2)) + np.arange(3)[:, None]
    with pytest.raises(ValueError, match="kernel"):
        _gpu.mmd(x, x, 1.0, "cosine")
    with pytest.raises(ValueError, match="sigma"):
        _gpu.mmd(x, x + 1, 1e-12)
    with pytest.raises(ValueError, match="unbiased=True needs at least 2"):
        _gpu.mmd(x[:1], x, 1.0)


@pytest.mark.parametrize("measure", ["kl", "js", "tv", "hellinger"])
def test_discrete(dtype, measure):
    rng = np.random.default_rng(6)
    p = rng.random((3, 4, 6))
    q = rng.random((4, 6))
    p /= p.sum(-1, keepdims=True)
    q /= q.sum(-1, keepdims=True)
    p, q = p.astype(dtype), q.astype(dtype)
    fn = getattr(divest, measure)
    sq = measure == "hellinger"
    t = TOL[dtype] * 10
    got = _gpu.divergence(p, q, measure, -1, False, None, False, False, False, sq)
    np.testing.assert_allclose(got, fn(p, q), rtol=t, atol=t)
    assert got.dtype == dtype and got.shape == (3, 4)
    # another axis, keepdims, logits, base
    pt, qt = np.moveaxis(p, -1, 0), np.moveaxis(np.broadcast_to(q, p.shape), -1, 0)
    got = _gpu.divergence(pt, qt, measure, 0, True, None, False, False, False, sq)
    np.testing.assert_allclose(got, fn(pt, qt, axis=0, keepdims=True), rtol=t, atol=t)
    lg = np.log(p) * 2
    got = _gpu.divergence(lg, q, measure, -1, False, None, True, False, False, sq)
    np.testing.assert_allclose(got, fn(lg, q, from_logits=True), rtol=t, atol=t)
    if measure in ("kl", "js"):
        got = _gpu.divergence(p, q, measure, -1, False, 2, False, False, False)
        np.testing.assert_allclose(got, fn(p, q, base=2), rtol=t, atol=t)
    got = _gpu.divergence(p * 3, q, measure, -1, False, None, False, False, True, sq)
    np.testing.assert_allclose(got, fn(p * 3, q, normalize=True), rtol=t, atol=t)


def test_js_distance_is_the_root():
    p, q = np.array([0.2, 0.8]), np.array([0.6, 0.4])
    got = _gpu.divergence(p, q, "js", -1, False, None, False, False, False, True)
    assert float(got) == pytest.approx(divest.js_distance(p, q), rel=1e-12)


def test_discrete_refusals():
    p = np.array([0.5, 0.6])
    with pytest.raises(ValueError, match="normalize=True"):
        _gpu.divergence(p, p, "kl", -1, False, None, False, False, False)
    with pytest.raises(ValueError, match="non-negative"):
        _gpu.divergence(np.array([-0.5, 1.5]), p, "kl", -1, False, None, False, False, False)
    with pytest.raises(ValueError, match="same number of categories"):
        _gpu.divergence(p, np.ones(3) / 3, "kl", -1, False, None, False, False, False)
    with pytest.raises(ValueError, match="base"):
        _gpu.divergence(p, p, "tv", -1, False, 2, False, False, True)
    with pytest.raises(ValueError, match="either from_logits"):
        _gpu.divergence(p, p, "kl", -1, False, None, True, True, False)


def test_sinkhorn_batch_and_dense(dtype):
    rng = np.random.default_rng(7)
    a = rng.random((4, 6))
    b = rng.random((4, 5))
    a /= a.sum(1, keepdims=True)
    b /= b.sum(1, keepdims=True)
    c = rng.random((6, 5)).astype(dtype)  # one shared cost
    tol = 1e-10 if dtype == np.float64 else 1e-5
    got = _gpu.sinkhorn_batch(a, b, c, 0.2, math.inf, 10000, tol, "auto", True, None, None)
    want = divest.sinkhorn_batch(a, b, c.astype(np.float64), 0.2, tol=1e-13, return_plan=True)
    t = 1e-8 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(got.plan, want.plan, atol=t)
    np.testing.assert_allclose(got.cost, want.cost, rtol=t)
    assert got.converged.all() and got.f.shape == (4, 6)
    one = _gpu.sinkhorn(a[0], b[0], c, 0.2, 10000, tol, "auto", None, True, None, None)
    ref = divest.sinkhorn(a[0], b[0], c.astype(np.float64), 0.2, tol=1e-13)
    np.testing.assert_allclose(one.plan, ref.plan, atol=t)
    assert float(one.linear_cost) == pytest.approx(ref.linear_cost, rel=t)
    assert one.converged is True


def test_sinkhorn_warns_and_refuses():
    a = np.full((2, 3), 1 / 3)
    c = np.random.default_rng(8).random((3, 3))
    with pytest.warns(divest.ConvergenceWarning):
        _gpu.sinkhorn_batch(a, a, c, 0.01, math.inf, 2, 1e-12, "auto", False, None, None)
    with pytest.raises(ValueError, match="reg_m"):
        _gpu.sinkhorn_batch(a, a, c, 0.1, 1.0, 10, 1e-9, "auto", False, None, None)
    with pytest.raises(ValueError, match="same total mass"):
        _gpu.sinkhorn_batch(a, 2 * a, c, 0.1, math.inf, 10, 1e-9, "auto", False, None, None)
    with pytest.raises(ValueError, match="cost must have shape"):
        _gpu.sinkhorn_batch(a, a, c[:2], 0.1, math.inf, 10, 1e-9, "auto", False, None, None)
    with pytest.raises(ValueError, match="init"):
        _gpu.sinkhorn(a[0], a[0], c, 0.1, 10, 1e-9, "auto", (a[0], a[0]), True, None, None)
    with pytest.raises(ValueError, match="reg"):
        _gpu.sinkhorn(a[0], a[0], c, -1.0, 10, 1e-9, "auto", None, True, None, None)


@pytest.mark.parametrize("p", [2, 1])
def test_sinkhorn_divergence(dtype, p):
    rng = np.random.default_rng(9)
    x = (rng.random((31, 3)) * 2 - 5).astype(dtype)
    y = (rng.random((26, 3)) * 2 - 4.7).astype(dtype)
    want = divest.sinkhorn_divergence(x, y, eps=0.1, p=p, scaling=0.8)
    got = _gpu.sinkhorn_divergence(x, y, None, None, 0.1, p, 0.8, True, 1000, None, True)
    t = 1e-9 if dtype == np.float64 else 2e-3
    assert float(got.value) == pytest.approx(want.value, rel=t, abs=t * 1e-2)
    assert got.n_iter == want.n_iter and got.converged is None
    np.testing.assert_allclose(got.grad, want.grad, atol=t * np.abs(want.grad).max())
    assert got.grad.dtype == dtype


def test_sinkhorn_divergence_with_tol_converges_to_rust():
    rng = np.random.default_rng(10)
    x, y = rng.random((20, 2)), rng.random((18, 2))
    want = divest.sinkhorn_divergence(x, y, eps=0.05, tol=1e-11)
    got = _gpu.sinkhorn_divergence(x, y, None, None, 0.05, 2, 0.9, True, 1000, 1e-11, True)
    assert got.converged is True and got.marginal_error <= 1e-11
    assert float(got.value) == pytest.approx(want.value, rel=1e-8)
    np.testing.assert_allclose(got.grad, want.grad, atol=1e-9)
    # f and g are the debiased potentials up to the cross problem's constant (f + t, g − t).
    shift = np.mean(got.f - want.f)
    np.testing.assert_allclose(got.f - shift, want.f, atol=1e-8)
    np.testing.assert_allclose(got.g + shift, want.g, atol=1e-8)


def test_sinkhorn_divergence_gradient_is_the_derivative():
    """Independent oracle: central differences of the converged value."""
    rng = np.random.default_rng(11)
    x, y = rng.random((6, 2)), rng.random((5, 2))
    got = _gpu.sinkhorn_divergence(x, y, None, None, 0.1, 2, 0.9, True, 5000, 1e-13, True)
    h = 1e-6
    for i, k in [(0, 0), (3, 1)]:
        xp_, xm = x.copy(), x.copy()
        xp_[i, k] += h
        xm[i, k] -= h
        vp = divest.sinkhorn_divergence(xp_, y, eps=0.1, tol=1e-13).value
        vm = divest.sinkhorn_divergence(xm, y, eps=0.1, tol=1e-13).value
        assert got.grad[i, k] == pytest.approx((vp - vm) / (2 * h), rel=1e-5, abs=1e-8)


def test_sinkhorn_divergence_coinciding_and_refusals():
    x = np.ones((4, 2))
    r = _gpu.sinkhorn_divergence(x, x, None, None, 0.1, 2, 0.9, True, 10, None, True)
    assert float(r.value) == 0.0 and not r.grad.any()
    with pytest.raises(ValueError, match="scaling"):
        _gpu.sinkhorn_divergence(x, x + 1, None, None, 0.1, 2, 1.5, True, 10, None, True)
    with pytest.raises(ValueError, match="p must be"):
        _gpu.sinkhorn_divergence(x, x + 1, None, None, 0.1, 3, 0.9, True, 10, None, True)
    with pytest.raises(ValueError, match="eps"):
        _gpu.sinkhorn_divergence(x, x + 1, None, None, 1e12, 2, 0.9, True, 10, None, True)


def test_inputs_are_not_modified():
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(9, 2)), rng.normal(size=(8, 2))
    x0, y0 = x.copy(), y.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _gpu.energy_distance(x, y)
        _gpu.mmd(x, y)
        _gpu.sinkhorn_divergence(x, y, None, None, 0.1, 2, 0.9, True, 10, None, True)
        _gpu.kde_score(_kde(x), y)
    assert np.array_equal(x, x0) and np.array_equal(y, y0)


class _DeviceArray:
    """A device array stand-in (NumPy inside) that, like a CuPy array, refuses to be
    copied to the host implicitly."""

    def __init__(self, a):
        self.a = a

    def __array__(self, *args, **kwargs):
        raise TypeError("implicit conversion to a host array")

    dtype = property(lambda self: self.a.dtype)
    ndim = property(lambda self: self.a.ndim)
    shape = property(lambda self: self.a.shape)
    size = property(lambda self: self.a.size)

    def __getitem__(self, key):
        return _DeviceArray(self.a[key])

    def astype(self, dtype):
        return _DeviceArray(self.a.astype(dtype))


def _device_namespace():
    """The few namespace functions the shared point validation uses, on the stand-in;
    `hits` counts the finiteness checks."""
    ns = types.ModuleType("devicelib")
    ns.float64 = np.float64
    ns.hits = 0

    def isfinite(x):
        ns.hits += 1
        return _DeviceArray(np.isfinite(x.a))

    ns.isfinite = isfinite
    ns.asarray = lambda x: x if isinstance(x, _DeviceArray) else _DeviceArray(np.asarray(x))
    ns.all = lambda x: bool(np.all(x.a))
    ns.ascontiguousarray = lambda x: _DeviceArray(np.ascontiguousarray(x.a))
    return ns


def test_device_points_are_validated_on_the_device():
    # The GPU path checks points with the shared _validate.as_points: a device array comes
    # back a device array (never copied to the host), with the host's shapes and messages.
    ns = _device_namespace()
    _gpu._use(ns, fused=False)
    x = np.arange(6.0).reshape(3, 2)
    for given, d, want in [
        (x, None, x),
        (x[:, 0], None, x[:, :1]),
        (x[1], 2, x[1:2]),
        (x[::-1, ::-1], 2, x[::-1, ::-1]),
        (np.arange(3), None, np.arange(3.0)[:, None]),
        (x.astype(np.float16), None, x),
    ]:
        got = _gpu._points(_DeviceArray(given), "x", d=d)
        assert isinstance(got, _DeviceArray)
        assert got.a.dtype in (np.float32, np.float64) and got.a.flags.c_contiguous
        np.testing.assert_array_equal(got.a, want)
    assert _gpu._points(_DeviceArray(x.astype(np.float32)), "x").dtype == np.float32
    hits = ns.hits
    _gpu._points(_DeviceArray(np.array([[np.inf]])), "x", check_finite=False)
    assert ns.hits == hits
    for bad, d, err, msg in [
        (np.array([[0.0, np.nan]]), None, ValueError, "x contains NaN or inf"),
        (np.array(1.0), None, ValueError, "x must be a 1-D or 2-D array of points"),
        (np.zeros((2, 2, 2)), None, ValueError, "x must have shape"),
        (np.zeros((0, 2)), None, ValueError, "x is empty"),
        (np.zeros((2, 0)), None, ValueError, "x has zero columns"),
        (np.zeros(3), 2, ValueError, "x has 3 values but the data are 2-dimensional"),
        (np.zeros((2, 3)), 2, ValueError, "x has dimension 3"),
        (np.zeros(2, complex), None, TypeError, "x must be real"),
        (np.array(["a"]), None, TypeError, r"Convert it with devicelib\.asarray"),
    ]:
        with pytest.raises(err, match=msg):
            _gpu._points(_DeviceArray(bad), "x", d=d)
        with pytest.raises(err, match=msg.replace("devicelib", "np")):
            divest._validate.as_points(bad, "x", d=d)
