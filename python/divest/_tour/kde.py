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

    _grids(report, rng, figures)


def _grids(report, rng, figures):
    """Densities on grids (issue 11): one timed line on 10⁶ points, the ISJ bandwidth
    next to Silverman's on a bimodal mixture, and a figure of a 1-D and a 2-D grid."""
    n = 1_000_000
    x = np.random.default_rng(0).standard_normal(n)
    t, res = median_time(lambda: divest.kde_grid(x, n_points=4096, method="binned"), 3)
    kde = divest.KDE(x)
    tg, _ = median_time(lambda: kde.grid(4096, method="binned"), 3)
    report.line(
        f"kde_grid, n = 10^6, 4096 points, Gaussian, binned: {t * 1e3:.1f} ms "
        f"(KDE.grid alone {tg * 1e3:.1f} ms), estimated error {res.error:.1e} "
        f"({res.error / res.values.max():.1e} of the peak)"
    )
    # A bimodal mixture, 0.5 N(-2, 0.5²) + 0.5 N(1, 1): Silverman's normal-reference rule
    # oversmooths it, ISJ does not.
    m1 = 20000
    lab = rng.random(m1) < 0.5
    x1 = np.where(lab, rng.normal(-2.0, 0.5, m1), rng.normal(1.0, 1.0, m1))
    ext = (-5.0, 5.0)

    def truth(g):
        return 0.5 * np.exp(-0.5 * ((g + 2) / 0.5) ** 2) / (0.5 * np.sqrt(2 * np.pi)) + (
            0.5 * np.exp(-0.5 * (g - 1) ** 2) / np.sqrt(2 * np.pi)
        )

    fits = {}
    for bw in ("isj", "silverman"):
        kde = divest.KDE(x1, bandwidth=bw)
        r = kde.grid(1024, extent=ext)
        ise = float(np.sum((r.values - truth(r.grid)) ** 2) * r.spacing)
        fits[bw] = (float(np.sqrt(kde.bandwidth[0, 0])), r, ise)
    report.line(
        f"bimodal mixture, n = {m1}: ISJ h = {fits['isj'][0]:.3f} (ISE {fits['isj'][2]:.1e}), "
        f"Silverman h = {fits['silverman'][0]:.3f} (ISE {fits['silverman'][2]:.1e})"
    )
    if not figures:
        return
    x2 = _mixture(rng, 20000, 2)
    r2 = divest.kde_grid(x2, n_points=(400, 400))

    def draw(plt):
        fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
        a = ax[0]
        a.hist(x1, bins=120, range=ext, density=True, color="0.85", label="data")
        g = fits["isj"][1].grid
        a.plot(g, truth(g), "k:", lw=1.5, label="true density")
        for bw, colour in (("isj", "C3"), ("silverman", "C0")):
            h, r, ise = fits[bw]
            a.plot(
                r.grid,
                r.values,
                color=colour,
                label=f"{bw.upper() if bw == 'isj' else 'Silverman'}, h = {h:.3f}",
            )
        a.set_xlim(*ext)
        a.legend(fontsize=8)
        a.set_title(f"1-D KDE on a {g.size}-point grid (n = {m1})")
        b = ax[1]
        gx, gy = r2.grid
        b.imshow(
            r2.values.T,
            origin="lower",
            extent=(gx[0], gx[-1], gy[0], gy[-1]),
            aspect="auto",
            cmap="viridis",
        )
        peak = float(r2.values.max())
        b.contour(
            gx,
            gy,
            r2.values.T,
            levels=peak * np.array([0.02, 0.1, 0.3, 0.5, 0.7, 0.9]),
            colors="w",
            linewidths=0.6,
        )
        b.set_title(
            f"2-D KDE, {gx.size}x{gy.size} binned grid, est. error "
            f"{r2.error / r2.values.max():.0e} of the peak",
            fontsize=10,
        )
        return fig

    save_figure(report, "tour_kde_grid.png", draw)
