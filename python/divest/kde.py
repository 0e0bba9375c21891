"""Kernel density estimation, correct in any dimension.

Everything is computed in log space by the Rust pairwise engine: the log-density at a
query is a log-sum-exp over the data points, accumulated tile by tile, so nothing of
size n×m is ever allocated and the result stays finite where the density underflows.

The bandwidth is a kernel covariance matrix H = L Lᵀ. Data and queries are centred on
the weighted data mean and whitened with L⁻¹, after which every kernel has unit
bandwidth; the normalising constant and log|L| are added at the end.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from . import _backend, _core, _kdebounds
from ._rng import as_generator
from ._validate import (
    as_float_array,
    as_points,
    check_choice,
    check_count,
    check_memory,
    check_weights,
)

__all__ = ["KDE", "kde_logpdf", "select_bandwidth", "BandwidthSelection", "KERNELS"]

#: Kernel names, as in scikit-learn's KernelDensity.
KERNELS = ("gaussian", "tophat", "epanechnikov", "exponential", "linear", "cosine")

_RULES = ("scott", "silverman")
_DEGENERATE = ("raise", "hull", "regularize")


def _check_kernel(kernel) -> str:
    return check_choice(kernel, "kernel", KERNELS)


def _log_unit_ball(d: int) -> float:
    return 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1.0)


def _log_sphere_area(d: int) -> float:
    # Surface area of the unit sphere in R^d: 2 pi^(d/2) / Gamma(d/2).
    return math.log(2.0) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)


def _cosine_radial_integral(d: int) -> float:
    """∫_0^1 r^(d-1) cos(πr/2) dr, by its alternating series (all terms decay fast)."""
    total = 0.0
    term_scale = 1.0  # (π/2)^(2k) / (2k)!
    k = 0
    while True:
        term = term_scale / (2 * k + d)
        total += term if k % 2 == 0 else -term
        k += 1
        term_scale *= (math.pi / 2) ** 2 / ((2 * k - 1) * (2 * k))
        if term_scale < 1e-18 * abs(total):
            return total


def log_kernel_norm(kernel: str, d: int) -> float:
    """log ∫ K(|u|) du over R^d for the unit-bandwidth radial profile K (K(0) = 1)."""
    if kernel == "gaussian":
        return 0.5 * d * math.log(2 * math.pi)
    if kernel == "tophat":
        return _log_unit_ball(d)
    if kernel == "epanechnikov":
        return _log_unit_ball(d) + math.log(2.0 / (d + 2))
    if kernel == "exponential":
        return _log_sphere_area(d) + math.lgamma(d)
    if kernel == "linear":
        return _log_unit_ball(d) - math.log(d + 1.0)
    if kernel == "cosine":
        return _log_sphere_area(d) + math.log(_cosine_radial_integral(d))
    raise ValueError(kernel)


def _weighted_cov(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    # Same estimator as scipy.stats.gaussian_kde (np.cov with aweights, bias=False), on
    # divest's pool: NumPy's BLAS threads would keep spinning through the next kernel.
    with np.errstate(divide="ignore", invalid="ignore"):
        return _core.weighted_cov(np.ascontiguousarray(x), np.asarray(w, dtype=np.float64))[1]


def _rule_factor(rule: str, neff: float, d: int) -> float:
    if rule == "scott":
        return neff ** (-1.0 / (d + 4))
    return (neff * (d + 2) / 4.0) ** (-1.0 / (d + 4))


def _cholesky(h: np.ndarray, what: str) -> np.ndarray:
    try:
        return np.linalg.cholesky(h)
    except np.linalg.LinAlgError:
        raise ValueError(what) from None


def _data_scale(x: np.ndarray) -> float:
    """A power of two near the data's magnitude when it is extreme (beyond 2^±400), else 1.

    Dividing by a power of two is exact, so ordinary data are untouched and data near 1e300
    or among the subnormals get covariances and whitened coordinates that stay in range.
    """
    top = float(np.max(np.abs(x))) if x.size else 0.0
    if top > 2.0**400 or 0.0 < top < 2.0**-400:
        return math.ldexp(1.0, math.frexp(top)[1] - 1)  # <= top: never overflows
    return 1.0


class _SingularCovariance(ValueError):
    """The rule's covariance is singular (a ValueError; ``KDE(degenerate=...)`` catches it)."""


def _singular_msg(rule: str, d: int, xs=None, w=None, cov=None) -> str:
    detail = ""
    if xs is not None:
        from ._kdedegen import describe

        detail = " " + describe(xs, w, cov)
    return (
        f"the weighted data covariance is singular (rank < {d}, after scaling each column "
        f"to unit variance), so bandwidth={rule!r} is undefined.{detail} Pass "
        "KDE(..., degenerate='hull') (the density on the data's affine hull) or "
        "degenerate='regularize' (a regularised covariance), or a scalar or 1-D "
        "per-dimension bandwidth."
    )


