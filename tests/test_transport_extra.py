"""Exact 1-D transport, sliced and max-sliced Wasserstein, ragged sinkhorn batches.
Oracles: scipy.stats.wasserstein_distance, POT (ot.wasserstein_1d,
ot.sliced_wasserstein_distance, ot.max_sliced_wasserstein_distance), closed forms,
brute-force search over directions in 2-D, solving each batch problem alone."""

import numpy as np
import pytest
from scipy import stats

import divest

ot = pytest.importorskip("ot")


@pytest.mark.parametrize("weighted", [False, True])
def test_wasserstein_1d_matches_scipy_for_p1(weighted):
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal(37), rng.standard_normal(23) * 2 + 1
    wu = rng.random(37) if weighted else None
    wv = rng.random(23) if weighted else None
    want = stats.wasserstein_distance(u, v, wu, wv)
    assert divest.wasserstein_1d(u, v, wu, wv) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("p", [1, 1.5, 2, 3])
@pytest.mark.parametrize("weighted", [False, True])
def test_wasserstein_1d_matches_pot_for_any_p(p, weighted):
    rng = np.random.default_rng(1)
    u, v = rng.standard_normal(31), rng.exponential(size=19)
    wu = rng.random(31) if weighted else None
    wv = rng.random(19) if weighted else None
    want = ot.wasserstein_1d(
        u,
        v,
        None if wu is None else wu / wu.sum(),
        None if wv is None else wv / wv.sum(),
        p=p,
    )
    assert divest.wasserstein_1d(u, v, wu, wv, p=p) ** p == pytest.approx(want, rel=1e-11)


def test_wasserstein_1d_closed_forms_and_ties():
    # A shift: W_p = |shift| for every p.
    u = np.array([0.0, 1.0, 1.0, 3.0])
    for p in (1, 2, 4):
        assert divest.wasserstein_1d(u, u + 2.5, p=p) == pytest.approx(2.5, rel=1e-15)
    # Point masses: W_p between δ_0 and (δ_0 + δ_1)/2 is (1/2)^(1/p).
    for p in (1, 2, 3):
        assert divest.wasserstein_1d([0.0], [0.0, 1.0], p=p) == pytest.approx(0.5 ** (1 / p))
    # Zero weights drop points.
    assert divest.wasserstein_1d([0.0, 100.0], [1.0], [1.0, 0.0]) == 1.0
    # Huge and subnormal values.
    assert divest.wasserstein_1d([0.0], [1e300]) == 1e300
    assert divest.wasserstein_1d([0.0], [5e-324]) == 5e-324


def test_sliced_matches_pot_with_the_same_projections():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((40, 3)), rng.standard_normal((29, 3)) + [1, 0, 0]
    a, b = rng.random(40), rng.random(29)
    theta = rng.standard_normal((25, 3))
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)
    for p in (1, 2, 3):
        want = ot.sliced_wasserstein_distance(
            x, y, a / a.sum(), b / b.sum(), p=p, projections=theta.T
        )
        got = divest.sliced_wasserstein(x, y, a, b, p=p, projections=theta)
        assert got == pytest.approx(want, rel=1e-11)
        want = ot.max_sliced_wasserstein_distance(
            x, y, a / a.sum(), b / b.sum(), p=p, projections=theta.T
        )
        got = divest.max_sliced_wasserstein(x, y, a, b, p=p, projections=theta, n_iter=0)
        assert got == pytest.approx(want, rel=1e-11)


def test_sliced_is_reproducible_and_thread_independent():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((50, 4)), rng.standard_normal((60, 4))
    v1 = divest.sliced_wasserstein(x, y, n_projections=64, rng=5)
    with divest.threads(1):
        v2 = divest.sliced_wasserstein(x, y, n_projections=64, rng=5)
    assert v1 == v2
    assert v1 != divest.sliced_wasserstein(x, y, n_projections=64, rng=6)
    # One dimension: every direction is ±1, so the sliced distance is W_p itself.
    u, v = rng.standard_normal(30), rng.standard_normal(20)
    assert divest.sliced_wasserstein(u, v, n_projections=7, p=2, rng=0) == pytest.approx(
        divest.wasserstein_1d(u, v, p=2), rel=1e-13
    )


def test_sliced_gaussian_closed_form():
    # Isotropic Gaussians N(0, I) and N(m, I): every projection is N(0,1) vs N(θ·m, 1),
    # whose W_2² is (θ·m)²; its mean over uniform θ in d dimensions is |m|²/d.
    rng = np.random.default_rng(4)
    d, n = 3, 4000
    x, y = rng.standard_normal((n, d)), rng.standard_normal((n, d)) + [3.0, 0, 0]
    got = divest.sliced_wasserstein(x, y, n_projections=2000, p=2, rng=0)
    assert got == pytest.approx(np.sqrt(9.0 / d), rel=0.05)


