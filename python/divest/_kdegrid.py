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

from . import _core, _kdeerr
from ._kdeplugin import _fft_size
from ._validate import as_float_array, as_points, check_bool, check_choice, check_int, check_weights
from .kde import KERNELS as _KERNELS
from .kde import log_kernel_norm

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
    grid : ndarray (m,), or a tuple of d such arrays for 2-D and 3-D data
        The grid points, ``extent[0] + i * spacing`` (per axis).
    values : ndarray (m,) or (m₁, m₂[, m₃]) (``indexing="ij"``)
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
    def spacing(self):
        """Distance between neighbouring grid points (a tuple per axis for d > 1)."""
        if isinstance(self.grid, tuple):
            return tuple(float(g[1] - g[0]) for g in self.grid)
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


def _check_args(kernel: str, d: int, n_points, method, log):
    """Validated (points per axis, method, log) for a grid of a d-dimensional estimate."""
    if d > 3:
        raise ValueError(
            f"grid needs data of dimension 1, 2 or 3 (a grid in {d} dimensions is too "
            "large to be useful); evaluate KDE.logpdf at chosen points instead"
        )
    method = check_choice(method, "method", _METHODS)
    log = bool(check_bool(log, "log"))
    pts = _check_n_points(n_points, d)
    if method == "binned" and kernel in _KINKED:
        raise ValueError(
            f"method='binned' cannot be accurate for kernel={kernel!r}: its profile has a "
            "kink (or a jump), which linear binning smears over a grid cell, so the error "
            "is first order in the spacing and the second-difference error estimate does "
            "not hold; use method='exact' (or 'auto')"
        )
    if d > 1 and method == "binned" and kernel != "gaussian":
        raise ValueError(
            f"method='binned' in {d}-D is only for kernel='gaussian': the "
            f"{kernel!r} profile's slope jumps at the support's edge, which linear "
            "binning smears and the error estimate misses there; use method='exact'"
        )
    return pts, method, log


def grid_of(kde, n_points=4096, extent=None, method="auto", log=False, rtol=None) -> GridResult:
    """Implementation of :meth:`divest.KDE.grid` (see :func:`kde_grid`)."""
    pts, method, log = _check_args(kde.kernel, kde.d, n_points, method, log)
    rtol = _check_rtol(rtol)
    if log and rtol is not None and rtol < _LOG_RTOL:
        method = "exact"  # kept binned log values are only guaranteed to 1e-7 nats
    if kde._scale != 1.0:
        raise ValueError(_SCALE_MSG)
    if kde.d > 1:

        def run(p, how=method):
            return _grid_nd(kde, p, extent, how, log)
    else:

        def run(p, how=method):
            return _grid_1d(kde, p[0], extent, how, log)

    return _refine(
        run,
        pts,
        rtol,
        _ORDER_ND if kde.d > 1 else _ORDER_1D,
        auto=method == "auto",
        n=lambda: int(np.count_nonzero(kde.weights > 0)),
        hsd=np.sqrt(np.diag(kde.bandwidth)),
    )


#: Largest refinement of the grid spacing ``rtol`` may ask for, per axis.
_MAX_REFINE = 64
#: How the binned error estimate scales with the spacing δ: δ² in 1-D (plain linear
#: binning), δ³ in 2-D/3-D (moment-corrected binning: the leading terms left are of
#: order δ³ and δ⁴, so δ³ is the safe exponent for choosing the refinement).
_ORDER_1D = 2
_ORDER_ND = 3


def _check_rtol(rtol):
    if rtol is None:
        return None
    if isinstance(rtol, (bool, np.bool_)) or not isinstance(
        rtol, (float, int, np.floating, np.integer)
    ):
        raise TypeError(f"rtol must be None or a positive number; got {type(rtol).__name__}")
    r = float(rtol)
    if not (math.isfinite(r) and r > 0):
        raise ValueError(f"rtol must be positive and finite; got {rtol!r}")
    if r < _EXACT_RTOL:
        raise ValueError(
            f"rtol={rtol!r} is below the exact path's accuracy ({_EXACT_RTOL:g} relative); "
            f"use rtol >= {_EXACT_RTOL:g}"
        )
    return r


#: ``method="auto"`` without ``rtol``: a binned result whose error estimate exceeds this
#: fraction of the peak (a grid coarse against the bandwidth, where binning is
#: meaningless) is refined or replaced by the exact sums, whichever is predicted cheaper.
_AUTO_RTOL = 1e-4
#: Largest lattice (cells) the automatic refinement may bin on.
_AUTO_MAX_CELLS = 1 << 23
#: Predicted costs (seconds, measured on 2 cores) of one kernel term of the exact sums,
#: of one cell of a binned lattice padded by the kernel's reach (binning share,
#: convolution, error fields; per dimension 1 to 3) and of binning one point.
_EXACT_TERM_S = 1.5e-9
_BINNED_CELL_S = (3e-8, 1.2e-7, 7e-7)
_BINNED_POINT_S = 3e-9


