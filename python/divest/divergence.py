"""Divergences between distributions.

* Kernel estimators from samples (:func:`mmd`, :func:`cs_divergence`) on the pairwise
  engine, in O((n + m)·d) memory.
* kNN estimators (:func:`knn_entropy`, :func:`knn_kl`, :func:`knn_mi`) by brute force on
  the pairwise engine's top-k reducer (exact-difference distances, tiled and parallel).
* Fisher tools (:func:`fisher_merge`, :func:`fisher_weighted_svd`) for merging and
  compressing models, in NumPy.
* Discrete divergences (:func:`kl`, :func:`js`, :func:`js_distance`, :func:`hellinger`,
  :func:`tv`, :func:`chi2`, :func:`renyi`, :func:`f_divergence`) between probability
  vectors, logits or log-probabilities, batched with NumPy broadcasting and reduced along
  ``axis``. Rows are validated, normalised and reduced in Rust, in parallel over rows,
  without any temporary array of the input's size (unless ``axis`` is not the last,
  contiguous axis, in which case the inputs are copied once into that layout).

Conventions (those of ``scipy.special.rel_entr``): 0·log 0 = 0, and p > 0 where q = 0 gives
``inf`` (and only there: ratios p/q beyond the double range are formed in log space).
A logarithm ``base`` must be a finite number greater than 1. Identical inputs give exactly 0. The logarithmic divergences are accumulated as
sums of the non-negative terms ``p ln(p/q) - p + q`` (equal in total to the usual sum for
normalised rows), so they are never negative and are exact for nearly identical inputs.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import _backend, _core
from ._validate import as_float_array, as_points, check_choice, check_int, check_positive

__all__ = [
    "kl",
    "js",
    "js_distance",
    "hellinger",
    "tv",
    "chi2",
    "renyi",
    "f_divergence",
    "F_DIVERGENCES",
    "mmd",
    "cs_divergence",
    "median_sigma",
    "knn_entropy",
    "knn_kl",
    "knn_mi",
    "fisher_merge",
    "fisher_weighted_svd",
]

#: Named generators accepted by :func:`f_divergence`.
F_DIVERGENCES = (
    "kl",
    "reverse_kl",
    "js",
    "hellinger",
    "tv",
    "chi2",
    "neyman_chi2",
    "alpha",
    "jeffreys",
    "triangular",
)
_LOGARITHMIC = {"kl", "reverse_kl", "js", "jeffreys", "renyi"}

#: Allowed |Σp − 1| (or |log Σ exp(x)| for log-probabilities) per dtype when not normalising.
SUM_TOL = {np.dtype(np.float64): 1e-6, np.dtype(np.float32): 1e-4}

_COMMON_DOC = """
    Parameters
    ----------
    p, q : array_like
        Distributions along ``axis``; the other axes broadcast against each other like
        NumPy. Probabilities must be non-negative and finite, and each row must sum to 1
        within 1e-6 (float64) or 1e-4 (float32) unless ``normalize=True``.
    axis : int
        The category axis (default -1). A non-last axis costs one copy of the inputs.
    keepdims : bool
        Keep the reduced axis with length one.
    from_logits : bool
        ``p`` and ``q`` are logits (unnormalised log-probabilities); each row is
        normalised by its log-sum-exp in log space, without forming the softmax arrays.
    log_input : bool
        ``p`` and ``q`` are log-probabilities (``-inf`` for zero mass); rows must satisfy
        log Σ exp = 0 within the tolerance unless ``normalize=True``.
    normalize : bool
        Rescale rows to sum to one instead of rejecting rows that do not.
    base : float or None
        Logarithm base, a finite number > 1 (None: nats); only for the logarithmic
        divergences (kl, js, js_distance, renyi, and f_divergence's kl, reverse_kl, js,
        jeffreys). Anything else is a ValueError naming ``base``.
