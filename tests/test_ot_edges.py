"""Hard edges of the optimal transport family (issue 18): coinciding clouds, ε-scaling in
batches, reg below the resolution of the costs, extreme scales, absurd counts, and the
docstring claims about costs and POT's iterates."""

import math
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import divest

try:  # only the tests that compare with POT skip without it
    import ot
except ImportError:
    ot = None
needs_ot = pytest.mark.skipif(ot is None, reason="POT is not installed")


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", divest.ConvergenceWarning)
        return fn(*args, **kw)


# --- sinkhorn_divergence: coinciding and nearly coinciding clouds -------------------------


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("debias", [True, False])
def test_divergence_coinciding_points_give_exact_zero(p, debias):
    z = np.zeros((1, 1))
    r = divest.sinkhorn_divergence(z, z, eps=0.1, p=p, debias=debias)
    assert r.value == 0.0
    assert np.array_equal(r.grad, np.zeros((1, 1)))
    # Several coinciding points with unequal weights, float32 too, and with tol.
    x = np.tile([3.0, -2.0, 1e-3], (5, 1))
    y = np.tile([3.0, -2.0, 1e-3], (7, 1))
    for dt in (np.float64, np.float32):
        r = divest.sinkhorn_divergence(
            x.astype(dt),
            y.astype(dt),
            np.arange(1.0, 6.0),
            None,
            eps=1e-3,
            p=p,
            debias=debias,
            tol=1e-9,
        )
        assert r.value == 0.0 and r.converged is True
        assert np.array_equal(r.grad, np.zeros_like(x)) and r.grad.dtype == dt
        assert np.array_equal(r.f, np.zeros(5)) and np.array_equal(r.g, np.zeros(7))


@pytest.mark.parametrize("s", [1e-4, 1e-6, 1e-8, 1e-100, 1e-200])
def test_divergence_nearly_coinciding_clouds_tiny_nonnegative(s):
    # For costs far below ε, S_ε = |μ_a − μ_b|² − O(s⁴/ε) (the ε → ∞ expansion: the plans
    # tend to a⊗b), with rounding of order ε·1e-16 in the log-sum-exps.
    rng = np.random.default_rng(1)
    c = np.array([0.3, -0.7])
    x = c + s * rng.random((6, 2))
    y = c + s * rng.random((9, 2))
    eps = 0.1
    dmu = x.mean(0) - y.mean(0)
    want = float(dmu @ dmu)
    for tol in (None, 1e-12):
        r = divest.sinkhorn_divergence(x, y, eps=eps, p=2, tol=tol)
        assert r.value >= 0.0
        assert abs(r.value - want) <= 1e-5 * want + 1e-15 * eps, (r.value, want)
        g = 2.0 / 6 * dmu
        assert np.abs(r.grad - g).max() <= 1e-5 * np.abs(g).max() + 1e-14 * eps * s
    # p = 1: non-negative and at most the ε → ∞ bound ½·energy distance ≤ |Δ| scale.
    if s >= 1e-8:
        r = divest.sinkhorn_divergence(x, y, eps=eps, p=1)
        assert 0.0 <= r.value <= 2 * s * math.sqrt(2)


@needs_ot
def test_divergence_moderate_case_matches_dense_solves():
    # An independent oracle at a scale where nothing is near the limits: the three dense
    # entropic problems solved by POT's log-domain Sinkhorn.
    rng = np.random.default_rng(2)
    x, y = rng.random((8, 2)) * 1e-3, rng.random((6, 2)) * 1e-3 + 2e-4
    eps = 1e-7

    def ot_eps(u, v):
        C = ((u[:, None] - v[None]) ** 2).sum(-1)
        a, b = np.full(len(u), 1 / len(u)), np.full(len(v), 1 / len(v))
        P = ot.bregman.sinkhorn_log(a, b, C, eps, stopThr=1e-14, numItermax=100000)
        kl = np.sum(P * np.log(P / np.outer(a, b))) - P.sum() + 1.0
        return float(np.sum(C * P) + eps * kl)

    want = ot_eps(x, y) - 0.5 * ot_eps(x, x) - 0.5 * ot_eps(y, y)
    r = divest.sinkhorn_divergence(x, y, eps=eps, p=2, tol=1e-12, max_iter=100000)
    assert r.value == pytest.approx(want, rel=1e-6)