def _refine(run, pts, rtol, order, auto=False, n=None, hsd=None) -> GridResult:
    """``run(points per axis)`` on the requested grid; with ``rtol``, binned results are
    recomputed on grids r times finer (same extent; r from the estimate's δ^order
    scaling) until the estimated error is below rtol·max f̂, and sampled back every r-th
    point (the coordinates returned are the requested grid's own).

    ``auto`` (``method="auto"`` and no ``rtol``; ``run(points, "exact")`` must then give
    the exact sums, ``n()`` give the number of data points and ``hsd`` the kernel's standard
    deviation per axis): a binned result whose
    estimate exceeds ``_AUTO_RTOL``·max f̂ is refined the same way while the refined
    lattice stays small and cheaper than the exact sums, else recomputed exactly (or
    returned with its estimate when even that would take far too long)."""
    res = run(pts)
    if res.method == "exact" or (rtol is None and not auto):
        return res
    if rtol is None:
        if _meets(res, _AUTO_RTOL):
            return res
        n = n()  # a pass over the weights: only where the guard is needed
        exact_s = _EXACT_TERM_S * n * math.prod(pts)
        out = _refine_loop(run, pts, res, _AUTO_RTOL, order, exact_s, n, hsd)
        if out is not None:
            return out
        # The exact sums: at most about a minute's work, else the binned values with
        # their (large) error estimate, as method="binned" would return them.
        return run(pts, "exact") if exact_s <= 60.0 else res
    out = _refine_loop(run, pts, res, rtol, order, None)
    assert out is not None
    return out


def _meets(res, tol) -> bool:
    """Whether ``res``'s estimate is below tol·max f̂ (tol nats under ``log``)."""
    if res.log:
        return res.error <= tol
    return res.error <= tol * float(np.max(res.values))


def _refine_loop(run, pts, res, rtol, order, exact_s, n=0, hsd=None):
    """The refinement of :func:`_refine`. ``exact_s`` None: the user's ``rtol`` (too much
    refinement raises ValueError). Else the automatic guard: None when the next
    refinement would exceed ``_AUTO_MAX_CELLS`` or cost more than ``exact_s`` (``n`` data
    points)."""
    grid0 = res.grid
    r = 1
    for _ in range(6):
        peak = float(np.max(np.exp(res.values))) if res.log else float(np.max(res.values))
        # log=True: errors are in nats (relative), so compare them with rtol directly.
        if _meets(res, rtol):
            break
        ratio = res.error / (rtol if res.log else rtol * max(peak, 1e-300))
        r_new = max(2 * r, math.ceil(r * ratio ** (1.0 / order) * 1.02))
        if exact_s is not None:
            # Where δ is wider than the kernel the estimate (an expansion in δ/h) is far
            # too large; a spacing of 0.25 kernel standard deviations is accurate to
            # about 1e-4 of the peak or better, so refine at most to that first.
            axes = grid0 if isinstance(grid0, (tuple, list)) else (grid0,)
            spacing = np.array([float(g[1] - g[0]) for g in axes])
            sd = np.asarray(hsd, dtype=np.float64)
            r_geo = math.ceil(float(np.max(spacing / (0.25 * sd))))
            r_new = max(2 * r, min(r_new, r_geo))
            # The refined lattice with the kernel's reach (8.6 sd) on both sides.
            pad = np.ceil(8.6 * sd * r_new / spacing)
            cells = float(np.prod([(p - 1) * r_new + 1 for p in pts] + 2 * pad))
            binned_s = _BINNED_CELL_S[len(pts) - 1] * cells + _BINNED_POINT_S * n
            if r_new > _MAX_REFINE or cells > _AUTO_MAX_CELLS or binned_s > exact_s:
                return None
        elif r_new > _MAX_REFINE:
            raise ValueError(
                f"rtol={rtol!r} would need the grid spacing refined {r_new}x (more than "
                f"{_MAX_REFINE}x; the binned estimate is {res.error:.3g} against a peak of "
                f"{peak:.3g}); use method='exact', a larger rtol or more n_points"
            )
        r = r_new
        res = run([(p - 1) * r + 1 for p in pts])
    else:  # pragma: no cover - the δ² scaling reaches any rtol in a few steps
        if exact_s is not None:
            return None
        raise ValueError(f"rtol={rtol!r} was not reached; use method='exact'")
    if r == 1:
        return res
    sl = tuple(slice(None, None, r) for _ in pts)
    values = np.ascontiguousarray(res.values[sl])
    errors = np.ascontiguousarray(res.errors[sl])
    n_exact = int(res.n_exact and np.count_nonzero(errors == _EXACT_RTOL))
    return GridResult(grid0, values, float(errors.max()), errors, res.method, res.log, n_exact)


_SCALE_MSG = (
    "grid needs data whose magnitudes lie between 2^-400 and 2^400 (about 1e-120 "
    "to 1e120); these data are outside. Rescale the data by a power of two s first "
    "(the density of x / s on grid / s is s^d times that of x on grid)"
)


def _data_range_1d(kde, x, w) -> tuple[float, float, bool]:
    """(min, max) of the positively weighted data and whether all weights are equal,
    computed once per KDE object by one pass over the data and the weights."""
    cached = getattr(kde, "_grid_range", None)
    if cached is None:
        st = _core.kde_stats_1d(x, w, 1.0, False)
        wmin, wmax = float(w.min()), float(w.max())
        cached = (st[2], st[3], wmin == wmax)
        kde._grid_range = cached
    return cached


