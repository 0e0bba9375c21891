"""Ragged Sinkhorn batches: lists of problems of different sizes, and padded arrays with
a_mask/b_mask, solved in one Rust pass (``_core.sinkhorn_ragged_dense``).

Oracle: each problem solved alone (``sinkhorn_batch`` on a batch of one, which runs the
same per-problem solver): every field must be bitwise equal. Independent checks: POT's
``ot.sinkhorn2`` on the linear cost, the marginals of the returned plans."""

import warnings

import numpy as np
import pytest

import divest

try:
    import ot
except ImportError:  # pragma: no cover
    ot = None

needs_ot = pytest.mark.skipif(ot is None, reason="POT is not installed")

SIZES = [(1, 1), (3, 5), (16, 7), (40, 33), (3, 5), (97, 2), (2, 97), (1, 60), (64, 64)]


def _problem(rng, n, m, zeros=True, dtype=np.float64):
    x, y = rng.standard_normal((n, 2)), rng.standard_normal((m, 2)) + 0.3
    c = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1).astype(dtype)
    a, b = rng.random(n) + 0.05, rng.random(m) + 0.05
    if zeros and n > 2:
        a[1] = 0.0  # a zero weight
    if zeros and m > 3:
        b[-1] = 0.0
    return a / a.sum(), b / b.sum(), c


def _batch(seed=0, sizes=SIZES, **kw):
    rng = np.random.default_rng(seed)
    probs = [_problem(rng, n, m, **kw) for n, m in sizes]
    return tuple(list(t) for t in zip(*probs))


def _alone(a, b, c, reg, **kw):
    return divest.sinkhorn_batch(a[None], b[None], c[None], reg, return_plan=True, **kw)


def _same(r, k, alone, masked=None):
    """Problem k of the batch result r is bitwise the problem solved alone."""
    f, g, plan = r.f[k], r.g[k], r.plan[k]
    if masked is not None:
        am, bm = masked
        assert np.isnan(f[~am[k]]).all() and np.isnan(g[~bm[k]]).all()
        assert (plan[~am[k]] == 0).all() and (plan[:, ~bm[k]] == 0).all()
        f, g, plan = f[am[k]], g[bm[k]], plan[np.ix_(am[k], bm[k])]
    assert f.dtype == alone.f.dtype and plan.dtype == alone.plan.dtype
    assert np.array_equal(f, alone.f[0]) and np.array_equal(g, alone.g[0])
    assert np.array_equal(plan, alone.plan[0])
    for name in ("cost", "linear_cost", "n_iter", "converged", "marginal_error"):
        assert getattr(r, name)[k] == getattr(alone, name)[0], name


OPTIONS = [
    {},
    {"method": "log"},
    {"reg_m": 0.7},
    {"scaling": 0.5},
    {"omega": 1.6},
    {"omega": None},
    {"max_iter": 3},  # not converged
]