def test_divergence_extreme_scales_are_exact_rescalings():
    rng = np.random.default_rng(3)
    x, y = rng.random((7, 2)), rng.random((5, 2)) + 0.4
    for p, k in [(1, 1000), (1, -1000), (2, 480), (2, -480)]:
        ref = divest.sinkhorn_divergence(x, y, eps=0.05, p=p, tol=1e-10, max_iter=10000)
        sx, sy = np.ldexp(x, k), np.ldexp(y, k)
        r = divest.sinkhorn_divergence(
            sx, sy, eps=math.ldexp(0.05, k * p), p=p, tol=1e-10, max_iter=10000
        )
        assert np.isfinite(r.value) and r.converged
        assert r.value == pytest.approx(math.ldexp(ref.value, k * p), rel=1e-9)
        np.testing.assert_allclose(
            r.grad,
            np.ldexp(ref.grad, k * (p - 1)),
            rtol=1e-7,
            atol=1e-9 * np.abs(np.ldexp(ref.grad, k * (p - 1))).max(),
        )
    # Costs beyond float64: a clear error naming the clouds, not inf or NaN.
    with pytest.raises(ValueError, match="rescale the clouds"):
        divest.sinkhorn_divergence(x * 1e300, y * 1e300, eps=1e300, p=2)


def test_divergence_huge_and_tiny_eps():
    rng = np.random.default_rng(4)
    x, y = rng.random((7, 2)), rng.random((5, 2)) + 1.0
    a = rng.random(7) + 0.1
    a /= a.sum()
    b = np.full(5, 0.2)
    mua, mub = a @ x, b @ y
    for eps in (1e12, 1e20, 1e300):
        r = divest.sinkhorn_divergence(x, y, a, b, eps=eps, p=2)
        assert r.value == pytest.approx(float((mua - mub) @ (mua - mub)), rel=1e-8)
        np.testing.assert_allclose(r.grad, 2 * a[:, None] * (mua - mub), rtol=1e-8)
        assert r.value == pytest.approx(a @ r.f + b @ r.g, rel=1e-9)
        u = divest.sinkhorn_divergence(x, y, a, b, eps=eps, p=2, debias=False)
        va = a @ ((x - mua) ** 2).sum(1)
        vb = b @ ((y - mub) ** 2).sum(1)
        assert u.value == pytest.approx(va + vb + (mua - mub) @ (mua - mub), rel=1e-8)
    # Continuity at the switch to the limit (1e9·D²).
    lo = divest.sinkhorn_divergence(x, y, a, b, eps=1e8, p=2, tol=1e-12)
    hi = divest.sinkhorn_divergence(x, y, a, b, eps=1e11, p=2)
    assert lo.value == pytest.approx(hi.value, rel=1e-6)
    with pytest.raises(ValueError, match="eps"):
        divest.sinkhorn_divergence(x, y, eps=1e20, p=1)
    # ε below 1e-300·D^p: finite, the unregularised limit (a translation by a constant
    # vector of identical clouds: W_2² = |shift|²).
    z = rng.random((6, 2))
    for eps in (1e-300, 1e-310, 5e-324):
        r = divest.sinkhorn_divergence(z, z + [1.0, 0.5], eps=eps, p=2)
        assert r.value == pytest.approx(1.25, rel=1e-12)
        assert np.isfinite(r.grad).all() and np.isfinite(r.f).all()


def test_divergence_weights_with_overflowing_sum():
    rng = np.random.default_rng(5)
    x, y = rng.random((5, 2)), rng.random((4, 2))
    ref = divest.sinkhorn_divergence(x, y, eps=0.1)
    for w in (np.full(5, 1e308), np.full(5, 1e-320)):
        r = divest.sinkhorn_divergence(x, y, w, None, eps=0.1)
        assert r.value == pytest.approx(ref.value, rel=1e-12)


# --- sinkhorn_batch: ε-scaling -------------------------------------------------------------