def _grid_1d(kde, m: int, extent, method: str, log: bool) -> GridResult:
    x = np.ascontiguousarray(kde._x[:, 0], dtype=np.float64)
    w = np.ascontiguousarray(kde.weights, dtype=np.float64)
    lo, hi, uniform = _data_range_1d(kde, x, w)
    h = float(math.sqrt(kde.bandwidth[0, 0]))
    log_norm = kde._log_norm + kde._log_det
    return _grid_1d_arrays(
        x, None if uniform else w, kde.kernel, h, log_norm, (lo, hi), m, extent, method, log
    )


def _grid_1d_arrays(
    x, w, kernel: str, h: float, log_norm: float, data_range, m: int, extent, method, log
) -> GridResult:
    """The 1-D grid from the data ``x``, normalised weights ``w`` (None: all 1/n), the
    kernel's standard deviation ``h`` and the range of the positively weighted data."""
    reach = _REACH.get(kernel, 1.0)
    if extent is None:
        lo, hi = data_range
        # A hair beyond the reach, so no extreme point sits on a compact support's edge
        # (where the value would be rounding noise).
        margin = reach * h * (1 + 1e-6)
        lo, hi = lo - margin, hi + margin
    else:
        ((lo, hi),) = _check_extent(extent, 1)
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
        need = 8.0 * (6 * m + 5 * pad) + 32.0 * nfft
        if kernel == "gaussian":
            # The fused pass: 32 values per bin per thread (four copies of a 64-byte
            # accumulator) and 5 per bin.
            need += 8.0 * (m + 2 * pad) * (5 + 32 * (os.cpu_count() or 1))
    else:
        # The Gaussian's centre spacing lies in [h/24, h/12] whatever δ is.
        centres = ((m - 1) * delta + 26 * h) / (h / 24) + 4 if kernel == "gaussian" else m
        need = 8.0 * 6 * m + 16.0 * x.size + 8.0 * 16 * centres * (1 + (os.cpu_count() or 1))
    _check_memory(need, m)
    grid = lo + np.arange(m, dtype=np.float64) * delta
    if method == "exact" or (log and m > 0):
        wfull = w if w is not None else np.full(x.size, 1.0 / x.size)
    if method == "exact":
        sums, log_sums = _core.kde_grid_exact_1d(x, wfull, kernel, h, lo, delta, m)
        if log:
            values = log_sums - log_norm
            errors = np.full(m, _EXACT_RTOL)
        else:
            values = sums * math.exp(-log_norm)
            errors = _EXACT_RTOL * values
        return GridResult(grid, values, float(errors.max()), errors, "exact", log, m)
    # For the Gaussian, ``err`` is the leading binning error from the data's own
    # fractional positions (divest/_kdeerr.py; second differences of the output miss it
    # on rounded and lattice data: 12x too small, or 1e9x too large when the data sit on
    # the nodes). Its fields are summed in the binning pass itself and convolved in Rust
    # (src/core/kdegrid/fused.rs and errfield.rs `line1_error`).
    sums, err = _core.kde_grid_binned_1d(x, w, kernel, h, lo, delta, m)
    # FFT rounding puts a floor of a few ε·max S under every value.
    floor = 1e-14 * float(np.max(np.abs(sums)))
    if not log:
        scale = math.exp(-log_norm)
        values = np.maximum(sums, 0.0)
        values *= scale
        errors = err
        errors += floor
        errors *= scale
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
        _, log_sums = _core.kde_grid_exact_1d(
            x, wfull, kernel, h, lo, delta, m, np.ascontiguousarray(redo)
        )
        values[redo] = log_sums[redo] - log_norm
        errors[redo] = _EXACT_RTOL
    return GridResult(grid, values, float(errors.max()), errors, "binned", log, n_exact)


