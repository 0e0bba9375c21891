"""Entropic optimal transport: divest against POT and brute-force NumPy oracles."""

import warnings

import numpy as np
import pytest

import divest

try:  # only the tests that compare with POT skip without it
    import ot
except ImportError:
    ot = None
needs_ot = pytest.mark.skipif(ot is None, reason="POT is not installed")


def _problem(n, m, seed, d=2, zero_a=(), zero_b=()):
    rng = np.random.default_rng(seed)
    x, y = rng.random((n, d)), rng.random((m, d))
    c = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    c /= c.max()
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    a[list(zero_a)] = 0
    b[list(zero_b)] = 0
    return a / a.sum(), b / b.sum(), c


def _plan_marginal_error(p, a, b):
    return np.abs(p.sum(1) - a).sum() + np.abs(p.sum(0) - b).sum()


@needs_ot
@pytest.mark.parametrize("method", ["auto", "log", "kernel"])
@pytest.mark.parametrize("omega", [None, 1.0])
def test_matches_pot_sinkhorn(method, omega):
    a, b, c = _problem(60, 45, 0)
    reg = 0.05
    res = divest.sinkhorn(a, b, c, reg, method=method, omega=omega, tol=1e-12, max_iter=10000)
    assert res.converged and res.marginal_error <= 1e-12
    p_pot, log = ot.sinkhorn(a, b, c, reg, stopThr=1e-13, numItermax=100000, log=True)
    np.testing.assert_allclose(res.plan, p_pot, rtol=1e-8, atol=1e-14)
    p_log, llog = ot.bregman.sinkhorn_log(a, b, c, reg, stopThr=1e-13, numItermax=100000, log=True)
    np.testing.assert_allclose(res.plan, p_log, rtol=1e-8, atol=1e-14)
    assert res.linear_cost == pytest.approx(
        float(ot.sinkhorn2(a, b, c, reg, stopThr=1e-13, numItermax=100000)), rel=1e-10
    )
    # Potentials: f = reg (log_u - ln a), up to a constant shift.
    f_pot = reg * (llog["log_u"] - np.log(a))
    g_pot = reg * (llog["log_v"] - np.log(b))
    shift = (res.f - f_pot).mean()
    np.testing.assert_allclose(res.f - shift, f_pot, atol=1e-9)
    np.testing.assert_allclose(res.g + shift, g_pot, atol=1e-9)
    # Entropic cost = <C,P> + reg KL(P | a⊗b) = <a,f> + <b,g> at convergence.
    p = res.plan
    kl = np.sum(p * np.log(p / np.outer(a, b))) - p.sum() + 1.0
    assert res.cost == pytest.approx(np.sum(c * p) + reg * kl, rel=1e-10)
    assert res.cost == pytest.approx(a @ res.f + b @ res.g, rel=1e-9)


@needs_ot
def test_small_reg_value_matches_pot_once_both_converge():
    # At reg=1e-3 POT's sinkhorn2 with stopThr=1e-9 stops on the L2 norm of one marginal
    # (its plan's L1 error is ~4e-8), about 3e-8 from its own converged value; divest stops
    # on the L1 error of both marginals. Run to 1e-12, both agree to ~1e-10 (n=2000: 9e-11).
    rng = np.random.default_rng(5)
    n = 300
    x, y = rng.random((n, 2)), rng.random((n, 2))
    c = ((x[:, None] - y[None]) ** 2).sum(-1)
    c /= c.max()
    a = np.full(n, 1.0 / n)
    reg = 1e-3
    pot = float(ot.sinkhorn2(a, a, c, reg, stopThr=1e-12, numItermax=100000))
    tight = divest.sinkhorn(a, a, c, reg, tol=1e-12, max_iter=100000, return_plan=False)
    assert tight.converged
    assert tight.linear_cost == pytest.approx(pot, rel=1e-8)
    # divest's own tol=1e-9 value is already within 1e-8 of the converged one.
    loose = divest.sinkhorn(a, a, c, reg, tol=1e-9, max_iter=100000, return_plan=False)
    assert loose.converged and loose.marginal_error <= 1e-9
    assert loose.linear_cost == pytest.approx(pot, rel=1e-8)