@needs_ot
def test_batch_scaling_converges_at_small_reg_and_matches_single_solves():
    # Squared distances between sorted points on a line, rescaled to range 30, reg 1e-3:
    # plain Sinkhorn needs more than 10^4 iterations, ε-scaling fewer (problems 1, 2 and
    # 5 of this sequence; on the others one ε-scaling iteration per ε is not enough).
    rng = np.random.default_rng(6)
    n, m = 12, 10
    probs = []
    for k in range(6):
        x, y = np.sort(rng.random(n)), np.sort(rng.random(m))
        C = (x[:, None] - y[None]) ** 2
        C = 30 * (C - C.min()) / np.ptp(C)
        a = rng.random(n) + 0.05
        b = rng.random(m) + 0.05
        if k in (1, 2, 5):
            probs.append((a / a.sum(), b / b.sum(), C))
    A, Bw, C = (np.array(t) for t in zip(*probs))
    B, reg = len(probs), 1e-3
    # Without ε-scaling the batch stops unconverged (the defect this test guards).
    with pytest.warns(divest.ConvergenceWarning):
        plain = divest.sinkhorn_batch(A, Bw, C, reg, max_iter=10_000)
    assert not plain.converged.any()
    res = divest.sinkhorn_batch(A, Bw, C, reg, scaling=0.9, max_iter=10_000, return_plan=True)
    assert res.converged.all() and (res.marginal_error <= 1e-9).all()
    for k in range(B):
        one = divest.sinkhorn(A[k], Bw[k], C[k], reg, scaling=0.9, max_iter=10_000)
        assert one.converged
        np.testing.assert_allclose(res.plan[k], one.plan, atol=1e-12)
        assert res.cost[k] == pytest.approx(one.cost, rel=1e-12)
        assert res.n_iter[k] == one.n_iter
        # POT's ε-scaling solver, where it reports convergence.
        P, log = ot.bregman.sinkhorn_epsilon_scaling(
            A[k], Bw[k], C[k], reg, numItermax=200, epsilon0=1e4, stopThr=1e-11, log=True
        )
        if log["err"][-1] < 1e-10:
            np.testing.assert_allclose(res.plan[k], P, atol=1e-8)
    # Shared cost, float32 and the log method take the same option.
    r32 = _quiet(
        divest.sinkhorn_batch,
        A,
        Bw,
        C[0].astype(np.float32),
        reg,
        scaling=0.9,
        max_iter=10_000,
        method="log",
    )
    one = _quiet(
        divest.sinkhorn, A[1], Bw[1], C[0], reg, scaling=0.9, max_iter=10_000, method="log"
    )
    assert r32.cost[1] == pytest.approx(one.cost, rel=1e-6)
    with pytest.raises(ValueError, match="scaling"):
        divest.sinkhorn_batch(A, Bw, C, reg, scaling=1.5)


# --- reg below the float64 resolution of the costs -----------------------------------------


def test_reg_below_cost_resolution_is_a_clear_error():
    rng = np.random.default_rng(7)
    C = 30.0 * rng.random((4, 5))
    a, b = np.full(4, 0.25), np.full(5, 0.2)
    floor = np.finfo(float).eps * C.max()
    calls = [
        lambda r: divest.sinkhorn(a, b, C, r, max_iter=3),
        lambda r: divest.sinkhorn(a, b, C, r, max_iter=3, method="log"),
        lambda r: divest.sinkhorn_unbalanced(a, b, C, r, 1.0, max_iter=3),
        lambda r: divest.sinkhorn_batch(a[None], b[None], C, r, max_iter=3),
        lambda r: divest.sinkhorn_batch(a[None], b[None], C, r, max_iter=3, method="log"),
    ]
    for call in calls:
        for r in (1e-16, 1e-300, floor * 0.99):
            with pytest.raises(ValueError, match=r"reg = .*smallest meaningful reg") as e:
                call(r)
            assert f"{floor:.3e}" in str(e.value)
        # Just above the floor: accepted (it may not converge in 3 iterations).
        res = _quiet(call, floor * 1.01)
        assert np.all(np.isfinite(res.cost))
    # Costs of exactly zero have no resolution limit; tiny costs scale the floor down.
    assert divest.sinkhorn(a, b, np.zeros((4, 5)), 1e-300).cost == pytest.approx(0.0, abs=1e-290)
    t = _quiet(divest.sinkhorn, a, b, C * 1e-290, 1e-291, max_iter=5000)
    assert np.isfinite(t.cost) and np.isfinite(t.plan).all()