def _one_shot_1d(data, bandwidth, kernel, weights, n_points, extent, method, log, rtol):
    """:func:`kde_grid` for 1-D float64 data without building a :class:`KDE`: one pass
    over the data (range, weighted mean and spread, finiteness) replaces the KDE's
    validation copies, whitening and log-weights. Returns None whenever anything is
    unusual (the general path then runs and raises the proper error)."""
    try:
        data = as_float_array(data, "data", check_finite=False)
    except (TypeError, ValueError):
        return None
    if not (data.ndim == 1 or (data.ndim == 2 and data.shape[1] == 1)) or data.size < 2:
        return None
    if not (isinstance(kernel, str) and kernel in _KERNELS):
        return None
    rule = None
    if isinstance(bandwidth, str):
        if bandwidth not in ("scott", "silverman", "isj"):
            return None
        rule = bandwidth
    elif isinstance(bandwidth, (float, int, np.floating, np.integer)) and not isinstance(
        bandwidth, (bool, np.bool_)
    ):
        h = float(bandwidth)
        if not (math.isfinite(h) and h > 0):
            return None
    else:
        return None
    pts, method, log = _check_args(kernel, 1, n_points, method, log)
    rtol = _check_rtol(rtol)
    if log and rtol is not None and rtol < _LOG_RTOL:
        method = "exact"
    x = np.ascontiguousarray(data.reshape(-1), dtype=np.float64)
    n = x.size
    w = None if weights is None else check_weights(weights, n)
    st = _core.kde_stats_1d(x, w, 1.0 / n, rule in ("scott", "silverman"))
    mn, mx, lo, hi, sw, _mean, m2, sw2, npos, ok = st
    top = max(abs(mn), abs(mx))
    if not ok or top > 2.0**400 or 0.0 < top < 2.0**-400 or not sw > 0:
        return None
    neff = 1.0 / sw2
    if rule == "isj":
        if npos < 2 or not hi > lo:
            return None
        got = _core.isj_bandwidth_1d_info(x, w, float(n) if w is None else neff)
        h = float(got[0])
        if got[3]:  # point masses left out (isj_bandwidth's warning)
            _warn_atoms(got[3], got[4])
    elif rule is not None:
        if npos < 2:
            return None
        var = m2 / (sw - sw2 / sw)
        if not (var > 0 and math.isfinite(var)):
            return None
        factor = neff ** (-0.2) if rule == "scott" else (neff * 0.75) ** (-0.2)
        h = math.sqrt(var) * factor
    if not (h > 0 and math.isfinite(h)) or not abs(mx - mn) / h < 1e300:
        return None
    log_norm = log_kernel_norm(kernel, 1) + math.log(h)
    return _refine(
        lambda p, how=method: _grid_1d_arrays(
            x, w, kernel, h, log_norm, (lo, hi), p[0], extent, how, log
        ),
        pts,
        rtol,
        _ORDER_1D,
        auto=method == "auto",
        n=lambda: int(npos),
        hsd=np.array([h]),
    )


def _data_range_nd(kde, x, w):
    """(min, max) per axis of the positively weighted data and whether all weights are
    equal, computed once per KDE object (no masked copy when every weight is positive)."""
    cached = getattr(kde, "_grid_range", None)
    if cached is None:
        wmin, wmax = float(w.min()), float(w.max())
        pos = x if wmin > 0 else x[w > 0]
        cached = (pos.min(0), pos.max(0), wmin == wmax)
        kde._grid_range = cached
    return cached


def _grid_nd_separable(kde, x, w, ext, m, delta, hsd) -> GridResult:
    """Binned Gaussian with a diagonal bandwidth in 2-D/3-D, all in Rust (moment-corrected
    binning, one direct 1-D convolution per axis computed only at the grid points)."""
    d = kde.d
    reach = np.ceil(7.0 * hsd / delta) + 1
    nb = m + 2 * reach
    cells = float(np.prod(nb, dtype=np.float64))
    # The padded lattice (2 more nodes per axis), the sorted copy of at most 2^21 points
    # (d values and the weight each), the corrected bins, two pass arrays and the outputs.
    acc = float(np.prod(nb + 2, dtype=np.float64))
    srt = float(min(x.shape[0], 1 << 21)) * (d + 1)
    need = 8.0 * (acc + srt + 3 * cells + 2 * float(np.prod(m)))
    _check_memory(need, tuple(int(v) for v in m))
    _, _, uniform = _data_range_nd(kde, x, w)
    prec = np.diag(1.0 / hsd**2)
    # The error fields (below) are binned in the binning pass itself where it can.
    sums, fields = _core.kde_grid_binned_nd_fields(
        np.ascontiguousarray(x),
        None if uniform else np.ascontiguousarray(w),
        [float(v) for v in ext[:, 0]],
        [float(v) for v in delta],
        [int(v) for v in m],
        [float(v) for v in hsd],
        *_kdeerr.field_lattice(ext[:, 0], delta, m, prec),
    )
    shape = tuple(int(v) for v in m)
    axes = tuple(ext[a, 0] + np.arange(m[a], dtype=np.float64) * delta[a] for a in range(d))
    scale = math.exp(-(kde._log_norm + kde._log_det))
    # The leading binning error from the data's own fractional positions (divest/_kdeerr.py;
    # differences of the output miss it on rounded and lattice data), plus rounding and the
    # kernel's truncation at 7 standard deviations (e^{−24.5} of Σw = 1); in Rust, which
    # also turns the sums into the values max(sums, 0)·scale in place.
    errors, peak = _kdeerr.grid_error_diag(
        sums, fields, True, ext[:, 0], delta, m, prec, scale, 1e-14, math.exp(-24.5)
    )
    values = sums.reshape(shape)
    return GridResult(axes, values, peak, errors, "binned", False, 0)


