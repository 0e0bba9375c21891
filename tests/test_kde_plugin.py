"""The multivariate plug-in bandwidth matrix (issue 11): against the AMISE-optimal matrix
of known Gaussian mixtures computed in closed form (Wand and Jones), weights, and bad
input."""

import math

import numpy as np
import pytest

import divest
from divest._kdeplugin import amise_gaussian, minimise_amise, mixture_psi4


def sample(ws, mus, covs, n, seed):
    rng = np.random.default_rng(seed)
    c = rng.choice(len(ws), size=n, p=ws)
    x = np.empty((n, len(mus[0])))
    for k in range(len(ws)):
        idx = c == k
        x[idx] = rng.multivariate_normal(mus[k], covs[k], idx.sum())
    return x, c


def amise_optimal(ws, mus, covs, neff):
    psi = mixture_psi4(ws, np.array(mus, float), covs)
    d = len(mus[0])
    return minimise_amise(psi, neff, np.eye(d) * neff ** (-2 / (d + 4))), psi


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_amise_closed_form_single_normal():
    # For N(0, Σ) the AMISE-optimal Gaussian H is (4/(n(d+2)))^(2/(d+4)) Σ (normal scale).
    for d in (2, 3):
        cov = np.eye(d) + 0.5 * (np.ones((d, d)) - np.eye(d))
        n = 5000
        h, psi = amise_optimal([1.0], [np.zeros(d)], [cov], n)
        ns = (4 / (n * (d + 2))) ** (2 / (d + 4)) * cov
        assert rel(h, ns) < 1e-6
        assert amise_gaussian(h, psi, n) <= amise_gaussian(1.1 * h, psi, n)


CASES = [
    ([1.0], [[0.0, 0.0]], [[[1.0, 0.6], [0.6, 1.0]]]),
    ([0.5, 0.5], [[-1.2, 0.0], [1.2, 0.4]], [np.eye(2) * 0.6, [[1.0, -0.3], [-0.3, 0.6]]]),
    ([1.0], [[0.0, 0.0, 0.0]], [[[1.0, 0.5, 0.2], [0.5, 1.0, 0.3], [0.2, 0.3, 2.0]]]),
]


@pytest.mark.parametrize("ws, mus, covs", CASES)
def test_plugin_close_to_amise_optimal(ws, mus, covs):
    # The plug-in's relative error shrinks like n^(-2/(d+6)); the tolerance scales so.
    covs = [np.asarray(c, float) for c in covs]
    d = len(mus[0])
    for n in (4000, 40000):
        x, _ = sample(ws, mus, covs, n, seed=n + d)
        kde = divest.KDE(x, bandwidth="plugin")
        target, _ = amise_optimal(ws, mus, covs, n)
        tol = 3.0 * n ** (-2 / (d + 6))
        assert kde.rule == "plugin"
        assert rel(kde.bandwidth, target) < tol, (n, kde.bandwidth, target)


def test_plugin_weights_are_weighted_moments():
    # Equal-mixture samples reweighted 3:1 by component estimate the 0.75/0.25 mixture.
    ws, mus = [0.5, 0.5], [[-1.0, 0.0], [1.0, 0.5]]
    covs = [np.eye(2) * 0.8, np.array([[1.0, 0.4], [0.4, 0.7]])]
    x, c = sample(ws, mus, covs, 40000, seed=3)
    w = np.where(c == 0, 3.0, 1.0)
    kde = divest.KDE(x, bandwidth="plugin", weights=w)
    target, _ = amise_optimal([0.75, 0.25], mus, covs, kde.neff)
    assert rel(kde.bandwidth, target) < 3.0 * kde.neff ** (-0.25)
    # uniform weights change nothing
    h0 = divest.KDE(x[:3000], bandwidth="plugin").bandwidth
    h1 = divest.KDE(x[:3000], bandwidth="plugin", weights=np.full(3000, 7.0)).bandwidth
    np.testing.assert_allclose(h0, h1, rtol=1e-8)


def test_plugin_scale_equivariant_and_grid():
    x, _ = sample(*CASES[1], 3000, seed=9)
    a = np.array([[2.0, 0.5], [0.0, 0.3]])
    h = divest.KDE(x, bandwidth="plugin").bandwidth
    ha = divest.KDE(x @ a.T + 5.0, bandwidth="plugin").bandwidth
    np.testing.assert_allclose(ha, a @ h @ a.T, rtol=0.05)
    r = divest.KDE(x, bandwidth="plugin").grid((40, 40))  # full matrix on a grid
    assert r.values.shape == (40, 40) and math.isfinite(r.error)


def test_plugin_bad_input():
    with pytest.raises(ValueError, match="plugin.*2-D and 3-D"):
        divest.KDE(np.random.default_rng(0).standard_normal(50), bandwidth="plugin")
    with pytest.raises(ValueError, match="plugin.*2-D and 3-D"):
        divest.KDE(np.random.default_rng(0).standard_normal((50, 4)), bandwidth="plugin")
    with pytest.raises(ValueError, match="plugin.*at least"):
        divest.KDE(np.random.default_rng(0).standard_normal((3, 2)), bandwidth="plugin")
    t = np.random.default_rng(0).standard_normal(40)
    with pytest.raises(ValueError, match="plugin.*singular"):
        divest.KDE(np.column_stack([t, 2 * t]), bandwidth="plugin")
