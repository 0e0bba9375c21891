"""Integrals, marginals, conditionals and quantiles of a :class:`divest.KDE` (issue 11).

The KDE class delegates ``marginal``, ``conditional``, ``cdf``, ``integrate_box`` and
``ppf`` here. Everything works in the KDE's internal units (data divided by the power of
two ``kde._scale``; bandwidth Cholesky factor ``kde._chol``), so extreme data stay in range.

Memory: the Gaussian box probabilities are Rust (``_core.kde_box_gauss``: the (m,)
result and at most 16 partial sums per box); the other 1-D kernels loop over query
chunks of about 2^20 / n rows, so at most about 2^20 kernel terms (8 MiB per array) are
alive at once; nothing n×m is formed.
"""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np

from . import _core
from ._validate import as_points

_CHUNK_TERMS = 1 << 20


# Lower-tail CDF F(t) of the 1-D unit-bandwidth kernels other than the Gaussian
# (scikit-learn's profiles, normalised; the Gaussian's box probabilities are Rust,
# `_core.kde_box_gauss`); every kernel is symmetric, so the upper tail is S(t) = F(−t).
def _cdf_lower(kernel: str, t: np.ndarray) -> np.ndarray:
    if kernel == "exponential":  # density e^{−|u|}/2
        with np.errstate(over="ignore"):
            return np.where(
                t <= 0, 0.5 * np.exp(np.minimum(t, 0.0)), 1.0 - 0.5 * np.exp(-np.abs(t))
            )
    c = np.clip(t, -1.0, 1.0)
    if kernel == "tophat":  # density 1/2 on [−1, 1]
        return 0.5 * (c + 1.0)
    if kernel == "epanechnikov":  # density 3/4 (1 − u²)
        return (c + 1.0) ** 2 * (2.0 - c) / 4.0
    if kernel == "linear":  # density 1 − |u|
        return np.where(c <= 0, 0.5 * (1.0 + c) ** 2, 1.0 - 0.5 * (1.0 - c) ** 2)
    if kernel == "cosine":  # density π/4 cos(πu/2)
        # (1 + sin(πc/2))/2 = sin²(π(c+1)/4): no cancellation near c = −1.
        return np.sin(0.25 * math.pi * (c + 1.0)) ** 2
    raise ValueError(kernel)