def _conv_fft(kde, bins, lk, pad, m, delta):
    """The binned sums at the grid points (pad + i per axis of ``bins``) with the kernel
    sampled on the offset box |o_a| ≤ lk_a·δ_a (unnormalised): one d-dimensional FFT
    convolution. The full-bandwidth grids' general path, and the tests' oracle for the
    2-D passes of ``_core.kde_grid_conv_full``."""
    d = bins.ndim
    kernel = kde.kernel
    # Full bandwidth: the kernel sampled on the offset box, through the whitening L⁻¹
    # (Mahalanobis r), and one d-dimensional FFT convolution.
    offs = np.meshgrid(*[np.arange(-lk[a], lk[a] + 1) * delta[a] for a in range(d)], indexing="ij")
    z = np.stack([o.ravel() for o in offs], axis=1) @ kde._chol_inv.T
    r = np.sqrt(np.sum(z * z, axis=1))
    if kernel == "gaussian":
        kv = np.exp(-0.5 * r * r)
    elif kernel == "epanechnikov":
        kv = np.where(r < 1, 1 - r * r, 0.0)
    else:
        kv = np.where(r < 1, np.cos(0.5 * np.pi * r), 0.0)
    kv = kv.reshape(offs[0].shape)
    full = [bins.shape[a] + kv.shape[a] - 1 for a in range(d)]
    # 2^a·{1, 3, 5, 9, 15, ...} sizes: pocketfft is fast on them, and they pad far less
    # than the next power of two.
    nfft = [_fft_size(max(v, 2)) for v in full]
    ax = tuple(range(d))
    out = np.fft.irfftn(
        np.fft.rfftn(bins, nfft, axes=ax) * np.fft.rfftn(kv, nfft, axes=ax), nfft, axes=ax
    )
    # Grid point i sits at bin pad + i; the kernel centre is offset lk.
    sl = tuple(slice(int(pad[a] + lk[a]), int(pad[a] + lk[a] + m[a])) for a in range(d))
    return np.ascontiguousarray(out[sl])


def _grid_nd(kde, pts, extent, method: str, log: bool) -> GridResult:
    """2-D and 3-D grids: binned (linear binning on the 2^d corners, then separable 1-D
    FFT passes for a Gaussian with a diagonal bandwidth, else one d-dimensional FFT
    convolution with the kernel sampled on the grid's offsets), or exact (the direct sums
    of :meth:`KDE.pdf` / :meth:`KDE.logpdf` at the mesh points)."""
    d = kde.d
    kernel = kde.kernel
    x = np.asarray(kde._x, dtype=np.float64)
    w = np.asarray(kde.weights, dtype=np.float64)
    hsd = np.sqrt(np.diag(kde.bandwidth))  # the kernel's reach per axis, in bandwidths
    reach = _REACH.get(kernel, 1.0) * hsd
    if extent is None:
        pmin, pmax, _ = _data_range_nd(kde, x, w)
        ext = np.stack([pmin - reach * (1 + 1e-6), pmax + reach * (1 + 1e-6)], 1)
    else:
        ext = _check_extent(extent, d)
    m = np.array(pts)
    delta = (ext[:, 1] - ext[:, 0]) / (m - 1)
    if not np.all((delta > 0) & np.isfinite(delta)):
        raise ValueError(f"extent {extent!r} with n_points={pts!r} gives no usable spacing")
    if method == "auto":
        method = "binned" if kernel == "gaussian" else "exact"
    if log:
        method = "exact"
    hmat = kde.bandwidth
    diagonal = np.count_nonzero(hmat - np.diag(np.diag(hmat))) == 0
    if method == "binned" and kernel == "gaussian" and diagonal:
        return _grid_nd_separable(kde, x, w, ext, m, delta, hsd)
    lk = np.ceil(reach / delta).astype(np.int64)
    pad = lk + 1
    nb = m + 2 * pad
    if method == "binned":
        cells = float(np.prod(nb + 2 * lk + 2, dtype=np.float64))
        acc = float(np.prod(nb + 2, dtype=np.float64)) + float(min(x.shape[0], 1 << 21)) * (d + 1)
        need = 8.0 * (float(np.prod(m, dtype=np.float64)) * 3 + 4 * cells + acc)
    else:
        need = 8.0 * float(np.prod(m, dtype=np.float64)) * (d + 3)
    _check_memory(need, pts)
    axes = tuple(ext[a, 0] + np.arange(m[a], dtype=np.float64) * delta[a] for a in range(d))
    log_norm = kde._log_norm + kde._log_det
    shape = tuple(int(v) for v in m)
    if method == "exact":
        mesh = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)
        if log:
            values = kde.logpdf(mesh).reshape(shape)
            errors = np.full(shape, _EXACT_RTOL)
        else:
            values = kde.pdf(mesh).reshape(shape)
            errors = _EXACT_RTOL * values
        return GridResult(axes, values, float(errors.max()), errors, "exact", log, int(values.size))
    # Moment-corrected linear binning onto the padded lattice (each point's weight over
    # the 2^d corners of its cell, less ½·Δ² of its spread per axis; divest/_kdegrid.py's
    # separable path and src/core/kdegrid/nd.rs explain it); points beyond the padding
    # are out of the kernel's reach.
    lo_b = ext[:, 0] - pad * delta
    _, _, uniform = _data_range_nd(kde, x, w)
    # The Gaussian's error fields (below) are binned in the binning pass itself where it
    # can, with the inverse kernel covariance Σ⁻¹ = L⁻ᵀL⁻¹.
    # (Written out: a BLAS product would wake OpenBLAS's threads, which then spin on the
    # cores divest's own threads need.)
    prec = np.einsum("ki,kj->ij", kde._chol_inv, kde._chol_inv)
    args = (
        np.ascontiguousarray(x),
        None if uniform else np.ascontiguousarray(w),
        1.0 / x.shape[0],
        [float(v) for v in lo_b],
        [float(v) for v in delta],
        [int(v) for v in nb],
    )
    if kernel == "gaussian":
        fl = _kdeerr.field_lattice(ext[:, 0], delta, m, prec)
        bins, stats, fields = _core.kde_bin_corrected_nd_fields(*args, *fl)
    else:
        bins, stats = _core.kde_bin_corrected_nd(*args)
    bins = bins.reshape(tuple(int(v) for v in nb))
    sums = None
    if kernel == "gaussian" and d == 2:
        # Four (or three) 1-D passes along lattice directions (src/core/kdegrid/
        # fullconv.rs), at the grid points only; None when no split of the lattice
        # covariance S = (D·Σ⁻¹·D)⁻¹ (D = diag δ) is accurate enough.
        pl = prec * np.outer(delta, delta)
        det = pl[0, 0] * pl[1, 1] - pl[0, 1] * pl[1, 0]
        cov = [float(pl[1, 1] / det), float(-pl[0, 1] / det), float(pl[0, 0] / det)]
        got = _core.kde_grid_conv_full(
            bins.reshape(-1), [int(v) for v in nb], [int(v) for v in m], [int(v) for v in pad], cov
        )
        if got is not None:
            sums = got.reshape(shape)
    if sums is None:
        sums = _conv_fft(kde, bins, lk, pad, m, delta)
    scale = math.exp(-log_norm)
    # FFT rounding (a few ε of the largest sum) plus the kernel's truncation (K(8.6) ≈
    # 9e-17 of the total weight); then the error estimate of the corrected binning, with
    # the diagonal of the inverse kernel covariance (whitening: Σ⁻¹ = L⁻ᵀL⁻¹).
    if kernel == "gaussian" and d == 2:
        # The leading binning error in Rust (separable splits of the derivative kernels),
        # which also turns the sums into the values in place; None when the splits would
        # cost more than the FFT below.
        got = _kdeerr.grid_error_full(
            sums.reshape(-1), fields, ext[:, 0], delta, m, prec, scale, 1e-14, 1e-16
        )
        if got is not None:
            errors, peak = got
            return GridResult(axes, sums, peak, errors, "binned", log, 0)
    floor = 1e-14 * float(np.max(np.abs(sums))) + 1e-16
    if kernel == "gaussian":
        # The leading binning error from the data's own fractional positions
        # (divest/_kdeerr.py).
        errors = _kdeerr.binning_error(
            np.ascontiguousarray(x),
            None if uniform else np.ascontiguousarray(w),
            1.0 / x.shape[0],
            True,
            ext[:, 0],
            delta,
            m,
            prec,
            fields,
        )
        errors += floor
        errors *= scale
    else:
        hinv = np.sum(kde._chol_inv * kde._chol_inv, axis=0)
        err = _core.kde_grid_error_nd(
            sums.ravel(),
            [int(v) for v in m],
            [float(v) for v in delta],
            [float(v) for v in hinv],
            list(stats),
            floor,
        )
        errors = err.reshape(shape) * scale
    values = np.maximum(sums, 0.0) * scale
    return GridResult(axes, values, float(errors.max()), errors, "binned", log, 0)


