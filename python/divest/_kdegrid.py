"""Kernel density estimates on regular grids (issue 11), and the ISJ bandwidth.

:func:`kde_grid` and :meth:`divest.KDE.grid` evaluate a 1-D estimate at ``n_points``
equally spaced points, either *binned* (linear binning, then one convolution with the
kernel sampled at the grid spacing: the method of KDEpy's ``FFTKDE`` and R's
``bkde``) or *exact* (equal to the direct sum Σ_j w_j K_h(g − x_j) to rounding, the value
``KDE.pdf`` or ``scipy.stats.gaussian_kde`` give at those points), in O(n + m) after
sorting (compact and exponential kernels) or O(n·P + m·R·P) (Gaussian, P ≈ 13 Taylor
terms, R ≈ 290 lattice centres per point). The Rust kernels live in ``src/core/kdegrid``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from . import _core
from ._validate import as_points, check_int, check_weights

__all__ = ["GridResult", "kde_grid", "isj_bandwidth"]

_METHODS = ("auto", "binned", "exact")
#: Profiles with a kink or a jump inside the support: linear binning smears them.
_KINKED = ("tophat", "linear", "exponential")
#: Reach of the kernel in bandwidths used for the default extent and the binned path
#: (the support for compact kernels; K(r) < 1e-16 beyond it otherwise).
_REACH = {"gaussian": 8.6, "exponential": 37.0}
#: Relative binning error above which ``log=True`` recomputes a grid point exactly.
_LOG_RTOL = 1e-7
#: Relative accuracy of the exact paths (tested against the direct sum).
_EXACT_RTOL = 1e-12


@dataclass(frozen=True)
class GridResult:
    """A density evaluated on a regular grid.

    Attributes
    ----------
    grid : ndarray (m,)
        The grid points, ``extent[0] + i * spacing``.
    values : ndarray (m,)
        The density (or the log-density when ``log`` is true) at the grid points.
    error : float
        Estimated largest absolute error of ``values`` (density units, or nats when
        ``log``): the binning-error estimate for binned values, ``1e-12`` relative for
        exact ones.
    errors : ndarray (m,)
        The same estimate per grid point.
    method : str
        "binned" or "exact": what produced the values ("binned" values recomputed exactly
        under ``log=True`` are counted in ``n_exact``).
    log : bool
        Whether ``values`` are log-densities.
    n_exact : int
        How many grid points hold exactly computed values.
    """

    grid: np.ndarray
    values: np.ndarray
    error: float
    errors: np.ndarray
    method: str
    log: bool
    n_exact: int

    @property
    def spacing(self) -> float:
        """Distance between neighbouring grid points."""
        return float(self.grid[1] - self.grid[0])


def _available_bytes() -> float:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return float(16 << 30)


def _check_extent(extent, d: int):
    try:
        e = np.asarray(extent, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"extent must be a pair (low, high) of numbers; got {extent!r}") from None
    if d == 1 and e.shape == (2,):
        e = e[None, :]
    if e.shape != (d, 2):
        raise ValueError(
            f"extent must be (low, high){f' per dimension, shape ({d}, 2)' if d > 1 else ''}; "
            f"got {extent!r}"
        )
    if not np.all(np.isfinite(e)):
        raise ValueError(f"extent must be finite; got {extent!r}")
    if not np.all(e[:, 0] < e[:, 1]):
        raise ValueError(
            f"extent must have low < high (an empty or reversed interval is not a grid); "
            f"got {extent!r}"
        )
    return e


def _check_n_points(n_points, d: int):
    if isinstance(n_points, (tuple, list, np.ndarray)):
        pts = [check_int(v, "n_points", minimum=0) for v in np.asarray(n_points).ravel()]
        if len(pts) != d:
            raise ValueError(f"n_points must give one size per dimension ({d}); got {n_points!r}")
    else:
        pts = [check_int(n_points, "n_points", minimum=0)] * d
    if min(pts) < 2:
        raise ValueError(f"n_points must be at least 2 per dimension; got {n_points!r}")
    return pts


def _check_memory(nbytes: float, n_points) -> None:
    avail = _available_bytes()
    if nbytes > 0.5 * avail:
        raise ValueError(
            f"n_points={n_points!r} would need about {nbytes / 2**30:.3g} GiB for the grid "
            f"and its work arrays, more than half of this machine's {avail / 2**30:.3g} GiB; "
            "use fewer n_points or a wider extent relative to the bandwidth"
        )


def grid_of(kde, n_points=4096, extent=None, method="auto", log=False) -> GridResult:
    """Implementation of :meth:`divest.KDE.grid` (see :func:`kde_grid`)."""
    if kde.d > 3:
        raise ValueError(
            f"grid needs data of dimension 1, 2 or 3 (a grid in {kde.d} dimensions is too "
            "large to be useful); evaluate KDE.logpdf at chosen points instead"
        )
    if not isinstance(method, str) or method not in _METHODS:
        raise ValueError(f"method must be 'auto', 'binned' or 'exact'; got {method!r}")
    if not isinstance(log, (bool, np.bool_)):
        raise TypeError(f"log must be True or False; got {log!r}")
    pts = _check_n_points(n_points, kde.d)
    kernel = kde.kernel
    if method == "binned" and kernel in _KINKED:
        raise ValueError(
            f"method='binned' cannot be accurate for kernel={kernel!r}: its profile has a "
            "kink (or a jump), which linear binning smears over a grid cell, so the error "
            "is first order in the spacing and the second-difference error estimate does "
            "not hold; use method='exact' (or 'auto')"
        )
    if kde.d > 1:
        raise ValueError(
            f"grid is implemented for 1-D data so far; these data have d={kde.d} "
            "(evaluate KDE.pdf on a mesh instead)"
        )
    return _grid_1d(kde, pts[0], extent, method, bool(log))


def _grid_1d(kde, m: int, extent, method: str, log: bool) -> GridResult:
    kernel = kde.kernel
    h = float(math.sqrt(kde.bandwidth[0, 0]))
    x = np.ascontiguousarray(kde._x[:, 0], dtype=np.float64)
    w = np.ascontiguousarray(kde.weights, dtype=np.float64)
    reach = _REACH.get(kernel, 1.0)
    if extent is None:
        pos = x[w > 0]
        # A hair beyond the reach, so no extreme point sits on a compact support's edge
        # (where the value would be rounding noise).
        margin = reach * h * (1 + 1e-6)
        lo, hi = float(pos.min()) - margin, float(pos.max()) + margin
    else:
        (lo, hi), = _check_extent(extent, 1)
        lo, hi = float(lo), float(hi)
    delta = (hi - lo) / (m - 1)
    if not (delta > 0 and math.isfinite(delta)):
        raise ValueError(f"extent ({lo}, {hi}) with n_points={m} gives no usable spacing")
    if method == "auto":
        # The compact kernels' exact path is O(n + m) after an O(n) bucket sort, so only
        # the Gaussian is binned.
        method = "binned" if kernel == "gaussian" else "exact"
    if log and method == "binned" and kernel != "gaussian":
        # Their rigorous pointwise binning bound is not worth it: exact is as cheap.
        method = "exact"
    # Memory: outputs, plus the binned path's padded bins and FFT buffers (2 complex
    # arrays of the next power of two), or the exact Gaussian's lattice moments.
    pad = math.ceil(reach * h / delta) + 1
    if method == "binned":
        nfft = 1 << max(1, math.ceil(math.log2(m + 4 * pad + 2)))
        need = 8.0 * (4 * m + 3 * pad) + 32.0 * nfft
    else:
        centres = (m + 2 * 12 * h / delta) if kernel == "gaussian" else m
        need = 8.0 * 6 * m + 16.0 * x.size + 8.0 * 16 * centres * (1 + (os.cpu_count() or 1))
    _check_memory(need, m)
    log_norm = kde._log_norm + kde._log_det
    grid = lo + np.arange(m, dtype=np.float64) * delta
    if method == "exact":
        sums, log_sums = _core.kde_grid_exact_1d(x, w, kernel, h, lo, delta, m)
        if log:
            values = log_sums - log_norm
            errors = np.full(m, _EXACT_RTOL)
        else:
            values = sums * math.exp(-log_norm)
            errors = _EXACT_RTOL * values
        return GridResult(grid, values, float(errors.max()), errors, "exact", log, m)
    sums, err = _core.kde_grid_binned_1d(x, w, kernel, h, lo, delta, m)
    # FFT rounding puts a floor of a few ε·max S under every value.
    floor = 1e-14 * float(np.max(np.abs(sums)))
    if not log:
        scale = math.exp(-log_norm)
        values = np.maximum(sums, 0.0) * scale
        errors = (err + floor) * scale
        return GridResult(grid, values, float(errors.max()), errors, "binned", log, 0)
    # Rigorous pointwise bound for the Gaussian: the binning error is
    # (δ²/2)·Σ w t(1−t) K″ with |K″| ≤ (u² + 1)K/h² and Σ w (u² + 1) K = h²S″ + 2S, so
    # |error| ≤ (δ²/8)(S″ + 2S/h²); S″ from second differences, 1.5× for the O(δ³) terms.
    d2 = np.zeros(m)
    d2[1:-1] = sums[2:] - 2 * sums[1:-1] + sums[:-2]
    d2[0], d2[-1] = d2[1], d2[-2]
    bound = 1.5 * (np.abs(d2) + 2 * sums * (delta / h) ** 2) / 8 + floor
    with np.errstate(divide="ignore", invalid="ignore"):
        redo = ~(bound <= _LOG_RTOL * sums)
    values = np.empty(m)
    errors = np.empty(m)
    keep = ~redo
    values[keep] = np.log(sums[keep]) - log_norm
    errors[keep] = bound[keep] / sums[keep]  # relative error ≈ error in nats
    n_exact = int(redo.sum())
    if n_exact:
        _, log_sums = _core.kde_grid_exact_1d(x, w, kernel, h, lo, delta, m,
                                              np.ascontiguousarray(redo))
        values[redo] = log_sums[redo] - log_norm
        errors[redo] = _EXACT_RTOL
    return GridResult(grid, values, float(errors.max()), errors, "binned", log, n_exact)


def kde_grid(data, bandwidth="scott", kernel="gaussian", weights=None, *, n_points=4096,
             extent=None, method="auto", log=False, check_finite=True) -> GridResult:
    """Kernel density estimate of 1-D data on a regular grid.

    Equivalent to ``KDE(data, bandwidth, kernel, weights).grid(n_points, extent, method,
    log)``; the peers are KDEpy's ``FFTKDE(...).fit(data).evaluate(n_points)`` (binned)
    and ``scipy.stats.gaussian_kde(data)(grid)`` (exact, Gaussian only).

    Parameters
    ----------
    data, bandwidth, kernel, weights
        As for :class:`divest.KDE` (``bandwidth="isj"`` selects the Improved
        Sheather–Jones bandwidth, :func:`isj_bandwidth`).
    n_points : int
        Number of grid points (>= 2), both ends of ``extent`` included.
    extent : (low, high), optional
        The grid's end points. Default: the data's range widened by the kernel's reach
        (the support for compact kernels, 8.6 bandwidths for the Gaussian, 37 for the
        exponential), so the mass outside is below 1e-16. Any finite low < high is
        honoured, also one that leaves data outside: those points still contribute.
    method : {"auto", "binned", "exact"}
        * "binned": linear binning of the (weighted) data on the grid extended by the
          kernel's reach, then one convolution with the kernel sampled at the grid spacing
          δ (direct for short kernels, FFT otherwise). Its error is about
          (δ²/12)·|f″| per point; ``error`` estimates it from the output's second
          differences. Not for kernels with kinks ("tophat", "linear", "exponential").
        * "exact": the direct sum to about 1e-12 relative at every point: sliding-window
          moment sums over the sorted data for the compact kernels, one-sided recurrences
          for the exponential, and for the Gaussian a Taylor expansion about a lattice of
          centres spaced ≤ h/12 with a proven truncation bound (below 1e-17 per term;
          centres beyond 12 bandwidths, ≤ e^{−72} in total, are dropped and far-tail points
          are recomputed in log space so that the dropped terms stay below 1e-16 relative).
        * "auto": "binned" for the Gaussian, "exact" for the other kernels (their exact
          path costs O(n + m) after an O(n) bucket sort, so binning gains little).
    log : bool
        Return log-densities. They are accurate everywhere, far tails included: a binned
        Gaussian value is kept only where a rigorous bound on its relative binning error,
        (δ²/8)(|f″| + 2f/h²)/f, is below 1e-7 (≈ 1e-7 nats); every other point is
        recomputed exactly. The bound exceeds 1e-7 unless δ < 6e-4·h, so in practice
        ``log=True`` costs about as much as ``method="exact"``. Other kernels use the
        exact path.

    Returns
    -------
    GridResult
        ``grid``, ``values``, the error estimates ``error`` (max) and ``errors``
        (pointwise), the ``method`` used and ``n_exact``.

    Notes
    -----
    Memory: the binned path allocates the padded bins and two complex FFT buffers of the
    next power of two above m + 4·reach/δ (32 bytes each entry); the exact path sorts a
    copy of the data (16 bytes per point; not for the Gaussian unless tail points need
    it) and the Gaussian keeps about 14 moments per lattice centre per thread. A grid
    that would need more than half the machine's memory is refused with a ValueError
    saying how much it needs.
    """
    from .kde import KDE

    kde = KDE(data, bandwidth=bandwidth, kernel=kernel, weights=weights,
              check_finite=check_finite)
    return grid_of(kde, n_points=n_points, extent=extent, method=method, log=log)


def isj_bandwidth(x, weights=None, *, check_finite=True) -> float:
    """Improved Sheather–Jones bandwidth of 1-D data (Botev, Grotowski and Kroese 2010).

    The data are linearly binned onto 2^14 cells of [min − r/10, max + r/10] (r the
    data range), a DCT gives the cosine coefficients of the binned density, and the
    squared bandwidth solves the paper's ℓ = 7 stage plug-in fixed-point equation, with
    the effective sample size 1/Σw² (normalised weights) in place of n. The result is the
    Gaussian kernel's standard deviation in data units; it is scale-equivariant
    (``isj_bandwidth(a*x) == |a| * isj_bandwidth(x)``) because the interval scales with
    the data (KDEpy's ``improved_sheather_jones`` mixes the two scales and comes out too
    small; its issue 199). It aims at the AMISE-optimal Gaussian bandwidth without a
    normal reference, so it stays good for multimodal data where Silverman's rule
    oversmooths. Cost O(n + 2^14 log 2^14); memory O(2^14).

    Raises ValueError for fewer than 2 points, data with no spread, or when no fixed
    point exists (very few or heavily tied data).
    """
    a = as_points(x, "x", check_finite=check_finite)
    if a.shape[1] != 1:
        raise ValueError(
            f"isj_bandwidth needs 1-D data; got {a.shape[1]} dimensions (ISJ is a 1-D "
            "selector; use 'scott' or 'silverman' in higher dimensions)"
        )
    n = a.shape[0]
    if n < 2:
        raise ValueError("isj_bandwidth needs at least 2 data points")
    w = check_weights(weights, n)
    neff = float(1.0 / np.sum(w**2))
    xs = np.ascontiguousarray(a[:, 0], dtype=np.float64)
    return float(_core.isj_bandwidth_1d(xs, np.ascontiguousarray(w, dtype=np.float64), neff))