def test_zero_weights_small_eps_no_nan_and_scaling():
    a, b, c = _problem(80, 70, 1, zero_a=(0, 5), zero_b=(3,))
    for reg in (1.0, 1e-2, 1e-3, 1e-4):
        res = divest.sinkhorn(a, b, c, reg, scaling=0.5, max_iter=50000, tol=1e-9)
        assert np.isfinite(res.plan).all() and np.isfinite(res.f).all() and np.isfinite(res.g).all()
        assert res.converged
        assert _plan_marginal_error(res.plan, a, b) <= 1.01e-9
        assert (res.plan[[0, 5]] == 0).all() and (res.plan[:, 3] == 0).all()
    # Log and kernel forms agree at tiny reg.
    r1 = divest.sinkhorn(a, b, c, 1e-3, method="log", tol=1e-10, max_iter=50000)
    r2 = divest.sinkhorn(a, b, c, 1e-3, method="kernel", tol=1e-10, max_iter=50000)
    assert r1.cost == pytest.approx(r2.cost, rel=1e-9)


def test_duplicated_points_and_float32():
    rng = np.random.default_rng(3)
    x = rng.random((30, 2))
    x = np.vstack([x, x[:10]])
    c = ((x[:, None] - x[None]) ** 2).sum(-1)
    a = np.full(40, 1 / 40)
    r64 = divest.sinkhorn(a, a, c, 1e-2, tol=1e-9, max_iter=20000)
    r32 = divest.sinkhorn(a, a, c.astype(np.float32), 1e-2, tol=1e-6, max_iter=20000)
    assert r32.plan.dtype == np.float32 and r32.f.dtype == np.float32
    assert r64.plan.dtype == np.float64
    assert r32.converged and np.isfinite(r32.plan).all()
    assert r32.cost == pytest.approx(r64.cost, rel=1e-5)


def test_not_converged_warns_and_returns_last_iterate():
    a, b, c = _problem(50, 50, 4)
    with pytest.warns(divest.ConvergenceWarning, match="did not converge"):
        res = divest.sinkhorn(a, b, c, 1e-3, max_iter=3, omega=1.0)
    assert not res.converged and res.n_iter == 3
    assert res.marginal_error == pytest.approx(_plan_marginal_error(res.plan, a, b), rel=1e-6)
    # The third iterate of plain log-domain Sinkhorn (rows first, from zero potentials).
    from scipy.special import logsumexp

    eps, f, g = 1e-3, np.zeros(50), np.zeros(50)
    for _ in range(3):
        f = -eps * logsumexp(np.log(b)[None, :] + (g[None, :] - c) / eps, axis=1)
        g = -eps * logsumexp(np.log(a)[:, None] + (f[:, None] - c) / eps, axis=0)
    p3 = np.outer(a, b) * np.exp((f[:, None] + g[None, :] - c) / eps)
    np.testing.assert_allclose(res.plan, p3, rtol=1e-9, atol=1e-300)


def test_warm_start_and_no_plan():
    a, b, c = _problem(40, 30, 5)
    r = divest.sinkhorn(a, b, c, 0.02, tol=1e-10)
    r2 = divest.sinkhorn(a, b, c, 0.02, tol=1e-10, init=(r.f, r.g), return_plan=False)
    assert r2.plan is None and r2.n_iter <= 1
    assert r2.cost == pytest.approx(r.cost, rel=1e-10)


def test_thread_count_does_not_change_result():
    a, b, c = _problem(300, 200, 6)
    with divest.threads(1):
        r1 = divest.sinkhorn(a, b, c, 0.01)
    with divest.threads(2):
        r2 = divest.sinkhorn(a, b, c, 0.01)
    assert np.array_equal(r1.plan, r2.plan) and r1.n_iter == r2.n_iter


