"""Sinkhorn in the log domain: a batch of small dense problems, and point clouds."""

from __future__ import annotations

import math

from ._util import astype, safe_log
from .pairs import lse_pairs


def _lse(xp, z, axis):
    mx = xp.max(z, axis=axis, keepdims=True)
    mx = xp.where(mx == -math.inf, xp.zeros_like(mx), mx)
    return xp.squeeze(mx, axis=axis) + safe_log(xp, xp.sum(xp.exp(z - mx), axis=axis))


def sinkhorn_batch_log(xp, a, b, c, reg, max_iter, tol):
    """B balanced problems at once, float64: a (B, n), b (B, m) with equal masses per
    problem, c (B, n, m). Plain log-domain Sinkhorn from g = 0, rows first; after each
    column update (columns exact) a problem whose L1 row violation Σ|P1 − a| is at most
    ``tol`` is frozen, so each stops on its own tolerance. The row and column log-sum-exps
    never store more than the (B, n, m) cost they read (one temporary of its size).

    Returns f (B, n), g (B, m), n_iter (B,) int64, err (B,), cost and linear cost (B,),
    with the plan P = a⊗b·exp((f ⊕ g − C)/reg)."""
    nb, n = a.shape
    m = b.shape[1]
    la, lb = safe_log(xp, a), safe_log(xp, b)
    f = xp.zeros((nb, n), dtype=c.dtype)
    g = xp.zeros((nb, m), dtype=c.dtype)
    n_iter = xp.zeros((nb,), dtype=xp.int64)
    err = xp.full((nb,), math.inf, dtype=c.dtype)
    active = xp.ones((nb,), dtype=xp.bool)
    inv = 1.0 / reg
    for _ in range(int(max_iter)):
        f_new = -reg * _lse(xp, xp.expand_dims(lb + g * inv, axis=1) - c * inv, axis=2)
        g_new = -reg * _lse(xp, xp.expand_dims(la + f_new * inv, axis=2) - c * inv, axis=1)
        act = xp.expand_dims(active, axis=1)
        f = xp.where(act, f_new, f)
        g = xp.where(act, g_new, g)
        n_iter = n_iter + astype(xp, active, xp.int64)
        # Row sums of the plan: a_i·Σ_j b_j exp((f_i + g_j − C_ij)/reg).
        lrow = la + f * inv + _lse(xp, xp.expand_dims(lb + g * inv, axis=1) - c * inv, axis=2)
        e = xp.sum(xp.abs(xp.exp(lrow) - a), axis=1)
        err = xp.where(active, e, err)
        active = active & (err > tol)
        if not bool(xp.any(active)):
            break
    lp = xp.expand_dims(la + f * inv, axis=2) + xp.expand_dims(lb + g * inv, axis=1) - c * inv
    plan = xp.exp(lp)
    lin = xp.sum(xp.sum(plan * c, axis=2), axis=1)
    fg = xp.expand_dims(f, axis=2) + xp.expand_dims(g, axis=1)
    mass = xp.sum(xp.sum(plan, axis=2), axis=1)
    cost = xp.sum(xp.sum(plan * fg, axis=2), axis=1) - reg * (
        mass - xp.sum(a, axis=1) * xp.sum(b, axis=1)
    )
    return f, g, n_iter, err, cost, lin, plan


def eps_schedule(p, diameter, eps, scaling):
    """GeomLoss's ε sequence in divest's units (cost |x − y|^p; for p = 2 twice GeomLoss's
    cost, so every ε doubles): D^p, then the geometric sequence by scaling^p, then eps."""
    k = 2.0 if p == 2 else 1.0
    blur_p = eps / k
    start, stop, step = p * math.log(diameter), math.log(blur_p), p * math.log(scaling)
    count = max(0, math.ceil((stop - start) / step))  # numpy.arange(start, stop, step)
    out = [diameter**p] + [math.exp(start + i * step) for i in range(count)] + [blur_p]
    return [k * v for v in out]