def _bandwidth_factor(bandwidth, xs: np.ndarray, w: np.ndarray, neff: float, scale: float):
    """The kernel covariance H and its Cholesky factor in scaled units, L_s = L / scale.

    ``xs`` are the data divided by ``scale``. Returns (H, L_s, factor or None, rule or
    None). H may overflow to inf (or underflow to 0) for extreme data or bandwidths; L_s
    is always finite with a positive diagonal (else ValueError).
    """
    n, d = xs.shape
    if isinstance(bandwidth, str):
        if bandwidth not in _RULES:
            raise ValueError(
                "bandwidth must be 'scott', 'silverman', 'loo', 'isj', 'plugin', 'scv', a "
                "positive number, a 1-D array of per-dimension standard deviations or a "
                f"(d, d) covariance; got {bandwidth!r}"
            )
        if n < 2:
            raise ValueError(
                f"bandwidth={bandwidth!r} needs at least 2 data points to estimate a covariance; "
                "pass a scalar or per-dimension bandwidth instead"
            )
        if np.count_nonzero(w) < 2:
            raise ValueError(
                f"bandwidth={bandwidth!r} needs at least 2 data points with positive weight "
                "to estimate a covariance; pass a scalar or per-dimension bandwidth instead"
            )
        factor = _rule_factor(bandwidth, neff, d)
        cov = _weighted_cov(xs, w)
        if not np.all(np.isfinite(cov)):
            raise ValueError("the data covariance is not finite; check the data")
        # The rank test runs on the correlation matrix, so it does not depend on the units
        # of each column (scipy accepts columns whose scales differ by 1e8; so do we).
        sd = np.sqrt(np.diag(cov))
        # A constant column has variance 0, but its weighted mean can round, leaving a
        # variance of rounding noise (~1e-32 relative) that the correlation test misses.
        const = np.ptp(xs[w > 0], axis=0) == 0
        if const.any() or not np.all(sd > 0):
            raise _SingularCovariance(_singular_msg(bandwidth, d, xs, w, cov))
        corr = cov / sd[:, None] / sd[None, :]
        try:
            c = np.linalg.cholesky(corr)
        except np.linalg.LinAlgError:
            c = np.full_like(corr, np.nan)
        cd = np.diag(c)
        if not np.all(np.isfinite(c)) or not np.all(cd > 1e-7):
            raise _SingularCovariance(_singular_msg(bandwidth, d, xs, w, cov))
        chol = factor * (sd[:, None] * c)
        with np.errstate(over="ignore", under="ignore"):
            h = cov * factor**2 if scale == 1.0 else (cov * scale) * (scale * factor**2)
        return h, chol, factor, bandwidth
    b = np.asarray(bandwidth)
    if b.dtype.kind not in "biuf":
        raise TypeError(f"bandwidth must be a rule name, a number or an array; got {bandwidth!r}")
    b = b.astype(np.float64)
    if not np.all(np.isfinite(b)):
        raise ValueError("bandwidth must be finite")
    small = (
        "bandwidth is too small relative to the data's magnitude (it underflows once the "
        "data are scaled to a usable range); rescale the data"
    )
    with np.errstate(over="ignore", under="ignore"):
        if b.ndim == 0:
            if not b > 0:
                raise ValueError(f"bandwidth must be positive; got {float(b)!r}")
            bs = float(b) / scale
            if not bs > 0:
                raise ValueError(small)
            return np.diag(np.full(d, b * b)), np.diag(np.full(d, bs)), None, None
        if b.ndim == 1:
            if b.shape[0] != d:
                raise ValueError(
                    f"a 1-D bandwidth gives one standard deviation per dimension: expected {d} "
                    f"values, got {b.shape[0]}"
                )
            if not (b > 0).all():
                raise ValueError(f"bandwidth values must be positive; got minimum {b.min()!r}")
            bs = b / scale
            if not (bs > 0).all():
                raise ValueError(small)
            return np.diag(b * b), np.diag(bs), None, None
    if b.ndim == 2:
        if b.shape != (d, d):
            raise ValueError(f"a bandwidth matrix must have shape ({d}, {d}); got {b.shape}")
        if not np.allclose(b, b.T, rtol=1e-10, atol=0):
            raise ValueError("bandwidth matrix must be symmetric")
        h = 0.5 * (b + b.T)
        msg = "bandwidth matrix must be positive definite"
        # Factor in scaled units when the matrix is extreme, so L_s stays in range.
        top = float(np.max(np.abs(h)))
        sc = 1.0 if 2.0**-600 < top < 2.0**600 else math.ldexp(1.0, math.frexp(top)[1] // 2)
        with np.errstate(over="ignore", under="ignore"):
            chol = _cholesky(h / sc / sc, msg) * sc / scale
        if not np.all(np.isfinite(chol)) or not np.all(np.diag(chol) > 0):
            raise ValueError(msg if np.all(np.isfinite(chol)) else small)
        return h, chol, None, None
    raise ValueError(f"bandwidth must be a scalar, 1-D or 2-D; got {b.ndim} dimensions")


def _regularized_factor(rule, xs, w, neff, scale):
    """The rule with the regularised covariance of ``divest._kdedegen.regularized``."""
    from ._kdedegen import regularized

    n, d = xs.shape
    factor = _rule_factor(rule, neff, d)
    cov = regularized(xs, w)
    if not np.all(np.isfinite(cov)):
        raise ValueError("the data covariance is not finite; check the data")
    chol = factor * np.linalg.cholesky(cov)
    with np.errstate(over="ignore", under="ignore"):
        h = cov * factor**2 if scale == 1.0 else (cov * scale) * (scale * factor**2)
    return h, chol, factor, rule


@dataclass(frozen=True)
class BandwidthSelection:
    """Result of :func:`select_bandwidth`.

    Attributes
    ----------
    bandwidth : ndarray (d, d)
        The selected kernel covariance, ``factor**2 * base``.
    factor : float
        The selected multiplier of the base bandwidth's standard deviations.
    grid : ndarray (G,)
        The factors tried (a copy of the ``grid`` argument, never the caller's array).
    loglik : ndarray (G,)
        Weighted mean leave-one-out log-likelihood at each factor.
    base : ndarray (d, d)
        The base kernel covariance the factors multiply.
    """

    bandwidth: np.ndarray
    factor: float
    grid: np.ndarray
    loglik: np.ndarray
    base: np.ndarray


def _default_grid() -> np.ndarray:
    return np.geomspace(0.05, 4.0, 32)


class KDE:
    """Kernel density estimate.

    Parameters
    ----------
    data : array_like (n, d) or (n,)
        Data points; a 1-D array is n points in one dimension. float32 data are kept in
        float32 (distances in float32 tiles, sums in float64); other real types become float64.
    bandwidth : {"scott", "silverman", "loo"}, float, 1-D or 2-D array
        * "scott" / "silverman": the rule's factor times the weighted data covariance,
          exactly as ``scipy.stats.gaussian_kde`` (so ``KDE(X).logpdf(Q)`` equals
          ``gaussian_kde(X.T).logpdf(Q.T)``). The covariance is called singular (a
          ValueError) when its correlation matrix is: the test does not depend on the
          units of each column.
        * "isj" (1-D): the Improved Sheather–Jones bandwidth (:func:`divest.isj_bandwidth`).
        * "plugin" (1-D to 3-D): a full bandwidth matrix minimising the estimated
          asymptotic MISE, with the fourth-order density functionals estimated by a
          two-stage plug-in with unconstrained (full) pilot matrices (Chacón and Duong
          2010; R's ``ks::Hpi(pilot="unconstr")``).
        * "scv" (1-D to 3-D): smoothed cross-validation with an unconstrained pilot
          (Chacón and Duong 2011; ``ks::Hscv``). Both are affine equivariant; weighted
          data use weighted moments, weighted sums and n_eff; in 1-D H is the 1 × 1
          kernel variance. Gaussian kernel theory; see ``divest._kdeplugin``.
        * "loo": the factor times Scott's bandwidth that maximises the leave-one-out
          likelihood (see :func:`select_bandwidth`).
        * a number h: isotropic kernel of standard deviation h in data units, as
          scikit-learn's ``KernelDensity(bandwidth=h)``.
        * a 1-D array: per-dimension standard deviations.
        * a (d, d) array: the full kernel covariance.
    kernel : str
        "gaussian", "tophat", "epanechnikov", "exponential", "linear" or "cosine", the
        profiles of scikit-learn's KernelDensity, normalised in d dimensions. With a
        non-scalar bandwidth the profile is applied to the Mahalanobis distance.
    weights : array_like (n,), optional
        Non-negative weights, normalised internally (scaled by their maximum first when
        their sum would overflow or underflow). They enter the rules through the
        effective sample size 1/Σw², as in scipy.
    check_finite : bool
        Reject NaN and inf (default True).
    bounds : sequence of (low, high), optional
        Bounded and periodic data: one (low, high) pair per dimension (a single pair for
        1-D data), ``None`` for an open side or an unbounded dimension, e.g.
        ``bounds=[(0, None), (0, 1)]``. Every data point must lie inside the closed box
        (else ValueError). The estimate is then a density on the box, integrating to 1
        there, 0 outside: every method (``logpdf``, ``pdf``, ``score``, ``grid``,
        ``resample``, ``cdf``, ``integrate_box``, ``ppf``, ``marginal``,
        ``conditional``) uses the same folded density, with the same kernel
        restrictions as without bounds (``marginal``/``conditional`` and box
        probabilities in d ≥ 2 need the Gaussian kernel). A
        ``marginal`` or ``conditional`` keeps the bounds of its remaining dimensions.
    boundary : {"reflect", "periodic"} or a sequence of them, one per dimension
        (e.g. ``["periodic", "reflect"]`` for an angle and a radius).
        "reflect": the kernel mass beyond a bound is reflected back (the image sum
        Σ_g K_H(q − g x_i) over the reflections at the bounds and their compositions; for
        two finite bounds as many images as the kernel's reach needs, for the Gaussian
        until they are below 1e-19 of the density). On Uniform(0, 1) data the value at a
        bound is then close to 1, not 1/2. "periodic": each bounded dimension is a circle
        of period high − low (angles; both bounds must be finite); the kernel is wrapped.
        Queries outside the bounds have density 0 in both modes (wrap angles into
        [low, high] first, e.g. ``low + np.mod(q - low, high - low)``).
        The fold is exact for a bandwidth whose bounded rows and columns are diagonal:
        the rules ("scott", "silverman", "loo") decorrelate the bounded dimensions
        (their off-diagonal covariance entries are set to 0; "loo" maximises the
        bounded estimate's leave-one-out likelihood, every image of a point's own kernel
        left out), and an explicit matrix that correlates a bounded dimension
        is a ValueError. Memory: no image copy of the data; the queries' images are
        evaluated instead (module ``divest._kdebounds``): an evaluation allocates the
        image queries that pass the pruning (at most #images·m·d values, about 2·m·d
        on a half-line) plus O(m) accumulators; ``resample`` folds its (size, d) draws
        in one float64 copy; a grid allocates one sub-grid per image that matters.
    degenerate : {"raise", "hull", "regularize"}
        What a rule bandwidth does when the data covariance is singular (a constant
        column, collinear columns, d ≥ n). "raise" (default): a ValueError naming the
        degenerate columns or combinations. "regularize": the rule's covariance Σ +
        1e-3·diag(var) (a constant column borrows the geometric mean of the other
        variances), a proper density on the full space. "hull": the density on the
        data's affine hull with respect to its k-dimensional volume (x = μ + A y, the
        rule applied to the hull coordinates y; ``logpdf`` is -inf off the hull,
        ``resample`` stays on it, ``score`` is the gradient along it; ``grid``, ``cdf``,
        ``integrate_box``, ``ppf``, ``marginal`` and ``conditional`` raise). Ignored
        when the covariance is regular or the bandwidth explicit.

    Attributes
    ----------
    bandwidth : ndarray (d, d)
        The kernel covariance H (``covariance`` in scipy's terms). Computations never use
        it: they use its Cholesky factor, scaled internally by a power of two when the data
        are extreme (beyond 2^±400), so data near 1e300 or subnormal data work; this
        attribute then shows entries that overflow to inf (or underflow to 0) where H has
        no double value, e.g. for a bandwidth of 1e300 (whose square exceeds the range).
    factor : float or None
        The rule's (or selection's) multiplier of the data standard deviation.
    neff : float
        Effective sample size 1/Σw².
    weights : ndarray (n,)
        Normalised weights.

    Notes
    -----
    Memory: the constructor keeps a whitened copy of the data (n·d values) and a reference
    to ``data`` (used by ``resample``; do not modify it afterwards); each
    evaluation allocates O(m·d) for the whitened queries plus one 64×256 distance tile
    per thread. No n×m matrix is ever formed.

    References
    ----------
    D. W. Scott, Multivariate Density Estimation, Wiley, 1992 (Scott's rule).
    B. W. Silverman, Density Estimation for Statistics and Data Analysis, Chapman and Hall, 1986 (Silverman's rule).
    """

    # Set by the constructor; class defaults for KDEs built by divest._kdecalc.
    _fold = _base = _hull = bounds = None
    boundary = "reflect"
    degenerate = "raise"

    def __init__(
        self,
        data,
        bandwidth="scott",
        kernel="gaussian",
        weights=None,
        *,
        check_finite=True,
        bounds=None,
        boundary="reflect",
        degenerate="raise",
    ):
        if (g := _backend.route(data, weights)) is not None:
            if bounds is not None or degenerate != "raise":
                raise ValueError(
                    "bounds= and degenerate= are not available for GPU arrays; pass NumPy "
                    "arrays (cupy.asnumpy(data)) to use them"
                )
            return g.kde_init(self, data, bandwidth, kernel, weights, check_finite)
        x = as_points(data, "data", check_finite=check_finite)
        self.kernel = _check_kernel(kernel)
        self._fold = self._base = self._hull = None
        self.bounds = None
        _kdebounds.check_boundary(boundary, x.shape[1])
        self.boundary = tuple(boundary) if isinstance(boundary, (list, tuple)) else boundary
        self.degenerate = check_choice(degenerate, "degenerate", _DEGENERATE)
        if bounds is not None:
            bounds = _kdebounds.parse_bounds(bounds, x.shape[1], self.boundary)
            _kdebounds.check_inside(x, bounds)
            self.bounds = bounds
        n, d = x.shape
        self.n, self.d = n, d
        self.dtype = x.dtype
        w = check_weights(weights, n)
        self.weights = w
        self.neff = float(1.0 / np.sum(w**2))
        # Internal units: data / scale (a power of two, 1 unless the data are extreme).
        self._scale = _data_scale(x)
        xs = x.astype(np.float64, copy=False)
        if self._scale != 1.0:
            xs = xs / self._scale
        # einsum, not w @ xs: a gemv over n rows wakes OpenBLAS threads, which then spin
        # on the cores the next Rust pass needs.
        self._mean = np.einsum("i,ij->j", w, xs)
        self._x = x
        self.selection = None
        if isinstance(bandwidth, str) and bandwidth == "isj":  # issue 11: 1-D ISJ selector
            from ._kdegrid import isj_bandwidth

            bandwidth = isj_bandwidth(x, weights=w, check_finite=False)
        plugin = isinstance(bandwidth, str) and bandwidth in ("plugin", "scv")
        if plugin:  # issue 11: plug-in / SCV bandwidth matrix, unconstrained pilots
            from ._kdeplugin import select_matrix

            selector = bandwidth
            bandwidth = select_matrix(xs, w, selector)  # internal units (data / scale)
        if isinstance(bandwidth, str) and bandwidth == "loo":
            if self.degenerate != "raise" and n >= 2:
                try:
                    _bandwidth_factor("scott", xs, w, self.neff, self._scale)
                except _SingularCovariance:
                    raise ValueError(
                        f"degenerate={self.degenerate!r} applies to the rules 'scott' and "
                        "'silverman', not to bandwidth='loo' (its base covariance is "
                        "singular for these data); use bandwidth='scott' or 'silverman'"
                    ) from None
            sel = select_bandwidth(
                x,
                kernel=kernel,
                weights=w,
                check_finite=False,
                bounds=self.bounds,
                boundary=self.boundary,
            )
            factor = sel.factor * _rule_factor("scott", self.neff, d)
            rule = "loo"
            _, chol0, _, _ = _bandwidth_factor("scott", xs, w, self.neff, self._scale)
            h, chol = sel.bandwidth, chol0 * sel.factor
            self.selection = sel
        else:
            try:
                if plugin:  # the selected matrix is in internal units
                    h, chol, factor, rule = _bandwidth_factor(bandwidth, xs, w, self.neff, 1.0)
                    with np.errstate(over="ignore", under="ignore"):
                        h = (h * self._scale) * self._scale
                else:
                    h, chol, factor, rule = _bandwidth_factor(
                        bandwidth, xs, w, self.neff, self._scale
                    )
            except _SingularCovariance:
                if self.degenerate == "raise":
                    raise
                if self.degenerate == "regularize":
                    h, chol, factor, rule = _regularized_factor(
                        bandwidth, xs, w, self.neff, self._scale
                    )
                else:
                    if bounds is not None:
                        raise ValueError(
                            "degenerate='hull' cannot be combined with bounds; use "
                            "degenerate='regularize' or an explicit bandwidth"
                        ) from None
                    self._init_hull(x, bandwidth, w, check_finite)
                    return
        self.factor = factor
        self.rule = selector if plugin else rule
        if self.bounds is not None:
            bounded = np.isfinite(self.bounds).any(axis=1)
            if (rule is not None or plugin) and bounded.any():
                # The rules' covariance, with the bounded dimensions decorrelated so the
                # reflections stay isometries of the kernel (see divest._kdebounds).
                h = _kdebounds.diagonalise(h, bounded)
                chol = np.linalg.cholesky(_kdebounds.diagonalise(chol @ chol.T, bounded))
            _kdebounds.check_bandwidth(h, bounded)
            if self._scale != 1.0:
                raise ValueError(
                    "bounds need data whose magnitudes lie between 2^-400 and 2^400 (about "
                    "1e-120 to 1e120); rescale the data and the bounds by a power of two"
                )
        self._set_bandwidth(h, chol)
        if self.bounds is not None and np.isfinite(self.bounds).any():
            self._base = _kdebounds.make_base(self)
            self._fold = _kdebounds.Fold(self, self.bounds, self.boundary)

    def _set_bandwidth(self, h: np.ndarray, chol: np.ndarray) -> None:
        """H (for display) and its Cholesky factor in internal units, L / scale."""
        diag = np.diag(chol)
        self.bandwidth = h
        self._chol = chol
        self._chol_inv = np.linalg.inv(chol)
        # Diagonal bandwidths whiten by scaling instead of a d×d product.
        self._inv_diag = 1.0 / diag if np.count_nonzero(chol - np.diag(diag)) == 0 else None
        self._log_det = float(np.sum(np.log(diag))) + self.d * math.log(self._scale)
        self._log_norm = log_kernel_norm(self.kernel, self.d)
        with np.errstate(divide="ignore"):
            self._logw = np.log(self.weights)  # -inf for zero weights (skipped by the kernel)
        self._white = {}
        # Whiten now, so later changes to the caller's array cannot desynchronise the data
        # from the bandwidth (`resample` reads the original rows).
        xw = self._white_data(self.dtype)
        if not np.all(np.isfinite(xw)):
            raise ValueError(
                "bandwidth is too small for the spread of the data: the data measured in "
                "bandwidths overflow double (or, for float32 data, single) precision; use a "
                "larger bandwidth or rescale the data"
            )

    def _init_hull(self, x, bandwidth, w, check_finite):
        """degenerate='hull': a KDE of the coordinates on the data's affine hull (see
        divest._kdedegen); this object delegates to it."""
        from ._kdedegen import Hull

        hull = Hull(x, w)
        y = hull.coords(x)
        base = KDE(y, bandwidth=bandwidth, kernel=self.kernel, weights=w, check_finite=False)
        self._hull, self._base = hull, base
        self.factor, self.rule = base.factor, base.rule
        self.bandwidth = hull.a @ base.bandwidth @ hull.a.T
        self._log_norm, self._log_det = base._log_norm, base._log_det + hull.log_vol

    @property
    def covariance(self) -> np.ndarray:
        """Alias of :attr:`bandwidth` (scipy's name)."""
        return self.bandwidth

    def _whiten(self, p: np.ndarray, dtype) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            if self._scale != 1.0:
                p = p.astype(np.float64) / self._scale
            if self._inv_diag is not None:
                z = p.astype(np.float64, copy=False) - self._mean
                z *= self._inv_diag
                return np.ascontiguousarray(z, dtype=dtype)
            # On divest's pool: NumPy's BLAS threads would keep spinning and slow the kernel.
            return _core.affine(np.ascontiguousarray(p, dtype=dtype), self._mean, self._chol_inv)

    def _white_data(self, dtype) -> np.ndarray:
        key = np.dtype(dtype).str
        if key not in self._white:
            self._white[key] = self._whiten(self._x, dtype)
        return self._white[key]

    def _prepare(self, points, check_finite):
        """Validated points, result dtype, whitened data and queries, and the mask of
        queries too far to whiten (coordinates beyond the float range; zeroed here)."""
        p = as_points(points, "points", d=self.d, check_finite=check_finite)
        dtype = np.result_type(self.dtype, p.dtype)
        qw = self._whiten(p, dtype)
        far = ~np.isfinite(qw).all(axis=1)
        if far.any():
            qw[far] = 0.0
        return p, dtype, self._white_data(dtype), qw, far

    def logpdf(self, points, *, return_ess=False, check_finite=True):
        """Log-density at ``points`` (m, d) (or (m,) when d = 1).

        With ``return_ess=True`` it also returns the effective number of data points that
        carry each estimate, 1/Σ ŵ² with ŵ the normalised kernel weights w_j K_j / Σ w K,
        from the same pass. Values near 1 mean one neighbour dominates; 0 where the
        density is 0.

        -inf where the density is 0 (outside a compact kernel's support) or below the
        smallest double (a Gaussian log-density below about -1.8e308, i.e. a point more than
        about 1e154 bandwidths away). Returns float32 when data and points are float32,
        else float64. Memory: O(m·d).

        With ``bounds``: the reflected or wrapped density, -inf outside the bounds; the
        unbounded estimate is evaluated at the images of the queries (see
        :class:`KDE`, "Bounded and periodic data"). With ``degenerate='hull'``: the density
        on the affine hull, -inf off it.
        """
        if (g := _backend.route(self._x, points)) is not None:
            return g.kde_logpdf(self, points, return_ess, check_finite)
        if self._fold is not None:
            return _kdebounds.logpdf(self, points, return_ess, check_finite)
        if self._hull is not None:
            return self._hull_logpdf(points, return_ess, check_finite)
        if self.d == 1 and not return_ess:  # issue 11: sorted data and windows in 1-D
            fast = self._logpdf_1d_sorted(points, check_finite)
            if fast is not None:
                return fast
        p, dtype, xw, qw, far = self._prepare(points, check_finite)
        lse, ess, _ = _core.kde_eval(xw, self._logw, qw, self.kernel, ess=return_ess)
        out = (lse - (self._log_norm + self._log_det)).astype(dtype, copy=False)
        out[far] = -np.inf
        if return_ess:
            ess[far] = 0.0
            return out, ess.astype(dtype, copy=False)
        return out

    __call__ = logpdf

    #: Smallest n·m for which 1-D ``logpdf`` sorts and sweeps instead of summing pairs.
    _SORTED_MIN_WORK = 1 << 20

    def _logpdf_1d_sorted(self, points, check_finite):
        """1-D log-density by the exact sorted-window sums of ``divest._kdegrid`` (the
        queries sorted, swept, scattered back), or None where the pairwise engine is used:
        float32 results, small n·m, non-finite queries, or a Gaussian whose data span too
        many bandwidths for the centre lattice. Equal to the engine to about 1e-12
        relative (tails included, in log space). Memory: the sorted data (2n values) and
        queries (2m), and for the Gaussian ≤ 14 moments per h/12 of the data's range."""
        p = as_points(points, "points", d=1, check_finite=check_finite)
        m = p.shape[0]
        if np.result_type(self.dtype, p.dtype) != np.float64 or self.n * m < self._SORTED_MIN_WORK:
            return None
        q = np.ascontiguousarray(p[:, 0], dtype=np.float64)
        if not np.all(np.isfinite(q)):
            return None
        h = float(math.sqrt(self.bandwidth[0, 0]))
        if not (h > 0 and math.isfinite(h)):
            return None
        x = np.ascontiguousarray(self._x[:, 0], dtype=np.float64)
        w = np.ascontiguousarray(self.weights, dtype=np.float64)
        got = _core.kde_points_exact_1d(x, w, self.kernel, h, q, 4 * (self.n + m) + 65536)
        if got is None:
            return None
        out = got[1] - (self._log_norm + self._log_det)
        bad = np.isnan(out)  # squared distances beyond the float range (|q| ~ 1e154·h)
        if bad.any():
            out[bad] = self.logpdf(q[bad], return_ess=True, check_finite=False)[0]
        return out

    def pdf(self, points, *, check_finite=True):
        """Density at ``points``; underflows to 0 where ``logpdf`` stays finite."""
        return np.exp(self.logpdf(points, check_finite=check_finite))

    def score(self, points, *, check_finite=True):
        """Gradient of the log-density at ``points``, shape (m, d).

        Defined for every kernel except at kinks (for "exponential" and "linear" the kink
        at a data point contributes zero). For "tophat" it is 0 inside the support.

        Where the density is 0 (for the compact kernels "tophat", "epanechnikov",
        "linear" and "cosine", outside the support) the log-density is -inf and has no
        gradient: the score is defined as 0 there (never NaN). For "gaussian" and
        "exponential" the density is never 0; far from the data, where the log-density
        underflows, the score is its exact limit, pointing to the nearest data point
        (−H⁻¹(q − x_nearest) for "gaussian", a unit step in Mahalanobis units for
        "exponential"); it is ±inf only where that value exceeds the float range.

        Memory: the (m, d) result plus a bounded buffer (the queries are scored in passes
        of 6144 rows, about 13 MiB of accumulators), plus a float64 copy of the data for
        float32 inputs. No per-query buffer beyond O(d).

        With ``bounds``: the gradient of the folded log-density (Σ_g f₀(gq) J_g s₀(gq) /
        Σ_g f₀(gq) over the images g, J_g their signs); its normal component vanishes on a
        reflecting boundary; 0 outside the bounds. With ``degenerate='hull'``: the
        gradient along the hull (0 off it).
        """
        if (g := _backend.route(self._x, points)) is not None:
            return g.kde_score(self, points, check_finite)
        if self._fold is not None:
            return _kdebounds.score(self, points, check_finite)
        if self._hull is not None:
            p = as_points(points, "points", d=self.d, check_finite=check_finite)
            on = self._hull.on_hull(p)
            out = np.zeros(p.shape)
            if on.any():
                s_y = self._base.score(self._hull.coords(p[on]), check_finite=False)
                out[on] = self._hull.gradient(np.asarray(s_y, dtype=np.float64))
            return out.astype(np.result_type(self.dtype, p.dtype), copy=False)
        p, dtype, xw, qw, far = self._prepare(points, check_finite)
        lse, _, s = _core.kde_eval(xw, self._logw, qw, self.kernel, score=True)
        bad = far | ~np.isfinite(s).all(axis=1)
        if bad.any():
            s[bad] = 0.0
        # s is the gradient in whitened coordinates; the chain rule gives L⁻ᵀ s.
        grad = _core.affine(s, np.zeros(self.d), np.ascontiguousarray(self._chol_inv.T))
        if self._scale != 1.0:
            with np.errstate(over="ignore", under="ignore"):
                grad /= self._scale
        if bad.any() and self.kernel in ("gaussian", "exponential"):
            grad[bad] = self._far_scores(p[bad])
        return grad.astype(dtype, copy=False)

    def _far_scores(self, q: np.ndarray) -> np.ndarray:
        """Scores at queries so far from the data (in bandwidths) that every kernel term
        underflows: the limit, set by the nearest data point(s) in Mahalanobis distance.

        All arithmetic is rescaled by powers of two, so nothing overflows but the result,
        and the nearest point is ranked by |z_j|²/2 − z_q·z_j (whitened coordinates), which
        does not cancel against |z_q|² the way |z_q − z_j|² would.
        """
        x = self._x[self.weights > 0].astype(np.float64)
        ci_exp = math.frexp(float(np.max(np.abs(self._chol_inv))))[1]
        ci = np.ldexp(self._chol_inv, -ci_exp)  # L_s⁻¹ / 2^ci_exp, entries <= 1
        e_scale = math.frexp(self._scale)[1] - 1  # scale = 2^e_scale
        top_x = float(np.max(np.abs(x)))
        out = np.empty(q.shape, dtype=np.float64)
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            for i, qi in enumerate(q.astype(np.float64)):
                p = math.frexp(max(top_x, float(np.max(np.abs(qi))), 2.0**-1000))[1]
                mean = np.ldexp(self._mean, e_scale - p)
                yx = (np.ldexp(x, -p) - mean) @ ci.T  # ∝ whitened data
                yq = (np.ldexp(qi, -p) - mean) @ ci.T  # ∝ whitened query
                rank = 0.5 * np.einsum("ij,ij->i", yx, yx) - yx @ yq
                step = (yx[rank == rank.min()] - yq).mean(axis=0)  # ∝ L⁻¹(x_near − q)
                if self.kernel == "gaussian":
                    # H⁻¹(x_near − q) = L⁻ᵀ L⁻¹(x_near − q), every scale undone at once.
                    out[i] = np.ldexp(step @ ci, p + 2 * ci_exp - 2 * e_scale)
                else:
                    unit = step / np.max(np.abs(step))
                    unit /= np.sqrt(unit @ unit)
                    out[i] = np.ldexp(unit @ ci, ci_exp - e_scale)
        return out

    def _hull_logpdf(self, points, return_ess, check_finite):
        p = as_points(points, "points", d=self.d, check_finite=check_finite)
        dtype = np.result_type(self.dtype, p.dtype)
        on = self._hull.on_hull(p)
        out = np.full(p.shape[0], -np.inf)
        ess = np.zeros(p.shape[0])
        if on.any():
            y = self._hull.coords(p[on])
            lp, e = self._base.logpdf(y, return_ess=True, check_finite=False)
            out[on] = lp - self._hull.log_vol
            ess[on] = e
        if return_ess:
            return out.astype(dtype), ess.astype(dtype)
        return out.astype(dtype)

    def loo_logpdf(self):
        """Leave-one-out log-density at each data point, log Σ_{j≠i} ŵ_j K_H(x_i − x_j)
        with ŵ_j = w_j / (1 − w_i) renormalised over the other points. Shape (n,).
        With ``bounds``: the folded density without any image of x_i's own kernel."""
        if self._fold is not None:  # every image of the point's own kernel left out
            return _kdebounds.loo_logpdf(self)
        if self._hull is not None:
            return self._base.loo_logpdf() - self._hull.log_vol
        if np.count_nonzero(self.weights) < 2:
            raise ValueError("leave-one-out needs at least 2 data points with positive weight")
        xw = self._white_data(self.dtype)
        lse, _, _ = _core.kde_eval(xw, self._logw, xw, self.kernel, exclude_self=True)
        with np.errstate(divide="ignore"):
            out = lse - np.log1p(-self.weights) - (self._log_norm + self._log_det)
        return out.astype(self.dtype, copy=False)

    def resample(self, size=None, rng=None):
        """Draws ``size`` points (default n) from the estimate; shape (size, d).

        A data point is picked with probability w_j, then a kernel displacement is added:
        Gaussian noise with covariance H, or for the other kernels a uniform direction and a
        radius of density ∝ r^(d−1) K(r), mapped through L. ``rng``: None, an int seed or a
        numpy Generator.

        With ``bounds``: the draws are folded onto the bounds (reflected at a reflecting
        boundary, wrapped modulo the period), which samples the bounded estimate exactly;
        every sample lies inside the closed bounds. With ``degenerate='hull'``: samples on
        the hull.
        """
        if self._fold is not None:
            size = self.n if size is None else check_count(size, "size")
            return _kdebounds.resample(self, size, rng)
        if self._hull is not None:
            y = self._base.resample(size, rng=rng)
            return self._hull.points(np.asarray(y, dtype=np.float64)).astype(self.dtype)
        size = self.n if size is None else check_count(size, "size")
        check_memory(size * (self.d + 2) * 8, "size", size, "the samples and their indices")
        gen = as_generator(rng)
        idx = gen.choice(self.n, size=size, p=self.weights)
        u = _radial_sample(self.kernel, self.d, size, gen)
        step = _core.affine(u, np.zeros(self.d), self._chol)  # L u / scale
        with np.errstate(over="ignore"):
            if self._scale != 1.0:
                step *= self._scale
            out = self._x[idx].astype(np.float64) + step
        return out.astype(self.dtype, copy=False)

    def __repr__(self) -> str:
        return (
            f"KDE(n={self.n}, d={self.d}, kernel={self.kernel!r}, "
            f"bandwidth={self.rule or 'user'}, dtype={np.dtype(self.dtype).name})"
        )

    def grid(self, n_points=4096, extent=None, method="auto", log=False, rtol=None):
        """The density on a regular grid, binned or exact, with an error estimate.

        See :func:`divest.kde_grid` for the parameters, accuracy and memory; returns a
        :class:`divest.GridResult`. Data of dimension 1, 2 or 3.
        """
        from ._kdegrid import grid_of

        if self._hull is not None:
            raise _kdedegen_unsupported("grid")
        if self._fold is not None:  # bounds: the grid folded (divest._kdebounds)
            return _kdebounds.grid_refined(self, n_points, extent, method, log, rtol)
        return grid_of(self, n_points=n_points, extent=extent, method=method, log=log, rtol=rtol)

    # Integrals, marginals, conditionals, quantiles (issue 11): see divest._kdecalc.

    def marginal(self, dims):
        """The KDE of the variables ``dims`` (an int or a sequence of distinct ints in
        [-d, d)), as scipy's ``gaussian_kde.marginal``: same data columns and weights,
        the bandwidth's sub-matrix. Exact for the Gaussian kernel (any bandwidth); other
        kernels raise ValueError unless ``dims`` is every dimension. Memory: a copy of the
        selected columns (n·k values) and their whitened copy."""
        from ._kdecalc import marginal

        if self._hull is not None:
            raise _kdedegen_unsupported("marginal")

        return marginal(self, dims)

    def conditional(self, given):
        """The conditional density of the other variables given ``{dim: value, ...}``, a
        weighted Gaussian KDE: weights w_i·N(value; x_i,g, H_gg) (in log space,
        normalised), centres x_i,r + H_rg H_gg⁻¹(value − x_i,g), bandwidth the Schur
        complement H_rr − H_rg H_gg⁻¹ H_gr. Exact for the Gaussian kernel only (else
        ValueError). Memory: O(n·d). scipy has no equivalent."""
        from ._kdecalc import conditional

        if self._hull is not None:
            raise _kdedegen_unsupported("conditional")

        return conditional(self, given)

    def integrate_box(self, low, high):
        """Probability of the box(es) [low, high] (each (d,) or (m, d); ±inf allowed),
        as scipy's ``integrate_box_1d`` / ``integrate_box``; one box gives a float.
        Exact (closed forms, tails kept to full relative accuracy) for the Gaussian
        kernel with a diagonal bandwidth in any d, and for every kernel in 1-D. A full
        Gaussian bandwidth in 2-D uses the bivariate normal CDF (Drezner–Wesolowsky /
        Genz, 20-point Gauss–Legendre; about 1e-15 absolute, not relative in the
        tails). In 3-D it uses the trivariate normal CDF (Plackett's identity: one
        bivariate CDF plus two 1-D integrals of φ2·Φ, by Gauss–Legendre panels graded
        toward the end where the bandwidth's correlations approach ±1 or H approaches
        singular; about 1e-15 absolute, relative in the lower tail for nonnegative
        correlations) at each of the box's finite corners (8, or 1 for ``cdf``). The
        Gaussian paths are compiled and threaded (``divest.threads``), Ctrl-C stops
        them. Cost: per (data point, box corner) pair about 100 to 250 normal-tail and
        exponential evaluations in 3-D for a typical bandwidth (more for correlations
        within 1e-3 of ±1), so n = 10^4 points and 100 corners take a few tenths of a
        second; a corner coordinate at least 8.5 kernel standard deviations above a
        point drops that dimension (the bivariate or univariate CDF; error below
        1e-17). In d ≥ 4 a full bandwidth raises
        ValueError (not implemented; use a marginal of up to 3 dimensions or a diagonal
        bandwidth). A box with any high ≤ low has probability 0 (scipy's
        ``integrate_box_1d`` would return the negative of the reversed interval).
        Memory: the Gaussian kernel allocates the (m,) result and at most 16 partial
        sums per box (plus copies of the inputs in float64); the other 1-D kernels
        loop over query chunks of about 2^20/n rows. Never n×m."""
        from ._kdecalc import integrate_box

        if self._hull is not None:
            raise _kdedegen_unsupported("integrate_box")

        return integrate_box(self, low, high)

    def cdf(self, points):
        """P(X ≤ points) componentwise, ``integrate_box(-inf, points)``; same support,
        accuracy and memory as :meth:`integrate_box`. Shape (m,)."""
        from ._kdecalc import cdf

        if self._hull is not None:
            raise _kdedegen_unsupported("cdf")

        return cdf(self, points)

    def ppf(self, q):
        """Quantiles of a 1-D KDE: the smallest x with cdf(x) ≥ q (q in [0, 1], any
        shape; a float for a scalar), by safeguarded Newton on the monotone cdf (Newton
        steps inside a shrinking bracket, else bisection) to about 1e-15 in probability
        (1e-12 asserted in the tests). q = 0 / 1 give -inf / inf for the Gaussian and
        exponential kernels, the support's ends for the compact kernels. scipy has no
        equivalent. Memory: as :meth:`cdf`, per step (typically 5 to 30 steps)."""
        from ._kdecalc import ppf

        if self._hull is not None:
            raise _kdedegen_unsupported("ppf")

        return ppf(self, q)


def _kdedegen_unsupported(what):
    from ._kdedegen import unsupported

    return unsupported(what)


def _radial_sample(kernel: str, d: int, size: int, gen: np.random.Generator) -> np.ndarray:
    """`size` draws from the unit-bandwidth kernel in R^d."""
    z = gen.standard_normal((size, d))
    if kernel == "gaussian":
        return z
    norms = np.linalg.norm(z, axis=1)
    norms[norms == 0] = 1.0
    direction = z / norms[:, None]
    if kernel == "exponential":
        r = gen.gamma(shape=d, scale=1.0, size=size)
    elif kernel == "tophat":
        r = gen.random(size) ** (1.0 / d)
    else:
        # Propose from the uniform ball (radius density d r^(d-1)) and accept by K(r) <= 1.
        accept = {
            "epanechnikov": lambda r: 1.0 - r * r,
            "linear": lambda r: 1.0 - r,
            "cosine": lambda r: np.cos(0.5 * np.pi * r),
        }[kernel]
        r = np.empty(size)
        filled = 0
        while filled < size:
            batch = max(64, 2 * (size - filled) * (d + 2))
            cand = gen.random(batch) ** (1.0 / d)
            keep = cand[gen.random(batch) < accept(cand)]
            take = min(keep.size, size - filled)
            r[filled : filled + take] = keep[:take]
            filled += take
    return direction * r[:, None]


def kde_logpdf(
    data,
    points,
    bandwidth="scott",
    kernel="gaussian",
    weights=None,
    *,
    return_ess=False,
    check_finite=True,
    bounds=None,
    boundary="reflect",
    degenerate="raise",
):
    """One-shot ``KDE(data, bandwidth, kernel, weights, bounds=..., boundary=...,
    degenerate=...).logpdf(points)``."""
    _backend.on_gpu(data, points, weights)  # a host/device mix: TypeError before any work
    kde = KDE(
        data,
        bandwidth=bandwidth,
        kernel=kernel,
        weights=weights,
        check_finite=check_finite,
        bounds=bounds,
        boundary=boundary,
        degenerate=degenerate,
    )
    return kde.logpdf(points, return_ess=return_ess, check_finite=check_finite)


def select_bandwidth(
    data,
    grid=None,
    *,
    kernel="gaussian",
    weights=None,
    base="scott",
    check_finite=True,
    warn_edge=True,
    bounds=None,
    boundary="reflect",
) -> BandwidthSelection:
    """Bandwidth maximising the leave-one-out (LOO) likelihood over a grid of factors.

    The candidate bandwidths are ``factor**2 * H0`` with H0 the ``base`` bandwidth (a rule
    name or anything :class:`KDE` accepts) and ``factor`` from ``grid`` (default 32
    factors from 0.05 to 4, geometric). The score at each factor is the weighted mean
    LOO log-density Σ_i w_i log p̂_{−i}(x_i), the empirical Kullback-Leibler criterion.

    The whole grid is evaluated in one pass over the pairs: each squared distance is
    computed once and only the kernel is re-evaluated per factor. Memory: O(n·(d + G)).
    Warns when the best factor lies on the edge of the grid.

    With ``bounds`` (and ``boundary``, as for :class:`KDE`): the LOO likelihood of the
    bounded (reflected or wrapped) estimate, each x_i scored without any image of its own
    kernel (:meth:`KDE.loo_logpdf` at every factor); H0 is the bounded KDE's base
    bandwidth (the rule's covariance with the bounded dimensions decorrelated). One pass
    over the pairs per image of the data that matters at the largest factor.
    """
    x = as_points(data, "data", check_finite=check_finite)
    kernel = _check_kernel(kernel)
    n, d = x.shape
    if n < 2:
        raise ValueError("select_bandwidth needs at least 2 data points")
    w = check_weights(weights, n)
    if np.count_nonzero(w) < 2:
        raise ValueError("select_bandwidth needs at least 2 data points with positive weight")
    # A copy: the result must not alias the caller's array.
    if grid is None:
        factors = _default_grid()
    else:
        factors = as_float_array(grid, "grid", check_finite=False).astype(np.float64).ravel()
    if factors.size == 0 or not np.all(np.isfinite(factors)) or not np.all(factors > 0):
        raise ValueError("grid must be a non-empty array of positive, finite factors")
    if isinstance(base, str) and base == "loo":
        raise ValueError("base must be a rule name or an explicit bandwidth, not 'loo'")
    kde0 = KDE(
        x,
        bandwidth=base,
        kernel=kernel,
        weights=w,
        check_finite=False,
        bounds=bounds,
        boundary=boundary,
    )
    if kde0._fold is not None:  # bounds: the folded estimate's LOO (divest._kdebounds)
        loo = _kdebounds.loo_grid(kde0, factors)
    else:
        xw = kde0._white_data(kde0.dtype)
        lse = _core.kde_loo_grid(xw, kde0._logw, kernel, np.ascontiguousarray(factors))
        const = kde0._log_norm + kde0._log_det + d * np.log(factors)
        with np.errstate(divide="ignore", invalid="ignore"):
            loo = lse - const[None, :] - np.log1p(-w)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        pos = w > 0
        loglik = np.sum(w[pos, None] * loo[pos], axis=0)
    loglik = np.where(np.isnan(loglik), -np.inf, loglik)
    best = int(np.argmax(loglik))
    if not np.isfinite(loglik[best]):
        raise ValueError(
            "every factor in the grid leaves some point with zero leave-one-out density; "
            "use larger factors or a kernel with unbounded support"
        )
    if warn_edge and factors.size > 1 and factors[best] in (factors.min(), factors.max()):
        warnings.warn(
            f"the best bandwidth factor {factors[best]:.4g} lies on the edge of the grid "
            f"[{factors.min():.4g}, {factors.max():.4g}]; widen the grid",
            RuntimeWarning,
            stacklevel=2,
        )
    f = float(factors[best])
    with np.errstate(over="ignore", under="ignore"):
        bw = kde0.bandwidth * f * f
    return BandwidthSelection(
        bandwidth=bw, factor=f, grid=factors, loglik=loglik, base=kde0.bandwidth
    )