def _interval_prob(kernel: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """P(a < U < b) for the unit kernel, a ≤ b elementwise (±inf allowed), computed from
    the lower tails where b ≤ 0 and from the upper tails where a ≥ 0, so that tail
    probabilities keep their relative accuracy."""
    a, b = np.broadcast_arrays(a, b)
    out = np.empty(a.shape)
    up = a >= 0  # both ends in the upper half: difference of upper tails
    lo = ~up
    out[lo] = _cdf_lower(kernel, b[lo]) - _cdf_lower(kernel, a[lo])
    out[up] = _cdf_lower(kernel, -a[up]) - _cdf_lower(kernel, -b[up])
    return np.maximum(out, 0.0)


def _kernel_1d_width(kde) -> np.ndarray:
    """Kernel standard deviations (internal units) for a diagonal bandwidth; ValueError
    for a full one (the 2-D and 3-D cases are handled before this)."""
    if kde._inv_diag is None:
        raise ValueError(
            "cdf/integrate_box with a full (non-diagonal) bandwidth is implemented for "
            f"d = 2 and d = 3 only, not d={kde.d}; pass a scalar or per-dimension bandwidth "
            "(a diagonal covariance), or integrate a marginal of up to 3 dimensions"
        )
    return np.diag(kde._chol).copy()


def _check_box_kernel(kde, what):
    if kde.d > 1 and kde.kernel != "gaussian":
        raise ValueError(
            f"{what} in d={kde.d} is exact only for kernel='gaussian' (a radial {kde.kernel!r} "
            "kernel does not factor over the coordinates); use d = 1 or the Gaussian kernel"
        )


def _box_points(kde, arr, name):
    """Box corners as (m, d) float64 in internal units; ±inf allowed, NaN rejected."""
    p = as_points(arr, name, d=kde.d, check_finite=False).astype(np.float64)
    if np.isnan(p).any():
        raise ValueError(f"{name} must not contain NaN (±inf are allowed)")
    if kde._scale != 1.0:
        p = p / kde._scale
    return p


def integrate_box(kde, low, high):
    """Probability of the boxes [low, high] under the estimate; see KDE.integrate_box."""
    _check_box_kernel(kde, "integrate_box")
    # One box (scalars in 1-D, (d,) vectors in d ≥ 2) gives a float, as scipy's.
    single = all(np.ndim(v) == (0 if kde.d == 1 else 1) for v in (low, high))
    if kde.d == 1:
        low = np.reshape(low, -1) if np.ndim(low) == 0 else low
        high = np.reshape(high, -1) if np.ndim(high) == 0 else high
    lo = _box_points(kde, low, "low")
    hi = _box_points(kde, high, "high")
    if lo.shape != hi.shape:
        if lo.shape[0] == 1:
            lo = np.broadcast_to(lo, hi.shape)
        elif hi.shape[0] == 1:
            hi = np.broadcast_to(hi, lo.shape)
        else:
            raise ValueError(
                f"low and high must have the same number of boxes; got {lo.shape[0]} and "
                f"{hi.shape[0]}"
            )
    out = _box_prob(kde, lo, hi)
    return float(out[0]) if single and out.shape[0] == 1 else out


def _box_prob(kde, lo, hi):
    if getattr(kde, "_fold", None) is not None:  # bounds: sum over images (_kdebounds)
        from ._kdebounds import box_prob

        return box_prob(kde, lo, hi, _box_prob)
    keep = kde.weights > 0
    w = kde.weights[keep]
    x = kde._x[keep].astype(np.float64)
    if kde._scale != 1.0:
        x = x / kde._scale
    empty = (hi <= lo).any(axis=1)
    if kde.kernel == "gaussian":
        full = kde._inv_diag is None
        if full and kde.d > 3:
            _kernel_1d_width(kde)  # raises, naming the way out
        # Rust (core/kdebox.rs): products of normal tails (diagonal, any d), bivariate
        # CDFs (full 2-D) or trivariate CDFs by Plackett's identity (full 3-D).
        out = _core.kde_box_gauss(
            np.ascontiguousarray(x),
            np.ascontiguousarray(w, dtype=np.float64),
            np.ascontiguousarray(lo),
            np.ascontiguousarray(np.maximum(lo, hi)),
            np.ascontiguousarray(kde._chol, dtype=np.float64),
            full,
        )
        out[empty] = 0.0
        return np.clip(out, 0.0, 1.0)
    sd = _kernel_1d_width(kde)
    n, d = x.shape
    m = lo.shape[0]
    out = np.zeros(m)
    rows = max(1, _CHUNK_TERMS // max(n, 1))
    with np.errstate(over="ignore", invalid="ignore"):
        for s in range(0, m, rows):
            e = min(m, s + rows)
            prod = np.ones((e - s, n))
            for k in range(d):
                a = (lo[s:e, k, None] - x[None, :, k]) / sd[k]
                b = (hi[s:e, k, None] - x[None, :, k]) / sd[k]
                a = np.where(np.isnan(a), -np.inf, a)  # -inf - x stays -inf; guards inf-inf
                b = np.where(np.isnan(b), np.inf, b)
                prod *= _interval_prob(kde.kernel, a, np.maximum(a, b))
            out[s:e] = prod @ w
    out[empty] = 0.0
    return np.clip(out, 0.0, 1.0)


def cdf(kde, points):
    """P(X ≤ points) componentwise; see KDE.cdf."""
    _check_box_kernel(kde, "cdf")
    hi = _box_points(kde, points, "points")
    return _box_prob(kde, np.full_like(hi, -np.inf), hi)


def _support(kde):
    """Lowest and highest points of the 1-D support (±inf for unbounded kernels)."""
    if kde.kernel in ("gaussian", "exponential"):
        return -math.inf, math.inf
    x = kde._x[kde.weights > 0, 0].astype(np.float64)
    h = float(kde._chol[0, 0]) * kde._scale
    with np.errstate(over="ignore"):
        return float(x.min() - h), float(x.max() + h)


def ppf(kde, q):
    """Quantiles in 1-D; see KDE.ppf."""
    if kde.d != 1:
        raise ValueError(f"ppf needs a 1-D KDE; this one has d={kde.d} (use marginal first)")
    qa = np.asarray(q)
    if qa.dtype.kind not in "biuf":
        raise TypeError(f"q must be a real number or array of probabilities; got {q!r}")
    qa = qa.astype(np.float64)
    if qa.size == 0:
        raise ValueError("q must not be empty")
    if np.isnan(qa).any() or (qa < 0).any() or (qa > 1).any():
        raise ValueError("q must be probabilities in [0, 1] (no NaN)")
    flat = qa.ravel()
    out = np.empty(flat.shape)
    lo_s, hi_s = _support(kde)
    if getattr(kde, "_fold", None) is not None:
        from ._kdebounds import support

        lo_s, hi_s = support(kde, lo_s, hi_s)
    out[flat == 0] = lo_s
    out[flat == 1] = hi_s
    inner = (flat > 0) & (flat < 1)
    if inner.any():
        out[inner] = _bisect(kde, flat[inner])
    return out.reshape(qa.shape) if qa.ndim else float(out[0])


def _bisect(kde, q):
    """Safeguarded Newton on the monotone cdf: a Newton step from the bracket's last
    point when it lands inside the bracket [a, b] with cdf(a) < q ≤ cdf(b), else the
    midpoint. Stops when |cdf − q| ≤ 4e-16 where the density is positive (a flat stretch
    of a compact kernel is bisected to its left end, the smallest x with cdf(x) ≥ q), or
    when the bracket is a few ulps or 1e-15 bandwidths wide (the density is at most about
    1/h, so the probability is then within about 1e-15)."""
    x = kde._x[kde.weights > 0, 0].astype(np.float64) / kde._scale
    h = float(kde._chol[0, 0])
    reach = {"gaussian": 40.0, "exponential": 746.0}.get(kde.kernel, 1.0)
    big = np.finfo(float).max
    with np.errstate(over="ignore"):
        a = np.full(q.shape, max(float(x.min()) - reach * h, -big))
        b = np.full(q.shape, min(float(x.max()) + reach * h, big))
    cur = 0.5 * a + 0.5 * b
    done = np.zeros(q.shape, dtype=bool)
    tiny = 1e-15 * h
    lo_box = np.full((q.size, 1), -np.inf)
    for _ in range(400):
        idx = np.flatnonzero(~done)
        if idx.size == 0:
            break
        xi = cur[idx]
        c = _box_prob(kde, lo_box[idx], xi[:, None])
        below = c < q[idx]
        a[idx[below]] = xi[below]
        b[idx[~below]] = xi[~below]
        # Density in internal units (the engine's log-sum-exp, normalised for h).
        with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
            dens = kde.pdf(xi * kde._scale, check_finite=False) * kde._scale
            step = xi - (c - q[idx]) / dens
        ai, bi = a[idx], b[idx]
        width = bi - ai
        close = (np.abs(c - q[idx]) <= 4e-16) & (dens > 0)
        mid = 0.5 * ai + 0.5 * bi
        narrow = (width <= 4e-16 * np.abs(xi) + tiny) | ~((mid > ai) & (mid < bi))
        conv = close | narrow
        ok = np.isfinite(step) & (step > ai) & (step < bi)
        nxt = np.where(ok, step, mid)
        # Converged on the value: this point; on the bracket: its upper end (cdf ≥ q).
        cur[idx] = np.where(close, xi, np.where(narrow, bi, nxt))
        done[idx[conv]] = True
    return cur * kde._scale


def _sub_kde(kde, x, w, chol_int, scale_old):
    """A Gaussian KDE over data ``x`` (data units) with weights ``w`` (normalised) and
    bandwidth Cholesky factor ``chol_int`` in units of ``scale_old``."""
    from .kde import KDE, _data_scale

    new = object.__new__(KDE)
    n, d = x.shape
    new.kernel = kde.kernel
    new.n, new.d = n, d
    new.dtype = x.dtype
    new.weights = w
    new.neff = float(1.0 / np.sum(w**2))
    new._scale = _data_scale(x)
    xs = x.astype(np.float64, copy=False)
    if new._scale != 1.0:
        xs = xs / new._scale
    new._mean = w @ xs
    new._x = x
    new.selection = None
    new.factor = None
    new.rule = None
    ratio = math.frexp(scale_old)[1] - math.frexp(new._scale)[1]
    with np.errstate(over="ignore", under="ignore"):
        chol = np.ldexp(chol_int, ratio)
        h = (chol @ chol.T) * new._scale * new._scale if new._scale != 1.0 else chol @ chol.T
    if not np.all(np.isfinite(chol)) or not np.all(np.diag(chol) > 0):
        raise ValueError(
            "the sub-bandwidth leaves the float range once rescaled to the selected data; "
            "rescale the data"
        )
    new._set_bandwidth(h, chol)
    return new


def _check_dims(dims, d):
    if isinstance(dims, (bool, np.bool_)):
        raise TypeError(f"dims must be an int or a sequence of ints; got {dims!r}")
    if isinstance(dims, Integral):
        dims = [dims]
    try:
        seq = list(dims)
    except TypeError:
        raise TypeError(f"dims must be an int or a sequence of ints; got {dims!r}") from None
    out = []
    for v in seq:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, Integral):
            raise TypeError(f"dims must contain ints; got {v!r}")
        v = int(v)
        if not -d <= v < d:
            raise ValueError(f"dims entries must lie in [-{d}, {d}); got {v}")
        out.append(v % d)
    if not out:
        raise ValueError("dims must name at least one dimension")
    if len(set(out)) != len(out):
        raise ValueError(f"dims must be distinct; got {seq!r}")
    return out


def marginal(kde, dims):
    """The marginal KDE over ``dims``; see KDE.marginal."""
    idx = _check_dims(dims, kde.d)
    if kde.kernel != "gaussian" and sorted(idx) != list(range(kde.d)):
        raise ValueError(
            f"the marginal of a {kde.kernel!r} KDE over dims={dims!r} is not a "
            f"{kde.kernel!r} KDE (only the Gaussian kernel's marginals stay in the family); "
            "use kernel='gaussian'"
        )
    # H_SS = (L L^T)_SS = L_S L_S^T: factor it again (internal units, no overflow).
    ls = kde._chol[idx]
    chol = np.linalg.cholesky(ls @ ls.T)
    x = np.ascontiguousarray(kde._x[:, idx])
    new = _sub_kde(kde, x, kde.weights.copy(), chol, kde._scale)
    if getattr(kde, "_fold", None) is not None:  # bounds: the fold of the kept dims
        from ._kdebounds import restrict

        restrict(new, kde._fold, idx)
    return new


def conditional(kde, given):
    """The conditional KDE of the other variables; see KDE.conditional."""
    if getattr(kde, "_fold", None) is not None:  # bounds: folded weights (_kdebounds)
        from ._kdebounds import conditional as folded

        return folded(kde, given, conditional, marginal)
    if kde.kernel != "gaussian":
        raise ValueError(
            f"conditional is exact only for kernel='gaussian'; the conditionals of a "
            f"{kde.kernel!r} KDE are not {kde.kernel!r} KDEs"
        )
    if not isinstance(given, dict) or not given:
        raise TypeError(
            "given must be a non-empty dict {dim: value} of the dimensions to condition on"
        )
    d = kde.d
    g, vals = [], []
    for k, v in given.items():
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, Integral):
            raise ValueError(f"given keys must be int dimensions; got {k!r}")
        if not -d <= int(k) < d:
            raise ValueError(f"given names dimension {k!r}, outside [-{d}, {d})")
        if isinstance(v, (bool, np.bool_)):
            raise ValueError(f"given values must be real numbers; got {v!r} for dim {k}")
        try:
            fv = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"given values must be real numbers; got {v!r} for dim {k}") from None
        if not math.isfinite(fv):
            raise ValueError(f"given values must be finite; got {fv!r} for dim {k}")
        g.append(int(k) % d)
        vals.append(fv)
    if len(set(g)) != len(g):
        raise ValueError(f"given names a dimension twice: {sorted(given)!r}")
    if len(g) == d:
        raise ValueError("given conditions on every dimension; leave at least one free")
    r = [i for i in range(d) if i not in g]
    order = g + r
    ng = len(g)
    s = kde._scale
    hint = kde._chol @ kde._chol.T  # internal units
    lp = np.linalg.cholesky(hint[np.ix_(order, order)])
    l_gg, l_rg, l_rr = lp[:ng, :ng], lp[ng:, :ng], lp[ng:, ng:]
    x = kde._x.astype(np.float64) / s
    v = np.asarray(vals) / s
    # z_i = L_gg^{-1}(v − x_ig): log N(v; x_ig, H_gg) = −|z_i|²/2 + const.
    z = np.linalg.solve(l_gg, (v[None, :] - x[:, g]).T)  # (ng, n)
    with np.errstate(divide="ignore", over="ignore"):
        logw = np.log(kde.weights) - 0.5 * np.einsum("ij,ij->j", z, z)
    top = np.max(logw)
    if not np.isfinite(top):
        raise ValueError(
            f"given={given!r} is so far from every data point (in bandwidths) that all "
            "conditional weights are zero"
        )
    w = np.exp(logw - top)
    w /= w.sum()
    # Centres x_ir + H_rg H_gg^{-1}(v − x_ig) = x_ir + L_rg z_i.
    centres = (x[:, r] + (l_rg @ z).T) * s
    return _sub_kde(kde, np.ascontiguousarray(centres), w, l_rr.copy(), s)