def test_result_is_frozen():
    a, b, c = _problem(5, 5, 7)
    r = divest.sinkhorn(a, b, c, 0.1)
    with pytest.raises(AttributeError):
        r.cost = 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(a=[-0.5, 1.5], b=[0.5, 0.5]), "non-negative"),
        (dict(a=[0.0, 0.0], b=[0.5, 0.5]), "sum to zero"),
        (dict(a=[0.5, 0.5], b=[0.2, 0.2]), "sinkhorn_unbalanced"),
        (dict(a=[0.5, 0.5, 0.0], b=[0.5, 0.5]), r"shape \(2,\)"),
        (dict(cost=[[0.0, np.nan], [1.0, 0.0]]), "NaN or inf"),
        (dict(cost=[[0.0, np.inf], [1.0, 0.0]]), "NaN or inf"),
        (dict(reg=0.0), "reg must be positive"),
        (dict(reg=-1.0), "reg must be positive"),
        (dict(method="fast"), "method must be"),
        (dict(scaling=1.5), "scaling"),
        (dict(omega=2.5), "omega"),
        (dict(cost=np.zeros(4)), "2-D"),
    ],
)
def test_bad_inputs(kwargs, match):
    args = dict(a=[0.5, 0.5], b=[0.5, 0.5], cost=[[0.0, 1.0], [1.0, 0.0]], reg=0.1)
    extra = {k: kwargs.pop(k) for k in ("method", "scaling", "omega") if k in kwargs}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        divest.sinkhorn(args["a"], args["b"], args["cost"], args["reg"], **extra)


def test_complex_cost_is_type_error():
    with pytest.raises(TypeError):
        divest.sinkhorn([1.0], [1.0], np.ones((1, 1), complex), 0.1)


@needs_ot
@pytest.mark.parametrize("reg_m", [0.05, 1.0, 10.0])
def test_unbalanced_matches_pot(reg_m):
    a, b, c = _problem(40, 30, 8)
    b = 2.5 * b
    reg = 0.05
    res = divest.sinkhorn_unbalanced(a, b, c, reg, reg_m, tol=1e-12, max_iter=20000)
    assert res.converged
    p, log = ot.unbalanced.sinkhorn_unbalanced(
        a, b, c, reg, reg_m, reg_type="kl", stopThr=1e-15, numItermax=200000, log=True
    )
    np.testing.assert_allclose(res.plan, p, rtol=1e-8, atol=1e-15)
    assert res.linear_cost == pytest.approx(float(log["cost"]), rel=1e-9)
    mass = res.plan.sum()
    pot_total = (
        res.cost
        - reg * (a.sum() * b.sum() - mass)
        - reg_m * (a.sum() - mass)
        - reg_m * (b.sum() - mass)
    )
    assert pot_total == pytest.approx(float(log["total_cost"]), rel=1e-8, abs=1e-9 * reg_m)
    np.testing.assert_allclose(np.exp(res.f / reg), np.exp(log["logu"]), rtol=1e-7)
    # Optimality conditions of the KL-relaxed problem.
    np.testing.assert_allclose(res.plan.sum(1), a * np.exp(-res.f / reg_m), rtol=1e-9)


def test_unbalanced_large_reg_m_is_balanced():
    a, b, c = _problem(20, 20, 9)
    r = divest.sinkhorn(a, b, c, 0.1, tol=1e-12)
    u = divest.sinkhorn_unbalanced(a, b, c, 0.1, np.inf, tol=1e-12)
    np.testing.assert_allclose(u.plan, r.plan, rtol=1e-10)
    with pytest.raises(ValueError, match="reg_m"):
        divest.sinkhorn_unbalanced(a, b, c, 0.1, -1.0)


