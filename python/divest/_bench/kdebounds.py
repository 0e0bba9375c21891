"""Bounded and periodic KDEs (issue 11): the cost of the fold. A bounded 1-D ``logpdf``
(n = 10⁶ data, 10⁴ queries, Gaussian, reflected on a half-line and an interval, and
periodic) against the unbounded estimate on the same data and queries, so the ratio is
unbounded time / bounded time (target ≥ 1/1.5 ≈ 0.67: a bound costs at most 1.5×). The
check column is the largest difference in nats (the two are different densities; it is
reported, not judged)."""

from __future__ import annotations

import numpy as np

import divest

from . import Case


def _max_abs(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    fin = np.isfinite(a) & np.isfinite(b)
    return float(np.max(np.abs(a[fin] - b[fin])))


def cases(quick: bool):
    n = 200_000 if quick else 1_000_000
    m = 10_000
    rng = np.random.default_rng(0)
    x = np.minimum(rng.exponential(0.3, n), 2.0)
    q = rng.random(m) * 2.0
    h = 0.02
    free = divest.KDE(x, bandwidth=h)
    out = []
    for bounds, boundary, label in [
        ((0, None), "reflect", "reflect on [0, inf)"),
        ((0, 2), "reflect", "reflect on [0, 2]"),
        ((0, 2), "periodic", "periodic on [0, 2]"),
    ]:
        kde = divest.KDE(x, bandwidth=h, bounds=bounds, boundary=boundary)
        out.append(
            Case(
                f"bounded logpdf, 1-D n={n}, m={m}, Gaussian, {label}",
                lambda kde=kde: kde.logpdf(q),
                peers={"divest unbounded logpdf (same data)": lambda: free.logpdf(q)},
                repeat=5,
                check=_max_abs,
            )
        )
    return out
