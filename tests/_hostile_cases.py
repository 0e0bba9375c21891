"""The bad-input matrix of issue 18: every public callable of divest x input variants.

Imported by tests/test_hostile.py (for the names) and run as a script in a child process,
one child per public callable, so that a crash (segfault, abort) or a hang shows as a
failure naming the case instead of killing the test run:

    python tests/_hostile_cases.py NAME [FIRST_CASE]

The child prints one JSON line per case: {"i", "case", "event": "start"} before the call,
then {"i", "case", "event": "done", "ok", "why"} after it. The parent restarts the child
after the last started case when it dies.

Each spec names the array arguments of one call (with small, valid base values) and its
scalar arguments. Array variants replace one argument at a time:

* the same value, bit for bit, as on the plain C-contiguous float64 array (or the same
  exception type): Fortran order, a non-contiguous view (step 2), read-only, big-endian
  '>f8', a list (KDE data: within 1e-14, see Spec.layout_rtol);
* the same value, bit for bit, as on the float64 cast, or a ValueError/TypeError naming
  the argument:
  int, bool, float16, object arrays;
* a result close to the float64 one, or a clear error: float32;
* a ValueError/TypeError naming the argument: empty, NaN, inf, complex, str;
* a result without NaN, or a clear error: one sample, 0-d, 3-d, a mismatched shape,
  the values scaled to 1e300 (huge), to 5e-324 steps (subnormal).

Scalar variants (NaN, inf, 0, -1, a string, bool, 1e300, 5e-324, a numpy scalar) replace
one scalar argument at a time: a ValueError/TypeError naming it, or a result without NaN
(a numpy scalar must give the plain scalar's result). No call may modify its inputs.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
import warnings

import numpy as np

# ---------------------------------------------------------------------------------------
# Base data (small; built the same way in every child).


def _rng():
    return np.random.default_rng(20261207)


def _prob(n, rng):
    p = rng.random(n) + 0.1
    return p / p.sum()


def _orthonormal(n, m, rng):
    return np.linalg.qr(rng.standard_normal((n, m)))[0]


def _psd(n, rng, scale=1.0):
    a = rng.standard_normal((n, n))
    return scale * (a @ a.T) / n + 0.1 * np.eye(n)


@dataclasses.dataclass
class Spec:
    """One public callable: its array arguments (name -> base value), its scalar
    arguments (name -> valid value) and the call itself, which gets both as keywords."""

    name: str
    arrays: dict
    call: object
    scalars: dict = dataclasses.field(default_factory=dict)
    #: variants not applicable here.
    skip: tuple = ()
    #: other names an error about the sample size may cite (e.g. "unbiased").
    names: tuple = ()
    #: relative tolerance between layouts (0: bitwise). KDE whitens its data with a NumPy
    #: product whose rounding depends on the memory layout (last-bit differences).
    layout_rtol: float = 0.0


def _specs():
    import divest
    from divest import dpp

    r = _rng()
    pts = r.standard_normal((12, 2))
    pts2 = r.standard_normal((10, 2)) + 0.5
    q_pts = r.standard_normal((4, 2))
    p6, q6 = _prob(6, r), _prob(6, r)
    a4, b5 = _prob(4, r), _prob(5, r)
    cost45 = r.random((4, 5))
    dcx = r.standard_normal((9, 2))
    dcy = dcx[:, :1] + 0.5 * r.standard_normal((9, 1))
    dcz = r.standard_normal((9, 1))
    L6 = _psd(6, r)
    K6 = _psd(6, r)
    K6 = K6 / (np.linalg.eigvalsh(K6).max() * 1.5)
    U = _orthonormal(10, 3, r)
    X = r.standard_normal((10, 3))
    Phi = r.standard_normal((12, 3))
    yv = r.standard_normal(12)
    kde = divest.KDE(pts)
    kde1d_ppf = divest.KDE(pts[:, 0], bandwidth=0.4)
    dppL = dpp.DPP(L=L6)

    S = []

    def add(name, arrays, call, scalars=None, skip=(), names=()):
        rtol = 1e-14 if "data" in arrays else 0.0
        S.append(Spec(name, arrays, call, scalars or {}, skip, names, rtol))

    # KDE
    add(
        "KDE",
        {"data": pts, "weights": r.random(12) + 0.1},
        lambda data, weights, bandwidth: divest.KDE(
            data, bandwidth=bandwidth, weights=weights
        ).logpdf(q_pts),
        {"bandwidth": 0.7},
    )
    add("KDE.logpdf", {"points": q_pts}, lambda points: kde.logpdf(points, return_ess=True))
    add("KDE.pdf", {"points": q_pts}, lambda points: kde.pdf(points))
    add("KDE.score", {"points": q_pts}, lambda points: kde.score(points))
    kde_diag = divest.KDE(pts, bandwidth=np.array([0.5, 0.8]))
    add(
        "KDE.marginal",
        {"data": pts},
        lambda data, dims: divest.KDE(data).marginal(dims).logpdf(q_pts[:, :1]),
        {"dims": 1},
    )
    add(
        "KDE.conditional",
        {"data": pts},
        lambda data, given: divest.KDE(data).conditional({1: given}).logpdf(q_pts[:, :1]),
        {"given": 0.3},
    )
    # ±inf are legitimate box corners (scipy's integrate_box takes them too).
    add("KDE.cdf", {"points": q_pts}, lambda points: kde.cdf(points), skip=("inf",))
    add(
        "KDE.integrate_box",
        {"low": q_pts - 1.0, "high": q_pts + 0.5},
        lambda low, high: kde_diag.integrate_box(low, high),
        skip=("inf",),
    )
    add("KDE.ppf", {"q": np.array([0.1, 0.5, 0.9])}, lambda q: kde1d_ppf.ppf(q))
    add("KDE.loo_logpdf", {"data": pts}, lambda data: divest.KDE(data).loo_logpdf())
    add(
        "KDE.resample",
        {"data": pts},
        lambda data, size: divest.KDE(data).resample(size, rng=0),
        {"size": 5},
    )
    add("KDE.covariance", {"data": pts}, lambda data: divest.KDE(data).covariance)

    # KDE with bounds (issue 11): ±inf are legitimate open sides, so "inf" is skipped.
    def _bounded(data, bounds):
        k = divest.KDE(data, bounds=bounds)
        p = divest.KDE(data, bounds=bounds, boundary="periodic")
        return (
            k.logpdf(q_pts),
            k.score(q_pts),
            k.resample(5, rng=0),
            k.cdf(q_pts),
            p.logpdf(q_pts),
            p.resample(5, rng=0),
        )

    add(
        "KDE(bounds)",
        {"data": pts, "bounds": np.array([[-1.5, 2.0], [-2.0, 1.5]])},
        _bounded,
        skip=("inf",),
    )
    add(
        "kde_logpdf",
        {"data": pts, "points": q_pts},
        lambda data, points, bandwidth: divest.kde_logpdf(data, points, bandwidth=bandwidth),
        {"bandwidth": 0.5},
    )
    add(
        "select_bandwidth",
        {"data": pts, "grid": np.array([0.5, 1.0, 2.0])},
        lambda data, grid: divest.select_bandwidth(data, grid, warn_edge=False),
    )
    x1 = r.standard_normal(12)
    kde1 = divest.KDE(x1)
    add(
        "kde_grid",
        {"data": x1, "weights": r.random(12) + 0.1},
        lambda data, weights, n_points: (
            divest.kde_grid(data, weights=weights, n_points=n_points).values
        ),
        {"n_points": 64},
    )
    add("KDE.grid", {}, lambda n_points: kde1.grid(n_points).values, {"n_points": 64})
    add(
        "isj_bandwidth",
        {"x": r.standard_normal(200), "weights": r.random(200) + 0.1},
        lambda x, weights: divest.isj_bandwidth(x, weights),
    )
    # threads
    add("get_num_threads", {}, lambda: divest.get_num_threads())
    add(
        "set_num_threads",
        {},
        lambda n: (divest.set_num_threads(n), divest.get_num_threads(), divest.set_num_threads(1))[
            1
        ],
        {"n": 2},
    )

    def _in_threads(n):
        with divest.threads(n):
            v = divest.get_num_threads()
        return v

    add("threads", {}, _in_threads, {"n": 2})
    # optimal transport
    add(
        "sinkhorn",
        {"a": a4, "b": b5, "cost": cost45},
        lambda a, b, cost, reg: divest.sinkhorn(a, b, cost, reg),
        {"reg": 0.5},
    )
    add(
        "sinkhorn_unbalanced",
        {"a": a4, "b": b5, "cost": cost45},
        lambda a, b, cost, reg, reg_m: divest.sinkhorn_unbalanced(a, b, cost, reg, reg_m),
        {"reg": 0.5, "reg_m": 1.0},
    )
    add(
        "sinkhorn_batch",
        {
            "a": np.stack([a4, a4[::-1]]),
            "b": np.stack([b5, b5[::-1]]),
            "cost": np.stack([cost45, cost45.T[::-1].T]),
        },
        lambda a, b, cost, reg: divest.sinkhorn_batch(a, b, cost, reg),
        {"reg": 0.5},
    )
    # Padded batch with masks (problems 3x4 and 2x5 in (2, 4) / (2, 5) padding); the mask
    # is True at flat index 1 of a, b and cost, where the NaN/inf variants go.
    add(
        "sinkhorn_batch(masked)",
        {
            "a": np.stack([a4, a4[::-1]]),
            "b": np.stack([b5, b5[::-1]]),
            "cost": np.stack([cost45, cost45.T[::-1].T]),
            "a_mask": np.array([[True, True, True, False], [True, True, False, False]]),
            "b_mask": np.array([[True, True, True, True, False], [True] * 5]),
        },
        lambda a, b, cost, a_mask, b_mask, reg: (
            lambda r: (r.cost, r.linear_cost, r.marginal_error, r.f[a_mask], r.g[b_mask])
        )(
            divest.sinkhorn_batch(
                a, b, cost, reg, a_mask=a_mask, b_mask=b_mask, reg_m=1.0, max_iter=50
            )
        ),
        {"reg": 0.5},
    )
    add(
        "sinkhorn_divergence",
        {"x": pts, "y": pts2, "a": _prob(12, r), "b": _prob(10, r)},
        lambda x, y, a, b, eps: divest.sinkhorn_divergence(x, y, a, b, eps=eps),
        {"eps": 0.5},
    )
    # divergences between distributions
    for fn in ("kl", "js", "js_distance", "hellinger", "tv", "chi2"):
        f = getattr(divest, fn)
        add(
            fn,
            {"p": p6, "q": q6},
            lambda p, q, base, f=f: f(p, q, base=base),
            {"base": 2.0} if fn in ("kl", "js", "js_distance") else {},
        )
    add("renyi", {"p": p6, "q": q6}, lambda p, q, alpha: divest.renyi(p, q, alpha), {"alpha": 2.0})
    add(
        "f_divergence",
        {"p": p6, "q": q6},
        lambda p, q, alpha: divest.f_divergence(p, q, "alpha", alpha=alpha),
        {"alpha": 0.5},
    )
    add(
        "mmd",
        {"x": pts, "y": pts2},
        lambda x, y, sigma: divest.mmd(x, y, sigma),
        {"sigma": 1.0},
        names=("unbiased",),
    )
    add(
        "cs_divergence",
        {"x": pts, "y": pts2},
        lambda x, y, sigma: divest.cs_divergence(x, y, sigma),
        {"sigma": 1.0},
    )
    add("knn_entropy", {"x": pts}, lambda x, k: divest.knn_entropy(x, k), {"k": 3})
    add("knn_kl", {"x": pts, "y": pts2}, lambda x, y, k: divest.knn_kl(x, y, k), {"k": 3})
    add("knn_mi", {"x": dcx, "y": dcy}, lambda x, y, k: divest.knn_mi(x, y, k), {"k": 3})
    add(
        "fisher_merge",
        {
            "params[0]": r.standard_normal(5),
            "params[1]": r.standard_normal(5),
            "fishers[0]": r.random(5),
            "fishers[1]": r.random(5),
        },
        lambda floor, **kw: divest.fisher_merge(
            [kw["params[0]"], kw["params[1]"]], [kw["fishers[0]"], kw["fishers[1]"]], floor=floor
        ),
        {"floor": 1e-6},
    )
    add(
        "fisher_weighted_svd",
        {"W": r.standard_normal((5, 4)), "fisher": r.random((5, 4))},
        lambda W, fisher, rank, floor: divest.fisher_weighted_svd(W, fisher, rank, floor=floor),
        {"rank": 2, "floor": 1e-8},
    )
    # distance covariance and energy statistics
    for fn in ("dcov", "dcov_sqr", "dcor", "dcor_sqr"):
        f = getattr(divest, fn)
        add(
            fn,
            {"x": dcx, "y": dcy},
            lambda x, y, exponent, f=f: f(x, y, exponent),
            {"exponent": 1.0},
        )
    add(
        "energy_distance",
        {"x": pts, "y": pts2},
        lambda x, y, exponent: divest.energy_distance(x, y, exponent),
        {"exponent": 1.0},
    )
    add(
        "partial_dcor", {"x": dcx, "y": dcy, "z": dcz}, lambda x, y, z: divest.partial_dcor(x, y, z)
    )
    add(
        "dcov_test",
        {"x": dcx, "y": dcy},
        lambda x, y, n_resamples: divest.dcov_test(x, y, n_resamples=n_resamples, rng=0),
        {"n_resamples": 19},
    )
    # The *args calls name their arrays samples[i], xs[i] and attrs[i].
    add(
        "energy_test",
        {"samples[0]": pts, "samples[1]": pts2},
        lambda n_resamples, **kw: divest.energy_test(
            kw["samples[0]"], kw["samples[1]"], n_resamples=n_resamples, rng=0
        ),
        {"n_resamples": 19},
    )
    add(
        "jdcov",
        {"xs[0]": dcx, "xs[1]": dcy, "xs[2]": dcz},
        lambda c, **kw: divest.jdcov(kw["xs[0]"], kw["xs[1]"], kw["xs[2]"], c=c),
        {"c": 1.0},
    )
    add(
        "ccdcov",
        {"y": dcy, "attrs[0]": dcx, "attrs[1]": dcz},
        lambda y, **kw: divest.ccdcov(y, kw["attrs[0]"], kw["attrs[1]"]),
    )
    add(
        "jdcov_test",
        {"xs[0]": dcx, "xs[1]": dcy},
        lambda n_resamples, **kw: divest.jdcov_test(
            kw["xs[0]"], kw["xs[1]"], n_resamples=n_resamples, rng=0
        ),
        {"n_resamples": 19},
    )
    add(
        "ccdcov_test",
        {"y": dcy, "attrs[0]": dcx},
        lambda y, n_resamples, **kw: divest.ccdcov_test(
            y, kw["attrs[0]"], n_resamples=n_resamples, rng=0
        ),
        {"n_resamples": 19},
    )
    # determinantal point processes
    add(
        "dpp.sample_projection",
        {"U": U},
        lambda U, n_samples: dpp.sample_projection(U, n_samples, rng=0),
        {"n_samples": 3},
    )
    add("dpp.DPP", {"L": L6}, lambda L: dpp.DPP(L=L).inclusion_probabilities())
    add("dpp.DPP(K)", {"K": K6}, lambda K: dpp.DPP(K=K).inclusion_probabilities())
    add("dpp.DPP.rank", {}, lambda: dppL.rank)
    add("dpp.DPP.expected_size", {}, lambda: dppL.expected_size())
    add("dpp.DPP.inclusion_probabilities", {}, lambda: dppL.inclusion_probabilities())
    add("dpp.DPP.correlation_kernel", {}, lambda: dppL.correlation_kernel())
    add("dpp.DPP.sample", {}, lambda n_samples: dppL.sample(n_samples, rng=0), {"n_samples": 3})
    add(
        "dpp.DPP.sample_k",
        {},
        lambda k, n_samples: dppL.sample_k(k, n_samples, rng=0),
        {"k": 2, "n_samples": 3},
    )
    add("dpp.DPP.log_normaliser_k", {}, lambda k: dppL.log_normaliser_k(k), {"k": 2})
    add(
        "dpp.volume_sample",
        {"X": X},
        lambda X, k, n_samples: dpp.volume_sample(X, k, rng=0, n_samples=n_samples),
        {"k": 4, "n_samples": 2},
    )
    add(
        "dpp.volume_rescaled_sample",
        {"X": X, "p": _prob(10, r)},
        lambda X, p, k: dpp.volume_rescaled_sample(X, k, rng=0, p=p, n_samples=2),
        {"k": 5},
    )
    add("dpp.optimal_weights", {"Phi": Phi}, lambda Phi: dpp.optimal_weights(Phi))
    add(
        "dpp.weighted_least_squares",
        {"Phi": Phi, "y": yv, "weights": r.random(12) + 0.1},
        lambda Phi, y, weights: dpp.weighted_least_squares(Phi, y, weights),
    )
    add(
        "dpp.least_squares_design",
        {"Phi_candidates": Phi},
        lambda Phi_candidates, n: dpp.least_squares_design(Phi_candidates, n, rng=0),
        {"n": 4},
    )
    # kernel tests (issue 17)
    add(
        "mmd_test",
        {"x": pts, "y": pts2},
        lambda x, y, n_resamples: divest.mmd_test(x, y, n_resamples=n_resamples, rng=0),
        {"n_resamples": 19},
    )
    add(
        "hsic",
        {"x": dcx, "y": dcy},
        lambda x, y, bandwidth: divest.hsic(x, y, bandwidth=bandwidth),
        {"bandwidth": 1.0},
    )
    add(
        "hsic_test",
        {"x": dcx, "y": dcy},
        lambda x, y, n_resamples: divest.hsic_test(x, y, n_resamples=n_resamples, rng=0),
        {"n_resamples": 19},
    )
    add(
        "dhsic",
        {"xs[0]": dcx, "xs[1]": dcy, "xs[2]": dcz},
        lambda bandwidth, **kw: divest.dhsic(
            kw["xs[0]"], kw["xs[1]"], kw["xs[2]"], bandwidth=bandwidth
        ),
        {"bandwidth": 1.0},
    )
    add(
        "dhsic_test",
        {"xs[0]": dcx, "xs[1]": dcy},
        lambda n_resamples, **kw: divest.dhsic_test(
            kw["xs[0]"], kw["xs[1]"], n_resamples=n_resamples, rng=0
        ),
        {"n_resamples": 19},
    )
    add(
        "partial_dcor_test",
        {"x": dcx, "y": dcy, "z": dcz},
        lambda x, y, z, n_resamples: divest.partial_dcor_test(
            x, y, z, n_resamples=n_resamples, rng=0
        ),
        {"n_resamples": 19},
    )
    # exact 1-D and sliced transport (issue 17)
    add(
        "wasserstein_1d",
        {"u": pts[:, 0], "v": pts2[:, 1], "u_weights": r.random(12) + 0.1},
        lambda u, v, u_weights, p: divest.wasserstein_1d(u, v, u_weights, p=p),
        {"p": 2.0},
    )
    add(
        "sliced_wasserstein",
        {"x": pts, "y": pts2},
        lambda x, y, n_projections: divest.sliced_wasserstein(
            x, y, n_projections=n_projections, rng=0
        ),
        {"n_projections": 8},
    )
    add(
        "max_sliced_wasserstein",
        {"x": pts, "y": pts2},
        lambda x, y, n_projections: divest.max_sliced_wasserstein(
            x, y, n_projections=n_projections, rng=0, n_iter=5
        ),
        {"n_projections": 8},
    )
    # dependence over many variables and conditional measures (issue 17)
    dmX = r.standard_normal((12, 3))
    add(
        "dcor_matrix",
        {"X": dmX, "Y": r.standard_normal((12, 2))},
        lambda X, Y, exponent: divest.dcor_matrix(X, Y, exponent=exponent),
        {"exponent": 1.0},
    )
    add(
        "mi_matrix",
        {"X": dmX, "Y": r.standard_normal((12, 2))},
        lambda X, Y, k: divest.mi_matrix(X, Y, k=k),
        {"k": 3},
    )
    add(
        "knn_cmi",
        {"x": dcx, "y": dcy, "z": dcz},
        lambda x, y, z, k: divest.knn_cmi(x, y, z, k),
        {"k": 3},
    )
    add(
        "cmi_test",
        {"x": dcx, "y": dcy, "z": dcz},
        lambda x, y, z, n_resamples: divest.cmi_test(x, y, z, n_resamples=n_resamples, rng=0),
        {"n_resamples": 9},
    )
    add("dpp.greedy_map", {"L": L6}, lambda L, k: dpp.greedy_map(L, k), {"k": 3})
    return {s.name: s for s in S}


#: Public names that are result containers or warnings, not calls with inputs.
EXEMPT = {
    "ConvergenceWarning": "a warning class",
    "TestResult": "a result container",
    "SinkhornResult": "a result container",
    "SinkhornDivergence": "a result container",
    "BandwidthSelection": "a result container",
    "dpp": "the module; its callables are listed as dpp.*",
    "__version__": "a string",
    "dpp.Design": "a NamedTuple result container",
    "GridResult": "a result container",
    "GridResult.spacing": "a property of the result container",
    "MAX_THREADS": "a constant",
}

#: Every public callable the matrix covers, listed explicitly: a new public function
#: without cases makes test_every_public_callable_has_cases fail.
NAMES = (
    "KDE",
    "KDE.logpdf",
    "KDE.pdf",
    "KDE.score",
    "KDE.marginal",
    "KDE.conditional",
    "KDE.cdf",
    "KDE.integrate_box",
    "KDE.ppf",
    "KDE.loo_logpdf",
    "KDE.resample",
    "KDE.covariance",
    "KDE(bounds)",
    "kde_logpdf",
    "select_bandwidth",
    "kde_grid",
    "KDE.grid",
    "isj_bandwidth",
    "get_num_threads",
    "set_num_threads",
    "threads",
    "sinkhorn",
    "sinkhorn_unbalanced",
    "sinkhorn_batch",
    "sinkhorn_batch(masked)",
    "sinkhorn_divergence",
    "kl",
    "js",
    "js_distance",
    "hellinger",
    "tv",
    "chi2",
    "renyi",
    "f_divergence",
    "mmd",
    "cs_divergence",
    "knn_entropy",
    "knn_kl",
    "knn_mi",
    "fisher_merge",
    "fisher_weighted_svd",
    "dcov",
    "dcov_sqr",
    "dcor",
    "dcor_sqr",
    "partial_dcor",
    "energy_distance",
    "dcov_test",
    "energy_test",
    "jdcov",
    "ccdcov",
    "jdcov_test",
    "ccdcov_test",
    "dpp.sample_projection",
    "dpp.DPP",
    "dpp.DPP(K)",
    "dpp.DPP.rank",
    "dpp.DPP.expected_size",
    "dpp.DPP.inclusion_probabilities",
    "dpp.DPP.correlation_kernel",
    "dpp.DPP.sample",
    "dpp.DPP.sample_k",
    "dpp.DPP.log_normaliser_k",
    "dpp.volume_sample",
    "dpp.volume_rescaled_sample",
    "dpp.optimal_weights",
    "dpp.weighted_least_squares",
    "dpp.least_squares_design",
    "mmd_test",
    "hsic",
    "hsic_test",
    "dhsic",
    "dhsic_test",
    "partial_dcor_test",
    "wasserstein_1d",
    "sliced_wasserstein",
    "max_sliced_wasserstein",
    "dcor_matrix",
    "mi_matrix",
    "knn_cmi",
    "cmi_test",
    "dpp.greedy_map",
)


def discover_public():
    """Public callables found by introspection: divest.__all__, divest.dpp.__all__ and
    the public methods and properties of the public classes."""
    import inspect

    import divest
    from divest import dpp

    found = set()
    for modname, mod in (("", divest), ("dpp.", dpp)):
        for name in mod.__all__:
            obj = getattr(mod, name)
            full = modname + name
            found.add(full)
            if inspect.isclass(obj) and not issubclass(obj, (Warning, tuple)):
                for attr, val in vars(obj).items():
                    if attr.startswith("_"):
                        continue
                    if callable(val) or isinstance(val, property):
                        found.add(f"{full}.{attr}")
    return found


# ---------------------------------------------------------------------------------------
# Variants.

SAME = ("fortran", "noncontig", "readonly", "bigendian", "list")
CAST = ("int", "bool", "float16", "object")
BAD = ("empty", "nan", "inf", "complex", "str")
EDGE = ("one", "zerod", "3d", "mismatch", "huge", "subnormal")
ARRAY_VARIANTS = SAME + CAST + ("float32",) + BAD + EDGE
SCALAR_VARIANTS = (
    "nan",
    "inf",
    "zero",
    "neg",
    "str",
    "bool",
    "huge",
    "subnormal",
    "npscalar",
    "none",
)


def _noncontig(a):
    big = np.zeros((a.shape[0] * 2,) + a.shape[1:]) if a.ndim else None
    if big is None:
        return None
    big[::2] = a
    v = big[::2]
    if a.ndim >= 2:
        wide = np.zeros(a.shape[:-1] + (a.shape[-1] * 2,))
        wide[..., ::2] = a
        v = wide[..., ::2]
    return v


def array_variant(a, v):
    """(the variant value, the float64 reference input or None) for base array `a`."""
    a = np.asarray(a, dtype=np.float64)
    if v == "fortran":
        return (np.asfortranarray(a), a) if a.ndim >= 2 else (None, None)
    if v == "noncontig":
        return _noncontig(a), a
    if v == "readonly":
        c = a.copy()
        c.setflags(write=False)
        return c, a
    if v == "bigendian":
        return a.astype(">f8"), a
    if v == "list":
        return a.tolist(), a
    if v == "int":
        c = np.round(a * 3).astype(np.int64)
        return c, c.astype(np.float64)
    if v == "bool":
        c = a > np.median(a)
        return c, c.astype(np.float64)
    if v == "float16":
        c = a.astype(np.float16)
        return c, c.astype(np.float64)
    if v == "object":
        return a.astype(object), a
    if v == "float32":
        c = a.astype(np.float32)
        return c, c.astype(np.float64)
    if v == "empty":
        return np.zeros((0,) + a.shape[1:]), None
    if v in ("nan", "inf"):
        c = a.copy()
        c.flat[min(1, c.size - 1)] = np.nan if v == "nan" else np.inf
        return c, None
    if v == "complex":
        return a.astype(complex), None
    if v == "str":
        return a.astype(str), None
    if v == "one":
        return a[:1].copy(), None
    if v == "zerod":
        return np.asarray(a.flat[0]), None
    if v == "3d":
        return a.reshape(a.shape + (1,) * max(1, 3 - a.ndim)), None
    if v == "mismatch":
        if a.ndim >= 2:
            return np.concatenate([a, a[..., :1]], axis=-1), None
        return np.concatenate([a, a[:1]]), None
    if v == "huge":
        return a * 1e300, None
    if v == "subnormal":
        return np.round(a * 7) * 5e-324, None
    raise KeyError(v)


def scalar_variant(value, v):
    """(variant value, plain reference value or None)."""
    integral = isinstance(value, int) and not isinstance(value, bool)
    return {
        "nan": (math.nan, None),
        "inf": (math.inf, None),
        "zero": (0 if integral else 0.0, None),
        "neg": (-1 if integral else -1.0, None),
        "str": (str(value), None),
        "bool": (True, None),
        "huge": (10**30 if integral else 1e300, None),
        "subnormal": (5e-324, None),
        "npscalar": ((np.int64(value), value) if integral else (np.float32(value), None)),
        "none": (None, None),
    }[v]


# ---------------------------------------------------------------------------------------
# Outcome checks.


def flatten(res):
    """All numbers in a result, as a list of float64 arrays."""
    if res is None or isinstance(res, (str, bool)):
        return []
    if isinstance(res, (int, float, np.number, np.ndarray)):
        a = np.asarray(res)
        if a.dtype.kind in "biuf":
            return [a.astype(np.float64)]
        return []
    if isinstance(res, dict):
        return [x for k in sorted(res) for x in flatten(res[k])]
    if isinstance(res, (list, tuple)):
        return [x for r in res for x in flatten(r)]
    if dataclasses.is_dataclass(res):
        return [x for f in dataclasses.fields(res) for x in flatten(getattr(res, f.name))]
    if hasattr(res, "__dict__"):
        d = vars(res)
        return [x for k in sorted(d) if not k.startswith("_") for x in flatten(d[k])]
    return []


def has_nan(res):
    return any(np.isnan(a).any() for a in flatten(res))


def same(r1, r2, rtol=0.0, atol=0.0):
    f1, f2 = flatten(r1), flatten(r2)
    if len(f1) != len(f2):
        return False
    for x, y in zip(f1, f2):
        if x.shape != y.shape:
            return False
        if not np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
            return False
    return True


def _snap(v):
    if isinstance(v, np.ndarray):
        return ("a", v.copy(), v.dtype, v.shape, v.flags.writeable)
    return ("o", copy.deepcopy(v))


def _unchanged(v, snap):
    if snap[0] == "a":
        _, c, dt, sh, wr = snap
        if v.dtype != dt or v.shape != sh or v.flags.writeable != wr:
            return False
        if v.dtype.kind in "fc":
            return bool(np.array_equal(v, c, equal_nan=True))
        return bool(np.array_equal(v, c))
    return v == snap[1] or (v != v and snap[1] != snap[1])


def _run(spec, kw):
    """('ok', result) or ('raise', exception)."""
    snaps = {k: _snap(v) for k, v in kw.items()}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with np.errstate(all="ignore"):
                res = spec.call(**kw)
        out = ("ok", res)
    except Exception as exc:  # noqa: BLE001 - classified by the caller
        out = ("raise", exc)
    for k, v in kw.items():
        try:
            ok = _unchanged(v, snaps[k])
        except Exception:  # noqa: BLE001
            ok = False
        if not ok:
            return ("mutated", k)
    return out


# NumPy 2 scalar reprs ("np.float64(0.5)") in a message read as internals to a user.
_NUMPY_REPRS = ("np.float", "np.int", "np.uint", "np.bool", "np.True_", "np.False_", "np.str_")


def _clear_error(exc, names):
    msg = str(exc)
    return (
        isinstance(exc, (ValueError, TypeError))
        and any(n in msg for n in names)
        and not any(r in msg for r in _NUMPY_REPRS)
    )


def _describe(out):
    if out[0] == "raise":
        e = out[1]
        return f"{type(e).__name__}: {str(e)[:200]}"
    if out[0] == "mutated":
        return f"modified its input {out[1]!r}"
    return f"returned {str(out[1])[:120]!r}"


def cases(spec):
    """(case id, kind, target name, keyword arguments, reference keyword arguments)."""
    base = dict(spec.arrays)
    base.update(spec.scalars)
    out = []
    for name in spec.arrays:
        for v in ARRAY_VARIANTS:
            if v in spec.skip:
                continue
            val, ref = array_variant(spec.arrays[name], v)
            if val is None:
                continue
            kw = dict(base, **{name: val})
            rkw = None if ref is None else dict(base, **{name: ref})
            out.append((f"{name}={v}", v, name, kw, rkw))
    for name, value in spec.scalars.items():
        for v in SCALAR_VARIANTS:
            val, ref = scalar_variant(value, v)
            kw = dict(base, **{name: val})
            rkw = None if ref is None else dict(base, **{name: ref})
            out.append((f"{name}={v}", "scalar:" + v, name, kw, rkw))
    if not spec.arrays and not spec.scalars:
        out.append(("plain", "plain", "", dict(base), None))
    return out


def check(spec, kind, target, kw, rkw, plain):
    """None when the case behaves, else the reason."""
    names = [target]
    if kind in ("one", "mismatch", "zerod", "3d", "empty"):
        # A changed shape may be reported on either side of the mismatch it makes.
        names = list(spec.arrays) + list(spec.names)
    out = _run(spec, kw)
    if out[0] == "mutated":
        return _describe(out)
    if kind == "plain":
        if out[0] != "ok":
            return _describe(out)
        return "silent NaN" if has_nan(out[1]) else None
    ref = _run(spec, rkw) if rkw is not None else None
    if kind in SAME or kind == "scalar:npscalar" and ref is not None:
        if ref[0] == "ok":
            if out[0] != "ok":
                return f"raised on a valid layout: {_describe(out)}"
            if not same(out[1], ref[1], rtol=spec.layout_rtol):
                return "result differs from the plain float64 C-contiguous input"
            return None
        if out[0] == "raise" and type(out[1]) is type(ref[1]):
            return None
        return f"reference {_describe(ref)} but {_describe(out)}"
    if kind in CAST:
        if out[0] == "raise":
            return None if _clear_error(out[1], names) else f"unclear error: {_describe(out)}"
        if ref[0] == "ok":
            return None if same(out[1], ref[1]) else "result differs from the float64 cast"
        return f"reference {_describe(ref)} but {_describe(out)}"
    if kind == "float32":
        if out[0] == "raise":
            return None if _clear_error(out[1], names) else f"unclear error: {_describe(out)}"
        if has_nan(out[1]):
            return "silent NaN"
        if ref[0] == "ok" and not same(out[1], ref[1], rtol=1e-3, atol=1e-4):
            return "float32 result far from the float64 one"
        return None
    if kind in BAD:
        if out[0] == "raise" and _clear_error(out[1], names):
            return None
        return f"expected a ValueError/TypeError naming {target!r}: {_describe(out)}"
    # EDGE and scalar variants: a clear error or a result without NaN.
    if out[0] == "raise":
        return None if _clear_error(out[1], names) else f"unclear error: {_describe(out)}"
    if has_nan(out[1]):
        return "silent NaN"
    return None


def run_child(name, first):
    spec = _specs()[name]
    for i, (cid, kind, target, kw, rkw) in enumerate(cases(spec)):
        if i < first:
            continue
        print(json.dumps({"i": i, "case": cid, "event": "start"}), flush=True)
        try:
            why = check(spec, kind, target, kw, rkw, None)
        except Exception as exc:  # noqa: BLE001 - a failure in the checker itself
            why = f"checker error {type(exc).__name__}: {exc}"
        print(json.dumps({"i": i, "case": cid, "event": "done", "why": why}), flush=True)


if __name__ == "__main__":
    run_child(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
