"""Tour section: entropic optimal transport."""

from __future__ import annotations

import numpy as np

import divest

from . import optional, timed


def run(report, quick=False, figures=True):
    ot = optional("ot")
    rng = np.random.default_rng(7)
    report.header("Entropic optimal transport")
    n = 800 if quick else 2000
    x, y = rng.random((n, 2)), rng.random((n, 2))
    c = ((x[:, None] - y[None]) ** 2).sum(-1)
    c /= c.max()
    w = np.full(n, 1.0 / n)
    report.line(f"dense Sinkhorn, n = m = {n}, squared distances / max, reg = 1e-2, tol = 1e-9")
    t, res = timed(lambda: divest.sinkhorn(w, w, c, 1e-2, tol=1e-9), repeat=3)
    peers = []
    if ot is not None:
        tp, ref = timed(lambda: ot.sinkhorn(w, w, c, 1e-2, stopThr=1e-9, numItermax=10000), 1)
        peers.append(("ot.sinkhorn", tp, ""))
        err = abs(res.linear_cost - float(np.sum(c * ref))) / float(np.sum(c * ref))
        report.check(err < 1e-7, f"<C,P> equals POT's to {err:.1e} (converged={res.converged}, "
                                 f"{res.n_iter} iterations)")
    else:
        peers.append(("ot.sinkhorn", None, "POT not installed"))
    report.timing("sinkhorn", t, peers)

    m = 1000 if quick else 4000
    xa = rng.standard_normal((m, 3))
    xb = rng.standard_normal((m, 3)) * 0.8 + 0.5
    t0, fast = timed(lambda: divest.sinkhorn_divergence(xa, xb, eps=0.1), repeat=1)
    report.line(f"Sinkhorn divergence of two 3-D clouds of {m} points, eps = 0.1, GeomLoss's "
                f"schedule (the default): S = {fast.value:.6f}, marginal error "
                f"{fast.marginal_error:.1e}, {fast.n_iter} updates, {t0:.2f} s, "
                f"no {m}x{m} matrix")
    t, div = timed(lambda: divest.sinkhorn_divergence(xa, xb, eps=0.1, tol=1e-5), repeat=1)
    report.line(f"  continued to tol = 1e-5: S = {div.value:.6f}, {div.n_iter} updates, "
                f"{t:.2f} s")
    report.check(div.converged and div.value > 0 and fast.converged is None,
                 "divergence converged to tol and is positive; the default claims no "
                 "convergence")

    if figures:
        plt = optional("matplotlib.pyplot")
        if plt is None:
            report.line("matplotlib not installed: no figure")
            return
        import matplotlib

        matplotlib.use("Agg")
        sa, sb = rng.random((30, 2)), rng.random((30, 2)) + [1.2, 0]
        cs = ((sa[:, None] - sb[None]) ** 2).sum(-1)
        wa = np.full(30, 1 / 30)
        p = divest.sinkhorn(wa, wa, cs, 0.01).plan
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for i, j in zip(*np.nonzero(p > 0.1 * p.max())):
            ax.plot([sa[i, 0], sb[j, 0]], [sa[i, 1], sb[j, 1]], "k-", alpha=min(1, p[i, j] * 30), lw=0.8)
        ax.scatter(*sa.T, c="C0", label="a")
        ax.scatter(*sb.T, c="C1", label="b")
        ax.legend()
        ax.set_title("entropic transport plan (reg = 0.01)")
        fig.tight_layout()
        fig.savefig("tour_ot.png", dpi=100)
        plt.close(fig)
        report.line("figure saved: tour_ot.png")
