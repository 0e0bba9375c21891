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

Magnitudes: a sample (one common factor per argument; per-column scaling is not a
symmetry) whose largest magnitude lies outside [2^-64, 2^64] is divided by a power of two
before the kernels run (an exact operation) and the known factor is restored: dCov² scales
by |s|^α per argument, the energy distance by |s|^α, and dcor, partial dcor and the test
p-values are invariant. So subnormal inputs and inputs up to 1e308 give the right value in
float32 and float64; a result whose true size exceeds the float64 range is ±inf. Inputs
inside the window are passed unchanged; a rescaled sample costs one extra copy of it.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import _backend, _core
from ._results import TestResult
from ._rng import as_generator, seed
from ._validate import as_points, check_bool, check_int, check_memory, check_nonnegative

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
    "dcor_matrix",
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


# Magnitude handling. Every statistic here is a homogeneous function of each argument:
# scaling a sample by s multiplies its distances by |s|, so dCov² scales by |s|^α per
# argument, the energy distance by |s|^α, and dcor, the test p-values and the t statistic
# do not change. A sample whose largest magnitude lies outside [2^-SAFE, 2^SAFE] is
# divided by a power of two near that magnitude (exact: only the exponent changes), the
# statistic is computed on order-one numbers, and the factor is put back at the end.
# Within the window the inputs are passed unchanged, so ordinary results are bitwise what
# they were.
_SAFE = 64


def _unit(a: np.ndarray) -> tuple[np.ndarray, int]:
    """(a / 2**k, k) with 2**(k-1) <= max|a| < 2**k when max|a| is outside the safe window;
    (a, 0) otherwise (also for an all-zero array)."""
    k = _exp2(a)
    if k == 0:
        return a, 0
    return _shift(a, k), k


def _exp2(*arrs) -> int:
    """The binary exponent of the largest magnitude over `arrs` when it lies outside the
    safe window, else 0."""
    m = max(float(np.max(np.abs(a))) for a in arrs)
    if m == 0.0:
        return 0
    k = math.frexp(m)[1]
    return k if abs(k) > _SAFE else 0


def _shift(a: np.ndarray, k: int) -> np.ndarray:
    """a / 2**k exactly (same dtype, C-contiguous, a new array)."""
    if k == 0:
        return a
    out = np.ldexp(a, np.int32(-k))
    return np.ascontiguousarray(out, dtype=a.dtype)


def _times_pow2(v, e: float):
    """v * 2**e for a float or an array, without intermediate overflow; a value whose
    true size exceeds the float64 range becomes ±inf, one below it 0."""
    if e == 0:
        return v
    i = math.floor(e)
    f = 2.0 ** (e - i)
    if isinstance(v, np.ndarray):
        with np.errstate(over="ignore", under="ignore"):
            return np.ldexp(v * f, np.int32(max(min(i, 1 << 20), -(1 << 20))))
    v = float(v)
    if v == 0.0 or not math.isfinite(v):
        return v
    m, ev = math.frexp(v * f)
    ev += i
    if ev > 1024:
        return math.copysign(math.inf, v)
    if ev < -1100:
        return math.copysign(0.0, v)
    return math.ldexp(m, ev)


def _stats(x, y, exponent, unbiased, method="auto"):
    """(dCov²(x, y), dCov²(x, x), dCov²(y, y)) at the caller's scale."""
    (cov, vx, vy), e = _scaled_stats(x, y, exponent, unbiased, method)
    a = _check_exponent(exponent)
    ex, ey = _exp2(_samples([("x", x)])[0]), _exp2(_samples([("y", y)])[0])
    return _times_pow2(cov, e), _times_pow2(vx, 2 * a * ex), _times_pow2(vy, 2 * a * ey)