# --- docstring claims ----------------------------------------------------------------------


def test_cost_is_potentials_plus_eps_mass_term():
    # cost = <a, f> + <b, g> + ε(m² − m) at convergence of a balanced problem of mass m.
    rng = np.random.default_rng(8)
    C = rng.random((6, 5))
    for m in (1.0, 3.7, 0.02):
        a = rng.random(6)
        a *= m / a.sum()
        b = rng.random(5)
        b *= m / b.sum()
        reg = 0.3
        r = divest.sinkhorn(a, b, C, reg, tol=1e-13, max_iter=10000)
        dual = a @ r.f + b @ r.g
        assert r.cost == pytest.approx(dual + reg * (m * m - m), rel=1e-10, abs=1e-12)
        # And the direct definition with the generalised KL.
        P = r.plan
        kl = np.sum(P * np.log(P / np.outer(a, b))) - P.sum() + m * m
        assert r.cost == pytest.approx(np.sum(C * P) + reg * kl, rel=1e-10)


@needs_ot
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_omega_one_iterates_are_pots_on_the_transposed_problem(k):
    rng = np.random.default_rng(9)
    n, m = 6, 4
    C = rng.random((n, m))
    a = rng.random(n) + 0.1
    a /= a.sum()
    b = rng.random(m) + 0.1
    b /= b.sum()
    reg = 0.1
    for method in ("kernel", "log"):
        r = _quiet(divest.sinkhorn, a, b, C, reg, omega=1, tol=0.0, max_iter=k, method=method)
        pt = ot.sinkhorn(
            b,
            a,
            C.T,
            reg,
            numItermax=k,
            stopThr=0.0,
            warmstart=(np.log(b), np.zeros(n)),
            warn=False,
        )
        np.testing.assert_allclose(r.plan, pt.T, rtol=1e-12, atol=1e-15)
        # ... and not ot.sinkhorn's own iterates on (a, b, C) (they differ before convergence).
        p0 = ot.sinkhorn(a, b, C, reg, numItermax=k, stopThr=0.0, warn=False)
        assert np.abs(r.plan - p0).max() > 1e-6


# --- edges of every kind on finite inputs --------------------------------------------------


def test_dense_layouts_dtypes_and_shapes():
    rng = np.random.default_rng(10)
    C = rng.random((4, 5)) * 3
    ref = divest.sinkhorn(None, None, C, 0.5)
    ro = C.copy()
    ro.flags.writeable = False
    big = np.zeros((8, 10))
    big[::2, ::2] = C
    for c in (np.asfortranarray(C), ro, big[::2, ::2]):
        r = divest.sinkhorn(None, None, c, 0.5)
        assert r.cost == ref.cost
    r32 = divest.sinkhorn(None, None, C.astype(np.float32), 0.5)
    assert r32.plan.dtype == np.float32 and r32.cost == pytest.approx(ref.cost, rel=1e-6)
    # One point against many, both ways; a single point.
    for c in (rng.random((1, 1000)), rng.random((1000, 1))):
        r = divest.sinkhorn(None, None, c, 0.1)
        assert r.converged and r.cost == pytest.approx(c.mean(), rel=1e-12)
    assert divest.sinkhorn(None, None, np.ones((1, 1)), 0.1).cost == pytest.approx(1.0)
    # Unnormalised weights of equal mass; mismatched and zero masses are clear errors.
    r = divest.sinkhorn(np.ones(4) * 5, np.ones(5) * 4, C, 0.5, tol=1e-10)
    assert r.converged and np.isfinite(r.cost)
    with pytest.raises(ValueError, match="total masses"):
        divest.sinkhorn(np.ones(4), np.ones(5), C, 0.5)
    with pytest.raises(ValueError, match="a must not sum to zero"):
        divest.sinkhorn(np.zeros(4), np.ones(5), C, 0.5)
    # max_iter beyond 64 bits is accepted (no limit), not an OverflowError.
    r = divest.sinkhorn(None, None, C, 0.5, max_iter=10**30)
    assert r.converged
    r = divest.sinkhorn_batch(np.full((2, 4), 0.25), np.full((2, 5), 0.2), C, 0.5, max_iter=10**30)
    assert r.converged.all()


