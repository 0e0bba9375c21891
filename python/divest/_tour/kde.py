"""Tour section: kernel density estimation."""

from __future__ import annotations

import numpy as np

import divest

from . import optional, timed


def _numpy_reference(x, q, h):
    """Chunked GEMM plus log-sum-exp: the usual NumPy way (isotropic Gaussian)."""
    xn = np.einsum("ij,ij->i", x, x)
    out = np.empty(q.shape[0])
    d = x.shape[1]
    for s in range(0, q.shape[0], 1024):
        qq = q[s:s + 1024]
        d2 = np.maximum(np.einsum("ij,ij->i", qq, qq)[:, None] + xn[None, :] - 2 * qq @ x.T, 0)
        v = -0.5 * d2 / h**2
        m = v.max(axis=1, keepdims=True)
        out[s:s + 1024] = (m[:, 0] + np.log(np.exp(v - m).sum(axis=1)))
    return out - np.log(x.shape[0]) - 0.5 * d * np.log(2 * np.pi * h**2)


def _mixture(rng, n, d):
    centres = rng.standard_normal((4, d)) * 3
    labels = rng.integers(0, 4, size=n)
    return centres[labels] + rng.standard_normal((n, d)) * (0.5 + 0.5 * (labels[:, None] % 2))


def run(report, quick=False, figures=True):
    rng = np.random.default_rng(2026)
    scipy_stats = optional("scipy.stats")
    sk_neighbors = optional("sklearn.neighbors")

    report.header("Kernel density estimation")
    n = 4000 if quick else 20000
    d = 16
    x = _mixture(rng, n, d)
    q = _mixture(rng, n, d)
    report.line(f"Gaussian mixture, n = m = {n}, d = {d}, Scott's rule, full covariance")
    kde = divest.KDE(x)
    t, lp = timed(lambda: kde.logpdf(q), repeat=3)
    # NumPy reference for the same full-covariance estimate: whiten, then GEMM + log-sum-exp.
    linv = np.linalg.inv(np.linalg.cholesky(kde.bandwidth))
    tn, ref = timed(lambda: _numpy_reference(x @ linv.T, q @ linv.T, 1.0)
                    - np.log(np.linalg.det(kde.bandwidth)) / 2, repeat=1)
    err = np.max(np.abs(lp - ref) / np.abs(ref))
    report.check(err < 1e-10, f"equals the NumPy reference to {err:.1e} relative")
    peers = [("NumPy GEMM + log-sum-exp", tn, "")]
    if scipy_stats is not None:
        gk = scipy_stats.gaussian_kde(x.T)
        sub = slice(0, 2000)  # scipy is slow: time a slice and scale up
        ts, ref = timed(lambda: gk.logpdf(q[sub].T), repeat=1)
        peers.append(("scipy gaussian_kde.logpdf", ts * n / 2000, "timed on 2000 queries, scaled"))
        err = np.max(np.abs(lp[sub] - ref) / np.abs(ref))
        report.check(err < 1e-10, f"equals scipy to {err:.1e} relative")
    else:
        peers.append(("scipy gaussian_kde.logpdf", None, "scipy not installed"))
    report.timing("logpdf", t, peers)

    d = 256
    n2 = 1500 if quick else 5000
    x2 = rng.standard_normal((n2, d))
    q2 = rng.standard_normal((n2, d))
    report.line(f"isotropic Gaussian kernel, h = 1, n = m = {n2}, d = {d}")
    kde2 = divest.KDE(x2, bandwidth=1.0)
    t2, lp2 = timed(lambda: kde2.logpdf(q2), repeat=3)
    tn, ref2 = timed(lambda: _numpy_reference(x2, q2, 1.0), repeat=1)
    peers = [("NumPy GEMM + log-sum-exp", tn, "")]
    report.check(np.max(np.abs(lp2 - ref2) / np.abs(ref2)) < 1e-10, "equals the NumPy reference")
    if sk_neighbors is not None:
        sub = slice(0, 300)
        kd = sk_neighbors.KernelDensity(bandwidth=1.0).fit(x2)
        tk, sk = timed(lambda: kd.score_samples(q2[sub]), repeat=1)
        off = np.max(np.abs(sk - lp2[sub]))
        peers.append(("scikit-learn KernelDensity", tk * n2 / 300,
                      f"timed on 300 queries, scaled; off by up to {off:.2g} nats at d={d}"))
    report.timing("logpdf", t2, peers)

    sel_x = x[: (2000 if quick else 5000)]
    ts, sel = timed(lambda: divest.select_bandwidth(sel_x, warn_edge=False), repeat=1)
    t1, _ = timed(lambda: divest.KDE(sel_x).loo_logpdf(), repeat=1)
    report.line(f"select_bandwidth over {sel.grid.size} factors of Scott's rule (n = {len(sel_x)}, d = 16): "
                f"best factor {sel.factor:.3g}, {ts * 1e3:.0f} ms = {ts / t1:.1f} leave-one-out passes")

    far = np.full((1, 1024), 30.0)
    big = divest.KDE(rng.standard_normal((2000, 1024)), bandwidth=0.5)
    lfar = big.logpdf(far)[0]
    report.check(np.isfinite(lfar) and lfar < -1e5 * 0.5,
                 f"d = 1024, far query: logpdf = {lfar:.6g} (pdf underflows to {np.exp(lfar)})")

    if figures:
        plt = optional("matplotlib.pyplot")
        if plt is None:
            report.line("matplotlib not installed: no figure")
            return
        import matplotlib

        matplotlib.use("Agg")
        x1 = _mixture(rng, 2000, 1)[:, 0]
        grid = np.linspace(x1.min() - 2, x1.max() + 2, 400)
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
        for bw in ("scott", "loo"):
            ax[0].plot(grid, divest.KDE(x1, bandwidth=bw).pdf(grid), label=f"bandwidth={bw!r}")
        ax[0].hist(x1, bins=80, density=True, alpha=0.3, color="grey")
        ax[0].legend()
        ax[0].set_title("1-D KDE")
        s1 = divest.select_bandwidth(x1, warn_edge=False)
        ax[1].semilogx(s1.grid, s1.loglik)
        ax[1].axvline(s1.factor, color="k", ls=":")
        ax[1].set_xlabel("factor of Scott's bandwidth")
        ax[1].set_ylabel("leave-one-out log-likelihood")
        fig.tight_layout()
        fig.savefig("tour_kde.png", dpi=100)
        plt.close(fig)
        report.line("figure saved: tour_kde.png")