@needs_ot
@pytest.mark.parametrize("n", [16, 27])  # 27: a 16-row unit, a group of 8 and a tail of 3
def test_batch_matches_loop_and_pot(n):
    rng = np.random.default_rng(10)
    nb, m = 12, 11
    a = rng.random((nb, n)) + 0.05
    b = rng.random((nb, m)) + 0.05
    a /= a.sum(1, keepdims=True)
    b /= b.sum(1, keepdims=True)
    a[3, 2] = 0.0
    a[3] /= a[3].sum()
    c = rng.random((nb, n, m))
    res = divest.sinkhorn_batch(a, b, c, 0.05, tol=1e-11, return_plan=True, max_iter=5000)
    assert res.converged.all() and res.plan.shape == (nb, n, m) and res.f.shape == (nb, n)
    for k in range(nb):
        one = divest.sinkhorn(a[k], b[k], c[k], 0.05, tol=1e-11, max_iter=5000)
        assert res.cost[k] == pytest.approx(one.cost, rel=1e-12)
        assert res.n_iter[k] == one.n_iter
        ref = ot.sinkhorn2(a[k], b[k], c[k], 0.05, stopThr=1e-13, numItermax=100000)
        assert res.linear_cost[k] == pytest.approx(float(ref), rel=1e-9)
    # Shared cost, float32.
    r32 = divest.sinkhorn_batch(a, b, c[0].astype(np.float32), 0.05, tol=1e-6)
    assert r32.f.dtype == np.float32
    for k in (0, 5):
        one = divest.sinkhorn(a[k], b[k], c[0], 0.05, tol=1e-10)
        assert r32.cost[k] == pytest.approx(one.cost, rel=1e-6)