def test_long_solves_stop_on_ctrl_c_whatever_the_problem_size():
    # A tiny problem with an absurd max_iter and tol=0 never stops by itself; before the fix
    # its work estimate kept it off the interrupt watcher and Ctrl-C was ignored forever.
    # Run in a child so that a regression is a failure, not a hung test run.
    code = textwrap.dedent("""
        import os, signal, threading, time, sys
        import numpy as np, divest
        # Small (40 x 40) but far from converging: reg 1e-4 on costs of range 30.
        C = 30.0 * np.random.default_rng(0).random((40, 40))
        x, y = np.random.default_rng(1).random((2, 40, 2))
        u = np.full((2, 40), 1 / 40)
        calls = [
            lambda: divest.sinkhorn(None, None, C, 1e-4, tol=0.0, max_iter=10**18),
            lambda: divest.sinkhorn(None, None, C, 1e-4, tol=0.0, max_iter=10**30,
                                    method="log"),
            lambda: divest.sinkhorn_unbalanced(None, None, C, 1e-4, 1.0, tol=0.0,
                                               max_iter=10**18),
            lambda: divest.sinkhorn_batch(u, u, C, 1e-4, tol=0.0, max_iter=10**18),
            lambda: divest.sinkhorn_divergence(x, y, eps=1e-3, tol=0.0,
                                               max_iter=10**18),
        ]
        for call in calls:
            threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
            t0 = time.perf_counter()
            try:
                call()
                print("returned")
                sys.exit(1)
            except KeyboardInterrupt:
                print(f"{time.perf_counter() - t0:.2f}")
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr
    for line in out.stdout.split()[:-1]:
        assert float(line) < 3.0  # the timer fires at 0.5 s


def test_extreme_magnitudes_of_reg_costs_masses_and_init():
    rng = np.random.default_rng(11)
    C = rng.random((4, 5)) * 3
    a = rng.random(4) + 0.1
    a /= a.sum()
    b = rng.random(5) + 0.1
    b /= b.sum()
    ref = divest.sinkhorn(a, b, C, 0.5, tol=1e-12)
    refu = divest.sinkhorn_unbalanced(a, b, C, 0.5, 2.0, tol=1e-12)
    # The problem scaled by 2^k (costs, reg, reg_m): the same plan, costs times 2^k.
    # (k = -1060 makes reg and the costs subnormal: compare with the rounded values.)
    for k in (-1060, -1000, 1000):
        if k == -1060:
            Ck, rk = np.ldexp(C, k), math.ldexp(0.5, k)
            ref = divest.sinkhorn(a, b, np.ldexp(Ck, -k), math.ldexp(rk, -k), tol=1e-12)
        else:
            ref = divest.sinkhorn(a, b, C, 0.5, tol=1e-12)
        r = divest.sinkhorn(a, b, np.ldexp(C, k), math.ldexp(0.5, k), tol=1e-12)
        np.testing.assert_allclose(r.plan, ref.plan, rtol=1e-12)
        assert r.cost == pytest.approx(math.ldexp(ref.cost, k), rel=1e-12)
        np.testing.assert_allclose(r.f, np.ldexp(ref.f, k), rtol=1e-9)
        if k != -1060:
            u = divest.sinkhorn_unbalanced(
                a, b, np.ldexp(C, k), math.ldexp(0.5, k), math.ldexp(2.0, k), tol=1e-12
            )
            np.testing.assert_allclose(u.plan, refu.plan, rtol=1e-10)
            assert u.cost == pytest.approx(math.ldexp(refu.cost, k), rel=1e-10)
        bt = divest.sinkhorn_batch(
            a[None], b[None], np.ldexp(C, k), math.ldexp(0.5, k), tol=1e-12, return_plan=True
        )
        np.testing.assert_allclose(bt.plan[0], ref.plan, rtol=1e-10)
        assert bt.cost[0] == pytest.approx(math.ldexp(ref.cost, k), rel=1e-10)
    # reg so large that the result would be rounding noise: a clear error.
    for call in (
        lambda: divest.sinkhorn(a, b, C, 1e300),
        lambda: divest.sinkhorn_unbalanced(a, b, C, 1e20, 1.0),
        lambda: divest.sinkhorn_batch(a[None], b[None], C, 1e300),
    ):
        with pytest.raises(ValueError, match="reg = .* too large"):
            call()
    ref = divest.sinkhorn(a, b, C, 0.5, tol=1e-12)
    ok = divest.sinkhorn(a, b, C, 1e6 * C.max(), tol=1e-12)
    assert ok.cost == pytest.approx(a @ C @ b, rel=1e-6)
    # Total masses whose product leaves float64: an error naming a and b, not NaN or inf.
    for M in (1e200, 1e307):
        aM, bM = a * M, b * M
        with pytest.raises(ValueError, match="a and b have total masses"):
            divest.sinkhorn(aM, bM, C, 0.5)
        with pytest.raises(ValueError, match="a and b have total masses"):
            divest.sinkhorn_unbalanced(aM, bM, C, 0.5, 1.0)
        with pytest.raises(ValueError, match=r"a\[0\] and b\[0\] have total masses"):
            divest.sinkhorn_batch(aM[None], bM[None], C, 0.5)
    r = divest.sinkhorn(a * 1e100, b * 1e100, C, 0.5, tol=1e-12 * 1e100)
    np.testing.assert_allclose(r.plan, ref.plan * 1e100, rtol=1e-9)
    # A warm start with huge opposite offsets (the same balanced iterate as (f, g)).
    w = divest.sinkhorn(a, b, C, 0.5, tol=1e-12, init=(ref.f + 1e300, ref.g - 1e300))
    assert w.cost == pytest.approx(ref.cost, rel=1e-12)
    np.testing.assert_allclose(w.plan, ref.plan, rtol=1e-9)


def test_unbalanced_reg_m_beyond_float64_resolution_is_the_balanced_problem():
    rng = np.random.default_rng(12)
    C = rng.random((4, 5)) * 3
    a = rng.random(4) + 0.1
    a /= a.sum()
    b = rng.random(5) + 0.1
    b /= b.sum()
    bal = divest.sinkhorn(a, b, C, 0.1, tol=1e-12)
    for reg_m in (1e20, 1e300):
        u = divest.sinkhorn_unbalanced(a, b, C, 0.1, reg_m, tol=1e-12)
        assert u.cost == pytest.approx(bal.cost, rel=1e-12)
        np.testing.assert_allclose(u.plan, bal.plan, rtol=1e-10)
        ub = divest.sinkhorn_batch(a[None], b[None], C, 0.1, reg_m=reg_m, tol=1e-12)
        assert ub.cost[0] == pytest.approx(bal.cost, rel=1e-10)
        with pytest.raises(ValueError, match="reg_m = .* masses differ"):
            divest.sinkhorn_unbalanced(a, 2 * b, C, 0.1, reg_m)
    # Just below the switch the unbalanced solver runs and agrees to O(reg²/reg_m).
    u = divest.sinkhorn_unbalanced(a, b, C, 0.1, 1e12, tol=1e-12)
    assert u.cost == pytest.approx(bal.cost, rel=1e-9)


def test_convergence_warnings_point_at_the_caller():
    C = np.random.default_rng(13).random((4, 5))
    for call in (
        lambda: divest.sinkhorn(None, None, C, 0.01, max_iter=1),
        lambda: divest.sinkhorn_unbalanced(None, None, C, 0.01, 1.0, max_iter=1),
        lambda: divest.sinkhorn_batch(
            np.full((1, 4), 0.25), np.full((1, 5), 0.2), C, 0.01, max_iter=1
        ),
        lambda: divest.sinkhorn_divergence(C, C[:3] ** 2, eps=0.01, tol=0.0, max_iter=1),
    ):
        with pytest.warns(divest.ConvergenceWarning) as rec:
            call()
        assert rec[0].filename == __file__
