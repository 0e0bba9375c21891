"""Bounded 2-D and 3-D ``logpdf`` (issue 11): reflected on a half-line and an interval
(``bounds=[(0, None), (0, 1)]``, a third free dimension in 3-D) and periodic in the second
dimension, n = m = 10⁴ (and 10⁵ unless quick), Gaussian and epanechnikov kernels, Scott's
bandwidth, against the unbounded estimate on the same data and queries: the ratio is
unbounded time / bounded time (target ≥ 1/1.5 ≈ 0.67). The check column is the largest
difference in nats (different densities; reported, not judged)."""

from __future__ import annotations

import numpy as np

import divest

from . import Case
from .kdebounds import _max_abs


def cases(quick: bool):
    out = []
    sizes = [10_000] if quick else [10_000, 100_000]
    for n in sizes:
        for d in (2, 3):
            rng = np.random.default_rng(1)
            x = rng.random((n, d))
            x[:, 0] = rng.exponential(0.3, n)
            q = rng.random((n, d))
            q[:, 0] *= 2.0
            if d == 3:
                x[:, 2] = rng.standard_normal(n)
                q[:, 2] = rng.standard_normal(n)
            free_dims = [(None, None)] * (d - 2)
            for kernel in ("gaussian", "epanechnikov"):
                free = divest.KDE(x, kernel=kernel)
                for boundary in ("reflect", "periodic"):
                    if boundary == "reflect":
                        b = [(0, None), (0, 1)] + free_dims
                    else:
                        b = [(None, None), (0, 1)] + free_dims
                    kde = divest.KDE(x, kernel=kernel, bounds=b, boundary=boundary)
                    out.append(
                        Case(
                            f"bounded logpdf, {d}-D n=m={n}, {kernel}, {boundary}",
                            lambda kde=kde, q=q: kde.logpdf(q),
                            peers={
                                "divest unbounded logpdf (same data)": lambda f=free, q=q: f.logpdf(
                                    q
                                )
                            },
                            repeat=3,
                            check=_max_abs,
                        )
                    )
    return out
