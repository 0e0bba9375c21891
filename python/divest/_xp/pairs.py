"""Pair reducers: the online log-sum-exp and the float64 block sum, tile by tile."""

from __future__ import annotations

import math

from ._util import astype, concat, safe_log, tile_rows, tiles


def _diff_d2(xp, qi, xj):
    """(q_i − x_j) for a tile pair, shape (r, c, d), and the squared distances (r, c).
    Differences, not ‖q‖² + ‖x‖² − 2q·x: exact zeros on coinciding points, no cancellation."""
    diff = xp.expand_dims(qi, axis=1) - xp.expand_dims(xj, axis=0)
    return diff, xp.sum(diff * diff, axis=2)


def _dist_pow(xp, d2, p):
    """|q − x|^p from squared distances (p = 2: the squares themselves)."""
    if p == 2:
        return d2
    if p == 1:
        return xp.sqrt(d2)
    return d2 ** (0.5 * p)


def lse_pairs(xp, q, x, h, coef, *, p=2, grad=False, tile_q=None, tile_x=None, exclude_self=False):
    """For every query q_i: L_i = log Σ_j exp(h_j − coef·|q_i − x_j|^p), and with
    ``grad=True`` also the softmax-weighted mean M_i = Σ_j π_ij ∇_q |q_i − x_j|^p (so that
    ∇_q L_i = −coef·M_i), π_ij ∝ exp(h_j − coef·|q_i − x_j|^p).

    ``h = -inf`` skips a point (zero weight). One running maximum and sum per query
    (rescaled when the maximum grows), in the dtype of ``q``. ``exclude_self`` skips j = i
    (q and x the same set). Memory: one (tile_q, tile_x, d) block. Rows whose every term
    is -inf give L = -inf and M = 0.
    """
    m, d = q.shape
    n = x.shape[0]
    t = tile_rows(d)
    tile_q = tile_q or t
    tile_x = tile_x or t
    dt = q.dtype
    outs, means = [], []
    for i0, i1 in tiles(m, tile_q):
        qi = q[i0:i1, :]
        r = i1 - i0
        mx = xp.full((r,), -math.inf, dtype=dt)
        s = xp.zeros((r,), dtype=dt)
        acc = xp.zeros((r, d), dtype=dt) if grad else None
        for j0, j1 in tiles(n, tile_x):
            diff, d2 = _diff_d2(xp, qi, x[j0:j1, :])
            logit = xp.expand_dims(h[j0:j1], axis=0) - coef * _dist_pow(xp, d2, p)
            if exclude_self and i0 < j1 and j0 < i1:
                ii = xp.expand_dims(xp.arange(i0, i1), axis=1)
                jj = xp.expand_dims(xp.arange(j0, j1), axis=0)
                logit = xp.where(ii == jj, xp.full_like(logit, -math.inf), logit)
            new = xp.maximum(mx, xp.max(logit, axis=1))
            # A finite shift: rows still at -inf keep a zero sum (exp(-inf - 0) = 0).
            shift = xp.where(new == -math.inf, xp.zeros_like(new), new)
            scale = xp.exp(mx - shift)
            e = xp.exp(logit - xp.expand_dims(shift, axis=1))
            s = s * scale + xp.sum(e, axis=1)
            if grad:
                if p == 2:
                    g = 2.0 * diff
                else:
                    rr = xp.sqrt(d2)
                    pos = rr > 0
                    inv = xp.where(
                        pos, 1.0 / xp.where(pos, rr, xp.ones_like(rr)), xp.zeros_like(rr)
                    )
                    g = diff * xp.expand_dims(inv, axis=2)
                acc = acc * xp.expand_dims(scale, axis=1) + xp.sum(
                    xp.expand_dims(e, axis=2) * g, axis=1
                )
            mx = new
        shift = xp.where(mx == -math.inf, xp.zeros_like(mx), mx)
        outs.append(safe_log(xp, s) + shift)
        if grad:
            pos = xp.expand_dims(s > 0, axis=1)
            den = xp.expand_dims(xp.where(s > 0, s, xp.ones_like(s)), axis=1)
            means.append(xp.where(pos, acc / den, xp.zeros_like(acc)))
    lse = concat(xp, outs)
    return (lse, concat(xp, means)) if grad else lse


