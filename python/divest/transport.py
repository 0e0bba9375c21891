"""Exact 1-D optimal transport and sliced Wasserstein distances.

Between two weighted 1-D samples, W_p^p = ∫_0^1 |F⁻¹(t) − G⁻¹(t)|^p dt with F⁻¹, G⁻¹
their quantile functions; after sorting both samples one merge over the cumulative
weights visits the at most n + m − 1 segments on which both are constant. The sliced
distance averages W_p^p over projections of d-dimensional samples onto directions θ_l,
each projection solved exactly by sorting, the projections in parallel in Rust (each by
one worker, serially, so the value does not depend on the thread count).

Magnitudes: the samples are divided by one common power of two when their largest
magnitude lies outside [2^-64, 2^64] (exact), and the distance multiplied back, so data
near 1e300 or subnormal data give the right value (inf only where the true value exceeds
the float64 range).
"""

from __future__ import annotations

import math

import numpy as np

from . import _core
from ._rng import as_generator
from ._validate import as_float_array, as_points, check_count, check_int, check_weights
from .dcov import _exp2, _shift, _times_pow2

__all__ = ["wasserstein_1d", "sliced_wasserstein", "max_sliced_wasserstein"]

#: Largest number of projections accepted (the values alone are 8 bytes each).
MAX_PROJECTIONS = 10**8


def _check_p(p) -> float:
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"p must be a number >= 1; got {type(p).__name__}")
    v = float(p)
    if not (math.isfinite(v) and v >= 1.0):
        raise ValueError(f"p must be a finite number >= 1; got {p!r}")
    return v


def _values_1d(a, name: str) -> np.ndarray:
    x = as_float_array(a, name)
    if x.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of values; got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty; it needs at least one value")
    return np.ascontiguousarray(x, dtype=np.float64)


def _weights(w, n: int, name: str):
    if w is None:
        return None
    return np.ascontiguousarray(check_weights(w, n, name), dtype=np.float64)


def wasserstein_1d(u, v, u_weights=None, v_weights=None, p=1) -> float:
    """Exact p-Wasserstein distance W_p between two weighted 1-D samples.

    Returns W_p = (∫_0^1 |F⁻¹(t) − G⁻¹(t)|^p dt)^(1/p) (the distance, not its p-th
    power). For p = 1 it equals ``scipy.stats.wasserstein_distance(u, v, u_weights,
    v_weights)``; for any p, ``ot.wasserstein_1d(u, v, u_weights, v_weights, p)`` (POT)
    returns its p-th power W_p^p.

    Parameters
    ----------
    u, v : array_like, 1-D, non-empty, finite
    u_weights, v_weights : array_like or None
        Non-negative weights with a positive sum (normalised here); None: uniform.
    p : float >= 1

    Memory: O(n + m) (sorted copies). Time: O((n + m) log(n + m)).
    """
    p = _check_p(p)
    ua, va = _values_1d(u, "u"), _values_1d(v, "v")
    wu = _weights(u_weights, ua.shape[0], "u_weights")
    wv = _weights(v_weights, va.shape[0], "v_weights")
    k = _exp2(ua, va)
    val = _core.ot_wasserstein_1d(_shift(ua, k), _shift(va, k), wu, wv, p)
    return float(_times_pow2(val, k))


def _clouds(x, y, a, b):
    xa = as_points(x, "x")
    ya = as_points(y, "y", d=xa.shape[1])
    xa = np.ascontiguousarray(xa, dtype=np.float64)
    ya = np.ascontiguousarray(ya, dtype=np.float64)
    wa = _weights(a, xa.shape[0], "a")
    wb = _weights(b, ya.shape[0], "b")
    k = _exp2(xa, ya)
    return _shift(xa, k), _shift(ya, k), wa, wb, k


def _projections(projections, n_projections, rng, d: int) -> np.ndarray:
    if projections is not None:
        t = as_points(projections, "projections", d=d)
        if not np.all(np.any(t != 0, axis=1)):
            raise ValueError("projections must be non-zero directions (rows of shape (d,))")
        return np.ascontiguousarray(t, dtype=np.float64)
    n_projections = check_int(n_projections, "n_projections", 1)
    if n_projections > MAX_PROJECTIONS:
        raise ValueError(
            f"n_projections must be at most {MAX_PROJECTIONS:.0e}; got {n_projections}"
        )
    g = as_generator(rng)
    t = g.standard_normal((n_projections, d))
    nrm = np.linalg.norm(t, axis=1, keepdims=True)
    nrm[nrm == 0] = 1.0
    return np.ascontiguousarray(t / nrm)


