"""Tour section: entropic optimal transport."""

from __future__ import annotations

import numpy as np

import divest

from .._bench import median_time, rel_error
from .._bench import workloads as wl
from . import optional, save_figure


def run(report, quick=False, figures=True):
    ot = optional("ot")
    rng = np.random.default_rng(7)
    report.header("Entropic optimal transport")
    n = wl.size(wl.OT_DENSE_N, quick)
    w, _, c = wl.ot_dense(n)
    report.line(f"dense Sinkhorn, n = m = {n}, squared distances / max, reg = 1e-2, tol = 1e-9")
    t, res = median_time(
        lambda: divest.sinkhorn(w, w, c, 1e-2, tol=1e-9, max_iter=10000, return_plan=False), 3
    )
    peers = []
    if ot is not None:
        tp, ref = median_time(
            lambda: float(ot.sinkhorn2(w, w, c, 1e-2, stopThr=1e-9, numItermax=10000)), 3
        )
        peers.append(("ot.sinkhorn2", tp, ""))
        err = rel_error(res.linear_cost, ref)
        report.check(
            err < 1e-7,
            f"<C,P> equals POT's to {err:.1e} (converged={res.converged}, {res.n_iter} iterations)",
        )
    else:
        peers.append(("ot.sinkhorn2", None, "POT not installed"))
    report.timing("sinkhorn", t, peers)

    # A demonstration, no peer: Gaussian clouds, a large eps.
    m = 1000 if quick else 2000
    xa = rng.standard_normal((m, 3))
    xb = rng.standard_normal((m, 3)) * 0.8 + 0.5
    t0, fast = median_time(lambda: divest.sinkhorn_divergence(xa, xb, eps=0.1), 1)
    report.line(
        f"Sinkhorn divergence of two 3-D clouds of {m} points, eps = 0.1, GeomLoss's "
        f"schedule (the default): S = {fast.value:.6f}, marginal error "
        f"{fast.marginal_error:.1e}, {fast.n_iter} updates, {t0:.2f} s, "
        f"no {m}x{m} matrix"
    )
    t, div = median_time(lambda: divest.sinkhorn_divergence(xa, xb, eps=0.1, tol=1e-5), 1)
    report.line(f"  continued to tol = 1e-5: S = {div.value:.6f}, {div.n_iter} updates, {t:.2f} s")
    report.check(
        div.converged and div.value > 0 and fast.converged is None,
        "divergence converged to tol and is positive; the default claims no convergence",
    )

    if figures:

        def draw(plt):
            sa, sb = rng.random((30, 2)), rng.random((30, 2)) + [1.2, 0]
            cs = ((sa[:, None] - sb[None]) ** 2).sum(-1)
            wa = np.full(30, 1 / 30)
            p = divest.sinkhorn(wa, wa, cs, 0.01).plan
            fig, ax = plt.subplots(figsize=(6, 3.5))
            for i, j in zip(*np.nonzero(p > 0.1 * p.max())):
                alpha = min(1, p[i, j] * 30)
                ax.plot([sa[i, 0], sb[j, 0]], [sa[i, 1], sb[j, 1]], "k-", alpha=alpha, lw=0.8)
            ax.scatter(*sa.T, c="C0", label="a")
            ax.scatter(*sb.T, c="C1", label="b")
            ax.legend()
            ax.set_title("entropic transport plan (reg = 0.01)")
            return fig

        save_figure(report, "tour_ot.png", draw)