def test_max_sliced_matches_brute_force_in_2d():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((60, 2)) * [3.0, 0.5]
    y = rng.standard_normal((50, 2)) @ np.array([[1.0, 0.8], [0.0, 0.6]]) + [0.3, -0.4]
    ang = np.linspace(0, np.pi, 20000, endpoint=False)
    for p in (1, 2):
        brute = max(
            divest.wasserstein_1d(x @ [np.cos(t), np.sin(t)], y @ [np.cos(t), np.sin(t)], p=p)
            for t in ang[::10]
        )
        # Refine the brute force around its best angle.
        got, th = divest.max_sliced_wasserstein(
            x, y, p=p, n_projections=16, rng=1, return_direction=True
        )
        assert np.linalg.norm(th) == pytest.approx(1.0)
        assert got == pytest.approx(divest.wasserstein_1d(x @ th, y @ th, p=p), rel=1e-12)
        assert got >= brute * (1 - 1e-6)
        assert got <= brute * (1 + 1e-3)


def test_transport_bad_input():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="n_projections"):
        divest.sliced_wasserstein(x, x, n_projections=0)
    with pytest.raises(ValueError, match="p must"):
        divest.sliced_wasserstein(x, x, p=0.5)
    with pytest.raises(ValueError, match="p must"):
        divest.wasserstein_1d([1.0], [2.0], p=np.inf)
    with pytest.raises(ValueError, match="u is empty"):
        divest.wasserstein_1d([], [2.0])
    with pytest.raises(ValueError, match="u must be a 1-D"):
        divest.wasserstein_1d(x, [2.0])
    with pytest.raises(ValueError, match="v_weights"):
        divest.wasserstein_1d([1.0], [2.0, 3.0], v_weights=[0.0, 0.0])
    with pytest.raises(ValueError, match="dimension"):
        divest.sliced_wasserstein(x, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="projections"):
        divest.sliced_wasserstein(x, x, projections=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="n_iter"):
        divest.max_sliced_wasserstein(x, x, n_iter=-1)


def _problem(rng, n, m):
    x, y = rng.standard_normal((n, 2)), rng.standard_normal((m, 2)) + 0.5
    c = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    return a / a.sum(), b / b.sum(), c


def test_ragged_sinkhorn_batch_equals_each_problem_alone():
    rng = np.random.default_rng(6)
    sizes = [(5, 7), (9, 4), (5, 7), (1, 3), (12, 12)]
    probs = [_problem(rng, n, m) for n, m in sizes]
    a, b, c = (list(t) for t in zip(*probs))
    r = divest.sinkhorn_batch(a, b, c, 0.5, return_plan=True)
    assert r.cost.shape == (5,) and len(r.f) == 5 and len(r.plan) == 5
    for k, (ak, bk, ck) in enumerate(probs):
        alone = divest.sinkhorn_batch(ak[None], bk[None], ck[None], 0.5, return_plan=True)
        assert r.cost[k] == alone.cost[0]
        assert r.linear_cost[k] == alone.linear_cost[0]
        assert np.array_equal(r.f[k], alone.f[0]) and np.array_equal(r.g[k], alone.g[0])
        assert np.array_equal(r.plan[k], alone.plan[0])
        assert r.n_iter[k] == alone.n_iter[0] and r.converged[k]
        single = divest.sinkhorn(ak, bk, ck, 0.5)
        assert r.linear_cost[k] == pytest.approx(single.linear_cost, rel=1e-9)
        assert r.linear_cost[k] == pytest.approx(ot.sinkhorn2(ak, bk, ck, 0.5), rel=1e-6)


def test_ragged_sinkhorn_batch_bad_input():
    rng = np.random.default_rng(7)
    a1, b1, c1 = _problem(rng, 3, 4)
    a2, b2, c2 = _problem(rng, 2, 2)
    with pytest.raises(ValueError, match="problem 1 of the ragged batch is empty"):
        divest.sinkhorn_batch([a1, np.zeros(0)], [b1, b2], [c1, np.zeros((0, 2))], 1.0)
    with pytest.raises(ValueError, match="same number of problems"):
        divest.sinkhorn_batch([a1, a2], [b1], [c1, c2], 1.0)
    with pytest.raises(ValueError, match=r"cost\[1\] must have shape"):
        divest.sinkhorn_batch([a1, a2], [b1, b2], [c1, c1], 1.0)
    with pytest.raises(ValueError, match=r"a\[1\]"):
        divest.sinkhorn_batch([a1, -a2], [b1, b2], [c1, c2], 1.0)
    with pytest.raises(ValueError, match="lists"):
        divest.sinkhorn_batch([a1, a2], [b1, b2], c1, 1.0)