@needs_ot
def test_batch_unbalanced_and_errors():
    rng = np.random.default_rng(11)
    a, b = rng.random((3, 5)), rng.random((3, 4))
    c = rng.random((5, 4))
    res = divest.sinkhorn_batch(a, b, c, 0.1, reg_m=1.0, tol=1e-12, return_plan=True)
    p = ot.unbalanced.sinkhorn_unbalanced(a[1], b[1], c, 0.1, 1.0, stopThr=1e-15, numItermax=100000)
    np.testing.assert_allclose(res.plan[1], p, rtol=1e-8)
    with pytest.raises(ValueError, match="different total masses"):
        divest.sinkhorn_batch(a, b, c, 0.1)
    with pytest.raises(ValueError, match="shape"):
        divest.sinkhorn_batch(a, b, rng.random((2, 5, 4)), 0.1, reg_m=1.0)
    # The weight checks read the row sums and minima first; the messages are unchanged.
    for bad, match in (
        (np.nan, "a contains NaN or inf"),
        (np.inf, "a contains NaN or inf"),
        (-0.5, "must be non-negative"),
    ):
        ab = a.copy()
        ab[1, 2] = bad
        with pytest.raises(ValueError, match=match):
            divest.sinkhorn_batch(ab, b, c, 0.1, reg_m=1.0)
    with pytest.raises(ValueError, match="b contains NaN or inf"):
        divest.sinkhorn_batch(a, np.where(b > 0.5, np.nan, b), c, 0.1, reg_m=1.0)
    with pytest.warns(divest.ConvergenceWarning, match="problems did not converge"):
        divest.sinkhorn_batch(a, b, c, 1e-3, reg_m=1.0, max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        divest.sinkhorn_batch(a / a.sum(1, keepdims=True), b / b.sum(1, keepdims=True), c, 0.1)


@pytest.mark.parametrize("kw", [{}, {"method": "log"}, {"reg_m": 1.0}])
def test_batch_rejects_non_finite_costs_on_every_path(kw):
    rng = np.random.default_rng(13)
    a = np.full((3, 9), 1 / 9)
    c = rng.random((3, 9, 9))
    for bad in (np.nan, np.inf):
        cb = c.copy()
        cb[2, 8, 8] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            divest.sinkhorn_batch(a, a, cb, 0.1, **kw)
        with pytest.raises(ValueError, match="NaN or inf"):
            divest.sinkhorn_batch(a, a, cb[2].astype(np.float32), 0.1, **kw)


def _dense_entropic(x, y, a, b, eps, p):
    c = np.sqrt(((x[:, None] - y[None]) ** 2).sum(-1)) ** p
    plan = ot.bregman.sinkhorn_log(a, b, c, eps, stopThr=1e-11, numItermax=20000)
    mask = plan > 0
    kl = np.sum(plan[mask] * np.log(plan[mask] / np.outer(a, b)[mask])) - plan.sum() + 1.0
    return np.sum(c * plan) + eps * kl, plan, c


@needs_ot
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("d", [2, 12])
def test_divergence_matches_dense_pot(p, d):
    rng = np.random.default_rng(20 + d)
    n, m = 60, 45
    x = rng.standard_normal((n, d)) * (2 / d) ** 0.5
    y = rng.standard_normal((m, d)) * 0.7 * (2 / d) ** 0.5 + 0.5
    a = rng.random(n) + 0.1
    b = rng.random(m) + 0.1
    a[3] = 0.0
    a, b = a / a.sum(), b / b.sum()
    eps = 0.5 if p == 2 else 0.3
    res = divest.sinkhorn_divergence(x, y, a, b, eps=eps, p=p, tol=1e-12, max_iter=5000)
    assert res.converged
    oab, pab, cab = _dense_entropic(x, y, a, b, eps, p)
    oaa, paa, caa = _dense_entropic(x, x, a, a, eps, p)
    obb, _, _ = _dense_entropic(y, y, b, b, eps, p)
    want = oab - 0.5 * oaa - 0.5 * obb
    assert res.value == pytest.approx(want, rel=1e-8, abs=1e-10)
    assert res.value >= 0
    assert a @ res.f + b @ res.g == pytest.approx(res.value, rel=1e-8)

    # Gradient: Σ_j P_ij ∇_x C(x_i, y_j) − Σ_k P^{aa}_ik ∇_x C(x_i, x_k).
    def expect(plan, pts):
        diff = x[:, None, :] - pts[None, :, :]
        r = np.sqrt((diff**2).sum(-1))
        if p == 2:
            gc = 2 * diff
        else:
            gc = np.where(r[..., None] > 0, diff / np.maximum(r, 1e-300)[..., None], 0.0)
        return (plan[..., None] * gc).sum(1)

    want_grad = expect(pab, y) - expect(paa, x)
    np.testing.assert_allclose(res.grad, want_grad, atol=1e-8)


def test_divergence_gradient_finite_difference_and_identity():
    rng = np.random.default_rng(30)
    x, y = rng.random((25, 2)), rng.random((30, 2))
    r = divest.sinkhorn_divergence(x, y, eps=0.05, tol=1e-13, max_iter=20000)
    h = 1e-6
    for i, k in [(0, 0), (7, 1), (24, 0)]:
        xp, xm = x.copy(), x.copy()
        xp[i, k] += h
        xm[i, k] -= h
        vp = divest.sinkhorn_divergence(xp, y, eps=0.05, tol=1e-13, max_iter=20000).value
        vm = divest.sinkhorn_divergence(xm, y, eps=0.05, tol=1e-13, max_iter=20000).value
        assert (vp - vm) / (2 * h) == pytest.approx(r.grad[i, k], rel=1e-5, abs=1e-8)
    same = divest.sinkhorn_divergence(x, x, eps=0.05, tol=1e-12)
    assert abs(same.value) < 1e-10 and np.abs(same.grad).max() < 1e-8


@needs_ot
def test_divergence_float32_duplicates_and_undebiased():
    rng = np.random.default_rng(31)
    x = rng.random((40, 3))
    x = np.vstack([x, x[:5]])
    y = rng.random((35, 3)) + 0.2
    r64 = divest.sinkhorn_divergence(x, y, eps=1e-3, tol=1e-7, max_iter=20000)
    r32 = divest.sinkhorn_divergence(
        x.astype(np.float32), y.astype(np.float32), eps=1e-3, tol=1e-5, max_iter=20000
    )
    assert r32.grad.dtype == np.float32 and r32.f.dtype == np.float32
    assert np.isfinite(r32.grad).all() and np.isfinite(r64.grad).all()
    assert r32.value == pytest.approx(r64.value, rel=1e-3)
    nb = divest.sinkhorn_divergence(x, y, eps=0.1, debias=False, tol=1e-12, max_iter=5000)
    a = np.full(45, 1 / 45)
    b = np.full(35, 1 / 35)
    assert nb.value == pytest.approx(_dense_entropic(x, y, a, b, 0.1, 2)[0], rel=1e-8)


def test_divergence_geomloss_conversion_if_installed():
    geomloss = pytest.importorskip("geomloss")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(32)
    x, y = rng.random((200, 3)), rng.random((150, 3))
    sigma = 0.1
    loss = geomloss.SamplesLoss("sinkhorn", p=2, blur=sigma, scaling=0.99, debias=True)
    gl = float(loss(torch.from_numpy(x), torch.from_numpy(y)))
    # Same schedule and extrapolation: equal to rounding, not merely to GeomLoss's accuracy.
    ours = divest.sinkhorn_divergence(x, y, eps=2 * sigma**2, p=2, scaling=0.99).value / 2
    assert ours == pytest.approx(gl, rel=1e-9)


def test_divergence_bad_inputs():
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match="eps"):
        divest.sinkhorn_divergence(x, x, eps=0.0)
    with pytest.raises(ValueError, match="p must be 1 or 2"):
        divest.sinkhorn_divergence(x, x, eps=0.1, p=3)
    with pytest.raises(ValueError, match="dimension"):
        divest.sinkhorn_divergence(x, np.zeros((3, 3)), eps=0.1)
    with pytest.raises(ValueError, match="scaling"):
        divest.sinkhorn_divergence(x, x, eps=0.1, scaling=1.0)
    with pytest.raises(ValueError, match="non-negative"):
        divest.sinkhorn_divergence(x, x, [1, -1, 1], eps=0.1)
    with pytest.raises(ValueError, match="NaN"):
        divest.sinkhorn_divergence(np.full((3, 2), np.nan), x, eps=0.1)
    with pytest.warns(divest.ConvergenceWarning):
        divest.sinkhorn_divergence(
            np.random.default_rng(0).random((20, 2)), x, eps=1e-3, max_iter=1, tol=1e-9
        )
    with pytest.raises(ValueError, match="tol"):
        divest.sinkhorn_divergence(x, x, eps=0.1, tol=-1.0)