@pytest.mark.parametrize("kw", OPTIONS, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_ragged_list_equals_each_problem_alone(kw):
    a, b, c = _batch(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", divest.ConvergenceWarning)
        r = divest.sinkhorn_batch(a, b, c, 0.05, return_plan=True, **kw)
        assert len(r.f) == len(SIZES) and r.cost.shape == (len(SIZES),)
        for k in range(len(SIZES)):
            _same(r, k, _alone(a[k], b[k], c[k], 0.05, **kw))
    if "max_iter" in kw:
        assert not r.converged.all()


def _pad(a, b, c, rng, scattered):
    """Pads the problems into (B, N), (B, M), (B, N, M) with NaN/inf in the padding (which
    must never be read); the real entries are a prefix, or scattered positions."""
    nb = len(a)
    N, M = max(len(x) for x in a) + 2, max(len(y) for y in b) + 1
    A, Bw, C = np.full((nb, N), np.nan), np.full((nb, M), np.nan), np.full((nb, N, M), np.inf)
    am, bm = np.zeros((nb, N), bool), np.zeros((nb, M), bool)
    for k in range(nb):
        n, m = c[k].shape
        ri = np.sort(rng.permutation(N)[:n]) if scattered else np.arange(n)
        ci = np.sort(rng.permutation(M)[:m]) if scattered else np.arange(m)
        A[k, ri], Bw[k, ci], C[k][np.ix_(ri, ci)] = a[k], b[k], c[k]
        am[k, ri], bm[k, ci] = True, True
    return A, Bw, C.astype(c[0].dtype), am, bm


@pytest.mark.parametrize("scattered", [False, True])
@pytest.mark.parametrize("kw", OPTIONS[:4], ids=lambda d: ",".join(d) or "default")
def test_masked_padded_batch_equals_each_problem_alone(scattered, kw):
    a, b, c = _batch(2)
    A, Bw, C, am, bm = _pad(a, b, c, np.random.default_rng(3), scattered)
    before = [x.copy() for x in (A, Bw, C, am, bm)]
    r = divest.sinkhorn_batch(A, Bw, C, 0.05, return_plan=True, a_mask=am, b_mask=bm, **kw)
    assert r.f.shape == A.shape and r.g.shape == Bw.shape and r.plan.shape == C.shape
    rl = divest.sinkhorn_batch(a, b, c, 0.05, return_plan=True, **kw)
    for k in range(len(a)):
        _same(r, k, _alone(a[k], b[k], c[k], 0.05, **kw), masked=(am, bm))
        assert np.array_equal(r.f[k][am[k]], rl.f[k])
    for x, y in zip((A, Bw, C, am, bm), before):  # inputs untouched
        assert np.array_equal(x, y, equal_nan=True)


def test_one_mask_only_and_all_true_masks_equal_the_dense_batch():
    rng = np.random.default_rng(4)
    probs = [_problem(rng, 6, 5) for _ in range(4)]
    A, Bw, C = (np.stack(t) for t in zip(*probs))
    dense = divest.sinkhorn_batch(A, Bw, C, 0.1, return_plan=True)
    for am, bm in [(np.ones((4, 6), bool), None), (None, np.ones((4, 5), bool))]:
        r = divest.sinkhorn_batch(A, Bw, C, 0.1, return_plan=True, a_mask=am, b_mask=bm)
        for name in ("f", "g", "plan", "cost", "n_iter", "marginal_error"):
            assert np.array_equal(getattr(r, name), getattr(dense, name)), name
    # A b_mask alone: problem k keeps only the first k + 2 columns.
    bm = np.arange(5)[None, :] < (np.arange(4)[:, None] + 2)
    r = divest.sinkhorn_batch(A, Bw, C, 0.1, return_plan=True, b_mask=bm, reg_m=1.0)
    for k in range(4):
        alone = _alone(A[k], Bw[k][bm[k]], C[k][:, bm[k]], 0.1, reg_m=1.0)
        _same(r, k, alone, masked=(np.ones((4, 6), bool), bm))


def test_float32_and_mixed_dtypes_keep_each_problems_dtype():
    a, b, c = _batch(5, sizes=[(4, 6), (7, 3), (5, 5)])
    c[1] = c[1].astype(np.float32)
    r = divest.sinkhorn_batch(a, b, c, 0.1, return_plan=True)
    assert [x.dtype for x in r.f] == [np.float64, np.float32, np.float64]
    for k in range(3):
        _same(r, k, _alone(a[k], b[k], c[k], 0.1))
    a, b, c = _batch(6, sizes=[(4, 6), (7, 3)], dtype=np.float32)
    A, Bw, C, am, bm = _pad(a, b, c, np.random.default_rng(0), True)
    r = divest.sinkhorn_batch(A, Bw, C, 0.1, return_plan=True, a_mask=am, b_mask=bm)
    assert r.plan.dtype == np.float32 and r.f.dtype == np.float32
    for k in range(2):
        _same(r, k, _alone(a[k], b[k], c[k], 0.1), masked=(am, bm))


def test_extreme_reg_is_rescaled_per_problem_as_alone():
    # reg and costs scaled by 2^-1000: each problem is solved as sinkhorn_batch alone would.
    a, b, c = _batch(7, sizes=[(4, 6), (7, 3), (2, 2)])
    c = [np.ldexp(x, -1000) for x in c]
    c[2] = np.zeros((2, 2))  # no scaling for this one (no cost scale): its own group
    reg = np.ldexp(0.1, -1000)
    r = divest.sinkhorn_batch(a, b, c, reg, return_plan=True)
    for k in range(3):
        _same(r, k, _alone(a[k], b[k], c[k], reg))
    assert r.converged.all() and np.isfinite(r.cost).all()


def test_plans_have_the_right_marginals_and_no_allocation_of_padding():
    a, b, c = _batch(8)
    r = divest.sinkhorn_batch(a, b, c, 0.1, return_plan=True, tol=1e-10, max_iter=10_000)
    for k in range(len(a)):
        assert r.plan[k].shape == c[k].shape
        np.testing.assert_allclose(r.plan[k].sum(1), a[k], atol=1e-9)
        np.testing.assert_allclose(r.plan[k].sum(0), b[k], atol=1e-9)


@needs_ot
def test_ragged_linear_cost_matches_pot():
    a, b, c = _batch(9, sizes=[(1, 1), (5, 9), (30, 4)], zeros=False)
    r = divest.sinkhorn_batch(a, b, c, 0.5, tol=1e-12, max_iter=10_000)
    for k in range(3):
        want = ot.sinkhorn2(a[k], b[k], c[k], 0.5, stopThr=1e-13, numItermax=100_000)
        assert r.linear_cost[k] == pytest.approx(float(want), rel=1e-8)


def test_ragged_errors_name_the_problem():
    a, b, c = _batch(10, sizes=[(3, 4), (2, 2), (5, 1)])
    c[2] = c[2].copy()
    c[2][1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        divest.sinkhorn_batch(a, b, c, 0.1)
    a, b, c = _batch(10, sizes=[(3, 4), (2, 2), (5, 1)])
    b[1] = b[1] * 2
    with pytest.raises(ValueError, match=r"a\[1\] and b\[1\] have different total masses"):
        divest.sinkhorn_batch(a, b, c, 0.1)
    a, b, c = _batch(10, sizes=[(3, 4), (2, 2), (5, 1)])
    a[2] = np.zeros(5)
    with pytest.raises(ValueError, match=r"a\[2\] sums to zero"):
        divest.sinkhorn_batch(a, b, c, 0.1)
    a[2] = -np.ones(5)
    with pytest.raises(ValueError, match=r"a\[2\] must be non-negative"):
        divest.sinkhorn_batch(a, b, c, 0.1)
    a[2] = np.full(5, np.nan)
    with pytest.raises(ValueError, match=r"a\[2\]"):
        divest.sinkhorn_batch(a, b, c, 0.1)
    # reg below the resolution of one problem's costs: the message names that problem.
    a, b, c = _batch(10, sizes=[(3, 4), (2, 2), (5, 1)])
    c[1] = c[1] * 1e20
    with pytest.raises(ValueError, match="problem 1: reg"):
        divest.sinkhorn_batch(a, b, c, 1e-3)


def test_masked_bad_input():
    a, b, c = _batch(11, sizes=[(3, 4), (2, 2)])
    A, Bw, C, am, bm = _pad(a, b, c, np.random.default_rng(1), False)
    ok = {"a_mask": am, "b_mask": bm}
    call = divest.sinkhorn_batch
    empty = am.copy()
    empty[1] = False
    with pytest.raises(ValueError, match=r"a_mask\[1\] has no True entry"):
        call(A, Bw, C, 0.1, a_mask=empty, b_mask=bm)
    with pytest.raises(ValueError, match="b_mask must have shape"):
        call(A, Bw, C, 0.1, a_mask=am, b_mask=bm[:, :-1])
    with pytest.raises(ValueError, match="a_mask must be a boolean array"):
        call(A, Bw, C, 0.1, a_mask=am.astype(int), b_mask=bm)
    with pytest.raises(ValueError, match="b_mask must be a boolean array"):
        call(A, Bw, C, 0.1, a_mask=am, b_mask=bm.astype(float))
    with pytest.raises(ValueError, match=r"cost must be the padded \(B, n, m\)"):
        call(A, Bw, C[0], 0.1, **ok)
    with pytest.raises(ValueError, match="a and b must have shapes"):
        call(A[0], Bw, C, 0.1, **ok)
    bad = A.copy()
    bad[0, 0] = np.nan  # a real entry
    with pytest.raises(ValueError, match=r"a\[0\]"):
        call(bad, Bw, C, 0.1, **ok)
    badc = C.copy()
    badc[1, 0, 0] = np.inf  # a real entry
    with pytest.raises(ValueError, match="NaN or inf"):
        call(A, Bw, badc, 0.1, **ok)
    # Problem 0's b tripled: the masses differ (balanced).
    with pytest.raises(ValueError, match=r"a\[0\] and b\[0\] have different total masses"):
        call(A, Bw * np.where(bm, 1.0, np.nan) * np.array([[3.0], [1.0]]), C, 0.1, **ok)


def test_ragged_bad_input():
    a, b, c = _batch(12, sizes=[(3, 4), (2, 2)])
    with pytest.raises(ValueError, match="problem 1 of the ragged batch is empty"):
        divest.sinkhorn_batch([a[0], np.zeros(0)], b, [c[0], np.zeros((0, 2))], 1.0)
    with pytest.raises(ValueError, match=r"cost\[1\] must have shape"):
        divest.sinkhorn_batch(a, b, [c[0], c[0]], 1.0)
    with pytest.raises(ValueError, match="the batch is empty; pass at least one problem"):
        divest.sinkhorn_batch([], [], [], 1.0)
    with pytest.raises(ValueError, match=r"a\[1\] and b\[1\] must be 1-D"):
        divest.sinkhorn_batch([a[0], a[1][None]], b, c, 1.0)
    with pytest.raises(ValueError, match="reg must be positive"):
        divest.sinkhorn_batch(a, b, c, -1.0)
    with pytest.raises(ValueError, match="max_iter"):
        divest.sinkhorn_batch(a, b, c, 1.0, max_iter=0)


def test_large_ragged_batch_is_load_balanced_and_thread_count_independent():
    # Many problems, sizes 1..48 (largest first in the scheduler): results do not depend on
    # the thread count, and equal each problem alone.
    rng = np.random.default_rng(13)
    sizes = [(int(rng.integers(1, 48)), int(rng.integers(1, 48))) for _ in range(120)]
    a, b, c = _batch(14, sizes=sizes)
    r2 = divest.sinkhorn_batch(a, b, c, 0.1, return_plan=True, max_iter=20_000)
    with divest.threads(1):
        r1 = divest.sinkhorn_batch(a, b, c, 0.1, return_plan=True, max_iter=20_000)
    for k in range(len(sizes)):
        assert np.array_equal(r1.f[k], r2.f[k]) and np.array_equal(r1.plan[k], r2.plan[k])
    for k in range(0, len(sizes), 17):
        _same(r2, k, _alone(a[k], b[k], c[k], 0.1, max_iter=20_000))


def test_ragged_and_masked_batches_stop_on_ctrl_c():
    import _thread
    import signal
    import threading
    import time

    a, b, c = _batch(15, sizes=[(150, 120), (90, 200), (3, 4)] * 4)
    A, Bw, C, am, bm = _pad(a, b, c, np.random.default_rng(2), True)
    calls = [
        lambda: divest.sinkhorn_batch(a, b, c, 0.01, tol=0.0, max_iter=10**9),
        lambda: divest.sinkhorn_batch(
            A, Bw, C, 0.01, tol=0.0, max_iter=10**9, method="log", a_mask=am, b_mask=bm
        ),
    ]
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for call in calls:
            timer = threading.Timer(0.5, _thread.interrupt_main)
            t0 = time.perf_counter()
            timer.start()
            try:
                with pytest.raises(KeyboardInterrupt):
                    call()
            finally:
                timer.cancel()
            assert time.perf_counter() - t0 < 3.0
    finally:
        signal.signal(signal.SIGINT, old)
    r = divest.sinkhorn_batch(a[:3], b[:3], c[:3], 0.1)  # still works afterwards
    assert r.converged.all()
