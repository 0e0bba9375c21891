"""Distance covariance, distance correlation and energy statistics.

Every statistic is computed by the Rust core without forming an n×n matrix:

* multivariate samples, or exponents α ≠ 1, take two passes of the pairwise engine
  (row sums of |x_i − x_j|^α, then the sum of products of centred distances, centred per
  pair so nothing large cancels), in O(n) memory;
* 1-D samples with α = 1 take an exact O(n log n) sorting path that stays precise on
  shifted and scaled data (median shift, compensated sums, double-double combinations);
  integer-valued data give the exact statistic rounded once.

Conventions follow Székely, Rizzo & Bakirov (2007) and Székely & Rizzo (2014), and the
``dcor`` package: the V statistic double-centres with row means; the U statistic
(``unbiased=True``) U-centres and divides by n(n − 3), needs n ≥ 4 and may be negative.
When a sample is constant its distance variance is 0 and every distance correlation with
it is defined as 0 (as in ``dcor``), never NaN.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import _core
from ._results import TestResult
from ._rng import as_generator
from ._validate import as_points, check_int

__all__ = [
    "dcov_sqr",
    "dcov",
    "dcor_sqr",
    "dcor",
    "partial_dcor",
    "energy_distance",
    "dcov_test",
    "energy_test",
    "jdcov",
    "ccdcov",
    "jdcov_test",
    "ccdcov_test",
]


def _check_exponent(exponent) -> float:
    if isinstance(exponent, (bool, np.bool_)) or not isinstance(
        exponent, (numbers.Real, np.floating, np.integer)
    ):
        raise TypeError(f"exponent must be a number in (0, 2); got {type(exponent).__name__}")
    a = float(exponent)
    if not (0.0 < a < 2.0):
        raise ValueError(f"exponent must be in the open interval (0, 2); got {exponent!r}")
    return a


def _check_bool(v, name: str) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {type(v).__name__}")
    return bool(v)


def _samples(named, *, same_n: bool = True, same_d: bool = False, min_n: int = 1):
    """Validated (n, d) arrays of one dtype (float32 only if all are float32), C-contiguous."""
    arrs = [as_points(a, name) for name, a in named]
    if same_n:
        n0 = arrs[0].shape[0]
        for (name, _), a in zip(named, arrs):
            if a.shape[0] != n0:
                raise ValueError(
                    f"{named[0][0]} and {name} must have the same number of observations "
                    f"(rows); got {n0} and {a.shape[0]}"
                )
    if same_d:
        d0 = arrs[0].shape[1]
        for (name, _), a in zip(named, arrs):
            if a.shape[1] != d0:
                raise ValueError(
                    f"{named[0][0]} and {name} must have the same dimension; "
                    f"got {d0} and {a.shape[1]}"
                )
    for (name, _), a in zip(named, arrs):
        if a.shape[0] < min_n:
            raise ValueError(
                f"{name} has {a.shape[0]} observation(s); this statistic needs at least {min_n}"
            )
    dtype = np.float32 if all(a.dtype == np.float32 for a in arrs) else np.float64
    return [np.ascontiguousarray(a, dtype=dtype) for a in arrs]


def _stats(x, y, exponent, unbiased, method="auto"):
    exponent = _check_exponent(exponent)
    unbiased = _check_bool(unbiased, "unbiased")
    xa, ya = _samples([("x", x), ("y", y)], min_n=4 if unbiased else 1)
    return _core.dcov_stats(xa, ya, exponent, unbiased, method)


def dcov_sqr(x, y, exponent=1.0, unbiased=False, *, return_grad=False):
    """Squared distance covariance of two samples of the same n observations.

    Parameters
    ----------
    x, y : array_like, shape (n,) or (n, p) and (n,) or (n, q)
        Rows are observations. Integers and bools are converted to float64; float32 is
        kept (computed in float64 internally).
    exponent : float in (0, 2)
        Distances are raised to this power (α). Default 1.
    unbiased : bool
        False: the V statistic (1/n²) Σ A_ij B_ij with double-centred distances; equals
        ``dcor.distance_covariance_sqr``. True: the U statistic of Székely & Rizzo
        (2014), unbiased and possibly negative, n ≥ 4; equals
        ``dcor.u_distance_covariance_sqr``.
    return_grad : bool
        Also return ∂ dcov_sqr / ∂x, for training penalties: an array of x's shape and
        dtype, (2/N) Σ_{j≠k} B_kj α |x_k − x_j|^(α−2) (x_k − x_j) with N = n² or n(n − 3);
        pairs of coincident points contribute 0 (symmetric subgradient). One extra pass of
        the pairwise engine (O(n²) time even in 1-D), O(n (p + q)) memory.

    Returns
    -------
    float, or (float, ndarray) with ``return_grad=True``

    Memory: O(n (p + q)) (float64 copies of the samples); no n×n matrix. 1-D samples with
    exponent 1 take an exact O(n log n) path.
    """
    if not return_grad:
        return float(_stats(x, y, exponent, unbiased)[0])
    exponent = _check_exponent(exponent)
    unbiased = _check_bool(unbiased, "unbiased")
    xa, ya = _samples([("x", x), ("y", y)], min_n=4 if unbiased else 1)
    value = float(_core.dcov_stats(xa, ya, exponent, unbiased, "auto")[0])
    g = _core.dcov_sqr_grad(xa, ya, exponent, unbiased).astype(xa.dtype, copy=False)
    return value, g.reshape(np.shape(x)) if np.ndim(x) == 1 else g


def dcov(x, y, exponent=1.0):
    """Distance covariance: the square root of the V statistic :func:`dcov_sqr`
    (clamped at 0 against rounding). Equals ``dcor.distance_covariance``.

    Memory: O(n (p + q)); no n×n matrix.
    """
    return math.sqrt(max(float(_stats(x, y, exponent, False)[0]), 0.0))


def _cor_sqr(s) -> float:
    cov, vx, vy = s
    den = math.sqrt(abs(vx * vy))
    return float(cov / den) if den > 0 else 0.0


def dcor_sqr(x, y, exponent=1.0, unbiased=False):
    """Squared distance correlation dCov²(x, y) / sqrt(dCov²(x, x) dCov²(y, y)).

    ``unbiased=False`` uses V statistics and equals ``dcor.distance_correlation_sqr``;
    ``unbiased=True`` is the bias-corrected distance correlation of Székely & Rizzo
    (2013), which may be negative, and equals ``dcor.u_distance_correlation_sqr``.
    If either sample is constant (zero distance variance) the result is 0 by convention.

    Memory: O(n (p + q)); no n×n matrix.
    """
    return _cor_sqr(_stats(x, y, exponent, unbiased))


def dcor(x, y, exponent=1.0):
    """Distance correlation: the square root of the V version of :func:`dcor_sqr`, in
    [0, 1]; 0 when either sample is constant. Equals ``dcor.distance_correlation``.

    Memory: O(n (p + q)); no n×n matrix.
    """
    return math.sqrt(min(max(_cor_sqr(_stats(x, y, exponent, False)), 0.0), 1.0))


def partial_dcor(x, y, z, exponent=1.0):
    """Partial distance correlation of x and y given z (Székely & Rizzo 2014), from the
    bias-corrected (U-centred) inner products; in [-1, 1].

    Equals ``dcor.partial_distance_correlation``: each pairwise bias-corrected
    correlation is 0 when its denominator is 0 and is clipped to [-1, 1]; the result is
    0 when x or y is fully explained by z (zero denominator). Needs n ≥ 4.

    Memory: O(n (p + q + r)); no n×n matrix.
    """
    exponent = _check_exponent(exponent)
    xa, ya, za = _samples([("x", x), ("y", y), ("z", z)], min_n=4)
    aa, bb, cc, ab, ac, bc = _core.dcov_u_products3(xa, ya, za, exponent)

    def r(u, v, w):
        d2 = v * w
        return min(max(u / math.sqrt(d2), -1.0), 1.0) if d2 > 0 else 0.0

    r_xy, r_xz, r_yz = r(ab, aa, bb), r(ac, aa, cc), r(bc, bb, cc)
    den = math.sqrt(1.0 - r_xz**2) * math.sqrt(1.0 - r_yz**2)
    return float((r_xy - r_xz * r_yz) / den) if den > 0 else 0.0


def energy_distance(x, y, exponent=1.0, unbiased=False):
    """Energy distance 2 E|X − Y|^α − E|X − X'|^α − E|Y − Y'|^α between two samples
    (sizes may differ; dimensions must match).

    ``unbiased=False`` averages within-sample distances over all n² pairs (zero diagonal
    included) and equals ``dcor.energy_distance``; ``unbiased=True`` averages them over
    the n(n − 1) pairs i ≠ j and equals
    ``dcor.energy_distance(..., estimation_stat="u_statistic")``.

    Memory: O((n + m) d); no n×m matrix.
    """
    exponent = _check_exponent(exponent)
    unbiased = _check_bool(unbiased, "unbiased")
    xa, ya = _samples([("x", x), ("y", y)], same_n=False, same_d=True,
                      min_n=2 if unbiased else 1)
    return float(_core.energy_distance(xa, ya, exponent, unbiased))


def _seed(rng) -> int:
    return int(as_generator(rng).integers(0, 2**63, dtype=np.int64))


def _perm_pvalue(stat, null) -> float:
    return float((1 + np.count_nonzero(null >= stat)) / (1 + null.size))


def dcov_test(x, y, method="permutation", n_resamples=999, rng=None, exponent=1.0):
    """Test of independence based on distance covariance.

    ``method="permutation"``: the statistic is n·dCov²_V(x, y) (as in
    ``dcor.independence.distance_covariance_test``); ``n_resamples`` permutations of y
    run in parallel, each from its own random stream derived from ``rng``, so the result
    is reproducible whatever the thread count. p = (1 + #{T* ≥ T}) / (1 + R).

    ``method="t"``: the distance correlation t-test of Székely & Rizzo (2013): with
    R* the bias-corrected dcor² (:func:`dcor_sqr` with ``unbiased=True``) and
    v = n(n − 3)/2, T = sqrt(v − 1) R* / sqrt(1 − R*²) has a Student t distribution
    with v − 1 degrees of freedom under independence; p = P(t ≥ T). Equals
    ``dcor.independence.distance_correlation_t_test``. Needs n ≥ 4 and SciPy.

    Returns :class:`divest.TestResult` (``null_distribution`` is None for the t-test).

    Memory: permutation test with n ≤ 2048: two n×n float64 matrices (64 MiB at
    n = 2048); larger n: O(n (p + q)), recomputing distances per permutation.
    """
    if method not in ("permutation", "t"):
        raise ValueError(f"method must be 'permutation' or 't'; got {method!r}")
    exponent = _check_exponent(exponent)
    if method == "t":
        try:
            from scipy.stats import t as student_t
        except ImportError:  # pragma: no cover
            raise ImportError("dcov_test(method='t') needs SciPy: pip install scipy") from None
        xa, ya = _samples([("x", x), ("y", y)], min_n=4)
        n = xa.shape[0]
        r = _cor_sqr(_core.dcov_stats(xa, ya, exponent, True, "auto"))
        v = n * (n - 3) / 2.0
        if r * r >= 1.0:
            tstat = math.copysign(math.inf, r)
        else:
            tstat = math.sqrt(v - 1) * r / math.sqrt(1.0 - r * r)
        return TestResult(float(tstat), float(student_t.sf(tstat, v - 1)), None)
    n_resamples = check_int(n_resamples, "n_resamples", 1)
    xa, ya = _samples([("x", x), ("y", y)], min_n=2)
    stat, null = _core.dcov_perm_test(xa, ya, exponent, n_resamples, _seed(rng))
    return TestResult(float(stat), _perm_pvalue(stat, null), null)


def energy_test(*samples, n_resamples=999, rng=None, exponent=1.0):
    """k-sample permutation test of equal distributions (Székely & Rizzo 2004).

    The statistic is Σ_{g<h} n_g n_h / (n_g + n_h) · E(X_g, X_h) with E the V-statistic
    energy distance (as in ``dcor.homogeneity.energy_test``). Permutations of the pooled
    sample run in parallel, reproducible from ``rng`` whatever the thread count;
    p = (1 + #{T* ≥ T}) / (1 + R). Returns :class:`divest.TestResult`.

    Memory: with N ≤ 2048 pooled points one N×N float64 matrix; beyond that O(N d),
    recomputing distances per permutation.
    """
    if len(samples) < 2:
        raise ValueError(f"energy_test needs at least two samples; got {len(samples)}")
    exponent = _check_exponent(exponent)
    n_resamples = check_int(n_resamples, "n_resamples", 1)
    arrs = _samples([(f"samples[{i}]", s) for i, s in enumerate(samples)], same_n=False,
                    same_d=True)
    pooled = np.ascontiguousarray(np.concatenate(arrs, axis=0))
    sizes = [a.shape[0] for a in arrs]
    stat, null = _core.energy_perm_test(pooled, sizes, exponent, n_resamples, _seed(rng))
    return TestResult(float(stat), _perm_pvalue(stat, null), null)


def jdcov(*xs, c=1.0, unbiased=True, scale=False, exponent=1.0, return_grad=False):
    """Joint distance covariance JdCov²(X_1, …, X_d; c) of Chakraborty & Zhang (2019):
    zero in population if and only if the d ≥ 2 random vectors are mutually independent.

    With Û_k(i, j) = −(double-centred |x_ki − x_kj|^α) the V statistic is
    (1/n²) Σ_ij Π_k (Û_k(i, j) + c) − c^d; ``unbiased=True`` (default) uses U-centred
    Ũ_k (zero diagonal) and (1/(n(n−3))) Σ_ij Π_k (Ũ_k + c) − c^d n/(n − 3), the
    estimators of the authors' R package ``jdcov`` (``Jdcov.sq.V`` / ``Jdcov.sq.U``).
    ``scale=True`` divides each Û_k by dCov(X_k, X_k) (same V or U version; the
    ``Jdcov.sq.US`` estimator), which makes the statistic invariant to scaling each
    variable. For two variables it equals :func:`dcov_sqr` (V or U) whatever c is.
    A constant variable gets factor 0 under ``scale=True``.

    Parameters
    ----------
    *xs : array_like, each (n,) or (n, p_k), the same n
    c : float >= 0
    unbiased, scale : bool
    exponent : float in (0, 2)
    return_grad : bool
        Also return ∂ jdcov / ∂xs[0] (for training penalties), an array of xs[0]'s shape
        and dtype: (2/N) Σ_{j≠k} M_kj α |x_k − x_j|^(α−2) (x_k − x_j) with N = n² or
        n(n − 3) and M = −C(P), the centred (V or U, as the statistic) matrix of
        P_ij = Π_{k≥2} (Û_k(i, j) + c); with ``scale=True`` also the derivative of the
        factor 1/dCov(X_1, X_1) (zero gradient where that variance is ≤ 0). Pairs of
        coincident points contribute 0. Two more full passes of the pairwise engine
        (O(n²) time even in 1-D), still O(n Σ p_k) memory. The value returned is the same
        float as without ``return_grad``. No peer offers this gradient.

    Returns
    -------
    float, or (float, ndarray) with ``return_grad=True``

    Memory: O(n Σ p_k) (float64 copies); no n×n matrix. Two passes of the pairwise
    engine (three with ``scale=True``).
    """
    if len(xs) < 2:
        raise ValueError(f"jdcov needs at least two samples; got {len(xs)}")
    exponent = _check_exponent(exponent)
    unbiased = _check_bool(unbiased, "unbiased")
    scale = _check_bool(scale, "scale")
    if isinstance(c, (bool, np.bool_)) or not isinstance(c, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"c must be a non-negative number; got {type(c).__name__}")
    if not (math.isfinite(float(c)) and float(c) >= 0):
        raise ValueError(f"c must be a non-negative finite number; got {c!r}")
    return_grad = _check_bool(return_grad, "return_grad")
    arrs = _samples([(f"xs[{i}]", a) for i, a in enumerate(xs)], min_n=4 if unbiased else 1)
    if not return_grad:
        return float(_core.jdcov(arrs, float(c), exponent, unbiased, scale))
    value, g = _core.jdcov_grad(arrs, float(c), exponent, unbiased, scale)
    g = g.astype(arrs[0].dtype, copy=False)
    return float(value), g.reshape(np.shape(xs[0])) if np.ndim(xs[0]) == 1 else g


def ccdcov(y, *attrs, unbiased=True, exponent=1.0, return_grad=False):
    """Concatenated distance covariance: dCov²(y, [a_1, …, a_m]), the distance covariance
    between ``y`` and the column-wise concatenation of the attributes (for fairness with
    several protected attributes). U statistic by default (``unbiased=True``, n ≥ 4),
    else V; with one attribute it equals :func:`dcov_sqr`. ``return_grad=True`` also
    returns the gradient with respect to ``y``, an array of y's shape and dtype: the
    :func:`dcov_sqr` gradient of (y, concatenation), one extra full engine pass in
    O(n (q + Σ p_k)) memory. No peer offers CCdCov; its value equals
    ``dcor.u_distance_covariance_sqr(y, np.column_stack(attrs))``.

    Memory: O(n (q + Σ p_k)) for the concatenation; no n×n matrix.
    """
    if len(attrs) < 1:
        raise ValueError("ccdcov needs y and at least one attribute")
    unbiased = _check_bool(unbiased, "unbiased")
    arrs = _samples([("y", y)] + [(f"attrs[{i}]", a) for i, a in enumerate(attrs)],
                    min_n=4 if unbiased else 1)
    z = np.ascontiguousarray(np.concatenate(arrs[1:], axis=1))
    if not return_grad:
        return dcov_sqr(arrs[0], z, exponent=exponent, unbiased=unbiased)
    value, g = dcov_sqr(arrs[0], z, exponent=exponent, unbiased=unbiased, return_grad=True)
    return value, g.reshape(np.shape(y)) if np.ndim(y) == 1 else g


def jdcov_test(*xs, n_resamples=199, rng=None, c=1.0, unbiased=True, scale=False,
               exponent=1.0):
    """Permutation test of mutual independence of d ≥ 2 samples based on :func:`jdcov`.

    Each resample permutes the rows of every sample but the first independently (which
    realises the product of the marginals) and recomputes the statistic with the same
    arguments; p = (1 + #{T* ≥ T}) / (1 + R). The permutations are drawn from ``rng`` in
    order, so the result does not depend on the thread count. Returns
    :class:`divest.TestResult` with statistic ``jdcov(*xs, ...)``.

    Memory: O(n Σ p_k) per resample; no n×n matrix. Time: R + 1 evaluations of
    :func:`jdcov`.
    """
    if len(xs) < 2:
        raise ValueError(f"jdcov_test needs at least two samples; got {len(xs)}")
    n_resamples = check_int(n_resamples, "n_resamples", 1)
    arrs = _samples([(f"xs[{i}]", a) for i, a in enumerate(xs)], min_n=4 if unbiased else 1)
    kw = dict(c=c, unbiased=unbiased, scale=scale, exponent=exponent)
    stat = jdcov(*arrs, **kw)
    gen = as_generator(rng)
    n = arrs[0].shape[0]
    null = np.empty(n_resamples)
    for r in range(n_resamples):
        perm = [arrs[0]] + [np.ascontiguousarray(a[gen.permutation(n)]) for a in arrs[1:]]
        null[r] = jdcov(*perm, **kw)
    return TestResult(stat, _perm_pvalue(stat, null), null)


def ccdcov_test(y, *attrs, n_resamples=999, rng=None, exponent=1.0):
    """Permutation test of independence between ``y`` and the attributes jointly: the
    distance covariance permutation test (:func:`dcov_test`) of y against the
    column-wise concatenation of the attributes. Its statistic is n·dCov²_V; the
    permutations run in parallel and are reproducible from ``rng``.

    Memory: as :func:`dcov_test`.
    """
    if len(attrs) < 1:
        raise ValueError("ccdcov_test needs y and at least one attribute")
    arrs = _samples([("y", y)] + [(f"attrs[{i}]", a) for i, a in enumerate(attrs)])
    z = np.ascontiguousarray(np.concatenate(arrs[1:], axis=1))
    return dcov_test(arrs[0], z, n_resamples=n_resamples, rng=rng, exponent=exponent)