def _geomloss_schedule_reference(x, y, a, b, eps, p, scaling):
    """GeomLoss's tensorized loop in divest's units (cost |x − y|^p, ε₀ as documented),
    written in NumPy from the algorithm's description: returns the value and the four
    final potentials."""
    from scipy.special import logsumexp

    def cost(u, v):
        d2 = ((u[:, None] - v[None]) ** 2).sum(-1)
        return d2 if p == 2 else np.sqrt(d2)

    with np.errstate(divide="ignore"):
        la, lb = np.log(a), np.log(b)
    cxy, cxx, cyy = cost(x, y), cost(x, x), cost(y, y)

    def sm(e, c, h):
        return -e * logsumexp(h[None] - c / e, axis=1)

    diam = np.linalg.norm(np.maximum(x.max(0), y.max(0)) - np.minimum(x.min(0), y.min(0)))
    e0 = diam**p * (2 if p == 2 else 1)
    steps = np.arange(np.log(e0), np.log(eps), p * np.log(scaling))
    sched = [e0] + list(np.exp(steps)) + [eps]
    e = sched[0]
    with np.errstate(divide="ignore"):
        f, g = sm(e, cxy, lb), sm(e, cxy.T, la)
        fa, gb = sm(e, cxx, la), sm(e, cyy, lb)
        for e in sched:
            ft, gt = sm(e, cxy, lb + g / e), sm(e, cxy.T, la + f / e)
            fat, gbt = sm(e, cxx, la + fa / e), sm(e, cyy, lb + gb / e)
            f, g, fa, gb = (f + ft) / 2, (g + gt) / 2, (fa + fat) / 2, (gb + gbt) / 2
        f, g, fa, gb = (
            sm(e, cxy, lb + g / e),
            sm(e, cxy.T, la + f / e),
            sm(e, cxx, la + fa / e),
            sm(e, cyy, lb + gb / e),
        )
    return a @ (f - fa) + b @ (g - gb), (f, g, fa, gb), (cxy, cxx, cyy)


