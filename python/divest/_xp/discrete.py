"""Divergences between discrete distributions, one per row (the last axis)."""

from __future__ import annotations

import math

from ._util import safe_log

MEASURES = ("kl", "js", "tv", "hellinger")


def log_rows(xp, a, kind, normalize):
    """Log-probabilities along the last axis from probabilities, logits or log-probabilities
    (logits, and with ``normalize`` the others too, are normalised by their log-sum-exp)."""
    la = safe_log(xp, a) if kind == "prob" else a
    if kind == "logits" or normalize:
        mx = xp.max(la, axis=-1, keepdims=True)
        mx = xp.where(mx == -math.inf, xp.zeros_like(mx), mx)
        la = la - (mx + safe_log(xp, xp.sum(xp.exp(la - mx), axis=-1, keepdims=True)))
    return la


def discrete_rows(xp, p, q, measure, kind="prob", normalize=False):
    """One divergence per row of p and q (same shape, categories last), in the input dtype.

    KL(p‖q) = Σ p (log p − log q) with 0·log 0 = 0 and inf where p > 0 = q; JS through the
    ratios 2p/(p + q) formed in log space (log m = logaddexp(log p, log q) − log 2); TV and
    Hellinger from the probabilities. Never negative."""
    lp = log_rows(xp, p, kind, normalize)
    lq = log_rows(xp, q, kind, normalize)
    pp, qq = xp.exp(lp), xp.exp(lq)
    zero = xp.zeros_like(lp)
    if measure == "kl":
        on = pp > 0  # 0·log 0 = 0; where p > 0 = q the term is +inf
        t = xp.where(on, pp * (xp.where(on, lp, zero) - xp.where(on, lq, zero)), zero)
        out = xp.sum(t, axis=-1)
    elif measure == "js":
        on = (pp > 0) | (qq > 0)
        hi = xp.where(on, xp.maximum(lp, lq), zero)
        s = xp.where(on, xp.exp(lp - hi) + xp.exp(lq - hi), xp.ones_like(hi))
        lm = hi + xp.log(s) - math.log(2.0)
        tp = xp.where(pp > 0, pp * (xp.where(pp > 0, lp, zero) - lm), zero)
        tq = xp.where(qq > 0, qq * (xp.where(qq > 0, lq, zero) - lm), zero)
        out = 0.5 * xp.sum(tp + tq, axis=-1)
    elif measure == "tv":
        out = 0.5 * xp.sum(xp.abs(pp - qq), axis=-1)
    elif measure == "hellinger":
        dd = xp.sqrt(pp) - xp.sqrt(qq)
        out = 0.5 * xp.sum(dd * dd, axis=-1)  # squared: the caller takes the root
    else:
        raise ValueError(f"unknown measure {measure!r}")
    return xp.maximum(out, xp.zeros_like(out))
