"""Box probabilities with a full bandwidth (issue 11): ``KDE.cdf`` in 3-D (the trivariate
normal CDF per data point and query, Rust ``core/kdebox.rs``) next to the same data's 2-D
marginal (the bivariate CDF) and a diagonal 3-D bandwidth (products of 1-D tails).
In a source checkout the former NumPy implementation (``tests/_kdecalc_numpy.py``, the
tests' oracle) is timed as a peer on the same inputs, so the ratio is Rust over NumPy.
scipy's ``gaussian_kde.integrate_box`` (randomised quasi-Monte Carlo, one box a call,
about 1e-5 absolute by default) is the peer for one box; the check prints its error."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np

import divest

from . import Case


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 3))
    return z @ np.array([[1.0, 0.8, -0.5], [0.0, 0.6, 0.4], [0.0, 0.0, 0.3]])


def _numpy_path():
    """The former NumPy box sums (tests/_kdecalc_numpy.py) when this is a source checkout."""
    here = pathlib.Path(__file__).resolve()
    for up in here.parents:
        f = up / "tests" / "_kdecalc_numpy.py"
        if f.is_file():
            spec = importlib.util.spec_from_file_location("_kdecalc_numpy", f)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            return mod
    return None


def _numpy_peer(old, kde, q, which):
    """Former NumPy path on the same queries (cdf: boxes from −inf), or why it is absent."""
    if old is None:
        return {"former NumPy path": "not a source checkout (tests/_kdecalc_numpy.py)"}
    x = kde._x.astype(np.float64) / kde._scale
    w = kde.weights / kde.weights.sum()
    hi = q / kde._scale
    lo = np.full_like(hi, -np.inf)
    f = {"3": old._full_3d_box, "2": old._full_2d_box, "diag": old.diag_box}[which]
    return {"former NumPy path": lambda: np.clip(f(kde, lo, hi, x, w), 0, 1)}


def _err(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def cases(quick: bool):
    out = []
    n = 2_000 if quick else 10_000
    m = 100
    x = _data(n)
    q = x[np.random.default_rng(1).choice(n, m)]
    old = _numpy_path()
    kde = divest.KDE(x)
    out.append(
        Case(
            f"KDE.cdf, 3-D full bandwidth (Scott), n={n}, m={m}",
            lambda: kde.cdf(q),
            peers=_numpy_peer(old, kde, q, "3"),
            repeat=3,
            check=_err,
        )
    )
    k2 = kde.marginal([0, 1])
    out.append(
        Case(
            f"KDE.cdf, 2-D full bandwidth, n={n}, m={m}",
            lambda: k2.cdf(q[:, :2]),
            peers=_numpy_peer(old, k2, q[:, :2], "2"),
            repeat=3,
            check=_err,
        )
    )
    kd = divest.KDE(x, bandwidth=np.sqrt(np.diag(kde.covariance)))
    out.append(
        Case(
            f"KDE.cdf, 3-D diagonal bandwidth, n={n}, m={m}",
            lambda: kd.cdf(q),
            peers=_numpy_peer(old, kd, q, "diag"),
            repeat=3,
            check=_err,
        )
    )
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
            check=_err,
        )
    )
    return out