def sliced_wasserstein(
    x, y, a=None, b=None, *, n_projections=50, p=2, rng=None, projections=None
) -> float:
    """Sliced p-Wasserstein distance: (mean_l W_p^p(θ_lᵀx, θ_lᵀy))^(1/p).

    The directions θ_l are ``n_projections`` uniform unit vectors drawn from ``rng``, or
    the rows of ``projections`` (shape (L, d), used as given). Each 1-D problem is solved
    exactly by sorting; the projections run in parallel. With the same directions
    (``projections=theta`` here, ``projections=theta.T`` there) it equals POT's
    ``ot.sliced_wasserstein_distance(x, y, a, b, p=p)``.

    Parameters
    ----------
    x, y : array_like, (n, d) and (m, d)
    a, b : array_like or None
        Non-negative weights of the points (normalised); None: uniform.
    n_projections : int >= 1
    p : float >= 1
    rng : None, int or numpy.random.Generator

    Memory: O((n + m)·d) for the inputs and O(n + m) per worker; no n×m matrix.
    """
    p = _check_p(p)
    xa, ya, wa, wb, k = _clouds(x, y, a, b)
    th = _projections(projections, n_projections, rng, xa.shape[1])
    vals, _ = _core.ot_sliced(xa, ya, wa, wb, th, p, False)
    return float(_times_pow2(_power_mean(vals, p), k))


def _power_mean(w: np.ndarray, p: float) -> float:
    """(mean w^p)^(1/p) for w >= 0 without overflow: M (mean (w/M)^p)^(1/p)."""
    m = float(np.max(w))
    if m == 0.0:
        return 0.0
    return m * float(np.mean((w / m) ** p)) ** (1.0 / p)


def max_sliced_wasserstein(
    x,
    y,
    a=None,
    b=None,
    *,
    n_projections=50,
    p=2,
    rng=None,
    projections=None,
    n_iter=100,
    return_direction=False,
):
    """Max-sliced p-Wasserstein distance: max over unit directions θ of W_p(θᵀx, θᵀy)
    (Deshpande et al. 2019).

    The search starts from the best of ``n_projections`` random directions (or the rows
    of ``projections``, normalised) and improves the best few (at most 8) by projected
    gradient ascent on the sphere for up to ``n_iter`` steps, each step accepted only if
    it increases W_p (the gradient of W_p for the fixed optimal 1-D coupling; adaptive
    step). The result is the exact W_p of the direction found, hence a lower bound of the
    maximum that is typically the maximum itself (the objective is non-convex; more
    projections make a global optimum likelier). ``n_iter=0`` returns the maximum over
    the given directions, which equals POT's ``ot.max_sliced_wasserstein_distance`` for
    the same (unit) directions.

    Returns W_p, or (W_p, θ) with ``return_direction=True``.

    Memory: O((n + m)·d) for the inputs and O(n + m) per worker.
    """
    p = _check_p(p)
    n_iter = check_count(n_iter, "n_iter")
    xa, ya, wa, wb, k = _clouds(x, y, a, b)
    th = _projections(projections, n_projections, rng, xa.shape[1])
    th = np.ascontiguousarray(th / np.linalg.norm(th, axis=1, keepdims=True))
    vals, _ = _core.ot_sliced(xa, ya, wa, wb, th, p, False)
    top = np.argsort(-vals, kind="stable")[: min(8, len(vals))]
    cur, best = th[top].copy(), vals[top].copy()
    step = np.full(len(top), 0.5)
    for _ in range(n_iter):
        _, g = _core.ot_sliced(xa, ya, wa, wb, np.ascontiguousarray(cur), p, True)
        if not np.isfinite(g).all():
            break
        # Tangent component of the gradient (the value is invariant along θ).
        g = g - np.sum(g * cur, axis=1, keepdims=True) * cur
        gn = np.linalg.norm(g, axis=1, keepdims=True)
        live = (gn[:, 0] > 0) & (step > 1e-10)
        if not live.any():
            break
        cand = cur + step[:, None] * np.where(gn > 0, g / np.where(gn > 0, gn, 1.0), 0.0)
        cand /= np.linalg.norm(cand, axis=1, keepdims=True)
        cv, _ = _core.ot_sliced(xa, ya, wa, wb, np.ascontiguousarray(cand), p, False)
        up = live & (cv > best)
        cur[up], best[up] = cand[up], cv[up]
        step = np.where(up, np.minimum(step * 1.5, 1.0), step * 0.5)
    i = int(np.argmax(best))
    w = float(_times_pow2(float(best[i]), k))
    return (w, cur[i].copy()) if return_direction else w