"""


def _input_kind(from_logits, log_input) -> str:
    if from_logits and log_input:
        raise ValueError("pass either from_logits=True or log_input=True, not both")
    return "logits" if from_logits else ("log" if log_input else "prob")


def _check_axis(axis, nd: int) -> int:
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (numbers.Integral, np.integer)):
        raise TypeError(f"axis must be an integer; got {type(axis).__name__}")
    a = int(axis)
    if not -nd <= a < nd:
        raise ValueError(f"axis {a} is out of bounds for inputs with {nd} dimensions")
    return a % nd


def _log_base(base) -> float:
    """ln(base) for a finite base > 1 (1.0 for None: nats). A base in (0, 1) would flip the
    sign of every divergence (and make square roots NaN), so it is rejected."""
    if base is None:
        return 1.0
    if isinstance(base, (bool, np.bool_)) or not isinstance(
        base, (numbers.Real, np.floating, np.integer)
    ):
        raise TypeError(f"base must be a number greater than 1; got {type(base).__name__}")
    b = float(base)
    if not (np.isfinite(b) and b > 1):
        raise ValueError(
            f"base must be a finite number greater than 1 (2 for bits, 10 for bans); got {base!r}"
        )
    return math.log(b)


def _rows(m: np.ndarray, batch: tuple, n_out: int, dtype):
    """(C-contiguous (rows, k) array, index of each output row or None)."""
    k = m.shape[-1]
    rows = np.ascontiguousarray(m, dtype=dtype).reshape(-1, k)
    if m.shape[:-1] == batch:
        return rows, None
    if rows.shape[0] == 1:
        return rows, np.zeros(n_out, dtype=np.int64)
    idx = np.arange(rows.shape[0], dtype=np.int64).reshape(m.shape[:-1])
    return rows, np.ascontiguousarray(np.broadcast_to(idx, batch)).reshape(-1)


def _aligned(p, q, axis, xp=None):
    """p and q as float arrays (`as_float_array`; with the namespace `xp` of device
    arrays, on their device) with their categories moved to the last axis, after the
    shape checks shared by the host and GPU paths. Returns (pm, qm, batch, k, ax, dtype):
    the broadcast batch shape, the number of categories, the axis as a non-negative
    index, and the result dtype (float32 when both inputs are float32)."""
    xn = np if xp is None else xp
    pa = as_float_array(p, "p", check_finite=False, xp=xp)
    qa = as_float_array(q, "q", check_finite=False, xp=xp)
    dtype = np.float32 if (pa.dtype == np.float32 and qa.dtype == np.float32) else np.float64
    if pa.ndim == 0 or qa.ndim == 0:
        raise ValueError("p and q must be at least 1-D: distributions along `axis`")
    nd = max(pa.ndim, qa.ndim)
    ax = _check_axis(axis, nd)
    pa = pa.reshape((1,) * (nd - pa.ndim) + pa.shape)
    qa = qa.reshape((1,) * (nd - qa.ndim) + qa.shape)
    k = pa.shape[ax]
    if qa.shape[ax] != k:
        raise ValueError(
            f"p and q must have the same number of categories along axis {axis}; "
            f"got {k} and {qa.shape[ax]}"
        )
    if k == 0:
        raise ValueError("p and q have no categories along axis; distributions need at least one")
    pm, qm = xn.moveaxis(pa, ax, -1), xn.moveaxis(qa, ax, -1)
    try:
        batch = tuple(np.broadcast_shapes(pm.shape[:-1], qm.shape[:-1]))
    except ValueError:
        raise ValueError(
            f"p and q do not broadcast: batch shapes {pm.shape[:-1]} and {qm.shape[:-1]} "
            f"(shapes {pa.shape} and {qa.shape}, categories along axis {axis})"
        ) from None
    return pm, qm, batch, k, ax, dtype


def _batched(
    p,
    q,
    measure: str,
    param: float,
    axis,
    keepdims,
    from_logits,
    log_input,
    normalize,
    base=None,
    sqrt=False,
):
    kind = _input_kind(from_logits, log_input)
    if base is not None and measure not in _LOGARITHMIC:
        raise ValueError(f"base applies to logarithmic divergences only; {measure!r} has no base")
    lb = _log_base(base)
    pm, qm, batch, k, ax, dtype = _aligned(p, q, axis)
    n_out = int(np.prod(batch, dtype=np.int64))
    prow, pidx = _rows(pm, batch, n_out, dtype)
    qrow, qidx = _rows(qm, batch, n_out, dtype)
    tol = SUM_TOL[np.dtype(dtype)]
    out = _core.divergence_rows(
        prow, qrow, pidx, qidx, n_out, measure, float(param), kind, bool(normalize), tol
    )
    if lb != 1.0:
        out /= lb
    if sqrt:
        np.sqrt(out, out=out)
    out = out.reshape(batch)
    if keepdims:
        out = np.expand_dims(out, ax)
    out = out.astype(dtype, copy=False)
    return out[()] if out.ndim == 0 else out


def kl(
    p, q, axis=-1, keepdims=False, base=None, *, from_logits=False, log_input=False, normalize=False
):
    """Kullback-Leibler divergence KL(p‖q) = Σ p log(p/q) (a divergence, not a distance).

    In nats, or in units of ``base`` (``base=2``: bits). Equals
    ``scipy.special.rel_entr(p, q).sum(axis)`` and ``scipy.stats.entropy(p, q, axis=axis)``,
    and ``torch.nn.functional.kl_div(log q, log p, log_target=True, reduction="none").sum(-1)``
    with ``log_input=True``. 0·log 0 = 0; p > 0 where q = 0 gives ``inf``; identical rows
    give exactly 0; the result is never negative. A ratio p/q beyond the largest double
    (``kl([.5, .5], [1e-310, 1 - 1e-310])`` = 356.2075...) is formed in log space, so
    the result is finite wherever q > 0.
    {common}
    Returns
    -------
    float or ndarray
        One value per pair of rows, with the broadcast batch shape (float32 when both
        inputs are float32). Memory: the output, plus a few rows of floats per thread.
    """
    if (g := _backend.route(p, q)) is not None:
        return g.divergence(p, q, "kl", axis, keepdims, base, from_logits, log_input, normalize)
    return _batched(p, q, "kl", 0.0, axis, keepdims, from_logits, log_input, normalize, base)


def js(
    p, q, axis=-1, keepdims=False, base=None, *, from_logits=False, log_input=False, normalize=False
):
    """Jensen-Shannon divergence ½ KL(p‖m) + ½ KL(q‖m), m = (p + q)/2 (a divergence).

    In nats (at most ln 2), or in units of ``base`` (at most 1 bit for ``base=2``). This is
    the *square* of :func:`js_distance` (scipy's ``jensenshannon``). Never NaN and never
    negative: the midpoint enters only through the ratios 2p/(p+q), so subnormal inputs
    such as ``js([0, 1], [5e-324, 1])`` stay finite, and nearly identical rows give their
    tiny positive value instead of a rounding error.
    {common}
    Returns
    -------
    float or ndarray
        One value per pair of rows. Memory: the output, plus a few rows per thread.
    """
    if (g := _backend.route(p, q)) is not None:
        return g.divergence(p, q, "js", axis, keepdims, base, from_logits, log_input, normalize)
    return _batched(p, q, "js", 0.0, axis, keepdims, from_logits, log_input, normalize, base)


def js_distance(
    p, q, axis=-1, keepdims=False, base=None, *, from_logits=False, log_input=False, normalize=False
):
    """Jensen-Shannon distance sqrt(:func:`js`) (a metric).

    Equals ``scipy.spatial.distance.jensenshannon(p, q, base, axis=axis)`` where scipy is
    right, and stays finite and non-NaN where scipy returns NaN or inf.
    {common}
    Returns
    -------
    float or ndarray
        One value per pair of rows. Memory: the output, plus a few rows per thread.
    """
    if (g := _backend.route(p, q)) is not None:
        return g.divergence(
            p, q, "js", axis, keepdims, base, from_logits, log_input, normalize, sqrt=True
        )
    return _batched(
        p, q, "js", 0.0, axis, keepdims, from_logits, log_input, normalize, base, sqrt=True
    )


def hellinger(
    p, q, axis=-1, keepdims=False, base=None, *, from_logits=False, log_input=False, normalize=False
):
    """Hellinger distance H(p, q) = sqrt(½ Σ (√p − √q)²) = sqrt(1 − Σ √(pq)) (a metric).

    Normalised to lie in [0, 1] (the ½ is included, and the square root is taken). Its
    square is ``f_divergence(p, q, "hellinger")``. ``base`` does not apply (must be None).
    {common}
    Returns
    -------
    float or ndarray
        One value per pair of rows. Memory: the output, plus a few rows per thread.
    """
    if (g := _backend.route(p, q)) is not None:
        return g.divergence(
            p, q, "hellinger", axis, keepdims, base, from_logits, log_input, normalize, sqrt=True
        )
    return _batched(
        p, q, "hellinger", 0.0, axis, keepdims, from_logits, log_input, normalize, base, sqrt=True
    )


def tv(
    p, q, axis=-1, keepdims=False, base=None, *, from_logits=False, log_input=False, normalize=False
):
    """Total variation distance ½ Σ |p − q| (a metric, in [0, 1]).

    ``base`` does not apply (must be None).
    {common}
    Returns
    -------
    float or ndarray
        One value per pair of rows. Memory: the output, plus a few rows per thread.
    """
    if (g := _backend.route(p, q)) is not None:
        return g.divergence(p, q, "tv", axis, keepdims, base, from_logits, log_input, normalize)
    return _batched(p, q, "tv", 0.0, axis, keepdims, from_logits, log_input, normalize, base)


def chi2(
    p, q, axis=-1, keepdims=False, base=None, *, from_logits=False, log_input=False, normalize=False
):
    """Pearson χ² divergence χ²(p‖q) = Σ (p − q)²/q (a divergence, not symmetric).

    p > 0 where q = 0 gives ``inf``. Equals ``scipy.stats.chisquare(p, q).statistic`` for
    probability vectors. With log inputs the terms are formed in log space, so a q that
    underflows as a probability still gives the right finite value. ``base`` must be None.
    {common}
    Returns
    -------
    float or ndarray
        One value per pair of rows. Memory: the output, plus a few rows per thread.
    """
    return _batched(p, q, "chi2", 0.0, axis, keepdims, from_logits, log_input, normalize, base)


def renyi(
    p,
    q,
    alpha,
    axis=-1,
    keepdims=False,
    base=None,
    *,
    from_logits=False,
    log_input=False,
    normalize=False,
):
    """Rényi divergence of order alpha: log(Σ p^α q^(1−α)) / (α − 1) (a divergence).

    ``alpha`` >= 0; the limits are taken at α = 1 (:func:`kl`), α = 0 (−log Σ_{p>0} q) and
    α = ``inf`` (log max_{p>0} p/q). In nats or units of ``base``. Never negative;
    identical rows give exactly 0. For |α − 1| <= 1/2 the sum is formed as
    T = (Σ p^α q^(1−α) − 1)/(α − 1) from terms that tend to the KL terms (so next to α = 1,
    e.g. α = 1 + 2⁻⁵², the value is KL + (α − 1)·Var_p[ln p/q]/2 to full precision) and
    D = ln(1 + (α − 1)T)/(α − 1). Where Σ p^α q^(1−α) overflows (α > 1, e.g.
    ``renyi([.5, .5], [1e-100, 1 - 1e-100], 10)`` = 229.488...) the row is summed in log
    space instead; ``inf`` only where the value is infinite (q = 0 < p with α >= 1, or
    disjoint supports).
    {common}
    Returns
    -------
    float or ndarray
        One value per pair of rows. Memory: the output, plus a few rows per thread.
    """
    a = _check_alpha(alpha, "alpha")
    if a < 0:
        raise ValueError(f"alpha must be >= 0 for the Rényi divergence; got {alpha!r}")
    return _batched(p, q, "renyi", a, axis, keepdims, from_logits, log_input, normalize, base)


def _check_alpha(alpha, name) -> float:
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(
        alpha, (numbers.Real, np.floating, np.integer)
    ):
        raise TypeError(f"{name} must be a real number; got {type(alpha).__name__}")
    a = float(alpha)
    if np.isnan(a):
        raise ValueError(f"{name} must not be NaN")
    return a


def f_divergence(
    p,
    q,
    f,
    axis=-1,
    keepdims=False,
    base=None,
    *,
    alpha=None,
    from_logits=False,
    log_input=False,
    normalize=False,
):
    """f-divergence D_f(p‖q) = Σ q f(p/q) for a named generator f (all are divergences).

    Generators (t = p/q; each f is convex with f(1) = 0):

    ============  =====================================  ===============================
    f             f(t)                                   value
    ============  =====================================  ===============================
    kl            t log t                                KL(p‖q), as :func:`kl`
    reverse_kl    −log t                                 KL(q‖p)
    js            ½[t log t − (1+t) log((1+t)/2)]        JS divergence, as :func:`js`
    hellinger     ½ (√t − 1)²                            H², the square of :func:`hellinger`
    tv            ½ |t − 1|                              total variation, as :func:`tv`
    chi2          (t − 1)²                               Pearson χ², as :func:`chi2`
    neyman_chi2   (t − 1)²/t                             Neyman χ² = Σ (p − q)²/p
    alpha         4/(1−α²) (1 − t^((1+α)/2))             Amari's α-divergence (``alpha``)
    jeffreys      (t − 1) log t                          KL(p‖q) + KL(q‖p)
    triangular    (t − 1)²/(t + 1)                       Σ (p − q)²/(p + q)
    ============  =====================================  ===============================

    The α-divergence needs ``alpha`` (any real; α → 1 gives KL(p‖q), α → −1 gives KL(q‖p),
    α = 0 gives 4 H² = 2 Σ (√p − √q)²); for |α| <= 2 it is computed from terms that tend to
    the KL terms, so it stays exact next to α = ±1. ``base`` applies to kl, reverse_kl, js
    and jeffreys. Each is computed from a form whose terms are non-negative, and is never
    negative. Ratios p/q beyond the double range are formed in log space (kl, reverse_kl,
    jeffreys); chi2, neyman_chi2 and alpha with |α| > 1 return ``inf`` only where the value
    itself exceeds the largest double.
    {common}
    Returns
    -------
    float or ndarray
        One value per pair of rows. Memory: the output, plus a few rows per thread.
    """
    check_choice(f, "f", F_DIVERGENCES)
    param = 0.0
    if f == "alpha":
        if alpha is None:
            raise ValueError("f='alpha' needs the order: pass alpha=...")
        param = _check_alpha(alpha, "alpha")
        if not np.isfinite(param):
            raise ValueError(f"alpha must be finite; got {alpha!r}")
    elif alpha is not None:
        raise ValueError(f"alpha applies to f='alpha' only; got f={f!r}")
    return _batched(p, q, f, param, axis, keepdims, from_logits, log_input, normalize, base)


for _fn in (kl, js, js_distance, hellinger, tv, chi2, renyi, f_divergence):
    _fn.__doc__ = _fn.__doc__.replace("{common}", _COMMON_DOC)
del _fn


# --------------------------------------------------------------------- kernel estimators

#: Above this many pooled points, the median heuristic uses a fixed-seed subsample.
MEDIAN_SUBSAMPLE = 1000


def _pow2_scale(*arrays) -> float:
    """A power of two c with max|a| / c in [1, 2) over the arrays (1.0 if all are zero or
    any is not finite). Dividing by c is exact (up to subnormal results), and brings data of
    any magnitude, 1e300 or subnormal, where squared distances neither overflow nor
    underflow."""
    top = max((float(np.max(np.abs(a))) if a.size else 0.0) for a in arrays)
    if not (top > 0 and math.isfinite(top)):
        return 1.0
    return math.ldexp(1.0, math.frexp(top)[1] - 1)


def _two_samples(x, y, check_finite):
    """((x/c0 − mean)/c1, (y/c0 − mean)/c1, (c0, c1)): both samples divided by a power of
    two c0 (see :func:`_pow2_scale`), centred on the pooled mean, and divided by a second
    power of two c1 so that the largest centred coordinate is in [1, 2). Distances are then
    in units of c0·c1 (about the spread of the data), whatever their magnitude (1e300,
    subnormal, or a tiny spread around a large offset). Allocates a few float64 copies of
    each sample (and its dtype cast)."""
    xa = as_points(x, "x", check_finite=check_finite)
    ya = as_points(y, "y", d=xa.shape[1], check_finite=check_finite)
    dtype = np.float32 if (xa.dtype == np.float32 and ya.dtype == np.float32) else np.float64
    c0 = _pow2_scale(xa, ya)
    xs = xa.astype(np.float64) / c0
    ys = ya.astype(np.float64) / c0
    # Centre on the pooled mean: the engine's ‖x‖² + ‖y‖² − 2x·y path loses less precision.
    mean = (xs.sum(0) + ys.sum(0)) / (len(xs) + len(ys))
    xs -= mean
    ys -= mean
    c1 = _pow2_scale(xs, ys)
    xc = np.ascontiguousarray(xs / c1, dtype=dtype)
    yc = np.ascontiguousarray(ys / c1, dtype=dtype)
    return xc, yc, (c0, c1)


def median_sigma(x, y) -> float:
    """The median heuristic: the median Euclidean distance over distinct pairs of the pooled
    sample x ∪ y. With more than ``MEDIAN_SUBSAMPLE`` (1000) pooled points it is computed
    on 1000 of them drawn without replacement with ``numpy.random.default_rng(0)``, so the
    result is deterministic. The distances are computed in units of a power of two near
    the data's magnitude, so data near 1e300 or subnormal data neither overflow nor
    underflow. Memory: float64 copies of x and y, and one 1000 × 1000 distance matrix at
    most."""
    xa = as_points(x, "x")
    ya = as_points(y, "y", d=xa.shape[1])
    c = _pow2_scale(xa, ya)
    # In units of c (a power of two), so squared distances of data near 1e300 or of
    # subnormal data stay representable; the median scales back exactly.
    return _median_sigma(xa.astype(np.float64) / c, ya.astype(np.float64) / c) * c


def _median_sigma(xc, yc) -> float:
    n, m = len(xc), len(yc)
    total = n + m
    if total > MEDIAN_SUBSAMPLE:
        idx = np.sort(np.random.default_rng(0).choice(total, MEDIAN_SUBSAMPLE, replace=False))
        sub = np.concatenate([xc[idx[idx < n]], yc[idx[idx >= n] - n]])
    else:
        sub = np.concatenate([xc, yc])
    sub = np.ascontiguousarray(sub, dtype=np.float64)
    d2 = _core.self_sq_dists(sub)
    iu = np.triu_indices(len(sub), 1)
    sigma = float(np.median(np.sqrt(d2[iu])))
    if not sigma > 0:
        raise ValueError(
            "the median heuristic gives sigma = 0 (most pooled points coincide); pass sigma"
        )
    return sigma


def _sigma(sigma, xc, yc, c) -> float:
    """σ in the units of the rescaled samples (data divided by the powers of two c)."""
    if sigma is None:
        return _median_sigma(xc, yc)
    return check_positive(sigma, "sigma") / c[0] / c[1]


#: Largest ½·‖x − y‖²/σ² over the data that the engine's Gaussian log-kernel handles
#: (far beyond the 745 at which a kernel value underflows to 0).
_MAX_LOG_KERNEL = 1e17


def _kernel_scale(s, sigma, kernel, xc, yc) -> float:
    """1/σ² for σ in rescaled units (a power of two c, see :func:`_two_samples`), or 0.0
    where it underflows (σ so large relative to the data that every kernel value is 1 to
    double precision: the divergence rounds to 0). A σ so small relative to the spread of
    the data that ½·diameter²/σ² (Gaussian) or diameter/σ (Laplacian) exceeds 1e17,
    where every kernel value between distinct points has long underflowed to 0, is a
    ValueError naming sigma."""
    inv = 1.0 / s if s > 0 else math.inf  # σ/c may underflow to 0
    r2 = max(float(np.max(np.einsum("ij,ij->i", a, a, dtype=np.float64))) for a in (xc, yc))
    diam2 = 4.0 * r2  # ‖x − y‖² <= (‖x‖ + ‖y‖)² after centring
    if diam2 == 0:
        top = 0.0
    else:
        top = 0.5 * diam2 * inv * inv if kernel == "gaussian" else math.sqrt(diam2) * inv
    if not top <= _MAX_LOG_KERNEL:
        raise ValueError(
            f"sigma = {sigma!r} is too small for the data x and y: relative to their spread it is "
            "so small that every kernel value between distinct points underflows to 0; pass "
            "a larger sigma (or sigma=None for the median heuristic)"
        )
    # Coinciding points (diameter 0) take any σ: the kernel is 1 on every pair.
    return min(inv * inv, 1e300)


def _same(xc, yc) -> bool:
    # Identical samples: the divergence is exactly 0 (the engine's GEMM distances of a point
    # to itself are zero only to rounding).
    return xc.shape == yc.shape and bool(np.array_equal(xc, yc))


def _kernel_sums(xc, yc, kernel, scale, include_diagonal):
    """(log Σ K_xx, log Σ K_yy, log Σ K_xy). The diagonal k(x_i, x_i) = 1 is added exactly
    rather than computed: a GEMM distance of a point to itself is only zero to rounding."""
    lxx, lyy, lxy = _core.kernel_log_sums(xc, yc, kernel, scale, True)
    if include_diagonal:
        lxx = float(np.logaddexp(lxx, math.log(len(xc))))
        lyy = float(np.logaddexp(lyy, math.log(len(yc))))
    return lxx, lyy, lxy


def mmd(x, y, sigma=None, kernel="gaussian", unbiased=True, *, check_finite=True) -> float:
    """Squared maximum mean discrepancy MMD²(x, y) with a Gaussian or Laplacian kernel.

    Returns the *square* MMD² (a divergence between the sample distributions):

    * ``unbiased=True``: the U-statistic
      1/(n(n−1)) Σ_{i≠j} k(x_i, x_j) + 1/(m(m−1)) Σ_{i≠j} k(y_i, y_j) − 2/(nm) Σ k(x_i, y_j),
      unbiased for MMD² and possibly slightly negative;
    * ``unbiased=False``: the V-statistic (all pairs, i = j included), always >= 0, and 0
      for identical samples.

    Kernels: "gaussian" k = exp(−‖x − y‖²/(2σ²)); "laplacian" k = exp(−‖x − y‖/σ).
    ``sigma=None`` uses :func:`median_sigma` (median pooled pairwise distance; fixed-seed
    subsample of 1000 points for larger inputs). Computed on the pairwise engine as three
    log-sum-exp passes ((x, x), (y, y), (x, y)); memory O((n + m)·d) (a few float64 copies
    of the samples), never an n×m matrix. Matches a brute-force NumPy evaluation of the
    same formula.

    The samples are divided by powers of two (exactly) and centred, so data near 1e300 or
    subnormal data give the value of the same data at unit scale (σ scaled alike). A σ so
    large that every kernel value is 1 to double precision gives 0.0; a σ so small relative
    to the spread of the data that every kernel value between distinct points underflows
    (½·diameter²/σ² above 1e17, or diameter/σ for the Laplacian) is a ValueError.

    References
    ----------
    A. Gretton, K. M. Borgwardt, M. J. Rasch, B. Schölkopf and A. Smola, "A kernel two-sample test", JMLR 13, 2012.
    """
    if (g := _backend.route(x, y)) is not None:
        return g.mmd(x, y, sigma, kernel, unbiased, check_finite)
    check_choice(kernel, "kernel", ("gaussian", "laplacian"))
    xc, yc, c = _two_samples(x, y, check_finite)
    n, m = len(xc), len(yc)
    if unbiased and (n < 2 or m < 2):
        raise ValueError(
            "unbiased=True needs at least 2 points in each sample; "
            "pass unbiased=False or more points"
        )
    scale = _kernel_scale(_sigma(sigma, xc, yc, c), sigma, kernel, xc, yc)
    if (not unbiased and _same(xc, yc)) or scale < 1e-290:
        return 0.0
    lxx, lyy, lxy = _kernel_sums(xc, yc, kernel, scale, include_diagonal=not unbiased)
    if unbiased:
        cxx, cyy = math.log(n) + math.log(n - 1), math.log(m) + math.log(m - 1)
    else:
        cxx, cyy = 2 * math.log(n), 2 * math.log(m)
    cxy = math.log(n) + math.log(m)
    return float(math.exp(lxx - cxx) + math.exp(lyy - cyy) - 2 * math.exp(lxy - cxy))


def cs_divergence(x, y, sigma=None, *, check_finite=True) -> float:
    """Cauchy-Schwarz divergence estimate from samples (a divergence, >= 0, symmetric).

    D_CS = log ΣK_xx + log ΣK_yy − 2 log ΣK_xy, sums over all pairs (i = j included) of the
    Gaussian kernel K = exp(−‖u − v‖²/(2σ²)). Normalising the sums to means (1/n², 1/m²,
    1/(nm)) or the kernel to a density changes nothing: the constants cancel. It equals the
    Cauchy-Schwarz divergence −log(∫p̂q̂)² / (∫p̂² ∫q̂²) between the Gaussian KDEs of x and
    y with bandwidth σ/√2, and tends to that between p and q smoothed by N(0, σ²/2 I).
    ``sigma=None`` uses :func:`median_sigma`. Identical samples give exactly 0. Memory
    O((n + m)·d) through the pairwise engine (three log-sum-exp passes, on a few float64
    copies of the samples). Magnitudes and the range of σ are handled as in :func:`mmd`.

    References
    ----------
    R. Jenssen, J. C. Principe, D. Erdogmus and T. Eltoft, "The Cauchy-Schwarz divergence and Parzen windowing", J. Franklin Inst. 343(6), 2006.
    """
    if (g := _backend.route(x, y)) is not None:
        return g.cs_divergence(x, y, sigma, check_finite)
    xc, yc, c = _two_samples(x, y, check_finite)
    scale = _kernel_scale(_sigma(sigma, xc, yc, c), sigma, "gaussian", xc, yc)
    if _same(xc, yc) or scale < 1e-290:
        return 0.0
    lxx, lyy, lxy = _kernel_sums(xc, yc, "gaussian", scale, include_diagonal=True)
    return float(max(lxx + lyy - 2 * lxy, 0.0))


# ------------------------------------------------------------------------ kNN estimators

_EULER = 0.5772156649015329
#: Relative margin on radii in the KSG counts, so that a point exactly on the radius is
#: classified the same way whichever code path computed its distance (a few ulps apart).
_RADIUS_MARGIN = 1e-13

_DUPLICATES_DOC = """Duplicate points are handled without noise injection: a neighbour at distance
    exactly zero is not a neighbour (the k-th neighbour of a point is its k-th nearest
    *distinct* point, so every log-distance is finite). A point with fewer than k distinct
    other points is an error."""

_ALGORITHM_DOC = """``algorithm`` is "auto" (an exact kd-tree when the total dimension is at most 10,
    else brute force), "kd_tree" or "brute". All three give identical results: the tree
    computes distances exactly as the brute-force path does and breaks ties the same way
    (by the smaller index). The kd-tree takes O(n log n) to build and visits a small
    fraction of the points per query at low dimension (a fraction that grows with d), plus
    a tree-ordered copy of the points (O(n·d) memory); brute force is O(n·m·d) time."""


def _check_algorithm(algorithm) -> str:
    return check_choice(algorithm, "algorithm", ("auto", "kd_tree", "brute"))


def _digamma_int(n: np.ndarray) -> np.ndarray:
    """ψ(n) for integers n >= 1: −γ + Σ_{j<n} 1/j."""
    n = np.asarray(n, dtype=np.int64)
    top = int(n.max()) if n.size else 1
    h = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, top + 1))])
    return h[n - 1] - _EULER


def _knn_scaled(*arrays, pooled=True):
    """The point sets divided by one power of two c (:func:`_pow2_scale`) and shifted by
    the midrange (min + max)/2, per column, of their union (``pooled``: the sets share
    coordinates) or of each set, as C-contiguous float64 copies,
    and ln c. Squared distances of data near 1e300, or subnormal, stay representable; the
    midrange (unlike a mean) does not depend on the order of the rows, so neither do the
    distances. kNN distances scale by exactly c: entropy estimates shift by d·ln c, and the
    KL and MI estimates do not change."""
    c = _pow2_scale(*arrays)
    scaled = [a.astype(np.float64) / c for a in arrays]
    if pooled:
        lo = np.min([a.min(0) for a in scaled], axis=0)
        hi = np.max([a.max(0) for a in scaled], axis=0)
        mids = [0.5 * lo + 0.5 * hi] * len(scaled)
    else:
        mids = [0.5 * a.min(0) + 0.5 * a.max(0) for a in scaled]
    return [np.ascontiguousarray(a - m) for a, m in zip(scaled, mids)], math.log(c)


def _fmean(v) -> float:
    """Mean by math.fsum: exactly rounded, so it does not depend on the order of v."""
    v = np.asarray(v, dtype=np.float64).ravel()
    return math.fsum(v.tolist()) / len(v)


def _check_k(k, n, what):
    k = check_int(k, "k", minimum=1)
    if k >= n:
        raise ValueError(
            f"k must be smaller than the number of points in {what} ({n}); got k = {k}"
        )
    return k


def knn_entropy(x, k=3, *, base=None, algorithm="auto", check_finite=True) -> float:
    """Kozachenko-Leonenko kNN estimate of the differential entropy of x's distribution.

    H = ψ(n) − ψ(k) + log c_d + (d/n) Σ_i log ρ_k(i), with ρ_k(i) the Euclidean distance
    from x_i to its k-th nearest neighbour and c_d = π^(d/2)/Γ(d/2 + 1) the volume of the
    unit ball. In nats, or units of ``base``. Equals scipy cKDTree-based implementations
    of the same formula. The points are divided by a power of two c near their magnitude
    (exact) and the estimate shifted by d·ln c, so data near 1e300 or subnormal data give
    the unit-scale estimate plus d·ln(scale). Memory O(n·(d + k)): a float64 copy of x,
    the neighbour distances and indices.

    {alg}

    {dup}

    References
    ----------
    L. F. Kozachenko and N. N. Leonenko, "Sample estimate of the entropy of a random vector", Probl. Inf. Transm. 23, 1987.
    """
    lb = _log_base(base)
    algorithm = _check_algorithm(algorithm)
    (xc,), log_c = _knn_scaled(as_points(x, "x", check_finite=check_finite))
    n, d = xc.shape
    k = _check_k(k, n, "x")
    d2, _ = _core.knn_sq_dists(xc, xc, k, True, algorithm=algorithm)
    log_cd = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1)
    # In units of c: ρ = c·ρ', so Σ log ρ = Σ log ρ' + n·ln c.
    h = (
        _digamma_int(n)
        - _digamma_int(k)
        + log_cd
        + 0.5 * d * _fmean(np.log(d2[:, k - 1]))
        + d * log_c
    )
    return float(h / lb)


def knn_kl(x, y, k=3, *, base=None, algorithm="auto", check_finite=True) -> float:
    """Wang-Kulkarni-Verdú kNN estimate of KL(P‖Q) from x ~ P (n, d) and y ~ Q (m, d).

    D = (d/n) Σ_i log(ν_k(i)/ρ_k(i)) + log(m/(n − 1)), where ρ_k(i) is the distance from x_i
    to its k-th nearest neighbour among the other x, and ν_k(i) to its k-th nearest among
    y. A divergence (consistent for KL; the estimate itself may be slightly negative). In
    nats or units of ``base``. Equals the usual scipy cKDTree implementation of the same
    formula. The ρ are computed on x divided by a power of two of its own magnitude and
    the ν on x and y divided by one of both (exact; the logs of the units are added
    back), so data near 1e300, subnormal data, and samples of very different magnitudes
    give the right estimate. Memory O((n + m)·d + n·k): two float64 copies of x, one of
    y, the neighbour distances and indices.

    {alg}

    {dup} The same rule applies to y (a y point equal to x_i is not its neighbour).

    References
    ----------
    Q. Wang, S. R. Kulkarni and S. Verdú, "Divergence estimation for multidimensional densities via k-nearest-neighbor distances", IEEE Trans. Inf. Theory 55(5), 2009.
    """
    lb = _log_base(base)
    algorithm = _check_algorithm(algorithm)
    xa = as_points(x, "x", check_finite=check_finite)
    ya = as_points(y, "y", d=xa.shape[1], check_finite=check_finite)
    # The distances within x in x's own units, those from x to y in the units of both
    # (powers of two, exact): samples of very different magnitudes (x near 1, y near
    # 1e300) keep their neighbour distances; the units' logs are added back.
    (xc, yc), log_c = _knn_scaled(xa, ya)
    (xo,), log_cx = _knn_scaled(xa)
    n, d = xc.shape
    m = len(yc)
    k = _check_k(k, n, "x")
    if k > m:
        raise ValueError(f"k must be at most the number of points in y ({m}); got k = {k}")
    rho2, _ = _core.knn_sq_dists(xo, xo, k, True, algorithm=algorithm)
    nu2, _ = _core.knn_sq_dists(xc, yc, k, False, algorithm=algorithm)
    val = (
        0.5 * d * _fmean(np.log(nu2[:, k - 1]) - np.log(rho2[:, k - 1]))
        + d * (log_c - log_cx)
        + math.log(m / (n - 1))
    )
    return float(val / lb)


def knn_mi(
    x,
    y,
    k=3,
    variant=1,
    *,
    base=None,
    algorithm="auto",
    check_finite=True,
    discrete_features=False,
) -> float:
    """Kraskov-Stögbauer-Grassberger kNN estimate of the mutual information I(X; Y).

    x (n, dx) and y (n, dy) are paired samples (1-D arrays are one-dimensional samples).
    Distances in the joint space are max(‖x_i − x_j‖, ‖y_i − y_j‖) with Euclidean norms in
    each marginal (for one-dimensional marginals this is the max-norm of the KSG paper and
    of scikit-learn); the KSG formulas hold for any such max of marginal norms.

    * ``variant=1`` (KSG-1): I = ψ(k) + ψ(n) − ⟨ψ(n_x + 1) + ψ(n_y + 1)⟩, where ε_i is the
      joint distance to the k-th neighbour and n_x counts the other points with
      ‖x_i − x_j‖ < ε_i (strictly). Equals ``sklearn.feature_selection.mutual_info_regression``
      (n_neighbors=k) on standardised 1-D data, without its noise and its clipping at 0.
    * ``variant=2`` (KSG-2): I = ψ(k) − 1/k + ψ(n) − ⟨ψ(n_x) + ψ(n_y)⟩, where ε_x(i) is
      the largest x-distance among the joint neighbours and n_x counts the other points
      with ‖x_i − x_j‖ <= ε_x(i) (similarly for y). The joint neighbours are all points at
      positive joint distance at most the k-th smallest: points tied with the k-th
      neighbour are all included, so the value does not depend on the order of the rows
      (rows with such ties cost a brute-force scan over all points, in tiles).

    Radii carry a relative margin of 1e-13 so points exactly on a radius are classified
    consistently. The estimate may be slightly negative; it is not clipped. In nats or
    units of ``base``. Memory O(n·(dx + dy + k)): float64 copies of x and y (divided by a
    common power of two, so data near 1e300 or subnormal data give the estimate of the
    unscaled data), the neighbour lists, and for KSG-2 a joint copy for duplicate
    detection. ``algorithm`` applies to the joint
    search (total dimension dx + dy) and to each marginal count (dimension dx or dy)
    separately.

    {alg}

    {dup} (Only points equal in both x and y are duplicates in the joint space; the
    marginal counts include marginal duplicates.)

    ``discrete_features``: False (default) runs KSG and warns (a ``UserWarning`` naming
    ``discrete_features``) when a column of x or y looks discrete (at most n/2 distinct
    values); True runs the mixed discrete-continuous estimator of Gao, Kannan, Oh and
    Viswanath (2017) instead (in the form of the authors' reference code), right for
    discrete, continuous and mixed x and y: ρ_i is the k-th smallest joint distance to the
    other points counting exact duplicates at distance 0; when ρ_i > 0, k̃_i = k and n_x,
    n_y count the points strictly within ρ_i in each marginal; when ρ_i = 0, k̃_i, n_x, n_y
    count the points equal to point i jointly and in each marginal; every count includes
    the point itself, and I = ⟨ψ(k̃_i) + ln n − ψ(n_x) − ψ(n_y)⟩ (``variant`` does not
    apply). "auto" runs it when a column looks discrete. Integer codes of a discrete variable are used
    as coordinates: only equality between them matters.

    References
    ----------
    A. Kraskov, H. Stögbauer and P. Grassberger, "Estimating mutual information", Phys. Rev. E 69, 066138, 2004.
    W. Gao, S. Kannan, S. Oh and P. Viswanath, "Estimating mutual information for discrete-continuous mixtures", NeurIPS 2017.
    """
    lb = _log_base(base)
    algorithm = _check_algorithm(algorithm)
    check_choice(variant, "variant", (1, 2), "KSG-1 or KSG-2")
    xa = as_points(x, "x", check_finite=check_finite)
    ya = as_points(y, "y", check_finite=check_finite)
    n = len(xa)
    if len(ya) != n:
        raise ValueError(
            f"x and y must be paired samples of the same length; got {n} and {len(ya)}"
        )
    from ._depstats import gao_mi, mixed_flag

    mixed = mixed_flag(discrete_features, xa, ya)
    # One scale for x and y: the joint max-distance, and so the estimate, is unchanged.
    (xc, yc), _ = _knn_scaled(xa, ya, pooled=False)
    k = _check_k(k, n, "x")
    if mixed:
        return float(gao_mi(xc, yc, k, algorithm) / lb)
    if variant == 1:
        d2, _ = _core.knn_sq_dists(xc, xc, k, True, yc, yc, algorithm=algorithm)
        eps2 = d2[:, k - 1] * (1 - _RADIUS_MARGIN)
        nx = _core.count_within(xc, eps2, True, algorithm)
        ny = _core.count_within(yc, eps2, True, algorithm)
        val = (
            _digamma_int(k) + _digamma_int(n) - _fmean(_digamma_int(nx + 1) + _digamma_int(ny + 1))
        )
    else:
        ex2, ey2 = _ksg2_radii(xc, yc, k, algorithm)
        nx = _core.count_within(xc, ex2 * (1 + _RADIUS_MARGIN), False, algorithm)
        ny = _core.count_within(yc, ey2 * (1 + _RADIUS_MARGIN), False, algorithm)
        val = (
            _digamma_int(k)
            - 1.0 / k
            + _digamma_int(n)
            - _fmean(_digamma_int(nx) + _digamma_int(ny))
        )
    return float(val / lb)


#: Rows per tile when KSG-2 resolves ties at the joint radius by brute force.
_TIE_TILE_ELEMENTS = 1 << 20
#: Neighbours per chunk, and the most neighbours per row, when KSG-2 widens its search
#: over rows with ties at the joint radius.
_TIE_CHUNK_ELEMENTS = 1 << 22
_TIE_MAX_K = 4096


def _sq_dists_to_all(a, rows):
    """Squared distances (len(rows), n) from the points a[rows] to all of a, by direct
    differences (as the engine computes them)."""
    return ((a[rows][:, None, :] - a[None, :, :]) ** 2).sum(-1)


def _ksg2_radii(xc, yc, k, algorithm):
    """KSG-2 marginal radii (ε_x², ε_y²) per point: the largest squared x- and y-distance
    among the point's joint neighbours, taken as *every* point whose joint distance is
    positive and at most the k-th smallest (within the radius margin). Defining the
    neighbour set by values, with all points tied at the radius included, makes the result
    independent of the order of the rows (breaking ties by index does not).

    Cost: one joint kNN search for k + 1 neighbours. The r rows where the (k + 1)-th
    neighbour ties the k-th are searched again for 2(k + 1), 4(k + 1), ... neighbours until
    the last one lies beyond the radius (in chunks of at most about 2**22 neighbours);
    rows whose ties run past 4096 neighbours are finished by a brute-force scan of all n
    points in tiles of about 2**20 distances (O(n·(dx + dy)) time per such row)."""
    n = len(xc)
    # Points at joint distance zero (duplicates in both blocks) are never neighbours.
    _, inv, counts = np.unique(np.hstack([xc, yc]), axis=0, return_inverse=True, return_counts=True)
    positive = n - counts[inv.ravel()]  # points at positive joint distance, per row
    if k + 1 <= positive.min():
        d2, idx = _core.knn_sq_dists(xc, xc, k + 1, True, yc, yc, algorithm=algorithm)
        eps2, nxt2, idx = d2[:, k - 1], d2[:, k], idx[:, :k]
        ex2 = np.max(((xc[:, None, :] - xc[idx]) ** 2).sum(-1), axis=1)
        ey2 = np.max(((yc[:, None, :] - yc[idx]) ** 2).sum(-1), axis=1)
        tied = np.flatnonzero(nxt2 <= eps2 * (1 + _RADIUS_MARGIN))
    else:
        d2, idx = _core.knn_sq_dists(xc, xc, k, True, yc, yc, algorithm=algorithm)
        eps2 = d2[:, k - 1]
        ex2 = np.max(((xc[:, None, :] - xc[idx]) ** 2).sum(-1), axis=1)
        ey2 = np.max(((yc[:, None, :] - yc[idx]) ** 2).sum(-1), axis=1)
        # Rows with exactly k points at positive distance have no further candidates.
        tied = np.flatnonzero(positive > k)
    thr2 = eps2 * (1 + _RADIUS_MARGIN)
    kk = 2 * (k + 1)
    while tied.size and kk <= _TIE_MAX_K:
        kq = min(kk, int(positive[tied].min()))
        step = max(1, _TIE_CHUNK_ELEMENTS // kq)
        done = []
        for s0 in range(0, len(tied), step):
            rows = tied[s0 : s0 + step]
            # same=False: the point itself (distance 0) is skipped like any duplicate.
            d2t, idt = _core.knn_sq_dists(
                np.ascontiguousarray(xc[rows]),
                xc,
                kq,
                False,
                np.ascontiguousarray(yc[rows]),
                yc,
                algorithm=algorithm,
            )
            t = thr2[rows]
            fin = (d2t[:, -1] > t) | (positive[rows] <= kq)
            rf = rows[fin]
            if rf.size:
                inside = d2t[fin] <= t[fin][:, None]
                idf = idt[fin]
                dx2 = ((xc[rf][:, None, :] - xc[idf]) ** 2).sum(-1)
                dy2 = ((yc[rf][:, None, :] - yc[idf]) ** 2).sum(-1)
                ex2[rf] = np.max(np.where(inside, dx2, 0.0), axis=1)
                ey2[rf] = np.max(np.where(inside, dy2, 0.0), axis=1)
                done.append(rf)
        if done:
            tied = np.setdiff1d(tied, np.concatenate(done), assume_unique=True)
        if kq == kk:
            kk *= 2
    step = max(1, _TIE_TILE_ELEMENTS // max(n, 1))
    for s0 in range(0, len(tied), step):
        rows = tied[s0 : s0 + step]
        dx2 = _sq_dists_to_all(xc, rows)
        dy2 = _sq_dists_to_all(yc, rows)
        j2 = np.maximum(dx2, dy2)
        inside = (j2 > 0) & (j2 <= (eps2[rows] * (1 + _RADIUS_MARGIN))[:, None])
        ex2[rows] = np.max(np.where(inside, dx2, 0.0), axis=1)
        ey2[rows] = np.max(np.where(inside, dy2, 0.0), axis=1)
    return ex2, ey2


for _fn in (knn_entropy, knn_kl, knn_mi):
    _fn.__doc__ = _fn.__doc__.replace("{dup}", _DUPLICATES_DOC).replace("{alg}", _ALGORITHM_DOC)
del _fn


# --------------------------------------------------------------------------- Fisher tools


def _as_list(x, name):
    if isinstance(x, (list, tuple)):
        return list(x)
    raise TypeError(
        f"{name} must be a list of arrays or a list of dicts of arrays; got {type(x).__name__}"
    )


def _merge_arrays(ps, fs, w, floor, key):
    label = "" if key is None else f"[{key!r}]"
    arrs = [as_float_array(p, f"params[{i}]{label}") for i, p in enumerate(ps)]
    fis = [as_float_array(f, f"fishers[{i}]{label}") for i, f in enumerate(fs)]
    shape = arrs[0].shape
    for i, (a, f) in enumerate(zip(arrs, fis)):
        if a.shape != shape:
            raise ValueError(
                f"params[{i}]{label} has shape {a.shape}; params[0]{label} has {shape}"
            )
        if f.shape != shape:
            raise ValueError(
                f"fishers[{i}]{label} has shape {f.shape}; expected {shape} like its parameter"
            )
        if f.size and f.min() < 0:
            raise ValueError(f"fishers[{i}]{label} has negative entries; a diagonal Fisher is >= 0")
    dtype = np.float32 if all(a.dtype == np.float32 for a in arrs) else np.float64
    # Parameters in units of a power of two c (exact), so that differences of parameters
    # near ±1e308 do not overflow; the weights are divided elementwise by their largest
    # value, so neither huge nor subnormal Fishers overflow or underflow the sums.
    c = _pow2_scale(*arrs)
    base = arrs[0].astype(np.float64) / c
    gmax = np.zeros(shape)
    for f, wi in zip(fis, w):
        np.maximum(gmax, wi * np.maximum(f.astype(np.float64), floor), out=gmax)
    # Where every weight is zero (floor = 0 and all Fishers 0), use the plain λ-average.
    plain = gmax == 0
    gmax[plain] = 1.0
    num = np.zeros(shape)
    den = np.zeros(shape)
    for a, f, wi in zip(arrs, fis, w):
        g = np.where(plain, wi, wi * np.maximum(f.astype(np.float64), floor) / gmax)
        # Differences from the first model: identical parameters give exactly themselves.
        num += g * (a.astype(np.float64) / c - base)
        den += g
    return ((base + num / den) * c).astype(dtype, copy=False)


def _check_floor(floor, upper):
    if isinstance(floor, (bool, np.bool_)) or not isinstance(
        floor, (numbers.Real, np.floating, np.integer)
    ):
        raise TypeError(f"floor must be a non-negative number; got {type(floor).__name__}")
    fl = float(floor)
    ok = math.isfinite(fl) and fl >= 0 and (upper is None or fl <= upper)
    if not ok:
        rng = "a finite number >= 0" if upper is None else f"a number in [0, {upper}]"
        raise ValueError(f"floor must be {rng}; got {floor!r}")
    return fl


def fisher_merge(params, fishers, weights=None, floor=1e-6):
    """Fisher-weighted averaging of models (Matena and Raffel, 2022).

    θ = Σ_i λ_i F_i θ_i / Σ_i λ_i F_i, elementwise, with F_i each model's diagonal Fisher
    replaced by max(F_i, ``floor``) (so parameters no model is sensitive to fall back to
    the λ-weighted plain average) and λ the model ``weights`` (default: all equal; any
    non-negative numbers with a positive sum). Equal Fishers give the λ-weighted plain
    average; identical parameters return themselves exactly (the average is formed as
    θ_0 + Σ λ_i F_i (θ_i − θ_0) / Σ λ_i F_i). Only ratios of the λ_i F_i matter: they are
    divided by their elementwise maximum, and the parameters by a power of two, so weights
    or Fishers near 1e308 or subnormal give the right average. Where every λ_i F_i is 0
    (``floor=0`` and zero Fishers) the plain λ-weighted average is used. ``floor`` must be a
    finite number >= 0; ``weights`` non-negative, not all zero.

    Parameters
    ----------
    params : list of arrays, or list of dicts of arrays
        One entry per model; dicts must share their keys and shapes.
    fishers : same structure as ``params``
        Diagonal Fisher information (e.g. mean squared gradients), non-negative.

    Returns
    -------
    ndarray or dict of ndarrays, in the structure of one entry of ``params`` (float32 when
    all models are float32). Memory: about six float64 arrays of one model's size at a
    time (per dict key). NumPy only.
    """
    ps = _as_list(params, "params")
    fs = _as_list(fishers, "fishers")
    if not ps:
        raise ValueError("params is empty; pass at least one model")
    if len(fs) != len(ps):
        raise ValueError(
            f"fishers has {len(fs)} entries but params has {len(ps)}; pass one per model"
        )
    fl = _check_floor(floor, upper=None)
    if weights is None:
        w = np.ones(len(ps))
    else:
        w = as_float_array(weights, "weights").astype(np.float64).ravel()
        if w.shape != (len(ps),):
            raise ValueError(
                f"weights must have one entry per model ({len(ps)}); got shape {w.shape}"
            )
        if (w < 0).any() or not w.max() > 0:
            raise ValueError("weights must be non-negative with a positive sum")
        # Only ratios matter: divided by the largest, weights near 1e308 (whose sum
        # overflows) or all subnormal (whose products underflow) give the right average.
        w = w / w.max()
    if isinstance(ps[0], dict):
        keys = list(ps[0].keys())
        for i, (p, f) in enumerate(zip(ps, fs)):
            if not isinstance(p, dict) or set(p) != set(keys):
                raise ValueError(f"params[{i}] must be a dict with the keys of params[0]")
            if not isinstance(f, dict) or set(f) != set(keys):
                raise ValueError(f"fishers[{i}] must be a dict with the keys of params[0]")
        return {
            key: _merge_arrays([p[key] for p in ps], [f[key] for f in fs], w, fl, key)
            for key in keys
        }
    return _merge_arrays(ps, fs, w, fl, None)


def fisher_weighted_svd(W, fisher, rank, axis=0, floor=1e-8):
    """Fisher-weighted low-rank factorisation W ≈ A @ B (FWSVD; Hsu et al., 2022).

    The importance weights run along ``axis``: with ``axis=0`` (default) there is one
    weight per *row* of W, d_i = sqrt(Σ_j F_ij) (the Fisher summed over the row); with
    ``axis=1``, one per column, d_j = sqrt(Σ_i F_ij). ``fisher`` is either W's diagonal
    Fisher (same shape as W) or the already summed 1-D vector Σ F along the other axis.
    Weights below ``floor`` × max(d) are raised to it (so a zero-Fisher row stays defined);
    ``floor`` must lie in [0, 1]. Only the ratios d_i / max(d) matter (a common factor
    cancels), so they are used directly: Fishers near 1e308 or subnormal give the same
    factors as moderate ones.

    The factors minimise ‖D (W − A B)‖_F (axis=0, D = diag(d)) over rank-``rank`` products:
    the SVD D W = U S Vᵀ gives A = D⁻¹ U_r S_r (m × r) and B = V_rᵀ (r × n); for axis=1,
    W D = U S Vᵀ gives A = U_r S_r and B = V_rᵀ D⁻¹. With uniform importance this is the
    truncated SVD; at full rank A @ B reconstructs W (to rounding).

    Returns
    -------
    (A, B) : ndarrays of shapes (m, rank) and (rank, n), float32 for float32 W.
    Memory: float64 copies of W and fisher, the weighted W, and one SVD of an m × n
    matrix (NumPy/LAPACK).
    """
    w = as_float_array(W, "W")
    if w.ndim != 2:
        raise ValueError(f"W must be a 2-D matrix; got shape {w.shape}")
    if axis not in (0, 1, -1, -2):
        raise ValueError(
            f"axis must be 0 (weights per row) or 1 (weights per column); got {axis!r}"
        )
    ax = axis % 2
    f = as_float_array(fisher, "fisher").astype(np.float64)
    fmax = float(f.max()) if f.size else 0.0
    if fmax > 0:
        f = f / fmax  # only ratios matter; a row sum of entries near 1e308 cannot overflow
    if f.shape == w.shape:
        s = f.sum(axis=1 - ax)
    elif f.shape == (w.shape[ax],):
        s = f
    else:
        raise ValueError(
            f"fisher must have W's shape {w.shape} or shape ({w.shape[ax]},) "
            f"(summed along the other axis); got {f.shape}"
        )
    if s.size and s.min() < 0:
        raise ValueError("fisher must be non-negative")
    r = check_int(rank, "rank", minimum=1)
    if r > min(w.shape):
        raise ValueError(f"rank must be at most min(W.shape) = {min(w.shape)}; got {r}")
    fl = _check_floor(floor, upper=1)
    # sqrt(s_i / max s) · sqrt(max s): the square root of the ratio never overflows or
    # underflows, and the common factor cancels from the factorisation (A B = W D⁻¹ D).
    top = s.max() if s.size else 0.0
    if not top > 0:
        d = np.ones_like(s)
    else:
        d = np.maximum(np.sqrt(s / top), fl)
    w64 = w.astype(np.float64)
    scaled = d[:, None] * w64 if ax == 0 else w64 * d[None, :]
    u, sv, vt = np.linalg.svd(scaled, full_matrices=False)
    a = u[:, :r] * sv[:r]
    b = vt[:r]
    if ax == 0:
        a = a / d[:, None]
    else:
        b = b / d[None, :]
    dtype = np.float32 if w.dtype == np.float32 else np.float64
    return a.astype(dtype, copy=False), b.astype(dtype, copy=False)