@pytest.mark.parametrize("p", [1, 2])
def test_divergence_default_is_geomloss_schedule_with_honest_error(p):
    rng = np.random.default_rng(40 + p)
    x, y = rng.random((80, 3)), rng.random((70, 3)) * 0.9 + 0.2
    a, b = rng.random(80) + 0.1, rng.random(70) + 0.1
    a[5] = 0.0
    a, b = a / a.sum(), b / b.sum()
    eps = 2 * 0.05**2 if p == 2 else 0.05
    res = divest.sinkhorn_divergence(x, y, a, b, eps=eps, p=p, scaling=0.9)
    want, (f, g, fa, gb), (cxy, cxx, cyy) = _geomloss_schedule_reference(x, y, a, b, eps, p, 0.9)
    assert res.value == pytest.approx(want, rel=1e-11)
    np.testing.assert_allclose(res.f[a > 0], (f - fa)[a > 0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.g, g - gb, rtol=1e-9, atol=1e-12)
    # Nothing was checked against a tolerance: no convergence is claimed.
    assert res.converged is None
    # marginal_error is that of the plans built from the returned potentials.
    with np.errstate(divide="ignore"):
        pxy = a[:, None] * b[None] * np.exp((f[:, None] + g[None] - cxy) / eps)
        pxx = a[:, None] * a[None] * np.exp((fa[:, None] + fa[None] - cxx) / eps)
        pyy = b[:, None] * b[None] * np.exp((gb[:, None] + gb[None] - cyy) / eps)
    errs = [
        _plan_marginal_error(pxy, a, b),
        _plan_marginal_error(pxx, a, a),
        _plan_marginal_error(pyy, b, b),
    ]
    assert res.marginal_error == pytest.approx(max(errs), rel=1e-8)
    assert res.marginal_error > 1e-6  # the schedule alone does not converge here
    # Continuing to a tolerance converges, and the schedule's value is within its accuracy.
    tight = divest.sinkhorn_divergence(x, y, a, b, eps=eps, p=p, tol=1e-10, max_iter=100000)
    assert tight.converged is True and tight.marginal_error <= 1e-10
    assert res.value == pytest.approx(tight.value, rel=0.1)
    loose = divest.sinkhorn_divergence(x, y, a, b, eps=eps, p=p, tol=1e-6, max_iter=100000)
    assert loose.converged and loose.marginal_error <= 1e-6
    assert loose.value == pytest.approx(tight.value, rel=1e-5)


def test_ctrl_c_interrupts_long_sinkhorn():
    import _thread
    import signal
    import threading
    import time

    a, b, c = _problem(3000, 3000, 50)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, _thread.interrupt_main)
    try:
        t0 = time.perf_counter()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            # tol=0 never stops by itself: minutes of work without the interrupt.
            divest.sinkhorn(a, b, c, 1e-3, tol=0.0, max_iter=10**7, method="log", return_plan=False)
        elapsed = time.perf_counter() - t0
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, old)
    assert elapsed < 2.0, f"took {elapsed:.2f} s to stop"
    assert divest.sinkhorn(a[:3] / a[:3].sum(), b[:3] / b[:3].sum(), c[:3, :3], 0.1).converged