def lse_pairs_gemm(xp, q, x, h, coef, *, tile_q=None, tile_x=None):
    """:func:`lse_pairs` for p = 2 by the matrix-product route the GPU takes at d >= 16:
    per tile pair, G = Q Xᵀ (``matmul``), squared distances max(‖q‖² + ‖x‖² − 2G, 0),
    merged into each row's running log-sum-exp. Faster on BLAS hardware, less exact than
    differences (the cancellation costs about eps·‖q‖² per distance); memory one
    (tile_q, tile_x) block."""
    m = q.shape[0]
    n = x.shape[0]
    tile_q = tile_q or 4096
    tile_x = tile_x or 4096
    qn = xp.sum(q * q, axis=1)
    xn = xp.sum(x * x, axis=1)
    outs = []
    for i0, i1 in tiles(m, tile_q):
        qi = q[i0:i1, :]
        mx = xp.full((i1 - i0,), -math.inf, dtype=q.dtype)
        s = xp.zeros((i1 - i0,), dtype=q.dtype)
        for j0, j1 in tiles(n, tile_x):
            g = xp.matmul(
                qi,
                xp.permute_dims(x[j0:j1, :], (1, 0))
                if hasattr(xp, "permute_dims")
                else x[j0:j1, :].T,
            )
            d2 = xp.expand_dims(qn[i0:i1], axis=1) + xp.expand_dims(xn[j0:j1], axis=0) - 2.0 * g
            d2 = xp.maximum(d2, xp.zeros_like(d2))
            logit = xp.expand_dims(h[j0:j1], axis=0) - coef * d2
            new = xp.maximum(mx, xp.max(logit, axis=1))
            shift = xp.where(new == -math.inf, xp.zeros_like(new), new)
            s = s * xp.exp(mx - shift) + xp.sum(
                xp.exp(logit - xp.expand_dims(shift, axis=1)), axis=1
            )
            mx = new
        shift = xp.where(mx == -math.inf, xp.zeros_like(mx), mx)
        outs.append(safe_log(xp, s) + shift)
    return concat(xp, outs)


def _kernel(xp, d2, kernel, param):
    if kernel == "power":  # |u − v|^param
        return _dist_pow(xp, d2, param)
    if kernel == "gaussian":  # exp(−param·|u − v|²/2)
        return xp.exp(-0.5 * param * d2)
    if kernel == "laplacian":  # exp(−param·|u − v|)
        return xp.exp(-param * xp.sqrt(d2))
    raise ValueError(f"unknown kernel {kernel!r}")


def pair_sum(xp, x, y, wx, wy, kernel, param, *, exclude_self=False, tile=None):
    """Σ_ij wx_i wy_j k(|x_i − y_j|) as a float64 0-d array: each tile's kernel values in
    the input dtype, summed in float64 (block accumulation). ``wx``/``wy`` may be None
    (all ones). ``exclude_self`` drops i = j (x and y the same set)."""
    n, d = x.shape
    m = y.shape[0]
    t = tile or tile_rows(d)
    f64 = xp.float64
    total = xp.zeros((), dtype=f64)
    for i0, i1 in tiles(n, t):
        xi = x[i0:i1, :]
        for j0, j1 in tiles(m, t):
            _, d2 = _diff_d2(xp, xi, y[j0:j1, :])
            k = astype(xp, _kernel(xp, d2, kernel, param), f64)
            if exclude_self and i0 < j1 and j0 < i1:
                ii = xp.expand_dims(xp.arange(i0, i1), axis=1)
                jj = xp.expand_dims(xp.arange(j0, j1), axis=0)
                k = xp.where(ii == jj, xp.zeros_like(k), k)
            if wx is not None:
                k = k * xp.expand_dims(astype(xp, wx[i0:i1], f64), axis=1)
            if wy is not None:
                k = k * xp.expand_dims(astype(xp, wy[j0:j1], f64), axis=0)
            total = total + xp.sum(k)
    return total


def dcov_sums(xp, x, y, alpha, *, tile=None):
    """One pass over the pairs of the n observations: the row sums r^a, r^b (float64, (n,))
    of a_ij = |x_i − x_j|^α and b_ij = |y_i − y_j|^α, and the float64 totals
    Σ a_ij b_ij, Σ a_ij², Σ b_ij² (everything double centring needs)."""
    n = x.shape[0]
    t = tile or tile_rows(max(x.shape[1], y.shape[1]))
    f64 = xp.float64
    ra, rb = [], []
    ab = xp.zeros((), dtype=f64)
    aa = xp.zeros((), dtype=f64)
    bb = xp.zeros((), dtype=f64)
    for i0, i1 in tiles(n, t):
        sa = xp.zeros((i1 - i0,), dtype=f64)
        sb = xp.zeros((i1 - i0,), dtype=f64)
        for j0, j1 in tiles(n, t):
            _, dx = _diff_d2(xp, x[i0:i1, :], x[j0:j1, :])
            _, dy = _diff_d2(xp, y[i0:i1, :], y[j0:j1, :])
            a = astype(xp, _dist_pow(xp, dx, alpha), f64)
            b = astype(xp, _dist_pow(xp, dy, alpha), f64)
            sa = sa + xp.sum(a, axis=1)
            sb = sb + xp.sum(b, axis=1)
            ab = ab + xp.sum(a * b)
            aa = aa + xp.sum(a * a)
            bb = bb + xp.sum(b * b)
        ra.append(sa)
        rb.append(sb)
    return concat(xp, ra), concat(xp, rb), ab, aa, bb


def dcov_from_sums(xp, ra, rb, ab, n, unbiased):
    """Squared distance covariance (V or U statistic) from :func:`dcov_sums`' pieces."""
    ta, tb = xp.sum(ra), xp.sum(rb)
    cross = xp.sum(ra * rb)
    if unbiased:
        num = ab - 2.0 * cross / (n - 2) + ta * tb / ((n - 1) * (n - 2))
        return num / (n * (n - 3))
    return (ab - 2.0 * cross / n + ta * tb / (n * n)) / (n * n)
