"""Kernel tests with permutation p-values: MMD two-sample test, HSIC and dHSIC
independence tests, and the partial distance correlation test.

All tests share one resampling engine in the Rust core. Resample r draws its
permutation(s) from counter-based streams keyed by (seed, r), where the seed is drawn
once from ``rng``; each resampled statistic is evaluated serially in a fixed order, so
the null distribution, and the p-value p = (1 + #{T_b ≥ T}) / (1 + B), depend on ``rng``
only, never on the thread count. The observed statistic is evaluated by the same code as
the resampled ones (identity permutation).

Kernels (``kernel=``): "gaussian" k(u, v) = exp(−‖u − v‖² / (2σ²)) and "laplacian"
k(u, v) = exp(−‖u − v‖ / σ), as in :func:`divest.mmd`. ``bandwidth="median"`` sets σ to
the median of the pairwise Euclidean distances of the sample concerned (the pooled sample
for MMD, each sample on its own for HSIC and dHSIC), computed exactly over all
n(n − 1)/2 pairs (NumPy's median convention: the mean of the two middle values) by
counting passes of O(n² d) time and O(n) memory (a sampled bracket, then bisection and
one selection over at most max(4n, 65536) candidates); when more than half the pairs
coincide (median 0), the median of the non-zero distances; a constant sample gets σ = 1
(its kernel matrix is constant and every statistic involving it is 0).

Memory: each test stores its n×n matrices (one for MMD on the pooled sample, two for
HSIC and the partial dCor test, d for dHSIC; 32 MiB each at n = 2048) when
n ≤ 2048. Beyond that it evaluates the statistics tile by tile through the pairwise
engine (SIMD distance tiles and exponential), for groups of resamples at a time: O(n·d)
memory for centred and permuted copies of the samples (MMD: 64 labellings of n bytes
and an n × 64 indicator block) plus about 1 MiB of tiles per thread; O(n² d) time per
resample for HSIC, dHSIC and the partial dCor test, and for MMD one Gram evaluation per
64 resamples plus n² multiply-adds per resample. Both paths give the same values to
about 1e-12 relative.

Magnitudes: each sample is divided by a power of two when its largest magnitude lies
outside [2^-64, 2^64] (exact), with the bandwidth scaled alike, so the results are those
of the data at unit scale.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import _core
from ._results import TestResult
from ._rng import seed
from ._validate import as_points, check_bool, check_choice, check_int, check_positive
from .dcov import _check_exponent, _check_resamples, _exp2, _perm_pvalue, _shift

__all__ = [
    "mmd_test",
    "hsic",
    "hsic_test",
    "dhsic",
    "dhsic_test",
    "partial_dcor_test",
]

_KERNELS = ("gaussian", "laplacian")
_FMAX = float(np.finfo(np.float64).max)


def _sample(a, name: str) -> tuple[np.ndarray, int]:
    """A float64 C-contiguous (n, d) copy divided by 2**k when outside the safe window."""
    x = np.ascontiguousarray(as_points(a, name), dtype=np.float64)
    k = _exp2(x)
    return _shift(x, k), k


def _median(x: np.ndarray) -> float:
    """Exact median pairwise distance (0 median: median of the non-zero ones), 1.0 for a
    constant sample."""
    m = _core.kern_median_distance(x)
    return m if m > 0 else 1.0


def _bandwidth(bandwidth, name: str):
    """'median' or a positive float (validated)."""
    if isinstance(bandwidth, str):
        check_choice(bandwidth, name, ("median",), "or a positive number")
        return "median"
    return check_positive(bandwidth, name)


def _sigma(bw, x: np.ndarray, k: int) -> float:
    """σ for the rescaled sample x (= original / 2**k)."""
    if bw == "median":
        return _median(x)
    # Beyond the float64 range the kernel is constant (σ huge: all ones) or the identity
    # (σ tiny): the extreme finite values give exactly those matrices.
    try:
        s = math.ldexp(bw, -k)
    except OverflowError:
        s = _FMAX
    return min(max(s, 5e-324), _FMAX)


def _per_sample_bandwidths(bandwidth, d: int, name: str = "bandwidth") -> list:
    if isinstance(bandwidth, str) or isinstance(bandwidth, (numbers.Real, np.floating)):
        return [_bandwidth(bandwidth, name)] * d
    try:
        bws = list(bandwidth)
    except TypeError:
        raise TypeError(
            f"{name} must be 'median', a positive number or a sequence of {d} of them; "
            f"got {type(bandwidth).__name__}"
        ) from None
    if len(bws) != d:
        raise ValueError(f"{name} must have one entry per sample ({d}); got {len(bws)}")
    return [_bandwidth(b, f"{name}[{i}]") for i, b in enumerate(bws)]


def _finite(stat) -> float:
    if not math.isfinite(stat):
        raise ValueError("the statistic is not finite for these samples; rescale them")
    return float(stat)


def _resamples(n_resamples, n: int, per_pair: int = 1) -> int:
    """None (the statistic alone, no resamples) or a validated count."""
    if n_resamples is None:
        return 0
    check_int(n_resamples, "n_resamples", 1)
    return _check_resamples(n_resamples, n, per_pair)


def mmd_test(
    x,
    y,
    *,
    kernel="gaussian",
    bandwidth="median",
    unbiased=True,
    n_resamples=999,
    rng=None,
) -> TestResult:
    """Kernel two-sample test (Gretton et al. 2012) with a permutation p-value.

    The statistic is MMD²(x, y), the value :func:`divest.mmd` returns for the same σ
    (``unbiased=True``: the U statistic; ``False``: the V statistic). Each resample
    relabels the pooled sample by a random permutation; p = (1 + #{T_b ≥ T}) / (1 + B).

    Parameters
    ----------
    x, y : array_like, (n,) or (n, d) and (m,) or (m, d)
        The samples (same dimension d; n, m ≥ 2 for the U statistic, ≥ 1 otherwise).
    kernel : "gaussian" or "laplacian"
    bandwidth : "median" or float
        σ; "median" is the exact median pairwise distance of the pooled sample (see the
        module docstring).
    n_resamples : int ≥ 1
    rng : None, int or numpy.random.Generator

    Returns :class:`divest.TestResult`. Memory: one (n + m)² float64 matrix when
    n + m ≤ 2048, else O(n + m) (tiles; see the module docstring).
    """
    check_choice(kernel, "kernel", _KERNELS)
    bw = _bandwidth(bandwidth, "bandwidth")
    unbiased = check_bool(unbiased, "unbiased")
    xa = as_points(x, "x")
    ya = as_points(y, "y", d=xa.shape[1])
    need = 2 if unbiased else 1
    for name, a in (("x", xa), ("y", ya)):
        if a.shape[0] < need:
            raise ValueError(
                f"{name} has {a.shape[0]} observation(s); mmd_test needs at least {need} "
                "per sample" + (" with unbiased=True" if unbiased else "")
            )
    z = np.ascontiguousarray(np.concatenate([xa, ya]), dtype=np.float64)
    check_int(n_resamples, "n_resamples", 1)
    b = _resamples(n_resamples, z.shape[0])
    k = _exp2(z)
    z = _shift(z, k)
    s = _sigma(bw, z, k)
    stat, null = _core.kern_mmd_test(z, xa.shape[0], kernel, s, unbiased, b, 0, seed(rng, bits=63))
    return TestResult(float(stat), _perm_pvalue(stat, null), null)


def _two(x, y):
    (xa, kx), (ya, ky) = _sample(x, "x"), _sample(y, "y")
    if xa.shape[0] != ya.shape[0]:
        raise ValueError(
            "x and y must have the same number of observations (rows); "
            f"got {xa.shape[0]} and {ya.shape[0]}"
        )
    return xa, kx, ya, ky


def _hsic(x, y, kernel, bandwidth, unbiased, n_resamples, rng):
    check_choice(kernel, "kernel", _KERNELS)
    bx, by = _per_sample_bandwidths(bandwidth, 2)
    unbiased = check_bool(unbiased, "unbiased")
    xa, kx, ya, ky = _two(x, y)
    n = xa.shape[0]
    need = 4 if unbiased else 2
    if n < need:
        raise ValueError(
            f"x and y have {n} observation(s); HSIC needs at least {need}"
            + (" with unbiased=True" if unbiased else "")
        )
    b = _resamples(n_resamples, n, 1)
    sx, sy = _sigma(bx, xa, kx), _sigma(by, ya, ky)
    return _core.kern_hsic_test(xa, ya, kernel, sx, sy, unbiased, b, 0, seed(rng, bits=63))


def hsic(x, y, *, kernel="gaussian", bandwidth="median", unbiased=False) -> float:
    """Hilbert–Schmidt independence criterion (Gretton et al. 2005).

    ``unbiased=False``: the biased V statistic tr(K H L H) / n² (H = I − 11ᵀ/n; n ≥ 2).
    ``unbiased=True``: the unbiased estimator of Song et al. (2012),
    [tr(K̃L̃) + 1ᵀK̃1 · 1ᵀL̃1 / ((n − 1)(n − 2)) − 2/(n − 2) · 1ᵀK̃L̃1] / (n(n − 3)) with K̃, L̃
    the kernel matrices with zero diagonal (n ≥ 4; may be negative), computed as the
    U-centred inner product, which equals it.

    ``bandwidth``: "median" (each sample's exact median pairwise distance), a positive
    number for both samples, or a pair (σ_x, σ_y).

    Memory: two n×n float64 matrices when n ≤ 2048, else O(n·d) (tiles; see the module
    docstring).
    """
    stat, _ = _hsic(x, y, kernel, bandwidth, unbiased, None, 0)
    return _finite(stat)


def hsic_test(
    x,
    y,
    *,
    kernel="gaussian",
    bandwidth="median",
    unbiased=False,
    n_resamples=999,
    rng=None,
    method="permutation",
) -> TestResult:
    """HSIC test of independence (Gretton et al. 2008).

    The statistic is :func:`hsic` (same arguments).

    ``method="permutation"`` (default): each resample permutes the rows of y;
    p = (1 + #{T_b ≥ T}) / (1 + B). The biased and unbiased statistics give tests of
    equal validity (the permutation null is exact under independence). Memory as
    :func:`hsic`; O(n²) time per resample.

    ``method="gamma"``: the gamma approximation of the null of n·HSIC_b (Gretton et al.
    2008; their reference code's moments: mean (1 + μ_x μ_y − μ_x − μ_y)/n with μ the mean
    off-diagonal kernel value, variance 72 (n−4)(n−5)/(n(n−1)(n−2)(n−3)) ·
    Σ_{i≠j} (K̄_ij L̄_ij / 6)² / (n(n−1)) with K̄, L̄ centred), p = P(Γ ≥ n·HSIC_b); biased
    statistic only (``unbiased=False``), n ≥ 6, needs SciPy. No resampling (``n_resamples``
    and ``rng`` are ignored; ``null_distribution`` is None), O(n) memory, two passes
    over the pairs. It is an approximation: accurate for moderate n (a few hundred),
    roughly calibrated below; a degenerate null (a constant sample) gives p = 1.

    Returns :class:`divest.TestResult`.
    """
    check_choice(method, "method", ("permutation", "gamma"))
    if method == "gamma":
        return _hsic_gamma(x, y, kernel, bandwidth, unbiased)
    check_int(n_resamples, "n_resamples", 1)
    stat, null = _hsic(x, y, kernel, bandwidth, unbiased, n_resamples, rng)
    return TestResult(float(stat), _perm_pvalue(stat, null), null)


def _hsic_gamma(x, y, kernel, bandwidth, unbiased) -> TestResult:
    try:
        from scipy.stats import gamma
    except ImportError:  # pragma: no cover
        raise ImportError("hsic_test(method='gamma') needs SciPy: pip install scipy") from None
    check_choice(kernel, "kernel", _KERNELS)
    bx, by = _per_sample_bandwidths(bandwidth, 2)
    if check_bool(unbiased, "unbiased"):
        raise ValueError(
            "method='gamma' approximates the null of the biased statistic; pass "
            "unbiased=False, or use method='permutation'"
        )
    xa, kx, ya, ky = _two(x, y)
    n = xa.shape[0]
    if n < 6:
        raise ValueError(f"x and y have {n} observation(s); method='gamma' needs at least 6")
    sx, sy = _sigma(bx, xa, kx), _sigma(by, ya, ky)
    nstat, sq, mux, muy = _core.kern_hsic_gamma(xa, ya, kernel, sx, sy)
    var = 72.0 * (n - 4) * (n - 5) / (n * (n - 1) * (n - 2) * (n - 3)) * sq / 36.0
    var /= n * (n - 1)
    mean = (1.0 + mux * muy - mux - muy) / n
    stat = _finite(nstat / n)
    if not (var > 0 and mean > 0):
        return TestResult(stat, 1.0, None)
    shape, scale = mean * mean / var, var * n / mean
    return TestResult(stat, float(gamma.sf(nstat, shape, scale=scale)), None)


def _dhsic(xs, kernel, bandwidth, n_resamples, rng, fname):
    if len(xs) < 2:
        raise ValueError(f"{fname} needs at least two samples; got {len(xs)}")
    check_choice(kernel, "kernel", _KERNELS)
    bws = _per_sample_bandwidths(bandwidth, len(xs))
    arrs = [_sample(a, f"xs[{i}]") for i, a in enumerate(xs)]
    n = arrs[0][0].shape[0]
    for i, (a, _) in enumerate(arrs):
        if a.shape[0] != n:
            raise ValueError(
                f"every sample must have the same number of observations; xs[0] has {n} "
                f"and xs[{i}] has {a.shape[0]}"
            )
    if n < 2:
        raise ValueError(f"{fname} needs at least 2 observations; got {n}")
    b = _resamples(n_resamples, n, len(xs))
    sig = [_sigma(bw, a, k) for bw, (a, k) in zip(bws, arrs)]
    return _core.kern_dhsic_test([a for a, _ in arrs], kernel, sig, b, 0, seed(rng, bits=63))


def dhsic(*xs, kernel="gaussian", bandwidth="median") -> float:
    """d-variable Hilbert–Schmidt independence criterion (Pfister et al. 2018), the V
    statistic

    (1/n²) Σ_ij Π_k K_k[i, j] + Π_k (1/n²) Σ_ij K_k[i, j] − (2/n) Σ_i Π_k (1/n) Σ_j K_k[i, j],

    zero in population iff the d ≥ 2 samples are jointly independent (characteristic
    kernels). For d = 2 it equals :func:`hsic` with ``unbiased=False``. ``bandwidth``:
    "median" (each sample's own), a number, or one value per sample.

    Memory: d n×n float64 matrices when n ≤ 2048, else O(n·d) (tiles; see the module
    docstring).
    """
    stat, _ = _dhsic(xs, kernel, bandwidth, None, 0, "dhsic")
    return _finite(stat)


def dhsic_test(*xs, kernel="gaussian", bandwidth="median", n_resamples=999, rng=None) -> TestResult:
    """Permutation test of joint independence of d ≥ 2 samples based on :func:`dhsic`
    (Pfister et al. 2018): each resample permutes the rows of every sample but the first,
    independently. p = (1 + #{T_b ≥ T}) / (1 + B). Memory as :func:`dhsic`.
    """
    check_int(n_resamples, "n_resamples", 1)
    stat, null = _dhsic(xs, kernel, bandwidth, n_resamples, rng, "dhsic_test")
    return TestResult(float(stat), _perm_pvalue(stat, null), null)


def partial_dcor_test(x, y, z, *, n_resamples=999, rng=None, exponent=1.0) -> TestResult:
    """Permutation test of zero partial distance correlation of x and y given z
    (Székely & Rizzo 2014; the ``pdcor.test`` of the R package energy).

    The statistic is :func:`divest.partial_dcor` (computed here from the projections,
    equal to it up to rounding): with Ã, B̃, C̃ the U-centred distance matrices of x, y, z
    and P = Ã − (⟨Ã, C̃⟩/⟨C̃, C̃⟩) C̃, Q likewise for B̃, it is ⟨P, Q⟩ / (|P| |Q|) (0 when
    a norm is 0). Each resample permutes the rows and columns of P (x's projection),
    which is exchangeable under the null of the test. p = (1 + #{T_b ≥ T}) / (1 + B).
    Needs n ≥ 4.

    Note: zero partial distance correlation is not conditional independence; the test
    is valid for the hypothesis that the projections are uncorrelated (see Székely &
    Rizzo 2014, section 4).

    Memory: two n×n float64 matrices when n ≤ 2048, else O(n·(p + r)) (tiles, O(n² (p + q
    + r)) time per resample; see the module docstring).
    """
    exponent = _check_exponent(exponent)
    (xa, _), (ya, _), (za, _) = _sample(x, "x"), _sample(y, "y"), _sample(z, "z")
    n = xa.shape[0]
    for name, a in (("y", ya), ("z", za)):
        if a.shape[0] != n:
            raise ValueError(
                f"x and {name} must have the same number of observations (rows); "
                f"got {n} and {a.shape[0]}"
            )
    if n < 4:
        raise ValueError(f"partial_dcor_test needs at least 4 observations; got {n}")
    check_int(n_resamples, "n_resamples", 1)
    b = _check_resamples(n_resamples, n, 3)
    stat, null = _core.kern_pdcor_test(xa, ya, za, exponent, b, 0, seed(rng, bits=63))
    return TestResult(float(stat), _perm_pvalue(stat, null), null)