def _scaled_stats(x, y, exponent, unbiased, method="auto"):
    """The statistics of x / 2**kx and y / 2**ky, and e = α (kx + ky): dCov²(x, y) is
    2**e times the first."""
    exponent = _check_exponent(exponent)
    unbiased = check_bool(unbiased, "unbiased")
    xa, ya = _samples([("x", x), ("y", y)], min_n=4 if unbiased else 1)
    (xa, kx), (ya, ky) = _unit(xa), _unit(ya)
    cov, vx, vy = _core.dcov_stats(xa, ya, exponent, unbiased, method)
    return (cov, vx, vy), exponent * (kx + ky)


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

    References
    ----------
    G. J. Székely, M. L. Rizzo and N. K. Bakirov, "Measuring and testing dependence by correlation of distances", Ann. Statist. 35(6), 2007.
    G. J. Székely and M. L. Rizzo, "Partial distance correlation with methods for dissimilarities", Ann. Statist. 42(6), 2014 (the U statistic).
    """
    if (g := _backend.route(x, y)) is not None:
        return g.dcov_sqr(x, y, exponent, unbiased, return_grad)
    if not return_grad:
        s, e = _scaled_stats(x, y, exponent, unbiased)
        return float(_times_pow2(s[0], e))
    exponent = _check_exponent(exponent)
    unbiased = check_bool(unbiased, "unbiased")
    xa, ya = _samples([("x", x), ("y", y)], min_n=4 if unbiased else 1)
    dtype = xa.dtype
    (xa, kx), (ya, ky) = _unit(xa), _unit(ya)
    e = exponent * (kx + ky)
    value = float(_times_pow2(_core.dcov_stats(xa, ya, exponent, unbiased, "auto")[0], e))
    g = _times_pow2(_core.dcov_sqr_grad(xa, ya, exponent, unbiased), e - kx)
    with np.errstate(over="ignore"):  # beyond float32's range the gradient is ±inf
        g = g.astype(dtype, copy=False)
    return value, g.reshape(np.shape(x)) if np.ndim(x) == 1 else g


def dcov(x, y, exponent=1.0):
    """Distance covariance: the square root of the V statistic :func:`dcov_sqr`
    (clamped at 0 against rounding). Equals ``dcor.distance_covariance``.

    Memory: O(n (p + q)); no n×n matrix.
    """
    s, e = _scaled_stats(x, y, exponent, False)
    return float(_times_pow2(math.sqrt(max(float(s[0]), 0.0)), e / 2))


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
    if (g := _backend.route(x, y)) is not None:
        return g.dcor_sqr(x, y, exponent, unbiased)
    return _cor_sqr(_scaled_stats(x, y, exponent, unbiased)[0])


def dcor(x, y, exponent=1.0):
    """Distance correlation: the square root of the V version of :func:`dcor_sqr`, in
    [0, 1]; 0 when either sample is constant. Equals ``dcor.distance_correlation``.

    Memory: O(n (p + q)); no n×n matrix.

    References
    ----------
    G. J. Székely, M. L. Rizzo and N. K. Bakirov, Ann. Statist. 35(6), 2007.
    """
    if (g := _backend.route(x, y)) is not None:
        return g.dcor(x, y, exponent)
    return math.sqrt(min(max(_cor_sqr(_scaled_stats(x, y, exponent, False)[0]), 0.0), 1.0))


def partial_dcor(x, y, z, exponent=1.0):
    """Partial distance correlation of x and y given z (Székely & Rizzo 2014), from the
    bias-corrected (U-centred) inner products; in [-1, 1].

    Equals ``dcor.partial_distance_correlation``: each pairwise bias-corrected
    correlation is 0 when its denominator is 0 and is clipped to [-1, 1]; the result is
    0 when x or y is fully explained by z (zero denominator). Needs n ≥ 4.

    Memory: O(n (p + q + r)); no n×n matrix.

    References
    ----------
    G. J. Székely and M. L. Rizzo, Ann. Statist. 42(6), 2014.
    """
    exponent = _check_exponent(exponent)
    xa, ya, za = _samples([("x", x), ("y", y), ("z", z)], min_n=4)
    xa, ya, za = (_unit(a)[0] for a in (xa, ya, za))
    aa, bb, cc, ab, ac, bc = _core.dcov_u_products3(xa, ya, za, exponent)

    def r(u, v, w):
        d2 = v * w
        return min(max(u / math.sqrt(d2), -1.0), 1.0) if d2 > 0 else 0.0

    r_xy, r_xz, r_yz = r(ab, aa, bb), r(ac, aa, cc), r(bc, bb, cc)
    den = math.sqrt(1.0 - r_xz**2) * math.sqrt(1.0 - r_yz**2)
    if not den > 0:
        return 0.0
    # Rounding in the three correlations can push the quotient just past ±1 when x and y
    # are nearly collinear given z; the population value cannot leave [-1, 1].
    return float(min(max((r_xy - r_xz * r_yz) / den, -1.0), 1.0))


def energy_distance(x, y, exponent=1.0, unbiased=False):
    """Energy distance 2 E|X − Y|^α − E|X − X'|^α − E|Y − Y'|^α between two samples
    (sizes may differ; dimensions must match).

    ``unbiased=False`` averages within-sample distances over all n² pairs (zero diagonal
    included) and equals ``dcor.energy_distance``; ``unbiased=True`` averages them over
    the n(n − 1) pairs i ≠ j and equals
    ``dcor.energy_distance(..., estimation_stat="u_statistic")``.

    Memory: O((n + m) d); no n×m matrix.

    References
    ----------
    G. J. Székely and M. L. Rizzo, "Energy statistics: a class of statistics based on distances", J. Stat. Plann. Inference 143(8), 2013.
    """
    if (g := _backend.route(x, y)) is not None:
        return g.energy_distance(x, y, exponent, unbiased)
    exponent = _check_exponent(exponent)
    unbiased = check_bool(unbiased, "unbiased")
    xa, ya = _samples([("x", x), ("y", y)], same_n=False, same_d=True, min_n=2 if unbiased else 1)
    k = _exp2(xa, ya)  # one common factor: the statistic mixes x-y distances
    value = _core.energy_distance(_shift(xa, k), _shift(ya, k), exponent, unbiased)
    return float(_times_pow2(value, exponent * k))


def _perm_pvalue(stat, null) -> float:
    # A NaN statistic compares false with everything and would get the smallest p-value.
    if not (math.isfinite(stat) and np.isfinite(null).all()):
        raise ValueError(
            "the test statistic is not finite for these samples (the inputs may exceed the "
            "float64 range); no p-value is reported. Rescale the samples."
        )
    return float((1 + np.count_nonzero(null >= stat)) / (1 + null.size))


# Ceilings for resampling counts. n_resamples is at most 10**8: the null distribution alone
# is then 800 MB of float64, and even at n = 2 that many resamples take minutes. Each
# resample of an n-observation test evaluates about n² pairwise distances; a call whose
# total n² (n_resamples + 1) exceeds 10**15 would run for days even on many cores (about
# 10**9 to 10**10 distances per second), so it is rejected up front instead of hanging.
MAX_RESAMPLES = 10**8
MAX_RESAMPLE_WORK = 10**15


def _check_resamples(n_resamples, n: int, per_pair: int = 1) -> int:
    r = check_int(n_resamples, "n_resamples", 1)
    if r > MAX_RESAMPLES:
        raise ValueError(
            f"n_resamples must be at most {MAX_RESAMPLES:.0e} (the null distribution alone "
            f"would need {8 * r / 2**30:.3g} GiB); got {r}. Use fewer resamples: 10**4 "
            "resamples resolve p-values to about 0.01 relative precision at p = 0.05."
        )
    work = n * n * (r + 1) * per_pair
    if work > MAX_RESAMPLE_WORK:
        most = max(MAX_RESAMPLE_WORK // (n * n * per_pair) - 1, 0)
        raise ValueError(
            f"n_resamples={r} with {n} observations needs about {work:.1e} distance "
            f"evaluations, beyond the {MAX_RESAMPLE_WORK:.0e} this call accepts (days of "
            f"computing); use at most {most} resamples, or subsample the data"
        )
    return r


def dcov_test(x, y, method="permutation", n_resamples=999, rng=None, exponent=1.0):
    """Test of independence based on distance covariance.

    ``method="permutation"``: the statistic is n·dCov²_V(x, y) (as in
    ``dcor.independence.distance_covariance_test``); ``n_resamples`` permutations of y
    run in parallel, each from its own random stream derived from ``rng``, so the result
    is reproducible whatever the thread count. p = (1 + #{T* ≥ T}) / (1 + R).

    ``method="t"``: the distance correlation t-test of Székely & Rizzo (2013): with
    R* the bias-corrected dcor² (:func:`dcor_sqr` with ``unbiased=True``) and
    v = n(n − 3)/2, T = sqrt(v − 1) R* / sqrt(1 − R*²) and p = P(t ≥ T) for a Student t
    variable with v − 1 degrees of freedom. Equals
    ``dcor.independence.distance_correlation_t_test``. Needs n ≥ 4 and SciPy.
    The t distribution is not exact: it is the limit under independence as the
    dimensions p and q grow (with n fixed, for exchangeable coordinates with finite
    moments; Székely & Rizzo 2013). It is accurate for high-dimensional x and y (tens of
    coordinates or more); for low-dimensional data the test is anti-conservative (with
    p = q = 1 its rejection rate at α = 0.05 under independence is about 0.07 for n from
    30 to 100; with p = q = 30 it is close to 0.05), so use the permutation test there. A constant sample (zero bias-corrected distance
    variance) raises ValueError: the statistic is undefined.

    Magnitudes: the samples are rescaled internally by powers of two, so the p-value is
    the same for x and s·x, and the statistic scales by |s|^α (permutation) or not at
    all (t), down to subnormal and up to 1e308 inputs. A constant sample gives the
    permutation statistic 0 and p = 1. A statistic that is not finite raises ValueError,
    never a p-value.

    ``n_resamples`` must be at most 10**8 (:data:`MAX_RESAMPLES`; the null distribution
    alone is then 800 MB) and n² (n_resamples + 1) at most 10**15
    (:data:`MAX_RESAMPLE_WORK`): each resample costs about n² distance evaluations, and
    beyond that budget a call runs for days; such counts raise ValueError naming
    ``n_resamples``. Ctrl-C stops a running test within a second (KeyboardInterrupt).

    Returns :class:`divest.TestResult` (``null_distribution`` is None for the t-test).

    Memory: permutation test with n ≤ 2048: two n×n float64 matrices (64 MiB at
    n = 2048); larger n: O(n (p + q)), recomputing distances per permutation.

    References
    ----------
    G. J. Székely and M. L. Rizzo, "The distance correlation t-test of independence in high dimension", J. Multivariate Anal. 117, 2013.
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
        (xa, _), (ya, _) = _unit(xa), _unit(ya)
        n = xa.shape[0]
        cov, vx, vy = _core.dcov_stats(xa, ya, exponent, True, "auto")
        for name, var in (("x", vx), ("y", vy)):
            if var == 0.0:
                raise ValueError(
                    f"{name} has zero bias-corrected distance variance (a constant sample); "
                    f"the t statistic is undefined there. Use method='permutation', which "
                    f"reports p = 1 for a constant sample."
                )
        r = _cor_sqr((cov, vx, vy))
        if not math.isfinite(r):
            raise ValueError(
                "the bias-corrected distance correlation is not finite for "
                "these samples; no p-value is reported"
            )
        v = n * (n - 3) / 2.0
        if r * r >= 1.0:
            tstat = math.copysign(math.inf, r)
        else:
            tstat = math.sqrt(v - 1) * r / math.sqrt(1.0 - r * r)
        return TestResult(float(tstat), float(student_t.sf(tstat, v - 1)), None)
    check_int(n_resamples, "n_resamples", 1)
    xa, ya = _samples([("x", x), ("y", y)], min_n=2)
    n_resamples = _check_resamples(n_resamples, xa.shape[0])
    (xa, kx), (ya, ky) = _unit(xa), _unit(ya)
    stat, null = _core.dcov_perm_test(xa, ya, exponent, n_resamples, seed(rng, bits=63))
    p = _perm_pvalue(stat, null)
    e = exponent * (kx + ky)
    return TestResult(float(_times_pow2(stat, e)), p, _times_pow2(null, e))


def energy_test(*samples, n_resamples=999, rng=None, exponent=1.0):
    """k-sample permutation test of equal distributions (Székely & Rizzo 2004).

    The statistic is Σ_{g<h} n_g n_h / (n_g + n_h) · E(X_g, X_h) with E the V-statistic
    energy distance (as in ``dcor.homogeneity.energy_test``). Permutations of the pooled
    sample run in parallel, reproducible from ``rng`` whatever the thread count;
    p = (1 + #{T* ≥ T}) / (1 + R). Returns :class:`divest.TestResult`.

    The pooled sample is rescaled by one power of two internally (the p-value does not
    depend on a common scale; the statistic scales by |s|^α). ``n_resamples`` has the
    ceilings of :func:`dcov_test`, counting k·N² distance evaluations per resample for k
    samples of N points in all; Ctrl-C stops the test within a second.

    Memory: with N ≤ 2048 pooled points one N×N float64 matrix; beyond that O(N d),
    recomputing distances per permutation.
    """
    if len(samples) < 2:
        raise ValueError(f"energy_test needs at least two samples; got {len(samples)}")
    exponent = _check_exponent(exponent)
    check_int(n_resamples, "n_resamples", 1)
    arrs = _samples(
        [(f"samples[{i}]", s) for i, s in enumerate(samples)], same_n=False, same_d=True
    )
    pooled = np.ascontiguousarray(np.concatenate(arrs, axis=0))
    n_resamples = _check_resamples(n_resamples, pooled.shape[0], per_pair=len(arrs))
    k = _exp2(pooled)
    pooled = _shift(pooled, k)
    sizes = [a.shape[0] for a in arrs]
    stat, null = _core.energy_perm_test(pooled, sizes, exponent, n_resamples, seed(rng, bits=63))
    p = _perm_pvalue(stat, null)
    return TestResult(float(_times_pow2(stat, exponent * k)), p, _times_pow2(null, exponent * k))


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

    Magnitudes: samples outside about [2^-64, 2^64] are rescaled by powers of two. The
    statistic is homogeneous of degree α in each sample when c = 0 or d = 2, and
    invariant with ``scale=True``; then each sample is rescaled on its own and the factor
    restored exactly. With c > 0 and d ≥ 3 it is not homogeneous per sample: all samples
    share one factor 2^K and c becomes c·2^(−αK) (exact), which works when the samples'
    magnitudes are within a factor 2^128 of each other; beyond that ValueError. A value
    whose true size exceeds the float64 range is returned as inf. The kernel sums
    Σ_{m≥2} c^(d−m) e_m(Û_1, …, Û_d) per pair (e_m the elementary symmetric polynomials),
    the expansion of Π_k (Û_k + c) without its constant and linear terms, which sum to
    the subtracted c^d and to 0 exactly: a c large against the data (even 1e300) neither
    cancels nor overflows where the value does not.

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
    unbiased = check_bool(unbiased, "unbiased")
    scale = check_bool(scale, "scale")
    check_nonnegative(c, "c")
    return_grad = check_bool(return_grad, "return_grad")
    arrs = _samples([(f"xs[{i}]", a) for i, a in enumerate(xs)], min_n=4 if unbiased else 1)
    dtype = arrs[0].dtype
    arrs, c, e, e0 = _jdcov_units(arrs, float(c), exponent, scale)
    if not return_grad:
        return float(_times_pow2(_core.jdcov(arrs, c, exponent, unbiased, scale), e))
    value, g = _core.jdcov_grad(arrs, c, exponent, unbiased, scale)
    with np.errstate(over="ignore"):  # beyond float32's range the gradient is ±inf
        g = _times_pow2(g, e - e0).astype(dtype, copy=False)
    value = float(_times_pow2(value, e))
    return value, g.reshape(np.shape(xs[0])) if np.ndim(xs[0]) == 1 else g


def _jdcov_units(arrs, c: float, exponent: float, scale: bool):
    """Rescaled samples for :func:`jdcov`: (arrays, c', e, k0) with
    jdcov(arrs; c) = 2**e · jdcov(arrays; c') and xs[0] divided by 2**k0.

    JdCov² = Σ_{|S|≥2} c^(d−|S|) mean(Π_{k∈S} Û_k) (the terms with fewer than two factors
    cancel because centred matrices sum to zero; the kernel sums exactly these terms, so a
    large c loses nothing to cancellation), so it is homogeneous of degree α in each
    sample when c = 0, when d = 2 (any c), and it is invariant with ``scale=True``; with
    c > 0 and d ≥ 3 only a common factor 2^K for all samples with c' = c·2^(−αK) keeps it
    exact."""
    tops = [float(np.max(np.abs(a))) for a in arrs]
    ks, c2, e = _jdcov_exps(tops, c, exponent, scale)
    return [_shift(a, k) for a, k in zip(arrs, ks)], c2, e, ks[0]


def _jdcov_exps(tops, c: float, exponent: float, scale: bool):
    """:func:`_jdcov_units` from each sample's largest magnitude ``tops``: the binary
    exponents k (sample k is divided by 2**k), c' and e. Shared with
    :mod:`divest.distributed`, which gets ``tops`` block by block."""
    d = len(tops)
    ks = [_exp2(np.array([t])) for t in tops]
    if not any(ks):
        return [0] * d, c, 0.0
    if scale or c == 0.0 or d == 2:
        return ks, c, (0.0 if scale else exponent * sum(ks))
    # A common factor: every sample's exponent (0 inside the window) is taken as is.
    ks = [math.frexp(t)[1] if t != 0 else 0 for t in tops]
    if max(ks) - min(ks) > 2 * _SAFE:
        lo, hi = ks.index(min(ks)), ks.index(max(ks))
        raise ValueError(
            f"xs[{lo}] (largest magnitude about 2^{ks[lo]}) and xs[{hi}] (about 2^{ks[hi]}) "
            "differ too much in magnitude for jdcov with c > 0 and three or more samples, "
            "which is not scale-equivariant per sample; rescale the samples to comparable "
            "magnitudes, or use scale=True or c=0"
        )
    kc = (max(ks) + min(ks)) // 2
    c2 = _times_pow2(c, -exponent * kc)
    if not math.isfinite(c2):
        raise ValueError(
            f"c={c!r} is too large relative to the magnitude of the samples (about 2^{kc}) "
            "for a float64 evaluation of jdcov; rescale the samples or reduce c"
        )
    return [kc] * d, c2, exponent * kc * d


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
    unbiased = check_bool(unbiased, "unbiased")
    arrs = _samples(
        [("y", y)] + [(f"attrs[{i}]", a) for i, a in enumerate(attrs)], min_n=4 if unbiased else 1
    )
    z = np.ascontiguousarray(np.concatenate(arrs[1:], axis=1))
    if not return_grad:
        return dcov_sqr(arrs[0], z, exponent=exponent, unbiased=unbiased)
    value, g = dcov_sqr(arrs[0], z, exponent=exponent, unbiased=unbiased, return_grad=True)
    return value, g.reshape(np.shape(y)) if np.ndim(y) == 1 else g


def jdcov_test(*xs, n_resamples=199, rng=None, c=1.0, unbiased=True, scale=False, exponent=1.0):
    """Permutation test of mutual independence of d ≥ 2 samples based on :func:`jdcov`.

    Each resample permutes the rows of every sample but the first independently (which
    realises the product of the marginals) and recomputes the statistic with the same
    arguments; p = (1 + #{T* ≥ T}) / (1 + R). The permutations are drawn from ``rng`` in
    order, so the result does not depend on the thread count. Returns
    :class:`divest.TestResult` with statistic ``jdcov(*xs, ...)``.

    ``n_resamples`` has the ceilings of :func:`dcov_test`, counting d·n² distance
    evaluations per resample; Ctrl-C stops the test between (and within) resamples.

    Memory: O(n Σ p_k) per resample; no n×n matrix. Time: R + 1 evaluations of
    :func:`jdcov`.
    """
    if len(xs) < 2:
        raise ValueError(f"jdcov_test needs at least two samples; got {len(xs)}")
    check_int(n_resamples, "n_resamples", 1)
    arrs = _samples([(f"xs[{i}]", a) for i, a in enumerate(xs)], min_n=4 if unbiased else 1)
    n_resamples = _check_resamples(n_resamples, arrs[0].shape[0], per_pair=len(arrs))
    kw = dict(c=c, unbiased=unbiased, scale=scale, exponent=exponent)
    stat = jdcov(*arrs, **kw)
    gen = as_generator(rng)
    n = arrs[0].shape[0]
    null = np.empty(n_resamples)
    for r in range(n_resamples):
        perm = [arrs[0]] + [np.ascontiguousarray(a[gen.permutation(n)]) for a in arrs[1:]]
        null[r] = jdcov(*perm, **kw)
    return TestResult(stat, _jdcov_pvalue(stat, null), null)


def _jdcov_pvalue(stat, null) -> float:
    # jdcov scales every value by the same positive factor, which may overflow; the
    # ordering of finite values is what counts.
    if math.isnan(stat) or np.isnan(null).any():
        raise ValueError("the jdcov statistic is NaN for these samples; no p-value is reported")
    return float((1 + np.count_nonzero(null >= stat)) / (1 + null.size))


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


def _columns_t(a: np.ndarray) -> np.ndarray:
    """The columns of an (n, p) array as the rows of a (p, n) C-contiguous float64 array,
    each divided by its own power of two when its largest magnitude lies outside the safe
    window (distance correlation is invariant to a per-argument scale)."""
    t = np.ascontiguousarray(a.T, dtype=np.float64)
    m = np.max(np.abs(t), axis=1)
    k = np.frexp(m)[1].astype(np.int64)
    k[(np.abs(k) <= _SAFE) | (m == 0)] = 0
    if np.any(k):
        t = np.ascontiguousarray(np.ldexp(t, (-k[:, None]).astype(np.int32)))
    return t


def dcor_matrix(X, Y=None, *, unbiased=False, exponent=1.0):
    """Distance correlation between every pair of columns of ``X`` (each column a 1-D
    sample), or between each column of ``X`` and each column of ``Y``.

    Parameters
    ----------
    X : array_like, shape (n, p) (a 1-D array is one column)
    Y : array_like, shape (n, q), optional
        Without it the result is the symmetric (p, p) matrix of ``X`` against itself.
    unbiased : bool
        False (default): entry (i, j) is ``divest.dcor(X[:, i], Y[:, j], exponent)``, the
        V distance correlation in [0, 1]. True: entry (i, j) is the bias-corrected squared
        distance correlation ``divest.dcor_sqr(X[:, i], Y[:, j], exponent, unbiased=True)``
        (Székely & Rizzo 2013), which may be negative, clamped to [−1, 1]; needs n ≥ 4.
    exponent : float in (0, 2)
        Distances are raised to this power. 1 (default) takes the exact O(n log n) path.

    Returns
    -------
    ndarray, shape (p, q) (or (p, p)), float64

    Constant columns: a column with zero distance variance has correlation 0 with every
    column, itself included, by convention (as ``divest.dcor`` and ``dcor``), so the
    result is never NaN and never above 1. The diagonal of the symmetric matrix is
    otherwise exactly 1.

    Each column is shifted by its median, sorted and summed once (its row sums
    Σ_j |x_i − x_j| and its distance variance); a pair then costs one merge sort of the
    second column in the first one's order and one dot product, O(n log n). Up to 2048
    observations the merge sort runs with plain running sums (branch-free, two pairs in
    lockstep), and entries equal ``divest.dcor`` to about n·√n·ε relative on dCov² (about
    1e-12 at n = 1000); above that every entry is ``divest.dcor`` on that pair bit for bit
    (for the symmetric matrix, with the lower column index first: the matrix is exactly
    symmetric while ``divest.dcor(x, y)`` and ``divest.dcor(y, x)`` agree to rounding).
    Other exponents use the O(n²)-time pairwise engine per pair, with each column's row
    sums computed once (equal to ``divest.dcor`` to rounding). Pairs run in parallel on
    divest's threads, an entry does not depend on their number or on the other columns
    in the call, and Ctrl-C stops the call.

    Memory: a float64 transposed copy of X and Y, about 20 bytes per value of X and Y for
    the per-column data (24 for exponents other than 1), 32·n bytes per thread and the
    (p, q) result; no n×n matrix.

    References
    ----------
    G. J. Székely, M. L. Rizzo and N. K. Bakirov, Ann. Statist. 35(6), 2007.
    X. Huo and G. J. Székely, "Fast computing for distance covariance", Technometrics 58(4), 2016.
    """
    exponent = _check_exponent(exponent)
    unbiased = check_bool(unbiased, "unbiased")
    xa = as_points(X, "X")
    n, p = xa.shape
    ya = None
    if Y is not None:
        ya = as_points(Y, "Y")
        if ya.shape[0] != n:
            raise ValueError(
                f"X and Y must have the same number of observations (rows); got {n} and "
                f"{ya.shape[0]}"
            )
    if unbiased and n < 4:
        raise ValueError(
            f"X has {n} observation(s); the bias-corrected statistic (unbiased=True) needs "
            "at least 4"
        )
    q = p if ya is None else ya.shape[1]
    ncols = p + (0 if ya is None else q)
    check_memory(28 * n * ncols + 8 * p * q, "X", p, "the per-column data and the matrix")
    xt = _columns_t(xa)
    yt = None if ya is None else _columns_t(ya)
    return _core.dcor_matrix(xt, yt, exponent, unbiased)