def kde_grid(
    data,
    bandwidth="scott",
    kernel="gaussian",
    weights=None,
    *,
    n_points=4096,
    extent=None,
    method="auto",
    log=False,
    rtol=None,
    check_finite=True,
    bounds=None,
    boundary="reflect",
) -> GridResult:
    """Kernel density estimate of 1-, 2- or 3-D data on a regular grid.

    Equivalent to ``KDE(data, bandwidth, kernel, weights).grid(n_points, extent, method,
    log)``; the peers are KDEpy's ``FFTKDE(...).fit(data).evaluate(n_points)`` (binned)
    and ``scipy.stats.gaussian_kde(data)(grid)`` (exact, Gaussian only).

    Parameters
    ----------
    data, bandwidth, kernel, weights
        As for :class:`divest.KDE` (``bandwidth="isj"`` selects the Improved
        Sheather–Jones bandwidth, :func:`isj_bandwidth`; ``"plugin"`` and ``"scv"`` a
        full bandwidth matrix by plug-in or smoothed cross-validation with unconstrained
        pilots, 1-D to 3-D). For 1-D float64 data with a number, "scott",
        "silverman" or "isj", no :class:`KDE` is built: one pass over the data gives
        the rule's bandwidth and the range (the same bandwidth to about 1e-15).
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
          (δ²/12)·|f″| per point; ``error`` gives it from the data's own fractional
          positions for the Gaussian (see the 2-D/3-D notes below) and from the output's
          second differences otherwise. Not for kernels with kinks ("tophat", "linear", "exponential").
        * "exact": the direct sum to about 1e-12 relative at every point: sliding-window
          moment sums over the sorted data for the compact kernels, one-sided recurrences
          for the exponential, and for the Gaussian a Taylor expansion about a lattice of
          centres spaced ≤ h/12 with a proven truncation bound (below 1e-17 per term;
          centres beyond 12 bandwidths, ≤ e^{−72} in total, are dropped and far-tail points
          are recomputed in log space so that the dropped terms stay below 1e-16 relative).
        * "auto": "binned" for the Gaussian, "exact" for the other kernels (their exact
          path costs O(n + m) after an O(n) bucket sort, so binning gains little). A
          binned result whose error estimate exceeds 1e-4 of the peak (a grid coarse
          against the bandwidth, e.g. 64 points over data spanning 60 bandwidths, where
          plain binning would be off by 20 % or more) is recomputed on a grid r times
          finer (r from the estimate and a spacing of at most 0.25 kernel standard
          deviations, lattice at most 2²³ cells) and sampled back, or, where the direct
          sums are predicted cheaper (about n·m kernel terms at 1.5 ns), exactly. So
          "auto" never returns a binned estimate worse than 1e-4 of the peak, unless the
          exact sums would take over a minute; ``method="binned"`` keeps the requested
          grid as it is and reports its estimate.
    rtol : float, optional
        Target for the estimated error relative to the peak: binned values are recomputed
        on grids r times finer (same extent; r chosen from the δ² scaling of the error,
        at most 64) until ``error <= rtol * values.max()`` (``error <= rtol`` nats with
        ``log=True``), then sampled at the requested points. Exact results already meet
        any rtol ≥ 1e-12; a smaller rtol is refused, and one that would need more than a
        64× refinement raises a ValueError suggesting ``method="exact"``.
    log : bool
        Return log-densities. They are accurate everywhere, far tails included: a binned
        Gaussian value is kept only where a rigorous bound on its relative binning error,
        (δ²/8)(|f″| + 2f/h²)/f, is below 1e-7 (≈ 1e-7 nats); every other point is
        recomputed exactly. The bound exceeds 1e-7 unless δ < 6e-4·h, so in practice
        ``log=True`` costs about as much as ``method="exact"``. Other kernels use the
        exact path.

    In 2-D and 3-D (``n_points`` an int or one size per axis, ``extent`` one (low, high)
    per axis): "binned" is for the Gaussian kernel only. It bins with a moment
    correction: besides the multilinear corner weights, each cell sums w·t_a(1 − t_a) per
    axis (t_a the fractional position) and ½·Δ²_a of it is subtracted from the bins, which
    removes linear binning's (δ²/2)·t(1 − t)·f″ error for any data (rounded or lattice
    data included) at no extra convolution cost; the error left is of order δ³ and δ⁴.
    With a diagonal bandwidth it runs in Rust: one direct 1-D convolution per axis
    (kernel truncated at 7 standard deviations, every dropped term below 2.3e-11 of its
    weight) evaluated only at the grid points (no padded d-dimensional FFT); with a full
    bandwidth one d-dimensional FFT convolution with the kernel sampled on the grid
    offsets. Its error estimate (Gaussian kernel, 1-D to 3-D) is the leading binning
    error term itself, computed from the data: each point's own fractional positions
    give its error weight (t(1 − t) and t(1 − t)(1 − 2t) in 1-D; (2u + u²), u = t(1 − t),
    per axis and u_a·u_b per pair of axes in 2-D/3-D), binned on a lattice about half a
    kernel standard deviation apart and convolved with the matching kernel derivatives
    (an extra pass over the data, about a third of the binning's cost). Differences of
    the output would assume the fractional positions are spread evenly and independently
    of where the points are; rounded and lattice data break that (the data's lattice
    aliases with the grid) and made them up to 12x too small, or far too large when the
    data sit on the nodes. The estimate is within 2x of the true error on continuous,
    rounded, lattice, weighted, full-matrix and 3-D data (tests); the next order of the
    expansion is smaller by about (δ/h)². ``rtol`` refines with the δ³ scaling. "exact" (and ``log=True``) evaluates
    :meth:`KDE.pdf` / :meth:`KDE.logpdf` at the mesh points (direct sums, O(n·m), memory
    O(m·d) for the mesh). The binned peer is KDEpy's ``FFTKDE`` in 2-D.

    Returns
    -------
    GridResult
        ``grid``, ``values``, the error estimates ``error`` (max) and ``errors``
        (pointwise), the ``method`` used and ``n_exact``.

    Notes
    -----
    Memory: the 1-D binned path allocates the padded bins (two values per bin per
    thread while binning; the Gaussian's pass, which also sums its error fields, 256
    bytes per bin per thread plus 9 values per bin) and two complex FFT buffers of the next power of two above
    m + 4·reach/δ (32 bytes each entry); the exact path for the epanechnikov, linear and
    cosine kernels keeps 9 moments per grid cell per thread when δ ≤ h (no copy of the
    data), otherwise it sorts a copy of the data (16 bytes per point; for the Gaussian
    only when tail points need it), and the Gaussian keeps about 14 moments per lattice
    centre per thread. 2-D/3-D binned with a diagonal bandwidth: the padded lattice
    (per thread while binning) and two arrays of at most its size for the axis passes,
    plus the error estimate's coarse fields and pass arrays (a few values per coarse node,
    about a quarter of the grid's size per field) and the errors (one value per point);
    ``rtol`` multiplies the grid by r per axis. A grid that would need more than half
    the machine's memory is refused with a ValueError saying how much it needs.

    ``bounds`` and ``boundary`` are as for :class:`divest.KDE`: the grid of a bounded
    estimate sums the unbounded grids on the images of the grid (each again a regular
    grid of the same spacing), so every method keeps its accuracy; points outside the
    bounds are 0 (-inf under ``log``), and the default extent stops at the bounds.
    With ``rtol`` the folded grid is refined until its own error estimate (which
    includes the images' curvature) is below rtol·max f̂.
    """
    from .kde import KDE

    if bounds is None:
        fast = _one_shot_1d(data, bandwidth, kernel, weights, n_points, extent, method, log, rtol)
        if fast is not None:
            return fast
    kde = KDE(
        data,
        bandwidth=bandwidth,
        kernel=kernel,
        weights=weights,
        check_finite=check_finite,
        bounds=bounds,
        boundary=boundary,
    )
    if kde._fold is not None:  # bounds (issue 11): the folded grid, divest._kdebounds
        return kde.grid(n_points=n_points, extent=extent, method=method, log=log, rtol=rtol)
    return grid_of(kde, n_points=n_points, extent=extent, method=method, log=log, rtol=rtol)


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

    Rounded or lattice data (measurements to 0.01, ages in years, prices in cents) are
    detected by their ties: a strided sample of at most 4096 points (of positive weight)
    in which at least one adjacent pair in 256 (and at least 2) are equal. The resolution
    Δ is then the smallest positive gap between the sample's distinct values, and each
    value is treated as a point spread uniformly over its cell [v − Δ/2, v + Δ/2]: the
    selector runs on the expected squared cosine coefficients of the data so jittered
    (the box's transform sinc² damps the lattice's comb, and the flat noise level of a
    continuous sample fills in what it removes). Without this the 2^14 cells resolve the
    lattice into spikes and the fixed point lands at their width (bandwidths of 1e-20 and
    below). For Δ well below the bandwidth the result is within a few percent of the
    unrounded data's; for coarse data (integers with a few values) it is the bandwidth
    of the data spread over their cells, which may be below Δ, so that a KDE of the
    rounded values shows the lattice (pass a number of about Δ or more for a smooth
    curve). Data mixing a lattice with continuous values (a part rounded) are
    recognised (the sample's smallest gap is then far below a lattice's, or the root
    falls to the cells' scale): one sort of the data finds the repeated values; four or
    more on one lattice make the values on it the rounded part (spread over their
    cells), the others stay as they are. Values repeated far more often than a
    continuous density allows and off any lattice (exact zeros among continuous values,
    a limit values are censored at) are point masses: a density with an atom has no
    finite optimal bandwidth, so they are left out, the result is the ISJ bandwidth of
    the other values (with their own effective sample size) and a RuntimeWarning names
    them (each still shows as a bump of that width in a KDE). Data without enough ties (continuous data, float32 data cast to float64) give exactly
    the bandwidth of earlier versions. The detection costs one strided pass of 4096
    reads and a small hash table (a sort of 4096 values when ties are found).

    Raises ValueError for fewer than 2 points, data with no spread, data with only 2
    distinct values or mostly point masses ("too discrete"), or when no fixed point
    exists (very few data). The mixed-data path sorts a copy of the data (O(n) memory).
    """
    # Finiteness is checked in the Rust pass; the Python check only words the error.
    a = as_points(x, "x", check_finite=False)
    if a.shape[1] != 1:
        raise ValueError(
            f"isj_bandwidth needs 1-D data; got {a.shape[1]} dimensions (ISJ is a 1-D "
            "selector; use 'scott' or 'silverman' in higher dimensions)"
        )
    n = a.shape[0]
    if n < 2:
        raise ValueError(f"x must have at least 2 data points for isj_bandwidth; got {n}")
    if weights is None:
        w, neff = None, float(n)
    else:
        w = np.ascontiguousarray(check_weights(weights, n), dtype=np.float64)
        neff = float(1.0 / np.dot(w, w))
    xs = np.ascontiguousarray(a[:, 0], dtype=np.float64)
    try:
        h, _, _, atoms, mass = _core.isj_bandwidth_1d_info(xs, w, neff)
    except ValueError as e:
        if check_finite:
            as_points(x, "x", check_finite=True)  # the standard message for NaN / inf
        if "distinct values" in str(e) or "point masses" in str(e):  # name the argument
            raise ValueError(f"x is too discrete for isj_bandwidth: {e}") from None
        raise
    if atoms:
        _warn_atoms(atoms, mass)
    return float(h)


def _warn_atoms(atoms, mass) -> None:
    """Warn that ISJ left point masses out (values repeated far more often than a
    continuous density allows, off any rounding lattice)."""
    import warnings

    order = np.argsort(mass)[::-1]
    shown = ", ".join(f"{atoms[i]:.6g} ({100 * mass[i]:.3g} %)" for i in order[:3])
    more = f" and {len(atoms) - 3} more" if len(atoms) > 3 else ""
    warnings.warn(
        f"x has point masses (values repeated many times: {shown}{more}; "
        f"{100 * float(np.sum(mass)):.3g} % of the weight in all). A density with atoms "
        "has no finite optimal bandwidth, so isj_bandwidth returns the ISJ bandwidth of "
        "the other values (their own effective sample size). A KDE still puts a kernel "
        "on every point, so each atom shows as a bump of that width; model the atoms "
        "apart (for censored or zero-inflated data, e.g. bounds= for the continuous part) "
        "or pass a number",
        RuntimeWarning,
        stacklevel=3,
    )
