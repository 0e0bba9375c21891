"""Tour section: kernel density estimation."""

from __future__ import annotations

import numpy as np

import divest

from .._bench import median_time, rel_error
from .._bench import workloads as wl
from .._bench.kde import numpy_reference
from . import optional, save_figure


def _mixture(rng, n, d):
    centres = rng.standard_normal((4, d)) * 3
    labels = rng.integers(0, 4, size=n)
    return centres[labels] + rng.standard_normal((n, d)) * (0.5 + 0.5 * (labels[:, None] % 2))


def run(report, quick=False, figures=True):
    rng = np.random.default_rng(2026)
    scipy_stats = optional("scipy.stats")
    sk_neighbors = optional("sklearn.neighbors")

    report.header("Kernel density estimation")
    n, d = wl.size(wl.KDE_LOGPDF_N, quick), 16
    x, q = wl.kde_data(n, d)
    report.line(f"standard normal data, n = m = {n}, d = {d}, Scott's rule, full covariance")
    kde = divest.KDE(x)
    t, lp = median_time(lambda: kde.logpdf(q), 3)
    # NumPy reference for the same full-covariance estimate: whiten, then GEMM + log-sum-exp.
    linv = np.linalg.inv(np.linalg.cholesky(kde.bandwidth))
    half_logdet = np.log(np.linalg.det(kde.bandwidth)) / 2
    tn, ref = median_time(lambda: numpy_reference(x @ linv.T, q @ linv.T, 1.0) - half_logdet, 1)
    err = rel_error(lp, ref)
    report.check(err < 1e-10, f"equals the NumPy reference to {err:.1e} relative")
    peers = [("NumPy GEMM + log-sum-exp", tn, "")]
    if scipy_stats is not None:
        gk = scipy_stats.gaussian_kde(x.T)
        sub = slice(0, 1000)  # scipy is slow: time the first queries and scale up
        ts, ref = median_time(lambda: gk.logpdf(q[sub].T), 1)
        peers.append(("scipy gaussian_kde.logpdf", ts * n / 1000, "timed on 1000 queries, scaled"))
        err = rel_error(lp[sub], ref)
        report.check(err < 1e-10, f"equals scipy to {err:.1e} relative")
    else:
        peers.append(("scipy gaussian_kde.logpdf", None, "scipy not installed"))
    report.timing("logpdf", t, peers)

    n2, d2 = wl.size(wl.KDE_WIDE_N, quick), 256
    x2, q2 = wl.kde_data(n2, d2)
    report.line(f"isotropic Gaussian kernel, h = 1, n = m = {n2}, d = {d2}")
    kde2 = divest.KDE(x2, bandwidth=1.0)
    t2, lp2 = median_time(lambda: kde2.logpdf(q2), 3)
    tn, ref2 = median_time(lambda: numpy_reference(x2, q2, 1.0), 1)
    peers = [("NumPy GEMM + log-sum-exp", tn, "")]
    report.check(rel_error(lp2, ref2) < 1e-10, "equals the NumPy reference")
    if sk_neighbors is not None:
        sub = slice(0, 300)
        kd = sk_neighbors.KernelDensity(bandwidth=1.0).fit(x2)
        tk, sk = median_time(lambda: kd.score_samples(q2[sub]), 1)
        off = np.max(np.abs(sk - lp2[sub]))
        note = f"timed on 300 queries, scaled; off by up to {off:.2g} nats at d={d2}"
        peers.append(("scikit-learn KernelDensity", tk * n2 / 300, note))
    report.timing("logpdf", t2, peers)

    ns, ds = wl.KDE_SELECT_SHAPES[0]
    sel_x = wl.kde_select(ns // 2 if quick else ns, ds)
    ts, sel = median_time(lambda: divest.select_bandwidth(sel_x, warn_edge=False), 1)
    t1, _ = median_time(lambda: divest.KDE(sel_x).loo_logpdf(), 1)
    report.line(
        f"select_bandwidth over {sel.grid.size} factors of Scott's rule (n = {len(sel_x)}, "
        f"d = {ds}): best factor {sel.factor:.3g}, {ts * 1e3:.0f} ms = {ts / t1:.1f} "
        "leave-one-out passes"
    )

    far = np.full((1, 1024), 30.0)
    big = divest.KDE(wl.kde_data(2000, 1024)[0], bandwidth=0.5)
    lfar = big.logpdf(far)[0]
    report.check(
        np.isfinite(lfar) and lfar < -1e5 * 0.5,
        f"d = 1024, far query: logpdf = {lfar:.6g} (pdf underflows to {np.exp(lfar)})",
    )

    if figures:

        def draw(plt):
            x1 = _mixture(rng, 2000, 1)[:, 0]
            grid = np.linspace(x1.min() - 2, x1.max() + 2, 400)
            fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
            for bw in ("scott", "loo"):
                pdf = divest.KDE(x1, bandwidth=bw).pdf(grid)
                ax[0].plot(grid, pdf, label=f"bandwidth={bw!r}")
            ax[0].hist(x1, bins=80, density=True, alpha=0.3, color="grey")
            ax[0].legend()
            ax[0].set_title("1-D KDE of a Gaussian mixture")
            s1 = divest.select_bandwidth(x1, warn_edge=False)
            ax[1].semilogx(s1.grid, s1.loglik)
            ax[1].axvline(s1.factor, color="k", ls=":")
            ax[1].set_xlabel("factor of Scott's bandwidth")
            ax[1].set_ylabel("leave-one-out log-likelihood")
            return fig

        save_figure(report, "tour_kde.png", draw)
