"""Box probabilities with a full bandwidth (issue 11): ``KDE.cdf`` in 3-D (the trivariate
normal CDF per data point and query, ``_kdecalc._Tvn``) next to the same data's 2-D
marginal (the bivariate CDF) and a diagonal 3-D bandwidth (products of 1-D tails).
scipy's ``gaussian_kde.integrate_box`` (randomised quasi-Monte Carlo, one box a call,
about 1e-5 absolute by default) is the peer for one box; the check prints its error."""

from __future__ import annotations

import numpy as np

import divest

from . import Case


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 3))
    return z @ np.array([[1.0, 0.8, -0.5], [0.0, 0.6, 0.4], [0.0, 0.0, 0.3]])


def cases(quick: bool):
    out = []
    n = 2_000 if quick else 10_000
    m = 100
    x = _data(n)
    q = x[np.random.default_rng(1).choice(n, m)]
    kde = divest.KDE(x)
    out.append(
        Case(f"KDE.cdf, 3-D full bandwidth (Scott), n={n}, m={m}", lambda: kde.cdf(q), repeat=1)
    )
    k2 = kde.marginal([0, 1])
    out.append(
        Case(f"KDE.cdf, 2-D full bandwidth, n={n}, m={m}", lambda: k2.cdf(q[:, :2]), repeat=1)
    )
    kd = divest.KDE(x, bandwidth=np.sqrt(np.diag(kde.covariance)))
    out.append(Case(f"KDE.cdf, 3-D diagonal bandwidth, n={n}, m={m}", lambda: kd.cdf(q), repeat=1))
    # scipy's integrate_box takes about 40 s per box at n = 2000 here: one box, n = 2000.
    xs = x[:2000]
    ks = divest.KDE(xs)
    lo, hi = q[:1] - 0.5, q[:1] + 0.5
    peers = {}
    try:
        from scipy.stats import gaussian_kde

        sk = gaussian_kde(xs.T)
        peers["scipy integrate_box (QMC)"] = lambda: np.array([sk.integrate_box(lo[0], hi[0])])
    except ImportError:
        peers["scipy"] = "not installed"
    out.append(
        Case(
            "KDE.integrate_box, 3-D full bandwidth, n=2000, 1 box",
            lambda: ks.integrate_box(lo, hi),
            peers=peers,
            repeat=1,
            check=lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
        )
    )
    return out
