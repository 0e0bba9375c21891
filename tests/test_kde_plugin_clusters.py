"""Plug-in and SCV bandwidth matrices with far clusters that each hold more weight than
the robust scatter's breakdown point 1/(d + 1) (two equal clusters, three in a
triangle). The selectors sphere by the clusters' pooled within-cluster covariance, so H
reflects the clusters' own spread; checked against the AMISE-optimal (plug-in) and
MISE-optimal (SCV) matrices of the known Gaussian mixture, computed in closed form
(divest._kdeplugin.mixture_optimal). Before, H along the separation was 3·10³ times
the optimum at a separation of 1000 (3·10⁹ at 10⁶)."""

import numpy as np
import pytest

from divest import _kdeplugin as kp

A = np.array([[1.0, 0.3, 0.1], [0.3, 0.8, -0.2], [0.1, -0.2, 1.2]])
B = np.array([[0.5, -0.1, 0.0], [-0.1, 1.5, 0.2], [0.0, 0.2, 0.7]])


def clusters(n, d, means, covs, ws, seed):
    r = np.random.default_rng(seed)
    c = r.choice(len(ws), size=n, p=ws)
    x = np.empty((n, d))
    for k, (m, s) in enumerate(zip(means, covs)):
        rows = c == k
        x[rows] = r.multivariate_normal(m, s, int(rows.sum()))
    return x


def ratio_eigs(h, ho):
    return np.sort(np.linalg.eigvals(np.linalg.solve(ho, h)).real)


def two_far(d, sep):
    mu = np.zeros(d)
    mu[0] = sep
    mu[-1] += sep / 3
    return [np.zeros(d), mu], [A[:d, :d], B[:d, :d]]


@pytest.mark.parametrize("method", ["plugin", "scv"])
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("sep", [30.0, 1e3, 1e6])
def test_two_equal_far_clusters(method, d, sep):
    n = 6000
    means, covs = two_far(d, sep)
    x = clusters(n, d, means, covs, [0.5, 0.5], seed=d)
    h = kp.select_matrix(x, np.full(n, 1.0 / n), method)
    target = "amise" if method == "plugin" else "mise"
    ho = kp.mixture_optimal([0.5, 0.5], means, covs, n, target)
    ev = ratio_eigs(h, ho)
    # before: the largest ratio was 4.3 .. 6.4 at sep 30, 3·10³ at 10³, 3·10⁹ at 10⁶
    assert ev.min() > 0.75 and ev.max() < 1.3, ev


@pytest.mark.parametrize("method", ["plugin", "scv"])
def test_three_clusters_and_unequal_weights_2d(method):
    n = 6000
    means = [np.zeros(2), np.array([500.0, 0.0]), np.array([200.0, 800.0])]
    covs = [A[:2, :2], B[:2, :2], np.array([[0.6, 0.2], [0.2, 0.9]])]
    ws = [0.4, 0.35, 0.25]
    x = clusters(n, 2, means, covs, ws, seed=7)
    h = kp.select_matrix(x, np.full(n, 1.0 / n), method)
    ho = kp.mixture_optimal(ws, means, covs, n, "amise" if method == "plugin" else "mise")
    ev = ratio_eigs(h, ho)
    assert ev.min() > 0.75 and ev.max() < 1.3, ev


def test_far_clusters_affine_equivariant_and_weighted():
    n = 3000
    means, covs = two_far(2, 1e3)
    x = clusters(n, 2, means, covs, [0.5, 0.5], seed=11)
    w = np.random.default_rng(2).uniform(0.5, 2.0, n)
    w /= w.sum()
    h = kp.select_matrix(x, w, "plugin")
    m = np.array([[2.0, 0.7], [-0.4, 1.5]])
    h2 = kp.select_matrix(x @ m.T + np.array([5.0, -3.0]), w, "plugin")
    np.testing.assert_allclose(h2, m @ h @ m.T, rtol=1e-6, atol=1e-9 * np.abs(h2).max())
    ho = kp.mixture_optimal([0.5, 0.5], means, covs, 1.0 / np.dot(w, w), "amise")
    ev = ratio_eigs(h, ho)
    assert ev.min() > 0.7 and ev.max() < 1.4, ev


@pytest.mark.parametrize("d", [1, 2, 3])
def test_no_clusters_no_change(d):
    # unimodal, heavy-tailed, small and moderately bimodal samples show no far clusters:
    # the covariance is kept (the old matrices bit for bit)
    r = np.random.default_rng(d)
    w = None
    for x in [
        r.standard_normal((50, d)),
        r.standard_normal((20_000, d)),
        r.standard_t(3, (5000, d)),
        np.r_[r.normal(-3, 1, (2000, d)), r.normal(3, 1, (2000, d))],
    ]:
        w = np.full(x.shape[0], 1.0 / x.shape[0])
        z, _ = kp._canonical(x, w, "plugin")
        assert kp._cluster_scatter(z, w) is None
    # a split is found, and measured in the clusters' own units, when they are far
    x = np.r_[r.normal(0, 1, (500, d)), r.normal(100, 1, (500, d))]
    w = np.full(1000, 1e-3)
    z, t = kp._canonical(x, w, "plugin")
    cov = kp._cluster_scatter(z, w)
    assert cov is not None
    np.testing.assert_allclose(t @ cov @ t.T, np.eye(d), atol=0.2)