def sinkhorn_divergence_xp(
    xp,
    x,
    y,
    a,
    b,
    *,
    p,
    eps,
    scaling,
    diameter,
    debias=True,
    grad=True,
    tol=None,
    max_iter=0,
    tile=None,
    lse=lse_pairs,
    log_weights=None,
):
    """GeomLoss's annealed symmetric Sinkhorn loop on two clouds, each softmin one
    ``lse`` pass (:func:`lse_pairs` or a fused kernel with its signature; no n×m matrix).

    At each ε of :func:`eps_schedule` the cross potentials (f on x, g on y) and, with
    ``debias``, the self potentials are averaged with their c-transforms; a final
    extrapolation at ``eps`` replaces each by its transform. With ``tol`` the averaged
    updates continue at ``eps`` (at most ``max_iter``) until every problem's L1 marginal
    violation is at most ``tol``. Returns (value, f, g, f_aa, g_bb, grad, n_updates,
    marginal_error, converged); grad = ∇_x value = a_i Σ_j π_ij ∇C(x_i, y_j)
    − a_i Σ_k π_ik ∇C(x_i, x_k) from the final potentials (π the row-normalised plans)."""
    if log_weights is None:
        la, lb = safe_log(xp, a), safe_log(xp, b)
    else:
        la, lb = log_weights
    kw = dict(p=p, tile_q=tile, tile_x=tile)

    def softmin(e, q, pts, logw, pot):
        return -e * lse(xp, q, pts, logw + pot / e, 1.0 / e, **kw)

    def marginal_error(e, f, g, fa, gb):
        rx = a * xp.exp(f / e + lse(xp, x, y, lb + g / e, 1.0 / e, **kw))
        cy = b * xp.exp(g / e + lse(xp, y, x, la + f / e, 1.0 / e, **kw))
        err = xp.sum(xp.abs(rx - a)) + xp.sum(xp.abs(cy - b))
        if fa is not None:
            ra = a * xp.exp(fa / e + lse(xp, x, x, la + fa / e, 1.0 / e, **kw))
            rb = b * xp.exp(gb / e + lse(xp, y, y, lb + gb / e, 1.0 / e, **kw))
            err = xp.maximum(
                err, xp.maximum(2.0 * xp.sum(xp.abs(ra - a)), 2.0 * xp.sum(xp.abs(rb - b)))
            )
        return float(err)

    def averaged(e, f, g, fa, gb):
        ft, gt = softmin(e, x, y, lb, g), softmin(e, y, x, la, f)
        if fa is not None:
            fat, gbt = softmin(e, x, x, la, fa), softmin(e, y, y, lb, gb)
            fa, gb = 0.5 * (fa + fat), 0.5 * (gb + gbt)
        return 0.5 * (f + ft), 0.5 * (g + gt), fa, gb

    sched = eps_schedule(p, diameter, eps, scaling)
    e0 = sched[0]
    zx = xp.zeros_like(la)
    zy = xp.zeros_like(lb)
    f = softmin(e0, x, y, lb, zy)
    g = softmin(e0, y, x, la, zx)
    fa = softmin(e0, x, x, la, zx) if debias else None
    gb = softmin(e0, y, y, lb, zy) if debias else None
    n_upd = 1
    for e in sched:
        f, g, fa, gb = averaged(e, f, g, fa, gb)
        n_upd += 1
    e = sched[-1]
    f, g = softmin(e, x, y, lb, g), softmin(e, y, x, la, f)
    if debias:
        fa, gb = softmin(e, x, x, la, fa), softmin(e, y, y, lb, gb)
    n_upd += 1
    err = marginal_error(e, f, g, fa, gb)
    if tol is not None:
        done = 0
        while err > tol and done < max_iter:
            f, g, fa, gb = averaged(e, f, g, fa, gb)
            n_upd += 1
            done += 1
            err = marginal_error(e, f, g, fa, gb)
    converged = tol is not None and err <= tol
    value = xp.sum(a * f) + xp.sum(b * g)
    if debias:
        value = value - xp.sum(a * fa) - xp.sum(b * gb)
    gr = None
    if grad:
        _, mxy = lse(xp, x, y, lb + g / e, 1.0 / e, grad=True, **kw)
        gr = xp.expand_dims(a, axis=1) * mxy
        if debias:
            _, mxx = lse(xp, x, x, la + fa / e, 1.0 / e, grad=True, **kw)
            gr = gr - xp.expand_dims(a, axis=1) * mxx
    return value, f, g, fa, gb, gr, n_upd, err, converged