def test_divergence_extra_memory_does_not_grow_with_n():
    # Rust allocations are invisible to tracemalloc: measure the peak RSS in a subprocess.
    # ru_maxrss is inherited across fork + exec on Linux (the child would start at this
    # big pytest process's peak), so read the fresh process's own high-water mark, VmHWM.
    # 20000 points on the gradient's side (its pass once kept 40 MB of block buffers).
    import subprocess
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/self/status")
    code = """
import numpy as np, divest
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
rng = np.random.default_rng(0)
x, y = rng.random((20000, 3)), rng.random((64, 3))
divest.sinkhorn_divergence(x[:10], y, eps=0.5)
before = hwm()
r = divest.sinkhorn_divergence(x, y, eps=0.5, debias=False, grad=True)
assert np.isfinite(r.grad).all()
print(hwm() - before)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    extra_mb = float(out.stdout.split()[-1])
    assert extra_mb < 20, f"{extra_mb:.1f} MB of extra memory"


@needs_ot
@pytest.mark.parametrize("omega", [None, 1.0, 1.6])
def test_batch_small_path_and_fallback_match_pot(omega):
    # Costs scaled per problem so that (max C − min C)/reg spans both sides of the
    # kernel-domain limit (150): the small scaling-domain path and the general solver.
    rng = np.random.default_rng(12)
    nb, n, m = 8, 20, 15
    a = rng.random((nb, n)) + 0.05
    b = rng.random((nb, m)) + 0.05
    b[2, :4] = 0.0
    a /= a.sum(1, keepdims=True)
    b /= b.sum(1, keepdims=True)
    scale = np.array([0.5, 1, 2, 4, 6, 8, 10, 12])[:, None, None]
    c = rng.random((nb, n, m)) * scale + 3.0
    reg = 0.05
    res = divest.sinkhorn_batch(
        a, b, c, reg, tol=2e-12, max_iter=100000, omega=omega, return_plan=True
    )
    assert res.converged.all() and (res.marginal_error <= 2e-12).all()
    for k in range(nb):
        p_log = ot.bregman.sinkhorn_log(a[k], b[k], c[k], reg, stopThr=1e-13, numItermax=200000)
        np.testing.assert_allclose(res.plan[k], p_log, rtol=1e-8, atol=1e-15)
        assert res.linear_cost[k] == pytest.approx(float(np.sum(c[k] * p_log)), rel=1e-10)
        one = divest.sinkhorn(a[k], b[k], c[k], reg, tol=2e-12, max_iter=100000, omega=omega)
        assert res.cost[k] == pytest.approx(one.cost, rel=1e-11)
        # Plans of the returned potentials: P = a b exp((f + g − C)/reg).
        plan = (
            a[k][:, None] * b[k][None] * np.exp((res.f[k][:, None] + res.g[k][None] - c[k]) / reg)
        )
        np.testing.assert_allclose(plan, res.plan[k], rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize("reg", [3.0, 1.0, 0.3, 0.01])
def test_automatic_omega_is_never_much_slower_than_plain(reg):
    # Large reg: plain Sinkhorn needs a handful of iterations and a fixed start at
    # omega = 1.25 would overshoot (rate 0.25); small reg: relaxation must pay off.
    rng = np.random.default_rng(41)
    x, y = rng.random((120, 2)), rng.random((100, 2))
    c = ((x[:, None] - y[None]) ** 2).sum(-1)
    c /= c.max()
    a, b = rng.random(120) + 0.1, np.full(100, 1 / 100)
    a /= a.sum()
    auto = divest.sinkhorn(a, b, c, reg, tol=1e-9, max_iter=100000, return_plan=False)
    plain = divest.sinkhorn(a, b, c, reg, tol=1e-9, max_iter=100000, return_plan=False, omega=1.0)
    assert auto.converged and plain.converged
    assert auto.n_iter <= plain.n_iter + 2
    if reg <= 0.01:
        assert auto.n_iter < 0.5 * plain.n_iter
    assert auto.linear_cost == pytest.approx(plain.linear_cost, rel=1e-7)
